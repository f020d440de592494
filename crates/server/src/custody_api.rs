//! Custody of upstream secrets (SaaS API keys, bot tokens): operators store and rotate them,
//! envelope-encrypted at rest; agents never receive them (the gateway will inject them into
//! upstream requests); an operator's read is recorded, with its reason, before the value
//! leaves.

use std::sync::Arc;

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use store::SecretRow;
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role},
    error::{ApiError, ApiJson, ApiQuery, ErrorBody},
    leases::check_reason,
    now_ms,
};

fn check_name(name: &str) -> Result<(), ApiError> {
    if broker::lease::is_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!(
                "secret name `{}` must be 1-63 of [a-z0-9_-]",
                name.escape_debug()
            ),
        ))
    }
}

fn custody_error(e: &broker::BrokerError) -> ApiError {
    match e {
        broker::BrokerError::InvalidSecret(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.code(), e.to_string()),
    }
}

/// A secret to store (a new version when the name exists: rotation).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutSecret {
    /// The value (1 B - 64 KiB of text). Never recorded, logged or shown in a listing.
    value: String,
}

/// A stored version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SecretVersion {
    name: String,
    version: i64,
    created_unix_ms: i64,
    created_by: String,
}

/// Stores (or rotates) an upstream secret (role `admin`): a new version sealed under a fresh
/// data key; recorded without its value.
#[utoipa::path(put, path = "/v1/secrets/{name}", operation_id = "put_secret",
    tag = "broker", security(("bearer" = [])), request_body = PutSecret,
    params(("name" = String, Path)),
    responses((status = 201, body = SecretVersion), (status = 400, body = ErrorBody)))]
pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutSecret>,
) -> Result<(StatusCode, ApiJson<SecretVersion>), ApiError> {
    caller.require(Role::Admin)?;
    check_name(&name)?;
    // A concurrent rotation may take the number first: then take the next.
    for _ in 0..5 {
        let version = state
            .store
            .secret_get(&name, None)
            .await?
            .map_or(1, |s| s.version + 1);
        let sealed =
            broker::custody::seal(state.authority.kek(), &name, version, req.value.as_bytes())
                .map_err(|e| custody_error(&e))?;
        state
            .record(
                NewEvent::new(
                    caller.actor(),
                    if version == 1 {
                        "secret.create"
                    } else {
                        "secret.rotate"
                    },
                    Outcome::Success,
                    OcsfClass::UserAccessManagement,
                )
                .field("name", name.clone())
                .field("version", version),
            )
            .await?;
        let row = SecretRow {
            name: name.clone(),
            version,
            dek_sealed: sealed.dek_sealed,
            value_sealed: sealed.value_sealed,
            created_unix_ms: now_ms(),
            created_by: caller.actor(),
        };
        match state.store.secret_put(&row).await {
            Ok(()) => {
                return Ok((
                    StatusCode::CREATED,
                    ApiJson(SecretVersion {
                        name,
                        version,
                        created_unix_ms: row.created_unix_ms,
                        created_by: row.created_by,
                    }),
                ));
            }
            Err(store::StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("secret `{name}` is being rotated concurrently; try again"),
    ))
}

/// Lists every version of every secret, without values (role `auditor` or `admin`).
#[utoipa::path(get, path = "/v1/secrets", operation_id = "list_secrets",
    tag = "broker", security(("bearer" = [])),
    responses((status = 200, body = Vec<SecretVersion>)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<SecretVersion>>, ApiError> {
    caller.require(Role::Auditor)?;
    Ok(ApiJson(
        state
            .store
            .secret_versions()
            .await?
            .into_iter()
            .map(|r| SecretVersion {
                name: r.name,
                version: r.version,
                created_unix_ms: r.created_unix_ms,
                created_by: r.created_by,
            })
            .collect(),
    ))
}

/// Why an operator reads a secret.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reveal {
    /// Why (1-512 characters), recorded before the value is returned.
    reason: String,
    /// A version (default: the latest).
    #[serde(default)]
    version: Option<i64>,
}

/// A secret's value.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Revealed {
    name: String,
    version: i64,
    value: String,
}

/// Reads a secret's value (role `admin`): recorded first (`secret.read`, with the reason).
#[utoipa::path(post, path = "/v1/secrets/{name}/reveal", operation_id = "reveal_secret",
    tag = "broker", security(("bearer" = [])), request_body = Reveal,
    params(("name" = String, Path)),
    responses((status = 200, body = Revealed), (status = 404, body = ErrorBody)))]
pub(crate) async fn reveal(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<Reveal>,
) -> Result<ApiJson<Revealed>, ApiError> {
    caller.require(Role::Admin)?;
    check_name(&name)?;
    check_reason(&req.reason)?;
    let row = state
        .store
        .secret_get(&name, req.version)
        .await?
        .ok_or_else(|| no_secret(&name, req.version))?;
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "secret.read",
                Outcome::Success,
                OcsfClass::ApiActivity,
            )
            .field("name", name.clone())
            .field("version", row.version)
            .field("reason", req.reason),
        )
        .await?;
    let value = broker::custody::open(
        state.authority.kek(),
        &name,
        row.version,
        &broker::custody::Sealed {
            dek_sealed: row.dek_sealed,
            value_sealed: row.value_sealed,
        },
    )
    .map_err(|e| custody_error(&e))?;
    let value = String::from_utf8(value.to_vec()).map_err(ApiError::internal)?;
    Ok(ApiJson(Revealed {
        name,
        version: row.version,
        value,
    }))
}

/// 404 for a secret, or one version of it, that does not exist.
fn no_secret(name: &str, version: Option<i64>) -> ApiError {
    ApiError::not_found(match version {
        Some(version) => format!("no version {version} of secret `{name}`"),
        None => format!("no secret `{name}`"),
    })
}

/// Why a secret is deleted.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    /// Why (1-512 characters).
    reason: String,
}

/// Deletes every version of a secret (role `admin`); recorded first.
#[utoipa::path(delete, path = "/v1/secrets/{name}", operation_id = "delete_secret",
    tag = "broker", security(("bearer" = [])),
    params(("name" = String, Path), DeleteQuery),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    check_name(&name)?;
    check_reason(&q.reason)?;
    if state.store.secret_get(&name, None).await?.is_none() {
        return Err(no_secret(&name, None));
    }
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "secret.delete",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("name", name.clone())
            .field("reason", q.reason),
        )
        .await?;
    state.store.secret_delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_secret_or_version_is_named_plainly() {
        assert_eq!(
            no_secret("slack-bot", None).body().message,
            "no secret `slack-bot`"
        );
        let missing = no_secret("slack-bot", Some(9));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.body().code, "not_found");
        assert_eq!(missing.body().message, "no version 9 of secret `slack-bot`");
    }
}
