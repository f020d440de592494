//! An upstream CA: `warden init --upstream-ca-cert … --upstream-ca-key …` makes Warden's CA an
//! intermediate under a two-level CA built here with the real `openssl`. Workloads and joined
//! agents get the leaf plus the intermediates, relying parties get only the upstream root (in
//! `GET /bundle` and `bundle.pem`), and `openssl verify` accepts the chain — also after a
//! rotation, which makes a new intermediate under the same root. Unusable upstream material is
//! refused by `init` before anything is created.
//!
//! Skipped when `openssl` is missing, unless `WARDEN_REQUIRE_OPENSSL` is set.

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
};

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{Install, Out, Server, run, warden};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const TD: &str = "corp.example";

/// Extensions for the upstream CA's certificates (and for a non-CA certificate, to refuse).
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
[dn]
[ca_root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ca_inter]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ca_inter_p0]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
";

/// Whether `openssl` runs; fails instead of skipping when `WARDEN_REQUIRE_OPENSSL` is set.
fn have_openssl() -> bool {
    match std::process::Command::new("openssl")
        .arg("version")
        .output()
    {
        Ok(out) if out.status.success() => true,
        other => {
            assert!(
                std::env::var_os("WARDEN_REQUIRE_OPENSSL").is_none(),
                "openssl required: {other:?}"
            );
            // Past the test harness's output capture, so a plain `cargo test` shows the skip.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "skipped: no usable `openssl` binary");
            false
        }
    }
}

/// Runs `openssl ARGS…` in `dir`; panics with its output unless it succeeds. Returns stdout.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl verify -CAfile ROOTS [-untrusted INTERMEDIATES] LEAF` (all relative to `dir`).
fn openssl_verify(
    dir: &Path,
    roots: &str,
    intermediates: Option<&str>,
    leaf: &str,
) -> std::process::Output {
    let mut cmd = std::process::Command::new("openssl");
    cmd.current_dir(dir).args(["verify", "-CAfile", roots]);
    if let Some(untrusted) = intermediates {
        cmd.args(["-untrusted", untrusted]);
    }
    cmd.arg(leaf).output().expect("run openssl verify")
}

/// A new P-256 key, PKCS#8 PEM (what `openssl genpkey` writes), mode 0600.
fn genkey(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ],
    );
    chmod600(&dir.join(name));
}

