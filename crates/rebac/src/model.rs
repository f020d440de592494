//! Authorization models: OpenFGA's modeling language (schema 1.1) and JSON form, checked with
//! OpenFGA's `WriteAuthorizationModel` rules, and compiled for the query engine.
//!
//! ```
//! use rebac::Model;
//!
//! let model = Model::parse(
//!     "model
//!        schema 1.1
//!      type user
//!      type doc
//!        relations
//!          define viewer: [user, user:*]",
//! )?;
//! assert_eq!(model.to_json()["type_definitions"][1]["type"], "doc");
//! assert_eq!(model.id().len(), 64);
//! # Ok::<(), rebac::RebacError>(())
//! ```

mod compile;
mod dsl;
mod json;
mod validate;

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub(crate) use compile::{Allowed, CRewrite, Compiled, Mode, bit as compile_bit};
pub use validate::MAX_TYPES_PER_MODEL;

use crate::error::{Position, RebacError};
use crate::tuple::{TupleKey, User};

/// How a relation is computed: OpenFGA's `Userset` rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Direct relationships (tuples), restricted by the relation's type restrictions.
    This,
    /// Another relation on the same object (`define viewer: editor`).
    Computed(String),
    /// `computed from tupleset`: the `computed` relation on every object related by `tupleset`.
    TupleToUserset {
        /// The relation whose tuples name the related objects (`parent`).
        tupleset: String,
        /// The relation evaluated on those objects (`viewer`).
        computed: String,
    },
    /// `a or b or …`
    Union(Vec<Rewrite>),
    /// `a and b and …`
    Intersection(Vec<Rewrite>),
    /// `base but not subtract`
    Difference {
        /// What grants.
        base: Box<Rewrite>,
        /// What takes away.
        subtract: Box<Rewrite>,
    },
}

/// One entry of a relation's direct type restrictions (`[user, user:*, group#member]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TypeRestriction {
    /// Objects of the type (`user`).
    Type(String),
    /// The type's wildcard (`user:*`).
    Wildcard(String),
    /// Usersets of the type and relation (`group#member`).
    Userset {
        /// The type (`group`).
        type_name: String,
        /// The relation (`member`).
        relation: String,
    },
}

impl TypeRestriction {
    /// The type named by the restriction.
    pub fn type_name(&self) -> &str {
        match self {
            TypeRestriction::Type(t) | TypeRestriction::Wildcard(t) => t,
            TypeRestriction::Userset { type_name, .. } => type_name,
        }
    }
}

impl fmt::Display for TypeRestriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeRestriction::Type(t) => write!(f, "{t}"),
            TypeRestriction::Wildcard(t) => write!(f, "{t}:*"),
            TypeRestriction::Userset {
                type_name,
                relation,
            } => write!(f, "{type_name}#{relation}"),
        }
    }
}

/// A relation of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationDefinition {
    /// Its name.
    pub name: String,
    /// How it is computed.
    pub rewrite: Rewrite,
    /// Its direct type restrictions (empty when it is not directly assignable).
    pub directly_related_user_types: Vec<TypeRestriction>,
    position: Option<Position>,
}

impl RelationDefinition {
    /// Where its name stands in the DSL document it came from.
    pub fn position(&self) -> Option<Position> {
        self.position
    }
}

/// A type and its relations, in definition order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDefinition {
    /// Its name.
    pub name: String,
    /// Its relations.
    pub relations: Vec<RelationDefinition>,
    position: Option<Position>,
}

impl TypeDefinition {
    /// Where its name stands in the DSL document it came from.
    pub fn position(&self) -> Option<Position> {
        self.position
    }
}

/// A valid authorization model (immutable; a new version is a new `Model`).
#[derive(Debug, Clone)]
pub struct Model {
    id: String,
    schema_version: String,
    types: Vec<TypeDefinition>,
    pub(crate) compiled: Compiled,
}

impl Model {
    /// Parses and validates a model written in OpenFGA's modeling language.
    ///
    /// Syntax errors and rule violations are [`RebacError::InvalidModel`] with the line and
    /// column; conditions are [`RebacError::ConditionUnsupported`].
    pub fn parse(dsl: &str) -> Result<Model, RebacError> {
        let raw = dsl::parse(dsl)?;
        if raw.schema_version != "1.1" {
            return Err(RebacError::model(
                Some(raw.schema_position),
                format!(
                    "invalid schema version `{}`: only `1.1` is supported",
                    raw.schema_version
                ),
            ));
        }
        let types = raw
            .types
            .into_iter()
            .map(|t| TypeDefinition {
                name: t.name,
                position: Some(t.position),
                relations: t
                    .relations
                    .into_iter()
                    .map(|r| RelationDefinition {
                        name: r.name,
                        rewrite: r.rewrite,
                        directly_related_user_types: r.restrictions,
                        position: Some(r.position),
                    })
                    .collect(),
            })
            .collect();
        Self::build(raw.schema_version, types)
    }

    /// Reads and validates a model in OpenFGA's JSON form (as `GET .../authorization-models`
    /// returns it or the official transformer prints it).
    pub fn from_json(value: &Value) -> Result<Model, RebacError> {
        let (schema_version, types) = json::model_from_json(value)?;
        Self::build(schema_version, types)
    }

    fn build(schema_version: String, types: Vec<TypeDefinition>) -> Result<Model, RebacError> {
        validate::validate(&schema_version, &types)?;
        let compiled = Compiled::new(&types);
        let canonical = json::model_to_json(&schema_version, &types).to_string();
        let id = hex::encode(Sha256::digest(canonical.as_bytes()));
        Ok(Model {
            id,
            schema_version,
            types,
            compiled,
        })
    }

