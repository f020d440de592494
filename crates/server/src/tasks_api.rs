//! Tasks and task-scoped grants. A task (id, type, owner, resources, deadline) has agents in
//! roles; a grant ties an agent, a task, a resource and a permission until the task's
//! deadline (or sooner) and is also an expiring relationship tuple
//! `resource#permission@agent:…`, so every authorization path sees it; the open task is the
//! agent's `context.task`. Ending a task — completed, failed, cancelled, or its deadline —
//! ends its grants (tuples deleted), revokes its leases and tokens, and is recorded; a task
//! that ended while Warden was down is cleaned up at start.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{GrantRow, TaskAgentRow, TaskRow};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    dbcreds::require_agent,
    error::{ApiError, ApiJson, ApiQuery, ErrorBody},
    mtls::PeerSvid,
    now_ms,
    policy_api::{Question, RecordAs, ResourceRef, decide_as},
    relations::DEFAULT_STORE,
};

/// Longest a task may run, seconds (30 days).
const MAX_TASK_SECS: i64 = 30 * 86_400;

/// An open task as decisions read it: the row, with its resources and its policy view parsed
/// once per refresh instead of at every decision.
#[derive(Debug)]
pub(crate) struct OpenTask {
    pub(crate) row: TaskRow,
    /// The task's resources, `type:id`.
    pub(crate) resources: Vec<String>,
    pub(crate) policy: policy::Task,
}

impl OpenTask {
    fn new(row: TaskRow) -> Self {
        Self {
            resources: resources_of(&row),
            policy: policy_task(&row),
            row,
        }
    }
}

/// The open tasks of every agent, as decisions read them.
#[derive(Debug, Default)]
struct TaskIndex {
    /// Each agent's open tasks with when it was assigned, in assignment order (then task id).
    by_agent: HashMap<String, Vec<(i64, Arc<OpenTask>)>>,
    /// Each open task's agents.
    agents_of: HashMap<String, Vec<String>>,
}

impl TaskIndex {
    fn remove(&mut self, task: &str) {
        for agent in self.agents_of.remove(task).unwrap_or_default() {
            if let Some(tasks) = self.by_agent.get_mut(&agent) {
                tasks.retain(|(_, t)| t.row.id != task);
                if tasks.is_empty() {
                    self.by_agent.remove(&agent);
                }
            }
        }
    }

    /// Puts `task` as it is now: with its agents if it is open, gone otherwise.
    fn put(&mut self, task: TaskRow, agents: Vec<TaskAgentRow>) {
        self.remove(&task.id);
        if task.state != "open" {
            return;
        }
        let open = Arc::new(OpenTask::new(task));
        let mut names = Vec::with_capacity(agents.len());
        for a in agents {
            let tasks = self.by_agent.entry(a.agent.clone()).or_default();
            tasks.push((a.assigned_ms, Arc::clone(&open)));
            tasks.sort_by(|(x, s), (y, t)| (x, &s.row.id).cmp(&(y, &t.row.id)));
            names.push(a.agent);
        }
        self.agents_of.insert(open.row.id.clone(), names);
    }
}

/// Where the task and risk caches stand in the change feed (`None`: not loaded yet).
#[derive(Debug, Default)]
struct TasksRead {
    tasks: Option<i64>,
    risk: Option<i64>,
}

/// The open tasks of every agent and the operator-set risk scores, as decisions read them;
/// kept current from the store's change feed every second and after every change here.
#[derive(Debug, Default)]
pub(crate) struct TaskCache {
    open: RwLock<TaskIndex>,
    risk: RwLock<HashMap<String, policy::RiskScore>>,
    /// Serializes refreshes, which apply changes in order.
    read: tokio::sync::Mutex<TasksRead>,
    /// Woken when a grant request is decided here (long polls wait on it).
    pub(crate) decided: tokio::sync::Notify,
}

/// The object form (`type:id`) of a decision's resource: the type lowercased.
fn object_of(kind: &str, id: &str) -> String {
    format!("{}:{id}", kind.to_lowercase())
}

/// A stored risk score as decisions read it (an unreadable one counts as the maximum).
fn risk_of(row: &store::RiskRow) -> policy::RiskScore {
    u16::try_from(row.score_milli * 10)
        .ok()
        .and_then(|v| policy::RiskScore::from_ten_thousandths(v).ok())
        .unwrap_or(policy::RiskScore::MAX)
}

/// Rows read from the change feed per query.
const FEED_PAGE: u32 = 1000;

