//! The dynamic PostgreSQL credentials engine.
//!
//! An operator defines [`RoleTemplate`]s ("`db_read_summary` = SELECT on `customers` and
//! `orders`") and an [`AdminDsn`] for each target database, with its [`TargetTls`]: plain TCP,
//! or TLS verified against the target's own CA and host name (`verify-full`). For a lease the
//! engine creates a short-lived login role from a template ([`create_role`]), in one
//! transaction so that a failure leaves nothing behind, and drops it again on revocation or
//! expiry ([`revoke_role`]), first terminating the role's open sessions. A server keeps a
//! small pool of admin sessions per target ([`TargetPools`]); the free functions open one
//! session per call.
//!
//! Everything that reaches SQL text has been parsed into a newtype first: identifiers are
//! plain PostgreSQL identifiers, quoted with libpq's rules (`postgres_protocol::escape`), role
//! names always carry the engine's `w_` prefix, and passwords are generated here and sent only
//! as a SCRAM-SHA-256 verifier computed on this side (`postgres_protocol::password`, which
//! applies SASLprep as PostgreSQL does), so the plaintext never reaches the server, its logs or
//! `pg_stat_activity`.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    future::Future,
    io,
    pin::Pin,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use deadpool_postgres::{Hook, ManagerConfig, PoolError, RecyclingMethod};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use rand::{Rng, distributions::Alphanumeric, rngs::OsRng};
use ring::digest;
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{
    Client, Row, Socket,
    config::{Host, SslMode},
    error::SqlState,
    tls::{ChannelBinding, MakeTlsConnect, TlsConnect},
};
use tokio_rustls::rustls::{
    self, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use zeroize::Zeroizing;

use crate::error::{BrokerError, Result};

/// Prefix of every role the engine creates; [`revoke_role`] drops nothing else.
pub const ROLE_PREFIX: &str = "w_";
/// How long connecting to a target (TLS handshake and login included) may take before it
/// counts as [`BrokerError::Unavailable`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most admin sessions a [`TargetPools`] keeps open to one target.
pub const POOL_MAX_SESSIONS: usize = 4;
/// How long a pooled admin session may sit unused before it is closed.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a pooled admin session is reused, however busy (so a server-side change such as a
/// new certificate or a rotated admin password is picked up).
pub const POOL_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Largest `ca_pem` accepted by [`TargetTls::verify_full`], in bytes.
pub const MAX_CA_PEM_BYTES: usize = 64 * 1024;
/// Upper bound on a whole [`create_role`], [`revoke_role`] or [`check`], connecting included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// `CONNECTION LIMIT` of every created role: an agent needs few sessions, and a runaway one
/// must not exhaust the target's connection slots.
pub const CONNECTION_LIMIT: u32 = 10;
/// Length of generated passwords, in alphanumeric characters (about 238 bits).
pub const PASSWORD_LEN: usize = 40;
/// Most grants in one template.
pub const MAX_GRANTS: usize = 32;
/// Most tables in one grant.
pub const MAX_TABLES_PER_GRANT: usize = 64;
/// Most table entries over all grants of a template.
pub const MAX_TABLES: usize = 256;
/// Largest template document accepted by [`RoleTemplate::from_json`], in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1); longer ones are truncated silently
/// by the server, so they are refused here.
const MAX_IDENTIFIER_BYTES: usize = 63;
/// Server-side bounds set on every transaction the engine runs, so that a table locked by a
/// long migration cannot hold a lease operation forever.
const LOCK_TIMEOUT: &str = "10s";
const STATEMENT_TIMEOUT: &str = "30s";
/// How often the pool looks for idle and old sessions to close.
const POOL_REAPER_RATE: Duration = Duration::from_secs(5);
/// Longest password [`Password::from_secret`] takes, in bytes.
const MAX_PASSWORD_BYTES: usize = 1024;
/// How much of the template name and of the lease id go into a role name.
const ROLE_TEMPLATE_PART: usize = 24;
const ROLE_LEASE_PART: usize = 12;
const ROLE_RANDOM_PART: usize = 10;
/// `application_name` of the engine's sessions unless the DSN sets one, so a DBA can tell
/// them apart in `pg_stat_activity`.
const APPLICATION_NAME: &str = "warden-broker";

// ---------------------------------------------------------------------------------------------
// Identifiers and templates (pure)
// ---------------------------------------------------------------------------------------------

/// A plain PostgreSQL identifier: `[A-Za-z_][A-Za-z0-9_$]*`, at most 63 bytes.
///
/// The engine always double-quotes identifiers, so the name is matched exactly, case included:
/// `Customers` names a table created as `"Customers"`, not `customers`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identifier(String);

impl Identifier {
    /// Parses `s`, refusing anything but a plain identifier.
    pub fn parse(s: &str) -> Result<Identifier> {
        match identifier_problem(s) {
            None => Ok(Identifier(s.to_owned())),
            Some(problem) => Err(BrokerError::InvalidIdentifier {
                value: snippet(s),
                reason: format!("it {problem}"),
            }),
        }
    }

    /// The identifier as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier double-quoted for SQL text, so PostgreSQL matches it exactly.
    pub fn quoted(&self) -> String {
        // INVARIANT: a parsed identifier holds only ASCII letters, digits, `_` and `$`, so
        // there is no NUL for `quote_ident` to refuse.
        escape_identifier(&self.0)
    }
}

impl FromStr for Identifier {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Identifier> {
        Identifier::parse(s)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why `s` is not a plain identifier, as a predicate for "it …", or `None` if it is one.
fn identifier_problem(s: &str) -> Option<&'static str> {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return Some("is empty");
    };
    if s.len() > MAX_IDENTIFIER_BYTES {
        Some("is longer than 63 bytes")
    } else if !(first.is_ascii_alphabetic() || first == '_') {
        Some("must start with an ASCII letter or `_`")
    } else if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
        Some("may contain only ASCII letters, digits, `_` and `$`")
    } else {
        None
    }
}

/// A table, always schema-qualified: `orders` means `public.orders`, `sales.orders` is table
/// `orders` in schema `sales`.
///
/// Tables in system schemas (`pg_catalog`, `pg_toast`, any other `pg_…`, and
/// `information_schema`) are refused: no template should hand out the catalogs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    schema: Identifier,
    name: Identifier,
}

impl TableName {
    /// Parses `name` or `schema.name`, each part a plain [`Identifier`].
    pub fn parse(s: &str) -> Result<TableName> {
        let invalid = |reason: String| BrokerError::InvalidIdentifier {
            value: snippet(s),
            reason,
        };
        let (schema, name) = s.split_once('.').unwrap_or(("public", s));
        if name.contains('.') {
            return Err(invalid(
                "a table is `name` or `schema.name`, with at most one `.`".to_owned(),
            ));
        }
        if let Some(problem) = identifier_problem(schema) {
            return Err(invalid(format!("the schema {problem}")));
        }
        if let Some(problem) = identifier_problem(name) {
            return Err(invalid(format!("the table name {problem}")));
        }
        let lower = schema.to_ascii_lowercase();
        if lower.starts_with("pg_") || lower == "information_schema" {
            return Err(invalid(format!(
                "`{schema}` is a system schema, whose tables are never granted"
            )));
        }
        Ok(TableName {
            schema: Identifier(schema.to_owned()),
            name: Identifier(name.to_owned()),
        })
    }

    /// The schema (`public` if none was given).
    pub fn schema(&self) -> &Identifier {
        &self.schema
    }

    /// The table's name within its schema.
    pub fn name(&self) -> &Identifier {
        &self.name
    }

    /// `"schema"."name"`, for SQL text.
    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.name.quoted())
    }
}

impl FromStr for TableName {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<TableName> {
        TableName::parse(s)
    }
}

/// `schema.name`, unquoted (what a template says after parsing).
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A table privilege a template may grant. `ALL` is not one of them on purpose: a template
/// says what it hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Privilege {
    /// `SELECT`: read rows.
    Select,
    /// `INSERT`: add rows.
    Insert,
    /// `UPDATE`: change rows.
    Update,
    /// `DELETE`: remove rows.
    Delete,
    /// `TRUNCATE`: empty the table.
    Truncate,
    /// `REFERENCES`: create foreign keys pointing at the table.
    References,
    /// `TRIGGER`: create triggers on the table.
    Trigger,
}

impl Privilege {
    const ALL: [Privilege; 7] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
        Privilege::Truncate,
        Privilege::References,
        Privilege::Trigger,
    ];

    /// Parses a privilege keyword, ignoring case (`select` is [`Privilege::Select`]).
    pub fn parse(s: &str) -> Result<Privilege> {
        Privilege::from_keyword(s).ok_or_else(|| BrokerError::InvalidRoleTemplate {
            reason: unknown_privilege(s),
        })
    }

    fn from_keyword(s: &str) -> Option<Privilege> {
        Privilege::ALL
            .into_iter()
            .find(|p| p.as_sql().eq_ignore_ascii_case(s))
    }

    /// The SQL keyword, e.g. `SELECT`.
    pub fn as_sql(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Truncate => "TRUNCATE",
            Privilege::References => "REFERENCES",
            Privilege::Trigger => "TRIGGER",
        }
    }
}

