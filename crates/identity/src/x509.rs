//! X.509-SVID verification as a SPIFFE relying party must do it (X509-SVID.md §5).
//!
//! - §5.1 path validation: RFC 5280 semantics, done by `rustls-webpki` (signatures, validity,
//!   basic constraints and path length, name constraints, extended key usage `clientAuth` or
//!   `serverAuth`) against the X.509 authorities of the leaf's own trust domain only, so one
//!   trust domain's CA can never vouch for another's IDs. webpki does not implement URI name
//!   constraints and refuses any chain that carries them (fail closed, as §4.2 foresees).
//! - §5.2 leaf validation, done here on the parsed leaf: exactly one URI SAN (§2), a valid
//!   SPIFFE ID with a non-root path (§3.1), `cA` not true (§4.1), key usage present with
//!   `digitalSignature` and without `keyCertSign` or `cRLSign` (§4.3).
//! - Signing certificates presented as intermediates must be CAs with `keyCertSign` (§3.2).
//! - Beyond RFC 5280 §6.1.1 (where a trust anchor is only a name and a key), the bundle
//!   certificate the path ends at must itself be within its validity, as Go's `crypto/x509`
//!   (go-spiffe) and OpenSSL require. When a bundle holds several certificates for the same
//!   name and key (a renewed root), any one that is valid will do.
//!
//! Pure: no I/O. Trust bundles come from the caller.

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime, pem::PemObject};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage, VerifiedPath};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

use crate::{SpiffeId, TrustDomain};

/// A verified X.509-SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedX509Svid {
    /// The SPIFFE ID the leaf carries.
    pub id: SpiffeId,
    /// The leaf's serial number: lowercase hex of its big-endian magnitude, leading zero
    /// octets (the DER sign octet) removed, so it equals the hex of
    /// [`X509Svid::serial`](crate::ca::X509Svid::serial) for SVIDs Warden issued.
    pub serial_hex: String,
    /// Serials (same hex form) of the intermediates presented, in the order presented.
    pub intermediate_serials_hex: Vec<String>,
    /// End of the leaf's validity.
    pub not_after: OffsetDateTime,
}

/// Why a certificate chain is not a valid X.509-SVID.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum X509Error {
    /// No certificate at all.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// PEM text without any `CERTIFICATE` block.
    #[error("no `CERTIFICATE` block in the PEM text")]
    NoPemCertificates,
    /// A certificate (or the PEM around it) does not parse, or has bytes after it.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The leaf has no URI SAN, so no SPIFFE ID.
    #[error("the leaf has no URI SAN: an X.509-SVID carries its SPIFFE ID as its only URI SAN")]
    NoSpiffeId,
    /// The leaf has more than one URI SAN (X509-SVID.md §2: must be rejected).
    #[error("the leaf has more than one URI SAN: an X.509-SVID must have exactly one")]
    MultipleUriSans,
    /// The leaf's URI SAN is not a valid SPIFFE ID; the reason says why.
    #[error("the leaf's URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(String),
    /// The leaf carries a trust domain's own ID (no path), which only signing certificates may.
    #[error("the leaf's SPIFFE ID `{0}` has no path: a leaf must name a workload")]
    LeafIdWithoutPath(String),
    /// The leaf has basic constraints `cA=true`.
    #[error("the leaf is a CA certificate (basic constraints cA=true)")]
    LeafIsCa,
    /// The leaf has no key usage extension.
    #[error("the leaf has no key usage extension")]
    LeafNoKeyUsage,
    /// The leaf's key usage includes `keyCertSign`.
    #[error("the leaf's key usage includes keyCertSign")]
    LeafKeyCertSign,
    /// The leaf's key usage includes `cRLSign`.
    #[error("the leaf's key usage includes cRLSign")]
    LeafCrlSign,
    /// The leaf's key usage lacks `digitalSignature`.
    #[error("the leaf's key usage lacks digitalSignature")]
    LeafNoDigitalSignature,
    /// A certificate presented as an intermediate is not a CA (basic constraints missing or
    /// `cA=false`).
    #[error("an intermediate certificate is not a CA (basic constraints cA is not true)")]
    IntermediateNotCa,
    /// An intermediate CA's key usage is missing or lacks `keyCertSign`.
    #[error("an intermediate certificate's key usage is missing or lacks keyCertSign")]
    IntermediateNoKeyCertSign,
    /// There are no X.509 authorities for the leaf's trust domain.
    #[error("no X.509 bundle for trust domain `{0}`")]
    UnknownTrustDomain(String),
    /// A certificate in the trust domain's bundle does not parse.
    #[error("bad trust bundle: {0}")]
    BadBundle(String),
    /// The chain does not build to a trust anchor of the leaf's trust domain; webpki's reason.
    #[error("the certificate chain is not trusted: {0}")]
    Untrusted(String),
    /// The chain's extended key usage allows neither TLS client nor TLS server authentication.
    #[error("the chain's extended key usage allows neither clientAuth nor serverAuth")]
    WrongExtendedKeyUsage,
    /// A certificate of the chain (leaf, intermediate or trust anchor) has expired.
    #[error("a certificate in the chain expired at {not_after}")]
    Expired {
        /// End of the expired certificate's validity.
        not_after: OffsetDateTime,
    },
    /// A certificate of the chain (leaf, intermediate or trust anchor) is not valid yet.
    #[error("a certificate in the chain is not valid before {not_before}")]
    NotYetValid {
        /// Start of that certificate's validity.
        not_before: OffsetDateTime,
    },
}