impl AppState {
    /// Brings open tasks (with their agents) and risk scores up to the store: applies what
    /// changed since the revisions held — one indexed query per kind when nothing did — or
    /// reads them all the first time (or after falling behind the change feed).
    pub async fn refresh_tasks(&self) -> Result<(), store::StoreError> {
        let mut read = self.tasks.read.lock().await;
        loop {
            let Some(revision) = read.tasks else {
                let head = self.store.change_head().await?;
                let mut agents: HashMap<String, (TaskRow, Vec<TaskAgentRow>)> = HashMap::new();
                for (task, agent) in self.store.open_task_agents().await? {
                    agents
                        .entry(task.id.clone())
                        .or_insert_with(|| (task, Vec::new()))
                        .1
                        .push(agent);
                }
                let mut index = TaskIndex::default();
                for (_, (task, agents)) in agents {
                    index.put(task, agents);
                }
                *self
                    .tasks
                    .open
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = index;
                self.metrics.cache_reloaded(store::ChangeKind::Task);
                read.tasks = Some(head);
                continue;
            };
            let page = self
                .store
                .changes_since(store::ChangeKind::Task, revision, FEED_PAGE)
                .await?;
            if page.floor > revision {
                tracing::warn!(
                    revision,
                    floor = page.floor,
                    "tasks fell behind the change feed; reading them in full"
                );
                read.tasks = None;
                continue;
            }
            let mut ids: Vec<&str> = page.rows.iter().map(|r| r.key.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            for id in &ids {
                let now = match self.store.task_get(id).await? {
                    Some(task) => Some((task, self.store.task_agents(id).await?)),
                    None => None,
                };
                let mut open = self
                    .tasks
                    .open
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match now {
                    Some((task, agents)) => open.put(task, agents),
                    None => open.remove(id),
                }
            }
            self.metrics
                .changes_applied(store::ChangeKind::Task, ids.len());
            if let Some(last) = page.rows.last() {
                read.tasks = Some(last.rev);
            }
            if page.rows.len() < FEED_PAGE as usize {
                break;
            }
        }
        loop {
            let Some(revision) = read.risk else {
                let head = self.store.change_head().await?;
                let risk = self
                    .store
                    .risk_list()
                    .await?
                    .into_iter()
                    .map(|row| (row.agent.clone(), risk_of(&row)))
                    .collect();
                *self
                    .tasks
                    .risk
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = risk;
                self.metrics.cache_reloaded(store::ChangeKind::Risk);
                read.risk = Some(head);
                continue;
            };
            let page = self
                .store
                .changes_since(store::ChangeKind::Risk, revision, FEED_PAGE)
                .await?;
            if page.floor > revision {
                read.risk = None;
                continue;
            }
            for row in &page.rows {
                let score = self.store.risk_get(&row.key).await?;
                let mut risk = self
                    .tasks
                    .risk
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match score {
                    Some(score) => risk.insert(row.key.clone(), risk_of(&score)),
                    None => risk.remove(&row.key),
                };
            }
            self.metrics
                .changes_applied(store::ChangeKind::Risk, page.rows.len());
            if let Some(last) = page.rows.last() {
                read.risk = Some(last.rev);
            }
            if page.rows.len() < FEED_PAGE as usize {
                break;
            }
        }
        Ok(())
    }

    /// The agent's risk score (0.0 when none was set).
    pub(crate) fn risk_score(&self, agent: &str) -> policy::RiskScore {
        self.tasks
            .risk
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(agent)
            .copied()
            .unwrap_or(policy::RiskScore::ZERO)
    }

    /// The agent's current task for a decision on `kind::id`: the task `named` by the request
    /// (a presented token's `task` claim, a credential request's `task`), or else the open
    /// task whose resources hold that resource — never a guess. `Ok(None)` when nothing names
    /// a task and no task covers the resource.
    ///
    /// A named task must be an open task the agent is assigned to and, when another of its
    /// tasks covers the resource, must cover it too: otherwise the request is refused
    /// ([`TaskMismatch`]), so a token minted for one task cannot lend its type to an action
    /// that belongs to another. When several tasks cover the resource and none is named, the
    /// one the agent was assigned to most recently is current.
    pub(crate) fn current_task(
        &self,
        agent: &str,
        kind: &str,
        id: &str,
        named: Option<&str>,
    ) -> Result<Option<Arc<OpenTask>>, TaskMismatch> {
        let now = now_ms();
        let open: Vec<Arc<OpenTask>> = self
            .tasks
            .open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_agent
            .get(agent)
            .map(|tasks| {
                tasks
                    .iter()
                    .filter(|(_, t)| t.row.deadline_ms > now)
                    .map(|(_, t)| Arc::clone(t))
                    .collect()
            })
            .unwrap_or_default();
        let object = object_of(kind, id);
        let covering = open
            .iter()
            .rev()
            .find(|t| t.resources.contains(&object))
            .map(Arc::clone);
        let Some(named) = named else {
            return Ok(covering);
        };
        let Some(task) = open.iter().find(|t| t.row.id == named) else {
            return Err(TaskMismatch {
                reason: format!("`{named}` is not an open task agent `{agent}` is assigned to"),
            });
        };
        if covering.is_some() && !task.resources.contains(&object) {
            return Err(TaskMismatch {
                reason: format!(
                    "`{object}` belongs to task `{}`, not to the named task `{named}`",
                    covering
                        .as_ref()
                        .map(|t| t.row.id.as_str())
                        .unwrap_or_default()
                ),
            });
        }
        Ok(Some(Arc::clone(task)))
    }
}

/// A request named a task that cannot be its current task: a decision refuses it before any
/// policy runs.
#[derive(Debug, Clone)]
pub(crate) struct TaskMismatch {
    /// Why it cannot be the decision's task.
    pub(crate) reason: String,
}

/// The policy view of a task.
pub(crate) fn policy_task(t: &TaskRow) -> policy::Task {
    policy::Task {
        id: t.id.clone(),
        kind: t.kind.clone(),
        attributes: serde_json::from_str(&t.attributes).unwrap_or_default(),
    }
}

pub(crate) fn resources_of(t: &TaskRow) -> Vec<String> {
    serde_json::from_str(&t.resources).unwrap_or_default()
}

/// A task as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskView {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    owner: String,
    resources: Vec<String>,
    attributes: Value,
    deadline_unix_ms: i64,
    /// `open`, `completed`, `failed`, `cancelled` or `expired`.
    state: String,
    created_unix_ms: i64,
    created_by: String,
    ended_unix_ms: Option<i64>,
    end_reason: Option<String>,
    agents: Vec<Value>,
    grants: Vec<Value>,
}

