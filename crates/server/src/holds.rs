//! Holds — the kill switch. Holding an agent, a task or a vendor (every agent whose
//! registration names it as owner) in one step refuses new issuance, revokes every lease
//! (database roles dropped), denies every live token and SVID on every verification path, and
//! is recorded. Release lifts the hold; what was revoked stays revoked.
//!
//! [`AppState::barred`] is the one check every decision path makes before any policy runs:
//! a principal on hold or on the denylist, an agent in its delegation chain that is, or its
//! task on hold, is denied whatever the policy says.

use std::{
    collections::HashSet,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
};

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use identity::SpiffeId;
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{ChangeKind, ChangeOp, HoldRow, LeaseSelector};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ApiQuery, ErrorBody},
    now_ms,
};

/// How old the holds read from the store may be before a decision cannot trust them: they
/// are re-read every second, so past this the store has not answered for several rounds and
/// another replica's hold may be missing here. Decisions then fail closed (503).
const HOLDS_MAX_AGE_MS: i64 = 5_000;

/// Held tasks and vendors (held agents live in the denylist, where every verification path
/// already looks; the agents held by name are kept here too, to rebuild that set from).
#[derive(Debug, Default)]
pub(crate) struct Held {
    tasks: RwLock<Arc<HashSet<String>>>,
    vendors: RwLock<Arc<HashSet<String>>>,
    agents: RwLock<Arc<HashSet<String>>>,
    /// When the holds were last brought up to the store (Unix ms; 0: never).
    read_ms: AtomicI64,
    /// Where this replica stands in the change feed. Also serializes a refresh (read the
    /// store, apply to the sets) with a hold (write the store, add to the sets), so a refresh
    /// that read the store just before a hold cannot drop it.
    lock: tokio::sync::Mutex<HoldsRead>,
}

/// Where the holds stand in the change feed.
#[derive(Debug, Default)]
struct HoldsRead {
    /// The holds revision applied; `None`: not loaded yet (or fell behind the feed).
    revision: Option<i64>,
    /// The registry revision the held vendors' agents were last listed at.
    registry_revision: Option<i64>,
}

fn read_set(set: &RwLock<Arc<HashSet<String>>>) -> Arc<HashSet<String>> {
    Arc::clone(
        &set.read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

fn add_to(set: &RwLock<Arc<HashSet<String>>>, value: &str) {
    let mut guard = set
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::make_mut(&mut guard).insert(value.to_owned());
}

fn remove_from(set: &RwLock<Arc<HashSet<String>>>, value: &str) {
    let mut guard = set
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::make_mut(&mut guard).remove(value);
}

impl Held {
    /// Whether a task is on hold.
    pub(crate) fn task(&self, task: &str) -> bool {
        read_set(&self.tasks).contains(task)
    }

    /// The vendors (registration owners) on hold.
    fn vendors(&self) -> Arc<HashSet<String>> {
        read_set(&self.vendors)
    }

    /// Replaces every set (a full read of the holds).
    fn set(&self, agents: HashSet<String>, tasks: HashSet<String>, vendors: HashSet<String>) {
        for (set, value) in [
            (&self.agents, agents),
            (&self.tasks, tasks),
            (&self.vendors, vendors),
        ] {
            *set.write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(value);
        }
        self.fresh();
    }

    /// The set that holds of `kind` live in.
    fn set_of(&self, kind: &str) -> &RwLock<Arc<HashSet<String>>> {
        match kind {
            "agent" => &self.agents,
            "task" => &self.tasks,
            _ => &self.vendors,
        }
    }

    /// The holds are as the store has them now.
    fn fresh(&self) {
        self.read_ms.store(now_ms(), Ordering::Release);
    }

    /// Fails closed when the holds have not been read from the store lately.
    fn known(&self) -> Result<(), ApiError> {
        let age = now_ms().saturating_sub(self.read_ms.load(Ordering::Acquire));
        if age <= HOLDS_MAX_AGE_MS {
            return Ok(());
        }
        tracing::error!(
            age_ms = age,
            "the holds could not be read from the store lately; refusing decisions"
        );
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the holds cannot be read from the store; no decision is made until they can",
        ))
    }
}

