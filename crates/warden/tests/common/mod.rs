//! Shared harness for the end-to-end tests: a temporary install (`warden init`), a running
//! `warden serve` child process (found through the address it prints, killed on drop), CLI
//! runs with a time limit, and small HTTP and ledger helpers.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition until a deadline.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use ledger::{Checkpoint, NoteVerifier};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The binary under test, as built by Cargo for this package.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// How long a server may take to start (debug build, 2 busy cores, PostgreSQL migrations).
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(60);

/// How long a CLI command may run.
pub(crate) const CLI_DEADLINE: Duration = Duration::from_secs(60);

/// How long a graceful shutdown may take.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A `warden` command with a clean environment: no `WARDEN_*` or proxy variable of the
/// caller leaks in, logs are plain text (no ANSI colours) so they can be searched.
pub(crate) fn warden() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_lowercase();
        // Also no proxy: every address in these tests is 127.0.0.1.
        if name.starts_with("warden_") || name.ends_with("_proxy") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env("WARDEN_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// What a finished command did.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    /// Exit code (None when killed by a signal).
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the whole output unless the command exited 0.
    pub(crate) fn ok(self) -> Self {
        assert!(self.status.success(), "command failed: {self:#?}");
        self
    }

    /// stdout and stderr together, for searching messages.
    pub(crate) fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion within [`CLI_DEADLINE`] (killing it and failing otherwise).
pub(crate) async fn run(mut cmd: Command) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn warden");
    // kill_on_drop: a timed-out child is killed when the future is dropped.
    let out = tokio::time::timeout(CLI_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {CLI_DEADLINE:?}"))
        .expect("wait for warden");
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary install: data directory, admin token file, optional database URL.
pub(crate) struct Install {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) data_dir: PathBuf,
    pub(crate) token_file: PathBuf,
    pub(crate) database_url: Option<String>,
}

impl Install {
    /// A temporary directory with nothing initialised yet.
    pub(crate) fn empty() -> Self {
        Self::empty_with(None)
    }

    /// Like [`Install::empty`], with a database URL given to `init` and `serve`.
    pub(crate) fn empty_with(database_url: Option<String>) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        Self {
            data_dir: tmp.path().join("data"),
            token_file: tmp.path().join("admin.token"),
            tmp,
            database_url,
        }
    }

    /// A fresh install on SQLite (the default store).
    pub(crate) async fn new() -> Self {
        Self::with_database(None).await
    }

    /// A fresh install on the given database (SQLite in the data directory when `None`).
    pub(crate) async fn with_database(database_url: Option<String>) -> Self {
        let install = Self::empty_with(database_url);
        install.init(&[]).await.ok();
        install
    }

    /// `warden --data-dir DIR …`
    pub(crate) fn cmd(&self) -> Command {
        let mut cmd = warden();
        cmd.arg("--data-dir").arg(&self.data_dir);
        cmd
    }

    /// Runs `warden init --admin-token-file TOKEN_FILE [--database-url URL] EXTRA…`.
    pub(crate) async fn init(&self, extra: &[&str]) -> Out {
        let mut cmd = self.cmd();
        cmd.arg("init")
            .arg("--admin-token-file")
            .arg(&self.token_file);
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(extra);
        run(cmd).await
    }

    /// The bootstrap admin token.
    pub(crate) fn admin_token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .expect("read admin token file")
            .trim()
            .to_owned()
    }

    /// A CLI client command: `warden ARGS… --server URL --token-file TOKEN_FILE` (the client
    /// options belong to the `audit` and `api-token` subcommands, so they go after them).
    pub(crate) fn client(&self, server: &Server, args: &[&str]) -> Command {
        let mut cmd = warden();
        cmd.args(args)
            .arg("--server")
            .arg(&server.url)
            .arg("--token-file")
            .arg(&self.token_file);
        cmd
    }

    /// Starts `warden serve` on a free port.
    pub(crate) async fn serve(&self) -> Server {
        self.serve_with(&[]).await
    }

    /// Starts `warden serve --listen 127.0.0.1:0 [--database-url URL] EXTRA…` and waits until
    /// it answers `/healthz`.
    pub(crate) async fn serve_with(&self, extra: &[&str]) -> Server {
        let mut cmd = self.cmd();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(extra);
        Server::start(cmd, http_client()).await
    }

    /// Like [`Install::serve_with`], with environment variables set for the server only (e.g.
    /// `TOKIO_WORKER_THREADS`, so a test sees the same runtime on any machine).
    pub(crate) async fn serve_env(&self, env: &[(&str, &str)], extra: &[&str]) -> Server {
        let mut cmd = self.cmd();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(extra);
        cmd.envs(env.iter().copied());
        Server::start(cmd, http_client()).await
    }

    /// Like [`Install::serve_with`], for an HTTPS server: `http` must trust its certificate.
    pub(crate) async fn serve_tls(&self, extra: &[&str], http: reqwest::Client) -> Server {
        let mut cmd = self.cmd();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        cmd.args(extra);
        Server::start(cmd, http).await
    }

    /// Every file directly in the data directory with its contents, for before/after checks.
    pub(crate) fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.data_dir)
            .expect("read data dir")
            .map(|e| {
                let e = e.expect("dir entry");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read file"),
                )
            })
            .collect();
        files.sort();
        files
    }

    /// A path inside the temporary directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// An HTTP client for the tests: no proxy (everything is on 127.0.0.1), bounded requests.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A running `warden serve`. Killed (SIGKILL) when dropped.
