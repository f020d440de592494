//! The operator's broker commands: `warden lease …`, `warden hold …` / `release` / `holds`,
//! and `warden db …` (target databases and role templates for dynamic credentials).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::client::{Client, percent_encode};

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
        /// Print JSON
        #[arg(long)]
        json: bool,
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
        /// New lifetime from now, seconds
        #[arg(long)]
        ttl: i64,
    },
}

pub(crate) async fn lease(client: &Client, cmd: LeaseCmd) -> Result<()> {
    match cmd {
        LeaseCmd::List {
            agent,
            task,
            prefix,
            state,
            limit,
            json,
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
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            for l in v.as_array().into_iter().flatten() {
                print_lease_line(l);
            }
        }
        LeaseCmd::Show { id } => {
            let v = client
                .get_json(&format!("/v1/leases?id={}", percent_encode(&id)))
                .await?;
            let one = v
                .as_array()
                .and_then(|a| a.first())
                .cloned()
                .unwrap_or(Value::Null);
            println!("{}", serde_json::to_string_pretty(&one)?);
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
            println!("revoked {n} lease(s)");
            let ids: Vec<&str> = v["lease_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for id in ids.iter().take(20) {
                println!("  {id}");
            }
            if n > 20 {
                println!(
                    "  … and {} more (warden lease list --state revoked)",
                    n - 20
                );
            }
        }
        LeaseCmd::Renew { id, ttl } => {
            let v = client
                .post_json("/v1/leases/renew", &json!({"lease_id": id, "ttl_s": ttl}))
                .await?;
            print_lease_line(&v);
        }
    }
    Ok(())
}

fn print_lease_line(l: &Value) {
    let s = |k: &str| l[k].as_str().unwrap_or("-").to_owned();
    println!(
        "{:<62} {:<9} {:<45} task={} expires={}",
        s("lease_id"),
        s("state"),
        s("agent"),
        l["task"].as_str().unwrap_or("-"),
        crate::trust_cli::when(&l["expires_unix_ms"])
    );
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
pub(crate) async fn hold(client: &Client, kind: HoldKind, value: &str, reason: &str) -> Result<()> {
    let v = client
        .post_json(
            "/v1/holds",
            &json!({"kind": kind.as_str(), "value": value, "reason": reason}),
        )
        .await?;
    println!(
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
        println!("  denied everywhere: {}", a.as_str().unwrap_or_default());
    }
    Ok(())
}

/// `warden release KIND VALUE --reason …`
pub(crate) async fn release(
    client: &Client,
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
    println!(
        "released {} {value} (revoked credentials stay revoked)",
        kind.as_str()
    );
    Ok(())
}

/// `warden holds`
pub(crate) async fn holds(client: &Client) -> Result<()> {
    let v = client.get_json("/v1/holds").await?;
    for h in v.as_array().into_iter().flatten() {
        println!(
            "{:<7} {:<50} {} ({})",
            h["kind"].as_str().unwrap_or_default(),
            h["value"].as_str().unwrap_or_default(),
            h["reason"].as_str().unwrap_or_default(),
            h["created_by"].as_str().unwrap_or_default()
        );
    }
    Ok(())
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
        /// Default lease lifetime, seconds
        #[arg(long, default_value_t = 300)]
        default_ttl: i64,
        /// Longest lifetime, renewals included, seconds
        #[arg(long, default_value_t = 3600)]
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
        bail!("grant `{text}` must be PRIVILEGES:TABLES, e.g. SELECT:customers,orders");
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

pub(crate) async fn db(client: &Client, cmd: DbCmd) -> Result<()> {
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
                    .with_context(|| format!("reading {}", path.display()))?,
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
                    .with_context(|| format!("reading {}", path.display()))?;
                body["ca_pem"] = json!(pem);
            }
            let v = client
                .put_json(&format!("/v1/databases/{}", percent_encode(&name)), &body)
                .await?;
            println!(
                "database {name} -> {} (tls {})",
                v["target"].as_str().unwrap_or_default(),
                v["tls"].as_str().unwrap_or_default()
            );
        }
        DbCmd::Connections => {
            let v = client.get_json("/v1/databases").await?;
            for c in v.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<12} {}",
                    c["name"].as_str().unwrap_or_default(),
                    c["tls"].as_str().unwrap_or_default(),
                    c["target"].as_str().unwrap_or_default()
                );
            }
        }
        DbCmd::RemoveConnection { name } => {
            client
                .delete(&format!("/v1/databases/{}", percent_encode(&name)))
                .await?;
            println!("removed database {name}");
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
            client
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
            println!("role {name} on {connection}");
        }
        DbCmd::Roles => {
            let v = client.get_json("/v1/database-roles").await?;
            for r in v.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<16} ttl={}s max={}s {}",
                    r["name"].as_str().unwrap_or_default(),
                    r["connection"].as_str().unwrap_or_default(),
                    r["default_ttl_s"],
                    r["max_ttl_s"],
                    r["grants"]
                );
            }
        }
        DbCmd::RemoveRole { name } => {
            client
                .delete(&format!("/v1/database-roles/{}", percent_encode(&name)))
                .await?;
            println!("removed role {name}");
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

pub(crate) async fn secret(client: &Client, cmd: SecretCmd) -> Result<()> {
    match cmd {
        SecretCmd::Put { name, value_file } => {
            let value = match value_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
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
            println!("secret {name} version {}", v["version"]);
        }
        SecretCmd::List => {
            let v = client.get_json("/v1/secrets").await?;
            for s in v.as_array().into_iter().flatten() {
                println!(
                    "{:<32} v{:<4} {} {}",
                    s["name"].as_str().unwrap_or_default(),
                    s["version"],
                    crate::trust_cli::when(&s["created_unix_ms"]),
                    s["created_by"].as_str().unwrap_or_default()
                );
            }
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
            println!("{}", v["value"].as_str().unwrap_or_default());
        }
        SecretCmd::Delete { name, reason } => {
            client
                .delete(&format!(
                    "/v1/secrets/{}?reason={}",
                    percent_encode(&name),
                    percent_encode(&reason)
                ))
                .await?;
            println!("deleted secret {name}");
        }
    }
    Ok(())
}
