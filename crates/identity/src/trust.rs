//! Trust bundles and the keyring every verification path reads.
//!
//! A [`TrustBundle`] is one trust domain's published keys in the SPIFFE bundle format
//! (SPIFFE_Trust_Domain_and_Bundle.md §4): X.509 authorities (`use` = `x509-svid`, one
//! certificate in `x5c`) and JWT authorities (`use` = `jwt-svid`, with a `kid`).
//!
//! A [`Keyring`] holds the current [`Trust`]: the active signing keys, this trust domain's
//! bundle (every key that is prepared, active, or retired but still inside its overlap), the
//! access-token keys (published apart from the bundle: they sign OAuth access tokens, not
//! SVIDs), and the bundles of federated trust domains with the [`FederationLimits`] on what
//! their agents may do here. It is replaced whole when keys rotate or a federated bundle or its
//! limits change, and watchers are told, so Workload API streams can push the new bundle.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    TrustDomain,
    access::AccessTokenSigner,
    ca::Ca,
    jwt::{JwtBundle, JwtPublicKey, JwtSigner, JwtSvidClaims},
};

/// Largest bundle document accepted, bytes.
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;
/// Most keys accepted in one bundle.
pub const MAX_BUNDLE_KEYS: usize = 256;

/// Why a bundle document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleError {
    /// Not a JSON object with a `keys` array, or too large.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// An `x509-svid` key without exactly one parseable CA certificate in `x5c`.
    #[error("bad x509-svid key #{index}: {reason}")]
    BadX509Key {
        /// Position in `keys`.
        index: usize,
        /// What was wrong.
        reason: String,
    },
    /// A `jwt-svid` key that is not a usable JWK with a `kid`.
    #[error("bad jwt-svid key #{index}: {reason}")]
    BadJwtKey {
        /// Position in `keys`.
        index: usize,
        /// What was wrong.
        reason: String,
    },
    /// The bundle holds no key this install can use.
    #[error("the bundle holds no x509-svid or jwt-svid key")]
    Empty,
}

impl BundleError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Malformed(_) => "bundle_malformed",
            BundleError::BadX509Key { .. } => "bundle_bad_x509_key",
            BundleError::BadJwtKey { .. } => "bundle_bad_jwt_key",
            BundleError::Empty => "bundle_empty",
        }
    }
}

/// One trust domain's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<Vec<u8>>,
    jwt: JwtBundle,
    sequence: Option<u64>,
    refresh_hint_secs: Option<u64>,
}

impl TrustBundle {
    /// A bundle of these authorities (DER certificates) and JWT keys.
    pub fn new(
        trust_domain: TrustDomain,
        x509_authorities: Vec<Vec<u8>>,
        jwt_keys: impl IntoIterator<Item = JwtPublicKey>,
    ) -> Self {
        let jwt = JwtBundle::new(trust_domain.clone(), jwt_keys);
        Self {
            trust_domain,
            x509_authorities,
            jwt,
            sequence: None,
            refresh_hint_secs: None,
        }
    }

    /// Sets `spiffe_sequence` and `spiffe_refresh_hint` for publication.
    pub fn with_sequence(mut self, sequence: u64, refresh_hint_secs: u64) -> Self {
        self.sequence = Some(sequence);
        self.refresh_hint_secs = Some(refresh_hint_secs);
        self
    }

    /// Whose keys these are.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 authorities, DER.
    pub fn x509_authorities(&self) -> &[Vec<u8>] {
        &self.x509_authorities
    }

    /// The X.509 authorities back to back, as the Workload API carries a bundle.
    pub fn x509_der_concat(&self) -> Vec<u8> {
        self.x509_authorities.concat()
    }

