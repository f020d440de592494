//! Policy decisions in process.
//!
//! `cargo bench -p policy --bench pdp` (target: 1,000 Cedar policies p50 ≤ 10 µs, p99 ≤ 50 µs;
//! 10,000 policies ≤ 2× the 1,000 figure).
//!
//! - `cedar_{1000,10000}/decide`: [`CompiledPackage::decide`] (request and context checks,
//!   conversion, schema validation, the index) over a generated realistic set
//!   (`tests/support/generate.rs`, `Mix::Realistic`), cycling through 4,096 random requests.
//! - `…/decide_unindexed`: the same call with every policy handed to the plain
//!   `cedar_policy::Authorizer` — the gain from the index is the ratio of the two.
//! - `…/authorize_indexed` and `…/authorize_plain`: authorization alone on prebuilt Cedar
//!   requests — [`CedarIndex::is_authorized`] against the plain
//!   `cedar_policy::Authorizer::is_authorized` over the whole set, what Cedar's own
//!   benchmarks measure. The difference between `decide` and `authorize_indexed` is the cost
//!   of building and schema-validating the Cedar request.
//! - `cedar_adversarial_1000/*`: the equality test's mix (broad scopes everywhere), where the
//!   index has less to skip.
//! - `seed/{cedar,rego}`: the seed example (`examples/policies/coder`) in both languages.
//!
//! After Criterion's means, a second pass times each call with `Instant` (up to 100,000
//! calls or 3 s per case) and prints p50 / p99 / p99.9.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark harness"
)]

