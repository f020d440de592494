//! `warden demo`: the newcomer's first experience. Starts a throw-away Warden (embedded
//! store, temporary data directory), runs the scenarios this machine can run — agents with
//! no standing secrets, the kill switch, a multi-agent bug fix on a real git repository (when
//! `git` is installed), least-privilege database access (when a PostgreSQL URL is given and
//! `psql` is installed) — narrating each step in plain words, and ends by verifying the
//! ledger offline. Every step runs the same `warden` commands an operator or agent would.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// `warden demo` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Also run the least-privilege database scenario against this PostgreSQL (an admin URL;
    /// the demo creates and drops its own database)
    #[arg(long, env = "WARDEN_DEMO_DATABASE_URL")]
    database_url: Option<String>,
    /// Keep the temporary directory (data, repositories, ledger export) afterwards
    #[arg(long)]
    keep: bool,
}

pub(crate) const PLANNER: &str = "spiffe://example.org/agent/planner";
pub(crate) const CODER: &str = "spiffe://example.org/agent/coder";
pub(crate) const REVIEWER: &str = "spiffe://example.org/agent/reviewer";
pub(crate) const SUMMARIZER: &str = "spiffe://example.org/agent/summarizer";

const BROKER_CEDAR: &str = include_str!("../../../examples/broker/broker.cedar");
const BROKER_SCHEMA: &str = include_str!("../../../examples/broker/broker.cedarschema");

/// A running demo: the server and how to reach it.
pub(crate) struct Demo {
    pub(crate) dir: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) url: String,
    pub(crate) exe: PathBuf,
    pub(crate) admin: String,
    pub(crate) http: reqwest::Client,
    server: tokio::process::Child,
    step: usize,
}

impl Demo {
    /// Prints a numbered step.
    pub(crate) fn step(&mut self, what: &str) {
        self.step += 1;
        println!("\n{:>2}. {what}", self.step);
    }

    /// Prints an explanation under a step.
    pub(crate) fn say(&self, what: &str) {
        for line in what.lines() {
            println!("    {line}");
        }
    }

    /// Runs `warden ARGS` as the operator (admin token) and returns its stdout.
    pub(crate) async fn operator(&self, args: &[&str]) -> Result<String> {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--server".into(),
            self.url.clone(),
            "--token-file".into(),
            self.data.join("admin.token").display().to_string(),
        ]);
        self.warden(&all).await
    }

    /// Runs `warden ARGS` as is.
    pub(crate) async fn operator_plain(&self, args: &[&str]) -> Result<String> {
        self.warden(args).await
    }

    /// Runs `warden agent --as ID ARGS --output json` (the agent's SVID from the Workload
    /// API, no token).
    pub(crate) async fn agent(&self, id: &str, args: &[&str]) -> Result<String> {
        let mut all: Vec<String> = vec![
            "agent".into(),
            "--output".into(),
            "json".into(),
            "--server".into(),
            self.url.clone(),
            "--socket".into(),
            self.socket().display().to_string(),
            "--as".into(),
            id.into(),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        self.warden(&all).await
    }

    /// Like [`Demo::agent`], but a refusal is the expected outcome: its message.
    pub(crate) async fn agent_refused(&self, id: &str, args: &[&str]) -> Result<String> {
        match self.agent(id, args).await {
            Ok(out) => bail!("expected a refusal, got: {out}"),
            Err(e) => Ok(format!("{e:#}")),
        }
    }

    /// A JWT-SVID of `id` for this server, from the Workload API.
    pub(crate) async fn svid(&self, id: &str) -> Result<String> {
        self.svid_for(id, &self.url).await
    }

    /// A JWT-SVID of `id` for `audience`, from the Workload API.
    pub(crate) async fn svid_for(&self, id: &str, audience: &str) -> Result<String> {
        Ok(self
            .warden(&[
                "svid".into(),
                "--socket".into(),
                self.socket().display().to_string(),
                "jwt".into(),
                "--audience".into(),
                audience.to_owned(),
                "--spiffe-id".into(),
                id.into(),
            ])
            .await?
            .trim()
            .to_owned())
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.data.join("workload.sock")
    }

    async fn warden<S: AsRef<str>>(&self, args: &[S]) -> Result<String> {
        let out = tokio::process::Command::new(&self.exe)
            .args(args.iter().map(AsRef::as_ref))
            .env_remove("WARDEN_TOKEN")
            .env_remove("WARDEN_TOKEN_FILE")
            .env_remove("WARDEN_SERVER")
            .stdin(Stdio::null())
            .output()
            .await
            .context("running warden")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(stdout)
    }

    /// An admin API call.
    pub(crate) async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value> {
        self.call(method, path, &self.admin, body).await
    }

    /// An API call with bearer credential `bearer`: the JSON answer (null when there is none),
    /// or the status and body of a refusal as the error.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Value,
    ) -> Result<Value> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Registers `id` for this user running this warden binary.
    pub(crate) async fn register(&self, id: &str, kind: &str) -> Result<()> {
        self.api(
            reqwest::Method::POST,
            "/v1/entries",
            json!({
                "spiffe_id": id,
                "selectors": [format!("unix:uid:{}", uid()), format!("unix:path:{}", self.exe.display())],
                "agent_kind": kind,
                "owner": "demo",
            }),
        )
        .await?;
        Ok(())
    }
}

fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_else(|| "0".into())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(cmd).is_file()))
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("warden-demo.").tempdir()?;
    let dir = tmp.path().to_owned();
    let data = dir.join("data");
    let exe = std::fs::canonicalize(std::env::current_exe()?)?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    println!(
        "Warden demo: a throw-away Warden in {} (embedded SQLite, nothing else needed).",
        dir.display()
    );
    let log = std::fs::File::create(dir.join("server.log"))?;
    let server = tokio::process::Command::new(&exe)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "warn",
        ])
        .args(["--oauth-scopes", "repo:read,repo:write"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting warden serve")?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut ready = false;
    for _ in 0..300 {
        if http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        bail!(
            "the demo server did not start; its log:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
    }
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .context("reading the bootstrap admin token")?
        .trim()
        .to_owned();
    let mut demo = Demo {
        dir: dir.clone(),
        data,
        url,
        exe,
        admin,
        http,
        server,
        step: 0,
    };
    let result = scenarios(&mut demo, &args).await;
    // Stop the server gracefully: it signs a final checkpoint.
    if let Some(pid) = demo.server.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(20), demo.server.wait()).await;
    }
    if args.keep {
        let kept = tmp.keep();
        println!("\nKept {}.", kept.display());
    }
    match result {
        Ok(()) => {
            println!("\nDemo finished: every step behaved as it should.");
            Ok(())
        }
        Err(e) => Err(e.context(format!(
            "the demo stopped (server log: {})",
            dir.join("server.log").display()
        ))),
    }
}

async fn scenarios(demo: &mut Demo, args: &DemoArgs) -> Result<()> {
    setup(demo).await?;
    cut_off(demo).await?;
    if which("git") {
        crate::demo_git::bug_fix(demo).await?;
    } else {
        println!(
            "\n(The multi-agent bug-fix scenario needs `git`, which is not installed: skipped.)"
        );
    }
    match (&args.database_url, which("psql")) {
        (Some(url), true) => crate::demo_db::least_privilege(demo, url).await?,
        (Some(_), false) => {
            println!("\n(The database scenario needs `psql`, which is not installed: skipped.)")
        }
        (None, _) => println!(
            "\n(The least-privilege database scenario runs with --database-url postgres://…: skipped.)"
        ),
    }
    verify(demo).await
}

async fn setup(demo: &mut Demo) -> Result<()> {
    demo.step("The operator registers the agents");
    demo.say(&format!(
        "Each agent is a process of this user running {} — attested from the kernel by the\n\
         Workload API, so no agent holds a password or key file.",
        demo.exe.display()
    ));
    for (id, kind) in [
        (PLANNER, "planner"),
        (CODER, "coder"),
        (REVIEWER, "reviewer"),
        (SUMMARIZER, "summarizer"),
    ] {
        demo.register(id, kind).await?;
        demo.say(&format!("registered {id}"));
    }
    demo.step("The operator pushes the broker policy (who may obtain which credential)");
    let dir = demo.dir.join("policy");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("broker.cedar"), BROKER_CEDAR)?;
    std::fs::write(dir.join("broker.cedarschema"), BROKER_SCHEMA)?;
    let out = demo
        .operator(&[
            "policy",
            "push",
            "broker",
            &dir.join("broker.cedar").display().to_string(),
            &dir.join("broker.cedarschema").display().to_string(),
        ])
        .await?;
    demo.say(out.trim());
    Ok(())
}

