//! `warden agent …`: the broker from an agent's side, for agents written as shell scripts.
//! Each command fetches the caller's JWT-SVID from the local Workload API (attested from the
//! kernel, for this server's issuer URL) and presents it — no API token, no stored secret.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    client::{Client, percent_encode},
    output::{self, Cell, Negative, Out, Refused},
};

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
        /// Lifetime (90s, 10m, 8h, 2d or seconds) [default: the role template's]
        #[arg(long, value_parser = crate::client::parse_duration)]
        ttl: Option<i64>,
    },
    /// Renew one of this agent's leases
    Renew {
        /// The lease id
        lease_id: String,
        /// New lifetime from now (90s, 10m, 8h, 2d or seconds)
        #[arg(long, value_parser = crate::client::parse_duration)]
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
    /// once it is granted (by policy, or by an approver within --wait), 1 when it is denied
    /// or expires, 3 while it still waits for an approver
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
    /// How long the grant lasts (90s, 10m, 8h, 2d or seconds) [default and at most: the
    /// task's deadline]
    #[arg(long, value_parser = crate::client::parse_duration)]
    ttl: Option<i64>,
    /// How long an approver has before the request is denied (90s, 10m, 8h, 2d or seconds)
    /// [default: 5m]
    #[arg(long, value_parser = crate::client::parse_duration)]
    approval_timeout: Option<i64>,
    /// Wait this long for an approver's decision (90s, 10m, 8h, 2d or seconds) when approval
    /// is needed
    #[arg(long, value_parser = crate::client::parse_duration)]
    wait: Option<i64>,
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
        .map_err(|s| crate::client::workload_error(&s))?;
    Ok(token)
}

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

pub(crate) async fn agent(
    client: &Client,
    out: Out,
    socket: PathBuf,
    spiffe_id: Option<String>,
    cmd: AgentCmd,
) -> Result<()> {
    let spiffe_id = spiffe_id.unwrap_or_default();
    let me = svid(client, socket.clone(), spiffe_id.clone()).await?;
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
                let why = format!(
                    "{} ({status}): {}",
                    body["error"].as_str().unwrap_or("error"),
                    body["error_description"].as_str().unwrap_or_default()
                );
                if status == 403 {
                    return Err(Refused(why).into());
                }
                bail!(why);
            }
            out.object(
                &body,
                &[
                    ("ACCESS_TOKEN", Cell::Str("access_token")),
                    ("TOKEN_TYPE", Cell::Str("token_type")),
                    ("ISSUED_TOKEN_TYPE", Cell::Str("issued_token_type")),
                    ("EXPIRES_IN", Cell::Str("expires_in")),
                    ("SCOPE", Cell::Str("scope")),
                ],
            )?;
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
            out.object(
                &v,
                &[
                    ("LEASE_ID", Cell::Str("lease_id")),
                    ("USERNAME", Cell::Str("username")),
                    ("PASSWORD", Cell::Str("password")),
                    ("HOST", Cell::Str("host")),
                    ("PORT", Cell::Str("port")),
                    ("DATABASE", Cell::Str("database")),
                    ("SSLMODE", Cell::Str("sslmode")),
                    ("DSN", Cell::Str("dsn")),
                    ("EXPIRES", Cell::Time("expires_unix_ms")),
                    ("MAX_EXPIRES", Cell::Time("max_expires_unix_ms")),
                ],
            )?;
        }
        AgentCmd::Renew { lease_id, ttl } => {
            let v = client
                .post_as_agent(
                    "/v1/agent/leases/renew",
                    &me,
                    &json!({"lease_id": lease_id, "ttl_s": ttl}),
                )
                .await?;
            out.object(&v, crate::broker_cli::LEASE_FIELDS)?;
        }
        AgentCmd::Revoke { lease_id } => {
            // The API answers 204: JSON output names what was done.
            client
                .post_as_agent(
                    "/v1/agent/leases/revoke",
                    &me,
                    &json!({"lease_id": lease_id}),
                )
                .await?;
            out.done(
                &json!({"lease_id": lease_id, "revoked": true}),
                format!("revoked {lease_id}"),
            )?;
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
                    bail!("--detail `{d}` must be KEY=VALUE");
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
            out.done(&v, format!("recorded as ledger entry {}", v["seq"]))?;
        }
        AgentCmd::RequestGrant(req) => {
            request_grant(client, out, socket, spiffe_id, me, req).await?;
        }
    }
    Ok(())
}

/// Longest single long poll, seconds: below the client's 60 s request timeout.
const POLL_S: i64 = 50;

/// `warden agent request-grant …`: asks, prints the request, and with `--wait` long-polls
/// until it is decided or the wait is over. Exit 0 when the permission is granted (`allowed`
/// by policy or `approved`), 1 when it is denied or expired, 3 while it is still pending.
async fn request_grant(
    client: &Client,
    out: Out,
    socket: PathBuf,
    spiffe_id: String,
    me: String,
    req: RequestGrantArgs,
) -> Result<()> {
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
    let mut r = client
        .as_bearer(&me)
        .post_json("/v1/grants/requests", &body)
        .await?;
    if !out.is_json() {
        print_request_state(&r)?;
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
            let me = svid(client, socket.clone(), spiffe_id.clone()).await?;
            r = client
                .as_bearer(&me)
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
        if !out.is_json() {
            print_request_state(&r)?;
        }
    }
    if out.is_json() {
        output::json(&r)?;
    }
    match r["state"].as_str() {
        Some("allowed" | "approved") => Ok(()),
        Some("pending") => Err(output::Pending.into()),
        _ => Err(Negative.into()),
    }
}

/// One line on where a grant request stands.
fn print_request_state(r: &Value) -> Result<()> {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
    let what = format!(
        "{} on {} (task {})",
        s("permission"),
        s("resource"),
        s("task")
    );
    output::line(&match r["state"].as_str().unwrap_or("-") {
        "allowed" => format!(
            "granted {what} by policy: request {}, decision {}",
            s("request_id"),
            s("decision_id")
        ),
        "approved" => format!(
            "granted {what}: request {} approved by {}{}",
            s("request_id"),
            s("decided_by"),
            reason_of(r)
        ),
        "pending" => format!(
            "waiting for an approver: request {} for {what}, decision {}, until {}",
            s("request_id"),
            s("decision_id"),
            output::time(&r["expires_unix_ms"])
        ),
        "denied" => format!(
            "denied {what}: request {} denied by {}{}",
            s("request_id"),
            s("decided_by"),
            reason_of(r)
        ),
        "expired" => format!(
            "denied {what}: request {} expired with no approver's decision",
            s("request_id")
        ),
        other => format!("request {} is {other}", s("request_id")),
    })
}

fn reason_of(r: &Value) -> String {
    r["decision_reason"]
        .as_str()
        .map(|why| format!(": {why}"))
        .unwrap_or_default()
}
