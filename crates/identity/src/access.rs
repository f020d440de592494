//! OAuth 2.0 access tokens in the JWT profile of RFC 9068, as Warden's token endpoint issues
//! them: header `typ: at+jwt`, ES256 with one of the trust domain's JWT keys, and the claims
//! `iss`, `sub`, `aud`, `client_id`, `iat`, `exp`, `jti`, `scope`, plus Warden's `task`, the
//! RFC 8693 `act` delegation chain, the RFC 8705 `cnf` certificate binding and RFC 9396
//! `authorization_details`.
//!
//! Validation is strict in the same ways as JWT-SVID validation (no `none`, no symmetric or
//! mismatched algorithm, `kid` required, bounded skew) and also requires the `at+jwt` type,
//! so a JWT-SVID can never pass as an access token nor an access token as a JWT-SVID.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    SpiffeId,
    jwt::{JwtError, JwtPublicKey, JwtSigner, decode_part, split_jws, verify_es256},
};

/// The media type RFC 9068 §2.1 puts in `typ`.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// The issuer (Warden's public URL).
    pub iss: String,
    /// On whose behalf: the agent at the start of the delegation chain.
    pub sub: SpiffeId,
    /// Resource servers it is for.
    #[serde(with = "crate::jwt::audience")]
    pub aud: Vec<String>,
    /// The agent that holds it (the last actor when delegated, else `sub`).
    pub client_id: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Token id; also the id of its lease's handle.
    pub jti: String,
    /// Space-separated scopes (RFC 8693 §4.2).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// The task it was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// RFC 8693 §4.1 actor: the current actor, with earlier actors nested in its `act`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// RFC 8705 §3.1 confirmation: `{"x5t#S256": …}` of the client certificate it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Value>,
    /// RFC 9396 authorization details granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Value>,
}

impl AccessTokenClaims {
    /// The scopes, split.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    /// The actors of the `act` chain, most recent first (each `act.sub`).
    pub fn actors(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = self.act.as_ref();
        while let Some(act) = cur {
            match act.get("sub").and_then(Value::as_str) {
                Some(sub) => out.push(sub.to_owned()),
                None => break,
            }
            cur = act.get("act");
        }
        out
    }
}

impl JwtSigner {
    /// Signs `claims` as an RFC 9068 access token. Refuses an empty audience or
    /// `exp <= iat`.
    pub fn mint_access_token(&self, claims: &AccessTokenClaims) -> Result<String, JwtError> {
        if claims.aud.is_empty() || claims.aud.iter().any(String::is_empty) {
            return Err(JwtError::Invalid("audience must be non-empty".into()));
        }
        if claims.exp <= claims.iat {
            return Err(JwtError::Invalid("expiry must be after issue time".into()));
        }
        self.sign_jws(ACCESS_TOKEN_TYPE, claims)
    }
}

