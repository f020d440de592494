//! Check resolution (OpenFGA's `LocalChecker`, sequentially) and the reverse walk from a user.
//!
//! Semantics kept from `openfga/openfga` `internal/graph/check.go`:
//!
//! - a request carries a depth budget of [`RESOLVE_DEPTH_LIMIT`]; following a userset tuple or
//!   a tuple-to-userset costs one, a computed userset costs nothing; entering a
//!   sub-problem with no budget left is [`RebacError::ResolutionTooComplex`];
//! - a sub-problem already on the current path (`object#relation@user`) is a cycle: it counts
//!   as "not allowed" and is flagged; a flagged base or subtract makes a `but not` false
//!   (OpenFGA's fix for GHSA-8cph-m685-6v6r) and a flagged operand makes an `and` false;
//! - `object#relation@object#relation` holds (the userset contains itself);
//! - union: allowed if any operand is, else the error of an operand if one failed, else not
//!   allowed; intersection: not allowed if any operand is not, else an error if one failed,
//!   else allowed; exclusion: not allowed if the base is not or the subtract is, else an
//!   error if one failed, else allowed;
//! - a typed wildcard tuple (`user:*`) grants every object of its type, never a userset;
//! - tuples the model would now refuse (type restrictions) are ignored.
//!
//! The userset fast path: when a userset tuple (`doc:1#viewer@group:eng#member`) points at a
//! relation built from unions only (`group#member: [user, group#member]`), membership is
//! decided by walking up from the user once per request through the reverse index (the set of
//! every `group:…#member` the user is in, with the number of hops) instead of walking down
//! every nested group — OpenFGA's recursive fast path. The depth budget applies to the hops
//! found. It is not used under a `but not` subtract, where OpenFGA's cycle flag matters.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashSet};

use crate::error::RebacError;
use crate::graph::{UKey, View};
use crate::model::{Allowed, CRewrite, Compiled, Mode, compile_bit};

/// OpenFGA's default resolve node limit (`OPENFGA_RESOLVE_NODE_LIMIT`).
pub const RESOLVE_DEPTH_LIMIT: u32 = 25;

const UNSET: u32 = u32::MAX;
const NONE: u32 = u32::MAX - 1;

/// The user of a request, by ids (`t`: model type, `r`: model relation).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject {
    Object { o: u32, t: u32, wild: Option<u32> },
    Wildcard { w: u32, t: u32 },
    Userset { o: u32, gr: u32, t: u32, r: u32 },
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome {
    pub(crate) allowed: bool,
    pub(crate) cycle: bool,
}

const YES: Outcome = Outcome {
    allowed: true,
    cycle: false,
};
const NO: Outcome = Outcome {
    allowed: false,
    cycle: false,
};
const CYCLE: Outcome = Outcome {
    allowed: false,
    cycle: true,
};

type Res<T> = Result<T, RebacError>;

fn too_complex() -> RebacError {
    RebacError::ResolutionTooComplex {
        limit: RESOLVE_DEPTH_LIMIT,
    }
}

/// Folds operand results with union semantics.
#[derive(Default)]
struct AnyOf {
    err: Option<RebacError>,
    cycle: bool,
}

impl AnyOf {
    /// `true` when the union is decided (allowed).
    fn add(&mut self, r: Res<Outcome>) -> bool {
        match r {
            Ok(o) if o.allowed => return true,
            Ok(o) => self.cycle |= o.cycle,
            Err(e) => self.err = Some(e),
        }
        false
    }

    fn finish(self) -> Res<Outcome> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(Outcome {
                allowed: false,
                cycle: self.cycle,
            }),
        }
    }
}

/// How often (in nodes visited) a bounded walk asks whether it is out of time.
pub(crate) const CLOCK_EVERY: u32 = 64;

/// When a bounded reverse walk stops: after `max` nodes of relation pair `pair` were found,
/// or when `out_of_time` answers `true`.
pub(crate) struct WalkStop<'s> {
    pub(crate) pair: u32,
    pub(crate) max: Option<usize>,
    pub(crate) out_of_time: &'s dyn Fn() -> bool,
}

