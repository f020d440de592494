//! Generated Cedar policy sets and requests, shared by `tests/index.rs` and `benches/pdp.rs`.
//!
//! Two mixes:
//! - [`Mix::Adversarial`] exercises the index: every scope form (`==`, `in`, `is`, `is … in`,
//!   `action in [..]`, action groups, unconstrained) in large proportions, `@id` and automatic
//!   ids, conditions over every context field, and conditions that raise evaluation errors;
//!   3 % of policies are (always conditional) `forbid`s.
//! - [`Mix::Realistic`] models a large deployment: a fixed 40 generic rules (unconstrained or
//!   `is` scopes — holds, risk ceilings, group rules) and, for the rest, grants naming one
//!   agent (`principal ==`, 80 %) or one resource (`resource ==`, 20 %), with agents and
//!   resources growing with the set (one agent and one resource per 10 policies).

#![allow(dead_code, reason = "each user takes what it needs")]

use std::fmt::Write as _;

use identity::SpiffeId;
use policy::{Agent, Attributes, Context, Request, Resource, RiskScore, Task};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

pub(crate) const ACTIONS: usize = 12;
pub(crate) const GROUPS: usize = 3;
pub(crate) const TYPES: [&str; 3] = ["Repository", "Document", "Ticket"];

/// The schema of every generated set: three resource types, twelve actions in three groups,
/// Warden's context with two request attributes.
pub(crate) fn schema() -> String {
    let mut s = String::from(
        "entity Agent;\nentity Repository;\nentity Document;\nentity Ticket;\n\
         type Ctx = {\n  agent: { kind: String, owner: String, attributes: { team?: String } },\n  \
         task?: { id: String, \"type\": String, attributes: {} },\n  risk_score: decimal,\n  \
         hold: Bool,\n  delegation: Set<String>,\n  time: Long,\n  \
         request: { level: Long, env: String },\n};\n",
    );
    for g in 0..GROUPS {
        let _ = writeln!(s, "action g{g};");
    }
    for a in 0..ACTIONS {
        let _ = writeln!(
            s,
            "action a{a} in [g{}] appliesTo {{ principal: Agent, resource: [Repository, Document, Ticket], context: Ctx }};",
            a % GROUPS
        );
    }
    s
}

/// Which distribution of policies to generate.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mix {
    Adversarial,
    Realistic,
}

pub(crate) fn agent_id(k: usize) -> String {
    format!("spiffe://example.org/agent/a{k}")
}

