//! End-to-end tests of the `warden` binary: `init`, `serve`, the HTTP API boundary, the
//! ledger over HTTP (proofs against signed checkpoints), export and offline verification,
//! graceful shutdown and role separation. Each test has its own data directory and port.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{os::unix::fs::PermissionsExt, time::Duration};

use common::{
    Install, Server, b64, check_leaves, create_token, expect_error, export_and_verify, hash_of,
    run, unb64, verify_export, warden,
};
use ledger::{Checkpoint, NoteVerifier};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The entry whose `fields.request_id` is `id` (exactly one).
fn entry_by_request_id<'a>(entries: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event"]["fields"]["request_id"] == id)
        .collect();
    assert_eq!(found.len(), 1, "entries with request id {id}: {found:#?}");
    found[0]
}

fn seq_header(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("warden-audit-seq")
        .expect("warden-audit-seq header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------------------------
// init and serve start-up
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn init_is_private_idempotent_and_refuses_another_trust_domain() {
    let install = Install::empty();
    let out = install.init(&["--trust-domain", "corp.example"]).await.ok();
    assert!(out.stdout.contains("corp.example"), "{out:#?}");
    // The token is never printed when written to a file.
    let token = install.admin_token();
    assert!(!out.all().contains(&token), "token leaked to the output");

    let raw = std::fs::read_to_string(&install.token_file).unwrap();
    assert_eq!(mode(&install.token_file), 0o600, "token file mode");
    assert_eq!(raw.lines().count(), 1, "one line: {raw:?}");
    assert!(raw.ends_with('\n'));
    assert!(token.starts_with("wdn_") && token.len() == 47, "{token}");
    assert_eq!(mode(&install.data_dir), 0o700, "data dir mode");
    for secret in ["ledger.key", "audit-hmac.key", "warden.toml"] {
        assert_eq!(mode(&install.data_dir.join(secret)), 0o600, "{secret} mode");
    }
    let before = install.snapshot();
    let token_before = std::fs::read(&install.token_file).unwrap();

    // Again, with and without the same trust domain: a no-op that exits 0. A new token
    // file is not written either.
    let other_token_file = install.path("second.token");
    for extra in [&[][..], &["--trust-domain", "corp.example"][..]] {
        let mut cmd = install.cmd();
        cmd.arg("init")
            .arg("--admin-token-file")
            .arg(&other_token_file)
            .args(extra);
        let out = run(cmd).await;
        assert_eq!(out.code(), Some(0), "{out:#?}");
        assert!(out.stdout.contains("already initialised"), "{out:#?}");
        assert!(out.stdout.contains("nothing changed"), "{out:#?}");
        assert!(!other_token_file.exists(), "second init wrote a token file");
    }

    // Another trust domain: refused, nothing changed.
    let out = install.init(&["--trust-domain", "other.example"]).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("corp.example"), "{out:#?}");
    assert!(out.stderr.contains("nothing changed"), "{out:#?}");
    assert_eq!(install.snapshot(), before, "data directory changed");
    assert_eq!(std::fs::read(&install.token_file).unwrap(), token_before);

    // The install still works with the original token and trust domain.
    let server = install.serve().await;
    let entries = server.all_entries(&install.admin_token()).await;
    assert_eq!(entries[0]["event"]["action"], "install.init");
    assert_eq!(
        entries[0]["event"]["fields"]["trust_domain"],
        "corp.example"
    );
    assert!(
        server
            .checkpoint()
            .await
            .0
            .origin
            .starts_with("corp.example/"),
        "origin"
    );
}

#[tokio::test]
async fn init_refuses_bad_input_and_leaves_nothing_behind() {
    // An invalid trust domain.
    let install = Install::empty();
    let out = install.init(&["--trust-domain", "Not A Domain"]).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("trust domain"), "{out:#?}");
    assert!(!install.data_dir.exists(), "data dir created");
    assert!(!install.token_file.exists());

    // An admin token file that already exists is never overwritten.
    let install = Install::empty();
    std::fs::write(&install.token_file, "keep me\n").unwrap();
    let out = install.init(&[]).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("already exists"), "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(&install.token_file).unwrap(),
        "keep me\n"
    );
    assert!(!install.data_dir.exists(), "data dir created");

    // An unsupported database URL.
    let install = Install::empty_with(Some("mysql://127.0.0.1/x".into()));
    let out = install.init(&[]).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(!install.data_dir.join("warden.toml").exists());
    assert!(!install.token_file.exists());
}

#[tokio::test]
async fn serve_refuses_an_uninitialised_or_unsafe_data_dir() {
    // A directory that holds something but no install: refused, untouched.
    let install = Install::empty();
    std::fs::create_dir(&install.data_dir).unwrap();
    std::fs::write(install.data_dir.join("notes.txt"), "not warden's").unwrap();
    let before = install.snapshot();
    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    let out = run(cmd).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("run `warden init`"), "{out:#?}");
    assert!(!out.stderr.contains("warden listening"), "{out:#?}");
    assert_eq!(
        install.snapshot(),
        before,
        "serve changed an uninitialised directory"
    );

    let install = Install::new().await;
    // A listen address that is not HOST:PORT.
    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "nope"]);
    let out = run(cmd).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("nope"), "{out:#?}");

    // A signing key readable by others is refused, with the fix in the message.
    let key = install.data_dir.join("ledger.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    let out = run(cmd).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("chmod 600"), "{out:#?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    install.serve().await.stop().await;
}

/// `serve` on a data directory that does not exist yet initialises it with defaults and
/// the bootstrap admin token in `DATA_DIR/admin.token` (0600); later starts do not.
#[tokio::test]
async fn first_serve_on_a_fresh_dir_initialises_it_once() {
    let install = Install::empty();
    let server = install.serve().await;
    let log = server.log();
    assert!(log.contains("first start: initialising"), "{log}");
    let token_file = install.data_dir.join("admin.token");
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&install.data_dir), 0o700);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(!log.contains(&token), "the token is in the log");
    assert_eq!(server.get_json("/v1/whoami", &token).await["role"], "admin");
    let log = server.stop().await;
    assert!(log.contains("final checkpoint signed"), "{log}");

    let before = std::fs::read(&token_file).unwrap();
    let server = install.serve().await;
    assert!(!server.log().contains("first start"), "{}", server.log());
    assert_eq!(std::fs::read(&token_file).unwrap(), before);
    let entries = server.all_entries(&token).await;
    let inits = entries
        .iter()
        .filter(|e| e["event"]["action"] == "install.init")
        .count();
    assert_eq!(inits, 1);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The API boundary
