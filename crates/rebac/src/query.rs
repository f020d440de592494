//! The queries: Check, BatchCheck, Expand, ListObjects and ListUsers, with OpenFGA's
//! semantics and request validation.
//!
//! Every query takes the model, the graph, the request's contextual tuples (validated like
//! stored ones, visible to this request only) and `now_ms`, at which expired tuples are
//! absent. Queries never mutate the graph.

mod engine;
mod expand;
mod lists;

use std::collections::HashSet;

pub use engine::RESOLVE_DEPTH_LIMIT;
pub use expand::{
    Computed, Difference, Leaf, NodeValue, Nodes, TupleToUsersetLeaf, Users, UsersetNode,
    UsersetTree, expand,
};
pub use lists::{
    ListBounds, ListObjectsResponse, ListUsersResponse, UserFilter, list_objects,
    list_objects_bounded, list_users, list_users_bounded,
};

use crate::error::RebacError;
use crate::graph::{Graph, View};
use crate::model::Model;
use crate::tuple::{ObjectRef, TupleKey, User};
use engine::{Engine, Subject};

/// Most contextual tuples in one request (OpenFGA's `ContextualTupleKeys` limit).
pub const MAX_CONTEXTUAL_TUPLES: usize = 100;
/// Most checks in one batch (OpenFGA's `maxChecksPerBatchCheck` default).
pub const MAX_BATCH_CHECK_ITEMS: usize = 50;

/// A Check: does `user` have `relation` with `object`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRequest {
    /// The user: an object, a typed wildcard or a userset.
    pub user: User,
    /// The relation.
    pub relation: String,
    /// The object.
    pub object: ObjectRef,
    /// Tuples that hold for this request only.
    pub contextual_tuples: Vec<TupleKey>,
    /// The time at which expiring tuples are judged (Unix milliseconds).
    pub now_ms: i64,
}

impl CheckRequest {
    /// A request without contextual tuples.
    pub fn new(user: User, relation: &str, object: ObjectRef, now_ms: i64) -> Self {
        CheckRequest {
            user,
            relation: relation.to_owned(),
            object,
            contextual_tuples: Vec::new(),
            now_ms,
        }
    }
}

/// Model indices of a user's type (and userset relation), after OpenFGA's `ValidateUser`.
pub(crate) fn validate_user(model: &Model, user: &User) -> Result<(u32, Option<u32>), RebacError> {
    let c = &model.compiled;
    let t = c.type_index(user.user_type())?;
    let r = match user.relation() {
        Some(r) => Some(c.relation_index(t, r)?),
        None => None,
    };
    Ok((t, r))
}

/// Model indices of `object_type#relation`.
pub(crate) fn validate_target(
    model: &Model,
    object_type: &str,
    relation: &str,
) -> Result<(u32, u32), RebacError> {
    let c = &model.compiled;
    let t = c.type_index(object_type)?;
    Ok((t, c.relation_index(t, relation)?))
}

/// The graph plus the validated contextual tuples.
pub(crate) fn view<'g>(
    model: &Model,
    graph: &'g Graph,
    contextual: &[TupleKey],
) -> Result<View<'g>, RebacError> {
    if contextual.len() > MAX_CONTEXTUAL_TUPLES {
        return Err(RebacError::validation(format!(
            "at most {MAX_CONTEXTUAL_TUPLES} contextual tuples are allowed, got {}",
            contextual.len()
        )));
    }
    let mut v = View::new(graph);
    for k in contextual {
        model.validate_tuple(k)?;
        v.add(k)?;
    }
    Ok(v)
}

/// Interns the user into the view and resolves it to ids.
pub(crate) fn subject(model: &Model, v: &mut View<'_>, user: &User) -> Result<Subject, RebacError> {
    let (t, r) = validate_user(model, user)?;
    let gtype = v.intern_type(user.user_type())?;
    Ok(match (user, r) {
        (User::Object(o), _) => Subject::Object {
            o: v.intern_object(gtype, o.id())?,
            t,
            wild: v.object_id(gtype, "*"),
        },
        (User::Wildcard(_), _) => Subject::Wildcard {
            w: v.intern_object(gtype, "*")?,
            t,
        },
        (User::Userset { object, relation }, Some(r)) => Subject::Userset {
            o: v.intern_object(gtype, object.id())?,
            gr: v.intern_rel(relation)?,
            t,
            r,
        },
        (User::Userset { relation, .. }, None) => {
            return Err(RebacError::UnknownRelation {
                type_name: user.user_type().to_owned(),
                relation: relation.clone(),
            });
        }
    })
}

/// Check: whether `req.user` has `req.relation` with `req.object`.
///
/// The request is validated first (unknown types and relations, contextual tuples the model
/// refuses); see the `engine` module docs for the resolution rules.
pub fn check(model: &Model, graph: &Graph, req: &CheckRequest) -> Result<bool, RebacError> {
    validate_user(model, &req.user)?;
    let (t, r) = validate_target(model, req.object.object_type(), &req.relation)?;
    let mut v = view(model, graph, &req.contextual_tuples)?;
    let subject = subject(model, &mut v, &req.user)?;
    let gtype = v.intern_type(req.object.object_type())?;
    let obj = v.intern_object(gtype, req.object.id())?;
    Engine::new(&model.compiled, &v, req.now_ms, subject).check(obj, t, r)
}

/// One check of a batch, with the caller's id for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCheckItem {
    /// Matches the answer to the question: `^[A-Za-z0-9_-]{1,36}$`, unique in the batch.
    pub correlation_id: String,
    /// The check.
    pub request: CheckRequest,
}

/// The answer to one [`BatchCheckItem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCheckResult {
    /// The item's correlation id.
    pub correlation_id: String,
    /// Allowed, or why the check could not be answered.
    pub result: Result<bool, RebacError>,
}

/// BatchCheck: many checks, each answered (or failed) on its own, in request order.
///
/// The batch itself is refused when it is empty, holds more than [`MAX_BATCH_CHECK_ITEMS`],
/// or a correlation id is malformed or repeated.
pub fn batch_check(
    model: &Model,
    graph: &Graph,
    items: &[BatchCheckItem],
) -> Result<Vec<BatchCheckResult>, RebacError> {
    if items.is_empty() {
        return Err(RebacError::validation(
            "a batch check needs at least one check",
        ));
    }
    if items.len() > MAX_BATCH_CHECK_ITEMS {
        return Err(RebacError::validation(format!(
            "a batch check holds at most {MAX_BATCH_CHECK_ITEMS} checks, got {}",
            items.len()
        )));
    }
    let mut seen = HashSet::new();
    for item in items {
        let id = &item.correlation_id;
        let well_formed = (1..=36).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !well_formed {
            return Err(RebacError::validation(format!(
                "correlation id `{id}` must be 1 to 36 letters, digits, `_` or `-`"
            )));
        }
        if !seen.insert(id.as_str()) {
            return Err(RebacError::validation(format!(
                "correlation id `{id}` is used twice"
            )));
        }
    }
    Ok(items
        .iter()
        .map(|item| BatchCheckResult {
            correlation_id: item.correlation_id.clone(),
            result: check(model, graph, &item.request),
        })
        .collect())
}
