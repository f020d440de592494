//! Just-in-time grant requests end to end against the real binary (SQLite): an agent on a task
//! asks for a permission; the broker policy grants `reader` at once, sends `writer` during a
//! `patch_bug` task to a human approver (who approves or denies, or nobody does and it
//! expires), and denies the rest. The agent long-polls for the answer (`warden agent
//! request-grant --wait`). Every refusal has its stable code and a ledger entry.

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
const REPO: &str = "repository:warden";

const MODEL: &str = "model\n  schema 1.1\ntype agent\ntype repository\n  relations\n    define writer: [agent]\n    define reader: [agent] or writer\n";

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
    /// An API token with role `approver`.
    approver: String,
}

impl Env {
    /// A server with the agents registered (all "this user running the warden binary", told
    /// apart with `--as`/`--spiffe-id`), the example broker policy, the relationship model,
    /// an approver, and task `T-1` (`patch_bug` on two repositories) with the Coder on it
    /// without grants.
    async fn start() -> Env {
        let install = Install::new().await;
        let server = install.serve().await;
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
        let mut env = Env {
            install,
            server,
            admin,
            issuer,
            approver: String::new(),
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
        let fga = env.install.path("model.fga");
        std::fs::write(&fga, MODEL).unwrap();
        env.cli(&["rebac", "model", "push", fga.to_str().unwrap()])
            .await
            .ok();
        let out = env
            .cli(&[
                "api-token",
                "create",
                "--name",
                "oncall",
                "--role",
                "approver",
            ])
            .await
            .ok();
        env.approver = out
            .stdout
            .split_whitespace()
            .find(|w| w.starts_with("wdn_"))
            .unwrap()
            .to_owned();
        env.task("T-1").await;
        env
    }

    /// Creates `patch_bug` task `id` with the Coder on it (no grants).
    async fn task(&self, id: &str) {
        self.ok(
            "/v1/tasks",
            &self.admin,
            &json!({"id": id, "type": "patch_bug", "owner": "alice@example.org",
                    "resources": [REPO, "repository:docs"], "deadline_s": 3600}),
            201,
        )
        .await;
        self.ok(
            &format!("/v1/tasks/{id}/agents"),
            &self.admin,
            &json!({"agent": CODER, "role": "coder"}),
            200,
        )
        .await;
    }

    /// `warden ARGS… --server URL --token-file ADMIN` (an inline `--token` wins over the file).
    async fn cli(&self, args: &[&str]) -> Out {
        run(self.install.client(&self.server, args)).await
    }

    /// `warden agent --socket … --as ID ARGS…` (the agent side: no API token is used).
    fn agent_cmd(&self, id: &str, args: &[&str]) -> tokio::process::Command {
        let mut cmd = warden();
        cmd.arg("agent")
            .arg("--socket")
            .arg(self.install.data_dir.join("workload.sock"))
            .args(["--as", id])
            .args(args)
            .args(["--server", &self.server.url]);
        cmd
    }

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

    /// A JWT-SVID of `id` for this server, from the Workload API.
    async fn svid(&self, id: &str) -> String {
        let mut cmd = warden();
        cmd.arg("svid")
            .arg("--socket")
            .arg(self.install.data_dir.join("workload.sock"))
            .args(["jwt", "--audience", &self.issuer, "--spiffe-id", id]);
        run(cmd).await.ok().stdout.trim().to_owned()
    }

    /// The Coder asks for `permission` on `resource` of `task` over HTTP.
    async fn request(&self, svid: &str, task: &str, resource: &str, extra: Value) -> Value {
        let mut body = json!({"task": task, "resource": resource, "permission": "writer",
                              "reason": "fix the bug"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.ok("/v1/grants/requests", svid, &body, 201).await
    }

    /// `GET /v1/grants/requests/{id}?wait_s=N` as the agent.
    async fn poll(&self, svid: &str, id: &str, wait_s: u64) -> Value {
        let resp = self
            .server
            .http
            .get(
                self.server
                    .at(&format!("/v1/grants/requests/{id}?wait_s={wait_s}")),
            )
            .bearer_auth(svid)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.unwrap()
    }

    async fn events(&self, action: &str) -> Vec<Value> {
        self.server
            .all_entries(&self.admin)
            .await
            .into_iter()
            .map(|e| e["event"].clone())
            .filter(|e| e["action"] == action)
            .collect()
    }

    /// Pending requests, as an approver sees them.
    async fn pending(&self) -> Vec<Value> {
        self.server
            .get_json("/v1/approvals", &self.approver)
            .await
            .as_array()
            .unwrap()
            .clone()
    }
}

/// A long-poll client: the server holds the request up to its `wait_s`.
fn long_poll_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_request_is_granted_at_once_and_others_are_denied_by_policy() {
    let env = Env::start().await;
    assert!(!env.check(CODER_USER, "reader", REPO).await);

    let out = run(env.agent_cmd(
        CODER,
        &[
            "request-grant",
            "--task",
            "T-1",
            "--resource",
            REPO,
            "--permission",
            "reader",
            "--reason",
            "read the failing module",
        ],
    ))
    .await
    .ok();
    assert!(
        out.stdout
            .starts_with("granted reader on repository:warden (task T-1) by policy: request req_"),
        "{out:#?}"
    );
    assert!(env.check(CODER_USER, "reader", REPO).await);
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    assert!(!env.check(CODER_USER, "reader", "repository:docs").await);

    // --json, with a shorter lifetime than the task's.
    let out = run(env.agent_cmd(
        CODER,
        &[
            "request-grant",
            "--task",
            "T-1",
            "--resource",
            "repository:docs",
            "--permission",
            "reader",
            "--reason",
            "read the docs",
            "--ttl",
            "10m",
            "--output",
            "json",
        ],
    ))
    .await
    .ok();
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["state"], "allowed");
    assert_eq!(r["agent"], CODER);
    assert_eq!(r["decided_by"], "policy");
    assert!(
        r["grant_id"].as_str().unwrap().starts_with("grant_"),
        "{r:#}"
    );
    assert!(
        r["decision_id"].as_str().unwrap().starts_with("dec_"),
        "{r:#}"
    );
    let t = env.server.get_json("/v1/tasks/T-1", &env.admin).await;
    let grant = t["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["grant_id"] == r["grant_id"])
        .unwrap()
        .clone();
    assert_eq!(
        grant["source"],
        format!("request:{}", r["request_id"].as_str().unwrap())
    );
    let left = grant["expires_unix_ms"].as_i64().unwrap() - r["created_unix_ms"].as_i64().unwrap();
    assert!((599_000..=600_000).contains(&left), "{left}");

    // Anything the policy does not name is denied: exit 1, recorded.
    let out = run(env.agent_cmd(
        CODER,
        &[
            "request-grant",
            "--task",
            "T-1",
            "--resource",
            REPO,
            "--permission",
            "admin",
            "--reason",
            "just in case",
            "--wait",
            "5s",
        ],
    ))
    .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stdout
            .starts_with("denied admin on repository:warden (task T-1): request req_"),
        "{out:#?}"
    );

    let requests = env.events("grant.request").await;
    assert!(
        requests.iter().any(|e| e["fields"]["state"] == "allowed"
            && e["fields"]["permission"] == "reader"
            && e["outcome"] == "success"
            && e["actor"] == format!("agent:{CODER}")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|e| e["fields"]["state"] == "denied" && e["outcome"] == "denied"),
        "{requests:#?}"
    );
    let issued = env.events("grant.issue").await;
    assert!(
        issued.iter().any(|e| e["fields"]["source"]
            .as_str()
            .unwrap()
            .starts_with("request:req_")),
        "{issued:#?}"
    );
    // Both policy questions were decisions on the record.
    let decisions = env.events("policy.decision").await;
    for action in ["request_grant", "request_grant_with_approval"] {
        assert!(
            decisions
                .iter()
                .any(|e| e["fields"]["action"] == action && e["fields"]["api"] == "grants"),
            "{action}: {decisions:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_request_waits_for_an_approver_and_the_long_poll_sees_the_approval() {
    let env = Env::start().await;
    let svid = env.svid(CODER).await;
    let r = env.request(&svid, "T-1", REPO, json!({})).await;
    assert_eq!(r["state"], "pending", "{r:#}");
    let id = r["request_id"].as_str().unwrap().to_owned();
    assert!(!env.check(CODER_USER, "writer", REPO).await);

    // The agent long-polls before anyone decides.
    let poll = {
        let (http, url, svid) = (
            long_poll_client(),
            env.server
                .at(&format!("/v1/grants/requests/{id}?wait_s=20")),
            svid.clone(),
        );
        tokio::spawn(async move {
            let resp = http.get(url).bearer_auth(svid).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            (resp.json::<Value>().await.unwrap(), Instant::now())
        })
    };

    // The approver sees it (human and JSON) …
    let out = env
        .cli(&["approvals", "list", "--token", &env.approver])
        .await
        .ok();
    assert!(out.stdout.starts_with("REQUEST_ID "), "{out:#?}");
    let rows: Vec<String> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(rows.len(), 1, "{out:#?}");
    assert!(
        rows[0].starts_with(&format!(
            "{id} pending {CODER} writer repository:warden T-1 20"
        )),
        "{out:#?}"
    );
    assert!(rows[0].ends_with("fix the bug -"), "{out:#?}");
    let out = env
        .cli(&[
            "approvals",
            "list",
            "--output",
            "json",
            "--token",
            &env.approver,
        ])
        .await
        .ok();
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed[0]["request_id"], id.as_str());
    // … and an auditor may look but not decide.
    let auditor = common::create_token_secret(&env.server, &env.admin, "audit", "auditor").await;
    env.server.get_json("/v1/approvals", &auditor).await;
    let resp = env
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&auditor),
            &json!({"decision": "approve", "reason": "lgtm"}),
        )
        .await;
    expect_error("auditor approves", resp, 403, "forbidden").await;
    let out = env
        .cli(&[
            "approvals",
            "approve",
            &id,
            "--reason",
            "lgtm",
            "--token",
            &auditor,
        ])
        .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("forbidden (403)"), "{out:#?}");
    assert!(
        !poll.is_finished(),
        "the long poll answered before a decision"
    );

