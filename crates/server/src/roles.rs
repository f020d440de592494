//! Which roles may call each authenticated route, checked before the handler runs: a caller
//! whose role does not allow the route gets 403 `forbidden` before its body or query is read,
//! so a request's validity is never disclosed to a caller that may not make it. The handlers
//! check again (`Caller::require`); this table is the first gate, and a unit test keeps it in
//! step with the route table.

use axum::{
    extract::{MatchedPath, Request},
    http::{Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    auth::{Caller, Role},
    error::ApiError,
};

use Role::{Admin, Approver, Auditor, Enforcer};

/// Readers of relationships: enforcers ask, auditors look.
const REBAC_READ: &[Role] = &[Enforcer, Auditor];

/// `(method, route, roles)`: any of `roles` (an admin always) may call it; an empty list means
/// any authenticated caller.
pub(crate) const ROUTE_ROLES: &[(Method, &str, &[Role])] = &[
    (Method::GET, "/v1/audit/entries", &[Auditor]),
    (Method::POST, "/v1/audit/checkpoint", &[Admin]),
    (Method::POST, "/v1/tokens", &[Admin]),
    (Method::GET, "/v1/tokens", &[Admin]),
    (Method::DELETE, "/v1/tokens/{id}", &[Admin]),
    (Method::GET, "/v1/whoami", &[]),
    (Method::POST, "/v1/entries", &[Admin]),
    (Method::POST, "/v1/entries/batch", &[Admin]),
    (Method::GET, "/v1/entries", &[Auditor]),
    (Method::GET, "/v1/entries/{id}", &[Auditor]),
    (Method::DELETE, "/v1/entries/{id}", &[Admin]),
    (Method::POST, "/v1/join-tokens", &[Admin]),
    (Method::POST, "/v1/denylist", &[Admin]),
    (Method::GET, "/v1/denylist", &[Auditor]),
    (Method::DELETE, "/v1/denylist/{kind}/{value}", &[Admin]),
    (Method::GET, "/v1/ca", &[Auditor]),
    (Method::POST, "/v1/ca/rotate", &[Admin]),
    (Method::POST, "/v1/ca/keys/{id}/revoke", &[Admin]),
    (Method::POST, "/v1/federations", &[Admin]),
    (Method::GET, "/v1/federations", &[Auditor]),
    (Method::PUT, "/v1/federations/{trust_domain}", &[Admin]),
    (Method::DELETE, "/v1/federations/{trust_domain}", &[Admin]),
    (
        Method::POST,
        "/v1/federations/{trust_domain}/refresh",
        &[Admin],
    ),
    (
        Method::PUT,
        "/v1/federations/{trust_domain}/limits",
        &[Admin],
    ),
    (Method::GET, "/v1/policies", &[Auditor]),
    (Method::POST, "/v1/policies/{name}", &[Admin]),
    (Method::GET, "/v1/policies/{name}", &[Auditor]),
    (Method::POST, "/v1/policies/{name}/rollback", &[Admin]),
    (Method::POST, "/v1/policies/{name}/simulate", &[Auditor]),
    (Method::POST, "/v1/authorize", &[Enforcer]),
    (Method::POST, "/access/v1/evaluation", &[Enforcer]),
    (Method::POST, "/access/v1/evaluations", &[Enforcer]),
    (Method::POST, "/v1/data/{*path}", &[Enforcer]),
    (Method::POST, "/v1/git/authorize", &[Enforcer]),
    (Method::PUT, "/v1/rebac/model", &[Admin]),
    (Method::GET, "/v1/rebac/model", REBAC_READ),
    (Method::GET, "/v1/rebac/stores", REBAC_READ),
    (Method::POST, "/v1/rebac/tuples", &[Admin]),
    (Method::GET, "/v1/rebac/tuples", REBAC_READ),
    (Method::POST, "/v1/rebac/check", REBAC_READ),
    (Method::POST, "/v1/rebac/batch-check", REBAC_READ),
    (Method::POST, "/v1/rebac/expand", REBAC_READ),
    (Method::POST, "/v1/rebac/list-objects", REBAC_READ),
    (Method::POST, "/v1/rebac/list-users", REBAC_READ),
    (Method::GET, "/v1/rebac/changes", REBAC_READ),
    (Method::PUT, "/v1/rebac/stores/{store}/model", &[Admin]),
    (Method::GET, "/v1/rebac/stores/{store}/model", REBAC_READ),
    (Method::POST, "/v1/rebac/stores/{store}/tuples", &[Admin]),
    (Method::GET, "/v1/rebac/stores/{store}/tuples", REBAC_READ),
    (Method::POST, "/v1/rebac/stores/{store}/check", REBAC_READ),
    (
        Method::POST,
        "/v1/rebac/stores/{store}/batch-check",
        REBAC_READ,
    ),
    (Method::POST, "/v1/rebac/stores/{store}/expand", REBAC_READ),
    (
        Method::POST,
        "/v1/rebac/stores/{store}/list-objects",
        REBAC_READ,
    ),
    (
        Method::POST,
        "/v1/rebac/stores/{store}/list-users",
        REBAC_READ,
    ),
    (Method::GET, "/v1/rebac/stores/{store}/changes", REBAC_READ),
    (Method::POST, "/oauth2/introspect", &[Enforcer]),
    (Method::GET, "/v1/leases", &[Auditor]),
    (Method::POST, "/v1/leases/revoke", &[Admin]),
    (Method::POST, "/v1/leases/renew", &[Admin]),
    (Method::POST, "/v1/holds", &[Admin]),
    (Method::GET, "/v1/holds", &[Auditor]),
    (Method::DELETE, "/v1/holds/{kind}/{value}", &[Admin]),
    (Method::GET, "/v1/databases", &[Auditor]),
    (Method::PUT, "/v1/databases/{name}", &[Admin]),
    (Method::DELETE, "/v1/databases/{name}", &[Admin]),
    (Method::GET, "/v1/database-roles", &[Auditor]),
    (Method::PUT, "/v1/database-roles/{name}", &[Admin]),
    (Method::DELETE, "/v1/database-roles/{name}", &[Admin]),
    (Method::GET, "/v1/secrets", &[Auditor]),
    (Method::PUT, "/v1/secrets/{name}", &[Admin]),
    (Method::DELETE, "/v1/secrets/{name}", &[Admin]),
    (Method::POST, "/v1/secrets/{name}/reveal", &[Admin]),
    (Method::POST, "/v1/tasks", &[Admin]),
    (Method::GET, "/v1/tasks", &[Auditor]),
    (Method::GET, "/v1/tasks/{id}", &[Auditor]),
    (Method::POST, "/v1/tasks/{id}/agents", &[Admin]),
    (Method::POST, "/v1/tasks/{id}/end", &[Admin]),
    (Method::POST, "/v1/risk", &[Admin]),
    (Method::GET, "/v1/risk", &[Auditor]),
    (Method::GET, "/v1/approvals", &[Approver, Auditor]),
    (Method::POST, "/v1/approvals/{id}", &[Approver]),
];

/// The roles that may call `method` on the matched route `path`; `None` for a route the
/// table does not know (refused: fail closed).
pub(crate) fn roles_for(method: &Method, path: &str) -> Option<&'static [Role]> {
    // HEAD is answered by the GET route.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTE_ROLES
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map(|(_, _, roles)| *roles)
}

