//! OAuth 2.0 at the broker: Token Exchange (RFC 8693) at `POST /oauth2/token`, introspection
//! (RFC 7662) at `POST /oauth2/introspect`, revocation (RFC 7009) at `POST /oauth2/revoke`.
//!
//! An agent trades its JWT-SVID (or its X.509-SVID over mutual TLS) for a short-lived,
//! audience-bound, scope-limited access token in the RFC 9068 JWT profile, after the policy
//! decision point allows it. A token can be exchanged again for a narrower one for a sub-agent
//! (delegation): scopes, audiences, lifetime and task only ever narrow, the `act` claim
//! records every hop, and the chain is bounded. Every issuance is a lease, recorded before the
//! token leaves; every refusal is recorded with its OAuth error.
//!
//! Access tokens are signed with the trust domain's access-token key, never the JWT-SVID key
//! (RFC 8725 §3.12), and validated only against the access-token keys, which resource servers
//! find at `GET /oauth2/keys` (the `jwks_uri` of the RFC 8414 metadata).

use std::{collections::BTreeSet, sync::Arc};

use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use broker::{
    lease::{Engine, LeaseId},
    scope::{self, Asked, Grant, ScopeSet},
};
use identity::{
    SpiffeId,
    access::{AccessTokenClaims, Audience},
    deny::DenyKind,
};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde_json::{Map, Value, json};

use crate::{
    AppState,
    agent_auth::{self, SKEW_SECS},
    auth::{Caller, Role},
    error::ApiError,
    mtls::PeerSvid,
    now_ms,
    policy_api::{Question, ResourceRef, evaluate},
};

/// The token-exchange grant type.
pub(crate) const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token type URIs.
const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The broker's settings.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Lifetime of an access token.
    pub token_ttl: std::time::Duration,
    /// Longest any token lives (bounds how far back replicas read revocations at start).
    pub max_token_ttl: std::time::Duration,
    /// Most actors in a delegation chain.
    pub delegation_depth: usize,
    /// The scopes tokens may carry; any other is `invalid_scope`.
    pub scopes: BTreeSet<String>,
    /// The policy package that decides issuance.
    pub policy_package: String,
    /// First wait before retrying a failed upstream revocation; doubles each time, up to
    /// five minutes.
    pub retry_base: std::time::Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            token_ttl: std::time::Duration::from_secs(300),
            max_token_ttl: std::time::Duration::from_secs(3600),
            delegation_depth: 3,
            scopes: BTreeSet::new(),
            policy_package: "broker".into(),
            retry_base: std::time::Duration::from_secs(2),
        }
    }
}

/// An OAuth error response (RFC 6749 §5.2).
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "access_denied" => StatusCode::FORBIDDEN,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            error,
            description: description_chars(&description.into()),
        }
    }

    fn from_api(e: &ApiError) -> Self {
        match e.status() {
            // The ledger or the store: the body says which, and that nothing was done.
            StatusCode::SERVICE_UNAVAILABLE => {
                Self::new("temporarily_unavailable", e.body().message)
            }
            StatusCode::INTERNAL_SERVER_ERROR => Self::new("server_error", e.body().message),
            _ => Self::new("access_denied", e.body().message),
        }
    }
}

/// RFC 6749 §5.2: `error_description` holds only %x20-21 / %x23-5B / %x5D-7E — printable
/// ASCII without `"` and `\`. Quotes become `'`, a backslash `/`, anything else `?`.
fn description_chars(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            axum::Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        no_store(resp.headers_mut());
        resp
    }
}

/// RFC 6749 §5.1: token responses are never cached.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// An `application/x-www-form-urlencoded` body.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !form {
            return Err(OAuthError::new(
                "invalid_request",
                "the body must be application/x-www-form-urlencoded (RFC 6749 §4.1.3)",
            ));
        }
        Ok(Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    /// A parameter that may appear at most once (RFC 6749 §3.2).
    fn one(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut found = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = found.next();
        if found.next().is_some() {
            return Err(OAuthError::new(
                "invalid_request",
                format!("parameter `{name}` is repeated"),
            ));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.one(name)?.ok_or_else(|| {
            OAuthError::new("invalid_request", format!("parameter `{name}` is required"))
        })
    }

    /// A parameter that may repeat (`audience`, `resource`).
    fn many(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An RFC 8693 §2.1 token exchange request.
// Only in the OpenAPI document: `token` reads the form itself (`Form`), since OAuth parameters
// are checked one by one and some repeat.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the form in the OpenAPI document; `Form` parses it"
)]
pub(crate) struct TokenExchangeForm {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    grant_type: String,
    /// A JWT-SVID for this server's issuer URL, or an access token issued here (delegation);
    /// leave out over mutual TLS, when the client certificate is the subject.
    subject_token: Option<String>,
    /// `urn:ietf:params:oauth:token-type:jwt` or `urn:ietf:params:oauth:token-type:access_token`.
    subject_token_type: Option<String>,
    /// The sub-agent's JWT-SVID, when delegating.
    actor_token: Option<String>,
    /// `urn:ietf:params:oauth:token-type:jwt` when `actor_token` is given.
    actor_token_type: Option<String>,
    /// `urn:ietf:params:oauth:token-type:access_token` (the default) or `…:jwt`.
    requested_token_type: Option<String>,
    /// Audiences (RFC 8693), repeatable.
    audience: Option<Vec<String>>,
    /// Resource indicators (RFC 8707), repeatable.
    resource: Option<Vec<String>>,
    /// Space-separated scopes.
    scope: Option<String>,
    /// RFC 9396 authorization details, a JSON array as text.
    authorization_details: Option<String>,
    /// The task the token is for (Warden's parameter).
    task: Option<String>,
    /// A public client naming itself (RFC 6749 §2.3): the agent that would hold the token.
    client_id: Option<String>,
}

/// A token to introspect (RFC 7662 §2.1) or revoke (RFC 7009 §2.1).
// Only in the OpenAPI document: the handlers read the form itself (`Form`).
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the form in the OpenAPI document; `Form` parses it"
)]
pub(crate) struct TokenForm {
    /// The token.
    token: String,
    /// `access_token`; a hint, which may be left out.
    token_type_hint: Option<String>,
}

