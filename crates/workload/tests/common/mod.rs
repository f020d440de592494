//! A Workload API served on a Unix socket in a temporary directory, over a fresh SQLite store,
//! ledger and keyring, for the tests of this crate.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test binary uses a different part of the harness"
)]

use std::{path::PathBuf, sync::Arc};

use identity::{TrustDomain, ca::Ca, jwt::JwtSigner, trust::Keyring};
use ledger::{Ledger, LedgerConfig, NoteSigner};
use tokio::{sync::watch, task::JoinHandle};
use workload::{api::WorkloadApi, front::Limits};
use zeroize::Zeroizing;

/// A running Workload API.
pub(crate) struct Running {
    /// Holds the socket and the database.
    pub(crate) dir: tempfile::TempDir,
    /// The socket's path.
    pub(crate) sock: PathBuf,
    /// The trust domain's CA.
    pub(crate) ca: Arc<Ca>,
    /// The JWT signer.
    pub(crate) jwt: Arc<JwtSigner>,
    /// The keyring the API issues from.
    pub(crate) keyring: Arc<Keyring>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// Serves a Workload API for `example.org` with no registration entries.
    pub(crate) async fn start(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn store::Store> = Arc::new(
            store::SqliteStore::open(&dir.path().join("w.db"))
                .await
                .unwrap(),
        );
        let ledger = Ledger::open(
            Arc::clone(&store),
            NoteSigner::generate("t.example/ledger").unwrap(),
            Zeroizing::new([1; 32]),
            LedgerConfig::default(),
        )
        .await
        .unwrap();
        let td = TrustDomain::parse("example.org").unwrap();
        let ca = Arc::new(
            Ca::generate_root(
                &td,
                time::Duration::days(1),
                time::OffsetDateTime::now_utc(),
            )
            .unwrap(),
        );
        let jwt = Arc::new(JwtSigner::generate().unwrap());
        let keyring = Arc::new(Keyring::new(identity::trust::Trust::single(
            Arc::clone(&ca),
            Arc::clone(&jwt),
        )));
        let (stop, stop_rx) = watch::channel(false);
        let api = WorkloadApi::new(
            td,
            store,
            ledger,
            Arc::clone(&keyring),
            Arc::new(identity::deny::Denylist::new()),
            stop_rx,
        );
        let sock = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(workload::api::serve_with(api, listener, limits));
        Self {
            dir,
            sock,
            ca,
            jwt,
            keyring,
            stop,
            server,
        }
    }

    /// Stops the server and checks it ended cleanly.
    pub(crate) async fn stop(self) {
        self.stop.send(true).unwrap();
        self.server.await.unwrap().unwrap();
    }
}
