//! The operator's task commands: `warden task …` (tasks, agents in roles, their grants, ending
//! them), `warden approvals …` (just-in-time grant requests waiting for a human) and
//! `warden risk …` (the operator-set risk scores policies see as `context.risk_score`).

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::{
    client::{Client, parse_duration, percent_encode},
    output::{self, Cell, Col, Out},
};

/// `warden task …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TaskCmd {
    /// Create a task (admin): what it is about, who owns it, until when
    Create {
        /// Its type, e.g. patch_bug (policies see it as context.task.type)
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// The accountable human
        #[arg(long)]
        owner: String,
        /// A resource it is about, type:id, e.g. repository:warden (repeatable)
        #[arg(long = "resource", required = true, value_name = "TYPE:ID")]
        resources: Vec<String>,
        /// How long it may run (90s, 10m, 8h, 2d or seconds); it ends by itself then
        #[arg(long, value_parser = parse_duration)]
        deadline: i64,
        /// Its id [default: a fresh task_…]
        #[arg(long)]
        id: Option<String>,
        /// KEY=VALUE for context.task.attributes (repeatable; integers and true/false stay
        /// typed)
        #[arg(long = "attribute", value_name = "KEY=VALUE")]
        attributes: Vec<String>,
    },
    /// Assign an agent to a task in a role, granting it permissions on the task's resources
    /// until the deadline (admin)
    Assign {
        /// The task id
        task: String,
        /// The agent's SPIFFE ID
        #[arg(long)]
        agent: String,
        /// Its role, e.g. coder
        #[arg(long)]
        role: String,
        /// A permission to grant: a relation of the resources' types in the default
        /// relationship model, e.g. writer (repeatable; none: on the task without grants)
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Grant on this one of the task's resources only (repeatable) [default: all]
        #[arg(long = "resource", value_name = "TYPE:ID")]
        resources: Vec<String>,
        /// End the grants sooner than the task (90s, 10m, 8h, 2d or seconds)
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
    },
    /// Show a task with its agents and grants (auditor)
    Show {
        /// The task id
        task: String,
    },
    /// List tasks, newest first (auditor)
    List {
        /// open, completed, failed, cancelled or expired
        #[arg(long)]
        state: Option<String>,
        /// With this agent (SPIFFE ID) assigned
        #[arg(long)]
        agent: Option<String>,
        /// At most this many (1-1000)
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// End a task as completed: its grants end, its leases and tokens are revoked (admin)
    Complete(EndArgs),
    /// End a task as failed (admin)
    Fail(EndArgs),
    /// End a task as cancelled (admin)
    Cancel(EndArgs),
}

/// How a task is ended.
#[derive(Debug, clap::Args)]
pub(crate) struct EndArgs {
    /// The task id
    task: String,
    /// Why, for the record
    #[arg(long)]
    reason: String,
}

/// `warden approvals …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ApprovalsCmd {
    /// List grant requests (approver or auditor); pending ones by default
    List {
        /// pending, allowed, approved, denied, expired or all
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// Approve a pending request: the agent is granted the permission (approver)
    Approve {
        /// The request id (req_…)
        id: String,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
    /// Deny a pending request (approver)
    Deny {
        /// The request id (req_…)
        id: String,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
}

/// `warden risk …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RiskCmd {
    /// Set an agent's risk score, 0.0-1.0; decisions see it as context.risk_score (admin)
    Set {
        /// The agent's SPIFFE ID
        agent: String,
        /// 0.0 (trusted) - 1.0
        score: f64,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
    /// List the risk scores set (auditor)
    List,
}

fn s(v: &Value) -> String {
    output::scalar(v)
}

/// `KEY=VALUE` attributes as a JSON object; integers and booleans keep their type.
fn attributes(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--attribute `{pair}` must be KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--attribute `{pair}` has no key");
        }
        let value = match v {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(v)),
        };
        if out.insert(k.to_owned(), value).is_some() {
            bail!("--attribute `{k}` is given twice");
        }
    }
    Ok(out)
}

fn task_path(id: &str) -> String {
    format!("/v1/tasks/{}", percent_encode(id))
}

/// The number of entries of a JSON array field.
fn count(v: &Value, key: &str) -> String {
    v[key].as_array().map_or(0, Vec::len).to_string()
}

/// The columns of `task list`.
const TASK_COLS: &[Col] = &[
    ("ID", Cell::Str("id")),
    ("STATE", Cell::Str("state")),
    ("TYPE", Cell::Str("type")),
    ("OWNER", Cell::Str("owner")),
    ("DEADLINE", Cell::Time("deadline_unix_ms")),
    ("AGENTS", Cell::With(|t| count(t, "agents"))),
    ("GRANTS", Cell::With(|t| count(t, "grants"))),
];

