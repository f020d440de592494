//! `warden init`: data directory, trust domain, keys, store, bootstrap admin token.

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result, bail};
use ledger::{Ledger, LedgerConfig, NewEvent, OcsfClass, Outcome};

use crate::{
    config::{self, CONFIG_FILE, FileConfig, HMAC_KEY_FILE, LEDGER_KEY_FILE},
    keys,
};

/// Arguments of `warden init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Trust domain of this install (SPIFFE IDs will be spiffe://TRUST_DOMAIN/…)
    /// [default: example.org]
    #[arg(long)]
    trust_domain: Option<String>,
    /// Write the bootstrap admin token to this new file (mode 0600); `-` prints it on standard
    /// output instead [default: DATA_DIR/admin.token]
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<std::path::PathBuf>,
    /// Database URL to initialise (sqlite://PATH or postgres://…); recorded in warden.toml
    #[arg(long, env = "WARDEN_DATABASE_URL", hide_env = true)]
    database_url: Option<String>,
    /// Make the CA an intermediate signed by this upstream CA (its certificate, then the chain
    /// up to the root, PEM); recorded in warden.toml for later rotations
    #[arg(long, env = "WARDEN_UPSTREAM_CA_CERT", hide_env = true)]
    upstream_ca_cert: Option<std::path::PathBuf>,
    /// PKCS#8 PEM key of --upstream-ca-cert
    #[arg(long, env = "WARDEN_UPSTREAM_CA_KEY", hide_env = true)]
    upstream_ca_key: Option<std::path::PathBuf>,
}

/// The bootstrap admin token's file in the data directory, where `warden init` and the first
/// `warden serve` write it unless told otherwise.
const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A data directory that does not exist yet, or is empty but for the lock file of the process
/// that asks (which the lock created).
pub(crate) fn is_fresh(data_dir: &Path) -> bool {
    match std::fs::read_dir(data_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .all(|e| e.file_name() == crate::serve::SERVE_LOCK_FILE),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// `warden serve` on a fresh data directory, under the lock it holds: `init` with defaults,
/// the bootstrap admin token written to `DATA_DIR/admin.token` (0600).
pub(crate) async fn first_start(data_dir: &Path, database_url: Option<String>) -> Result<()> {
    let token_file = data_dir.join(ADMIN_TOKEN_FILE);
    eprintln!("first start: initialising {}", data_dir.display());
    run_locked(
        data_dir,
        InitArgs {
            trust_domain: None,
            admin_token_file: Some(token_file.clone()),
            database_url,
            upstream_ca_cert: None,
            upstream_ca_key: None,
        },
    )
    .await?;
    eprintln!(
        "the bootstrap admin token is in {} (mode 0600): store it elsewhere and delete the file",
        token_file.display()
    );
    Ok(())
}

/// The ledger origin (and checkpoint key name) for a trust domain.
pub(crate) fn origin(trust_domain: &str) -> String {
    format!("{trust_domain}/warden/ledger")
}

/// `warden init`: under the data directory's lock, so it is refused while a `warden serve`
/// (or another init) uses the directory. The lock file is removed when it ends, and so is the
/// directory if init made it and failed.
pub(crate) async fn run(data_dir: &Path, args: InitArgs) -> Result<()> {
    let lock = crate::serve::lock_data_dir(data_dir, crate::serve::Holder::Init)?;
    let result = run_locked(data_dir, args).await;
    lock.release_and_tidy();
    result
}

/// Where the bootstrap admin token goes.
enum TokenOut {
    /// A new file, mode 0600.
    File(std::path::PathBuf),
    /// Standard output (`--admin-token-file -`).
    Stdout,
}

impl TokenOut {
    fn of(data_dir: &Path, arg: Option<&Path>) -> Self {
        match arg {
            Some(path) if path == Path::new("-") => TokenOut::Stdout,
            Some(path) => TokenOut::File(path.to_owned()),
            None => TokenOut::File(data_dir.join(ADMIN_TOKEN_FILE)),
        }
    }
}

/// `warden init`'s work, with the data directory's lock held by the caller.
async fn run_locked(data_dir: &Path, mut args: InitArgs) -> Result<()> {
    if let Some(existing) = FileConfig::load(data_dir)? {
        let td = existing.trust_domain.unwrap_or_default();
        if let Some(asked) = args.trust_domain.as_ref().filter(|a| **a != td) {
            bail!(
                "{} is already initialised for trust domain `{td}`, not `{asked}`; nothing changed",
                data_dir.display()
            );
        }
        println!(
            "{} is already initialised (trust domain `{td}`); nothing changed",
            data_dir.display()
        );
        return Ok(());
    }
    let trust_domain = args
        .trust_domain
        .get_or_insert_with(|| "example.org".into());
    config::check_trust_domain(trust_domain)?;
    // Absolute, so warden.toml means the same files whatever directory serve runs from.
    let upstream =
        config::upstream_pair(args.upstream_ca_cert.clone(), args.upstream_ca_key.clone())?
            .map(|(cert, key)| -> Result<_> {
                Ok((
                    std::path::absolute(&cert).with_context(|| format!("{}", cert.display()))?,
                    std::path::absolute(&key).with_context(|| format!("{}", key.display()))?,
                ))
            })
            .transpose()?;
    if let Some((cert, key)) = &upstream {
        // Checked before anything is created: an intermediate is made and verified.
        let td = identity::TrustDomain::parse(trust_domain).map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::identity_keys::check_upstream(&td, cert, key)?;
    }
    for leftover in [LEDGER_KEY_FILE, HMAC_KEY_FILE] {
        if data_dir.join(leftover).exists() {
            bail!(
                "{} holds {leftover} but no {CONFIG_FILE}: an earlier init stopped half-way. \
                 Move the directory aside and run `warden init` again",
                data_dir.display()
            );
        }
    }
    if let TokenOut::File(path) = TokenOut::of(data_dir, args.admin_token_file.as_deref()) {
        // (checked before anything is created; the file is created with create_new below)
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite it",
                path.display()
            );
        }
    }
    let db = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join(config::DB_FILE).display()));
    let url: store::StoreUrl = db
        .parse()
        .map_err(|e: store::StoreError| anyhow::anyhow!("{e}"))?;
    // Reach the store before creating any key, so a wrong URL leaves nothing behind.
    let store = store::open(&url).await?;
    if let Some(td) = store.meta_get("trust_domain").await? {
        bail!(
            "the database at {url} already belongs to an install (trust domain `{td}`); \
             replicas share the first install's data directory keys instead of running init"
        );
    }
    // An operator may provide kek.key ahead of time; only a file made here is undone.
    let kek_provided = data_dir.join(crate::identity_keys::KEK_FILE).exists();
    let signer = keys::create(data_dir, &origin(trust_domain))?;
    let trust_domain = trust_domain.clone();
    let result = finish(
        data_dir,
        &args,
        upstream,
        &trust_domain,
        &url,
        store,
        signer,
    )
    .await;
    if result.is_err() {
        // Leave no half-made install: without warden.toml these keys would block a retry.
        let _ = std::fs::remove_file(data_dir.join(LEDGER_KEY_FILE));
        let _ = std::fs::remove_file(data_dir.join(HMAC_KEY_FILE));
        if !kek_provided {
            let _ = std::fs::remove_file(data_dir.join(crate::identity_keys::KEK_FILE));
        }
    }
    result
}

