//! API token management (role `admin`).

use std::sync::Arc;

use axum::{
    Extension,
    extract::{Path, State},
    http::StatusCode,
};
use ledger::{NewEvent, OcsfClass, Outcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role, generate_token},
    error::{ApiError, ApiJson, ErrorBody},
    now_ms,
};

/// Request to create a token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// Unique name: 1–64 characters of `[a-z0-9._-]`.
    name: String,
    /// Role of the new token.
    role: Role,
}

/// A token's public description (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenInfo {
    id: String,
    name: String,
    role: String,
    created_unix_ms: i64,
    revoked_unix_ms: Option<i64>,
}

/// A created token: the secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    id: String,
    name: String,
    role: Role,
    /// The bearer secret. Store it now: Warden keeps only its hash.
    token: String,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Creates an API token.
#[utoipa::path(post, path = "/v1/tokens", operation_id = "create_api_token",
    tag = "tokens", security(("bearer" = [])), request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, ApiJson<CreatedToken>), ApiError> {
    caller.require(Role::Admin)?;
    if !valid_name(&req.name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!(
                "token name `{}` must be 1-64 characters of [a-z0-9._-]",
                req.name
            ),
        ));
    }
    let new = generate_token();
    state
        .store
        .token_insert(&store::ApiTokenRow {
            id: new.id.clone(),
            name: req.name.clone(),
            role: req.role.as_str().to_owned(),
            token_hash: new.hash,
            created_unix_ms: now_ms(),
            revoked_unix_ms: None,
        })
        .await?;
    let event = NewEvent::new(
        caller.actor(),
        "token.create",
        Outcome::Success,
        OcsfClass::UserAccessManagement,
    )
    .field("token_id", new.id.clone())
    .field("name", req.name.clone())
    .field("role", req.role.as_str());
    if let Err(e) = state.record(event).await {
        // Not recorded, so it must not exist: take it back before refusing.
        let _ = state.store.token_revoke(&new.id, now_ms(), "admin").await;
        return Err(e);
    }
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken {
            id: new.id,
            name: req.name,
            role: req.role,
            token: new.secret,
        }),
    ))
}

/// Lists API tokens.
#[utoipa::path(get, path = "/v1/tokens", operation_id = "list_api_tokens",
    tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenInfo>)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<Vec<TokenInfo>>, ApiError> {
    caller.require(Role::Admin)?;
    let rows = state.store.token_list().await?;
    Ok(ApiJson(
        rows.into_iter()
            .map(|r| TokenInfo {
                id: r.id,
                name: r.name,
                role: r.role,
                created_unix_ms: r.created_unix_ms,
                revoked_unix_ms: r.revoked_unix_ms,
            })
            .collect(),
    ))
}

/// Revokes an API token. The last active admin token cannot be revoked (no lock-out).
#[utoipa::path(delete, path = "/v1/tokens/{id}", operation_id = "revoke_api_token",
    tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let rows = state.store.token_list().await?;
    let active = |r: &&store::ApiTokenRow| r.revoked_unix_ms.is_none();
    let target = rows
        .iter()
        .filter(active)
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no active token `{id}`")))?;
    let admins = rows
        .iter()
        .filter(active)
        .filter(|r| r.role == "admin")
        .count();
    if target.role == "admin" && admins <= 1 {
        return Err(last_admin());
    }
    let event = |outcome, detail: &'static str| {
        NewEvent::new(
            caller.actor(),
            "token.revoke",
            outcome,
            OcsfClass::UserAccessManagement,
        )
        .field("token_id", id.clone())
        .field("name", target.name.clone())
        .field("detail", detail)
    };
    // Record first, then revoke: a revocation that could not be recorded does not happen.
    state.record(event(Outcome::Success, "requested")).await?;
    // The store re-checks "not the last admin" atomically: two admins revoking each other at
    // the same moment cannot both succeed.
    match state.store.token_revoke(&id, now_ms(), "admin").await? {
        store::TokenRevoke::Revoked => {
            state.tokens.clear();
            Ok(StatusCode::NO_CONTENT)
        }
        outcome => {
            let (detail, err) = match outcome {
                store::TokenRevoke::LastOfRole => ("refused: last active admin", last_admin()),
                _ => (
                    "refused: not found",
                    ApiError::not_found(format!("no active token `{id}`")),
                ),
            };
            state.record(event(Outcome::Failure, detail)).await?;
            Err(err)
        }
    }
}

fn last_admin() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "last_admin",
        "refusing to revoke the last active admin token; create another admin token first",
    )
}

/// Who am I?
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WhoAmI {
    token_id: String,
    name: String,
    role: Role,
}

/// Describes the calling token.
#[utoipa::path(get, path = "/v1/whoami", operation_id = "whoami", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(Extension(caller): Extension<Caller>) -> ApiJson<WhoAmI> {
    ApiJson(WhoAmI {
        token_id: caller.token_id,
        name: caller.name,
        role: caller.role,
    })
}
