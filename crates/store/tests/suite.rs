//! One behavioural test suite, run against both backends.
//!
//! SQLite runs in a temporary directory. PostgreSQL runs only when `WARDEN_TEST_DATABASE_URL`
//! is set, each test in a fresh schema (dropped again when the test passes).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::{path::PathBuf, sync::Arc};

use store::{
    ApiTokenRow, Backend, ChangeKind, ChangeOp, CheckpointRow, DbConnectionRow, DbRoleRow, DenyRow,
    EntryInsert, EntryRow, FederationRow, GrantRequestRow, GrantRow, HoldRow, JoinConsume,
    JoinTokenRow, KeyActivate, LeaseFilter, LeaseRow, LeaseSelector, LedgerRow, PolicyVersionRow,
    PostgresStore, RebacModelRow, RebacTupleRow, RebacWrite, RiskRow, SecretRow, SigningKeyRow,
    SqliteStore, Store, StoreError, StoreUrl, TaskAgentRow, TaskRow, TokenRevoke,
};
use tokio::sync::Barrier;

const PG_ENV: &str = "WARDEN_TEST_DATABASE_URL";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

enum Location {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

/// A store under test plus enough to reopen it.
struct Ctx {
    store: Arc<dyn Store>,
    location: Location,
}

impl Ctx {
    async fn sqlite() -> Ctx {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.db");
        let store = store::open(&StoreUrl::Sqlite(path.clone())).await.unwrap();
        Ctx {
            store,
            location: Location::Sqlite { _dir: dir, path },
        }
    }

    /// `None` (after printing the skip line) when PostgreSQL is not configured.
    async fn postgres() -> Option<Ctx> {
        let Ok(url) = std::env::var(PG_ENV) else {
            // Written past the test harness's output capture, once per test binary, so a
            // plain `cargo test` shows that this suite did not run.
            static SKIP_NOTICE: std::sync::Once = std::sync::Once::new();
            SKIP_NOTICE.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: {PG_ENV} is not set (PostgreSQL suite not run)"
                );
            });
            return None;
        };
        let schema = format!("warden_test_{}", uuid::Uuid::new_v4().simple());
        let store = PostgresStore::connect_with_schema(&url, &schema)
            .await
            .unwrap();
        Some(Ctx {
            store: Arc::new(store),
            location: Location::Postgres { url, schema },
        })
    }

    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Drops the store and opens the same database again (re-running migrations).
    async fn reopen(&mut self) {
        let fresh: Arc<dyn Store> = match &self.location {
            Location::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).await.unwrap()),
            Location::Postgres { url, schema } => Arc::new(
                PostgresStore::connect_with_schema(url, schema)
                    .await
                    .unwrap(),
            ),
        };
        self.store = fresh;
    }

    async fn cleanup(self) {
        let Ctx { store, location } = self;
        drop(store);
        if let Location::Postgres { url, schema } = location {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// Generates `sqlite::<name>` and `postgres::<name>` for every test function. Functions in
/// `store` take `Arc<dyn Store>`; functions in `ctx` take `&mut Ctx` (they need to reopen).
macro_rules! suite {
    (store: [$($s:ident),* $(,)?], ctx: [$($c:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $s() {
                    let ctx = super::Ctx::sqlite().await;
                    super::$s(ctx.store()).await;
                    ctx.cleanup().await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $c() {
                    let mut ctx = super::Ctx::sqlite().await;
                    super::$c(&mut ctx).await;
                    ctx.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $s() {
                    let Some(ctx) = super::Ctx::postgres().await else { return };
                    super::$s(ctx.store()).await;
                    ctx.cleanup().await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $c() {
                    let Some(mut ctx) = super::Ctx::postgres().await else { return };
                    super::$c(&mut ctx).await;
                    ctx.cleanup().await;
                }
            )*
        }
    };
}

suite! {
    store: [
        backend_and_ping,
        empty_store,
        append_round_trip,
        append_empty_is_noop,
        append_wrong_expected_size_conflicts,
        append_misnumbered_batch_is_rejected,
        concurrent_appenders_one_wins,
        large_batch,
        u64_range_errors,
        checkpoint_idempotent_conflict_latest,
        tokens,
        token_duplicates_conflict,
        token_revoke_keeps_the_last_of_a_role,
        concurrent_revocations_keep_one_admin,
        entries_round_trip_and_uniqueness,
        entry_insert_many_is_idempotent_and_all_or_nothing,
        signing_keys_round_trip,
        signing_key_rotation,
        federations_round_trip,
        policy_versions_append_only,
        rebac_models_versioned,
        rebac_write_is_atomic_and_fed,
        rebac_expiry_and_scan,
        rebac_concurrent_writers_get_distinct_revisions,
        join_tokens_are_one_time,
        denylist_round_trip,
        meta_set_if_absent,
        leases_lifecycle,
        leases_bulk_revoke_and_sweeper_claims,
        holds_connections_roles_secrets,
        tasks_grants_requests_risk,
        ledger_append_with_leases_is_one_transaction,
        unsynced_appends_are_visible_conflict_alike_and_sync,
        change_feed_names_every_cached_write,
        change_feed_prunes_below_a_floor,
        change_feed_revisions_are_visible_in_order,
    ],
    ctx: [durable_reopen],
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn hash(seed: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
    }
    h[..8].copy_from_slice(&seed.to_be_bytes());
    h
}

fn row(seq: u64) -> LedgerRow {
    LedgerRow {
        seq,
        leaf_hash: hash(seq),
        leaf: format!("leaf-{seq}-\u{1F512}").into_bytes(),
        time_unix_ms: 1_700_000_000_000 + (seq % 1_000_000) as i64,
        actor: format!("user{}", seq % 3),
        action: if seq % 2 == 0 {
            "secret.read"
        } else {
            "secret.write"
        }
        .to_owned(),
    }
}

fn rows(from: u64, n: u64) -> Vec<LedgerRow> {
    (from..from + n).map(row).collect()
}

fn token(n: u8) -> ApiTokenRow {
    ApiTokenRow {
        id: format!("tok_{n}"),
        name: format!("token {n}"),
        role: "auditor".to_owned(),
        token_hash: [n; 32],
        created_unix_ms: 1_000 + i64::from(n),
        revoked_unix_ms: None,
    }
}

fn checkpoint(tree_size: u64, root: u8, note: &str) -> CheckpointRow {
    CheckpointRow {
        tree_size,
        root: [root; 32],
        note: note.to_owned(),
        created_unix_ms: 42,
    }
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

// ---------------------------------------------------------------------------------------------
// Behaviours
// ---------------------------------------------------------------------------------------------

async fn backend_and_ping(store: Arc<dyn Store>) {
    assert!(matches!(
        store.backend(),
        Backend::Sqlite | Backend::Postgres
    ));
    store.ping().await.unwrap();
}

async fn empty_store(store: Arc<dyn Store>) {
    assert_eq!(store.ledger_size().await.unwrap(), 0);
    assert!(store.ledger_entries(0, 100).await.unwrap().is_empty());
    assert!(store.ledger_leaf_hashes(0, 100).await.unwrap().is_empty());
    assert!(store.checkpoint_latest().await.unwrap().is_none());
    assert!(store.token_list().await.unwrap().is_empty());
    assert!(store.token_by_hash(&[0; 32]).await.unwrap().is_none());
    assert!(store.meta_get("k").await.unwrap().is_none());
}

async fn append_round_trip(store: Arc<dyn Store>) {
    let first = rows(0, 10);
    store.ledger_append(0, &first).await.unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 10);
    let second = rows(10, 5);
    store.ledger_append(10, &second).await.unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 15);

    let all = store.ledger_entries(0, 1000).await.unwrap();
    assert_eq!(all, rows(0, 15));

    // Sub-ranges are [from, from + limit), ascending.
    assert_eq!(store.ledger_entries(3, 4).await.unwrap(), rows(3, 4));
    assert_eq!(store.ledger_entries(12, 100).await.unwrap(), rows(12, 3));
    assert!(store.ledger_entries(15, 10).await.unwrap().is_empty());
    assert!(store.ledger_entries(0, 0).await.unwrap().is_empty());

    let hashes = store.ledger_leaf_hashes(5, 7).await.unwrap();
    assert_eq!(hashes, (5..12).map(hash).collect::<Vec<_>>());
}

async fn append_empty_is_noop(store: Arc<dyn Store>) {
    store.ledger_append(0, &[]).await.unwrap();
    // Even with a "wrong" expected size: nothing to write, nothing to check.
    store.ledger_append(7, &[]).await.unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 0);
}

async fn append_wrong_expected_size_conflicts(store: Arc<dyn Store>) {
    store.ledger_append(0, &rows(0, 3)).await.unwrap();

    // Stale writer: believes the ledger is still empty.
    let r = store.ledger_append(0, &rows(0, 2)).await;
    assert!(is_conflict(&r), "{r:?}");
    // Writer from the future: thinks there are more rows than there are.
    let r = store.ledger_append(5, &rows(5, 2)).await;
    assert!(is_conflict(&r), "{r:?}");

    // Nothing was written by the failed attempts.
    assert_eq!(store.ledger_size().await.unwrap(), 3);
    assert_eq!(store.ledger_entries(0, 100).await.unwrap(), rows(0, 3));
    // And the store still accepts the right append.
    store.ledger_append(3, &rows(3, 1)).await.unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 4);
}

/// Documented choice: a batch whose `seq`s are not `expected_size + i` is a caller bug and is
/// rejected with `StoreError::Database` (not `Conflict`), writing nothing.
async fn append_misnumbered_batch_is_rejected(store: Arc<dyn Store>) {
    let mut batch = rows(0, 3);
    batch[2].seq = 7;
    let r = store.ledger_append(0, &batch).await;
    assert!(matches!(r, Err(StoreError::Database(_))), "{r:?}");

    let r = store.ledger_append(0, &rows(1, 2)).await;
    assert!(matches!(r, Err(StoreError::Database(_))), "{r:?}");

    assert_eq!(store.ledger_size().await.unwrap(), 0);
}

async fn concurrent_appenders_one_wins(store: Arc<dyn Store>) {
    const WRITERS: usize = 4;
    const ROUNDS: u64 = 10;
    const BATCH: u64 = 20;
    for round in 0..ROUNDS {
        let expected = round * BATCH;
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                let mut batch = rows(expected, BATCH);
                // Each writer's rows differ, so we can tell whose batch landed.
                for r in &mut batch {
                    r.actor = format!("writer{w}");
                }
                barrier.wait().await;
                (w, store.ledger_append(expected, &batch).await)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (w, r) = t.await.unwrap();
            match r {
                Ok(()) => winners.push(w),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("writer {w} failed with a non-conflict error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let got = store.ledger_entries(expected, BATCH as u32).await.unwrap();
        let actor = format!("writer{}", winners[0]);
        assert!(
            got.iter().all(|r| r.actor == actor),
            "round {round}: mixed batches"
        );
    }
    // Gapless: seq 0..n with no holes or duplicates.
    let n = ROUNDS * BATCH;
    assert_eq!(store.ledger_size().await.unwrap(), n);
    let seqs: Vec<u64> = store
        .ledger_entries(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>());
}

async fn large_batch(store: Arc<dyn Store>) {
    // Spans several INSERT chunks, including a partial last one.
    let batch = rows(0, 5_001);
    store.ledger_append(0, &batch).await.unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 5_001);
    assert_eq!(store.ledger_entries(0, 6_000).await.unwrap(), batch);
    let hashes = store.ledger_leaf_hashes(4_990, 100).await.unwrap();
    assert_eq!(hashes, (4_990..5_001).map(hash).collect::<Vec<_>>());
}

async fn u64_range_errors(store: Arc<dyn Store>) {
    let big = u64::MAX;
    let over = i64::MAX as u64 + 1;

    assert!(store.ledger_entries(big, 10).await.is_err());
    assert!(store.ledger_entries(over, 1).await.is_err());
    assert!(store.ledger_leaf_hashes(big, 10).await.is_err());
    // The largest representable start is fine (and empty); the end clamps rather than wraps.
    assert!(
        store
            .ledger_entries(i64::MAX as u64, u32::MAX)
            .await
            .unwrap()
            .is_empty()
    );

    let r = store.ledger_append(over, &rows(over, 1)).await;
    assert!(r.is_err(), "{r:?}");
    let r = store.ledger_append(big, &[row(big)]).await;
    assert!(r.is_err(), "{r:?}");
    // seq = i64::MAX would make the ledger size overflow i64.
    let max = i64::MAX as u64;
    let r = store.ledger_append(max, &[row(max)]).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(store.ledger_size().await.unwrap(), 0);

    assert!(
        store
            .checkpoint_insert(&checkpoint(big, 1, "n"))
            .await
            .is_err()
    );
    assert!(
        store
            .checkpoint_insert(&checkpoint(over, 1, "n"))
            .await
            .is_err()
    );
    assert!(store.checkpoint_latest().await.unwrap().is_none());
    // The largest representable tree size round-trips.
    store
        .checkpoint_insert(&checkpoint(max, 1, "n"))
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint_latest().await.unwrap().unwrap().tree_size,
        max
    );
}

async fn checkpoint_idempotent_conflict_latest(store: Arc<dyn Store>) {
    let a = checkpoint(10, 0xAA, "note a");
    store.checkpoint_insert(&a).await.unwrap();
    assert_eq!(store.checkpoint_latest().await.unwrap(), Some(a.clone()));

    // Same size, same root: succeeds and keeps the original note.
    let again = checkpoint(10, 0xAA, "a different note");
    store.checkpoint_insert(&again).await.unwrap();
    assert_eq!(store.checkpoint_latest().await.unwrap(), Some(a.clone()));

    // Same size, different root: conflict.
    let r = store.checkpoint_insert(&checkpoint(10, 0xBB, "evil")).await;
    assert!(is_conflict(&r), "{r:?}");
    assert_eq!(store.checkpoint_latest().await.unwrap(), Some(a.clone()));

    // Latest is the largest tree size, not the last inserted.
    let big = checkpoint(100, 0xCC, "note big");
    store.checkpoint_insert(&big).await.unwrap();
    store
        .checkpoint_insert(&checkpoint(50, 0xDD, "note mid"))
        .await
        .unwrap();
    assert_eq!(store.checkpoint_latest().await.unwrap(), Some(big));
}

async fn tokens(store: Arc<dyn Store>) {
    let t1 = token(1);
    let t2 = token(2);
    // Insert out of order: listing is oldest first.
    store.token_insert(&t2).await.unwrap();
    store.token_insert(&t1).await.unwrap();
    assert_eq!(
        store.token_list().await.unwrap(),
        vec![t1.clone(), t2.clone()]
    );

    assert_eq!(
        store.token_by_hash(&t1.token_hash).await.unwrap(),
        Some(t1.clone())
    );
    assert_eq!(store.token_by_hash(&[9; 32]).await.unwrap(), None);

    // Revoke once: changes the row; twice: no-op; unknown id: no-op.
    assert_eq!(
        store.token_revoke(&t1.id, 5_000, "admin").await.unwrap(),
        TokenRevoke::Revoked
    );
    assert_eq!(
        store.token_revoke(&t1.id, 6_000, "admin").await.unwrap(),
        TokenRevoke::NotFound
    );
    assert_eq!(
        store
            .token_revoke("tok_missing", 6_000, "admin")
            .await
            .unwrap(),
        TokenRevoke::NotFound
    );

    // Revoked tokens are still found by hash, with the first revocation time.
    let got = store.token_by_hash(&t1.token_hash).await.unwrap().unwrap();
    assert_eq!(got.revoked_unix_ms, Some(5_000));
    let listed = store.token_list().await.unwrap();
    assert_eq!(listed[0].revoked_unix_ms, Some(5_000));
    assert_eq!(listed[1], t2);
}

fn admin(n: u8) -> ApiTokenRow {
    ApiTokenRow {
        role: "admin".to_owned(),
        ..token(n)
    }
}

async fn token_revoke_keeps_the_last_of_a_role(store: Arc<dyn Store>) {
    for row in [admin(1), admin(2), token(3)] {
        store.token_insert(&row).await.unwrap();
    }
    let revoke = |id: &'static str| {
        let store = Arc::clone(&store);
        async move { store.token_revoke(id, 9_000, "admin").await.unwrap() }
    };
    assert_eq!(revoke("tok_1").await, TokenRevoke::Revoked);
    assert_eq!(revoke("tok_2").await, TokenRevoke::LastOfRole);
    // Other roles are not protected.
    assert_eq!(revoke("tok_3").await, TokenRevoke::Revoked);
    let active: Vec<String> = store
        .token_list()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.revoked_unix_ms.is_none())
        .map(|t| t.id)
        .collect();
    assert_eq!(active, vec!["tok_2".to_owned()]);
}