    /// The X.509 authorities as PEM.
    pub fn x509_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(|der| crate::ca::cert_pem(der))
            .collect()
    }

    /// The JWT authorities.
    pub fn jwt(&self) -> &JwtBundle {
        &self.jwt
    }

    /// The refresh hint, seconds, if the publisher gave one.
    pub fn refresh_hint_secs(&self) -> Option<u64> {
        self.refresh_hint_secs
    }

    /// The JWT authorities as a JWKS (`use` = `jwt-svid`).
    pub fn jwt_jwks(&self) -> Value {
        serde_json::json!({
            "keys": self.jwt.keys().map(JwtPublicKey::to_jwk).collect::<Vec<_>>()
        })
    }

    /// The SPIFFE bundle document (a JWK set).
    pub fn to_json(&self) -> Value {
        let mut keys: Vec<Value> = self
            .x509_authorities
            .iter()
            .map(|der| x509_jwk(der))
            .collect();
        keys.extend(self.jwt.keys().map(JwtPublicKey::to_jwk));
        let mut doc = serde_json::json!({ "keys": keys });
        if let Some(seq) = self.sequence {
            doc["spiffe_sequence"] = Value::from(seq);
        }
        if let Some(hint) = self.refresh_hint_secs {
            doc["spiffe_refresh_hint"] = Value::from(hint);
        }
        doc
    }

    /// Parses a SPIFFE bundle document published by `trust_domain`. Keys with another `use`
    /// are ignored, as the specification says; keys of a known use that this install cannot
    /// use (not EC P-256, not a CA certificate) are errors, so an operator learns at once
    /// rather than when a token fails.
    pub fn parse(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        if json.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::Malformed(format!(
                "larger than {MAX_BUNDLE_BYTES} bytes"
            )));
        }
        let doc: Value = serde_json::from_slice(json)
            .map_err(|e| BundleError::Malformed(format!("not JSON: {e}")))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| BundleError::Malformed("no `keys` array".into()))?;
        if keys.len() > MAX_BUNDLE_KEYS {
            return Err(BundleError::Malformed(format!(
                "more than {MAX_BUNDLE_KEYS} keys"
            )));
        }
        let number = |name: &str| match doc.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| BundleError::Malformed(format!("`{name}` is not a number"))),
        };
        let sequence = number("spiffe_sequence")?;
        let refresh_hint_secs = number("spiffe_refresh_hint")?;
        let mut x509 = Vec::new();
        let mut jwt = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            match key.get("use").and_then(Value::as_str) {
                Some("x509-svid") => x509.push(
                    parse_x509_key(key)
                        .map_err(|reason| BundleError::BadX509Key { index, reason })?,
                ),
                Some("jwt-svid") => {
                    jwt.push(
                        JwtPublicKey::from_jwk(key).map_err(|e| BundleError::BadJwtKey {
                            index,
                            reason: e.to_string(),
                        })?,
                    )
                }
                _ => {}
            }
        }
        if x509.is_empty() && jwt.is_empty() {
            return Err(BundleError::Empty);
        }
        let mut bundle = Self::new(trust_domain, x509, jwt);
        bundle.sequence = sequence;
        bundle.refresh_hint_secs = refresh_hint_secs;
        Ok(bundle)
    }
}

/// A CA certificate as an `x509-svid` bundle key: its public key as JWK members plus the
/// certificate in `x5c`.
fn x509_jwk(der: &[u8]) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut jwk = serde_json::json!({
        "use": "x509-svid",
        "x5c": [STANDARD.encode(der)],
    });
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
        let spki = cert.public_key();
        let point = spki.subject_public_key.data.as_ref();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.to_id_string());
        match (curve.as_deref(), point.len()) {
            (Some("1.2.840.10045.3.1.7"), 65) => {
                jwk["kty"] = Value::from("EC");
                jwk["crv"] = Value::from("P-256");
                jwk["x"] =
                    Value::from(URL_SAFE_NO_PAD.encode(point.get(1..33).unwrap_or_default()));
                jwk["y"] =
                    Value::from(URL_SAFE_NO_PAD.encode(point.get(33..65).unwrap_or_default()));
            }
            (Some("1.3.132.0.34"), 97) => {
                jwk["kty"] = Value::from("EC");
                jwk["crv"] = Value::from("P-384");
                jwk["x"] =
                    Value::from(URL_SAFE_NO_PAD.encode(point.get(1..49).unwrap_or_default()));
                jwk["y"] =
                    Value::from(URL_SAFE_NO_PAD.encode(point.get(49..97).unwrap_or_default()));
            }
            _ => {
                if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = spki.parsed() {
                    jwk["kty"] = Value::from("RSA");
                    jwk["n"] = Value::from(URL_SAFE_NO_PAD.encode(strip_zeros(rsa.modulus)));
                    jwk["e"] = Value::from(URL_SAFE_NO_PAD.encode(strip_zeros(rsa.exponent)));
                }
            }
        }
    }
    jwk
}

fn strip_zeros(raw: &[u8]) -> &[u8] {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw.get(start..).unwrap_or_default()
}

