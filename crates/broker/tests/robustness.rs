//! The `broker_input` fuzz target's properties as a deterministic mutation test, run on every
//! `cargo test`: the broker's parsers of outside input never panic on mutated valid inputs,
//! and what parses renders back to what it parsed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

const SEEDS: &[&str] = &[
    "repo:read repo:write",
    "https://git.example.org/v1",
    "urn:example:db",
    r#"[{"type":"repo","id":"warden","actions":["push"]}]"#,
    "postgres/db_read_summary/lse_0123456789abcdef0123456789abcdef",
    "oauth/token/",
    r#"{"grants":[{"privileges":["SELECT"],"tables":["customers","public.orders"]}]}"#,
];

/// xorshift64*: a fixed sequence, so every run mutates the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn check(s: &str) {
    if let Ok(scopes) = broker::scope::ScopeSet::parse(s) {
        assert_eq!(
            broker::scope::ScopeSet::parse(&scopes.to_param()).unwrap(),
            scopes
        );
    }
    let _ = broker::scope::parse_audience(s);
    if let Ok(r) = broker::scope::parse_resource(s) {
        assert_eq!(r, s);
    }
    let _ = broker::scope::parse_authorization_details(s);
    if let Ok(id) = broker::lease::LeaseId::parse(s) {
        assert_eq!(id.as_str(), s);
    }
    if let Ok(p) = broker::lease::parse_prefix(s) {
        assert_eq!(p, s);
    }
    if let Ok(t) = broker::postgres::RoleTemplate::from_json(s) {
        let json = serde_json::to_string(&t).unwrap();
        assert!(
            broker::postgres::RoleTemplate::from_json(&json).is_ok(),
            "{json}"
        );
    }
}

#[test]
fn mutated_inputs_never_panic_and_round_trip() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet = b" :/#_.-\"\\{}[],0123456789abcdefxyzSELECTpublic\t\n\x7f";
    for seed in SEEDS {
        check(seed);
        for _ in 0..3_000 {
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..=(rng.next() % 4) {
                let at = (rng.next() as usize) % (bytes.len() + 1);
                match rng.next() % 3 {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, alphabet[(rng.next() as usize) % alphabet.len()]),
                    _ if at < bytes.len() => {
                        bytes[at] = alphabet[(rng.next() as usize) % alphabet.len()];
                    }
                    _ => {}
                }
            }
            if let Ok(s) = std::str::from_utf8(&bytes) {
                check(s);
            }
        }
    }
}