    /// The model in OpenFGA's JSON form, field for field as `@openfga/syntax-transformer`
    /// prints it.
    pub fn to_json(&self) -> Value {
        json::model_to_json(&self.schema_version, &self.types)
    }

    /// The content id: SHA-256 (hex) of the canonical JSON (sorted keys, no blanks), so equal
    /// models have equal ids however they were written.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The schema version (always `1.1`).
    pub fn schema_version(&self) -> &str {
        &self.schema_version
    }

    /// The types, in definition order.
    pub fn types(&self) -> &[TypeDefinition] {
        &self.types
    }

    /// A type by name.
    pub fn type_definition(&self, name: &str) -> Option<&TypeDefinition> {
        self.types.iter().find(|t| t.name == name)
    }

    /// A relation by type and name.
    pub fn relation(&self, type_name: &str, relation: &str) -> Option<&RelationDefinition> {
        self.type_definition(type_name)
            .and_then(|t| t.relations.iter().find(|r| r.name == relation))
    }

    /// Checks a tuple against the model as OpenFGA does before a write
    /// (`internal/validation` `ValidateTuple`): the user's type (and userset relation) must
    /// exist, the object's type and the relation must exist, a tupleset relation takes only
    /// plain objects, and the user must match one of the relation's type restrictions.
    pub fn validate_tuple(&self, key: &TupleKey) -> Result<(), RebacError> {
        let c = &self.compiled;
        let user_type = c.type_index(key.user().user_type())?;
        if let User::Userset { relation, .. } = key.user() {
            c.relation_index(user_type, relation)?;
        }
        let object_type = c.type_index(key.object().object_type())?;
        let rel_idx = c.relation_index(object_type, key.relation())?;
        let rel = c.rel(object_type, rel_idx);
        let invalid = |reason: String| RebacError::InvalidTuple {
            tuple: key.to_string(),
            reason,
        };
        let target = format!("{}#{}", key.object().object_type(), key.relation());
        if rel.is_tupleset {
            match key.user() {
                User::Object(_) => {}
                User::Wildcard(_) => {
                    return Err(invalid(format!(
                        "unexpected wildcard relationship with tupleset relation `{target}`"
                    )));
                }
                User::Userset { .. } => {
                    return Err(invalid(format!(
                        "unexpected user `{}` with tupleset relation `{target}`",
                        key.user()
                    )));
                }
            }
        }
        if !rel.has_this {
            return Err(invalid(format!(
                "relation `{target}` is not directly assignable: it is computed from other \
                 relations"
            )));
        }
        let allowed = match key.user() {
            User::Object(_) => rel.allows(Allowed::Type(user_type)),
            User::Wildcard(_) => rel.allows(Allowed::Wildcard(user_type)),
            User::Userset { relation, .. } => {
                let r = c.relation_index(user_type, relation)?;
                rel.allows(Allowed::Userset(user_type, r))
            }
        };
        if allowed {
            return Ok(());
        }
        Err(invalid(match key.user() {
            User::Object(o) => format!(
                "type `{}` is not an allowed type restriction for `{target}`",
                o.object_type()
            ),
            User::Wildcard(t) => format!(
                "the typed wildcard `{t}:*` is not an allowed type restriction for `{target}`"
            ),
            User::Userset { object, relation } => format!(
                "`{}#{relation}` is not an allowed type restriction for `{target}`",
                object.object_type()
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GDRIVE: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user]
type folder
  relations
    define owner: [user]
    define parent: [folder]
    define viewer: [user, user:*, group#member] or owner or viewer from parent
type doc
  relations
    define owner: [user]
    define parent: [folder]
    define viewer: [user, user:*, group#member]
    define can_read: viewer or owner or viewer from parent
";

    #[test]
    fn ids_are_content_hashes() {
        let a = Model::parse(GDRIVE).unwrap();
        let b = Model::from_json(&a.to_json()).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.to_json(), b.to_json());
        let c = Model::parse(&GDRIVE.replace("or owner or", "or owner  or")).unwrap();
        assert_eq!(a.id(), c.id());
        let d = Model::parse(&GDRIVE.replace(
            "define owner: [user]\n    define parent",
            "define owner: [user, group#member]\n    define parent",
        ))
        .unwrap();
        assert_ne!(a.id(), d.id());
    }

    #[test]
    fn validate_tuple_follows_openfga() {
        let m = Model::parse(GDRIVE).unwrap();
        let code = |s: &str| {
            m.validate_tuple(&TupleKey::parse(s).unwrap())
                .map_err(|e| e.code())
        };
        assert_eq!(code("doc:1#viewer@user:anne"), Ok(()));
        assert_eq!(code("doc:1#viewer@user:*"), Ok(()));
        assert_eq!(code("doc:1#viewer@group:eng#member"), Ok(()));
        assert_eq!(code("doc:1#parent@folder:x"), Ok(()));
        assert_eq!(code("doc:1#viewer@group:eng"), Err("invalid_tuple"));
        assert_eq!(code("doc:1#owner@user:*"), Err("invalid_tuple"));
        assert_eq!(code("doc:1#can_read@user:anne"), Err("invalid_tuple"));
        assert_eq!(code("doc:1#parent@folder:*"), Err("invalid_tuple"));
        assert_eq!(code("doc:1#parent@folder:x#viewer"), Err("invalid_tuple"));
        assert_eq!(code("nope:1#viewer@user:anne"), Err("unknown_type"));
        assert_eq!(code("doc:1#nope@user:anne"), Err("unknown_relation"));
        assert_eq!(code("doc:1#viewer@nope:anne"), Err("unknown_type"));
        assert_eq!(code("doc:1#viewer@group:eng#nope"), Err("unknown_relation"));
    }
}
