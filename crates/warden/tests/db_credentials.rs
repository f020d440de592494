//! Dynamic PostgreSQL credentials end to end: the real `warden serve`, agents authenticated by
//! JWT-SVIDs from its Workload API, the broker policy, and a real PostgreSQL server
//! (`WARDEN_TEST_DATABASE_URL`; skipped when it is not set) checked with the real `psql`.
//!
//! Each test gets a database of its own (with `customers`, `orders` and a `payment_methods`
//! table no template grants) and a role template of its own, so parallel tests never see each
//! other's roles; the database and every role made from the template are dropped afterwards,
//! whatever the outcome.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Install, Out, PG_ENV, Server, expect_error, run, warden};
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

const SUMMARIZER: &str = "spiffe://example.org/agent/summarizer";
/// Registered like the summarizer, but no policy rule lets it have anything.
const INTRUDER: &str = "spiffe://example.org/agent/intruder";

/// How long a condition that the lease sweeper (once a second) makes true may take.
const SWEEP_DEADLINE: Duration = Duration::from_secs(10);

const SEED: &str = "
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, country text NOT NULL);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers,
                     amount_cents integer NOT NULL);
CREATE TABLE payment_methods (id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers,
                              card_last4 text NOT NULL);
INSERT INTO customers VALUES (1, 'Ada', 'GB'), (2, 'Grace', 'US'), (3, 'Edsger', 'NL');
INSERT INTO orders VALUES (10, 1, 1200), (11, 2, 3400);
INSERT INTO payment_methods VALUES (1, 1, '4242');
";

// ---- psql -----------------------------------------------------------------------------------

/// `psql -X -q -A -t -v ON_ERROR_STOP=1 -d URL` plus `-c SQL` for each statement (each its
/// own transaction), with no `PG*` variable of the caller in effect.
fn psql_cmd(url: &str, statements: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("psql");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url]);
    for sql in statements {
        cmd.args(["-c", sql]);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

async fn psql(url: &str, sql: &str) -> Out {
    run(psql_cmd(url, &[sql])).await
}

/// Runs `sql` and returns its output, trimmed; it must succeed.
async fn query(url: &str, sql: &str) -> String {
    let out = psql(url, sql).await;
    assert!(out.status.success(), "psql `{sql}` failed: {out:#?}");
    out.stdout.trim().to_owned()
}

/// Asserts that `sql` fails for the credential, with `error` in the message.
async fn refused(dsn: &str, sql: &str, error: &str) {
    let out = psql(dsn, sql).await;
    assert!(!out.status.success(), "`{sql}` succeeded: {out:#?}");
    assert!(out.stderr.contains(error), "`{sql}`: {out:#?}");
}

/// The connection URL `url` with another database.
fn with_database(url: &str, database: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let query = &url[base.len()..];
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{database}{query}")
}

/// The connection URL `url` pointing at `127.0.0.1:port` instead of its host and port.
fn with_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    format!("{scheme}://{userinfo}127.0.0.1:{port}{tail}")
}

/// `host:port` of a connection URL (port 5432 unless it says otherwise).
fn host_port(url: &str) -> String {
    let (_, rest) = url.split_once("://").expect("a postgres:// URL");
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}

/// The PostgreSQL admin URL, or `None` after saying (once) that the suite is skipped.
fn pg_url() -> Option<String> {
    let url = std::env::var(PG_ENV).ok();
    if url.is_none() {
        static SKIP_NOTICE: std::sync::Once = std::sync::Once::new();
        SKIP_NOTICE.call_once(|| {
            use std::io::Write as _;
            // Past the harness's capture, so a plain `cargo test` shows it.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {PG_ENV} is not set (database credential suite not run)"
            );
        });
    }
    url
}

// ---- one test's database --------------------------------------------------------------------

/// A database of one test and the name of its role template. Dropped on drop, with every
/// role made from the template.
struct TestDb {
    admin_url: String,
    name: String,
    /// Admin connection to this database.
    url: String,
    template: String,
}

impl TestDb {
    /// `None` (after saying so) when [`PG_ENV`] is not set.
    async fn create(tag: &str) -> Option<TestDb> {
        let admin_url = pg_url()?;
        let unique = format!("{:08x}", rand::random::<u32>());
        let name = format!("warden_dbc_{tag}_{}_{unique}", std::process::id());
        // At most 24 bytes, all of which go into role names: `w_<template>_` finds them.
        let template = format!("t_{tag}_{unique}");
        assert!(template.len() <= 24, "{template}");
        query(&admin_url, &format!("CREATE DATABASE \"{name}\"")).await;
        let db = TestDb {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
            template,
        };
        query(&db.url, SEED).await;
        Some(db)
    }

    /// `LIKE` pattern of the roles made from the template.
    fn role_pattern(&self) -> String {
        format!("w\\_{}\\_%", self.template.replace('_', "\\_"))
    }

    /// How many roles made from the template exist.
    async fn template_roles(&self) -> usize {
        query(
            &self.admin_url,
            &format!(
                "SELECT count(*) FROM pg_roles WHERE rolname LIKE '{}'",
                self.role_pattern()
            ),
        )
        .await
        .parse()
        .unwrap()
    }

    /// Whether role `name` exists.
    async fn role_exists(&self, name: &str) -> bool {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
        query(
            &self.admin_url,
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"),
        )
        .await
            == "1"
    }

    /// The role's `VALID UNTIL` in Unix seconds.
    async fn valid_until(&self, name: &str) -> i64 {
        query(
            &self.admin_url,
            &format!(
                "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles \
                 WHERE rolname = '{name}'"
            ),
        )
        .await
        .parse()
        .unwrap_or_else(|e| panic!("VALID UNTIL of {name}: {e}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop cannot await: a blocking psql. FORCE ends the sessions in this database only.
        let drop_roles = format!(
            "DO $$DECLARE r text; BEGIN \
               FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE '{}' LOOP \
                 EXECUTE format('DROP ROLE %I', r); \
               END LOOP; END$$",
            self.role_pattern()
        );
        let status = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.admin_url])
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            ])
            .args(["-c", &drop_roles])
            .stdin(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "could not drop database {} or roles {}: {status:?}",
                self.name,
                self.role_pattern()
            );
        }
    }
}

