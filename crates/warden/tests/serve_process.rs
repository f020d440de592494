//! `warden serve` and `warden init` as processes: one process per data directory (an
//! exclusive lock taken before anything in it is read or written, the holder named), so two
//! first starts never both initialise it and `init` is refused while a server runs; where
//! `init` leaves the bootstrap admin token; and a clean SIGTERM shutdown whatever became of
//! the server's output pipes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Instant,
};

use common::{CLI_DEADLINE, Install, START_DEADLINE, STOP_DEADLINE, run, wait_until};
use store::Store as _;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The message a process refused a data directory in use gets.
fn in_use(data_dir: &Path, command: &str, pid: u32) -> String {
    format!(
        "data directory {} is in use by warden {command} (pid {pid}); stop it first or use \
         another --data-dir",
        data_dir.display()
    )
}

/// `warden serve` started with its stderr collected (all of it, as it comes) in the returned
/// buffer.
fn spawn_serve(install: &Install) -> (Child, u32, Arc<Mutex<String>>) {
    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn warden serve");
    let pid = child.id().expect("pid of a running child");
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, pid, log)
}

/// Asserts that the Workload API at `DATA_DIR/workload.sock` answers: an unregistered caller
/// is told that no identity was issued to it (a real answer from the server, not a transport
/// error).
async fn assert_workload_api_answers(install: &Install) {
    let socket = install.data_dir.join("workload.sock");
    assert!(socket.exists(), "{} is gone", socket.display());
    let endpoint = format!("unix:{}", socket.display());
    let client = spiffe::WorkloadApiClient::connect_to(&endpoint)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {endpoint}: {e:?}"));
    let err = tokio::time::timeout(CLI_DEADLINE, client.fetch_x509_svid())
        .await
        .expect("the workload api did not answer in time")
        .expect_err("an unregistered caller got an SVID");
    assert!(
        matches!(
            err,
            spiffe::workload_api::WorkloadApiError::NoIdentityIssued
        ),
        "the workload api did not answer: {err:?}"
    );
}

/// A second `warden serve` on a data directory in use exits at once, non-zero, naming the
/// running server's pid, and leaves the first server's Workload API socket alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_serve_on_the_same_data_dir_is_refused() {
    let install = Install::new().await;
    let first = install.serve().await;
    assert_workload_api_answers(&install).await;

    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let second = cmd.spawn().expect("spawn the second warden serve");
    // Without the lock the second server keeps running: killed (kill_on_drop) after the
    // deadline, and the test fails below.
    let out = tokio::time::timeout(START_DEADLINE, second.wait_with_output())
        .await
        .expect("the second warden serve did not exit: it is serving the same data directory")
        .expect("wait for the second warden serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some_and(|c| c != 0), "{stderr}");
    let expected = format!(
        "data directory {} is in use by warden serve (pid {}); stop it first or use another \
         --data-dir",
        install.data_dir.display(),
        first.pid()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("warden listening"), "{stderr}");

    // The first server still owns its socket and answers on it.
    assert_workload_api_answers(&install).await;
    let log = first.stop().await;
    assert!(log.contains("final checkpoint signed"), "{log}");

    // Once the first has stopped the directory is free again (the lock file left behind does
    // not block: the kernel released the lock with the process).
    let again = install.serve().await;
    assert_workload_api_answers(&install).await;
    again.stop().await;
}

