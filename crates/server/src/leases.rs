//! Leases: every credential the broker hands out, and the machinery that ends them —
//! revocation (one, by agent, by task, by id prefix; delegated leases go with their parent),
//! the sweeper that expires leases and undoes them upstream with backoff, raising an alert
//! entry after repeated failure instead of leaving a zombie, and the revocation feed that puts
//! revoked token ids on every replica's denylist.

use std::sync::{Arc, Mutex};

use axum::{Extension, extract::State, http::StatusCode};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use store::{LeaseFilter, LeaseRow, LeaseSelector};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ApiQuery, ErrorBody},
    now_ms,
};

/// Failed upstream revocations after which an alert entry is written (retries go on).
pub(crate) const ALERT_AFTER_ATTEMPTS: i64 = 5;
/// Longest wait between upstream revocation attempts.
const MAX_BACKOFF_MS: i64 = 5 * 60 * 1000;
/// How long a sweeper's claim on a lease keeps other replicas off it.
const CLAIM_MS: i64 = 60 * 1000;
/// Lease ids listed in one ledger entry; a larger revocation records their count and digest.
const IDS_PER_ENTRY: usize = 100;

/// This replica's position in the revocation feed.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    after: Mutex<Option<(i64, String)>>,
}

/// A lease as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeaseView {
    lease_id: String,
    agent: String,
    subject: String,
    task: Option<String>,
    engine: String,
    /// What it grants, as the engine describes it.
    scope: serde_json::Value,
    parent: Option<String>,
    issued_unix_ms: i64,
    expires_unix_ms: i64,
    max_expires_unix_ms: i64,
    /// `active`, `revoking`, `revoked` or `expired`.
    state: String,
    revoke_reason: Option<String>,
    revoked_unix_ms: Option<i64>,
    /// Failed upstream revocation attempts (a `revoking` lease is retried with backoff).
    attempts: i64,
    last_error: Option<String>,
}

impl From<LeaseRow> for LeaseView {
    fn from(r: LeaseRow) -> Self {
        Self {
            scope: serde_json::from_str(&r.scope).unwrap_or(serde_json::Value::Null),
            lease_id: r.id,
            agent: r.agent,
            subject: r.subject,
            task: r.task,
            engine: r.engine,
            parent: r.parent,
            issued_unix_ms: r.issued_ms,
            expires_unix_ms: r.expires_ms,
            max_expires_unix_ms: r.max_expires_ms,
            state: r.state,
            revoke_reason: r.revoke_reason,
            revoked_unix_ms: r.revoked_ms,
            attempts: r.attempts,
            last_error: r.last_error,
        }
    }
}

/// Describes a selector for the ledger.
fn describe(selector: &LeaseSelector) -> (&'static str, String) {
    match selector {
        LeaseSelector::Id(v) => ("lease", v.clone()),
        LeaseSelector::Agent(v) => ("agent", v.clone()),
        LeaseSelector::Task(v) => ("task", v.clone()),
        LeaseSelector::Prefix(v) => ("prefix", v.clone()),
    }
}

/// The lease ids of a revocation as the ledger holds them: the list when short, else its
/// count and SHA-256 (the store keeps every lease's state and revocation time).
fn ids_field(rows: &[LeaseRow]) -> serde_json::Value {
    if rows.len() <= IDS_PER_ENTRY {
        serde_json::json!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
    } else {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for r in rows {
            h.update(r.id.as_bytes());
            h.update(b"\n");
        }
        serde_json::json!({"count": rows.len(), "sha256": hex::encode(h.finalize())})
    }
}

