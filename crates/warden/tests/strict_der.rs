//! Strict DER: every kind of certificate Warden issues is read by parsers nobody here wrote —
//! X.509-SVIDs from the Workload API (`warden svid x509`) and from a join (over a CSR), the
//! self-signed trust-domain CA, the CA a rotation makes, and intermediates under an upstream
//! CA before and after a rotation. Python's `cryptography` (`tests/interop/strict_der.py`)
//! refuses anything DER forbids, such as the DEFAULT `cA FALSE` written out, and compares each
//! extension with its own DER encoding of it; `openssl x509 -text` parses each one too.
//!
//! Without python3 and `cryptography` that half says it skipped, unless `WARDEN_REQUIRE_PYJWT`
//! is set (CI, which installs `pyjwt[crypto]` and so `cryptography`), when it fails; the same
//! for `openssl` and `WARDEN_REQUIRE_OPENSSL`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{Install, Out, Server, run, warden};
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/strict_der.py");
/// The script's exit code for a package that does not import.
const MISSING_PACKAGES: i32 = 3;
/// Set (CI): no python3 or no `cryptography` fails the test instead of skipping the check.
const REQUIRE_PYTHON: &str = "WARDEN_REQUIRE_PYJWT";
/// Set (CI): no `openssl` fails the test instead of skipping the check.
const REQUIRE_OPENSSL: &str = "WARDEN_REQUIRE_OPENSSL";

const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

/// Prints past the test harness's output capture, so a plain `cargo test` shows a skip.
fn skipped(what: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped: {what}");
}

/// `python3 strict_der.py ARGS…` with no proxy and no `WARDEN_*` variable of the caller.
fn python(args: &[String]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT).args(args);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy().to_ascii_lowercase();
        if name.starts_with("warden_") || name.ends_with("_proxy") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").stdin(Stdio::null());
    cmd
}

/// Whether python3 and `cryptography` are there; fails instead when [`REQUIRE_PYTHON`] is set.
fn have_python() -> bool {
    let missing = match python(&["--check-packages".to_owned()]).output() {
        Ok(out) if out.status.success() => return true,
        Ok(out) if out.status.code() == Some(MISSING_PACKAGES) => {
            String::from_utf8_lossy(&out.stderr).trim().to_owned()
        }
        Ok(out) => panic!("{SCRIPT} --check-packages: {out:?}"),
        Err(e) => format!("python3 cannot run: {e}"),
    };
    assert!(
        std::env::var_os(REQUIRE_PYTHON).is_none(),
        "{REQUIRE_PYTHON} is set but python3 with `cryptography` is not there ({missing}): \
         pip install cryptography"
    );
    skipped(&format!(
        "the check with Python's `cryptography` ({missing}; pip install cryptography)"
    ));
    false
}

/// Whether `openssl` runs; fails instead when [`REQUIRE_OPENSSL`] is set.
fn have_openssl() -> bool {
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => true,
        other => {
            assert!(
                std::env::var_os(REQUIRE_OPENSSL).is_none(),
                "{REQUIRE_OPENSSL} is set but openssl does not run: {other:?}"
            );
            skipped("the check with `openssl x509` (no usable `openssl` binary)");
            false
        }
    }
}