/// A subject token that validated: a JWT-SVID, or an access token this server issued.
enum Subject {
    Svid(agent_auth::Agent),
    Token {
        claims: Box<AccessTokenClaims>,
        lease: Box<store::LeaseRow>,
    },
}

/// Verifies an access token of this server: signature (with an access-token key, never a
/// JWT-SVID key), type, issuer, expiry. Warden is the token's issuer here, inspecting it for
/// someone else (introspection, a presented token, a subject token whose audience the new
/// token only narrows), so its audience is the caller's to use. A token that does not verify
/// is `invalid_request` (RFC 8693 §2.2.2).
fn verify_access_token(state: &AppState, token: &str) -> Result<AccessTokenClaims, OAuthError> {
    let trust = state.keyring.current();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    identity::access::validate_access_token(
        token,
        &state.issuer,
        Audience::IssuerInspection,
        now,
        SKEW_SECS,
        |kid| trust.access_token_key(kid),
    )
    .map_err(|e| OAuthError::new("invalid_request", e.to_string()))
}

/// The access-token keys as a JWK set (`use` `sig`): what a resource server validates Warden's
/// access tokens with (RFC 9068 §4, found through the RFC 8414 metadata's `jwks_uri`). The
/// JWT-SVID keys are not in it: they are at `/keys` and in the SPIFFE bundle.
#[utoipa::path(get, path = "/oauth2/keys", operation_id = "get_access_token_keys", tag = "broker",
    responses((status = 200, description = "JWK set of the access-token keys", content_type = "application/json")))]
pub(crate) async fn access_token_keys(
    State(state): State<Arc<AppState>>,
) -> crate::error::ApiJson<Value> {
    crate::error::ApiJson(state.keyring.current().access_token_jwks())
}

/// One that verified but was revoked is `invalid_grant` (RFC 6749 §5.2).
fn revoked(why: String) -> OAuthError {
    OAuthError::new("invalid_grant", why)
}

/// Whether a verified token is still live: its `jti` not denied and its lease active.
async fn token_lease(
    state: &AppState,
    claims: &AccessTokenClaims,
) -> Result<store::LeaseRow, OAuthError> {
    if state.denylist.denies(DenyKind::Jti, &claims.jti) {
        return Err(revoked(format!("token `{}` has been revoked", claims.jti)));
    }
    let lease = state
        .store
        .lease_by_handle(Engine::OAuth.as_str(), &claims.jti)
        .await
        // Not the token's fault: 503 `temporarily_unavailable`, logged, as the API's own.
        .map_err(|e| OAuthError::from_api(&e.into()))?
        .ok_or_else(|| revoked(format!("token `{}` has no lease", claims.jti)))?;
    if lease.state != "active" || lease.expires_ms <= now_ms() {
        return Err(revoked(format!("lease `{}` is {}", lease.id, lease.state)));
    }
    Ok(lease)
}

/// The holder of a verified token, and the agents before it in its chain (its subject, then
/// earlier actors first); ids that do not parse name nobody.
fn token_agents(claims: &AccessTokenClaims) -> (Option<SpiffeId>, Vec<SpiffeId>) {
    match SpiffeId::parse(&claims.client_id) {
        Ok(holder) => {
            let chain = delegation_chain(&claims.sub, &claims.actors(), &holder);
            (Some(holder), chain)
        }
        Err(_) => {
            let mut chain = vec![claims.sub.clone()];
            chain.extend(
                claims
                    .actors()
                    .iter()
                    .rev()
                    .filter_map(|a| SpiffeId::parse(a).ok()),
            );
            (None, chain)
        }
    }
}