/// Revokes what `selector` names (and everything delegated from it): recorded first, then
/// committed in one statement; revoked tokens are denied on this replica at once (others
/// follow the feed within a second) and database roles are dropped now, with the sweeper
/// retrying any that fail. Returns the leases revoked.
pub(crate) async fn revoke(
    state: &AppState,
    actor: &str,
    selector: &LeaseSelector,
    reason: &str,
) -> Result<Vec<LeaseRow>, ApiError> {
    let (by, value) = describe(selector);
    state
        .record(
            NewEvent::new(
                actor,
                "lease.revoke",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("by", by)
            .field("value", value)
            .field("reason", reason),
        )
        .await?;
    // This call undoes the database leases itself (below): it claims them, so the sweeper
    // does not do the same work at the same time; it takes over if this call fails.
    let now = now_ms();
    let rows = state
        .store
        .lease_revoke(selector, reason, now, now + CLAIM_MS)
        .await?;
    apply_revoked(state, &rows);
    if !rows.is_empty() {
        state
            .record(
                NewEvent::new(
                    actor,
                    "lease.revoked",
                    Outcome::Success,
                    OcsfClass::UserAccessManagement,
                )
                .field("by", by)
                .field("count", rows.len() as i64)
                .field("leases", ids_field(&rows)),
            )
            .await?;
    }
    let upstream: Vec<LeaseRow> = rows
        .iter()
        .filter(|r| r.engine != "oauth")
        .cloned()
        .collect();
    for row in upstream {
        undo_upstream(state, row).await;
    }
    Ok(rows)
}

/// Puts revoked tokens on this replica's denylist.
fn apply_revoked(state: &AppState, rows: &[LeaseRow]) {
    for r in rows.iter().filter(|r| r.engine == "oauth") {
        state
            .denylist
            .revoke_token(r.handle.clone(), r.expires_ms / 1000 + 1);
    }
}

/// Undoes an ended lease upstream once more: its credential turned out to exist after its
/// revocation (created while the revocation ran). Back to `revoking`, then undone now; the
/// sweeper retries if that fails.
pub(crate) async fn undo_again(state: &AppState, id: &str, why: &str) -> Result<(), ApiError> {
    state.store.lease_reopen(id, now_ms(), why).await?;
    if let Some(row) = state.store.lease_get(id).await? {
        undo_upstream(state, row).await;
    }
    Ok(())
}

/// Undoes one `revoking` lease upstream; on failure schedules a retry with backoff and, after
/// [`ALERT_AFTER_ATTEMPTS`], writes an alert entry (once).
async fn undo_upstream(state: &AppState, row: LeaseRow) {
    let result = match row.engine.as_str() {
        "postgres" => crate::dbcreds::revoke_upstream(state, &row).await,
        other => Err(format!("no engine `{other}` to revoke with")),
    };
    match result {
        Ok(what) => {
            let recorded = state
                .record(
                    NewEvent::new(
                        "system:broker",
                        "lease.revoke_upstream",
                        Outcome::Success,
                        OcsfClass::UserAccessManagement,
                    )
                    .field("lease_id", row.id.clone())
                    .field("agent", row.agent.clone())
                    .field("engine", row.engine.clone())
                    .field("result", what),
                )
                .await;
            if recorded.is_err() {
                // Not marked done: the sweeper tries again, and records it then.
                return;
            }
            if let Err(e) = state.store.lease_revoked_upstream(&row.id).await {
                tracing::error!(lease = %row.id, error = %e, "cannot mark a lease revoked");
            }
        }
        Err(error) => {
            let attempts = row.attempts + 1;
            let base = i64::try_from(state.broker.retry_base.as_millis()).unwrap_or(2000);
            let backoff = base
                .saturating_mul(1_i64 << (attempts - 1).clamp(0, 20) as u32)
                .min(MAX_BACKOFF_MS);
            let alert = attempts >= ALERT_AFTER_ATTEMPTS && !row.alerted;
            tracing::warn!(lease = %row.id, attempts, %error, "upstream revocation failed; will retry");
            if alert {
                let _ = state
                    .record(
                        NewEvent::new(
                            "system:broker",
                            "lease.revoke_failing",
                            Outcome::Failure,
                            OcsfClass::UserAccessManagement,
                        )
                        .field("severity", "alert")
                        .field("lease_id", row.id.clone())
                        .field("agent", row.agent.clone())
                        .field("engine", row.engine.clone())
                        .field("attempts", attempts)
                        .field("error", error.clone()),
                    )
                    .await;
            }
            if let Err(e) = state
                .store
                .lease_retry_later(&row.id, now_ms() + backoff, &error, row.alerted || alert)
                .await
            {
                tracing::error!(lease = %row.id, error = %e, "cannot schedule a revocation retry");
            }
        }
    }
}

impl AppState {
    /// One pass of the lease sweeper (every second, on every replica): ends leases past
    /// their expiry (recorded), undoes due `revoking` leases upstream (claimed, so replicas
    /// do not race), and follows the revocation feed onto this replica's denylist.
    pub async fn sweep_leases(&self) -> Result<(), store::StoreError> {
        let now = now_ms();
        loop {
            let ended = self.store.lease_expire_due(now, 1000).await?;
            if ended.is_empty() {
                break;
            }
            apply_revoked(self, &ended);
            for chunk in ended.chunks(IDS_PER_ENTRY) {
                let _ = self
                    .record(
                        NewEvent::new(
                            "system:broker",
                            "lease.expire",
                            Outcome::Success,
                            OcsfClass::UserAccessManagement,
                        )
                        .field("count", chunk.len() as i64)
                        .field("leases", ids_field(chunk)),
                    )
                    .await;
            }
            if ended.len() < 1000 {
                break;
            }
        }
        let due = self.store.lease_claim_due(now, now + CLAIM_MS, 100).await?;
        for row in due {
            undo_upstream(self, row).await;
        }
        self.follow_revocations().await?;
        self.denylist.prune_tokens(now / 1000);
        self.record_refusal_summaries().await;
        if self.limits.purge_due() {
            self.purge_retained(now).await?;
        }
        Ok(())
    }

    /// Reads token revocations since the last look (from every replica) into the denylist.
    /// At start it looks back one maximum token lifetime.
    pub(crate) async fn follow_revocations(&self) -> Result<(), store::StoreError> {
        let mut after = self
            .leases
            .after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| {
                (
                    now_ms() - self.broker.max_token_ttl.as_millis() as i64 - 60_000,
                    String::new(),
                )
            });
        loop {
            let rows = self
                .store
                .lease_revoked_since(Some((after.0, &after.1)), "oauth", 5000)
                .await?;
            let Some(last) = rows.last() else { break };
            after = (last.revoked_ms.unwrap_or(after.0), last.id.clone());
            let done = rows.len() < 5000;
            apply_revoked(self, &rows);
            if done {
                break;
            }
        }
        *self
            .leases
            .after
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(after);
        Ok(())
    }
}

