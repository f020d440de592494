//! `warden agent …`: the broker from an agent's side, for agents written as shell scripts.
//! Each command fetches the caller's JWT-SVID from the local Workload API (attested from the
//! kernel, for this server's issuer URL) and presents it — no API token, no stored secret.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::client::{Client, ClientArgs, percent_encode};

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
    /// Ask, just in time, for a permission on one of this agent's task's resources; exits 0
    /// once it is granted (by policy, or by an approver within --wait), 1 otherwise
    RequestGrant(RequestGrantArgs),
}

/// `warden agent request-grant …`
#[derive(Debug, clap::Args)]
pub(crate) struct RequestGrantArgs {
    /// The task it is for (this agent must be on it)
    #[arg(long)]
    task: String,
    /// One of the task's resources, type:id, e.g. repository:warden
    #[arg(long, value_name = "TYPE:ID")]
    resource: String,
    /// The permission, e.g. writer
    #[arg(long)]
    permission: String,
    /// Why, for the approver and the record
    #[arg(long)]
    reason: String,
    /// How long the grant lasts (30s, 10m, 2h, 1d) [default and at most: the task's deadline]
    #[arg(long, value_parser = crate::client::parse_duration)]
    ttl: Option<i64>,
    /// How long an approver has before the request is denied (30s, 10m, 2h, 1d) [default: 5m]
    #[arg(long, value_parser = crate::client::parse_duration)]
    approval_timeout: Option<i64>,
    /// Wait this long for an approver's decision (30s, 10m, …) when approval is needed
    #[arg(long, value_parser = crate::client::parse_duration)]
    wait: Option<i64>,
    /// Print the request as JSON (the final state with --wait)
    #[arg(long)]
    json: bool,
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
        AgentCmd::RequestGrant(_) => {
            // INVARIANT: `main` sends `request-grant` to `request_grant` (it needs the client
            // settings to poll as the agent, and an exit code).
            bail!("`agent request-grant` is run through `request_grant`");
        }
    }
    Ok(())
}

/// The client settings with only the token replaced by `bearer`.
fn with_token(args: &ClientArgs, bearer: &str) -> Result<ClientArgs> {
    use clap::{Args as _, FromArgMatches as _};
    // `ClientArgs`'s own argument definitions with no defaults and no environment, so the
    // matches hold only `--token` and updating a copy replaces nothing else.
    let cmd = ClientArgs::augment_args(clap::Command::new("warden"))
        .mut_args(|a| a.default_value(None).env(None));
    let matches = cmd
        .try_get_matches_from(["warden", "--token", bearer])
        .context("cannot set up the agent client")?;
    let mut args = args.clone();
    args.update_from_arg_matches(&matches)
        .context("cannot set up the agent client")?;
    Ok(args)
}

/// A client for the same server (and CA) that authenticates every request with `bearer`, an
/// agent's JWT-SVID, instead of an API token.
fn client_as(args: &ClientArgs, bearer: &str) -> Result<Client> {
    Client::new(&with_token(args, bearer)?)
}

/// Longest single long poll, seconds: below the client's 60 s request timeout.
const POLL_S: i64 = 50;

/// `warden agent request-grant …`: asks, prints the request, and with `--wait` long-polls
/// until it is decided or the wait is over. Success when the permission is granted
/// (`allowed` by policy or `approved`).
pub(crate) async fn request_grant(
    args: &ClientArgs,
    socket: PathBuf,
    spiffe_id: Option<String>,
    req: RequestGrantArgs,
) -> Result<ExitCode> {
    let plain = Client::new(args)?;
    let spiffe_id = spiffe_id.unwrap_or_default();
    let me = svid(&plain, socket.clone(), spiffe_id.clone()).await?;
    let mut body = json!({
        "task": req.task, "resource": req.resource, "permission": req.permission,
        "reason": req.reason,
    });
    if let Some(t) = req.ttl {
        body["ttl_s"] = json!(t);
    }
    if let Some(t) = req.approval_timeout {
        body["approval_timeout_s"] = json!(t);
    }
    let mut r = client_as(args, &me)?
        .post_json("/v1/grants/requests", &body)
        .await?;
    if !req.json {
        print_request_state(&r);
    }
    if let Some(wait) = req.wait.filter(|_| r["state"] == "pending") {
        let id = r["request_id"]
            .as_str()
            .context("the server's answer has no request_id")?
            .to_owned();
        let until = crate::now_ms() + wait.saturating_mul(1000);
        loop {
            let left = (until - crate::now_ms()) / 1000;
            if left <= 0 {
                break;
            }
            // A fresh SVID for every poll: a long wait may outlive one.
            let me = svid(&plain, socket.clone(), spiffe_id.clone()).await?;
            r = client_as(args, &me)?
                .get_json(&format!(
                    "/v1/grants/requests/{}?wait_s={}",
                    percent_encode(&id),
                    left.min(POLL_S)
                ))
                .await?;
            if r["state"] != "pending" {
                break;
            }
        }
        if !req.json {
            print_request_state(&r);
        }
    }
    if req.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(match r["state"].as_str() {
        Some("allowed" | "approved") => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// One line on where a grant request stands.
fn print_request_state(r: &Value) {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
    let what = format!(
        "{} on {} (task {})",
        s("permission"),
        s("resource"),
        s("task")
    );
    match r["state"].as_str().unwrap_or("-") {
        "allowed" => println!(
            "granted {what} by policy: request {}, decision {}",
            s("request_id"),
            s("decision_id")
        ),
        "approved" => println!(
            "granted {what}: request {} approved by {}{}",
            s("request_id"),
            s("decided_by"),
            reason_of(r)
        ),
        "pending" => println!(
            "waiting for an approver: request {} for {what}, decision {}, until {}",
            s("request_id"),
            s("decision_id"),
            crate::trust_cli::when(&r["expires_unix_ms"])
        ),
        "denied" => println!(
            "denied {what}: request {} denied by {}{}",
            s("request_id"),
            s("decided_by"),
            reason_of(r)
        ),
        "expired" => println!(
            "denied {what}: request {} expired with no approver's decision",
            s("request_id")
        ),
        other => println!("request {} is {other}", s("request_id")),
    }
}

fn reason_of(r: &Value) -> String {
    r["decision_reason"]
        .as_str()
        .map(|why| format!(": {why}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        client: ClientArgs,
    }

    /// The agent client keeps the server, token file and CA file, and only swaps the token.
    #[test]
    fn agent_client_replaces_only_the_token() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "warden",
            "--server",
            "https://warden.example:8443",
            "--token-file",
            "/nonexistent/admin.token",
            "--ca-file",
            "/etc/warden/ca.pem",
        ])
        .unwrap();
        let args = with_token(&cli.client, "eyJ.svid").unwrap();
        let shown = format!("{args:?}");
        for want in [
            "https://warden.example:8443",
            "Some(\"eyJ.svid\")",
            "/nonexistent/admin.token",
            "/etc/warden/ca.pem",
        ] {
            assert!(shown.contains(want), "{want} not in {shown}");
        }
    }
}
