//! Warden's persistent store: one storage interface ([`Store`]) with two implementations,
//! embedded SQLite (the default, WAL mode) and PostgreSQL (for high availability).
//!
//! This is the only crate that speaks SQL. It knows rows, not meaning: the ledger crate decides
//! what a leaf is, the server decides what a role allows. Versioned migrations for each backend
//! live in `migrations/<backend>/` and are applied by [`open`].

#![forbid(unsafe_code)]

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc};

use async_trait::async_trait;

mod broker;
mod changes;
mod common;
mod postgres;
mod rebac;
mod sqlite;
mod sqlite_wal;
mod tasks;

pub use broker::{
    DbConnectionRow, DbRoleRow, HoldRow, LeaseFilter, LeaseRow, LeaseSelector, SecretRow,
};
pub use changes::{ChangeKind, ChangeOp, ChangePage, ChangeRow, split_pair};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use tasks::{GrantRequestRow, GrantRow, RiskRow, TaskAgentRow, TaskPurge, TaskRow};

/// One relationship tuple, `object#relation@subject`, in OpenFGA's string forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RebacTupleRow {
    /// `type:id`.
    pub object: String,
    /// The relation name.
    pub relation: String,
    /// `type:id`, `type:*` or `type:id#relation` (OpenFGA's `user`).
    pub subject: String,
    /// When the tuple stops counting, milliseconds since the Unix epoch; `None`: never.
    pub expires_at_ms: Option<i64>,
}

/// One entry of a relationship store's change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebacChangeRow {
    /// The write batch that made the change (1, 2, … per store).
    pub revision: i64,
    /// Position within the batch: deletes first, then writes, in request order.
    pub position: i64,
    /// `write` or `delete`.
    pub operation: String,
    /// The tuple written or deleted.
    pub tuple: RebacTupleRow,
    /// Commit time, milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// Who made it (the ledger actor).
    pub actor: String,
}

/// One version of a relationship store's authorization model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebacModelRow {
    /// The relationship store (tenant) name.
    pub store: String,
    /// 1, 2, … per store; assigned by [`Store::rebac_model_append`].
    pub version: i64,
    /// The model's content id (hex SHA-256 of its canonical JSON).
    pub model_id: String,
    /// The model in the OpenFGA modeling language, as uploaded.
    pub dsl: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// Who uploaded it (the ledger actor).
    pub created_by: String,
}

/// The outcome of [`Store::rebac_write`]: all of the batch, or none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebacWrite {
    /// Committed as this revision of the store.
    Written {
        /// The store's new revision.
        revision: i64,
    },
    /// `writes[i]` is already present (and not expired); nothing was written.
    Exists(usize),
    /// `deletes[i]` is absent (or expired); nothing was written.
    Missing(usize),
    /// The store has no model yet; nothing was written.
    NoStore,
}

/// A relationship store's current revision and latest model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebacStoreRow {
    /// The relationship store (tenant) name.
    pub store: String,
    /// The number of committed write batches.
    pub revision: i64,
    /// Its latest model.
    pub model: RebacModelRow,
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL could not be understood.
    #[error("invalid database url `{0}`: expected `sqlite://PATH` or `postgres://…`")]
    InvalidUrl(String),
    /// A write raced another writer or broke a uniqueness rule; nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row read back from the database does not have the shape this version expects.
    #[error("corrupt row in `{table}`: {detail}")]
    Corrupt {
        /// Table the row came from.
        table: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other database error (connection lost, disk full, …).
    #[error("database error: {0}")]
    Database(String),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL (or a wire-compatible engine).
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// A parsed database location.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH` (or a bare filesystem path): an embedded database file.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
}

impl fmt::Debug for StoreUrl {
    // Never print a PostgreSQL password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for StoreUrl {
    /// Shows the URL with any password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreUrl::Postgres(u) => f.write_str(&redact_password(u)),
        }
    }
}

fn redact_password(url: &str) -> String {
    // postgres://user:password@host/db -> postgres://user:***@host/db
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(s.to_owned()));
        }
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::InvalidUrl(s.to_owned()));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if s.is_empty() || s.contains("://") {
            return Err(StoreError::InvalidUrl(redact_password(s)));
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(s)))
    }
}

