//! `warden rebac …`: relationship models and tuples, and the questions asked of them, over
//! the API (`/v1/rebac/…`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::{
    client::{Client, parse_duration, percent_encode},
    output::{self, Cell, Col, Negative, Out},
};

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
        /// The tuples stop counting after this long (90s, 10m, 8h, 2d or seconds)
        #[arg(long, conflicts_with = "expires_at", value_parser = parse_duration)]
        expires_in: Option<i64>,
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
    /// Does USER have RELATION on OBJECT? Exit 0: allowed, 1: not allowed (recorded as a
    /// decision)
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
    /// Print the model in force (or an earlier version) in the modeling language; with
    /// `--output json`, the API's answer, OpenFGA's JSON form in its `model` field
    Show {
        /// A version number [default: the latest]
        #[arg(value_name = "VERSION")]
        number: Option<i64>,
    },
}

/// A tuple written as `OBJECT#RELATION@USER`, in OpenFGA's JSON form; `arg` names where it
/// came from, for the error.
fn tuple_json(text: &str, arg: &str) -> Result<Value> {
    let key = rebac::TupleKey::parse(text)
        .with_context(|| format!("{arg} `{text}` is not a tuple `OBJECT#RELATION@USER`"))?;
    Ok(json!({
        "object": key.object().to_string(),
        "relation": key.relation(),
        "user": key.user().to_string(),
    }))
}

fn tuples_json(texts: &[String], arg: &str) -> Result<Vec<Value>> {
    texts.iter().map(|t| tuple_json(t, arg)).collect()
}

/// A tuple key as `OBJECT#RELATION@USER`, the form `rebac write` takes.
fn tuple_text(k: &Value) -> String {
    format!(
        "{}#{}@{}",
        output::scalar(&k["object"]),
        output::scalar(&k["relation"]),
        output::scalar(&k["user"])
    )
}

/// The columns of `rebac read`.
const TUPLE_COLS: &[Col] = &[
    ("TUPLE", Cell::With(tuple_text)),
    ("EXPIRES", Cell::Time("expires_at")),
];

/// The columns of `rebac changes`.
const CHANGE_COLS: &[Col] = &[
    ("TIME", Cell::Time("timestamp")),
    ("REVISION", Cell::Str("revision")),
    (
        "OPERATION",
        Cell::With(|c| {
            if c["operation"] == "TUPLE_OPERATION_DELETE" {
                "delete".into()
            } else {
                "write".into()
            }
        }),
    ),
    ("TUPLE", Cell::With(|c| tuple_text(&c["tuple_key"]))),
    (
        "EXPIRES",
        Cell::With(|c| output::time(&c["tuple_key"]["expires_at"])),
    ),
    ("ACTOR", Cell::Str("actor")),
];

/// A user of `list-users` as OpenFGA's string form: `type:id`, `type:*` or
/// `type:id#relation`.
fn user_text(u: &Value) -> String {
    if let Some(o) = u.get("object") {
        format!(
            "{}:{}",
            output::scalar(&o["type"]),
            output::scalar(&o["id"])
        )
    } else if let Some(w) = u.get("wildcard") {
        format!("{}:*", output::scalar(&w["type"]))
    } else if let Some(s) = u.get("userset") {
        format!(
            "{}:{}#{}",
            output::scalar(&s["type"]),
            output::scalar(&s["id"]),
            output::scalar(&s["relation"])
        )
    } else {
        u.to_string()
    }
}

/// A note on stderr when a list stopped at the server's limits.
fn note_truncated(answer: &Value) {
    if answer["truncated"] == true {
        eprintln!("(the list is truncated at the server's limits: not every result is shown)");
    }
}