fn unknown_privilege(s: &str) -> String {
    format!(
        "unknown privilege `{}`: expected SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES \
         or TRIGGER",
        snippet(s)
    )
}

impl FromStr for Privilege {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Privilege> {
        Privilege::parse(s)
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

/// One entry of a template: these privileges on these tables. Never empty, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    privileges: Vec<Privilege>,
    tables: Vec<TableName>,
}

impl Grant {
    /// The privileges, in the template's order.
    pub fn privileges(&self) -> &[Privilege] {
        &self.privileges
    }

    /// The tables, in the template's order.
    pub fn tables(&self) -> &[TableName] {
        &self.tables
    }
}

/// What a role made from a template may do: table grants, nothing else. The role also gets
/// `CONNECT` on the target database and `USAGE` on the schemas of the granted tables, which
/// it needs to use them at all.
///
/// Written by operators as JSON:
/// `{"grants":[{"privileges":["SELECT"],"tables":["customers","sales.orders"]}]}`. Unknown
/// fields, empty lists, duplicates, unknown privileges, system schemas and more than
/// [`MAX_GRANTS`] grants, [`MAX_TABLES_PER_GRANT`] tables in a grant or [`MAX_TABLES`] tables
/// in all are refused, with the position of the culprit (`grants[0].tables[1]`). The same
/// rules apply when a template is deserialized as part of something larger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTemplate", into = "RawTemplate")]
pub struct RoleTemplate {
    grants: Vec<Grant>,
}

impl RoleTemplate {
    /// Parses a template document of at most [`MAX_TEMPLATE_BYTES`].
    pub fn from_json(json: &str) -> Result<RoleTemplate> {
        if json.len() > MAX_TEMPLATE_BYTES {
            return Err(BrokerError::InvalidRoleTemplate {
                reason: format!("the template is larger than {MAX_TEMPLATE_BYTES} bytes"),
            });
        }
        let raw: RawTemplate =
            serde_json::from_str(json).map_err(|e| BrokerError::InvalidRoleTemplate {
                reason: e.to_string(),
            })?;
        RoleTemplate::try_from(raw)
    }

    /// The grants, in the template's order (at least one).
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// The schemas of all granted tables, each once, sorted.
    pub fn schemas(&self) -> BTreeSet<&Identifier> {
        self.grants
            .iter()
            .flat_map(|g| g.tables.iter().map(TableName::schema))
            .collect()
    }
}

impl FromStr for RoleTemplate {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<RoleTemplate> {
        RoleTemplate::from_json(s)
    }
}

/// A template's JSON shape before the rules are checked.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    grants: Vec<RawGrant>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    privileges: Vec<String>,
    tables: Vec<String>,
}

impl TryFrom<RawTemplate> for RoleTemplate {
    type Error = BrokerError;

    fn try_from(raw: RawTemplate) -> Result<RoleTemplate> {
        let invalid = |reason: String| BrokerError::InvalidRoleTemplate { reason };
        if raw.grants.is_empty() {
            return Err(invalid("the template has no grants".to_owned()));
        }
        if raw.grants.len() > MAX_GRANTS {
            return Err(invalid(format!(
                "the template has more than {MAX_GRANTS} grants"
            )));
        }
        let mut total_tables = 0;
        let mut grants = Vec::with_capacity(raw.grants.len());
        for (g, raw_grant) in raw.grants.iter().enumerate() {
            if raw_grant.privileges.is_empty() {
                return Err(invalid(format!("grants[{g}].privileges is empty")));
            }
            if raw_grant.tables.is_empty() {
                return Err(invalid(format!("grants[{g}].tables is empty")));
            }
            if raw_grant.tables.len() > MAX_TABLES_PER_GRANT {
                return Err(invalid(format!(
                    "grants[{g}].tables has more than {MAX_TABLES_PER_GRANT} entries"
                )));
            }
            total_tables += raw_grant.tables.len();
            if total_tables > MAX_TABLES {
                return Err(invalid(format!(
                    "the template has more than {MAX_TABLES} tables"
                )));
            }
            // Duplicates end the loop, so `privileges` stays within the seven there are.
            let mut privileges: Vec<Privilege> = Vec::new();
            for (i, text) in raw_grant.privileges.iter().enumerate() {
                let privilege = Privilege::from_keyword(text).ok_or_else(|| {
                    invalid(format!(
                        "grants[{g}].privileges[{i}]: {}",
                        unknown_privilege(text)
                    ))
                })?;
                if privileges.contains(&privilege) {
                    return Err(invalid(format!(
                        "grants[{g}].privileges[{i}]: duplicate privilege `{privilege}`"
                    )));
                }
                privileges.push(privilege);
            }
            let mut tables: Vec<TableName> = Vec::with_capacity(raw_grant.tables.len());
            for (i, text) in raw_grant.tables.iter().enumerate() {
                let table = TableName::parse(text)
                    .map_err(|e| invalid(format!("grants[{g}].tables[{i}]: {e}")))?;
                if tables.contains(&table) {
                    return Err(invalid(format!(
                        "grants[{g}].tables[{i}]: duplicate table `{table}`"
                    )));
                }
                tables.push(table);
            }
            grants.push(Grant { privileges, tables });
        }
        Ok(RoleTemplate { grants })
    }
}

impl From<RoleTemplate> for RawTemplate {
    fn from(template: RoleTemplate) -> RawTemplate {
        RawTemplate {
            grants: template
                .grants
                .iter()
                .map(|g| RawGrant {
                    privileges: g.privileges.iter().map(|p| p.as_sql().to_owned()).collect(),
                    tables: g.tables.iter().map(TableName::to_string).collect(),
                })
                .collect(),
        }
    }
}

/// The name an operator gives a template (`db_read_summary`): `[a-z_][a-z0-9_]*`, at most 63
/// bytes. It becomes part of role names and lease ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplateName(String);

