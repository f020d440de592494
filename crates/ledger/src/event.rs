//! Audit events and their canonical leaf encoding.
//!
//! A leaf is the RFC 8785 (JCS) canonical JSON of one event: an object with the keys
//! `action`, `actor`, `class_uid`, `fields`, `outcome`, `seq`, `time` and `v`, sorted, no
//! whitespace, integers only (no floats), and only integers I-JSON (RFC 7493 §2.2) keeps
//! exact: within ±[`MAX_SAFE_INTEGER`]. Anyone can re-derive the bytes from the decoded event
//! with any JCS library, and [`Event::from_leaf`] refuses bytes that are not canonical.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::LedgerError;
use crate::canonical::CanonicalJson;

/// Version of the leaf encoding written into every leaf as `v`.
pub const LEAF_VERSION: u32 = 1;

const MAX_ACTOR: usize = 512;
const MAX_ACTION: usize = 128;
const MAX_FIELDS_BYTES: usize = 64 * 1024;

/// The largest magnitude of an integer in a leaf: 2^53 − 1. RFC 8785 §3.2.2.3 writes numbers
/// as ECMAScript writes IEEE 754 doubles, and I-JSON (RFC 7493 §2.2) keeps integers to the
/// range a double holds exactly; beyond it another JCS implementation writes a different
/// number (2^53 + 1 becomes `9007199254740992`), so nobody could re-derive the leaf.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Whether `n` is an integer within ±[`MAX_SAFE_INTEGER`] (RFC 7493 §2.2).
pub(crate) fn is_safe_integer(n: &serde_json::Number) -> bool {
    n.as_u64().is_some_and(|u| u <= MAX_SAFE_INTEGER)
        || n.as_i64()
            .is_some_and(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER)
}

/// The refusal of an integer outside ±[`MAX_SAFE_INTEGER`].
pub(crate) fn unsafe_integer(n: impl std::fmt::Display) -> LedgerError {
    LedgerError::InvalidEvent(format!(
        "integer `{n}` is outside ±(2^53-1), the range I-JSON (RFC 7493 §2.2) keeps exact: \
         record it as a string"
    ))
}

/// OCSF event classes Warden records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OcsfClass {
    /// 3002 Authentication: logins, SVID and token issuance.
    Authentication,
    /// 3003 Authorize Session: authorization decisions.
    AuthorizeSession,
    /// 3005 User Access Management: grants, holds, role changes.
    UserAccessManagement,
    /// 6003 API Activity: calls to Warden's own API.
    ApiActivity,
}

impl OcsfClass {
    /// The OCSF `class_uid`.
    pub fn uid(self) -> u32 {
        match self {
            OcsfClass::Authentication => 3002,
            OcsfClass::AuthorizeSession => 3003,
            OcsfClass::UserAccessManagement => 3005,
            OcsfClass::ApiActivity => 6003,
        }
    }
}

/// How the audited operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was attempted and failed (bad input, fault).
    Failure,
    /// It was refused by an authorization rule.
    Denied,
}

/// A field value supplied by the caller of [`crate::Ledger::append`].
#[derive(Debug, Clone)]
pub enum FieldValue {
    /// Recorded as is. Floats and integers beyond ±[`MAX_SAFE_INTEGER`] are not allowed (the
    /// encoding is canonical JSON limited to I-JSON, RFC 7493 §2.2).
    Plain(Value),
    /// Secret-bearing: recorded only as `hmac-sha256:<base64>` under the install's HMAC key,
    /// so equal secrets can be correlated without ever being disclosed.
    Secret(Vec<u8>),
    /// Already in canonical form ([`NewEvent::field_serialized`]).
    Canonical(CanonicalJson),
}

/// An event to append: everything but the sequence number and time, which the log assigns.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) outcome: Outcome,
    pub(crate) class: OcsfClass,
    pub(crate) fields: Vec<(Cow<'static, str>, FieldValue)>,
}

