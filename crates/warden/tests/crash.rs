//! Durability under `kill -9`: while many clients stream authenticated calls, `warden serve`
//! is killed with SIGKILL. After a restart every acknowledged call (a 2xx response carrying
//! `warden-audit-seq`) must be in the ledger at that index with that request id, and the log
//! must verify offline. Done twice in a row, on SQLite and (when `WARDEN_TEST_DATABASE_URL` is
//! set) on PostgreSQL in a schema of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{
    collections::HashMap,
    os::unix::process::ExitStatusExt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Install, PgSchema, Server, check_leaves, export_and_verify, hash_of, wait_until};
use store::Store;

/// Concurrent clients.
const CLIENTS: usize = 16;
/// Most requests sent per round (all clients together).
const MAX_REQUESTS: u64 = 4000;
/// Longest a round's traffic may last.
const ROUND_TIME: Duration = Duration::from_secs(10);
/// Acknowledged calls to wait for before the kill, per round (different points each time).
const ACKS_BEFORE_KILL: [usize; 2] = [300, 700];
/// Kill, restart, check: this many times.
const ROUNDS: u32 = ACKS_BEFORE_KILL.len() as u32;

/// An acknowledged call: the ledger index the server reported, and our request id.
type Ack = (u64, String);

/// What one round acknowledged: calls, and checkpoints published on demand (size, root).
#[derive(Default)]
struct Acked {
    calls: Vec<Ack>,
    checkpoints: Vec<(u64, merkle::Hash)>,
}

/// Streams `GET /v1/whoami` from [`CLIENTS`] tasks, and publishes checkpoints from one more,
/// and SIGKILLs the server once enough calls were acknowledged. Returns every
/// acknowledgement.
async fn stream_and_kill(server: &mut Server, token: &str, round: u32) -> Acked {
    let kill_after = ACKS_BEFORE_KILL[round as usize - 1];
    let (acked, status) = stream_and_signal(server, token, round, kill_after, "KILL").await;
    assert_eq!(status.signal(), Some(9), "round {round}: {status}");
    acked
}

