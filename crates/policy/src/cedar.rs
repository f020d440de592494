//! Cedar packages: parsing, strict validation against the schema, and decisions.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use cedar_policy::{
    Context as CedarContext, Entities, EntityTypeName, PolicyId, PolicySet, RestrictedExpression,
    Schema, ValidationMode, Validator,
};
use cedar_policy_core::ast::{
    self, Eid, EntityType, EntityUID, EntityUIDEntry, Literal, Value as CedarValue, ValueKind,
};
use cedar_policy_core::authorizer::Authorizer as CoreAuthorizer;
use cedar_policy_core::extensions::Extensions;
use cedar_policy_core::validator::ValidatorEntityTypeKind;
use serde_json::Value;

use crate::index::{CedarIndex, Outcome};
use crate::request::Attributes;
use crate::{Context, Decision, Diagnostic, PolicyError, Request, diag};

/// The entity type of every principal: `Agent::"<SPIFFE ID>"`.
pub(crate) const PRINCIPAL_TYPE: &str = "Agent";
/// The entity type of every action: `Action::"<action>"`.
pub(crate) const ACTION_TYPE: &str = "Action";

/// Whether to go through the index or hand every policy to the authorizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Evaluation {
    Indexed,
    Full,
}

pub(crate) struct CedarPackage {
    schema: Schema,
    /// The schema's action entities: the action hierarchy `action in` consults.
    entities: Entities,
    policies: PolicySet,
    index: CedarIndex,
    authorizer: CoreAuthorizer,
    principal_type: EntityType,
    /// The schema's entity types by name, so a request's resource type is looked up, not
    /// parsed.
    entity_types: HashMap<String, EntityType>,
    /// The schema's actions by id.
    actions: HashMap<String, Arc<EntityUID>>,
    /// Enumerated entity types: whether a request naming one is valid depends on its id, so
    /// such requests are always validated in full.
    enumerated: HashSet<EntityType>,
    /// What each action's context declares of the parts Warden fills in selectively.
    shape: ContextShape,
    /// Request shapes Cedar's request validation has accepted (see [`request_shape`]). Hashed
    /// with hashbrown's default hasher (foldhash, seeded per process), several times faster
    /// than SipHash on these keys of a few hundred bytes; there are at most `MAX_SHAPES`.
    valid_shapes: RwLock<hashbrown::HashSet<String>>,
}

/// How many accepted request shapes a package remembers; past it, requests of a new shape are
/// validated in full every time (the first `MAX_SHAPES` stay remembered).
const MAX_SHAPES: usize = 4_096;

impl CedarPackage {
    /// Compiles sorted `(name, text)` files.
    pub(crate) fn compile(files: &[(&str, &str)]) -> Result<(Self, Vec<Diagnostic>), PolicyError> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut schema_files = Vec::new();
        let mut policy_files = Vec::new();
        for &(name, text) in files {
            if name.ends_with(".cedarschema") {
                schema_files.push((name, text));
            } else if name.ends_with(".cedar") {
                policy_files.push((name, text));
            } else {
                errors.push(Diagnostic::in_file(
                    name,
                    "a Cedar package holds only `.cedar` policy files and one `.cedarschema` file",
                ));
            }
        }
        let shape = match schema_files.as_slice() {
            [(_, text)] => context_shape(text),
            _ => ContextShape::default(),
        };
        let schema = match schema_files.as_slice() {
            [(name, text)] => match Schema::from_cedarschema_str(text) {
                Ok((schema, schema_warnings)) => {
                    for w in schema_warnings {
                        diag::push_miette(&mut warnings, name, text, &w);
                    }
                    Some(schema)
                }
                Err(e) => {
                    diag::push_miette(&mut errors, name, text, &e);
                    None
                }
            },
            [] => {
                errors.push(Diagnostic::general(
                    "a Cedar package needs exactly one `.cedarschema` file; it has none",
                ));
                None
            }
            more => {
                errors.push(Diagnostic::general(format!(
                    "a Cedar package needs exactly one `.cedarschema` file; it has {}",
                    more.len()
                )));
                None
            }
        };

