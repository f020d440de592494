//! Issue 20, items 6 and 11, against the real binary: a federated trust domain's agents are
//! held to its limits — the longest JWT-SVID lifetime accepted from them, the issuer their
//! tokens must carry, and the agent route groups open to them (none by default) — and OAuth
//! access tokens have a key set of their own, apart from the JWT-SVID keys.
//!
//! The partner is a key this test holds: its bundle is federated as a static document, and its
//! JWT-SVIDs are minted here, with whatever lifetime and issuer a hostile partner would choose.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use common::{Install, Server, expect_error, ok_json, post};
use identity::{
    SpiffeId,
    jwt::{JwtSigner, JwtSvidClaims},
};
use serde_json::{Value, json};

const PARTNER: &str = "partner.example";
const PARTNER_AGENT: &str = "spiffe://partner.example/agent/p";
const PARTNER_ISSUER: &str = "https://warden.partner.example";
const YEAR: i64 = 365 * 24 * 3600;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A JWT-SVID of the partner's agent for `audience`, issued at `iat`, expiring at `exp`.
fn partner_token(
    signer: &JwtSigner,
    audience: &str,
    iat: i64,
    exp: i64,
    iss: Option<&str>,
) -> String {
    signer
        .mint(&JwtSvidClaims {
            sub: SpiffeId::parse(PARTNER_AGENT).unwrap(),
            aud: vec![audience.to_owned()],
            exp,
            iat,
            jti: format!("j-{}", next_id()),
            act: None,
            iss: iss.map(str::to_owned),
        })
        .unwrap()
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The partner's token on an agent route: the database credential route.
async fn db_credential(server: &Server, token: &str) -> reqwest::Response {
    post(
        server,
        token,
        "/v1/agent/credentials/database/reader",
        &json!({}),
    )
    .await
}

/// A token exchange with `token` as the subject: the OAuth error and its description.
async fn exchange(server: &Server, token: &str) -> (u16, Value) {
    let resp = server
        .http
        .post(server.at("/oauth2/token"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("audience", "https://api.example.org"),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn set_limits(server: &Server, admin: &str, limits: &Value) -> reqwest::Response {
    server
        .http
        .put(server.at(&format!("/v1/federations/{PARTNER}/limits")))
        .bearer_auth(admin)
        .json(limits)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn federated_agents_are_held_to_their_domains_limits() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let issuer = server
        .get_public_json("/.well-known/openid-configuration")
        .await["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    let partner = JwtSigner::generate().unwrap();
    let bundle = json!({"keys": [partner.public_key().to_jwk()]});
    let added = ok_json(
        post(
            &server,
            &admin,
            "/v1/federations",
            &json!({"trust_domain": PARTNER, "bundle": bundle}),
        )
        .await,
        201,
    )
    .await;
    // The defaults: an hour, no issuer pinned, no route open.
    assert_eq!(
        added["limits"],
        json!({"max_jwt_svid_ttl_secs": 3600, "routes": []})
    );

    // The token from the issue: it expires in 30,000 years. Refused at once, with its code,
    // on an agent route and at the token endpoint — before any route check.
    let now = now();
    let ancient = partner_token(&partner, &issuer, now, now + 30_000 * YEAR, None);
    let body = expect_error(
        "30,000-year token",
        db_credential(&server, &ancient).await,
        401,
        "federated_svid_lifetime_exceeded",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("this install accepts at most 3600 s"),
        "{body}"
    );
    let (status, body) = exchange(&server, &ancient).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("at most 3600 s"),
        "{body}"
    );
    // Backdating `iat` does not help: `exp - iat` counts.
    let backdated = partner_token(&partner, &issuer, now - 30_000 * YEAR, now + 600, None);
    expect_error(
        "backdated token",
        db_credential(&server, &backdated).await,
        401,
        "federated_svid_lifetime_exceeded",
    )
    .await;

    // A token of an ordinary lifetime: the route is closed to the partner's agents.
    let fresh = partner_token(&partner, &issuer, now, now + 600, None);
    let body = expect_error(
        "closed route",
        db_credential(&server, &fresh).await,
        403,
        "federation_route_not_allowed",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("`db_credentials`"),
        "{body}"
    );
    for (path, body) in [
        (
            "/v1/agent/tasks",
            json!({"id": "T-p", "type": "patch_bug", "owner": "p@partner.example",
                   "resources": ["repository:prod-infra"], "deadline_s": 600}),
        ),
        (
            "/v1/agent/leases/revoke",
            json!({"lease_id": "oauth/token/lse_00"}),
        ),
    ] {
        expect_error(
            path,
            post(&server, &fresh, path, &body).await,
            403,
            "federation_route_not_allowed",
        )
        .await;
    }
    let (status, body) = exchange(&server, &fresh).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");

    // The admin opens the database route and pins the partner's issuer.
    let limits = ok_json(
        set_limits(
            &server,
            &admin,
            &json!({"routes": ["db_credentials"], "issuer": PARTNER_ISSUER}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        limits["limits"],
        json!({"max_jwt_svid_ttl_secs": 3600, "issuer": PARTNER_ISSUER,
               "routes": ["db_credentials"]})
    );
    // Without the pinned issuer (or with another): refused.
    for iss in [None, Some("https://evil.example")] {
        let token = partner_token(&partner, &issuer, now, now + 600, iss);
        expect_error(
            "issuer",
            db_credential(&server, &token).await,
            401,
            "federated_issuer_mismatch",
        )
        .await;
    }
    // With it, the credential passes and the route itself answers (no such role here).
    let good = partner_token(&partner, &issuer, now, now + 600, Some(PARTNER_ISSUER));
    let resp = db_credential(&server, &good).await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert!(
        !matches!(status, 401 | 500)
            && ![
                "federation_route_not_allowed",
                "federated_issuer_mismatch",
                "federated_svid_lifetime_exceeded",
            ]
            .contains(&body["code"].as_str().unwrap_or_default()),
        "{status} {body}"
    );
    // Other routes stay closed.
    let (status, body) = exchange(&server, &good).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("access_denied"))
    );
    // A wider lifetime cap still does not admit the 30,000-year token.
    ok_json(
        set_limits(
            &server,
            &admin,
            &json!({"max_jwt_svid_ttl_secs": 86400, "routes": ["db_credentials"]}),
        )
        .await,
        200,
    )
    .await;
    expect_error(
        "30,000-year token, one-day cap",
        db_credential(&server, &ancient).await,
        401,
        "federated_svid_lifetime_exceeded",
    )
    .await;

    // Bad limits are refused with the reason; nothing changes.
    for (what, body, status, code) in [
        (
            "unknown route",
            json!({"routes": ["everything"]}),
            400,
            "invalid_request",
        ),
        (
            "zero lifetime",
            json!({"max_jwt_svid_ttl_secs": 0}),
            400,
            "invalid_request",
        ),
        (
            "over a day",
            json!({"max_jwt_svid_ttl_secs": 86401}),
            400,
            "invalid_request",
        ),
    ] {
        expect_error(what, set_limits(&server, &admin, &body).await, status, code).await;
    }
    let resp = server
        .http
        .put(server.at("/v1/federations/nobody.example/limits"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error("not federated", resp, 404, "not_found").await;
    let listed = server.get_json("/v1/federations", &admin).await;
    assert_eq!(
        listed[0]["limits"],
        json!({"max_jwt_svid_ttl_secs": 86400, "routes": ["db_credentials"]})
    );

    // Every change of limits is in the ledger, with who made it.
    let entries = server.all_entries(&admin).await;
    let changes: Vec<&Value> = entries
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["action"] == "federation.limits")
        .collect();
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(changes[0]["fields"]["trust_domain"], PARTNER);
    assert_eq!(
        changes[0]["fields"]["limits"]["routes"],
        json!(["db_credentials"])
    );

    // The CLI sets and shows them too.
    let out = common::run(install.client(
        &server,
        &[
            "federation",
            "limits",
            PARTNER,
            "--max-jwt-svid-ttl",
            "15m",
            "--routes",
            "token_exchange,git",
        ],
    ))
    .await
    .ok();
    let fields: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        format!("TRUST_DOMAIN {PARTNER}"),
        "MAX_JWT_TTL 900s".to_owned(),
        "ISSUER -".to_owned(),
        "ROUTES token_exchange,git".to_owned(),
    ] {
        assert!(fields.contains(&want), "{want:?}: {out:#?}");
    }
    server.stop().await;
}

/// Access tokens have their own keys: the RFC 8414 metadata points resource servers at them,
/// and they share nothing with the JWT-SVID keys of OIDC discovery or the SPIFFE bundle.
#[tokio::test]
async fn access_token_keys_are_published_apart_from_jwt_svid_keys() {
    let install = Install::new().await;
    let server = install.serve().await;
    let meta = server
        .get_public_json("/.well-known/oauth-authorization-server")
        .await;
    let oidc = server
        .get_public_json("/.well-known/openid-configuration")
        .await;
    assert_eq!(
        meta["jwks_uri"],
        json!(format!("{}/oauth2/keys", meta["issuer"].as_str().unwrap()))
    );
    assert_eq!(
        oidc["jwks_uri"],
        json!(format!("{}/keys", oidc["issuer"].as_str().unwrap()))
    );
    let kids = |jwks: &Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                assert_eq!(k["use"], "sig", "{k}");
                assert_eq!(k["alg"], "ES256", "{k}");
                k["kid"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let access = kids(&server.get_public_json("/oauth2/keys").await);
    let svid = kids(&server.get_public_json("/keys").await);
    assert_eq!(access.len(), 1, "{access:?}");
    assert_eq!(svid.len(), 1, "{svid:?}");
    assert_ne!(access, svid);
    let bundle = server.get_public_json("/bundle").await.to_string();
    assert!(!bundle.contains(&access[0]), "{bundle}");
    assert!(bundle.contains(&svid[0]), "{bundle}");
    server.stop().await;
}
