//! ListObjects and ListUsers within bounds (OpenFGA's `listObjectsMaxResults`,
//! `listObjectsDeadline`, `listUsersMaxResults`, `listUsersDeadline`): an answer that would
//! exceed the cap holds at most the cap and says it is truncated; a deadline that has passed
//! ends the walk with what it found.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::cell::Cell;

use rebac::{Graph, ListBounds, Model, ObjectRef, Tuple, TupleKey, User, UserFilter};

const MODEL: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user]
type doc
  relations
    define viewer: [user, group#member]
";

/// 5,000 documents anne can view: half directly, half through her group.
fn big() -> (Model, Graph) {
    let model = Model::parse(MODEL).unwrap();
    let mut graph = Graph::new();
    let mut add = |t: String| {
        let key = TupleKey::parse(&t).unwrap();
        model.validate_tuple(&key).unwrap();
        graph.insert(Tuple::new(key)).unwrap();
    };
    add("group:eng#member@user:anne".into());
    for i in 0..5000 {
        if i % 2 == 0 {
            add(format!("doc:{i}#viewer@user:anne"));
        } else {
            add(format!("doc:{i}#viewer@group:eng#member"));
        }
        add(format!("doc:{i}#viewer@user:u{i}"));
    }
    (model, graph)
}

fn capped(max: usize) -> ListBounds<'static> {
    ListBounds {
        max_results: Some(max),
        out_of_time: &|| false,
    }
}

#[test]
fn list_objects_returns_at_most_the_cap_and_says_so() {
    let (model, graph) = big();
    let anne = User::parse("user:anne").unwrap();
    let all = rebac::list_objects(&model, &graph, "doc", "viewer", &anne, &[], 0).unwrap();
    assert_eq!(all.len(), 5000, "unbounded, every document is listed");

    let got =
        rebac::list_objects_bounded(&model, &graph, "doc", "viewer", &anne, &[], 0, capped(1000))
            .unwrap();
    assert_eq!(got.objects.len(), 1000);
    assert!(got.truncated);
    // What is returned is true: each one is in the full answer, and none twice.
    let mut seen = std::collections::HashSet::new();
    for o in &got.objects {
        assert!(all.binary_search(o).is_ok(), "{o} is not viewable");
        assert!(seen.insert(o));
    }

    // Under the cap: everything, not truncated.
    let got = rebac::list_objects_bounded(
        &model,
        &graph,
        "doc",
        "viewer",
        &User::parse("user:u7").unwrap(),
        &[],
        0,
        capped(1000),
    )
    .unwrap();
    assert_eq!(got.objects, ["doc:7"]);
    assert!(!got.truncated);
}

#[test]
fn list_objects_stops_at_the_deadline_with_what_it_found() {
    // 5,000 documents, each reached through a group of its own: one step of the walk each.
    let model = Model::parse(MODEL).unwrap();
    let mut graph = Graph::new();
    for i in 0..5000 {
        for t in [
            format!("group:g{i}#member@user:anne"),
            format!("doc:{i}#viewer@group:g{i}#member"),
        ] {
            graph
                .insert(Tuple::new(TupleKey::parse(&t).unwrap()))
                .unwrap();
        }
    }
    let anne = User::parse("user:anne").unwrap();
    // The deadline passes after the walk's third look at the clock.
    let asked = Cell::new(0u32);
    let out_of_time = || {
        asked.set(asked.get() + 1);
        asked.get() >= 3
    };
    let got = rebac::list_objects_bounded(
        &model,
        &graph,
        "doc",
        "viewer",
        &anne,
        &[],
        0,
        ListBounds {
            max_results: None,
            out_of_time: &out_of_time,
        },
    )
    .unwrap();
    assert!(got.truncated);
    assert!(
        !got.objects.is_empty() && got.objects.len() < 5000,
        "{} objects",
        got.objects.len()
    );
    assert_eq!(asked.get(), 3, "the walk ends when the deadline has passed");
}

#[test]
fn list_users_returns_at_most_the_cap_and_says_so() {
    let model = Model::parse(MODEL).unwrap();
    let mut graph = Graph::new();
    for i in 0..5000 {
        let key = TupleKey::parse(&format!("doc:big#viewer@user:u{i}")).unwrap();
        graph.insert(Tuple::new(key)).unwrap();
    }
    let doc = ObjectRef::parse("doc:big").unwrap();
    let filter = [UserFilter {
        type_name: "user".into(),
        relation: None,
    }];
    let all = rebac::list_users(&model, &graph, &doc, "viewer", &filter, &[], 0).unwrap();
    assert_eq!(all.users.len(), 5000);
    assert!(!all.truncated);

    let got = rebac::list_users_bounded(
        &model,
        &graph,
        &doc,
        "viewer",
        &filter,
        &[],
        0,
        capped(1000),
    )
    .unwrap();
    assert_eq!(got.users.len(), 1000);
    assert!(got.truncated);
    for u in &got.users {
        assert!(all.users.binary_search(u).is_ok(), "{u:?}");
    }

    // A deadline already passed: the expansion stops at its first look at the clock.
    let got = rebac::list_users_bounded(
        &model,
        &graph,
        &doc,
        "viewer",
        &filter,
        &[],
        0,
        ListBounds {
            max_results: None,
            out_of_time: &|| true,
        },
    )
    .unwrap();
    assert!(got.truncated);
    assert!(got.users.len() < 5000);
}
