//! Signed-note, verifier-key and checkpoint parsers: never panic; no forged body verifies;
//! and a note or key is accepted or refused exactly as `signed_note` (Cloudflare's port of
//! Go's `golang.org/x/mod/sumdb/note`, an independent C2SP implementation) accepts or refuses
//! it, with the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signed_note::{Note, StandardVerifier, Verifier, VerifierList};

// C2SP signed-note example key (public test vector).
const VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ledger::NoteSigner::from_skey(s);
    let _ = ledger::Checkpoint::parse(s);
    // Warden trims a key read from a file or flag; the reference takes it as given.
    if s == s.trim() {
        let warden = ledger::NoteVerifier::from_vkey(s);
        let reference = StandardVerifier::new(s);
        assert_eq!(warden.is_ok(), reference.is_ok(), "vkey {s:?}: {warden:?}");
        if let Ok(v) = warden {
            assert_eq!(
                v.name(),
                reference.map(|r| r.name().to_owned()).unwrap_or_default()
            );
        }
    }
    let (Ok(verifier), Ok(reference)) = (
        ledger::NoteVerifier::from_vkey(VKEY),
        StandardVerifier::new(VKEY),
    ) else {
        return;
    };
    let warden = verifier.verify(s);
    if let Ok(text) = warden {
        assert_eq!(
            text, "This is an example message.\n",
            "forged note verified"
        );
    }
    let list = VerifierList::new(vec![Box::new(reference) as Box<dyn Verifier>]);
    let other = Note::from_bytes(data)
        .ok()
        .filter(|n| n.verify(&list).is_ok())
        .map(|n| n.text().to_vec());
    assert_eq!(
        warden.ok().map(str::as_bytes),
        other.as_deref(),
        "disagree on {s:?}"
    );
});
