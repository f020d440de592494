//! Tasks and their grants end to end against the real binary (SQLite): `warden task …`,
//! assignments as relationship tuples, the open task and the risk score in every decision's
//! context, ending a task (its tuples, leases and tokens go), deadlines (also across a
//! restart), stable error codes, and agents that create tasks under policy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Install, Out, Server, expect_error, run, warden};
use serde_json::{Value, json};

const PLANNER: &str = "spiffe://example.org/agent/planner";
const CODER: &str = "spiffe://example.org/agent/coder";
const REVIEWER: &str = "spiffe://example.org/agent/reviewer";
const CODER_USER: &str = "agent:example.org/agent/coder";
const REVIEWER_USER: &str = "agent:example.org/agent/reviewer";
const REPO: &str = "repository:warden";
const GIT: &str = "https://git.example.org";
/// The repository the example broker policy lets the Planner open bug-fix tasks on.
const BUGFIX_REPO: &str = "repository:bugfix-demo";

/// Grants are tuples `repository:…#writer@agent:…`: the model allows agents directly.
const MODEL: &str = "model\n  schema 1.1\ntype agent\ntype repository\n  relations\n    define writer: [agent]\n    define reader: [agent] or writer\n";

/// Writing needs the open `patch_bug` task, the `writer` relation (the task's grant) and a
/// risk score below 0.5.
const POLICY: &str = r#"
@id("write-during-patch-bug")
permit (principal, action == Action::"write", resource is Repository)
when {
  context has task && context.task.type == "patch_bug" &&
  context has relations && context.relations.contains("writer") &&
  context.risk_score.lessThan(decimal("0.5"))
};
"#;

const SCHEMA: &str = r#"
entity Agent;
entity Repository;

type WardenContext = {
  agent: { kind: String, owner: String, attributes: {} },
  task?: { id: String, "type": String, attributes: {} },
  risk_score: decimal,
  hold: Bool,
  delegation: Set<String>,
  time: Long,
  request: {},
  relations?: Set<String>,
};

action read, write appliesTo {
  principal: [Agent],
  resource: [Repository],
  context: WardenContext,
};
"#;

