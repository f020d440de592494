//! `warden rebac …`: relationship models and tuples, and the questions asked of them, over
//! the API (`/v1/rebac/…`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::client::{Client, parse_duration, percent_encode};

/// Options every `warden rebac` command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct RebacArgs {
    /// The relationship store (tenant) [default: the default store]
    #[arg(long, global = true)]
    store: Option<String>,
    /// Answer at least as fresh as this revision (what a write printed)
    #[arg(long, global = true)]
    at_least_revision: Option<u64>,
    #[command(subcommand)]
    cmd: RebacCmd,
}

/// `warden rebac …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RebacCmd {
    /// The authorization model (OpenFGA modeling language, schema 1.1)
    #[command(subcommand)]
    Model(ModelCmd),
    /// Write tuples, `OBJECT#RELATION@USER`, all or none (admin)
    Write {
        /// e.g. `repository:warden#writer@agent:example.org/agent/coder`
        #[arg(required = true)]
        tuples: Vec<String>,
        /// The tuples stop counting after this long, e.g. 30m, 8h
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// The tuples stop counting at this time (RFC 3339)
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Delete tuples, `OBJECT#RELATION@USER`, all or none (admin)
    Delete {
        /// The tuples
        #[arg(required = true)]
        tuples: Vec<String>,
    },
    /// List live tuples, optionally filtered
    Read {
        /// `type:id`, or `type:` for every object of a type
        #[arg(long)]
        object: Option<String>,
        /// The relation
        #[arg(long)]
        relation: Option<String>,
        /// The user
        #[arg(long)]
        user: Option<String>,
    },
    /// Does USER have RELATION on OBJECT? Exit 0: yes, 1: no (recorded as a decision)
    Check {
        /// e.g. `agent:example.org/agent/coder`
        user: String,
        /// e.g. `writer`
        relation: String,
        /// e.g. `repository:warden`
        object: String,
        /// A tuple that counts for this check only (repeatable)
        #[arg(long = "context")]
        contextual: Vec<String>,
    },
    /// Every object of TYPE on which USER has RELATION
    ListObjects {
        /// The user
        user: String,
        /// The relation
        relation: String,
        /// The object type
        #[arg(value_name = "TYPE")]
        object_type: String,
        /// A tuple that counts for this request only (repeatable)
        #[arg(long = "context")]
        contextual: Vec<String>,
    },
    /// Every user of a type (or userset `TYPE#RELATION`) with RELATION on OBJECT
    ListUsers {
        /// The object, `type:id`
        object: String,
        /// The relation
        relation: String,
        /// Users of this type, or usersets `type#relation`
        #[arg(long = "type", value_name = "TYPE")]
        user_type: String,
        /// A tuple that counts for this request only (repeatable)
        #[arg(long = "context")]
        contextual: Vec<String>,
    },
    /// The change feed (writes and deletes, in order)
    Changes {
        /// Only changes to objects of this type
        #[arg(long = "type", value_name = "TYPE")]
        object_type: Option<String>,
        /// Changes after this revision
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

/// `warden rebac model …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModelCmd {
    /// Upload a model (`.fga` DSL, or OpenFGA's JSON with a `.json` name); in force at once
    /// (admin)
    Push {
        /// The model file
        file: PathBuf,
    },
    /// Print the model in force (or an earlier version)
    Show {
        /// A version number [default: the latest]
        #[arg(value_name = "VERSION")]
        number: Option<i64>,
        /// Print OpenFGA's JSON form instead of the DSL
        #[arg(long)]
        json: bool,
    },
}

/// A tuple written as `OBJECT#RELATION@USER`, in OpenFGA's JSON form.
fn tuple_json(text: &str) -> Result<Value> {
    let key = rebac::TupleKey::parse(text)
        .with_context(|| format!("`{text}` is not a tuple `OBJECT#RELATION@USER`"))?;
    Ok(json!({
        "object": key.object().to_string(),
        "relation": key.relation(),
        "user": key.user().to_string(),
    }))
}

fn tuples_json(texts: &[String]) -> Result<Vec<Value>> {
    texts.iter().map(|t| tuple_json(t)).collect()
}

pub(crate) async fn rebac(client: &Client, args: RebacArgs) -> Result<()> {
    let base = match &args.store {
        Some(s) => format!("/v1/rebac/stores/{}", percent_encode(s)),
        None => "/v1/rebac".to_owned(),
    };
    let fresh = args.at_least_revision;
    match args.cmd {
        RebacCmd::Model(ModelCmd::Push { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let out = if file.extension().is_some_and(|e| e == "json") {
                let value: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", file.display()))?;
                client.put_json(&format!("{base}/model"), &value).await?
            } else {
                client.put_text(&format!("{base}/model"), text).await?
            };
            println!(
                "store {} model version {} ({}) in force",
                out["store"].as_str().unwrap_or("?"),
                out["version"],
                out["authorization_model_id"].as_str().unwrap_or("?")
            );
        }
        RebacCmd::Model(ModelCmd::Show { number, json }) => {
            let path = match number {
                Some(v) => format!("{base}/model?version={v}"),
                None => format!("{base}/model"),
            };
            let out = client.get_json(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out["model"])?);
            } else {
                println!(
                    "# store {} version {} ({}), by {} at {}",
                    out["store"].as_str().unwrap_or("?"),
                    out["version"],
                    out["authorization_model_id"].as_str().unwrap_or("?"),
                    out["created_by"].as_str().unwrap_or("?"),
                    out["created_at"].as_str().unwrap_or("?"),
                );
                print!("{}", out["dsl"].as_str().unwrap_or(""));
            }
        }
        RebacCmd::Write {
            tuples,
            expires_in,
            expires_at,
        } => {
            let expires_at = match (expires_in, expires_at) {
                (Some(d), _) => {
                    let secs = parse_duration(&d).map_err(anyhow::Error::msg)?;
                    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
                    Some(at.format(&time::format_description::well_known::Rfc3339)?)
                }
                (None, at) => at,
            };
            let mut keys = tuples_json(&tuples)?;
            if let Some(at) = &expires_at {
                for k in &mut keys {
                    k["expires_at"] = json!(at);
                }
            }
            let out = client
                .post_json(
                    &format!("{base}/tuples"),
                    &json!({ "writes": { "tuple_keys": keys } }),
                )
                .await?;
            println!("written; revision {}", out["revision"]);
        }
        RebacCmd::Delete { tuples } => {
            let keys = tuples_json(&tuples)?;
            let out = client
                .post_json(
                    &format!("{base}/tuples"),
                    &json!({ "deletes": { "tuple_keys": keys } }),
                )
                .await?;
            println!("deleted; revision {}", out["revision"]);
        }
        RebacCmd::Read {
            object,
            relation,
            user,
        } => {
            let mut token = String::new();
            loop {
                let mut query = vec![format!("continuation_token={}", percent_encode(&token))];
                for (name, value) in [
                    ("object", &object),
                    ("relation", &relation),
                    ("user", &user),
                ] {
                    if let Some(v) = value {
                        query.push(format!("{name}={}", percent_encode(v)));
                    }
                }
                if let Some(r) = fresh {
                    query.push(format!("at_least_revision={r}"));
                }
                let out = client
                    .get_json(&format!("{base}/tuples?{}", query.join("&")))
                    .await?;
                for t in out["tuples"].as_array().into_iter().flatten() {
                    let expiry = t["expires_at"]
                        .as_str()
                        .map(|at| format!("  (expires {at})"))
                        .unwrap_or_default();
                    println!(
                        "{}#{}@{}{expiry}",
                        t["object"].as_str().unwrap_or("?"),
                        t["relation"].as_str().unwrap_or("?"),
                        t["user"].as_str().unwrap_or("?")
                    );
                }
                token = out["continuation_token"].as_str().unwrap_or("").to_owned();
                if token.is_empty() {
                    break;
                }
            }
        }
        RebacCmd::Check {
            user,
            relation,
            object,
            contextual,
        } => {
            let body = json!({
                "tuple_key": { "user": user, "relation": relation, "object": object },
                "contextual_tuples": { "tuple_keys": tuples_json(&contextual)? },
                "at_least_revision": fresh,
            });
            let out = client.post_json(&format!("{base}/check"), &body).await?;
            let allowed = out["allowed"].as_bool().unwrap_or(false);
            println!(
                "{}  ({user} {relation} {object}; revision {}, decision {})",
                if allowed { "allowed" } else { "denied" },
                out["revision"],
                out["decision_id"].as_str().unwrap_or("?")
            );
            if !allowed {
                std::process::exit(1);
            }
        }
        RebacCmd::ListObjects {
            user,
            relation,
            object_type,
            contextual,
        } => {
            let body = json!({
                "type": object_type, "relation": relation, "user": user,
                "contextual_tuples": { "tuple_keys": tuples_json(&contextual)? },
                "at_least_revision": fresh,
            });
            let out = client
                .post_json(&format!("{base}/list-objects"), &body)
                .await?;
            for o in out["objects"].as_array().into_iter().flatten() {
                println!("{}", o.as_str().unwrap_or("?"));
            }
        }
        RebacCmd::ListUsers {
            object,
            relation,
            user_type,
            contextual,
        } => {
            let key = rebac::ObjectRef::parse(&object)
                .with_context(|| format!("`{object}` is not an object `type:id`"))?;
            let filter = match user_type.split_once('#') {
                Some((t, r)) => json!({ "type": t, "relation": r }),
                None => json!({ "type": user_type }),
            };
            let body = json!({
                "object": { "type": key.object_type(), "id": key.id() },
                "relation": relation,
                "user_filters": [filter],
                "contextual_tuples": tuples_json(&contextual)?,
                "at_least_revision": fresh,
            });
            let out = client
                .post_json(&format!("{base}/list-users"), &body)
                .await?;
            for u in out["users"].as_array().into_iter().flatten() {
                let line = if let Some(o) = u.get("object") {
                    format!(
                        "{}:{}",
                        o["type"].as_str().unwrap_or("?"),
                        o["id"].as_str().unwrap_or("?")
                    )
                } else if let Some(w) = u.get("wildcard") {
                    format!("{}:*", w["type"].as_str().unwrap_or("?"))
                } else if let Some(s) = u.get("userset") {
                    format!(
                        "{}:{}#{}",
                        s["type"].as_str().unwrap_or("?"),
                        s["id"].as_str().unwrap_or("?"),
                        s["relation"].as_str().unwrap_or("?")
                    )
                } else {
                    bail!("unexpected user in the answer: {u}");
                };
                println!("{line}");
            }
        }
        RebacCmd::Changes { object_type, after } => {
            let mut token = after.to_string();
            loop {
                let mut path = format!("{base}/changes?continuation_token={token}");
                if let Some(t) = &object_type {
                    path.push_str(&format!("&type={}", percent_encode(t)));
                }
                let out = client.get_json(&path).await?;
                let changes = out["changes"].as_array().cloned().unwrap_or_default();
                for c in &changes {
                    let k = &c["tuple_key"];
                    println!(
                        "{} r{} {} {}#{}@{} by {}",
                        c["timestamp"].as_str().unwrap_or("?"),
                        c["revision"],
                        if c["operation"] == "TUPLE_OPERATION_DELETE" {
                            "delete"
                        } else {
                            "write "
                        },
                        k["object"].as_str().unwrap_or("?"),
                        k["relation"].as_str().unwrap_or("?"),
                        k["user"].as_str().unwrap_or("?"),
                        c["actor"].as_str().unwrap_or("?"),
                    );
                }
                let next = out["continuation_token"].as_str().unwrap_or("").to_owned();
                if changes.is_empty() || next == token {
                    break;
                }
                token = next;
            }
        }
    }
    Ok(())
}
