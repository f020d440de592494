//! The SPIFFE Workload API against Python clients nobody here wrote: py-spiffe (the `spiffe`
//! package, used unchanged) and plain `grpcio` with the stubs py-spiffe ships
//! (`tests/interop/spiffe_python.py`). The Python interpreter is the workload, attested from
//! the kernel like any other process: its uid and its executable.
//!
//! What it shows, against the real binary:
//! * a Python process that matches no entry is refused with `PermissionDenied`;
//! * py-spiffe's `WorkloadApiClient` fetches the X.509-SVID (chaining to the bundle), a
//!   JWT-SVID, the X.509 and JWT bundle sets, validates the JWT-SVID through the API and is
//!   refused it for another audience;
//! * grpcio answers with every HTTP/2 `:authority` clients send on a Unix socket: grpcio's
//!   default (the percent-encoded socket path), the raw path (grpc-java, grpcurl) and
//!   `localhost` (grpc-go); without the security header each is refused `InvalidArgument`;
//! * py-spiffe's watch (`stream_x509_contexts`) receives, on the one stream it opened, the
//!   X.509-SVID of the new CA after `warden ca rotate` ran twice (prepare, then activate).
//!
//! Without python3 or the packages the test says it skipped, unless `WARDEN_REQUIRE_PY_SPIFFE`
//! is set (CI), when it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Install, Server, b64, bundle_jwt_kids, bundle_x509_ders, run};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
    time::Instant,
};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/spiffe_python.py"
);
/// The exact package CI installs for this test (it brings grpcio, protobuf, cryptography).
const PIP: &str = "pip install spiffe==0.3.2";
/// Set (CI): a missing python3 or package fails the test instead of skipping it.
const REQUIRE: &str = "WARDEN_REQUIRE_PY_SPIFFE";
/// The script's exit code for a package that does not import.
const MISSING_PACKAGES: i32 = 3;

const ID: &str = "spiffe://example.org/agent/python";
const AUDIENCE: &str = "warden-test";
/// The `:authority` flavours the script tries with grpcio (see the script).
const FLAVOURS: [&str; 3] = ["default", "raw_path", "localhost"];

/// The deadline of each Workload API call the script makes (seconds).
const CALL_TIMEOUT_S: u64 = 15;
/// How long the script's watch waits for each update once the rotation started (seconds).
const ROTATION_TIMEOUT_S: u64 = 60;
/// How long the `unregistered` run may take (three calls).
const UNREGISTERED_DEADLINE: Duration = Duration::from_secs(4 * CALL_TIMEOUT_S + 30);
/// How long the `registered` run may take to reach the watch (twenty-two calls at most).
const WATCHING_DEADLINE: Duration = Duration::from_secs(23 * CALL_TIMEOUT_S + 30);
/// How long the watch may take to see the new CA once both rotations are done.
const ROTATED_DEADLINE: Duration = Duration::from_secs(ROTATION_TIMEOUT_S + 30);
/// How long the script may take to exit after its last line.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// `python3 spiffe_python.py ARGS…` with no proxy, no `WARDEN_*` variable and no
/// `SPIFFE_ENDPOINT_SOCKET` of the caller.
fn python(args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT).args(args);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_lowercase();
        if name.starts_with("warden_")
            || name.ends_with("_proxy")
            || name == "spiffe_endpoint_socket"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The interpreter's `check` line (its executable as the kernel sees it, its uid, the library
/// versions), or `None` after printing why the test is skipped.
async fn interpreter() -> Option<Value> {
    let out = tokio::time::timeout(EXIT_DEADLINE, python(&["check"]).output())
        .await
        .unwrap_or_else(|_| panic!("{SCRIPT} check did not finish within {EXIT_DEADLINE:?}"));
    let missing = match out {
        Err(e) => format!("python3 cannot run: {e}"),
        Ok(out) if out.status.code() == Some(MISSING_PACKAGES) => {
            String::from_utf8_lossy(&out.stderr).trim().to_owned()
        }
        Ok(out) if out.status.success() => {
            let line = String::from_utf8_lossy(&out.stdout);
            let check: Value = serde_json::from_str(line.trim())
                .unwrap_or_else(|e| panic!("{SCRIPT} check printed no JSON ({e}): {out:?}"));
            assert_eq!(check["phase"], "check", "{check}");
            return Some(check);
        }
        Ok(out) => panic!("{SCRIPT} check: {out:?}"),
    };
    assert!(
        std::env::var_os(REQUIRE).is_none(),
        "{REQUIRE} is set but python3 or its packages are missing ({missing}): {PIP}"
    );
    // Past the harness's output capture, so a plain `cargo test` shows it.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: python3 with the spiffe package is not available ({missing}) ({PIP})"
    );
    None
}