fn broker_example(name: &str) -> String {
    format!(
        "{}/../../examples/broker/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

struct Env {
    install: Install,
    server: Server,
    admin: String,
    issuer: String,
}

/// `warden serve` arguments: token exchange needs the scopes it may grant.
const SERVE_ARGS: &[&str] = &["--oauth-scopes", "repo:read,repo:write"];

impl Env {
    /// A server with the three agents registered (all "this user running the warden binary",
    /// told apart with `--spiffe-id`/`--as`), the broker policy, and — with `model` — the
    /// relationship model and the task-aware `repo` package.
    async fn start(model: bool) -> Env {
        let install = Install::new().await;
        let server = install.serve_with(SERVE_ARGS).await;
        let admin = install.admin_token();
        let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
        let uid = common::own_uid();
        for id in [PLANNER, CODER, REVIEWER] {
            let resp = server
                .http
                .post(server.at("/v1/entries"))
                .bearer_auth(&admin)
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
        let issuer = server
            .get_public_json("/.well-known/openid-configuration")
            .await["issuer"]
            .as_str()
            .unwrap()
            .to_owned();
        let env = Env {
            install,
            server,
            admin,
            issuer,
        };
        env.cli(&[
            "policy",
            "push",
            "broker",
            &broker_example("broker.cedar"),
            &broker_example("broker.cedarschema"),
        ])
        .await
        .ok();
        if model {
            let fga = env.install.path("model.fga");
            std::fs::write(&fga, MODEL).unwrap();
            let out = env
                .cli(&["rebac", "model", "push", fga.to_str().unwrap()])
                .await
                .ok();
            assert!(out.stdout.contains("in force"), "{out:#?}");
            let (cedar, schema) = (
                env.install.path("repo.cedar"),
                env.install.path("repo.cedarschema"),
            );
            std::fs::write(&cedar, POLICY).unwrap();
            std::fs::write(&schema, SCHEMA).unwrap();
            env.cli(&[
                "policy",
                "push",
                "repo",
                cedar.to_str().unwrap(),
                schema.to_str().unwrap(),
            ])
            .await
            .ok();
        }
        env
    }

    /// `warden ARGS… --server URL --token-file ADMIN`.
    async fn cli(&self, args: &[&str]) -> Out {
        run(self.install.client(&self.server, args)).await
    }

    /// `warden rebac check USER RELATION OBJECT`: true on exit 0, false on exit 1.
    async fn check(&self, user: &str, relation: &str, object: &str) -> bool {
        let out = self.cli(&["rebac", "check", user, relation, object]).await;
        match out.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("rebac check failed: {out:#?}"),
        }
    }

    async fn post(&self, path: &str, bearer: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = self.server.http.post(self.server.at(path)).json(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send().await.unwrap()
    }

    async fn ok(&self, path: &str, bearer: &str, body: &Value, status: u16) -> Value {
        let resp = self.post(path, Some(bearer), body).await;
        let got = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "POST {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates task `id` (`patch_bug` on `repository:warden`, `deadline_s`) over the API.
    async fn task(&self, id: &str, deadline_s: i64) -> Value {
        self.ok(
            "/v1/tasks",
            &self.admin,
            &json!({"id": id, "type": "patch_bug", "owner": "alice@example.org",
                    "resources": [REPO, "repository:docs"], "deadline_s": deadline_s}),
            201,
        )
        .await
    }

    async fn assign(&self, task: &str, agent: &str, permissions: &[&str]) -> Value {
        self.ok(
            &format!("/v1/tasks/{task}/agents"),
            &self.admin,
            &json!({"agent": agent, "role": "worker", "permissions": permissions}),
            200,
        )
        .await
    }

    async fn show(&self, task: &str) -> Value {
        let out = self
            .cli(&["task", "show", task, "--output", "json"])
            .await
            .ok();
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// A JWT-SVID of `id` for this server, from the Workload API.
    async fn svid(&self, id: &str) -> String {
        let mut cmd = warden();
        cmd.arg("svid")
            .arg("--socket")
            .arg(self.install.data_dir.join("workload.sock"))
            .args(["jwt", "--audience", &self.issuer, "--spiffe-id", id]);
        run(cmd).await.ok().stdout.trim().to_owned()
    }

    /// Every ledger event with this action.
    async fn events(&self, action: &str) -> Vec<Value> {
        self.server
            .all_entries(&self.admin)
            .await
            .into_iter()
            .map(|e| e["event"].clone())
            .filter(|e| e["action"] == action)
            .collect()
    }

    /// `POST /v1/authorize` on package `repo`: `principal` writes `Repository::"warden"`.
    async fn authorize_write(&self, enforcer: &str, principal: &str) -> Value {
        self.ok(
            "/v1/authorize",
            enforcer,
            &json!({"package": "repo", "principal": principal, "action": "write",
                    "resource": {"type": "Repository", "id": "warden"}}),
            200,
        )
        .await
    }

    /// The Planner exchanges its JWT-SVID for a git token with `scope` for `task`: the
    /// status and the body.
    async fn exchange(&self, scope: &str, task: &str) -> (u16, Value) {
        let svid = self.svid(PLANNER).await;
        let resp = self
            .server
            .http
            .post(self.server.at("/oauth2/token"))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", svid.as_str()),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("audience", GIT),
                ("scope", scope),
                ("task", task),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn token_secret(&self, name: &str, role: &str) -> String {
        common::create_token_secret(&self.server, &self.admin, name, role).await
    }
}

/// Polls `f` every 100 ms until it yields a value or `deadline` passes.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_created_assigned_shown_listed_and_completed_with_the_cli() {
    let env = Env::start(true).await;

    let out = env
        .cli(&[
            "task",
            "create",
            "--type",
            "patch_bug",
            "--owner",
            "alice@example.org",
            "--resource",
            REPO,
            "--resource",
            "repository:docs",
            "--deadline",
            "2h",
            "--id",
            "BUG-1",
            "--attribute",
            "ticket=BUG-1",
            "--attribute",
            "severity=2",
        ])
        .await
        .ok();
    assert!(
        out.stdout
            .starts_with("created task BUG-1 (patch_bug), open until "),
        "{out:#?}"
    );
    // Without --id a fresh id; `--output json` for scripts.
    let out = env
        .cli(&[
            "task",
            "create",
            "--type",
            "triage",
            "--owner",
            "bob@example.org",
            "--resource",
            "issue:42",
            "--deadline",
            "10m",
            "--output",
            "json",
        ])
        .await
        .ok();
    let other: Value = serde_json::from_str(&out.stdout).unwrap();
    let other_id = other["id"].as_str().unwrap().to_owned();
    assert!(other_id.starts_with("task_"), "{other:#}");
    assert_eq!(other["state"], "open");
    assert_eq!(other["created_by"], "token:bootstrap");
    let left = other["deadline_unix_ms"].as_i64().unwrap() - now_ms();
    assert!((590_000..=600_000).contains(&left), "{left}");

    // Assign: the Coder writes, the Reviewer reads (on one resource only).
    let out = env
        .cli(&[
            "task",
            "assign",
            "BUG-1",
            "--agent",
            CODER,
            "--role",
            "coder",
            "--permission",
            "writer",
        ])
        .await
        .ok();
    assert!(
        out.stdout.starts_with(&format!(
            "assigned {CODER} to task BUG-1 as coder; 2 grant(s)"
        )),
        "{out:#?}"
    );
    let out = env
        .cli(&[
            "task",
            "assign",
            "BUG-1",
            "--agent",
            REVIEWER,
            "--role",
            "reviewer",
            "--permission",
            "reader",
            "--resource",
            REPO,
            "--ttl",
            "30m",
            "--output",
            "json",
        ])
        .await
        .ok();
    let assigned: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(assigned["new"], true);
    assert_eq!(assigned["grants"].as_array().unwrap().len(), 1);
    assert_eq!(assigned["grants"][0]["resource"], REPO);
    assert_eq!(assigned["grants"][0]["permission"], "reader");
    let ttl_left = assigned["grants"][0]["expires_unix_ms"].as_i64().unwrap() - now_ms();
    assert!((1_790_000..=1_800_000).contains(&ttl_left), "{ttl_left}");

    // The grants are relationship tuples: every path that checks relations sees them.
    assert!(env.check(CODER_USER, "writer", REPO).await);
    assert!(env.check(CODER_USER, "writer", "repository:docs").await);
    assert!(env.check(CODER_USER, "reader", REPO).await);
    assert!(env.check(REVIEWER_USER, "reader", REPO).await);
    assert!(!env.check(REVIEWER_USER, "writer", REPO).await);
    assert!(!env.check(REVIEWER_USER, "reader", "repository:docs").await);

    // show, human and JSON.
    let out = env.cli(&["task", "show", "BUG-1"]).await.ok();
    for want in [
        "ID          BUG-1\n",
        "TYPE        patch_bug\n",
        "STATE       open\n",
        "OWNER       alice@example.org\n",
        "RESOURCES   repository:warden,repository:docs\n",
        "\"ticket\":\"BUG-1\"",
        "ENDED       -\n",
        "AGENT ",
        "GRANT_ID ",
    ] {
        assert!(out.stdout.contains(want), "{want:?} not in\n{}", out.stdout);
    }
    let row = |start: &str| -> Vec<String> {
        out.stdout
            .lines()
            .filter(|l| l.starts_with(start))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let agents = row("spiffe://");
    assert_eq!(agents.len(), 2, "{out:#?}");
    assert!(
        agents[0].starts_with(&format!("{CODER} coder ")),
        "{agents:?}"
    );
    assert!(
        agents[1].starts_with(&format!("{REVIEWER} reviewer ")),
        "{agents:?}"
    );
    let grants = row("grant_");
    assert_eq!(grants.len(), 3, "{out:#?}");
    assert!(
        grants.iter().all(|g| g.ends_with(" assignment")),
        "{grants:?}"
    );
    assert!(
        grants
            .iter()
            .any(|g| g.contains(&format!("active {CODER} writer repository:docs "))),
        "{grants:?}"
    );
    // Times are RFC 3339, never raw milliseconds.
    assert!(!out.stdout.contains("_unix_ms"), "{out:#?}");
    assert!(out.stdout.contains("DEADLINE    20"), "{out:#?}");
    let t = env.show("BUG-1").await;
    assert_eq!(t["type"], "patch_bug");
    assert_eq!(t["owner"], "alice@example.org");
    assert_eq!(t["resources"], json!([REPO, "repository:docs"]));
    assert_eq!(t["attributes"], json!({"ticket": "BUG-1", "severity": 2}));
    assert_eq!(t["agents"].as_array().unwrap().len(), 2);
    assert!(
        t["grants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["state"] == "active" && g["source"] == "assignment"),
        "{t:#}"
    );

    // list: all, by state, by agent; human and JSON.
    let out = env.cli(&["task", "list"]).await.ok();
    assert!(out.stdout.starts_with("ID "), "{out:#?}");
    assert!(out.stdout.contains("BUG-1 "), "{out:#?}");
    assert!(out.stdout.contains(&other_id), "{out:#?}");
    let ids = |out: &Out| -> Vec<String> {
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let out = env.cli(&["task", "list", "--output", "json"]).await.ok();
    assert_eq!(ids(&out), vec![other_id.clone(), "BUG-1".to_owned()]);
    let out = env
        .cli(&["task", "list", "--agent", CODER, "--output", "json"])
        .await
        .ok();
    assert_eq!(ids(&out), vec!["BUG-1".to_owned()]);

    // Complete: the grants end and their tuples are deleted.
    let out = env
        .cli(&["task", "complete", "BUG-1", "--reason", "patch merged"])
        .await
        .ok();
    assert!(
        out.stdout
            .starts_with("task BUG-1 completed: 3 grant(s) ended"),
        "{out:#?}"
    );
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    assert!(!env.check(CODER_USER, "reader", REPO).await);
    assert!(!env.check(REVIEWER_USER, "reader", REPO).await);
    let t = env.show("BUG-1").await;
    assert_eq!(t["state"], "completed");
    assert_eq!(t["end_reason"], "patch merged");
    assert!(t["ended_unix_ms"].is_i64());
    assert!(
        t["grants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["state"] == "ended"),
        "{t:#}"
    );
    let out = env
        .cli(&["task", "list", "--state", "completed", "--output", "json"])
        .await
        .ok();
    assert_eq!(ids(&out), vec!["BUG-1".to_owned()]);
    let out = env
        .cli(&["task", "list", "--state", "open", "--output", "json"])
        .await
        .ok();
    assert_eq!(ids(&out), vec![other_id.clone()]);
    // fail and cancel end tasks too.
    let out = env
        .cli(&["task", "cancel", &other_id, "--reason", "duplicate"])
        .await
        .ok();
    assert!(
        out.stdout
            .starts_with(&format!("task {other_id} cancelled: 0 grant(s) ended")),
        "{out:#?}"
    );
    // An empty list says so (and is `[]` in JSON).
    let out = env.cli(&["task", "list", "--state", "failed"]).await.ok();
    assert_eq!(out.stdout, "no tasks\n", "{out:#?}");
    let out = env
        .cli(&["task", "list", "--state", "failed", "--output", "json"])
        .await
        .ok();
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        json!([])
    );

    // The ledger has every step.
    let created = env.events("task.create").await;
    assert!(
        created
            .iter()
            .any(|e| e["fields"]["task"] == "BUG-1" && e["fields"]["type"] == "patch_bug"),
        "{created:#?}"
    );
    let assigns = env.events("task.assign").await;
    assert_eq!(assigns.len(), 2, "{assigns:#?}");
    let issued = env.events("grant.issue").await;
    assert!(
        issued
            .iter()
            .any(|e| e["fields"]["agent"] == CODER
                && e["fields"]["permissions"] == json!(["writer"])),
        "{issued:#?}"
    );
    let ends = env.events("task.end").await;
    assert!(
        ends.iter().any(|e| e["fields"]["task"] == "BUG-1"
            && e["fields"]["outcome"] == "completed"
            && e["fields"]["reason"] == "patch merged"
            && e["actor"] == "token:bootstrap"),
        "{ends:#?}"
    );
    assert!(
        ends.iter()
            .any(|e| e["fields"]["task"] == other_id && e["fields"]["outcome"] == "cancelled"),
        "{ends:#?}"
    );
    let grant_ends = env.events("grant.end").await;
    assert!(
        grant_ends.iter().any(|e| e["fields"]["task"] == "BUG-1"
            && e["fields"]["grants"].as_array().unwrap().len() == 3),
        "{grant_ends:#?}"
    );
    // The tuples were deleted (not left to lapse), recorded as a relationship write.
    let writes = env.events("rebac.write").await;
    assert!(
        writes.iter().any(|e| e["actor"] == "system:tasks"
            && e["fields"]["deletes"].to_string().contains(CODER_USER)),
        "{writes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_see_the_open_task_and_the_risk_score() {
    let env = Env::start(true).await;
    let enforcer = env.token_secret("gateway", "enforcer").await;

    // No task yet: no grant, no task in context.
    let d = env.authorize_write(&enforcer, CODER).await;
    assert_eq!(d["decision"], "deny", "{d:#}");

    env.task("BUG-2", 3600).await;
    env.assign("BUG-2", CODER, &["writer"]).await;
    let allow = env.authorize_write(&enforcer, CODER).await;
    assert_eq!(allow["decision"], "allow", "{allow:#}");
    assert_eq!(
        allow["determining_policies"],
        json!(["write-during-patch-bug"])
    );
    // The decision saw the task (and its relations) and recorded them.
    let decisions = env.events("policy.decision").await;
    let recorded = decisions
        .iter()
        .find(|e| e["fields"]["decision_id"] == allow["decision_id"])
        .unwrap();
    let context = &recorded["fields"]["request"]["context"];
    assert_eq!(
        context["task"],
        json!({"id": "BUG-2", "type": "patch_bug", "attributes": {}}),
        "{recorded:#}"
    );
    assert_eq!(context["relations"], json!(["reader", "writer"]));
    // Another agent without the grant: denied.
    let d = env.authorize_write(&enforcer, REVIEWER).await;
    assert_eq!(d["decision"], "deny", "{d:#}");

    // A high risk score denies at once; a lower one allows again.
    let out = env
        .cli(&["risk", "set", CODER, "0.7", "--reason", "odd pushes"])
        .await
        .ok();
    assert!(
        out.stdout
            .contains(&format!("risk score of {CODER} is now 0.700")),
        "{out:#?}"
    );
    let d = env.authorize_write(&enforcer, CODER).await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    let out = env.cli(&["risk", "list"]).await.ok();
    assert!(out.stdout.contains(CODER), "{out:#?}");
    assert!(out.stdout.contains("0.700"), "{out:#?}");
    assert!(out.stdout.contains("odd pushes"), "{out:#?}");
    let out = env.cli(&["risk", "list", "--output", "json"]).await.ok();
    let scores: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(scores[0]["agent"], CODER);
    assert_eq!(scores[0]["score"], 0.7);
    env.cli(&["risk", "set", CODER, "0.2", "--reason", "reviewed"])
        .await
        .ok();
    let d = env.authorize_write(&enforcer, CODER).await;
    assert_eq!(d["decision"], "allow", "{d:#}");
    // Out of range: refused before it is sent (bad input: exit 2).
    let out = env
        .cli(&["risk", "set", CODER, "1.5", "--reason", "x"])
        .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("between 0.0 and 1.0"), "{out:#?}");
    let risk = env.events("risk.set").await;
    assert_eq!(risk.len(), 2, "{risk:#?}");
    assert_eq!(risk[0]["fields"]["score_milli"], 700);

    // The task completes: the grant and the task are gone from the context.
    env.cli(&["task", "complete", "BUG-2", "--reason", "done"])
        .await
        .ok();
    let d = env.authorize_write(&enforcer, CODER).await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    let decisions = env.events("policy.decision").await;
    let recorded = decisions
        .iter()
        .find(|e| e["fields"]["decision_id"] == d["decision_id"])
        .unwrap();
    let context = &recorded["fields"]["request"]["context"];
    assert!(
        context.get("task").is_none_or(Value::is_null),
        "{context:#}"
    );
    assert!(
        context
            .get("relations")
            .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty)),
        "{context:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_task_revokes_its_tokens_and_records_it() {
    let env = Env::start(true).await;
    let enforcer = env.token_secret("gateway", "enforcer").await;
    env.task("BUG-3", 3600).await;
    env.assign("BUG-3", PLANNER, &["writer"]).await;

    // A token for the task (the broker policy lets the Planner read and write git).
    let (status, body) = env.exchange("repo:read", "BUG-3").await;
    assert_eq!(status, 200, "{body:#}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let lease = body["lease_id"].as_str().unwrap().to_owned();
    let introspect = || async {
        let resp = env
            .server
            .http
            .post(env.server.at("/oauth2/introspect"))
            .bearer_auth(&enforcer)
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        resp.json::<Value>().await.unwrap()["active"].clone()
    };
    assert_eq!(introspect().await, true);

    let out = env
        .cli(&["task", "fail", "BUG-3", "--reason", "tests broke"])
        .await
        .ok();
    assert!(out.stdout.starts_with("task BUG-3 failed"), "{out:#?}");
    // The token is dead at once; its lease is revoked; the tuple is gone.
    assert_eq!(introspect().await, false);
    let leases = env
        .server
        .get_json("/v1/leases?task=BUG-3", &env.admin)
        .await;
    assert_eq!(leases[0]["lease_id"], lease.as_str());
    assert_eq!(leases[0]["state"], "revoked", "{leases:#}");
    assert!(
        !env.check("agent:example.org/agent/planner", "writer", REPO)
            .await
    );
    // Recorded: the end, the grants that ended, the revocation by task.
    let ends = env.events("task.end").await;
    assert!(
        ends.iter()
            .any(|e| e["fields"]["task"] == "BUG-3" && e["fields"]["outcome"] == "failed"),
        "{ends:#?}"
    );
    let grant_ends = env.events("grant.end").await;
    assert!(
        grant_ends
            .iter()
            .any(|e| e["fields"]["task"] == "BUG-3" && e["fields"]["reason"] == "task failed"),
        "{grant_ends:#?}"
    );
    let revoked = env.events("lease.revoked").await;
    assert!(
        revoked
            .iter()
            .any(|e| e.to_string().contains(lease.as_str())),
        "{revoked:#?}"
    );
    // No new token for the ended task.
    let (status, body) = env.exchange("repo:read", "BUG-3").await;
    assert_eq!(status, 403, "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_expires_at_its_deadline_by_itself() {
    let env = Env::start(true).await;
    let out = env
        .cli(&[
            "task",
            "create",
            "--type",
            "patch_bug",
            "--owner",
            "alice@example.org",
            "--resource",
            REPO,
            "--deadline",
            "3s",
            "--id",
            "BUG-4",
        ])
        .await
        .ok();
    assert!(out.stdout.starts_with("created task BUG-4"), "{out:#?}");
    env.cli(&[
        "task",
        "assign",
        "BUG-4",
        "--agent",
        CODER,
        "--role",
        "coder",
        "--permission",
        "writer",
    ])
    .await
    .ok();
    assert!(env.check(CODER_USER, "writer", REPO).await);

    let t = eventually("the task expires", Duration::from_secs(8), || async {
        let t = env.show("BUG-4").await;
        (t["state"] == "expired"
            && t["grants"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["state"] == "ended"))
        .then_some(t)
    })
    .await;
    assert_eq!(t["end_reason"], "deadline passed");
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    let ends = env.events("task.end").await;
    assert!(
        ends.iter().any(|e| e["fields"]["task"] == "BUG-4"
            && e["fields"]["outcome"] == "expired"
            && e["actor"] == "system:tasks"),
        "{ends:#?}"
    );
    let grant_ends = env.events("grant.end").await;
    assert!(
        grant_ends
            .iter()
            .any(|e| e["fields"]["task"] == "BUG-4" && e["fields"]["reason"] == "task expired"),
        "{grant_ends:#?}"
    );
    // An expired task takes no more agents.
    let resp = env
        .post(
            "/v1/tasks/BUG-4/agents",
            Some(&env.admin),
            &json!({"agent": REVIEWER, "role": "reviewer"}),
        )
        .await;
    expect_error("assign to an expired task", resp, 409, "task_not_open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_while_warden_is_down_is_handled_at_start() {
    let mut env = Env::start(true).await;
    let t = env.task("BUG-5", 5).await;
    env.assign("BUG-5", CODER, &["writer"]).await;
    assert!(env.check(CODER_USER, "writer", REPO).await);
    let deadline = t["deadline_unix_ms"].as_i64().unwrap();

    env.server.kill9().await;
    // Wait (on the clock, with the server down) for the deadline to pass.
    eventually("the deadline passes", Duration::from_secs(10), || async {
        (now_ms() > deadline + 200).then_some(())
    })
    .await;
    env.server = env.install.serve_with(SERVE_ARGS).await;

    let t = eventually(
        "the task is expired after restart",
        Duration::from_secs(10),
        || async {
            let t = env.show("BUG-5").await;
            (t["state"] == "expired"
                && t["grants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|g| g["state"] == "ended"))
            .then_some(t)
        },
    )
    .await;
    assert_eq!(t["end_reason"], "deadline passed");
    // The grant no longer counts, and no live tuple is left.
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    let out = env.cli(&["rebac", "read", "--user", CODER_USER]).await.ok();
    assert!(!out.stdout.contains(REPO), "{out:#?}");
    let ends = env.events("task.end").await;
    assert!(
        ends.iter().any(|e| e["fields"]["task"] == "BUG-5"
            && e["fields"]["outcome"] == "expired"
            && e["actor"] == "system:tasks"),
        "{ends:#?}"
    );
    let grant_ends = env.events("grant.end").await;
    assert!(
        grant_ends.iter().any(|e| e["fields"]["task"] == "BUG-5"),
        "{grant_ends:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_stable_codes() {
    let env = Env::start(false).await;
    let admin = env.admin.clone();

    // No relationship model: a task takes agents, but grants need a model.
    env.task("BUG-6", 3600).await;
    let resp = env
        .post(
            "/v1/tasks/BUG-6/agents",
            Some(&admin),
            &json!({"agent": CODER, "role": "coder", "permissions": ["writer"]}),
        )
        .await;
    expect_error("grant without a model", resp, 409, "no_relationship_model").await;
    let fga = env.install.path("model.fga");
    std::fs::write(&fga, MODEL).unwrap();
    env.cli(&["rebac", "model", "push", fga.to_str().unwrap()])
        .await
        .ok();

    // Unknown task: 404 on every route, and a clear CLI error.
    let resp = env
        .server
        .http
        .get(env.server.at("/v1/tasks/NOPE"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error("show unknown", resp, 404, "unknown_task").await;
    for (path, body) in [
        (
            "/v1/tasks/NOPE/agents",
            json!({"agent": CODER, "role": "coder"}),
        ),
        (
            "/v1/tasks/NOPE/end",
            json!({"outcome": "completed", "reason": "x"}),
        ),
    ] {
        let resp = env.post(path, Some(&admin), &body).await;
        expect_error(path, resp, 404, "unknown_task").await;
    }
    let out = env.cli(&["task", "show", "NOPE"]).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("unknown_task (404): no task `NOPE`"),
        "{out:#?}"
    );

    // Duplicate id.
    let resp = env
        .post(
            "/v1/tasks",
            Some(&admin),
            &json!({"id": "BUG-6", "type": "patch_bug", "owner": "a", "resources": [REPO],
                    "deadline_s": 60}),
        )
        .await;
    expect_error("duplicate id", resp, 409, "task_exists").await;
    let out = env
        .cli(&[
            "task",
            "create",
            "--id",
            "BUG-6",
            "--type",
            "patch_bug",
            "--owner",
            "a",
            "--resource",
            REPO,
            "--deadline",
            "1m",
        ])
        .await;
    // A conflict is an error, not a "no": exit 2.
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("task_exists (409)"), "{out:#?}");

    // Bad task fields.
    for (what, body, code) in [
        (
            "resource without a type",
            json!({"type": "patch_bug", "owner": "a", "resources": ["warden"], "deadline_s": 60}),
            "invalid_resource",
        ),
        (
            "no resources",
            json!({"type": "patch_bug", "owner": "a", "resources": [], "deadline_s": 60}),
            "invalid_task",
        ),
        (
            "type with capitals",
            json!({"type": "PatchBug", "owner": "a", "resources": [REPO], "deadline_s": 60}),
            "invalid_task",
        ),
        (
            "deadline of 0",
            json!({"type": "patch_bug", "owner": "a", "resources": [REPO], "deadline_s": 0}),
            "invalid_task",
        ),
        (
            "deadline past 30 days",
            json!({"type": "patch_bug", "owner": "a", "resources": [REPO],
                   "deadline_s": 31 * 86_400}),
            "invalid_task",
        ),
        (
            "bad id",
            json!({"id": "a/b", "type": "patch_bug", "owner": "a", "resources": [REPO],
                   "deadline_s": 60}),
            "invalid_task_id",
        ),
    ] {
        let resp = env.post("/v1/tasks", Some(&admin), &body).await;
        assert_eq!(resp.status().as_u16(), 400, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], code, "{what}: {body}");
    }
    // The CLI refuses a bad duration before sending anything.
    let out = env
        .cli(&[
            "task",
            "create",
            "--type",
            "patch_bug",
            "--owner",
            "a",
            "--resource",
            REPO,
            "--deadline",
            "5x",
        ])
        .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("not a duration"), "{out:#?}");

    // Assignment: a resource outside the task widens scope; bad resource, role, agent.
    let resp = env
        .post(
            "/v1/tasks/BUG-6/agents",
            Some(&admin),
            &json!({"agent": CODER, "role": "coder", "permissions": ["writer"],
                    "resources": ["repository:secrets"]}),
        )
        .await;
    expect_error("outside the task", resp, 403, "scope_widening").await;
    let out = env
        .cli(&[
            "task",
            "assign",
            "BUG-6",
            "--agent",
            CODER,
            "--role",
            "coder",
            "--permission",
            "writer",
            "--resource",
            "repository:secrets",
        ])
        .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("scope_widening (403)"), "{out:#?}");
    assert!(!env.check(CODER_USER, "writer", "repository:secrets").await);
    for (what, body, code) in [
        (
            "bad resource",
            json!({"agent": CODER, "role": "coder", "resources": ["nope"]}),
            "invalid_resource",
        ),
        (
            "bad role",
            json!({"agent": CODER, "role": "Coder!"}),
            "invalid_role",
        ),
        (
            "not a SPIFFE ID",
            json!({"agent": "coder", "role": "coder"}),
            "invalid_spiffe_id",
        ),
        (
            "ttl of 0",
            json!({"agent": CODER, "role": "coder", "ttl_s": 0}),
            "invalid_grant",
        ),
    ] {
        let resp = env
            .post("/v1/tasks/BUG-6/agents", Some(&admin), &body)
            .await;
        expect_error(what, resp, 400, code).await;
    }
    // A permission the model does not have is refused, and nothing is granted.
    let resp = env
        .post(
            "/v1/tasks/BUG-6/agents",
            Some(&admin),
            &json!({"agent": CODER, "role": "coder", "permissions": ["owner"]}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 400, "{:?}", resp.text().await);
    assert_eq!(env.show("BUG-6").await["grants"], json!([]));

    // A lifetime too large to count in milliseconds is "until the task's deadline", not a
    // multiplication that wraps (or, in a debug build, panics).
    let assigned = env
        .ok(
            "/v1/tasks/BUG-6/agents",
            &admin,
            &json!({"agent": CODER, "role": "coder", "permissions": ["reader"],
                    "ttl_s": 1_i64 << 62}),
            200,
        )
        .await;
    let task = env.show("BUG-6").await;
    assert_eq!(
        assigned["grants"][0]["expires_unix_ms"], task["deadline_unix_ms"],
        "{assigned}"
    );

    // Ending: bad outcome, no reason; then assigning to or ending the ended task is 409.
    let resp = env
        .post(
            "/v1/tasks/BUG-6/end",
            Some(&admin),
            &json!({"outcome": "won", "reason": "x"}),
        )
        .await;
    expect_error("bad outcome", resp, 400, "invalid_outcome").await;
    let resp = env
        .post(
            "/v1/tasks/BUG-6/end",
            Some(&admin),
            &json!({"outcome": "completed", "reason": ""}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 400);
    env.cli(&["task", "complete", "BUG-6", "--reason", "done"])
        .await
        .ok();
    let resp = env
        .post(
            "/v1/tasks/BUG-6/agents",
            Some(&admin),
            &json!({"agent": CODER, "role": "coder", "permissions": ["writer"]}),
        )
        .await;
    expect_error("assign to an ended task", resp, 409, "task_not_open").await;
    let out = env
        .cli(&["task", "complete", "BUG-6", "--reason", "again"])
        .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr
            .contains("task_not_open (409): task `BUG-6` is completed"),
        "{out:#?}"
    );

    // Roles: an auditor reads tasks but does not create them; no token, no access.
    let auditor = env.token_secret("audit", "auditor").await;
    let resp = env
        .post(
            "/v1/tasks",
            Some(&auditor),
            &json!({"type": "patch_bug", "owner": "a", "resources": [REPO], "deadline_s": 60}),
        )
        .await;
    expect_error("auditor creates", resp, 403, "forbidden").await;
    env.server.get_json("/v1/tasks/BUG-6", &auditor).await;
    let resp = env
        .post(
            "/v1/tasks",
            None,
            &json!({"type": "patch_bug", "owner": "a", "resources": [REPO], "deadline_s": 60}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_create_and_run_tasks_under_policy() {
    let env = Env::start(true).await;
    let planner = env.svid(PLANNER).await;
    let coder = env.svid(CODER).await;
    let body = json!({"id": "BUG-7", "type": "patch_bug", "owner": "alice@example.org",
                      "resources": [BUGFIX_REPO], "deadline_s": 3600,
                      "attributes": {"branch": "refs/heads/fix/BUG-7"}});

    // The policy lets the Planner open `patch_bug` tasks, and nobody else; nor other types.
    let resp = env.post("/v1/agent/tasks", Some(&coder), &body).await;
    expect_error("coder creates a task", resp, 403, "access_denied").await;
    let resp = env
        .post(
            "/v1/agent/tasks",
            Some(&planner),
            &json!({"type": "deploy", "owner": "a", "resources": [BUGFIX_REPO], "deadline_s": 60}),
        )
        .await;
    expect_error("planner creates a deploy task", resp, 403, "access_denied").await;
    // Nor on another repository, nor on a protected branch (the review's attack: a task on
    // prod-infra whose branch is main, so that the git policy lets its writer push to main).
    for (what, resources, branch) in [
        (
            "another repository",
            json!(["repository:prod-infra"]),
            "refs/heads/fix/x",
        ),
        ("the main branch", json!([BUGFIX_REPO]), "refs/heads/main"),
        ("no branch", json!([BUGFIX_REPO]), ""),
    ] {
        let mut attack = json!({"type": "patch_bug", "owner": "a", "resources": resources,
                                "deadline_s": 60});
        if !branch.is_empty() {
            attack["attributes"] = json!({"branch": branch});
        }
        let resp = env.post("/v1/agent/tasks", Some(&planner), &attack).await;
        expect_error(what, resp, 403, "access_denied").await;
    }
    let resp = env.post("/v1/agent/tasks", None, &body).await;
    expect_error("no credentials", resp, 401, "agent_auth_required").await;
    let t = env.ok("/v1/agent/tasks", &planner, &body, 201).await;
    assert_eq!(t["created_by"], format!("agent:{PLANNER}"));
    assert_eq!(t["state"], "open");
    let decisions = env.events("policy.decision").await;
    assert!(
        decisions
            .iter()
            .any(|e| e["fields"]["action"] == "create_task"
                && e["fields"]["principal"] == CODER
                && e["fields"]["decision"] == "deny"),
        "{decisions:#?}"
    );

    // Only the creating agent assigns to and ends it.
    let assign = json!({"agent": CODER, "role": "coder", "permissions": ["writer"]});
    let resp = env
        .post("/v1/agent/tasks/BUG-7/agents", Some(&coder), &assign)
        .await;
    expect_error("coder assigns", resp, 403, "not_task_creator").await;

    // Delegated administration is a decision: the Planner may not make itself a writer, nor
    // an agent of a federated trust domain (no policy can allow either), nor hand out what
    // the policy does not allow.
    for (what, body, code) in [
        (
            "the planner assigns itself",
            json!({"agent": PLANNER, "role": "coder", "permissions": ["writer"]}),
            "self_escalation",
        ),
        (
            "the planner assigns a federated agent",
            json!({"agent": "spiffe://partner.example/agent/coder", "role": "coder",
                   "permissions": ["writer"]}),
            "foreign_trust_domain",
        ),
        (
            "the reviewer as a writer",
            json!({"agent": REVIEWER, "role": "reviewer", "permissions": ["writer"]}),
            "access_denied",
        ),
        (
            "the coder in another role",
            json!({"agent": CODER, "role": "admin", "permissions": ["writer"]}),
            "access_denied",
        ),
    ] {
        let resp = env
            .post("/v1/agent/tasks/BUG-7/agents", Some(&planner), &body)
            .await;
        expect_error(what, resp, 403, code).await;
    }
    assert!(
        !env.check("agent:example.org/agent/planner", "writer", BUGFIX_REPO)
            .await
    );
    assert!(!env.check(REVIEWER_USER, "writer", BUGFIX_REPO).await);
    let refused = env.events("task.assign").await;
    for code in ["self_escalation", "foreign_trust_domain"] {
        assert!(
            refused
                .iter()
                .any(|e| e["fields"]["refused"] == code && e["outcome"] == "denied"),
            "{code}: {refused:#?}"
        );
    }
    let decisions = env.events("policy.decision").await;
    assert!(
        decisions.iter().any(|e| e["fields"]["action"] == "assign"
            && e["fields"]["principal"] == PLANNER
            && e["fields"]["decision"] == "deny"),
        "{decisions:#?}"
    );

    let v = env
        .ok("/v1/agent/tasks/BUG-7/agents", &planner, &assign, 200)
        .await;
    assert_eq!(v["grants"].as_array().unwrap().len(), 1);
    assert!(env.check(CODER_USER, "writer", BUGFIX_REPO).await);
    let decisions = env.events("policy.decision").await;
    assert!(
        decisions.iter().any(|e| e["fields"]["action"] == "assign"
            && e["fields"]["principal"] == PLANNER
            && e["fields"]["decision"] == "allow"),
        "{decisions:#?}"
    );
    let end = json!({"outcome": "completed", "reason": "fixed"});
    let resp = env
        .post("/v1/agent/tasks/BUG-7/end", Some(&coder), &end)
        .await;
    expect_error("coder ends", resp, 403, "not_task_creator").await;
    let resp = env
        .post("/v1/agent/tasks/NOPE/end", Some(&planner), &end)
        .await;
    expect_error("unknown task", resp, 404, "unknown_task").await;

    // A task an admin created is not the Planner's to change.
    env.task("BUG-8", 3600).await;
    let resp = env
        .post("/v1/agent/tasks/BUG-8/agents", Some(&planner), &assign)
        .await;
    expect_error(
        "planner assigns to the admin's task",
        resp,
        403,
        "not_task_creator",
    )
    .await;

    let t = env
        .ok("/v1/agent/tasks/BUG-7/end", &planner, &end, 200)
        .await;
    assert_eq!(t["state"], "completed");
    assert!(!env.check(CODER_USER, "writer", BUGFIX_REPO).await);
    let ends = env.events("task.end").await;
    assert!(
        ends.iter()
            .any(|e| e["fields"]["task"] == "BUG-7" && e["actor"] == format!("agent:{PLANNER}")),
        "{ends:#?}"
    );
}

/// A decision's task is the one covering its resource, or the one the presented token names
/// — never a guess: an open task about another resource lends its type to nothing, and a token
/// minted for one task cannot carry a decision about another task's resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_sees_the_task_covering_its_resource_or_the_tokens_never_a_guess() {
    let env = Env::start(true).await;
    let enforcer = env.token_secret("gateway", "enforcer").await;
    // The Planner is on a bug fix about `warden` and on a deploy about `ops`; it is also a
    // standing writer of `other` (an operator's tuple, no task).
    env.task("BUG-20", 3600).await;
    env.assign("BUG-20", PLANNER, &["writer"]).await;
    env.ok(
        "/v1/tasks",
        &env.admin,
        &json!({"id": "OPS-1", "type": "deploy", "owner": "alice@example.org",
                "resources": ["repository:ops"], "deadline_s": 3600}),
        201,
    )
    .await;
    env.assign("OPS-1", PLANNER, &[]).await;
    env.cli(&[
        "rebac",
        "write",
        "repository:other#writer@agent:example.org/agent/planner",
    ])
    .await
    .ok();
    let write = |id: &'static str, token: Option<String>| {
        let env = &env;
        let enforcer = &enforcer;
        async move {
            let mut body = json!({"package": "repo", "principal": PLANNER, "action": "write",
                                  "resource": {"type": "Repository", "id": id}});
            if let Some(t) = token {
                body["token"] = json!(t);
            }
            env.ok("/v1/authorize", enforcer, &body, 200).await
        }
    };
    // Writing `other` is about no task: the bug fix's type is not lent to it.
    let d = write("other", None).await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    let decisions = env.events("policy.decision").await;
    let recorded = decisions
        .iter()
        .find(|e| e["fields"]["decision_id"] == d["decision_id"])
        .unwrap();
    assert!(
        recorded["fields"]["request"]["context"]
            .get("task")
            .is_none_or(Value::is_null),
        "{recorded:#}"
    );
    assert_eq!(write("warden", None).await["decision"], "allow");

    // A token for the deploy task cannot carry a write to the bug fix's repository.
    let token = |task: &'static str| {
        let env = &env;
        async move {
            let (status, body) = env.exchange("repo:write", task).await;
            assert_eq!(status, 200, "{body:#}");
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let d = write("warden", Some(token("OPS-1").await)).await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    assert!(d["errors"].to_string().contains("task mismatch"), "{d:#}");
    let d = write("warden", Some(token("BUG-20").await)).await;
    assert_eq!(d["decision"], "allow", "{d:#}");
    // A task the agent is not on is refused at the exchange, before any token exists.
    env.task("BUG-21", 3600).await;
    let (status, body) = env.exchange("repo:read", "BUG-21").await;
    assert_eq!(status, 403, "{body:#}");
}

/// Grants are task-specific: when two open tasks grant an agent the same permission on the
/// same resource, ending one leaves the other's grant in force until its own end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_another_open_task_also_gave_survives_the_first_tasks_end() {
    let env = Env::start(true).await;
    env.task("BUG-10", 3600).await;
    env.task("BUG-11", 7200).await;
    env.assign("BUG-10", CODER, &["writer"]).await;
    env.assign("BUG-11", CODER, &["writer"]).await;
    assert!(env.check(CODER_USER, "writer", REPO).await);
    env.cli(&["task", "complete", "BUG-10", "--reason", "done"])
        .await
        .ok();
    let t = env.show("BUG-11").await;
    assert!(
        t["grants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["state"] == "active"),
        "{t:#}"
    );
    assert!(
        env.check(CODER_USER, "writer", REPO).await,
        "task BUG-11 is open and its grant active, but the relation is gone"
    );
}

/// A relation an operator wrote by hand is not the task's to take away: a task that also
/// granted it ends, and the standing tuple stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_relation_survives_a_task_that_also_granted_it() {
    let env = Env::start(true).await;
    let standing = format!("{REPO}#reader@{REVIEWER_USER}");
    env.cli(&["rebac", "write", &standing]).await.ok();
    env.task("BUG-12", 3600).await;
    env.assign("BUG-12", REVIEWER, &["reader"]).await;
    env.cli(&["task", "complete", "BUG-12", "--reason", "done"])
        .await
        .ok();
    assert!(
        env.check(REVIEWER_USER, "reader", REPO).await,
        "the hand-written tuple {standing} was deleted with the task"
    );
}

/// Granting what the agent already holds until at least as late — the same assignment twice,
/// the same permission twice in one request, a shorter task after a longer one — issues the
/// grants and keeps the tuple at the later end, instead of failing with nothing to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_what_is_already_held_until_later_succeeds() {
    let env = Env::start(true).await;
    env.task("BUG-30", 7200).await;
    env.assign("BUG-30", CODER, &["writer"]).await;
    let again = env.assign("BUG-30", CODER, &["writer"]).await;
    assert_eq!(again["grants"].as_array().unwrap().len(), 2, "{again:#}");
    let twice = env.assign("BUG-30", REVIEWER, &["reader", "reader"]).await;
    assert_eq!(twice["grants"].as_array().unwrap().len(), 2, "{twice:#}");
    env.task("BUG-31", 600).await;
    let shorter = env.assign("BUG-31", CODER, &["writer"]).await;
    assert_eq!(
        shorter["grants"].as_array().unwrap().len(),
        2,
        "{shorter:#}"
    );
    // The shorter task ends: the longer one's grant keeps the tuple.
    env.cli(&["task", "complete", "BUG-31", "--reason", "done"])
        .await
        .ok();
    assert!(env.check(CODER_USER, "writer", REPO).await);
}
