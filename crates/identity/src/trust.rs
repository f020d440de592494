//! Trust bundles and the keyring every verification path reads.
//!
//! A [`TrustBundle`] is one trust domain's published keys in the SPIFFE bundle format
//! (SPIFFE_Trust_Domain_and_Bundle.md §4): X.509 authorities (`use` = `x509-svid`, one
//! certificate in `x5c`) and JWT authorities (`use` = `jwt-svid`, with a `kid`).
//!
//! A [`Keyring`] holds the current [`Trust`]: the active signing keys, this trust domain's
//! bundle (every key that is prepared, active, or retired but still inside its overlap), and
//! the bundles of federated trust domains. It is replaced whole when keys rotate or a federated
//! bundle is refreshed, and watchers are told, so Workload API streams can push the new bundle.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    TrustDomain,
    ca::Ca,
    jwt::{JwtBundle, JwtPublicKey, JwtSigner},
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
    own: TrustBundle,
    federated: BTreeMap<TrustDomain, TrustBundle>,
}

impl Trust {
    /// Trust made of the active signers, this trust domain's published bundle and the
    /// federated bundles.
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
            own,
            federated,
        }
    }

    /// Trust in just one CA and JWT key (no rotation, no federation).
    pub fn single(ca: Arc<Ca>, jwt: Arc<JwtSigner>) -> Self {
        let own = TrustBundle::new(
            ca.trust_domain().clone(),
            ca.anchors().to_vec(),
            [jwt.public_key()],
        );
        Self::new(ca, jwt, own, [])
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
