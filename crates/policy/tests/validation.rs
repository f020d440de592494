//! Request validation: Warden accepts and refuses exactly the requests Cedar's own request
//! validation does, although it remembers the request shapes Cedar has accepted and skips
//! validating a request of a known shape again.
//!
//! Randomized contexts — attributes of every type, missing, extra, in nested records and sets,
//! mixed sets — are decided through `CompiledPackage::decide` and compared with the plain
//! `cedar-policy` path (the context parsed from its JSON without a schema, the request built
//! with `Request::new(…, Some(schema))`, the whole set authorized). Shapes repeat, so most
//! requests meet a remembered shape; an invalid shape must stay refused every time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::str::FromStr;

use cedar_policy::{Authorizer, Decision as CedarDecision, PolicySet, Schema};
use identity::SpiffeId;
use policy::{
    Agent, Attributes, CompiledPackage, Context, Effect, Language, Limits, PackageSource,
    PolicyError, Request, Resource, RiskScore, Task,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
entity Agent;
entity Repository;
entity Document;
entity Secret enum ["db", "api"];
type Ctx = {
  agent: { kind: String, owner: String, attributes: { team?: String, level?: Long } },
  task?: { id: String, "type": String, attributes: { ticket?: String } },
  risk_score: decimal,
  hold: Bool,
  delegation: Set<String>,
  time: Long,
  request: {
    level?: Long,
    env: String,
    tags?: Set<String>,
    nested?: { a: Long, b?: Set<Set<Long>> },
  },
};
action read appliesTo { principal: Agent, resource: [Repository, Document, Secret], context: Ctx };
action write appliesTo { principal: Agent, resource: [Repository], context: Ctx };
"#;

const POLICIES: &str = r#"
permit(principal, action == Action::"read", resource)
  when { context.request has level && context.request.level > 2 };
permit(principal, action, resource is Repository)
  when { context.request has tags && context.request.tags.contains("ok") };
forbid(principal, action, resource)
  when { context.request has nested && context.request.nested.a == 7 };
permit(principal, action, resource == Secret::"db")
  when { context.agent.attributes has team && context.agent.attributes.team == "red" };
permit(principal, action == Action::"write", resource)
  when { context has task && context.task.attributes has ticket };
"#;

/// A random JSON value of any type, sometimes nested.
fn any(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..if depth == 0 { 3 } else { 6 }) {
        0 => json!(rng.gen_range(0..10)),
        1 => json!(["ok", "no", "x"][rng.gen_range(0..3)]),
        2 => json!(rng.gen_bool(0.5)),
        3 => Value::Array(
            (0..rng.gen_range(0..3))
                .map(|_| any(rng, depth - 1))
                .collect(),
        ),
        4 => json!({ "a": any(rng, depth - 1) }),
        _ => json!({ "a": 7, "b": [[1, 2], [rng.gen_range(0..3)]] }),
    }
}

/// A value for `name` that is usually of its declared type, sometimes of any other.
fn attribute(rng: &mut StdRng, name: &str) -> Value {
    if rng.gen_bool(0.08) {
        return any(rng, 2);
    }
    match name {
        "level" | "n" => json!(rng.gen_range(0..6)),
        "env" | "team" | "ticket" => json!(["prod", "red", "blue"][rng.gen_range(0..3)]),
        "tags" => Value::Array(
            (0..rng.gen_range(0..3))
                .map(|_| json!(["ok", "no"][rng.gen_range(0..2)]))
                .collect(),
        ),
        _ => {
            let mut nested = json!({ "a": rng.gen_range(5..9) });
            if rng.gen_bool(0.5) {
                nested["b"] = json!([[1], [2, 3], []]);
            }
            nested
        }
    }
}

/// Attributes drawn from `names`, each present with its probability.
fn attributes(rng: &mut StdRng, names: &[(&str, f64)]) -> Attributes {
    let mut out = Attributes::new();
    for &(name, p) in names {
        if rng.gen_bool(p) {
            let value = attribute(rng, name);
            out.insert(name.to_owned(), value);
        }
    }
    out
}

