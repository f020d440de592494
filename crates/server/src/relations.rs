//! The relationship stores inside the server: for each store (tenant) its model in force and
//! an in-memory graph of its tuples at a known revision, kept equal to the database.
//!
//! The database is the truth. A write commits there first (one revision per batch, with the
//! change feed), then every replica — this one at once, others within a second — applies the
//! change feed after its graph's revision. A query that names a revision (`at_least_revision`)
//! newer than the graph first catches up from the feed. At start every store is loaded: its
//! revision is read, its tuples streamed in, then the changes after that revision replayed
//! (replaying writes and deletes in order makes the result exact even if the stream saw some
//! of them).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use rebac::{Graph, Model, Tuple, TupleKey};
use store::{RebacChangeRow, RebacStoreRow, RebacTupleRow, Store, StoreError};

/// The store a request means when it names none.
pub(crate) const DEFAULT_STORE: &str = "default";

/// Tuples handed over per chunk when loading a store.
const LOAD_CHUNK: usize = 10_000;

/// Chunks read ahead of the graph being built from them.
const LOAD_CHUNKS_AHEAD: usize = 4;

/// Expired tuples purged per call (once a minute).
const PURGE_BATCH: u32 = 10_000;

/// Changes read per page when catching up.
const CHANGES_PAGE: u32 = 10_000;

/// One relationship store as this replica sees it.
#[derive(Debug)]
pub(crate) struct RelStore {
    pub(crate) name: String,
    view: RwLock<View>,
    /// Serializes catching up (and so writes' follow-up) within this replica.
    sync: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct View {
    model: Arc<Model>,
    model_version: i64,
    graph: Graph,
}

/// A consistent read of a store: its model and graph under one read lock.
pub(crate) struct Snapshot<'a> {
    guard: std::sync::RwLockReadGuard<'a, View>,
}

impl Snapshot<'_> {
    pub(crate) fn model(&self) -> &Model {
        &self.guard.model
    }
    pub(crate) fn model_version(&self) -> i64 {
        self.guard.model_version
    }
    pub(crate) fn graph(&self) -> &Graph {
        &self.guard.graph
    }
    pub(crate) fn revision(&self) -> u64 {
        self.guard.graph.revision()
    }
}

impl RelStore {
    pub(crate) fn read(&self) -> Snapshot<'_> {
        Snapshot {
            guard: self
                .view
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies the change feed after the graph's revision, up to the database's latest.
    /// Revisions are applied whole: a page that ends inside one leaves it for the next read.
    pub(crate) async fn catch_up(&self, store: &dyn Store) -> Result<u64, StoreError> {
        let _one = self.sync.lock().await;
        let mut limit = CHANGES_PAGE;
        loop {
            let from = self.read().revision();
            let changes = store
                .rebac_changes(&self.name, i64::try_from(from).unwrap_or(i64::MAX), limit)
                .await?;
            if changes.is_empty() {
                return Ok(from);
            }
            let complete = if changes.len() < limit as usize {
                changes.len()
            } else {
                // The last revision of a full page may continue past it.
                let last = changes[changes.len() - 1].revision;
                changes.iter().position(|c| c.revision == last).unwrap_or(0)
            };
            if complete == 0 {
                // One revision larger than the page: read it again, whole.
                limit = limit.saturating_mul(4);
                continue;
            }
            apply_changes(&mut self.write().graph, &self.name, &changes[..complete]);
            limit = CHANGES_PAGE;
            if complete == changes.len() {
                return Ok(self.read().revision());
            }
        }
    }
}

/// Applies `changes` (in feed order) to `graph`, one revision at a time.
fn apply_changes(graph: &mut Graph, store: &str, changes: &[RebacChangeRow]) {
    let mut i = 0;
    while i < changes.len() {
        let revision = changes[i].revision;
        let end = changes[i..]
            .iter()
            .position(|c| c.revision != revision)
            .map_or(changes.len(), |n| i + n);
        let mut writes = Vec::new();
        let mut deletes = Vec::new();
        for change in &changes[i..end] {
            match (tuple_of(&change.tuple), change.operation.as_str()) {
                (Ok(t), "write") => writes.push(t),
                (Ok(t), "delete") => deletes.push(t.key),
                (Ok(_), other) => {
                    tracing::error!(
                        store,
                        revision,
                        operation = other,
                        "unknown change operation; skipped"
                    );
                }
                (Err(e), _) => {
                    tracing::error!(store, revision, error = %e, "stored change is not a valid tuple; skipped");
                }
            }
        }
        if let Err(e) = graph.apply(u64::try_from(revision).unwrap_or(0), writes, deletes) {
            tracing::error!(store, revision, error = %e, "cannot apply a change to the relationship graph");
        }
        i = end;
    }
}

/// A stored model: the DSL as uploaded, or OpenFGA's JSON when it was uploaded as JSON.
pub(crate) fn parse_stored(text: &str) -> Result<Model, rebac::RebacError> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => Model::from_json(&value),
        _ => Model::parse(text),
    }
}