/// Admins revoking each other at the same moment never leave zero admins.
async fn concurrent_revocations_keep_one_admin(store: Arc<dyn Store>) {
    for n in 1..=6 {
        store.token_insert(&admin(n)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for n in 1..=6u8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .token_revoke(&format!("tok_{n}"), 9_000, "admin")
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let revoked = outcomes
        .iter()
        .filter(|o| **o == TokenRevoke::Revoked)
        .count();
    assert_eq!(revoked, 5, "{outcomes:?}");
    let active = store
        .token_list()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.revoked_unix_ms.is_none())
        .count();
    assert_eq!(active, 1);
}

fn entry(n: u8, selectors: &str) -> EntryRow {
    EntryRow {
        id: format!("ent_{n}"),
        spiffe_id: format!("spiffe://example.org/agent/{n}"),
        selectors: selectors.to_owned(),
        x509_ttl_secs: Some(3600),
        jwt_ttl_secs: None,
        agent_kind: Some("coder".into()),
        owner: None,
        description: Some("ünïcode ✓".into()),
        created_unix_ms: 1_000 + i64::from(n),
    }
}

async fn entries_round_trip_and_uniqueness(store: Arc<dyn Store>) {
    assert!(store.entry_list().await.unwrap().is_empty());
    let a = entry(1, "unix:uid:1000");
    let b = entry(2, "unix:gid:5\nunix:uid:1000");
    store.entry_insert(&b).await.unwrap();
    store.entry_insert(&a).await.unwrap();
    assert_eq!(
        store.entry_list().await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(store.entry_get("ent_2").await.unwrap(), Some(b.clone()));
    assert_eq!(store.entry_get("ent_9").await.unwrap(), None);

    // Same id, or same SPIFFE ID with the same selectors: conflict, nothing written.
    let same_id = EntryRow {
        spiffe_id: "spiffe://example.org/x".into(),
        ..a.clone()
    };
    assert!(is_conflict(&store.entry_insert(&same_id).await));
    let same_binding = EntryRow {
        id: "ent_3".into(),
        ..a.clone()
    };
    assert!(is_conflict(&store.entry_insert(&same_binding).await));
    // Same SPIFFE ID with other selectors is a different entry.
    let other = EntryRow {
        id: "ent_4".into(),
        selectors: "unix:uid:1001".into(),
        created_unix_ms: 1_004,
        ..a.clone()
    };
    store.entry_insert(&other).await.unwrap();
    assert_eq!(store.entry_list().await.unwrap().len(), 3);

    assert!(store.entry_delete("ent_1").await.unwrap());
    assert!(!store.entry_delete("ent_1").await.unwrap());
    assert_eq!(store.entry_get("ent_1").await.unwrap(), None);
    assert_eq!(store.entry_list().await.unwrap(), vec![b, other]);
}

async fn entry_insert_many_is_idempotent_and_all_or_nothing(store: Arc<dyn Store>) {
    let a = entry(1, "unix:uid:1000");
    store.entry_insert(&a).await.unwrap();
    // A batch: one new row, one equal to `a` (another id and time), one new row repeated.
    let b = entry(2, "unix:uid:1001");
    let a_again = EntryRow {
        id: "ent_10".into(),
        created_unix_ms: 9_999,
        ..a.clone()
    };
    let c = entry(3, "unix:gid:7");
    let c_again = EntryRow {
        id: "ent_11".into(),
        ..c.clone()
    };
    let done = store
        .entry_insert_many(&[b.clone(), a_again.clone(), c.clone(), c_again.clone()])
        .await
        .unwrap();
    assert_eq!(
        done,
        vec![
            EntryInsert::Created("ent_2".into()),
            EntryInsert::Existing("ent_1".into()),
            EntryInsert::Created("ent_3".into()),
            EntryInsert::Existing("ent_3".into()),
        ]
    );
    assert_eq!(
        store.entry_list().await.unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );

    // The same batch again creates nothing.
    let again = store
        .entry_insert_many(&[b.clone(), a_again, c, c_again])
        .await
        .unwrap();
    assert!(again.iter().all(|r| matches!(r, EntryInsert::Existing(_))));
    assert_eq!(store.entry_list().await.unwrap().len(), 3);

    // A row with `a`'s SPIFFE ID and selectors but another owner refuses the whole batch,
    // naming its index; the new row before it is not written either.
    let d = entry(4, "unix:uid:1004");
    let a_changed = EntryRow {
        id: "ent_12".into(),
        owner: Some("team-b".into()),
        ..a.clone()
    };
    let err = store
        .entry_insert_many(&[d.clone(), a_changed])
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict(m) => {
            assert!(m.starts_with("entry 1:"), "{m}");
            assert!(m.contains("ent_1"), "{m}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.entry_get("ent_4").await.unwrap(), None);
    // Two rows of one batch that disagree conflict too.
    let d_changed = EntryRow {
        id: "ent_13".into(),
        jwt_ttl_secs: Some(600),
        ..d.clone()
    };
    let err = store
        .entry_insert_many(&[d.clone(), d_changed])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.starts_with("entry 1:")),
        "{err:?}"
    );
    assert_eq!(store.entry_get("ent_4").await.unwrap(), None);
    // A taken id is a conflict naming the row.
    let taken = EntryRow {
        id: "ent_2".into(),
        ..d.clone()
    };
    let err = store.entry_insert_many(&[taken]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.starts_with("entry 0:")),
        "{err:?}"
    );
    assert_eq!(
        store.entry_list().await.unwrap(),
        vec![a, b, entry(3, "unix:gid:7")]
    );

    // An empty batch is nothing; a large one lands whole.
    assert!(store.entry_insert_many(&[]).await.unwrap().is_empty());
    let many: Vec<EntryRow> = (0..2_000u32)
        .map(|n| EntryRow {
            id: format!("ent_bulk_{n}"),
            spiffe_id: format!("spiffe://example.org/bulk/{n}"),
            selectors: format!("unix:uid:{n}"),
            ..entry(5, "")
        })
        .collect();
    let done = store.entry_insert_many(&many).await.unwrap();
    assert_eq!(done.len(), 2_000);
    assert!(done.iter().all(|r| matches!(r, EntryInsert::Created(_))));
    assert_eq!(store.entry_list().await.unwrap().len(), 2_003);
}

async fn signing_keys_round_trip(store: Arc<dyn Store>) {
    let ca = SigningKeyRow {
        id: "key_1".into(),
        kind: "x509-ca".into(),
        state: "active".into(),
        cert_der: Some(vec![0x30, 0x82, 0, 1]),
        key_sealed: vec![9; 80],
        created_unix_ms: 10,
        not_after_unix_ms: Some(99),
        activated_unix_ms: Some(10),
        retired_unix_ms: None,
        revoked_unix_ms: None,
    };
    let jwt = SigningKeyRow {
        id: "key_2".into(),
        kind: "jwt".into(),
        cert_der: None,
        not_after_unix_ms: None,
        ..ca.clone()
    };
    assert!(store.signing_key_insert(&jwt).await.unwrap());
    assert!(store.signing_key_insert(&ca).await.unwrap());
    assert_eq!(
        store.signing_keys("x509-ca").await.unwrap(),
        vec![ca.clone()]
    );
    assert_eq!(store.signing_keys("jwt").await.unwrap(), vec![jwt.clone()]);
    assert!(is_conflict(&store.signing_key_insert(&ca).await));
    // Access tokens have a kind of key of their own, active beside the JWT-SVID key.
    let access = SigningKeyRow {
        id: "key_5".into(),
        kind: "access-token".into(),
        ..jwt
    };
    assert!(store.signing_key_insert(&access).await.unwrap());
    assert_eq!(
        store.signing_keys("access-token").await.unwrap(),
        vec![access]
    );
    // The schema refuses unknown kinds and states.
    let bad_kind = SigningKeyRow {
        id: "key_3".into(),
        kind: "rsa".into(),
        ..ca.clone()
    };
    assert!(store.signing_key_insert(&bad_kind).await.is_err());
    let bad_state = SigningKeyRow {
        id: "key_4".into(),
        state: "zombie".into(),
        ..ca
    };
    assert!(store.signing_key_insert(&bad_state).await.is_err());
}

fn key(id: &str, state: &str, created: i64) -> SigningKeyRow {
    SigningKeyRow {
        id: id.into(),
        kind: "x509-ca".into(),
        state: state.into(),
        cert_der: Some(vec![0x30, 0x82, 0, 1]),
        key_sealed: vec![9; 80],
        created_unix_ms: created,
        not_after_unix_ms: Some(99_000),
        activated_unix_ms: (state == "active").then_some(created),
        retired_unix_ms: None,
        revoked_unix_ms: None,
    }
}

async fn signing_key_rotation(store: Arc<dyn Store>) {
    assert!(
        store
            .signing_key_insert(&key("k1", "active", 1))
            .await
            .unwrap()
    );
    // One active and one prepared key per kind: a second of either is skipped, not stored.
    assert!(
        !store
            .signing_key_insert(&key("k2", "active", 2))
            .await
            .unwrap()
    );
    assert!(
        store
            .signing_key_insert(&key("k3", "prepared", 3))
            .await
            .unwrap()
    );
    assert!(
        !store
            .signing_key_insert(&key("k4", "prepared", 4))
            .await
            .unwrap()
    );
    // Retired is not a state a new key starts in.
    assert!(is_conflict(
        &store.signing_key_insert(&key("k5", "retired", 5)).await
    ));
    assert_eq!(
        store
            .signing_key_activate("x509-ca", "k1", 50)
            .await
            .unwrap(),
        KeyActivate::NotPrepared
    );
    assert_eq!(
        store.signing_key_activate("jwt", "k3", 50).await.unwrap(),
        KeyActivate::NotPrepared
    );
    assert_eq!(
        store
            .signing_key_activate("x509-ca", "k3", 50)
            .await
            .unwrap(),
        KeyActivate::Activated {
            retired: Some("k1".into())
        }
    );
    let keys = store.signing_keys("x509-ca").await.unwrap();
    let states: Vec<(&str, &str, Option<i64>, Option<i64>)> = keys
        .iter()
        .map(|k| {
            (
                k.id.as_str(),
                k.state.as_str(),
                k.activated_unix_ms,
                k.retired_unix_ms,
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("k1", "retired", Some(1), Some(50)),
            ("k3", "active", Some(50), None)
        ]
    );
    // A new prepared key can follow; activating twice at once activates it once.
    assert!(
        store
            .signing_key_insert(&key("k6", "prepared", 6))
            .await
            .unwrap()
    );
    let (a, b) = tokio::join!(
        store.signing_key_activate("x509-ca", "k6", 60),
        store.signing_key_activate("x509-ca", "k6", 61)
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == KeyActivate::NotPrepared)
            .count(),
        1,
        "{outcomes:?}"
    );
    let active: Vec<String> = store
        .signing_keys("x509-ca")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.state == "active")
        .map(|k| k.id)
        .collect();
    assert_eq!(active, vec!["k6".to_owned()]);
    // Revocation: never the active key; a retired one once; a prepared one is discarded
    // (retired and revoked), freeing the prepared slot.
    assert!(!store.signing_key_revoke("k6", 70).await.unwrap());
    assert!(store.signing_key_revoke("k1", 70).await.unwrap());
    assert!(!store.signing_key_revoke("k1", 71).await.unwrap());
    assert!(!store.signing_key_revoke("nope", 71).await.unwrap());
    assert!(
        store
            .signing_key_insert(&key("k7", "prepared", 7))
            .await
            .unwrap()
    );
    assert!(store.signing_key_revoke("k7", 72).await.unwrap());
    assert!(
        store
            .signing_key_insert(&key("k8", "prepared", 8))
            .await
            .unwrap()
    );
    let keys = store.signing_keys("x509-ca").await.unwrap();
    let find = |id: &str| keys.iter().find(|k| k.id == id).unwrap().clone();
    assert_eq!(
        (
            find("k1").state.as_str(),
            find("k1").retired_unix_ms,
            find("k1").revoked_unix_ms
        ),
        ("retired", Some(50), Some(70))
    );
    assert_eq!(
        (
            find("k7").state.as_str(),
            find("k7").retired_unix_ms,
            find("k7").revoked_unix_ms
        ),
        ("retired", Some(72), Some(72))
    );
}

