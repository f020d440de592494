//! Just-in-time grant requests and human approval. An agent on a task asks at runtime for a
//! permission it lacks; the policy decides allow (granted at once), needs approval (waits for
//! an `approver`, times out to deny) or deny. The agent polls or long-polls for the answer.
//! Every step is recorded; a decision given twice is refused and recorded.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::GrantRequestRow;
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    dbcreds::require_agent,
    error::{ApiError, ApiJson, ApiQuery, ErrorBody},
    mtls::PeerSvid,
    now_ms,
    policy_api::{Question, RecordAs, ResourceRef, decide_as},
    tasks_api::{GrantSpec, check_resource, grant, resources_of, task_open, task_or_404},
};

/// How long a request waits for an approver by default, and at most, seconds.
const APPROVAL_TIMEOUT_S: i64 = 300;
const MAX_APPROVAL_TIMEOUT_S: i64 = 86_400;
/// Longest long poll, seconds.
const MAX_WAIT_S: u64 = 60;

/// An agent's request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRequest {
    /// The task it is for (the agent must be on it, and it must be open).
    task: String,
    /// `type:id`; must be one of the task's resources.
    resource: String,
    /// The permission (a relation of the resource's type), e.g. `writer`.
    permission: String,
    /// Why, for the approver and the record (1-512 characters).
    reason: String,
    /// How long, seconds (default and at most: until the task's deadline).
    #[serde(default)]
    ttl_s: Option<i64>,
    /// How long to wait for an approver before the request is denied, seconds (default 300).
    #[serde(default)]
    approval_timeout_s: Option<i64>,
}

/// A request as shown.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RequestView {
    request_id: String,
    task: String,
    agent: String,
    resource: String,
    permission: String,
    reason: String,
    /// `allowed` (granted by policy), `pending`, `approved`, `denied` or `expired`.
    state: String,
    /// The policy decision that classified it.
    decision_id: String,
    created_unix_ms: i64,
    /// When a pending request is denied if nobody decides.
    expires_unix_ms: i64,
    decided_by: Option<String>,
    decided_unix_ms: Option<i64>,
    decision_reason: Option<String>,
    grant_id: Option<String>,
}

impl From<GrantRequestRow> for RequestView {
    fn from(r: GrantRequestRow) -> Self {
        Self {
            request_id: r.id,
            task: r.task,
            agent: r.agent,
            resource: r.resource,
            permission: r.permission,
            reason: r.reason,
            state: r.state,
            decision_id: r.decision_id,
            created_unix_ms: r.created_ms,
            expires_unix_ms: r.expires_ms,
            decided_by: r.decided_by,
            decided_unix_ms: r.decided_ms,
            decision_reason: r.decision_reason,
            grant_id: r.grant_id,
        }
    }
}

/// Records a refused request and returns the error.
async fn refuse(state: &AppState, actor: &str, req: &NewRequest, e: ApiError) -> ApiError {
    let _ = state
        .record(
            NewEvent::new(
                actor,
                "grant.request",
                Outcome::Denied,
                OcsfClass::UserAccessManagement,
            )
            .field("task", req.task.clone())
            .field("resource", req.resource.clone())
            .field("permission", req.permission.clone())
            .field("code", e.body().code)
            .field("error", e.body().message),
        )
        .await;
    e
}

/// Asks the broker policy `action` on `GrantTarget::"<resource>"`.
async fn ask(
    state: &AppState,
    actor: &str,
    agent: &identity::SpiffeId,
    action: &str,
    req: &NewRequest,
    task_kind: &str,
) -> Result<(bool, String), ApiError> {
    let mut attributes = serde_json::Map::new();
    attributes.insert("permission".into(), json!(req.permission));
    attributes.insert("task".into(), json!(req.task));
    attributes.insert("task_type".into(), json!(task_kind));
    attributes.insert("reason".into(), json!(req.reason));
    let decided = decide_as(
        state,
        RecordAs::Actor(actor),
        Question {
            api: "grants",
            package: Some(&state.broker.policy_package),
            principal: agent.as_str(),
            action: action.into(),
            resource: ResourceRef {
                kind: "GrantTarget".into(),
                id: req.resource.clone(),
            },
            attributes,
            delegation: Vec::new(),
            task: Some(req.task.clone()),
            token: None,
        },
    )
    .await?;
    // Held or denied: refused outright, not a request an approver could grant.
    if let Some(barred) = &decided.barred {
        return Err(barred.refusal(&decided.id));
    }
    Ok((decided.decision.is_allowed(), decided.id))
}