impl NewEvent {
    /// Starts an event: who did what, how it ended, and its OCSF class.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        outcome: Outcome,
        class: OcsfClass,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            outcome,
            class,
            fields: Vec::new(),
        }
    }

    /// Adds a plain field. The append refuses it if it holds a float or an integer beyond
    /// ±[`MAX_SAFE_INTEGER`] (see [`FieldValue::Plain`]).
    pub fn field(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> Self {
        self.fields
            .push((name.into(), FieldValue::Plain(value.into())));
        self
    }

    /// Adds a field serialized straight to canonical JSON, without a `serde_json::Value` in
    /// between. Unlike [`field`](Self::field), a float is recorded as its decimal text, as
    /// `serde_json` prints it (`0.25` → `"0.25"`; NaN and infinities as `null`), and so is an
    /// integer beyond ±[`MAX_SAFE_INTEGER`] (`9007199254740993` → `"9007199254740993"`): this
    /// records callers' own JSON (a decision's request, an operation's detail), where such
    /// numbers are legitimate. Fails only for what JSON cannot hold: a non-string object key,
    /// a `serde_json::value::RawValue`, or an error of `value`'s own `Serialize`.
    pub fn field_serialized<T: serde::Serialize + ?Sized>(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: &T,
    ) -> Result<Self, LedgerError> {
        let json = CanonicalJson::of(value)?;
        self.fields.push((name.into(), FieldValue::Canonical(json)));
        Ok(self)
    }

    /// Adds a secret-bearing field, stored only as an HMAC.
    pub fn secret(mut self, name: impl Into<Cow<'static, str>>, value: impl AsRef<[u8]>) -> Self {
        self.fields
            .push((name.into(), FieldValue::Secret(value.as_ref().to_vec())));
        self
    }

    /// The actor.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The action.
    pub fn action(&self) -> &str {
        &self.action
    }
}

/// A recorded event, as decoded from its leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Encoding version ([`LEAF_VERSION`]).
    pub v: u32,
    /// Index in the log.
    pub seq: u64,
    /// RFC 3339 UTC time with milliseconds, e.g. `2026-11-29T23:00:14.123Z`.
    pub time: String,
    /// Who acted: `token:<name>`, a SPIFFE ID, `system`, …
    pub actor: String,
    /// What was done, dotted: `api.request`, `ledger.checkpoint`, …
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// OCSF class id.
    pub class_uid: u32,
    /// Event-specific fields; secret-bearing ones appear as `hmac-sha256:<base64>`.
    pub fields: BTreeMap<String, Value>,
}

impl Event {
    /// The canonical leaf bytes (RFC 8785 JCS). Refuses an event with a float in a field,
    /// which has no canonical integer-only encoding, and an integer (`seq` or in a field)
    /// beyond ±[`MAX_SAFE_INTEGER`], which other JCS implementations would write differently.
    pub fn to_leaf(&self) -> Result<Vec<u8>, LedgerError> {
        if self.seq > MAX_SAFE_INTEGER {
            return Err(unsafe_integer(self.seq));
        }
        let fields = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), Member::Value(v)));
        let (head, _) = Self::leaf_head(
            &self.actor,
            &self.action,
            self.outcome,
            self.class_uid,
            fields,
        )?;
        Ok(leaf_from_head(&head, self.seq, &self.time))
    }

    /// The leaf split at its sequence number: the canonical bytes of everything that sorts
    /// before `seq` (`{"action":…,"actor":…,"class_uid":…,"fields":…,"outcome":…,`), which
    /// can be encoded before the event has a place in the log. [`leaf_from_head`] completes
    /// it; together they give exactly [`to_leaf`](Self::to_leaf) (RFC 8785 orders the keys
    /// `action`, `actor`, `class_uid`, `fields`, `outcome`, `seq`, `time`, `v`).
    ///
    /// `fields` may come in any order and must have distinct names. Also returns how many
    /// bytes the fields' values take (the event's size, which [`crate::Ledger`] bounds).
    /// Refuses a float anywhere in a field: it has no canonical integer-only spelling; and an
    /// integer beyond ±[`MAX_SAFE_INTEGER`] (RFC 7493 §2.2).
    pub(crate) fn leaf_head<'a>(
        actor: &str,
        action: &str,
        outcome: Outcome,
        class_uid: u32,
        fields: impl Iterator<Item = (&'a str, Member<'a>)>,
    ) -> Result<(Vec<u8>, usize), LedgerError> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"action\":");
        write_string(action, &mut out);
        out.extend_from_slice(b",\"actor\":");
        write_string(actor, &mut out);
        write_int(b",\"class_uid\":", class_uid.into(), &mut out);
        out.extend_from_slice(b",\"fields\":");
        let fields_at = out.len();
        let (mut members, mut names) = (0usize, 0usize);
        write_object(
            fields.inspect(|(name, _)| {
                members += 1;
                names += name.len();
            }),
            &mut out,
        )?;
        // The values' bytes: the object less its braces, and per member its name, two
        // quotes, a colon and a comma (one comma fewer). Exact for names that need no
        // escaping, which is every name an appended event may have.
        let values = (out.len() - fields_at)
            .saturating_sub(2 + names + 4 * members)
            .saturating_add(usize::from(members > 0));
        out.extend_from_slice(match outcome {
            Outcome::Success => b",\"outcome\":\"success\",",
            Outcome::Failure => b",\"outcome\":\"failure\",",
            Outcome::Denied => b",\"outcome\":\"denied\",",
        });
        Ok((out, values))
    }

    /// Decodes a leaf, refusing anything that is not the canonical encoding of an event.
    pub fn from_leaf(bytes: &[u8]) -> Result<Self, LedgerError> {
        let event: Event = serde_json::from_slice(bytes)
            .map_err(|e| LedgerError::BadLeaf(format!("not an event: {e}")))?;
        if event.v != LEAF_VERSION {
            return Err(LedgerError::BadLeaf(format!(
                "unsupported leaf version {}",
                event.v
            )));
        }
        let canonical = event
            .to_leaf()
            .map_err(|e| LedgerError::BadLeaf(e.to_string()))?;
        if canonical != bytes {
            return Err(LedgerError::BadLeaf("leaf is not in canonical form".into()));
        }
        Ok(event)
    }
}