/// One ledger leaf as stored. The store keeps the exact leaf bytes; the ledger crate gives
/// them meaning. `actor` and `action` are copies kept for indexing only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// Position in the log, 0-based; equals the Merkle leaf index.
    pub seq: u64,
    /// RFC 6962 leaf hash of `leaf`.
    pub leaf_hash: [u8; 32],
    /// Exact canonical leaf bytes.
    pub leaf: Vec<u8>,
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub time_unix_ms: i64,
    /// Who acted (copy of the event's actor).
    pub actor: String,
    /// What was done (copy of the event's action).
    pub action: String,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    /// Tree size the checkpoint commits to.
    pub tree_size: u64,
    /// Root hash at that size.
    pub root: [u8; 32],
    /// The full signed note text.
    pub note: String,
    /// When it was signed, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
}

/// An API token as stored: only the SHA-256 of the secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRow {
    /// Stable identifier (not secret), e.g. `tok_…`.
    pub id: String,
    /// Human name, unique.
    pub name: String,
    /// Role name (`admin`, `approver`, `auditor`); the server parses it.
    pub role: String,
    /// SHA-256 of the token secret.
    pub token_hash: [u8; 32],
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// Revocation time, if revoked.
    pub revoked_unix_ms: Option<i64>,
}

/// A registration entry as stored. The server parses the SPIFFE ID and selectors; the store
/// keeps them as text, selectors in canonical form (sorted, joined with `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    /// Stable identifier, `ent_…`.
    pub id: String,
    /// The SPIFFE ID a matching workload gets.
    pub spiffe_id: String,
    /// Canonical selectors: sorted, `\n`-separated.
    pub selectors: String,
    /// X.509-SVID lifetime override, seconds.
    pub x509_ttl_secs: Option<i64>,
    /// JWT-SVID lifetime override, seconds.
    pub jwt_ttl_secs: Option<i64>,
    /// Kind of agent (free text, e.g. `coder`).
    pub agent_kind: Option<String>,
    /// Owning human or team.
    pub owner: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
}

/// An identity signing key as stored: the private half only sealed (the store never sees it
/// in clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    /// Stable identifier.
    pub id: String,
    /// `x509-ca` or `jwt`.
    pub kind: String,
    /// `prepared`, `active` or `retired`.
    pub state: String,
    /// The CA certificate (DER), for `x509-ca` keys.
    pub cert_der: Option<Vec<u8>>,
    /// The private key, sealed by the caller.
    pub key_sealed: Vec<u8>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// End of validity, milliseconds since the Unix epoch.
    pub not_after_unix_ms: Option<i64>,
    /// When it became the active key, milliseconds since the Unix epoch.
    pub activated_unix_ms: Option<i64>,
    /// When a newer key replaced it, milliseconds since the Unix epoch.
    pub retired_unix_ms: Option<i64>,
    /// When an operator withdrew it from the bundle, milliseconds since the Unix epoch.
    pub revoked_unix_ms: Option<i64>,
}

/// What [`Store::entry_insert_many`] did with one row, in the order the rows were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryInsert {
    /// The row was stored under its own id.
    Created(String),
    /// An equal entry (same SPIFFE ID, selectors, lifetimes, kind, owner and description)
    /// was already stored, under this id; the row was not stored again.
    Existing(String),
}

/// What [`Store::signing_key_activate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyActivate {
    /// The prepared key is now active; the previous active key (its id here) is retired.
    Activated {
        /// The key that was active before, now retired.
        retired: Option<String>,
    },
    /// No prepared key of that kind has this id (nothing changed).
    NotPrepared,
}

/// One version of a policy package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersionRow {
    /// Package name.
    pub package: String,
    /// 1, 2, … per package; assigned by [`Store::policy_append`].
    pub version: i64,
    /// `cedar` or `rego`.
    pub language: String,
    /// Rego rule to evaluate, when not the default.
    pub entrypoint: Option<String>,
    /// The files, JSON `[[name, text], …]`.
    pub files_json: String,
    /// SHA-256 of the package content, hex.
    pub content_sha256: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// Who uploaded it (the ledger actor).
    pub created_by: String,
    /// Why, e.g. `rollback to version 2`.
    pub note: Option<String>,
}