impl TemplateName {
    /// Parses `s`, refusing anything but lowercase letters, digits and `_`.
    pub fn parse(s: &str) -> Result<TemplateName> {
        let invalid = |reason: &str| BrokerError::InvalidIdentifier {
            value: snippet(s),
            reason: format!("a template name {reason}"),
        };
        let Some(first) = s.bytes().next() else {
            return Err(invalid("is empty"));
        };
        if s.len() > MAX_IDENTIFIER_BYTES {
            return Err(invalid("is longer than 63 bytes"));
        }
        if !(first.is_ascii_lowercase() || first == b'_') {
            return Err(invalid("must start with a lowercase ASCII letter or `_`"));
        }
        if !s.bytes().all(is_role_byte) {
            return Err(invalid(
                "may contain only lowercase ASCII letters, digits and `_`",
            ));
        }
        Ok(TemplateName(s.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TemplateName {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<TemplateName> {
        TemplateName::parse(s)
    }
}

impl fmt::Display for TemplateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a role the engine creates: `w_` followed by lowercase letters, digits and `_`,
/// at most 63 bytes. Holding one is what lets [`revoke_role`] drop a role, so it can never
/// name `postgres`, a `pg_…` role or anyone else's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoleName(String);

impl RoleName {
    /// Parses `s`, refusing anything the engine could not have generated.
    pub fn parse(s: &str) -> Result<RoleName> {
        let invalid = |reason: &str| BrokerError::InvalidRoleName {
            name: snippet(s),
            reason: reason.to_owned(),
        };
        let Some(rest) = s.strip_prefix(ROLE_PREFIX) else {
            return Err(invalid("engine roles start with `w_`"));
        };
        if rest.is_empty() {
            return Err(invalid("nothing follows the `w_` prefix"));
        }
        if s.len() > MAX_IDENTIFIER_BYTES {
            return Err(invalid("it is longer than 63 bytes"));
        }
        if !rest.bytes().all(is_role_byte) {
            return Err(invalid(
                "it may contain only lowercase ASCII letters, digits and `_`",
            ));
        }
        Ok(RoleName(s.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name double-quoted, for SQL text.
    pub fn quoted(&self) -> String {
        // INVARIANT: `w_` and lowercase letters, digits and `_` only: no NUL.
        escape_identifier(&self.0)
    }
}

impl FromStr for RoleName {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<RoleName> {
        RoleName::parse(s)
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_role_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

/// What the random tail of a role name is drawn from.
const ROLE_RANDOM_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

// The parts of a generated role name, with their three `_`, fit in an identifier.
const _: () = assert!(
    ROLE_PREFIX.len() + ROLE_TEMPLATE_PART + ROLE_LEASE_PART + ROLE_RANDOM_PART + 2
        <= MAX_IDENTIFIER_BYTES
);

/// A fresh role name for a lease from `template`: `w_<template>_<lease>_<random>`, with the
/// template name cut to 24 bytes, up to 12 characters of the lease id's last segment (its
/// random part, without `lse_`) so a DBA can tell which lease a role belongs to, and 10
/// random characters that make the name unique even for the same lease.
pub fn role_name(template: &TemplateName, lease_id: &str) -> RoleName {
    let tail = lease_id.rsplit_once('/').map_or(lease_id, |(_, tail)| tail);
    let tail = tail.strip_prefix("lse_").unwrap_or(tail);
    let lease: String = tail
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(|c| c.to_ascii_lowercase())
        .take(ROLE_LEASE_PART)
        .collect();
    let mut name = String::with_capacity(MAX_IDENTIFIER_BYTES);
    name.push_str(ROLE_PREFIX);
    // Template names are ASCII, so bytes are characters.
    name.extend(template.as_str().chars().take(ROLE_TEMPLATE_PART));
    if !lease.is_empty() {
        name.push('_');
        name.push_str(&lease);
    }
    name.push('_');
    let mut rng = OsRng;
    name.extend((0..ROLE_RANDOM_PART).map(|_| {
        let i = rng.gen_range(0..ROLE_RANDOM_CHARS.len());
        ROLE_RANDOM_CHARS.get(i).map_or('0', |&b| char::from(b))
    }));
    // INVARIANT: `w_` and then only lowercase letters, digits and `_`, at most 63 bytes (see
    // the assertion above), which is all `RoleName::parse` asks.
    RoleName(name)
}

// ---------------------------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------------------------

/// A role password. Wiped from memory when dropped, never printed by `Debug`; the server only
/// ever sees its [`scram_verifier`](Password::scram_verifier).
pub struct Password(Zeroizing<String>);

impl Password {
    /// A password chosen elsewhere (the engine makes its own with [`generate_password`]):
    /// 1 to 1024 bytes, no NUL (PostgreSQL's protocol cannot carry one).
    pub fn from_secret(secret: &str) -> Result<Password> {
        let invalid = |reason: &str| BrokerError::InvalidSecret(format!("password: {reason}"));
        if secret.is_empty() {
            return Err(invalid("it is empty"));
        }
        if secret.len() > MAX_PASSWORD_BYTES {
            return Err(invalid("it is longer than 1024 bytes"));
        }
        if secret.contains('\0') {
            return Err(invalid(
                "it contains a NUL byte, which PostgreSQL cannot take",
            ));
        }
        Ok(Password(Zeroizing::new(secret.to_owned())))
    }

    /// The plaintext, for handing to the agent once.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// A SCRAM-SHA-256 verifier for this password with a fresh random salt, in the form
    /// PostgreSQL stores (`SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`, RFC 5802 §3,
    /// RFC 7677). The password is first normalized with SASLprep (RFC 4013) exactly as
    /// PostgreSQL and libpq do, so a client logs in with the password as typed, whatever
    /// Unicode form it arrives in. PostgreSQL accepts the verifier as the `PASSWORD` of a role
    /// and keeps it as it is.
    pub fn scram_verifier(&self) -> String {
        postgres_protocol::password::scram_sha_256(self.0.as_bytes())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A new password of [`PASSWORD_LEN`] random ASCII letters and digits from the operating
/// system's generator: no characters that need escaping in a connection string or a shell.
pub fn generate_password() -> Password {
    // Reserved up front so the secret is never copied by a reallocation.
    let mut password = Zeroizing::new(String::with_capacity(PASSWORD_LEN));
    password.extend(
        OsRng
            .sample_iter(&Alphanumeric)
            .take(PASSWORD_LEN)
            .map(char::from),
    );
    Password(password)
}

// ---------------------------------------------------------------------------------------------
// TLS to the target
// ---------------------------------------------------------------------------------------------

/// Whether the engine's sessions to a target use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TlsMode {
    /// Plain TCP (or a Unix socket): for a target on the same machine or a network the
    /// operator trusts.
    Disable,
    /// TLS is required; the server's certificate must chain to the target's own CA and name
    /// the host of the connection string (libpq's `sslmode=verify-full`).
    VerifyFull,
}

impl TlsMode {
    /// Parses `disable` or `verify-full`.
    pub fn parse(s: &str) -> Result<TlsMode> {
        match s {
            "disable" => Ok(TlsMode::Disable),
            "verify-full" => Ok(TlsMode::VerifyFull),
            other => Err(BrokerError::InvalidTls {
                reason: format!(
                    "unknown TLS mode `{}`: expected `disable` or `verify-full`",
                    snippet(other)
                ),
            }),
        }
    }

    /// `disable` or `verify-full`, as libpq's `sslmode` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the engine secures its sessions to one target: [`TlsMode::Disable`], or
/// [`TlsMode::VerifyFull`] with the target's CA certificates — the only trust anchors used for
/// that target (no public or system roots).
#[derive(Clone)]
pub struct TargetTls {
    mode: TlsMode,
    ca_pem: Option<Arc<str>>,
    client: Option<Arc<ClientConfig>>,
}

impl TargetTls {
    /// No TLS.
    pub fn disable() -> TargetTls {
        TargetTls {
            mode: TlsMode::Disable,
            ca_pem: None,
            client: None,
        }
    }

    /// TLS verified against `ca_pem`: one or more PEM `CERTIFICATE`s, at most
    /// [`MAX_CA_PEM_BYTES`]. A private key in it is refused (it does not belong there).
    pub fn verify_full(ca_pem: &str) -> Result<TargetTls> {
        let invalid = |reason: String| BrokerError::InvalidTls { reason };
        if ca_pem.len() > MAX_CA_PEM_BYTES {
            return Err(invalid(format!(
                "`ca_pem` is larger than {MAX_CA_PEM_BYTES} bytes"
            )));
        }
        if ca_pem.contains("PRIVATE KEY") {
            return Err(invalid(
                "`ca_pem` holds a private key: give only the CA's certificate".to_owned(),
            ));
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).enumerate() {
            let cert = cert.map_err(|e| invalid(format!("`ca_pem` is not PEM: {e}")))?;
            roots.add(cert).map_err(|e| {
                invalid(format!(
                    "certificate {i} of `ca_pem` cannot be a trust anchor: {e}"
                ))
            })?;
        }
        if roots.is_empty() {
            return Err(invalid("`ca_pem` holds no PEM certificate".to_owned()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TargetTls {
            mode: TlsMode::VerifyFull,
            ca_pem: Some(Arc::from(ca_pem)),
            client: Some(Arc::new(client)),
        })
    }

    /// The mode.
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The CA certificates (PEM) for [`TlsMode::VerifyFull`]; what a client of the target
    /// needs as `sslrootcert`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }
}

impl fmt::Debug for TargetTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetTls")
            .field("mode", &self.mode)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

/// tokio-postgres' TLS hook: rustls with the target's CA alone; the host name checked is the
/// connection string's host (a DNS name, or an IP address against the certificate's IP SANs).
#[derive(Clone)]
struct MakeTls(Option<Arc<ClientConfig>>);

impl MakeTlsConnect<Socket> for MakeTls {
    type Stream = TlsStream;
    type TlsConnect = TlsConnector;
    type Error = io::Error;

    // Called for every connection, TLS or not: the checks happen in `connect`, which runs
    // only when TLS is required.
    fn make_tls_connect(&mut self, domain: &str) -> io::Result<TlsConnector> {
        Ok(TlsConnector {
            client: self.0.clone(),
            domain: domain.to_owned(),
        })
    }
}

struct TlsConnector {
    client: Option<Arc<ClientConfig>>,
    domain: String,
}

impl TlsConnect<Socket> for TlsConnector {
    type Stream = TlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let client = self
                .client
                .ok_or_else(|| io::Error::other("TLS is disabled for this target"))?;
            let name = ServerName::try_from(self.domain)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = tokio_rustls::TlsConnector::from(client)
                .connect(name, stream)
                .await?;
            Ok(TlsStream(stream))
        })
    }
}

/// A verified TLS session to a target.
struct TlsStream(tokio_rustls::client::TlsStream<Socket>);

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl tokio_postgres::tls::TlsStream for TlsStream {
    // No `tls-server-end-point` binding: the admin logs in with SCRAM-SHA-256 over a session
    // whose certificate was already verified against the target's CA.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/// The operator's admin connection string for a target database (`postgres://…` or
/// `postgresql://…`, one host, a user) and its [`TargetTls`]. `Debug` and `Display` show it
/// with the password replaced by `***`.
///
/// TLS is set per target, not in the string: `sslmode` other than `disable` and the `ssl…`
/// file parameters are refused. [`AdminDsn::parse`] gives a target without TLS;
/// [`AdminDsn::configure`] applies an operator's TLS settings and their defaults. The admin
/// needs `CREATEROLE` (or superuser) and must own, or hold `WITH GRANT OPTION`, whatever its
/// templates grant; [`check`] tests the first part.
#[derive(Clone)]
pub struct AdminDsn {
    url: Arc<Zeroizing<String>>,
    config: tokio_postgres::Config,
    tls: TargetTls,
    unix_socket: bool,
    host: String,
    port: u16,
    database: String,
    redacted: String,
    target: String,
    fingerprint: [u8; 32],
}

/// What the server seals for a target: the connection string and its TLS settings.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedTarget {
    dsn: String,
    tls: TlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_pem: Option<String>,
}

impl AdminDsn {
    /// Parses a connection URL, for a target without TLS.
    pub fn parse(s: &str) -> Result<AdminDsn> {
        let invalid = |reason: String| BrokerError::InvalidDsn { reason };
        let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        else {
            return Err(invalid(
                "expected `postgres://…` or `postgresql://…`".to_owned(),
            ));
        };
        let secret = url_password(rest);
        let mut config = tokio_postgres::Config::from_str(s)
            .map_err(|e| invalid(redact(&error_chain(&e), secret)))?;
        if !config.get_hostaddrs().is_empty() {
            return Err(invalid(
                "`hostaddr` is not supported: put the address in the host part".to_owned(),
            ));
        }
        let (host, unix_socket) = match config.get_hosts() {
            [] => return Err(invalid("the connection string names no host".to_owned())),
            [Host::Tcp(host)] => (host.clone(), false),
            [Host::Unix(path)] => (path.display().to_string(), true),
            _ => return Err(invalid("give exactly one host".to_owned())),
        };
        let port = match config.get_ports() {
            [] => 5432,
            [port] => *port,
            _ => return Err(invalid("give exactly one port".to_owned())),
        };
        let Some(user) = config.get_user().map(str::to_owned) else {
            return Err(invalid("the connection string names no user".to_owned()));
        };
        if config.get_ssl_mode() == SslMode::Require {
            return Err(invalid(
                "TLS is set per target (`tls` and `ca_pem`), not with `sslmode` in the \
                 connection string"
                    .to_owned(),
            ));
        }
        let database = config.get_dbname().unwrap_or(&user).to_owned();
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let target = format!("{host}:{port}/{database}");
        let password = if secret.is_some() { ":***" } else { "" };
        let redacted = format!("postgres://{user}{password}@{target}");
        let mut dsn = AdminDsn {
            url: Arc::new(Zeroizing::new(s.to_owned())),
            config,
            tls: TargetTls::disable(),
            unix_socket,
            host,
            port,
            database,
            redacted,
            target,
            fingerprint: [0; 32],
        };
        dsn.apply_tls(TargetTls::disable())?;
        Ok(dsn)
    }

    /// The connection string with an operator's TLS settings: `tls` is `disable` or
    /// `verify-full`, `ca_pem` the CA certificates `verify-full` checks the server against.
    ///
    /// Defaults: with `ca_pem` and no `tls`, `verify-full`. With neither, `disable` for a
    /// target on a Unix socket or a loopback address (`localhost`, `127.0.0.0/8`, `::1`),
    /// whose traffic never leaves the machine; any other target must say which it wants, so
    /// an admin session never crosses a network in the clear unless an operator chose so.
    pub fn configure(s: &str, tls: Option<&str>, ca_pem: Option<&str>) -> Result<AdminDsn> {
        let mut dsn = AdminDsn::parse(s)?;
        let invalid = |reason: String| BrokerError::InvalidTls { reason };
        let mode = tls.map(TlsMode::parse).transpose()?;
        let tls = match (mode, ca_pem) {
            (Some(TlsMode::Disable), Some(_)) => {
                return Err(invalid(
                    "`ca_pem` goes with `tls` `verify-full`, not `disable`".to_owned(),
                ));
            }
            (Some(TlsMode::Disable), None) => TargetTls::disable(),
            (Some(TlsMode::VerifyFull) | None, Some(pem)) => TargetTls::verify_full(pem)?,
            (Some(TlsMode::VerifyFull), None) => {
                return Err(invalid(
                    "`verify-full` needs `ca_pem`: the CA certificate the target's certificate \
                     must chain to"
                        .to_owned(),
                ));
            }
            (None, None) if dsn.is_local() => TargetTls::disable(),
            (None, None) => {
                return Err(invalid(format!(
                    "`{}` is reached over the network: give `tls` `verify-full` with `ca_pem`, \
                     or `tls` `disable` to connect without TLS",
                    dsn.host
                )));
            }
        };
        dsn.apply_tls(tls)?;
        Ok(dsn)
    }

    /// The same target with other TLS settings. `verify-full` over a Unix socket is refused
    /// (PostgreSQL does not speak TLS there).
    pub fn with_tls(mut self, tls: TargetTls) -> Result<AdminDsn> {
        self.apply_tls(tls)?;
        Ok(self)
    }

    fn apply_tls(&mut self, tls: TargetTls) -> Result<()> {
        if self.unix_socket && tls.mode == TlsMode::VerifyFull {
            return Err(BrokerError::InvalidTls {
                reason: "a target on a Unix socket cannot use `verify-full`".to_owned(),
            });
        }
        self.config.ssl_mode(match tls.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::VerifyFull => SslMode::Require,
        });
        let mut context = digest::Context::new(&digest::SHA256);
        for part in [
            self.url.as_bytes(),
            tls.mode.as_str().as_bytes(),
            tls.ca_pem().unwrap_or_default().as_bytes(),
        ] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        self.fingerprint.copy_from_slice(context.finish().as_ref());
        self.tls = tls;
        Ok(())
    }

    /// The document a server seals to keep this target: connection string, TLS mode, CA.
    pub fn to_sealable(&self) -> Zeroizing<Vec<u8>> {
        let doc = SealedTarget {
            dsn: self.url.as_str().to_owned(),
            tls: self.tls.mode,
            ca_pem: self.tls.ca_pem().map(str::to_owned),
        };
        // Serializing a struct of strings cannot fail; an empty document would not open.
        Zeroizing::new(serde_json::to_vec(&doc).unwrap_or_default())
    }

    /// Reads what [`to_sealable`](AdminDsn::to_sealable) wrote. A bare connection string (how
    /// targets were kept before TLS settings existed) is a target without TLS, as it always
    /// was.
    pub fn from_sealed(bytes: &[u8]) -> Result<AdminDsn> {
        let text = std::str::from_utf8(bytes).map_err(|_| BrokerError::InvalidDsn {
            reason: "the stored target is not UTF-8".to_owned(),
        })?;
        if !text.starts_with('{') {
            return AdminDsn::parse(text);
        }
        // serde_json's messages may quote the input, which holds the admin password.
        let doc: SealedTarget =
            serde_json::from_str(text).map_err(|e| BrokerError::InvalidDsn {
                reason: format!(
                    "the stored target does not parse (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            })?;
        let tls = match (doc.tls, doc.ca_pem.as_deref()) {
            (TlsMode::VerifyFull, Some(pem)) => TargetTls::verify_full(pem)?,
            _ => TargetTls::disable(),
        };
        AdminDsn::parse(&doc.dsn)?.with_tls(tls)
    }

    /// Whether the target is on this machine: a Unix socket, `localhost` or a loopback
    /// address.
    pub fn is_local(&self) -> bool {
        self.unix_socket
            || self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `host:port/database`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The host (or Unix socket directory) agents connect to.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database.
    pub fn database(&self) -> String {
        self.database.clone()
    }

    /// How sessions to this target are secured.
    pub fn tls(&self) -> &TargetTls {
        &self.tls
    }

    /// A connection URL for `user` with `password` on this target, saying the target's
    /// `sslmode` (`disable` or `verify-full`; for `verify-full` the client also needs the
    /// target's CA as `sslrootcert`, see [`TargetTls::ca_pem`]).
    pub fn client_url(&self, user: &RoleName, password: &Password) -> Zeroizing<String> {
        let mut url = Zeroizing::new(String::with_capacity(160));
        url.push_str("postgres://");
        url.push_str(user.as_str());
        url.push(':');
        url.push_str(&percent_encode(password.expose_secret()));
        url.push('@');
        if !self.unix_socket {
            if self.host.contains(':') && !self.host.starts_with('[') {
                url.push_str(&format!("[{}]", self.host));
            } else {
                url.push_str(&self.host);
            }
            url.push_str(&format!(":{}", self.port));
        }
        url.push('/');
        url.push_str(&percent_encode(&self.database));
        url.push_str("?sslmode=");
        url.push_str(self.tls.mode.as_str());
        if self.unix_socket {
            url.push_str(&format!(
                "&host={}&port={}",
                percent_encode(&self.host),
                self.port
            ));
        }
        url
    }

    /// The TLS hook for tokio-postgres.
    fn make_tls(&self) -> MakeTls {
        MakeTls(self.tls.client.clone())
    }
}

impl FromStr for AdminDsn {
    type Err = BrokerError;
    fn from_str(s: &str) -> Result<AdminDsn> {
        AdminDsn::parse(s)
    }
}
impl fmt::Display for AdminDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}
impl fmt::Debug for AdminDsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AdminDsn").field(&self.redacted).finish()
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved characters (§2.3).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The raw password in the userinfo of `rest` (the URL after `scheme://`), if any.
fn url_password(rest: &str) -> Option<&str> {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

fn redact(message: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) => message.replace(secret, "***"),
        None => message.to_owned(),
    }
}

/// What [`check`] found out about the admin connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminCheck {
    /// The role the admin connection logs in as.
    pub user: String,
    /// The database it is connected to (where roles get `CONNECT`).
    pub database: String,
    /// Whether that role is a superuser (more than the engine needs: `CREATEROLE` is enough).
    pub superuser: bool,
    /// The server's `server_version`.
    pub server_version: String,
}

/// How [`revoke_role`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeOutcome {
    /// The role existed and is gone now.
    Revoked {
        /// How many of its open sessions were terminated.
        sessions_terminated: u64,
    },
    /// There was no such role (already revoked, or never created): nothing to do.
    AlreadyGone,
}

// ---------------------------------------------------------------------------------------------
// One-off sessions
// ---------------------------------------------------------------------------------------------

/// Connects as the admin and verifies it can create roles (`CREATEROLE` or superuser), for
/// when an operator configures a target. Always a fresh session, never a pooled one.
pub async fn check(dsn: &AdminDsn) -> Result<AdminCheck> {
    with_deadline(dsn, async {
        let session = connect(dsn).await?;
        let result = check_on(dsn, &session.client).await;
        session.close().await;
        result
    })
    .await
}

/// Creates the login role `role` with `password`, valid until `valid_until`, holding
/// `CONNECT` on the DSN's database, `USAGE` on the template's schemas and the template's
/// table grants, and nothing else (`NOINHERIT NOCREATEDB NOCREATEROLE`, at most
/// [`CONNECTION_LIMIT`] sessions).
///
/// All of it happens in one transaction, which also checks that PostgreSQL granted every
/// privilege asked for; on any failure (target down, table missing, admin lacking a grant
/// option, role already existing) it is rolled back and no role is left behind.
/// `valid_until` must be in the future; it is stored to the microsecond, PostgreSQL's
/// precision. It is a backstop only: PostgreSQL checks it for password logins, not for
/// sessions already open, so the lease manager still has to call [`revoke_role`].
///
/// Opens a session for this call; [`TargetPool::create_role`] does the same on a pooled one.
pub async fn create_role(
    dsn: &AdminDsn,
    template: &RoleTemplate,
    role: &RoleName,
    password: &Password,
    valid_until: OffsetDateTime,
) -> Result<()> {
    let valid_until = valid_until_literal(valid_until, OffsetDateTime::now_utc())?;
    let verifier = password.scram_verifier();
    with_deadline(dsn, async {
        let mut session = connect(dsn).await?;
        let result = create_role_on(
            dsn,
            &mut session.client,
            template,
            role,
            &verifier,
            &valid_until,
        )
        .await;
        session.close().await;
        result
    })
    .await
}

/// Drops the role `role`: forbids new logins, terminates its open sessions, then in one
/// transaction revokes everything granted to it in this database (`DROP OWNED BY`, which also
/// drops anything it created) and drops it.
///
/// Idempotent: a role that does not exist is [`RevokeOutcome::AlreadyGone`], and a revocation
/// that fails after the first step leaves the role unable to log in for a retry to finish.
/// Only ever drops
/// `w_` roles ([`RoleName`] guarantees the prefix), and refuses one with attributes the engine
/// never gives (superuser, `CREATEROLE`, …). A non-superuser admin is made a member of the
/// role first, which PostgreSQL requires for terminating its sessions and `DROP OWNED`.
pub async fn revoke_role(dsn: &AdminDsn, role: &RoleName) -> Result<RevokeOutcome> {
    refuse_unmanaged(role)?;
    with_deadline(dsn, async {
        let mut session = connect(dsn).await?;
        let result = revoke_role_on(dsn, &mut session.client, role).await;
        session.close().await;
        result
    })
    .await
}

/// Moves a login role's `VALID UNTIL` (lease renewal). The role must exist and be one of the
/// engine's (`w_`); `valid_until` must be in the future.
pub async fn extend_role(
    dsn: &AdminDsn,
    role: &RoleName,
    valid_until: OffsetDateTime,
) -> Result<()> {
    let valid_until = valid_until_literal(valid_until, OffsetDateTime::now_utc())?;
    with_deadline(dsn, async {
        let session = connect(dsn).await?;
        let result = extend_role_on(dsn, &session.client, role, &valid_until).await;
        session.close().await;
        result
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Pooled sessions
// ---------------------------------------------------------------------------------------------

/// The admin session pools of a server, one per target name: at most [`POOL_MAX_SESSIONS`]
/// sessions each, closed after [`POOL_IDLE_TIMEOUT`] unused or [`POOL_MAX_LIFETIME`] in all,
/// and tested with an empty query before each reuse (`deadpool-postgres`).
///
/// A target whose settings change (another connection string, TLS mode or CA) gets a new
/// pool; [`remove`](TargetPools::remove) closes a removed target's sessions.
#[derive(Default)]
pub struct TargetPools {
    pools: Mutex<HashMap<String, Arc<TargetPool>>>,
}

impl TargetPools {
    /// No pools yet.
    pub fn new() -> TargetPools {
        TargetPools::default()
    }

    /// The pool of target `name` reached through `dsn`; a pool made for other settings under
    /// that name is dropped (its sessions close as soon as no operation uses them). Sessions
    /// are opened when operations need them. Like `tokio::spawn`, it must be called within a
    /// Tokio runtime (the pool's reaper of idle sessions is a task).
    pub fn get(&self, name: &str, dsn: &AdminDsn) -> Result<Arc<TargetPool>> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(name) {
            if pool.dsn.fingerprint == dsn.fingerprint {
                return Ok(Arc::clone(pool));
            }
        }
        let pool = Arc::new(TargetPool::new(dsn.clone())?);
        pools.insert(name.to_owned(), Arc::clone(&pool));
        Ok(pool)
    }

    /// Forgets target `name`'s pool, closing its sessions once the operations using them
    /// end. Whether there was one.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        removed.is_some()
    }
}

impl fmt::Debug for TargetPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_set().entries(pools.keys()).finish()
    }
}

/// A pool of admin sessions to one target, with the engine's operations on it. Dropping the
/// last handle closes its sessions.
pub struct TargetPool {
    dsn: AdminDsn,
    pool: deadpool_postgres::Pool,
    opened: Arc<AtomicU64>,
    reaper: tokio::task::JoinHandle<()>,
}

/// What a [`TargetPool`] holds and has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Sessions open now.
    pub open: usize,
    /// Of those, sessions not in use.
    pub idle: usize,
    /// Sessions opened since the pool was made.
    pub opened: u64,
}

impl TargetPool {
    fn new(dsn: AdminDsn) -> Result<TargetPool> {
        let manager = deadpool_postgres::Manager::from_config(
            dsn.config.clone(),
            dsn.make_tls(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let opened = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&opened);
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_MAX_SESSIONS)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .post_create(Hook::sync_fn(move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }))
            .build()
            .map_err(|e| BrokerError::Unexpected {
                reason: format!("the session pool cannot be built: {e}"),
            })?;
        let reaped = pool.clone();
        let reaper = tokio::spawn(async move {
            let mut every = tokio::time::interval(POOL_REAPER_RATE);
            loop {
                every.tick().await;
                reaped.retain(|_, m| {
                    m.last_used() < POOL_IDLE_TIMEOUT && m.age() < POOL_MAX_LIFETIME
                });
            }
        });
        Ok(TargetPool {
            dsn,
            pool,
            opened,
            reaper,
        })
    }

    /// The target.
    pub fn dsn(&self) -> &AdminDsn {
        &self.dsn
    }

    /// Sessions open, idle and opened so far.
    pub fn stats(&self) -> PoolStats {
        let status = self.pool.status();
        PoolStats {
            open: status.size,
            idle: status.available,
            opened: self.opened.load(Ordering::Relaxed),
        }
    }

    /// [`check`] on a pooled session.
    pub async fn check(&self) -> Result<AdminCheck> {
        let dsn = &self.dsn;
        with_deadline(dsn, async {
            let session = self.session().await?;
            check_on(dsn, &session).await
        })
        .await
    }

    /// [`create_role`] on a pooled session.
    pub async fn create_role(
        &self,
        template: &RoleTemplate,
        role: &RoleName,
        password: &Password,
        valid_until: OffsetDateTime,
    ) -> Result<()> {
        let dsn = &self.dsn;
        let valid_until = valid_until_literal(valid_until, OffsetDateTime::now_utc())?;
        let verifier = password.scram_verifier();
        with_deadline(dsn, async {
            let mut session = self.session().await?;
            create_role_on(dsn, &mut session, template, role, &verifier, &valid_until).await
        })
        .await
    }

    /// [`revoke_role`] on a pooled session.
    pub async fn revoke_role(&self, role: &RoleName) -> Result<RevokeOutcome> {
        refuse_unmanaged(role)?;
        let dsn = &self.dsn;
        with_deadline(dsn, async {
            let mut session = self.session().await?;
            revoke_role_on(dsn, &mut session, role).await
        })
        .await
    }

    /// [`extend_role`] on a pooled session.
    pub async fn extend_role(&self, role: &RoleName, valid_until: OffsetDateTime) -> Result<()> {
        let dsn = &self.dsn;
        let valid_until = valid_until_literal(valid_until, OffsetDateTime::now_utc())?;
        with_deadline(dsn, async {
            let session = self.session().await?;
            extend_role_on(dsn, &session, role, &valid_until).await
        })
        .await
    }

    async fn session(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => db_error(&self.dsn, e),
            PoolError::Timeout(_) => no_connection(&self.dsn),
            PoolError::Closed => BrokerError::Unavailable {
                target: self.dsn.target.clone(),
                reason: "the target was removed".to_owned(),
            },
            other => BrokerError::Unexpected {
                reason: other.to_string(),
            },
        })
    }
}

impl Drop for TargetPool {
    fn drop(&mut self) {
        self.reaper.abort();
        self.pool.close();
    }
}

impl fmt::Debug for TargetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetPool")
            .field("dsn", &self.dsn)
            .field("stats", &self.stats())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The operations, on a session
// ---------------------------------------------------------------------------------------------

async fn check_on(dsn: &AdminDsn, client: &Client) -> Result<AdminCheck> {
    let row = client
        .query_one(
            "SELECT current_user::text AS usr, current_database()::text AS db, \
                    r.rolsuper, r.rolcreaterole, current_setting('server_version') AS version \
               FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| db_error(dsn, e))?;
    let user: String = get(dsn, &row, "usr")?;
    let superuser: bool = get(dsn, &row, "rolsuper")?;
    let createrole: bool = get(dsn, &row, "rolcreaterole")?;
    let check = AdminCheck {
        database: get(dsn, &row, "db")?,
        server_version: get(dsn, &row, "version")?,
        superuser,
        user,
    };
    if !(superuser || createrole) {
        return Err(BrokerError::InsufficientPrivilege { user: check.user });
    }
    Ok(check)
}

async fn create_role_on(
    dsn: &AdminDsn,
    client: &mut Client,
    template: &RoleTemplate,
    role: &RoleName,
    verifier: &str,
    valid_until: &str,
) -> Result<()> {
    let tx = client.transaction().await.map_err(|e| db_error(dsn, e))?;
    set_local_timeouts(dsn, &tx).await?;
    serialize_ddl(dsn, &tx).await?;
    let row = tx
        .query_one("SELECT current_database()::text", &[])
        .await
        .map_err(|e| db_error(dsn, e))?;
    let database: String = row.try_get(0).map_err(|e| db_error(dsn, e))?;
    let sql = create_role_sql(template, role, verifier, valid_until, &database)?;
    tx.batch_execute(sql.as_str())
        .await
        .map_err(|e| db_error(dsn, e))?;
    let missing = missing_grants(dsn, &tx, template, role).await?;
    if !missing.is_empty() {
        // (On the other errors above, dropping `tx` queues the same `ROLLBACK`.)
        rollback(tx).await;
        return Err(BrokerError::GrantIncomplete { missing });
    }
    tx.commit().await.map_err(|e| db_error(dsn, e))?;
    tracing::info!(role = %role, target = %dsn.target(), "created database role");
    Ok(())
}

/// Defence in depth: `RoleName` cannot hold anything but a `w_` name.
fn refuse_unmanaged(role: &RoleName) -> Result<()> {
    if role.as_str().starts_with(ROLE_PREFIX) {
        Ok(())
    } else {
        Err(BrokerError::UnmanagedRole {
            name: role.to_string(),
            reason: "it does not have the engine's `w_` prefix".to_owned(),
        })
    }
}

async fn revoke_role_on(
    dsn: &AdminDsn,
    client: &mut Client,
    role: &RoleName,
) -> Result<RevokeOutcome> {
    let quoted = role.quoted();

    // 1. No new sessions, committed before any are terminated so none can slip in between.
    let tx = client.transaction().await.map_err(|e| db_error(dsn, e))?;
    set_local_timeouts(dsn, &tx).await?;
    serialize_ddl(dsn, &tx).await?;
    let row = tx
        .query_opt(
            "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication \
                    OR r.rolbypassrls AS privileged, \
                    pg_has_role(current_user, r.oid, 'USAGE') AS member \
               FROM pg_roles r WHERE r.rolname = $1::name",
            &[&role.as_str()],
        )
        .await
        .map_err(|e| db_error(dsn, e))?;
    let Some(row) = row else {
        rollback(tx).await;
        return Ok(RevokeOutcome::AlreadyGone);
    };
    if get::<bool>(dsn, &row, "privileged")? {
        rollback(tx).await;
        return Err(BrokerError::UnmanagedRole {
            name: role.to_string(),
            reason: "it has attributes the engine never grants (superuser, CREATEROLE, \
                     CREATEDB, REPLICATION or BYPASSRLS)"
                .to_owned(),
        });
    }
    let mut sql = format!("ALTER ROLE {quoted} NOLOGIN;");
    if !get::<bool>(dsn, &row, "member")? {
        sql.push_str(&format!(" GRANT {quoted} TO CURRENT_USER;"));
    }
    if let Some(gone) = gone_or(dsn, tx.batch_execute(&sql).await)? {
        rollback(tx).await;
        return Ok(gone);
    }
    tx.commit().await.map_err(|e| db_error(dsn, e))?;

    // 2. End the sessions it still has. Two statements on purpose: in one, such as
    // `… FROM pg_stat_activity WHERE usename = $1 AND pg_terminate_backend(pid)`, the
    // planner pushes the call below the join that supplies `usename` and terminates
    // every session on the server.
    let pids = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE usename = $1::name",
            &[&role.as_str()],
        )
        .await
        .map_err(|e| db_error(dsn, e))?
        .iter()
        .map(|row| row.try_get::<_, i32>(0))
        .collect::<std::result::Result<Vec<i32>, _>>()
        .map_err(|e| db_error(dsn, e))?;
    let terminated: i64 = if pids.is_empty() {
        0
    } else {
        client
            .query_one(
                "SELECT count(*) FROM unnest($1::int4[]) AS pid WHERE pg_terminate_backend(pid)",
                &[&pids],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| db_error(dsn, e))?
    };

    // 3. Revoke and drop.
    let tx = client.transaction().await.map_err(|e| db_error(dsn, e))?;
    set_local_timeouts(dsn, &tx).await?;
    serialize_ddl(dsn, &tx).await?;
    let sql = format!("DROP OWNED BY {quoted}; DROP ROLE {quoted};");
    if let Some(gone) = gone_or(dsn, tx.batch_execute(&sql).await)? {
        rollback(tx).await;
        return Ok(gone);
    }
    tx.commit().await.map_err(|e| db_error(dsn, e))?;
    tracing::info!(role = %role, target = %dsn.target(), "dropped database role");
    Ok(RevokeOutcome::Revoked {
        sessions_terminated: u64::try_from(terminated).unwrap_or(0),
    })
}

async fn extend_role_on(
    dsn: &AdminDsn,
    client: &Client,
    role: &RoleName,
    valid_until: &str,
) -> Result<()> {
    let sql = format!(
        "ALTER ROLE {} VALID UNTIL {}",
        role.quoted(),
        quote_literal(valid_until)?
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| db_error(dsn, e))
}

/// Rolls `tx` back now, releasing its locks before the caller goes on; a failure changes
/// nothing (the server rolls back when the session ends).
async fn rollback(tx: tokio_postgres::Transaction<'_>) {
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "rollback failed");
    }
}

/// Maps "role does not exist" (a concurrent revoke won the race) to `AlreadyGone`.
fn gone_or(
    dsn: &AdminDsn,
    result: std::result::Result<(), tokio_postgres::Error>,
) -> Result<Option<RevokeOutcome>> {
    match result {
        Ok(()) => Ok(None),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
            Ok(Some(RevokeOutcome::AlreadyGone))
        }
        Err(e) => Err(db_error(dsn, e)),
    }
}

/// The statements that create `role` and grant it what `template` says, for one
/// simple-protocol round trip inside the caller's transaction.
fn create_role_sql(
    template: &RoleTemplate,
    role: &RoleName,
    verifier: &str,
    valid_until: &str,
    database: &str,
) -> Result<Zeroizing<String>> {
    let role = role.quoted();
    let mut sql = Zeroizing::new(String::with_capacity(1024));
    sql.push_str(&format!(
        "SET LOCAL lock_timeout = {};\nSET LOCAL statement_timeout = {};\n",
        quote_literal(LOCK_TIMEOUT)?,
        quote_literal(STATEMENT_TIMEOUT)?,
    ));
    sql.push_str(&format!(
        "CREATE ROLE {role} WITH LOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE \
         NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {CONNECTION_LIMIT} PASSWORD {} \
         VALID UNTIL {};\n",
        quote_literal(verifier)?,
        quote_literal(valid_until)?,
    ));
    sql.push_str(&format!(
        "GRANT CONNECT ON DATABASE {} TO {role};\n",
        quote_ident(database)?
    ));
    let schemas: Vec<String> = template.schemas().iter().map(|s| s.quoted()).collect();
    sql.push_str(&format!(
        "GRANT USAGE ON SCHEMA {} TO {role};\n",
        schemas.join(", ")
    ));
    for grant in &template.grants {
        let privileges: Vec<&str> = grant.privileges.iter().map(|p| p.as_sql()).collect();
        let tables: Vec<String> = grant.tables.iter().map(TableName::quoted).collect();
        sql.push_str(&format!(
            "GRANT {} ON TABLE {} TO {role};\n",
            privileges.join(", "),
            tables.join(", ")
        ));
    }
    Ok(sql)
}

/// What `role` should hold after the grants but does not: PostgreSQL only warns ("no
/// privileges were granted") when the grantor lacks the grant option, so this asks.
async fn missing_grants(
    dsn: &AdminDsn,
    tx: &tokio_postgres::Transaction<'_>,
    template: &RoleTemplate,
    role: &RoleName,
) -> Result<Vec<String>> {
    let schemas: Vec<String> = template
        .schemas()
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    let (tables, privileges): (Vec<String>, Vec<String>) = template
        .grants
        .iter()
        .flat_map(|g| {
            g.tables.iter().flat_map(|t| {
                g.privileges
                    .iter()
                    .map(|p| (t.quoted(), p.as_sql().to_owned()))
            })
        })
        .unzip();
    let rows = tx
        .query(
            "SELECT what FROM ( \
                 SELECT 'CONNECT on database ' || quote_ident(current_database()) AS what, \
                        has_database_privilege($1::name, current_database(), 'CONNECT') AS ok \
                 UNION ALL \
                 SELECT 'USAGE on schema ' || quote_ident(s), \
                        has_schema_privilege($1::name, s, 'USAGE') \
                   FROM unnest($2::text[]) AS s \
                 UNION ALL \
                 SELECT p || ' on ' || t, has_table_privilege($1::name, t, p) \
                   FROM unnest($3::text[], $4::text[]) AS g(t, p) \
             ) AS checks WHERE NOT ok",
            &[&role.as_str(), &schemas, &tables, &privileges],
        )
        .await
        .map_err(|e| db_error(dsn, e))?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(|e| db_error(dsn, e)))
        .collect()
}

