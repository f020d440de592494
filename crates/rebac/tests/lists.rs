//! ListObjects and ListUsers: documented behaviour, and agreement with Check on random
//! graphs — three different walks (Check down from the object with the userset fast path,
//! ListObjects up from the user, ListUsers down collecting users) must give one answer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rebac::{ObjectRef, TupleKey, User, UserFilter};
use serde_json::json;
use support::{DOCS, Store, docs};

#[test]
fn list_objects_walks_up_from_the_user() {
    let s = docs();
    let lo = |t: &str, r: &str, u: &str| s.list_objects(t, r, u).unwrap();
    assert_eq!(
        lo("doc", "viewer", "user:dan"),
        ["doc:1", "doc:2", "doc:pub"]
    );
    assert_eq!(lo("doc", "can_view", "user:carl"), ["doc:2", "doc:pub"]);
    assert_eq!(lo("doc", "can_view", "user:gus"), ["doc:2"]);
    assert_eq!(
        lo("doc", "viewer", "user:fay"),
        ["doc:1", "doc:2", "doc:pub"]
    );
    assert_eq!(
        lo("folder", "viewer", "user:fay"),
        ["folder:f", "folder:root"]
    );
    assert_eq!(lo("doc", "can_approve", "user:dan"), ["doc:1"]);
    assert_eq!(lo("doc", "open_approve", "user:ivy"), ["doc:4"]);
    assert_eq!(lo("doc", "viewer", "user:*"), ["doc:2", "doc:pub"]);
    assert_eq!(lo("doc", "viewer", "group:eng#member"), ["doc:1"]);
    assert_eq!(
        lo("group", "member", "user:dan"),
        ["group:all", "group:eng", "group:sub"]
    );
    assert_eq!(
        lo("group", "member", "group:sub#member"),
        ["group:eng", "group:sub"]
    );
    assert!(lo("doc", "owner", "user:nobody").is_empty());
    // contextual tuples
    let got = rebac::list_objects(
        &s.model,
        &s.graph,
        "doc",
        "viewer",
        &User::parse("user:zed").unwrap(),
        &[TupleKey::parse("folder:root#owner@user:zed").unwrap()],
        0,
    )
    .unwrap();
    assert_eq!(got, ["doc:1", "doc:2", "doc:pub"]);
    // request errors
    let code = |t: &str, r: &str, u: &str| s.list_objects(t, r, u).map_err(|e| e.code()).err();
    assert_eq!(code("nope", "viewer", "user:anne"), Some("unknown_type"));
    assert_eq!(code("doc", "nope", "user:anne"), Some("unknown_relation"));
    assert_eq!(code("doc", "viewer", "nope:anne"), Some("unknown_type"));
}

#[test]
fn list_objects_depth_limit() {
    let chain = |n: usize| {
        let mut tuples = vec!["group:g0#member@user:x".to_owned()];
        for i in 1..n {
            tuples.push(format!("group:g{i}#member@group:g{}#member", i - 1));
        }
        tuples.push(format!("doc:1#blocked@group:g{}#member", n - 1));
        let refs: Vec<&str> = tuples.iter().map(String::as_str).collect();
        Store::new(DOCS, &refs)
    };
    assert_eq!(
        chain(24).list_objects("doc", "blocked", "user:x").unwrap(),
        ["doc:1"]
    );
    assert_eq!(
        chain(25)
            .list_objects("doc", "blocked", "user:x")
            .map_err(|e| e.code())
            .err(),
        Some("resolution_too_complex")
    );
}

