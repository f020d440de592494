//! PostgreSQL backend (also meant for wire-compatible engines such as CockroachDB and
//! YugabyteDB).

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    Connection, PgPool, Postgres, QueryBuilder,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

use crate::{
    ApiTokenRow, Backend, ChangeKind, CheckpointRow, DenyRow, EntryInsert, EntryRow, FederationRow,
    JoinConsume, JoinTokenRow, KeyActivate, LedgerRow, PolicyVersionRow, Result, SigningKeyRow,
    Store, StoreError, TokenRevoke,
    changes::{Change, ChangeOp, federation_change},
    common::{
        self, INSERT_CHUNK_ROWS, RawCheckpointRow, RawEntryRow, RawLedgerRow, RawTokenRow, db_err,
        to_i64,
    },
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections in the pool.
const MAX_CONNECTIONS: u32 = 10;

/// How long to wait for a pooled connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Transaction-scoped advisory lock that serializes ledger appends ("WARDEN\0\x01").
const LEDGER_APPEND_LOCK: i64 = 0x5741_5244_454E_0001;

/// Advisory lock key serializing token revocations (the last-admin check).
const TOKENS_LOCK_KEY: i64 = 0x5741_5244_454E_0002;
/// Advisory lock serializing signing-key rotation.
const KEYS_LOCK_KEY: i64 = 0x5741_5244_454E_0003;
/// Advisory lock serializing policy version numbering.
const POLICY_LOCK_KEY: i64 = 0x5741_5244_454E_0004;

/// Advisory lock taken by every transaction that writes to the change feed, so that
/// revisions commit in order.
const CHANGES_LOCK_KEY: i64 = 0x5741_5244_454E_0005;

/// Longest schema name PostgreSQL accepts (NAMEDATALEN - 1).
const MAX_SCHEMA_LEN: usize = 63;

/// A store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`), using the server's default `search_path`, and
    /// applies pending migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        Self::connect_inner(url, None).await
    }

    /// Like [`PostgresStore::connect`], but keeps every table in `schema`: the schema is
    /// created if missing and every pooled connection gets `search_path = schema`.
    ///
    /// `schema` must match `[a-z_][a-z0-9_]*` and be at most 63 bytes long. Useful for running
    /// several independent stores (e.g. tests) in one database.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<PostgresStore> {
        validate_schema(schema)?;
        Self::connect_inner(url, Some(schema)).await
    }

    async fn connect_inner(url: &str, schema: Option<&str>) -> Result<PostgresStore> {
        let options = parse_url(url)?;
        // One direct connection first: it fails fast with the real cause (the pool would
        // retry a refused connection until its acquire timeout and report only that).
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|err| connect_err(url, &err))?;
        if let Some(schema) = schema {
            // The name is validated by the caller, so quoting it verbatim is safe.
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut conn)
                .await
                .map_err(|err| StoreError::Database(redact(url, &db_err(err).to_string())))?;
        }
        // Best effort: a failed goodbye to the server changes nothing.
        let _ = conn.close().await;

        let options = match schema {
            Some(schema) => options.options([("search_path", schema)]),
            None => options,
        };
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|err| connect_err(url, &err))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|err| StoreError::Migration(redact(url, &err.to_string())))?;
        tracing::debug!("postgres store connected");
        Ok(PostgresStore { pool })
    }

    /// Drops `schema` and everything in it (for benchmarks and tests that made their own).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
        validate_schema(schema)?;
        let options = parse_url(url)?;
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|err| connect_err(url, &err))?;
        // The name is validated above, so quoting it verbatim is safe.
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await
            .map_err(|err| StoreError::Database(redact(url, &db_err(err).to_string())))?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Closes every pooled connection, waiting for them to be returned. Dropping the store
    /// also closes them, in the background.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn parse_url(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|err| {
        StoreError::Database(format!(
            "invalid postgres url {}: {}",
            crate::redact_password(url),
            redact(url, &err.to_string())
        ))
    })
}