    let out = env
        .cli(&[
            "approvals",
            "approve",
            &id,
            "--reason",
            "needed for BUG-1",
            "--token",
            &env.approver,
        ])
        .await
        .ok();
    let approved_at = Instant::now();
    assert!(
        out.stdout.starts_with(&format!(
            "approved {id}: {CODER} writer on repository:warden (task T-1)"
        )),
        "{out:#?}"
    );
    let (answer, answered_at) = tokio::time::timeout(Duration::from_secs(25), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer["state"], "approved", "{answer:#}");
    assert_eq!(answer["decided_by"], "token:oncall");
    assert_eq!(answer["decision_reason"], "needed for BUG-1");
    // Woken by the decision, not by the end of its 20 s wait.
    assert!(
        answered_at.saturating_duration_since(approved_at) < Duration::from_secs(5),
        "the long poll took {:?} after the approval",
        answered_at.saturating_duration_since(approved_at)
    );
    assert!(env.check(CODER_USER, "writer", REPO).await);
    let t = env.server.get_json("/v1/tasks/T-1", &env.admin).await;
    assert!(
        t["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["permission"] == "writer"
                && g["state"] == "active"
                && g["source"] == format!("request:{id}")),
        "{t:#}"
    );

    // Deciding again is refused, and recorded.
    let out = env
        .cli(&[
            "approvals",
            "deny",
            &id,
            "--reason",
            "changed my mind",
            "--token",
            &env.approver,
        ])
        .await;
    // A conflict is an error, not a "no": exit 2.
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains(&format!(
            "already_decided (409): grant request `{id}` is already approved"
        )),
        "{out:#?}"
    );
    let resp = env
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&env.approver),
            &json!({"decision": "approve", "reason": "again"}),
        )
        .await;
    expect_error("second approval", resp, 409, "already_decided").await;
    assert!(env.check(CODER_USER, "writer", REPO).await);

    let approvals = env.events("grant.approval").await;
    assert!(
        approvals
            .iter()
            .any(|e| e["fields"]["request_id"] == id.as_str()
                && e["outcome"] == "success"
                && e["fields"]["result"] == "approved"
                && e["actor"] == "token:oncall"),
        "{approvals:#?}"
    );
    let refused: Vec<&Value> = approvals
        .iter()
        .filter(|e| e["fields"]["request_id"] == id.as_str() && e["outcome"] == "denied")
        .collect();
    assert_eq!(refused.len(), 2, "{approvals:#?}");
    assert!(
        refused
            .iter()
            .all(|e| e["fields"]["result"] == "refused: already decided"),
        "{refused:#?}"
    );

    // Nothing pending any more; the decided request is listed by state.
    let out = env
        .cli(&["approvals", "list", "--token", &env.approver])
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "no pending approvals");
    let out = env
        .cli(&[
            "approvals",
            "list",
            "--state",
            "approved",
            "--token",
            &env.approver,
        ])
        .await
        .ok();
    assert!(out.stdout.contains("by token:oncall at 20"), "{out:#?}");
    assert!(out.stdout.contains(": needed for BUG-1"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_for_the_approvers_decision() {
    let env = Env::start().await;
    env.task("T-2").await;
    let start_waiting = |task: &'static str| {
        let cmd = env.agent_cmd(
            CODER,
            &[
                "request-grant",
                "--task",
                task,
                "--resource",
                REPO,
                "--permission",
                "writer",
                "--reason",
                "patch the parser",
                "--wait",
                "40s",
            ],
        );
        tokio::spawn(run(cmd))
    };
    // Waits until exactly one request of `task` is pending; returns its id.
    let pending_of = |task: &'static str| {
        let env = &env;
        async move {
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                let pending = env.pending().await;
                if let Some(r) = pending.iter().find(|r| r["task"] == task) {
                    return r["request_id"].as_str().unwrap().to_owned();
                }
                assert!(Instant::now() < until, "no pending request for {task}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Approved: the waiting command exits 0.
    let waiting = start_waiting("T-1");
    let id = pending_of("T-1").await;
    env.cli(&[
        "approvals",
        "approve",
        &id,
        "--reason",
        "ok",
        "--token",
        &env.approver,
    ])
    .await
    .ok();
    let out = waiting.await.unwrap();
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stdout.contains(&format!(
            "waiting for an approver: request {id} for writer on repository:warden (task T-1)"
        )),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains(&format!(
            "granted writer on repository:warden (task T-1): request {id} approved by token:oncall: ok"
        )),
        "{out:#?}"
    );
    assert!(env.check(CODER_USER, "writer", REPO).await);

    // Denied: it exits 1 and nothing is granted on the other task.
    env.cli(&["task", "complete", "T-1", "--reason", "merged"])
        .await
        .ok();
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    let waiting = start_waiting("T-2");
    let id = pending_of("T-2").await;
    let out = env
        .cli(&[
            "approvals",
            "deny",
            &id,
            "--reason",
            "code freeze",
            "--token",
            &env.approver,
        ])
        .await
        .ok();
    assert!(out.stdout.starts_with(&format!("denied {id}")), "{out:#?}");
    let out = waiting.await.unwrap();
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stdout.contains(&format!(
            "denied writer on repository:warden (task T-2): request {id} denied by token:oncall: code freeze"
        )),
        "{out:#?}"
    );
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    let t = env.server.get_json("/v1/tasks/T-2", &env.admin).await;
    assert_eq!(t["grants"], json!([]), "{t:#}");
    let resp = env
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&env.approver),
            &json!({"decision": "deny", "reason": "again"}),
        )
        .await;
    expect_error("second denial", resp, 409, "already_decided").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_decides_expires() {
    let env = Env::start().await;
    let svid = env.svid(CODER).await;
    let r = env
        .request(&svid, "T-1", REPO, json!({"approval_timeout_s": 2}))
        .await;
    assert_eq!(r["state"], "pending");
    let id = r["request_id"].as_str().unwrap().to_owned();
    let left = r["expires_unix_ms"].as_i64().unwrap() - r["created_unix_ms"].as_i64().unwrap();
    assert_eq!(left, 2000);

    // The long poll returns once the sweeper has expired it.
    let answer = env.poll(&svid, &id, 15).await;
    assert_eq!(answer["state"], "expired", "{answer:#}");
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    assert!(env.pending().await.is_empty());

    let resp = env
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&env.approver),
            &json!({"decision": "approve", "reason": "sorry, late"}),
        )
        .await;
    let body = expect_error("late approval", resp, 409, "already_decided").await;
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    let expired = env.events("grant.request_expired").await;
    assert!(
        expired
            .iter()
            .any(|e| e["fields"]["request_id"] == id.as_str() && e["outcome"] == "denied"),
        "{expired:#?}"
    );
    let approvals = env.events("grant.approval").await;
    assert!(
        approvals
            .iter()
            .any(|e| e["fields"]["request_id"] == id.as_str()
                && e["outcome"] == "denied"
                && e["fields"]["detail"]["state"] == "expired"),
        "{approvals:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_have_stable_codes_and_ledger_entries() {
    let env = Env::start().await;
    let coder = env.svid(CODER).await;
    let reviewer = env.svid(REVIEWER).await;
    env.task("T-9").await;
    env.cli(&["task", "cancel", "T-9", "--reason", "obsolete"])
        .await
        .ok();
    let body = |task: &str, resource: &str| json!({"task": task, "resource": resource, "permission": "writer", "reason": "fix"});

    let cases = [
        (
            "not on the task",
            &reviewer,
            body("T-1", REPO),
            403,
            "not_on_task",
        ),
        (
            "unknown task",
            &coder,
            body("NOPE", REPO),
            404,
            "unknown_task",
        ),
        (
            "ended task",
            &coder,
            body("T-9", REPO),
            409,
            "task_not_open",
        ),
        (
            "outside the task",
            &coder,
            body("T-1", "repository:secrets"),
            403,
            "scope_widening",
        ),
        (
            "bad resource",
            &coder,
            body("T-1", "secrets"),
            400,
            "invalid_resource",
        ),
    ];
    for (what, svid, body, status, code) in &cases {
        let resp = env.post("/v1/grants/requests", Some(svid), body).await;
        expect_error(what, resp, *status, code).await;
    }
    // No credentials: 401.
    let resp = env
        .post("/v1/grants/requests", None, &body("T-1", REPO))
        .await;
    expect_error("no credentials", resp, 401, "agent_auth_required").await;
    // An API token is not an agent identity.
    let resp = env
        .post("/v1/grants/requests", Some(&env.admin), &body("T-1", REPO))
        .await;
    assert_eq!(resp.status().as_u16(), 401);

    // The CLI says why and exits 1.
    let out = run(env.agent_cmd(
        CODER,
        &[
            "request-grant",
            "--task",
            "T-1",
            "--resource",
            "repository:secrets",
            "--permission",
            "writer",
            "--reason",
            "fix",
        ],
    ))
    .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(
        out.stderr.contains(
            "scope_widening (403): `repository:secrets` is not one of task `T-1`'s resources"
        ),
        "{out:#?}"
    );

    // Every refusal is on the record with its code.
    let denied: Vec<Value> = env
        .events("grant.request")
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    for (what, svid, body, _, code) in &cases {
        let actor = if *svid == &reviewer { REVIEWER } else { CODER };
        assert!(
            denied.iter().any(|e| e["fields"]["code"] == *code
                && e["fields"]["task"] == body["task"]
                && e["actor"] == format!("agent:{actor}")),
            "{what}: no grant.request entry with code {code}: {denied:#?}"
        );
    }
    assert_eq!(
        denied
            .iter()
            .filter(|e| e["fields"]["code"] == "scope_widening")
            .count(),
        2,
        "{denied:#?}"
    );

    // An agent sees only its own requests.
    let r = env.request(&coder, "T-1", REPO, json!({})).await;
    let resp = env
        .server
        .http
        .get(env.server.at(&format!(
            "/v1/grants/requests/{}",
            r["request_id"].as_str().unwrap()
        )))
        .bearer_auth(&reviewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let mine = env.poll(&coder, r["request_id"].as_str().unwrap(), 0).await;
    assert_eq!(mine["state"], "pending");
}

/// A request with no credentials is refused (401) — and, like every other refusal, is on
/// the record (`agent.authenticate`, within the same per-second budget as failed logins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_request_is_recorded() {
    let env = Env::start().await;
    let resp = env
        .post(
            "/v1/grants/requests",
            None,
            &json!({"task": "T-1", "resource": REPO, "permission": "writer", "reason": "fix"}),
        )
        .await;
    expect_error("no credentials", resp, 401, "agent_auth_required").await;
    let entries = env.server.all_entries(&env.admin).await;
    assert!(
        entries.iter().any(|e| e["event"]["outcome"] == "denied"
            && e["event"]["action"] == "agent.authenticate"
            && e["event"]["fields"]["code"] == "agent_auth_required"),
        "the 401 left no ledger entry"
    );
}

