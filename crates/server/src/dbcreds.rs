//! Dynamic PostgreSQL credentials: the operator's target databases (admin connection string
//! sealed under the key-encryption key) and role templates, and the agent's request for a
//! credential — a unique login role with a random password and `VALID UNTIL`, granted exactly
//! the template, leased, and dropped (sessions terminated) when the lease ends.

use std::sync::Arc;

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use broker::{
    lease::{Engine, LeaseId},
    postgres::{self as pg, AdminDsn, RoleName, RoleTemplate, TemplateName},
};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{DbConnectionRow, DbRoleRow, LeaseFilter, LeaseRow, LeaseSelector};
use utoipa::ToSchema;

use crate::{
    AppState, agent_auth,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ErrorBody},
    mtls::PeerSvid,
    now_ms,
    policy_api::{Question, RecordAs, ResourceRef, decide_as},
};

fn aad(name: &str) -> Vec<u8> {
    format!("warden-db-connection/{name}").into_bytes()
}

fn engine_error(e: &broker::BrokerError) -> ApiError {
    let status = match e {
        broker::BrokerError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        broker::BrokerError::Rejected { .. }
        | broker::BrokerError::InsufficientPrivilege { .. }
        | broker::BrokerError::GrantIncomplete { .. }
        | broker::BrokerError::TlsFailed { .. }
        | broker::BrokerError::Unexpected { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.code(), e.to_string())
}

fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    if broker::lease::is_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!(
                "{kind} name `{}` must be 1-63 of [a-z0-9_-]",
                name.escape_debug()
            ),
        ))
    }
}

/// Opens a connection's admin DSN and TLS settings (sealed together; a target stored before
/// TLS settings existed is a bare DSN, read as a target without TLS).
async fn admin_dsn(state: &AppState, connection: &str) -> Result<AdminDsn, String> {
    let row = state
        .store
        .db_connection_list()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| c.name == connection)
        .ok_or_else(|| format!("database connection `{connection}` no longer exists"))?;
    let dsn = state
        .authority
        .kek()
        .open(&aad(connection), &row.dsn_sealed)
        .map_err(|_| {
            format!("the admin DSN of `{connection}` does not open: wrong key-encryption key, or altered")
        })?;
    AdminDsn::from_sealed(&dsn).map_err(|e| e.to_string())
}

/// The pool of admin sessions of target `connection`.
async fn target(state: &AppState, connection: &str) -> Result<Arc<pg::TargetPool>, String> {
    let dsn = admin_dsn(state, connection).await?;
    state
        .db_pools
        .get(connection, &dsn)
        .map_err(|e| e.to_string())
}

/// What a database lease's `scope` records.
#[derive(Debug, Serialize, Deserialize)]
struct DbScope {
    role: String,
    connection: String,
    db_role: String,
    template: serde_json::Value,
}

/// Drops a database lease's role (idempotent); the result for the record, or the error.
pub(crate) async fn revoke_upstream(state: &AppState, row: &LeaseRow) -> Result<String, String> {
    let scope: DbScope =
        serde_json::from_str(&row.scope).map_err(|e| format!("lease scope: {e}"))?;
    let role = RoleName::parse(&scope.db_role).map_err(|e| e.to_string())?;
    let target = target(state, &scope.connection).await?;
    match target.revoke_role(&role).await.map_err(|e| e.to_string())? {
        pg::RevokeOutcome::Revoked {
            sessions_terminated,
        } => Ok(format!(
            "role {role} dropped, {sessions_terminated} session(s) terminated"
        )),
        _ => Ok(format!("role {role} was already gone")),
    }
}

/// Moves a database lease's `VALID UNTIL` (renewal).
pub(crate) async fn extend_upstream(
    state: &AppState,
    row: &LeaseRow,
    until_ms: i64,
) -> Result<(), String> {
    let scope: DbScope =
        serde_json::from_str(&row.scope).map_err(|e| format!("lease scope: {e}"))?;
    let role = RoleName::parse(&scope.db_role).map_err(|e| e.to_string())?;
    let target = target(state, &scope.connection).await?;
    let until =
        time::OffsetDateTime::from_unix_timestamp(until_ms / 1000).map_err(|e| e.to_string())?;
    target
        .extend_role(&role, until)
        .await
        .map_err(|e| e.to_string())
}

// ---- operator API ---------------------------------------------------------------------------