// ---- API ------------------------------------------------------------------------------------

/// Filters for listing leases.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Held by, or issued on behalf of, this SPIFFE ID.
    agent: Option<String>,
    /// Of this task.
    task: Option<String>,
    /// Lease id prefix (`postgres/db_read_summary/`).
    prefix: Option<String>,
    /// `active`, `revoking`, `revoked` or `expired`.
    state: Option<String>,
    /// Only ids after this one (paging).
    after: Option<String>,
    /// Page size, 1-1000 (default 100).
    limit: Option<u32>,
    /// One lease by id.
    id: Option<String>,
}

fn bad_lease(e: &broker::BrokerError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_lease", e.to_string())
}

/// Lists leases (role `auditor` or `admin`); `?id=` shows one.
#[utoipa::path(get, path = "/v1/leases", operation_id = "list_leases",
    tag = "broker", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Vec<LeaseView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Vec<LeaseView>>, ApiError> {
    caller.require(Role::Auditor)?;
    if let Some(id) = q.id {
        let id = broker::lease::LeaseId::parse(&id).map_err(|e| bad_lease(&e))?;
        let row = state
            .store
            .lease_get(id.as_str())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no lease `{id}`")))?;
        return Ok(ApiJson(vec![row.into()]));
    }
    if let Some(s) = &q.state {
        broker::lease::LeaseState::parse(s).map_err(|e| bad_lease(&e))?;
    }
    if let Some(p) = &q.prefix {
        broker::lease::parse_prefix(p).map_err(|e| bad_lease(&e))?;
    }
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
        .lease_list(&LeaseFilter {
            agent: q.agent,
            task: q.task,
            prefix: q.prefix,
            state: q.state,
            after: q.after,
            limit,
        })
        .await?;
    Ok(ApiJson(rows.into_iter().map(LeaseView::from).collect()))
}

