//! Bounds on what one caller can make Warden do: rate limits on failing and unauthenticated
//! work per source address, on introspection (and, when configured, on every call) per API
//! token, a budget of refusal entries per caller in the ledger, the ListObjects / ListUsers
//! result caps and deadlines, and how long ended rows are kept.
//!
//! Rate limits are GCRA token buckets from `governor`, keyed by source address or caller;
//! a refusal is 429 `rate_limited` with `Retry-After`, is not recorded in the ledger (that
//! would make the flood a ledger flood), and is counted in `/metrics`.
//!
//! Failures are limited, not work: a source's bucket is spent only by requests that fail
//! (a forged bearer token, a refused join token, a refused token exchange), and once it is
//! empty the source's requests on those routes are refused before any signature check or store
//! lookup until the bucket refills. A busy enforcer with a valid token is never slowed.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use serde::{Deserialize, Serialize};

use crate::{AppState, error::ApiError, mtls::Peer};

/// A rate: `burst` requests at once, refilled at `per_sec` a second (fractions allowed:
/// `0.5` is one every two seconds). `per_sec = 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests a second, sustained.
    pub per_sec: f64,
    /// Requests at once.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        per_sec: 0.0,
        burst: 0,
    };

    /// The governor quota; `None` when the limit is off.
    fn quota(self) -> Option<Quota> {
        if self.per_sec <= 0.0 || !self.per_sec.is_finite() {
            return None;
        }
        let period = Duration::try_from_secs_f64(1.0 / self.per_sec)
            .ok()?
            .max(Duration::from_nanos(1));
        Some(Quota::with_period(period)?.allow_burst(NonZeroU32::new(self.burst.max(1))?))
    }

    fn check(self, name: &str) -> Result<(), String> {
        if !self.per_sec.is_finite() || self.per_sec < 0.0 {
            return Err(format!("limits.{name}: per_sec must be 0 (off) or more"));
        }
        if self.per_sec > 0.0 && self.burst == 0 {
            return Err(format!("limits.{name}: burst must be at least 1"));
        }
        Ok(())
    }
}

/// The `[limits]` table of `warden.toml`; every field has a default (see
/// `docs/configuration.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most objects a ListObjects answer holds (OpenFGA's `listObjectsMaxResults`); 0: no cap.
    pub list_objects_max_results: usize,
    /// How long ListObjects may search, milliseconds (OpenFGA's `listObjectsDeadline`); 0: no
    /// deadline.
    pub list_objects_deadline_ms: u64,
    /// Most users a ListUsers answer holds (OpenFGA's `listUsersMaxResults`); 0: no cap.
    pub list_users_max_results: usize,
    /// How long ListUsers may search, milliseconds (OpenFGA's `listUsersDeadline`); 0: no
    /// deadline.
    pub list_users_deadline_ms: u64,
    /// Failed authentications per source address (bearer tokens, join tokens, token exchange
    /// and the other agent-credential routes).
    pub auth_failures_per_source: Rate,
    /// Token introspections per API token.
    pub introspections_per_caller: Rate,
    /// Authenticated API calls per API token (off by default).
    pub requests_per_caller: Rate,
    /// Refusal entries recorded one by one per API token; past it they are counted and the
    /// count is recorded in a summary entry.
    pub refusals_recorded_per_caller: Rate,
    /// Workload API calls per attested Unix user.
    pub workload_calls_per_uid: Rate,
    /// Days an ended lease, task, grant or grant request stays in the store before the
    /// sweeper deletes it (the ledger keeps its history); 0: kept forever.
    pub retention_days: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            list_objects_max_results: 1000,
            list_objects_deadline_ms: 3000,
            list_users_max_results: 1000,
            list_users_deadline_ms: 3000,
            auth_failures_per_source: Rate {
                per_sec: 100.0,
                burst: 1000,
            },
            introspections_per_caller: Rate {
                per_sec: 10_000.0,
                burst: 20_000,
            },
            requests_per_caller: Rate::OFF,
            refusals_recorded_per_caller: Rate {
                per_sec: 10.0,
                burst: 100,
            },
            workload_calls_per_uid: Rate {
                per_sec: 100.0,
                burst: 1000,
            },
            retention_days: 30,
        }
    }
}

