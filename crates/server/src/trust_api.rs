//! The trust domain's signing keys (`/v1/ca`) and federated trust domains (`/v1/federations`)
//! over HTTP: admins rotate, revoke and federate; auditors read. Every change is recorded in
//! the ledger by the authority before it takes effect.

use std::sync::Arc;

use authority::{AuthorityError, BundleSource, FederationInfo, KeyInfo, RotateReport, RotateStep};
use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use identity::{TrustDomain, trust::FederationLimits};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ErrorBody},
};

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> Self {
        let status = match &e {
            AuthorityError::Store(_) => {
                return match e {
                    AuthorityError::Store(inner) => ApiError::from(inner),
                    other => ApiError::internal(other),
                };
            }
            AuthorityError::Ledger(_) => {
                tracing::error!(error = %e, "audit append failed; refusing the request");
                StatusCode::SERVICE_UNAVAILABLE
            }
            AuthorityError::Seal(_) | AuthorityError::Ca(_) => return ApiError::internal(e),
            AuthorityError::Bundle(_) | AuthorityError::Invalid(_) => StatusCode::BAD_REQUEST,
            AuthorityError::Fetch(_) => StatusCode::BAD_GATEWAY,
            AuthorityError::NotFound(_) => StatusCode::NOT_FOUND,
            AuthorityError::Conflict(_) => StatusCode::CONFLICT,
            _ => return ApiError::internal(e),
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// Lists the signing keys with their state and whether the bundle carries them (role
/// `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/ca", operation_id = "list_ca_keys",
    tag = "identity", security(("bearer" = [])),
    responses((status = 200, description = "signing keys, oldest first", body = Vec<serde_json::Value>)))]
pub(crate) async fn keys(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<KeyInfo>>, ApiError> {
    caller.require(Role::Auditor)?;
    Ok(ApiJson(state.authority.keys().await?))
}

/// Request to rotate.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotate {
    /// Prepare and activate in one step (default: one step — prepare new keys if there are
    /// none, else activate the prepared ones).
    #[serde(default)]
    now: bool,
}

/// Rotates the CA and the JWT-SVID key (role `admin`).
#[utoipa::path(post, path = "/v1/ca/rotate", operation_id = "rotate_ca",
    tag = "identity", security(("bearer" = [])), request_body = Rotate,
    responses((status = 200, description = "what changed", body = serde_json::Value), (status = 503, body = ErrorBody)))]
pub(crate) async fn rotate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<Rotate>,
) -> Result<ApiJson<RotateReport>, ApiError> {
    caller.require(Role::Admin)?;
    let step = if req.now {
        RotateStep::Now
    } else {
        RotateStep::Next
    };
    Ok(ApiJson(
        state.authority.rotate(&caller.actor(), step).await?,
    ))
}

/// Withdraws a prepared or retired key from the bundle at once (role `admin`): SVIDs it
/// signed stop verifying. The active key cannot be revoked; rotate first.
#[utoipa::path(post, path = "/v1/ca/keys/{id}/revoke", operation_id = "revoke_ca_key",
    tag = "identity", security(("bearer" = [])),
    params(("id" = String, Path, description = "key id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    state.authority.revoke_key(&caller.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Request to federate with another trust domain: exactly one of `bundle` (a SPIFFE bundle
/// document) or `bundle_url` (its bundle endpoint).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddFederation {
    /// The other trust domain, e.g. `partner.example`.
    trust_domain: String,
    /// Its bundle, as a JSON object (static: replaced only by an update).
    #[serde(default)]
    bundle: Option<serde_json::Value>,
    /// Its bundle endpoint (`https://…`), fetched now and refreshed per its refresh hint.
    #[serde(default)]
    bundle_url: Option<String>,
    /// PEM roots that authenticate the endpoint instead of the Web PKI.
    #[serde(default)]
    endpoint_ca_pem: Option<String>,
    /// What its agents may do here: `max_jwt_svid_ttl_secs` (default 3600), `issuer` (pinned
    /// `iss` of its JWT-SVIDs), `routes` (agent route groups open to them; default none).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    limits: Option<FederationLimits>,
}

fn trust_domain(name: &str) -> Result<TrustDomain, ApiError> {
    TrustDomain::parse(name).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_trust_domain",
            e.to_string(),
        )
    })
}

