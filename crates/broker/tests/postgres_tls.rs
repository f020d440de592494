//! The engine over TLS, against a private PostgreSQL 15 this test starts with a throw-away CA:
//! `verify-full` with the right CA works end to end (a role is issued, pooled, and `psql` logs
//! in with the handed-out URL and `sslrootcert`), and a wrong CA, a certificate for another
//! host and a server without TLS are each refused with `database_tls_failed`. The instance
//! uses `scram-sha-256` for every TCP login, so these logins also prove the SCRAM verifiers
//! the engine computes (SASLprep included) are right.
//!
//! The shared PostgreSQL on port 5432 is never touched. The instance needs the server
//! binaries in `/usr/lib/postgresql/15/bin`; without them the test says it was skipped, unless
//! `WARDEN_TEST_DATABASE_URL` is set (a machine meant to have PostgreSQL), where it fails.
//! Run as root (as CI does), the server runs as the `postgres` OS user, which PostgreSQL
//! requires.
//!
//! The TLS settings tests at the end need no database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use common::{DEADLINE, PSQL, URL_VAR, random_suffix, stderr, stdout};
use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    time::{Duration, Instant},
};

use broker::postgres::{
    AdminDsn, Password, RevokeOutcome, RoleTemplate, TargetPools, TargetTls, TemplateName, TlsMode,
    check, create_role, generate_password, role_name,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A CA and its PEM certificate.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its PKCS#8 key.
    fn server(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "warden test server");
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// `id` output for `args`, e.g. the uid of the `postgres` user.
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    stdout(&out).parse().ok()
}

/// A private PostgreSQL with TLS on a free port of 127.0.0.1 (and 127.0.0.2, for a host name
/// its certificate does not name), stopped when dropped.
struct Instance {
    dir: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    /// `Some((uid, gid))` of `postgres` when the server must run as that user (we are root).
    run_as: Option<(u32, u32)>,
    admin_password: String,
    ca: Ca,
    ca_file: PathBuf,
    _temp: tempfile::TempDir,
}

