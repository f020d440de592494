//! ListObjects and ListUsers.

use hashbrown::HashSet;
use serde_json::{Value, json};

use crate::error::RebacError;
use crate::graph::View;
use crate::model::{Allowed, CRewrite, Model};
use crate::query::engine::{CLOCK_EVERY, Engine, RESOLVE_DEPTH_LIMIT, Subject, WalkStop};
use crate::query::{subject, validate_target, validate_user, view};
use crate::tuple::{ObjectRef, TupleKey, User};

/// How much a listing query may return and how long it may run: OpenFGA's
/// `listObjectsMaxResults` / `listObjectsDeadline` and `listUsersMaxResults` /
/// `listUsersDeadline` (both 1,000 results and 3 s by default there; the server applies them).
///
/// The crate reads no clock: `out_of_time` is asked every few dozen steps of the walk, and
/// once it answers `true` the query ends with what it found so far, flagged as truncated.
#[derive(Clone, Copy)]
pub struct ListBounds<'a> {
    /// Most results returned; `None`: no cap.
    pub max_results: Option<usize>,
    /// Whether the caller's deadline has passed.
    pub out_of_time: &'a dyn Fn() -> bool,
}

impl ListBounds<'_> {
    /// No cap and no deadline.
    pub const UNBOUNDED: ListBounds<'static> = ListBounds {
        max_results: None,
        out_of_time: &|| false,
    };
}

impl std::fmt::Debug for ListBounds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListBounds")
            .field("max_results", &self.max_results)
            .finish_non_exhaustive()
    }
}

/// The answer of [`list_objects_bounded`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListObjectsResponse {
    /// `type:id` of the objects found, sorted.
    pub objects: Vec<String>,
    /// The walk stopped at the result cap or the deadline: there may be more objects.
    pub truncated: bool,
}

/// ListObjects: every object of `object_type` on which `user` has `relation`, as `type:id`
/// strings, sorted, without a result cap or deadline (see [`list_objects_bounded`]).
///
/// It walks up from the user through the reverse index (OpenFGA's reverse expansion), so the
/// cost follows what the user can reach, not how many objects exist. Objects reached through
/// an intersection or the base of a `but not` are confirmed with a full Check. A path needing
/// [`RESOLVE_DEPTH_LIMIT`] or more hops is [`RebacError::ResolutionTooComplex`].
pub fn list_objects(
    model: &Model,
    graph: &crate::graph::Graph,
    object_type: &str,
    relation: &str,
    user: &User,
    contextual_tuples: &[TupleKey],
    now_ms: i64,
) -> Result<Vec<String>, RebacError> {
    list_objects_bounded(
        model,
        graph,
        object_type,
        relation,
        user,
        contextual_tuples,
        now_ms,
        ListBounds::UNBOUNDED,
    )
    .map(|r| r.objects)
}

/// [`list_objects`] within `bounds`: the walk stops as soon as it has found
/// `bounds.max_results` objects or is out of time, and answers with what it found, flagged
/// [`truncated`](ListObjectsResponse::truncated) — as OpenFGA answers with the objects found
/// by its deadline or up to its cap. (The objects of a truncated answer are those the walk met
/// first, not the first in sort order.)
#[allow(
    clippy::too_many_arguments,
    reason = "OpenFGA's request fields, one argument each"
)]
pub fn list_objects_bounded(
    model: &Model,
    graph: &crate::graph::Graph,
    object_type: &str,
    relation: &str,
    user: &User,
    contextual_tuples: &[TupleKey],
    now_ms: i64,
    bounds: ListBounds<'_>,
) -> Result<ListObjectsResponse, RebacError> {
    validate_user(model, user)?;
    let (t, r) = validate_target(model, object_type, relation)?;
    let mut v = view(model, graph, contextual_tuples)?;
    let subject = subject(model, &mut v, user)?;
    let rel = model.compiled.rel(t, r);
    let mut engine = Engine::new(&model.compiled, &v, now_ms, subject);
    let stop = WalkStop {
        pair: rel.pair,
        max: bounds.max_results,
        out_of_time: bounds.out_of_time,
    };
    let (found, truncated) =
        engine.reverse_walk_bounded(&rel.deps, Some(RESOLVE_DEPTH_LIMIT), Some(&stop))?;
    let mut objects: Vec<String> = found
        .keys()
        .filter(|&&k| k as u32 == rel.pair)
        .map(|&k| v.object_string((k >> 32) as u32))
        .collect();
    objects.sort_unstable();
    Ok(ListObjectsResponse { objects, truncated })
}

/// Which users [`list_users`] returns: objects of `type_name` (and its wildcard), or, with a
/// relation, usersets `type_name:…#relation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFilter {
    /// The user type.
    pub type_name: String,
    /// For usersets, their relation.
    pub relation: Option<String>,
}

