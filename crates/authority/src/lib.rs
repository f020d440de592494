//! The trust domain's signing authority over time: the CA, JWT-SVID and access-token keys
//! (created, sealed, rotated prepared → active → retired, revoked) and the bundles of federated
//! trust domains (static, or fetched from their bundle endpoint and refreshed) with the limits
//! on what their agents may do here. It keeps the process's [`Keyring`] current; every issuing
//! and verifying path reads that.
//!
//! State lives in the store, so replicas sharing a database converge: each calls
//! [`Authority::tick`] every second, which re-reads the keys and federations, rebuilds the
//! keyring when they changed, rotates on schedule and refreshes federated bundles that are due.
//!
//! Bundle overlap: a retired key stays in the published bundle until every SVID it can have
//! signed has expired (its retirement plus the longest SVID lifetime Warden issues), unless an
//! operator revokes it, which withdraws it at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use identity::{
    TrustDomain,
    access::AccessTokenSigner,
    ca::{Ca, CaError, UpstreamCa},
    jwt::{JwtPublicKey, JwtSigner},
    seal::Kek,
    trust::{BundleError, FederationLimits, Keyring, MAX_BUNDLE_BYTES, Trust, TrustBundle},
};
use ledger::{Ledger, NewEvent, OcsfClass, Outcome};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use store::{ChangeKind, FederationRow, KeyActivate, SigningKeyRow, Store, StoreError};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Longest X.509-SVID lifetime Warden issues, seconds (30 days).
pub const MAX_X509_SVID_TTL_SECS: i64 = 30 * 24 * 3600;
/// Longest JWT-SVID lifetime Warden issues, seconds (one day).
pub const MAX_JWT_SVID_TTL_SECS: i64 = 24 * 3600;
/// Lifetime of a new CA.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::days(365);
/// The refresh hint published with this trust domain's bundle, seconds.
pub const BUNDLE_REFRESH_HINT_SECS: u64 = 300;
/// Bounds on how often a federated bundle is re-fetched, whatever its hint says.
const REFRESH_BOUNDS_SECS: (u64, u64) = (30, 3600);
/// How long after a failed fetch the next attempt is made.
const RETRY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(30);
/// Timeout of one bundle fetch.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The kinds of signing key: the CA, the JWT-SVID key, and the key that signs OAuth access
/// tokens (apart from the JWT-SVID key, RFC 8725 §3.12).
pub const KINDS: [&str; 3] = [X509, JWT, ACCESS];
const X509: &str = "x509-ca";
const JWT: &str = "jwt";
const ACCESS: &str = "access-token";

/// Why an authority operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger could not record the change (nothing was changed, or the change is refused).
    #[error("the audit ledger could not record this: {0}")]
    Ledger(String),
    /// A stored key does not open under this KEK, or was altered.
    #[error("{0}")]
    Seal(String),
    /// A certificate could not be made or loaded.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A bundle document was refused.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A bundle endpoint could not be fetched.
    #[error("cannot fetch the bundle: {0}")]
    Fetch(String),
    /// Bad input from the operator.
    #[error("{0}")]
    Invalid(String),
    /// The named key or federation does not exist (in the needed state).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
}

impl AuthorityError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthorityError::Store(_) => "store_unavailable",
            AuthorityError::Ledger(_) => "audit_unavailable",
            AuthorityError::Seal(_) => "key_unsealable",
            AuthorityError::Ca(_) => "ca_error",
            AuthorityError::Bundle(e) => e.code(),
            AuthorityError::Fetch(_) => "bundle_fetch_failed",
            AuthorityError::Invalid(_) => "invalid_request",
            AuthorityError::NotFound(_) => "not_found",
            AuthorityError::Conflict(_) => "conflict",
        }
    }
}

type Result<T, E = AuthorityError> = std::result::Result<T, E>;

/// Settings of the authority.
#[derive(Debug, Default)]
pub struct AuthorityConfig {
    /// Sign Warden's CA as an intermediate under this upstream CA instead of self-signing.
    pub upstream: Option<UpstreamCa>,
    /// Lifetime of each new CA (default [`DEFAULT_CA_VALIDITY`]).
    pub ca_validity: Option<Duration>,
    /// Rotate on schedule: prepare a new CA and JWT key at half the active CA's lifetime,
    /// activate it at two thirds.
    pub auto_rotate: bool,
}

/// A signing key as operators see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub id: String,
    /// `x509-ca`, `jwt` or `access-token`.
    pub kind: String,
    /// `prepared`, `active` or `retired`.
    pub state: String,
    /// Whether the published bundle carries it now.
    pub in_bundle: bool,
    /// SHA-256 of the CA certificate (DER) or of the JWT public key, hex.
    pub fingerprint: String,
    /// The JWT `kid`, for JWT-SVID and access-token keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Whether the CA is an intermediate under an upstream CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediate: Option<bool>,
    /// Creation time, Unix milliseconds.
    pub created_unix_ms: i64,
    /// Activation time, Unix milliseconds.
    pub activated_unix_ms: Option<i64>,
    /// Retirement time, Unix milliseconds.
    pub retired_unix_ms: Option<i64>,
    /// When it was revoked, Unix milliseconds.
    pub revoked_unix_ms: Option<i64>,
    /// When it leaves the bundle if nothing else happens, Unix milliseconds.
    pub bundle_until_unix_ms: Option<i64>,
    /// End of the CA certificate's validity, Unix milliseconds.
    pub not_after_unix_ms: Option<i64>,
}

