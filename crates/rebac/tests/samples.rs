//! OpenFGA's sample stores with their documented answers, and Warden's seed model.
//!
//! The Google Drive and GitHub models, tuples and expected answers are copied from
//! `github.com/openfga/sample-stores` (`stores/gdrive/README.md` and `store.fga.yaml`,
//! `stores/github/model.fga` and `store.fga.yaml`), Apache-2.0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use rebac::{Leaf, NodeValue, ObjectRef, User};
use serde_json::json;
use support::{Store, outcome};

const GDRIVE: &str = include_str!("models/gdrive.fga");
const GITHUB: &str = include_str!("models/github.fga");
const WARDEN: &str = include_str!("models/warden_seed.fga");

fn gdrive() -> Store {
    Store::new(
        GDRIVE,
        &[
            "group:contoso#member@user:anne",
            "group:contoso#member@user:beth",
            "group:fabrikam#member@user:charles",
            "doc:public-roadmap#parent@folder:product-2021",
            "doc:2021-roadmap#parent@folder:product-2021",
            "folder:product-2021#viewer@group:fabrikam#member",
            "folder:product-2021#owner@user:anne",
            "doc:2021-roadmap#viewer@user:beth",
            "doc:public-roadmap#viewer@user:*",
        ],
    )
}

fn github() -> Store {
    Store::new(
        GITHUB,
        &[
            "repo:openfga/openfga#owner@organization:openfga",
            "organization:openfga#repo_admin@organization:openfga#member",
            "organization:openfga#member@user:erik",
            "repo:openfga/openfga#admin@team:openfga/core#member",
            "repo:openfga/openfga#reader@user:anne",
            "repo:openfga/openfga#writer@user:beth",
            "team:openfga/core#member@user:charles",
            "team:openfga/core#member@team:openfga/backend#member",
            "team:openfga/backend#member@user:diane",
        ],
    )
}

fn rows(store: &Store, rows: &[(&str, &str)]) {
    for (q, want) in rows {
        assert_eq!(outcome(&store.check(q)), *want, "{q}");
    }
}

#[test]
fn gdrive_documented_answers() {
    let s = gdrive();
    rows(
        &s,
        &[
            // store.fga.yaml
            ("doc:2021-roadmap#can_write@user:anne", "allow"),
            ("doc:2021-roadmap#can_change_owner@user:beth", "deny"),
            ("doc:2021-roadmap#can_read@user:charles", "allow"),
            // README "Expected Outcomes"
            ("doc:2021-roadmap#can_write@user:charles", "deny"),
            ("doc:2021-roadmap#can_read@user:daniel", "deny"),
            ("doc:public-roadmap#can_read@user:daniel", "allow"),
            ("doc:public-roadmap#can_write@user:anne", "allow"),
            ("doc:public-roadmap#can_write@user:charles", "deny"),
        ],
    );
    assert_eq!(
        s.list_objects("doc", "can_read", "user:anne").unwrap(),
        ["doc:2021-roadmap", "doc:public-roadmap"]
    );
    assert_eq!(
        s.list_users("doc:2021-roadmap", "can_read", "user")
            .unwrap(),
        ["user:anne", "user:beth", "user:charles"]
    );
    assert_eq!(
        s.list_users("doc:public-roadmap", "viewer", "user")
            .unwrap(),
        ["user:*"]
    );
    assert_eq!(
        s.list_users("doc:2021-roadmap", "viewer", "user").unwrap(),
        ["user:beth"]
    );
    assert_eq!(
        s.list_users("folder:product-2021", "viewer", "group#member")
            .unwrap(),
        ["group:fabrikam#member"]
    );
    assert_eq!(
        s.list_users("folder:product-2021", "viewer", "user")
            .unwrap(),
        ["user:anne", "user:charles"]
    );
}

#[test]
fn github_documented_answers() {
    let s = github();
    rows(
        &s,
        &[
            ("repo:openfga/openfga#reader@user:anne", "allow"),
            ("repo:openfga/openfga#triager@user:anne", "deny"),
            ("repo:openfga/openfga#admin@user:beth", "deny"),
            ("repo:openfga/openfga#writer@user:charles", "allow"),
            ("repo:openfga/openfga#admin@user:diane", "allow"),
            ("repo:openfga/openfga#reader@user:erik", "allow"),
        ],
    );
    assert_eq!(
        s.list_users("repo:openfga/openfga", "reader", "user")
            .unwrap(),
        [
            "user:anne",
            "user:beth",
            "user:charles",
            "user:diane",
            "user:erik"
        ]
    );
    assert_eq!(
        s.list_objects("repo", "reader", "user:diane").unwrap(),
        ["repo:openfga/openfga"]
    );
    assert_eq!(
        s.list_users("repo:openfga/openfga", "writer", "user")
            .unwrap(),
        ["user:beth", "user:charles", "user:diane", "user:erik"]
    );
    assert_eq!(
        s.list_users("repo:openfga/openfga", "writer", "team#member")
            .unwrap(),
        ["team:openfga/backend#member", "team:openfga/core#member"]
    );
}