/// The fields of one task (`task show`), before its agents and grants.
const TASK_FIELDS: &[Col] = &[
    ("ID", Cell::Str("id")),
    ("TYPE", Cell::Str("type")),
    ("STATE", Cell::Str("state")),
    ("OWNER", Cell::Str("owner")),
    ("RESOURCES", Cell::List("resources")),
    ("ATTRIBUTES", Cell::Json("attributes")),
    ("DEADLINE", Cell::Time("deadline_unix_ms")),
    ("CREATED", Cell::Time("created_unix_ms")),
    ("CREATED_BY", Cell::Str("created_by")),
    ("ENDED", Cell::Time("ended_unix_ms")),
    ("END_REASON", Cell::Str("end_reason")),
];

/// The columns of a task's agents.
const AGENT_COLS: &[Col] = &[
    ("AGENT", Cell::Str("agent")),
    ("ROLE", Cell::Str("role")),
    ("ASSIGNED", Cell::Time("assigned_unix_ms")),
    ("ASSIGNED_BY", Cell::Str("assigned_by")),
];

/// The columns of grants.
const GRANT_COLS: &[Col] = &[
    ("GRANT_ID", Cell::Str("grant_id")),
    ("STATE", Cell::Str("state")),
    ("AGENT", Cell::Str("agent")),
    ("PERMISSION", Cell::Str("permission")),
    ("RESOURCE", Cell::Str("resource")),
    ("EXPIRES", Cell::Time("expires_unix_ms")),
    ("SOURCE", Cell::Str("source")),
];

pub(crate) async fn task(client: &Client, out: Out, cmd: TaskCmd) -> Result<()> {
    match cmd {
        TaskCmd::Create {
            kind,
            owner,
            resources,
            deadline,
            id,
            attributes: attrs,
        } => {
            let mut body = json!({
                "type": kind, "owner": owner, "resources": resources, "deadline_s": deadline,
                "attributes": attributes(&attrs)?,
            });
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            let t = client.post_json("/v1/tasks", &body).await?;
            out.done(
                &t,
                format!(
                    "created task {} ({}), open until {}",
                    s(&t["id"]),
                    s(&t["type"]),
                    output::time(&t["deadline_unix_ms"])
                ),
            )?;
        }
        TaskCmd::Assign {
            task,
            agent,
            role,
            permissions,
            resources,
            ttl,
        } => {
            let mut body = json!({"agent": agent, "role": role, "permissions": permissions});
            if !resources.is_empty() {
                body["resources"] = json!(resources);
            }
            if let Some(ttl) = ttl {
                body["ttl_s"] = json!(ttl);
            }
            let v = client
                .post_json(&format!("{}/agents", task_path(&task)), &body)
                .await?;
            out.done(
                &v,
                format!(
                    "{} {} to task {} as {}; {} grant(s)",
                    if v["new"] == true {
                        "assigned"
                    } else {
                        "re-assigned"
                    },
                    s(&v["agent"]),
                    s(&v["task"]),
                    s(&v["role"]),
                    count(&v, "grants")
                ),
            )?;
            if !out.is_json() {
                let grants: Vec<&Value> = v["grants"].as_array().into_iter().flatten().collect();
                if !grants.is_empty() {
                    output::table(GRANT_COLS, &grants)?;
                }
            }
        }
        TaskCmd::Show { task } => {
            let t = client.get_json(&task_path(&task)).await?;
            if out.is_json() {
                return output::json(&t);
            }
            out.object(&t, TASK_FIELDS)?;
            output::line("")?;
            out.list(&t, &t["agents"], "no agents assigned", AGENT_COLS)?;
            output::line("")?;
            out.list(&t, &t["grants"], "no grants", GRANT_COLS)?;
        }
        TaskCmd::List {
            state,
            agent,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (k, v) in [("state", state), ("agent", agent)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", percent_encode(&v)));
                }
            }
            let v = client
                .get_json(&format!("/v1/tasks?{}", query.join("&")))
                .await?;
            out.list(&v, &v, "no tasks", TASK_COLS)?;
        }
        TaskCmd::Complete(args) => end(client, out, "completed", args).await?,
        TaskCmd::Fail(args) => end(client, out, "failed", args).await?,
        TaskCmd::Cancel(args) => end(client, out, "cancelled", args).await?,
    }
    Ok(())
}