        // Parse every file, numbering policies across the package in file then source order.
        let mut policies = PolicySet::new();
        let mut origin: HashMap<String, (&str, &str)> = HashMap::new();
        let mut next = 0usize;
        for &(name, text) in &policy_files {
            let parsed = match PolicySet::from_str(text) {
                Ok(p) => p,
                Err(e) => {
                    for err in e.iter() {
                        diag::push_miette(&mut errors, name, text, err);
                    }
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                errors.push(Diagnostic::in_file(
                    name,
                    "policy templates are not supported; write static policies",
                ));
                continue;
            }
            let count = parsed.num_of_policies();
            for policy in parsed.policies() {
                // The parser names a file's policies `policy0`, `policy1`, … in source order.
                let position = policy
                    .id()
                    .to_string()
                    .strip_prefix("policy")
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                let id = match policy.annotation("id") {
                    Some(id) => id.to_owned(),
                    None => format!("policy{}", next + position),
                };
                if origin.insert(id.clone(), (name, text)).is_some() {
                    errors.push(Diagnostic::in_file(
                        name,
                        format!("policy id `{id}` is used twice in the package"),
                    ));
                    continue;
                }
                if let Err(e) = policies.add(policy.new_id(PolicyId::new(&id))) {
                    errors.push(Diagnostic::in_file(name, e.to_string()));
                }
            }
            next += count;
        }

        let Some(schema) = schema else {
            return Err(PolicyError::InvalidPackage {
                diagnostics: errors,
            });
        };
        if errors.is_empty() {
            let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
            for e in result.validation_errors() {
                let (file, text) = origin
                    .get(&e.policy_id().to_string())
                    .copied()
                    .unwrap_or(("", ""));
                diag::push_miette(&mut errors, file, text, e);
            }
            for w in result.validation_warnings() {
                let (file, text) = origin
                    .get(&w.policy_id().to_string())
                    .copied()
                    .unwrap_or(("", ""));
                diag::push_miette(&mut warnings, file, text, w);
            }
        }
        if !errors.is_empty() {
            return Err(PolicyError::InvalidPackage {
                diagnostics: errors,
            });
        }

        let entities = schema
            .action_entities()
            .map_err(|e| PolicyError::invalid_package(format!("schema actions: {e}")))?;
        let index = CedarIndex::new(&policies, &schema)?;
        let principal_type = entity_type(PRINCIPAL_TYPE)?.as_ref().clone();
        let action_type = entity_type(ACTION_TYPE)?;
        let entity_types = schema
            .entity_types()
            .map(|t| (t.to_string(), t.as_ref().clone()))
            .collect();
        let actions = schema
            .actions()
            .filter(|a| *a.type_name() == action_type)
            .map(|a| (a.id().unescaped().to_owned(), Arc::new(a.as_ref().clone())))
            .collect();
        let enumerated = schema
            .entity_types()
            .map(|t| t.as_ref())
            .filter(|t| {
                schema
                    .as_ref()
                    .get_entity_type(t)
                    .is_some_and(|v| matches!(v.kind, ValidatorEntityTypeKind::Enum(_)))
            })
            .cloned()
            .collect();
        Ok((
            Self {
                schema,
                entities,
                policies,
                index,
                authorizer: CoreAuthorizer::new(),
                principal_type,
                entity_types,
                actions,
                enumerated,
                shape,
                valid_shapes: RwLock::new(hashbrown::HashSet::new()),
            },
            warnings,
        ))
    }

    /// Whether the context of `action` declares `relations`.
    pub(crate) fn wants_relations(&self, action: &str) -> bool {
        self.shape.relation_actions.contains(action)
    }

    /// The agent's task as `action`'s context declares it: none when the context has no
    /// `task`, and only the declared task attributes (all of them for an open record). A
    /// strict schema would otherwise refuse the whole request over an attribute it does not
    /// know — an operator's task attributes are for the packages that use them.
    pub(crate) fn fit_task(&self, action: &str, task: Option<crate::Task>) -> Option<crate::Task> {
        let mut task = task?;
        match self.shape.task_attributes.get(action) {
            None | Some(None) => None,
            Some(Some(None)) => Some(task),
            Some(Some(Some(declared))) => {
                task.attributes.retain(|k, _| declared.contains(k));
                Some(task)
            }
        }
    }