/// How far a rotation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateStep {
    /// One step: prepare new keys if there are none, else activate the prepared keys.
    Next,
    /// Prepare (if needed) and activate at once — for a compromised or expiring key.
    Now,
}

/// What a rotation did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RotateReport {
    /// Keys newly prepared (published in the bundle, not yet signing).
    pub prepared: Vec<String>,
    /// Keys that became active.
    pub activated: Vec<String>,
    /// Keys that were active and are now retired (still in the bundle during the overlap).
    pub retired: Vec<String>,
}

/// Where a federated bundle comes from.
#[derive(Debug, Clone)]
pub enum BundleSource {
    /// A bundle document the operator supplies (SPIFFE bundle JSON).
    Static(String),
    /// The other trust domain's bundle endpoint (`https://…`), authenticated with the Web PKI
    /// or with `ca_pem` roots, fetched now and refreshed per its refresh hint.
    Endpoint {
        /// The endpoint URL.
        url: String,
        /// PEM roots for the endpoint's TLS certificate, instead of the Web PKI.
        ca_pem: Option<String>,
    },
}

/// A federated trust domain as operators see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FederationInfo {
    /// The trust domain.
    pub trust_domain: String,
    /// Its bundle endpoint, or `None` for a static bundle.
    pub bundle_url: Option<String>,
    /// X.509 authorities in the current bundle.
    pub x509_authorities: usize,
    /// JWT authorities in the current bundle (their `kid`s).
    pub jwt_kids: Vec<String>,
    /// The bundle's `spiffe_sequence`, if any.
    pub sequence: Option<u64>,
    /// When the bundle was last set, Unix milliseconds.
    pub refreshed_unix_ms: i64,
    /// Why the last refresh failed (the bundle above stays in use).
    pub last_error: Option<String>,
    /// What its agents may do here.
    pub limits: FederationLimits,
}

#[derive(Default)]
struct Cache {
    cas: HashMap<String, Arc<Ca>>,
    jwts: HashMap<String, Arc<JwtSigner>>,
    access: HashMap<String, Arc<AccessTokenSigner>>,
    fingerprint: Option<[u8; 32]>,
    /// The change-feed revision the keyring was built at (`None`: not yet).
    revision: Option<i64>,
    /// When a retired key's overlap next ends, which changes the keyring with no write.
    next_due_ms: Option<i64>,
    last_attempt: HashMap<String, Instant>,
}

/// What [`Keys::build`] made.
struct Built {
    trust: Trust,
    /// Of what it was built from.
    fingerprint: [u8; 32],
    /// When a key published now stops being published (the next time the same rows build a
    /// different keyring).
    next_due_ms: Option<i64>,
}

/// The stored keys and federations, and what has been unsealed from them.
struct Keys {
    td: TrustDomain,
    store: Arc<dyn Store>,
    kek: Kek,
    config: AuthorityConfig,
    cache: Mutex<Cache>,
}

/// The trust domain's signing authority.
pub struct Authority {
    keys: Keys,
    td: TrustDomain,
    store: Arc<dyn Store>,
    ledger: Ledger,
    keyring: Arc<Keyring>,
    // Serializes this process's rotations.
    busy: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authority({})", self.td)
    }
}

fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn aad(kind: &str, id: &str) -> Vec<u8> {
    format!("warden/{kind}/{id}").into_bytes()
}

fn new_id() -> String {
    let mut raw = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    format!("key_{}", hex::encode(raw))
}

fn overlap_ms(kind: &str) -> i64 {
    let secs = if kind == X509 {
        MAX_X509_SVID_TTL_SECS
    } else {
        MAX_JWT_SVID_TTL_SECS
    };
    secs.saturating_mul(1000)
}

/// The limits stored for a federation: the defaults when none are stored, and — logged — when
/// the stored ones do not parse (the defaults open no route).
fn stored_limits(row: &FederationRow) -> FederationLimits {
    match row
        .limits_json
        .as_deref()
        .map(serde_json::from_str::<FederationLimits>)
    {
        None => FederationLimits::default(),
        Some(Ok(limits)) => limits,
        Some(Err(e)) => {
            tracing::error!(trust_domain = %row.trust_domain, error = %e,
                "stored federation limits are unusable; applying the defaults");
            FederationLimits::default()
        }
    }
}

/// Until when a key is published, if it is now (`None`: indefinitely while prepared/active).
fn bundle_until(row: &SigningKeyRow) -> Option<i64> {
    match (row.state.as_str(), row.retired_unix_ms) {
        ("retired", Some(at)) => Some(at.saturating_add(overlap_ms(&row.kind))),
        _ => None,
    }
}

fn in_bundle(row: &SigningKeyRow, now: i64) -> bool {
    if row.revoked_unix_ms.is_some() {
        return false;
    }
    match row.state.as_str() {
        "prepared" | "active" => true,
        "retired" => bundle_until(row).is_some_and(|until| now < until),
        _ => false,
    }
}

