//! Every bad-input rule: invalid packages come back with the engine's located diagnostics,
//! invalid requests are errors (never a silent deny), oversized or deep contexts are refused,
//! and a failing Rego evaluation is a deny with the reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity,
    reason = "tests; rows of tables are tuples"
)]

use std::time::Duration;

use identity::SpiffeId;
use policy::{
    Agent, Attributes, CompiledPackage, Context, Diagnostic, Effect, Language, Limits,
    PackageSource, PolicyError, Request, Resource, RiskScore,
};
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../../examples/policies/coder/coder.cedarschema");
const CEDAR: &str = include_str!("../../../examples/policies/coder/coder.cedar");
const REGO: &str = include_str!("../../../examples/policies/coder/coder.rego");

fn package(language: Language, files: &[(&str, &str)], entrypoint: Option<&str>) -> PackageSource {
    PackageSource {
        language,
        files: files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect(),
        entrypoint: entrypoint.map(str::to_owned),
    }
}

fn diagnostics(source: &PackageSource) -> Vec<Diagnostic> {
    match CompiledPackage::compile(source) {
        Err(PolicyError::InvalidPackage { diagnostics }) => {
            assert!(!diagnostics.is_empty());
            diagnostics
        }
        other => panic!("expected an invalid package, got {other:?}"),
    }
}

fn request(action: &str, resource_type: &str, request_attributes: Value) -> Request {
    let Value::Object(request) = request_attributes else {
        panic!("attributes are an object")
    };
    Request {
        principal: SpiffeId::parse("spiffe://example.org/agent/coder").unwrap(),
        action: action.into(),
        resource: Resource {
            kind: resource_type.into(),
            id: "warden".into(),
        },
        context: Context {
            agent: Agent {
                kind: "coder".into(),
                owner: "platform-team".into(),
                attributes: Attributes::new(),
            },
            task: None,
            risk_score: RiskScore::ZERO,
            hold: false,
            delegation: vec![],
            time: 0,
            request,
            relations: vec![],
        },
    }
}

fn seed(language: Language) -> CompiledPackage {
    let source = match language {
        Language::Cedar => package(
            language,
            &[("coder.cedar", CEDAR), ("coder.cedarschema", SCHEMA)],
            None,
        ),
        Language::Rego => package(language, &[("coder.rego", REGO)], None),
    };
    CompiledPackage::compile(&source).unwrap()
}