fn agent(k: usize) -> String {
    format!("Agent::\"{}\"", agent_id(k))
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

fn condition(rng: &mut StdRng) -> String {
    match rng.gen_range(0..11) {
        0 => format!("context.request.level > {}", rng.gen_range(-2..8)),
        1 => "context.request.env == \"prod\"".into(),
        2 => format!(
            "context.risk_score.lessThan(decimal(\"0.{}\"))",
            rng.gen_range(1..10)
        ),
        3 => "context.hold".into(),
        4 => "context has task && context.task.type == \"patch_bug\"".into(),
        5 => format!("context.time > {}", rng.gen_range(0..2_000)),
        6 => "context.delegation.contains(\"spiffe://example.org/agent/planner\")".into(),
        7 => "context.agent.kind == \"coder\"".into(),
        8 => "context.agent.attributes has team && context.agent.attributes.team == \"red\"".into(),
        // Overflows (an evaluation error) whenever level ≥ 2 or level ≤ -3.
        9 => "context.request.level * 4611686018427387904 > 0".into(),
        _ => "!context.hold && context.risk_score.greaterThanOrEqual(decimal(\"0.5\"))".into(),
    }
}

fn when(rng: &mut StdRng, none_percent: u32) -> String {
    if rng.gen_range(0..100) < none_percent {
        return String::new();
    }
    let mut c = condition(rng);
    if rng.gen_bool(0.3) {
        c = format!("{c} && {}", condition(rng));
    }
    format!(" when {{ {c} }}")
}

/// `count` policies of the given mix, as one Cedar file, from `rng`.
pub(crate) fn policies(rng: &mut StdRng, count: usize, mix: Mix) -> String {
    let mut text = String::new();
    match mix {
        Mix::Adversarial => {
            for i in 0..count {
                let annotation = if rng.gen_bool(0.3) {
                    format!("@id(\"p-{i}\")\n")
                } else {
                    String::new()
                };
                // Few forbids, always conditional, so that plenty of requests are allowed.
                let forbid = rng.gen_bool(0.03);
                let effect = if forbid { "forbid" } else { "permit" };
                let principal = match rng.gen_range(0..100) {
                    0..25 => "principal".to_owned(),
                    25..70 => format!("principal == {}", agent(rng.gen_range(0..60))),
                    70..80 => format!("principal in {}", agent(rng.gen_range(0..60))),
                    80..90 => "principal is Agent".to_owned(),
                    _ => format!("principal is Agent in {}", agent(rng.gen_range(0..60))),
                };
                let action = match rng.gen_range(0..100) {
                    0..45 => format!("action == Action::\"a{}\"", rng.gen_range(0..ACTIONS)),
                    45..60 => format!(
                        "action in [Action::\"a{}\", Action::\"a{}\"]",
                        rng.gen_range(0..ACTIONS),
                        rng.gen_range(0..ACTIONS)
                    ),
                    60..75 => format!("action in Action::\"g{}\"", rng.gen_range(0..GROUPS)),
                    _ => "action".to_owned(),
                };
                let t = *pick(rng, &TYPES);
                let r = rng.gen_range(0..40);
                let resource = match rng.gen_range(0..100) {
                    0..25 => "resource".to_owned(),
                    25..55 => format!("resource == {t}::\"r{r}\""),
                    55..80 => format!("resource is {t}"),
                    80..90 => format!("resource in {t}::\"r{r}\""),
                    _ => format!("resource is {t} in {t}::\"r{r}\""),
                };
                let _ = writeln!(
                    text,
                    "{annotation}{effect}({principal}, {action}, {resource}){};",
                    when(rng, if forbid { 0 } else { 30 })
                );
            }
        }
        Mix::Realistic => {
            let generic = 40.min(count);
            let population = (count / 10).max(1);
            for i in 0..count {
                let action = format!("action == Action::\"a{}\"", rng.gen_range(0..ACTIONS));
                let line = if i < generic {
                    let effect = if i % 4 == 0 { "forbid" } else { "permit" };
                    let resource = if i % 2 == 0 {
                        "resource".to_owned()
                    } else {
                        format!("resource is {}", pick(rng, &TYPES))
                    };
                    let action = if i % 3 == 0 {
                        format!("action in Action::\"g{}\"", i % GROUPS)
                    } else {
                        action
                    };
                    format!(
                        "@id(\"generic-{i}\")\n{effect}(principal, {action}, {resource}){};",
                        when(rng, 0)
                    )
                } else if rng.gen_bool(0.8) {
                    let resource = match rng.gen_range(0..3) {
                        0 => "resource".to_owned(),
                        1 => format!("resource is {}", pick(rng, &TYPES)),
                        _ => format!(
                            "resource == {}::\"r{}\"",
                            pick(rng, &TYPES),
                            rng.gen_range(0..population)
                        ),
                    };
                    format!(
                        "permit(principal == {}, {action}, {resource}){};",
                        agent(rng.gen_range(0..population)),
                        when(rng, 40)
                    )
                } else {
                    format!(
                        "permit(principal, {action}, resource == {}::\"r{}\"){};",
                        pick(rng, &TYPES),
                        rng.gen_range(0..population),
                        when(rng, 40)
                    )
                };
                let _ = writeln!(text, "{line}");
            }
        }
    }
    text
}

/// A random request over the generated vocabulary; agents and resources range a little past
/// those the policies name (`population`).
pub(crate) fn request(rng: &mut StdRng, population: usize) -> Request {
    let span = population + population / 5 + 1;
    let task = match rng.gen_range(0..3) {
        0 => None,
        1 => Some("patch_bug"),
        _ => Some("refactor"),
    };
    let mut agent_attributes = Attributes::new();
    if rng.gen_bool(0.5) {
        agent_attributes.insert("team".into(), json!(*pick(rng, &["red", "blue"])));
    }
    let Value::Object(request) = json!({
        "level": rng.gen_range(-3..10),
        "env": *pick(rng, &["prod", "dev"]),
    }) else {
        unreachable!("a literal object")
    };
    let risk = *pick(rng, &[0u16, 2_000, 4_999, 5_000, 7_000]);
    Request {
        principal: SpiffeId::parse(&agent_id(rng.gen_range(0..span))).unwrap(),
        action: format!("a{}", rng.gen_range(0..ACTIONS)),
        resource: Resource {
            kind: (*pick(rng, &TYPES)).to_owned(),
            id: format!("r{}", rng.gen_range(0..span)),
        },
        context: Context {
            agent: Agent {
                kind: (*pick(rng, &["coder", "reviewer"])).to_owned(),
                owner: "team".into(),
                attributes: agent_attributes,
            },
            task: task.map(|t| Task {
                id: "t".into(),
                kind: t.into(),
                attributes: Attributes::new(),
            }),
            risk_score: RiskScore::from_ten_thousandths(risk).unwrap(),
            hold: rng.gen_bool(0.1),
            delegation: if rng.gen_bool(0.5) {
                vec![SpiffeId::parse("spiffe://example.org/agent/planner").unwrap()]
            } else {
                vec![]
            },
            time: rng.gen_range(0..2_000),
            request,
            relations: Vec::new(),
        },
    }
}

/// The plain `cedar-policy` request for `r`, built from the documented mapping (principal
/// `Agent::"<id>"`, action `Action::"<action>"`, the context's JSON with `risk_score` as a
/// `decimal`), independently of the crate under test.
pub(crate) fn cedar_request(schema: &cedar_policy::Schema, r: &Request) -> cedar_policy::Request {
    use std::str::FromStr;
    let principal =
        cedar_policy::EntityUid::from_str(&format!("Agent::\"{}\"", r.principal)).unwrap();
    let action = cedar_policy::EntityUid::from_str(&format!("Action::\"{}\"", r.action)).unwrap();
    let resource =
        cedar_policy::EntityUid::from_str(&format!("{}::\"{}\"", r.resource.kind, r.resource.id))
            .unwrap();
    let mut context = serde_json::to_value(&r.context).unwrap();
    context["risk_score"] =
        json!({ "__extn": { "fn": "decimal", "arg": r.context.risk_score.to_cedar_decimal() } });
    let context = cedar_policy::Context::from_json_value(context, Some((schema, &action))).unwrap();
    cedar_policy::Request::new(principal, action, resource, context, Some(schema)).unwrap()
}
