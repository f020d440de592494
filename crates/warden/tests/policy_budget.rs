//! The Rego evaluation budget and simulation limits against the real binary, reproducing the
//! adversarial review: one `numbers.range` call that took 2.3 s and ~660 MB and answered
//! *allow*; three concurrent simulations that froze `/healthz` for seconds.
//!
//! - A policy whose `numbers.range` has literal bounds over the cap is refused at upload
//!   (push and simulate); bounds from the request are capped at evaluation: a deny with the
//!   budget's reason, recorded like any decision.
//! - Simulations run off the async workers, at most two at once (more are refused with 429
//!   `simulation_busy` and `Retry-After`), within entry and time budgets the answer shows;
//!   `/healthz` answers within a second throughout. Only an admin may run a Rego candidate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Install, Server, expect_error, ok_json, post};
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies/coder");
const CODER: &str = "spiffe://example.org/agent/coder";

/// What every budget refusal at evaluation says.
const EXCEEDED: &str = "evaluation budget exceeded";

/// Each `/healthz` must answer within this, on a debug build with both cores busy.
const HEALTHZ_DEADLINE: Duration = Duration::from_secs(1);

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{EXAMPLES}/{name}")).unwrap()
}

fn rego(name: &str, text: &str) -> Value {
    json!({"files": [{"name": name, "text": text}]})
}

/// Records `n` decisions of the Rego seed package `coder` (the Coder has no task: denies).
async fn seed_decisions(server: &Server, admin: &str, enforcer: &str, n: usize) {
    let push = post(
        server,
        admin,
        "/v1/policies/coder",
        &rego("coder.rego", &example("coder.rego")),
    )
    .await;
    ok_json(push, 201).await;
    let ask = json!({"package": "coder", "principal": CODER, "action": "write",
                     "resource": {"type": "Repository", "id": "warden"}});
    for _ in 0..n {
        let d = ok_json(post(server, enforcer, "/v1/authorize", &ask).await, 200).await;
        assert_eq!(d["decision"], "deny", "{d:#}");
    }
}

/// The review's policy is refused where it is written; with bounds from the request, the
/// decision is a deny saying the budget was exceeded — at once, not after seconds and
/// hundreds of megabytes — and it is recorded like any decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_range_is_refused_at_upload_and_capped_at_evaluation() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let enforcer = common::create_token_secret(&server, &admin, "gateway", "enforcer").await;
    let auditor = common::create_token_secret(&server, &admin, "audit", "auditor").await;

    let literal = rego(
        "ranges.rego",
        "package ranges\nimport rego.v1\n\nallow if { count(numbers.range(1, 30000000)) > 5 }\n",
    );
    let body = expect_error(
        "literal range over the cap",
        post(&server, &admin, "/v1/policies/ranges", &literal).await,
        422,
        "invalid_policy",
    )
    .await;
    let d = &body["details"]["diagnostics"][0];
    assert_eq!(
        (&d["file"], &d["line"], &d["column"]),
        (&json!("ranges.rego"), &json!(4), &json!(18)),
        "{body:#}"
    );
    let message = d["message"].as_str().unwrap();
    assert!(
        message.contains("`numbers.range` would generate 30000000 elements")
            && message.contains("100000"),
        "{body:#}"
    );
    // The same candidate in a simulation: refused the same way (admin), and an auditor may
    // not run a Rego candidate at all.
    expect_error(
        "literal range in a simulation",
        post(&server, &admin, "/v1/policies/ranges/simulate", &literal).await,
        422,
        "invalid_policy",
    )
    .await;
    let body = expect_error(
        "auditor with a Rego candidate",
        post(&server, &auditor, "/v1/policies/ranges/simulate", &literal).await,
        403,
        "forbidden",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("admin"),
        "{body:#}"
    );

    let dynamic = rego(
        "ranges.rego",
        "package ranges\nimport rego.v1\n\n\
         allow if { count(numbers.range(1, input.context.request.n)) > 5 }\n",
    );
    ok_json(
        post(&server, &admin, "/v1/policies/ranges", &dynamic).await,
        201,
    )
    .await;
    let ask = |n: i64| {
        json!({"package": "ranges", "principal": CODER, "action": "read",
               "resource": {"type": "Repository", "id": "warden"}, "context": {"n": n}})
    };
    let d = ok_json(
        post(&server, &enforcer, "/v1/authorize", &ask(30_000_000)).await,
        200,
    )
    .await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    assert_eq!(d["determining_policies"], json!([]), "{d:#}");
    let errors = d["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{d:#}");
    let error = errors[0].as_str().unwrap();
    assert!(
        error.contains(EXCEEDED) && error.contains("`numbers.range`") && error.contains("30000000"),
        "{d:#}"
    );
    let denied_id = d["decision_id"].as_str().unwrap().to_owned();
    let d = ok_json(
        post(&server, &enforcer, "/v1/authorize", &ask(10)).await,
        200,
    )
    .await;
    assert_eq!(d["decision"], "allow", "{d:#}");

    // Recorded like any decision: deny, with the reason.
    let entries = server.all_entries(&admin).await;
    let recorded = entries
        .iter()
        .map(|e| &e["event"])
        .find(|e| {
            e["action"] == "policy.decision" && e["fields"]["decision_id"] == denied_id.as_str()
        })
        .expect("the denied decision is in the ledger");
    assert_eq!(recorded["fields"]["decision"], "deny", "{recorded:#}");
    assert_eq!(recorded["outcome"], "denied", "{recorded:#}");
    assert!(
        recorded["fields"]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains(EXCEEDED)),
        "{recorded:#}"
    );
    server.stop().await;
}

