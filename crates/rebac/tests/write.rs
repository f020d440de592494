//! Write batches: `validate_write` refuses a batch whole, with OpenFGA's rules, and
//! `Graph::apply` applies a committed one at its revision.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use rebac::{Graph, MAX_TUPLES_PER_WRITE, Model, Tuple, TupleKey, validate_write};

const MODEL: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type doc
  relations
    define parent: [doc]
    define viewer: [user, user:*, group#member] or viewer from parent
    define can_view: viewer";

fn key(s: &str) -> TupleKey {
    TupleKey::parse(s).unwrap()
}

fn code(model: &Model, graph: &Graph, writes: &[Tuple], deletes: &[TupleKey]) -> &'static str {
    match validate_write(model, graph, writes, deletes, 100) {
        Ok(()) => "ok",
        Err(e) => e.code(),
    }
}

#[test]
fn every_write_rule() {
    let model = Model::parse(MODEL).unwrap();
    let mut graph = Graph::new();
    graph
        .apply(
            1,
            [
                Tuple::new(key("doc:1#viewer@user:anne")),
                Tuple::expiring(key("doc:1#viewer@user:old"), 50),
            ],
            [],
        )
        .unwrap();
    let w = |s: &str| Tuple::new(key(s));
    let rows: Vec<(Vec<Tuple>, Vec<TupleKey>, &str)> = vec![
        (vec![w("doc:2#viewer@user:anne")], vec![], "ok"),
        (vec![], vec![key("doc:1#viewer@user:anne")], "ok"),
        (vec![], vec![], "validation_error"),
        (vec![w("doc:1#viewer@user:anne")], vec![], "tuple_exists"),
        // expired at now (100): may be written again
        (vec![w("doc:1#viewer@user:old")], vec![], "ok"),
        // …and deleted
        (vec![], vec![key("doc:1#viewer@user:old")], "ok"),
        (
            vec![],
            vec![key("doc:9#viewer@user:anne")],
            "tuple_not_found",
        ),
        (
            vec![w("doc:2#viewer@user:x"), w("doc:2#viewer@user:x")],
            vec![],
            "validation_error",
        ),
        (
            vec![w("doc:1#viewer@user:x")],
            vec![key("doc:1#viewer@user:x")],
            "validation_error",
        ),
        (vec![w("doc:2#can_view@user:x")], vec![], "invalid_tuple"),
        (vec![w("doc:2#parent@doc:*")], vec![], "invalid_tuple"),
        (
            vec![w("doc:2#parent@group:g#member")],
            vec![],
            "invalid_tuple",
        ),
        (vec![w("doc:2#viewer@group:g")], vec![], "invalid_tuple"),
        (vec![w("nope:2#viewer@user:x")], vec![], "unknown_type"),
        (vec![w("doc:2#nope@user:x")], vec![], "unknown_relation"),
        (
            vec![w("doc:2#viewer@group:g#nope")],
            vec![],
            "unknown_relation",
        ),
    ];
    for (writes, deletes, want) in rows {
        assert_eq!(
            code(&model, &graph, &writes, &deletes),
            want,
            "{writes:?} {deletes:?}"
        );
    }
    let many: Vec<Tuple> = (0..=MAX_TUPLES_PER_WRITE)
        .map(|i| w(&format!("doc:{i}#viewer@user:x")))
        .collect();
    assert_eq!(code(&model, &graph, &many, &[]), "too_many_tuples");
    let e = validate_write(&model, &graph, &many, &[], 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the number of write operations (101) exceeds the allowed limit of 100"
    );
    assert_eq!(
        code(&model, &graph, &many[..MAX_TUPLES_PER_WRITE], &[]),
        "ok"
    );
    let e = validate_write(&model, &graph, &[w("doc:1#viewer@user:anne")], &[], 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot write a tuple which already exists: `doc:1#viewer@user:anne`"
    );
}

#[test]
fn apply_is_what_queries_see() {
    let model = Model::parse(MODEL).unwrap();
    let mut graph = Graph::new();
    let check = |g: &Graph, q: &str| {
        let k = key(q);
        rebac::check(
            &model,
            g,
            &rebac::CheckRequest::new(k.user().clone(), k.relation(), k.object().clone(), 0),
        )
        .unwrap()
    };
    let writes = vec![
        Tuple::new(key("doc:2#parent@doc:1")),
        Tuple::new(key("doc:1#viewer@group:g#member")),
        Tuple::new(key("group:g#member@user:anne")),
    ];
    validate_write(&model, &graph, &writes, &[], 0).unwrap();
    graph.apply(5, writes, []).unwrap();
    assert_eq!(graph.revision(), 5);
    assert_eq!(graph.len(), 3);
    assert!(check(&graph, "doc:2#can_view@user:anne"));
    let deletes = vec![key("group:g#member@user:anne")];
    validate_write(&model, &graph, &[], &deletes, 0).unwrap();
    graph.apply(6, [], deletes).unwrap();
    assert_eq!(graph.revision(), 6);
    assert!(!check(&graph, "doc:2#can_view@user:anne"));
    // A graph rebuilt from the stored tuples answers the same.
    let rebuilt = Graph::from_tuples(6, graph.tuples()).unwrap();
    assert_eq!(rebuilt.len(), graph.len());
    assert_eq!(rebuilt.revision(), 6);
    assert!(rebuilt.contains(&key("doc:1#viewer@group:g#member"), 0));
}
