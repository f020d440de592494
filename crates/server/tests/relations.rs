//! Relationship graphs follow the database: two "replicas" (two `Relations` over one store)
//! see each other's writes after a refresh, and a graph built incrementally from the change
//! feed always equals one loaded from scratch — on SQLite, and on PostgreSQL when
//! `WARDEN_TEST_DATABASE_URL` is set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::sync::Arc;

use rand::{Rng, SeedableRng, rngs::StdRng};
use server::Relations;
use store::{RebacModelRow, RebacTupleRow, RebacWrite, Store};

const MODEL: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type doc
  relations
    define viewer: [user, user:*, group#member]
";

/// A backend under test: its name, the store, the PostgreSQL schema to drop, and the
/// temporary directory an SQLite file lives in.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    pg: Option<(String, String)>,
    _tmp: tempfile::TempDir,
}

async fn stores(tag: &str) -> Vec<Backend> {
    let mut out = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = store::SqliteStore::open(&tmp.path().join("r.db"))
        .await
        .unwrap();
    out.push(Backend {
        name: "sqlite",
        store: Arc::new(sqlite),
        pg: None,
        _tmp: tmp,
    });
    match std::env::var("WARDEN_TEST_DATABASE_URL") {
        Ok(url) => {
            let schema = format!("warden_relations_{tag}_{}", std::process::id());
            let pg = store::PostgresStore::connect_with_schema(&url, &schema)
                .await
                .unwrap();
            out.push(Backend {
                name: "postgres",
                store: Arc::new(pg),
                pg: Some((url, schema)),
                _tmp: tempfile::tempdir().unwrap(),
            });
        }
        Err(_) => eprintln!(
            "skipped: WARDEN_TEST_DATABASE_URL is not set (the PostgreSQL half of this test)"
        ),
    }
    out
}

async fn push_model(store: &dyn Store) {
    store
        .rebac_model_append(&RebacModelRow {
            store: "default".into(),
            version: 0,
            model_id: rebac::Model::parse(MODEL).unwrap().id().to_owned(),
            dsl: MODEL.into(),
            created_unix_ms: 1,
            created_by: "test".into(),
        })
        .await
        .unwrap();
}

fn tuple(object: &str, relation: &str, subject: &str, expires: Option<i64>) -> RebacTupleRow {
    RebacTupleRow {
        object: object.into(),
        relation: relation.into(),
        subject: subject.into(),
        expires_at_ms: expires,
    }
}

