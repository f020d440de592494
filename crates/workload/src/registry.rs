//! The registration entries as the Workload API and decisions read them: loaded once, then
//! kept current from the store's change feed, so that a change costs what changed and a
//! caller's lookup costs what matches it, whatever the number of entries.
//!
//! Matching a caller's selectors to entries does not scan. Each entry is filed under one of
//! its own selectors (its *key*: the one whose bucket was smallest when it was filed). An
//! entry matches when all of its selectors are among the caller's, so its key is among them
//! too: looking in the buckets of the caller's selectors (a handful) finds every match, each
//! once, and only entries that share a selector with the caller are examined.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use identity::{Selector, matches};
use store::{ChangeKind, ChangeOp, EntryRow, Store, StoreError};

/// Rows read from the change feed per query.
const PAGE: u32 = 1000;

/// An entry with its selectors parsed (`None` when they do not parse: it then matches no
/// caller, as it never did).
struct Filed {
    row: EntryRow,
    selectors: Option<Vec<Selector>>,
    /// The selector it is filed under.
    key: Option<Selector>,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Arc<Filed>>,
    /// Entry ids by the selector they are filed under.
    buckets: HashMap<Selector, HashSet<String>>,
    /// `(created, entry id)` of each SPIFFE ID's entries, oldest first (most have one).
    by_spiffe_id: HashMap<String, Vec<(i64, String)>>,
    /// For each owner, how many entries name each of its SPIFFE IDs.
    by_owner: HashMap<String, HashMap<String, usize>>,
}

impl Index {
    fn insert(&mut self, row: EntryRow) {
        self.remove(&row.id);
        let selectors: Option<Vec<Selector>> = row
            .selectors
            .split('\n')
            .map(Selector::parse)
            .collect::<Result<_, _>>()
            .ok()
            .filter(|s: &Vec<Selector>| !s.is_empty());
        let key = selectors.as_ref().and_then(|all| {
            all.iter()
                .min_by_key(|s| (self.buckets.get(*s).map_or(0, HashSet::len), (*s).clone()))
                .cloned()
        });
        if let Some(key) = &key {
            self.buckets
                .entry(key.clone())
                .or_default()
                .insert(row.id.clone());
        }
        let of_id = self.by_spiffe_id.entry(row.spiffe_id.clone()).or_default();
        let at = (row.created_unix_ms, row.id.clone());
        if let Err(i) = of_id.binary_search(&at) {
            of_id.insert(i, at);
        }
        if let Some(owner) = &row.owner {
            *self
                .by_owner
                .entry(owner.clone())
                .or_default()
                .entry(row.spiffe_id.clone())
                .or_default() += 1;
        }
        self.entries.insert(
            row.id.clone(),
            Arc::new(Filed {
                row,
                selectors,
                key,
            }),
        );
    }

