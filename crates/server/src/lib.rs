//! Warden's HTTP API: axum routes, authentication and per-call auditing, JSON errors with
//! stable codes, request limits, health, metrics and the OpenAPI document.
//!
//! This is the only crate that knows HTTP. It owns no state of its own beyond counters: the
//! store holds data, the ledger records what happened.

#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use ledger::Ledger;
use store::Store;
use tower_http::{
    catch_panic::CatchPanicLayer, limit::RequestBodyLimitLayer, timeout::TimeoutLayer,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

mod agent_api;
mod agent_auth;
mod audit_api;
pub mod auth;
mod custody_api;
mod dbcreds;
mod deny;
mod entries;
pub mod error;
mod git_api;
mod grants_api;
mod holds;
mod join;
mod leases;
mod limits;
mod listen;
pub mod mtls;
mod oauth;
mod ops;
mod pdp;
mod policy_api;
mod rebac_api;
mod relations;
mod roles;
mod tasks_api;
mod tls;
mod tokens;
mod trust_api;

pub use auth::{Caller, NewToken, Role, generate_token, hash_token};
pub use error::{ApiError, ErrorBody};
pub use limits::{Limits, Rate};
pub use listen::{ConnLimits, serve};
pub use oauth::BrokerSettings;
pub use relations::Relations;
pub use tls::TlsListener;
pub use tokio_rustls::rustls;

/// Settings the server needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body, bytes.
    pub body_limit: usize,
    /// Longest a request may take before it is answered 408.
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Shared state of all handlers.
pub struct AppState {
    trust_domain: identity::TrustDomain,
    issuer: String,
    denylist: Arc<identity::deny::Denylist>,
    authority: Arc<authority::Authority>,
    keyring: Arc<identity::trust::Keyring>,
    store: Arc<dyn Store>,
    ledger: Ledger,
    metrics: ops::Metrics,
    auth_failures: auth::AuthFailureBudget,
    tokens: auth::TokenCache,
    pdp: pdp::Pdp,
    relations: relations::Relations,
    broker: oauth::BrokerSettings,
    leases: leases::Feed,
    held: holds::Held,
    /// Verified JWT-SVID signatures (agents present the same SVID many times).
    jwt_validator: identity::jwt::Validator,
    tasks: tasks_api::TaskCache,
    /// Pooled admin sessions to the broker's target databases, one pool per target.
    db_pools: broker::postgres::TargetPools,
    /// Rate limits, refusal budgets, listing bounds and retention (`[limits]`).
    limits: limits::Limiters,
}

impl AppState {
    /// Builds the state from an open store and ledger, the signing authority (keys, bundles,
    /// federation) and the process's denylist.
    pub fn new(
        store: Arc<dyn Store>,
        ledger: Ledger,
        authority: Arc<authority::Authority>,
        denylist: Arc<identity::deny::Denylist>,
    ) -> Self {
        let state = Self {
            trust_domain: authority.trust_domain().clone(),
            denylist,
            issuer: String::from("http://localhost"),
            keyring: authority.keyring(),
            authority,
            store,
            ledger,
            metrics: ops::Metrics::new(),
            auth_failures: auth::AuthFailureBudget::default(),
            tokens: auth::TokenCache::default(),
            pdp: pdp::Pdp::default(),
            relations: relations::Relations::default(),
            broker: oauth::BrokerSettings::default(),
            leases: leases::Feed::default(),
            held: holds::Held::default(),
            jwt_validator: identity::jwt::Validator::new(),
            tasks: tasks_api::TaskCache::default(),
            db_pools: broker::postgres::TargetPools::new(),
            limits: limits::Limiters::default(),
        };
        state.metrics.show_limits(&state.limits);
        state
    }
}

impl AppState {
    /// Sets the OIDC issuer URL (what JWT-SVIDs carry in `iss`).
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Sets the rate limits, refusal budgets, listing bounds and retention (`[limits]`).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits::Limiters::new(limits);
        self.metrics.show_limits(&self.limits);
        self
    }

    /// Sets the credential broker's settings.
    pub fn with_broker(mut self, settings: oauth::BrokerSettings) -> Self {
        self.broker = settings;
        self
    }

    /// Appends `event` to the ledger; if it cannot be recorded, the 503 `audit_unavailable`
    /// error the operation must fail with.
    pub(crate) async fn record(&self, event: ledger::NewEvent) -> Result<(), ApiError> {
        self.ledger
            .append(event)
            .await
            .map(|_| ())
            .map_err(|e| ApiError::audit_unavailable(&e))
    }

    /// Drops expired relationship tuples from the database and the in-memory graphs (they are
    /// already invisible). Called once a minute.
    pub async fn purge_expired_relations(&self) -> Result<usize, store::StoreError> {
        self.relations
            .purge_expired(self.store.as_ref(), now_ms())
            .await
    }

    /// This install's trust domain.
    pub fn trust_domain(&self) -> &identity::TrustDomain {
        &self.trust_domain
    }

    /// Re-reads what decisions depend on from the store: the policy packages in force, the
    /// agents' registration metadata, and the relationship stores (models and tuple changes).
    /// Called at start and every second (replicas follow).
    pub async fn refresh_policies(&self) -> Result<(), store::StoreError> {
        self.pdp.refresh(self.store.as_ref()).await?;
        self.pdp.refresh_agents(self.store.as_ref()).await?;
        self.refresh_holds().await?;
        self.refresh_tasks().await?;
        self.relations.refresh(self.store.as_ref()).await
    }
}

