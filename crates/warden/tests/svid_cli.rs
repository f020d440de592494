//! `warden svid`: a shell agent fetches its identity from the local Workload API, attested
//! from the kernel as "the user running the warden executable".

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use common::{Install, run, warden};
use serde_json::json;

#[tokio::test]
async fn shell_agent_fetches_its_svids() {
    let install = Install::new().await;
    let server = install.serve().await;
    let socket = install.data_dir.join("workload.sock");
    let fetch = |args: &[&str]| {
        let mut cmd = warden();
        cmd.arg("svid").arg("--socket").arg(&socket).args(args);
        cmd
    };

    // Unregistered: refused, nothing written.
    let out_dir = install.path("agent");
    let out = run({
        let mut c = fetch(&["x509", "--out"]);
        c.arg(&out_dir);
        c
    })
    .await;
    assert_ne!(out.code(), Some(0));
    assert!(out.all().contains("no identity issued"), "{out:#?}");
    assert!(!out_dir.join("svid.pem").exists());

    // Register "this user running the warden binary".
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
    let uid = common::own_uid();
    let resp = server
        .http
        .post(server.at("/v1/entries"))
        .bearer_auth(install.admin_token())
        .json(&json!({
            "spiffe_id": "spiffe://example.org/agent/shell",
            "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let out = run({
        let mut c = fetch(&["x509", "--out"]);
        c.arg(&out_dir);
        c
    })
    .await
    .ok();
    assert_eq!(out.stdout.trim(), "spiffe://example.org/agent/shell");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out_dir.join("svid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    if let Ok(v) = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out_dir.join("bundle.pem"))
        .arg(out_dir.join("svid.pem"))
        .output()
    {
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    }

    let out = run(fetch(&["jwt", "--audience", "demo"])).await.ok();
    let token = out.stdout.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
}
