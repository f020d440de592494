//! `warden policy …`: push, list, show, roll back and try out policy packages over the API.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::client::{Client, percent_encode};

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
        /// Only decisions recorded within this period, e.g. 24h, 7d [default: all]
        #[arg(long)]
        since: Option<String>,
        /// Rego: the rule that decides
        #[arg(long)]
        entrypoint: Option<String>,
    },
    /// Ask for a decision, as an enforcement point would (enforcer or admin); recorded
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

/// The files as the API takes them: `[{"name", "text"}…]`, named by their file names.
fn read_files(paths: &[PathBuf]) -> Result<Vec<Value>> {
    let mut files = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no usable file name", path.display()))?;
        files.push(serde_json::json!({ "name": file_name, "text": text }));
    }
    Ok(files)
}

pub(crate) async fn policy(client: &Client, cmd: PolicyCmd) -> Result<()> {
    match cmd {
        // Dispatched before a client exists (see main); here only for completeness.
        PolicyCmd::Test(args) => crate::policy_test::run_and_exit(&args),
        PolicyCmd::Push {
            name,
            files,
            entrypoint,
            expect_version,
        } => {
            let mut body = serde_json::json!({ "files": read_files(&files)? });
            if let Some(e) = entrypoint {
                body["entrypoint"] = Value::from(e);
            }
            if let Some(v) = expect_version {
                body["expected_version"] = Value::from(v);
            }
            let v = client
                .post_json(&format!("/v1/policies/{}", percent_encode(&name)), &body)
                .await?;
            println!(
                "{} version {} ({}) sha256 {}",
                v["package"].as_str().unwrap_or_default(),
                v["version"],
                v["language"].as_str().unwrap_or_default(),
                v["sha256"].as_str().unwrap_or_default()
            );
            for w in v["warnings"].as_array().into_iter().flatten() {
                println!("warning: {}", w.as_str().unwrap_or_default());
            }
        }
        PolicyCmd::List => {
            let v = client.get_json("/v1/policies").await?;
            for p in v.as_array().into_iter().flatten() {
                println!(
                    "{:<24} v{:<4} {:<6} {}  {}",
                    p["package"].as_str().unwrap_or_default(),
                    p["version"],
                    p["language"].as_str().unwrap_or_default(),
                    p["sha256"].as_str().unwrap_or_default(),
                    p["created_by"].as_str().unwrap_or_default()
                );
            }
        }
        PolicyCmd::Show { name, number } => {
            let version = number;
            let path = match version {
                Some(n) => format!("/v1/policies/{}?version={n}", percent_encode(&name)),
                None => format!("/v1/policies/{}", percent_encode(&name)),
            };
            let v = client.get_json(&path).await?;
            if version.is_some() {
                for f in v["files"].as_array().into_iter().flatten() {
                    println!("# {}", f["name"].as_str().unwrap_or_default());
                    println!("{}", f["text"].as_str().unwrap_or_default());
                }
            } else {
                for r in v["versions"].as_array().into_iter().flatten() {
                    println!(
                        "v{:<4} {} {} {}{}",
                        r["version"],
                        r["sha256"].as_str().unwrap_or_default(),
                        r["created_by"].as_str().unwrap_or_default(),
                        r["note"].as_str().unwrap_or_default(),
                        if r["active"] == true {
                            "  (in force)"
                        } else {
                            ""
                        }
                    );
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
            println!(
                "{} version {} = version {to} (sha256 {})",
                v["package"].as_str().unwrap_or_default(),
                v["version"],
                v["sha256"].as_str().unwrap_or_default()
            );
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
            let mut body = serde_json::json!({ "files": read_files(&candidates)? });
            if let Some(e) = entrypoint {
                body["entrypoint"] = Value::from(e);
            }
            if let Some(period) = since {
                let secs = crate::client::parse_duration(&period).map_err(anyhow::Error::msg)?;
                body["since_unix_ms"] =
                    Value::from(crate::now_ms().saturating_sub(secs.saturating_mul(1000)));
            }
            let v = client
                .post_json(
                    &format!("/v1/policies/{}/simulate", percent_encode(&package)),
                    &body,
                )
                .await?;
            let flips = v["flips"].as_array().cloned().unwrap_or_default();
            for f in &flips {
                println!(
                    "FLIP {} {} {} {} on {}: {} -> {}  ({})",
                    f["time"].as_str().unwrap_or_default(),
                    f["decision_id"].as_str().unwrap_or_default(),
                    f["principal"].as_str().unwrap_or_default(),
                    f["action"].as_str().unwrap_or_default(),
                    f["resource"].as_str().unwrap_or_default(),
                    f["was"].as_str().unwrap_or_default(),
                    f["now"].as_str().unwrap_or_default(),
                    f["because"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
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
            println!(
                "{} decisions of `{package}` replayed against {}: {flip_count} would flip{listed}{stopped}",
                v["replayed"],
                v["candidate_sha256"].as_str().unwrap_or_default(),
            );
        }
        PolicyCmd::Eval {
            package,
            principal,
            action,
            resource,
            context,
        } => {
            let Some((kind, id)) = resource.split_once("::") else {
                bail!("--resource must be TYPE::ID, e.g. Repository::warden");
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
                body["context"] =
                    serde_json::from_str(&c).context("--context must be a JSON object")?;
            }
            let v = client.post_json("/v1/authorize", &body).await?;
            println!("{}", v["decision"].as_str().unwrap_or_default());
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}