/// Validates an access token of this server: signature, type, issuer, expiry, its lease still
/// active, and nobody in its chain (or its task) held or denied ([`AppState::barred`]). When
/// not: the OAuth error a subject token gets for it, with the reason.
pub(crate) async fn check_access_token(
    state: &AppState,
    token: &str,
) -> Result<(AccessTokenClaims, store::LeaseRow), OAuthError> {
    let claims = verify_access_token(state, token)?;
    let lease = token_lease(state, &claims).await?;
    let (holder, chain) = token_agents(&claims);
    let barred = state
        .barred(&crate::holds::Subjects {
            principal: holder.as_ref(),
            resource: None,
            delegation: &chain,
            task: claims.task.as_deref(),
        })
        // Holds that cannot be read: no verdict (503), never "active".
        .map_err(|e| OAuthError::from_api(&e))?;
    match barred {
        Some(b) => Err(revoked(b.reason())),
        None => Ok((claims, lease)),
    }
}

/// The outcome of a token exchange, for the ledger.
struct Exchange<'a> {
    subject: Option<String>,
    actor: Option<String>,
    form: &'a Form,
}

impl Exchange<'_> {
    /// Records a refusal (anonymous ones within the failed-authentication budget) and
    /// returns the error.
    async fn refuse(&self, state: &AppState, e: OAuthError) -> OAuthError {
        let known = self.subject.is_some();
        if known || state.auth_failures.admit().is_some() {
            let who = self
                .actor
                .clone()
                .or_else(|| self.subject.clone())
                .map_or_else(|| "anonymous".to_owned(), |s| format!("agent:{s}"));
            let _ = state
                .record(
                    NewEvent::new(
                        who,
                        "oauth.token_exchange",
                        Outcome::Denied,
                        OcsfClass::Authentication,
                    )
                    .field("error", e.error)
                    .field("error_description", e.description.clone())
                    .field("subject", self.subject.clone().unwrap_or_default())
                    .field("actor", self.actor.clone().unwrap_or_default())
                    .field("audience", json!(self.form.many("audience")))
                    .field("resource", json!(self.form.many("resource")))
                    .field(
                        "scope",
                        self.form
                            .one("scope")
                            .ok()
                            .flatten()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                )
                .await;
        }
        e
    }
}

/// OAuth 2.0 Token Exchange (RFC 8693): `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`,
/// `subject_token` (a JWT-SVID for this server's issuer URL, or an access token from here to
/// delegate; or none over mutual TLS, when the client certificate is the subject),
/// `subject_token_type`, optional `actor_token`/`actor_token_type` (the sub-agent's
/// JWT-SVID), `audience`/`resource` (RFC 8707, repeatable), `scope`, `authorization_details`
/// (RFC 9396), and Warden's `task`. Answers an RFC 9068 access token, or an RFC 6749 §5.2
/// error.
#[utoipa::path(post, path = "/oauth2/token", operation_id = "oauth_token", tag = "broker",
    request_body(content = TokenExchangeForm, content_type = "application/x-www-form-urlencoded",
        description = "RFC 8693 token exchange request"),
    responses((status = 200, description = "RFC 8693 §2.2.1 token response"), (status = 400, description = "RFC 6749 §5.2 error"), (status = 403, description = "access_denied")))]
