//! The operator's task commands: `warden task …` (tasks, agents in roles, their grants, ending
//! them), `warden approvals …` (just-in-time grant requests waiting for a human) and
//! `warden risk …` (the operator-set risk scores policies see as `context.risk_score`).

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::{
    client::{Client, parse_duration, percent_encode},
    trust_cli::when,
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
        /// How long it may run (30s, 10m, 2h, 1d); it ends by itself then
        #[arg(long, value_parser = parse_duration)]
        deadline: i64,
        /// Its id [default: a fresh task_…]
        #[arg(long)]
        id: Option<String>,
        /// KEY=VALUE for context.task.attributes (repeatable; integers and true/false stay
        /// typed)
        #[arg(long = "attribute", value_name = "KEY=VALUE")]
        attributes: Vec<String>,
        /// Print the task as JSON
        #[arg(long)]
        json: bool,
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
        /// End the grants sooner than the task (30s, 10m, 2h, 1d)
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
        /// Print the answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show a task with its agents and grants (auditor)
    Show {
        /// The task id
        task: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
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
        /// Print JSON
        #[arg(long)]
        json: bool,
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
        /// Print JSON
        #[arg(long)]
        json: bool,
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
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// `KEY=VALUE` attributes as a JSON object; integers and booleans keep their type.
fn attributes(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("attribute `{pair}` must be KEY=VALUE");
        };
        if k.is_empty() {
            bail!("attribute `{pair}` has no key");
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
            bail!("attribute `{k}` is given twice");
        }
    }
    Ok(out)
}

fn task_path(id: &str) -> String {
    format!("/v1/tasks/{}", percent_encode(id))
}

/// One line per grant: id, state, agent, permission on resource, until, source.
fn print_grant(g: &Value) {
    println!(
        "    {}  {:<7} {} {} on {} until {} ({})",
        s(&g["grant_id"]),
        s(&g["state"]),
        s(&g["agent"]),
        s(&g["permission"]),
        s(&g["resource"]),
        when(&g["expires_unix_ms"]),
        s(&g["source"]),
    );
}

