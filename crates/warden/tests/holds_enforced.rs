//! Holds and the denylist are Warden's, not the policy author's: under a package that permits
//! everything (no `context.hold` clause anywhere), an agent on hold, an agent whose task or
//! vendor is on hold, a denylisted SPIFFE ID, and a presented token whose delegation chain
//! holds one are denied on every decision path — `/v1/authorize`, AuthZEN (single and batch),
//! OPA's data API, relationship checks and lists — each decision recorded with the reason, and
//! allowed again once the hold or denial is lifted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use common::{Install, Server, run};
use serde_json::{Value, json};

const PLANNER: &str = "spiffe://example.org/agent/planner";
const CODER: &str = "spiffe://example.org/agent/coder";
const CODER_USER: &str = "agent:example.org/agent/coder";
const REPO: &str = "repository:warden";
const GIT: &str = "https://git.example.org";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Permits everything: no rule looks at `input.context.hold`. Named `broker`, it also decides
/// token exchanges, so the tests can get tokens to present.
const OPEN_POLICY: &str = "package open\n\nallow := true\n";

/// Task grants are tuples `repository:…#writer@agent:…`.
const MODEL: &str =
    "model\n  schema 1.1\ntype agent\ntype repository\n  relations\n    define writer: [agent]\n";

struct Env {
    install: Install,
    server: Server,
    admin: String,
    enforcer: String,
    issuer: String,
}

/// What each decision path answered for one agent.
#[derive(Debug, PartialEq)]
struct Answers {
    authorize: bool,
    authzen: bool,
    authzen_batch: bool,
    opa: bool,
    rebac_check: bool,
    rebac_batch_check: bool,
}

impl Answers {
    fn all(allowed: bool) -> Self {
        Answers {
            authorize: allowed,
            authzen: allowed,
            authzen_batch: allowed,
            opa: allowed,
            rebac_check: allowed,
            rebac_batch_check: allowed,
        }
    }
}

/// The decision ids of one round, to find their ledger entries.
struct Round {
    answers: Answers,
    /// `policy.decision` ids (authorize, AuthZEN single and batch, OPA).
    policy: Vec<String>,
    /// `rebac.check` ids (check, batch-check).
    rebac: Vec<String>,
    /// The bodies of the answers, for messages and reasons.
    bodies: Vec<Value>,
}