/// An agent asks for a permission it lacks on one of its task's resources. The broker policy
/// decides: `request_grant` allowed → granted now (`allowed`); else
/// `request_grant_with_approval` allowed → `pending` until an approver decides or it times
/// out; else `denied`. All recorded.
#[utoipa::path(post, path = "/v1/grants/requests", operation_id = "create_grant_request",
    tag = "tasks", request_body = NewRequest,
    responses((status = 201, body = RequestView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewRequest>,
) -> Result<(StatusCode, ApiJson<RequestView>), ApiError> {
    let agent = require_agent(
        &state,
        &headers,
        &peer,
        crate::agent_auth::Route::GrantRequests,
    )
    .await?;
    let actor = format!("agent:{}", agent.id);
    match create_core(&state, &actor, &agent.id, &req).await {
        Ok(view) => Ok((StatusCode::CREATED, ApiJson(view))),
        Err(e) => Err(refuse(&state, &actor, &req, e).await),
    }
}

async fn create_core(
    state: &AppState,
    actor: &str,
    agent: &identity::SpiffeId,
    req: &NewRequest,
) -> Result<RequestView, ApiError> {
    let task = crate::tasks_api::task_of_agent(state, agent.as_str(), &req.task).await?;
    if state.held.task(&task.id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "task_on_hold",
            format!("task `{}` is on hold", task.id),
        ));
    }
    let resource = check_resource(&req.resource)?;
    if !resources_of(&task).contains(&resource) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "scope_widening",
            format!("`{resource}` is not one of task `{}`'s resources", task.id),
        ));
    }
    if !broker::lease::is_name(&req.permission) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "a permission is 1-63 of [a-z0-9_-]",
        ));
    }
    crate::leases::check_reason(&req.reason)?;
    let now = now_ms();
    let expires_ms = match req.ttl_s {
        Some(t) if t >= 1 => crate::ms_after(now, t).min(task.deadline_ms),
        Some(_) => return Err(ApiError::invalid_request("ttl_s must be at least 1")),
        None => task.deadline_ms,
    };
    let timeout = req.approval_timeout_s.unwrap_or(APPROVAL_TIMEOUT_S);
    if !(1..=MAX_APPROVAL_TIMEOUT_S).contains(&timeout) {
        return Err(ApiError::invalid_request(format!(
            "approval_timeout_s must be 1-{MAX_APPROVAL_TIMEOUT_S}"
        )));
    }
    let (allowed, decision_id) = ask(state, actor, agent, "request_grant", req, &task.kind).await?;
    let (needs_approval, decision_id) = if allowed {
        (false, decision_id)
    } else {
        let (ok, id) = ask(
            state,
            actor,
            agent,
            "request_grant_with_approval",
            req,
            &task.kind,
        )
        .await?;
        (ok, id)
    };
    let id = format!("req_{}", uuid::Uuid::new_v4().simple());
    let st = if allowed {
        "allowed"
    } else if needs_approval {
        "pending"
    } else {
        "denied"
    };
    let mut row = GrantRequestRow {
        id: id.clone(),
        task: task.id.clone(),
        agent: agent.to_string(),
        resource: resource.clone(),
        permission: req.permission.clone(),
        reason: req.reason.clone(),
        ttl_s: (expires_ms - now) / 1000,
        state: st.into(),
        decision_id: decision_id.clone(),
        created_ms: now,
        expires_ms: crate::ms_after(now, timeout),
        decided_by: (st != "pending").then(|| "policy".to_owned()),
        decided_ms: (st != "pending").then_some(now),
        decision_reason: None,
        grant_id: None,
    };
    state
        .record(
            NewEvent::new(
                actor,
                "grant.request",
                if st == "denied" {
                    Outcome::Denied
                } else {
                    Outcome::Success
                },
                OcsfClass::UserAccessManagement,
            )
            .field("request_id", id.clone())
            .field("task", task.id.clone())
            .field("resource", resource.clone())
            .field("permission", req.permission.clone())
            .field("reason", req.reason.clone())
            .field("state", st)
            .field("decision_id", decision_id),
        )
        .await?;
    if allowed {
        let grants = grant(
            state,
            actor,
            &task,
            agent,
            &GrantSpec {
                resources: std::slice::from_ref(&resource),
                permissions: std::slice::from_ref(&req.permission),
                expires_ms,
                source: &format!("request:{id}"),
            },
        )
        .await?;
        row.grant_id = grants.first().map(|g| g.id.clone());
    }
    state.store.request_insert(&row).await?;
    if st == "pending" {
        state.tasks.decided.notify_waiters();
    }
    Ok(row.into())
}