/// Takes the engine's transaction-scoped advisory lock on this database. Role DDL updates
/// shared catalog rows — `GRANT CONNECT ON DATABASE` and `DROP OWNED` rewrite the database's
/// ACL — and two transactions doing so at once fail with "tuple concurrently updated"; so the
/// engine's transactions on one database take turns (across every Warden replica).
async fn serialize_ddl(dsn: &AdminDsn, tx: &tokio_postgres::Transaction<'_>) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('warden-broker-role-ddl'))",
        &[],
    )
    .await
    .map_err(|e| db_error(dsn, e))?;
    Ok(())
}

async fn set_local_timeouts(dsn: &AdminDsn, tx: &tokio_postgres::Transaction<'_>) -> Result<()> {
    let sql = format!(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {};",
        quote_literal(LOCK_TIMEOUT)?,
        quote_literal(STATEMENT_TIMEOUT)?
    );
    tx.batch_execute(&sql).await.map_err(|e| db_error(dsn, e))
}

/// `valid_until` in UTC at microsecond precision as RFC 3339, if it is in the future.
fn valid_until_literal(valid_until: OffsetDateTime, now: OffsetDateTime) -> Result<String> {
    let invalid = |reason: String| BrokerError::InvalidValidUntil { reason };
    let utc = valid_until
        .checked_to_offset(UtcOffset::UTC)
        .ok_or_else(|| invalid("it cannot be expressed in UTC".to_owned()))?;
    let utc = utc
        .replace_nanosecond(utc.nanosecond() / 1_000 * 1_000)
        .map_err(|e| invalid(e.to_string()))?;
    let text = utc
        .format(&Rfc3339)
        .map_err(|e| invalid(format!("it cannot be written as RFC 3339: {e}")))?;
    if utc <= now {
        return Err(invalid(format!("`{text}` is not in the future")));
    }
    Ok(text)
}