/// Why an identity is cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The agent is on hold (`warden hold agent`).
    AgentHold,
    /// The agent's vendor (its registration's owner) is on hold.
    VendorHold(String),
    /// The SPIFFE ID is on the denylist (`warden deny add --spiffe-id`).
    Denylisted,
}

/// Where a cut-off agent stands in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// The principal the decision is about.
    Principal,
    /// An agent before the principal in the delegation chain of a presented token.
    Delegation,
}

/// Why a request is denied before any policy runs: who is cut off, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Barred {
    /// An agent is on hold or on the denylist.
    Agent {
        /// Its SPIFFE ID.
        id: String,
        /// The principal, or one in its delegation chain.
        position: Position,
        /// Hold or denylist.
        cut: Cut,
    },
    /// A task is on hold: the principal's current task, or the task a token or credential is
    /// for.
    Task {
        /// The task.
        task: String,
        /// The principal, when there is one.
        agent: Option<String>,
    },
}

impl Barred {
    /// The stable code: `agent_on_hold`, `identity_denied` or `task_on_hold`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Barred::Agent {
                cut: Cut::Denylisted,
                ..
            } => "identity_denied",
            Barred::Agent { .. } => "agent_on_hold",
            Barred::Task { .. } => "task_on_hold",
        }
    }

    /// Why, in plain words.
    pub(crate) fn reason(&self) -> String {
        match self {
            Barred::Agent { id, position, cut } => {
                let who = match position {
                    Position::Principal => format!("`{id}`"),
                    Position::Delegation => format!("`{id}` (in the delegation chain)"),
                };
                match cut {
                    Cut::AgentHold => format!("agent {who} is on hold"),
                    Cut::VendorHold(v) => format!("agent {who} is on hold (vendor `{v}`)"),
                    Cut::Denylisted => format!("identity {who} is on the denylist"),
                }
            }
            Barred::Task { task, .. } => format!("task `{task}` is on hold"),
        }
    }

    /// The record of it, for ledger entries and responses: `code`, `reason`, and who —
    /// `agent` with its `position` (`principal` or `delegation`), `vendor`, `task`.
    pub(crate) fn to_json(&self) -> Value {
        let mut out = json!({ "code": self.code(), "reason": self.reason() });
        match self {
            Barred::Agent { id, position, cut } => {
                out["agent"] = json!(id);
                out["position"] = json!(match position {
                    Position::Principal => "principal",
                    Position::Delegation => "delegation",
                });
                if let Cut::VendorHold(v) = cut {
                    out["vendor"] = json!(v);
                }
            }
            Barred::Task { task, agent } => {
                out["task"] = json!(task);
                if let Some(a) = agent {
                    out["agent"] = json!(a);
                    out["position"] = json!("principal");
                }
            }
        }
        out
    }

    /// The refusal of an API that answers a denial with an error (the OPA data API, the
    /// broker's own routes): 403 with the code, the reason and the decision that recorded it.
    pub(crate) fn refusal(&self, decision_id: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            self.code(),
            format!("{} (decision {decision_id})", self.reason()),
        )
        .with_details(json!({ "decision_id": decision_id, "barred": self.to_json() }))
    }
}

/// Who a decision is about, as the hold check sees it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Subjects<'a> {
    /// The agent the decision is about.
    pub(crate) principal: Option<&'a SpiffeId>,
    /// The resource asked about (`type`, `id`): it picks the principal's current task, as
    /// the decision context does.
    pub(crate) resource: Option<(&'a str, &'a str)>,
    /// The agents before the principal in a presented token's delegation chain.
    pub(crate) delegation: &'a [SpiffeId],
    /// A task the request names (a token's, a credential's).
    pub(crate) task: Option<&'a str>,
}

impl AppState {
    /// Whether one identity is cut off, and how: on hold (itself, or its vendor) or on the
    /// denylist.
    pub(crate) fn identity_cut(&self, id: &SpiffeId) -> Option<Cut> {
        if self.denylist.is_held(id.as_str()) {
            return Some(Cut::AgentHold);
        }
        // A held vendor's agents are in the denylist's held set already; this catches an
        // entry registered under it since the last refresh.
        let vendors = self.held.vendors();
        if !vendors.is_empty() {
            let owner = self.registry.facts(id.as_str()).map(|f| f.owner);
            if let Some(vendor) = owner.filter(|v| vendors.contains(v)) {
                return Some(Cut::VendorHold(vendor));
            }
        }
        self.denylist.denies_id(id).then_some(Cut::Denylisted)
    }