    /// Decides `request`, whose context has been checked against the limits.
    pub(crate) fn decide(
        &self,
        request: &Request,
        evaluation: Evaluation,
    ) -> Result<Decision, PolicyError> {
        let Some(action) = self.actions.get(&request.action) else {
            return Err(invalid(format!(
                "action `{}` is not declared in the schema",
                request.action
            )));
        };
        let Some(resource_type) = self.entity_types.get(&request.resource.kind) else {
            return Err(invalid(format!(
                "resource type `{}` is not declared in the schema",
                request.resource.kind
            )));
        };
        let principal = EntityUID::from_components(
            self.principal_type.clone(),
            Eid::new(request.principal.as_str()),
            None,
        );
        let resource = EntityUID::from_components(
            resource_type.clone(),
            Eid::new(request.resource.id.as_str()),
            None,
        );
        let context = cedar_context(
            &request.context,
            self.shape.relation_actions.contains(&request.action),
        )?;
        let cedar_request = self.validated(
            principal,
            action,
            (resource, &request.resource.kind),
            context,
        )?;

        Ok(match evaluation {
            Evaluation::Indexed => self.index.decide(cedar_request, self.entities.as_ref()),
            Evaluation::Full => {
                let mut outcome = Outcome::default();
                outcome.absorb_core(self.authorizer.is_authorized(
                    cedar_request,
                    self.policies.as_ref(),
                    self.entities.as_ref(),
                ));
                outcome.decision()
            }
        })
    }

    /// The Cedar request, validated against the schema: the principal and resource types
    /// apply to the action, and the context has exactly the declared attributes and types.
    ///
    /// Cedar's validation depends only on the request's *shape* — action, principal and
    /// resource types, and the type structure of the context ([`request_shape`]) — unless an
    /// entity type is enumerated or the context holds an entity reference (never, as Warden
    /// builds it). Once Cedar has accepted a shape, a request of the same shape is valid too
    /// and is not validated again; every other request goes through Cedar's validator.
    fn validated(
        &self,
        principal: EntityUID,
        action: &Arc<EntityUID>,
        (resource, resource_kind): (EntityUID, &str),
        context: ast::Context,
    ) -> Result<ast::Request, PolicyError> {
        let shape = (!self.enumerated.contains(principal.entity_type())
            && !self.enumerated.contains(resource.entity_type()))
        .then(|| request_shape(action.eid().as_ref(), resource_kind, &context))
        .flatten();
        let known = shape.as_ref().is_some_and(|shape| {
            self.valid_shapes
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(shape)
        });
        if known {
            return Ok(ast::Request::new_unchecked(
                EntityUIDEntry::known(principal, None),
                EntityUIDEntry::Known {
                    euid: Arc::clone(action),
                    loc: None,
                },
                EntityUIDEntry::known(resource, None),
                Some(context),
            ));
        }
        let request = ast::Request::new(
            (principal, None),
            (EntityUID::clone(action), None),
            (resource, None),
            context,
            Some(self.schema.as_ref()),
            Extensions::all_available(),
        )
        .map_err(|e| invalid(e.to_string()))?;
        if let Some(shape) = shape {
            let mut shapes = self
                .valid_shapes
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if shapes.len() < MAX_SHAPES {
                shapes.insert(shape);
            }
        }
        Ok(request)
    }
}

/// The shape of a request as far as Cedar's request validation can tell requests apart: the
/// action, the resource type (the principal type is always `Agent`) and the context's type
/// structure — which attributes each record has and the type of every value, with a set
/// described by the distinct shapes of its elements. `None` when the context holds an entity
/// reference, whose validity may depend on its id.
fn request_shape(action: &str, resource: &str, context: &ast::Context) -> Option<String> {
    let ast::Context::Value(attributes) = context else {
        return None;
    };
    let mut out = String::with_capacity(256);
    push_name(&mut out, action);
    push_name(&mut out, resource);
    record_shape(attributes.iter(), &mut out).then_some(out)
}

