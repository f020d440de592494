//! Cedar packages: parsing, strict validation against the schema, and decisions.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context as CedarContext, Entities, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request as CedarRequest, RestrictedExpression, Schema, ValidationMode, Validator,
};
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
    authorizer: Authorizer,
    principal_type: EntityTypeName,
    action_type: EntityTypeName,
    /// The schema's entity types by name, so a request's resource type is looked up, not
    /// parsed.
    entity_types: HashMap<String, EntityTypeName>,
    /// The schema's action ids.
    actions: HashSet<String>,
    /// What each action's context declares of the parts Warden fills in selectively.
    shape: ContextShape,
}

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
        let principal_type = entity_type(PRINCIPAL_TYPE)?;
        let action_type = entity_type(ACTION_TYPE)?;
        let entity_types = schema
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();
        let actions = schema
            .actions()
            .filter(|a| *a.type_name() == action_type)
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        Ok((
            Self {
                schema,
                entities,
                policies,
                index,
                authorizer: Authorizer::new(),
                principal_type,
                action_type,
                entity_types,
                actions,
                shape,
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
        if !self.actions.contains(&request.action) {
            return Err(invalid(format!(
                "action `{}` is not declared in the schema",
                request.action
            )));
        }
        let Some(resource_type) = self.entity_types.get(&request.resource.kind) else {
            return Err(invalid(format!(
                "resource type `{}` is not declared in the schema",
                request.resource.kind
            )));
        };
        let principal = EntityUid::from_type_name_and_id(
            self.principal_type.clone(),
            EntityId::new(request.principal.as_str()),
        );
        let action = EntityUid::from_type_name_and_id(
            self.action_type.clone(),
            EntityId::new(&request.action),
        );
        let resource = EntityUid::from_type_name_and_id(
            resource_type.clone(),
            EntityId::new(&request.resource.id),
        );
        // Validating against the schema checks that the principal and resource types apply
        // to the action and that the context has exactly the declared attributes and types.
        let cedar_request = CedarRequest::new(
            principal,
            action,
            resource,
            cedar_context(
                &request.context,
                self.shape.relation_actions.contains(&request.action),
            )?,
            Some(&self.schema),
        )
        .map_err(|e| invalid(e.to_string()))?;

        Ok(match evaluation {
            Evaluation::Indexed => self.index.is_authorized(&cedar_request, &self.entities),
            Evaluation::Full => {
                let mut outcome = Outcome::default();
                outcome.absorb(&self.authorizer.is_authorized(
                    &cedar_request,
                    &self.policies,
                    &self.entities,
                ));
                outcome.decision()
            }
        })
    }
}

/// The Cedar context for `context`: the same record as its JSON form, with `risk_score` a
/// `decimal` and `delegation` a set. Built directly rather than through Cedar's JSON parser,
/// which costs several times more.
fn cedar_context(context: &Context, with_relations: bool) -> Result<CedarContext, PolicyError> {
    let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
    let mut pairs = vec![
        (
            "agent".to_owned(),
            record(vec![
                ("kind".to_owned(), string(&context.agent.kind)),
                ("owner".to_owned(), string(&context.agent.owner)),
                (
                    "attributes".to_owned(),
                    attributes(&context.agent.attributes, "agent.attributes")?,
                ),
            ])?,
        ),
        ("risk_score".to_owned(), decimal(context.risk_score)),
        (
            "hold".to_owned(),
            RestrictedExpression::new_bool(context.hold),
        ),
        (
            "delegation".to_owned(),
            RestrictedExpression::new_set(context.delegation.iter().map(|id| string(id.as_str()))),
        ),
        (
            "time".to_owned(),
            RestrictedExpression::new_long(context.time),
        ),
        (
            "request".to_owned(),
            attributes(&context.request, "request")?,
        ),
    ];
    if with_relations {
        pairs.push((
            "relations".to_owned(),
            RestrictedExpression::new_set(context.relations.iter().map(|r| string(r))),
        ));
    }
    if let Some(task) = &context.task {
        pairs.push((
            "task".to_owned(),
            record(vec![
                ("id".to_owned(), string(&task.id)),
                ("type".to_owned(), string(&task.kind)),
                (
                    "attributes".to_owned(),
                    attributes(&task.attributes, "task.attributes")?,
                ),
            ])?,
        ));
    }
    CedarContext::from_pairs(pairs).map_err(|e| invalid(format!("context: {e}")))
}

/// The Cedar `decimal` for a risk score. `RestrictedExpression::new_decimal` runs Cedar's
/// parser on the name `decimal` at every call (several microseconds, most of a context's
/// cost); a score has only 10,001 values, so each expression is built once and cloned (a
/// clone shares its parts).
fn decimal(score: crate::RiskScore) -> RestrictedExpression {
    static CACHE: [std::sync::OnceLock<RestrictedExpression>; 10_001] =
        [const { std::sync::OnceLock::new() }; 10_001];
    let build = || RestrictedExpression::new_decimal(score.to_cedar_decimal());
    match CACHE.get(usize::from(score.ten_thousandths())) {
        Some(cell) => cell.get_or_init(build).clone(),
        // INVARIANT: a RiskScore is at most 10,000; built directly should that ever change.
        None => build(),
    }
}

fn record(pairs: Vec<(String, RestrictedExpression)>) -> Result<RestrictedExpression, PolicyError> {
    RestrictedExpression::new_record(pairs).map_err(|e| invalid(format!("context: {e}")))
}

fn attributes(map: &Attributes, path: &str) -> Result<RestrictedExpression, PolicyError> {
    let pairs = map
        .iter()
        .map(|(k, v)| Ok((k.clone(), json_value(v, &format!("{path}.{k}"))?)))
        .collect::<Result<Vec<_>, PolicyError>>()?;
    record(pairs)
}

/// A plain JSON value as a Cedar value: strings, booleans, integers, arrays (as sets) and
/// objects (as records). Recursion is bounded by the context depth limit, checked first.
fn json_value(value: &Value, path: &str) -> Result<RestrictedExpression, PolicyError> {
    Ok(match value {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => {
                return Err(invalid(format!(
                    "context attribute `{path}`: `{n}` is not a 64-bit integer, and Cedar has no other numbers"
                )));
            }
        },
        Value::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .map(|v| json_value(v, path))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Object(map) => attributes(map, path)?,
        Value::Null => {
            return Err(invalid(format!(
                "context attribute `{path}` is null, which Cedar has no value for"
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
