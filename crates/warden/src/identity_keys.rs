//! The install's identity signing keys (trust-domain CA, JWT-SVID key): created once, sealed
//! under the key-encryption key, stored, audited, and loaded at start.
//!
//! The key-encryption key (KEK) comes from `WARDEN_KEK` (base64 of 32 bytes) when set, else
//! from `DATA_DIR/kek.key` (mode 0600, created by `warden init`). Without the right KEK the
//! sealed keys do not open and `warden serve` refuses to start.

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result};
use base64::{Engine, engine::general_purpose::STANDARD};
use identity::{TrustDomain, ca::Ca, jwt::JwtSigner, seal::Kek};
use ledger::{Ledger, NewEvent, OcsfClass, Outcome};
use rand::RngCore;
use store::{SigningKeyRow, Store};
use zeroize::Zeroizing;

use crate::keys::{read_secret_file, write_secret_file};

/// File name of the key-encryption key in the data directory.
pub(crate) const KEK_FILE: &str = "kek.key";
/// Lifetime of a new trust-domain CA.
const CA_VALIDITY: time::Duration = time::Duration::days(365);

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

/// The loaded keys.
pub(crate) struct IdentityKeys {
    pub(crate) ca: Arc<Ca>,
    pub(crate) jwt: Arc<JwtSigner>,
}

fn pointer(kind: &str) -> String {
    format!("identity.{kind}.active")
}

/// Whether this install's store already has its identity keys.
pub(crate) async fn exist(store: &Arc<dyn Store>) -> Result<bool> {
    Ok(store.meta_get(&pointer("x509-ca")).await?.is_some())
}

fn aad(kind: &str, id: &str) -> Vec<u8> {
    format!("warden/{kind}/{id}").into_bytes()
}

fn new_id() -> String {
    let mut raw = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    format!(
        "key_{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Loads the active CA and JWT key, creating (and recording) them the first time.
pub(crate) async fn ensure(
    store: &Arc<dyn Store>,
    kek: &Kek,
    td: &TrustDomain,
    ledger: &Ledger,
) -> Result<IdentityKeys> {
    let ca_row = ensure_row(
        store,
        "x509-ca",
        kek,
        || {
            let ca = Ca::generate_root(td, CA_VALIDITY, time::OffsetDateTime::now_utc())?;
            let not_after = ca.not_after().unix_timestamp().saturating_mul(1000);
            Ok((
                Some(ca.cert_der().to_vec()),
                ca.key_pkcs8(),
                Some(not_after),
            ))
        },
        ledger,
    )
    .await?;
    let (row, key) = ca_row;
    let cert = row
        .cert_der
        .as_deref()
        .context("the stored CA has no certificate")?;
    let ca = Ca::from_parts(td, cert, &key).map_err(|e| anyhow::anyhow!("stored CA: {e}"))?;

    let (_, key) = ensure_row(
        store,
        "jwt",
        kek,
        || {
            let signer = JwtSigner::generate()?;
            Ok((None, Zeroizing::new(signer.pkcs8().to_vec()), None))
        },
        ledger,
    )
    .await?;
    let jwt = JwtSigner::from_pkcs8(&key).map_err(|e| anyhow::anyhow!("stored JWT key: {e}"))?;
    Ok(IdentityKeys {
        ca: Arc::new(ca),
        jwt: Arc::new(jwt),
    })
}

type Generated = (Option<Vec<u8>>, Zeroizing<Vec<u8>>, Option<i64>);

/// The active row of `kind` with its unsealed key. The active key is the one the meta pointer
/// `identity.<kind>.active` names; the first process to set it wins, so replicas starting
/// together agree on one key.
async fn ensure_row(
    store: &Arc<dyn Store>,
    kind: &str,
    kek: &Kek,
    generate: impl FnOnce() -> Result<Generated>,
    ledger: &Ledger,
) -> Result<(SigningKeyRow, Zeroizing<Vec<u8>>)> {
    let pointer = pointer(kind);
    if store.meta_get(&pointer).await?.is_none() {
        let (cert_der, key, not_after_unix_ms) = generate()?;
        let id = new_id();
        let sealed = kek
            .seal(&aad(kind, &id), &key)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        store
            .signing_key_insert(&SigningKeyRow {
                id: id.clone(),
                kind: kind.to_owned(),
                state: "active".into(),
                cert_der,
                key_sealed: sealed,
                created_unix_ms: crate::now_ms(),
                not_after_unix_ms,
            })
            .await?;
        if store.meta_set_if_absent(&pointer, &id).await? {
            ledger
                .append(
                    NewEvent::new(
                        "system:identity",
                        "signing_key.create",
                        Outcome::Success,
                        OcsfClass::UserAccessManagement,
                    )
                    .field("key_id", id.clone())
                    .field("kind", kind),
                )
                .await?;
        }
    }
    let active = store
        .meta_get(&pointer)
        .await?
        .context("no active signing key after creating one")?;
    let row = store
        .signing_keys(kind)
        .await?
        .into_iter()
        .find(|r| r.id == active)
        .with_context(|| format!("the active {kind} key `{active}` is missing from the store"))?;
    let key = kek.open(&aad(kind, &row.id), &row.key_sealed).map_err(|_| {
        anyhow::anyhow!(
            "cannot unseal the {kind} key `{}`: wrong key-encryption key (WARDEN_KEK or {KEK_FILE}), or the stored key was altered",
            row.id
        )
    })?;
    Ok((row, key))
}
