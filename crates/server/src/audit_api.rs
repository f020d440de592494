//! The ledger over HTTP, so anyone can check it without Warden's code.

use std::sync::Arc;

use axum::{
    Extension,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use ledger::LedgerError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ApiQuery, ErrorBody},
};

const MAX_PAGE: u32 = 1000;

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn proof_error(e: LedgerError) -> ApiError {
    match e {
        LedgerError::Proof(p) => {
            ApiError::new(StatusCode::BAD_REQUEST, "out_of_range", p.to_string())
        }
        other => ApiError::internal(other),
    }
}

/// Query for `GET /v1/audit/entries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntriesQuery {
    /// First index (default 0).
    from: Option<u64>,
    /// At most this many (default 100, max 1000).
    limit: Option<u32>,
}

/// One ledger entry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EntryOut {
    /// Index in the log.
    index: u64,
    /// Exact leaf bytes, base64: hash these with a 0x00 prefix to get `leaf_hash`.
    leaf: String,
    /// RFC 6962 leaf hash, base64.
    leaf_hash: String,
    /// The decoded event.
    #[schema(value_type = Object)]
    event: ledger::Event,
}

/// A page of entries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EntriesOut {
    /// Current tree size.
    tree_size: u64,
    /// The entries, ascending.
    entries: Vec<EntryOut>,
}

/// Reads entries (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/audit/entries", operation_id = "list_audit_entries",
    tag = "audit", params(EntriesQuery),
    security(("bearer" = [])),
    responses((status = 200, body = EntriesOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn entries(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> Result<ApiJson<EntriesOut>, ApiError> {
    caller.require(Role::Auditor)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be 1..={MAX_PAGE}"),
        ));
    }
    let tree_size = state.ledger.size();
    let rows = state
        .ledger
        .entries(q.from.unwrap_or(0), limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(ApiJson(EntriesOut {
        tree_size,
        entries: rows
            .into_iter()
            .map(|e| EntryOut {
                index: e.index,
                leaf: b64(&e.leaf),
                leaf_hash: b64(e.leaf_hash.as_bytes()),
                event: e.event,
            })
            .collect(),
    }))
}

/// The latest signed checkpoint as a C2SP signed note (text).
#[utoipa::path(get, path = "/v1/audit/checkpoint", operation_id = "get_checkpoint", tag = "audit",
    responses((status = 200, body = String, content_type = "text/plain"), (status = 404, body = ErrorBody)))]
pub(crate) async fn checkpoint(
    State(state): State<Arc<AppState>>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = state.ledger.latest_checkpoint().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_checkpoint",
            "no checkpoint has been signed yet",
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        cp.note,
    ))
}

/// A checkpoint, as returned when one is published on demand.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckpointOut {
    /// Tree size.
    tree_size: u64,
    /// Root hash, base64.
    root: String,
    /// The signed note.
    note: String,
}

/// Signs a checkpoint now (role `admin`).
#[utoipa::path(post, path = "/v1/audit/checkpoint", operation_id = "publish_checkpoint",
    tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = CheckpointOut), (status = 403, body = ErrorBody)))]
pub(crate) async fn publish_checkpoint(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<CheckpointOut>, ApiError> {
    caller.require(Role::Admin)?;
    let cp = state
        .ledger
        .checkpoint()
        .await
        .map_err(ApiError::internal)?;
    Ok(ApiJson(CheckpointOut {
        tree_size: cp.size,
        root: b64(cp.root.as_bytes()),
        note: cp.note,
    }))
}

/// The checkpoint verifier key in signed-note `vkey` form (text).
#[utoipa::path(get, path = "/v1/audit/key", operation_id = "get_ledger_key", tag = "audit",
    responses((status = 200, body = String, content_type = "text/plain")))]
pub(crate) async fn key(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", state.ledger.vkey()),
    )
}

/// Query for an inclusion proof.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct InclusionQuery {
    /// Leaf index.
    index: u64,
    /// Tree size (default: the latest signed checkpoint's).
    size: Option<u64>,
}

/// An inclusion proof; field names as in the RFC 6962 test vectors.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InclusionOut {
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: String,
    root: String,
    proof: Vec<String>,
}

/// `size` if given, else the latest signed checkpoint's size (what a verifier holds).
async fn default_size(state: &AppState, size: Option<u64>) -> u64 {
    match size {
        Some(s) => s,
        None => state
            .ledger
            .latest_checkpoint()
            .await
            .map_or_else(|| state.ledger.size(), |c| c.size),
    }
}

/// Inclusion proof of entry `index` in the tree of `size` entries.
#[utoipa::path(get, path = "/v1/audit/proof/inclusion", operation_id = "get_inclusion_proof",
    tag = "audit", params(InclusionQuery),
    responses((status = 200, body = InclusionOut), (status = 400, body = ErrorBody)))]
pub(crate) async fn inclusion(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<ApiJson<InclusionOut>, ApiError> {
    let size = default_size(&state, q.size).await;
    let proof = state
        .ledger
        .inclusion_proof(q.index, size)
        .map_err(proof_error)?;
    let root = state.ledger.root_at(size).map_err(proof_error)?;
    // INVARIANT: the proof succeeded, so index < size <= tree size and the leaf exists.
    let leaf_hash = state
        .ledger
        .leaf_hash(q.index)
        .ok_or_else(|| ApiError::not_found(format!("no entry {}", q.index)))?;
    Ok(ApiJson(InclusionOut {
        leaf_index: q.index,
        tree_size: size,
        leaf_hash: b64(leaf_hash.as_bytes()),
        root: b64(root.as_bytes()),
        proof: proof.iter().map(|h| b64(h.as_bytes())).collect(),
    }))
}

/// Query for a consistency proof.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsistencyQuery {
    /// Older tree size (> 0).
    from: u64,
    /// Newer tree size (default: the latest signed checkpoint's).
    to: Option<u64>,
}

/// A consistency proof; field names as in the RFC 6962 test vectors.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsistencyOut {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Vec<String>,
}

/// Consistency proof between tree sizes `from` and `to`.
#[utoipa::path(get, path = "/v1/audit/proof/consistency", operation_id = "get_consistency_proof",
    tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyOut), (status = 400, body = ErrorBody)))]
pub(crate) async fn consistency(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<ApiJson<ConsistencyOut>, ApiError> {
    let to = default_size(&state, q.to).await;
    let proof = state
        .ledger
        .consistency_proof(q.from, to)
        .map_err(proof_error)?;
    let root1 = state.ledger.root_at(q.from).map_err(proof_error)?;
    let root2 = state.ledger.root_at(to).map_err(proof_error)?;
    Ok(ApiJson(ConsistencyOut {
        size1: q.from,
        size2: to,
        root1: b64(root1.as_bytes()),
        root2: b64(root2.as_bytes()),
        proof: proof.iter().map(|h| b64(h.as_bytes())).collect(),
    }))
}
