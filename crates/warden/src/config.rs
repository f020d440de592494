//! Settings: `warden.toml` in the data directory, overridden by environment variables,
//! overridden by flags. Every setting is listed in `docs/configuration.md`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// File name of the configuration inside the data directory.
pub(crate) const CONFIG_FILE: &str = "warden.toml";
/// Ledger signing key (C2SP private key form), 0600.
pub(crate) const LEDGER_KEY_FILE: &str = "ledger.key";
/// Audit HMAC key (base64, 32 bytes), 0600.
pub(crate) const HMAC_KEY_FILE: &str = "audit-hmac.key";
/// Default embedded database file.
pub(crate) const DB_FILE: &str = "warden.db";

/// The contents of `warden.toml`. Unknown keys are an error, so a typo never silently
/// falls back to a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) trust_domain: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) database_url: Option<String>,
    pub(crate) log: Option<String>,
    pub(crate) log_format: Option<String>,
    pub(crate) checkpoint_interval_secs: Option<u64>,
    pub(crate) request_timeout_secs: Option<u64>,
    pub(crate) body_limit_bytes: Option<usize>,
    pub(crate) ledger_max_batch: Option<usize>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) workload_socket: Option<PathBuf>,
    pub(crate) public_url: Option<String>,
    pub(crate) upstream_ca_cert: Option<PathBuf>,
    pub(crate) upstream_ca_key: Option<PathBuf>,
    pub(crate) ca_validity_days: Option<u64>,
    pub(crate) ca_auto_rotate: Option<bool>,
    pub(crate) oauth_scopes: Option<Vec<String>>,
    pub(crate) oauth_token_ttl_secs: Option<u64>,
    pub(crate) delegation_depth: Option<usize>,
    pub(crate) broker_policy_package: Option<String>,
    pub(crate) lease_retry_base_ms: Option<u64>,
    /// `[limits]`: rate limits, refusal budgets, listing bounds, retention.
    pub(crate) limits: Option<server::Limits>,
}

impl FileConfig {
    pub(crate) fn load(data_dir: &Path) -> Result<Option<Self>> {
        let path = data_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let cfg = toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        Ok(Some(cfg))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Settings after precedence is applied (flags > environment > file > defaults).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) data_dir: PathBuf,
    pub(crate) trust_domain: String,
    pub(crate) listen: SocketAddr,
    pub(crate) database_url: store::StoreUrl,
    pub(crate) log: String,
    pub(crate) log_format: LogFormat,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) body_limit: usize,
    pub(crate) ledger_max_batch: usize,
    /// Certificate chain and key (PEM) to serve HTTPS; plain HTTP when absent.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// Unix socket of the SPIFFE Workload API.
    pub(crate) workload_socket: PathBuf,
    /// The URL clients reach this server at (OIDC issuer); derived from the listen address
    /// when absent.
    pub(crate) public_url: Option<String>,
    /// How new CAs are made and rotated.
    pub(crate) ca: crate::identity_keys::CaSettings,
    /// The credential broker's scopes, token lifetime, delegation depth and policy package.
    pub(crate) broker: server::BrokerSettings,
    /// Rate limits, refusal budgets, listing bounds and retention (`[limits]`).
    pub(crate) limits: server::Limits,
}

