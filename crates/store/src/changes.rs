//! The change feed: every write to state that servers cache (registration entries, holds, the
//! denylist, tasks and their agents, risk scores, policy packages, signing keys and federated
//! bundles) adds a row naming what
//! changed, in the same transaction. A server holding revision `r` of a kind applies the rows
//! past `r` — one indexed query when nothing changed — instead of re-reading everything.
//!
//! Revisions become visible in order (SQLite has one writer; PostgreSQL takes them under a
//! transaction-scoped advisory lock held until commit), so a reader that saw revision `n`
//! has seen every revision below it. Rows older than the retention are pruned; the highest
//! pruned revision is kept as the feed's floor, and a reader whose revision is below the
//! floor may have missed changes and must reload that kind in full.

use std::fmt;

/// What a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A registration entry; the key is its id.
    Entry,
    /// A hold; the key is `kind:value` (`agent:spiffe://…`, `task:…`, `vendor:…`).
    Hold,
    /// A denylist entry; the key is `kind:value`.
    Deny,
    /// A task (created, ended, an agent assigned); the key is its id.
    Task,
    /// An agent's risk score; the key is its SPIFFE ID.
    Risk,
    /// A policy package (a version pushed); the key is its name.
    Policy,
    /// A signing key (added, activated, retired, revoked; the key is its id) or a federated
    /// trust domain (added, its bundle or limits replaced, removed; the key is
    /// `federation:<trust domain>`): what the keyring is built from.
    Key,
}

impl ChangeKind {
    /// Every kind, in a stable order.
    pub const ALL: [ChangeKind; 7] = [
        ChangeKind::Entry,
        ChangeKind::Hold,
        ChangeKind::Deny,
        ChangeKind::Task,
        ChangeKind::Risk,
        ChangeKind::Policy,
        ChangeKind::Key,
    ];

    /// Its name in the feed (and in metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Entry => "entry",
            ChangeKind::Hold => "hold",
            ChangeKind::Deny => "deny",
            ChangeKind::Task => "task",
            ChangeKind::Risk => "risk",
            ChangeKind::Policy => "policy",
            ChangeKind::Key => "key",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the thing now exists (or changed) or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// Created or changed.
    Put,
    /// Deleted.
    Delete,
}

impl ChangeOp {
    /// Its name in the feed.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Put => "put",
            ChangeOp::Delete => "delete",
        }
    }
}

/// One row of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    /// Its revision: increasing, in commit order (not necessarily contiguous).
    pub rev: i64,
    /// What changed: the kind's key (see [`ChangeKind`]).
    pub key: String,
    /// What happened to it.
    pub op: ChangeOp,
}

/// The rows of one kind past a revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangePage {
    /// The highest revision pruned from the feed: a reader below it may have missed rows.
    pub floor: i64,
    /// The rows, oldest first.
    pub rows: Vec<ChangeRow>,
}

/// A change to record (see [`ChangeKind`] for the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) kind: ChangeKind,
    pub(crate) key: String,
    pub(crate) op: ChangeOp,
}

impl Change {
    pub(crate) fn put(kind: ChangeKind, key: impl Into<String>) -> Self {
        Change {
            kind,
            key: key.into(),
            op: ChangeOp::Put,
        }
    }

    pub(crate) fn delete(kind: ChangeKind, key: impl Into<String>) -> Self {
        Change {
            kind,
            key: key.into(),
            op: ChangeOp::Delete,
        }
    }

    /// The key of a hold or denylist entry.
    pub(crate) fn pair(kind: &str, value: &str) -> String {
        format!("{kind}:{value}")
    }
}

/// The feed row of a federated trust domain added or changed (`removed`: taken away).
pub(crate) fn federation_change(trust_domain: &str, removed: bool) -> Change {
    let key = format!("federation:{trust_domain}");
    if removed {
        Change::delete(ChangeKind::Key, key)
    } else {
        Change::put(ChangeKind::Key, key)
    }
}

/// Splits a hold or denylist key (`kind:value`) back into its parts.
pub fn split_pair(key: &str) -> Option<(&str, &str)> {
    key.split_once(':')
}

/// Now, in milliseconds since the Unix epoch (the feed's `at_ms`, used only for pruning).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn op_of(op: &str) -> ChangeOp {
    if op == "delete" {
        ChangeOp::Delete
    } else {
        ChangeOp::Put
    }
}

/// Implements `ChangeStore` for a backend whose pool is `self.pool` (one SQL text for both).
macro_rules! change_methods {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::ChangeStore for $store {
            async fn changes_since(
                &self,
                kind: crate::ChangeKind,
                after: i64,
                limit: u32,
            ) -> crate::Result<crate::ChangePage> {
                // One statement, so the floor and the rows come from one snapshot, and a
                // follower with nothing to apply pays one round trip. The outer join yields
                // one row (the floor, no change) when there is nothing past `after`.
                let found: Vec<(Option<i64>, Option<i64>, Option<String>, Option<String>)> =
                    sqlx::query_as(
                        "SELECT (SELECT rev FROM change_floor WHERE id = 1), c.rev, c.key, c.op \
                         FROM (SELECT 1 AS one) AS anchor LEFT JOIN \
                         (SELECT rev, key, op FROM changes WHERE kind = $1 AND rev > $2 \
                          ORDER BY rev LIMIT $3) AS c ON 1 = 1 \
                         ORDER BY c.rev",
                    )
                    .bind(kind.as_str())
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_err)?;
                let floor = found.first().and_then(|row| row.0).unwrap_or(0);
                Ok(crate::ChangePage {
                    floor,
                    rows: found
                        .into_iter()
                        .filter_map(|(_, rev, key, op)| {
                            Some(crate::ChangeRow {
                                rev: rev?,
                                key: key?,
                                op: crate::changes::op_of(&op?),
                            })
                        })
                        .collect(),
                })
            }

            async fn change_head(&self) -> crate::Result<i64> {
                let (head, floor): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT MAX(rev), (SELECT rev FROM change_floor WHERE id = 1) FROM changes",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(db_err)?;
                Ok(head.unwrap_or(0).max(floor.unwrap_or(0)))
            }

            async fn changes_prune(&self, before_ms: i64, limit: u32) -> crate::Result<u64> {
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                let top: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(rev) FROM (SELECT rev FROM changes WHERE at_ms < $1 \
                     ORDER BY rev LIMIT $2) AS old",
                )
                .bind(before_ms)
                .bind(i64::from(limit))
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                let Some(top) = top else {
                    return Ok(0);
                };
                // The floor first: a reader that sees the rows gone sees the floor raised.
                sqlx::query("UPDATE change_floor SET rev = $1 WHERE id = 1 AND rev < $1")
                    .bind(top)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let n = sqlx::query("DELETE FROM changes WHERE rev <= $1")
                    .bind(top)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                tx.commit().await.map_err(db_err)?;
                Ok(n)
            }
        }
    };
}
pub(crate) use change_methods;
