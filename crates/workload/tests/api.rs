//! Workload API refusals a library client never shows: a call without the
//! `workload.spiffe.io: true` security header is refused with InvalidArgument, and a JWT-SVID
//! request without an audience likewise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::sync::Arc;

use identity::{TrustDomain, ca::Ca, jwt::JwtSigner};
use ledger::{Ledger, LedgerConfig, NoteSigner};
use tonic::{Code, Request};
use workload::api::{
    WorkloadApi,
    proto::{JwtsvidRequest, X509svidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient},
};
use zeroize::Zeroizing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_audience_are_required() {
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
    let ca = Ca::generate_root(
        &td,
        time::Duration::days(1),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api = WorkloadApi::new(
        td,
        store,
        ledger,
        Arc::new(ca),
        Arc::new(JwtSigner::generate().unwrap()),
        Arc::new(identity::deny::Denylist::new()),
        stop_rx,
    );
    let sock = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(workload::api::serve(api, listener));

    let path = sock.clone();
    let channel = tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut client = SpiffeWorkloadApiClient::new(channel);

    // No security header.
    let err = client.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("security header"), "{err:?}");
    let mut wrong = Request::new(X509svidRequest {});
    wrong
        .metadata_mut()
        .insert("workload.spiffe.io", "yes".parse().unwrap());
    assert_eq!(
        client.fetch_x509svid(wrong).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // With the header but no audience.
    let mut req = Request::new(JwtsvidRequest {
        audience: vec![],
        spiffe_id: String::new(),
    });
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let err = client.fetch_jwtsvid(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("audience"), "{err:?}");

    // With the header, attested, but not registered.
    let mut req = Request::new(X509svidRequest {});
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let err = client.fetch_x509svid(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}
