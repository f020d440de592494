//! The trust domain's certificate authority (ECDSA P-256) and X.509-SVID issuance exactly per
//! the SPIFFE X509-SVID specification (X509-SVID.md §4–5):
//!
//! - exactly one URI SAN, the SPIFFE ID, whose path is not empty (a leaf never carries the
//!   trust domain's own ID);
//! - leaf basic constraints `cA=false`; key usage marked critical with `digitalSignature` and
//!   never `keyCertSign` or `cRLSign`; extended key usage `serverAuth` and `clientAuth`;
//! - the signing certificate has `cA=true`, `keyCertSign` (+ `cRLSign`) and the trust domain
//!   ID as its URI SAN;
//! - a random positive 128-bit serial; validity starts a little in the past (clock skew) and
//!   never outlives the CA.
//!
//! Keys never leave this module except as PKCS#8 for storage by the caller.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::{SpiffeId, TrustDomain};

/// How far back a new certificate's validity starts, to tolerate clock skew.
pub const BACKDATE: Duration = Duration::seconds(30);

/// Why a certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The SPIFFE ID is not in this CA's trust domain.
    #[error("`{id}` is not in trust domain `{trust_domain}`")]
    ForeignId {
        /// The ID asked for.
        id: String,
        /// This CA's trust domain.
        trust_domain: String,
    },
    /// An X.509-SVID must name a workload, not the trust domain itself.
    #[error("`{0}` has no path: an X.509-SVID must not carry the trust domain's own ID")]
    RootId(String),
    /// A TTL that is zero or negative.
    #[error("ttl must be positive")]
    BadTtl,
    /// The CA has expired (or expires before the SVID would start).
    #[error("the CA certificate expired at {0}")]
    CaExpired(OffsetDateTime),
    /// The certificate signing request is malformed, not self-signed, or not P-256.
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    /// Key generation, encoding or signing failed.
    #[error("certificate error: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> CaError {
    CaError::Crypto(e.to_string())
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Crypto("no randomness".into()))?;
    // Positive and never a leading zero octet issue: clear the top bit, set the next one.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn uri_san(id: &SpiffeId) -> Result<SanType, CaError> {
    Ok(SanType::URI(id.as_str().try_into().map_err(crypto)?))
}

/// Checks that `csr_pem` is a self-signed PKCS#10 request for an ECDSA P-256 key, without
/// issuing anything (so a caller can refuse bad input before spending a one-time credential).
pub fn check_csr(csr_pem: &str) -> Result<(), CaError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CaError::BadCsr(e.to_string()))?;
    if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CaError::BadCsr("the key must be ECDSA P-256".into()));
    }
    Ok(())
}

/// A fresh ECDSA P-256 key and a certificate signing request for it, both PEM: what a workload
/// sends to obtain an X.509-SVID without its private key leaving the host.
pub fn new_key_and_csr() -> Result<(Zeroizing<String>, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(crypto)?
        .pem()
        .map_err(crypto)?;
    Ok((Zeroizing::new(key.serialize_pem()), csr))
}

/// PEM encoding of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    pem("CERTIFICATE", der)
}

/// PEM encoding (RFC 7468) of DER bytes under `label`, e.g. `PRIVATE KEY`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// An issued X.509-SVID: the leaf certificate, its private key, and the chain above it.
#[derive(Debug)]
pub struct X509Svid {
    /// The SPIFFE ID it carries.
    pub id: SpiffeId,
    /// Leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// Leaf private key, PKCS#8 DER (secret).
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// Serial number, big-endian bytes.
    pub serial: Vec<u8>,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// A trust domain CA: a signing certificate and its key.
pub struct Ca {
    trust_domain: TrustDomain,
    key: KeyPair,
    // Issuer description for rcgen (re-derived when loaded from storage: same subject and key,
    // so leaves chain to `cert_der`).
    cert: rcgen::Certificate,
    // The CA certificate exactly as first issued: what bundles carry.
    cert_der: Vec<u8>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({}, until {})", self.trust_domain, self.not_after)
    }
}