impl Authority {
    /// Opens the authority: creates the active CA, JWT-SVID and access-token keys the first time
    /// (recording it; an install from before access tokens had their own key gets one now),
    /// loads the keys and federations, and builds the keyring.
    pub async fn open(
        td: TrustDomain,
        store: Arc<dyn Store>,
        ledger: Ledger,
        kek: Kek,
        config: AuthorityConfig,
    ) -> Result<Self> {
        let keys = Keys {
            td: td.clone(),
            store: Arc::clone(&store),
            kek,
            config,
            cache: Mutex::new(Cache::default()),
        };
        for kind in KINDS {
            let rows = store.signing_keys(kind).await?;
            if !rows.iter().any(|r| r.state == "active") {
                let row = keys.generate(kind, "active")?;
                if store.signing_key_insert(&row).await? {
                    record(
                        &ledger,
                        NewEvent::new(
                            "system:identity",
                            "signing_key.create",
                            Outcome::Success,
                            OcsfClass::UserAccessManagement,
                        )
                        .field("key_id", row.id.clone())
                        .field("kind", kind),
                    )
                    .await?;
                }
            }
        }
        let revision = store.change_head().await?;
        let built = keys.build().await?;
        {
            let mut cache = keys.lock_cache();
            cache.fingerprint = Some(built.fingerprint);
            cache.revision = Some(revision);
            cache.next_due_ms = built.next_due_ms;
        }
        Ok(Self {
            keys,
            td,
            store,
            ledger,
            keyring: Arc::new(Keyring::new(built.trust)),
            busy: tokio::sync::Mutex::new(()),
        })
    }

    /// The install's key-encryption key, for sealing other secrets at rest (database
    /// connection strings, upstream secrets).
    pub fn kek(&self) -> &Kek {
        &self.keys.kek
    }

    /// The keyring every issuing and verifying path reads.
    pub fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    async fn record(&self, event: NewEvent) -> Result<()> {
        record(&self.ledger, event).await
    }
}

async fn record(ledger: &Ledger, event: NewEvent) -> Result<()> {
    ledger
        .append(event)
        .await
        .map(|_| ())
        .map_err(|e| AuthorityError::Ledger(e.to_string()))
}

impl Keys {
    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new sealed key of `kind` in `state`.
    fn generate(&self, kind: &str, state: &str) -> Result<SigningKeyRow> {
        let now = OffsetDateTime::now_utc();
        let (cert_der, key, not_after) = if kind == X509 {
            let validity = self.config.ca_validity.unwrap_or(DEFAULT_CA_VALIDITY);
            let ca = match &self.config.upstream {
                Some(up) => Ca::generate_intermediate(&self.td, up, validity, now)?,
                None => Ca::generate_root(&self.td, validity, now)?,
            };
            let not_after = ca.not_after().unix_timestamp().saturating_mul(1000);
            (Some(ca.stored_der()), ca.key_pkcs8(), Some(not_after))
        } else {
            // JWT-SVID and access-token keys are both ES256 keys; what they sign differs.
            let signer = JwtSigner::generate().map_err(|e| AuthorityError::Seal(e.to_string()))?;
            (None, Zeroizing::new(signer.pkcs8().to_vec()), None)
        };
        let id = new_id();
        let key_sealed = self
            .kek
            .seal(&aad(kind, &id), &key)
            .map_err(|e| AuthorityError::Seal(e.to_string()))?;
        let created = now_ms();
        Ok(SigningKeyRow {
            id,
            kind: kind.to_owned(),
            state: state.to_owned(),
            cert_der,
            key_sealed,
            created_unix_ms: created,
            not_after_unix_ms: not_after,
            activated_unix_ms: (state == "active").then_some(created),
            retired_unix_ms: None,
            revoked_unix_ms: None,
        })
    }

    fn unseal(&self, row: &SigningKeyRow) -> Result<Zeroizing<Vec<u8>>> {
        self.kek.open(&aad(&row.kind, &row.id), &row.key_sealed).map_err(|_| {
            AuthorityError::Seal(format!(
                "cannot unseal the {} key `{}`: wrong key-encryption key (WARDEN_KEK or kek.key), or the stored key was altered",
                row.kind, row.id
            ))
        })
    }

    fn ca_of(&self, row: &SigningKeyRow) -> Result<Arc<Ca>> {
        if let Some(ca) = self.lock_cache().cas.get(&row.id) {
            return Ok(Arc::clone(ca));
        }
        let key = self.unseal(row)?;
        let der = row.cert_der.as_deref().ok_or_else(|| {
            AuthorityError::Seal(format!("CA key `{}` has no certificate", row.id))
        })?;
        let ca = Arc::new(Ca::from_parts(&self.td, der, &key)?);
        self.lock_cache()
            .cas
            .insert(row.id.clone(), Arc::clone(&ca));
        Ok(ca)
    }

    fn jwt_of(&self, row: &SigningKeyRow) -> Result<Arc<JwtSigner>> {
        if let Some(signer) = self.lock_cache().jwts.get(&row.id) {
            return Ok(Arc::clone(signer));
        }
        let key = self.unseal(row)?;
        let signer = Arc::new(
            JwtSigner::from_pkcs8(&key)
                .map_err(|e| AuthorityError::Seal(format!("stored JWT key `{}`: {e}", row.id)))?,
        );
        self.lock_cache()
            .jwts
            .insert(row.id.clone(), Arc::clone(&signer));
        Ok(signer)
    }

