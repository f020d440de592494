//! `warden serve` as a process: one server per data directory (an exclusive lock, the holder
//! named), and a clean SIGTERM shutdown whatever became of its output pipes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{process::Stdio, time::Instant};

use common::{CLI_DEADLINE, Install, START_DEADLINE, STOP_DEADLINE};
use store::Store as _;
use tokio::io::{AsyncBufReadExt, BufReader};

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
    assert_eq!(out.status.code(), Some(1), "{stderr}");
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
