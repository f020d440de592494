//! The dynamic PostgreSQL engine against a real server, with `psql` as the independent client
//! that proves what a credential can and cannot do.
//!
//! The database tests need `WARDEN_TEST_DATABASE_URL` (a superuser URL such as
//! `postgres://postgres@127.0.0.1:5432/test`) and skip with a message when it is unset. Each
//! test makes its own schema `broker_test_<random>` with tables `customers`, `orders` and
//! `secrets`, and drops it and every role it made when it ends, also when it fails.
//!
//! The validation tests at the end need no database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{DEADLINE, PSQL, URL_VAR, random_suffix, stderr, stdout};
use std::{
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use broker::{
    BrokerError,
    postgres::{
        AdminDsn, CONNECT_TIMEOUT, MAX_GRANTS, MAX_TABLES_PER_GRANT, MAX_TEMPLATE_BYTES,
        PASSWORD_LEN, Password, RevokeOutcome, RoleName, RoleTemplate, TableName, TargetPools,
        TemplateName, check, create_role, generate_password, quote_ident, quote_literal,
        revoke_role, role_name,
    },
};
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// A superuser connection to the test database, a schema of our own, and the roles to drop.
struct Db {
    url: String,
    host: String,
    port: u16,
    database: String,
    schema: String,
    roles: Mutex<Vec<String>>,
}

impl Db {
    /// The fixture, or `None` (after saying so) when no test database is configured.
    fn setup() -> Option<Db> {
        let url = match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => url,
            _ => {
                eprintln!("skipped: {URL_VAR} is not set");
                return None;
            }
        };
        let admin = AdminDsn::parse(&url).expect("WARDEN_TEST_DATABASE_URL parses");
        let db = Db {
            host: admin.host(),
            port: admin.port(),
            database: admin.database(),
            url,
            schema: format!("broker_test_{}", random_suffix(10)),
            roles: Mutex::new(Vec::new()),
        };
        db.admin_ok(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.customers (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO {s}.customers VALUES (1, 'Ada');
             CREATE TABLE {s}.orders (id int PRIMARY KEY, customer_id int NOT NULL, total numeric NOT NULL);
             INSERT INTO {s}.orders VALUES (10, 1, 42.50);
             CREATE TABLE {s}.secrets (id int PRIMARY KEY, value text NOT NULL);
             INSERT INTO {s}.secrets VALUES (1, 'classified');",
            s = db.schema
        ));
        Some(db)
    }

    fn admin_dsn(&self) -> AdminDsn {
        AdminDsn::parse(&self.url).unwrap()
    }

    /// A DSN for another role on the same server (trust auth: no password needed).
    fn dsn_as(&self, user: &str) -> AdminDsn {
        AdminDsn::parse(&format!(
            "postgres://{user}@{}:{}/{}",
            self.host, self.port, self.database
        ))
        .unwrap()
    }

    /// Drops `role` when the test ends, whatever happens.
    fn track(&self, role: &str) {
        self.roles.lock().unwrap().push(role.to_owned());
    }

    /// A fresh engine role name, tracked for cleanup.
    fn new_role(&self, template: &str) -> RoleName {
        let role = role_name(&TemplateName::parse(template).unwrap(), &random_suffix(16));
        self.track(role.as_str());
        role
    }

    /// `{"grants":[{"privileges":[..],"tables":[..]}]}` with our schema put before each table.
    fn template(&self, grants: &[(&[&str], &[&str])]) -> RoleTemplate {
        let grants: Vec<serde_json::Value> = grants
            .iter()
            .map(|(privileges, tables)| {
                let tables: Vec<String> = tables
                    .iter()
                    .map(|t| format!("{}.{t}", self.schema))
                    .collect();
                serde_json::json!({ "privileges": privileges, "tables": tables })
            })
            .collect();
        RoleTemplate::from_json(&serde_json::json!({ "grants": grants }).to_string()).unwrap()
    }

    /// `db_read_summary`: SELECT on `customers` and `orders`.
    fn read_summary(&self) -> RoleTemplate {
        self.template(&[(&["SELECT"], &["customers", "orders"])])
    }

    /// Runs `sql` through `psql` as the superuser.
    fn admin(&self, sql: &str) -> Output {
        Command::new(PSQL)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .expect("psql runs")
    }

    /// Runs `sql` as the superuser, which must work; returns its trimmed output.
    fn admin_ok(&self, sql: &str) -> String {
        let out = self.admin(sql);
        assert!(
            out.status.success(),
            "psql as admin failed: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    fn psql_as(&self, role: &str, password: &Password) -> Command {
        let mut command = Command::new(PSQL);
        command
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.host,
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                role,
                "-d",
                &self.database,
            ])
            .env("PGPASSWORD", password.expose_secret())
            .env("PGCONNECT_TIMEOUT", "5");
        command
    }

    /// Runs `sql` through `psql` logged in as `role` with `password`.
    fn as_role(&self, role: &RoleName, password: &Password, sql: &str) -> Output {
        self.psql_as(role.as_str(), password)
            .args(["-c", sql])
            .output()
            .expect("psql runs")
    }

    /// How many roles named `role` exist.
    fn role_count(&self, role: &str) -> String {
        self.admin_ok(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
        ))
    }

    /// Waits until `role` has an active session, failing after [`DEADLINE`].
    async fn wait_for_session(&self, role: &RoleName) {
        let start = Instant::now();
        loop {
            let active = self.admin_ok(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}' AND state = 'active'"
            ));
            if active != "0" {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "no session of {role} showed up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `psql` as `role` running a 30 s query in the background.
    fn start_long_session(&self, role: &RoleName, password: &Password) -> tokio::process::Child {
        let mut command = tokio::process::Command::from(self.psql_as(role.as_str(), password));
        command
            .args(["-c", "SELECT pg_sleep(30)"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.spawn().expect("psql starts")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let mut roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|e| e.into_inner()));
        // Engine roles first: they may hold privileges granted by the test admins.
        roles.sort_by_key(|r| !r.starts_with("w_"));
        let list = roles
            .iter()
            .map(|r| format!("'{r}'"))
            .collect::<Vec<_>>()
            .join(",");
        // A superuser's `DROP OWNED` revokes as the object's owner, so privileges a test
        // admin granted WITH GRANT OPTION would survive it: revoke the admins' grant options
        // with CASCADE first, which takes those along.
        let sql = format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE;
             DO $$ DECLARE r text; BEGIN
               FOR r IN SELECT rolname FROM pg_roles
                         WHERE rolname = ANY(ARRAY[{list}]::text[]) AND rolname NOT LIKE 'w\\_%' LOOP
                 EXECUTE format('REVOKE ALL ON DATABASE %I FROM %I CASCADE', current_database(), r);
               END LOOP;
               FOR r IN SELECT t.name FROM unnest(ARRAY[{list}]::text[]) WITH ORDINALITY AS t(name, n)
                        JOIN pg_roles ON rolname = t.name ORDER BY t.n LOOP
                 -- Not `… FROM pg_stat_activity WHERE usename = r`: the planner would run the
                 -- call on every session before filtering.
                 PERFORM pg_terminate_backend(p)
                    FROM unnest(ARRAY(SELECT pid FROM pg_stat_activity WHERE usename = r)) AS p;
                 EXECUTE format('DROP OWNED BY %I', r);
                 EXECUTE format('DROP ROLE %I', r);
               END LOOP;
             END $$;",
            schema = self.schema
        );
        let out = self.admin(&sql);
        if !out.status.success() {
            eprintln!("cleanup of {} failed: {}", self.schema, stderr(&out));
        }
    }
}

