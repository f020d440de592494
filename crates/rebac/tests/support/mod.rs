//! A model plus a graph, and one-line queries over them, for the integration tests.

#![allow(dead_code, reason = "each test file uses a subset")]

use rebac::{CheckRequest, Graph, Model, ObjectRef, RebacError, Tuple, TupleKey, User, UserFilter};

pub(crate) struct Store {
    pub(crate) model: Model,
    pub(crate) graph: Graph,
}

impl Store {
    /// Parses the model and writes the tuples (`object#relation@user`), each validated.
    pub(crate) fn new(dsl: &str, tuples: &[&str]) -> Store {
        let model = Model::parse(dsl).unwrap_or_else(|e| panic!("model: {e}"));
        let mut graph = Graph::new();
        for t in tuples {
            let key = TupleKey::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
            model
                .validate_tuple(&key)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            graph.insert(Tuple::new(key)).unwrap();
        }
        Store { model, graph }
    }

    pub(crate) fn write(&mut self, t: &str, expires_at_ms: Option<i64>) {
        let key = TupleKey::parse(t).unwrap();
        self.model.validate_tuple(&key).unwrap();
        self.graph.insert(Tuple { key, expires_at_ms }).unwrap();
    }

    /// Check `object#relation@user` at time 0.
    pub(crate) fn check(&self, tuple: &str) -> Result<bool, RebacError> {
        self.check_with(tuple, &[], 0)
    }

    pub(crate) fn check_with(
        &self,
        tuple: &str,
        contextual: &[&str],
        now_ms: i64,
    ) -> Result<bool, RebacError> {
        let (object, rest) = tuple.split_once('#').unwrap();
        let (relation, user) = rest.split_once('@').unwrap();
        let req = CheckRequest {
            user: User::parse(user)?,
            relation: relation.to_owned(),
            object: ObjectRef::parse(object)?,
            contextual_tuples: contextual
                .iter()
                .map(|t| TupleKey::parse(t).unwrap())
                .collect(),
            now_ms,
        };
        rebac::check(&self.model, &self.graph, &req)
    }

    pub(crate) fn list_objects(
        &self,
        object_type: &str,
        relation: &str,
        user: &str,
    ) -> Result<Vec<String>, RebacError> {
        rebac::list_objects(
            &self.model,
            &self.graph,
            object_type,
            relation,
            &User::parse(user)?,
            &[],
            0,
        )
    }

    /// ListUsers with one filter, `type` or `type#relation`; users as strings.
    pub(crate) fn list_users(
        &self,
        object: &str,
        relation: &str,
        filter: &str,
    ) -> Result<Vec<String>, RebacError> {
        Ok(self
            .list_users_full(object, relation, filter)?
            .users
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    pub(crate) fn list_users_full(
        &self,
        object: &str,
        relation: &str,
        filter: &str,
    ) -> Result<rebac::ListUsersResponse, RebacError> {
        let (type_name, relation_filter) = match filter.split_once('#') {
            Some((t, r)) => (t.to_owned(), Some(r.to_owned())),
            None => (filter.to_owned(), None),
        };
        rebac::list_users(
            &self.model,
            &self.graph,
            &ObjectRef::parse(object)?,
            relation,
            &[UserFilter {
                type_name,
                relation: relation_filter,
            }],
            &[],
            0,
        )
    }
}

/// Expected outcome of a query: allowed, denied, or an error code.
pub(crate) fn outcome(r: &Result<bool, RebacError>) -> String {
    match r {
        Ok(true) => "allow".into(),
        Ok(false) => "deny".into(),
        Err(e) => e.code().into(),
    }
}

/// A documents model exercising every rewrite: usersets, wildcards, tuple-to-userset,
/// exclusion and intersection.
pub(crate) const DOCS: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, user:*, group#member]
type folder
  relations
    define owner: [user]
    define parent: [folder]
    define viewer: [user, group#member] or owner or viewer from parent
type doc
  relations
    define parent: [folder]
    define owner: [user]
    define editor: [user, group#member] or owner
    define viewer: [user, user:*, group#member] or editor or viewer from parent
    define blocked: [user, group#member]
    define can_view: viewer but not blocked
    define approver: [user, user:*]
    define can_approve: editor and approver
    define open_approve: [user:*] and approver
";

/// [`DOCS`] with tuples covering nested groups, wildcards, folders and blocked users.
pub(crate) fn docs() -> Store {
    Store::new(
        DOCS,
        &[
            "doc:1#owner@user:anne",
            "doc:1#viewer@user:beth",
            "doc:1#editor@group:eng#member",
            "group:eng#member@user:carl",
            "group:eng#member@group:sub#member",
            "group:sub#member@user:dan",
            "doc:1#parent@folder:f",
            "folder:f#viewer@user:erin",
            "folder:f#parent@folder:root",
            "folder:root#owner@user:fay",
            "doc:pub#viewer@user:*",
            "doc:pub#blocked@user:gus",
            "doc:1#blocked@user:carl",
            "doc:1#approver@user:anne",
            "doc:1#approver@user:dan",
            "group:all#member@user:*",
            "doc:2#viewer@group:all#member",
            "doc:3#approver@user:*",
            "doc:3#owner@user:hal",
            "doc:4#open_approve@user:*",
            "doc:4#approver@user:ivy",
        ],
    )
}
