//! The live ledger over a real SQLite store: group commit, durability across reopen,
//! integrity checks at open, fail-closed appends, secret handling.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::{collections::BTreeSet, sync::Arc};

use ledger::{Ledger, LedgerConfig, LedgerError, NewEvent, NoteSigner, OcsfClass, Outcome};
use store::{SqliteStore, Store};
use zeroize::Zeroizing;

const ORIGIN: &str = "test.example/warden/ledger";

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::open(&dir.path().join(name)).await.unwrap()
}

async fn open(store: Arc<dyn Store>, signer: &NoteSigner) -> Result<Ledger, LedgerError> {
    let signer = NoteSigner::from_skey(&signer.to_skey()).unwrap();
    Ledger::open(
        store,
        signer,
        Zeroizing::new([1u8; 32]),
        LedgerConfig::default(),
    )
    .await
}

fn event(i: usize) -> NewEvent {
    NewEvent::new(
        format!("token:t{i}"),
        "api.request",
        Outcome::Success,
        OcsfClass::ApiActivity,
    )
    .field("n", i as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed_gapless_and_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite(&dir, "a.db").await);
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let ledger = open(Arc::clone(&store), &signer).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let l = ledger.clone();
        tasks.push(tokio::spawn(
            async move { l.append(event(i)).await.unwrap() },
        ));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap().seq));
    }
    assert_eq!(seqs, (0..400).collect());
    let stats = ledger.stats();
    assert_eq!(stats.appended, 400);
    assert!(stats.batches < 400, "no batching happened: {stats:?}");

    // Every stored leaf hashes to what the tree holds, and proves into the signed root.
    let cp = ledger.checkpoint().await.unwrap();
    assert_eq!(cp.size, 400);
    let entries = ledger.entries(0, 1000).await.unwrap();
    assert_eq!(entries.len(), 400);
    for e in entries.iter().step_by(37) {
        assert_eq!(merkle::leaf_hash(&e.leaf), e.leaf_hash);
        assert_eq!(e.event.seq, e.index);
        let proof = ledger.inclusion_proof(e.index, cp.size).unwrap();
        merkle::verify_inclusion(e.index, cp.size, &e.leaf_hash, &proof, &cp.root).unwrap();
    }
    let text = signer.verifier().verify(&cp.note).unwrap().to_owned();
    assert_eq!(ledger::Checkpoint::parse(&text).unwrap().root, cp.root);
}

#[tokio::test]
async fn reopen_restores_the_tree_and_checkpoints_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let first = {
        let store: Arc<dyn Store> = Arc::new(sqlite(&dir, "a.db").await);
        let ledger = open(store, &signer).await.unwrap();
        for i in 0..10 {
            ledger.append(event(i)).await.unwrap();
        }
        ledger.checkpoint().await.unwrap()
    };
    let store: Arc<dyn Store> = Arc::new(sqlite(&dir, "a.db").await);
    let ledger = open(store, &signer).await.unwrap();
    assert_eq!(ledger.size(), 10);
    assert_eq!(ledger.latest_checkpoint().await.unwrap(), first);
    // Nothing new: the same checkpoint comes back, no second signature at the same size.
    assert_eq!(ledger.checkpoint().await.unwrap(), first);
    ledger.append(event(10)).await.unwrap();
    let second = ledger.checkpoint().await.unwrap();
    assert_eq!(second.size, 11);
    let proof = ledger.consistency_proof(10, 11).unwrap();
    merkle::verify_consistency(10, 11, &first.root.0, &second.root.0, &proof).unwrap();
}

#[tokio::test]
async fn open_refuses_another_key_and_altered_entries() {
    let dir = tempfile::tempdir().unwrap();
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let original = sqlite(&dir, "a.db").await;
    {
        let ledger = open(Arc::new(original.clone()), &signer).await.unwrap();
        for i in 0..5 {
            ledger.append(event(i)).await.unwrap();
        }
        ledger.checkpoint().await.unwrap();
    }

    // The right store with the wrong key: refused, naming the problem.
    let other = NoteSigner::generate(ORIGIN).unwrap();
    let err = open(Arc::new(original.clone()), &other).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::Integrity(ref m) if m.contains("not signed by")),
        "{err}"
    );

    // A copy of the store with entry 2 rewritten (and its hash recomputed to match).
    let copy = sqlite(&dir, "b.db").await;
    let mut rows = original.ledger_entries(0, 100).await.unwrap();
    let forged = String::from_utf8(rows[2].leaf.clone())
        .unwrap()
        .replace("token:t2", "token:t9");
    rows[2].leaf = forged.into_bytes();
    rows[2].leaf_hash = merkle::leaf_hash(&rows[2].leaf).0;
    copy.ledger_append(0, &rows).await.unwrap();
    copy.checkpoint_insert(&original.checkpoint_latest().await.unwrap().unwrap())
        .await
        .unwrap();
    let err = open(Arc::new(copy.clone()), &signer).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::Integrity(ref m) if m.contains("altered")),
        "{err}"
    );

    // A copy missing its last entry.
    let short = sqlite(&dir, "c.db").await;
    let rows = original.ledger_entries(0, 4).await.unwrap();
    short.ledger_append(0, &rows).await.unwrap();
    short
        .checkpoint_insert(&original.checkpoint_latest().await.unwrap().unwrap())
        .await
        .unwrap();
    let err = open(Arc::new(short), &signer).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::Integrity(ref m) if m.contains("missing")),
        "{err}"
    );
}