fn connect_err(url: &str, err: &sqlx::Error) -> StoreError {
    StoreError::Database(format!(
        "cannot connect to {}: {}",
        crate::redact_password(url),
        redact(url, &err.to_string())
    ))
}

fn validate_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= MAX_SCHEMA_LEN {
        Ok(())
    } else {
        Err(StoreError::Database(format!(
            "invalid schema name `{schema}`: expected [a-z_][a-z0-9_]* of at most \
             {MAX_SCHEMA_LEN} characters"
        )))
    }
}

/// The password in a `postgres://user:password@host/…` url, raw as written.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then_some(password)
}

/// Percent-decodes `s` (lossy; only used to find the password in messages).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => std::str::from_utf8(&[*hi, *lo])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
            _ => None,
        };
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.extend(bytes.get(i).copied());
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the url's password (raw or percent-decoded) from an error message.
fn redact(url: &str, message: &str) -> String {
    let Some(password) = url_password(url) else {
        return message.to_owned();
    };
    let mut out = message.replace(url, &crate::redact_password(url));
    for secret in [password.to_owned(), percent_decode(password)] {
        if !secret.is_empty() {
            out = out.replace(&secret, "***");
        }
    }
    out
}

crate::broker::broker_methods!(PostgresStore, sqlx::Postgres, |self| None::<
    &tokio::sync::Mutex<()>,
>);
crate::tasks::task_methods!(PostgresStore);
crate::changes::change_methods!(PostgresStore);

/// A write transaction (PostgreSQL needs no gate: see [`SqliteStore`](crate::SqliteStore)).
type WriteTx<'a> = (
    Option<tokio::sync::MutexGuard<'a, ()>>,
    sqlx::Transaction<'a, Postgres>,
);

impl PostgresStore {
    /// A write transaction for a change the feed records.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx<'_>> {
        Ok((None, self.pool.begin().await.map_err(db_err)?))
    }

    /// Records `changes` in the feed, in the caller's transaction. Takes the feed's advisory
    /// lock, held until the transaction ends, so that revisions become visible in order;
    /// callers record their changes last, just before they commit.
    pub(crate) async fn note(
        conn: &mut PgConnection,
        changes: &[crate::changes::Change],
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        // One statement (a column per array), which takes the lock first: one round trip
        // under the lock, which every writer of cached state waits for.
        let column = |f: fn(&crate::changes::Change) -> &str| -> Vec<&str> {
            changes.iter().map(f).collect()
        };
        sqlx::query(
            "WITH feed_lock AS (SELECT pg_advisory_xact_lock($1)) \
             INSERT INTO changes (kind, key, op, at_ms) \
             SELECT v.kind, v.key, v.op, $5 FROM feed_lock, \
             UNNEST($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS v (kind, key, op, n) \
             ORDER BY v.n",
        )
        .bind(CHANGES_LOCK_KEY)
        .bind(column(|c| c.kind.as_str()))
        .bind(column(|c| c.key.as_str()))
        .bind(column(|c| c.op.as_str()))
        .bind(crate::changes::now_ms())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}
