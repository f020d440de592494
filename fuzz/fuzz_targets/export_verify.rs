//! Export verifier: never panics on arbitrary files.
#![no_main]

use libfuzzer_sys::fuzz_target;

const VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";

fuzz_target!(|data: &[u8]| {
    if let Ok(verifier) = ledger::NoteVerifier::from_vkey(VKEY) {
        let _ = ledger::export::verify(data, &verifier, &mut |_, _| {});
    }
});
