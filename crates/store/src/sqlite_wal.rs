//! WAL checkpoints for the SQLite store, off the commit path and in small steps.
//!
//! By default SQLite makes the connection whose commit takes the write-ahead log past 1,000
//! pages copy the log back into the database file there and then — 4 MB of writes and two
//! fsyncs — before that commit returns. Under a steady ledger load that is one commit in a
//! few dozen, and every request waiting on that commit waits milliseconds longer: it is the
//! p99 of every audited call. So the store's connections never checkpoint
//! (`wal_autocheckpoint = 0`); one background task does, on a connection of its own, in
//! rounds. A round starts each time the ledger appender has committed [`ROUND_BYTES`], and
//! at least every [`TICK`] otherwise (for the other tables' writes):
//!
//! 1. A `PASSIVE` checkpoint copies every committed frame into the database file while
//!    appends go on: readers and the writer are never blocked by it.
//! 2. A second `PASSIVE` checkpoint runs under the store's write gate, which the hot writers
//!    take. It copies only the frames committed during the first step (often none), so the
//!    round ends with the log fully copied and no write transaction open, and the next write
//!    starts the log over from the beginning of its file. Without this step a log that is
//!    always being written is never found fully copied, and it grows without bound.
//!
//! Rounds are small on purpose. Measured on the benchmark machine (docs/benchmarks.md): with
//! 512 KiB rounds, `/v1/authorize` at 64 connections had a p99 of 3.4–3.8 ms; with 4 MiB
//! rounds 6.3–7.0 ms, and with 12 MiB rounds 9–10 ms, at the same throughput. A big round
//! writes megabytes to the database file and fsyncs them in one burst, and the commits'
//! own fsyncs of the log wait behind that burst on the same disk.
//!
//! Crash safety does not depend on any of this: a commit is durable once it is in the fsynced
//! log, and SQLite replays the log at the next open.

use std::{
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::SqliteConnection;
use tokio::sync::{Mutex, Notify};

/// Ledger bytes committed that start a round (≈ 128 pages of log).
pub(crate) const ROUND_BYTES: u64 = 512 << 10;

/// Longest pause between two rounds.
const TICK: Duration = Duration::from_secs(1);

/// Frames in the log after a round above which the operator is warned that it is not
/// starting over (≈ 400 MB of log with 4 KiB pages).
const BACKLOG_WARN_FRAMES: i64 = 100_000;

/// What the store and its checkpoint task share.
#[derive(Debug, Default)]
pub(crate) struct Wal {
    wake: Notify,
    /// Ledger bytes committed since the last round started.
    pending: AtomicU64,
    stop: AtomicBool,
}

impl Wal {
    /// Counts `bytes` just committed by the ledger appender, waking the task when a round is due.
    pub(crate) fn committed(&self, bytes: u64) {
        let before = self.pending.fetch_add(bytes, Ordering::Relaxed);
        if before < ROUND_BYTES && before.saturating_add(bytes) >= ROUND_BYTES {
            self.wake.notify_one();
        }
    }

    /// Asks the task to stop after its current round.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// Runs rounds on `conn` until [`Wal::stop`] or until every store clone is dropped, then
/// closes the connection.
pub(crate) async fn run(mut conn: SqliteConnection, gate: Arc<Mutex<()>>, wal: Weak<Wal>) {
    loop {
        {
            let Some(wal) = wal.upgrade() else { break };
            if wal.stop.load(Ordering::Relaxed) {
                break;
            }
            let _ = tokio::time::timeout(TICK, wal.wake.notified()).await;
            if wal.stop.load(Ordering::Relaxed) {
                break;
            }
            wal.pending.store(0, Ordering::Relaxed);
        }
        if let Err(err) = round(&mut conn, &gate).await {
            tracing::warn!(error = %err, "sqlite WAL checkpoint failed; retrying at the next round");
        }
    }
    if let Err(err) = sqlx::Connection::close(conn).await {
        tracing::warn!(error = %err, "closing the sqlite checkpoint connection failed");
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: (busy, frames in the log, frames copied).
pub(crate) async fn passive(conn: &mut SqliteConnection) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await
}

/// One round (see the module documentation). Returns the frames left uncopied.
pub(crate) async fn round(
    conn: &mut SqliteConnection,
    gate: &Mutex<()>,
) -> Result<i64, sqlx::Error> {
    let (_, log, _) = passive(conn).await?;
    if log <= 0 {
        return Ok(0);
    }
    // Even when the first copy saw everything, a commit may have been under way: the log
    // starts over only if it is fully copied when the next write transaction begins.
    let (_, log, copied) = {
        let _gate = gate.lock().await;
        passive(conn).await?
    };
    if log > BACKLOG_WARN_FRAMES {
        tracing::warn!(
            frames = log,
            uncopied = log - copied,
            "the sqlite write-ahead log is not starting over (a long read transaction holds it?)"
        );
    }
    Ok(log - copied)
}
