//! The trust domain's certificate authority (ECDSA P-256) and X.509-SVID issuance exactly per
//! the SPIFFE X509-SVID specification (X509-SVID.md §4–5):
//!
//! - exactly one URI SAN, the SPIFFE ID, whose path is not empty (a leaf never carries the
//!   trust domain's own ID);
//! - leaf basic constraints critical with `cA=false`; key usage marked critical with
//!   `digitalSignature` and never `keyCertSign` or `cRLSign`; extended key usage `serverAuth`
//!   and `clientAuth`;
//! - the signing certificate has `cA=true`, `keyCertSign` (+ `cRLSign`) and the trust domain
//!   ID as its URI SAN;
//! - a random positive 128-bit serial; validity starts a little in the past (clock skew) and
//!   never outlives the CA.
//!
//! Every certificate is strict DER (X.690 §11), which strict parsers such as Python's
//! `cryptography` insist on. So key usage and a leaf's basic constraints are encoded here, not
//! by rcgen 0.13: it pads key usage to nine bits although a named bit list ends at its last bit
//! set (X.690 §11.2.2, RFC 5280 Appendix B), and writes a leaf's `cA FALSE` although DER leaves
//! a DEFAULT value out (X.690 §11.5). A leaf's subject key identifier, which rcgen writes only
//! together with basic constraints, is encoded here too.
//!
//! Keys never leave this module except as PKCS#8 for storage by the caller.

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
    SerialNumber,
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
    /// The upstream CA cannot be used (unreadable, inconsistent, expired).
    #[error("upstream CA: {0}")]
    Upstream(String),
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

/// `id-ce-basicConstraints` (RFC 5280 §4.2.1.9).
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
/// `id-ce-keyUsage` (RFC 5280 §4.2.1.3).
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
/// `id-ce-subjectKeyIdentifier` (RFC 5280 §4.2.1.2).
const OID_SUBJECT_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 14];

/// A leaf's basic constraints, critical: `SEQUENCE { cA BOOLEAN DEFAULT FALSE, … }` with `cA`
/// false is the empty SEQUENCE, since DER leaves a DEFAULT value out (X.690 §11.5).
fn leaf_basic_constraints() -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(OID_BASIC_CONSTRAINTS, vec![0x30, 0x00]);
    ext.set_criticality(true);
    ext
}

/// The bits of the key usage `BIT STRING` that Warden sets (RFC 5280 §4.2.1.3).
#[derive(Debug, Clone, Copy)]
enum KeyUsage {
    DigitalSignature = 0,
    KeyCertSign = 5,
    CrlSign = 6,
}

/// The key usage extension with exactly `usages`, critical (RFC 5280 §4.2.1.3: "conforming
/// CAs SHOULD mark this extension as critical"; X509-SVID.md §4.3 requires it). A named bit
/// list ends at its last bit set (X.690 §11.2.2).
fn key_usage(usages: &[KeyUsage]) -> CustomExtension {
    // Bit n of the BIT STRING is the n-th most significant bit here (RFC 5280 has 9 bits).
    let bits = usages
        .iter()
        .fold(0u16, |bits, usage| bits | (0x8000 >> *usage as u16));
    // INVARIANT: at most 16 bits, so every count below fits a byte.
    let used_bits = (16 - bits.trailing_zeros()) as u8;
    let used_bytes = used_bits.div_ceil(8);
    let unused_bits = used_bytes * 8 - used_bits;
    // BIT STRING: tag, length, the number of unused bits in the last byte, the bytes.
    let mut content = vec![0x03, 1 + used_bytes, unused_bits];
    content.extend_from_slice(&bits.to_be_bytes()[..usize::from(used_bytes)]);
    let mut ext = CustomExtension::from_oid_content(OID_KEY_USAGE, content);
    ext.set_criticality(true);
    ext
}

