//! Interoperability of the broker with OAuth libraries nobody here wrote: Authlib does the RFC
//! 8693 token exchange, the RFC 7662 introspection and the RFC 7009 revocation, and PyJWT
//! validates the RFC 9068 access token against the access-token JWK set of the RFC 8414 metadata
//! (`tests/interop/oauth_client.py`, against the real binary).
//!
//! Without the Python packages the test says it skipped, unless `WARDEN_REQUIRE_INTEROP` is
//! set (CI), when it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::process::Stdio;

use common::{Install, run, warden};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/oauth_client.py");
/// The exact packages CI installs for this test.
const PIP: &str = "pip install authlib==1.9.10 'pyjwt[crypto]==2.15.1' requests==2.34.2";
/// Set (CI): missing packages fail the test instead of skipping it.
const REQUIRE: &str = "WARDEN_REQUIRE_INTEROP";
/// The script's exit code for a package that does not import.
const MISSING_PACKAGES: i32 = 3;

const GIT: &str = "https://git.example.org";
const PLANNER: &str = "spiffe://example.org/agent/planner";
const CODER: &str = "spiffe://example.org/agent/coder";

/// `python3 oauth_client.py ARGS…` with no proxy and no `WARDEN_*` variable of the caller.
fn python(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(SCRIPT).args(args);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_lowercase();
        if name.starts_with("warden_") || name.ends_with("_proxy") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Whether python3 and the packages are there; `Err` says what is missing.
async fn packages() -> Result<(), String> {
    let out = python(&["--check-packages"])
        .output()
        .await
        .map_err(|e| format!("python3 cannot run: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(MISSING_PACKAGES) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        _ => panic!("{SCRIPT} --check-packages: {out:?}"),
    }
}

#[tokio::test]
async fn authlib_and_pyjwt_exchange_validate_introspect_revoke() {
    if let Err(missing) = packages().await {
        assert!(
            std::env::var_os(REQUIRE).is_none(),
            "{REQUIRE} is set but the python packages are not installed ({missing}): {PIP}"
        );
        // Past the harness's output capture, so a plain `cargo test` shows it.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: python packages authlib, pyjwt, requests not installed ({missing}) ({PIP})"
        );
        return;
    }

    let install = Install::new().await;
    let server = install
        .serve_with(&["--oauth-scopes", "repo:read,repo:write,repo:admin"])
        .await;
    let admin = install.admin_token();
    // The agents are "this user running the warden binary": `--spiffe-id` picks which.
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
    let uid = common::own_uid();
    for id in [PLANNER, CODER] {
        let resp = server
            .http
            .post(server.at("/v1/entries"))
            .bearer_auth(&admin)
            .json(&json!({
                "spiffe_id": id,
                "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
                "owner": "acme",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    }
    // The token is for task T-42, on which both agents are.
    let resp = server
        .http
        .post(server.at("/v1/tasks"))
        .bearer_auth(&admin)
        .json(
            &json!({"id": "T-42", "type": "patch_bug", "owner": "alice@example.org",
            "resources": ["repository:warden"], "deadline_s": 3600}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    for id in [PLANNER, CODER] {
        let resp = server
            .http
            .post(server.at("/v1/tasks/T-42/agents"))
            .bearer_auth(&admin)
            .json(&json!({"agent": id, "role": "worker"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    }
    let example = |name: &str| {
        format!(
            "{}/../../examples/broker/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    };
    run(install.client(
        &server,
        &[
            "policy",
            "push",
            "broker",
            &example("broker.cedar"),
            &example("broker.cedarschema"),
        ],
    ))
    .await
    .ok();
    let issuer = server
        .get_public_json("/.well-known/openid-configuration")
        .await["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = run(install.client(
        &server,
        &[
            "api-token",
            "create",
            "--name",
            "git-gateway",
            "--role",
            "enforcer",
        ],
    ))
    .await
    .ok();
    let enforcer = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("wdn_"))
        .unwrap()
        .to_owned();
    let svid = |id: &'static str| {
        let mut cmd = warden();
        cmd.arg("svid")
            .arg("--socket")
            .arg(install.data_dir.join("workload.sock"))
            .args(["jwt", "--audience", &issuer, "--spiffe-id", id]);
        async move { run(cmd).await.ok().stdout.trim().to_owned() }
    };
    let planner = svid(PLANNER).await;
    let coder = svid(CODER).await;

    // Tokens go through the environment, not the command line.
    let mut cmd = python(&[]);
    cmd.env("WARDEN_URL", &server.url)
        .env("WARDEN_SUBJECT_TOKEN", &planner)
        .env("WARDEN_ENFORCER_TOKEN", &enforcer)
        .env("WARDEN_AUDIENCE", GIT)
        .env("WARDEN_SCOPE", "repo:read repo:write")
        .env("WARDEN_CLIENT_ID", PLANNER)
        .env("WARDEN_UNKNOWN_SCOPE", "deploy:prod")
        .env("WARDEN_DENIED_SCOPE", "repo:admin")
        .env("WARDEN_TASK", "T-42")
        .env("WARDEN_ACTOR_TOKEN", &coder)
        .env("WARDEN_ACTOR_ID", CODER)
        .env("WARDEN_DELEGATED_SCOPE", "repo:write");
    let out = run(cmd).await;
    println!("{}", out.stdout);
    assert!(
        out.status.success() && out.stdout.contains("all checks passed"),
        "the independent OAuth client failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );

    // What the client did, as the server recorded it.
    let events: Vec<Value> = server
        .all_entries(&admin)
        .await
        .into_iter()
        .map(|e| e["event"].clone())
        .collect();
    let of =
        |action: &str| -> Vec<&Value> { events.iter().filter(|e| e["action"] == action).collect() };
    let issued = of("oauth.token_issue");
    assert_eq!(issued.len(), 2, "the token and its delegation: {issued:?}");
    assert!(
        issued
            .iter()
            .any(|e| e["fields"]["client_id"] == CODER && e["fields"]["subject"] == PLANNER)
    );
    assert!(
        of("oauth.token_exchange")
            .iter()
            .any(|e| e["fields"]["error"] == "invalid_scope"),
        "the refused unknown scope is on record"
    );
    assert!(!of("oauth.introspect").is_empty());
    assert!(!of("lease.revoked").is_empty());
    let leases = server
        .get_json(
            &format!(
                "/v1/leases?agent={}",
                PLANNER.replace(':', "%3A").replace('/', "%2F")
            ),
            &admin,
        )
        .await;
    // The Planner's lease and the one delegated from it, both ended by the revocation.
    let leases = leases.as_array().unwrap();
    assert_eq!(leases.len(), 2, "{leases:?}");
    for lease in leases {
        assert_eq!(lease["state"], "revoked", "{lease}");
        assert_eq!(lease["revoke_reason"], "revoked by its holder (RFC 7009)");
    }
    server.stop().await;
}