/// The trust domain's SPIFFE bundle (SPIFFE Trust Domain and Bundle spec §4: a JWK set whose
/// keys have `use` `x509-svid` (the root certificate in `x5c`) or `jwt-svid`) — every key that
/// is prepared, active, or retired within its overlap — with `spiffe_sequence` and
/// `spiffe_refresh_hint`. Other trust domains federate by fetching this.
#[utoipa::path(get, path = "/bundle", tag = "identity",
    responses((status = 200, description = "SPIFFE bundle (JWK set)", content_type = "application/json")))]
async fn bundle(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> error::ApiJson<serde_json::Value> {
    error::ApiJson(state.keyring.current().own().to_json())
}

/// OpenID Connect discovery, so cloud IAM (AWS, Azure, GCP workload identity federation) and
/// any OIDC library can verify agent JWT-SVIDs with nothing but this document and its keys.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "identity",
    responses((status = 200, description = "OIDC discovery document", content_type = "application/json")))]
async fn openid_configuration(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> error::ApiJson<serde_json::Value> {
    let mut doc = oauth_metadata(&state);
    for (k, v) in [
        ("issuer", serde_json::json!(state.issuer)),
        (
            "jwks_uri",
            serde_json::json!(format!("{}/keys", state.issuer)),
        ),
        (
            "id_token_signing_alg_values_supported",
            serde_json::json!(["ES256"]),
        ),
        ("response_types_supported", serde_json::json!(["id_token"])),
        ("subject_types_supported", serde_json::json!(["public"])),
        (
            "claims_supported",
            serde_json::json!(["sub", "aud", "exp", "iat", "iss", "jti", "act"]),
        ),
    ] {
        doc.insert(k.into(), v);
    }
    error::ApiJson(serde_json::Value::Object(doc))
}

/// The token endpoints, for discovery documents.
fn oauth_metadata(state: &AppState) -> serde_json::Map<String, serde_json::Value> {
    let json = serde_json::json!({
        "token_endpoint": format!("{}/oauth2/token", state.issuer),
        "introspection_endpoint": format!("{}/oauth2/introspect", state.issuer),
        "revocation_endpoint": format!("{}/oauth2/revoke", state.issuer),
        "grant_types_supported": [oauth::GRANT_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none", "tls_client_auth"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": state.broker.scopes.iter().collect::<Vec<_>>(),
    });
    json.as_object().cloned().unwrap_or_default()
}

/// OAuth 2.0 authorization server metadata (RFC 8414): the token exchange, introspection and
/// revocation endpoints, so OAuth client libraries find them, and the access-token keys
/// (`jwks_uri`: `/oauth2/keys`, apart from the JWT-SVID keys of OIDC discovery).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "broker",
    responses((status = 200, description = "RFC 8414 metadata", content_type = "application/json")))]
async fn oauth_authorization_server(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> error::ApiJson<serde_json::Value> {
    let mut doc = oauth_metadata(&state);
    doc.insert("issuer".into(), state.issuer.clone().into());
    doc.insert(
        "jwks_uri".into(),
        format!("{}/oauth2/keys", state.issuer).into(),
    );
    // No authorization endpoint: tokens come only from the token endpoint.
    doc.insert("response_types_supported".into(), serde_json::json!([]));
    error::ApiJson(serde_json::Value::Object(doc))
}

/// The JWT-SVID signing keys as an OIDC JWK set (`use` = `sig`).
#[utoipa::path(get, path = "/keys", tag = "identity",
    responses((status = 200, description = "JWK set", content_type = "application/json")))]
