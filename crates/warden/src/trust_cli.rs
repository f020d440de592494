//! `warden ca …` (signing keys: list, rotate, revoke) and `warden federation …` (trust other
//! trust domains' SVIDs), over the HTTP API.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::client::{Client, percent_encode};

/// `warden ca …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CaCmd {
    /// List the CA and JWT-SVID keys with their state and whether the bundle carries them
    List,
    /// Rotate the CA and JWT-SVID key (admin). Without --now, one step per call: the first
    /// call prepares new keys (published in the bundle, not yet signing); the next activates
    /// them and retires the old ones, which stay in the bundle until what they signed expires
    Rotate {
        /// Prepare and activate at once (a compromised or expiring key)
        #[arg(long)]
        now: bool,
    },
    /// Withdraw a prepared or retired key from the bundle at once (admin): SVIDs it signed
    /// stop verifying. Rotate first to revoke the active key
    Revoke {
        /// Key id, from `warden ca list`
        id: String,
    },
}

pub(crate) fn when(v: &Value) -> String {
    v.as_i64()
        .and_then(|ms| time::OffsetDateTime::from_unix_timestamp(ms / 1000).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".into())
}

pub(crate) async fn ca(client: &Client, cmd: CaCmd) -> Result<()> {
    match cmd {
        CaCmd::List => {
            let keys = client.get_json("/v1/ca").await?;
            println!(
                "{:<21} {:<12} {:<9} {:<7} {:<21} {:<21} FINGERPRINT (SHA-256)",
                "ID", "KIND", "STATE", "BUNDLE", "ACTIVATED", "NOT AFTER"
            );
            for k in keys.as_array().into_iter().flatten() {
                let bundle = match (k["in_bundle"].as_bool(), k["revoked_unix_ms"].is_i64()) {
                    (_, true) => "revoked",
                    (Some(true), _) => "yes",
                    _ => "no",
                };
                println!(
                    "{:<21} {:<12} {:<9} {:<7} {:<21} {:<21} {}",
                    k["id"].as_str().unwrap_or_default(),
                    k["kind"].as_str().unwrap_or_default(),
                    k["state"].as_str().unwrap_or_default(),
                    bundle,
                    when(&k["activated_unix_ms"]),
                    when(&k["not_after_unix_ms"]),
                    k["fingerprint"].as_str().unwrap_or_default(),
                );
            }
        }
        CaCmd::Rotate { now } => {
            let r = client
                .post_json("/v1/ca/rotate", &serde_json::json!({ "now": now }))
                .await?;
            let ids = |name: &str| {
                r[name]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !ids("prepared").is_empty() {
                println!(
                    "prepared:  {} (in the bundle now, not signing yet)",
                    ids("prepared")
                );
            }
            if !ids("activated").is_empty() {
                println!("activated: {} (signing new SVIDs now)", ids("activated"));
            }
            if !ids("retired").is_empty() {
                println!(
                    "retired:   {} (stay in the bundle until what they signed expires)",
                    ids("retired")
                );
            }
            if ids("activated").is_empty() {
                println!(
                    "run `warden ca rotate` again once relying parties have fetched the new bundle \
                     (its refresh hint is 5 minutes) to activate the prepared keys"
                );
            }
        }
        CaCmd::Revoke { id } => {
            client
                .post_empty(&format!("/v1/ca/keys/{}/revoke", percent_encode(&id)))
                .await?;
            println!("revoked {id}: it has left the bundle");
        }
    }
    Ok(())
}

/// Where a federated bundle comes from: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct BundleFrom {
    /// A SPIFFE bundle document (JSON) the other trust domain gave you
    #[arg(long)]
    bundle_file: Option<PathBuf>,
    /// The other trust domain's bundle endpoint (https://…), fetched now and refreshed
    #[arg(long)]
    bundle_url: Option<String>,
}

/// `warden federation …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FederationCmd {
    /// Trust another trust domain's SVIDs (admin)
    Add {
        /// The other trust domain, e.g. partner.example
        trust_domain: String,
        #[command(flatten)]
        from: BundleFrom,
        /// PEM roots authenticating the bundle endpoint, instead of the Web PKI
        #[arg(long, requires = "bundle_url")]
        endpoint_ca: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Set what a federated domain's agents may do here (admin); options left out take
    /// their defaults: JWT-SVIDs of at most 3600 s, no issuer pinned, no agent route
    Limits {
        /// The federated trust domain
        trust_domain: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List federated trust domains
    List,
    /// Replace a static bundle (admin)
    Update {
        /// The federated trust domain
        trust_domain: String,
        /// The new bundle document (JSON)
        #[arg(long)]
        bundle_file: PathBuf,
    },
    /// Fetch a federated bundle from its endpoint now (admin)
    Refresh {
        /// The federated trust domain
        trust_domain: String,
    },
    /// Stop trusting a trust domain's SVIDs (admin)
    Remove {
        /// The federated trust domain
        trust_domain: String,
    },
}

/// A federated domain's limits, as flags.
#[derive(Debug, clap::Args)]
pub(crate) struct LimitArgs {
    /// Longest JWT-SVID lifetime (exp - iat) accepted from its agents, seconds
    /// [default: 3600; at most 86400]
    #[arg(long, value_name = "SECS")]
    max_jwt_svid_ttl: Option<i64>,
    /// The issuer (`iss`) its JWT-SVIDs must carry, when the partner publishes one
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Agent route groups its agents may use, comma-separated: token_exchange,
    /// db_credentials, leases, tasks, grant_requests, git [default: none]
    #[arg(long, value_delimiter = ',', value_name = "GROUPS")]
    routes: Vec<String>,
}

impl LimitArgs {
    /// The `limits` object of a request: only the fields given.
    fn to_json(&self) -> Value {
        let mut limits = serde_json::json!({});
        if let Some(ttl) = self.max_jwt_svid_ttl {
            limits["max_jwt_svid_ttl_secs"] = Value::from(ttl);
        }
        if let Some(iss) = &self.issuer {
            limits["issuer"] = Value::from(iss.as_str());
        }
        let routes: Vec<&str> = self
            .routes
            .iter()
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
            .collect();
        if !routes.is_empty() {
            limits["routes"] = Value::from(routes);
        }
        limits
    }
}

fn read_json(path: &PathBuf) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn print_federation(f: &Value) {
    let kids: Vec<&str> = f["jwt_kids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let limits = &f["limits"];
    let routes: Vec<&str> = limits["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "{:<28} {:<44} x509:{:<2} jwt:{:<20} refreshed {}  max-ttl:{}s issuer:{} routes:{}{}",
        f["trust_domain"].as_str().unwrap_or_default(),
        f["bundle_url"].as_str().unwrap_or("(static)"),
        f["x509_authorities"],
        kids.join(","),
        when(&f["refreshed_unix_ms"]),
        limits["max_jwt_svid_ttl_secs"],
        limits["issuer"].as_str().unwrap_or("-"),
        if routes.is_empty() {
            "-".to_owned()
        } else {
            routes.join(",")
        },
        f["last_error"]
            .as_str()
            .map(|e| format!("  LAST REFRESH FAILED: {e}"))
            .unwrap_or_default()
    );
}

pub(crate) async fn federation(client: &Client, cmd: FederationCmd) -> Result<()> {
    match cmd {
        FederationCmd::Add {
            trust_domain,
            from,
            endpoint_ca,
            limits,
        } => {
            let mut body = serde_json::json!({
                "trust_domain": trust_domain,
                "limits": limits.to_json(),
            });
            if let Some(path) = &from.bundle_file {
                body["bundle"] = read_json(path)?;
            }
            if let Some(url) = &from.bundle_url {
                body["bundle_url"] = Value::from(url.as_str());
            }
            if let Some(path) = &endpoint_ca {
                body["endpoint_ca_pem"] = Value::from(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                );
            }
            let f = client.post_json("/v1/federations", &body).await?;
            print_federation(&f);
        }
        FederationCmd::Limits {
            trust_domain,
            limits,
        } => {
            let f = client
                .put_json(
                    &format!("/v1/federations/{}/limits", percent_encode(&trust_domain)),
                    &limits.to_json(),
                )
                .await?;
            print_federation(&f);
        }
        FederationCmd::List => {
            for f in client
                .get_json("/v1/federations")
                .await?
                .as_array()
                .into_iter()
                .flatten()
            {
                print_federation(f);
            }
        }
        FederationCmd::Update {
            trust_domain,
            bundle_file,
        } => {
            let f = client
                .put_json(
                    &format!("/v1/federations/{}", percent_encode(&trust_domain)),
                    &serde_json::json!({ "bundle": read_json(&bundle_file)? }),
                )
                .await?;
            print_federation(&f);
        }
        FederationCmd::Refresh { trust_domain } => {
            let f = client
                .post_json(
                    &format!("/v1/federations/{}/refresh", percent_encode(&trust_domain)),
                    &serde_json::json!({}),
                )
                .await?;
            print_federation(&f);
        }
        FederationCmd::Remove { trust_domain } => {
            client
                .delete(&format!(
                    "/v1/federations/{}",
                    percent_encode(&trust_domain)
                ))
                .await?;
            println!("no longer trusting {trust_domain}");
        }
    }
    Ok(())
}
