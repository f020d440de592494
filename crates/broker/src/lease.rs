//! Lease ids and states.
//!
//! A lease id is `<engine>/<name>/lse_<32 hex>` — `oauth/token/lse_…`,
//! `postgres/db_read_summary/lse_…` — so that a prefix names a group of leases the way a
//! Vault lease path does (`postgres/db_read_summary/` is every credential of that role).

use std::fmt;

use crate::BrokerError;

/// The engine behind a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// An OAuth access token from the token endpoint; nothing to undo upstream.
    OAuth,
    /// A dynamic PostgreSQL login role; revocation drops it.
    Postgres,
}

impl Engine {
    /// The stored name, also the first segment of lease ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::OAuth => "oauth",
            Engine::Postgres => "postgres",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, BrokerError> {
        match s {
            "oauth" => Ok(Engine::OAuth),
            "postgres" => Ok(Engine::Postgres),
            other => Err(BrokerError::InvalidLease(format!(
                "unknown engine `{other}`: expected oauth or postgres"
            ))),
        }
    }
}

/// A lease's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// In force.
    Active,
    /// Revoked here; the engine has not yet undone it upstream (the sweeper retries).
    Revoking,
    /// Revoked, and undone upstream.
    Revoked,
    /// Reached its expiry (a token simply stops validating).
    Expired,
}

impl LeaseState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Revoking => "revoking",
            LeaseState::Revoked => "revoked",
            LeaseState::Expired => "expired",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Result<Self, BrokerError> {
        match s {
            "active" => Ok(LeaseState::Active),
            "revoking" => Ok(LeaseState::Revoking),
            "revoked" => Ok(LeaseState::Revoked),
            "expired" => Ok(LeaseState::Expired),
            other => Err(BrokerError::InvalidLease(format!(
                "unknown lease state `{other}`: expected active, revoking, revoked or expired"
            ))),
        }
    }
}

/// Longest lease id or prefix accepted.
pub const MAX_LEASE_ID_LEN: usize = 160;

/// A lease id, checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(String);

impl LeaseId {
    /// A fresh id for a lease of `engine` named `name` (a role template, or `token`).
    pub fn generate(engine: Engine, name: &str) -> Self {
        use rand::RngCore as _;
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        LeaseId(format!("{}/{name}/lse_{hex}", engine.as_str()))
    }

    /// Parses `<engine>/<name>/lse_<32 hex>`.
    pub fn parse(s: &str) -> Result<Self, BrokerError> {
        let bad = |why: &str| BrokerError::InvalidLease(format!("lease id `{s}`: {why}"));
        if s.len() > MAX_LEASE_ID_LEN {
            return Err(bad("too long"));
        }
        let mut parts = s.split('/');
        let (Some(engine), Some(name), Some(tail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <engine>/<name>/lse_<32 hex>"));
        };
        Engine::parse(engine)?;
        if !is_name(name) {
            return Err(bad("the name part must be 1-63 of [a-z0-9_-]"));
        }
        let hex = tail
            .strip_prefix("lse_")
            .ok_or_else(|| bad("no lse_ part"))?;
        if hex.len() != 32
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(bad("the lse_ part must be 32 lowercase hex digits"));
        }
        Ok(LeaseId(s.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The engine named by the id.
    pub fn engine(&self) -> Engine {
        match self.0.split('/').next() {
            Some("postgres") => Engine::Postgres,
            _ => Engine::OAuth,
        }
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A prefix of lease ids for bulk revocation: starts with an engine name and `/`, so that a
/// typo can never mean "every lease".
pub fn parse_prefix(s: &str) -> Result<String, BrokerError> {
    let bad = |why: &str| BrokerError::InvalidLease(format!("lease prefix `{s}`: {why}"));
    if s.len() > MAX_LEASE_ID_LEN {
        return Err(bad("too long"));
    }
    let Some((engine, rest)) = s.split_once('/') else {
        return Err(bad(
            "must start with an engine and a slash, e.g. `postgres/`",
        ));
    };
    Engine::parse(engine)?;
    if !rest
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-/".contains(&b))
    {
        return Err(bad("may hold only [a-z0-9_-/]"));
    }
    Ok(s.to_owned())
}

/// A name segment: 1-63 of `[a-z0-9_-]`.
pub fn is_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_prefixes() {
        let id = LeaseId::generate(Engine::Postgres, "db_read_summary");
        assert_eq!(LeaseId::parse(id.as_str()).unwrap(), id);
        assert_eq!(id.engine(), Engine::Postgres);
        assert!(id.as_str().starts_with("postgres/db_read_summary/lse_"));
        for bad in [
            "",
            "oauth/token",
            "ldap/x/lse_00000000000000000000000000000000",
            "oauth/Token/lse_00000000000000000000000000000000",
            "oauth/token/lse_0000000000000000000000000000000",
            "oauth/token/lse_0000000000000000000000000000000G",
            "oauth/token/lse_000000000000000000000000000000AA",
            "oauth/token/x_00000000000000000000000000000000",
            "oauth/token/lse_00000000000000000000000000000000/x",
        ] {
            assert!(LeaseId::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "oauth/",
            "postgres/db_read_summary/",
            "postgres/db_read_summary/lse_0a",
        ] {
            assert_eq!(parse_prefix(good).unwrap(), good);
        }
        for bad in ["", "/", "%", "oauth", "ldap/", "postgres/%", "postgres/a b"] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
        for s in ["active", "revoking", "revoked", "expired"] {
            assert_eq!(LeaseState::parse(s).unwrap().as_str(), s);
        }
        assert!(LeaseState::parse("dead").is_err());
    }
}