async fn view(state: &AppState, t: TaskRow) -> Result<TaskView, ApiError> {
    let agents = state
        .store
        .task_agents(&t.id)
        .await?
        .into_iter()
        .map(|a| json!({"agent": a.agent, "role": a.role, "assigned_unix_ms": a.assigned_ms, "assigned_by": a.assigned_by}))
        .collect();
    let grants = state
        .store
        .grant_list(Some(&t.id), None, None)
        .await?
        .into_iter()
        .map(|g| grant_json(&g))
        .collect();
    Ok(TaskView {
        resources: resources_of(&t),
        attributes: serde_json::from_str(&t.attributes).unwrap_or(Value::Null),
        id: t.id,
        kind: t.kind,
        owner: t.owner,
        deadline_unix_ms: t.deadline_ms,
        state: t.state,
        created_unix_ms: t.created_ms,
        created_by: t.created_by,
        ended_unix_ms: t.ended_ms,
        end_reason: t.end_reason,
        agents,
        grants,
    })
}

pub(crate) fn grant_json(g: &GrantRow) -> Value {
    json!({
        "grant_id": g.id, "task": g.task, "agent": g.agent, "resource": g.resource,
        "permission": g.permission, "expires_unix_ms": g.expires_ms, "state": g.state,
        "source": g.source, "created_unix_ms": g.created_ms, "ended_unix_ms": g.ended_ms,
    })
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// A resource named by a task or grant: `type:id` as a relationship object.
pub(crate) fn check_resource(r: &str) -> Result<String, ApiError> {
    rebac::ObjectRef::parse(r)
        .map(|o| o.to_string())
        .map_err(|e| {
            bad(
                "invalid_resource",
                format!("resource `{r}`: {e} (expected type:id, e.g. repository:warden)"),
            )
        })
}

/// A new task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTask {
    /// Its id (default: a fresh `task_…`); 1-128 of `[A-Za-z0-9._:-]`.
    #[serde(default)]
    id: Option<String>,
    /// Its type, e.g. `patch_bug` (what policies see as `context.task.type`).
    #[serde(rename = "type")]
    kind: String,
    /// The human who owns it.
    owner: String,
    /// What it is about, `type:id` each (1-32).
    resources: Vec<String>,
    /// How long it may run, seconds (1 s - 30 days); it ends by itself then.
    deadline_s: i64,
    /// Attributes policies see as `context.task.attributes`.
    #[serde(default)]
    attributes: serde_json::Map<String, Value>,
}

async fn create_core(state: &AppState, actor: &str, req: CreateTask) -> Result<TaskRow, ApiError> {
    let id = req
        .id
        .unwrap_or_else(|| format!("task_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    crate::holds::check_task_id(&id)?;
    if !broker::lease::is_name(&req.kind) {
        return Err(bad(
            "invalid_task",
            "a task type is 1-63 of [a-z0-9_-], e.g. patch_bug",
        ));
    }
    if req.owner.trim().is_empty() || req.owner.len() > 256 {
        return Err(bad(
            "invalid_task",
            "the owner (the accountable human) is 1-256 characters",
        ));
    }
    if req.resources.is_empty() || req.resources.len() > 32 {
        return Err(bad("invalid_task", "a task names 1-32 resources"));
    }
    let resources: Vec<String> = req
        .resources
        .iter()
        .map(|r| check_resource(r))
        .collect::<Result<_, _>>()?;
    if !(1..=MAX_TASK_SECS).contains(&req.deadline_s) {
        return Err(bad(
            "invalid_task",
            format!("deadline_s must be 1-{MAX_TASK_SECS}"),
        ));
    }
    let attributes = Value::Object(req.attributes);
    if attributes.to_string().len() > 8 * 1024 {
        return Err(bad("invalid_task", "attributes are larger than 8 KiB"));
    }
    let now = now_ms();
    let row = TaskRow {
        id: id.clone(),
        kind: req.kind,
        owner: req.owner,
        resources: json!(resources).to_string(),
        attributes: attributes.to_string(),
        deadline_ms: crate::ms_after(now, req.deadline_s),
        state: "open".into(),
        created_ms: now,
        created_by: actor.to_owned(),
        ended_ms: None,
        end_reason: None,
        cleaned: false,
    };
    state
        .record(
            NewEvent::new(
                actor,
                "task.create",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("task", id.clone())
            .field("type", row.kind.clone())
            .field("owner", row.owner.clone())
            .field("resources", json!(resources))
            .field("deadline_unix_ms", row.deadline_ms),
        )
        .await?;
    if !state.store.task_insert(&row).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "task_exists",
            format!("task `{id}` exists"),
        ));
    }
    Ok(row)
}

