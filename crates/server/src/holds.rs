//! Holds — the kill switch. Holding an agent, a task or a vendor (every agent whose
//! registration names it as owner) in one step refuses new issuance, revokes every lease
//! (database roles dropped), denies every live token and SVID on every verification path, and
//! is recorded. Release lifts the hold; what was revoked stays revoked.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use axum::{
    Extension,
    extract::{Path, Query, State},
    http::StatusCode,
};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use store::{HoldRow, LeaseSelector};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ErrorBody},
    now_ms,
};

/// Held tasks and vendors (held agents live in the denylist, where every verification path
/// already looks).
#[derive(Debug, Default)]
pub(crate) struct Held {
    tasks: RwLock<Arc<HashSet<String>>>,
    /// Serializes a refresh (read the store, replace the sets) with a hold (write the store,
    /// add to the sets), so a refresh that read the store just before a hold cannot put back
    /// the set without it.
    lock: tokio::sync::Mutex<()>,
}

impl Held {
    /// Whether a task is on hold.
    pub(crate) fn task(&self, task: &str) -> bool {
        self.tasks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(task)
    }

    fn set_tasks(&self, tasks: HashSet<String>) {
        *self
            .tasks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tasks);
    }

    fn add_task(&self, task: &str) {
        let mut guard = self
            .tasks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = (**guard).clone();
        next.insert(task.to_owned());
        *guard = Arc::new(next);
    }
}

/// A task id: 1-128 of `[A-Za-z0-9._:-]`.
pub(crate) fn check_task_id(task: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&task.len())
        && task
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_task_id",
            format!(
                "task id `{}` must be 1-128 of [A-Za-z0-9._:-]",
                task.escape_debug()
            ),
        ))
    }
}

/// What is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Agent,
    Task,
    Vendor,
}

impl Kind {
    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "agent" => Ok(Kind::Agent),
            "task" => Ok(Kind::Task),
            "vendor" => Ok(Kind::Vendor),
            other => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_hold",
                format!("unknown hold kind `{other}`: expected agent, task or vendor"),
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Task => "task",
            Kind::Vendor => "vendor",
        }
    }
}

/// Checks and canonicalises what a hold names.
fn target(kind: Kind, value: &str) -> Result<String, ApiError> {
    match kind {
        Kind::Agent => identity::SpiffeId::parse(value)
            .map(|id| id.to_string())
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_spiffe_id", e.to_string())
            }),
        Kind::Task => check_task_id(value).map(|()| value.to_owned()),
        Kind::Vendor
            if (1..=128).contains(&value.len()) && !value.chars().any(char::is_control) =>
        {
            Ok(value.to_owned())
        }
        Kind::Vendor => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_hold",
            "a vendor is 1-128 characters (the owner named in registration entries)",
        )),
    }
}

/// The agents a vendor hold covers: every identity whose registration entry names the vendor
/// as its owner.
async fn vendor_agents(state: &AppState, vendor: &str) -> Result<Vec<String>, ApiError> {
    let mut ids: Vec<String> = state
        .store
        .entry_list()
        .await?
        .into_iter()
        .filter(|e| e.owner.as_deref() == Some(vendor))
        .map(|e| e.spiffe_id)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

impl AppState {
    /// Re-reads the holds (every second, on every replica): held agents and every agent of a
    /// held vendor into the denylist, held tasks into the task set.
    pub async fn refresh_holds(&self) -> Result<(), store::StoreError> {
        let _serial = self.held.lock.lock().await;
        let rows = self.store.hold_list().await?;
        let mut agents = HashSet::new();
        let mut tasks = HashSet::new();
        let mut vendors = HashSet::new();
        for row in rows {
            match row.kind.as_str() {
                "agent" => {
                    agents.insert(row.value);
                }
                "task" => {
                    tasks.insert(row.value);
                }
                _ => {
                    vendors.insert(row.value);
                }
            }
        }
        if !vendors.is_empty() {
            for entry in self.store.entry_list().await? {
                if entry.owner.as_ref().is_some_and(|o| vendors.contains(o)) {
                    agents.insert(entry.spiffe_id);
                }
            }
        }
        self.denylist.replace_held(agents);
        self.held.set_tasks(tasks);
        Ok(())
    }
}

/// A hold request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldRequest {
    /// `agent`, `task` or `vendor`.
    kind: String,
    /// The SPIFFE ID, task id, or vendor (registration owner).
    value: String,
    /// Why (1-512 characters).
    reason: String,
}

/// What a hold did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HoldResponse {
    kind: String,
    value: String,
    /// False when it was already held (the revocation ran again anyway).
    new: bool,
    /// The agents now denied everywhere.
    agents_held: Vec<String>,
    /// Leases revoked (delegated ones included).
    leases_revoked: usize,
    /// Leases whose upstream revocation failed and is being retried (`revoking`).
    leases_pending: usize,
}

