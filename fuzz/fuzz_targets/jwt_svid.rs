//! JWT-SVID validation on arbitrary JWS headers and claims, signed with the trusted key (so
//! the checks past the signature are reached), against `jsonwebtoken` (an independent JWT
//! implementation, with its own P-256 code) configured alike: ES256 only, audience `aud`,
//! 30 s of leeway, `exp` required, `nbf` checked.
//!
//! Input: the header JSON, a NUL byte, the claims JSON (no NUL: the whole input is the
//! claims under `{"alg":"ES256","kid":"$KID","typ":"JWT"}`). `$KID` stands for the key's id.
//!
//! Warden is stricter (a SPIFFE ID `sub`, `kid`, `iat`, `jti`, integer times, `typ`, `crit`,
//! duplicate names left to the last one), so: what Warden accepts, `jsonwebtoken` accepts
//! with the same subject, audience and expiry; and what `jsonwebtoken` accepts, Warden may
//! refuse only for one of its own rules, never for the signature, algorithm, time or audience.
//! Compared where both define the answer: a header of `alg`, `kid`, `typ` only and JSON
//! without duplicate member names.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use identity::jwt::{JwtBundle, JwtError, JwtSigner};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use libfuzzer_sys::fuzz_target;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

struct Keys {
    kid: String,
    bundle: JwtBundle,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signer = JwtSigner::generate().expect("a key");
        let public = signer.public_key();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(public.to_jwk()).expect("Warden's JWK parses");
        Keys {
            kid: signer.kid().to_owned(),
            bundle: JwtBundle::new(
                identity::TrustDomain::parse("example.org").expect("td"),
                [public],
            ),
            encoding: EncodingKey::from_ec_der(signer.pkcs8()),
            decoding: DecodingKey::from_jwk(&jwk).expect("decoding key"),
        }
    })
}

/// JSON whose objects have no duplicate member names (RFC 8259 §4 leaves their meaning open).
struct Unique;

impl<'de> de::Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(de::Error::custom("duplicate member"));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

fn unique(json: &[u8]) -> bool {
    serde_json::from_slice::<Unique>(json).is_ok()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fuzz_target!(|data: &[u8]| {
    use base64::Engine as _;
    let k = keys();
    let (header, claims) = match data.iter().position(|&b| b == 0) {
        Some(at) => (data[..at].to_vec(), &data[at + 1..]),
        None => (
            br#"{"alg":"ES256","kid":"$KID","typ":"JWT"}"#.to_vec(),
            data,
        ),
    };
    let header = String::from_utf8_lossy(&header).replace("$KID", &k.kid);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signed = format!("{}.{}", b64.encode(header.as_bytes()), b64.encode(claims));
    let Ok(signature) =
        jsonwebtoken::crypto::sign(signed.as_bytes(), &k.encoding, Algorithm::ES256)
    else {
        return;
    };
    let token = format!("{signed}.{signature}");

    let before = now();
    let warden = identity::jwt::validate(&token, "aud", before, 30, |td| {
        (td == &k.bundle.trust_domain).then_some(&k.bundle)
    });
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["aud"]);
    validation.leeway = 30;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "aud"]);
    let reference = jsonwebtoken::decode::<serde_json::Value>(&token, &k.decoding, &validation);
    if now() != before {
        return; // the clock moved between the two: their times differ
    }
    let header_json: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&header).ok();
    let comparable = unique(header.as_bytes())
        && unique(claims)
        && header_json.is_some_and(|h| {
            h.iter()
                .all(|(name, v)| ["alg", "kid", "typ"].contains(&name.as_str()) && v.is_string())
        });
    if !comparable {
        return;
    }
    match (&warden, &reference) {
        (Ok(mine), Ok(theirs)) => {
            assert_eq!(theirs.claims["sub"].as_str(), Some(mine.sub.as_str()));
            assert_eq!(theirs.claims["exp"].as_i64(), Some(mine.exp));
            let aud = match &theirs.claims["aud"] {
                serde_json::Value::String(one) => vec![one.clone()],
                other => serde_json::from_value::<Vec<String>>(other.clone()).unwrap_or_default(),
            };
            assert_eq!(aud, mine.aud);
        }
        (Ok(_), Err(e)) => panic!("jsonwebtoken refuses ({e:?}) what Warden accepts: {token}"),
        (Err(e), Ok(_)) => assert!(
            !matches!(
                e,
                JwtError::BadSignature
                    | JwtError::BadAlgorithm(_)
                    | JwtError::AlgorithmKeyMismatch { .. }
                    | JwtError::Expired { .. }
                    | JwtError::NotYetValid { .. }
                    | JwtError::WrongAudience(_)
            ),
            "Warden refuses ({e}) what jsonwebtoken accepts: {token}"
        ),
        (Err(_), Err(_)) => {}
    }
});
