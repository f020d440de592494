//! The in-memory tuple index the queries run on.
//!
//! Strings are interned once: types and relations in small tables, objects (`type` + `id`)
//! in one arena (`id` bytes only; a 4-byte end offset and a 4-byte type per object) with a
//! `hashbrown::HashTable` of object ids. Every tuple is then stored twice, as integers:
//!
//! - forward, by `object#relation`: plain users (objects and `type:*`) as `u32`, usersets as
//!   `u64` — what Check, Expand and ListUsers walk down;
//! - reverse, by user: `object#relation` pairs as `u64` — what ListObjects and the userset
//!   fast path walk up.
//!
//! Bit 31 of an entry's low word marks a tuple with an expiry; its time is in a side table
//! (most tuples do not expire, so they pay nothing for it). Maps use hashbrown's default
//! hasher (foldhash, randomly seeded per process, so crafted ids cannot force collisions).

use std::hash::BuildHasher;

use hashbrown::hash_map::Entry;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use smallvec::SmallVec;

use std::collections::HashSet;

use crate::error::RebacError;
use crate::model::Model;
use crate::tuple::{ObjectRef, Tuple, TupleKey, User};

/// Most writes plus deletes in one batch (OpenFGA's `maxTuplesPerWrite` default).
pub const MAX_TUPLES_PER_WRITE: usize = 100;

/// Expiry flag in an entry's low 32 bits.
pub(crate) const FLAG: u32 = 1 << 31;
/// Relation id meaning "no relation" (a plain user).
pub(crate) const NO_REL: u32 = FLAG - 1;
/// Most objects (and relations) one graph can intern.
const MAX_IDS: u32 = NO_REL;

/// `object#relation` (or a userset user) as one `u64`.
pub(crate) fn okey(obj: u32, rel: u32) -> u64 {
    (u64::from(obj) << 32) | u64::from(rel)
}

/// Splits an entry into object, relation (flag cleared) and flag.
pub(crate) fn split(e: u64) -> (u32, u32, bool) {
    let low = e as u32;
    ((e >> 32) as u32, low & !FLAG, low & FLAG != 0)
}

/// A user by interned ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum UKey {
    /// An object or a wildcard object (`type:*`).
    Plain(u32),
    /// A userset.
    Set(u32, u32),
}

impl UKey {
    pub(crate) fn as_u64(self) -> u64 {
        match self {
            UKey::Plain(o) => okey(o, NO_REL),
            UKey::Set(o, r) => okey(o, r),
        }
    }
}

/// A small string table (types, relations) with an id offset, so an overlay can extend the
/// graph's id space.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    offset: u32,
    names: Vec<Box<str>>,
    map: HashMap<Box<str>, u32>,
}

impl Names {
    fn with_offset(offset: u32) -> Self {
        Names {
            offset,
            ..Default::default()
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.map.get(name).copied()
    }

    pub(crate) fn name(&self, id: u32) -> Option<&str> {
        id.checked_sub(self.offset)
            .and_then(|i| self.names.get(i as usize))
            .map(|s| &**s)
    }

    pub(crate) fn end(&self) -> u32 {
        self.offset + self.names.len() as u32
    }

    fn intern(&mut self, name: &str) -> Result<u32, RebacError> {
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        let id = self.end();
        if id >= MAX_IDS {
            return Err(full());
        }
        self.names.push(name.into());
        self.map.insert(name.into(), id);
        Ok(id)
    }

    fn heap_bytes(&self) -> usize {
        self.names.iter().map(|n| n.len() + 16).sum::<usize>() * 2
            + table_bytes(self.map.capacity(), 24)
    }
}

/// Interned objects: `(type, id)` → `u32`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Objects {
    offset: u32,
    hasher: DefaultHashBuilder,
    table: HashTable<u32>,
    arena: String,
    ends: Vec<u32>,
    types: Vec<u32>,
}

impl Objects {
    fn with_offset(offset: u32) -> Self {
        Objects {
            offset,
            ..Default::default()
        }
    }

    pub(crate) fn end(&self) -> u32 {
        self.offset + self.ends.len() as u32
    }

