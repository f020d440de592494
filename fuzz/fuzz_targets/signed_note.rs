//! Signed-note, verifier-key and checkpoint parsers: never panic; no forged body verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;

// C2SP signed-note example key (public test vector).
const VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = ledger::NoteVerifier::from_vkey(s);
    let _ = ledger::NoteSigner::from_skey(s);
    let _ = ledger::Checkpoint::parse(s);
    if let Ok(verifier) = ledger::NoteVerifier::from_vkey(VKEY) {
        if let Ok(text) = verifier.verify(s) {
            assert_eq!(text, "This is an example message.\n", "forged note verified");
        }
    }
});
