//! The crate's one error type and its stable codes.

/// Everything that can go wrong in this crate.
///
/// Each variant has a stable [`code`](BrokerError::code) that the API layer can hand to clients;
/// the messages are for people (lowercase, user input in backticks) and never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A PostgreSQL identifier (schema, table, template name) that is not a plain identifier.
    #[error("invalid identifier `{value}`: {reason}")]
    InvalidIdentifier {
        /// The identifier as given (shortened if very long).
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An operator's role template that does not parse or breaks one of the template rules.
    #[error("invalid role template: {reason}")]
    InvalidRoleTemplate {
        /// What is wrong, with the position in the template (`grants[0].tables[1]`).
        reason: String,
    },
    /// A role name that the engine did not (or could not have) generated: engine roles are
    /// always `w_…`, which is what keeps revocation away from everyone else's roles.
    #[error("invalid role name `{name}`: {reason}")]
    InvalidRoleName {
        /// The name as given (shortened if very long).
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// An admin connection string that is not a usable `postgres://…` URL.
    #[error("invalid admin connection string: {reason}")]
    InvalidDsn {
        /// What is wrong (the password is never repeated here).
        reason: String,
    },
    /// An expiry that PostgreSQL cannot store or that is not in the future.
    #[error("invalid expiry: {reason}")]
    InvalidValidUntil {
        /// What is wrong.
        reason: String,
    },
    /// The target database cannot be reached, did not answer in time, or is shutting down,
    /// overloaded or busy; trying again later may work. Nothing was changed.
    #[error("database `{target}` is unavailable: {reason}")]
    Unavailable {
        /// The target as `host:port/database` (no credentials).
        target: String,
        /// What happened.
        reason: String,
    },
    /// The database server refused a statement (missing table, permission denied, role
    /// already exists, authentication failed …); any transaction was rolled back.
    #[error("database rejected the request: {message}{}", sqlstate_suffix(.sqlstate))]
    Rejected {
        /// The SQLSTATE the server sent, e.g. `42P01` for a missing table.
        sqlstate: Option<String>,
        /// The server's message.
        message: String,
    },
    /// The configured admin role can neither create roles (`CREATEROLE`) nor is superuser.
    #[error("admin role `{user}` cannot create roles: it needs CREATEROLE (or superuser)")]
    InsufficientPrivilege {
        /// The admin's role name.
        user: String,
    },
    /// The admin ran the template's `GRANT`s but PostgreSQL granted less than asked (it only
    /// warns when the grantor lacks the grant option); the role was not created.
    #[error(
        "the admin role could not grant {}: it must own them or hold them WITH GRANT OPTION",
        .missing.join(", ")
    )]
    GrantIncomplete {
        /// What is missing, e.g. `SELECT on "public"."orders"`.
        missing: Vec<String>,
    },
    /// A role that the engine will not drop although its name looks like one of its own
    /// (it has attributes the engine never gives).
    #[error("refusing to drop role `{name}`: {reason}")]
    UnmanagedRole {
        /// The role's name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The database answered something this engine did not expect (a protocol or decoding
    /// problem, not a refusal).
    #[error("unexpected answer from the database: {reason}")]
    Unexpected {
        /// What happened.
        reason: String,
    },
    /// A target database's TLS settings that cannot be used: an unknown mode, `verify-full`
    /// without a CA, a CA that is not PEM certificates, TLS over a Unix socket, or a target
    /// reached over the network that does not say whether to use TLS.
    #[error("invalid TLS settings: {reason}")]
    InvalidTls {
        /// What is wrong.
        reason: String,
    },
    /// A `verify-full` target did not pass TLS verification: it offers no TLS, or its
    /// certificate does not chain to the target's CA or does not name its host. The session
    /// ended before anything was sent to it.
    #[error("database `{target}` failed TLS verification: {reason}")]
    TlsFailed {
        /// The target as `host:port/database` (no credentials).
        target: String,
        /// What happened.
        reason: String,
    },
    /// Text that cannot be put into an SQL statement (a NUL byte).
    #[error("invalid SQL text: {reason}")]
    InvalidSqlText {
        /// What is wrong.
        reason: String,
    },
    /// A lease id, prefix, engine or state that does not parse.
    #[error("{0}")]
    InvalidLease(String),
    /// A `scope` parameter that is not RFC 6749 scope tokens.
    #[error("{0}")]
    InvalidScope(String),
    /// An `audience` or `resource` that is not acceptable (RFC 8707).
    #[error("{0}")]
    InvalidTarget(String),
    /// `authorization_details` that are not RFC 9396's shape.
    #[error("{0}")]
    InvalidAuthorizationDetails(String),
    /// A secret value out of bounds.
    #[error("{0}")]
    InvalidSecret(String),
    /// Sealing or opening failed.
    #[error("{0}")]
    Crypto(String),
}

