//! The credential broker's rows: leases, holds, dynamic-database connections and role
//! templates, and sealed secrets. One SQL text for both backends, as in `rebac.rs`: every
//! statement numbers its parameters `$1`, `$2`, … in order of first appearance.

/// One lease: a credential handed out, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// `<engine>/<name>/lse_<32 hex>`: prefixes group leases (`postgres/db_read_summary/`).
    pub id: String,
    /// The SPIFFE ID of the agent that holds the credential (the actor, when delegated).
    pub agent: String,
    /// On whose behalf: the start of the delegation chain (the agent itself otherwise).
    pub subject: String,
    /// The task it was issued for.
    pub task: Option<String>,
    /// `oauth` or `postgres`.
    pub engine: String,
    /// What it grants, as the engine describes it (JSON).
    pub scope: String,
    /// The lease it was delegated from.
    pub parent: Option<String>,
    /// What the engine knows it by: a token's `jti`, a database role's name.
    pub handle: String,
    /// Issued, ms since the Unix epoch.
    pub issued_ms: i64,
    /// Expiry, ms.
    pub expires_ms: i64,
    /// The furthest renewal may push the expiry, ms.
    pub max_expires_ms: i64,
    /// `active`, `revoking`, `revoked` or `expired`.
    pub state: String,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// When it was revoked (or expired), ms.
    pub revoked_ms: Option<i64>,
    /// Failed upstream revocation attempts.
    pub attempts: i64,
    /// When the sweeper next tries the upstream revocation, ms.
    pub next_attempt_ms: Option<i64>,
    /// The last upstream revocation error.
    pub last_error: Option<String>,
    /// Whether repeated failure has been raised as an alert.
    pub alerted: bool,
}

/// Which leases a bulk revocation selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseSelector {
    /// One lease by id.
    Id(String),
    /// Every lease held by an agent (SPIFFE ID) or issued on its behalf.
    Agent(String),
    /// Every lease of a task.
    Task(String),
    /// Every lease whose id starts with this prefix.
    Prefix(String),
}

/// A filter for listing leases; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFilter {
    /// Held by, or issued on behalf of, this agent.
    pub agent: Option<String>,
    /// Of this task.
    pub task: Option<String>,
    /// Id starts with this.
    pub prefix: Option<String>,
    /// In this state.
    pub state: Option<String>,
    /// Ids after this one (paging).
    pub after: Option<String>,
    /// At most this many (capped at 1,000).
    pub limit: u32,
}

/// A hold (kill switch) on an agent, a task or a vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRow {
    /// `agent`, `task` or `vendor`.
    pub kind: String,
    /// The SPIFFE ID, task id or vendor (registration owner).
    pub value: String,
    /// Why.
    pub reason: String,
    /// When, ms.
    pub created_unix_ms: i64,
    /// Who (the ledger actor).
    pub created_by: String,
}

/// A target database of the dynamic PostgreSQL engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConnectionRow {
    /// Its name.
    pub name: String,
    /// The admin DSN, sealed under the key-encryption key.
    pub dsn_sealed: Vec<u8>,
    /// When, ms.
    pub created_unix_ms: i64,
    /// Who.
    pub created_by: String,
}

/// A role template of the dynamic PostgreSQL engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRoleRow {
    /// Its name (what agents ask for, e.g. `db_read_summary`).
    pub name: String,
    /// The connection it creates roles on.
    pub connection: String,
    /// The grants, as JSON.
    pub template: String,
    /// Lease lifetime when the request names none, seconds.
    pub default_ttl_s: i64,
    /// Longest lifetime, renewals included, seconds.
    pub max_ttl_s: i64,
    /// When, ms.
    pub created_unix_ms: i64,
    /// Who.
    pub created_by: String,
}

/// One version of a secret in custody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    /// Its name.
    pub name: String,
    /// 1, 2, … (the writer picks one past the latest; a taken number is a conflict).
    pub version: i64,
    /// The version's data key, sealed under the key-encryption key.
    pub dek_sealed: Vec<u8>,
    /// The value, sealed under the data key.
    pub value_sealed: Vec<u8>,
    /// When, ms.
    pub created_unix_ms: i64,
    /// Who.
    pub created_by: String,
}

