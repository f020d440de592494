//! Policy packages (`/v1/policies`) and the three decision APIs: Warden's own
//! `POST /v1/authorize`, OpenID AuthZEN 1.0 (`/access/v1/evaluation[s]`) and OPA's data API
//! (`POST /v1/data/{path}`). Every upload, rollback and decision is a ledger entry; a decision
//! is recorded before it is answered.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use identity::SpiffeId;
use ledger::{NewEvent, OcsfClass, Outcome};
use policy::{CompiledPackage, Language, PackageSource, PolicyError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ErrorBody},
    holds::{Barred, Subjects},
    now_ms,
    pdp::{self, Loaded},
};

/// Package names: what `warden policy push NAME` takes.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("package name `{name}` must be 1-64 of [a-z0-9._-]"),
        ))
    }
}

/// The engine's refusal of a package or a request, as an API error.
fn policy_error(e: &PolicyError) -> ApiError {
    match e {
        PolicyError::InvalidPackage { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            e.to_string(),
        ),
        PolicyError::ContextTooLarge { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "context_too_large", e.to_string())
        }
        PolicyError::ContextTooDeep { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "context_too_deep", e.to_string())
        }
        // A Rego runtime error or timeout in the OPA data API: no result, and no allow.
        PolicyError::Evaluation { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy_evaluation_failed",
            e.to_string(),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_authorization_request",
            e.to_string(),
        ),
    }
}

/// One file of a package.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// File name; its extension gives the language (`.cedar`, `.cedarschema`, `.rego`).
    name: String,
    /// Its text.
    text: String,
}

/// Request to push a package version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PushPolicy {
    /// `cedar` or `rego`; by default from the file extensions.
    #[serde(default)]
    language: Option<String>,
    /// The files.
    files: Vec<PolicyFile>,
    /// Rego: the rule that decides (default `data.<package>.allow`).
    #[serde(default)]
    entrypoint: Option<String>,
    /// Refuse (409) unless the package's latest version is this one (0: a new package).
    #[serde(default)]
    expected_version: Option<i64>,
}

/// A package version as listed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PolicyVersion {
    package: String,
    version: i64,
    language: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<String>,
    sha256: String,
    created_unix_ms: i64,
    created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// File names.
    files: Vec<String>,
    /// Whether this is the version in force.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    active: bool,
    /// Cedar validator warnings (pushes only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

fn listed(row: &store::PolicyVersionRow, active: bool) -> PolicyVersion {
    let files = serde_json::from_str::<Vec<(String, String)>>(&row.files_json)
        .map(|f| f.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    PolicyVersion {
        package: row.package.clone(),
        version: row.version,
        language: row.language.clone(),
        entrypoint: row.entrypoint.clone(),
        sha256: row.content_sha256.clone(),
        created_unix_ms: row.created_unix_ms,
        created_by: row.created_by.clone(),
        note: row.note.clone(),
        files,
        active,
        warnings: Vec::new(),
    }
}

fn language_of(req: &PushPolicy) -> Result<Language, ApiError> {
    if let Some(l) = &req.language {
        return l.parse().map_err(|e: PolicyError| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
        });
    }
    let rego = req.files.iter().any(|f| f.name.ends_with(".rego"));
    let cedar = req
        .files
        .iter()
        .any(|f| f.name.ends_with(".cedar") || f.name.ends_with(".cedarschema"));
    match (cedar, rego) {
        (true, false) => Ok(Language::Cedar),
        (false, true) => Ok(Language::Rego),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "cannot tell the language from the file names: give `.cedar` + `.cedarschema` or `.rego` files (not both), or set `language`",
        )),
    }
}

/// Compiles a package off the async threads; an invalid one is 422 with the diagnostics.
async fn compile(source: PackageSource) -> Result<CompiledPackage, ApiError> {
    tokio::task::spawn_blocking(move || CompiledPackage::compile(&source))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match &e {
            PolicyError::InvalidPackage { diagnostics } => {
                policy_error(&e).with_details(serde_json::json!({ "diagnostics": diagnostics }))
            }
            _ => policy_error(&e),
        })
}

/// Compiles and stores a new version: recorded in the ledger first, then in force here at
/// once (other replicas within a second).
async fn append_version(
    state: &AppState,
    caller: &Caller,
    package: &str,
    source: PackageSource,
    expected: Option<i64>,
    note: Option<String>,
    action: &str,
) -> Result<PolicyVersion, ApiError> {
    let compiled = compile(source.clone()).await?;
    let files_json = serde_json::to_string(&source.files).map_err(ApiError::internal)?;
    let row = store::PolicyVersionRow {
        package: package.to_owned(),
        version: 0,
        language: source.language.as_str().to_owned(),
        entrypoint: source.entrypoint.clone(),
        files_json,
        content_sha256: compiled.content_hash().to_owned(),
        created_unix_ms: now_ms(),
        created_by: caller.actor(),
        note: note.clone(),
    };
    let latest = state
        .store
        .policy_versions(package)
        .await?
        .last()
        .map_or(0, |r| r.version);
    if let Some(expected) = expected {
        if expected != latest {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("package `{package}` is at version {latest}, not {expected}"),
            ));
        }
    }
    let mut event = NewEvent::new(
        caller.actor(),
        action,
        Outcome::Success,
        OcsfClass::UserAccessManagement,
    )
    .field("package", package)
    .field("version", latest + 1)
    .field("language", source.language.as_str())
    .field("sha256", compiled.content_hash())
    .field(
        "files",
        source
            .files
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>(),
    );
    if let Some(note) = &note {
        event = event.field("note", note.clone());
    }
    state.record(event).await?;
    // The number recorded is the one stored: a concurrent push in between is refused.
    let version = state.store.policy_append(&row, Some(latest)).await?;
    state
        .pdp
        .refresh(state.store.as_ref())
        .await
        .map_err(ApiError::from)?;
    let mut out = listed(&store::PolicyVersionRow { version, ..row }, true);
    out.warnings = compiled
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(out)
}

