//! `warden demo` runs green on this machine: every scenario it can run here, narrated, ending
//! with the ledger verified offline. With WARDEN_DEMO_DATABASE_URL set (CI sets it) it also runs
//! the least-privilege database scenario.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use common::{run, warden};

#[tokio::test]
async fn the_demo_runs_every_scenario_it_can_and_verifies_the_ledger() {
    let mut cmd = warden();
    cmd.arg("demo")
        .env_remove("WARDEN_TOKEN")
        .env_remove("WARDEN_TOKEN_FILE")
        .env_remove("WARDEN_SERVER")
        .env_remove("SPIFFE_ENDPOINT_SOCKET");
    let db = std::env::var("WARDEN_DEMO_DATABASE_URL").ok();
    if let Some(url) = &db {
        cmd.args(["--database-url", url]);
    }
    let with_db = db.is_some();
    let out = run(cmd).await;
    let all = out.all();
    assert_eq!(out.code(), Some(0), "{all}");
    for want in [
        "The Planner trades its SVID for a short-lived access token",
        "widening it back to repo:write is refused",
        "introspects as active: false",
        "a new token for the Planner is refused",
        "An auditor exports the ledger and verifies it offline",
        "verified",
        "Demo finished: every step behaved as it should.",
    ] {
        assert!(all.contains(want), "missing `{want}` in:\n{all}");
    }
    if which("git") {
        for want in [
            "Scenario 2",
            "accepted: the task branch holds the fix",
            "refused: the same agent and command; the permission ended with the task",
            "refused: decisions read the live risk score",
        ] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
    }
    if with_db {
        for want in ["Scenario 1", "payment_methods → ", "logging in again → "] {
            assert!(all.contains(want), "missing `{want}` in:\n{all}");
        }
    } else {
        assert!(all.contains("--database-url"), "{all}");
    }
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}
