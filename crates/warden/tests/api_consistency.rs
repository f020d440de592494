//! The API answers consistently, against the real binary: a caller whose role may not call a
//! route gets 403 `forbidden` before its body or query is looked at (so a read-only token
//! learns nothing about what a valid admin request looks like), list limits outside their
//! documented range are refused rather than quietly clamped, and a 400 always carries a
//! specific code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use common::{Install, expect_error};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_is_checked_before_the_body_and_limits_are_refused_not_clamped() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let auditor = common::create_token_secret(&server, &admin, "audit", "auditor").await;
    let enforcer = common::create_token_secret(&server, &admin, "pep", "enforcer").await;

    let send = |method: Method, path: &str, token: &str, body: Option<&'static str>| {
        let mut req = server
            .http
            .request(method, server.at(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        req.send()
    };

    // Admin routes with bodies that would not even parse: the auditor is told 403, not 400.
    for (method, path, body) in [
        (Method::POST, "/v1/tasks", "{}"),
        (Method::POST, "/v1/tasks", "not json"),
        (Method::POST, "/v1/entries", r#"{"bogus": 1}"#),
        (Method::POST, "/v1/holds", "[]"),
        (Method::PUT, "/v1/rebac/model", "{"),
        (Method::POST, "/v1/policies/broker", r#"{"files": 7}"#),
        (
            Method::POST,
            "/v1/tokens",
            r#"{"name": "", "role": "root"}"#,
        ),
        (Method::POST, "/v1/leases/revoke", r#"{"prefix": 1}"#),
    ] {
        let what = format!("auditor {method} {path} {body}");
        let resp = send(method.clone(), path, &auditor, Some(body))
            .await
            .unwrap();
        expect_error(&what, resp, 403, "forbidden").await;
        // The admin gets the body's error: the route exists and validates.
        let resp = send(method, path, &admin, Some(body)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "admin {what}");
    }
    // An enforcer's decision routes with a broken body: still 403 for the auditor.
    let resp = send(Method::POST, "/v1/authorize", &auditor, Some("[]"))
        .await
        .unwrap();
    expect_error("auditor authorizes", resp, 403, "forbidden").await;
    // And a query the enforcer may not make is refused before it is parsed.
    let resp = send(Method::GET, "/v1/tasks?limit=zero", &enforcer, None)
        .await
        .unwrap();
    expect_error("enforcer lists tasks", resp, 403, "forbidden").await;

    // Limits are 1-1000 as documented: 0, 1001, an overflow and a word are refused.
    for limit in ["0", "1001", "99999999999999999999", "ten"] {
        let resp = send(
            Method::GET,
            &format!("/v1/tasks?limit={limit}"),
            &auditor,
            None,
        )
        .await
        .unwrap();
        expect_error(&format!("limit={limit}"), resp, 400, "invalid_query").await;
    }
    let resp = send(Method::GET, "/v1/tasks?limit=1000", &auditor, None)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}
