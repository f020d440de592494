//! SPIFFE ID parser: never panics; whatever parses renders back to exactly its input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = identity::SpiffeId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert!(identity::TrustDomain::parse(id.trust_domain_name()).is_ok());
    }
    let _ = identity::TrustDomain::parse(s);
});
