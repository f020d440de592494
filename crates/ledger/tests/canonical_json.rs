//! Canonical JSON is RFC 8785 (JCS) limited to I-JSON (RFC 7493 §2.2): what Warden writes, an
//! independent JCS implementation (`serde_json_canonicalizer`) writes byte for byte — on the
//! RFC 8785 test vectors and on random values — and an integer that another implementation
//! would write differently (beyond ±(2^53 − 1)) never reaches a leaf: refused in a plain field,
//! in a leaf and at append, recorded as its decimal text in a serialized field.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ledger::event::MAX_SAFE_INTEGER;
use ledger::{
    CanonicalJson, Event, Ledger, LedgerConfig, LedgerError, NewEvent, NoteSigner, OcsfClass,
    Outcome,
};
use serde_json::{Value, json};

/// An event whose one field `x` is `value`.
fn event(value: Value) -> Event {
    Event {
        v: 1,
        seq: 3,
        time: "2026-12-01T00:00:00.000Z".into(),
        actor: "token:ops".into(),
        action: "api.request".into(),
        outcome: Outcome::Success,
        class_uid: 6003,
        fields: BTreeMap::from([("x".to_owned(), value)]),
    }
}

/// The bytes Warden's leaf encoding writes for `value` (a field of a leaf), or its refusal.
fn in_leaf(value: &Value) -> Result<Vec<u8>, LedgerError> {
    let leaf = event(value.clone()).to_leaf()?;
    let start = br#"{"action":"api.request","actor":"token:ops","class_uid":6003,"fields":{"x":"#;
    let end = br#"},"outcome":"success","seq":3,"time":"2026-12-01T00:00:00.000Z","v":1}"#;
    assert!(leaf.starts_with(start) && leaf.ends_with(end));
    Ok(leaf[start.len()..leaf.len() - end.len()].to_vec())
}

fn reference(value: &Value) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(value).unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

/// Every integer at and around the edges of I-JSON's range, in the three places canonical
/// JSON is written: a plain field (refused beyond the range), a serialized field (its decimal
/// text beyond the range), and what an independent JCS implementation makes of it.
#[test]
fn integers_at_the_edges_of_ijson() {
    let max = MAX_SAFE_INTEGER as i64;
    assert_eq!(MAX_SAFE_INTEGER, 9_007_199_254_740_991);
    // (value, within I-JSON's range, what an ECMAScript-number JCS writes for it)
    let table: [(Value, bool, &str); 11] = [
        (json!(0), true, "0"),
        (json!(1), true, "1"),
        (json!(-1), true, "-1"),
        (json!(max), true, "9007199254740991"),
        (json!(-max), true, "-9007199254740991"),
        (json!(max + 1), false, "9007199254740992"),
        (json!(max + 2), false, "9007199254740992"),
        (json!(-max - 2), false, "-9007199254740992"),
        (json!(i64::MAX), false, "9223372036854776000"),
        (json!(i64::MIN), false, "-9223372036854776000"),
        (json!(u64::MAX), false, "18446744073709552000"),
    ];
    for (value, safe, ecmascript) in table {
        let digits = value.to_string();
        // What RFC 8785 §3.2.2.3 makes of the number, in another implementation.
        assert_eq!(text(&reference(&value)), ecmascript, "{digits}");
        let plain = in_leaf(&value);
        let serialized = CanonicalJson::of(&value).unwrap();
        if safe {
            assert_eq!(text(&plain.unwrap()), digits);
            assert_eq!(text(serialized.as_bytes()), digits);
        } else {
            let err = plain.unwrap_err().to_string();
            assert!(
                err.contains(&format!("integer `{digits}` is outside ±(2^53-1)"))
                    && err.contains("RFC 7493"),
                "{err}"
            );
            assert_eq!(text(serialized.as_bytes()), format!("\"{digits}\""));
        }
        // Nested anywhere, the same.
        let nested = json!({"a": [1, {"b": value}]});
        assert_eq!(in_leaf(&nested).is_ok(), safe, "{nested}");
        // Whatever Warden writes, the independent implementation writes too.
        let serialized = CanonicalJson::of(&nested).unwrap();
        let back: Value = serde_json::from_slice(serialized.as_bytes()).unwrap();
        assert_eq!(reference(&back), serialized.as_bytes());
    }
}