impl Limits {
    /// Refuses rates that are negative or not numbers, and bursts of 0 on a rate that is on.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in self.rates() {
            rate.check(name)?;
        }
        Ok(())
    }

    fn rates(&self) -> [(&'static str, Rate); 5] {
        [
            ("auth_failures_per_source", self.auth_failures_per_source),
            ("introspections_per_caller", self.introspections_per_caller),
            ("requests_per_caller", self.requests_per_caller),
            (
                "refusals_recorded_per_caller",
                self.refusals_recorded_per_caller,
            ),
            ("workload_calls_per_uid", self.workload_calls_per_uid),
        ]
    }

    /// How long ended rows are kept; `None`: forever.
    pub(crate) fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400))
    }
}

/// A listing query's cap and deadline, from [`Limits`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListLimit {
    pub(crate) max_results: Option<usize>,
    pub(crate) deadline: Option<Instant>,
}

impl ListLimit {
    fn new(max_results: usize, deadline_ms: u64) -> Self {
        Self {
            max_results: (max_results > 0).then_some(max_results),
            deadline: (deadline_ms > 0)
                .then(|| Instant::now().checked_add(Duration::from_millis(deadline_ms)))
                .flatten(),
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Where a request came from, for per-source limits: its IPv4 address, or the /64 of its
/// IPv6 address (one host usually holds a whole /64). Requests without a known peer (tests
/// that drive the router directly) share one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Source(IpAddr);

impl Source {
    pub(crate) fn of(req: &Request) -> Self {
        let ip = req
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| {
                c.0.addr.ip()
            });
        Self::from_ip(ip)
    }

    fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Source(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

/// A keyed GCRA limiter whose idle keys are forgotten now and then.
struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    calls: AtomicU32,
}

/// Forget idle keys once every this many checks.
const TIDY_EVERY: u32 = 4096;

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(rate: Rate) -> Option<Self> {
        Some(Self {
            limiter: RateLimiter::hashmap(rate.quota()?),
            calls: AtomicU32::new(0),
        })
    }

    /// Spends one request of `key`'s budget; `Err(wait)`: none left, wait this long.
    fn check(&self, key: &K) -> Result<(), Duration> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % TIDY_EVERY == TIDY_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// A budget of failures per key. Failures spend it; while it is empty the key's requests
/// are refused before any work.
struct FailureGate<K: Hash + Eq + Clone + Send + Sync + 'static> {
    budget: Option<Keyed<K>>,
    /// Keys that ran out, and until when.
    blocked: moka::sync::Cache<K, Instant>,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> FailureGate<K> {
    fn new(rate: Rate) -> Self {
        Self {
            budget: Keyed::new(rate),
            blocked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }

    /// `Err(wait)` while `key` has no failures left.
    fn admit(&self, key: &K) -> Result<(), Duration> {
        let Some(until) = self.blocked.get(key) else {
            return Ok(());
        };
        let now = Instant::now();
        if until > now {
            return Err(until - now);
        }
        self.blocked.invalidate(key);
        Ok(())
    }

    /// Spends one failure of `key`'s budget; `true` when that emptied it.
    fn failed(&self, key: K) -> bool {
        let Some(budget) = &self.budget else {
            return false;
        };
        match budget.check(&key) {
            Ok(()) => false,
            Err(wait) => {
                self.blocked.insert(key, Instant::now() + wait);
                true
            }
        }
    }
}

/// Whether a refusal is recorded one by one or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Record it, noting this many refusals by the same caller that were only counted.
    Record {
        /// Refusals counted since the last recorded one.
        suppressed_before: u64,
    },
    /// Over the caller's budget: counted, summarised later.
    Count,
}

/// Refusals counted but not recorded, per API token id: (actor, count).
type Pending = HashMap<String, (String, u64)>;

/// The budget of refusal entries each caller may add to the ledger.
struct RefusalBudget {
    budget: Option<Keyed<String>>,
    /// Bounded by the API tokens that exist: only authenticated callers have a budget.
    pending: Mutex<Pending>,
}

impl RefusalBudget {
    fn admit(&self, token_id: &str, actor: &str) -> Refusal {
        let Some(budget) = &self.budget else {
            return Refusal::Record {
                suppressed_before: 0,
            };
        };
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if budget.check(&token_id.to_owned()).is_ok() {
            let suppressed_before = pending.remove(token_id).map_or(0, |(_, n)| n);
            return Refusal::Record { suppressed_before };
        }
        pending
            .entry(token_id.to_owned())
            .or_insert_with(|| (actor.to_owned(), 0))
            .1 += 1;
        Refusal::Count
    }

    /// Takes every caller's count of unrecorded refusals: (token id, actor, count).
    fn drain(&self) -> Vec<(String, String, u64)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .drain()
            .map(|(id, (actor, n))| (id, actor, n))
            .collect()
    }
}

/// The process's limiters, built from [`Limits`].
pub(crate) struct Limiters {
    pub(crate) config: Limits,
    /// When the sweeper last deleted rows past the retention period.
    last_purge: Mutex<Option<Instant>>,
    auth_failures: FailureGate<Source>,
    introspections: Option<Keyed<String>>,
    requests: Option<Keyed<String>>,
    refusals: RefusalBudget,
}

impl Default for Limiters {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// The route of introspection, limited per caller.
const INTROSPECT_ROUTE: &str = "/oauth2/introspect";

/// Public routes that take a credential in the request (not an API token): their failures
/// spend the source's failure budget.
fn is_credential_route(route: &str) -> bool {
    matches!(
        route,
        "/v1/join" | "/oauth2/token" | "/oauth2/revoke" | "/v1/svid/whoami"
    ) || route.starts_with("/v1/agent/")
        || route.starts_with("/v1/grants/")
}

impl Limiters {
    pub(crate) fn new(config: Limits) -> Self {
        Self {
            auth_failures: FailureGate::new(config.auth_failures_per_source),
            introspections: Keyed::new(config.introspections_per_caller),
            requests: Keyed::new(config.requests_per_caller),
            refusals: RefusalBudget {
                budget: Keyed::new(config.refusals_recorded_per_caller),
                pending: Mutex::new(HashMap::new()),
            },
            config,
            last_purge: Mutex::new(None),
        }
    }

    /// Whether a retention pass is due (the first one at once, then once a minute).
    pub(crate) fn purge_due(&self) -> bool {
        let mut last = self
            .last_purge
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < PURGE_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The cap and deadline of a ListObjects starting now.
    pub(crate) fn list_objects(&self) -> ListLimit {
        ListLimit::new(
            self.config.list_objects_max_results,
            self.config.list_objects_deadline_ms,
        )
    }

    /// The cap and deadline of a ListUsers starting now.
    pub(crate) fn list_users(&self) -> ListLimit {
        ListLimit::new(
            self.config.list_users_max_results,
            self.config.list_users_deadline_ms,
        )
    }

    /// Whether `source` may still fail to authenticate.
    pub(crate) fn admit_source(&self, state: &AppState, source: &Source) -> Result<(), ApiError> {
        self.auth_failures.admit(source).map_err(|wait| {
            rate_limited(
                state,
                "auth_failures_per_source",
                "too many failed authentications from this address",
                wait,
            )
        })
    }

    /// Spends one of `source`'s failures.
    pub(crate) fn source_failed(&self, source: Source) {
        self.auth_failures.failed(source);
    }

    /// The per-caller limits of an authenticated call to `route`.
    pub(crate) fn admit_caller(
        &self,
        state: &AppState,
        token_id: &str,
        route: Option<&str>,
    ) -> Result<(), ApiError> {
        let key = token_id.to_owned();
        if let Some(requests) = &self.requests {
            requests.check(&key).map_err(|wait| {
                rate_limited(
                    state,
                    "requests_per_caller",
                    "too many requests with this token",
                    wait,
                )
            })?;
        }
        if route == Some(INTROSPECT_ROUTE) {
            if let Some(introspections) = &self.introspections {
                introspections.check(&key).map_err(|wait| {
                    rate_limited(
                        state,
                        "introspections_per_caller",
                        "too many introspections with this token",
                        wait,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Whether a refusal by the caller with this API token is recorded or only counted.
    pub(crate) fn refusal(&self, token_id: &str, actor: &str) -> Refusal {
        self.refusals.admit(token_id, actor)
    }

    /// Every caller's count of refusals not yet recorded, for the summary entries.
    pub(crate) fn drain_refusals(&self) -> Vec<(String, String, u64)> {
        self.refusals.drain()
    }

    /// (name, rate) of every rate limit, for `/metrics`.
    pub(crate) fn rates(&self) -> [(&'static str, Rate); 5] {
        self.config.rates()
    }
}

/// How often the sweeper deletes ended rows past the retention period.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Most rows of each kind deleted per statement (a pass repeats until fewer are left).
const PURGE_BATCH: u32 = 1000;

impl AppState {
    /// Records one `audit.refusals_suppressed` entry per caller whose refusals went over its
    /// budget and were counted instead, since the last recorded one. Called by the sweeper.
    pub(crate) async fn record_refusal_summaries(&self) {
        for (token_id, actor, count) in self.limits.drain_refusals() {
            let event = ledger::NewEvent::new(
                actor,
                "audit.refusals_suppressed",
                ledger::Outcome::Denied,
                ledger::OcsfClass::ApiActivity,
            )
            .field("token_id", token_id)
            .field("count", count)
            .field(
                "reason",
                "refusals over the caller's budget of refusal entries (limits.refusals_recorded_per_caller)",
            );
            if let Err(e) = self.ledger.append(event).await {
                tracing::error!(error = %e, "cannot record a summary of suppressed refusals");
            }
        }
    }

    /// Deletes ended leases, tasks, grants and grant requests that ended more than
    /// `limits.retention_days` ago (their history stays in the ledger), and records what was
    /// deleted. Called by the lease sweeper once a minute.
    pub async fn purge_retained(&self, now_ms: i64) -> Result<(), store::StoreError> {
        let Some(keep) = self.limits.config.retention() else {
            return Ok(());
        };
        let before = now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        let (mut leases, mut purge) = (0u64, store::TaskPurge::default());
        loop {
            let n = self.store.lease_purge_ended(before, PURGE_BATCH).await?;
            leases += n;
            if n < u64::from(PURGE_BATCH) {
                break;
            }
        }
        loop {
            let p = self.store.task_purge_ended(before, PURGE_BATCH).await?;
            purge.tasks += p.tasks;
            purge.grants += p.grants;
            purge.requests += p.requests;
            let batch = u64::from(PURGE_BATCH);
            if p.tasks < batch && p.grants < batch && p.requests < batch {
                break;
            }
        }
        if leases + purge.tasks + purge.grants + purge.requests == 0 {
            return Ok(());
        }
        for (kind, n) in [
            ("leases", leases),
            ("tasks", purge.tasks),
            ("grants", purge.grants),
            ("grant_requests", purge.requests),
        ] {
            self.metrics.retention_purged(kind, n);
        }
        let event = ledger::NewEvent::new(
            "system:retention",
            "store.purge",
            ledger::Outcome::Success,
            ledger::OcsfClass::ApiActivity,
        )
        .field("ended_before_unix_ms", before)
        .field(
            "retention_days",
            i64::from(self.limits.config.retention_days),
        )
        .field("leases", leases)
        .field("tasks", purge.tasks)
        .field("grants", purge.grants)
        .field("grant_requests", purge.requests);
        if let Err(e) = self.ledger.append(event).await {
            tracing::error!(error = %e, "cannot record a retention purge");
        }
        Ok(())
    }
}

/// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1), counted in `/metrics`.
fn rate_limited(state: &AppState, limit: &'static str, what: &str, wait: Duration) -> ApiError {
    state.metrics.rate_limited(limit);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = u16::try_from(secs.max(1)).unwrap_or(u16::MAX);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("{what}; retry in {secs} s"),
    )
    .with_retry_after(secs)
}

/// Middleware of the public routes: on a route that takes a credential, a source that used up
/// its failures is refused (429) before the credential is checked, and an answer 400, 401 or
/// 403 spends one of its failures.
pub(crate) async fn credential_routes(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let guarded = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| is_credential_route(m.as_str()));
    if !guarded {
        return next.run(req).await;
    }
    let source = Source::of(&req);
    if let Err(e) = state.limits.admit_source(&state, &source) {
        return e.into_response();
    }
    let resp = next.run(req).await;
    if matches!(
        resp.status(),
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        state.limits.source_failed(source);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::from_ip(a), Source::from_ip(b));
        assert_ne!(Source::from_ip(a), Source::from_ip(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            Source::from_ip(mapped),
            Source::from_ip("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn a_failure_gate_closes_after_the_burst_per_key() {
        let gate = FailureGate::new(Rate {
            per_sec: 0.001,
            burst: 3,
        });
        let (a, b) = ("a".to_owned(), "b".to_owned());
        for _ in 0..3 {
            assert!(gate.admit(&a).is_ok());
            assert!(!gate.failed(a.clone()));
        }
        assert!(gate.failed(a.clone()), "the fourth failure empties it");
        let wait = gate.admit(&a).unwrap_err();
        assert!(wait > Duration::from_secs(900), "{wait:?}");
        assert!(gate.admit(&b).is_ok(), "another key is not affected");
        // Off: never closes.
        let off = FailureGate::new(Rate::OFF);
        for _ in 0..10 {
            assert!(!off.failed(a.clone()));
        }
        assert!(off.admit(&a).is_ok());
    }

    #[test]
    fn refusals_past_the_budget_are_counted_and_noted_on_the_next_recorded_one() {
        let budget = RefusalBudget {
            budget: Keyed::new(Rate {
                per_sec: 0.001,
                burst: 2,
            }),
            pending: Mutex::new(HashMap::new()),
        };
        let first = Refusal::Record {
            suppressed_before: 0,
        };
        assert_eq!(budget.admit("tok_a", "token:a"), first);
        assert_eq!(budget.admit("tok_a", "token:a"), first);
        assert_eq!(budget.admit("tok_a", "token:a"), Refusal::Count);
        assert_eq!(budget.admit("tok_a", "token:a"), Refusal::Count);
        assert_eq!(budget.admit("tok_b", "token:b"), first, "per caller");
        assert_eq!(
            budget.drain(),
            vec![("tok_a".to_owned(), "token:a".to_owned(), 2)]
        );
        assert!(budget.drain().is_empty());
    }

    #[test]
    fn limits_are_validated() {
        assert!(Limits::default().validate().is_ok());
        let mut l = Limits::default();
        l.auth_failures_per_source.burst = 0;
        assert!(l.validate().is_err());
        l.auth_failures_per_source = Rate {
            per_sec: f64::NAN,
            burst: 1,
        };
        assert!(l.validate().is_err());
        l.auth_failures_per_source = Rate::OFF;
        assert!(l.validate().is_ok());
    }
}
