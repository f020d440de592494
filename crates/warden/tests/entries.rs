//! End-to-end tests of registration entries: `POST/GET/DELETE /v1/entries` (validation with
//! stable error codes, roles, conflicts), what the ledger records about them, the
//! `warden entry …` commands, and persistence across a restart. Each test has its own data
//! directory and port.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::time::Duration;

use common::{Install, Server, create_token_secret, expect_error, run, wait_until, warden};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

/// The trust domain `warden init` uses by default.
const TD: &str = "example.org";

/// The fields of an entry, exactly.
const ENTRY_KEYS: [&str; 9] = [
    "agent_kind",
    "created_unix_ms",
    "description",
    "id",
    "jwt_ttl_secs",
    "owner",
    "selectors",
    "spiffe_id",
    "x509_ttl_secs",
];

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn sha(c: char) -> String {
    format!("unix:sha256:{}", c.to_string().repeat(64))
}

/// `POST /v1/entries` with a JSON body and a request id.
async fn post_entry(server: &Server, token: &str, body: &Value, rid: &str) -> reqwest::Response {
    server
        .http
        .post(server.at("/v1/entries"))
        .bearer_auth(token)
        .header("x-request-id", rid)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Creates an entry (must be 201 with a JSON entry) and checks its shape.
async fn create_entry(server: &Server, token: &str, body: &Value) -> Value {
    let before = now_ms();
    let resp = post_entry(server, token, body, "create").await;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "create {body}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let entry: Value = serde_json::from_str(&text).unwrap();
    check_entry_shape(&entry);
    let created = entry["created_unix_ms"].as_i64().unwrap();
    assert!(
        (before..=now_ms()).contains(&created),
        "created_unix_ms {created} not within the call: {entry}"
    );
    entry
}

/// `ent_` + 16 lowercase hex.
fn is_entry_id(id: &str) -> bool {
    id.strip_prefix("ent_").is_some_and(|hex| {
        hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The entry has exactly the documented fields with the documented types.
fn check_entry_shape(entry: &Value) {
    let obj = entry
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {entry}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ENTRY_KEYS, "fields of {entry}");
    assert!(is_entry_id(entry["id"].as_str().unwrap()), "id: {entry}");
    assert!(entry["spiffe_id"].is_string(), "{entry}");
    assert!(entry["created_unix_ms"].is_i64(), "{entry}");
    let selectors: Vec<&str> = entry["selectors"]
        .as_array()
        .unwrap_or_else(|| panic!("selectors: {entry}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(!selectors.is_empty(), "{entry}");
    let mut sorted = selectors.clone();
    sorted.sort_unstable();
    assert_eq!(selectors, sorted, "selectors not sorted: {entry}");
}

/// `GET path` returning status and JSON (or `Null` for an empty body).
async fn get(server: &Server, path: &str, token: &str) -> (StatusCode, Value) {
    let resp = server
        .http
        .get(server.at(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    };
    (status, body)
}

async fn list(server: &Server, token: &str) -> Vec<Value> {
    let (status, body) = get(server, "/v1/entries", token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"))
        .clone()
}

async fn delete(server: &Server, id: &str, token: &str, rid: &str) -> reqwest::Response {
    server
        .http
        .delete(server.at(&format!("/v1/entries/{id}")))
        .bearer_auth(token)
        .header("x-request-id", rid)
        .send()
        .await
        .unwrap()
}

/// The ledger events whose action is `action`.
fn events<'a>(entries: &'a [Value], action: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["action"] == action)
        .collect()
}

/// The event whose `fields.request_id` is `id` (exactly one).
fn event_by_request_id<'a>(entries: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = entries
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["fields"]["request_id"] == id)
        .collect();
    assert_eq!(found.len(), 1, "events with request id {id}: {found:#?}");
    found[0]
}

/// Waits (bounded) until the wall clock has passed `ms`, so the next entry is strictly newer.
async fn clock_past(ms: i64) {
    assert!(
        wait_until(Duration::from_secs(5), || now_ms() > ms).await,
        "clock stuck"
    );
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn entries_are_created_listed_shown_deleted_and_recorded() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    assert!(list(&server, &admin).await.is_empty());

    // Every optional field; selectors sent unsorted.
    let coder_id = format!("spiffe://{TD}/agent/coder");
    let full = create_entry(
        &server,
        &admin,
        &json!({
            "spiffe_id": coder_id,
            "selectors": ["unix:uid:1000", "unix:path:/usr/bin/python3", "unix:gid:50"],
            "x509_ttl_secs": 3600,
            "jwt_ttl_secs": 300,
            "agent_kind": "coder",
            "owner": "alice",
            "description": "writes code; reviewed by Bob",
        }),
    )
    .await;
    assert_eq!(full["spiffe_id"], coder_id.as_str());
    assert_eq!(
        full["selectors"],
        json!(["unix:gid:50", "unix:path:/usr/bin/python3", "unix:uid:1000"])
    );
    assert_eq!(full["x509_ttl_secs"], 3600);
    assert_eq!(full["jwt_ttl_secs"], 300);
    assert_eq!(full["agent_kind"], "coder");
    assert_eq!(full["owner"], "alice");
    assert_eq!(full["description"], "writes code; reviewed by Bob");

    // Only what is required: the optional fields are null.
    clock_past(full["created_unix_ms"].as_i64().unwrap()).await;
    let reviewer_id = format!("spiffe://{TD}/agent/reviewer");
    let minimal = create_entry(
        &server,
        &admin,
        &json!({"spiffe_id": reviewer_id, "selectors": [sha('e')]}),
    )
    .await;
    assert_eq!(minimal["spiffe_id"], reviewer_id.as_str());
    assert_eq!(minimal["selectors"], json!([sha('e')]));
    for field in [
        "x509_ttl_secs",
        "jwt_ttl_secs",
        "agent_kind",
        "owner",
        "description",
    ] {
        assert!(minimal[field].is_null(), "{field}: {minimal}");
    }

    // The same SPIFFE ID with another set of selectors is another entry, not a conflict.
    clock_past(minimal["created_unix_ms"].as_i64().unwrap()).await;
    let second_coder = create_entry(
        &server,
        &admin,
        &json!({"spiffe_id": coder_id, "selectors": ["unix:user:coder", "unix:uid:1000"]}),
    )
    .await;
    assert_eq!(
        second_coder["selectors"],
        json!(["unix:uid:1000", "unix:user:coder"])
    );

    let ids: Vec<&str> = [&full, &minimal, &second_coder]
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );

    // Listed oldest first, exactly as created; each shown by id.
    let listed = list(&server, &admin).await;
    assert_eq!(
        listed,
        vec![full.clone(), minimal.clone(), second_coder.clone()]
    );
    for e in &listed {
        let id = e["id"].as_str().unwrap();
        let (status, shown) = get(&server, &format!("/v1/entries/{id}"), &admin).await;
        assert_eq!(status, StatusCode::OK, "{shown}");
        assert_eq!(&shown, e);
    }

    // Delete the first: 204 with no body, then it is gone; deleting again is 404.
    let resp = delete(&server, ids[0], &admin, "delete-1").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.text().await.unwrap().is_empty());
    let resp = server
        .http
        .get(server.at(&format!("/v1/entries/{}", ids[0])))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error("show a deleted entry", resp, 404, "not_found").await;
    let resp = delete(&server, ids[0], &admin, "delete-again").await;
    expect_error("delete twice", resp, 404, "not_found").await;
    assert_eq!(
        list(&server, &admin).await,
        vec![minimal.clone(), second_coder.clone()]
    );

    // The ledger: one entry.create per entry, one entry.delete, with the right fields.
    let ledger = server.all_entries(&admin).await;
    let creates = events(&ledger, "entry.create");
    assert_eq!(creates.len(), 3, "{creates:#?}");
    for (ev, entry) in creates.iter().zip([&full, &minimal, &second_coder]) {
        assert_eq!(ev["class_uid"], 3005, "{ev}");
        assert_eq!(ev["outcome"], "success", "{ev}");
        assert_eq!(ev["actor"], "token:bootstrap", "{ev}");
        assert_eq!(ev["fields"]["entry_id"], entry["id"], "{ev}");
        assert_eq!(ev["fields"]["spiffe_id"], entry["spiffe_id"], "{ev}");
        assert_eq!(ev["fields"]["selectors"], entry["selectors"], "{ev}");
    }
    let deletes = events(&ledger, "entry.delete");
    assert_eq!(
        deletes.len(),
        1,
        "the refused delete was recorded: {deletes:#?}"
    );
    let del = deletes[0];
    assert_eq!(del["outcome"], "success", "{del}");
    assert_eq!(del["actor"], "token:bootstrap", "{del}");
    assert_eq!(del["fields"]["entry_id"], ids[0], "{del}");
    assert_eq!(del["fields"]["spiffe_id"], coder_id.as_str(), "{del}");
    // The refused delete is an ordinary failed request.
    let again = event_by_request_id(&ledger, "delete-again");
    assert_eq!(again["action"], "api.request");
    assert_eq!(again["outcome"], "failure");
    assert_eq!(again["fields"]["status"], 404);
    server.stop().await;
}

/// The limits are inclusive: the largest and smallest accepted values are accepted.
#[tokio::test]
async fn limits_are_inclusive() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let sixteen: Vec<String> = (0..16).map(|i| format!("unix:gid:{i}")).collect();
    let big = create_entry(
        &server,
        &admin,
        &json!({
            "spiffe_id": format!("spiffe://{TD}/limits/max"),
            "selectors": sixteen,
            "x509_ttl_secs": 2_592_000,
            "jwt_ttl_secs": 86_400,
            "agent_kind": "k".repeat(64),
            "owner": "o".repeat(256),
            "description": "d".repeat(1024),
        }),
    )
    .await;
    assert_eq!(big["selectors"].as_array().unwrap().len(), 16);
    assert_eq!(big["x509_ttl_secs"], 2_592_000);
    assert_eq!(big["jwt_ttl_secs"], 86_400);
    assert_eq!(big["description"].as_str().unwrap().len(), 1024);
    let small = create_entry(
        &server,
        &admin,
        &json!({
            "spiffe_id": format!("spiffe://{TD}/limits/min"),
            "selectors": ["unix:uid:0"],
            "x509_ttl_secs": 60,
            "jwt_ttl_secs": 60,
        }),
    )
    .await;
    assert_eq!(small["x509_ttl_secs"], 60);
    assert_eq!(small["jwt_ttl_secs"], 60);
    assert_eq!(list(&server, &admin).await.len(), 2);
}

