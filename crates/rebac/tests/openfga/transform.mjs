// The official OpenFGA DSL transformer (@openfga/syntax-transformer, version pinned in
// package.json), for crates/rebac/tests/openfga_syntax.rs.
//
//   node transform.mjs FILE.fga        prints the JSON model; on a syntax error prints
//                                      {"error": "..."} and exits 1
//   node transform.mjs FILE.fga FILE…  prints one JSON array, an entry per file:
//                                      {"model": {...}} or {"error": "..."}; exits 0
import { readFileSync } from "node:fs";
import { transformer } from "@openfga/syntax-transformer";

function transform(file) {
  try {
    return { model: transformer.transformDSLToJSONObject(readFileSync(file, "utf8")) };
  } catch (e) {
    return { error: String(e && e.message ? e.message : e) };
  }
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node transform.mjs FILE.fga [FILE.fga ...]");
  process.exit(2);
}
if (files.length === 1) {
  const out = transform(files[0]);
  process.stdout.write(JSON.stringify(out.model ?? { error: out.error }));
  process.exit(out.model ? 0 : 1);
}
process.stdout.write(JSON.stringify(files.map(transform)));