impl Instance {
    /// The running instance, or `None` (after saying so) when PostgreSQL is not installed.
    fn start() -> Option<Instance> {
        if !Path::new(BIN).join("initdb").exists() || !Path::new(PSQL).exists() {
            assert!(
                std::env::var_os(URL_VAR).is_none(),
                "{URL_VAR} is set but the PostgreSQL 15 server binaries ({BIN}) or psql are \
                 missing: install postgresql-15"
            );
            eprintln!("skipped: no PostgreSQL 15 server binaries in {BIN}");
            return None;
        }
        let run_as = if id(&["-u"]) == Some(0) {
            let uid = id(&["-u", "postgres"]).expect("running as root needs a `postgres` user");
            let gid = id(&["-g", "postgres"]).expect("the `postgres` user has a group");
            Some((uid, gid))
        } else {
            None
        };
        let temp = tempfile::Builder::new()
            .prefix("warden-pg-tls-")
            .tempdir()
            .unwrap();
        let dir = temp.path().to_owned();
        let data = dir.join("data");
        let socket_dir = dir.join("socket");
        std::fs::create_dir(&socket_dir).unwrap();

        let ca = Ca::new("warden test CA");
        let (server_cert, server_key) = ca.server(&["localhost", "127.0.0.1"]);
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(dir.join("server.crt"), server_cert).unwrap();
        std::fs::write(dir.join("server.key"), server_key).unwrap();
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let admin_password = format!("Adm1n-{}", random_suffix(24));
        std::fs::write(dir.join("pwfile"), &admin_password).unwrap();
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let instance = Instance {
            dir,
            data,
            socket_dir,
            port,
            run_as,
            admin_password,
            ca,
            ca_file,
            _temp: temp,
        };
        if let Some((uid, gid)) = run_as {
            for entry in ["", "socket", "ca.pem", "server.crt", "server.key", "pwfile"] {
                std::os::unix::fs::chown(instance.dir.join(entry), Some(uid), Some(gid)).unwrap();
            }
        }

        instance.server_ok(
            "initdb",
            &[
                "-D",
                path(&instance.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", path(&instance.dir.join("pwfile"))),
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        );
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1,127.0.0.2'\nport = {port}\n\
             unix_socket_directories = '{socket}'\nssl = on\nssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\nfsync = off\nmax_connections = 30\n",
            socket = path(&instance.socket_dir),
            dir = path(&instance.dir),
        );
        append(&instance.data.join("postgresql.conf"), &conf);
        append(
            &instance.data.join("pg_hba.conf"),
            "\nhost all all 127.0.0.2/32 scram-sha-256\n",
        );
        instance.server_ok(
            "pg_ctl",
            &[
                "-D",
                path(&instance.data),
                "-l",
                path(&instance.dir.join("server.log")),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Some(instance)
    }

    /// Runs a server binary, as `postgres` when we are root.
    fn server_ok(&self, program: &str, args: &[&str]) -> Output {
        let binary = format!("{BIN}/{program}");
        let mut command = match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", &binary]);
                c
            }
            None => Command::new(&binary),
        };
        let out = command.args(args).current_dir(&self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}",
            stderr(&out),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        out
    }

    /// Runs `sql` through `psql` as the superuser over the Unix socket (trust).
    fn admin_ok(&self, sql: &str) -> String {
        let out = Command::new(PSQL)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", path(&self.socket_dir), "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql as admin: {}", stderr(&out));
        stdout(&out)
    }

    /// The admin's connection URL over TCP (to `host`), named `application_name`.
    fn admin_url(&self, host: &str, application_name: &str) -> String {
        format!(
            "postgres://postgres:{}@{host}:{}/postgres?application_name={application_name}",
            self.admin_password, self.port
        )
    }

    /// `psql` with `password`, connecting with `conninfo`, running `sql`.
    fn psql(&self, conninfo: &str, password: &str, sql: &str) -> Output {
        Command::new(PSQL)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                conninfo,
            ])
            .args(["-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .env_remove("PGSSLMODE")
            .env_remove("PGSSLROOTCERT")
            .output()
            .unwrap()
    }

    /// The backend pids of the sessions named `application_name`.
    fn sessions_of(&self, application_name: &str) -> Vec<String> {
        self.admin_ok(&format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{application_name}' \
              ORDER BY pid"
        ))
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let binary = format!("{BIN}/pg_ctl");
        let mut command = match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", &binary]);
                c
            }
            None => Command::new(&binary),
        };
        let stopped = command
            .args(["-D", path(&self.data), "-m", "immediate", "-w", "stop"])
            .output();
        if !stopped.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "stopping the private PostgreSQL in {} failed",
                self.dir.display()
            );
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn append(file: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn in_an_hour() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::hours(1)
}

