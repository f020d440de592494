//! How an agent proves who it is to the broker: a JWT-SVID whose audience is this server's
//! issuer URL (`Authorization: Bearer …`, or a token exchange's `subject_token`), or its
//! X.509-SVID over mutual TLS. Never an API token, never a static password.
//!
//! A git push carries a different credential: a JWT-SVID for the audience
//! `git:<repository>` alone ([`git_push_svid`]), which the agent APIs refuse (wrong audience)
//! — so the git server that sees it cannot replay it anywhere else — and which is refused for
//! any other repository.
//!
//! An agent of a federated trust domain is held to its domain's [`FederationLimits`]: its
//! JWT-SVID's lifetime and issuer, and the agent route groups ([`Route`]) open to it.
//!
//! [`FederationLimits`]: identity::trust::FederationLimits

use identity::{SpiffeId, deny::DenyKind, jwt::JwtError, jwt::JwtSvidClaims};

pub(crate) use identity::trust::AgentRoute as Route;

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

/// The audience of the JWT-SVID an agent pushes to `repository` with.
pub(crate) fn git_audience(repository: &str) -> String {
    format!("git:{repository}")
}

/// Validates a JWT-SVID presented to this server for `route`: signature against the trust
/// domain's (or a federated domain's) bundle, audience = this server's issuer URL, expiry, the
/// denylist (identity, token id, holds), and for a federated agent its domain's limits.
pub(crate) fn jwt_svid(
    state: &AppState,
    token: &str,
    route: Route,
) -> Result<(Agent, JwtSvidClaims), Refused> {
    let (agent, claims) = validate_jwt_svid(state, token, &state.issuer)?;
    check_route(state, &agent.id, route)?;
    Ok((agent, claims))
}

/// Validates a push credential for `repository`: a JWT-SVID for the audience
/// `git:<repository>` and no other (a token that also names Warden's issuer would work on the
/// agent APIs too), checked as [`jwt_svid`] checks, with route [`Route::Git`].
pub(crate) fn git_push_svid(
    state: &AppState,
    token: &str,
    repository: &str,
) -> Result<Agent, Refused> {
    let audience = git_audience(repository);
    let (agent, claims) = validate_jwt_svid(state, token, &audience).map_err(|mut r| {
        if r.code == "invalid_jwt_svid" && r.reason.contains("audience") {
            r.reason = format!(
                "{}: a push credential is a JWT-SVID for audience `{audience}` alone (`warden svid jwt --audience {audience}`)",
                r.reason
            );
        }
        r
    })?;
    if let Some(other) = claims.aud.iter().find(|a| **a != audience) {
        return Err(Refused::new(
            "invalid_jwt_svid",
            format!(
                "a push credential must be for audience `{audience}` alone, and this one is also for `{other}`: a token the git server sees must not work anywhere else"
            ),
        ));
    }
    check_route(state, &agent.id, Route::Git)?;
    Ok(agent)
}

/// Refuses an agent of a federated trust domain on a route group its domain's limits do not
/// open (403 `federation_route_not_allowed`). Agents of this trust domain pass.
pub(crate) fn check_route(state: &AppState, id: &SpiffeId, route: Route) -> Result<(), Refused> {
    let trust = state.keyring.current();
    let td = id.trust_domain();
    match trust.federation_limits(&td) {
        None => Ok(()),
        Some(limits) => limits
            .check_route(&td, route)
            .map_err(|e| Refused::new(e.code(), e.to_string())),
    }
}

fn validate_jwt_svid(
    state: &AppState,
    token: &str,
    audience: &str,
) -> Result<(Agent, JwtSvidClaims), Refused> {
    let trust = state.keyring.current();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = state
        .jwt_validator
        .validate(token, audience, now, SKEW_SECS, |td| trust.jwt_bundle(td))
        .map_err(|e| {
            let reason = match e {
                JwtError::WrongAudience(_) => {
                    format!("audience `{audience}` is not in the token's audience")
                }
                other => other.to_string(),
            };
            Refused::new("invalid_jwt_svid", reason)
        })?;
    // A federated domain's JWT-SVIDs are held to its limits (lifetime, issuer).
    let td = claims.sub.trust_domain();
    if let Some(limits) = trust.federation_limits(&td) {
        limits
            .check_jwt_svid(&td, &claims, now, SKEW_SECS)
            .map_err(|e| Refused::new(e.code(), e.to_string()))?;
    }
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

/// The agent behind a request on `route`: its mutual-TLS X.509-SVID, else a JWT-SVID bearer
/// token. `Ok(None)` when it presented neither.
pub(crate) fn from_request(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    peer: &PeerSvid,
    route: Route,
) -> Result<Option<Agent>, Refused> {
    if let Some(agent) = from_peer(state, peer, route)? {
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
    jwt_svid(state, token.trim(), route).map(|(agent, _)| Some(agent))
}

/// The agent of a mutual-TLS connection on `route`, verified again now.
pub(crate) fn from_peer(
    state: &AppState,
    peer: &PeerSvid,
    route: Route,
) -> Result<Option<Agent>, Refused> {
    match &peer.0 {
        None => Ok(None),
        Some(Err(refusal)) => Err(Refused::new(refusal.code(), refusal.to_string())),
        Some(Ok(svid)) => {
            check_denied(state, &svid.id)?;
            check_route(state, &svid.id, route)?;
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
