//! End-to-end tests of bulk registration: `POST /v1/entries/batch` and `warden entry import`
//! (JSON Lines and CSV) against a real server — counts, one ledger entry per batch with the
//! digest of the ids it created, idempotent re-runs, refusals that write nothing, and a
//! Workload API fetch by an imported entry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::collections::HashMap;

use common::{Install, PgSchema, Server, expect_error, ok_json, post, run, warden};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn events<'a>(ledger: &'a [Value], action: &str) -> Vec<&'a Value> {
    ledger
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["action"] == action)
        .collect()
}

/// SHA-256 hex of `ids`, sorted and joined with `\n`.
fn digest(ids: &[String]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort();
    Sha256::digest(sorted.join("\n").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every registered entry's id by SPIFFE ID.
async fn ids_by_spiffe_id(server: &Server, admin: &str) -> HashMap<String, String> {
    let list = server.get_json("/v1/entries", admin).await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["spiffe_id"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn bulk_line(i: usize) -> String {
    json!({
        "spiffe_id": format!("spiffe://example.org/bulk/{i}"),
        "selectors": [format!("unix:uid:{}", 100_000 + i), "unix:gid:4242"],
        "agent_kind": "worker",
    })
    .to_string()
}

#[tokio::test]
async fn import_jsonl_and_csv_batches_idempotent_and_all_or_nothing() {
    import_scenario(Install::new().await).await;
}

/// The same on PostgreSQL (when `WARDEN_TEST_DATABASE_URL` is set).
#[tokio::test]
async fn import_on_postgres() {
    let Some(pg) = PgSchema::create("entry_import").await else {
        return;
    };
    import_scenario(Install::with_database(Some(pg.url())).await).await;
}

async fn import_scenario(install: Install) {
    let server = install.serve().await;
    let admin = install.admin_token();

    // 2,500 entries in batches of 1,000: three batches, one ledger entry each.
    let jsonl = install.path("agents.jsonl");
    let lines: Vec<String> = (0..2_500).map(bulk_line).collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let jsonl_arg = jsonl.to_str().unwrap();
    let out = run(install.client(&server, &["entry", "import", jsonl_arg, "-o", "json"]))
        .await
        .ok();
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        summary,
        json!({"created": 2500, "existing": 0, "batches": 3}),
        "{out:#?}"
    );
    let ids = ids_by_spiffe_id(&server, &admin).await;
    assert_eq!(ids.len(), 2_500);
    let ledger = server.all_entries(&admin).await;
    let batches = events(&ledger, "entry.create_batch");
    assert_eq!(batches.len(), 3, "{batches:#?}");
    assert!(events(&ledger, "entry.create").is_empty());
    for (k, ev) in batches.iter().enumerate() {
        let want: Vec<String> = (k * 1000..((k + 1) * 1000).min(2_500))
            .map(|i| ids[&format!("spiffe://example.org/bulk/{i}")].clone())
            .collect();
        assert_eq!(ev["outcome"], "success", "{ev}");
        assert_eq!(ev["actor"], "token:bootstrap", "{ev}");
        assert_eq!(ev["fields"]["created"], want.len(), "{ev}");
        assert_eq!(ev["fields"]["existing"], 0, "{ev}");
        assert_eq!(ev["fields"]["digest"], digest(&want), "batch {k}");
        // Over 100 ids: the count and digest only.
        assert!(ev["fields"].get("entry_ids").is_none(), "{ev}");
    }

    // The same file again: nothing created, and the summary says so.
    let out = run(install.client(&server, &["entry", "import", jsonl_arg]))
        .await
        .ok();
    assert_eq!(
        out.stdout.trim(),
        "imported 2500 entries (0 created, 2500 already registered) in 3 batches: \
         nothing new to register",
        "{out:#?}"
    );
    assert_eq!(ids_by_spiffe_id(&server, &admin).await, ids);

    // CSV, from standard input: lifetimes in the duration syntax, a quoted description, and
    // one entry for this user running the warden binary, which then fetches its SVID.
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
    let uid = common::own_uid();
    let mut csv = String::from("spiffe_id,selectors,x509_ttl,jwt_ttl,kind,owner,description\n");
    for i in 0..40 {
        csv.push_str(&format!(
            "spiffe://example.org/csv/{i},unix:uid:{};unix:gid:7,2h,10m,coder,team-a,\"csv, row {i}\"\n",
            200_000 + i
        ));
    }
    csv.push_str(&format!(
        "spiffe://example.org/agent/imported,unix:uid:{uid};unix:path:{},,,,,\n",
        exe.display()
    ));
    let csv_file = install.path("agents.csv");
    std::fs::write(&csv_file, &csv).unwrap();
    let out = run(install.client(&server, &["entry", "import", csv_file.to_str().unwrap()]))
        .await
        .ok();
    assert_eq!(
        out.stdout.trim(),
        "imported 41 entries (41 created, 0 already registered) in 1 batches",
        "{out:#?}"
    );
    let list = server.get_json("/v1/entries", &admin).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2_541);
    let row = list
        .iter()
        .find(|e| e["spiffe_id"] == "spiffe://example.org/csv/3")
        .unwrap();
    assert_eq!(row["selectors"], json!(["unix:gid:7", "unix:uid:200003"]));
    assert_eq!(row["x509_ttl_secs"], 7200);
    assert_eq!(row["jwt_ttl_secs"], 600);
    assert_eq!(row["agent_kind"], "coder");
    assert_eq!(row["owner"], "team-a");
    assert_eq!(row["description"], "csv, row 3");
    // At most 100 created: the ledger lists them, and the digest covers them.
    let ledger = server.all_entries(&admin).await;
    let batches = events(&ledger, "entry.create_batch");
    assert_eq!(batches.len(), 7, "3 + 3 re-run + 1 CSV");
    let last = batches[6];
    let listed: Vec<String> = serde_json::from_value(last["fields"]["entry_ids"].clone()).unwrap();
    assert_eq!(listed.len(), 41);
    assert_eq!(last["fields"]["digest"], digest(&listed));
    let socket = install.data_dir.join("workload.sock");
    let svid_dir = install.path("svid");
    let out = run({
        let mut c = warden();
        c.arg("svid")
            .arg("--socket")
            .arg(&socket)
            .args(["x509", "--out"])
            .arg(&svid_dir);
        c
    })
    .await
    .ok();
    assert_eq!(out.stdout.trim(), "spiffe://example.org/agent/imported");

    // A bad selector on line 7: exit 2, the file and line named, nothing sent.
    let bad = install.path("bad.jsonl");
    let mut lines: Vec<String> = (5_000..5_010).map(bulk_line).collect();
    lines[6] =
        json!({"spiffe_id": "spiffe://example.org/bad", "selectors": ["nosuch:thing"]}).to_string();
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let out = run(install.client(&server, &["entry", "import", bad.to_str().unwrap()])).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains(&format!("{} line 7:", bad.display())),
        "{out:#?}"
    );
    assert!(out.stderr.contains("nosuch:thing"), "{out:#?}");
    // A CSV row that is not a duration: the same.
    let bad_csv = install.path("bad.csv");
    std::fs::write(
        &bad_csv,
        "spiffe_id,selectors,x509_ttl,jwt_ttl,kind,owner,description\n\
         spiffe://example.org/c/1,unix:uid:1,1h,,,,\n\
         spiffe://example.org/c/2,unix:uid:2,soon,,,,\n",
    )
    .unwrap();
    let out = run(install.client(&server, &["entry", "import", bad_csv.to_str().unwrap()])).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("bad.csv line 3: x509_ttl"), "{out:#?}");

    // A row registered already with other settings: the batch is refused (naming the line)
    // and its new rows are not written.
    let conflicting = install.path("conflict.jsonl");
    std::fs::write(
        &conflicting,
        format!(
            "{}\n{}\n",
            bulk_line(9_000),
            json!({
                "spiffe_id": "spiffe://example.org/bulk/0",
                "selectors": ["unix:gid:4242", "unix:uid:100000"],
                "agent_kind": "worker",
                "owner": "someone-else",
            })
        ),
    )
    .unwrap();
    let out =
        run(install.client(&server, &["entry", "import", conflicting.to_str().unwrap()])).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("conflict (409)"), "{out:#?}");
    assert!(out.stderr.contains("conflict.jsonl line 2:"), "{out:#?}");
    assert!(out.stderr.contains("nothing was registered"), "{out:#?}");
    let after = server.get_json("/v1/entries", &admin).await;
    assert_eq!(after.as_array().unwrap().len(), 2_541);
    let ledger = server.all_entries(&admin).await;
    assert_eq!(events(&ledger, "entry.create_batch").len(), 7);
}