/// A target database.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutConnection {
    /// Admin connection string, `postgres://user:password@host:port/db`; the user needs
    /// CREATEROLE and must own (or hold with grant option) what templates grant. Stored
    /// sealed; never shown again. TLS is set with `tls` and `ca_pem`, not in the DSN.
    dsn: String,
    /// `disable` or `verify-full` (the server's certificate must chain to `ca_pem` and name
    /// the DSN's host). Default: `verify-full` when `ca_pem` is given; otherwise `disable` for
    /// a Unix socket or loopback host, and required for any other host.
    #[serde(default)]
    tls: Option<String>,
    /// The CA certificate(s), PEM, that the target's certificate must chain to; the only
    /// trust anchors used for this target.
    #[serde(default)]
    ca_pem: Option<String>,
}

/// A target database as shown (the password never is).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectionView {
    name: String,
    /// `host:port/database`.
    target: String,
    /// `disable` or `verify-full`.
    tls: String,
    created_unix_ms: i64,
    created_by: String,
}

/// Adds or replaces a target database (role `admin`): the DSN is checked live over the
/// target's TLS settings (it must connect — verifying the server's certificate for
/// `verify-full` — and be able to create roles), sealed with those settings, stored, recorded
/// (redacted). Replacing a target closes the admin sessions pooled for its old settings.
#[utoipa::path(put, path = "/v1/databases/{name}", operation_id = "put_database",
    tag = "broker", security(("bearer" = [])), request_body = PutConnection,
    params(("name" = String, Path)),
    responses((status = 200, body = ConnectionView), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn put_connection(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutConnection>,
) -> Result<ApiJson<ConnectionView>, ApiError> {
    caller.require(Role::Admin)?;
    check_name("database connection", &name)?;
    let dsn = AdminDsn::configure(&req.dsn, req.tls.as_deref(), req.ca_pem.as_deref())
        .map_err(|e| engine_error(&e))?;
    let checked = pg::check(&dsn).await.map_err(|e| engine_error(&e))?;
    let sealed = state
        .authority
        .kek()
        .seal(&aad(&name), &dsn.to_sealable())
        .map_err(ApiError::internal)?;
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "database.connection_put",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("name", name.clone())
            .field("dsn", dsn.to_string())
            .field("tls", dsn.tls().mode().as_str())
            .field("admin_user", checked.user.clone()),
        )
        .await?;
    let row = DbConnectionRow {
        name: name.clone(),
        dsn_sealed: sealed,
        created_unix_ms: now_ms(),
        created_by: caller.actor(),
    };
    state.store.db_connection_put(&row).await?;
    state.db_pools.remove(&name);
    Ok(ApiJson(ConnectionView {
        name,
        target: dsn.target().to_owned(),
        tls: dsn.tls().mode().as_str().to_owned(),
        created_unix_ms: row.created_unix_ms,
        created_by: row.created_by,
    }))
}

/// Lists target databases (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/databases", operation_id = "list_databases",
    tag = "broker", security(("bearer" = [])),
    responses((status = 200, body = Vec<ConnectionView>)))]
pub(crate) async fn list_connections(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<ConnectionView>>, ApiError> {
    caller.require(Role::Auditor)?;
    let mut out = Vec::new();
    for row in state.store.db_connection_list().await? {
        let (target, tls) = admin_dsn(&state, &row.name).await.map_or_else(
            |e| (format!("(unreadable: {e})"), String::new()),
            |d| (d.target().to_owned(), d.tls().mode().as_str().to_owned()),
        );
        out.push(ConnectionView {
            name: row.name,
            target,
            tls,
            created_unix_ms: row.created_unix_ms,
            created_by: row.created_by,
        });
    }
    Ok(ApiJson(out))
}

/// A role template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutRole {
    /// The target database.
    connection: String,
    /// What a credential is granted: `[{"privileges": ["SELECT"], "tables": ["customers"]}]`.
    grants: serde_json::Value,
    /// Lease lifetime when the request names none, seconds (default 300).
    #[serde(default)]
    default_ttl_s: Option<i64>,
    /// Longest lifetime, renewals included, seconds (default 3600, at most 86400).
    #[serde(default)]
    max_ttl_s: Option<i64>,
}

/// A role template as shown.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoleView {
    name: String,
    connection: String,
    grants: serde_json::Value,
    default_ttl_s: i64,
    max_ttl_s: i64,
    created_unix_ms: i64,
    created_by: String,
}

impl From<DbRoleRow> for RoleView {
    fn from(r: DbRoleRow) -> Self {
        let grants = serde_json::from_str::<serde_json::Value>(&r.template)
            .ok()
            .and_then(|t| t.get("grants").cloned())
            .unwrap_or(serde_json::Value::Null);
        Self {
            name: r.name,
            connection: r.connection,
            grants,
            default_ttl_s: r.default_ttl_s,
            max_ttl_s: r.max_ttl_s,
            created_unix_ms: r.created_unix_ms,
            created_by: r.created_by,
        }
    }
}

