//! Helpers shared by both backends: checked integer conversions, row decoding, batch
//! validation and sqlx error mapping.

use crate::{
    ApiTokenRow, CheckpointRow, EntryInsert, EntryRow, FederationRow, JoinConsume, JoinTokenRow,
    LedgerRow, PolicyVersionRow, Result, SigningKeyRow, StoreError,
};

/// Largest number of rows per multi-row `INSERT` (ledger rows, registration entries). At most
/// nine parameters per row keeps a statement far below SQLite's bound-parameter limit (32,766) and PostgreSQL's (65,535).
pub(crate) const INSERT_CHUNK_ROWS: usize = 500;

/// Raw ledger row as read from either backend:
/// `(seq, leaf_hash, leaf, time_unix_ms, actor, action)`.
pub(crate) type RawLedgerRow = (i64, Vec<u8>, Vec<u8>, i64, String, String);

/// Raw checkpoint row: `(tree_size, root, note, created_unix_ms)`.
pub(crate) type RawCheckpointRow = (i64, Vec<u8>, String, i64);

/// Raw token row: `(id, name, role, token_hash, created_unix_ms, revoked_unix_ms)`.
pub(crate) type RawTokenRow = (String, String, String, Vec<u8>, i64, Option<i64>);

/// Converts a caller-supplied `u64` to the database's signed 64-bit integer, refusing values
/// above `i64::MAX` instead of wrapping.
pub(crate) fn to_i64(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        StoreError::Database(format!(
            "{what} {value} is out of range (maximum {})",
            i64::MAX
        ))
    })
}

/// Converts a stored signed integer back to `u64`; a negative value means a corrupt row.
pub(crate) fn from_i64(table: &'static str, column: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("{column} is negative ({value})"),
    })
}

/// Converts a stored hash column to `[u8; 32]`; any other length means a corrupt row.
pub(crate) fn hash32(table: &'static str, column: &str, value: Vec<u8>) -> Result<[u8; 32]> {
    let len = value.len();
    <[u8; 32]>::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("{column} is {len} bytes, expected 32"),
    })
}

/// Checks a batch before any database work: `rows[i].seq == expected_size + i`, and every
/// sequence number leaves the resulting ledger size representable as `i64`.
///
/// Returns `expected_size` as `i64`. A misnumbered batch is a caller bug, not a race, so it is
/// reported as [`StoreError::Database`] (not [`StoreError::Conflict`], which invites a retry).
pub(crate) fn check_batch(expected_size: u64, rows: &[LedgerRow]) -> Result<i64> {
    let expected = to_i64("expected ledger size", expected_size)?;
    for (i, row) in rows.iter().enumerate() {
        let want = u64::try_from(i)
            .ok()
            .and_then(|i| expected_size.checked_add(i));
        if want != Some(row.seq) {
            return Err(StoreError::Database(format!(
                "ledger batch is not consecutive: row {i} has seq {}, expected {}",
                row.seq,
                want.map_or_else(|| "overflow".to_owned(), |w| w.to_string()),
            )));
        }
        // seq + 1 (the new ledger size) must fit in i64 too.
        let next = row.seq.saturating_add(1);
        to_i64("ledger size", next)?;
    }
    Ok(expected)
}

/// Pushes `VALUES (seq, leaf_hash, leaf, time_unix_ms, actor, action), …` for `rows` onto an
/// `INSERT INTO ledger_entries (…)` of either backend.
pub(crate) fn push_ledger_values<'a, DB>(
    qb: &mut sqlx::QueryBuilder<'a, DB>,
    rows: &'a [LedgerRow],
) -> Result<()>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a [u8]: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    // Validated by check_batch; re-checked here without casts.
    let mut seqs = Vec::with_capacity(rows.len());
    for row in rows {
        seqs.push(to_i64("seq", row.seq)?);
    }
    qb.push_values(rows.iter().zip(seqs), |mut b, (row, seq)| {
        b.push_bind(seq)
            .push_bind(&row.leaf_hash[..])
            .push_bind(&row.leaf[..])
            .push_bind(row.time_unix_ms)
            .push_bind(row.actor.as_str())
            .push_bind(row.action.as_str());
    });
    Ok(())
}

/// The ledger's size: one past its highest sequence number, 0 when empty. Every size check
/// of an append uses this one expression, the one-statement append's guard included.
pub(crate) const LEDGER_SIZE_SQL: &str = "SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger_entries";

