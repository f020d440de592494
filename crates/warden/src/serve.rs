//! `warden serve`.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result, bail};
use ledger::{Ledger, LedgerConfig, NewEvent, OcsfClass, Outcome};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use tokio::sync::watch;

use crate::{
    config::{FileConfig, LogFormat, Overrides, Settings},
    keys,
};

pub(crate) fn init_tracing(settings: &Settings) -> Result<()> {
    // The PostgreSQL client logs statement text at debug, and the credentials engine's
    // statements carry SCRAM verifiers: never below info, whatever the filter says.
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .with_context(|| format!("invalid log filter `{}`", settings.log))?
        .add_directive(
            "tokio_postgres=info"
                .parse()
                .context("the tokio_postgres log directive")?,
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(|| QuietStderr);
    let result = match settings.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))
}

/// Standard error for the logger and the server's status lines: a write that fails (the
/// reader closed the pipe, e.g. `warden serve 2>&1 | grep -m1 listening`) is dropped instead
/// of failing — `eprintln!` would panic, and a panic in the task that waits for SIGTERM would
/// leave the server deaf to it.
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Writes one status line to standard error, ignoring write errors (see [`QuietStderr`]).
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(QuietStderr, "{line}");
}

/// The file in the data directory on which `warden serve` and `warden init` hold an
/// exclusive lock while they run; it names the holder (`PID COMMAND`).
pub(crate) const SERVE_LOCK_FILE: &str = "serve.lock";

/// Which command holds a data directory's lock (named to a process it refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// `warden serve` (including the initialisation of a fresh directory on its first start).
    Serve,
    /// `warden init`.
    Init,
}

impl Holder {
    fn as_str(self) -> &'static str {
        match self {
            Holder::Serve => "serve",
            Holder::Init => "init",
        }
    }
}

/// A data directory's exclusive lock, held until dropped. The kernel releases it when the
/// process exits, however it exits, so a leftover lock file never blocks a later start.
pub(crate) struct DataDirLock {
    lock: Flock<File>,
    data_dir: PathBuf,
    made_dir: bool,
    made_file: bool,
}

impl DataDirLock {
    /// Releases the lock and removes what taking it created — the lock file, and the data
    /// directory if it was made for it and is empty again — so a refused or failed command
    /// leaves nothing behind. (The file is unlinked while still locked: a process that opened
    /// it meanwhile finds its lock on an unlinked file and starts over, see [`lock_data_dir`].)
    pub(crate) fn release_and_tidy(self) {
        if self.made_file {
            let _ = std::fs::remove_file(self.data_dir.join(SERVE_LOCK_FILE));
        }
        if self.made_dir {
            // Fails, harmlessly, if anything else is in it by now.
            let _ = std::fs::remove_dir(&self.data_dir);
        }
        drop(self.lock);
    }
}

/// How many times [`lock_data_dir`] starts over when the lock file it locked was replaced or
/// removed under it (another process tidying up after a refusal) before giving up.
const LOCK_ATTEMPTS: u32 = 100;