/// Adds or replaces a role template (role `admin`); validated and recorded.
#[utoipa::path(put, path = "/v1/database-roles/{name}", operation_id = "put_database_role",
    tag = "broker", security(("bearer" = [])), request_body = PutRole,
    params(("name" = String, Path)),
    responses((status = 200, body = RoleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn put_role(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutRole>,
) -> Result<ApiJson<RoleView>, ApiError> {
    caller.require(Role::Admin)?;
    TemplateName::parse(&name).map_err(|e| engine_error(&e))?;
    let template_json = json!({"grants": req.grants}).to_string();
    RoleTemplate::from_json(&template_json).map_err(|e| engine_error(&e))?;
    let default_ttl_s = req.default_ttl_s.unwrap_or(300);
    let max_ttl_s = req.max_ttl_s.unwrap_or(3600);
    if !(1..=86_400).contains(&max_ttl_s) || !(1..=max_ttl_s).contains(&default_ttl_s) {
        return Err(ApiError::invalid_request(
            "need 1 <= default_ttl_s <= max_ttl_s <= 86400",
        ));
    }
    if !state
        .store
        .db_connection_list()
        .await?
        .iter()
        .any(|c| c.name == req.connection)
    {
        return Err(ApiError::not_found(format!(
            "no database connection `{}`: add it with PUT /v1/databases/{{name}}",
            req.connection
        )));
    }
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "database.role_put",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("name", name.clone())
            .field("connection", req.connection.clone())
            .field("grants", req.grants.clone())
            .field("default_ttl_s", default_ttl_s)
            .field("max_ttl_s", max_ttl_s),
        )
        .await?;
    let row = DbRoleRow {
        name,
        connection: req.connection,
        template: template_json,
        default_ttl_s,
        max_ttl_s,
        created_unix_ms: now_ms(),
        created_by: caller.actor(),
    };
    state.store.db_role_put(&row).await?;
    Ok(ApiJson(row.into()))
}

/// Lists role templates (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/database-roles", operation_id = "list_database_roles",
    tag = "broker", security(("bearer" = [])),
    responses((status = 200, body = Vec<RoleView>)))]
pub(crate) async fn list_roles(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<RoleView>>, ApiError> {
    caller.require(Role::Auditor)?;
    Ok(ApiJson(
        state
            .store
            .db_role_list()
            .await?
            .into_iter()
            .map(RoleView::from)
            .collect(),
    ))
}

/// Removes a role template (role `admin`); refused while any of its leases is live.
#[utoipa::path(delete, path = "/v1/database-roles/{name}", operation_id = "delete_database_role",
    tag = "broker", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_role(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    check_name("role", &name)?;
    for live in ["active", "revoking"] {
        let rows = state
            .store
            .lease_list(&LeaseFilter {
                prefix: Some(format!("postgres/{name}/")),
                state: Some(live.into()),
                limit: 1,
                ..LeaseFilter::default()
            })
            .await?;
        if !rows.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "role_in_use",
                format!(
                    "role `{name}` has {live} leases; revoke them (prefix postgres/{name}/) first"
                ),
            ));
        }
    }
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "database.role_delete",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("name", name.clone()),
        )
        .await?;
    if state.store.db_role_delete(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no role `{name}`")))
    }
}

/// Removes a target database (role `admin`); refused while a role template uses it. Its
/// pooled admin sessions are closed.
#[utoipa::path(delete, path = "/v1/databases/{name}", operation_id = "delete_database",
    tag = "broker", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_connection(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    check_name("database connection", &name)?;
    let exists = state
        .store
        .db_connection_list()
        .await?
        .iter()
        .any(|c| c.name == name);
    if !exists {
        return Err(ApiError::not_found(format!(
            "no database connection `{name}`"
        )));
    }
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "database.connection_delete",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("name", name.clone()),
        )
        .await?;
    if state.store.db_connection_delete(&name).await? {
        state.db_pools.remove(&name);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "connection_in_use",
            format!("role templates still use `{name}`; delete them first"),
        ))
    }
}

// ---- the agent's side -----------------------------------------------------------------------

/// An agent's credential request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialRequest {
    /// The task it is for.
    #[serde(default)]
    task: Option<String>,
    /// Lifetime, seconds (default: the role's; at most its maximum).
    #[serde(default)]
    ttl_s: Option<i64>,
}