/// Values given as flags or environment variables (clap merges those two).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Overrides {
    /// Address to listen on [env: WARDEN_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, env = "WARDEN_LISTEN", hide_env = true)]
    pub(crate) listen: Option<String>,
    /// Database URL: sqlite://PATH or postgres://… [env: WARDEN_DATABASE_URL]
    /// [default: sqlite://DATA_DIR/warden.db]
    #[arg(long, env = "WARDEN_DATABASE_URL", hide_env = true)]
    pub(crate) database_url: Option<String>,
    /// Log filter, e.g. `info` or `warden=debug` [env: WARDEN_LOG] [default: info]
    #[arg(long, env = "WARDEN_LOG", hide_env = true)]
    pub(crate) log: Option<String>,
    /// Log format: text or json [env: WARDEN_LOG_FORMAT] [default: text]
    #[arg(long, env = "WARDEN_LOG_FORMAT", hide_env = true)]
    pub(crate) log_format: Option<String>,
    /// Seconds between scheduled checkpoints [env: WARDEN_CHECKPOINT_INTERVAL] [default: 10]
    #[arg(long, env = "WARDEN_CHECKPOINT_INTERVAL", hide_env = true)]
    pub(crate) checkpoint_interval: Option<u64>,
    /// Request time limit (90s, 10m, 8h, 2d or seconds) [env: WARDEN_REQUEST_TIMEOUT]
    /// [default: 30s]
    #[arg(long, env = "WARDEN_REQUEST_TIMEOUT", hide_env = true, value_parser = crate::client::parse_seconds)]
    pub(crate) request_timeout: Option<u64>,
    /// Request body limit, bytes [env: WARDEN_BODY_LIMIT] [default: 1048576]
    #[arg(long, env = "WARDEN_BODY_LIMIT", hide_env = true)]
    pub(crate) body_limit: Option<usize>,
    /// Most ledger entries per group commit [env: WARDEN_LEDGER_MAX_BATCH] [default: 1024]
    #[arg(long, env = "WARDEN_LEDGER_MAX_BATCH", hide_env = true)]
    pub(crate) ledger_max_batch: Option<usize>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key) [env: WARDEN_TLS_CERT]
    #[arg(long, env = "WARDEN_TLS_CERT", hide_env = true)]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert, mode 0600 [env: WARDEN_TLS_KEY]
    #[arg(long, env = "WARDEN_TLS_KEY", hide_env = true)]
    pub(crate) tls_key: Option<PathBuf>,
    /// Unix socket for the SPIFFE Workload API [env: WARDEN_WORKLOAD_SOCKET]
    /// [default: DATA_DIR/workload.sock]
    #[arg(long, env = "WARDEN_WORKLOAD_SOCKET", hide_env = true)]
    pub(crate) workload_socket: Option<PathBuf>,
    /// URL clients reach this server at: the OIDC issuer of agent JWTs
    /// [env: WARDEN_PUBLIC_URL] [default: http(s)://LISTEN]
    #[arg(long, env = "WARDEN_PUBLIC_URL", hide_env = true)]
    pub(crate) public_url: Option<String>,
    /// Make Warden's CA an intermediate signed by this upstream CA: its certificate followed by
    /// the chain up to the root, PEM (needs --upstream-ca-key) [env: WARDEN_UPSTREAM_CA_CERT]
    #[arg(long, env = "WARDEN_UPSTREAM_CA_CERT", hide_env = true)]
    pub(crate) upstream_ca_cert: Option<PathBuf>,
    /// PKCS#8 PEM private key of --upstream-ca-cert, mode 0600 [env: WARDEN_UPSTREAM_CA_KEY]
    #[arg(long, env = "WARDEN_UPSTREAM_CA_KEY", hide_env = true)]
    pub(crate) upstream_ca_key: Option<PathBuf>,
    /// Scopes the token endpoint issues, comma-separated; any other is `invalid_scope`
    /// [env: WARDEN_OAUTH_SCOPES] [default: none]
    #[arg(
        long,
        env = "WARDEN_OAUTH_SCOPES",
        hide_env = true,
        value_delimiter = ','
    )]
    pub(crate) oauth_scopes: Option<Vec<String>>,
    /// Access-token lifetime (90s, 10m, 8h, 2d or seconds; at most 1h)
    /// [env: WARDEN_OAUTH_TOKEN_TTL] [default: 5m]
    #[arg(long, env = "WARDEN_OAUTH_TOKEN_TTL", hide_env = true, value_parser = crate::client::parse_seconds)]
    pub(crate) oauth_token_ttl: Option<u64>,
    /// Most actors in a delegation chain (0 disables delegation) [env: WARDEN_DELEGATION_DEPTH]
    /// [default: 3]
    #[arg(long, env = "WARDEN_DELEGATION_DEPTH", hide_env = true)]
    pub(crate) delegation_depth: Option<usize>,
    /// The policy package that decides credential issuance [env: WARDEN_BROKER_POLICY_PACKAGE]
    /// [default: broker]
    #[arg(long, env = "WARDEN_BROKER_POLICY_PACKAGE", hide_env = true)]
    pub(crate) broker_policy_package: Option<String>,
    /// First wait before retrying a failed upstream revocation, milliseconds; doubles each
    /// time up to 5 minutes [env: WARDEN_LEASE_RETRY_BASE_MS] [default: 2000]
    #[arg(long, env = "WARDEN_LEASE_RETRY_BASE_MS", hide_env = true)]
    pub(crate) lease_retry_base_ms: Option<u64>,
}

