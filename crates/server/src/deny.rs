//! The denylist over HTTP (admin writes, auditor reads). Every change is recorded first, then
//! applied to the store and to this process's in-memory list at once; other replicas apply it
//! from the store's change feed within a second.

use std::sync::Arc;

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use identity::deny::DenyKind;
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ErrorBody},
    now_ms,
};

/// Request to deny something.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddDeny {
    /// `spiffe_id`, `jti` or `serial`.
    kind: String,
    /// The SPIFFE ID, JWT id, or certificate serial (lowercase hex).
    value: String,
    /// Why, for the record (≤ 512 characters).
    reason: String,
}

/// A denylist entry.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DenyEntry {
    kind: String,
    value: String,
    reason: String,
    created_unix_ms: i64,
}

fn parse(kind: &str, value: &str) -> Result<(DenyKind, String), ApiError> {
    DenyKind::parse(kind, value)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "invalid_deny_entry", why))
}

/// Denies an identity or credential everywhere (role `admin`).
#[utoipa::path(post, path = "/v1/denylist", operation_id = "add_denial",
    tag = "identity", security(("bearer" = [])), request_body = AddDeny,
    responses((status = 201, body = DenyEntry), (status = 200, body = DenyEntry), (status = 400, body = ErrorBody)))]
pub(crate) async fn add(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<AddDeny>,
) -> Result<(StatusCode, ApiJson<DenyEntry>), ApiError> {
    caller.require(Role::Admin)?;
    let (kind, value) = parse(&req.kind, &req.value)?;
    if req.reason.trim().is_empty() || req.reason.chars().count() > 512 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_deny_entry",
            "a reason of 1-512 characters is required",
        ));
    }
    // Recorded before it takes effect; then in force here at once.
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "denylist.add",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("kind", kind.as_str())
            .field("value", value.clone())
            .field("reason", req.reason.clone()),
        )
        .await?;
    let row = store::DenyRow {
        kind: kind.as_str().to_owned(),
        value: value.clone(),
        reason: req.reason,
        created_unix_ms: now_ms(),
    };
    let created = state.store.deny_insert(&row).await?;
    state.denylist.insert(kind, value);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        ApiJson(DenyEntry {
            kind: row.kind,
            value: row.value,
            reason: row.reason,
            created_unix_ms: row.created_unix_ms,
        }),
    ))
}

/// Lists the denylist (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/denylist", operation_id = "list_denials",
    tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Vec<DenyEntry>)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<DenyEntry>>, ApiError> {
    caller.require(Role::Auditor)?;
    let rows = state.store.deny_list().await?;
    Ok(ApiJson(
        rows.into_iter()
            .map(|r| DenyEntry {
                kind: r.kind,
                value: r.value,
                reason: r.reason,
                created_unix_ms: r.created_unix_ms,
            })
            .collect(),
    ))
}

/// Lifts a denial (role `admin`).
#[utoipa::path(delete, path = "/v1/denylist/{kind}/{value}", operation_id = "remove_denial",
    tag = "identity", security(("bearer" = [])),
    params(("kind" = String, Path, description = "spiffe_id, jti or serial"), ("value" = String, Path, description = "the denied value, URL-encoded")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((kind, value)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let (kind, value) = parse(&kind, &value)?;
    if !state.store.deny_delete(kind.as_str(), &value).await? {
        return Err(ApiError::not_found("no such denylist entry"));
    }
    state.denylist.remove(kind, &value);
    let event = NewEvent::new(
        caller.actor(),
        "denylist.remove",
        Outcome::Success,
        OcsfClass::UserAccessManagement,
    )
    .field("kind", kind.as_str())
    .field("value", value.clone());
    if let Err(e) = state.record(event).await {
        // Not recorded, so it must not happen: deny again.
        let _ = state
            .store
            .deny_insert(&store::DenyRow {
                kind: kind.as_str().to_owned(),
                value: value.clone(),
                reason: "restored: removal could not be recorded".into(),
                created_unix_ms: now_ms(),
            })
            .await;
        state.denylist.insert(kind, value);
        return Err(e);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Keeps a process's denylist current from the store's change feed: read in full the first
/// time (or after falling behind the feed), then only the entries added and removed since the
/// revision held — one indexed query when none were. Shared by the HTTP server and the TLS
/// verifier, which hold the same list.
#[derive(Debug, Default)]
pub struct DenylistFeed {
    revision: tokio::sync::Mutex<Option<i64>>,
}

impl DenylistFeed {
    /// Whether nothing has been read yet.
    async fn is_new(&self) -> bool {
        self.revision.lock().await.is_none()
    }

    /// Brings `denylist` up to `store`; returns how many changes were applied (a full read
    /// counts its entries).
    pub async fn follow(
        &self,
        store: &dyn store::Store,
        denylist: &identity::deny::Denylist,
    ) -> Result<usize, store::StoreError> {
        let mut revision = self.revision.lock().await;
        let mut applied = 0;
        loop {
            let Some(held) = *revision else {
                let head = store.change_head().await?;
                let rows = store.deny_list().await?;
                applied += rows.len();
                denylist.replace(rows.iter().filter_map(|row| parsed(&row.kind, &row.value)));
                *revision = Some(head);
                continue;
            };
            let page = store
                .changes_since(store::ChangeKind::Deny, held, 1000)
                .await?;
            if page.floor > held {
                tracing::warn!(
                    revision = held,
                    floor = page.floor,
                    "the denylist fell behind the change feed; reading it in full"
                );
                *revision = None;
                continue;
            }
            for row in &page.rows {
                let Some((kind, value)) = store::split_pair(&row.key) else {
                    continue;
                };
                let Some((kind, value)) = parsed(kind, value) else {
                    continue;
                };
                match row.op {
                    store::ChangeOp::Put => denylist.insert(kind, value),
                    store::ChangeOp::Delete => denylist.remove(kind, &value),
                }
            }
            applied += page.rows.len();
            if let Some(last) = page.rows.last() {
                *revision = Some(last.rev);
            }
            if page.rows.len() < 1000 {
                return Ok(applied);
            }
        }
    }
}

impl AppState {
    /// Brings the denylist up to the store (every second, on every replica); see
    /// [`DenylistFeed`].
    pub async fn refresh_denylist(&self) -> Result<(), store::StoreError> {
        let first = self.deny_feed.is_new().await;
        let applied = self
            .deny_feed
            .follow(self.store.as_ref(), &self.denylist)
            .await?;
        if first {
            self.metrics.cache_reloaded(store::ChangeKind::Deny);
        } else {
            self.metrics
                .changes_applied(store::ChangeKind::Deny, applied);
        }
        Ok(())
    }
}

/// A stored denylist entry, or `None` (logged) when it cannot be read.
fn parsed(kind: &str, value: &str) -> Option<(DenyKind, String)> {
    match DenyKind::parse(kind, value) {
        Ok(entry) => Some(entry),
        Err(why) => {
            tracing::warn!(%kind, %why, "unreadable denylist entry");
            None
        }
    }
}