    fn id_at<'a>(ends: &[u32], arena: &'a str, local: u32) -> &'a str {
        let local = local as usize;
        let start = if local == 0 {
            0
        } else {
            ends.get(local - 1).copied().unwrap_or(0) as usize
        };
        let end = ends.get(local).copied().unwrap_or(0) as usize;
        arena.get(start..end).unwrap_or("")
    }

    /// The id part of an object (`readme` of `doc:readme`).
    pub(crate) fn id_str(&self, obj: u32) -> &str {
        match obj.checked_sub(self.offset) {
            Some(local) => Self::id_at(&self.ends, &self.arena, local),
            None => "",
        }
    }

    pub(crate) fn type_of(&self, obj: u32) -> Option<u32> {
        obj.checked_sub(self.offset)
            .and_then(|l| self.types.get(l as usize).copied())
    }

    pub(crate) fn get(&self, t: u32, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one((t, id));
        self.table
            .find(h, |&l| {
                self.types.get(l as usize) == Some(&t)
                    && Self::id_at(&self.ends, &self.arena, l) == id
            })
            .map(|l| l + self.offset)
    }

    fn intern(&mut self, t: u32, id: &str) -> Result<u32, RebacError> {
        if let Some(o) = self.get(t, id) {
            return Ok(o);
        }
        let local = self.ends.len() as u32;
        let end = self.arena.len() + id.len();
        if self.offset + local >= MAX_IDS || end > u32::MAX as usize {
            return Err(full());
        }
        self.arena.push_str(id);
        self.ends.push(end as u32);
        self.types.push(t);
        let Objects {
            hasher,
            table,
            arena,
            ends,
            types,
            ..
        } = self;
        let h = hasher.hash_one((t, id));
        table.insert_unique(h, local, |&l| {
            let tl = types.get(l as usize).copied().unwrap_or(0);
            hasher.hash_one((tl, Self::id_at(ends, arena, l)))
        });
        Ok(local + self.offset)
    }

    fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.ends.capacity() * 4
            + self.types.capacity() * 4
            + table_bytes(self.table.capacity(), 4)
    }
}

fn full() -> RebacError {
    RebacError::validation(
        "the relationship graph cannot intern more than 2^31 objects or 4 GiB of ids",
    )
}

/// Approximate heap size of a hashbrown table holding `cap` items of `entry` bytes.
fn table_bytes(cap: usize, entry: usize) -> usize {
    if cap == 0 {
        return 0;
    }
    // hashbrown keeps 7/8 of a power-of-two bucket count usable (all of it below 8 buckets).
    let buckets = (cap * 8 / 7).max(cap + 1).next_power_of_two();
    buckets * (entry + 1)
}

/// The tuple index (see the module docs).
/// Most lists hold one to four entries: those live inline, in the map's own slot (24 bytes,
/// the size of a `Vec`), and only longer ones allocate.
type Ids32 = SmallVec<[u32; 4]>;
type Ids64 = SmallVec<[u64; 2]>;

#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    /// `object#relation` → plain users (objects, wildcards), flagged.
    direct: HashMap<u64, Ids32>,
    /// `object#relation` → userset users `(object, relation)`, flagged.
    usersets: HashMap<u64, Ids64>,
    /// `(plain user, relation)` → objects, flagged.
    rev_plain: HashMap<u64, Ids32>,
    /// `(userset user, relation)` → objects, flagged.
    rev_userset: HashMap<(u64, u32), Ids32>,
    expiry: HashMap<(u64, u64), i64>,
    len: usize,
}

fn find32(v: &[u32], x: u32) -> Option<usize> {
    v.iter().position(|&e| e & !FLAG == x)
}

fn find64(v: &[u64], x: u64) -> Option<usize> {
    v.iter().position(|&e| e & !u64::from(FLAG) == x)
}

fn set_flag32(v: &mut [u32], x: u32, flag: bool) {
    if let Some(e) = v.iter_mut().find(|e| **e & !FLAG == x) {
        *e = if flag { x | FLAG } else { x };
    }
}

fn set_flag64(v: &mut [u64], x: u64, flag: bool) {
    if let Some(e) = v.iter_mut().find(|e| **e & !u64::from(FLAG) == x) {
        *e = if flag { x | u64::from(FLAG) } else { x };
    }
}

fn remove_from<K: std::hash::Hash + Eq, A: smallvec::Array>(
    map: &mut HashMap<K, SmallVec<A>>,
    key: K,
    find: impl Fn(&[A::Item]) -> Option<usize>,
) {
    if let Entry::Occupied(mut o) = map.entry(key) {
        if let Some(i) = find(o.get()) {
            o.get_mut().swap_remove(i);
        }
        if o.get().is_empty() {
            o.remove();
        }
    }
}

impl Index {
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn direct(&self, obj: u32, rel: u32) -> &[u32] {
        self.direct
            .get(&okey(obj, rel))
            .map_or(&[], SmallVec::as_slice)
    }

    pub(crate) fn usersets(&self, obj: u32, rel: u32) -> &[u64] {
        self.usersets
            .get(&okey(obj, rel))
            .map_or(&[], SmallVec::as_slice)
    }

    /// Objects that have the plain user `user` by `rel`.
    pub(crate) fn rev_plain(&self, user: u32, rel: u32) -> &[u32] {
        self.rev_plain
            .get(&okey(user, rel))
            .map_or(&[], SmallVec::as_slice)
    }