/// Pushes a new version of a policy package (role `admin`). Invalid policies, schemas or Rego
/// are refused with 422 `invalid_policy` and the engine's diagnostics (file, line, column).
#[utoipa::path(post, path = "/v1/policies/{name}", operation_id = "push_policy",
    tag = "policy", security(("bearer" = [])), request_body = PushPolicy,
    params(("name" = String, Path, description = "package name")),
    responses((status = 201, body = PolicyVersion), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn push(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PushPolicy>,
) -> Result<(StatusCode, ApiJson<PolicyVersion>), ApiError> {
    caller.require(Role::Admin)?;
    check_name(&name)?;
    let language = language_of(&req)?;
    let source = PackageSource {
        language,
        files: req.files.into_iter().map(|f| (f.name, f.text)).collect(),
        entrypoint: req.entrypoint,
    };
    let out = append_version(
        &state,
        &caller,
        &name,
        source,
        req.expected_version,
        None,
        "policy.push",
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(out)))
}

/// Lists the packages in force, latest version each (role `auditor`).
#[utoipa::path(get, path = "/v1/policies", operation_id = "list_policies",
    tag = "policy", security(("bearer" = [])),
    responses((status = 200, body = Vec<PolicyVersion>)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<PolicyVersion>>, ApiError> {
    caller.require(Role::Auditor)?;
    let rows = state.store.policy_latest().await?;
    Ok(ApiJson(rows.iter().map(|r| listed(r, true)).collect()))
}

/// `?version=N`
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionQuery {
    /// Show this version's files.
    version: Option<i64>,
}

/// A package's versions, oldest first; with `?version=N` that version with its files (role
/// `auditor`).
#[utoipa::path(get, path = "/v1/policies/{name}", operation_id = "get_policy",
    tag = "policy", security(("bearer" = [])),
    params(("name" = String, Path, description = "package name"), VersionQuery),
    responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    crate::error::ApiQuery(q): crate::error::ApiQuery<VersionQuery>,
) -> Result<ApiJson<Value>, ApiError> {
    caller.require(Role::Auditor)?;
    let rows = state.store.policy_versions(&name).await?;
    let latest = rows.last().map(|r| r.version);
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("no policy package `{name}`")));
    }
    match q.version {
        None => Ok(ApiJson(serde_json::json!({
            "package": name,
            "versions": rows.iter().map(|r| listed(r, Some(r.version) == latest)).collect::<Vec<_>>(),
        }))),
        Some(v) => {
            let row = rows
                .iter()
                .find(|r| r.version == v)
                .ok_or_else(|| ApiError::not_found(format!("`{name}` has no version {v}")))?;
            let files: Vec<(String, String)> =
                serde_json::from_str(&row.files_json).map_err(ApiError::internal)?;
            let mut out =
                serde_json::to_value(listed(row, Some(v) == latest)).map_err(ApiError::internal)?;
            out["files"] = files
                .into_iter()
                .map(|(name, text)| serde_json::json!({"name": name, "text": text}))
                .collect();
            Ok(ApiJson(out))
        }
    }
}

/// Request to roll back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rollback {
    /// The earlier version whose content becomes the new latest version.
    to: i64,
}

/// Rolls a package back (role `admin`): the content of version `to` becomes a new version, so
/// history stays append-only.
#[utoipa::path(post, path = "/v1/policies/{name}/rollback", operation_id = "rollback_policy",
    tag = "policy", security(("bearer" = [])), request_body = Rollback,
    params(("name" = String, Path, description = "package name")),
    responses((status = 201, body = PolicyVersion), (status = 404, body = ErrorBody)))]
pub(crate) async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Rollback>,
) -> Result<(StatusCode, ApiJson<PolicyVersion>), ApiError> {
    caller.require(Role::Admin)?;
    let rows = state.store.policy_versions(&name).await?;
    let latest = rows.last().map(|r| r.version).unwrap_or(0);
    let row = rows
        .iter()
        .find(|r| r.version == req.to)
        .ok_or_else(|| ApiError::not_found(format!("`{name}` has no version {}", req.to)))?;
    let source = pdp::source_of(row).map_err(ApiError::internal)?;
    let out = append_version(
        &state,
        &caller,
        &name,
        source,
        Some(latest),
        Some(format!("rollback to version {}", req.to)),
        "policy.rollback",
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(out)))
}

// ---- decisions ------------------------------------------------------------------------------

/// A resource: entity type and id.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourceRef {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) id: String,
}

/// Warden's native decision request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Authorize {
    /// The package to ask (optional when only one is in force).
    #[serde(default)]
    package: Option<String>,
    /// The agent's SPIFFE ID.
    principal: String,
    /// The action.
    action: String,
    /// What the action is on.
    resource: ResourceRef,
    /// The caller's request attributes (they appear as `context.request`).
    #[serde(default)]
    context: Map<String, Value>,
    /// An access token the agent presented to the caller (from `/oauth2/token`). Warden checks
    /// it as introspection does, requires the principal to hold it, and fills
    /// `context.delegation` from its chain; the entry records its `jti`, never the token.
    #[serde(default)]
    token: Option<String>,
}