/// A running `spiffe_python.py`: its JSON lines as they come, its stderr kept for failures.
struct Script {
    mode: &'static str,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Every line read so far, as printed.
    transcript: Vec<String>,
    /// The `result` lines by check name.
    results: BTreeMap<String, Value>,
    stderr: Arc<Mutex<String>>,
}

impl Script {
    fn spawn(mode: &'static str, socket: &Path) -> Self {
        let socket = socket.to_str().expect("socket path is UTF-8");
        let mut cmd = python(&[
            mode,
            "--socket",
            socket,
            "--audience",
            AUDIENCE,
            "--timeout",
            &CALL_TIMEOUT_S.to_string(),
            "--rotation-timeout",
            &ROTATION_TIMEOUT_S.to_string(),
        ]);
        // SPIFFE_Workload_Endpoint.md §4: `unix://` and the absolute path.
        cmd.env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{socket}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn python3");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            // Drains stderr for the whole life of the process (a full pipe would block it).
            let stderr = Arc::clone(&stderr);
            let mut pipe = child.stderr.take().expect("piped stderr");
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Self {
            mode,
            child,
            stdout,
            transcript: Vec::new(),
            results: BTreeMap::new(),
            stderr,
        }
    }

    /// Everything needed to see what went wrong: the script's lines, its stderr, the server's
    /// log.
    fn diagnostics(&self, server: &Server) -> String {
        let failed: Vec<String> = self
            .results
            .values()
            .filter(|r| r["ok"] != true)
            .map(|r| format!("  {} : {} [{}]", r["name"], r["error"], r["code"]))
            .collect();
        format!(
            "spiffe_python.py {} — failed checks:\n{}\n--- its stdout:\n{}\n--- its stderr:\n{}\n\
             --- warden serve log:\n{}",
            self.mode,
            failed.join("\n"),
            self.transcript.join("\n"),
            self.stderr.lock().unwrap(),
            server.log()
        )
    }

