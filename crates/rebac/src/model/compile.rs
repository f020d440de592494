//! The model in the form the query engine walks: names replaced by indices, and the reverse
//! edges ("which relations does this one feed?") that ListObjects and the userset fast path
//! follow from a user upwards.

use std::collections::HashMap;

use crate::error::RebacError;
use crate::model::{Rewrite, TypeDefinition, TypeRestriction};

/// How a leaf of a rewrite contributes to its relation.
///
/// `Positive`: the leaf holding implies the relation holds (the leaf sits under unions only).
/// `NeedsCheck`: the leaf is necessary but not sufficient (under an intersection or the base
/// of a difference), so a full Check decides. Leaves under a `but not` subtract never grant and
/// get no reverse edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mode {
    NeedsCheck,
    Positive,
}

/// A type restriction by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    Type(u32),
    Wildcard(u32),
    Userset(u32, u32),
}

#[derive(Debug, Clone)]
pub(crate) enum CRewrite {
    This,
    Computed(u32),
    Ttu {
        tupleset: u32,
        /// `(type, relation)` for every type the tupleset may point at that defines the
        /// computed relation; other types are skipped, as OpenFGA does.
        targets: Vec<(u32, u32)>,
    },
    Union(Vec<CRewrite>),
    Intersection(Vec<CRewrite>),
    Difference(Box<CRewrite>, Box<CRewrite>),
}

/// A TTU that reads this relation: `(type, relation, tupleset, mode)` — an object `X` of
/// `type` with a `tupleset` tuple to an object `o` gets `relation` when `o` has this one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TtuParent {
    pub(crate) type_idx: u32,
    pub(crate) rel: u32,
    pub(crate) tupleset: u32,
    pub(crate) mode: Mode,
}

#[derive(Debug, Clone)]
pub(crate) struct CRel {
    pub(crate) name: String,
    pub(crate) pair: u32,
    pub(crate) rewrite: CRewrite,
    pub(crate) allowed: Vec<Allowed>,
    pub(crate) has_this: bool,
    pub(crate) is_tupleset: bool,
    /// The best mode of `this` in the rewrite (`None`: absent or only subtracted).
    pub(crate) this_mode: Option<Mode>,
    /// Relations of the same type that use this one as a computed userset.
    pub(crate) computed_parents: Vec<(u32, Mode)>,
    pub(crate) ttu_parents: Vec<TtuParent>,
    /// Relations `(type, relation)` whose direct tuples may name this one as a userset.
    pub(crate) userset_parents: Vec<(u32, u32)>,
    /// Every relation this one can depend on (including itself), by pair index, as a bitset —
    /// only through leaves that can grant (not through subtracts).
    pub(crate) deps: Vec<u64>,
    /// The relation and everything it depends on are built from direct, computed, TTU and
    /// union only: membership is monotone and the reverse walk from the user decides it.
    pub(crate) union_closed: bool,
}