/// Another trust domain whose SVIDs this install accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRow {
    /// The federated trust domain name (e.g. `partner.example`).
    pub trust_domain: String,
    /// Its bundle endpoint, when the bundle is fetched and refreshed; `None` for a static
    /// bundle set by the operator.
    pub bundle_url: Option<String>,
    /// PEM roots that authenticate the bundle endpoint's TLS certificate instead of the
    /// system's Web PKI roots.
    pub endpoint_ca_pem: Option<String>,
    /// The last good bundle, SPIFFE bundle JSON.
    pub bundle_json: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// When `bundle_json` was last set, milliseconds since the Unix epoch.
    pub refreshed_unix_ms: i64,
    /// Why the last refresh failed, if it did (the previous bundle stays in use).
    pub last_error: Option<String>,
    /// What its agents may do here (JSON, read by the authority); `None`: the defaults.
    pub limits_json: Option<String>,
}

/// A join token as stored: only the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenRow {
    /// SHA-256 of the token secret.
    pub token_hash: [u8; 32],
    /// The SPIFFE ID the token may be exchanged for.
    pub spiffe_id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_unix_ms: i64,
    /// When it was used, if it was.
    pub used_unix_ms: Option<i64>,
}

/// What [`Store::join_token_consume`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinConsume {
    /// The token was valid and is now used.
    Consumed(JoinTokenRow),
    /// No such token.
    NotFound,
    /// The token was used before (the row shows when).
    AlreadyUsed(JoinTokenRow),
    /// The token expired unused.
    Expired(JoinTokenRow),
}

/// A denylist entry: a SPIFFE ID, JWT id or certificate serial that no verification accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyRow {
    /// `spiffe_id`, `jti` or `serial`.
    pub kind: String,
    /// The denied value.
    pub value: String,
    /// Why (free text).
    pub reason: String,
    /// When, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
}

/// What [`Store::token_revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRevoke {
    /// The token is now revoked.
    Revoked,
    /// No unrevoked token has that id.
    NotFound,
    /// Refused: it is the last unrevoked token of the protected role.
    LastOfRole,
}