/// A leaf's subject key identifier: the leftmost 160 bits of the SHA-256 hash of the
/// `subjectPublicKey` bits (RFC 7093 §2 method 1). RFC 5280 §4.2.1.2: end entity certificates
/// SHOULD carry one.
fn subject_key_identifier(subject_public_key: &[u8]) -> CustomExtension {
    let digest = ring::digest::digest(&ring::digest::SHA256, subject_public_key);
    let mut content = vec![0x04, 20];
    content.extend_from_slice(&digest.as_ref()[..20]);
    CustomExtension::from_oid_content(OID_SUBJECT_KEY_IDENTIFIER, content)
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

/// An operator-supplied upstream CA that signs Warden's intermediate: its certificate chain
/// (the signing certificate first, up to and including a self-signed root) and its key.
pub struct UpstreamCa {
    key: KeyPair,
    issuer: rcgen::Certificate,
    chain: Vec<Vec<u8>>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for UpstreamCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UpstreamCa({} certificates, until {})",
            self.chain.len(),
            self.not_after
        )
    }
}

fn is_self_signed(cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw() && cert.verify_signature(None).is_ok()
}

fn parse_cert(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, CaError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| CaError::Upstream(format!("a certificate does not parse: {e}")))
}

impl UpstreamCa {
    /// Loads the upstream CA from PEM: `certs_pem` holds its certificate followed by the chain
    /// up to a self-signed root (a self-signed upstream is a chain of one); `key_pem` is its
    /// PKCS#8 private key (ECDSA P-256/P-384 or RSA).
    pub fn from_pem(certs_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let chain = crate::x509::certs_from_pem(certs_pem)
            .map_err(|e| CaError::Upstream(format!("certificate file: {e}")))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            CaError::Upstream(format!(
                "key file: {e} (a PKCS#8 `PRIVATE KEY` PEM is needed; convert with \
                 `openssl pkcs8 -topk8 -nocrypt`)"
            ))
        })?;
        let first = chain
            .first()
            .ok_or_else(|| CaError::Upstream("no certificate".into()))?;
        let signer = parse_cert(first)?;
        if signer.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::Upstream(
                "the key does not belong to the first certificate".into(),
            ));
        }
        match signer.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            _ => {
                return Err(CaError::Upstream(
                    "the first certificate is not a CA (basicConstraints cA=true)".into(),
                ));
            }
        }
        if let Ok(Some(ku)) = signer.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(CaError::Upstream(
                    "the first certificate may not sign certificates (no keyCertSign)".into(),
                ));
            }
        }
        for pair in chain.windows(2) {
            if let [lower, upper] = pair {
                let (lower, upper) = (parse_cert(lower)?, parse_cert(upper)?);
                if lower.issuer().as_raw() != upper.subject().as_raw()
                    || lower.verify_signature(Some(upper.public_key())).is_err()
                {
                    return Err(CaError::Upstream(format!(
                        "`{}` is not signed by the next certificate, `{}`: list the chain in order",
                        lower.subject(),
                        upper.subject()
                    )));
                }
            }
        }
        let last = chain.last().map(|d| parse_cert(d)).transpose()?;
        if !last.as_ref().is_some_and(is_self_signed) {
            return Err(CaError::Upstream(
                "the chain does not end in a self-signed root: append the root certificate".into(),
            ));
        }
        let not_after = signer.validity().not_after.to_datetime();
        let der = rustls_pki_types::CertificateDer::from(first.clone());
        let issuer = CertificateParams::from_ca_cert_der(&der)
            .map_err(|e| CaError::Upstream(e.to_string()))?
            .self_signed(&key)
            .map_err(|e| CaError::Upstream(e.to_string()))?;
        Ok(Self {
            key,
            issuer,
            chain,
            not_after,
        })
    }
}