/// Appends `name` length-prefixed (`5:hello`), so that no name can imitate the notation.
/// (Without `write!`, whose formatting machinery cost more than the rest of the shape.)
fn push_name(out: &mut String, name: &str) {
    let mut digits = [b'0'; 20];
    let mut n = name.len();
    let mut at = digits.len();
    while let Some(slot) = at.checked_sub(1).and_then(|i| digits.get_mut(i)) {
        *slot = b'0' + u8::try_from(n % 10).unwrap_or(0);
        at -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in digits.get(at..).unwrap_or_default() {
        out.push(char::from(digit));
    }
    out.push(':');
    out.push_str(name);
}

fn record_shape<'a, K: AsRef<str> + 'a>(
    attributes: impl Iterator<Item = (&'a K, &'a CedarValue)>,
    out: &mut String,
) -> bool {
    out.push('{');
    for (name, value) in attributes {
        push_name(out, name.as_ref());
        out.push('=');
        if !value_shape(value, out) {
            return false;
        }
        out.push(',');
    }
    out.push('}');
    true
}

fn value_shape(value: &CedarValue, out: &mut String) -> bool {
    match &value.value {
        ValueKind::Lit(Literal::Bool(_)) => out.push('b'),
        ValueKind::Lit(Literal::Long(_)) => out.push('l'),
        ValueKind::Lit(Literal::String(_)) => out.push('s'),
        ValueKind::Lit(Literal::EntityUID(_)) => return false,
        ValueKind::ExtensionValue(v) => {
            out.push('x');
            // An unqualified name (`decimal`, `ipaddr`, ...) as it is, without formatting;
            // a qualified one holds `::`, which no unqualified name does.
            let name = v.typename();
            if name.is_unqualified() {
                push_name(out, name.basename().as_ref());
            } else {
                push_name(out, &name.to_string());
            }
        }
        ValueKind::Set(set) => {
            // Literals of each kind, then the other elements' distinct shapes, sorted.
            let (mut bools, mut longs, mut strings) = (false, false, false);
            let mut others: Vec<String> = Vec::new();
            for element in set.iter() {
                match &element.value {
                    ValueKind::Lit(Literal::Bool(_)) => bools = true,
                    ValueKind::Lit(Literal::Long(_)) => longs = true,
                    ValueKind::Lit(Literal::String(_)) => strings = true,
                    _ => {
                        let mut shape = String::new();
                        if !value_shape(element, &mut shape) {
                            return false;
                        }
                        others.push(shape);
                    }
                }
            }
            others.sort_unstable();
            others.dedup();
            out.push('[');
            for (present, kind) in [(bools, "b,"), (longs, "l,"), (strings, "s,")] {
                if present {
                    out.push_str(kind);
                }
            }
            for shape in others {
                out.push_str(&shape);
                out.push(',');
            }
            out.push(']');
        }
        ValueKind::Record(attributes) => return record_shape(attributes.iter(), out),
    }
    true
}

/// The Cedar context for `context`: the same record as its JSON form, with `risk_score` a
/// `decimal` and `delegation` a set. Built as Cedar's values directly, the way Cedar's own
/// evaluator builds them from a record expression (`Context::from_pairs` evaluates every
/// attribute expression, several times the cost); the tests below check the result equals
/// the context Cedar parses from the JSON form.
fn cedar_context(context: &Context, with_relations: bool) -> Result<ast::Context, PolicyError> {
    let string = |s: &str| CedarValue::from(s);
    let mut pairs: Vec<(&str, CedarValue)> = Vec::with_capacity(8);
    pairs.push((
        "agent",
        CedarValue::record(
            [
                ("kind", string(&context.agent.kind)),
                ("owner", string(&context.agent.owner)),
                (
                    "attributes",
                    attributes(&context.agent.attributes, &|| "agent.attributes".to_owned())?,
                ),
            ],
            None,
        ),
    ));
    pairs.push(("risk_score", decimal(context.risk_score)?));
    pairs.push(("hold", CedarValue::from(context.hold)));
    pairs.push((
        "delegation",
        CedarValue::set(
            context.delegation.iter().map(|id| string(id.as_str())),
            None,
        ),
    ));
    pairs.push(("time", CedarValue::from(context.time)));
    pairs.push((
        "request",
        attributes(&context.request, &|| "request".to_owned())?,
    ));
    if with_relations {
        pairs.push((
            "relations",
            CedarValue::set(context.relations.iter().map(|r| string(r)), None),
        ));
    }
    if let Some(task) = &context.task {
        pairs.push((
            "task",
            CedarValue::record(
                [
                    ("id", string(&task.id)),
                    ("type", string(&task.kind)),
                    (
                        "attributes",
                        attributes(&task.attributes, &|| "task.attributes".to_owned())?,
                    ),
                ],
                None,
            ),
        ));
    }
    match CedarValue::record(pairs, None).value {
        ValueKind::Record(record) => Ok(ast::Context::Value(record)),
        _ => Err(invalid("context: not a record".to_owned())),
    }
}

/// The Cedar `decimal` for a risk score, as Cedar's evaluator makes it from
/// `decimal("0.2500")`. That evaluation parses the name `decimal` and the literal (several
/// microseconds); a score has only 10,001 values, so each is made once and cloned (a clone
/// shares its parts).
fn decimal(score: crate::RiskScore) -> Result<CedarValue, PolicyError> {
    static CACHE: [OnceLock<Option<CedarValue>>; 10_001] = [const { OnceLock::new() }; 10_001];
    let build = || {
        let expression = RestrictedExpression::new_decimal(score.to_cedar_decimal());
        let context = CedarContext::from_pairs([("d".to_owned(), expression)]).ok()?;
        match context.as_ref() {
            ast::Context::Value(record) => record.get("d").cloned(),
            ast::Context::RestrictedResidual(_) => None,
        }
    };
    let value = match CACHE.get(usize::from(score.ten_thousandths())) {
        Some(cell) => cell.get_or_init(build).clone(),
        // INVARIANT: a RiskScore is at most 10,000; built directly should that ever change.
        None => build(),
    };
    value.ok_or_else(|| invalid(format!("risk score {score} is no Cedar decimal")))
}

/// The record for an attribute map at `path` (e.g. `agent.attributes`), named in errors only.
fn attributes(map: &Attributes, path: &dyn Fn() -> String) -> Result<CedarValue, PolicyError> {
    let pairs = map
        .iter()
        .map(|(k, v)| Ok((k.as_str(), json_value(v, &|| format!("{}.{k}", path()))?)))
        .collect::<Result<Vec<_>, PolicyError>>()?;
    Ok(CedarValue::record(pairs, None))
}

/// A plain JSON value as a Cedar value: strings, booleans, integers, arrays (as sets) and
/// objects (as records). Recursion is bounded by the context depth limit, checked first.
fn json_value(value: &Value, path: &dyn Fn() -> String) -> Result<CedarValue, PolicyError> {
    Ok(match value {
        Value::String(s) => CedarValue::from(s.as_str()),
        Value::Bool(b) => CedarValue::from(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => CedarValue::from(i),
            None => {
                return Err(invalid(format!(
                    "context attribute `{}`: `{n}` is not a 64-bit integer, and Cedar has no other numbers",
                    path()
                )));
            }
        },
        Value::Array(items) => CedarValue::set(
            items
                .iter()
                .map(|v| json_value(v, path))
                .collect::<Result<Vec<_>, _>>()?,
            None,
        ),
        Value::Object(map) => attributes(map, path)?,
        Value::Null => {
            return Err(invalid(format!(
                "context attribute `{}` is null, which Cedar has no value for",
                path()
            )));
        }
    })
}

/// The actions (ids) whose context record declares an attribute `relations`, read from the
/// schema's JSON form (following a common-type reference). Empty if the schema does not
/// parse; compilation reports that.
/// Follows references to common types: `{"type": "Ctx"}` or
/// `{"type": "EntityOrCommon", "name": "Ctx"}`.
fn resolve<'a>(
    common: &'a serde_json::Value,
    mut ty: &'a serde_json::Value,
) -> &'a serde_json::Value {
    for _ in 0..8 {
        let name = match ty["type"].as_str() {
            Some("EntityOrCommon") => ty["name"].as_str(),
            Some("Record") | None => None,
            Some(other) => Some(other),
        };
        match name.map(|n| &common[n]) {
            Some(next) if !next.is_null() => ty = next,
            _ => break,
        }
    }
    ty
}