#[tokio::test]
async fn every_refusal_has_its_code_and_creates_nothing() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let ok_sel = json!(["unix:uid:1000"]);
    let id = format!("spiffe://{TD}/agent/x");
    let with = |key: &str, value: Value| {
        let mut body = json!({"spiffe_id": id, "selectors": ok_sel});
        body[key] = value;
        body
    };
    let seventeen: Vec<String> = (0..17).map(|i| format!("unix:uid:{i}")).collect();

    let cases: Vec<(&str, Value, &str)> = vec![
        // Not SPIFFE IDs.
        (
            "trailing slash",
            with("spiffe_id", json!(format!("spiffe://{TD}/a/"))),
            "invalid_spiffe_id",
        ),
        (
            "http scheme",
            with("spiffe_id", json!("http://x")),
            "invalid_spiffe_id",
        ),
        (
            "bare trust domain",
            with("spiffe_id", json!(format!("spiffe://{TD}"))),
            "invalid_spiffe_id",
        ),
        (
            "bare trust domain with slash",
            with("spiffe_id", json!(format!("spiffe://{TD}/"))),
            "invalid_spiffe_id",
        ),
        (
            "dot segment",
            with("spiffe_id", json!(format!("spiffe://{TD}/a/../b"))),
            "invalid_spiffe_id",
        ),
        (
            "empty segment",
            with("spiffe_id", json!(format!("spiffe://{TD}//a"))),
            "invalid_spiffe_id",
        ),
        ("empty", with("spiffe_id", json!("")), "invalid_spiffe_id"),
        // Someone else's trust domain, including look-alikes of ours.
        (
            "other trust domain",
            with("spiffe_id", json!("spiffe://other.org/x")),
            "foreign_trust_domain",
        ),
        (
            "subdomain",
            with("spiffe_id", json!(format!("spiffe://sub.{TD}/x"))),
            "foreign_trust_domain",
        ),
        (
            "suffix",
            with("spiffe_id", json!(format!("spiffe://{TD}.evil/x"))),
            "foreign_trust_domain",
        ),
        // Selectors.
        (
            "unknown selector type",
            with("selectors", json!(["k8s:ns:x"])),
            "invalid_selector",
        ),
        (
            "negative uid",
            with("selectors", json!(["unix:uid:-1"])),
            "invalid_selector",
        ),
        (
            "leading zero",
            with("selectors", json!(["unix:uid:01"])),
            "invalid_selector",
        ),
        (
            "relative path",
            with("selectors", json!(["unix:path:usr/bin/python3"])),
            "invalid_selector",
        ),
        (
            "uppercase sha256",
            with("selectors", json!([sha('A')])),
            "invalid_selector",
        ),
        (
            "duplicate selectors",
            with(
                "selectors",
                json!(["unix:uid:1000", "unix:gid:5", "unix:uid:1000"]),
            ),
            "invalid_selector",
        ),
        (
            "no selectors",
            with("selectors", json!([])),
            "invalid_selector",
        ),
        (
            "17 selectors",
            with("selectors", json!(seventeen)),
            "invalid_selector",
        ),
        // TTLs.
        (
            "x509 ttl 59",
            with("x509_ttl_secs", json!(59)),
            "invalid_ttl",
        ),
        ("x509 ttl 0", with("x509_ttl_secs", json!(0)), "invalid_ttl"),
        (
            "x509 ttl 30 days + 1",
            with("x509_ttl_secs", json!(2_592_001)),
            "invalid_ttl",
        ),
        ("jwt ttl 59", with("jwt_ttl_secs", json!(59)), "invalid_ttl"),
        ("jwt ttl 0", with("jwt_ttl_secs", json!(0)), "invalid_ttl"),
        (
            "jwt ttl 1 day + 1",
            with("jwt_ttl_secs", json!(86_401)),
            "invalid_ttl",
        ),
        // The request's shape.
        (
            "unknown field",
            with("admin", json!(true)),
            "invalid_request",
        ),
        (
            "spiffe_id a number",
            with("spiffe_id", json!(5)),
            "invalid_request",
        ),
        (
            "selectors a string",
            with("selectors", json!("unix:uid:1000")),
            "invalid_request",
        ),
        (
            "selector a number",
            with("selectors", json!([1000])),
            "invalid_request",
        ),
        (
            "ttl a string",
            with("x509_ttl_secs", json!("3600")),
            "invalid_request",
        ),
        (
            "ttl a fraction",
            with("jwt_ttl_secs", json!(300.5)),
            "invalid_request",
        ),
        (
            "kind a number",
            with("agent_kind", json!(1)),
            "invalid_request",
        ),
        (
            "kind too long",
            with("agent_kind", json!("k".repeat(65))),
            "invalid_request",
        ),
        (
            "owner too long",
            with("owner", json!("o".repeat(257))),
            "invalid_request",
        ),
        (
            "description too long",
            with("description", json!("d".repeat(1025))),
            "invalid_request",
        ),
        (
            "missing spiffe_id",
            json!({"selectors": ["unix:uid:1000"]}),
            "invalid_request",
        ),
        ("an array", json!([id, ok_sel]), "invalid_request"),
    ];
    let mut rids = Vec::new();
    for (i, (what, body, code)) in cases.iter().enumerate() {
        let rid = format!("refused-{i}");
        let resp = post_entry(&server, &admin, body, &rid).await;
        let err = expect_error(what, resp, 400, code).await;
        if *what == "unknown field" {
            assert!(
                err["message"].as_str().unwrap().contains("admin"),
                "the message names the field: {err}"
            );
        }
        rids.push(rid);
    }

    // A negative or huge TTL: out of range or not a valid number, but refused either way.
    for (i, ttl) in [json!(-1), json!(u64::MAX)].into_iter().enumerate() {
        let resp = post_entry(&server, &admin, &with("x509_ttl_secs", ttl.clone()), "ttl").await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 400, "ttl {ttl}: {body}");
        assert!(
            body["code"] == "invalid_ttl" || body["code"] == "invalid_request",
            "ttl {ttl} (case {i}): {body}"
        );
    }

    // Malformed JSON.
    let resp = server
        .http
        .post(server.at("/v1/entries"))
        .bearer_auth(&admin)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"spiffe_id": "#)
        .send()
        .await
        .unwrap();
    expect_error("malformed json", resp, 400, "invalid_json").await;

    // Without a token: 401 on every route.
    let http = &server.http;
    let entry_path = server.at("/v1/entries/ent_0000000000000000");
    for (what, req) in [
        (
            "create",
            http.post(server.at("/v1/entries"))
                .json(&with("owner", json!("x"))),
        ),
        ("list", http.get(server.at("/v1/entries"))),
        ("show", http.get(&entry_path)),
        ("delete", http.delete(&entry_path)),
    ] {
        let resp = req.send().await.unwrap();
        expect_error(what, resp, 401, "unauthenticated").await;
    }

    // Unknown ids, well-formed or not.
    for id in ["ent_0000000000000000", "nope"] {
        let (status, body) = get(&server, &format!("/v1/entries/{id}"), &admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["code"], "not_found", "{body}");
        let resp = delete(&server, id, &admin, "delete-unknown").await;
        expect_error("delete unknown", resp, 404, "not_found").await;
    }

    // Nothing was created, nothing recorded as created; each refusal is a failed request.
    assert!(list(&server, &admin).await.is_empty());
    let ledger = server.all_entries(&admin).await;
    assert!(events(&ledger, "entry.create").is_empty());
    assert!(events(&ledger, "entry.delete").is_empty());
    for rid in &rids {
        let ev = event_by_request_id(&ledger, rid);
        assert_eq!(ev["action"], "api.request", "{ev}");
        assert_eq!(ev["outcome"], "failure", "{ev}");
        assert_eq!(ev["fields"]["status"], 400, "{ev}");
    }

    // A conflict: the same SPIFFE ID and the same set of selectors, in any order, whatever
    // the other fields say.
    let body = json!({
        "spiffe_id": id,
        "selectors": ["unix:uid:1000", "unix:path:/usr/bin/python3"],
    });
    let first = create_entry(&server, &admin, &body).await;
    for (i, dup) in [
        body.clone(),
        json!({"spiffe_id": id, "selectors": ["unix:path:/usr/bin/python3", "unix:uid:1000"]}),
        json!({
            "spiffe_id": id,
            "selectors": ["unix:path:/usr/bin/python3", "unix:uid:1000"],
            "x509_ttl_secs": 600,
            "owner": "mallory",
        }),
    ]
    .iter()
    .enumerate()
    {
        let resp = post_entry(&server, &admin, dup, &format!("conflict-{i}")).await;
        expect_error(&format!("conflict {i}"), resp, 409, "conflict").await;
    }
    assert_eq!(list(&server, &admin).await, vec![first]);
    let ledger = server.all_entries(&admin).await;
    assert_eq!(events(&ledger, "entry.create").len(), 1);
    for i in 0..3 {
        let ev = event_by_request_id(&ledger, &format!("conflict-{i}"));
        assert_eq!(ev["outcome"], "failure", "{ev}");
        assert_eq!(ev["fields"]["status"], 409, "{ev}");
    }

    // No 500 anywhere, and the server is still healthy.
    let metrics = server.get_text("/metrics").await;
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
    server.get_public_json("/healthz").await;
}

