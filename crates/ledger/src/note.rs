//! C2SP `signed-note` (Ed25519) and `tlog-checkpoint`.
//!
//! A checkpoint body is `<origin>\n<tree size>\n<base64 root>\n`; it is signed as a note whose
//! signature lines read `— <key name> <base64(key id || signature)>`. The key id is the first
//! four bytes of `SHA-256(name || "\n" || 0x01 || public key)`. Public keys travel in the
//! `vkey` form `<name>+<hex key id>+<base64(0x01 || public key)>`.
//!
//! A note is at most [`MAX_NOTE_BYTES`] long with at most [`MAX_SIGNATURES`] signature lines,
//! valid UTF-8 with no ASCII control character but newline, and every signature line must be
//! well formed, whoever's key it names: so the work a hostile note costs is bounded, and
//! Warden accepts exactly the notes Go's `golang.org/x/mod/sumdb/note` and its Rust port
//! `signed_note` accept (the fuzz target `signed_note` compares them).

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::LedgerError;

/// Signature algorithm byte for Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";

/// Longest signed note, in bytes (text, blank line and signatures), that Warden signs or
/// verifies: the cap of `signed_note`, Cloudflare's C2SP implementation. A checkpoint takes
/// about 200.
pub const MAX_NOTE_BYTES: usize = 1_000_000;

/// Most signature lines a note may carry, as `golang.org/x/mod/sumdb/note` allows ("avoid
/// spending forever parsing a note with many signatures").
pub const MAX_SIGNATURES: usize = 100;

/// C2SP signed-note: the text is UTF-8 without ASCII control characters other than newline.
fn has_control(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 && b != b'\n')
}

fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Whether `hex` is the eight hex digits of `id` (either case, as Go's `sumdb/note` reads it).
fn id_matches(hex: &str, id: u32) -> bool {
    hex.len() == 8
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && u32::from_str_radix(hex, 16) == Ok(id)
}

fn check_name(name: &str) -> Result<(), LedgerError> {
    // C2SP signed-note: a key name is non-empty, has no Unicode spaces and no `+`.
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(LedgerError::BadKey(format!(
            "key name `{name}` must be non-empty without spaces or `+`"
        )));
    }
    Ok(())
}

/// The log's signing key with its note name.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: u32,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.id)
    }
}

impl NoteSigner {
    /// A fresh random key named `name`.
    pub fn generate(name: &str) -> Result<Self, LedgerError> {
        check_name(name)?;
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Ok(Self::from_parts(name, key))
    }

    fn from_parts(name: &str, key: SigningKey) -> Self {
        let id = key_id(name, &key.verifying_key());
        Self {
            name: name.to_owned(),
            key,
            id,
        }
    }

    /// Parses the `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>` form.
    pub fn from_skey(skey: &str) -> Result<Self, LedgerError> {
        let bad = |why: &str| LedgerError::BadKey(format!("invalid private key: {why}"));
        let rest = skey
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("missing `PRIVATE+KEY+` prefix"))?;
        // Names never contain `+`; base64 may, so split from the left.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hex_id), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected name+id+key"));
        };
        check_name(name)?;
        let raw = Zeroizing::new(STANDARD.decode(b64).map_err(|_| bad("bad base64"))?);
        let (alg, seed) = raw.split_first().ok_or_else(|| bad("empty key"))?;
        if *alg != ALG_ED25519 {
            return Err(bad("not an Ed25519 key"));
        }
        let seed: [u8; 32] = seed.try_into().map_err(|_| bad("wrong key length"))?;
        let signer = Self::from_parts(name, SigningKey::from_bytes(&seed));
        if !id_matches(hex_id, signer.id) {
            return Err(bad("key id does not match the key"));
        }
        Ok(signer)
    }

    /// The private key in `PRIVATE+KEY+…` form (secret: write it only to a 0600 file).
    pub fn to_skey(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(vec![ALG_ED25519]);
        raw.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            STANDARD.encode(&*raw)
        ))
    }

    /// The matching public key in `vkey` form.
    pub fn vkey(&self) -> String {
        self.verifier().vkey()
    }

    /// The key name (also the log origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A verifier for this key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (non-empty lines, each ending in a newline, without control characters)
    /// and returns the whole note, which must fit [`MAX_NOTE_BYTES`].
    pub fn sign(&self, text: &str) -> Result<String, LedgerError> {
        if text.is_empty() || !text.ends_with('\n') || text.contains("\n\n") || has_control(text) {
            return Err(LedgerError::BadNote(
                "note text must be non-empty lines ending in a newline, without control \
                 characters"
                    .into(),
            ));
        }
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.id.to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        let note = format!("{text}\n{DASH}{} {}\n", self.name, STANDARD.encode(raw));
        if note.len() > MAX_NOTE_BYTES {
            return Err(LedgerError::BadNote(format!(
                "a signed note must be at most {MAX_NOTE_BYTES} bytes"
            )));
        }
        Ok(note)
    }
}

