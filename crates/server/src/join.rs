//! Join tokens: how an agent on another host obtains its first X.509-SVID. An admin generates
//! a one-time token for a SPIFFE ID; the agent sends it with a certificate signing request for
//! a key it keeps; Warden burns the token and returns the SVID and the trust bundle. A reused,
//! expired or unknown token is refused and recorded.

use std::sync::Arc;

use axum::{Extension, extract::State, http::StatusCode};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use identity::SpiffeId;
use ledger::{NewEvent, OcsfClass, Outcome};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use store::{JoinConsume, JoinTokenRow};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::{Caller, Role, hash_token},
    error::{ApiError, ApiJson, ErrorBody},
    now_ms,
};

/// Join token lifetime bounds, seconds.
const TOKEN_TTL: std::ops::RangeInclusive<i64> = 60..=7 * 24 * 3600;
/// Lifetime of an SVID obtained with a join token.
const SVID_TTL: time::Duration = time::Duration::hours(1);
/// Largest CSR accepted, bytes.
const MAX_CSR: usize = 16 * 1024;

/// Request for a join token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateJoinToken {
    /// SPIFFE ID (this trust domain, with a path) the token may be exchanged for.
    spiffe_id: String,
    /// Token lifetime, seconds (60–604,800; default 600).
    ttl_secs: Option<i64>,
}

/// A created join token: the secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedJoinToken {
    token: String,
    spiffe_id: String,
    expires_unix_ms: i64,
}

/// Generates a one-time join token (role `admin`).
#[utoipa::path(post, path = "/v1/join-tokens", operation_id = "create_join_token",
    tag = "identity", security(("bearer" = [])), request_body = CreateJoinToken,
    responses((status = 201, body = CreatedJoinToken), (status = 400, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateJoinToken>,
) -> Result<(StatusCode, ApiJson<CreatedJoinToken>), ApiError> {
    caller.require(Role::Admin)?;
    let id = crate::entries::workload_id(&state, &req.spiffe_id)?;
    let ttl = req.ttl_secs.unwrap_or(600);
    if !TOKEN_TTL.contains(&ttl) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_ttl",
            format!(
                "ttl_secs {ttl} is outside {}..={}",
                TOKEN_TTL.start(),
                TOKEN_TTL.end()
            ),
        ));
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret = format!("wjt_{}", URL_SAFE_NO_PAD.encode(raw));
    let now = now_ms();
    let row = JoinTokenRow {
        token_hash: hash_token(&secret),
        spiffe_id: id.to_string(),
        created_unix_ms: now,
        expires_unix_ms: now.saturating_add(ttl.saturating_mul(1000)),
        used_unix_ms: None,
    };
    // Record first: a token whose creation is not in the ledger must not exist.
    state
        .record(
            NewEvent::new(
                caller.actor(),
                "join_token.create",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("spiffe_id", row.spiffe_id.clone())
            .field("expires_unix_ms", row.expires_unix_ms)
            .secret("token", &secret),
        )
        .await?;
    state.store.join_token_insert(&row).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedJoinToken {
            token: secret,
            spiffe_id: row.spiffe_id,
            expires_unix_ms: row.expires_unix_ms,
        }),
    ))
}

/// Exchange request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Join {
    /// The join token (`wjt_…`).
    token: String,
    /// PKCS#10 certificate signing request (PEM) for an ECDSA P-256 key.
    csr: String,
}

/// The agent's first identity.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Joined {
    spiffe_id: String,
    /// The X.509-SVID, PEM: the leaf, then any intermediates up to (not including) the root.
    svid_pem: String,
    /// The trust bundle (root certificates), PEM.
    bundle_pem: String,
    expires_unix_ms: i64,
}

fn refused(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// Exchanges a join token and a CSR for an X.509-SVID (no bearer token: the join token is the
/// credential, usable once).
#[utoipa::path(post, path = "/v1/join", operation_id = "join", tag = "identity", request_body = Join,
    responses((status = 200, body = Joined), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn join(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<Join>,
) -> Result<ApiJson<Joined>, ApiError> {
    // Bad requests are refused before the token is spent.
    if req.csr.len() > MAX_CSR {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_csr",
            "the CSR is too large",
        ));
    }
    identity::ca::check_csr(&req.csr)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_csr", e.to_string()))?;
    let verdict = state
        .store
        .join_token_consume(&hash_token(&req.token), now_ms())
        .await?;
    let event = |outcome, reason: &str| {
        NewEvent::new(
            "anonymous",
            "join.exchange",
            outcome,
            OcsfClass::Authentication,
        )
        .field("reason", reason)
        .secret("token", &req.token)
    };
    let row = match verdict {
        JoinConsume::Consumed(row) => row,
        JoinConsume::AlreadyUsed(row) => {
            state
                .record(event(Outcome::Denied, "reused").field("spiffe_id", row.spiffe_id))
                .await?;
            return Err(refused(
                "join_token_used",
                "this join token was already used",
            ));
        }
        JoinConsume::Expired(row) => {
            state
                .record(event(Outcome::Denied, "expired").field("spiffe_id", row.spiffe_id))
                .await?;
            return Err(refused("join_token_expired", "this join token has expired"));
        }
        _ => {
            // Unknown tokens are unauthenticated noise: budgeted like failed logins.
            if state.auth_failures.admit().is_some() {
                state
                    .record(event(Outcome::Denied, "unknown token"))
                    .await?;
            }
            return Err(refused("invalid_join_token", "unknown join token"));
        }
    };
    let id = SpiffeId::parse(&row.spiffe_id).map_err(ApiError::internal)?;
    if state.denylist.denies_id(&id) {
        state
            .record(event(Outcome::Denied, "identity denied").field("spiffe_id", id.to_string()))
            .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "identity_denied",
            "this identity is on the denylist",
        ));
    }
    let trust = state.keyring.current();
    let (der, serial, not_after) = trust
        .ca
        .issue_x509_svid_for_csr(&id, &req.csr, SVID_TTL, time::OffsetDateTime::now_utc())
        .map_err(ApiError::internal)?;
    let serial_hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    let expires_unix_ms = not_after.unix_timestamp().saturating_mul(1000);
    // Nothing is handed out before its issuance is durable in the ledger.
    state
        .record(
            NewEvent::new(
                id.to_string(),
                "join.exchange",
                Outcome::Success,
                OcsfClass::Authentication,
            )
            .field("spiffe_id", id.to_string())
            .field("serial", serial_hex)
            .field("expires_unix_ms", expires_unix_ms)
            .secret("token", &req.token),
        )
        .await?;
    Ok(ApiJson(Joined {
        spiffe_id: id.to_string(),
        svid_pem: std::iter::once(der)
            .chain(trust.ca.svid_chain())
            .map(|d| identity::ca::cert_pem(&d))
            .collect(),
        bundle_pem: trust.own().x509_pem(),
        expires_unix_ms,
    }))
}
