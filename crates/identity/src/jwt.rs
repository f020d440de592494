//! JWT-SVIDs (SPIFFE JWT-SVID.md): minting with ES256 and strict validation.
//!
//! A JWT-SVID is a JWS compact token whose header names the signing key (`kid`) and an
//! allowed asymmetric algorithm, and whose claims carry `sub` (a SPIFFE ID), `aud`, `exp`
//! (required) and, from Warden, `iat`, a unique `jti` and an optional RFC 8693 `act` claim for
//! delegation. Validation refuses `alg: none`, symmetric algorithms (so a public key can never
//! be used as an HMAC secret), algorithms that do not match the key's type, unknown keys,
//! expired or not-yet-valid tokens (with bounded clock skew), the wrong audience, the wrong
//! trust domain, and anything malformed — each with its own error.

use std::{collections::BTreeMap, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
        UnparsedPublicKey,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::{SpiffeId, TrustDomain};

/// Longest token accepted, bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a JWT-SVID was refused, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is `none`, symmetric, or not one JWT-SVID allows.
    #[error("algorithm `{0}` is not allowed for JWT-SVIDs")]
    BadAlgorithm(String),
    /// `typ` is present and not `JWT` or `JOSE`.
    #[error("token type `{0}` is not allowed")]
    BadType(String),
    /// No `kid` in the header.
    #[error("token header has no key id")]
    MissingKeyId,
    /// `sub` is missing or not a SPIFFE ID.
    #[error("subject is not a SPIFFE ID: {0}")]
    BadSubject(String),
    /// The subject's trust domain is not trusted here.
    #[error("no bundle for trust domain `{0}`")]
    UnknownTrustDomain(String),
    /// The bundle has no key with this id.
    #[error("key `{kid}` is not in the bundle of `{trust_domain}`")]
    UnknownKey {
        /// Key id from the header.
        kid: String,
        /// Trust domain searched.
        trust_domain: String,
    },
    /// The key's type does not match `alg`.
    #[error("algorithm `{alg}` does not match the type of key `{kid}`")]
    AlgorithmKeyMismatch {
        /// Algorithm from the header.
        alg: String,
        /// Key id.
        kid: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// `exp` is missing.
    #[error("token has no expiry")]
    MissingExpiry,
    /// `exp` has passed.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// Expiry, seconds since the epoch.
        exp: i64,
        /// Validation time.
        now: i64,
    },
    /// `nbf` is in the future.
    #[error("token is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// Not-before, seconds since the epoch.
        nbf: i64,
        /// Validation time.
        now: i64,
    },
    /// The expected audience is not in `aud`.
    #[error("audience `{0}` is not in the token's audience")]
    WrongAudience(String),
    /// Minting input is invalid (empty audience, expiry before issue).
    #[error("cannot mint: {0}")]
    Invalid(String),
    /// A key could not be created or parsed.
    #[error("bad key: {0}")]
    BadKey(String),
    /// `iss` is not the expected issuer (access tokens).
    #[error("issuer `{0}` is not this server")]
    WrongIssuer(String),
    /// The header's `crit` names extensions this validator does not understand, or is not a
    /// non-empty list of names (RFC 7515 §4.1.11: such a token must be rejected).
    #[error("critical header parameter(s) {0} not understood")]
    UnsupportedCritical(String),
}

/// The claims of a JWT-SVID.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtSvidClaims {
    /// The workload's SPIFFE ID.
    pub sub: SpiffeId,
    /// Audiences (serialized as a string when there is one, per RFC 7519 §4.1.3).
    #[serde(with = "audience")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
    /// RFC 8693 actor claim: who acts on the subject's behalf (nested for chains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// Issuer URL, for OIDC verifiers (cloud workload identity federation); JWT-SVID itself
    /// does not need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

pub(crate) mod audience {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use serde_json::Value;

