//! The live ledger: group-committed appends over the store, the in-memory Merkle tree,
//! checkpoint signing and proofs.

use std::{
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use merkle::{Hash, MemoryTree, leaf_hash, verify_consistency};
use sha2::Sha256;
use store::{CheckpointRow, LedgerRow, Store, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use zeroize::Zeroizing;

use crate::{
    LedgerError,
    event::{Encoded, Event, NewEvent, encode, format_time, leaf_from_head},
    note::{Checkpoint, NoteSigner},
};

/// Tuning for the ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Most entries committed in one transaction.
    pub max_batch: usize,
    /// Capacity of the append queue; appenders wait when it is full (back-pressure).
    pub queue: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            queue: 8192,
        }
    }
}

/// Proof that an append is durable: where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Index of the entry.
    pub seq: u64,
    /// Its leaf hash.
    pub leaf_hash: Hash,
}

/// A signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root at that size.
    pub root: Hash,
    /// The signed note text.
    pub note: String,
}

/// One entry read back from the log.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Index.
    pub index: u64,
    /// Exact leaf bytes.
    pub leaf: Vec<u8>,
    /// RFC 6962 leaf hash.
    pub leaf_hash: Hash,
    /// Decoded event.
    pub event: Event,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgerStats {
    /// Entries in the log.
    pub size: u64,
    /// Entries appended by this process.
    pub appended: u64,
    /// Transactions committed by this process.
    pub batches: u64,
    /// Appends refused because the store failed.
    pub failures: u64,
    /// Size of the latest signed checkpoint.
    pub checkpoint_size: u64,
}

/// An event with its fields resolved (secrets HMAC'd) and encoded up to its sequence number
/// ([`Event::leaf_head`], done by the appending task so the single writer only completes
/// and hashes leaves), waiting for a place in the log.
struct Pending {
    actor: String,
    action: String,
    head: Vec<u8>,
    /// Lease rows to commit in the same transaction as this entry.
    leases: Vec<store::LeaseRow>,
    reply: oneshot::Sender<Result<Receipt, LedgerError>>,
}

struct Shared {
    store: Arc<dyn Store>,
    // INVARIANT: the tree holds exactly the leaves the store has committed, in order, up to
    // tree.size(); the writer task is the only one that pushes to it. Committed is not yet
    // durable: see `durable`.
    tree: RwLock<MemoryTree>,
    // INVARIANT: the first `durable` leaves of the tree are durable in the store (a
    // `Store::ledger_sync` started after they were committed has returned). Only they are
    // shown: `Ledger::size`, entries, checkpoints. Never decreases; at most tree.size().
    durable: AtomicU64,
    // Set once, when making entries durable failed. After a failed fsync the operating
    // system may have dropped the data it could not write, so no later sync can be trusted
    // to have saved it: every append is refused from then on, until a restart reloads the
    // log from what the store really holds.
    sync_failed: OnceLock<String>,
    signer: NoteSigner,
    hmac_key: Zeroizing<[u8; 32]>,
    latest: Mutex<Option<SignedCheckpoint>>,
    // Held while the store and the tree are brought in step (a commit, or a catch-up with
    // what other replicas appended), so no leaf is pushed twice or skipped.
    sync: Mutex<()>,
    latest_size: AtomicU64,
    appended: AtomicU64,
    batches: AtomicU64,
    failures: AtomicU64,
}

/// The live ledger. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("origin", &self.shared.signer.name())
            .field("size", &self.size())
            .finish()
    }
}

