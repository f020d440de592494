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

use std::time::Duration;

/// The whole example takes about three seconds; this is the bound for a slow debug build on a
/// busy machine.
const DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test]
async fn multi_agent_bugfix_example_runs() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/multi-agent-bugfix/run.sh"
    );
    let (status, stdout, stderr) =
        common::run_example(script, &["WARDEN", "GIT_"], &[], DEADLINE).await;
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