/// What a certificate is, and so what its extensions must say.
#[derive(Debug)]
enum Kind {
    /// An X.509-SVID for this SPIFFE ID.
    Leaf(String),
    /// A self-signed trust-domain CA for this trust domain.
    Root(&'static str),
    /// An intermediate for this trust domain, under an upstream CA.
    Intermediate(&'static str),
}

/// One certificate Warden issued.
#[derive(Debug)]
struct Issued {
    name: &'static str,
    kind: Kind,
    der: Vec<u8>,
    /// The name of the certificate in the same check that signed it, if there is one.
    issuer: Option<&'static str>,
}

/// Both parsers read every certificate (those that are installed): written to `dir` as
/// `NAME.der`, read by each tool from there.
fn check_all(dir: &Path, certs: &[Issued], python: bool, openssl: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let files: Vec<PathBuf> = certs
        .iter()
        .map(|c| {
            let file = dir.join(format!("{}.der", c.name));
            std::fs::write(&file, &c.der).unwrap();
            file
        })
        .collect();
    if python {
        check_with_cryptography(certs, &files);
    }
    if openssl {
        for (cert, file) in certs.iter().zip(&files) {
            check_with_openssl(cert, file);
        }
    }
}

/// `strict_der.py` loads each certificate and every extension; what it found must be what the
/// certificate's kind requires, in DER exactly as `cryptography` writes it.
fn check_with_cryptography(certs: &[Issued], files: &[PathBuf]) {
    let args: Vec<String> = certs
        .iter()
        .zip(files)
        .map(|(c, f)| format!("{}={}", c.name, f.display()))
        .collect();
    let out = python(&args).output().expect("run python3");
    assert!(
        out.status.success(),
        "{SCRIPT}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{SCRIPT} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    // Every refusal at once: which kinds of certificate are affected tells where to look.
    let refused: Vec<String> = certs
        .iter()
        .filter_map(|c| {
            let got = &found[c.name];
            if !got["error"].is_null() {
                Some(format!("{}: does not parse: {}", c.name, got["error"]))
            } else if got["non_canonical"] != json!([]) {
                Some(format!("{}: not DER: {}", c.name, got["non_canonical"]))
            } else {
                None
            }
        })
        .collect();
    assert!(
        refused.is_empty(),
        "Python's cryptography:\n{}",
        refused.join("\n")
    );
    for cert in certs {
        let name = cert.name;
        let got = &found[name];
        let bc = &got["basic_constraints"];
        let ku = &got["key_usage"];
        assert_eq!(bc["critical"], true, "{name}: basicConstraints: {got:#}");
        assert_eq!(ku["critical"], true, "{name}: keyUsage: {got:#}");
        let (ca, path_length, uri) = match &cert.kind {
            Kind::Leaf(id) => (false, Value::Null, id.clone()),
            Kind::Root(td) => (true, Value::Null, format!("spiffe://{td}")),
            Kind::Intermediate(td) => (true, json!(0), format!("spiffe://{td}")),
        };
        assert_eq!(bc["ca"], ca, "{name}: cA: {got:#}");
        assert_eq!(bc["path_length"], path_length, "{name}: pathLen: {got:#}");
        assert_eq!(got["uris"], json!([uri]), "{name}: URI SANs");
        assert_eq!(ku["digital_signature"], true, "{name}: {got:#}");
        assert_eq!(ku["key_cert_sign"], ca, "{name}: keyCertSign: {got:#}");
        assert_eq!(ku["crl_sign"], ca, "{name}: cRLSign: {got:#}");
        let eku = if ca {
            Value::Null
        } else {
            json!([SERVER_AUTH, CLIENT_AUTH])
        };
        assert_eq!(got["extended_key_usage"], eku, "{name}: {got:#}");
        assert!(got["subject_key_id"].is_string(), "{name}: {got:#}");
        if let Some(issuer) = cert.issuer {
            assert_eq!(
                got["authority_key_id"], found[issuer]["subject_key_id"],
                "{name} is not from {issuer}"
            );
        }
    }
}

/// `openssl x509 -inform DER -noout -text` parses the certificate and shows the constraints.
fn check_with_openssl(cert: &Issued, file: &Path) {
    let out = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(file)
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: openssl x509 refused it: {}",
        cert.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let constraint = match &cert.kind {
        Kind::Leaf(_) => "CA:FALSE",
        Kind::Root(_) => "CA:TRUE",
        Kind::Intermediate(_) => "CA:TRUE, pathlen:0",
    };
    for want in [
        "X509v3 Basic Constraints: critical",
        constraint,
        "X509v3 Key Usage: critical",
    ] {
        assert!(
            text.contains(want),
            "{}: no `{want}` in:\n{text}",
            cert.name
        );
    }
}

/// Registers "this user running the warden binary" as `spiffe_id`.
async fn register_warden_binary(install: &Install, server: &Server, spiffe_id: &str) {
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_warden")).unwrap();
    let resp = server
        .http
        .post(server.at("/v1/entries"))
        .bearer_auth(install.admin_token())
        .json(&json!({
            "spiffe_id": spiffe_id,
            "selectors": [
                format!("unix:uid:{}", common::own_uid()),
                format!("unix:path:{}", exe.display()),
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
}

/// The certificates of a PEM file, DER.
fn pem_file(path: &Path) -> Vec<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    identity::x509::certs_from_pem(&text).unwrap()
}

/// `warden svid x509 --out DIR` over the Workload API: the certificates of `svid.pem`.
async fn workload_svid(install: &Install, dir: &Path) -> Vec<Vec<u8>> {
    let mut cmd = warden();
    cmd.arg("svid")
        .arg("--socket")
        .arg(install.data_dir.join("workload.sock"))
        .args(["x509", "--out"])
        .arg(dir);
    run(cmd).await.ok();
    pem_file(&dir.join("svid.pem"))
}

/// A join token for `spiffe_id` exchanged by `warden join --out DIR` (a CSR for a key the
/// agent keeps): the certificates of `svid.pem`.
async fn joined_svid(
    install: &Install,
    server: &Server,
    spiffe_id: &str,
    dir: &Path,
) -> Vec<Vec<u8>> {
    let out = run(install.client(server, &["token", "generate", "--spiffe-id", spiffe_id]))
        .await
        .ok();
    let token = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN "))
        .unwrap_or_else(|| panic!("no token in {out:#?}"))
        .trim()
        .to_owned();
    let mut cmd = warden();
    cmd.args(["join", "--server", &server.url, "--join-token", &token])
        .arg("--out")
        .arg(dir);
    run(cmd).await.ok();
    pem_file(&dir.join("svid.pem"))
}

/// `warden ca rotate [EXTRA…]`, which must say `said`.
async fn rotate(install: &Install, server: &Server, extra: &[&str], said: &str) -> Out {
    let mut args = vec!["ca", "rotate"];
    args.extend_from_slice(extra);
    let out = run(install.client(server, &args)).await.ok();
    assert!(out.stdout.contains(said), "{out:#?}");
    out
}

/// The DER certificates `GET /bundle` publishes.
async fn bundle(server: &Server) -> Vec<Vec<u8>> {
    common::bundle_x509_ders(&server.get_public_json("/bundle").await)
}

#[tokio::test]
async fn self_signed_ca_and_its_svids_are_strict_der() {
    let (python, openssl) = (have_python(), have_openssl());
    if !python && !openssl {
        return;
    }
    let install = Install::new().await;
    let server = install.serve().await;
    let workload = "spiffe://example.org/agent/strict";
    let joined = "spiffe://example.org/agent/joined";
    register_warden_binary(&install, &server, workload).await;

    let roots = bundle(&server).await;
    assert_eq!(roots.len(), 1, "one CA before any rotation");
    let first_root = roots[0].clone();
    let svid = workload_svid(&install, &install.path("svid-1")).await;
    assert_eq!(
        svid.len(),
        1,
        "under a self-signed root, svid.pem is the leaf alone"
    );
    let join = joined_svid(&install, &server, joined, &install.path("join")).await;
    assert_eq!(join.len(), 1);

    // Prepared: the bundle publishes the next CA beside the current one.
    rotate(&install, &server, &[], "prepared:").await;
    let roots = bundle(&server).await;
    assert_eq!(
        roots.len(),
        2,
        "both CAs are published while one is prepared"
    );
    let next_root = roots.into_iter().find(|r| *r != first_root).unwrap();
    // Activated: new SVIDs come from it.
    rotate(&install, &server, &[], "activated:").await;
    let rotated = workload_svid(&install, &install.path("svid-2")).await;
    assert_eq!(rotated.len(), 1);
    assert_ne!(rotated[0], svid[0]);

    check_all(
        &install.path("der"),
        &[
            Issued {
                name: "root",
                kind: Kind::Root("example.org"),
                der: first_root,
                issuer: None,
            },
            Issued {
                name: "workload-leaf",
                kind: Kind::Leaf(workload.to_owned()),
                der: svid[0].clone(),
                issuer: Some("root"),
            },
            Issued {
                name: "joined-leaf",
                kind: Kind::Leaf(joined.to_owned()),
                der: join[0].clone(),
                issuer: Some("root"),
            },
            Issued {
                name: "rotated-root",
                kind: Kind::Root("example.org"),
                der: next_root,
                issuer: None,
            },
            Issued {
                name: "leaf-after-rotation",
                kind: Kind::Leaf(workload.to_owned()),
                der: rotated[0].clone(),
                issuer: Some("rotated-root"),
            },
        ],
        python,
        openssl,
    );
    server.stop().await;
}

/// An operator's upstream root CA (made with rcgen, so openssl is not needed for this half):
/// `chain.pem` (the self-signed root, a chain of one) and its PKCS#8 key `key.pem`, mode 0600.
fn upstream_ca(dir: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Upstream Root CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key).unwrap();
    let (chain, key_file) = (dir.join("chain.pem"), dir.join("key.pem"));
    std::fs::write(&chain, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    (chain, key_file)
}

#[tokio::test]
async fn intermediates_under_an_upstream_ca_and_their_svids_are_strict_der() {
    let (python, openssl) = (have_python(), have_openssl());
    if !python && !openssl {
        return;
    }
    const TD: &str = "corp.example";
    let install = Install::empty();
    let (chain, key) = upstream_ca(&install.path("upstream"));
    install
        .init(&[
            "--trust-domain",
            TD,
            "--upstream-ca-cert",
            chain.to_str().unwrap(),
            "--upstream-ca-key",
            key.to_str().unwrap(),
        ])
        .await
        .ok();
    let server = install.serve().await;
    let workload = format!("spiffe://{TD}/agent/strict");
    let joined = format!("spiffe://{TD}/agent/joined");
    register_warden_binary(&install, &server, &workload).await;

    // svid.pem: the leaf, then Warden's intermediate (the upstream root is not in it).
    let svid = workload_svid(&install, &install.path("svid-1")).await;
    assert_eq!(svid.len(), 2, "leaf and Warden's intermediate");
    rotate(&install, &server, &["--now"], "activated:").await;
    let rotated = workload_svid(&install, &install.path("svid-2")).await;
    assert_eq!(rotated.len(), 2);
    assert_ne!(rotated[1], svid[1], "rotation makes a new intermediate");
    let join = joined_svid(&install, &server, &joined, &install.path("join")).await;
    assert_eq!(join.len(), 2);
    assert_eq!(
        join[1], rotated[1],
        "join issues under the active intermediate"
    );

    check_all(
        &install.path("der"),
        &[
            Issued {
                name: "intermediate",
                kind: Kind::Intermediate(TD),
                der: svid[1].clone(),
                issuer: None,
            },
            Issued {
                name: "workload-leaf",
                kind: Kind::Leaf(workload.clone()),
                der: svid[0].clone(),
                issuer: Some("intermediate"),
            },
            Issued {
                name: "rotated-intermediate",
                kind: Kind::Intermediate(TD),
                der: rotated[1].clone(),
                issuer: None,
            },
            Issued {
                name: "leaf-after-rotation",
                kind: Kind::Leaf(workload),
                der: rotated[0].clone(),
                issuer: Some("rotated-intermediate"),
            },
            Issued {
                name: "joined-leaf",
                kind: Kind::Leaf(joined),
                der: join[0].clone(),
                issuer: Some("rotated-intermediate"),
            },
        ],
        python,
        openssl,
    );
    server.stop().await;
}
