//! The seed example (`examples/policies/coder`): the same rows through Cedar and Rego.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use identity::SpiffeId;
use policy::{
    Agent, Attributes, CompiledPackage, Context, Effect, Language, Limits, PackageSource, Request,
    Resource, RiskScore, Task,
};

const CEDAR: &str = include_str!("../../../examples/policies/coder/coder.cedar");
const SCHEMA: &str = include_str!("../../../examples/policies/coder/coder.cedarschema");
const REGO: &str = include_str!("../../../examples/policies/coder/coder.rego");

const CODER: &str = "spiffe://example.org/agent/coder";
const REVIEWER: &str = "spiffe://example.org/agent/reviewer";

fn cedar() -> CompiledPackage {
    CompiledPackage::compile(&PackageSource {
        language: Language::Cedar,
        files: vec![
            ("coder.cedar".into(), CEDAR.into()),
            ("coder.cedarschema".into(), SCHEMA.into()),
        ],
        entrypoint: None,
    })
    .unwrap()
}

fn rego() -> CompiledPackage {
    CompiledPackage::compile(&PackageSource {
        language: Language::Rego,
        files: vec![("coder.rego".into(), REGO.into())],
        entrypoint: None,
    })
    .unwrap()
}

fn request(principal: &str, action: &str, task: Option<&str>, risk: f64, hold: bool) -> Request {
    Request {
        principal: SpiffeId::parse(principal).unwrap(),
        action: action.into(),
        resource: Resource {
            kind: "Repository".into(),
            id: "warden".into(),
        },
        context: Context {
            agent: Agent {
                kind: "coder".into(),
                owner: "platform-team".into(),
                attributes: Attributes::new(),
            },
            task: task.map(|t| Task {
                id: "task-1".into(),
                kind: t.into(),
                attributes: Attributes::new(),
            }),
            risk_score: RiskScore::from_f64(risk).unwrap(),
            hold,
            delegation: vec![SpiffeId::parse("spiffe://example.org/agent/planner").unwrap()],
            time: 1_767_225_600,
            request: Attributes::new(),
            relations: Vec::new(),
        },
    }
}

/// (row, principal, action, task type, risk, hold, effect, Cedar determining policies)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    f64,
    bool,
    Effect,
    &'static [&'static str],
);

#[test]
fn seed_rows_decide_the_same_in_cedar_and_rego() {
    use Effect::{Allow, Deny};
    let cedar = cedar();
    let rego = rego();
    assert_eq!(rego.entrypoint(), Some("data.warden.coder.allow"));
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("patch_bug, low risk", CODER, "write", Some("patch_bug"), 0.2, false, Allow, &["coder-write-while-patching"]),
        ("risk just below 0.5", CODER, "write", Some("patch_bug"), 0.4999, false, Allow, &["coder-write-while-patching"]),
        ("risk exactly 0.5", CODER, "write", Some("patch_bug"), 0.5, false, Deny, &[]),
        ("risk 0.7", CODER, "write", Some("patch_bug"), 0.7, false, Deny, &[]),
        ("other task", CODER, "write", Some("refactor"), 0.2, false, Deny, &[]),
        ("no task", CODER, "write", None, 0.2, false, Deny, &[]),
        ("another agent", REVIEWER, "write", Some("patch_bug"), 0.2, false, Deny, &[]),
        ("on hold", CODER, "write", Some("patch_bug"), 0.2, true, Deny, &["hold-denies-everything"]),
        // Nothing grants reads in the seed: a declared action with no permit is a plain deny
        // (an undeclared action is an invalid request instead, see tests/bad_input.rs).
        ("read, no task", CODER, "read", None, 0.0, false, Deny, &[]),
        ("read, patching", CODER, "read", Some("patch_bug"), 0.0, false, Deny, &[]),
    ];
    for &(row, principal, action, task, risk, hold, effect, determining) in rows {
        let req = request(principal, action, task, risk, hold);
        let limits = Limits::default();
        let c = cedar.decide(&req, &limits).unwrap();
        assert_eq!(c.effect, effect, "cedar: {row}");
        assert_eq!(c.determining, determining, "cedar: {row}");
        assert!(c.errors.is_empty(), "cedar: {row}: {:?}", c.errors);
        assert_eq!(
            cedar.decide_unindexed(&req, &limits).unwrap(),
            c,
            "cedar unindexed: {row}"
        );

        let r = rego.decide(&req, &limits).unwrap();
        assert_eq!(r.effect, effect, "rego: {row}");
        assert!(r.errors.is_empty(), "rego: {row}: {:?}", r.errors);
        let expected: &[&str] = if effect == Allow {
            &["data.warden.coder.allow"]
        } else {
            &[]
        };
        assert_eq!(r.determining, expected, "rego: {row}");
    }
}