/// The storage interface. Every method is one transaction: it either happens whole or not at
/// all. Implementations must be safe to share between tasks.
#[async_trait]
pub trait Store:
    RebacStore + BrokerStore + TaskStore + ChangeStore + Send + Sync + 'static
{
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Cheap liveness check (`SELECT 1`).
    async fn ping(&self) -> Result<()>;

    /// Number of ledger rows (= next sequence number).
    async fn ledger_size(&self) -> Result<u64>;

    /// Appends `rows` in one durable transaction. `rows[i].seq` must be `expected_size + i`.
    /// Fails with [`StoreError::Conflict`] (and writes nothing) if the ledger does not hold
    /// exactly `expected_size` rows when the transaction starts, e.g. because another writer
    /// appended first. Returns only once the transaction is committed (durable).
    async fn ledger_append(&self, expected_size: u64, rows: &[LedgerRow]) -> Result<()> {
        self.ledger_append_with(expected_size, rows, &[]).await
    }

    /// Like [`Store::ledger_append`], and inserts `leases` in the same transaction: all of it
    /// commits, or none.
    async fn ledger_append_with(
        &self,
        expected_size: u64,
        rows: &[LedgerRow],
        leases: &[LeaseRow],
    ) -> Result<()>;

    /// Like [`Store::ledger_append_with`], but may return once the transaction is committed
    /// and visible, before it is durable: it is durable once a [`Store::ledger_sync`] that
    /// starts after this returns has returned. Until then nobody may be told the rows are
    /// recorded. This lets the ledger write its next batch while the previous one is being
    /// made durable. Backends whose commits are always durable need not override it.
    async fn ledger_append_unsynced(
        &self,
        expected_size: u64,
        rows: &[LedgerRow],
        leases: &[LeaseRow],
    ) -> Result<()> {
        self.ledger_append_with(expected_size, rows, leases).await
    }

    /// Makes every ledger append that returned before this call durable. An error means some
    /// may not be: the caller must not acknowledge them, and must not trust a later call to
    /// repair that (after a failed fsync the operating system may have dropped the data).
    async fn ledger_sync(&self) -> Result<()> {
        Ok(())
    }

    /// Rows with `seq` in `[from, from + limit)`, ascending.
    async fn ledger_entries(&self, from: u64, limit: u32) -> Result<Vec<LedgerRow>>;

    /// Leaf hashes with `seq` in `[from, from + limit)`, ascending (for rebuilding the tree).
    async fn ledger_leaf_hashes(&self, from: u64, limit: u32) -> Result<Vec<[u8; 32]>>;

    /// Stores a signed checkpoint. Fails with [`StoreError::Conflict`] if one with the same
    /// tree size but a different root already exists.
    async fn checkpoint_insert(&self, row: &CheckpointRow) -> Result<()>;

    /// The checkpoint with the largest tree size, if any.
    async fn checkpoint_latest(&self) -> Result<Option<CheckpointRow>>;

    /// Stores a new API token. Fails with [`StoreError::Conflict`] if the name or id is taken.
    async fn token_insert(&self, row: &ApiTokenRow) -> Result<()>;

    /// Looks a token up by the SHA-256 of its secret (revoked ones included).
    async fn token_by_hash(&self, token_hash: &[u8; 32]) -> Result<Option<ApiTokenRow>>;

    /// All tokens, oldest first.
    async fn token_list(&self) -> Result<Vec<ApiTokenRow>>;

    /// Marks a token revoked, unless that would leave no unrevoked token with role
    /// `keep_last_of_role` (so operators cannot lock themselves out, even with concurrent
    /// revocations: the check and the update are one serialized transaction).
    async fn token_revoke(
        &self,
        id: &str,
        at_unix_ms: i64,
        keep_last_of_role: &str,
    ) -> Result<TokenRevoke>;

    /// Stores a registration entry and returns the change-feed revision that records it.
    /// Fails with [`StoreError::Conflict`] if the id is taken or an entry with the same SPIFFE
    /// ID and selectors exists. On SQLite the commit is made durable by the next ledger append
    /// (the caller records the registration next and answers only once that is durable); the
    /// same holds for [`Store::entry_insert_many`].
    async fn entry_insert(&self, row: &EntryRow) -> Result<i64>;

    /// Stores many registration entries in one transaction: all of them, or none. A row equal
    /// to an entry already stored (or to an earlier row of the batch) in every field but id
    /// and creation time is not stored again and comes back as [`EntryInsert::Existing`].
    /// Fails with [`StoreError::Conflict`], writing nothing, if a row has the SPIFFE ID and
    /// selectors of an entry that differs in another field, or its id is taken; the message
    /// names the row's index.
    async fn entry_insert_many(&self, rows: &[EntryRow]) -> Result<Vec<EntryInsert>>;

    /// One entry by id.
    async fn entry_get(&self, id: &str) -> Result<Option<EntryRow>>;

    /// All entries, oldest first.
    async fn entry_list(&self) -> Result<Vec<EntryRow>>;
    /// The entries among `ids` that exist, in no particular order.
    async fn entry_get_many(&self, ids: &[String]) -> Result<Vec<EntryRow>>;

    /// Deletes an entry. Returns whether it existed.
    async fn entry_delete(&self, id: &str) -> Result<bool>;

    /// Stores a signing key in state `active` or `prepared`. Returns `false` (and stores
    /// nothing) when a key of that kind is already in that state: there is at most one active
    /// and one prepared key per kind, whatever replicas race. Fails with
    /// [`StoreError::Conflict`] if the id is taken.
    async fn signing_key_insert(&self, row: &SigningKeyRow) -> Result<bool>;

    /// Makes the prepared key `id` of `kind` active and retires the previously active one, in
    /// one serialized transaction.
    async fn signing_key_activate(
        &self,
        kind: &str,
        id: &str,
        at_unix_ms: i64,
    ) -> Result<KeyActivate>;

    /// Signing keys of `kind`, oldest first.
    async fn signing_keys(&self, kind: &str) -> Result<Vec<SigningKeyRow>>;

    /// Stores a new join token. Fails with [`StoreError::Conflict`] on a duplicate hash.
    async fn join_token_insert(&self, row: &JoinTokenRow) -> Result<()>;

    /// Marks the token used if it exists, is unused and has not expired at `now_unix_ms` —
    /// atomically, so two concurrent uses cannot both succeed.
    async fn join_token_consume(
        &self,
        token_hash: &[u8; 32],
        now_unix_ms: i64,
    ) -> Result<JoinConsume>;

    /// Adds a denylist entry. Returns `false` (and changes nothing) if it was already there.
    async fn deny_insert(&self, row: &DenyRow) -> Result<bool>;

    /// Removes a denylist entry. Returns whether it existed.
    async fn deny_delete(&self, kind: &str, value: &str) -> Result<bool>;

    /// The whole denylist, oldest first.
    async fn deny_list(&self) -> Result<Vec<DenyRow>>;

    /// Withdraws a prepared or retired key: it becomes `retired` with `revoked_unix_ms` set, so
    /// it leaves the bundle at once. Returns `false` if no such key is prepared or retired
    /// (the active key cannot be revoked: rotate first).
    async fn signing_key_revoke(&self, id: &str, at_unix_ms: i64) -> Result<bool>;

    /// Appends a version of `row.package` numbered one past its latest (`row.version` is
    /// ignored), in one serialized transaction; returns the number given. When
    /// `expected_latest` is `Some(n)` and the latest version is not `n` (0: none), nothing is
    /// written and the result is [`StoreError::Conflict`].
    async fn policy_append(
        &self,
        row: &PolicyVersionRow,
        expected_latest: Option<i64>,
    ) -> Result<i64>;

    /// Every version of a package, oldest first.
    async fn policy_versions(&self, package: &str) -> Result<Vec<PolicyVersionRow>>;

    /// The latest version of every package, by package name.
    async fn policy_latest(&self) -> Result<Vec<PolicyVersionRow>>;

    /// Adds a federated trust domain. Fails with [`StoreError::Conflict`] if it exists.
    async fn federation_insert(&self, row: &FederationRow) -> Result<()>;

    /// Records a refresh of a federated bundle: a new bundle (`Some`) and/or the refresh error
    /// (`None` clears it). Returns whether the trust domain exists.
    async fn federation_refreshed(
        &self,
        trust_domain: &str,
        bundle_json: Option<&str>,
        at_unix_ms: i64,
        last_error: Option<&str>,
    ) -> Result<bool>;

    /// Replaces the limits of a federated trust domain. Returns whether it exists.
    async fn federation_set_limits(&self, trust_domain: &str, limits_json: &str) -> Result<bool>;

    /// All federated trust domains, by name.
    async fn federation_list(&self) -> Result<Vec<FederationRow>>;

    /// Removes a federated trust domain. Returns whether it existed.
    async fn federation_delete(&self, trust_domain: &str) -> Result<bool>;

    /// Reads an install-wide setting.
    async fn meta_get(&self, key: &str) -> Result<Option<String>>;

    /// Writes an install-wide setting unless it exists. Returns whether it was written.
    async fn meta_set_if_absent(&self, key: &str, value: &str) -> Result<bool>;
}

