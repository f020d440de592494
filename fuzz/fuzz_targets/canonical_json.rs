//! Canonical JSON (RFC 8785 limited to I-JSON, RFC 7493 §2.2) on arbitrary JSON texts,
//! against an independent RFC 8785 implementation (`serde_json_canonicalizer`): an
//! integer-only value within ±(2^53 − 1) is written byte for byte as the reference writes it,
//! both in a leaf and as a serialized field; a leaf refuses an integer beyond that range; and
//! whatever a serialized field holds, the reference writes back unchanged.
#![no_main]

use std::collections::BTreeMap;

use ledger::event::MAX_SAFE_INTEGER;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Whether every number in `v` is an integer, and whether all are within I-JSON's range.
fn numbers(v: &Value) -> (bool, bool) {
    match v {
        Value::Number(n) => {
            let integer = n.is_i64() || n.is_u64();
            let safe = n.as_u64().is_some_and(|u| u <= MAX_SAFE_INTEGER)
                || n.as_i64()
                    .is_some_and(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER);
            (integer, safe)
        }
        Value::Array(items) => items.iter().map(numbers).fold((true, true), both),
        Value::Object(map) => map.values().map(numbers).fold((true, true), both),
        _ => (true, true),
    }
}

fn both(a: (bool, bool), b: (bool, bool)) -> (bool, bool) {
    (a.0 && b.0, a.1 && b.1)
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let serialized = ledger::CanonicalJson::of(&value).expect("any JSON value serializes");
    // What Warden writes is I-JSON: the reference writes it back byte for byte.
    let back: Value = serde_json::from_slice(serialized.as_bytes()).expect("valid JSON");
    let reference = serde_json_canonicalizer::to_vec(&back).expect("reference");
    assert_eq!(reference, serialized.as_bytes(), "not I-JSON canonical");

    let event = ledger::Event {
        v: 1,
        seq: 0,
        time: "2026-12-01T00:00:00.000Z".into(),
        actor: "a".into(),
        action: "x".into(),
        outcome: ledger::Outcome::Success,
        class_uid: 6003,
        fields: BTreeMap::from([("x".to_owned(), value.clone())]),
    };
    let leaf = event.to_leaf();
    match numbers(&value) {
        (true, true) => {
            let expected = serde_json_canonicalizer::to_vec(&value).expect("reference");
            assert_eq!(serialized.as_bytes(), expected, "serialized field differs");
            let leaf = leaf.expect("an integer-only I-JSON value is a valid field");
            let needle = [br#""fields":{"x":"#.as_slice(), &expected, b"}"].concat();
            assert!(
                leaf.windows(needle.len()).any(|w| w == needle),
                "leaf differs"
            );
            assert_eq!(ledger::Event::from_leaf(&leaf).ok(), Some(event));
        }
        _ => assert!(
            leaf.is_err(),
            "a leaf took a float or an integer beyond ±(2^53-1)"
        ),
    }
});
