//! The modeling language and OpenFGA's model rules: syntax errors with line and column,
//! conditions and modules refused, every `WriteAuthorizationModel` rule, and the JSON form.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use rebac::{Model, Position, RebacError, Rewrite, TypeRestriction};
use serde_json::json;

const HEAD: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user]
type doc
  relations
    define a: [user]
    define b: [user]
    define c: [user]";

/// The model `HEAD` plus one line defining `x` (line 12).
fn with_x(def: &str) -> Result<Model, RebacError> {
    Model::parse(&format!("{HEAD}\n    define x: {def}\n"))
}

fn err(r: Result<Model, RebacError>) -> RebacError {
    match r {
        Ok(_) => panic!("the model was accepted"),
        Err(e) => e,
    }
}

#[test]
fn syntax_errors_carry_line_and_column() {
    // (definition of x on line 12, expected column of the error, part of the message)
    let rows: &[(&str, u32, &str)] = &[
        ("a or b and c", 22, "cannot be mixed"),
        ("a and b or c", 23, "cannot be mixed"),
        ("a or b but not c", 22, "cannot be mixed"),
        ("a but not b but not c", 27, "only one `but not`"),
        ("a but not b or c", 27, "cannot be mixed"),
        ("a or [user]", 20, "must be the first operand"),
        ("a and ([user] or b)", 22, "must be the first operand"),
        ("a#b", 16, "unexpected `#`"),
        ("a & b", 17, "unexpected `&`"),
        ("a from b from c", 24, "unexpected `from`"),
        ("[user:* ]", 24, ""),
        ("[ user : * ]", 22, "unexpected `:`"),
        ("[]", 16, "unexpected `]`"),
        ("(a or b", 22, "expected `)`"),
        ("a or", 19, ""),
        ("[user]#comment", 21, "unexpected `#`"),
    ];
    let mut failures = Vec::new();
    for (def, column, text) in rows {
        match with_x(def) {
            Ok(_) if *column == 24 => {} // `[user:* ]` is valid: blanks before `]` are allowed
            Ok(_) => failures.push(format!("{def}: accepted")),
            Err(e) => {
                let ok = e.code() == "invalid_model"
                    && e.position()
                        == Some(Position {
                            line: 12,
                            column: *column,
                        })
                    && e.to_string().contains(text);
                if !ok {
                    failures.push(format!("{def}: {e} ({:?})", e.position()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn header_and_structure_errors() {
    let e = err(Model::parse("model\ntype user"));
    assert_eq!(e.position(), Some(Position { line: 2, column: 1 }));
    assert!(e.to_string().contains("expected `schema`"), "{e}");
    let e = err(Model::parse("type user"));
    assert_eq!(e.position(), Some(Position { line: 1, column: 1 }));
    let e = err(Model::parse(
        "model\n  schema 1.1\ntype doc\n  relations\ntype user",
    ));
    assert_eq!(e.code(), "invalid_model");
    assert_eq!(e.position().map(|p| p.line), Some(5));
    let e = err(Model::parse(
        "model\n  schema 1.1\ntype doc\n  relations\n    define 1x: [doc]",
    ));
    assert_eq!(
        e.position(),
        Some(Position {
            line: 5,
            column: 12
        })
    );
    let e = err(Model::parse(
        "model\n  schema 1.1\ntype doc\n  relations\n    define or: [doc]",
    ));
    assert_eq!(
        e.position(),
        Some(Position {
            line: 5,
            column: 12
        })
    );
    let e = err(Model::parse(
        "model\n  schema 1.1\ntype doc\n  relations\n    define a: [doc]\n    define a: [doc]",
    ));
    assert_eq!(
        e.position(),
        Some(Position {
            line: 6,
            column: 12
        })
    );
    assert!(e.to_string().contains("already defined"), "{e}");
}

#[test]
fn conditions_and_modules_are_refused() {
    let e = err(with_x("[user with in_office]"));
    assert_eq!(e.code(), "condition_unsupported");
    assert_eq!(
        e.position(),
        Some(Position {
            line: 12,
            column: 21
        })
    );
    let e = err(Model::parse(&format!(
        "{HEAD}\n\ncondition in_office(ip: ipaddress) {{\n  ip.in_cidr(\"10.0.0.0/8\")\n}}\n"
    )));
    assert_eq!(e.code(), "condition_unsupported");
    assert_eq!(
        e.position(),
        Some(Position {
            line: 13,
            column: 1
        })
    );
    let e = err(Model::parse("module docs\n\ntype doc"));
    assert_eq!(e.code(), "invalid_model");
    assert!(e.to_string().contains("modular models"), "{e}");
    let e = err(Model::parse("model\n  schema 1.1\nextend type doc"));
    assert!(e.to_string().contains("modular"), "{e}");
    let e = err(Model::from_json(&json!({
        "schema_version": "1.1",
        "type_definitions": [{"type": "user"}],
        "conditions": {"c": {"name": "c", "expression": "true"}}
    })));
    assert_eq!(e.code(), "condition_unsupported");
}

#[test]
fn openfga_model_rules() {
    // (model text after the header types, expected message part)
    let rows: &[(&str, &str)] = &[
        ("define x: nope", "relation `doc#nope` is undefined"),
        ("define x: x", "refers to itself"),
        ("define x: a from nope", "relation `doc#nope` is undefined"),
        ("define x: a from b", "does not appear as a relation"),
        (
            "define x: [nope]",
            "the relation type `nope` on `x` in type `doc` is not valid",
        ),
        (
            "define x: [group#nope]",
            "the relation type `group#nope` on `x`",
        ),
        ("define x: [doc#x]", "no entrypoints defined"),
        ("define x: y\n    define y: x", "potential loop"),
        (
            "define x: [user] or y\n    define y: x",
            "cannot contain a cycle",
        ),
        (
            "define x: a and y\n    define y: [doc#y]",
            "`x` in type `doc` is invalid: no entrypoints",
        ),
        ("define this: [user]", "self and this are reserved keywords"),
        (
            "define p: [group] or a\n    define x: member from p",
            "the `doc#p` relation is referenced in at least one tupleset and thus must be a direct relation",
        ),
        (
            "define p: [group#member]\n    define x: member from p",
            "the relation type `group#member` on `p` in type `doc` is not valid",
        ),
        (
            "define p: [group:*]\n    define x: member from p",
            "the relation type `group:*` on `p` in type `doc` is not valid",
        ),
    ];
    let mut failures = Vec::new();
    for (def, text) in rows {
        let r = Model::parse(&format!("{HEAD}\n    {def}\n"));
        match r {
            Ok(_) => failures.push(format!("{def}: accepted")),
            Err(e) if e.code() == "invalid_model" && e.to_string().contains(text) => {
                assert!(e.position().is_some(), "{def}: no position");
            }
            Err(e) => failures.push(format!("{def}: {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    for (dsl, text) in [
        (
            "model\n  schema 1.0\ntype user",
            "invalid schema version `1.0`",
        ),
        (
            "model\n  schema 1.2\ntype user",
            "invalid schema version `1.2`",
        ),
        ("model\n  schema 1.1", "at least one type"),
        (
            "model\n  schema 1.1\ntype user\ntype user",
            "duplicate types",
        ),
        ("model\n  schema 1.1\ntype self", "reserved keywords"),
    ] {
        let e = err(Model::parse(dsl));
        assert!(e.to_string().contains(text), "{dsl}: {e}");
    }
    let long = "r".repeat(51);
    let e = err(Model::parse(&format!(
        "model\n  schema 1.1\ntype user\n  relations\n    define {long}: [user]"
    )));
    assert!(e.to_string().contains("longer than 50"), "{e}");
    let many: String = (0..=rebac::MAX_TYPES_PER_MODEL)
        .map(|i| format!("type t{i}\n"))
        .collect();
    let e = err(Model::parse(&format!("model\n  schema 1.1\n{many}")));
    assert!(e.to_string().contains("at most 100 types"), "{e}");
}

#[test]
fn recursion_through_data_is_allowed() {
    for def in [
        "define x: [user, doc#x]",
        "define x: [user] or x from p\n    define p: [doc]",
        "define x: [user] or member from g\n    define g: [group]",
        "define x: [user, user:*] but not a",
    ] {
        with_x(def)
            .map(|_| ())
            .or_else(|_| Model::parse(&format!("{HEAD}\n    {def}\n")).map(|_| ()))
            .unwrap_or_else(|e| panic!("{def}: {e}"));
    }
}

#[test]
fn structure_of_operators_and_parentheses() {
    let m = Model::parse(&format!(
        "{HEAD}
    define w: ([user] or a) and b
    define x: (a or b) or c
    define y: a but not (b and c)
    define z: ((a))
    define t: [user, user:*, group#member] # a trailing comment
    # a full-line comment
    define u: member from g
    define g: [group]"
    ))
    .unwrap();
    let rel = |r: &str| m.relation("doc", r).unwrap();
    let c = |r: &str| Rewrite::Computed(r.into());
    assert_eq!(
        rel("w").rewrite,
        Rewrite::Intersection(vec![Rewrite::Union(vec![Rewrite::This, c("a")]), c("b")])
    );
    assert_eq!(
        rel("w").directly_related_user_types,
        [TypeRestriction::Type("user".into())]
    );
    assert_eq!(
        rel("x").rewrite,
        Rewrite::Union(vec![Rewrite::Union(vec![c("a"), c("b")]), c("c")])
    );
    assert_eq!(
        rel("y").rewrite,
        Rewrite::Difference {
            base: Box::new(c("a")),
            subtract: Box::new(Rewrite::Intersection(vec![c("b"), c("c")]))
        }
    );
    assert_eq!(rel("z").rewrite, c("a"));
    assert_eq!(
        rel("t").directly_related_user_types,
        [
            TypeRestriction::Type("user".into()),
            TypeRestriction::Wildcard("user".into()),
            TypeRestriction::Userset {
                type_name: "group".into(),
                relation: "member".into()
            }
        ]
    );
    assert_eq!(
        rel("u").rewrite,
        Rewrite::TupleToUserset {
            tupleset: "g".into(),
            computed: "member".into()
        }
    );
    assert_eq!(
        rel("u").position(),
        Some(Position {
            line: 18,
            column: 12
        })
    );
}

#[test]
fn json_form_matches_the_official_transformer_shape() {
    let m = Model::parse(
        "model
  schema 1.1
type user
type doc
  relations
    define parent: [doc]
    define viewer: [user, user:*] or viewer from parent",
    )
    .unwrap();
    assert_eq!(
        m.to_json(),
        json!({
            "schema_version": "1.1",
            "type_definitions": [
                {"type": "user", "relations": {}, "metadata": null},
                {
                    "type": "doc",
                    "relations": {
                        "parent": {"this": {}},
                        "viewer": {"union": {"child": [
                            {"this": {}},
                            {"tupleToUserset": {
                                "computedUserset": {"relation": "viewer"},
                                "tupleset": {"relation": "parent"}
                            }}
                        ]}}
                    },
                    "metadata": {"relations": {
                        "parent": {"directly_related_user_types": [{"type": "doc"}]},
                        "viewer": {"directly_related_user_types": [
                            {"type": "user"}, {"type": "user", "wildcard": {}}
                        ]}
                    }}
                }
            ]
        })
    );
}

#[test]
fn json_models_are_read_in_both_spellings_and_validated() {
    // As the OpenFGA API returns a model: protobuf-JSON names, an id, module metadata.
    let api = json!({
        "id": "01HVMMBCMGZNT3SED4Z17ECXCA",
        "schemaVersion": "1.1",
        "typeDefinitions": [
            {"type": "user", "relations": {}, "metadata": null},
            {"type": "doc",
             "relations": {
                "owner": {"this": {}},
                "viewer": {"union": {"child": [{"this": {}}, {"computed_userset": {"object": "", "relation": "owner"}}]}}
             },
             "metadata": {"relations": {
                "owner": {"directlyRelatedUserTypes": [{"type": "user", "condition": ""}]},
                "viewer": {"directly_related_user_types": [{"type": "user", "wildcard": {}}]}
             }, "module": "", "source_info": null}}
        ],
        "conditions": {}
    });
    let m = Model::from_json(&api).unwrap();
    let dsl = Model::parse(
        "model
  schema 1.1
type user
type doc
  relations
    define owner: [user]
    define viewer: [user:*] or owner",
    )
    .unwrap();
    assert_eq!(m.id(), dsl.id());
    assert_eq!(m.to_json(), dsl.to_json());

    let bad = [
        (json!([]), "invalid_model"),
        (json!({"type_definitions": []}), "invalid_model"),
        (
            json!({"schema_version": "1.1", "type_definitions": []}),
            "invalid_model",
        ),
        (
            json!({"schema_version": "1.1", "type_definitions": [
                {"type": "doc", "relations": {"x": {"this": {}}}}]}),
            "invalid_model",
        ),
        (
            json!({"schema_version": "1.1", "type_definitions": [
                {"type": "user"},
                {"type": "doc", "relations": {"x": {"computedUserset": {"relation": "y"}}, "y": {"this": {}}},
                 "metadata": {"relations": {"x": {"directly_related_user_types": [{"type": "user"}]},
                                            "y": {"directly_related_user_types": [{"type": "user"}]}}}}]}),
            "invalid_model",
        ),
        (
            json!({"schema_version": "1.1", "type_definitions": [
                {"type": "user"},
                {"type": "doc", "relations": {"x": {"this": {}, "union": {"child": []}}}}]}),
            "invalid_model",
        ),
        (
            json!({"schema_version": "1.1", "type_definitions": [
                {"type": "user"},
                {"type": "doc", "relations": {"x": {"this": {}}},
                 "metadata": {"relations": {"x": {"directly_related_user_types": [{"type": "user", "condition": "c"}]}}}}]}),
            "condition_unsupported",
        ),
        (
            json!({"schema_version": "1.1", "type_definitions": [{"type": "a:b"}]}),
            "invalid_model",
        ),
    ];
    for (j, code) in bad {
        let e = err(Model::from_json(&j));
        assert_eq!(e.code(), code, "{j}: {e}");
        assert_eq!(e.position(), None);
    }
    let e = err(Model::from_json(
        &json!({"schema_version": "1.1", "type_definitions": [
        {"type": "user"},
        {"type": "doc", "relations": {"x": {"this": {}}}}]}),
    ));
    assert!(
        e.to_string()
            .contains("must contain at least one relation type"),
        "{e}"
    );
    let e = err(Model::from_json(
        &json!({"schema_version": "1.1", "type_definitions": [
        {"type": "user"},
        {"type": "doc", "relations": {"x": {"computedUserset": {"relation": "y"}}, "y": {"this": {}}},
         "metadata": {"relations": {"x": {"directly_related_user_types": [{"type": "user"}]},
                                    "y": {"directly_related_user_types": [{"type": "user"}]}}}}]}),
    ));
    assert!(
        e.to_string().contains("should not contain a relation type"),
        "{e}"
    );
}
