//! The policy decision point against the real binary: pushing Cedar and Rego packages (with
//! the engines' diagnostics on bad input), versions and rollback, the three decision APIs —
//! Warden's `/v1/authorize`, OpenID AuthZEN, and OPA's data API driven by an OPA client nobody
//! here wrote (the `opa-python-client` package) — the context Warden fills in itself
//! (registration metadata, hold), and every decision in the ledger.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use common::{Install, Server, expect_error, ok_json, post, run};
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies/coder");
const CODER: &str = "spiffe://example.org/agent/coder";
const REVIEWER: &str = "spiffe://example.org/agent/reviewer";

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{EXAMPLES}/{name}")).unwrap()
}

/// A schema where reviewers may read, decided from registration metadata Warden fills in.
const REVIEW_CEDAR: &str = r#"
@id("reviewers-read")
permit (principal, action == Action::"read", resource is Repository)
when { context.agent.kind == "reviewer" && !context.hold };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cedar_and_rego_packages_decide_through_every_api() {
    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let enforcer = common::create_token_secret(&server, &admin, "gateway", "enforcer").await;
    let auditor = common::create_token_secret(&server, &admin, "audit", "auditor").await;

    // Nothing pushed yet: a decision names what is missing.
    let ask = json!({"principal": CODER, "action": "write",
                     "resource": {"type": "Repository", "id": "warden"}});
    let resp = post(&server, &enforcer, "/v1/authorize", &ask).await;
    expect_error("no package", resp, 404, "unknown_package").await;

    // Push the seed example with the CLI: version 1 with its content hash.
    let out = run(install.client(
        &server,
        &[
            "policy",
            "push",
            "coder",
            &format!("{EXAMPLES}/coder.cedar"),
            &format!("{EXAMPLES}/coder.cedarschema"),
        ],
    ))
    .await
    .ok();
    assert!(
        out.stdout.starts_with("coder version 1 (cedar) sha256 "),
        "{out:#?}"
    );

    // No task yet (tasks arrive with issue 7): the Coder's write is denied by default.
    let d = ok_json(post(&server, &enforcer, "/v1/authorize", &ask).await, 200).await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    assert_eq!(d["allowed"], false);
    assert_eq!(d["package"], "coder");
    assert_eq!(d["policy_version"], 1);
    assert!(d["decision_id"].as_str().unwrap().starts_with("dec_"));

    // Validation errors, not silent denies: unknown action, unknown entity type, bad context.
    let cases = [
        (
            "unknown action",
            json!({"principal": CODER, "action": "delete", "resource": {"type": "Repository", "id": "w"}}),
            "invalid_authorization_request",
        ),
        (
            "unknown entity type",
            json!({"principal": CODER, "action": "write", "resource": {"type": "Bucket", "id": "w"}}),
            "invalid_authorization_request",
        ),
        (
            "undeclared request attribute",
            json!({"principal": CODER, "action": "write", "resource": {"type": "Repository", "id": "w"},
                   "context": {"branch": "main"}}),
            "invalid_authorization_request",
        ),
        (
            "not a SPIFFE ID",
            json!({"principal": "coder", "action": "write", "resource": {"type": "Repository", "id": "w"}}),
            "invalid_spiffe_id",
        ),
    ];
    for (what, body, code) in cases {
        let resp = post(&server, &enforcer, "/v1/authorize", &body).await;
        expect_error(what, resp, 400, code).await;
    }
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    let body = json!({"principal": CODER, "action": "write",
                      "resource": {"type": "Repository", "id": "w"}, "context": {"x": deep}});
    let resp = post(&server, &enforcer, "/v1/authorize", &body).await;
    expect_error("deep context", resp, 400, "context_too_deep").await;

    // An invalid policy is refused with Cedar's diagnostics, and nothing changes.
    let bad = json!({"files": [
        {"name": "coder.cedar", "text": "permit (principal, action, resource) when { context.nope };"},
        {"name": "coder.cedarschema", "text": example("coder.cedarschema")},
    ]});
    let body = expect_error(
        "schema violation",
        post(&server, &admin, "/v1/policies/coder", &bad).await,
        422,
        "invalid_policy",
    )
    .await;
    let diag = &body["details"]["diagnostics"][0];
    assert_eq!(diag["file"], "coder.cedar", "{body:#}");
    assert_eq!(diag["line"], 1, "{body:#}");
    assert!(diag["column"].as_u64().is_some(), "{body:#}");
    let syntax = json!({"files": [
        {"name": "coder.cedar", "text": "permit (principal,\n  action resource);"},
        {"name": "coder.cedarschema", "text": example("coder.cedarschema")},
    ]});
    let body = expect_error(
        "syntax",
        post(&server, &admin, "/v1/policies/coder", &syntax).await,
        422,
        "invalid_policy",
    )
    .await;
    assert_eq!(body["details"]["diagnostics"][0]["line"], 2, "{body:#}");

    // Version 2: reviewers may read, from the registration metadata Warden knows.
    let reviewer_entry = json!({"spiffe_id": REVIEWER, "selectors": ["unix:uid:4242"],
                                "agent_kind": "reviewer", "owner": "team-a"});
    ok_json(
        post(&server, &admin, "/v1/entries", &reviewer_entry).await,
        201,
    )
    .await;
    let v2 = json!({"files": [
        {"name": "review.cedar", "text": REVIEW_CEDAR},
        {"name": "coder.cedarschema", "text": example("coder.cedarschema")},
    ], "expected_version": 1});
    let pushed = ok_json(post(&server, &admin, "/v1/policies/coder", &v2).await, 201).await;
    assert_eq!(pushed["version"], 2);
    let stale = expect_error(
        "stale expected version",
        post(&server, &admin, "/v1/policies/coder", &v2).await,
        409,
        "conflict",
    )
    .await;
    assert!(
        stale["message"].as_str().unwrap().contains("version 2"),
        "{stale}"
    );
    // The registration metadata and the new version reach this replica's decisions at once
    // (other replicas follow within the refresh second).
    let read = json!({"principal": REVIEWER, "action": "read",
                      "resource": {"type": "Repository", "id": "warden"}});
    let allowed = ok_json(post(&server, &enforcer, "/v1/authorize", &read).await, 200).await;
    assert_eq!(allowed["decision"], "allow", "{allowed:#}");
    assert_eq!(allowed["determining_policies"], json!(["reviewers-read"]));
    assert_eq!(allowed["policy_version"], 2);

    // `warden policy eval` asks as an enforcement point would: it prints the decision and
    // exits 0 on allow, 1 on deny; `--output json` prints the API's answer.
    let eval = |principal: &str, action: &str, extra: &[&str]| {
        let mut args = vec![
            "policy",
            "eval",
            "--package",
            "coder",
            "--principal",
            principal,
            "--action",
            action,
            "--resource",
            "Repository::warden",
        ];
        args.extend_from_slice(extra);
        run(install.client(&server, &args))
    };
    let out = eval(REVIEWER, "read", &[]).await;
    assert_eq!(out.code(), Some(0), "{out:#?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("allow"), "{out:#?}");
    assert!(
        out.stdout.contains("determined by: reviewers-read"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("decision dec_"), "{out:#?}");
    let out = eval(CODER, "write", &[]).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stdout.starts_with("deny\n"), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");
    let out = eval(CODER, "write", &["--output", "json"]).await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    let d: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(d["decision"], "deny", "{d:#}");
    assert_eq!(d["policy_version"], 2, "{d:#}");
    // Bad input is exit 2, and the error names the flag to fix.
    let out = run(install.client(
        &server,
        &[
            "policy",
            "eval",
            "--principal",
            CODER,
            "--action",
            "write",
            "--resource",
            "warden",
        ],
    ))
    .await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("--resource `warden`"), "{out:#?}");
    let out = eval(CODER, "write", &["--context", "[1]"]).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("--context"), "{out:#?}");
    // An unknown package is "not found": exit 1.
    let out = run(install.client(
        &server,
        &[
            "policy",
            "eval",
            "--package",
            "nope",
            "--principal",
            CODER,
            "--action",
            "write",
            "--resource",
            "Repository::warden",
        ],
    ))
    .await;
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("unknown_package (404)"), "{out:#?}");

    // `policy list` and `policy show`: tables, or the API's JSON.
    let out = run(install.client(&server, &["policy", "list"])).await.ok();
    assert!(out.stdout.starts_with("PACKAGE "), "{out:#?}");
    assert!(out.stdout.contains("\ncoder  "), "{out:#?}");
    let out = run(install.client(&server, &["policy", "list", "--output", "json"]))
        .await
        .ok();
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed[0]["package"], "coder", "{listed:#}");
    assert_eq!(listed[0]["version"], 2, "{listed:#}");
    let out = run(install.client(&server, &["policy", "show", "coder"]))
        .await
        .ok();
    let rows: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(rows, ["VERSION IN_FORCE", "1 no", "2 yes"], "{out:#?}");
    assert!(!out.stdout.contains("_unix_ms"), "{out:#?}");

    // AuthZEN 1.0, single and batch.
    let eval = json!({"subject": {"type": "agent", "id": REVIEWER},
                      "action": {"name": "read"},
                      "resource": {"type": "Repository", "id": "warden"}});
    let d = ok_json(
        post(&server, &enforcer, "/access/v1/evaluation", &eval).await,
        200,
    )
    .await;
    assert_eq!(d["decision"], true, "{d:#}");
    assert!(d["context"]["id"].as_str().unwrap().starts_with("dec_"));
    let batch = json!({"subject": {"type": "agent", "id": REVIEWER},
                       "resource": {"type": "Repository", "id": "warden"},
                       "evaluations": [{"action": {"name": "read"}}, {"action": {"name": "write"}},
                                       {"subject": {"type": "agent", "id": CODER}, "action": {"name": "read"}}]});
    let d = ok_json(
        post(&server, &enforcer, "/access/v1/evaluations", &batch).await,
        200,
    )
    .await;
    let decisions: Vec<&Value> = d["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["decision"])
        .collect();
    assert_eq!(
        decisions,
        [&json!(true), &json!(false), &json!(false)],
        "{d:#}"
    );

    // A denied identity is denied before any policy runs (the permit's `!context.hold` need
    // not say so), and the answer says why.
    run(install.client(
        &server,
        &["deny", "add", "spiffe-id", REVIEWER, "--reason", "incident"],
    ))
    .await
    .ok();
    let d = ok_json(post(&server, &enforcer, "/v1/authorize", &read).await, 200).await;
    assert_eq!(d["decision"], "deny", "{d:#}");
    assert_eq!(d["barred"]["code"], "identity_denied", "{d:#}");
    let barred_id = d["decision_id"].as_str().unwrap().to_owned();

    // Rollback to version 1: one command, a new version with version 1's content.
    let out = run(install.client(&server, &["policy", "rollback", "coder", "--to", "1"]))
        .await
        .ok();
    assert!(
        out.stdout.starts_with("coder version 3 = version 1"),
        "{out:#?}"
    );
    let shown = server
        .http
        .get(server.at("/v1/policies/coder"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    let shown = ok_json(shown, 200).await;
    let versions = shown["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[2]["sha256"], versions[0]["sha256"]);
    assert_eq!(versions[2]["note"], "rollback to version 1");
    assert_eq!(versions[2]["active"], true);
    let out = run(install.client(&server, &["policy", "show", "coder", "2"]))
        .await
        .ok();
    assert!(out.stdout.contains("reviewers-read"), "{out:#?}");

    // A Rego package beside it, asked through OPA's data API by an OPA client.
    let out = run(install.client(
        &server,
        &[
            "policy",
            "push",
            "coder-rego",
            &format!("{EXAMPLES}/coder.rego"),
        ],
    ))
    .await
    .ok();
    assert!(out.stdout.contains("version 1 (rego)"), "{out:#?}");
    let input = json!({"principal": CODER, "action": "write",
                       "resource": {"type": "Repository", "id": "warden"},
                       "context": {"hold": false, "risk_score": 0.2,
                                   "task": {"id": "t1", "type": "patch_bug", "attributes": {}}}});
    let d = ok_json(
        post(
            &server,
            &enforcer,
            "/v1/data/warden/coder/allow",
            &json!({"input": input}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(d["result"], true, "{d:#}");
    let d = ok_json(
        post(
            &server,
            &enforcer,
            "/v1/data/warden/coder/nothing",
            &json!({"input": input}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(d["code"], "unknown_document");
    opa_client_asks(&server, &enforcer, &input);

    // With two packages, the native API needs a name; a wrong one is 404.
    let resp = post(&server, &enforcer, "/v1/authorize", &ask).await;
    expect_error("ambiguous", resp, 400, "package_required").await;
    let mut named = ask.clone();
    named["package"] = json!("nope");
    let resp = post(&server, &enforcer, "/v1/authorize", &named).await;
    expect_error("unknown package", resp, 404, "unknown_package").await;

    // Roles: an auditor reads policies but asks for no decision; only an admin pushes.
    let resp = post(&server, &auditor, "/v1/authorize", &ask).await;
    expect_error("auditor decides", resp, 403, "forbidden").await;
    let resp = post(&server, &enforcer, "/v1/policies/coder", &v2).await;
    expect_error("enforcer pushes", resp, 403, "forbidden").await;

    // The ledger: pushes, the rollback and every decision with its policy version.
    let entries = server.all_entries(&admin).await;
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["event"]["action"].as_str())
        .filter(|a| a.starts_with("policy."))
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "policy.push").count(), 3);
    assert_eq!(
        actions.iter().filter(|a| **a == "policy.rollback").count(),
        1
    );
    let decisions: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event"]["action"] == "policy.decision")
        .collect();
    assert!(decisions.len() >= 8, "{}", decisions.len());
    let allow = decisions
        .iter()
        .find(|e| e["event"]["fields"]["decision_id"] == allowed["decision_id"])
        .expect("the allow is recorded under its decision id");
    assert_eq!(allow["event"]["outcome"], "success");
    assert_eq!(allow["event"]["class_uid"], 3003);
    assert_eq!(allow["event"]["fields"]["principal"], REVIEWER);
    assert_eq!(allow["event"]["fields"]["policy_version"], 2);
    assert_eq!(
        allow["event"]["fields"]["determining"],
        json!(["reviewers-read"])
    );
    assert_eq!(allow["event"]["actor"], "token:gateway");
    // The whole question is recorded with the decision, so it can be replayed.
    assert_eq!(allow["event"]["fields"]["request"]["principal"], REVIEWER);
    assert_eq!(
        allow["event"]["fields"]["request"]["context"]["agent"]["kind"],
        "reviewer"
    );

    // Simulation: replay the recorded `coder` decisions against a candidate that lets
    // everyone read. Exactly the recorded read denials a policy made flip, to allow; nothing
    // else (the denied identity's deny was Warden's, whatever the policy: not replayed).
    let candidate = install.path("candidate.cedar");
    std::fs::write(
        &candidate,
        "@id(\"all-read\")\npermit (principal, action == Action::\"read\", resource);\n",
    )
    .unwrap();
    let expected: Vec<&str> = decisions
        .iter()
        .filter(|e| {
            let f = &e["event"]["fields"];
            f["package"] == "coder"
                && f["action"] == "read"
                && f["decision"] == "deny"
                && f["barred"].is_null()
        })
        .map(|e| e["event"]["fields"]["decision_id"].as_str().unwrap())
        .collect();
    assert!(!expected.is_empty(), "{expected:?}");
    let out = run(install.client(
        &server,
        &[
            "policy",
            "simulate",
            "--package",
            "coder",
            "--candidate",
            candidate.to_str().unwrap(),
            "--candidate",
            &format!("{EXAMPLES}/coder.cedarschema"),
            "--since",
            "1h",
        ],
    ))
    .await
    .ok();
    assert!(out.stdout.starts_with("TIME "), "{out:#?}");
    let flips: Vec<String> = out
        .stdout
        .lines()
        .filter(|l| l.contains(" dec_"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(flips.len(), expected.len(), "{out:#?}");
    for id in &expected {
        assert!(
            flips
                .iter()
                .any(|l| l.contains(id) && l.ends_with(" deny allow all-read")),
            "{id} not flipped: {out:#?}"
        );
    }
    assert!(
        out.stdout
            .contains(&format!(": {} would flip", expected.len())),
        "{out:#?}"
    );
    assert!(!out.stdout.contains(&barred_id), "{out:#?}");
    // `--output json`: the API's answer.
    let out = run(install.client(
        &server,
        &[
            "policy",
            "simulate",
            "--package",
            "coder",
            "--candidate",
            candidate.to_str().unwrap(),
            "--candidate",
            &format!("{EXAMPLES}/coder.cedarschema"),
            "--output",
            "json",
        ],
    ))
    .await
    .ok();
    let sim: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(sim["flip_count"], expected.len(), "{sim:#}");
    assert!(
        sim["flips"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["was"] == "deny"
                && f["now"] == "allow"
                && f["because"] == json!(["all-read"])),
        "{sim:#}"
    );
    // A candidate that does not compile is refused with its diagnostics; nothing is replayed.
    std::fs::write(&candidate, "permit (principal,").unwrap();
    let out = run(install.client(
        &server,
        &[
            "policy",
            "simulate",
            "--package",
            "coder",
            "--candidate",
            candidate.to_str().unwrap(),
            "--candidate",
            &format!("{EXAMPLES}/coder.cedarschema"),
        ],
    ))
    .await;
    assert_ne!(out.code(), Some(0));
    assert!(out.all().contains("invalid_policy"), "{out:#?}");
    server.stop().await;
}

/// `opa-python-client` (PyPI), unchanged, against Warden's OPA data API.
fn opa_client_asks(server: &Server, token: &str, input: &Value) {
    const SCRIPT: &str = r#"
import json, sys
from urllib.parse import urlparse
from opa_client.opa import OpaClient
url, token, data = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
u = urlparse(url)
client = OpaClient(host=u.hostname, port=u.port, token=token)
allowed = client.query_rule(input_data=data, package_path="warden.coder", rule_name="allow")
data["context"]["risk_score"] = 0.9
denied = client.query_rule(input_data=data, package_path="warden.coder", rule_name="allow")
print(json.dumps([allowed, denied]))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT, &server.url, token, &input.to_string()])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        other => {
            assert!(
                std::env::var_os("WARDEN_REQUIRE_OPA_CLIENT").is_none(),
                "opa-python-client failed: {other:?}"
            );
            eprintln!("skipped: opa-python-client is not installed ({other:?})");
            return;
        }
    };
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers[0]["result"], true, "{answers}");
    assert_eq!(answers[1]["result"], false, "{answers}");
}
