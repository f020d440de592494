//! Bounds on what one caller can make Warden do (`[limits]` in `warden.toml`): failed
//! authentications per source address answered 429 `rate_limited` with `Retry-After` while
//! another source still works, a budget of refusal entries per API token, the ListObjects /
//! ListUsers caps, the Workload API's calls per Unix user, and the retention of ended rows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{net::IpAddr, time::Duration};

use common::{Install, Server, create_token_secret, expect_error, ok_json, post, run, warden};
use serde_json::{Value, json};

/// An install whose `warden.toml` has this `[limits]` table.
async fn install_with(limits: &str) -> Install {
    let install = Install::new().await;
    let path = install.data_dir.join("warden.toml");
    let mut toml = std::fs::read_to_string(&path).unwrap();
    toml.push_str("\n[limits]\n");
    toml.push_str(limits);
    std::fs::write(&path, toml).unwrap();
    install
}

/// An HTTP client whose connections come from `source` (any 127.0.0.0/8 address reaches a
/// server on 127.0.0.1).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The value of the metric line starting with `prefix`.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn forged_bearer_tokens_get_429_after_the_limit_while_another_source_works() {
    let install = install_with("auth_failures_per_source = { per_sec = 0.01, burst = 5 }\n").await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let (a, b) = (client_from("127.0.0.1"), client_from("127.0.0.2"));
    let whoami = server.at("/v1/whoami");

    // The burst, and the failure that empties it, are looked up and refused 401.
    for i in 0..6 {
        let resp = a
            .get(&whoami)
            .bearer_auth(format!("wdn_forged-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "forged token {i}");
    }
    // Then the source is refused before any lookup, valid token or not.
    for token in ["wdn_forged-next", admin.as_str()] {
        let resp = a.get(&whoami).bearer_auth(token).send().await.unwrap();
        let retry_after: u64 = resp
            .headers()
            .get("retry-after")
            .expect("Retry-After")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1, "{retry_after}");
        expect_error("over the limit", resp, 429, "rate_limited").await;
    }
    // Another source is not affected: refused for its forged token, served with a valid one.
    let resp = b
        .get(&whoami)
        .bearer_auth("wdn_forged-b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = b.get(&whoami).bearer_auth(&admin).send().await.unwrap();
    ok_json(resp, 200).await;

    let metrics = server.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "warden_rate_limited_total{limit=\"auth_failures_per_source\"} "
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "warden_rate_limit_burst{limit=\"auth_failures_per_source\"} "
        ),
        Some(5.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn token_requests_with_forged_tokens_get_429_after_the_limit_per_source() {
    let install = install_with("auth_failures_per_source = { per_sec = 0.01, burst = 3 }\n").await;
    let server = install.serve().await;
    let (a, b) = (client_from("127.0.0.1"), client_from("127.0.0.3"));
    let exchange = |http: &reqwest::Client, i: usize| {
        http.post(server.at("/oauth2/token")).form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            (
                "subject_token",
                &format!("eyJhbGciOiJFUzI1NiJ9.e30.forged{i}"),
            ),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ])
    };
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(exchange(&a, i).send().await.unwrap().status().as_u16());
    }
    assert!(
        statuses[..4].iter().all(|&s| s == 400 || s == 401),
        "the burst and the failure that empties it are checked: {statuses:?}"
    );
    assert_eq!(&statuses[4..], [429, 429], "{statuses:?}");
    let resp = exchange(&a, 9).send().await.unwrap();
    expect_error("token endpoint over the limit", resp, 429, "rate_limited").await;
    // Another source's token request is still checked (and refused for what it is).
    let status = exchange(&b, 10).send().await.unwrap().status().as_u16();
    assert!(status == 400 || status == 401, "{status}");
    // Join tokens share the source's failure budget.
    let resp = a
        .post(server.at("/v1/join"))
        .json(&json!({"token": "wjt_forged", "csr": "x"}))
        .send()
        .await
        .unwrap();
    expect_error("join over the limit", resp, 429, "rate_limited").await;
}