pub(crate) async fn rebac(client: &Client, out: Out, args: RebacArgs) -> Result<()> {
    let base = match &args.store {
        Some(s) => format!("/v1/rebac/stores/{}", percent_encode(s)),
        None => "/v1/rebac".to_owned(),
    };
    let fresh = args.at_least_revision;
    match args.cmd {
        RebacCmd::Model(ModelCmd::Push { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading the model file {} (FILE)", file.display()))?;
            let v = if file.extension().is_some_and(|e| e == "json") {
                let value: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} (FILE) is not JSON", file.display()))?;
                client.put_json(&format!("{base}/model"), &value).await?
            } else {
                client.put_text(&format!("{base}/model"), text).await?
            };
            out.done(
                &v,
                format!(
                    "store {} model version {} ({}) in force",
                    output::scalar(&v["store"]),
                    v["version"],
                    output::scalar(&v["authorization_model_id"])
                ),
            )?;
        }
        RebacCmd::Model(ModelCmd::Show { number }) => {
            let path = match number {
                Some(v) => format!("{base}/model?version={v}"),
                None => format!("{base}/model"),
            };
            let v = client.get_json(&path).await?;
            if out.is_json() {
                output::json(&v)?;
            } else {
                // A comment line, then the model as uploaded: the output is a model file.
                output::line(&format!(
                    "# store {} version {} ({}), by {} at {}",
                    output::scalar(&v["store"]),
                    v["version"],
                    output::scalar(&v["authorization_model_id"]),
                    output::scalar(&v["created_by"]),
                    output::time(&v["created_at"]),
                ))?;
                let dsl = v["dsl"].as_str().unwrap_or_default();
                output::line(dsl.strip_suffix('\n').unwrap_or(dsl))?;
            }
        }
        RebacCmd::Write {
            tuples,
            expires_in,
            expires_at,
        } => {
            let expires_at = match (expires_in, expires_at) {
                (Some(secs), _) => {
                    let at = time::OffsetDateTime::now_utc()
                        .checked_add(time::Duration::seconds(secs))
                        .context("--expires-in is too long")?;
                    Some(at.format(&time::format_description::well_known::Rfc3339)?)
                }
                (None, at) => at,
            };
            let mut keys = tuples_json(&tuples, "TUPLE")?;
            if let Some(at) = &expires_at {
                for k in &mut keys {
                    k["expires_at"] = json!(at);
                }
            }
            let v = client
                .post_json(
                    &format!("{base}/tuples"),
                    &json!({ "writes": { "tuple_keys": keys } }),
                )
                .await?;
            out.done(&v, format!("written; revision {}", v["revision"]))?;
        }
        RebacCmd::Delete { tuples } => {
            let keys = tuples_json(&tuples, "TUPLE")?;
            let v = client
                .post_json(
                    &format!("{base}/tuples"),
                    &json!({ "deletes": { "tuple_keys": keys } }),
                )
                .await?;
            out.done(&v, format!("deleted; revision {}", v["revision"]))?;
        }
        RebacCmd::Read {
            object,
            relation,
            user,
        } => {
            // Every page, answered as one page of the API's shape.
            let mut tuples = Vec::new();
            let mut token = String::new();
            let mut revision;
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
                let page = client
                    .get_json(&format!("{base}/tuples?{}", query.join("&")))
                    .await?;
                tuples.extend(page["tuples"].as_array().cloned().unwrap_or_default());
                revision = page["revision"].clone();
                token = page["continuation_token"].as_str().unwrap_or("").to_owned();
                if token.is_empty() {
                    break;
                }
            }
            let v = json!({ "tuples": tuples, "continuation_token": "", "revision": revision });
            out.list(&v, &v["tuples"], "no tuples", TUPLE_COLS)?;
        }
        RebacCmd::Check {
            user,
            relation,
            object,
            contextual,
        } => {
            let body = json!({
                "tuple_key": { "user": user, "relation": relation, "object": object },
                "contextual_tuples": { "tuple_keys": tuples_json(&contextual, "--context")? },
                "at_least_revision": fresh,
            });
            let v = client.post_json(&format!("{base}/check"), &body).await?;
            let allowed = v["allowed"] == true;
            let why = v["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            out.done(
                &v,
                format!(
                    "{}  ({user} {relation} {object}; revision {}, decision {}){why}",
                    if allowed { "allowed" } else { "not allowed" },
                    v["revision"],
                    output::scalar(&v["decision_id"])
                ),
            )?;
            if !allowed {
                return Err(Negative.into());
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
                "contextual_tuples": { "tuple_keys": tuples_json(&contextual, "--context")? },
                "at_least_revision": fresh,
            });
            let v = client
                .post_json(&format!("{base}/list-objects"), &body)
                .await?;
            out.list(
                &v,
                &v["objects"],
                "no objects",
                &[("OBJECT", Cell::With(output::scalar))],
            )?;
            note_truncated(&v);
        }
        RebacCmd::ListUsers {
            object,
            relation,
            user_type,
            contextual,
        } => {
            let key = rebac::ObjectRef::parse(&object)
                .with_context(|| format!("OBJECT `{object}` is not an object `type:id`"))?;
            let filter = match user_type.split_once('#') {
                Some((t, r)) => json!({ "type": t, "relation": r }),
                None => json!({ "type": user_type }),
            };
            let body = json!({
                "object": { "type": key.object_type(), "id": key.id() },
                "relation": relation,
                "user_filters": [filter],
                "contextual_tuples": tuples_json(&contextual, "--context")?,
                "at_least_revision": fresh,
            });
            let v = client
                .post_json(&format!("{base}/list-users"), &body)
                .await?;
            out.list(
                &v,
                &v["users"],
                "no users",
                &[("USER", Cell::With(user_text))],
            )?;
            note_truncated(&v);
        }
        RebacCmd::Changes { object_type, after } => {
            // Every page, answered as one page of the API's shape.
            let mut changes = Vec::new();
            let mut token = after.to_string();
            loop {
                let mut path = format!("{base}/changes?continuation_token={token}");
                if let Some(t) = &object_type {
                    path.push_str(&format!("&type={}", percent_encode(t)));
                }
                let page = client.get_json(&path).await?;
                let got = page["changes"].as_array().cloned().unwrap_or_default();
                let next = page["continuation_token"].as_str().unwrap_or("").to_owned();
                let done = got.is_empty() || next == token;
                changes.extend(got);
                if !next.is_empty() {
                    token = next;
                }
                if done {
                    break;
                }
            }
            let v = json!({ "changes": changes, "continuation_token": token });
            out.list(&v, &v["changes"], "no changes", CHANGE_COLS)?;
        }
    }
    Ok(())
}
