//! The credential broker end to end against the real binary: RFC 8693 token exchange with
//! JWT-SVIDs from the Workload API, RFC 7662 introspection, RFC 7009 revocation, delegation
//! that only narrows, every refusal with its OAuth error and a ledger entry, leases, and the
//! hold.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use common::{Install, Server, run, warden};
use serde_json::{Value, json};

const GIT: &str = "https://git.example.org";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const PLANNER: &str = "spiffe://example.org/agent/planner";
const CODER: &str = "spiffe://example.org/agent/coder";
const HELPER: &str = "spiffe://example.org/agent/helper";

fn example(name: &str) -> String {
    format!(
        "{}/../../examples/broker/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

struct Env {
    install: Install,
    server: Server,
    issuer: String,
}

impl Env {
    async fn start(extra: &[&str]) -> Env {
        let install = Install::new().await;
        let mut args = vec!["--oauth-scopes", "repo:read,repo:write,repo:admin"];
        args.extend_from_slice(extra);
        let server = install.serve_with(&args).await;
        // Every agent is "this user running the warden binary": the test picks which identity
        // with --spiffe-id.
        let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
        let uid = common::own_uid();
        for id in [PLANNER, CODER, HELPER] {
            let resp = server
                .http
                .post(server.at("/v1/entries"))
                .bearer_auth(install.admin_token())
                .json(&json!({
                    "spiffe_id": id,
                    "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
                    "owner": "acme",
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
        }
        run(install.client(
            &server,
            &[
                "policy",
                "push",
                "broker",
                &example("broker.cedar"),
                &example("broker.cedarschema"),
            ],
        ))
        .await
        .ok();
        let issuer = server
            .get_public_json("/.well-known/openid-configuration")
            .await["issuer"]
            .as_str()
            .unwrap()
            .to_owned();
        Env {
            install,
            server,
            issuer,
        }
    }

    /// Creates task `id` with `agents` on it (no grants).
    async fn task(&self, id: &str, agents: &[&str]) {
        let admin = self.install.admin_token();
        let resp = self
            .server
            .http
            .post(self.server.at("/v1/tasks"))
            .bearer_auth(&admin)
            .json(
                &json!({"id": id, "type": "patch_bug", "owner": "alice@example.org",
                "resources": ["repository:warden"], "deadline_s": 3600}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
        for agent in agents {
            let resp = self
                .server
                .http
                .post(self.server.at(&format!("/v1/tasks/{id}/agents")))
                .bearer_auth(&admin)
                .json(&json!({"agent": agent, "role": "worker"}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
        }
    }

    /// A JWT-SVID of `id` for `audience` from the Workload API.
    async fn svid_for(&self, id: &str, audience: &str) -> String {
        let mut cmd = warden();
        cmd.arg("svid")
            .arg("--socket")
            .arg(self.install.data_dir.join("workload.sock"))
            .args(["jwt", "--audience", audience, "--spiffe-id", id]);
        run(cmd).await.ok().stdout.trim().to_owned()
    }

    async fn svid(&self, id: &str) -> String {
        self.svid_for(id, &self.issuer.clone()).await
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        self.token_at("/oauth2/token", form).await
    }

    /// POSTs `form` to one of the OAuth endpoints; a body that is not JSON (RFC 7009's empty
    /// 200) reads as `null`.
    async fn token_at(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .server
            .http
            .post(self.server.at(path))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "RFC 6749 §5.1"
        );
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn exchange(&self, subject: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", JWT),
        ];
        form.extend_from_slice(extra);
        self.token(&form).await
    }

    async fn introspect(&self, token: &str, bearer: &str) -> Value {
        let (status, body) = self.introspect_status(token, bearer).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn introspect_status(&self, token: &str, bearer: &str) -> (u16, Value) {
        let resp = self
            .server
            .http
            .post(self.server.at("/oauth2/introspect"))
            .bearer_auth(bearer)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn enforcer(&self) -> String {
        let out = run(self.install.client(
            &self.server,
            &[
                "api-token",
                "create",
                "--name",
                "git-gateway",
                "--role",
                "enforcer",
            ],
        ))
        .await
        .ok();
        out.stdout
            .split_whitespace()
            .find(|w| w.starts_with("wdn_"))
            .unwrap()
            .to_owned()
    }

    async fn entries(&self, action: &str) -> Vec<Value> {
        self.server
            .all_entries(&self.install.admin_token())
            .await
            .into_iter()
            .map(|e| e["event"].clone())
            .filter(|e| e["action"] == action)
            .collect()
    }
}

fn unb64url(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&unb64url(part)).unwrap()
}

#[tokio::test]
async fn exchange_introspect_revoke() {
    let env = Env::start(&[]).await;
    let enforcer = env.enforcer().await;
    let svid = env.svid(PLANNER).await;
    // A token for a task needs the task, open, with the agent on it.
    let (status, err) = env
        .exchange(&svid, &[("audience", GIT), ("task", "T-42")])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("access_denied")),
        "{err}"
    );
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("no task"),
        "{err}"
    );
    env.task("T-41", &[CODER]).await;
    let (status, err) = env
        .exchange(&svid, &[("audience", GIT), ("task", "T-41")])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("access_denied")),
        "{err}"
    );
    assert!(
        err["error_description"]
            .as_str()
            .unwrap()
            .contains("not assigned"),
        "{err}"
    );
    env.task("T-42", &[PLANNER]).await;
    let (status, body) = env
        .exchange(
            &svid,
            &[
                ("audience", GIT),
                ("scope", "repo:read repo:write"),
                ("task", "T-42"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["scope"], "repo:read repo:write");
    assert!(body["expires_in"].as_i64().unwrap() <= 300);
    let token = body["access_token"].as_str().unwrap().to_owned();
    // RFC 9068: typ at+jwt and the required claims.
    let header: Value =
        serde_json::from_slice(&unb64url(token.split('.').next().unwrap())).unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let c = claims(&token);
    assert_eq!(c["iss"], env.issuer.as_str());
    assert_eq!(c["sub"], PLANNER);
    assert_eq!(c["client_id"], PLANNER);
    assert_eq!(c["aud"], GIT);
    assert_eq!(c["task"], "T-42");
    assert!(c["jti"].as_str().unwrap().starts_with("tok_"));
    assert!(c.get("act").is_none());

    // Introspection (RFC 7662) by a resource server.
    let info = env.introspect(&token, &enforcer).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], PLANNER);
    assert_eq!(info["scope"], "repo:read repo:write");
    assert_eq!(info["lease_id"], body["lease_id"]);
    // A JWT-SVID is not an access token.
    assert_eq!(
        env.introspect(&svid, &enforcer).await,
        json!({"active": false})
    );

    // The lease is listed.
    let leases = env
        .server
        .get_json(
            &format!(
                "/v1/leases?agent={}",
                PLANNER.replace(':', "%3A").replace('/', "%2F")
            ),
            &env.install.admin_token(),
        )
        .await;
    assert_eq!(leases[0]["lease_id"], body["lease_id"]);
    assert_eq!(leases[0]["state"], "active");

    // Revocation by its holder (RFC 7009) shows in introspection at once.
    let resp = env
        .server
        .http
        .post(env.server.at("/oauth2/revoke"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        env.introspect(&token, &enforcer).await,
        json!({"active": false})
    );
    // Unknown tokens are 200 too (RFC 7009 §2.2); a missing one is invalid_request.
    let resp = env
        .server
        .http
        .post(env.server.at("/oauth2/revoke"))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = env
        .server
        .http
        .post(env.server.at("/oauth2/revoke"))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );

    // A revoked token cannot be exchanged further.
    let helper = env.svid(HELPER).await;
    let (status, err) = env
        .token(&[
            ("grant_type", EXCHANGE),
            ("subject_token", &token),
            ("subject_token_type", JWT),
            ("actor_token", &helper),
            ("actor_token_type", JWT),
        ])
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_grant")),
        "{err}"
    );

    // Every step is in the ledger: decision, issuance, introspection, revocation.
    assert!(!env.entries("oauth.token_issue").await.is_empty());
    let decisions = env.entries("policy.decision").await;
    assert!(
        decisions
            .iter()
            .any(|d| d["fields"]["api"] == "oauth" && d["fields"]["decision"] == "allow"),
        "{decisions:?}"
    );
    assert!(!env.entries("lease.revoked").await.is_empty());
    assert!(!env.entries("oauth.introspect").await.is_empty());
}

#[tokio::test]
async fn every_bad_request_gets_its_oauth_error_and_a_ledger_entry() {
    let env = Env::start(&[]).await;
    let planner = env.svid(PLANNER).await;
    let wrong_aud = env.svid_for(PLANNER, "https://elsewhere.example").await;
    let parts: Vec<&str> = planner.split('.').collect();
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header: Value = serde_json::from_slice(&unb64url(parts[0])).unwrap();
    let none_header = b64(&json!({"alg": "none", "typ": "JWT", "kid": header["kid"]}));
    let alg_none = format!("{none_header}.{}.", parts[1]);
    let hs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT", "kid": header["kid"]})),
        parts[1],
        parts[2]
    );
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64(&json!("x")).repeat(4));
    let mut expired_claims = claims(&planner);
    expired_claims["exp"] = json!(1_000_000_000);
    let expired = format!("{}.{}.{}", parts[0], b64(&expired_claims), parts[2]);

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no grant type",
            vec![("subject_token", &planner)],
            400,
            "invalid_request",
        ),
        (
            "wrong grant",
            vec![("grant_type", "client_credentials")],
            400,
            "unsupported_grant_type",
        ),
        (
            "alg none",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &alg_none),
                ("subject_token_type", JWT),
                ("audience", GIT),
            ],
            400,
            "invalid_request",
        ),
        (
            "algorithm confusion",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &hs256),
                ("subject_token_type", JWT),
                ("audience", GIT),
            ],
            400,
            "invalid_request",
        ),
        (
            "forged signature",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &forged),
                ("subject_token_type", JWT),
                ("audience", GIT),
            ],
            400,
            "invalid_request",
        ),
        (
            "expired (re-signed claims do not verify either)",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &expired),
                ("subject_token_type", JWT),
                ("audience", GIT),
            ],
            400,
            "invalid_request",
        ),
        (
            "wrong audience",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &wrong_aud),
                ("subject_token_type", JWT),
                ("audience", GIT),
            ],
            400,
            "invalid_request",
        ),
        (
            "no subject token type",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("audience", GIT),
            ],
            400,
            "invalid_request",
        ),
        (
            "repeated parameter",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("scope", "repo:read"),
                ("scope", "repo:write"),
                ("audience", GIT),
            ],
            400,
            "invalid_request",
        ),
        (
            "unknown scope",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("scope", "repo:read deploy:prod"),
                ("audience", GIT),
            ],
            400,
            "invalid_scope",
        ),
        (
            "no audience",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
            ],
            400,
            "invalid_target",
        ),
        (
            "resource not absolute",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("resource", "git"),
            ],
            400,
            "invalid_target",
        ),
        (
            "resource with fragment",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("resource", "https://git.example.org/#x"),
            ],
            400,
            "invalid_target",
        ),
        (
            "bad authorization_details",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("audience", GIT),
                ("authorization_details", "{\"type\":\"x\"}"),
            ],
            400,
            "invalid_authorization_details",
        ),
        (
            "policy denies this audience",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("audience", "https://prod.example.org"),
            ],
            403,
            "access_denied",
        ),
        (
            "policy denies this scope",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("audience", GIT),
                ("scope", "repo:admin"),
            ],
            403,
            "access_denied",
        ),
        (
            "unsupported requested type",
            vec![
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("audience", GIT),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:saml2",
                ),
            ],
            400,
            "invalid_request",
        ),
    ];
    let before = env.entries("oauth.token_exchange").await.len();
    for (name, form, status, error) in &cases {
        let (got, body) = env.token(form).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap_or_default()),
            (*status, *error),
            "{name}: {body}"
        );
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{name}"
        );
    }
    // A form is required.
    let resp = env
        .server
        .http
        .post(env.server.at("/oauth2/token"))
        .json(&json!({"grant_type": EXCHANGE}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Each refusal is recorded with its error (the anonymous ones within the failure budget,
    // which this test stays under).
    let refused = env.entries("oauth.token_exchange").await;
    assert!(
        refused.len() - before >= cases.len(),
        "{} refusals recorded for {} cases",
        refused.len() - before,
        cases.len()
    );
    assert!(
        refused
            .iter()
            .any(|e| e["fields"]["error"] == "invalid_scope")
    );
    assert!(refused.iter().all(|e| e["outcome"] == "denied"));
    // Nothing was issued.
    assert!(env.entries("oauth.token_issue").await.is_empty());
}

/// Renames a table of the install's SQLite database under the running server: a real store
/// failure for every statement that reads it, undone by renaming it back.
async fn rename_table(env: &Env, from: &str, to: &str) {
    use sqlx::{ConnectOptions as _, Executor as _};
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(env.install.data_dir.join("warden.db"))
        .busy_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    db.execute(format!("ALTER TABLE {from} RENAME TO {to}").as_str())
        .await
        .unwrap();
}

/// When the store cannot be read, a token check answers "try again" (503
/// `temporarily_unavailable`, RFC 7009 §2.2.1 for revocation): never "your token is bad"
/// (400), "inactive", or — for a revocation — "done" (200) while the token still works.
#[tokio::test]
async fn a_store_failure_is_try_again_not_a_verdict_on_the_token() {
    let env = Env::start(&[]).await;
    let enforcer = env.enforcer().await;
    env.task("T-9", &[PLANNER]).await;
    let svid = env.svid(PLANNER).await;
    let (status, body) = env
        .exchange(
            &svid,
            &[("audience", GIT), ("scope", "repo:read"), ("task", "T-9")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();

    rename_table(&env, "leases", "leases_away").await;
    let (status, err) = env.exchange(&token, &[("audience", GIT)]).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{err}"
    );
    let (status, err) = env.introspect_status(&token, &enforcer).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{err}"
    );
    let (status, err) = env.token_at("/oauth2/revoke", &[("token", &token)]).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{err}"
    );
    // The failed introspection is on record as a failure, not as a denial.
    let introspections = env.entries("oauth.introspect").await;
    let last = introspections.last().unwrap();
    assert_eq!(last["outcome"], "failure", "{last}");

    // The store back: the token was never revoked, and now it can be.
    rename_table(&env, "leases_away", "leases").await;
    assert_eq!(env.introspect(&token, &enforcer).await["active"], true);
    let (status, _) = env.token_at("/oauth2/revoke", &[("token", &token)]).await;
    assert_eq!(status, 200);
    assert_eq!(env.introspect(&token, &enforcer).await["active"], false);
}

/// An enforcer that passes `/v1/authorize` the token an agent showed it gets a decision whose
/// `context.delegation` is that token's chain; the token is checked as introspection checks
/// it, must be the principal's, and is recorded by its `jti` only.
#[tokio::test]
async fn a_presented_token_fills_in_the_delegation_chain() {
    let env = Env::start(&[]).await;
    let enforcer = env.enforcer().await;
    let seed = format!(
        "{}/../../examples/policies/coder",
        env!("CARGO_MANIFEST_DIR")
    );
    run(env.install.client(
        &env.server,
        &[
            "policy",
            "push",
            "coder",
            &format!("{seed}/coder.cedar"),
            &format!("{seed}/coder.cedarschema"),
        ],
    ))
    .await
    .ok();
    env.task("T-5", &[PLANNER, CODER]).await;
    let planner = env.svid(PLANNER).await;
    let (status, parent) = env
        .exchange(
            &planner,
            &[
                ("audience", GIT),
                ("scope", "repo:read repo:write"),
                ("task", "T-5"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{parent}");
    let parent_token = parent["access_token"].as_str().unwrap().to_owned();
    let coder = env.svid(CODER).await;
    let (status, child) = env
        .token(&[
            ("grant_type", EXCHANGE),
            ("subject_token", &parent_token),
            ("subject_token_type", JWT),
            ("actor_token", &coder),
            ("actor_token_type", JWT),
            ("scope", "repo:write"),
        ])
        .await;
    assert_eq!(status, 200, "{child}");
    let child_token = child["access_token"].as_str().unwrap().to_owned();

    let authorize = |principal: &str, token: &str| {
        let body = json!({
            "package": "coder",
            "principal": principal,
            "action": "write",
            "resource": {"type": "Repository", "id": "warden"},
            "token": token,
        });
        let env = &env;
        let enforcer = enforcer.clone();
        async move {
            let resp = env
                .server
                .http
                .post(env.server.at("/v1/authorize"))
                .bearer_auth(enforcer)
                .json(&body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let recorded = |decision: Value| {
        let env = &env;
        async move {
            env.entries("policy.decision")
                .await
                .into_iter()
                .find(|e| e["fields"]["decision_id"] == decision["decision_id"])
                .unwrap()
        }
    };
    // The Coder holds a token on the Planner's behalf: the Planner is before it.
    let (status, decision) = authorize(CODER, &child_token).await;
    assert_eq!(status, 200, "{decision}");
    let entry = recorded(decision).await;
    assert_eq!(
        entry["fields"]["request"]["context"]["delegation"],
        json!([PLANNER]),
        "{entry}"
    );
    assert_eq!(entry["fields"]["token_jti"], claims(&child_token)["jti"]);
    assert!(!entry.to_string().contains(&child_token));
    // The Planner's own token: nobody before it.
    let (status, decision) = authorize(PLANNER, &parent_token).await;
    assert_eq!(status, 200, "{decision}");
    let entry = recorded(decision).await;
    assert_eq!(
        entry["fields"]["request"]["context"]["delegation"],
        json!([])
    );
    // Another agent's token, a malformed one, a JWT-SVID: refused, no decision made.
    let before = env.entries("policy.decision").await.len();
    for (principal, token, why) in [
        (PLANNER, child_token.as_str(), "held by"),
        (CODER, "not.a.token", "token"),
        (CODER, coder.as_str(), "token"),
    ] {
        let (status, err) = authorize(principal, token).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("invalid_token")),
            "{err}"
        );
        assert!(err["message"].as_str().unwrap().contains(why), "{err}");
    }
    // Revoking the Planner's token revokes the Coder's, and the Coder's is refused at once.
    let (status, _) = env
        .token_at("/oauth2/revoke", &[("token", &parent_token)])
        .await;
    assert_eq!(status, 200);
    let (status, err) = authorize(CODER, &child_token).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_token")),
        "{err}"
    );
    assert_eq!(env.entries("policy.decision").await.len(), before);
}

#[tokio::test]
async fn delegation_only_narrows_and_records_every_hop() {
    let env = Env::start(&["--delegation-depth", "2"]).await;
    let enforcer = env.enforcer().await;
    env.task("T-7", &[PLANNER, CODER, HELPER]).await;
    env.task("T-8", &[PLANNER, CODER, HELPER]).await;
    let planner = env.svid(PLANNER).await;
    let (_, parent) = env
        .exchange(
            &planner,
            &[
                ("audience", GIT),
                ("scope", "repo:read repo:write"),
                ("task", "T-7"),
            ],
        )
        .await;
    let parent_token = parent["access_token"].as_str().unwrap().to_owned();
    let coder = env.svid(CODER).await;
    let delegate = |subject: String, actor: String, extra: Vec<(&'static str, &'static str)>| {
        let env = &env;
        async move {
            let mut form = vec![
                ("grant_type", EXCHANGE),
                ("subject_token", subject.as_str()),
                ("subject_token_type", JWT),
                ("actor_token", actor.as_str()),
                ("actor_token_type", JWT),
            ];
            form.extend(extra);
            env.token(&form).await
        }
    };
    // Scope, audience and task may not widen.
    for (extra, error) in [
        (vec![("scope", "repo:read repo:admin")], "invalid_scope"),
        (
            vec![("audience", "https://ci.example.org")],
            "invalid_target",
        ),
        (vec![("task", "T-8")], "access_denied"),
    ] {
        let (status, body) = delegate(parent_token.clone(), coder.clone(), extra).await;
        assert_eq!(body["error"], error, "{body}");
        assert!(status == 400 || status == 403);
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("widening"),
            "{body}"
        );
    }
    // Narrowing works: the Coder holds a repo:write token on the Planner's behalf.
    let (status, child) = delegate(
        parent_token.clone(),
        coder.clone(),
        vec![("scope", "repo:write")],
    )
    .await;
    assert_eq!(status, 200, "{child}");
    let child_token = child["access_token"].as_str().unwrap().to_owned();
    let c = claims(&child_token);
    assert_eq!(c["sub"], PLANNER);
    assert_eq!(c["client_id"], CODER);
    assert_eq!(c["act"], json!({"sub": CODER}));
    assert_eq!(c["scope"], "repo:write");
    assert_eq!(c["task"], "T-7");
    assert!(c["exp"].as_i64() <= claims(&parent_token)["exp"].as_i64());
    // A second hop (the helper, read only) records both actors.
    let helper = env.svid(HELPER).await;
    let (status, grand) = delegate(
        child_token.clone(),
        helper.clone(),
        vec![("scope", "repo:read")],
    )
    .await;
    // repo:read is not in the child's scope (repo:write): widening.
    assert_eq!(
        (status, grand["error"].as_str()),
        (400, Some("invalid_scope")),
        "{grand}"
    );
    let (_, child2) = delegate(parent_token.clone(), coder.clone(), vec![]).await;
    let child2_token = child2["access_token"].as_str().unwrap().to_owned();
    let (status, grand) = delegate(
        child2_token.clone(),
        helper.clone(),
        vec![("scope", "repo:read")],
    )
    .await;
    assert_eq!(status, 200, "{grand}");
    let g = claims(grand["access_token"].as_str().unwrap());
    assert_eq!(g["act"], json!({"sub": HELPER, "act": {"sub": CODER}}));
    assert_eq!(g["sub"], PLANNER);
    // The depth limit (2) stops a third hop.
    let (status, deep) = delegate(
        grand["access_token"].as_str().unwrap().to_owned(),
        coder.clone(),
        vec![],
    )
    .await;
    assert_eq!(
        (status, deep["error"].as_str()),
        (403, Some("access_denied")),
        "{deep}"
    );
    assert!(
        deep["error_description"]
            .as_str()
            .unwrap()
            .contains("depth")
    );

    // Revoking the parent revokes everything delegated from it.
    let grand_token = grand["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        env.introspect(&grand_token, &enforcer).await["active"],
        true
    );
    let out = run(env.install.client(
        &env.server,
        &[
            "lease",
            "revoke",
            parent["lease_id"].as_str().unwrap(),
            "--reason",
            "task done",
        ],
    ))
    .await
    .ok();
    assert!(out.stdout.contains("revoked 4 lease(s)"), "{}", out.stdout);
    for t in [&parent_token, &child_token, &child2_token, &grand_token] {
        assert_eq!(env.introspect(t, &enforcer).await["active"], false);
    }
    // The refused widening attempts are on record.
    let refused = env.entries("oauth.token_exchange").await;
    assert!(
        refused
            .iter()
            .filter(|e| e["fields"]["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("widening")))
            .count()
            >= 3
    );
}

#[tokio::test]
async fn hold_cuts_an_agent_off_and_release_restores_issuance() {
    let env = Env::start(&[]).await;
    let enforcer = env.enforcer().await;
    let planner = env.svid(PLANNER).await;
    let (_, t1) = env
        .exchange(&planner, &[("audience", GIT), ("scope", "repo:read")])
        .await;
    let token = t1["access_token"].as_str().unwrap().to_owned();
    assert_eq!(env.introspect(&token, &enforcer).await["active"], true);

    let out = run(env.install.client(
        &env.server,
        &["hold", "agent", PLANNER, "--reason", "incident 7"],
    ))
    .await
    .ok();
    assert!(out.stdout.contains("1 lease(s) revoked"), "{}", out.stdout);
    // Right after the call returns: the token is dead, the SVID refused, no new issuance, and
    // decisions see the hold.
    assert_eq!(env.introspect(&token, &enforcer).await["active"], false);
    let (status, body) = env.exchange(&planner, &[("audience", GIT)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("on hold")
    );
    let mut cmd = warden();
    cmd.arg("svid")
        .arg("--socket")
        .arg(env.install.data_dir.join("workload.sock"))
        .args(["jwt", "--audience", &env.issuer, "--spiffe-id", PLANNER]);
    assert_ne!(run(cmd).await.code(), Some(0), "no SVID for a held agent");
    let holds = env
        .server
        .get_json("/v1/holds", &env.install.admin_token())
        .await;
    assert_eq!(holds[0]["value"], PLANNER);
    assert_eq!(env.entries("hold.add").await.len(), 1);

    run(env.install.client(
        &env.server,
        &["release", "agent", PLANNER, "--reason", "cleared"],
    ))
    .await
    .ok();
    let planner = env.svid(PLANNER).await;
    let (status, _) = env
        .exchange(&planner, &[("audience", GIT), ("scope", "repo:read")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        env.introspect(&token, &enforcer).await["active"],
        false,
        "revoked stays revoked"
    );

    // A vendor hold covers every agent whose registration names it as owner.
    let coder = env.svid(CODER).await;
    let out = run(env.install.client(
        &env.server,
        &["hold", "vendor", "acme", "--reason", "vendor breach"],
    ))
    .await
    .ok();
    assert!(
        out.stdout.contains(CODER) && out.stdout.contains(HELPER),
        "{}",
        out.stdout
    );
    let (status, body) = env.exchange(&coder, &[("audience", GIT)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}