/// The upstream CA pair from flags or file: both or neither.
pub(crate) fn upstream_pair(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<(PathBuf, PathBuf)>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => bail!(
            "an upstream CA needs both a certificate (--upstream-ca-cert) and a key (--upstream-ca-key)"
        ),
    }
}

impl Settings {
    /// Applies precedence. `file` is the data directory's `warden.toml`.
    pub(crate) fn resolve(data_dir: &Path, file: FileConfig, o: &Overrides) -> Result<Self> {
        let trust_domain = file
            .trust_domain
            .clone()
            .context("warden.toml has no trust_domain: re-run `warden init`")?;
        let listen_s = o
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_s
            .parse()
            .with_context(|| format!("listen address `{listen_s}` is not HOST:PORT"))?;
        let db = o
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join(DB_FILE).display()));
        let database_url = db
            .parse()
            .map_err(|e: store::StoreError| anyhow::anyhow!("{e}"))?;
        let log_format = match o
            .log_format
            .clone()
            .or(file.log_format)
            .as_deref()
            .unwrap_or("text")
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("log format `{other}` must be `text` or `json`"),
        };
        let positive = |name: &str, v: u64| -> Result<u64> {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(v)
        };
        let tls = match (
            o.tls_cert.clone().or(file.tls_cert),
            o.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)"),
        };
        let workload_socket = o
            .workload_socket
            .clone()
            .or(file.workload_socket)
            .unwrap_or_else(|| data_dir.join("workload.sock"));
        let public_url = o.public_url.clone().or(file.public_url);
        let ca = crate::identity_keys::CaSettings {
            upstream: upstream_pair(
                o.upstream_ca_cert.clone().or(file.upstream_ca_cert),
                o.upstream_ca_key.clone().or(file.upstream_ca_key),
            )?,
            validity_days: file.ca_validity_days,
            auto_rotate: file.ca_auto_rotate.unwrap_or(true),
        };
        if ca.validity_days == Some(0) {
            bail!("ca_validity_days must be at least 1");
        }
        if let Some(url) = &public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.ends_with('/') {
                bail!(
                    "public url `{url}` must be http(s)://HOST[:PORT][/PATH] without a trailing slash"
                );
            }
        }
        let defaults = server::BrokerSettings::default();
        let token_ttl = o
            .oauth_token_ttl
            .or(file.oauth_token_ttl_secs)
            .unwrap_or(defaults.token_ttl.as_secs());
        if !(1..=defaults.max_token_ttl.as_secs()).contains(&token_ttl) {
            bail!(
                "oauth token ttl must be 1-{} seconds",
                defaults.max_token_ttl.as_secs()
            );
        }
        let mut scopes = std::collections::BTreeSet::new();
        for scope in o
            .oauth_scopes
            .clone()
            .or(file.oauth_scopes)
            .unwrap_or_default()
        {
            let scope = scope.trim();
            if scope.is_empty() {
                continue;
            }
            let parsed = broker::scope::ScopeSet::parse(scope)
                .map_err(|e| anyhow::anyhow!("oauth scope: {e}"))?;
            if parsed.iter().count() != 1 {
                bail!("oauth scope `{scope}` must be one scope token (no spaces)");
            }
            scopes.insert(scope.to_owned());
        }
        let broker = server::BrokerSettings {
            token_ttl: Duration::from_secs(token_ttl),
            delegation_depth: o
                .delegation_depth
                .or(file.delegation_depth)
                .unwrap_or(defaults.delegation_depth),
            scopes,
            policy_package: o
                .broker_policy_package
                .clone()
                .or(file.broker_policy_package)
                .unwrap_or(defaults.policy_package.clone()),
            retry_base: Duration::from_millis(positive(
                "lease retry base",
                o.lease_retry_base_ms
                    .or(file.lease_retry_base_ms)
                    .unwrap_or(2000),
            )?),
            ..defaults
        };
        let limits = file.limits.clone().unwrap_or_default();
        limits.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            broker,
            limits,
            tls,
            ca,
            public_url,
            workload_socket,
            data_dir: data_dir.to_owned(),
            trust_domain,
            listen,
            database_url,
            log: o.log.clone().or(file.log).unwrap_or_else(|| "info".into()),
            log_format,
            checkpoint_interval: Duration::from_secs(positive(
                "checkpoint interval",
                o.checkpoint_interval
                    .or(file.checkpoint_interval_secs)
                    .unwrap_or(10),
            )?),
            request_timeout: Duration::from_secs(positive(
                "request timeout",
                o.request_timeout
                    .or(file.request_timeout_secs)
                    .unwrap_or(30),
            )?),
            body_limit: positive(
                "body limit",
                o.body_limit.or(file.body_limit_bytes).unwrap_or(1 << 20) as u64,
            )? as usize,
            ledger_max_batch: positive(
                "ledger max batch",
                o.ledger_max_batch.or(file.ledger_max_batch).unwrap_or(1024) as u64,
            )? as usize,
        })
    }
}