/// How long to wait.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    /// Long poll: wait up to this many seconds (at most 60) for a pending request to be
    /// decided.
    wait_s: Option<u64>,
}

/// The calling agent's request, optionally waiting for the decision (long poll).
#[utoipa::path(get, path = "/v1/grants/requests/{id}", operation_id = "get_grant_request",
    tag = "tasks", params(("id" = String, Path), WaitQuery),
    responses((status = 200, body = RequestView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<ApiJson<RequestView>, ApiError> {
    let agent = require_agent(
        &state,
        &headers,
        &peer,
        crate::agent_auth::Route::GrantRequests,
    )
    .await?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(q.wait_s.unwrap_or(0).min(MAX_WAIT_S));
    loop {
        // Registered before the read, so a decision between the read and the wait wakes it.
        let notified = state.tasks.decided.notified();
        let row = state
            .store
            .request_get(&id)
            .await?
            .filter(|r| r.agent == agent.id.as_str())
            .ok_or_else(|| ApiError::not_found(format!("no grant request `{id}` of yours")))?;
        if row.state != "pending" || tokio::time::Instant::now() >= deadline {
            return Ok(ApiJson(row.into()));
        }
        // Other replicas decide too: look again at least every second.
        let _ = tokio::time::timeout(
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_secs(1)),
            notified,
        )
        .await;
    }
}

/// Which requests to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalQuery {
    /// `pending` (default), `allowed`, `approved`, `denied`, `expired` or `all`.
    state: Option<String>,
}

/// Grant requests waiting for an approver (role `approver`; `?state=` for others).
#[utoipa::path(get, path = "/v1/approvals", operation_id = "list_approvals",
    tag = "tasks", security(("bearer" = [])), params(ApprovalQuery),
    responses((status = 200, body = Vec<RequestView>)))]
pub(crate) async fn approvals(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ApprovalQuery>,
) -> Result<ApiJson<Vec<RequestView>>, ApiError> {
    if caller.require(Role::Approver).is_err() {
        caller.require(Role::Auditor)?;
    }
    let wanted = q.state.unwrap_or_else(|| "pending".into());
    let filter = (wanted != "all").then_some(wanted.as_str());
    let rows = state.store.request_list(filter, 1000).await?;
    Ok(ApiJson(rows.into_iter().map(RequestView::from).collect()))
}

/// An approver's decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decide {
    /// `approve` or `deny`.
    decision: String,
    /// Why (1-512 characters).
    reason: String,
}

