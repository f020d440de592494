//! `warden policy test DIR` against the real binary, offline (no server, no token — the
//! harness clears every `WARDEN_*` variable): the shipped seed tests pass in Cedar and in
//! Rego, a wrong expectation fails naming the test, an invalid package is reported with
//! file:line:column, malformed test files are refused naming the file, and a directory
//! holding both languages needs `--language`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::path::Path;

use common::{Out, run, warden};
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies/coder");

/// `warden policy test ARGS…`. The Rego time budget is generous: these tests are about
/// outcomes, and a debug build on a busy machine must not turn a slow evaluation into a deny.
async fn policy_test(args: &[&str]) -> Out {
    let mut cmd = warden();
    cmd.args(["policy", "test", "--rego-time-limit", "5000"])
        .args(args);
    run(cmd).await
}

fn copy_example(dir: &Path, names: &[&str]) {
    for name in names {
        std::fs::copy(format!("{EXAMPLES}/{name}"), dir.join(name)).unwrap();
    }
}

fn write_tests(path: &Path, tests: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(tests).unwrap()).unwrap();
}

fn coder_write(risk: f64) -> Value {
    json!({"principal": "spiffe://example.org/agent/coder", "action": "write",
           "resource": {"type": "Repository", "id": "warden"},
           "context": {"task": {"type": "patch_bug"}, "risk_score": risk}})
}

/// The relationship example (`examples/policies/coder-rebac`): its tests state the relations
/// Warden would fill in, and pass in both languages.
#[tokio::test]
async fn the_relationship_example_tests_pass_in_cedar_and_in_rego() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policies/coder-rebac"
    );
    for language in ["cedar", "rego"] {
        let out = policy_test(&[dir, "--language", language]).await;
        assert_eq!(out.code(), Some(0), "{language}: {out:#?}");
        assert!(
            out.stdout
                .contains("test result: ok. 6 passed; 0 failed; 0 skipped"),
            "{language}: {}",
            out.stdout
        );
    }
}