pub(crate) const LEASE_COLUMNS: &str = "id, agent, subject, task, engine, scope, parent, handle, \
     issued_ms, expires_ms, max_expires_ms, state, revoke_reason, revoked_ms, attempts, \
     next_attempt_ms, last_error, alerted";

/// A raw lease row in [`LEASE_COLUMNS`] order, in two halves (sqlx decodes tuples of at most
/// 16 columns).
pub(crate) fn lease_from<R>(row: &R) -> Result<LeaseRow, sqlx::Error>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(LeaseRow {
        id: row.try_get("id")?,
        agent: row.try_get("agent")?,
        subject: row.try_get("subject")?,
        task: row.try_get("task")?,
        engine: row.try_get("engine")?,
        scope: row.try_get("scope")?,
        parent: row.try_get("parent")?,
        handle: row.try_get("handle")?,
        issued_ms: row.try_get("issued_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        max_expires_ms: row.try_get("max_expires_ms")?,
        state: row.try_get("state")?,
        revoke_reason: row.try_get("revoke_reason")?,
        revoked_ms: row.try_get("revoked_ms")?,
        attempts: row.try_get("attempts")?,
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        last_error: row.try_get("last_error")?,
        alerted: row.try_get::<i64, _>("alerted")? != 0,
    })
}

/// The `WHERE` clause of a selector, its one parameter being `$3` (after `$1` = now and
/// `$2` = reason in the revoke statement).
pub(crate) fn selector_sql(selector: &LeaseSelector) -> (&'static str, String) {
    match selector {
        LeaseSelector::Id(id) => ("id = $3", id.clone()),
        LeaseSelector::Agent(a) => ("(agent = $3 OR subject = $3)", a.clone()),
        LeaseSelector::Task(t) => ("task = $3", t.clone()),
        LeaseSelector::Prefix(p) => (
            "substr(id, 1, length(CAST($3 AS TEXT))) = CAST($3 AS TEXT)",
            p.clone(),
        ),
    }
}

