//! The Rego evaluation budget, including what one built-in call may allocate: built-ins whose
//! result's size is set by an argument's value, or is a product of sizes, are capped at
//! evaluation (a deny saying the budget was exceeded, before anything is allocated) or refused
//! at upload with the reason and the place.
//!
//! Only the public API, and the limits as numbers: these tests say what a user sees.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use identity::SpiffeId;
use policy::{
    Agent, Attributes, CompiledPackage, Context, Decision, Diagnostic, Effect, Language, Limits,
    PackageSource, PolicyError, Request, Resource, RiskScore,
};
use serde_json::{Value, json};

/// What every budget refusal at evaluation says.
const EXCEEDED: &str = "evaluation budget exceeded";

fn source(text: &str) -> PackageSource {
    PackageSource {
        language: Language::Rego,
        files: vec![("p.rego".to_owned(), text.to_owned())],
        entrypoint: None,
    }
}

fn compile(text: &str) -> CompiledPackage {
    CompiledPackage::compile(&source(text)).unwrap()
}

fn refused(text: &str) -> Vec<Diagnostic> {
    match CompiledPackage::compile(&source(text)) {
        Err(PolicyError::InvalidPackage { diagnostics }) => diagnostics,
        Ok(_) => panic!("compiled, but should be refused:\n{text}"),
        Err(other) => panic!("unexpected error {other:?} for\n{text}"),
    }
}