/// A one-off admin session: the client and the task that drives its connection.
struct Session {
    client: Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Ends the session and waits (briefly) until its connection has sent what was queued —
    /// the `ROLLBACK` of a dropped transaction, then `Terminate` — and closed. Waiting matters
    /// where the caller goes on to block its thread: on a single-threaded runtime the
    /// connection's task would otherwise not run, and an open transaction would keep its
    /// locks.
    async fn close(self) {
        drop(self.client);
        if tokio::time::timeout(CONNECT_TIMEOUT, self.connection)
            .await
            .is_err()
        {
            tracing::debug!("database connection did not close in time");
        }
    }
}

/// A fresh admin session (TLS as the target says).
async fn connect(dsn: &AdminDsn) -> Result<Session> {
    match tokio::time::timeout(CONNECT_TIMEOUT, dsn.config.connect(dsn.make_tls())).await {
        Ok(Ok((client, connection))) => {
            let connection = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "database connection ended with an error");
                }
            });
            Ok(Session { client, connection })
        }
        Ok(Err(e)) => Err(db_error(dsn, e)),
        Err(_) => Err(no_connection(dsn)),
    }
}

fn no_connection(dsn: &AdminDsn) -> BrokerError {
    BrokerError::Unavailable {
        target: dsn.target.clone(),
        reason: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
    }
}

