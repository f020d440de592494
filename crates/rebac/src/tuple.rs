//! Relationship tuples and their parts, parsed at the boundary with OpenFGA's rules.
//!
//! The rules are OpenFGA's (`openfga/api` `openfga.proto` field validation and
//! `pkg/tuple/tuple.go`):
//!
//! - object: `^[^\s]{2,256}$` and `^[^:#\s]+:[^#:\s]+$`, and not a typed wildcard (`doc:*`);
//! - relation: `^[^:#@\s]{1,50}$`;
//! - user: at most 512 bytes, at most one `:` and one `#`, no whitespace, and one of
//!   `type:id`, `type:*` or `type:id#relation` (schema 1.1 has no untyped `*` or bare ids);
//!   a userset cannot be built on a wildcard (`group:*#member`).
//!
//! `\s` is RE2's: space, tab, `\n`, `\r` and form feed. So an id may contain further `/`, `.`,
//! `@`, `|` … but never a second `:`; a SPIFFE ID therefore cannot be an id verbatim
//! (`agent:spiffe://example.org/agent/coder` has two `:`), and
//! [`ObjectRef::for_spiffe_id`] maps it to `agent:example.org/agent/coder`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::RebacError;

/// Longest object string (`type:id`), in characters.
pub const MAX_OBJECT_CHARS: usize = 256;
/// Longest relation name, in characters.
pub const MAX_RELATION_CHARS: usize = 50;
/// Longest user string, in bytes.
pub const MAX_USER_BYTES: usize = 512;

/// RE2's `\s`.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// `[^:#\s]+`
fn is_plain_part(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c == ':' || c == '#' || is_space(c))
}

/// Checks a relation name: `^[^:#@\s]{1,50}$`.
pub(crate) fn check_relation_name(relation: &str) -> Result<(), String> {
    let n = relation.chars().count();
    if n == 0 {
        return Err("the relation is empty".into());
    }
    if n > MAX_RELATION_CHARS {
        return Err(format!(
            "the relation is longer than {MAX_RELATION_CHARS} characters"
        ));
    }
    if relation
        .chars()
        .any(|c| c == ':' || c == '#' || c == '@' || is_space(c))
    {
        return Err("the relation cannot contain `:`, `#`, `@` or whitespace".into());
    }
    Ok(())
}

/// An object, `type:id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    object_type: String,
    id: String,
}

impl ObjectRef {
    /// Parses `type:id` as the object of a tuple or request.
    pub fn parse(s: &str) -> Result<Self, RebacError> {
        let invalid = |reason: &str| RebacError::InvalidObject {
            object: s.to_owned(),
            reason: reason.to_owned(),
        };
        let n = s.chars().count();
        if !(2..=MAX_OBJECT_CHARS).contains(&n) {
            return Err(invalid("an object must be 2 to 256 characters long"));
        }
        let object = Self::parse_unbounded(s).ok_or_else(|| {
            invalid("an object must be `type:id` with no `#`, further `:` or whitespace")
        })?;
        if object.id == "*" {
            return Err(invalid("an object cannot be a typed wildcard"));
        }
        Ok(object)
    }

    /// Builds an object from its parts, with the same rules as [`ObjectRef::parse`].
    pub fn new(object_type: &str, id: &str) -> Result<Self, RebacError> {
        Self::parse(&format!("{object_type}:{id}"))
    }

    /// The object that stands for a SPIFFE ID: `type:` followed by the ID without its
    /// `spiffe://` scheme (`agent:example.org/agent/coder`), since OpenFGA ids cannot hold a
    /// second `:`.
    pub fn for_spiffe_id(object_type: &str, spiffe_id: &str) -> Result<Self, RebacError> {
        let rest =
            spiffe_id
                .strip_prefix("spiffe://")
                .ok_or_else(|| RebacError::InvalidObject {
                    object: spiffe_id.to_owned(),
                    reason: "a SPIFFE ID starts with `spiffe://`".to_owned(),
                })?;
        Self::new(object_type, rest)
    }

    /// `^[^:#\s]+:[^#:\s]+$`, with no length bound (user objects may be up to 512 bytes).
    fn parse_unbounded(s: &str) -> Option<Self> {
        let (t, id) = s.split_once(':')?;
        if !is_plain_part(t) || !is_plain_part(id) {
            return None;
        }
        Some(ObjectRef {
            object_type: t.to_owned(),
            id: id.to_owned(),
        })
    }

    /// The type, e.g. `doc`.
    pub fn object_type(&self) -> &str {
        &self.object_type
    }

    /// The id, e.g. `readme`.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.object_type, self.id)
    }
}

