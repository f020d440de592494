//! The install's key-encryption key, and opening the signing authority (trust-domain CA,
//! JWT-SVID key: created once, sealed under the KEK, stored, audited, rotated).
//!
//! The key-encryption key (KEK) comes from `WARDEN_KEK` (base64 of 32 bytes) when set, else
//! from `DATA_DIR/kek.key` (mode 0600, created by `warden init`). Without the right KEK the
//! sealed keys do not open and `warden serve` refuses to start.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use authority::{Authority, AuthorityConfig};
use base64::{Engine, engine::general_purpose::STANDARD};
use identity::{TrustDomain, ca::UpstreamCa, seal::Kek};
use ledger::Ledger;
use rand::RngCore;
use store::Store;
use zeroize::Zeroizing;

use crate::keys::{read_secret_file, write_secret_file};

/// File name of the key-encryption key in the data directory.
pub(crate) const KEK_FILE: &str = "kek.key";

/// Creates `DATA_DIR/kek.key` unless `WARDEN_KEK` is set or the file exists.
pub(crate) fn create_kek_file(data_dir: &Path) -> Result<()> {
    if std::env::var_os("WARDEN_KEK").is_some() || data_dir.join(KEK_FILE).exists() {
        return Ok(());
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut raw[..]);
    let encoded = Zeroizing::new(STANDARD.encode(&raw[..]));
    write_secret_file(&data_dir.join(KEK_FILE), encoded.as_bytes())
}

/// Loads the KEK from `WARDEN_KEK` or `DATA_DIR/kek.key`.
pub(crate) fn load_kek(data_dir: &Path) -> Result<Kek> {
    let text = match std::env::var("WARDEN_KEK") {
        Ok(v) => Zeroizing::new(v),
        Err(_) => read_secret_file(&data_dir.join(KEK_FILE)).with_context(|| {
            format!(
                "no key-encryption key: set WARDEN_KEK or restore {KEK_FILE} in the data directory"
            )
        })?,
    };
    let raw = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .context("the key-encryption key is not base64")?,
    );
    Kek::from_bytes(&raw).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Whether this install's store already has its identity keys.
pub(crate) async fn exist(store: &Arc<dyn Store>) -> Result<bool> {
    Ok(!store.signing_keys("x509-ca").await?.is_empty())
}

/// How the CA is made: self-signed, or an intermediate under an upstream CA.
#[derive(Debug, Clone, Default)]
pub(crate) struct CaSettings {
    /// Upstream CA certificate chain and PKCS#8 key (PEM files).
    pub(crate) upstream: Option<(PathBuf, PathBuf)>,
    /// Lifetime of each new CA.
    pub(crate) validity_days: Option<u64>,
    /// Rotate on schedule.
    pub(crate) auto_rotate: bool,
}

/// Checks, before anything is created, that an intermediate for `td` can be made under the
/// upstream CA and verifies to its root (catches expired upstreams and path-length limits).
pub(crate) fn check_upstream(td: &TrustDomain, cert: &Path, key: &Path) -> Result<()> {
    let upstream = load_upstream(cert, key)?;
    identity::ca::Ca::generate_intermediate(
        td,
        &upstream,
        time::Duration::days(1),
        time::OffsetDateTime::now_utc(),
    )
    .map(|_| ())
    .map_err(|e| anyhow::anyhow!("{e}"))
}

pub(crate) fn load_upstream(cert: &Path, key: &Path) -> Result<UpstreamCa> {
    let certs = std::fs::read_to_string(cert)
        .with_context(|| format!("reading the upstream CA certificate {}", cert.display()))?;
    let key_pem = read_secret_file(key)
        .with_context(|| format!("reading the upstream CA key {}", key.display()))?;
    UpstreamCa::from_pem(&certs, &key_pem).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Opens the signing authority: loads the KEK, creates the CA and JWT key the first time
/// (recording it), loads keys and federations.
pub(crate) async fn open_authority(
    data_dir: &Path,
    store: &Arc<dyn Store>,
    ledger: &Ledger,
    td: &TrustDomain,
    ca: &CaSettings,
) -> Result<Authority> {
    let kek = load_kek(data_dir)?;
    let upstream = match &ca.upstream {
        Some((cert, key)) => Some(load_upstream(cert, key)?),
        None => None,
    };
    let validity = match ca.validity_days {
        Some(0) => anyhow::bail!("ca_validity_days must be at least 1"),
        Some(days) => Some(time::Duration::days(
            i64::try_from(days).unwrap_or(i64::MAX / 86_400_000),
        )),
        None => None,
    };
    Authority::open(
        td.clone(),
        Arc::clone(store),
        ledger.clone(),
        kek,
        AuthorityConfig {
            upstream,
            ca_validity: validity,
            auto_rotate: ca.auto_rotate,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