    /// Objects that have the userset `uo#ur` by `rel`.
    pub(crate) fn rev_userset(&self, uo: u32, ur: u32, rel: u32) -> &[u32] {
        self.rev_userset
            .get(&(okey(uo, ur), rel))
            .map_or(&[], SmallVec::as_slice)
    }

    /// The expiry of a flagged entry.
    pub(crate) fn expiry(&self, obj: u32, rel: u32, user: UKey) -> Option<i64> {
        self.expiry.get(&(okey(obj, rel), user.as_u64())).copied()
    }

    /// `Some(flagged)` when the tuple is stored.
    pub(crate) fn find(&self, obj: u32, rel: u32, user: UKey) -> Option<bool> {
        let rev = match user {
            UKey::Plain(u) => {
                let fwd = self.direct(obj, rel);
                let rev = self.rev_plain(u, rel);
                if fwd.len() <= rev.len() {
                    return find32(fwd, u).map(|i| fwd[i] & FLAG != 0);
                }
                rev
            }
            UKey::Set(uo, ur) => {
                let fwd = self.usersets(obj, rel);
                let rev = self.rev_userset(uo, ur, rel);
                if fwd.len() <= rev.len() {
                    return find64(fwd, okey(uo, ur)).map(|i| fwd[i] as u32 & FLAG != 0);
                }
                rev
            }
        };
        find32(rev, obj).map(|i| rev[i] & FLAG != 0)
    }

    /// Stores a tuple, or replaces its expiry; `true` when it is new.
    pub(crate) fn insert(
        &mut self,
        obj: u32,
        rel: u32,
        user: UKey,
        expires_at_ms: Option<i64>,
    ) -> bool {
        let k = okey(obj, rel);
        let flag = expires_at_ms.is_some();
        let existed = self.find(obj, rel, user).is_some();
        if existed {
            match user {
                UKey::Plain(u) => {
                    if let Some(v) = self.direct.get_mut(&k) {
                        set_flag32(v, u, flag);
                    }
                    if let Some(v) = self.rev_plain.get_mut(&okey(u, rel)) {
                        set_flag32(v, obj, flag);
                    }
                }
                UKey::Set(uo, ur) => {
                    if let Some(v) = self.usersets.get_mut(&k) {
                        set_flag64(v, okey(uo, ur), flag);
                    }
                    if let Some(v) = self.rev_userset.get_mut(&(okey(uo, ur), rel)) {
                        set_flag32(v, obj, flag);
                    }
                }
            }
        } else {
            let f32 = if flag { FLAG } else { 0 };
            match user {
                UKey::Plain(u) => {
                    self.direct.entry(k).or_default().push(u | f32);
                    self.rev_plain
                        .entry(okey(u, rel))
                        .or_default()
                        .push(obj | f32);
                }
                UKey::Set(uo, ur) => {
                    self.usersets.entry(k).or_default().push(okey(uo, ur | f32));
                    self.rev_userset
                        .entry((okey(uo, ur), rel))
                        .or_default()
                        .push(obj | f32);
                }
            }
            self.len += 1;
        }
        match expires_at_ms {
            Some(t) => {
                self.expiry.insert((k, user.as_u64()), t);
            }
            None => {
                if existed {
                    self.expiry.remove(&(k, user.as_u64()));
                }
            }
        }
        !existed
    }

    /// Removes a tuple; `true` when it was stored.
    pub(crate) fn remove(&mut self, obj: u32, rel: u32, user: UKey) -> bool {
        if self.find(obj, rel, user).is_none() {
            return false;
        }
        let k = okey(obj, rel);
        match user {
            UKey::Plain(u) => {
                remove_from(&mut self.direct, k, |v| find32(v, u));
                remove_from(&mut self.rev_plain, okey(u, rel), |v| find32(v, obj));
            }
            UKey::Set(uo, ur) => {
                let uk = okey(uo, ur);
                remove_from(&mut self.usersets, k, |v| find64(v, uk));
                remove_from(&mut self.rev_userset, (uk, rel), |v| find32(v, obj));
            }
        }
        self.expiry.remove(&(k, user.as_u64()));
        self.len -= 1;
        true
    }