#[tokio::test]
async fn an_enforcers_refusals_are_recorded_within_its_budget_and_summarised() {
    let install =
        install_with("refusals_recorded_per_caller = { per_sec = 0.01, burst = 3 }\n").await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let enforcer = create_token_secret(&server, &admin, "gate", "enforcer").await;
    // Ten refused calls (an enforcer may not create tokens): every one is answered 403.
    for i in 0..10 {
        let resp = post(
            &server,
            &enforcer,
            "/v1/tokens",
            &json!({"name": format!("x{i}"), "role": "admin"}),
        )
        .await;
        expect_error("refused", resp, 403, "forbidden").await;
    }
    let refused = |entries: &[Value]| -> Vec<Value> {
        entries
            .iter()
            .filter(|e| {
                e["event"]["action"] == "api.request" && e["event"]["actor"] == "token:gate"
            })
            .cloned()
            .collect()
    };
    let entries = server.all_entries(&admin).await;
    assert_eq!(
        refused(&entries).len(),
        3,
        "only the budget is recorded one by one"
    );
    let metrics = server.get_text("/metrics").await;
    assert_eq!(
        metric(&metrics, "warden_refusals_unrecorded_total "),
        Some(7.0),
        "{metrics}"
    );
    // The sweeper records how many were only counted.
    let mut summary = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while summary.is_none() && std::time::Instant::now() < deadline {
        summary = server
            .all_entries(&admin)
            .await
            .into_iter()
            .find(|e| e["event"]["action"] == "audit.refusals_suppressed");
        if summary.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let summary = summary.expect("a summary entry");
    assert_eq!(summary["event"]["actor"], "token:gate");
    assert_eq!(summary["event"]["fields"]["count"], 7);
}

/// Writes `n` documents `user:anne` can view and `n` viewers of `doc:big`.
async fn many_tuples(server: &Server, admin: &str, n: usize) {
    let model =
        "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define viewer: [user]\n";
    let resp = server
        .http
        .put(server.at("/v1/rebac/model"))
        .bearer_auth(admin)
        .header("content-type", "text/plain")
        .body(model)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let keys: Vec<Value> = (0..n)
        .flat_map(|i| {
            [
                json!({"user": "user:anne", "relation": "viewer", "object": format!("doc:{i}")}),
                json!({"user": format!("user:u{i}"), "relation": "viewer", "object": "doc:big"}),
            ]
        })
        .collect();
    for chunk in keys.chunks(100) {
        let resp = post(
            server,
            admin,
            "/v1/rebac/tuples",
            &json!({"writes": {"tuple_keys": chunk}}),
        )
        .await;
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
    }
}

#[tokio::test]
async fn listing_returns_at_most_the_cap_and_says_it_is_truncated() {
    let install =
        install_with("list_objects_max_results = 10\nlist_users_max_results = 10\n").await;
    let server = install.serve().await;
    let admin = install.admin_token();
    many_tuples(&server, &admin, 25).await;

    let body = ok_json(
        post(
            &server,
            &admin,
            "/v1/rebac/list-objects",
            &json!({"type": "doc", "relation": "viewer", "user": "user:anne"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["objects"].as_array().unwrap().len(), 10, "{body}");
    assert_eq!(body["truncated"], true);
    let body = ok_json(
        post(
            &server,
            &admin,
            "/v1/rebac/list-objects",
            &json!({"type": "doc", "relation": "viewer", "user": "user:u3"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["objects"], json!(["doc:big"]));
    assert_eq!(body["truncated"], false);

    let body = ok_json(
        post(
            &server,
            &admin,
            "/v1/rebac/list-users",
            &json!({
                "object": {"type": "doc", "id": "big"},
                "relation": "viewer",
                "user_filters": [{"type": "user"}]
            }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["users"].as_array().unwrap().len(), 10, "{body}");
    assert_eq!(body["truncated"], true);
    let metrics = server.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "warden_rebac_list_truncated_total{query=\"list_objects\"} "
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn workload_api_calls_are_limited_per_unix_user() {
    let install = install_with("workload_calls_per_uid = { per_sec = 0.01, burst = 2 }\n").await;
    let _server = install.serve().await;
    let fetch = || {
        let mut cmd = warden();
        cmd.arg("svid")
            .arg("--socket")
            .arg(install.data_dir.join("workload.sock"))
            .args(["jwt", "--audience", "x"]);
        cmd
    };
    // No entry matches this process: the first calls are refused for that, then for the rate.
    for _ in 0..2 {
        let out = run(fetch()).await;
        assert!(!out.all().contains("rate_limited"), "{}", out.all());
    }
    let out = run(fetch()).await;
    assert!(
        out.all().contains("rate_limited"),
        "the third call is over the limit: {}",
        out.all()
    );
}

#[tokio::test]
async fn ended_rows_past_retention_are_deleted_by_the_sweeper_and_the_ledger_says_so() {
    let install = install_with("retention_days = 1\n").await;
    // Rows that ended two days ago, written before the server starts.
    {
        let store = store::SqliteStore::open(&install.data_dir.join("warden.db"))
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let ended = now - 2 * 86_400_000;
        use store::{BrokerStore as _, TaskStore as _};
        store
            .lease_insert(&store::LeaseRow {
                id: "oauth/token/lse_old".into(),
                agent: "spiffe://example.org/a".into(),
                subject: "spiffe://example.org/a".into(),
                task: None,
                engine: "oauth".into(),
                scope: "{}".into(),
                parent: None,
                handle: "jti-old".into(),
                issued_ms: ended - 1000,
                expires_ms: ended,
                max_expires_ms: ended,
                state: "expired".into(),
                revoke_reason: Some("expired".into()),
                revoked_ms: Some(ended),
                attempts: 0,
                next_attempt_ms: None,
                last_error: None,
                alerted: false,
            })
            .await
            .unwrap();
        store
            .task_insert(&store::TaskRow {
                id: "task_old".into(),
                kind: "patch_bug".into(),
                owner: "alice".into(),
                resources: "[]".into(),
                attributes: "{}".into(),
                deadline_ms: ended,
                state: "completed".into(),
                created_ms: ended - 1000,
                created_by: "token:admin".into(),
                ended_ms: Some(ended),
                end_reason: Some("done".into()),
                cleaned: true,
            })
            .await
            .unwrap();
        store.close().await;
    }
    let server = install.serve().await;
    let admin = install.admin_token();
    let mut purge = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while purge.is_none() && std::time::Instant::now() < deadline {
        purge = server
            .all_entries(&admin)
            .await
            .into_iter()
            .find(|e| e["event"]["action"] == "store.purge");
        if purge.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let purge = purge.expect("a store.purge entry");
    assert_eq!(purge["event"]["fields"]["leases"], 1, "{purge}");
    assert_eq!(purge["event"]["fields"]["tasks"], 1, "{purge}");
    let resp = server
        .http
        .get(server.at("/v1/tasks/task_old"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