#[path = "../tests/support/generate.rs"]
mod generate;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cedar_policy::{Authorizer, Entities, PolicySet, Schema};
use criterion::Criterion;
use identity::SpiffeId;
use policy::CedarIndex;
use policy::{
    Agent, Attributes, CompiledPackage, Context, Language, Limits, PackageSource, Request,
    Resource, RiskScore, Task,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use generate::Mix;

/// The allocator the `warden` binary runs the PDP with (see `crates/warden/src/main.rs`), so
/// that the figures are those of the product.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const POOL: usize = 4_096;

struct CedarCase {
    name: String,
    package: CompiledPackage,
    requests: Vec<Request>,
    plain: PolicySet,
    index: CedarIndex,
    entities: Entities,
    cedar_requests: Vec<cedar_policy::Request>,
}

fn cedar_case(count: usize, mix: Mix, name: &str) -> CedarCase {
    let mut rng = StdRng::seed_from_u64(0xbe0c_0000 + count as u64);
    let schema_text = generate::schema();
    let text = generate::policies(&mut rng, count, mix);
    let package = CompiledPackage::compile(&PackageSource {
        language: Language::Cedar,
        files: vec![
            ("generated.cedar".into(), text.clone()),
            ("generated.cedarschema".into(), schema_text.clone()),
        ],
        entrypoint: None,
    })
    .unwrap();
    let population = match mix {
        Mix::Adversarial => 60,
        Mix::Realistic => count / 10,
    };
    let requests: Vec<Request> = (0..POOL)
        .map(|_| generate::request(&mut rng, population))
        .collect();
    let (schema, _) = Schema::from_cedarschema_str(&schema_text).unwrap();
    let cedar_requests = requests
        .iter()
        .map(|r| generate::cedar_request(&schema, r))
        .collect();
    CedarCase {
        name: name.to_owned(),
        package,
        requests,
        index: CedarIndex::new(&text.parse().unwrap(), &schema).unwrap(),
        plain: text.parse().unwrap(),
        entities: schema.action_entities().unwrap(),
        cedar_requests,
    }
}

fn seed_request() -> Request {
    Request {
        principal: SpiffeId::parse("spiffe://example.org/agent/coder").unwrap(),
        action: "write".into(),
        resource: Resource {
            kind: "Repository".into(),
            id: "warden".into(),
        },
        context: Context {
            agent: Agent {
                kind: "coder".into(),
                owner: "platform-team".into(),
                attributes: Attributes::new(),
            },
            task: Some(Task {
                id: "task-1".into(),
                kind: "patch_bug".into(),
                attributes: Attributes::new(),
            }),
            risk_score: RiskScore::from_f64(0.2).unwrap(),
            hold: false,
            delegation: vec![SpiffeId::parse("spiffe://example.org/agent/planner").unwrap()],
            time: 1_767_225_600,
            request: Attributes::new(),
            relations: Vec::new(),
        },
    }
}

fn seed(language: Language) -> CompiledPackage {
    let files = match language {
        Language::Cedar => vec![
            (
                "coder.cedar".into(),
                include_str!("../../../examples/policies/coder/coder.cedar").into(),
            ),
            (
                "coder.cedarschema".into(),
                include_str!("../../../examples/policies/coder/coder.cedarschema").into(),
            ),
        ],
        Language::Rego => vec![(
            "coder.rego".into(),
            include_str!("../../../examples/policies/coder/coder.rego").into(),
        )],
    };
    CompiledPackage::compile(&PackageSource {
        language,
        files,
        entrypoint: None,
    })
    .unwrap()
}

/// The operations measured on every Cedar case, in [`ops`].
const OPERATIONS: [&str; 4] = [
    "decide",
    "decide_unindexed",
    "authorize_indexed",
    "authorize_plain",
];

/// One measured operation: the `i`-th call.
type Op<'a> = Box<dyn Fn(usize) + 'a>;

fn ops(cases: &[CedarCase]) -> Vec<(String, Op<'_>)> {
    let limits = Limits::default();
    let authorizer = Authorizer::new();
    let mut ops: Vec<(String, Op<'_>)> = Vec::new();
    for case in cases {
        ops.push((
            format!("{}/decide", case.name),
            Box::new(move |i| {
                black_box(
                    case.package
                        .decide(&case.requests[i % POOL], &limits)
                        .unwrap(),
                );
            }),
        ));
        ops.push((
            format!("{}/decide_unindexed", case.name),
            Box::new(move |i| {
                black_box(
                    case.package
                        .decide_unindexed(&case.requests[i % POOL], &limits)
                        .unwrap(),
                );
            }),
        ));
        ops.push((
            format!("{}/authorize_indexed", case.name),
            Box::new(move |i| {
                black_box(
                    case.index
                        .is_authorized(&case.cedar_requests[i % POOL], &case.entities),
                );
            }),
        ));
        let authorizer = authorizer.clone();
        ops.push((
            format!("{}/authorize_plain", case.name),
            Box::new(move |i| {
                black_box(authorizer.is_authorized(
                    &case.cedar_requests[i % POOL],
                    &case.plain,
                    &case.entities,
                ));
            }),
        ));
    }
    ops
}

fn percentiles(op: &dyn Fn(usize)) -> (u128, u128, u128, usize) {
    for i in 0..1_000 {
        op(i);
    }
    let budget = Duration::from_secs(3);
    let start = Instant::now();
    let mut samples = Vec::with_capacity(100_000);
    let mut i = 0;
    while samples.len() < 100_000 && start.elapsed() < budget {
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
    // The filter is the first argument that is neither an option nor an option's value.
    const WITH_VALUE: [&str; 12] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--profile-time",
        "--save-baseline",
        "--baseline",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--color",
        "--output-format",
    ];
    let filter: Option<&str> = args
        .iter()
        .skip(1)
        .zip(&args)
        .find(|(a, before)| !a.starts_with('-') && !WITH_VALUE.contains(&before.as_str()))
        .map(|(a, _)| a.as_str());

    // Only the cases a filter can select are built (compiling 10,000 policies takes a while):
    // those with an operation whose name holds the filter, taken literally.
    let wanted = |case: &str| {
        filter.is_none_or(|f| {
            let f = f.trim_start_matches('^').trim_end_matches('$');
            OPERATIONS
                .iter()
                .any(|op| format!("{case}/{op}").contains(f))
        })
    };
    let cases: Vec<CedarCase> = [
        (1_000, Mix::Realistic, "cedar_1000"),
        (10_000, Mix::Realistic, "cedar_10000"),
        (1_000, Mix::Adversarial, "cedar_adversarial_1000"),
    ]
    .into_iter()
    .filter(|(_, _, name)| wanted(name))
    .map(|(count, mix, name)| cedar_case(count, mix, name))
    .collect();
    let seed_cedar = seed(Language::Cedar);
    let seed_rego = seed(Language::Rego);
    let seed_req = seed_request();
    let limits = Limits::default();
    // Checked without the Rego time limit, which a run under valgrind would exceed.
    let unhurried = Limits {
        rego_time_limit: Duration::from_secs(60),
        ..Limits::default()
    };
    assert!(
        seed_cedar
            .decide(&seed_req, &unhurried)
            .unwrap()
            .is_allowed()
    );
    assert!(
        seed_rego
            .decide(&seed_req, &unhurried)
            .unwrap()
            .is_allowed()
    );

    let mut all = ops(&cases);
    all.push((
        "seed/cedar".into(),
        Box::new(|_| {
            black_box(seed_cedar.decide(&seed_req, &limits).unwrap());
        }),
    ));
    all.push((
        "seed/rego".into(),
        Box::new(|_| {
            black_box(seed_rego.decide(&seed_req, &limits).unwrap());
        }),
    ));

    let mut criterion = Criterion::default().configure_from_args();
    for (name, op) in &all {
        criterion.bench_function(name, |b| {
            let mut i = 0usize;
            b.iter(|| {
                op(i);
                i = i.wrapping_add(1);
            })
        });
    }
    criterion.final_summary();

    if test_mode {
        return;
    }
    println!("\nper-call latency (Instant around each call)");
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>8}",
        "case", "p50 µs", "p99 µs", "p99.9 µs", "calls"
    );
    for (name, op) in &all {
        // Criterion takes the filter as a regex; here `^` and `$` anchor it, the rest is literal.
        let selected = filter.is_none_or(|f| {
            let core = f.trim_start_matches('^').trim_end_matches('$');
            match (f.starts_with('^'), f.ends_with('$')) {
                (true, true) => name == core,
                (true, false) => name.starts_with(core),
                (false, true) => name.ends_with(core),
                (false, false) => name.contains(core),
            }
        });
        if !selected {
            continue;
        }
        let (p50, p99, p999, n) = percentiles(op.as_ref());
        let us = |ns: u128| ns as f64 / 1_000.0;
        println!(
            "{name:<40} {:>10.2} {:>10.2} {:>10.2} {n:>8}",
            us(p50),
            us(p99),
            us(p999)
        );
    }
}