async fn end(client: &Client, out: Out, outcome: &str, args: EndArgs) -> Result<()> {
    let t = client
        .post_json(
            &format!("{}/end", task_path(&args.task)),
            &json!({"outcome": outcome, "reason": args.reason}),
        )
        .await?;
    let ended = t["grants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["state"] != "active")
        .count();
    out.done(
        &t,
        format!(
            "task {} {}: {ended} grant(s) ended, its leases and tokens revoked",
            s(&t["id"]),
            s(&t["state"])
        ),
    )
}

/// How a grant request was decided: by whom, when, and why; `-` while it is pending.
fn decided(r: &Value) -> String {
    if r["decided_by"].is_null() {
        return "-".into();
    }
    let why = r["decision_reason"]
        .as_str()
        .map(|why| format!(": {why}"))
        .unwrap_or_default();
    format!(
        "by {} at {}{why}",
        s(&r["decided_by"]),
        output::time(&r["decided_unix_ms"])
    )
}

/// The columns of `approvals list`.
const REQUEST_COLS: &[Col] = &[
    ("REQUEST_ID", Cell::Str("request_id")),
    ("STATE", Cell::Str("state")),
    ("AGENT", Cell::Str("agent")),
    ("PERMISSION", Cell::Str("permission")),
    ("RESOURCE", Cell::Str("resource")),
    ("TASK", Cell::Str("task")),
    ("DECIDE_BY", Cell::Time("expires_unix_ms")),
    ("REASON", Cell::Str("reason")),
    ("DECIDED", Cell::With(decided)),
];

pub(crate) async fn approvals(client: &Client, out: Out, cmd: ApprovalsCmd) -> Result<()> {
    let (id, decision, reason) = match cmd {
        ApprovalsCmd::List { state } => {
            let v = client
                .get_json(&format!("/v1/approvals?state={}", percent_encode(&state)))
                .await?;
            let empty = match state.as_str() {
                "pending" => "no pending approvals".to_owned(),
                "all" => "no grant requests".to_owned(),
                other => format!("no {other} grant requests"),
            };
            return out.list(&v, &v, &empty, REQUEST_COLS);
        }
        ApprovalsCmd::Approve { id, reason } => (id, "approve", reason),
        ApprovalsCmd::Deny { id, reason } => (id, "deny", reason),
    };
    let r = client
        .post_json(
            &format!("/v1/approvals/{}", percent_encode(&id)),
            &json!({"decision": decision, "reason": reason}),
        )
        .await?;
    out.done(
        &r,
        format!(
            "{} {}: {} {} on {} (task {})",
            s(&r["state"]),
            s(&r["request_id"]),
            s(&r["agent"]),
            s(&r["permission"]),
            s(&r["resource"]),
            s(&r["task"]),
        ),
    )
}

/// The columns of `risk list`.
const RISK_COLS: &[Col] = &[
    ("AGENT", Cell::Str("agent")),
    (
        "SCORE",
        Cell::With(|r| match r["score"].as_f64() {
            Some(score) => format!("{score:.3}"),
            None => "-".into(),
        }),
    ),
    ("SET", Cell::Time("set_unix_ms")),
    ("SET_BY", Cell::Str("set_by")),
    ("REASON", Cell::Str("reason")),
];

pub(crate) async fn risk(client: &Client, out: Out, cmd: RiskCmd) -> Result<()> {
    match cmd {
        RiskCmd::Set {
            agent,
            score,
            reason,
        } => {
            if !(0.0..=1.0).contains(&score) {
                bail!("SCORE must be between 0.0 and 1.0, not {score}");
            }
            let body = json!({"agent": agent, "score": score, "reason": reason});
            let sent = client.post_json("/v1/risk", &body).await;
            // The server answers 204 No Content: a body that does not decode after a success
            // status is that empty body (errors are reported before any decoding).
            if let Err(e) = sent {
                if !e
                    .downcast_ref::<reqwest::Error>()
                    .is_some_and(reqwest::Error::is_decode)
                {
                    return Err(e);
                }
            }
            out.done(&body, format!("risk score of {agent} is now {score:.3}"))?;
        }
        RiskCmd::List => {
            let v = client.get_json("/v1/risk").await?;
            out.list(
                &v,
                &v,
                "no risk scores set (every agent is at 0.0)",
                RISK_COLS,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_keep_simple_types() {
        let got = attributes(&[
            "ticket=BUG-1".into(),
            "severity=3".into(),
            "urgent=true".into(),
            "note=a=b".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"ticket": "BUG-1", "severity": 3, "urgent": true, "note": "a=b"})
        );
        assert!(attributes(&["novalue".into()]).is_err());
        assert!(attributes(&["=x".into()]).is_err());
        assert!(attributes(&["a=1".into(), "a=2".into()]).is_err());
    }
}
