//! Workload API behaviour a library client does not show: a call without the
//! `workload.spiffe.io: true` security header is refused with InvalidArgument, and a JWT-SVID
//! request without an audience likewise; the bundle streams push a new message when the
//! keyring changes (rotation, federation); a caller whose identity is on hold or denied is
//! told so.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::sync::Arc;

use identity::{TrustDomain, ca::Ca, jwt::JwtSigner};
use tonic::{Code, Request};
use workload::api::proto::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
    spiffe_workload_api_client::SpiffeWorkloadApiClient,
};

mod common;

/// A client of the Workload API at `sock`.
async fn client(sock: std::path::PathBuf) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

fn with_header<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    req
}

/// A caller whose identity is on hold, or named by a deny entry, is told that about its own
/// identity — not the bare "no identity issued" of a caller nothing is registered for — and
/// gets it again once the hold is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_or_denied_caller_is_told_why() {
    let running = common::Running::start(workload::front::Limits::for_this_process()).await;
    let me = std::fs::canonicalize("/proc/self/exe").unwrap();
    let held = "spiffe://example.org/agent/held";
    let denied = "spiffe://example.org/agent/denied";
    running.register(held, &me).await;
    running.register(denied, &me).await;
    running.denylist.hold([held.to_owned()]);
    running
        .denylist
        .insert(identity::deny::DenyKind::SpiffeId, denied.to_owned());
    let mut client = client(running.sock.clone()).await;
    let jwt = |spiffe_id: &str| {
        with_header(JwtsvidRequest {
            audience: vec!["svc".into()],
            spiffe_id: spiffe_id.to_owned(),
        })
    };
    // Each refusal starts with SPIRE's "no identity issued", which SPIFFE client libraries
    // recognise (rust-spiffe's NoIdentityIssued), then says why.
    let held_says = format!(
        "identity `{held}` is on hold: no SVID is issued for it until the hold is released"
    );
    let denied_says = format!(
        "identity `{denied}` is denied: no SVID is issued for it while the deny entry stands"
    );

    // Every identity it matches is barred: each is named with its reason.
    let err = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().starts_with("no identity issued: "), "{err:?}");
    assert!(err.message().contains(&held_says), "{err:?}");
    assert!(err.message().contains(&denied_says), "{err:?}");
    let err = client.fetch_jwtsvid(jwt("")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains(&held_says), "{err:?}");

    // Asked for one identity by name: that one's reason, and no word of the other.
    let err = client.fetch_jwtsvid(jwt(held)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        format!("no identity issued: {held_says}"),
        "{err:?}"
    );
    let err = client.fetch_jwtsvid(jwt(denied)).await.unwrap_err();
    assert_eq!(
        err.message(),
        format!("no identity issued: {denied_says}"),
        "{err:?}"
    );
    // An identity it was never registered for is not one it may hear about.
    let err = client
        .fetch_jwtsvid(jwt("spiffe://example.org/agent/other"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "no identity `spiffe://example.org/agent/other` issued to this caller"
    );

    // The hold released: that identity is issued again, the denied one still is not.
    running.denylist.replace_held([]);
    let svids = client
        .fetch_jwtsvid(jwt(""))
        .await
        .unwrap()
        .into_inner()
        .svids;
    let ids: Vec<&str> = svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [held]);
    let err = client.fetch_jwtsvid(jwt(denied)).await.unwrap_err();
    assert_eq!(
        err.message(),
        format!("no identity issued: {denied_says}"),
        "{err:?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_bundle_pushes() {
    let running = common::Running::start(workload::front::Limits::for_this_process()).await;
    let (ca, jwt, keyring) = (
        Arc::clone(&running.ca),
        Arc::clone(&running.jwt),
        Arc::clone(&running.keyring),
    );
    let sock = running.sock.clone();
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

    // The bundle streams: the current bundles at once, then again whenever the keyring
    // changes — here a federated trust domain arrives.
    fn with_header<T>(msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        req
    }
    let mut jwt_stream = client
        .fetch_jwt_bundles(with_header(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut x509_stream = client
        .fetch_x509_bundles(with_header(X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = jwt_stream.message().await.unwrap().unwrap();
    assert_eq!(first.bundles.len(), 1);
    assert!(first.bundles.contains_key("spiffe://example.org"));
    let first = x509_stream.message().await.unwrap().unwrap();
    assert_eq!(
        first.bundles.get("spiffe://example.org").unwrap(),
        ca.cert_der()
    );
    let partner_ca = Ca::generate_root(
        &TrustDomain::parse("partner.test").unwrap(),
        time::Duration::days(1),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let partner = identity::trust::TrustBundle::new(
        TrustDomain::parse("partner.test").unwrap(),
        vec![partner_ca.cert_der().to_vec()],
        [JwtSigner::generate().unwrap().public_key()],
    );
    let own = keyring.current().own().clone();
    keyring.replace(identity::trust::Trust::new(ca, jwt, own, [partner]));
    let pushed = tokio::time::timeout(std::time::Duration::from_secs(10), jwt_stream.message())
        .await
        .expect("a JWT bundle update is pushed")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.bundles.len(), 2);
    let jwks: serde_json::Value =
        serde_json::from_slice(pushed.bundles.get("spiffe://partner.test").unwrap()).unwrap();
    assert_eq!(jwks["keys"][0]["use"], "jwt-svid");
    let pushed = tokio::time::timeout(std::time::Duration::from_secs(10), x509_stream.message())
        .await
        .expect("an X.509 bundle update is pushed")
        .unwrap()
        .unwrap();
    assert_eq!(
        pushed.bundles.get("spiffe://partner.test").unwrap(),
        partner_ca.cert_der()
    );

    // A partner's JWT-SVIDs are held to its federation's limits here too: the token,
    // valid for 30,000 years, is refused; one of an ordinary lifetime validates.
    let partner_jwt = JwtSigner::generate().unwrap();
    let partner = identity::trust::TrustBundle::new(
        TrustDomain::parse("partner.test").unwrap(),
        Vec::new(),
        [partner_jwt.public_key()],
    );
    let own = keyring.current().own().clone();
    keyring.replace(identity::trust::Trust::new(
        Arc::clone(&running.ca),
        Arc::clone(&running.jwt),
        own,
        [partner],
    ));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = |exp: i64| {
        partner_jwt
            .mint(&identity::jwt::JwtSvidClaims {
                sub: identity::SpiffeId::parse("spiffe://partner.test/agent/x").unwrap(),
                aud: vec!["svc".into()],
                exp,
                iat: now,
                jti: format!("j-{exp}"),
                act: None,
                iss: None,
            })
            .unwrap()
    };
    let err = client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "svc".into(),
            svid: token(now + 30_000 * 365 * 86_400),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 3600 s"), "{err:?}");
    let ok = client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "svc".into(),
            svid: token(now + 600),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.spiffe_id, "spiffe://partner.test/agent/x");

    running.stop().await;
}
