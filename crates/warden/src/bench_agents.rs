//! `warden bench agents`: the control plane at 100,000 agents, measured the way an operator
//! would see it — real `warden serve` processes on a fresh install, driven over the HTTP API
//! and the Workload API, with the targets next to each figure.
//!
//! Phases: a baseline install with 10 agents (decision and SVID-fetch latency); a big install
//! registered in ten steps (one by one with concurrent clients, then in bulk), given open
//! tasks with grants and relationship tuples; its idle CPU and memory; the same latencies at
//! scale; and a restart on the same data (start-up time, memory after start).

use std::{
    collections::VecDeque,
    future::Future,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

use crate::{bench::percentile, output};

/// Arguments of `warden bench agents`.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentsArgs {
    /// Agents to register (each a registration entry with its own SPIFFE ID and selectors)
    #[arg(long, default_value_t = 100_000)]
    agents: usize,
    /// Store to use (default: SQLite in a temporary data directory). A postgres:// URL gets a
    /// fresh schema per server install, dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
    /// Concurrent HTTP clients for one-by-one registrations, tasks and tuple writes
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Entries per bulk registration request (the server takes at most 10,000 and 1 MiB)
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Relationship tuples in the store in all, task grants included
    #[arg(long, default_value_t = 1_000_000)]
    tuples: usize,
    /// Share of the agents that get an open task with a grant (0–1; at least one task)
    #[arg(long, default_value_t = 0.1)]
    task_share: f64,
    /// Seconds over which the idle server's CPU time is sampled
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
}

/// The trust domain of both installs.
const TRUST_DOMAIN: &str = "bench.example.org";

/// Agents in the baseline install.
const BASELINE_AGENTS: usize = 10;

/// Registration steps of the big install.
const STEPS: usize = 10;

/// Most registrations done one by one in each step (the rest go in bulk).
const ONE_BY_ONE_PER_STEP: usize = 1_000;

/// `/v1/authorize` requests: unmeasured warm-up, then measured.
const AUTHORIZE_WARMUP: usize = 200;
/// See [`AUTHORIZE_WARMUP`].
const AUTHORIZE_MEASURED: usize = 2_000;

/// Workload API JWT-SVID fetches: unmeasured warm-up, then measured. Together well under the
/// server's default burst of Workload API calls per Unix user (1,000), so the rate limit never
/// answers instead of the server.
const SVID_WARMUP: usize = 20;
/// See [`SVID_WARMUP`].
const SVID_MEASURED: usize = 500;

/// The server's default request body limit; a bulk request above it would be refused (413).
const BODY_LIMIT: usize = 1 << 20;

/// Most tuples in one `POST /v1/rebac/tuples` (the server's `MAX_TUPLES_PER_WRITE`).
const TUPLES_PER_WRITE: usize = rebac::MAX_TUPLES_PER_WRITE;

/// How long a server may take to print its address and then to answer `/readyz`.
const START_DEADLINE: Duration = Duration::from_secs(600);

/// How long a server may take to stop after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(120);

/// Teams the agents are members of (relationship filler).
const TEAMS: usize = 1_000;

/// Server log lines kept for error messages.
const LOG_LINES: usize = 200;

/// The relationship model: task grants make agents writers of a repository; teams of agents
/// read repositories (the filler that brings the store up to `--tuples`).
const MODEL: &str = "model
  schema 1.1
type agent
type team
  relations
    define member: [agent]
type repository
  relations
    define writer: [agent]
    define reader: [agent, team#member] or writer
";

/// The decision measured: a writer of a repository (through its task's grant) writes it at a
/// low risk score — `examples/policies/coder-rebac`, so the decision looks up relations.
const POLICY_CEDAR: &str = include_str!("../../../examples/policies/coder-rebac/coder.cedar");
/// See [`POLICY_CEDAR`].
const POLICY_SCHEMA: &str =
    include_str!("../../../examples/policies/coder-rebac/coder.cedarschema");

/// The policy package the benchmark pushes and asks.
const PACKAGE: &str = "bench";

// ---- the report ---------------------------------------------------------------------------

/// Latency percentiles of a series of sequential requests.
#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    /// Requests measured.
    count: usize,
    /// Median, milliseconds.
    p50_ms: f64,
    /// 99th percentile, milliseconds.
    p99_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self {
            count: samples.len(),
            p50_ms: ms(percentile(&samples, 0.50)),
            p99_ms: ms(percentile(&samples, 0.99)),
        }
    }
}

/// The two latencies the targets compare.
#[derive(Debug, Clone, Copy, Serialize)]
struct Latencies {
    /// `POST /v1/authorize` for an agent on an open task.
    authorize: Latency,
    /// Workload API FetchJWTSVID by this process.
    svid_fetch: Latency,
}

