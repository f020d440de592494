//! Health, readiness, Prometheus metrics and the OpenAPI document.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{AppState, error::ApiJson};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// Process metrics, exposed at `/metrics`.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    ledger_size: Gauge,
    ledger_appended: Gauge,
    ledger_batches: Gauge,
    ledger_failures: Gauge,
    checkpoint_size: Gauge,
    pub(crate) auth_failures_suppressed: Counter,
    /// Requests refused 429 `rate_limited`, by limit.
    rate_limited: Family<LimitLabels, Counter>,
    /// Each rate limit as configured (0: off).
    rate_limit_per_sec: Family<LimitLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    rate_limit_burst: Family<LimitLabels, Gauge>,
    /// Refusals over a caller's ledger budget (counted, then summarised).
    pub(crate) refusals_unrecorded: Counter,
    /// ListObjects / ListUsers answers cut at the result cap or the deadline, by query.
    list_truncated: Family<QueryLabels, Counter>,
    /// Ended rows deleted after the retention period, by kind.
    retention_purged: Family<KindLabels, Counter>,
    /// Changes read from the store's change feed and applied to what this process caches.
    cache_changes_applied: Family<KindLabels, Gauge>,
    /// Full reads of a kind of cached state (at start, or after falling behind the feed).
    cache_full_reloads: Family<KindLabels, Gauge>,
    /// Registration entries held in memory.
    registry_entries: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    query: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("warden");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(latency_histogram);
        let (ledger_size, ledger_appended, ledger_batches, ledger_failures, checkpoint_size) = (
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
            Gauge::default(),
        );
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "ledger_entries",
            "Entries in the audit ledger",
            ledger_size.clone(),
        );
        registry.register(
            "ledger_appended_entries",
            "Entries appended by this process",
            ledger_appended.clone(),
        );
        registry.register(
            "ledger_commits",
            "Group-commit transactions by this process",
            ledger_batches.clone(),
        );
        registry.register(
            "ledger_append_failures",
            "Appends refused because the store failed",
            ledger_failures.clone(),
        );
        registry.register(
            "ledger_checkpoint_size",
            "Tree size of the latest signed checkpoint",
            checkpoint_size.clone(),
        );
        let auth_failures_suppressed = Counter::default();
        registry.register(
            "auth_failures_unrecorded",
            "Failed authentications over the per-second ledger budget (counted, then noted on the next recorded one)",
            auth_failures_suppressed.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused 429 rate_limited, by limit",
            rate_limited.clone(),
        );
        let rate_limit_per_sec =
            Family::<LimitLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "rate_limit_per_second",
            "Each rate limit's sustained rate as configured (0: off)",
            rate_limit_per_sec.clone(),
        );
        let rate_limit_burst = Family::<LimitLabels, Gauge>::default();
        registry.register(
            "rate_limit_burst",
            "Each rate limit's burst as configured",
            rate_limit_burst.clone(),
        );
        let refusals_unrecorded = Counter::default();
        registry.register(
            "refusals_unrecorded",
            "Refusals over a caller's ledger budget (counted, then recorded in a summary entry)",
            refusals_unrecorded.clone(),
        );
        let list_truncated = Family::<QueryLabels, Counter>::default();
        registry.register(
            "rebac_list_truncated",
            "ListObjects and ListUsers answers cut at the result cap or the deadline",
            list_truncated.clone(),
        );
        let retention_purged = Family::<KindLabels, Counter>::default();
        registry.register(
            "retention_purged_rows",
            "Ended leases, tasks, grants and grant requests deleted after the retention period",
            retention_purged.clone(),
        );
        let cache_changes_applied = Family::<KindLabels, Gauge>::default();
        registry.register(
            "cache_changes_applied",
            "Changes read from the store's change feed and applied to this process's caches, by kind",
            cache_changes_applied.clone(),
        );
        let cache_full_reloads = Family::<KindLabels, Gauge>::default();
        registry.register(
            "cache_full_reloads",
            "Full reads of a kind of cached state (at start, or after falling behind the change feed)",
            cache_full_reloads.clone(),
        );
        let registry_entries = Gauge::default();
        registry.register(
            "registry_entries",
            "Registration entries held in memory",
            registry_entries.clone(),
        );
        Self {
            cache_changes_applied,
            cache_full_reloads,
            registry_entries,
            auth_failures_suppressed,
            rate_limited,
            rate_limit_per_sec,
            rate_limit_burst,
            refusals_unrecorded,
            list_truncated,
            retention_purged,
            registry,
            requests,
            latency,
            ledger_size,
            ledger_appended,
            ledger_batches,
            ledger_failures,
            checkpoint_size,
        }
    }
}

