//! The crate's one error type and its stable codes.

use std::fmt;

/// A 1-based position in a modeling-language (DSL) document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Line, counting from 1.
    pub line: u32,
    /// Column (in characters), counting from 1.
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Renders ` at line L, column C` when a position is known.
fn at(position: &Option<Position>) -> String {
    match position {
        Some(p) => format!(" at {p}"),
        None => String::new(),
    }
}

/// Everything that can go wrong in this crate.
///
/// Each variant has a stable [`code`](RebacError::code) that the API layer can hand to clients;
/// the messages are for people (lowercase, user input in backticks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RebacError {
    /// The model does not parse or breaks one of OpenFGA's model rules
    /// (`WriteAuthorizationModel` validation). `position` is known for DSL input.
    #[error("invalid model{}: {message}", at(.position))]
    InvalidModel {
        /// Where in the DSL document, when the model came from one.
        position: Option<Position>,
        /// What is wrong.
        message: String,
    },
    /// The model uses conditions (`[user with cond]`, `condition` blocks), which Warden does
    /// not evaluate; such a model is refused rather than half-honoured.
    #[error("conditions are not supported{}: {message}", at(.position))]
    ConditionUnsupported {
        /// Where in the DSL document, when the model came from one.
        position: Option<Position>,
        /// What was found.
        message: String,
    },
    /// A type that the model does not define.
    #[error("type `{type_name}` is not defined in the model")]
    UnknownType {
        /// The type named by the caller.
        type_name: String,
    },
    /// A relation that the type does not define.
    #[error("relation `{type_name}#{relation}` is not defined in the model")]
    UnknownRelation {
        /// The object type.
        type_name: String,
        /// The relation named by the caller.
        relation: String,
    },
    /// A relationship tuple that is malformed or that the model does not allow.
    #[error("invalid tuple `{tuple}`: {reason}")]
    InvalidTuple {
        /// The tuple as `object#relation@user`.
        tuple: String,
        /// Why it is refused.
        reason: String,
    },
    /// A user string that is not `type:id`, `type:*` or `type:id#relation`.
    #[error("invalid user `{user}`: {reason}")]
    InvalidUser {
        /// The user string as given.
        user: String,
        /// Why it is refused.
        reason: String,
    },
    /// An object string that is not `type:id`.
    #[error("invalid object `{object}`: {reason}")]
    InvalidObject {
        /// The object string as given.
        object: String,
        /// Why it is refused.
        reason: String,
    },
    /// Resolving the request needed more nested steps than the depth limit allows
    /// (OpenFGA's "resolution depth exceeded").
    #[error("resolution too complex: more than {limit} nested steps are needed to answer")]
    ResolutionTooComplex {
        /// The depth limit that was hit.
        limit: u32,
    },
    /// A request that is malformed in a way no other variant describes.
    #[error("{message}")]
    Validation {
        /// What is wrong.
        message: String,
    },
    /// A write of a tuple that already exists.
    #[error("cannot write a tuple which already exists: `{tuple}`")]
    TupleExists {
        /// The tuple as `object#relation@user`.
        tuple: String,
    },
    /// A delete of a tuple that does not exist.
    #[error("cannot delete a tuple which does not exist: `{tuple}`")]
    TupleNotFound {
        /// The tuple as `object#relation@user`.
        tuple: String,
    },
    /// More tuples in one write batch than allowed.
    #[error("the number of write operations ({count}) exceeds the allowed limit of {limit}")]
    TooManyTuples {
        /// Writes plus deletes in the batch.
        count: usize,
        /// The limit ([`crate::MAX_TUPLES_PER_WRITE`]).
        limit: usize,
    },
}

impl RebacError {
    /// The stable, machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            RebacError::InvalidModel { .. } => "invalid_model",
            RebacError::ConditionUnsupported { .. } => "condition_unsupported",
            RebacError::UnknownType { .. } => "unknown_type",
            RebacError::UnknownRelation { .. } => "unknown_relation",
            RebacError::InvalidTuple { .. } => "invalid_tuple",
            RebacError::InvalidUser { .. } => "invalid_user",
            RebacError::InvalidObject { .. } => "invalid_object",
            RebacError::ResolutionTooComplex { .. } => "resolution_too_complex",
            RebacError::Validation { .. } => "validation_error",
            RebacError::TupleExists { .. } => "tuple_exists",
            RebacError::TupleNotFound { .. } => "tuple_not_found",
            RebacError::TooManyTuples { .. } => "too_many_tuples",
        }
    }

    /// The DSL position of a model error, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            RebacError::InvalidModel { position, .. }
            | RebacError::ConditionUnsupported { position, .. } => *position,
            _ => None,
        }
    }

    pub(crate) fn model(position: Option<Position>, message: impl Into<String>) -> Self {
        RebacError::InvalidModel {
            position,
            message: message.into(),
        }
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        RebacError::Validation {
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_distinct() {
        let all = [
            (RebacError::model(None, "m"), "invalid_model"),
            (
                RebacError::ConditionUnsupported {
                    position: None,
                    message: "m".into(),
                },
                "condition_unsupported",
            ),
            (
                RebacError::UnknownType {
                    type_name: "t".into(),
                },
                "unknown_type",
            ),
            (
                RebacError::UnknownRelation {
                    type_name: "t".into(),
                    relation: "r".into(),
                },
                "unknown_relation",
            ),
            (
                RebacError::InvalidTuple {
                    tuple: "t".into(),
                    reason: "r".into(),
                },
                "invalid_tuple",
            ),
            (
                RebacError::InvalidUser {
                    user: "u".into(),
                    reason: "r".into(),
                },
                "invalid_user",
            ),
            (
                RebacError::InvalidObject {
                    object: "o".into(),
                    reason: "r".into(),
                },
                "invalid_object",
            ),
            (
                RebacError::ResolutionTooComplex { limit: 25 },
                "resolution_too_complex",
            ),
            (RebacError::validation("m"), "validation_error"),
            (
                RebacError::TupleExists { tuple: "t".into() },
                "tuple_exists",
            ),
            (
                RebacError::TupleNotFound { tuple: "t".into() },
                "tuple_not_found",
            ),
            (
                RebacError::TooManyTuples {
                    count: 101,
                    limit: 100,
                },
                "too_many_tuples",
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        for (e, code) in &all {
            assert_eq!(e.code(), *code);
            assert!(seen.insert(*code));
            let text = e.to_string();
            assert!(
                text.starts_with(|c: char| c.is_lowercase()) && !text.ends_with('.'),
                "{text}"
            );
        }
    }

    #[test]
    fn messages_carry_position_and_backticks() {
        let e = RebacError::model(
            Some(Position { line: 3, column: 7 }),
            "relation `x` is not defined",
        );
        assert_eq!(
            e.to_string(),
            "invalid model at line 3, column 7: relation `x` is not defined"
        );
        assert_eq!(e.code(), "invalid_model");
        assert_eq!(e.position(), Some(Position { line: 3, column: 7 }));
        let e = RebacError::model(None, "no types");
        assert_eq!(e.to_string(), "invalid model: no types");
    }
}