impl X509Error {
    /// A stable snake_case code for logs, metrics and API responses.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptyChain => "x509_empty_chain",
            Self::NoPemCertificates => "x509_no_pem_certificates",
            Self::Malformed(_) => "x509_malformed",
            Self::NoSpiffeId => "x509_no_spiffe_id",
            Self::MultipleUriSans => "x509_multiple_uri_sans",
            Self::BadSpiffeId(_) => "x509_bad_spiffe_id",
            Self::LeafIdWithoutPath(_) => "x509_leaf_id_without_path",
            Self::LeafIsCa => "x509_leaf_is_ca",
            Self::LeafNoKeyUsage => "x509_leaf_no_key_usage",
            Self::LeafKeyCertSign => "x509_leaf_key_cert_sign",
            Self::LeafCrlSign => "x509_leaf_crl_sign",
            Self::LeafNoDigitalSignature => "x509_leaf_no_digital_signature",
            Self::IntermediateNotCa => "x509_intermediate_not_ca",
            Self::IntermediateNoKeyCertSign => "x509_intermediate_no_key_cert_sign",
            Self::UnknownTrustDomain(_) => "x509_unknown_trust_domain",
            Self::BadBundle(_) => "x509_bad_bundle",
            Self::Untrusted(_) => "x509_untrusted",
            Self::WrongExtendedKeyUsage => "x509_wrong_eku",
            Self::Expired { .. } => "x509_expired",
            Self::NotYetValid { .. } => "x509_not_yet_valid",
        }
    }
}

/// Parses one whole certificate: no bytes may follow it.
fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, X509Error> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| X509Error::Malformed(format!("{what}: {e}")))?;
    if !rest.is_empty() {
        return Err(X509Error::Malformed(format!(
            "{what}: trailing data after the certificate ({} bytes)",
            rest.len()
        )));
    }
    Ok(cert)
}

/// Splits the Workload API's concatenated-DER form (several certificates back to back) into
/// single certificates, rejecting trailing garbage.
pub fn split_der(concatenated: &[u8]) -> Result<Vec<Vec<u8>>, X509Error> {
    if concatenated.is_empty() {
        return Err(X509Error::EmptyChain);
    }
    let mut certs = Vec::new();
    let mut rest = concatenated;
    while !rest.is_empty() {
        let (after, _) = X509Certificate::from_der(rest).map_err(|e| {
            X509Error::Malformed(format!(
                "certificate #{} of the concatenated DER: {e}",
                certs.len()
            ))
        })?;
        // INVARIANT: `after` is a suffix of `rest`, so the certificate is what precedes it.
        let (cert, _) = rest.split_at(rest.len() - after.len());
        certs.push(cert.to_vec());
        rest = after;
    }
    Ok(certs)
}

/// Parses every `CERTIFICATE` block of PEM text (other blocks ignored) into DER; errors if
/// there is none. Each block must hold exactly one certificate.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, X509Error> {
    let mut certs = Vec::new();
    for block in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = block.map_err(|e| X509Error::Malformed(format!("PEM: {e}")))?;
        parse_cert(&der, &format!("PEM certificate #{}", certs.len()))?;
        certs.push(der.to_vec());
    }
    if certs.is_empty() {
        return Err(X509Error::NoPemCertificates);
    }
    Ok(certs)
}

/// Lowercase hex of a raw DER serial with leading zero octets removed (one kept for zero).
fn serial_hex(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw.get(start..)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The leaf's SPIFFE ID (X509-SVID.md §2, §3.1, §5.2).
fn leaf_spiffe_id(leaf: &X509Certificate<'_>) -> Result<SpiffeId, X509Error> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| X509Error::Malformed(format!("leaf subject alternative name: {e}")))?;
    let uris: Vec<&str> = san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let uri = match uris.as_slice() {
        [] => return Err(X509Error::NoSpiffeId),
        [uri] => *uri,
        _ => return Err(X509Error::MultipleUriSans),
    };
    let id = SpiffeId::parse(uri).map_err(|e| X509Error::BadSpiffeId(e.to_string()))?;
    if id.path().is_empty() {
        return Err(X509Error::LeafIdWithoutPath(id.to_string()));
    }
    Ok(id)
}

/// The leaf is not a CA and may sign but not certify (X509-SVID.md §4.1, §4.3, §5.2).
fn check_leaf_usage(leaf: &X509Certificate<'_>) -> Result<(), X509Error> {
    let bc = leaf
        .basic_constraints()
        .map_err(|e| X509Error::Malformed(format!("leaf basic constraints: {e}")))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(X509Error::LeafIsCa);
    }
    let ku = leaf
        .key_usage()
        .map_err(|e| X509Error::Malformed(format!("leaf key usage: {e}")))?
        .ok_or(X509Error::LeafNoKeyUsage)?;
    if ku.value.key_cert_sign() {
        return Err(X509Error::LeafKeyCertSign);
    }
    if ku.value.crl_sign() {
        return Err(X509Error::LeafCrlSign);
    }
    if !ku.value.digital_signature() {
        return Err(X509Error::LeafNoDigitalSignature);
    }
    Ok(())
}

/// A presented intermediate is a signing certificate (X509-SVID.md §3.2, §4.1, §4.3).
fn check_signing_cert(cert: &X509Certificate<'_>, what: &str) -> Result<(), X509Error> {
    let bc = cert
        .basic_constraints()
        .map_err(|e| X509Error::Malformed(format!("{what} basic constraints: {e}")))?;
    if !bc.is_some_and(|bc| bc.value.ca) {
        return Err(X509Error::IntermediateNotCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| X509Error::Malformed(format!("{what} key usage: {e}")))?;
    if !ku.is_some_and(|ku| ku.value.key_cert_sign()) {
        return Err(X509Error::IntermediateNoKeyCertSign);
    }
    Ok(())
}

/// `now` for webpki. Instants before 1970 become the epoch, when nothing Warden deals with is
/// valid yet.
fn unix_time(t: OffsetDateTime) -> UnixTime {
    let secs = u64::try_from(t.unix_timestamp()).unwrap_or(0);
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

fn unix_time_from_secs(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(secs).unwrap_or(0),
    ))
}