#[tokio::test]
async fn auditors_read_entries_but_cannot_change_them() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let auditor = create_token_secret(&server, &admin, "entries-auditor", "auditor").await;
    let approver = create_token_secret(&server, &admin, "entries-approver", "approver").await;
    let entry = create_entry(
        &server,
        &admin,
        &json!({"spiffe_id": format!("spiffe://{TD}/agent/a"), "selectors": ["unix:uid:7"]}),
    )
    .await;
    let id = entry["id"].as_str().unwrap();

    assert_eq!(list(&server, &auditor).await, vec![entry.clone()]);
    let (status, shown) = get(&server, &format!("/v1/entries/{id}"), &auditor).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, entry);

    let resp = post_entry(
        &server,
        &auditor,
        &json!({"spiffe_id": format!("spiffe://{TD}/agent/b"), "selectors": ["unix:uid:8"]}),
        "auditor-create",
    )
    .await;
    expect_error("auditor creates", resp, 403, "forbidden").await;
    // Even an invalid body is refused for the role, not for its content.
    let resp = post_entry(
        &server,
        &auditor,
        &json!({"bogus": 1}),
        "auditor-create-bad",
    )
    .await;
    let status = resp.status().as_u16();
    assert!(status == 403 || status == 400, "got {status}");
    let resp = delete(&server, id, &auditor, "auditor-delete").await;
    expect_error("auditor deletes", resp, 403, "forbidden").await;

    // An approver is not an auditor.
    let (status, body) = get(&server, "/v1/entries", &approver).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "forbidden");
    let (status, body) = get(&server, &format!("/v1/entries/{id}"), &approver).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "forbidden");

    // Nothing changed.
    assert_eq!(list(&server, &admin).await, vec![entry.clone()]);
    let ledger = server.all_entries(&admin).await;
    assert_eq!(events(&ledger, "entry.create").len(), 1);
    assert!(events(&ledger, "entry.delete").is_empty());
    for rid in ["auditor-create", "auditor-delete"] {
        let ev = event_by_request_id(&ledger, rid);
        assert_eq!(ev["action"], "api.request", "{ev}");
        assert_eq!(ev["outcome"], "denied", "{ev}");
        assert_eq!(ev["actor"], "token:entries-auditor", "{ev}");
        assert_eq!(ev["fields"]["status"], 403, "{ev}");
    }
}