    pub(crate) fn serialize<S: Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
        match aud {
            [one] => s.serialize_str(one),
            many => s.collect_seq(many),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::String(one) => Ok(vec![one]),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(D::Error::custom("aud entries must be strings")),
                })
                .collect(),
            _ => Err(D::Error::custom(
                "aud must be a string or an array of strings",
            )),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) typ: Option<String>,
}

/// Algorithms JWT-SVID.md §3 allows. Warden signs with ES256 and verifies the EC ones it holds
/// keys for; the others are recognised so their refusal says "no such key type", not "bad alg".
const ALLOWED_ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
];

/// A JWT signing key (ECDSA P-256, ES256) with its key id.
pub struct JwtSigner {
    kid: String,
    pair: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtSigner({})", self.kid)
    }
}

impl JwtSigner {
    /// A fresh key. Its id is derived from the public key (RFC 7638-style thumbprint prefix).
    pub fn generate() -> Result<Self, JwtError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| JwtError::BadKey("key generation failed".into()))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Loads a PKCS#8 P-256 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, JwtError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| JwtError::BadKey(e.to_string()))?;
        let kid = thumbprint(pair.public_key().as_ref());
        Ok(Self {
            kid,
            pair,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
        })
    }

    /// The PKCS#8 encoding of the private key (secret).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a bundle entry.
    pub fn public_key(&self) -> JwtPublicKey {
        JwtPublicKey {
            kid: self.kid.clone(),
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `claims` as a JWT-SVID. Refuses an empty audience or `exp <= iat`.
    pub fn mint(&self, claims: &JwtSvidClaims) -> Result<String, JwtError> {
        if claims.aud.is_empty() || claims.aud.iter().any(String::is_empty) {
            return Err(JwtError::Invalid("audience must be non-empty".into()));
        }
        if claims.exp <= claims.iat {
            return Err(JwtError::Invalid("expiry must be after issue time".into()));
        }
        self.sign_jws("JWT", claims)
    }

    /// Signs `claims` as a compact JWS with ES256, this key's `kid` and header `typ`.
    pub(crate) fn sign_jws(&self, typ: &str, claims: &impl Serialize) -> Result<String, JwtError> {
        let header = Header {
            alg: "ES256".into(),
            kid: Some(self.kid.clone()),
            typ: Some(typ.into()),
        };
        let mut token = encode_json(&header)?;
        token.push('.');
        token.push_str(&encode_json(claims)?);
        let sig = self
            .pair
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|_| JwtError::BadKey("signing failed".into()))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Ok(token)
    }
}

#[cfg(test)]
impl JwtSigner {
    /// Signs exactly `header` and `claims` (JSON text) with this key: for crafting hostile
    /// tokens in tests.
    pub(crate) fn forge(&self, header: &str, claims: &str) -> String {
        let mut t = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), t.as_bytes())
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default();
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(sig));
        t
    }
}