async fn federations_round_trip(store: Arc<dyn Store>) {
    let row = FederationRow {
        trust_domain: "partner.example".into(),
        bundle_url: Some("https://partner.example/bundle".into()),
        endpoint_ca_pem: None,
        bundle_json: r#"{"keys":[]}"#.into(),
        created_unix_ms: 1,
        refreshed_unix_ms: 1,
        last_error: None,
        limits_json: None,
    };
    let other = FederationRow {
        trust_domain: "acme.test".into(),
        bundle_url: None,
        ..row.clone()
    };
    store.federation_insert(&row).await.unwrap();
    store.federation_insert(&other).await.unwrap();
    assert!(is_conflict(&store.federation_insert(&row).await));
    assert_eq!(
        store.federation_list().await.unwrap(),
        vec![other.clone(), row.clone()]
    );
    // A failed refresh keeps the bundle and records why; a good one replaces it and clears
    // the error.
    assert!(
        store
            .federation_refreshed("partner.example", None, 5, Some("timed out"))
            .await
            .unwrap()
    );
    let after_error = store.federation_list().await.unwrap();
    assert_eq!(after_error[1].bundle_json, row.bundle_json);
    assert_eq!(after_error[1].refreshed_unix_ms, 1);
    assert_eq!(after_error[1].last_error.as_deref(), Some("timed out"));
    assert!(
        store
            .federation_refreshed("partner.example", Some(r#"{"keys":[1]}"#), 7, None)
            .await
            .unwrap()
    );
    let refreshed = store.federation_list().await.unwrap();
    assert_eq!(refreshed[1].bundle_json, r#"{"keys":[1]}"#);
    assert_eq!(refreshed[1].refreshed_unix_ms, 7);
    assert_eq!(refreshed[1].last_error, None);
    assert!(
        !store
            .federation_refreshed("nobody.example", None, 7, None)
            .await
            .unwrap()
    );
    // Limits are set on their own and kept across refreshes.
    assert!(
        store
            .federation_set_limits("partner.example", r#"{"routes":["git"]}"#)
            .await
            .unwrap()
    );
    assert!(
        !store
            .federation_set_limits("nobody.example", "{}")
            .await
            .unwrap()
    );
    store
        .federation_refreshed("partner.example", Some(r#"{"keys":[2]}"#), 8, None)
        .await
        .unwrap();
    assert_eq!(
        store.federation_list().await.unwrap()[1]
            .limits_json
            .as_deref(),
        Some(r#"{"routes":["git"]}"#)
    );
    assert!(store.federation_delete("acme.test").await.unwrap());
    assert!(!store.federation_delete("acme.test").await.unwrap());
    assert_eq!(store.federation_list().await.unwrap().len(), 1);
}

async fn join_tokens_are_one_time(store: Arc<dyn Store>) {
    let row = JoinTokenRow {
        token_hash: [5; 32],
        spiffe_id: "spiffe://example.org/agent/remote".into(),
        created_unix_ms: 1_000,
        expires_unix_ms: 2_000,
        used_unix_ms: None,
    };
    store.join_token_insert(&row).await.unwrap();
    assert!(is_conflict(&store.join_token_insert(&row).await));
    assert_eq!(
        store.join_token_consume(&[6; 32], 1_500).await.unwrap(),
        JoinConsume::NotFound
    );
    let JoinConsume::Consumed(used) = store.join_token_consume(&[5; 32], 1_500).await.unwrap()
    else {
        panic!("first use must succeed");
    };
    assert_eq!(used.used_unix_ms, Some(1_500));
    assert!(matches!(
        store.join_token_consume(&[5; 32], 1_600).await.unwrap(),
        JoinConsume::AlreadyUsed(r) if r.used_unix_ms == Some(1_500)
    ));
    // Expired unused tokens are refused and stay unused.
    let late = JoinTokenRow {
        token_hash: [7; 32],
        ..row.clone()
    };
    store.join_token_insert(&late).await.unwrap();
    assert!(matches!(
        store.join_token_consume(&[7; 32], 2_000).await.unwrap(),
        JoinConsume::Expired(_)
    ));
    // Concurrent uses: exactly one wins.
    let race = JoinTokenRow {
        token_hash: [8; 32],
        ..row
    };
    store.join_token_insert(&race).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.join_token_consume(&[8; 32], 1_500).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), JoinConsume::Consumed(_)) {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

async fn denylist_round_trip(store: Arc<dyn Store>) {
    let row = DenyRow {
        kind: "jti".into(),
        value: "abc".into(),
        reason: "leaked".into(),
        created_unix_ms: 5,
    };
    assert!(store.deny_insert(&row).await.unwrap());
    assert!(
        !store.deny_insert(&row).await.unwrap(),
        "second insert is a no-op"
    );
    let id = DenyRow {
        kind: "spiffe_id".into(),
        value: "spiffe://example.org/a".into(),
        created_unix_ms: 6,
        ..row.clone()
    };
    store.deny_insert(&id).await.unwrap();
    assert_eq!(
        store.deny_list().await.unwrap(),
        vec![row.clone(), id.clone()]
    );
    let bad = DenyRow {
        kind: "email".into(),
        ..row.clone()
    };
    assert!(
        store.deny_insert(&bad).await.is_err(),
        "unknown kinds are refused"
    );
    assert!(store.deny_delete("jti", "abc").await.unwrap());
    assert!(!store.deny_delete("jti", "abc").await.unwrap());
    assert_eq!(store.deny_list().await.unwrap(), vec![id]);
}

async fn token_duplicates_conflict(store: Arc<dyn Store>) {
    let t = token(1);
    store.token_insert(&t).await.unwrap();

    let cases = [
        (
            "name",
            ApiTokenRow {
                id: "tok_other".into(),
                token_hash: [2; 32],
                ..t.clone()
            },
        ),
        (
            "id",
            ApiTokenRow {
                name: "other".into(),
                token_hash: [3; 32],
                ..t.clone()
            },
        ),
        (
            "hash",
            ApiTokenRow {
                id: "tok_x".into(),
                name: "x".into(),
                ..t.clone()
            },
        ),
    ];
    for (what, dup) in cases {
        let r = store.token_insert(&dup).await;
        match r {
            Err(StoreError::Conflict(msg)) => {
                assert!(
                    msg.contains(what),
                    "{what}: message `{msg}` should name the column"
                );
                // No secret material in messages (the hash is [1; 32]).
                assert!(!msg.contains("0101"), "{msg}");
                assert!(!msg.contains("\\x01"), "{msg}");
            }
            other => panic!("{what}: expected conflict, got {other:?}"),
        }
    }
    assert_eq!(store.token_list().await.unwrap(), vec![t]);
}

async fn meta_set_if_absent(store: Arc<dyn Store>) {
    assert!(store.meta_set_if_absent("install_id", "abc").await.unwrap());
    assert!(!store.meta_set_if_absent("install_id", "xyz").await.unwrap());
    assert_eq!(
        store.meta_get("install_id").await.unwrap().as_deref(),
        Some("abc")
    );
    assert!(store.meta_set_if_absent("other", "").await.unwrap());
    assert_eq!(store.meta_get("other").await.unwrap().as_deref(), Some(""));
    assert_eq!(store.meta_get("missing").await.unwrap(), None);
}

async fn durable_reopen(ctx: &mut Ctx) {
    let store = ctx.store();
    store.ledger_append(0, &rows(0, 100)).await.unwrap();
    store
        .checkpoint_insert(&checkpoint(100, 7, "cp"))
        .await
        .unwrap();
    store.token_insert(&token(4)).await.unwrap();
    assert!(store.meta_set_if_absent("k", "v").await.unwrap());
    drop(store);

    // Reopen twice: migrations must be re-applied idempotently.
    ctx.reopen().await;
    ctx.reopen().await;
    let store = ctx.store();
    assert_eq!(store.ledger_size().await.unwrap(), 100);
    assert_eq!(store.ledger_entries(0, 1000).await.unwrap(), rows(0, 100));
    assert_eq!(
        store.checkpoint_latest().await.unwrap(),
        Some(checkpoint(100, 7, "cp"))
    );
    assert_eq!(store.token_list().await.unwrap(), vec![token(4)]);
    assert_eq!(store.meta_get("k").await.unwrap().as_deref(), Some("v"));
    // And it keeps working after reopening.
    store.ledger_append(100, &rows(100, 1)).await.unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 101);
}

// ---------------------------------------------------------------------------------------------
// Opening errors (backend specific)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_open_missing_parent_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does").join("not").join("exist.db");
    let r = store::open(&StoreUrl::Sqlite(path.clone())).await;
    match r {
        Err(StoreError::Database(msg)) => assert!(msg.contains("does"), "{msg}"),
        Err(e) => panic!("expected a database error, got {e}"),
        Ok(_) => panic!("opened a database in a missing directory"),
    }
    assert!(!path.exists());
}

#[tokio::test]
async fn sqlite_open_creates_the_file_and_sets_durable_pragmas() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(path.exists());
    store.close().await;

    // WAL is persistent in the file header.
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn sqlite_tuples_written_before_the_key_order_migration_survive_it() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    // The schema as it was before migration 14, with tuples in it.
    let mut before = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/sqlite"
    )))
    .await
    .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 14)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&mut conn).await.unwrap();
    for (object, expires) in [("doc:1", None), ("doc:2", Some(5_000_i64))] {
        sqlx::query(
            "INSERT INTO rebac_tuples (store, object, relation, subject, expires_at_ms) \
             VALUES ('s', ?, 'viewer', 'user:anne', ?)",
        )
        .bind(object)
        .bind(expires)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let (tuples, _) = scan_tuples(store.as_ref(), "s", 10).await;
    assert_eq!(
        tuples,
        [
            rt("doc:1", "viewer", "user:anne", None),
            rt("doc:2", "viewer", "user:anne", Some(5_000))
        ]
    );
    // The expiring one is found through the new index.
    assert_eq!(
        store.rebac_purge_expired(5_000, 10).await.unwrap(),
        [(
            "s".to_owned(),
            rt("doc:2", "viewer", "user:anne", Some(5_000))
        )]
    );
}

