//! Two `warden serve` processes on one database (each with its own data directory holding
//! the same keys): what one changes, the other applies from the store's change feed — the
//! change itself, not a full reload. Seen through the other server's own behaviour (its
//! Workload API issues to an entry registered on the first, and stops issuing once the agent
//! is held or denied there) and through its `/metrics` (changes applied per kind, full
//! reloads unchanged since start), and for keys through its bundle. On SQLite (one database file shared by both) and, when
//! `WARDEN_TEST_DATABASE_URL` is set, PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::time::Duration;

use common::{Install, PgSchema, Server, post};
use serde_json::json;
use spiffe::WorkloadApiClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_server_is_applied_on_another_sqlite() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", shared.path().join("shared.db").display());
    two_servers(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_server_is_applied_on_another_postgres() {
    let Some(pg) = PgSchema::create("replicas").await else {
        return;
    };
    two_servers(pg.url()).await;
}

/// `warden_<name>{kind="<kind>"}` in `server`'s metrics (0 when absent).
async fn metric(server: &Server, name: &str, kind: &str) -> i64 {
    let text = server.get_text("/metrics").await;
    let prefix = format!("warden_{name}{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Waits (up to five seconds) until `server` has applied more than `before` changes of `kind`.
async fn applied_beyond(server: &Server, kind: &str, before: i64) -> i64 {
    for _ in 0..50 {
        let now = metric(server, "cache_changes_applied", kind).await;
        if now > before {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind} change applied on the second server within 5 s");
}

async fn two_servers(url: String) {
    let first = Install::with_database(Some(url.clone())).await;
    // The second replica: its own data directory with the first's keys, on the same database.
    let second = Install::empty_with(Some(url));
    std::fs::create_dir_all(&second.data_dir).unwrap();
    for file in ["ledger.key", "audit-hmac.key", "kek.key", "warden.toml"] {
        let from = first.data_dir.join(file);
        if from.exists() {
            std::fs::copy(&from, second.data_dir.join(file)).unwrap();
        }
    }
    std::fs::copy(&first.token_file, &second.token_file).unwrap();
    let a = first.serve().await;
    let b = second.serve().await;
    let admin = first.admin_token();

    // Each cache is read in full once, at start (the denylist's follower within its first
    // second).
    let kinds = ["entry", "hold", "deny", "risk", "task", "policy"];
    let mut reloads = Vec::new();
    for _ in 0..30 {
        reloads.clear();
        for kind in kinds {
            reloads.push(metric(&b, "cache_full_reloads", kind).await);
        }
        if reloads.iter().all(|&n| n == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloads.iter().all(|&n| n == 1), "{reloads:?}");

    // An entry registered on A: B's Workload API issues to it at once (B applies the entry
    // changes before matching a caller).
    let socket = second.data_dir.join("workload.sock");
    let client = WorkloadApiClient::connect_to(&format!("unix:{}", socket.display()))
        .await
        .unwrap();
    assert!(
        client.fetch_x509_svid().await.is_err(),
        "nothing registered yet"
    );
    let entries_before = metric(&b, "cache_changes_applied", "entry").await;
    let uid = common::own_uid();
    let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
    let agent = "spiffe://example.org/agent/replicated";
    let resp = post(
        &a,
        &admin,
        "/v1/entries",
        &json!({
            "spiffe_id": agent,
            "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
        }),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), agent);
    applied_beyond(&b, "entry", entries_before).await;

    // A hold placed on A: B stops issuing within a second or so.
    let holds_before = metric(&b, "cache_changes_applied", "hold").await;
    let resp = post(
        &a,
        &admin,
        "/v1/holds",
        &json!({"kind": "agent", "value": agent, "reason": "replica test"}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    applied_beyond(&b, "hold", holds_before).await;
    assert!(client.fetch_x509_svid().await.is_err(), "held on B too");
    let resp = a
        .http
        .delete(a.at(&format!("/v1/holds/agent/{}?reason=over", urlencode(agent))))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    applied_beyond(&b, "hold", holds_before + 1).await;
    client.fetch_x509_svid().await.unwrap();

    // A denylist entry added on A: B refuses the identity.
    let deny_before = metric(&b, "cache_changes_applied", "deny").await;
    let resp = post(
        &a,
        &admin,
        "/v1/denylist",
        &json!({"kind": "spiffe_id", "value": agent, "reason": "replica test"}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    applied_beyond(&b, "deny", deny_before).await;
    assert!(client.fetch_x509_svid().await.is_err(), "denied on B too");

    // A risk score set on A reaches B's decisions' context.
    let risk_before = metric(&b, "cache_changes_applied", "risk").await;
    let resp = post(
        &a,
        &admin,
        "/v1/risk",
        &json!({"agent": agent, "score": 0.9, "reason": "replica test"}),
    )
    .await;
    assert!(resp.status().is_success());
    applied_beyond(&b, "risk", risk_before).await;

    // A key rotation on A (a key prepared): B publishes it in its bundle, having seen the
    // key change in the feed (with nothing in the feed, B does not re-read its keys).
    let jwt_keys = |bundle: String| -> usize {
        let doc: serde_json::Value = serde_json::from_str(&bundle).unwrap();
        doc["keys"].as_array().unwrap().len()
    };
    let published = jwt_keys(b.get_text("/bundle").await);
    let resp = post(&a, &admin, "/v1/ca/rotate", &json!({})).await;
    assert!(resp.status().is_success());
    let mut seen = false;
    for _ in 0..50 {
        if jwt_keys(b.get_text("/bundle").await) > published {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "a key prepared on A not in B's bundle within 5 s");

    // None of it made B read anything in full again.
    for (kind, at_start) in kinds.iter().zip(&reloads) {
        assert_eq!(
            metric(&b, "cache_full_reloads", kind).await,
            *at_start,
            "{kind} was reloaded in full"
        );
    }
    b.stop().await;
    a.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
