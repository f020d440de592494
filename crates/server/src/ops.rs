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
        Self {
            auth_failures_suppressed,
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
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
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
#[utoipa::path(get, path = "/readyz", tag = "ops",
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
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = &state.metrics;
    let stats = state.ledger.stats();
    m.ledger_size.set(to_i64(stats.size));
    m.ledger_appended.set(to_i64(stats.appended));
    m.ledger_batches.set(to_i64(stats.batches));
    m.ledger_failures.set(to_i64(stats.failures));
    m.checkpoint_size.set(to_i64(stats.checkpoint_size));
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