/// `(row, files, file, line, column, message fragment)`: Cedar packages that must be refused
/// with a diagnostic at that place.
#[test]
fn invalid_cedar_packages_are_located() {
    #[rustfmt::skip]
    let rows: &[(&str, &[(&str, &str)], &str, Option<u32>, Option<u32>, &str)] = &[
        (
            "policy syntax error",
            &[("p.cedar", "permit(principal, action, resource)\nwhen { context.hold && };\n"), ("s.cedarschema", SCHEMA)],
            "p.cedar", Some(2), Some(24), "unexpected token",
        ),
        (
            "schema syntax error",
            &[("p.cedar", ""), ("s.cedarschema", "entity Agent;\nentity Repository\naction read;\n")],
            "s.cedarschema", Some(3), Some(1), "unexpected token",
        ),
        (
            "unknown context attribute (strict validation)",
            &[("p.cedar", "// a comment\npermit(principal, action, resource)\nwhen { context.task.priority > 3 };\n"), ("s.cedarschema", SCHEMA)],
            "p.cedar", Some(3), Some(8), "priority",
        ),
        (
            "unknown action in a policy",
            &[("p.cedar", "permit(principal, action == Action::\"delete\", resource);"), ("s.cedarschema", SCHEMA)],
            "p.cedar", Some(1), Some(29), "delete",
        ),
        (
            "unknown entity type in a policy",
            &[("p.cedar", "permit(principal, action, resource is Document);"), ("s.cedarschema", SCHEMA)],
            "p.cedar", Some(1), Some(39), "Document",
        ),
        (
            "type error",
            &[("p.cedar", "permit(principal, action, resource)\nwhen { context.risk_score > 1 };"), ("s.cedarschema", SCHEMA)],
            "p.cedar", Some(2), Some(8), "type",
        ),
        (
            "error located in the second of two files",
            &[("a.cedar", CEDAR), ("b.cedar", "\n\nforbid(principal, action, resource) when { context.nope };"), ("s.cedarschema", SCHEMA)],
            "b.cedar", Some(3), Some(44), "nope",
        ),
        (
            "no schema",
            &[("p.cedar", CEDAR)],
            "", None, None, "exactly one `.cedarschema`",
        ),
        (
            "two schemas",
            &[("p.cedar", CEDAR), ("a.cedarschema", SCHEMA), ("b.cedarschema", SCHEMA)],
            "", None, None, "it has 2",
        ),
        (
            "a Rego file in a Cedar package",
            &[("p.cedar", CEDAR), ("s.cedarschema", SCHEMA), ("x.rego", REGO)],
            "x.rego", None, None, "only `.cedar`",
        ),
        (
            "duplicate @id",
            &[("p.cedar", "@id(\"a\") permit(principal, action, resource);\n@id(\"a\") forbid(principal, action, resource);"), ("s.cedarschema", SCHEMA)],
            "p.cedar", None, None, "`a` is used twice",
        ),
        (
            "template",
            &[("p.cedar", "permit(principal == ?principal, action, resource);"), ("s.cedarschema", SCHEMA)],
            "p.cedar", None, None, "templates are not supported",
        ),
        (
            "duplicate file name",
            &[("p.cedar", CEDAR), ("p.cedar", CEDAR), ("s.cedarschema", SCHEMA)],
            "", None, None, "appears twice",
        ),
    ];
    for &(row, files, file, line, column, fragment) in rows {
        let found = diagnostics(&package(Language::Cedar, files, None));
        let hit = found.iter().find(|d| {
            d.file == file
                && d.line == line
                && d.column == column
                && d.to_string().contains(fragment)
        });
        assert!(
            hit.is_some(),
            "{row}: want {file}:{line:?}:{column:?} `{fragment}`, got {found:#?}"
        );
    }
}

#[test]
fn a_cedar_package_has_no_entry_point() {
    let found = diagnostics(&package(
        Language::Cedar,
        &[("p.cedar", CEDAR), ("s.cedarschema", SCHEMA)],
        Some("data.x.allow"),
    ));
    assert!(found[0].message.contains("no entry point"), "{found:?}");
}

#[test]
fn invalid_rego_packages_are_located() {
    #[rustfmt::skip]
    let rows: &[(&str, &[(&str, &str)], Option<&str>, &str, Option<u32>, Option<u32>, &str)] = &[
        (
            "syntax error",
            &[("p.rego", "package p\nimport rego.v1\n\nallow if {\n  input.x ==\n}\n")],
            None, "p.rego", Some(6), Some(1), "",
        ),
        (
            "v0 syntax (no `if`) in a v1 engine",
            &[("p.rego", "package p\n\nallow {\n  true\n}\n")],
            None, "p.rego", Some(3), Some(7), "",
        ),
        (
            "entry point names no rule",
            &[("p.rego", "package p\nimport rego.v1\nallow if true\n")],
            Some("data.p.permit"), "", None, None, "data.p.permit",
        ),
        (
            "no files",
            &[],
            None, "", None, None, "at least one",
        ),
        (
            "a Cedar file in a Rego package",
            &[("p.rego", REGO), ("p.cedar", CEDAR)],
            None, "p.cedar", None, None, "only `.rego`",
        ),
    ];
    for &(row, files, entrypoint, file, line, column, fragment) in rows {
        let found = diagnostics(&package(Language::Rego, files, entrypoint));
        let hit = found.iter().find(|d| {
            d.file == file
                && d.line == line
                && d.column == column
                && d.to_string().contains(fragment)
        });
        assert!(
            hit.is_some(),
            "{row}: want {file}:{line:?}:{column:?} `{fragment}`, got {found:#?}"
        );
    }
}

