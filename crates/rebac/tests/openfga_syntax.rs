//! Differential tests against the official OpenFGA DSL parser, `@openfga/syntax-transformer`
//! (pinned in `tests/openfga/package.json`; install it with
//! `npm ci --prefix crates/rebac/tests/openfga`).
//!
//! - every fixture in `tests/models/*.fga` gives the same JSON model from both;
//! - every fixture in `tests/models/invalid/*.fga` is refused by both;
//! - generated models (every operator, nesting, spacing and comment form) give the same JSON;
//! - mutations of those (a character dropped, doubled, swapped or inserted) are accepted by
//!   both with the same JSON, or refused by both — or accepted only by the official
//!   transformer (which does no semantic checks) and then refused by [`Model::from_json`]
//!   with the same error as the DSL.
//!
//! JSON objects compare without order (relation maps are unordered in OpenFGA); arrays
//! (types, operands, type restrictions) compare in order.
//!
//! Without node or the package the tests print why and pass, unless
//! `WARDEN_REQUIRE_OPENFGA_SYNTAX=1`, when they fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rebac::Model;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// `Some(())` when node and the package are there; otherwise says why (and fails when they
/// are required).
fn official() -> Option<()> {
    let required = std::env::var("WARDEN_REQUIRE_OPENFGA_SYNTAX").as_deref() == Ok("1");
    let package = dir().join("openfga/node_modules/@openfga/syntax-transformer/package.json");
    let reason = match Command::new("node").arg("--version").output() {
        Err(e) => Some(format!("`node` cannot be run ({e})")),
        Ok(o) if !o.status.success() => Some("`node --version` failed".to_owned()),
        Ok(_) if !package.exists() => Some(format!(
            "{} is missing: run `npm ci --prefix crates/rebac/tests/openfga`",
            package.display()
        )),
        Ok(_) => None,
    };
    match reason {
        None => Some(()),
        Some(r) if required => panic!("WARDEN_REQUIRE_OPENFGA_SYNTAX=1 but {r}"),
        Some(r) => {
            println!("skipped: the official OpenFGA parser is not available: {r}");
            None
        }
    }
}

/// The official transformer's answer for each file: `Ok(json)` or `Err(message)`.
fn transform(files: &[PathBuf]) -> Vec<Result<Value, String>> {
    let mut cmd = Command::new("node");
    cmd.arg(dir().join("openfga/transform.mjs"));
    cmd.args(files);
    if files.len() == 1 {
        cmd.arg(&files[0]); // always use the list form, so one parse per entry
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "transform.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let list = if files.len() == 1 {
        &list[..1]
    } else {
        &list[..]
    };
    list.iter()
        .map(|e| match e.get("model") {
            Some(m) => Ok(m.clone()),
            None => Err(e["error"].as_str().unwrap_or("").to_owned()),
        })
        .collect()
}

fn fixtures(sub: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fga"))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

#[test]
fn fixtures_match_the_official_transformer() {
    if official().is_none() {
        return;
    }
    let files = fixtures("models");
    for (file, theirs) in files.iter().zip(transform(&files)) {
        let theirs = theirs.unwrap_or_else(|e| panic!("{}: official parser: {e}", file.display()));
        let text = std::fs::read_to_string(file).unwrap();
        let ours = Model::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(ours.to_json(), theirs, "{}", file.display());
        // and the official JSON reads back to the same model
        assert_eq!(Model::from_json(&theirs).unwrap().id(), ours.id());
    }
}

#[test]
fn invalid_fixtures_are_refused_by_both() {
    if official().is_none() {
        return;
    }
    let files = fixtures("models/invalid");
    for (file, theirs) in files.iter().zip(transform(&files)) {
        assert!(
            theirs.is_err(),
            "{}: official parser accepted it",
            file.display()
        );
        let text = std::fs::read_to_string(file).unwrap();
        let ours = Model::parse(&text);
        assert_eq!(
            ours.as_ref().map_err(|e| e.code()).err(),
            Some("invalid_model"),
            "{}",
            file.display()
        );
    }
}

const BASE: &str = "model
  schema 1.1
type user
  relations
    define friend: [user]
type doc
  relations
    define p: [doc]
    define r0: [user]
    define r1: [user, user:*]
    define r2: [user, doc#r0]
    define r3: [user, user#friend]
";

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.gen_range(0..items.len())]
}

fn blank(rng: &mut StdRng) -> &'static str {
    pick(rng, &[" ", " ", " ", "  ", "\t"])
}

fn leaf(rng: &mut StdRng) -> String {
    let r = pick(rng, &["r0", "r1", "r2", "r3"]);
    if rng.gen_bool(0.2) {
        format!("{r}{}from{}p", blank(rng), blank(rng))
    } else {
        r.to_owned()
    }
}