/// A hold placed while a request waits wins over the approver: approving it then grants
/// nothing, says why, and is recorded; after the release it can be approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_after_a_hold_grants_nothing() {
    let env = Env::start().await;
    let svid = env.svid(CODER).await;
    let r = env.request(&svid, "T-1", REPO, json!({})).await;
    assert_eq!(r["state"], "pending", "{r:#}");
    let id = r["request_id"].as_str().unwrap().to_owned();
    let approve = || async {
        env.post(
            &format!("/v1/approvals/{id}"),
            Some(&env.approver),
            &json!({"decision": "approve", "reason": "lgtm"}),
        )
        .await
    };
    env.cli(&["hold", "agent", CODER, "--reason", "odd pushes"])
        .await
        .ok();
    let resp = approve().await;
    let body = expect_error("approve a held agent's request", resp, 403, "agent_on_hold").await;
    assert_eq!(body["details"]["barred"]["agent"], CODER, "{body:#}");
    assert!(!env.check(CODER_USER, "writer", REPO).await);
    let approvals = env.events("grant.approval").await;
    assert!(
        approvals
            .iter()
            .any(|e| e["fields"]["request_id"] == id.as_str()
                && e["fields"]["result"] == "refused: on hold"),
        "{approvals:#?}"
    );
    // A held task refuses the same way.
    env.cli(&["release", "agent", CODER, "--reason", "cleared"])
        .await
        .ok();
    env.cli(&["hold", "task", "T-1", "--reason", "scope review"])
        .await
        .ok();
    let resp = approve().await;
    expect_error("approve on a held task", resp, 403, "task_on_hold").await;
    assert!(!env.check(CODER_USER, "writer", REPO).await);
}