impl Ca {
    /// A new self-signed root for `trust_domain`, valid from `now` (backdated) for `validity`.
    pub fn generate_root(
        trust_domain: &TrustDomain,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<Self, CaError> {
        if validity <= Duration::ZERO {
            return Err(CaError::BadTtl);
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Warden");
        dn.push(DnType::CommonName, format!("{trust_domain} root CA"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![uri_san(&trust_domain.id())?];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let cert = params.self_signed(&key).map_err(crypto)?;
        Ok(Self {
            trust_domain: trust_domain.clone(),
            key,
            cert_der: cert.der().to_vec(),
            cert,
            not_after: now + validity,
        })
    }

    /// Loads a CA from its stored certificate (DER) and private key (PKCS#8 DER), checking
    /// that they belong together and to `trust_domain`.
    pub fn from_parts(
        trust_domain: &TrustDomain,
        cert_der: &[u8],
        key_pkcs8: &[u8],
    ) -> Result<Self, CaError> {
        let key = KeyPair::try_from(key_pkcs8).map_err(crypto)?;
        let der = rustls_pki_types::CertificateDer::from(cert_der.to_vec());
        let params = CertificateParams::from_ca_cert_der(&der).map_err(crypto)?;
        let wants = SanType::URI(trust_domain.id().as_str().try_into().map_err(crypto)?);
        if !params.subject_alt_names.contains(&wants) {
            return Err(CaError::Crypto(format!(
                "the stored CA certificate is not for trust domain `{trust_domain}`"
            )));
        }
        let not_after = params.not_after;
        let cert = params.self_signed(&key).map_err(crypto)?;
        // The re-derived certificate must carry the stored one's public key.
        let (_, stored) = x509_parser::parse_x509_certificate(cert_der).map_err(crypto)?;
        if stored.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::Crypto(
                "the stored CA key does not match its certificate".into(),
            ));
        }
        Ok(Self {
            trust_domain: trust_domain.clone(),
            key,
            cert,
            cert_der: cert_der.to_vec(),
            not_after,
        })
    }

    /// The CA as a SPIFFE bundle key (RFC 7517 JWK with `use` = `x509-svid` and the
    /// certificate in `x5c`).
    pub fn bundle_jwk(&self) -> serde_json::Value {
        use base64::{
            Engine,
            engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
        };
        // INVARIANT: P-256 public keys are 65 bytes, 0x04 || X || Y.
        let raw = self.key.public_key_raw();
        let x = raw.get(1..33).unwrap_or_default();
        let y = raw.get(33..65).unwrap_or_default();
        serde_json::json!({
            "use": "x509-svid",
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "x5c": [STANDARD.encode(&self.cert_der)],
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificate, DER (what bundles carry).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        cert_pem(&self.cert_der)
    }

    /// The CA private key, PKCS#8 DER (secret: encrypt before storing).
    pub fn key_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.serialize_der())
    }

    /// End of the CA's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Checks an SVID request and builds its certificate parameters.
    fn svid_params(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<(CertificateParams, SerialNumber, OffsetDateTime), CaError> {
        if !id.is_member_of(&self.trust_domain) {
            return Err(CaError::ForeignId {
                id: id.to_string(),
                trust_domain: self.trust_domain.to_string(),
            });
        }
        if id.path().is_empty() {
            return Err(CaError::RootId(id.to_string()));
        }
        if ttl <= Duration::ZERO {
            return Err(CaError::BadTtl);
        }
        if now >= self.not_after {
            return Err(CaError::CaExpired(self.not_after));
        }
        let serial = random_serial()?;
        let not_after = (now + ttl).min(self.not_after);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Warden");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![uri_san(id)?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial.clone());
        params.not_before = now - BACKDATE;
        params.not_after = not_after;
        Ok((params, serial, not_after))
    }

    /// Issues an X.509-SVID for `id` with a fresh P-256 key, valid for `ttl` from `now`
    /// (capped at the CA's own expiry).
    pub fn issue_x509_svid(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<X509Svid, CaError> {
        let (params, serial, not_after) = self.svid_params(id, ttl, now)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(crypto)?;
        Ok(X509Svid {
            id: id.clone(),
            cert_der: cert.der().to_vec(),
            key_pkcs8: Zeroizing::new(key.serialize_der()),
            serial: serial.to_bytes(),
            not_after,
        })
    }

    /// Issues an X.509-SVID for `id` over the public key of a PKCS#10 request (PEM), so the
    /// private key never leaves the workload. The request's signature must verify (proof of
    /// possession) and its key must be ECDSA P-256; everything else in it (names, extensions)
    /// is ignored: the SVID's contents are Warden's decision. Returns the leaf DER, its serial
    /// and its expiry.
    pub fn issue_x509_svid_for_csr(
        &self,
        id: &SpiffeId,
        csr_pem: &str,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<(Vec<u8>, Vec<u8>, OffsetDateTime), CaError> {
        check_csr(csr_pem)?;
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let (params, serial, not_after) = self.svid_params(id, ttl, now)?;
        let cert = params
            .signed_by(&csr.public_key, &self.cert, &self.key)
            .map_err(crypto)?;
        Ok((cert.der().to_vec(), serial.to_bytes(), not_after))
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::{
        extensions::{GeneralName, ParsedExtension},
        prelude::{FromDer, X509Certificate},
    };

    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_764_457_200).unwrap()
    }

    fn ca() -> Ca {
        Ca::generate_root(
            &TrustDomain::parse("example.org").unwrap(),
            Duration::days(365),
            now(),
        )
        .unwrap()
    }

    fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
        cert.subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(u) => Some((*u).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every X509-SVID.md rule for leaves and signing certificates, checked on the DER.
    #[test]
    fn svid_follows_the_x509_svid_spec() {
        let ca = ca();
        let id = SpiffeId::parse("spiffe://example.org/agent/coder").unwrap();
        let svid = ca.issue_x509_svid(&id, Duration::hours(1), now()).unwrap();
        let (_, leaf) = X509Certificate::from_der(&svid.cert_der).unwrap();

        assert_eq!(uri_sans(&leaf), vec![id.to_string()], "exactly one URI SAN");
        let bc = leaf
            .basic_constraints()
            .unwrap()
            .expect("basic constraints present");
        assert!(!bc.value.ca, "leaf must be cA=false");
        let ku = leaf.key_usage().unwrap().expect("key usage present");
        assert!(ku.critical, "key usage must be critical");
        assert!(ku.value.digital_signature());
        assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
        let eku = leaf.extended_key_usage().unwrap().expect("eku present");
        assert!(eku.value.server_auth && eku.value.client_auth);
        assert_eq!(
            leaf.validity().not_after.timestamp(),
            (now() + Duration::hours(1)).unix_timestamp()
        );
        assert_eq!(
            leaf.validity().not_before.timestamp(),
            (now() - BACKDATE).unix_timestamp()
        );
        assert_eq!(leaf.raw_serial(), svid.serial.as_slice());
        assert!(leaf.raw_serial()[0] & 0x80 == 0, "serial is positive");
        assert!(leaf.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));

        let (_, root) = X509Certificate::from_der(ca.cert_der()).unwrap();
        assert_eq!(uri_sans(&root), vec!["spiffe://example.org".to_owned()]);
        assert!(root.basic_constraints().unwrap().unwrap().value.ca);
        let root_ku = root.key_usage().unwrap().unwrap();
        assert!(root_ku.value.key_cert_sign());
        // The leaf is signed by the root.
        leaf.verify_signature(Some(root.public_key())).unwrap();
        assert_eq!(leaf.issuer(), root.subject());
    }

    #[test]
    fn refusals() {
        let ca = ca();
        let other = SpiffeId::parse("spiffe://other.org/x").unwrap();
        assert!(matches!(
            ca.issue_x509_svid(&other, Duration::hours(1), now()),
            Err(CaError::ForeignId { .. })
        ));
        let root = SpiffeId::parse("spiffe://example.org").unwrap();
        assert!(matches!(
            ca.issue_x509_svid(&root, Duration::hours(1), now()),
            Err(CaError::RootId(_))
        ));
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
        assert_eq!(
            ca.issue_x509_svid(&id, Duration::ZERO, now()).unwrap_err(),
            CaError::BadTtl
        );
        assert!(matches!(
            ca.issue_x509_svid(&id, Duration::hours(1), now() + Duration::days(366)),
            Err(CaError::CaExpired(_))
        ));
        // Never outlives the CA.
        let late = ca
            .issue_x509_svid(&id, Duration::days(30), ca.not_after() - Duration::days(1))
            .unwrap();
        assert_eq!(late.not_after, ca.not_after());
    }

    /// A CA stored and loaded again issues SVIDs that chain to the stored certificate.
    #[test]
    fn stored_ca_reloads_and_still_chains() {
        let td = TrustDomain::parse("example.org").unwrap();
        let first = ca();
        let loaded = Ca::from_parts(&td, first.cert_der(), &first.key_pkcs8()).unwrap();
        assert_eq!(loaded.cert_der(), first.cert_der());
        assert_eq!(
            loaded.not_after().unix_timestamp(),
            first.not_after().unix_timestamp()
        );
        assert_eq!(loaded.bundle_jwk(), first.bundle_jwk());
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
        let svid = loaded
            .issue_x509_svid(&id, Duration::hours(1), now())
            .unwrap();
        let (_, leaf) = X509Certificate::from_der(&svid.cert_der).unwrap();
        let (_, root) = X509Certificate::from_der(first.cert_der()).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        assert_eq!(leaf.issuer(), root.subject());
        // Mismatched parts are refused.
        let other = ca();
        assert!(Ca::from_parts(&td, first.cert_der(), &other.key_pkcs8()).is_err());
        let elsewhere = TrustDomain::parse("other.org").unwrap();
        assert!(Ca::from_parts(&elsewhere, first.cert_der(), &first.key_pkcs8()).is_err());
        assert!(Ca::from_parts(&td, b"not der", &first.key_pkcs8()).is_err());
    }

    /// A CSR's key is certified; its own names and extensions are not.
    #[test]
    fn csr_issuance_uses_only_the_key() {
        let ca = ca();
        let id = SpiffeId::parse("spiffe://example.org/agent/remote").unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        // The request asks for other names, including another workload's SPIFFE ID.
        let mut req = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        req.subject_alt_names.push(SanType::URI(
            "spiffe://example.org/admin".try_into().unwrap(),
        ));
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let (der, serial, _) = ca
            .issue_x509_svid_for_csr(&id, &csr, Duration::hours(1), now())
            .unwrap();
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(uri_sans(&leaf), vec![id.to_string()]);
        assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
        assert_eq!(leaf.raw_serial(), serial.as_slice());
        assert_eq!(
            leaf.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        // Garbage and non-P-256 keys are refused.
        assert!(matches!(
            ca.issue_x509_svid_for_csr(&id, "not a csr", Duration::hours(1), now()),
            Err(CaError::BadCsr(_))
        ));
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let csr384 = CertificateParams::default()
            .serialize_request(&p384)
            .unwrap()
            .pem()
            .unwrap();
        assert!(matches!(
            ca.issue_x509_svid_for_csr(&id, &csr384, Duration::hours(1), now()),
            Err(CaError::BadCsr(_))
        ));
    }

    #[test]
    fn serials_are_unique() {
        let ca = ca();
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let svid = ca
                .issue_x509_svid(&id, Duration::minutes(5), now())
                .unwrap();
            assert!(seen.insert(svid.serial));
        }
    }

    /// `openssl verify` and `openssl x509 -text` (a tool nobody here wrote) agree.
    #[test]
    fn openssl_verifies_the_chain_and_shows_the_required_extensions() {
        let Ok(version) = std::process::Command::new("openssl")
            .arg("version")
            .output()
        else {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "skipped: openssl is not installed");
            return;
        };
        assert!(version.status.success());
        let real_now = OffsetDateTime::now_utc();
        let ca = Ca::generate_root(
            &TrustDomain::parse("example.org").unwrap(),
            Duration::days(1),
            real_now,
        )
        .unwrap();
        let id = SpiffeId::parse("spiffe://example.org/agent/coder").unwrap();
        let svid = ca
            .issue_x509_svid(&id, Duration::hours(1), real_now)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (root_pem, leaf_pem) = (dir.path().join("root.pem"), dir.path().join("leaf.pem"));
        std::fs::write(&root_pem, ca.cert_pem()).unwrap();
        let leaf = cert_pem(&svid.cert_der);
        std::fs::write(&leaf_pem, leaf).unwrap();
        let verify = std::process::Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(&root_pem)
            .arg(&leaf_pem)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let text = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&leaf_pem)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        for want in [
            "URI:spiffe://example.org/agent/coder",
            "CA:FALSE",
            "X509v3 Key Usage: critical",
            "Digital Signature",
            "TLS Web Server Authentication, TLS Web Client Authentication",
            "ecdsa-with-SHA256",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
        assert!(!text.contains("Certificate Sign"), "{text}");
    }
}