/// A decision.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuthorizeResponse {
    /// `allow` or `deny`.
    decision: &'static str,
    /// The same, as a boolean.
    allowed: bool,
    /// The policies (Cedar ids) or rule (Rego) that determined it.
    determining_policies: Vec<String>,
    /// Evaluation errors (a failing Cedar policy is skipped; a Rego error denies).
    errors: Vec<String>,
    package: String,
    policy_version: i64,
    policy_sha256: String,
    /// The id of the ledger record of this decision.
    decision_id: String,
    /// Why Warden denied before any policy ran (the principal, an agent in the token's
    /// delegation chain, or the task is on hold or on the denylist); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The same, for machines: `code`, `reason`, `agent`, `position`, `vendor`, `task`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    barred: Option<Value>,
}

/// One question for the decision core.
pub(crate) struct Question<'a> {
    pub(crate) api: &'static str,
    pub(crate) package: Option<&'a str>,
    pub(crate) principal: &'a str,
    pub(crate) action: String,
    pub(crate) resource: ResourceRef,
    pub(crate) attributes: Map<String, Value>,
    /// The delegation chain of the presented token (the broker's subject token, or the
    /// `token` given to `/v1/authorize`; empty without one).
    pub(crate) delegation: Vec<SpiffeId>,
    /// A task the request is for (the token's, the credential's), besides the principal's
    /// current task: on hold, the request is denied before any policy runs.
    pub(crate) task: Option<String>,
    /// The access token presented with `/v1/authorize`, already verified.
    pub(crate) token: Option<crate::oauth::Presented>,
}

/// A decision made and recorded.
pub(crate) struct Decided {
    pub(crate) loaded: Arc<Loaded>,
    pub(crate) decision: policy::Decision,
    /// Its id (`dec_…`).
    pub(crate) id: String,
    /// Why Warden denied before any policy ran, if it did.
    pub(crate) barred: Option<Barred>,
}

/// Who a decision is recorded for: an API caller (the entry stands for its request), or the
/// broker deciding for an agent.
pub(crate) enum RecordAs<'a> {
    Caller(&'a Caller),
    Actor(&'a str),
}

/// Decides one request and records it as `record_as` says: the shared core of every decision
/// path.
pub(crate) async fn decide_as(
    state: &AppState,
    record_as: RecordAs<'_>,
    q: Question<'_>,
) -> Result<Decided, ApiError> {
    let actor = match &record_as {
        RecordAs::Caller(caller) => caller.actor(),
        RecordAs::Actor(actor) => (*actor).to_owned(),
    };
    let Evaluated {
        loaded,
        decision,
        id,
        event,
        barred,
    } = evaluate(state, &actor, q).await?;
    // Recorded before it is answered; if it cannot be, the answer is 503, never an allow.
    match record_as {
        RecordAs::Caller(caller) => caller.record_for_request(state, event).await?,
        RecordAs::Actor(_) => state.record(event).await?,
    }
    Ok(Decided {
        loaded,
        decision,
        id,
        barred,
    })
}

/// The context Warden fills in for a decision, and what it was built from.
pub(crate) struct DecisionContext {
    pub(crate) context: policy::Context,
    /// The agent's current task (before it was fitted to the package's schema).
    pub(crate) task: Option<Arc<crate::tasks_api::OpenTask>>,
    /// Why the relations could not be looked up: the decision must deny (fail closed).
    pub(crate) relation_error: Option<String>,
}

/// Builds the context Warden fills in for `principal` doing `action` on `resource` under
/// `loaded`: agent metadata, hold (the agent's or its task's), the current task fitted to the
/// package's schema, the risk score, the delegation chain, and — for packages that use them —
/// the relations held on the resource. The one place decisions get their context (explaining
/// a refusal rebuilds it here too).
pub(crate) fn decision_context(
    state: &AppState,
    loaded: &Loaded,
    principal: &SpiffeId,
    action: &str,
    resource: &ResourceRef,
    attributes: Map<String, Value>,
    delegation: Vec<SpiffeId>,
) -> DecisionContext {
    // Nothing named: the task covering the resource, if any (never a mismatch).
    let task = state
        .current_task(principal.as_str(), &resource.kind, &resource.id, None)
        .ok()
        .flatten();
    decision_context_with(
        state, loaded, principal, action, resource, attributes, delegation, task,
    )
}

/// [`decision_context`] with the current task already chosen
/// ([`AppState::current_task`]).
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one question, passed through"
)]
fn decision_context_with(
    state: &AppState,
    loaded: &Loaded,
    principal: &SpiffeId,
    action: &str,
    resource: &ResourceRef,
    attributes: Map<String, Value>,
    delegation: Vec<SpiffeId>,
    task: Option<Arc<crate::tasks_api::OpenTask>>,
) -> DecisionContext {
    let hold = state.denylist.denies_id(principal)
        || task.as_ref().is_some_and(|t| state.held.task(&t.row.id));
    let facts = state.registry.facts(principal.as_str());
    let mut context = state.pdp.context(facts, hold, attributes);
    context.delegation = delegation;
    context.task = loaded
        .compiled
        .fit_task(action, task.as_ref().map(|t| t.policy.clone()));
    context.risk_score = state.risk_score(principal.as_str());
    let mut relation_error = None;
    if loaded.compiled.wants_relations(action) {
        match state
            .relations
            .held(principal, &resource.kind, &resource.id, crate::now_ms())
        {
            Ok(held) => context.relations = held,
            Err(e) => relation_error = Some(e),
        }
    }
    DecisionContext {
        context,
        task,
        relation_error,
    }
}

/// A decision made and not yet recorded: its caller must record `event` before acting on it
/// or answering.
pub(crate) struct Evaluated {
    pub(crate) loaded: Arc<Loaded>,
    pub(crate) decision: policy::Decision,
    pub(crate) id: String,
    pub(crate) event: ledger::NewEvent,
    /// Why Warden denied before any policy ran, if it did.
    pub(crate) barred: Option<Barred>,
}