/// A request whose caller attributes (`input.context.request`) are `attributes`.
fn request(attributes: Value) -> Request {
    let Value::Object(request) = attributes else {
        panic!("attributes are an object")
    };
    Request {
        principal: SpiffeId::parse("spiffe://example.org/agent/coder").unwrap(),
        action: "write".into(),
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

/// Generous: the budget here is about a call's size, not the machine's speed.
fn limits() -> Limits {
    Limits {
        rego_time_limit: std::time::Duration::from_secs(5),
        ..Limits::default()
    }
}

fn decide(package: &CompiledPackage, attributes: Value) -> Decision {
    package.decide(&request(attributes), &limits()).unwrap()
}

/// A deny whose one error is the budget's, naming `builtin`.
fn assert_budget_deny(decision: &Decision, builtin: &str) {
    assert_eq!(decision.effect, Effect::Deny, "{decision:?}");
    assert!(decision.determining.is_empty(), "{decision:?}");
    assert_eq!(decision.errors.len(), 1, "{decision:?}");
    let error = &decision.errors[0];
    assert!(error.contains(EXCEEDED), "{error}");
    assert!(error.contains(&format!("`{builtin}`")), "{error}");
    assert!(error.starts_with("p.rego:"), "located: {error}");
}

/// The adversarial review's policy: one call that allocated ~660 MB for 2.3 s and was then
/// allowed. Its bounds are literals, so it is refused at upload, where it is written.
#[test]
fn numbers_range_with_literal_bounds_over_the_cap_is_refused_at_upload() {
    let diagnostics = refused(
        "package p\nimport rego.v1\n\nallow if { count(numbers.range(1, 30000000)) > 5 }\n",
    );
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert_eq!(
        (d.file.as_str(), d.line, d.column),
        ("p.rego", Some(4), Some(18)),
        "{d:?}"
    );
    assert!(
        d.message
            .contains("`numbers.range` would generate 30000000 elements")
            && d.message.contains("100000"),
        "{d:?}"
    );
    // Descending, and `numbers.range_step`, count the same way; within the cap is accepted.
    refused("package p\nimport rego.v1\nallow if count(numbers.range(0, -100000)) > 0\n");
    refused("package p\nimport rego.v1\nallow if count(numbers.range_step(0, 1000000, 5)) > 0\n");
    compile("package p\nimport rego.v1\nallow if count(numbers.range(1, 100000)) > 0\n");
    compile("package p\nimport rego.v1\nallow if count(numbers.range_step(0, 999990, 10)) > 0\n");
}

/// Bounds that come from the request are checked before anything is allocated: a deny with
/// the budget's reason, at once, however large the request asks for.
#[test]
fn numbers_range_over_the_cap_at_evaluation_denies_with_the_reason() {
    let package = compile(
        "package p\nimport rego.v1\n\
         allow if { count(numbers.range(1, input.context.request.n)) > 5 }\n",
    );
    for n in [30_000_000i64, 100_001, 1_000_000_000_000, -5_000_000] {
        let decision = decide(&package, json!({ "n": n }));
        assert_budget_deny(&decision, "numbers.range");
    }
    assert_eq!(decide(&package, json!({"n": 10})).effect, Effect::Allow);
    assert_eq!(
        decide(&package, json!({"n": 100_000})).effect,
        Effect::Allow
    );

    let stepped = compile(
        "package p\nimport rego.v1\n\
         allow if { count(numbers.range_step(0, input.context.request.n, 2)) > 5 }\n",
    );
    assert_budget_deny(
        &decide(&stepped, json!({"n": 1_000_000})),
        "numbers.range_step",
    );
    assert_eq!(decide(&stepped, json!({"n": 100})).effect, Effect::Allow);

    // OPA's data API: an evaluation error, not a value.
    let err = package
        .eval_rule(
            "data.p.allow",
            json!({"context": {"request": {"n": 30_000_000}}}),
            &limits(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, PolicyError::Evaluation { reason } if reason.contains(EXCEEDED)),
        "{err:?}"
    );
}

/// Strings whose size is a product of two sizes — a delimiter repeated between every element,
/// a replacement repeated at every match — and many small values from one string.
#[test]
fn generated_strings_and_collections_are_capped() {
    let sep = "x".repeat(20_000);
    let items: Vec<String> = (0..100).map(|i| i.to_string()).collect();

    let concat = compile(
        "package p\nimport rego.v1\n\
         allow if count(concat(input.context.request.sep, input.context.request.items)) > 0\n",
    );
    // 99 delimiters of 20,000 bytes: about 2 MB.
    assert_budget_deny(
        &decide(&concat, json!({"sep": sep, "items": items})),
        "concat",
    );
    assert_eq!(
        decide(&concat, json!({"sep": ",", "items": items})).effect,
        Effect::Allow
    );

    let replace = compile(
        "package p\nimport rego.v1\n\
         allow if count(replace(input.context.request.s, \"a\", input.context.request.r)) > 0\n",
    );
    // 10,000 matches, each replaced by 1,000 bytes: 10 MB.
    assert_budget_deny(
        &decide(
            &replace,
            json!({"s": "a".repeat(10_000), "r": "b".repeat(1_000)}),
        ),
        "replace",
    );

    let replace_n = compile(
        "package p\nimport rego.v1\n\
         allow if count(strings.replace_n({\"a\": input.context.request.r}, input.context.request.s)) > 0\n",
    );
    assert_budget_deny(
        &decide(
            &replace_n,
            json!({"s": "a".repeat(10_000), "r": "b".repeat(1_000)}),
        ),
        "strings.replace_n",
    );

    // 15 copies of a 60,000-character string is within the string cap; splitting it into its
    // 900,000 characters is not.
    let split = compile(
        "package p\nimport rego.v1\n\
         big := concat(\"\", [input.context.request.s | some _ in numbers.range(1, 15)])\n\
         allow if count(split(big, \"\")) > 0\n",
    );
    assert_budget_deny(&decide(&split, json!({"s": "y".repeat(60_000)})), "split");
    assert_eq!(
        decide(&split, json!({"s": "y".repeat(100)})).effect,
        Effect::Allow
    );
}

/// Built-ins whose result cannot be bounded by their arguments' sizes are refused where they
/// are called, with the reason.
#[test]
fn unbounded_builtins_are_refused_at_upload_with_the_reason() {
    #[rustfmt::skip]
    let rows = [
        ("bits.lsh", "x := bits.lsh(1, input.n)"),
        ("net.cidr_expand", "x := net.cidr_expand(input.cidr)"),
        ("graph.reachable_paths", "x := graph.reachable_paths(input.g, [\"a\"])"),
        ("walk", "x := [p | walk(input, [p, _])]"),
        ("json.marshal_with_options", "x := json.marshal_with_options(input, {\"indent\": input.i})"),
        ("regex.replace", "x := regex.replace(input.s, \"a\", input.r)"),
        ("regex.template_match", "x := regex.template_match(\"{a}\", input.s, \"{\", \"}\")"),
    ];
    for (builtin, rule) in rows {
        let diagnostics = refused(&format!("package p\nimport rego.v1\n\n{rule}\n"));
        assert_eq!(diagnostics.len(), 1, "{builtin}: {diagnostics:?}");
        let d = &diagnostics[0];
        assert_eq!((d.file.as_str(), d.line), ("p.rego", Some(4)), "{d:?}");
        assert!(
            d.message.starts_with(&format!(
                "built-in `{builtin}` is not available in Warden: "
            )),
            "{d:?}"
        );
    }
    // All of them at once, each where it is.
    let diagnostics = refused(
        "package p\nimport rego.v1\na := bits.lsh(1, 2)\nb := net.cidr_expand(\"10.0.0.0/30\")\n",
    );
    let lines: Vec<_> = diagnostics.iter().map(|d| d.line).collect();
    assert_eq!(lines, [Some(3), Some(4)], "{diagnostics:?}");

    // Named as a `with` replacement, it would be called with the replaced function's
    // arguments.
    let diagnostics = refused(
        "package p\nimport rego.v1\n\
         f(x) := x\n\
         allow if count(f(\"0.0.0.0/0\")) > 0 with f as net.cidr_expand\n",
    );
    assert!(
        diagnostics[0].message.contains("`net.cidr_expand`"),
        "{diagnostics:?}"
    );
}

/// `sprintf` pads to any width its format asks for, so its format must be a literal with
/// small widths; a width in other digits made regorus panic.
#[test]
fn sprintf_needs_a_literal_format_with_small_widths() {
    compile(
        "package p\nimport rego.v1\n\
         msg := sprintf(\"%s wrote %05d bytes (%.2f%%) %v\", [input.a, 1, 2.5, input])\n\
         allow if msg != \"\"\n",
    );
    for (format, fragment) in [
        ("input.format", "string literal"),
        ("\"%0999999999d\"", "width `0999999999`"),
        ("\"%100s\"", "width `100`"),
        ("\"%\u{0663}d\"", "width `\u{0663}`"),
    ] {
        let diagnostics = refused(&format!(
            "package p\nimport rego.v1\nmsg := sprintf({format}, [1])\n"
        ));
        assert!(
            diagnostics[0].message.contains(fragment) && diagnostics[0].line == Some(3),
            "{format}: {diagnostics:?}"
        );
    }
    let diagnostics = refused(
        "package p\nimport rego.v1\nf(a, b) := a\nallow if f(\"%d\", [1]) == \"1\" with f as sprintf\n",
    );
    assert!(
        diagnostics[0].message.contains("`sprintf`"),
        "{diagnostics:?}"
    );
}

/// Warden's capped built-ins take no output argument (`concat(",", xs, out)`); the call must
/// assign the result instead, and says so at upload.
#[test]
fn capped_builtins_take_no_output_argument() {
    let diagnostics =
        refused("package p\nimport rego.v1\nallow if { concat(\",\", [\"a\"], x); x == \"a\" }\n");
    assert!(
        diagnostics[0]
            .message
            .contains("`concat` takes 2 arguments"),
        "{diagnostics:?}"
    );
}

/// A function of the package that has a built-in's name is the package's — called by its
/// bare name, through `data` or through an import — and is not checked as the built-in; the
/// values show regorus calls the package's function too.
#[test]
fn package_functions_are_not_builtins() {
    let mut two = source(
        "package p\nimport rego.v1\nimport data.lib\n\
         allow if {\n\
           lib.sprintf(input.context.request.f, [\"x\"]) == \"f:x\"\n\
           data.lib.split(1, 2, 3) == [1, 2, 3]\n\
           data.lib.both(3) == [3, 3]\n\
           data.lib.shifted == 5\n\
         }\n",
    );
    two.files.push((
        "lib.rego".to_owned(),
        "package lib\nimport rego.v1\n\
         sprintf(f, xs) := concat(\":\", array.concat([f], xs))\n\
         split(a, b, c) := [a, b, c]\n\
         both(x) := [y, z] if { [y, z, _] := split(x, x, x) }\n\
         bits.lsh(x, y) := x + y\n\
         shifted := bits.lsh(1, 4)\n"
            .to_owned(),
    ));
    two.entrypoint = Some("data.p.allow".to_owned());
    let package = CompiledPackage::compile(&two).unwrap();
    let d = decide(&package, json!({"f": "f"}));
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
}

/// A time-out says it is the budget, like every other exceeded budget.
#[test]
fn a_timeout_is_reported_as_the_exceeded_budget() {
    let package = compile(
        "package p\nimport rego.v1\n\
         allow if count([1 | some i in numbers.range(1, 1000); some j in numbers.range(1, 1000); some k in numbers.range(1, 1000)]) > 0\n",
    );
    let limits = Limits {
        rego_time_limit: std::time::Duration::from_millis(20),
        ..Limits::default()
    };
    let decision = package.decide(&request(json!({})), &limits).unwrap();
    assert_eq!(decision.effect, Effect::Deny);
    assert_eq!(decision.errors.len(), 1, "{decision:?}");
    assert!(
        decision.errors[0].contains(EXCEEDED) && decision.errors[0].contains("20ms time limit"),
        "{decision:?}"
    );
}
