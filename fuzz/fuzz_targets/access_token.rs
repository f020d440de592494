//! Access-token (RFC 9068) and JWT-SVID validation on arbitrary text: never panics, and
//! nothing but a token signed by the key validates.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn signer() -> &'static identity::jwt::JwtSigner {
    static KEY: OnceLock<identity::jwt::JwtSigner> = OnceLock::new();
    KEY.get_or_init(|| identity::jwt::JwtSigner::generate().expect("a key"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let key = signer().public_key();
    for audience in [
        identity::access::Audience::Is("https://api.example"),
        identity::access::Audience::IssuerInspection,
    ] {
        let result = identity::access::validate_access_token(
            token,
            "https://warden",
            audience,
            1_800_000_000,
            30,
            |kid| (kid == key.kid()).then_some(&key),
        );
        // Random input never carries a valid ES256 signature by this fresh key.
        assert!(result.is_err());
    }
    let bundle = identity::jwt::JwtBundle::new(
        identity::TrustDomain::parse("example.org").expect("td"),
        [key.clone()],
    );
    assert!(identity::jwt::validate(token, "aud", 1_800_000_000, 30, |_| Some(&bundle)).is_err());
});