fn encode_json(v: &impl Serialize) -> Result<String, JwtError> {
    let json = serde_json::to_vec(v).map_err(|e| JwtError::Invalid(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// A key id from the public point: the first 16 bytes of its SHA-256, base64url.
fn thumbprint(point: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, point);
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

/// A JWT verification key: P-256 public point (uncompressed SEC1) with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPublicKey {
    kid: String,
    pub(crate) point: Vec<u8>,
}

impl JwtPublicKey {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// As a JWK with `use` = `sig`, as OIDC discovery's `jwks_uri` serves it.
    pub fn to_oidc_jwk(&self) -> Value {
        let mut jwk = self.to_jwk();
        jwk["use"] = Value::from("sig");
        jwk
    }

    /// As a JWK (RFC 7517) with `use` = `jwt-svid`, as the SPIFFE bundle format wants.
    pub fn to_jwk(&self) -> Value {
        // INVARIANT: `point` is always 65 bytes, 0x04 || X || Y (from ring or `from_jwk`).
        let x = self.point.get(1..33).unwrap_or_default();
        let y = self.point.get(33..65).unwrap_or_default();
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "kid": self.kid,
            "use": "jwt-svid",
            "alg": "ES256",
        })
    }

    /// Parses a JWK holding a P-256 key with a `kid`.
    pub fn from_jwk(jwk: &Value) -> Result<Self, JwtError> {
        let field = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| JwtError::BadKey(format!("JWK has no string `{name}`")))
        };
        if field("kty")? != "EC" || field("crv")? != "P-256" {
            return Err(JwtError::BadKey("only EC P-256 JWKs are supported".into()));
        }
        let coord = |name: &str| -> Result<Vec<u8>, JwtError> {
            let raw = URL_SAFE_NO_PAD
                .decode(field(name)?)
                .map_err(|_| JwtError::BadKey(format!("JWK `{name}` is not base64url")))?;
            if raw.len() != 32 {
                return Err(JwtError::BadKey(format!("JWK `{name}` must be 32 bytes")));
            }
            Ok(raw)
        };
        let mut point = vec![0x04];
        point.extend(coord("x")?);
        point.extend(coord("y")?);
        let kid = field("kid")?;
        if kid.is_empty() {
            return Err(JwtError::BadKey("JWK `kid` is empty".into()));
        }
        Ok(Self {
            kid: kid.to_owned(),
            point,
        })
    }
}

/// The JWT authorities of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtBundle {
    /// Whose keys these are.
    pub trust_domain: TrustDomain,
    keys: BTreeMap<String, JwtPublicKey>,
}

impl JwtBundle {
    /// A bundle with these keys.
    pub fn new(trust_domain: TrustDomain, keys: impl IntoIterator<Item = JwtPublicKey>) -> Self {
        Self {
            trust_domain,
            keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect(),
        }
    }

    /// Looks a key up by id.
    pub fn key(&self, kid: &str) -> Option<&JwtPublicKey> {
        self.keys.get(kid)
    }

    /// The keys, by id.
    pub fn keys(&self) -> impl Iterator<Item = &JwtPublicKey> {
        self.keys.values()
    }
}

/// A compact JWS taken apart: its decoded header (its `alg` already on the allow-list) and its
/// still-encoded parts. Shared by JWT-SVID and access-token validation, which differ in the
/// `typ` they accept and where they find keys.
pub(crate) struct Jws<'t> {
    pub(crate) header: Header,
    pub(crate) claims_b64: &'t str,
    pub(crate) signature_b64: &'t str,
    /// The signing input: `header.claims` as sent.
    pub(crate) signed: &'t str,
}

/// Decodes one base64url part.
pub(crate) fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(format!("{what} is not base64url")))
}

/// Splits a compact JWS, decodes its header and refuses an algorithm off the allow-list
/// (`none` and every symmetric one among them).
pub(crate) fn split_jws(token: &str) -> Result<Jws<'_>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!(
            "longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let raw: Value = serde_json::from_slice(&decode_part(h64, "header")?)
        .map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    // RFC 7515 §4.1.11: "If any of the listed extension Header Parameters are not understood
    // and supported by the recipient, then the JWS is invalid", and `crit` must not be an
    // empty list nor anything but a list of names. No JWS extension is understood here, so a
    // header with `crit` at all — well-formed, empty, `null` or otherwise — is refused.
    let crit = raw.get("crit").cloned();
    let header: Header =
        serde_json::from_value(raw).map_err(|e| JwtError::Malformed(format!("header: {e}")))?;
    if !ALLOWED_ALGS.contains(&header.alg.as_str()) {
        return Err(JwtError::BadAlgorithm(header.alg));
    }
    if let Some(crit) = crit {
        let names = match &crit {
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|i| match i {
                    Value::String(name) => format!("`{name}`"),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            other => format!("(malformed: {other})"),
        };
        return Err(JwtError::UnsupportedCritical(names));
    }
    Ok(Jws {
        header,
        claims_b64: c64,
        signature_b64: s64,
        signed: &token[..h64.len() + 1 + c64.len()],
    })
}