impl CRel {
    pub(crate) fn allows(&self, a: Allowed) -> bool {
        self.allowed.contains(&a)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CType {
    pub(crate) name: String,
    pub(crate) rels: Vec<CRel>,
    pub(crate) rel_by_name: HashMap<String, u32>,
    /// Relations `(type, relation)` whose direct tuples may name an object of this type.
    pub(crate) plain_parents: Vec<(u32, u32)>,
    /// Relations `(type, relation)` whose direct tuples may name this type's wildcard.
    pub(crate) wildcard_parents: Vec<(u32, u32)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) types: Vec<CType>,
    pub(crate) type_by_name: HashMap<String, u32>,
    /// Pair index → (type, relation).
    pub(crate) pairs: Vec<(u32, u32)>,
}

pub(crate) fn bit(set: &[u64], i: u32) -> bool {
    set.get(i as usize / 64)
        .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
}

fn set_bit(set: &mut [u64], i: u32) {
    if let Some(w) = set.get_mut(i as usize / 64) {
        *w |= 1u64 << (i % 64);
    }
}

/// Visits every leaf with its mode (`None` under a subtract).
fn leaves<'a>(
    rw: &'a CRewrite,
    mode: Option<Mode>,
    f: &mut impl FnMut(&'a CRewrite, Option<Mode>),
) {
    match rw {
        CRewrite::This | CRewrite::Computed(_) | CRewrite::Ttu { .. } => f(rw, mode),
        CRewrite::Union(c) => c.iter().for_each(|c| leaves(c, mode, f)),
        CRewrite::Intersection(c) => c
            .iter()
            .for_each(|c| leaves(c, mode.map(|_| Mode::NeedsCheck), f)),
        CRewrite::Difference(b, s) => {
            leaves(b, mode.map(|_| Mode::NeedsCheck), f);
            leaves(s, None, f);
        }
    }
}

fn best(a: Option<Mode>, b: Option<Mode>) -> Option<Mode> {
    a.max(b)
}

impl Compiled {
    /// Compiles a model that passed validation (every name resolves).
    pub(crate) fn new(types: &[TypeDefinition]) -> Compiled {
        let type_by_name: HashMap<String, u32> = types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i as u32))
            .collect();
        let mut pairs = Vec::new();
        let mut ctypes: Vec<CType> = types
            .iter()
            .enumerate()
            .map(|(ti, t)| CType {
                name: t.name.clone(),
                plain_parents: Vec::new(),
                wildcard_parents: Vec::new(),
                rel_by_name: t
                    .relations
                    .iter()
                    .enumerate()
                    .map(|(ri, r)| (r.name.clone(), ri as u32))
                    .collect(),
                rels: t
                    .relations
                    .iter()
                    .enumerate()
                    .map(|(ri, r)| {
                        pairs.push((ti as u32, ri as u32));
                        CRel {
                            name: r.name.clone(),
                            pair: (pairs.len() - 1) as u32,
                            rewrite: CRewrite::This,
                            allowed: Vec::new(),
                            has_this: false,
                            is_tupleset: false,
                            this_mode: None,
                            computed_parents: Vec::new(),
                            ttu_parents: Vec::new(),
                            userset_parents: Vec::new(),
                            deps: Vec::new(),
                            union_closed: false,
                        }
                    })
                    .collect(),
            })
            .collect();
        let type_idx = |n: &str| type_by_name.get(n).copied();
        let rel_idx = |ctypes: &[CType], t: u32, r: &str| {
            ctypes
                .get(t as usize)
                .and_then(|ct| ct.rel_by_name.get(r).copied())
        };

        // Rewrites and restrictions by index.
        for (ti, t) in types.iter().enumerate() {
            for (ri, r) in t.relations.iter().enumerate() {
                let rewrite = compile_rewrite(&r.rewrite, ti as u32, t, &ctypes, types);
                let allowed = r
                    .directly_related_user_types
                    .iter()
                    .filter_map(|rr| match rr {
                        TypeRestriction::Type(n) => type_idx(n).map(Allowed::Type),
                        TypeRestriction::Wildcard(n) => type_idx(n).map(Allowed::Wildcard),
                        TypeRestriction::Userset {
                            type_name,
                            relation,
                        } => type_idx(type_name).and_then(|t2| {
                            rel_idx(&ctypes, t2, relation).map(|r2| Allowed::Userset(t2, r2))
                        }),
                    })
                    .collect();
                let rel = &mut ctypes[ti].rels[ri];
                rel.rewrite = rewrite;
                rel.allowed = allowed;
            }
        }

