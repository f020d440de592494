//! The relationship engine against the real binary: models (OpenFGA's modeling language) and
//! their errors, tuple writes and their errors (batch atomicity, conflicts, limits), checks
//! with contextual tuples, expiring tuples, the list/expand/read/change-feed queries, named
//! stores, roles, the policy decision point handing `context.relations` to Cedar and Rego,
//! the ledger entries, and a restart on the same data directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Install, Out, Server, expect_error, post, run};
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/policies/coder-rebac"
);
const CODER: &str = "agent:example.org/agent/coder";
const REVIEWER: &str = "agent:example.org/agent/reviewer";
const HELPER: &str = "agent:example.org/agent/helper";
const REPO: &str = "repository:warden";
const CODER_ID: &str = "spiffe://example.org/agent/coder";
const REVIEWER_ID: &str = "spiffe://example.org/agent/reviewer";

/// The three tuples of `tuples.txt`.
const T_ASSIGNEE: &str = "task:patch-1#assignee@agent:example.org/agent/coder";
const T_TASK: &str = "repository:warden#task@task:patch-1";
const T_READER: &str = "repository:warden#reader@agent:example.org/agent/reviewer";

fn example_path(name: &str) -> String {
    format!("{EXAMPLES}/{name}")
}

fn example(name: &str) -> String {
    std::fs::read_to_string(example_path(name)).unwrap()
}