    fn access_of(&self, row: &SigningKeyRow) -> Result<Arc<AccessTokenSigner>> {
        if let Some(signer) = self.lock_cache().access.get(&row.id) {
            return Ok(Arc::clone(signer));
        }
        let key = self.unseal(row)?;
        let signer = Arc::new(AccessTokenSigner::from_pkcs8(&key).map_err(|e| {
            AuthorityError::Seal(format!("stored access-token key `{}`: {e}", row.id))
        })?);
        self.lock_cache()
            .access
            .insert(row.id.clone(), Arc::clone(&signer));
        Ok(signer)
    }

    /// The public key and `kid` of a JWT-SVID or access-token key.
    fn public_of(&self, row: &SigningKeyRow) -> Result<JwtPublicKey> {
        if row.kind == ACCESS {
            Ok(self.access_of(row)?.public_key())
        } else {
            Ok(self.jwt_of(row)?.public_key())
        }
    }

    /// Reads keys and federations and builds the trust they describe, with a fingerprint of
    /// what it was built from.
    async fn build(&self) -> Result<Built> {
        let now = now_ms();
        let cas = self.store.signing_keys(X509).await?;
        let jwts = self.store.signing_keys(JWT).await?;
        let accesses = self.store.signing_keys(ACCESS).await?;
        let feds = self.store.federation_list().await?;
        let mut fp = Sha256::new();
        let mut sequence = 0i64;
        for row in cas.iter().chain(&jwts) {
            let published = in_bundle(row, now);
            fp.update(format!("{}|{}|{published};", row.id, row.state));
            for t in [
                Some(row.created_unix_ms),
                row.activated_unix_ms,
                row.retired_unix_ms,
                row.revoked_unix_ms,
                bundle_until(row).filter(|until| *until <= now),
            ]
            .into_iter()
            .flatten()
            {
                sequence = sequence.max(t);
            }
        }
        // Access-token keys are not in the bundle: they change the fingerprint, not the
        // bundle's sequence.
        for row in &accesses {
            let published = in_bundle(row, now);
            fp.update(format!("{}|{}|{published};", row.id, row.state));
        }
        for f in &feds {
            fp.update(format!("{}|{};", f.trust_domain, f.bundle_json.len()));
            fp.update(f.bundle_json.as_bytes());
            let limits = f.limits_json.as_deref().unwrap_or_default();
            fp.update(format!("|{};", limits.len()));
            fp.update(limits.as_bytes());
        }
        let active = |rows: &[SigningKeyRow], kind: &str| {
            rows.iter()
                .find(|r| r.state == "active")
                .cloned()
                .ok_or_else(|| AuthorityError::NotFound(format!("no active {kind} key")))
        };
        let ca = self.ca_of(&active(&cas, X509)?)?;
        let jwt = self.jwt_of(&active(&jwts, JWT)?)?;
        let access = self.access_of(&active(&accesses, ACCESS)?)?;
        let mut anchors: Vec<Vec<u8>> = Vec::new();
        for row in cas.iter().filter(|r| in_bundle(r, now)) {
            for anchor in self.ca_of(row)?.anchors() {
                if !anchors.contains(anchor) {
                    anchors.push(anchor.clone());
                }
            }
        }
        let mut jwt_keys: Vec<JwtPublicKey> = Vec::new();
        for row in jwts.iter().filter(|r| in_bundle(r, now)) {
            jwt_keys.push(self.jwt_of(row)?.public_key());
        }
        let own = TrustBundle::new(self.td.clone(), anchors, jwt_keys).with_sequence(
            u64::try_from(sequence).unwrap_or_default(),
            BUNDLE_REFRESH_HINT_SECS,
        );
        let mut access_keys: Vec<JwtPublicKey> = Vec::new();
        for row in accesses.iter().filter(|r| in_bundle(r, now)) {
            access_keys.push(self.access_of(row)?.public_key());
        }
        let mut federated = Vec::new();
        let mut limits = Vec::new();
        for f in &feds {
            match TrustDomain::parse(&f.trust_domain)
                .map_err(|e| e.to_string())
                .and_then(|td| {
                    TrustBundle::parse(td, f.bundle_json.as_bytes()).map_err(|e| e.to_string())
                }) {
                Ok(bundle) => {
                    limits.push((bundle.trust_domain().clone(), stored_limits(f)));
                    federated.push(bundle);
                }
                Err(e) => tracing::error!(trust_domain = %f.trust_domain, error = %e,
                    "stored federated bundle is unusable; not trusting it"),
            }
        }
        let trust = Trust::new(ca, jwt, own, federated)
            .with_access_tokens(access, access_keys)
            .with_federation_limits(limits);
        let next_due_ms = cas
            .iter()
            .chain(&jwts)
            .chain(&accesses)
            .filter(|row| in_bundle(row, now))
            .filter_map(bundle_until)
            .min();
        Ok(Built {
            trust,
            fingerprint: fp.finalize().into(),
            next_due_ms,
        })
    }
}