fn read_customers() -> RoleTemplate {
    RoleTemplate::from_json(r#"{"grants":[{"privileges":["SELECT"],"tables":["customers"]}]}"#)
        .unwrap()
}

async fn wait_for_no_sessions(pg: &Instance, application_name: &str) {
    let start = Instant::now();
    while !pg.sessions_of(application_name).is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "sessions of {application_name} stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Against the private server
// ---------------------------------------------------------------------------------------------

/// One instance, the scenarios in turn (the last one turns TLS off).
#[tokio::test]
async fn verify_full_targets_over_tls() {
    let Some(pg) = Instance::start() else { return };
    pg.admin_ok(
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO customers VALUES (1, 'Ada');",
    );
    issued_credentials_log_in_with_verify_full(&pg).await;
    saslprep_passwords_log_in_as_typed(&pg).await;
    the_pool_reuses_one_tls_session(&pg).await;
    a_wrong_ca_or_host_is_refused(&pg).await;
    a_server_without_tls_is_refused(&pg).await;
}

async fn issued_credentials_log_in_with_verify_full(pg: &Instance) {
    let url = pg.admin_url("127.0.0.1", "warden_tls_issue");
    let dsn = AdminDsn::configure(&url, None, Some(&pg.ca.pem())).unwrap();
    assert_eq!(dsn.tls().mode(), TlsMode::VerifyFull);
    let checked = check(&dsn).await.unwrap();
    assert!(checked.superuser);

    let role = role_name(&TemplateName::parse("read_customers").unwrap(), "lse_tls1");
    let password = generate_password();
    create_role(&dsn, &read_customers(), &role, &password, in_an_hour())
        .await
        .unwrap();
    // The server kept the engine's SCRAM verifier.
    let stored = pg.admin_ok(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
    ));
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");

    // The URL handed out says verify-full; with the target's CA psql logs in over TLS and
    // reads what the template grants.
    let client_url = dsn.client_url(&role, &password);
    assert!(
        client_url.ends_with("/postgres?sslmode=verify-full"),
        "{}",
        client_url.as_str()
    );
    assert_eq!(dsn.tls().ca_pem(), Some(pg.ca.pem().as_str()));
    let conninfo = format!("{}&sslrootcert={}", client_url.as_str(), path(&pg.ca_file));
    let out = pg.psql(
        &conninfo,
        "",
        "SELECT current_user || ' ' || ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid(); \
         SELECT name FROM customers",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{role} true\nAda"));
    // A wrong password is refused: logins really check the verifier.
    let wrong = conninfo.replace(password.expose_secret(), "not-the-password");
    let out = pg.psql(&wrong, "", "SELECT 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("password authentication failed"),
        "{}",
        stderr(&out)
    );
    assert!(matches!(
        broker::postgres::revoke_role(&dsn, &role).await.unwrap(),
        RevokeOutcome::Revoked { .. }
    ));
}

/// PostgreSQL and libpq apply SASLprep (RFC 4013) to a password before SCRAM. A verifier made
/// from the raw bytes (what the engine did before it used `postgres-protocol`) does not match
/// what libpq sends for a password that SASLprep changes, and the login fails.
async fn saslprep_passwords_log_in_as_typed(pg: &Instance) {
    let url = pg.admin_url("127.0.0.1", "warden_tls_saslprep");
    let dsn = AdminDsn::configure(&url, Some("verify-full"), Some(&pg.ca.pem())).unwrap();
    // (password as typed, the same after SASLprep)
    let cases = [
        ("I\u{00AD}X-caf\u{00E9}", "IX-caf\u{00E9}"),
        ("\u{2168}-\u{FF50}\u{FF41}\u{FF53}\u{FF53}", "IX-pass"),
        ("quote'back\\slash\u{00A0}space", "quote'back\\slash space"),
    ];
    for (i, (typed, prepared)) in cases.into_iter().enumerate() {
        let role = role_name(
            &TemplateName::parse("read_customers").unwrap(),
            &format!("lse_sasl{i}"),
        );
        let password = Password::from_secret(typed).unwrap();
        create_role(&dsn, &read_customers(), &role, &password, in_an_hour())
            .await
            .unwrap();
        let conninfo = format!(
            "host=127.0.0.1 port={} dbname=postgres user={role} sslmode=verify-full \
             sslrootcert={}",
            pg.port,
            path(&pg.ca_file)
        );
        for given in [typed, prepared] {
            let out = pg.psql(&conninfo, given, "SELECT current_user");
            assert!(
                out.status.success(),
                "password {given:?} for {typed:?}: {}",
                stderr(&out)
            );
            assert_eq!(stdout(&out), role.as_str());
        }
        broker::postgres::revoke_role(&dsn, &role).await.unwrap();
    }
}

async fn the_pool_reuses_one_tls_session(pg: &Instance) {
    let application_name = "warden_tls_pool";
    let dsn = AdminDsn::configure(
        &pg.admin_url("127.0.0.1", application_name),
        Some("verify-full"),
        Some(&pg.ca.pem()),
    )
    .unwrap();
    let pools = TargetPools::new();
    let pool = pools.get("customers", &dsn).unwrap();
    pool.check().await.unwrap();
    let first = pg.sessions_of(application_name);
    assert_eq!(first.len(), 1, "{first:?}");
    // The pooled session is a TLS session.
    assert_eq!(
        pg.admin_ok(&format!(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = {}",
            first[0]
        )),
        "t"
    );
    for i in 0..3 {
        let pool = pools.get("customers", &dsn).unwrap();
        let role = role_name(
            &TemplateName::parse("read_customers").unwrap(),
            &format!("lse_pool{i}"),
        );
        let password = generate_password();
        pool.create_role(&read_customers(), &role, &password, in_an_hour())
            .await
            .unwrap();
        let conninfo = format!(
            "{}&sslrootcert={}",
            pool.dsn().client_url(&role, &password).as_str(),
            path(&pg.ca_file)
        );
        let out = pg.psql(&conninfo, "", "SELECT count(*) FROM customers");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(matches!(
            pool.revoke_role(&role).await.unwrap(),
            RevokeOutcome::Revoked { .. }
        ));
        assert_eq!(pg.sessions_of(application_name), first);
    }
    let stats = pool.stats();
    assert_eq!((stats.opened, stats.open), (1, 1), "{stats:?}");
    drop(pool);
    assert!(pools.remove("customers"));
    wait_for_no_sessions(pg, application_name).await;
}

async fn a_wrong_ca_or_host_is_refused(pg: &Instance) {
    let stranger = Ca::new("someone else's CA");
    let wrong_ca = AdminDsn::configure(
        &pg.admin_url("127.0.0.1", "warden_tls_wrong_ca"),
        None,
        Some(&stranger.pem()),
    )
    .unwrap();
    let err = check(&wrong_ca).await.unwrap_err();
    assert_eq!(err.code(), "database_tls_failed", "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(!err.to_string().contains(&pg.admin_password), "{err}");
    // Pooled, the same refusal, at once and every time.
    let pools = TargetPools::new();
    let pool = pools.get("wrong", &wrong_ca).unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let err = pool.check().await.unwrap_err();
        assert_eq!(err.code(), "database_tls_failed", "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    // The right CA, but 127.0.0.2 is not a name the server's certificate has.
    let other_host = AdminDsn::configure(
        &pg.admin_url("127.0.0.2", "warden_tls_wrong_host"),
        None,
        Some(&pg.ca.pem()),
    )
    .unwrap();
    let err = check(&other_host).await.unwrap_err();
    assert_eq!(err.code(), "database_tls_failed", "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    // The same address without TLS reaches the server (it is the name that was refused).
    let plain = AdminDsn::configure(
        &pg.admin_url("127.0.0.2", "warden_tls_plain"),
        Some("disable"),
        None,
    )
    .unwrap();
    check(&plain).await.unwrap();
    // Refused admins left no session behind.
    for name in ["warden_tls_wrong_ca", "warden_tls_wrong_host"] {
        assert!(pg.sessions_of(name).is_empty());
    }
}

async fn a_server_without_tls_is_refused(pg: &Instance) {
    pg.admin_ok("ALTER SYSTEM SET ssl = off");
    pg.admin_ok("SELECT pg_reload_conf()");
    let start = Instant::now();
    while pg.admin_ok("SHOW ssl") != "off" {
        assert!(start.elapsed() < DEADLINE, "ssl stayed on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = pg.admin_url("127.0.0.1", "warden_tls_off");
    let dsn = AdminDsn::configure(&url, Some("verify-full"), Some(&pg.ca.pem())).unwrap();
    let err = check(&dsn).await.unwrap_err();
    assert_eq!(err.code(), "database_tls_failed", "{err}");
    assert!(err.to_string().contains("does not support TLS"), "{err}");
    // The server itself is up: a target that does not ask for TLS reaches it.
    let plain = AdminDsn::configure(&url, Some("disable"), None).unwrap();
    check(&plain).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// TLS settings (no database needed)
// ---------------------------------------------------------------------------------------------

/// (url, tls, ca_pem, Ok(mode) or Err(code))
type SettingsCase<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Result<TlsMode, &'a str>,
);

#[test]
fn tls_settings_and_their_defaults() {
    let ca = Ca::new("settings CA").pem();
    let (_, key) = Ca::new("x").server(&["localhost"]);
    let with_key = format!("{ca}{key}");
    // (url, tls, ca_pem, Ok(mode) or Err(code))
    let cases: &[SettingsCase<'_>] = &[
        // Local targets default to no TLS.
        (
            "postgres://u@127.0.0.1/db",
            None,
            None,
            Ok(TlsMode::Disable),
        ),
        (
            "postgres://u@127.9.9.9/db",
            None,
            None,
            Ok(TlsMode::Disable),
        ),
        (
            "postgres://u@localhost/db",
            None,
            None,
            Ok(TlsMode::Disable),
        ),
        (
            "postgres://u@[::1]:5433/db",
            None,
            None,
            Ok(TlsMode::Disable),
        ),
        (
            "postgres://u@%2Frun%2Fpostgresql/db",
            None,
            None,
            Ok(TlsMode::Disable),
        ),
        // Others must say.
        (
            "postgres://u@db.internal/db",
            None,
            None,
            Err("invalid_tls"),
        ),
        ("postgres://u@10.0.0.5/db", None, None, Err("invalid_tls")),
        (
            "postgres://u@db.internal/db",
            Some("disable"),
            None,
            Ok(TlsMode::Disable),
        ),
        (
            "postgres://u@db.internal/db",
            None,
            Some(&ca),
            Ok(TlsMode::VerifyFull),
        ),
        (
            "postgres://u@db.internal/db",
            Some("verify-full"),
            Some(&ca),
            Ok(TlsMode::VerifyFull),
        ),
        (
            "postgres://u@127.0.0.1/db",
            Some("verify-full"),
            Some(&ca),
            Ok(TlsMode::VerifyFull),
        ),
        // Contradictions and bad input.
        (
            "postgres://u@db.internal/db",
            Some("verify-full"),
            None,
            Err("invalid_tls"),
        ),
        (
            "postgres://u@db.internal/db",
            Some("disable"),
            Some(&ca),
            Err("invalid_tls"),
        ),
        (
            "postgres://u@db.internal/db",
            Some("require"),
            None,
            Err("invalid_tls"),
        ),
        (
            "postgres://u@db.internal/db",
            Some("VERIFY-FULL"),
            Some(&ca),
            Err("invalid_tls"),
        ),
        (
            "postgres://u@db.internal/db",
            None,
            Some("not a certificate"),
            Err("invalid_tls"),
        ),
        (
            "postgres://u@db.internal/db",
            None,
            Some(""),
            Err("invalid_tls"),
        ),
        (
            "postgres://u@db.internal/db",
            None,
            Some(&with_key),
            Err("invalid_tls"),
        ),
        (
            "postgres://u@db.internal/db",
            None,
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err("invalid_tls"),
        ),
        (
            "postgres://u@%2Frun%2Fpostgresql/db",
            None,
            Some(&ca),
            Err("invalid_tls"),
        ),
        (
            "postgres://u@db.internal/db?sslmode=require",
            None,
            Some(&ca),
            Err("invalid_dsn"),
        ),
    ];
    for (url, tls, ca_pem, expected) in cases {
        match (AdminDsn::configure(url, *tls, *ca_pem), expected) {
            (Ok(dsn), Ok(mode)) => {
                assert_eq!(dsn.tls().mode(), *mode, "{url} {tls:?}");
                assert_eq!(dsn.tls().ca_pem().is_some(), *mode == TlsMode::VerifyFull);
            }
            (Err(err), Err(code)) => assert_eq!(err.code(), *code, "{url} {tls:?}: {err}"),
            (got, _) => panic!("{url} {tls:?}: unexpected {got:?}"),
        }
    }
    let oversized = "x".repeat(broker::postgres::MAX_CA_PEM_BYTES + 1);
    assert_eq!(
        TargetTls::verify_full(&oversized).unwrap_err().code(),
        "invalid_tls"
    );
}

#[tokio::test]
async fn sealed_targets_round_trip_and_old_ones_read_as_without_tls() {
    let ca = Ca::new("sealed CA").pem();
    let url = "postgres://admin:s3cret@db.internal:5433/app";
    let dsn = AdminDsn::configure(url, None, Some(&ca)).unwrap();
    let sealed = dsn.to_sealable();
    let opened = AdminDsn::from_sealed(&sealed).unwrap();
    assert_eq!(opened.tls().mode(), TlsMode::VerifyFull);
    assert_eq!(opened.tls().ca_pem(), Some(ca.as_str()));
    assert_eq!(opened.target(), "db.internal:5433/app");
    // Same settings, same pool.
    let pools = TargetPools::new();
    assert!(Arc::ptr_eq(
        &pools.get("t", &dsn).unwrap(),
        &pools.get("t", &opened).unwrap()
    ));
    // Another CA is another pool.
    let other = dsn
        .clone()
        .with_tls(TargetTls::verify_full(&Ca::new("other").pem()).unwrap())
        .unwrap();
    assert!(!Arc::ptr_eq(
        &pools.get("t", &dsn).unwrap(),
        &pools.get("t", &other).unwrap()
    ));

    // Targets kept before TLS settings existed are bare connection strings: no TLS.
    let legacy = AdminDsn::from_sealed(url.as_bytes()).unwrap();
    assert_eq!(legacy.tls().mode(), TlsMode::Disable);
    assert_eq!(
        legacy.to_string(),
        "postgres://admin:***@db.internal:5433/app"
    );

    // A damaged document says where, not what (it holds the password).
    let err =
        AdminDsn::from_sealed(br#"{"dsn": 7, "tls": "postgres://admin:s3cret@x"}"#).unwrap_err();
    assert_eq!(err.code(), "invalid_dsn");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn client_urls_say_the_sslmode() {
    let ca = Ca::new("url CA").pem();
    let role = role_name(&TemplateName::parse("t").unwrap(), "lse_abc");
    let password = Password::from_secret("p@ss w/rd").unwrap();
    let cases = [
        (
            AdminDsn::configure("postgres://a:b@db.internal:5433/app", None, Some(&ca)).unwrap(),
            format!("postgres://{role}:p%40ss%20w%2Frd@db.internal:5433/app?sslmode=verify-full"),
        ),
        (
            AdminDsn::configure("postgres://a@127.0.0.1/my%20db", None, None).unwrap(),
            format!("postgres://{role}:p%40ss%20w%2Frd@127.0.0.1:5432/my%20db?sslmode=disable"),
        ),
        (
            AdminDsn::configure("postgres://a@[::1]:6000/app", None, None).unwrap(),
            format!("postgres://{role}:p%40ss%20w%2Frd@[::1]:6000/app?sslmode=disable"),
        ),
        (
            AdminDsn::configure("postgres://a@%2Frun%2Fpg/app", None, None).unwrap(),
            format!(
                "postgres://{role}:p%40ss%20w%2Frd@/app?sslmode=disable&host=%2Frun%2Fpg&port=5432"
            ),
        ),
    ];
    for (dsn, expected) in cases {
        assert_eq!(dsn.client_url(&role, &password).as_str(), expected);
    }
}