/// One registration step of the big install.
#[derive(Debug, Serialize)]
struct Step {
    /// Agents registered after this step.
    agents: usize,
    /// Registered one by one (`POST /v1/entries`) in this step.
    one_by_one: usize,
    /// Their rate, entries/s (all clients together).
    one_by_one_per_s: f64,
    /// Their per-request latency.
    one_by_one_latency: Latency,
    /// Registered in bulk (`POST /v1/entries/batch`) in this step.
    bulk: usize,
    /// The bulk rate, entries/s (one request at a time).
    bulk_per_s: f64,
}

/// A rate of a phase that is not a target.
#[derive(Debug, Serialize)]
struct Phase {
    /// Items done.
    count: usize,
    /// Seconds.
    seconds: f64,
    /// Items per second.
    per_s: f64,
}

impl Phase {
    /// `count` items done in `elapsed`.
    fn of(count: usize, elapsed: Duration) -> Self {
        Self {
            count,
            seconds: elapsed.as_secs_f64(),
            per_s: per_s(count, elapsed),
        }
    }
}

/// The idle server.
#[derive(Debug, Serialize)]
struct Idle {
    /// Seconds sampled.
    seconds: f64,
    /// CPU time over the sample, % of one core.
    cpu_percent: f64,
    /// Resident memory (VmRSS), MB (10^6 bytes).
    rss_mb: f64,
    /// Peak resident memory so far (VmHWM), MB.
    peak_rss_mb: f64,
}

/// The restart on the same data.
#[derive(Debug, Serialize)]
struct Restart {
    /// From spawn until the server printed its address, seconds.
    listening_s: f64,
    /// From spawn until `/readyz` answered 200, seconds.
    ready_s: f64,
    /// From spawn until the first `/v1/authorize` answer allowed, seconds.
    first_decision_s: f64,
    /// Resident memory once it answered, MB.
    rss_mb: f64,
    /// Its peak resident memory by then (start-up included), MB.
    peak_rss_mb: f64,
}

/// One target of the issue, with what was measured.
#[derive(Debug, Serialize)]
struct Target {
    /// What is measured.
    name: String,
    /// The target.
    target: String,
    /// The figure.
    measured: String,
    /// Met or not.
    pass: bool,
}

/// Everything `warden bench agents` measured.
#[derive(Debug, Serialize)]
struct Report {
    /// `release` or `debug` (the figures of a debug build say little).
    build: &'static str,
    /// `sqlite` or `postgresql`.
    backend: String,
    /// Agents in the big install.
    agents: usize,
    /// Open tasks in it, each with one agent and one grant.
    open_tasks: usize,
    /// Relationship tuples in it (grants and filler).
    tuples: usize,
    /// Concurrent clients for one-by-one requests.
    clients: usize,
    /// Entries per bulk request.
    batch: usize,
    /// Agents in the baseline install.
    baseline_agents: usize,
    /// Latencies of the baseline install.
    baseline: Latencies,
    /// The registration steps.
    registration: Vec<Step>,
    /// Opening the tasks (create and assign).
    tasks: Phase,
    /// Writing the filler tuples.
    tuple_writes: Phase,
    /// The idle big install.
    idle: Idle,
    /// Latencies of the big install.
    at_scale: Latencies,
    /// The big install restarted.
    restart: Restart,
    /// The targets.
    targets: Vec<Target>,
}

// ---- the run ------------------------------------------------------------------------------