/// What the schema says about each action's context, for the parts Warden fills in only as
/// far as the schema declares them.
#[derive(Debug, Default, Clone)]
pub(crate) struct ContextShape {
    /// Actions whose context declares `relations`.
    pub(crate) relation_actions: HashSet<String>,
    /// Per action: `None` when its context declares no `task`; else the task attributes it
    /// declares (`None` inside: any, the record is open).
    pub(crate) task_attributes: std::collections::HashMap<String, Option<Option<HashSet<String>>>>,
}

fn context_shape(schema_text: &str) -> ContextShape {
    let mut out = ContextShape::default();
    let Ok((fragment, _)) = cedar_policy::SchemaFragment::from_cedarschema_str(schema_text) else {
        return out;
    };
    let Ok(json) = fragment.to_json_value() else {
        return out;
    };
    let Some(namespaces) = json.as_object() else {
        return out;
    };
    for namespace in namespaces.values() {
        let common = &namespace["commonTypes"];
        let Some(actions) = namespace["actions"].as_object() else {
            continue;
        };
        for (id, action) in actions {
            let context = resolve(common, &action["appliesTo"]["context"]);
            if context["attributes"].get("relations").is_some() {
                out.relation_actions.insert(id.clone());
            }
            let task = match context["attributes"].get("task") {
                None => None,
                Some(task) => {
                    let task = resolve(common, task);
                    let attrs = resolve(common, &task["attributes"]["attributes"]);
                    if attrs["additionalAttributes"].as_bool() == Some(true) {
                        Some(None)
                    } else {
                        Some(Some(
                            attrs["attributes"]
                                .as_object()
                                .map(|o| o.keys().cloned().collect())
                                .unwrap_or_default(),
                        ))
                    }
                }
            };
            out.task_attributes.insert(id.clone(), task);
        }
    }
    out
}