/// Races: the same entry created at once by many callers exists once; one entry deleted at
/// once by many callers is deleted once. Either way the ledger records exactly what happened
/// (a refused create or delete writes no `entry.create`/`entry.delete`).
#[tokio::test]
async fn concurrent_creates_and_deletes_happen_once() {
    const N: usize = 8;
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let body = json!({
        "spiffe_id": format!("spiffe://{TD}/agent/race"),
        "selectors": ["unix:uid:1000", "unix:gid:1000"],
    });
    let creates = (0..N).map(|i| {
        // Half of them send the selectors the other way round: still the same entry.
        let mut body = body.clone();
        if i % 2 == 1 {
            body["selectors"] = json!(["unix:gid:1000", "unix:uid:1000"]);
        }
        let (server, admin) = (&server, &admin);
        async move {
            let resp = post_entry(server, admin, &body, &format!("race-create-{i}")).await;
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    });
    let results = futures_join_all(creates).await;
    let created: Vec<&(u16, String)> = results.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(created.len(), 1, "{results:#?}");
    assert!(
        results
            .iter()
            .all(|(s, t)| *s == 201 || (*s == 409 && t.contains("\"conflict\""))),
        "{results:#?}"
    );
    let entry: Value = serde_json::from_str(&created[0].1).unwrap();
    assert_eq!(list(&server, &admin).await, vec![entry.clone()]);
    let id = entry["id"].as_str().unwrap();

    let deletes = (0..N).map(|i| {
        let (server, admin) = (&server, &admin);
        async move {
            let resp = delete(server, id, admin, &format!("race-delete-{i}")).await;
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    });
    let results = futures_join_all(deletes).await;
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 204).count(),
        1,
        "{results:#?}"
    );
    assert!(
        results
            .iter()
            .all(|(s, t)| *s == 204 || (*s == 404 && t.contains("\"not_found\""))),
        "{results:#?}"
    );
    assert!(list(&server, &admin).await.is_empty());

    let ledger = server.all_entries(&admin).await;
    assert_eq!(events(&ledger, "entry.create").len(), 1);
    let deleted = events(&ledger, "entry.delete");
    assert_eq!(
        deleted.len(),
        1,
        "refused deletes were recorded as deletions: {deleted:#?}"
    );
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/// Runs `warden ARGS… --server URL --token-file FILE` and returns the output (exit 0).
async fn cli_ok(install: &Install, server: &Server, args: &[&str]) -> common::Out {
    run(install.client(server, args)).await.ok()
}

#[tokio::test]
async fn cli_creates_lists_shows_and_deletes_entries() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let coder = format!("spiffe://{TD}/agent/cli-coder");
    let reviewer = format!("spiffe://{TD}/agent/cli-reviewer");

    let out = cli_ok(
        &install,
        &server,
        &[
            "entry",
            "create",
            "--output",
            "json",
            "--spiffe-id",
            &coder,
            "--selector",
            "unix:uid:1000",
            "--selector",
            "unix:path:/usr/bin/python3",
            "--x509-ttl",
            "2h",
            "--jwt-ttl",
            "90s",
            "--kind",
            "coder",
            "--owner",
            "alice",
            "--description",
            "made by the CLI",
        ],
    )
    .await;
    assert!(out.stdout.trim_end().contains('\n'), "not pretty: {out:#?}");
    let first: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not the entry JSON ({e}): {out:#?}"));
    check_entry_shape(&first);
    assert_eq!(first["spiffe_id"], coder.as_str());
    assert_eq!(
        first["selectors"],
        json!(["unix:path:/usr/bin/python3", "unix:uid:1000"])
    );
    assert_eq!(first["x509_ttl_secs"], 7200);
    assert_eq!(first["jwt_ttl_secs"], 90);
    assert_eq!(first["agent_kind"], "coder");
    assert_eq!(first["owner"], "alice");
    assert_eq!(first["description"], "made by the CLI");

    // The other duration forms: days, minutes, plain seconds; no optional text. (Each entry
    // strictly newer than the previous, so the listing order is defined.)
    clock_past(first["created_unix_ms"].as_i64().unwrap()).await;
    let out = cli_ok(
        &install,
        &server,
        &[
            "entry",
            "create",
            "-o",
            "json",
            "--spiffe-id",
            &reviewer,
            "--selector",
            "unix:user:reviewer",
            "--x509-ttl",
            "2d",
            "--jwt-ttl",
            "5m",
        ],
    )
    .await;
    let second: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(second["x509_ttl_secs"], 172_800);
    assert_eq!(second["jwt_ttl_secs"], 300);
    assert!(second["agent_kind"].is_null() && second["owner"].is_null());
    clock_past(second["created_unix_ms"].as_i64().unwrap()).await;
    let out = cli_ok(
        &install,
        &server,
        &[
            "entry",
            "create",
            "-o",
            "json",
            "--spiffe-id",
            &reviewer,
            "--selector",
            "unix:uid:1001",
            "--x509-ttl",
            "1h",
            "--jwt-ttl",
            "120",
        ],
    )
    .await;
    let third: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(third["x509_ttl_secs"], 3600);
    assert_eq!(third["jwt_ttl_secs"], 120);

    // What the API holds is what the CLI printed.
    assert_eq!(
        list(&server, &admin).await,
        vec![first.clone(), second.clone(), third.clone()]
    );

    // list: one line per entry, starting with its id, naming its SPIFFE ID.
    let out = cli_ok(&install, &server, &["entry", "list"]).await;
    for e in [&first, &second, &third] {
        let id = e["id"].as_str().unwrap();
        let lines: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with(id)).collect();
        assert_eq!(lines.len(), 1, "{id}: {out:#?}");
        assert!(
            lines[0].contains(e["spiffe_id"].as_str().unwrap()),
            "{out:#?}"
        );
    }
    assert_eq!(
        out.stdout.lines().filter(|l| l.starts_with("ent_")).count(),
        3,
        "{out:#?}"
    );

    // show: one line per field for people, the entry JSON for scripts.
    let first_id = first["id"].as_str().unwrap();
    let out = cli_ok(&install, &server, &["entry", "show", first_id]).await;
    for line in [
        format!("ID             {first_id}"),
        format!("SPIFFE_ID      {coder}"),
        "SELECTORS      unix:path:/usr/bin/python3,unix:uid:1000".to_owned(),
        "X509_TTL_SECS  7200".to_owned(),
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "{line}: {out:#?}");
    }
    let out = cli_ok(
        &install,
        &server,
        &["entry", "show", first_id, "-o", "json"],
    )
    .await;
    let shown: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("show is not JSON ({e}): {out:#?}"));
    assert_eq!(shown, first);

    // delete, then it is gone: the server's code surfaces.
    let out = cli_ok(&install, &server, &["entry", "delete", first_id]).await;
    assert!(
        out.stdout.contains(&format!("deleted {first_id}")),
        "{out:#?}"
    );
    // Not found is a "no" (exit 1), not an error (exit 2).
    let out = run(install.client(&server, &["entry", "show", first_id])).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("not_found (404)"), "{out:#?}");
    let out = run(install.client(&server, &["entry", "delete", first_id])).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("not_found (404)"), "{out:#?}");
    assert_eq!(
        list(&server, &admin).await,
        vec![second.clone(), third.clone()]
    );

    // Server-side refusals surface with their code.
    let out = run(install.client(
        &server,
        &[
            "entry",
            "create",
            "--spiffe-id",
            &coder,
            "--selector",
            "k8s:ns:x",
        ],
    ))
    .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("invalid_selector (400)"), "{out:#?}");
    let out = run(install.client(
        &server,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://other.org/x",
            "--selector",
            "unix:uid:1",
        ],
    ))
    .await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stderr.contains("foreign_trust_domain (400)"),
        "{out:#?}"
    );
    let out = run(install.client(
        &server,
        &[
            "entry",
            "create",
            "-o",
            "json",
            "--spiffe-id",
            &reviewer,
            "--selector",
            "unix:user:reviewer",
        ],
    ))
    .await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("conflict (409)"), "{out:#?}");

    // A bad duration is refused by the CLI itself: it never connects to the server. A plain
    // listener stands in for the server; any connection attempt would sit in its backlog.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    for (flag, bad) in [
        ("--x509-ttl", "5x"),
        ("--jwt-ttl", "5x"),
        ("--x509-ttl", "h"),
        ("--jwt-ttl", "-5m"),
    ] {
        let mut cmd = warden();
        cmd.args([
            "entry",
            "create",
            "--spiffe-id",
            &coder,
            "--selector",
            "unix:uid:4242",
            flag,
            bad,
            "--server",
            &trap_url,
            "--token-file",
        ])
        .arg(&install.token_file);
        let out = run(cmd).await;
        assert_ne!(out.code(), Some(0), "{flag} {bad}: {out:#?}");
        assert!(out.stdout.is_empty(), "{flag} {bad}: {out:#?}");
        assert!(!out.stderr.is_empty(), "{flag} {bad}: {out:#?}");
        assert!(
            !out.stderr.contains("cannot reach"),
            "{flag} {bad}: {out:#?}"
        );
    }
    trap.set_nonblocking(true).unwrap();
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the CLI connected to the server for a bad duration: {other:?}"),
    }
    // And against the real server: still nothing new.
    assert_eq!(list(&server, &admin).await, vec![second, third]);

    // The ledger saw the CLI's creates and the delete.
    let ledger = server.all_entries(&admin).await;
    assert_eq!(events(&ledger, "entry.create").len(), 3);
    let deletes = events(&ledger, "entry.delete");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0]["fields"]["entry_id"], first_id);
    assert_eq!(deletes[0]["fields"]["spiffe_id"], coder.as_str());
}