fn request(rng: &mut StdRng) -> Request {
    let (kind, id) = match rng.gen_range(0..10) {
        0..4 => ("Repository", "warden"),
        4..7 => ("Document", "design"),
        7..9 => ("Secret", "db"),
        // Not one of the enumerated ids: refused whatever the shape.
        _ => ("Secret", "other"),
    };
    Request {
        principal: SpiffeId::parse(&format!(
            "spiffe://example.org/agent/a{}",
            rng.gen_range(0..3)
        ))
        .unwrap(),
        action: if rng.gen_bool(0.7) { "read" } else { "write" }.to_owned(),
        resource: Resource {
            kind: kind.to_owned(),
            id: id.to_owned(),
        },
        context: Context {
            agent: Agent {
                kind: "coder".into(),
                owner: "team".into(),
                attributes: attributes(rng, &[("team", 0.5), ("level", 0.5), ("extra", 0.05)]),
            },
            task: rng.gen_bool(0.5).then(|| Task {
                id: "t-1".into(),
                kind: "patch_bug".into(),
                attributes: attributes(rng, &[("ticket", 0.5), ("n", 0.05)]),
            }),
            risk_score: RiskScore::from_ten_thousandths(rng.gen_range(0..3) * 2_500).unwrap(),
            hold: rng.gen_bool(0.2),
            delegation: if rng.gen_bool(0.5) {
                vec![SpiffeId::parse("spiffe://example.org/agent/planner").unwrap()]
            } else {
                Vec::new()
            },
            time: 1_767_225_600,
            request: attributes(
                rng,
                &[
                    ("level", 0.5),
                    ("env", 0.95),
                    ("tags", 0.5),
                    ("nested", 0.5),
                    ("extra", 0.05),
                ],
            ),
            relations: Vec::new(),
        },
    }
}

/// The plain `cedar-policy` path: the context parsed from its JSON without a schema (so values
/// keep the types they have), the request validated by Cedar, every policy evaluated.
fn plain(schema: &Schema, set: &PolicySet, r: &Request) -> Result<(Effect, Vec<String>), String> {
    let uid = |text: String| cedar_policy::EntityUid::from_str(&text).unwrap();
    let principal = uid(format!("Agent::\"{}\"", r.principal));
    let action = uid(format!("Action::\"{}\"", r.action));
    let resource = uid(format!("{}::\"{}\"", r.resource.kind, r.resource.id));
    let mut context = serde_json::to_value(&r.context).unwrap();
    context["risk_score"] =
        json!({ "__extn": { "fn": "decimal", "arg": r.context.risk_score.to_cedar_decimal() } });
    let context =
        cedar_policy::Context::from_json_value(context, None).map_err(|e| e.to_string())?;
    let request = cedar_policy::Request::new(principal, action, resource, context, Some(schema))
        .map_err(|e| e.to_string())?;
    let entities = schema.action_entities().unwrap();
    let response = Authorizer::new().is_authorized(&request, set, &entities);
    let effect = match response.decision() {
        CedarDecision::Allow => Effect::Allow,
        CedarDecision::Deny => Effect::Deny,
    };
    let mut ids: Vec<String> = response
        .diagnostics()
        .reason()
        .map(ToString::to_string)
        .collect();
    ids.sort();
    Ok((effect, ids))
}

#[test]
fn accepts_and_refuses_exactly_what_cedar_validation_does() {
    let package = CompiledPackage::compile(&PackageSource {
        language: Language::Cedar,
        files: vec![
            ("p.cedar".into(), POLICIES.into()),
            ("p.cedarschema".into(), SCHEMA.into()),
        ],
        entrypoint: None,
    })
    .unwrap();
    let (schema, _) = Schema::from_cedarschema_str(SCHEMA).unwrap();
    let set = PolicySet::from_str(POLICIES).unwrap();
    let mut rng = StdRng::seed_from_u64(0x5a11_da7e);
    let (mut accepted, mut refused, mut allowed) = (0, 0, 0);
    for i in 0..4_000 {
        let r = request(&mut rng);
        let expected = plain(&schema, &set, &r);
        let got = package.decide(&r, &Limits::default());
        match (&got, &expected) {
            (Ok(decision), Ok((effect, ids))) => {
                assert_eq!(
                    (&decision.effect, &decision.determining),
                    (effect, ids),
                    "request {i}: {r:?}"
                );
                accepted += 1;
                if decision.is_allowed() {
                    allowed += 1;
                }
            }
            (Err(PolicyError::InvalidRequest { .. }), Err(_)) => refused += 1,
            _ => panic!("request {i}: Warden {got:?}, Cedar {expected:?}: {r:?}"),
        }
        // A request decided twice (the second time its shape is known) gets the same answer.
        let again = package.decide(&r, &Limits::default());
        assert_eq!(again.is_ok(), got.is_ok(), "request {i} again");
    }
    // Both outcomes are well represented, so the comparison means something.
    assert!(
        accepted > 400 && refused > 400,
        "accepted {accepted}, refused {refused}"
    );
    assert!(allowed > 50, "allowed {allowed}");
}