    /// The one hold check, made by every decision path before any policy runs (the decision
    /// APIs, the git hook's decisions, the broker's and tasks' decisions, relationship
    /// checks, and presented access tokens): `Some` when the principal, an agent in its
    /// delegation chain, the principal's current task for the resource, or a task the request
    /// names is on hold, or one of those agents is on the denylist. Fails closed — 503, no
    /// verdict — when the holds have not been read from the store lately.
    pub(crate) fn barred(&self, who: &Subjects<'_>) -> Result<Option<Barred>, ApiError> {
        self.held.known()?;
        let agents = who
            .principal
            .map(|p| (p, Position::Principal))
            .into_iter()
            .chain(who.delegation.iter().map(|d| (d, Position::Delegation)));
        for (id, position) in agents {
            if let Some(cut) = self.identity_cut(id) {
                return Ok(Some(Barred::Agent {
                    id: id.to_string(),
                    position,
                    cut,
                }));
            }
        }
        // The task the decision will see; when the named one cannot be it, the one covering
        // the resource (the named one is checked below either way).
        let current = match (who.principal, who.resource) {
            (Some(p), Some((kind, id))) => self
                .current_task(p.as_str(), kind, id, who.task)
                .or_else(|_| self.current_task(p.as_str(), kind, id, None))
                .ok()
                .flatten()
                .map(|t| t.row.id.clone()),
            _ => None,
        };
        let held = current
            .into_iter()
            .chain(who.task.map(str::to_owned))
            .find(|t| self.held.task(t));
        Ok(held.map(|task| Barred::Task {
            task,
            agent: who.principal.map(ToString::to_string),
        }))
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
/// as its owner (entries registered on other replicas included).
async fn vendor_agents(state: &AppState, vendor: &str) -> Result<Vec<String>, ApiError> {
    state.registry.sync().await?;
    Ok(state.registry.agents_of(vendor))
}

/// Rows read from the change feed per query.
const FEED_PAGE: u32 = 1000;

impl AppState {
    /// Brings the holds up to the store (every second, on every replica, and after a release
    /// here): applies the holds placed and released since the revision held — one indexed
    /// query when none were — or reads them all the first time. Held agents and every agent
    /// of a held vendor go into the denylist, held tasks and vendors into their sets.
    /// Decisions trust what was read for [`HOLDS_MAX_AGE_MS`] only. Call after the registry
    /// is synced, so a vendor's newly registered agents are covered.
    pub async fn refresh_holds(&self) -> Result<(), store::StoreError> {
        let mut read = self.held.lock.lock().await;
        let mut changed = false;
        loop {
            let Some(revision) = read.revision else {
                let head = self.store.change_head().await?;
                let (mut agents, mut tasks, mut vendors) =
                    (HashSet::new(), HashSet::new(), HashSet::new());
                for row in self.store.hold_list().await? {
                    match row.kind.as_str() {
                        "agent" => agents.insert(row.value),
                        "task" => tasks.insert(row.value),
                        _ => vendors.insert(row.value),
                    };
                }
                self.held.set(agents, tasks, vendors);
                self.metrics.cache_reloaded(ChangeKind::Hold);
                read.revision = Some(head);
                changed = true;
                continue;
            };
            let page = self
                .store
                .changes_since(ChangeKind::Hold, revision, FEED_PAGE)
                .await?;
            if page.floor > revision {
                tracing::warn!(
                    revision,
                    floor = page.floor,
                    "holds fell behind the change feed; reading them in full"
                );
                read.revision = None;
                continue;
            }
            for row in &page.rows {
                let Some((kind, value)) = store::split_pair(&row.key) else {
                    continue;
                };
                let set = self.held.set_of(kind);
                match row.op {
                    ChangeOp::Put => add_to(set, value),
                    ChangeOp::Delete => remove_from(set, value),
                }
            }
            self.metrics
                .changes_applied(ChangeKind::Hold, page.rows.len());
            changed |= !page.rows.is_empty();
            if let Some(last) = page.rows.last() {
                read.revision = Some(last.rev);
            }
            if page.rows.len() < FEED_PAGE as usize {
                break;
            }
        }
        // The held agents: by name, and every agent of a held vendor as registered now.
        let vendors = self.held.vendors();
        let registry_revision = (!vendors.is_empty()).then(|| self.registry.stats().revision);
        if changed || registry_revision != read.registry_revision {
            let mut agents: HashSet<String> = (*read_set(&self.held.agents)).clone();
            for vendor in vendors.iter() {
                agents.extend(self.registry.agents_of(vendor));
            }
            self.denylist.replace_held(agents);
            read.registry_revision = registry_revision;
        }
        self.held.fresh();
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
#[utoipa::path(post, path = "/v1/holds", operation_id = "place_hold",
    tag = "broker", security(("bearer" = [])), request_body = HoldRequest,
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
        Kind::Task => add_to(&state.held.tasks, &value),
        Kind::Agent => {
            add_to(&state.held.agents, &value);
            state.denylist.hold(agents.iter().cloned());
        }
        Kind::Vendor => {
            add_to(&state.held.vendors, &value);
            state.denylist.hold(agents.iter().cloned());
        }
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
#[utoipa::path(get, path = "/v1/holds", operation_id = "list_holds",
    tag = "broker", security(("bearer" = [])),
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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseQuery {
    /// Why (1-512 characters).
    reason: String,
}

/// Releases a hold (role `admin`); recorded first. Revoked credentials stay revoked.
#[utoipa::path(delete, path = "/v1/holds/{kind}/{value}", operation_id = "release_hold",
    tag = "broker", security(("bearer" = [])),
    params(("kind" = String, Path, description = "`agent`, `task` or `vendor`"),
        ("value" = String, Path, description = "The held SPIFFE ID, task id or vendor, URL-encoded"),
        ReleaseQuery),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn release(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((kind, value)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<ReleaseQuery>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds never read, or not read for longer than the bound: no verdict (503), so a
    /// decision fails closed instead of missing another replica's hold.
    #[test]
    fn holds_not_read_lately_fail_closed() {
        let held = Held::default();
        let err = held.known().unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.body().code, "store_unavailable");
        held.set(
            HashSet::new(),
            HashSet::from(["T-1".to_owned()]),
            HashSet::new(),
        );
        assert!(held.known().is_ok());
        assert!(held.task("T-1") && !held.task("T-2"));
        held.read_ms
            .store(now_ms() - HOLDS_MAX_AGE_MS - 1_000, Ordering::Release);
        assert!(held.known().is_err());
    }

    #[test]
    fn a_bar_says_who_and_why() {
        let coder = "spiffe://example.org/agent/coder";
        let cases = [
            (
                Barred::Agent {
                    id: coder.into(),
                    position: Position::Principal,
                    cut: Cut::AgentHold,
                },
                "agent_on_hold",
                format!("agent `{coder}` is on hold"),
            ),
            (
                Barred::Agent {
                    id: coder.into(),
                    position: Position::Delegation,
                    cut: Cut::VendorHold("acme".into()),
                },
                "agent_on_hold",
                format!("agent `{coder}` (in the delegation chain) is on hold (vendor `acme`)"),
            ),
            (
                Barred::Agent {
                    id: coder.into(),
                    position: Position::Principal,
                    cut: Cut::Denylisted,
                },
                "identity_denied",
                format!("identity `{coder}` is on the denylist"),
            ),
            (
                Barred::Task {
                    task: "T-1".into(),
                    agent: Some(coder.into()),
                },
                "task_on_hold",
                "task `T-1` is on hold".to_owned(),
            ),
        ];
        for (barred, code, reason) in cases {
            assert_eq!(barred.code(), code);
            assert_eq!(barred.reason(), reason);
            let record = barred.to_json();
            assert_eq!(record["code"], code);
            assert_eq!(record["reason"], reason.as_str());
            assert_eq!(record["agent"], coder);
            let refusal = barred.refusal("dec_1");
            assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
            assert_eq!(refusal.body().code, code);
            assert_eq!(refusal.body().message, format!("{reason} (decision dec_1)"));
        }
    }
}
