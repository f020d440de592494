//! The error table in docs/api.md is exactly the set of `code`s the HTTP API can answer with:
//! every code the server's sources put in an error (and every code the library errors they
//! map carry) has a row, and every row names a code that exists in those sources.
//!
//! The codes are read from the sources, not from a list kept beside them: an `ApiError::new`
//! or `bad(…)` / `refused(…)` call, a `code: "…"` field, a `code()` method's arms, or the
//! refusal a tuple carries into `ApiError::new(status, code, …)`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `#[cfg(test)]` modules (a test's expected codes are not emitted).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

const CODE: &str = r#""([a-z][a-z0-9]*(?:_[a-z0-9]+)*)""#;

/// Every code the API's sources emit.
fn emitted() -> BTreeSet<String> {
    let patterns = [
        // ApiError::new(status, "code", …)
        format!(r"ApiError::new\(\s*[^,()]+(?:\([^()]*\))?,\s*{CODE}"),
        // bad("code", …), the 400 helper
        format!(r"\bbad\(\s*{CODE}"),
        // Refused { code: "…" } and similar
        format!(r"\bcode:\s*{CODE}"),
        // A (code, message) refusal picked before ApiError::new(status, code, message)
        format!(r"Some\(\(\s*{CODE},\s*format!"),
        // Refused::new("code", …), refused("code", …)
        format!(r"(?:Refused::new|\brefused)\(\s*{CODE}"),
    ];
    let patterns: Vec<regex::Regex> = patterns
        .iter()
        .map(|p| regex::Regex::new(p).unwrap())
        .collect();
    let arm = regex::Regex::new(&format!(r"=>\s*{CODE}")).unwrap();
    let mut files = Vec::new();
    rust_files(&root().join("crates/server/src"), &mut files);
    let mut codes = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let text = without_tests(&text);
        for re in &patterns {
            for c in re.captures_iter(text) {
                codes.insert(c[1].to_owned());
            }
        }
        // The status → code map for the framework's own rejections.
        if let Some(i) = text.find("fn code_for(") {
            let body = &text[i..];
            let body = &body[..body.find("\n}\n").unwrap()];
            for c in arm.captures_iter(body) {
                codes.insert(c[1].to_owned());
            }
        }
    }
    // Library errors the server maps to API errors by their `code()`.
    let mut libs = Vec::new();
    for dir in [
        "crates/server/src",
        "crates/authority/src",
        "crates/broker/src",
        "crates/rebac/src",
        "crates/identity/src/trust.rs",
        "crates/identity/src/x509.rs",
    ] {
        let path = root().join(dir);
        if path.is_dir() {
            rust_files(&path, &mut libs);
        } else {
            libs.push(path);
        }
    }
    for file in &libs {
        let text = std::fs::read_to_string(file).unwrap();
        let text = without_tests(&text);
        let mut rest = text;
        while let Some(i) = rest.find("fn code(&self) -> &'static str {") {
            let body = &rest[i..];
            let end = body.find("\n    }\n").unwrap();
            for c in arm.captures_iter(&body[..end]) {
                codes.insert(c[1].to_owned());
            }
            for c in regex::Regex::new(&format!(r"^\s*{CODE}\s*$"))
                .unwrap()
                .captures_iter(&body[..end])
            {
                codes.insert(c[1].to_owned());
            }
            rest = &body[end..];
        }
    }
    // Library codes the server never answers with: it maps those errors to 500 `internal`
    // (`trust_api`'s `From<AuthorityError>`), so the details stay in the log.
    for internal in ["ca_error", "key_unsealable"] {
        codes.remove(internal);
    }
    codes
}

/// The codes in docs/api.md's error table (second column), with `prefix_*` wildcards.
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/api.md")).unwrap();
    let table = &doc[doc
        .find("\n## Errors")
        .expect("docs/api.md has an Errors section")..];
    let table = table[1..].find("\n## ").map_or(table, |i| &table[..=i]);
    let code = regex::Regex::new(r"`([a-z][a-z0-9_]*\*?)`").unwrap();
    let mut codes = BTreeSet::new();
    for line in table.lines().filter(|l| l.starts_with("| ")) {
        let Some(cell) = line.split('|').nth(2) else {
            continue;
        };
        for c in code.captures_iter(cell) {
            codes.insert(c[1].to_owned());
        }
    }
    codes
}

fn covered(code: &str, documented: &BTreeSet<String>) -> bool {
    documented.contains(code)
        || documented
            .iter()
            .filter_map(|d| d.strip_suffix('*'))
            .any(|prefix| code.starts_with(prefix))
}

#[test]
fn every_code_the_api_emits_is_documented_and_every_documented_code_is_emitted() {
    let emitted = emitted();
    let documented = documented();
    assert!(
        emitted.len() > 50,
        "the scan found too few codes: {emitted:?}"
    );
    let undocumented: Vec<&String> = emitted
        .iter()
        .filter(|c| !covered(c, &documented))
        .collect();
    assert!(
        undocumented.is_empty(),
        "codes the API emits that docs/api.md's error table lacks: {undocumented:?}"
    );
    let stale: Vec<&String> = documented
        .iter()
        .filter(|d| match d.strip_suffix('*') {
            Some(prefix) => !emitted.iter().any(|c| c.starts_with(prefix)),
            None => !emitted.contains(*d),
        })
        .collect();
    assert!(
        stale.is_empty(),
        "codes docs/api.md's error table lists that nothing emits: {stale:?}"
    );
}

#[test]
fn no_generic_bad_request_code() {
    assert!(
        !emitted().contains("bad_request"),
        "400s carry a specific code (`invalid_request`, `invalid_query`, …), never `bad_request`"
    );
}