fn parse_x509_key(key: &Value) -> Result<Vec<u8>, String> {
    let x5c = key
        .get("x5c")
        .and_then(Value::as_array)
        .ok_or("no `x5c` array")?;
    let [only] = x5c.as_slice() else {
        return Err(format!(
            "`x5c` must hold exactly one certificate, it holds {}",
            x5c.len()
        ));
    };
    let der = STANDARD
        .decode(only.as_str().ok_or("`x5c` entry is not a string")?)
        .map_err(|_| "`x5c` entry is not base64".to_owned())?;
    let (rest, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("`x5c` is not a certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Ok(der),
        _ => Err("the certificate is not a CA (basicConstraints cA=true)".into()),
    }
}

/// What every verification path of a process trusts and signs with, at one moment.
#[derive(Debug)]
pub struct Trust {
    /// The active CA: signs X.509-SVIDs.
    pub ca: Arc<Ca>,
    /// The active JWT key: signs JWT-SVIDs.
    pub jwt: Arc<JwtSigner>,
    /// The active access-token key: signs OAuth access tokens (RFC 9068) and nothing else.
    /// `None` when this trust was built without one: then no access token is issued, and none
    /// validates.
    pub access: Option<Arc<AccessTokenSigner>>,
    own: TrustBundle,
    access_keys: BTreeMap<String, JwtPublicKey>,
    federated: BTreeMap<TrustDomain, TrustBundle>,
    limits: BTreeMap<TrustDomain, FederationLimits>,
}

impl Trust {
    /// Trust made of the active signers, this trust domain's published bundle and the
    /// federated bundles (each under [`FederationLimits::default`] until
    /// [`Trust::with_federation_limits`] says otherwise), without access-token keys until
    /// [`Trust::with_access_tokens`] adds them.
    pub fn new(
        ca: Arc<Ca>,
        jwt: Arc<JwtSigner>,
        own: TrustBundle,
        federated: impl IntoIterator<Item = TrustBundle>,
    ) -> Self {
        let federated = federated
            .into_iter()
            .filter(|b| b.trust_domain != own.trust_domain)
            .map(|b| (b.trust_domain.clone(), b))
            .collect();
        Self {
            ca,
            jwt,
            access: None,
            own,
            access_keys: BTreeMap::new(),
            federated,
            limits: BTreeMap::new(),
        }
    }

    /// Trust in just one CA and JWT key (no rotation, no federation, no access tokens).
    pub fn single(ca: Arc<Ca>, jwt: Arc<JwtSigner>) -> Self {
        let own = TrustBundle::new(
            ca.trust_domain().clone(),
            ca.anchors().to_vec(),
            [jwt.public_key()],
        );
        Self::new(ca, jwt, own, [])
    }

    /// Adds the access-token signer and the access-token keys that validate (the signer's
    /// own and every other published one: prepared, or retired within its overlap).
    pub fn with_access_tokens(
        mut self,
        signer: Arc<AccessTokenSigner>,
        published: impl IntoIterator<Item = JwtPublicKey>,
    ) -> Self {
        self.access_keys = published
            .into_iter()
            .chain([signer.public_key()])
            .map(|k| (k.kid().to_owned(), k))
            .collect();
        self.access = Some(signer);
        self
    }

    /// Sets the limits of federated trust domains; a federated domain not named keeps
    /// [`FederationLimits::default`].
    pub fn with_federation_limits(
        mut self,
        limits: impl IntoIterator<Item = (TrustDomain, FederationLimits)>,
    ) -> Self {
        self.limits = limits.into_iter().collect();
        self
    }

    /// This trust domain's bundle.
    pub fn own(&self) -> &TrustBundle {
        &self.own
    }

    /// The federated trust domains' bundles, by name.
    pub fn federated(&self) -> impl Iterator<Item = &TrustBundle> {
        self.federated.values()
    }

    /// The bundle of `trust_domain`, own or federated.
    pub fn bundle(&self, trust_domain: &TrustDomain) -> Option<&TrustBundle> {
        if *trust_domain == self.own.trust_domain {
            Some(&self.own)
        } else {
            self.federated.get(trust_domain)
        }
    }

    /// The JWT authorities of `trust_domain`, for JWT-SVID validation.
    pub fn jwt_bundle(&self, trust_domain: &TrustDomain) -> Option<&JwtBundle> {
        self.bundle(trust_domain).map(TrustBundle::jwt)
    }

    /// The X.509 authorities of `trust_domain`, for X.509-SVID validation.
    pub fn x509_authorities(&self, trust_domain: &TrustDomain) -> Option<&[Vec<u8>]> {
        self.bundle(trust_domain)
            .map(TrustBundle::x509_authorities)
            .filter(|a| !a.is_empty())
    }

    /// The access-token key with id `kid`, for access-token validation. JWT-SVID keys are
    /// never among them.
    pub fn access_token_key(&self, kid: &str) -> Option<&JwtPublicKey> {
        self.access_keys.get(kid)
    }

    /// The access-token keys as a JWK set (`use` = `sig`), for resource servers (RFC 8414
    /// `jwks_uri`).
    pub fn access_token_jwks(&self) -> Value {
        serde_json::json!({
            "keys": self.access_keys.values().map(JwtPublicKey::to_oidc_jwk).collect::<Vec<_>>()
        })
    }

    /// The limits on agents of `trust_domain` when it is federated; `None` for this trust
    /// domain (its own agents are not limited here) and for a domain that is not trusted.
    pub fn federation_limits(&self, trust_domain: &TrustDomain) -> Option<&FederationLimits> {
        if !self.federated.contains_key(trust_domain) {
            return None;
        }
        Some(self.limits.get(trust_domain).unwrap_or(&DEFAULT_LIMITS))
    }
}

/// Longest lifetime (`exp - iat`) of a federated JWT-SVID accepted when the operator set no
/// other, seconds (one hour).
pub const DEFAULT_FEDERATED_JWT_SVID_TTL_SECS: i64 = 3600;
/// The largest lifetime cap an operator may set for a federated trust domain, seconds (one
/// day, the longest JWT-SVID lifetime Warden itself issues).
pub const MAX_FEDERATED_JWT_SVID_TTL_SECS: i64 = 24 * 3600;
/// Longest pinned issuer, bytes.
pub const MAX_ISSUER_LEN: usize = 2048;

static DEFAULT_LIMITS: FederationLimits = FederationLimits {
    max_jwt_svid_ttl_secs: DEFAULT_FEDERATED_JWT_SVID_TTL_SECS,
    issuer: None,
    routes: BTreeSet::new(),
};

/// The groups of agent routes an operator opens to a federated trust domain's agents. A
/// federated agent may use none of them unless its domain's limits name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentRoute {
    /// `POST /oauth2/token`: a federated JWT-SVID or X.509-SVID as the subject or actor of a
    /// token exchange.
    TokenExchange,
    /// `POST /v1/agent/credentials/database/{role}`: dynamic database credentials.
    DbCredentials,
    /// `/v1/agent/leases/…`: renewing and revoking its own leases, recording operations.
    Leases,
    /// `/v1/agent/tasks…`: creating tasks, assigning agents, ending tasks.
    Tasks,
    /// `/v1/grants/requests…` from an agent's side: asking for just-in-time grants.
    GrantRequests,
    /// `POST /v1/git/authorize`: pushing to a repository guarded by Warden.
    Git,
}