/// How long a refused process waits for the holder to write its pid into the lock file (the
/// holder writes it right after taking the lock).
const HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Creates the data directory (mode 0700) if it does not exist, takes its exclusive lock
/// (flock(2), non-blocking) and writes this process's pid and `holder` into the lock file.
/// Fails, naming the holder's pid, when another `warden serve` or `warden init` holds it.
///
/// This comes before anything reads or writes the data directory: two first starts on an
/// empty directory must not both initialise it, and a second server would take the first
/// one's Workload API socket over and delete it when it stops.
pub(crate) fn lock_data_dir(data_dir: &Path, holder: Holder) -> Result<DataDirLock> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
    let path = data_dir.join(SERVE_LOCK_FILE);
    for _ in 0..LOCK_ATTEMPTS {
        let made_dir = match std::fs::DirBuilder::new().mode(0o700).create(data_dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(data_dir)
                    .with_context(|| format!("creating {}", data_dir.display()))?;
                true
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", data_dir.display())),
        };
        // Never truncated on open: the holder's pid must survive until the lock is ours.
        let (file, made_file) = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => (file, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                {
                    Ok(file) => (file, false),
                    // Removed between the two opens: start over.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("opening the lock file {}", path.display()));
                    }
                }
            }
            // The directory was removed under us (a refused process tidying up): start over.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("opening the lock file {}", path.display()));
            }
        };
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, Errno::EWOULDBLOCK)) => {
                let (command, pid) = lock_holder(&file);
                bail!(
                    "data directory {} is in use by warden {command} ({pid}); stop it first or \
                     use another --data-dir",
                    data_dir.display()
                )
            }
            Err((_, errno)) => bail!("cannot lock {}: {errno}", path.display()),
        };
        // The lock counts only if it is on the file the path names now: a process that
        // removed the file while holding it leaves us a lock nobody else can see.
        let ours = lock.metadata().ok();
        let named = std::fs::metadata(&path).ok();
        match (ours, named) {
            (Some(a), Some(b)) if a.dev() == b.dev() && a.ino() == b.ino() => {}
            _ => continue,
        }
        let mut file: &File = &lock;
        file.set_len(0)
            .and_then(|()| writeln!(file, "{} {}", std::process::id(), holder.as_str()))
            .with_context(|| format!("writing the lock file {}", path.display()))?;
        return Ok(DataDirLock {
            lock,
            data_dir: data_dir.to_owned(),
            made_dir,
            made_file,
        });
    }
    bail!(
        "cannot lock {}: it kept being replaced; is another process removing it?",
        path.display()
    )
}