impl Authority {
    /// Brings the keyring up to the store: when the change feed names a key or federation
    /// changed since the keyring was built (or no longer reaches back that far), or a retired
    /// key's overlap has ended, re-reads keys and federations and replaces the keyring if what
    /// it is built from differs. Otherwise this is one indexed query. Returns whether the
    /// keyring was replaced.
    pub async fn refresh(&self) -> Result<bool> {
        let (held, due) = {
            let cache = self.keys.lock_cache();
            let due = cache.next_due_ms.is_some_and(|at| now_ms() >= at);
            (cache.revision, due)
        };
        if let (Some(held), false) = (held, due) {
            let page = self.store.changes_since(ChangeKind::Key, held, 1).await?;
            if page.floor <= held && page.rows.is_empty() {
                return Ok(false);
            }
        }
        // The head is read before the keys: a change committed after it is seen next time.
        let head = self.store.change_head().await?;
        let built = self.keys.build().await?;
        let mut cache = self.keys.lock_cache();
        cache.revision = Some(head);
        cache.next_due_ms = built.next_due_ms;
        if cache.fingerprint == Some(built.fingerprint) {
            return Ok(false);
        }
        cache.fingerprint = Some(built.fingerprint);
        drop(cache);
        self.keyring.replace(built.trust);
        Ok(true)
    }

    /// The periodic work: refresh the keyring, rotate on schedule, refresh federated bundles
    /// that are due. Errors are logged; the last good keyring stays.
    pub async fn tick(&self) {
        if self.keys.config.auto_rotate {
            if let Err(e) = self.rotate_on_schedule().await {
                tracing::error!(error = %e, "scheduled key rotation failed; will retry");
            }
        }
        self.refresh_due_federations().await;
        if let Err(e) = self.refresh().await {
            tracing::error!(error = %e, "cannot refresh the keyring; keeping the last one");
        }
    }

