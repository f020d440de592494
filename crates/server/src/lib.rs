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
pub use deny::DenylistFeed;
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
    /// The policy packages' revision in the change feed (`None`: not loaded yet).
    policy_revision: tokio::sync::Mutex<Option<i64>>,
    /// Where the denylist stands in the change feed.
    deny_feed: deny::DenylistFeed,
    /// The registration entries, indexed and kept current from the change feed; shared with
    /// the Workload API.
    registry: Arc<workload::registry::Registry>,
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
        let registry = Arc::new(workload::registry::Registry::new(Arc::clone(&store)));
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
            policy_revision: tokio::sync::Mutex::new(None),
            deny_feed: deny::DenylistFeed::default(),
            registry,
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

/// How long the change feed keeps its rows: an hour.
pub const CHANGE_RETENTION_MS: i64 = 3_600_000;

impl AppState {
    /// The registration entries this server keeps current, for the Workload API to share.
    pub fn registry(&self) -> Arc<workload::registry::Registry> {
        Arc::clone(&self.registry)
    }

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

    /// Loads what decisions depend on at start (what [`AppState::refresh_policies`] does) and
    /// logs how long each part took (`start-up:` lines), so an operator sees where a slow
    /// start goes.
    pub async fn load(&self) -> Result<(), store::StoreError> {
        self.catch_up(true).await
    }

    /// Brings what decisions depend on up to the store: the policy packages in force, the
    /// registration entries, holds, open tasks and risk scores (each applying the changes
    /// since the revision it holds: one indexed query per kind when nothing changed), and,
    /// alongside them, the relationship stores (models and tuple changes). Called at start
    /// and every second (replicas follow).
    pub async fn refresh_policies(&self) -> Result<(), store::StoreError> {
        self.catch_up(false).await
    }

    async fn catch_up(&self, start_up: bool) -> Result<(), store::StoreError> {
        let done = |part: &str, timed: std::time::Instant| {
            if start_up {
                let ms = u64::try_from(timed.elapsed().as_millis()).unwrap_or(u64::MAX);
                tracing::info!(ms, "start-up: {part} loaded");
            }
        };
        let rest = async {
            let timed = std::time::Instant::now();
            self.refresh_packages().await?;
            done("policy packages", timed);
            let timed = std::time::Instant::now();
            self.registry.sync().await?;
            done(
                &format!("{} registration entries", self.registry.stats().entries),
                timed,
            );
            let timed = std::time::Instant::now();
            self.refresh_holds().await?;
            self.refresh_tasks().await?;
            done("holds, open tasks and risk scores", timed);
            Ok(())
        };
        let relations = async {
            let timed = std::time::Instant::now();
            self.relations.refresh(self.store.as_ref()).await?;
            done("relationship stores", timed);
            Ok(())
        };
        let (rest, relations) = tokio::join!(rest, relations);
        rest.and(relations)
    }

    /// Re-reads the policy packages when the change feed says one was pushed (or the first
    /// time): packages are few, and only a new version is compiled.
    async fn refresh_packages(&self) -> Result<(), store::StoreError> {
        let mut revision = self.policy_revision.lock().await;
        let head = match *revision {
            None => {
                self.metrics.cache_reloaded(store::ChangeKind::Policy);
                self.store.change_head().await?
            }
            Some(held) => {
                let page = self
                    .store
                    .changes_since(store::ChangeKind::Policy, held, u32::MAX)
                    .await?;
                if page.floor > held {
                    // Fell behind the feed: read them all.
                    self.metrics.cache_reloaded(store::ChangeKind::Policy);
                    self.store.change_head().await?
                } else if let Some(last) = page.rows.last() {
                    self.metrics
                        .changes_applied(store::ChangeKind::Policy, page.rows.len());
                    last.rev
                } else {
                    return Ok(());
                }
            }
        };
        self.pdp.refresh(self.store.as_ref()).await?;
        *revision = Some(head);
        Ok(())
    }

    /// Deletes change-feed rows older than [`CHANGE_RETENTION_MS`] (a replica that has not
    /// followed the feed for that long reads its caches in full). Called once a minute.
    pub async fn prune_changes(&self) -> Result<u64, store::StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .store
                .changes_prune(now_ms() - CHANGE_RETENTION_MS, 10_000)
                .await?;
            total += n;
            if n < 10_000 {
                return Ok(total);
            }
        }
    }

    /// This install's trust domain.
    pub fn trust_domain(&self) -> &identity::TrustDomain {
        &self.trust_domain
    }
}

/// The trust domain's SPIFFE bundle (SPIFFE Trust Domain and Bundle spec §4: a JWK set whose
/// keys have `use` `x509-svid` (the root certificate in `x5c`) or `jwt-svid`) — every key that
/// is prepared, active, or retired within its overlap — with `spiffe_sequence` and
/// `spiffe_refresh_hint`. Other trust domains federate by fetching this.
#[utoipa::path(get, path = "/bundle", operation_id = "get_bundle", tag = "identity",
    responses((status = 200, description = "SPIFFE bundle (JWK set)", content_type = "application/json")))]