/// Creates a task (role `admin`).
#[utoipa::path(post, path = "/v1/tasks", operation_id = "create_task",
    tag = "tasks", security(("bearer" = [])), request_body = CreateTask,
    responses((status = 201, body = TaskView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateTask>,
) -> Result<(StatusCode, ApiJson<TaskView>), ApiError> {
    caller.require(Role::Admin)?;
    let row = create_core(&state, &caller.actor(), req).await?;
    Ok((StatusCode::CREATED, ApiJson(view(&state, row).await?)))
}

/// An agent (an orchestrator such as a Planner) creates a task, if the broker policy allows
/// `create_task` on `TaskType::"<type>"` (`context.request`: `owner`, `resources`,
/// `attributes`); it may then assign agents to it, as the policy allows, and end it.
#[utoipa::path(post, path = "/v1/agent/tasks", operation_id = "agent_create_task",
    tag = "tasks", request_body = CreateTask,
    responses((status = 201, body = TaskView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn agent_create(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateTask>,
) -> Result<(StatusCode, ApiJson<TaskView>), ApiError> {
    let agent = require_agent(&state, &headers, &peer, crate::agent_auth::Route::Tasks).await?;
    let actor = format!("agent:{}", agent.id);
    let mut attributes = serde_json::Map::new();
    attributes.insert("owner".into(), json!(req.owner));
    attributes.insert("resources".into(), json!(req.resources));
    attributes.insert("attributes".into(), Value::Object(req.attributes.clone()));
    let decided = decide_as(
        &state,
        RecordAs::Actor(&actor),
        Question {
            api: "tasks",
            package: Some(&state.broker.policy_package),
            principal: agent.id.as_str(),
            action: "create_task".into(),
            resource: ResourceRef {
                kind: "TaskType".into(),
                id: req.kind.clone(),
            },
            attributes,
            delegation: Vec::new(),
            task: None,
            token: None,
        },
    )
    .await?;
    let decision_id = &decided.id;
    if let Some(barred) = &decided.barred {
        return Err(barred.refusal(decision_id));
    }
    if !decided.decision.is_allowed() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            format!(
                "policy denied creating a `{}` task (decision {decision_id})",
                req.kind
            ),
        ));
    }
    let row = create_core(&state, &actor, req).await?;
    Ok((StatusCode::CREATED, ApiJson(view(&state, row).await?)))
}

/// Filters for listing tasks.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// `open`, `completed`, `failed`, `cancelled` or `expired`.
    state: Option<String>,
    /// With this agent assigned.
    agent: Option<String>,
    /// At most this many (1-1000, default 100).
    limit: Option<u32>,
}

/// Lists tasks, newest first (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/tasks", operation_id = "list_tasks",
    tag = "tasks", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Vec<TaskView>)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Vec<TaskView>>, ApiError> {
    caller.require(Role::Auditor)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be 1-1000, not {limit}"),
        ));
    }
    let rows = state
        .store
        .task_list(q.state.as_deref(), q.agent.as_deref(), limit)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(view(&state, r).await?);
    }
    Ok(ApiJson(out))
}

pub(crate) async fn task_or_404(state: &AppState, id: &str) -> Result<TaskRow, ApiError> {
    crate::holds::check_task_id(id)?;
    state.store.task_get(id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_task",
            format!("no task `{id}`"),
        )
    })
}

/// One task with its agents and grants (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/tasks/{id}", operation_id = "get_task",
    tag = "tasks", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<ApiJson<TaskView>, ApiError> {
    caller.require(Role::Auditor)?;
    let t = task_or_404(&state, &id).await?;
    Ok(ApiJson(view(&state, t).await?))
}

/// An assignment: an agent, its role, and the permissions it is granted on the task's
/// resources.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Assign {
    /// The agent's SPIFFE ID.
    agent: String,
    /// Its role, e.g. `coder` or `reviewer`.
    role: String,
    /// Permissions granted (relations of the resources' types in the default relationship
    /// model, e.g. `writer`); none: the agent is on the task without grants.
    #[serde(default)]
    permissions: Vec<String>,
    /// Which of the task's resources (default: all of them).
    #[serde(default)]
    resources: Option<Vec<String>>,
    /// Shorter than the task, seconds.
    #[serde(default)]
    ttl_s: Option<i64>,
}

pub(crate) fn task_open(t: &TaskRow) -> Result<(), ApiError> {
    if t.state != "open" || t.deadline_ms <= now_ms() {
        let state = if t.state == "open" {
            "expired"
        } else {
            t.state.as_str()
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "task_not_open",
            format!("task `{}` is {state}", t.id),
        ));
    }
    Ok(())
}

/// What a grant gives.
pub(crate) struct GrantSpec<'a> {
    pub(crate) resources: &'a [String],
    pub(crate) permissions: &'a [String],
    pub(crate) expires_ms: i64,
    /// `assignment` or `request:<id>`.
    pub(crate) source: &'a str,
}