pub(crate) async fn token(
    State(state): State<Arc<AppState>>,
    peer: PeerSvid,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match Form::parse(&headers, &body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let mut ex = Exchange {
        subject: None,
        actor: None,
        form: &form,
    };
    match exchange(&state, &peer, &mut ex).await {
        Ok(mut resp) => {
            no_store(resp.headers_mut());
            resp
        }
        Err(e) => ex.refuse(&state, e).await.into_response(),
    }
}

async fn exchange(
    state: &AppState,
    peer: &PeerSvid,
    ex: &mut Exchange<'_>,
) -> Result<Response, OAuthError> {
    let form = ex.form;
    match form.one("grant_type")? {
        Some(GRANT_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant type `{other}` is not supported; use {GRANT_TOKEN_EXCHANGE}"),
            ));
        }
        None => {
            return Err(OAuthError::new(
                "invalid_request",
                "parameter `grant_type` is required",
            ));
        }
    }
    if let Some(t) = form.one("requested_token_type")? {
        if t != TYPE_ACCESS_TOKEN && t != TYPE_JWT {
            return Err(OAuthError::new(
                "invalid_request",
                format!(
                    "requested_token_type `{t}` is not issued here; ask for {TYPE_ACCESS_TOKEN}"
                ),
            ));
        }
    }
    // The client certificate, when there is one, is verified now and binds the token.
    let cert =
        agent_auth::from_peer(state, peer, agent_auth::Route::TokenExchange).map_err(|r| {
            if r.code == "federation_route_not_allowed" {
                OAuthError::new("access_denied", r.reason)
            } else {
                OAuthError::new("invalid_client", r.reason)
            }
        })?;

    // The subject.
    let subject = match form.one("subject_token")? {
        Some(token) => {
            let kind = form.required("subject_token_type")?;
            if kind != TYPE_JWT && kind != TYPE_ACCESS_TOKEN {
                return Err(OAuthError::new(
                    "invalid_request",
                    format!(
                        "subject_token_type `{kind}` is not accepted: use {TYPE_JWT} (a JWT-SVID or a Warden access token) or {TYPE_ACCESS_TOKEN}"
                    ),
                ));
            }
            subject_from_token(state, token, kind).await?
        }
        None => match &cert {
            Some(agent) => Subject::Svid(agent.clone()),
            None => {
                return Err(OAuthError::new(
                    "invalid_request",
                    "parameter `subject_token` is required (or present an X.509-SVID over mutual TLS)",
                ));
            }
        },
    };
    let (subject_id, parent) = match &subject {
        Subject::Svid(a) => (a.id.clone(), None),
        Subject::Token { claims, lease } => (claims.sub.clone(), Some((&**claims, &**lease))),
    };
    ex.subject = Some(subject_id.to_string());
    // A token bound to a client certificate (RFC 8705) is only exchanged by that certificate's
    // holder: otherwise a stolen bound token could be traded for an unbound one.
    if let Some((claims, _)) = parent {
        if let Some(bound) = claims.cnf.as_ref().and_then(|c| c.get("x5t#S256")) {
            let presented = cert.as_ref().and_then(|c| c.cert_thumbprint.as_deref());
            if presented != bound.as_str() {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "subject_token is bound to a client certificate (RFC 8705): exchange it over mutual TLS with that certificate",
                ));
            }
        }
    }

    // The actor (a sub-agent acting for the subject).
    let actor = match form.one("actor_token")? {
        Some(token) => {
            let kind = form.required("actor_token_type")?;
            if kind != TYPE_JWT {
                return Err(OAuthError::new(
                    "invalid_request",
                    format!(
                        "actor_token_type `{kind}` is not accepted: the actor token is a JWT-SVID ({TYPE_JWT})"
                    ),
                ));
            }
            let (agent, _) = agent_auth::jwt_svid(state, token, agent_auth::Route::TokenExchange)
                .map_err(|r| refused_token("actor_token", &r))?;
            ex.actor = Some(agent.id.to_string());
            Some(agent.id)
        }
        None if form.one("actor_token_type")?.is_some() => {
            return Err(OAuthError::new(
                "invalid_request",
                "actor_token_type without actor_token",
            ));
        }
        None => None,
    };
    // Who will hold the token, and its chain of actors (most recent first).
    let previous_actors: Vec<String> = parent.map(|(c, _)| c.actors()).unwrap_or_default();
    let holder = match (&actor, parent) {
        (Some(a), _) => a.clone(),
        (None, Some((c, _))) => SpiffeId::parse(&c.client_id).map_err(|e| {
            OAuthError::new("invalid_request", format!("subject_token client_id: {e}"))
        })?,
        (None, None) => subject_id.clone(),
    };
    // A public client may name itself (RFC 6749 §2.3): it must be the token's holder.
    if let Some(client_id) = form.one("client_id")? {
        if client_id != holder.as_str() {
            return Err(OAuthError::new(
                "invalid_request",
                format!(
                    "client_id `{client_id}` is not the agent that would hold the token (`{holder}`)"
                ),
            ));
        }
    }
    if let Some(agent) = &cert {
        if agent.id != holder {
            return Err(OAuthError::new(
                "invalid_request",
                format!(
                    "the client certificate is `{}` but the token would be held by `{holder}`",
                    agent.id
                ),
            ));
        }
    }
    let act = match (&actor, parent) {
        (Some(a), Some((c, _))) => Some(match &c.act {
            Some(prev) => json!({"sub": a.as_str(), "act": prev}),
            None => json!({"sub": a.as_str()}),
        }),
        (Some(a), None) => Some(json!({"sub": a.as_str()})),
        (None, Some((c, _))) => c.act.clone(),
        (None, None) => None,
    };

    // What is asked.
    let mut audiences = BTreeSet::new();
    for a in form.many("audience") {
        audiences.insert(
            scope::parse_audience(a)
                .map_err(|e| OAuthError::new("invalid_target", e.to_string()))?,
        );
    }
    for r in form.many("resource") {
        audiences.insert(
            scope::parse_resource(r)
                .map_err(|e| OAuthError::new("invalid_target", e.to_string()))?,
        );
    }
    if audiences.len() > scope::MAX_AUDIENCES {
        return Err(OAuthError::new(
            "invalid_target",
            format!("at most {} audiences and resources", scope::MAX_AUDIENCES),
        ));
    }
    let scopes = ScopeSet::parse(form.one("scope")?.unwrap_or_default())
        .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
    let unknown: Vec<&str> = scopes
        .iter()
        .filter(|s| !state.broker.scopes.contains(*s))
        .collect();
    if !unknown.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            format!(
                "unknown scope {}: this server issues {}",
                unknown.join(" "),
                state
                    .broker
                    .scopes
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ));
    }
    let details = match form.one("authorization_details")? {
        Some(text) => scope::parse_authorization_details(text)
            .map_err(|e| OAuthError::new("invalid_authorization_details", e.to_string()))?,
        None => Vec::new(),
    };
    let task = form.one("task")?.map(str::to_owned);
    if let Some(t) = &task {
        crate::holds::check_task_id(t)
            .map_err(|e| OAuthError::new("invalid_request", e.body().message))?;
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let wanted_exp = now + state.broker.token_ttl.as_secs() as i64;
    let grant = match parent {
        Some((c, _)) => {
            let parent_grant = Grant {
                scopes: ScopeSet::parse(&c.scope).unwrap_or_default(),
                audiences: c.aud.iter().cloned().collect(),
                expires_at: c.exp,
                depth: previous_actors.len(),
                task: c.task.clone(),
                authorization_details: match &c.authorization_details {
                    Some(Value::Array(items)) => items.clone(),
                    _ => Vec::new(),
                },
            };
            let asked = Asked {
                scopes: scopes.clone(),
                audiences: audiences.clone(),
                expires_at: wanted_exp,
                task: task.clone(),
                authorization_details: details.clone(),
            };
            // Re-exchanging without an actor only narrows; it adds no hop.
            let limit = if actor.is_some() {
                state.broker.delegation_depth
            } else {
                usize::MAX
            };
            let mut g = scope::narrow(&parent_grant, &asked, limit).map_err(|w| {
                let error = match w {
                    scope::Widening::Scope(_) => "invalid_scope",
                    scope::Widening::Audience(_) => "invalid_target",
                    scope::Widening::Details(_) => "invalid_authorization_details",
                    scope::Widening::Task { .. } | scope::Widening::Depth { .. } => "access_denied",
                };
                OAuthError::new(error, format!("delegation refused: {w}"))
            })?;
            if actor.is_none() {
                g.depth = parent_grant.depth;
            }
            g
        }
        None => {
            if actor.is_some() && state.broker.delegation_depth == 0 {
                return Err(OAuthError::new(
                    "access_denied",
                    "delegation is disabled (depth limit 0)",
                ));
            }
            Grant {
                scopes,
                audiences,
                expires_at: wanted_exp,
                depth: usize::from(actor.is_some()),
                task,
                authorization_details: details,
            }
        }
    };
    if grant.audiences.is_empty() {
        return Err(OAuthError::new(
            "invalid_target",
            "name the audience (or resource) the token is for",
        ));
    }
    if let Some(t) = grant.task.as_deref().filter(|t| state.held.task(t)) {
        return Err(OAuthError::new(
            "access_denied",
            format!("task `{t}` is on hold"),
        ));
    }
    // A token for a task is for an agent on that task, while it is open.
    if let Some(t) = grant.task.as_deref() {
        crate::tasks_api::task_of_agent(state, holder.as_str(), t)
            .await
            .map_err(|e| OAuthError::from_api(&e))?;
    }
    if grant.expires_at <= now {
        return Err(OAuthError::new(
            "invalid_request",
            "the subject token expires now",
        ));
    }

    // The policy decides, once per audience.
    let delegation = delegation_chain(&subject_id, &previous_actors, &holder);
    let record_actor = format!("agent:{holder}");
    let mut decisions = Vec::new();
    let mut decision_events = Vec::new();
    for aud in &grant.audiences {
        let mut attributes = Map::new();
        attributes.insert(
            "scope".into(),
            json!(grant.scopes.iter().collect::<Vec<_>>()),
        );
        attributes.insert("subject".into(), json!(subject_id.as_str()));
        attributes.insert("delegated".into(), json!(grant.depth > 0));
        attributes.insert(
            "authorization_types".into(),
            json!(
                grant
                    .authorization_details
                    .iter()
                    .filter_map(|d| d.get("type").cloned())
                    .collect::<Vec<_>>()
            ),
        );
        if let Some(t) = &grant.task {
            attributes.insert("task".into(), json!(t));
        }
        let evaluated = evaluate(
            state,
            &record_actor,
            Question {
                api: "oauth",
                package: Some(&state.broker.policy_package),
                principal: holder.as_str(),
                action: "exchange".into(),
                resource: ResourceRef {
                    kind: "Audience".into(),
                    id: aud.clone(),
                },
                attributes,
                delegation: delegation.clone(),
                task: grant.task.clone(),
                token: None,
            },
        )
        .await
        .map_err(|e| OAuthError::from_api(&e))?;
        if !evaluated.decision.is_allowed() {
            // Every decision made so far, this deny included, is recorded before the answer.
            let id = evaluated.id.clone();
            decision_events.push(evaluated.event);
            state
                .ledger
                .append_all(decision_events)
                .await
                .map_err(|e| OAuthError::from_api(&ApiError::audit_unavailable(&e)))?;
            return Err(OAuthError::new(
                "access_denied",
                match &evaluated.barred {
                    Some(b) => format!("{} (decision {id})", b.reason()),
                    None => format!("policy denied a token for audience `{aud}` (decision {id})"),
                },
            ));
        }
        decisions.push(evaluated.id);
        decision_events.push(evaluated.event);
    }

    // Issue: recorded, leased, then handed out.
    let lease_id = LeaseId::generate(Engine::OAuth, "token");
    let jti = format!("tok_{}", uuid::Uuid::new_v4().simple());
    let claims = AccessTokenClaims {
        iss: state.issuer.clone(),
        sub: subject_id.clone(),
        aud: grant.audiences.iter().cloned().collect(),
        client_id: holder.to_string(),
        iat: now,
        exp: grant.expires_at,
        jti: jti.clone(),
        scope: grant.scopes.to_param(),
        task: grant.task.clone(),
        act: act.clone(),
        cnf: cert
            .as_ref()
            .and_then(|c| c.cert_thumbprint.clone())
            .map(|t| json!({"x5t#S256": t})),
        authorization_details: (!grant.authorization_details.is_empty())
            .then(|| Value::Array(grant.authorization_details.clone())),
    };
    let signer = state.keyring.current().access.clone().ok_or_else(|| {
        OAuthError::new(
            "server_error",
            "this server has no access-token key to sign with",
        )
    })?;
    let token = signer
        .mint(&claims)
        .map_err(|e| OAuthError::new("server_error", e.to_string()))?;
    let scope_json = json!({
        "scope": claims.scope,
        "aud": claims.aud,
        "act": claims.act,
        "cnf": claims.cnf,
        "authorization_details": claims.authorization_details,
    });
    let issue_event = NewEvent::new(
        &record_actor,
        "oauth.token_issue",
        Outcome::Success,
        OcsfClass::Authentication,
    )
    .field("lease_id", lease_id.to_string())
    .field("jti", jti.clone())
    .field("subject", subject_id.to_string())
    .field("client_id", holder.to_string())
    .field("audience", json!(claims.aud))
    .field("scope", claims.scope.clone())
    .field("task", claims.task.clone().unwrap_or_default())
    .field("act", claims.act.clone().unwrap_or(Value::Null))
    .field("bound", claims.cnf.is_some())
    .field("exp", claims.exp)
    .field("decisions", json!(decisions))
    .field(
        "parent_lease",
        parent.map(|(_, l)| l.id.clone()).unwrap_or_default(),
    );
    let exp_ms = claims.exp.saturating_mul(1000);
    // The decisions, the issuance and the lease commit in one transaction (one commit, and a
    // lease exists exactly when its issuance is recorded), all before the token leaves.
    decision_events.push(issue_event);
    let lease = store::LeaseRow {
        id: lease_id.to_string(),
        agent: holder.to_string(),
        subject: subject_id.to_string(),
        task: claims.task.clone(),
        engine: Engine::OAuth.as_str().into(),
        scope: scope_json.to_string(),
        parent: parent.map(|(_, l)| l.id.clone()),
        handle: jti,
        issued_ms: now * 1000,
        expires_ms: exp_ms,
        max_expires_ms: exp_ms,
        state: "active".into(),
        revoke_reason: None,
        revoked_ms: None,
        attempts: 0,
        next_attempt_ms: None,
        last_error: None,
        alerted: false,
    };
    state
        .ledger
        .append_all_with(decision_events, vec![lease])
        .await
        .map_err(|e| OAuthError::from_api(&ApiError::audit_unavailable(&e)))?;
    // A hold (or a parent's revocation) that landed while this token was being issued: the
    // hold marks the agent before it revokes leases, so a lease committed after that
    // revocation sees the mark here and is revoked before the token leaves.
    let mut chain: Vec<SpiffeId> = vec![holder.clone(), subject_id.clone()];
    chain.extend(delegation.iter().cloned());
    let mut cut = chain
        .iter()
        .find(|id| agent_auth::check_denied(state, id).is_err())
        .map(|id| format!("agent `{id}` was put on hold or denied during issuance"));
    if cut.is_none() {
        if let Some(t) = grant.task.as_deref().filter(|t| state.held.task(t)) {
            cut = Some(format!("task `{t}` was put on hold during issuance"));
        }
    }
    if cut.is_none() {
        if let Some((_, parent_lease)) = parent {
            let now_parent = state
                .store
                .lease_get(&parent_lease.id)
                .await
                .map_err(|e| OAuthError::from_api(&e.into()))?;
            if now_parent.is_none_or(|p| p.state != "active") {
                cut = Some(format!(
                    "the subject token's lease `{}` was revoked during issuance",
                    parent_lease.id
                ));
            }
        }
    }
    if let Some(why) = cut {
        crate::leases::revoke(
            state,
            "system:broker",
            &store::LeaseSelector::Id(lease_id.to_string()),
            &why,
        )
        .await
        .map_err(|e| OAuthError::from_api(&e))?;
        return Err(OAuthError::new("access_denied", why));
    }
    Ok(axum::Json(json!({
        "access_token": token,
        "issued_token_type": TYPE_ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_in": claims.exp - now,
        "scope": claims.scope,
        "lease_id": lease_id.to_string(),
    }))
    .into_response())
}