/// A trust domain CA: a signing certificate and its key — a self-signed root, or an
/// intermediate signed by an [`UpstreamCa`].
pub struct Ca {
    trust_domain: TrustDomain,
    key: KeyPair,
    // Issuer description for rcgen (re-derived when loaded from storage: same subject and key,
    // so leaves chain to `cert_der`).
    cert: rcgen::Certificate,
    // The signing certificate exactly as first issued.
    cert_der: Vec<u8>,
    // Certificates above `cert_der` (upstream intermediates, then the upstream root); empty for
    // a self-signed root.
    upstream: Vec<Vec<u8>>,
    // What bundles carry: the root at the top of the chain.
    anchors: Vec<Vec<u8>>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({}, until {})", self.trust_domain, self.not_after)
    }
}

fn ca_params(
    trust_domain: &TrustDomain,
    name: &str,
    constraints: BasicConstraints,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Warden");
    dn.push(DnType::CommonName, format!("{trust_domain} {name}"));
    params.distinguished_name = dn;
    params.subject_alt_names = vec![uri_san(&trust_domain.id())?];
    // rcgen writes `cA TRUE` (and the path length) as DER wants it, with a subject key ID.
    params.is_ca = IsCa::Ca(constraints);
    params.custom_extensions = vec![key_usage(&[
        KeyUsage::DigitalSignature,
        KeyUsage::KeyCertSign,
        KeyUsage::CrlSign,
    ])];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    Ok(params)
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
        let mut params = ca_params(
            trust_domain,
            "root CA",
            BasicConstraints::Unconstrained,
            now,
            now + validity,
        )?;
        // A self-signed certificate has no authority to point at.
        params.use_authority_key_identifier_extension = false;
        let cert = params.self_signed(&key).map_err(crypto)?;
        let cert_der = cert.der().to_vec();
        Ok(Self {
            trust_domain: trust_domain.clone(),
            key,
            anchors: vec![cert_der.clone()],
            cert_der,
            cert,
            upstream: Vec::new(),
            not_after: now + validity,
        })
    }

    /// A new intermediate for `trust_domain` signed by `upstream`, valid from `now` for
    /// `validity` or until the upstream certificate expires, whichever is sooner. It may sign
    /// only leaves (path length 0).
    pub fn generate_intermediate(
        trust_domain: &TrustDomain,
        upstream: &UpstreamCa,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<Self, CaError> {
        if validity <= Duration::ZERO {
            return Err(CaError::BadTtl);
        }
        let not_after = (now + validity).min(upstream.not_after);
        if not_after <= now {
            return Err(CaError::Upstream(format!(
                "the upstream CA certificate expired at {}",
                upstream.not_after
            )));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let params = ca_params(
            trust_domain,
            "intermediate CA",
            BasicConstraints::Constrained(0),
            now,
            not_after,
        )?;
        let cert = params
            .signed_by(&key, &upstream.issuer, &upstream.key)
            .map_err(crypto)?;
        let mut stored = cert.der().to_vec();
        for der in &upstream.chain {
            stored.extend_from_slice(der);
        }
        let ca = Self::from_parts(trust_domain, &stored, &key.serialize_der())?;
        // Prove the chain before anything is signed with it: a leaf must verify to the root.
        let probe_id =
            SpiffeId::parse(&format!("{}/warden/probe", trust_domain.id())).map_err(crypto)?;
        let probe = ca.issue_x509_svid(&probe_id, Duration::minutes(1), now)?;
        let mut chain = vec![probe.cert_der];
        chain.extend(ca.svid_chain());
        crate::x509::verify_x509_svid(&chain, now, |_| Some(ca.anchors()))
            .map_err(|e| CaError::Upstream(format!("the new intermediate does not verify: {e}")))?;
        Ok(ca)
    }

    /// Loads a CA from its stored certificates (DER, back to back: the signing certificate,
    /// then for an intermediate its upstream chain up to the root) and private key (PKCS#8
    /// DER), checking that they belong together and to `trust_domain`.
    pub fn from_parts(
        trust_domain: &TrustDomain,
        stored_der: &[u8],
        key_pkcs8: &[u8],
    ) -> Result<Self, CaError> {
        let mut certs = crate::x509::split_der(stored_der)
            .map_err(|e| CaError::Crypto(format!("the stored CA certificates: {e}")))?
            .into_iter();
        let cert_der = certs
            .next()
            .ok_or_else(|| CaError::Crypto("no stored CA certificate".into()))?;
        let upstream: Vec<Vec<u8>> = certs.collect();
        let key = KeyPair::try_from(key_pkcs8).map_err(crypto)?;
        let der = rustls_pki_types::CertificateDer::from(cert_der.clone());
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
        let stored = parse_cert(&cert_der)?;
        if stored.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::Crypto(
                "the stored CA key does not match its certificate".into(),
            ));
        }
        let anchors = match upstream.last() {
            None if is_self_signed(&stored) => vec![cert_der.clone()],
            None => {
                return Err(CaError::Crypto(
                    "the stored CA is neither self-signed nor stored with its chain".into(),
                ));
            }
            Some(root) => vec![root.clone()],
        };
        Ok(Self {
            trust_domain: trust_domain.clone(),
            key,
            cert,
            cert_der,
            upstream,
            anchors,
            not_after,
        })
    }

    /// What to store: the signing certificate followed by its upstream chain, DER back to back
    /// (what [`Ca::from_parts`] reads).
    pub fn stored_der(&self) -> Vec<u8> {
        let mut out = self.cert_der.clone();
        for der in &self.upstream {
            out.extend_from_slice(der);
        }
        out
    }

    /// The trust anchors relying parties need (the root): what bundles carry.
    pub fn anchors(&self) -> &[Vec<u8>] {
        &self.anchors
    }

    /// The certificates a workload presents after its leaf: none under a self-signed root;
    /// this intermediate and the upstream intermediates otherwise.
    pub fn svid_chain(&self) -> Vec<Vec<u8>> {
        match self.upstream.split_last() {
            None => Vec::new(),
            Some((_root, intermediates)) => std::iter::once(self.cert_der.clone())
                .chain(intermediates.iter().cloned())
                .collect(),
        }
    }

    /// The CA's bundle key: its trust anchor as a SPIFFE `x509-svid` JWK.
    pub fn bundle_jwk(&self) -> serde_json::Value {
        crate::trust::TrustBundle::new(self.trust_domain.clone(), self.anchors.clone(), [])
            .to_json()["keys"][0]
            .clone()
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The signing certificate, DER (for a root, also what bundles carry).
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

    /// Checks an SVID request and builds its certificate parameters for `public_key`.
    fn svid_params(
        &self,
        id: &SpiffeId,
        public_key: &impl PublicKeyData,
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
        // Not `IsCa::ExplicitNoCa`: rcgen would write the DEFAULT `cA FALSE` (not DER).
        params.is_ca = IsCa::NoCa;
        params.custom_extensions = vec![
            key_usage(&[KeyUsage::DigitalSignature]),
            subject_key_identifier(public_key.der_bytes()),
            leaf_basic_constraints(),
        ];
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
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let (params, serial, not_after) = self.svid_params(id, &key, ttl, now)?;
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
        let (params, serial, not_after) = self.svid_params(id, &csr.public_key, ttl, now)?;
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

    /// An upstream root CA, as an operator would supply it.
    fn upstream() -> UpstreamCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Upstream Root CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params.not_before = now() - Duration::days(1);
        params.not_after = now() + Duration::days(3650);
        let cert = params.self_signed(&key).unwrap();
        UpstreamCa::from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
    }

    /// X.690 §11.2.2: a named bit list ends at its last bit set.
    #[test]
    fn key_usage_is_a_minimal_named_bit_list() {
        use KeyUsage::*;
        let cases: [(&[KeyUsage], &[u8]); 5] = [
            (&[], &[0x03, 0x01, 0x00]),
            (&[DigitalSignature], &[0x03, 0x02, 0x07, 0x80]),
            (&[KeyCertSign], &[0x03, 0x02, 0x02, 0x04]),
            (&[CrlSign, KeyCertSign], &[0x03, 0x02, 0x01, 0x06]),
            (
                &[DigitalSignature, KeyCertSign, CrlSign],
                &[0x03, 0x02, 0x01, 0x86],
            ),
        ];
        for (usages, want) in cases {
            let ext = key_usage(usages);
            assert_eq!(ext.content(), want, "{usages:?}");
            assert!(ext.criticality(), "{usages:?}");
        }
    }

    /// Strict DER in the two extensions Warden encodes itself, on every kind of certificate it
    /// makes: a leaf's basic constraints are the empty SEQUENCE (`cA` is DEFAULT FALSE, so DER
    /// leaves it out) and critical, whoever issued the leaf and however; key usage ends at its
    /// last bit set. x509-parser still reads a leaf as "not a CA".
    #[test]
    fn extensions_are_strict_der() {
        use x509_parser::oid_registry::{
            OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE,
            OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        };
        const LEAF_BC: &[u8] = &[0x30, 0x00];
        const ROOT_BC: &[u8] = &[0x30, 0x03, 0x01, 0x01, 0xff];
        const INTERMEDIATE_BC: &[u8] = &[0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00];
        // digitalSignature; digitalSignature, keyCertSign, cRLSign.
        const LEAF_KU: &[u8] = &[0x03, 0x02, 0x07, 0x80];
        const CA_KU: &[u8] = &[0x03, 0x02, 0x01, 0x86];

        let td = TrustDomain::parse("example.org").unwrap();
        let root = ca();
        let inter = Ca::generate_intermediate(&td, &upstream(), Duration::days(30), now()).unwrap();
        let id = SpiffeId::parse("spiffe://example.org/agent/coder").unwrap();
        let csr_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&csr_key)
            .unwrap()
            .pem()
            .unwrap();
        let leaf = |ca: &Ca| {
            ca.issue_x509_svid(&id, Duration::hours(1), now())
                .unwrap()
                .cert_der
        };
        let csr_leaf = |ca: &Ca| {
            ca.issue_x509_svid_for_csr(&id, &csr, Duration::hours(1), now())
                .unwrap()
                .0
        };
        let cases = [
            ("leaf from the root", leaf(&root), LEAF_BC, LEAF_KU),
            ("leaf from the root, CSR", csr_leaf(&root), LEAF_BC, LEAF_KU),
            ("leaf from an intermediate", leaf(&inter), LEAF_BC, LEAF_KU),
            (
                "leaf from an intermediate, CSR",
                csr_leaf(&inter),
                LEAF_BC,
                LEAF_KU,
            ),
            ("root", root.cert_der().to_vec(), ROOT_BC, CA_KU),
            (
                "intermediate",
                inter.cert_der().to_vec(),
                INTERMEDIATE_BC,
                CA_KU,
            ),
        ];
        for (what, der, bc, ku) in cases {
            let (rest, cert) = X509Certificate::from_der(&der).unwrap();
            assert!(rest.is_empty(), "{what}: trailing bytes");
            for (oid, name, want) in [
                (OID_X509_EXT_BASIC_CONSTRAINTS, "basicConstraints", bc),
                (OID_X509_EXT_KEY_USAGE, "keyUsage", ku),
            ] {
                let got = cert
                    .get_extension_unique(&oid)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{what}: no {name}"));
                assert_eq!(got.value, want, "{what}: {name}");
                assert!(got.critical, "{what}: {name} must be critical");
            }
            let ski = cert
                .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: no subjectKeyIdentifier"));
            assert!(!ski.critical, "{what}: subjectKeyIdentifier");
            let parsed = cert.basic_constraints().unwrap().unwrap();
            assert_eq!(parsed.value.ca, bc != LEAF_BC, "{what}: cA");
            assert!(parsed.critical, "{what}");
        }
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