// ---------------------------------------------------------------------------------------------

/// Sends `POST path` with a body of about `total` bytes over a raw connection, either with a
/// Content-Length or chunked (then only the JSON extractor's limit can stop it), reading the
/// answer while still sending: the server may answer (and close) before the body is all sent,
/// which an ordinary client reports as a broken pipe. Returns the status and the JSON body.
async fn oversized_post(
    server: &Server,
    path: &str,
    token: &str,
    request_id: &str,
    total: usize,
    chunked: bool,
) -> (u16, Value) {
    let addr = server.url.strip_prefix("http://").unwrap().to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let chunk = vec![b'a'; 64 * 1024];
    let mut first = b"{\"name\":\"".to_vec();
    first.extend_from_slice(&chunk[first.len()..]);
    let pieces = total.div_ceil(chunk.len());
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {}", pieces * chunk.len())
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\nx-request-id: {request_id}\r\n\
         {framing}\r\nconnection: close\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for i in 0..pieces {
            let data = if i == 0 { &first } else { &chunk };
            if chunked {
                wr.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                    .await?;
            }
            wr.write_all(data).await?;
            if chunked {
                wr.write_all(b"\r\n").await?;
            }
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        std::io::Result::Ok(())
    });
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 8192];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no response to the oversized upload");
    writer.abort();
    let raw = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {raw:?}"));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {raw:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{raw}"
    );
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"));
    (status, body)
}

