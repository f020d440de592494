//! Federated bundle documents: `TrustBundle::parse` never panics, and what it accepts
//! publishes and parses back to the same bundle.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(td) = identity::TrustDomain::parse("partner.example") else {
        return;
    };
    if let Ok(bundle) = identity::trust::TrustBundle::parse(td.clone(), data) {
        let again = identity::trust::TrustBundle::parse(td, bundle.to_json().to_string().as_bytes());
        assert_eq!(again.ok().as_ref(), Some(&bundle));
    }
});