    /// Every signing key, oldest first.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        let now = now_ms();
        let mut out = Vec::new();
        for kind in KINDS {
            for row in self.store.signing_keys(kind).await? {
                let (fingerprint, kid, intermediate) = if kind == X509 {
                    let der = row.cert_der.clone().unwrap_or_default();
                    let first = identity::x509::split_der(&der)
                        .ok()
                        .and_then(|c| c.into_iter().next())
                        .unwrap_or_default();
                    let intermediate = first.len() < der.len();
                    (
                        hex::encode(Sha256::digest(&first)),
                        None,
                        Some(intermediate),
                    )
                } else {
                    match self.keys.public_of(&row) {
                        Ok(public) => {
                            let jwk = public.to_jwk().to_string();
                            (
                                hex::encode(Sha256::digest(jwk.as_bytes())),
                                Some(public.kid().to_owned()),
                                None,
                            )
                        }
                        Err(_) => (String::new(), None, None),
                    }
                };
                out.push(KeyInfo {
                    in_bundle: in_bundle(&row, now),
                    bundle_until_unix_ms: bundle_until(&row)
                        .filter(|_| row.revoked_unix_ms.is_none()),
                    id: row.id,
                    kind: row.kind,
                    state: row.state,
                    fingerprint,
                    kid,
                    intermediate,
                    created_unix_ms: row.created_unix_ms,
                    activated_unix_ms: row.activated_unix_ms,
                    retired_unix_ms: row.retired_unix_ms,
                    revoked_unix_ms: row.revoked_unix_ms,
                    not_after_unix_ms: row.not_after_unix_ms,
                });
            }
        }
        Ok(out)
    }

    /// Rotates the CA, JWT-SVID and access-token keys together, one step or all the way (see
    /// [`RotateStep`]).
    /// Every change is recorded in the ledger under `actor`.
    pub async fn rotate(&self, actor: &str, step: RotateStep) -> Result<RotateReport> {
        let _busy = self.busy.lock().await;
        let mut report = RotateReport::default();
        let mut prepared_ids: Vec<(&str, String)> = Vec::new();
        for kind in KINDS {
            let rows = self.store.signing_keys(kind).await?;
            if let Some(p) = rows.iter().find(|r| r.state == "prepared") {
                prepared_ids.push((kind, p.id.clone()));
                continue;
            }
            let row = self.keys.generate(kind, "prepared")?;
            // Recorded before it is stored: a key that exists is always in the ledger.
            self.record(
                NewEvent::new(
                    actor,
                    "signing_key.prepare",
                    Outcome::Success,
                    OcsfClass::UserAccessManagement,
                )
                .field("key_id", row.id.clone())
                .field("kind", kind),
            )
            .await?;
            if self.store.signing_key_insert(&row).await? {
                report.prepared.push(row.id.clone());
                prepared_ids.push((kind, row.id));
            } else if let Some(p) = self
                .store
                .signing_keys(kind)
                .await?
                .into_iter()
                .find(|r| r.state == "prepared")
            {
                // Another replica prepared one at the same moment: ours was never stored.
                // Say so in the ledger right after the intent, then use theirs.
                self.record(withdrawn(
                    actor,
                    "signing_key.prepare",
                    &row.id,
                    kind,
                    &p.id,
                ))
                .await?;
                prepared_ids.push((kind, p.id));
            }
        }
        let activate = step == RotateStep::Now || report.prepared.is_empty();
        if activate {
            for (kind, id) in &prepared_ids {
                let at = now_ms();
                // Recorded first, naming the key it retires: a change that is not in the
                // ledger never happens.
                let retiring = self
                    .store
                    .signing_keys(kind)
                    .await?
                    .into_iter()
                    .find(|r| r.state == "active")
                    .map(|r| r.id);
                let mut event = NewEvent::new(
                    actor,
                    "signing_key.activate",
                    Outcome::Success,
                    OcsfClass::UserAccessManagement,
                )
                .field("key_id", id.clone())
                .field("kind", *kind);
                if let Some(old) = &retiring {
                    event = event
                        .field("retired_key_id", old.clone())
                        .field("bundle_until_unix_ms", at.saturating_add(overlap_ms(kind)));
                }
                self.record(event).await?;
                match self.store.signing_key_activate(kind, id, at).await? {
                    KeyActivate::Activated { retired } => {
                        report.activated.push(id.clone());
                        report.retired.extend(retired);
                    }
                    KeyActivate::NotPrepared => {
                        // Another replica activated (or an operator revoked) it between our
                        // read and our write: correct our record of the intent.
                        self.record(withdrawn(actor, "signing_key.activate", id, kind, "-"))
                            .await?;
                        return Err(AuthorityError::Conflict(format!(
                            "the prepared {kind} key `{id}` was activated or revoked meanwhile"
                        )));
                    }
                }
            }
        }
        drop(_busy);
        self.refresh().await?;
        Ok(report)
    }

    /// Withdraws a prepared or retired key from the bundle at once: SVIDs it signed stop
    /// verifying everywhere that refreshes the bundle.
    pub async fn revoke_key(&self, actor: &str, id: &str) -> Result<()> {
        let mut found = None;
        for kind in KINDS {
            if let Some(row) = self
                .store
                .signing_keys(kind)
                .await?
                .into_iter()
                .find(|r| r.id == id)
            {
                found = Some(row);
            }
        }
        let row =
            found.ok_or_else(|| AuthorityError::NotFound(format!("no signing key `{id}`")))?;
        if row.state == "active" {
            return Err(AuthorityError::Conflict(format!(
                "`{id}` is the active {} key: rotate first (`warden ca rotate --now`), then revoke it",
                row.kind
            )));
        }
        if row.revoked_unix_ms.is_some() {
            return Err(AuthorityError::Conflict(format!(
                "`{id}` is already revoked"
            )));
        }
        self.record(
            NewEvent::new(
                actor,
                "signing_key.revoke",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("key_id", id)
            .field("kind", row.kind.clone()),
        )
        .await?;
        if !self.store.signing_key_revoke(id, now_ms()).await? {
            return Err(AuthorityError::Conflict(format!(
                "`{id}` changed state meanwhile; look again with `warden ca list`"
            )));
        }
        self.refresh().await?;
        Ok(())
    }

    async fn rotate_on_schedule(&self) -> Result<()> {
        let cas = self.store.signing_keys(X509).await?;
        let Some(active) = cas.iter().find(|r| r.state == "active") else {
            return Ok(());
        };
        let Some(end) = active.not_after_unix_ms else {
            return Ok(());
        };
        let start = active.created_unix_ms;
        let life = (end - start).max(1);
        let elapsed = now_ms() - start;
        let has_prepared = cas.iter().any(|r| r.state == "prepared");
        // Prepare at half the active CA's life, activate at two thirds: relying parties have a
        // sixth of the lifetime to pick the new key up from the bundle before it signs.
        let due = if has_prepared {
            elapsed.saturating_mul(3) >= life.saturating_mul(2)
        } else {
            elapsed.saturating_mul(2) >= life
        };
        if due {
            self.rotate("system:rotation", RotateStep::Next).await?;
        }
        Ok(())
    }

    // ---- federation -------------------------------------------------------------------------

    fn federation_info(row: &FederationRow) -> FederationInfo {
        let bundle = TrustDomain::parse(&row.trust_domain)
            .ok()
            .and_then(|td| TrustBundle::parse(td, row.bundle_json.as_bytes()).ok());
        FederationInfo {
            trust_domain: row.trust_domain.clone(),
            bundle_url: row.bundle_url.clone(),
            x509_authorities: bundle.as_ref().map_or(0, |b| b.x509_authorities().len()),
            jwt_kids: bundle
                .as_ref()
                .map(|b| b.jwt().keys().map(|k| k.kid().to_owned()).collect())
                .unwrap_or_default(),
            sequence: bundle.as_ref().and_then(|b| {
                b.to_json()
                    .get("spiffe_sequence")
                    .and_then(serde_json::Value::as_u64)
            }),
            refreshed_unix_ms: row.refreshed_unix_ms,
            last_error: row.last_error.clone(),
            limits: stored_limits(row),
        }
    }

    /// The federated trust domains.
    pub async fn federations(&self) -> Result<Vec<FederationInfo>> {
        Ok(self
            .store
            .federation_list()
            .await?
            .iter()
            .map(Self::federation_info)
            .collect())
    }

    /// Federates with `td`: its SVIDs are accepted from now on, within `limits` (the defaults
    /// when `None`: JWT-SVIDs of at most an hour, no issuer pinned, no agent route), and its
    /// bundle is handed to workloads with their own.
    pub async fn federation_add(
        &self,
        actor: &str,
        td: TrustDomain,
        source: BundleSource,
        limits: Option<FederationLimits>,
    ) -> Result<FederationInfo> {
        if td == self.td {
            return Err(AuthorityError::Invalid(format!(
                "`{td}` is this install's own trust domain"
            )));
        }
        let limits = limits.unwrap_or_default();
        limits.validate().map_err(AuthorityError::Invalid)?;
        let limits_json =
            serde_json::to_string(&limits).map_err(|e| AuthorityError::Invalid(e.to_string()))?;
        // Before any fetch: re-adding is a conflict whatever the endpoint's state.
        if self
            .store
            .federation_list()
            .await?
            .iter()
            .any(|f| f.trust_domain == td.as_str())
        {
            return Err(AuthorityError::Conflict(format!(
                "trust domain `{td}` is already federated: remove it first, or `update` a static bundle"
            )));
        }
        let (url, ca_pem, json) = match source {
            BundleSource::Static(json) => (None, None, json),
            BundleSource::Endpoint { url, ca_pem } => {
                let body = fetch_bundle(&url, ca_pem.as_deref()).await?;
                (Some(url), ca_pem, body)
            }
        };
        let bundle = TrustBundle::parse(td.clone(), json.as_bytes())?;
        let now = now_ms();
        let row = FederationRow {
            trust_domain: td.to_string(),
            bundle_url: url.clone(),
            endpoint_ca_pem: ca_pem,
            bundle_json: json,
            created_unix_ms: now,
            refreshed_unix_ms: now,
            last_error: None,
            limits_json: Some(limits_json),
        };
        self.record(
            federation_event(actor, "federation.add", &td, &bundle, url.as_deref())
                .field_serialized("limits", &limits)
                .map_err(|e| AuthorityError::Ledger(e.to_string()))?,
        )
        .await?;
        match self.store.federation_insert(&row).await {
            Err(StoreError::Conflict(m)) => {
                // Added by someone else between our check and our insert: correct the record.
                self.record(
                    NewEvent::new(
                        actor,
                        "federation.add",
                        Outcome::Failure,
                        OcsfClass::UserAccessManagement,
                    )
                    .field("trust_domain", td.to_string())
                    .field("error", m.clone()),
                )
                .await?;
                return Err(AuthorityError::Conflict(m));
            }
            other => other?,
        }
        self.refresh().await?;
        Ok(Self::federation_info(&row))
    }

    /// Replaces the static bundle of `td`.
    pub async fn federation_update(
        &self,
        actor: &str,
        td: &TrustDomain,
        json: String,
    ) -> Result<FederationInfo> {
        let row = self.federation_row(td).await?;
        if row.bundle_url.is_some() {
            return Err(AuthorityError::Conflict(format!(
                "`{td}` is fetched from {}: use refresh instead",
                row.bundle_url.as_deref().unwrap_or_default()
            )));
        }
        let bundle = TrustBundle::parse(td.clone(), json.as_bytes())?;
        self.record(federation_event(
            actor,
            "federation.update",
            td,
            &bundle,
            None,
        ))
        .await?;
        self.store
            .federation_refreshed(row.trust_domain.as_str(), Some(&json), now_ms(), None)
            .await?;
        self.refresh().await?;
        self.federation_info_of(td).await
    }

    /// Fetches the bundle of `td` from its endpoint now.
    pub async fn federation_refresh(
        &self,
        actor: &str,
        td: &TrustDomain,
    ) -> Result<FederationInfo> {
        let row = self.federation_row(td).await?;
        if row.bundle_url.is_none() {
            return Err(AuthorityError::Conflict(format!(
                "`{td}` has a static bundle: use update instead"
            )));
        }
        self.refresh_one(actor, &row).await?;
        self.refresh().await?;
        self.federation_info_of(td).await
    }

    /// Replaces what agents of the federated `td` may do here (recorded as
    /// `federation.limits` before it applies).
    pub async fn federation_set_limits(
        &self,
        actor: &str,
        td: &TrustDomain,
        limits: FederationLimits,
    ) -> Result<FederationInfo> {
        limits.validate().map_err(AuthorityError::Invalid)?;
        self.federation_row(td).await?;
        let json =
            serde_json::to_string(&limits).map_err(|e| AuthorityError::Invalid(e.to_string()))?;
        self.record(
            NewEvent::new(
                actor,
                "federation.limits",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("trust_domain", td.to_string())
            .field_serialized("limits", &limits)
            .map_err(|e| AuthorityError::Ledger(e.to_string()))?,
        )
        .await?;
        if !self.store.federation_set_limits(td.as_str(), &json).await? {
            return Err(AuthorityError::NotFound(format!(
                "trust domain `{td}` is not federated"
            )));
        }
        self.refresh().await?;
        self.federation_info_of(td).await
    }

    /// Stops federating with `td`: its SVIDs are refused from now on.
    pub async fn federation_remove(&self, actor: &str, td: &TrustDomain) -> Result<()> {
        self.federation_row(td).await?;
        self.record(
            NewEvent::new(
                actor,
                "federation.remove",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("trust_domain", td.to_string()),
        )
        .await?;
        self.store.federation_delete(td.as_str()).await?;
        self.refresh().await?;
        Ok(())
    }

    async fn federation_row(&self, td: &TrustDomain) -> Result<FederationRow> {
        self.store
            .federation_list()
            .await?
            .into_iter()
            .find(|f| f.trust_domain == td.as_str())
            .ok_or_else(|| {
                AuthorityError::NotFound(format!("trust domain `{td}` is not federated"))
            })
    }

    async fn federation_info_of(&self, td: &TrustDomain) -> Result<FederationInfo> {
        Ok(Self::federation_info(&self.federation_row(td).await?))
    }

    /// Fetches one endpoint bundle and stores the outcome. A changed bundle, and a new kind of
    /// failure, are recorded in the ledger; an unchanged bundle is not.
    async fn refresh_one(&self, actor: &str, row: &FederationRow) -> Result<()> {
        let Some(url) = row.bundle_url.as_deref() else {
            return Ok(());
        };
        let td = TrustDomain::parse(&row.trust_domain)
            .map_err(|e| AuthorityError::Invalid(e.to_string()))?;
        self.keys
            .lock_cache()
            .last_attempt
            .insert(row.trust_domain.clone(), Instant::now());
        let fetched = match fetch_bundle(url, row.endpoint_ca_pem.as_deref()).await {
            Ok(json) => TrustBundle::parse(td.clone(), json.as_bytes())
                .map(|b| (json, b))
                .map_err(AuthorityError::from),
            Err(e) => Err(e),
        };
        match fetched {
            Ok((json, bundle)) => {
                let changed = json != row.bundle_json;
                if changed {
                    self.record(federation_event(
                        actor,
                        "federation.refresh",
                        &td,
                        &bundle,
                        Some(url),
                    ))
                    .await?;
                }
                // The refresh time moves even when the bundle is the same.
                self.store
                    .federation_refreshed(&row.trust_domain, Some(&json), now_ms(), None)
                    .await?;
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                if row.last_error.as_deref() != Some(message.as_str()) {
                    self.record(
                        NewEvent::new(
                            actor,
                            "federation.refresh",
                            Outcome::Failure,
                            OcsfClass::UserAccessManagement,
                        )
                        .field("trust_domain", td.to_string())
                        .field("bundle_url", url)
                        .field("error", message.clone()),
                    )
                    .await?;
                }
                self.store
                    .federation_refreshed(&row.trust_domain, None, now_ms(), Some(&message))
                    .await?;
                Err(e)
            }
        }
    }

    async fn refresh_due_federations(&self) {
        let rows = match self.store.federation_list().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read federations");
                return;
            }
        };
        let now = now_ms();
        for row in rows.iter().filter(|r| r.bundle_url.is_some()) {
            let hint = TrustDomain::parse(&row.trust_domain)
                .ok()
                .and_then(|td| TrustBundle::parse(td, row.bundle_json.as_bytes()).ok())
                .and_then(|b| b.refresh_hint_secs())
                .unwrap_or(BUNDLE_REFRESH_HINT_SECS)
                .clamp(REFRESH_BOUNDS_SECS.0, REFRESH_BOUNDS_SECS.1);
            let due_at = row
                .refreshed_unix_ms
                .saturating_add(i64::try_from(hint).unwrap_or(i64::MAX).saturating_mul(1000));
            let recently_tried = self
                .keys
                .lock_cache()
                .last_attempt
                .get(&row.trust_domain)
                .is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE);
            if now >= due_at && !recently_tried {
                if let Err(e) = self.refresh_one("system:federation", row).await {
                    tracing::warn!(trust_domain = %row.trust_domain, error = %e,
                        "federated bundle refresh failed; keeping the last good bundle");
                }
            }
        }
    }
}

