//! Warden's relationship engine: Zanzibar-style relationship-based access control with
//! OpenFGA's modeling language and query semantics, as pure logic (no I/O, no clock, no
//! async).
//!
//! - [`Model`]: an authorization model, parsed from OpenFGA's DSL (schema 1.1) or JSON and
//!   validated with OpenFGA's `WriteAuthorizationModel` rules; content-addressed by
//!   [`Model::id`].
//! - [`TupleKey`], [`ObjectRef`], [`User`], [`Tuple`]: relationship tuples, parsed with
//!   OpenFGA's rules at the boundary.
//! - [`Graph`]: every stored tuple, interned and indexed both ways, at a revision; the caller
//!   applies committed batches with [`Graph::apply`] after [`validate_write`].
//! - [`check`], [`batch_check`], [`expand`], [`list_objects`], [`list_users`]: the queries.
//!
//! What is not supported, on purpose: conditions (`with`, `condition`: refused with
//! [`RebacError::ConditionUnsupported`]) and modular models (`module`, `extend`).
//!
//! ```
//! use rebac::{CheckRequest, Graph, Model, ObjectRef, Tuple, TupleKey, User};
//!
//! let model = Model::parse(
//!     "model
//!        schema 1.1
//!      type user
//!      type group
//!        relations
//!          define member: [user, group#member]
//!      type doc
//!        relations
//!          define viewer: [user, group#member]",
//! )?;
//! let mut graph = Graph::new();
//! let writes = vec![
//!     Tuple::new(TupleKey::parse("group:eng#member@user:anne")?),
//!     Tuple::new(TupleKey::parse("doc:readme#viewer@group:eng#member")?),
//! ];
//! rebac::validate_write(&model, &graph, &writes, &[], 0)?;
//! graph.apply(1, writes, [])?;
//! let req = CheckRequest::new(User::parse("user:anne")?, "viewer", ObjectRef::parse("doc:readme")?, 0);
//! assert!(rebac::check(&model, &graph, &req)?);
//! # Ok::<(), rebac::RebacError>(())
//! ```

#![forbid(unsafe_code)]

mod error;
mod graph;
mod model;
mod query;
mod tuple;

pub use error::{Position, RebacError};
pub use graph::{Graph, MAX_TUPLES_PER_WRITE, ReadFilter, validate_write};
pub use model::{
    MAX_TYPES_PER_MODEL, Model, RelationDefinition, Rewrite, TypeDefinition, TypeRestriction,
};
pub use query::{
    BatchCheckItem, BatchCheckResult, CheckRequest, Computed, Difference, Leaf, ListBounds,
    ListObjectsResponse, ListUsersResponse, MAX_BATCH_CHECK_ITEMS, MAX_CONTEXTUAL_TUPLES,
    NodeValue, Nodes, RESOLVE_DEPTH_LIMIT, TupleToUsersetLeaf, UserFilter, Users, UsersetNode,
    UsersetTree, batch_check, check, expand, list_objects, list_objects_bounded, list_users,
    list_users_bounded,
};
pub use tuple::{
    MAX_OBJECT_CHARS, MAX_RELATION_CHARS, MAX_USER_BYTES, ObjectRef, Tuple, TupleKey, User,
};