/// A node of the reverse walk: object, model type, model relation.
#[derive(Debug, Clone, Copy)]
struct Node {
    o: u32,
    t: u32,
    r: u32,
}

pub(crate) struct Engine<'a> {
    pub(crate) m: &'a Compiled,
    pub(crate) v: &'a View<'a>,
    now: i64,
    subject: Subject,
    gtype_mtype: Vec<u32>,
    pair_grel: Vec<u32>,
    /// `(model type, graph relation)` → model relation (`NONE` when undefined).
    grel_mrel: HashMap<(u32, u32), u32>,
    path: Vec<u64>,
    upsets: HashMap<u32, HashMap<u64, u32>>,
}

fn node_key(o: u32, pair: u32) -> u64 {
    (u64::from(o) << 32) | u64::from(pair)
}

impl<'a> Engine<'a> {
    pub(crate) fn new(m: &'a Compiled, v: &'a View<'a>, now: i64, subject: Subject) -> Self {
        Engine {
            m,
            v,
            now,
            subject,
            gtype_mtype: vec![UNSET; v.type_count() as usize],
            pair_grel: vec![UNSET; m.pairs.len()],
            grel_mrel: HashMap::new(),
            path: Vec::new(),
            upsets: HashMap::new(),
        }
    }

    pub(crate) fn now(&self) -> i64 {
        self.now
    }

    /// Model type of a graph type.
    pub(crate) fn mtype(&mut self, gtype: u32) -> Option<u32> {
        let slot = self.gtype_mtype.get_mut(gtype as usize)?;
        if *slot == UNSET {
            *slot = self
                .m
                .type_by_name
                .get(self.v.type_name(gtype))
                .copied()
                .unwrap_or(NONE);
        }
        (*slot != NONE).then_some(*slot)
    }

    pub(crate) fn obj_mtype(&mut self, obj: u32) -> Option<u32> {
        let g = self.v.obj_type(obj);
        self.mtype(g)
    }

    /// Graph relation id of a model relation.
    pub(crate) fn grel(&mut self, t: u32, r: u32) -> Option<u32> {
        let rel = self.m.rel(t, r);
        let slot = self.pair_grel.get_mut(rel.pair as usize)?;
        if *slot == UNSET {
            *slot = self.v.rel_id(&rel.name).unwrap_or(NONE);
        }
        (*slot != NONE).then_some(*slot)
    }

    /// Model relation of a graph relation on a model type.
    pub(crate) fn mrel(&mut self, t: u32, gr: u32) -> Option<u32> {
        let (m, v) = (self.m, self.v);
        let r = *self.grel_mrel.entry((t, gr)).or_insert_with(|| {
            m.types
                .get(t as usize)
                .and_then(|ct| ct.rel_by_name.get(v.rel_name(gr)))
                .copied()
                .unwrap_or(NONE)
        });
        (r != NONE).then_some(r)
    }

    /// Whether `obj#rel` (model type `t`, relation `r`) holds for the subject.
    pub(crate) fn check(&mut self, obj: u32, t: u32, r: u32) -> Res<bool> {
        let saved = std::mem::take(&mut self.path);
        let res = self.resolve(obj, t, r, RESOLVE_DEPTH_LIMIT, false);
        self.path = saved;
        Ok(res?.allowed)
    }

    fn resolve(&mut self, obj: u32, t: u32, r: u32, depth: u32, neg: bool) -> Res<Outcome> {
        if depth == 0 {
            return Err(too_complex());
        }
        let m = self.m;
        let rel = m.rel(t, r);
        let key = node_key(obj, rel.pair);
        if self.path.contains(&key) {
            return Ok(CYCLE);
        }
        if let Subject::Userset {
            o, t: ut, r: ur, ..
        } = self.subject
        {
            if o == obj && ut == t && ur == r {
                return Ok(YES);
            }
        }
        self.path.push(key);
        let res = self.eval(&rel.rewrite, obj, t, r, depth, neg);
        self.path.pop();
        res
    }

