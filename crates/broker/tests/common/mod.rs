//! What both PostgreSQL suites of this crate use: the `psql` client, the variable naming the
//! test database, how long to wait for what should happen at once, and small helpers.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{process::Output, time::Duration};

use rand::{Rng, distributions::Alphanumeric};

/// The PostgreSQL client nobody here wrote, logging in with the engine's credentials.
pub(crate) const PSQL: &str = "/usr/bin/psql";
/// The environment variable naming the test database (`.ci/run` sets it).
pub(crate) const URL_VAR: &str = "WARDEN_TEST_DATABASE_URL";
/// How long to wait for something that should happen at once (a session showing up in
/// `pg_stat_activity`, a terminated `psql` exiting, a server accepting connections).
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// `len` random lowercase letters and digits, for names no other test run uses.
pub(crate) fn random_suffix(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect()
}

/// A command's standard output, trimmed.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A command's standard error, trimmed.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}