/// Checks an ES256 signature over `jws` with the P-256 `key` named by `kid` (any other
/// algorithm cannot be a key Warden holds).
pub(crate) fn verify_es256(jws: &Jws<'_>, kid: &str, key: &JwtPublicKey) -> Result<(), JwtError> {
    if jws.header.alg != "ES256" {
        return Err(JwtError::AlgorithmKeyMismatch {
            alg: jws.header.alg.clone(),
            kid: kid.to_owned(),
        });
    }
    let sig = decode_part(jws.signature_b64, "signature")?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key.point)
        .verify(jws.signed.as_bytes(), &sig)
        .map_err(|_| JwtError::BadSignature)
}

/// Checks everything that does not depend on the clock or the audience: the token's shape,
/// algorithm, key, signature and claim types.
fn verify<'b>(
    token: &str,
    bundle_for: impl Fn(&TrustDomain) -> Option<&'b JwtBundle>,
) -> Result<Verified, JwtError> {
    let jws = split_jws(token)?;
    if let Some(typ) = jws
        .header
        .typ
        .as_deref()
        .filter(|t| *t != "JWT" && *t != "JOSE")
    {
        return Err(JwtError::BadType(typ.to_owned()));
    }
    let kid = jws.header.kid.clone().ok_or(JwtError::MissingKeyId)?;

    let payload = decode_part(jws.claims_b64, "claims")?;
    let raw: Value = serde_json::from_slice(&payload)
        .map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
    let sub = raw
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::BadSubject("missing".into()))?;
    let sub = SpiffeId::parse(sub).map_err(|e| JwtError::BadSubject(e.to_string()))?;
    let td = sub.trust_domain();
    let bundle = bundle_for(&td).ok_or_else(|| JwtError::UnknownTrustDomain(td.to_string()))?;
    let key = bundle.key(&kid).ok_or_else(|| JwtError::UnknownKey {
        kid: kid.clone(),
        trust_domain: td.to_string(),
    })?;
    verify_es256(&jws, &kid, key)?;

    // Signature is good: now the claims' meaning.
    if raw.get("exp").is_none() {
        return Err(JwtError::MissingExpiry);
    }
    let nbf = raw
        .get("nbf")
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| JwtError::Malformed("nbf is not an integer".into()))
        })
        .transpose()?;
    let claims: JwtSvidClaims =
        serde_json::from_value(raw).map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
    Ok(Verified {
        claims,
        nbf,
        kid,
        point: key.point.clone(),
    })
}

/// A token whose signature checked out, before its time and audience are checked.
#[derive(Debug, Clone)]
struct Verified {
    claims: JwtSvidClaims,
    nbf: Option<i64>,
    kid: String,
    point: Vec<u8>,
}

/// Time and audience: checked on every validation, cached or not.
fn check_claims(
    v: &Verified,
    audience: &str,
    now: i64,
    skew: i64,
) -> Result<JwtSvidClaims, JwtError> {
    if now > v.claims.exp.saturating_add(skew) {
        return Err(JwtError::Expired {
            exp: v.claims.exp,
            now,
        });
    }
    if let Some(nbf) = v.nbf {
        if now.saturating_add(skew) < nbf {
            return Err(JwtError::NotYetValid { nbf, now });
        }
    }
    if !v.claims.aud.iter().any(|a| a == audience) {
        return Err(JwtError::WrongAudience(audience.to_owned()));
    }
    Ok(v.claims.clone())
}

/// Validates a JWT-SVID for `audience` at time `now` (seconds), allowing `skew` seconds of
/// clock difference, with keys from `bundle_for(trust domain of sub)`.
pub fn validate<'b>(
    token: &str,
    audience: &str,
    now: i64,
    skew: i64,
    bundle_for: impl Fn(&TrustDomain) -> Option<&'b JwtBundle>,
) -> Result<JwtSvidClaims, JwtError> {
    check_claims(&verify(token, bundle_for)?, audience, now, skew)
}