/// Runs `operation` with [`OPERATION_TIMEOUT`]; on timeout the session is dropped, which
/// rolls back any open transaction.
async fn with_deadline<T>(dsn: &AdminDsn, operation: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(BrokerError::Unavailable {
                target: dsn.target.clone(),
                reason: format!("no answer within {} s", OPERATION_TIMEOUT.as_secs()),
            })
        })
}

fn get<'r, T>(dsn: &AdminDsn, row: &'r Row, column: &str) -> Result<T>
where
    T: tokio_postgres::types::FromSql<'r>,
{
    row.try_get(column).map_err(|e| db_error(dsn, e))
}

/// Sorts a tokio-postgres error into unavailable (worth retrying later), a failed TLS
/// verification, rejected (the server said no) and the rest.
fn db_error(dsn: &AdminDsn, error: tokio_postgres::Error) -> BrokerError {
    let unavailable = |reason: String| BrokerError::Unavailable {
        target: dsn.target.clone(),
        reason,
    };
    if let Some(db) = error.as_db_error() {
        let code = db.code().code().to_owned();
        let message = db.message().to_owned();
        return if is_transient(&code) {
            unavailable(format!("{message} (SQLSTATE {code})"))
        } else {
            BrokerError::Rejected {
                sqlstate: Some(code),
                message,
            }
        };
    }
    // tokio-postgres keeps the kind of an error private; its message is the kind's fixed
    // description ("error performing TLS handshake"), its causes say the rest.
    let text = error_chain(&error);
    let kind = |prefix: &str| text.starts_with(prefix);
    if kind("error performing TLS handshake") {
        BrokerError::TlsFailed {
            target: dsn.target.clone(),
            reason: text,
        }
    } else if error.is_closed()
        || kind("error connecting to server")
        || kind("error communicating with the server")
        || kind("timeout waiting for server")
    {
        unavailable(text)
    } else if kind("invalid configuration") || kind("invalid connection string") {
        BrokerError::InvalidDsn { reason: text }
    } else if kind("authentication error") {
        BrokerError::Rejected {
            sqlstate: None,
            message: text,
        }
    } else {
        BrokerError::Unexpected { reason: text }
    }
}