/// A deny no policy made.
fn denied() -> policy::Decision {
    policy::Decision {
        effect: policy::Effect::Deny,
        determining: Vec::new(),
        errors: Vec::new(),
    }
}

/// Decides one request for `actor` and returns the decision with its ledger entry, unrecorded
/// (for callers that record it together with what the decision allowed, in one commit).
///
/// Holds and the denylist come first ([`AppState::barred`]): a principal, an agent in its
/// delegation chain, or a task that is on hold or denied gets a deny recorded with the
/// reason, and no policy runs.
pub(crate) async fn evaluate(
    state: &AppState,
    actor: &str,
    q: Question<'_>,
) -> Result<Evaluated, ApiError> {
    let Question {
        api,
        package,
        principal,
        action,
        resource,
        attributes,
        delegation,
        task,
        token,
    } = q;
    let loaded = state.pdp.choose(package)?;
    let principal = SpiffeId::parse(principal)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_spiffe_id", e.to_string()))?;
    let resource_text = format!("{}::{}", resource.kind, resource.id);
    let token_jti = token.as_ref().map(|t| t.jti.clone());
    let barred = state.barred(&Subjects {
        principal: Some(&principal),
        resource: Some((&resource.kind, &resource.id)),
        delegation: &delegation,
        task: task.as_deref(),
    })?;
    if let Some(barred) = barred {
        let attributes = Value::Object(attributes);
        // What the policy path would refuse as too large is refused here too: it is recorded.
        pdp::check_asked(&attributes, 1)?;
        let id = pdp::decision_id();
        let mut event = pdp::barred_event(
            actor,
            &id,
            pdp::Asked {
                api,
                principal: principal.as_str(),
                action: &action,
                resource: &resource_text,
                request: &(),
            },
            &loaded,
            &barred,
        )
        .field_serialized("attributes", &attributes)
        .map_err(ApiError::internal)?
        .field(
            "delegation",
            delegation
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        );
        if let Some(jti) = token_jti {
            event = event.field("token_jti", jti);
        }
        return Ok(Evaluated {
            loaded,
            decision: denied(),
            id,
            event,
            barred: Some(barred),
        });
    }
    // A presented token that is no longer live is refused (no decision) once the holds had
    // their say: a token revoked because its agent was held is a recorded deny above.
    if let Some(refused) = token.and_then(|t| t.refused) {
        return Err(refused);
    }
    // The decision's task: the one the request names, else the one covering the resource. A
    // named task that is not the agent's, or not the one the resource belongs to, is a
    // recorded deny: a token minted for one task never lends its type to another's action.
    let (current, mismatch) = match state.current_task(
        principal.as_str(),
        &resource.kind,
        &resource.id,
        task.as_deref(),
    ) {
        Ok(current) => (current, None),
        Err(m) => (None, Some(m)),
    };
    let DecisionContext {
        context,
        relation_error,
        ..
    } = decision_context_with(
        state, &loaded, &principal, &action, &resource, attributes, delegation, current,
    );
    let refusal = match mismatch {
        Some(m) => Some(format!("task mismatch: {}", m.reason)),
        None => relation_error,
    };
    let request = policy::Request {
        principal: principal.clone(),
        action: action.clone(),
        resource: policy::Resource {
            kind: resource.kind,
            id: resource.id,
        },
        context,
    };
    let decision = match refusal {
        Some(e) => policy::Decision {
            effect: policy::Effect::Deny,
            determining: Vec::new(),
            errors: vec![e],
        },
        None => state
            .pdp
            .decide(&loaded, &request)
            .await
            .map_err(|e| policy_error(&e))?,
    };
    let id = pdp::decision_id();
    let mut event = pdp::decision_event(
        actor,
        &id,
        pdp::Asked {
            api,
            principal: principal.as_str(),
            action: &action,
            resource: &resource_text,
            request: &request,
        },
        &loaded,
        &decision,
    )
    .map_err(ApiError::internal)?;
    if let Some(jti) = token_jti {
        event = event.field("token_jti", jti);
    }
    Ok(Evaluated {
        loaded,
        decision,
        id,
        event,
        barred: None,
    })
}

/// Decides: may `principal` do `action` on `resource`? Warden fills in the context it knows
/// (agent metadata, task, risk score, hold, time); the caller's `context` appears as
/// `context.request` (role `enforcer` or `admin`).
#[utoipa::path(post, path = "/v1/authorize", operation_id = "authorize",
    tag = "policy", security(("bearer" = [])), request_body = Authorize,
    responses((status = 200, body = AuthorizeResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn authorize(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<Authorize>,
) -> Result<ApiJson<AuthorizeResponse>, ApiError> {
    caller.require(Role::Enforcer)?;
    let token = match req.token.as_deref() {
        Some(token) => Some(crate::oauth::presented_token(&state, token, &req.principal).await?),
        None => None,
    };
    let Decided {
        loaded,
        decision,
        id: decision_id,
        barred,
    } = decide_as(
        &state,
        RecordAs::Caller(&caller),
        Question {
            api: "authorize",
            package: req.package.as_deref(),
            principal: &req.principal,
            action: req.action,
            resource: req.resource,
            attributes: req.context,
            delegation: token.as_ref().map(|t| t.chain.clone()).unwrap_or_default(),
            task: token.as_ref().and_then(|t| t.task.clone()),
            token,
        },
    )
    .await?;
    let allowed = decision.is_allowed();
    Ok(ApiJson(AuthorizeResponse {
        decision: if allowed { "allow" } else { "deny" },
        allowed,
        determining_policies: decision.determining,
        errors: decision.errors,
        package: loaded.name.clone(),
        policy_version: loaded.version,
        policy_sha256: loaded.compiled.content_hash().to_owned(),
        decision_id,
        reason: barred.as_ref().map(Barred::reason),
        barred: barred.as_ref().map(Barred::to_json),
    }))
}

/// `?package=NAME` for the standard APIs, which have no field for it.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PackageQuery {
    /// The package to ask (optional when only one is in force).
    package: Option<String>,
}

/// An AuthZEN subject or resource: `type`, `id`, `properties`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub(crate) struct AzEntity {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// AuthZEN action.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub(crate) struct Action {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// An AuthZEN 1.0 access evaluation request (also one item of a batch, where any member may
/// be left to the batch's defaults).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub(crate) struct Evaluation {
    #[serde(default)]
    subject: Option<AzEntity>,
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    resource: Option<AzEntity>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("`{what}` is required"),
        )
    })
}