        // Leaf modes and reverse edges.
        for ti in 0..ctypes.len() {
            for ri in 0..ctypes[ti].rels.len() {
                let rewrite = ctypes[ti].rels[ri].rewrite.clone();
                let mut this_mode = None;
                let mut has_this = false;
                let mut computed: Vec<(u32, Option<Mode>)> = Vec::new();
                let mut ttus: Vec<(u32, u32, u32, Option<Mode>)> = Vec::new();
                let mut tuplesets = Vec::new();
                leaves(
                    &rewrite,
                    Some(Mode::Positive),
                    &mut |leaf, mode| match leaf {
                        CRewrite::This => {
                            has_this = true;
                            this_mode = best(this_mode, mode);
                        }
                        CRewrite::Computed(c) => computed.push((*c, mode)),
                        CRewrite::Ttu { tupleset, targets } => {
                            tuplesets.push(*tupleset);
                            for (t2, r2) in targets {
                                ttus.push((*t2, *r2, *tupleset, mode));
                            }
                        }
                        _ => {}
                    },
                );
                let rel = &mut ctypes[ti].rels[ri];
                rel.has_this = has_this;
                rel.this_mode = this_mode;
                for ts in tuplesets {
                    if let Some(r) = ctypes[ti].rels.get_mut(ts as usize) {
                        r.is_tupleset = true;
                    }
                }
                for (c, mode) in computed {
                    if let (Some(m), Some(child)) = (mode, ctypes[ti].rels.get_mut(c as usize)) {
                        add_parent(&mut child.computed_parents, ri as u32, m);
                    }
                }
                for (t2, r2, ts, mode) in ttus {
                    let (Some(m), Some(child)) = (
                        mode,
                        ctypes
                            .get_mut(t2 as usize)
                            .and_then(|t| t.rels.get_mut(r2 as usize)),
                    ) else {
                        continue;
                    };
                    match child
                        .ttu_parents
                        .iter_mut()
                        .find(|p| p.type_idx == ti as u32 && p.rel == ri as u32 && p.tupleset == ts)
                    {
                        Some(p) => p.mode = p.mode.max(m),
                        None => child.ttu_parents.push(TtuParent {
                            type_idx: ti as u32,
                            rel: ri as u32,
                            tupleset: ts,
                            mode: m,
                        }),
                    }
                }
            }
        }

        // Who may name whom in a direct tuple.
        for t2 in 0..ctypes.len() {
            for r2 in 0..ctypes[t2].rels.len() {
                let rel = &ctypes[t2].rels[r2];
                if rel.this_mode.is_none() {
                    continue;
                }
                let parent = (t2 as u32, r2 as u32);
                for a in rel.allowed.clone() {
                    match a {
                        Allowed::Type(t) => ctypes[t as usize].plain_parents.push(parent),
                        Allowed::Wildcard(t) => ctypes[t as usize].wildcard_parents.push(parent),
                        Allowed::Userset(t, r) => ctypes[t as usize].rels[r as usize]
                            .userset_parents
                            .push(parent),
                    }
                }
            }
        }

        // Dependencies: direct edges, then closures.
        let n = pairs.len();
        let words = n.div_ceil(64).max(1);
        let mut pos_edges: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut all_edges: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut union_only = vec![false; n];
        for ct in &ctypes {
            for rel in &ct.rels {
                let p = rel.pair as usize;
                union_only[p] = is_union_only(&rel.rewrite);
                let this_ti = pairs[p].0;
                leaves(&rel.rewrite, Some(Mode::Positive), &mut |leaf, mode| {
                    let targets: Vec<u32> = match leaf {
                        CRewrite::This => rel
                            .allowed
                            .iter()
                            .filter_map(|a| match a {
                                Allowed::Userset(t, r) => pair_of(&ctypes, *t, *r),
                                _ => None,
                            })
                            .collect(),
                        CRewrite::Computed(c) => {
                            pair_of(&ctypes, this_ti, *c).into_iter().collect()
                        }
                        CRewrite::Ttu { targets, .. } => targets
                            .iter()
                            .filter_map(|(t, r)| pair_of(&ctypes, *t, *r))
                            .collect(),
                        _ => Vec::new(),
                    };
                    all_edges[p].extend(&targets);
                    if mode.is_some() {
                        pos_edges[p].extend(&targets);
                    }
                });
            }
        }
        let closure = |edges: &Vec<Vec<u32>>, start: usize| {
            let mut set = vec![0u64; words];
            let mut stack = vec![start as u32];
            set_bit(&mut set, start as u32);
            while let Some(p) = stack.pop() {
                for &q in &edges[p as usize] {
                    if !bit(&set, q) {
                        set_bit(&mut set, q);
                        stack.push(q);
                    }
                }
            }
            set
        };
        for ct in &mut ctypes {
            for rel in &mut ct.rels {
                let p = rel.pair as usize;
                rel.deps = closure(&pos_edges, p);
                let all = closure(&all_edges, p);
                rel.union_closed = (0..n).all(|q| !bit(&all, q as u32) || union_only[q]);
            }
        }

