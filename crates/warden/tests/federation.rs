//! SPIFFE federation between two running installs: `partner.test` (B, serving HTTPS) and
//! `example.org` (A). The test process is a workload of both, through the Rust `spiffe` crate.
//! A trusts B's JWT-SVIDs only while B's bundle is federated — fetched from B's bundle
//! endpoint (and refreshed after B rotates) or given as a static file (and updated) — hands
//! B's bundle to its workloads, records every change in its ledger, and refuses bad input with
//! a stable error code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{os::unix::fs::PermissionsExt, path::PathBuf, time::Duration};

use common::{Install, Out, Server, expect_error, run};
use serde_json::{Value, json};
use spiffe::{TrustDomain, WorkloadApiClient};

/// Audience of every JWT-SVID in these tests.
const AUD: &str = "a-service";
/// The identity the test process gets from B.
const B_ID: &str = "spiffe://partner.test/agent/b";
/// The identity the test process gets from A.
const A_ID: &str = "spiffe://example.org/agent/a";

/// One running install and what the test needs to talk to it.
struct Domain {
    install: Install,
    server: Server,
    admin: String,
    /// `--ca-file CERT` for CLI calls to an HTTPS server.
    ca_file: Option<PathBuf>,
    workload: WorkloadApiClient,
}

impl Domain {
    /// `warden ARGS… --server URL --token-file ADMIN [--ca-file CERT]`, run to completion.
    async fn cli(&self, args: &[&str]) -> Out {
        let mut cmd = self.install.client(&self.server, args);
        if let Some(ca) = &self.ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        run(cmd).await
    }

