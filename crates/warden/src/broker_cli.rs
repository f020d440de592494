//! The operator's broker commands: `warden lease …`, `warden hold …` / `release` / `holds`,
//! and `warden db …` (target databases and role templates for dynamic credentials).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    client::{Client, parse_duration, percent_encode},
    output::{self, Cell, Col, Out},
};

/// `warden lease …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum LeaseCmd {
    /// List leases (auditor)
    List {
        /// Held by, or issued on behalf of, this SPIFFE ID
        #[arg(long)]
        agent: Option<String>,
        /// Of this task
        #[arg(long)]
        task: Option<String>,
        /// Lease id prefix, e.g. postgres/db_read_summary/
        #[arg(long)]
        prefix: Option<String>,
        /// active, revoking, revoked or expired
        #[arg(long)]
        state: Option<String>,
        /// Page size (1-1000)
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one lease (auditor)
    Show {
        /// The lease id
        id: String,
    },
    /// Revoke a lease, or every lease of an agent, a task or an id prefix (admin)
    Revoke {
        /// The lease id
        #[arg(conflicts_with_all = ["agent", "task", "prefix"])]
        id: Option<String>,
        /// Every lease of this SPIFFE ID
        #[arg(long)]
        agent: Option<String>,
        /// Every lease of this task
        #[arg(long)]
        task: Option<String>,
        /// Every lease whose id starts with this
        #[arg(long)]
        prefix: Option<String>,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
    /// Extend a lease to now + TTL, never past its maximum (admin)
    Renew {
        /// The lease id
        id: String,
        /// New lifetime from now (90s, 10m, 8h, 2d or seconds)
        #[arg(long, value_parser = parse_duration)]
        ttl: i64,
    },
}

/// The columns of `lease list`.
const LEASE_COLS: &[Col] = &[
    ("LEASE_ID", Cell::Str("lease_id")),
    ("STATE", Cell::Str("state")),
    ("AGENT", Cell::Str("agent")),
    ("TASK", Cell::Str("task")),
    ("EXPIRES", Cell::Time("expires_unix_ms")),
];

/// The fields of one lease (`lease show`, `lease renew`, `agent renew`).
pub(crate) const LEASE_FIELDS: &[Col] = &[
    ("LEASE_ID", Cell::Str("lease_id")),
    ("STATE", Cell::Str("state")),
    ("AGENT", Cell::Str("agent")),
    ("SUBJECT", Cell::Str("subject")),
    ("TASK", Cell::Str("task")),
    ("ENGINE", Cell::Str("engine")),
    ("SCOPE", Cell::Json("scope")),
    ("PARENT", Cell::Str("parent")),
    ("ISSUED", Cell::Time("issued_unix_ms")),
    ("EXPIRES", Cell::Time("expires_unix_ms")),
    ("MAX_EXPIRES", Cell::Time("max_expires_unix_ms")),
    ("REVOKED", Cell::Time("revoked_unix_ms")),
    ("REVOKE_REASON", Cell::Str("revoke_reason")),
    ("ATTEMPTS", Cell::Str("attempts")),
    ("LAST_ERROR", Cell::Str("last_error")),
];

pub(crate) async fn lease(client: &Client, out: Out, cmd: LeaseCmd) -> Result<()> {
    match cmd {
        LeaseCmd::List {
            agent,
            task,
            prefix,
            state,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (k, v) in [
                ("agent", agent),
                ("task", task),
                ("prefix", prefix),
                ("state", state),
            ] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", percent_encode(&v)));
                }
            }
            let v = client
                .get_json(&format!("/v1/leases?{}", query.join("&")))
                .await?;
            out.list(&v, &v, "no leases", LEASE_COLS)?;
        }
        LeaseCmd::Show { id } => {
            let v = client
                .get_json(&format!("/v1/leases?id={}", percent_encode(&id)))
                .await?;
            let Some(one) = v.as_array().and_then(|a| a.first()) else {
                return Err(output::Refused(format!("no lease `{id}`")).into());
            };
            out.object(one, LEASE_FIELDS)?;
        }
        LeaseCmd::Revoke {
            id,
            agent,
            task,
            prefix,
            reason,
        } => {
            let body = json!({
                "lease_id": id, "agent": agent, "task": task, "prefix": prefix, "reason": reason,
            });
            let body = strip_nulls(body);
            let v = client.post_json("/v1/leases/revoke", &body).await?;
            let n = v["revoked"].as_u64().unwrap_or(0);
            let ids: Vec<&str> = v["lease_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut text = format!("revoked {n} lease(s)");
            for id in &ids {
                text.push_str(&format!("\n  {id}"));
            }
            out.done(&v, text)?;
        }
        LeaseCmd::Renew { id, ttl } => {
            let v = client
                .post_json("/v1/leases/renew", &json!({"lease_id": id, "ttl_s": ttl}))
                .await?;
            out.object(&v, LEASE_FIELDS)?;
        }
    }
    Ok(())
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

/// What a hold names.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum HoldKind {
    /// An agent, by SPIFFE ID
    Agent,
    /// A task, by id
    Task,
    /// A vendor: every agent whose registration entry names it as owner
    Vendor,
}