async fn bundle(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> error::ApiJson<serde_json::Value> {
    error::ApiJson(state.keyring.current().own().to_json())
}

/// OpenID Connect discovery, so cloud IAM (AWS, Azure, GCP workload identity federation) and
/// any OIDC library can verify agent JWT-SVIDs with nothing but this document and its keys.
#[utoipa::path(get, path = "/.well-known/openid-configuration", operation_id = "get_openid_configuration",
    tag = "identity",
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
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", operation_id = "get_oauth_authorization_server_metadata",
    tag = "broker",
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
#[utoipa::path(get, path = "/keys", operation_id = "get_jwt_svid_keys", tag = "identity",
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
        .routes(routes!(entries::create_batch))
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
        // The same relationship routes for a named store: the same handlers, documented again
        // with a `store` path parameter.
        .routes(in_named_store(routes!(
            rebac_api::put_model,
            rebac_api::get_model
        )))
        .routes(in_named_store(routes!(rebac_api::write, rebac_api::read)))
        .routes(in_named_store(routes!(rebac_api::check)))
        .routes(in_named_store(routes!(rebac_api::batch_check)))
        .routes(in_named_store(routes!(rebac_api::expand)))
        .routes(in_named_store(routes!(rebac_api::list_objects)))
        .routes(in_named_store(routes!(rebac_api::list_users)))
        .routes(in_named_store(routes!(rebac_api::changes)));
    // OPA's data API takes a document path of any depth.
    let authenticated = route_wildcard(
        authenticated,
        "/v1/data/{*path}",
        routes!(policy_api::opa_data),
    );
    (public, authenticated)
}

/// A router of the route table.
type ApiRouter = OpenApiRouter<Arc<AppState>>;

/// What `routes!` makes: the handlers' schemas, their documented paths, and the method router.
type ApiMethodRouter = utoipa_axum::router::UtoipaMethodRouter<Arc<AppState>>;

/// The default relationship store's routes (`/v1/rebac/…`) for a named store: served at
/// `/v1/rebac/stores/{store}/…` by the same handlers, documented with the same schemas, a
/// `store` path parameter and their own operation ids (`…_in_store`).
fn in_named_store((schemas, paths, method_router): ApiMethodRouter) -> ApiMethodRouter {
    use utoipa::openapi::{
        Required,
        path::{ParameterBuilder, ParameterIn, Paths},
        schema::{ObjectBuilder, Type},
    };
    let store = ParameterBuilder::new()
        .name("store")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(
            "The relationship store: 1 to 64 lowercase letters, digits, `-` or `_` \
             (`default` is the store of the `/v1/rebac/…` routes without one).",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[a-z0-9_-]{1,64}$")),
        ))
        .build();
    let mut named = Paths::new();
    for (path, mut item) in paths.paths {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            op.operation_id = op.operation_id.take().map(|id| format!("{id}_in_store"));
            op.parameters
                .get_or_insert_with(Vec::new)
                .insert(0, store.clone());
        }
        let rest = path.strip_prefix("/v1/rebac").unwrap_or(&path);
        named
            .paths
            .insert(format!("/v1/rebac/stores/{{store}}{rest}"), item);
    }
    (schemas, named, method_router)
}