/// What a concurrent simulation got back, and when.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    at: Instant,
}

async fn simulate_at(http: &reqwest::Client, url: &str, token: &str, body: &Value) -> Answer {
    let resp = http
        .post(format!("{url}/v1/policies/coder/simulate"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json().await.unwrap();
    Answer {
        status,
        retry_after,
        body,
        at: Instant::now(),
    }
}

async fn simulate(server: &Server, token: &str, body: &Value) -> Answer {
    simulate_at(&server.http, &server.url, token, body).await
}

/// The review's three concurrent simulations, each replaying decisions against a candidate
/// that spends its whole 10 ms budget on every one: they used to run on the async workers and
/// freeze `/healthz` for seconds. Now two run, on threads of their own, the third and a fourth
/// are refused with a `Retry-After`, and `/healthz` answers within a second throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_simulations_leave_the_server_responsive() {
    const DECISIONS: usize = 200;
    let install = Install::new().await;
    // Two async workers on any machine: what the review saw on its two cores.
    let server = install
        .serve_env(&[("TOKIO_WORKER_THREADS", "2")], &[])
        .await;
    let admin = install.admin_token();
    let enforcer = common::create_token_secret(&server, &admin, "gateway", "enforcer").await;
    seed_decisions(&server, &admin, &enforcer, DECISIONS).await;

    // A million iterations per decision: every replayed decision runs into its time budget.
    let slow = rego(
        "coder.rego",
        "package warden.coder\nimport rego.v1\n\
         allow if count([1 | some i in numbers.range(1, 1000); some j in numbers.range(1, 1000)]) > 0\n",
    );
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (url, http, admin, slow) = (
                server.url.clone(),
                server.http.clone(),
                admin.clone(),
                slow.clone(),
            );
            tokio::spawn(async move { simulate_at(&http, &url, &admin, &slow).await })
        })
        .collect();

    let mut polls_while_running = 0;
    let mut fourth: Option<Answer> = None;
    let mut slowest = Duration::ZERO;
    while !tasks.iter().all(tokio::task::JoinHandle::is_finished) {
        let started = Instant::now();
        let health = tokio::time::timeout(
            HEALTHZ_DEADLINE,
            server.http.get(server.at("/healthz")).send(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "/healthz did not answer within {HEALTHZ_DEADLINE:?} while simulations ran \
                 ({polls_while_running} answered before)"
            )
        })
        .unwrap();
        assert_eq!(health.status(), 200);
        slowest = slowest.max(started.elapsed());
        polls_while_running += 1;
        // Once one of the three is answered (the refused one: the others replay for
        // seconds), a fourth asks while two still run.
        if fourth.is_none() && tasks.iter().any(tokio::task::JoinHandle::is_finished) {
            let answer = simulate(&server, &admin, &slow).await;
            let running = tasks.iter().filter(|t| !t.is_finished()).count();
            assert_eq!(
                running, 2,
                "the fourth simulation must be asked while two run"
            );
            fourth = Some(answer);
        }
    }
    assert!(polls_while_running > 0);
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers.sort_by_key(|a| a.status);
    let fourth = fourth.expect("a fourth simulation was asked while two ran");

    // Two replayed everything, each decision ending at its budget.
    for done in &answers[..2] {
        let body = &done.body;
        assert_eq!(done.status, 200, "{body:#}");
        assert_eq!(body["replayed"], DECISIONS, "{body:#}");
        assert_eq!(body["complete"], true, "{body:#}");
        assert!(body.get("stopped_by").is_none(), "{body:#}");
        assert_eq!(body["budget"]["max_entries"], 5_000_000, "{body:#}");
        assert_eq!(body["budget"]["max_ms"], 20_000, "{body:#}");
        assert!(
            body["budget"]["elapsed_ms"].as_u64().unwrap() > 0,
            "{body:#}"
        );
        assert!(done.at > fourth.at, "a slot was free for the fourth");
    }
    // The third and the fourth were refused, saying when to come back.
    for refused in [&answers[2], &fourth] {
        assert_eq!(refused.status, 429, "{:#}", refused.body);
        assert_eq!(
            refused.body["code"], "simulation_busy",
            "{:#}",
            refused.body
        );
        assert_eq!(refused.retry_after.as_deref(), Some("5"));
    }
    eprintln!("{polls_while_running} /healthz answers while simulations ran, slowest {slowest:?}");
    server.stop().await;
}

