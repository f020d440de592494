//! Secret files in the data directory: created 0600 with `create_new`, never overwritten.

use std::{
    fs::OpenOptions,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    sync::Arc,
};

use anyhow::{Context, Result, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use ledger::NoteSigner;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::config::{HMAC_KEY_FILE, LEDGER_KEY_FILE};

/// Writes `contents` to a new file readable only by its owner; refuses to overwrite.
pub(crate) fn write_secret_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

pub(crate) fn read_secret_file(path: &Path) -> Result<Zeroizing<String>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    Ok(Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    ))
}

/// Loads an HTTPS certificate chain and its key (the key file must be 0600).
pub(crate) fn load_tls(
    cert: &Path,
    key: &Path,
    client_verifier: impl FnOnce(
        &server::rustls::crypto::CryptoProvider,
    ) -> Arc<dyn server::rustls::server::danger::ClientCertVerifier>,
) -> Result<server::rustls::ServerConfig> {
    use server::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading certificates from {}: {e}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", cert.display());
    }
    let key_pem = read_secret_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("reading the private key from {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = client_verifier(&provider);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Creates the ledger signing key and the audit HMAC key.
pub(crate) fn create(data_dir: &Path, origin: &str) -> Result<NoteSigner> {
    let signer = NoteSigner::generate(origin)?;
    write_secret_file(&data_dir.join(LEDGER_KEY_FILE), signer.to_skey().as_bytes())?;
    let mut hmac = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut hmac[..]);
    let encoded = Zeroizing::new(STANDARD.encode(&hmac[..]));
    write_secret_file(&data_dir.join(HMAC_KEY_FILE), encoded.as_bytes())?;
    Ok(signer)
}

/// Loads both keys.
pub(crate) fn load(data_dir: &Path) -> Result<(NoteSigner, Zeroizing<[u8; 32]>)> {
    let skey = read_secret_file(&data_dir.join(LEDGER_KEY_FILE))?;
    let signer = NoteSigner::from_skey(&skey)
        .with_context(|| format!("{}", data_dir.join(LEDGER_KEY_FILE).display()))?;
    let text = read_secret_file(&data_dir.join(HMAC_KEY_FILE))?;
    let raw = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .context("audit HMAC key is not base64")?,
    );
    let key: [u8; 32] = raw
        .as_slice()
        .try_into()
        .context("audit HMAC key must be 32 bytes")?;
    Ok((signer, Zeroizing::new(key)))
}
