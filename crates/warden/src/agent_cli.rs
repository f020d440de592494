//! `warden agent …`: the broker from an agent's side, for agents written as shell scripts.
//! Each command fetches the caller's JWT-SVID from the local Workload API (attested from the
//! kernel, for this server's issuer URL) and presents it — no API token, no stored secret.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::client::{Client, percent_encode};

/// `warden agent …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AgentCmd {
    /// Exchange this agent's SVID for an access token (RFC 8693); prints the token response
    Token {
        /// Audience the token is for (repeatable)
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// Resource URI the token is for (RFC 8707, repeatable)
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Space-separated scopes
        #[arg(long)]
        scope: Option<String>,
        /// The task it is for
        #[arg(long)]
        task: Option<String>,
        /// RFC 9396 authorization_details (a JSON array)
        #[arg(long)]
        authorization_details: Option<String>,
        /// Delegate: exchange this access token (of another agent) for a narrower one that
        /// this agent holds, with this agent added to its `act` chain
        #[arg(long)]
        on_behalf_of: Option<String>,
    },
    /// Ask for a dynamic database credential of a role template; prints it as JSON
    DbCredential {
        /// The role template, e.g. db_read_summary
        role: String,
        /// The task it is for
        #[arg(long)]
        task: Option<String>,
        /// Lifetime, seconds
        #[arg(long)]
        ttl: Option<i64>,
    },
    /// Renew one of this agent's leases
    Renew {
        /// The lease id
        lease_id: String,
        /// New lifetime from now, seconds
        #[arg(long)]
        ttl: i64,
    },
    /// Give one of this agent's leases back (a database role is dropped at once)
    Revoke {
        /// The lease id
        lease_id: String,
    },
    /// Record an operation this agent performed with a credential (data access), in the ledger
    Record {
        /// The lease whose credential it used
        #[arg(long)]
        lease: Option<String>,
        /// What it did, e.g. select
        #[arg(long)]
        action: String,
        /// On what, e.g. customers
        #[arg(long)]
        resource: String,
        /// KEY=VALUE details, never secrets (repeatable; numbers stay numbers)
        #[arg(long = "detail")]
        details: Vec<String>,
    },
}

/// This process's JWT-SVID (as `spiffe_id`, one of its identities; empty: the first) for the
/// server at `client`.
async fn svid(client: &Client, socket: PathBuf, spiffe_id: String) -> Result<String> {
    use workload::api::client as wl;
    let issuer = client.issuer().await?;
    let mut api = wl::connect(socket.clone())
        .await
        .with_context(|| format!("cannot reach the Workload API at {}", socket.display()))?;
    let (_, token) = wl::fetch_jwt_as(&mut api, vec![issuer], spiffe_id)
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
    Ok(token)
}

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

pub(crate) async fn agent(
    client: &Client,
    socket: PathBuf,
    spiffe_id: Option<String>,
    cmd: AgentCmd,
) -> Result<()> {
    let me = svid(client, socket, spiffe_id.unwrap_or_default()).await?;
    match cmd {
        AgentCmd::Token {
            audiences,
            resources,
            scope,
            task,
            authorization_details,
            on_behalf_of,
        } => {
            let mut form: Vec<(&str, String)> = vec![("grant_type", EXCHANGE.into())];
            match on_behalf_of {
                Some(parent) => {
                    form.push(("subject_token", parent));
                    form.push(("subject_token_type", JWT.into()));
                    form.push(("actor_token", me));
                    form.push(("actor_token_type", JWT.into()));
                }
                None => {
                    form.push(("subject_token", me));
                    form.push(("subject_token_type", JWT.into()));
                }
            }
            form.extend(audiences.into_iter().map(|a| ("audience", a)));
            form.extend(resources.into_iter().map(|r| ("resource", r)));
            for (k, v) in [
                ("scope", scope),
                ("task", task),
                ("authorization_details", authorization_details),
            ] {
                if let Some(v) = v {
                    form.push((k, v));
                }
            }
            let (status, body) = client.post_form("/oauth2/token", &form).await?;
            if status != 200 {
                bail!(
                    "{} ({status}): {}",
                    body["error"].as_str().unwrap_or("error"),
                    body["error_description"].as_str().unwrap_or_default()
                );
            }
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        AgentCmd::DbCredential { role, task, ttl } => {
            let mut body = serde_json::Map::new();
            if let Some(t) = task {
                body.insert("task".into(), json!(t));
            }
            if let Some(t) = ttl {
                body.insert("ttl_s".into(), json!(t));
            }
            let v = client
                .post_as_agent(
                    &format!("/v1/agent/credentials/database/{}", percent_encode(&role)),
                    &me,
                    &Value::Object(body),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        AgentCmd::Renew { lease_id, ttl } => {
            let v = client
                .post_as_agent(
                    "/v1/agent/leases/renew",
                    &me,
                    &json!({"lease_id": lease_id, "ttl_s": ttl}),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        AgentCmd::Revoke { lease_id } => {
            client
                .post_as_agent(
                    "/v1/agent/leases/revoke",
                    &me,
                    &json!({"lease_id": lease_id}),
                )
                .await?;
            println!("revoked {lease_id}");
        }
        AgentCmd::Record {
            lease,
            action,
            resource,
            details,
        } => {
            let mut detail = serde_json::Map::new();
            for d in details {
                let Some((k, v)) = d.split_once('=') else {
                    bail!("detail `{d}` must be KEY=VALUE");
                };
                let value = v
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(v));
                detail.insert(k.to_owned(), value);
            }
            let mut body = json!({"action": action, "resource": resource, "detail": detail});
            if let Some(l) = lease {
                body["lease_id"] = json!(l);
            }
            let v = client
                .post_as_agent("/v1/agent/operations", &me, &body)
                .await?;
            println!("recorded as ledger entry {}", v["seq"]);
        }
    }
    Ok(())
}