async fn oidc_keys(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> error::ApiJson<serde_json::Value> {
    let trust = state.keyring.current();
    let keys: Vec<serde_json::Value> = trust
        .own()
        .jwt()
        .keys()
        .map(identity::jwt::JwtPublicKey::to_oidc_jwk)
        .collect();
    error::ApiJson(serde_json::json!({ "keys": keys }))
}

/// Request id: the caller's `x-request-id` when sane, else a fresh UUID.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// `secs` seconds after `ms` (milliseconds since the Unix epoch), saturating: a lifetime of
/// 2^62 seconds from a request is "as long as the other bounds allow", never a wrap to the past.
pub(crate) fn ms_after(ms: i64, secs: i64) -> i64 {
    ms.saturating_add(secs.saturating_mul(1000))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warden API",
        description = "Zero-trust identity governance for AI agents. Errors are `{\"code\", \"message\"}` with a stable `code`."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The route table in two groups: public routes, and routes that need a token (and are
/// audited). Both the server and [`openapi`] are built from it, so they cannot drift apart.
fn route_table() -> (OpenApiRouter<Arc<AppState>>, OpenApiRouter<Arc<AppState>>) {
    let public = OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(audit_api::checkpoint))
        .routes(routes!(audit_api::key))
        .routes(routes!(audit_api::inclusion))
        .routes(routes!(audit_api::consistency))
        .routes(routes!(bundle))
        .routes(routes!(openid_configuration))
        .routes(routes!(oauth_authorization_server))
        .routes(routes!(oidc_keys))
        .routes(routes!(oauth::access_token_keys))
        .routes(routes!(join::join))
        .routes(routes!(mtls::whoami))
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::revoke))
        .routes(routes!(dbcreds::issue))
        .routes(routes!(agent_api::renew))
        .routes(routes!(agent_api::revoke))
        .routes(routes!(agent_api::operation))
        .routes(routes!(tasks_api::agent_create))
        .routes(routes!(tasks_api::agent_assign))
        .routes(routes!(tasks_api::agent_end))
        .routes(routes!(grants_api::create))
        .routes(routes!(grants_api::get));
    let authenticated = OpenApiRouter::new()
        .routes(routes!(audit_api::entries))
        .routes(routes!(audit_api::publish_checkpoint))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(tokens::whoami))
        .routes(routes!(entries::create, entries::list))
        .routes(routes!(entries::show, entries::delete))
        .routes(routes!(join::create))
        .routes(routes!(deny::add, deny::list))
        .routes(routes!(deny::remove))
        .routes(routes!(trust_api::keys))
        .routes(routes!(trust_api::rotate))
        .routes(routes!(trust_api::revoke))
        .routes(routes!(trust_api::add_federation, trust_api::federations))
        .routes(routes!(
            trust_api::update_federation,
            trust_api::remove_federation
        ))
        .routes(routes!(trust_api::refresh_federation))
        .routes(routes!(trust_api::set_federation_limits))
        .routes(routes!(policy_api::list))
        .routes(routes!(policy_api::push, policy_api::show))
        .routes(routes!(policy_api::rollback))
        .routes(routes!(policy_api::simulate))
        .routes(routes!(policy_api::authorize))
        .routes(routes!(policy_api::authzen_evaluation))
        .routes(routes!(policy_api::authzen_evaluations))
        .routes(routes!(git_api::authorize))
        .routes(routes!(rebac_api::put_model, rebac_api::get_model))
        .routes(routes!(rebac_api::stores))
        .routes(routes!(rebac_api::write, rebac_api::read))
        .routes(routes!(rebac_api::check))
        .routes(routes!(rebac_api::batch_check))
        .routes(routes!(rebac_api::expand))
        .routes(routes!(rebac_api::list_objects))
        .routes(routes!(rebac_api::list_users))
        .routes(routes!(rebac_api::changes))
        .routes(routes!(oauth::introspect))
        .routes(routes!(leases::list))
        .routes(routes!(leases::revoke_api))
        .routes(routes!(leases::renew_api))
        .routes(routes!(holds::hold, holds::list))
        .routes(routes!(holds::release))
        .routes(routes!(dbcreds::list_connections))
        .routes(routes!(dbcreds::put_connection, dbcreds::delete_connection))
        .routes(routes!(dbcreds::list_roles))
        .routes(routes!(dbcreds::put_role, dbcreds::delete_role))
        .routes(routes!(custody_api::list))
        .routes(routes!(custody_api::put, custody_api::delete))
        .routes(routes!(custody_api::reveal))
        .routes(routes!(tasks_api::create, tasks_api::list))
        .routes(routes!(tasks_api::show))
        .routes(routes!(tasks_api::assign))
        .routes(routes!(tasks_api::end))
        .routes(routes!(tasks_api::set_risk, tasks_api::list_risk))
        .routes(routes!(grants_api::approvals))
        .routes(routes!(grants_api::decide))
        // The same relationship routes for a named store: one handler each, documented once
        // (under the default store's path) and in docs/api.md.
        .route(
            "/v1/rebac/stores/{store}/model",
            axum::routing::put(rebac_api::put_model).get(rebac_api::get_model),
        )
        .route(
            "/v1/rebac/stores/{store}/tuples",
            axum::routing::post(rebac_api::write).get(rebac_api::read),
        )
        .route(
            "/v1/rebac/stores/{store}/check",
            axum::routing::post(rebac_api::check),
        )
        .route(
            "/v1/rebac/stores/{store}/batch-check",
            axum::routing::post(rebac_api::batch_check),
        )
        .route(
            "/v1/rebac/stores/{store}/expand",
            axum::routing::post(rebac_api::expand),
        )
        .route(
            "/v1/rebac/stores/{store}/list-objects",
            axum::routing::post(rebac_api::list_objects),
        )
        .route(
            "/v1/rebac/stores/{store}/list-users",
            axum::routing::post(rebac_api::list_users),
        )
        .route(
            "/v1/rebac/stores/{store}/changes",
            axum::routing::get(rebac_api::changes),
        )
        // OPA's data API takes a path of any depth, which OpenAPI cannot describe: routed here,
        // documented in docs/api.md.
        .route(
            "/v1/data/{*path}",
            axum::routing::post(policy_api::opa_data),
        );
    (public, authenticated)
}