/// The conflict returned when the ledger does not hold `expected` rows.
pub(crate) fn size_conflict(expected: u64, actual: u64) -> StoreError {
    StoreError::Conflict(format!(
        "ledger size is {actual}, expected {expected} (another writer appended first)"
    ))
}

pub(crate) fn ledger_row(raw: RawLedgerRow) -> Result<LedgerRow> {
    const TABLE: &str = "ledger_entries";
    let (seq, leaf_hash, leaf, time_unix_ms, actor, action) = raw;
    Ok(LedgerRow {
        seq: from_i64(TABLE, "seq", seq)?,
        leaf_hash: hash32(TABLE, "leaf_hash", leaf_hash)?,
        leaf,
        time_unix_ms,
        actor,
        action,
    })
}

pub(crate) fn checkpoint_row(raw: RawCheckpointRow) -> Result<CheckpointRow> {
    const TABLE: &str = "ledger_checkpoints";
    let (tree_size, root, note, created_unix_ms) = raw;
    Ok(CheckpointRow {
        tree_size: from_i64(TABLE, "tree_size", tree_size)?,
        root: hash32(TABLE, "root", root)?,
        note,
        created_unix_ms,
    })
}

pub(crate) fn token_row(raw: RawTokenRow) -> Result<ApiTokenRow> {
    let (id, name, role, token_hash, created_unix_ms, revoked_unix_ms) = raw;
    Ok(ApiTokenRow {
        id,
        name,
        role,
        token_hash: hash32("api_tokens", "token_hash", token_hash)?,
        created_unix_ms,
        revoked_unix_ms,
    })
}

/// Range `[from, from + limit)` as `(from, end)` in `i64`. `from` above `i64::MAX` is an
/// error; an end past `i64::MAX` is clamped (no row can have `seq == i64::MAX`, see
/// [`check_batch`]).
pub(crate) fn seq_range(from: u64, limit: u32) -> Result<(i64, i64)> {
    let start = to_i64("range start", from)?;
    let end = start.saturating_add(i64::from(limit));
    Ok((start, end))
}

/// Maps an sqlx error: unique violations become [`StoreError::Conflict`], everything else
/// [`StoreError::Database`].
pub(crate) fn db_err(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            // The database's own message names the constraint, never the values
            // (PostgreSQL keeps those in `detail`, which is not displayed).
            StoreError::Conflict(db.message().to_owned())
        }
        _ => StoreError::Database(err.to_string()),
    }
}

/// Which `api_tokens` column a unique violation is about, if it is one.
fn token_unique_column(err: &sqlx::Error) -> Option<&'static str> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    if !db.is_unique_violation() {
        return None;
    }
    // PostgreSQL reports the (explicitly named) constraint; SQLite only the message,
    // `UNIQUE constraint failed: api_tokens.name`.
    let column = match db.constraint() {
        Some("api_tokens_pkey") => "id",
        Some("api_tokens_name_key") => "name",
        Some("api_tokens_token_hash_key") => "token_hash",
        _ => {
            let msg = db.message();
            if msg.contains("api_tokens.token_hash") {
                "token_hash"
            } else if msg.contains("api_tokens.name") {
                "name"
            } else if msg.contains("api_tokens.id") {
                "id"
            } else {
                "unknown"
            }
        }
    };
    Some(column)
}

/// Maps an error from inserting a token, naming the duplicated column (never its value).
pub(crate) fn token_insert_err(err: sqlx::Error) -> StoreError {
    match token_unique_column(&err) {
        Some("id") => StoreError::Conflict("a token with this id already exists".to_owned()),
        Some("name") => StoreError::Conflict("a token with this name already exists".to_owned()),
        Some("token_hash") => {
            StoreError::Conflict("a token with this secret hash already exists".to_owned())
        }
        Some(_) => StoreError::Conflict("token violates a uniqueness rule".to_owned()),
        None => db_err(err),
    }
}

