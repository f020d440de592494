//! The Cedar policy index: evaluate only the policies whose scope can match a request.
//!
//! Cedar's authorizer evaluates every policy of a set. A request's action, principal and
//! resource, however, rule most policies out by their *scope* alone, and a policy whose scope
//! does not match a request is simply not satisfied: scope constraints (`==`, `in`, `is`)
//! never raise errors, so such a policy contributes neither a determining policy nor an
//! error. [`CedarIndex`] therefore partitions the policies, per action, into buckets, and a
//! request evaluates only the buckets that can hold a policy whose scope matches it:
//!
//! 1. **Action.** Every action of the schema gets its own partition, holding the policies
//!    whose action scope matches it: unconstrained, `action == A`, or `action in [..]` /
//!    `action in G` where `A` is a listed action or a descendant of one in the schema's
//!    action hierarchy (the same action entities the authorizer is given).
//! 2. **Bucket** within the action's partition, by the policy's most selective scope:
//!    `principal == P` → `Principal(P)`; else `resource == R` → `Resource(R)`; else
//!    `resource is T` or `resource is T in ..` → `Type(T)`; else (unconstrained, `in`, or a
//!    principal `is` scope) → every `Type(T)` bucket and the `Other` bucket. `in` constraints
//!    are *not* used as keys: they depend on the entity hierarchy, and keeping them with the
//!    unkeyed policies keeps the index exact whatever entities are supplied.
//!
//! A request `(P, A, R)` evaluates the three buckets `Principal(P)`, `Resource(R)` and
//! `Type(type of R)` (`Other` when no bucket exists for that type) of action `A`. Every policy
//! whose scope matches the request is in exactly one of them; the other policies in them are
//! unsatisfied without error.
//!
//! The candidates are evaluated the way Cedar's authorizer evaluates every policy of a set
//! (`Authorizer::is_authorized_core`): one Cedar `Evaluator` for the request, each policy's
//! condition (scope, `when` and `unless` as one expression) interpreted by it, a policy whose
//! evaluation fails skipped with the error Cedar reports for it. Only the bookkeeping is
//! Warden's: each condition is built once when the package is compiled instead of on every
//! evaluation, and no per-set response is assembled and taken apart. The decision follows
//! Cedar's rule: deny, determined by the satisfied `forbid`s, if any is satisfied; else
//! allow, determined by the satisfied `permit`s, if any is; else deny. This reproduces
//! exactly the decision, determining policies and errors of the plain authorizer over the
//! whole set — a property test (`tests/index.rs`) checks it on thousands of randomized
//! requests over large generated policy sets, errors included.

use std::collections::HashSet;
use std::sync::Arc;

// hashbrown's default hasher (foldhash): the lookups on every decision hash entity ids several
// times faster than std's SipHash. The keys come from the operator's policies, not requests.
use hashbrown::HashMap;

use cedar_policy::{
    ActionConstraint, Decision as CedarDecision, Entities, EntityUid, Policy, PolicySet,
    PrincipalConstraint, Request, ResourceConstraint, Schema,
};
use cedar_policy_core::ast::{
    self as core_ast, EntityType, EntityUID, EntityUIDEntry, Expr, Literal, ValueKind,
};
use cedar_policy_core::authorizer::AuthorizationError;
use cedar_policy_core::entities::Entities as CoreEntities;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

use crate::{Decision, Effect, PolicyError};

/// Where a policy goes within an action's partition.
enum Key {
    Principal(EntityUID),
    Resource(EntityUID),
    Type(EntityType),
    Unkeyed,
}

/// One indexed policy, ready to evaluate.
struct Candidate {
    /// Cedar's policy: its id and its slot values (none for a static policy).
    policy: core_ast::Policy,
    /// The policy's condition — its scope, `when` and `unless` clauses as one expression,
    /// exactly what Cedar's authorizer evaluates — built once here: Cedar's own
    /// `Policy::condition` assembles a fresh expression tree on every evaluation.
    condition: Expr,
    forbid: bool,
    /// The id as Warden reports it ([`policy_id`]).
    name: String,
}

type Bucket = Vec<Arc<Candidate>>;

#[derive(Default)]
struct Partition {
    principal: HashMap<EntityUID, Bucket>,
    resource: HashMap<EntityUID, Bucket>,
    /// Unkeyed policies plus those with `resource is T`.
    by_type: HashMap<EntityType, Bucket>,
    /// Unkeyed policies only, for a resource type no policy names.
    other: Bucket,
}