async fn evaluate_one(
    state: &AppState,
    caller: &Caller,
    package: Option<&str>,
    e: Evaluation,
) -> Result<Value, ApiError> {
    let subject = required(e.subject, "subject")?;
    let action = required(e.action, "action")?;
    let resource = required(e.resource, "resource")?;
    let principal = required(subject.id, "subject.id")?;
    let action_name = required(action.name, "action.name")?;
    // Properties the caller sends are request attributes, never facts about the agent.
    let mut attributes = e.context.unwrap_or_default();
    for (key, props) in [
        ("subject_properties", subject.properties),
        ("action_properties", action.properties),
        ("resource_properties", resource.properties),
    ] {
        if let Some(p) = props {
            attributes.insert(key.into(), Value::Object(p));
        }
    }
    // The subject is an agent, whatever `type` the caller names it with.
    let _ = subject.kind;
    let Decided {
        decision,
        id,
        barred,
        ..
    } = decide_as(
        state,
        RecordAs::Caller(caller),
        Question {
            api: "authzen",
            package,
            principal: &principal,
            action: action_name,
            resource: ResourceRef {
                kind: required(resource.kind, "resource.type")?,
                id: required(resource.id, "resource.id")?,
            },
            attributes,
            delegation: Vec::new(),
            task: None,
            token: None,
        },
    )
    .await?;
    let mut reason = Map::new();
    reason.insert(
        "determining_policies".into(),
        decision.determining.clone().into(),
    );
    if !decision.errors.is_empty() {
        reason.insert("errors".into(), decision.errors.clone().into());
    }
    if let Some(barred) = &barred {
        reason.insert("reason".into(), barred.reason().into());
        reason.insert("barred".into(), barred.to_json());
    }
    Ok(serde_json::json!({
        "decision": decision.is_allowed(),
        "context": { "id": id, "reason_admin": reason },
    }))
}

/// OpenID AuthZEN 1.0 Access Evaluation API: `{"subject": {"type", "id"}, "action": {"name"},
/// "resource": {"type", "id"}, "context"?}` → `{"decision": bool}` (role `enforcer`).
#[utoipa::path(post, path = "/access/v1/evaluation", operation_id = "authzen_evaluation",
    tag = "policy", security(("bearer" = [])), request_body = Evaluation,
    params(PackageQuery),
    responses((status = 200, body = serde_json::Value), (status = 400, body = ErrorBody)))]
pub(crate) async fn authzen_evaluation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    crate::error::ApiQuery(q): crate::error::ApiQuery<PackageQuery>,
    ApiJson(req): ApiJson<Evaluation>,
) -> Result<ApiJson<Value>, ApiError> {
    caller.require(Role::Enforcer)?;
    Ok(ApiJson(
        evaluate_one(&state, &caller, q.package.as_deref(), req).await?,
    ))
}

/// An AuthZEN batch: defaults (the members of one evaluation) plus `evaluations`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Evaluations {
    #[serde(flatten)]
    defaults: Evaluation,
    #[serde(default)]
    evaluations: Vec<Evaluation>,
}

impl Evaluation {
    /// This evaluation with every member it leaves out taken from `defaults`.
    fn or(self, defaults: &Evaluation) -> Evaluation {
        Evaluation {
            subject: self.subject.or_else(|| defaults.subject.clone()),
            action: self.action.or_else(|| defaults.action.clone()),
            resource: self.resource.or_else(|| defaults.resource.clone()),
            context: self.context.or_else(|| defaults.context.clone()),
        }
    }
}

/// Most evaluations in one batch.
const MAX_BATCH: usize = 256;

/// OpenID AuthZEN 1.0 Access Evaluations API (batch): top-level `subject`, `action`,
/// `resource`, `context` are defaults each item may override → `{"evaluations": [{"decision"}…]}`
/// in order (role `enforcer`).
#[utoipa::path(post, path = "/access/v1/evaluations", operation_id = "authzen_evaluations",
    tag = "policy", security(("bearer" = [])), request_body = Evaluations,
    params(PackageQuery),
    responses((status = 200, body = serde_json::Value), (status = 400, body = ErrorBody)))]
pub(crate) async fn authzen_evaluations(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    crate::error::ApiQuery(q): crate::error::ApiQuery<PackageQuery>,
    ApiJson(req): ApiJson<Evaluations>,
) -> Result<ApiJson<Value>, ApiError> {
    caller.require(Role::Enforcer)?;
    if req.evaluations.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("at most {MAX_BATCH} evaluations per batch"),
        ));
    }
    let items = if req.evaluations.is_empty() {
        // No list: the defaults are the one request.
        vec![Evaluation::default()]
    } else {
        req.evaluations
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let merged = item.or(&req.defaults);
        out.push(evaluate_one(&state, &caller, q.package.as_deref(), merged).await?);
    }
    Ok(ApiJson(serde_json::json!({ "evaluations": out })))
}