/// Like [`stream_and_kill`], with any signal; returns how the server exited.
async fn stream_and_signal(
    server: &mut Server,
    token: &str,
    round: u32,
    kill_after: usize,
    signal: &str,
) -> (Acked, std::process::ExitStatus) {
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::new(Mutex::new(Vec::new()));
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + ROUND_TIME;
    let http = common::http_client();
    let url = server.at("/v1/whoami");
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (acks, unexpected, sent, failed) = (
            Arc::clone(&acks),
            Arc::clone(&unexpected),
            Arc::clone(&sent),
            Arc::clone(&failed),
        );
        let (http, url, token) = (http.clone(), url.clone(), token.to_owned());
        clients.spawn(async move {
            for n in 0.. {
                if Instant::now() >= stop_at || sent.fetch_add(1, Ordering::SeqCst) >= MAX_REQUESTS
                {
                    return;
                }
                let rid = format!("crash-r{round}-c{client}-n{n}");
                let resp = http
                    .get(&url)
                    .bearer_auth(&token)
                    .header("x-request-id", &rid)
                    .send()
                    .await;
                match resp {
                    Ok(resp) if resp.status().is_success() => {
                        let seq = resp
                            .headers()
                            .get("warden-audit-seq")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        match seq {
                            Some(seq) => acks.lock().unwrap().push((seq, rid)),
                            None => unexpected
                                .lock()
                                .unwrap()
                                .push(format!("{rid}: 2xx without warden-audit-seq")),
                        }
                    }
                    Ok(resp) => unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{rid}: {}", resp.status())),
                    Err(_) => {
                        // The server is gone (or the connection broke): stop this client.
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
    }

    // Checkpoints signed on demand during the stream: acknowledged ones must survive too.
    let checkpoints: Arc<Mutex<Vec<(u64, merkle::Hash)>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let (checkpoints, unexpected) = (Arc::clone(&checkpoints), Arc::clone(&unexpected));
        let (http, url, token) = (
            http.clone(),
            server.at("/v1/audit/checkpoint"),
            token.to_owned(),
        );
        let verifier =
            ledger::NoteVerifier::from_vkey(&server.get_text("/v1/audit/key").await).unwrap();
        clients.spawn(async move {
            while Instant::now() < stop_at {
                let Ok(resp) = http.post(&url).bearer_auth(&token).send().await else {
                    return;
                };
                if !resp.status().is_success() {
                    unexpected
                        .lock()
                        .unwrap()
                        .push(format!("publish: {}", resp.status()));
                    return;
                }
                let Ok(body) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                let note = body["note"].as_str().unwrap_or_default();
                let cp = ledger::Checkpoint::parse(verifier.verify(note).unwrap()).unwrap();
                checkpoints.lock().unwrap().push((cp.size, cp.root));
                // Pacing only (not synchronisation): a checkpoint every few dozen appends.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    let enough = {
        let acks = Arc::clone(&acks);
        wait_until(ROUND_TIME, move || acks.lock().unwrap().len() >= kill_after).await
    };
    assert!(
        enough,
        "round {round}: only {} acknowledgements within {ROUND_TIME:?} ({} unexpected answers)",
        acks.lock().unwrap().len(),
        unexpected.lock().unwrap().len()
    );
    server.signal(signal).await;
    let status = server.wait_exit(common::STOP_DEADLINE).await;

    // The clients see connection errors and stop (bounded by MAX_REQUESTS and ROUND_TIME too).
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(joined) = clients.join_next().await {
            joined.expect("client task");
        }
    })
    .await;
    assert!(drained.is_ok(), "round {round}: clients did not stop");
    let unexpected = unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "round {round}: {unexpected:?}");
    assert!(
        failed.load(Ordering::SeqCst) > 0,
        "round {round}: no request was cut off: the signal did not land mid-stream"
    );
    let calls = acks.lock().unwrap().clone();
    let checkpoints = checkpoints.lock().unwrap().clone();
    eprintln!(
        "round {round}: {} calls and {} checkpoints acknowledged, {} requests sent, SIG{signal} \
         mid-stream",
        calls.len(),
        checkpoints.len(),
        sent.load(Ordering::SeqCst).min(MAX_REQUESTS)
    );
    (Acked { calls, checkpoints }, status)
}

/// Checks that every acknowledged call is in the ledger, at its index, with its request id,
/// and that the ledger's leaves and hashes agree. Returns the entries.
async fn check_acks(server: &Server, token: &str, acks: &[Ack]) -> Vec<serde_json::Value> {
    let entries = server.all_entries(token).await;
    check_leaves(&entries);
    let mut by_seq: HashMap<u64, &str> = HashMap::new();
    for (seq, rid) in acks {
        if let Some(other) = by_seq.insert(*seq, rid) {
            panic!("index {seq} was acknowledged to both {other} and {rid}");
        }
        let entry = entries
            .get(usize::try_from(*seq).unwrap())
            .unwrap_or_else(|| {
                panic!(
                    "acknowledged entry {seq} ({rid}) is missing: the log has {} entries",
                    entries.len()
                )
            });
        let event = &entry["event"];
        assert_eq!(
            event["fields"]["request_id"],
            rid.as_str(),
            "entry {seq}: {event}"
        );
        assert_eq!(event["action"], "api.request", "entry {seq}: {event}");
        assert_eq!(
            event["fields"]["path"], "/v1/whoami",
            "entry {seq}: {event}"
        );
        assert_eq!(event["fields"]["status"], 200, "entry {seq}: {event}");
        assert_eq!(event["outcome"], "success", "entry {seq}: {event}");
    }
    entries
}

/// The whole scenario on one install. Returns the server, still running.
async fn crash_twice(install: &Install) -> Server {
    let token = install.admin_token();
    // Scheduled checkpoints every second, so the restarts check the rebuilt log against a
    // checkpoint signed during the stream.
    let serve_args = ["--checkpoint-interval", "1"];
    let mut server = install.serve_with(&serve_args).await;
    let mut all_acks: Vec<Ack> = Vec::new();
    for round in 1..=ROUNDS {
        let acked = stream_and_kill(&mut server, &token, round).await;
        all_acks.extend(acked.calls);

        // It must start again: the ledger rebuilds and checks itself against its last
        // checkpoint.
        server = install.serve_with(&serve_args).await;
        let entries = check_acks(&server, &token, &all_acks).await;
        let actions: Vec<&str> = entries
            .iter()
            .map(|e| e["event"]["action"].as_str().unwrap())
            .collect();
        let starts = actions.iter().filter(|a| **a == "server.start").count();
        assert_eq!(starts, 1 + round as usize, "one start per run");
        assert!(
            !actions.contains(&"server.stop"),
            "a killed server recorded a clean stop"
        );

        // Every checkpoint acknowledged before the kill, and the latest one now, are
        // consistent with the log after the restart.
        let (latest, _) = server.checkpoint().await;
        let last_acked = acked.checkpoints.iter().map(|(size, _)| *size).max();
        assert!(
            !acked.checkpoints.is_empty(),
            "round {round}: no checkpoint was published during the stream"
        );
        assert!(
            latest.size >= last_acked.unwrap_or(0),
            "an acknowledged checkpoint was lost"
        );
        let now = server.publish(&token).await["tree_size"].as_u64().unwrap();
        for (size, root) in acked
            .checkpoints
            .iter()
            .copied()
            .chain([(latest.size, latest.root)])
        {
            let c = server
                .get_public_json(&format!("/v1/audit/proof/consistency?from={size}&to={now}"))
                .await;
            assert_eq!(hash_of(&c["root1"]), root, "root at {size} changed");
            let proof: Vec<merkle::Hash> =
                c["proof"].as_array().unwrap().iter().map(hash_of).collect();
            merkle::verify_consistency(size, now, &root.0, &hash_of(&c["root2"]).0, &proof)
                .unwrap_or_else(|e| panic!("consistency {size} -> {now}: {e}"));
        }

        let (_, header) =
            export_and_verify(install, &server, &format!("round-{round}.jsonl")).await;
        let max_seq = all_acks.iter().map(|(s, _)| *s).max().unwrap();
        assert!(header["tree_size"].as_u64().unwrap() > max_seq);
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_appends_loses_no_acknowledged_entry_sqlite() {
    let install = Install::new().await;
    let server = crash_twice(&install).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_appends_loses_no_acknowledged_entry_postgres() {
    let Some(pg) = PgSchema::create("crash").await else {
        return;
    };
    let install = Install::with_database(Some(pg.url())).await;
    let server = crash_twice(&install).await;
    let ready = server.get_public_json("/readyz").await;
    assert_eq!(ready["backend"], "postgres", "{ready}");
    let log = server.stop().await;
    let final_size: u64 = log
        .lines()
        .find_map(|l| {
            l.split("final checkpoint signed; stopped tree_size=")
                .nth(1)
        })
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no final checkpoint in the log:\n{log}"));

    // Everything landed in the test's schema (and so nowhere else).
    let store = pg.open().await;
    assert_eq!(store.ledger_size().await.unwrap(), final_size);
    assert_eq!(
        store.meta_get("trust_domain").await.unwrap().as_deref(),
        Some("example.org")
    );
    let latest = store
        .checkpoint_latest()
        .await
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(latest.tree_size, final_size);

    // A second install cannot claim the same database (it would fork the ledger).
    let intruder = Install::empty_with(Some(pg.url()));
    let out = intruder.init(&[]).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(
        out.stderr.contains("already belongs to an install"),
        "{out:#?}"
    );
    assert!(!intruder.token_file.exists());
    assert_eq!(
        store.ledger_size().await.unwrap(),
        final_size,
        "the intruder wrote"
    );
    store.close().await;
}

/// SIGTERM in the middle of the same stream: in-flight calls are drained, nothing
/// acknowledged is lost, `server.stop` is the last entry of the run and the final checkpoint
/// covers it; the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_appends_drains_and_loses_nothing() {
    let install = Install::new().await;
    let token = install.admin_token();
    let mut server = install.serve().await;
    let (acked, status) = stream_and_signal(&mut server, &token, 1, 300, "TERM").await;
    assert_eq!(status.code(), Some(0), "{status}");
    server.wait_log_done().await;
    let log = server.log();
    let final_size: u64 = log
        .lines()
        .find_map(|l| {
            l.split("final checkpoint signed; stopped tree_size=")
                .nth(1)
        })
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no final checkpoint in the log:\n{log}"));

    let server = install.serve().await;
    let entries = check_acks(&server, &token, &acked.calls).await;
    let stop = usize::try_from(final_size).unwrap() - 1;
    assert_eq!(entries[stop]["event"]["action"], "server.stop");
    assert_eq!(entries[stop + 1]["event"]["action"], "server.start");
    assert!(
        acked.calls.iter().all(|(seq, _)| *seq < final_size - 1),
        "a call was acknowledged after server.stop"
    );
    let (cp, _) = server.checkpoint().await;
    assert!(cp.size >= final_size, "the final checkpoint was lost");
    export_and_verify(&install, &server, "after-sigterm.jsonl").await;
    server.stop().await;
}
