//! Keys at rest: AES-256-GCM sealing under a key-encryption key (KEK).
//!
//! Sealed form: a 12-byte random nonce followed by the ciphertext and its 16-byte tag. The
//! caller passes associated data naming what is sealed (e.g. `warden/x509-ca/<key id>`), so a
//! sealed blob moved to another row does not open.

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use zeroize::Zeroizing;

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The key-encryption key is not 32 bytes.
    #[error("the key-encryption key must be 32 bytes")]
    BadKek,
    /// Wrong KEK, wrong associated data, or tampered ciphertext.
    #[error("cannot unseal: wrong key-encryption key, or the sealed data was altered or moved")]
    Open,
    /// No randomness, or the cipher refused.
    #[error("sealing failed")]
    Seal,
}

/// A key-encryption key.
pub struct Kek(LessSafeKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// From 32 secret bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadKek)?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Encrypts `plaintext`, binding it to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Seal)?;
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Decrypts what [`Kek::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let plain_len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| SealError::Open)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_every_refusal() {
        let kek = Kek::from_bytes(&[7u8; 32]).unwrap();
        let sealed = kek.seal(b"warden/x509-ca/k1", b"secret key bytes").unwrap();
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "plaintext visible"
        );
        assert_eq!(
            &kek.open(b"warden/x509-ca/k1", &sealed).unwrap()[..],
            b"secret key bytes"
        );
        // Two seals of the same plaintext differ (fresh nonce).
        assert_ne!(
            sealed,
            kek.seal(b"warden/x509-ca/k1", b"secret key bytes").unwrap()
        );
        assert_eq!(
            kek.open(b"warden/x509-ca/k2", &sealed),
            Err(SealError::Open)
        );
        let other = Kek::from_bytes(&[8u8; 32]).unwrap();
        assert_eq!(
            other.open(b"warden/x509-ca/k1", &sealed),
            Err(SealError::Open)
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                kek.open(b"warden/x509-ca/k1", &bad),
                Err(SealError::Open),
                "byte {i}"
            );
        }
        assert_eq!(kek.open(b"a", &sealed[..5]), Err(SealError::Open));
        assert!(matches!(
            Kek::from_bytes(&[0u8; 16]),
            Err(SealError::BadKek)
        ));
    }
}