/// `warden bench agents`: runs every phase, then prints the report. Temporary directories and
/// PostgreSQL schemas are removed, and the servers killed, also when a phase fails.
pub(crate) async fn run(args: AgentsArgs, out: output::Out) -> Result<()> {
    if args.agents < BASELINE_AGENTS {
        bail!("--agents must be at least {BASELINE_AGENTS}");
    }
    if !(0.0..=1.0).contains(&args.task_share) {
        bail!("--task-share must be between 0 and 1");
    }
    if args.batch == 0 || args.batch > 10_000 {
        bail!("--batch must be 1 to 10,000 (the server's limit)");
    }
    let exe = std::env::current_exe().context("finding the warden executable")?;
    let tmp = tempfile::Builder::new()
        .prefix("warden-bench-agents-")
        .tempdir()
        .context("making a temporary directory")?;
    if cfg!(debug_assertions) {
        progress(format_args!(
            "warning: this is a debug build; its figures say little about a release build"
        ));
    }
    let mut schemas = Vec::new();
    // Ctrl-C drops the run, which kills its servers, and still removes what it made.
    let result = tokio::select! {
        result = measure(&args, &exe, tmp.path(), &mut schemas) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Every server is gone by now (killed on drop); their schemas can go.
    if let Some(url) = &args.database_url {
        for schema in &schemas {
            if let Err(e) = store::PostgresStore::drop_schema(url, schema).await {
                progress(format_args!("could not drop schema {schema}: {e}"));
            }
        }
    }
    let report = result?;
    if out.is_json() {
        output::json(&serde_json::to_value(&report)?)
    } else {
        print_table(&report);
        Ok(())
    }
}

/// The phases, in order.
async fn measure(
    args: &AgentsArgs,
    exe: &Path,
    tmp: &Path,
    schemas: &mut Vec<String>,
) -> Result<Report> {
    let backend = if args.database_url.is_some() {
        "postgresql"
    } else {
        "sqlite"
    };
    let me = Caller::this_process(exe)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(args.clients.max(1) * 2)
        .build()?;
    let clients = args.clients.max(1);
    // At least one: the decision measured is agent 0's on its task.
    let open_tasks =
        ((args.agents as f64 * args.task_share).round() as usize).clamp(1, args.agents);

    // 1. Baseline: 10 agents, one of them on a task.
    progress(format_args!(
        "baseline: a fresh install on {backend} with {BASELINE_AGENTS} agents"
    ));
    let baseline = {
        let install = Install::create(exe, tmp, "baseline", args, schemas).await?;
        let server = Serve::start(exe, &install.data_dir)
            .await?
            .ready(&http)
            .await?;
        let api = Api::new(&http, &server.url, &install.token);
        setup(&api, &me).await?;
        bulk_register(&api, 0..BASELINE_AGENTS, BASELINE_AGENTS).await?;
        open_tasks_for(&api, BASELINE_AGENTS, 1, 1).await?;
        let latencies = latencies(&api, &install.data_dir, &me).await?;
        server.stop().await?;
        latencies
    };
    progress(format_args!(
        "baseline: authorize p50 {:.2} ms, SVID fetch p50 {:.2} ms",
        baseline.authorize.p50_ms, baseline.svid_fetch.p50_ms
    ));

    // 2. The big install, registered in ten steps.
    let install = Install::create(exe, tmp, "big", args, schemas).await?;
    let server = Serve::start(exe, &install.data_dir)
        .await?
        .ready(&http)
        .await?;
    let api = Api::new(&http, &server.url, &install.token);
    setup(&api, &me).await?;
    let step_size = args.agents.div_ceil(STEPS);
    let mut registration = Vec::new();
    let mut done = 0;
    while done < args.agents {
        let end = (done + step_size).min(args.agents);
        // Small installs: half one by one, so every step also measures bulk.
        let one = ONE_BY_ONE_PER_STEP.min((end - done) / 2).max(1);
        let api1 = api.clone();
        let timed = concurrently(clients, done..done + one, move |i| {
            let api = api1.clone();
            async move {
                api.post("/v1/entries", &entry(i)).await?;
                Ok(())
            }
        })
        .await?;
        let bulk_time = bulk_register(&api, done + one..end, args.batch).await?;
        let step = Step {
            agents: end,
            one_by_one: one,
            one_by_one_per_s: per_s(one, timed.elapsed),
            one_by_one_latency: Latency::of(timed.latencies),
            bulk: end - done - one,
            bulk_per_s: per_s(end - done - one, bulk_time),
        };
        progress(format_args!(
            "registered {:>7}: one by one {:>8.0}/s, bulk {:>8.0}/s",
            step.agents, step.one_by_one_per_s, step.bulk_per_s
        ));
        registration.push(step);
        done = end;
    }

    // 3. Open tasks with grants, then relationship tuples up to --tuples.
    progress(format_args!("opening {open_tasks} tasks with a grant each"));
    let tasks = open_tasks_for(&api, args.agents, open_tasks, clients).await?;
    progress(format_args!("tasks: {:.0}/s", tasks.per_s));
    let filler = args.tuples.saturating_sub(open_tasks);
    progress(format_args!(
        "writing {filler} relationship tuples, {TUPLES_PER_WRITE} per request"
    ));
    let tuple_writes = write_tuples(&api, args.agents, filler, clients).await?;
    progress(format_args!("tuples: {:.0}/s", tuple_writes.per_s));

    // 4. Idle.
    progress(format_args!(
        "idle: 3 s to settle, then {} s sampled",
        args.idle_seconds
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = idle(server.pid, Duration::from_secs(args.idle_seconds.max(1))).await?;

    // 5. Latency at scale.
    progress(format_args!("latency at {} agents", args.agents));
    let at_scale = latencies(&api, &install.data_dir, &me).await?;

    // 6. Restart on the same data.
    progress(format_args!(
        "restart: SIGTERM, then a new server on the same data"
    ));
    server.stop().await?;
    let started = Instant::now();
    let server = Serve::start(exe, &install.data_dir).await?;
    let listening = started.elapsed();
    let server = server.ready(&http).await?;
    let ready = started.elapsed();
    let api = Api::new(&http, &server.url, &install.token);
    authorize_once(&api).await?;
    let first_decision = started.elapsed();
    let (rss_mb, peak_rss_mb) = memory(server.pid)?;
    // Where the start-up went, as the server logged it.
    let phases: Vec<String> = server
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|l| l.contains("start-up:"))
        .cloned()
        .collect();
    for line in &phases {
        progress(format_args!("  {line}"));
    }
    let restart = Restart {
        listening_s: listening.as_secs_f64(),
        ready_s: ready.as_secs_f64(),
        first_decision_s: first_decision.as_secs_f64(),
        rss_mb,
        peak_rss_mb,
    };
    server.stop().await?;

    let mut report = Report {
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        backend: backend.to_owned(),
        agents: args.agents,
        open_tasks,
        tuples: open_tasks + tuple_writes.count,
        clients,
        batch: args.batch,
        baseline_agents: BASELINE_AGENTS,
        baseline,
        registration,
        tasks,
        tuple_writes,
        idle,
        at_scale,
        restart,
        targets: Vec::new(),
    };
    report.targets = targets(&report);
    Ok(report)
}

/// The targets, judged on the report.
fn targets(r: &Report) -> Vec<Target> {
    // Over the steps that did some of the kind (a tiny install may have a step without bulk).
    let slowest = |f: fn(&Step) -> f64| {
        r.registration
            .iter()
            .map(f)
            .filter(|rate| *rate > 0.0)
            .reduce(f64::min)
            .unwrap_or(0.0)
    };
    let fastest = |f: fn(&Step) -> f64| r.registration.iter().map(f).fold(0.0, f64::max);
    let one = slowest(|s| s.one_by_one_per_s);
    let bulk = slowest(|s| s.bulk_per_s);
    let change = |base: f64, now: f64| (now - base) / base.max(f64::MIN_POSITIVE) * 100.0;
    let within = |name: &str, base: Latency, now: Latency| Target {
        name: format!("{name} p50 at {} vs {} agents", r.agents, r.baseline_agents),
        target: "within +10%".into(),
        measured: format!(
            "{:.2} vs {:.2} ms ({:+.0}%; p99 {:.2} vs {:.2} ms, {:+.0}%)",
            now.p50_ms,
            base.p50_ms,
            change(base.p50_ms, now.p50_ms),
            now.p99_ms,
            base.p99_ms,
            change(base.p99_ms, now.p99_ms)
        ),
        pass: change(base.p50_ms, now.p50_ms) <= 10.0,
    };
    let rss = r.idle.rss_mb.max(r.restart.rss_mb);
    vec![
        Target {
            name: "registrations one by one, slowest step".into(),
            target: ">= 1,000/s".into(),
            measured: format!(
                "{one:.0}/s (fastest step {:.0}/s)",
                fastest(|s| s.one_by_one_per_s)
            ),
            pass: one >= 1_000.0,
        },
        Target {
            name: "registrations in bulk, slowest step".into(),
            target: ">= 20,000/s".into(),
            measured: format!(
                "{bulk:.0}/s (fastest step {:.0}/s)",
                fastest(|s| s.bulk_per_s)
            ),
            pass: bulk >= 20_000.0,
        },
        Target {
            name: "idle server CPU".into(),
            target: "<= 1% of one core".into(),
            measured: format!("{:.2}% over {:.0} s", r.idle.cpu_percent, r.idle.seconds),
            pass: r.idle.cpu_percent <= 1.0,
        },
        Target {
            name: "server RSS (idle, and after restart)".into(),
            target: "<= 300 MB".into(),
            measured: format!(
                "{:.0} MB idle, {:.0} MB after restart (peaks {:.0} and {:.0} MB)",
                r.idle.rss_mb, r.restart.rss_mb, r.idle.peak_rss_mb, r.restart.peak_rss_mb
            ),
            pass: rss <= 300.0,
        },
        within("/v1/authorize", r.baseline.authorize, r.at_scale.authorize),
        within(
            "Workload API SVID fetch",
            r.baseline.svid_fetch,
            r.at_scale.svid_fetch,
        ),
        Target {
            name: "start-up until ready".into(),
            target: "<= 5 s".into(),
            measured: format!(
                "{:.2} s (listening {:.2} s, first decision {:.2} s)",
                r.restart.ready_s, r.restart.listening_s, r.restart.first_decision_s
            ),
            pass: r.restart.ready_s <= 5.0,
        },
    ]
}

// ---- setup and load -----------------------------------------------------------------------

/// What every install needs for the measurements: the relationship model, the policy package,
/// and a registration entry for this process.
async fn setup(api: &Api, me: &Caller) -> Result<()> {
    api.put_text("/v1/rebac/model", MODEL).await?;
    api.post(
        &format!("/v1/policies/{PACKAGE}"),
        &json!({"files": [
            {"name": "coder.cedar", "text": POLICY_CEDAR},
            {"name": "coder.cedarschema", "text": POLICY_SCHEMA},
        ]}),
    )
    .await?;
    api.post(
        "/v1/entries",
        &json!({"spiffe_id": me.spiffe_id, "selectors": me.selectors}),
    )
    .await?;
    Ok(())
}

/// Agent `i`'s SPIFFE ID.
fn agent_id(i: usize) -> String {
    format!("spiffe://{TRUST_DOMAIN}/bench/agent-{i:06}")
}

/// Agent `i` as a relationship user.
fn agent_user(i: usize) -> String {
    format!("agent:{TRUST_DOMAIN}/bench/agent-{i:06}")
}

/// Agent `i`'s registration entry: its own executable path, and the Unix user every bench
/// agent shares — this process's, as when all agents of a host run as one service user.
fn entry(i: usize) -> Value {
    let path = format!("unix:path:/opt/bench/agent-{i:06}");
    let uid = format!("unix:uid:{}", own_uid());
    json!({"spiffe_id": agent_id(i), "selectors": [path, uid]})
}

/// The Unix user this process runs as (the owner of `/proc/self`).
fn own_uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| std::fs::metadata("/proc/self").map_or(0, |m| m.uid()))
}

