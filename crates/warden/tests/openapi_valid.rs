//! The OpenAPI document a running server serves (`/v1/openapi.json`) as standard tools see it:
//! `openapi-spec-validator` validates it against OpenAPI 3.1, and `openapi-python-client`
//! generates a Python client from it, with which `tests/interop/openapi/tour.py` makes the
//! README tour's API calls against the real binary.
//!
//! Without python3 or the tools the tests say they skipped, unless
//! `WARDEN_REQUIRE_OPENAPI_TOOLS` is set (CI), when they fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::{Install, Out, Server};
use serde_json::Value;

const TOUR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/openapi/tour.py");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
/// The exact packages CI installs for these tests.
const PIP: &str = "pip install openapi-spec-validator==0.9.0 openapi-python-client==0.29.1";
/// Set (CI): missing tools fail the tests instead of skipping them.
const REQUIRE: &str = "WARDEN_REQUIRE_OPENAPI_TOOLS";
/// How long generating the client (it runs ruff over the code) or the tour may take.
const PYTHON_DEADLINE: Duration = Duration::from_secs(180);

/// `python3 ARGS…` with no proxy and no `WARDEN_*` variable of the caller.
fn python(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_lowercase();
        if name.starts_with("warden_") || name.ends_with("_proxy") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd` to completion within [`PYTHON_DEADLINE`] (killed and failing otherwise).
async fn run(mut cmd: tokio::process::Command) -> Out {
    let child = cmd.spawn().expect("spawn python3");
    let out = tokio::time::timeout(PYTHON_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {PYTHON_DEADLINE:?}"))
        .expect("wait for python3");
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether python3 runs both tools; `Err` says what is missing.
async fn tools() -> Result<(), String> {
    for (module, package) in [
        ("openapi_spec_validator", "openapi-spec-validator"),
        ("openapi_python_client", "openapi-python-client"),
    ] {
        let out = python(&["-m", module, "--version"])
            .output()
            .await
            .map_err(|e| format!("python3 cannot run: {e}"))?;
        if !out.status.success() {
            return Err(format!("python package {package} is not installed"));
        }
        println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    }
    Ok(())
}

/// True when the tools are there; otherwise says the test skipped and why (or fails, when
/// [`REQUIRE`] is set).
async fn have_tools() -> bool {
    match tools().await {
        Ok(()) => true,
        Err(missing) => {
            assert!(
                std::env::var_os(REQUIRE).is_none(),
                "{REQUIRE} is set but {missing}: {PIP}"
            );
            // Past the harness's output capture, so a plain `cargo test` shows it.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "skipped: {missing} ({PIP})");
            false
        }
    }
}

/// The document the server serves, checked to be the one `server::openapi()` builds, and the
/// file it was written to.
async fn served_document(server: &Server, dir: &Path) -> (Value, std::path::PathBuf) {
    let doc = server.get_public_json("/v1/openapi.json").await;
    assert_eq!(
        doc,
        serde_json::to_value(server::openapi()).unwrap(),
        "the server serves the document `server::openapi()` builds"
    );
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    (doc, file)
}

/// `openapi-spec-validator --schema 3.1` on `file`.
async fn validate(file: &Path) -> Out {
    run(python(&[
        "-m",
        "openapi_spec_validator",
        "--schema",
        "3.1",
        "--validation-errors",
        "all",
        file.to_str().unwrap(),
    ]))
    .await
}

#[tokio::test]
async fn the_served_document_is_valid_openapi_3_1() {
    if !have_tools().await {
        return;
    }
    let install = Install::new().await;
    let server = install.serve().await;
    let (doc, file) = served_document(&server, install.tmp.path()).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let out = validate(&file).await;
    println!("{}{}", out.stdout, out.stderr);
    assert!(
        out.status.success() && out.stdout.contains("OK"),
        "openapi-spec-validator refused the document:\n{}\n{}",
        out.stdout,
        out.stderr
    );

    // The validator does refuse what the document once had: a query parameter declared in the
    // path, and an operation id used twice.
    let mut bad = doc.clone();
    let entries = &mut bad["paths"]["/v1/audit/entries"]["get"];
    entries["parameters"][0]["in"] = "path".into();
    entries["operationId"] = "whoami".into();
    let bad_file = install.tmp.path().join("bad.json");
    std::fs::write(&bad_file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = validate(&bad_file).await;
    assert!(!out.status.success(), "{out:?}");
    for error in [
        "Path parameter 'from' for 'get' operation in '/v1/audit/entries' was not resolved",
        "Operation ID 'whoami'",
    ] {
        assert!(out.all().contains(error), "{error}: {out:?}");
    }
}

#[tokio::test]
async fn a_client_generated_from_the_document_completes_the_readme_tour() {
    if !have_tools().await {
        return;
    }
    let install = Install::new().await;
    let server = install.serve().await;
    let (doc, file) = served_document(&server, install.tmp.path()).await;

    let client_dir = install.tmp.path().join("client");
    let package = client_dir.join("warden_client");
    let out = run(python(&[
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        file.to_str().unwrap(),
        "--meta",
        "none",
        "--output-path",
        package.to_str().unwrap(),
    ]))
    .await;
    println!("{}{}", out.stdout, out.stderr);
    assert!(
        out.status.success(),
        "openapi-python-client failed: {out:?}"
    );
    assert!(
        !out.all().contains("will not be generated"),
        "openapi-python-client left operations out: {out:?}"
    );
    // A function for every operation, named after its id, in a module per tag.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            let tag = op["tags"][0].as_str().unwrap_or("default");
            let module = package.join("api").join(tag).join(format!("{id}.py"));
            assert!(
                module.is_file(),
                "{method} {path}: no generated {}",
                module.display()
            );
            operations += 1;
        }
    }
    assert!(operations > 100, "{operations} operations");

    let out = run(python(&[
        TOUR,
        "--client-dir",
        client_dir.to_str().unwrap(),
        "--server",
        &server.url,
        "--token-file",
        install.token_file.to_str().unwrap(),
        "--examples",
        EXAMPLES,
    ]))
    .await;
    println!("{}", out.stdout);
    assert!(
        out.status.success() && out.stdout.contains("tour complete"),
        "the tour with the generated client failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );

    // What the generated client did, as the server has it.
    let admin = install.admin_token();
    let tokens = server.get_json("/v1/tokens", &admin).await;
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "alice" && t["role"] == "auditor"),
        "{tokens}"
    );
    let policies = server.get_json("/v1/policies", &admin).await;
    for name in ["coder", "coder-rebac", "coder-rego"] {
        assert!(
            policies
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["package"] == name),
            "{name}: {policies}"
        );
    }
    let stores = server.get_json("/v1/rebac/stores", &admin).await;
    assert!(
        stores
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "tour"),
        "{stores}"
    );
    let events: Vec<Value> = server
        .all_entries(&admin)
        .await
        .into_iter()
        .map(|e| e["event"].clone())
        .collect();
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    for action in [
        "entry.create",
        "policy.push",
        "rebac.model",
        "hold.add",
        "hold.release",
        "join_token.create",
        "token.create",
    ] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
}