// ---------------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn entries_survive_a_restart() {
    let install = Install::new().await;
    let admin = install.admin_token();
    let server = install.serve().await;
    let a_body = json!({
        "spiffe_id": format!("spiffe://{TD}/agent/persist-a"),
        "selectors": ["unix:uid:1000", "unix:gid:1000"],
        "x509_ttl_secs": 7200,
        "agent_kind": "coder",
        "owner": "alice",
        "description": "kept across restarts",
    });
    let a = create_entry(&server, &admin, &a_body).await;
    clock_past(a["created_unix_ms"].as_i64().unwrap()).await;
    let b = create_entry(
        &server,
        &admin,
        &json!({"spiffe_id": format!("spiffe://{TD}/agent/persist-b"), "selectors": [sha('0')]}),
    )
    .await;
    clock_past(b["created_unix_ms"].as_i64().unwrap()).await;
    let gone = create_entry(
        &server,
        &admin,
        &json!({"spiffe_id": format!("spiffe://{TD}/agent/gone"), "selectors": ["unix:uid:1"]}),
    )
    .await;
    let gone_id = gone["id"].as_str().unwrap();
    let resp = delete(&server, gone_id, &admin, "delete-before-restart").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let before = list(&server, &admin).await;
    assert_eq!(before, vec![a.clone(), b.clone()]);
    server.stop().await;

    let server = install.serve().await;
    assert_eq!(list(&server, &admin).await, before);
    let (status, shown) = get(
        &server,
        &format!("/v1/entries/{}", a["id"].as_str().unwrap()),
        &admin,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, a);
    let (status, _) = get(&server, &format!("/v1/entries/{gone_id}"), &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a deleted entry came back");
    // Uniqueness is persisted too.
    let resp = post_entry(&server, &admin, &a_body, "conflict-after-restart").await;
    expect_error("conflict after restart", resp, 409, "conflict").await;
    // And entries can still be deleted after the restart.
    let resp = delete(&server, a["id"].as_str().unwrap(), &admin, "delete-after").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(list(&server, &admin).await, vec![b]);

    let ledger = server.all_entries(&admin).await;
    assert_eq!(events(&ledger, "entry.create").len(), 3);
    assert_eq!(events(&ledger, "entry.delete").len(), 2);
    server.stop().await;
}