/// A Cedar policy set indexed by scope; [`is_authorized`](Self::is_authorized) gives exactly
/// the answer of `cedar_policy::Authorizer` over the whole set (see the [module docs](self)).
///
/// `CompiledPackage` uses it for every Cedar decision; it is public so that the index can
/// be measured and checked against the plain authorizer on prebuilt Cedar requests.
pub struct CedarIndex {
    by_action: HashMap<EntityUID, Partition>,
}

impl CedarIndex {
    /// Indexes the static policies of `policies` for the actions of `schema`.
    pub fn new(policies: &PolicySet, schema: &Schema) -> Result<Self, PolicyError> {
        let entities = schema
            .action_entities()
            .map_err(|e| PolicyError::invalid_package(format!("schema actions: {e}")))?;
        let actions: Vec<&EntityUid> = schema.actions().collect();
        let ancestors: HashMap<&EntityUid, HashSet<&EntityUid>> = actions
            .iter()
            .map(|&a| {
                let up = entities
                    .ancestors(a)
                    .map(|it| it.collect())
                    .unwrap_or_default();
                (a, up)
            })
            .collect();
        // Every type a `Type` bucket may be asked for: the schema's and those policies name.
        let mut types: HashSet<EntityType> =
            schema.entity_types().map(|t| t.as_ref().clone()).collect();
        for policy in policies.policies() {
            if let ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) =
                policy.resource_constraint()
            {
                types.insert(t.as_ref().clone());
            }
        }
        let mut by_action: HashMap<EntityUID, Partition> = HashMap::new();
        for policy in policies.policies() {
            // One candidate per policy, shared by every bucket it joins.
            let core: &core_ast::Policy = policy.as_ref();
            let candidate = Arc::new(Candidate {
                policy: core.clone(),
                condition: core.condition(),
                forbid: core.effect() == core_ast::Effect::Forbid,
                name: policy_id(core.id()),
            });
            let add = |bucket: &mut Bucket| bucket.push(Arc::clone(&candidate));
            let key = key_of(policy);
            let constraint = policy.action_constraint();
            for &action in &actions {
                let matches = match &constraint {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(a) => a == action,
                    ActionConstraint::In(list) => list.iter().any(|g| {
                        g == action || ancestors.get(action).is_some_and(|up| up.contains(g))
                    }),
                };
                if !matches {
                    continue;
                }
                let partition = by_action.entry(action.as_ref().clone()).or_default();
                match &key {
                    Key::Principal(p) => add(partition.principal.entry(p.clone()).or_default()),
                    Key::Resource(r) => add(partition.resource.entry(r.clone()).or_default()),
                    Key::Type(t) => add(partition.by_type.entry(t.clone()).or_default()),
                    Key::Unkeyed => {
                        add(&mut partition.other);
                        for t in &types {
                            add(partition.by_type.entry(t.clone()).or_default());
                        }
                    }
                }
            }
        }
        Ok(Self { by_action })
    }

    /// Decides `request` like `Authorizer::is_authorized(request, policies, entities)` over
    /// the indexed set. `entities` must hold the schema's action entities unchanged (they
    /// define the action hierarchy the index was built from); any other entities are fine.
    /// Policy ids are those of the indexed set. A request with an unknown (partial-evaluation)
    /// component is denied.
    pub fn is_authorized(&self, request: &Request, entities: &Entities) -> Decision {
        self.decide(request.as_ref().clone(), entities.as_ref())
    }

    /// [`is_authorized`](Self::is_authorized) on Cedar's core types.
    pub(crate) fn decide(
        &self,
        request: cedar_policy_core::ast::Request,
        entities: &CoreEntities,
    ) -> Decision {
        let (
            EntityUIDEntry::Known {
                euid: principal, ..
            },
            EntityUIDEntry::Known { euid: action, .. },
            EntityUIDEntry::Known { euid: resource, .. },
        ) = (request.principal(), request.action(), request.resource())
        else {
            return Decision {
                effect: Effect::Deny,
                determining: Vec::new(),
                errors: vec!["request has an unknown component".to_owned()],
            };
        };
        let mut outcome = Outcome::default();
        let Some(partition) = self.by_action.get(action.as_ref()) else {
            return outcome.decision();
        };
        if request.context().is_none() {
            return Decision {
                effect: Effect::Deny,
                determining: Vec::new(),
                errors: vec!["request has an unknown context".to_owned()],
            };
        }
        let buckets = [
            partition.principal.get(principal.as_ref()),
            partition.resource.get(resource.as_ref()),
            Some(
                partition
                    .by_type
                    .get(resource.entity_type())
                    .unwrap_or(&partition.other),
            ),
        ];
        if buckets.iter().flatten().all(|b| b.is_empty()) {
            return outcome.decision();
        }
        // One evaluator for every candidate, as Cedar's authorizer makes one per call.
        let evaluator = Evaluator::new(request, entities, Extensions::all_available());
        for candidate in buckets.into_iter().flatten().flatten() {
            outcome.evaluate(&evaluator, candidate);
        }
        outcome.decision()
    }
}