/// What to revoke: exactly one of `lease_id`, `agent`, `task`, `prefix`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeRequest {
    lease_id: Option<String>,
    agent: Option<String>,
    task: Option<String>,
    prefix: Option<String>,
    /// Why (1-512 characters), for the record.
    reason: String,
}

/// The outcome of a revocation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RevokeResponse {
    /// How many leases were revoked (delegated ones included).
    revoked: usize,
    /// Their ids (the first 1,000).
    lease_ids: Vec<String>,
}

pub(crate) fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.trim().is_empty() || reason.chars().count() > 512 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reason_required",
            "a reason of 1-512 characters is required",
        ));
    }
    Ok(())
}

/// Parses a revocation target into a selector.
fn selector_of(req: &RevokeRequest) -> Result<LeaseSelector, ApiError> {
    let given = [&req.lease_id, &req.agent, &req.task, &req.prefix]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given != 1 {
        return Err(ApiError::invalid_request(
            "name exactly one of lease_id, agent, task, prefix",
        ));
    }
    if let Some(id) = &req.lease_id {
        let id = broker::lease::LeaseId::parse(id).map_err(|e| bad_lease(&e))?;
        return Ok(LeaseSelector::Id(id.to_string()));
    }
    if let Some(agent) = &req.agent {
        let id = identity::SpiffeId::parse(agent).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_spiffe_id", e.to_string())
        })?;
        return Ok(LeaseSelector::Agent(id.to_string()));
    }
    if let Some(task) = &req.task {
        crate::holds::check_task_id(task)?;
        return Ok(LeaseSelector::Task(task.clone()));
    }
    let prefix = req.prefix.as_deref().unwrap_or_default();
    let prefix = broker::lease::parse_prefix(prefix).map_err(|e| bad_lease(&e))?;
    Ok(LeaseSelector::Prefix(prefix))
}

/// Revokes leases (role `admin`): one by id, or every lease of an agent, a task, or an id
/// prefix — with everything delegated from them. Database roles are dropped before this
/// answers (failures are retried by the sweeper, and shown as `revoking`).
#[utoipa::path(post, path = "/v1/leases/revoke", operation_id = "revoke_leases",
    tag = "broker", security(("bearer" = [])), request_body = RevokeRequest,
    responses((status = 200, body = RevokeResponse), (status = 400, body = ErrorBody)))]
pub(crate) async fn revoke_api(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> Result<ApiJson<RevokeResponse>, ApiError> {
    caller.require(Role::Admin)?;
    check_reason(&req.reason)?;
    let selector = selector_of(&req)?;
    let rows = revoke(&state, &caller.actor(), &selector, &req.reason).await?;
    Ok(ApiJson(RevokeResponse {
        revoked: rows.len(),
        lease_ids: rows.into_iter().take(1000).map(|r| r.id).collect(),
    }))
}

/// A renewal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenewRequest {
    lease_id: String,
    /// New lifetime from now, seconds (1-86400); never past the lease's maximum.
    ttl_s: i64,
}

