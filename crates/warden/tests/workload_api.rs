//! The SPIFFE Workload API against a client nobody here wrote: the Rust `spiffe` crate
//! (rust-spiffe) connects to `warden serve`'s Unix socket as an ordinary workload would. The
//! test process itself is the workload, attested from the kernel: its uid and executable.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use common::Install;
use serde_json::{Value, json};
use spiffe::{TrustDomain, WorkloadApiClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_spiffe_client_fetches_and_validates_svids() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let socket = install.data_dir.join("workload.sock");
    let endpoint = format!("unix:{}", socket.display());
    let client = WorkloadApiClient::connect_to(&endpoint).await.unwrap();

    // Not registered yet: the kernel says who we are, and no entry matches.
    let err = client.fetch_x509_svid().await.unwrap_err();
    // rust-spiffe maps the Workload API's "no identity issued" refusal to its own variant.
    assert!(
        matches!(
            err,
            spiffe::workload_api::WorkloadApiError::NoIdentityIssued
        ),
        "unregistered caller got: {err:?}"
    );

    // Register this very process: its uid and its executable.
    let uid = common::own_uid();
    let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
    let resp = server
        .http
        .post(server.at("/v1/entries"))
        .bearer_auth(&admin)
        .json(&json!({
            "spiffe_id": "spiffe://example.org/agent/coder",
            "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
            "x509_ttl_secs": 600,
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

    // X.509-SVID: ours, signed by the CA the bundle endpoint publishes.
    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/agent/coder"
    );
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    let bundle = bundles.get(&td).expect("bundle for example.org");
    let published: Value = server.get_public_json("/bundle").await;
    let x5c = published["keys"][0]["x5c"][0].as_str().unwrap();
    assert_eq!(common::b64(bundle.authorities()[0].as_bytes()), x5c);

    // JWT-SVID for an audience, validated by the Workload API; the wrong audience is refused.
    let jwt = client.fetch_jwt_svid(["warden-test"], None).await.unwrap();
    assert_eq!(
        jwt.spiffe_id().to_string(),
        "spiffe://example.org/agent/coder"
    );
    assert_eq!(jwt.audience(), ["warden-test".to_owned()]);
    let validated = client
        .validate_jwt_token("warden-test", jwt.token())
        .await
        .unwrap();
    assert_eq!(
        validated.spiffe_id().to_string(),
        "spiffe://example.org/agent/coder"
    );
    assert!(
        client
            .validate_jwt_token("someone-else", jwt.token())
            .await
            .is_err()
    );
    verify_with_pyjwt(&server.url, jwt.token(), "warden-test");
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    let jwt_bundle = jwt_bundles.get(&td).expect("jwt bundle for example.org");
    assert!(jwt_bundle.find_jwt_authority(jwt.key_id()).is_some());

    // Every SVID handed out is in the ledger, with the process that got it.
    let entries = server.all_entries(&admin).await;
    let issued: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event"]["action"] == "svid.issue")
        .collect();
    let kinds: Vec<&str> = issued
        .iter()
        .map(|e| e["event"]["fields"]["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"x509") && kinds.contains(&"jwt"),
        "{kinds:?}"
    );
    for e in &issued {
        assert_eq!(e["event"]["actor"], "spiffe://example.org/agent/coder");
        assert_eq!(
            e["event"]["fields"]["pid"].as_u64().unwrap(),
            u64::from(std::process::id())
        );
    }

    // The denylist: a denied jti no longer validates; a denied identity is no longer issued;
    // lifting the denial restores it. All through the CLI, all recorded.
    let deny = |args: &[&str]| {
        let mut all = vec!["deny"];
        all.extend_from_slice(args);
        install.client(&server, &all)
    };
    let claims_jti = {
        let payload = jwt.token().split('.').nth(1).unwrap();
        let raw =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap();
        serde_json::from_slice::<Value>(&raw).unwrap()["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    common::run(deny(&["add", "jti", &claims_jti, "--reason", "leaked"]))
        .await
        .ok();
    assert!(
        client
            .validate_jwt_token("warden-test", jwt.token())
            .await
            .is_err(),
        "denied jti still validated"
    );
    common::run(deny(&[
        "add",
        "spiffe-id",
        "spiffe://example.org/agent/coder",
        "--reason",
        "hold",
    ]))
    .await
    .ok();
    let err = client.fetch_x509_svid().await.unwrap_err();
    assert!(
        matches!(
            err,
            spiffe::workload_api::WorkloadApiError::NoIdentityIssued
        ),
        "{err:?}"
    );
    let listed = common::run(deny(&["list"])).await.ok();
    assert!(
        listed.stdout.contains("spiffe://example.org/agent/coder")
            && listed.stdout.contains(&claims_jti)
    );
    common::run(deny(&[
        "remove",
        "spiffe-id",
        "spiffe://example.org/agent/coder",
    ]))
    .await
    .ok();
    assert!(
        client.fetch_x509_svid().await.is_ok(),
        "identity not restored"
    );
    let actions: Vec<Value> = server
        .all_entries(&admin)
        .await
        .iter()
        .map(|e| e["event"]["action"].clone())
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "denylist.add").count(), 2);
    assert_eq!(
        actions.iter().filter(|a| *a == "denylist.remove").count(),
        1
    );
    // Bad input is refused with a code.
    let resp = server
        .http
        .post(server.at("/v1/denylist"))
        .bearer_auth(&admin)
        .json(&json!({"kind": "email", "value": "x", "reason": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "invalid_deny_entry"
    );

    // Deleting the entry takes the identity away.
    let id = server.get_json("/v1/entries", &admin).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = server
        .http
        .delete(server.at(&format!("/v1/entries/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert!(client.fetch_jwt_svid(["warden-test"], None).await.is_err());
    server.stop().await;
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

/// An independent JWT library (PyJWT) verifies the JWT-SVID using only the OIDC discovery
/// document and the JWK set it points to — what cloud workload identity federation does — and
/// refuses it once tampered with.
fn verify_with_pyjwt(base: &str, token: &str, audience: &str) {
    const SCRIPT: &str = r#"
import json, sys, urllib.request, jwt
base, token, aud = sys.argv[1:4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
conf = json.load(opener.open(base + "/.well-known/openid-configuration"))
keys = json.load(opener.open(conf["jwks_uri"]))
kid = jwt.get_unverified_header(token)["kid"]
jwk = next(k for k in keys["keys"] if k["kid"] == kid)
key = jwt.PyJWK(jwk).key
claims = jwt.decode(token, key, algorithms=["ES256"], audience=aud, issuer=conf["issuer"])
print(json.dumps(claims))
"#;
    let run = |token: &str| {
        std::process::Command::new("python3")
            .args(["-c", SCRIPT, base, token, audience])
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .output()
    };
    let ok = match run(token) {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("WARDEN_REQUIRE_PYJWT").is_none(),
                "python3: {e}"
            );
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&ok.stderr);
    if stderr.contains("No module named 'jwt'") {
        assert!(
            std::env::var_os("WARDEN_REQUIRE_PYJWT").is_none(),
            "WARDEN_REQUIRE_PYJWT is set but PyJWT is not installed"
        );
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "skipped: PyJWT is not installed");
        return;
    }
    assert!(
        ok.status.success(),
        "PyJWT refused a valid JWT-SVID: {stderr}"
    );
    let claims: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(claims["sub"], "spiffe://example.org/agent/coder");
    assert_eq!(claims["iss"], base);
    // One character of the signature changed: refused.
    let mut bad = token.to_owned();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    let out = run(&bad).unwrap();
    assert!(!out.status.success(), "PyJWT accepted a tampered token");
}
