//! Client certificate chains (mutual TLS, the Workload API's concatenated DER): splitting and
//! X.509-SVID verification never panic on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let chain = match identity::x509::split_der(data) {
        Ok(chain) => chain,
        // Also feed the raw bytes as a single "certificate".
        Err(_) => vec![data.to_vec()],
    };
    let anchors: Vec<Vec<u8>> = chain.last().cloned().into_iter().collect();
    let _ = identity::x509::verify_x509_svid(&chain, time::OffsetDateTime::UNIX_EPOCH, |_| {
        Some(anchors.as_slice())
    });
    let _ = identity::x509::certs_from_pem(&String::from_utf8_lossy(data));
});