#[tokio::test]
async fn postgres_bad_schema_name_is_rejected() {
    // Validation happens before any connection attempt, so no server is needed.
    for bad in ["", "Bad", "a-b", "x\"; DROP TABLE t; --", &"s".repeat(64)] {
        let r = PostgresStore::connect_with_schema("postgres://u@127.0.0.1:1/db", bad).await;
        assert!(matches!(r, Err(StoreError::Database(_))), "{bad}");
    }
}

#[tokio::test]
async fn postgres_connect_error_hides_password() {
    // Port 1 on localhost refuses connections: fails fast, no server needed.
    let url: StoreUrl = "postgres://alice:hunter2-secret@127.0.0.1:1/db"
        .parse()
        .unwrap();
    let err = match store::open(&url).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("connected to port 1"),
    };
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
}

async fn policy_versions_append_only(store: Arc<dyn Store>) {
    let v = |package: &str, text: &str| PolicyVersionRow {
        package: package.into(),
        version: 0,
        language: "cedar".into(),
        entrypoint: None,
        files_json: format!(r#"[["a.cedar",{text:?}]]"#),
        content_sha256: format!("{:064x}", text.len()),
        created_unix_ms: 5,
        created_by: "token:admin".into(),
        note: None,
    };
    assert!(store.policy_latest().await.unwrap().is_empty());
    assert_eq!(
        store
            .policy_append(&v("coder", "one"), Some(0))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.policy_append(&v("coder", "two"), None).await.unwrap(),
        2
    );
    assert_eq!(
        store.policy_append(&v("billing", "b"), None).await.unwrap(),
        1
    );
    // Optimistic concurrency: a writer that saw version 1 loses to the one that wrote 2.
    assert!(is_conflict(
        &store.policy_append(&v("coder", "stale"), Some(1)).await
    ));
    let rollback = PolicyVersionRow {
        note: Some("rollback to version 1".into()),
        ..v("coder", "one")
    };
    assert_eq!(store.policy_append(&rollback, Some(2)).await.unwrap(), 3);
    let versions = store.policy_versions("coder").await.unwrap();
    assert_eq!(
        versions.iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(versions[2].note.as_deref(), Some("rollback to version 1"));
    assert_eq!(versions[2].files_json, versions[0].files_json);
    let latest = store.policy_latest().await.unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|r| (r.package.as_str(), r.version))
            .collect::<Vec<_>>(),
        vec![("billing", 1), ("coder", 3)]
    );
    // Concurrent appends get distinct numbers.
    let (ra, rb) = (v("race", "a"), v("race", "b"));
    let (a, b) = tokio::join!(
        store.policy_append(&ra, None),
        store.policy_append(&rb, None)
    );
    let mut got = vec![a.unwrap(), b.unwrap()];
    got.sort_unstable();
    assert_eq!(got, vec![1, 2]);
    // The schema refuses unknown languages.
    let bad = PolicyVersionRow {
        language: "python".into(),
        ..v("x", "y")
    };
    assert!(store.policy_append(&bad, None).await.is_err());
}

