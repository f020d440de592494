//! What an agent does with its own leases, authenticated by its SVID: renew one, give one
//! back when done, and record what it did with a credential (the data access an auditor reads
//! beside the issuance).

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use store::LeaseSelector;
use utoipa::ToSchema;

use crate::{
    AppState,
    dbcreds::require_agent,
    error::{ApiError, ApiJson, ErrorBody},
    mtls::PeerSvid,
};

/// The agent's renewal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentRenew {
    lease_id: String,
    /// New lifetime from now, seconds; never past the lease's maximum.
    ttl_s: i64,
}

/// A lease after renewal.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Renewed {
    lease_id: String,
    expires_unix_ms: i64,
    max_expires_unix_ms: i64,
}

/// Renews one of the caller's own leases.
#[utoipa::path(post, path = "/v1/agent/leases/renew", operation_id = "agent_renew_lease",
    tag = "broker", request_body = AgentRenew,
    responses((status = 200, body = Renewed), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn renew(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AgentRenew>,
) -> Result<ApiJson<Renewed>, ApiError> {
    let agent = require_agent(&state, &headers, &peer, crate::agent_auth::Route::Leases).await?;
    let row = crate::leases::renew(
        &state,
        &format!("agent:{}", agent.id),
        Some(agent.id.as_str()),
        &req.lease_id,
        req.ttl_s,
    )
    .await?;
    Ok(ApiJson(Renewed {
        lease_id: row.id,
        expires_unix_ms: row.expires_ms,
        max_expires_unix_ms: row.max_expires_ms,
    }))
}

/// The agent gives a lease back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentRevoke {
    lease_id: String,
}

/// Revokes one of the caller's own leases (and what it delegated from it); a database role is
/// dropped before this answers.
#[utoipa::path(post, path = "/v1/agent/leases/revoke", operation_id = "agent_revoke_lease",
    tag = "broker", request_body = AgentRevoke,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AgentRevoke>,
) -> Result<StatusCode, ApiError> {
    let agent = require_agent(&state, &headers, &peer, crate::agent_auth::Route::Leases).await?;
    let id = broker::lease::LeaseId::parse(&req.lease_id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_lease", e.to_string()))?;
    let row = state
        .store
        .lease_get(id.as_str())
        .await?
        .filter(|r| r.agent == agent.id.as_str())
        .ok_or_else(|| ApiError::not_found(format!("no lease `{id}` of yours")))?;
    if row.state != "active" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "lease_not_active",
            format!("lease `{id}` is already {}", row.state),
        ));
    }
    crate::leases::revoke(
        &state,
        &format!("agent:{}", agent.id),
        &LeaseSelector::Id(row.id),
        "returned by its holder",
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An operation the agent performed, for the record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Operation {
    /// The lease whose credential it used (must be the caller's).
    #[serde(default)]
    lease_id: Option<String>,
    /// What it did, e.g. `select`.
    action: String,
    /// On what, e.g. `customers`.
    resource: String,
    /// Details (row counts, query digest…); never secrets. At most 8 KiB.
    #[serde(default)]
    detail: serde_json::Map<String, serde_json::Value>,
}

/// The record.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Recorded {
    /// The ledger sequence number of the entry.
    seq: u64,
}

/// Records an operation the calling agent performed (`agent.operation`, OCSF API Activity),
/// tied to the lease it used: the data-access entries of the audit trail.
#[utoipa::path(post, path = "/v1/agent/operations", operation_id = "agent_record_operation",
    tag = "broker", request_body = Operation,
    responses((status = 201, body = Recorded), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn operation(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    ApiJson(op): ApiJson<Operation>,
) -> Result<(StatusCode, ApiJson<Recorded>), ApiError> {
    let agent = require_agent(&state, &headers, &peer, crate::agent_auth::Route::Leases).await?;
    for (what, v) in [("action", &op.action), ("resource", &op.resource)] {
        if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) {
            return Err(ApiError::invalid_request(format!(
                "{what} must be 1-256 characters without control characters"
            )));
        }
    }
    let detail = serde_json::Value::Object(op.detail);
    if detail.to_string().len() > 8 * 1024 {
        return Err(ApiError::invalid_request("detail is larger than 8 KiB"));
    }
    let mut task = String::new();
    if let Some(id) = &op.lease_id {
        let row = state
            .store
            .lease_get(id)
            .await?
            .filter(|r| r.agent == agent.id.as_str())
            .ok_or_else(|| ApiError::not_found(format!("no lease `{id}` of yours")))?;
        task = row.task.unwrap_or_default();
    }
    let receipt = state
        .ledger
        .append(
            NewEvent::new(
                format!("agent:{}", agent.id),
                "agent.operation",
                Outcome::Success,
                OcsfClass::ApiActivity,
            )
            .field("lease_id", op.lease_id.unwrap_or_default())
            .field("task", task)
            .field("action", op.action)
            .field("resource", op.resource)
            // Floats in the caller's detail are recorded as their decimal text.
            .field_serialized("detail", &detail)
            .map_err(ApiError::internal)?
            .field("authenticated_by", agent.via),
        )
        .await
        .map_err(|e| ApiError::audit_unavailable(&e))?;
    Ok((StatusCode::CREATED, ApiJson(Recorded { seq: receipt.seq })))
}