impl BrokerError {
    /// A stable, machine-readable code for the error, for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            BrokerError::InvalidIdentifier { .. } => "invalid_identifier",
            BrokerError::InvalidRoleTemplate { .. } => "invalid_role_template",
            BrokerError::InvalidRoleName { .. } => "invalid_role_name",
            BrokerError::InvalidDsn { .. } => "invalid_dsn",
            BrokerError::InvalidValidUntil { .. } => "invalid_valid_until",
            BrokerError::Unavailable { .. } => "database_unavailable",
            BrokerError::Rejected { .. } => "database_rejected",
            BrokerError::InsufficientPrivilege { .. } => "database_insufficient_privilege",
            BrokerError::GrantIncomplete { .. } => "database_grant_incomplete",
            BrokerError::UnmanagedRole { .. } => "role_not_managed",
            BrokerError::Unexpected { .. } => "database_unexpected",
            BrokerError::InvalidTls { .. } => "invalid_tls",
            BrokerError::TlsFailed { .. } => "database_tls_failed",
            BrokerError::InvalidSqlText { .. } => "invalid_sql_text",
            BrokerError::InvalidLease(_) => "invalid_lease",
            BrokerError::InvalidScope(_) => "invalid_scope",
            BrokerError::InvalidTarget(_) => "invalid_target",
            BrokerError::InvalidAuthorizationDetails(_) => "invalid_authorization_details",
            BrokerError::InvalidSecret(_) => "invalid_secret",
            BrokerError::Crypto(_) => "secret_unreadable",
        }
    }
}

/// Renders ` (SQLSTATE XXXXX)` when the server sent one.
fn sqlstate_suffix(sqlstate: &Option<String>) -> String {
    match sqlstate {
        Some(code) => format!(" (SQLSTATE {code})"),
        None => String::new(),
    }
}

/// Result alias for this crate.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_messages_lowercase() {
        let cases = [
            (
                BrokerError::InvalidRoleTemplate {
                    reason: "no grants".into(),
                },
                "invalid_role_template",
                "invalid role template: no grants",
            ),
            (
                BrokerError::InvalidDsn {
                    reason: "expected `postgres://…`".into(),
                },
                "invalid_dsn",
                "invalid admin connection string: expected `postgres://…`",
            ),
            (
                BrokerError::Unavailable {
                    target: "db:5432/app".into(),
                    reason: "connection refused".into(),
                },
                "database_unavailable",
                "database `db:5432/app` is unavailable: connection refused",
            ),
            (
                BrokerError::Rejected {
                    sqlstate: Some("42P01".into()),
                    message: "relation \"x\" does not exist".into(),
                },
                "database_rejected",
                "database rejected the request: relation \"x\" does not exist (SQLSTATE 42P01)",
            ),
            (
                BrokerError::GrantIncomplete {
                    missing: vec!["SELECT on \"s\".\"a\"".into(), "USAGE on \"s\"".into()],
                },
                "database_grant_incomplete",
                "the admin role could not grant SELECT on \"s\".\"a\", USAGE on \"s\": it must own \
                 them or hold them WITH GRANT OPTION",
            ),
            (
                BrokerError::TlsFailed {
                    target: "db:5432/app".into(),
                    reason: "invalid peer certificate: UnknownIssuer".into(),
                },
                "database_tls_failed",
                "database `db:5432/app` failed TLS verification: invalid peer certificate: \
                 UnknownIssuer",
            ),
            (
                BrokerError::InvalidTls {
                    reason: "`verify-full` needs `ca_pem`".into(),
                },
                "invalid_tls",
                "invalid TLS settings: `verify-full` needs `ca_pem`",
            ),
        ];
        for (error, code, message) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(error.to_string(), message);
        }
    }
}