#[test]
fn list_users_returns_objects_wildcards_and_usersets() {
    let s = docs();
    let lu = |o: &str, r: &str, f: &str| s.list_users(o, r, f).unwrap();
    assert_eq!(
        lu("doc:1", "viewer", "user"),
        [
            "user:anne",
            "user:beth",
            "user:carl",
            "user:dan",
            "user:erin",
            "user:fay"
        ]
    );
    assert_eq!(
        lu("doc:1", "can_view", "user"),
        [
            "user:anne",
            "user:beth",
            "user:dan",
            "user:erin",
            "user:fay"
        ]
    );
    assert_eq!(
        lu("doc:1", "viewer", "group#member"),
        ["group:eng#member", "group:sub#member"]
    );
    assert_eq!(
        lu("group:eng", "member", "group#member"),
        ["group:eng#member", "group:sub#member"]
    );
    assert_eq!(lu("doc:2", "viewer", "user"), ["user:*"]);
    assert_eq!(lu("doc:4", "open_approve", "user"), ["user:ivy"]);
    assert_eq!(lu("doc:3", "can_approve", "user"), ["user:hal"]);
    assert!(lu("doc:none", "viewer", "user").is_empty());
    let full = s.list_users_full("doc:pub", "can_view", "user").unwrap();
    assert_eq!(
        full.to_json(),
        json!({"users": [{"wildcard": {"type": "user"}}], "excluded_users": [{"object": {"type": "user", "id": "gus"}}]})
    );
    let full = s
        .list_users_full("doc:1", "viewer", "group#member")
        .unwrap();
    assert_eq!(
        full.to_json()["users"][0],
        json!({"userset": {"type": "group", "id": "eng", "relation": "member"}})
    );
    let code = |filters: &[UserFilter]| {
        rebac::list_users(
            &s.model,
            &s.graph,
            &ObjectRef::parse("doc:1").unwrap(),
            "viewer",
            filters,
            &[],
            0,
        )
        .map_err(|e| e.code())
        .err()
    };
    let f = |t: &str, r: Option<&str>| UserFilter {
        type_name: t.into(),
        relation: r.map(Into::into),
    };
    assert_eq!(code(&[]), Some("validation_error"));
    assert_eq!(
        code(&[f("user", None), f("group", None)]),
        Some("validation_error")
    );
    assert_eq!(code(&[f("nope", None)]), Some("unknown_type"));
    assert_eq!(code(&[f("group", Some("nope"))]), Some("unknown_relation"));
}

const RANDOM_MODEL: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, user:*, group#member]
    define admin: [user]
    define manager: admin or member