fn check(relations: &Relations, user: &str, relation: &str, object: &str, now: i64) -> bool {
    relations
        .check(
            "default",
            &rebac::CheckRequest {
                user: rebac::User::parse(user).unwrap(),
                relation: relation.into(),
                object: rebac::ObjectRef::parse(object).unwrap(),
                contextual_tuples: Vec::new(),
                now_ms: now,
            },
        )
        .expect("store loaded")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_each_other_and_equal_a_fresh_load() {
    for Backend {
        name: backend,
        store,
        pg,
        _tmp,
    } in stores("follow").await
    {
        push_model(store.as_ref()).await;
        let (a, b) = (Relations::default(), Relations::default());
        a.refresh(store.as_ref()).await.unwrap();
        b.refresh(store.as_ref()).await.unwrap();

        // A write through one replica is invisible to the other until it refreshes.
        let now = 1_000;
        store
            .rebac_write(
                "default",
                &[
                    tuple("group:eng", "member", "user:anne", None),
                    tuple("doc:1", "viewer", "group:eng#member", None),
                ],
                &[],
                now,
                "a",
            )
            .await
            .unwrap();
        a.refresh(store.as_ref()).await.unwrap();
        assert!(check(&a, "user:anne", "viewer", "doc:1", now), "{backend}");
        assert!(!check(&b, "user:anne", "viewer", "doc:1", now), "{backend}");
        b.refresh(store.as_ref()).await.unwrap();
        assert!(check(&b, "user:anne", "viewer", "doc:1", now), "{backend}");

        // Random writes and deletes (some expiring), refreshing the replicas at random points:
        // both always end equal to the database, and to a graph loaded from scratch.
        let mut rng = StdRng::seed_from_u64(5);
        let mut present: Vec<RebacTupleRow> = Vec::new();
        for round in 0..60 {
            let mut writes = Vec::new();
            let mut deletes = Vec::new();
            for _ in 0..rng.gen_range(1..6) {
                if !present.is_empty() && rng.gen_bool(0.35) {
                    let i = rng.gen_range(0..present.len());
                    let t = present.swap_remove(i);
                    if !deletes.contains(&t) {
                        deletes.push(t);
                    }
                } else {
                    let t = tuple(
                        &format!("doc:{}", rng.gen_range(0..20)),
                        "viewer",
                        &format!("user:u{}", rng.gen_range(0..30)),
                        rng.gen_bool(0.2).then_some(10_000_000),
                    );
                    let key = |r: &RebacTupleRow| (r.object.clone(), r.subject.clone());
                    if !present.iter().any(|p| key(p) == key(&t))
                        && !writes.iter().any(|p: &RebacTupleRow| key(p) == key(&t))
                        && !deletes.iter().any(|p: &RebacTupleRow| key(p) == key(&t))
                    {
                        writes.push(t);
                    }
                }
            }
            if writes.is_empty() && deletes.is_empty() {
                continue;
            }
            let outcome = store
                .rebac_write("default", &writes, &deletes, now, "r")
                .await
                .unwrap();
            assert!(
                matches!(outcome, RebacWrite::Written { .. }),
                "{backend} round {round}: {outcome:?}"
            );
            present.extend(writes);
            if rng.gen_bool(0.3) {
                a.refresh(store.as_ref()).await.unwrap();
            }
            if rng.gen_bool(0.3) {
                b.refresh(store.as_ref()).await.unwrap();
            }
        }
        a.refresh(store.as_ref()).await.unwrap();
        b.refresh(store.as_ref()).await.unwrap();
        let fresh = Relations::default();
        fresh.refresh(store.as_ref()).await.unwrap();
        let (ta, ra) = a.tuples("default").unwrap();
        let (tb, rb) = b.tuples("default").unwrap();
        let (tf, rf) = fresh.tuples("default").unwrap();
        assert_eq!(ra, rb, "{backend}");
        assert_eq!(ra, rf, "{backend}");
        assert_eq!(
            ta, tf,
            "{backend}: followed graph differs from a fresh load"
        );
        assert_eq!(tb, tf, "{backend}");
        // And both equal what the test believes is present (plus the two first tuples).
        assert_eq!(tf.len(), present.len() + 2, "{backend}");

        if let Some((url, schema)) = pg {
            store::PostgresStore::drop_schema(&url, &schema)
                .await
                .unwrap();
        }
    }
}

/// A replica catching up reads the change feed in pages of 10,000; a revision that straddles
/// a page boundary, or is larger than a page, must still be applied whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_applies_revisions_whole_across_pages() {
    for Backend {
        name: backend,
        store,
        pg,
        _tmp,
    } in stores("pages").await
    {
        push_model(store.as_ref()).await;
        let follower = Relations::default();
        follower.refresh(store.as_ref()).await.unwrap();
        let rows = |from: usize, n: usize| -> Vec<RebacTupleRow> {
            (from..from + n)
                .map(|i| tuple(&format!("doc:{i}"), "viewer", "user:anne", None))
                .collect()
        };
        // Revision 1 fills all but one row of the first page; revision 2 straddles it;
        // revision 3 alone is larger than a page.
        for (from, n) in [(0, 9_999), (9_999, 5), (10_004, 10_003)] {
            let outcome = store
                .rebac_write("default", &rows(from, n), &[], 1, "bulk")
                .await
                .unwrap();
            assert!(matches!(outcome, RebacWrite::Written { .. }), "{backend}");
        }
        follower.refresh(store.as_ref()).await.unwrap();
        let (tuples, revision) = follower.tuples("default").unwrap();
        assert_eq!(revision, 3, "{backend}");
        assert_eq!(tuples.len(), 20_007, "{backend}");
        assert!(
            check(&follower, "user:anne", "viewer", "doc:10003", 2),
            "{backend}"
        );
        assert!(
            check(&follower, "user:anne", "viewer", "doc:20006", 2),
            "{backend}"
        );
        if let Some((url, schema)) = pg {
            store::PostgresStore::drop_schema(&url, &schema)
                .await
                .unwrap();
        }
    }
}

/// Expired tuples are purged from the database and from the purging server's graph; a tuple
/// renewed meanwhile stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tuples_are_purged_from_database_and_graph() {
    for Backend {
        name: backend,
        store,
        pg,
        _tmp,
    } in stores("purge").await
    {
        push_model(store.as_ref()).await;
        let relations = Relations::default();
        store
            .rebac_write(
                "default",
                &[
                    tuple("doc:1", "viewer", "user:anne", Some(5_000)),
                    tuple("doc:2", "viewer", "user:anne", Some(9_000)),
                    tuple("doc:3", "viewer", "user:anne", None),
                ],
                &[],
                1,
                "t",
            )
            .await
            .unwrap();
        relations.refresh(store.as_ref()).await.unwrap();
        assert_eq!(
            relations
                .purge_expired(store.as_ref(), 4_999)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            relations
                .purge_expired(store.as_ref(), 6_000)
                .await
                .unwrap(),
            1
        );
        let (tuples, _) = relations.tuples("default").unwrap();
        let objects: Vec<String> = tuples.iter().map(|t| t.key.object().to_string()).collect();
        assert_eq!(objects, ["doc:2", "doc:3"], "{backend}");
        let (sink, _chunks) = tokio::sync::mpsc::channel(10);
        let stored = store.rebac_tuples_scan("default", 10, sink).await.unwrap();
        assert_eq!(stored, 2, "{backend}");
        assert!(
            check(&relations, "user:anne", "viewer", "doc:2", 6_000),
            "{backend}"
        );
        if let Some((url, schema)) = pg {
            store::PostgresStore::drop_schema(&url, &schema)
                .await
                .unwrap();
        }
    }
}