fn read_tree(lock: &RwLock<MemoryTree>) -> std::sync::RwLockReadGuard<'_, MemoryTree> {
    // A poisoned lock only means a reader panicked; the tree itself is still consistent
    // because only the writer mutates it, with no fallible step midway.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_tree(lock: &RwLock<MemoryTree>) -> std::sync::RwLockWriteGuard<'_, MemoryTree> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl Ledger {
    /// Opens the ledger over `store`: rebuilds the tree from the stored leaf hashes, checks
    /// it against the latest signed checkpoint (refusing to start if they disagree or the
    /// checkpoint was signed by another key), and starts the group-commit writer.
    pub async fn open(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        hmac_key: Zeroizing<[u8; 32]>,
        config: LedgerConfig,
    ) -> Result<Self, LedgerError> {
        let mut tree = MemoryTree::new();
        load_leaves(&*store, &mut tree).await?;
        // What the store holds is durable from here on (a crash of the previous process may
        // have left committed entries that were never synced).
        store.ledger_sync().await?;
        let durable = AtomicU64::new(tree.size());
        let latest = match store.checkpoint_latest().await? {
            None => None,
            Some(row) => Some(check_stored_checkpoint(&signer, &tree, row)?),
        };
        let latest_size = latest.as_ref().map_or(0, |c| c.size);
        let shared = Arc::new(Shared {
            store,
            tree: RwLock::new(tree),
            durable,
            sync_failed: OnceLock::new(),
            signer,
            hmac_key,
            latest: Mutex::new(latest),
            sync: Mutex::new(()),
            latest_size: AtomicU64::new(latest_size),
            appended: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        tokio::spawn(writer(Arc::clone(&shared), rx, config.max_batch.max(1)));
        Ok(Self { tx, shared })
    }

    /// Appends an event and returns once it is durable in the store. An error means the event
    /// was not recorded: the caller must not perform (or acknowledge) the audited operation.
    pub async fn append(&self, event: NewEvent) -> Result<Receipt, LedgerError> {
        let (pending, rx) = self.prepare(event)?;
        self.tx
            .send(pending)
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Appends several events, in order, and returns once all are durable. They are queued
    /// together, so they usually share one commit: one wait instead of one per event. An error
    /// means at least one was not recorded.
    pub async fn append_all(&self, events: Vec<NewEvent>) -> Result<Vec<Receipt>, LedgerError> {
        self.append_all_with(events, Vec::new()).await
    }

    /// Like [`Ledger::append_all`], and commits `leases` (the store's lease rows) in the same
    /// transaction as the entries: a credential's lease exists exactly when its issuance is
    /// recorded, with one commit for both.
    pub async fn append_all_with(
        &self,
        events: Vec<NewEvent>,
        leases: Vec<store::LeaseRow>,
    ) -> Result<Vec<Receipt>, LedgerError> {
        if events.is_empty() && !leases.is_empty() {
            return Err(LedgerError::InvalidEvent(
                "lease rows ride with an entry: none was given".into(),
            ));
        }
        let mut waiting = Vec::with_capacity(events.len());
        let mut pendings = Vec::with_capacity(events.len());
        for event in events {
            let (pending, rx) = self.prepare(event)?;
            pendings.push(pending);
            waiting.push(rx);
        }
        if let Some(last) = pendings.last_mut() {
            last.leases = leases;
        }
        for pending in pendings {
            self.tx
                .send(pending)
                .await
                .map_err(|_| LedgerError::Closed)?;
        }
        let mut receipts = Vec::with_capacity(waiting.len());
        for rx in waiting {
            receipts.push(rx.await.map_err(|_| LedgerError::Closed)??);
        }
        Ok(receipts)
    }

    /// Checks an event and makes its queue item, with the receiver of its outcome.
    #[allow(clippy::type_complexity, reason = "a private pair")]
    fn prepare(
        &self,
        event: NewEvent,
    ) -> Result<(Pending, oneshot::Receiver<Result<Receipt, LedgerError>>), LedgerError> {
        let Encoded {
            actor,
            action,
            head,
        } = encode(event, |secret| self.hmac(secret))?;
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            actor,
            action,
            head,
            leases: Vec::new(),
            reply,
        };
        Ok((pending, rx))
    }

    /// `hmac-sha256:<base64>` of a secret under this install's key.
    pub fn hmac(&self, secret: &[u8]) -> Result<String, LedgerError> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.shared.hmac_key[..])
            .map_err(|_| LedgerError::BadKey("invalid audit hmac key".into()))?;
        mac.update(secret);
        Ok(format!(
            "hmac-sha256:{}",
            STANDARD.encode(mac.finalize().into_bytes())
        ))
    }

    /// Whether the group-commit writer is running and the store has not failed to make
    /// entries durable (appends can succeed).
    pub fn is_open(&self) -> bool {
        self.refusal().is_none()
    }

    /// Why appends are refused, if they are: the writer stopped, or the store failed to make
    /// entries durable (then until a restart).
    pub fn refusal(&self) -> Option<String> {
        if let Err(e) = not_poisoned(&self.shared) {
            return Some(e.to_string());
        }
        self.tx
            .is_closed()
            .then(|| "the ledger writer stopped".to_owned())
    }

    /// Entries durably in the log (and in the tree). Entries committed but not yet synced
    /// are not counted, shown or signed.
    pub fn size(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// The log's origin (also the checkpoint key name).
    pub fn origin(&self) -> &str {
        self.shared.signer.name()
    }

    /// The verifier key in `vkey` form.
    pub fn vkey(&self) -> String {
        self.shared.signer.vkey()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            size: self.size(),
            appended: self.shared.appended.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            checkpoint_size: self.shared.latest_size.load(Ordering::Relaxed),
        }
    }

    /// Root hash at `size` (at most [`Ledger::size`]).
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        self.within_durable(size)?;
        Ok(read_tree(&self.shared.tree).root_at(size)?)
    }

    /// Leaf hash of entry `index`, from memory (entries below [`Ledger::size`] only).
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        if index >= self.size() {
            return None;
        }
        read_tree(&self.shared.tree).leaf(index)
    }

    /// Inclusion proof of `index` in the tree of `size` leaves (at most [`Ledger::size`]).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        self.within_durable(size)?;
        Ok(read_tree(&self.shared.tree).inclusion_proof(index, size)?)
    }

    /// Consistency proof from `size1` to `size2` (at most [`Ledger::size`]).
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, LedgerError> {
        self.within_durable(size2)?;
        Ok(read_tree(&self.shared.tree).consistency_proof(size1, size2)?)
    }

    /// Refuses tree sizes past the durable entries, as the tree refuses sizes past its end:
    /// a root over entries that are committed but not yet synced is never shown.
    fn within_durable(&self, size: u64) -> Result<(), LedgerError> {
        let durable = self.size();
        if size > durable {
            return Err(merkle::ProofError::InvalidSizes {
                size1: size,
                size2: durable,
                detail: ": size is beyond the log",
            }
            .into());
        }
        Ok(())
    }

    /// Entries `[from, from + limit)` that are in the tree, with their decoded events.
    pub async fn entries(&self, from: u64, limit: u32) -> Result<Vec<StoredEntry>, LedgerError> {
        let size = self.size();
        if from >= size {
            return Ok(Vec::new());
        }
        let limit = limit.min(u32::try_from(size - from).unwrap_or(u32::MAX));
        let rows = self.shared.store.ledger_entries(from, limit).await?;
        rows.into_iter()
            .map(|row| {
                let event = Event::from_leaf(&row.leaf)
                    .map_err(|e| LedgerError::Integrity(format!("entry {}: {e}", row.seq)))?;
                Ok(StoredEntry {
                    index: row.seq,
                    leaf_hash: Hash(row.leaf_hash),
                    leaf: row.leaf,
                    event,
                })
            })
            .collect()
    }

    /// The latest signed checkpoint, if any was signed yet.
    pub async fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.shared.latest.lock().await.clone()
    }

    /// Signs a checkpoint for the current tree, unless the latest one already covers it.
    /// Never signs a checkpoint inconsistent with the previous one: the tree's root at the
    /// previous size must equal the previously signed root, checked with a consistency
    /// proof, or nothing is signed.
    pub async fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        let shared = &self.shared;
        let mut latest = shared.latest.lock().await;
        let (size, root, proof) = {
            let tree = read_tree(&shared.tree);
            let size = self.size();
            let proof = match &*latest {
                Some(prev) if prev.size > 0 && prev.size <= size => {
                    Some(tree.consistency_proof(prev.size, size)?)
                }
                _ => None,
            };
            (size, tree.root_at(size)?, proof)
        };
        if let Some(prev) = &*latest {
            if prev.size > size {
                return Err(LedgerError::Integrity(format!(
                    "tree size {size} is below the signed size {}",
                    prev.size
                )));
            }
            if let Some(proof) = proof {
                verify_consistency(prev.size, size, &prev.root.0, &root.0, &proof).map_err(
                    |e| {
                        LedgerError::Integrity(format!(
                            "tree at {size} is not consistent with the checkpoint at {}: {e}",
                            prev.size
                        ))
                    },
                )?;
            }
            if prev.size == size {
                return Ok(prev.clone());
            }
        }
        let checkpoint = Checkpoint {
            origin: shared.signer.name().to_owned(),
            size,
            root,
        };
        let note = shared.signer.sign(&checkpoint.to_text())?;
        shared
            .store
            .checkpoint_insert(&CheckpointRow {
                tree_size: size,
                root: root.0,
                note: note.clone(),
                created_unix_ms: now_ms(),
            })
            .await?;
        let signed = SignedCheckpoint { size, root, note };
        shared.latest_size.store(size, Ordering::Relaxed);
        *latest = Some(signed.clone());
        Ok(signed)
    }

    /// Loads entries other writers (replicas sharing the database) appended since this
    /// process last looked, re-hashing each. Returns the new size.
    pub async fn refresh(&self) -> Result<u64, LedgerError> {
        let upto = {
            let _step = self.shared.sync.lock().await;
            catch_up(&self.shared).await?;
            read_tree(&self.shared.tree).size()
        };
        if upto > self.size() {
            make_durable(&self.shared, upto).await?;
        }
        Ok(self.size())
    }

    /// Every `interval`, until `shutdown` turns true: catches up with entries other replicas
    /// appended, then signs a checkpoint if the log grew. Failures are logged and retried at
    /// the next tick.
    pub fn spawn_checkpointer(
        &self,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // A dropped sender counts as "stop" (and must not spin this loop).
                let stop = tokio::select! {
                    _ = ticker.tick() => *shutdown.borrow(),
                    changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
                };
                if let Err(e) = ledger.refresh().await {
                    tracing::error!(error = %e, "catching up with the shared store failed");
                }
                if ledger.size() > ledger.shared.latest_size.load(Ordering::Relaxed)
                    || ledger.shared.latest_size.load(Ordering::Relaxed) == 0
                {
                    if let Err(e) = ledger.checkpoint().await {
                        tracing::error!(error = %e, "scheduled checkpoint failed");
                    }
                }
                if stop {
                    return;
                }
            }
        })
    }
}