/// Middleware for the authenticated routes, inside authentication: 403 `forbidden` unless the
/// caller's role may call the matched route — before the handler reads the body.
pub(crate) async fn require_route_role(req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>() else {
        // Authentication runs first and always sets the caller; without one, nothing passes.
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this route needs an API token",
        )
        .into_response();
    };
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let roles = roles_for(req.method(), &path);
    let allowed = match roles {
        None => false,
        Some([]) => true,
        Some(roles) => roles.iter().any(|r| caller.role.allows(*r)),
    };
    if allowed {
        return next.run(req).await;
    }
    let needed = match roles {
        Some(roles) if !roles.is_empty() => roles
            .iter()
            .map(|r| format!("`{}`", r.as_str()))
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "a role set for this route (none is)".to_owned(),
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "token `{}` has role `{}`; this needs {needed}",
            caller.name,
            caller.role.as_str()
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// The routes the router serves (as axum matches them, which is what the middleware
    /// looks up) against the table, both ways.
    #[test]
    fn every_authenticated_route_has_its_roles_and_no_public_route_does() {
        let (public, authenticated) = crate::route_table();
        let routes = |r: utoipa_axum::router::OpenApiRouter<std::sync::Arc<crate::AppState>>| {
            crate::tests::served_routes(&r.split_for_parts().0)
        };
        let authenticated = routes(authenticated);
        assert!(authenticated.len() > 70, "{authenticated:?}");
        for (method, path) in &authenticated {
            assert!(
                roles_for(method, path).is_some(),
                "{method} {path} has no roles in ROUTE_ROLES"
            );
        }
        for (method, path, _) in ROUTE_ROLES {
            assert!(
                authenticated.contains(&(method.clone(), (*path).to_owned())),
                "ROUTE_ROLES names {method} {path}, which is not an authenticated route"
            );
        }
        for (method, path) in routes(public) {
            assert!(
                roles_for(&method, &path).is_none(),
                "{method} {path} is public but has roles"
            );
        }
    }

    #[test]
    fn admin_passes_everywhere_and_head_is_get() {
        for (method, path, roles) in ROUTE_ROLES {
            assert!(roles.is_empty() || roles.iter().any(|r| Role::Admin.allows(*r)));
            assert_eq!(roles_for(method, path), Some(*roles));
        }
        assert_eq!(roles_for(&Method::HEAD, "/v1/tasks"), Some(&[Auditor][..]));
        assert_eq!(roles_for(&Method::PATCH, "/v1/tasks"), None);
    }
}