    /// Every stored tuple as `(object, relation, user, flagged)`.
    fn for_each(&self, mut f: impl FnMut(u32, u32, UKey, bool)) {
        for (&k, users) in &self.direct {
            let (obj, rel, _) = split(k);
            for &u in users {
                f(obj, rel, UKey::Plain(u & !FLAG), u & FLAG != 0);
            }
        }
        for (&k, users) in &self.usersets {
            let (obj, rel, _) = split(k);
            for &u in users {
                let (uo, ur, flag) = split(u);
                f(obj, rel, UKey::Set(uo, ur), flag);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        let vecs: usize = self
            .direct
            .values()
            .chain(self.rev_plain.values())
            .chain(self.rev_userset.values())
            .filter(|v| v.spilled())
            .map(|v| v.capacity() * 4)
            .sum::<usize>()
            + self
                .usersets
                .values()
                .filter(|v| v.spilled())
                .map(|v| v.capacity() * 8)
                .sum::<usize>();
        vecs + table_bytes(self.direct.capacity(), 32)
            + table_bytes(self.usersets.capacity(), 32)
            + table_bytes(self.rev_plain.capacity(), 32)
            + table_bytes(self.rev_userset.capacity(), 40)
            + table_bytes(self.expiry.capacity(), 24)
    }
}

/// The interned names of a graph or overlay.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interned {
    pub(crate) types: Names,
    pub(crate) rels: Names,
    pub(crate) objects: Objects,
}

impl Interned {
    fn heap_bytes(&self) -> usize {
        self.types.heap_bytes() + self.rels.heap_bytes() + self.objects.heap_bytes()
    }
}

/// Which tuples [`Graph::read`] returns; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadFilter {
    /// Only objects of this type.
    pub object_type: Option<String>,
    /// Only this object (its type then need not be given again).
    pub object: Option<ObjectRef>,
    /// Only this relation.
    pub relation: Option<String>,
    /// Only this user (object, wildcard or userset, matched exactly).
    pub user: Option<User>,
}

/// The in-memory relationship graph: every stored tuple, indexed both ways, at a revision.
///
/// It knows no model: tuples are validated against a [`crate::Model`] before they are
/// written (see [`validate_write`]), and queries ignore tuples the current model would refuse,
/// as OpenFGA does.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    revision: u64,
    pub(crate) names: Interned,
    pub(crate) index: Index,
}

impl Graph {
    /// An empty graph at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a graph from tuples already loaded (e.g. from the store at start-up).
    /// A tuple given twice keeps the last expiry.
    pub fn from_tuples(
        revision: u64,
        tuples: impl IntoIterator<Item = Tuple>,
    ) -> Result<Self, RebacError> {
        let mut g = Graph::new();
        for t in tuples {
            g.insert(t)?;
        }
        g.revision = revision;
        Ok(g)
    }

    /// The revision of the last [`apply`](Graph::apply) (or construction).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Number of stored tuples, expired ones included.
    pub fn len(&self) -> usize {
        self.index.len
    }

    /// Whether no tuple is stored.
    pub fn is_empty(&self) -> bool {
        self.index.len == 0
    }

    fn intern_key(&mut self, key: &TupleKey) -> Result<(u32, u32, UKey), RebacError> {
        let n = &mut self.names;
        let ot = n.types.intern(key.object().object_type())?;
        let obj = n.objects.intern(ot, key.object().id())?;
        let rel = n.rels.intern(key.relation())?;
        let user = match key.user() {
            User::Object(o) => {
                let t = n.types.intern(o.object_type())?;
                UKey::Plain(n.objects.intern(t, o.id())?)
            }
            User::Wildcard(t) => {
                let t = n.types.intern(t)?;
                UKey::Plain(n.objects.intern(t, "*")?)
            }
            User::Userset { object, relation } => {
                let t = n.types.intern(object.object_type())?;
                let o = n.objects.intern(t, object.id())?;
                UKey::Set(o, n.rels.intern(relation)?)
            }
        };
        Ok((obj, rel, user))
    }

    pub(crate) fn lookup_key(&self, key: &TupleKey) -> Option<(u32, u32, UKey)> {
        let n = &self.names;
        let ot = n.types.get(key.object().object_type())?;
        let obj = n.objects.get(ot, key.object().id())?;
        let rel = n.rels.get(key.relation())?;
        let user = match key.user() {
            User::Object(o) => UKey::Plain(n.objects.get(n.types.get(o.object_type())?, o.id())?),
            User::Wildcard(t) => UKey::Plain(n.objects.get(n.types.get(t)?, "*")?),
            User::Userset { object, relation } => UKey::Set(
                n.objects
                    .get(n.types.get(object.object_type())?, object.id())?,
                n.rels.get(relation)?,
            ),
        };
        Some((obj, rel, user))
    }

    /// Stores a tuple (or replaces the expiry of the stored one); `Ok(true)` when it is new.
    /// Fails only when the graph is full (2^31 objects).
    pub fn insert(&mut self, tuple: Tuple) -> Result<bool, RebacError> {
        let (obj, rel, user) = self.intern_key(&tuple.key)?;
        Ok(self.index.insert(obj, rel, user, tuple.expires_at_ms))
    }