    fn eval(
        &mut self,
        rw: &CRewrite,
        obj: u32,
        t: u32,
        r: u32,
        depth: u32,
        neg: bool,
    ) -> Res<Outcome> {
        match rw {
            CRewrite::This => self.direct(obj, t, r, depth, neg),
            CRewrite::Computed(c) => self.resolve(obj, t, *c, depth, neg),
            CRewrite::Ttu { tupleset, targets } => self.ttu(obj, t, *tupleset, targets, depth, neg),
            CRewrite::Union(children) => {
                let mut acc = AnyOf::default();
                for c in children {
                    if acc.add(self.eval(c, obj, t, r, depth, neg)) {
                        return Ok(YES);
                    }
                }
                acc.finish()
            }
            CRewrite::Intersection(children) => {
                let mut err = None;
                for c in children {
                    match self.eval(c, obj, t, r, depth, neg) {
                        Ok(o) if !o.allowed || o.cycle => return Ok(o),
                        Ok(_) => {}
                        Err(e) => err = Some(e),
                    }
                }
                match err {
                    Some(e) => Err(e),
                    None => Ok(YES),
                }
            }
            CRewrite::Difference(base, subtract) => {
                let base = match self.eval(base, obj, t, r, depth, neg) {
                    Ok(o) if o.cycle => return Ok(CYCLE),
                    Ok(o) if !o.allowed => return Ok(NO),
                    other => other,
                };
                match self.eval(subtract, obj, t, r, depth, true) {
                    Ok(o) if o.cycle => Ok(CYCLE),
                    Ok(o) if o.allowed => Ok(NO),
                    Ok(_) => base.map(|_| YES),
                    Err(e) => base.and(Err(e)),
                }
            }
        }
    }

    /// Direct relationships: the subject's own tuple, a wildcard tuple, and userset tuples.
    fn direct(&mut self, obj: u32, t: u32, r: u32, depth: u32, neg: bool) -> Res<Outcome> {
        let m = self.m;
        let rel = m.rel(t, r);
        let Some(gr) = self.grel(t, r) else {
            return Ok(NO);
        };
        let (v, now) = (self.v, self.now);
        let hit = match self.subject {
            Subject::Object { o, t: ut, wild } => {
                (rel.allows(Allowed::Type(ut)) && v.has(obj, gr, UKey::Plain(o), now))
                    || wild.is_some_and(|w| {
                        rel.allows(Allowed::Wildcard(ut)) && v.has(obj, gr, UKey::Plain(w), now)
                    })
            }
            Subject::Wildcard { w, t: ut } => {
                rel.allows(Allowed::Wildcard(ut)) && v.has(obj, gr, UKey::Plain(w), now)
            }
            Subject::Userset {
                o,
                gr: ugr,
                t: ut,
                r: ur,
            } => rel.allows(Allowed::Userset(ut, ur)) && v.has(obj, gr, UKey::Set(o, ugr), now),
        };
        if hit {
            return Ok(YES);
        }
        if !rel
            .allowed
            .iter()
            .any(|a| matches!(a, Allowed::Userset(..)))
        {
            return Ok(NO);
        }
        let mut acc = AnyOf::default();
        for (uo, ugr) in v.usersets(obj, gr, now) {
            let Some(ut) = self.obj_mtype(uo) else {
                continue;
            };
            let Some(ur) = self.mrel(ut, ugr) else {
                continue;
            };
            if !rel.allows(Allowed::Userset(ut, ur)) {
                continue;
            }
            let res = if !neg && m.rel(ut, ur).union_closed {
                self.member(uo, ut, ur, depth - 1)
            } else {
                self.resolve(uo, ut, ur, depth - 1, neg)
            };
            if acc.add(res) {
                return Ok(YES);
            }
        }
        acc.finish()
    }

