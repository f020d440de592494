//! The semantic rules OpenFGA applies when a model is written (`WriteAuthorizationModel`):
//! `openfga/openfga` `pkg/typesystem/typesystem.go` `NewAndValidate`, ported rule by rule and
//! in the same order (types, then relations, each sorted by name), so the first error reported
//! is the one OpenFGA reports.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::error::RebacError;
use crate::model::{RelationDefinition, Rewrite, TypeDefinition, TypeRestriction};
use crate::tuple::check_relation_name;

/// Most types one model may define (OpenFGA's `maxTypesPerAuthorizationModel` default).
pub const MAX_TYPES_PER_MODEL: usize = 100;

struct Lookup<'a> {
    types: HashMap<&'a str, &'a TypeDefinition>,
}

impl<'a> Lookup<'a> {
    fn relation(&self, type_name: &str, relation: &str) -> Option<&'a RelationDefinition> {
        self.types
            .get(type_name)
            .and_then(|t| t.relations.iter().find(|r| r.name == relation))
    }

    fn has_type(&self, type_name: &str) -> bool {
        self.types.contains_key(type_name)
    }
}

fn invalid_relation(t: &TypeDefinition, r: &RelationDefinition, cause: &str) -> RebacError {
    RebacError::model(
        r.position,
        format!(
            "the definition of relation `{}` in type `{}` is invalid: {cause}",
            r.name, t.name
        ),
    )
}