impl FromStr for ObjectRef {
    type Err = RebacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The user side of a tuple or request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum User {
    /// A single object, `user:anne` (any type can be a user).
    Object(ObjectRef),
    /// Every object of a type, `user:*` (type-bound public access).
    Wildcard(String),
    /// Every user related to `object` by `relation`, `group:eng#member`.
    Userset {
        /// The object, `group:eng`.
        object: ObjectRef,
        /// The relation, `member`.
        relation: String,
    },
}

impl User {
    /// Parses `type:id`, `type:*` or `type:id#relation`.
    pub fn parse(s: &str) -> Result<Self, RebacError> {
        let invalid = |reason: &str| RebacError::InvalidUser {
            user: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.len() > MAX_USER_BYTES {
            return Err(invalid("a user is at most 512 bytes long"));
        }
        if s.chars().any(is_space) {
            return Err(invalid("a user cannot contain whitespace"));
        }
        if s.matches(':').count() > 1 || s.matches('#').count() > 1 {
            return Err(invalid("a user contains at most one `:` and one `#`"));
        }
        let shape = "the user must be an object (e.g. `document:1`), an `object#relation` or a \
                     typed wildcard (e.g. `group:*`)";
        if let Some((object, relation)) = s.split_once('#') {
            // ^[^:#\s]+:[^#\s]+#[^:#\s]+$
            let object = ObjectRef::parse_unbounded(object).ok_or_else(|| invalid(shape))?;
            if !is_plain_part(relation) {
                return Err(invalid(shape));
            }
            if object.id == "*" {
                return Err(invalid("a userset cannot reference a typed wildcard"));
            }
            return Ok(User::Userset {
                object,
                relation: relation.to_owned(),
            });
        }
        let object = ObjectRef::parse_unbounded(s).ok_or_else(|| invalid(shape))?;
        if object.id == "*" {
            return Ok(User::Wildcard(object.object_type));
        }
        Ok(User::Object(object))
    }

    /// The user's type (`user` for `user:anne` and `user:*`, `group` for `group:eng#member`).
    pub fn user_type(&self) -> &str {
        match self {
            User::Object(o) => o.object_type(),
            User::Wildcard(t) => t,
            User::Userset { object, .. } => object.object_type(),
        }
    }

    /// The relation of a userset, `None` otherwise.
    pub fn relation(&self) -> Option<&str> {
        match self {
            User::Userset { relation, .. } => Some(relation),
            _ => None,
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            User::Object(o) => write!(f, "{o}"),
            User::Wildcard(t) => write!(f, "{t}:*"),
            User::Userset { object, relation } => write!(f, "{object}#{relation}"),
        }
    }
}

impl FromStr for User {
    type Err = RebacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A relationship, `object#relation@user`, well-formed (the model may still refuse it: see
/// [`crate::Model::validate_tuple`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TupleKey {
    object: ObjectRef,
    relation: String,
    user: User,
}

impl TupleKey {
    /// Builds a tuple key; the relation must match `^[^:#@\s]{1,50}$`.
    pub fn new(object: ObjectRef, relation: &str, user: User) -> Result<Self, RebacError> {
        check_relation_name(relation).map_err(|reason| RebacError::InvalidTuple {
            tuple: format!("{object}#{relation}@{user}"),
            reason,
        })?;
        Ok(TupleKey {
            object,
            relation: relation.to_owned(),
            user,
        })
    }

    /// Parses the three strings of an OpenFGA tuple key.
    pub fn from_parts(object: &str, relation: &str, user: &str) -> Result<Self, RebacError> {
        Self::new(ObjectRef::parse(object)?, relation, User::parse(user)?)
    }

    /// Parses `object#relation@user` (OpenFGA's tuple string form).
    pub fn parse(s: &str) -> Result<Self, RebacError> {
        let malformed = || RebacError::InvalidTuple {
            tuple: s.to_owned(),
            reason: "a tuple is written `object#relation@user`".to_owned(),
        };
        let (object, rest) = s.split_once('#').ok_or_else(malformed)?;
        let (relation, user) = rest.split_once('@').ok_or_else(malformed)?;
        Self::from_parts(object, relation, user)
    }

    /// The object.
    pub fn object(&self) -> &ObjectRef {
        &self.object
    }

    /// The relation.
    pub fn relation(&self) -> &str {
        &self.relation
    }

    /// The user.
    pub fn user(&self) -> &User {
        &self.user
    }
}

impl fmt::Display for TupleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.object, self.relation, self.user)
    }
}

impl FromStr for TupleKey {
    type Err = RebacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A stored relationship: its key and, optionally, when it stops counting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// The relationship.
    pub key: TupleKey,
    /// Unix time in milliseconds from which the tuple is treated as absent; `None` = never.
    pub expires_at_ms: Option<i64>,
}

impl Tuple {
    /// A tuple that never expires.
    pub fn new(key: TupleKey) -> Self {
        Tuple {
            key,
            expires_at_ms: None,
        }
    }

    /// A tuple that is absent from `expires_at_ms` on.
    pub fn expiring(key: TupleKey, expires_at_ms: i64) -> Self {
        Tuple {
            key,
            expires_at_ms: Some(expires_at_ms),
        }
    }

