//! SPIFFE ID parser: never panics; whatever parses renders back to exactly its input; and it
//! agrees with the `spiffe` crate (an independent SPIFFE-ID.md implementation) on what is a
//! SPIFFE ID and what its trust domain and path are. The `spiffe` crate also takes uppercase
//! letters in the scheme and trust domain (and lowercases them), which SPIFFE-ID.md §2.1
//! forbids and Warden refuses: only there may they differ.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let warden = identity::SpiffeId::parse(s);
    if let Ok(id) = &warden {
        assert_eq!(id.as_str(), s);
        assert!(identity::TrustDomain::parse(id.trust_domain_name()).is_ok());
    }
    let reference = spiffe::SpiffeId::new(s);
    match (&warden, &reference) {
        (Ok(id), Ok(other)) => {
            assert_eq!(id.trust_domain_name(), other.trust_domain_name(), "{s:?}");
            assert_eq!(id.path(), other.path(), "{s:?}");
        }
        (Ok(_), Err(e)) => panic!("spiffe refuses {s:?} ({e}), Warden accepts"),
        (Err(e), Ok(_)) => {
            // Lenient in the reference only: case in the scheme or trust domain.
            let head = s.split('/').take(3).collect::<Vec<_>>().concat();
            assert!(
                head.bytes().any(|b| b.is_ascii_uppercase()) || s.len() > identity::MAX_ID_LEN,
                "Warden refuses {s:?} ({e}), spiffe accepts"
            );
        }
        (Err(_), Err(_)) => {}
    }
    let warden = identity::TrustDomain::parse(s);
    if let Ok(td) = &warden {
        let other = spiffe::TrustDomain::new(s).expect("spiffe accepts a Warden trust domain");
        assert_eq!(td.as_str(), other.as_str());
    } else if !s.contains(":/") && !s.bytes().any(|b| b.is_ascii_uppercase()) {
        assert!(
            spiffe::TrustDomain::new(s).is_err(),
            "Warden refuses trust domain {s:?}"
        );
    }
});