/// Who holds a lock file: the command (`serve` when the file does not say) and `pid N` (or
/// `pid unknown`). The holder writes them right after taking the lock, so an empty file is
/// read again for up to [`HOLDER_WAIT`].
fn lock_holder(mut file: &File) -> (&'static str, String) {
    use std::io::{Seek as _, SeekFrom};
    let until = std::time::Instant::now() + HOLDER_WAIT;
    loop {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        let mut words = text.split_whitespace();
        if let (Ok(_), Some(Ok(pid))) = (read, words.next().map(str::parse::<u32>)) {
            let command = match words.next() {
                Some("init") => Holder::Init,
                _ => Holder::Serve,
            };
            return (command.as_str(), format!("pid {pid}"));
        }
        if std::time::Instant::now() >= until {
            return (Holder::Serve.as_str(), "pid unknown".to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `warden serve`: takes the data directory's lock, initialises a fresh directory (first
/// start) or refuses one that holds something else, loads the settings and serves until
/// SIGTERM or SIGINT.
pub(crate) async fn start(data_dir: &Path, overrides: &Overrides) -> Result<()> {
    let lock = lock_data_dir(data_dir, Holder::Serve)?;
    let file = match FileConfig::load(data_dir) {
        Ok(Some(file)) => file,
        Ok(None) if crate::init::is_fresh(data_dir) => {
            // First start on a fresh machine: initialise with defaults, keeping the bootstrap
            // token in a 0600 file in the (0700) data directory.
            if let Err(e) = crate::init::first_start(data_dir, overrides.database_url.clone()).await
            {
                lock.release_and_tidy();
                return Err(e);
            }
            FileConfig::load(data_dir)?
                .ok_or_else(|| anyhow::anyhow!("initialisation left no warden.toml"))?
        }
        Ok(None) => {
            lock.release_and_tidy();
            bail!(
                "{} is not an initialised data directory: run `warden init` first",
                data_dir.display()
            )
        }
        Err(e) => {
            lock.release_and_tidy();
            return Err(e);
        }
    };
    let settings = Settings::resolve(data_dir, file, overrides)?;
    run(settings, lock).await
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    // Stop first, log after: nothing the logger does may keep the server from stopping.
    let what = tokio::select! {
        _ = ctrl_c => "SIGINT",
        _ = term => "SIGTERM",
    };
    let _ = tx.send(true);
    tracing::info!("{what} received, shutting down");
}

/// Binds the Workload API socket: a stale socket file from a previous run is replaced (never
/// another kind of file), and the socket is open to every local user — attestation, not file
/// permissions, decides what a caller gets.
fn bind_workload_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    workload::front::bind(path)
        .with_context(|| format!("binding the workload api socket {}", path.display()))
}

/// Serves with `settings`, holding the data directory's lock until it returns.
async fn run(settings: Settings, _data_dir_lock: DataDirLock) -> Result<()> {
    init_tracing(&settings)?;
    let started = std::time::Instant::now();
    let ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (signer, hmac) = keys::load(&settings.data_dir)?;
    let store = store::open(&settings.database_url)
        .await
        .with_context(|| format!("opening store {}", settings.database_url))?;
    match store.meta_get("trust_domain").await? {
        Some(td) if td == settings.trust_domain => {}
        Some(td) => bail!(
            "the store belongs to trust domain `{td}` but this data directory is for `{}`",
            settings.trust_domain
        ),
        None => bail!(
            "the store at {} was never initialised; each store belongs to one data directory: \
             initialise a new one for it with `warden --data-dir NEW_DIR init --database-url …`",
            settings.database_url
        ),
    }
    let ledger = Ledger::open(
        Arc::clone(&store),
        signer,
        hmac,
        LedgerConfig {
            max_batch: settings.ledger_max_batch,
            ..LedgerConfig::default()
        },
    )
    .await
    .context("opening the audit ledger")?;
    tracing::info!(
        entries = ledger.size(),
        since_start_ms = ms(),
        "start-up: ledger opened"
    );

    // Identity keys: created by `init` (or here, for a data directory made before they
    // existed), sealed under the key-encryption key.
    let trust_domain = identity::TrustDomain::parse(&settings.trust_domain)
        .map_err(|e| anyhow::anyhow!("warden.toml: {e}"))?;
    if !crate::identity_keys::exist(&store).await? {
        crate::identity_keys::create_kek_file(&settings.data_dir)?;
    }
    let authority = Arc::new(
        crate::identity_keys::open_authority(
            &settings.data_dir,
            &store,
            &ledger,
            &trust_domain,
            &settings.ca,
        )
        .await?,
    );

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let local = listener.local_addr()?;
    ledger
        .append(
            NewEvent::new(
                "system:server",
                "server.start",
                Outcome::Success,
                OcsfClass::ApiActivity,
            )
            .field("version", env!("CARGO_PKG_VERSION"))
            .field("listen", local.to_string())
            .field("store", store.backend().to_string()),
        )
        .await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let checkpointer = ledger.spawn_checkpointer(settings.checkpoint_interval, stop_rx.clone());
    // The denylist, shared by the TLS verifier, the Workload API and the HTTP API: read in
    // full once the server state exists (before anything is served), then followed every
    // second from the store's change feed so other replicas' changes arrive.
    let denylist = Arc::new(identity::deny::Denylist::new());
    // HTTPS, optionally mutual: agents may present their X.509-SVID instead of a token.
    let tls = match &settings.tls {
        Some((cert, key)) => Some(Arc::new(keys::load_tls(cert, key, |provider| {
            Arc::new(server::mtls::SvidClientVerifier::new(
                authority.keyring(),
                Arc::clone(&denylist),
                provider,
            ))
        })?)),
        None => None,
    };
    // Keys and federated bundles: followed through the change feed every second (rotation by
    // another replica or an operator), rotated on schedule, federated bundles refreshed when
    // due.
    let authority_task = {
        let (authority, mut stop) = (Arc::clone(&authority), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                authority.tick().await;
            }
        })
    };
    let issuer = settings.public_url.clone().unwrap_or_else(|| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{local}")
    });
    let state = Arc::new(
        server::AppState::new(
            Arc::clone(&store),
            ledger.clone(),
            Arc::clone(&authority),
            Arc::clone(&denylist),
        )
        .with_issuer(issuer.clone())
        .with_broker(settings.broker.clone())
        .with_limits(settings.limits.clone()),
    );
    state
        .refresh_denylist()
        .await
        .context("loading the denylist")?;
    let workload = workload::api::WorkloadApi::new(
        trust_domain.clone(),
        Arc::clone(&store),
        ledger.clone(),
        authority.keyring(),
        Arc::clone(&denylist),
        stop_rx.clone(),
    )
    .with_registry(state.registry())
    .with_issuer(issuer)
    .with_call_limit(workload::api::CallLimit {
        per_sec: settings.limits.workload_calls_per_uid.per_sec,
        burst: settings.limits.workload_calls_per_uid.burst,
    });
    let workload_listener = bind_workload_socket(&settings.workload_socket)?;
    let workload_task = tokio::spawn(workload::api::serve(workload, workload_listener));
    say(format_args!(
        "workload api on unix://{}",
        settings.workload_socket.display()
    ));
    // Policy packages, registration entries, holds, tasks, risk scores and relationship
    // stores: loaded now, then brought up to the store's change feed every second (the feed's
    // old rows and expired relationship tuples purged every minute).
    tracing::info!(
        since_start_ms = ms(),
        "start-up: keys and workload api ready"
    );
    state
        .load()
        .await
        .context("loading the policy packages and relationship stores")?;
    state
        .sweep_leases()
        .await
        .context("loading lease revocations")?;
    tracing::info!(since_start_ms = ms(), "start-up: done");
    let refresher = {
        let (state, mut stop) = (Arc::clone(&state), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if let Err(e) = state.refresh_denylist().await {
                    tracing::error!(error = %e, "cannot refresh the denylist; keeping the last one");
                }
            }
        })
    };
    let policy_task = {
        let (state, mut stop) = (Arc::clone(&state), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut ticks: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if let Err(e) = state.refresh_policies().await {
                    tracing::error!(error = %e, "cannot refresh the policy packages; keeping the last ones");
                }
                ticks += 1;
                if ticks % 60 == 0 {
                    if let Err(e) = state.prune_changes().await {
                        tracing::error!(error = %e, "cannot prune the change feed");
                    }
                    match state.purge_expired_relations().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(tuples = n, "expired relationship tuples purged"),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot purge expired relationship tuples")
                        }
                    }
                }
            }
        })
    };
    // Leases and tasks, in their own task (an unreachable database must not hold up policy
    // refresh): expire what is due, undo revocations upstream, follow other replicas'
    // revocations; end tasks at their deadline and clean up ended ones.
    let lease_task = {
        let (state, mut stop) = (Arc::clone(&state), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if let Err(e) = state.sweep_leases().await {
                    tracing::error!(error = %e, "lease sweep failed; retrying next second");
                }
                // Tasks: deadlines, clean-up of ended tasks, timed-out grant requests.
                if let Err(e) = state.sweep_tasks().await {
                    tracing::error!(error = %e.body().message, "task sweep failed; retrying next second");
                }
            }
        })
    };
    let router = server::router(
        state,
        &server::ServerConfig {
            body_limit: settings.body_limit,
            request_timeout: settings.request_timeout,
        },
    );
    tracing::info!(
        listen = %local,
        store = %settings.database_url,
        trust_domain = %settings.trust_domain,
        ledger_size = ledger.size(),
        "warden serving"
    );
    if tls.is_none() && !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "serving plain HTTP on a non-loopback address: tokens cross the network in clear; set tls_cert and tls_key");
    }
    tokio::spawn(shutdown_signal(stop_tx.clone()));
    let mut stop_wait = stop_rx.clone();
    let shutdown = async move {
        let _ = stop_wait.wait_for(|s| *s).await;
    };
    match tls {
        Some(config) => {
            say(format_args!("warden listening on https://{local}"));
            server::serve(
                server::TlsListener::new(listener, config)?,
                router,
                shutdown,
                server::ConnLimits::default(),
            )
            .await
        }
        None => {
            say(format_args!("warden listening on http://{local}"));
            server::serve(listener, router, shutdown, server::ConnLimits::default()).await
        }
    }
    .context("serving")?;
    // Also stops the checkpointer and the Workload API if serving ended for another reason.
    let _ = stop_tx.send(true);
    match workload_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "workload api stopped with an error"),
        Err(e) => tracing::error!(error = %e, "workload api task failed"),
    }
    let _ = std::fs::remove_file(&settings.workload_socket);
    let _ = refresher.await;
    let _ = authority_task.await;
    let _ = policy_task.await;
    let _ = lease_task.await;
    let _ = checkpointer.await;
    ledger
        .append(NewEvent::new(
            "system:server",
            "server.stop",
            Outcome::Success,
            OcsfClass::ApiActivity,
        ))
        .await?;
    let cp = ledger.checkpoint().await?;
    tracing::info!(tree_size = cp.size, "final checkpoint signed; stopped");
    Ok(())
}