    /// Whether the tuple counts at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_none_or(|t| now_ms < t)
    }
}

impl From<TupleKey> for Tuple {
    fn from(key: TupleKey) -> Self {
        Tuple::new(key)
    }
}

impl Serialize for ObjectRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ObjectRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for User {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for User {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        User::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// OpenFGA's JSON shape of a tuple key: `{"user", "relation", "object"}`.
#[derive(Serialize, Deserialize)]
struct TupleKeyJson {
    user: String,
    relation: String,
    object: String,
}

impl Serialize for TupleKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TupleKeyJson {
            user: self.user.to_string(),
            relation: self.relation.clone(),
            object: self.object.to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TupleKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = TupleKeyJson::deserialize(d)?;
        TupleKey::from_parts(&j.object, &j.relation, &j.user).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects() {
        let table: &[(&str, bool)] = &[
            ("doc:readme", true),
            ("doc:a/b.c@d|e", true),
            ("doc:", false),
            (":x", false),
            ("doc", false),
            ("d:x:y", false),
            ("doc:a b", false),
            ("doc:a\tb", false),
            ("doc:a#b", false),
            ("doc:*", false),
            ("d:", false),
            ("doc:\u{a0}", true), // RE2's \s is ASCII only
        ];
        for (s, ok) in table {
            assert_eq!(ObjectRef::parse(s).is_ok(), *ok, "{s}");
        }
        let long = format!("doc:{}", "x".repeat(252));
        assert!(ObjectRef::parse(&long).is_ok());
        let long = format!("doc:{}", "x".repeat(253));
        assert_eq!(
            ObjectRef::parse(&long).map_err(|e| e.code()),
            Err("invalid_object")
        );
    }

    #[test]
    fn users() {
        assert_eq!(
            User::parse("user:anne").ok(),
            Some(User::Object(ObjectRef::new("user", "anne").unwrap()))
        );
        assert_eq!(
            User::parse("user:*").ok(),
            Some(User::Wildcard("user".into()))
        );
        assert_eq!(
            User::parse("group:eng#member").ok(),
            Some(User::Userset {
                object: ObjectRef::new("group", "eng").unwrap(),
                relation: "member".into()
            })
        );
        for bad in [
            "*",
            "anne",
            "group:*#member",
            "a:b:c",
            "a:b#c#d",
            "user:an ne",
            "group:eng#",
            "#member",
            ":x",
            "agent:spiffe://example.org/agent/coder",
        ] {
            assert_eq!(
                User::parse(bad).map_err(|e| e.code()),
                Err("invalid_user"),
                "{bad}"
            );
        }
        assert!(User::parse(&format!("user:{}", "x".repeat(507))).is_ok());
        assert!(User::parse(&format!("user:{}", "x".repeat(508))).is_err());
    }

    #[test]
    fn spiffe_ids_map_to_valid_objects() {
        let o = ObjectRef::for_spiffe_id("agent", "spiffe://example.org/agent/coder").unwrap();
        assert_eq!(o.to_string(), "agent:example.org/agent/coder");
        assert!(ObjectRef::for_spiffe_id("agent", "example.org/agent").is_err());
    }

    #[test]
    fn tuple_keys() {
        let k = TupleKey::parse("doc:1#viewer@group:eng#member").unwrap();
        assert_eq!(k.object().to_string(), "doc:1");
        assert_eq!(k.relation(), "viewer");
        assert_eq!(k.user().to_string(), "group:eng#member");
        assert_eq!(k.to_string(), "doc:1#viewer@group:eng#member");
        let k = TupleKey::parse("repo:openfga/openfga#admin@user:github|alice@openfga").unwrap();
        assert_eq!(k.user().to_string(), "user:github|alice@openfga");
        assert_eq!(
            TupleKey::parse("doc:1@user:anne").map_err(|e| e.code()),
            Err("invalid_tuple")
        );
        assert_eq!(
            TupleKey::from_parts("doc:1", "a:b", "user:anne").map_err(|e| e.code()),
            Err("invalid_tuple")
        );
        assert!(TupleKey::from_parts("doc:1", &"r".repeat(50), "user:anne").is_ok());
        assert!(TupleKey::from_parts("doc:1", &"r".repeat(51), "user:anne").is_err());
        let json = serde_json::to_value(&k).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"user": "user:github|alice@openfga", "relation": "admin", "object": "repo:openfga/openfga"})
        );
        let back: TupleKey = serde_json::from_value(json).unwrap();
        assert_eq!(back, k);
    }

    #[test]
    fn expiry() {
        let t = Tuple::expiring(TupleKey::parse("doc:1#viewer@user:a").unwrap(), 100);
        assert!(t.is_live(99));
        assert!(!t.is_live(100));
        assert!(Tuple::new(t.key.clone()).is_live(i64::MAX));
    }
}