type folder
  relations
    define parent: [folder]
    define owner: [user, group#member]
    define blocked: [user, group#member]
    define viewer: [user, user:*, group#member] or owner or viewer from parent
    define visible: viewer but not blocked
type doc
  relations
    define parent: [folder]
    define owner: [user]
    define approver: [user, user:*, group#member]
    define editor: [user, group#member] or owner
    define viewer: [user, user:*, group#member] or editor or viewer from parent
    define blocked: [user, group#member] or blocked from parent
    define can_view: viewer but not blocked
    define can_approve: editor and approver
    define strict: (viewer and approver) but not (blocked or owner)
    define not_viewer: [user] but not viewer
    define via_visible: visible from parent
";

const USERS: usize = 5;
const GROUPS: usize = 4;
const FOLDERS: usize = 4;
const DOCS_N: usize = 5;

/// Random tuples; with `acyclic`, groups and folders only nest upwards.
fn random_store(rng: &mut StdRng, acyclic: bool) -> Store {
    let mut t: Vec<String> = Vec::new();
    let users: Vec<String> = (0..USERS).map(|i| format!("user:u{i}")).collect();
    let mut subjects: Vec<String> = users.clone();
    subjects.extend((0..GROUPS).map(|i| format!("group:g{i}#member")));
    let p = 0.12;
    for g in 0..GROUPS {
        for u in &users {
            if rng.gen_bool(p * 2.0) {
                t.push(format!("group:g{g}#member@{u}"));
            }
            if rng.gen_bool(p) {
                t.push(format!("group:g{g}#admin@{u}"));
            }
        }
        if rng.gen_bool(0.05) {
            t.push(format!("group:g{g}#member@user:*"));
        }
        for h in 0..GROUPS {
            if (h < g || (!acyclic && h != g)) && rng.gen_bool(0.3) {
                t.push(format!("group:g{g}#member@group:g{h}#member"));
            }
        }
    }
    for f in 0..FOLDERS {
        for h in 0..FOLDERS {
            if (h > f || (!acyclic && h != f)) && rng.gen_bool(0.25) {
                t.push(format!("folder:f{f}#parent@folder:f{h}"));
            }
        }
        for s in &subjects {
            for rel in ["owner", "blocked", "viewer"] {
                if rng.gen_bool(p / 2.0) {
                    t.push(format!("folder:f{f}#{rel}@{s}"));
                }
            }
        }
        if rng.gen_bool(0.1) {
            t.push(format!("folder:f{f}#viewer@user:*"));
        }
    }
    for d in 0..DOCS_N {
        if rng.gen_bool(0.7) {
            t.push(format!(
                "doc:d{d}#parent@folder:f{}",
                rng.gen_range(0..FOLDERS)
            ));
        }
        for u in &users {
            if rng.gen_bool(p / 2.0) {
                t.push(format!("doc:d{d}#owner@{u}"));
            }
            t.push(format!("doc:d{d}#not_viewer@{u}"));
        }
        for s in &subjects {
            for rel in ["approver", "editor", "viewer", "blocked"] {
                if rng.gen_bool(p / 2.0) {
                    t.push(format!("doc:d{d}#{rel}@{s}"));
                }
            }
        }
        for rel in ["approver", "viewer"] {
            if rng.gen_bool(0.1) {
                t.push(format!("doc:d{d}#{rel}@user:*"));
            }
        }
    }
    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
    Store::new(RANDOM_MODEL, &refs)
}

fn objects() -> Vec<(String, Vec<&'static str>)> {
    let mut v = Vec::new();
    for g in 0..GROUPS {
        v.push((format!("group:g{g}"), vec!["member", "admin", "manager"]));
    }
    for f in 0..FOLDERS {
        v.push((
            format!("folder:f{f}"),
            vec!["owner", "blocked", "viewer", "visible"],
        ));
    }
    for d in 0..DOCS_N {
        v.push((
            format!("doc:d{d}"),
            vec![
                "owner",
                "approver",
                "editor",
                "viewer",
                "blocked",
                "can_view",
                "can_approve",
                "strict",
                "not_viewer",
                "via_visible",
            ],
        ));
    }
    v
}

fn subjects() -> Vec<String> {
    let mut s: Vec<String> = (0..USERS + 1).map(|i| format!("user:u{i}")).collect();
    s.push("user:*".into());
    s.extend((0..GROUPS).map(|g| format!("group:g{g}#member")));
    s
}

/// Check, ListObjects and ListUsers agree on every (object, relation, user).
fn agree(s: &Store, acyclic: bool) {
    let mut failures = Vec::new();
    for (object, relations) in objects() {
        let object_type = object.split(':').next().unwrap();
        for rel in relations {
            let users = s.list_users_full(&object, rel, "user").unwrap();
            let usersets = s.list_users(&object, rel, "group#member").unwrap();
            let wildcard = users.users.iter().any(|u| matches!(u, User::Wildcard(_)));
            for subject in subjects() {
                let q = format!("{object}#{rel}@{subject}");
                let c = s.check(&q).unwrap();
                let lo = s
                    .list_objects(object_type, rel, &subject)
                    .unwrap()
                    .contains(&object);
                if c != lo {
                    failures.push(format!("{q}: check {c}, list_objects {lo}"));
                }
                let user = User::parse(&subject).unwrap();
                let lu = match &user {
                    User::Userset { .. } => usersets.contains(&subject),
                    User::Wildcard(_) => wildcard,
                    User::Object(_) => {
                        users.users.contains(&user)
                            || (wildcard && !users.excluded_users.contains(&user))
                    }
                };
                if c != lu {
                    failures.push(format!("{q}: check {c}, list_users {lu}"));
                }
                if acyclic
                    && object_type == "doc"
                    && rel == "viewer"
                    && !subject.contains('#')
                    && subject != "user:*"
                {
                    let neg = s.check(&format!("{object}#not_viewer@{subject}")).unwrap();
                    let has_tuple = subject != "user:u5";
                    if has_tuple && neg == c {
                        failures.push(format!("{q}: viewer {c} and not_viewer {neg}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn random_graphs_agree_across_queries() {
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..30 {
        let acyclic = round % 2 == 0;
        let s = random_store(&mut rng, acyclic);
        agree(&s, acyclic);
    }
}