/// Grants `agent` each permission on each resource until `expires_ms`: recorded, written as
/// expiring tuples, stored. Returns the grants.
pub(crate) async fn grant(
    state: &AppState,
    actor: &str,
    task: &TaskRow,
    agent: &identity::SpiffeId,
    spec: &GrantSpec<'_>,
) -> Result<Vec<GrantRow>, ApiError> {
    let GrantSpec {
        resources,
        permissions,
        expires_ms,
        source,
    } = *spec;
    if permissions.is_empty() {
        return Ok(Vec::new());
    }
    let user = rebac::ObjectRef::for_spiffe_id(crate::relations::AGENT_TYPE, agent.as_str())
        .map_err(|e| bad("invalid_spiffe_id", e.to_string()))?;
    let mut tuples = Vec::new();
    let mut rows: Vec<GrantRow> = Vec::new();
    let now = now_ms();
    // Each (resource, permission) once, however often the request names it.
    let mut pairs = Vec::new();
    for r in resources {
        for p in permissions {
            if !pairs.contains(&(r, p)) {
                pairs.push((r, p));
            }
        }
    }
    for (r, p) in pairs {
        let key = rebac::TupleKey::parse(&format!("{r}#{p}@{user}"))
            .map_err(|e| bad("invalid_grant", format!("{r}#{p}: {e}")))?;
        tuples.push(rebac::Tuple {
            key,
            expires_at_ms: Some(expires_ms),
        });
        rows.push(GrantRow {
            id: format!("grant_{}", uuid::Uuid::new_v4().simple()),
            task: task.id.clone(),
            agent: agent.to_string(),
            resource: r.clone(),
            permission: p.clone(),
            expires_ms,
            state: "active".into(),
            source: source.to_owned(),
            created_ms: now,
            created_by: actor.to_owned(),
            ended_ms: None,
        });
    }
    let rel = crate::rebac_api::open_store(state, DEFAULT_STORE, None)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_relationship_model",
                format!(
                    "grants are relationship tuples in the default store: {}",
                    e.body().message
                ),
            )
        })?;
    // A tuple that exists already is either another grant's (then it is re-written to expire
    // at the later of the two ends) or standing — an operator's, covered by no grant — which a
    // grant never touches, and so never deletes when its task ends (`source` says `standing`).
    let active = state
        .store
        .grant_list(None, Some(agent.as_str()), Some("active"))
        .await?;
    let (writes, deletes) = {
        let snap = rel.read();
        let mut writes = Vec::new();
        let mut deletes = Vec::new();
        for (t, row) in tuples.into_iter().zip(rows.iter_mut()) {
            match snap.graph().get(&t.key) {
                Some(existing) if existing.is_none_or(|e| now < e) => {
                    let by_grant = active.iter().any(|g| {
                        g.resource == row.resource
                            && g.permission == row.permission
                            && !g.source.ends_with(";standing")
                    });
                    if !by_grant {
                        row.source = format!("{source};standing");
                    } else if existing.is_some_and(|e| e < expires_ms) {
                        deletes.push(t.key.clone());
                        writes.push(t);
                    }
                }
                _ => writes.push(t),
            }
        }
        // Checked against the model before anything is recorded. A tuple re-written with a
        // later expiry is deleted, then written (one write may not hold both).
        let fresh: Vec<rebac::Tuple> = writes
            .iter()
            .filter(|t| !deletes.contains(&t.key))
            .cloned()
            .collect();
        // Nothing to write when every tuple is held already until at least this grant's end
        // (another grant's, or standing): the grant rows are still issued and recorded.
        if !fresh.is_empty() || !deletes.is_empty() {
            rebac::validate_write(snap.model(), snap.graph(), &fresh, &deletes, now)
                .map_err(|e| bad("invalid_grant", e.to_string()))?;
        }
        (writes, deletes)
    };
    state
        .record(
            NewEvent::new(
                actor,
                "grant.issue",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("task", task.id.clone())
            .field("agent", agent.to_string())
            .field("resources", json!(resources))
            .field("permissions", json!(permissions))
            .field("expires_unix_ms", expires_ms)
            .field("source", source.to_owned())
            .field(
                "grants",
                json!(rows.iter().map(|g| g.id.as_str()).collect::<Vec<_>>()),
            ),
        )
        .await?;
    if !deletes.is_empty() {
        crate::rebac_api::write_tuples(state, actor, DEFAULT_STORE, &rel, None, &[], &deletes)
            .await?;
    }
    if !writes.is_empty() {
        crate::rebac_api::write_tuples(state, actor, DEFAULT_STORE, &rel, None, &writes, &[])
            .await?;
    }
    for row in &rows {
        state.store.grant_insert(row).await?;
    }
    Ok(rows)
}

async fn assign_core(
    state: &AppState,
    actor: &str,
    task: TaskRow,
    req: Assign,
) -> Result<Value, ApiError> {
    task_open(&task)?;
    let agent = identity::SpiffeId::parse(&req.agent)
        .map_err(|e| bad("invalid_spiffe_id", e.to_string()))?;
    if !broker::lease::is_name(&req.role) {
        return Err(bad(
            "invalid_role",
            "a role is 1-63 of [a-z0-9_-], e.g. coder",
        ));
    }
    let all = resources_of(&task);
    let resources = match req.resources {
        None => all.clone(),
        Some(list) => {
            let list: Vec<String> = list
                .iter()
                .map(|r| check_resource(r))
                .collect::<Result<_, _>>()?;
            if let Some(outside) = list.iter().find(|r| !all.contains(r)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "scope_widening",
                    format!("`{outside}` is not one of task `{}`'s resources", task.id),
                ));
            }
            list
        }
    };
    let expires_ms = match req.ttl_s {
        Some(ttl) if ttl >= 1 => crate::ms_after(now_ms(), ttl).min(task.deadline_ms),
        Some(_) => return Err(bad("invalid_grant", "ttl_s must be at least 1")),
        None => task.deadline_ms,
    };
    let grants = grant(
        state,
        actor,
        &task,
        &agent,
        &GrantSpec {
            resources: &resources,
            permissions: &req.permissions,
            expires_ms,
            source: "assignment",
        },
    )
    .await?;
    // Assigned once its grants are checked and issued: a refused grant leaves no assignment.
    state
        .record(
            NewEvent::new(
                actor,
                "task.assign",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("task", task.id.clone())
            .field("agent", agent.to_string())
            .field("role", req.role.clone()),
        )
        .await?;
    let row = TaskAgentRow {
        task: task.id.clone(),
        agent: agent.to_string(),
        role: req.role.clone(),
        assigned_ms: now_ms(),
        assigned_by: actor.to_owned(),
    };
    let new = state.store.task_agent_put(&row).await?;

    state.refresh_tasks().await?;
    Ok(json!({
        "task": task.id, "agent": agent.to_string(), "role": req.role, "new": new,
        "grants": grants.iter().map(grant_json).collect::<Vec<_>>(),
    }))
}