/// Most verified signatures a [`Validator`] remembers.
const MAX_CACHED: u64 = 16_384;

/// Validation with a cache of verified signatures: services validate the same token many
/// times, and the ECDSA check dominates. A cached token is only trusted while the key that
/// signed it is still in the bundle; expiry, not-before and audience are checked every time.
///
/// The cache is bounded and evicts by use (TinyLFU): when it is full, a burst of new tokens
/// pushes out the least-used entries, never the hot ones all at once.
#[derive(Debug)]
pub struct Validator {
    cache: moka::sync::Cache<[u8; 32], Arc<Verified>>,
}

impl Default for Validator {
    fn default() -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED)
                // No JWT-SVID lives longer than a day; its entry need not either.
                .time_to_live(std::time::Duration::from_secs(86_400))
                .build(),
        }
    }
}

impl Validator {
    /// An empty validator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Same contract as [`validate`].
    pub fn validate<'b>(
        &self,
        token: &str,
        audience: &str,
        now: i64,
        skew: i64,
        bundle_for: impl Fn(&TrustDomain) -> Option<&'b JwtBundle>,
    ) -> Result<JwtSvidClaims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        if let Some(v) = self.cache.get(&digest) {
            let td = v.claims.sub.trust_domain();
            let still_trusted = bundle_for(&td)
                .and_then(|b| b.key(&v.kid))
                .is_some_and(|k| k.point == v.point);
            if still_trusted {
                return check_claims(&v, audience, now, skew);
            }
            self.cache.invalidate(&digest);
        }
        let v = verify(token, bundle_for)?;
        let result = check_claims(&v, audience, now, skew);
        self.cache.insert(digest, Arc::new(v));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_457_200;

    fn td() -> TrustDomain {
        TrustDomain::parse("example.org").unwrap()
    }

    fn claims() -> JwtSvidClaims {
        JwtSvidClaims {
            sub: SpiffeId::parse("spiffe://example.org/agent/coder").unwrap(),
            aud: vec!["warden".into()],
            exp: NOW + 300,
            iat: NOW,
            jti: "j-1".into(),
            act: None,
            iss: None,
        }
    }

    fn setup() -> (JwtSigner, JwtBundle) {
        let signer = JwtSigner::generate().unwrap();
        let bundle = JwtBundle::new(td(), [signer.public_key()]);
        (signer, bundle)
    }

    fn check(token: &str, bundle: &JwtBundle) -> Result<JwtSvidClaims, JwtError> {
        validate(token, "warden", NOW, 30, |t| {
            (t == &bundle.trust_domain).then_some(bundle)
        })
    }

    /// Re-signs `header`/`claims` JSON with `signer` (for crafting hostile tokens).
    fn forge(signer: &JwtSigner, header: &str, claims: &str) -> String {
        let mut t = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = signer
            .pair
            .sign(&SystemRandom::new(), t.as_bytes())
            .unwrap();
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        t
    }

    #[test]
    fn mint_and_validate_round_trip() {
        let (signer, bundle) = setup();
        let mut c = claims();
        c.act = Some(serde_json::json!({"sub": "spiffe://example.org/agent/planner"}));
        let token = signer.mint(&c).unwrap();
        assert_eq!(check(&token, &bundle).unwrap(), c);
        // Single audience is a string on the wire.
        let payload = token.split('.').nth(1).unwrap();
        let json: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(json["aud"], "warden");
        let header = token.split('.').next().unwrap();
        let json: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(json["alg"], "ES256");
        assert_eq!(json["kid"], signer.kid());
        assert_eq!(json["typ"], "JWT");
    }

    /// Every refusal the issue names, each with its own error.
    #[test]
    fn hostile_and_invalid_tokens_are_refused_precisely() {
        let (signer, bundle) = setup();
        let kid = signer.kid().to_owned();
        let good = signer.mint(&claims()).unwrap();
        let claims_json = serde_json::to_string(&claims()).unwrap();
        let header = |alg: &str| format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#);

        // alg none, with and without a signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header("none")),
            URL_SAFE_NO_PAD.encode(&claims_json)
        );
        assert_eq!(
            check(&none, &bundle),
            Err(JwtError::BadAlgorithm("none".into()))
        );
        // HS256 "signed" with the public key as the HMAC secret (algorithm confusion).
        let hs_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header("HS256")),
            URL_SAFE_NO_PAD.encode(&claims_json)
        );
        let mac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &signer.public_key().point);
        let tag = ring::hmac::sign(&mac_key, hs_input.as_bytes());
        let hs = format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(
            check(&hs, &bundle),
            Err(JwtError::BadAlgorithm("HS256".into()))
        );
        // An allowed algorithm that is not this key's type.
        let rs = forge(&signer, &header("RS256"), &claims_json);
        assert!(matches!(
            check(&rs, &bundle),
            Err(JwtError::AlgorithmKeyMismatch { .. })
        ));

        type Expect = fn(&JwtError) -> bool;
        let cases: Vec<(String, Expect)> = vec![
            ("".into(), |e| matches!(e, JwtError::Malformed(_))),
            ("a.b".into(), |e| matches!(e, JwtError::Malformed(_))),
            (format!("{good}.x"), |e| matches!(e, JwtError::Malformed(_))),
            ("x".repeat(MAX_TOKEN_LEN + 1), |e| {
                matches!(e, JwtError::Malformed(_))
            }),
            (good.replacen('.', "=.", 1), |e| {
                matches!(e, JwtError::Malformed(_))
            }),
            (
                forge(&signer, r#"{"alg":"ES256","typ":"JWT"}"#, &claims_json),
                |e| *e == JwtError::MissingKeyId,
            ),
            // RFC 7515 §4.1.11: a `crit` extension this validator does not understand.
            (
                forge(
                    &signer,
                    &format!(
                        r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT","crit":["b64"],"b64":false}}"#
                    ),
                    &claims_json,
                ),
                |e| matches!(e, JwtError::UnsupportedCritical(n) if n == "`b64`"),
            ),
            (
                forge(
                    &signer,
                    &format!(
                        r#"{{"alg":"ES256","kid":"{}","typ":"at+jwt"}}"#,
                        signer.kid()
                    ),
                    &claims_json,
                ),
                |e| matches!(e, JwtError::BadType(_)),
            ),
            (
                forge(
                    &signer,
                    &header("ES256"),
                    &claims_json
                        .replace("spiffe://example.org/agent/coder", "spiffe://other.org/x"),
                ),
                |e| matches!(e, JwtError::UnknownTrustDomain(_)),
            ),
            (
                forge(
                    &signer,
                    &header("ES256"),
                    &claims_json.replace("spiffe://example.org/agent/coder", "not-a-spiffe-id"),
                ),
                |e| matches!(e, JwtError::BadSubject(_)),
            ),
            (
                forge(
                    &signer,
                    &header("ES256").replace(signer.kid(), "other-kid"),
                    &claims_json,
                ),
                |e| matches!(e, JwtError::UnknownKey { .. }),
            ),
            (
                forge(
                    &JwtSigner::generate().unwrap(),
                    &header("ES256"),
                    &claims_json,
                ),
                |e| *e == JwtError::BadSignature,
            ),
            (
                forge(
                    &signer,
                    &header("ES256"),
                    &claims_json.replace(&format!("\"exp\":{},", NOW + 300), ""),
                ),
                |e| *e == JwtError::MissingExpiry,
            ),
            (
                forge(
                    &signer,
                    &header("ES256"),
                    &claims_json.replace(
                        &format!("\"exp\":{}", NOW + 300),
                        &format!("\"exp\":{}", NOW - 31),
                    ),
                ),
                |e| matches!(e, JwtError::Expired { .. }),
            ),
            (
                forge(
                    &signer,
                    &header("ES256"),
                    &claims_json.replace("\"jti\"", &format!("\"nbf\":{},\"jti\"", NOW + 31)),
                ),
                |e| matches!(e, JwtError::NotYetValid { .. }),
            ),
            (
                forge(
                    &signer,
                    &header("ES256"),
                    &claims_json.replace("\"warden\"", "\"someone-else\""),
                ),
                |e| matches!(e, JwtError::WrongAudience(_)),
            ),
        ];
        for (token, want) in cases {
            let got = check(&token, &bundle);
            assert!(
                got.as_ref().is_err_and(want),
                "{got:?} for {}",
                &token[..token.len().min(80)]
            );
        }
        // Tampering with the claims after signing breaks the signature.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(claims_json.replace("j-1", "j-2"));
        assert_eq!(
            check(&parts.join("."), &bundle),
            Err(JwtError::BadSignature)
        );
        // Within the skew, an just-expired token still passes; an array audience works.
        let mut c = claims();
        c.exp = NOW - 10;
        c.iat = NOW - 100;
        c.aud = vec!["a".into(), "warden".into()];
        assert!(check(&signer.mint(&c).unwrap(), &bundle).is_ok());
    }

    /// The cache changes speed, not answers: time and audience are checked on every call, and
    /// a token is no longer trusted once its key leaves the bundle.
    #[test]
    fn cached_validation_keeps_every_check() {
        let (signer, bundle) = setup();
        let token = signer.mint(&claims()).unwrap();
        let v = Validator::new();
        let with = |b: &JwtBundle, now: i64, aud: &str| {
            v.validate(&token, aud, now, 30, |t| {
                (t == &b.trust_domain).then_some(b)
            })
        };
        assert_eq!(with(&bundle, NOW, "warden").unwrap(), claims());
        assert_eq!(with(&bundle, NOW, "warden").unwrap(), claims(), "cached");
        assert!(matches!(
            with(&bundle, NOW + 1_000, "warden"),
            Err(JwtError::Expired { .. })
        ));
        assert!(matches!(
            with(&bundle, NOW, "other"),
            Err(JwtError::WrongAudience(_))
        ));
        let rotated = JwtBundle::new(td(), [JwtSigner::generate().unwrap().public_key()]);
        assert!(matches!(
            with(&rotated, NOW, "warden"),
            Err(JwtError::UnknownKey { .. })
        ));
        // A different token (tampered claims) is verified afresh, and refused.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(
            serde_json::to_string(&claims())
                .unwrap()
                .replace("j-1", "j-2"),
        );
        let tampered = parts.join(".");
        assert_eq!(
            v.validate(&tampered, "warden", NOW, 30, |_| Some(&bundle)),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn minting_refuses_nonsense() {
        let (signer, _) = setup();
        let mut c = claims();
        c.aud = vec![];
        assert!(signer.mint(&c).is_err());
        let mut c = claims();
        c.exp = c.iat;
        assert!(signer.mint(&c).is_err());
    }

    #[test]
    fn jwk_round_trip_and_key_reload() {
        let (signer, _) = setup();
        let jwk = signer.public_key().to_jwk();
        assert_eq!(jwk["use"], "jwt-svid");
        assert_eq!(JwtPublicKey::from_jwk(&jwk).unwrap(), signer.public_key());
        let again = JwtSigner::from_pkcs8(signer.pkcs8()).unwrap();
        assert_eq!(again.kid(), signer.kid());
        for bad in [
            serde_json::json!({"kty": "RSA", "crv": "P-256", "x": "", "y": "", "kid": "k"}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "k"}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k"}),
        ] {
            assert!(JwtPublicKey::from_jwk(&bad).is_err(), "{bad}");
        }
    }
}