impl AgentRoute {
    /// Every route group.
    pub const ALL: [AgentRoute; 6] = [
        AgentRoute::TokenExchange,
        AgentRoute::DbCredentials,
        AgentRoute::Leases,
        AgentRoute::Tasks,
        AgentRoute::GrantRequests,
        AgentRoute::Git,
    ];

    /// The name used in settings and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRoute::TokenExchange => "token_exchange",
            AgentRoute::DbCredentials => "db_credentials",
            AgentRoute::Leases => "leases",
            AgentRoute::Tasks => "tasks",
            AgentRoute::GrantRequests => "grant_requests",
            AgentRoute::Git => "git",
        }
    }

    /// The group named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for AgentRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What this install lets one federated trust domain's agents do: the longest JWT-SVID
/// lifetime it accepts from them, the issuer (`iss`) their JWT-SVIDs must carry when the
/// partner publishes one, and the agent route groups open to them. The default: one hour, no
/// issuer pinned, no route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationLimits {
    /// Longest `exp - iat` (and `exp - now`) of an accepted JWT-SVID, seconds.
    #[serde(default = "default_ttl")]
    pub max_jwt_svid_ttl_secs: i64,
    /// When set, a JWT-SVID of that domain must carry exactly this `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The agent route groups its agents may use.
    #[serde(default)]
    pub routes: BTreeSet<AgentRoute>,
}

fn default_ttl() -> i64 {
    DEFAULT_FEDERATED_JWT_SVID_TTL_SECS
}

impl Default for FederationLimits {
    fn default() -> Self {
        DEFAULT_LIMITS.clone()
    }
}

