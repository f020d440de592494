//! Embedded SQLite backend (WAL mode, `synchronous = FULL`).
//!
//! One exception to `FULL`: the connection ledger appends write on commits without syncing
//! the write-ahead log, and the ledger syncs it itself ([`Store::ledger_sync`]) before it
//! acknowledges anything. While one batch is being synced the next one is already being
//! written, instead of the two waiting for each other.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use sqlx::{
    QueryBuilder, Sqlite, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::{
    ApiTokenRow, Backend, ChangeKind, CheckpointRow, DenyRow, EntryInsert, EntryRow, FederationRow,
    JoinConsume, JoinTokenRow, KeyActivate, LedgerRow, PolicyVersionRow, Result, SigningKeyRow,
    Store, StoreError, TokenRevoke,
    changes::{Change, federation_change},
    common::{
        self, INSERT_CHUNK_ROWS, RawCheckpointRow, RawEntryRow, RawLedgerRow, RawTokenRow, db_err,
        to_i64,
    },
    sqlite_wal::{self, Wal},
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connections in the pool. SQLite serializes writers itself; the extra connections let
/// readers proceed concurrently (WAL readers never block the writer).
const MAX_CONNECTIONS: u32 = 4;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates a missing database file readable and writable by its owner only: it holds the
/// ledger, token hashes and sealed secrets, and SQLite would create it `0644` (less the
/// umask). SQLite gives the `-wal` and `-shm` files the database file's mode. An existing
/// file is left as it is.
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(format!(
            "cannot create sqlite database {}: {e}",
            path.display()
        ))),
    }
}

/// A store in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Taken by the hot write transactions (ledger appends, lease batches): SQLite has one
    /// writer at a time, and a second one waits in its busy handler, which sleeps in
    /// milliseconds; queueing here instead hands the write lock over at once.
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// The connection ledger appends (and registration entries) write on, taken under
    /// `write_gate`. One connection, always the same: SQLite empties a connection's page cache
    /// when another connection has written since it last read, so appends spread over the
    /// pool's connections re-read the B-tree pages they touch from the file at every commit;
    /// this one keeps them.
    /// `None` once the store is closed. It commits with `synchronous = NORMAL`: its commits
    /// are durable once [`Store::ledger_sync`] has synced `wal_file`.
    appender: Arc<tokio::sync::Mutex<Option<sqlx::SqliteConnection>>>,
    /// SQLite's write-ahead log of this database: the canonical path of the database file
    /// with `-wal` appended, as SQLite names it. It exists as long as a connection is open.
    wal_file: Arc<PathBuf>,
    /// Shared with the task that copies the WAL back into the database file.
    wal: Arc<Wal>,
    wal_task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl SqliteStore {
    /// Opens the database file at `path`, creating the file (not its directory) if missing,
    /// and applies pending migrations.
    ///
    /// The connections run in WAL mode with `synchronous = FULL`, so a committed transaction
    /// survives a crash or power loss (ledger appends once [`Store::ledger_sync`] has
    /// returned); foreign keys are on and writers wait up to 5 s for the write lock.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            match tokio::fs::metadata(dir).await {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(StoreError::Database(format!(
                        "cannot open sqlite database {}: {} is not a directory",
                        path.display(),
                        dir.display()
                    )));
                }
                Err(err) => {
                    return Err(StoreError::Database(format!(
                        "cannot open sqlite database {}: directory {} is not accessible: {err}",
                        path.display(),
                        dir.display()
                    )));
                }
            }
        }

        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // 4 MiB of page cache per pooled connection (SQLite's default is 2 MiB): leases,
            // tokens and tasks are read back hot; large reads (entries, tuples at start) are
            // sequential and gain nothing from more.
            .pragma("cache_size", "-4096")
            // No connection copies the WAL back at its own commit: the checkpoint task does
            // (`sqlite_wal`).
            .pragma("wal_autocheckpoint", "0");
        let cannot_open = |err: sqlx::Error| {
            StoreError::Database(format!(
                "cannot open sqlite database {}: {err}",
                path.display()
            ))
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await
            .map_err(cannot_open)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|err| StoreError::Migration(err.to_string()))?;
        // The appender's temporary data — the copy of the rows a guarded insert makes before
        // it reads the table, the statement journal of an insert inside a transaction — in
        // memory, not in temporary files written at every batch.
        //
        // Its commits do not fsync the log (`NORMAL`): `ledger_sync` does, off the writer's
        // path, before any of them is acknowledged.
        let appender = sqlx::Connection::connect_with(
            &options
                .clone()
                // 8 MiB of page cache: the ledger's right edge is written back hot, and the
                // registration entries written here share the rest (a fleet's entries would
                // fill any size, so it stays bounded).
                .pragma("cache_size", "-8192")
                .pragma("temp_store", "memory")
                .synchronous(SqliteSynchronous::Normal),
        )
        .await
        .map_err(cannot_open)?;
        let wal_file = Arc::new(wal_file_of(path).await?);
        let checkpointer = sqlx::Connection::connect_with(&options)
            .await
            .map_err(cannot_open)?;
        let write_gate = Arc::new(tokio::sync::Mutex::new(()));
        let wal = Arc::new(Wal::default());
        let wal_task = tokio::spawn(sqlite_wal::run(
            checkpointer,
            Arc::clone(&write_gate),
            Arc::downgrade(&wal),
        ));
        tracing::debug!(path = %path.display(), "sqlite store opened");
        Ok(SqliteStore {
            pool,
            write_gate,
            appender: Arc::new(tokio::sync::Mutex::new(Some(appender))),
            wal_file,
            wal,
            wal_task: Arc::new(std::sync::Mutex::new(Some(wal_task))),
        })
    }

    /// Closes every pooled connection, waiting for them to be returned. Dropping the store
    /// also closes them, in the background.
    pub async fn close(&self) {
        self.wal.stop();
        let task = self
            .wal_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            if let Err(err) = task.await {
                tracing::warn!(error = %err, "the sqlite checkpoint task failed");
            }
        }
        if let Some(appender) = self.appender.lock().await.take() {
            if let Err(err) = sqlx::Connection::close(appender).await {
                tracing::warn!(error = %err, "closing the sqlite ledger connection failed");
            }
        }
        self.pool.close().await;
    }
}