fn api_routes(state: &Arc<AppState>) -> OpenApiRouter<Arc<AppState>> {
    let (public, authenticated) = route_table();
    // route_layer: the middleware runs only for requests that matched one of these routes,
    // so GET /v1/audit/checkpoint stays public while POST on the same path is authenticated.
    // Inside authentication (layers run outermost last-added first): the role is checked
    // before the handler reads the body, and the refusal is audited like any answer.
    let authenticated = authenticated
        .route_layer(middleware::from_fn(roles::require_route_role))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(state),
            auth::authenticate_and_audit,
        ));
    // Routes that take an agent's credential: a source that keeps failing is refused (429).
    let public = public.route_layer(middleware::from_fn_with_state(
        Arc::clone(state),
        limits::credential_routes,
    ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(public)
        .merge(authenticated)
}

/// The OpenAPI document, generated from the same route table the server uses.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (public, authenticated) = route_table();
    let mut doc = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(public)
        .merge(authenticated)
        .into_openapi();
    add_openapi_path(&mut doc);
    doc
}

/// The whole application router with its middleware stack.
pub fn router(state: Arc<AppState>, config: &ServerConfig) -> Router {
    let (api, mut doc) = api_routes(&state).split_for_parts();
    add_openapi_path(&mut doc);
    let doc_json = Arc::new(doc.to_pretty_json().unwrap_or_default());
    api.route(
        "/v1/openapi.json",
        axum::routing::get(move || {
            let doc = Arc::clone(&doc_json);
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    doc.as_str().to_owned(),
                )
            }
        }),
    )
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        ops::track,
    ))
    .layer(CatchPanicLayer::new())
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        config.request_timeout,
    ))
    .layer(DefaultBodyLimit::max(config.body_limit))
    .layer(RequestBodyLimitLayer::new(config.body_limit))
    .layer(middleware::from_fn(json_errors))
    .layer(middleware::from_fn(request_id))
    .with_state(state)
}