#[tokio::test]
async fn batch_api_limits_and_validation() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let entry = |i: usize| json!({"spiffe_id": format!("spiffe://example.org/b/{i}"), "selectors": [format!("unix:uid:{i}")]});

    // Over 10,000 entries: refused before anything is looked at.
    let too_many: Vec<Value> = (0..10_001).map(entry).collect();
    let resp = post(
        &server,
        &admin,
        "/v1/entries/batch",
        &json!({"entries": too_many}),
    )
    .await;
    expect_error("too many", resp, 400, "batch_too_large").await;

    // One bad entry refuses the batch, its index named; POST /v1/entries' codes.
    let resp = post(
        &server,
        &admin,
        "/v1/entries/batch",
        &json!({"entries": [entry(1), {"spiffe_id": "spiffe://other.org/x", "selectors": ["unix:uid:1"]}]}),
    )
    .await;
    let body = expect_error("foreign", resp, 400, "foreign_trust_domain").await;
    assert!(
        body["message"].as_str().unwrap().starts_with("entry 1: "),
        "{body}"
    );
    let resp = post(
        &server,
        &admin,
        "/v1/entries/batch",
        &json!({"entries": [entry(1), entry(2), {"spiffe_id": "spiffe://example.org/t", "selectors": ["unix:uid:1"], "x509_ttl_secs": 5}]}),
    )
    .await;
    let body = expect_error("ttl", resp, 400, "invalid_ttl").await;
    assert!(
        body["message"].as_str().unwrap().starts_with("entry 2: "),
        "{body}"
    );
    let resp = post(
        &server,
        &admin,
        "/v1/entries/batch",
        &json!({"entries": []}),
    )
    .await;
    expect_error("empty", resp, 400, "invalid_request").await;
    assert_eq!(server.get_json("/v1/entries", &admin).await, json!([]));

    // Created, then existing; the answer's digest is the ledger's.
    let body = json!({"entries": [entry(1), entry(2), entry(1)]});
    let first = ok_json(post(&server, &admin, "/v1/entries/batch", &body).await, 200).await;
    let created: Vec<String> = serde_json::from_value(first["created"].clone()).unwrap();
    assert_eq!(created.len(), 2, "{first}");
    assert_eq!(first["existing"], json!([created[0]]), "{first}");
    assert_eq!(first["digest"], digest(&created));
    let again = ok_json(post(&server, &admin, "/v1/entries/batch", &body).await, 200).await;
    assert_eq!(again["created"], json!([]));
    assert_eq!(
        again["existing"],
        json!([created[0], created[1], created[0]])
    );
    let ledger = server.all_entries(&admin).await;
    let batches = events(&ledger, "entry.create_batch");
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0]["fields"]["digest"], first["digest"]);
    assert_eq!(batches[0]["fields"]["entry_ids"], first["created"]);
    assert_eq!(batches[1]["fields"]["created"], 0);
    assert_eq!(batches[1]["fields"]["existing"], 3);

    // Auditors cannot register.
    let (_, auditor) = common::create_token(&server, &admin, "aud", "auditor").await;
    let resp = post(
        &server,
        &auditor,
        "/v1/entries/batch",
        &json!({"entries": [entry(3)]}),
    )
    .await;
    expect_error("auditor", resp, 403, "forbidden").await;
}
