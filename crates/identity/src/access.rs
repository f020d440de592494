//! OAuth 2.0 access tokens in the JWT profile of RFC 9068, as Warden's token endpoint issues
//! them: header `typ: at+jwt`, ES256 with the trust domain's access-token key, and the claims
//! `iss`, `sub`, `aud`, `client_id`, `iat`, `exp`, `jti`, `scope`, plus Warden's `task`, the
//! RFC 8693 `act` delegation chain, the RFC 8705 `cnf` certificate binding and RFC 9396
//! `authorization_details`.
//!
//! Access tokens are signed with their own key ([`AccessTokenSigner`]), never with a JWT-SVID
//! key (RFC 8725 §3.12: distinct kinds of JWT get distinct keys). Access-token keys are not in
//! the SPIFFE bundle and JWT-SVID keys are not among the access-token keys, so even with its
//! `typ` stripped or rewritten (and re-signed by the holder of either key) neither kind of
//! token passes for the other: the key it names is not one the other validator looks in.
//!
//! Validation is strict in the same ways as JWT-SVID validation (no `none`, no symmetric or
//! mismatched algorithm, `kid` required, no `crit`, bounded skew), also requires the `at+jwt`
//! type and the issuer, and checks the audience the caller expects (RFC 9068 §4).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    SpiffeId,
    jwt::{JwtError, JwtPublicKey, JwtSigner, decode_part, split_jws, verify_es256},
};

/// A key that signs access tokens and nothing else. It is an ES256 key like a JWT-SVID key but
/// a different one, kept in its own type so a JWT-SVID key cannot mint an access token.
#[derive(Debug)]
pub struct AccessTokenSigner(JwtSigner);

impl AccessTokenSigner {
    /// A fresh key.
    pub fn generate() -> Result<Self, JwtError> {
        JwtSigner::generate().map(Self)
    }

    /// Loads a PKCS#8 P-256 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, JwtError> {
        JwtSigner::from_pkcs8(pkcs8).map(Self)
    }

    /// The PKCS#8 encoding of the private key (secret).
    pub fn pkcs8(&self) -> &[u8] {
        self.0.pkcs8()
    }

    /// The key id (`kid`), derived from the public key.
    pub fn kid(&self) -> &str {
        self.0.kid()
    }

    /// The public key, for the access-token JWK set.
    pub fn public_key(&self) -> JwtPublicKey {
        self.0.public_key()
    }

    /// Signs `claims` as an RFC 9068 access token. Refuses an empty audience or
    /// `exp <= iat`.
    pub fn mint(&self, claims: &AccessTokenClaims) -> Result<String, JwtError> {
        if claims.aud.is_empty() || claims.aud.iter().any(String::is_empty) {
            return Err(JwtError::Invalid("audience must be non-empty".into()));
        }
        if claims.exp <= claims.iat {
            return Err(JwtError::Invalid("expiry must be after issue time".into()));
        }
        self.0.sign_jws(ACCESS_TOKEN_TYPE, claims)
    }
}

/// Which audience the validating party expects (RFC 9068 §4: a resource server must check
/// that `aud` names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// A resource server: `aud` must contain exactly this identifier.
    Is(&'a str),
    /// The issuing authorization server itself, looking at a token it issued for someone else:
    /// introspecting it for a resource server (RFC 7662, which reports `aud` to the caller),
    /// revoking it (RFC 7009), or taking it as a token exchange's subject token (RFC 8693,
    /// where the new token's audience may only narrow the old one's). `aud` is not matched
    /// here; the caller must use it.
    IssuerInspection,
}

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