/// Assigns an agent to a task with a role, granting it permissions on the task's resources
/// until the deadline (role `admin`).
#[utoipa::path(post, path = "/v1/tasks/{id}/agents", operation_id = "assign_task",
    tag = "tasks", security(("bearer" = [])), request_body = Assign,
    params(("id" = String, Path)),
    responses((status = 200, description = "assigned; grants issued"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn assign(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Assign>,
) -> Result<ApiJson<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let task = task_or_404(&state, &id).await?;
    Ok(ApiJson(
        assign_core(&state, &caller.actor(), task, req).await?,
    ))
}

/// The agent that created a task, acting on it: its SPIFFE ID, its actor name, the task.
async fn creator_task(
    state: &AppState,
    headers: &HeaderMap,
    peer: &PeerSvid,
    id: &str,
) -> Result<(identity::SpiffeId, String, TaskRow), ApiError> {
    let agent = require_agent(state, headers, peer, crate::agent_auth::Route::Tasks).await?;
    let actor = format!("agent:{}", agent.id);
    let task = task_or_404(state, id).await?;
    if task.created_by != actor {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_task_creator",
            format!(
                "only the task's creator (`{}`) or an admin may change task `{id}`",
                task.created_by
            ),
        ));
    }
    Ok((agent.id, actor, task))
}

/// Delegated administration: whether the agent `acting` may assign `req` to `task`.
///
/// Two refusals no policy can lift come first, each recorded: an agent of another trust
/// domain (403 `foreign_trust_domain` — an admin may assign a federated agent, an agent may
/// not) and the acting agent itself (403 `self_escalation` — an orchestrator never hands
/// itself permissions). Then the broker policy decides `assign` on `TaskType::"<type>"` with
/// `context.request`: `agent`, `role`, `permissions`, `resources`, `task`; anything it does not
/// permit is 403 `access_denied`.
async fn decide_delegated_assignment(
    state: &AppState,
    acting: &identity::SpiffeId,
    actor: &str,
    task: &TaskRow,
    req: &Assign,
) -> Result<(), ApiError> {
    let assignee = identity::SpiffeId::parse(&req.agent)
        .map_err(|e| bad("invalid_spiffe_id", e.to_string()))?;
    let refused = if assignee.trust_domain_name() != state.trust_domain().as_str() {
        Some((
            "foreign_trust_domain",
            format!(
                "an agent may assign only agents of trust domain `{}`; `{assignee}` is not one \
                 (an admin may assign it)",
                state.trust_domain()
            ),
        ))
    } else if &assignee == acting {
        Some((
            "self_escalation",
            format!("an agent may not assign itself to a task (`{acting}`)"),
        ))
    } else {
        None
    };
    if let Some((code, message)) = refused {
        state
            .record(
                NewEvent::new(
                    actor,
                    "task.assign",
                    Outcome::Denied,
                    OcsfClass::UserAccessManagement,
                )
                .field("task", task.id.clone())
                .field("agent", assignee.to_string())
                .field("role", req.role.clone())
                .field("refused", code),
            )
            .await?;
        return Err(ApiError::new(StatusCode::FORBIDDEN, code, message));
    }
    let resources = req.resources.clone().unwrap_or_else(|| resources_of(task));
    let mut attributes = serde_json::Map::new();
    attributes.insert("agent".into(), json!(assignee.to_string()));
    attributes.insert("role".into(), json!(req.role));
    attributes.insert("permissions".into(), json!(req.permissions));
    attributes.insert("resources".into(), json!(resources));
    attributes.insert("task".into(), json!(task.id));
    let decided = decide_as(
        state,
        RecordAs::Actor(actor),
        Question {
            api: "tasks",
            package: Some(&state.broker.policy_package),
            principal: acting.as_str(),
            action: "assign".into(),
            resource: ResourceRef {
                kind: "TaskType".into(),
                id: task.kind.clone(),
            },
            attributes,
            delegation: Vec::new(),
            task: None,
            token: None,
        },
    )
    .await?;
    if let Some(barred) = &decided.barred {
        return Err(barred.refusal(&decided.id));
    }
    if !decided.decision.is_allowed() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            format!(
                "policy denied assigning `{assignee}` as `{}` to task `{}` (decision {})",
                req.role, task.id, decided.id
            ),
        ));
    }
    Ok(())
}

/// The agent that created a task assigns an agent to it, if the broker policy allows
/// `assign` (delegated administration: never itself, never an agent of another trust domain).
#[utoipa::path(post, path = "/v1/agent/tasks/{id}/agents", operation_id = "agent_assign_task",
    tag = "tasks", request_body = Assign,
    params(("id" = String, Path)),
    responses((status = 200, description = "assigned; grants issued"), (status = 403, body = ErrorBody)))]
pub(crate) async fn agent_assign(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Assign>,
) -> Result<ApiJson<Value>, ApiError> {
    let (acting, actor, task) = creator_task(&state, &headers, &peer, &id).await?;
    task_open(&task)?;
    decide_delegated_assignment(&state, &acting, &actor, &task, &req).await?;
    Ok(ApiJson(assign_core(&state, &actor, task, req).await?))
}

/// How a task ends.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EndTask {
    /// `completed`, `failed` or `cancelled`.
    outcome: String,
    /// Why (1-512 characters).
    reason: String,
}

/// Ends an open task and everything it carried.
async fn end_core(
    state: &AppState,
    actor: &str,
    id: &str,
    req: EndTask,
) -> Result<TaskView, ApiError> {
    if !matches!(req.outcome.as_str(), "completed" | "failed" | "cancelled") {
        return Err(bad(
            "invalid_outcome",
            "outcome is completed, failed or cancelled",
        ));
    }
    crate::leases::check_reason(&req.reason)?;
    let task = task_or_404(state, id).await?;
    task_open(&task)?;
    state
        .record(
            NewEvent::new(
                actor,
                "task.end",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("task", id.to_owned())
            .field("outcome", req.outcome.clone())
            .field("reason", req.reason.clone()),
        )
        .await?;
    let ended = state
        .store
        .task_end(id, &req.outcome, &req.reason, now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "task_not_open",
                format!("task `{id}` ended meanwhile"),
            )
        })?;
    state.refresh_tasks().await?;
    cleanup(state, &ended).await?;
    let ended = task_or_404(state, id).await?;
    view(state, ended).await
}