/// Relationship-based access data (models, tuples, change feed) of every relationship
/// store; part of [`Store`].
#[async_trait]
pub trait RebacStore: Send + Sync + 'static {
    /// Appends a model version to relationship store `row.store` (creating the store at
    /// revision 0 if new), numbered one past its latest (`row.version` is ignored); returns
    /// the number given.
    async fn rebac_model_append(&self, row: &RebacModelRow) -> Result<i64>;

    /// Every model version of a relationship store, oldest first.
    async fn rebac_models(&self, store: &str) -> Result<Vec<RebacModelRow>>;

    /// Every relationship store with its revision and latest model, by name.
    async fn rebac_stores(&self) -> Result<Vec<RebacStoreRow>>;

    /// Applies `deletes`, then `writes`, to relationship store `store` in one transaction
    /// that also appends them to the change feed and advances the store's revision by one.
    /// A tuple past `expires_at_ms <= now_ms` counts as absent: writing it again replaces
    /// it, deleting it is [`RebacWrite::Missing`]. Writers of one store are serialized.
    async fn rebac_write(
        &self,
        store: &str,
        writes: &[RebacTupleRow],
        deletes: &[RebacTupleRow],
        now_ms: i64,
        actor: &str,
    ) -> Result<RebacWrite>;

    /// Every tuple of `store`, expired ones included, in no particular order, sent to `sink`
    /// in chunks of up to `chunk` rows as the database streams them, from one read snapshot
    /// (one statement); for loading the in-memory index. Returns how many rows were sent;
    /// stops early, without error, when the receiver is dropped.
    async fn rebac_tuples_scan(
        &self,
        store: &str,
        chunk: usize,
        sink: tokio::sync::mpsc::Sender<Vec<RebacTupleRow>>,
    ) -> Result<u64>;

    /// Up to `limit` changes of `store` with a revision above `after_revision`, in order.
    async fn rebac_changes(
        &self,
        store: &str,
        after_revision: i64,
        limit: u32,
    ) -> Result<Vec<RebacChangeRow>>;

    /// Removes up to `limit` tuples that expired at or before `now_ms`, from every store (they
    /// are already invisible; this only reclaims space), and returns them with their store.
    async fn rebac_purge_expired(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<(String, RebacTupleRow)>>;
}