fn datetime(t: UnixTime) -> Option<OffsetDateTime> {
    let secs = i64::try_from(t.as_secs()).ok()?;
    OffsetDateTime::from_unix_timestamp(secs).ok()
}

fn is_eku_error(e: &webpki::Error) -> bool {
    #[expect(
        deprecated,
        reason = "webpki 0.103 still documents the context-free variant as a possible result"
    )]
    let old = matches!(e, webpki::Error::RequiredEkuNotFound);
    old || matches!(e, webpki::Error::RequiredEkuNotFoundContext(_))
}

fn from_webpki(e: webpki::Error) -> X509Error {
    match &e {
        webpki::Error::CertExpired { not_after, .. } => {
            if let Some(not_after) = datetime(*not_after) {
                return X509Error::Expired { not_after };
            }
        }
        webpki::Error::CertNotValidYet { not_before, .. } => {
            if let Some(not_before) = datetime(*not_before) {
                return X509Error::NotYetValid { not_before };
            }
        }
        _ if is_eku_error(&e) => return X509Error::WrongExtendedKeyUsage,
        _ => {}
    }
    X509Error::Untrusted(e.to_string())
}

/// A bundle certificate as a webpki trust anchor, with its validity (seconds since the epoch).
struct Anchor<'a> {
    anchor: TrustAnchor<'a>,
    not_before: i64,
    not_after: i64,
}