// ---- a TCP forwarder in front of PostgreSQL -------------------------------------------------

/// Forwards 127.0.0.1:`port` to PostgreSQL, so a test can take the database away ([`shut`])
/// or hold one new connection back ([`gate`]).
///
/// [`shut`]: Forwarder::shut
/// [`gate`]: Forwarder::gate
struct Forwarder {
    port: u16,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    gate: Arc<Mutex<Option<Gate>>>,
}

/// Holds back the next connection: says when it arrived, forwards it once opened.
struct Gate {
    arrived: oneshot::Sender<()>,
    open: oneshot::Receiver<()>,
}

impl Forwarder {
    /// Listens on `port` (0: any free one) and forwards to `target` (`host:port`).
    async fn start(port: u16, target: String) -> Forwarder {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind forwarder on port {port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let gate: Arc<Mutex<Option<Gate>>> = Arc::default();
        let accept = {
            let (conns, gate) = (Arc::clone(&conns), Arc::clone(&gate));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let target = target.clone();
                    let held = gate.lock().unwrap().take();
                    let conn = tokio::spawn(async move {
                        if let Some(g) = held {
                            let _ = g.arrived.send(());
                            let _ = g.open.await;
                        }
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(conn);
                }
            })
        };
        Forwarder {
            port,
            accept,
            conns,
            gate,
        }
    }

    /// Holds back the next connection: the first receiver fires when it arrives, and it is
    /// forwarded once the sender is used (or dropped).
    fn gate(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (arrived_tx, arrived_rx) = oneshot::channel();
        let (open_tx, open_rx) = oneshot::channel();
        *self.gate.lock().unwrap() = Some(Gate {
            arrived: arrived_tx,
            open: open_rx,
        });
        (arrived_rx, open_tx)
    }

    /// Cuts every forwarded connection, still listening: the server's pooled admin sessions
    /// die, so its next database operation opens a new connection (through a gate, if set).
    async fn cut(&self) {
        let conns: Vec<JoinHandle<()>> = std::mem::take(&mut *self.conns.lock().unwrap());
        for c in conns {
            c.abort();
            let _ = c.await;
        }
    }

    /// Stops listening and cuts every forwarded connection; returns once the port is closed.
    async fn shut(self) {
        self.accept.abort();
        let _ = self.accept.await;
        let conns: Vec<JoinHandle<()>> = std::mem::take(&mut *self.conns.lock().unwrap());
        for c in conns {
            c.abort();
            let _ = c.await;
        }
    }
}

// ---- the server -----------------------------------------------------------------------------

struct Env {
    install: Install,
    server: Server,
    issuer: String,
    admin: String,
    /// Last, so it is dropped after the server is killed.
    db: TestDb,
}

impl Env {
    /// A server with the summarizer and the intruder registered, a broker policy that lets the
    /// summarizer have credentials of this test's template for up to 600 s, the test database
    /// as connection `db` (through `dsn`, default its admin URL) and the template: SELECT on
    /// `customers` and `orders`, at most `max_ttl_s`.
    async fn start(tag: &str, max_ttl_s: i64) -> Option<Env> {
        Self::start_with(tag, max_ttl_s, |db| db.url.clone()).await
    }

    async fn start_with(
        tag: &str,
        max_ttl_s: i64,
        dsn: impl FnOnce(&TestDb) -> String,
    ) -> Option<Env> {
        Self::start_serving(tag, max_ttl_s, dsn, &[]).await
    }

