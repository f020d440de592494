//! Relationship tuples, models and the change feed: one SQL text for both backends.
//!
//! Every statement numbers its parameters `$1`, `$2`, … in order of first appearance, which
//! PostgreSQL reads positionally and SQLite as named parameters indexed in that same order.
//! [`rebac_methods!`] implements [`RebacStore`](crate::RebacStore) for a backend, given
//! how it opens a write transaction.

use crate::{RebacChangeRow, RebacModelRow, RebacStoreRow, RebacTupleRow};

/// Raw tuple row: object, relation, subject, expires_at_ms.
pub(crate) type RawTuple = (String, String, String, Option<i64>);

/// Raw model row in [`MODEL_COLUMNS`] order.
pub(crate) type RawModel = (String, i64, String, String, i64, String);

/// Raw change row in [`CHANGE_COLUMNS`] order.
pub(crate) type RawChange = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    Option<i64>,
    i64,
    String,
);

pub(crate) const MODEL_COLUMNS: &str = "store, version, model_id, dsl, created_unix_ms, created_by";
pub(crate) const CHANGE_COLUMNS: &str = "revision, position, operation, object, relation, \
     subject, expires_at_ms, at_unix_ms, actor";

pub(crate) fn tuple((object, relation, subject, expires_at_ms): RawTuple) -> RebacTupleRow {
    RebacTupleRow {
        object,
        relation,
        subject,
        expires_at_ms,
    }
}

pub(crate) fn model(raw: RawModel) -> RebacModelRow {
    let (store, version, model_id, dsl, created_unix_ms, created_by) = raw;
    RebacModelRow {
        store,
        version,
        model_id,
        dsl,
        created_unix_ms,
        created_by,
    }
}

pub(crate) fn change(raw: RawChange) -> RebacChangeRow {
    let (revision, position, operation, object, relation, subject, expires_at_ms, at, actor) = raw;
    RebacChangeRow {
        revision,
        position,
        operation,
        tuple: RebacTupleRow {
            object,
            relation,
            subject,
            expires_at_ms,
        },
        at_unix_ms: at,
        actor,
    }
}

pub(crate) fn store_row(revision: i64, raw: RawModel) -> RebacStoreRow {
    let model = model(raw);
    RebacStoreRow {
        store: model.store.clone(),
        revision,
        model,
    }
}

