//! Relationship tuple keys as written and queried (`object#relation@user`, and the three
//! strings of a JSON tuple key): never panic; what parses renders back to the same key; and
//! checking a key against a model never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const MODEL: &str = "model
  schema 1.1

type user

type team
  relations
    define member: [user, team#member]

type repo
  relations
    define owner: [team]
    define admin: [user, team#member] or member from owner
    define reader: [user, user:*, team#member] or admin but not blocked
    define blocked: [user]
";

fn model() -> Option<&'static rebac::Model> {
    static MODEL_: OnceLock<Option<rebac::Model>> = OnceLock::new();
    MODEL_
        .get_or_init(|| rebac::Model::parse(MODEL).ok())
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = rebac::TupleKey::parse(s) {
        let text = key.to_string();
        let again = rebac::TupleKey::parse(&text).expect("a rendered key parses");
        assert_eq!(again.to_string(), text);
        if let Some(model) = model() {
            let _ = model.validate_tuple(&key);
        }
    }
    // The three strings of a JSON tuple key, split at the first two tabs.
    let mut parts = s.splitn(3, '\t');
    if let (Some(object), Some(relation), Some(user)) = (parts.next(), parts.next(), parts.next()) {
        if let Ok(key) = rebac::TupleKey::from_parts(object, relation, user) {
            let again = rebac::TupleKey::parse(&key.to_string()).expect("a rendered key parses");
            assert_eq!(again.to_string(), key.to_string());
        }
    }
    let _ = rebac::ObjectRef::parse(s);
    let _ = rebac::User::parse(s);
});