/// Who an OPA data API input is about, read the way Warden's packages read `input`:
/// `principal` (a SPIFFE ID), `resource` `{type, id}`, `context.delegation` (SPIFFE IDs) and
/// `context.task.id`. What is absent or does not parse names nobody.
struct OpaSubjects {
    principal: Option<SpiffeId>,
    resource: Option<(String, String)>,
    delegation: Vec<SpiffeId>,
    task: Option<String>,
}

impl OpaSubjects {
    fn of(input: &Value) -> Self {
        let text = |pointer: &str| input.pointer(pointer).and_then(Value::as_str);
        Self {
            principal: text("/principal").and_then(|p| SpiffeId::parse(p).ok()),
            resource: text("/resource/type")
                .zip(text("/resource/id"))
                .map(|(k, i)| (k.to_owned(), i.to_owned())),
            delegation: input
                .pointer("/context/delegation")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|id| SpiffeId::parse(id).ok())
                        .collect()
                })
                .unwrap_or_default(),
            task: text("/context/task/id").map(str::to_owned),
        }
    }

    fn subjects(&self) -> Subjects<'_> {
        Subjects {
            principal: self.principal.as_ref(),
            resource: self
                .resource
                .as_ref()
                .map(|(k, i)| (k.as_str(), i.as_str())),
            delegation: &self.delegation,
            task: self.task.as_deref(),
        }
    }

    fn resource_text(&self) -> String {
        self.resource
            .as_ref()
            .map(|(k, i)| format!("{k}::{i}"))
            .unwrap_or_default()
    }
}

/// OPA's data API request.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct DataRequest {
    /// The input document (any JSON value; `null` when left out).
    #[serde(default)]
    #[schema(value_type = Value)]
    input: Value,
}

/// OPA's data API answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DataResponse {
    /// The decision's id in the ledger.
    decision_id: String,
    /// The document's value (any JSON value); absent when the rule is undefined for this
    /// input.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value, required = false)]
    result: Option<Value>,
}

/// OPA-compatible data API for Rego packages: `POST /v1/data/a/b/allow {"input": …}` →
/// `{"result": …, "decision_id"}` (no `result` when the rule is undefined), so existing OPA
/// clients work pointed at Warden (role `enforcer`). The input is evaluated as sent — unless
/// the agent it names (`input.principal`, `input.context.delegation`, the task) is on hold or
/// on the denylist: then the deny is recorded and the answer is 403 with no result.
///
/// The route takes a document path of any depth (`/v1/data/{*path}`); OpenAPI models a path
/// parameter as one segment, so the document describes `path` as one string that may hold `/`.
#[utoipa::path(post, path = "/v1/data/{path}", operation_id = "opa_data", tag = "policy",
    security(("bearer" = [])), request_body = DataRequest,
    params(("path" = String, Path, example = "coder/allow",
        description = "The document's path under `data`, its segments separated by `/` \
            (`coder/allow` asks for `data.coder.allow`). Unlike other path parameters it may \
            hold `/`: send the slashes as they are (as `allowReserved` allows for a query \
            parameter) or percent-encoded as `%2F`; both name the same document. OpenAPI 3.1 \
            cannot describe a parameter that spans several path segments, so it is documented \
            as one string.")),
    responses((status = 200, body = DataResponse), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn opa_data(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<String>,
    ApiJson(req): ApiJson<DataRequest>,
) -> Result<ApiJson<DataResponse>, ApiError> {
    caller.require(Role::Enforcer)?;
    let rule = format!("data.{}", path.trim_matches('/').replace('/', "."));
    // The Rego package that defines the document.
    let loaded = state
        .pdp
        .packages()
        .into_iter()
        .find(|p| p.compiled.defines(&rule))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_document",
                format!("no Rego package in force defines `{rule}`"),
            )
        })?;
    let input_bytes = serde_json::to_vec(&req.input).map_or(usize::MAX, |v| v.len());
    if input_bytes > pdp::MAX_CONTEXT_BYTES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "context_too_large",
            format!("input is larger than {} bytes", pdp::MAX_CONTEXT_BYTES),
        ));
    }
    // Holds and the denylist first: the input names the agent as Warden's packages read it.
    let asked = OpaSubjects::of(&req.input);
    if let Some(barred) = state.barred(&asked.subjects())? {
        pdp::check_asked(&req.input, 0)?;
        let id = pdp::decision_id();
        let principal = asked.principal.as_ref().map_or("", SpiffeId::as_str);
        caller
            .record_for_request(
                &state,
                pdp::barred_event(
                    &caller.actor(),
                    &id,
                    pdp::Asked {
                        api: "opa",
                        principal,
                        action: &rule,
                        resource: &asked.resource_text(),
                        request: &(),
                    },
                    &loaded,
                    &barred,
                )
                .field_serialized("input", &req.input)
                .map_err(ApiError::internal)?,
            )
            .await?;
        // Not a `result`: whether `true` or `false` means allow depends on the rule (`allow`
        // or `deny`), so a barred principal gets an error no OPA client reads as an allow.
        return Err(barred.refusal(&id));
    }
    let result = state
        .pdp
        .eval_rule(&loaded, &rule, req.input.clone())
        .await
        .map_err(|e| policy_error(&e))?;
    let id = pdp::decision_id();
    let allowed = matches!(result, Some(Value::Bool(true)));
    let decision = policy::Decision {
        effect: if allowed {
            policy::Effect::Allow
        } else {
            policy::Effect::Deny
        },
        determining: if allowed {
            vec![rule.clone()]
        } else {
            Vec::new()
        },
        errors: Vec::new(),
    };
    caller
        .record_for_request(
            &state,
            pdp::decision_event(
                &caller.actor(),
                &id,
                pdp::Asked {
                    api: "opa",
                    principal: "",
                    action: &rule,
                    resource: "",
                    request: &req.input,
                },
                &loaded,
                &decision,
            )
            .map_err(ApiError::internal)?,
        )
        .await?;
    Ok(ApiJson(DataResponse {
        decision_id: id,
        result,
    }))
}

