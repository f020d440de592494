//! `warden demo`, scenario 1: an agent with no standing credentials reads a customer database
//! through a dynamic PostgreSQL role made for its task, and gives it back (the same steps as
//! `examples/least-privilege-db/run.sh`, shortened).

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::demo::{Demo, SUMMARIZER, last_line};

const SEED: &str = include_str!("../../../examples/least-privilege-db/seed.sql");
const ROLE: &str = "db_read_summary";
const TASK: &str = "summarise-q3";

/// Runs `psql URL -c SQL` (or `-f FILE`); its output, or the error it printed.
async fn psql(url: &str, args: &[&str]) -> Result<Result<String, String>> {
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
        .args(args)
        .output()
        .await
        .context("running psql")?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    Ok(if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    })
}

/// The admin URL with another database: `postgres://u@h:p/db?q` → `…/name?q`.
fn with_database(admin_url: &str, name: &str) -> Result<String> {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, ""), |(b, q)| (b, q));
    let Some((server, _)) = base
        .rsplit_once('/')
        .filter(|(s, _)| s.contains("://") && s.len() > s.find("://").unwrap_or(0) + 3)
    else {
        bail!("the database URL must name a database: postgres://user@host:port/db");
    };
    Ok(if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    })
}

pub(crate) async fn least_privilege(demo: &mut Demo, admin_url: &str) -> Result<()> {
    println!("\n== Scenario 1: a least-privilege agent with no standing credentials");
    let name = format!("warden_demo_{}", std::process::id());
    let url = with_database(admin_url, &name)?;
    psql(admin_url, &["-c", &format!("CREATE DATABASE \"{name}\"")])
        .await?
        .map_err(|e| anyhow::anyhow!("creating the demo database: {e}"))?;
    let result = run(demo, &url).await;
    // Whatever happened: leases given back, the database dropped.
    let _ = demo
        .operator(&[
            "lease",
            "revoke",
            "--prefix",
            &format!("postgres/{ROLE}/"),
            "--reason",
            "demo over",
        ])
        .await;
    let _ = psql(
        admin_url,
        &[
            "-c",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        ],
    )
    .await;
    result
}

async fn run(demo: &mut Demo, url: &str) -> Result<()> {
    demo.step("The operator loads a sample customer database and lets Warden broker access to it");
    let seed = demo.dir.join("seed.sql");
    std::fs::write(&seed, SEED)?;
    psql(url, &["-f", &seed.display().to_string()])
        .await?
        .map_err(|e| anyhow::anyhow!("seeding: {e}"))?;
    demo.api(
        reqwest::Method::PUT,
        "/v1/databases/customers",
        json!({"dsn": url}),
    )
    .await?;
    demo.api(
        reqwest::Method::PUT,
        &format!("/v1/database-roles/{ROLE}"),
        json!({"connection": "customers",
               "grants": [{"privileges": ["SELECT"], "tables": ["customers", "orders"]}],
               "default_ttl_s": 300, "max_ttl_s": 3600}),
    )
    .await?;
    demo.api(
        reqwest::Method::POST,
        "/v1/tasks",
        json!({"id": TASK, "type": "summarise", "owner": "analyst@example.org",
               "resources": ["database:customers"], "deadline_s": 3600}),
    )
    .await?;
    demo.api(
        reqwest::Method::POST,
        &format!("/v1/tasks/{TASK}/agents"),
        json!({"agent": SUMMARIZER, "role": "summarizer"}),
    )
    .await?;
    demo.say(&format!(
        "role template {ROLE}: SELECT on customers and orders only; task {TASK} for the summarizer"
    ));

    demo.step("The summarizer, which holds no password, asks for a 5-minute credential");
    let out = demo
        .agent(
            SUMMARIZER,
            &["db-credential", ROLE, "--task", TASK, "--ttl", "300"],
        )
        .await?;
    let cred: Value = serde_json::from_str(&out)?;
    let dsn = cred["dsn"].as_str().unwrap_or_default().to_owned();
    let lease = cred["lease_id"].as_str().unwrap_or_default().to_owned();
    demo.say(&format!(
        "a login role made for it: {} (lease {lease}); the password is shown to it once",
        cred["username"].as_str().unwrap_or_default()
    ));

    demo.step("It reads what it was granted, and nothing else");
    let rows = psql(&dsn, &["-c", "SELECT count(*) FROM customers"])
        .await?
        .map_err(|e| anyhow::anyhow!("reading customers: {e}"))?;
    demo.say(&format!("SELECT count(*) FROM customers → {rows}"));
    match psql(&dsn, &["-c", "SELECT count(*) FROM payment_methods"]).await? {
        Ok(v) => bail!("the agent read payment_methods: {v}"),
        Err(e) => demo.say(&format!("payment_methods → {}", last_line(&e))),
    }
    match psql(&dsn, &["-c", "INSERT INTO customers (id) VALUES (999)"]).await? {
        Ok(v) => bail!("the agent wrote: {v}"),
        Err(e) => demo.say(&format!("INSERT → {}", last_line(&e))),
    }
    demo.agent(
        SUMMARIZER,
        &[
            "record",
            "--lease",
            &lease,
            "--action",
            "select",
            "--resource",
            "customers",
            "--detail",
            &format!("rows={rows}"),
        ],
    )
    .await?;
    demo.say("the data access is recorded in the ledger next to the issuance");

    demo.step("Done, it gives the credential back: the role is dropped at once");
    demo.agent(SUMMARIZER, &["revoke", &lease]).await?;
    match psql(&dsn, &["-c", "SELECT 1"]).await? {
        Ok(_) => bail!("the credential still works after revocation"),
        Err(e) => demo.say(&format!("logging in again → {}", last_line(&e))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert!(with_database("postgres://h", "x").is_err());
    }
}