/// Implements `RebacStore` for a backend whose pool is `self.pool` and
/// whose write transaction starts with `$begin` (an expression on `self`).
macro_rules! rebac_methods {
    ($store:ty, |$this:ident| $begin:expr) => {
    #[async_trait::async_trait]
    impl crate::RebacStore for $store {
        async fn rebac_model_append(&$this, row: &crate::RebacModelRow) -> crate::Result<i64> {
            let mut tx = $begin.await.map_err(db_err)?;
            sqlx::query(
                "INSERT INTO rebac_stores (store, revision, created_unix_ms) VALUES ($1, 0, $2) \
                 ON CONFLICT (store) DO NOTHING",
            )
            .bind(&row.store)
            .bind(row.created_unix_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            // Lock the store's row so concurrent uploads number their versions in turn.
            sqlx::query("UPDATE rebac_stores SET revision = revision WHERE store = $1")
                .bind(&row.store)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let latest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM rebac_models WHERE store = $1")
                    .bind(&row.store)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
            let version = latest.unwrap_or(0) + 1;
            sqlx::query(&format!(
                "INSERT INTO rebac_models ({}) VALUES ($1, $2, $3, $4, $5, $6)",
                crate::rebac::MODEL_COLUMNS
            ))
            .bind(&row.store)
            .bind(version)
            .bind(&row.model_id)
            .bind(&row.dsl)
            .bind(row.created_unix_ms)
            .bind(&row.created_by)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
            Ok(version)
        }

        async fn rebac_models(&$this, store: &str) -> crate::Result<Vec<crate::RebacModelRow>> {
            let raws: Vec<crate::rebac::RawModel> = sqlx::query_as(&format!(
                "SELECT {} FROM rebac_models WHERE store = $1 ORDER BY version",
                crate::rebac::MODEL_COLUMNS
            ))
            .bind(store)
            .fetch_all(&$this.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::rebac::model).collect())
        }

        async fn rebac_stores(&$this) -> crate::Result<Vec<crate::RebacStoreRow>> {
            let raws: Vec<(i64, String, i64, String, String, i64, String)> = sqlx::query_as(
                "SELECT s.revision, m.store, m.version, m.model_id, m.dsl, m.created_unix_ms, \
                 m.created_by FROM rebac_stores s JOIN rebac_models m ON m.store = s.store \
                 WHERE m.version = (SELECT MAX(version) FROM rebac_models WHERE store = s.store) \
                 ORDER BY s.store",
            )
            .fetch_all(&$this.pool)
            .await
            .map_err(db_err)?;
            Ok(raws
                .into_iter()
                .map(|(revision, store, version, id, dsl, at, by)| {
                    crate::rebac::store_row(revision, (store, version, id, dsl, at, by))
                })
                .collect())
        }

        async fn rebac_write(
            &$this,
            store: &str,
            writes: &[crate::RebacTupleRow],
            deletes: &[crate::RebacTupleRow],
            now_ms: i64,
            actor: &str,
        ) -> crate::Result<crate::RebacWrite> {
            let mut tx = $begin.await.map_err(db_err)?;
            // Advancing the revision first takes the store's row lock: one writer at a time.
            let revision: Option<i64> = sqlx::query_scalar(
                "UPDATE rebac_stores SET revision = revision + 1 WHERE store = $1 \
                 RETURNING revision",
            )
            .bind(store)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let Some(revision) = revision else {
                tx.rollback().await.map_err(db_err)?;
                return Ok(crate::RebacWrite::NoStore);
            };
            for (i, t) in deletes.iter().enumerate() {
                let gone = sqlx::query(
                    "DELETE FROM rebac_tuples WHERE store = $1 AND object = $2 AND relation = $3 \
                     AND subject = $4 AND (expires_at_ms IS NULL OR expires_at_ms > $5)",
                )
                .bind(store)
                .bind(&t.object)
                .bind(&t.relation)
                .bind(&t.subject)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
                if gone == 0 {
                    tx.rollback().await.map_err(db_err)?;
                    return Ok(crate::RebacWrite::Missing(i));
                }
            }
            for (i, t) in writes.iter().enumerate() {
                // An expired tuple is absent: the write replaces it.
                sqlx::query(
                    "DELETE FROM rebac_tuples WHERE store = $1 AND object = $2 AND relation = $3 \
                     AND subject = $4 AND expires_at_ms IS NOT NULL AND expires_at_ms <= $5",
                )
                .bind(store)
                .bind(&t.object)
                .bind(&t.relation)
                .bind(&t.subject)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                let added = sqlx::query(
                    "INSERT INTO rebac_tuples (store, object, relation, subject, expires_at_ms) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(store)
                .bind(&t.object)
                .bind(&t.relation)
                .bind(&t.subject)
                .bind(t.expires_at_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
                if added == 0 {
                    tx.rollback().await.map_err(db_err)?;
                    return Ok(crate::RebacWrite::Exists(i));
                }
            }
            let changes = deletes
                .iter()
                .map(|t| ("delete", t))
                .chain(writes.iter().map(|t| ("write", t)));
            for (position, (operation, t)) in changes.enumerate() {
                sqlx::query(&format!(
                    "INSERT INTO rebac_changes (store, {}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    crate::rebac::CHANGE_COLUMNS
                ))
                .bind(store)
                .bind(revision)
                .bind(position as i64)
                .bind(operation)
                .bind(&t.object)
                .bind(&t.relation)
                .bind(&t.subject)
                .bind(t.expires_at_ms)
                .bind(now_ms)
                .bind(actor)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            Ok(crate::RebacWrite::Written { revision })
        }

        async fn rebac_tuples_scan(
            &$this,
            store: &str,
            chunk: usize,
            sink: tokio::sync::mpsc::Sender<Vec<crate::RebacTupleRow>>,
        ) -> crate::Result<u64> {
            use futures_util::TryStreamExt as _;
            // One statement, so one read snapshot on either backend; no ORDER BY, so the
            // database streams the table instead of sorting it.
            let mut rows = sqlx::query_as::<_, crate::rebac::RawTuple>(
                "SELECT object, relation, subject, expires_at_ms FROM rebac_tuples \
                 WHERE store = $1",
            )
            .bind(store)
            .fetch(&$this.pool);
            let chunk = chunk.max(1);
            let mut batch = Vec::with_capacity(chunk);
            let mut count = 0u64;
            while let Some(raw) = rows.try_next().await.map_err(db_err)? {
                batch.push(crate::rebac::tuple(raw));
                if batch.len() == chunk {
                    count += chunk as u64;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(chunk));
                    if sink.send(full).await.is_err() {
                        // The reader is gone: nobody wants the rest.
                        return Ok(count);
                    }
                }
            }
            count += batch.len() as u64;
            if !batch.is_empty() {
                let _ = sink.send(batch).await;
            }
            Ok(count)
        }

        async fn rebac_changes(
            &$this,
            store: &str,
            after_revision: i64,
            limit: u32,
        ) -> crate::Result<Vec<crate::RebacChangeRow>> {
            let raws: Vec<crate::rebac::RawChange> = sqlx::query_as(&format!(
                "SELECT {} FROM rebac_changes WHERE store = $1 AND revision > $2 \
                 ORDER BY revision, position LIMIT $3",
                crate::rebac::CHANGE_COLUMNS
            ))
            .bind(store)
            .bind(after_revision)
            .bind(i64::from(limit))
            .fetch_all(&$this.pool)
            .await
            .map_err(db_err)?;
            Ok(raws.into_iter().map(crate::rebac::change).collect())
        }

        async fn rebac_purge_expired(
            &$this,
            now_ms: i64,
            limit: u32,
        ) -> crate::Result<Vec<(String, crate::RebacTupleRow)>> {
            let raws: Vec<(String, String, String, String, Option<i64>)> = sqlx::query_as(
                "DELETE FROM rebac_tuples WHERE (store, object, relation, subject) IN \
                 (SELECT store, object, relation, subject FROM rebac_tuples \
                  WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= $1 LIMIT $2) \
                 RETURNING store, object, relation, subject, expires_at_ms",
            )
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&$this.pool)
            .await
            .map_err(db_err)?;
            Ok(raws
                .into_iter()
                .map(|(store, object, relation, subject, expires_at_ms)| {
                    (store, crate::rebac::tuple((object, relation, subject, expires_at_ms)))
                })
                .collect())
        }
    }
    };
}

pub(crate) use rebac_methods;