/// An error's message followed by its causes, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// SQLSTATEs that mean "not now" rather than "no": connection exceptions (class 08),
/// insufficient resources (53, e.g. too many connections), shutdown and startup (57P0x),
/// and this engine's own lock and statement timeouts (55P03, 57014).
fn is_transient(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
        || sqlstate.starts_with("57P0")
        || sqlstate == "55P03"
        || sqlstate == "57014"
}

// ---------------------------------------------------------------------------------------------
// Quoting
// ---------------------------------------------------------------------------------------------

/// `s` as a double-quoted SQL identifier, by libpq's `PQescapeIdentifier` rules
/// (`postgres_protocol::escape::escape_identifier`: embedded `"` doubled). A NUL byte cannot
/// travel in the protocol's C strings and is refused.
pub fn quote_ident(s: &str) -> Result<String> {
    refuse_nul(s)?;
    Ok(escape_identifier(s))
}

/// `s` as an SQL string literal that means the same whatever `standard_conforming_strings`
/// is, by libpq's `PQescapeLiteral` rules (`postgres_protocol::escape::escape_literal`:
/// quotes doubled, and ` E'…'` with doubled backslashes if there are any). NUL is refused.
pub fn quote_literal(s: &str) -> Result<String> {
    refuse_nul(s)?;
    Ok(escape_literal(s))
}

fn refuse_nul(s: &str) -> Result<()> {
    if s.contains('\0') {
        Err(BrokerError::InvalidSqlText {
            reason: "a NUL byte cannot be sent to PostgreSQL".to_owned(),
        })
    } else {
        Ok(())
    }
}