/// Recursion (which OPA refuses, and which would exhaust regorus's native stack) is refused
/// at upload, with the place of the rule that closes the cycle.
#[test]
fn rego_recursion_is_refused_at_compile_time() {
    #[rustfmt::skip]
    let rows: &[(&str, &[(&str, &str)], &str, u32, &str)] = &[
        (
            "rule depends on itself",
            &[("p.rego", "package p\nimport rego.v1\n\nallow if loop\nloop if loop\n")],
            "p.rego", 5, "data.p.loop → data.p.loop",
        ),
        (
            "function calls itself",
            &[("p.rego", "package p\nimport rego.v1\n\nallow if f(1)\nf(x) if f(x)\n")],
            "p.rego", 5, "data.p.f → data.p.f",
        ),
        (
            "mutual recursion across packages through an import alias",
            &[
                ("a.rego", "package a\nimport rego.v1\nimport data.b as other\n\nallow if g(1)\ng(x) if other.h(x)\n"),
                ("b.rego", "package b\nimport rego.v1\n\nh(x) if data.a.g(x)\n"),
            ],
            "a.rego", 6, "data.a.g → data.b.h → data.a.g",
        ),
        (
            "dynamic reference to its own package",
            &[("p.rego", "package p\nimport rego.v1\n\nallow if { some k; data.p[k] }\n")],
            "p.rego", 4, "data.p.allow → data.p.allow",
        ),
    ];
    for &(row, files, file, line, fragment) in rows {
        let found = diagnostics(&package(Language::Rego, files, None));
        let d = &found[0];
        assert_eq!((d.file.as_str(), d.line), (file, Some(line)), "{row}: {d}");
        assert!(d.message.contains("recursion is not allowed"), "{row}: {d}");
        assert!(d.message.contains(fragment), "{row}: {d}");
    }
}

fn chain(len: usize) -> String {
    let mut text = String::from("package p\nimport rego.v1\n\nallow if f0(1)\n");
    for i in 0..len {
        // Each level nests a comprehension, to use more stack than a bare call.
        text += &format!(
            "f{i}(x) if count([y | some y in [x]; f{}(y)]) == 1\n",
            i + 1
        );
    }
    text += &format!("f{len}(x) if x == 1\n");
    text
}

#[test]
fn rego_dependency_chains_are_bounded() {
    // allow → f0 → … → f31: 33 rules and functions, one more than allowed.
    let found = diagnostics(&package(Language::Rego, &[("p.rego", &chain(31))], None));
    assert!(found[0].message.contains("at most 32"), "{found:?}");

    // The deepest legal chain evaluates even when called from a thread with a small stack.
    let deepest = rego_package(&chain(30));
    let decision = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            deepest.decide(
                &request("write", "Repository", json!({})),
                &Limits::default(),
            )
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(decision.effect, Effect::Allow, "{decision:?}");
}

#[test]
fn requests_naming_undeclared_things_are_invalid_not_denied() {
    let cedar = seed(Language::Cedar);
    let rows = [
        (
            "unknown action",
            request("delete", "Repository", json!({})),
            "delete",
        ),
        (
            "unknown entity type",
            request("write", "Document", json!({})),
            "Document",
        ),
        (
            "not a type name",
            request("write", "no such type", json!({})),
            "no such type",
        ),
        (
            "undeclared request attribute",
            request("write", "Repository", json!({"branch": "main"})),
            "branch",
        ),
    ];
    for (row, req, fragment) in rows {
        match cedar.decide(&req, &Limits::default()) {
            Err(e @ PolicyError::InvalidRequest { .. }) => {
                assert!(e.to_string().contains(fragment), "{row}: {e}");
            }
            other => panic!("{row}: expected an invalid request, got {other:?}"),
        }
    }
}