/// Two first starts at once on a data directory that does not exist: exactly one initialises
/// it and serves; the other exits non-zero naming the first one's pid, having initialised
/// nothing. The directory is one consistent install: one bootstrap token, in the store and in
/// `admin.token`, one `install.init`, and a later start serves from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_first_starts_at_once_initialise_the_data_dir_once() {
    let install = Install::empty();
    let (mut a, pid_a, log_a) = spawn_serve(&install);
    let (mut b, pid_b, log_b) = spawn_serve(&install);
    // Without the lock both initialise (or one trips over the other's half-made directory):
    // either way neither exits with the message below.
    let first_exit = tokio::time::timeout(START_DEADLINE, async {
        tokio::select! {
            status = a.wait() => (true, status.expect("wait for warden serve")),
            status = b.wait() => (false, status.expect("wait for warden serve")),
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "neither warden serve exited:\n--- a:\n{}\n--- b:\n{}",
            log_a.lock().unwrap(),
            log_b.lock().unwrap()
        )
    });
    let (a_exited, status) = first_exit;
    let (mut winner, winner_pid, winner_log, loser_log) = if a_exited {
        (b, pid_b, log_b, log_a)
    } else {
        (a, pid_a, log_a, log_b)
    };
    // The loser's last lines arrive once its pipe is drained.
    let expected = in_use(&install.data_dir, "serve", winner_pid);
    wait_until(STOP_DEADLINE, || {
        loser_log.lock().unwrap().contains(&expected)
    })
    .await;
    let loser = loser_log.lock().unwrap().clone();
    assert!(
        status.code().is_some_and(|c| c != 0),
        "the second serve exited with {status}:\n{loser}"
    );
    assert!(loser.contains(&expected), "{loser}");
    assert!(!loser.contains("first start"), "{loser}");
    assert!(!loser.contains("warden listening"), "{loser}");

    let listening = wait_until(START_DEADLINE, || {
        winner_log.lock().unwrap().contains("warden listening on ")
    })
    .await;
    let log = winner_log.lock().unwrap().clone();
    assert!(listening, "the first serve is not listening:\n{log}");
    assert!(log.contains("first start: initialising"), "{log}");
    let status = tokio::process::Command::new("kill")
        .args(["-s", "TERM", &winner_pid.to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -s TERM {winner_pid} failed");
    let status = tokio::time::timeout(STOP_DEADLINE, winner.wait())
        .await
        .expect("warden serve ignored SIGTERM")
        .expect("wait for warden serve");
    assert_eq!(status.code(), Some(0), "{}", winner_log.lock().unwrap());

    // One install: one token, the one in admin.token, recorded once.
    let token_file = install.data_dir.join("admin.token");
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&install.data_dir), 0o700);
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.lines().count(), 1, "{token:?}");
    let token = token.trim().to_owned();
    {
        let store = store::SqliteStore::open(&install.data_dir.join("warden.db"))
            .await
            .expect("open the store");
        let tokens = store.token_list().await.expect("list tokens");
        assert_eq!(tokens.len(), 1, "{tokens:?}");
        let size = store.ledger_size().await.expect("ledger size");
        let count = u32::try_from(size).expect("a small ledger");
        let entries = store
            .ledger_entries(0, count)
            .await
            .expect("ledger entries");
        let inits = entries
            .iter()
            .filter(|e| e.action == "install.init")
            .count();
        assert_eq!(inits, 1, "install.init entries");
    }
    let server = install.serve().await;
    assert!(!server.log().contains("first start"), "{}", server.log());
    assert_eq!(server.get_json("/v1/whoami", &token).await["role"], "admin");
    server.stop().await;
}

/// `warden init` on a data directory a server is using is refused, naming the server's pid,
/// and writes nothing (no token file either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_refused_while_a_server_runs() {
    let install = Install::new().await;
    let server = install.serve().await;
    let expected = in_use(&install.data_dir, "serve", server.pid());
    let other_token_file = install.path("second.token");
    let mut cmd = install.cmd();
    cmd.arg("init")
        .arg("--admin-token-file")
        .arg(&other_token_file);
    let mut default = install.cmd();
    default.arg("init");
    for cmd in [cmd, default] {
        let out = run(cmd).await;
        assert!(out.code().is_some_and(|c| c != 0), "{out:#?}");
        assert!(out.stderr.contains(&expected), "{out:#?}");
        assert!(!out.stdout.contains("initialised"), "{out:#?}");
    }
    assert!(
        !other_token_file.exists(),
        "a refused init wrote a token file"
    );
    assert!(
        !install.data_dir.join("admin.token").exists(),
        "a refused init wrote a token file"
    );
    // The server carries on, and once it has stopped init may run (here: a no-op).
    assert_workload_api_answers(&install).await;
    server.stop().await;
    let out = run({
        let mut cmd = install.cmd();
        cmd.arg("init");
        cmd
    })
    .await
    .ok();
    assert!(out.stdout.contains("already initialised"), "{out:#?}");
}

