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
}

pub(crate) async fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::LedgerAppend {
            writers,
            entries,
            database_url,
            max_batch,
        } => append(writers.max(1), entries, database_url, max_batch).await,
        BenchCmd::LedgerVerify { entries, keep } => verify(entries, keep),
    }
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
    let mut pg_schema = None;
    let store: Arc<dyn store::Store> = match &database_url {
        None => Arc::new(store::SqliteStore::open(&tmp.path().join("bench.db")).await?),
        Some(url) => {
            let schema = format!("warden_bench_{}", std::process::id());
            let s = store::PostgresStore::connect_with_schema(url, &schema).await?;
            pg_schema = Some((url.clone(), schema));
            Arc::new(s)
        }
    };
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
    let pct = |p: f64| -> Duration {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
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
        .to_leaf();
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