/// Serves `method_router` at `route`, an axum path with a wildcard (`{*name}`, any number of
/// segments), and documents it as its `utoipa::path` says (`{name}`: OpenAPI describes a path
/// parameter as one segment, so the handler's documentation says that it may hold `/`).
fn route_wildcard(
    router: ApiRouter,
    route: &str,
    (schemas, paths, method_router): ApiMethodRouter,
) -> ApiRouter {
    let mut router = router.route(route, method_router);
    let doc = router.get_openapi_mut();
    for (path, item) in paths.paths {
        match doc.paths.paths.get_mut(&path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                doc.paths.paths.insert(path, item);
            }
        }
    }
    doc.components
        .get_or_insert_with(utoipa::openapi::Components::new)
        .schemas
        .extend(schemas);
    router
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
        .operation_id(Some("get_openapi"))
        .tag("ops")
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
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Every `(method, path)` an axum router serves, read from its `Debug` form (axum has no other
    /// way to list routes): the route table's paths and, for each, the methods with a handler.
    /// HEAD, which axum answers with the GET handler, is left out. Paths are axum's (`{*rest}`).
    pub(crate) fn served_routes<S>(router: &Router<S>) -> Vec<(axum::http::Method, String)> {
        let text = format!("{router:?}");
        // Only the router's own routes, not its fallback router's.
        let text = text.split("fallback_router:").next().unwrap_or_default();
        let endpoint =
            regex::Regex::new(r"RouteId\((\d+)\): MethodRouter\(MethodRouter \{ (.*?), fallback:")
                .unwrap();
        let slot = regex::Regex::new(r"(\w+): (\w+)").unwrap();
        let path = regex::Regex::new(r#"RouteId\((\d+)\): "([^"]*)""#).unwrap();
        let paths: std::collections::HashMap<&str, &str> = path
            .captures_iter(text)
            .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
            .collect();
        let mut out = Vec::new();
        for c in endpoint.captures_iter(text) {
            let id = c.get(1).unwrap().as_str();
            let path = paths
                .get(id)
                .unwrap_or_else(|| panic!("route {id} has no path in {text}"));
            for s in slot.captures_iter(c.get(2).unwrap().as_str()) {
                let (method, handler) = (&s[1], &s[2]);
                if handler != "None" && method != "head" {
                    out.push((
                        method.to_uppercase().parse::<axum::http::Method>().unwrap(),
                        (*path).to_owned(),
                    ));
                }
            }
        }
        assert!(
            !paths.is_empty() && out.len() >= paths.len(),
            "axum's Debug form of a router changed; read routes from {text}"
        );
        out.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
        out
    }

    /// `(method, path)` of every operation in the document.
    fn documented(doc: &serde_json::Value) -> BTreeMap<(String, String), serde_json::Value> {
        let mut out = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method.parse::<axum::http::Method>().is_ok() {
                    out.insert((method.to_uppercase(), path.clone()), op.clone());
                }
            }
        }
        out
    }

    /// A route that the router serves and the document leaves out, or the reverse, fails here:
    /// a new route cannot go undocumented. A wildcard route (`{*path}`) is documented as one
    /// parameter (`{path}`).
    #[test]
    fn the_document_lists_exactly_the_routes_served() {
        let (public, authenticated) = route_table();
        let (router, _) = public.merge(authenticated).split_for_parts();
        let mut served: BTreeSet<(String, String)> = served_routes(&router)
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.replace("{*", "{")))
            .collect();
        // Added by `router` beside the table, with the document it serves.
        served.insert(("GET".to_owned(), "/v1/openapi.json".to_owned()));
        let doc = serde_json::to_value(openapi()).unwrap();
        let documented: BTreeSet<(String, String)> = documented(&doc).into_keys().collect();
        assert!(served.len() > 100, "{served:?}");
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "served, not documented: {undocumented:?}"
        );
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(unserved.is_empty(), "documented, not served: {unserved:?}");
    }

    /// Client generators name their functions after operation ids: each operation has one, in
    /// snake case, and no two are the same.
    #[test]
    fn operation_ids_are_unique_snake_case_names() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let snake = regex::Regex::new("^[a-z][a-z0-9]*(_[a-z0-9]+)*$").unwrap();
        let mut seen = BTreeMap::new();
        for ((method, path), op) in documented(&doc) {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(snake.is_match(id), "{method} {path}: operationId `{id}`");
            if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId `{id}` is used by {other} and {method} {path}");
            }
        }
        assert_eq!(seen["revoke_api_token"], "DELETE /v1/tokens/{id}");
        assert_eq!(
            seen["rebac_check_in_store"],
            "POST /v1/rebac/stores/{store}/check"
        );
    }

    /// Each `{name}` in a path is a required `in: path` parameter of each of its operations,
    /// and every other parameter is a query parameter (the document once put query parameters
    /// in the path).
    #[test]
    fn path_parameters_are_the_path_template_and_the_rest_are_queries() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let template = regex::Regex::new(r"\{([^}]+)\}").unwrap();
        for ((method, path), op) in documented(&doc) {
            let expected: BTreeSet<&str> = template
                .captures_iter(&path)
                .map(|c| c.get(1).unwrap().as_str())
                .collect();
            let mut in_path = BTreeSet::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str().unwrap() {
                    "path" => {
                        assert_eq!(p["required"], true, "{method} {path}: {name}");
                        assert!(in_path.insert(name), "{method} {path}: {name} twice");
                    }
                    "query" => assert!(
                        !expected.contains(name),
                        "{method} {path}: {name} is in the path"
                    ),
                    other => panic!("{method} {path}: {name} is in {other}"),
                }
            }
            assert_eq!(in_path, expected, "{method} {path}");
        }
        let entries = &documented(&doc)[&("GET".to_owned(), "/v1/audit/entries".to_owned())];
        let names: Vec<_> = entries["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
            .collect();
        assert_eq!(names, [("from", "query"), ("limit", "query")]);
    }

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
            ("/v1/entries/batch", "post"),
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
            ("/v1/data/{path}", "post"),
            ("/v1/rebac/stores/{store}/model", "put"),
            ("/v1/rebac/stores/{store}/model", "get"),
            ("/v1/rebac/stores/{store}/tuples", "post"),
            ("/v1/rebac/stores/{store}/tuples", "get"),
            ("/v1/rebac/stores/{store}/check", "post"),
            ("/v1/rebac/stores/{store}/batch-check", "post"),
            ("/v1/rebac/stores/{store}/expand", "post"),
            ("/v1/rebac/stores/{store}/list-objects", "post"),
            ("/v1/rebac/stores/{store}/list-users", "post"),
            ("/v1/rebac/stores/{store}/changes", "get"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path} missing");
        }
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    }
}