/// A stored tuple row as an engine tuple.
pub(crate) fn tuple_of(row: &RebacTupleRow) -> Result<Tuple, rebac::RebacError> {
    let key = TupleKey::from_parts(&row.object, &row.relation, &row.subject)?;
    Ok(match row.expires_at_ms {
        Some(at) => Tuple::expiring(key, at),
        None => Tuple::new(key),
    })
}

/// An engine tuple as a stored row.
pub(crate) fn row_of(tuple: &Tuple) -> RebacTupleRow {
    let key = &tuple.key;
    RebacTupleRow {
        object: key.object().to_string(),
        relation: key.relation().to_owned(),
        subject: key.user().to_string(),
        expires_at_ms: tuple.expires_at_ms,
    }
}

/// Every relationship store this replica knows, by name: what the server answers relationship
/// questions from. Public for `warden bench rebac`, which times the start-up load.
#[derive(Debug, Default)]
pub struct Relations {
    stores: RwLock<BTreeMap<String, Arc<RelStore>>>,
    /// Serializes loading new stores.
    loading: tokio::sync::Mutex<()>,
}

impl Relations {
    /// The store named `name`, if it has a model.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<RelStore>> {
        self.stores
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every store, by name.
    pub(crate) fn all(&self) -> Vec<Arc<RelStore>> {
        self.stores
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Follows the database: new stores are loaded, new models compiled, new changes applied.
    /// Called at start and every second.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        for row in store.rebac_stores().await? {
            self.follow(store, &row).await?;
        }
        Ok(())
    }

    /// Brings store `row.store` up to `row` (its latest model and at least its revision).
    pub(crate) async fn follow(
        &self,
        store: &dyn Store,
        row: &RebacStoreRow,
    ) -> Result<(), StoreError> {
        let existing = self.get(&row.store);
        // The model is parsed only when it is new to this replica.
        let model =
            if existing.as_ref().map(|e| e.read().model_version()) == Some(row.model.version) {
                None
            } else {
                match parse_stored(&row.model.dsl) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::error!(store = %row.store, version = row.model.version, error = %e,
                        "stored relationship model does not parse; keeping the previous one");
                        None
                    }
                }
            };
        if let Some(existing) = existing {
            if let Some(model) = model {
                let mut view = existing.write();
                view.model = Arc::new(model);
                view.model_version = row.model.version;
            }
            if existing.read().revision() < u64::try_from(row.revision).unwrap_or(0) {
                existing.catch_up(store).await?;
            }
            return Ok(());
        }
        let Some(model) = model else {
            return Ok(());
        };
        let _one = self.loading.lock().await;
        if self.get(&row.store).is_some() {
            return Ok(());
        }
        let loaded = load(store, &row.store, model, row.model.version, row.revision).await?;
        self.stores
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(row.store.clone(), Arc::new(loaded));
        Ok(())
    }
}