/// Verifies `chain` (leaf first, then intermediates in any order, DER) at `now`: the leaf is an
/// X.509-SVID per X509-SVID.md §5.2, every intermediate is a signing certificate, and the
/// chain builds per RFC 5280 (signatures, validity, basic constraints, name constraints,
/// extended key usage `clientAuth`, or failing that `serverAuth`) to one of the trust anchors
/// (DER) that `bundle_for` returns for the leaf's trust domain.
pub fn verify_x509_svid<'b>(
    chain: &[Vec<u8>],
    now: OffsetDateTime,
    bundle_for: impl Fn(&TrustDomain) -> Option<&'b [Vec<u8>]>,
) -> Result<VerifiedX509Svid, X509Error> {
    let (leaf_der, intermediates_der) = chain.split_first().ok_or(X509Error::EmptyChain)?;
    let leaf = parse_cert(leaf_der, "leaf")?;
    let intermediates = intermediates_der
        .iter()
        .enumerate()
        .map(|(i, der)| parse_cert(der, &format!("intermediate #{i}")))
        .collect::<Result<Vec<_>, _>>()?;

    // X509-SVID.md §5.2, before any trust decision: what the leaf claims to be.
    let id = leaf_spiffe_id(&leaf)?;
    check_leaf_usage(&leaf)?;
    for (i, cert) in intermediates.iter().enumerate() {
        check_signing_cert(cert, &format!("intermediate #{i}"))?;
    }

    // Only the leaf's own trust domain's authorities may vouch for it.
    let trust_domain = id.trust_domain();
    let bundle = bundle_for(&trust_domain)
        .filter(|bundle| !bundle.is_empty())
        .ok_or_else(|| X509Error::UnknownTrustDomain(trust_domain.to_string()))?;
    let bundle_ders: Vec<CertificateDer<'_>> = bundle
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let mut anchors = Vec::with_capacity(bundle_ders.len());
    for (i, der) in bundle_ders.iter().enumerate() {
        let what = format!("certificate #{i} for trust domain `{trust_domain}`");
        let parsed = parse_cert(der, &what).map_err(|e| match e {
            X509Error::Malformed(reason) => X509Error::BadBundle(reason),
            other => other,
        })?;
        let anchor = webpki::anchor_from_trusted_cert(der)
            .map_err(|e| X509Error::BadBundle(format!("{what}: {e}")))?;
        anchors.push(Anchor {
            anchor,
            not_before: parsed.validity().not_before.timestamp(),
            not_after: parsed.validity().not_after.timestamp(),
        });
    }
    let trust_anchors: Vec<TrustAnchor<'_>> = anchors.iter().map(|a| a.anchor.clone()).collect();

    // RFC 5280 path validation.
    let leaf_cert = CertificateDer::from(leaf_der.as_slice());
    let end_entity = EndEntityCert::try_from(&leaf_cert).map_err(from_webpki)?;
    let intermediate_certs: Vec<CertificateDer<'_>> = intermediates_der
        .iter()
        .map(|der| CertificateDer::from(der.as_slice()))
        .collect();
    let time = unix_time(now);
    let secs = now.unix_timestamp();
    // The anchor a path ends at must be valid too (see the module docs); webpki then tries
    // other anchors and paths.
    let anchor_is_valid = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
        let mut error = webpki::Error::UnknownIssuer;
        for candidate in anchors.iter().filter(|a| &a.anchor == path.anchor()) {
            if secs < candidate.not_before {
                error = webpki::Error::CertNotValidYet {
                    time,
                    not_before: unix_time_from_secs(candidate.not_before),
                };
            } else if secs > candidate.not_after {
                error = webpki::Error::CertExpired {
                    time,
                    not_after: unix_time_from_secs(candidate.not_after),
                };
            } else {
                return Ok(());
            }
        }
        Err(error)
    };
    let verify = |usage: KeyUsage| {
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &trust_anchors,
                &intermediate_certs,
                time,
                usage,
                None,
                Some(&anchor_is_valid),
            )
            .map(|_| ())
    };
    match verify(KeyUsage::client_auth()) {
        Err(e) if is_eku_error(&e) => verify(KeyUsage::server_auth()),
        other => other,
    }
    .map_err(from_webpki)?;

    Ok(VerifiedX509Svid {
        id,
        serial_hex: serial_hex(leaf.raw_serial()),
        intermediate_serials_hex: intermediates
            .iter()
            .map(|cert| serial_hex(cert.raw_serial()))
            .collect(),
        not_after: leaf.validity().not_after.to_datetime(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
        ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose, NameConstraints,
        PKCS_ECDSA_P256_SHA256, SanType,
    };
    use time::Duration;

    use super::*;
    use crate::ca::{Ca, cert_pem};

    const LEAF_ID: &str = "spiffe://example.org/workload";

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_764_457_200).unwrap()
    }

    /// A certificate and its key, able to sign others.
    struct Issuer {
        key: KeyPair,
        cert: rcgen::Certificate,
    }

    impl Issuer {
        fn der(&self) -> Vec<u8> {
            self.cert.der().to_vec()
        }
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    /// A signing certificate, valid from a day before `at` for a month.
    fn ca_params(name: &str, id: &str, at: OffsetDateTime) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![uri(id)];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = at - Duration::days(1);
        params.not_after = at + Duration::days(30);
        params
    }

    /// A leaf as X509-SVID.md wants it, valid for an hour either side of `at`.
    fn leaf_params(id: &str, at: OffsetDateTime) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![uri(id)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = at - Duration::hours(1);
        params.not_after = at + Duration::hours(1);
        params
    }

    fn self_signed(params: CertificateParams) -> Issuer {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        Issuer { key, cert }
    }

    fn signed(params: CertificateParams, by: &Issuer) -> Issuer {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &by.cert, &by.key).unwrap();
        Issuer { key, cert }
    }

    fn root(at: OffsetDateTime) -> Issuer {
        self_signed(ca_params("example.org root CA", "spiffe://example.org", at))
    }

    /// An intermediate of the trust domain (pathlen 0), signed by `by`.
    fn intermediate(
        by: &Issuer,
        at: OffsetDateTime,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Issuer {
        let mut params = ca_params("example.org intermediate CA", "spiffe://example.org", at);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        edit(&mut params);
        signed(params, by)
    }

    /// A leaf for `LEAF_ID` signed by `by`, after `edit`.
    fn leaf(by: &Issuer, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params = leaf_params(LEAF_ID, now());
        edit(&mut params);
        signed(params, by).der()
    }

    type Bundles = Vec<(&'static str, Vec<Vec<u8>>)>;

    fn verify_with(
        chain: &[Vec<u8>],
        at: OffsetDateTime,
        bundles: &Bundles,
    ) -> Result<VerifiedX509Svid, X509Error> {
        verify_x509_svid(chain, at, |td| {
            bundles
                .iter()
                .find(|(name, _)| *name == td.as_str())
                .map(|(_, certs)| certs.as_slice())
        })
    }

    /// What a refusal must be: exactly this error, or (where the message is another crate's
    /// wording) this code.
    enum Want {
        Is(X509Error),
        Code(&'static str),
    }

    struct Case {
        rule: &'static str,
        chain: Vec<Vec<u8>>,
        /// Trust bundles; `None` for example.org → its root, other.org → its root.
        bundles: Option<Bundles>,
        want: Want,
    }

    /// One row per X509-SVID.md / RFC 5280 rule: the exact refusal.
    #[test]
    fn each_rule_refuses_with_its_own_error() {
        let root = root(now());
        let other_root = self_signed(ca_params("other.org root CA", "spiffe://other.org", now()));
        let inter = intermediate(&root, now(), |_| {});
        let good_leaf = leaf(&root, |_| {});
        let id_error = |uri: &str| SpiffeId::parse(uri).unwrap_err().to_string();

        let not_ca = intermediate(&root, now(), |p| p.is_ca = IsCa::ExplicitNoCa);
        let no_bc = intermediate(&root, now(), |p| p.is_ca = IsCa::NoCa);
        let no_cert_sign = intermediate(&root, now(), |p| {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign]
        });
        let expired_inter = intermediate(&root, now(), |p| {
            p.not_before = now() - Duration::days(2);
            p.not_after = now() - Duration::hours(1);
        });
        let code_signing_inter = intermediate(&root, now(), |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning]
        });
        // pathlen 0: may not sign another CA.
        let sub_inter = intermediate(&inter, now(), |p| {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "example.org sub-intermediate CA");
            p.distinguished_name = dn;
        });
        let dns_constrained = intermediate(&root, now(), |p| {
            p.name_constraints = Some(NameConstraints {
                permitted_subtrees: vec![GeneralSubtree::DnsName("example.org".into())],
                excluded_subtrees: vec![],
            })
        });
        let uri_constrained = intermediate(&root, now(), |p| {
            p.custom_extensions = vec![uri_name_constraints("example.org")]
        });
        let impostor = self_signed(ca_params(
            "example.org root CA",
            "spiffe://example.org",
            now(),
        ));
        let mut expired_root_params =
            ca_params("example.org root CA", "spiffe://example.org", now());
        expired_root_params.not_before = now() - Duration::days(30);
        expired_root_params.not_after = now() - Duration::hours(2);
        let expired_root = self_signed(expired_root_params);
        let mut future_root_params =
            ca_params("example.org root CA", "spiffe://example.org", now());
        future_root_params.not_before = now() + Duration::hours(2);
        let future_root = self_signed(future_root_params);

        let mut with_trailing = good_leaf.clone();
        with_trailing.push(0);

        let cases = vec![
            Case {
                rule: "a chain needs a leaf",
                chain: vec![],
                bundles: None,
                want: Want::Is(X509Error::EmptyChain),
            },
            Case {
                rule: "the leaf must parse",
                chain: vec![b"not a certificate".to_vec()],
                bundles: None,
                want: Want::Code("x509_malformed"),
            },
            Case {
                rule: "nothing may follow a certificate",
                chain: vec![with_trailing],
                bundles: None,
                want: Want::Is(X509Error::Malformed(
                    "leaf: trailing data after the certificate (1 bytes)".into(),
                )),
            },
            Case {
                rule: "intermediates must parse",
                chain: vec![good_leaf.clone(), vec![0x30, 0x03, 0x02, 0x01, 0x01]],
                bundles: None,
                want: Want::Code("x509_malformed"),
            },
            Case {
                rule: "§2: the leaf needs a URI SAN (no SAN at all)",
                chain: vec![leaf(&root, |p| p.subject_alt_names = vec![])],
                bundles: None,
                want: Want::Is(X509Error::NoSpiffeId),
            },
            Case {
                rule: "§2: the leaf needs a URI SAN (DNS SAN only)",
                chain: vec![leaf(&root, |p| {
                    p.subject_alt_names =
                        vec![SanType::DnsName("workload.example.org".try_into().unwrap())]
                })],
                bundles: None,
                want: Want::Is(X509Error::NoSpiffeId),
            },
            Case {
                rule: "§2: exactly one URI SAN (two SPIFFE IDs)",
                chain: vec![leaf(&root, |p| {
                    p.subject_alt_names.push(uri("spiffe://example.org/admin"))
                })],
                bundles: None,
                want: Want::Is(X509Error::MultipleUriSans),
            },
            Case {
                rule: "§2: exactly one URI SAN (a SPIFFE ID and another URI)",
                chain: vec![leaf(&root, |p| {
                    p.subject_alt_names.push(uri("https://example.org/x"))
                })],
                bundles: None,
                want: Want::Is(X509Error::MultipleUriSans),
            },
            Case {
                rule: "§5.2: the scheme is spiffe",
                chain: vec![leaf(&root, |p| {
                    p.subject_alt_names = vec![uri("https://example.org/workload")]
                })],
                bundles: None,
                want: Want::Is(X509Error::BadSpiffeId(id_error(
                    "https://example.org/workload",
                ))),
            },
            Case {
                rule: "SPIFFE-ID.md: the trust domain is lowercase",
                chain: vec![leaf(&root, |p| {
                    p.subject_alt_names = vec![uri("spiffe://Example.org/workload")]
                })],
                bundles: None,
                want: Want::Is(X509Error::BadSpiffeId(id_error(
                    "spiffe://Example.org/workload",
                ))),
            },
            Case {
                rule: "SPIFFE-ID.md: no query",
                chain: vec![leaf(&root, |p| {
                    p.subject_alt_names = vec![uri("spiffe://example.org/workload?x=1")]
                })],
                bundles: None,
                want: Want::Is(X509Error::BadSpiffeId(id_error(
                    "spiffe://example.org/workload?x=1",
                ))),
            },
            Case {
                rule: "§3.1, §5.2: the leaf ID has a non-root path",
                chain: vec![leaf(&root, |p| {
                    p.subject_alt_names = vec![uri("spiffe://example.org")]
                })],
                bundles: None,
                want: Want::Is(X509Error::LeafIdWithoutPath("spiffe://example.org".into())),
            },
            Case {
                rule: "§4.1, §5.2: leaf cA=false",
                chain: vec![leaf(&root, |p| {
                    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
                })],
                bundles: None,
                want: Want::Is(X509Error::LeafIsCa),
            },
            Case {
                rule: "§4.3: the leaf has key usage",
                chain: vec![leaf(&root, |p| p.key_usages = vec![])],
                bundles: None,
                want: Want::Is(X509Error::LeafNoKeyUsage),
            },
            Case {
                rule: "§4.3, §5.2: no keyCertSign on a leaf",
                chain: vec![leaf(&root, |p| {
                    p.key_usages.push(KeyUsagePurpose::KeyCertSign)
                })],
                bundles: None,
                want: Want::Is(X509Error::LeafKeyCertSign),
            },
            Case {
                rule: "§4.3, §5.2: no cRLSign on a leaf",
                chain: vec![leaf(&root, |p| p.key_usages.push(KeyUsagePurpose::CrlSign))],
                bundles: None,
                want: Want::Is(X509Error::LeafCrlSign),
            },
            Case {
                rule: "§4.3: a leaf has digitalSignature",
                chain: vec![leaf(&root, |p| {
                    p.key_usages = vec![KeyUsagePurpose::KeyAgreement]
                })],
                bundles: None,
                want: Want::Is(X509Error::LeafNoDigitalSignature),
            },
            Case {
                rule: "§3.2: an intermediate is a CA (cA=false)",
                chain: vec![leaf(&not_ca, |_| {}), not_ca.der()],
                bundles: None,
                want: Want::Is(X509Error::IntermediateNotCa),
            },
            Case {
                rule: "§3.2: an intermediate is a CA (no basic constraints)",
                chain: vec![leaf(&no_bc, |_| {}), no_bc.der()],
                bundles: None,
                want: Want::Is(X509Error::IntermediateNotCa),
            },
            Case {
                rule: "§3.2, §4.3: an intermediate has keyCertSign",
                chain: vec![leaf(&no_cert_sign, |_| {}), no_cert_sign.der()],
                bundles: None,
                want: Want::Is(X509Error::IntermediateNoKeyCertSign),
            },
            Case {
                rule: "trust comes only from the ID's own trust domain (no bundle)",
                chain: vec![{
                    let mut p = leaf_params("spiffe://unknown.org/workload", now());
                    p.not_before = now() - Duration::hours(1);
                    signed(p, &root).der()
                }],
                bundles: None,
                want: Want::Is(X509Error::UnknownTrustDomain("unknown.org".into())),
            },
            Case {
                rule: "an empty bundle trusts nothing",
                chain: vec![good_leaf.clone()],
                bundles: Some(vec![("example.org", vec![])]),
                want: Want::Is(X509Error::UnknownTrustDomain("example.org".into())),
            },
            Case {
                rule: "a broken bundle is an error, not a silent skip",
                chain: vec![good_leaf.clone()],
                bundles: Some(vec![("example.org", vec![root.der(), b"junk".to_vec()])]),
                want: Want::Is(X509Error::BadBundle(
                    "certificate #1 for trust domain `example.org`: Parsing Error: NomError(Eof)"
                        .into(),
                )),
            },
            Case {
                rule: "one trust domain's CA cannot vouch for another's IDs",
                chain: vec![signed(leaf_params("spiffe://other.org/workload", now()), &root).der()],
                bundles: None,
                want: Want::Is(X509Error::Untrusted("UnknownIssuer".into())),
            },
            Case {
                rule: "§5.1: signed by another key under the root's name",
                chain: vec![leaf(&impostor, |_| {})],
                bundles: None,
                want: Want::Is(X509Error::Untrusted("InvalidSignatureForPublicKey".into())),
            },
            Case {
                rule: "§5.1: the leaf's issuer must be presented",
                chain: vec![leaf(&inter, |_| {})],
                bundles: None,
                want: Want::Is(X509Error::Untrusted("UnknownIssuer".into())),
            },
            Case {
                rule: "§5.1: the leaf has expired",
                chain: vec![leaf(&root, |p| {
                    p.not_before = now() - Duration::hours(2);
                    p.not_after = now() - Duration::minutes(1);
                })],
                bundles: None,
                want: Want::Is(X509Error::Expired {
                    not_after: now() - Duration::minutes(1),
                }),
            },
            Case {
                rule: "§5.1: the leaf is not valid yet",
                chain: vec![leaf(&root, |p| {
                    p.not_before = now() + Duration::minutes(1);
                    p.not_after = now() + Duration::hours(2);
                })],
                bundles: None,
                want: Want::Is(X509Error::NotYetValid {
                    not_before: now() + Duration::minutes(1),
                }),
            },
            Case {
                rule: "§5.1: an intermediate has expired",
                chain: vec![leaf(&expired_inter, |_| {}), expired_inter.der()],
                bundles: None,
                want: Want::Is(X509Error::Expired {
                    not_after: now() - Duration::hours(1),
                }),
            },
            Case {
                rule: "the trust anchor certificate has expired",
                chain: vec![leaf(&expired_root, |_| {})],
                bundles: Some(vec![("example.org", vec![expired_root.der()])]),
                want: Want::Is(X509Error::Expired {
                    not_after: now() - Duration::hours(2),
                }),
            },
            Case {
                rule: "the trust anchor certificate is not valid yet",
                chain: vec![leaf(&future_root, |_| {})],
                bundles: Some(vec![("example.org", vec![future_root.der()])]),
                want: Want::Is(X509Error::NotYetValid {
                    not_before: now() + Duration::hours(2),
                }),
            },
            Case {
                rule: "§4.4: the leaf's EKU allows TLS client or server auth",
                chain: vec![leaf(&root, |p| {
                    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning]
                })],
                bundles: None,
                want: Want::Is(X509Error::WrongExtendedKeyUsage),
            },
            Case {
                rule: "§4.4: an intermediate's EKU constrains the chain",
                chain: vec![leaf(&code_signing_inter, |_| {}), code_signing_inter.der()],
                bundles: None,
                want: Want::Is(X509Error::WrongExtendedKeyUsage),
            },
            Case {
                rule: "§4.1: path length constraint",
                chain: vec![leaf(&sub_inter, |_| {}), sub_inter.der(), inter.der()],
                bundles: None,
                want: Want::Is(X509Error::Untrusted("PathLenConstraintViolated".into())),
            },
            Case {
                rule: "§4.2: DNS name constraints hold for the leaf's other SANs",
                chain: vec![
                    leaf(&dns_constrained, |p| {
                        p.subject_alt_names
                            .push(SanType::DnsName("evil.test".try_into().unwrap()))
                    }),
                    dns_constrained.der(),
                ],
                bundles: None,
                want: Want::Is(X509Error::Untrusted("NameConstraintViolation".into())),
            },
            Case {
                rule: "§4.2: URI name constraints are not implemented by webpki: fail closed",
                chain: vec![leaf(&uri_constrained, |_| {}), uri_constrained.der()],
                bundles: None,
                want: Want::Is(X509Error::Untrusted("NameConstraintViolation".into())),
            },
            Case {
                rule: "RFC 5280: an unknown critical extension is refused",
                chain: vec![leaf(&root, |p| {
                    let mut ext = CustomExtension::from_oid_content(
                        &[1, 3, 6, 1, 4, 1, 99999, 1],
                        vec![0x05, 0x00],
                    );
                    ext.set_criticality(true);
                    p.custom_extensions = vec![ext];
                })],
                bundles: None,
                want: Want::Is(X509Error::Untrusted("UnsupportedCriticalExtension".into())),
            },
        ];

        let default_bundles: Bundles = vec![
            ("example.org", vec![root.der()]),
            ("other.org", vec![other_root.der()]),
        ];
        for case in cases {
            let bundles = case.bundles.as_ref().unwrap_or(&default_bundles);
            let got = verify_with(&case.chain, now(), bundles);
            match (&case.want, got) {
                (Want::Is(want), Err(got)) => assert_eq!(&got, want, "{}", case.rule),
                (Want::Code(code), Err(got)) => {
                    assert_eq!(got.code(), *code, "{}: {got}", case.rule)
                }
                (_, Ok(ok)) => panic!("{}: accepted {ok:?}", case.rule),
            }
        }
    }

    /// A NameConstraints extension permitting the URI host `host` (RFC 5280 §4.2.1.10).
    fn uri_name_constraints(host: &str) -> CustomExtension {
        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag, u8::try_from(content.len()).unwrap()];
            out.extend_from_slice(content);
            out
        }
        // NameConstraints ::= SEQUENCE { permittedSubtrees [0] GeneralSubtrees }
        // GeneralSubtree ::= SEQUENCE { base GeneralName } ; uniformResourceIdentifier [6]
        let value = tlv(0x30, &tlv(0xa0, &tlv(0x30, &tlv(0x86, host.as_bytes()))));
        let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 30], value);
        ext.set_criticality(true);
        ext
    }

    /// Chains that follow the rules verify, whatever optional parts they carry.
    #[test]
    fn valid_chains_verify() {
        let root = root(now());
        let inter = intermediate(&root, now(), |_| {});
        let bundles: Bundles = vec![("example.org", vec![root.der()])];

        // Two levels: root → intermediate (pathlen 0) → leaf.
        let two_level = signed(leaf_params(LEAF_ID, now()), &inter);
        let got = verify_with(&[two_level.der(), inter.der()], now(), &bundles).unwrap();
        assert_eq!(got.id, SpiffeId::parse(LEAF_ID).unwrap());
        let (_, leaf_x509) = X509Certificate::from_der(two_level.cert.der()).unwrap();
        let (_, inter_x509) = X509Certificate::from_der(inter.cert.der()).unwrap();
        assert_eq!(got.serial_hex, serial_hex(leaf_x509.raw_serial()));
        assert_eq!(
            got.intermediate_serials_hex,
            vec![serial_hex(inter_x509.raw_serial())]
        );
        assert_eq!(got.not_after, now() + Duration::hours(1));

        // Extended key usage: either TLS purpose, or none at all.
        for (what, ekus) in [
            ("serverAuth only", vec![ExtendedKeyUsagePurpose::ServerAuth]),
            ("clientAuth only", vec![ExtendedKeyUsagePurpose::ClientAuth]),
            ("no EKU extension", vec![]),
        ] {
            let der = leaf(&root, |p| p.extended_key_usages = ekus);
            assert!(verify_with(&[der], now(), &bundles).is_ok(), "{what}");
        }
        // keyEncipherment / keyAgreement beside digitalSignature are allowed (§4.3).
        let der = leaf(&root, |p| {
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
            p.key_usages.push(KeyUsagePurpose::KeyAgreement);
        });
        assert!(verify_with(&[der], now(), &bundles).is_ok());
        // Other SAN types beside the one URI SAN are allowed (§2).
        let der = leaf(&root, |p| {
            p.subject_alt_names
                .push(SanType::DnsName("workload.example.org".try_into().unwrap()))
        });
        assert!(verify_with(&[der], now(), &bundles).is_ok());

        // Validity is inclusive at both ends (RFC 5280 §4.1.2.5).
        let der = leaf(&root, |_| {});
        for at in [now() - Duration::hours(1), now() + Duration::hours(1)] {
            assert!(
                verify_with(std::slice::from_ref(&der), at, &bundles).is_ok(),
                "at {at}"
            );
        }
        assert_eq!(
            verify_with(
                &[der],
                now() + Duration::hours(1) + Duration::seconds(1),
                &bundles
            ),
            Err(X509Error::Expired {
                not_after: now() + Duration::hours(1)
            })
        );
    }

    /// A root renewed with the same key: the bundle may still hold the expired certificate,
    /// and the valid one is used; several trust anchors are all tried.
    #[test]
    fn any_valid_anchor_of_the_trust_domain_will_do() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut old = ca_params("example.org root CA", "spiffe://example.org", now());
        old.not_before = now() - Duration::days(60);
        old.not_after = now() - Duration::days(1);
        let old = old.self_signed(&key).unwrap();
        let renewed = ca_params("example.org root CA", "spiffe://example.org", now())
            .self_signed(&key)
            .unwrap();
        let renewed = Issuer { key, cert: renewed };
        let unrelated = root(now());
        let der = leaf(&renewed, |_| {});
        let bundles: Bundles = vec![(
            "example.org",
            vec![unrelated.der(), old.der().to_vec(), renewed.der()],
        )];
        assert!(verify_with(std::slice::from_ref(&der), now(), &bundles).is_ok());
        let only_old: Bundles = vec![("example.org", vec![old.der().to_vec()])];
        assert_eq!(
            verify_with(&[der], now(), &only_old),
            Err(X509Error::Expired {
                not_after: now() - Duration::days(1)
            })
        );
    }

    /// Warden's own SVIDs verify against Warden's CA, and the serial is the one Warden records.
    #[test]
    fn warden_issued_svids_verify_with_the_recorded_serial() {
        let td = TrustDomain::parse("example.org").unwrap();
        let ca = Ca::generate_root(&td, Duration::days(365), now()).unwrap();
        let bundle = vec![ca.cert_der().to_vec()];
        let id = SpiffeId::parse("spiffe://example.org/agent/coder").unwrap();
        for _ in 0..20 {
            let svid = ca.issue_x509_svid(&id, Duration::hours(1), now()).unwrap();
            let got = verify_x509_svid(std::slice::from_ref(&svid.cert_der), now(), |t| {
                (t == &td).then_some(bundle.as_slice())
            })
            .unwrap();
            let recorded: String = svid.serial.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got.serial_hex, recorded);
            assert_eq!(got.id, id);
            assert_eq!(got.not_after, svid.not_after);
            assert!(got.intermediate_serials_hex.is_empty());
        }
    }

    #[test]
    fn serial_hex_drops_only_leading_zero_octets() {
        for (raw, want) in [
            (&[0x00, 0x85, 0x01][..], "8501"),
            (&[0x40, 0x00][..], "4000"),
            (&[0x00, 0x00, 0x01][..], "01"),
            (&[0x00][..], "00"),
            (&[][..], ""),
        ] {
            assert_eq!(serial_hex(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn error_codes_are_distinct_and_prefixed() {
        let t = now();
        let all = [
            X509Error::EmptyChain,
            X509Error::NoPemCertificates,
            X509Error::Malformed(String::new()),
            X509Error::NoSpiffeId,
            X509Error::MultipleUriSans,
            X509Error::BadSpiffeId(String::new()),
            X509Error::LeafIdWithoutPath(String::new()),
            X509Error::LeafIsCa,
            X509Error::LeafNoKeyUsage,
            X509Error::LeafKeyCertSign,
            X509Error::LeafCrlSign,
            X509Error::LeafNoDigitalSignature,
            X509Error::IntermediateNotCa,
            X509Error::IntermediateNoKeyCertSign,
            X509Error::UnknownTrustDomain(String::new()),
            X509Error::BadBundle(String::new()),
            X509Error::Untrusted(String::new()),
            X509Error::WrongExtendedKeyUsage,
            X509Error::Expired { not_after: t },
            X509Error::NotYetValid { not_before: t },
        ];
        let codes: HashSet<_> = all.iter().map(X509Error::code).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|c| c.starts_with("x509_")));
    }

    #[test]
    fn split_der_round_trips_and_refuses_garbage() {
        let root = root(now());
        let inter = intermediate(&root, now(), |_| {});
        let leaf = leaf(&inter, |_| {});
        let chain = vec![leaf, inter.der(), root.der()];
        assert_eq!(split_der(&chain.concat()).unwrap(), chain);
        assert_eq!(split_der(&chain[0]).unwrap(), vec![chain[0].clone()]);

        assert_eq!(split_der(&[]), Err(X509Error::EmptyChain));
        let mut trailing = chain.concat();
        trailing.extend_from_slice(&[0x30, 0x00]);
        assert_eq!(split_der(&trailing).unwrap_err().code(), "x509_malformed");
        let mut junk = chain.concat();
        junk.push(0xff);
        assert_eq!(split_der(&junk).unwrap_err().code(), "x509_malformed");
        let truncated = &chain.concat()[..chain[0].len() + 10];
        assert_eq!(split_der(truncated).unwrap_err().code(), "x509_malformed");
    }

    #[test]
    fn certs_from_pem_takes_certificate_blocks_only() {
        let root = root(now());
        let inter = intermediate(&root, now(), |_| {});
        let pem = format!(
            "leaf bundle\n{}{}{}",
            cert_pem(&inter.der()),
            crate::ca::pem("PRIVATE KEY", &inter.key.serialize_der()),
            cert_pem(&root.der()),
        );
        assert_eq!(certs_from_pem(&pem).unwrap(), vec![inter.der(), root.der()]);

        let key_only = crate::ca::pem("PRIVATE KEY", &root.key.serialize_der());
        assert_eq!(certs_from_pem(&key_only), Err(X509Error::NoPemCertificates));
        assert_eq!(certs_from_pem(""), Err(X509Error::NoPemCertificates));
        let not_a_cert = crate::ca::pem("CERTIFICATE", b"not DER");
        assert_eq!(
            certs_from_pem(&not_a_cert).unwrap_err().code(),
            "x509_malformed"
        );
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certs_from_pem(bad_base64).unwrap_err().code(),
            "x509_malformed"
        );
    }

    /// `openssl verify` (a verifier nobody here wrote) accepts the two-level chain this module
    /// accepts.
    #[test]
    fn openssl_accepts_the_two_level_chain() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("skipped: openssl is not installed");
            return;
        }
        let at = OffsetDateTime::now_utc();
        let root = root(at);
        let inter = intermediate(&root, at, |_| {});
        let leaf = signed(leaf_params(LEAF_ID, at), &inter).der();
        let bundles: Bundles = vec![("example.org", vec![root.der()])];
        verify_with(&[leaf.clone(), inter.der()], at, &bundles).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("root.pem"), cert_pem(&root.der())).unwrap();
        std::fs::write(path("inter.pem"), cert_pem(&inter.der())).unwrap();
        std::fs::write(path("leaf.pem"), cert_pem(&leaf)).unwrap();
        let out = std::process::Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(path("root.pem"))
            .arg("-untrusted")
            .arg(path("inter.pem"))
            .arg(path("leaf.pem"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
    }
}
