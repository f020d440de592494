//! The relationship engine in process, on a generated store of ~1,000,000 tuples.
//!
//! `cargo bench -p rebac --bench rebac` (targets: Check p50 ≤ 20 µs; ListObjects over 10,000
//! objects ≤ 10 ms; building the graph from 1M tuples well inside the 10 s start-up budget).
//!
//! The store: 100,000 users, each in 5 of 20,000 level-1 groups; level-1 groups nested in
//! level-2 (2,000), level 3 (200) and level 4 (20) groups, two parents each; 20,000 folders in
//! a random tree (`viewer from parent`), each shared with one group (mostly level 1, some
//! levels 2–4); 200,000 documents in those folders, each shared with one group, 10% also with
//! a user. Plus a `bench` folder with 100 subfolders of 100 documents, viewable by one user
//! through a group: the ListObjects case.
//!
//! - `build/from_tuples`: `Graph::from_tuples` on the tuples already parsed in memory;
//!   `build/parse_validate_insert` adds parsing the strings and `Model::validate_tuple`, as a
//!   server loading rows would. Bytes per tuple: resident-set growth while building (Linux
//!   `/proc/self/statm`) and `Graph::heap_bytes`.
//! - `check/allowed`, `check/denied`: `check(user, viewer, doc)` over 4,096 random pairs of
//!   each answer; `check/userset_user`: the user is a group userset.
//! - `list_objects/10k`: the 10,000 documents of the `bench` folder; `list_objects/random_user`:
//!   every document a random user can view.
//!
//! After Criterion's means, a second pass times each call with `Instant` (up to 100,000 calls
//! or 3 s per case) and prints p50 / p99 / p99.9.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rebac::{CheckRequest, Graph, Model, ObjectRef, Tuple, TupleKey, User};