impl HoldKind {
    fn as_str(self) -> &'static str {
        match self {
            HoldKind::Agent => "agent",
            HoldKind::Task => "task",
            HoldKind::Vendor => "vendor",
        }
    }
}

/// `warden hold KIND VALUE --reason …`: the kill switch.
pub(crate) async fn hold(
    client: &Client,
    out: Out,
    kind: HoldKind,
    value: &str,
    reason: &str,
) -> Result<()> {
    let v = client
        .post_json(
            "/v1/holds",
            &json!({"kind": kind.as_str(), "value": value, "reason": reason}),
        )
        .await?;
    let mut text = format!(
        "held {} {}: {} lease(s) revoked{}",
        kind.as_str(),
        value,
        v["leases_revoked"].as_u64().unwrap_or(0),
        match v["leases_pending"].as_u64().unwrap_or(0) {
            0 => String::new(),
            n => format!(
                ", {n} still being revoked upstream (see `warden lease list --state revoking`)"
            ),
        }
    );
    for a in v["agents_held"].as_array().into_iter().flatten() {
        text.push_str(&format!("\n  denied everywhere: {}", output::scalar(a)));
    }
    out.done(&v, text)
}

/// `warden release KIND VALUE --reason …`
pub(crate) async fn release(
    client: &Client,
    out: Out,
    kind: HoldKind,
    value: &str,
    reason: &str,
) -> Result<()> {
    client
        .delete(&format!(
            "/v1/holds/{}/{}?reason={}",
            kind.as_str(),
            percent_encode(value),
            percent_encode(reason)
        ))
        .await?;
    out.done(
        &json!({"kind": kind.as_str(), "value": value, "released": true}),
        format!(
            "released {} {value} (revoked credentials stay revoked)",
            kind.as_str()
        ),
    )
}

/// `warden holds`
pub(crate) async fn holds(client: &Client, out: Out) -> Result<()> {
    let v = client.get_json("/v1/holds").await?;
    out.list(
        &v,
        &v,
        "no holds",
        &[
            ("KIND", Cell::Str("kind")),
            ("VALUE", Cell::Str("value")),
            ("SINCE", Cell::Time("created_unix_ms")),
            ("BY", Cell::Str("created_by")),
            ("REASON", Cell::Str("reason")),
        ],
    )
}

/// `warden db …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DbCmd {
    /// Add or replace a target database (admin); the DSN is checked live and stored sealed
    AddConnection {
        /// Its name
        name: String,
        /// File holding the admin connection string (or WARDEN_DB_ADMIN_DSN)
        #[arg(long, conflicts_with = "dsn_env")]
        dsn_file: Option<PathBuf>,
        /// Read the DSN from WARDEN_DB_ADMIN_DSN
        #[arg(long)]
        dsn_env: bool,
        /// TLS to the target: disable or verify-full (default: verify-full with --ca-file;
        /// without it, disable for a local target, and required for any other)
        #[arg(long)]
        tls: Option<String>,
        /// PEM file with the CA certificate the target's certificate must chain to
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// List target databases
    Connections,
    /// Remove a target database no role uses (admin)
    RemoveConnection {
        /// Its name
        name: String,
    },
    /// Add or replace a role template (admin)
    AddRole {
        /// Its name, e.g. db_read_summary
        name: String,
        /// The target database
        #[arg(long)]
        connection: String,
        /// PRIVILEGES:TABLES, e.g. SELECT:customers,orders (repeatable)
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Default lease lifetime (90s, 10m, 8h, 2d or seconds)
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        default_ttl: i64,
        /// Longest lifetime, renewals included (90s, 10m, 8h, 2d or seconds)
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        max_ttl: i64,
    },
    /// List role templates
    Roles,
    /// Remove a role template without live leases (admin)
    RemoveRole {
        /// Its name
        name: String,
    },
}

/// `SELECT,INSERT:customers,orders` → `{"privileges": [...], "tables": [...]}`.
fn parse_grant(text: &str) -> Result<Value> {
    let Some((privileges, tables)) = text.split_once(':') else {
        bail!("--grant `{text}` must be PRIVILEGES:TABLES, e.g. SELECT:customers,orders");
    };
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(json!({"privileges": list(privileges), "tables": list(tables)}))
}

