//! The dynamic PostgreSQL credentials engine.
//!
//! An operator defines [`RoleTemplate`]s ("`db_read_summary` = SELECT on `customers` and
//! `orders`") and an [`AdminDsn`] for each target database. For a lease the engine creates a
//! short-lived login role from a template ([`create_role`]), in one transaction so that a
//! failure leaves nothing behind, and drops it again on revocation or expiry
//! ([`revoke_role`]), first terminating the role's open sessions.
//!
//! Everything that reaches SQL text has been parsed into a newtype first: identifiers are
//! plain PostgreSQL identifiers that this module double-quotes itself, role names always carry
//! the engine's `w_` prefix, and passwords are generated here and sent only as a SCRAM-SHA-256
//! verifier computed on this side, so the plaintext never reaches the server, its logs or
//! `pg_stat_activity`.

use std::{
    collections::BTreeSet, fmt, future::Future, num::NonZeroU32, str::FromStr, time::Duration,
};

use rand::{Rng, distributions::Alphanumeric, rngs::OsRng};
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use sqlx::{ConnectOptions, Connection, PgConnection, Row, postgres::PgConnectOptions};
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};
use zeroize::Zeroizing;

use crate::error::{BrokerError, Result};

/// Prefix of every role the engine creates; [`revoke_role`] drops nothing else.
pub const ROLE_PREFIX: &str = "w_";
/// How long connecting to a target may take before it counts as [`BrokerError::Unavailable`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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
/// PostgreSQL's default `scram_iterations`.
const SCRAM_ITERATIONS: NonZeroU32 = match NonZeroU32::new(4096) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};
const SCRAM_SALT_LEN: usize = 16;
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
        quote_ident(&self.0)
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
        quote_ident(&self.0)
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

/// A generated role password. Wiped from memory when dropped, never printed by `Debug`; the
/// server only ever sees its [`scram_verifier`](Password::scram_verifier).
pub struct Password(Zeroizing<String>);

