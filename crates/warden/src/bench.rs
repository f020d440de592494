//! `warden bench`: the ledger's performance figures, measured on this machine with the real
//! code paths (see docs/benchmarks.md).

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use ledger::{
    Event, Ledger, LedgerConfig, NewEvent, NoteSigner, OcsfClass, Outcome, event::format_time,
    export,
};
use zeroize::Zeroizing;

/// `warden bench …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCmd {
    /// Durable ledger appends with group commit, from concurrent writers
    LedgerAppend {
        /// Concurrent writers
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Total entries to append
        #[arg(long, default_value_t = 200_000)]
        entries: u64,
        /// Store to use (default: a fresh SQLite file in a temporary directory). A postgres://
        /// URL gets a fresh schema that is dropped afterwards.
        #[arg(long)]
        database_url: Option<String>,
        /// Most entries per transaction
        #[arg(long, default_value_t = 1024)]
        max_batch: usize,
    },
    /// Write an export of N synthetic entries and time the offline verifier on it
    LedgerVerify {
        /// Entries in the export
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Keep the export here (and print the key) to time `warden audit verify` on it
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Hold → deny on a running server: how soon after `POST /v1/holds` returns is the
    /// agent's token inactive (introspected back to back by a prober)
    Hold {
        /// Server base URL
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// File holding an admin API token
        #[arg(long)]
        token_file: PathBuf,
        /// An enforcer API token (for introspection)
        #[arg(long)]
        enforcer_token: String,
        /// The agent's JWT-SVID for the server (the subject of each round's token)
        #[arg(long)]
        subject_svid: String,
        /// The agent's SPIFFE ID (held and released each round)
        #[arg(long)]
        agent: String,
        /// Rounds
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
    /// PostgreSQL role create + revoke per second through the dynamic-credentials engine
    PgRoles {
        /// Admin connection URL (needs CREATEROLE; the benchmark's tables are made in a new
        /// schema with psql and dropped afterwards)
        #[arg(long, env = "WARDEN_TEST_DATABASE_URL")]
        database_url: String,
        /// Create+revoke pairs per run
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Concurrent workers in the second run
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Relationship store start-up: load N tuples (nested groups 4 deep) from the store into
    /// the in-memory graph the way `warden serve` does, then time checks on it
    Rebac {
        /// Tuples to generate
        #[arg(long, default_value_t = 1_000_000)]
        tuples: usize,
        /// Store to use (default: a fresh SQLite file in a temporary directory). A postgres://
        /// URL gets a fresh schema that is dropped afterwards.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// The control plane at 100,000 agents: real `warden serve` processes registering agents
    /// one by one and in bulk, with open tasks and relationship tuples; idle CPU, memory,
    /// decision and SVID-fetch latency against a 10-agent install, and start-up time, each
    /// with its target
    Agents(crate::bench_agents::AgentsArgs),
}

pub(crate) async fn run(cmd: BenchCmd, out: crate::output::Out) -> Result<()> {
    match cmd {
        BenchCmd::Agents(args) => crate::bench_agents::run(args, out).await,
        BenchCmd::LedgerAppend {
            writers,
            entries,
            database_url,
            max_batch,
        } => append(writers.max(1), entries, database_url, max_batch).await,
        BenchCmd::LedgerVerify { entries, keep } => verify(entries, keep),
        BenchCmd::Rebac {
            tuples,
            database_url,
        } => rebac(tuples, database_url).await,
        BenchCmd::Hold {
            server,
            token_file,
            enforcer_token,
            subject_svid,
            agent,
            rounds,
        } => {
            crate::bench_broker::hold(
                &server,
                &token_file,
                &enforcer_token,
                &subject_svid,
                &agent,
                rounds.max(1),
            )
            .await
        }
        BenchCmd::PgRoles {
            database_url,
            count,
            concurrency,
        } => crate::bench_broker::pg_roles(&database_url, count.max(1), concurrency).await,
    }
}

/// A fresh store for a benchmark: SQLite in `tmp`, or a new PostgreSQL schema (returned so
/// it can be dropped).
async fn bench_store(
    tmp: &tempfile::TempDir,
    database_url: Option<&String>,
) -> Result<(Arc<dyn store::Store>, Option<(String, String)>)> {
    Ok(match database_url {
        None => (
            Arc::new(store::SqliteStore::open(&tmp.path().join("bench.db")).await?),
            None,
        ),
        Some(url) => {
            let schema = format!("warden_bench_{}", std::process::id());
            let s = store::PostgresStore::connect_with_schema(url, &schema).await?;
            (Arc::new(s), Some((url.clone(), schema)))
        }
    })
}

/// The `p`-quantile (0–1) of sorted latencies; zero when there are none.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// The benchmark's model: users in groups nested four deep, groups viewing folders, documents
/// in folders.
const REBAC_MODEL: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type folder
  relations
    define viewer: [user, group#member]
type doc
  relations
    define parent: [folder]
    define viewer: [user] or viewer from parent
";

/// Generates about `total` tuples: 1,000 level-1 groups of users; levels 2–4 of 100, 10 and
/// 1 groups, each holding ten groups of the level below (`group:…#member`); 1,000 folders
/// viewed by the top group or a level-3 group; the rest documents in folders.
fn rebac_tuples(total: usize) -> Vec<store::RebacTupleRow> {
    let row = |object: String, relation: &str, subject: String| store::RebacTupleRow {
        object,
        relation: relation.to_owned(),
        subject,
        expires_at_ms: None,
    };
    let mut out = Vec::with_capacity(total);
    for (level, count) in [(2usize, 100usize), (3, 10), (4, 1)] {
        for g in 0..count {
            for child in 0..10 {
                out.push(row(
                    format!("group:l{level}-{g}"),
                    "member",
                    format!("group:l{}-{}#member", level - 1, g * 10 + child),
                ));
            }
        }
    }
    for f in 0..1_000 {
        let viewer = if f % 2 == 0 {
            "group:l4-0#member".to_owned()
        } else {
            format!("group:l3-{}#member", f % 10)
        };
        out.push(row(format!("folder:f{f}"), "viewer", viewer));
    }
    let rest = total.saturating_sub(out.len());
    let users = rest * 6 / 10;
    for u in 0..users {
        out.push(row(
            format!("group:l1-{}", u % 1_000),
            "member",
            format!("user:u{u}"),
        ));
    }
    for d in 0..rest - users {
        out.push(row(
            format!("doc:d{d}"),
            "parent",
            format!("folder:f{}", d % 1_000),
        ));
    }
    out
}

async fn rebac(tuples: usize, database_url: Option<String>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (store, pg_schema) = bench_store(&tmp, database_url.as_ref()).await?;
    let backend = store.backend();
    let model = rebac::Model::parse(REBAC_MODEL).context("the benchmark model")?;
    store
        .rebac_model_append(&store::RebacModelRow {
            store: "bench".into(),
            version: 0,
            model_id: model.id().to_owned(),
            dsl: REBAC_MODEL.into(),
            created_unix_ms: crate::now_ms(),
            created_by: "bench".into(),
        })
        .await?;
    let rows = rebac_tuples(tuples);
    let started = Instant::now();
    for chunk in rows.chunks(10_000) {
        match store
            .rebac_write("bench", chunk, &[], crate::now_ms(), "bench")
            .await?
        {
            store::RebacWrite::Written { .. } => {}
            other => anyhow::bail!("bulk write refused: {other:?}"),
        }
    }
    println!(
        "rebac on {backend}: wrote {} tuples in {:.1} s (setup, not measured)",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    drop(rows);

    let relations = server::Relations::default();
    let started = Instant::now();
    relations.refresh(store.as_ref()).await?;
    let load = started.elapsed();
    let (count, revision, heap) = relations
        .size("bench")
        .context("the store was not loaded")?;
    println!(
        "  start-up load  {count} tuples at revision {revision} in {:.2} s ({:.0} tuples/s)",
        load.as_secs_f64(),
        count as f64 / load.as_secs_f64()
    );
    println!(
        "  graph memory  {:.0} MiB ({:.0} bytes/tuple, Graph::heap_bytes)",
        heap as f64 / (1024.0 * 1024.0),
        heap as f64 / count.max(1) as f64
    );

    // Checks through the loaded store: a user of group l1-k views documents in folders that a
    // group above it views (allowed), or not (denied), four levels of nesting away.
    let docs = tuples.saturating_sub(1_000 + 1_111) * 4 / 10;
    let mut latencies = Vec::new();
    let mut allowed = 0usize;
    for i in 0..20_000usize {
        let user =
            rebac::User::parse(&format!("user:u{}", (i * 7_919) % (tuples * 6 / 10).max(1)))?;
        let object = rebac::ObjectRef::parse(&format!("doc:d{}", (i * 104_729) % docs.max(1)))?;
        let request = rebac::CheckRequest {
            user,
            relation: "viewer".into(),
            object,
            contextual_tuples: Vec::new(),
            now_ms: crate::now_ms(),
        };
        let t = Instant::now();
        let answer = relations
            .check("bench", &request)
            .context("the store was not loaded")??;
        latencies.push(t.elapsed());
        allowed += usize::from(answer);
    }
    latencies.sort();
    let pct = |p: f64| percentile(&latencies, p);
    println!(
        "  check (nested groups, 4 levels)  p50 {:.1} µs  p99 {:.1} µs  ({} of {} allowed)",
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        allowed,
        latencies.len()
    );
    if let Some((url, schema)) = pg_schema {
        store::PostgresStore::drop_schema(&url, &schema).await?;
    }
    Ok(())
}

fn sample_event(writer: usize, i: u64) -> NewEvent {
    // Shaped like the server's per-request audit entry.
    NewEvent::new(
        format!("token:writer-{writer}"),
        "api.request",
        Outcome::Success,
        OcsfClass::ApiActivity,
    )
    .field("method", "POST")
    .field("path", "/v1/authorize")
    .field("status", 200)
    .field("request_id", format!("bench-{writer}-{i}"))
    .field("token_id", "tok_0123456789abcdef")
    .secret("credential", format!("secret-{i}"))
}

async fn append(
    writers: usize,
    entries: u64,
    database_url: Option<String>,
    max_batch: usize,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (store, pg_schema) = bench_store(&tmp, database_url.as_ref()).await?;
    let backend = store.backend();
    let signer = NoteSigner::generate("bench.example/warden/ledger")?;
    let ledger = Ledger::open(
        store,
        signer,
        Zeroizing::new([7u8; 32]),
        LedgerConfig {
            max_batch,
            ..LedgerConfig::default()
        },
    )
    .await?;
    let per_writer = entries / writers as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_writer as usize);
            for i in 0..per_writer {
                let t = Instant::now();
                ledger.append(sample_event(w, i)).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, ledger::LedgerError>(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let stats = ledger.stats();
    latencies.sort();
    let pct = |p: f64| percentile(&latencies, p);
    let n = latencies.len() as f64;
    println!(
        "ledger-append on {backend}: {writers} writers, {} entries",
        latencies.len()
    );
    println!(
        "  throughput   {:.0} entries/s ({:.2} s)",
        n / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  commits      {} (mean batch {:.1} entries)",
        stats.batches,
        stats.appended as f64 / stats.batches.max(1) as f64
    );
    println!(
        "  append latency p50 {:?}  p99 {:?}  max {:?}",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    drop(ledger);
    if let Some((url, schema)) = pg_schema {
        store::PostgresStore::drop_schema(&url, &schema).await?;
    }
    Ok(())
}

fn verify(entries: u64, keep: Option<PathBuf>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let path = keep.unwrap_or_else(|| tmp.path().join("export.jsonl"));
    let signer = NoteSigner::generate("bench.example/warden/ledger")?;
    let build = Instant::now();
    let file = std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?;
    let mut out = BufWriter::new(file);
    // Two passes: leaves first (to a temporary body), then the header that needs the root.
    let body_path = tmp.path().join("body");
    let mut body = BufWriter::new(std::fs::File::create(&body_path)?);
    let mut tree = merkle::RootBuilder::new();
    for seq in 0..entries {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("method".to_owned(), "POST".into());
        fields.insert("path".to_owned(), "/v1/authorize".into());
        fields.insert("status".to_owned(), 200.into());
        fields.insert("request_id".to_owned(), format!("bench-{seq}").into());
        fields.insert("token_id".to_owned(), "tok_0123456789abcdef".into());
        let leaf = Event {
            v: 1,
            seq,
            time: format_time(1_764_457_214_000 + seq as i64),
            actor: "token:bench".into(),
            action: "api.request".into(),
            outcome: Outcome::Success,
            class_uid: 6003,
            fields,
        }
        .to_leaf()?;
        let hash = merkle::leaf_hash(&leaf);
        tree.push(hash);
        export::write_entry(&mut body, seq, &hash, &leaf)?;
    }
    body.flush()?;
    drop(body);
    let cp = ledger::Checkpoint {
        origin: signer.name().into(),
        size: entries,
        root: tree.root(),
    };
    export::write_header(
        &mut out,
        &export::Header {
            format: export::FORMAT.into(),
            origin: signer.name().into(),
            tree_size: entries,
            checkpoint: signer.sign(&cp.to_text())?,
            vkey: signer.vkey(),
        },
    )?;
    std::io::copy(&mut std::fs::File::open(&body_path)?, &mut out)?;
    out.flush()?;
    drop(out);
    let size = std::fs::metadata(&path)?.len();
    eprintln!(
        "wrote {entries} entries ({:.1} MiB) in {:.2} s",
        size as f64 / (1 << 20) as f64,
        build.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
    let verified = export::verify(reader, &signer.verifier(), &mut |_, _| {})?;
    let elapsed = start.elapsed();
    println!(
        "ledger-verify: {} entries verified in {:.2} s ({:.0} entries/s)",
        verified.tree_size,
        elapsed.as_secs_f64(),
        verified.tree_size as f64 / elapsed.as_secs_f64()
    );
    if path != tmp.path().join("export.jsonl") {
        println!("kept {} ; key: {}", path.display(), signer.vkey());
    }
    Ok(())
}
