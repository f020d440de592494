//! RFC 8785 canonical JSON written straight from a `serde::Serialize` value, without building
//! a `serde_json::Value` first: the bytes are exactly those `write_canonical` writes for
//! `serde_json::to_value(x)` with every float replaced by its decimal text as `serde_json`
//! prints it (`0.25` → `"0.25"`; NaN and infinities → `null`, as
//! `serde_json::to_value` makes them), and every integer beyond ±(2^53 − 1) by its decimal
//! text too (`9007199254740993` → `"9007199254740993"`): the output is I-JSON (RFC 7493
//! §2.2), so every RFC 8785 implementation writes it back byte for byte. An object's member
//! values are written into one scratch buffer and copied out in key order, sorted as
//! [`crate::event`] sorts keys.

use std::borrow::Cow;
use std::ops::Range;

use serde::ser::{self, Serialize};

use crate::LedgerError;
use crate::event::{MAX_SAFE_INTEGER, sort_members, write_int, write_string};

/// A field value already in canonical form; made only here, so it is canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalJson(pub(crate) Vec<u8>);

impl CanonicalJson {
    /// `value` as canonical JSON, floats and integers beyond ±(2^53 − 1) as their decimal
    /// text (see [`crate::NewEvent::field_serialized`]).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, LedgerError> {
        let mut out = Vec::with_capacity(512);
        value.serialize(&mut Writer { out: &mut out })?;
        Ok(Self(out))
    }

    /// The JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl ser::Error for LedgerError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        LedgerError::InvalidEvent(msg.to_string())
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn float(&mut self, v: f64) {
        match serde_json::Number::from_f64(v) {
            Some(n) => write_string(&n.to_string(), self.out),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// An integer: as a number within ±[`MAX_SAFE_INTEGER`] (RFC 7493 §2.2), else as its
    /// decimal text, which no JCS implementation can write differently.
    fn integer(&mut self, negative: bool, magnitude: u128) {
        use std::io::Write as _;
        let sign = if negative { "-" } else { "" };
        if magnitude <= u128::from(MAX_SAFE_INTEGER) {
            // INVARIANT: writing to a Vec cannot fail.
            let _ = write!(self.out, "{sign}{magnitude}");
        } else {
            write_string(&format!("{sign}{magnitude}"), self.out);
        }
    }

    /// `{"variant":` … the caller writes the value and closes the brace.
    fn open_variant(&mut self, variant: &str) {
        self.out.push(b'{');
        write_string(variant, self.out);
        self.out.push(b':');
    }
}

/// An array being written.
struct Seq<'a, 'b> {
    w: &'b mut Writer<'a>,
    first: bool,
    /// Close a `{"variant":[…]` too.
    variant: bool,
}

/// An object being collected: member values are written one after another into a scratch
/// buffer, then copied out in key order.
struct Obj<'a, 'b> {
    w: &'b mut Writer<'a>,
    scratch: Vec<u8>,
    /// Key and where its value lies in `scratch`.
    members: Vec<(Cow<'static, str>, Range<usize>)>,
    key: Option<String>,
    variant: bool,
}

impl Obj<'_, '_> {
    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: Cow<'static, str>,
        value: &T,
    ) -> Result<(), LedgerError> {
        let start = self.scratch.len();
        value.serialize(&mut Writer {
            out: &mut self.scratch,
        })?;
        self.members.push((key, start..self.scratch.len()));
        Ok(())
    }

    fn finish(self) -> Result<(), LedgerError> {
        let Obj {
            w,
            scratch,
            mut members,
            variant,
            ..
        } = self;
        // A key given twice keeps its last value, as a serde_json map does.
        members.reverse();
        sort_members(&mut members, |m| m.0.as_ref());
        members.dedup_by(|later, earlier| later.0 == earlier.0);
        w.out.push(b'{');
        for (i, (key, range)) in members.into_iter().enumerate() {
            if i > 0 {
                w.out.push(b',');
            }
            write_string(&key, w.out);
            w.out.push(b':');
            w.out
                .extend_from_slice(scratch.get(range).unwrap_or_default());
        }
        w.out.push(b'}');
        if variant {
            w.out.push(b'}');
        }
        Ok(())
    }
}

impl<'a, 'b> ser::Serializer for &'b mut Writer<'a> {
    type Ok = ();
    type Error = LedgerError;
    type SerializeSeq = Seq<'a, 'b>;
    type SerializeTuple = Seq<'a, 'b>;
    type SerializeTupleStruct = Seq<'a, 'b>;
    type SerializeTupleVariant = Seq<'a, 'b>;
    type SerializeMap = Obj<'a, 'b>;
    type SerializeStruct = Obj<'a, 'b>;
    type SerializeStructVariant = Obj<'a, 'b>;

    fn serialize_bool(self, v: bool) -> Result<(), LedgerError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), LedgerError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), LedgerError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), LedgerError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), LedgerError> {
        self.serialize_i128(v.into())
    }
    fn serialize_u8(self, v: u8) -> Result<(), LedgerError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), LedgerError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), LedgerError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), LedgerError> {
        if v <= MAX_SAFE_INTEGER {
            write_int(b"", v, self.out);
        } else {
            self.integer(false, v.into());
        }
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), LedgerError> {
        self.integer(v < 0, v.unsigned_abs());
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), LedgerError> {
        self.integer(false, v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), LedgerError> {
        self.float(f64::from(v));
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), LedgerError> {
        self.float(v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), LedgerError> {
        write_string(v.encode_utf8(&mut [0; 4]), self.out);
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), LedgerError> {
        write_string(v, self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), LedgerError> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), LedgerError> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), LedgerError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), LedgerError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), LedgerError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), LedgerError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), LedgerError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), LedgerError> {
        self.open_variant(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a, 'b>, LedgerError> {
        self.out.push(b'[');
        Ok(Seq {
            w: self,
            first: true,
            variant: false,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a, 'b>, LedgerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Seq<'a, 'b>, LedgerError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a, 'b>, LedgerError> {
        self.open_variant(variant);
        self.out.push(b'[');
        Ok(Seq {
            w: self,
            first: true,
            variant: true,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Obj<'a, 'b>, LedgerError> {
        Ok(Obj {
            w: self,
            // An empty object (`{}`) allocates nothing.
            scratch: Vec::with_capacity(if len == Some(0) { 0 } else { 128 }),
            members: Vec::with_capacity(len.unwrap_or(0)),
            key: None,
            variant: false,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Obj<'a, 'b>, LedgerError> {
        // serde_json's RawValue travels as a struct of this name: its text is not known to
        // be canonical, so it is refused rather than copied.
        if name.starts_with("$serde_json::") {
            return Err(LedgerError::InvalidEvent(format!(
                "{name} has no canonical form here"
            )));
        }
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Obj<'a, 'b>, LedgerError> {
        self.open_variant(variant);
        let mut obj = self.serialize_map(Some(len))?;
        obj.variant = true;
        Ok(obj)
    }
}

impl ser::SerializeSeq for Seq<'_, '_> {
    type Ok = ();
    type Error = LedgerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LedgerError> {
        if !self.first {
            self.w.out.push(b',');
        }
        self.first = false;
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), LedgerError> {
        self.w.out.push(b']');
        if self.variant {
            self.w.out.push(b'}');
        }
        Ok(())
    }
}

/// Tuples of every kind are written as arrays.
macro_rules! like_seq {
    ($($trait:ident :: $method:ident),*) => {
        $(impl ser::$trait for Seq<'_, '_> {
            type Ok = ();
            type Error = LedgerError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LedgerError> {
                ser::SerializeSeq::serialize_element(self, value)
            }
            fn end(self) -> Result<(), LedgerError> {
                ser::SerializeSeq::end(self)
            }
        })*
    };
}
like_seq!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Obj<'_, '_> {
    type Ok = ();
    type Error = LedgerError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), LedgerError> {
        self.key = Some(key.serialize(KeyWriter)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), LedgerError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| LedgerError::InvalidEvent("map value without a key".into()))?;
        self.member(Cow::Owned(key), value)
    }
    fn end(self) -> Result<(), LedgerError> {
        self.finish()
    }
}

/// Structs of both kinds are objects with their field names as keys.
macro_rules! like_struct {
    ($($trait:ident),*) => {
        $(impl ser::$trait for Obj<'_, '_> {
            type Ok = ();
            type Error = LedgerError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), LedgerError> {
                self.member(Cow::Borrowed(key), value)
            }
            fn end(self) -> Result<(), LedgerError> {
                self.finish()
            }
        })*
    };
}
like_struct!(SerializeStruct, SerializeStructVariant);

/// `fn name(self, v: T) -> Result<String, _> { Ok(v.to_string()) }` for each `name: T`.
macro_rules! key_as_text {
    ($($name:ident: $t:ty),* $(,)?) => {
        $(fn $name(self, v: $t) -> Result<String, LedgerError> {
            Ok(v.to_string())
        })*
    };
}

/// Object keys: strings, and what `serde_json` turns into strings (integers, booleans,
/// characters, unit variants). Anything else is refused, as `serde_json` refuses it.
struct KeyWriter;

fn key_error() -> LedgerError {
    LedgerError::InvalidEvent("an object key must be a string".into())
}

impl ser::Serializer for KeyWriter {
    type Ok = String;
    type Error = LedgerError;
    type SerializeSeq = ser::Impossible<String, LedgerError>;
    type SerializeTuple = ser::Impossible<String, LedgerError>;
    type SerializeTupleStruct = ser::Impossible<String, LedgerError>;
    type SerializeTupleVariant = ser::Impossible<String, LedgerError>;
    type SerializeMap = ser::Impossible<String, LedgerError>;
    type SerializeStruct = ser::Impossible<String, LedgerError>;
    type SerializeStructVariant = ser::Impossible<String, LedgerError>;

    key_as_text! {
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_char: char
    }
    fn serialize_f32(self, _v: f32) -> Result<String, LedgerError> {
        Err(key_error())
    }
    fn serialize_f64(self, _v: f64) -> Result<String, LedgerError> {
        Err(key_error())
    }
    fn serialize_str(self, v: &str) -> Result<String, LedgerError> {
        Ok(v.to_owned())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String, LedgerError> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<String, LedgerError> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<String, LedgerError> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<String, LedgerError> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String, LedgerError> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, LedgerError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, LedgerError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<String, LedgerError> {
        Err(key_error())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, LedgerError> {
        Err(key_error())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, LedgerError> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, LedgerError> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, LedgerError> {
        Err(key_error())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, LedgerError> {
        Err(key_error())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, LedgerError> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, LedgerError> {
        Err(key_error())
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::{Value, json};

    use super::*;
    use crate::event::write_canonical;

    /// The reference: through a `Value`, floats and integers beyond ±(2^53 − 1) to text.
    fn reference<T: Serialize>(x: &T) -> Option<Vec<u8>> {
        fn safe(v: Value) -> Value {
            match v {
                Value::Number(n) if !crate::event::is_safe_integer(&n) => {
                    Value::String(n.to_string())
                }
                Value::Array(a) => Value::Array(a.into_iter().map(safe).collect()),
                Value::Object(m) => {
                    Value::Object(m.into_iter().map(|(k, v)| (k, safe(v))).collect())
                }
                o => o,
            }
        }
        let v = safe(serde_json::to_value(x).ok()?);
        let mut out = Vec::new();
        write_canonical(&v, &mut out).ok()?;
        Some(out)
    }

    #[derive(Serialize)]
    enum Shape {
        Unit,
        New(u8),
        Tuple(i32, String),
        Struct { z: bool, a: Option<f64> },
    }

    #[derive(Serialize)]
    struct Unsorted<'a> {
        zeta: &'a str,
        alpha: Vec<Shape>,
        #[serde(rename = "Δ")]
        delta: (i8, char),
        #[serde(flatten)]
        rest: serde_json::Map<String, Value>,
        bytes: &'a [u8],
        nothing: (),
        big: u128,
        neg: i128,
    }

    #[test]
    fn equals_the_value_path() {
        let values = [
            json!(null),
            json!([1, -2, 3.5, "x\n\"y\"\u{1f}", true, {"b": 1, "a": [0.1, -0.0, 1e300]}]),
            json!({"\u{e9}": 1, "\u{ff61}": 2, "\u{1f600}": 3, "z": {"\u{e000}": 4, "a": 5}}),
            json!({"risk_score": 0.0, "n": u64::MAX, "m": i64::MIN, "s": "\u{2028}é"}),
        ];
        for v in &values {
            assert_eq!(
                CanonicalJson::of(v).unwrap().0,
                reference(v).unwrap(),
                "{v}"
            );
        }
        let mut rest = serde_json::Map::new();
        rest.insert("mid".into(), json!(0.25));
        rest.insert("\u{1f600}".into(), json!([]));
        let x = Unsorted {
            zeta: "\\",
            alpha: vec![
                Shape::Unit,
                Shape::New(7),
                Shape::Tuple(-1, "t".into()),
                Shape::Struct {
                    z: false,
                    a: Some(f64::NAN),
                },
                Shape::Struct {
                    z: true,
                    a: Some(2.5),
                },
            ],
            delta: (-8, '\u{10ffff}'),
            rest,
            bytes: &[0, 255],
            nothing: (),
            big: u128::from(u64::MAX),
            neg: i128::from(i64::MIN),
        };
        assert_eq!(CanonicalJson::of(&x).unwrap().0, reference(&x).unwrap());
        let keys: std::collections::BTreeMap<i32, &str> = [(10, "a"), (9, "b"), (-1, "c")].into();
        assert_eq!(
            CanonicalJson::of(&keys).unwrap().0,
            reference(&keys).unwrap()
        );
    }

    /// Random JSON values — nesting, keys and strings from every part of Unicode that sorts
    /// differently in UTF-8 and UTF-16, escapes, integers at the edges, floats — written both
    /// ways must give the same bytes.
    #[test]
    fn equals_the_value_path_on_random_values() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        const CHARS: &[char] = &[
            'a',
            'Z',
            '0',
            '_',
            '"',
            '\\',
            '\n',
            '\u{1}',
            '\u{7f}',
            'é',
            '\u{2028}',
            '\u{d7ff}',
            '\u{e000}',
            '\u{ff61}',
            '\u{fffd}',
            '\u{10000}',
            '\u{1f600}',
            '\u{10ffff}',
        ];
        fn text(rng: &mut StdRng) -> String {
            (0..rng.gen_range(0..6))
                .map(|_| CHARS[rng.gen_range(0..CHARS.len())])
                .collect()
        }
        fn value(rng: &mut StdRng, depth: u32) -> Value {
            match rng.gen_range(0..if depth == 0 { 6 } else { 8 }) {
                0 => Value::Null,
                1 => Value::Bool(rng.r#gen()),
                2 => [json!(i64::MIN), json!(-1), json!(0), json!(u64::MAX)][rng.gen_range(0..4)]
                    .clone(),
                3 => json!(rng.gen_range(-1e6..1e6)),
                4 => json!([0.5, -0.0, 1e-7, 1e300, 0.1][rng.gen_range(0..5)]),
                5 => Value::String(text(rng)),
                6 => Value::Array(
                    (0..rng.gen_range(0..4))
                        .map(|_| value(rng, depth - 1))
                        .collect(),
                ),
                _ => Value::Object(
                    (0..rng.gen_range(0..5))
                        .map(|_| (text(rng), value(rng, depth - 1)))
                        .collect(),
                ),
            }
        }
        let mut rng = StdRng::seed_from_u64(8785);
        for _ in 0..3000 {
            let v = value(&mut rng, 4);
            assert_eq!(
                CanonicalJson::of(&v).unwrap().0,
                reference(&v).unwrap(),
                "{v}"
            );
        }
    }

    #[test]
    fn refuses_what_has_no_canonical_form() {
        let raw = serde_json::value::RawValue::from_string("{ }".into()).unwrap();
        assert!(CanonicalJson::of(&raw).is_err());
        let float_keys: Vec<(f64, i32)> = vec![(1.5, 1)];
        let map: std::collections::HashMap<String, i32> = [("k".to_owned(), 1)].into();
        assert!(CanonicalJson::of(&map).is_ok());
        struct FloatKey;
        impl Serialize for FloatKey {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(&1.5f64, &1)?;
                m.end()
            }
        }
        assert!(CanonicalJson::of(&FloatKey).is_err());
        assert!(CanonicalJson::of(&float_keys).is_ok());
    }

    /// RFC 7493 §2.2: integers within ±(2^53 − 1) are numbers, every other one is its decimal
    /// text, whatever its Rust type.
    #[test]
    fn integers_beyond_ijson_are_text() {
        let safe = MAX_SAFE_INTEGER;
        let of = |json: CanonicalJson| String::from_utf8(json.0).unwrap();
        assert_eq!(of(CanonicalJson::of(&safe).unwrap()), "9007199254740991");
        assert_eq!(
            of(CanonicalJson::of(&(safe + 1)).unwrap()),
            r#""9007199254740992""#
        );
        assert_eq!(
            of(CanonicalJson::of(&-(safe as i64)).unwrap()),
            "-9007199254740991"
        );
        assert_eq!(
            of(CanonicalJson::of(&(-(safe as i64) - 1)).unwrap()),
            r#""-9007199254740992""#
        );
        assert_eq!(
            of(CanonicalJson::of(&i64::MIN).unwrap()),
            r#""-9223372036854775808""#
        );
        assert_eq!(
            of(CanonicalJson::of(&u128::MAX).unwrap()),
            format!(r#""{}""#, u128::MAX)
        );
        assert_eq!(
            of(CanonicalJson::of(&i128::MIN).unwrap()),
            format!(r#""{}""#, i128::MIN)
        );
        assert_eq!(
            of(CanonicalJson::of(&json!({"n": u64::MAX, "m": [1, -1]})).unwrap()),
            r#"{"m":[1,-1],"n":"18446744073709551615"}"#
        );
    }
}