/// The credential broker's data (leases, holds, database connections and role templates,
/// sealed secrets); part of [`Store`].
#[async_trait]
pub trait BrokerStore: Send + Sync + 'static {
    /// Records a new lease.
    async fn lease_insert(&self, row: &LeaseRow) -> Result<()>;

    /// Records several new leases in one transaction: all of them, or none.
    async fn lease_insert_many(&self, rows: &[LeaseRow]) -> Result<()>;

    /// One lease by id.
    async fn lease_get(&self, id: &str) -> Result<Option<LeaseRow>>;

    /// The lease an engine knows by `handle` (a token's jti, a role name).
    async fn lease_by_handle(&self, engine: &str, handle: &str) -> Result<Option<LeaseRow>>;

    /// Leases matching `filter`, by id.
    async fn lease_list(&self, filter: &LeaseFilter) -> Result<Vec<LeaseRow>>;

    /// Moves an active, unexpired lease's expiry to `expires_ms` if that is within its
    /// maximum; returns the lease as now stored, or `None` if it could not be renewed.
    async fn lease_renew(&self, id: &str, expires_ms: i64, now_ms: i64)
    -> Result<Option<LeaseRow>>;

    /// Revokes every active lease `selector` names and every lease delegated from them (at
    /// any depth), in one statement: tokens become `revoked`, other engines `revoking`, claimed
    /// by the caller (the sweeper leaves them alone until `claim_until_ms`, then takes over if
    /// they are still `revoking`). Returns them.
    async fn lease_revoke(
        &self,
        selector: &LeaseSelector,
        reason: &str,
        now_ms: i64,
        claim_until_ms: i64,
    ) -> Result<Vec<LeaseRow>>;

    /// Ends up to `limit` active leases whose expiry has passed (tokens `expired`, other
    /// engines `revoking`); returns them.
    async fn lease_expire_due(&self, now_ms: i64, limit: u32) -> Result<Vec<LeaseRow>>;

    /// Retention: deletes up to `limit` ended leases (`revoked` or `expired`) that ended
    /// before `before_ms`; returns how many. The ledger keeps their history.
    async fn lease_purge_ended(&self, before_ms: i64, limit: u32) -> Result<u64>;

    /// Claims up to `limit` `revoking` leases whose next attempt is due, pushing their next
    /// attempt to `hold_until_ms` so other replicas leave them alone; returns them.
    async fn lease_claim_due(
        &self,
        now_ms: i64,
        hold_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<LeaseRow>>;

    /// Marks a `revoking` lease `revoked` once the engine undid it upstream.
    async fn lease_revoked_upstream(&self, id: &str) -> Result<bool>;

    /// Puts an ended lease back to `revoking` (due at `next_attempt_ms`): its upstream
    /// credential turned out to exist after all and must still be undone.
    async fn lease_reopen(&self, id: &str, next_attempt_ms: i64, error: &str) -> Result<()>;

    /// Records a failed upstream revocation: one more attempt, the next at `next_attempt_ms`.
    async fn lease_retry_later(
        &self,
        id: &str,
        next_attempt_ms: i64,
        error: &str,
        alerted: bool,
    ) -> Result<()>;

    /// Leases of `engine` revoked or expired after `after` (revocation time, id), oldest
    /// first; for following revocations on every replica.
    async fn lease_revoked_since(
        &self,
        after: Option<(i64, &str)>,
        engine: &str,
        limit: u32,
    ) -> Result<Vec<LeaseRow>>;

    /// Adds a hold; returns whether it is new.
    async fn hold_insert(&self, row: &HoldRow) -> Result<bool>;

    /// Removes a hold; returns whether it existed.
    async fn hold_delete(&self, kind: &str, value: &str) -> Result<bool>;

    /// Every hold.
    async fn hold_list(&self) -> Result<Vec<HoldRow>>;

    /// Adds or replaces a database connection.
    async fn db_connection_put(&self, row: &DbConnectionRow) -> Result<()>;

    /// Every database connection, by name.
    async fn db_connection_list(&self) -> Result<Vec<DbConnectionRow>>;

    /// Removes a connection no role uses; returns whether it did.
    async fn db_connection_delete(&self, name: &str) -> Result<bool>;

    /// Adds or replaces a role template.
    async fn db_role_put(&self, row: &DbRoleRow) -> Result<()>;

    /// Every role template, by name.
    async fn db_role_list(&self) -> Result<Vec<DbRoleRow>>;

    /// Removes a role template; returns whether it existed.
    async fn db_role_delete(&self, name: &str) -> Result<bool>;

    /// Stores a version of a secret; [`StoreError::Conflict`] if that version exists.
    async fn secret_put(&self, row: &SecretRow) -> Result<()>;

    /// A version of a secret, or its latest.
    async fn secret_get(&self, name: &str, version: Option<i64>) -> Result<Option<SecretRow>>;

    /// Every version of every secret, by name and version.
    async fn secret_versions(&self) -> Result<Vec<SecretRow>>;

    /// Removes every version of a secret; returns whether it existed.
    async fn secret_delete(&self, name: &str) -> Result<bool>;
}