/// The broker's example package (`examples/broker`): who may obtain which credential.
#[tokio::test]
async fn the_broker_example_tests_pass() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/broker");
    let out = policy_test(&[dir]).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stdout
            .contains("test result: ok. 22 passed; 0 failed; 0 skipped"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn the_shipped_seed_tests_pass_in_cedar_and_in_rego() {
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{EXAMPLES}/tests/coder.tests.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = file["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    for language in ["cedar", "rego"] {
        let out = policy_test(&[EXAMPLES, "--language", language]).await;
        assert_eq!(out.code(), Some(0), "{language}: {out:#?}");
        assert!(
            out.stdout.starts_with(&format!("{language} package ")),
            "{}",
            out.stdout
        );
        for name in &names {
            assert!(
                out.stdout.lines().any(|l| l == format!("ok   {name}")),
                "{language}: `{name}` not ok:\n{}",
                out.stdout
            );
        }
        assert!(
            out.stdout.contains(&format!(
                "test result: ok. {} passed; 0 failed; 0 skipped",
                names.len()
            )),
            "{}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn a_wrong_expectation_fails_naming_the_test() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_example(dir, &["coder.cedar", "coder.cedarschema"]);
    write_tests(
        &dir.join("tests/wrong.tests.json"),
        &json!({"tests": [
            {"name": "low risk allows", "request": coder_write(0.2), "expect": "allow",
             "determining": ["coder-write-while-patching"]},
            {"name": "risk 0.7 allows (wrong)", "request": coder_write(0.7), "expect": "allow"},
            {"name": "wrong determining policy", "request": coder_write(0.2),
             "expect": "allow", "determining": ["some-other-policy"]},
            {"name": "rego only", "request": coder_write(0.2), "expect": {"rego": "allow"}},
        ]}),
    );
    let dir = dir.to_str().unwrap();
    let out = policy_test(&[dir]).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for expected in [
        "ok   low risk allows",
        "FAIL risk 0.7 allows (wrong): expected allow, no errors; got deny, determining [], \
         errors []",
        "FAIL wrong determining policy: expected allow, determining [\"some-other-policy\"], \
         no errors; got allow, determining [\"coder-write-while-patching\"], errors []",
        "skip rego only (no expectation for cedar)",
        "test result: FAILED. 1 passed; 2 failed; 1 skipped",
    ] {
        assert!(lines.contains(&expected), "{expected}\n{}", out.stdout);
    }

    // An evaluation error is never a passing deny: a Rego rule failing at run time denies
    // with the error, and the test fails unless it says errors are expected.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("broken.rego"),
        "package broken\nimport rego.v1\nallow if { 1 / 0 == 1 }\n",
    )
    .unwrap();
    write_tests(
        &tmp.path().join("broken.tests.json"),
        &json!({"tests": [
            {"name": "plain deny", "request": coder_write(0.2), "expect": "deny"},
            {"name": "deny with errors", "request": coder_write(0.2), "expect": "deny",
             "errors": true},
        ]}),
    );
    let out = policy_test(&[tmp.path().to_str().unwrap()]).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stdout.contains(
            "FAIL plain deny: expected deny, no errors; got deny, determining [], errors [\""
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().any(|l| l == "ok   deny with errors"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn an_invalid_package_fails_with_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let cedar = tmp.path().join("cedar");
    let rego = tmp.path().join("rego");
    for dir in [&cedar, &rego] {
        std::fs::create_dir(dir).unwrap();
        write_tests(
            &dir.join("ok.tests.json"),
            &json!({"tests": [{"name": "t", "request": coder_write(0.2), "expect": "allow"}]}),
        );
    }
    copy_example(&cedar, &["coder.cedarschema"]);
    std::fs::write(
        cedar.join("bad.cedar"),
        "permit (principal, action, resource);\n\nforbid (principal action, resource);\n",
    )
    .unwrap();
    std::fs::write(
        rego.join("bad.rego"),
        "package bad\nimport rego.v1\nallow if {\n  input.a ==\n}\n",
    )
    .unwrap();
    for (dir, location) in [(&cedar, "bad.cedar:3:19: "), (&rego, "bad.rego:5:1: ")] {
        let out = policy_test(&[dir.to_str().unwrap()]).await;
        assert_eq!(out.code(), Some(1), "{out:#?}");
        let expected = format!("{}{location}", dir.join("").display());
        assert!(out.stderr.contains(&expected), "{expected}\n{}", out.stderr);
        assert!(out.stderr.contains("is not a valid"), "{}", out.stderr);
        assert!(!out.stdout.contains("ok "), "no test runs: {}", out.stdout);
    }

    // A Cedar policy that does not validate against the schema is located too.
    std::fs::write(
        cedar.join("bad.cedar"),
        "permit (principal, action, resource)\nwhen { context.no_such_attribute };\n",
    )
    .unwrap();
    let out = policy_test(&[cedar.to_str().unwrap()]).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("bad.cedar:2:"), "{}", out.stderr);
}

#[tokio::test]
async fn malformed_test_files_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_example(dir, &["coder.rego"]);
    std::fs::create_dir(dir.join("tests")).unwrap();
    let good = json!({"tests": [{"name": "t", "request": coder_write(0.2), "expect": "allow"}]});
    write_tests(&dir.join("good.tests.json"), &good);
    let rows: &[(&str, &str, &str)] = &[
        (
            "syntax.tests.json",
            "{\"tests\": [\n",
            "syntax.tests.json:2:1: EOF while parsing",
        ),
        (
            "field.tests.json",
            "{\"tests\": [\n  {\"name\": \"t\", \"expect\": \"allow\",\n   \"reqest\": {}}\n]}\n",
            "field.tests.json:3:11: unknown field `reqest`, expected one of `name`, `request`",
        ),
        (
            "expect.tests.json",
            "{\"tests\": [{\"name\": \"t\", \"expect\": \"allowed\", \"request\": {}}]}",
            "expect.tests.json:1:44: unknown variant `allowed`, expected one of `allow`, `deny`, \
             `invalid`",
        ),
        (
            "context.tests.json",
            "{\"tests\": [{\"name\": \"t\", \"expect\": \"deny\", \"request\": {\
             \"principal\": \"spiffe://example.org/a\", \"action\": \"write\", \
             \"resource\": {\"type\": \"Repository\", \"id\": \"w\"},\n \"context\": {\"risk\": 1}}}]}",
            "context.tests.json:2:19: unknown field `risk`, expected one of `agent`",
        ),
    ];
    for (name, text, expected) in rows {
        let path = dir.join("tests").join(name);
        std::fs::write(&path, text).unwrap();
        let out = policy_test(&[dir.to_str().unwrap()]).await;
        assert_eq!(out.code(), Some(2), "{name}: {out:#?}");
        let expected = format!("error: {}", dir.join("tests").join(expected).display());
        assert!(out.stderr.contains(&expected), "{expected}\n{}", out.stderr);
        assert!(!out.stdout.contains("ok "), "no test runs: {}", out.stdout);
        std::fs::remove_file(&path).unwrap();
    }
    let out = policy_test(&[dir.to_str().unwrap()]).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");

    // No test file at all is no pass either.
    std::fs::remove_file(dir.join("good.tests.json")).unwrap();
    let out = policy_test(&[dir.to_str().unwrap()]).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("no test files"), "{}", out.stderr);
}

#[tokio::test]
async fn a_directory_with_both_languages_needs_language() {
    let out = policy_test(&[EXAMPLES]).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains(
            "holds both Cedar (coder.cedar, coder.cedarschema) and Rego (coder.rego) files"
        ) && out
            .stderr
            .contains("`--language cedar` or `--language rego`"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    // A language the directory has no files of, and an entry point for Cedar, are refused.
    let tmp = tempfile::tempdir().unwrap();
    copy_example(tmp.path(), &["coder.cedar", "coder.cedarschema"]);
    let dir = tmp.path().to_str().unwrap();
    for (args, message) in [
        (
            vec![dir, "--language", "rego"],
            "holds no rego policy files",
        ),
        (
            vec![dir, "--entrypoint", "data.x.allow"],
            "`--entrypoint` applies to Rego packages only",
        ),
    ] {
        let out = policy_test(&args).await;
        assert_eq!(out.code(), Some(2), "{args:?}: {out:#?}");
        assert!(out.stderr.contains(message), "{}", out.stderr);
    }
}