/// A database credential.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DbCredential {
    lease_id: String,
    username: String,
    /// Shown once; Warden keeps only the role, never the password.
    password: String,
    host: String,
    port: u16,
    database: String,
    /// A connection URL with the credential in it and the target's `sslmode`; for
    /// `verify-full` add `sslrootcert=<file holding ca_pem>`.
    dsn: String,
    /// `disable` or `verify-full`: how the client must connect.
    sslmode: String,
    /// For `verify-full`: the CA certificate(s), PEM, the target's certificate chains to
    /// (libpq's `sslrootcert`).
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_pem: Option<String>,
    expires_unix_ms: i64,
    max_expires_unix_ms: i64,
}

/// Refuses an agent request with a stable code.
fn agent_refused(r: &agent_auth::Refused) -> ApiError {
    let status = match r.code {
        "agent_on_hold" | "credential_revoked" | "federation_route_not_allowed" => {
            StatusCode::FORBIDDEN
        }
        _ => StatusCode::UNAUTHORIZED,
    };
    ApiError::new(status, r.code, r.reason.clone())
}

/// The authenticated agent of a request on `route`, or 401 (403 for a federated agent on a
/// route its domain does not open).
pub(crate) async fn require_agent(
    state: &AppState,
    headers: &HeaderMap,
    peer: &PeerSvid,
    route: agent_auth::Route,
) -> Result<agent_auth::Agent, ApiError> {
    let refused = match agent_auth::from_request(state, headers, peer, route) {
        Ok(Some(agent)) => return Ok(agent),
        Ok(None) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "agent_auth_required",
            "present a JWT-SVID for this server (Authorization: Bearer) or an X.509-SVID over mutual TLS",
        ),
        Err(r) => agent_refused(&r),
    };
    // Recorded like a failed login: within the budget of refusals recorded per second.
    if state.auth_failures.admit().is_some() {
        state
            .record(
                NewEvent::new(
                    "anonymous",
                    "agent.authenticate",
                    Outcome::Denied,
                    OcsfClass::Authentication,
                )
                .field("code", refused.body().code)
                .field("reason", refused.body().message),
            )
            .await?;
    }
    Err(refused)
}