/// Raw entry row, in [`ENTRY_COLUMNS`] order.
pub(crate) type RawEntryRow = (
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

/// The entry columns, in [`RawEntryRow`] order.
pub(crate) const ENTRY_COLUMNS: &str = "id, spiffe_id, selectors, x509_ttl_secs, jwt_ttl_secs, \
     agent_kind, owner, description, created_unix_ms";

/// Binds `$row`'s fields to `$query` in [`ENTRY_COLUMNS`] order (its next nine parameters).
macro_rules! bind_entry {
    ($query:expr, $row:expr) => {{
        let row: &EntryRow = $row;
        $query
            .bind(&row.id)
            .bind(&row.spiffe_id)
            .bind(&row.selectors)
            .bind(row.x509_ttl_secs)
            .bind(row.jwt_ttl_secs)
            .bind(&row.agent_kind)
            .bind(&row.owner)
            .bind(&row.description)
            .bind(row.created_unix_ms)
    }};
}
pub(crate) use bind_entry;

pub(crate) fn entry_row(raw: RawEntryRow) -> EntryRow {
    let (
        id,
        spiffe_id,
        selectors,
        x509_ttl_secs,
        jwt_ttl_secs,
        agent_kind,
        owner,
        description,
        created_unix_ms,
    ) = raw;
    EntryRow {
        id,
        spiffe_id,
        selectors,
        x509_ttl_secs,
        jwt_ttl_secs,
        agent_kind,
        owner,
        description,
        created_unix_ms,
    }
}

/// Maps an error from inserting an entry: a duplicate id or SPIFFE ID + selectors.
pub(crate) fn entry_insert_err(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(
            "an entry with this id, or with this SPIFFE ID and these selectors, already exists"
                .to_owned(),
        ),
        _ => db_err(err),
    }
}

/// The outcome of one row of a batch insert, given the stored entry with the same SPIFFE ID
/// and selectors (if any): `Ok(Some(Existing))` when it is equal in every other field but id
/// and creation time, `Ok(None)` when the row must be inserted, a conflict naming the row's
/// `index` otherwise.
pub(crate) fn entry_batch_outcome(
    index: usize,
    row: &EntryRow,
    stored: Option<EntryRow>,
) -> Result<Option<EntryInsert>, StoreError> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    let same = stored.x509_ttl_secs == row.x509_ttl_secs
        && stored.jwt_ttl_secs == row.jwt_ttl_secs
        && stored.agent_kind == row.agent_kind
        && stored.owner == row.owner
        && stored.description == row.description;
    if same {
        Ok(Some(EntryInsert::Existing(stored.id)))
    } else {
        Err(StoreError::Conflict(format!(
            "entry {index}: entry `{}` already registers `{}` with these selectors, with other \
             lifetimes, kind, owner or description",
            stored.id, row.spiffe_id
        )))
    }
}

/// The outcome of each row of a batch insert, given the stored entries that share a SPIFFE ID
/// with the batch and the batch's ids already taken: `Created` for a row to insert,
/// `Existing` for one registered already exactly so (by an earlier row of the batch too), a
/// conflict naming the first row that differs from what is registered or whose id is taken.
pub(crate) fn plan_entry_batch(
    rows: &[EntryRow],
    stored: Vec<EntryRow>,
    mut taken: std::collections::HashSet<String>,
) -> Result<Vec<EntryInsert>, StoreError> {
    let mut known: std::collections::HashMap<(String, String), EntryRow> = stored
        .into_iter()
        .map(|e| ((e.spiffe_id.clone(), e.selectors.clone()), e))
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let key = (row.spiffe_id.clone(), row.selectors.clone());
        match entry_batch_outcome(index, row, known.get(&key).cloned())? {
            Some(existing) => out.push(existing),
            None if !taken.insert(row.id.clone()) => {
                return Err(StoreError::Conflict(format!(
                    "entry {index}: an entry with this id, or with this SPIFFE ID and these \
                     selectors, already exists"
                )));
            }
            None => {
                out.push(EntryInsert::Created(row.id.clone()));
                known.insert(key, row.clone());
            }
        }
    }
    Ok(out)
}

/// The rows of a batch its plan creates.
pub(crate) fn planned_new<'a>(rows: &'a [EntryRow], plan: &[EntryInsert]) -> Vec<&'a EntryRow> {
    rows.iter()
        .zip(plan)
        .filter(|(_, p)| matches!(p, EntryInsert::Created(_)))
        .map(|(r, _)| r)
        .collect()
}

/// Keys looked up per `IN (…)` list.
pub(crate) const LOOKUP_CHUNK: usize = 1000;