/// `warden init` with no token option writes the bootstrap admin token where the first
/// `warden serve` does — `DATA_DIR/admin.token`, 0600, in the 0700 directory — and says so;
/// `--admin-token-file -` prints it instead. The lock file does not outlive init.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_the_admin_token_into_the_data_dir() {
    let mut install = Install::empty();
    install.token_file = install.data_dir.join("admin.token");
    let out = run({
        let mut cmd = install.cmd();
        cmd.arg("init");
        cmd
    })
    .await
    .ok();
    assert!(
        out.stdout.contains(&format!(
            "admin token:    written to {} (mode 0600)",
            install.token_file.display()
        )),
        "{out:#?}"
    );
    assert_eq!(mode(&install.data_dir), 0o700);
    assert_eq!(mode(&install.token_file), 0o600);
    let token = install.admin_token();
    assert!(token.starts_with("wdn_"), "{token}");
    assert!(!out.all().contains(&token), "the token is in the output");
    assert!(
        !install.data_dir.join("serve.lock").exists(),
        "init left its lock file"
    );
    let server = install.serve().await;
    assert!(!server.log().contains("first start"), "{}", server.log());
    assert_eq!(server.get_json("/v1/whoami", &token).await["role"], "admin");
    server.stop().await;

    // `-`: on standard output, and no file.
    let install = Install::empty();
    let out = run({
        let mut cmd = install.cmd();
        cmd.args(["init", "--admin-token-file", "-"]);
        cmd
    })
    .await
    .ok();
    let printed = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("admin token:    "))
        .unwrap_or_else(|| panic!("no token printed: {out:#?}"));
    assert!(printed.starts_with("wdn_"), "{out:#?}");
    assert!(!install.data_dir.join("admin.token").exists());
    assert!(!install.path("-").exists() && !Path::new("-").exists());
}

/// `warden serve 2>&1 | grep -m1 listening`: the reader goes away after the first line it
/// wanted. SIGTERM must still stop the server cleanly — exit 0, `server.stop` appended and
/// covered by a final checkpoint — though every later log line fails to write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_after_its_output_pipes_closed() {
    let install = Install::new().await;
    let mut cmd = install.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn warden serve");
    let pid = child.id().expect("pid of a running child");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");

    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let until = Instant::now() + START_DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no `warden listening` line in time:\n{seen}"))
            .expect("read stderr")
            .unwrap_or_else(|| panic!("stderr closed before `warden listening`:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("warden listening on ") {
            break;
        }
    }
    // The reader is gone: every write to either pipe now fails (EPIPE).
    drop(lines);
    drop(stdout);

    let status = tokio::process::Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -s TERM {pid} failed");
    let status = tokio::time::timeout(STOP_DEADLINE, child.wait())
        .await
        .expect("warden serve ignored SIGTERM once its output pipes were closed")
        .expect("wait for warden serve");
    assert_eq!(status.code(), Some(0), "{status}");

    // The log says nothing now; the store says how it stopped.
    let store = store::SqliteStore::open(&install.data_dir.join("warden.db"))
        .await
        .expect("open the store");
    let size = store.ledger_size().await.expect("ledger size");
    let last = store
        .ledger_entries(size - 1, 1)
        .await
        .expect("last ledger entry");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].action, "server.stop", "the last entry of the run");
    let checkpoint = store
        .checkpoint_latest()
        .await
        .expect("latest checkpoint")
        .expect("a checkpoint");
    assert_eq!(
        checkpoint.tree_size, size,
        "the final checkpoint covers server.stop"
    );
}