/// Loads store `name` whose revision was `revision` when its row was read.
async fn load(
    store: &dyn Store,
    name: &str,
    model: Model,
    model_version: i64,
    revision: i64,
) -> Result<RelStore, StoreError> {
    let started = std::time::Instant::now();
    // The database streams the tuples (one snapshot) while a blocking thread builds the
    // graph from the chunks already read: decoding rows and inserting them use both cores.
    let (sink, mut chunks) = tokio::sync::mpsc::channel::<Vec<RebacTupleRow>>(LOAD_CHUNKS_AHEAD);
    let owned = name.to_owned();
    let builder = tokio::task::spawn_blocking(move || {
        let mut graph = Graph::new();
        let mut count = 0usize;
        while let Some(rows) = chunks.blocking_recv() {
            for row in &rows {
                match tuple_of(row).and_then(|t| graph.insert(t)) {
                    Ok(_) => count += 1,
                    Err(e) => {
                        tracing::error!(store = owned, error = %e, "stored tuple is not valid; skipped");
                    }
                }
            }
        }
        (graph, count)
    });
    let scanned = store.rebac_tuples_scan(name, LOAD_CHUNK, sink).await;
    let (mut graph, count) = builder
        .await
        .map_err(|e| StoreError::Database(format!("relationship graph load: {e}")))?;
    scanned?;
    // The revision read before the tuples: the changes after it are replayed next.
    graph
        .apply(u64::try_from(revision).unwrap_or(0), [], [])
        .map_err(|e| StoreError::Database(format!("relationship graph: {e}")))?;
    let rel = RelStore {
        name: name.to_owned(),
        view: RwLock::new(View {
            model: Arc::new(model),
            model_version,
            graph,
        }),
        sync: tokio::sync::Mutex::new(()),
    };
    rel.catch_up(store).await?;
    tracing::info!(
        store = name,
        tuples = count,
        revision = rel.read().revision(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "relationship store loaded"
    );
    Ok(rel)
}

impl Relations {
    /// Answers a Check on store `name` from its in-memory graph; `None` if the store is not
    /// loaded.
    pub fn check(
        &self,
        name: &str,
        request: &rebac::CheckRequest,
    ) -> Option<Result<bool, rebac::RebacError>> {
        let rel = self.get(name)?;
        let snap = rel.read();
        Some(rebac::check(snap.model(), snap.graph(), request))
    }

    /// Removes tuples that expired at or before `now_ms` from the database and from the
    /// in-memory graphs (they are already invisible; this reclaims space), up to 10,000 per
    /// call. Returns how many rows the database dropped.
    pub async fn purge_expired(&self, store: &dyn Store, now_ms: i64) -> Result<usize, StoreError> {
        let purged = store.rebac_purge_expired(now_ms, PURGE_BATCH).await?;
        for (name, row) in &purged {
            let (Some(rel), Ok(tuple)) = (self.get(name), tuple_of(row)) else {
                continue;
            };
            let mut view = rel.write();
            // Only if still expired here: a write may have renewed it since.
            if view
                .graph
                .get(&tuple.key)
                .flatten()
                .is_some_and(|at| at <= now_ms)
            {
                view.graph.remove(&tuple.key);
            }
        }
        Ok(purged.len())
    }

    /// Every tuple of store `name` (expired ones included), sorted, and its revision.
    pub fn tuples(&self, name: &str) -> Option<(Vec<Tuple>, u64)> {
        let rel = self.get(name)?;
        let snap = rel.read();
        let mut all = snap.graph().tuples();
        all.sort_by_cached_key(|t| (t.key.to_string(), t.expires_at_ms));
        Some((all, snap.revision()))
    }

    /// The number of tuples (expired ones included), the revision, and the graph's estimated
    /// heap bytes of store `name`.
    pub fn size(&self, name: &str) -> Option<(usize, u64, usize)> {
        let rel = self.get(name)?;
        let snap = rel.read();
        Some((
            snap.graph().len(),
            snap.revision(),
            snap.graph().heap_bytes(),
        ))
    }

    /// The relations agent `principal` holds on resource `kind::id` in the default store,
    /// sorted: each relation the model defines on the resource's type, checked with the agent
    /// as user `agent:<SPIFFE ID without spiffe://>`. The resource's type is `kind` if the
    /// model has it, else `kind` in lowercase (`Repository` → `repository`). Empty when there
    /// is no default store or the model has no such type. An error (e.g. a resolution too
    /// complex) is returned, not hidden: the caller denies.
    pub(crate) fn held(
        &self,
        principal: &identity::SpiffeId,
        kind: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<Vec<String>, String> {
        let Some(rel) = self.get(DEFAULT_STORE) else {
            return Ok(Vec::new());
        };
        let snap = rel.read();
        let model = snap.model();
        let lower = kind.to_lowercase();
        let Some(def) = model
            .type_definition(kind)
            .or_else(|| model.type_definition(&lower))
        else {
            return Ok(Vec::new());
        };
        let user = rebac::ObjectRef::for_spiffe_id(AGENT_TYPE, principal.as_str())
            .map_err(|e| format!("relations: {e}"))?;
        // A resource id that cannot be a tuple's object (e.g. it holds `:`) is in no tuple,
        // and objects have no wildcard: it holds no relations. (A principal that cannot be a
        // user is an error above: `agent:*` tuples would apply to it.)
        let Ok(object) = rebac::ObjectRef::new(&def.name, id) else {
            return Ok(Vec::new());
        };
        let mut held = Vec::new();
        for relation in &def.relations {
            let request = rebac::CheckRequest {
                user: rebac::User::Object(user.clone()),
                relation: relation.name.clone(),
                object: object.clone(),
                contextual_tuples: Vec::new(),
                now_ms,
            };
            match rebac::check(model, snap.graph(), &request) {
                Ok(true) => held.push(relation.name.clone()),
                Ok(false) => {}
                Err(e) => {
                    return Err(format!(
                        "relations: checking `{}#{}`: {e}",
                        object, relation.name
                    ));
                }
            }
        }
        held.sort();
        Ok(held)
    }
}

/// The relationship type agents are users of.
pub(crate) const AGENT_TYPE: &str = "agent";