/// Rows of type `$row` from `$sql` followed by ` IN (…)` over `$keys` (strings),
/// [`LOOKUP_CHUNK`] keys per statement, on `$conn` (re-evaluated for each statement), with
/// query builder `$qb`.
macro_rules! fetch_in {
    ($qb:ty, $conn:expr, $row:ty, $sql:expr, $keys:expr) => {{
        let mut out: Vec<$row> = Vec::new();
        for chunk in $keys.chunks(common::LOOKUP_CHUNK) {
            let mut qb = <$qb>::new($sql);
            qb.push(" IN (");
            let mut list = qb.separated(", ");
            for key in chunk {
                list.push_bind(AsRef::<str>::as_ref(key));
            }
            qb.push(")");
            let rows: Vec<$row> = qb.build_query_as().fetch_all($conn).await.map_err(db_err)?;
            out.extend(rows);
        }
        out
    }};
}
pub(crate) use fetch_in;

/// Plans a batch (see [`plan_entry_batch`]) on `$conn` with query builder `$qb`: reads the
/// stored entries sharing the rows' SPIFFE IDs, and which of their ids are taken; evaluates
/// to the plan. The caller inserts the rows planned as created.
macro_rules! plan_entry_batch_on {
    ($qb:ty, $conn:expr, $rows:expr) => {{
        let rows: &[EntryRow] = $rows;
        let mut ids: Vec<&str> = rows.iter().map(|r| r.spiffe_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let stored: Vec<EntryRow> = common::fetch_in!(
            $qb,
            &mut *$conn,
            RawEntryRow,
            format!(
                "SELECT {} FROM registration_entries WHERE spiffe_id",
                common::ENTRY_COLUMNS
            ),
            ids
        )
        .into_iter()
        .map(common::entry_row)
        .collect();
        let own: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let taken: std::collections::HashSet<String> = common::fetch_in!(
            $qb,
            &mut *$conn,
            (String,),
            "SELECT id FROM registration_entries WHERE id",
            own
        )
        .into_iter()
        .map(|(id,)| id)
        .collect();
        common::plan_entry_batch(rows, stored, taken)?
    }};
}
pub(crate) use plan_entry_batch_on;

/// Raw signing key row, in [`SIGNING_KEY_COLUMNS`] order.
pub(crate) type RawSigningKeyRow = (
    String,
    String,
    String,
    Option<Vec<u8>>,
    Vec<u8>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// The signing key columns, in [`RawSigningKeyRow`] order.
pub(crate) const SIGNING_KEY_COLUMNS: &str = "id, kind, state, cert_der, key_sealed, \
     created_unix_ms, not_after_unix_ms, activated_unix_ms, retired_unix_ms, revoked_unix_ms";

pub(crate) fn signing_key_row(raw: RawSigningKeyRow) -> SigningKeyRow {
    let (
        id,
        kind,
        state,
        cert_der,
        key_sealed,
        created_unix_ms,
        not_after_unix_ms,
        activated_unix_ms,
        retired_unix_ms,
        revoked_unix_ms,
    ) = raw;
    SigningKeyRow {
        id,
        kind,
        state,
        cert_der,
        key_sealed,
        created_unix_ms,
        not_after_unix_ms,
        activated_unix_ms,
        retired_unix_ms,
        revoked_unix_ms,
    }
}

/// Raw federation row, in [`FEDERATION_COLUMNS`] order.
pub(crate) type RawFederationRow = (
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
);

/// The federation columns, in [`RawFederationRow`] order.
pub(crate) const FEDERATION_COLUMNS: &str = "trust_domain, bundle_url, endpoint_ca_pem, \
     bundle_json, created_unix_ms, refreshed_unix_ms, last_error, limits_json";

pub(crate) fn federation_row(raw: RawFederationRow) -> FederationRow {
    let (
        trust_domain,
        bundle_url,
        endpoint_ca_pem,
        bundle_json,
        created_unix_ms,
        refreshed_unix_ms,
        last_error,
        limits_json,
    ) = raw;
    FederationRow {
        trust_domain,
        bundle_url,
        endpoint_ca_pem,
        bundle_json,
        created_unix_ms,
        refreshed_unix_ms,
        last_error,
        limits_json,
    }
}

/// Raw join token row: `(token_hash, spiffe_id, created, expires, used)`.
pub(crate) type RawJoinTokenRow = (Vec<u8>, String, i64, i64, Option<i64>);

pub(crate) fn join_token_row(raw: RawJoinTokenRow) -> Result<JoinTokenRow> {
    let (hash, spiffe_id, created_unix_ms, expires_unix_ms, used_unix_ms) = raw;
    Ok(JoinTokenRow {
        token_hash: hash32("join_tokens", "token_hash", hash)?,
        spiffe_id,
        created_unix_ms,
        expires_unix_ms,
        used_unix_ms,
    })
}

/// Decides a join-token use from the row read inside the consuming transaction.
pub(crate) fn join_verdict(row: Option<JoinTokenRow>, now_unix_ms: i64) -> JoinConsume {
    match row {
        None => JoinConsume::NotFound,
        Some(r) if r.used_unix_ms.is_some() => JoinConsume::AlreadyUsed(r),
        Some(r) if now_unix_ms >= r.expires_unix_ms => JoinConsume::Expired(r),
        Some(r) => JoinConsume::Consumed(JoinTokenRow {
            used_unix_ms: Some(now_unix_ms),
            ..r
        }),
    }
}

/// Maps an error from inserting ledger rows: a duplicate `seq` means another writer got there
/// first (possible only if the engine's locking differs from what we assume).
pub(crate) fn ledger_insert_err(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(
            "ledger sequence number already taken (another writer appended first)".to_owned(),
        ),
        _ => db_err(err),
    }
}

/// Raw policy version row, in [`POLICY_COLUMNS`] order.
pub(crate) type RawPolicyRow = (
    String,
    i64,
    String,
    Option<String>,
    String,
    String,
    i64,
    String,
    Option<String>,
);

/// The policy version columns, in [`RawPolicyRow`] order.
pub(crate) const POLICY_COLUMNS: &str = "package, version, language, entrypoint, files_json, \
     content_sha256, created_unix_ms, created_by, note";

pub(crate) fn policy_row(raw: RawPolicyRow) -> PolicyVersionRow {
    let (
        package,
        version,
        language,
        entrypoint,
        files_json,
        content_sha256,
        created_unix_ms,
        created_by,
        note,
    ) = raw;
    PolicyVersionRow {
        package,
        version,
        language,
        entrypoint,
        files_json,
        content_sha256,
        created_unix_ms,
        created_by,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64) -> LedgerRow {
        LedgerRow {
            seq,
            leaf_hash: [0; 32],
            leaf: vec![],
            time_unix_ms: 0,
            actor: String::new(),
            action: String::new(),
        }
    }

    #[test]
    fn conversions_are_checked() {
        assert_eq!(to_i64("x", 5).unwrap(), 5);
        assert!(to_i64("x", u64::MAX).is_err());
        assert!(to_i64("x", i64::MAX as u64 + 1).is_err());
        assert!(matches!(
            from_i64("t", "c", -1),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            hash32("t", "c", vec![0; 31]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            hash32("t", "c", vec![0; 33]),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(hash32("t", "c", vec![7; 32]).unwrap(), [7; 32]);
    }

    #[test]
    fn corrupt_rows_are_reported() {
        let raw = (0, vec![0; 5], vec![], 0, String::new(), String::new());
        let err = ledger_row(raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt row in `ledger_entries`: leaf_hash is 5 bytes, expected 32"
        );
        assert!(matches!(
            checkpoint_row((-3, vec![0; 32], String::new(), 0)),
            Err(StoreError::Corrupt {
                table: "ledger_checkpoints",
                ..
            })
        ));
        assert!(matches!(
            token_row((String::new(), String::new(), String::new(), vec![], 0, None)),
            Err(StoreError::Corrupt {
                table: "api_tokens",
                ..
            })
        ));
    }

    #[test]
    fn batches_are_validated() {
        assert_eq!(check_batch(3, &[row(3), row(4)]).unwrap(), 3);
        assert!(check_batch(3, &[row(3), row(5)]).is_err());
        assert!(check_batch(3, &[row(4)]).is_err());
        assert!(check_batch(u64::MAX, &[row(u64::MAX)]).is_err());
        // seq i64::MAX would make the size i64::MAX + 1.
        let max = i64::MAX as u64;
        assert!(check_batch(max - 1, &[row(max - 1)]).is_ok());
        assert!(check_batch(max, &[row(max)]).is_err());
    }

    #[test]
    fn ranges_clamp_the_end() {
        assert_eq!(seq_range(10, 5).unwrap(), (10, 15));
        assert_eq!(seq_range(i64::MAX as u64, 5).unwrap(), (i64::MAX, i64::MAX));
        assert!(seq_range(u64::MAX, 1).is_err());
    }
}
