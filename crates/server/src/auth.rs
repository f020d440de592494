//! API tokens, roles and the authenticating, auditing middleware.
//!
//! Tokens are `wdn_<43 base64url chars>` (256 random bits). The store keeps only their
//! SHA-256; a presented token is hashed and looked up. Every authenticated call, and every
//! failed authentication, is appended to the ledger before its response leaves.

use std::{str::FromStr, sync::Arc};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ledger::{NewEvent, OcsfClass, Outcome};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::{
    AppState, RequestId,
    error::ApiError,
    limits::{Refusal, Source},
};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Everything.
    Admin,
    /// Decides approval requests (and reads).
    Approver,
    /// Reads: the ledger, configuration, state. Never changes anything.
    Auditor,
    /// Asks for authorization decisions: a policy enforcement point (gateway, service, hook).
    Enforcer,
}

impl Role {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Enforcer => "enforcer",
        }
    }

    /// Whether a holder of `self` may act as `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "approver" => Ok(Role::Approver),
            "auditor" => Ok(Role::Auditor),
            "enforcer" => Ok(Role::Enforcer),
            other => Err(format!(
                "unknown role `{other}`: expected admin, approver, auditor or enforcer"
            )),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token id.
    pub token_id: String,
    /// Token name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The HTTP request it made, for ledger entries that stand for the whole request.
    request: Arc<RequestAudit>,
}

/// What the `api.request` ledger entry records about a request, and whether a handler has
/// already recorded an entry that stands for it.
#[derive(Debug, Default)]
struct RequestAudit {
    method: String,
    path: serde_json::Value,
    request_id: String,
    recorded: std::sync::OnceLock<u64>,
    /// A refusal standing for this request was counted, not recorded, under the caller's
    /// refusal budget: no `api.request` entry either.
    counted: std::sync::atomic::AtomicBool,
}

