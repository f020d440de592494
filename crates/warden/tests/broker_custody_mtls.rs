//! The broker over mutual TLS (the X.509-SVID is the subject and the token is bound to it, RFC
//! 8705) and the custody of upstream secrets (envelope-encrypted, rotated, read only by an
//! operator with a recorded reason, never in the ledger).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{os::unix::fs::PermissionsExt, time::Duration};

use base64::Engine as _;
use common::{Install, run, warden};
use serde_json::{Value, json};
use sha2::Digest as _;

const PLANNER: &str = "spiffe://example.org/agent/planner";

fn unb64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_over_mutual_tls_is_bound_to_the_client_certificate() {
    let install = Install::new().await;
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (install.path("tls.crt"), install.path("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap();
    let plain = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .add_root_certificate(ca.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let server = install
        .serve_tls(
            &[
                "--tls-cert",
                cert_path.to_str().unwrap(),
                "--tls-key",
                key_path.to_str().unwrap(),
                "--oauth-scopes",
                "repo:read",
            ],
            plain.clone(),
        )
        .await;
    let admin = install.admin_token();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
    let resp = server
        .http
        .post(server.at("/v1/entries"))
        .bearer_auth(&admin)
        .json(&json!({
            "spiffe_id": PLANNER,
            "selectors": [format!("unix:uid:{}", common::own_uid()), format!("unix:path:{}", exe.display())],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let dir = format!("{}/../../examples/broker", env!("CARGO_MANIFEST_DIR"));
    let mut push = warden();
    push.args([
        "policy",
        "push",
        "broker",
        &format!("{dir}/broker.cedar"),
        &format!("{dir}/broker.cedarschema"),
        "--server",
        &server.url,
        "--token-file",
    ])
    .arg(&install.token_file)
    .arg("--ca-file")
    .arg(&cert_path);
    run(push).await.ok();
    let svid_dir = install.path("agent");
    let mut fetch = warden();
    fetch
        .arg("svid")
        .arg("--socket")
        .arg(install.data_dir.join("workload.sock"))
        .args(["x509", "--out"])
        .arg(&svid_dir);
    run(fetch).await.ok();
    let mut pem = std::fs::read(svid_dir.join("svid.pem")).unwrap();
    pem.extend(std::fs::read(svid_dir.join("svid.key")).unwrap());
    let agent = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // No subject token: the client certificate is the subject.
    let resp = agent
        .post(server.at("/oauth2/token"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", "https://git.example.org"),
            ("scope", "repo:read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let claims: Value =
        serde_json::from_slice(&unb64url(token.split('.').nth(1).unwrap())).unwrap();
    assert_eq!(claims["sub"], PLANNER);
    // RFC 8705 §3.1: cnf.x5t#S256 is the SHA-256 of the client certificate's DER.
    let leaf_pem = std::fs::read_to_string(svid_dir.join("svid.pem")).unwrap();
    let b64: String = leaf_pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let want = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der));
    assert_eq!(claims["cnf"]["x5t#S256"], want.as_str());

    // A bound token is exchanged again only over mutual TLS with its certificate: a stolen
    // copy cannot be traded for an unbound one.
    let again = |client: &reqwest::Client| {
        client
            .post(server.at("/oauth2/token"))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", token),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("scope", "repo:read"),
            ])
            .send()
    };
    let resp = again(&plain).await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "invalid_grant", "{err}");
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("RFC 8705")
    );
    let resp = again(&agent).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);

    // Without a certificate and without a subject token there is no subject.
    let resp = plain
        .post(server.at("/oauth2/token"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", "https://git.example.org"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "invalid_request");
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("mutual TLS")
    );
}

#[tokio::test]
async fn secrets_are_sealed_rotated_read_with_a_reason_and_never_recorded() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let secret = "xoxb-1234-very-secret-bot-token";
    let value_file = install.path("slack.txt");
    std::fs::write(&value_file, format!("{secret}\n")).unwrap();
    let cli = |args: &[&str]| install.client(&server, args);
    let vf = value_file.to_str().unwrap().to_owned();
    let out = run(cli(&["secret", "put", "slack-bot", "--value-file", &vf]))
        .await
        .ok();
    assert!(out.stdout.contains("version 1"), "{}", out.stdout);
    std::fs::write(&value_file, "xoxb-5678-rotated").unwrap();
    let out = run(cli(&["secret", "put", "slack-bot", "--value-file", &vf]))
        .await
        .ok();
    assert!(out.stdout.contains("version 2"), "{}", out.stdout);
    let list = run(cli(&["secret", "list"])).await.ok();
    assert!(
        list.stdout.contains("slack-bot") && !list.stdout.contains("xoxb"),
        "{}",
        list.stdout
    );

    // Reading needs a reason and is recorded first; versions stay readable after rotation.
    let latest = run(cli(&[
        "secret",
        "reveal",
        "slack-bot",
        "--reason",
        "rotate the gateway",
    ]))
    .await
    .ok();
    assert_eq!(latest.stdout.trim(), "xoxb-5678-rotated");
    let first = run(cli(&[
        "secret",
        "reveal",
        "slack-bot",
        "--reason",
        "audit",
        "--secret-version",
        "1",
    ]))
    .await
    .ok();
    assert_eq!(first.stdout.trim(), secret);
    let resp = server
        .http
        .post(server.at("/v1/secrets/slack-bot/reveal"))
        .bearer_auth(&admin)
        .json(&json!({"reason": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // A version that does not exist is named as such (and nothing is recorded).
    let resp = server
        .http
        .post(server.at("/v1/secrets/slack-bot/reveal"))
        .bearer_auth(&admin)
        .json(&json!({"reason": "audit", "version": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "no version 9 of secret `slack-bot`");

    // An auditor lists but cannot read; nobody without a token can do either.
    let out = run(cli(&[
        "api-token",
        "create",
        "--name",
        "alice",
        "--role",
        "auditor",
    ]))
    .await
    .ok();
    let auditor = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("wdn_"))
        .unwrap()
        .to_owned();
    let resp = server
        .http
        .post(server.at("/v1/secrets/slack-bot/reveal"))
        .bearer_auth(&auditor)
        .json(&json!({"reason": "curious"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = server
        .http
        .get(server.at("/v1/secrets"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = server
        .http
        .get(server.at("/v1/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Bad names and values are refused.
    for (path, body) in [
        ("/v1/secrets/Bad%20Name", json!({"value": "x"})),
        ("/v1/secrets/ok", json!({"value": ""})),
        ("/v1/secrets/ok", json!({"value": "x", "extra": 1})),
    ] {
        let resp = server
            .http
            .put(server.at(path))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{path} {body}");
    }

    // The ledger has every step, and no value anywhere.
    let entries = server.all_entries(&admin).await;
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["event"]["action"].as_str())
        .collect();
    for want in ["secret.create", "secret.rotate", "secret.read"] {
        assert!(actions.contains(&want), "{want} missing: {actions:?}");
    }
    let reads: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event"]["action"] == "secret.read")
        .collect();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0]["event"]["fields"]["reason"], "rotate the gateway");
    let all = serde_json::to_string(&entries).unwrap();
    assert!(!all.contains("xoxb"), "a secret value reached the ledger");
    // Nor the store in clear.
    let db = std::fs::read(install.data_dir.join("warden.db")).unwrap();
    let wal = std::fs::read(install.data_dir.join("warden.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(4).any(|w| w == b"xoxb"),
            "a secret value is in the store in clear"
        );
    }

    run(cli(&[
        "secret",
        "delete",
        "slack-bot",
        "--reason",
        "vendor offboarded",
    ]))
    .await
    .ok();
    let out = run(cli(&["secret", "reveal", "slack-bot", "--reason", "x"])).await;
    assert_ne!(out.code(), Some(0));
    assert!(out.all().contains("no secret"), "{}", out.all());
}