/// `context.delegation` for a decision about `holder`: the agents before it in the chain,
/// the subject first, then the actors (`actors` as [`AccessTokenClaims::actors`] lists them,
/// the latest first).
fn delegation_chain(subject: &SpiffeId, actors: &[String], holder: &SpiffeId) -> Vec<SpiffeId> {
    let mut chain = vec![subject.clone()];
    chain.extend(actors.iter().rev().filter_map(|a| SpiffeId::parse(a).ok()));
    chain.retain(|id| id != holder);
    chain
}

/// An access token an agent presented to an enforcer (`/v1/authorize`'s `token`), verified and
/// held by the decision's principal.
pub(crate) struct Presented {
    /// The agents before the principal in its delegation chain, the subject first.
    pub(crate) chain: Vec<SpiffeId>,
    /// Its `jti` (recorded with the decision; never the token).
    pub(crate) jti: String,
    /// The task it is for.
    pub(crate) task: Option<String>,
    /// Why it is no longer live (revoked, its lease ended, or its lease unreadable): the
    /// decision refuses it after the hold check, so a token revoked by a hold is a recorded
    /// deny that names the hold.
    pub(crate) refused: Option<ApiError>,
}

/// A token an agent presented to an enforcer, checked for a decision about `principal`: it
/// must verify and be held by `principal` (else 400 `invalid_token`, no decision). Whether it
/// is live (as introspection checks) is returned for the decision, whose hold check comes
/// first.
pub(crate) async fn presented_token(
    state: &AppState,
    token: &str,
    principal: &str,
) -> Result<Presented, ApiError> {
    let invalid = |e: OAuthError| {
        if e.status == StatusCode::SERVICE_UNAVAILABLE {
            ApiError::new(e.status, "store_unavailable", e.description)
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_token",
                format!("token: {}", e.description),
            )
        }
    };
    let claims = verify_access_token(state, token).map_err(invalid)?;
    let (holder, chain) = token_agents(&claims);
    if holder.as_ref().is_none_or(|h| h.as_str() != principal) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            format!(
                "token: it is held by `{}`, not by the principal `{principal}`",
                claims.client_id
            ),
        ));
    }
    let refused = token_lease(state, &claims).await.err().map(invalid);
    Ok(Presented {
        chain,
        jti: claims.jti,
        task: claims.task,
        refused,
    })
}