crate::rebac::rebac_methods!(PostgresStore, |self| self.pool.begin());

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
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
        if rows.is_empty() {
            return Ok(());
        }
        let expected = common::check_batch(expected_size, rows)?;

        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Serialize appenders. The size query must be a separate statement so that, under
        // READ COMMITTED, its snapshot is taken after the lock is held.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LEDGER_APPEND_LOCK)
            .execute(&mut *tx)
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
            let mut qb = QueryBuilder::<Postgres>::new(
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
        crate::broker::insert_leases!(QueryBuilder<'_, Postgres>, tx, leases);
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn ledger_entries(&self, from: u64, limit: u32) -> Result<Vec<LedgerRow>> {
        let (start, end) = common::seq_range(from, limit)?;
        let raws: Vec<RawLedgerRow> = sqlx::query_as(
            "SELECT seq, leaf_hash, leaf, time_unix_ms, actor, action FROM ledger_entries \
             WHERE seq >= $1 AND seq < $2 ORDER BY seq",
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
            "SELECT leaf_hash FROM ledger_entries WHERE seq >= $1 AND seq < $2 ORDER BY seq",
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
             VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size) DO NOTHING",
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
            sqlx::query_scalar("SELECT root FROM ledger_checkpoints WHERE tree_size = $1")
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
             VALUES ($1, $2, $3, $4, $5, $6)",
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
             FROM api_tokens WHERE token_hash = $1",
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
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(TOKENS_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM api_tokens WHERE id = $1 AND revoked_unix_ms IS NULL",
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
                "SELECT COUNT(*) FROM api_tokens WHERE role = $1 AND revoked_unix_ms IS NULL",
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
            "UPDATE api_tokens SET revoked_unix_ms = $1 WHERE id = $2 AND revoked_unix_ms IS NULL",
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
        // One statement, so one round trip: the entry and its feed row commit together, and
        // the feed's lock (taken before the feed row's revision is drawn) is held only for
        // the statement's own commit.
        let sql = format!(
            "WITH feed_lock AS (SELECT pg_advisory_xact_lock($10)), \
                  entry AS (INSERT INTO registration_entries ({}) \
                            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id) \
             INSERT INTO changes (kind, key, op, at_ms) \
             SELECT $11, entry.id, $12, $13 FROM feed_lock, entry RETURNING rev",
            common::ENTRY_COLUMNS
        );
        let query = sqlx::query_as(&sql);
        common::bind_entry!(query, row)
            .bind(CHANGES_LOCK_KEY)
            .bind(ChangeKind::Entry.as_str())
            .bind(ChangeOp::Put.as_str())
            .bind(crate::changes::now_ms())
            .fetch_one(&self.pool)
            .await
            .map_err(common::entry_insert_err)
            .map(|rev: (i64,)| rev.0)
    }

    async fn entry_insert_many(&self, rows: &[EntryRow]) -> Result<Vec<EntryInsert>> {
        // One transaction: each row is checked against what is stored and against the batch's
        // earlier rows, and a conflict anywhere rolls all of it back.
        let (_gate, mut tx) = self.begin_write().await?;
        let out = common::plan_entry_batch_on!(QueryBuilder<'_, Postgres>, tx, rows);
        let new = common::planned_new(rows, &out);
        if !new.is_empty() {
            // One statement for the whole batch: a column per array.
            let column = |f: fn(&EntryRow) -> Option<String>| -> Vec<Option<String>> {
                new.iter().map(|r| f(r)).collect()
            };
            let number = |f: fn(&EntryRow) -> Option<i64>| -> Vec<Option<i64>> {
                new.iter().map(|r| f(r)).collect()
            };
            sqlx::query(&format!(
                "INSERT INTO registration_entries ({}) SELECT * FROM UNNEST(\
                 $1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], \
                 $7::text[], $8::text[], $9::int8[])",
                common::ENTRY_COLUMNS
            ))
            .bind(column(|r| Some(r.id.clone())))
            .bind(column(|r| Some(r.spiffe_id.clone())))
            .bind(column(|r| Some(r.selectors.clone())))
            .bind(number(|r| r.x509_ttl_secs))
            .bind(number(|r| r.jwt_ttl_secs))
            .bind(column(|r| r.agent_kind.clone()))
            .bind(column(|r| r.owner.clone()))
            .bind(column(|r| r.description.clone()))
            .bind(number(|r| Some(r.created_unix_ms)))
            .execute(&mut *tx)
            .await
            .map_err(common::entry_insert_err)?;
        }
        let changes: Vec<Change> = out
            .iter()
            .filter_map(|o| match o {
                EntryInsert::Created(id) => Some(Change::put(ChangeKind::Entry, id)),
                _ => None,
            })
            .collect();
        Self::note(&mut tx, &changes).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn entry_get(&self, id: &str) -> Result<Option<EntryRow>> {
        let raw: Option<RawEntryRow> = sqlx::query_as(&format!(
            "SELECT {} FROM registration_entries WHERE id = $1",
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
            QueryBuilder<'_, Postgres>,
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
        let done = sqlx::query("DELETE FROM registration_entries WHERE id = $1")
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
            "INSERT INTO signing_keys ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
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
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM signing_keys WHERE id = $1")
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
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(KEYS_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let prepared: Option<String> = sqlx::query_scalar(
            "SELECT id FROM signing_keys WHERE id = $1 AND kind = $2 AND state = 'prepared'",
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
            sqlx::query_scalar("SELECT id FROM signing_keys WHERE kind = $1 AND state = 'active'")
                .bind(kind)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        sqlx::query(
            "UPDATE signing_keys SET state = 'retired', retired_unix_ms = $1 \
             WHERE kind = $2 AND state = 'active'",
        )
        .bind(at_unix_ms)
        .bind(kind)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "UPDATE signing_keys SET state = 'active', activated_unix_ms = $1 WHERE id = $2",
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
            "SELECT {} FROM signing_keys WHERE kind = $1 ORDER BY created_unix_ms, id",
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
             used_unix_ms) VALUES ($1, $2, $3, $4, $5)",
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
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let raw: Option<common::RawJoinTokenRow> = sqlx::query_as(
            "SELECT token_hash, spiffe_id, created_unix_ms, expires_unix_ms, used_unix_ms \
             FROM join_tokens WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(token_hash.as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let verdict =
            common::join_verdict(raw.map(common::join_token_row).transpose()?, now_unix_ms);
        if let JoinConsume::Consumed(_) = verdict {
            sqlx::query("UPDATE join_tokens SET used_unix_ms = $1 WHERE token_hash = $2")
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
             VALUES ($1, $2, $3, $4) ON CONFLICT (kind, value) DO NOTHING",
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
        let done = sqlx::query("DELETE FROM denylist WHERE kind = $1 AND value = $2")
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
             retired_unix_ms = COALESCE(retired_unix_ms, $1), revoked_unix_ms = $1 \
             WHERE id = $2 AND state IN ('prepared', 'retired') AND revoked_unix_ms IS NULL",
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
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(POLICY_LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM policy_versions WHERE package = $1")
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
            "INSERT INTO policy_versions ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
            "SELECT {} FROM policy_versions WHERE package = $1 ORDER BY version",
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
            "INSERT INTO federations ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
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
                "UPDATE federations SET bundle_json = $1, refreshed_unix_ms = $2, \
                 last_error = $3 WHERE trust_domain = $4",
            )
            .bind(json)
            .bind(at_unix_ms)
            .bind(last_error)
            .bind(trust_domain),
            None => sqlx::query("UPDATE federations SET last_error = $1 WHERE trust_domain = $2")
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
        let done = sqlx::query("UPDATE federations SET limits_json = $1 WHERE trust_domain = $2")
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
        let done = sqlx::query("DELETE FROM federations WHERE trust_domain = $1")
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
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)
    }

    async fn meta_set_if_absent(&self, key: &str, value: &str) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_validated() {
        for ok in ["a", "_", "warden", "t_0123abcd", &"x".repeat(63)] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "0abc",
            "Abc",
            "a-b",
            "a b",
            "a\"b",
            "ä",
            &"x".repeat(64),
        ] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_redacted_from_messages() {
        let url = "postgres://alice:p%40ss@db:5432/w";
        assert_eq!(url_password(url), Some("p%40ss"));
        let msg = redact(
            url,
            "failed for postgres://alice:p%40ss@db:5432/w: bad p@ss",
        );
        assert!(!msg.contains("p%40ss") && !msg.contains("p@ss"), "{msg}");
        assert_eq!(url_password("postgres://alice@db/w"), None);
        assert_eq!(url_password("postgres://db/w?user=a"), None);
        assert_eq!(redact("postgres://db/w", "hello"), "hello");
    }

    #[tokio::test]
    async fn bad_url_error_has_no_password() {
        let err = PostgresStore::connect("postgres://alice:hunter2@db:notaport/w")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.is_empty());
        assert!(!err.contains("hunter2"), "{err}");
    }
}
