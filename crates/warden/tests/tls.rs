//! HTTPS: `warden serve --tls-cert/--tls-key` serves only TLS, clients that trust the
//! certificate (reqwest, the CLI with --ca-file) work, others are refused, and an unsafe key
//! file or half a configuration stops the server from starting.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{os::unix::fs::PermissionsExt, time::Duration};

use common::{Install, run};

struct Pki {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    cert_pem: String,
}

/// A self-signed certificate for 127.0.0.1 and localhost, key file 0600.
fn pki(install: &Install) -> Pki {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (install.path("tls.crt"), install.path("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Pki {
        cert: cert_path,
        key: key_path,
        cert_pem: cert.pem(),
    }
}

fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn serves_https_to_clients_that_trust_the_certificate() {
    let install = Install::new().await;
    let pki = pki(&install);
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let server = install
        .serve_tls(
            &["--tls-cert", cert, "--tls-key", key],
            trusting(&pki.cert_pem),
        )
        .await;
    assert!(server.url.starts_with("https://"), "{}", server.url);

    // The CLI over HTTPS with the CA file; without it the certificate is refused.
    let mut cmd = common::warden();
    cmd.args([
        "api-token",
        "whoami",
        "--server",
        &server.url,
        "--ca-file",
        cert,
    ])
    .arg("--token-file")
    .arg(&install.token_file);
    let out = run(cmd).await.ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["ROLE", "admin"])),
        "{out:#?}"
    );
    let mut cmd = common::warden();
    cmd.args(["api-token", "whoami", "--server", &server.url])
        .arg("--token-file")
        .arg(&install.token_file);
    let out = run(cmd).await;
    assert_ne!(out.code(), Some(0), "an untrusted certificate was accepted");

    // Plain HTTP to the TLS port gets no answer from the API.
    let plain = server.url.replacen("https://", "http://", 1);
    let resp = common::http_client()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(
        resp.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP was served: {resp:?}"
    );

    // A client that stalls in the handshake does not block others.
    let stalled = tokio::net::TcpStream::connect(server.url.trim_start_matches("https://"))
        .await
        .unwrap();
    let health = server.get_public_json("/healthz").await;
    assert_eq!(health["status"], "ok");
    drop(stalled);
    server.stop().await;
}

#[tokio::test]
async fn unsafe_or_incomplete_tls_settings_refuse_to_start() {
    let install = Install::new().await;
    let pki = pki(&install);
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());

    refuses(&install, &["--tls-cert", cert], "--tls-key").await;

    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    refuses(
        &install,
        &["--tls-cert", cert, "--tls-key", key],
        "chmod 600",
    )
    .await;

    // A key that is not the certificate's.
    let other = rcgen::KeyPair::generate().unwrap();
    let other_path = install.path("other.key");
    std::fs::write(&other_path, other.serialize_pem()).unwrap();
    std::fs::set_permissions(&other_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let other_key = other_path.to_str().unwrap();
    refuses(
        &install,
        &["--tls-cert", cert, "--tls-key", other_key],
        "does not match",
    )
    .await;
}

/// `warden serve ARGS…` exits non-zero, saying `needle`.
async fn refuses(install: &Install, args: &[&str], needle: &str) {
    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    let out = run(cmd).await;
    assert_ne!(out.code(), Some(0), "started with {args:?}");
    assert!(out.all().contains(needle), "{args:?}: {out:#?}");
}