    fn remove(&mut self, id: &str) {
        let Some(filed) = self.entries.remove(id) else {
            return;
        };
        if let Some(key) = &filed.key {
            if let Some(bucket) = self.buckets.get_mut(key) {
                bucket.remove(id);
                if bucket.is_empty() {
                    self.buckets.remove(key);
                }
            }
        }
        let row = &filed.row;
        if let Some(set) = self.by_spiffe_id.get_mut(&row.spiffe_id) {
            set.retain(|(_, id)| *id != row.id);
            if set.is_empty() {
                self.by_spiffe_id.remove(&row.spiffe_id);
            }
        }
        if let Some(owner) = &row.owner {
            if let Some(ids) = self.by_owner.get_mut(owner) {
                if let Some(n) = ids.get_mut(&row.spiffe_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        ids.remove(&row.spiffe_id);
                    }
                }
                if ids.is_empty() {
                    self.by_owner.remove(owner);
                }
            }
        }
    }

    fn matching(&self, attested: &[Selector]) -> Vec<EntryRow> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out: Vec<&EntryRow> = Vec::new();
        for selector in attested {
            let Some(bucket) = self.buckets.get(selector) else {
                continue;
            };
            for id in bucket {
                let Some(filed) = self.entries.get(id) else {
                    continue;
                };
                let Some(required) = &filed.selectors else {
                    continue;
                };
                if matches(required, attested) && seen.insert(id.as_str()) {
                    out.push(&filed.row);
                }
            }
        }
        out.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        out.into_iter().cloned().collect()
    }

    fn facts(&self, spiffe_id: &str) -> Option<AgentFacts> {
        let (_, first) = self.by_spiffe_id.get(spiffe_id)?.first()?;
        let row = &self.entries.get(first)?.row;
        Some(AgentFacts {
            kind: row.agent_kind.clone().unwrap_or_default(),
            owner: row.owner.clone().unwrap_or_default(),
        })
    }

    fn agents_of(&self, owner: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .by_owner
            .get(owner)
            .map(|ids| ids.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// What an identity's registration says about the agent (its first entry speaks for it:
/// entries of one identity differ only in selectors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// The entry's agent kind (empty when none).
    pub kind: String,
    /// The entry's owner, the vendor (empty when none).
    pub owner: String,
}

/// How the registry has kept up, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Entries held.
    pub entries: usize,
    /// The change-feed revision applied.
    pub revision: i64,
    /// Changes applied one by one.
    pub changes_applied: u64,
    /// Full reloads (the first load included).
    pub full_reloads: u64,
}

