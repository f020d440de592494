//! Scenario 2's enforcement with the real `git`: a bare repository whose pre-receive hook is
//! `warden git pre-receive` (installed by `warden git install-hook`). The Coder pushes its
//! task branch with its JWT-SVID from the Workload API while its `patch_bug` task is open;
//! the Reviewer fetches but cannot push; a push without a credential is told how to send one;
//! once the task is completed the same push is refused; at risk 0.7 it is refused; when
//! Warden cannot be reached every push is refused; every attempt is in the ledger.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::path::{Path, PathBuf};

use common::{Install, Out, Server, run, warden};
use serde_json::{Value, json};
use tokio::process::Command;

const CODER: &str = "spiffe://example.org/agent/coder";
const REVIEWER: &str = "spiffe://example.org/agent/reviewer";
const REPO: &str = "demo";

fn example(name: &str) -> String {
    format!(
        "{}/../../examples/multi-agent-bugfix/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `git …` (the one on PATH, client and server side alike) with nothing of the caller's
/// configuration: a HOME of its own, no system or global config, fixed author.
fn git(home: &Path) -> Command {
    let mut cmd = Command::new("git");
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_lowercase();
        if name.starts_with("warden_") || name.ends_with("_proxy") || name.starts_with("git_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.org")
        .env("GIT_COMMITTER_NAME", "Agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.org")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

struct Env {
    install: Install,
    server: Server,
    issuer: String,
    home: PathBuf,
    /// The bare repository Warden guards.
    bare: PathBuf,
    /// The enforcer token file the hook uses.
    hook_token: PathBuf,
}

impl Env {
    async fn start() -> Env {
        let install = Install::new().await;
        let server = install.serve().await;
        let admin = install.admin_token();
        let exe = std::fs::canonicalize(common::BIN).unwrap();
        let uid = common::own_uid();
        for id in [CODER, REVIEWER] {
            let resp = server
                .http
                .post(server.at("/v1/entries"))
                .bearer_auth(&admin)
                .json(&json!({
                    "spiffe_id": id,
                    "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
                    "owner": "engineering",
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
        }
        run(install.client(&server, &["rebac", "model", "push", &example("model.fga")]))
            .await
            .ok();
        run(install.client(
            &server,
            &[
                "policy",
                "push",
                "git",
                &example("git.cedar"),
                &example("git.cedarschema"),
            ],
        ))
        .await
        .ok();
        let issuer = server
            .get_public_json("/.well-known/openid-configuration")
            .await["issuer"]
            .as_str()
            .unwrap()
            .to_owned();
        let hook_token = install.path("hook.token");
        let secret = common::create_token_secret(&server, &admin, "git-hook", "enforcer").await;
        std::fs::write(&hook_token, format!("{secret}\n")).unwrap();

        let home = install.path("home");
        std::fs::create_dir_all(&home).unwrap();
        let env = Env {
            bare: install.path("srv/demo.git"),
            install,
            server,
            issuer,
            home,
            hook_token,
        };
        // The repository: one commit on main, served bare.
        let src = env.install.path("import");
        env.git_ok(&["init", "-q", "-b", "main", src.to_str().unwrap()])
            .await;
        std::fs::write(src.join("README"), "demo\n").unwrap();
        env.git_in(&src, &["add", "README"]).await.ok();
        env.git_in(&src, &["commit", "-q", "-m", "initial"])
            .await
            .ok();
        env.git_ok(&[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            env.bare.to_str().unwrap(),
        ])
        .await;
        let out = env.install_hook(&env.bare, &[]).await.ok();
        assert!(out.stdout.contains("every push to `demo`"), "{out:#?}");
        env
    }

    /// `warden git install-hook REPO --server … --token-file HOOK_TOKEN --repository demo
    /// --package git EXTRA…`
    async fn install_hook(&self, repo: &Path, extra: &[&str]) -> Out {
        let mut cmd = warden();
        cmd.args(["git", "install-hook"])
            .arg(repo)
            .args(["--server", &self.server.url, "--token-file"])
            .arg(&self.hook_token)
            .args(["--repository", REPO, "--package", "git"])
            .args(extra)
            // install-hook runs `git` itself: the same isolated configuration.
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.home.join("gitconfig"));
        run(cmd).await
    }

    async fn git_ok(&self, args: &[&str]) -> Out {
        let mut cmd = git(&self.home);
        cmd.args(args);
        run(cmd).await.ok()
    }

    async fn git_in(&self, dir: &Path, args: &[&str]) -> Out {
        let mut cmd = git(&self.home);
        cmd.arg("-C").arg(dir).args(args);
        run(cmd).await
    }

    /// A working clone of the repository at `name`.
    async fn clone(&self, name: &str) -> PathBuf {
        let dir = self.install.path(name);
        self.git_ok(&[
            "clone",
            "-q",
            self.bare.to_str().unwrap(),
            dir.to_str().unwrap(),
        ])
        .await;
        dir
    }

    /// A new commit in `dir`.
    async fn commit(&self, dir: &Path, what: &str) -> String {
        std::fs::write(dir.join(format!("{what}.txt")), what).unwrap();
        self.git_in(dir, &["add", "."]).await.ok();
        self.git_in(dir, &["commit", "-q", "-m", what]).await.ok();
        self.git_in(dir, &["rev-parse", "HEAD"])
            .await
            .ok()
            .stdout
            .trim()
            .to_owned()
    }

    /// The object a ref of the bare repository points to (`None` if it does not exist).
    async fn bare_ref(&self, name: &str) -> Option<String> {
        let mut cmd = git(&self.home);
        cmd.arg("--git-dir")
            .arg(&self.bare)
            .args(["rev-parse", "--verify", "--quiet", name]);
        let out = run(cmd).await;
        out.status.success().then(|| out.stdout.trim().to_owned())
    }

    /// A push credential of `id`: a JWT-SVID for the repository's git authorization alone
    /// (audience `git:<repository>`), from the Workload API.
    async fn svid(&self, id: &str) -> String {
        self.svid_for(id, &format!("git:{REPO}")).await
    }

    /// A JWT-SVID of `id` for `audience`, from the Workload API.
    async fn svid_for(&self, id: &str, audience: &str) -> String {
        let mut cmd = warden();
        cmd.arg("svid")
            .arg("--socket")
            .arg(self.install.data_dir.join("workload.sock"))
            .args(["jwt", "--audience", audience, "--spiffe-id", id]);
        run(cmd).await.ok().stdout.trim().to_owned()
    }

    /// `git push [-o warden-token=TOKEN] origin REFSPECS…` in `dir`.
    async fn push(&self, dir: &Path, token: Option<&str>, refspecs: &[&str]) -> Out {
        let mut cmd = git(&self.home);
        cmd.arg("-C").arg(dir).arg("push");
        if let Some(t) = token {
            cmd.arg("-o").arg(format!("warden-token={t}"));
        }
        cmd.arg("origin").args(refspecs);
        run(cmd).await
    }

    async fn admin_post(&self, path: &str, body: &Value) -> Value {
        let resp = self
            .server
            .http
            .post(self.server.at(path))
            .bearer_auth(self.install.admin_token())
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Opens patch_bug task `id` on the repository (its branch `refs/heads/fix/<id>`) with the
    /// Coder as writer and the Reviewer as reader.
    async fn task(&self, id: &str) {
        self.admin_post(
            "/v1/tasks",
            &json!({"id": id, "type": "patch_bug", "owner": "alice@example.org",
                    "resources": [format!("repository:{REPO}")], "deadline_s": 3600,
                    "attributes": {"branch": format!("refs/heads/fix/{id}")}}),
        )
        .await;
        self.admin_post(
            &format!("/v1/tasks/{id}/agents"),
            &json!({"agent": CODER, "role": "coder", "permissions": ["writer"]}),
        )
        .await;
        self.admin_post(
            &format!("/v1/tasks/{id}/agents"),
            &json!({"agent": REVIEWER, "role": "reviewer", "permissions": ["reader"]}),
        )
        .await;
    }

    async fn risk(&self, score: f64) {
        let resp = self
            .server
            .http
            .post(self.server.at("/v1/risk"))
            .bearer_auth(self.install.admin_token())
            .json(&json!({"agent": CODER, "score": score, "reason": "test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204);
    }

    async fn release(&self, kind: &str, value: &str) {
        let resp = self
            .server
            .http
            .delete(self.server.at(&format!(
                "/v1/holds/{kind}/{}?reason=test",
                value.replace(':', "%3A").replace('/', "%2F")
            )))
            .bearer_auth(self.install.admin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{:?}", resp.text().await);
    }

    async fn entries(&self) -> Vec<Value> {
        self.server
            .all_entries(&self.install.admin_token())
            .await
            .into_iter()
            .map(|e| e["event"].clone())
            .collect()
    }
}

/// The hook's lines as the pusher sees them (`remote: warden: …`), trailing padding removed.
fn remote(out: &Out) -> Vec<String> {
    out.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote: warden: "))
        .map(|l| l.trim_end().to_owned())
        .collect()
}

/// The decision id at the end of a hook line.
fn decision_of(line: &str) -> String {
    let at = line
        .rfind("(decision dec_")
        .unwrap_or_else(|| panic!("{line}"));
    line[at + "(decision ".len()..line.len() - 1].to_owned()
}

fn refused(out: &Out) -> bool {
    !out.status.success() && out.stderr.contains("pre-receive hook declined")
}

#[tokio::test]
async fn pushes_follow_the_task_the_relations_and_the_risk_score() {
    let env = Env::start().await;
    env.task("T-1").await;
    let coder = env.clone("coder").await;
    let coder_token = env.svid(CODER).await;

    // While T-1 is open: the Coder's push to its task branch is accepted.
    let fix = env.commit(&coder, "fix").await;
    let out = env
        .push(&coder, Some(&coder_token), &["HEAD:refs/heads/fix/T-1"])
        .await;
    assert!(out.status.success(), "{out:#?}");
    let lines = remote(&out);
    assert_eq!(lines.len(), 1, "{out:#?}");
    assert!(
        lines[0].starts_with(&format!(
            "push to refs/heads/fix/T-1 allowed for {CODER}: policy `writer-pushes-task-branch` permits it (decision dec_"
        )),
        "{lines:?}"
    );
    let mut decisions = vec![(decision_of(&lines[0]), CODER, "allow")];
    assert_eq!(env.bare_ref("refs/heads/fix/T-1").await, Some(fix.clone()));

    // A push is all or nothing: its task branch and main together are both refused.
    let main_before = env.bare_ref("main").await.unwrap();
    let more = env.commit(&coder, "more").await;
    let out = env
        .push(
            &coder,
            Some(&coder_token),
            &["HEAD:refs/heads/fix/T-1", "HEAD:refs/heads/main"],
        )
        .await;
    assert!(refused(&out), "{out:#?}");
    let lines = remote(&out);
    assert_eq!(lines.len(), 2, "{out:#?}");
    assert!(
        lines[0].starts_with("push to refs/heads/fix/T-1 allowed"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(
            "push to refs/heads/main refused: forbidden by policy `only-the-task-branch` (task `T-1`, a `patch_bug` task) (decision dec_"
        ),
        "{lines:?}"
    );
    decisions.push((decision_of(&lines[0]), CODER, "allow"));
    decisions.push((decision_of(&lines[1]), CODER, "deny"));
    assert_eq!(env.bare_ref("refs/heads/fix/T-1").await, Some(fix.clone()));
    assert_eq!(env.bare_ref("main").await, Some(main_before.clone()));

    // The Reviewer (a reader) fetches the fix and reads it, but cannot push.
    let reviewer = env.clone("reviewer").await;
    env.git_in(&reviewer, &["fetch", "-q", "origin", "refs/heads/fix/T-1"])
        .await
        .ok();
    let fetched = env
        .git_in(&reviewer, &["rev-parse", "FETCH_HEAD"])
        .await
        .ok();
    assert_eq!(fetched.stdout.trim(), fix);
    env.git_in(&reviewer, &["checkout", "-q", "FETCH_HEAD"])
        .await
        .ok();
    env.commit(&reviewer, "review-edit").await;
    let out = env
        .push(
            &reviewer,
            Some(&env.svid(REVIEWER).await),
            &["HEAD:refs/heads/fix/T-1"],
        )
        .await;
    assert!(refused(&out), "{out:#?}");
    let lines = remote(&out);
    assert!(
        lines[0].starts_with(&format!(
            "push to refs/heads/fix/T-1 refused: `{REVIEWER}` is not a `writer` of repository `demo` (its role on task `T-1` is `reviewer`) (decision dec_"
        )),
        "{lines:?}"
    );
    decisions.push((decision_of(&lines[0]), REVIEWER, "deny"));
    assert_eq!(env.bare_ref("refs/heads/fix/T-1").await, Some(fix.clone()));

    // Without a credential: refused, with how to send one.
    let out = env.push(&coder, None, &["HEAD:refs/heads/fix/T-1"]).await;
    assert!(refused(&out), "{out:#?}");
    assert_eq!(
        remote(&out),
        vec![format!(
            "push to refs/heads/fix/T-1 refused: no Warden credential: push with `-o warden-token=<JWT-SVID>`, a JWT-SVID for audience `{0}` (e.g. `warden svid jwt --audience {0}`)",
            format!("git:{REPO}")
        )]
    );
    // With a credential that is not one: refused.
    let out = env
        .push(&coder, Some("not-a-jwt-svid"), &["HEAD:refs/heads/fix/T-1"])
        .await;
    assert!(refused(&out), "{out:#?}");
    assert!(
        remote(&out)[0].starts_with("push to refs/heads/fix/T-1 refused: credential refused: "),
        "{out:#?}"
    );

    // The task is completed: the same push by the same agent is refused, and says why.
    env.admin_post(
        "/v1/tasks/T-1/end",
        &json!({"outcome": "completed", "reason": "reviewed"}),
    )
    .await;
    let out = env
        .push(
            &coder,
            Some(&env.svid(CODER).await),
            &["HEAD:refs/heads/fix/T-1"],
        )
        .await;
    assert!(refused(&out), "{out:#?}");
    let lines = remote(&out);
    assert!(
        lines[0].starts_with(
            "push to refs/heads/fix/T-1 refused: task `T-1` is completed (no open task grants write) (decision dec_"
        ),
        "{lines:?}"
    );
    decisions.push((decision_of(&lines[0]), CODER, "deny"));
    assert_eq!(env.bare_ref("refs/heads/fix/T-1").await, Some(fix.clone()));

    // A new task, but the Coder's risk score is 0.7: refused; at 0.2 the same push goes.
    env.task("T-2").await;
    env.risk(0.7).await;
    let out = env
        .push(
            &coder,
            Some(&env.svid(CODER).await),
            &["HEAD:refs/heads/fix/T-2"],
        )
        .await;
    assert!(refused(&out), "{out:#?}");
    let lines = remote(&out);
    assert!(
        lines[0]
            .starts_with("push to refs/heads/fix/T-2 refused: risk score 0.7 ≥ 0.5 (decision dec_"),
        "{lines:?}"
    );
    decisions.push((decision_of(&lines[0]), CODER, "deny"));
    assert_eq!(env.bare_ref("refs/heads/fix/T-2").await, None);
    env.risk(0.2).await;

    // The task on hold: refused, and said so; the agent on hold: its credential is refused.
    env.admin_post(
        "/v1/holds",
        &json!({"kind": "task", "value": "T-2", "reason": "test"}),
    )
    .await;
    let out = env
        .push(
            &coder,
            Some(&env.svid(CODER).await),
            &["HEAD:refs/heads/fix/T-2"],
        )
        .await;
    assert!(refused(&out), "{out:#?}");
    let lines = remote(&out);
    assert!(
        lines[0].starts_with(
            "push to refs/heads/fix/T-2 refused: task `T-2` is on hold (decision dec_"
        ),
        "{lines:?}"
    );
    decisions.push((decision_of(&lines[0]), CODER, "deny"));
    env.release("task", "T-2").await;
    let before_hold = env.svid(CODER).await;
    env.admin_post(
        "/v1/holds",
        &json!({"kind": "agent", "value": CODER, "reason": "test"}),
    )
    .await;
    let out = env
        .push(&coder, Some(&before_hold), &["HEAD:refs/heads/fix/T-2"])
        .await;
    assert!(refused(&out), "{out:#?}");
    assert_eq!(
        remote(&out),
        vec![format!(
            "push to refs/heads/fix/T-2 refused: credential refused: agent `{CODER}` is on hold"
        )]
    );
    env.release("agent", CODER).await;

    let out = env
        .push(
            &coder,
            Some(&env.svid(CODER).await),
            &["HEAD:refs/heads/fix/T-2"],
        )
        .await;
    assert!(out.status.success(), "{out:#?}");
    decisions.push((decision_of(&remote(&out)[0]), CODER, "allow"));
    assert_eq!(env.bare_ref("refs/heads/fix/T-2").await, Some(more.clone()));

    // Every attempt is in the ledger: one decision (api git) per ref of a push with a valid
    // credential, a git.push refusal for each without; no JWT-SVID in clear anywhere.
    let entries = env.entries().await;
    let git_decisions: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "policy.decision" && e["fields"]["api"] == "git")
        .collect();
    assert_eq!(git_decisions.len(), decisions.len(), "{git_decisions:#?}");
    for (id, principal, decision) in &decisions {
        let e = git_decisions
            .iter()
            .find(|e| e["fields"]["decision_id"] == id.as_str())
            .unwrap_or_else(|| panic!("decision {id} is not in the ledger"));
        assert_eq!(e["fields"]["principal"], *principal);
        assert_eq!(e["fields"]["decision"], *decision);
        assert_eq!(e["fields"]["action"], "write");
        assert_eq!(e["fields"]["resource"], "Repository::demo");
        assert_eq!(e["fields"]["package"], "git");
        assert_eq!(e["actor"], "token:git-hook");
        // A decision Warden made before any policy (the task on hold) records the caller's
        // attributes as asked; the others the whole request as evaluated.
        let request = if e["fields"]["barred"].is_object() {
            assert_eq!(e["fields"]["barred"]["code"], "task_on_hold", "{e}");
            &e["fields"]["attributes"]
        } else {
            &e["fields"]["request"]["context"]["request"]
        };
        assert!(request["ref"].as_str().unwrap().starts_with("refs/heads/"));
        assert!(["create", "update"].contains(&request["operation"].as_str().unwrap()));
    }
    let refusals: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "git.push")
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:#?}");
    assert_eq!(refusals[0]["fields"]["code"], "no_credential");
    assert_eq!(refusals[1]["fields"]["code"], "invalid_jwt_svid");
    assert_eq!(refusals[1]["fields"]["refs"], json!(["refs/heads/fix/T-1"]));
    assert_eq!(refusals[2]["fields"]["code"], "agent_on_hold");
    // The presented token only as an HMAC: repeated attempts correlate, the token never shows.
    assert!(
        refusals[1]["fields"]["agent_token"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    let ledger_text = serde_json::to_string(&entries).unwrap();
    assert!(
        !ledger_text.contains(&coder_token),
        "a JWT-SVID is in the ledger"
    );
    assert!(
        !ledger_text.contains("not-a-jwt-svid"),
        "a presented token is in the ledger"
    );

    // Warden unreachable: every push is refused (fail closed).
    let mut env = env;
    env.server.kill9().await;
    env.commit(&coder, "after-outage").await;
    let out = env
        .push(&coder, Some(&coder_token), &["HEAD:refs/heads/fix/T-2"])
        .await;
    assert!(refused(&out), "{out:#?}");
    assert!(
        remote(&out)[0]
            .starts_with("push refused: Warden could not authorize it (cannot reach Warden at "),
        "{out:#?}"
    );
    assert_eq!(env.bare_ref("refs/heads/fix/T-2").await, Some(more));
}

#[tokio::test]
async fn install_hook_guards_only_bare_repositories_and_keeps_foreign_hooks() {
    let env = Env::start().await;
    let hook = env.bare.join("hooks/pre-receive");
    let text = std::fs::read_to_string(&hook).unwrap();
    let exe = std::fs::canonicalize(common::BIN).unwrap();
    assert!(text.starts_with("#!/bin/sh\n"), "{text}");
    assert!(
        text.contains(&format!(
            "exec '{}' git pre-receive --server '{}'",
            exe.display(),
            env.server.url
        )),
        "{text}"
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&hook).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    let advertised = env
        .git_ok(&[
            "--git-dir",
            env.bare.to_str().unwrap(),
            "config",
            "receive.advertisePushOptions",
        ])
        .await;
    assert_eq!(advertised.stdout.trim(), "true");

    // Installing again over its own hook is fine.
    env.install_hook(&env.bare, &[]).await.ok();

    // A working tree is not the repository pushes go to.
    let work = env.clone("work").await;
    let out = env.install_hook(&work, &[]).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr
            .contains("is a working tree, not a bare repository"),
        "{out:#?}"
    );
    let out = env.install_hook(&work.join(".git"), &[]).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(out.stderr.contains("is not a bare repository"), "{out:#?}");

    // Someone else's hook stays unless --force.
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    let out = env.install_hook(&env.bare, &[]).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr.contains("was not installed by Warden"),
        "{out:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap(),
        "#!/bin/sh\nexit 0\n"
    );
    env.install_hook(&env.bare, &["--force"]).await.ok();
    assert!(
        std::fs::read_to_string(&hook)
            .unwrap()
            .contains("git pre-receive")
    );

    // The hook's token must be one that may ask for decisions.
    let auditor =
        common::create_token_secret(&env.server, &env.install.admin_token(), "reader", "auditor")
            .await;
    std::fs::write(&env.hook_token, &auditor).unwrap();
    let out = env.install_hook(&env.bare, &[]).await;
    assert_eq!(out.code(), Some(2), "{out:#?}");
    assert!(
        out.stderr
            .contains("the token has role `auditor`; the hook needs role enforcer"),
        "{out:#?}"
    );
}

#[tokio::test]
async fn the_authorize_api_checks_what_it_is_given() {
    let env = Env::start().await;
    let enforcer = std::fs::read_to_string(&env.hook_token)
        .unwrap()
        .trim()
        .to_owned();
    let zero = "0".repeat(40);
    let one = "1".repeat(40);
    let post = |token: String, body: Value| {
        let req = env
            .server
            .http
            .post(env.server.at("/v1/git/authorize"))
            .bearer_auth(token)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    let push = |refs: Value| json!({"repository": REPO, "agent_token": null, "package": "git", "refs": refs});
    let update = |name: &str| json!({"ref": name, "old": zero, "new": one});

    // Without a credential: 200, every ref refused with the reason, no decision.
    let resp = post(
        enforcer.clone(),
        push(json!([update("refs/heads/a"), update("refs/heads/b")])),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["allowed"], false);
    assert_eq!(body["agent"], Value::Null);
    assert_eq!(body["refs"].as_array().unwrap().len(), 2);
    for r in body["refs"].as_array().unwrap() {
        assert_eq!(r["allowed"], false);
        assert_eq!(r["decision_id"], Value::Null);
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .starts_with("no Warden credential"),
            "{r}"
        );
    }

    // Bad input: a stable error code, never a decision.
    let too_many: Vec<Value> = (0..101)
        .map(|i| update(&format!("refs/heads/b{i}")))
        .collect();
    for (what, body, code) in [
        ("no refs", push(json!([])), "invalid_request"),
        ("101 refs", push(json!(too_many)), "invalid_request"),
        (
            "a bad ref",
            push(json!([update("refs/heads/a..b")])),
            "invalid_ref",
        ),
        (
            "not under refs/",
            push(json!([update("main")])),
            "invalid_ref",
        ),
        (
            "a bad object id",
            push(json!([{"ref": "refs/heads/a", "old": "xyz", "new": one}])),
            "invalid_object_id",
        ),
        (
            "neither old nor new",
            push(json!([{"ref": "refs/heads/a", "old": zero, "new": zero}])),
            "invalid_object_id",
        ),
        (
            "a bad repository name",
            json!({"repository": "a:b", "refs": [update("refs/heads/a")]}),
            "invalid_repository",
        ),
        (
            "an unknown field",
            json!({"repository": REPO, "refs": [update("refs/heads/a")], "user": "x"}),
            "invalid_request",
        ),
    ] {
        common::expect_error(what, post(enforcer.clone(), body).await, 400, code).await;
    }

    // Only an enforcer (or admin) asks.
    let auditor =
        common::create_token_secret(&env.server, &env.install.admin_token(), "reader", "auditor")
            .await;
    common::expect_error(
        "auditor",
        post(auditor, push(json!([update("refs/heads/a")]))).await,
        403,
        "forbidden",
    )
    .await;

    // A valid credential with a package that does not exist: the hook's configuration error.
    let token = env.svid(CODER).await;
    let mut body = push(json!([update("refs/heads/a")]));
    body["agent_token"] = json!(token);
    body["package"] = json!("no-such-package");
    common::expect_error(
        "unknown package",
        post(enforcer, body).await,
        404,
        "unknown_package",
    )
    .await;
}

/// Issue 20 item 9: the credential a pusher hands the git server is good for that
/// repository's pushes and nothing else. Replayed by the git server against Warden's agent
/// APIs or its token endpoint, it is refused; a JWT-SVID for the agent APIs, one for another
/// repository, and one that names both are refused as push credentials.
#[tokio::test]
async fn the_push_credential_works_for_that_repository_only() {
    let env = Env::start().await;
    env.task("T-1").await;
    let coder = env.clone("coder").await;
    let token = env.svid(CODER).await;
    env.commit(&coder, "fix").await;
    let out = env
        .push(&coder, Some(&token), &["HEAD:refs/heads/fix/T-1"])
        .await;
    assert!(out.status.success(), "{out:#?}");

    // The git server replays what it saw against the agent APIs: 401, nothing done.
    let http = &env.server.http;
    for (path, body) in [
        (
            "/v1/agent/tasks",
            json!({"id": "T-evil", "type": "patch_bug", "owner": "mallory@example.org",
                   "resources": [format!("repository:{REPO}")], "deadline_s": 600}),
        ),
        ("/v1/agent/credentials/database/reader", json!({})),
        (
            "/v1/agent/leases/revoke",
            json!({"lease_id": "oauth/token/lse_00"}),
        ),
    ] {
        let resp = http
            .post(env.server.at(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let body = common::expect_error(path, resp, 401, "invalid_jwt_svid").await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("audience `{}`", env.issuer)),
            "{body}"
        );
    }
    // ...and at the token endpoint, as a subject or an actor token: refused (RFC 8693
    // §2.2.2 `invalid_request`), no token issued.
    let svid_type = "urn:ietf:params:oauth:token-type:jwt";
    let agent_svid = env.svid_for(CODER, &env.issuer).await;
    for (which, form) in [
        (
            "subject_token",
            vec![
                ("subject_token", token.as_str()),
                ("subject_token_type", svid_type),
            ],
        ),
        (
            "actor_token",
            vec![
                ("subject_token", agent_svid.as_str()),
                ("subject_token_type", svid_type),
                ("actor_token", token.as_str()),
                ("actor_token_type", svid_type),
            ],
        ),
    ] {
        let mut form = form;
        form.extend([
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", "https://api.example.org"),
        ]);
        let resp = http
            .post(env.server.at("/oauth2/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{which}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{which}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{which}: audience `{}`", env.issuer)),
            "{which}: {body}"
        );
        assert!(body.get("access_token").is_none());
    }

    // Push credentials that would also work elsewhere, or are for another repository.
    env.commit(&coder, "more").await;
    let mut cmd = warden();
    cmd.arg("svid")
        .arg("--socket")
        .arg(env.install.data_dir.join("workload.sock"))
        .args(["jwt", "--audience", &format!("git:{REPO}")])
        .args(["--audience", &env.issuer, "--spiffe-id", CODER]);
    let both = run(cmd).await.ok().stdout.trim().to_owned();
    let hint = format!(
        "a push credential is a JWT-SVID for audience `git:{REPO}` alone (`warden svid jwt --audience git:{REPO}`)"
    );
    for (bad, why) in [
        (
            agent_svid.clone(),
            format!("audience `git:{REPO}` is not in the token's audience: {hint}"),
        ),
        (
            env.svid_for(CODER, "git:other").await,
            format!("audience `git:{REPO}` is not in the token's audience: {hint}"),
        ),
        (
            both,
            format!(
                "a push credential must be for audience `git:{REPO}` alone, and this one is also for `{}`",
                env.issuer
            ),
        ),
    ] {
        let out = env
            .push(&coder, Some(&bad), &["HEAD:refs/heads/fix/T-1"])
            .await;
        assert!(refused(&out), "{out:#?}");
        let lines = remote(&out);
        assert_eq!(lines.len(), 1, "{out:#?}");
        assert!(
            lines[0].starts_with(&format!(
                "push to refs/heads/fix/T-1 refused: credential refused: {why}"
            )),
            "{lines:?}"
        );
    }
    // The right credential still pushes.
    let out = env
        .push(
            &coder,
            Some(&env.svid(CODER).await),
            &["HEAD:refs/heads/fix/T-1"],
        )
        .await;
    assert!(out.status.success(), "{out:#?}");
}