/// The lines of `tuples.txt`.
fn example_tuples() -> Vec<String> {
    example("tuples.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `object#relation@user` as OpenFGA's JSON tuple key.
fn key(text: &str) -> Value {
    let (object, rest) = text.split_once('#').unwrap();
    let (relation, user) = rest.split_once('@').unwrap();
    json!({"object": object, "relation": relation, "user": user})
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn cli(install: &Install, server: &Server, args: &[&str]) -> Out {
    run(install.client(server, args)).await
}

async fn get(server: &Server, token: &str, path: &str) -> reqwest::Response {
    server
        .http
        .get(server.at(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn put_model(server: &Server, token: &str, path: &str, dsl: &str) -> reqwest::Response {
    server
        .http
        .put(server.at(path))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(dsl.to_owned())
        .send()
        .await
        .unwrap()
}

async fn ok_json(what: &str, resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

/// `POST /v1/rebac/tuples` with `writes` and `deletes` (as `object#relation@user`).
async fn write_tuples(
    server: &Server,
    token: &str,
    base: &str,
    writes: &[&str],
    deletes: &[&str],
) -> reqwest::Response {
    let mut body = json!({});
    if !writes.is_empty() {
        body["writes"] = json!({"tuple_keys": writes.iter().map(|t| key(t)).collect::<Vec<_>>()});
    }
    if !deletes.is_empty() {
        body["deletes"] = json!({"tuple_keys": deletes.iter().map(|t| key(t)).collect::<Vec<_>>()});
    }
    post(server, token, &format!("{base}/tuples"), &body).await
}

/// `POST {base}/check`, the whole answer (must be 200).
async fn check_answer(
    server: &Server,
    token: &str,
    base: &str,
    user: &str,
    relation: &str,
    object: &str,
) -> Value {
    let body = json!({"tuple_key": {"user": user, "relation": relation, "object": object}});
    ok_json(
        &format!("check {user} {relation} {object}"),
        post(server, token, &format!("{base}/check"), &body).await,
        200,
    )
    .await
}

/// Does `user` have `relation` on `object` in the default store?
async fn check(server: &Server, token: &str, user: &str, relation: &str, object: &str) -> bool {
    check_answer(server, token, "/v1/rebac", user, relation, object).await["allowed"]
        .as_bool()
        .expect("allowed is a boolean")
}

/// Every tuple of a store as `object#relation@user`, sorted.
async fn all_tuples(server: &Server, token: &str, base: &str) -> Vec<String> {
    let page = ok_json(
        "read all",
        get(server, token, &format!("{base}/tuples")).await,
        200,
    )
    .await;
    assert_eq!(page["continuation_token"], "", "{page:#}");
    let mut out: Vec<String> = page["tuples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}#{}@{}", t["object"], t["relation"], t["user"]).replace('"', ""))
        .collect();
    out.sort();
    out
}

/// A fresh install with a running server and its admin token.
async fn start() -> (Install, Server, String) {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    (install, server, admin)
}

/// The example's model and tuples in the default store (over HTTP); returns the model id
/// and the revision of the write.
async fn seed(server: &Server, admin: &str) -> (String, u64) {
    let model = ok_json(
        "push model",
        put_model(server, admin, "/v1/rebac/model", &example("model.fga")).await,
        201,
    )
    .await;
    let tuples = example_tuples();
    let refs: Vec<&str> = tuples.iter().map(String::as_str).collect();
    let written = ok_json(
        "write tuples.txt",
        write_tuples(server, admin, "/v1/rebac", &refs, &[]).await,
        200,
    )
    .await;
    (
        model["authorization_model_id"].as_str().unwrap().to_owned(),
        written["revision"].as_u64().unwrap(),
    )
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---- models ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_pushed_validated_and_shown() {
    let (install, server, admin) = start().await;

    // Before any model: the store does not exist.
    let q = json!({"tuple_key": {"user": CODER, "relation": "writer", "object": REPO}});
    let resp = post(&server, &admin, "/v1/rebac/check", &q).await;
    expect_error("check without a model", resp, 404, "unknown_store").await;
    let resp = get(&server, &admin, "/v1/rebac/model").await;
    expect_error("model without a model", resp, 404, "unknown_model").await;

    // Push the example with the CLI: version 1.
    let out = cli(
        &install,
        &server,
        &["rebac", "model", "push", &example_path("model.fga")],
    )
    .await
    .ok();
    assert!(
        out.stdout.starts_with("store default model version 1 ("),
        "{out:#?}"
    );
    assert!(out.stdout.contains(") in force"), "{out:#?}");

    let model = ok_json(
        "get model",
        get(&server, &admin, "/v1/rebac/model").await,
        200,
    )
    .await;
    assert_eq!(model["store"], "default", "{model:#}");
    assert_eq!(model["version"], 1, "{model:#}");
    assert_eq!(model["dsl"], example("model.fga"), "{model:#}");
    let id = model["authorization_model_id"].as_str().unwrap().to_owned();
    assert!(is_hex64(&id), "{id}");
    assert!(out.stdout.contains(&id), "{out:#?}");
    assert_eq!(model["model"]["schema_version"], "1.1", "{model:#}");
    let types: Vec<&str> = model["model"]["type_definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["agent", "task", "repository"], "{model:#}");
    let repo = &model["model"]["type_definitions"][2];
    assert!(
        repo["relations"]["writer"]["tupleToUserset"].is_object(),
        "{repo:#}"
    );
    assert_eq!(model["created_by"], "token:bootstrap", "{model:#}");
    assert!(model["created_at"].as_str().unwrap().ends_with('Z'));
    let by_version = ok_json(
        "get model version 1",
        get(&server, &admin, "/v1/rebac/model?version=1").await,
        200,
    )
    .await;
    assert_eq!(by_version["authorization_model_id"], id.as_str());
    let resp = get(&server, &admin, "/v1/rebac/model?version=7").await;
    expect_error("missing version", resp, 404, "unknown_model").await;

    // Bad models are refused with their position, and the model in force stays.
    let syntax = "model\n  schema 1.1\n\ntype agent\n\ntype doc\n  relations\n    define owner: [agent] ^ foo\n";
    let body = expect_error(
        "syntax error",
        put_model(&server, &admin, "/v1/rebac/model", syntax).await,
        400,
        "invalid_model",
    )
    .await;
    assert_eq!(body["details"]["line"], 8, "{body:#}");
    assert_eq!(body["details"]["column"], 27, "{body:#}");

    let unterminated = "model\n  schema 1.1\n\ntype agent\n\ntype doc\n  relations\n    define owner: [agent\n    define viewer: [agent]\n";
    let body = expect_error(
        "unterminated type restriction",
        put_model(&server, &admin, "/v1/rebac/model", unterminated).await,
        400,
        "invalid_model",
    )
    .await;
    assert_eq!(body["details"]["line"], 9, "{body:#}");
    assert_eq!(body["details"]["column"], 5, "{body:#}");

    let undefined = "model\n  schema 1.1\n\ntype agent\n\ntype doc\n  relations\n    define owner: [agent]\n    define viewer: [agent] or editor\n";
    let body = expect_error(
        "undefined relation",
        put_model(&server, &admin, "/v1/rebac/model", undefined).await,
        400,
        "invalid_model",
    )
    .await;
    assert_eq!(body["details"]["line"], 9, "{body:#}");
    assert!(body["details"]["column"].as_u64().is_some(), "{body:#}");
    assert!(
        body["message"].as_str().unwrap().contains("editor"),
        "{body:#}"
    );

    let conditional = "model\n  schema 1.1\n\ntype agent\n\ntype doc\n  relations\n    define owner: [agent with in_hours]\n\ncondition in_hours(hour: int) {\n  hour < 18\n}\n";
    let body = expect_error(
        "condition",
        put_model(&server, &admin, "/v1/rebac/model", conditional).await,
        400,
        "condition_unsupported",
    )
    .await;
    assert_eq!(body["details"]["line"], 8, "{body:#}");

    // The CLI shows the engine's error and exits non-zero.
    let bad_file = install.path("bad.fga");
    std::fs::write(&bad_file, undefined).unwrap();
    let out = cli(
        &install,
        &server,
        &["rebac", "model", "push", bad_file.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains("invalid_model (400)") && out.stderr.contains("line 9"),
        "{out:#?}"
    );

    let after = ok_json(
        "model after bad uploads",
        get(&server, &admin, "/v1/rebac/model").await,
        200,
    )
    .await;
    assert_eq!(after["version"], 1, "{after:#}");
    assert_eq!(after["authorization_model_id"], id.as_str(), "{after:#}");
    let stores = ok_json(
        "stores",
        get(&server, &admin, "/v1/rebac/stores").await,
        200,
    )
    .await;
    assert_eq!(
        stores,
        json!([{"name": "default", "revision": 0, "model_version": 1,
                "authorization_model_id": id}]),
        "{stores:#}"
    );

    // A second version is in force at once; the first stays readable.
    let v2_text = format!(
        "{}\ntype folder\n  relations\n    define viewer: [agent]\n",
        example("model.fga")
    );
    let v2 = ok_json(
        "push v2",
        put_model(&server, &admin, "/v1/rebac/model", &v2_text).await,
        201,
    )
    .await;
    assert_eq!(v2["version"], 2, "{v2:#}");
    assert_ne!(v2["authorization_model_id"], id.as_str());
    assert!(!check(&server, &admin, CODER, "viewer", "folder:f1").await);
    let v1 = ok_json(
        "get model version 1",
        get(&server, &admin, "/v1/rebac/model?version=1").await,
        200,
    )
    .await;
    assert_eq!(v1["authorization_model_id"], id.as_str());

    // `warden rebac model show [VERSION]` prints the DSL in force (or an earlier version's);
    // with `--output json` the API's answer, OpenFGA's JSON form in `model`.
    let out = cli(&install, &server, &["rebac", "model", "show"]).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stdout.starts_with("# store default version 2 ("),
        "{out:#?}"
    );
    assert!(out.stdout.ends_with(&v2_text), "{out:#?}");
    let out = cli(&install, &server, &["rebac", "model", "show", "1"]).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(out.stdout.ends_with(&example("model.fga")), "{out:#?}");
    let out = cli(
        &install,
        &server,
        &["rebac", "model", "show", "--output", "json"],
    )
    .await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let shown: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(shown["model"], v2["model"]);
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["dsl"], v2_text.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_uploaded_as_json_is_in_force() {
    let (_install, server, admin) = start().await;
    let (id, _) = seed(&server, &admin).await;
    let json_model = ok_json(
        "get model",
        get(&server, &admin, "/v1/rebac/model").await,
        200,
    )
    .await["model"]
        .clone();

    // The same model in OpenFGA's JSON form, to a new store.
    let resp = server
        .http
        .put(server.at("/v1/rebac/stores/from-json/model"))
        .bearer_auth(&admin)
        .json(&json_model)
        .send()
        .await
        .unwrap();
    let pushed = ok_json("put json model", resp, 201).await;
    assert_eq!(pushed["authorization_model_id"], id.as_str(), "{pushed:#}");
    assert_eq!(pushed["version"], 1, "{pushed:#}");

    // It is in force at once: the store exists, takes writes and answers checks.
    let stores = ok_json(
        "stores",
        get(&server, &admin, "/v1/rebac/stores").await,
        200,
    )
    .await;
    assert!(
        stores
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "from-json" && s["authorization_model_id"] == id.as_str()),
        "{stores:#}"
    );
    ok_json(
        "write to the JSON store",
        write_tuples(
            &server,
            &admin,
            "/v1/rebac/stores/from-json",
            &[T_ASSIGNEE, T_TASK],
            &[],
        )
        .await,
        200,
    )
    .await;
    let a = check_answer(
        &server,
        &admin,
        "/v1/rebac/stores/from-json",
        CODER,
        "writer",
        REPO,
    )
    .await;
    assert_eq!(a["allowed"], true, "{a:#}");
}

// ---- tuples and checks ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuples_written_with_the_cli_answer_checks() {
    let (install, server, admin) = start().await;
    cli(
        &install,
        &server,
        &["rebac", "model", "push", &example_path("model.fga")],
    )
    .await
    .ok();

    // Write tuples.txt with the CLI: one batch, revision 1.
    let tuples = example_tuples();
    assert_eq!(tuples, [T_ASSIGNEE, T_TASK, T_READER]);
    let mut args = vec!["rebac", "write"];
    args.extend(tuples.iter().map(String::as_str));
    let out = cli(&install, &server, &args).await.ok();
    assert_eq!(out.stdout.trim(), "written; revision 1", "{out:#?}");

    // Over HTTP: the Coder writes through its task; the reviewer only reads.
    let a = check_answer(&server, &admin, "/v1/rebac", CODER, "writer", REPO).await;
    assert_eq!(a["allowed"], true, "{a:#}");
    assert_eq!(a["revision"], 1, "{a:#}");
    assert!(
        a["decision_id"].as_str().unwrap().starts_with("dec_"),
        "{a:#}"
    );
    assert!(!check(&server, &admin, REVIEWER, "writer", REPO).await);
    assert!(check(&server, &admin, REVIEWER, "reader", REPO).await);
    assert!(check(&server, &admin, CODER, "reader", REPO).await);
    assert!(check(&server, &admin, CODER, "assignee", "task:patch-1").await);
    assert!(!check(&server, &admin, REVIEWER, "assignee", "task:patch-1").await);
    assert!(!check(&server, &admin, CODER, "writer", "repository:other").await);

    // The CLI: exit 0 on allowed, 1 on denied.
    let out = cli(
        &install,
        &server,
        &["rebac", "check", CODER, "writer", REPO],
    )
    .await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(out.stdout.starts_with("allowed  ("), "{out:#?}");
    assert!(out.stdout.contains("decision dec_"), "{out:#?}");
    let out = cli(
        &install,
        &server,
        &["rebac", "check", REVIEWER, "writer", REPO],
    )
    .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stdout.starts_with("not allowed  ("), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");
    // `--output json`: the API's answer, with the same exit status.
    let out = cli(
        &install,
        &server,
        &[
            "rebac", "check", REVIEWER, "writer", REPO, "--output", "json",
        ],
    )
    .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    let answer: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(answer["allowed"], false, "{answer:#}");
    assert!(
        answer["decision_id"].as_str().unwrap().starts_with("dec_"),
        "{answer:#}"
    );
    // A tuple that does not parse is bad input (exit 2), named by its flag.
    let out = cli(
        &install,
        &server,
        &[
            "rebac",
            "check",
            REVIEWER,
            "writer",
            REPO,
            "--context",
            "nope",
        ],
    )
    .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("--context `nope`"), "{out:#?}");
    let out = cli(
        &install,
        &server,
        &["rebac", "check", REVIEWER, "reader", REPO],
    )
    .await;
    assert_eq!(out.code(), Some(0), "{out:#?}");

    // Contextual tuples count for that request only.
    let helper_task = "task:patch-1#assignee@agent:example.org/agent/helper";
    let with_ctx = json!({
        "tuple_key": {"user": HELPER, "relation": "writer", "object": REPO},
        "contextual_tuples": {"tuple_keys": [key(helper_task)]},
    });
    let a = ok_json(
        "check with a contextual tuple",
        post(&server, &admin, "/v1/rebac/check", &with_ctx).await,
        200,
    )
    .await;
    assert_eq!(a["allowed"], true, "{a:#}");
    // The bare list form is accepted too.
    let bare = json!({
        "tuple_key": {"user": HELPER, "relation": "reader", "object": REPO},
        "contextual_tuples": [key(helper_task)],
    });
    let a = ok_json(
        "check with a bare contextual list",
        post(&server, &admin, "/v1/rebac/check", &bare).await,
        200,
    )
    .await;
    assert_eq!(a["allowed"], true, "{a:#}");
    assert!(!check(&server, &admin, HELPER, "writer", REPO).await);
    assert!(!check(&server, &admin, HELPER, "reader", REPO).await);
    assert!(
        !all_tuples(&server, &admin, "/v1/rebac")
            .await
            .contains(&helper_task.to_owned())
    );
    // A contextual tuple the model does not allow is refused.
    let bad_ctx = json!({
        "tuple_key": {"user": HELPER, "relation": "writer", "object": REPO},
        "contextual_tuples": {"tuple_keys": [key("task:patch-1#assignee@repository:warden")]},
    });
    expect_error(
        "contextual tuple against the model",
        post(&server, &admin, "/v1/rebac/check", &bad_ctx).await,
        400,
        "invalid_tuple",
    )
    .await;
    let bad_ctx = json!({
        "tuple_key": {"user": HELPER, "relation": "writer", "object": REPO},
        "contextual_tuples": {"tuple_keys": [key("repository:warden#writer@agent:example.org/agent/helper")]},
    });
    expect_error(
        "contextual tuple on a computed relation",
        post(&server, &admin, "/v1/rebac/check", &bad_ctx).await,
        400,
        "invalid_tuple",
    )
    .await;
    // The CLI takes contextual tuples with --context.
    let out = cli(
        &install,
        &server,
        &[
            "rebac",
            "check",
            HELPER,
            "writer",
            REPO,
            "--context",
            helper_task,
        ],
    )
    .await;
    assert_eq!(out.code(), Some(0), "{out:#?}");

    // Batch check: a result per correlation id, an error for a bad one.
    let batch = json!({"checks": [
        {"tuple_key": {"user": CODER, "relation": "writer", "object": REPO}, "correlation_id": "a"},
        {"tuple_key": {"user": REVIEWER, "relation": "writer", "object": REPO}, "correlation_id": "b"},
        {"tuple_key": {"user": CODER, "relation": "owner", "object": REPO}, "correlation_id": "c"},
    ]});
    let b = ok_json(
        "batch check",
        post(&server, &admin, "/v1/rebac/batch-check", &batch).await,
        200,
    )
    .await;
    assert_eq!(b["result"]["a"]["allowed"], true, "{b:#}");
    assert_eq!(b["result"]["b"]["allowed"], false, "{b:#}");
    assert_eq!(
        b["result"]["c"]["error"]["code"], "unknown_relation",
        "{b:#}"
    );

    // Deleting the task link with the CLI ends the Coder's write.
    let out = cli(&install, &server, &["rebac", "delete", T_TASK])
        .await
        .ok();
    assert_eq!(out.stdout.trim(), "deleted; revision 2", "{out:#?}");
    assert!(!check(&server, &admin, CODER, "writer", REPO).await);
    assert!(!check(&server, &admin, CODER, "reader", REPO).await);
    assert!(check(&server, &admin, REVIEWER, "reader", REPO).await);

    // An expiring write: `--expires-in` takes the one duration syntax, and `read` shows the
    // expiry as RFC 3339.
    let out = cli(
        &install,
        &server,
        &["rebac", "write", helper_task, "--expires-in", "8h"],
    )
    .await
    .ok();
    assert_eq!(out.stdout.trim(), "written; revision 3", "{out:#?}");
    let out = cli(&install, &server, &["rebac", "read", "--user", HELPER])
        .await
        .ok();
    let row = out.stdout.lines().nth(1).unwrap_or_default().to_owned();
    let (tuple, expires) = row.split_once("  ").unwrap();
    assert_eq!(tuple, helper_task, "{out:#?}");
    let expires = time::OffsetDateTime::parse(
        expires.trim(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left_s = expires.unix_timestamp() - now_ms() / 1000;
    assert!(
        (8 * 3600 - 60..=8 * 3600).contains(&left_s),
        "{left_s}: {out:#?}"
    );
    let out = cli(
        &install,
        &server,
        &["rebac", "write", helper_task, "--expires-in", "5x"],
    )
    .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("--expires-in"), "{out:#?}");
    assert!(out.stderr.contains("not a duration"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_have_the_engine_error_codes() {
    let (_install, server, admin) = start().await;
    let (_, revision) = seed(&server, &admin).await;
    assert_eq!(revision, 1);

    let ask = |user: &str, relation: &str, object: &str| json!({"tuple_key": {"user": user, "relation": relation, "object": object}});
    let cases = [
        (
            "unknown type",
            ask(CODER, "writer", "folder:x"),
            "unknown_type",
        ),
        (
            "unknown relation",
            ask(CODER, "owner", REPO),
            "unknown_relation",
        ),
        (
            "user with whitespace",
            ask("agent:example.org/agent coder", "writer", REPO),
            "invalid_user",
        ),
        (
            "user without a type",
            ask("coder", "writer", REPO),
            "invalid_user",
        ),
        (
            "object without an id",
            ask(CODER, "writer", "repository"),
            "invalid_object",
        ),
    ];
    for (what, body, code) in cases {
        let resp = post(&server, &admin, "/v1/rebac/check", &body).await;
        expect_error(what, resp, 400, code).await;
    }
    let future = json!({
        "tuple_key": {"user": CODER, "relation": "writer", "object": REPO},
        "at_least_revision": 1_000_000,
    });
    expect_error(
        "revision from the future",
        post(&server, &admin, "/v1/rebac/check", &future).await,
        400,
        "unknown_revision",
    )
    .await;
    let current = json!({
        "tuple_key": {"user": CODER, "relation": "writer", "object": REPO},
        "at_least_revision": 1,
    });
    let a = ok_json(
        "current revision",
        post(&server, &admin, "/v1/rebac/check", &current).await,
        200,
    )
    .await;
    assert_eq!(a["allowed"], true, "{a:#}");
    let resp = get(&server, &admin, "/v1/rebac/tuples?at_least_revision=99").await;
    expect_error("read at a future revision", resp, 400, "unknown_revision").await;

    // Writes the model refuses.
    let resp = write_tuples(
        &server,
        &admin,
        "/v1/rebac",
        &["repository:warden#task@agent:example.org/agent/coder"],
        &[],
    )
    .await;
    expect_error("user type not allowed", resp, 400, "invalid_tuple").await;
    let resp = write_tuples(
        &server,
        &admin,
        "/v1/rebac",
        &["repository:warden#writer@agent:example.org/agent/coder"],
        &[],
    )
    .await;
    expect_error("computed relation", resp, 400, "invalid_tuple").await;
    let resp = write_tuples(
        &server,
        &admin,
        "/v1/rebac",
        &["folder:x#viewer@agent:example.org/agent/coder"],
        &[],
    )
    .await;
    expect_error("unknown type in a write", resp, 400, "unknown_type").await;
    let resp = write_tuples(
        &server,
        &admin,
        "/v1/rebac",
        &["repository:warden#owner@agent:example.org/agent/coder"],
        &[],
    )
    .await;
    expect_error("unknown relation in a write", resp, 400, "unknown_relation").await;
    let malformed = json!({"writes": {"tuple_keys": [
        {"object": REPO, "relation": "reader", "user": "agent"}
    ]}});
    expect_error(
        "malformed user in a write",
        post(&server, &admin, "/v1/rebac/tuples", &malformed).await,
        400,
        "invalid_user",
    )
    .await;
    let bad_time = json!({"writes": {"tuple_keys": [
        {"object": REPO, "relation": "reader", "user": HELPER, "expires_at": "tomorrow"}
    ]}});
    expect_error(
        "expires_at not RFC 3339",
        post(&server, &admin, "/v1/rebac/tuples", &bad_time).await,
        400,
        "invalid_tuple",
    )
    .await;
    let conditional = json!({"writes": {"tuple_keys": [
        {"object": REPO, "relation": "reader", "user": HELPER,
         "condition": {"name": "in_hours", "context": {}}}
    ]}});
    expect_error(
        "tuple with a condition",
        post(&server, &admin, "/v1/rebac/tuples", &conditional).await,
        400,
        "condition_unsupported",
    )
    .await;
    expect_error(
        "empty write",
        post(&server, &admin, "/v1/rebac/tuples", &json!({})).await,
        400,
        "validation_error",
    )
    .await;

    // A batch with an existing tuple is refused whole: its new tuple is not written either.
    let new = "repository:warden#reader@agent:example.org/agent/new";
    let resp = write_tuples(&server, &admin, "/v1/rebac", &[new, T_TASK], &[]).await;
    let body = expect_error("existing tuple", resp, 409, "tuple_exists").await;
    assert!(
        body["message"].as_str().unwrap().contains(T_TASK),
        "{body:#}"
    );
    let resp = write_tuples(&server, &admin, "/v1/rebac", &[new], &[T_READER, T_READER]).await;
    expect_error("a tuple deleted twice", resp, 400, "validation_error").await;
    let resp = write_tuples(&server, &admin, "/v1/rebac", &[new, new], &[]).await;
    expect_error("a tuple written twice", resp, 400, "validation_error").await;
    // Deleting a missing tuple refuses the whole batch too.
    let missing = "repository:warden#reader@agent:example.org/agent/nobody";
    let resp = write_tuples(&server, &admin, "/v1/rebac", &[new], &[missing]).await;
    let body = expect_error("missing tuple", resp, 409, "tuple_not_found").await;
    assert!(
        body["message"].as_str().unwrap().contains(missing),
        "{body:#}"
    );
    let tuples = all_tuples(&server, &admin, "/v1/rebac").await;
    let mut expected = vec![
        T_READER.to_owned(),
        T_TASK.to_owned(),
        T_ASSIGNEE.to_owned(),
    ];
    expected.sort();
    assert_eq!(tuples, expected, "no refused batch left anything behind");
    assert!(
        !check(
            &server,
            &admin,
            "agent:example.org/agent/new",
            "reader",
            REPO
        )
        .await
    );
    let stores = ok_json(
        "stores",
        get(&server, &admin, "/v1/rebac/stores").await,
        200,
    )
    .await;
    assert_eq!(stores[0]["revision"], 1, "refused batches make no revision");

    // 101 tuples in one write: too many. 100 are fine.
    let many: Vec<String> = (0..101)
        .map(|i| format!("repository:warden#reader@agent:example.org/agent/bulk-{i}"))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let resp = write_tuples(&server, &admin, "/v1/rebac", &refs, &[]).await;
    expect_error("101 tuples", resp, 400, "too_many_tuples").await;
    let resp = write_tuples(&server, &admin, "/v1/rebac", &refs[..100], &refs[100..]).await;
    expect_error("100 writes and 1 delete", resp, 400, "too_many_tuples").await;
    let written = ok_json(
        "100 tuples",
        write_tuples(&server, &admin, "/v1/rebac", &refs[..100], &[]).await,
        200,
    )
    .await;
    assert_eq!(written["revision"], 2, "{written:#}");
    assert!(
        check(
            &server,
            &admin,
            "agent:example.org/agent/bulk-99",
            "reader",
            REPO
        )
        .await
    );

    // A model id that is not the one in force.
    let other = json!({
        "tuple_key": {"user": CODER, "relation": "writer", "object": REPO},
        "authorization_model_id": "0".repeat(64),
    });
    expect_error(
        "another model id",
        post(&server, &admin, "/v1/rebac/check", &other).await,
        400,
        "validation_error",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_tuples_lapse_and_can_be_written_again() {
    let (_install, server, admin) = start().await;
    seed(&server, &admin).await;
    let temp = "agent:example.org/agent/temp";
    let temp_tuple = "repository:warden#reader@agent:example.org/agent/temp";

    let expires_ms = now_ms() + 2_000;
    let expires_at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_ms) * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
    let write = json!({"writes": {"tuple_keys": [
        {"object": REPO, "relation": "reader", "user": temp, "expires_at": expires_at}
    ]}});
    let written = ok_json(
        "expiring write",
        post(&server, &admin, "/v1/rebac/tuples", &write).await,
        200,
    )
    .await;
    assert_eq!(written["revision"], 2, "{written:#}");
    // Listed with its expiry while it lives (unless this machine took 2 s to get here).
    let listed = ok_json(
        "read the expiring tuple",
        get(&server, &admin, &format!("/v1/rebac/tuples?user={temp}")).await,
        200,
    )
    .await;
    if now_ms() < expires_ms {
        let tuples = listed["tuples"].as_array().unwrap();
        assert_eq!(tuples.len(), 1, "{listed:#}");
        let shown = time::OffsetDateTime::parse(
            tuples[0]["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(
            shown.unix_timestamp_nanos() / 1_000_000,
            i128::from(expires_ms),
            "{listed:#}"
        );
    }

    // Poll until it lapses: every allow was asked before the expiry instant, the first deny
    // came back after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut allows = 0;
    let mut first_received = None;
    loop {
        let sent = now_ms();
        let allowed = check(&server, &admin, temp, "reader", REPO).await;
        let received = now_ms();
        first_received.get_or_insert(received);
        if allowed {
            assert!(
                sent < expires_ms,
                "allowed when asked {} ms after the expiry",
                sent - expires_ms
            );
            allows += 1;
        } else {
            assert!(
                received >= expires_ms,
                "denied {} ms before the expiry",
                expires_ms - received
            );
            break;
        }
        assert!(Instant::now() < deadline, "the expiring tuple never lapsed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Alive when asked early enough (a deny is only possible once the expiry has passed).
    assert!(
        allows >= 1 || first_received.is_some_and(|r| r >= expires_ms),
        "the tuple was never seen alive"
    );

    // Absent everywhere: checks, reads, lists.
    assert!(!check(&server, &admin, temp, "reader", REPO).await);
    assert!(
        !all_tuples(&server, &admin, "/v1/rebac")
            .await
            .contains(&temp_tuple.to_owned())
    );
    let objects = ok_json(
        "list-objects after expiry",
        post(
            &server,
            &admin,
            "/v1/rebac/list-objects",
            &json!({"type": "repository", "relation": "reader", "user": temp}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(objects["objects"], json!([]), "{objects:#}");
    // Deleting it is deleting a tuple that does not exist.
    let resp = write_tuples(&server, &admin, "/v1/rebac", &[], &[temp_tuple]).await;
    expect_error("delete an expired tuple", resp, 409, "tuple_not_found").await;

    // Written again (a renewal), without an expiry: it counts again.
    let renewed = ok_json(
        "renewal",
        write_tuples(&server, &admin, "/v1/rebac", &[temp_tuple], &[]).await,
        200,
    )
    .await;
    assert_eq!(renewed["revision"], 3, "{renewed:#}");
    assert!(check(&server, &admin, temp, "reader", REPO).await);
    let listed = ok_json(
        "read the renewed tuple",
        get(&server, &admin, &format!("/v1/rebac/tuples?user={temp}")).await,
        200,
    )
    .await;
    assert_eq!(listed["tuples"].as_array().unwrap().len(), 1, "{listed:#}");
    assert!(
        listed["tuples"][0].get("expires_at").is_none(),
        "{listed:#}"
    );
}

// ---- queries --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_expand_read_and_changes() {
    let (install, server, admin) = start().await;
    seed(&server, &admin).await;
    let extra = "repository:warden#reader@agent:example.org/agent/extra";
    let w = ok_json(
        "write extra",
        write_tuples(&server, &admin, "/v1/rebac", &[extra], &[]).await,
        200,
    )
    .await;
    assert_eq!(w["revision"], 2);
    let d = ok_json(
        "delete extra",
        write_tuples(&server, &admin, "/v1/rebac", &[], &[extra]).await,
        200,
    )
    .await;
    assert_eq!(d["revision"], 3);

    // ListObjects.
    let lo = ok_json(
        "list-objects",
        post(
            &server,
            &admin,
            "/v1/rebac/list-objects",
            &json!({"type": "repository", "relation": "writer", "user": CODER}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(lo["objects"], json!([REPO]), "{lo:#}");
    assert_eq!(lo["revision"], 3, "{lo:#}");
    let lo = ok_json(
        "list-objects for the reviewer",
        post(
            &server,
            &admin,
            "/v1/rebac/list-objects",
            &json!({"type": "repository", "relation": "writer", "user": REVIEWER}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(lo["objects"], json!([]), "{lo:#}");

    // ListUsers.
    let lu = ok_json(
        "list-users",
        post(
            &server,
            &admin,
            "/v1/rebac/list-users",
            &json!({"object": {"type": "repository", "id": "warden"}, "relation": "reader",
                    "user_filters": [{"type": "agent"}]}),
        )
        .await,
        200,
    )
    .await;
    let users = lu["users"].as_array().unwrap();
    for id in ["example.org/agent/coder", "example.org/agent/reviewer"] {
        assert!(
            users.contains(&json!({"object": {"type": "agent", "id": id}})),
            "{id}: {lu:#}"
        );
    }
    assert_eq!(users.len(), 2, "{lu:#}");
    let lu = ok_json(
        "list-users writers",
        post(
            &server,
            &admin,
            "/v1/rebac/list-users",
            &json!({"object": {"type": "repository", "id": "warden"}, "relation": "writer",
                    "user_filters": [{"type": "agent"}]}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        lu["users"],
        json!([{"object": {"type": "agent", "id": "example.org/agent/coder"}}]),
        "{lu:#}"
    );
    let two_filters = json!({"object": {"type": "repository", "id": "warden"}, "relation": "reader",
                             "user_filters": [{"type": "agent"}, {"type": "task"}]});
    expect_error(
        "two user filters",
        post(&server, &admin, "/v1/rebac/list-users", &two_filters).await,
        400,
        "validation_error",
    )
    .await;

    // Expand.
    let ex = ok_json(
        "expand",
        post(
            &server,
            &admin,
            "/v1/rebac/expand",
            &json!({"tuple_key": {"relation": "writer", "object": REPO}}),
        )
        .await,
        200,
    )
    .await;
    let root = &ex["tree"]["root"];
    assert_eq!(root["name"], "repository:warden#writer", "{ex:#}");
    assert_eq!(
        root["leaf"]["tupleToUserset"]["tupleset"], "repository:warden#task",
        "{ex:#}"
    );
    assert_eq!(
        root["leaf"]["tupleToUserset"]["computed"],
        json!([{"userset": "task:patch-1#assignee"}]),
        "{ex:#}"
    );
    let ex = ok_json(
        "expand reader",
        post(
            &server,
            &admin,
            "/v1/rebac/expand",
            &json!({"tuple_key": {"relation": "reader", "object": REPO}}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(ex["tree"]["root"]["name"], "repository:warden#reader");
    assert!(ex["tree"]["root"]["union"]["nodes"].is_array(), "{ex:#}");

    // Read with filters.
    let read = |query: &'static str| {
        let server = &server;
        let admin = &admin;
        async move {
            let page = ok_json(
                query,
                get(server, admin, &format!("/v1/rebac/tuples{query}")).await,
                200,
            )
            .await;
            let mut out: Vec<String> = page["tuples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    format!(
                        "{}#{}@{}",
                        t["object"].as_str().unwrap(),
                        t["relation"].as_str().unwrap(),
                        t["user"].as_str().unwrap()
                    )
                })
                .collect();
            out.sort();
            out
        }
    };
    assert_eq!(read("?object=repository:").await, [T_READER, T_TASK]);
    assert_eq!(read("?object=task:patch-1").await, [T_ASSIGNEE]);
    assert_eq!(read("?relation=reader").await, [T_READER]);
    assert_eq!(
        read("?user=agent:example.org/agent/coder").await,
        [T_ASSIGNEE]
    );
    assert_eq!(
        read("?object=repository:warden&relation=task").await,
        [T_TASK]
    );
    assert_eq!(
        read("?object=repository:nothing").await,
        Vec::<String>::new()
    );

    // Pagination walks every tuple exactly once.
    let mut walked: Vec<String> = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = ok_json(
            "page",
            get(
                &server,
                &admin,
                &format!("/v1/rebac/tuples?page_size=1&continuation_token={token}"),
            )
            .await,
            200,
        )
        .await;
        let tuples = page["tuples"].as_array().unwrap();
        assert!(tuples.len() <= 1, "{page:#}");
        for t in tuples {
            walked.push(format!(
                "{}#{}@{}",
                t["object"].as_str().unwrap(),
                t["relation"].as_str().unwrap(),
                t["user"].as_str().unwrap()
            ));
        }
        token = page["continuation_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert!(token.is_empty(), "pagination did not end");
    assert_eq!(walked.len(), 3, "{walked:?}");
    walked.sort();
    walked.dedup();
    assert_eq!(walked, all_tuples(&server, &admin, "/v1/rebac").await);
    let resp = get(&server, &admin, "/v1/rebac/tuples?continuation_token=nope").await;
    expect_error("bad token", resp, 400, "invalid_continuation_token").await;

    // The change feed: writes and deletes, in order, with revisions.
    let feed = ok_json(
        "changes",
        get(&server, &admin, "/v1/rebac/changes").await,
        200,
    )
    .await;
    let changes = feed["changes"].as_array().unwrap();
    let seen: Vec<(u64, &str, String)> = changes
        .iter()
        .map(|c| {
            let k = &c["tuple_key"];
            (
                c["revision"].as_u64().unwrap(),
                c["operation"].as_str().unwrap(),
                format!(
                    "{}#{}@{}",
                    k["object"].as_str().unwrap(),
                    k["relation"].as_str().unwrap(),
                    k["user"].as_str().unwrap()
                ),
            )
        })
        .collect();
    let write = "TUPLE_OPERATION_WRITE";
    let delete = "TUPLE_OPERATION_DELETE";
    assert_eq!(
        seen,
        [
            (1, write, T_ASSIGNEE.to_owned()),
            (1, write, T_TASK.to_owned()),
            (1, write, T_READER.to_owned()),
            (2, write, extra.to_owned()),
            (3, delete, extra.to_owned()),
        ],
        "{feed:#}"
    );
    for c in changes {
        assert_eq!(c["actor"], "token:bootstrap", "{c:#}");
        assert!(c["timestamp"].as_str().unwrap().ends_with('Z'), "{c:#}");
    }
    assert_eq!(feed["continuation_token"], "3", "{feed:#}");
    // Paged: pages end on whole revisions.
    let p1 = ok_json(
        "changes page 1",
        get(&server, &admin, "/v1/rebac/changes?page_size=1").await,
        200,
    )
    .await;
    assert_eq!(p1["changes"].as_array().unwrap().len(), 3, "{p1:#}");
    assert_eq!(p1["continuation_token"], "1", "{p1:#}");
    let p2 = ok_json(
        "changes page 2",
        get(
            &server,
            &admin,
            "/v1/rebac/changes?page_size=1&continuation_token=1",
        )
        .await,
        200,
    )
    .await;
    assert_eq!(p2["changes"].as_array().unwrap().len(), 1, "{p2:#}");
    assert_eq!(p2["changes"][0]["revision"], 2, "{p2:#}");
    let end = ok_json(
        "changes at the end",
        get(&server, &admin, "/v1/rebac/changes?continuation_token=3").await,
        200,
    )
    .await;
    assert_eq!(end["changes"], json!([]), "{end:#}");
    assert_eq!(end["continuation_token"], "3", "{end:#}");
    let tasks = ok_json(
        "changes of tasks",
        get(&server, &admin, "/v1/rebac/changes?type=task").await,
        200,
    )
    .await;
    assert_eq!(tasks["changes"].as_array().unwrap().len(), 1, "{tasks:#}");
    assert_eq!(tasks["changes"][0]["tuple_key"]["object"], "task:patch-1");

    // The CLI: tables for people (a tuple as `rebac write` takes it), the API's shape with
    // `--output json`.
    let rows = |out: &Out| -> Vec<String> {
        out.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let out = cli(&install, &server, &["rebac", "read"]).await.ok();
    assert!(out.stdout.starts_with("TUPLE "), "{out:#?}");
    let mut lines: Vec<String> = rows(&out)
        .iter()
        .map(|r| r.strip_suffix(" -").unwrap_or(r).to_owned())
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, [T_READER, T_TASK, T_ASSIGNEE], "{out:#?}");
    let tuples = |out: &Out| -> Vec<String> {
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        let mut all: Vec<String> = v["tuples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                format!(
                    "{}#{}@{}",
                    t["object"].as_str().unwrap(),
                    t["relation"].as_str().unwrap(),
                    t["user"].as_str().unwrap()
                )
            })
            .collect();
        all.sort_unstable();
        all
    };
    let out = cli(
        &install,
        &server,
        &[
            "rebac",
            "read",
            "--object",
            "repository:",
            "--output",
            "json",
        ],
    )
    .await
    .ok();
    assert_eq!(tuples(&out), [T_READER, T_TASK], "{out:#?}");
    let out = cli(
        &install,
        &server,
        &["rebac", "read", "--user", CODER, "--output", "json"],
    )
    .await
    .ok();
    assert_eq!(tuples(&out), [T_ASSIGNEE], "{out:#?}");
    let out = cli(
        &install,
        &server,
        &["rebac", "read", "--user", "agent:example.org/agent/nobody"],
    )
    .await
    .ok();
    assert_eq!(out.stdout, "no tuples\n", "{out:#?}");
    let out = cli(
        &install,
        &server,
        &["rebac", "list-objects", CODER, "writer", "repository"],
    )
    .await
    .ok();
    assert_eq!(out.stdout, "OBJECT\nrepository:warden\n", "{out:#?}");
    let out = cli(
        &install,
        &server,
        &[
            "rebac",
            "list-objects",
            CODER,
            "writer",
            "repository",
            "--output",
            "json",
        ],
    )
    .await
    .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["objects"], json!(["repository:warden"]), "{v:#}");
    let out = cli(
        &install,
        &server,
        &["rebac", "list-users", REPO, "reader", "--type", "agent"],
    )
    .await
    .ok();
    let mut lines = rows(&out);
    lines.sort_unstable();
    assert_eq!(lines, [CODER, REVIEWER], "{out:#?}");
    let out = cli(&install, &server, &["rebac", "changes"]).await.ok();
    assert!(out.stdout.starts_with("TIME "), "{out:#?}");
    let lines = rows(&out);
    assert_eq!(lines.len(), 5, "{out:#?}");
    assert!(
        lines[0].ends_with(&format!(" 1 write {T_ASSIGNEE} - token:bootstrap")),
        "{out:#?}"
    );
    assert!(
        lines[1].contains(&format!(" 1 write {T_TASK} ")),
        "{out:#?}"
    );
    assert!(
        lines[2].contains(&format!(" 1 write {T_READER} ")),
        "{out:#?}"
    );
    assert!(lines[3].contains(&format!(" 2 write {extra} ")), "{out:#?}");
    assert!(
        lines[4].contains(&format!(" 3 delete {extra} ")),
        "{out:#?}"
    );
    let out = cli(
        &install,
        &server,
        &["rebac", "changes", "--after", "2", "--output", "json"],
    )
    .await
    .ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{v:#}");
    assert_eq!(changes[0]["operation"], "TUPLE_OPERATION_DELETE", "{v:#}");
    assert_eq!(changes[0]["revision"], 3, "{v:#}");
}

// ---- stores and roles -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_stores_are_isolated() {
    let (install, server, admin) = start().await;
    let (default_id, _) = seed(&server, &admin).await;

    let b = "/v1/rebac/stores/tenant-b";
    // No model yet: the store does not exist.
    let q = json!({"tuple_key": {"user": CODER, "relation": "reader", "object": REPO}});
    expect_error(
        "store without a model",
        post(&server, &admin, &format!("{b}/check"), &q).await,
        404,
        "unknown_store",
    )
    .await;
    let pushed = ok_json(
        "push tenant-b",
        put_model(
            &server,
            &admin,
            &format!("{b}/model"),
            &example("model.fga"),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(pushed["store"], "tenant-b", "{pushed:#}");
    assert_eq!(pushed["version"], 1, "{pushed:#}");
    let only_b = "repository:warden#reader@agent:example.org/agent/tenant-b-reader";
    let w = ok_json(
        "write in tenant-b",
        write_tuples(&server, &admin, b, &[only_b], &[]).await,
        200,
    )
    .await;
    assert_eq!(w["revision"], 1, "{w:#}");

    // Each store sees only its own tuples.
    let b_reader = "agent:example.org/agent/tenant-b-reader";
    assert!(check_answer(&server, &admin, b, b_reader, "reader", REPO).await["allowed"] == true);
    assert!(!check(&server, &admin, b_reader, "reader", REPO).await);
    assert!(check(&server, &admin, REVIEWER, "reader", REPO).await);
    assert!(check_answer(&server, &admin, b, REVIEWER, "reader", REPO).await["allowed"] == false);
    assert!(check_answer(&server, &admin, b, CODER, "writer", REPO).await["allowed"] == false);
    assert_eq!(all_tuples(&server, &admin, b).await, [only_b]);
    assert!(
        !all_tuples(&server, &admin, "/v1/rebac")
            .await
            .contains(&only_b.to_owned())
    );

    // The CLI takes --store.
    let out = cli(
        &install,
        &server,
        &[
            "rebac", "--store", "tenant-b", "check", b_reader, "reader", REPO,
        ],
    )
    .await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let out = cli(
        &install,
        &server,
        &["rebac", "check", b_reader, "reader", REPO],
    )
    .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    let out = cli(&install, &server, &["rebac", "--store", "tenant-b", "read"])
        .await
        .ok();
    assert_eq!(
        out.stdout,
        format!(
            "TUPLE{}EXPIRES\n{only_b}  -\n",
            " ".repeat(only_b.len() - 3)
        ),
        "{out:#?}"
    );

    // Both are listed with their revisions.
    let stores = ok_json(
        "stores",
        get(&server, &admin, "/v1/rebac/stores").await,
        200,
    )
    .await;
    let stores = stores.as_array().unwrap();
    assert_eq!(stores.len(), 2, "{stores:#?}");
    let find = |name: &str| {
        stores
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {stores:#?}"))
    };
    assert_eq!(find("default")["revision"], 1);
    assert_eq!(find("default")["model_version"], 1);
    assert_eq!(
        find("default")["authorization_model_id"],
        default_id.as_str()
    );
    assert_eq!(find("tenant-b")["revision"], 1);
    assert_eq!(find("tenant-b")["model_version"], 1);

    // A bad store name.
    for path in [
        "/v1/rebac/stores/Bad%20Name/model",
        "/v1/rebac/stores/UPPER/tuples",
    ] {
        let resp = get(&server, &admin, path).await;
        expect_error(path, resp, 400, "invalid_store").await;
    }
    expect_error(
        "bad store name on upload",
        put_model(
            &server,
            &admin,
            "/v1/rebac/stores/Bad%20Name/model",
            &example("model.fga"),
        )
        .await,
        400,
        "invalid_store",
    )
    .await;
    expect_error(
        "bad store name on check",
        post(&server, &admin, "/v1/rebac/stores/Bad%20Name/check", &q).await,
        400,
        "invalid_store",
    )
    .await;
    let long = format!("/v1/rebac/stores/{}/model", "a".repeat(65));
    expect_error(
        "store name too long",
        get(&server, &admin, &long).await,
        400,
        "invalid_store",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_gate_writes_and_reads() {
    let (_install, server, admin) = start().await;
    seed(&server, &admin).await;
    let enforcer = common::create_token_secret(&server, &admin, "gateway", "enforcer").await;
    let auditor = common::create_token_secret(&server, &admin, "audit", "auditor").await;
    let approver = common::create_token_secret(&server, &admin, "approve", "approver").await;
    let new = "repository:warden#reader@agent:example.org/agent/new";

    for (who, token) in [("enforcer", &enforcer), ("auditor", &auditor)] {
        // Reads and questions.
        assert!(check(&server, token, CODER, "writer", REPO).await, "{who}");
        ok_json(
            &format!("{who} reads the model"),
            get(&server, token, "/v1/rebac/model").await,
            200,
        )
        .await;
        ok_json(
            &format!("{who} lists stores"),
            get(&server, token, "/v1/rebac/stores").await,
            200,
        )
        .await;
        assert_eq!(
            all_tuples(&server, token, "/v1/rebac").await.len(),
            3,
            "{who}"
        );
        let lo = ok_json(
            &format!("{who} lists objects"),
            post(
                &server,
                token,
                "/v1/rebac/list-objects",
                &json!({"type": "repository", "relation": "writer", "user": CODER}),
            )
            .await,
            200,
        )
        .await;
        assert_eq!(lo["objects"], json!([REPO]));
        ok_json(
            &format!("{who} lists users"),
            post(
                &server,
                token,
                "/v1/rebac/list-users",
                &json!({"object": {"type": "repository", "id": "warden"}, "relation": "reader",
                        "user_filters": [{"type": "agent"}]}),
            )
            .await,
            200,
        )
        .await;
        ok_json(
            &format!("{who} expands"),
            post(
                &server,
                token,
                "/v1/rebac/expand",
                &json!({"tuple_key": {"relation": "writer", "object": REPO}}),
            )
            .await,
            200,
        )
        .await;
        ok_json(
            &format!("{who} reads changes"),
            get(&server, token, "/v1/rebac/changes").await,
            200,
        )
        .await;

        // No writes, no model uploads.
        let resp = write_tuples(&server, token, "/v1/rebac", &[new], &[]).await;
        expect_error(&format!("{who} writes"), resp, 403, "forbidden").await;
        let resp = write_tuples(&server, token, "/v1/rebac", &[], &[T_TASK]).await;
        expect_error(&format!("{who} deletes"), resp, 403, "forbidden").await;
        let resp = put_model(&server, token, "/v1/rebac/model", &example("model.fga")).await;
        expect_error(&format!("{who} uploads a model"), resp, 403, "forbidden").await;
        let resp = put_model(
            &server,
            token,
            "/v1/rebac/stores/mine/model",
            &example("model.fga"),
        )
        .await;
        expect_error(&format!("{who} creates a store"), resp, 403, "forbidden").await;
    }

    // An approver has no business here.
    let resp = get(&server, &approver, "/v1/rebac/tuples").await;
    expect_error("approver reads", resp, 403, "forbidden").await;
    let q = json!({"tuple_key": {"user": CODER, "relation": "writer", "object": REPO}});
    let resp = post(&server, &approver, "/v1/rebac/check", &q).await;
    expect_error("approver checks", resp, 403, "forbidden").await;
    // Nobody without a token.
    let resp = server
        .http
        .post(server.at("/v1/rebac/check"))
        .json(&q)
        .send()
        .await
        .unwrap();
    expect_error("no token", resp, 401, "unauthenticated").await;

    // Nothing was changed by the refused calls; the admin can do everything.
    let stores = ok_json(
        "stores",
        get(&server, &admin, "/v1/rebac/stores").await,
        200,
    )
    .await;
    assert_eq!(stores.as_array().unwrap().len(), 1, "{stores:#}");
    assert_eq!(stores[0]["revision"], 1, "{stores:#}");
    assert_eq!(stores[0]["model_version"], 1, "{stores:#}");
    ok_json(
        "admin writes",
        write_tuples(&server, &admin, "/v1/rebac", &[new], &[]).await,
        200,
    )
    .await;
    ok_json(
        "admin deletes",
        write_tuples(&server, &admin, "/v1/rebac", &[], &[new]).await,
        200,
    )
    .await;
    ok_json(
        "admin uploads",
        put_model(&server, &admin, "/v1/rebac/model", &example("model.fga")).await,
        201,
    )
    .await;
}

// ---- the policy decision point --------------------------------------------------------------

/// `POST /v1/authorize` for `principal` doing `action` on `Repository::"warden"`.
async fn authorize(
    server: &Server,
    token: &str,
    package: &str,
    principal: &str,
    action: &str,
) -> Value {
    let body = json!({"package": package, "principal": principal, "action": action,
                      "resource": {"type": "Repository", "id": "warden"}});
    ok_json(
        &format!("{package}: {principal} {action}"),
        post(server, token, "/v1/authorize", &body).await,
        200,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_decide_with_relations() {
    let (install, server, admin) = start().await;
    let enforcer = common::create_token_secret(&server, &admin, "gateway", "enforcer").await;
    let auditor = common::create_token_secret(&server, &admin, "audit", "auditor").await;

    let out = cli(
        &install,
        &server,
        &[
            "policy",
            "push",
            "coder-rebac",
            &example_path("coder.cedar"),
            &example_path("coder.cedarschema"),
        ],
    )
    .await
    .ok();
    assert!(
        out.stdout.starts_with("coder-rebac version 1 (cedar)"),
        "{out:#?}"
    );
    let out = cli(
        &install,
        &server,
        &[
            "policy",
            "push",
            "coder-rebac-rego",
            &example_path("coder.rego"),
        ],
    )
    .await
    .ok();
    assert!(
        out.stdout.starts_with("coder-rebac-rego version 1 (rego)"),
        "{out:#?}"
    );

    // No relationship store yet: nobody holds a relation, so everything is denied.
    let d = authorize(&server, &enforcer, "coder-rebac", CODER_ID, "write").await;
    assert_eq!(d["decision"], "deny", "{d:#}");

    seed(&server, &admin).await;

    // Cedar: the Coder writes through its task; the reviewer reads but does not write.
    let allow = authorize(&server, &enforcer, "coder-rebac", CODER_ID, "write").await;
    assert_eq!(allow["decision"], "allow", "{allow:#}");
    assert_eq!(allow["allowed"], true, "{allow:#}");
    assert_eq!(
        allow["determining_policies"],
        json!(["writers-write-at-low-risk"]),
        "{allow:#}"
    );
    let d = authorize(&server, &enforcer, "coder-rebac", REVIEWER_ID, "write").await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    assert_eq!(d["determining_policies"], json!([]), "{d:#}");
    let d = authorize(&server, &enforcer, "coder-rebac", REVIEWER_ID, "read").await;
    assert_eq!(d["decision"], "allow", "{d:#}");
    assert_eq!(d["determining_policies"], json!(["readers-read"]), "{d:#}");
    let d = authorize(&server, &enforcer, "coder-rebac", CODER_ID, "read").await;
    assert_eq!(d["decision"], "allow", "{d:#}");
    let d = authorize(
        &server,
        &enforcer,
        "coder-rebac",
        "spiffe://example.org/agent/stranger",
        "read",
    )
    .await;
    assert_eq!(d["decision"], "deny", "{d:#}");

    // Rego: the same decisions.
    let rego_allow = authorize(&server, &enforcer, "coder-rebac-rego", CODER_ID, "write").await;
    assert_eq!(rego_allow["decision"], "allow", "{rego_allow:#}");
    assert_eq!(
        rego_allow["determining_policies"],
        json!(["data.warden.coder_rebac.allow"]),
        "{rego_allow:#}"
    );
    let d = authorize(&server, &enforcer, "coder-rebac-rego", REVIEWER_ID, "write").await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    let d = authorize(&server, &enforcer, "coder-rebac-rego", REVIEWER_ID, "read").await;
    assert_eq!(d["decision"], "allow", "{d:#}");

    // The relations are recorded with the decision.
    let entries = server.all_entries(&auditor).await;
    let recorded = |id: &Value| {
        entries
            .iter()
            .find(|e| {
                e["event"]["action"] == "policy.decision"
                    && e["event"]["fields"]["decision_id"] == *id
            })
            .unwrap_or_else(|| panic!("decision {id} not in the ledger"))
            .clone()
    };
    let e = recorded(&allow["decision_id"]);
    assert_eq!(e["event"]["fields"]["decision"], "allow", "{e:#}");
    assert_eq!(e["event"]["fields"]["principal"], CODER_ID, "{e:#}");
    assert_eq!(
        e["event"]["fields"]["request"]["context"]["relations"],
        json!(["reader", "writer"]),
        "{e:#}"
    );
    let e = recorded(&rego_allow["decision_id"]);
    assert_eq!(
        e["event"]["fields"]["request"]["context"]["relations"],
        json!(["reader", "writer"]),
        "{e:#}"
    );

    // The task link goes: the Coder no longer writes (nor reads), with no policy change.
    let out = cli(&install, &server, &["rebac", "delete", T_TASK])
        .await
        .ok();
    assert!(out.stdout.starts_with("deleted; revision 2"), "{out:#?}");
    let d = authorize(&server, &enforcer, "coder-rebac", CODER_ID, "write").await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    let d = authorize(&server, &enforcer, "coder-rebac", CODER_ID, "read").await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    let d = authorize(&server, &enforcer, "coder-rebac-rego", CODER_ID, "write").await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    let d = authorize(&server, &enforcer, "coder-rebac", REVIEWER_ID, "read").await;
    assert_eq!(d["decision"], "allow", "{d:#}");
    // Back again: allowed again.
    cli(&install, &server, &["rebac", "write", T_TASK])
        .await
        .ok();
    let d = authorize(&server, &enforcer, "coder-rebac", CODER_ID, "write").await;
    assert_eq!(d["decision"], "allow", "{d:#}");
}

// ---- ledger and restart ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_records_models_writes_and_checks() {
    let (_install, server, admin) = start().await;
    let (id, _) = seed(&server, &admin).await;
    let enforcer = common::create_token_secret(&server, &admin, "gateway", "enforcer").await;
    let allowed = check_answer(&server, &enforcer, "/v1/rebac", CODER, "writer", REPO).await;
    let denied = check_answer(&server, &enforcer, "/v1/rebac", REVIEWER, "writer", REPO).await;
    ok_json(
        "delete",
        write_tuples(&server, &admin, "/v1/rebac", &[], &[T_READER]).await,
        200,
    )
    .await;
    // A refused write is not in force and not recorded as done.
    let resp = write_tuples(&server, &admin, "/v1/rebac", &[T_TASK], &[]).await;
    expect_error("existing", resp, 409, "tuple_exists").await;

    let entries = server.all_entries(&admin).await;
    common::check_leaves(&entries);
    let of = |action: &str| -> Vec<&Value> {
        entries
            .iter()
            .map(|e| &e["event"])
            .filter(|e| e["action"] == action)
            .collect()
    };
    let models = of("rebac.model");
    assert_eq!(models.len(), 1, "{models:#?}");
    assert_eq!(models[0]["fields"]["store"], "default");
    assert_eq!(models[0]["fields"]["authorization_model_id"], id.as_str());
    assert_eq!(models[0]["actor"], "token:bootstrap");
    assert_eq!(models[0]["outcome"], "success");

    let writes = of("rebac.write");
    let done: Vec<&&Value> = writes
        .iter()
        .filter(|w| w["outcome"] == "success")
        .collect();
    assert_eq!(done.len(), 2, "{writes:#?}");
    assert_eq!(done[0]["fields"]["store"], "default");
    assert_eq!(
        done[0]["fields"]["writes"],
        json!([key(T_ASSIGNEE), key(T_TASK), key(T_READER)]),
        "{:#}",
        done[0]
    );
    assert_eq!(done[0]["fields"]["deletes"], json!([]));
    assert_eq!(done[1]["fields"]["writes"], json!([]));
    assert_eq!(done[1]["fields"]["deletes"], json!([key(T_READER)]));
    assert!(
        !writes
            .iter()
            .any(|w| w["outcome"] == "success" && w["fields"]["writes"] == json!([key(T_TASK)])),
        "the refused write is recorded as done: {writes:#?}"
    );

    let checks = of("rebac.check");
    let find = |answer: &Value| {
        *checks
            .iter()
            .find(|c| c["fields"]["decision_id"] == answer["decision_id"])
            .unwrap_or_else(|| panic!("check {answer} not recorded: {checks:#?}"))
    };
    let a = find(&allowed);
    assert_eq!(a["fields"]["allowed"], true, "{a:#}");
    assert_eq!(a["fields"]["store"], "default", "{a:#}");
    assert_eq!(a["fields"]["user"], CODER, "{a:#}");
    assert_eq!(a["fields"]["relation"], "writer", "{a:#}");
    assert_eq!(a["fields"]["object"], REPO, "{a:#}");
    assert_eq!(a["fields"]["revision"], 1, "{a:#}");
    assert_eq!(a["outcome"], "success", "{a:#}");
    assert_eq!(a["actor"], "token:gateway", "{a:#}");
    let d = find(&denied);
    assert_eq!(d["fields"]["allowed"], false, "{d:#}");
    assert_eq!(d["fields"]["user"], REVIEWER, "{d:#}");
    assert_eq!(d["outcome"], "denied", "{d:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_model_tuples_and_revision() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let (id, _) = seed(&server, &admin).await;
    // Revision 2: one more reader; revision 3: the reviewer removed; tenant-b has its own.
    let extra = "repository:warden#reader@agent:example.org/agent/extra";
    ok_json(
        "write",
        write_tuples(&server, &admin, "/v1/rebac", &[extra], &[]).await,
        200,
    )
    .await;
    ok_json(
        "delete",
        write_tuples(&server, &admin, "/v1/rebac", &[], &[T_READER]).await,
        200,
    )
    .await;
    ok_json(
        "tenant-b",
        put_model(
            &server,
            &admin,
            "/v1/rebac/stores/tenant-b/model",
            &example("model.fga"),
        )
        .await,
        201,
    )
    .await;
    ok_json(
        "tenant-b write",
        write_tuples(
            &server,
            &admin,
            "/v1/rebac/stores/tenant-b",
            &[T_ASSIGNEE, T_TASK],
            &[],
        )
        .await,
        200,
    )
    .await;
    let questions = [
        (CODER, "writer"),
        (CODER, "reader"),
        (REVIEWER, "reader"),
        (REVIEWER, "writer"),
        ("agent:example.org/agent/extra", "reader"),
    ];
    let mut before = Vec::new();
    for (user, relation) in questions {
        before.push(check(&server, &admin, user, relation, REPO).await);
    }
    assert_eq!(before, [true, true, false, false, true]);
    let tuples_before = all_tuples(&server, &admin, "/v1/rebac").await;
    let b_before = all_tuples(&server, &admin, "/v1/rebac/stores/tenant-b").await;
    let stores_before = ok_json(
        "stores",
        get(&server, &admin, "/v1/rebac/stores").await,
        200,
    )
    .await;
    let model_before = ok_json("model", get(&server, &admin, "/v1/rebac/model").await, 200).await;

    server.stop().await;
    let server = install.serve().await;

    let stores_after = ok_json(
        "stores",
        get(&server, &admin, "/v1/rebac/stores").await,
        200,
    )
    .await;
    assert_eq!(stores_after, stores_before);
    assert_eq!(stores_after[0]["name"], "default", "{stores_after:#}");
    assert_eq!(stores_after[0]["revision"], 3, "{stores_after:#}");
    let model_after = ok_json("model", get(&server, &admin, "/v1/rebac/model").await, 200).await;
    assert_eq!(model_after, model_before);
    assert_eq!(model_after["authorization_model_id"], id.as_str());
    assert_eq!(
        all_tuples(&server, &admin, "/v1/rebac").await,
        tuples_before
    );
    assert_eq!(
        all_tuples(&server, &admin, "/v1/rebac/stores/tenant-b").await,
        b_before
    );
    let mut after = Vec::new();
    for (user, relation) in questions {
        after.push(check(&server, &admin, user, relation, REPO).await);
    }
    assert_eq!(after, before);
    let a = check_answer(
        &server,
        &admin,
        "/v1/rebac/stores/tenant-b",
        CODER,
        "writer",
        REPO,
    )
    .await;
    assert_eq!(a["allowed"], true, "{a:#}");
    let feed = ok_json(
        "changes",
        get(&server, &admin, "/v1/rebac/changes").await,
        200,
    )
    .await;
    assert_eq!(feed["changes"].as_array().unwrap().len(), 5, "{feed:#}");

    // Writing continues from the revision it stopped at.
    let w = ok_json(
        "write after restart",
        write_tuples(&server, &admin, "/v1/rebac", &[T_READER], &[]).await,
        200,
    )
    .await;
    assert_eq!(w["revision"], 4, "{w:#}");
    assert!(check(&server, &admin, REVIEWER, "reader", REPO).await);
    server.stop().await;
}