/// Completes a [`Event::leaf_head`] with the sequence number, time and version.
///
/// INVARIANT: `seq` ≤ [`MAX_SAFE_INTEGER`]. The log assigns sequence numbers one by one from
/// 0; reaching 2^53 would take 285 years at a million appends a second.
pub(crate) fn leaf_from_head(head: &[u8], seq: u64, time: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 64);
    out.extend_from_slice(head);
    write_int(b"\"seq\":", seq, &mut out);
    out.extend_from_slice(b",\"time\":");
    write_string(time, &mut out);
    write_int(b",\"v\":", LEAF_VERSION.into(), &mut out);
    out.push(b'}');
    out
}

/// `prefix` and then the decimal digits of `n`.
pub(crate) fn write_int(prefix: &[u8], n: u64, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.extend_from_slice(prefix);
    // INVARIANT: writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// Sorts an object's members into RFC 8785 order: keys by UTF-16 code units. That is the
/// order of their UTF-8 bytes unless a key holds a character from U+E000 up (UTF-8 lead byte
/// 0xEE or above), so the common case sorts bytes, and skips sorting members already in
/// order. The sort is stable.
pub(crate) fn sort_members<T>(members: &mut [T], key: impl Fn(&T) -> &str) {
    if members.iter().all(|m| key(m).bytes().all(|b| b < 0xEE)) {
        if !members.is_sorted_by(|a, b| key(a).as_bytes() <= key(b).as_bytes()) {
            members.sort_by(|a, b| key(a).as_bytes().cmp(key(b).as_bytes()));
        }
    } else {
        members.sort_by(|a, b| key(a).encode_utf16().cmp(key(b).encode_utf16()));
    }
}

/// An object's members, written in RFC 8785 order.
fn write_object<'a>(
    members: impl Iterator<Item = (&'a str, Member<'a>)>,
    out: &mut Vec<u8>,
) -> Result<(), LedgerError> {
    let mut entries: Vec<(&str, Member<'_>)> = members.collect();
    sort_members(&mut entries, |e| e.0);
    out.push(b'{');
    for (i, (key, val)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        match val {
            Member::Value(v) => write_canonical(v, out)?,
            Member::Canonical(bytes) => out.extend_from_slice(bytes),
        }
    }
    out.push(b'}');
    Ok(())
}

/// A member's value: one to encode, or one in canonical form already.
#[derive(Clone, Copy)]
pub(crate) enum Member<'a> {
    Value(&'a Value),
    Canonical(&'a [u8]),
}

/// RFC 8785 serialization of an integer-only JSON value: object keys sorted by UTF-16 code
/// units, no whitespace, strings escaped as ECMAScript `JSON.stringify` does. Sorting is done
/// here, explicitly, so the encoding does not depend on how `serde_json::Map` happens to be
/// ordered in this build. A float has no canonical integer-only spelling: refused. So is an
/// integer beyond ±[`MAX_SAFE_INTEGER`] (RFC 7493 §2.2): JCS implementations that follow
/// RFC 8785 §3.2.2.3 to the letter write it as the nearest double, not as its digits.
pub(crate) fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Result<(), LedgerError> {
    match value {
        Value::Object(map) => {
            write_object(map.iter().map(|(k, v)| (k.as_str(), Member::Value(v))), out)
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
            Ok(())
        }
        Value::String(s) => {
            write_string(s, out);
            Ok(())
        }
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Err(LedgerError::InvalidEvent(
            "floating-point numbers are not allowed in audit fields".into(),
        )),
        Value::Number(n) if !is_safe_integer(n) => Err(unsafe_integer(n)),
        // Null, booleans and integers have one spelling; serde_json writes exactly it.
        // INVARIANT: writing to a Vec cannot fail.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
            Ok(())
        }
    }
}

/// Whether `s` holds a byte JSON escapes: a control character, `"` or `\`. Checked 16
/// bytes at a time without an early exit inside a block, which the compiler turns into
/// vector compares (a byte-by-byte `any` is not vectorized).
fn needs_escape(s: &[u8]) -> bool {
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut blocks = s.chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(false, |found, &b| found | special(b)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| special(b))
}

pub(crate) fn write_string(s: &str, out: &mut Vec<u8>) {
    // Most strings need no escaping: copied between quotes as they are.
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json escapes `"`, `\`, \b \f \n \r \t and other controls as lowercase \u00xx,
    // exactly the JCS rules.
    // INVARIANT: writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Checks the names in a new event before it is encoded.
fn validate(event: &NewEvent) -> Result<(), LedgerError> {
    if event.actor.is_empty() || event.actor.len() > MAX_ACTOR {
        return Err(LedgerError::InvalidEvent(format!(
            "actor must be 1..={MAX_ACTOR} bytes"
        )));
    }
    if event.action.is_empty()
        || event.action.len() > MAX_ACTION
        || !event
            .action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(LedgerError::InvalidEvent(format!(
            "action `{}` must be 1..={MAX_ACTION} characters of [a-z0-9._-]",
            event.action
        )));
    }
    for (name, _) in &event.fields {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b))
        {
            return Err(LedgerError::InvalidEvent(format!(
                "field name `{name}` must be 1..=64 characters of [a-z0-9._]"
            )));
        }
    }
    Ok(())
}

/// An event checked and encoded up to its sequence number ([`Event::leaf_head`]).
pub(crate) struct Encoded {
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) head: Vec<u8>,
}

/// Checks `event` and encodes its head, with its secret-bearing fields replaced by `hmac` of
/// them. Refuses bad names, a field given twice, floats, integers beyond
/// ±[`MAX_SAFE_INTEGER`], and values over 64 KiB in all.
pub(crate) fn encode(
    event: NewEvent,
    hmac: impl Fn(&[u8]) -> Result<String, LedgerError>,
) -> Result<Encoded, LedgerError> {
    validate(&event)?;
    enum Resolved {
        Value(Value),
        Canonical(Vec<u8>),
    }
    let mut fields = Vec::with_capacity(event.fields.len());
    for (name, value) in event.fields {
        let value = match value {
            FieldValue::Plain(v) => Resolved::Value(v),
            FieldValue::Secret(bytes) => Resolved::Value(Value::from(hmac(&bytes)?)),
            FieldValue::Canonical(json) => Resolved::Canonical(json.0),
        };
        fields.push((name, value));
    }
    // Names are ASCII (checked above): byte order is the canonical order, and sorted fields
    // are written without sorting again.
    fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if let Some(twice) = fields.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(LedgerError::InvalidEvent(format!(
            "field `{}` given twice",
            twice[0].0
        )));
    }
    let members = fields.iter().map(|(k, v)| {
        let member = match v {
            Resolved::Value(v) => Member::Value(v),
            Resolved::Canonical(bytes) => Member::Canonical(bytes),
        };
        (k.as_ref(), member)
    });
    let (head, values) = Event::leaf_head(
        &event.actor,
        &event.action,
        event.outcome,
        event.class.uid(),
        members,
    )?;
    if values > MAX_FIELDS_BYTES {
        return Err(LedgerError::InvalidEvent(format!(
            "fields exceed {MAX_FIELDS_BYTES} bytes"
        )));
    }
    Ok(Encoded {
        actor: event.actor,
        action: event.action,
        head,
    })
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_time(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut fields = BTreeMap::new();
        fields.insert("path".to_owned(), Value::from("/v1/x\n\"q\""));
        fields.insert("count".to_owned(), Value::from(3));
        fields.insert(
            "nested".to_owned(),
            serde_json::json!({"z": 1, "a": [true, null]}),
        );
        Event {
            v: 1,
            seq: 7,
            time: format_time(1_764_457_214_123),
            actor: "token:ops".into(),
            action: "api.request".into(),
            outcome: Outcome::Success,
            class_uid: 6003,
            fields,
        }
    }

    /// The writer completes leaves from heads encoded by the appenders: the bytes must be the
    /// canonical leaf exactly, for every outcome and for keys and strings that need escaping
    /// or sort differently in UTF-16.
    #[test]
    fn leaf_head_and_tail_make_the_canonical_leaf() {
        let mut events = vec![sample()];
        for (outcome, actor) in [
            (Outcome::Failure, "spiffe://example.org/agent/é"),
            (Outcome::Denied, "anonymous\u{1f}\"x\""),
        ] {
            let mut e = sample();
            e.outcome = outcome;
            e.actor = actor.into();
            e.seq = MAX_SAFE_INTEGER;
            e.fields.insert("\u{e9}key".into(), Value::from("\u{2028}"));
            e.fields.insert("\u{1f600}".into(), Value::from(-5));
            e.fields
                .insert("\u{ff61}".into(), serde_json::json!([{"b": 1, "a": "\\"}]));
            events.push(e);
        }
        let mut empty = sample();
        empty.fields.clear();
        events.push(empty);
        for e in events {
            // The whole event as one JSON value, written by the generic path (every key of
            // every object sorted by UTF-16 code units), against the head + tail the log uses.
            let mut whole = Vec::new();
            write_canonical(&serde_json::to_value(&e).unwrap(), &mut whole).unwrap();
            let leaf = e.to_leaf().unwrap();
            assert_eq!(leaf, whole, "{}", String::from_utf8_lossy(&whole));
        }
    }

    /// RFC 8785 §3.2.3's sorting example, and random keys against a plain UTF-16 sort: the
    /// byte-order fast path must never change the order.
    #[test]
    fn members_sort_by_utf16_code_units() {
        let mut keys = vec![
            "\u{20ac}",
            "\r",
            "\u{fb33}",
            "1",
            "\u{1f600}",
            "\u{80}",
            "\u{f6}",
        ];
        sort_members(&mut keys, |k| k);
        assert_eq!(
            keys,
            [
                "\r",
                "1",
                "\u{80}",
                "\u{f6}",
                "\u{20ac}",
                "\u{1f600}",
                "\u{fb33}"
            ]
        );
        use rand::{Rng, SeedableRng, rngs::StdRng};
        const CHARS: &[char] = &[
            'a',
            'b',
            '\u{7f}',
            '\u{80}',
            '\u{d7ff}',
            '\u{e000}',
            '\u{ffff}',
            '\u{10000}',
            '\u{1f600}',
        ];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..5000 {
            let mut keys: Vec<String> = (0..rng.gen_range(0..8))
                .map(|_| {
                    (0..rng.gen_range(0..4))
                        .map(|_| CHARS[rng.gen_range(0..CHARS.len())])
                        .collect()
                })
                .collect();
            let mut expected = keys.clone();
            expected.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            sort_members(&mut keys, String::as_str);
            assert_eq!(keys, expected);
        }
    }

    /// Strings copied without escaping are exactly what serde_json's escaper writes.
    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        let cases = [
            "",
            "plain",
            "tab\there",
            "\"q\"",
            "back\\slash",
            "\u{0}\u{1f}\u{7f}",
            "é\u{2028}\u{1f600}",
        ];
        for s in cases {
            let mut out = Vec::new();
            write_string(s, &mut out);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        // A byte that needs escaping at every position of strings longer than one 16-byte
        // block, and none at all.
        for len in 0..50 {
            let plain = "x".repeat(len);
            let mut out = Vec::new();
            write_string(&plain, &mut out);
            assert_eq!(out, serde_json::to_vec(&plain).unwrap(), "{plain:?}");
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1f}', '\u{0}'] {
                    let mut s = "é".repeat(at / 2) + &"x".repeat(at % 2);
                    s.push(special);
                    s.push_str(&"y".repeat(len - at));
                    let mut out = Vec::new();
                    write_string(&s, &mut out);
                    assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn leaf_is_jcs_canonical() {
        let leaf = sample().to_leaf().unwrap();
        let text = std::str::from_utf8(&leaf).unwrap();
        assert_eq!(
            text,
            r#"{"action":"api.request","actor":"token:ops","class_uid":6003,"fields":{"count":3,"nested":{"a":[true,null],"z":1},"path":"/v1/x\n\"q\""},"outcome":"success","seq":7,"time":"2025-11-29T23:00:14.123Z","v":1}"#
        );
        assert_eq!(Event::from_leaf(&leaf).unwrap(), sample());
    }

    #[test]
    fn non_canonical_leaves_are_refused() {
        let leaf = String::from_utf8(sample().to_leaf().unwrap()).unwrap();
        let cases = [
            leaf.replacen('{', "{ ", 1),                                 // whitespace
            leaf.replace(r#""v":1"#, r#""v":1.0"#),                      // float
            leaf.replace(r#""v":1"#, r#""v":2"#),                        // version
            leaf.replace(r#""seq":7"#, r#""seq":7,"extra":1"#),          // unknown key
            leaf.replace(r#""count":3"#, r#""count":3.5"#),              // float field
            leaf.replace(r#""outcome":"success""#, r#""outcome":"ok""#), // bad outcome
            format!("{leaf}\n"),                                         // trailing byte
        ];
        for case in cases {
            assert!(
                Event::from_leaf(case.as_bytes()).is_err(),
                "accepted {case}"
            );
        }
    }

    #[test]
    fn validation_rules() {
        let check = |event: NewEvent| encode(event, |s| Ok(format!("hmac:{}", s.len())));
        let new = || NewEvent::new("a", "x.y", Outcome::Success, OcsfClass::ApiActivity);
        assert!(check(new()).is_ok());
        assert!(check(new().field("f", "x".repeat(60_000)).secret("s", "k")).is_ok());
        let bad = [
            NewEvent::new("", "x", Outcome::Success, OcsfClass::ApiActivity),
            NewEvent::new("a", "X", Outcome::Success, OcsfClass::ApiActivity),
            new().field("Bad", 1),
            new().field("f", 1.5),
            new().field("f", serde_json::json!({"deep": [1, {"x": 0.5}]})),
            new().field("f", "x".repeat(70_000)),
            new()
                .field("f", "x".repeat(40_000))
                .field("g", "x".repeat(40_000)),
            new().field("f", 1).field("f", 2),
            new().field("f", 1).secret("f", "k"),
        ];
        for event in bad {
            let shown = format!("{event:?}");
            assert!(check(event).is_err(), "{shown}");
        }
    }

    /// A field serialized straight to canonical JSON is recorded exactly as the same value
    /// given as a `Value` would be, and counts the same against the size limit.
    #[test]
    fn serialized_fields_equal_plain_ones() {
        let hmac = |s: &[u8]| Ok(format!("hmac:{}", s.len()));
        let value = serde_json::json!({"z": [1, "\u{1f600}"], "a": {"\u{e000}": null, "b": true}});
        let new = || NewEvent::new("a", "x.y", Outcome::Denied, OcsfClass::AuthorizeSession);
        let plain = encode(new().field("f", value.clone()).secret("s", "k"), hmac).unwrap();
        let serialized = encode(
            new()
                .field_serialized("f", &value)
                .unwrap()
                .secret("s", "k"),
            hmac,
        )
        .unwrap();
        assert_eq!(plain.head, serialized.head);
        let big = "x".repeat(MAX_FIELDS_BYTES - 1);
        assert!(encode(new().field_serialized("f", &big).unwrap(), hmac).is_err());
        assert!(encode(new().field_serialized("f", &big[2..]).unwrap(), hmac).is_ok());
    }

    /// The size limit counts the values' bytes exactly: names, quotes, colons and commas
    /// are not counted.
    #[test]
    fn size_limit_is_on_the_values() {
        let check = |event: NewEvent| encode(event, |_| Ok(String::new()));
        let new = || NewEvent::new("a", "x.y", Outcome::Success, OcsfClass::ApiActivity);
        // A string of n characters takes n + 2 bytes.
        let at = |n: usize| new().field("a", 1).field("long_name", "x".repeat(n));
        assert!(check(at(MAX_FIELDS_BYTES - 3)).is_ok());
        assert!(check(at(MAX_FIELDS_BYTES - 2)).is_err());
    }

    #[test]
    fn time_format() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_764_457_214_005), "2025-11-29T23:00:14.005Z");
    }
}