/// Tasks, their agents and grants, just-in-time grant requests, risk scores; part of
/// [`Store`].
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Adds a task; false when the id exists.
    async fn task_insert(&self, task: &TaskRow) -> Result<bool>;
    /// One task.
    async fn task_get(&self, id: &str) -> Result<Option<TaskRow>>;
    /// Tasks, newest first, optionally in a state and/or with an agent.
    async fn task_list(
        &self,
        state: Option<&str>,
        agent: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TaskRow>>;
    /// Ends an open task (`completed`, `failed`, `cancelled`); `None` if it is not open.
    async fn task_end(
        &self,
        id: &str,
        state: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<TaskRow>>;
    /// Ended tasks whose grants and leases have not been ended yet.
    async fn task_uncleaned(&self, limit: u32) -> Result<Vec<TaskRow>>;
    /// Marks an ended task cleaned up.
    async fn task_mark_cleaned(&self, id: &str) -> Result<()>;
    /// Retention: deletes up to `limit` each of ended grants, decided (or expired) grant
    /// requests, and ended, cleaned-up tasks (with their agents) that ended before
    /// `before_ms` — a task only once none of its grants or requests is left. One
    /// transaction; the ledger keeps their history.
    async fn task_purge_ended(&self, before_ms: i64, limit: u32) -> Result<TaskPurge>;
    /// Assigns an agent; false when it already is.
    async fn task_agent_put(&self, row: &TaskAgentRow) -> Result<bool>;
    /// A task's agents.
    async fn task_agents(&self, task: &str) -> Result<Vec<TaskAgentRow>>;
    /// Every assignment of every open task, with its task.
    async fn open_task_agents(&self) -> Result<Vec<(TaskRow, TaskAgentRow)>>;
    /// Adds a grant.
    async fn grant_insert(&self, grant: &GrantRow) -> Result<()>;
    /// Grants, optionally of a task, an agent, in a state.
    async fn grant_list(
        &self,
        task: Option<&str>,
        agent: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<GrantRow>>;
    /// Ends every active grant of a task; returns them.
    async fn grant_end(&self, task: &str, now_ms: i64) -> Result<Vec<GrantRow>>;
    /// Ends one active grant; returns it, or `None` if it was not active.
    async fn grant_end_one(&self, id: &str, now_ms: i64) -> Result<Option<GrantRow>>;
    /// Adds a grant request.
    async fn request_insert(&self, row: &GrantRequestRow) -> Result<()>;
    /// One grant request.
    async fn request_get(&self, id: &str) -> Result<Option<GrantRequestRow>>;
    /// Grant requests, oldest first, optionally in a state.
    async fn request_list(&self, state: Option<&str>, limit: u32) -> Result<Vec<GrantRequestRow>>;
    /// Decides a pending request; false when it was not pending (decided already, expired).
    async fn request_decide(
        &self,
        id: &str,
        state: &str,
        by: &str,
        reason: &str,
        now_ms: i64,
        grant_id: Option<&str>,
    ) -> Result<bool>;
    /// Sets an agent's risk score.
    async fn risk_set(&self, row: &RiskRow) -> Result<()>;
    /// Every risk score.
    async fn risk_list(&self) -> Result<Vec<RiskRow>>;
    /// One agent's risk score.
    async fn risk_get(&self, agent: &str) -> Result<Option<RiskRow>>;
    /// Open tasks whose deadline is at or before `now_ms`, earliest first.
    async fn task_due(&self, now_ms: i64, limit: u32) -> Result<Vec<TaskRow>>;
    /// Pending grant requests that expire at or before `now_ms`, earliest first.
    async fn request_due(&self, now_ms: i64, limit: u32) -> Result<Vec<GrantRequestRow>>;
}

/// The change feed (see the `changes` module); part of [`Store`].
#[async_trait]
pub trait ChangeStore: Send + Sync + 'static {
    /// Up to `limit` rows of `kind` past revision `after`, oldest first, with the feed's
    /// floor (a reader below it reloads `kind` in full).
    async fn changes_since(&self, kind: ChangeKind, after: i64, limit: u32) -> Result<ChangePage>;
    /// The latest revision of any kind (0 when none): where a reader that has just loaded
    /// everything starts following.
    async fn change_head(&self) -> Result<i64>;
    /// Deletes up to `limit` of the oldest rows written before `before_ms` and raises the
    /// floor to the highest deleted; returns how many went.
    async fn changes_prune(&self, before_ms: i64, limit: u32) -> Result<u64>;
}

/// Opens (creating if needed) the store at `url` and applies pending migrations.
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn Store>> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await?)),
        StoreUrl::Postgres(u) => Ok(Arc::new(PostgresStore::connect(u).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let cases: &[(&str, Option<StoreUrl>)] = &[
            (
                "sqlite:///tmp/a.db",
                Some(StoreUrl::Sqlite("/tmp/a.db".into())),
            ),
            ("./data/w.db", Some(StoreUrl::Sqlite("./data/w.db".into()))),
            (
                "postgres://u@h/db",
                Some(StoreUrl::Postgres("postgres://u@h/db".into())),
            ),
            (
                "postgresql://h/db",
                Some(StoreUrl::Postgres("postgresql://h/db".into())),
            ),
            ("mysql://h/db", None),
            ("sqlite://", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<StoreUrl>().ok(), *want, "{input}");
        }
    }

    #[test]
    fn display_redacts_password() {
        let url: StoreUrl = "postgres://alice:s3cret@db:5432/w"
            .parse()
            .unwrap_or_else(|_| StoreUrl::Sqlite("unreachable".into()));
        assert_eq!(url.to_string(), "postgres://alice:***@db:5432/w");
        assert!(!format!("{url:?}").contains("s3cret"));
    }
}