/// Registers agents `range` through `POST /v1/entries/batch`, `batch` per request, one request
/// at a time; returns the time spent in the requests (the bodies are made before).
async fn bulk_register(api: &Api, range: std::ops::Range<usize>, batch: usize) -> Result<Duration> {
    let ids: Vec<usize> = range.collect();
    let mut bodies = Vec::new();
    for chunk in ids.chunks(batch.max(1)) {
        let body = json!({"entries": chunk.iter().map(|&i| entry(i)).collect::<Vec<_>>()});
        let body = serde_json::to_vec(&body)?;
        if body.len() > BODY_LIMIT {
            bail!(
                "a batch of {} entries is {} bytes, above the server's body limit of \
                 {BODY_LIMIT}: use a smaller --batch",
                chunk.len(),
                body.len()
            );
        }
        bodies.push((chunk.len(), body));
    }
    let started = Instant::now();
    for (count, body) in bodies {
        let answer = api.post_bytes("/v1/entries/batch", body).await?;
        let created = answer["created"].as_array().map_or(0, Vec::len);
        if created != count {
            bail!(
                "a batch of {count} entries created {created}: {}",
                clip(&answer.to_string())
            );
        }
    }
    Ok(started.elapsed())
}

/// The task of agent `agent`'s grant: its id and its repository.
fn task_of(task: usize) -> (String, String) {
    (format!("bench-task-{task}"), format!("bench-{task}"))
}