#[test]
fn the_seed_package_hashes_are_stable_under_file_order() {
    let forward = PackageSource {
        language: Language::Cedar,
        files: vec![
            ("coder.cedar".into(), CEDAR.into()),
            ("coder.cedarschema".into(), SCHEMA.into()),
        ],
        entrypoint: None,
    };
    let mut backward = forward.clone();
    backward.files.reverse();
    let a = CompiledPackage::compile(&forward).unwrap();
    let b = CompiledPackage::compile(&backward).unwrap();
    assert_eq!(a.content_hash(), b.content_hash());
    assert_ne!(a.content_hash(), rego().content_hash());
    assert!(a.warnings().is_empty(), "{:?}", a.warnings());
}

/// OPA's data API over the seed: rules by path, with the input as sent.
#[test]
fn rego_rules_evaluate_by_path() {
    let rego = rego();
    let cedar = cedar();
    let limits = Limits::default();
    for (path, defined) in [
        ("data.warden.coder.allow", true),
        ("data.warden.coder.coder", true),
        ("data.warden.coder", false),
        ("data.warden.coder.deny", false),
    ] {
        assert_eq!(rego.defines(path), defined, "{path}");
        assert!(!cedar.defines(path), "{path}");
    }
    let input =
        serde_json::to_value(request(CODER, "write", Some("patch_bug"), 0.2, false)).unwrap();
    assert_eq!(
        rego.eval_rule("data.warden.coder.allow", input.clone(), &limits)
            .unwrap(),
        Some(serde_json::json!(true))
    );
    assert_eq!(
        rego.eval_rule("data.warden.coder.coder", serde_json::json!({}), &limits)
            .unwrap(),
        Some(serde_json::json!(CODER))
    );
    for (package, path) in [
        (&rego, "data.warden.coder.deny"),
        (&cedar, "data.warden.coder.allow"),
    ] {
        assert!(
            matches!(
                package.eval_rule(path, input.clone(), &limits),
                Err(policy::PolicyError::InvalidRequest { .. })
            ),
            "{path}"
        );
    }
    let mut deep = serde_json::json!(1);
    for _ in 0..20 {
        deep = serde_json::json!([deep]);
    }
    assert!(matches!(
        rego.eval_rule("data.warden.coder.allow", deep, &limits),
        Err(policy::PolicyError::ContextTooDeep { limit: 16 })
    ));
}

/// A task's attributes reach a Cedar package only as far as the action's context declares
/// them, and a context without `task` gets none: an operator's task attributes for one
/// package must not make another package's strict schema refuse every request.
#[test]
fn task_attributes_fit_each_schema() {
    let task = || Task {
        id: "task-1".into(),
        kind: "patch_bug".into(),
        attributes: serde_json::json!({"branch": "fix-1", "ticket": 7})
            .as_object()
            .cloned()
            .unwrap(),
    };
    // The seed schema declares `task?` with a closed, empty attributes record.
    let seed = cedar();
    let fitted = seed.fit_task("write", Some(task())).unwrap();
    assert!(fitted.attributes.is_empty());
    assert_eq!(fitted.kind, "patch_bug");
    let mut req = request(CODER, "write", Some("patch_bug"), 0.2, false);
    req.context.task = Some(task());
    assert!(
        seed.decide(&req, &Limits::default()).is_err(),
        "undeclared attributes are invalid"
    );
    req.context.task = seed.fit_task("write", Some(task()));
    assert!(seed.decide(&req, &Limits::default()).unwrap().is_allowed());

    // A schema declaring `branch` keeps it; one whose context has no task drops the task.
    let schema = "entity Agent; entity Repository;
        action write appliesTo { principal: [Agent], resource: [Repository], context: {
          task?: { id: String, \"type\": String, attributes: { branch: String } } } };
        action read appliesTo { principal: [Agent], resource: [Repository], context: {} };";
    let pkg = CompiledPackage::compile(&PackageSource {
        language: Language::Cedar,
        files: vec![
            (
                "p.cedar".into(),
                "permit (principal, action, resource);".into(),
            ),
            ("p.cedarschema".into(), schema.into()),
        ],
        entrypoint: None,
    })
    .unwrap();
    let fitted = pkg.fit_task("write", Some(task())).unwrap();
    assert_eq!(
        fitted.attributes.keys().collect::<Vec<_>>(),
        ["branch"],
        "only the declared attribute"
    );
    assert!(pkg.fit_task("read", Some(task())).is_none());
    // Rego sees everything.
    assert_eq!(
        rego()
            .fit_task("write", Some(task()))
            .unwrap()
            .attributes
            .len(),
        2
    );
}