/// Holds an agent, a task or a vendor (role `admin`): recorded, then in force on this replica
/// before the answer (others within a second); every lease revoked and database roles dropped.
#[utoipa::path(post, path = "/v1/holds", tag = "broker", security(("bearer" = [])), request_body = HoldRequest,
    responses((status = 201, body = HoldResponse), (status = 200, body = HoldResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn hold(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<HoldRequest>,
) -> Result<(StatusCode, ApiJson<HoldResponse>), ApiError> {
    caller.require(Role::Admin)?;
    crate::leases::check_reason(&req.reason)?;
    let kind = Kind::parse(&req.kind)?;
    let value = target(kind, &req.value)?;
    let agents = match kind {
        Kind::Agent => vec![value.clone()],
        Kind::Task => Vec::new(),
        Kind::Vendor => vendor_agents(&state, &value).await?,
    };
    let actor = caller.actor();
    state
        .record(
            NewEvent::new(
                &actor,
                "hold.add",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("kind", kind.as_str())
            .field("value", value.clone())
            .field("reason", req.reason.clone())
            .field("agents", serde_json::json!(agents)),
        )
        .await?;
    let serial = state.held.lock.lock().await;
    let new = state
        .store
        .hold_insert(&HoldRow {
            kind: kind.as_str().to_owned(),
            value: value.clone(),
            reason: req.reason.clone(),
            created_unix_ms: now_ms(),
            created_by: actor.clone(),
        })
        .await?;
    // In force here before anything else: no new issuance, no verification passes.
    match kind {
        Kind::Task => state.held.add_task(&value),
        Kind::Agent | Kind::Vendor => state.denylist.hold(agents.iter().cloned()),
    }
    drop(serial);
    let reason = format!("hold: {}", req.reason);
    let selectors: Vec<LeaseSelector> = match kind {
        Kind::Task => vec![LeaseSelector::Task(value.clone())],
        _ => agents.iter().cloned().map(LeaseSelector::Agent).collect(),
    };
    let mut revoked = Vec::new();
    for selector in &selectors {
        revoked.extend(crate::leases::revoke(&state, &actor, selector, &reason).await?);
    }
    let mut pending = 0;
    for row in revoked.iter().filter(|r| r.engine != "oauth") {
        if state
            .store
            .lease_get(&row.id)
            .await?
            .is_some_and(|r| r.state == "revoking")
        {
            pending += 1;
        }
    }
    Ok((
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        ApiJson(HoldResponse {
            kind: kind.as_str().to_owned(),
            value,
            new,
            agents_held: agents,
            leases_revoked: revoked.len(),
            leases_pending: pending,
        }),
    ))
}

/// A hold as listed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HoldView {
    kind: String,
    value: String,
    reason: String,
    created_unix_ms: i64,
    created_by: String,
}

/// Lists holds (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/holds", tag = "broker", security(("bearer" = [])),
    responses((status = 200, body = Vec<HoldView>)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<HoldView>>, ApiError> {
    caller.require(Role::Auditor)?;
    let rows = state.store.hold_list().await?;
    Ok(ApiJson(
        rows.into_iter()
            .map(|r| HoldView {
                kind: r.kind,
                value: r.value,
                reason: r.reason,
                created_unix_ms: r.created_unix_ms,
                created_by: r.created_by,
            })
            .collect(),
    ))
}

/// Why a hold is released.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseQuery {
    /// Why (1-512 characters).
    reason: String,
}

/// Releases a hold (role `admin`); recorded first. Revoked credentials stay revoked.
#[utoipa::path(delete, path = "/v1/holds/{kind}/{value}", tag = "broker", security(("bearer" = [])),
    params(("kind" = String, Path), ("value" = String, Path), ReleaseQuery),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn release(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((kind, value)): Path<(String, String)>,
    Query(q): Query<ReleaseQuery>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    crate::leases::check_reason(&q.reason)?;
    let kind = Kind::parse(&kind)?;
    let value = target(kind, &value)?;
    let exists = state
        .store
        .hold_list()
        .await?
        .iter()
        .any(|h| h.kind == kind.as_str() && h.value == value);
    if !exists {
        return Err(ApiError::not_found(format!(
            "no hold on {} `{value}`",
            kind.as_str()
        )));
    }
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "hold.release",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("kind", kind.as_str())
            .field("value", value.clone())
            .field("reason", q.reason),
        )
        .await?;
    state.store.hold_delete(kind.as_str(), &value).await?;
    state.refresh_holds().await?;
    Ok(StatusCode::NO_CONTENT)
}