#[test]
fn oversized_and_deep_contexts_are_refused_in_both_languages() {
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({ "n": deep });
    }
    for language in [Language::Cedar, Language::Rego] {
        let package = seed(language);
        let big = request(
            "write",
            "Repository",
            json!({ "blob": "x".repeat(70 * 1024) }),
        );
        assert!(
            matches!(
                package.decide(&big, &Limits::default()),
                Err(PolicyError::ContextTooLarge { limit: 65_536 })
            ),
            "{language}: oversized"
        );
        let nested = request("write", "Repository", json!({ "deep": deep }));
        assert!(
            matches!(
                package.decide(&nested, &Limits::default()),
                Err(PolicyError::ContextTooDeep { limit: 16 })
            ),
            "{language}: deep"
        );
        let tight = Limits {
            max_context_bytes: 100,
            ..Limits::default()
        };
        assert!(matches!(
            package.decide(&request("write", "Repository", json!({})), &tight),
            Err(PolicyError::ContextTooLarge { limit: 100 })
        ));
    }
}

fn rego_package(text: &str) -> CompiledPackage {
    CompiledPackage::compile(&package(Language::Rego, &[("p.rego", text)], None)).unwrap()
}

#[test]
fn rego_runtime_errors_deny_with_the_reason() {
    #[rustfmt::skip]
    let rows = [
        (
            "failing built-in (strict)",
            "package p\nimport rego.v1\nallow if to_number(input.action) > 0\n",
            "could not parse string as number",
        ),
        (
            "conflicting values of a complete rule",
            "package p\nimport rego.v1\nallow := true if input.action == \"write\"\nallow := false if input.action == \"write\"\n",
            "",
        ),
        (
            "not a boolean",
            "package p\nimport rego.v1\nallow := \"yes\"\n",
            "not a boolean",
        ),
    ];
    for (row, text, fragment) in rows {
        let decision = rego_package(text)
            .decide(
                &request("write", "Repository", json!({})),
                &Limits::default(),
            )
            .unwrap();
        assert_eq!(decision.effect, Effect::Deny, "{row}");
        assert!(decision.determining.is_empty(), "{row}");
        assert_eq!(decision.errors.len(), 1, "{row}: {decision:?}");
        assert!(decision.errors[0].contains(fragment), "{row}: {decision:?}");
    }
}

#[test]
fn rego_timeout_denies_with_the_reason() {
    // 10^10 iterations: never finishes without the time limit.
    let package = rego_package(
        "package p\nimport rego.v1\n\
         allow if count([x | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); x := i * j]) > 0\n",
    );
    let limits = Limits {
        rego_time_limit: Duration::from_millis(20),
        ..Limits::default()
    };
    let decision = package
        .decide(&request("write", "Repository", json!({})), &limits)
        .unwrap();
    assert_eq!(decision.effect, Effect::Deny);
    assert_eq!(decision.errors.len(), 1, "{decision:?}");
    assert!(decision.errors[0].contains("time limit"), "{decision:?}");
    // The same rule through OPA's data API is an evaluation error, not a value.
    assert!(matches!(
        package.eval_rule("data.p.allow", json!({}), &limits),
        Err(PolicyError::Evaluation { reason }) if reason.contains("time limit")
    ));
}

#[test]
fn cedar_policy_errors_are_reported_and_skipped() {
    let policies = "@id(\"overflows\")\nforbid(principal, action, resource) when { context.time + 9223372036854775807 > 0 };\n\
                    @id(\"writes\")\npermit(principal, action == Action::\"write\", resource);\n";
    let package = CompiledPackage::compile(&package(
        Language::Cedar,
        &[("p.cedar", policies), ("s.cedarschema", SCHEMA)],
        None,
    ))
    .unwrap();
    let mut req = request("write", "Repository", json!({}));
    req.context.time = 1;
    let decision = package.decide(&req, &Limits::default()).unwrap();
    assert_eq!(decision.effect, Effect::Allow);
    assert_eq!(decision.determining, ["writes"]);
    assert_eq!(decision.errors.len(), 1, "{decision:?}");
    assert!(decision.errors[0].contains("overflows"), "{decision:?}");
    assert_eq!(
        package.decide_unindexed(&req, &Limits::default()).unwrap(),
        decision
    );
}