/// The correction recorded when a key change recorded as intended did not happen because
/// another replica changed the same key first.
fn withdrawn(actor: &str, action: &str, key_id: &str, kind: &str, instead: &str) -> NewEvent {
    NewEvent::new(
        actor,
        action,
        Outcome::Failure,
        OcsfClass::UserAccessManagement,
    )
    .field("key_id", key_id)
    .field("kind", kind)
    .field(
        "error",
        "another replica changed the keys first; this change did not happen",
    )
    .field("instead", instead)
}

fn federation_event(
    actor: &str,
    action: &str,
    td: &TrustDomain,
    bundle: &TrustBundle,
    url: Option<&str>,
) -> NewEvent {
    let mut event = NewEvent::new(
        actor,
        action,
        Outcome::Success,
        OcsfClass::UserAccessManagement,
    )
    .field("trust_domain", td.to_string())
    .field("x509_authorities", bundle.x509_authorities().len())
    .field(
        "jwt_kids",
        bundle
            .jwt()
            .keys()
            .map(|k| k.kid().to_owned())
            .collect::<Vec<_>>(),
    )
    .field(
        "bundle_sha256",
        hex::encode(Sha256::digest(bundle.to_json().to_string().as_bytes())),
    );
    if let Some(url) = url {
        event = event.field("bundle_url", url);
    }
    event
}

/// Fetches a bundle document from `url` (HTTPS only), authenticating the server with the Web
/// PKI or with `ca_pem`; refuses redirects, bodies over [`MAX_BUNDLE_BYTES`] and slow servers.
pub async fn fetch_bundle(url: &str, ca_pem: Option<&str>) -> Result<String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| AuthorityError::Invalid(format!("bundle url `{url}`: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(AuthorityError::Invalid(format!(
            "bundle url `{url}` must be https: a bundle fetched in clear could be swapped for an attacker's keys"
        )));
    }
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| AuthorityError::Invalid(format!("endpoint CA: {e}")))?;
        if certs.is_empty() {
            return Err(AuthorityError::Invalid(
                "endpoint CA: no certificate in the PEM".into(),
            ));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| AuthorityError::Fetch(e.to_string()))?;
    let mut response = client
        .get(parsed)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| AuthorityError::Fetch(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(AuthorityError::Fetch(format!(
            "{url} answered {}",
            response.status()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| AuthorityError::Fetch(error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_BUNDLE_BYTES {
            return Err(AuthorityError::Fetch(format!(
                "{url} sent more than {MAX_BUNDLE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| AuthorityError::Fetch(format!("{url} sent non-UTF-8")))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