    /// Registers the test process (its uid and executable) as `spiffe_id`.
    async fn register_self(&self, spiffe_id: &str) {
        let uid = common::own_uid();
        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        let resp = self
            .server
            .http
            .post(self.server.at("/v1/entries"))
            .bearer_auth(&self.admin)
            .json(&json!({
                "spiffe_id": spiffe_id,
                "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
                "x509_ttl_secs": 600,
                "jwt_ttl_secs": 900,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "{}",
            resp.text().await.unwrap()
        );
    }

    /// ValidateJWTSVID on this install's Workload API: the validated SPIFFE ID, or the error.
    async fn validate(&self, token: &str) -> Result<String, String> {
        self.workload
            .validate_jwt_token(AUD, token)
            .await
            .map(|svid| svid.spiffe_id().to_string())
            .map_err(|e| format!("{e} / {e:?}"))
    }

    /// POST /v1/federations with `body` as `token`.
    async fn add(&self, token: &str, body: &Value) -> reqwest::Response {
        self.server
            .http
            .post(self.server.at("/v1/federations"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Every ledger entry's event whose action starts with `federation.`.
    async fn federation_events(&self) -> Vec<Value> {
        self.server
            .all_entries(&self.admin)
            .await
            .into_iter()
            .map(|e| e["event"].clone())
            .filter(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("federation."))
            })
            .collect()
    }
}

/// Connects the `spiffe` crate's client to the install's Workload API socket.
async fn workload_client(install: &Install) -> WorkloadApiClient {
    let socket = install.data_dir.join("workload.sock");
    WorkloadApiClient::connect_to(format!("unix:{}", socket.display()))
        .await
        .unwrap()
}

/// A self-signed certificate for 127.0.0.1 in `install`'s directory (key 0600): `(cert, key,
/// PEM)`.
fn tls_cert(install: &Install) -> (PathBuf, PathBuf, String) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (install.path("tls.crt"), install.path("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert_path, key_path, cert.pem())
}

/// B (`partner.test`, HTTPS) and A (`example.org`, plain HTTP), both serving.
async fn two_domains() -> (Domain, Domain) {
    let b_install = Install::empty();
    b_install
        .init(&["--trust-domain", "partner.test"])
        .await
        .ok();
    let (cert, key, pem) = tls_cert(&b_install);
    let trusting = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let b_server = b_install
        .serve_tls(
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            trusting,
        )
        .await;
    assert!(b_server.url.starts_with("https://"), "{}", b_server.url);
    let b = Domain {
        admin: b_install.admin_token(),
        workload: workload_client(&b_install).await,
        install: b_install,
        server: b_server,
        ca_file: Some(cert),
    };

    let a_install = Install::new().await;
    let a_server = a_install.serve().await;
    let a = Domain {
        admin: a_install.admin_token(),
        workload: workload_client(&a_install).await,
        install: a_install,
        server: a_server,
        ca_file: None,
    };
    (a, b)
}

use common::{bundle_jwt_kids as jwt_kids, bundle_x509_ders as x509_ders};

/// The `federation list` line of `td` (exactly one).
fn line_of<'a>(out: &'a Out, td: &str) -> &'a str {
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{td} ")))
        .collect();
    assert_eq!(lines.len(), 1, "one line for {td}: {out:#?}");
    lines[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_jwt_svids_validate_only_while_the_bundle_is_trusted() {
    let (a, b) = two_domains().await;
    let partner = TrustDomain::new("partner.test").unwrap();
    let own = TrustDomain::new("example.org").unwrap();
    let whoami = a.server.get_json("/v1/whoami", &a.admin).await;
    let actor = format!("token:{}", whoami["name"].as_str().unwrap());

    // 1. A JWT-SVID from B, and A knows nothing of partner.test.
    b.register_self(B_ID).await;
    a.register_self(A_ID).await;
    let token_1 = b.workload.fetch_jwt_svid([AUD], None).await.unwrap();
    assert_eq!(token_1.spiffe_id().to_string(), B_ID);
    assert_eq!(
        b.validate(token_1.token()).await.as_deref(),
        Ok(B_ID),
        "B validates its own token"
    );
    let err = a.validate(token_1.token()).await.unwrap_err();
    assert!(err.contains("partner.test"), "refusal says why: {err}");
    let bundle_v1_text = b.server.get_text("/bundle").await;
    let bundle_v1: Value = serde_json::from_str(&bundle_v1_text).unwrap();
    let kid_1 = token_1.key_id().to_owned();
    assert_eq!(jwt_kids(&bundle_v1), vec![kid_1.clone()]);

    // 2. Federate from B's bundle endpoint, authenticated with B's TLS certificate.
    let bundle_url = b.server.at("/bundle");
    let endpoint_ca = b.ca_file.clone().unwrap();
    let added = a
        .cli(&[
            "federation",
            "add",
            "partner.test",
            "--bundle-url",
            &bundle_url,
            "--endpoint-ca",
            endpoint_ca.to_str().unwrap(),
        ])
        .await
        .ok();
    assert!(added.stdout.contains(&kid_1), "{added:#?}");
    let listed = a.cli(&["federation", "list"]).await.ok();
    let line = line_of(&listed, "partner.test");
    assert!(
        line.contains(&bundle_url) && line.contains(&kid_1) && line.ends_with(" -"),
        "{listed:#?}"
    );
    // Applied by the call itself: no waiting for the keyring tick.
    assert_eq!(a.validate(token_1.token()).await.as_deref(), Ok(B_ID));
    // The wrong audience is still refused.
    assert!(
        a.workload
            .validate_jwt_token("someone-else", token_1.token())
            .await
            .is_err()
    );
    let x509 = a.workload.fetch_x509_bundles().await.unwrap();
    assert!(x509.get(&own).is_some(), "own bundle kept");
    let partner_x509 = x509.get(&partner).expect("partner.test X.509 bundle");
    let partner_cas: Vec<Vec<u8>> = partner_x509
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_eq!(
        partner_cas,
        x509_ders(&bundle_v1),
        "B's CA, as B publishes it"
    );
    let jwt = a.workload.fetch_jwt_bundles().await.unwrap();
    assert!(jwt.get(&own).is_some());
    assert!(
        jwt.get(&partner)
            .expect("partner.test JWT bundle")
            .find_jwt_authority(&kid_1)
            .is_some()
    );
    // X509SVIDResponse.federated_bundles: A's own SVID comes with B's bundle.
    let context = a.workload.fetch_x509_context().await.unwrap();
    assert_eq!(
        context.default_svid().unwrap().spiffe_id().to_string(),
        A_ID
    );
    assert!(context.bundle_set().get(&own).is_some());
    assert!(
        context.bundle_set().get(&partner).is_some(),
        "federated_bundles carries partner.test"
    );
    // The auditor reads the list over HTTP too.
    let list = a.server.get_json("/v1/federations", &a.admin).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["trust_domain"], "partner.test");
    assert_eq!(list[0]["bundle_url"], bundle_url.as_str());
    assert_eq!(list[0]["jwt_kids"], json!([kid_1]));
    assert_eq!(list[0]["x509_authorities"], 1);
    // `--output json` is that answer.
    let listed = a
        .cli(&["federation", "list", "--output", "json"])
        .await
        .ok();
    assert_eq!(
        serde_json::from_str::<Value>(&listed.stdout).unwrap(),
        list,
        "{listed:#?}"
    );

    // 3. B rotates now; A picks the new key up on refresh.
    b.cli(&["ca", "rotate", "--now"]).await.ok();
    let token_2 = b.workload.fetch_jwt_svid([AUD], None).await.unwrap();
    let kid_2 = token_2.key_id().to_owned();
    assert_ne!(kid_1, kid_2, "B signs with a new key after rotating");
    let bundle_v2: Value = b.server.get_public_json("/bundle").await;
    let mut kids_v2 = jwt_kids(&bundle_v2);
    kids_v2.sort();
    let mut want = vec![kid_1.clone(), kid_2.clone()];
    want.sort();
    assert_eq!(kids_v2, want, "B's bundle keeps the retired key");
    assert!(
        a.validate(token_2.token()).await.is_err(),
        "A has not fetched B's new key yet"
    );
    a.cli(&["federation", "refresh", "partner.test"]).await.ok();
    let listed = a.cli(&["federation", "list"]).await.ok();
    let line = line_of(&listed, "partner.test");
    assert!(
        line.contains(&kid_1) && line.contains(&kid_2),
        "{listed:#?}"
    );
    assert_eq!(a.validate(token_2.token()).await.as_deref(), Ok(B_ID));
    assert_eq!(
        a.validate(token_1.token()).await.as_deref(),
        Ok(B_ID),
        "the retired key still verifies during the overlap"
    );
    // An unchanged bundle refreshes without a new ledger entry.
    let before = a.federation_events().await.len();
    a.cli(&["federation", "refresh", "partner.test"]).await.ok();
    assert_eq!(a.federation_events().await.len(), before);

    // 4. Remove: B's tokens fail again, and B's bundle leaves A's workloads.
    let removed = a.cli(&["federation", "remove", "partner.test"]).await.ok();
    assert!(removed.stdout.contains("partner.test"), "{removed:#?}");
    for token in [&token_1, &token_2] {
        let err = a.validate(token.token()).await.unwrap_err();
        assert!(err.contains("partner.test"), "{err}");
    }
    let x509 = a.workload.fetch_x509_bundles().await.unwrap();
    assert!(x509.get(&partner).is_none() && x509.get(&own).is_some());
    let listed = a.cli(&["federation", "list"]).await.ok();
    assert_eq!(listed.stdout, "no federated trust domains\n", "{listed:#?}");

    let events = a.federation_events().await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["federation.add", "federation.refresh", "federation.remove"],
        "{events:#?}"
    );
    for e in &events {
        assert_eq!(e["actor"], actor.as_str(), "{e}");
        assert_eq!(e["outcome"], "success", "{e}");
        assert_eq!(e["fields"]["trust_domain"], "partner.test", "{e}");
    }
    assert_eq!(events[0]["fields"]["bundle_url"], bundle_url.as_str());
    assert_eq!(events[0]["fields"]["jwt_kids"], json!([kid_1]));
    let mut refreshed: Vec<String> = events[1]["fields"]["jwt_kids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    refreshed.sort();
    assert_eq!(refreshed, want);

    // 5. A static bundle: B's first bundle, from a file. It knows only the first key.
    let v1_file = a.install.path("partner-v1.json");
    std::fs::write(&v1_file, &bundle_v1_text).unwrap();
    let added = a
        .cli(&[
            "federation",
            "add",
            "partner.test",
            "--bundle-file",
            v1_file.to_str().unwrap(),
        ])
        .await
        .ok();
    assert!(added.stdout.contains("(static)"), "{added:#?}");
    assert_eq!(a.validate(token_1.token()).await.as_deref(), Ok(B_ID));
    let err = a.validate(token_2.token()).await.unwrap_err();
    assert!(err.contains(&kid_2), "unknown key: {err}");
    // Update to a bundle holding only B's new JWT key: it replaces the old one.
    let mut only_new = bundle_v2.clone();
    only_new["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["use"] != "jwt-svid" || k["kid"] == kid_2.as_str());
    let v2_file = a.install.path("partner-v2.json");
    std::fs::write(&v2_file, only_new.to_string()).unwrap();
    a.cli(&[
        "federation",
        "update",
        "partner.test",
        "--bundle-file",
        v2_file.to_str().unwrap(),
    ])
    .await
    .ok();
    assert_eq!(a.validate(token_2.token()).await.as_deref(), Ok(B_ID));
    let err = a.validate(token_1.token()).await.unwrap_err();
    assert!(err.contains(&kid_1), "old key gone: {err}");
    let listed = a.cli(&["federation", "list"]).await.ok();
    let line = line_of(&listed, "partner.test");
    assert!(
        line.contains("(static)") && line.contains(&kid_2) && !line.contains(&kid_1),
        "{listed:#?}"
    );
    let jwt = a.workload.fetch_jwt_bundles().await.unwrap();
    let partner_jwt = jwt.get(&partner).expect("partner.test JWT bundle");
    assert!(partner_jwt.find_jwt_authority(&kid_2).is_some());
    assert!(partner_jwt.find_jwt_authority(&kid_1).is_none());
    // A static bundle is updated, not refreshed.
    let out = a.cli(&["federation", "refresh", "partner.test"]).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("conflict (409)"), "{out:#?}");

    let events = a.federation_events().await;
    let tail: Vec<&str> = events[3..]
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(tail, ["federation.add", "federation.update"], "{events:#?}");
    assert!(events[3]["fields"].get("bundle_url").is_none());
    assert_eq!(events[4]["fields"]["jwt_kids"], json!([kid_2]));
    assert_eq!(events[4]["actor"], actor.as_str());

    a.server.stop().await;
    b.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_federation_requests_are_refused_with_a_code() {
    let (a, b) = two_domains().await;
    let bundle: Value = b.server.get_public_json("/bundle").await;
    let bundle_url = b.server.at("/bundle");
    let b_cert = std::fs::read_to_string(b.ca_file.as_ref().unwrap()).unwrap();
    let admin = a.admin.clone();

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "plain http endpoint",
            json!({"trust_domain": "partner.test",
                   "bundle_url": bundle_url.replacen("https://", "http://", 1)}),
            400,
            "invalid_request",
        ),
        (
            "own trust domain",
            json!({"trust_domain": "example.org", "bundle": bundle}),
            400,
            "invalid_request",
        ),
        (
            "not a trust domain",
            json!({"trust_domain": "Not A Domain!", "bundle": bundle}),
            400,
            "invalid_trust_domain",
        ),
        (
            "no keys",
            json!({"trust_domain": "partner.test", "bundle": {"keys": []}}),
            400,
            "bundle_empty",
        ),
        (
            "no keys array",
            json!({"trust_domain": "partner.test", "bundle": {"nokeys": 1}}),
            400,
            "bundle_malformed",
        ),
        (
            "x509 key without a certificate",
            json!({"trust_domain": "partner.test",
                   "bundle": {"keys": [{"use": "x509-svid", "x5c": []}]}}),
            400,
            "bundle_bad_x509_key",
        ),
        (
            "jwt key that is not a JWK",
            json!({"trust_domain": "partner.test",
                   "bundle": {"keys": [{"use": "jwt-svid", "kid": "k", "kty": "RSA"}]}}),
            400,
            "bundle_bad_jwt_key",
        ),
        (
            "endpoint certificate not trusted",
            json!({"trust_domain": "partner.test", "bundle_url": bundle_url}),
            502,
            "bundle_fetch_failed",
        ),
    ];
    for (what, body, status, code) in &cases {
        expect_error(what, a.add(&admin, body).await, *status, code).await;
    }
    // Two sources at once is refused too.
    let both = json!({"trust_domain": "partner.test", "bundle": bundle,
                      "bundle_url": bundle_url, "endpoint_ca_pem": b_cert});
    let body = expect_error(
        "two sources",
        a.add(&admin, &both).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("bundle_url")),
        "{body}"
    );

    // An auditor reads the list but cannot federate.
    let auditor = common::create_token_secret(&a.server, &admin, "fed-auditor", "auditor").await;
    let ok = json!({"trust_domain": "partner.test", "bundle_url": bundle_url,
                    "endpoint_ca_pem": b_cert});
    expect_error("auditor adds", a.add(&auditor, &ok).await, 403, "forbidden").await;
    let list = a.server.get_json("/v1/federations", &auditor).await;
    assert_eq!(
        list,
        json!([]),
        "nothing was federated by a refused request"
    );

    // Added once; the second time is a conflict, whatever the source.
    let resp = a.add(&admin, &ok).await;
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    expect_error("added twice", a.add(&admin, &ok).await, 409, "conflict").await;
    let again_static = json!({"trust_domain": "partner.test", "bundle": bundle});
    expect_error(
        "added twice (static)",
        a.add(&admin, &again_static).await,
        409,
        "conflict",
    )
    .await;
    // An endpoint federation is refreshed, not updated.
    let resp = a
        .server
        .http
        .put(a.server.at("/v1/federations/partner.test"))
        .bearer_auth(&admin)
        .json(&json!({"bundle": bundle}))
        .send()
        .await
        .unwrap();
    expect_error("update of an endpoint federation", resp, 409, "conflict").await;
    let resp = a
        .server
        .http
        .post(a.server.at("/v1/federations/partner.test/refresh"))
        .bearer_auth(&auditor)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error("auditor refreshes", resp, 403, "forbidden").await;

    // Unknown trust domains.
    let http = &a.server.http;
    let resp = http
        .delete(a.server.at("/v1/federations/nobody.test"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error("remove unknown", resp, 404, "not_found").await;
    let resp = http
        .post(a.server.at("/v1/federations/nobody.test/refresh"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error("refresh unknown", resp, 404, "not_found").await;
    let resp = http
        .put(a.server.at("/v1/federations/nobody.test"))
        .bearer_auth(&admin)
        .json(&json!({"bundle": bundle}))
        .send()
        .await
        .unwrap();
    expect_error("update unknown", resp, 404, "not_found").await;

    // The CLI shows the code and fails.
    let cli_fails = |out: Out, needle: &str| {
        assert_ne!(out.code(), Some(0), "{out:#?}");
        assert!(out.stderr.contains(needle), "want {needle}: {out:#?}");
    };
    let http_url = bundle_url.replacen("https://", "http://", 1);
    cli_fails(
        a.cli(&["federation", "add", "other.test", "--bundle-url", &http_url])
            .await,
        "invalid_request (400)",
    );
    let empty = a.install.path("empty.json");
    std::fs::write(&empty, r#"{"keys":[]}"#).unwrap();
    cli_fails(
        a.cli(&[
            "federation",
            "add",
            "other.test",
            "--bundle-file",
            empty.to_str().unwrap(),
        ])
        .await,
        "bundle_empty (400)",
    );
    let malformed = a.install.path("malformed.json");
    std::fs::write(&malformed, r#"{"nokeys":1}"#).unwrap();
    cli_fails(
        a.cli(&[
            "federation",
            "add",
            "other.test",
            "--bundle-file",
            malformed.to_str().unwrap(),
        ])
        .await,
        "bundle_malformed (400)",
    );
    cli_fails(
        a.cli(&[
            "federation",
            "add",
            "other.test",
            "--bundle-url",
            &bundle_url,
        ])
        .await,
        "bundle_fetch_failed (502)",
    );
    cli_fails(
        a.cli(&["federation", "remove", "nobody.test"]).await,
        "not_found (404)",
    );

    // Only the one good request changed anything.
    let events = a.federation_events().await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["action"], "federation.add");
    let list = a.server.get_json("/v1/federations", &admin).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    a.server.stop().await;
    b.server.stop().await;
}