/// Approves or denies a pending request (role `approver`). Approval grants the permission
/// until the request's asked lifetime (never past the task's deadline). A request already
/// decided (or timed out) is refused with `already_decided` and recorded.
#[utoipa::path(post, path = "/v1/approvals/{id}", operation_id = "decide_approval",
    tag = "tasks", security(("bearer" = [])), request_body = Decide,
    params(("id" = String, Path)),
    responses((status = 200, body = RequestView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn decide(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Decide>,
) -> Result<ApiJson<RequestView>, ApiError> {
    caller.require(Role::Approver)?;
    let approve = match req.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "decision is `approve` or `deny`",
            ));
        }
    };
    crate::leases::check_reason(&req.reason)?;
    let row = state
        .store
        .request_get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no grant request `{id}`")))?;
    let actor = caller.actor();
    let event = |outcome, what: &str, detail: Value| {
        NewEvent::new(
            &actor,
            "grant.approval",
            outcome,
            OcsfClass::UserAccessManagement,
        )
        .field("request_id", id.clone())
        .field("task", row.task.clone())
        .field("agent", row.agent.clone())
        .field("decision", req.decision.clone())
        .field("reason", req.reason.clone())
        .field("result", what.to_owned())
        .field("detail", detail)
    };
    if row.state != "pending" || row.expires_ms <= now_ms() {
        let was = if row.state == "pending" {
            "expired"
        } else {
            row.state.as_str()
        };
        state
            .record(event(
                Outcome::Denied,
                "refused: already decided",
                json!({"state": was}),
            ))
            .await?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_decided",
            format!("grant request `{id}` is already {was}"),
        ));
    }
    let task = task_or_404(&state, &row.task).await?;
    if approve {
        if let Err(e) = task_open(&task) {
            state
                .record(event(Outcome::Denied, "refused: task not open", json!({})))
                .await?;
            return Err(e);
        }
        // A hold placed while the request waited wins over the approver: nothing is granted
        // to a held or denied agent, or on a held task. The request stays pending (it times
        // out, or is denied).
        let agent = identity::SpiffeId::parse(&row.agent)
            .map_err(|e| ApiError::internal(format!("stored agent: {e}")))?;
        if let Some(barred) = state.barred(&crate::holds::Subjects {
            principal: Some(&agent),
            resource: None,
            delegation: &[],
            task: Some(&task.id),
        })? {
            state
                .record(event(
                    Outcome::Denied,
                    "refused: on hold",
                    json!({ "barred": barred.to_json() }),
                ))
                .await?;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                barred.code(),
                format!("cannot approve: {}", barred.reason()),
            )
            .with_details(json!({ "barred": barred.to_json() })));
        }
    }
    // Granted first, then the request is marked decided with the grant: a poller never sees
    // `approved` before the permission exists. If another approver decided meanwhile, this
    // grant is undone.
    let granted = if approve {
        let agent = identity::SpiffeId::parse(&row.agent)
            .map_err(|e| ApiError::internal(format!("stored agent: {e}")))?;
        let expires_ms = crate::ms_after(now_ms(), row.ttl_s.max(1)).min(task.deadline_ms);
        grant(
            &state,
            &actor,
            &task,
            &agent,
            &GrantSpec {
                resources: std::slice::from_ref(&row.resource),
                permissions: std::slice::from_ref(&row.permission),
                expires_ms,
                source: &format!("request:{id}"),
            },
        )
        .await?
    } else {
        Vec::new()
    };
    let decided = state
        .store
        .request_decide(
            &id,
            if approve { "approved" } else { "denied" },
            &actor,
            &req.reason,
            now_ms(),
            granted.first().map(|g| g.id.as_str()),
        )
        .await?;
    if !decided {
        for g in &granted {
            if let Some(ended) = state.store.grant_end_one(&g.id, now_ms()).await? {
                crate::tasks_api::drop_grant_tuples(&state, &actor, &[ended]).await?;
            }
        }
        state
            .record(event(
                Outcome::Denied,
                "refused: decided meanwhile by another approver",
                json!({}),
            ))
            .await?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_decided",
            format!("grant request `{id}` was decided meanwhile"),
        ));
    }
    state
        .record(event(
            Outcome::Success,
            if approve { "approved" } else { "denied" },
            json!({"grant_id": granted.first().map(|g| g.id.clone())}),
        ))
        .await?;
    state.tasks.decided.notify_waiters();
    let row = state
        .store
        .request_get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no grant request `{id}`")))?;
    Ok(ApiJson(row.into()))
}