/// Checks a trust domain name exactly as the SPIFFE-ID specification allows.
pub(crate) fn check_trust_domain(td: &str) -> Result<()> {
    identity::TrustDomain::parse(td).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> FileConfig {
        FileConfig {
            trust_domain: Some("example.org".into()),
            listen: Some("127.0.0.1:9000".into()),
            log: Some("debug".into()),
            ..FileConfig::default()
        }
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = Path::new("/data");
        let s = Settings::resolve(dir, file(), &Overrides::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.log, "debug");
        assert_eq!(s.checkpoint_interval, Duration::from_secs(10));
        assert_eq!(s.database_url.to_string(), "sqlite:///data/warden.db");
        let o = Overrides {
            listen: Some("0.0.0.0:1".into()),
            database_url: Some("postgres://h/db".into()),
            ..Overrides::default()
        };
        let s = Settings::resolve(dir, file(), &o).unwrap();
        assert_eq!(s.listen.to_string(), "0.0.0.0:1");
        assert_eq!(s.database_url.to_string(), "postgres://h/db");
    }

    #[test]
    fn bad_values_are_refused() {
        let dir = Path::new("/data");
        for o in [
            Overrides {
                listen: Some("nope".into()),
                ..Overrides::default()
            },
            Overrides {
                log_format: Some("xml".into()),
                ..Overrides::default()
            },
            Overrides {
                checkpoint_interval: Some(0),
                ..Overrides::default()
            },
            Overrides {
                database_url: Some("mysql://x".into()),
                ..Overrides::default()
            },
        ] {
            assert!(Settings::resolve(dir, file(), &o).is_err(), "{o:?}");
        }
        assert!(toml::from_str::<FileConfig>("listenn = \"x\"").is_err());
    }

    #[test]
    fn trust_domains() {
        assert!(check_trust_domain("example.org").is_ok());
        for bad in ["", "Example.org", "a b", "x/y", "a:1"] {
            assert!(check_trust_domain(bad).is_err(), "{bad}");
        }
    }
}