/// Documents `/v1/openapi.json` itself.
fn add_openapi_path(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{HttpMethod, PathItem, ResponseBuilder, path::OperationBuilder};
    let op = OperationBuilder::new()
        .summary(Some("This OpenAPI document"))
        .response(
            "200",
            ResponseBuilder::new().description("OpenAPI 3.1 JSON"),
        )
        .build();
    doc.paths.paths.insert(
        "/v1/openapi.json".into(),
        PathItem::new(HttpMethod::Get, op),
    );
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Gives error responses produced outside our handlers (limits, timeouts, panics) the
/// standard JSON shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_owned(),
        StatusCode::REQUEST_TIMEOUT => "request took too long".to_owned(),
        s => s.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut out = ApiError::new(status, error::code_for(status), message).into_response();
    for name in [header::WWW_AUTHENTICATE, header::ALLOW] {
        if let Some(v) = resp.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document lists every route the issue names, with the right methods.
    #[test]
    fn openapi_lists_every_route() {
        let doc = openapi();
        let json = serde_json::to_value(&doc).unwrap();
        let paths = &json["paths"];
        for (path, method) in [
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/v1/openapi.json", "get"),
            ("/v1/audit/entries", "get"),
            ("/v1/audit/checkpoint", "get"),
            ("/v1/audit/checkpoint", "post"),
            ("/v1/audit/key", "get"),
            ("/v1/audit/proof/inclusion", "get"),
            ("/v1/audit/proof/consistency", "get"),
            ("/v1/tokens", "get"),
            ("/v1/tokens", "post"),
            ("/v1/tokens/{id}", "delete"),
            ("/v1/whoami", "get"),
            ("/v1/entries", "get"),
            ("/v1/entries", "post"),
            ("/v1/entries/{id}", "get"),
            ("/v1/entries/{id}", "delete"),
            ("/bundle", "get"),
            ("/.well-known/openid-configuration", "get"),
            ("/keys", "get"),
            ("/v1/join-tokens", "post"),
            ("/v1/join", "post"),
            ("/v1/denylist", "post"),
            ("/v1/denylist", "get"),
            ("/v1/denylist/{kind}/{value}", "delete"),
            ("/v1/svid/whoami", "get"),
            ("/v1/ca", "get"),
            ("/v1/ca/rotate", "post"),
            ("/v1/ca/keys/{id}/revoke", "post"),
            ("/v1/federations", "get"),
            ("/v1/federations", "post"),
            ("/v1/federations/{trust_domain}", "put"),
            ("/v1/federations/{trust_domain}", "delete"),
            ("/v1/federations/{trust_domain}/refresh", "post"),
            ("/v1/federations/{trust_domain}/limits", "put"),
            ("/v1/policies", "get"),
            ("/v1/policies/{name}", "post"),
            ("/v1/policies/{name}", "get"),
            ("/v1/policies/{name}/rollback", "post"),
            ("/v1/policies/{name}/simulate", "post"),
            ("/v1/authorize", "post"),
            ("/access/v1/evaluation", "post"),
            ("/access/v1/evaluations", "post"),
            ("/v1/git/authorize", "post"),
            ("/v1/rebac/model", "put"),
            ("/v1/rebac/model", "get"),
            ("/v1/rebac/stores", "get"),
            ("/v1/rebac/tuples", "post"),
            ("/v1/rebac/tuples", "get"),
            ("/v1/rebac/check", "post"),
            ("/v1/rebac/batch-check", "post"),
            ("/v1/rebac/expand", "post"),
            ("/v1/rebac/list-objects", "post"),
            ("/v1/rebac/list-users", "post"),
            ("/v1/rebac/changes", "get"),
            ("/oauth2/token", "post"),
            ("/.well-known/oauth-authorization-server", "get"),
            ("/oauth2/introspect", "post"),
            ("/oauth2/revoke", "post"),
            ("/oauth2/keys", "get"),
            ("/v1/leases", "get"),
            ("/v1/leases/revoke", "post"),
            ("/v1/leases/renew", "post"),
            ("/v1/holds", "post"),
            ("/v1/holds", "get"),
            ("/v1/holds/{kind}/{value}", "delete"),
            ("/v1/databases", "get"),
            ("/v1/databases/{name}", "put"),
            ("/v1/databases/{name}", "delete"),
            ("/v1/database-roles", "get"),
            ("/v1/database-roles/{name}", "put"),
            ("/v1/database-roles/{name}", "delete"),
            ("/v1/agent/credentials/database/{role}", "post"),
            ("/v1/agent/leases/renew", "post"),
            ("/v1/agent/leases/revoke", "post"),
            ("/v1/agent/operations", "post"),
            ("/v1/tasks", "post"),
            ("/v1/tasks", "get"),
            ("/v1/tasks/{id}", "get"),
            ("/v1/tasks/{id}/agents", "post"),
            ("/v1/tasks/{id}/end", "post"),
            ("/v1/agent/tasks", "post"),
            ("/v1/agent/tasks/{id}/agents", "post"),
            ("/v1/agent/tasks/{id}/end", "post"),
            ("/v1/grants/requests", "post"),
            ("/v1/grants/requests/{id}", "get"),
            ("/v1/approvals", "get"),
            ("/v1/approvals/{id}", "post"),
            ("/v1/risk", "post"),
            ("/v1/risk", "get"),
            ("/v1/secrets", "get"),
            ("/v1/secrets/{name}", "put"),
            ("/v1/secrets/{name}", "delete"),
            ("/v1/secrets/{name}/reveal", "post"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path} missing");
        }
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    }
}