    /// Like [`Env::start_with`], with extra `warden serve` flags.
    async fn start_serving(
        tag: &str,
        max_ttl_s: i64,
        dsn: impl FnOnce(&TestDb) -> String,
        serve_args: &[&str],
    ) -> Option<Env> {
        let db = TestDb::create(tag).await?;
        let install = Install::new().await;
        let server = install.serve_with(serve_args).await;
        let admin = install.admin_token();
        let exe = std::fs::canonicalize(common::BIN).unwrap();
        let uid = common::own_uid();
        for id in [SUMMARIZER, INTRUDER] {
            let resp = server
                .http
                .post(server.at("/v1/entries"))
                .bearer_auth(&admin)
                .json(&json!({
                    "spiffe_id": id,
                    "selectors": [format!("unix:uid:{uid}"), format!("unix:path:{}", exe.display())],
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
        }
        let policy = install.path("broker.cedar");
        std::fs::write(
            &policy,
            format!(
                r#"
@id("summarizer-db")
permit (
  principal == Agent::"{SUMMARIZER}",
  action == Action::"issue",
  resource == DatabaseRole::"{}"
)
when {{ context.request.ttl_s <= 600 }};

@id("hold-denies-everything")
forbid (principal, action, resource) when {{ context.hold }};
"#,
                db.template
            ),
        )
        .unwrap();
        let schema = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/broker/broker.cedarschema"
        );
        run(install.client(
            &server,
            &["policy", "push", "broker", policy.to_str().unwrap(), schema],
        ))
        .await
        .ok();
        let issuer = server
            .get_public_json("/.well-known/openid-configuration")
            .await["issuer"]
            .as_str()
            .unwrap()
            .to_owned();
        let env = Env {
            install,
            server,
            issuer,
            admin,
            db,
        };
        // The tasks the tests issue credentials for, with both agents on them (a credential
        // for a task is only for an agent on it).
        let mut tasks: Vec<String> = ["summarise-q3", "t-1", "t-a", "t-b", "t-down", "t-race"]
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
        tasks.extend((0..12).map(|i| format!("t-{i}")));
        tasks.sort();
        tasks.dedup();
        for task in tasks {
            let resp = env
                .server
                .http
                .post(env.server.at("/v1/tasks"))
                .bearer_auth(&env.admin)
                .json(
                    &json!({"id": task, "type": "summarise", "owner": "alice@example.org",
                    "resources": ["database:customers"], "deadline_s": 3600}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
            for agent in [SUMMARIZER, INTRUDER] {
                let resp = env
                    .server
                    .http
                    .post(env.server.at(&format!("/v1/tasks/{task}/agents")))
                    .bearer_auth(&env.admin)
                    .json(&json!({"agent": agent, "role": "analyst"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
            }
        }
        let resp = env.put_connection("db", &dsn(&env.db)).await;
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
        let resp = env
            .put_role(
                &env.db.template.clone(),
                json!({
                    "connection": "db",
                    "grants": [{"privileges": ["SELECT"], "tables": ["customers", "orders"]}],
                    "default_ttl_s": 60,
                    "max_ttl_s": max_ttl_s,
                }),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
        Some(env)
    }

    async fn put_connection(&self, name: &str, dsn: &str) -> reqwest::Response {
        self.server
            .http
            .put(self.server.at(&format!("/v1/databases/{name}")))
            .bearer_auth(&self.admin)
            .json(&json!({ "dsn": dsn }))
            .send()
            .await
            .unwrap()
    }

    async fn put_role(&self, name: &str, body: Value) -> reqwest::Response {
        self.server
            .http
            .put(self.server.at(&format!("/v1/database-roles/{name}")))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A JWT-SVID of `id` for this server, from the Workload API.
    async fn svid(&self, id: &str) -> String {
        let mut cmd = warden();
        cmd.arg("svid")
            .arg("--socket")
            .arg(self.install.data_dir.join("workload.sock"))
            .args(["jwt", "--audience", &self.issuer, "--spiffe-id", id]);
        run(cmd).await.ok().stdout.trim().to_owned()
    }

    /// `warden agent --server URL --socket SOCK --as SUMMARIZER ARGS…` (no API token: the SVID
    /// is all).
    fn agent(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = warden();
        cmd.arg("agent")
            .args([
                "--output",
                "json",
                "--server",
                &self.server.url,
                "--as",
                SUMMARIZER,
            ])
            .arg("--socket")
            .arg(self.install.data_dir.join("workload.sock"))
            .args(args);
        cmd
    }

    /// POST /v1/agent/credentials/database/{role} as the holder of `svid`.
    async fn request(&self, role: &str, svid: Option<&str>, body: Value) -> reqwest::Response {
        let req = self
            .server
            .http
            .post(
                self.server
                    .at(&format!("/v1/agent/credentials/database/{role}")),
            )
            .json(&body);
        match svid {
            Some(svid) => req.bearer_auth(svid),
            None => req,
        }
        .send()
        .await
        .unwrap()
    }

    /// A credential of this test's template (must be issued).
    async fn issue(&self, svid: &str, body: Value) -> Value {
        let resp = self.request(&self.db.template, Some(svid), body).await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 201, "{text}");
        let cred: Value = serde_json::from_str(&text).unwrap();
        assert!(self.db.role_exists(s(&cred["username"])).await, "{cred}");
        cred
    }

    /// One lease, as the operator sees it.
    async fn lease(&self, id: &str) -> Value {
        let id = id.replace('/', "%2F");
        self.server
            .get_json(&format!("/v1/leases?id={id}"), &self.admin)
            .await[0]
            .clone()
    }

    /// Every lease of this test's template.
    async fn leases(&self) -> Vec<Value> {
        self.server
            .get_json(
                &format!("/v1/leases?prefix=postgres%2F{}%2F", self.db.template),
                &self.admin,
            )
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// The events of every ledger entry with `action`.
    async fn events(&self, action: &str) -> Vec<Value> {
        self.server
            .all_entries(&self.admin)
            .await
            .into_iter()
            .map(|e| e["event"].clone())
            .filter(|e| e["action"] == action)
            .collect()
    }

    /// Polls `cond` every 50 ms until it holds, failing with `what` after `deadline`.
    async fn wait_for<F, Fut>(&self, what: &str, deadline: Duration, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let until = Instant::now() + deadline;
        while !cond().await {
            assert!(
                Instant::now() < until,
                "{what}: not within {deadline:?}\n{}",
                self.server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The results of the `lease.revoke_upstream` entries of `lease_id` that dropped its role
/// (a later attempt finds it "already gone").
fn drops(events: &[Value], lease_id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["fields"]["lease_id"] == lease_id)
        .map(|e| s(&e["fields"]["result"]).to_owned())
        .filter(|r| r.contains(" dropped"))
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

// ---- the tests ------------------------------------------------------------------------------

#[tokio::test]
async fn issue_use_and_give_back() {
    let Some(env) = Env::start("use", 3600).await else {
        return;
    };
    assert_eq!(env.db.template_roles().await, 0, "no standing credential");

    // The agent asks with nothing but its SVID (the CLI fetches it from the Workload API).
    let out = run(env.agent(&[
        "db-credential",
        &env.db.template,
        "--task",
        "summarise-q3",
        "--ttl",
        "300",
    ]))
    .await
    .ok();
    let cred: Value = serde_json::from_str(&out.stdout).unwrap();
    let (lease_id, user, dsn) = (s(&cred["lease_id"]), s(&cred["username"]), s(&cred["dsn"]));
    assert!(
        lease_id.starts_with(&format!("postgres/{}/lse_", env.db.template)),
        "{cred}"
    );
    assert!(
        user.starts_with(&format!("w_{}_", env.db.template)),
        "{cred}"
    );
    assert_eq!(s(&cred["password"]).len(), 40);
    assert_eq!(s(&cred["database"]), env.db.name);
    assert_eq!(
        format!("{}:{}", s(&cred["host"]), cred["port"]),
        host_port(&env.db.admin_url)
    );
    let expires_ms = cred["expires_unix_ms"].as_i64().unwrap();
    assert!(cred["max_expires_unix_ms"].as_i64().unwrap() > expires_ms);

    // PostgreSQL has exactly that login role, expiring with the lease, with no extra powers.
    assert_eq!(env.db.template_roles().await, 1);
    let valid_until = env.db.valid_until(user).await;
    assert!(
        (expires_ms / 1000..=expires_ms / 1000 + 2).contains(&valid_until),
        "VALID UNTIL {valid_until}, lease expires {expires_ms} ms"
    );
    assert_eq!(
        query(
            &env.db.admin_url,
            &format!(
                "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolinherit, \
                        rolreplication, rolbypassrls, rolconnlimit \
                   FROM pg_roles WHERE rolname = '{user}'"
            ),
        )
        .await,
        "t|f|f|f|f|f|f|10"
    );

    // psql logs in with it: granted tables read, everything else refused.
    assert_eq!(query(dsn, "SELECT count(*) FROM customers").await, "3");
    assert_eq!(
        query(dsn, "SELECT sum(amount_cents) FROM orders").await,
        "4600"
    );
    refused(
        dsn,
        "SELECT card_last4 FROM payment_methods",
        "permission denied for table payment_methods",
    )
    .await;
    refused(
        dsn,
        "INSERT INTO customers VALUES (4, 'Mallory', 'XX')",
        "permission denied for table customers",
    )
    .await;
    refused(
        dsn,
        "UPDATE orders SET amount_cents = 1",
        "permission denied for table orders",
    )
    .await;
    refused(
        dsn,
        "CREATE TABLE loot (x int)",
        "permission denied for schema public",
    )
    .await;

    // The data access goes on record, tied to the lease.
    let out = run(env.agent(&[
        "record",
        "--lease",
        lease_id,
        "--action",
        "select",
        "--resource",
        "customers",
        "--detail",
        "rows=3",
    ]))
    .await
    .ok();
    let recorded: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(recorded["seq"].as_u64().is_some(), "{out:#?}");

    // A session open at revocation is terminated, not left running.
    let mut session = psql_cmd(dsn, &["SELECT pg_sleep(120)"]);
    session.stdout(Stdio::piped()).stderr(Stdio::piped());
    let session = session.spawn().unwrap();
    env.wait_for("the agent's session shows", SWEEP_DEADLINE, || async {
        query(
            &env.db.admin_url,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'"),
        )
        .await
            == "1"
    })
    .await;

    // Given back: the role is gone when the call returns, and the credential is dead.
    let out = run(env.agent(&["revoke", lease_id])).await.ok();
    let revoked: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(revoked["revoked"], true, "{out:#?}");
    assert!(!env.db.role_exists(user).await, "role survived revocation");
    let ended = tokio::time::timeout(SWEEP_DEADLINE, session.wait_with_output())
        .await
        .expect("the open session was not terminated")
        .unwrap();
    assert!(!ended.status.success(), "{ended:?}");
    assert!(
        String::from_utf8_lossy(&ended.stderr).contains("terminating connection"),
        "{ended:?}"
    );
    let out = psql(dsn, "SELECT 1").await;
    assert!(
        !out.status.success(),
        "revoked credential logs in: {out:#?}"
    );
    // With trust authentication the role's absence is the refusal; with passwords, either.
    assert!(
        out.stderr.contains("does not exist") || out.stderr.contains("authentication failed"),
        "{out:#?}"
    );
    let lease = env.lease(lease_id).await;
    assert_eq!(lease["state"], "revoked", "{lease}");
    assert_eq!(lease["revoke_reason"], "returned by its holder", "{lease}");
    // Twice is refused.
    let out = run(env.agent(&["revoke", lease_id])).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("lease_not_active"), "{out:#?}");

    // The ledger tells the story: decision, issuance, data access, revocation, role dropped.
    let decisions = env.events("policy.decision").await;
    assert!(
        decisions.iter().any(|d| {
            let f = &d["fields"];
            f["api"] == "broker"
                && f["action"] == "issue"
                && f["decision"] == "allow"
                && f["principal"] == SUMMARIZER
        }),
        "{decisions:#?}"
    );
    let issued = env.events("lease.issue").await;
    assert_eq!(issued.len(), 1, "{issued:#?}");
    let f = &issued[0]["fields"];
    assert_eq!(f["lease_id"], lease_id);
    assert_eq!(f["db_role"], user);
    assert_eq!(f["task"], "summarise-q3");
    assert_eq!(issued[0]["actor"], format!("agent:{SUMMARIZER}"));
    let ops = env.events("agent.operation").await;
    assert_eq!(ops.len(), 1, "{ops:#?}");
    assert_eq!(ops[0]["fields"]["resource"], "customers");
    let dropped = drops(&env.events("lease.revoke_upstream").await, lease_id);
    assert_eq!(dropped.len(), 1, "{dropped:#?}");
    assert!(
        dropped[0].contains("1 session(s) terminated"),
        "{dropped:#?}"
    );
    // The password is in no entry.
    let all = env.server.all_entries(&env.admin).await;
    let password = s(&cred["password"]);
    assert!(
        all.iter()
            .all(|e| !e["event"].to_string().contains(password)),
        "the password reached the ledger"
    );
}

#[tokio::test]
async fn policy_denial_creates_no_role() {
    let Some(env) = Env::start("deny", 3600).await else {
        return;
    };
    let summarizer = env.svid(SUMMARIZER).await;
    let intruder = env.svid(INTRUDER).await;

    // Longer than the policy allows (the template itself would allow an hour).
    let resp = env
        .request(
            &env.db.template,
            Some(&summarizer),
            json!({"ttl_s": 900, "task": "t-1"}),
        )
        .await;
    let body = expect_error("ttl 900", resp, 403, "access_denied").await;
    assert!(s(&body["message"]).contains("dec_"), "{body}");
    // Another agent: nothing permits it.
    let resp = env
        .request(&env.db.template, Some(&intruder), json!({"ttl_s": 60}))
        .await;
    expect_error("intruder", resp, 403, "access_denied").await;

    assert_eq!(
        env.db.template_roles().await,
        0,
        "a denied request made a role"
    );
    assert!(env.leases().await.is_empty());
    assert!(env.events("lease.issue").await.is_empty());
    let denials: Vec<Value> = env
        .events("policy.decision")
        .await
        .into_iter()
        .filter(|d| d["fields"]["api"] == "broker" && d["fields"]["decision"] == "deny")
        .collect();
    assert_eq!(denials.len(), 2, "{denials:#?}");
    assert!(denials.iter().any(|d| d["fields"]["principal"] == INTRUDER));

    // Within policy: issued.
    env.issue(&summarizer, json!({"ttl_s": 600})).await;
    assert_eq!(env.db.template_roles().await, 1);
}

#[tokio::test]
async fn expiry_drops_the_role() {
    let Some(env) = Env::start("expiry", 3600).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;
    let cred = env.issue(&svid, json!({"ttl_s": 2})).await;
    let (lease_id, user) = (s(&cred["lease_id"]), s(&cred["username"]));
    assert_eq!(
        query(s(&cred["dsn"]), "SELECT count(*) FROM orders").await,
        "2"
    );

    // Nobody gives it back: the sweeper ends the lease and drops the role.
    let issued = Instant::now();
    env.wait_for("the expired role is dropped", SWEEP_DEADLINE, || async {
        !env.db.role_exists(user).await
    })
    .await;
    eprintln!("role dropped {:?} after issuance", issued.elapsed());
    env.wait_for("the lease is ended", SWEEP_DEADLINE, || async {
        env.lease(lease_id).await["state"] == "revoked"
    })
    .await;
    let lease = env.lease(lease_id).await;
    assert_eq!(lease["revoke_reason"], "expired", "{lease}");
    let out = psql(s(&cred["dsn"]), "SELECT 1").await;
    assert!(
        !out.status.success(),
        "expired credential logs in: {out:#?}"
    );

    let expired = env.events("lease.expire").await;
    assert!(
        expired.iter().any(|e| e["fields"]["leases"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|id| id == lease_id))),
        "{expired:#?}"
    );
    let dropped = env.events("lease.revoke_upstream").await;
    assert!(
        dropped
            .iter()
            .any(|e| e["fields"]["lease_id"] == lease_id && e["actor"] == "system:broker"),
        "{dropped:#?}"
    );
}

#[tokio::test]
async fn renewal_moves_valid_until_up_to_the_maximum() {
    let Some(env) = Env::start("renew", 120).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;
    let cred = env.issue(&svid, json!({"ttl_s": 30})).await;
    let (lease_id, user) = (s(&cred["lease_id"]), s(&cred["username"]));
    let before = env.db.valid_until(user).await;
    let max_ms = cred["max_expires_unix_ms"].as_i64().unwrap();

    let renew = |ttl: i64| {
        env.server
            .http
            .post(env.server.at("/v1/agent/leases/renew"))
            .bearer_auth(&svid)
            .json(&json!({"lease_id": lease_id, "ttl_s": ttl}))
            .send()
    };
    // Within the maximum: the lease and the role's VALID UNTIL move.
    let resp = renew(100).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let renewed: Value = resp.json().await.unwrap();
    let expires_ms = renewed["expires_unix_ms"].as_i64().unwrap();
    assert!(
        expires_ms > cred["expires_unix_ms"].as_i64().unwrap(),
        "{renewed}"
    );
    assert_eq!(renewed["max_expires_unix_ms"], max_ms);
    let after = env.db.valid_until(user).await;
    assert!(after >= before + 60, "VALID UNTIL {before} -> {after}");
    assert!(
        (expires_ms / 1000 - 1..=expires_ms / 1000 + 2).contains(&after),
        "VALID UNTIL {after}, lease expires {expires_ms} ms"
    );
    assert_eq!(env.lease(lease_id).await["expires_unix_ms"], expires_ms);

    // Past the maximum: refused, and nothing moves.
    let resp = renew(200).await.unwrap();
    expect_error("renew past max", resp, 409, "lease_max_ttl").await;
    assert_eq!(env.db.valid_until(user).await, after);
    assert_eq!(env.lease(lease_id).await["expires_unix_ms"], expires_ms);

    // Another agent cannot renew it.
    let intruder = env.svid(INTRUDER).await;
    let resp = env
        .server
        .http
        .post(env.server.at("/v1/agent/leases/renew"))
        .bearer_auth(&intruder)
        .json(&json!({"lease_id": lease_id, "ttl_s": 60}))
        .send()
        .await
        .unwrap();
    expect_error("someone else's lease", resp, 404, "not_found").await;

    let renewals = env.events("lease.renew").await;
    let outcomes: Vec<&Value> = renewals.iter().map(|e| &e["outcome"]).collect();
    assert_eq!(
        outcomes,
        [&json!("success"), &json!("denied")],
        "{renewals:#?}"
    );
}

#[tokio::test]
async fn operator_revokes_by_agent_and_by_prefix() {
    let Some(env) = Env::start("oprevoke", 3600).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;
    let prefix = format!("postgres/{}/", env.db.template);

    // By agent: every lease of the summarizer, roles dropped before the command returns.
    let a = env.issue(&svid, json!({"task": "t-a"})).await;
    let b = env.issue(&svid, json!({"task": "t-b"})).await;
    assert_eq!(env.db.template_roles().await, 2);
    let out = run(env.install.client(
        &env.server,
        &[
            "lease",
            "revoke",
            "--agent",
            SUMMARIZER,
            "--reason",
            "rotation drill",
        ],
    ))
    .await
    .ok();
    assert!(out.stdout.contains("revoked 2 lease(s)"), "{out:#?}");
    assert_eq!(env.db.template_roles().await, 0);
    for cred in [&a, &b] {
        let lease = env.lease(s(&cred["lease_id"])).await;
        assert_eq!(lease["state"], "revoked", "{lease}");
        assert_eq!(lease["revoke_reason"], "rotation drill", "{lease}");
        assert!(!psql(s(&cred["dsn"]), "SELECT 1").await.status.success());
    }

    // By prefix: every lease of the template.
    let c = env.issue(&svid, json!({})).await;
    let d = env.issue(&svid, json!({})).await;
    assert_eq!(env.db.template_roles().await, 2);
    let out = run(env.install.client(
        &env.server,
        &[
            "lease",
            "revoke",
            "--prefix",
            &prefix,
            "--reason",
            "template retired",
        ],
    ))
    .await
    .ok();
    assert!(out.stdout.contains("revoked 2 lease(s)"), "{out:#?}");
    assert!(out.stdout.contains(s(&c["lease_id"])), "{out:#?}");
    assert!(out.stdout.contains(s(&d["lease_id"])), "{out:#?}");
    assert_eq!(env.db.template_roles().await, 0);

    // Nothing is left active, and the listing by state says so.
    let out = run(env.install.client(
        &env.server,
        &["lease", "list", "--prefix", &prefix, "--state", "active"],
    ))
    .await
    .ok();
    assert_eq!(out.stdout.trim(), "no leases", "{out:#?}");
    let upstream = env.events("lease.revoke_upstream").await;
    for cred in [&a, &b, &c, &d] {
        let dropped = drops(&upstream, s(&cred["lease_id"]));
        assert_eq!(dropped.len(), 1, "{upstream:#?}");
    }
}

#[tokio::test]
async fn hold_drops_the_agents_roles_and_refuses_new_ones() {
    let Some(env) = Env::start("hold", 3600).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;
    let cred = env.issue(&svid, json!({"task": "t-1"})).await;

    let out = run(env.install.client(
        &env.server,
        &[
            "hold",
            "agent",
            SUMMARIZER,
            "--reason",
            "exfiltration suspected",
        ],
    ))
    .await
    .ok();
    assert!(out.stdout.contains("1 lease(s) revoked"), "{out:#?}");
    // Dropped before the hold answered.
    assert!(!env.db.role_exists(s(&cred["username"])).await);
    assert!(!psql(s(&cred["dsn"]), "SELECT 1").await.status.success());
    let lease = env.lease(s(&cred["lease_id"])).await;
    assert_eq!(lease["state"], "revoked", "{lease}");
    assert_eq!(
        lease["revoke_reason"], "hold: exfiltration suspected",
        "{lease}"
    );

    // The still-unexpired SVID gets nothing new, and no role is made.
    let resp = env
        .request(&env.db.template, Some(&svid), json!({"ttl_s": 60}))
        .await;
    expect_error("held agent", resp, 403, "agent_on_hold").await;
    // Nor does the Workload API give it a fresh one, and it says why.
    let out = run(env.agent(&["db-credential", &env.db.template])).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("identity `{SUMMARIZER}` is on hold")),
        "{out:#?}"
    );
    assert_eq!(env.db.template_roles().await, 0);
    assert_eq!(env.leases().await.len(), 1);
    assert_eq!(env.events("hold.add").await.len(), 1);
}

#[tokio::test]
async fn database_down_fails_cleanly_and_leaves_nothing_behind() {
    let Some(admin_url) = pg_url() else {
        return;
    };
    let fwd = Forwarder::start(0, host_port(&admin_url)).await;
    let port = fwd.port;
    let Some(env) = Env::start_with("down", 3600, |db| with_port(&db.url, port)).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;
    // Through the forwarder, it works.
    let cred = env.issue(&svid, json!({})).await;
    assert_eq!(cred["port"], port);

    // PostgreSQL goes away (the forwarder shuts: connections refused).
    fwd.shut().await;
    let resp = env
        .request(&env.db.template, Some(&svid), json!({"task": "t-down"}))
        .await;
    let body = expect_error("database down", resp, 503, "database_unavailable").await;
    assert!(
        s(&body["message"]).contains(&format!("127.0.0.1:{port}")),
        "{body}"
    );
    assert_eq!(
        env.db.template_roles().await,
        1,
        "only the role issued before the outage"
    );
    // The lease of the failed request is not left active: it is being ended, with the reason.
    let failed: Vec<Value> = env
        .leases()
        .await
        .into_iter()
        .filter(|l| l["task"] == "t-down")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let lease_id = s(&failed[0]["lease_id"]).to_owned();
    assert!(
        ["revoking", "revoked"].contains(&s(&failed[0]["state"])),
        "{failed:#?}"
    );
    assert!(
        s(&failed[0]["revoke_reason"]).starts_with("creation failed"),
        "{failed:#?}"
    );

    // PostgreSQL comes back on the same port: the sweeper finishes the job, no zombie.
    let fwd = Forwarder::start(port, host_port(&admin_url)).await;
    env.wait_for(
        "the failed lease is ended",
        Duration::from_secs(30),
        || async { env.lease(&lease_id).await["state"] == "revoked" },
    )
    .await;
    // And issuance works again.
    env.issue(&svid, json!({})).await;
    let revokes = env.events("lease.revoke").await;
    assert!(
        revokes.iter().any(|e| e["actor"] == "system:broker"
            && s(&e["fields"]["reason"]).starts_with("creation failed")),
        "{revokes:#?}"
    );
    drop(env);
    fwd.shut().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_stable_code() {
    let Some(env) = Env::start("bad", 3600).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;

    // Unknown role template.
    let resp = env.request("no_such_role", Some(&svid), json!({})).await;
    expect_error("unknown role", resp, 404, "not_found").await;
    // A template name that cannot be one.
    let resp = env.request("Bad-Name", Some(&svid), json!({})).await;
    expect_error("bad role name", resp, 400, "invalid_identifier").await;
    // TTL outside the template's bounds.
    for ttl in [0, 3601] {
        let resp = env
            .request(&env.db.template, Some(&svid), json!({"ttl_s": ttl}))
            .await;
        expect_error("ttl out of bounds", resp, 400, "invalid_request").await;
    }
    // Unknown fields.
    let resp = env
        .request(&env.db.template, Some(&svid), json!({"ttl": 60}))
        .await;
    assert_eq!(resp.status().as_u16(), 400, "{:?}", resp.text().await);

    // No agent credentials at all, or not a JWT-SVID for this server.
    let resp = env.request(&env.db.template, None, json!({})).await;
    expect_error("no credentials", resp, 401, "agent_auth_required").await;
    let resp = env
        .request(&env.db.template, Some("not-a-jwt"), json!({}))
        .await;
    expect_error("garbage bearer", resp, 401, "invalid_jwt_svid").await;
    let resp = env
        .request(&env.db.template, Some(&env.admin), json!({}))
        .await;
    expect_error("an admin API token", resp, 401, "invalid_jwt_svid").await;

    // Templates that hand out more than named privileges on named tables.
    let bad_templates = [
        (
            "ALL",
            json!([{"privileges": ["ALL"], "tables": ["customers"]}]),
        ),
        (
            "catalog",
            json!([{"privileges": ["SELECT"], "tables": ["pg_catalog.pg_authid"]}]),
        ),
        (
            "information_schema",
            json!([{"privileges": ["SELECT"], "tables": ["information_schema.tables"]}]),
        ),
        (
            "injection",
            json!([{"privileges": ["SELECT"], "tables": ["customers; DROP TABLE orders"]}]),
        ),
        (
            "quoted",
            json!([{"privileges": ["SELECT"], "tables": ["\"customers\""]}]),
        ),
        ("no grants", json!([])),
        (
            "no tables",
            json!([{"privileges": ["SELECT"], "tables": []}]),
        ),
        (
            "duplicate",
            json!([{"privileges": ["SELECT", "select"], "tables": ["customers"]}]),
        ),
        (
            "extra field",
            json!([{"privileges": ["SELECT"], "tables": ["customers"], "with_grant_option": true}]),
        ),
    ];
    for (what, grants) in bad_templates {
        let resp = env
            .put_role("t_bad", json!({"connection": "db", "grants": grants}))
            .await;
        expect_error(what, resp, 400, "invalid_role_template").await;
    }
    let resp = env
        .put_role(
            "t_bad",
            json!({"connection": "db", "grants": [{"privileges": ["SELECT"], "tables": ["customers"]}],
                   "default_ttl_s": 600, "max_ttl_s": 60}),
        )
        .await;
    expect_error("default above max", resp, 400, "invalid_request").await;
    let resp = env
        .put_role(
            "t_bad",
            json!({"connection": "nowhere", "grants": [{"privileges": ["SELECT"], "tables": ["customers"]}]}),
        )
        .await;
    expect_error("unknown connection", resp, 404, "not_found").await;
    let resp = env
        .put_role(
            "Bad-Name",
            json!({"connection": "db", "grants": [{"privileges": ["SELECT"], "tables": ["customers"]}]}),
        )
        .await;
    expect_error("bad template name", resp, 400, "invalid_identifier").await;

    // Connection strings: not PostgreSQL, nothing listening, a database that does not exist.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let resp = env.put_connection("bad", "mysql://root@127.0.0.1/x").await;
    expect_error("not postgres", resp, 400, "invalid_dsn").await;
    let resp = env
        .put_connection("bad", &with_port(&env.db.url, closed_port))
        .await;
    let body = expect_error("nothing listening", resp, 503, "database_unavailable").await;
    assert!(
        s(&body["message"]).contains(&closed_port.to_string()),
        "{body}"
    );
    let resp = env
        .put_connection(
            "bad",
            &with_database(&env.db.admin_url, "warden_no_such_database"),
        )
        .await;
    let body = expect_error("no such database", resp, 502, "database_rejected").await;
    assert!(s(&body["message"]).contains("does not exist"), "{body}");
    let resp = env.put_connection("Bad Name", &env.db.url).await;
    assert_eq!(resp.status().as_u16(), 400, "{:?}", resp.text().await);

    // None of it created a role, a connection or a template.
    assert_eq!(env.db.template_roles().await, 0);
    let conns = env.server.get_json("/v1/databases", &env.admin).await;
    assert_eq!(conns.as_array().unwrap().len(), 1, "{conns}");
    let roles = env.server.get_json("/v1/database-roles", &env.admin).await;
    assert_eq!(roles.as_array().unwrap().len(), 1, "{roles}");
    // A connection is never shown with its DSN.
    assert!(!conns.to_string().contains("postgres://"), "{conns}");
}

/// Several agents asking at the same moment, against the same database, all get credentials.
#[tokio::test]
async fn concurrent_issuance_on_one_database() {
    let Some(env) = Env::start("conc", 3600).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;
    const N: usize = 12;
    let mut tasks = Vec::new();
    for i in 0..N {
        let http = env.server.http.clone();
        let url = env.server.at(&format!(
            "/v1/agent/credentials/database/{}",
            env.db.template
        ));
        let svid = svid.clone();
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(svid)
                .json(&json!({"task": format!("t-{i}")}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        if status != 201 {
            failures.push(format!("{status}: {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {N} concurrent requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(env.db.template_roles().await, N);
}

/// What lands while a credential is being created.
#[derive(Debug, Clone, Copy)]
enum Intervention {
    /// `POST /v1/holds` on the agent.
    Hold,
    /// `POST /v1/leases/revoke` of every lease of the agent.
    RevokeByAgent,
}

/// A revocation that lands while the credential's role is being created — the lease already
/// recorded, the role not yet made — must not leave the agent a working role, whatever the
/// request then answers.
async fn revoked_during_creation(tag: &str, intervention: Intervention) {
    let Some(admin_url) = pg_url() else {
        return;
    };
    let fwd = Forwarder::start(0, host_port(&admin_url)).await;
    let port = fwd.port;
    let Some(env) = Env::start_with(tag, 3600, |db| with_port(&db.url, port)).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;

    // The role's creation is held at the database's door...
    let (arrived, open) = fwd.gate();
    let request = {
        let http = env.server.http.clone();
        let url = env.server.at(&format!(
            "/v1/agent/credentials/database/{}",
            env.db.template
        ));
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(svid)
                .json(&json!({"task": "t-race"}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    };
    tokio::time::timeout(Duration::from_secs(30), arrived)
        .await
        .expect("the issuance did not reach the database")
        .unwrap();
    // ...while the operator acts on the agent: its lease, already recorded, is revoked.
    let (path, body) = match intervention {
        Intervention::Hold => (
            "/v1/holds",
            json!({"kind": "agent", "value": SUMMARIZER, "reason": "incident"}),
        ),
        Intervention::RevokeByAgent => (
            "/v1/leases/revoke",
            json!({"agent": SUMMARIZER, "reason": "incident"}),
        ),
    };
    let resp = env
        .server
        .http
        .post(env.server.at(path))
        .bearer_auth(&env.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap();
    assert!(status == 200 || status == 201, "{intervention:?}: {answer}");
    // Then the creation goes on.
    open.send(()).unwrap();
    let (status, body) = request.await.unwrap();

    let lease = env.leases().await.pop().unwrap();
    assert_eq!(lease["state"], "revoked", "{lease}");
    let roles = env.db.template_roles().await;
    assert_eq!(
        roles, 0,
        "{intervention:?}: a role outlived its lease's revocation (the request answered \
         {status}: {body}; lease {lease})"
    );
    assert_ne!(status, 201, "a revoked credential was handed out: {body}");
    drop(env);
    fwd.shut().await;
}

#[tokio::test]
async fn hold_during_creation_leaves_no_role() {
    revoked_during_creation("hrace", Intervention::Hold).await;
}

#[tokio::test]
async fn revocation_during_creation_leaves_no_role() {
    revoked_during_creation("rrace", Intervention::RevokeByAgent).await;
}

/// While a request revokes a lease upstream itself, the sweeper leaves that lease alone: one
/// revocation, one `lease.revoke_upstream` entry.
#[tokio::test]
async fn sweeper_stays_off_a_revocation_in_progress() {
    let Some(admin_url) = pg_url() else {
        return;
    };
    let fwd = Forwarder::start(0, host_port(&admin_url)).await;
    let port = fwd.port;
    let Some(env) = Env::start_with("sweep", 3600, |db| with_port(&db.url, port)).await else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;
    let cred = env.issue(&svid, json!({})).await;
    let lease_id = s(&cred["lease_id"]).to_owned();

    // The agent gives the credential back; its request's upstream work is held at the door.
    fwd.cut().await;
    let (arrived, open) = fwd.gate();
    let request = {
        let http = env.server.http.clone();
        let url = env.server.at("/v1/agent/leases/revoke");
        let (svid, lease_id) = (svid.clone(), lease_id.clone());
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(svid)
                .json(&json!({ "lease_id": lease_id }))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    };
    tokio::time::timeout(Duration::from_secs(30), arrived)
        .await
        .expect("the revocation did not reach the database")
        .unwrap();
    // A witness: a 1-second lease. Once the sweeper has expired and ended it, the sweeper has
    // also passed over every other due `revoking` lease (same pass, oldest first).
    let witness = env.issue(&svid, json!({"ttl_s": 1})).await;
    env.wait_for("the sweeper ends the witness", SWEEP_DEADLINE, || async {
        env.lease(s(&witness["lease_id"])).await["state"] == "revoked"
    })
    .await;
    open.send(()).unwrap();
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 204, "{body}");
    assert!(!env.db.role_exists(s(&cred["username"])).await);

    let upstream: Vec<Value> = env
        .events("lease.revoke_upstream")
        .await
        .into_iter()
        .filter(|e| e["fields"]["lease_id"] == lease_id.as_str())
        .collect();
    assert_eq!(
        upstream.len(),
        1,
        "the lease was revoked upstream more than once: {upstream:#?}"
    );
    drop(env);
    fwd.shut().await;
}

/// The sweeper never leaves a zombie: a revocation PostgreSQL cannot take is retried with
/// backoff, raises one alert entry after repeated failure, survives a restart of Warden, and
/// completes once PostgreSQL is back.
#[tokio::test]
async fn failing_revocations_are_retried_alerted_and_survive_a_restart() {
    let Some(admin_url) = pg_url() else {
        return;
    };
    let fwd = Forwarder::start(0, host_port(&admin_url)).await;
    let port = fwd.port;
    let Some(mut env) = Env::start_serving(
        "zombie",
        3600,
        |db| with_port(&db.url, port),
        &["--lease-retry-base-ms", "100"],
    )
    .await
    else {
        return;
    };
    let svid = env.svid(SUMMARIZER).await;
    let cred = env.issue(&svid, json!({"ttl_s": 600})).await;
    let lease_id = s(&cred["lease_id"]).to_owned();
    let role = s(&cred["username"]).to_owned();

    // PostgreSQL is unreachable when the agent gives the credential back.
    fwd.shut().await;
    let resp = env
        .server
        .http
        .post(env.server.at("/v1/agent/leases/revoke"))
        .bearer_auth(&svid)
        .json(&json!({"lease_id": lease_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "{:?}", resp.text().await);
    assert_eq!(env.lease(&lease_id).await["state"], "revoking");
    assert!(env.db.role_exists(&role).await, "the role is still there");

    // Retries back off (100 ms, 200 ms, …); after five failures one alert entry is written.
    env.wait_for("an alert entry", Duration::from_secs(30), || async {
        !env.events("lease.revoke_failing").await.is_empty()
    })
    .await;
    let lease = env.lease(&lease_id).await;
    assert!(lease["attempts"].as_i64().unwrap() >= 5, "{lease}");
    assert!(!s(&lease["last_error"]).is_empty(), "{lease}");
    let alerts = env.events("lease.revoke_failing").await;
    assert_eq!(alerts.len(), 1, "one alert per lease: {alerts:#?}");
    assert_eq!(alerts[0]["fields"]["severity"], "alert");
    assert_eq!(alerts[0]["fields"]["lease_id"], lease_id.as_str());

    // Warden restarts (killed, no goodbye) while the lease is still revoking.
    env.server.kill9().await;
    env.server = env
        .install
        .serve_with(&["--lease-retry-base-ms", "100"])
        .await;
    assert_eq!(env.lease(&lease_id).await["state"], "revoking");

    // PostgreSQL comes back: the sweeper finishes it, the role is gone.
    let _fwd = Forwarder::start(port, host_port(&admin_url)).await;
    env.wait_for("the lease is revoked", Duration::from_secs(60), || async {
        env.lease(&lease_id).await["state"] == "revoked"
    })
    .await;
    assert!(!env.db.role_exists(&role).await, "no zombie role");
    let done: Vec<Value> = env
        .events("lease.revoke_upstream")
        .await
        .into_iter()
        .filter(|e| e["fields"]["lease_id"] == lease_id.as_str())
        .collect();
    assert_eq!(done.len(), 1, "{done:#?}");
    assert!(
        s(&done[0]["fields"]["result"]).contains("dropped"),
        "{done:#?}"
    );
    assert_eq!(
        env.events("lease.revoke_failing").await.len(),
        1,
        "no second alert"
    );
}