async fn cut_off(demo: &mut Demo) -> Result<()> {
    demo.step("The Planner trades its SVID for a short-lived access token (RFC 8693)");
    let out = demo
        .agent(
            PLANNER,
            &[
                "token",
                "--audience",
                "https://git.example.org",
                "--scope",
                "repo:read repo:write",
            ],
        )
        .await?;
    let token: Value = serde_json::from_str(&out)?;
    let planner_token = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    demo.say(&format!(
        "token for https://git.example.org, scope `{}`, {} s, lease {}",
        token["scope"].as_str().unwrap_or_default(),
        token["expires_in"],
        token["lease_id"].as_str().unwrap_or_default()
    ));

    demo.step("The Planner delegates a narrower token to the Coder");
    let out = demo
        .agent(
            CODER,
            &[
                "token",
                "--on-behalf-of",
                &planner_token,
                "--scope",
                "repo:read",
            ],
        )
        .await?;
    let child: Value = serde_json::from_str(&out)?;
    let child_token = child["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    demo.say("the Coder holds repo:read on the Planner's behalf; the token's `act` claim names it");
    let refused = demo
        .agent_refused(
            CODER,
            &[
                "token",
                "--on-behalf-of",
                &child_token,
                "--scope",
                "repo:write",
            ],
        )
        .await?;
    demo.say(&format!(
        "widening it back to repo:write is refused: {}",
        last_line(&refused).trim_start_matches("error: ")
    ));

    demo.step("The operator pulls the kill switch on the Planner");
    let out = demo
        .operator(&[
            "hold",
            "agent",
            PLANNER,
            "--reason",
            "demo: suspicious behaviour",
        ])
        .await?;
    demo.say(out.trim());
    for (who, t) in [
        ("Planner", &planner_token),
        ("Coder (delegated)", &child_token),
    ] {
        let active = introspect(demo, t).await?;
        demo.say(&format!(
            "the {who}'s token introspects as active: {active}"
        ));
        if active {
            bail!("a token survived the hold");
        }
    }
    let refused = demo
        .agent_refused(PLANNER, &["token", "--audience", "https://git.example.org"])
        .await?;
    demo.say(&format!(
        "a new token for the Planner is refused (the Workload API will not even issue its SVID): {}",
        last_line(&refused).trim_start_matches("error: ")
    ));
    demo.operator(&["release", "agent", PLANNER, "--reason", "demo: cleared"])
        .await?;
    demo.say("released: the Planner may ask again; what was revoked stays revoked");
    Ok(())
}

/// Whether a token introspects as active (through an enforcer token made for the demo).
async fn introspect(demo: &Demo, token: &str) -> Result<bool> {
    let resp: Value = demo
        .http
        .post(format!("{}/oauth2/introspect", demo.url))
        .bearer_auth(&demo.admin)
        .form(&[("token", token)])
        .send()
        .await?
        .json()
        .await?;
    Ok(resp["active"] == true)
}

pub(crate) fn last_line(text: &str) -> String {
    text.trim()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

async fn verify(demo: &mut Demo) -> Result<()> {
    demo.step("An auditor exports the ledger and verifies it offline");
    let export = demo.dir.join("ledger.jsonl");
    let key = demo.dir.join("ledger.vkey");
    let vkey = demo
        .http
        .get(format!("{}/v1/audit/key", demo.url))
        .send()
        .await?
        .text()
        .await?;
    std::fs::write(&key, vkey)?;
    demo.operator(&[
        "audit",
        "export",
        "--publish",
        &export.display().to_string(),
    ])
    .await?;
    let out = demo
        .warden(&[
            "audit".to_owned(),
            "verify".into(),
            export.display().to_string(),
            "--key-file".into(),
            key.display().to_string(),
            "--quiet".into(),
        ])
        .await?;
    demo.say(out.trim());
    demo.say(
        "Every issuance, decision, revocation and hold above is an entry in that signed\n\
         Merkle log; the verifier needed nothing but the log's public key.",
    );
    Ok(())
}

/// Writes `files` (relative path, contents) under `root`.
pub(crate) fn write_tree(root: &Path, files: &[(&str, &str)]) -> Result<()> {
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
    }
    Ok(())
}