/// RFC 8693 §2.2.2: an invalid or unacceptable subject or actor token is `invalid_request`;
/// one that was valid but has been revoked (its identity held or denied, its token revoked)
/// is `invalid_grant` (RFC 6749 §5.2: "revoked").
/// A federated agent on a route its domain does not open is `access_denied`.
fn refused_token(which: &str, r: &agent_auth::Refused) -> OAuthError {
    let error = match r.code {
        "agent_on_hold" | "credential_revoked" => "invalid_grant",
        "federation_route_not_allowed" => "access_denied",
        _ => "invalid_request",
    };
    OAuthError::new(error, format!("{which}: {}", r.reason))
}

async fn subject_from_token(
    state: &AppState,
    token: &str,
    kind: &str,
) -> Result<Subject, OAuthError> {
    // The header's `typ` says which: an access token from here, or a JWT-SVID.
    let is_access_token = token
        .split('.')
        .next()
        .and_then(|h| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| {
            h.get("typ")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
        })
        .is_some_and(|t| t == "at+jwt" || t == "application/at+jwt");
    if is_access_token || kind == TYPE_ACCESS_TOKEN {
        return match check_access_token(state, token).await {
            Ok((claims, lease)) => Ok(Subject::Token {
                claims: Box::new(claims),
                lease: Box::new(lease),
            }),
            Err(e) => Err(OAuthError::new(
                e.error,
                format!("subject_token: {}", e.description),
            )),
        };
    }
    let (agent, _) = agent_auth::jwt_svid(state, token, agent_auth::Route::TokenExchange)
        .map_err(|r| refused_token("subject_token", &r))?;
    Ok(Subject::Svid(agent))
}

