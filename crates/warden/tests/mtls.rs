//! Mutual TLS with X.509-SVIDs: an agent presents the SVID it got from the Workload API as its
//! TLS client certificate (rustls via reqwest, and `curl` when installed), Warden verifies it
//! against the live bundle, and the denylist takes effect at once — on new handshakes and on
//! requests over connections opened before the denial.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use common::{Install, expect_error, run, warden};
use serde_json::{Value, json};

fn tls_files(install: &Install) -> (String, String, String) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (install.path("tls.crt"), install.path("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (
        cert_path.to_str().unwrap().to_owned(),
        key_path.to_str().unwrap().to_owned(),
        cert.pem(),
    )
}

fn client(server_ca_pem: &str, identity_pem: Option<&[u8]>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30));
    if let Some(pem) = identity_pem {
        b = b.identity(reqwest::Identity::from_pem(pem).unwrap());
    }
    b.build().unwrap()
}

fn identity_pem(dir: &Path) -> Vec<u8> {
    let mut pem = std::fs::read(dir.join("svid.pem")).unwrap();
    pem.extend(std::fs::read(dir.join("svid.key")).unwrap());
    pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_authenticate_with_their_svid_and_denials_apply_at_once() {
    let install = Install::new().await;
    let (cert, key, ca_pem) = tls_files(&install);
    let server = install
        .serve_tls(
            &["--tls-cert", &cert, "--tls-key", &key],
            client(&ca_pem, None),
        )
        .await;
    let admin = install.admin_token();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
    let resp = server
        .http
        .post(server.at("/v1/entries"))
        .bearer_auth(&admin)
        .json(&json!({
            "spiffe_id": "spiffe://example.org/agent/mtls",
            "selectors": [format!("unix:uid:{}", common::own_uid()), format!("unix:path:{}", exe.display())],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let svid_dir = install.path("agent");
    let mut fetch = warden();
    fetch
        .arg("svid")
        .arg("--socket")
        .arg(install.data_dir.join("workload.sock"))
        .args(["x509", "--out"])
        .arg(&svid_dir);
    run(fetch).await.ok();

    // With its SVID the agent is known by its SPIFFE ID, no token needed.
    let agent = client(&ca_pem, Some(&identity_pem(&svid_dir)));
    let resp = agent
        .get(server.at("/v1/svid/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["spiffe_id"], "spiffe://example.org/agent/mtls");
    assert_eq!(me["trust_domain"], "example.org");
    let serial = me["serial"].as_str().unwrap().to_owned();
    // The serial is the one the Workload API recorded when it issued the SVID.
    let entries = server.all_entries(&admin).await;
    assert!(
        entries.iter().any(|e| e["event"]["action"] == "svid.issue"
            && e["event"]["fields"]["serial"] == serial.as_str()),
        "issued serial {serial} not in the ledger"
    );

    // Without a certificate: tokens still work, the SVID endpoint says what is missing.
    let resp = server
        .http
        .get(server.at("/v1/svid/whoami"))
        .send()
        .await
        .unwrap();
    expect_error("no client certificate", resp, 401, "svid_required").await;
    let resp = server
        .http
        .get(server.at("/v1/whoami"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // A certificate from a CA that is not in the bundle fails the handshake.
    let rogue_ca = identity::ca::Ca::generate_root(
        &identity::TrustDomain::parse("example.org").unwrap(),
        time::Duration::days(1),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let rogue = rogue_ca
        .issue_x509_svid(
            &identity::SpiffeId::parse("spiffe://example.org/agent/mtls").unwrap(),
            time::Duration::hours(1),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let mut rogue_pem = identity::ca::cert_pem(&rogue.cert_der).into_bytes();
    rogue_pem.extend(identity::ca::pem("PRIVATE KEY", &rogue.key_pkcs8).into_bytes());
    let refused = client(&ca_pem, Some(&rogue_pem))
        .get(server.at("/v1/svid/whoami"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a rogue CA's SVID was accepted: {refused:?}"
    );

    // `curl`, another TLS stack, with the same files.
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--cacert", &cert, "--cert"])
        .arg(svid_dir.join("svid.pem"))
        .arg("--key")
        .arg(svid_dir.join("svid.key"))
        .arg(server.at("/v1/svid/whoami"))
        .output();
    if let Ok(out) = curl {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["spiffe_id"], "spiffe://example.org/agent/mtls");
    }

    // Deny the certificate's serial: the open connection is refused on its next request, and
    // a new handshake fails.
    let cli = |args: &[&str]| {
        let mut cmd = install.client(&server, args);
        cmd.args(["--ca-file", &cert]);
        cmd
    };
    let out = run(cli(&[
        "deny",
        "add",
        "serial",
        &serial,
        "--reason",
        "laptop stolen",
    ]))
    .await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let resp = agent
        .get(server.at("/v1/svid/whoami"))
        .send()
        .await
        .unwrap();
    let body = expect_error("denied serial, old connection", resp, 403, "svid_revoked").await;
    assert!(
        body["message"].as_str().unwrap().contains(&serial),
        "{body}"
    );
    let fresh = client(&ca_pem, Some(&identity_pem(&svid_dir)));
    assert!(
        fresh
            .get(server.at("/v1/svid/whoami"))
            .send()
            .await
            .is_err(),
        "a denied serial completed a new handshake"
    );
    run(cli(&["deny", "remove", "serial", &serial])).await.ok();
    let fresh = client(&ca_pem, Some(&identity_pem(&svid_dir)));
    let resp = fresh
        .get(server.at("/v1/svid/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Deny the identity itself: same effect, whatever certificate it holds.
    run(cli(&[
        "deny",
        "add",
        "spiffe-id",
        "spiffe://example.org/agent/mtls",
        "--reason",
        "agent compromised",
    ]))
    .await
    .ok();
    let resp = fresh
        .get(server.at("/v1/svid/whoami"))
        .send()
        .await
        .unwrap();
    expect_error("denied identity", resp, 403, "svid_revoked").await;

    // The refusals are in the ledger.
    let entries = server.all_entries(&admin).await;
    let refused: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event"]["action"] == "svid.authenticate")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused.iter().all(
        |e| e["event"]["outcome"] == "denied" && e["event"]["fields"]["code"] == "svid_revoked"
    ));
    server.stop().await;
}
