//! How an agent proves who it is to the broker: a JWT-SVID whose audience is this server's
//! issuer URL (`Authorization: Bearer …`, or a token exchange's `subject_token`), or its
//! X.509-SVID over mutual TLS. Never an API token, never a static password.

use identity::{SpiffeId, deny::DenyKind, jwt::JwtSvidClaims};

use crate::{AppState, holds::Cut, mtls::PeerSvid};

/// Clock skew allowed when validating agent tokens, seconds.
pub(crate) const SKEW_SECS: i64 = 30;

/// An agent, authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    /// Its SPIFFE ID.
    pub(crate) id: SpiffeId,
    /// `jwt_svid` or `x509_svid`.
    pub(crate) via: &'static str,
    /// RFC 8705 `x5t#S256` of the client certificate, when over mutual TLS.
    pub(crate) cert_thumbprint: Option<String>,
}

/// Why an agent credential was refused: a stable code and a reason.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub(crate) code: &'static str,
    pub(crate) reason: String,
}

impl Refused {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Validates a JWT-SVID presented to this server: signature against the trust domain's (or a
/// federated domain's) bundle, audience = this server's issuer URL, expiry, and the denylist
/// (identity, token id, holds).
pub(crate) fn jwt_svid(state: &AppState, token: &str) -> Result<(Agent, JwtSvidClaims), Refused> {
    let trust = state.keyring.current();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = state
        .jwt_validator
        .validate(token, &state.issuer, now, SKEW_SECS, |td| {
            trust.jwt_bundle(td)
        })
        .map_err(|e| Refused::new("invalid_jwt_svid", e.to_string()))?;
    check_denied(state, &claims.sub)?;
    if state.denylist.denies(DenyKind::Jti, &claims.jti) {
        return Err(Refused::new(
            "credential_revoked",
            format!("JWT-SVID `{}` is on the denylist", claims.jti),
        ));
    }
    Ok((
        Agent {
            id: claims.sub.clone(),
            via: "jwt_svid",
            cert_thumbprint: None,
        },
        claims,
    ))
}

/// Refuses an identity on the denylist or on hold (itself or its vendor), as
/// [`AppState::identity_cut`] says.
pub(crate) fn check_denied(state: &AppState, id: &SpiffeId) -> Result<(), Refused> {
    match state.identity_cut(id) {
        None => Ok(()),
        Some(Cut::AgentHold) => Err(Refused::new(
            "agent_on_hold",
            format!("agent `{id}` is on hold"),
        )),
        Some(Cut::VendorHold(vendor)) => Err(Refused::new(
            "agent_on_hold",
            format!("agent `{id}` is on hold (vendor `{vendor}`)"),
        )),
        Some(Cut::Denylisted) => Err(Refused::new(
            "credential_revoked",
            format!("identity `{id}` is on the denylist"),
        )),
    }
}

/// The agent behind a request: its mutual-TLS X.509-SVID, else a JWT-SVID bearer token.
/// `Ok(None)` when it presented neither.
pub(crate) fn from_request(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    peer: &PeerSvid,
) -> Result<Option<Agent>, Refused> {
    if let Some(agent) = from_peer(state, peer)? {
        return Ok(Some(agent));
    }
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Refused::new(
                "invalid_jwt_svid",
                "the Authorization header must be `Bearer <JWT-SVID>`",
            )
        })?;
    jwt_svid(state, token.trim()).map(|(agent, _)| Some(agent))
}

/// The agent of a mutual-TLS connection, verified again now.
pub(crate) fn from_peer(state: &AppState, peer: &PeerSvid) -> Result<Option<Agent>, Refused> {
    match &peer.0 {
        None => Ok(None),
        Some(Err(refusal)) => Err(Refused::new(refusal.code(), refusal.to_string())),
        Some(Ok(svid)) => {
            check_denied(state, &svid.id)?;
            Ok(Some(Agent {
                id: svid.id.clone(),
                via: "x509_svid",
                cert_thumbprint: Some(svid_thumbprint(peer)),
            }))
        }
    }
}

/// RFC 8705 §3.1 `x5t#S256`: base64url SHA-256 of the leaf certificate's DER.
fn svid_thumbprint(peer: &PeerSvid) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use sha2::{Digest, Sha256};
    URL_SAFE_NO_PAD.encode(Sha256::digest(&peer.1))
}