pub(crate) async fn db(client: &Client, out: Out, cmd: DbCmd) -> Result<()> {
    match cmd {
        DbCmd::AddConnection {
            name,
            dsn_file,
            dsn_env: _,
            tls,
            ca_file,
        } => {
            let dsn = match dsn_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {} (--dsn-file)", path.display()))?,
                None => std::env::var("WARDEN_DB_ADMIN_DSN").context(
                    "give --dsn-file FILE, or set WARDEN_DB_ADMIN_DSN and pass --dsn-env",
                )?,
            };
            let mut body = json!({"dsn": dsn.trim()});
            if let Some(tls) = tls {
                body["tls"] = json!(tls);
            }
            if let Some(path) = ca_file {
                let pem = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {} (--ca-file)", path.display()))?;
                body["ca_pem"] = json!(pem);
            }
            let v = client
                .put_json(&format!("/v1/databases/{}", percent_encode(&name)), &body)
                .await?;
            let sentence = format!(
                "database {name} -> {} (tls {})",
                output::scalar(&v["target"]),
                output::scalar(&v["tls"])
            );
            out.done(&v, sentence)?;
        }
        DbCmd::Connections => {
            let v = client.get_json("/v1/databases").await?;
            out.list(
                &v,
                &v,
                "no target databases",
                &[
                    ("NAME", Cell::Str("name")),
                    ("TLS", Cell::Str("tls")),
                    ("TARGET", Cell::Str("target")),
                ],
            )?;
        }
        DbCmd::RemoveConnection { name } => {
            client
                .delete(&format!("/v1/databases/{}", percent_encode(&name)))
                .await?;
            out.done(
                &json!({"name": name, "removed": true}),
                format!("removed database {name}"),
            )?;
        }
        DbCmd::AddRole {
            name,
            connection,
            grants,
            default_ttl,
            max_ttl,
        } => {
            let grants = grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<Vec<_>>>()?;
            let v = client
                .put_json(
                    &format!("/v1/database-roles/{}", percent_encode(&name)),
                    &json!({
                        "connection": connection,
                        "grants": grants,
                        "default_ttl_s": default_ttl,
                        "max_ttl_s": max_ttl,
                    }),
                )
                .await?;
            out.done(&v, format!("role {name} on {connection}"))?;
        }
        DbCmd::Roles => {
            let v = client.get_json("/v1/database-roles").await?;
            out.list(
                &v,
                &v,
                "no role templates",
                &[
                    ("NAME", Cell::Str("name")),
                    ("CONNECTION", Cell::Str("connection")),
                    ("DEFAULT_TTL_S", Cell::Str("default_ttl_s")),
                    ("MAX_TTL_S", Cell::Str("max_ttl_s")),
                    ("GRANTS", Cell::Json("grants")),
                ],
            )?;
        }
        DbCmd::RemoveRole { name } => {
            client
                .delete(&format!("/v1/database-roles/{}", percent_encode(&name)))
                .await?;
            out.done(
                &json!({"name": name, "removed": true}),
                format!("removed role {name}"),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse() {
        assert_eq!(
            parse_grant("SELECT:customers, orders").unwrap(),
            json!({"privileges": ["SELECT"], "tables": ["customers", "orders"]})
        );
        assert!(parse_grant("SELECT").is_err());
    }
}

/// `warden secret …`: upstream secrets in custody.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SecretCmd {
    /// Store a secret, or rotate it (a new version), reading the value from a file or stdin
    /// (admin)
    Put {
        /// Its name
        name: String,
        /// File holding the value (default: stdin)
        #[arg(long)]
        value_file: Option<PathBuf>,
    },
    /// List secrets and versions, without values
    List,
    /// Print a secret's value; the read is recorded with its reason (admin)
    Reveal {
        /// Its name
        name: String,
        /// Why, for the record
        #[arg(long)]
        reason: String,
        /// A version (default: the latest)
        #[arg(long = "secret-version")]
        secret_version: Option<i64>,
    },
    /// Delete every version of a secret (admin)
    Delete {
        /// Its name
        name: String,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
}

pub(crate) async fn secret(client: &Client, out: Out, cmd: SecretCmd) -> Result<()> {
    match cmd {
        SecretCmd::Put { name, value_file } => {
            let value = match value_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {} (--value-file)", path.display()))?,
                None => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                    s
                }
            };
            let value = value.strip_suffix('\n').unwrap_or(&value).to_owned();
            let v = client
                .put_json(
                    &format!("/v1/secrets/{}", percent_encode(&name)),
                    &json!({"value": value}),
                )
                .await?;
            out.done(&v, format!("secret {name} version {}", v["version"]))?;
        }
        SecretCmd::List => {
            let v = client.get_json("/v1/secrets").await?;
            out.list(
                &v,
                &v,
                "no secrets",
                &[
                    ("NAME", Cell::Str("name")),
                    ("VERSION", Cell::Str("version")),
                    ("CREATED", Cell::Time("created_unix_ms")),
                    ("BY", Cell::Str("created_by")),
                ],
            )?;
        }
        SecretCmd::Reveal {
            name,
            reason,
            secret_version: version,
        } => {
            let v = client
                .post_json(
                    &format!("/v1/secrets/{}/reveal", percent_encode(&name)),
                    &strip_nulls(json!({"reason": reason, "version": version})),
                )
                .await?;
            if out.is_json() {
                output::json(&v)?;
            } else {
                output::line(v["value"].as_str().unwrap_or_default())?;
            }
        }
        SecretCmd::Delete { name, reason } => {
            client
                .delete(&format!(
                    "/v1/secrets/{}?reason={}",
                    percent_encode(&name),
                    percent_encode(&reason)
                ))
                .await?;
            out.done(
                &json!({"name": name, "deleted": true}),
                format!("deleted secret {name}"),
            )?;
        }
    }
    Ok(())
}