        Compiled {
            types: ctypes,
            type_by_name,
            pairs,
        }
    }

    pub(crate) fn rel(&self, t: u32, r: u32) -> &CRel {
        &self.types[t as usize].rels[r as usize]
    }

    pub(crate) fn type_index(&self, name: &str) -> Result<u32, RebacError> {
        self.type_by_name
            .get(name)
            .copied()
            .ok_or_else(|| RebacError::UnknownType {
                type_name: name.to_owned(),
            })
    }

    pub(crate) fn relation_index(&self, t: u32, relation: &str) -> Result<u32, RebacError> {
        let ct = &self.types[t as usize];
        ct.rel_by_name
            .get(relation)
            .copied()
            .ok_or_else(|| RebacError::UnknownRelation {
                type_name: ct.name.clone(),
                relation: relation.to_owned(),
            })
    }
}

fn pair_of(ctypes: &[CType], t: u32, r: u32) -> Option<u32> {
    ctypes
        .get(t as usize)
        .and_then(|ct| ct.rels.get(r as usize))
        .map(|rel| rel.pair)
}

fn add_parent(parents: &mut Vec<(u32, Mode)>, rel: u32, mode: Mode) {
    match parents.iter_mut().find(|(r, _)| *r == rel) {
        Some((_, m)) => *m = (*m).max(mode),
        None => parents.push((rel, mode)),
    }
}

fn is_union_only(rw: &CRewrite) -> bool {
    match rw {
        CRewrite::This | CRewrite::Computed(_) | CRewrite::Ttu { .. } => true,
        CRewrite::Union(c) => c.iter().all(is_union_only),
        CRewrite::Intersection(_) | CRewrite::Difference(..) => false,
    }
}

fn compile_rewrite(
    rw: &Rewrite,
    ti: u32,
    t: &TypeDefinition,
    ctypes: &[CType],
    types: &[TypeDefinition],
) -> CRewrite {
    let rel_idx = |name: &str| {
        ctypes[ti as usize]
            .rel_by_name
            .get(name)
            .copied()
            .unwrap_or(u32::MAX)
    };
    match rw {
        Rewrite::This => CRewrite::This,
        Rewrite::Computed(c) => CRewrite::Computed(rel_idx(c)),
        Rewrite::TupleToUserset { tupleset, computed } => {
            let mut targets = Vec::new();
            if let Some(ts) = t.relations.iter().find(|r| r.name == *tupleset) {
                for rr in &ts.directly_related_user_types {
                    let Some(t2) = types.iter().position(|x| x.name == rr.type_name()) else {
                        continue;
                    };
                    if let Some(r2) = ctypes[t2].rel_by_name.get(computed) {
                        if !targets.contains(&(t2 as u32, *r2)) {
                            targets.push((t2 as u32, *r2));
                        }
                    }
                }
            }
            CRewrite::Ttu {
                tupleset: rel_idx(tupleset),
                targets,
            }
        }
        Rewrite::Union(c) => CRewrite::Union(
            c.iter()
                .map(|c| compile_rewrite(c, ti, t, ctypes, types))
                .collect(),
        ),
        Rewrite::Intersection(c) => CRewrite::Intersection(
            c.iter()
                .map(|c| compile_rewrite(c, ti, t, ctypes, types))
                .collect(),
        ),
        Rewrite::Difference { base, subtract } => CRewrite::Difference(
            Box::new(compile_rewrite(base, ti, t, ctypes, types)),
            Box::new(compile_rewrite(subtract, ti, t, ctypes, types)),
        ),
    }
}