    /// Removes a tuple; `true` when it was stored.
    pub fn remove(&mut self, key: &TupleKey) -> bool {
        match self.lookup_key(key) {
            Some((obj, rel, user)) => self.index.remove(obj, rel, user),
            None => false,
        }
    }

    /// Whether the tuple is stored and not expired at `now_ms`.
    pub fn contains(&self, key: &TupleKey, now_ms: i64) -> bool {
        self.get(key)
            .is_some_and(|expires| expires.is_none_or(|t| now_ms < t))
    }

    /// `Some(expires_at_ms)` when the tuple is stored (expired or not).
    pub fn get(&self, key: &TupleKey) -> Option<Option<i64>> {
        let (obj, rel, user) = self.lookup_key(key)?;
        let flagged = self.index.find(obj, rel, user)?;
        Some(if flagged {
            self.index.expiry(obj, rel, user)
        } else {
            None
        })
    }

    /// Applies a committed batch: deletes, then writes, then sets the revision. The batch
    /// should have passed [`validate_write`]; here a write of a stored tuple replaces its expiry
    /// and a delete of a missing one does nothing.
    pub fn apply(
        &mut self,
        revision: u64,
        writes: impl IntoIterator<Item = Tuple>,
        deletes: impl IntoIterator<Item = TupleKey>,
    ) -> Result<(), RebacError> {
        for d in deletes {
            self.remove(&d);
        }
        for w in writes {
            self.insert(w)?;
        }
        self.revision = revision;
        Ok(())
    }

    pub(crate) fn object_ref(&self, obj: u32) -> Option<ObjectRef> {
        let n = &self.names;
        let t = n.types.name(n.objects.type_of(obj)?)?;
        ObjectRef::new(t, n.objects.id_str(obj)).ok()
    }

    pub(crate) fn user_of(&self, user: UKey) -> Option<User> {
        let n = &self.names;
        match user {
            UKey::Plain(o) => {
                if n.objects.id_str(o) == "*" {
                    let t = n.types.name(n.objects.type_of(o)?)?;
                    Some(User::Wildcard(t.to_owned()))
                } else {
                    Some(User::Object(self.object_ref(o)?))
                }
            }
            UKey::Set(o, r) => Some(User::Userset {
                object: self.object_ref(o)?,
                relation: n.rels.name(r)?.to_owned(),
            }),
        }
    }

    fn tuple_of(&self, obj: u32, rel: u32, user: UKey, flagged: bool) -> Option<Tuple> {
        let key = TupleKey::new(
            self.object_ref(obj)?,
            self.names.rels.name(rel)?,
            self.user_of(user)?,
        )
        .ok()?;
        let expires_at_ms = if flagged {
            self.index.expiry(obj, rel, user)
        } else {
            None
        };
        Some(Tuple { key, expires_at_ms })
    }

    /// Every stored tuple (expired ones included), in no particular order.
    pub fn tuples(&self) -> Vec<Tuple> {
        let mut out = Vec::with_capacity(self.len());
        self.index.for_each(|obj, rel, user, flagged| {
            if let Some(t) = self.tuple_of(obj, rel, user, flagged) {
                out.push(t);
            }
        });
        out
    }