/// The answer of [`list_users`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListUsersResponse {
    /// Users that have the relation: objects, typed wildcards (`user:*`: every object of the
    /// type) and usersets, sorted.
    pub users: Vec<User>,
    /// When a wildcard is returned, the objects of its type that were met while expanding the
    /// relation and do not have it (e.g. `[user:*] but not blocked`), sorted; empty otherwise.
    pub excluded_users: Vec<User>,
    /// The query stopped at the result cap or the deadline ([`list_users_bounded`]): there
    /// may be more users.
    pub truncated: bool,
}

fn user_json(u: &User) -> Value {
    match u {
        User::Object(o) => json!({"object": {"type": o.object_type(), "id": o.id()}}),
        User::Wildcard(t) => json!({"wildcard": {"type": t}}),
        User::Userset { object, relation } => json!({
            "userset": {"type": object.object_type(), "id": object.id(), "relation": relation}
        }),
    }
}

impl ListUsersResponse {
    /// OpenFGA's ListUsers response JSON (`users`, `excluded_users`).
    pub fn to_json(&self) -> Value {
        json!({
            "users": self.users.iter().map(user_json).collect::<Vec<_>>(),
            "excluded_users": self.excluded_users.iter().map(user_json).collect::<Vec<_>>(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Candidate {
    Plain(u32),
    Set { o: u32, t: u32, r: u32 },
}

fn user_of(v: &View<'_>, c: Candidate) -> Result<User, RebacError> {
    let object = |o: u32| ObjectRef::new(v.type_name(v.obj_type(o)), v.obj_id(o));
    Ok(match c {
        Candidate::Plain(o) if v.is_wildcard(o) => {
            User::Wildcard(v.type_name(v.obj_type(o)).to_owned())
        }
        Candidate::Plain(o) => User::Object(object(o)?),
        Candidate::Set { o, .. } => User::Userset {
            object: object(o)?,
            relation: String::new(),
        },
    })
}

/// ListUsers: the users matching the one filter that have `relation` with `object`
/// (OpenFGA allows exactly one filter).
///
/// Candidates are gathered by expanding the relation downwards through every branch (the
/// subtracted ones too); each is then confirmed with a Check — skipped when the relation is
/// built from unions only, where every candidate holds — so the answer always agrees with
/// [`crate::check`]. A wildcard is returned as `type:*`; see
/// [`ListUsersResponse::excluded_users`].
pub fn list_users(
    model: &Model,
    graph: &crate::graph::Graph,
    object: &ObjectRef,
    relation: &str,
    user_filters: &[UserFilter],
    contextual_tuples: &[TupleKey],
    now_ms: i64,
) -> Result<ListUsersResponse, RebacError> {
    list_users_bounded(
        model,
        graph,
        object,
        relation,
        user_filters,
        contextual_tuples,
        now_ms,
        ListBounds::UNBOUNDED,
    )
}

/// [`list_users`] within `bounds`: gathering candidates and confirming them stop once
/// `bounds.max_results` users are confirmed or the caller is out of time, and the answer holds
/// what was found, flagged [`truncated`](ListUsersResponse::truncated) (OpenFGA's
/// `listUsersMaxResults` and `listUsersDeadline`). At most `max_results` excluded users are
/// returned too.
#[allow(
    clippy::too_many_arguments,
    reason = "OpenFGA's request fields, one argument each"
)]
pub fn list_users_bounded(
    model: &Model,
    graph: &crate::graph::Graph,
    object: &ObjectRef,
    relation: &str,
    user_filters: &[UserFilter],
    contextual_tuples: &[TupleKey],
    now_ms: i64,
    bounds: ListBounds<'_>,
) -> Result<ListUsersResponse, RebacError> {
    let [filter] = user_filters else {
        return Err(RebacError::validation(format!(
            "list users takes exactly one user filter, got {}",
            user_filters.len()
        )));
    };
    let (t, r) = validate_target(model, object.object_type(), relation)?;
    let c = &model.compiled;
    let ft = c.type_index(&filter.type_name)?;
    let fr = match &filter.relation {
        Some(rel) => Some(c.relation_index(ft, rel)?),
        None => None,
    };
    let mut v = view(model, graph, contextual_tuples)?;
    let gtype = v.intern_type(object.object_type())?;
    let obj = v.intern_object(gtype, object.id())?;

    let placeholder = Subject::Wildcard { w: u32::MAX, t: ft };
    let (candidates, mut truncated) = {
        let mut e = Engine::new(c, &v, now_ms, placeholder);
        collect(&mut e, obj, t, r, ft, fr, bounds.out_of_time)
    };
    let union_closed = c.rel(t, r).union_closed;
    let max = bounds.max_results.unwrap_or(usize::MAX);
    let mut allowed = Vec::new();
    let mut denied = Vec::new();
    for (i, cand) in candidates.into_iter().enumerate() {
        if allowed.len() >= max
            || (i as u32 % CLOCK_EVERY == CLOCK_EVERY - 1 && (bounds.out_of_time)())
        {
            truncated = true;
            break;
        }
        let ok = union_closed || {
            let subject = match cand {
                Candidate::Plain(o) if v.is_wildcard(o) => Subject::Wildcard { w: o, t: ft },
                Candidate::Plain(o) => Subject::Object {
                    o,
                    t: ft,
                    wild: v.object_id(v.obj_type(o), "*"),
                },
                Candidate::Set { o, t, r } => Subject::Userset {
                    o,
                    gr: v.rel_id(&c.rel(t, r).name).unwrap_or(u32::MAX),
                    t,
                    r,
                },
            };
            Engine::new(c, &v, now_ms, subject).check(obj, t, r)?
        };
        if ok {
            allowed.push(cand);
        } else {
            denied.push(cand);
        }
    }
    let to_user = |cand: Candidate| -> Result<User, RebacError> {
        let mut u = user_of(&v, cand)?;
        if let (User::Userset { relation, .. }, Candidate::Set { t, r, .. }) = (&mut u, cand) {
            *relation = c.rel(t, r).name.clone();
        }
        Ok(u)
    };
    let mut users = allowed
        .iter()
        .map(|&cand| to_user(cand))
        .collect::<Result<Vec<_>, _>>()?;
    let wildcard = users.iter().any(|u| matches!(u, User::Wildcard(_)));
    let mut excluded_users = if wildcard {
        denied
            .iter()
            .filter(|cand| matches!(cand, Candidate::Plain(o) if !v.is_wildcard(*o)))
            .take(max)
            .map(|&cand| to_user(cand))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    users.sort();
    excluded_users.sort();
    Ok(ListUsersResponse {
        users,
        excluded_users,
        truncated,
    })
}

/// Every user matching the filter met while expanding `obj#t.r` through all branches; with
/// `true` when `out_of_time` stopped the expansion early.
fn collect(
    e: &mut Engine<'_>,
    obj: u32,
    t: u32,
    r: u32,
    ft: u32,
    fr: Option<u32>,
    out_of_time: &dyn Fn() -> bool,
) -> (Vec<Candidate>, bool) {
    let m = e.m;
    let v = e.v;
    let now_ms = e.now();
    let mut out: Vec<Candidate> = Vec::new();
    let mut seen_cand: HashSet<Candidate> = HashSet::new();
    let mut visited: HashSet<(u32, u32)> = HashSet::new();
    let mut stack = vec![(obj, t, r)];
    let mut steps = 0u32;
    while let Some((o, t, r)) = stack.pop() {
        steps = steps.wrapping_add(1);
        if steps % CLOCK_EVERY == 0 && out_of_time() {
            return (out, true);
        }
        let rel = m.rel(t, r);
        if !visited.insert((o, rel.pair)) {
            continue;
        }
        if t == ft && fr == Some(r) {
            let cand = Candidate::Set { o, t, r };
            if seen_cand.insert(cand) {
                out.push(cand);
            }
        }
        let mut leaves = Vec::new();
        walk(&rel.rewrite, &mut leaves);
        for leaf in leaves {
            match leaf {
                CRewrite::This => {
                    let Some(gr) = e.grel(t, r) else { continue };
                    let plain: Vec<u32> = v.direct(o, gr, now_ms).collect();
                    for u in plain {
                        let Some(ut) = e.obj_mtype(u) else { continue };
                        let form = if v.is_wildcard(u) {
                            Allowed::Wildcard(ut)
                        } else {
                            Allowed::Type(ut)
                        };
                        if rel.allows(form) && ut == ft && fr.is_none() {
                            let cand = Candidate::Plain(u);
                            if seen_cand.insert(cand) {
                                out.push(cand);
                            }
                        }
                    }
                    let sets: Vec<(u32, u32)> = v.usersets(o, gr, now_ms).collect();
                    for (uo, ugr) in sets {
                        let Some(ut) = e.obj_mtype(uo) else { continue };
                        let Some(ur) = e.mrel(ut, ugr) else { continue };
                        if rel.allows(Allowed::Userset(ut, ur)) {
                            stack.push((uo, ut, ur));
                        }
                    }
                }
                CRewrite::Computed(c) => stack.push((o, t, *c)),
                CRewrite::Ttu { tupleset, targets } => {
                    let Some(gts) = e.grel(t, *tupleset) else {
                        continue;
                    };
                    let ts_rel = m.rel(t, *tupleset);
                    let parents: Vec<u32> = v.direct(o, gts, now_ms).collect();
                    for p in parents {
                        if v.is_wildcard(p) {
                            continue;
                        }
                        let Some(pt) = e.obj_mtype(p) else { continue };
                        if !ts_rel.allows(Allowed::Type(pt)) {
                            continue;
                        }
                        if let Some(&(_, pr)) = targets.iter().find(|(tt, _)| *tt == pt) {
                            stack.push((p, pt, pr));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    (out, false)
}

fn walk<'r>(rw: &'r CRewrite, out: &mut Vec<&'r CRewrite>) {
    match rw {
        CRewrite::Union(c) | CRewrite::Intersection(c) => c.iter().for_each(|c| walk(c, out)),
        CRewrite::Difference(b, s) => {
            walk(b, out);
            walk(s, out);
        }
        leaf => out.push(leaf),
    }
}
