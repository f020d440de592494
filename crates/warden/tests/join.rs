//! Join tokens: an admin generates a one-time token; an agent on another host exchanges it,
//! with a CSR for a key it keeps, for an X.509-SVID that `openssl verify` accepts against the
//! returned bundle. Reuse, unknown tokens and bad CSRs are refused; everything is recorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Install, run, warden};
use serde_json::{Value, json};

fn token_from(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN "))
        .unwrap_or_else(|| panic!("no token in {stdout}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn join_token_yields_one_verifiable_svid_and_only_one() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();

    let out = run(install.client(
        &server,
        &[
            "token",
            "generate",
            "--spiffe-id",
            "spiffe://example.org/agent/remote",
            "--ttl",
            "5m",
        ],
    ))
    .await
    .ok();
    let token = token_from(&out.stdout);
    assert!(token.starts_with("wjt_"));

    // The agent side: no API token, only the join token.
    let agent = install.path("agent");
    let mut cmd = warden();
    cmd.args([
        "join",
        "--server",
        &server.url,
        "--join-token",
        &token,
        "--out",
    ])
    .arg(&agent);
    let out = run(cmd).await.ok();
    assert!(
        out.stdout.contains("spiffe://example.org/agent/remote"),
        "{out:#?}"
    );
    let key_mode = std::fs::metadata(agent.join("svid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    match std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(agent.join("bundle.pem"))
        .arg(agent.join("svid.pem"))
        .output()
    {
        Ok(v) => assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr)),
        Err(e) => assert!(std::env::var_os("WARDEN_REQUIRE_OPENSSL").is_none(), "{e}"),
    }

    // Second use: refused and recorded.
    let mut cmd = warden();
    cmd.args([
        "join",
        "--server",
        &server.url,
        "--join-token",
        &token,
        "--out",
    ])
    .arg(install.path("again"));
    let out = run(cmd).await;
    assert_ne!(out.code(), Some(0));
    assert!(out.all().contains("join_token_used"), "{out:#?}");
    assert!(!install.path("again").join("svid.pem").exists());

    // Unknown token; bad CSR (refused before a real token is spent).
    let post = |body: Value| {
        let (http, url) = (server.http.clone(), server.at("/v1/join"));
        async move {
            let resp = http.post(url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, body) =
        post(json!({"token": "wjt_nope", "csr": identity::ca::new_key_and_csr().unwrap().1})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_join_token"))
    );
    let out = run(install.client(
        &server,
        &[
            "token",
            "generate",
            "--spiffe-id",
            "spiffe://example.org/agent/b",
        ],
    ))
    .await
    .ok();
    let fresh = token_from(&out.stdout);
    let (status, body) = post(json!({"token": fresh, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_csr")));
    let (status, body) =
        post(json!({"token": fresh, "csr": identity::ca::new_key_and_csr().unwrap().1})).await;
    assert_eq!(
        status, 200,
        "the bad CSR must not have spent the token: {body}"
    );
    assert_eq!(body["spiffe_id"], "spiffe://example.org/agent/b");

    // Generation is admin-only and validated.
    let resp = server
        .http
        .post(server.at("/v1/join-tokens"))
        .bearer_auth(&admin)
        .json(&json!({"spiffe_id": "spiffe://other.org/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "foreign_trust_domain"
    );
    let resp = server
        .http
        .post(server.at("/v1/join-tokens"))
        .json(&json!({"spiffe_id": "spiffe://example.org/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // The ledger: creation, one success per token, the refusals; secrets only as HMACs.
    let entries = server.all_entries(&admin).await;
    let joins: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["event"]["action"] == "join.exchange")
        .map(|e| {
            (
                e["event"]["outcome"].as_str().unwrap(),
                e["event"]["fields"]["reason"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        joins,
        [
            ("success", "-"),
            ("denied", "reused"),
            ("denied", "unknown token"),
            ("success", "-")
        ]
    );
    let created = entries
        .iter()
        .filter(|e| e["event"]["action"] == "join_token.create")
        .count();
    assert_eq!(created, 2);
    let all = serde_json::to_string(&entries).unwrap();
    assert!(
        !all.contains(&token) && !all.contains(&fresh),
        "a join token leaked into the ledger"
    );
}