/// RFC 7662 token introspection (role `enforcer` or `admin`): `token` (form) → `{"active":
/// true, …claims}` only while the token verifies, its lease is active and nobody in its chain
/// or its task is held; `{"active": false}` otherwise — revocation shows at once.
#[utoipa::path(post, path = "/oauth2/introspect", operation_id = "oauth_introspect",
    tag = "broker", security(("bearer" = [])),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded",
        description = "token=…&token_type_hint=access_token"),
    responses((status = 200, description = "RFC 7662 §2.2 introspection response")))]
pub(crate) async fn introspect(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Enforcer)?;
    let form = match Form::parse(&headers, &body) {
        Ok(f) => f,
        Err(e) => return Ok(e.into_response()),
    };
    let token = match form.required("token") {
        Ok(t) => t,
        Err(e) => return Ok(e.into_response()),
    };
    // A token whose lease cannot be read now is neither active nor inactive: 503, so the
    // resource server denies for now and asks again, instead of treating it as revoked.
    let mut unavailable = None;
    let (body, active, reason) = match check_access_token(&state, token).await {
        Ok((c, lease)) => {
            let mut out = json!({
                "active": true,
                "scope": c.scope,
                "client_id": c.client_id,
                "token_type": "Bearer",
                "exp": c.exp,
                "iat": c.iat,
                "sub": c.sub.as_str(),
                "aud": c.aud,
                "iss": c.iss,
                "jti": c.jti,
                "lease_id": lease.id,
            });
            for (k, v) in [
                ("task", c.task.clone().map(Value::from)),
                ("act", c.act.clone()),
                ("cnf", c.cnf.clone()),
                ("authorization_details", c.authorization_details.clone()),
            ] {
                if let Some(v) = v {
                    out[k] = v;
                }
            }
            (out, true, String::new())
        }
        Err(e) => {
            let reason = e.description.clone();
            if e.status == StatusCode::SERVICE_UNAVAILABLE {
                unavailable = Some(e);
            }
            (json!({"active": false}), false, reason)
        }
    };
    let event = NewEvent::new(
        caller.actor(),
        "oauth.introspect",
        if active {
            Outcome::Success
        } else if unavailable.is_some() {
            Outcome::Failure
        } else {
            Outcome::Denied
        },
        OcsfClass::Authentication,
    )
    .field("active", active)
    .field("jti", body.get("jti").cloned().unwrap_or(Value::Null))
    .field("reason", reason);
    // An inactive token is a refusal the resource server relays: recorded within its budget
    // of refusal entries (counted past it), like any other refusal of an enforcer's.
    if active || unavailable.is_some() {
        caller.record_for_request(&state, event).await?;
    } else {
        caller.record_refusal(&state, event).await?;
    }
    if let Some(e) = unavailable {
        return Ok(e.into_response());
    }
    let mut resp = axum::Json(body).into_response();
    no_store(resp.headers_mut());
    Ok(resp)
}