    /// The next line, within `until`; `None` at end of output. Records results.
    async fn next_line(&mut self, server: &Server, until: Instant, waiting: &str) -> Option<Value> {
        let line = match tokio::time::timeout_at(until, self.stdout.next_line()).await {
            Ok(Ok(line)) => line?,
            Ok(Err(e)) => panic!(
                "reading the script's stdout: {e}\n{}",
                self.diagnostics(server)
            ),
            Err(_) => panic!(
                "no {waiting} from the script in time\n{}",
                self.diagnostics(server)
            ),
        };
        self.transcript.push(line.clone());
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "the script printed a line that is not JSON ({e})\n{}",
                self.diagnostics(server)
            )
        });
        if value["phase"] == "result" {
            let name = value["name"].as_str().expect("result name").to_owned();
            assert!(
                self.results.insert(name.clone(), value.clone()).is_none(),
                "check {name} reported twice\n{}",
                self.diagnostics(server)
            );
        }
        Some(value)
    }

    /// Reads until a line of phase `phase` (returned), within `deadline`. Fails on a
    /// `watch_failed` line, on end of output and past the deadline.
    async fn until_phase(&mut self, server: &Server, phase: &str, deadline: Duration) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let Some(line) = self.next_line(server, until, phase).await else {
                panic!(
                    "the script ended before `{phase}`\n{}",
                    self.diagnostics(server)
                );
            };
            if line["phase"] == phase {
                return line;
            }
            assert_ne!(
                line["phase"],
                "watch_failed",
                "py-spiffe's watch failed while waiting for `{phase}`\n{}",
                self.diagnostics(server)
            );
        }
    }

    /// Reads to the end of the output and waits for the exit; every check must have passed.
    /// Returns the `start` line (pid, executable).
    async fn finish(&mut self, server: &Server) -> Value {
        let until = Instant::now() + EXIT_DEADLINE;
        while self
            .next_line(server, until, "end of output")
            .await
            .is_some()
        {}
        let status: ExitStatus = tokio::time::timeout_at(until, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the script did not exit in time\n{}",
                    self.diagnostics(server)
                )
            })
            .expect("wait for python3");
        let lines: Vec<Value> = self
            .transcript
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let done = lines.iter().find(|l| l["phase"] == "done");
        assert!(
            status.success() && done.is_some_and(|d| d["failed"] == json!([])),
            "spiffe_python.py {} exited with {status}\n{}",
            self.mode,
            self.diagnostics(server)
        );
        lines
            .into_iter()
            .find(|l| l["phase"] == "start")
            .expect("a start line")
    }

    /// The result of check `name` (which passed: [`Script::finish`] checked).
    fn result(&self, name: &str) -> &Value {
        self.results
            .get(name)
            .unwrap_or_else(|| panic!("no result for {name}: {:#?}", self.results))
    }

    /// Asserts `result[field] == want`, with the diagnostics on failure.
    fn expect(&self, server: &Server, name: &str, field: &str, want: &Value) {
        let got = &self.result(name)[field];
        assert_eq!(got, want, "{name}.{field}\n{}", self.diagnostics(server));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_and_grpcio_fetch_validate_and_watch_a_rotation() {
    let Some(interpreter) = interpreter().await else {
        return;
    };
    println!("python: {interpreter}");
    // The executable the kernel reports for the interpreter (not the `python3` found on PATH,
    // which may be a symlink or a pyenv shim that execs it).
    let exe = interpreter["exe"].as_str().expect("exe").to_owned();
    let uid = common::own_uid();
    assert_eq!(interpreter["uid"].to_string(), uid, "{interpreter}");

    let install = Install::new().await;
    let server = install.serve().await;
    let admin = install.admin_token();
    let socket = install.data_dir.join("workload.sock");
    assert!(socket.is_absolute(), "{}", socket.display());

    // 5. Not registered yet: the kernel says who the interpreter is, and no entry matches —
    // PermissionDenied (SPIFFE_Workload_API.md §5.2.1 FetchX509SVID, §6.2.1 FetchJWTSVID).
    let mut unregistered = Script::spawn("unregistered", &socket);
    let _ = unregistered
        .until_phase(&server, "done", UNREGISTERED_DEADLINE)
        .await;
    unregistered.finish(&server).await;
    let names: Vec<&String> = unregistered.results.keys().collect();
    assert_eq!(
        names,
        [
            "unregistered_grpcio_x509_svid",
            "unregistered_jwt_svid",
            "unregistered_x509_svid"
        ],
        "{}",
        unregistered.diagnostics(&server)
    );
    for name in [
        "unregistered_x509_svid",
        "unregistered_jwt_svid",
        "unregistered_grpcio_x509_svid",
    ] {
        unregistered.expect(&server, name, "code", &json!("PERMISSION_DENIED"));
    }

    // Register the interpreter: its uid and its executable.
    let resp = server
        .http
        .post(server.at("/v1/entries"))
        .bearer_auth(&admin)
        .json(&json!({
            "spiffe_id": ID,
            "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{exe}")],
            "x509_ttl_secs": 600,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    // What the server publishes, to compare the clients' view with.
    let bundle0 = server.get_public_json("/bundle").await;
    let old_roots = bundle_x509_ders(&bundle0);
    assert_eq!(old_roots.len(), 1, "{bundle0:#}");
    let old_root = b64(&old_roots[0]);
    let mut jwt_kids = bundle_jwt_kids(&bundle0);
    jwt_kids.sort();

    let mut script = Script::spawn("registered", &socket);
    // 2. The script watches once it has done everything else: then the CA rotates under it.
    let watching = script
        .until_phase(&server, "watching", WATCHING_DEADLINE)
        .await;
    assert_eq!(watching["spiffe_id"], ID, "{}", script.diagnostics(&server));
    assert_eq!(
        watching["issuer_ca"],
        old_root.as_str(),
        "{}",
        script.diagnostics(&server)
    );
    for (step, want) in [("prepare", "prepared:"), ("activate", "activated:")] {
        let out = run(install.client(&server, &["ca", "rotate"])).await;
        assert!(
            out.status.success() && out.stdout.contains(want),
            "warden ca rotate ({step}): {out:#?}\n{}",
            script.diagnostics(&server)
        );
    }
    let bundle2 = server.get_public_json("/bundle").await;
    let new_roots: Vec<String> = bundle_x509_ders(&bundle2)
        .iter()
        .map(|der| b64(der))
        .filter(|r| *r != old_root)
        .collect();
    assert_eq!(new_roots.len(), 1, "{bundle2:#}");
    let new_root = &new_roots[0];
    let rotated = script
        .until_phase(&server, "rotated", ROTATED_DEADLINE)
        .await;
    let start = script.finish(&server).await;

    // 2. On the same stream (py-spiffe's watch runs with retry_connect=False, so it never
    // opened another): an X.509-SVID for the same ID, issued by the new CA, with both CAs in
    // the bundle during the overlap.
    let diag = || script.diagnostics(&server);
    assert_eq!(rotated["spiffe_id"], ID, "{}", diag());
    assert_eq!(rotated["issuer_ca"], new_root.as_str(), "{}", diag());
    assert_ne!(rotated["serial"], watching["serial"], "{}", diag());
    let mut both = vec![old_root.clone(), new_root.clone()];
    both.sort();
    assert_eq!(rotated["bundle"], json!(both), "{}", diag());

    // 1. py-spiffe's one-shot calls.
    script.expect(&server, "x509_svid", "spiffe_id", &json!(ID));
    // The SVID chains to the CA the bundle endpoint publishes (the script checked every
    // signature of the chain against the bundle it got).
    script.expect(&server, "x509_svid", "issuer_ca", &json!(old_root));
    script.expect(&server, "x509_svid", "bundle", &json!([old_root]));
    script.expect(&server, "jwt_svid", "spiffe_id", &json!(ID));
    script.expect(&server, "jwt_svid", "audience", &json!([AUDIENCE]));
    let kid = script.result("jwt_svid")["kid"]
        .as_str()
        .unwrap_or_default();
    assert!(
        jwt_kids.iter().any(|k| k == kid),
        "{kid} not in {jwt_kids:?}"
    );
    script.expect(&server, "validate_jwt_svid", "spiffe_id", &json!(ID));
    script.expect(&server, "validate_jwt_svid", "audience", &json!([AUDIENCE]));
    // Another audience: the Workload API refuses the token (the script read the status).
    script.expect(
        &server,
        "validate_jwt_svid_wrong_audience",
        "code",
        &json!("INVALID_ARGUMENT"),
    );
    script.expect(
        &server,
        "x509_bundles",
        "trust_domains",
        &json!(["example.org"]),
    );
    script.expect(&server, "x509_bundles", "authorities", &json!([old_root]));
    script.expect(
        &server,
        "jwt_bundles",
        "trust_domains",
        &json!(["example.org"]),
    );
    script.expect(&server, "jwt_bundles", "kids", &json!(jwt_kids));
    // py-spiffe also verified the JWT-SVID offline with the JWT bundle it got.
    script.expect(&server, "jwt_bundles", "offline_spiffe_id", &json!(ID));

    // 3., 4. grpcio with each `:authority`; 5. without the security header, InvalidArgument
    // from the Workload API itself (SPIFFE_Workload_Endpoint.md §6 "Error Codes": a request
    // without the header MUST be answered InvalidArgument; the header is §3 "Transport").
    for flavour in FLAVOURS {
        let name = |what: &str| format!("grpcio_{flavour}_{what}");
        script.expect(&server, &name("jwt_svid"), "spiffe_id", &json!(ID));
        script.expect(&server, &name("jwt_svid"), "audience", &json!([AUDIENCE]));
        script.expect(
            &server,
            &name("x509_bundles"),
            "trust_domains",
            &json!(["spiffe://example.org"]),
        );
        for call in ["no_header_jwt_svid", "no_header_x509_svid"] {
            script.expect(&server, &name(call), "code", &json!("INVALID_ARGUMENT"));
        }
    }
    let mut expected: Vec<String> = [
        "x509_svid",
        "jwt_svid",
        "validate_jwt_svid",
        "validate_jwt_svid_wrong_audience",
        "x509_bundles",
        "jwt_bundles",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain(FLAVOURS.iter().flat_map(|f| {
        [
            "jwt_svid",
            "x509_bundles",
            "no_header_jwt_svid",
            "no_header_x509_svid",
        ]
        .map(|w| format!("grpcio_{f}_{w}"))
    }))
    .collect();
    expected.sort();
    let names: Vec<String> = script.results.keys().cloned().collect();
    assert_eq!(names, expected, "{}", diag());

    // Every SVID handed out is in the ledger, with the Python process that got it.
    let pid = start["pid"].as_u64().expect("pid");
    let entries = server.all_entries(&admin).await;
    let issued: Vec<&Value> = entries
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["action"] == "svid.issue")
        .collect();
    assert!(
        issued.iter().any(|e| e["fields"]["kind"] == "x509")
            && issued.iter().any(|e| e["fields"]["kind"] == "jwt"),
        "{issued:#?}"
    );
    for e in &issued {
        assert_eq!(e["actor"], ID, "{e}");
        assert_eq!(e["fields"]["pid"].as_u64(), Some(pid), "{e}");
    }
    server.stop().await;
}
