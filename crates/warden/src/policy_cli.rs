//! `warden policy …`: push, list, show, roll back and try out policy packages over the API.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    client::{Client, parse_duration, percent_encode},
    output::{self, Cell, Col, Negative, Out},
};

/// `warden policy …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum PolicyCmd {
    /// Push a new version of a package (admin): `.cedar` files and one `.cedarschema`, or
    /// `.rego` files. Refused with the engine's diagnostics if invalid
    Push {
        /// Package name, [a-z0-9._-]
        name: String,
        /// The files (the language follows from their extensions)
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rego: the rule that decides [default: data.<package>.allow]
        #[arg(long)]
        entrypoint: Option<String>,
        /// Refuse unless the package is at this version now (0: new package)
        #[arg(long)]
        expect_version: Option<i64>,
    },
    /// List the packages in force
    List,
    /// A package's versions, or one version's files
    Show {
        /// Package name
        name: String,
        /// Print this version's files
        #[arg(value_name = "VERSION")]
        number: Option<i64>,
    },
    /// Make an earlier version's content the newest version (admin)
    Rollback {
        /// Package name
        name: String,
        /// The version to go back to
        #[arg(long)]
        to: i64,
    },
    /// Replay the decisions recorded for a package against a candidate package, before
    /// deploying it, and list every decision that would flip (admin or auditor)
    Simulate {
        /// The package whose recorded decisions are replayed [default: the only one]
        #[arg(long)]
        package: Option<String>,
        /// The candidate's files (repeat: `--candidate a.cedar --candidate s.cedarschema`)
        #[arg(long = "candidate", required = true)]
        candidates: Vec<PathBuf>,
        /// Only decisions recorded within this period (90s, 10m, 8h, 2d or seconds) [default:
        /// all]
        #[arg(long, value_parser = parse_duration)]
        since: Option<i64>,
        /// Rego: the rule that decides
        #[arg(long)]
        entrypoint: Option<String>,
    },
    /// Ask for a decision, as an enforcement point would (enforcer or admin); recorded.
    /// Exit 0: allow; 1: deny
    Eval {
        /// Package [default: the only one in force]
        #[arg(long)]
        package: Option<String>,
        /// The agent's SPIFFE ID
        #[arg(long)]
        principal: String,
        /// The action
        #[arg(long)]
        action: String,
        /// The resource as TYPE::ID, e.g. Repository::warden
        #[arg(long)]
        resource: String,
        /// Request attributes, a JSON object (they appear as context.request)
        #[arg(long)]
        context: Option<String>,
    },
    /// Run a package's tests (`*.tests.json`) offline, no server or token needed. Exit 0: all
    /// passed; 1: a test failed or the package is invalid; 2: the tests could not be run
    Test(crate::policy_test::TestArgs),
}

/// The files as the API takes them: `[{"name", "text"}…]`, named by their file names. An
/// error names the file and the argument (`arg`) it came from.
fn read_files(paths: &[PathBuf], arg: &str) -> Result<Vec<Value>> {
    let mut files = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the policy file {} ({arg})", path.display()))?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} ({arg}) has no usable file name", path.display()))?;
        files.push(serde_json::json!({ "name": file_name, "text": text }));
    }
    Ok(files)
}

/// The columns of a package version (`policy list`).
const PACKAGE_COLS: &[Col] = &[
    ("PACKAGE", Cell::Str("package")),
    ("VERSION", Cell::Str("version")),
    ("LANGUAGE", Cell::Str("language")),
    ("SHA256", Cell::Str("sha256")),
    ("CREATED", Cell::Time("created_unix_ms")),
    ("CREATED_BY", Cell::Str("created_by")),
];

/// Whether a version is the one in force.
fn in_force(v: &Value) -> String {
    if v["active"] == true { "yes" } else { "no" }.into()
}

/// The columns of a package's versions (`policy show NAME`).
const VERSION_COLS: &[Col] = &[
    ("VERSION", Cell::Str("version")),
    ("IN_FORCE", Cell::With(in_force)),
    ("SHA256", Cell::Str("sha256")),
    ("CREATED", Cell::Time("created_unix_ms")),
    ("CREATED_BY", Cell::Str("created_by")),
    ("NOTE", Cell::Str("note")),
];