// ---- simulation -----------------------------------------------------------------------------

/// Request to replay recorded decisions against a candidate package.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Simulate {
    /// `cedar` or `rego`; by default from the file extensions.
    #[serde(default)]
    language: Option<String>,
    /// The candidate package's files.
    files: Vec<PolicyFile>,
    /// Rego: the rule that decides.
    #[serde(default)]
    entrypoint: Option<String>,
    /// Replay decisions recorded at or after this time, Unix milliseconds (default: all).
    #[serde(default)]
    since_unix_ms: Option<i64>,
    /// Read at most this many ledger entries (default and most: 5,000,000).
    #[serde(default)]
    max_entries: Option<u64>,
    /// Replay for at most this many milliseconds (default and most: 20,000).
    #[serde(default)]
    max_ms: Option<u64>,
}

/// A recorded decision the candidate would decide differently.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Flip {
    decision_id: String,
    /// Ledger index of the recorded decision.
    ledger_index: u64,
    time: String,
    principal: String,
    action: String,
    resource: String,
    /// What was decided: `allow` or `deny`.
    was: String,
    /// What the candidate decides: `allow`, `deny`, or `invalid` (the candidate's schema
    /// refuses the request).
    now: String,
    /// The candidate's determining policies, or why the request is invalid.
    because: Vec<String>,
}

/// Most ledger entries one simulation reads.
const MAX_SIMULATION_ENTRIES: u64 = 5_000_000;

/// Longest one simulation replays: under the default 30 s request time limit, so the answer,
/// with what was replayed so far, arrives before the request would be cut off.
const MAX_SIMULATION_TIME: Duration = Duration::from_secs(20);

/// Most flips listed in one answer; all of them are counted (`flip_count`).
const MAX_LISTED_FLIPS: usize = 10_000;

/// Ledger entries read at a time.
const SIMULATION_BATCH: u32 = 1_000;

/// What a simulation refused for lack of a slot is told to wait, seconds.
const SIMULATION_RETRY_AFTER: u16 = 5;

/// What one simulation may spend.
#[derive(Debug, Clone, Copy)]
struct SimulationBudget {
    /// Ledger entries read.
    entries: u64,
    /// Wall-clock time replaying.
    time: Duration,
}

/// Which budget stopped a replay before the end of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    /// `max_entries` entries were read.
    Entries,
    /// `max_ms` passed.
    Time,
    /// The request went away (timed out, or the client left): nobody reads the answer.
    Cancelled,
}

impl Stopped {
    /// The name of the request field (and `budget` member) that stopped the replay.
    fn as_str(self) -> &'static str {
        match self {
            Stopped::Entries => "max_entries",
            Stopped::Time => "max_ms",
            Stopped::Cancelled => "cancelled",
        }
    }
}

/// What a replay found.
#[derive(Debug, Default)]
struct Replay {
    replayed: u64,
    skipped: u64,
    scanned: u64,
    flip_count: u64,
    flips: Vec<Flip>,
    stopped: Option<Stopped>,
    elapsed: Duration,
}

/// Sets its flag when dropped: the handler's future holds one, so a request that times out
/// or whose client leaves stops its replay at the next decision.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Replays the decisions of `package` recorded since `since` (Unix ms) against `candidate`,
/// within `budget`. Runs on a blocking thread: it reads the ledger through `runtime` and
/// evaluates synchronously, checking the budget and `cancelled` before every entry.
fn replay(
    runtime: &tokio::runtime::Handle,
    state: &AppState,
    package: &str,
    candidate: &CompiledPackage,
    since: i64,
    budget: SimulationBudget,
    cancelled: &AtomicBool,
) -> Result<Replay, ApiError> {
    let started = Instant::now();
    let mut out = Replay::default();
    let size = state.ledger.size();
    let mut from = 0u64;
    let package_name = Value::from(package);
    'scan: while from < size {
        let left = budget.entries.saturating_sub(out.scanned);
        if left == 0 {
            out.stopped = Some(Stopped::Entries);
            break;
        }
        let batch = runtime
            .block_on(
                state.ledger.entries(
                    from,
                    u32::try_from(left)
                        .unwrap_or(SIMULATION_BATCH)
                        .min(SIMULATION_BATCH),
                ),
            )
            .map_err(ApiError::internal)?;
        if batch.is_empty() {
            break;
        }
        for entry in batch {
            if cancelled.load(Ordering::Relaxed) {
                out.stopped = Some(Stopped::Cancelled);
                break 'scan;
            }
            if started.elapsed() >= budget.time {
                out.stopped = Some(Stopped::Time);
                break 'scan;
            }
            from = entry.index + 1;
            out.scanned += 1;
            let e = &entry.event;
            if e.action != "policy.decision" || e.fields.get("package") != Some(&package_name) {
                continue;
            }
            let at = time::OffsetDateTime::parse(
                &e.time,
                &time::format_description::well_known::Rfc3339,
            )
            .map_or(0, |t| {
                i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
            });
            if at < since {
                continue;
            }
            let field = |k: &str| {
                e.fields
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            // Decisions through the OPA data API carry opaque input, and decisions barred
            // before any policy ran carry none: not replayable as a request.
            let Some(request) = e.fields.get("request").and_then(pdp::replayable) else {
                out.skipped += 1;
                continue;
            };
            out.replayed += 1;
            let (now, because) = match candidate.decide(&request, &state.pdp.limits) {
                Ok(d) if d.is_allowed() => ("allow", d.determining),
                Ok(d) => (
                    "deny",
                    if d.errors.is_empty() {
                        d.determining
                    } else {
                        d.errors
                    },
                ),
                Err(err) => ("invalid", vec![err.to_string()]),
            };
            let was = field("decision");
            if was != now {
                out.flip_count += 1;
                if out.flips.len() < MAX_LISTED_FLIPS {
                    out.flips.push(Flip {
                        decision_id: field("decision_id"),
                        ledger_index: entry.index,
                        time: e.time.clone(),
                        principal: field("principal"),
                        action: field("action"),
                        resource: field("resource"),
                        was,
                        now: now.to_owned(),
                        because,
                    });
                }
            }
        }
    }
    out.elapsed = started.elapsed();
    Ok(out)
}