/// Why a federated agent was refused here although its SVID verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FederationRefusal {
    /// The JWT-SVID lives longer than the domain's limit.
    #[error(
        "a JWT-SVID of trust domain `{trust_domain}` that lives {lifetime_secs} s is refused: this install accepts at most {max_secs} s from it"
    )]
    LifetimeTooLong {
        /// The federated trust domain.
        trust_domain: String,
        /// `exp - iat`, or `exp - now` when that is longer.
        lifetime_secs: i64,
        /// The limit.
        max_secs: i64,
    },
    /// The JWT-SVID's `iss` is not the pinned issuer.
    #[error(
        "a JWT-SVID of trust domain `{trust_domain}` must be issued by `{expected}`, not {}",
        .got.as_deref().map_or_else(|| "without `iss`".to_owned(), |g| format!("`{g}`"))
    )]
    WrongIssuer {
        /// The federated trust domain.
        trust_domain: String,
        /// The pinned issuer.
        expected: String,
        /// The token's `iss`.
        got: Option<String>,
    },
    /// The route group is not open to that domain's agents.
    #[error(
        "agents of federated trust domain `{trust_domain}` may not use `{route}` routes here (an admin opens them with `warden federation limits {trust_domain} --routes …`)"
    )]
    RouteNotAllowed {
        /// The federated trust domain.
        trust_domain: String,
        /// The route group asked for.
        route: AgentRoute,
    },
}

impl FederationRefusal {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            FederationRefusal::LifetimeTooLong { .. } => "federated_svid_lifetime_exceeded",
            FederationRefusal::WrongIssuer { .. } => "federated_issuer_mismatch",
            FederationRefusal::RouteNotAllowed { .. } => "federation_route_not_allowed",
        }
    }
}