/// The fields of one version (`policy show NAME VERSION`), before its files.
const VERSION_FIELDS: &[Col] = &[
    ("PACKAGE", Cell::Str("package")),
    ("VERSION", Cell::Str("version")),
    ("IN_FORCE", Cell::With(in_force)),
    ("LANGUAGE", Cell::Str("language")),
    ("ENTRYPOINT", Cell::Str("entrypoint")),
    ("SHA256", Cell::Str("sha256")),
    ("CREATED", Cell::Time("created_unix_ms")),
    ("CREATED_BY", Cell::Str("created_by")),
    ("NOTE", Cell::Str("note")),
];

/// The columns of the decisions a candidate would flip (`policy simulate`).
const FLIP_COLS: &[Col] = &[
    ("TIME", Cell::Time("time")),
    ("DECISION_ID", Cell::Str("decision_id")),
    ("PRINCIPAL", Cell::Str("principal")),
    ("ACTION", Cell::Str("action")),
    ("RESOURCE", Cell::Str("resource")),
    ("WAS", Cell::Str("was")),
    ("NOW", Cell::Str("now")),
    ("BECAUSE", Cell::With(|f| strings(&f["because"]).join("; "))),
];

/// A JSON array of strings (anything else: nothing).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(output::scalar)
        .collect()
}