#[test]
fn gdrive_expand() {
    let s = gdrive();
    let tree = rebac::expand(
        &s.model,
        &s.graph,
        &ObjectRef::parse("doc:2021-roadmap").unwrap(),
        "can_read",
        0,
    )
    .unwrap();
    assert_eq!(
        tree.to_response_json(),
        json!({"tree": {"root": {
            "name": "doc:2021-roadmap#can_read",
            "union": {"nodes": [
                {"name": "doc:2021-roadmap#can_read", "leaf": {"computed": {"userset": "doc:2021-roadmap#viewer"}}},
                {"name": "doc:2021-roadmap#can_read", "leaf": {"computed": {"userset": "doc:2021-roadmap#owner"}}},
                {"name": "doc:2021-roadmap#can_read", "leaf": {"tupleToUserset": {
                    "tupleset": "doc:2021-roadmap#parent",
                    "computed": [{"userset": "folder:product-2021#viewer"}]
                }}}
            ]}
        }}})
    );
    let tree = rebac::expand(
        &s.model,
        &s.graph,
        &ObjectRef::parse("folder:product-2021").unwrap(),
        "viewer",
        0,
    )
    .unwrap();
    let NodeValue::Union(nodes) = &tree.root.value else {
        panic!("{tree:?}")
    };
    assert_eq!(
        nodes.nodes[0].value,
        NodeValue::Leaf(Leaf::Users(rebac::Users {
            users: vec!["group:fabrikam#member".into()]
        }))
    );
    let tree = rebac::expand(
        &s.model,
        &s.graph,
        &ObjectRef::parse("doc:public-roadmap").unwrap(),
        "viewer",
        0,
    )
    .unwrap();
    assert_eq!(
        tree.to_response_json(),
        json!({"tree": {"root": {"name": "doc:public-roadmap#viewer", "leaf": {"users": {"users": ["user:*"]}}}}})
    );
    let e = rebac::expand(
        &s.model,
        &s.graph,
        &ObjectRef::parse("doc:x").unwrap(),
        "nope",
        0,
    );
    assert_eq!(e.map_err(|e| e.code()).err(), Some("unknown_relation"));
}

/// Warden's seed: agents are assigned tasks, a task owns a repository's write access.
#[test]
fn warden_seed() {
    // A SPIFFE ID has a second `:` and so is not a valid OpenFGA id as it stands…
    for bad in [
        "agent:spiffe://example.org/agent/coder",
        "agent:spiffe://example.org/agent/coder#delegate",
    ] {
        assert_eq!(
            User::parse(bad).map_err(|e| e.code()).err(),
            Some("invalid_user")
        );
        assert_eq!(
            ObjectRef::parse(bad).map_err(|e| e.code()).err(),
            Some("invalid_object")
        );
    }
    // …so agents are named by the ID without its scheme.
    let coder = ObjectRef::for_spiffe_id("agent", "spiffe://example.org/agent/coder").unwrap();
    assert_eq!(coder.to_string(), "agent:example.org/agent/coder");

    let s = Store::new(
        WARDEN,
        &[
            "task:patch-1#assignee@agent:example.org/agent/coder",
            "repository:warden#owner_task@task:patch-1",
            "repository:docs#reader@agent:example.org/agent/reviewer",
        ],
    );
    rows(
        &s,
        &[
            (
                "repository:warden#writer@agent:example.org/agent/coder",
                "allow",
            ),
            (
                "repository:warden#reader@agent:example.org/agent/coder",
                "allow",
            ),
            (
                "repository:docs#writer@agent:example.org/agent/coder",
                "deny",
            ),
            (
                "repository:warden#writer@agent:example.org/agent/reviewer",
                "deny",
            ),
            (
                "repository:docs#reader@agent:example.org/agent/reviewer",
                "allow",
            ),
            ("repository:warden#writer@task:patch-1#assignee", "allow"),
        ],
    );
    assert_eq!(
        s.list_objects("repository", "reader", "agent:example.org/agent/coder")
            .unwrap(),
        ["repository:warden"]
    );
    assert_eq!(
        s.list_users("repository:warden", "writer", "agent")
            .unwrap(),
        ["agent:example.org/agent/coder"]
    );
    // Unassigning the task takes the access away.
    let mut s = s;
    assert!(s.graph.remove(
        &rebac::TupleKey::parse("task:patch-1#assignee@agent:example.org/agent/coder").unwrap()
    ));
    rows(
        &s,
        &[(
            "repository:warden#writer@agent:example.org/agent/coder",
            "deny",
        )],
    );
}