impl Caller {
    /// Refuses with 403 unless the caller's role allows `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token `{}` has role `{}`; this needs `{}`",
                    self.name,
                    self.role.as_str(),
                    needed.as_str()
                ),
            ))
        }
    }

    /// The actor string recorded in the ledger.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }

    /// Records `event` as the ledger entry of the whole request: it gains the fields the
    /// `api.request` entry would carry (method, path, request id, token id, role), and when
    /// the request then succeeds no separate `api.request` entry is written — one entry per
    /// decision instead of two. Fails closed like [`AppState::record`].
    pub(crate) async fn record_for_request(
        &self,
        state: &AppState,
        event: NewEvent,
    ) -> Result<(), ApiError> {
        let event = event
            .field("method", self.request.method.clone())
            .field("path", self.request.path.clone())
            .field("request_id", self.request.request_id.clone())
            .field("token_id", self.token_id.clone())
            .field("role", self.role.as_str());
        let receipt = state
            .ledger
            .append(event)
            .await
            .map_err(|e| ApiError::audit_unavailable(&e))?;
        // The first such entry of a request (a batch writes several) names it.
        let _ = self.request.recorded.set(receipt.seq);
        Ok(())
    }

    /// Records a refusal this caller relayed (a credential that did not verify, a token that
    /// is not active) as the entry of the request, within the caller's budget of refusal
    /// entries (`limits.refusals_recorded_per_caller`): past it the refusal is only counted,
    /// the next recorded one notes how many were (`suppressed_before`), and the sweeper
    /// records the rest in an `audit.refusals_suppressed` summary. The answer is the same
    /// either way.
    pub(crate) async fn record_refusal(
        &self,
        state: &AppState,
        event: NewEvent,
    ) -> Result<(), ApiError> {
        match state.limits.refusal(&self.token_id, &self.actor()) {
            Refusal::Record { suppressed_before } => {
                let event = if suppressed_before > 0 {
                    event.field("suppressed_before", suppressed_before)
                } else {
                    event
                };
                self.record_for_request(state, event).await
            }
            Refusal::Count => {
                state.metrics.refusals_unrecorded.inc();
                self.request
                    .counted
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

/// How long a token looked up in the store is trusted without looking again: bounds how
/// late another replica (or any other writer of the store) takes effect here. A
/// revocation through this server's API takes effect at once.
const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Entries kept at most. Past it the cache evicts by TinyLFU (moka): a token in use stays,
/// one seen once makes way. Only valid tokens are cached, so its size is bounded by the
/// tokens that exist, not by what callers send.
const TOKEN_CACHE_MAX: u64 = 10_000;

/// Recently verified API tokens by hash, so a busy enforcer does not cost a store lookup per
/// request.
pub(crate) struct TokenCache {
    entries: moka::sync::Cache<[u8; 32], (std::time::Instant, store::ApiTokenRow)>,
    /// Bumped by every [`clear`](Self::clear): a row read from the store before a revocation
    /// is not cached after it.
    generation: std::sync::atomic::AtomicU64,
    /// Held (shared) while checking the generation and inserting, and (exclusively) by
    /// `clear`, so no insert falls between a revocation's bump and its invalidation.
    gate: std::sync::RwLock<()>,
    ttl: std::time::Duration,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(TOKEN_CACHE_MAX, TOKEN_CACHE_TTL)
    }
}

impl TokenCache {
    fn new(max: u64, ttl: std::time::Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max)
                .time_to_live(ttl)
                .build(),
            generation: std::sync::atomic::AtomicU64::new(0),
            gate: std::sync::RwLock::new(()),
            ttl,
        }
    }

    fn get(&self, hash: &[u8; 32]) -> Option<store::ApiTokenRow> {
        let (at, row) = self.entries.get(hash)?;
        (at.elapsed() < self.ttl).then_some(row)
    }

    fn put(&self, hash: [u8; 32], row: store::ApiTokenRow, generation: u64) {
        let _shared = self
            .gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Checked under the gate `clear` takes: a revocation in between wins.
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return;
        }
        self.entries.insert(hash, (std::time::Instant::now(), row));
    }

    /// Forgets every cached token (called on revocation).
    pub(crate) fn clear(&self) {
        let _exclusive = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    /// The active token with this hash, from the cache or the store.
    async fn lookup(
        &self,
        store: &dyn store::Store,
        hash: &[u8; 32],
    ) -> store::Result<Option<store::ApiTokenRow>> {
        if let Some(row) = self.get(hash) {
            return Ok(Some(row));
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let row = store.token_by_hash(hash).await?;
        if let Some(row) = row.as_ref().filter(|r| r.revoked_unix_ms.is_none()) {
            self.put(*hash, row.clone(), generation);
        }
        Ok(row)
    }
}

/// A freshly generated token: the secret (shown once) and what the store keeps.
#[derive(Debug)]
pub struct NewToken {
    /// The secret, `wdn_…`.
    pub secret: String,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// Public id, `tok_…`.
    pub id: String,
}

/// Generates a token from the OS random source.
pub fn generate_token() -> NewToken {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = format!("wdn_{}", URL_SAFE_NO_PAD.encode(secret));
    let mut id = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut id);
    NewToken {
        hash: hash_token(&secret),
        id: format!("tok_{}", hex_lower(&id)),
        secret,
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a token secret, as stored.
pub fn hash_token(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn bearer(req: &Request) -> Result<Option<&str>, &'static str> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "authorization header is not ASCII")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("authorization header must be `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("authorization header must be `Bearer <token>`");
    }
    Ok(Some(token.trim()))
}

/// Longest path recorded verbatim; longer ones are cut and carry their SHA-256, so a huge URL
/// can neither bloat the ledger nor push an event past its size limit (which would turn a
/// refused login into an unrecorded one).
const MAX_RECORDED_PATH: usize = 512;

fn recorded_path(path: &str) -> serde_json::Value {
    if path.len() <= MAX_RECORDED_PATH {
        return path.into();
    }
    let mut cut = MAX_RECORDED_PATH;
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = Sha256::digest(path.as_bytes());
    serde_json::json!({
        "prefix": &path[..cut],
        "len": path.len(),
        "sha256": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    })
}

/// How many failed authentications per second are recorded one by one.
pub(crate) const AUTH_FAILURES_RECORDED_PER_SEC: u32 = 50;

/// A per-second budget for recording failed authentications.
#[derive(Debug, Default)]
pub(crate) struct AuthFailureBudget {
    state: std::sync::Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    window: Option<std::time::Instant>,
    recorded: u32,
    suppressed: u64,
}

impl AuthFailureBudget {
    /// `Some(n)`: record this failure, noting `n` unrecorded ones before it; `None`: over
    /// budget, count it instead.
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if st
            .window
            .is_none_or(|w| now.duration_since(w) >= std::time::Duration::from_secs(1))
        {
            st.window = Some(now);
            st.recorded = 0;
        }
        if st.recorded >= AUTH_FAILURES_RECORDED_PER_SEC {
            st.suppressed += 1;
            return None;
        }
        st.recorded += 1;
        Some(std::mem::take(&mut st.suppressed))
    }
}