/// Opens `count` tasks, spread over `agents` agents (task 0 is agent 0's), each with its agent
/// assigned as the `writer` of the task's repository; `clients` at once.
async fn open_tasks_for(api: &Api, agents: usize, count: usize, clients: usize) -> Result<Phase> {
    let api = api.clone();
    let timed = concurrently(clients, 0..count, move |t| {
        let api = api.clone();
        async move {
            let (id, repo) = task_of(t);
            api.post(
                "/v1/tasks",
                &json!({
                    "id": id, "type": "patch_bug", "owner": "bench@example.org",
                    "resources": [format!("repository:{repo}")], "deadline_s": 7 * 86_400,
                }),
            )
            .await?;
            api.post(
                &format!("/v1/tasks/{id}/agents"),
                &json!({
                    "agent": agent_id(t * agents / count.max(1)),
                    "role": "coder", "permissions": ["writer"],
                }),
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    Ok(Phase::of(count, timed.elapsed))
}

/// Filler tuple `k`: first each agent in a team, then repositories read by nine agents and a
/// team each. No tuple twice (with at least 10 agents), none a task grant.
fn filler_tuple(k: usize, agents: usize) -> Value {
    let teams = TEAMS.min(agents);
    if k < agents {
        let team = format!("team:t{}", k % teams);
        return json!({"object": team, "relation": "member", "user": agent_user(k)});
    }
    let m = k - agents;
    let user = if m % 10 == 0 {
        format!("team:t{}#member", (m / 10) % teams)
    } else {
        agent_user(m % agents)
    };
    json!({"object": format!("repository:repo-{}", m / 10), "relation": "reader", "user": user})
}

/// Writes `count` filler tuples, [`TUPLES_PER_WRITE`] per request, `clients` at once.
async fn write_tuples(api: &Api, agents: usize, count: usize, clients: usize) -> Result<Phase> {
    let requests = count.div_ceil(TUPLES_PER_WRITE);
    let api = api.clone();
    let timed = concurrently(clients, 0..requests, move |r| {
        let api = api.clone();
        async move {
            let from = r * TUPLES_PER_WRITE;
            let to = (from + TUPLES_PER_WRITE).min(count);
            let writes: Vec<Value> = (from..to).map(|k| filler_tuple(k, agents)).collect();
            api.post(
                "/v1/rebac/tuples",
                &json!({"writes": {"tuple_keys": writes}}),
            )
            .await?;
            if requests >= 100 && (r + 1) % (requests / 10) == 0 {
                progress(format_args!("  … {to} tuples requested"));
            }
            Ok(())
        }
    })
    .await?;
    Ok(Phase::of(count, timed.elapsed))
}

// ---- measurements -------------------------------------------------------------------------

/// Decision latency for agent 0 on its task's repository, then SVID-fetch latency for this
/// process.
async fn latencies(api: &Api, data_dir: &Path, me: &Caller) -> Result<Latencies> {
    let mut samples = Vec::with_capacity(AUTHORIZE_MEASURED);
    for i in 0..AUTHORIZE_WARMUP + AUTHORIZE_MEASURED {
        let t = Instant::now();
        authorize_once(api).await?;
        if i >= AUTHORIZE_WARMUP {
            samples.push(t.elapsed());
        }
    }
    let authorize = Latency::of(samples);

    let socket = data_dir.join("workload.sock");
    let mut client = workload::api::client::connect(socket.clone())
        .await
        .with_context(|| format!("cannot reach the Workload API at {}", socket.display()))?;
    let mut samples = Vec::with_capacity(SVID_MEASURED);
    for i in 0..SVID_WARMUP + SVID_MEASURED {
        let t = Instant::now();
        let (id, _token) = workload::api::client::fetch_jwt(&mut client, vec!["bench".into()])
            .await
            .map_err(|s| crate::client::workload_error(&s))
            .context("fetching this process's JWT-SVID")?;
        let elapsed = t.elapsed();
        if id != me.spiffe_id {
            bail!("the Workload API issued `{id}`, not `{}`", me.spiffe_id);
        }
        if i >= SVID_WARMUP {
            samples.push(elapsed);
        }
    }
    Ok(Latencies {
        authorize,
        svid_fetch: Latency::of(samples),
    })
}

/// One `/v1/authorize`: agent 0 writes its task's repository; anything but an allow fails.
async fn authorize_once(api: &Api) -> Result<()> {
    let (_, repo) = task_of(0);
    let answer = api
        .post(
            "/v1/authorize",
            &json!({
                "package": PACKAGE, "principal": agent_id(0), "action": "write",
                "resource": {"type": "Repository", "id": repo},
            }),
        )
        .await?;
    if answer["allowed"] != true {
        bail!(
            "the measured decision was not an allow: {}",
            clip(&answer.to_string())
        );
    }
    Ok(())
}

/// CPU (% of one core) over `span`, and memory, of the process `pid`.
async fn idle(pid: u32, span: Duration) -> Result<Idle> {
    let tick = clock_ticks().await;
    let before = cpu_ticks(pid)?;
    let started = Instant::now();
    tokio::time::sleep(span).await;
    let after = cpu_ticks(pid)?;
    let seconds = started.elapsed().as_secs_f64();
    let (rss_mb, peak_rss_mb) = memory(pid)?;
    Ok(Idle {
        seconds,
        cpu_percent: after.saturating_sub(before) as f64 / tick / seconds * 100.0,
        rss_mb,
        peak_rss_mb,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, Linux's usual value, if that fails).
async fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().await;
    out.ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of `pid`, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        // Field 3 (state) is the first after the name.
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: no field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// VmRSS and VmHWM of `pid`, MB (10^6 bytes).
fn memory(pid: u32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = |name: &str| -> Result<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .with_context(|| format!("{path}: no {name}"))
    };
    Ok((kib("VmRSS:")? * 1024.0 / 1e6, kib("VmHWM:")? * 1024.0 / 1e6))
}

/// What `concurrently` measured.
struct Timed {
    /// Wall time of the whole run.
    elapsed: Duration,
    /// Each job's time.
    latencies: Vec<Duration>,
}

/// Runs `job(i)` for every `i` in `range`, `clients` at a time; the first failure ends the
/// run.
async fn concurrently<F, Fut>(
    clients: usize,
    range: std::ops::Range<usize>,
    job: F,
) -> Result<Timed>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1).min(range.len().max(1)) {
        let (job, next) = (Arc::clone(&job), Arc::clone(&next));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                job(i).await?;
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.context("a benchmark client failed")??);
    }
    Ok(Timed {
        elapsed: started.elapsed(),
        latencies,
    })
}

// ---- installs, servers and the API ---------------------------------------------------------

/// This process as the Workload API sees it: the entry that gives it an identity.
struct Caller {
    spiffe_id: String,
    selectors: Vec<String>,
}

impl Caller {
    /// The SPIFFE ID `bench/self`, for this Unix user running this executable.
    fn this_process(exe: &Path) -> Result<Self> {
        let path = exe
            .to_str()
            .with_context(|| format!("the executable path {} is not UTF-8", exe.display()))?;
        Ok(Self {
            spiffe_id: format!("spiffe://{TRUST_DOMAIN}/bench/self"),
            selectors: vec![
                format!("unix:uid:{}", own_uid()),
                format!("unix:path:{path}"),
            ],
        })
    }
}

/// An initialised data directory and its bootstrap admin token.
struct Install {
    data_dir: PathBuf,
    token: String,
}

impl Install {
    /// `warden init` in `tmp/NAME`, on SQLite there or on a fresh PostgreSQL schema (added to
    /// `schemas` before anything is made in it, so it is dropped whatever happens next).
    async fn create(
        exe: &Path,
        tmp: &Path,
        name: &str,
        args: &AgentsArgs,
        schemas: &mut Vec<String>,
    ) -> Result<Self> {
        let data_dir = tmp.join(name);
        let mut cmd = warden(exe);
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .args(["init", "--trust-domain", TRUST_DOMAIN]);
        if let Some(url) = &args.database_url {
            let schema = format!("warden_bench_agents_{}_{name}", std::process::id());
            schemas.push(schema.clone());
            store::PostgresStore::connect_with_schema(url, &schema)
                .await
                .with_context(|| format!("creating schema {schema}"))?
                .close()
                .await;
            let sep = if url.contains('?') { '&' } else { '?' };
            cmd.arg("--database-url")
                .arg(format!("{url}{sep}options=-c%20search_path%3D{schema}"));
        }
        let out = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("running warden init")?;
        if !out.status.success() {
            bail!(
                "warden init failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let token_file = data_dir.join("admin.token");
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?
            .trim()
            .to_owned();
        Ok(Self { data_dir, token })
    }
}

/// A `warden` command with none of the caller's `WARDEN_*` or proxy settings, plain logs,
/// killed if dropped.
fn warden(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_lowercase();
        if name.starts_with("warden_") || name.ends_with("_proxy") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A running `warden serve` (SIGKILLed if dropped before [`Serve::stop`]).
struct Serve {
    child: Child,
    pid: u32,
    url: String,
    /// The last lines of its standard error, for error messages.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Serve {
    /// Starts `warden serve` on a free loopback port and waits until it prints its address.
    async fn start(exe: &Path, data_dir: &Path) -> Result<Self> {
        let mut cmd = warden(exe);
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting warden serve")?;
        let pid = child.id().context("warden serve exited at once")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        {
            // Drains stderr for the server's whole life: a full pipe would stall it.
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.strip_prefix("warden listening on ") {
                        let _ = addr_tx.send(rest.trim().to_owned());
                    }
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let mut server = Self {
            child,
            pid,
            url: String::new(),
            log,
        };
        let until = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(url) = addr_rx.try_recv() {
                server.url = url;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                // Let the reader collect the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                bail!(
                    "warden serve exited with {status} before listening:\n{}",
                    server.log()
                );
            }
            if Instant::now() > until {
                bail!(
                    "warden serve did not print its address within {START_DEADLINE:?}:\n{}",
                    server.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `/readyz` answers 200.
    async fn ready(self, http: &reqwest::Client) -> Result<Self> {
        let until = Instant::now() + START_DEADLINE;
        loop {
            let answer = http.get(format!("{}/readyz", self.url)).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(self);
            }
            if Instant::now() > until {
                bail!(
                    "warden serve was not ready within {START_DEADLINE:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The last lines the server wrote to standard error.
    fn log(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().map(|l| format!("{l}\n")).collect()
    }

    /// SIGTERM (with `kill`; this crate has no unsafe code for `kill(2)`), then waits for a
    /// clean exit.
    async fn stop(mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.pid.to_string()])
            .status()
            .await
            .context("running kill")?;
        if !status.success() {
            bail!("kill -s TERM {} failed", self.pid);
        }
        let exit = tokio::time::timeout(STOP_DEADLINE, self.child.wait())
            .await
            .with_context(|| {
                format!(
                    "warden serve did not stop within {STOP_DEADLINE:?}:\n{}",
                    self.log()
                )
            })??;
        if !exit.success() {
            bail!("warden serve exited with {exit}:\n{}", self.log());
        }
        Ok(())
    }
}

/// The admin API of one server.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
}

impl Api {
    fn new(http: &reqwest::Client, base: &str, token: &str) -> Self {
        Self {
            http: http.clone(),
            base: base.into(),
            token: token.into(),
        }
    }

    /// `POST path` with a JSON body; the JSON answer, or an error with the server's.
    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let req = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(req, "POST", path).await
    }

    /// `POST path` with a body already serialised as JSON.
    async fn post_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(req, "POST", path).await
    }

    /// `PUT path` with a text body.
    async fn put_text(&self, path: &str, body: &str) -> Result<Value> {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(body.to_owned());
        self.send(req, "PUT", path).await
    }

    async fn send(&self, req: reqwest::RequestBuilder, method: &str, path: &str) -> Result<Value> {
        let resp = req
            .bearer_auth(&*self.token)
            .send()
            .await
            .with_context(|| format!("{method} {path}: no answer"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{method} {path}: reading the answer"))?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {}", clip(&text));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: not JSON: {}", clip(&text)))
    }
}

// ---- printing -----------------------------------------------------------------------------

/// The report as tables, with the targets last.
fn print_table(r: &Report) {
    println!(
        "warden bench agents ({} build) on {}: {} agents, {} open tasks, {} relationship \
         tuples ({} clients, bulk batches of {})",
        r.build, r.backend, r.agents, r.open_tasks, r.tuples, r.clients, r.batch
    );
    println!();
    println!("registration, in {} steps", r.registration.len());
    println!(
        "| {:>9} | {:>10} | {:>14} | {:>13} | {:>7} | {:>9} |",
        "agents", "one by one", "one by one/s", "p50/p99 ms", "bulk", "bulk/s"
    );
    println!(
        "|{:-<11}|{:-<12}|{:-<16}|{:-<15}|{:-<9}|{:-<11}|",
        "", "", "", "", "", ""
    );
    for s in &r.registration {
        println!(
            "| {:>9} | {:>10} | {:>14.0} | {:>13} | {:>7} | {:>9.0} |",
            s.agents,
            s.one_by_one,
            s.one_by_one_per_s,
            format!(
                "{:.1}/{:.1}",
                s.one_by_one_latency.p50_ms, s.one_by_one_latency.p99_ms
            ),
            s.bulk,
            s.bulk_per_s
        );
    }
    println!();
    println!(
        "tasks opened and assigned (with a grant): {} in {:.1} s = {:.0}/s",
        r.tasks.count, r.tasks.seconds, r.tasks.per_s
    );
    println!(
        "relationship tuples written ({TUPLES_PER_WRITE} per request): {} in {:.1} s = {:.0}/s",
        r.tuple_writes.count, r.tuple_writes.seconds, r.tuple_writes.per_s
    );
    println!(
        "idle: {:.2}% of one core over {:.0} s; RSS {:.0} MB (peak {:.0} MB)",
        r.idle.cpu_percent, r.idle.seconds, r.idle.rss_mb, r.idle.peak_rss_mb
    );
    println!(
        "restart: listening after {:.2} s, ready after {:.2} s, first decision after {:.2} s; \
         RSS {:.0} MB",
        r.restart.listening_s, r.restart.ready_s, r.restart.first_decision_s, r.restart.rss_mb
    );
    println!();
    println!(
        "| {:<26} | {:>17} | {:>17} |",
        "latency (ms, p50/p99)",
        format!("{} agents", r.baseline_agents),
        format!("{} agents", r.agents)
    );
    println!("|{:-<28}|{:-<19}|{:-<19}|", "", "", "");
    for (name, base, now) in [
        ("/v1/authorize", r.baseline.authorize, r.at_scale.authorize),
        (
            "Workload API SVID fetch",
            r.baseline.svid_fetch,
            r.at_scale.svid_fetch,
        ),
    ] {
        println!(
            "| {name:<26} | {:>17} | {:>17} |",
            format!("{:.2}/{:.2}", base.p50_ms, base.p99_ms),
            format!("{:.2}/{:.2}", now.p50_ms, now.p99_ms)
        );
    }
    println!();
    let width = r.targets.iter().map(|t| t.name.len()).max().unwrap_or(0);
    println!(
        "| {:<width$} | {:<17} | {:<6} | measured",
        "target", "wanted", "result"
    );
    println!(
        "|{:-<w$}|{:-<19}|{:-<8}|{:-<10}",
        "",
        "",
        "",
        "",
        w = width + 2
    );
    for t in &r.targets {
        println!(
            "| {:<width$} | {:<17} | {:<6} | {}",
            t.name,
            t.target,
            if t.pass { "pass" } else { "FAIL" },
            t.measured
        );
    }
}

/// A progress line on standard error (dropped if it cannot be written).
fn progress(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_s(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// At most 500 characters of a server answer, for an error message.
fn clip(text: &str) -> String {
    match text.char_indices().nth(500) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