    /// The live tuples at `now_ms` that match the filter, sorted by object, relation, user
    /// (OpenFGA's Read). With an object or a user the index answers directly; with only a
    /// type or relation every tuple is scanned.
    pub fn read(&self, filter: &ReadFilter, now_ms: i64) -> Vec<Tuple> {
        let n = &self.names;
        let mut out = Vec::new();
        let mut keep = |obj: u32, rel: u32, user: UKey, flagged: bool| {
            if let Some(t) = self.tuple_of(obj, rel, user, flagged) {
                if t.is_live(now_ms) && matches(filter, &t.key) {
                    out.push(t);
                }
            }
        };
        if let Some(object) = &filter.object {
            let Some(obj) = n
                .types
                .get(object.object_type())
                .and_then(|t| n.objects.get(t, object.id()))
            else {
                return out;
            };
            let rels: Vec<u32> = match &filter.relation {
                Some(r) => n.rels.get(r).into_iter().collect(),
                None => (0..n.rels.end()).collect(),
            };
            for rel in rels {
                for &u in self.index.direct(obj, rel) {
                    keep(obj, rel, UKey::Plain(u & !FLAG), u & FLAG != 0);
                }
                for &u in self.index.usersets(obj, rel) {
                    let (uo, ur, f) = split(u);
                    keep(obj, rel, UKey::Set(uo, ur), f);
                }
            }
        } else if let Some(user) = &filter.user {
            let found = match user {
                User::Object(o) => n
                    .types
                    .get(o.object_type())
                    .and_then(|t| n.objects.get(t, o.id()))
                    .map(UKey::Plain),
                User::Wildcard(t) => n
                    .types
                    .get(t)
                    .and_then(|t| n.objects.get(t, "*"))
                    .map(UKey::Plain),
                User::Userset { object, relation } => n
                    .types
                    .get(object.object_type())
                    .and_then(|t| n.objects.get(t, object.id()))
                    .zip(n.rels.get(relation))
                    .map(|(o, r)| UKey::Set(o, r)),
            };
            if let Some(ukey) = found {
                let rels: Vec<u32> = match &filter.relation {
                    Some(r) => n.rels.get(r).into_iter().collect(),
                    None => (0..n.rels.end()).collect(),
                };
                for rel in rels {
                    let objects = match ukey {
                        UKey::Plain(u) => self.index.rev_plain(u, rel),
                        UKey::Set(o, r) => self.index.rev_userset(o, r, rel),
                    };
                    for &e in objects {
                        keep(e & !FLAG, rel, ukey, e & FLAG != 0);
                    }
                }
            }
        } else {
            self.index.for_each(&mut keep);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// An estimate of the heap bytes held by the graph (tables and vectors by capacity).
    pub fn heap_bytes(&self) -> usize {
        self.names.heap_bytes() + self.index.heap_bytes()
    }
}

/// Checks a whole write batch before it is committed, as OpenFGA's Write does: at least one
/// and at most [`MAX_TUPLES_PER_WRITE`] operations, no tuple twice in the batch, every write
/// allowed by the model ([`Model::validate_tuple`]) and not already stored (a stored tuple that
/// has expired at `now_ms` may be written again, which renews it), every delete stored.
pub fn validate_write(
    model: &Model,
    graph: &Graph,
    writes: &[Tuple],
    deletes: &[TupleKey],
    now_ms: i64,
) -> Result<(), RebacError> {
    if writes.is_empty() && deletes.is_empty() {
        return Err(RebacError::validation(
            "a write must contain at least one tuple to write or delete",
        ));
    }
    let count = writes.len() + deletes.len();
    if count > MAX_TUPLES_PER_WRITE {
        return Err(RebacError::TooManyTuples {
            count,
            limit: MAX_TUPLES_PER_WRITE,
        });
    }
    let mut seen = HashSet::with_capacity(count);
    for k in writes.iter().map(|t| &t.key).chain(deletes) {
        if !seen.insert(k) {
            return Err(RebacError::validation(format!(
                "duplicate tuple in write: `{k}`"
            )));
        }
    }
    for w in writes {
        model.validate_tuple(&w.key)?;
        if graph.contains(&w.key, now_ms) {
            return Err(RebacError::TupleExists {
                tuple: w.key.to_string(),
            });
        }
    }
    for d in deletes {
        if graph.get(d).is_none() {
            return Err(RebacError::TupleNotFound {
                tuple: d.to_string(),
            });
        }
    }
    Ok(())
}

fn matches(f: &ReadFilter, k: &TupleKey) -> bool {
    f.object_type
        .as_deref()
        .is_none_or(|t| k.object().object_type() == t)
        && f.object.as_ref().is_none_or(|o| k.object() == o)
        && f.relation.as_deref().is_none_or(|r| k.relation() == r)
        && f.user.as_ref().is_none_or(|u| k.user() == u)
}

/// The graph as a query sees it: the stored graph plus the request's contextual tuples, which
/// live in an overlay whose ids continue the graph's id space.
pub(crate) struct View<'g> {
    pub(crate) base: &'g Graph,
    pub(crate) names: Interned,
    pub(crate) overlay: Index,
}

impl<'g> View<'g> {
    pub(crate) fn new(base: &'g Graph) -> Self {
        let b = &base.names;
        View {
            base,
            names: Interned {
                types: Names::with_offset(b.types.end()),
                rels: Names::with_offset(b.rels.end()),
                objects: Objects::with_offset(b.objects.end()),
            },
            overlay: Index::default(),
        }
    }

    fn base_objects(&self) -> u32 {
        self.base.names.objects.end()
    }

    pub(crate) fn type_id(&self, name: &str) -> Option<u32> {
        self.base
            .names
            .types
            .get(name)
            .or_else(|| self.names.types.get(name))
    }

    pub(crate) fn rel_id(&self, name: &str) -> Option<u32> {
        self.base
            .names
            .rels
            .get(name)
            .or_else(|| self.names.rels.get(name))
    }

    pub(crate) fn object_id(&self, t: u32, id: &str) -> Option<u32> {
        self.base
            .names
            .objects
            .get(t, id)
            .or_else(|| self.names.objects.get(t, id))
    }