/// A leaf holding an integer beyond I-JSON's range is not canonical: refused when decoded,
/// as is a sequence number beyond it.
#[test]
fn leaves_with_integers_beyond_ijson_are_refused() {
    let leaf = String::from_utf8(event(json!(7)).to_leaf().unwrap()).unwrap();
    assert!(Event::from_leaf(leaf.as_bytes()).is_ok());
    for big in [
        "9007199254740992",
        "-9007199254740992",
        "18446744073709551615",
    ] {
        let tampered = leaf.replace(r#""x":7"#, &format!(r#""x":{big}"#));
        assert!(
            matches!(
                Event::from_leaf(tampered.as_bytes()),
                Err(LedgerError::BadLeaf(_))
            ),
            "{tampered}"
        );
    }
    let edge = leaf.replace(r#""x":7"#, r#""x":-9007199254740991"#);
    assert!(Event::from_leaf(edge.as_bytes()).is_ok());
    let seq = leaf.replace(r#""seq":3"#, r#""seq":9007199254740992"#);
    assert!(Event::from_leaf(seq.as_bytes()).is_err());
    let mut e = event(json!(1));
    e.seq = MAX_SAFE_INTEGER;
    assert!(e.to_leaf().is_ok());
    e.seq = MAX_SAFE_INTEGER + 1;
    assert!(matches!(e.to_leaf(), Err(LedgerError::InvalidEvent(_))));
}

/// At append: a plain field beyond the range is refused before anything is written; the same
/// number in a serialized field (a caller's own JSON) is recorded as its decimal text.
#[tokio::test]
async fn append_refuses_plain_integers_beyond_ijson() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn store::Store> = Arc::new(
        store::SqliteStore::open(&dir.path().join("l.db"))
            .await
            .unwrap(),
    );
    let ledger = Ledger::open(
        store,
        NoteSigner::generate("test.example/warden/ledger").unwrap(),
        zeroize::Zeroizing::new([1u8; 32]),
        LedgerConfig::default(),
    )
    .await
    .unwrap();
    let new = || {
        NewEvent::new(
            "token:ops",
            "api.request",
            Outcome::Success,
            OcsfClass::ApiActivity,
        )
    };
    let size = ledger.size();
    let refused = ledger.append(new().field("n", u64::MAX)).await;
    assert!(
        matches!(refused, Err(LedgerError::InvalidEvent(_))),
        "{refused:?}"
    );
    let refused = ledger
        .append(new().field("n", json!({"deep": [i64::MIN]})))
        .await;
    assert!(
        matches!(refused, Err(LedgerError::InvalidEvent(_))),
        "{refused:?}"
    );
    assert_eq!(ledger.size(), size, "nothing was appended");

    let ok = ledger
        .append(
            new()
                .field("n", MAX_SAFE_INTEGER)
                .field("m", -(MAX_SAFE_INTEGER as i64)),
        )
        .await
        .unwrap();
    let detail = json!({"amount": 9_007_199_254_740_993_u64, "small": 5});
    let recorded = ledger
        .append(new().field_serialized("detail", &detail).unwrap())
        .await
        .unwrap();
    let entries = ledger.entries(ok.seq, 2).await.unwrap();
    assert_eq!(entries[0].event.fields["n"], json!(MAX_SAFE_INTEGER));
    assert_eq!(entries[1].index, recorded.seq);
    assert_eq!(
        entries[1].event.fields["detail"],
        json!({"amount": "9007199254740993", "small": 5})
    );
    // Every leaf the log wrote, the independent implementation re-derives byte for byte.
    for entry in &entries {
        let value: Value = serde_json::from_slice(&entry.leaf).unwrap();
        assert_eq!(reference(&value), entry.leaf);
    }
}

/// The RFC 8785 test vectors (the reference implementation's `testdata`): Warden writes
/// exactly the expected bytes for every integer-only input, in a leaf and in a serialized
/// field, and refuses in a leaf those holding a number with a fraction or exponent (a leaf is
/// integers only; a serialized field records such a number as its decimal text instead).
#[test]
fn rfc8785_test_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc8785");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(dir.join("input")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let input: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let expected = std::fs::read(dir.join("output").join(&name)).unwrap();
        // The independent implementation passes its own vectors.
        assert_eq!(reference(&input), expected, "{name:?}");
        if has_float(&input) {
            assert!(in_leaf(&input).is_err(), "{name:?}");
        } else {
            assert_eq!(in_leaf(&input).unwrap(), expected, "{name:?}");
            assert_eq!(
                CanonicalJson::of(&input).unwrap().as_bytes(),
                expected,
                "{name:?}"
            );
        }
        checked.push(name);
    }
    // arrays, french, structures, unicode, values, weird
    assert_eq!(checked.len(), 6, "{checked:?}");
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => !(n.is_i64() || n.is_u64()),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

/// Random integer-only values — keys and strings from every part of Unicode that sorts
/// differently in UTF-8 and UTF-16, every character JSON escapes, integers up to the edges of
/// I-JSON's range — are written by Warden exactly as by the independent implementation.
#[test]
fn random_values_equal_an_independent_jcs() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    const CHARS: &[char] = &[
        'a',
        'Z',
        '0',
        ' ',
        '"',
        '\\',
        '/',
        '\n',
        '\r',
        '\t',
        '\u{0}',
        '\u{8}',
        '\u{c}',
        '\u{1f}',
        '\u{7f}',
        '\u{80}',
        'é',
        '\u{2028}',
        '\u{d7ff}',
        '\u{e000}',
        '\u{fb33}',
        '\u{ff61}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{10000}',
        '\u{1f600}',
        '\u{10ffff}',
    ];
    fn string(rng: &mut StdRng) -> String {
        (0..rng.gen_range(0..6))
            .map(|_| CHARS[rng.gen_range(0..CHARS.len())])
            .collect()
    }
    fn value(rng: &mut StdRng, depth: u32) -> Value {
        let max = MAX_SAFE_INTEGER as i64;
        match rng.gen_range(0..if depth == 0 { 6 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.r#gen()),
            2 => json!(rng.gen_range(-max..=max)),
            3 => json!([0, -1, max, -max, 1_000_000, 1 << 40][rng.gen_range(0..6)]),
            4 => json!(rng.gen_range(-1000..1000)),
            5 => Value::String(string(rng)),
            6 => Value::Array(
                (0..rng.gen_range(0..4))
                    .map(|_| value(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.gen_range(0..6))
                    .map(|_| (string(rng), value(rng, depth - 1)))
                    .collect(),
            ),
        }
    }
    let mut rng = StdRng::seed_from_u64(7493);
    for _ in 0..5000 {
        let v = value(&mut rng, 4);
        let expected = reference(&v);
        assert_eq!(in_leaf(&v).unwrap(), expected, "{v}");
        assert_eq!(CanonicalJson::of(&v).unwrap().as_bytes(), expected, "{v}");
    }
}
