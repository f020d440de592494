//! Envelope encryption of upstream secrets (SaaS API keys, bot tokens) held in custody.
//!
//! Each version of a secret gets its own random 256-bit data key. The value is sealed under
//! the data key and the data key under the install's key-encryption key, both with
//! AES-256-GCM and the secret's name and version as associated data — so a sealed value
//! moved to another name or version in the database no longer opens. The store only ever
//! sees the two sealed blobs; rotation writes a new version with a new data key.

use identity::seal::Kek;
use zeroize::Zeroizing;

use crate::BrokerError;

/// Largest secret value, bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A secret's two sealed parts, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The data key, sealed under the KEK.
    pub dek_sealed: Vec<u8>,
    /// The value, sealed under the data key.
    pub value_sealed: Vec<u8>,
}

fn aad(part: &str, name: &str, version: i64) -> Vec<u8> {
    format!("warden-secret/{part}/{name}/{version}").into_bytes()
}

/// Seals `value` as version `version` of secret `name`.
pub fn seal(kek: &Kek, name: &str, version: i64, value: &[u8]) -> Result<Sealed, BrokerError> {
    if value.is_empty() || value.len() > MAX_SECRET_BYTES {
        return Err(BrokerError::InvalidSecret(format!(
            "a secret value is 1-{MAX_SECRET_BYTES} bytes"
        )));
    }
    let mut dek_bytes = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), dek_bytes.as_mut())
        .map_err(|_| BrokerError::Crypto("no randomness for a data key".into()))?;
    let dek =
        Kek::from_bytes(dek_bytes.as_ref()).map_err(|e| BrokerError::Crypto(e.to_string()))?;
    let value_sealed = dek
        .seal(&aad("value", name, version), value)
        .map_err(|e| BrokerError::Crypto(e.to_string()))?;
    let dek_sealed = kek
        .seal(&aad("dek", name, version), dek_bytes.as_ref())
        .map_err(|e| BrokerError::Crypto(e.to_string()))?;
    Ok(Sealed {
        dek_sealed,
        value_sealed,
    })
}

/// Opens version `version` of secret `name`.
pub fn open(
    kek: &Kek,
    name: &str,
    version: i64,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, BrokerError> {
    let refused = || {
        BrokerError::Crypto(format!(
            "secret `{name}` version {version} does not open: wrong key-encryption key, or the stored value was altered or moved"
        ))
    };
    let dek_bytes = kek
        .open(&aad("dek", name, version), &sealed.dek_sealed)
        .map_err(|_| refused())?;
    let dek = Kek::from_bytes(&dek_bytes).map_err(|_| refused())?;
    dek.open(&aad("value", name, version), &sealed.value_sealed)
        .map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_name_and_version() {
        let kek = Kek::from_bytes(&[7; 32]).unwrap();
        let s = seal(&kek, "slack", 1, b"xoxb-123").unwrap();
        assert!(!s.value_sealed.windows(8).any(|w| w == b"xoxb-123"));
        assert_eq!(open(&kek, "slack", 1, &s).unwrap().as_slice(), b"xoxb-123");
        assert!(
            open(&kek, "slack", 2, &s).is_err(),
            "moved to another version"
        );
        assert!(
            open(&kek, "github", 1, &s).is_err(),
            "moved to another name"
        );
        let other = Kek::from_bytes(&[8; 32]).unwrap();
        assert!(
            open(&other, "slack", 1, &s).is_err(),
            "another install's key"
        );
        let again = seal(&kek, "slack", 1, b"xoxb-123").unwrap();
        assert_ne!(again.dek_sealed, s.dek_sealed, "a fresh data key each time");
        let mut tampered = s.clone();
        if let Some(b) = tampered.value_sealed.last_mut() {
            *b ^= 1;
        }
        assert!(open(&kek, "slack", 1, &tampered).is_err());
        assert!(seal(&kek, "x", 1, b"").is_err());
        assert!(seal(&kek, "x", 1, &vec![0; MAX_SECRET_BYTES + 1]).is_err());
    }
}