/// A public note key, parsed from its `vkey` form.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<hex id>+<base64(0x01 || public key)>`.
    pub fn from_vkey(vkey: &str) -> Result<Self, LedgerError> {
        let bad = |why: &str| LedgerError::BadKey(format!("invalid verifier key: {why}"));
        // Names never contain `+`; base64 may, so split from the left.
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(hex_id), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<id>+<key>"));
        };
        check_name(name)?;
        let raw = STANDARD.decode(b64).map_err(|_| bad("bad base64"))?;
        let (alg, key) = raw.split_first().ok_or_else(|| bad("empty key"))?;
        if *alg != ALG_ED25519 {
            return Err(bad("not an Ed25519 key"));
        }
        let key: [u8; 32] = key.try_into().map_err(|_| bad("wrong key length"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not a valid Ed25519 point"))?;
        let id = key_id(name, &key);
        if !id_matches(hex_id, id) {
            return Err(bad("key id does not match the key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key in `vkey` form.
    pub fn vkey(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, STANDARD.encode(raw))
    }

    /// Verifies a signed note and returns its text. Signatures by other keys are ignored, as
    /// the spec says, but must be well formed; at least one signature by this key is required,
    /// and the first one decides (later ones by the same key are ignored, as Go's verifier
    /// ignores them). Refused before any signature is checked: a note over
    /// [`MAX_NOTE_BYTES`], with more than [`MAX_SIGNATURES`] signature lines, or with an ASCII
    /// control character other than newline.
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str, LedgerError> {
        let bad = |why: &str| LedgerError::BadNote(why.to_owned());
        if note.len() > MAX_NOTE_BYTES {
            return Err(bad(&format!(
                "a signed note must be at most {MAX_NOTE_BYTES} bytes"
            )));
        }
        if has_control(note) {
            return Err(bad("control character other than newline"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        let sigs = sigs
            .strip_suffix('\n')
            .ok_or_else(|| bad("signature block must end with a newline"))?;
        // The signature by this key, from the first line that names it.
        let mut ours: Option<Vec<u8>> = None;
        for (i, line) in sigs.split('\n').enumerate() {
            if i == MAX_SIGNATURES {
                return Err(bad(&format!("more than {MAX_SIGNATURES} signature lines")));
            }
            let rest = line
                .strip_prefix(DASH)
                .ok_or_else(|| bad("signature line must start with an em dash"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("malformed signature line"))?;
            check_name(name).map_err(|_| bad("malformed signature line"))?;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| bad("bad signature base64"))?;
            // A key id and at least one byte of signature.
            if raw.len() < 5 {
                return Err(bad("signature too short"));
            }
            if ours.is_none() && name == self.name && raw[..4] == self.id.to_be_bytes() {
                ours = Some(raw);
            }
        }
        let raw = ours.ok_or(LedgerError::BadSignature)?;
        let sig = Signature::from_slice(&raw[4..]).map_err(|_| LedgerError::BadSignature)?;
        self.key
            .verify(text.as_bytes(), &sig)
            .map(|()| text)
            .map_err(|_| LedgerError::BadSignature)
    }
}

/// The body of a checkpoint (C2SP `tlog-checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash at that size.
    pub root: merkle::Hash,
}

impl Checkpoint {
    /// The note text that gets signed.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root.as_bytes())
        )
    }

    /// Parses a checkpoint body (extension lines after the root are allowed and ignored).
    pub fn parse(text: &str) -> Result<Self, LedgerError> {
        let bad = |why: &str| LedgerError::BadNote(format!("invalid checkpoint: {why}"));
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size = lines
            .next()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .filter(|s| s.len() == 1 || !s.starts_with('0'))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("bad tree size"))?;
        let root = lines
            .next()
            .and_then(|r| STANDARD.decode(r).ok())
            .and_then(|r| merkle::Hash::from_slice(&r).ok())
            .ok_or_else(|| bad("bad root hash"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // C2SP signed-note.md "Example" (see shared/testdata/merkle/VECTORS.md).
    const VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn verifies_the_c2sp_example() {
        let v = NoteVerifier::from_vkey(VKEY).unwrap();
        assert_eq!(v.verify(NOTE).unwrap(), "This is an example message.\n");
        let tampered = NOTE.replace("example message", "exemple message");
        assert!(matches!(
            v.verify(&tampered),
            Err(LedgerError::BadSignature)
        ));
        let other_sig_only = NOTE.replace("example.com/foo Uw2", "example.com/bar Uw2");
        assert!(v.verify(&other_sig_only).is_err());
    }

    #[test]
    fn bad_vkeys_are_refused() {
        for bad in [
            "",
            "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "example.com/foo+530d903a+AkyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "example.com/foo+530d903a+!!",
            "foo bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        ] {
            assert!(NoteVerifier::from_vkey(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sign_round_trip_and_key_forms() {
        let s = NoteSigner::generate("example.org/warden").unwrap();
        let again = NoteSigner::from_skey(&s.to_skey()).unwrap();
        assert_eq!(again.vkey(), s.vkey());
        let cp = Checkpoint {
            origin: "example.org/warden".into(),
            size: 42,
            root: merkle::empty_root(),
        };
        let note = s.sign(&cp.to_text()).unwrap();
        let v = NoteVerifier::from_vkey(&s.vkey()).unwrap();
        let text = v.verify(&note).unwrap();
        assert_eq!(Checkpoint::parse(text).unwrap(), cp);
        let other = NoteSigner::generate("example.org/warden").unwrap();
        assert!(other.verifier().verify(&note).is_err());
    }

    #[test]
    fn checkpoint_parse_rejects_garbage() {
        for bad in [
            "",
            "o\n",
            "o\n01\nAAAA\n",
            "o\n-1\n",
            "o\n5\nnotbase64\n",
            "o\n5\nAAAA\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