/// Ends a task (role `admin`): `completed`, `failed` or `cancelled`. Its grants end (tuples
/// deleted), its leases and tokens are revoked; all recorded.
#[utoipa::path(post, path = "/v1/tasks/{id}/end", operation_id = "end_task",
    tag = "tasks", security(("bearer" = [])), request_body = EndTask,
    params(("id" = String, Path)),
    responses((status = 200, body = TaskView), (status = 409, body = ErrorBody)))]
pub(crate) async fn end(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EndTask>,
) -> Result<ApiJson<TaskView>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(ApiJson(end_core(&state, &caller.actor(), &id, req).await?))
}

/// The agent that created a task ends it.
#[utoipa::path(post, path = "/v1/agent/tasks/{id}/end", operation_id = "agent_end_task",
    tag = "tasks", request_body = EndTask,
    params(("id" = String, Path)),
    responses((status = 200, body = TaskView), (status = 403, body = ErrorBody)))]
pub(crate) async fn agent_end(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EndTask>,
) -> Result<ApiJson<TaskView>, ApiError> {
    let (_, actor, _) = creator_task(&state, &headers, &peer, &id).await?;
    Ok(ApiJson(end_core(&state, &actor, &id, req).await?))
}

/// Ends what an ended task carried: its grants (their tuples deleted), its leases and tokens.
/// Idempotent; run after every end and by the sweeper for tasks that ended while Warden was
/// down or part-way through.
pub(crate) async fn cleanup(state: &AppState, task: &TaskRow) -> Result<(), ApiError> {
    let actor = "system:tasks";
    let now = now_ms();
    let grants = state.store.grant_end(&task.id, now).await?;
    if !grants.is_empty() {
        state
            .record(
                NewEvent::new(
                    actor,
                    "grant.end",
                    Outcome::Success,
                    OcsfClass::UserAccessManagement,
                )
                .field("task", task.id.clone())
                .field("reason", format!("task {}", task.state))
                .field(
                    "grants",
                    json!(grants.iter().map(|g| g.id.as_str()).collect::<Vec<_>>()),
                ),
            )
            .await?;
    }
    // Every grant tuple of the task goes, also when its grants were ended before a crash.
    let all = state.store.grant_list(Some(&task.id), None, None).await?;
    drop_grant_tuples(state, actor, &all).await?;
    crate::leases::revoke(
        state,
        actor,
        &store::LeaseSelector::Task(task.id.clone()),
        &format!("task {} {}", task.id, task.state),
    )
    .await?;
    state.store.task_mark_cleaned(&task.id).await?;
    Ok(())
}

/// Deletes the relationship tuples of ended `grants` — except a standing one (an operator's),
/// and one another grant still active needs: that one is re-written to expire when the last
/// such grant does.
///
/// Idempotent also when two run at once (the sweeper and the call that ended the task, or two
/// replicas): a write that finds the tuple already gone, or already re-written, lost a race to
/// one doing the same work; the snapshot catches up and the work is computed again.
pub(crate) async fn drop_grant_tuples(
    state: &AppState,
    actor: &str,
    grants: &[GrantRow],
) -> Result<(), ApiError> {
    let Ok(rel) = crate::rebac_api::open_store(state, DEFAULT_STORE, None).await else {
        return Ok(());
    };
    let mut attempt = 0;
    loop {
        match drop_grant_tuples_once(state, actor, grants, &rel).await {
            Err(e) if matches!(e.code(), "tuple_not_found" | "tuple_exists") && attempt < 5 => {
                attempt += 1;
                rel.catch_up(state.store.as_ref()).await?;
            }
            other => return other,
        }
    }
}

/// One attempt of [`drop_grant_tuples`] against the snapshot `rel` holds now.
async fn drop_grant_tuples_once(
    state: &AppState,
    actor: &str,
    grants: &[GrantRow],
    rel: &crate::relations::RelStore,
) -> Result<(), ApiError> {
    let now = now_ms();
    let mut deletes: Vec<rebac::TupleKey> = Vec::new();
    let mut rewrites: Vec<rebac::Tuple> = Vec::new();
    for g in grants.iter().filter(|g| !g.source.ends_with(";standing")) {
        let Ok(user) = rebac::ObjectRef::for_spiffe_id(crate::relations::AGENT_TYPE, &g.agent)
        else {
            continue;
        };
        let Ok(key) = rebac::TupleKey::parse(&format!("{}#{}@{user}", g.resource, g.permission))
        else {
            continue;
        };
        if deletes.contains(&key) || rewrites.iter().any(|t| t.key == key) {
            continue;
        }
        let current = {
            let snap = rel.read();
            snap.graph().get(&key).filter(|e| e.is_none_or(|e| now < e))
        };
        let Some(current) = current else { continue };
        let still: Vec<GrantRow> = state
            .store
            .grant_list(None, Some(&g.agent), Some("active"))
            .await?
            .into_iter()
            .filter(|o| o.resource == g.resource && o.permission == g.permission)
            .collect();
        if still.iter().any(|o| o.source.ends_with(";standing")) {
            // The tuple is an operator's after all: not ours to change.
            continue;
        }
        match still.iter().map(|o| o.expires_ms).max() {
            None => deletes.push(key),
            Some(latest) if current != Some(latest) => {
                deletes.push(key.clone());
                rewrites.push(rebac::Tuple {
                    key,
                    expires_at_ms: Some(latest),
                });
            }
            Some(_) => {}
        }
    }
    // Deleted, then the re-written ones written back with their new expiry (one write may not
    // hold both a delete and a write of the same tuple).
    for chunk in deletes.chunks(rebac::MAX_TUPLES_PER_WRITE) {
        crate::rebac_api::write_tuples(state, actor, DEFAULT_STORE, rel, None, &[], chunk).await?;
    }
    for chunk in rewrites.chunks(rebac::MAX_TUPLES_PER_WRITE) {
        crate::rebac_api::write_tuples(state, actor, DEFAULT_STORE, rel, None, chunk, &[]).await?;
    }
    Ok(())
}