/// What evaluating some policies found: satisfied policies and errors, as Cedar reports them.
#[derive(Default)]
pub(crate) struct Outcome {
    forbids: Vec<String>,
    permits: Vec<String>,
    errors: Vec<String>,
}

impl Outcome {
    /// Evaluates one policy as Cedar's authorizer does (`Authorizer::is_authorized_core`): a
    /// satisfied policy determines the decision by its effect, an unsatisfied one does
    /// nothing, and one whose evaluation fails is skipped with the error Cedar reports.
    fn evaluate(&mut self, evaluator: &Evaluator<'_>, candidate: &Candidate) {
        match evaluator.interpret(&candidate.condition, candidate.policy.env()) {
            Ok(value) => match value.value {
                ValueKind::Lit(Literal::Bool(true)) if candidate.forbid => {
                    self.forbids.push(candidate.name.clone());
                }
                ValueKind::Lit(Literal::Bool(true)) => self.permits.push(candidate.name.clone()),
                ValueKind::Lit(Literal::Bool(false)) => {}
                // A condition is a conjunction, which is a boolean or an error; should that
                // ever change, the policy is skipped with an error, never counted.
                _ => self.errors.push(format!(
                    "while evaluating policy `{}`: its condition is not a boolean",
                    candidate.name
                )),
            },
            Err(error) => self.errors.push(
                cedar_policy::AuthorizationError::from(AuthorizationError::PolicyEvaluationError {
                    id: candidate.policy.id().clone(),
                    error,
                })
                .to_string(),
            ),
        }
    }

    /// Adds the response of Cedar's authorizer over a whole policy set (the unindexed path),
    /// with the policy ids and error texts `cedar_policy::Response` gives.
    pub(crate) fn absorb_core(&mut self, response: cedar_policy_core::authorizer::Response) {
        let reasons = response.diagnostics.reason.iter().map(policy_id);
        match response.decision {
            CedarDecision::Allow => self.permits.extend(reasons),
            CedarDecision::Deny => self.forbids.extend(reasons),
        }
        self.errors.extend(
            response
                .diagnostics
                .errors
                .into_iter()
                .map(|e| cedar_policy::AuthorizationError::from(e).to_string()),
        );
    }

    /// Cedar's combination rule, with sorted ids and errors.
    pub(crate) fn decision(self) -> Decision {
        let Outcome {
            forbids,
            permits,
            mut errors,
        } = self;
        errors.sort();
        let (effect, mut determining) = if !forbids.is_empty() {
            (Effect::Deny, forbids)
        } else if !permits.is_empty() {
            (Effect::Allow, permits)
        } else {
            (Effect::Deny, Vec::new())
        };
        determining.sort();
        Decision {
            effect,
            determining,
            errors,
        }
    }
}

/// A policy id as `cedar_policy::PolicyId` displays it (`str::escape_debug`), without the
/// formatting machinery for the ids that need no escaping — nearly all.
fn policy_id(id: &cedar_policy_core::ast::PolicyID) -> String {
    let text: &str = id.as_ref();
    if text
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'\\' | b'"' | b'\''))
    {
        text.to_owned()
    } else {
        id.to_string()
    }
}

fn key_of(policy: &Policy) -> Key {
    if let PrincipalConstraint::Eq(p) = policy.principal_constraint() {
        return Key::Principal(p.as_ref().clone());
    }
    match policy.resource_constraint() {
        ResourceConstraint::Eq(r) => Key::Resource(r.as_ref().clone()),
        ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => Key::Type(t.as_ref().clone()),
        ResourceConstraint::Any | ResourceConstraint::In(_) => Key::Unkeyed,
    }
}

#[cfg(test)]
mod tests {
    use cedar_policy_core::ast::PolicyID;

    use super::policy_id;

    #[test]
    fn policy_ids_read_as_cedar_displays_them() {
        for id in [
            "policy0",
            "generic-12",
            "allow_coder.write@v2",
            "with space",
            "quote\"d",
            "back\\slash",
            "it's",
            "tab\there",
            "new\nline",
            "ünïcode",
            "😀",
            "",
        ] {
            let id = PolicyID::from_string(id);
            assert_eq!(policy_id(&id), id.to_string(), "{id:?}");
        }
    }
}