/// RFC 7009 token revocation: `token` (form). Holding the token is the authority to revoke
/// it; its lease and everything delegated from it are revoked and recorded. Unknown or
/// invalid tokens also get 200 (RFC 7009 §2.2).
#[utoipa::path(post, path = "/oauth2/revoke", operation_id = "oauth_revoke", tag = "broker",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded",
        description = "token=…"),
    responses((status = 200, description = "revoked, or nothing to revoke"), (status = 400, description = "RFC 6749 §5.2 error")))]
pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = match Form::parse(&headers, &body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let token = match form.required("token") {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let trust = state.keyring.current();
    // Expiry does not matter here: an expired token's lease is ended anyway.
    let claims = identity::access::validate_access_token(
        token,
        &state.issuer,
        Audience::IssuerInspection,
        0,
        0,
        |kid| trust.access_token_key(kid),
    );
    if let Ok(claims) = claims {
        // A lease that cannot be read is not "unknown": answering 200 would tell the holder
        // its token is dead while it still works. 503, which RFC 7009 §2.2.1 says a client
        // must take as "the token still exists", and retry.
        let lease = match state
            .store
            .lease_by_handle(Engine::OAuth.as_str(), &claims.jti)
            .await
        {
            Ok(lease) => lease,
            Err(e) => return OAuthError::from_api(&e.into()).into_response(),
        };
        if let Some(lease) = lease {
            let actor = format!("agent:{}", claims.client_id);
            if let Err(e) = crate::leases::revoke(
                &state,
                &actor,
                &store::LeaseSelector::Id(lease.id),
                "revoked by its holder (RFC 7009)",
            )
            .await
            {
                return OAuthError::from_api(&e).into_response();
            }
        }
    }
    let mut resp = StatusCode::OK.into_response();
    no_store(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_keep_to_the_rfc_6749_character_set() {
        assert_eq!(description_chars("scope \"a\" \\ é\n"), "scope 'a' / ??");
        let e = OAuthError::new("invalid_scope", "unknown [\"x\"]");
        assert!(
            e.description
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            OAuthError::new("access_denied", "x").status,
            StatusCode::FORBIDDEN
        );
    }
}