/// 429 `simulation_busy`: every simulation slot is taken.
fn simulation_busy() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "simulation_busy",
        format!(
            "{} simulations are running, the most that run at once; try again later",
            pdp::MAX_SIMULATIONS
        ),
    )
    .with_retry_after(SIMULATION_RETRY_AFTER)
}

/// Replays the decisions recorded for package `name` (optionally since a time) against a
/// candidate package and lists the decisions that would flip — before anything is deployed
/// (role `admin` or `auditor`; a Rego candidate needs `admin`; nothing is changed, the run
/// itself is recorded).
///
/// Bounded: at most [`pdp::MAX_SIMULATIONS`] run at once (more are refused, 429
/// `simulation_busy` with `Retry-After`), each on a blocking thread of its own — never on the
/// async workers — and each reads at most `max_entries` ledger entries for at most `max_ms`
/// (the answer's `budget`, `complete` and `stopped_by` say what it covered).
#[utoipa::path(post, path = "/v1/policies/{name}/simulate", operation_id = "simulate_policy",
    tag = "policy", security(("bearer" = [])), request_body = Simulate,
    params(("name" = String, Path, description = "package whose recorded decisions are replayed")),
    responses((status = 200, body = serde_json::Value), (status = 422, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn simulate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Simulate>,
) -> Result<ApiJson<Value>, ApiError> {
    caller.require(Role::Auditor)?;
    check_name(&name)?;
    let push = PushPolicy {
        language: req.language,
        files: req.files,
        entrypoint: req.entrypoint,
        expected_version: None,
    };
    let source = PackageSource {
        language: language_of(&push)?,
        files: push.files.into_iter().map(|f| (f.name, f.text)).collect(),
        entrypoint: push.entrypoint,
    };
    // A Rego candidate is a program: a built-in call cannot be interrupted, only bounded in
    // what it allocates, so only an admin (who can push one anyway) may run one here.
    if source.language == Language::Rego && !caller.role.allows(Role::Admin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token `{}` has role `{}`; simulating a Rego candidate runs it on the server and needs `admin` (an auditor may simulate Cedar candidates)",
                caller.name,
                caller.role.as_str()
            ),
        ));
    }
    // A slot before anything else: compiling a candidate is work too.
    let slot = Arc::clone(&state.pdp.simulations)
        .try_acquire_owned()
        .map_err(|_| simulation_busy())?;
    let candidate = compile(source).await?;
    let candidate_sha256 = candidate.content_hash().to_owned();
    let budget = SimulationBudget {
        entries: req
            .max_entries
            .map_or(MAX_SIMULATION_ENTRIES, |m| m.min(MAX_SIMULATION_ENTRIES)),
        time: req.max_ms.map_or(MAX_SIMULATION_TIME, |m| {
            Duration::from_millis(m).min(MAX_SIMULATION_TIME)
        }),
    };
    let since = req.since_unix_ms.unwrap_or(0);
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(Arc::clone(&cancelled));
    let runtime = tokio::runtime::Handle::current();
    let replayed = {
        let state = Arc::clone(&state);
        let name = name.clone();
        tokio::task::spawn_blocking(move || {
            // The slot is held until the replay has stopped, even if the request went away.
            let _slot = slot;
            replay(
                &runtime, &state, &name, &candidate, since, budget, &cancelled,
            )
        })
        .await
        .map_err(ApiError::internal)??
    };
    let complete = replayed.stopped.is_none();
    let mut event = NewEvent::new(
        caller.actor(),
        "policy.simulate",
        Outcome::Success,
        OcsfClass::ApiActivity,
    )
    .field("package", name.clone())
    .field("candidate_sha256", candidate_sha256.clone())
    .field("replayed", replayed.replayed)
    .field("flips", replayed.flip_count)
    .field("complete", complete);
    if let Some(stopped) = replayed.stopped {
        event = event.field("stopped_by", stopped.as_str());
    }
    state.record(event).await?;
    let mut out = serde_json::json!({
        "package": name,
        "candidate_sha256": candidate_sha256,
        "replayed": replayed.replayed,
        "skipped": replayed.skipped,
        "scanned_entries": replayed.scanned,
        "complete": complete,
        "budget": {
            "max_entries": budget.entries,
            "max_ms": u64::try_from(budget.time.as_millis()).unwrap_or(u64::MAX),
            "elapsed_ms": u64::try_from(replayed.elapsed.as_millis()).unwrap_or(u64::MAX),
        },
        "flip_count": replayed.flip_count,
        "flips": replayed.flips,
    });
    if let Some(stopped) = replayed.stopped {
        out["stopped_by"] = Value::from(stopped.as_str());
    }
    Ok(ApiJson(out))
}