pub(crate) struct Server {
    child: Child,
    pid: u32,
    pub(crate) url: String,
    log: Arc<Mutex<String>>,
    /// Set once stderr reached end of file (the process closed it: it exited).
    log_done: Arc<AtomicBool>,
    pub(crate) http: reqwest::Client,
}

/// Polls `cond` every 10 ms until it holds or `deadline` passes.
pub(crate) async fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Server {
    async fn start(mut cmd: Command, http: reqwest::Client) -> Self {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn warden serve");
        let pid = child.id().expect("pid of a running child");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let log_done = Arc::new(AtomicBool::new(false));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        {
            // Drains stderr for the whole life of the process (a full pipe would block it).
            let log = Arc::clone(&log);
            let log_done = Arc::clone(&log_done);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.strip_prefix("warden listening on ") {
                        let _ = addr_tx.send(rest.trim().to_owned());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                log_done.store(true, Ordering::SeqCst);
            });
        }
        let until = Instant::now() + START_DEADLINE;
        let url = loop {
            if let Ok(url) = addr_rx.try_recv() {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Let the reader collect the last lines, then fail with them.
                wait_until(Duration::from_secs(5), || log_done.load(Ordering::SeqCst)).await;
                panic!(
                    "warden serve exited with {status} before listening:\n{}",
                    log.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < until,
                "warden serve did not print its address within {START_DEADLINE:?}:\n{}",
                log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "unexpected address {url}"
        );
        let server = Self {
            child,
            pid,
            url,
            log,
            log_done,
            http,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let until = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(resp) = self.http.get(self.at("/healthz")).send().await {
                if resp.status() == reqwest::StatusCode::OK {
                    let body: Value = resp.json().await.expect("healthz json");
                    assert_eq!(body["status"], "ok");
                    return;
                }
            }
            assert!(
                Instant::now() < until,
                "/healthz not ready within {START_DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// `URL + path`.
    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Everything the server wrote to stderr so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal with `kill -s SIG PID` (the child is not reaped before this returns, so
    /// the pid cannot have been reused).
    pub(crate) async fn signal(&mut self, sig: &str) {
        if self.child.try_wait().expect("try_wait").is_some() {
            panic!("warden serve already exited:\n{}", self.log());
        }
        let status = tokio::process::Command::new("kill")
            .args(["-s", sig, &self.pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -s {sig} {} failed", self.pid);
    }

    /// Waits for the process to exit, failing after `deadline`.
    pub(crate) async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.expect("wait for warden serve"),
            Err(_) => panic!(
                "warden serve did not exit within {deadline:?}:\n{}",
                self.log()
            ),
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0) and returns the log.
    pub(crate) async fn stop(mut self) -> String {
        self.signal("TERM").await;
        let status = self.wait_exit(STOP_DEADLINE).await;
        self.wait_log_done().await;
        assert!(
            status.success(),
            "warden serve exited with {status}:\n{}",
            self.log()
        );
        self.log()
    }

    /// Waits until the log reader saw end of file (the process exited), so [`Server::log`]
    /// is complete.
    pub(crate) async fn wait_log_done(&self) {
        let done = Arc::clone(&self.log_done);
        let finished = wait_until(Duration::from_secs(10), || done.load(Ordering::SeqCst)).await;
        assert!(
            finished,
            "stderr of warden serve was not closed:\n{}",
            self.log()
        );
    }

    /// `kill -9`, then waits for the process to be gone.
    pub(crate) async fn kill9(&mut self) -> ExitStatus {
        self.signal("KILL").await;
        self.wait_exit(STOP_DEADLINE).await
    }

    /// Authenticated GET returning status, headers and the JSON body.
    pub(crate) async fn get_json(&self, path: &str, token: &str) -> Value {
        let resp = self
            .http
            .get(self.at(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "GET {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// Public GET returning the body as text (must be 200).
    pub(crate) async fn get_text(&self, path: &str) -> String {
        let resp = self.http.get(self.at(path)).send().await.expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "GET {path}: {status}: {text}");
        text
    }

    /// Public GET returning the JSON body (must be 200).
    pub(crate) async fn get_public_json(&self, path: &str) -> Value {
        let text = self.get_text(path).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// Every ledger entry, paging through `/v1/audit/entries`. Checks the pages are contiguous.
    pub(crate) async fn all_entries(&self, token: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut tree_size = u64::MAX;
        // Bounded: at most 1000 pages.
        for _ in 0..1000 {
            let from = out.len() as u64;
            let page = self
                .get_json(&format!("/v1/audit/entries?from={from}&limit=1000"), token)
                .await;
            if tree_size == u64::MAX {
                tree_size = page["tree_size"].as_u64().expect("tree_size");
            }
            let entries = page["entries"].as_array().expect("entries").clone();
            if entries.is_empty() || out.len() as u64 >= tree_size {
                break;
            }
            for e in entries {
                assert_eq!(
                    e["index"].as_u64(),
                    Some(out.len() as u64),
                    "gap in entries"
                );
                out.push(e);
            }
        }
        assert!(
            out.len() as u64 >= tree_size,
            "got {} entries, tree_size {tree_size}",
            out.len()
        );
        out
    }

    /// The verifier key and the latest checkpoint, whose signature is checked against it.
    pub(crate) async fn checkpoint(&self) -> (Checkpoint, String) {
        let vkey = self.get_text("/v1/audit/key").await;
        let note = self.get_text("/v1/audit/checkpoint").await;
        let verifier = NoteVerifier::from_vkey(&vkey).expect("vkey parses");
        let text = verifier
            .verify(&note)
            .expect("checkpoint is signed by the key");
        (
            Checkpoint::parse(text).expect("checkpoint parses"),
            vkey.trim().to_owned(),
        )
    }

    /// POST /v1/audit/checkpoint (admin): signs a checkpoint now.
    pub(crate) async fn publish(&self, token: &str) -> Value {
        let resp = self
            .http
            .post(self.at("/v1/audit/checkpoint"))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "publish: {status}: {text}");
        serde_json::from_str(&text).expect("json")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL if still running; tokio reaps the child in the background.
        let _ = self.child.start_kill();
    }
}

/// Standard base64 decode.
/// The DER certificates of a SPIFFE bundle document's `x509-svid` keys (one `x5c` entry each).
pub(crate) fn bundle_x509_ders(bundle: &Value) -> Vec<Vec<u8>> {
    bundle["keys"]
        .as_array()
        .expect("bundle keys")
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .map(|k| {
            let x5c = k["x5c"].as_array().expect("x5c");
            assert_eq!(x5c.len(), 1, "{k}");
            unb64(x5c[0].as_str().expect("x5c entry"))
        })
        .collect()
}

/// The `kid`s of a SPIFFE bundle document's `jwt-svid` keys.
pub(crate) fn bundle_jwt_kids(bundle: &Value) -> Vec<String> {
    bundle["keys"]
        .as_array()
        .expect("bundle keys")
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

pub(crate) fn unb64(s: &str) -> Vec<u8> {
    STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("bad base64 {s:?}: {e}"))
}

/// Standard base64 encode.
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A base64 32-byte hash from a JSON value.
pub(crate) fn hash_of(v: &Value) -> merkle::Hash {
    merkle::Hash::from_slice(&unb64(v.as_str().expect("hash is a string"))).expect("32 bytes")
}

/// Checks every entry's `leaf_hash` against its `leaf`, and that `event` is the decoded leaf.
pub(crate) fn check_leaves(entries: &[Value]) {
    for e in entries {
        let leaf = unb64(e["leaf"].as_str().expect("leaf"));
        assert_eq!(
            merkle::leaf_hash(&leaf),
            hash_of(&e["leaf_hash"]),
            "leaf hash of entry {}",
            e["index"]
        );
        let decoded: Value = serde_json::from_slice(&leaf).expect("leaf is JSON");
        assert_eq!(decoded, e["event"], "event of entry {}", e["index"]);
        assert_eq!(decoded["seq"], e["index"]);
    }
}

/// `warden audit verify FILE --key VKEY --quiet`.
pub(crate) async fn verify_export(file: &Path, vkey: &str) -> Out {
    let mut cmd = warden();
    cmd.args(["audit", "verify"])
        .arg(file)
        .args(["--key", vkey, "--quiet"]);
    run(cmd).await
}

/// `audit export --publish` to a new file, then `audit verify` of it: both must succeed.
/// Returns the export path and its header.
pub(crate) async fn export_and_verify(
    install: &Install,
    server: &Server,
    name: &str,
) -> (PathBuf, Value) {
    let file = install.path(name);
    let mut cmd = install.client(server, &["audit", "export", "--publish"]);
    cmd.arg(&file);
    run(cmd).await.ok();
    let (_, vkey) = server.checkpoint().await;
    let out = verify_export(&file, &vkey).await;
    assert_eq!(out.code(), Some(0), "verify failed: {out:#?}");
    assert!(out.stdout.starts_with("OK: "), "{out:#?}");
    let text = std::fs::read_to_string(&file).expect("read export");
    let header: Value =
        serde_json::from_str(text.lines().next().expect("header line")).expect("header json");
    assert_eq!(header["format"], "warden-ledger-export/1");
    assert_eq!(header["vkey"], vkey.as_str());
    let size = header["tree_size"].as_u64().expect("tree_size");
    assert_eq!(text.lines().count() as u64, size + 1, "one line per entry");
    (file, header)
}

/// Where a PostgreSQL suite runs: a fresh schema, dropped again on drop.
pub(crate) struct PgSchema {
    pub(crate) base_url: String,
    pub(crate) schema: String,
}

/// Environment variable naming the PostgreSQL database for the PostgreSQL suites.
pub(crate) const PG_ENV: &str = "WARDEN_TEST_DATABASE_URL";

impl PgSchema {
    /// `None` (after printing the skip line) when [`PG_ENV`] is not set.
    pub(crate) async fn create(tag: &str) -> Option<Self> {
        let Ok(base_url) = std::env::var(PG_ENV) else {
            // Written past the test harness's output capture, once per test binary, so a
            // plain `cargo test` shows that this suite did not run.
            static SKIP_NOTICE: std::sync::Once = std::sync::Once::new();
            SKIP_NOTICE.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: {PG_ENV} is not set (PostgreSQL suite not run)"
                );
            });
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let schema = format!("warden_e2e_{tag}_{}_{nanos}", std::process::id());
        let store = store::PostgresStore::connect_with_schema(&base_url, &schema)
            .await
            .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
        store.close().await;
        eprintln!("PostgreSQL schema {schema}");
        Some(Self { base_url, schema })
    }

    /// The URL that makes every connection use the schema (sqlx's `options` parameter).
    pub(crate) fn url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.base_url, self.schema
        )
    }

    /// Opens the schema directly (not through the URL under test).
    pub(crate) async fn open(&self) -> store::PostgresStore {
        store::PostgresStore::connect_with_schema(&self.base_url, &self.schema)
            .await
            .expect("open schema")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread with
        // its own runtime. Runs on failure too, so no schema is left behind.
        let (url, schema) = (self.base_url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(store::PostgresStore::drop_schema(&url, &schema))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop schema {}: {e}", self.schema),
            Err(_) => eprintln!("could not drop schema {}: thread panicked", self.schema),
        }
    }
}

/// `POST path` with `body` as JSON and `token` as bearer.
pub(crate) async fn post(
    server: &Server,
    token: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    server
        .http
        .post(server.at(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The JSON body of `resp`, asserting its status first.
pub(crate) async fn ok_json(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(got, status, "{body:#}");
    body
}

/// Asserts an error response: the status, JSON content type, and a body with the stable
/// `code` and a non-empty `message`. Never a 500. Returns the body.
pub(crate) async fn expect_error(
    what: &str,
    resp: reqwest::Response,
    status: u16,
    code: &str,
) -> Value {
    let got = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.expect("body");
    assert_ne!(got, 500, "{what}: internal error: {text}");
    assert_eq!(got, status, "{what}: body {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content-type `{content_type}`: {text}"
    );
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    assert_eq!(body["code"], code, "{what}: {text}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: no message: {text}"
    );
    body
}

/// Creates a token through the API and returns `(id, secret)`.
pub(crate) async fn create_token(
    server: &Server,
    admin: &str,
    name: &str,
    role: &str,
) -> (String, String) {
    let resp = server
        .http
        .post(server.at("/v1/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({ "name": name, "role": role }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    assert!(resp.headers().contains_key("warden-audit-seq"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["role"], role);
    assert_eq!(v["name"], name);
    let secret = v["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wdn_") && secret.len() == 47, "{secret}");
    (v["id"].as_str().unwrap().to_owned(), secret)
}

/// Creates an API token and returns only its secret.
pub(crate) async fn create_token_secret(
    server: &Server,
    admin: &str,
    name: &str,
    role: &str,
) -> String {
    create_token(server, admin, name, role).await.1
}

/// This process's real uid, as the kernel reports it (what `unix:uid` attestation sees).
pub(crate) fn own_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Runs an example script (`examples/…/run.sh`) with `bash`, with `WARDEN` set to the binary
/// under test, none of the caller's variables whose names start with one of `strip` (e.g.
/// `WARDEN`, `GIT_`), and `env` added; in its own process group, so that on a timeout SIGTERM
/// lets its trap clean up (server, databases) before SIGKILL. Panics past `deadline`.
pub(crate) async fn run_example(
    script: &str,
    strip: &[&str],
    env: &[(&str, &str)],
    deadline: Duration,
) -> (ExitStatus, String, String) {
    use tokio::io::AsyncReadExt as _;
    fn read_all<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
        pipe: Option<R>,
    ) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text).await;
            }
            text
        })
    }
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_uppercase();
        if strip.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("WARDEN", BIN)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn bash");
    let pgid = child.id().expect("pid of a running child").to_string();
    let stdout_task = read_all(child.stdout.take());
    let stderr_task = read_all(child.stderr.take());
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(status) => status.expect("wait for the example"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pgid}")])
                .status();
            if tokio::time::timeout(Duration::from_secs(60), child.wait())
                .await
                .is_err()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pgid}")])
                    .status();
            }
            let out = String::from_utf8_lossy(&stdout_task.await.unwrap_or_default()).into_owned();
            panic!("{script} did not finish within {deadline:?}:\n{out}");
        }
    };
    let stdout = String::from_utf8_lossy(&stdout_task.await.expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&stderr_task.await.expect("stderr reader")).into_owned();
    (status, stdout, stderr)
}