async fn load_leaves(store: &dyn Store, tree: &mut MemoryTree) -> Result<(), LedgerError> {
    const PAGE: u32 = 100_000;
    loop {
        let from = tree.size();
        let page = store.ledger_leaf_hashes(from, PAGE).await?;
        let n = page.len();
        for h in page {
            tree.push(Hash(h));
        }
        if n < PAGE as usize {
            return Ok(());
        }
    }
}

fn check_stored_checkpoint(
    signer: &NoteSigner,
    tree: &MemoryTree,
    row: CheckpointRow,
) -> Result<SignedCheckpoint, LedgerError> {
    let text = signer.verifier().verify(&row.note).map_err(|_| {
        LedgerError::Integrity(format!(
            "the latest checkpoint (size {}) is not signed by this install's ledger key `{}`: \
             wrong data directory or key file?",
            row.tree_size,
            signer.name()
        ))
    })?;
    let cp = Checkpoint::parse(text)?;
    if cp.size != row.tree_size || cp.root.0 != row.root {
        return Err(LedgerError::Integrity(
            "checkpoint row does not match its signed note".into(),
        ));
    }
    let root = tree.root_at(cp.size).map_err(|_| {
        LedgerError::Integrity(format!(
            "the store holds {} entries but a checkpoint was signed at size {}: entries are missing",
            tree.size(),
            cp.size
        ))
    })?;
    if root != cp.root {
        return Err(LedgerError::Integrity(format!(
            "the stored entries do not match the checkpoint signed at size {}: the log was altered",
            cp.size
        )));
    }
    Ok(SignedCheckpoint {
        size: cp.size,
        root: cp.root,
        note: row.note,
    })
}

