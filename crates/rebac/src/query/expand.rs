//! Expand: one level of a relation's userset tree, in OpenFGA's Expand response shape.

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::RebacError;
use crate::graph::{Graph, View};
use crate::model::{Allowed, Model, Rewrite};
use crate::query::engine::{Engine, Subject};
use crate::query::validate_target;
use crate::tuple::ObjectRef;

/// The tree Expand returns (`{"root": …}`; see [`UsersetTree::to_response_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsersetTree {
    /// The expanded relation.
    pub root: UsersetNode,
}

impl UsersetTree {
    /// OpenFGA's Expand response body: `{"tree": {"root": …}}`.
    pub fn to_response_json(&self) -> Value {
        json!({ "tree": self })
    }
}

/// A node: the `object#relation` it belongs to and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsersetNode {
    /// `object#relation`.
    pub name: String,
    /// The node's content.
    #[serde(flatten)]
    pub value: NodeValue,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeValue {
    /// A leaf.
    Leaf(Leaf),
    /// `a or b`.
    Union(Nodes),
    /// `a and b`.
    Intersection(Nodes),
    /// `a but not b`.
    Difference(Difference),
}

/// Child nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nodes {
    /// In the order of the model's operands.
    pub nodes: Vec<UsersetNode>,
}

/// The two sides of a `but not`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What grants.
    pub base: Box<UsersetNode>,
    /// What takes away.
    pub subtract: Box<UsersetNode>,
}

/// A leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Leaf {
    /// Direct users: objects, `type:*` and `type:id#relation`, sorted.
    Users(Users),
    /// A computed userset, to expand next.
    Computed(Computed),
    /// A tuple-to-userset, with the usersets it leads to.
    TupleToUserset(TupleToUsersetLeaf),
}

/// Direct users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Users {
    /// `user:anne`, `user:*`, `group:eng#member` …
    pub users: Vec<String>,
}

/// A userset to expand next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Computed {
    /// `object#relation`.
    pub userset: String,
}

/// A tuple-to-userset leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TupleToUsersetLeaf {
    /// `object#tupleset`.
    pub tupleset: String,
    /// `related_object#computed` for every related object, sorted.
    pub computed: Vec<Computed>,
}

/// Expand: the first level of `object#relation`'s userset tree at `now_ms`, as OpenFGA's
/// Expand returns it (direct users, computed usersets and tuple-to-usersets are leaves; set
/// operations are nodes). Tuples the model refuses are left out.
pub fn expand(
    model: &Model,
    graph: &Graph,
    object: &ObjectRef,
    relation: &str,
    now_ms: i64,
) -> Result<UsersetTree, RebacError> {
    let (t, r) = validate_target(model, object.object_type(), relation)?;
    let v = View::new(graph);
    let obj = v
        .type_id(object.object_type())
        .and_then(|gt| v.object_id(gt, object.id()));
    let mut e = Engine::new(
        &model.compiled,
        &v,
        now_ms,
        Subject::Wildcard { w: u32::MAX, t },
    );
    let rewrite = &model.types()[t as usize].relations[r as usize].rewrite;
    let name = format!("{object}#{relation}");
    let root = node(&mut e, obj, object, t, r, &name, rewrite);
    Ok(UsersetTree { root })
}

fn node(
    e: &mut Engine<'_>,
    obj: Option<u32>,
    object: &ObjectRef,
    t: u32,
    r: u32,
    name: &str,
    rw: &Rewrite,
) -> UsersetNode {
    let value = match rw {
        Rewrite::This => NodeValue::Leaf(Leaf::Users(Users {
            users: obj.map(|o| direct_users(e, o, t, r)).unwrap_or_default(),
        })),
        Rewrite::Computed(c) => NodeValue::Leaf(Leaf::Computed(Computed {
            userset: format!("{object}#{c}"),
        })),
        Rewrite::TupleToUserset { tupleset, computed } => {
            let mut list: Vec<String> = obj
                .map(|o| tupleset_objects(e, o, t, tupleset))
                .unwrap_or_default()
                .into_iter()
                .map(|p| format!("{p}#{computed}"))
                .collect();
            list.sort_unstable();
            list.dedup();
            NodeValue::Leaf(Leaf::TupleToUserset(TupleToUsersetLeaf {
                tupleset: format!("{object}#{tupleset}"),
                computed: list
                    .into_iter()
                    .map(|userset| Computed { userset })
                    .collect(),
            }))
        }
        Rewrite::Union(c) => NodeValue::Union(Nodes {
            nodes: c
                .iter()
                .map(|c| node(e, obj, object, t, r, name, c))
                .collect(),
        }),
        Rewrite::Intersection(c) => NodeValue::Intersection(Nodes {
            nodes: c
                .iter()
                .map(|c| node(e, obj, object, t, r, name, c))
                .collect(),
        }),
        Rewrite::Difference { base, subtract } => NodeValue::Difference(Difference {
            base: Box::new(node(e, obj, object, t, r, name, base)),
            subtract: Box::new(node(e, obj, object, t, r, name, subtract)),
        }),
    };
    UsersetNode {
        name: name.to_owned(),
        value,
    }
}

fn direct_users(e: &mut Engine<'_>, o: u32, t: u32, r: u32) -> Vec<String> {
    let m = e.m;
    let v = e.v;
    let now = e.now();
    let rel = m.rel(t, r);
    let Some(gr) = e.grel(t, r) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let plain: Vec<u32> = v.direct(o, gr, now).collect();
    for u in plain {
        let Some(ut) = e.obj_mtype(u) else { continue };
        let form = if v.is_wildcard(u) {
            Allowed::Wildcard(ut)
        } else {
            Allowed::Type(ut)
        };
        if rel.allows(form) {
            out.push(v.object_string(u));
        }
    }
    let sets: Vec<(u32, u32)> = v.usersets(o, gr, now).collect();
    for (uo, ugr) in sets {
        let Some(ut) = e.obj_mtype(uo) else { continue };
        let Some(ur) = e.mrel(ut, ugr) else { continue };
        if rel.allows(Allowed::Userset(ut, ur)) {
            out.push(format!("{}#{}", v.object_string(uo), v.rel_name(ugr)));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn tupleset_objects(e: &mut Engine<'_>, o: u32, t: u32, tupleset: &str) -> Vec<String> {
    let m = e.m;
    let v = e.v;
    let now = e.now();
    let Ok(ts) = m.relation_index(t, tupleset) else {
        return Vec::new();
    };
    let ts_rel = m.rel(t, ts);
    let Some(gts) = e.grel(t, ts) else {
        return Vec::new();
    };
    let parents: Vec<u32> = v.direct(o, gts, now).collect();
    let mut out = Vec::new();
    for p in parents {
        if v.is_wildcard(p) {
            continue;
        }
        if e.obj_mtype(p)
            .is_some_and(|pt| ts_rel.allows(Allowed::Type(pt)))
        {
            out.push(v.object_string(p));
        }
    }
    out
}