/// Renews a lease (role `admin`): its expiry moves to now + `ttl_s`, never past its maximum
/// (`lease_max_ttl` refusal otherwise). Agents renew their own at `/v1/agent/leases/renew`.
#[utoipa::path(post, path = "/v1/leases/renew", operation_id = "renew_lease",
    tag = "broker", security(("bearer" = [])), request_body = RenewRequest,
    responses((status = 200, body = LeaseView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn renew_api(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<ApiJson<LeaseView>, ApiError> {
    caller.require(Role::Admin)?;
    renew(&state, &caller.actor(), None, &req.lease_id, req.ttl_s)
        .await
        .map(|r| ApiJson(r.into()))
}

/// Renews `lease_id` to now + `ttl_s` (held by `holder` when an agent asks); recorded.
pub(crate) async fn renew(
    state: &AppState,
    actor: &str,
    holder: Option<&str>,
    lease_id: &str,
    ttl_s: i64,
) -> Result<LeaseRow, ApiError> {
    let id = broker::lease::LeaseId::parse(lease_id).map_err(|e| bad_lease(&e))?;
    if !(1..=86_400).contains(&ttl_s) {
        return Err(ApiError::invalid_request("ttl_s must be 1-86400"));
    }
    let row = state
        .store
        .lease_get(id.as_str())
        .await?
        .filter(|r| holder.is_none_or(|h| r.agent == h))
        .ok_or_else(|| ApiError::not_found(format!("no lease `{id}` of yours")))?;
    if id.engine() == broker::lease::Engine::OAuth {
        // A token's expiry is signed into it: it cannot be extended, only replaced.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "lease_not_renewable",
            "an access token's lifetime is in its signature; exchange for a new token instead",
        ));
    }
    let now = now_ms();
    let wanted = crate::ms_after(now, ttl_s);
    if wanted > row.max_expires_ms {
        record_renewal(state, actor, &row, wanted, Outcome::Denied).await?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "lease_max_ttl",
            format!(
                "lease `{id}` may not live past {} (its maximum TTL); ask for a new credential",
                fmt_ms(row.max_expires_ms)
            ),
        ));
    }
    record_renewal(state, actor, &row, wanted, Outcome::Success).await?;
    // The upstream credential learns its new expiry before the lease claims it.
    if row.engine == "postgres" {
        crate::dbcreds::extend_upstream(state, &row, wanted)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "database_unavailable", e))?;
    }
    state
        .store
        .lease_renew(id.as_str(), wanted, now)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "lease_not_active",
                format!("lease `{id}` is {} and cannot be renewed", row.state),
            )
        })
}

async fn record_renewal(
    state: &AppState,
    actor: &str,
    row: &LeaseRow,
    wanted: i64,
    outcome: Outcome,
) -> Result<(), ApiError> {
    state
        .record(
            NewEvent::new(
                actor,
                "lease.renew",
                outcome,
                OcsfClass::UserAccessManagement,
            )
            .field("lease_id", row.id.clone())
            .field("agent", row.agent.clone())
            .field("expires_unix_ms", wanted)
            .field("max_expires_unix_ms", row.max_expires_ms),
        )
        .await
}

/// RFC 3339 of a millisecond time, for messages.
pub(crate) fn fmt_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_ids_become_a_digest() {
        let row = |i: usize| LeaseRow {
            id: format!("oauth/token/lse_{i:032x}"),
            agent: String::new(),
            subject: String::new(),
            task: None,
            engine: "oauth".into(),
            scope: "{}".into(),
            parent: None,
            handle: String::new(),
            issued_ms: 0,
            expires_ms: 0,
            max_expires_ms: 0,
            state: "revoked".into(),
            revoke_reason: None,
            revoked_ms: None,
            attempts: 0,
            next_attempt_ms: None,
            last_error: None,
            alerted: false,
        };
        let few: Vec<LeaseRow> = (0..3).map(row).collect();
        assert_eq!(ids_field(&few).as_array().map(Vec::len), Some(3));
        let many: Vec<LeaseRow> = (0..101).map(row).collect();
        assert_eq!(ids_field(&many)["count"], 101);
        assert_eq!(ids_field(&many)["sha256"].as_str().map(str::len), Some(64));
    }
}
