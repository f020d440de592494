//! `warden bench hold` and `warden bench pg-roles`: the broker's figures, measured with the
//! real code paths (see docs/benchmarks.md).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench::percentile;

/// Hold → deny on a running server: for each round, issue a token, start a prober that
/// introspects it back to back, put the agent on hold, and time the first inactive answer
/// against the moment the hold call returned; then release.
pub(crate) async fn hold(
    server: &str,
    token_file: &PathBuf,
    enforcer: &str,
    subject_svid: &str,
    agent: &str,
    rounds: usize,
) -> Result<()> {
    let admin = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading {}", token_file.display()))?
        .trim()
        .to_owned();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = server.trim_end_matches('/').to_owned();
    let mut after_return = Vec::new();
    let mut from_call = Vec::new();
    let mut call = Vec::new();
    let mut early = 0usize;
    for round in 0..rounds {
        let resp: Value = http
            .post(format!("{base}/oauth2/token"))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", subject_svid),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("audience", "https://git.example.org"),
                ("scope", "repo:read"),
            ])
            .send()
            .await?
            .json()
            .await?;
        let Some(token) = resp["access_token"].as_str().map(str::to_owned) else {
            bail!("round {round}: no token: {resp}");
        };
        let prober = {
            let (http, base, enforcer) = (http.clone(), base.clone(), enforcer.to_owned());
            tokio::spawn(async move {
                loop {
                    let v: Value = http
                        .post(format!("{base}/oauth2/introspect"))
                        .bearer_auth(&enforcer)
                        .form(&[("token", token.as_str())])
                        .send()
                        .await?
                        .json()
                        .await?;
                    if v["active"] == false {
                        return Ok::<Instant, anyhow::Error>(Instant::now());
                    }
                }
            })
        };
        // Let the prober see the token active first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        let status = http
            .post(format!("{base}/v1/holds"))
            .bearer_auth(&admin)
            .json(
                &json!({"kind": "agent", "value": agent, "reason": format!("bench round {round}")}),
            )
            .send()
            .await?
            .status();
        let t1 = Instant::now();
        if !status.is_success() {
            bail!("hold answered {status}");
        }
        let denied = tokio::time::timeout(Duration::from_secs(5), prober)
            .await
            .context("no deny within 5 s")???;
        call.push(t1 - t0);
        from_call.push(denied - t0);
        match denied.checked_duration_since(t1) {
            Some(d) => after_return.push(d),
            None => {
                early += 1;
                after_return.push(Duration::ZERO);
            }
        }
        let status = http
            .delete(format!(
                "{base}/v1/holds/agent/{}?reason=bench",
                crate::client::percent_encode(agent)
            ))
            .bearer_auth(&admin)
            .send()
            .await?
            .status();
        if !status.is_success() {
            bail!("release answered {status}");
        }
    }
    for v in [&mut after_return, &mut from_call, &mut call] {
        v.sort();
    }
    let show = |name: &str, v: &[Duration]| {
        println!(
            "{name:<44} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            percentile(v, 0.50).as_secs_f64() * 1e3,
            percentile(v, 0.99).as_secs_f64() * 1e3,
            v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    };
    println!("hold → deny, {rounds} rounds (introspection prober back to back):");
    show("hold call (POST /v1/holds) took", &call);
    show(
        "first inactive answer after the call returned",
        &after_return,
    );
    show("first inactive answer after the call started", &from_call);
    println!("rounds where the deny was seen before the call returned: {early}");
    Ok(())
}

/// PostgreSQL role create + revoke through the dynamic-credentials engine, sequentially and
/// with `concurrency` at once.
pub(crate) async fn pg_roles(url: &str, count: usize, concurrency: usize) -> Result<()> {
    use broker::postgres as pg;
    let dsn = pg::AdminDsn::parse(url)?;
    let check = pg::check(&dsn).await?;
    let schema = format!("warden_bench_{}", uuid_hex());
    let setup = format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.customers (id int); \
         CREATE TABLE {schema}.orders (id int)"
    );
    run_psql(url, &setup).await?;
    let template = pg::RoleTemplate::from_json(
        &json!({"grants": [{"privileges": ["SELECT"], "tables": [format!("{schema}.customers"), format!("{schema}.orders")]}]})
            .to_string(),
    )?;
    let name = pg::TemplateName::parse("bench")?;
    println!(
        "PostgreSQL {} at {} as {}",
        check.server_version,
        dsn.target(),
        check.user
    );
    let result = async {
        for conc in [1, concurrency.max(1)] {
            let started = Instant::now();
            let mut lat = Vec::new();
            let mut tasks = tokio::task::JoinSet::new();
            let per = count / conc;
            for w in 0..conc {
                let (dsn, template, name) = (dsn.clone(), template.clone(), name.clone());
                tasks.spawn(async move {
                    let mut out = Vec::new();
                    for i in 0..per {
                        let role = pg::role_name(&name, &format!("lse_{w:04}{i:08}"));
                        let password = pg::generate_password();
                        let until = time::OffsetDateTime::now_utc() + Duration::from_secs(300);
                        let t = Instant::now();
                        pg::create_role(&dsn, &template, &role, &password, until).await?;
                        pg::revoke_role(&dsn, &role).await?;
                        out.push(t.elapsed());
                    }
                    Ok::<_, broker::BrokerError>(out)
                });
            }
            while let Some(r) = tasks.join_next().await {
                lat.extend(r??);
            }
            let secs = started.elapsed().as_secs_f64();
            lat.sort();
            println!(
                "concurrency {conc:>2}: {} create+revoke pairs in {secs:.2} s = {:.0}/s; per pair p50 {:.1} ms p99 {:.1} ms",
                lat.len(),
                lat.len() as f64 / secs,
                percentile(&lat, 0.50).as_secs_f64() * 1e3,
                percentile(&lat, 0.99).as_secs_f64() * 1e3
            );
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    run_psql(url, &format!("DROP SCHEMA {schema} CASCADE")).await?;
    result
}

fn uuid_hex() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs SQL for the benchmark's own fixtures with `psql` (the warden binary speaks SQL only
/// through its store and engine crates).
async fn run_psql(url: &str, sql: &str) -> Result<()> {
    let out = tokio::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .await
        .context("running psql for the benchmark's tables")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
