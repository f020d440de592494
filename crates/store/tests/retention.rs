//! Retention: ended leases, tasks, grants and grant requests older than the cut-off are
//! deleted; everything live, pending or recent stays. On SQLite, and on PostgreSQL when
//! `WARDEN_TEST_DATABASE_URL` is set (each run in a fresh schema, dropped afterwards).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;

use store::{
    GrantRequestRow, GrantRow, LeaseFilter, LeaseRow, PostgresStore, Store, StoreUrl, TaskAgentRow,
    TaskPurge, TaskRow,
};

const PG_ENV: &str = "WARDEN_TEST_DATABASE_URL";
/// The cut-off: rows that ended before it go.
const CUT: i64 = 1_000_000;
const OLD: i64 = CUT - 10;
const RECENT: i64 = CUT + 10;

fn lease(id: &str, state: &str, revoked_ms: Option<i64>) -> LeaseRow {
    LeaseRow {
        id: id.to_owned(),
        agent: "spiffe://t/a".to_owned(),
        subject: "spiffe://t/a".to_owned(),
        task: None,
        engine: "oauth".to_owned(),
        scope: "{}".to_owned(),
        parent: None,
        handle: format!("h-{id}"),
        issued_ms: 1,
        expires_ms: OLD,
        max_expires_ms: OLD,
        state: state.to_owned(),
        revoke_reason: revoked_ms.map(|_| "test".to_owned()),
        revoked_ms,
        attempts: 0,
        next_attempt_ms: None,
        last_error: None,
        alerted: false,
    }
}

fn task(id: &str, state: &str, ended_ms: Option<i64>, cleaned: bool) -> TaskRow {
    TaskRow {
        id: id.into(),
        kind: "patch_bug".into(),
        owner: "alice@example.org".into(),
        resources: "[\"repository:warden\"]".into(),
        attributes: "{}".into(),
        deadline_ms: OLD,
        state: state.into(),
        created_ms: 1,
        created_by: "token:admin".into(),
        ended_ms,
        end_reason: ended_ms.map(|_| "done".into()),
        cleaned,
    }
}

fn grant(id: &str, task: &str, state: &str, ended_ms: Option<i64>) -> GrantRow {
    GrantRow {
        id: id.into(),
        task: task.into(),
        agent: "spiffe://t/a".into(),
        resource: "repository:warden".into(),
        permission: "writer".into(),
        expires_ms: OLD,
        state: state.into(),
        source: "assignment".into(),
        created_ms: 1,
        created_by: "x".into(),
        ended_ms,
    }
}

fn request(id: &str, task: &str, state: &str, decided_ms: Option<i64>) -> GrantRequestRow {
    GrantRequestRow {
        id: id.into(),
        task: task.into(),
        agent: "spiffe://t/a".into(),
        resource: "repository:docs".into(),
        permission: "writer".into(),
        reason: "why".into(),
        ttl_s: 60,
        state: state.into(),
        decision_id: "dec_1".into(),
        created_ms: 1,
        expires_ms: OLD,
        decided_by: decided_ms.map(|_| "bob".into()),
        decided_ms,
        decision_reason: None,
        grant_id: None,
    }
}

async fn retention(store: Arc<dyn Store>) {
    for l in [
        lease("oauth/t/old-revoked", "revoked", Some(OLD)),
        lease("oauth/t/old-expired", "expired", Some(OLD)),
        lease("oauth/t/recent", "revoked", Some(RECENT)),
        lease("oauth/t/active", "active", None),
        lease("db/r/revoking", "revoking", Some(OLD)),
    ] {
        store.lease_insert(&l).await.unwrap();
    }
    // T-old: ended long ago, cleaned, its grant and request over: goes, with its agents.
    // T-busy: ended long ago but a grant of it is still active: stays.
    // T-recent: ended recently; T-open: open; T-uncleaned: not cleaned up yet.
    for t in [
        task("T-old", "completed", Some(OLD), true),
        task("T-busy", "completed", Some(OLD), true),
        task("T-recent", "completed", Some(RECENT), true),
        task("T-open", "open", None, false),
        task("T-uncleaned", "cancelled", Some(OLD), false),
    ] {
        assert!(store.task_insert(&t).await.unwrap());
    }
    store
        .task_agent_put(&TaskAgentRow {
            task: "T-old".into(),
            agent: "spiffe://t/a".into(),
            role: "coder".into(),
            assigned_ms: 1,
            assigned_by: "x".into(),
        })
        .await
        .unwrap();
    for g in [
        grant("g-old", "T-old", "ended", Some(OLD)),
        grant("g-recent", "T-recent", "ended", Some(RECENT)),
        grant("g-active", "T-busy", "active", None),
    ] {
        store.grant_insert(&g).await.unwrap();
    }
    for r in [
        request("r-old", "T-old", "denied", Some(OLD)),
        request("r-expired", "T-old", "expired", None),
        request("r-pending", "T-open", "pending", None),
        request("r-recent", "T-recent", "approved", Some(RECENT)),
    ] {
        store.request_insert(&r).await.unwrap();
    }

    assert_eq!(store.lease_purge_ended(CUT, 1000).await.unwrap(), 2);
    let mut left: Vec<String> = store
        .lease_list(&LeaseFilter {
            limit: 1000,
            ..LeaseFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["db/r/revoking", "oauth/t/active", "oauth/t/recent"],
        "only ended leases past the cut-off go"
    );

    let purged = store.task_purge_ended(CUT, 1000).await.unwrap();
    assert_eq!(
        purged,
        TaskPurge {
            tasks: 1,
            grants: 1,
            requests: 2
        }
    );
    assert!(store.task_get("T-old").await.unwrap().is_none());
    assert!(store.task_agents("T-old").await.unwrap().is_empty());
    for kept in ["T-busy", "T-recent", "T-open", "T-uncleaned"] {
        assert!(store.task_get(kept).await.unwrap().is_some(), "{kept}");
    }
    let grants: Vec<String> = store
        .grant_list(None, None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(store.request_get("r-pending").await.unwrap().is_some());
    assert!(store.request_get("r-recent").await.unwrap().is_some());
    assert!(store.request_get("r-old").await.unwrap().is_none());

    // Nothing more to do; a small limit deletes in batches.
    assert_eq!(
        store.task_purge_ended(CUT, 1000).await.unwrap(),
        TaskPurge::default()
    );
    assert_eq!(store.lease_purge_ended(i64::MAX, 1).await.unwrap(), 1);
    assert_eq!(store.lease_purge_ended(i64::MAX, 1).await.unwrap(), 0);
}

#[tokio::test]
async fn sqlite_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&StoreUrl::Sqlite(dir.path().join("warden.db")))
        .await
        .unwrap();
    retention(store).await;
}

#[tokio::test]
async fn postgres_retention() {
    let Ok(url) = std::env::var(PG_ENV) else {
        eprintln!("skipped: {PG_ENV} is not set (PostgreSQL retention test not run)");
        return;
    };
    let schema = format!("warden_retention_{}", uuid::Uuid::new_v4().simple());
    let store = PostgresStore::connect_with_schema(&url, &schema)
        .await
        .unwrap();
    retention(Arc::new(store)).await;
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap();
}
