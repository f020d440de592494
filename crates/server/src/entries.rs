//! Registration entries: which SPIFFE ID a workload whose kernel-attested selectors match
//! gets, and for how long its SVIDs live. Admin writes, auditor reads; every change audited.

use std::{collections::BTreeSet, sync::Arc};

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use identity::{Selector, SpiffeId};
use ledger::{NewEvent, OcsfClass, Outcome};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ErrorBody},
    now_ms,
};

/// Most entries in one batch.
const MAX_BATCH: usize = 10_000;
/// Most created ids a batch's ledger entry lists; above it records only their count and digest.
const MAX_LISTED_IDS: usize = 100;

/// Most selectors on one entry.
const MAX_SELECTORS: usize = 16;
/// X.509-SVID lifetime bounds, seconds: down to a minute, up to 30 days (the upper bound is
/// also how long a retired CA stays in the bundle).
const X509_TTL: std::ops::RangeInclusive<i64> = 60..=authority::MAX_X509_SVID_TTL_SECS;
/// JWT-SVID lifetime bounds, seconds: a minute to a day.
const JWT_TTL: std::ops::RangeInclusive<i64> = 60..=authority::MAX_JWT_SVID_TTL_SECS;

/// Request to create an entry.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEntry {
    /// SPIFFE ID in this install's trust domain, with a path.
    spiffe_id: String,
    /// 1–16 selectors, e.g. `unix:uid:1000`, `unix:path:/usr/bin/python3`.
    selectors: Vec<String>,
    /// X.509-SVID lifetime, seconds (60–2,592,000; default 3,600).
    x509_ttl_secs: Option<i64>,
    /// JWT-SVID lifetime, seconds (60–86,400; default 300).
    jwt_ttl_secs: Option<i64>,
    /// Kind of agent, ≤ 64 characters.
    agent_kind: Option<String>,
    /// Owning human or team, ≤ 256 characters.
    owner: Option<String>,
    /// Description, ≤ 1,024 characters.
    description: Option<String>,
}

/// Request to create many entries at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEntries {
    /// 1–10,000 entries, each as `POST /v1/entries` takes it.
    entries: Vec<CreateEntry>,
}

/// What a batch did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedEntries {
    /// Ids of the entries created, in request order.
    created: Vec<String>,
    /// Ids of the entries that were already registered exactly as asked, in request order.
    existing: Vec<String>,
    /// SHA-256 (lowercase hex) of the created ids, sorted and joined with `\n`; the batch's
    /// ledger entry records the same digest.
    digest: String,
}

/// A registration entry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Entry {
    id: String,
    spiffe_id: String,
    /// Canonical selectors, sorted.
    selectors: Vec<String>,
    x509_ttl_secs: Option<i64>,
    jwt_ttl_secs: Option<i64>,
    agent_kind: Option<String>,
    owner: Option<String>,
    description: Option<String>,
    created_unix_ms: i64,
}