impl Metrics {
    /// Counts a 429 of `limit`.
    pub(crate) fn rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Shows the configured rate limits.
    pub(crate) fn show_limits(&self, limits: &crate::limits::Limiters) {
        for (limit, rate) in limits.rates() {
            let labels = LimitLabels { limit };
            let on = rate.per_sec > 0.0;
            self.rate_limit_per_sec
                .get_or_create(&labels)
                .set(if on { rate.per_sec } else { 0.0 });
            self.rate_limit_burst.get_or_create(&labels).set(if on {
                i64::from(rate.burst)
            } else {
                0
            });
        }
    }

    /// Counts a listing answer cut short (`query`: `list_objects` or `list_users`).
    pub(crate) fn list_truncated(&self, query: &'static str) {
        self.list_truncated
            .get_or_create(&QueryLabels { query })
            .inc();
    }

    /// Counts `n` changes of `kind` applied from the change feed.
    pub(crate) fn changes_applied(&self, kind: store::ChangeKind, n: usize) {
        if n > 0 {
            self.cache_changes_applied
                .get_or_create(&KindLabels {
                    kind: kind.as_str(),
                })
                .inc_by(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts a full read of `kind`.
    pub(crate) fn cache_reloaded(&self, kind: store::ChangeKind) {
        self.cache_full_reloads
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Counts rows of `kind` deleted after the retention period.
    pub(crate) fn retention_purged(&self, kind: &'static str, rows: u64) {
        self.retention_purged
            .get_or_create(&KindLabels { kind })
            .inc_by(rows);
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Counts and times every request by matched route (never the raw path: bounded labels).
pub(crate) async fn track(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let resp = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        status: resp.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    status: &'static str,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz",
    tag = "ops", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> ApiJson<Health> {
    ApiJson(Health { status: "ok" })
}

/// Readiness with what was checked.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    status: &'static str,
    store: String,
    backend: String,
    ledger_size: u64,
}

/// Readiness: the store answers and the ledger accepts appends. 503 when not.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "ops",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, ApiJson<Ready>) {
    let (status, store) = match state.store.ping().await {
        Ok(()) => match state.ledger.refusal() {
            None => (StatusCode::OK, "ok".to_owned()),
            Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
        },
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    (
        status,
        ApiJson(Ready {
            status: if status == StatusCode::OK {
                "ready"
            } else {
                "unavailable"
            },
            store,
            backend: state.store.backend().to_string(),
            ledger_size: state.ledger.size(),
        }),
    )
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "ops",
    responses((status = 200, body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let stats = state.ledger.stats();
    m.ledger_size.set(to_i64(stats.size));
    m.ledger_appended.set(to_i64(stats.appended));
    m.ledger_batches.set(to_i64(stats.batches));
    m.ledger_failures.set(to_i64(stats.failures));
    m.checkpoint_size.set(to_i64(stats.checkpoint_size));
    let registry = state.registry.stats();
    let entry = KindLabels {
        kind: store::ChangeKind::Entry.as_str(),
    };
    m.registry_entries
        .set(i64::try_from(registry.entries).unwrap_or(i64::MAX));
    m.cache_changes_applied
        .get_or_create(&entry)
        .set(to_i64(registry.changes_applied));
    m.cache_full_reloads
        .get_or_create(&entry)
        .set(to_i64(registry.full_reloads));
    let mut body = String::new();
    if let Err(e) = encode(&mut body, &m.registry) {
        return crate::error::ApiError::internal(e).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
