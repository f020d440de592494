//! Check, table by table: every rewrite rule, wildcards, usersets (as tuples and as the user
//! asking), exclusion and intersection corners, cycles in data, the depth limit, contextual
//! tuples, expiry and request errors. Expected answers follow OpenFGA's `LocalChecker`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use support::{Store, docs, outcome};

/// Runs `(object#relation@user, expected)` rows; expected is `allow`, `deny` or an error code.
fn table(store: &Store, rows: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (q, want) in rows {
        let got = outcome(&store.check(q));
        if got != *want {
            failures.push(format!("{q}: want {want}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn rewrite_rules() {
    table(
        &docs(),
        &[
            // this
            ("doc:1#viewer@user:beth", "allow"),
            ("doc:1#owner@user:beth", "deny"),
            // computed userset, twice (owner -> editor -> viewer)
            ("doc:1#editor@user:anne", "allow"),
            ("doc:1#viewer@user:anne", "allow"),
            // userset tuple, and a nested one
            ("doc:1#editor@user:carl", "allow"),
            ("doc:1#viewer@user:dan", "allow"),
            // tuple to userset, and a recursive one (folder parent chain)
            ("doc:1#viewer@user:erin", "allow"),
            ("doc:1#viewer@user:fay", "allow"),
            ("folder:f#viewer@user:fay", "allow"),
            ("folder:root#viewer@user:erin", "deny"),
            ("doc:1#viewer@user:nobody", "deny"),
            // unknown objects are simply related to nothing
            ("doc:none#viewer@user:anne", "deny"),
        ],
    );
}

#[test]
fn wildcards() {
    table(
        &docs(),
        &[
            ("doc:pub#viewer@user:anyone", "allow"),
            ("doc:pub#viewer@user:*", "allow"),
            ("doc:1#viewer@user:*", "deny"),
            // a wildcard member makes every user a member, through a userset tuple
            ("doc:2#viewer@user:anyone", "allow"),
            ("doc:2#viewer@user:*", "allow"),
            // but a wildcard never grants a userset
            ("doc:2#viewer@group:eng#member", "deny"),
            ("group:all#member@group:eng#member", "deny"),
        ],
    );
}

#[test]
fn usersets_as_the_user() {
    table(
        &docs(),
        &[
            // a userset contains itself
            ("group:eng#member@group:eng#member", "allow"),
            ("doc:1#editor@doc:1#editor", "allow"),
            // the exact tuple
            ("doc:1#editor@group:eng#member", "allow"),
            // through a rewrite
            ("doc:1#viewer@group:eng#member", "allow"),
            // nested: group:sub#member is in group:eng#member
            ("doc:1#viewer@group:sub#member", "allow"),
            ("group:eng#member@group:sub#member", "allow"),
            ("group:sub#member@group:eng#member", "deny"),
            ("doc:1#viewer@group:other#member", "deny"),
            // the subtract side is judged for the userset as a whole
            ("doc:1#can_view@group:eng#member", "allow"),
        ],
    );
}

#[test]
fn exclusion_and_intersection() {
    table(
        &docs(),
        &[
            ("doc:1#can_view@user:beth", "allow"),
            ("doc:1#can_view@user:carl", "deny"),
            ("doc:1#can_view@user:dan", "allow"),
            ("doc:1#can_view@user:nobody", "deny"),
            // `but not` with a wildcard base
            ("doc:pub#can_view@user:hal", "allow"),
            ("doc:pub#can_view@user:gus", "deny"),
            ("doc:pub#can_view@user:*", "allow"),
            // intersection
            ("doc:1#can_approve@user:anne", "allow"),
            ("doc:1#can_approve@user:dan", "allow"),
            ("doc:1#can_approve@user:carl", "deny"),
            ("doc:1#can_approve@user:beth", "deny"),
            // intersection where one side is a wildcard
            ("doc:3#can_approve@user:hal", "allow"),
            ("doc:3#can_approve@user:anne", "deny"),
            ("doc:4#open_approve@user:ivy", "allow"),
            ("doc:4#open_approve@user:jack", "deny"),
            ("doc:4#open_approve@user:*", "deny"),
        ],
    );
}

const GROUPS: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type doc
  relations
    define viewer: [user, group#member]
    define banned: [user, group#member]
    define can_view: viewer but not banned
    define both: viewer and banned
";

#[test]
fn cycles_in_data_terminate() {
    let s = Store::new(
        GROUPS,
        &[
            "group:a#member@group:b#member",
            "group:b#member@group:a#member",
            "group:a#member@user:x",
            "group:c#member@group:c#member",
            "doc:1#viewer@group:b#member",
            "doc:1#viewer@user:y",
            "doc:2#viewer@user:y",
            "doc:2#viewer@user:x",
            "doc:2#banned@group:a#member",
            "doc:3#viewer@group:c#member",
        ],
    );
    table(
        &s,
        &[
            ("group:b#member@user:x", "allow"),
            ("group:a#member@user:x", "allow"),
            ("group:a#member@user:y", "deny"),
            ("group:c#member@user:x", "deny"),
            ("doc:1#viewer@user:x", "allow"),
            ("doc:1#viewer@group:a#member", "allow"),
            ("doc:3#viewer@user:x", "deny"),
            ("doc:2#can_view@user:x", "deny"),
            // OpenFGA (GHSA-8cph-m685-6v6r): a cycle met under `but not` denies rather than
            // risk granting, even though y is in neither group.
            ("doc:2#can_view@user:y", "deny"),
            ("doc:2#both@user:x", "allow"),
            ("doc:2#both@user:y", "deny"),
        ],
    );
}

/// `doc:1#viewer@group:g{n-1}#member`, `group:g{i+1}#member@group:g{i}#member`,
/// `group:g0#member@user:x`: x is `n` userset hops below the document.
fn chain(n: usize) -> Store {
    let mut tuples = vec!["group:g0#member@user:x".to_owned()];
    for i in 1..n {
        tuples.push(format!("group:g{i}#member@group:g{}#member", i - 1));
    }
    tuples.push(format!("doc:1#viewer@group:g{}#member", n - 1));
    tuples.push(format!("doc:1#banned@group:g{}#member", n - 1));
    tuples.push("doc:1#viewer@user:x".to_owned());
    let refs: Vec<&str> = tuples.iter().map(String::as_str).collect();
    Store::new(GROUPS, &refs)
}

#[test]
fn depth_limit_is_resolution_too_complex() {
    // 24 nested groups resolve within OpenFGA's 25; 25 do not.
    let ok = chain(24);
    table(
        &ok,
        &[
            ("doc:1#viewer@user:x", "allow"),
            ("doc:1#banned@user:x", "allow"),
            // the same through the slow path (under `but not`)
            ("doc:1#can_view@user:x", "deny"),
            ("doc:1#banned@group:g0#member", "allow"),
        ],
    );
    let deep = chain(25);
    table(
        &deep,
        &[
            // a direct tuple answers before the deep branch matters (union)
            ("doc:1#viewer@user:x", "allow"),
            ("doc:1#banned@user:x", "resolution_too_complex"),
            ("doc:1#can_view@user:x", "resolution_too_complex"),
            // the userset g0#member is one hop closer than x: its own tuple in g1 is found at
            // the last level the budget allows
            ("doc:1#banned@group:g0#member", "allow"),
            ("doc:1#both@user:x", "resolution_too_complex"),
        ],
    );
}

#[test]
fn contextual_tuples() {
    let s = docs();
    let q = |t: &str, ctx: &[&str]| outcome(&s.check_with(t, ctx, 0));
    assert_eq!(q("doc:1#viewer@user:zed", &[]), "deny");
    assert_eq!(
        q("doc:1#viewer@user:zed", &["doc:1#viewer@user:zed"]),
        "allow"
    );
    // new objects, through a userset and a parent
    assert_eq!(
        q(
            "doc:new#viewer@user:zed",
            &[
                "group:new#member@user:zed",
                "folder:nf#viewer@group:new#member",
                "doc:new#parent@folder:nf"
            ]
        ),
        "allow"
    );
    // they combine with stored tuples and with exclusion
    assert_eq!(
        q(
            "doc:1#can_view@user:dan",
            &["doc:1#blocked@group:sub#member"]
        ),
        "deny"
    );
    // ephemeral: the next request does not see them
    assert_eq!(q("doc:1#viewer@user:zed", &[]), "deny");
    // validated like stored tuples
    assert_eq!(
        q("doc:1#viewer@user:zed", &["doc:1#can_view@user:zed"]),
        "invalid_tuple"
    );
    assert_eq!(
        q("doc:1#viewer@user:zed", &["doc:1#owner@user:*"]),
        "invalid_tuple"
    );
    assert_eq!(
        q("doc:1#viewer@user:zed", &["nope:1#viewer@user:zed"]),
        "unknown_type"
    );
    let many: Vec<String> = (0..=rebac::MAX_CONTEXTUAL_TUPLES)
        .map(|i| format!("doc:{i}#viewer@user:zed"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(q("doc:1#viewer@user:zed", &many), "validation_error");
}

#[test]
fn expired_tuples_are_absent() {
    let mut s = Store::new(GROUPS, &["doc:1#viewer@group:eng#member"]);
    s.write("group:eng#member@user:amy", Some(1_000));
    s.write("doc:1#viewer@user:bob", Some(500));
    let at = |s: &Store, t: &str, now: i64| outcome(&s.check_with(t, &[], now));
    assert_eq!(at(&s, "doc:1#viewer@user:amy", 999), "allow");
    assert_eq!(at(&s, "doc:1#viewer@user:amy", 1_000), "deny");
    assert_eq!(at(&s, "group:eng#member@user:amy", 1_000), "deny");
    assert_eq!(at(&s, "doc:1#viewer@user:bob", 499), "allow");
    assert_eq!(at(&s, "doc:1#viewer@user:bob", 500), "deny");
    // rewriting without expiry makes it permanent
    s.write("doc:1#viewer@user:bob", None);
    assert_eq!(at(&s, "doc:1#viewer@user:bob", i64::MAX), "allow");
}

#[test]
fn request_errors() {
    let s = docs();
    table(
        &s,
        &[
            ("nope:1#viewer@user:anne", "unknown_type"),
            ("doc:1#nope@user:anne", "unknown_relation"),
            ("doc:1#viewer@nope:anne", "unknown_type"),
            ("doc:1#viewer@group:eng#nope", "unknown_relation"),
            ("doc:1#viewer@anne", "invalid_user"),
            ("doc:1#viewer@group:*#member", "invalid_user"),
            ("doc:*#viewer@user:anne", "invalid_object"),
            ("doc:a:b#viewer@user:anne", "invalid_object"),
        ],
    );
}

#[test]
fn tuples_the_model_now_refuses_are_ignored() {
    // Written under an older model that allowed `user` on doc#viewer directly.
    let old = Store::new(
        "model
  schema 1.1
type user
type doc
  relations
    define viewer: [user]",
        &["doc:1#viewer@user:anne"],
    );
    let new = rebac::Model::parse(
        "model
  schema 1.1
type user
type team
  relations
    define member: [user]
type doc
  relations
    define viewer: [team#member]",
    )
    .unwrap();
    let req = rebac::CheckRequest::new(
        rebac::User::parse("user:anne").unwrap(),
        "viewer",
        rebac::ObjectRef::parse("doc:1").unwrap(),
        0,
    );
    assert!(rebac::check(&old.model, &old.graph, &req).unwrap());
    assert!(!rebac::check(&new, &old.graph, &req).unwrap());
}

#[test]
fn batch_check_answers_each_item() {
    let s = docs();
    let item = |id: &str, q: &str| {
        let k = rebac::TupleKey::parse(q).unwrap();
        rebac::BatchCheckItem {
            correlation_id: id.to_owned(),
            request: rebac::CheckRequest::new(
                k.user().clone(),
                k.relation(),
                k.object().clone(),
                0,
            ),
        }
    };
    let out = rebac::batch_check(
        &s.model,
        &s.graph,
        &[
            item("a", "doc:1#viewer@user:anne"),
            item("b-2", "doc:1#viewer@user:nobody"),
            item("c_3", "doc:1#nope@user:anne"),
        ],
    )
    .unwrap();
    let got: Vec<(String, String)> = out
        .iter()
        .map(|r| (r.correlation_id.clone(), outcome(&r.result)))
        .collect();
    assert_eq!(
        got,
        [
            ("a".to_owned(), "allow".to_owned()),
            ("b-2".to_owned(), "deny".to_owned()),
            ("c_3".to_owned(), "unknown_relation".to_owned())
        ]
    );
    let dup = rebac::batch_check(
        &s.model,
        &s.graph,
        &[
            item("a", "doc:1#viewer@user:anne"),
            item("a", "doc:1#viewer@user:anne"),
        ],
    );
    assert_eq!(dup.map_err(|e| e.code()).err(), Some("validation_error"));
    let bad = rebac::batch_check(
        &s.model,
        &s.graph,
        &[item("no spaces", "doc:1#viewer@user:anne")],
    );
    assert_eq!(bad.map_err(|e| e.code()).err(), Some("validation_error"));
    assert_eq!(
        rebac::batch_check(&s.model, &s.graph, &[])
            .map_err(|e| e.code())
            .err(),
        Some("validation_error")
    );
    let many: Vec<_> = (0..=rebac::MAX_BATCH_CHECK_ITEMS)
        .map(|i| item(&format!("i{i}"), "doc:1#viewer@user:anne"))
        .collect();
    assert_eq!(
        rebac::batch_check(&s.model, &s.graph, &many)
            .map_err(|e| e.code())
            .err(),
        Some("validation_error")
    );
}