fn outcome_for(status: StatusCode) -> Outcome {
    match status.as_u16() {
        401 | 403 => Outcome::Denied,
        s if s >= 400 => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// Authenticates the bearer token, runs the handler, and records the call in the ledger.
/// A call that cannot be recorded is answered 503 instead (fail closed).
pub(crate) async fn authenticate_and_audit(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().as_str().to_owned();
    let path = recorded_path(req.uri().path());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    // A source that used up its failed authentications is refused before the lookup.
    let source = Source::of(&req);
    if let Err(e) = state.limits.admit_source(&state, &source) {
        return e.into_response();
    }

    let caller = match bearer(&req) {
        Ok(Some(token)) => {
            let hash = hash_token(token);
            match state.tokens.lookup(state.store.as_ref(), &hash).await {
                Ok(Some(row)) if row.revoked_unix_ms.is_none() => match row.role.parse() {
                    Ok(role) => Ok(Caller {
                        token_id: row.id,
                        name: row.name,
                        role,
                        request: Arc::new(RequestAudit {
                            method: method.clone(),
                            path: path.clone(),
                            request_id: request_id.clone(),
                            recorded: std::sync::OnceLock::new(),
                            counted: std::sync::atomic::AtomicBool::new(false),
                        }),
                    }),
                    Err(_) => Err(("token has an unknown role", Some(token.to_owned()))),
                },
                Ok(Some(_)) => Err(("token has been revoked", Some(token.to_owned()))),
                Ok(None) => Err(("unknown token", Some(token.to_owned()))),
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
        Ok(None) => Err(("no bearer token", None)),
        Err(why) => Err((why, None)),
    };

    let caller = match caller {
        Ok(c) => c,
        Err((reason, presented)) => {
            state.limits.source_failed(source);
            let mut event = NewEvent::new(
                "anonymous",
                "api.authenticate",
                Outcome::Denied,
                OcsfClass::Authentication,
            )
            .field("method", method)
            .field("path", path)
            .field("reason", reason)
            .field("request_id", request_id);
            if let Some(token) = presented {
                // Recorded only as an HMAC: repeated attempts correlate, the secret never shows.
                event = event.secret("token", token);
            }
            // Unauthenticated callers must not be able to fill the ledger: past the budget,
            // refusals are counted and the count rides on the next recorded one.
            match state.auth_failures.admit() {
                Some(suppressed) => {
                    if suppressed > 0 {
                        event = event.field("suppressed_before", suppressed);
                    }
                    if let Err(e) = state.ledger.append(event).await {
                        return ApiError::audit_unavailable(&e).into_response();
                    }
                }
                None => {
                    state.metrics.auth_failures_suppressed.inc();
                }
            }
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                format!("{reason}: send `Authorization: Bearer <token>`"),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    };

    // Per-caller limits (429 answers are counted in /metrics, not recorded).
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if let Err(e) = state.limits.admit_caller(&state, &caller.token_id, route) {
        return e.into_response();
    }

    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await;
    let status = resp.status();
    if status.is_success()
        && caller
            .request
            .counted
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        // A refusal counted under the caller's budget stands for the request.
        return resp;
    }
    if let Some(&seq) = caller
        .request
        .recorded
        .get()
        .filter(|_| status.is_success())
    {
        // The handler's own entry (a decision) carries everything `api.request` would.
        if let Ok(v) = HeaderValue::from_str(&seq.to_string()) {
            resp.headers_mut().insert("warden-audit-seq", v);
        }
        return resp;
    }
    let mut event = NewEvent::new(
        caller.actor(),
        "api.request",
        outcome_for(status),
        OcsfClass::ApiActivity,
    )
    .field("method", method)
    .field("path", path)
    .field("status", status.as_u16())
    .field("request_id", request_id)
    .field("token_id", caller.token_id.clone())
    .field("role", caller.role.as_str());
    if status.is_client_error() {
        // Refused calls are recorded within the caller's budget of refusal entries; past it
        // they are counted, noted on the next recorded one and summarised by the sweeper.
        match state.limits.refusal(&caller.token_id, &caller.actor()) {
            Refusal::Record { suppressed_before } if suppressed_before > 0 => {
                event = event.field("suppressed_before", suppressed_before);
            }
            Refusal::Record { .. } => {}
            Refusal::Count => {
                state.metrics.refusals_unrecorded.inc();
                return resp;
            }
        }
    }
    match state.ledger.append(event).await {
        Ok(receipt) => {
            if let Ok(v) = HeaderValue::from_str(&receipt.seq.to_string()) {
                resp.headers_mut().insert("warden-audit-seq", v);
            }
            resp
        }
        Err(e) => ApiError::audit_unavailable(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert!(Role::Admin.allows(Role::Auditor));
        assert!(Role::Auditor.allows(Role::Auditor));
        assert!(!Role::Auditor.allows(Role::Admin));
        assert!(!Role::Approver.allows(Role::Auditor));
        assert_eq!("auditor".parse::<Role>(), Ok(Role::Auditor));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn failed_auth_budget_counts_what_it_does_not_record() {
        let budget = AuthFailureBudget::default();
        for _ in 0..AUTH_FAILURES_RECORDED_PER_SEC {
            assert_eq!(budget.admit(), Some(0));
        }
        assert_eq!(budget.admit(), None);
        assert_eq!(budget.admit(), None);
        // A new window: the next recorded failure carries the two suppressed ones.
        budget.state.lock().unwrap().window = Some(
            std::time::Instant::now()
                .checked_sub(std::time::Duration::from_secs(2))
                .unwrap(),
        );
        assert_eq!(budget.admit(), Some(2));
        assert_eq!(budget.admit(), Some(0));
    }

    /// A token read from the store just before a revocation is not cached after it, and a
    /// cached token expires after the TTL.
    #[test]
    fn a_revocation_beats_a_lookup_in_flight() {
        let cache = TokenCache::default();
        let row = store::ApiTokenRow {
            id: "tok_1".into(),
            name: "gateway".into(),
            role: "enforcer".into(),
            token_hash: [7; 32],
            created_unix_ms: 0,
            revoked_unix_ms: None,
        };
        let before = cache.generation.load(std::sync::atomic::Ordering::SeqCst);
        cache.put([7; 32], row.clone(), before);
        assert!(cache.get(&[7; 32]).is_some());
        // A lookup reads the generation, the revocation clears, the lookup's row arrives.
        let in_flight = cache.generation.load(std::sync::atomic::Ordering::SeqCst);
        cache.clear();
        cache.put([7; 32], row.clone(), in_flight);
        assert!(cache.get(&[7; 32]).is_none());
        // An entry older than the TTL is not used.
        let old = std::time::Instant::now()
            .checked_sub(TOKEN_CACHE_TTL)
            .unwrap();
        cache.entries.insert([8; 32], (old, row));
        assert!(cache.get(&[8; 32]).is_none());
    }

    /// Full, the cache keeps the token in use and turns away ones seen once (it used to
    /// empty itself, so every busy caller's next request went to the store at once).
    #[test]
    fn a_full_cache_keeps_its_hot_entries() {
        // A long lifetime, so only eviction can take an entry out during the test.
        let cache = TokenCache::new(TOKEN_CACHE_MAX, std::time::Duration::from_secs(3600));
        let row = |i: u32| store::ApiTokenRow {
            id: format!("tok_{i}"),
            name: format!("t{i}"),
            role: "enforcer".into(),
            token_hash: [0; 32],
            created_unix_ms: 0,
            revoked_unix_ms: None,
        };
        let key = |i: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            k
        };
        let generation = cache.generation.load(std::sync::atomic::Ordering::SeqCst);
        let hot = key(u32::MAX);
        cache.put(hot, row(0), generation);
        for i in 0..3 * TOKEN_CACHE_MAX as u32 {
            // The busy enforcer's token is asked for between the others.
            if i % 10 == 0 {
                assert!(cache.get(&hot).is_some(), "hot token gone after {i} others");
            }
            cache.put(key(i), row(i), generation);
        }
        cache.entries.run_pending_tasks();
        assert!(cache.entries.entry_count() <= TOKEN_CACHE_MAX);
        assert!(cache.get(&hot).is_some());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("wdn_") && a.secret.len() == 47);
        assert_eq!(a.hash, hash_token(&a.secret));
    }
}