async fn finish(
    data_dir: &Path,
    args: &InitArgs,
    upstream: Option<(std::path::PathBuf, std::path::PathBuf)>,
    trust_domain: &str,
    url: &store::StoreUrl,
    store: Arc<dyn store::Store>,
    signer: ledger::NoteSigner,
) -> Result<()> {
    let vkey = signer.vkey();
    let (signer, hmac) = keys::load(data_dir)?;
    if !store
        .meta_set_if_absent("trust_domain", trust_domain)
        .await?
    {
        bail!("another init claimed the database at {url} at the same time");
    }
    store.meta_set_if_absent("ledger_vkey", &vkey).await?;

    let token = server::generate_token();
    store
        .token_insert(&store::ApiTokenRow {
            id: token.id.clone(),
            name: "bootstrap".into(),
            role: "admin".into(),
            token_hash: token.hash,
            created_unix_ms: crate::now_ms(),
            revoked_unix_ms: None,
        })
        .await?;

    let ledger = Ledger::open(Arc::clone(&store), signer, hmac, LedgerConfig::default()).await?;
    ledger
        .append(
            NewEvent::new(
                "system:init",
                "install.init",
                Outcome::Success,
                OcsfClass::UserAccessManagement,
            )
            .field("trust_domain", trust_domain.to_owned())
            .field("ledger_key", vkey.clone())
            .field("bootstrap_token_id", token.id.clone()),
        )
        .await?;
    // The trust domain's CA and JWT-SVID key, sealed under the key-encryption key.
    crate::identity_keys::create_kek_file(data_dir)?;
    let td = identity::TrustDomain::parse(trust_domain).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ca = crate::identity_keys::CaSettings {
        upstream: upstream.clone(),
        ..Default::default()
    };
    crate::identity_keys::open_authority(data_dir, &store, &ledger, &td, &ca).await?;
    ledger.checkpoint().await?;

    // Written last: its presence marks a complete init.
    let (upstream_ca_cert, upstream_ca_key) = upstream.unzip();
    let file = FileConfig {
        trust_domain: Some(trust_domain.to_owned()),
        database_url: args.database_url.clone(),
        upstream_ca_cert,
        upstream_ca_key,
        ..FileConfig::default()
    };
    keys::write_secret_file(
        &data_dir.join(CONFIG_FILE),
        toml::to_string(&file)?.as_bytes(),
    )?;

    println!(
        "initialised {} for trust domain `{}`",
        data_dir.display(),
        trust_domain
    );
    println!("store:          {url}");
    println!("ledger key:     {vkey}");
    match TokenOut::of(data_dir, args.admin_token_file.as_deref()) {
        TokenOut::File(path) => {
            keys::write_secret_file(&path, format!("{}\n", token.secret).as_bytes())?;
            println!("admin token:    written to {} (mode 0600)", path.display());
        }
        TokenOut::Stdout => {
            println!("admin token:    {}", token.secret);
            println!("                (shown once; Warden keeps only its hash)");
        }
    }
    Ok(())
}