impl Env {
    async fn start() -> Env {
        let install = Install::new().await;
        let server = install
            .serve_with(&["--oauth-scopes", "repo:read,repo:write"])
            .await;
        let admin = install.admin_token();
        let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
        let uid = common::own_uid();
        for (id, owner) in [(PLANNER, "initech"), (CODER, "acme")] {
            let resp = server
                .http
                .post(server.at("/v1/entries"))
                .bearer_auth(&admin)
                .json(&json!({
                    "spiffe_id": id,
                    "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
                    "owner": owner,
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
        }
        let issuer = server
            .get_public_json("/.well-known/openid-configuration")
            .await["issuer"]
            .as_str()
            .unwrap()
            .to_owned();
        let rego = install.path("open.rego");
        std::fs::write(&rego, OPEN_POLICY).unwrap();
        run(install.client(
            &server,
            &["policy", "push", "broker", rego.to_str().unwrap()],
        ))
        .await
        .ok();
        let fga = install.path("model.fga");
        std::fs::write(&fga, MODEL).unwrap();
        run(install.client(&server, &["rebac", "model", "push", fga.to_str().unwrap()]))
            .await
            .ok();
        let out = run(install.client(
            &server,
            &[
                "api-token",
                "create",
                "--name",
                "gateway",
                "--role",
                "enforcer",
            ],
        ))
        .await
        .ok();
        let enforcer = out
            .stdout
            .split_whitespace()
            .find(|w| w.starts_with("wdn_"))
            .unwrap()
            .to_owned();
        Env {
            install,
            server,
            admin,
            enforcer,
            issuer,
        }
    }

    /// `warden ARGS…` as the admin; must succeed.
    async fn cli(&self, args: &[&str]) {
        run(self.install.client(&self.server, args)).await.ok();
    }

    async fn post(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .server
            .http
            .post(self.server.at(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: {status} {text}")),
        )
    }

    async fn ask(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(&self.enforcer.clone(), path, body).await
    }

    /// Task `id` on the repository, with `agent` on it granted `writer` (a relationship tuple).
    async fn task(&self, id: &str, agent: &str) {
        let (status, body) = self
            .post(
                &self.admin,
                "/v1/tasks",
                &json!({"id": id, "type": "patch_bug", "owner": "alice@example.org",
                        "resources": [REPO], "deadline_s": 3600}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self
            .post(
                &self.admin,
                &format!("/v1/tasks/{id}/agents"),
                &json!({"agent": agent, "role": "worker", "permissions": ["writer"]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// `/v1/authorize` for `principal` writing the repository, presenting `token` if given.
    async fn authorize(&self, principal: &str, token: Option<&str>) -> (u16, Value) {
        let mut body = json!({
            "principal": principal,
            "action": "write",
            "resource": {"type": "repository", "id": "warden"},
        });
        if let Some(t) = token {
            body["token"] = json!(t);
        }
        self.ask("/v1/authorize", &body).await
    }

    /// Asks every decision path whether `agent` may write the repository.
    async fn round(&self, agent: &str) -> Round {
        let user = format!("agent:{}", agent.trim_start_matches("spiffe://"));
        let mut policy = Vec::new();
        let mut rebac = Vec::new();
        let mut bodies = Vec::new();

        let (status, d) = self.authorize(agent, None).await;
        assert_eq!(status, 200, "{d}");
        let authorize = d["allowed"].as_bool().unwrap();
        assert_eq!(d["decision"], if authorize { "allow" } else { "deny" });
        policy.push(d["decision_id"].as_str().unwrap().to_owned());
        bodies.push(d);

        let evaluation = json!({"subject": {"type": "agent", "id": agent},
                                "action": {"name": "write"},
                                "resource": {"type": "repository", "id": "warden"}});
        let (status, d) = self.ask("/access/v1/evaluation", &evaluation).await;
        assert_eq!(status, 200, "{d}");
        let authzen = d["decision"].as_bool().unwrap();
        policy.push(d["context"]["id"].as_str().unwrap().to_owned());
        bodies.push(d);

        let batch = json!({"subject": {"type": "agent", "id": agent},
                           "resource": {"type": "repository", "id": "warden"},
                           "evaluations": [{"action": {"name": "write"}}]});
        let (status, d) = self.ask("/access/v1/evaluations", &batch).await;
        assert_eq!(status, 200, "{d}");
        let item = &d["evaluations"][0];
        let authzen_batch = item["decision"].as_bool().unwrap();
        policy.push(item["context"]["id"].as_str().unwrap().to_owned());
        bodies.push(item.clone());

        let input = json!({"input": {"principal": agent, "action": "write",
                                     "resource": {"type": "repository", "id": "warden"}}});
        let (status, d) = self.ask("/v1/data/open/allow", &input).await;
        let opa = match status {
            200 => {
                assert!(d["result"].is_boolean(), "{d}");
                policy.push(d["decision_id"].as_str().unwrap().to_owned());
                d["result"] == true
            }
            403 => {
                // Refused: no result a client could read either way.
                assert!(d.get("result").is_none(), "{d}");
                policy.push(
                    d["details"]["decision_id"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{d}"))
                        .to_owned(),
                );
                false
            }
            other => panic!("OPA data API: {other} {d}"),
        };
        bodies.push(d);

        let check = json!({"tuple_key": {"user": user, "relation": "writer", "object": REPO}});
        let (status, d) = self.ask("/v1/rebac/check", &check).await;
        assert_eq!(status, 200, "{d}");
        let rebac_check = d["allowed"].as_bool().unwrap();
        rebac.push(d["decision_id"].as_str().unwrap().to_owned());
        bodies.push(d);

        let batch = json!({"checks": [{"tuple_key": {"user": user, "relation": "writer", "object": REPO},
                                       "correlation_id": "c1"}]});
        let (status, d) = self.ask("/v1/rebac/batch-check", &batch).await;
        assert_eq!(status, 200, "{d}");
        let item = &d["result"]["c1"];
        let rebac_batch_check = item["allowed"].as_bool().unwrap_or_else(|| panic!("{d}"));
        rebac.push(item["decision_id"].as_str().unwrap().to_owned());
        bodies.push(item.clone());

        Round {
            answers: Answers {
                authorize,
                authzen,
                authzen_batch,
                opa,
                rebac_check,
                rebac_batch_check,
            },
            policy,
            rebac,
            bodies,
        }
    }

    /// Every ledger event (`event` of each entry).
    async fn events(&self) -> Vec<Value> {
        self.server
            .all_entries(&self.admin)
            .await
            .into_iter()
            .map(|e| e["event"].clone())
            .collect()
    }

    /// The ledger entry recording decision `id`.
    async fn decision(&self, id: &str) -> Value {
        self.events()
            .await
            .into_iter()
            .find(|e| e["fields"]["decision_id"] == id)
            .unwrap_or_else(|| panic!("decision {id} is not in the ledger"))
    }

    /// Checks every decision of `round` is recorded as a deny whose reason is `reason` and
    /// whose `barred` record has `code` and names `agent` at `position`.
    async fn recorded_barred(
        &self,
        round: &Round,
        reason: &str,
        code: &str,
        agent: &str,
        position: &str,
    ) {
        let events = self.events().await;
        let find = |id: &str| {
            events
                .iter()
                .find(|e| e["fields"]["decision_id"] == id)
                .unwrap_or_else(|| panic!("decision {id} is not in the ledger"))
                .clone()
        };
        for id in &round.policy {
            let e = find(id);
            assert_eq!(e["action"], "policy.decision", "{e}");
            assert_eq!(e["outcome"], "denied", "{e}");
            assert_eq!(e["fields"]["decision"], "deny", "{e}");
            assert_eq!(e["fields"]["reason"], reason, "{e}");
            assert_eq!(e["fields"]["barred"]["code"], code, "{e}");
            assert_eq!(e["fields"]["barred"]["agent"], agent, "{e}");
            assert_eq!(e["fields"]["barred"]["position"], position, "{e}");
            assert_eq!(e["fields"]["determining"], json!([]), "{e}");
            // No policy evaluated it: nothing for `simulate` to replay.
            assert!(e["fields"].get("request").is_none(), "{e}");
        }
        for id in &round.rebac {
            let e = find(id);
            assert_eq!(e["action"], "rebac.check", "{e}");
            assert_eq!(e["fields"]["allowed"], false, "{e}");
            assert_eq!(e["fields"]["reason"], reason, "{e}");
            assert_eq!(e["fields"]["barred"]["code"], code, "{e}");
        }
    }

    /// An access token for the repository held by the Coder on the Planner's behalf (the
    /// Planner is before the Coder in its delegation chain), for task `task`.
    async fn delegated_token(&self, task: &str) -> String {
        let planner = self.svid(PLANNER).await;
        let (status, parent) = self
            .exchange(&[
                ("grant_type", EXCHANGE),
                ("subject_token", &planner),
                ("subject_token_type", JWT),
                ("audience", GIT),
                ("scope", "repo:write"),
                ("task", task),
            ])
            .await;
        assert_eq!(status, 200, "{parent}");
        let coder = self.svid(CODER).await;
        let (status, child) = self
            .exchange(&[
                ("grant_type", EXCHANGE),
                ("subject_token", parent["access_token"].as_str().unwrap()),
                ("subject_token_type", JWT),
                ("actor_token", &coder),
                ("actor_token_type", JWT),
            ])
            .await;
        assert_eq!(status, 200, "{child}");
        child["access_token"].as_str().unwrap().to_owned()
    }

    async fn exchange(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .server
            .http
            .post(self.server.at("/oauth2/token"))
            .form(form)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// A JWT-SVID of `id` for this server, from the Workload API.
    async fn svid(&self, id: &str) -> String {
        let mut cmd = common::warden();
        cmd.arg("svid")
            .arg("--socket")
            .arg(self.install.data_dir.join("workload.sock"))
            .args(["jwt", "--audience", &self.issuer, "--spiffe-id", id]);
        run(cmd).await.ok().stdout.trim().to_owned()
    }
}

#[tokio::test]
async fn a_held_agent_is_denied_on_every_path_whatever_the_policy_says() {
    let env = Env::start().await;
    env.task("T-1", CODER).await;
    assert_eq!(env.round(CODER).await.answers, Answers::all(true));

    env.cli(&["hold", "agent", CODER, "--reason", "incident 9"])
        .await;
    let round = env.round(CODER).await;
    assert_eq!(round.answers, Answers::all(false), "{:#?}", round.bodies);
    let reason = format!("agent `{CODER}` is on hold");
    // Each answer says why.
    assert_eq!(round.bodies[0]["reason"], reason.as_str());
    assert_eq!(round.bodies[0]["barred"]["code"], "agent_on_hold");
    assert_eq!(round.bodies[0]["determining_policies"], json!([]));
    assert_eq!(
        round.bodies[1]["context"]["reason_admin"]["reason"],
        reason.as_str()
    );
    assert_eq!(round.bodies[3]["code"], "agent_on_hold");
    assert!(
        round.bodies[3]["message"]
            .as_str()
            .unwrap()
            .starts_with(&reason),
        "{}",
        round.bodies[3]
    );
    assert_eq!(round.bodies[4]["reason"], reason.as_str());
    env.recorded_barred(&round, &reason, "agent_on_hold", CODER, "principal")
        .await;

    // Lists leave the held agent out.
    let (status, objects) = env
        .ask(
            "/v1/rebac/list-objects",
            &json!({"type": "repository", "relation": "writer", "user": CODER_USER}),
        )
        .await;
    assert_eq!(status, 200, "{objects}");
    assert_eq!(objects["objects"], json!([]), "{objects}");
    let (status, users) = env
        .ask(
            "/v1/rebac/list-users",
            &json!({"object": {"type": "repository", "id": "warden"}, "relation": "writer",
                    "user_filters": [{"type": "agent"}]}),
        )
        .await;
    assert_eq!(status, 200, "{users}");
    assert_eq!(users["users"], json!([]), "{users}");

    // The hold is the Coder's alone: another agent is still decided by the policy.
    let (_, d) = env.authorize(PLANNER, None).await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert!(d.get("reason").is_none(), "{d}");

    env.cli(&["release", "agent", CODER, "--reason", "cleared"])
        .await;
    let round = env.round(CODER).await;
    assert_eq!(round.answers, Answers::all(true), "{:#?}", round.bodies);
    let allowed = env.decision(&round.policy[0]).await;
    assert!(allowed["fields"].get("reason").is_none(), "{allowed}");
    let (_, objects) = env
        .ask(
            "/v1/rebac/list-objects",
            &json!({"type": "repository", "relation": "writer", "user": CODER_USER}),
        )
        .await;
    assert_eq!(objects["objects"], json!([REPO]), "{objects}");
}

#[tokio::test]
async fn a_denylisted_spiffe_id_is_denied_on_every_path() {
    let env = Env::start().await;
    env.task("T-1", CODER).await;
    assert_eq!(env.round(CODER).await.answers, Answers::all(true));

    env.cli(&["deny", "add", "spiffe-id", CODER, "--reason", "key leaked"])
        .await;
    let round = env.round(CODER).await;
    assert_eq!(round.answers, Answers::all(false), "{:#?}", round.bodies);
    let reason = format!("identity `{CODER}` is on the denylist");
    assert_eq!(round.bodies[0]["barred"]["code"], "identity_denied");
    assert_eq!(round.bodies[3]["code"], "identity_denied");
    env.recorded_barred(&round, &reason, "identity_denied", CODER, "principal")
        .await;

    env.cli(&["deny", "remove", "spiffe-id", CODER]).await;
    let round = env.round(CODER).await;
    assert_eq!(round.answers, Answers::all(true), "{:#?}", round.bodies);
}

#[tokio::test]
async fn an_agent_whose_task_or_vendor_is_held_is_denied() {
    let env = Env::start().await;
    env.task("T-1", CODER).await;

    env.cli(&["hold", "task", "T-1", "--reason", "scope creep"])
        .await;
    let round = env.round(CODER).await;
    assert_eq!(round.answers, Answers::all(false), "{:#?}", round.bodies);
    env.recorded_barred(
        &round,
        "task `T-1` is on hold",
        "task_on_hold",
        CODER,
        "principal",
    )
    .await;
    env.cli(&["release", "task", "T-1", "--reason", "cleared"])
        .await;
    assert_eq!(env.round(CODER).await.answers, Answers::all(true));

    // The Coder's vendor: every agent it registered is held.
    env.cli(&["hold", "vendor", "acme", "--reason", "vendor breach"])
        .await;
    let round = env.round(CODER).await;
    assert_eq!(round.answers, Answers::all(false), "{:#?}", round.bodies);
    assert_eq!(round.bodies[0]["barred"]["code"], "agent_on_hold");
    let (_, d) = env.authorize(PLANNER, None).await;
    assert_eq!(d["decision"], "allow", "another vendor's agent: {d}");
    env.cli(&["release", "vendor", "acme", "--reason", "cleared"])
        .await;
    assert_eq!(env.round(CODER).await.answers, Answers::all(true));
}

#[tokio::test]
async fn a_token_whose_chain_holds_a_denied_or_held_agent_is_denied() {
    let env = Env::start().await;
    env.task("T-5", CODER).await;
    let (status, body) = env
        .post(
            &env.admin,
            "/v1/tasks/T-5/agents",
            &json!({"agent": PLANNER, "role": "planner"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = env.delegated_token("T-5").await;
    let (status, d) = env.authorize(CODER, Some(&token)).await;
    assert_eq!(
        (status, d["decision"].as_str()),
        (200, Some("allow")),
        "{d}"
    );

    // The Planner, before the Coder in the token's chain, denied: the Coder presenting the
    // token is denied, and the entry says who in the chain.
    env.cli(&[
        "deny",
        "add",
        "spiffe-id",
        PLANNER,
        "--reason",
        "compromised",
    ])
    .await;
    let (status, d) = env.authorize(CODER, Some(&token)).await;
    assert_eq!((status, d["decision"].as_str()), (200, Some("deny")), "{d}");
    let reason = format!("identity `{PLANNER}` (in the delegation chain) is on the denylist");
    assert_eq!(d["reason"], reason.as_str(), "{d}");
    let e = env.decision(d["decision_id"].as_str().unwrap()).await;
    assert_eq!(e["fields"]["decision"], "deny", "{e}");
    assert_eq!(e["fields"]["reason"], reason.as_str(), "{e}");
    assert_eq!(e["fields"]["barred"]["agent"], PLANNER, "{e}");
    assert_eq!(e["fields"]["barred"]["position"], "delegation", "{e}");
    assert_eq!(e["fields"]["delegation"], json!([PLANNER]), "{e}");
    assert!(
        e["fields"]["token_jti"]
            .as_str()
            .unwrap()
            .starts_with("tok_"),
        "{e}"
    );
    assert!(!e.to_string().contains(&token));
    env.cli(&["deny", "remove", "spiffe-id", PLANNER]).await;
    let (_, d) = env.authorize(CODER, Some(&token)).await;
    assert_eq!(d["decision"], "allow", "{d}");

    // The Planner on hold: the same, as a hold.
    env.cli(&["hold", "agent", PLANNER, "--reason", "incident 10"])
        .await;
    let (status, d) = env.authorize(CODER, Some(&token)).await;
    assert_eq!((status, d["decision"].as_str()), (200, Some("deny")), "{d}");
    let reason = format!("agent `{PLANNER}` (in the delegation chain) is on hold");
    assert_eq!(d["reason"], reason.as_str(), "{d}");
    let e = env.decision(d["decision_id"].as_str().unwrap()).await;
    assert_eq!(e["fields"]["barred"]["code"], "agent_on_hold", "{e}");
    assert_eq!(e["fields"]["barred"]["position"], "delegation", "{e}");
    env.cli(&["release", "agent", PLANNER, "--reason", "cleared"])
        .await;
    // The hold revoked the token (and stays revoked); a new one is allowed.
    let (status, err) = env.authorize(CODER, Some(&token)).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_token")),
        "{err}"
    );
    let token = env.delegated_token("T-5").await;
    let (_, d) = env.authorize(CODER, Some(&token)).await;
    assert_eq!(d["decision"], "allow", "{d}");
}