/// Validates an access token issued by `issuer` for `audience` at time `now` (seconds),
/// allowing `skew` seconds of clock difference, with the issuer's access-token keys looked up
/// by `kid` (RFC 9068 §4). `key_for` must find only access-token keys, never JWT-SVID keys.
pub fn validate_access_token<'k>(
    token: &str,
    issuer: &str,
    audience: Audience<'_>,
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
    if let Audience::Is(expected) = audience {
        if !claims.aud.iter().any(|a| a == expected) {
            return Err(JwtError::WrongAudience(expected.to_owned()));
        }
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
    const RS: &str = "https://api.example.org";

    fn claims() -> AccessTokenClaims {
        AccessTokenClaims {
            iss: ISS.into(),
            sub: SpiffeId::parse("spiffe://example.org/agent/planner").unwrap(),
            aud: vec![RS.into()],
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

    fn svid_claims() -> JwtSvidClaims {
        JwtSvidClaims {
            sub: claims().sub,
            aud: vec![ISS.into()],
            exp: NOW + 300,
            iat: NOW,
            jti: "j".into(),
            act: None,
            iss: Some(ISS.into()),
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
        let signer = AccessTokenSigner::generate().unwrap();
        let other = AccessTokenSigner::generate().unwrap();
        let key = signer.public_key();
        let keys = |kid: &str| (kid == key.kid()).then_some(&key);
        let token = signer.mint(&claims()).unwrap();
        let back = validate_access_token(&token, ISS, Audience::Is(RS), NOW + 1, 0, keys).unwrap();
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
        // The issuer inspecting its own token does not match the audience.
        assert_eq!(
            validate_access_token(&token, ISS, Audience::IssuerInspection, NOW, 0, keys).unwrap(),
            claims()
        );

        let parts: Vec<&str> = token.split('.').collect();
        let body: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let kid = key.kid().to_owned();
        let header = |extra: Value| {
            let mut h = serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
            for (k, v) in extra.as_object().unwrap() {
                h[k] = v.clone();
            }
            h.to_string()
        };
        let body_text = body.to_string();
        type Case<'a> = (String, &'a str, &'a str, i64, fn(&JwtError) -> bool);
        let cases: Vec<Case> = vec![
            (
                forge(
                    &serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
                    &body,
                    b"",
                ),
                ISS,
                RS,
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
                RS,
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
                RS,
                NOW,
                |e| matches!(e, JwtError::AlgorithmKeyMismatch { .. }),
            ),
            (other.mint(&claims()).unwrap(), ISS, RS, NOW, |e| {
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
                RS,
                NOW,
                |e| matches!(e, JwtError::BadSignature),
            ),
            (token.clone(), "https://other", RS, NOW, |e| {
                matches!(e, JwtError::WrongIssuer(_))
            }),
            // RFC 9068 §4: a resource server that is not in `aud` refuses the token.
            (
                token.clone(),
                ISS,
                "https://other.example.org",
                NOW,
                |e| matches!(e, JwtError::WrongAudience(a) if a == "https://other.example.org"),
            ),
            (token.clone(), ISS, RS, NOW + 301, |e| {
                matches!(e, JwtError::Expired { .. })
            }),
            // RFC 7515 §4.1.11: a critical extension nobody here understands, even signed
            // by the right key, and every malformed `crit`.
            (
                signer.0.forge(
                    &header(serde_json::json!({"crit": ["exp"], "exp": 1})),
                    &body_text,
                ),
                ISS,
                RS,
                NOW,
                |e| matches!(e, JwtError::UnsupportedCritical(n) if n == "`exp`"),
            ),
            (
                signer
                    .0
                    .forge(&header(serde_json::json!({"crit": []})), &body_text),
                ISS,
                RS,
                NOW,
                |e| matches!(e, JwtError::UnsupportedCritical(_)),
            ),
            (
                signer
                    .0
                    .forge(&header(serde_json::json!({"crit": null})), &body_text),
                ISS,
                RS,
                NOW,
                |e| matches!(e, JwtError::UnsupportedCritical(_)),
            ),
            (
                signer
                    .0
                    .forge(&header(serde_json::json!({"crit": "b64"})), &body_text),
                ISS,
                RS,
                NOW,
                |e| matches!(e, JwtError::UnsupportedCritical(_)),
            ),
            ("a.b".into(), ISS, RS, NOW, |e| {
                matches!(e, JwtError::Malformed(_))
            }),
            ("x".repeat(MAX_TOKEN_LEN + 1), ISS, RS, NOW, |e| {
                matches!(e, JwtError::Malformed(_))
            }),
        ];
        for (i, (token, iss, aud, now, want)) in cases.into_iter().enumerate() {
            let err =
                validate_access_token(&token, iss, Audience::Is(aud), now, 0, keys).unwrap_err();
            assert!(want(&err), "case {i}: {err:?}");
        }
        // The same header without `crit` is accepted: the refusals above are for `crit` alone.
        let plain = signer.0.forge(&header(serde_json::json!({})), &body_text);
        assert!(validate_access_token(&plain, ISS, Audience::Is(RS), NOW, 0, keys).is_ok());
    }

    /// RFC 8725 §3.12: JWT-SVIDs and access tokens are signed with different keys, so neither
    /// passes for the other even when its `typ` is rewritten or stripped and the token is
    /// re-signed by the holder of the key that signed it.
    #[test]
    fn neither_kind_passes_for_the_other_whatever_its_typ() {
        let svid_signer = JwtSigner::generate().unwrap();
        let at_signer = AccessTokenSigner::generate().unwrap();
        let svid_bundle = crate::jwt::JwtBundle::new(
            crate::TrustDomain::parse("example.org").unwrap(),
            [svid_signer.public_key()],
        );
        let at_key = at_signer.public_key();
        let at_keys = |kid: &str| (kid == at_key.kid()).then_some(&at_key);
        assert_ne!(svid_signer.kid(), at_signer.kid());

        // A JWT-SVID, and the same claims made to look like an access token: its `typ`
        // rewritten, re-signed with the JWT-SVID key.
        let at_body = serde_json::to_string(&AccessTokenClaims {
            aud: vec![ISS.into(), RS.into()],
            ..claims()
        })
        .unwrap();
        let svid_kid = svid_signer.kid().to_owned();
        for typ in [Some("at+jwt"), Some("application/at+jwt")] {
            let mut h = serde_json::json!({"alg": "ES256", "kid": svid_kid});
            if let Some(t) = typ {
                h["typ"] = t.into();
            }
            let forged = svid_signer.forge(&h.to_string(), &at_body);
            for aud in [Audience::Is(RS), Audience::IssuerInspection] {
                let err = validate_access_token(&forged, ISS, aud, NOW, 0, at_keys).unwrap_err();
                assert!(
                    matches!(err, JwtError::UnknownKey { ref kid, .. } if *kid == svid_kid),
                    "{typ:?}: {err:?}"
                );
            }
        }
        let svid = svid_signer.mint(&svid_claims()).unwrap();
        let err = validate_access_token(&svid, ISS, Audience::IssuerInspection, NOW, 0, at_keys)
            .unwrap_err();
        assert!(
            matches!(err, JwtError::BadType(ref t) if t == "jwt"),
            "{err:?}"
        );

        // An access token, and one re-signed with the access-token key with its `typ` made
        // that of a JWT-SVID, or stripped, carrying JWT-SVID claims.
        let svid_body = serde_json::to_string(&svid_claims()).unwrap();
        let at_kid = at_signer.kid().to_owned();
        for typ in [Some("JWT"), Some("JOSE"), None] {
            let mut h = serde_json::json!({"alg": "ES256", "kid": at_kid});
            if let Some(t) = typ {
                h["typ"] = t.into();
            }
            let forged = at_signer.0.forge(&h.to_string(), &svid_body);
            let err =
                crate::jwt::validate(&forged, ISS, NOW, 0, |_| Some(&svid_bundle)).unwrap_err();
            assert!(
                matches!(err, JwtError::UnknownKey { ref kid, .. } if *kid == at_kid),
                "{typ:?}: {err:?}"
            );
            let err = crate::jwt::Validator::new()
                .validate(&forged, ISS, NOW, 0, |_| Some(&svid_bundle))
                .unwrap_err();
            assert!(
                matches!(err, JwtError::UnknownKey { .. }),
                "{typ:?}: {err:?}"
            );
        }
        let token = at_signer.mint(&claims()).unwrap();
        let err = crate::jwt::validate(&token, RS, NOW, 0, |_| Some(&svid_bundle)).unwrap_err();
        assert!(matches!(err, JwtError::BadType(_)), "{err:?}");
        // Each validates with its own keys.
        assert!(crate::jwt::validate(&svid, ISS, NOW, 0, |_| Some(&svid_bundle)).is_ok());
        assert!(validate_access_token(&token, ISS, Audience::Is(RS), NOW, 0, at_keys).is_ok());
    }
}