fn chmod600(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A self-signed root CA `NAME.pem` with key `NAME.key`.
fn make_root(dir: &Path, name: &str, cn: &str) {
    let key = format!("{name}.key");
    genkey(dir, &key);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-sha256",
            "-days",
            "3650",
            "-subj",
            &format!("/O=Upstream Test/CN={cn}"),
            "-config",
            "openssl.cnf",
            "-extensions",
            "ca_root",
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A certificate `NAME.pem` (key `NAME.key`) signed by `ISSUER.pem`/`ISSUER.key`, with the
/// extensions of config section `section`.
fn make_signed(dir: &Path, name: &str, cn: &str, issuer: &str, section: &str, serial: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    genkey(dir, &key);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/O=Upstream Test/CN={cn}"),
            "-config",
            "openssl.cnf",
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-set_serial",
            serial,
            "-days",
            "1825",
            "-sha256",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            section,
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// The operator's upstream CA, made with openssl in its own directory:
/// `root.pem`/`root.key` (self-signed), `inter.pem`/`inter.key` (signed by the root, CA) and
/// `chain.pem` = `inter.pem` + `root.pem` (what Warden is given).
struct Upstream {
    dir: PathBuf,
}

impl Upstream {
    fn create(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
        make_root(&dir, "root", "Upstream Root CA");
        make_signed(
            &dir,
            "inter",
            "Upstream Intermediate CA",
            "root",
            "ca_inter",
            "4096",
        );
        let chain = read(&dir.join("inter.pem")) + &read(&dir.join("root.pem"));
        std::fs::write(dir.join("chain.pem"), chain).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    fn der(&self, name: &str) -> Vec<u8> {
        let certs = pem_certs(&read(&self.path(name)));
        assert_eq!(certs.len(), 1, "{name}");
        certs.into_iter().next().unwrap()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `CERTIFICATE` PEM block of `text`, decoded to DER; panics on any other block.
fn pem_certs(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line.strip_prefix("-----BEGIN ") {
            assert_eq!(
                label, "CERTIFICATE-----",
                "unexpected PEM block in:\n{text}"
            );
            assert!(body.is_none(), "nested PEM block in:\n{text}");
            body = Some(String::new());
        } else if line.starts_with("-----END ") {
            let b64 = body.take().expect("END without BEGIN");
            out.push(STANDARD.decode(b64).expect("PEM body is base64"));
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    assert!(body.is_none(), "unterminated PEM block in:\n{text}");
    out
}

/// DER certificates as PEM, back to back.
fn certs_pem(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|der| {
            let b64 = STANDARD.encode(der);
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
        .collect()
}

fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The DER certificates of the bundle's `x509-svid` keys.
async fn bundle_roots(server: &Server) -> Vec<Vec<u8>> {
    common::bundle_x509_ders(&server.get_public_json("/bundle").await)
}

/// What `warden svid x509` or `warden join` wrote, checked against the upstream CA: the leaf,
/// Warden's intermediate and the upstream intermediate in svid.pem, exactly the upstream root
/// in bundle.pem, a chain `openssl verify` accepts only with the intermediates. Returns the
/// DER of Warden's intermediate.
fn check_svid_dir(up: &Upstream, dir: &Path, spiffe_id: &str) -> Vec<u8> {
    let chain = pem_certs(&read(&dir.join("svid.pem")));
    assert_eq!(
        chain.len(),
        3,
        "svid.pem must hold leaf + Warden intermediate + upstream intermediate"
    );
    assert_eq!(
        chain[2],
        up.der("inter.pem"),
        "the last certificate of svid.pem is the upstream intermediate"
    );
    assert!(
        !chain.contains(&up.der("root.pem")),
        "svid.pem must not carry the root"
    );
    assert_eq!(
        pem_certs(&read(&dir.join("bundle.pem"))),
        vec![up.der("root.pem")],
        "bundle.pem holds exactly the upstream root"
    );

    std::fs::write(dir.join("leaf.pem"), certs_pem(&chain[..1])).unwrap();
    std::fs::write(dir.join("intermediates.pem"), certs_pem(&chain[1..])).unwrap();
    std::fs::write(dir.join("warden-ca.pem"), certs_pem(&chain[1..2])).unwrap();
    let v = openssl_verify(dir, "bundle.pem", Some("intermediates.pem"), "leaf.pem");
    let stdout = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success() && stdout.trim() == "leaf.pem: OK",
        "openssl verify:\n{stdout}\n{}",
        String::from_utf8_lossy(&v.stderr)
    );
    // The root alone is not enough: the intermediates are what svid.pem is for.
    let v = openssl_verify(dir, "bundle.pem", None, "leaf.pem");
    assert!(
        !v.status.success(),
        "the leaf must not verify without the intermediates"
    );

    let leaf = openssl(dir, &["x509", "-noout", "-text", "-in", "leaf.pem"]);
    assert!(leaf.contains(&format!("URI:{spiffe_id}")), "leaf:\n{leaf}");
    assert!(leaf.contains("CA:FALSE"), "leaf:\n{leaf}");

    let ca = openssl(dir, &["x509", "-noout", "-text", "-in", "warden-ca.pem"]);
    for want in [
        "CA:TRUE, pathlen:0",
        &format!("URI:spiffe://{TD}"),
        "Certificate Sign",
        "Issuer: O = Upstream Test, CN = Upstream Intermediate CA",
    ] {
        assert!(
            ca.contains(want),
            "Warden's intermediate lacks `{want}`:\n{ca}"
        );
    }
    chain[1].clone()
}

/// Registers "this user running the warden binary" as `spiffe_id`.
async fn register_self(install: &Install, server: &Server, spiffe_id: &str) {
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

/// `warden svid x509 --out DIR` against the install's Workload API socket.
async fn fetch_svid(install: &Install, dir: &Path) -> Out {
    let mut cmd = warden();
    cmd.arg("svid")
        .arg("--socket")
        .arg(install.data_dir.join("workload.sock"))
        .args(["x509", "--out"])
        .arg(dir);
    run(cmd).await.ok()
}

/// The `x509-ca` keys of `GET /v1/ca`.
async fn ca_keys(install: &Install, server: &Server) -> Vec<Value> {
    let keys = server.get_json("/v1/ca", &install.admin_token()).await;
    keys.as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kind"] == "x509-ca")
        .cloned()
        .collect()
}

#[tokio::test]
async fn intermediate_under_upstream_ca_chains_to_the_upstream_root() {
    if !have_openssl() {
        return;
    }
    let install = Install::empty();
    let up = Upstream::create(install.path("upstream"));
    let root = up.der("root.pem");

    // Relative paths, from the upstream directory: init records them absolute.
    let mut cmd = install.cmd();
    cmd.current_dir(&up.dir)
        .arg("init")
        .arg("--admin-token-file")
        .arg(&install.token_file)
        .args(["--trust-domain", TD])
        .args(["--upstream-ca-cert", "chain.pem"])
        .args(["--upstream-ca-key", "inter.key"]);
    run(cmd).await.ok();
    let file: toml::Table = read(&install.data_dir.join("warden.toml")).parse().unwrap();
    assert_eq!(
        file["upstream_ca_cert"].as_str(),
        Some(up.arg("chain.pem").as_str()),
        "{file}"
    );
    assert_eq!(
        file["upstream_ca_key"].as_str(),
        Some(up.arg("inter.key").as_str()),
        "{file}"
    );

    // serve runs from another directory, with only warden.toml naming the upstream CA.
    let server = install.serve().await;
    assert_eq!(
        bundle_roots(&server).await,
        vec![root.clone()],
        "the bundle carries the upstream root, and only it"
    );
    let keys = ca_keys(&install, &server).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["intermediate"], true, "{}", keys[0]);
    assert_eq!(keys[0]["state"], "active", "{}", keys[0]);
    // `warden ca list` (auditor/admin) shows it too.
    let out = run(install.client(&server, &["ca", "list"])).await.ok();
    assert!(
        out.stdout
            .contains(keys[0]["fingerprint"].as_str().unwrap()),
        "{out:#?}"
    );

    // A workload's X.509-SVID.
    let spiffe_id = format!("spiffe://{TD}/agent/shell");
    register_self(&install, &server, &spiffe_id).await;
    let first = install.path("svid-1");
    let out = fetch_svid(&install, &first).await;
    assert_eq!(out.stdout.trim(), spiffe_id);
    let first_ca = check_svid_dir(&up, &first, &spiffe_id);
    assert_eq!(
        keys[0]["fingerprint"].as_str(),
        Some(sha256_hex(&first_ca).as_str()),
        "/v1/ca names the intermediate the SVID chains through"
    );

    // Rotation: a new intermediate under the same upstream; the bundle does not change.
    let out = run(install.client(&server, &["ca", "rotate", "--now"]))
        .await
        .ok();
    assert!(out.stdout.contains("activated:"), "{out:#?}");
    let second = install.path("svid-2");
    fetch_svid(&install, &second).await;
    let second_ca = check_svid_dir(&up, &second, &spiffe_id);
    assert_ne!(first_ca, second_ca, "rotation makes a new intermediate");
    assert_eq!(
        bundle_roots(&server).await,
        vec![root.clone()],
        "the bundle still carries the same root, once"
    );
    let keys = ca_keys(&install, &server).await;
    let states: Vec<(&str, &Value)> = keys
        .iter()
        .map(|k| (k["state"].as_str().unwrap(), &k["intermediate"]))
        .collect();
    assert_eq!(
        states,
        [("retired", &json!(true)), ("active", &json!(true))],
        "{keys:?}"
    );
    assert_eq!(
        keys[1]["fingerprint"].as_str(),
        Some(sha256_hex(&second_ca).as_str())
    );
    // An SVID issued before the rotation still verifies against the (unchanged) bundle.
    let v = openssl_verify(&first, "bundle.pem", Some("intermediates.pem"), "leaf.pem");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));

    // The join exchange hands out the same shape of chain, under the new intermediate.
    let out = run(install.client(
        &server,
        &[
            "token",
            "generate",
            "--spiffe-id",
            &format!("spiffe://{TD}/agent/remote"),
        ],
    ))
    .await
    .ok();
    let token = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN "))
        .unwrap_or_else(|| panic!("no token in {out:#?}"))
        .trim()
        .to_owned();
    let joined = install.path("joined");
    let mut cmd = warden();
    cmd.args(["join", "--server", &server.url, "--join-token", &token])
        .arg("--out")
        .arg(&joined);
    run(cmd).await.ok();
    let join_ca = check_svid_dir(&up, &joined, &format!("spiffe://{TD}/agent/remote"));
    assert_eq!(
        join_ca, second_ca,
        "join issues under the active intermediate"
    );

    // A restart reloads the same intermediate and serves the same bundle.
    server.stop().await;
    let server = install.serve().await;
    assert_eq!(bundle_roots(&server).await, vec![root]);
    let third = install.path("svid-3");
    fetch_svid(&install, &third).await;
    assert_eq!(check_svid_dir(&up, &third, &spiffe_id), second_ca);
    server.stop().await;
}

#[tokio::test]
async fn init_refuses_unusable_upstream_material() {
    if !have_openssl() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = Upstream::create(tmp.path().join("upstream"));
    let dir = &up.dir;
    // A key of no certificate here.
    genkey(dir, "other.key");
    // The intermediate's own key, in SEC1 ("EC PRIVATE KEY") form rather than PKCS#8.
    openssl(dir, &["ec", "-in", "inter.key", "-out", "inter.sec1.key"]);
    chmod600(&dir.join("inter.sec1.key"));
    assert!(read(&dir.join("inter.sec1.key")).starts_with("-----BEGIN EC PRIVATE KEY-----"));
    // A non-CA certificate signed by the root, with its chain and its own key.
    make_signed(dir, "leaf", "Not A CA", "root", "leaf", "8192");
    std::fs::write(
        dir.join("leaf-chain.pem"),
        read(&dir.join("leaf.pem")) + &read(&dir.join("root.pem")),
    )
    .unwrap();
    // The intermediate followed by a root that did not sign it.
    make_root(dir, "stranger", "Some Other Root CA");
    std::fs::write(
        dir.join("wrong-root.pem"),
        read(&dir.join("inter.pem")) + &read(&dir.join("stranger.pem")),
    )
    .unwrap();
    // The right key, readable by others.
    std::fs::copy(dir.join("inter.key"), dir.join("open.key")).unwrap();
    std::fs::set_permissions(dir.join("open.key"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let both = |cert: &str, key: &str| {
        vec![
            "--upstream-ca-cert".to_owned(),
            up.arg(cert),
            "--upstream-ca-key".to_owned(),
            up.arg(key),
        ]
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "a key that is not the certificate's",
            both("chain.pem", "other.key"),
            "the key does not belong to the first certificate",
        ),
        (
            "a SEC1 (non-PKCS#8) key",
            both("chain.pem", "inter.sec1.key"),
            "PKCS#8",
        ),
        (
            "the intermediate without its root",
            both("inter.pem", "inter.key"),
            "does not end in a self-signed root",
        ),
        (
            "a non-CA certificate",
            both("leaf-chain.pem", "leaf.key"),
            "is not a CA",
        ),
        (
            "a chain ending in a root that did not sign it",
            both("wrong-root.pem", "inter.key"),
            "is not signed by the next certificate",
        ),
        (
            "a key file readable by others",
            both("chain.pem", "open.key"),
            "readable by group or others",
        ),
        (
            "only --upstream-ca-cert",
            vec!["--upstream-ca-cert".to_owned(), up.arg("chain.pem")],
            "needs both",
        ),
        (
            "only --upstream-ca-key",
            vec!["--upstream-ca-key".to_owned(), up.arg("inter.key")],
            "needs both",
        ),
    ];
    for (what, flags, message) in cases {
        let install = Install::empty();
        let mut args = vec!["--trust-domain", TD];
        args.extend(flags.iter().map(String::as_str));
        let out = install.init(&args).await;
        assert_ne!(out.code(), Some(0), "{what}: accepted: {out:#?}");
        assert!(
            out.stderr.contains(message),
            "{what}: the error should say `{message}`: {out:#?}"
        );
        assert!(
            !install.data_dir.join("warden.toml").exists(),
            "{what}: left a warden.toml"
        );
        assert!(
            !install.data_dir.exists(),
            "{what}: created the data directory"
        );
        assert!(!install.token_file.exists(), "{what}: wrote an admin token");
    }

    // An upstream CA whose path length forbids a CA under it passes the file checks; init makes
    // and verifies a trial intermediate before creating anything, so it fails leaving nothing
    // behind, and a corrected init in the same place then works.
    make_signed(
        dir,
        "p0",
        "Path Length Zero CA",
        "root",
        "ca_inter_p0",
        "12288",
    );
    std::fs::write(
        dir.join("p0-chain.pem"),
        read(&dir.join("p0.pem")) + &read(&dir.join("root.pem")),
    )
    .unwrap();
    let install = Install::empty();
    let mut args = vec!["--trust-domain", TD];
    let flags = both("p0-chain.pem", "p0.key");
    args.extend(flags.iter().map(String::as_str));
    let out = install.init(&args).await;
    assert_ne!(out.code(), Some(0), "pathlen:0 upstream accepted: {out:#?}");
    assert!(
        out.stderr.contains("the new intermediate does not verify"),
        "{out:#?}"
    );
    assert!(!install.data_dir.join("warden.toml").exists());
    assert!(!install.data_dir.exists(), "created the data directory");
    assert!(!install.token_file.exists());

    // The same material, in order, is accepted — also where the refused attempt was made.
    let mut args = vec!["--trust-domain", TD];
    let flags = both("chain.pem", "inter.key");
    args.extend(flags.iter().map(String::as_str));
    install.init(&args).await.ok();
    assert!(install.data_dir.join("warden.toml").exists());
    let install = Install::empty();
    let mut args = vec!["--trust-domain", TD];
    let flags = both("chain.pem", "inter.key");
    args.extend(flags.iter().map(String::as_str));
    install.init(&args).await.ok();
    assert!(install.data_dir.join("warden.toml").exists());
}
