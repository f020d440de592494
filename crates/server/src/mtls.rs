//! Agents authenticate to Warden's HTTPS listener with their X.509-SVID (mutual TLS).
//!
//! The TLS handshake asks for a client certificate but does not require one (API tokens still
//! work). A certificate that is presented must be an X.509-SVID that chains to the bundle of
//! its trust domain — this install's own or a federated one, as the keyring holds them now —
//! and neither its SPIFFE ID nor any serial in its chain may be on the denylist; otherwise the
//! handshake fails. Because a keep-alive connection outlives later revocations, the chain is
//! verified again, against the keyring and denylist of that moment, for every request that
//! relies on it ([`PeerSvid`]).

use std::{net::SocketAddr, sync::Arc};

use axum::{extract::FromRequestParts, http::request::Parts};
use identity::{
    deny::{DenyKind, Denylist},
    trust::Keyring,
    x509::{VerifiedX509Svid, X509Error},
};
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

/// Why a presented SVID is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvidRefusal {
    /// It does not verify (the X.509 error says why).
    Invalid(X509Error),
    /// Its SPIFFE ID or a serial in its chain is on the denylist.
    Revoked(String),
}

impl SvidRefusal {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            SvidRefusal::Invalid(e) => e.code(),
            SvidRefusal::Revoked(_) => "svid_revoked",
        }
    }
}

impl std::fmt::Display for SvidRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SvidRefusal::Invalid(e) => write!(f, "{e}"),
            SvidRefusal::Revoked(what) => write!(f, "{what} is on the denylist"),
        }
    }
}

/// Verifies a client's chain (leaf first) against the keyring and the denylist as they are now.
pub fn verify_peer_chain(
    keyring: &Keyring,
    denylist: &Denylist,
    chain: &[Vec<u8>],
) -> Result<VerifiedX509Svid, SvidRefusal> {
    let trust = keyring.current();
    let verified = identity::x509::verify_x509_svid(chain, time::OffsetDateTime::now_utc(), |td| {
        trust.x509_authorities(td)
    })
    .map_err(SvidRefusal::Invalid)?;
    if denylist.denies_id(&verified.id) {
        return Err(SvidRefusal::Revoked(format!("identity {}", verified.id)));
    }
    for serial in std::iter::once(&verified.serial_hex).chain(&verified.intermediate_serials_hex) {
        if denylist.denies(DenyKind::Serial, serial) {
            return Err(SvidRefusal::Revoked(format!("certificate serial {serial}")));
        }
    }
    Ok(verified)
}

/// The handshake-time check: optional client certificates, X.509-SVIDs only.
#[derive(Debug)]
pub struct SvidClientVerifier {
    keyring: Arc<Keyring>,
    denylist: Arc<Denylist>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SvidClientVerifier {
    /// A verifier reading the live keyring and denylist, with `provider`'s signature
    /// algorithms for the handshake signature.
    pub fn new(keyring: Arc<Keyring>, denylist: Arc<Denylist>, provider: &CryptoProvider) -> Self {
        Self {
            keyring,
            denylist,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for SvidClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // SPIFFE clients present their SVID whatever the hints; hints would also leak which
        // trust domains are federated.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chain: Vec<Vec<u8>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect();
        match verify_peer_chain(&self.keyring, &self.denylist, &chain) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(refusal) => {
                tracing::warn!(code = refusal.code(), reason = %refusal, "client SVID refused at the TLS handshake");
                Err(rustls::Error::InvalidCertificate(match refusal {
                    SvidRefusal::Revoked(_) => rustls::CertificateError::Revoked,
                    SvidRefusal::Invalid(X509Error::Expired { .. }) => {
                        rustls::CertificateError::Expired
                    }
                    SvidRefusal::Invalid(X509Error::NotYetValid { .. }) => {
                        rustls::CertificateError::NotValidYet
                    }
                    SvidRefusal::Invalid(X509Error::UnknownTrustDomain(_))
                    | SvidRefusal::Invalid(X509Error::Untrusted(_)) => {
                        rustls::CertificateError::UnknownIssuer
                    }
                    SvidRefusal::Invalid(_) => rustls::CertificateError::BadEncoding,
                }))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Who is on the other end of a connection: its address and, over mutual TLS, the
/// certificate chain it presented (leaf first).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// The client certificate chain, when one was presented and passed the handshake check.
    pub chain: Option<Arc<Vec<Vec<u8>>>>,
}

impl From<SocketAddr> for Peer {
    /// A plain-TCP peer: an address, no certificate.
    fn from(addr: SocketAddr) -> Self {
        Peer { addr, chain: None }
    }
}

/// The caller's X.509-SVID, verified again for this request; `None` when the connection is
/// not mutual TLS. A chain that no longer verifies (revoked since the handshake, its trust
/// domain no longer federated) is `Some(Err(..))`: the handler decides, and must refuse.
/// The second field is the leaf certificate's DER (empty without mutual TLS), for binding
/// tokens to it (RFC 8705).
#[derive(Debug)]
pub struct PeerSvid(
    pub Option<Result<VerifiedX509Svid, SvidRefusal>>,
    pub Vec<u8>,
);

impl FromRequestParts<Arc<crate::AppState>> for PeerSvid {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<crate::AppState>,
    ) -> Result<Self, Self::Rejection> {
        let chain = parts
            .extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .and_then(|info| info.0.chain.clone());
        let leaf = chain
            .as_ref()
            .and_then(|c| c.first().cloned())
            .unwrap_or_default();
        Ok(PeerSvid(
            chain.map(|chain| verify_peer_chain(&state.keyring, &state.denylist, &chain)),
            leaf,
        ))
    }
}

/// Who the caller is by its X.509-SVID.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SvidIdentity {
    /// The verified SPIFFE ID.
    spiffe_id: String,
    /// Its trust domain (this install's or a federated one).
    trust_domain: String,
    /// The leaf certificate's serial, lowercase hex.
    serial: String,
    /// End of the certificate's validity, Unix seconds.
    not_after: i64,
}

/// The caller's identity by its client certificate (mutual TLS; no API token): 401
/// `svid_required` without one, 403 with the reason when it no longer verifies or is denied.
#[utoipa::path(get, path = "/v1/svid/whoami", operation_id = "svid_whoami", tag = "identity",
    responses((status = 200, body = SvidIdentity), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn whoami(
    axum::extract::State(state): axum::extract::State<Arc<crate::AppState>>,
    PeerSvid(svid, _): PeerSvid,
) -> Result<crate::error::ApiJson<SvidIdentity>, crate::error::ApiError> {
    use axum::http::StatusCode;
    use ledger::{NewEvent, OcsfClass, Outcome};

    use crate::error::ApiError;
    match svid {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "svid_required",
            "present an X.509-SVID as the TLS client certificate (mutual TLS)",
        )),
        Some(Ok(v)) => Ok(crate::error::ApiJson(SvidIdentity {
            trust_domain: v.id.trust_domain().to_string(),
            spiffe_id: v.id.to_string(),
            serial: v.serial_hex,
            not_after: v.not_after.unix_timestamp(),
        })),
        Some(Err(refusal)) => {
            // Refused credentials are recorded, within the same budget as failed logins.
            if state.auth_failures.admit().is_some() {
                state
                    .record(
                        NewEvent::new(
                            "anonymous",
                            "svid.authenticate",
                            Outcome::Denied,
                            OcsfClass::Authentication,
                        )
                        .field("code", refusal.code())
                        .field("reason", refusal.to_string()),
                    )
                    .await?;
            }
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                refusal.code(),
                refusal.to_string(),
            ))
        }
    }
}