impl AppState {
    /// One pass of the task sweeper (every second, on every replica): tasks past their
    /// deadline expire (recorded), ended tasks not yet cleaned up are, and pending grant
    /// requests past their time are denied.
    pub async fn sweep_tasks(&self) -> Result<(), ApiError> {
        let now = now_ms();
        // Recorded first, then ended (only if still open: another replica may be first).
        let due: Vec<TaskRow> = self.store.task_due(now, 1000).await?;
        for t in due {
            self.record(
                NewEvent::new(
                    "system:tasks",
                    "task.end",
                    Outcome::Success,
                    OcsfClass::UserAccessManagement,
                )
                .field("task", t.id.clone())
                .field("outcome", "expired")
                .field("reason", "deadline passed"),
            )
            .await?;
            self.store
                .task_end(&t.id, "expired", "deadline passed", now)
                .await?;
        }
        let uncleaned = self.store.task_uncleaned(100).await?;
        if !uncleaned.is_empty() {
            self.refresh_tasks().await?;
        }
        for t in uncleaned {
            cleanup(self, &t).await?;
        }
        let timed_out: Vec<store::GrantRequestRow> = self.store.request_due(now, 1000).await?;
        for r in timed_out {
            self.record(
                NewEvent::new(
                    "system:tasks",
                    "grant.request_expired",
                    Outcome::Denied,
                    OcsfClass::UserAccessManagement,
                )
                .field("request_id", r.id.clone())
                .field("task", r.task.clone())
                .field("agent", r.agent.clone()),
            )
            .await?;
            self.store
                .request_decide(
                    &r.id,
                    "expired",
                    "timeout",
                    "no approver decided in time",
                    now,
                    None,
                )
                .await?;
            self.tasks.decided.notify_waiters();
        }
        Ok(())
    }
}

// ---- risk -----------------------------------------------------------------------------------

/// An operator's risk score for an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetRisk {
    /// The agent's SPIFFE ID.
    agent: String,
    /// 0.0 - 1.0 (three decimals kept).
    score: f64,
    /// Why (1-512 characters).
    reason: String,
}

/// Sets an agent's risk score (role `admin`); decisions see it as `context.risk_score` at once
/// here, within a second elsewhere. (Monitoring will set scores by itself later.)
#[utoipa::path(post, path = "/v1/risk", operation_id = "set_risk",
    tag = "tasks", security(("bearer" = [])), request_body = SetRisk,
    responses((status = 204), (status = 400, body = ErrorBody)))]
pub(crate) async fn set_risk(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<SetRisk>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let agent = identity::SpiffeId::parse(&req.agent)
        .map_err(|e| bad("invalid_spiffe_id", e.to_string()))?;
    if !(0.0..=1.0).contains(&req.score) {
        return Err(bad("invalid_risk", "a risk score is between 0.0 and 1.0"));
    }
    crate::leases::check_reason(&req.reason)?;
    let milli = (req.score * 1000.0).round() as i64;
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "risk.set",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("agent", agent.to_string())
            .field("score_milli", milli)
            .field("reason", req.reason.clone()),
        )
        .await?;
    state
        .store
        .risk_set(&store::RiskRow {
            agent: agent.to_string(),
            score_milli: milli,
            reason: req.reason,
            set_ms: now_ms(),
            set_by: caller.actor(),
        })
        .await?;
    state.refresh_tasks().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists risk scores (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/risk", operation_id = "list_risk", tag = "tasks", security(("bearer" = [])),
    responses((status = 200, description = "agent, score, reason, set_unix_ms, set_by")))]
pub(crate) async fn list_risk(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Value>, ApiError> {
    caller.require(Role::Auditor)?;
    let rows = state.store.risk_list().await?;
    Ok(ApiJson(json!(rows
        .iter()
        .map(|r| json!({"agent": r.agent, "score": r.score_milli as f64 / 1000.0, "reason": r.reason, "set_unix_ms": r.set_ms, "set_by": r.set_by}))
        .collect::<Vec<_>>())))
}

/// The task `agent` works on: it exists (404 `unknown_task`), is open (409
/// `task_not_open`), and the agent is assigned to it (403 `not_on_task`). For credentials and
/// grant requests made for a task.
pub(crate) async fn task_of_agent(
    state: &AppState,
    agent: &str,
    task: &str,
) -> Result<TaskRow, ApiError> {
    let t = task_or_404(state, task).await?;
    task_open(&t)?;
    if !state
        .store
        .task_agents(task)
        .await?
        .iter()
        .any(|a| a.agent == agent)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_on_task",
            format!("`{agent}` is not assigned to task `{task}`"),
        ));
    }
    Ok(t)
}