/// A caller sees and chooses the budget: a smaller `max_entries` or `max_ms` stops the replay
/// early and the answer says which one did. An auditor may simulate a Cedar candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulation_budgets_are_in_the_answer() {
    const DECISIONS: usize = 30;
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let enforcer = common::create_token_secret(&server, &admin, "gateway", "enforcer").await;
    let auditor = common::create_token_secret(&server, &admin, "audit", "auditor").await;
    seed_decisions(&server, &admin, &enforcer, DECISIONS).await;

    // Entries: the first ten of the ledger, whatever they hold.
    let cedar = json!({
        "files": [
            {"name": "coder.cedar", "text": example("coder.cedar")},
            {"name": "coder.cedarschema", "text": example("coder.cedarschema")},
        ],
        "max_entries": 10,
    });
    let answer = simulate(&server, &auditor, &cedar).await;
    let body = &answer.body;
    assert_eq!(answer.status, 200, "{body:#}");
    assert_eq!(body["scanned_entries"], 10, "{body:#}");
    assert_eq!(body["complete"], false, "{body:#}");
    assert_eq!(body["stopped_by"], "max_entries", "{body:#}");
    assert_eq!(body["budget"]["max_entries"], 10, "{body:#}");

    // Time: a candidate that spends its 10 ms on every decision gets through a few in 60 ms.
    let slow = json!({
        "files": [{"name": "coder.rego", "text":
            "package warden.coder\nimport rego.v1\n\
             allow if count([1 | some i in numbers.range(1, 1000); some j in numbers.range(1, 1000)]) > 0\n"}],
        "max_ms": 60,
    });
    let answer = simulate(&server, &admin, &slow).await;
    let body = &answer.body;
    assert_eq!(answer.status, 200, "{body:#}");
    assert_eq!(body["complete"], false, "{body:#}");
    assert_eq!(body["stopped_by"], "max_ms", "{body:#}");
    assert_eq!(body["budget"]["max_ms"], 60, "{body:#}");
    let replayed = body["replayed"].as_u64().unwrap();
    assert!(replayed < DECISIONS as u64, "{body:#}");

    // A budget above the server's is the server's.
    let mut all = cedar.clone();
    all["max_entries"] = json!(u64::MAX);
    all["max_ms"] = json!(u64::MAX);
    let answer = simulate(&server, &auditor, &all).await;
    let body = &answer.body;
    assert_eq!(answer.status, 200, "{body:#}");
    assert_eq!(body["complete"], true, "{body:#}");
    assert_eq!(body["replayed"], DECISIONS, "{body:#}");
    assert_eq!(body["budget"]["max_entries"], 5_000_000, "{body:#}");
    assert_eq!(body["budget"]["max_ms"], 20_000, "{body:#}");
    server.stop().await;
}