pub(crate) async fn policy(client: &Client, out: Out, cmd: PolicyCmd) -> Result<()> {
    match cmd {
        // Dispatched before a client exists (see main); here only for completeness.
        PolicyCmd::Test(args) => crate::policy_test::run_and_exit(&args),
        PolicyCmd::Push {
            name,
            files,
            entrypoint,
            expect_version,
        } => {
            let mut body = serde_json::json!({ "files": read_files(&files, "FILES")? });
            if let Some(e) = entrypoint {
                body["entrypoint"] = Value::from(e);
            }
            if let Some(v) = expect_version {
                body["expected_version"] = Value::from(v);
            }
            let v = client
                .post_json(&format!("/v1/policies/{}", percent_encode(&name)), &body)
                .await?;
            let mut text = format!(
                "{} version {} ({}) sha256 {}",
                output::scalar(&v["package"]),
                v["version"],
                output::scalar(&v["language"]),
                output::scalar(&v["sha256"])
            );
            for w in strings(&v["warnings"]) {
                text.push_str(&format!("\nwarning: {w}"));
            }
            out.done(&v, text)?;
        }
        PolicyCmd::List => {
            let v = client.get_json("/v1/policies").await?;
            out.list(&v, &v, "no policy packages", PACKAGE_COLS)?;
        }
        PolicyCmd::Show { name, number } => {
            let path = match number {
                Some(n) => format!("/v1/policies/{}?version={n}", percent_encode(&name)),
                None => format!("/v1/policies/{}", percent_encode(&name)),
            };
            let v = client.get_json(&path).await?;
            if number.is_none() {
                out.list(&v, &v["versions"], "no versions", VERSION_COLS)?;
            } else if out.is_json() {
                output::json(&v)?;
            } else {
                out.object(&v, VERSION_FIELDS)?;
                for f in v["files"].as_array().into_iter().flatten() {
                    output::line(&format!("\n# {}", output::scalar(&f["name"])))?;
                    output::line(f["text"].as_str().unwrap_or_default().trim_end())?;
                }
            }
        }
        PolicyCmd::Rollback { name, to } => {
            let v = client
                .post_json(
                    &format!("/v1/policies/{}/rollback", percent_encode(&name)),
                    &serde_json::json!({ "to": to }),
                )
                .await?;
            out.done(
                &v,
                format!(
                    "{} version {} = version {to} (sha256 {})",
                    output::scalar(&v["package"]),
                    v["version"],
                    output::scalar(&v["sha256"])
                ),
            )?;
        }
        PolicyCmd::Simulate {
            package,
            candidates,
            since,
            entrypoint,
        } => {
            let package = match package {
                Some(p) => p,
                None => {
                    let all = client.get_json("/v1/policies").await?;
                    let names: Vec<&str> = all
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["package"].as_str())
                        .collect();
                    match names.as_slice() {
                        [one] => (*one).to_owned(),
                        _ => bail!(
                            "name the package with --package (in force: {})",
                            names.join(", ")
                        ),
                    }
                }
            };
            let mut body = serde_json::json!({ "files": read_files(&candidates, "--candidate")? });
            if let Some(e) = entrypoint {
                body["entrypoint"] = Value::from(e);
            }
            if let Some(secs) = since {
                body["since_unix_ms"] =
                    Value::from(crate::now_ms().saturating_sub(secs.saturating_mul(1000)));
            }
            let v = client
                .post_json(
                    &format!("/v1/policies/{}/simulate", percent_encode(&package)),
                    &body,
                )
                .await?;
            if out.is_json() {
                return output::json(&v);
            }
            let flips = v["flips"].as_array().map_or(&[][..], Vec::as_slice);
            if !flips.is_empty() {
                output::table(FLIP_COLS, &flips.iter().collect::<Vec<_>>())?;
            }
            let flip_count = v["flip_count"].as_u64().unwrap_or(flips.len() as u64);
            let listed = if flip_count > flips.len() as u64 {
                format!(" ({} listed)", flips.len())
            } else {
                String::new()
            };
            let stopped = if v["complete"] == true {
                String::new()
            } else {
                format!(
                    " (stopped by its `{}` budget after {} ledger entries: not every decision was replayed)",
                    v["stopped_by"].as_str().unwrap_or("max_entries"),
                    v["scanned_entries"]
                )
            };
            output::line(&format!(
                "{} decisions of `{package}` replayed against {}: {flip_count} would flip{listed}{stopped}",
                v["replayed"],
                output::scalar(&v["candidate_sha256"]),
            ))?;
        }
        PolicyCmd::Eval {
            package,
            principal,
            action,
            resource,
            context,
        } => {
            let Some((kind, id)) = resource
                .split_once("::")
                .filter(|(k, i)| !k.is_empty() && !i.is_empty())
            else {
                bail!("--resource `{resource}` must be TYPE::ID, e.g. Repository::warden");
            };
            let mut body = serde_json::json!({
                "principal": principal,
                "action": action,
                "resource": { "type": kind, "id": id },
            });
            if let Some(p) = package {
                body["package"] = Value::from(p);
            }
            if let Some(c) = context {
                let value: Value = serde_json::from_str(&c)
                    .context("--context must be a JSON object, e.g. '{\"ip\": \"10.0.0.1\"}'")?;
                if !value.is_object() {
                    bail!("--context must be a JSON object, not {value}");
                }
                body["context"] = value;
            }
            let v = client.post_json("/v1/authorize", &body).await?;
            let allowed = v["decision"] == "allow";
            if out.is_json() {
                output::json(&v)?;
            } else {
                print_decision(&v)?;
            }
            if !allowed {
                return Err(Negative.into());
            }
        }
    }
    Ok(())
}

/// A decision for people: `allow` or `deny`, then why and where it is recorded.
fn print_decision(v: &Value) -> Result<()> {
    let mut lines = vec![output::scalar(&v["decision"])];
    if let Some(why) = v["reason"].as_str() {
        lines.push(format!("reason: {why}"));
    }
    let determining = strings(&v["determining_policies"]);
    if !determining.is_empty() {
        lines.push(format!("determined by: {}", determining.join(", ")));
    } else if v["decision"] != "allow" && v["reason"].is_null() {
        lines.push("reason: no policy permits it".to_owned());
    }
    for e in strings(&v["errors"]) {
        lines.push(format!("error: {e}"));
    }
    lines.push(format!(
        "package {} version {}, decision {}",
        output::scalar(&v["package"]),
        output::scalar(&v["policy_version"]),
        output::scalar(&v["decision_id"])
    ));
    output::line(&lines.join("\n"))
}