/// Federates with another trust domain (role `admin`): its SVIDs are accepted from then on and
/// its bundle is handed to workloads.
#[utoipa::path(post, path = "/v1/federations", operation_id = "add_federation",
    tag = "identity", security(("bearer" = [])), request_body = AddFederation,
    responses((status = 201, body = serde_json::Value), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub(crate) async fn add_federation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<AddFederation>,
) -> Result<(StatusCode, ApiJson<FederationInfo>), ApiError> {
    caller.require(Role::Admin)?;
    let td = trust_domain(&req.trust_domain)?;
    let source = match (req.bundle, req.bundle_url) {
        (Some(doc), None) if req.endpoint_ca_pem.is_none() => BundleSource::Static(doc.to_string()),
        (None, Some(url)) => BundleSource::Endpoint {
            url,
            ca_pem: req.endpoint_ca_pem,
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give exactly one of `bundle` or `bundle_url` (`endpoint_ca_pem` goes with `bundle_url`)",
            ));
        }
    };
    let info = state
        .authority
        .federation_add(&caller.actor(), td, source, req.limits)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(info)))
}

/// Replaces what agents of a federated trust domain may do here (role `admin`): the longest
/// JWT-SVID lifetime accepted from them, the issuer their JWT-SVIDs must carry, and the agent
/// route groups open to them. Fields left out take their defaults (3600 s, no issuer, no
/// route).
#[utoipa::path(put, path = "/v1/federations/{trust_domain}/limits", operation_id = "set_federation_limits",
    tag = "identity", security(("bearer" = [])),
    request_body(content = Object, description = "{\"max_jwt_svid_ttl_secs\", \"issuer\", \"routes\"}"),
    params(("trust_domain" = String, Path, description = "federated trust domain")),
    responses((status = 200, body = serde_json::Value), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_federation_limits(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(limits): ApiJson<FederationLimits>,
) -> Result<ApiJson<FederationInfo>, ApiError> {
    caller.require(Role::Admin)?;
    let td = trust_domain(&name)?;
    Ok(ApiJson(
        state
            .authority
            .federation_set_limits(&caller.actor(), &td, limits)
            .await?,
    ))
}

/// Lists federated trust domains (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/federations", operation_id = "list_federations",
    tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Vec<serde_json::Value>)))]
pub(crate) async fn federations(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<FederationInfo>>, ApiError> {
    caller.require(Role::Auditor)?;
    Ok(ApiJson(state.authority.federations().await?))
}

/// Request to replace a static federated bundle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateFederation {
    /// The new bundle document.
    bundle: serde_json::Value,
}

/// Replaces the static bundle of a federated trust domain (role `admin`).
#[utoipa::path(put, path = "/v1/federations/{trust_domain}", operation_id = "update_federation",
    tag = "identity", security(("bearer" = [])), request_body = UpdateFederation,
    params(("trust_domain" = String, Path, description = "federated trust domain")),
    responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update_federation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateFederation>,
) -> Result<ApiJson<FederationInfo>, ApiError> {
    caller.require(Role::Admin)?;
    let td = trust_domain(&name)?;
    Ok(ApiJson(
        state
            .authority
            .federation_update(&caller.actor(), &td, req.bundle.to_string())
            .await?,
    ))
}

/// Stops federating (role `admin`): the domain's SVIDs are refused from then on.
#[utoipa::path(delete, path = "/v1/federations/{trust_domain}", operation_id = "remove_federation",
    tag = "identity", security(("bearer" = [])),
    params(("trust_domain" = String, Path, description = "federated trust domain")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn remove_federation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let td = trust_domain(&name)?;
    state
        .authority
        .federation_remove(&caller.actor(), &td)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fetches a federated bundle from its endpoint now (role `admin`).
#[utoipa::path(post, path = "/v1/federations/{trust_domain}/refresh", operation_id = "refresh_federation",
    tag = "identity", security(("bearer" = [])),
    params(("trust_domain" = String, Path, description = "federated trust domain")),
    responses((status = 200, body = serde_json::Value), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub(crate) async fn refresh_federation(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<ApiJson<FederationInfo>, ApiError> {
    caller.require(Role::Admin)?;
    let td = trust_domain(&name)?;
    Ok(ApiJson(
        state
            .authority
            .federation_refresh(&caller.actor(), &td)
            .await?,
    ))
}