fn print_task(t: &Value) {
    println!(
        "task {} ({}): {}",
        s(&t["id"]),
        s(&t["type"]),
        s(&t["state"])
    );
    println!("  owner      {}", s(&t["owner"]));
    let resources: Vec<&str> = t["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    println!("  resources  {}", resources.join(", "));
    if t["attributes"].as_object().is_some_and(|a| !a.is_empty()) {
        println!("  attributes {}", t["attributes"]);
    }
    println!("  deadline   {}", when(&t["deadline_unix_ms"]));
    println!(
        "  created    {} by {}",
        when(&t["created_unix_ms"]),
        s(&t["created_by"])
    );
    if !t["ended_unix_ms"].is_null() {
        println!(
            "  ended      {}: {}",
            when(&t["ended_unix_ms"]),
            s(&t["end_reason"])
        );
    }
    let agents = t["agents"].as_array().map_or(&[][..], Vec::as_slice);
    println!("  agents     {}", agents.len());
    for a in agents {
        println!(
            "    {} as {} (assigned {} by {})",
            s(&a["agent"]),
            s(&a["role"]),
            when(&a["assigned_unix_ms"]),
            s(&a["assigned_by"])
        );
    }
    let grants = t["grants"].as_array().map_or(&[][..], Vec::as_slice);
    println!("  grants     {}", grants.len());
    for g in grants {
        print_grant(g);
    }
}

pub(crate) async fn task(client: &Client, cmd: TaskCmd) -> Result<()> {
    match cmd {
        TaskCmd::Create {
            kind,
            owner,
            resources,
            deadline,
            id,
            attributes: attrs,
            json,
        } => {
            let mut body = json!({
                "type": kind, "owner": owner, "resources": resources, "deadline_s": deadline,
                "attributes": attributes(&attrs)?,
            });
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            let t = client.post_json("/v1/tasks", &body).await?;
            if json {
                return print_json(&t);
            }
            println!(
                "created task {} ({}), open until {}",
                s(&t["id"]),
                s(&t["type"]),
                when(&t["deadline_unix_ms"])
            );
        }
        TaskCmd::Assign {
            task,
            agent,
            role,
            permissions,
            resources,
            ttl,
            json,
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
            if json {
                return print_json(&v);
            }
            let grants = v["grants"].as_array().map_or(&[][..], Vec::as_slice);
            println!(
                "{} {} to task {} as {}; {} grant(s)",
                if v["new"] == true {
                    "assigned"
                } else {
                    "re-assigned"
                },
                s(&v["agent"]),
                s(&v["task"]),
                s(&v["role"]),
                grants.len()
            );
            for g in grants {
                print_grant(g);
            }
        }
        TaskCmd::Show { task, json } => {
            let t = client.get_json(&task_path(&task)).await?;
            if json {
                return print_json(&t);
            }
            print_task(&t);
        }
        TaskCmd::List {
            state,
            agent,
            limit,
            json,
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
            if json {
                return print_json(&v);
            }
            let tasks = v.as_array().map_or(&[][..], Vec::as_slice);
            if tasks.is_empty() {
                println!("no tasks");
                return Ok(());
            }
            println!(
                "{:<24} {:<9} {:<16} {:<24} {:<20} {:>6} {:>6}",
                "ID", "STATE", "TYPE", "OWNER", "DEADLINE", "AGENTS", "GRANTS"
            );
            for t in tasks {
                let count = |k: &str| t[k].as_array().map_or(0, Vec::len);
                println!(
                    "{:<24} {:<9} {:<16} {:<24} {:<20} {:>6} {:>6}",
                    s(&t["id"]),
                    s(&t["state"]),
                    s(&t["type"]),
                    s(&t["owner"]),
                    when(&t["deadline_unix_ms"]),
                    count("agents"),
                    count("grants"),
                );
            }
        }
        TaskCmd::Complete(args) => end(client, "completed", args).await?,
        TaskCmd::Fail(args) => end(client, "failed", args).await?,
        TaskCmd::Cancel(args) => end(client, "cancelled", args).await?,
    }
    Ok(())
}

async fn end(client: &Client, outcome: &str, args: EndArgs) -> Result<()> {
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
    println!(
        "task {} {}: {ended} grant(s) ended, its leases and tokens revoked",
        s(&t["id"]),
        s(&t["state"])
    );
    Ok(())
}

/// One line per grant request, for approvers.
pub(crate) fn print_request(r: &Value) {
    println!(
        "{}  {:<8} {} asks {} on {} (task {}): {}",
        s(&r["request_id"]),
        s(&r["state"]),
        s(&r["agent"]),
        s(&r["permission"]),
        s(&r["resource"]),
        s(&r["task"]),
        s(&r["reason"]),
    );
    match r["state"].as_str() {
        Some("pending") => println!("    decide by {}", when(&r["expires_unix_ms"])),
        Some(_) if !r["decided_by"].is_null() => println!(
            "    decided by {} at {}{}",
            s(&r["decided_by"]),
            when(&r["decided_unix_ms"]),
            r["decision_reason"]
                .as_str()
                .map(|why| format!(": {why}"))
                .unwrap_or_default()
        ),
        _ => {}
    }
}

pub(crate) async fn approvals(client: &Client, cmd: ApprovalsCmd) -> Result<()> {
    let (id, decision, reason) = match cmd {
        ApprovalsCmd::List { state, json } => {
            let v = client
                .get_json(&format!("/v1/approvals?state={}", percent_encode(&state)))
                .await?;
            if json {
                return print_json(&v);
            }
            let requests = v.as_array().map_or(&[][..], Vec::as_slice);
            if requests.is_empty() {
                println!("no {state} grant requests");
            }
            for r in requests {
                print_request(r);
            }
            return Ok(());
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
    println!(
        "{} {}: {} {} on {} (task {})",
        s(&r["state"]),
        s(&r["request_id"]),
        s(&r["agent"]),
        s(&r["permission"]),
        s(&r["resource"]),
        s(&r["task"]),
    );
    Ok(())
}

pub(crate) async fn risk(client: &Client, cmd: RiskCmd) -> Result<()> {
    match cmd {
        RiskCmd::Set {
            agent,
            score,
            reason,
        } => {
            if !(0.0..=1.0).contains(&score) {
                bail!("a risk score is between 0.0 and 1.0, not {score}");
            }
            let sent = client
                .post_json(
                    "/v1/risk",
                    &json!({"agent": agent, "score": score, "reason": reason}),
                )
                .await;
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
            println!("risk score of {agent} is now {score:.3}");
        }
        RiskCmd::List { json } => {
            let v = client.get_json("/v1/risk").await?;
            if json {
                return print_json(&v);
            }
            let rows = v.as_array().map_or(&[][..], Vec::as_slice);
            if rows.is_empty() {
                println!("no risk scores set (every agent is at 0.0)");
            }
            for r in rows {
                println!(
                    "{:<48} {:.3}  set {} by {}: {}",
                    s(&r["agent"]),
                    r["score"].as_f64().unwrap_or(f64::NAN),
                    when(&r["set_unix_ms"]),
                    s(&r["set_by"]),
                    s(&r["reason"]),
                );
            }
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