fn direct(rng: &mut StdRng) -> String {
    let mut items: Vec<&str> = ["user", "user:*", "doc#r0", "user#friend"]
        .into_iter()
        .filter(|_| rng.gen_bool(0.5))
        .collect();
    if items.is_empty() {
        items.push("user");
    }
    let sep = pick(rng, &[", ", ",", " , ", ",\n      "]);
    let pad = pick(rng, &["", " "]);
    format!("[{pad}{}{pad}]", items.join(sep))
}

/// A relation definition; `mix` lets it break the one-operator rule.
fn expr(rng: &mut StdRng, depth: u32, allow_direct: bool, mix: bool) -> String {
    let mut s = if allow_direct && rng.gen_bool(0.3) {
        direct(rng)
    } else if depth > 0 && rng.gen_bool(0.25) {
        let pad = pick(rng, &["", "", " "]);
        format!("({pad}{}{pad})", expr(rng, depth - 1, allow_direct, mix))
    } else {
        leaf(rng)
    };
    let op = pick(rng, &["or", "and", "but not"]);
    let n = if op == "but not" {
        rng.gen_range(0..=1)
    } else {
        rng.gen_range(0..=3)
    };
    for _ in 0..n {
        let op = if mix && rng.gen_bool(0.3) {
            pick(rng, &["or", "and", "but not"])
        } else {
            op
        };
        let operand = if depth > 0 && rng.gen_bool(0.25) {
            format!("({})", expr(rng, depth - 1, false, mix))
        } else {
            leaf(rng)
        };
        s = format!("{s}{}{op}{}{operand}", blank(rng), blank(rng));
    }
    s
}

fn model(rng: &mut StdRng, mix: bool) -> String {
    let mut m = BASE.to_owned();
    for i in 0..rng.gen_range(1..=4) {
        let indent = pick(rng, &["    ", "  ", "      "]);
        let colon = pick(rng, &[": ", ":", " : "]);
        let comment = pick(rng, &["", "", " # a comment", "\n  # a line"]);
        m.push_str(&format!(
            "{indent}define d{i}{colon}{}{comment}\n",
            expr(rng, 2, true, mix)
        ));
    }
    m
}

fn mutate(rng: &mut StdRng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    // Mutate only the relation definitions, after the fixed header.
    let start = BASE.chars().count();
    for _ in 0..rng.gen_range(1..=2) {
        if chars.len() <= start + 1 {
            break;
        }
        let i = rng.gen_range(start..chars.len());
        match rng.gen_range(0..4) {
            0 => {
                chars.remove(i);
            }
            1 => chars.insert(i, chars[i]),
            2 if i + 1 < chars.len() => chars.swap(i, i + 1),
            _ => {
                let ins = pick(
                    rng,
                    &[
                        " ", "\n", "(", ")", "[", "]", ",", "#", ":", "*", "a", " or ", " and ",
                    ],
                );
                for (k, c) in ins.chars().enumerate() {
                    chars.insert(i + k, c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// Compares both parsers on each text; returns the disagreements.
fn differential(texts: &[String]) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = tmp.path().join(format!("m{i}.fga"));
            std::fs::write(&p, t).unwrap();
            p
        })
        .collect();
    let mut problems = Vec::new();
    for ((text, theirs), file) in texts.iter().zip(transform(&files)).zip(&files) {
        let ours = Model::parse(text);
        match (theirs, ours) {
            (Ok(theirs), Ok(ours)) => {
                if ours.to_json() != theirs {
                    problems.push(format!("{}: different JSON\n{text}", file.display()));
                }
            }
            (Err(_), Err(_)) => {}
            (Err(theirs), Ok(_)) => {
                problems.push(format!("only ours accepts ({theirs}):\n{text}"));
            }
            (Ok(theirs), Err(ours)) => {
                // The official transformer checks syntax only: the JSON it made must break a
                // model rule, the same one.
                match Model::from_json(&theirs) {
                    Ok(_) => problems.push(format!(
                        "only the official parser accepts ({ours}):\n{text}"
                    )),
                    Err(e) => {
                        let strip =
                            |s: String| s.split_once(": ").map(|(_, m)| m.to_owned()).unwrap_or(s);
                        if strip(e.to_string()) != strip(ours.to_string())
                            || ours.code() != e.code()
                        {
                            problems.push(format!(
                                "different errors: dsl `{ours}`, json `{e}`:\n{text}"
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn generated_models_match_the_official_transformer() {
    if official().is_none() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(0x0f6a_0001);
    let mut texts: Vec<String> = (0..300).map(|_| model(&mut rng, false)).collect();
    texts.extend((0..100).map(|_| model(&mut rng, true)));
    let problems = differential(&texts);
    assert!(problems.is_empty(), "\n{}", problems.join("\n---\n"));
}

#[test]
fn mutated_models_are_judged_alike() {
    if official().is_none() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(0x0f6a_0002);
    let texts: Vec<String> = (0..400)
        .map(|_| {
            let m = model(&mut rng, false);
            mutate(&mut rng, &m)
        })
        .collect();
    let problems = differential(&texts);
    assert!(problems.is_empty(), "\n{}", problems.join("\n---\n"));
}