/// Most scheduler yields the writer spends waiting for just-answered callers to come back
/// before it starts the next commit (a few microseconds each; see `writer`).
const GATHER_YIELDS: usize = 16;

/// Committed batches waiting for the syncer: at most this many before the writer waits.
const SYNC_QUEUE: usize = 64;

/// A batch committed to the store, not yet known to be durable.
struct Written {
    /// Log size once this batch is in.
    end: u64,
    replies: Vec<(oneshot::Sender<Result<Receipt, LedgerError>>, Receipt)>,
}

/// The group-commit writer. Commits batches one after the other; the syncer makes them
/// durable and answers their appenders, so the next batch is written while the previous one
/// is being synced.
async fn writer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Pending>, max_batch: usize) {
    let (written_tx, written_rx) = mpsc::channel(SYNC_QUEUE);
    tokio::spawn(syncer(Arc::clone(&shared), written_rx));
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    // How many appenders were active around the last commit: the batch just committed plus
    // those already queued behind it.
    let mut active = 0usize;
    loop {
        // Adaptive group commit: callers answered a moment ago usually append again at once.
        // Without this short gather, N steady writers settle into two alternating half-size
        // batches; with it they share one when they come back in time. Since the syncer
        // answers a batch only after its sync, they often do not, and batches are smaller
        // than with a commit that waited for the disk (docs/benchmarks.md, issue 4, eighth
        // session). Bounded by a few yields, so a lone writer loses only microseconds.
        for _ in 0..GATHER_YIELDS {
            if rx.len() >= active.min(max_batch) {
                break;
            }
            tokio::task::yield_now().await;
        }
        if rx.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let result = commit(&shared, &batch).await;
        active = batch.len() + rx.len();
        match result {
            Ok(receipts) => {
                shared.batches.fetch_add(1, Ordering::Relaxed);
                let written = Written {
                    end: receipts.last().map_or(0, |r| r.seq + 1),
                    replies: batch.drain(..).map(|p| p.reply).zip(receipts).collect(),
                };
                if let Err(mpsc::error::SendError(lost)) = written_tx.send(written).await {
                    // The syncer only stops when this writer does; answer anyway.
                    for (reply, _) in lost.replies {
                        let _ = reply.send(Err(LedgerError::Closed));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "ledger append failed; refusing the batch");
                shared
                    .failures
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Makes committed batches durable and answers their appenders: one `Store::ledger_sync`
/// for every batch committed while the previous sync ran (they are in the same log, so one
/// sync started after the last of them covers them all).
async fn syncer(shared: Arc<Shared>, mut rx: mpsc::Receiver<Written>) {
    let mut round: Vec<Written> = Vec::with_capacity(SYNC_QUEUE);
    while rx.recv_many(&mut round, SYNC_QUEUE).await > 0 {
        let upto = round.iter().map(|w| w.end).max().unwrap_or(0);
        let outcome = make_durable(&shared, upto).await;
        let entries: usize = round.iter().map(|w| w.replies.len()).sum();
        let counter = if outcome.is_ok() {
            &shared.appended
        } else {
            &shared.failures
        };
        counter.fetch_add(entries as u64, Ordering::Relaxed);
        for (reply, receipt) in round.drain(..).flat_map(|w| w.replies) {
            let _ = reply.send(outcome.clone().map(|()| receipt));
        }
    }
}

/// Syncs the store and then counts the first `upto` leaves as durable. The caller read
/// `upto` before calling: only leaves committed before the sync started.
async fn make_durable(shared: &Shared, upto: u64) -> Result<(), LedgerError> {
    not_poisoned(shared)?;
    match shared.store.ledger_sync().await {
        Ok(()) => {
            shared.durable.fetch_max(upto, Ordering::AcqRel);
            Ok(())
        }
        Err(e) => {
            let why = e.to_string();
            tracing::error!(error = %why, "making ledger entries durable failed; refusing every append until restart");
            let _ = shared.sync_failed.set(why.clone());
            Err(sync_failed_error(&why))
        }
    }
}

/// Refuses once a sync has failed (see `Shared::sync_failed`).
fn not_poisoned(shared: &Shared) -> Result<(), LedgerError> {
    shared
        .sync_failed
        .get()
        .map_or(Ok(()), |why| Err(sync_failed_error(why)))
}

fn sync_failed_error(why: &str) -> LedgerError {
    LedgerError::Store(format!(
        "making ledger entries durable failed ({why}); appends are refused until Warden \
         restarts and reloads the log from the store"
    ))
}

/// Most tries to append one batch while other writers keep appending first. Each lost try
/// means another writer made progress, so the log as a whole never stalls; past this many the
/// batch is refused (fail closed) rather than retried forever.
const MAX_APPEND_ATTEMPTS: u32 = 64;

/// Writes one batch in one transaction, retrying after catching up if another writer (a
/// replica sharing the database) appended first.
async fn commit(shared: &Shared, batch: &[Pending]) -> Result<Vec<Receipt>, LedgerError> {
    not_poisoned(shared)?;
    let _step = shared.sync.lock().await;
    for attempt in 0..MAX_APPEND_ATTEMPTS {
        let base = read_tree(&shared.tree).size();
        let time_ms = now_ms();
        let time = format_time(time_ms);
        let mut rows = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            let seq = base + i as u64;
            let leaf = leaf_from_head(&p.head, seq, &time);
            rows.push(LedgerRow {
                seq,
                leaf_hash: leaf_hash(&leaf).0,
                leaf,
                time_unix_ms: time_ms,
                actor: p.actor.clone(),
                action: p.action.clone(),
            });
        }
        let leases: Vec<store::LeaseRow> = batch
            .iter()
            .flat_map(|p| p.leases.iter().cloned())
            .collect();
        match shared
            .store
            .ledger_append_unsynced(base, &rows, &leases)
            .await
        {
            Ok(()) => {
                let mut tree = write_tree(&shared.tree);
                return Ok(rows
                    .iter()
                    .map(|r| {
                        tree.push(Hash(r.leaf_hash));
                        Receipt {
                            seq: r.seq,
                            leaf_hash: Hash(r.leaf_hash),
                        }
                    })
                    .collect());
            }
            Err(StoreError::Conflict(_)) => {
                // Someone else appended: load their leaves (checking each hash against its
                // bytes) and try again on top of them, after a short random pause so that
                // writers hammering one database do not keep colliding in lockstep.
                catch_up(shared).await?;
                let pause = rand::random::<u64>() % (200 * (u64::from(attempt) + 1));
                tokio::time::sleep(Duration::from_micros(pause)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(LedgerError::Store(
        "could not append after repeated conflicts with another writer".into(),
    ))
}

/// Pushes the store's rows beyond the tree into the tree. Callers hold `shared.sync`.
async fn catch_up(shared: &Shared) -> Result<(), LedgerError> {
    loop {
        let from = read_tree(&shared.tree).size();
        let rows = shared.store.ledger_entries(from, 10_000).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut tree = write_tree(&shared.tree);
        for row in rows {
            if row.seq != tree.size() || leaf_hash(&row.leaf).0 != row.leaf_hash {
                return Err(LedgerError::Integrity(format!(
                    "stored entry {} does not match its leaf hash",
                    row.seq
                )));
            }
            tree.push(Hash(row.leaf_hash));
        }
    }
}