/// User input for an error message, cut to 80 characters.
fn snippet(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_what_it_must() {
        let idents = [
            ("customers", "\"customers\""),
            ("Mixed$Case", "\"Mixed$Case\""),
            ("a\"b", "\"a\"\"b\""),
            ("my-db", "\"my-db\""),
        ];
        for (input, quoted) in idents {
            assert_eq!(quote_ident(input).unwrap(), quoted, "{input}");
        }
        let literals = [
            ("abc", "'abc'"),
            ("it's", "'it''s'"),
            ("a\\b", " E'a\\\\b'"),
            ("'\\'", " E'''\\\\'''"),
        ];
        for (input, quoted) in literals {
            assert_eq!(quote_literal(input).unwrap(), quoted, "{input}");
        }
    }

    /// Awkward inputs: what each becomes, or that it is refused (NUL cannot travel in the
    /// protocol's C strings). `tests/postgres.rs` sends every one of these to a real server
    /// and reads it back unchanged.
    #[test]
    fn quoting_awkward_inputs() {
        // (input, identifier, literal); `None`: refused.
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            ("", Some("\"\""), Some("''")),
            ("\"", Some("\"\"\"\""), Some("'\"'")),
            ("'", Some("\"'\""), Some("''''")),
            ("\\", Some("\"\\\""), Some(" E'\\\\'")),
            ("\\'", Some("\"\\'\""), Some(" E'\\\\'''")),
            (
                "x'; DROP ROLE postgres; --",
                Some("\"x'; DROP ROLE postgres; --\""),
                Some("'x''; DROP ROLE postgres; --'"),
            ),
            ("$$ $tag$", Some("\"$$ $tag$\""), Some("'$$ $tag$'")),
            ("a\nb\tc", Some("\"a\nb\tc\""), Some("'a\nb\tc'")),
            (
                "Zürich ☃ 東京",
                Some("\"Zürich ☃ 東京\""),
                Some("'Zürich ☃ 東京'"),
            ),
            ("\0", None, None),
            ("ab\0cd", None, None),
        ];
        for (input, ident, literal) in cases {
            match (quote_ident(input), ident) {
                (Ok(got), Some(want)) => assert_eq!(&got, want, "{input:?}"),
                (Err(e), None) => assert_eq!(e.code(), "invalid_sql_text", "{input:?}"),
                (got, _) => panic!("identifier {input:?}: {got:?}"),
            }
            match (quote_literal(input), literal) {
                (Ok(got), Some(want)) => assert_eq!(&got, want, "{input:?}"),
                (Err(e), None) => assert_eq!(e.code(), "invalid_sql_text", "{input:?}"),
                (got, _) => panic!("literal {input:?}: {got:?}"),
            }
        }
    }

    /// The SCRAM-SHA-256 verifier of `password` with `salt` and `iterations`, computed from
    /// RFC 5802 §3 with ring, as an independent reference: SaltedPassword =
    /// PBKDF2-HMAC-SHA-256, StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey =
    /// HMAC(SaltedPassword, "Server Key").
    fn reference_verifier(password: &[u8], salt: &[u8], iterations: u32) -> String {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        use ring::{hmac, pbkdf2};
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations).unwrap(),
            salt,
            password,
            &mut salted,
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let server_key = hmac::sign(&key, b"Server Key");
        format!(
            "SCRAM-SHA-256${iterations}:{}${}:{}",
            STANDARD.encode(salt),
            STANDARD.encode(stored_key.as_ref()),
            STANDARD.encode(server_key.as_ref()),
        )
    }

    /// The reference recomputation of `verifier` (with its own salt) for `password`.
    fn recomputed(verifier: &str, password: &[u8]) -> String {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        let rest = verifier.strip_prefix("SCRAM-SHA-256$").unwrap();
        let (params, _) = rest.split_once('$').unwrap();
        let (iterations, salt) = params.split_once(':').unwrap();
        reference_verifier(
            password,
            &STANDARD.decode(salt).unwrap(),
            iterations.parse().unwrap(),
        )
    }

    /// A verifier PostgreSQL 15 computed itself (`CREATE ROLE … PASSWORD '<password>'` with
    /// `password_encryption = scram-sha-256`, read back from `pg_authid`) is what the
    /// reference computes, and the engine's verifiers are what the reference computes.
    #[test]
    fn scram_verifiers_match_postgresql() {
        let password = "Zx7pQ2mW9rT4vB8nK3sD6fG1hJ5lC0aE";
        let postgres = "SCRAM-SHA-256$4096:RB/ieL5/rL1Q6VANy9WthA==$\
                        SfTFQB6r9xPrhCAUHbqHC7fKLNXvOlmD/8yFyHIdBCI=:\
                        4opu4UMcLDTKgaHnWjPdS/xys34rN1Q5uH92Ouq4nYY=";
        assert_eq!(recomputed(postgres, password.as_bytes()), postgres);
        let ours = Password::from_secret(password).unwrap().scram_verifier();
        assert!(ours.starts_with("SCRAM-SHA-256$4096:"), "{ours}");
        assert_eq!(recomputed(&ours, password.as_bytes()), ours);
    }

    /// PostgreSQL and libpq normalize a password with SASLprep (RFC 4013) before SCRAM, and
    /// use the raw bytes when SASLprep refuses it; the engine's verifier must do the same or
    /// a client typing the password cannot log in.
    #[test]
    fn verifiers_apply_saslprep() {
        // (password, what SCRAM is computed over)
        let cases = [
            ("user", "user"),
            ("I\u{00AD}X", "IX"), // RFC 4013 §3: soft hyphen mapped to nothing
            ("\u{00AA}", "a"),    // NFKC
            ("\u{2168}", "IX"),   // NFKC: ROMAN NUMERAL NINE
            ("pass\u{00A0}word", "pass word"), // non-ASCII space to space
            ("ｐａｓｓ", "pass"), // fullwidth letters, NFKC
            ("\u{0007}", "\u{0007}"), // prohibited: raw bytes
            ("\u{0627}\u{0031}", "\u{0627}\u{0031}"), // bidi rule broken: raw bytes
        ];
        for (password, prepared) in cases {
            let verifier = Password::from_secret(password).unwrap().scram_verifier();
            assert_eq!(
                recomputed(&verifier, prepared.as_bytes()),
                verifier,
                "{password:?}"
            );
        }
    }

    #[test]
    fn passwords_from_elsewhere_are_bounded() {
        for bad in ["", "a\0b", &"x".repeat(1025)] {
            let err = Password::from_secret(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_secret", "{bad:?}");
        }
        assert!(Password::from_secret(&"x".repeat(1024)).is_ok());
    }

    #[test]
    fn verifiers_are_salted_afresh() {
        let password = generate_password();
        let a = password.scram_verifier();
        let b = password.scram_verifier();
        assert!(a.starts_with("SCRAM-SHA-256$4096:"));
        assert_ne!(a.as_str(), b.as_str());
        assert!(!a.contains(password.expose_secret()));
    }

    #[test]
    fn create_statements_quote_everything() {
        let template = RoleTemplate::from_json(
            r#"{"grants":[{"privileges":["SELECT"],"tables":["customers","sales.orders"]},
                          {"privileges":["insert","UPDATE"],"tables":["sales.orders"]}]}"#,
        )
        .unwrap();
        let role = RoleName::parse("w_t_abc").unwrap();
        let sql = create_role_sql(
            &template,
            &role,
            "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5",
            "2030-01-02T03:04:05.123456Z",
            "my\"db",
        )
        .unwrap();
        let expected = "SET LOCAL lock_timeout = '10s';\n\
             SET LOCAL statement_timeout = '30s';\n\
             CREATE ROLE \"w_t_abc\" WITH LOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE \
             NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 10 \
             PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5' \
             VALID UNTIL '2030-01-02T03:04:05.123456Z';\n\
             GRANT CONNECT ON DATABASE \"my\"\"db\" TO \"w_t_abc\";\n\
             GRANT USAGE ON SCHEMA \"public\", \"sales\" TO \"w_t_abc\";\n\
             GRANT SELECT ON TABLE \"public\".\"customers\", \"sales\".\"orders\" TO \"w_t_abc\";\n\
             GRANT INSERT, UPDATE ON TABLE \"sales\".\"orders\" TO \"w_t_abc\";\n";
        assert_eq!(sql.as_str(), expected);
        let nul = create_role_sql(&template, &role, "v", "t", "a\0b").unwrap_err();
        assert_eq!(nul.code(), "invalid_sql_text");
    }

    #[test]
    fn valid_until_is_utc_microseconds_in_the_future() {
        use time::macros::datetime;
        let now = datetime!(2030-01-01 00:00:00 UTC);
        let cases = [
            (datetime!(2030-01-01 01:00:00.123456789 +02:00), None),
            (
                datetime!(2030-01-01 12:00:00.123456789 UTC),
                Some("2030-01-01T12:00:00.123456Z"),
            ),
            (
                datetime!(2030-01-01 14:30:00 +02:30),
                Some("2030-01-01T12:00:00Z"),
            ),
            (datetime!(2030-01-01 00:00:00 UTC), None),
            (datetime!(2029-12-31 23:59:59 UTC), None),
        ];
        for (input, expected) in cases {
            let got = valid_until_literal(input, now);
            match expected {
                Some(text) => assert_eq!(got.unwrap(), text, "{input}"),
                None => assert_eq!(got.unwrap_err().code(), "invalid_valid_until", "{input}"),
            }
        }
    }

    #[test]
    fn dsn_passwords_are_found_for_redaction() {
        let cases = [
            ("u:pw@h/db", Some("pw")),
            ("u:p%40w@h:5432/db?sslmode=disable", Some("p%40w")),
            ("u@h/db", None),
            ("u:@h/db", None),
            ("h/db?user=a@b", None),
        ];
        for (rest, password) in cases {
            assert_eq!(url_password(rest), password, "{rest}");
        }
    }

    #[test]
    fn transient_sqlstates() {
        let cases = [
            ("08006", true),
            ("53300", true),
            ("57P01", true),
            ("57P03", true),
            ("55P03", true),
            ("57014", true),
            ("42P01", false),
            ("42501", false),
            ("28P01", false),
            ("42710", false),
        ];
        for (code, transient) in cases {
            assert_eq!(is_transient(code), transient, "{code}");
        }
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("a b/c?d@e:f"), "a%20b%2Fc%3Fd%40e%3Af");
        assert_eq!(percent_encode("ü"), "%C3%BC");
    }
}