    pub(crate) fn type_name(&self, t: u32) -> &str {
        self.base
            .names
            .types
            .name(t)
            .or_else(|| self.names.types.name(t))
            .unwrap_or("")
    }

    pub(crate) fn rel_name(&self, r: u32) -> &str {
        self.base
            .names
            .rels
            .name(r)
            .or_else(|| self.names.rels.name(r))
            .unwrap_or("")
    }

    pub(crate) fn type_count(&self) -> u32 {
        self.names.types.end()
    }

    pub(crate) fn obj_type(&self, obj: u32) -> u32 {
        if obj < self.base_objects() {
            self.base.names.objects.type_of(obj)
        } else {
            self.names.objects.type_of(obj)
        }
        .unwrap_or(u32::MAX)
    }

    pub(crate) fn obj_id(&self, obj: u32) -> &str {
        if obj < self.base_objects() {
            self.base.names.objects.id_str(obj)
        } else {
            self.names.objects.id_str(obj)
        }
    }

    pub(crate) fn is_wildcard(&self, obj: u32) -> bool {
        self.obj_id(obj) == "*"
    }

    pub(crate) fn object_string(&self, obj: u32) -> String {
        format!(
            "{}:{}",
            self.type_name(self.obj_type(obj)),
            self.obj_id(obj)
        )
    }

    pub(crate) fn intern_type(&mut self, name: &str) -> Result<u32, RebacError> {
        match self.base.names.types.get(name) {
            Some(t) => Ok(t),
            None => self.names.types.intern(name),
        }
    }

    pub(crate) fn intern_rel(&mut self, name: &str) -> Result<u32, RebacError> {
        match self.base.names.rels.get(name) {
            Some(r) => Ok(r),
            None => self.names.rels.intern(name),
        }
    }

    pub(crate) fn intern_object(&mut self, t: u32, id: &str) -> Result<u32, RebacError> {
        match self.base.names.objects.get(t, id) {
            Some(o) => Ok(o),
            None => self.names.objects.intern(t, id),
        }
    }

    /// Adds a contextual tuple.
    pub(crate) fn add(&mut self, key: &TupleKey) -> Result<(), RebacError> {
        let ot = self.intern_type(key.object().object_type())?;
        let obj = self.intern_object(ot, key.object().id())?;
        let rel = self.intern_rel(key.relation())?;
        let user = match key.user() {
            User::Object(o) => {
                let t = self.intern_type(o.object_type())?;
                UKey::Plain(self.intern_object(t, o.id())?)
            }
            User::Wildcard(t) => {
                let t = self.intern_type(t)?;
                UKey::Plain(self.intern_object(t, "*")?)
            }
            User::Userset { object, relation } => {
                let t = self.intern_type(object.object_type())?;
                let o = self.intern_object(t, object.id())?;
                UKey::Set(o, self.intern_rel(relation)?)
            }
        };
        self.overlay.insert(obj, rel, user, None);
        Ok(())
    }

    fn live(&self, flagged: bool, obj: u32, rel: u32, user: UKey, now: i64) -> bool {
        !flagged
            || self
                .base
                .index
                .expiry(obj, rel, user)
                .is_none_or(|t| now < t)
    }

    /// Whether the tuple is stored (in the graph or the overlay) and live.
    pub(crate) fn has(&self, obj: u32, rel: u32, user: UKey, now: i64) -> bool {
        if let Some(flagged) = self.base.index.find(obj, rel, user) {
            if self.live(flagged, obj, rel, user, now) {
                return true;
            }
        }
        !self.overlay.is_empty() && self.overlay.find(obj, rel, user).is_some()
    }

    /// Live plain users (objects and wildcards) of `obj#rel`.
    pub(crate) fn direct(&self, obj: u32, rel: u32, now: i64) -> impl Iterator<Item = u32> + '_ {
        self.base
            .index
            .direct(obj, rel)
            .iter()
            .filter(move |&&u| self.live(u & FLAG != 0, obj, rel, UKey::Plain(u & !FLAG), now))
            .chain(self.overlay.direct(obj, rel).iter())
            .map(|&u| u & !FLAG)
    }

