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
    /// The store the API reads registration entries from.
    pub(crate) store: Arc<dyn store::Store>,
    /// The denylist the API consults (holds and deny entries).
    pub(crate) denylist: Arc<identity::deny::Denylist>,
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
        let denylist = Arc::new(identity::deny::Denylist::new());
        let api = WorkloadApi::new(
            td,
            Arc::clone(&store),
            ledger,
            Arc::clone(&keyring),
            Arc::clone(&denylist),
            stop_rx,
        );
        let sock = dir.path().join("api.sock");
        let listener = workload::front::bind(&sock).unwrap();
        let server = tokio::spawn(workload::api::serve_with(api, listener, limits));
        Self {
            dir,
            sock,
            ca,
            jwt,
            keyring,
            store,
            denylist,
            stop,
            server,
        }
    }

    /// Registers `spiffe_id` for processes of this uid running `exe`.
    pub(crate) async fn register(&self, spiffe_id: &str, exe: &std::path::Path) {
        let uid = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        let mut selectors = [
            format!("unix:path:{}", exe.display()),
            format!("unix:uid:{}", uid.unwrap()),
        ];
        selectors.sort();
        self.store
            .entry_insert(&store::EntryRow {
                id: format!("ent_{}", spiffe_id.rsplit('/').next().unwrap()),
                spiffe_id: spiffe_id.to_owned(),
                selectors: selectors.join("\n"),
                x509_ttl_secs: None,
                jwt_ttl_secs: None,
                agent_kind: None,
                owner: None,
                description: None,
                created_unix_ms: 0,
            })
            .await
            .unwrap();
    }

    /// Stops the server and checks it ended cleanly.
    pub(crate) async fn stop(self) {
        self.stop.send(true).unwrap();
        self.server.await.unwrap().unwrap();
    }
}