/// Finds the write-ahead log SQLite keeps for the database at `path` (open, in WAL mode) and
/// makes its directory entry durable, so that syncing the file's contents is enough.
async fn wal_file_of(path: &Path) -> Result<PathBuf> {
    let path = path.to_owned();
    let found = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
        // SQLite names the log after the database's full path, symbolic links resolved.
        let mut wal = std::fs::canonicalize(&path)?.into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        std::fs::metadata(&wal)?;
        if let Some(dir) = wal.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(wal)
    })
    .await
    .map_err(|e| StoreError::Database(format!("finding the sqlite write-ahead log: {e}")))?;
    found.map_err(|e| {
        StoreError::Database(format!(
            "cannot use the sqlite write-ahead log next to the database: {e}"
        ))
    })
}

/// `fdatasync` of the write-ahead log: everything written to it so far is on disk when this
/// returns. The file is opened anew each time, so a log SQLite had deleted and recreated
/// could not be missed.
fn sync_wal(wal: &Path) -> Result<()> {
    let failed = |e: std::io::Error| {
        StoreError::Database(format!(
            "syncing the sqlite write-ahead log {}: {e}",
            wal.display()
        ))
    };
    std::fs::File::open(wal)
        .map_err(failed)?
        .sync_data()
        .map_err(failed)
}

/// Most rows appended by [`one_statement_append`] (six parameters each, far below SQLite's
/// 32,766; the ledger's batches are at most 1,024 entries by default).
const ONE_STATEMENT_ROWS: usize = 2_048;

/// Bytes a batch adds to the WAL, roughly (the leaves and the row overhead).
fn wal_bytes(rows: &[LedgerRow]) -> u64 {
    rows.iter().map(|r| r.leaf.len() as u64 + 64).sum()
}

/// Appends `rows` (the ledger holding `expected` entries) as ONE statement in autocommit
/// mode: it is its own transaction, takes the write lock before it reads, inserts nothing
/// unless the ledger's size is still `expected` (and the primary key refuses any seq already
/// taken), and commits when it finishes (durably once the log is synced). One statement is
/// one round trip to the connection's thread instead of four (begin, size check, insert,
/// commit): under load each round trip waits for a scheduler, and those waits, not SQLite's
/// work, were most of a commit's time.
async fn one_statement_append(
    connection: &mut sqlx::SqliteConnection,
    expected: i64,
    rows: &[LedgerRow],
) -> Result<()> {
    let mut qb = QueryBuilder::<Sqlite>::new(
        "INSERT INTO ledger_entries (seq, leaf_hash, leaf, time_unix_ms, actor, action) \
         SELECT column1, column2, column3, column4, column5, column6 FROM (",
    );
    common::push_ledger_values(&mut qb, rows)?;
    qb.push(") WHERE (");
    qb.push(common::LEDGER_SIZE_SQL);
    qb.push(") = ");
    qb.push_bind(expected);
    let done = qb
        .build()
        .execute(&mut *connection)
        .await
        .map_err(common::ledger_insert_err)?;
    if done.rows_affected() == rows.len() as u64 {
        return Ok(());
    }
    // Nothing was inserted: the size differed. Say what it is.
    let size: i64 = sqlx::query_scalar(common::LEDGER_SIZE_SQL)
        .fetch_one(&mut *connection)
        .await
        .map_err(db_err)?;
    let actual = common::from_i64("ledger_entries", "seq", size)?;
    Err(common::size_conflict(
        common::from_i64("ledger_entries", "seq", expected)?,
        actual,
    ))
}

crate::broker::broker_methods!(SqliteStore, sqlx::Sqlite, |self| Some(&self.write_gate));
crate::tasks::task_methods!(SqliteStore);
crate::changes::change_methods!(SqliteStore);

/// A write transaction and, while it lives, the write gate.
type WriteTx<'a> = (
    Option<tokio::sync::MutexGuard<'a, ()>>,
    sqlx::Transaction<'a, Sqlite>,
);