/// Implements `BrokerStore` for a backend whose pool is `self.pool`; `$gate` is the
/// backend's in-process write gate, if it has one (see `SqliteStore`).
macro_rules! broker_methods {
    ($store:ty, $db:ty, |$this:ident| $gate:expr) => {
    #[async_trait::async_trait]
    impl crate::BrokerStore for $store {
        async fn lease_insert(&self, row: &crate::LeaseRow) -> crate::Result<()> {
            crate::BrokerStore::lease_insert_many(self, std::slice::from_ref(row)).await
        }

        async fn lease_insert_many(&$this, rows: &[crate::LeaseRow]) -> crate::Result<()> {
            if rows.is_empty() {
                return Ok(());
            }
            let _gate = match $gate {
                Some(gate) => Some(gate.lock().await),
                None => None,
            };
            let mut tx = $this.pool.begin().await.map_err(db_err)?;
            crate::broker::insert_leases!(sqlx::QueryBuilder<'_, $db>, tx, rows);
            tx.commit().await.map_err(db_err)?;
            Ok(())
        }

        async fn lease_get(&self, id: &str) -> crate::Result<Option<crate::LeaseRow>> {
            let row = sqlx::query(&format!(
                "SELECT {} FROM leases WHERE id = $1",
                crate::broker::LEASE_COLUMNS
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            row.map(|r| crate::broker::lease_from(&r)).transpose().map_err(db_err)
        }

        async fn lease_by_handle(
            &self,
            engine: &str,
            handle: &str,
        ) -> crate::Result<Option<crate::LeaseRow>> {
            let row = sqlx::query(&format!(
                "SELECT {} FROM leases WHERE engine = $1 AND handle = $2",
                crate::broker::LEASE_COLUMNS
            ))
            .bind(engine)
            .bind(handle)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            row.map(|r| crate::broker::lease_from(&r)).transpose().map_err(db_err)
        }

        async fn lease_list(&self, f: &crate::LeaseFilter) -> crate::Result<Vec<crate::LeaseRow>> {
            let rows = sqlx::query(&format!(
                "SELECT {} FROM leases WHERE ($1 IS NULL OR agent = $1 OR subject = $1) \
                 AND ($2 IS NULL OR task = $2) \
                 AND ($3 IS NULL OR substr(id, 1, length(CAST($3 AS TEXT))) = CAST($3 AS TEXT)) \
                 AND ($4 IS NULL OR state = $4) AND ($5 IS NULL OR id > $5) \
                 ORDER BY id LIMIT $6",
                crate::broker::LEASE_COLUMNS
            ))
            .bind(&f.agent)
            .bind(&f.task)
            .bind(&f.prefix)
            .bind(&f.state)
            .bind(&f.after)
            .bind(i64::from(f.limit.min(1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|r| crate::broker::lease_from(r))
                .collect::<Result<_, _>>()
                .map_err(db_err)
        }

        async fn lease_renew(
            &self,
            id: &str,
            expires_ms: i64,
            now_ms: i64,
        ) -> crate::Result<Option<crate::LeaseRow>> {
            let row = sqlx::query(&format!(
                "UPDATE leases SET expires_ms = $2 WHERE id = $1 AND state = 'active' \
                 AND expires_ms > $3 AND $2 <= max_expires_ms RETURNING {}",
                crate::broker::LEASE_COLUMNS
            ))
            .bind(id)
            .bind(expires_ms)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            row.map(|r| crate::broker::lease_from(&r)).transpose().map_err(db_err)
        }

        async fn lease_revoke(
            &self,
            selector: &crate::LeaseSelector,
            reason: &str,
            now_ms: i64,
            claim_until_ms: i64,
        ) -> crate::Result<Vec<crate::LeaseRow>> {
            let (clause, param) = crate::broker::selector_sql(selector);
            // Leases delegated from a selected lease (at any depth) go with it. Only active
            // leases are walked: an ended lease's delegates ended with it. Tokens have
            // nothing upstream to undo: revoked at once. Other engines go to `revoking` and
            // the sweeper undoes them upstream.
            let rows = sqlx::query(&format!(
                "UPDATE leases SET state = CASE engine WHEN 'oauth' THEN 'revoked' \
                 ELSE 'revoking' END, revoke_reason = $2, revoked_ms = $1, \
                 next_attempt_ms = $4 WHERE state = 'active' AND id IN (\
                 WITH RECURSIVE sel(id) AS (SELECT id FROM leases WHERE state = 'active' \
                 AND {clause} UNION SELECT l.id FROM leases l JOIN sel ON l.parent = sel.id \
                 WHERE l.state = 'active') SELECT id FROM sel) RETURNING {}",
                crate::broker::LEASE_COLUMNS
            ))
            .bind(now_ms)
            .bind(reason)
            .bind(param)
            .bind(claim_until_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|r| crate::broker::lease_from(r))
                .collect::<Result<_, _>>()
                .map_err(db_err)
        }

        async fn lease_expire_due(
            &self,
            now_ms: i64,
            limit: u32,
        ) -> crate::Result<Vec<crate::LeaseRow>> {
            let rows = sqlx::query(&format!(
                "UPDATE leases SET state = CASE engine WHEN 'oauth' THEN 'expired' \
                 ELSE 'revoking' END, revoke_reason = 'expired', revoked_ms = $1, \
                 next_attempt_ms = $1 WHERE id IN (SELECT id FROM leases \
                 WHERE state = 'active' AND expires_ms <= $1 LIMIT $2) AND state = 'active' \
                 RETURNING {}",
                crate::broker::LEASE_COLUMNS
            ))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|r| crate::broker::lease_from(r))
                .collect::<Result<_, _>>()
                .map_err(db_err)
        }

        async fn lease_claim_due(
            &self,
            now_ms: i64,
            hold_until_ms: i64,
            limit: u32,
        ) -> crate::Result<Vec<crate::LeaseRow>> {
            // Claiming pushes `next_attempt_ms` out, so another replica's sweeper skips the
            // lease while this one works on it.
            let rows = sqlx::query(&format!(
                "UPDATE leases SET next_attempt_ms = $2 WHERE id IN (SELECT id FROM leases \
                 WHERE state = 'revoking' AND next_attempt_ms <= $1 ORDER BY next_attempt_ms \
                 LIMIT $3) AND state = 'revoking' AND next_attempt_ms <= $1 RETURNING {}",
                crate::broker::LEASE_COLUMNS
            ))
            .bind(now_ms)
            .bind(hold_until_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|r| crate::broker::lease_from(r))
                .collect::<Result<_, _>>()
                .map_err(db_err)
        }

        async fn lease_revoked_upstream(&self, id: &str) -> crate::Result<bool> {
            let n = sqlx::query(
                "UPDATE leases SET state = 'revoked', next_attempt_ms = NULL, \
                 last_error = NULL WHERE id = $1 AND state = 'revoking'",
            )
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected();
            Ok(n > 0)
        }

        async fn lease_reopen(&self, id: &str, next_attempt_ms: i64, error: &str) -> crate::Result<()> {
            sqlx::query(
                "UPDATE leases SET state = 'revoking', next_attempt_ms = $2, last_error = $3 \
                 WHERE id = $1 AND state <> 'active'",
            )
            .bind(id)
            .bind(next_attempt_ms)
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }

        async fn lease_retry_later(
            &self,
            id: &str,
            next_attempt_ms: i64,
            error: &str,
            alerted: bool,
        ) -> crate::Result<()> {
            sqlx::query(
                "UPDATE leases SET attempts = attempts + 1, next_attempt_ms = $2, \
                 last_error = $3, alerted = $4 WHERE id = $1 AND state = 'revoking'",
            )
            .bind(id)
            .bind(next_attempt_ms)
            .bind(error)
            .bind(i64::from(alerted))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }

        async fn lease_purge_ended(&self, before_ms: i64, limit: u32) -> crate::Result<u64> {
            // Every ended lease has `revoked_ms` (expiry sets it too): the partial index
            // `leases_revoked` finds them.
            Ok(sqlx::query(
                "DELETE FROM leases WHERE id IN (SELECT id FROM leases \
                 WHERE revoked_ms IS NOT NULL AND revoked_ms < $1 \
                 AND state IN ('revoked', 'expired') LIMIT $2)",
            )
            .bind(before_ms)
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected())
        }

        async fn lease_revoked_since(
            &self,
            after: Option<(i64, &str)>,
            engine: &str,
            limit: u32,
        ) -> crate::Result<Vec<crate::LeaseRow>> {
            let (at, id) = after.unwrap_or((i64::MIN, ""));
            let rows = sqlx::query(&format!(
                "SELECT {} FROM leases WHERE engine = $1 AND revoked_ms IS NOT NULL \
                 AND (revoked_ms > $2 OR (revoked_ms = $2 AND id > $3)) \
                 ORDER BY revoked_ms, id LIMIT $4",
                crate::broker::LEASE_COLUMNS
            ))
            .bind(engine)
            .bind(at)
            .bind(id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            rows.iter()
                .map(|r| crate::broker::lease_from(r))
                .collect::<Result<_, _>>()
                .map_err(db_err)
        }

        async fn hold_insert(&self, row: &crate::HoldRow) -> crate::Result<bool> {
            let (_gate, mut tx) = self.begin_write().await?;
            let n = sqlx::query(
                "INSERT INTO holds (kind, value, reason, created_unix_ms, created_by) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&row.kind)
            .bind(&row.value)
            .bind(&row.reason)
            .bind(row.created_unix_ms)
            .bind(&row.created_by)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            if n > 0 {
                let key = crate::changes::Change::pair(&row.kind, &row.value);
                let change = crate::changes::Change::put(crate::ChangeKind::Hold, key);
                Self::note(&mut tx, &[change]).await?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(n > 0)
        }

        async fn hold_delete(&self, kind: &str, value: &str) -> crate::Result<bool> {
            let (_gate, mut tx) = self.begin_write().await?;
            let n = sqlx::query("DELETE FROM holds WHERE kind = $1 AND value = $2")
                .bind(kind)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            if n > 0 {
                let key = crate::changes::Change::pair(kind, value);
                let change = crate::changes::Change::delete(crate::ChangeKind::Hold, key);
                Self::note(&mut tx, &[change]).await?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(n > 0)
        }

        async fn hold_list(&self) -> crate::Result<Vec<crate::HoldRow>> {
            let raws: Vec<(String, String, String, i64, String)> = sqlx::query_as(
                "SELECT kind, value, reason, created_unix_ms, created_by FROM holds \
                 ORDER BY kind, value",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws
                .into_iter()
                .map(|(kind, value, reason, created_unix_ms, created_by)| crate::HoldRow {
                    kind,
                    value,
                    reason,
                    created_unix_ms,
                    created_by,
                })
                .collect())
        }

        async fn db_connection_put(&self, row: &crate::DbConnectionRow) -> crate::Result<()> {
            sqlx::query(
                "INSERT INTO db_connections (name, dsn_sealed, created_unix_ms, created_by) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
                 dsn_sealed = excluded.dsn_sealed, created_unix_ms = excluded.created_unix_ms, \
                 created_by = excluded.created_by",
            )
            .bind(&row.name)
            .bind(&row.dsn_sealed)
            .bind(row.created_unix_ms)
            .bind(&row.created_by)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }

        async fn db_connection_list(&self) -> crate::Result<Vec<crate::DbConnectionRow>> {
            let raws: Vec<(String, Vec<u8>, i64, String)> = sqlx::query_as(
                "SELECT name, dsn_sealed, created_unix_ms, created_by FROM db_connections \
                 ORDER BY name",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws
                .into_iter()
                .map(|(name, dsn_sealed, created_unix_ms, created_by)| crate::DbConnectionRow {
                    name,
                    dsn_sealed,
                    created_unix_ms,
                    created_by,
                })
                .collect())
        }

        async fn db_connection_delete(&self, name: &str) -> crate::Result<bool> {
            let n = sqlx::query(
                "DELETE FROM db_connections WHERE name = $1 \
                 AND NOT EXISTS (SELECT 1 FROM db_roles WHERE connection = $1)",
            )
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected();
            Ok(n > 0)
        }

        async fn db_role_put(&self, row: &crate::DbRoleRow) -> crate::Result<()> {
            sqlx::query(
                "INSERT INTO db_roles (name, connection, template, default_ttl_s, max_ttl_s, \
                 created_unix_ms, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (name) DO UPDATE SET connection = excluded.connection, \
                 template = excluded.template, default_ttl_s = excluded.default_ttl_s, \
                 max_ttl_s = excluded.max_ttl_s, created_unix_ms = excluded.created_unix_ms, \
                 created_by = excluded.created_by",
            )
            .bind(&row.name)
            .bind(&row.connection)
            .bind(&row.template)
            .bind(row.default_ttl_s)
            .bind(row.max_ttl_s)
            .bind(row.created_unix_ms)
            .bind(&row.created_by)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(())
        }

        async fn db_role_list(&self) -> crate::Result<Vec<crate::DbRoleRow>> {
            let raws: Vec<(String, String, String, i64, i64, i64, String)> = sqlx::query_as(
                "SELECT name, connection, template, default_ttl_s, max_ttl_s, \
                 created_unix_ms, created_by FROM db_roles ORDER BY name",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws
                .into_iter()
                .map(
                    |(name, connection, template, default_ttl_s, max_ttl_s, at, by)| {
                        crate::DbRoleRow {
                            name,
                            connection,
                            template,
                            default_ttl_s,
                            max_ttl_s,
                            created_unix_ms: at,
                            created_by: by,
                        }
                    },
                )
                .collect())
        }

        async fn db_role_delete(&self, name: &str) -> crate::Result<bool> {
            let n = sqlx::query("DELETE FROM db_roles WHERE name = $1")
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(db_err)?
                .rows_affected();
            Ok(n > 0)
        }

        async fn secret_put(&self, row: &crate::SecretRow) -> crate::Result<()> {
            let n = sqlx::query(
                "INSERT INTO secrets (name, version, dek_sealed, value_sealed, \
                 created_unix_ms, created_by) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&row.name)
            .bind(row.version)
            .bind(&row.dek_sealed)
            .bind(&row.value_sealed)
            .bind(row.created_unix_ms)
            .bind(&row.created_by)
            .execute(&self.pool)
            .await
            .map_err(db_err)?
            .rows_affected();
            if n == 0 {
                return Err(crate::StoreError::Conflict(format!(
                    "secret `{}` version {} exists",
                    row.name, row.version
                )));
            }
            Ok(())
        }

        async fn secret_get(
            &self,
            name: &str,
            version: Option<i64>,
        ) -> crate::Result<Option<crate::SecretRow>> {
            let raw: Option<(String, i64, Vec<u8>, Vec<u8>, i64, String)> = sqlx::query_as(
                "SELECT name, version, dek_sealed, value_sealed, created_unix_ms, created_by \
                 FROM secrets WHERE name = $1 AND ($2 IS NULL OR version = $2) \
                 ORDER BY version DESC LIMIT 1",
            )
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raw.map(crate::broker::secret))
        }

        async fn secret_versions(&self) -> crate::Result<Vec<crate::SecretRow>> {
            let raws: Vec<(String, i64, Vec<u8>, Vec<u8>, i64, String)> = sqlx::query_as(
                "SELECT name, version, dek_sealed, value_sealed, created_unix_ms, created_by \
                 FROM secrets ORDER BY name, version",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::broker::secret).collect())
        }

        async fn secret_delete(&self, name: &str) -> crate::Result<bool> {
            let n = sqlx::query("DELETE FROM secrets WHERE name = $1")
                .bind(name)
                .execute(&self.pool)
                .await
                .map_err(db_err)?
                .rows_affected();
            Ok(n > 0)
        }
    }
    };
}

pub(crate) type RawSecret = (String, i64, Vec<u8>, Vec<u8>, i64, String);

pub(crate) fn secret(raw: RawSecret) -> SecretRow {
    let (name, version, dek_sealed, value_sealed, created_unix_ms, created_by) = raw;
    SecretRow {
        name,
        version,
        dek_sealed,
        value_sealed,
        created_unix_ms,
        created_by,
    }
}

/// Inserts `rows` into `leases` on the connection `$conn` with the backend's `QueryBuilder`
/// `$qb`, in chunks of multi-row inserts; `?`-propagates `db_err`s.
macro_rules! insert_leases {
    ($qb:ty, $conn:expr, $rows:expr) => {
        for chunk in $rows.chunks(500) {
            let mut qb = <$qb>::new(format!(
                "INSERT INTO leases ({}) ",
                crate::broker::LEASE_COLUMNS
            ));
            qb.push_values(chunk, |mut b, row: &crate::LeaseRow| {
                b.push_bind(row.id.as_str())
                    .push_bind(row.agent.as_str())
                    .push_bind(row.subject.as_str())
                    .push_bind(row.task.as_deref())
                    .push_bind(row.engine.as_str())
                    .push_bind(row.scope.as_str())
                    .push_bind(row.parent.as_deref())
                    .push_bind(row.handle.as_str())
                    .push_bind(row.issued_ms)
                    .push_bind(row.expires_ms)
                    .push_bind(row.max_expires_ms)
                    .push_bind(row.state.as_str())
                    .push_bind(row.revoke_reason.as_deref())
                    .push_bind(row.revoked_ms)
                    .push_bind(row.attempts)
                    .push_bind(row.next_attempt_ms)
                    .push_bind(row.last_error.as_deref())
                    .push_bind(i64::from(row.alerted));
            });
            qb.build().execute(&mut *$conn).await.map_err(db_err)?;
        }
    };
}

pub(crate) use insert_leases;

pub(crate) use broker_methods;