impl From<store::EntryRow> for Entry {
    fn from(r: store::EntryRow) -> Self {
        Self {
            id: r.id,
            spiffe_id: r.spiffe_id,
            selectors: r
                .selectors
                .split('\n')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            x509_ttl_secs: r.x509_ttl_secs,
            jwt_ttl_secs: r.jwt_ttl_secs,
            agent_kind: r.agent_kind,
            owner: r.owner,
            description: r.description,
            created_unix_ms: r.created_unix_ms,
        }
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Parses a workload's SPIFFE ID: valid, in this trust domain, and not the trust domain itself.
pub(crate) fn workload_id(state: &AppState, raw: &str) -> Result<SpiffeId, ApiError> {
    let id = SpiffeId::parse(raw).map_err(|e| bad("invalid_spiffe_id", e.to_string()))?;
    if !id.is_member_of(state.trust_domain()) {
        return Err(bad(
            "foreign_trust_domain",
            format!(
                "`{id}` is not in this install's trust domain `{}`",
                state.trust_domain()
            ),
        ));
    }
    if id.path().is_empty() {
        return Err(bad(
            "invalid_spiffe_id",
            format!("`{id}` is the trust domain itself; a workload needs a path"),
        ));
    }
    Ok(id)
}

/// Checks a request and turns it into a row (canonical selectors, fresh id).
fn validate(state: &AppState, req: CreateEntry) -> Result<store::EntryRow, ApiError> {
    let id = workload_id(state, &req.spiffe_id)?;
    if req.selectors.is_empty() || req.selectors.len() > MAX_SELECTORS {
        return Err(bad(
            "invalid_selector",
            format!("an entry needs 1 to {MAX_SELECTORS} selectors"),
        ));
    }
    let mut selectors = BTreeSet::new();
    for s in &req.selectors {
        let sel = Selector::parse(s).map_err(|e| bad("invalid_selector", e.to_string()))?;
        if !selectors.insert(sel.to_string()) {
            return Err(bad(
                "invalid_selector",
                format!("selector `{sel}` given twice"),
            ));
        }
    }
    for (name, value, range) in [
        ("x509_ttl_secs", req.x509_ttl_secs, X509_TTL),
        ("jwt_ttl_secs", req.jwt_ttl_secs, JWT_TTL),
    ] {
        if let Some(v) = value.filter(|v| !range.contains(v)) {
            return Err(bad(
                "invalid_ttl",
                format!("{name} {v} is outside {}..={}", range.start(), range.end()),
            ));
        }
    }
    for (name, value, max) in [
        ("agent_kind", &req.agent_kind, 64),
        ("owner", &req.owner, 256),
        ("description", &req.description, 1024),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(bad(
                "invalid_request",
                format!("{name} is longer than {max} characters"),
            ));
        }
    }
    let mut raw = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    Ok(store::EntryRow {
        id: format!(
            "ent_{}",
            raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        spiffe_id: id.to_string(),
        selectors: selectors.into_iter().collect::<Vec<_>>().join("\n"),
        x509_ttl_secs: req.x509_ttl_secs,
        jwt_ttl_secs: req.jwt_ttl_secs,
        agent_kind: req.agent_kind,
        owner: req.owner,
        description: req.description,
        created_unix_ms: now_ms(),
    })
}

/// Creates a registration entry (role `admin`).
#[utoipa::path(post, path = "/v1/entries", operation_id = "create_entry",
    tag = "entries", security(("bearer" = [])), request_body = CreateEntry,
    responses((status = 201, body = Entry), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateEntry>,
) -> Result<(StatusCode, ApiJson<Entry>), ApiError> {
    caller.require(Role::Admin)?;
    let row = validate(&state, req)?;
    let rev = state.store.entry_insert(&row).await?;
    let written = row.clone();
    let entry = Entry::from(row);
    let event = NewEvent::new(
        caller.actor(),
        "entry.create",
        Outcome::Success,
        OcsfClass::UserAccessManagement,
    )
    .field("entry_id", entry.id.clone())
    .field("spiffe_id", entry.spiffe_id.clone())
    .field("selectors", entry.selectors.clone());
    if let Err(e) = state.record(event).await {
        // Not recorded, so it must not exist.
        let _ = state.store.entry_delete(&entry.id).await;
        return Err(e);
    }
    // Applied here at once (usually without reading the store); the change is stored and
    // recorded, so a failure only delays it to the next refresh.
    if let Err(e) = state.registry.apply_inserted(rev, written).await {
        tracing::warn!(error = %e, "a new registration entry not applied at once; the next refresh brings it");
    }
    Ok((StatusCode::CREATED, ApiJson(entry)))
}

/// Creates many registration entries in one transaction (role `admin`). Each entry is checked
/// as `POST /v1/entries` checks it; one bad entry refuses the batch. An entry already
/// registered exactly as asked is reported as existing, not created again; one registered
/// with the same SPIFFE ID and selectors but other settings refuses the batch (409). The batch
/// is one ledger entry, `entry.create_batch`.
#[utoipa::path(post, path = "/v1/entries/batch", operation_id = "create_entries_batch",
    tag = "entries", security(("bearer" = [])), request_body = CreateEntries,
    responses((status = 200, body = CreatedEntries), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn create_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateEntries>,
) -> Result<ApiJson<CreatedEntries>, ApiError> {
    caller.require(Role::Admin)?;
    if req.entries.len() > MAX_BATCH {
        return Err(bad(
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_BATCH} entries, not {}",
                req.entries.len()
            ),
        ));
    }
    if req.entries.is_empty() {
        return Err(bad("invalid_request", "a batch needs at least one entry"));
    }
    let rows = req
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| validate(&state, e).map_err(|err| err.context(format_args!("entry {i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = state.store.entry_insert_many(&rows).await?;
    let mut created = Vec::new();
    let mut existing = Vec::new();
    for outcome in outcomes {
        match outcome {
            store::EntryInsert::Created(id) => created.push(id),
            store::EntryInsert::Existing(id) => existing.push(id),
        }
    }
    let digest = ids_digest(&created);
    let mut event = NewEvent::new(
        caller.actor(),
        "entry.create_batch",
        Outcome::Success,
        OcsfClass::UserAccessManagement,
    )
    .field("created", created.len())
    .field("existing", existing.len())
    .field("digest", digest.clone());
    if created.len() <= MAX_LISTED_IDS {
        event = event.field("entry_ids", created.clone());
    }
    if let Err(e) = state.record(event).await {
        // Not recorded, so they must not exist.
        for id in &created {
            let _ = state.store.entry_delete(id).await;
        }
        return Err(e);
    }
    if !created.is_empty() {
        let ids: std::collections::HashSet<&str> = created.iter().map(String::as_str).collect();
        let written = rows
            .into_iter()
            .filter(|row| ids.contains(row.id.as_str()))
            .collect();
        refresh_agent_facts(&state, written).await;
    }
    Ok(ApiJson(CreatedEntries {
        created,
        existing,
        digest,
    }))
}

/// SHA-256 (lowercase hex) of `ids` sorted and joined with `\n`.
fn ids_digest(ids: &[String]) -> String {
    use sha2::Digest;
    let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    hex::encode(sha2::Sha256::digest(sorted.join("\n").as_bytes()))
}

/// Lists registration entries (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/entries", operation_id = "list_entries",
    tag = "entries", security(("bearer" = [])),
    responses((status = 200, body = Vec<Entry>), (status = 403, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<Entry>>, ApiError> {
    caller.require(Role::Auditor)?;
    let rows = state.store.entry_list().await?;
    Ok(ApiJson(rows.into_iter().map(Entry::from).collect()))
}

/// Shows one registration entry (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/entries/{id}", operation_id = "get_entry",
    tag = "entries", security(("bearer" = [])),
    params(("id" = String, Path, description = "entry id")),
    responses((status = 200, body = Entry), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<ApiJson<Entry>, ApiError> {
    caller.require(Role::Auditor)?;
    let row = state
        .store
        .entry_get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no entry `{id}`")))?;
    Ok(ApiJson(Entry::from(row)))
}

/// Deletes a registration entry (role `admin`). The store's delete decides who wins when
/// several deletions race; only the winner is recorded, and if that record cannot be written
/// the entry is put back (a deletion that could not be recorded does not happen).
#[utoipa::path(delete, path = "/v1/entries/{id}", operation_id = "delete_entry",
    tag = "entries", security(("bearer" = [])),
    params(("id" = String, Path, description = "entry id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let not_found = || ApiError::not_found(format!("no entry `{id}`"));
    let row = state.store.entry_get(&id).await?.ok_or_else(not_found)?;
    if !state.store.entry_delete(&id).await? {
        return Err(not_found());
    }
    let event = NewEvent::new(
        caller.actor(),
        "entry.delete",
        Outcome::Success,
        OcsfClass::UserAccessManagement,
    )
    .field("entry_id", row.id.clone())
    .field("spiffe_id", row.spiffe_id.clone());
    if let Err(e) = state.record(event).await {
        let _ = state.store.entry_insert(&row).await;
        return Err(e);
    }
    refresh_agent_facts(&state, Vec::new()).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Brings this replica's registration entries (what the Workload API matches callers against
/// and what decisions put in `context.agent`) up to date at once after an entry changed,
/// instead of at the next one-second refresh (which other replicas wait for); concurrent
/// changes share one read of the store, and `written` (the entries this change inserted) are
/// not read back. The change is already stored and recorded, so a failure here only delays
/// it.
async fn refresh_agent_facts(state: &AppState, written: Vec<store::EntryRow>) {
    if let Err(e) = state.registry.sync_after_write(written).await {
        tracing::warn!(error = %e, "registration entries not brought up to date after a change; the next refresh brings them");
    }
}