impl SqliteStore {
    /// A write transaction for a change the feed records: taken under the write gate, and
    /// `IMMEDIATE` so that it holds SQLite's write lock from its start.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx<'_>> {
        let gate = self.write_gate.lock().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        Ok((Some(gate), tx))
    }

    /// The ledger's appender connection, under the write gate: it commits with `synchronous =
    /// NORMAL`, so a commit reaches the write-ahead log but is not synced by itself. It is
    /// durable once the WAL is next synced — by the ledger's next append, which the
    /// registration handlers make right after and wait for before they answer, so a
    /// registration is durable before it is acknowledged, and concurrent registrations share
    /// the ledger's syncs instead of paying one each.
    async fn unsynced(
        &self,
    ) -> Result<(
        tokio::sync::MutexGuard<'_, ()>,
        tokio::sync::MappedMutexGuard<'_, sqlx::SqliteConnection>,
    )> {
        let gate = self.write_gate.lock().await;
        let appender = tokio::sync::MutexGuard::try_map(self.appender.lock().await, Option::as_mut)
            .map_err(|_| StoreError::Database("the sqlite store is closed".to_owned()))?;
        Ok((gate, appender))
    }

    /// Records `changes` in the feed, in the caller's transaction; returns the revision of the
    /// last one (`None` when there are none).
    pub(crate) async fn note(
        conn: &mut sqlx::SqliteConnection,
        changes: &[crate::changes::Change],
    ) -> Result<Option<i64>> {
        let now = crate::changes::now_ms();
        let mut last = None;
        for chunk in changes.chunks(1000) {
            let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO changes (kind, key, op, at_ms) ");
            qb.push_values(chunk, |mut b, c| {
                b.push_bind(c.kind.as_str())
                    .push_bind(c.key.as_str())
                    .push_bind(c.op.as_str())
                    .push_bind(now);
            });
            let done = qb.build().execute(&mut *conn).await.map_err(db_err)?;
            // `rev` is the rowid; a multi-row insert's last row is inserted last.
            last = Some(done.last_insert_rowid());
        }
        Ok(last)
    }
}
crate::rebac::rebac_methods!(SqliteStore, |self| self.pool.begin_with("BEGIN IMMEDIATE"));

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn ledger_size(&self) -> Result<u64> {
        let size: i64 = sqlx::query_scalar(common::LEDGER_SIZE_SQL)
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        common::from_i64("ledger_entries", "seq", size)
    }

    async fn ledger_append_with(
        &self,
        expected_size: u64,
        rows: &[LedgerRow],
        leases: &[crate::LeaseRow],
    ) -> Result<()> {
        self.ledger_append_unsynced(expected_size, rows, leases)
            .await?;
        self.ledger_sync().await
    }

    async fn ledger_sync(&self) -> Result<()> {
        let wal = Arc::clone(&self.wal_file);
        tokio::task::spawn_blocking(move || sync_wal(&wal))
            .await
            .map_err(|e| StoreError::Database(format!("the sqlite log sync task failed: {e}")))?
    }

    async fn ledger_append_unsynced(
        &self,
        expected_size: u64,
        rows: &[LedgerRow],
        leases: &[crate::LeaseRow],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let expected = common::check_batch(expected_size, rows)?;

        let _gate = self.write_gate.lock().await;
        let mut appender = self.appender.lock().await;
        let Some(connection) = appender.as_mut() else {
            return Err(StoreError::Database(
                "the sqlite store is closed".to_owned(),
            ));
        };
        if leases.is_empty() && rows.len() <= ONE_STATEMENT_ROWS {
            one_statement_append(connection, expected, rows).await?;
            self.wal.committed(wal_bytes(rows));
            return Ok(());
        }
        // Take the write lock up front so the size check and the inserts are one atomic step.
        let mut tx = sqlx::Connection::begin_with(connection, "BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let size: i64 = sqlx::query_scalar(common::LEDGER_SIZE_SQL)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        if size != expected {
            tx.rollback().await.map_err(db_err)?;
            let actual = common::from_i64("ledger_entries", "seq", size)?;
            return Err(common::size_conflict(expected_size, actual));
        }
        for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO ledger_entries (seq, leaf_hash, leaf, time_unix_ms, actor, action) ",
            );
            common::push_ledger_values(&mut qb, chunk)?;
            qb.build()
                .execute(&mut *tx)
                .await
                .map_err(common::ledger_insert_err)?;
        }
        // Leases issued with these entries commit with them: one exists exactly when the
        // other does.
        crate::broker::insert_leases!(QueryBuilder<'_, Sqlite>, tx, leases);
        tx.commit().await.map_err(db_err)?;
        self.wal.committed(wal_bytes(rows));
        Ok(())
    }

    async fn ledger_entries(&self, from: u64, limit: u32) -> Result<Vec<LedgerRow>> {
        let (start, end) = common::seq_range(from, limit)?;
        let raws: Vec<RawLedgerRow> = sqlx::query_as(
            "SELECT seq, leaf_hash, leaf, time_unix_ms, actor, action FROM ledger_entries \
             WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        raws.into_iter().map(common::ledger_row).collect()
    }

    async fn ledger_leaf_hashes(&self, from: u64, limit: u32) -> Result<Vec<[u8; 32]>> {
        let (start, end) = common::seq_range(from, limit)?;
        let raws: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT leaf_hash FROM ledger_entries WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
        )
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        raws.into_iter()
            .map(|h| common::hash32("ledger_entries", "leaf_hash", h))
            .collect()
    }

    async fn checkpoint_insert(&self, row: &CheckpointRow) -> Result<()> {
        let tree_size = to_i64("tree size", row.tree_size)?;
        let inserted = sqlx::query(
            "INSERT INTO ledger_checkpoints (tree_size, root, note, created_unix_ms) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tree_size) DO NOTHING",
        )
        .bind(tree_size)
        .bind(&row.root[..])
        .bind(row.note.as_str())
        .bind(row.created_unix_ms)
        .execute(&self.pool)
        .await
        .map_err(db_err)?
        .rows_affected();
        if inserted == 1 {
            return Ok(());
        }
        // Checkpoints are never updated or deleted, so this read is consistent with the insert.
        let existing: Vec<u8> =
            sqlx::query_scalar("SELECT root FROM ledger_checkpoints WHERE tree_size = ?1")
                .bind(tree_size)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
        let existing = common::hash32("ledger_checkpoints", "root", existing)?;
        if existing == row.root {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "a checkpoint for tree size {} with a different root already exists",
                row.tree_size
            )))
        }
    }

    async fn checkpoint_latest(&self) -> Result<Option<CheckpointRow>> {
        let raw: Option<RawCheckpointRow> = sqlx::query_as(
            "SELECT tree_size, root, note, created_unix_ms FROM ledger_checkpoints \
             ORDER BY tree_size DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        raw.map(common::checkpoint_row).transpose()
    }

    async fn token_insert(&self, row: &ApiTokenRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_unix_ms, revoked_unix_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(row.id.as_str())
        .bind(row.name.as_str())
        .bind(row.role.as_str())
        .bind(&row.token_hash[..])
        .bind(row.created_unix_ms)
        .bind(row.revoked_unix_ms)
        .execute(&self.pool)
        .await
        .map_err(common::token_insert_err)?;
        Ok(())
    }

    async fn token_by_hash(&self, token_hash: &[u8; 32]) -> Result<Option<ApiTokenRow>> {
        let raw: Option<RawTokenRow> = sqlx::query_as(
            "SELECT id, name, role, token_hash, created_unix_ms, revoked_unix_ms \
             FROM api_tokens WHERE token_hash = ?1",
        )
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        raw.map(common::token_row).transpose()
    }

    async fn token_list(&self) -> Result<Vec<ApiTokenRow>> {
        let raws: Vec<RawTokenRow> = sqlx::query_as(
            "SELECT id, name, role, token_hash, created_unix_ms, revoked_unix_ms \
             FROM api_tokens ORDER BY created_unix_ms, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        raws.into_iter().map(common::token_row).collect()
    }

    async fn token_revoke(
        &self,
        id: &str,
        at_unix_ms: i64,
        keep_last_of_role: &str,
    ) -> Result<TokenRevoke> {
        // One serialized transaction: the last-of-role check and the update cannot interleave
        // with another revocation.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM api_tokens WHERE id = ?1 AND revoked_unix_ms IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(role) = role else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(TokenRevoke::NotFound);
        };
        if role == keep_last_of_role {
            let active: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM api_tokens WHERE role = ?1 AND revoked_unix_ms IS NULL",
            )
            .bind(&role)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
            if active <= 1 {
                tx.rollback().await.map_err(db_err)?;
                return Ok(TokenRevoke::LastOfRole);
            }
        }
        sqlx::query(
            "UPDATE api_tokens SET revoked_unix_ms = ?1 WHERE id = ?2 AND revoked_unix_ms IS NULL",
        )
        .bind(at_unix_ms)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(TokenRevoke::Revoked)
    }

    async fn entry_insert(&self, row: &EntryRow) -> Result<i64> {
        let (_gate, mut conn) = self.unsynced().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        insert_entry(&mut *tx, row)
            .await
            .map_err(common::entry_insert_err)?;
        let rev = Self::note(&mut tx, &[Change::put(ChangeKind::Entry, &row.id)])
            .await?
            .ok_or_else(|| {
                StoreError::Database("the entry's change-feed row was not written".into())
            })?;
        tx.commit().await.map_err(db_err)?;
        Ok(rev)
    }

    async fn entry_insert_many(&self, rows: &[EntryRow]) -> Result<Vec<EntryInsert>> {
        // One transaction: each row is checked against what is stored and against the batch's
        // earlier rows, and a conflict anywhere rolls all of it back.
        let (_gate, mut conn) = self.unsynced().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let out = common::plan_entry_batch_on!(QueryBuilder<'_, Sqlite>, tx, rows);
        for chunk in common::planned_new(rows, &out).chunks(INSERT_CHUNK_ROWS) {
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO registration_entries ({}) ",
                common::ENTRY_COLUMNS
            ));
            qb.push_values(chunk, |mut b, row| {
                b.push_bind(row.id.as_str())
                    .push_bind(row.spiffe_id.as_str())
                    .push_bind(row.selectors.as_str())
                    .push_bind(row.x509_ttl_secs)
                    .push_bind(row.jwt_ttl_secs)
                    .push_bind(row.agent_kind.as_deref())
                    .push_bind(row.owner.as_deref())
                    .push_bind(row.description.as_deref())
                    .push_bind(row.created_unix_ms);
            });
            qb.build()
                .execute(&mut *tx)
                .await
                .map_err(common::entry_insert_err)?;
        }
        let changes: Vec<Change> = out
            .iter()
            .filter_map(|o| match o {
                EntryInsert::Created(id) => Some(Change::put(ChangeKind::Entry, id)),
                EntryInsert::Existing(_) => None,
            })
            .collect();
        Self::note(&mut tx, &changes).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn entry_get(&self, id: &str) -> Result<Option<EntryRow>> {
        let raw: Option<RawEntryRow> = sqlx::query_as(&format!(
            "SELECT {} FROM registration_entries WHERE id = ?1",
            common::ENTRY_COLUMNS
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(raw.map(common::entry_row))
    }

    async fn entry_get_many(&self, ids: &[String]) -> Result<Vec<EntryRow>> {
        let raws = common::fetch_in!(
            QueryBuilder<'_, Sqlite>,
            &self.pool,
            RawEntryRow,
            format!(
                "SELECT {} FROM registration_entries WHERE id",
                common::ENTRY_COLUMNS
            ),
            ids
        );
        Ok(raws.into_iter().map(common::entry_row).collect())
    }

    async fn entry_list(&self) -> Result<Vec<EntryRow>> {
        let raws: Vec<RawEntryRow> = sqlx::query_as(&format!(
            "SELECT {} FROM registration_entries ORDER BY created_unix_ms, id",
            common::ENTRY_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(raws.into_iter().map(common::entry_row).collect())
    }

    async fn entry_delete(&self, id: &str) -> Result<bool> {
        let (_gate, mut tx) = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM registration_entries WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            Self::note(&mut tx, &[Change::delete(ChangeKind::Entry, id)]).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(deleted)
    }

    async fn signing_key_insert(&self, row: &SigningKeyRow) -> Result<bool> {
        if row.state != "active" && row.state != "prepared" {
            return Err(StoreError::Conflict(format!(
                "a new signing key is active or prepared, not `{}`",
                row.state
            )));
        }
        // The partial unique indexes keep one active and one prepared key per kind; a racing
        // second insert of either is skipped, not an error.
        let (_gate, mut tx) = self.begin_write().await?;
        let done = sqlx::query(&format!(
            "INSERT INTO signing_keys ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT DO NOTHING",
            common::SIGNING_KEY_COLUMNS
        ))
        .bind(&row.id)
        .bind(&row.kind)
        .bind(&row.state)
        .bind(&row.cert_der)
        .bind(&row.key_sealed)
        .bind(row.created_unix_ms)
        .bind(row.not_after_unix_ms)
        .bind(row.activated_unix_ms)
        .bind(row.retired_unix_ms)
        .bind(row.revoked_unix_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() > 0 {
            Self::note(&mut tx, &[Change::put(ChangeKind::Key, &row.id)]).await?;
            tx.commit().await.map_err(db_err)?;
            return Ok(true);
        }
        drop(tx);
        // Nothing inserted: either the state slot is taken or the id is (report the latter).
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM signing_keys WHERE id = ?1")
            .bind(&row.id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match taken {
            Some(_) => Err(StoreError::Conflict(format!(
                "a signing key with id `{}` exists",
                row.id
            ))),
            None => Ok(false),
        }
    }

    async fn signing_key_activate(
        &self,
        kind: &str,
        id: &str,
        at_unix_ms: i64,
    ) -> Result<KeyActivate> {
        let (_gate, mut tx) = self.begin_write().await?;
        let prepared: Option<String> = sqlx::query_scalar(
            "SELECT id FROM signing_keys WHERE id = ?1 AND kind = ?2 AND state = 'prepared'",
        )
        .bind(id)
        .bind(kind)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        if prepared.is_none() {
            tx.rollback().await.map_err(db_err)?;
            return Ok(KeyActivate::NotPrepared);
        }
        let retired: Option<String> =
            sqlx::query_scalar("SELECT id FROM signing_keys WHERE kind = ?1 AND state = 'active'")
                .bind(kind)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        sqlx::query(
            "UPDATE signing_keys SET state = 'retired', retired_unix_ms = ?1 \
             WHERE kind = ?2 AND state = 'active'",
        )
        .bind(at_unix_ms)
        .bind(kind)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "UPDATE signing_keys SET state = 'active', activated_unix_ms = ?1 WHERE id = ?2",
        )
        .bind(at_unix_ms)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut changed = vec![Change::put(ChangeKind::Key, id)];
        changed.extend(retired.iter().map(|r| Change::put(ChangeKind::Key, r)));
        Self::note(&mut tx, &changed).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(KeyActivate::Activated { retired })
    }

    async fn signing_keys(&self, kind: &str) -> Result<Vec<SigningKeyRow>> {
        let raws: Vec<common::RawSigningKeyRow> = sqlx::query_as(&format!(
            "SELECT {} FROM signing_keys WHERE kind = ?1 ORDER BY created_unix_ms, id",
            common::SIGNING_KEY_COLUMNS
        ))
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(raws.into_iter().map(common::signing_key_row).collect())
    }

    async fn join_token_insert(&self, row: &JoinTokenRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO join_tokens (token_hash, spiffe_id, created_unix_ms, expires_unix_ms, \
             used_unix_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(row.token_hash.as_slice())
        .bind(&row.spiffe_id)
        .bind(row.created_unix_ms)
        .bind(row.expires_unix_ms)
        .bind(row.used_unix_ms)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn join_token_consume(
        &self,
        token_hash: &[u8; 32],
        now_unix_ms: i64,
    ) -> Result<JoinConsume> {
        // Read and mark in one serialized transaction: one use wins.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let raw: Option<common::RawJoinTokenRow> = sqlx::query_as(
            "SELECT token_hash, spiffe_id, created_unix_ms, expires_unix_ms, used_unix_ms \
             FROM join_tokens WHERE token_hash = ?1",
        )
        .bind(token_hash.as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let verdict =
            common::join_verdict(raw.map(common::join_token_row).transpose()?, now_unix_ms);
        if let JoinConsume::Consumed(_) = verdict {
            sqlx::query("UPDATE join_tokens SET used_unix_ms = ?1 WHERE token_hash = ?2")
                .bind(now_unix_ms)
                .bind(token_hash.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(verdict)
    }

    async fn deny_insert(&self, row: &DenyRow) -> Result<bool> {
        let (_gate, mut tx) = self.begin_write().await?;
        let done = sqlx::query(
            "INSERT INTO denylist (kind, value, reason, created_unix_ms) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (kind, value) DO NOTHING",
        )
        .bind(&row.kind)
        .bind(&row.value)
        .bind(&row.reason)
        .bind(row.created_unix_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let added = done.rows_affected() > 0;
        if added {
            let key = Change::pair(&row.kind, &row.value);
            Self::note(&mut tx, &[Change::put(ChangeKind::Deny, key)]).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(added)
    }

    async fn deny_delete(&self, kind: &str, value: &str) -> Result<bool> {
        let (_gate, mut tx) = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM denylist WHERE kind = ?1 AND value = ?2")
            .bind(kind)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let removed = done.rows_affected() > 0;
        if removed {
            let key = Change::pair(kind, value);
            Self::note(&mut tx, &[Change::delete(ChangeKind::Deny, key)]).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(removed)
    }

    async fn deny_list(&self) -> Result<Vec<DenyRow>> {
        let raws: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT kind, value, reason, created_unix_ms FROM denylist \
             ORDER BY created_unix_ms, kind, value",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(raws
            .into_iter()
            .map(|(kind, value, reason, created_unix_ms)| DenyRow {
                kind,
                value,
                reason,
                created_unix_ms,
            })
            .collect())
    }

    async fn signing_key_revoke(&self, id: &str, at_unix_ms: i64) -> Result<bool> {
        let (_gate, mut tx) = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE signing_keys SET state = 'retired', \
             retired_unix_ms = COALESCE(retired_unix_ms, ?1), revoked_unix_ms = ?1 \
             WHERE id = ?2 AND state IN ('prepared', 'retired') AND revoked_unix_ms IS NULL",
        )
        .bind(at_unix_ms)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let revoked = done.rows_affected() > 0;
        if revoked {
            Self::note(&mut tx, &[Change::put(ChangeKind::Key, id)]).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(revoked)
    }

    async fn policy_append(
        &self,
        row: &PolicyVersionRow,
        expected_latest: Option<i64>,
    ) -> Result<i64> {
        let (_gate, mut tx) = self.begin_write().await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM policy_versions WHERE package = ?1")
                .bind(&row.package)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
        let latest = latest.unwrap_or(0);
        if let Some(expected) = expected_latest {
            if expected != latest {
                tx.rollback().await.map_err(db_err)?;
                return Err(StoreError::Conflict(format!(
                    "package `{}` is at version {latest}, not {expected}",
                    row.package
                )));
            }
        }
        let version = latest + 1;
        sqlx::query(&format!(
            "INSERT INTO policy_versions ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            common::POLICY_COLUMNS
        ))
        .bind(&row.package)
        .bind(version)
        .bind(&row.language)
        .bind(&row.entrypoint)
        .bind(&row.files_json)
        .bind(&row.content_sha256)
        .bind(row.created_unix_ms)
        .bind(&row.created_by)
        .bind(&row.note)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        Self::note(&mut tx, &[Change::put(ChangeKind::Policy, &row.package)]).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(version)
    }

    async fn policy_versions(&self, package: &str) -> Result<Vec<PolicyVersionRow>> {
        let raws: Vec<common::RawPolicyRow> = sqlx::query_as(&format!(
            "SELECT {} FROM policy_versions WHERE package = ?1 ORDER BY version",
            common::POLICY_COLUMNS
        ))
        .bind(package)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(raws.into_iter().map(common::policy_row).collect())
    }

    async fn policy_latest(&self) -> Result<Vec<PolicyVersionRow>> {
        let raws: Vec<common::RawPolicyRow> = sqlx::query_as(&format!(
            "SELECT {} FROM policy_versions p WHERE version = \
             (SELECT MAX(version) FROM policy_versions q WHERE q.package = p.package) \
             ORDER BY package",
            common::POLICY_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(raws.into_iter().map(common::policy_row).collect())
    }

    async fn federation_insert(&self, row: &FederationRow) -> Result<()> {
        let (_gate, mut tx) = self.begin_write().await?;
        let done = sqlx::query(&format!(
            "INSERT INTO federations ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT DO NOTHING",
            common::FEDERATION_COLUMNS
        ))
        .bind(&row.trust_domain)
        .bind(&row.bundle_url)
        .bind(&row.endpoint_ca_pem)
        .bind(&row.bundle_json)
        .bind(row.created_unix_ms)
        .bind(row.refreshed_unix_ms)
        .bind(&row.last_error)
        .bind(&row.limits_json)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "trust domain `{}` is already federated",
                row.trust_domain
            )));
        }
        Self::note(&mut tx, &[federation_change(&row.trust_domain, false)]).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn federation_refreshed(
        &self,
        trust_domain: &str,
        bundle_json: Option<&str>,
        at_unix_ms: i64,
        last_error: Option<&str>,
    ) -> Result<bool> {
        let (_gate, mut tx) = self.begin_write().await?;
        let done = match bundle_json {
            Some(json) => sqlx::query(
                "UPDATE federations SET bundle_json = ?1, refreshed_unix_ms = ?2, \
                 last_error = ?3 WHERE trust_domain = ?4",
            )
            .bind(json)
            .bind(at_unix_ms)
            .bind(last_error)
            .bind(trust_domain),
            None => sqlx::query("UPDATE federations SET last_error = ?1 WHERE trust_domain = ?2")
                .bind(last_error)
                .bind(trust_domain),
        }
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let found = done.rows_affected() > 0;
        if found && bundle_json.is_some() {
            Self::note(&mut tx, &[federation_change(trust_domain, false)]).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(found)
    }

    async fn federation_set_limits(&self, trust_domain: &str, limits_json: &str) -> Result<bool> {
        let (_gate, mut tx) = self.begin_write().await?;
        let done = sqlx::query("UPDATE federations SET limits_json = ?1 WHERE trust_domain = ?2")
            .bind(limits_json)
            .bind(trust_domain)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let found = done.rows_affected() > 0;
        if found {
            Self::note(&mut tx, &[federation_change(trust_domain, false)]).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(found)
    }

    async fn federation_list(&self) -> Result<Vec<FederationRow>> {
        let raws: Vec<common::RawFederationRow> = sqlx::query_as(&format!(
            "SELECT {} FROM federations ORDER BY trust_domain",
            common::FEDERATION_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(raws.into_iter().map(common::federation_row).collect())
    }

    async fn federation_delete(&self, trust_domain: &str) -> Result<bool> {
        let (_gate, mut tx) = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM federations WHERE trust_domain = ?1")
            .bind(trust_domain)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let found = done.rows_affected() > 0;
        if found {
            Self::note(&mut tx, &[federation_change(trust_domain, true)]).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(found)
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn meta_set_if_absent(&self, key: &str, value: &str) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err)?
        .rows_affected();
        Ok(inserted == 1)
    }
}

/// Inserts one registration entry through `executor` (the pool, or a batch's transaction).
async fn insert_entry<'e, E>(executor: E, row: &EntryRow) -> std::result::Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let sql = format!(
        "INSERT INTO registration_entries ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        common::ENTRY_COLUMNS
    );
    let query = sqlx::query(&sql);
    common::bind_entry!(query, row).execute(executor).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new database and its log are the owner's alone, whatever the umask; an existing
    /// file keeps the mode the operator gave it.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_is_private_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.ledger_append(0, &rows(0, 1, 10)).await.unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("w.db-wal")), 0o600);
        drop(store);

        let shared = dir.path().join("shared.db");
        std::fs::write(&shared, b"").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        let store = SqliteStore::open(&shared).await.unwrap();
        assert!(store.ledger_leaf_hashes(0, 10).await.unwrap().is_empty());
        assert_eq!(mode(&shared), 0o640);
    }

    /// Registrations commit without their own sync, on a connection that goes back to the
    /// pool with `synchronous = FULL` again, whether the write succeeded or failed.
    #[tokio::test]
    async fn registrations_leave_every_connection_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("r.db")).await.unwrap();
        let row = |id: &str, uid: u32| EntryRow {
            id: id.into(),
            spiffe_id: format!("spiffe://t/{id}"),
            selectors: format!("unix:uid:{uid}"),
            x509_ttl_secs: None,
            jwt_ttl_secs: None,
            agent_kind: None,
            owner: None,
            description: None,
            created_unix_ms: 1,
        };
        store.entry_insert(&row("a", 1)).await.unwrap();
        assert!(store.entry_insert(&row("a", 2)).await.is_err(), "id taken");
        store
            .entry_insert_many(&[row("b", 3), row("c", 4)])
            .await
            .unwrap();
        assert!(store.entry_insert_many(&[row("a", 5)]).await.is_err());
        assert_eq!(store.entry_list().await.unwrap().len(), 3);
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut conn = store.pool.acquire().await.unwrap();
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(synchronous, 2, "synchronous = FULL");
            held.push(conn);
        }
    }

    #[tokio::test]
    async fn connections_use_durable_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("p.db")).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(synchronous, 2, "synchronous = FULL");
        assert_eq!(foreign_keys, 1);
        assert_eq!(busy, 5_000);
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(autocheckpoint, 0, "only the checkpoint task checkpoints");
        drop(conn);

        // The appender alone leaves the fsync of its commits to `ledger_sync`.
        let mut appender = store.appender.lock().await;
        let appender = appender.as_mut().unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *appender)
            .await
            .unwrap();
        assert_eq!(
            synchronous, 1,
            "the appender commits with synchronous = NORMAL"
        );
        assert_eq!(
            *store.wal_file,
            std::fs::canonicalize(dir.path()).unwrap().join("p.db-wal")
        );
        assert!(store.wal_file.exists());
    }

    #[tokio::test]
    async fn a_log_that_cannot_be_synced_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        store.ledger_append(0, &rows(0, 2, 100)).await.unwrap();
        std::fs::remove_file(&*store.wal_file).unwrap();
        store
            .ledger_append_unsynced(2, &rows(2, 1, 100), &[])
            .await
            .unwrap();
        let err = store.ledger_sync().await.unwrap_err().to_string();
        assert!(
            err.contains("syncing the sqlite write-ahead log") && err.contains("s.db-wal"),
            "{err}"
        );
        let err = store.ledger_append(3, &rows(3, 1, 100)).await.unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err}");
    }

    #[tokio::test]
    async fn the_log_is_found_through_a_symbolic_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let store = SqliteStore::open(&dir.path().join("link").join("l.db"))
            .await
            .unwrap();
        assert!(
            store
                .wal_file
                .starts_with(std::fs::canonicalize(&real).unwrap())
        );
        store.ledger_append(0, &rows(0, 3, 100)).await.unwrap();
        assert_eq!(store.ledger_size().await.unwrap(), 3);
    }

    fn rows(from: u64, n: u64, leaf_bytes: usize) -> Vec<LedgerRow> {
        (from..from + n)
            .map(|seq| LedgerRow {
                seq,
                leaf_hash: [7; 32],
                leaf: vec![b'x'; leaf_bytes],
                time_unix_ms: 0,
                actor: "a".into(),
                action: "b".into(),
            })
            .collect()
    }

    /// Frames in the WAL, and how many are copied into the database file.
    async fn wal_frames(store: &SqliteStore) -> (i64, i64) {
        let mut conn = store.pool.acquire().await.unwrap();
        let (_, log, copied) = sqlite_wal::passive(&mut conn).await.unwrap();
        (log, copied)
    }

    #[tokio::test]
    async fn commits_do_not_checkpoint_and_a_round_lets_the_log_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db")).await.unwrap();
        // Stop the task so that only this test checkpoints.
        store.wal.stop();
        let task = store.wal_task.lock().unwrap().take().unwrap();
        task.await.unwrap();
        // 2,000 pages' worth of entries, past SQLite's own 1,000-page checkpoint point.
        for batch in 0..20 {
            store
                .ledger_append(batch * 100, &rows(batch * 100, 100, 4000))
                .await
                .unwrap();
        }
        let mut conn = sqlx::Connection::connect_with(
            &SqliteConnectOptions::new().filename(dir.path().join("w.db")),
        )
        .await
        .unwrap();
        let wal = std::fs::metadata(dir.path().join("w.db-wal"))
            .unwrap()
            .len();
        assert!(
            wal > 8_000_000,
            "the commits left every frame in the log: {wal} bytes"
        );
        let left = sqlite_wal::round(&mut conn, &store.write_gate)
            .await
            .unwrap();
        assert_eq!(left, 0, "a round copies the whole log");
        // The next commit writes from the start of the log again.
        store
            .ledger_append(2_000, &rows(2_000, 1, 100))
            .await
            .unwrap();
        let (log, _) = wal_frames(&store).await;
        assert!(log < 100, "the log started over: {log} frames");
        store.close().await;
    }

    #[tokio::test]
    async fn the_task_keeps_the_log_bounded_under_steady_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.db");
        let store = SqliteStore::open(&path).await.unwrap();
        // 48 MB appended back to back, about a hundred rounds' worth.
        let (batches, per_batch, leaf) = (120u64, 100u64, 4000usize);
        for batch in 0..batches {
            let from = batch * per_batch;
            store
                .ledger_append(from, &rows(from, per_batch, leaf))
                .await
                .unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("b.db-wal"))
            .unwrap()
            .len();
        let appended = batches * per_batch * leaf as u64;
        assert!(
            wal < appended / 2,
            "the WAL file grew to {wal} bytes for {appended} bytes appended: the log never started over"
        );
        store.close().await;
    }
}
