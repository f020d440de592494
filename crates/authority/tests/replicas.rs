//! The authority over a real store: scheduled rotation on a CA with a short life, replicas
//! rotating at the same moment without forking the keys, and a replica picking up another's
//! rotation on refresh.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::{sync::Arc, time::Duration};

use authority::{Authority, AuthorityConfig, RotateStep};
use identity::{TrustDomain, seal::Kek};
use ledger::{Ledger, LedgerConfig, NoteSigner, Outcome};
use zeroize::Zeroizing;

struct Replica {
    authority: Authority,
    ledger: Ledger,
}

async fn replica(store: &Arc<dyn store::Store>, skey: &str, config: AuthorityConfig) -> Replica {
    let ledger = Ledger::open(
        Arc::clone(store),
        NoteSigner::from_skey(skey).unwrap(),
        Zeroizing::new([3; 32]),
        LedgerConfig::default(),
    )
    .await
    .unwrap();
    let authority = Authority::open(
        TrustDomain::parse("example.org").unwrap(),
        Arc::clone(store),
        ledger.clone(),
        Kek::from_bytes(&[9; 32]).unwrap(),
        config,
    )
    .await
    .unwrap();
    Replica { authority, ledger }
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn store::Store> {
    Arc::new(
        store::SqliteStore::open(&dir.path().join("a.db"))
            .await
            .unwrap(),
    )
}

fn states(keys: &[authority::KeyInfo], kind: &str) -> Vec<String> {
    keys.iter()
        .filter(|k| k.kind == kind)
        .map(|k| k.state.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_prepares_at_half_life_and_activates_at_two_thirds() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let skey = NoteSigner::generate("t.example/ledger").unwrap().to_skey();
    let r = replica(
        &store,
        &skey,
        AuthorityConfig {
            upstream: None,
            ca_validity: Some(time::Duration::seconds(6)),
            auto_rotate: true,
        },
    )
    .await;
    let keyring = r.authority.keyring();
    let first_ca = keyring.current().ca.cert_der().to_vec();
    let mut changes = keyring.watch();
    changes.borrow_and_update();
    let mut seen = Vec::new();
    // Deadline, not a timing assertion: the order of states is what is checked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        r.authority.tick().await;
        let keys = r.authority.keys().await.unwrap();
        let now = states(&keys, "x509-ca");
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now.contains(&"retired".to_owned()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        vec![
            vec!["active".to_owned()],
            vec!["active".to_owned(), "prepared".to_owned()],
            vec!["retired".to_owned(), "active".to_owned()],
        ]
    );
    // The keyring followed, and its watchers were told.
    assert!(changes.has_changed().unwrap());
    assert_ne!(keyring.current().ca.cert_der(), first_ca.as_slice());
    assert_eq!(keyring.current().own().x509_authorities().len(), 2);
    let entries = r.ledger.entries(0, 100).await.unwrap();
    let by_rotation: Vec<&str> = entries
        .iter()
        .filter(|e| e.event.actor == "system:rotation")
        .map(|e| e.event.action.as_str())
        .collect();
    assert_eq!(
        by_rotation,
        [
            "signing_key.prepare",
            "signing_key.prepare",
            "signing_key.prepare",
            "signing_key.activate",
            "signing_key.activate",
            "signing_key.activate"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_rotating_at_once_agree_on_one_key_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let skey = NoteSigner::generate("t.example/ledger").unwrap().to_skey();
    let a = replica(&store, &skey, AuthorityConfig::default()).await;
    let b = replica(&store, &skey, AuthorityConfig::default()).await;
    // Both opened the same store: the second found the first's keys.
    assert_eq!(
        a.authority.keyring().current().ca.cert_der(),
        b.authority.keyring().current().ca.cert_der()
    );

    for round in 0..5 {
        let (ra, rb) = tokio::join!(
            a.authority.rotate("token:a", RotateStep::Next),
            b.authority.rotate("token:b", RotateStep::Next)
        );
        // At most one prepared and one active key per kind, whatever the interleaving.
        let keys = a.authority.keys().await.unwrap();
        for kind in ["x509-ca", "jwt", "access-token"] {
            let s = states(&keys, kind);
            assert_eq!(
                s.iter().filter(|x| *x == "active").count(),
                1,
                "{round}: {s:?}"
            );
            assert!(
                s.iter().filter(|x| *x == "prepared").count() <= 1,
                "{round}: {s:?}"
            );
        }
        // A refused step is a conflict, never a silent success.
        for r in [&ra, &rb] {
            if let Err(e) = r {
                assert_eq!(e.code(), "conflict", "{round}: {e}");
            }
        }
        a.authority.refresh().await.unwrap();
        b.authority.refresh().await.unwrap();
        assert_eq!(
            a.authority.keyring().current().own(),
            b.authority.keyring().current().own(),
            "{round}: replicas publish the same bundle"
        );
        assert_eq!(
            a.authority.keyring().current().ca.cert_der(),
            b.authority.keyring().current().ca.cert_der(),
            "{round}: replicas sign with the same CA"
        );
    }

    // Every key change that was recorded and did not happen is followed by its correction:
    // for each kind, successful prepares equal the keys that exist minus the first one.
    a.ledger.refresh().await.unwrap();
    let entries = a.ledger.entries(0, 1000).await.unwrap();
    let keys = a.authority.keys().await.unwrap();
    for kind in ["x509-ca", "jwt", "access-token"] {
        let prepared_ok = entries
            .iter()
            .filter(|e| e.event.action == "signing_key.prepare" && e.event.fields["kind"] == kind)
            .count()
            - entries
                .iter()
                .filter(|e| {
                    e.event.action == "signing_key.prepare"
                        && e.event.fields["kind"] == kind
                        && e.event.outcome == Outcome::Failure
                })
                .count()
                * 2;
        let stored = keys.iter().filter(|k| k.kind == kind).count() - 1;
        assert_eq!(prepared_ok, stored, "{kind}");
    }
}