impl FederationLimits {
    /// Checks settings given by an operator: a lifetime of 1 s up to
    /// [`MAX_FEDERATED_JWT_SVID_TTL_SECS`], a non-empty issuer of at most
    /// [`MAX_ISSUER_LEN`] bytes without control characters.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_FEDERATED_JWT_SVID_TTL_SECS).contains(&self.max_jwt_svid_ttl_secs) {
            return Err(format!(
                "`max_jwt_svid_ttl_secs` must be 1-{MAX_FEDERATED_JWT_SVID_TTL_SECS}, not {}",
                self.max_jwt_svid_ttl_secs
            ));
        }
        if let Some(iss) = &self.issuer {
            if iss.is_empty() || iss.len() > MAX_ISSUER_LEN || iss.chars().any(char::is_control) {
                return Err(format!(
                    "`issuer` must be 1-{MAX_ISSUER_LEN} bytes without control characters"
                ));
            }
        }
        Ok(())
    }

    /// Whether agents of the domain may use `route`.
    pub fn allows(&self, route: AgentRoute) -> bool {
        self.routes.contains(&route)
    }

    /// Refuses `route` unless it is open to agents of `trust_domain`.
    pub fn check_route(
        &self,
        trust_domain: &TrustDomain,
        route: AgentRoute,
    ) -> Result<(), FederationRefusal> {
        if self.allows(route) {
            Ok(())
        } else {
            Err(FederationRefusal::RouteNotAllowed {
                trust_domain: trust_domain.to_string(),
                route,
            })
        }
    }

    /// Checks a verified JWT-SVID of `trust_domain` against these limits at `now` (seconds),
    /// allowing `skew` seconds: its lifetime — `exp - iat`, and `exp - now` so a back- or
    /// forward-dated `iat` does not hide a far expiry — and its issuer when one is pinned.
    pub fn check_jwt_svid(
        &self,
        trust_domain: &TrustDomain,
        claims: &JwtSvidClaims,
        now: i64,
        skew: i64,
    ) -> Result<(), FederationRefusal> {
        let issued_life = claims.exp.saturating_sub(claims.iat);
        let remaining = claims.exp.saturating_sub(now);
        if issued_life > self.max_jwt_svid_ttl_secs
            || remaining > self.max_jwt_svid_ttl_secs.saturating_add(skew)
        {
            return Err(FederationRefusal::LifetimeTooLong {
                trust_domain: trust_domain.to_string(),
                lifetime_secs: issued_life.max(remaining),
                max_secs: self.max_jwt_svid_ttl_secs,
            });
        }
        if let Some(expected) = &self.issuer {
            if claims.iss.as_deref() != Some(expected.as_str()) {
                return Err(FederationRefusal::WrongIssuer {
                    trust_domain: trust_domain.to_string(),
                    expected: expected.clone(),
                    got: claims.iss.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The process-wide current [`Trust`], replaced whole on rotation or federation refresh.
#[derive(Debug)]
pub struct Keyring {
    current: RwLock<Arc<Trust>>,
    changes: watch::Sender<u64>,
}

impl Keyring {
    /// A keyring holding `trust`.
    pub fn new(trust: Trust) -> Self {
        Self {
            current: RwLock::new(Arc::new(trust)),
            changes: watch::Sender::new(0),
        }
    }

    /// The current trust.
    pub fn current(&self) -> Arc<Trust> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the trust and tells every watcher.
    pub fn replace(&self, trust: Trust) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(trust);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes whenever the trust is replaced.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use time::{Duration, OffsetDateTime};

    use super::*;

    fn td(name: &str) -> TrustDomain {
        TrustDomain::parse(name).unwrap()
    }

    fn sample() -> (TrustBundle, Arc<Ca>, Arc<JwtSigner>) {
        let ca = Arc::new(
            Ca::generate_root(
                &td("example.org"),
                Duration::days(1),
                OffsetDateTime::now_utc(),
            )
            .unwrap(),
        );
        let jwt = Arc::new(JwtSigner::generate().unwrap());
        let bundle = TrustBundle::new(
            td("example.org"),
            vec![ca.cert_der().to_vec()],
            [jwt.public_key()],
        )
        .with_sequence(7, 300);
        (bundle, ca, jwt)
    }

    #[test]
    fn bundle_round_trips_through_the_spiffe_format() {
        let (bundle, ca, jwt) = sample();
        let doc = bundle.to_json();
        assert_eq!(doc["spiffe_sequence"], 7);
        assert_eq!(doc["spiffe_refresh_hint"], 300);
        assert_eq!(doc["keys"][0]["use"], "x509-svid");
        assert_eq!(doc["keys"][0]["kty"], "EC");
        assert_eq!(doc["keys"][0], ca.bundle_jwk());
        assert_eq!(doc["keys"][1]["kid"], jwt.kid());
        let parsed = TrustBundle::parse(td("example.org"), doc.to_string().as_bytes()).unwrap();
        assert_eq!(parsed, bundle);
    }

    #[test]
    fn bad_bundles_are_refused_with_the_reason() {
        let (bundle, _, jwt) = sample();
        let doc = bundle.to_json();
        let ca_der = bundle.x509_authorities()[0].clone();
        let leaf_ca = Ca::generate_root(
            &td("example.org"),
            Duration::days(1),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let leaf = leaf_ca
            .issue_x509_svid(
                &crate::SpiffeId::parse("spiffe://example.org/w").unwrap(),
                Duration::hours(1),
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let with_key = |key: Value| serde_json::json!({ "keys": [key] }).to_string();
        let cases: Vec<(String, BundleError)> = vec![
            (
                "[]".into(),
                BundleError::Malformed("no `keys` array".into()),
            ),
            (
                "{".into(),
                BundleError::Malformed(
                    "not JSON: EOF while parsing an object at line 1 column 1".into(),
                ),
            ),
            (r#"{"keys":[]}"#.into(), BundleError::Empty),
            (
                with_key(serde_json::json!({"use": "other", "kty": "EC"})),
                BundleError::Empty,
            ),
            (
                with_key(serde_json::json!({"use": "x509-svid"})),
                BundleError::BadX509Key {
                    index: 0,
                    reason: "no `x5c` array".into(),
                },
            ),
            (
                with_key(
                    serde_json::json!({"use": "x509-svid", "x5c": [STANDARD.encode(&ca_der), STANDARD.encode(&ca_der)]}),
                ),
                BundleError::BadX509Key {
                    index: 0,
                    reason: "`x5c` must hold exactly one certificate, it holds 2".into(),
                },
            ),
            (
                with_key(serde_json::json!({"use": "x509-svid", "x5c": ["%%%"]})),
                BundleError::BadX509Key {
                    index: 0,
                    reason: "`x5c` entry is not base64".into(),
                },
            ),
            (
                with_key(
                    serde_json::json!({"use": "x509-svid", "x5c": [STANDARD.encode(&leaf.cert_der)]}),
                ),
                BundleError::BadX509Key {
                    index: 0,
                    reason: "the certificate is not a CA (basicConstraints cA=true)".into(),
                },
            ),
            (
                with_key(
                    serde_json::json!({"use": "jwt-svid", "kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}),
                ),
                BundleError::BadJwtKey {
                    index: 0,
                    reason: "bad key: only EC P-256 JWKs are supported".into(),
                },
            ),
            (
                format!(
                    r#"{{"keys":[{}],"spiffe_sequence":"x"}}"#,
                    jwt.public_key().to_jwk()
                ),
                BundleError::Malformed("`spiffe_sequence` is not a number".into()),
            ),
        ];
        assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
        for (input, want) in cases {
            let got = TrustBundle::parse(td("example.org"), input.as_bytes());
            assert_eq!(got, Err(want), "{input}");
        }
        let huge = vec![b' '; MAX_BUNDLE_BYTES + 1];
        assert!(matches!(
            TrustBundle::parse(td("example.org"), &huge),
            Err(BundleError::Malformed(_))
        ));
    }

    fn partner_claims(iat: i64, exp: i64, iss: Option<&str>) -> JwtSvidClaims {
        JwtSvidClaims {
            sub: crate::SpiffeId::parse("spiffe://partner.example/agent/p").unwrap(),
            aud: vec!["https://warden.example.org".into()],
            exp,
            iat,
            jti: "j".into(),
            act: None,
            iss: iss.map(str::to_owned),
        }
    }

    /// Issue 20 item 6: a partner's JWT-SVID that lives 30,000 years is refused, however its
    /// `iat` is dated; the issuer is pinned when set; no route is open by default.
    #[test]
    fn federation_limits_cap_lifetime_pin_issuer_and_close_routes() {
        const NOW: i64 = 1_764_457_200;
        const YEAR: i64 = 365 * 24 * 3600;
        let td = td("partner.example");
        let limits = FederationLimits::default();
        assert_eq!(limits.max_jwt_svid_ttl_secs, 3600);
        let refused = |c: &JwtSvidClaims, l: &FederationLimits| {
            l.check_jwt_svid(&td, c, NOW, 30).map_err(|e| e.code())
        };
        let lifetime_exceeded = Err("federated_svid_lifetime_exceeded");
        // The token from the issue: exp 30,000 years ahead.
        let ancient = partner_claims(NOW, NOW + 30_000 * YEAR, None);
        assert_eq!(refused(&ancient, &limits), lifetime_exceeded);
        let err = limits.check_jwt_svid(&td, &ancient, NOW, 30).unwrap_err();
        assert!(err.to_string().contains("at most 3600 s"), "{err}");
        // Its iat moved close to exp does not hide the far expiry (exp - now counts)...
        let forward = partner_claims(NOW + 30_000 * YEAR - 60, NOW + 30_000 * YEAR, None);
        assert_eq!(refused(&forward, &limits), lifetime_exceeded);
        // ...nor does a token issued long ago and about to expire pass on `exp - now` alone.
        let backdated = partner_claims(NOW - 30_000 * YEAR, NOW + 60, None);
        assert_eq!(refused(&backdated, &limits), lifetime_exceeded);
        // Extremes do not overflow.
        let extreme = partner_claims(i64::MIN, i64::MAX, None);
        assert_eq!(refused(&extreme, &limits), lifetime_exceeded);
        // Within the limit (and within the skew of a partner clock a little ahead): accepted.
        assert_eq!(
            refused(&partner_claims(NOW, NOW + 3600, None), &limits),
            Ok(())
        );
        assert_eq!(
            refused(&partner_claims(NOW + 20, NOW + 3620, None), &limits),
            Ok(())
        );
        assert_eq!(
            refused(&partner_claims(NOW, NOW + 3601, None), &limits),
            lifetime_exceeded
        );
        // A tighter limit.
        let tight = FederationLimits {
            max_jwt_svid_ttl_secs: 300,
            ..FederationLimits::default()
        };
        assert_eq!(
            refused(&partner_claims(NOW, NOW + 900, None), &tight),
            lifetime_exceeded
        );

        // Issuer pinning.
        let pinned = FederationLimits {
            issuer: Some("https://warden.partner.example".into()),
            ..FederationLimits::default()
        };
        let mismatch = Err("federated_issuer_mismatch");
        for iss in [None, Some("https://evil.example"), Some("")] {
            assert_eq!(
                refused(&partner_claims(NOW, NOW + 60, iss), &pinned),
                mismatch,
                "{iss:?}"
            );
        }
        assert_eq!(
            refused(
                &partner_claims(NOW, NOW + 60, Some("https://warden.partner.example")),
                &pinned
            ),
            Ok(())
        );

        // Routes: none by default, exactly those named otherwise.
        for route in AgentRoute::ALL {
            assert_eq!(
                limits.check_route(&td, route).map_err(|e| e.code()),
                Err("federation_route_not_allowed")
            );
            assert_eq!(AgentRoute::parse(route.as_str()), Some(route));
        }
        let open: FederationLimits =
            serde_json::from_str(r#"{"routes": ["token_exchange", "git"]}"#).unwrap();
        assert_eq!(open.max_jwt_svid_ttl_secs, 3600);
        assert!(open.check_route(&td, AgentRoute::TokenExchange).is_ok());
        assert!(open.check_route(&td, AgentRoute::Git).is_ok());
        assert!(open.check_route(&td, AgentRoute::DbCredentials).is_err());
        assert_eq!(
            serde_json::to_value(&open).unwrap(),
            serde_json::json!({"max_jwt_svid_ttl_secs": 3600, "routes": ["token_exchange", "git"]})
        );
        // Settings are parsed strictly and checked.
        for bad in [
            r#"{"routes": ["everything"]}"#,
            r#"{"route": ["git"]}"#,
            r#"{"max_jwt_svid_ttl_secs": "1h"}"#,
        ] {
            assert!(
                serde_json::from_str::<FederationLimits>(bad).is_err(),
                "{bad}"
            );
        }
        for bad in [
            r#"{"max_jwt_svid_ttl_secs": 0}"#,
            r#"{"max_jwt_svid_ttl_secs": 86401}"#,
            r#"{"issuer": ""}"#,
            "{\"issuer\": \"a\\nb\"}",
        ] {
            let l: FederationLimits = serde_json::from_str(bad).unwrap();
            assert!(l.validate().is_err(), "{bad}");
        }
        assert!(open.validate().is_ok());
    }

    #[test]
    fn federation_limits_apply_to_federated_domains_only() {
        let (_, ca, jwt) = sample();
        let partner = TrustBundle::new(td("partner.example"), vec![], [jwt.public_key()]);
        let own = TrustBundle::new(td("example.org"), vec![], [jwt.public_key()]);
        let open = FederationLimits {
            routes: [AgentRoute::Tasks].into(),
            ..FederationLimits::default()
        };
        let trust = Trust::new(Arc::clone(&ca), Arc::clone(&jwt), own, [partner])
            .with_federation_limits([(td("partner.example"), open.clone())]);
        assert_eq!(trust.federation_limits(&td("example.org")), None);
        assert_eq!(trust.federation_limits(&td("unknown.example")), None);
        assert_eq!(trust.federation_limits(&td("partner.example")), Some(&open));
        let partner = TrustBundle::new(td("partner.example"), vec![], [jwt.public_key()]);
        let trust = Trust::new(ca, jwt, trust.own().clone(), [partner]);
        assert_eq!(
            trust.federation_limits(&td("partner.example")),
            Some(&FederationLimits::default())
        );
    }

    #[test]
    fn access_token_keys_are_apart_from_the_bundle() {
        let (_, ca, jwt) = sample();
        let at = Arc::new(AccessTokenSigner::generate().unwrap());
        let retired = AccessTokenSigner::generate().unwrap().public_key();
        let trust = Trust::single(Arc::clone(&ca), Arc::clone(&jwt));
        assert!(trust.access.is_none());
        assert!(trust.access_token_key(jwt.kid()).is_none());
        let trust = trust.with_access_tokens(Arc::clone(&at), [retired.clone()]);
        assert!(trust.access_token_key(at.kid()).is_some());
        assert!(trust.access_token_key(retired.kid()).is_some());
        // The JWT-SVID key is not an access-token key, and the access-token keys are not in
        // the SPIFFE bundle.
        assert!(trust.access_token_key(jwt.kid()).is_none());
        let bundle = trust.own().to_json().to_string();
        assert!(!bundle.contains(at.kid()), "{bundle}");
        let jwks = trust.access_token_jwks();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                assert_eq!(k["use"], "sig");
                assert_eq!(k["alg"], "ES256");
                k["kid"].as_str().unwrap()
            })
            .collect();
        assert_eq!(kids.len(), 2);
        assert!(kids.contains(&at.kid()) && !kids.contains(&jwt.kid()));
    }

    #[test]
    fn keyring_replaces_whole_and_tells_watchers() {
        let (_, ca, jwt) = sample();
        let ring = Keyring::new(Trust::single(Arc::clone(&ca), Arc::clone(&jwt)));
        let watch = ring.watch();
        let before = ring.current();
        assert!(before.bundle(&td("example.org")).is_some());
        assert!(before.bundle(&td("partner.example")).is_none());
        let partner = TrustBundle::new(td("partner.example"), vec![], [jwt.public_key()]);
        let own = before.own().clone();
        ring.replace(Trust::new(ca, jwt, own, [partner]));
        assert!(watch.has_changed().unwrap());
        let after = ring.current();
        assert!(after.jwt_bundle(&td("partner.example")).is_some());
        // No X.509 authorities: X.509 validation finds nothing for that domain.
        assert!(after.x509_authorities(&td("partner.example")).is_none());
        // Holders of the old snapshot keep a consistent view.
        assert!(before.bundle(&td("partner.example")).is_none());
    }
}
