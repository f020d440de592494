//! Ledger leaf decoder: never panics; accepts only the canonical encoding of what it decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = ledger::Event::from_leaf(data) {
        assert_eq!(event.to_leaf().ok().as_deref(), Some(data));
    }
});