/// Validates an access token issued by `issuer` at time `now` (seconds), allowing `skew`
/// seconds of clock difference, with the issuer's keys looked up by `kid`. The audience is the
/// caller's to check (introspection reports it; a resource server compares it to itself).
pub fn validate_access_token<'k>(
    token: &str,
    issuer: &str,
    now: i64,
    skew: i64,
    key_for: impl Fn(&str) -> Option<&'k JwtPublicKey>,
) -> Result<AccessTokenClaims, JwtError> {
    let jws = split_jws(token)?;
    // RFC 9068 §4: resource servers must check the type; the media type may be spelled out.
    let typ = jws
        .header
        .typ
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if typ != ACCESS_TOKEN_TYPE && typ != "application/at+jwt" {
        return Err(JwtError::BadType(typ));
    }
    let kid = jws.header.kid.clone().ok_or(JwtError::MissingKeyId)?;
    let key = key_for(&kid).ok_or_else(|| JwtError::UnknownKey {
        kid: kid.clone(),
        trust_domain: issuer.to_owned(),
    })?;
    verify_es256(&jws, &kid, key)?;
    let raw: Value = serde_json::from_slice(&decode_part(jws.claims_b64, "claims")?)
        .map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
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
    let claims: AccessTokenClaims =
        serde_json::from_value(raw).map_err(|e| JwtError::Malformed(format!("claims: {e}")))?;
    if claims.iss != issuer {
        return Err(JwtError::WrongIssuer(claims.iss));
    }
    if now > claims.exp.saturating_add(skew) {
        return Err(JwtError::Expired {
            exp: claims.exp,
            now,
        });
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(skew) < nbf {
            return Err(JwtError::NotYetValid { nbf, now });
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;
    use crate::jwt::JwtSvidClaims;
    use crate::jwt::MAX_TOKEN_LEN;

    const NOW: i64 = 1_764_457_200;
    const ISS: &str = "https://warden.example.org";

    fn claims() -> AccessTokenClaims {
        AccessTokenClaims {
            iss: ISS.into(),
            sub: SpiffeId::parse("spiffe://example.org/agent/planner").unwrap(),
            aud: vec!["https://api.example.org".into()],
            client_id: "spiffe://example.org/agent/coder".into(),
            iat: NOW,
            exp: NOW + 300,
            jti: "tok_1".into(),
            scope: "repo:read repo:write".into(),
            task: Some("T-1".into()),
            act: Some(
                serde_json::json!({"sub": "spiffe://example.org/agent/coder",
                "act": {"sub": "spiffe://example.org/agent/helper"}}),
            ),
            cnf: None,
            authorization_details: None,
        }
    }

    fn forge(header: &Value, claims: &Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let signer = JwtSigner::generate().unwrap();
        let other = JwtSigner::generate().unwrap();
        let key = signer.public_key();
        let keys = |kid: &str| (kid == key.kid()).then_some(&key);
        let token = signer.mint_access_token(&claims()).unwrap();
        let back = validate_access_token(&token, ISS, NOW + 1, 0, keys).unwrap();
        assert_eq!(back, claims());
        assert_eq!(
            back.scopes().collect::<Vec<_>>(),
            ["repo:read", "repo:write"]
        );
        assert_eq!(
            back.actors(),
            [
                "spiffe://example.org/agent/coder",
                "spiffe://example.org/agent/helper"
            ]
        );

        let parts: Vec<&str> = token.split('.').collect();
        let body: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let kid = key.kid().to_owned();
        let svid = signer
            .mint(&JwtSvidClaims {
                sub: claims().sub,
                aud: claims().aud,
                exp: NOW + 300,
                iat: NOW,
                jti: "j".into(),
                act: None,
                iss: Some(ISS.into()),
            })
            .unwrap();
        type Case<'a> = (String, &'a str, i64, fn(&JwtError) -> bool);
        let cases: Vec<Case> = vec![
            (
                forge(
                    &serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
                    &body,
                    b"",
                ),
                ISS,
                NOW,
                |e| matches!(e, JwtError::BadAlgorithm(a) if a == "none"),
            ),
            (
                forge(
                    &serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}),
                    &body,
                    b"x",
                ),
                ISS,
                NOW,
                |e| matches!(e, JwtError::BadAlgorithm(a) if a == "HS256"),
            ),
            (
                forge(
                    &serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": kid}),
                    &body,
                    b"x",
                ),
                ISS,
                NOW,
                |e| matches!(e, JwtError::AlgorithmKeyMismatch { .. }),
            ),
            (
                svid,
                ISS,
                NOW,
                |e| matches!(e, JwtError::BadType(t) if t == "jwt"),
            ),
            (other.mint_access_token(&claims()).unwrap(), ISS, NOW, |e| {
                matches!(e, JwtError::UnknownKey { .. })
            }),
            (
                format!(
                    "{}.{}.{}",
                    parts[0],
                    parts[1],
                    URL_SAFE_NO_PAD.encode([7u8; 64])
                ),
                ISS,
                NOW,
                |e| matches!(e, JwtError::BadSignature),
            ),
            (token.clone(), "https://other", NOW, |e| {
                matches!(e, JwtError::WrongIssuer(_))
            }),
            (token.clone(), ISS, NOW + 301, |e| {
                matches!(e, JwtError::Expired { .. })
            }),
            ("a.b".into(), ISS, NOW, |e| {
                matches!(e, JwtError::Malformed(_))
            }),
            ("x".repeat(MAX_TOKEN_LEN + 1), ISS, NOW, |e| {
                matches!(e, JwtError::Malformed(_))
            }),
        ];
        for (i, (token, iss, now, want)) in cases.into_iter().enumerate() {
            let err = validate_access_token(&token, iss, now, 0, keys).unwrap_err();
            assert!(want(&err), "case {i}: {err:?}");
        }
        // A JWT-SVID validator refuses an access token.
        let bundle = crate::jwt::JwtBundle::new(
            crate::TrustDomain::parse("example.org").unwrap(),
            [signer.public_key()],
        );
        let err =
            crate::jwt::validate(&token, "https://api.example.org", NOW, 0, |_| Some(&bundle))
                .unwrap_err();
        assert!(matches!(err, JwtError::BadType(_)), "{err:?}");
    }
}
