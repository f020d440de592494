//! The trust domain's identity keys: created and sealed by `init`, served as a SPIFFE bundle at
//! `GET /bundle`, stable across restarts, and unusable without the key-encryption key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::os::unix::fs::PermissionsExt;

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{Install, run};
use serde_json::Value;

#[tokio::test]
async fn bundle_is_served_stable_and_sealed() {
    let install = Install::new().await;
    let kek = install.data_dir.join("kek.key");
    assert_eq!(
        std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let server = install.serve().await;
    let bundle: Value = server.get_public_json("/bundle").await;
    let keys = bundle["keys"].as_array().unwrap();
    let uses: Vec<&str> = keys.iter().map(|k| k["use"].as_str().unwrap()).collect();
    assert_eq!(uses, ["x509-svid", "jwt-svid"]);
    assert!(bundle["spiffe_refresh_hint"].as_u64().unwrap() > 0);

    // The x509-svid key carries the CA certificate; openssl reads it as the trust domain's CA.
    let x5c = keys[0]["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let der = STANDARD.decode(x5c[0].as_str().unwrap()).unwrap();
    let pem = install.path("ca.pem");
    let body = STANDARD.encode(&der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    std::fs::write(
        &pem,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    match std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&pem)
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            for want in ["CA:TRUE", "URI:spiffe://example.org", "Certificate Sign"] {
                assert!(text.contains(want), "missing `{want}`:\n{text}");
            }
        }
        Err(e) => assert!(
            std::env::var_os("WARDEN_REQUIRE_OPENSSL").is_none(),
            "openssl required: {e}"
        ),
    }
    // The jwt-svid key is a usable JWK with a key id.
    let jwt = identity::jwt::JwtPublicKey::from_jwk(&keys[1]).unwrap();
    assert!(!jwt.kid().is_empty());

    // Their creation is in the ledger.
    let entries = server.all_entries(&install.admin_token()).await;
    let created: Vec<&str> = entries
        .iter()
        .filter(|e| e["event"]["action"] == "signing_key.create")
        .map(|e| e["event"]["fields"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(created, ["x509-ca", "jwt", "access-token"]);

    // A restart serves the very same bundle (keys persisted, nothing regenerated).
    server.stop().await;
    let server = install.serve().await;
    assert_eq!(server.get_public_json("/bundle").await, bundle);
    server.stop().await;

    // Without the right key-encryption key the sealed keys do not open: refuse to start.
    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("WARDEN_KEK", STANDARD.encode([7u8; 32]));
    let out = run(cmd).await;
    assert_ne!(out.code(), Some(0));
    assert!(out.all().contains("cannot unseal"), "{out:#?}");
    // Nor without any key-encryption key at all.
    std::fs::remove_file(&kek).unwrap();
    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    let out = run(cmd).await;
    assert_ne!(out.code(), Some(0));
    assert!(out.all().contains("key-encryption key"), "{out:#?}");
}
