//! docs/cli.md's conventions, against a real server: empty lists say so (and are `[]` in
//! JSON), exit statuses mean the same thing everywhere (0 yes, 1 no, 2 could not), every
//! lifetime flag takes one duration syntax, and errors say what to fix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{Install, run, warden};
use serde_json::Value;

/// Every listing on a fresh server: the table form prints a line saying the list is empty
/// (exit 0), the JSON form is the API's empty answer.
#[tokio::test]
async fn empty_lists_say_so_and_json_is_the_api_answer() {
    let install = Install::new().await;
    let server = install.serve().await;
    for (args, line) in [
        (&["holds"][..], "no holds"),
        (&["deny", "list"][..], "no denials"),
        (&["secret", "list"][..], "no secrets"),
        (&["lease", "list"][..], "no leases"),
        (&["db", "connections"][..], "no target databases"),
        (&["db", "roles"][..], "no role templates"),
        (&["entry", "list"][..], "no registration entries"),
    ] {
        let out = run(install.client(&server, args)).await;
        assert_eq!(out.code(), Some(0), "{args:?}: {out:#?}");
        assert_eq!(out.stdout.trim(), line, "{args:?}: {out:#?}");
        let mut json_args = args.to_vec();
        json_args.extend(["--output", "json"]);
        let out = run(install.client(&server, &json_args)).await.ok();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out:#?}"));
        assert_eq!(v, Value::Array(vec![]), "{args:?}");
    }
    // A table has a header row, upper-case.
    let out = run(install.client(&server, &["api-token", "list"]))
        .await
        .ok();
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("ROLE") && header.contains("STATE"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("bootstrap-admin") || out.stdout.lines().count() >= 2);
}

#[tokio::test]
async fn exit_statuses_tell_no_from_could_not() {
    let install = Install::new().await;
    let server = install.serve().await;

    // Not found: a "no" (1), with the server's code.
    let out = run(install.client(&server, &["entry", "show", "ent_doesnotexist"])).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("not_found (404)"), "{out:#?}");
    // `lease renew --ttl 1h` parses (the duration syntax), then the lease is not found: 1.
    let out = run(install.client(
        &server,
        &[
            "lease",
            "renew",
            "postgres/none/lse_00000000000000000000000000000000",
            "--ttl",
            "1h",
        ],
    ))
    .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(!out.stderr.contains("invalid digit"), "{out:#?}");

    // A usage error: 2, naming the flag and the syntax.
    let out = run(install.client(
        &server,
        &[
            "lease",
            "renew",
            "postgres/none/lse_00000000000000000000000000000000",
            "--ttl",
            "an hour",
        ],
    ))
    .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains("--ttl") && out.stderr.contains("90s, 10m, 8h, 2d"),
        "{out:#?}"
    );
    // Bad input the server refuses: 2.
    let out = run(install.client(
        &server,
        &["hold", "agent", "not-a-spiffe-id", "--reason", "test"],
    ))
    .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");

    // No token: 2, and the message says how to give one.
    let mut cmd = warden();
    cmd.env_remove("WARDEN_TOKEN")
        .env_remove("WARDEN_TOKEN_FILE")
        .args(["holds", "--server", &server.url]);
    let out = run(cmd).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains("--token-file") && out.stderr.contains("WARDEN_TOKEN_FILE"),
        "{out:#?}"
    );
    // An unreadable token file is named with its flag.
    let mut cmd = warden();
    cmd.args([
        "holds",
        "--server",
        &server.url,
        "--token-file",
        "/nonexistent/t",
    ]);
    let out = run(cmd).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains("/nonexistent/t") && out.stderr.contains("--token-file"),
        "{out:#?}"
    );
    // Nobody listening: 2.
    let mut cmd = warden();
    cmd.args(["holds", "--server", "http://127.0.0.1:9", "--token", "x"]);
    let out = run(cmd).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("cannot reach warden"), "{out:#?}");

    // An auditor may not hold an agent: the server refuses (403), a "no".
    let out = run(install.client(
        &server,
        &[
            "api-token",
            "create",
            "--name",
            "conv-auditor",
            "--role",
            "auditor",
            "-o",
            "json",
        ],
    ))
    .await
    .ok();
    let created: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut cmd = warden();
    cmd.args([
        "hold",
        "agent",
        "spiffe://example.org/agent/x",
        "--reason",
        "test",
        "--server",
        &server.url,
        "--token",
        created["token"].as_str().unwrap(),
    ]);
    let out = run(cmd).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("(403)"), "{out:#?}");
}

/// The Workload API address takes the `unix://` form its help shows, like
/// SPIFFE_ENDPOINT_SOCKET does.
#[tokio::test]
async fn socket_accepts_a_unix_url() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    for address in [
        format!("unix://{}", sock.display()),
        format!("unix:{}", sock.display()),
        sock.display().to_string(),
    ] {
        let mut cmd = warden();
        cmd.env_remove("SPIFFE_ENDPOINT_SOCKET").args([
            "svid",
            "--socket",
            &address,
            "jwt",
            "--audience",
            "x",
        ]);
        let out = run(cmd).await;
        assert_eq!(out.code(), Some(2), "{out:#?}");
        assert!(
            out.stderr.contains(&format!(
                "cannot reach the Workload API at {}",
                sock.display()
            )),
            "{address}: {out:#?}"
        );
    }
}