#[tokio::test]
async fn api_boundary_errors_are_stable_json_and_failed_auth_is_audited() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let (_, auditor) = create_token(&server, &admin, "boundary-auditor", "auditor").await;
    let http = &server.http;
    let tokens = server.at("/v1/tokens");

    let resp = http
        .post(&tokens)
        .bearer_auth(&admin)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"name":"x","role":"#)
        .send()
        .await
        .unwrap();
    expect_error("malformed json", resp, 400, "invalid_json").await;

    let resp = http
        .post(&tokens)
        .bearer_auth(&admin)
        .json(&json!({"name": "x", "role": "auditor", "admin": true}))
        .send()
        .await
        .unwrap();
    let body = expect_error("unknown field", resp, 400, "invalid_request").await;
    assert!(
        body["message"].as_str().unwrap().contains("admin"),
        "{body}"
    );

    for (what, bad) in [
        ("mistyped field", json!({"name": 5, "role": "auditor"})),
        ("unknown role", json!({"name": "x", "role": "root"})),
        ("missing field", json!({"name": "x"})),
        ("a string", json!("x")),
    ] {
        let resp = http
            .post(&tokens)
            .bearer_auth(&admin)
            .json(&bad)
            .send()
            .await
            .unwrap();
        expect_error(what, resp, 400, "invalid_request").await;
    }
    let resp = http
        .post(&tokens)
        .bearer_auth(&admin)
        .json(&json!({"name": "Bad Name!", "role": "auditor"}))
        .send()
        .await
        .unwrap();
    expect_error("invalid name", resp, 400, "invalid_name").await;

    let resp = http
        .post(&tokens)
        .bearer_auth(&admin)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(r#"{"name":"x","role":"auditor"}"#)
        .send()
        .await
        .unwrap();
    expect_error("wrong content type", resp, 415, "unsupported_media_type").await;

    // 2 MiB with a Content-Length: refused before anything is read. 2 MiB chunked: stopped
    // by the extractor's limit, and then audited.
    for (chunked, rid) in [(false, "sized-upload-1"), (true, "chunked-upload-1")] {
        let (status, body) =
            oversized_post(&server, "/v1/tokens", &admin, rid, 2 << 20, chunked).await;
        assert_eq!(status, 413, "chunked {chunked}: {body}");
        assert_eq!(
            body["code"], "payload_too_large",
            "chunked {chunked}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    let resp = http
        .get(server.at("/v1/no-such-route"))
        .send()
        .await
        .unwrap();
    expect_error("unknown route", resp, 404, "not_found").await;
    let resp = http
        .get(server.at("/"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error("root", resp, 404, "not_found").await;

    let resp = http
        .put(server.at("/v1/whoami"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let allow = resp.headers().get(header::ALLOW).cloned();
    expect_error("wrong method", resp, 405, "method_not_allowed").await;
    assert!(allow.is_some(), "405 without Allow");
    let resp = http
        .delete(server.at("/v1/audit/key"))
        .send()
        .await
        .unwrap();
    expect_error(
        "wrong method on a public route",
        resp,
        405,
        "method_not_allowed",
    )
    .await;

    // Authentication failures.
    let resp = http
        .get(server.at("/v1/whoami"))
        .header("x-request-id", "no-token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
    expect_error("missing token", resp, 401, "unauthenticated").await;

    // A well-formed but unknown secret: must never appear in the ledger in clear.
    let bad_secret = "wdn_NotARealSecretButLooksLikeOne0123456789abcdefgh";
    for rid in ["bad-token-1", "bad-token-2"] {
        let resp = http
            .get(server.at("/v1/whoami"))
            .bearer_auth(bad_secret)
            .header("x-request-id", rid)
            .send()
            .await
            .unwrap();
        expect_error("bad token", resp, 401, "unauthenticated").await;
    }
    let other_secret = "wdn_AnotherWrongSecretForCorrelationChecks9876543210";
    let resp = http
        .get(server.at("/v1/audit/entries"))
        .bearer_auth(other_secret)
        .header("x-request-id", "bad-token-3")
        .send()
        .await
        .unwrap();
    expect_error("another bad token", resp, 401, "unauthenticated").await;
    let basic = "dXNlcjpzdXBlcnNlY3JldHBhc3N3b3Jk";
    let resp = http
        .get(server.at("/v1/whoami"))
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header("x-request-id", "basic-auth-1")
        .send()
        .await
        .unwrap();
    expect_error("basic auth", resp, 401, "unauthenticated").await;

    // Authorization failures: an auditor on admin routes.
    let resp = http
        .post(&tokens)
        .bearer_auth(&auditor)
        .header("x-request-id", "auditor-create-1")
        .json(&json!({"name": "escalate", "role": "admin"}))
        .send()
        .await
        .unwrap();
    let denied_seq = seq_header(&resp);
    expect_error("auditor creates a token", resp, 403, "forbidden").await;
    let resp = http
        .post(server.at("/v1/audit/checkpoint"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    expect_error("auditor publishes", resp, 403, "forbidden").await;

    // Query validation.
    for (what, path, code) in [
        ("limit 0", "/v1/audit/entries?limit=0", "invalid_query"),
        (
            "limit too big",
            "/v1/audit/entries?limit=1001",
            "invalid_query",
        ),
        (
            "limit not a number",
            "/v1/audit/entries?limit=ten",
            "invalid_query",
        ),
        (
            "unknown parameter",
            "/v1/audit/entries?form=1",
            "invalid_query",
        ),
        (
            "negative from",
            "/v1/audit/entries?from=-1",
            "invalid_query",
        ),
    ] {
        let resp = http
            .get(server.at(path))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        expect_error(what, resp, 400, code).await;
    }

    // An x-request-id that is not sane is replaced by a fresh one, which is what is recorded.
    let resp = http
        .get(server.at("/v1/whoami"))
        .bearer_auth(&admin)
        .header("x-request-id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let replaced = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(replaced, "x".repeat(200));
    let replaced_seq = seq_header(&resp);

    // Operational endpoints answer.
    let ready = server.get_public_json("/readyz").await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["backend"], "sqlite", "{ready}");
    let metrics = server.get_text("/metrics").await;
    assert!(metrics.contains("warden_http_requests"), "{metrics}");
    assert!(metrics.contains("warden_ledger_entries"), "{metrics}");
    let doc = server.get_public_json("/v1/openapi.json").await;
    assert!(doc["paths"]["/v1/tokens"]["post"].is_object(), "{doc}");

    // What the ledger says about all that.
    let resp = http
        .get(server.at("/v1/audit/entries?from=0&limit=1000"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    for secret in [bad_secret, other_secret, basic, &admin, &auditor] {
        assert!(
            !text.contains(secret),
            "a secret appears in the entries JSON"
        );
    }
    let entries: Vec<Value> = serde_json::from_str::<Value>(&text).unwrap()["entries"]
        .as_array()
        .unwrap()
        .clone();
    check_leaves(&entries);
    for e in &entries {
        let leaf = String::from_utf8(unb64(e["leaf"].as_str().unwrap())).unwrap();
        for secret in [bad_secret, other_secret, basic, &admin, &auditor] {
            assert!(
                !leaf.contains(secret),
                "a secret appears in leaf {}",
                e["index"]
            );
        }
    }

    let no_token = &entry_by_request_id(&entries, "no-token-1")["event"];
    assert_eq!(no_token["action"], "api.authenticate");
    assert_eq!(no_token["outcome"], "denied");
    assert_eq!(no_token["actor"], "anonymous");
    assert_eq!(no_token["fields"]["path"], "/v1/whoami");
    assert!(no_token["fields"].get("token").is_none(), "{no_token}");

    let hmacs: Vec<String> = ["bad-token-1", "bad-token-2", "bad-token-3"]
        .iter()
        .map(|rid| {
            let ev = &entry_by_request_id(&entries, rid)["event"];
            assert_eq!(ev["action"], "api.authenticate", "{ev}");
            assert_eq!(ev["outcome"], "denied", "{ev}");
            assert_eq!(ev["fields"]["reason"], "unknown token", "{ev}");
            let token = ev["fields"]["token"].as_str().unwrap().to_owned();
            let mac = token.strip_prefix("hmac-sha256:").expect("hmac form");
            assert_eq!(unb64(mac).len(), 32, "{token}");
            token
        })
        .collect();
    assert_eq!(hmacs[0], hmacs[1], "the same secret must correlate");
    assert_ne!(hmacs[0], hmacs[2], "different secrets must not");

    let basic_ev = &entry_by_request_id(&entries, "basic-auth-1")["event"];
    assert_eq!(basic_ev["action"], "api.authenticate");
    assert!(basic_ev["fields"].get("token").is_none(), "{basic_ev}");

    let denied = &entries[usize::try_from(denied_seq).unwrap()]["event"];
    assert_eq!(denied["action"], "api.request");
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["actor"], "token:boundary-auditor");
    assert_eq!(denied["fields"]["status"], 403);
    assert_eq!(denied["fields"]["request_id"], "auditor-create-1");

    let chunked = &entry_by_request_id(&entries, "chunked-upload-1")["event"];
    assert_eq!(chunked["action"], "api.request");
    assert_eq!(chunked["fields"]["status"], 413);
    assert_eq!(chunked["outcome"], "failure");

    let replaced_ev = &entries[usize::try_from(replaced_seq).unwrap()]["event"];
    assert_eq!(replaced_ev["fields"]["request_id"], replaced.as_str());

    // Nothing above was a 500, and the server is still healthy.
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
    server.get_public_json("/healthz").await;
}

// ---------------------------------------------------------------------------------------------
// The ledger over HTTP
// ---------------------------------------------------------------------------------------------

async fn whoami(server: &Server, token: &str, n: usize) {
    for _ in 0..n {
        let resp = server
            .http
            .get(server.at("/v1/whoami"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

fn hashes(v: &Value) -> Vec<merkle::Hash> {
    v.as_array()
        .expect("proof array")
        .iter()
        .map(hash_of)
        .collect()
}

/// A checkpoint from a `POST /v1/audit/checkpoint` answer, signature checked.
fn published(v: &Value, verifier: &NoteVerifier) -> Checkpoint {
    let note = v["note"].as_str().unwrap();
    let cp = Checkpoint::parse(verifier.verify(note).expect("signed")).unwrap();
    assert_eq!(v["tree_size"].as_u64(), Some(cp.size));
    assert_eq!(v["root"].as_str(), Some(b64(cp.root.as_bytes()).as_str()));
    cp
}

#[tokio::test]
async fn ledger_proofs_over_http_verify_against_signed_checkpoints() {
    let install = Install::new().await;
    // No scheduled checkpoint during the test: only the ones published below.
    let server = install.serve_with(&["--checkpoint-interval", "3600"]).await;
    let admin = install.admin_token();
    let vkey = server.get_text("/v1/audit/key").await;
    let verifier = NoteVerifier::from_vkey(&vkey).unwrap();

    whoami(&server, &admin, 5).await;
    let cp1 = published(&server.publish(&admin).await, &verifier);
    whoami(&server, &admin, 7).await;
    let cp2 = published(&server.publish(&admin).await, &verifier);
    assert!(
        cp1.size >= 7 && cp2.size > cp1.size,
        "{} {}",
        cp1.size,
        cp2.size
    );
    assert_eq!(cp1.origin, "example.org/warden/ledger");

    let entries = server.all_entries(&admin).await;
    assert!(entries.len() as u64 >= cp2.size);
    check_leaves(&entries);

    let inclusion = |index: u64, size: u64| {
        let server = &server;
        async move {
            server
                .get_public_json(&format!(
                    "/v1/audit/proof/inclusion?index={index}&size={size}"
                ))
                .await
        }
    };
    for (cp, indexes) in [
        (
            &cp2,
            vec![0, 1, 2, cp1.size - 1, cp2.size / 2, cp2.size - 1],
        ),
        (&cp1, vec![0, 3, cp1.size - 1]),
    ] {
        for index in indexes {
            let p = inclusion(index, cp.size).await;
            assert_eq!(p["leaf_index"].as_u64(), Some(index));
            assert_eq!(p["tree_size"].as_u64(), Some(cp.size));
            let leaf = hash_of(&p["leaf_hash"]);
            let recomputed = merkle::leaf_hash(&unb64(
                entries[usize::try_from(index).unwrap()]["leaf"]
                    .as_str()
                    .unwrap(),
            ));
            assert_eq!(leaf, recomputed, "leaf hash of {index}");
            assert_eq!(hash_of(&p["root"]), cp.root, "root at {}", cp.size);
            let proof = hashes(&p["proof"]);
            merkle::verify_inclusion(index, cp.size, &leaf, &proof, &cp.root)
                .unwrap_or_else(|e| panic!("inclusion of {index} in {}: {e}", cp.size));
            // The check has teeth: a wrong leaf or a damaged proof does not verify.
            let other = merkle::leaf_hash(b"not this leaf");
            assert!(merkle::verify_inclusion(index, cp.size, &other, &proof, &cp.root).is_err());
            if let Some(first) = proof.first() {
                let mut bad = proof.clone();
                bad[0] = merkle::Hash(first.0.map(|b| b ^ 1));
                assert!(merkle::verify_inclusion(index, cp.size, &leaf, &bad, &cp.root).is_err());
            }
        }
    }

    let c = server
        .get_public_json(&format!(
            "/v1/audit/proof/consistency?from={}&to={}",
            cp1.size, cp2.size
        ))
        .await;
    assert_eq!(c["size1"].as_u64(), Some(cp1.size));
    assert_eq!(c["size2"].as_u64(), Some(cp2.size));
    assert_eq!(hash_of(&c["root1"]), cp1.root);
    assert_eq!(hash_of(&c["root2"]), cp2.root);
    let proof = hashes(&c["proof"]);
    merkle::verify_consistency(cp1.size, cp2.size, &cp1.root.0, &cp2.root.0, &proof)
        .expect("consistency proof verifies");
    assert!(
        merkle::verify_consistency(cp1.size, cp2.size, &cp2.root.0, &cp2.root.0, &proof).is_err()
    );
    let mut bad = proof.clone();
    bad[0] = merkle::Hash(bad[0].0.map(|b| b ^ 0x80));
    assert!(
        merkle::verify_consistency(cp1.size, cp2.size, &cp1.root.0, &cp2.root.0, &bad).is_err()
    );

    // Without `size`/`to` the proofs are against the latest signed checkpoint. (Retried only
    // if a checkpoint was signed in between, which nothing here should cause.)
    let mut checked = false;
    for _ in 0..5 {
        let (before, _) = server.checkpoint().await;
        let p = server
            .get_public_json("/v1/audit/proof/inclusion?index=1")
            .await;
        let c = server
            .get_public_json("/v1/audit/proof/consistency?from=1")
            .await;
        let (after, _) = server.checkpoint().await;
        if before != after {
            continue;
        }
        assert_eq!(
            before, cp2,
            "the latest checkpoint is the last one published"
        );
        assert_eq!(p["tree_size"].as_u64(), Some(before.size));
        assert_eq!(hash_of(&p["root"]), before.root);
        assert_eq!(c["size2"].as_u64(), Some(before.size));
        merkle::verify_consistency(
            1,
            before.size,
            &hash_of(&c["root1"]).0,
            &before.root.0,
            &hashes(&c["proof"]),
        )
        .unwrap();
        checked = true;
        break;
    }
    assert!(checked, "the checkpoint kept changing");

    for (what, path, code) in [
        (
            "index past size",
            format!("/v1/audit/proof/inclusion?index={0}&size={0}", cp1.size),
            "out_of_range",
        ),
        (
            "size past the tree",
            "/v1/audit/proof/inclusion?index=0&size=999999".into(),
            "out_of_range",
        ),
        (
            "from 0",
            "/v1/audit/proof/consistency?from=0&to=3".into(),
            "out_of_range",
        ),
        (
            "from past to",
            "/v1/audit/proof/consistency?from=5&to=3".into(),
            "out_of_range",
        ),
        (
            "to past the tree",
            "/v1/audit/proof/consistency?from=1&to=999999".into(),
            "out_of_range",
        ),
        (
            "missing index",
            "/v1/audit/proof/inclusion".into(),
            "invalid_query",
        ),
        (
            "index not a number",
            "/v1/audit/proof/inclusion?index=abc".into(),
            "invalid_query",
        ),
        (
            "unknown parameter",
            "/v1/audit/proof/consistency?from=1&too=2".into(),
            "invalid_query",
        ),
    ] {
        let resp = server.http.get(server.at(&path)).send().await.unwrap();
        expect_error(what, resp, 400, code).await;
    }

    // The CLI checks the same proofs.
    let cmd = install.client(&server, &["audit", "proof", "--index", "2"]);
    let out = run(cmd).await.ok();
    assert!(out.stdout.contains("verified: entry 2"), "{out:#?}");
    let cmd = install.client(
        &server,
        &["audit", "proof", "--from", &cp1.size.to_string()],
    );
    let out = run(cmd).await.ok();
    assert!(out.stdout.contains("verified: the log at size"), "{out:#?}");
    let cmd = install.client(&server, &["audit", "checkpoint"]);
    let out = run(cmd).await.ok();
    assert_eq!(
        Checkpoint::parse(verifier.verify(&out.stdout).unwrap()).unwrap(),
        cp2
    );
    let cmd = install.client(&server, &["audit", "checkpoint", "-o", "json"]);
    let out = run(cmd).await.ok();
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["tree_size"].as_u64(), Some(cp2.size));
    assert_eq!(
        Checkpoint::parse(verifier.verify(json["note"].as_str().unwrap()).unwrap()).unwrap(),
        cp2
    );
    // Client settings from the environment instead of flags.
    let mut cmd = warden();
    cmd.env("WARDEN_SERVER", &server.url)
        .env("WARDEN_TOKEN_FILE", &install.token_file)
        .args(["audit", "tail", "-n", "5", "--output", "json"]);
    let out = run(cmd).await.ok();
    let lines: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert!(lines.len() >= 5, "{out:#?}");
    for pair in lines.windows(2) {
        assert_eq!(
            pair[1]["index"].as_u64(),
            pair[0]["index"].as_u64().map(|i| i + 1)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Export and offline verification
// ---------------------------------------------------------------------------------------------

/// Replaces line `n` (0 = header) of `text`.
fn with_line(text: &str, n: usize, f: impl FnOnce(&str) -> String) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[n] = f(&lines[n]);
    lines.join("\n") + "\n"
}

/// Changes one character of entry `index`'s actor, re-encoding the leaf; optionally also
/// recomputes the recorded leaf hash (a forger covering their tracks).
fn tamper_actor(text: &str, index: usize, fix_hash: bool) -> String {
    with_line(text, index + 1, |line| {
        let mut entry: Value = serde_json::from_str(line).unwrap();
        let leaf = String::from_utf8(unb64(entry["leaf"].as_str().unwrap())).unwrap();
        let event: Value = serde_json::from_str(&leaf).unwrap();
        let actor = event["actor"].as_str().unwrap();
        let last = actor.chars().last().unwrap();
        let forged = format!(
            "{}{}",
            &actor[..actor.len() - 1],
            if last == 'x' { 'y' } else { 'x' }
        );
        let needle = format!("\"actor\":\"{actor}\"");
        assert!(leaf.contains(&needle), "{leaf}");
        let new_leaf = leaf.replacen(&needle, &format!("\"actor\":\"{forged}\""), 1);
        assert_eq!(new_leaf.len(), leaf.len(), "one character changed");
        entry["leaf"] = Value::from(b64(new_leaf.as_bytes()));
        if fix_hash {
            entry["leaf_hash"] =
                Value::from(b64(merkle::leaf_hash(new_leaf.as_bytes()).as_bytes()));
        }
        serde_json::to_string(&entry).unwrap()
    })
}

#[tokio::test]
async fn export_verifies_offline_and_any_tampering_is_detected() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    whoami(&server, &admin, 8).await;
    let (file, header) = export_and_verify(&install, &server, "ledger.jsonl").await;
    let size = header["tree_size"].as_u64().unwrap();
    assert!(size >= 10, "{header}");
    let (_, vkey) = server.checkpoint().await;
    drop(server);

    // --key-file works the same.
    let key_file = install.path("ledger.vkey");
    std::fs::write(&key_file, format!("{vkey}\n")).unwrap();
    let mut cmd = warden();
    cmd.args(["audit", "verify"])
        .arg(&file)
        .arg("--key-file")
        .arg(&key_file);
    let out = run(cmd).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stdout.contains(&format!("OK: {size} entries")),
        "{out:#?}"
    );

    let text = std::fs::read_to_string(&file).unwrap();
    let check = |name: &str, bytes: Vec<u8>, expect: &str| {
        let path = install.path(name);
        std::fs::write(&path, bytes).unwrap();
        let vkey = vkey.clone();
        let expect = expect.to_owned();
        async move {
            let out = verify_export(&path, &vkey).await;
            assert_eq!(out.code(), Some(1), "{path:?} should fail: {out:#?}");
            assert!(out.stdout.starts_with("FAILED: "), "{out:#?}");
            assert!(
                out.stdout.contains(&expect),
                "{path:?}: expected `{expect}`: {out:#?}"
            );
            assert!(!out.stdout.contains("OK:"), "{out:#?}");
        }
    };

    // One character of one event changed.
    check(
        "actor.jsonl",
        tamper_actor(&text, 3, false).into_bytes(),
        "FAILED: entry 3: ",
    )
    .await;
    // ... with its leaf hash recomputed: the signed root catches it.
    check(
        "actor-rehashed.jsonl",
        tamper_actor(&text, 3, true).into_bytes(),
        "does not match the signed root",
    )
    .await;

    // Single raw bytes flipped: in the header, in entry lines (leaf and leaf hash).
    let header_len = text.find('\n').unwrap();
    let line_start = |n: usize| -> usize {
        text.match_indices('\n')
            .nth(n - 1)
            .map(|(i, _)| i + 1)
            .unwrap()
    };
    let mut flips: Vec<(usize, String)> = [10, header_len / 2, header_len - 10]
        .into_iter()
        .map(|pos| (pos, "FAILED: ".to_owned()))
        .collect();
    for index in [0usize, 5, usize::try_from(size).unwrap() - 1] {
        let start = line_start(index + 1);
        let line = &text[start..start + text[start..].find('\n').unwrap()];
        let leaf_at = line.find("\"leaf\":\"").unwrap() + 8;
        let hash_at = line.find("\"leaf_hash\":\"").unwrap() + 13;
        for pos in [start + leaf_at + 40, start + hash_at + 10] {
            flips.push((pos, format!("FAILED: entry {index}: ")));
        }
    }
    for (pos, expect) in flips {
        let mut bytes = text.clone().into_bytes();
        bytes[pos] ^= 0x01;
        check(&format!("flip-{pos}.jsonl"), bytes, &expect).await;
    }

    // A missing last entry, an extra entry, a swapped pair of entries.
    let lines: Vec<&str> = text.lines().collect();
    let truncated = lines[..lines.len() - 1].join("\n") + "\n";
    check("truncated.jsonl", truncated.into_bytes(), "FAILED: ").await;
    let extra = format!("{text}{}\n", lines[lines.len() - 1]);
    check("extra.jsonl", extra.into_bytes(), "FAILED: ").await;
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    check(
        "swapped.jsonl",
        (swapped.join("\n") + "\n").into_bytes(),
        "FAILED: entry 1: ",
    )
    .await;

    // The right file against the wrong key.
    let other = ledger::NoteSigner::generate("example.org/warden/ledger").unwrap();
    let out = verify_export(&file, &other.vkey()).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stdout.starts_with("FAILED: checkpoint"), "{out:#?}");

    // The untouched file still verifies (the checks above worked on copies).
    let out = verify_export(&file, &vkey).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

fn final_checkpoint_size(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("final checkpoint signed"))
        .unwrap_or_else(|| panic!("no final checkpoint in the log:\n{log}"));
    line.split("tree_size=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no tree_size in `{line}`"))
}

#[tokio::test]
async fn graceful_shutdown_signs_a_final_checkpoint_and_restart_continues_the_log() {
    let install = Install::new().await;
    let admin = install.admin_token();
    let mut stops = Vec::new();
    for signal in ["TERM", "INT"] {
        let mut server = install.serve().await;
        whoami(&server, &admin, 3).await;
        server.signal(signal).await;
        let status = server.wait_exit(common::STOP_DEADLINE).await;
        server.wait_log_done().await;
        let log = server.log();
        assert_eq!(status.code(), Some(0), "SIG{signal}: {status}\n{log}");
        assert!(log.contains(&format!("SIG{signal} received")), "{log}");
        stops.push(final_checkpoint_size(&log));
    }

    let server = install.serve().await;
    // The port is free again and the server answers; the old process is gone.
    let entries = server.all_entries(&admin).await;
    check_leaves(&entries);
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    let stop_at: Vec<usize> = (0..actions.len())
        .filter(|&i| actions[i] == "server.stop")
        .collect();
    let start_at: Vec<usize> = (0..actions.len())
        .filter(|&i| actions[i] == "server.start")
        .collect();
    assert_eq!(stop_at.len(), 2, "{actions:?}");
    assert_eq!(start_at.len(), 3, "{actions:?}");
    for (n, &stop) in stop_at.iter().enumerate() {
        // Each stop is the last entry of its run, covered by the final checkpoint, and the
        // next run starts right after it.
        assert_eq!(actions[stop + 1], "server.start", "{actions:?}");
        assert_eq!(
            stops[n],
            stop as u64 + 1,
            "final checkpoint covers server.stop"
        );
        assert_eq!(entries[stop]["event"]["actor"], "system:server");
    }
    assert_eq!(
        actions[..5],
        [
            "install.init",
            "signing_key.create",
            "signing_key.create",
            "signing_key.create",
            "server.start"
        ],
        "init records the install and its identity keys, then the first start"
    );

    // The new run's log extends what the first final checkpoint covered.
    let cp = published(
        &server.publish(&admin).await,
        &NoteVerifier::from_vkey(&server.get_text("/v1/audit/key").await).unwrap(),
    );
    let c = server
        .get_public_json(&format!(
            "/v1/audit/proof/consistency?from={}&to={}",
            stops[0], cp.size
        ))
        .await;
    merkle::verify_consistency(
        stops[0],
        cp.size,
        &hash_of(&c["root1"]).0,
        &cp.root.0,
        &hashes(&c["proof"]),
    )
    .unwrap();

    export_and_verify(&install, &server, "after-restarts.jsonl").await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Roles and tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn roles_are_separated_and_revocation_takes_effect() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let http = &server.http;

    let me = server.get_json("/v1/whoami", &admin).await;
    assert_eq!(me["role"], "admin");
    assert_eq!(me["name"], "bootstrap");
    let bootstrap_id = me["token_id"].as_str().unwrap().to_owned();

    // An auditor token, created with the CLI.
    let mut cmd = install.client(
        &server,
        &[
            "api-token",
            "create",
            "--name",
            "auditor-1",
            "--role",
            "auditor",
        ],
    );
    cmd.args(["--output", "json"]);
    let out = run(cmd).await.ok();
    let created: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    let auditor = created["token"].as_str().unwrap().to_owned();
    let auditor_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get_json("/v1/whoami", &auditor).await["role"],
        "auditor"
    );

    // It reads the ledger...
    let page = server
        .get_json("/v1/audit/entries?from=0&limit=10", &auditor)
        .await;
    assert!(!page["entries"].as_array().unwrap().is_empty());
    // ... and changes nothing.
    let resp = http
        .post(server.at("/v1/tokens"))
        .bearer_auth(&auditor)
        .json(&json!({"name": "sneaky", "role": "auditor"}))
        .send()
        .await
        .unwrap();
    expect_error("auditor creates", resp, 403, "forbidden").await;
    let resp = http
        .get(server.at("/v1/tokens"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    expect_error("auditor lists", resp, 403, "forbidden").await;
    let resp = http
        .delete(server.at(&format!("/v1/tokens/{bootstrap_id}")))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    expect_error("auditor revokes", resp, 403, "forbidden").await;

    // An approver is not an auditor.
    let (_, approver) = create_token(&server, &admin, "approver-1", "approver").await;
    let resp = http
        .get(server.at("/v1/audit/entries"))
        .bearer_auth(&approver)
        .send()
        .await
        .unwrap();
    expect_error("approver reads the ledger", resp, 403, "forbidden").await;

    // Names are unique.
    let resp = http
        .post(server.at("/v1/tokens"))
        .bearer_auth(&admin)
        .json(&json!({"name": "auditor-1", "role": "admin"}))
        .send()
        .await
        .unwrap();
    expect_error("duplicate name", resp, 409, "conflict").await;

    // The only admin cannot be revoked, not even by itself.
    let resp = http
        .delete(server.at(&format!("/v1/tokens/{bootstrap_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error("revoke the last admin", resp, 409, "last_admin").await;
    assert_eq!(server.get_json("/v1/whoami", &admin).await["role"], "admin");
    let resp = http
        .delete(server.at("/v1/tokens/tok_0000000000000000"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_error("revoke an unknown token", resp, 404, "not_found").await;

    // With a second admin, the first one can go; its token then stops working.
    let (admin2_id, admin2) = create_token(&server, &admin, "admin-2", "admin").await;
    let resp = http
        .delete(server.at(&format!("/v1/tokens/{bootstrap_id}")))
        .bearer_auth(&admin2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = http
        .get(server.at("/v1/whoami"))
        .bearer_auth(&admin)
        .header("x-request-id", "revoked-admin-1")
        .send()
        .await
        .unwrap();
    expect_error("revoked admin", resp, 401, "unauthenticated").await;
    // Now admin-2 is the last admin.
    let resp = http
        .delete(server.at(&format!("/v1/tokens/{admin2_id}")))
        .bearer_auth(&admin2)
        .send()
        .await
        .unwrap();
    expect_error("revoke the new last admin", resp, 409, "last_admin").await;

    // Revoke the auditor with the CLI.
    let admin2_file = install.path("admin2.token");
    std::fs::write(&admin2_file, format!("{admin2}\n")).unwrap();
    let mut cmd = warden();
    cmd.args([
        "api-token",
        "revoke",
        &auditor_id,
        "--server",
        &server.url,
        "--token-file",
    ])
    .arg(&admin2_file);
    run(cmd).await.ok();
    let resp = http
        .get(server.at("/v1/whoami"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    expect_error("revoked auditor", resp, 401, "unauthenticated").await;
    // Revoking twice: no active token of that id.
    let resp = http
        .delete(server.at(&format!("/v1/tokens/{auditor_id}")))
        .bearer_auth(&admin2)
        .send()
        .await
        .unwrap();
    expect_error("revoke twice", resp, 404, "not_found").await;

    let mut cmd = warden();
    cmd.args(["api-token", "list", "--server", &server.url, "--token-file"])
        .arg(&admin2_file);
    let out = run(cmd).await.ok();
    let state = |id: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed: {out:#?}"))
            .split_whitespace()
            .last()
            .unwrap()
            .to_owned()
    };
    assert_eq!(state(&bootstrap_id), "revoked");
    assert_eq!(state(&auditor_id), "revoked");
    assert_eq!(state(&admin2_id), "active");

    // A CLI call with a revoked token fails with the server's code.
    let cmd = install.client(&server, &["api-token", "whoami"]);
    let out = run(cmd).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("unauthenticated (401)"), "{out:#?}");

    // The ledger has the whole story.
    let entries = server.all_entries(&admin2).await;
    let count = |action: &str| {
        entries
            .iter()
            .filter(|e| e["event"]["action"] == action)
            .count()
    };
    assert_eq!(count("token.create"), 3);
    assert_eq!(count("token.revoke"), 2);
    let revoked = &entry_by_request_id(&entries, "revoked-admin-1")["event"];
    assert_eq!(revoked["action"], "api.authenticate");
    assert_eq!(revoked["fields"]["reason"], "token has been revoked");
    assert!(
        revoked["fields"]["token"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
}

/// Regressions: two admins revoking each other at once leave one admin; a huge URL with a bad
/// token is still refused 401 *and* recorded (path cut, with its digest); a JSON array where an
/// object is expected is refused.
#[tokio::test]
async fn last_admin_survives_races_huge_paths_are_recorded_and_arrays_are_refused() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let http = &server.http;

    // Make two admins the only ones (revoke the bootstrap admin), then let them revoke each
    // other at the same moment.
    let (x_id, x) = create_token(&server, &admin, "race-x", "admin").await;
    let (y_id, y) = create_token(&server, &admin, "race-y", "admin").await;
    let me = server.get_json("/v1/whoami", &admin).await;
    let bootstrap_id = me["token_id"].as_str().unwrap().to_owned();
    let resp = http
        .delete(server.at(&format!("/v1/tokens/{bootstrap_id}")))
        .bearer_auth(&x)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (rx, ry) = tokio::join!(
        http.delete(server.at(&format!("/v1/tokens/{y_id}")))
            .bearer_auth(&x)
            .send(),
        http.delete(server.at(&format!("/v1/tokens/{x_id}")))
            .bearer_auth(&y)
            .send(),
    );
    let statuses = [rx.unwrap().status().as_u16(), ry.unwrap().status().as_u16()];
    // Exactly one revocation wins; the loser is refused (409, or 401 if its own token was
    // revoked before it was checked).
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
    let mut alive = Vec::new();
    for t in [&x, &y] {
        let status = http
            .get(server.at("/v1/whoami"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            alive.push(t.clone());
        }
    }
    assert_eq!(alive.len(), 1, "exactly one admin must remain");
    let survivor = alive.remove(0);

    // A huge path with a bad token: 401 (not 503), and the attempt is in the ledger with the
    // path cut to a prefix plus its length and SHA-256.
    let long = format!("/v1/tokens/{}", "a".repeat(60_000));
    let resp = http
        .delete(server.at(&long))
        .bearer_auth("wdn_not-a-real-token")
        .header("x-request-id", "huge-path-1")
        .send()
        .await
        .unwrap();
    expect_error("huge path, bad token", resp, 401, "unauthenticated").await;
    let entries = server.all_entries(&survivor).await;
    let e = entry_by_request_id(&entries, "huge-path-1");
    let path = &e["event"]["fields"]["path"];
    assert_eq!(path["len"], long.len());
    assert_eq!(path["prefix"].as_str().unwrap().len(), 512);
    assert_eq!(path["sha256"].as_str().unwrap().len(), 64);
    assert!(e["leaf"].as_str().unwrap().len() < 4096);

    // A JSON array is not an object.
    let resp = http
        .post(server.at("/v1/tokens"))
        .bearer_auth(&survivor)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"["sneaky","admin"]"#)
        .send()
        .await
        .unwrap();
    expect_error("array body", resp, 400, "invalid_request").await;
    let listed = server.get_json("/v1/tokens", &survivor).await;
    assert!(
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "sneaky")
    );
}

/// An unauthenticated flood cannot fill the ledger: every request is refused 401, at most a
/// per-second budget of refusals is recorded one by one, the rest are counted in /metrics and
/// noted on the next recorded refusal.
#[tokio::test]
async fn failed_authentication_flood_is_refused_but_budgeted_in_the_ledger() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let before = server.all_entries(&admin).await.len();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (http, url) = (server.http.clone(), server.at("/v1/whoami"));
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..40 {
                let resp = http
                    .get(&url)
                    .bearer_auth(format!("wdn_flood-{worker}-{i}"))
                    .send()
                    .await
                    .unwrap();
                if resp.status() == StatusCode::UNAUTHORIZED {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    assert_eq!(refused, 320, "every flood request must be refused");
    let entries = server.all_entries(&admin).await;
    let recorded = entries[before..]
        .iter()
        .filter(|e| e["event"]["action"] == "api.authenticate")
        .count();
    assert!(
        recorded >= 50,
        "the first refusals are recorded: {recorded}"
    );
    assert!(
        recorded < 320,
        "the flood was recorded entry by entry: {recorded}"
    );
    let metrics = server.get_text("/metrics").await;
    let unrecorded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("warden_auth_failures_unrecorded_total "))
        .unwrap_or_else(|| panic!("no counter in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(unrecorded as usize + recorded, 320);
}