/// Checks every rule; `Ok` means OpenFGA would accept the model.
pub(crate) fn validate(schema_version: &str, types: &[TypeDefinition]) -> Result<(), RebacError> {
    if schema_version != "1.1" {
        return Err(RebacError::model(
            None,
            format!("invalid schema version `{schema_version}`: only `1.1` is supported"),
        ));
    }
    if types.is_empty() {
        return Err(RebacError::model(
            None,
            "a model must define at least one type",
        ));
    }
    if types.len() > MAX_TYPES_PER_MODEL {
        return Err(RebacError::model(
            None,
            format!(
                "a model may define at most {MAX_TYPES_PER_MODEL} types, this one defines {}",
                types.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for t in types {
        if !seen.insert(t.name.as_str()) {
            return Err(RebacError::model(
                t.position,
                format!(
                    "an authorization model cannot contain duplicate types: `{}` is defined twice",
                    t.name
                ),
            ));
        }
    }
    for t in types {
        validate_names(t)?;
    }
    let lookup = Lookup {
        types: types.iter().map(|t| (t.name.as_str(), t)).collect(),
    };
    let mut sorted: Vec<&TypeDefinition> = types.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for t in sorted {
        let mut relations: Vec<&RelationDefinition> = t.relations.iter().collect();
        relations.sort_by(|a, b| a.name.cmp(&b.name));
        for r in relations {
            validate_relation(&lookup, t, r)?;
        }
    }
    Ok(())
}

fn validate_names(t: &TypeDefinition) -> Result<(), RebacError> {
    let n = t.name.chars().count();
    if n == 0
        || n > 254
        || t.name
            .chars()
            .any(|c| matches!(c, ':' | '#' | '@' | ' ' | '\t' | '\n' | '\r' | '\x0c'))
    {
        return Err(RebacError::model(
            t.position,
            format!(
                "type name `{}` is invalid: it must be 1 to 254 characters without `:`, `#`, `@` \
                 or whitespace",
                t.name
            ),
        ));
    }
    if t.name == "self" || t.name == "this" {
        return Err(RebacError::model(
            t.position,
            format!(
                "the definition of type `{}` is invalid: self and this are reserved keywords",
                t.name
            ),
        ));
    }
    for r in &t.relations {
        if let Err(reason) = check_relation_name(&r.name) {
            return Err(RebacError::model(
                r.position,
                format!("relation name `{}` is invalid: {reason}", r.name),
            ));
        }
        if r.name == "self" || r.name == "this" {
            return Err(invalid_relation(
                t,
                r,
                "self and this are reserved keywords",
            ));
        }
    }
    Ok(())
}

fn validate_relation(
    lookup: &Lookup<'_>,
    t: &TypeDefinition,
    r: &RelationDefinition,
) -> Result<(), RebacError> {
    rewrite_valid(lookup, t, r, &r.rewrite)?;
    type_restrictions_valid(lookup, t, r)?;
    let (has, looped) = has_entrypoints(lookup, r, &t.name, &r.name, &r.rewrite, &Visited::new())?;
    if !has {
        let cause = if looped {
            "potential loop"
        } else {
            "no entrypoints defined"
        };
        return Err(invalid_relation(t, r, cause));
    }
    let mut path = vec![r.name.clone()];
    if has_cycle(lookup, r, &t.name, &r.rewrite, &mut path)? {
        return Err(invalid_relation(
            t,
            r,
            "an authorization model cannot contain a cycle",
        ));
    }
    Ok(())
}

/// `isUsersetRewriteValid`.
fn rewrite_valid(
    lookup: &Lookup<'_>,
    t: &TypeDefinition,
    r: &RelationDefinition,
    rewrite: &Rewrite,
) -> Result<(), RebacError> {
    let undefined = |relation: &str| {
        RebacError::model(
            r.position,
            format!(
                "relation `{}#{relation}` is undefined (used by `{}#{}`)",
                t.name, t.name, r.name
            ),
        )
    };
    match rewrite {
        Rewrite::This => {}
        Rewrite::Computed(c) => {
            if *c == r.name {
                return Err(invalid_relation(
                    t,
                    r,
                    &format!("invalid userset rewrite definition (`{c}` refers to itself)"),
                ));
            }
            if lookup.relation(&t.name, c).is_none() {
                return Err(undefined(c));
            }
        }
        Rewrite::TupleToUserset { tupleset, computed } => {
            let ts = lookup
                .relation(&t.name, tupleset)
                .ok_or_else(|| undefined(tupleset))?;
            if ts.rewrite != Rewrite::This {
                return Err(RebacError::model(
                    r.position,
                    format!(
                        "the `{}#{tupleset}` relation is referenced in at least one tupleset and \
                         thus must be a direct relation",
                        t.name
                    ),
                ));
            }
            let found = ts
                .directly_related_user_types
                .iter()
                .any(|rr| lookup.relation(rr.type_name(), computed).is_some());
            if !found {
                let types: Vec<String> = ts
                    .directly_related_user_types
                    .iter()
                    .map(|rr| format!("`{rr}`"))
                    .collect();
                return Err(RebacError::model(
                    r.position,
                    format!(
                        "undefined relation: `{computed}` (in `{computed} from {tupleset}` of \
                         `{}#{}`) does not appear as a relation in any of the directly related \
                         user types [{}]",
                        t.name,
                        r.name,
                        types.join(", ")
                    ),
                ));
            }
        }
        Rewrite::Union(children) | Rewrite::Intersection(children) => {
            if children.is_empty() {
                return Err(invalid_relation(t, r, "a set operation needs operands"));
            }
            for c in children {
                rewrite_valid(lookup, t, r, c)?;
            }
        }
        Rewrite::Difference { base, subtract } => {
            rewrite_valid(lookup, t, r, base)?;
            rewrite_valid(lookup, t, r, subtract)?;
        }
    }
    Ok(())
}

fn contains_this(rewrite: &Rewrite) -> bool {
    match rewrite {
        Rewrite::This => true,
        Rewrite::Computed(_) | Rewrite::TupleToUserset { .. } => false,
        Rewrite::Union(c) | Rewrite::Intersection(c) => c.iter().any(contains_this),
        Rewrite::Difference { base, subtract } => contains_this(base) || contains_this(subtract),
    }
}

fn is_tupleset(t: &TypeDefinition, relation: &str) -> bool {
    fn walk(rw: &Rewrite, relation: &str) -> bool {
        match rw {
            Rewrite::TupleToUserset { tupleset, .. } => tupleset == relation,
            Rewrite::Union(c) | Rewrite::Intersection(c) => c.iter().any(|c| walk(c, relation)),
            Rewrite::Difference { base, subtract } => {
                walk(base, relation) || walk(subtract, relation)
            }
            Rewrite::This | Rewrite::Computed(_) => false,
        }
    }
    t.relations.iter().any(|r| walk(&r.rewrite, relation))
}

/// `validateTypeRestrictions`.
fn type_restrictions_valid(
    lookup: &Lookup<'_>,
    t: &TypeDefinition,
    r: &RelationDefinition,
) -> Result<(), RebacError> {
    let assignable = contains_this(&r.rewrite);
    let related = &r.directly_related_user_types;
    if assignable && related.is_empty() {
        return Err(RebacError::model(
            r.position,
            format!(
                "the assignable relation `{}` in type `{}` must contain at least one relation type",
                r.name, t.name
            ),
        ));
    }
    if !assignable && !related.is_empty() {
        return Err(RebacError::model(
            r.position,
            format!(
                "the non-assignable relation `{}` in type `{}` should not contain a relation type",
                r.name, t.name
            ),
        ));
    }
    let invalid = |rr: &TypeRestriction| {
        RebacError::model(
            r.position,
            format!(
                "the relation type `{rr}` on `{}` in type `{}` is not valid",
                r.name, t.name
            ),
        )
    };
    for rr in related {
        if !lookup.has_type(rr.type_name()) {
            return Err(invalid(rr));
        }
        match rr {
            TypeRestriction::Type(_) => {}
            TypeRestriction::Wildcard(_) => {
                if is_tupleset(t, &r.name) {
                    return Err(invalid(rr));
                }
            }
            TypeRestriction::Userset {
                type_name,
                relation,
            } => {
                if is_tupleset(t, &r.name) || lookup.relation(type_name, relation).is_none() {
                    return Err(invalid(rr));
                }
            }
        }
    }
    Ok(())
}

/// Go's `map[string]map[string]bool`, where cloning the outer map shares the inner ones
/// (`maps.Clone` is shallow). `hasEntrypoints` relies on that sharing, so it is kept.
#[derive(Clone, Default)]
struct Visited(HashMap<String, Rc<RefCell<HashMap<String, bool>>>>);

impl Visited {
    fn new() -> Self {
        Self::default()
    }

    fn get(&self, t: &str, r: &str) -> Option<bool> {
        self.0.get(t).and_then(|m| m.borrow().get(r).copied())
    }

    fn set_shared(&mut self, t: &str, r: &str, value: bool) {
        match self.0.get(t) {
            Some(m) => {
                m.borrow_mut().insert(r.to_owned(), value);
            }
            None => {
                let m = HashMap::from([(r.to_owned(), value)]);
                self.0.insert(t.to_owned(), Rc::new(RefCell::new(m)));
            }
        }
    }
}

/// `hasEntrypoints`: whether some path through the rewrite reaches a concrete type (a direct
/// type or wildcard), and whether the walk looped back onto itself.
fn has_entrypoints(
    lookup: &Lookup<'_>,
    origin: &RelationDefinition,
    type_name: &str,
    relation_name: &str,
    rewrite: &Rewrite,
    visited: &Visited,
) -> Result<(bool, bool), RebacError> {
    let mut v = visited.clone();
    v.set_shared(type_name, relation_name, false);
    let undefined = |t: &str, r: &str| {
        RebacError::model(
            origin.position,
            format!("undefined type definition for `{t}#{r}`"),
        )
    };
    let relation = lookup
        .relation(type_name, relation_name)
        .ok_or_else(|| undefined(type_name, relation_name))?;
    match rewrite {
        Rewrite::This => {
            for rr in &relation.directly_related_user_types {
                let (t, r) = match rr {
                    TypeRestriction::Type(_) | TypeRestriction::Wildcard(_) => {
                        v.set_shared(type_name, relation_name, true);
                        return Ok((true, false));
                    }
                    TypeRestriction::Userset {
                        type_name,
                        relation,
                    } => (type_name, relation),
                };
                let assignable = lookup.relation(t, r).ok_or_else(|| undefined(t, r))?;
                if v.get(t, r).is_some() {
                    continue;
                }
                let (has, _) = has_entrypoints(lookup, origin, t, r, &assignable.rewrite, &v)?;
                if has {
                    return Ok((true, false));
                }
            }
            Ok((false, false))
        }
        Rewrite::Computed(c) => {
            let computed = lookup
                .relation(type_name, c)
                .ok_or_else(|| undefined(type_name, c))?;
            if let Some(has) = v.get(type_name, c) {
                return Ok((has, true));
            }
            has_entrypoints(lookup, origin, type_name, c, &computed.rewrite, &v)
        }
        Rewrite::TupleToUserset { tupleset, computed } => {
            let ts = lookup
                .relation(type_name, tupleset)
                .ok_or_else(|| undefined(type_name, tupleset))?;
            for rr in &ts.directly_related_user_types {
                let t = rr.type_name();
                if let Some(target) = lookup.relation(t, computed) {
                    if let Some(has) = v.get(t, computed) {
                        if has {
                            return Ok((true, false));
                        }
                        continue;
                    }
                    let (has, _) =
                        has_entrypoints(lookup, origin, t, computed, &target.rewrite, &v)?;
                    if has {
                        return Ok((true, false));
                    }
                }
            }
            Ok((false, false))
        }
        Rewrite::Union(children) => {
            let mut looped = false;
            for c in children {
                let (has, l) =
                    has_entrypoints(lookup, origin, type_name, relation_name, c, visited)?;
                if has {
                    return Ok((true, false));
                }
                looped |= l;
            }
            Ok((false, looped))
        }
        Rewrite::Intersection(children) => {
            for c in children {
                let (has, l) =
                    has_entrypoints(lookup, origin, type_name, relation_name, c, visited)?;
                if !has {
                    return Ok((false, l));
                }
            }
            Ok((true, false))
        }
        Rewrite::Difference { base, subtract } => {
            for c in [base, subtract] {
                let (has, l) =
                    has_entrypoints(lookup, origin, type_name, relation_name, c, visited)?;
                if !has {
                    return Ok((false, l));
                }
            }
            Ok((true, false))
        }
    }
}

/// `hasCycle`: whether computed usersets (within the type, through set operations) lead back
/// to a relation already on the path.
fn has_cycle(
    lookup: &Lookup<'_>,
    origin: &RelationDefinition,
    type_name: &str,
    rewrite: &Rewrite,
    path: &mut Vec<String>,
) -> Result<bool, RebacError> {
    match rewrite {
        Rewrite::This | Rewrite::TupleToUserset { .. } => Ok(false),
        Rewrite::Computed(c) => {
            if path.iter().any(|p| p == c) {
                return Ok(true);
            }
            let next = lookup.relation(type_name, c).ok_or_else(|| {
                RebacError::model(
                    origin.position,
                    format!("relation `{type_name}#{c}` is undefined"),
                )
            })?;
            path.push(c.clone());
            let found = has_cycle(lookup, origin, type_name, &next.rewrite, path);
            path.pop();
            found
        }
        Rewrite::Union(children) | Rewrite::Intersection(children) => {
            for c in children {
                if has_cycle(lookup, origin, type_name, c, path)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Rewrite::Difference { base, subtract } => {
            Ok(has_cycle(lookup, origin, type_name, base, path)?
                || has_cycle(lookup, origin, type_name, subtract, path)?)
        }
    }
}