/// An agent asks for a database credential of role template `role` (authenticated by its
/// SVID). The broker policy decides (`action == "issue"`, resource `DatabaseRole::"<role>"`);
/// on allow a unique login role is created with exactly the template's grants and a
/// `VALID UNTIL`, leased, recorded, and returned once.
#[utoipa::path(post, path = "/v1/agent/credentials/database/{role}", operation_id = "issue_database_credential",
    tag = "broker",
    params(("role" = String, Path)), request_body = CredentialRequest,
    responses((status = 201, body = DbCredential), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn issue(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    Path(role): Path<String>,
    ApiJson(req): ApiJson<CredentialRequest>,
) -> Result<(StatusCode, ApiJson<DbCredential>), ApiError> {
    let agent = require_agent(&state, &headers, &peer, agent_auth::Route::DbCredentials).await?;
    let actor = format!("agent:{}", agent.id);
    let template_name = TemplateName::parse(&role).map_err(|e| engine_error(&e))?;
    let role_row = state
        .store
        .db_role_list()
        .await?
        .into_iter()
        .find(|r| r.name == role)
        .ok_or_else(|| ApiError::not_found(format!("no database role `{role}`")))?;
    if let Some(task) = &req.task {
        crate::holds::check_task_id(task)?;
        if state.held.task(task) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "task_on_hold",
                format!("task `{task}` is on hold"),
            ));
        }
        // A credential for a task is for an agent on that task, while it is open.
        crate::tasks_api::task_of_agent(&state, agent.id.as_str(), task).await?;
    }
    let ttl_s = req.ttl_s.unwrap_or(role_row.default_ttl_s);
    if !(1..=role_row.max_ttl_s).contains(&ttl_s) {
        return Err(ApiError::invalid_request(format!(
            "ttl_s must be 1-{} for role `{role}`",
            role_row.max_ttl_s
        )));
    }
    let mut attributes = serde_json::Map::new();
    attributes.insert("ttl_s".into(), json!(ttl_s));
    if let Some(task) = &req.task {
        attributes.insert("task".into(), json!(task));
    }
    let decided = decide_as(
        &state,
        RecordAs::Actor(&actor),
        Question {
            api: "broker",
            package: Some(&state.broker.policy_package),
            principal: agent.id.as_str(),
            action: "issue".into(),
            resource: ResourceRef {
                kind: "DatabaseRole".into(),
                id: role.clone(),
            },
            attributes,
            delegation: Vec::new(),
            task: req.task.clone(),
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
            format!("policy denied a `{role}` credential (decision {decision_id})"),
        ));
    }
    let target = target(&state, &role_row.connection)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", e))?;
    let dsn = target.dsn();
    let template = RoleTemplate::from_json(&role_row.template).map_err(|e| engine_error(&e))?;
    let lease_id = LeaseId::generate(Engine::Postgres, &role);
    let db_role = pg::role_name(&template_name, lease_id.as_str());
    let password = pg::generate_password();
    let now = now_ms();
    let expires_ms = crate::ms_after(now, ttl_s);
    let max_expires_ms = crate::ms_after(now, role_row.max_ttl_s);
    let lease = LeaseRow {
        id: lease_id.to_string(),
        agent: agent.id.to_string(),
        subject: agent.id.to_string(),
        task: req.task.clone(),
        engine: Engine::Postgres.as_str().into(),
        scope: json!(DbScope {
            role: role.clone(),
            connection: role_row.connection.clone(),
            db_role: db_role.to_string(),
            template: serde_json::from_str(&role_row.template).unwrap_or_default(),
        })
        .to_string(),
        parent: None,
        handle: db_role.to_string(),
        issued_ms: now,
        expires_ms,
        max_expires_ms,
        state: "active".into(),
        revoke_reason: None,
        revoked_ms: None,
        attempts: 0,
        next_attempt_ms: None,
        last_error: None,
        alerted: false,
    };
    // Recorded and leased before the role exists: a crash from here on leaves a lease the
    // sweeper ends (dropping the role if it was made), never an unknown role.
    state
        .record(
            NewEvent::new(
                &actor,
                "lease.issue",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("lease_id", lease_id.to_string())
            .field("engine", "postgres")
            .field("role", role.clone())
            .field("db_role", db_role.to_string())
            .field("target", dsn.target().to_owned())
            .field("task", req.task.clone().unwrap_or_default())
            .field("expires_unix_ms", expires_ms)
            .field("decision_id", decision_id.as_str()),
        )
        .await?;
    state.store.lease_insert(&lease).await?;
    let valid_until = time::OffsetDateTime::from_unix_timestamp(expires_ms / 1000 + 1)
        .map_err(ApiError::internal)?;
    if let Err(e) = target
        .create_role(&template, &db_role, &password, valid_until)
        .await
    {
        // Nothing half-created: the transaction rolled back; the lease is ended and recorded.
        let reason = format!("creation failed: {e}");
        let _ = crate::leases::revoke(
            &state,
            "system:broker",
            &LeaseSelector::Id(lease.id),
            &reason,
        )
        .await;
        return Err(engine_error(&e));
    }
    // A hold or revocation that landed while the role was being made. A hold marks the agent
    // before it revokes leases; a revocation marks the lease before it drops the role, which
    // did not exist yet. So after the role is committed, look again: if the agent is held or
    // the lease is no longer active, drop the role here before the password leaves.
    let held = agent_auth::check_denied(&state, &agent.id)
        .err()
        .map(|r| r.reason)
        .or_else(|| {
            req.task
                .as_deref()
                .filter(|t| state.held.task(t))
                .map(|t| format!("task `{t}` is on hold"))
        });
    let now_state = state.store.lease_get(&lease.id).await?.map(|l| l.state);
    let revoked = now_state.as_deref() != Some("active");
    if held.is_some() || revoked {
        let why = held
            .clone()
            .unwrap_or_else(|| "the lease was revoked while its role was being created".into());
        // Ends the lease if it still is active (which drops the role); a lease a racing
        // revocation ended before the role existed is undone upstream again.
        let ended = crate::leases::revoke(
            &state,
            "system:broker",
            &LeaseSelector::Id(lease.id.clone()),
            &why,
        )
        .await?;
        if ended.is_empty() {
            crate::leases::undo_again(&state, &lease.id, &why).await?;
        }
        return Err(match held {
            Some(why) => ApiError::new(StatusCode::FORBIDDEN, "agent_on_hold", why),
            None => ApiError::new(StatusCode::CONFLICT, "lease_revoked", why),
        });
    }
    Ok((
        StatusCode::CREATED,
        ApiJson(DbCredential {
            lease_id: lease_id.to_string(),
            dsn: dsn.client_url(&db_role, &password).to_string(),
            sslmode: dsn.tls().mode().as_str().to_owned(),
            ca_pem: dsn.tls().ca_pem().map(str::to_owned),
            username: db_role.to_string(),
            password: password.expose_secret().to_owned(),
            host: dsn.host(),
            port: dsn.port(),
            database: dsn.database(),
            expires_unix_ms: expires_ms,
            max_expires_unix_ms: max_expires_ms,
        }),
    ))
}