const MODEL: &str = "model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type folder
  relations
    define parent: [folder]
    define viewer: [user, group#member] or viewer from parent
type doc
  relations
    define parent: [folder]
    define viewer: [user, group#member] or viewer from parent
";

const POOL: usize = 4_096;

struct Scale {
    users: usize,
    l1: usize,
    l2: usize,
    l3: usize,
    l4: usize,
    folders: usize,
    docs: usize,
    bench_folders: usize,
    bench_docs_per_folder: usize,
}

const FULL: Scale = Scale {
    users: 100_000,
    l1: 20_000,
    l2: 2_000,
    l3: 200,
    l4: 20,
    folders: 20_000,
    docs: 200_000,
    bench_folders: 100,
    bench_docs_per_folder: 100,
};

/// For `cargo bench -- --test` and `cargo test --benches`: the same shape, 1/100 the size.
const SMALL: Scale = Scale {
    users: 1_000,
    l1: 200,
    l2: 20,
    l3: 4,
    l4: 2,
    folders: 200,
    docs: 2_000,
    bench_folders: 10,
    bench_docs_per_folder: 10,
};

fn generate(rng: &mut StdRng, s: &Scale) -> Vec<String> {
    let mut out = Vec::with_capacity(1_050_000);
    for u in 0..s.users {
        for _ in 0..5 {
            out.push(format!(
                "group:l1-{}#member@user:u{u}",
                rng.gen_range(0..s.l1)
            ));
        }
    }
    let levels = [(1, s.l1, s.l2), (2, s.l2, s.l3), (3, s.l3, s.l4)];
    for (level, n, parents) in levels {
        for g in 0..n {
            for _ in 0..2 {
                out.push(format!(
                    "group:l{}-{}#member@group:l{level}-{g}#member",
                    level + 1,
                    rng.gen_range(0..parents)
                ));
            }
        }
    }
    let group = |rng: &mut StdRng| {
        let (level, n) = match rng.gen_range(0..100) {
            0..70 => (1, s.l1),
            70..90 => (2, s.l2),
            90..98 => (3, s.l3),
            _ => (4, s.l4),
        };
        format!("group:l{level}-{}#member", rng.gen_range(0..n))
    };
    let roots = s.folders / 10;
    for f in 0..s.folders {
        if f >= roots {
            out.push(format!(
                "folder:f{f}#parent@folder:f{}",
                rng.gen_range(0..f)
            ));
        }
        out.push(format!("folder:f{f}#viewer@{}", group(rng)));
    }
    for d in 0..s.docs {
        out.push(format!(
            "doc:d{d}#parent@folder:f{}",
            rng.gen_range(0..s.folders)
        ));
        out.push(format!("doc:d{d}#viewer@{}", group(rng)));
        if d % 10 == 0 {
            out.push(format!(
                "doc:d{d}#viewer@user:u{}",
                rng.gen_range(0..s.users)
            ));
        }
    }
    out.push("folder:bench#viewer@group:bench#member".into());
    out.push("group:bench#member@user:bench-reader".into());
    for f in 0..s.bench_folders {
        out.push(format!("folder:bench-{f}#parent@folder:bench"));
        for d in 0..s.bench_docs_per_folder {
            out.push(format!("doc:bench-{f}-{d}#parent@folder:bench-{f}"));
        }
    }
    out
}

/// Resident set size in bytes (Linux), 0 elsewhere.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

struct Fixture {
    model: Model,
    graph: Graph,
    allowed: Vec<CheckRequest>,
    denied: Vec<CheckRequest>,
    usersets: Vec<CheckRequest>,
    random_users: Vec<User>,
    tuples: Vec<Tuple>,
    strings: Vec<String>,
}

fn fixture(scale: &Scale, report: bool) -> Fixture {
    let model = Model::parse(MODEL).unwrap();
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let strings = generate(&mut rng, scale);
    let tuples: Vec<Tuple> = strings
        .iter()
        .map(|s| Tuple::new(TupleKey::parse(s).unwrap()))
        .collect();
    let before = rss();
    let start = Instant::now();
    let graph = Graph::from_tuples(1, tuples.iter().cloned()).unwrap();
    let build = start.elapsed();
    let grown = rss().saturating_sub(before);
    if report {
        let n = graph.len();
        println!(
            "graph: {n} tuples, built in {:.2} s; resident growth {:.1} MiB = {:.0} bytes/tuple; \
             heap estimate {:.1} MiB = {:.0} bytes/tuple",
            build.as_secs_f64(),
            grown as f64 / 1048576.0,
            grown as f64 / n as f64,
            graph.heap_bytes() as f64 / 1048576.0,
            graph.heap_bytes() as f64 / n as f64,
        );
        let start = Instant::now();
        let mut g = Graph::new();
        for s in &strings {
            let key = TupleKey::parse(s).unwrap();
            model.validate_tuple(&key).unwrap();
            g.insert(Tuple::new(key)).unwrap();
        }
        println!(
            "graph: parse + validate + insert of {} strings in {:.2} s",
            strings.len(),
            start.elapsed().as_secs_f64()
        );
    }
    let mut allowed = Vec::new();
    let mut denied = Vec::new();
    let mut attempts = 0;
    while (allowed.len() < POOL || denied.len() < POOL) && attempts < 2_000_000 {
        attempts += 1;
        let req = CheckRequest::new(
            User::parse(&format!("user:u{}", rng.gen_range(0..scale.users))).unwrap(),
            "viewer",
            ObjectRef::parse(&format!("doc:d{}", rng.gen_range(0..scale.docs))).unwrap(),
            0,
        );
        let ok = rebac::check(&model, &graph, &req).unwrap();
        if ok && allowed.len() < POOL {
            allowed.push(req);
        } else if !ok && denied.len() < POOL {
            denied.push(req);
        }
    }
    if report {
        println!(
            "check pools: {} allowed, {} denied from {attempts} random (user, doc) pairs",
            allowed.len(),
            denied.len()
        );
    }
    let usersets = (0..POOL)
        .map(|_| {
            CheckRequest::new(
                User::parse(&format!("group:l1-{}#member", rng.gen_range(0..scale.l1))).unwrap(),
                "viewer",
                ObjectRef::parse(&format!("doc:d{}", rng.gen_range(0..scale.docs))).unwrap(),
                0,
            )
        })
        .collect();
    let random_users = (0..64)
        .map(|_| User::parse(&format!("user:u{}", rng.gen_range(0..scale.users))).unwrap())
        .collect();
    Fixture {
        model,
        graph,
        allowed,
        denied,
        usersets,
        random_users,
        tuples,
        strings,
    }
}

/// One measured operation: the `i`-th call.
type Op<'a> = Box<dyn Fn(usize) + 'a>;

fn percentiles(op: &dyn Fn(usize), budget: Duration, max: usize) -> (u128, u128, u128, usize) {
    for i in 0..max.min(1_000) {
        op(i);
    }
    let start = Instant::now();
    let mut samples = Vec::with_capacity(max);
    let mut i = 0;
    while samples.len() < max && start.elapsed() < budget {
        let t = Instant::now();
        op(i);
        samples.push(t.elapsed().as_nanos());
        i += 1;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99), at(0.999), samples.len())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let test_mode = args.iter().any(|a| a == "--test");
    let filter: Option<&str> = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(String::as_str);
    let f = fixture(if test_mode { &SMALL } else { &FULL }, !test_mode);
    let (model, graph) = (&f.model, &f.graph);
    let reader = User::parse("user:bench-reader").unwrap();
    let expected = if test_mode { 100 } else { 10_000 };
    let n = rebac::list_objects(model, graph, "doc", "viewer", &reader, &[], 0)
        .unwrap()
        .len();
    assert_eq!(n, expected);

    let mut ops: Vec<(String, Op<'_>, usize)> = Vec::new();
    ops.push((
        "check/allowed".into(),
        Box::new(|i| {
            black_box(rebac::check(model, graph, &f.allowed[i % f.allowed.len()]).unwrap());
        }),
        100_000,
    ));
    ops.push((
        "check/denied".into(),
        Box::new(|i| {
            black_box(rebac::check(model, graph, &f.denied[i % f.denied.len()]).unwrap());
        }),
        100_000,
    ));
    ops.push((
        "check/userset_user".into(),
        Box::new(|i| {
            black_box(rebac::check(model, graph, &f.usersets[i % POOL]).unwrap());
        }),
        100_000,
    ));
    ops.push((
        "list_objects/10k".into(),
        Box::new(|_| {
            black_box(rebac::list_objects(model, graph, "doc", "viewer", &reader, &[], 0).unwrap());
        }),
        300,
    ));
    ops.push((
        "list_objects/random_user".into(),
        Box::new(|i| {
            let u = &f.random_users[i % f.random_users.len()];
            black_box(rebac::list_objects(model, graph, "doc", "viewer", u, &[], 0).unwrap());
        }),
        300,
    ));

    let mut criterion = Criterion::default().configure_from_args();
    for (name, op, _) in &ops {
        if name.starts_with("list_objects") {
            let mut group = criterion.benchmark_group("list_objects");
            group.sample_size(10);
            group.bench_function(name.trim_start_matches("list_objects/"), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    op(i);
                    i = i.wrapping_add(1);
                })
            });
            group.finish();
        } else {
            criterion.bench_function(name, |b| {
                let mut i = 0usize;
                b.iter(|| {
                    op(i);
                    i = i.wrapping_add(1);
                })
            });
        }
    }
    criterion.final_summary();

    if test_mode {
        return;
    }
    let sizes: Vec<usize> = f
        .random_users
        .iter()
        .take(8)
        .map(|u| {
            rebac::list_objects(model, graph, "doc", "viewer", u, &[], 0)
                .unwrap()
                .len()
        })
        .collect();
    println!("\nlist_objects/random_user result sizes (first 8 users): {sizes:?}");
    let start = Instant::now();
    let rebuilt = Graph::from_tuples(1, f.tuples.iter().cloned()).unwrap();
    println!(
        "build/from_tuples again: {} tuples in {:.2} s ({} strings kept for the parse pass)",
        rebuilt.len(),
        start.elapsed().as_secs_f64(),
        f.strings.len()
    );
    println!("\nper-call latency (Instant around each call)");
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>8}",
        "case", "p50 µs", "p99 µs", "p99.9 µs", "calls"
    );
    for (name, op, max) in &ops {
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let (p50, p99, p999, n) = percentiles(op.as_ref(), Duration::from_secs(3), *max);
        let us = |ns: u128| ns as f64 / 1_000.0;
        println!(
            "{name:<32} {:>10.2} {:>10.2} {:>10.2} {n:>8}",
            us(p50),
            us(p99),
            us(p999)
        );
    }
}