fn rt(object: &str, relation: &str, subject: &str, expires_at_ms: Option<i64>) -> RebacTupleRow {
    RebacTupleRow {
        object: object.into(),
        relation: relation.into(),
        subject: subject.into(),
        expires_at_ms,
    }
}

fn rebac_model(store_name: &str, dsl: &str) -> RebacModelRow {
    RebacModelRow {
        store: store_name.into(),
        version: 0,
        model_id: format!("{:064x}", dsl.len()),
        dsl: dsl.into(),
        created_unix_ms: 7,
        created_by: "token:admin".into(),
    }
}

async fn rebac_models_versioned(store: Arc<dyn Store>) {
    assert!(store.rebac_stores().await.unwrap().is_empty());
    // Writing to a store without a model writes nothing.
    assert_eq!(
        store
            .rebac_write(
                "default",
                &[rt("doc:1", "viewer", "user:a", None)],
                &[],
                1,
                "t"
            )
            .await
            .unwrap(),
        RebacWrite::NoStore
    );
    assert_eq!(
        store
            .rebac_model_append(&rebac_model("default", "one"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .rebac_model_append(&rebac_model("default", "two"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .rebac_model_append(&rebac_model("tenant-b", "b"))
            .await
            .unwrap(),
        1
    );
    let models = store.rebac_models("default").await.unwrap();
    assert_eq!(
        models.iter().map(|m| m.dsl.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(models[1].version, 2);
    let stores = store.rebac_stores().await.unwrap();
    assert_eq!(
        stores
            .iter()
            .map(|s| (
                s.store.as_str(),
                s.revision,
                s.model.version,
                s.model.dsl.as_str()
            ))
            .collect::<Vec<_>>(),
        [("default", 0, 2, "two"), ("tenant-b", 0, 1, "b")]
    );
    assert!(store.rebac_models("nobody").await.unwrap().is_empty());
}

async fn rebac_write_is_atomic_and_fed(store: Arc<dyn Store>) {
    store
        .rebac_model_append(&rebac_model("s", "m"))
        .await
        .unwrap();
    store
        .rebac_model_append(&rebac_model("other", "m"))
        .await
        .unwrap();
    let a = rt("doc:1", "viewer", "user:a", None);
    let b = rt("doc:1", "viewer", "group:eng#member", Some(9_000));
    assert_eq!(
        store
            .rebac_write("s", &[a.clone(), b.clone()], &[], 10, "alice")
            .await
            .unwrap(),
        RebacWrite::Written { revision: 1 }
    );
    // A batch with one present tuple writes nothing, names the culprit, and keeps the
    // revision.
    let c = rt("doc:2", "viewer", "user:c", None);
    assert_eq!(
        store
            .rebac_write("s", &[c.clone(), a.clone()], &[], 11, "alice")
            .await
            .unwrap(),
        RebacWrite::Exists(1)
    );
    // Deleting an absent tuple is refused the same way, writes in the batch included.
    assert_eq!(
        store
            .rebac_write(
                "s",
                std::slice::from_ref(&c),
                &[a.clone(), c.clone()],
                12,
                "bob"
            )
            .await
            .unwrap(),
        RebacWrite::Missing(1)
    );
    assert_eq!(
        store
            .rebac_write(
                "s",
                std::slice::from_ref(&c),
                std::slice::from_ref(&a),
                13,
                "bob"
            )
            .await
            .unwrap(),
        RebacWrite::Written { revision: 2 }
    );
    let (all, _) = scan_tuples(store.as_ref(), "s", 100).await;
    assert_eq!(all, [b.clone(), c.clone()]);
    // Stores are isolated.
    assert!(scan_tuples(store.as_ref(), "other", 100).await.0.is_empty());
    assert_eq!(
        store
            .rebac_write("other", std::slice::from_ref(&a), &[], 14, "bob")
            .await
            .unwrap(),
        RebacWrite::Written { revision: 1 }
    );
    let feed = store.rebac_changes("s", 0, 100).await.unwrap();
    assert_eq!(
        feed.iter()
            .map(|c| (
                c.revision,
                c.position,
                c.operation.as_str(),
                c.tuple.subject.as_str(),
                c.actor.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            (1, 0, "write", "user:a", "alice"),
            (1, 1, "write", "group:eng#member", "alice"),
            (2, 0, "delete", "user:a", "bob"),
            (2, 1, "write", "user:c", "bob"),
        ]
    );
    assert_eq!(feed[1].tuple.expires_at_ms, Some(9_000));
    assert_eq!(feed[3].at_unix_ms, 13);
    assert_eq!(store.rebac_changes("s", 1, 100).await.unwrap().len(), 2);
    assert_eq!(store.rebac_changes("s", 0, 1).await.unwrap().len(), 1);
    let stores = store.rebac_stores().await.unwrap();
    assert_eq!(
        stores
            .iter()
            .map(|s| (s.store.as_str(), s.revision))
            .collect::<Vec<_>>(),
        [("other", 1), ("s", 2)]
    );
}

async fn rebac_expiry_and_scan(store: Arc<dyn Store>) {
    store
        .rebac_model_append(&rebac_model("s", "m"))
        .await
        .unwrap();
    let grant = rt("repo:w", "writer", "agent:coder", Some(1_000));
    store
        .rebac_write("s", std::slice::from_ref(&grant), &[], 10, "t")
        .await
        .unwrap();
    // Before expiry the tuple is present; after, it is absent: deleting it is refused and
    // writing it again replaces it with the new expiry.
    assert_eq!(
        store
            .rebac_write("s", std::slice::from_ref(&grant), &[], 999, "t")
            .await
            .unwrap(),
        RebacWrite::Exists(0)
    );
    assert_eq!(
        store
            .rebac_write("s", &[], std::slice::from_ref(&grant), 1_000, "t")
            .await
            .unwrap(),
        RebacWrite::Missing(0)
    );
    let renewed = rt("repo:w", "writer", "agent:coder", Some(5_000));
    assert_eq!(
        store
            .rebac_write("s", std::slice::from_ref(&renewed), &[], 1_000, "t")
            .await
            .unwrap(),
        RebacWrite::Written { revision: 2 }
    );
    assert_eq!(
        scan_tuples(store.as_ref(), "s", 10).await.0,
        std::slice::from_ref(&renewed)
    );
    assert!(
        store
            .rebac_purge_expired(4_999, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.rebac_purge_expired(5_000, 10).await.unwrap(),
        [("s".to_owned(), renewed.clone())]
    );
    assert!(scan_tuples(store.as_ref(), "s", 10).await.0.is_empty());
    // The scan hands over every tuple once, in full chunks and a last partial one.
    let many: Vec<RebacTupleRow> = (0..25)
        .map(|i| {
            rt(
                &format!("doc:{i:02}"),
                "viewer",
                &format!("user:{}", i % 3),
                None,
            )
        })
        .collect();
    store
        .rebac_write("s", &many, &[], 6_000, "t")
        .await
        .unwrap();
    let (seen, chunks) = scan_tuples(store.as_ref(), "s", 7).await;
    assert_eq!(seen, many);
    assert_eq!(chunks, [7, 7, 7, 4]);
    // A reader that goes away stops the scan, which is not an error.
    let (sink, gone) = tokio::sync::mpsc::channel(1);
    drop(gone);
    assert_eq!(store.rebac_tuples_scan("s", 7, sink).await.unwrap(), 7);
}

/// Every tuple of relationship store `name` through `rebac_tuples_scan` in chunks of `chunk`,
/// in key order, and the sizes of the chunks as they came.
async fn scan_tuples(
    store: &dyn Store,
    name: &str,
    chunk: usize,
) -> (Vec<RebacTupleRow>, Vec<usize>) {
    let (sink, mut chunks) = tokio::sync::mpsc::channel(1);
    let (sent, rows) = tokio::join!(store.rebac_tuples_scan(name, chunk, sink), async {
        let mut rows = Vec::new();
        let mut sizes = Vec::new();
        while let Some(c) = chunks.recv().await {
            sizes.push(c.len());
            rows.extend(c);
        }
        (rows, sizes)
    });
    let (mut rows, sizes) = rows;
    assert_eq!(sent.unwrap(), rows.len() as u64);
    rows.sort_by(|a, b| {
        (&a.object, &a.relation, &a.subject).cmp(&(&b.object, &b.relation, &b.subject))
    });
    (rows, sizes)
}

async fn rebac_concurrent_writers_get_distinct_revisions(store: Arc<dyn Store>) {
    store
        .rebac_model_append(&rebac_model("s", "m"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let t = rt(&format!("doc:{i}"), "viewer", "user:x", None);
            store.rebac_write("s", &[t], &[], 1, "t").await.unwrap()
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            RebacWrite::Written { revision } => revisions.push(revision),
            other => panic!("{other:?}"),
        }
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=8).collect::<Vec<_>>());
    let feed = store.rebac_changes("s", 0, 100).await.unwrap();
    assert_eq!(
        feed.iter().map(|c| c.revision).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Credential broker
// ---------------------------------------------------------------------------------------------

fn lease(id: &str, agent: &str, task: Option<&str>, engine: &str, expires_ms: i64) -> LeaseRow {
    LeaseRow {
        id: id.to_owned(),
        agent: agent.to_owned(),
        subject: agent.to_owned(),
        task: task.map(str::to_owned),
        engine: engine.to_owned(),
        scope: "{}".to_owned(),
        parent: None,
        handle: format!("h-{id}"),
        issued_ms: 1_000,
        expires_ms,
        max_expires_ms: expires_ms * 2,
        state: "active".to_owned(),
        revoke_reason: None,
        revoked_ms: None,
        attempts: 0,
        next_attempt_ms: None,
        last_error: None,
        alerted: false,
    }
}

async fn leases_lifecycle(store: Arc<dyn Store>) {
    let a = lease(
        "oauth/token/lse_1",
        "spiffe://t/a",
        Some("T1"),
        "oauth",
        10_000,
    );
    store.lease_insert(&a).await.unwrap();
    assert!(store.lease_insert(&a).await.is_err(), "ids are unique");
    assert_eq!(store.lease_get(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        store
            .lease_by_handle("oauth", "h-oauth/token/lse_1")
            .await
            .unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.lease_by_handle("postgres", &a.handle).await.unwrap(),
        None
    );
    // Renew: within the maximum only, and only while active and unexpired.
    let renewed = store
        .lease_renew(&a.id, 15_000, 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.expires_ms, 15_000);
    assert_eq!(store.lease_renew(&a.id, 20_001, 5_000).await.unwrap(), None);
    assert_eq!(
        store.lease_renew(&a.id, 16_000, 15_000).await.unwrap(),
        None
    );
    // Expiry: a token just expires; a database role goes to `revoking`.
    let p = lease("postgres/r/lse_2", "spiffe://t/a", None, "postgres", 12_000);
    // A batch is all or nothing: a duplicate in it keeps the others out too.
    let q = lease("oauth/token/lse_3", "spiffe://t/b", None, "oauth", 1);
    assert!(
        store
            .lease_insert_many(&[q.clone(), a.clone()])
            .await
            .is_err()
    );
    assert_eq!(store.lease_get(&q.id).await.unwrap(), None);
    store
        .lease_insert_many(std::slice::from_ref(&p))
        .await
        .unwrap();
    store.lease_insert_many(&[]).await.unwrap();
    let ended = store.lease_expire_due(14_000, 10).await.unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].id, p.id);
    assert_eq!(ended[0].state, "revoking");
    assert_eq!(ended[0].revoke_reason.as_deref(), Some("expired"));
    let ended = store.lease_expire_due(15_000, 10).await.unwrap();
    assert_eq!(ended[0].state, "expired");
    assert_eq!(ended[0].id, a.id);
    assert!(store.lease_expire_due(15_000, 10).await.unwrap().is_empty());
    // An ended lease is not revoked again and cannot be renewed.
    assert!(
        store
            .lease_revoke(&LeaseSelector::Id(a.id.clone()), "x", 16_000, 16_000)
            .await
            .unwrap()
            .is_empty()
    );
    // The sweeper: claim, fail, retry later, then succeed.
    let claimed = store.lease_claim_due(14_000, 45_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .lease_claim_due(20_000, 50_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "claimed"
    );
    store
        .lease_retry_later(&p.id, 30_000, "down", true)
        .await
        .unwrap();
    let again = store.lease_get(&p.id).await.unwrap().unwrap();
    assert_eq!(
        (again.attempts, again.next_attempt_ms, again.alerted),
        (1, Some(30_000), true)
    );
    assert_eq!(again.last_error.as_deref(), Some("down"));
    assert_eq!(
        store
            .lease_claim_due(30_000, 60_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.lease_revoked_upstream(&p.id).await.unwrap());
    assert!(!store.lease_revoked_upstream(&p.id).await.unwrap());
    // A revoked lease whose credential turned out to exist is reopened for the sweeper.
    store
        .lease_reopen(&p.id, 40_000, "found again")
        .await
        .unwrap();
    let reopened = store.lease_get(&p.id).await.unwrap().unwrap();
    assert_eq!(
        (reopened.state.as_str(), reopened.next_attempt_ms),
        ("revoking", Some(40_000))
    );
    assert!(store.lease_revoked_upstream(&p.id).await.unwrap());
    let done = store.lease_get(&p.id).await.unwrap().unwrap();
    assert_eq!(
        (done.state.as_str(), done.next_attempt_ms),
        ("revoked", None)
    );
    // The revocation feed: both ended leases of an engine, in order, paged.
    let feed = store.lease_revoked_since(None, "oauth", 10).await.unwrap();
    assert_eq!(
        feed.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        [a.id.as_str()]
    );
    let last = feed.last().unwrap();
    assert!(
        store
            .lease_revoked_since(Some((last.revoked_ms.unwrap(), &last.id)), "oauth", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn leases_bulk_revoke_and_sweeper_claims(store: Arc<dyn Store>) {
    for i in 0..30 {
        let engine = if i % 3 == 0 { "postgres" } else { "oauth" };
        let mut l = lease(
            &format!("{engine}/r{}/lse_{i:02}", i % 2),
            &format!("spiffe://t/agent{}", i % 5),
            Some(&format!("T{}", i % 4)),
            engine,
            1_000_000,
        );
        if i == 29 {
            l.subject = "spiffe://t/agent0".into();
            l.parent = Some("oauth/r1/lse_01".into());
        }
        store.lease_insert(&l).await.unwrap();
    }
    let by = |f: LeaseFilter| {
        let store = Arc::clone(&store);
        async move {
            store
                .lease_list(&LeaseFilter { limit: 100, ..f })
                .await
                .unwrap()
        }
    };
    // agent0 holds 6 and 29 acts on its behalf.
    let mine = by(LeaseFilter {
        agent: Some("spiffe://t/agent0".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(mine.len(), 7);
    let page = store
        .lease_list(&LeaseFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let next = store
        .lease_list(&LeaseFilter {
            limit: 100,
            after: Some(page[9].id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len() + next.len(), 30);
    // Revoking a lease revokes what was delegated from it.
    let cascade = store
        .lease_revoke(&LeaseSelector::Id("oauth/r1/lse_01".into()), "parent", 5, 5)
        .await
        .unwrap();
    let mut ids: Vec<&str> = cascade.iter().map(|l| l.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["oauth/r1/lse_01", "oauth/r1/lse_29"]);
    let revoked = store
        .lease_revoke(
            &LeaseSelector::Agent("spiffe://t/agent0".into()),
            "hold",
            10,
            10,
        )
        .await
        .unwrap();
    assert_eq!(revoked.len(), 6, "29 already went with its parent");
    for l in &revoked {
        let want = if l.engine == "oauth" {
            "revoked"
        } else {
            "revoking"
        };
        assert_eq!(l.state, want, "{}", l.id);
        assert_eq!(l.revoke_reason.as_deref(), Some("hold"));
    }
    // The revoking caller's claim keeps the sweeper off until it runs out.
    let task = store
        .lease_revoke(&LeaseSelector::Task("T1".into()), "task", 20, 90)
        .await
        .unwrap();
    assert!(task.iter().all(|l| l.task.as_deref() == Some("T1")));
    let prefix = store
        .lease_revoke(&LeaseSelector::Prefix("postgres/".into()), "p", 30, 30)
        .await
        .unwrap();
    assert!(!prefix.is_empty() && prefix.iter().all(|l| l.id.starts_with("postgres/")));
    // A prefix is literal: `%` and `_` match only themselves.
    assert!(
        store
            .lease_revoke(&LeaseSelector::Prefix("%".into()), "p", 30, 30)
            .await
            .unwrap()
            .is_empty()
    );
    let active = by(LeaseFilter {
        state: Some("active".into()),
        ..Default::default()
    })
    .await;
    assert!(
        active
            .iter()
            .all(|l| l.task.as_deref() != Some("T1") && l.engine == "oauth")
    );
    assert!(
        store
            .lease_claim_due(89, 89, 100)
            .await
            .unwrap()
            .iter()
            .all(|l| l.task.as_deref() != Some("T1")),
        "claimed by the revoking call until 90"
    );
    // Two sweepers claiming at once never both get a lease.
    let (a, b) = tokio::join!(
        store.lease_claim_due(100, 10_000, 100),
        store.lease_claim_due(100, 10_000, 100)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let all = by(LeaseFilter {
        state: Some("revoking".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(a.len() + b.len(), all.len());
    assert!(a.iter().all(|x| b.iter().all(|y| x.id != y.id)));
}

async fn holds_connections_roles_secrets(store: Arc<dyn Store>) {
    let hold = HoldRow {
        kind: "agent".into(),
        value: "spiffe://t/a".into(),
        reason: "incident".into(),
        created_unix_ms: 1,
        created_by: "token:admin".into(),
    };
    assert!(store.hold_insert(&hold).await.unwrap());
    assert!(!store.hold_insert(&hold).await.unwrap());
    assert_eq!(store.hold_list().await.unwrap(), vec![hold.clone()]);
    assert!(store.hold_delete("agent", "spiffe://t/a").await.unwrap());
    assert!(!store.hold_delete("agent", "spiffe://t/a").await.unwrap());

    let conn = DbConnectionRow {
        name: "customers".into(),
        dsn_sealed: vec![0, 1, 2, 255],
        created_unix_ms: 1,
        created_by: "a".into(),
    };
    store.db_connection_put(&conn).await.unwrap();
    let role = DbRoleRow {
        name: "db_read_summary".into(),
        connection: "customers".into(),
        template: "{}".into(),
        default_ttl_s: 300,
        max_ttl_s: 3600,
        created_unix_ms: 1,
        created_by: "a".into(),
    };
    let orphan = DbRoleRow {
        connection: "nowhere".into(),
        ..role.clone()
    };
    assert!(
        store.db_role_put(&orphan).await.is_err(),
        "a role needs its connection"
    );
    store.db_role_put(&role).await.unwrap();
    store
        .db_role_put(&DbRoleRow {
            max_ttl_s: 7200,
            ..role.clone()
        })
        .await
        .unwrap();
    assert_eq!(store.db_role_list().await.unwrap()[0].max_ttl_s, 7200);
    assert_eq!(
        store.db_connection_list().await.unwrap(),
        vec![conn.clone()]
    );
    assert!(
        !store.db_connection_delete("customers").await.unwrap(),
        "in use"
    );
    assert!(store.db_role_delete("db_read_summary").await.unwrap());
    assert!(store.db_connection_delete("customers").await.unwrap());

    let secret = |n: u8| SecretRow {
        name: "slack".into(),
        version: i64::from(n),
        dek_sealed: vec![n; 3],
        value_sealed: vec![n; 5],
        created_unix_ms: i64::from(n),
        created_by: "a".into(),
    };
    store.secret_put(&secret(1)).await.unwrap();
    store.secret_put(&secret(2)).await.unwrap();
    assert!(
        is_conflict(&store.secret_put(&secret(2)).await),
        "versions are unique"
    );
    let latest = store.secret_get("slack", None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.value_sealed), (2, vec![2; 5]));
    let first = store.secret_get("slack", Some(1)).await.unwrap().unwrap();
    assert_eq!(first.dek_sealed, vec![1; 3]);
    assert_eq!(store.secret_get("slack", Some(3)).await.unwrap(), None);
    assert_eq!(store.secret_versions().await.unwrap().len(), 2);
    assert!(store.secret_delete("slack").await.unwrap());
    assert_eq!(store.secret_get("slack", None).await.unwrap(), None);
}

fn task_row(id: &str, deadline_ms: i64) -> TaskRow {
    TaskRow {
        id: id.into(),
        kind: "patch_bug".into(),
        owner: "alice@example.org".into(),
        resources: "[\"repository:warden\"]".into(),
        attributes: "{}".into(),
        deadline_ms,
        state: "open".into(),
        created_ms: 1,
        created_by: "token:admin".into(),
        ended_ms: None,
        end_reason: None,
        cleaned: false,
    }
}

async fn tasks_grants_requests_risk(store: Arc<dyn Store>) {
    assert!(store.task_insert(&task_row("T1", 10_000)).await.unwrap());
    assert!(
        !store.task_insert(&task_row("T1", 10_000)).await.unwrap(),
        "ids are unique"
    );
    store.task_insert(&task_row("T2", 5_000)).await.unwrap();
    let a = TaskAgentRow {
        task: "T1".into(),
        agent: "spiffe://t/coder".into(),
        role: "coder".into(),
        assigned_ms: 2,
        assigned_by: "x".into(),
    };
    assert!(store.task_agent_put(&a).await.unwrap());
    assert!(!store.task_agent_put(&a).await.unwrap());
    assert_eq!(store.task_agents("T1").await.unwrap(), vec![a.clone()]);
    let bad = TaskAgentRow {
        task: "nope".into(),
        ..a.clone()
    };
    assert!(
        store.task_agent_put(&bad).await.is_err(),
        "the task must exist"
    );
    assert_eq!(
        store
            .task_list(None, Some("spiffe://t/coder"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.open_task_agents().await.unwrap().len(), 1);

    let g = GrantRow {
        id: "g1".into(),
        task: "T1".into(),
        agent: a.agent.clone(),
        resource: "repository:warden".into(),
        permission: "writer".into(),
        expires_ms: 10_000,
        state: "active".into(),
        source: "assignment".into(),
        created_ms: 3,
        created_by: "x".into(),
        ended_ms: None,
    };
    store.grant_insert(&g).await.unwrap();
    assert_eq!(
        store
            .grant_list(Some("T1"), None, Some("active"))
            .await
            .unwrap(),
        vec![g.clone()]
    );

    // Deadline: the sweeper asks for the open tasks past their deadline (T2, not T1), earliest
    // first, at most `limit`; ending is once only.
    let ids = |tasks: Vec<TaskRow>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(store.task_due(6_000, 10).await.unwrap()), ["T2"]);
    assert_eq!(ids(store.task_due(20_000, 10).await.unwrap()), ["T2", "T1"]);
    assert_eq!(ids(store.task_due(20_000, 1).await.unwrap()), ["T2"]);
    assert!(store.task_due(4_999, 10).await.unwrap().is_empty());
    let expired = store
        .task_end("T2", "expired", "deadline passed", 6_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expired.state, "expired");
    let ended = store
        .task_end("T1", "completed", "fixed", 7_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ended.state.as_str(), ended.ended_ms),
        ("completed", Some(7_000))
    );
    assert!(
        store
            .task_end("T1", "failed", "x", 8_000)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.open_task_agents().await.unwrap().is_empty());
    let uncleaned = store.task_uncleaned(10).await.unwrap();
    assert_eq!(uncleaned.len(), 2);
    let g2 = GrantRow {
        id: "g2".into(),
        ..g.clone()
    };
    store.grant_insert(&g2).await.unwrap();
    assert_eq!(
        store
            .grant_end_one("g2", 6_500)
            .await
            .unwrap()
            .map(|g| g.state),
        Some("ended".into())
    );
    assert!(store.grant_end_one("g2", 6_600).await.unwrap().is_none());
    let gone = store.grant_end("T1", 7_000).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert!(store.grant_end("T1", 7_000).await.unwrap().is_empty());
    store.task_mark_cleaned("T1").await.unwrap();
    assert_eq!(store.task_uncleaned(10).await.unwrap().len(), 1);

    let r = GrantRequestRow {
        id: "r1".into(),
        task: "T1".into(),
        agent: a.agent.clone(),
        resource: "repository:docs".into(),
        permission: "writer".into(),
        reason: "fix the docs too".into(),
        ttl_s: 600,
        state: "pending".into(),
        decision_id: "dec_1".into(),
        created_ms: 4,
        expires_ms: 9_000,
        decided_by: None,
        decided_ms: None,
        decision_reason: None,
        grant_id: None,
    };
    store.request_insert(&r).await.unwrap();
    store
        .request_insert(&GrantRequestRow {
            id: "r2".into(),
            expires_ms: 100,
            ..r.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        store.request_list(Some("pending"), 10).await.unwrap().len(),
        2
    );
    // Timeout: pending requests past their time are decided `expired` (r2, not r1).
    let due = store.request_due(1_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r2"]
    );
    assert_eq!(store.request_due(9_000, 10).await.unwrap().len(), 2);
    assert!(
        store
            .request_decide("r2", "expired", "timeout", "no approver", 1_000, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .request_decide("r1", "approved", "token:bob", "ok", 5, Some("g2"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .request_decide("r1", "denied", "token:eve", "replay", 6, None)
            .await
            .unwrap(),
        "decided once"
    );
    assert!(
        !store
            .request_decide("r2", "approved", "token:bob", "late", 6, None)
            .await
            .unwrap()
    );
    let back = store.request_get("r1").await.unwrap().unwrap();
    assert_eq!(
        (back.state.as_str(), back.grant_id.as_deref()),
        ("approved", Some("g2"))
    );

    let risk = RiskRow {
        agent: a.agent.clone(),
        score_milli: 700,
        reason: "odd pushes".into(),
        set_ms: 1,
        set_by: "x".into(),
    };
    store.risk_set(&risk).await.unwrap();
    store
        .risk_set(&RiskRow {
            score_milli: 200,
            ..risk.clone()
        })
        .await
        .unwrap();
    assert_eq!(store.risk_list().await.unwrap()[0].score_milli, 200);
    let one = store.risk_get(&a.agent).await.unwrap().unwrap();
    assert_eq!((one.score_milli, one.reason.as_str()), (200, "odd pushes"));
    assert!(store.risk_get("spiffe://t/other").await.unwrap().is_none());
    assert!(
        store
            .risk_set(&RiskRow {
                score_milli: 1001,
                ..risk
            })
            .await
            .is_err()
    );
    assert_eq!(
        store.risk_get(&a.agent).await.unwrap().unwrap().score_milli,
        200
    );
}

/// The split append (commit now, sync later) that lets the ledger write one batch while the
/// previous one is synced: same visibility and conflict rules as the durable append.
async fn unsynced_appends_are_visible_conflict_alike_and_sync(store: Arc<dyn Store>) {
    store
        .ledger_append_unsynced(0, &rows(0, 3), &[])
        .await
        .unwrap();
    store
        .ledger_append_unsynced(3, &rows(3, 2), &[])
        .await
        .unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 5);
    assert_eq!(store.ledger_entries(0, 100).await.unwrap(), rows(0, 5));
    let r = store.ledger_append_unsynced(3, &rows(3, 1), &[]).await;
    assert!(is_conflict(&r), "{r:?}");
    let r = store.ledger_append_unsynced(9, &rows(9, 1), &[]).await;
    assert!(is_conflict(&r), "{r:?}");
    store.ledger_sync().await.unwrap();
    // Leases ride along exactly as with the durable append.
    let l = lease("oauth/token/lse_u1", "spiffe://t/a", None, "oauth", 10_000);
    store
        .ledger_append_unsynced(5, &rows(5, 1), std::slice::from_ref(&l))
        .await
        .unwrap();
    store.ledger_sync().await.unwrap();
    assert_eq!(store.lease_get(&l.id).await.unwrap(), Some(l));
    assert_eq!(store.ledger_size().await.unwrap(), 6);
}

async fn ledger_append_with_leases_is_one_transaction(store: Arc<dyn Store>) {
    let l1 = lease("oauth/token/lse_a1", "spiffe://t/a", None, "oauth", 10_000);
    store
        .ledger_append_with(0, &rows(0, 2), std::slice::from_ref(&l1))
        .await
        .unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 2);
    assert_eq!(store.lease_get(&l1.id).await.unwrap(), Some(l1.clone()));
    // A lease that cannot be inserted (its id is taken) takes the entries down with it.
    let l2 = lease("oauth/token/lse_a2", "spiffe://t/a", None, "oauth", 10_000);
    assert!(
        store
            .ledger_append_with(2, &rows(2, 3), &[l2.clone(), l1.clone()])
            .await
            .is_err()
    );
    assert_eq!(
        store.ledger_size().await.unwrap(),
        2,
        "no entry without its lease"
    );
    assert_eq!(store.lease_get(&l2.id).await.unwrap(), None);
    store.ledger_append_with(2, &rows(2, 1), &[]).await.unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// The change feed
// ---------------------------------------------------------------------------------------------

/// Every row of `kind` past `after`, as `(key, op)`.
async fn feed(store: &dyn Store, kind: ChangeKind, after: i64) -> Vec<(String, ChangeOp)> {
    let page = store.changes_since(kind, after, 1000).await.unwrap();
    assert!(page.floor <= after, "nothing pruned in these tests");
    page.rows.into_iter().map(|r| (r.key, r.op)).collect()
}

async fn change_feed_names_every_cached_write(store: Arc<dyn Store>) {
    use ChangeOp::{Delete, Put};
    let start = store.change_head().await.unwrap();
    // (what is written, the kind it belongs to, the rows the feed must then hold past `start`)
    store.entry_insert(&entry(1, "unix:uid:1")).await.unwrap();
    let batch = [entry(2, "unix:uid:2"), entry(1, "unix:uid:1")];
    store.entry_insert_many(&batch).await.unwrap();
    assert!(store.entry_delete("ent_1").await.unwrap());
    assert!(!store.entry_delete("ent_1").await.unwrap(), "already gone");
    let hold = HoldRow {
        kind: "agent".into(),
        value: "spiffe://t/a".into(),
        reason: "incident".into(),
        created_unix_ms: 1,
        created_by: "token:admin".into(),
    };
    assert!(store.hold_insert(&hold).await.unwrap());
    assert!(!store.hold_insert(&hold).await.unwrap(), "already held");
    assert!(store.hold_delete("agent", "spiffe://t/a").await.unwrap());
    let deny = DenyRow {
        kind: "jti".into(),
        value: "abc".into(),
        reason: "leaked".into(),
        created_unix_ms: 5,
    };
    assert!(store.deny_insert(&deny).await.unwrap());
    assert!(store.deny_delete("jti", "abc").await.unwrap());
    store.task_insert(&task_row("T1", 10_000)).await.unwrap();
    let assigned = TaskAgentRow {
        task: "T1".into(),
        agent: "spiffe://t/coder".into(),
        role: "coder".into(),
        assigned_ms: 2,
        assigned_by: "x".into(),
    };
    store.task_agent_put(&assigned).await.unwrap();
    store.task_end("T1", "completed", "done", 3).await.unwrap();
    assert!(
        store
            .task_end("T1", "completed", "again", 4)
            .await
            .unwrap()
            .is_none()
    );
    let risk = RiskRow {
        agent: "spiffe://t/coder".into(),
        score_milli: 700,
        reason: "r".into(),
        set_ms: 1,
        set_by: "x".into(),
    };
    store.risk_set(&risk).await.unwrap();
    let policy = PolicyVersionRow {
        package: "main".into(),
        version: 0,
        language: "cedar".into(),
        entrypoint: None,
        files_json: r#"[["a.cedar","permit(principal,action,resource);"]]"#.into(),
        content_sha256: format!("{:064x}", 1),
        created_unix_ms: 5,
        created_by: "token:admin".into(),
        note: None,
    };
    store.policy_append(&policy, None).await.unwrap();
    // Keys and federations: what the keyring is built from. Writes that change nothing (a
    // taken slot, a refresh that only records an error) are not in the feed.
    assert!(
        store
            .signing_key_insert(&key("k1", "active", 1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .signing_key_insert(&key("k9", "active", 1))
            .await
            .unwrap()
    );
    assert!(
        store
            .signing_key_insert(&key("k2", "prepared", 2))
            .await
            .unwrap()
    );
    store
        .signing_key_activate("x509-ca", "k2", 3)
        .await
        .unwrap();
    assert!(store.signing_key_revoke("k1", 4).await.unwrap());
    let federation = FederationRow {
        trust_domain: "partner.example".into(),
        bundle_url: None,
        endpoint_ca_pem: None,
        bundle_json: r#"{"keys":[]}"#.into(),
        created_unix_ms: 1,
        refreshed_unix_ms: 1,
        last_error: None,
        limits_json: None,
    };
    store.federation_insert(&federation).await.unwrap();
    assert!(
        store
            .federation_refreshed("partner.example", None, 5, Some("unreachable"))
            .await
            .unwrap()
    );
    assert!(
        store
            .federation_refreshed("partner.example", Some(r#"{"keys":[]}"#), 6, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .federation_set_limits("partner.example", "{}")
            .await
            .unwrap()
    );
    assert!(store.federation_delete("partner.example").await.unwrap());
    let table: &[(ChangeKind, &[(&str, ChangeOp)])] = &[
        (
            ChangeKind::Entry,
            &[("ent_1", Put), ("ent_2", Put), ("ent_1", Delete)],
        ),
        (
            ChangeKind::Hold,
            &[("agent:spiffe://t/a", Put), ("agent:spiffe://t/a", Delete)],
        ),
        (ChangeKind::Deny, &[("jti:abc", Put), ("jti:abc", Delete)]),
        (ChangeKind::Task, &[("T1", Put), ("T1", Put), ("T1", Put)]),
        (ChangeKind::Risk, &[("spiffe://t/coder", Put)]),
        (ChangeKind::Policy, &[("main", Put)]),
        (
            ChangeKind::Key,
            &[
                ("k1", Put),
                ("k2", Put),
                ("k2", Put),
                ("k1", Put),
                ("k1", Put),
                ("federation:partner.example", Put),
                ("federation:partner.example", Put),
                ("federation:partner.example", Put),
                ("federation:partner.example", Delete),
            ],
        ),
    ];
    let mut last = start;
    for (kind, want) in table {
        let got = feed(store.as_ref(), *kind, start).await;
        let want: Vec<(String, ChangeOp)> = want.iter().map(|(k, o)| ((*k).into(), *o)).collect();
        assert_eq!(got, want, "{kind}");
        let page = store.changes_since(*kind, start, 1000).await.unwrap();
        assert!(page.rows.windows(2).all(|w| w[0].rev < w[1].rev));
        last = last.max(page.rows.last().map_or(0, |r| r.rev));
        // Past its own last row, a kind's feed is empty.
        let past = page.rows.last().map_or(start, |r| r.rev);
        assert!(feed(store.as_ref(), *kind, past).await.is_empty(), "{kind}");
    }
    assert_eq!(store.change_head().await.unwrap(), last);
    // A batch that conflicts records nothing (it is rolled back whole).
    let conflicting = [entry(3, "unix:uid:3"), {
        // Another entry under an id that is taken.
        let mut e = entry(4, "unix:uid:4");
        e.id = "ent_2".into();
        e
    }];
    assert!(store.entry_insert_many(&conflicting).await.is_err());
    assert_eq!(store.change_head().await.unwrap(), last);
}

async fn change_feed_prunes_below_a_floor(store: Arc<dyn Store>) {
    for n in 1..=5 {
        store
            .entry_insert(&entry(n, &format!("unix:uid:{n}")))
            .await
            .unwrap();
    }
    let all = store
        .changes_since(ChangeKind::Entry, 0, 100)
        .await
        .unwrap();
    assert_eq!((all.floor, all.rows.len()), (0, 5));
    // Pruning "everything written before the far future", three rows at a time.
    assert_eq!(store.changes_prune(i64::MAX, 3).await.unwrap(), 3);
    let third = all.rows[2].rev;
    let page = store
        .changes_since(ChangeKind::Entry, 0, 100)
        .await
        .unwrap();
    assert_eq!(
        page.floor, third,
        "the floor is the highest pruned revision"
    );
    assert_eq!(page.rows, all.rows[3..].to_vec());
    assert_eq!(store.changes_prune(i64::MAX, 100).await.unwrap(), 2);
    assert_eq!(store.changes_prune(i64::MAX, 100).await.unwrap(), 0);
    let last = all.rows[4].rev;
    assert_eq!(store.change_head().await.unwrap(), last);
    let page = store
        .changes_since(ChangeKind::Entry, 0, 100)
        .await
        .unwrap();
    assert_eq!((page.floor, page.rows.len()), (last, 0));
    // Nothing written before the distant past: nothing pruned.
    store.entry_insert(&entry(9, "unix:uid:9")).await.unwrap();
    assert_eq!(store.changes_prune(0, 100).await.unwrap(), 0);
}

/// Concurrent writers while a reader follows: whatever the reader has seen up to revision r,
/// it has seen every row at or below r (no row commits below a revision already visible).
async fn change_feed_revisions_are_visible_in_order(store: Arc<dyn Store>) {
    const WRITERS: u8 = 8;
    const EACH: u8 = 25;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let n = u32::from(w) * 1000 + u32::from(i);
                let mut e = entry(0, &format!("unix:uid:{n}"));
                e.id = format!("ent_{n}");
                e.spiffe_id = format!("spiffe://example.org/agent/{n}");
                store.entry_insert(&e).await.unwrap();
            }
        }));
    }
    let mut seen: Vec<i64> = Vec::new();
    let mut cursor = 0;
    let total = usize::from(WRITERS) * usize::from(EACH);
    while seen.len() < total {
        let page = store
            .changes_since(ChangeKind::Entry, cursor, 7)
            .await
            .unwrap();
        for row in page.rows {
            seen.push(row.rev);
            cursor = row.rev;
        }
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    // Followed incrementally, the reader saw exactly the rows a full read sees now.
    let all: Vec<i64> = store
        .changes_since(ChangeKind::Entry, 0, 10_000)
        .await
        .unwrap()
        .rows
        .into_iter()
        .map(|r| r.rev)
        .collect();
    assert_eq!(seen, all);
}