    fn ttu(
        &mut self,
        obj: u32,
        t: u32,
        tupleset: u32,
        targets: &[(u32, u32)],
        depth: u32,
        neg: bool,
    ) -> Res<Outcome> {
        let m = self.m;
        let Some(gts) = self.grel(t, tupleset) else {
            return Ok(NO);
        };
        let ts_rel = m.rel(t, tupleset);
        let v = self.v;
        let mut acc = AnyOf::default();
        for p in v.direct(obj, gts, self.now) {
            if v.is_wildcard(p) {
                continue;
            }
            let Some(pt) = self.obj_mtype(p) else {
                continue;
            };
            if !ts_rel.allows(Allowed::Type(pt)) {
                continue;
            }
            let Some(&(_, pr)) = targets.iter().find(|(tt, _)| *tt == pt) else {
                continue;
            };
            if acc.add(self.resolve(p, pt, pr, depth - 1, neg)) {
                return Ok(YES);
            }
        }
        acc.finish()
    }

    /// The userset fast path (see the module docs): is the subject in `uo#ur`?
    fn member(&mut self, uo: u32, ut: u32, ur: u32, depth: u32) -> Res<Outcome> {
        if depth == 0 {
            return Err(too_complex());
        }
        let rel = self.m.rel(ut, ur);
        if !self.upsets.contains_key(&rel.pair) {
            let set = self.reverse_walk(&rel.deps, None)?;
            self.upsets.insert(rel.pair, set);
        }
        match self
            .upsets
            .get(&rel.pair)
            .and_then(|s| s.get(&node_key(uo, rel.pair)))
        {
            Some(&hops) if hops < depth => Ok(YES),
            Some(_) => Err(too_complex()),
            None => Ok(NO),
        }
    }

    /// Every `object#relation` (restricted to the pairs in `deps`) that holds for the subject,
    /// keyed by [`node_key`], with the number of userset/TTU hops from the subject.
    ///
    /// Walks up from the subject's tuples: a node that holds lifts its computed-userset
    /// parents, the userset tuples that name it and the tuple-to-usersets that point at it.
    /// A parent reached through an intersection or a difference base is only a candidate and
    /// is decided by a full Check. With `limit`, reaching a node `limit` hops away is
    /// [`RebacError::ResolutionTooComplex`], as it is for OpenFGA's ListObjects.
    pub(crate) fn reverse_walk(
        &mut self,
        deps: &[u64],
        limit: Option<u32>,
    ) -> Res<HashMap<u64, u32>> {
        Ok(self.reverse_walk_bounded(deps, limit, None)?.0)
    }

