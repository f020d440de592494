//! SVID issuance and validation on one core.
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

criterion_group!(benches, jwt);
criterion_main!(benches);
