//! `warden ca …` (signing keys: list, rotate, revoke) and `warden federation …` (trust other
//! trust domains' SVIDs), over the HTTP API.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{
    client::{Client, parse_duration, percent_encode},
    output::{self, Cell, Col, Out},
};

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

/// The columns of `ca list`.
const KEY_COLS: &[Col] = &[
    ("ID", Cell::Str("id")),
    ("KIND", Cell::Str("kind")),
    ("STATE", Cell::Str("state")),
    (
        "BUNDLE",
        Cell::With(
            |k| match (k["in_bundle"].as_bool(), k["revoked_unix_ms"].is_i64()) {
                (_, true) => "revoked".into(),
                (Some(true), _) => "yes".into(),
                _ => "no".into(),
            },
        ),
    ),
    ("ACTIVATED", Cell::Time("activated_unix_ms")),
    ("NOT_AFTER", Cell::Time("not_after_unix_ms")),
    ("FINGERPRINT", Cell::Str("fingerprint")),
];

pub(crate) async fn ca(client: &Client, out: Out, cmd: CaCmd) -> Result<()> {
    match cmd {
        CaCmd::List => {
            let keys = client.get_json("/v1/ca").await?;
            out.list(&keys, &keys, "no signing keys", KEY_COLS)?;
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
            let mut lines = Vec::new();
            if !ids("prepared").is_empty() {
                lines.push(format!(
                    "prepared:  {} (in the bundle now, not signing yet)",
                    ids("prepared")
                ));
            }
            if !ids("activated").is_empty() {
                lines.push(format!(
                    "activated: {} (signing new SVIDs now)",
                    ids("activated")
                ));
            }
            if !ids("retired").is_empty() {
                lines.push(format!(
                    "retired:   {} (stay in the bundle until what they signed expires)",
                    ids("retired")
                ));
            }
            if ids("activated").is_empty() {
                lines.push(
                    "run `warden ca rotate` again once relying parties have fetched the new \
                     bundle (its refresh hint is 5 minutes) to activate the prepared keys"
                        .to_owned(),
                );
            }
            out.done(&r, lines.join("\n"))?;
        }
        CaCmd::Revoke { id } => {
            client
                .post_empty(&format!("/v1/ca/keys/{}/revoke", percent_encode(&id)))
                .await?;
            out.done(
                &serde_json::json!({ "id": id, "revoked": true }),
                format!("revoked {id}: it has left the bundle"),
            )?;
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
    /// their defaults: JWT-SVIDs of at most 1h, no issuer pinned, no agent route
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
    /// Longest JWT-SVID lifetime (exp - iat) accepted from its agents (90s, 10m, 8h, 2d or
    /// seconds) [default: 1h; at most 1d]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
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

/// A file's text; an error names the file and the flag it came from.
fn read_text(path: &Path, flag: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {} ({flag})", path.display()))
}

/// A bundle document from `--bundle-file`.
fn read_bundle(path: &Path) -> Result<Value> {
    let text = read_text(path, "--bundle-file")?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} (--bundle-file) is not JSON", path.display()))
}

/// Where a federated domain's bundle comes from, for people.
fn bundle_source(f: &Value) -> String {
    f["bundle_url"].as_str().unwrap_or("(static)").to_owned()
}

/// The longest JWT-SVID lifetime a federated domain's limits accept, in seconds.
fn max_ttl(f: &Value) -> String {
    match &f["limits"]["max_jwt_svid_ttl_secs"] {
        Value::Null => "-".into(),
        v => format!("{v}s"),
    }
}

/// The columns of `federation list`.
const FEDERATION_COLS: &[Col] = &[
    ("TRUST_DOMAIN", Cell::Str("trust_domain")),
    ("BUNDLE", Cell::With(bundle_source)),
    ("X509", Cell::Str("x509_authorities")),
    ("JWT_KIDS", Cell::List("jwt_kids")),
    ("REFRESHED", Cell::Time("refreshed_unix_ms")),
    ("MAX_JWT_TTL", Cell::With(max_ttl)),
    (
        "ISSUER",
        Cell::With(|f| output::scalar(&f["limits"]["issuer"])),
    ),
    ("ROUTES", Cell::With(routes)),
    ("LAST_ERROR", Cell::Str("last_error")),
];

/// The fields of one federated trust domain.
const FEDERATION_FIELDS: &[Col] = &[
    ("TRUST_DOMAIN", Cell::Str("trust_domain")),
    ("BUNDLE", Cell::With(bundle_source)),
    ("X509_AUTHORITIES", Cell::Str("x509_authorities")),
    ("JWT_KIDS", Cell::List("jwt_kids")),
    ("SEQUENCE", Cell::Str("sequence")),
    ("REFRESHED", Cell::Time("refreshed_unix_ms")),
    ("MAX_JWT_TTL", Cell::With(max_ttl)),
    (
        "ISSUER",
        Cell::With(|f| output::scalar(&f["limits"]["issuer"])),
    ),
    ("ROUTES", Cell::With(routes)),
    ("LAST_ERROR", Cell::Str("last_error")),
];

/// The agent route groups a federated domain's limits open, comma-separated.
fn routes(f: &Value) -> String {
    let routes: Vec<String> = f["limits"]["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(output::scalar)
        .collect();
    if routes.is_empty() {
        "-".into()
    } else {
        routes.join(",")
    }
}

pub(crate) async fn federation(client: &Client, out: Out, cmd: FederationCmd) -> Result<()> {
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
                body["bundle"] = read_bundle(path)?;
            }
            if let Some(url) = &from.bundle_url {
                body["bundle_url"] = Value::from(url.as_str());
            }
            if let Some(path) = &endpoint_ca {
                body["endpoint_ca_pem"] = Value::from(read_text(path, "--endpoint-ca")?);
            }
            let f = client.post_json("/v1/federations", &body).await?;
            out.object(&f, FEDERATION_FIELDS)?;
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
            out.object(&f, FEDERATION_FIELDS)?;
        }
        FederationCmd::List => {
            let v = client.get_json("/v1/federations").await?;
            out.list(&v, &v, "no federated trust domains", FEDERATION_COLS)?;
        }
        FederationCmd::Update {
            trust_domain,
            bundle_file,
        } => {
            let f = client
                .put_json(
                    &format!("/v1/federations/{}", percent_encode(&trust_domain)),
                    &serde_json::json!({ "bundle": read_bundle(&bundle_file)? }),
                )
                .await?;
            out.object(&f, FEDERATION_FIELDS)?;
        }
        FederationCmd::Refresh { trust_domain } => {
            let f = client
                .post_json(
                    &format!("/v1/federations/{}/refresh", percent_encode(&trust_domain)),
                    &serde_json::json!({}),
                )
                .await?;
            out.object(&f, FEDERATION_FIELDS)?;
        }
        FederationCmd::Remove { trust_domain } => {
            client
                .delete(&format!(
                    "/v1/federations/{}",
                    percent_encode(&trust_domain)
                ))
                .await?;
            out.done(
                &serde_json::json!({ "trust_domain": trust_domain, "removed": true }),
                format!("no longer trusting {trust_domain}"),
            )?;
        }
    }
    Ok(())
}
