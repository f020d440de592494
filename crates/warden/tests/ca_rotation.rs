//! CA and JWT-key rotation against the real binary: prepared → active → retired with
//! overlapping bundles, what each SVID chains to at each step (checked with `openssl verify`
//! and the Rust `spiffe` crate), revocation of a retired key, refusals, the ledger record, and
//! persistence across a restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::path::Path;

use base64::Engine;
use common::{Install, Server, expect_error, run, warden};
use serde_json::{Value, json};

use common::{bundle_jwt_kids as jwt_kids, bundle_x509_ders as x509_roots};

fn write_root_pem(path: &Path, der: &[u8]) {
    std::fs::write(path, identity::ca::cert_pem(der)).unwrap();
}

/// `openssl verify -CAfile ROOTS LEAF`; `None` when openssl is not installed.
fn openssl_verifies(roots: &Path, leaf: &Path) -> Option<bool> {
    match std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(roots)
        .arg(leaf)
        .output()
    {
        Ok(out) => Some(out.status.success()),
        Err(e) => {
            assert!(
                std::env::var_os("WARDEN_REQUIRE_OPENSSL").is_none(),
                "openssl required: {e}"
            );
            None
        }
    }
}

async fn keys(server: &Server, admin: &str) -> Vec<Value> {
    let resp = server
        .http
        .get(server.at("/v1/ca"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json::<Vec<Value>>().await.unwrap()
}

fn ids_in(keys: &[Value], kind: &str, state: &str) -> Vec<String> {
    keys.iter()
        .filter(|k| k["kind"] == kind && k["state"] == state)
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_overlaps_bundles_then_retires_and_revokes() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let socket = install.data_dir.join("workload.sock");
    let client = spiffe::WorkloadApiClient::connect_to(&format!("unix:{}", socket.display()))
        .await
        .unwrap();

    // This test process and the `warden` executable, both as this user, get an identity.
    let uid = common::own_uid();
    for exe in [
        std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap(),
        std::fs::canonicalize("/proc/self/exe").unwrap(),
    ] {
        let resp = server
            .http
            .post(server.at("/v1/entries"))
            .bearer_auth(&admin)
            .json(&json!({
                "spiffe_id": "spiffe://example.org/agent/rotating",
                "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    let fetch_x509 = |dir: &Path| {
        let mut c = warden();
        c.arg("svid")
            .arg("--socket")
            .arg(&socket)
            .args(["x509", "--out"])
            .arg(dir);
        c
    };

    // Start: one active key of each kind, all published (the access-token key at
    // /oauth2/keys, apart from the SPIFFE bundle).
    let start = keys(&server, &admin).await;
    assert_eq!(start.len(), 3, "{start:#?}");
    assert!(
        start
            .iter()
            .all(|k| k["state"] == "active" && k["in_bundle"] == true)
    );
    let old_ca = ids_in(&start, "x509-ca", "active");
    let old_jwt = ids_in(&start, "jwt", "active");
    let old_at = ids_in(&start, "access-token", "active");
    let at_kid = |id: &str, keys: &[Value]| {
        keys.iter().find(|k| k["id"] == id).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old_at_kid = at_kid(&old_at[0], &start);
    let at_kids = |jwks: &Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        at_kids(&server.get_public_json("/oauth2/keys").await),
        [old_at_kid.as_str()]
    );
    let bundle0 = server.get_public_json("/bundle").await;
    assert!(!bundle0.to_string().contains(&old_at_kid));
    assert_eq!(x509_roots(&bundle0).len(), 1);
    assert_eq!(jwt_kids(&bundle0).len(), 1);
    let old_root = install.path("old-root.pem");
    write_root_pem(&old_root, &x509_roots(&bundle0)[0]);

    let d0 = install.path("svid-before");
    run(fetch_x509(&d0)).await.ok();
    let old_token = client
        .fetch_jwt_svid(["billing"], None)
        .await
        .unwrap()
        .token()
        .to_owned();

    // Step 1: prepare. The bundle carries both generations; nothing signs with the new one.
    let out = run(install.client(&server, &["ca", "rotate"])).await.ok();
    assert!(out.stdout.contains("prepared:"), "{out:#?}");
    assert!(
        out.stdout.contains("run `warden ca rotate` again"),
        "{out:#?}"
    );
    let prepared = keys(&server, &admin).await;
    assert_eq!(ids_in(&prepared, "x509-ca", "prepared").len(), 1);
    assert_eq!(ids_in(&prepared, "jwt", "prepared").len(), 1);
    assert_eq!(ids_in(&prepared, "access-token", "prepared").len(), 1);
    assert_eq!(ids_in(&prepared, "x509-ca", "active"), old_ca);
    let bundle1 = server.get_public_json("/bundle").await;
    assert_eq!(x509_roots(&bundle1).len(), 2, "{bundle1:#}");
    assert_eq!(jwt_kids(&bundle1).len(), 2);
    assert!(
        bundle1["spiffe_sequence"].as_u64() > bundle0["spiffe_sequence"].as_u64(),
        "the sequence moves with the bundle"
    );
    let d1 = install.path("svid-prepared");
    run(fetch_x509(&d1)).await.ok();
    if let Some(ok) = openssl_verifies(&old_root, &d1.join("svid.pem")) {
        assert!(ok, "while prepared, SVIDs are still signed by the old CA");
        assert_eq!(
            openssl_verifies(&d1.join("bundle.pem"), &d1.join("svid.pem")),
            Some(true)
        );
    }
    // The Workload API hands out the two-root bundle.
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new("example.org").unwrap();
    assert_eq!(bundles.get(&td).unwrap().authorities().len(), 2);

    // Step 2: activate. New SVIDs chain to the new CA only; the old CA stays in the bundle.
    let out = run(install.client(&server, &["ca", "rotate"])).await.ok();
    assert!(out.stdout.contains("activated:"), "{out:#?}");
    assert!(out.stdout.contains("retired:"), "{out:#?}");
    let active = keys(&server, &admin).await;
    assert_eq!(ids_in(&active, "x509-ca", "retired"), old_ca);
    assert_eq!(ids_in(&active, "jwt", "retired"), old_jwt);
    assert_eq!(ids_in(&active, "access-token", "retired"), old_at);
    // Both access-token keys validate during the overlap; neither is in the SPIFFE bundle.
    let new_at_kid = at_kid(&ids_in(&active, "access-token", "active")[0], &active);
    let mut published = at_kids(&server.get_public_json("/oauth2/keys").await);
    published.sort();
    let mut want = vec![old_at_kid.clone(), new_at_kid.clone()];
    want.sort();
    assert_eq!(published, want);
    assert!(
        !server
            .get_public_json("/bundle")
            .await
            .to_string()
            .contains(&new_at_kid)
    );
    let retired_ca = active
        .iter()
        .find(|k| k["id"] == old_ca[0].as_str())
        .unwrap();
    assert_eq!(
        retired_ca["in_bundle"], true,
        "the overlap keeps it published"
    );
    assert!(
        retired_ca["bundle_until_unix_ms"].as_i64().unwrap()
            > retired_ca["retired_unix_ms"].as_i64().unwrap()
    );
    let new_ca = ids_in(&active, "x509-ca", "active");
    assert_ne!(new_ca, old_ca);
    let bundle2 = server.get_public_json("/bundle").await;
    assert_eq!(x509_roots(&bundle2).len(), 2);
    let new_root = install.path("new-root.pem");
    let new_x5c = x509_roots(&bundle2)
        .into_iter()
        .find(|r| *r != x509_roots(&bundle0)[0])
        .unwrap();
    write_root_pem(&new_root, &new_x5c);
    let d2 = install.path("svid-active");
    run(fetch_x509(&d2)).await.ok();
    if openssl_verifies(&new_root, &d2.join("svid.pem")).is_some() {
        assert_eq!(
            openssl_verifies(&new_root, &d2.join("svid.pem")),
            Some(true)
        );
        assert_eq!(
            openssl_verifies(&old_root, &d2.join("svid.pem")),
            Some(false)
        );
        // An SVID from before the rotation still verifies against the current bundle.
        assert_eq!(
            openssl_verifies(&d2.join("bundle.pem"), &d0.join("svid.pem")),
            Some(true)
        );
    }
    // A JWT-SVID signed by the retired key still validates; a new one uses the new key.
    client
        .validate_jwt_token("billing", &old_token)
        .await
        .unwrap();
    let new_token = client
        .fetch_jwt_svid(["billing"], None)
        .await
        .unwrap()
        .token()
        .to_owned();
    let kid = |t: &str| -> String {
        let header = t.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    assert_ne!(kid(&old_token), kid(&new_token));

    // Refusals: the active key cannot be revoked; an auditor cannot rotate; unknown keys 404.
    let resp = server
        .http
        .post(server.at(&format!("/v1/ca/keys/{}/revoke", new_ca[0])))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let body = expect_error("revoke active", resp, 409, "conflict").await;
    assert!(
        body["message"].as_str().unwrap().contains("rotate first"),
        "{body}"
    );
    let auditor = common::create_token_secret(&server, &admin, "aud", "auditor").await;
    let resp = server
        .http
        .post(server.at("/v1/ca/rotate"))
        .bearer_auth(&auditor)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error("auditor rotate", resp, 403, "forbidden").await;
    let resp = server
        .http
        .post(server.at("/v1/ca/rotate"))
        .bearer_auth(&admin)
        .json(&json!({"now": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        400,
        "a non-boolean `now` is refused"
    );
    let resp = server
        .http
        .post(server.at("/v1/ca/keys/key_nope/revoke"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error("unknown key", resp, 404, "not_found").await;

    // Revoke the retired keys (a compromised old CA): they leave the bundle at once, and what
    // they signed stops verifying.
    for id in old_ca.iter().chain(&old_jwt).chain(&old_at) {
        let out = run(install.client(&server, &["ca", "revoke", id]))
            .await
            .ok();
        assert!(out.stdout.contains("left the bundle"), "{out:#?}");
    }
    assert_eq!(
        at_kids(&server.get_public_json("/oauth2/keys").await),
        [new_at_kid.as_str()]
    );
    let bundle3 = server.get_public_json("/bundle").await;
    assert_eq!(x509_roots(&bundle3), vec![new_x5c.clone()]);
    assert_eq!(jwt_kids(&bundle3), vec![kid(&new_token)]);
    assert!(
        client
            .validate_jwt_token("billing", &old_token)
            .await
            .is_err()
    );
    client
        .validate_jwt_token("billing", &new_token)
        .await
        .unwrap();
    let d3 = install.path("svid-after-revoke");
    run(fetch_x509(&d3)).await.ok();
    if openssl_verifies(&d3.join("bundle.pem"), &d0.join("svid.pem")).is_some() {
        assert_eq!(
            openssl_verifies(&d3.join("bundle.pem"), &d0.join("svid.pem")),
            Some(false)
        );
        assert_eq!(
            openssl_verifies(&d3.join("bundle.pem"), &d3.join("svid.pem")),
            Some(true)
        );
    }
    let out = run(install.client(&server, &["ca", "revoke", &old_ca[0]])).await;
    assert_ne!(out.code(), Some(0));
    assert!(out.all().contains("already revoked"), "{out:#?}");

    // `warden ca list` shows it all.
    let out = run(install.client(&server, &["ca", "list"])).await.ok();
    assert_eq!(out.stdout.lines().count(), 7, "{}", out.stdout);
    assert!(out.stdout.starts_with("ID "), "{}", out.stdout);
    assert!(out.stdout.contains("revoked"), "{}", out.stdout);
    assert!(!out.stdout.contains("_unix_ms"), "{}", out.stdout);
    let out = run(install.client(&server, &["ca", "list", "--output", "json"]))
        .await
        .ok();
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        Value::from(keys(&server, &admin).await),
        "{}",
        out.stdout
    );

    // The ledger has every step, by the admin.
    let entries = server.all_entries(&admin).await;
    let actions: Vec<(String, String)> = entries
        .iter()
        .filter(|e| {
            e["event"]["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("signing_key."))
        })
        .map(|e| {
            (
                e["event"]["action"].as_str().unwrap().to_owned(),
                e["event"]["fields"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = actions
        .iter()
        .map(|(a, k)| (a.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("signing_key.create", "x509-ca"),
            ("signing_key.create", "jwt"),
            ("signing_key.create", "access-token"),
            ("signing_key.prepare", "x509-ca"),
            ("signing_key.prepare", "jwt"),
            ("signing_key.prepare", "access-token"),
            ("signing_key.activate", "x509-ca"),
            ("signing_key.activate", "jwt"),
            ("signing_key.activate", "access-token"),
            ("signing_key.revoke", "x509-ca"),
            ("signing_key.revoke", "jwt"),
            ("signing_key.revoke", "access-token"),
        ]
    );
    let activation = entries
        .iter()
        .find(|e| e["event"]["action"] == "signing_key.activate")
        .unwrap();
    assert_eq!(
        activation["event"]["fields"]["retired_key_id"],
        old_ca[0].as_str()
    );
    assert!(
        activation["event"]["actor"]
            .as_str()
            .unwrap()
            .starts_with("token:")
    );

    // After a restart the same keys are in the same states, and the bundle is the same.
    let before = keys(&server, &admin).await;
    server.stop().await;
    let server = install.serve().await;
    assert_eq!(keys(&server, &admin).await, before);
    assert_eq!(server.get_public_json("/bundle").await, bundle3);
    server.stop().await;
}

#[tokio::test]
async fn rotate_now_replaces_the_signing_keys_in_one_call() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let before = server.get_public_json("/bundle").await;
    let out = run(install.client(&server, &["ca", "rotate", "--now"]))
        .await
        .ok();
    assert!(out.stdout.contains("prepared:"), "{out:#?}");
    assert!(out.stdout.contains("activated:"), "{out:#?}");
    assert!(!out.stdout.contains("again"), "{out:#?}");
    let after = keys(&server, &admin).await;
    assert_eq!(ids_in(&after, "x509-ca", "active").len(), 1);
    assert_eq!(ids_in(&after, "x509-ca", "retired").len(), 1);
    assert!(ids_in(&after, "x509-ca", "prepared").is_empty());
    let bundle = server.get_public_json("/bundle").await;
    assert_eq!(x509_roots(&bundle).len(), 2);
    assert!(x509_roots(&bundle).contains(&x509_roots(&before)[0]));
    server.stop().await;
}
