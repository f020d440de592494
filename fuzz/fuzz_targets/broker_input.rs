//! The broker's parsers of outside input: scopes, audiences and resources, authorization
//! details, lease ids and prefixes, PostgreSQL role templates. Never panic; what parses
//! renders back to what it parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(scopes) = broker::scope::ScopeSet::parse(s) {
        let again = broker::scope::ScopeSet::parse(&scopes.to_param()).expect("round trip");
        assert_eq!(again, scopes);
    }
    let _ = broker::scope::parse_audience(s);
    let _ = broker::scope::parse_resource(s);
    let _ = broker::scope::parse_authorization_details(s);
    if let Ok(id) = broker::lease::LeaseId::parse(s) {
        assert_eq!(id.as_str(), s);
    }
    let _ = broker::lease::parse_prefix(s);
    if let Ok(template) = broker::postgres::RoleTemplate::from_json(s) {
        let json = serde_json::to_string(&template).expect("serializes");
        assert!(broker::postgres::RoleTemplate::from_json(&json).is_ok());
    }
});
