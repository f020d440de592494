//! SVID issuance and validation, on one core except `jwt_svid_validate_2threads` (both cores,
//! wall time per validation).
//!
//! `cargo bench -p identity --bench svid` (targets: JWT-SVID mint ≥ 20,000/s, validate
//! ≥ 30,000/s; X.509-SVID issue, key generation included, ≥ 2,000/s).

#![allow(missing_docs, clippy::unwrap_used, reason = "benchmark harness")]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use identity::{
    SpiffeId, TrustDomain,
    ca::Ca,
    jwt::{JwtBundle, JwtSigner, JwtSvidClaims, Validator, validate},
};

fn jwt(c: &mut Criterion) {
    let signer = JwtSigner::generate().unwrap();
    let bundle = JwtBundle::new(
        TrustDomain::parse("example.org").unwrap(),
        [signer.public_key()],
    );
    let now = 1_764_457_200;
    let claims = JwtSvidClaims {
        sub: SpiffeId::parse("spiffe://example.org/agent/coder").unwrap(),
        aud: vec!["warden".into()],
        exp: now + 300,
        iat: now,
        jti: "0123456789abcdef".into(),
        act: None,
        iss: None,
    };
    let token = signer.mint(&claims).unwrap();
    c.bench_function("jwt_svid_mint", |b| {
        b.iter(|| signer.mint(black_box(&claims)).unwrap())
    });
    c.bench_function("jwt_svid_validate", |b| {
        b.iter(|| validate(black_box(&token), "warden", now, 30, |_| Some(&bundle)).unwrap())
    });
    let validator = Validator::new();
    c.bench_function("jwt_svid_validate_cached", |b| {
        b.iter(|| {
            validator
                .validate(black_box(&token), "warden", now, 30, |_| Some(&bundle))
                .unwrap()
        })
    });
    // First-sight validation on both cores: two threads each validate half of the iterations
    // and the time is the wall time of all of them, so the figure is the time per validation
    // (1/time = validations per second) when two cores share the work.
    let (token, bundle) = (&token, &bundle);
    c.bench_function("jwt_svid_validate_2threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for share in [iters / 2, iters - iters / 2] {
                    s.spawn(move || {
                        for _ in 0..share {
                            validate(black_box(token), "warden", now, 30, |_| Some(bundle))
                                .unwrap();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    let ca = Ca::generate_root(
        &TrustDomain::parse("example.org").unwrap(),
        time::Duration::days(365),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let id = SpiffeId::parse("spiffe://example.org/agent/coder").unwrap();
    c.bench_function("x509_svid_issue", |b| {
        b.iter(|| {
            ca.issue_x509_svid(
                black_box(&id),
                time::Duration::hours(1),
                time::OffsetDateTime::now_utc(),
            )
            .unwrap()
        })
    });
    c.bench_function("spiffe_id_parse", |b| {
        b.iter(|| SpiffeId::parse(black_box("spiffe://example.org/agent/coder")).unwrap())
    });
}

fn x509_svid_verify(c: &mut Criterion) {
    let td = TrustDomain::parse("example.org").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let ca = Ca::generate_root(&td, time::Duration::days(365), now).unwrap();
    let id = SpiffeId::parse("spiffe://example.org/agent/coder").unwrap();
    let svid = ca
        .issue_x509_svid(&id, time::Duration::hours(1), now)
        .unwrap();
    let chain = vec![svid.cert_der];
    let bundle = vec![ca.cert_der().to_vec()];
    c.bench_function("x509_svid_verify", |b| {
        b.iter(|| {
            identity::x509::verify_x509_svid(black_box(&chain), now, |t| {
                (t == &td).then_some(bundle.as_slice())
            })
            .unwrap()
        })
    });
}

criterion_group!(benches, jwt, x509_svid_verify);
criterion_main!(benches);