    /// Live userset users of `obj#rel`, as `(object, relation)`.
    pub(crate) fn usersets(
        &self,
        obj: u32,
        rel: u32,
        now: i64,
    ) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.base
            .index
            .usersets(obj, rel)
            .iter()
            .chain(self.overlay.usersets(obj, rel).iter())
            .filter_map(move |&e| {
                let (uo, ur, f) = split(e);
                self.live(f, obj, rel, UKey::Set(uo, ur), now)
                    .then_some((uo, ur))
            })
    }

    /// Live objects that have the plain user `user` by `rel`.
    pub(crate) fn rev_plain(
        &self,
        user: u32,
        rel: u32,
        now: i64,
    ) -> impl Iterator<Item = u32> + '_ {
        self.base
            .index
            .rev_plain(user, rel)
            .iter()
            .chain(self.overlay.rev_plain(user, rel).iter())
            .filter_map(move |&e| {
                let obj = e & !FLAG;
                self.live(e & FLAG != 0, obj, rel, UKey::Plain(user), now)
                    .then_some(obj)
            })
    }

    /// Live objects that have the userset `uo#ur` by `rel`.
    pub(crate) fn rev_userset(
        &self,
        uo: u32,
        ur: u32,
        rel: u32,
        now: i64,
    ) -> impl Iterator<Item = u32> + '_ {
        self.base
            .index
            .rev_userset(uo, ur, rel)
            .iter()
            .chain(self.overlay.rev_userset(uo, ur, rel).iter())
            .filter_map(move |&e| {
                let obj = e & !FLAG;
                self.live(e & FLAG != 0, obj, rel, UKey::Set(uo, ur), now)
                    .then_some(obj)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> TupleKey {
        TupleKey::parse(s).unwrap()
    }

    #[test]
    fn shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Graph>();
        assert_send_sync::<crate::Model>();
    }

    #[test]
    fn insert_remove_contains_and_expiry() {
        let mut g = Graph::new();
        assert!(g.insert(Tuple::new(key("doc:1#viewer@user:anne"))).unwrap());
        assert!(!g.insert(Tuple::new(key("doc:1#viewer@user:anne"))).unwrap());
        assert!(
            g.insert(Tuple::expiring(key("doc:1#viewer@group:eng#member"), 10))
                .unwrap()
        );
        assert!(g.insert(Tuple::new(key("doc:1#viewer@user:*"))).unwrap());
        assert_eq!(g.len(), 3);
        assert!(g.contains(&key("doc:1#viewer@user:anne"), 0));
        assert!(g.contains(&key("doc:1#viewer@group:eng#member"), 9));
        assert!(!g.contains(&key("doc:1#viewer@group:eng#member"), 10));
        assert_eq!(g.get(&key("doc:1#viewer@group:eng#member")), Some(Some(10)));
        // Re-inserting without expiry clears it.
        assert!(
            !g.insert(Tuple::new(key("doc:1#viewer@group:eng#member")))
                .unwrap()
        );
        assert!(g.contains(&key("doc:1#viewer@group:eng#member"), 10));
        assert_eq!(g.get(&key("doc:1#viewer@group:eng#member")), Some(None));
        assert!(g.remove(&key("doc:1#viewer@user:anne")));
        assert!(!g.remove(&key("doc:1#viewer@user:anne")));
        assert!(!g.remove(&key("doc:2#viewer@user:nobody")));
        assert_eq!(g.len(), 2);
        assert!(!g.contains(&key("doc:1#viewer@user:anne"), 0));
    }

    #[test]
    fn apply_sets_the_revision_and_read_filters() {
        let mut g = Graph::new();
        g.apply(
            7,
            [
                Tuple::new(key("doc:1#viewer@user:anne")),
                Tuple::new(key("doc:1#editor@user:anne")),
                Tuple::new(key("doc:2#viewer@user:beth")),
                Tuple::expiring(key("doc:3#viewer@user:anne"), 5),
                Tuple::new(key("folder:x#viewer@user:anne")),
            ],
            [],
        )
        .unwrap();
        assert_eq!(g.revision(), 7);
        let read = |f: ReadFilter, now| -> Vec<String> {
            g.read(&f, now).iter().map(|t| t.key.to_string()).collect()
        };
        assert_eq!(
            read(
                ReadFilter {
                    object: Some(ObjectRef::parse("doc:1").unwrap()),
                    ..Default::default()
                },
                0
            ),
            ["doc:1#editor@user:anne", "doc:1#viewer@user:anne"]
        );
        assert_eq!(
            read(
                ReadFilter {
                    user: Some(User::parse("user:anne").unwrap()),
                    object_type: Some("doc".into()),
                    relation: Some("viewer".into()),
                    ..Default::default()
                },
                0
            ),
            ["doc:1#viewer@user:anne", "doc:3#viewer@user:anne"]
        );
        assert_eq!(
            read(
                ReadFilter {
                    object_type: Some("doc".into()),
                    relation: Some("viewer".into()),
                    ..Default::default()
                },
                6
            ),
            ["doc:1#viewer@user:anne", "doc:2#viewer@user:beth"]
        );
        g.apply(8, [], [key("doc:1#viewer@user:anne")]).unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g.tuples().len(), 4);
    }
}