/// The registration entries, indexed; see the module documentation.
pub struct Registry {
    store: Arc<dyn Store>,
    index: RwLock<Index>,
    /// The revision applied (`None`: nothing loaded yet); held while syncing, so syncs apply
    /// changes one at a time, in order.
    revision: tokio::sync::Mutex<Option<i64>>,
    /// A copy of the revision for [`Registry::stats`] (0 before the first load).
    revision_seen: std::sync::atomic::AtomicI64,
    applied: AtomicU64,
    reloads: AtomicU64,
    /// Syncs begun: each takes the next number, under the lock, before it reads the store.
    syncs_begun: AtomicU64,
    /// The number of the last sync that finished (written under the lock).
    synced: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry over `store`; the first [`Registry::sync`] loads it.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            index: RwLock::new(Index::default()),
            revision: tokio::sync::Mutex::new(None),
            revision_seen: std::sync::atomic::AtomicI64::new(0),
            applied: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            syncs_begun: AtomicU64::new(0),
            synced: AtomicU64::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings the registry up to the store: loads it in full the first time (or when the
    /// change feed no longer reaches back to the revision held), else applies the entries
    /// changed since. Returns how many changes were applied (a full load counts one per
    /// entry). When nothing changed, this is one indexed query.
    pub async fn sync(&self) -> Result<usize, StoreError> {
        let mut held = self.revision.lock().await;
        self.sync_held(&mut held, HashMap::new()).await
    }

    /// Like [`Registry::sync`], for a caller whose own write has committed and must be
    /// applied before it answers: if a sync that began after the call finished meanwhile,
    /// it read that write, and nothing more is done. Concurrent writers then share one read
    /// of the store instead of queueing one each. `written` are the entries the caller
    /// inserted: the feed still decides whether and when each applies, but their content
    /// is not read back (an entry never changes under its id).
    pub async fn sync_after_write(&self, written: Vec<EntryRow>) -> Result<usize, StoreError> {
        let ticket = self.syncs_begun.load(Ordering::SeqCst);
        let mut held = self.revision.lock().await;
        let known = written
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();
        self.sync_unless_done_since(ticket, &mut held, known).await
    }

    /// Applies an entry this server has just inserted, which the change feed records at
    /// `rev`, before the caller answers. When `rev` directly follows the last entry change
    /// applied, nothing can come between them and the entry is applied without reading the
    /// store; when it has been applied already, nothing is done; otherwise this is
    /// [`Registry::sync_after_write`].
    pub async fn apply_inserted(&self, rev: i64, row: EntryRow) -> Result<usize, StoreError> {
        let ticket = self.syncs_begun.load(Ordering::SeqCst);
        let mut held = self.revision.lock().await;
        match *held {
            Some(revision) if revision >= rev => return Ok(0),
            Some(revision) if revision.checked_add(1) == Some(rev) => {
                self.write().insert(row);
                *held = Some(rev);
                self.revision_seen.store(rev, Ordering::Relaxed);
                self.applied.fetch_add(1, Ordering::Relaxed);
                return Ok(1);
            }
            _ => {}
        }
        let known = HashMap::from([(row.id.clone(), row)]);
        self.sync_unless_done_since(ticket, &mut held, known).await
    }

    /// Syncs, unless a sync that began after `ticket` (the count of syncs begun, read once
    /// the caller's write had committed) has finished: that one read the write already.
    async fn sync_unless_done_since(
        &self,
        ticket: u64,
        held: &mut Option<i64>,
        known: HashMap<String, EntryRow>,
    ) -> Result<usize, StoreError> {
        if self.synced.load(Ordering::SeqCst) > ticket {
            return Ok(0);
        }
        self.sync_held(held, known).await
    }

    async fn sync_held(
        &self,
        held: &mut Option<i64>,
        known: HashMap<String, EntryRow>,
    ) -> Result<usize, StoreError> {
        let begun = self.syncs_begun.fetch_add(1, Ordering::SeqCst) + 1;
        let applied = self.catch_up(held, known).await?;
        self.synced.store(begun, Ordering::SeqCst);
        Ok(applied)
    }

    /// Applies the feed from `held` on; the content of an entry put is taken from `known`
    /// when it is there, else read from the store.
    async fn catch_up(
        &self,
        held: &mut Option<i64>,
        mut known: HashMap<String, EntryRow>,
    ) -> Result<usize, StoreError> {
        let mut applied = 0;
        loop {
            let Some(revision) = *held else {
                applied += self.reload(held).await?;
                continue;
            };
            let page = self
                .store
                .changes_since(ChangeKind::Entry, revision, PAGE)
                .await?;
            if page.floor > revision {
                tracing::warn!(
                    revision,
                    floor = page.floor,
                    "registration entries fell behind the change feed; reloading them in full"
                );
                applied += self.reload(held).await?;
                continue;
            }
            let Some(last) = page.rows.last().map(|r| r.rev) else {
                return Ok(applied);
            };
            // The latest row of each entry decides; an entry's content is read once.
            let mut latest: HashMap<&str, ChangeOp> = HashMap::new();
            for row in &page.rows {
                latest.insert(row.key.as_str(), row.op);
            }
            let mut rows: HashMap<String, EntryRow> = HashMap::new();
            let mut unknown: Vec<String> = Vec::new();
            for (id, op) in &latest {
                if *op == ChangeOp::Put {
                    match known.remove(*id) {
                        Some(row) => {
                            rows.insert(row.id.clone(), row);
                        }
                        None => unknown.push((*id).to_owned()),
                    }
                }
            }
            if !unknown.is_empty() {
                rows.extend(
                    self.store
                        .entry_get_many(&unknown)
                        .await?
                        .into_iter()
                        .map(|row| (row.id.clone(), row)),
                );
            }
            {
                let mut index = self.write();
                for id in latest.keys() {
                    // Deleted, or put and deleted again since: gone either way.
                    match rows.remove(*id) {
                        Some(row) => index.insert(row),
                        None => index.remove(id),
                    }
                }
            }
            applied += latest.len();
            self.applied
                .fetch_add(latest.len() as u64, Ordering::Relaxed);
            *held = Some(last);
            self.revision_seen.store(last, Ordering::Relaxed);
            if page.rows.len() < PAGE as usize {
                return Ok(applied);
            }
        }
    }

    /// Reads every entry and replaces the index; follows the feed from the revision read
    /// before them (changes in between are applied again, which is harmless).
    async fn reload(&self, held: &mut Option<i64>) -> Result<usize, StoreError> {
        let head = self.store.change_head().await?;
        let rows = self.store.entry_list().await?;
        let n = rows.len();
        let mut index = Index::default();
        for row in rows {
            index.insert(row);
        }
        *self.write() = index;
        *held = Some(head);
        self.revision_seen.store(head, Ordering::Relaxed);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(n)
    }

    /// The entries whose selectors are all among `attested`, oldest first (the order the
    /// Workload API lists identities in; the first is the default).
    pub fn matching(&self, attested: &[Selector]) -> Vec<EntryRow> {
        self.read().matching(attested)
    }

    /// What the registration of `spiffe_id` says about the agent; `None` when unregistered.
    pub fn facts(&self, spiffe_id: &str) -> Option<AgentFacts> {
        self.read().facts(spiffe_id)
    }

    /// Every SPIFFE ID whose registration names `owner`, sorted.
    pub fn agents_of(&self, owner: &str) -> Vec<String> {
        self.read().agents_of(owner)
    }

    /// How the registry has kept up.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            entries: self.read().entries.len(),
            revision: self.revision_seen.load(Ordering::Relaxed),
            changes_applied: self.applied.load(Ordering::Relaxed),
            full_reloads: self.reloads.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn row(id: &str, spiffe_id: &str, selectors: &str, created: i64) -> EntryRow {
        EntryRow {
            id: id.into(),
            spiffe_id: spiffe_id.into(),
            selectors: selectors.into(),
            x509_ttl_secs: None,
            jwt_ttl_secs: None,
            agent_kind: Some("coder".into()),
            owner: Some("acme".into()),
            description: None,
            created_unix_ms: created,
        }
    }

    fn sel(s: &str) -> Vec<Selector> {
        s.split(' ').map(|s| Selector::parse(s).unwrap()).collect()
    }

    /// The index answers like a scan of every entry, as entries come and go.
    #[test]
    fn matching_equals_a_scan() {
        let entries = [
            row("e1", "spiffe://t/a", "unix:uid:1000", 1),
            row("e2", "spiffe://t/b", "unix:path:/bin/b\nunix:uid:1000", 2),
            row("e3", "spiffe://t/c", "unix:path:/bin/c\nunix:uid:1000", 3),
            row("e4", "spiffe://t/d", "unix:gid:5\nunix:path:/bin/b", 4),
            row("e5", "spiffe://t/a", "unix:path:/bin/a", 5),
            row("e6", "spiffe://t/x", "not a selector", 6),
            row("e7", "spiffe://t/e", "unix:gid:5\nunix:uid:1000", 7),
        ];
        let callers = [
            "unix:uid:1000 unix:gid:5 unix:path:/bin/b",
            "unix:uid:1000 unix:path:/bin/c",
            "unix:uid:1000",
            "unix:uid:1 unix:path:/bin/a",
            "unix:gid:5 unix:path:/bin/b",
            "unix:uid:2",
        ];
        let scan = |live: &[EntryRow], caller: &[Selector]| -> Vec<String> {
            live.iter()
                .filter(|e| {
                    let req: Result<Vec<Selector>, _> =
                        e.selectors.split('\n').map(Selector::parse).collect();
                    req.is_ok_and(|r| matches(&r, caller))
                })
                .map(|e| e.id.clone())
                .collect()
        };
        let check = |index: &Index, live: &[EntryRow]| {
            for caller in callers {
                let caller = sel(caller);
                let got: Vec<String> = index.matching(&caller).into_iter().map(|e| e.id).collect();
                assert_eq!(got, scan(live, &caller), "{caller:?}");
            }
        };
        let mut index = Index::default();
        let mut live: Vec<EntryRow> = Vec::new();
        for e in &entries {
            index.insert(e.clone());
            live.push(e.clone());
            check(&index, &live);
        }
        // Changed in place (new selectors, same id), then removed.
        let moved = row("e3", "spiffe://t/c", "unix:gid:5", 3);
        index.insert(moved.clone());
        live.retain(|e| e.id != "e3");
        live.push(moved);
        live.sort_by_key(|e| e.created_unix_ms);
        check(&index, &live);
        for id in ["e2", "e1", "e6", "nothing"] {
            index.remove(id);
            live.retain(|e| e.id != id);
            check(&index, &live);
        }
        // Entries sharing a selector are spread over their other selectors' buckets.
        assert!(
            index.buckets.values().all(|b| b.len() <= 2),
            "{:?}",
            index.buckets
        );
    }

    #[test]
    fn facts_and_owners_follow_the_entries() {
        let mut index = Index::default();
        index.insert(row("e1", "spiffe://t/a", "unix:uid:1", 1));
        let mut later = row("e2", "spiffe://t/a", "unix:uid:2", 2);
        later.agent_kind = Some("reviewer".into());
        index.insert(later);
        index.insert(row("e3", "spiffe://t/b", "unix:uid:3", 3));
        assert_eq!(index.facts("spiffe://t/a").unwrap().kind, "coder");
        assert_eq!(
            index.agents_of("acme"),
            vec!["spiffe://t/a", "spiffe://t/b"]
        );
        index.remove("e1");
        assert_eq!(index.facts("spiffe://t/a").unwrap().kind, "reviewer");
        index.remove("e2");
        assert_eq!(index.facts("spiffe://t/a"), None);
        assert_eq!(index.agents_of("acme"), vec!["spiffe://t/b"]);
        index.remove("e3");
        assert!(index.agents_of("acme").is_empty());
        assert!(index.buckets.is_empty() && index.by_owner.is_empty());
    }

    /// An entry this server inserted applies at once when it is the next entry change, else
    /// through the feed, which also brings what came between; a later change (here, a
    /// deletion) is never undone by applying an earlier insert.
    #[tokio::test]
    async fn own_inserts_apply_in_feed_order() {
        let dir = tempfile::tempdir().unwrap();
        let url: store::StoreUrl = format!("sqlite://{}/w.db", dir.path().display())
            .parse()
            .unwrap();
        let store = store::open(&url).await.unwrap();
        let registry = Registry::new(Arc::clone(&store));
        registry.sync().await.unwrap();
        let caller = sel("unix:uid:7");
        let ids = |r: &Registry| -> Vec<String> {
            r.matching(&caller).into_iter().map(|e| e.id).collect()
        };

        // Next in the feed: applied without a sync.
        let e1 = row("e1", "spiffe://t/a", "unix:uid:7", 1);
        let rev1 = store.entry_insert(&e1).await.unwrap();
        assert_eq!(registry.apply_inserted(rev1, e1).await.unwrap(), 1);
        assert_eq!(ids(&registry), ["e1"]);
        let begun = registry.syncs_begun.load(Ordering::SeqCst);

        // Another write came first: the feed brings both, in order.
        let e2 = row("e2", "spiffe://t/b", "unix:uid:7", 2);
        let e3 = row("e3", "spiffe://t/c", "unix:uid:7", 3);
        store.entry_insert(&e2).await.unwrap();
        let rev3 = store.entry_insert(&e3).await.unwrap();
        assert_eq!(registry.apply_inserted(rev3, e3.clone()).await.unwrap(), 2);
        assert_eq!(ids(&registry), ["e1", "e2", "e3"]);
        assert_eq!(registry.syncs_begun.load(Ordering::SeqCst), begun + 1);
        // Applied already: nothing to do.
        assert_eq!(registry.apply_inserted(rev3, e3).await.unwrap(), 0);

        // Deleted before its insert is applied: the deletion, later in the feed, wins.
        let e4 = row("e4", "spiffe://t/d", "unix:uid:7", 4);
        let rev4 = store.entry_insert(&e4).await.unwrap();
        assert!(store.entry_delete("e4").await.unwrap());
        registry.apply_inserted(rev4, e4).await.unwrap();
        registry.sync().await.unwrap();
        assert_eq!(ids(&registry), ["e1", "e2", "e3"]);
        assert_eq!(registry.stats().full_reloads, 1);
    }
}