/// An hour from now, at PostgreSQL's microsecond precision so it compares exactly.
fn in_an_hour() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc() + time::Duration::hours(1);
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap()
}

/// Recomputes a SCRAM-SHA-256 verifier (RFC 5802 §3: StoredKey = H(HMAC(SaltedPassword,
/// "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key")) from its own salt and
/// iteration count, and asserts it is the one for `password`.
fn assert_scram_verifier_for(verifier: &str, password: &str) {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use ring::{digest, hmac, pbkdf2};
    let rest = verifier
        .strip_prefix("SCRAM-SHA-256$")
        .unwrap_or_else(|| panic!("not a SCRAM-SHA-256 verifier: {verifier}"));
    let (params, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    let (stored_key, server_key) = keys.split_once(':').unwrap();
    let iterations: std::num::NonZeroU32 = iterations.parse().unwrap();
    let salt = STANDARD.decode(salt).unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let expected_stored = digest::digest(&digest::SHA256, client_key.as_ref());
    let expected_server = hmac::sign(&key, b"Server Key");
    assert_eq!(
        STANDARD.decode(stored_key).unwrap(),
        expected_stored.as_ref()
    );
    assert_eq!(
        STANDARD.decode(server_key).unwrap(),
        expected_server.as_ref()
    );
}

// ---------------------------------------------------------------------------------------------
// Against the database
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn credential_reads_granted_tables_and_nothing_else_until_revoked() {
    let Some(db) = Db::setup() else { return };
    let admin = db.admin_dsn();
    let role = db.new_role("db_read_summary");
    let password = generate_password();
    let valid_until = in_an_hour();
    create_role(&admin, &db.read_summary(), &role, &password, valid_until)
        .await
        .unwrap();
    let s = &db.schema;

    // It logs in and reads what the template grants.
    let out = db.as_role(&role, &password, "SELECT current_user");
    assert!(out.status.success(), "login failed: {}", stderr(&out));
    assert_eq!(stdout(&out), role.as_str());
    let out = db.as_role(&role, &password, &format!("SELECT name FROM {s}.customers"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Ada");
    let out = db.as_role(&role, &password, &format!("SELECT total FROM {s}.orders"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "42.50");

    // And nothing else: no writes to granted tables, no reads of other tables.
    let refused = [
        (
            format!("INSERT INTO {s}.customers VALUES (2, 'Eve')"),
            "permission denied for table customers",
        ),
        (
            format!("UPDATE {s}.orders SET total = 0"),
            "permission denied for table orders",
        ),
        (
            format!("SELECT value FROM {s}.secrets"),
            "permission denied for table secrets",
        ),
        (
            format!("CREATE TABLE {s}.mine (id int)"),
            "permission denied for schema",
        ),
    ];
    for (sql, error) in refused {
        let out = db.as_role(&role, &password, &sql);
        assert!(!out.status.success(), "`{sql}` was allowed");
        assert!(stderr(&out).contains(error), "`{sql}`: {}", stderr(&out));
    }
    assert_eq!(
        db.admin_ok(&format!("SELECT count(*) FROM {s}.customers")),
        "1"
    );

    // This machine's PostgreSQL trusts every local login (pg_hba `trust`), so the successful
    // logins above prove nothing about the password. What does: the server stores a
    // SCRAM-SHA-256 verifier that is the one for this password (a password login checks
    // exactly this), and the expiry we asked for.
    let verifier = db.admin_ok(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
    ));
    assert_scram_verifier_for(&verifier, password.expose_secret());
    let expires_micros = db.admin_ok(&format!(
        "SELECT floor(extract(epoch FROM rolvaliduntil) * 1000000)::bigint \
           FROM pg_authid WHERE rolname = '{role}'"
    ));
    assert_eq!(
        expires_micros,
        (valid_until.unix_timestamp_nanos() / 1_000).to_string()
    );
    let attributes = db.admin_ok(&format!(
        "SELECT rolcanlogin, rolinherit, rolsuper, rolcreatedb, rolcreaterole, rolreplication, \
                rolbypassrls, rolconnlimit FROM pg_roles WHERE rolname = '{role}'"
    ));
    assert_eq!(attributes, "t|f|f|f|f|f|f|10");

    // Revoked: the role is gone and cannot log in; a second revoke has nothing to do.
    // (The `psql` sessions above have ended, though a backend may still be on its way out.)
    let outcome = revoke_role(&admin, &role).await.unwrap();
    assert!(
        matches!(outcome, RevokeOutcome::Revoked { .. }),
        "{outcome:?}"
    );
    let out = db.as_role(&role, &password, "SELECT 1");
    assert!(!out.status.success(), "revoked role still logs in");
    assert!(
        stderr(&out).contains(&format!("role \"{role}\" does not exist")),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.role_count(role.as_str()), "0");
    assert_eq!(
        revoke_role(&admin, &role).await.unwrap(),
        RevokeOutcome::AlreadyGone
    );
}

#[tokio::test]
async fn revoke_terminates_the_roles_sessions_and_no_others() {
    let Some(db) = Db::setup() else { return };
    let admin = db.admin_dsn();
    let role = db.new_role("db_read_summary");
    let password = generate_password();
    create_role(&admin, &db.read_summary(), &role, &password, in_an_hour())
        .await
        .unwrap();
    // A bystander: another engine role with a session of its own.
    let other = db.new_role("db_read_summary");
    let other_password = generate_password();
    create_role(
        &admin,
        &db.read_summary(),
        &other,
        &other_password,
        in_an_hour(),
    )
    .await
    .unwrap();

    let session = db.start_long_session(&role, &password);
    let bystander = db.start_long_session(&other, &other_password);
    db.wait_for_session(&role).await;
    db.wait_for_session(&other).await;
    let started = Instant::now();
    let outcome = revoke_role(&admin, &role).await.unwrap();
    assert_eq!(
        outcome,
        RevokeOutcome::Revoked {
            sessions_terminated: 1
        }
    );
    let out = tokio::time::timeout(DEADLINE, session.wait_with_output())
        .await
        .expect("the session was not ended by the revocation")
        .unwrap();
    assert!(started.elapsed() < DEADLINE);
    assert!(!out.status.success(), "the session finished its query");
    assert!(
        stderr(&out).contains("terminating connection due to administrator command"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.role_count(role.as_str()), "0");

    // The bystander's query is still running, until its own revocation.
    assert_eq!(
        db.admin_ok(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{other}' AND state = 'active'"
        )),
        "1"
    );
    revoke_role(&admin, &other).await.unwrap();
    let out = tokio::time::timeout(DEADLINE, bystander.wait_with_output())
        .await
        .expect("the bystander was not ended by its revocation")
        .unwrap();
    assert!(!out.status.success());
}

/// Awkward text quoted by the engine and sent to a real server comes back byte for byte:
/// as a string literal, and as a column name (an identifier). NUL is refused before any SQL.
#[tokio::test]
async fn quoted_awkward_text_round_trips_through_postgresql() {
    let Some(db) = Db::setup() else { return };
    let s = &db.schema;
    let inputs = [
        "plain",
        "\"",
        "'",
        "\\",
        "\\'",
        "'\\''",
        "x'; DROP ROLE postgres; --",
        "x\"; DROP ROLE postgres; --",
        "$$ $tag$",
        "a\nb\tc",
        "Zürich ☃ 東京",
        "E'\\x41'",
    ];
    for (i, input) in inputs.iter().enumerate() {
        let hex: String = input.bytes().map(|b| format!("{b:02x}")).collect();
        let literal = quote_literal(input).unwrap();
        // Under both settings of `standard_conforming_strings`, the literal is the input.
        for conforming in ["on", "off"] {
            let got = db.admin_ok(&format!(
                "SET standard_conforming_strings = {conforming}; \
                 SELECT encode(convert_to({literal}, 'UTF8'), 'hex')"
            ));
            assert_eq!(got, hex, "literal {input:?} ({conforming})");
        }
        let ident = quote_ident(input).unwrap();
        db.admin_ok(&format!("CREATE TABLE {s}.q{i} ({ident} int)"));
        let got = db.admin_ok(&format!(
            "SELECT encode(convert_to(attname::text, 'UTF8'), 'hex') FROM pg_attribute \
              WHERE attrelid = '{s}.q{i}'::regclass AND attnum = 1"
        ));
        assert_eq!(got, hex, "identifier {input:?}");
    }
    for nul in ["\0", "a\0b"] {
        assert_eq!(quote_literal(nul).unwrap_err().code(), "invalid_sql_text");
        assert_eq!(quote_ident(nul).unwrap_err().code(), "invalid_sql_text");
    }
}

/// The backend pids of the sessions named `application_name`.
fn sessions_of(db: &Db, application_name: &str) -> Vec<String> {
    let out = db.admin_ok(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{application_name}' \
          ORDER BY pid"
    ));
    out.lines().map(str::to_owned).collect()
}

/// Waits until no session is named `application_name`, failing after [`DEADLINE`].
async fn wait_for_no_sessions(db: &Db, application_name: &str) {
    let start = Instant::now();
    while !sessions_of(db, application_name).is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "sessions of {application_name} stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Operations through a target's pool share one admin session (same backend pid), and
/// removing the target closes it.
#[tokio::test]
async fn pooled_operations_reuse_one_session_until_the_target_is_removed() {
    let Some(db) = Db::setup() else { return };
    let application_name = format!("warden_pool_{}", random_suffix(8));
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let dsn = AdminDsn::parse(&format!(
        "{}{separator}application_name={application_name}",
        db.url
    ))
    .unwrap();
    let pools = TargetPools::new();
    let pool = pools.get("customers", &dsn).unwrap();
    assert!(Arc::ptr_eq(&pool, &pools.get("customers", &dsn).unwrap()));
    assert!(sessions_of(&db, &application_name).is_empty());

    pool.check().await.unwrap();
    let first = sessions_of(&db, &application_name);
    assert_eq!(first.len(), 1, "{first:?}");
    for _ in 0..3 {
        let role = db.new_role("db_read_summary");
        let password = generate_password();
        pool.create_role(&db.read_summary(), &role, &password, in_an_hour())
            .await
            .unwrap();
        let out = db.as_role(&role, &password, "SELECT current_user");
        assert!(out.status.success(), "{}", stderr(&out));
        pool.extend_role(&role, in_an_hour() + time::Duration::minutes(5))
            .await
            .unwrap();
        assert!(matches!(
            pool.revoke_role(&role).await.unwrap(),
            RevokeOutcome::Revoked { .. }
        ));
        assert_eq!(sessions_of(&db, &application_name), first);
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.opened, stats.open, stats.idle),
        (1, 1, 1),
        "{stats:?}"
    );

    // The registry keeps the pool when the handle goes; removing the target closes it.
    drop(pool);
    assert_eq!(sessions_of(&db, &application_name), first);
    assert!(pools.remove("customers"));
    wait_for_no_sessions(&db, &application_name).await;
    assert!(!pools.remove("customers"));

    // Other settings under the same name are another pool, and the old one closes.
    let pool = pools.get("customers", &dsn).unwrap();
    pool.check().await.unwrap();
    assert_eq!(sessions_of(&db, &application_name).len(), 1);
    drop(pool);
    let other = pools.get("customers", &db.admin_dsn()).unwrap();
    wait_for_no_sessions(&db, &application_name).await;
    other.check().await.unwrap();
}

#[tokio::test]
async fn failed_create_leaves_no_role_behind() {
    let Some(db) = Db::setup() else { return };
    let admin = db.admin_dsn();
    let role = db.new_role("db_read_summary");
    // `customers` exists and would be granted first; `invoices` does not.
    let template = db.template(&[(&["SELECT"], &["customers"]), (&["SELECT"], &["invoices"])]);
    let err = create_role(&admin, &template, &role, &generate_password(), in_an_hour())
        .await
        .unwrap_err();
    match &err {
        BrokerError::Rejected { sqlstate, message } => {
            assert_eq!(sqlstate.as_deref(), Some("42P01"), "{message}");
            assert!(message.contains("invoices"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(err.code(), "database_rejected");
    assert_eq!(db.role_count(role.as_str()), "0");
}

#[tokio::test]
async fn creating_an_existing_role_is_rejected_and_keeps_the_first() {
    let Some(db) = Db::setup() else { return };
    let admin = db.admin_dsn();
    let role = db.new_role("db_read_summary");
    let first = generate_password();
    create_role(&admin, &db.read_summary(), &role, &first, in_an_hour())
        .await
        .unwrap();
    let err = create_role(
        &admin,
        &db.read_summary(),
        &role,
        &generate_password(),
        in_an_hour(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, BrokerError::Rejected { sqlstate: Some(code), .. } if code == "42710"),
        "{err:?}"
    );
    let verifier = db.admin_ok(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
    ));
    assert_scram_verifier_for(&verifier, first.expose_secret());
    revoke_role(&admin, &role).await.unwrap();
}

/// The engine needs only CREATEROLE plus ownership (or the grant option) of what it grants;
/// a non-superuser admin must be able to create, terminate sessions and revoke.
#[tokio::test]
async fn least_privileged_admin_creates_and_revokes() {
    let Some(db) = Db::setup() else { return };
    let s = &db.schema;
    let admin_role = format!("broker_test_admin_{}", random_suffix(8));
    db.track(&admin_role);
    db.admin_ok(&format!(
        "CREATE ROLE {admin_role} LOGIN CREATEROLE;
         GRANT CONNECT ON DATABASE \"{database}\" TO {admin_role} WITH GRANT OPTION;
         ALTER SCHEMA {s} OWNER TO {admin_role};
         ALTER TABLE {s}.customers OWNER TO {admin_role};
         ALTER TABLE {s}.orders OWNER TO {admin_role};
         GRANT SELECT ON {s}.secrets TO {admin_role};",
        database = db.database
    ));
    let admin = db.dsn_as(&admin_role);

    let report = check(&admin).await.unwrap();
    assert_eq!(report.user, admin_role);
    assert_eq!(report.database, db.database);
    assert!(!report.superuser);

    let role = db.new_role("db_read_summary");
    let password = generate_password();
    create_role(&admin, &db.read_summary(), &role, &password, in_an_hour())
        .await
        .unwrap();
    let out = db.as_role(&role, &password, &format!("SELECT name FROM {s}.customers"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Ada");

    let session = db.start_long_session(&role, &password);
    db.wait_for_session(&role).await;
    // At least the long one; the `psql` above may still be on its way out.
    let outcome = revoke_role(&admin, &role).await.unwrap();
    assert!(
        matches!(outcome, RevokeOutcome::Revoked { sessions_terminated } if sessions_terminated >= 1),
        "{outcome:?}"
    );
    let out = tokio::time::timeout(DEADLINE, session.wait_with_output())
        .await
        .expect("the session was not ended by the revocation")
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(db.role_count(role.as_str()), "0");

    // The admin may read `secrets` but not pass that on: PostgreSQL only warns, the engine
    // notices and rolls back.
    let role = db.new_role("db_secrets");
    let err = create_role(
        &admin,
        &db.template(&[(&["SELECT"], &["secrets"])]),
        &role,
        &generate_password(),
        in_an_hour(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        BrokerError::GrantIncomplete {
            missing: vec![format!("SELECT on \"{s}\".\"secrets\"")]
        }
    );
    assert_eq!(err.code(), "database_grant_incomplete");
    assert_eq!(db.role_count(role.as_str()), "0");
}

#[tokio::test]
async fn check_tells_whether_the_admin_can_create_roles() {
    let Some(db) = Db::setup() else { return };
    let report = check(&db.admin_dsn()).await.unwrap();
    assert!(report.superuser);
    assert_eq!(report.database, db.database);
    assert!(!report.server_version.is_empty());

    let plain = format!("broker_test_plain_{}", random_suffix(8));
    db.track(&plain);
    db.admin_ok(&format!("CREATE ROLE {plain} LOGIN"));
    let err = check(&db.dsn_as(&plain)).await.unwrap_err();
    assert_eq!(err, BrokerError::InsufficientPrivilege { user: plain });
    assert_eq!(err.code(), "database_insufficient_privilege");
}

#[tokio::test]
async fn a_missing_database_is_rejected_not_unavailable() {
    let Some(db) = Db::setup() else { return };
    let dsn = AdminDsn::parse(&format!(
        "postgres://postgres@{}:{}/broker_no_such_db_{}",
        db.host,
        db.port,
        random_suffix(8)
    ))
    .unwrap();
    let err = check(&dsn).await.unwrap_err();
    assert!(
        matches!(&err, BrokerError::Rejected { sqlstate: Some(code), .. } if code == "3D000"),
        "{err:?}"
    );
}

#[tokio::test]
async fn revoke_refuses_prefixed_roles_the_engine_never_makes() {
    let Some(db) = Db::setup() else { return };
    let role = db.new_role("impostor");
    db.admin_ok(&format!("CREATE ROLE {role} LOGIN CREATEDB"));
    let err = revoke_role(&db.admin_dsn(), &role).await.unwrap_err();
    assert_eq!(err.code(), "role_not_managed");
    assert_eq!(db.role_count(role.as_str()), "1");
}

#[tokio::test]
async fn revoking_an_unknown_role_is_already_gone() {
    let Some(db) = Db::setup() else { return };
    let role = db.new_role("never_created");
    assert_eq!(
        revoke_role(&db.admin_dsn(), &role).await.unwrap(),
        RevokeOutcome::AlreadyGone
    );
}

// ---------------------------------------------------------------------------------------------
// Unreachable targets (no database needed)
// ---------------------------------------------------------------------------------------------

fn read_summary_template() -> RoleTemplate {
    RoleTemplate::from_json(r#"{"grants":[{"privileges":["SELECT"],"tables":["customers"]}]}"#)
        .unwrap()
}

#[tokio::test]
async fn a_refused_connection_is_unavailable_at_once() {
    // Nothing listens on port 1.
    let dsn = AdminDsn::parse("postgres://postgres:hunter2@127.0.0.1:1/test").unwrap();
    let role = role_name(&TemplateName::parse("db_read_summary").unwrap(), "lease");
    let started = Instant::now();
    let errors = [
        create_role(
            &dsn,
            &read_summary_template(),
            &role,
            &generate_password(),
            in_an_hour(),
        )
        .await
        .unwrap_err(),
        revoke_role(&dsn, &role).await.unwrap_err(),
        check(&dsn).await.unwrap_err(),
    ];
    assert!(started.elapsed() < CONNECT_TIMEOUT);
    for err in errors {
        assert_eq!(err.code(), "database_unavailable", "{err:?}");
        assert!(err.to_string().contains("`127.0.0.1:1/test`"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[tokio::test]
async fn a_silent_server_is_unavailable_after_the_connect_timeout() {
    // Accepts TCP connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let dsn = AdminDsn::parse(&format!("postgres://postgres@127.0.0.1:{port}/test")).unwrap();
    let started = Instant::now();
    let err = check(&dsn).await.unwrap_err();
    let elapsed = started.elapsed();
    silent.abort();
    assert_eq!(err.code(), "database_unavailable", "{err:?}");
    assert!(
        err.to_string().contains("no connection within 5 s"),
        "{err}"
    );
    assert!(
        elapsed < CONNECT_TIMEOUT + Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn an_expiry_in_the_past_is_refused_before_connecting() {
    let dsn = AdminDsn::parse("postgres://postgres@127.0.0.1:1/test").unwrap();
    let role = role_name(&TemplateName::parse("db_read_summary").unwrap(), "lease");
    let err = create_role(
        &dsn,
        &read_summary_template(),
        &role,
        &generate_password(),
        OffsetDateTime::now_utc() - time::Duration::seconds(1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "invalid_valid_until", "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Validation (no database needed)
// ---------------------------------------------------------------------------------------------

#[test]
fn table_names() {
    let long = "a".repeat(63);
    let too_long = "a".repeat(64);
    let cases: &[(&str, Option<(&str, &str)>)] = &[
        ("customers", Some(("public", "customers"))),
        ("public.orders", Some(("public", "orders"))),
        ("sales.orders", Some(("sales", "orders"))),
        ("Sales.Orders", Some(("Sales", "Orders"))),
        ("_a$1._b2", Some(("_a$1", "_b2"))),
        (&long, Some(("public", &long))),
        (&too_long, None),
        ("", None),
        (".orders", None),
        ("sales.", None),
        ("a.b.c", None),
        ("1orders", None),
        ("$orders", None),
        ("or ders", None),
        ("orders;DROP TABLE x", None),
        ("\"orders\"", None),
        ("ord\"ers", None),
        ("ord\0ers", None),
        ("ordérs", None),
        ("orders--", None),
        ("pg_catalog.pg_authid", None),
        ("PG_CATALOG.pg_authid", None),
        ("pg_toast.anything", None),
        ("information_schema.tables", None),
    ];
    for (input, expected) in cases {
        let parsed = TableName::parse(input);
        match expected {
            Some((schema, name)) => {
                let table = parsed.unwrap_or_else(|e| panic!("`{input}`: {e}"));
                assert_eq!(table.schema().as_str(), *schema, "{input}");
                assert_eq!(table.name().as_str(), *name, "{input}");
                assert_eq!(
                    table.quoted(),
                    format!("\"{schema}\".\"{name}\""),
                    "{input}"
                );
            }
            None => {
                let err = parsed.expect_err(input);
                assert_eq!(err.code(), "invalid_identifier", "{input}");
            }
        }
    }
}

#[test]
fn role_templates() {
    let many_grants = serde_json::json!({
        "grants": vec![serde_json::json!({"privileges": ["SELECT"], "tables": ["t"]}); MAX_GRANTS + 1]
    })
    .to_string();
    let many_tables = serde_json::json!({
        "grants": [{"privileges": ["SELECT"],
                    "tables": (0..=MAX_TABLES_PER_GRANT).map(|i| format!("t{i}")).collect::<Vec<_>>()}]
    })
    .to_string();
    let many_tables_overall = serde_json::json!({
        "grants": (0..5).map(|g| serde_json::json!({
            "privileges": ["SELECT"],
            "tables": (0..60).map(|i| format!("s{g}.t{i}")).collect::<Vec<_>>()
        })).collect::<Vec<_>>()
    })
    .to_string();
    let oversized = format!(
        r#"{{"grants":[{{"privileges":["SELECT"],"tables":["t"]}}],"pad":"{}"}}"#,
        " ".repeat(MAX_TEMPLATE_BYTES)
    );
    // (document, Ok(number of grants) or Err(part of the reason))
    let cases: &[(&str, Result<usize, &str>)] = &[
        (
            r#"{"grants":[{"privileges":["SELECT"],"tables":["customers","public.orders"]}]}"#,
            Ok(1),
        ),
        (
            r#"{"grants":[{"privileges":["select","Insert"],"tables":["a"]},
                          {"privileges":["DELETE"],"tables":["a","s.b"]}]}"#,
            Ok(2),
        ),
        (
            r#"{"grants":[{"privileges":["SELECT","INSERT","UPDATE","DELETE","TRUNCATE",
                          "REFERENCES","TRIGGER"],"tables":["a"]}]}"#,
            Ok(1),
        ),
        (r#"{"grants":[]}"#, Err("has no grants")),
        (r#"{}"#, Err("missing field `grants`")),
        (
            r#"{"grants":[{"privileges":["SELECT"],"tables":["a"]}],"owner":"x"}"#,
            Err("unknown field `owner`"),
        ),
        (
            r#"{"grants":[{"privileges":["SELECT"],"tables":["a"],"columns":["x"]}]}"#,
            Err("unknown field `columns`"),
        ),
        (
            r#"{"grants":[{"privileges":[],"tables":["a"]}]}"#,
            Err("grants[0].privileges is empty"),
        ),
        (
            r#"{"grants":[{"privileges":["SELECT"],"tables":[]}]}"#,
            Err("grants[0].tables is empty"),
        ),
        (
            r#"{"grants":[{"privileges":["ALL"],"tables":["a"]}]}"#,
            Err("grants[0].privileges[0]: unknown privilege `ALL`"),
        ),
        (
            r#"{"grants":[{"privileges":["SELECT; DROP ROLE postgres"],"tables":["a"]}]}"#,
            Err("unknown privilege"),
        ),
        (
            r#"{"grants":[{"privileges":["SELECT","select"],"tables":["a"]}]}"#,
            Err("grants[0].privileges[1]: duplicate privilege `SELECT`"),
        ),
        (
            r#"{"grants":[{"privileges":["SELECT"],"tables":["a","public.a"]}]}"#,
            Err("grants[0].tables[1]: duplicate table `public.a`"),
        ),
        (
            r#"{"grants":[{"privileges":["SELECT"],"tables":["a"]},
                          {"privileges":["SELECT"],"tables":["x\"; DROP TABLE a; --"]}]}"#,
            Err("grants[1].tables[0]: invalid identifier"),
        ),
        (
            r#"{"grants":[{"privileges":["SELECT"],"tables":["pg_catalog.pg_authid"]}]}"#,
            Err("system schema"),
        ),
        (
            r#"{"grants":[{"privileges":"SELECT","tables":["a"]}]}"#,
            Err("invalid type"),
        ),
        (r#"not json"#, Err("expected")),
        (&many_grants, Err("more than 32 grants")),
        (
            &many_tables,
            Err("grants[0].tables has more than 64 entries"),
        ),
        (&many_tables_overall, Err("more than 256 tables")),
        (&oversized, Err("larger than")),
    ];
    for (json, expected) in cases {
        let parsed = RoleTemplate::from_json(json);
        match expected {
            Ok(grants) => {
                let template = parsed.unwrap_or_else(|e| panic!("{json}: {e}"));
                assert_eq!(template.grants().len(), *grants, "{json}");
            }
            Err(reason) => {
                let err = parsed.expect_err(json);
                assert_eq!(err.code(), "invalid_role_template", "{json}");
                assert!(err.to_string().contains(reason), "{json}: {err}");
            }
        }
    }
}

#[test]
fn templates_round_trip_through_serde_with_the_same_rules() {
    let template = RoleTemplate::from_json(
        r#"{"grants":[{"privileges":["select"],"tables":["customers","sales.orders"]}]}"#,
    )
    .unwrap();
    let json = serde_json::to_string(&template).unwrap();
    assert_eq!(
        json,
        r#"{"grants":[{"privileges":["SELECT"],"tables":["public.customers","sales.orders"]}]}"#
    );
    assert_eq!(
        serde_json::from_str::<RoleTemplate>(&json).unwrap(),
        template
    );
    let schemas: Vec<&str> = template.schemas().iter().map(|s| s.as_str()).collect();
    assert_eq!(schemas, ["public", "sales"]);
    // Embedded in a larger config, serde applies the same validation.
    let err = serde_json::from_str::<RoleTemplate>(r#"{"grants":[]}"#).unwrap_err();
    assert!(err.to_string().contains("has no grants"), "{err}");
}

#[test]
fn template_and_role_names() {
    let templates: &[(&str, bool)] = &[
        ("db_read_summary", true),
        ("_x", true),
        ("a1", true),
        ("", false),
        ("Db", false),
        ("db-read", false),
        ("1db", false),
        ("db$", false),
        (&"a".repeat(63), true),
        (&"a".repeat(64), false),
    ];
    for (input, ok) in templates {
        assert_eq!(TemplateName::parse(input).is_ok(), *ok, "{input}");
    }
    let roles: &[(&str, bool)] = &[
        ("w_db_read_summary_abc123", true),
        ("w_x", true),
        ("w_", false),
        ("postgres", false),
        ("pg_signal_backend", false),
        ("W_x", false),
        ("w_X", false),
        ("w_a-b", false),
        ("w_a\"b", false),
        ("x_w_a", false),
        (&format!("w_{}", "a".repeat(61)), true),
        (&format!("w_{}", "a".repeat(62)), false),
    ];
    for (input, ok) in roles {
        let parsed = RoleName::parse(input);
        assert_eq!(parsed.is_ok(), *ok, "{input}");
        if let Err(err) = parsed {
            assert_eq!(err.code(), "invalid_role_name", "{input}");
        }
    }
}

#[test]
fn generated_role_names_are_valid_unique_and_readable() {
    let template = TemplateName::parse("db_read_summary").unwrap();
    let role = role_name(&template, "3F2A9C1B-0D4E-4A5B-8C6D-7E8F9A0B1C2D");
    assert!(
        role.as_str().starts_with("w_db_read_summary_3f2a9c1b0d4e_"),
        "{role}"
    );
    let cases = [
        (
            TemplateName::parse(&"t".repeat(63)).unwrap(),
            "x".repeat(500),
        ),
        (template.clone(), String::new()),
        (template.clone(), "!!!".to_owned()),
        (template.clone(), "lease-ü-1".to_owned()),
    ];
    for (template, lease) in &cases {
        let role = role_name(template, lease);
        assert!(role.as_str().len() <= 63, "{role}");
        assert_eq!(RoleName::parse(role.as_str()).unwrap(), role);
    }
    let names: std::collections::HashSet<String> = (0..1000)
        .map(|_| role_name(&template, "same-lease").to_string())
        .collect();
    assert_eq!(names.len(), 1000);
}

#[test]
fn generated_passwords_are_long_random_and_never_printed() {
    let a = generate_password();
    let b = generate_password();
    assert_eq!(a.expose_secret().len(), PASSWORD_LEN);
    const { assert!(PASSWORD_LEN >= 32) };
    assert!(a.expose_secret().bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert_eq!(format!("{a:?}"), "Password(***)");
}

#[test]
fn admin_dsns() {
    // (input, Ok(display) or Err(()))
    let cases: &[(&str, Result<&str, ()>)] = &[
        (
            "postgres://admin:s3cret@db.internal:5433/app",
            Ok("postgres://admin:***@db.internal:5433/app"),
        ),
        (
            "postgresql://admin:p%40ss@db:5432/app?sslmode=disable",
            Ok("postgres://admin:***@db:5432/app"),
        ),
        (
            "postgres://admin@db:5432/app",
            Ok("postgres://admin@db:5432/app"),
        ),
        ("mysql://admin:s3cret@db/app", Err(())),
        ("admin:s3cret@db/app", Err(())),
        ("", Err(())),
        ("postgres://admin:s3cret@db:notaport/app", Err(())),
        ("postgres://admin:s3cret@db/app?sslmode=bogus", Err(())),
        // TLS is the target's setting, not the string's.
        ("postgres://admin:s3cret@db/app?sslmode=require", Err(())),
        (
            "postgres://admin:s3cret@db/app?sslrootcert=/etc/ca.pem",
            Err(()),
        ),
        // One host, one port, a user.
        ("postgres://admin:s3cret@db1,db2/app", Err(())),
        ("postgres://admin:s3cret@db:1,db:2/app", Err(())),
        ("postgres://db:5432/app", Err(())),
        ("postgres://admin:s3cret@db/app?hostaddr=10.0.0.1", Err(())),
    ];
    for (input, expected) in cases {
        match (AdminDsn::parse(input), expected) {
            (Ok(dsn), Ok(display)) => {
                assert_eq!(dsn.to_string(), *display, "{input}");
                assert_eq!(format!("{dsn:?}"), format!("AdminDsn({display:?})"));
            }
            (Err(err), Err(())) => {
                assert_eq!(err.code(), "invalid_dsn", "{input}");
                assert!(!err.to_string().contains("s3cret"), "{input}: {err}");
            }
            (got, _) => panic!("`{input}`: unexpected {got:?}"),
        }
    }
}
