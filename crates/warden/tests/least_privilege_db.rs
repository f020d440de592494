//! Scenario 1 as shipped: runs `examples/least-privilege-db/run.sh` against the binary under
//! test and real PostgreSQL (`WARDEN_TEST_DATABASE_URL`), and checks that it passes and says
//! what a reader of the example relies on — each step's check, the ledger trail and the
//! offline verification.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::time::Duration;

use common::PG_ENV;

/// The whole example, a server start and a 2-second expiry included, takes about five seconds;
/// this is the bound for a slow debug build on a busy machine.
const DEADLINE: Duration = Duration::from_secs(300);

#[tokio::test]
async fn least_privilege_db_example_runs() {
    let Ok(database_url) = std::env::var(PG_ENV) else {
        use std::io::Write as _;
        // Past the harness's capture, so a plain `cargo test` shows it.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {PG_ENV} is not set (the least-privilege example was not run)"
        );
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/least-privilege-db/run.sh"
    );
    let (status, stdout, stderr) = common::run_example(
        script,
        &["WARDEN"],
        &[(PG_ENV, database_url.as_str())],
        DEADLINE,
    )
    .await;
    let out = std::process::Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the example failed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    for line in [
        "ok: no standing credential",
        "ok: policy refused a 15-minute credential",
        "access_denied (403)",
        "ok: issued lease postgres/db_read_summary/lse_",
        // The password is never printed.
        "\"password\": \"(40 random characters, shown once)\"",
        "ok: its table privileges, from the catalog: customers SELECT,orders SELECT",
        "ok: summary: 12 customers, Q3 15 orders, 18289.50 total",
        "ok: reading payment_methods was refused: ERROR:  permission denied for table payment_methods",
        "ok: INSERT into orders was refused: ERROR:  permission denied for table orders",
        "ok: CREATE TABLE was refused",
        "recorded as ledger entry",
        "ok: the role is gone",
        "ok: login refused after revocation",
        "does not exist",
        "revoked (returned by its holder)",
        "ok: the sweeper dropped the forgotten credential",
        "reason: expired",
        "policy.decision        denied",
        "policy.decision        success",
        "lease.issue",
        "select customers",
        "lease.revoke_upstream",
        "lease.expire",
        "OK: ",
        "agent.operation x2,lease.issue x1,lease.revoke_upstream x",
        "ok: a tampered export fails verification",
        "the entry was altered",
        "Scenario 1 passed",
        "dropped database warden_example_",
    ] {
        assert!(
            stdout.contains(line),
            "the example's output lacks `{line}`:\n{stdout}\n--- stderr ---\n{stderr}"
        );
    }
}