impl Password {
    /// The plaintext, for handing to the agent once.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// A SCRAM-SHA-256 verifier for this password with a fresh random salt, in the form
    /// PostgreSQL stores (`SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`). PostgreSQL
    /// accepts it as the `PASSWORD` of a role and keeps it as it is.
    pub fn scram_verifier(&self) -> String {
        let mut salt = [0u8; SCRAM_SALT_LEN];
        OsRng.fill(&mut salt);
        scram_verifier(&self.0, &salt, SCRAM_ITERATIONS)
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

/// The SCRAM-SHA-256 verifier of `password` with `salt` and `iterations` (RFC 5802 §3, RFC
/// 7677): SaltedPassword = PBKDF2-HMAC-SHA-256, StoredKey = H(HMAC(SaltedPassword,
/// "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key").
///
/// PostgreSQL first normalizes the password with SASLprep, which leaves the ASCII letters and
/// digits of generated passwords unchanged.
fn scram_verifier(password: &str, salt: &[u8], iterations: NonZeroU32) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let mut salted = Zeroizing::new([0u8; digest::SHA256_OUTPUT_LEN]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut salted[..],
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted[..]);
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

// ---------------------------------------------------------------------------------------------
// Talking to the target (I/O)
// ---------------------------------------------------------------------------------------------

/// The operator's admin connection string for a target database (`postgres://…` or
/// `postgresql://…`). `Debug` and `Display` show it with the password replaced by `***`.
///
/// Like libpq, parts the URL leaves out come from `PG*` environment variables and
/// `~/.pgpass`. The admin needs `CREATEROLE` (or superuser) and must own, or hold `WITH GRANT
/// OPTION`, whatever its templates grant; [`check`] tests the first part.
#[derive(Clone)]
pub struct AdminDsn {
    options: PgConnectOptions,
    redacted: String,
    target: String,
}

impl AdminDsn {
    /// Parses a connection URL.
    pub fn parse(s: &str) -> Result<AdminDsn> {
        let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        else {
            return Err(BrokerError::InvalidDsn {
                reason: "expected `postgres://…` or `postgresql://…`".to_owned(),
            });
        };
        let secret = url_password(rest);
        let options = PgConnectOptions::from_str(s).map_err(|e| BrokerError::InvalidDsn {
            reason: redact(&e.to_string(), secret),
        })?;
        let options = match options.get_application_name() {
            Some(_) => options,
            None => options.application_name(APPLICATION_NAME),
        };
        // Statements carry password verifiers; sqlx must not log them.
        let options = options.disable_statement_logging();
        let host = match options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => options.get_host().to_owned(),
        };
        let database = options
            .get_database()
            .unwrap_or(options.get_username())
            .to_owned();
        let target = format!("{host}:{}/{database}", options.get_port());
        let password = if secret.is_some() { ":***" } else { "" };
        let redacted = format!("postgres://{}{password}@{target}", options.get_username());
        Ok(AdminDsn {
            options,
            redacted,
            target,
        })
    }

    /// `host:port/database`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The host (or Unix socket directory) agents connect to.
    pub fn host(&self) -> String {
        match self.options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => self.options.get_host().to_owned(),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.options.get_port()
    }

    /// The database.
    pub fn database(&self) -> String {
        self.options
            .get_database()
            .unwrap_or(self.options.get_username())
            .to_owned()
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

/// Connects as the admin and verifies it can create roles (`CREATEROLE` or superuser), for
/// when an operator configures a target.
pub async fn check(dsn: &AdminDsn) -> Result<AdminCheck> {
    with_deadline(dsn, async {
        let mut conn = connect(dsn).await?;
        let row = sqlx::query(
            "SELECT current_user::text AS usr, current_database()::text AS db, \
                    r.rolsuper, r.rolcreaterole, current_setting('server_version') AS version \
               FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&mut conn)
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
        close(conn).await;
        if !(superuser || createrole) {
            return Err(BrokerError::InsufficientPrivilege { user: check.user });
        }
        Ok(check)
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
        let mut conn = connect(dsn).await?;
        let mut tx = conn.begin().await.map_err(|e| db_error(dsn, e))?;
        set_local_timeouts(dsn, &mut tx).await?;
        serialize_ddl(dsn, &mut tx).await?;
        let database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_error(dsn, e))?;
        let sql = create_role_sql(template, role, &verifier, &valid_until, &database);
        sqlx::Executor::execute(&mut *tx, sql.as_str())
            .await
            .map_err(|e| db_error(dsn, e))?;
        let missing = missing_grants(dsn, &mut tx, template, role).await?;
        if !missing.is_empty() {
            // Dropping `tx` rolls the role back.
            return Err(BrokerError::GrantIncomplete { missing });
        }
        tx.commit().await.map_err(|e| db_error(dsn, e))?;
        close(conn).await;
        tracing::info!(role = %role, target = %dsn.target(), "created database role");
        Ok(())
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
    // Defence in depth: `RoleName` cannot hold anything else.
    if !role.as_str().starts_with(ROLE_PREFIX) {
        return Err(BrokerError::UnmanagedRole {
            name: role.to_string(),
            reason: "it does not have the engine's `w_` prefix".to_owned(),
        });
    }
    with_deadline(dsn, async {
        let mut conn = connect(dsn).await?;
        let quoted = role.quoted();

        // 1. No new sessions, committed before any are terminated so none can slip in between.
        let mut tx = conn.begin().await.map_err(|e| db_error(dsn, e))?;
        set_local_timeouts(dsn, &mut tx).await?;
        serialize_ddl(dsn, &mut tx).await?;
        let row = sqlx::query(
            "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication \
                    OR r.rolbypassrls AS privileged, \
                    pg_has_role(current_user, r.oid, 'USAGE') AS member \
               FROM pg_roles r WHERE r.rolname = $1",
        )
        .bind(role.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error(dsn, e))?;
        let Some(row) = row else {
            return Ok(RevokeOutcome::AlreadyGone);
        };
        if get::<bool>(dsn, &row, "privileged")? {
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
        if let Some(gone) = gone_or(dsn, sqlx::Executor::execute(&mut *tx, sql.as_str()).await)? {
            return Ok(gone);
        }
        tx.commit().await.map_err(|e| db_error(dsn, e))?;

        // 2. End the sessions it still has. Two statements on purpose: in one, such as
        // `… FROM pg_stat_activity WHERE usename = $1 AND pg_terminate_backend(pid)`, the
        // planner pushes the call below the join that supplies `usename` and terminates
        // every session on the server.
        let pids: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE usename = $1")
                .bind(role.as_str())
                .fetch_all(&mut conn)
                .await
                .map_err(|e| db_error(dsn, e))?;
        let terminated: i64 = if pids.is_empty() {
            0
        } else {
            sqlx::query_scalar(
                "SELECT count(*) FROM unnest($1::int4[]) AS pid WHERE pg_terminate_backend(pid)",
            )
            .bind(&pids)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| db_error(dsn, e))?
        };

        // 3. Revoke and drop.
        let mut tx = conn.begin().await.map_err(|e| db_error(dsn, e))?;
        set_local_timeouts(dsn, &mut tx).await?;
        serialize_ddl(dsn, &mut tx).await?;
        let sql = format!("DROP OWNED BY {quoted}; DROP ROLE {quoted};");
        if let Some(gone) = gone_or(dsn, sqlx::Executor::execute(&mut *tx, sql.as_str()).await)? {
            return Ok(gone);
        }
        tx.commit().await.map_err(|e| db_error(dsn, e))?;
        close(conn).await;
        tracing::info!(role = %role, target = %dsn.target(), "dropped database role");
        Ok(RevokeOutcome::Revoked {
            sessions_terminated: u64::try_from(terminated).unwrap_or(0),
        })
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
        let mut conn = connect(dsn).await?;
        let sql = format!(
            "ALTER ROLE {} VALID UNTIL {}",
            role.quoted(),
            quote_literal(&valid_until)
        );
        sqlx::Executor::execute(&mut conn, sql.as_str())
            .await
            .map_err(|e| db_error(dsn, e))?;
        close(conn).await;
        Ok(())
    })
    .await
}

/// Maps "role does not exist" (a concurrent revoke won the race) to `AlreadyGone`.
fn gone_or<T>(
    dsn: &AdminDsn,
    result: std::result::Result<T, sqlx::Error>,
) -> Result<Option<RevokeOutcome>> {
    match result {
        Ok(_) => Ok(None),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42704") => {
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
) -> Zeroizing<String> {
    let role = role.quoted();
    let mut sql = Zeroizing::new(String::with_capacity(1024));
    sql.push_str(&format!(
        "SET LOCAL lock_timeout = {};\nSET LOCAL statement_timeout = {};\n",
        quote_literal(LOCK_TIMEOUT),
        quote_literal(STATEMENT_TIMEOUT),
    ));
    sql.push_str(&format!(
        "CREATE ROLE {role} WITH LOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE \
         NOREPLICATION NOBYPASSRLS CONNECTION LIMIT {CONNECTION_LIMIT} PASSWORD {} \
         VALID UNTIL {};\n",
        quote_literal(verifier),
        quote_literal(valid_until),
    ));
    sql.push_str(&format!(
        "GRANT CONNECT ON DATABASE {} TO {role};\n",
        quote_ident(database)
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
    sql
}

/// What `role` should hold after the grants but does not: PostgreSQL only warns ("no
/// privileges were granted") when the grantor lacks the grant option, so this asks.
async fn missing_grants(
    dsn: &AdminDsn,
    tx: &mut PgConnection,
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
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT what FROM ( \
             SELECT 'CONNECT on database ' || quote_ident(current_database()) AS what, \
                    has_database_privilege($1, current_database(), 'CONNECT') AS ok \
             UNION ALL \
             SELECT 'USAGE on schema ' || quote_ident(s), has_schema_privilege($1, s, 'USAGE') \
               FROM unnest($2::text[]) AS s \
             UNION ALL \
             SELECT p || ' on ' || t, has_table_privilege($1, t, p) \
               FROM unnest($3::text[], $4::text[]) AS g(t, p) \
         ) AS checks WHERE NOT ok",
    )
    .bind(role.as_str())
    .bind(schemas)
    .bind(tables)
    .bind(privileges)
    .fetch_all(tx)
    .await
    .map_err(|e| db_error(dsn, e))?;
    Ok(missing)
}

/// Takes the engine's transaction-scoped advisory lock on this database. Role DDL updates
/// shared catalog rows — `GRANT CONNECT ON DATABASE` and `DROP OWNED` rewrite the database's
/// ACL — and two transactions doing so at once fail with "tuple concurrently updated"; so the
/// engine's transactions on one database take turns (across every Warden replica).
async fn serialize_ddl(dsn: &AdminDsn, tx: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('warden-broker-role-ddl'))")
        .execute(tx)
        .await
        .map_err(|e| db_error(dsn, e))?;
    Ok(())
}

async fn set_local_timeouts(dsn: &AdminDsn, tx: &mut PgConnection) -> Result<()> {
    let sql = format!(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {};",
        quote_literal(LOCK_TIMEOUT),
        quote_literal(STATEMENT_TIMEOUT)
    );
    sqlx::Executor::execute(tx, sql.as_str())
        .await
        .map_err(|e| db_error(dsn, e))?;
    Ok(())
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

async fn connect(dsn: &AdminDsn) -> Result<PgConnection> {
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&dsn.options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(db_error(dsn, e)),
        Err(_) => Err(BrokerError::Unavailable {
            target: dsn.target.clone(),
            reason: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

/// Says goodbye to the server; a failure changes nothing, the socket closes anyway.
async fn close(conn: PgConnection) {
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "closing database connection failed");
    }
}

/// Runs `operation` with [`OPERATION_TIMEOUT`]; on timeout the connection is dropped, which
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

fn get<'r, T>(dsn: &AdminDsn, row: &'r sqlx::postgres::PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(|e| db_error(dsn, e))
}

/// Sorts a sqlx error into unavailable (worth retrying later), rejected (the server said no)
/// and the rest.
fn db_error(dsn: &AdminDsn, error: sqlx::Error) -> BrokerError {
    let unavailable = |reason: String| BrokerError::Unavailable {
        target: dsn.target.clone(),
        reason,
    };
    match error {
        sqlx::Error::Database(e) => {
            let sqlstate = e.code().map(|c| c.into_owned());
            let message = e.message().to_owned();
            match sqlstate.as_deref() {
                Some(code) if is_transient(code) => {
                    unavailable(format!("{message} (SQLSTATE {code})"))
                }
                _ => BrokerError::Rejected { sqlstate, message },
            }
        }
        sqlx::Error::Io(e) => unavailable(e.to_string()),
        sqlx::Error::Tls(e) => unavailable(format!("tls: {e}")),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            unavailable(error.to_string())
        }
        sqlx::Error::Configuration(e) => BrokerError::InvalidDsn {
            reason: e.to_string(),
        },
        other => BrokerError::Unexpected {
            reason: other.to_string(),
        },
    }
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

/// `s` as a double-quoted SQL identifier, embedded quotes doubled.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `s` as an SQL string literal that means the same whatever `standard_conforming_strings`
/// is: quotes doubled, and an `E''` literal with doubled backslashes if there are any.
fn quote_literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
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
            assert_eq!(quote_ident(input), quoted, "{input}");
        }
        let literals = [
            ("abc", "'abc'"),
            ("it's", "'it''s'"),
            ("a\\b", "E'a\\\\b'"),
            ("'\\'", "E'''\\\\'''"),
        ];
        for (input, quoted) in literals {
            assert_eq!(quote_literal(input), quoted, "{input}");
        }
    }

    /// A verifier PostgreSQL 15 computed itself (`CREATE ROLE … PASSWORD '<password>'` with
    /// `password_encryption = scram-sha-256`, read back from `pg_authid`): recomputing it from
    /// its salt must give the same bytes.
    #[test]
    fn scram_verifier_matches_postgresql() {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        let password = "Zx7pQ2mW9rT4vB8nK3sD6fG1hJ5lC0aE";
        let expected = "SCRAM-SHA-256$4096:RB/ieL5/rL1Q6VANy9WthA==$\
                        SfTFQB6r9xPrhCAUHbqHC7fKLNXvOlmD/8yFyHIdBCI=:\
                        4opu4UMcLDTKgaHnWjPdS/xys34rN1Q5uH92Ouq4nYY=";
        let salt = STANDARD.decode("RB/ieL5/rL1Q6VANy9WthA==").unwrap();
        let verifier = scram_verifier(password, &salt, SCRAM_ITERATIONS);
        assert_eq!(verifier.as_str(), expected);
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
        );
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
}