    /// [`reverse_walk`](Self::reverse_walk) that stops early: once `stop.pair` nodes number
    /// `stop.max` or `stop.out_of_time` says so. The flag is `true` when it stopped early
    /// (the map then holds what was found so far).
    pub(crate) fn reverse_walk_bounded(
        &mut self,
        deps: &[u64],
        limit: Option<u32>,
        stop: Option<&WalkStop<'_>>,
    ) -> Res<(HashMap<u64, u32>, bool)> {
        let mut targets = 0usize;
        let mut steps = 0u32;
        let m = self.m;
        let v = self.v;
        let now = self.now;
        let in_deps = |t: u32, r: u32| compile_bit(deps, m.rel(t, r).pair);
        let mut found: HashMap<u64, u32> = HashMap::new();
        let mut rejected: HashSet<u64> = HashSet::new();
        let mut queue: VecDeque<(Node, u32)> = VecDeque::new();
        let mut pending: Vec<(Node, u32, Mode)> = Vec::new();

        // Objects `x` of type `t2` with `x#r2@user` (plain user) or `x#r2@uo#ur` (userset).
        let lift = |e: &mut Self,
                    pending: &mut Vec<(Node, u32, Mode)>,
                    parents: &[(u32, u32)],
                    from: UKey,
                    d: u32| {
            for &(t2, r2) in parents {
                if !in_deps(t2, r2) {
                    continue;
                }
                let Some(mode) = m.rel(t2, r2).this_mode else {
                    continue;
                };
                let Some(gr2) = e.grel(t2, r2) else { continue };
                let mut take = |x: u32, e: &mut Self| {
                    if e.obj_mtype(x) == Some(t2) {
                        pending.push((Node { o: x, t: t2, r: r2 }, d, mode));
                    }
                };
                match from {
                    UKey::Plain(u) => v.rev_plain(u, gr2, now).for_each(|x| take(x, e)),
                    UKey::Set(uo, ur) => v.rev_userset(uo, ur, gr2, now).for_each(|x| take(x, e)),
                }
            }
        };

        match self.subject {
            Subject::Object { o, t, wild } => {
                lift(
                    self,
                    &mut pending,
                    &m.types[t as usize].plain_parents,
                    UKey::Plain(o),
                    0,
                );
                if let Some(w) = wild {
                    lift(
                        self,
                        &mut pending,
                        &m.types[t as usize].wildcard_parents,
                        UKey::Plain(w),
                        0,
                    );
                }
            }
            Subject::Wildcard { w, t } => {
                lift(
                    self,
                    &mut pending,
                    &m.types[t as usize].wildcard_parents,
                    UKey::Plain(w),
                    0,
                );
            }
            Subject::Userset { o, gr, t, r } => {
                pending.push((Node { o, t, r }, 0, Mode::Positive));
                lift(
                    self,
                    &mut pending,
                    &m.rel(t, r).userset_parents,
                    UKey::Set(o, gr),
                    0,
                );
            }
        }

        loop {
            for (n, d, mode) in pending.drain(..) {
                if !in_deps(n.t, n.r) {
                    continue;
                }
                let key = node_key(n.o, m.rel(n.t, n.r).pair);
                if found.get(&key).is_some_and(|&old| old <= d) {
                    continue;
                }
                if mode == Mode::NeedsCheck && !found.contains_key(&key) {
                    if rejected.contains(&key) {
                        continue;
                    }
                    if !self.check(n.o, n.t, n.r)? {
                        rejected.insert(key);
                        continue;
                    }
                }
                let fresh = found.insert(key, d).is_none();
                if let Some(stop) = stop.filter(|_| fresh) {
                    if key as u32 == stop.pair {
                        targets += 1;
                        if stop.max.is_some_and(|max| targets >= max) {
                            return Ok((found, true));
                        }
                    }
                }
                if queue.front().is_some_and(|&(_, qd)| d <= qd) {
                    queue.push_front((n, d));
                } else {
                    queue.push_back((n, d));
                }
            }
            let Some((n, d)) = queue.pop_front() else {
                break;
            };
            steps = steps.wrapping_add(1);
            if let Some(stop) = stop {
                if steps % CLOCK_EVERY == 0 && (stop.out_of_time)() {
                    return Ok((found, true));
                }
            }
            let rel = m.rel(n.t, n.r);
            if found
                .get(&node_key(n.o, rel.pair))
                .is_some_and(|&best| best < d)
            {
                continue;
            }
            if limit.is_some_and(|l| d >= l) {
                return Err(too_complex());
            }
            for &(r2, mode) in &rel.computed_parents {
                pending.push((
                    Node {
                        o: n.o,
                        t: n.t,
                        r: r2,
                    },
                    d,
                    mode,
                ));
            }
            if !rel.userset_parents.is_empty() {
                if let Some(gr) = self.grel(n.t, n.r) {
                    lift(
                        self,
                        &mut pending,
                        &rel.userset_parents,
                        UKey::Set(n.o, gr),
                        d + 1,
                    );
                }
            }
            for p in &rel.ttu_parents {
                if !in_deps(p.type_idx, p.rel)
                    || !m.rel(p.type_idx, p.tupleset).allows(Allowed::Type(n.t))
                {
                    continue;
                }
                let Some(gts) = self.grel(p.type_idx, p.tupleset) else {
                    continue;
                };
                for x in v.rev_plain(n.o, gts, now) {
                    if self.obj_mtype(x) == Some(p.type_idx) {
                        pending.push((
                            Node {
                                o: x,
                                t: p.type_idx,
                                r: p.rel,
                            },
                            d + 1,
                            p.mode,
                        ));
                    }
                }
            }
        }
        Ok((found, false))
    }
}
