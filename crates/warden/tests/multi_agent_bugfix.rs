//! Scenario 2 as shipped: runs `examples/multi-agent-bugfix/run.sh` against the binary under
//! test with the real `git` and `python3`, and checks that it passes and says what a reader of
//! the example relies on — each push's outcome and reason, the grants ending with the task,
//! the ledger trail with its inclusion proof, and the offline verification.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{process::Stdio, time::Duration};

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The whole example takes about three seconds; this is the bound for a slow debug build on a
/// busy machine.
const DEADLINE: Duration = Duration::from_secs(300);

/// Reads a pipe to its end in the background.
fn read_all<R: AsyncRead + Unpin + Send + 'static>(
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

#[tokio::test]
async fn multi_agent_bugfix_example_runs() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/multi-agent-bugfix/run.sh"
    );
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script);
    // Only what the example documents: no WARDEN_* or GIT_* setting of the caller leaks in.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_uppercase();
        if name.starts_with("WARDEN") || name.starts_with("GIT_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("WARDEN", common::BIN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout reaches the server it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn bash");
    let pgid = child.id().expect("pid of a running child").to_string();
    let stdout_task = read_all(child.stdout.take());
    let stderr_task = read_all(child.stderr.take());
    let status = match tokio::time::timeout(DEADLINE, child.wait()).await {
        Ok(status) => status.expect("wait for the example"),
        Err(_) => {
            // SIGTERM lets the script's trap clean up (server, temporary directory) first.
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
            panic!("{script} did not finish within {DEADLINE:?}:\n{out}");
        }
    };
    let stdout = String::from_utf8_lossy(&stdout_task.await.expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&stderr_task.await.expect("stderr reader")).into_owned();
    assert!(
        status.success(),
        "the example failed ({status}):\n{stdout}\n--- stderr ---\n{stderr}"
    );
    for line in [
        "test result: ok. 8 passed",
        "task bug-42: patch_bug, owner alice@example.org, about repository:bugfix-demo, branch refs/heads/fix/bug-42, created by agent:spiffe://example.org/agent/planner",
        "spiffe://example.org/agent/coder as coder: repository:bugfix-demo#writer until the deadline",
        "spiffe://example.org/agent/reviewer as reviewer: repository:bugfix-demo#reader until the deadline",
        "FAIL: test_a_partly_filled_last_page_counts",
        "ok: all tests pass: OK",
        "warden: push to refs/heads/fix/bug-42 allowed for spiffe://example.org/agent/coder: policy `writer-pushes-task-branch` permits it (decision dec_",
        "ok: accepted: refs/heads/fix/bug-42 now holds the fix",
        "warden: push to refs/heads/main refused: forbidden by policy `only-the-task-branch`",
        "warden: push to refs/heads/experiment refused: no Warden credential: push with `-o warden-token=<JWT-SVID>`",
        "-    return total_items // per_page",
        "+    return -(-total_items // per_page)",
        "ok: the Reviewer's test run passes: OK",
        "warden: push to refs/heads/fix/bug-42 refused: `spiffe://example.org/agent/reviewer` is not a `writer` of repository `bugfix-demo` (its role on task `bug-42` is `reviewer`)",
        "task bug-42: completed (fix reviewed and approved by the Reviewer)",
        "grant repository:bugfix-demo#writer of spiffe://example.org/agent/coder: ended",
        "ok: its grants are gone",
        "warden: push to refs/heads/fix/bug-42 refused: task `bug-42` is completed (no open task grants write) (decision dec_",
        "warden: push to refs/heads/fix/bug-43 refused: risk score 0.7 ≥ 0.5 (decision dec_",
        "ok: accepted: the decision follows the live risk score",
        "policy.decision  denied   token:git-hook",
        "git.push         denied   token:git-hook",
        "task.end         success  agent:spiffe://example.org/agent/planner bug-42 completed",
        "risk.set         success",
        "ok: every push attempt is in the ledger: 6 decisions (api git) and 1 refusal without a credential",
        "verified: entry ",
        "OK: ",
        "Scenario 2 passed",
        "stopped warden serve",
    ] {
        assert!(
            stdout.contains(line) || stderr.contains(line),
            "the example's output lacks `{line}`:\n{stdout}\n--- stderr ---\n{stderr}"
        );
    }
}