fn entity_type(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name)
        .map_err(|e| PolicyError::invalid_package(format!("entity type `{name}`: {e}")))
}

fn invalid(reason: String) -> PolicyError {
    PolicyError::InvalidRequest { reason }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use identity::SpiffeId;
    use serde_json::json;

    use super::*;
    use crate::{Agent, RiskScore, Task};

    /// The context built directly equals the one Cedar parses from the context's JSON form
    /// (with the risk score as Cedar's `decimal` escape), attribute by attribute.
    #[test]
    fn context_values_equal_cedars_own_parse() {
        let planner = SpiffeId::parse("spiffe://example.org/agent/planner").unwrap();
        let object = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let base = Context {
            agent: Agent {
                kind: "coder".into(),
                owner: "platform".into(),
                attributes: object(json!({ "team": "red", "level": 3 })),
            },
            task: None,
            risk_score: RiskScore::ZERO,
            hold: false,
            delegation: Vec::new(),
            time: 0,
            request: Attributes::new(),
            relations: Vec::new(),
        };
        let cases = [
            base.clone(),
            Context {
                task: Some(Task {
                    id: "t-1".into(),
                    kind: "patch_bug".into(),
                    attributes: object(json!({ "ticket": "BUG-42", "labels": ["a", "b", "a"] })),
                }),
                risk_score: RiskScore::from_f64(0.4999).unwrap(),
                hold: true,
                delegation: vec![planner.clone(), planner],
                time: -1_767_225_600,
                request: object(json!({
                    "nested": { "deep": [[1, 2], [], [true]], "empty": {} },
                    "unicode \"key\"": "ünï😀",
                    "min": i64::MIN,
                })),
                relations: vec!["writer".into(), "reader".into()],
                ..base.clone()
            },
            Context {
                risk_score: RiskScore::MAX,
                ..base
            },
        ];
        for (i, context) in cases.iter().enumerate() {
            for with_relations in [false, true] {
                let built = cedar_context(context, with_relations).unwrap();
                let mut json = serde_json::to_value(context).unwrap();
                json["risk_score"] = json!({
                    "__extn": { "fn": "decimal", "arg": context.risk_score.to_cedar_decimal() }
                });
                if !with_relations {
                    if let Some(map) = json.as_object_mut() {
                        map.remove("relations");
                    }
                } else if context.relations.is_empty() {
                    json["relations"] = json!([]);
                }
                let parsed = CedarContext::from_json_value(json, None).unwrap();
                assert_eq!(
                    &built,
                    parsed.as_ref(),
                    "case {i}, relations {with_relations}"
                );
            }
        }
    }

    #[test]
    fn a_bad_attribute_is_named_by_its_path() {
        let context = Context {
            agent: Agent {
                kind: "coder".into(),
                owner: "platform".into(),
                attributes: json!({ "nested": { "n": 1.5 } })
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
            task: None,
            risk_score: RiskScore::ZERO,
            hold: false,
            delegation: Vec::new(),
            time: 0,
            request: json!({ "gone": null }).as_object().cloned().unwrap(),
            relations: Vec::new(),
        };
        let err = cedar_context(&context, false).unwrap_err().to_string();
        assert!(err.contains("`agent.attributes.nested.n`"), "{err}");
    }
}