#[tokio::test]
async fn appends_fail_closed_when_the_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir, "a.db").await;
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let ledger = open(Arc::new(store.clone()), &signer).await.unwrap();
    ledger.append(event(0)).await.unwrap();
    store.close().await;
    let err = ledger.append(event(1)).await.unwrap_err();
    assert!(matches!(err, LedgerError::Store(_)), "{err}");
    assert_eq!(ledger.size(), 1, "a failed append must not enter the tree");
    assert_eq!(ledger.stats().failures, 1);
}

/// After the store fails to make entries durable, the ledger answers that append with an
/// error and refuses every later one, without retrying the sync: after a failed fsync the
/// data may be gone even if a later fsync succeeds.
#[tokio::test]
async fn a_failed_sync_refuses_every_later_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir, "a.db").await;
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let ledger = open(Arc::new(store.clone()), &signer).await.unwrap();
    ledger.append(event(0)).await.unwrap();
    assert!(ledger.is_open());
    // The write-ahead log vanishes: SQLite still commits into the open file, but it can no
    // longer be synced by name.
    std::fs::remove_file(dir.path().join("a.db-wal")).unwrap();
    let err = ledger.append(event(1)).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::Store(m) if m.contains("durable") && m.contains("a.db-wal")),
        "{err}"
    );
    assert_eq!(ledger.size(), 1, "an entry not known durable is not shown");
    assert!(ledger.entries(0, 10).await.unwrap().len() == 1);
    // Entry 1 was committed (the tree holds it) but is not durable: no root, proof or leaf.
    assert!(ledger.root_at(2).is_err());
    assert!(ledger.inclusion_proof(0, 2).is_err());
    assert!(ledger.consistency_proof(1, 2).is_err());
    assert_eq!(ledger.leaf_hash(1), None);
    assert!(ledger.leaf_hash(0).is_some() && ledger.inclusion_proof(0, 1).is_ok());
    assert!(!ledger.is_open(), "readiness reports the failure");
    let why = ledger.refusal().unwrap();
    assert!(why.contains("durable") && why.contains("restarts"), "{why}");
    let err = ledger.append(event(2)).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::Store(m) if m.contains("restarts")),
        "{err}"
    );
    assert_eq!(ledger.stats().failures, 2);
    // The store itself now fails too (SQLite misses its log); if it could still sign, the
    // checkpoint would cover the durable entry only.
    if let Ok(cp) = ledger.checkpoint().await {
        assert_eq!(cp.size, 1);
    }
}

#[tokio::test]
async fn secrets_are_recorded_only_as_hmac_and_bad_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite(&dir, "a.db").await);
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let ledger = open(store, &signer).await.unwrap();
    let secret = "wdn_super-secret-value";
    let ev = NewEvent::new(
        "token:x",
        "token.use",
        Outcome::Denied,
        OcsfClass::Authentication,
    )
    .secret("token", secret);
    ledger.append(ev.clone()).await.unwrap();
    ledger.append(ev).await.unwrap();
    let entries = ledger.entries(0, 10).await.unwrap();
    let recorded: Vec<&serde_json::Value> =
        entries.iter().map(|e| &e.event.fields["token"]).collect();
    assert!(recorded[0].as_str().unwrap().starts_with("hmac-sha256:"));
    assert_eq!(recorded[0], recorded[1], "equal secrets must correlate");
    for e in &entries {
        assert!(!String::from_utf8_lossy(&e.leaf).contains(secret));
        assert_eq!(e.event.class_uid, 3002);
    }
    let dup = NewEvent::new("a", "x", Outcome::Success, OcsfClass::ApiActivity)
        .field("f", 1)
        .field("f", 2);
    assert!(matches!(
        ledger.append(dup).await,
        Err(LedgerError::InvalidEvent(_))
    ));
    assert_eq!(ledger.size(), 2);
}

/// Two ledgers over one database (replicas): appends from both interleave without forking the
/// log, each catches up with the other, and their checkpoints agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_store_never_fork_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let a = open(Arc::new(sqlite(&dir, "shared.db").await), &signer)
        .await
        .unwrap();
    let b = open(Arc::new(sqlite(&dir, "shared.db").await), &signer)
        .await
        .unwrap();
    for i in 0..5 {
        a.append(event(i)).await.unwrap();
    }
    assert_eq!(b.size(), 0, "b has not looked yet");
    assert_eq!(b.refresh().await.unwrap(), 5);
    assert_eq!(b.append(event(5)).await.unwrap().seq, 5);
    // a is behind: its append conflicts, catches up, and lands after b's.
    assert_eq!(a.append(event(6)).await.unwrap().seq, 6);

    let mut tasks = Vec::new();
    for i in 0..200 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            l.append(event(i)).await.unwrap().seq
        }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap()));
    }
    assert_eq!(seqs, (7..207).collect());
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    assert_eq!(a.size(), 207);
    assert_eq!(a.root_at(207).unwrap(), b.root_at(207).unwrap());
    let (ca, cb) = (a.checkpoint().await.unwrap(), b.checkpoint().await.unwrap());
    assert_eq!(
        ca, cb,
        "both sign the same checkpoint (Ed25519 is deterministic)"
    );
    // Every stored leaf matches its position and hash.
    for e in a.entries(0, 300).await.unwrap() {
        assert_eq!(e.event.seq, e.index);
        assert_eq!(merkle::leaf_hash(&e.leaf), e.leaf_hash);
    }
}
