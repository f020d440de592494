//! Commands that talk to a running server: `warden audit …` and `warden api-token …`.

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use indicatif::{ProgressBar, ProgressStyle};
use ledger::{Checkpoint, NoteVerifier, export};
use serde::Deserialize;
use serde_json::Value;

use crate::output::{self, ApiFailure, Cell, Negative, Out};

/// Where the server is: the flags every command that talks to a server takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// Server base URL
    #[arg(
        long,
        env = "WARDEN_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true,
        help_heading = "Server connection"
    )]
    server: String,
    /// Extra CA certificate (PEM) to trust for an https:// server
    #[arg(
        long,
        env = "WARDEN_CA_FILE",
        global = true,
        help_heading = "Server connection"
    )]
    ca_file: Option<PathBuf>,
}

/// Where the server is and the API token to authenticate with (operator commands).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// API token (prefer --token-file or WARDEN_TOKEN: flags show up in `ps`)
    #[arg(
        long,
        env = "WARDEN_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Server connection"
    )]
    token: Option<String>,
    /// File holding the API token
    #[arg(
        long,
        env = "WARDEN_TOKEN_FILE",
        global = true,
        help_heading = "Server connection"
    )]
    token_file: Option<PathBuf>,
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Whether a 401 should point at `--token-file` (an operator command run without one).
    token_hint: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl Client {
    /// An operator's client: the API token from `--token`, `--token-file` or the environment.
    pub(crate) fn new(args: &ClientArgs) -> Result<Self> {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!(
                            "reading the API token file {} (--token-file / WARDEN_TOKEN_FILE)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let mut client = Self::without_token(&args.server)?;
        client.token_hint = token.is_none();
        client.token = token;
        Ok(client)
    }

    /// A client that sends no API token: an agent's (it presents its SVID per request) or a
    /// joining host's.
    pub(crate) fn without_token(args: &ServerArgs) -> Result<Self> {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .use_rustls_tls();
        if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA file {} (--ca-file)", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!(
                    "{} (--ca-file) is not a PEM certificate bundle",
                    path.display()
                )
            })? {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: http.build()?,
            base: args.server.trim_end_matches('/').to_owned(),
            token: None,
            token_hint: false,
        })
    }

    /// The same server and TLS settings, authenticating with `bearer` (an agent's JWT-SVID).
    pub(crate) fn as_bearer(&self, bearer: &str) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            token: Some(bearer.to_owned()),
            token_hint: false,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach warden at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let Ok(e) = serde_json::from_str::<ErrorBody>(&text) else {
            bail!("server answered {status}: {text}");
        };
        let mut message = e.message;
        if status == reqwest::StatusCode::UNAUTHORIZED && self.token_hint {
            message = format!(
                "no API token given: pass --token-file FILE or set WARDEN_TOKEN_FILE \
                 (the first start wrote DATA_DIR/admin.token) [{message}]"
            );
        }
        Err(ApiFailure {
            status: status.as_u16(),
            code: e.code,
            message,
        }
        .into())
    }

    pub(crate) async fn get_json(&self, path: &str) -> Result<Value> {
        Ok(self
            .send(self.request(reqwest::Method::GET, path))
            .await?
            .json()
            .await?)
    }

    pub(crate) async fn get_text(&self, path: &str) -> Result<String> {
        Ok(self
            .send(self.request(reqwest::Method::GET, path))
            .await?
            .text()
            .await?)
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self
            .send(self.request(reqwest::Method::POST, path).json(body))
            .await?
            .json()
            .await?)
    }

    pub(crate) async fn put_json(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self
            .send(self.request(reqwest::Method::PUT, path).json(body))
            .await?
            .json()
            .await?)
    }

    /// PUT a plain-text body (e.g. a relationship model in the OpenFGA language).
    pub(crate) async fn put_text(&self, path: &str, body: String) -> Result<Value> {
        Ok(self
            .send(
                self.request(reqwest::Method::PUT, path)
                    .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(body),
            )
            .await?
            .json()
            .await?)
    }

    /// POST without a body, for actions that answer 204.
    pub(crate) async fn post_empty(&self, path: &str) -> Result<()> {
        self.send(self.request(reqwest::Method::POST, path)).await?;
        Ok(())
    }

    /// POST a form (OAuth endpoints); answers the status and JSON body, errors included
    /// (OAuth errors are `{"error", "error_description"}`, not Warden's shape).
    pub(crate) async fn post_form(
        &self,
        path: &str,
        pairs: &[(&str, String)],
    ) -> Result<(u16, Value)> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let resp = self
            .request(reqwest::Method::POST, path)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach warden at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// POST JSON as an agent: `bearer` is its JWT-SVID (the API token is not sent).
    pub(crate) async fn post_as_agent(
        &self,
        path: &str,
        bearer: &str,
        body: &Value,
    ) -> Result<Value> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .json(body);
        let resp = self.send(req).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        Ok(resp.json().await?)
    }

    /// The server's OIDC issuer URL: the audience agent JWT-SVIDs for it must carry.
    pub(crate) async fn issuer(&self) -> Result<String> {
        let v = self.get_json("/.well-known/openid-configuration").await?;
        v["issuer"]
            .as_str()
            .map(str::to_owned)
            .context("the server's discovery document has no issuer")
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(reqwest::Method::DELETE, path))
            .await?;
        Ok(())
    }
}

/// `warden audit …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCmd {
    /// Show the latest entries (needs an auditor or admin token)
    Tail {
        /// How many entries
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep printing new entries as they arrive (with --output json: one JSON object per
        /// line)
        #[arg(short, long)]
        follow: bool,
    },
    /// Fetch and check an inclusion proof (--index) or a consistency proof (--from)
    Proof {
        /// Entry index: inclusion proof
        #[arg(long, conflicts_with = "from")]
        index: Option<u64>,
        /// Tree size for the inclusion proof (default: the latest checkpoint's)
        #[arg(long, requires = "index")]
        size: Option<u64>,
        /// Older tree size: consistency proof
        #[arg(long)]
        from: Option<u64>,
        /// Newer tree size (default: the latest checkpoint's)
        #[arg(long, requires = "from")]
        to: Option<u64>,
    },
    /// Print the latest signed checkpoint; --publish signs one now (admin)
    Checkpoint {
        /// Sign a checkpoint covering every entry now
        #[arg(long)]
        publish: bool,
    },
    /// Write a portable export (entries + signed checkpoint) for offline verification
    Export {
        /// The file to write (it must not exist)
        file: PathBuf,
        /// Sign a fresh checkpoint first so the export covers every entry (admin)
        #[arg(long)]
        publish: bool,
    },
    /// Verify an export offline, from scratch, against a trusted key
    Verify {
        /// The export file
        file: PathBuf,
        /// The ledger's verifier key (vkey form), obtained out of band
        #[arg(long, required_unless_present = "key_file")]
        key: Option<String>,
        /// File holding the verifier key
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// No progress bar
        #[arg(long)]
        quiet: bool,
    },
}

/// The columns of `audit tail`.
const ENTRY_COLS: &[output::Col] = &[
    ("INDEX", Cell::Str("index")),
    ("TIME", Cell::With(|e| output::time(&e["event"]["time"]))),
    (
        "OUTCOME",
        Cell::With(|e| output::scalar(&e["event"]["outcome"])),
    ),
    (
        "ACTION",
        Cell::With(|e| output::scalar(&e["event"]["action"])),
    ),
    (
        "ACTOR",
        Cell::With(|e| output::scalar(&e["event"]["actor"])),
    ),
    ("FIELDS", Cell::With(|e| e["event"]["fields"].to_string())),
];

fn decode_hash(v: &Value) -> Result<merkle::Hash> {
    let s = v.as_str().context("expected a base64 hash")?;
    Ok(merkle::Hash::from_slice(&STANDARD.decode(s)?)?)
}

fn decode_proof(v: &Value) -> Result<Vec<merkle::Hash>> {
    v.as_array()
        .context("response has no proof")?
        .iter()
        .map(decode_hash)
        .collect()
}

/// The fields `audit proof` shows (inclusion or consistency; absent ones are left out).
const PROOF_FIELDS: &[output::Col] = &[
    (
        "KIND",
        Cell::With(|p| {
            if p["root1"].is_null() {
                "inclusion".into()
            } else {
                "consistency".into()
            }
        }),
    ),
    ("LEAF_INDEX", Cell::Str("leaf_index")),
    ("TREE_SIZE", Cell::Str("tree_size")),
    ("FROM_SIZE", Cell::Str("size1")),
    ("TO_SIZE", Cell::Str("size2")),
    ("LEAF_HASH", Cell::Str("leaf_hash")),
    (
        "ROOT",
        Cell::With(|p| {
            output::scalar(if p["root"].is_null() {
                &p["root2"]
            } else {
                &p["root"]
            })
        }),
    ),
    ("OLD_ROOT", Cell::Str("root1")),
    ("PROOF", Cell::List("proof")),
];

/// The latest checkpoint, its signed note, and the server's key, with the signature checked
/// against that key.
async fn trusted_checkpoint(client: &Client) -> Result<(Checkpoint, String, String)> {
    let note = client.get_text("/v1/audit/checkpoint").await?;
    verified_checkpoint(client, note).await
}

/// `note` (a signed checkpoint), its checkpoint and the server's key, with the signature
/// checked against that key.
async fn verified_checkpoint(
    client: &Client,
    note: String,
) -> Result<(Checkpoint, String, String)> {
    let vkey = client.get_text("/v1/audit/key").await?;
    let verifier = NoteVerifier::from_vkey(&vkey)?;
    let cp = Checkpoint::parse(verifier.verify(&note)?)?;
    Ok((cp, note, vkey.trim().to_owned()))
}

pub(crate) async fn audit(client: &Client, out: Out, cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Tail { lines, follow } => {
            let page = client.get_json("/v1/audit/entries?limit=1").await?;
            // The last N as of now: not the entries this command's own calls add.
            let size = page["tree_size"].as_u64().unwrap_or(0);
            let mut next = size.saturating_sub(lines);
            if !follow {
                let mut entries = Vec::new();
                while next < size {
                    let page = client
                        .get_json(&format!(
                            "/v1/audit/entries?from={next}&limit={}",
                            (size - next).min(1000)
                        ))
                        .await?;
                    let got = page["entries"].as_array().cloned().unwrap_or_default();
                    let Some(last) = got.last().and_then(|e| e["index"].as_u64()) else {
                        break;
                    };
                    next = last + 1;
                    entries.extend(got);
                }
                entries.truncate(usize::try_from(lines).unwrap_or(usize::MAX));
                let all = Value::Array(entries);
                return out.list(&all, &all, "no audit entries", ENTRY_COLS);
            }
            let mut printed_header = false;
            loop {
                let page = client
                    .get_json(&format!("/v1/audit/entries?from={next}&limit=1000"))
                    .await?;
                let entries = page["entries"].as_array().cloned().unwrap_or_default();
                if let Some(last) = entries.last() {
                    next = last["index"].as_u64().map_or(next, |i| i + 1);
                }
                if out.is_json() {
                    // One JSON object per line while following.
                    for e in &entries {
                        output::line(&e.to_string())?;
                    }
                } else if !entries.is_empty() {
                    let rows: Vec<&Value> = entries.iter().collect();
                    if printed_header {
                        output::table_rows(ENTRY_COLS, &rows)?;
                    } else {
                        output::table(ENTRY_COLS, &rows)?;
                        printed_header = true;
                    }
                } else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        AuditCmd::Proof {
            index,
            size,
            from,
            to,
        } => {
            let (cp, _, vkey) = trusted_checkpoint(client).await?;
            if let Some(index) = index {
                if size.is_none() && index >= cp.size {
                    bail!(
                        "entry {index} is not covered by the latest signed checkpoint (size {}) yet: \
                         run `warden audit checkpoint --publish`, or pass --size",
                        cp.size
                    );
                }
                let size = size.unwrap_or(cp.size);
                let p = client
                    .get_json(&format!(
                        "/v1/audit/proof/inclusion?index={index}&size={size}"
                    ))
                    .await?;
                let proof = decode_proof(&p["proof"])?;
                let (leaf, root) = (decode_hash(&p["leaf_hash"])?, decode_hash(&p["root"])?);
                merkle::verify_inclusion(index, size, &leaf, &proof, &root)
                    .context("the server's inclusion proof does not verify")?;
                let verdict = if size == cp.size {
                    if root != cp.root {
                        bail!("the proof's root differs from the signed checkpoint's root");
                    }
                    format!(
                        "verified: entry {index} is in the signed checkpoint at size {size} ({vkey})"
                    )
                } else {
                    format!(
                        "verified: entry {index} is in the tree at size {size} (no signed checkpoint at that size)"
                    )
                };
                out.object(&p, PROOF_FIELDS)?;
                if out.is_json() {
                    eprintln!("{verdict}");
                } else {
                    output::line(&verdict)?;
                }
            } else if let Some(from) = from {
                let to = to.unwrap_or(cp.size);
                let p = client
                    .get_json(&format!("/v1/audit/proof/consistency?from={from}&to={to}"))
                    .await?;
                let proof = decode_proof(&p["proof"])?;
                let (r1, r2) = (decode_hash(&p["root1"])?, decode_hash(&p["root2"])?);
                merkle::verify_consistency(from, to, &r1.0, &r2.0, &proof)
                    .context("the server's consistency proof does not verify")?;
                if to == cp.size && r2 != cp.root {
                    bail!("the proof's new root differs from the signed checkpoint's root");
                }
                let verdict =
                    format!("verified: the log at size {to} extends the log at size {from}");
                out.object(&p, PROOF_FIELDS)?;
                if out.is_json() {
                    eprintln!("{verdict}");
                } else {
                    output::line(&verdict)?;
                }
            } else {
                bail!("give --index (inclusion proof) or --from (consistency proof)");
            }
            Ok(())
        }
        AuditCmd::Checkpoint { publish } => {
            // The signed note is the checkpoint; JSON adds its size and root, read from the
            // note itself once its signature is checked (the one just published, with
            // --publish, not whichever is latest by the time it is read back).
            let (cp, note, _) = if publish {
                let answer = client
                    .post_json("/v1/audit/checkpoint", &Value::Null)
                    .await?;
                let note = answer["note"]
                    .as_str()
                    .context("the server's answer has no signed note")?
                    .to_owned();
                verified_checkpoint(client, note).await?
            } else {
                trusted_checkpoint(client).await?
            };
            if out.is_json() {
                output::json(&serde_json::json!({
                    "tree_size": cp.size,
                    "root": STANDARD.encode(cp.root.as_bytes()),
                    "note": note,
                }))
            } else {
                output::line(note.trim_end())
            }
        }
        AuditCmd::Export { file, publish } => export_log(client, out, &file, publish).await,
        AuditCmd::Verify { .. } => unreachable_offline(),
    }
}

fn unreachable_offline() -> Result<()> {
    bail!("`audit verify` runs offline and is dispatched before connecting")
}

async fn export_log(client: &Client, out: Out, output: &PathBuf, publish: bool) -> Result<()> {
    if publish {
        client
            .post_json("/v1/audit/checkpoint", &Value::Null)
            .await?;
    }
    let (cp, note, vkey) = trusted_checkpoint(client).await?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)
        .with_context(|| format!("creating {} (it must not exist)", output.display()))?;
    let mut file = BufWriter::new(file);
    export::write_header(
        &mut file,
        &export::Header {
            format: export::FORMAT.into(),
            origin: cp.origin.clone(),
            tree_size: cp.size,
            checkpoint: note,
            vkey,
        },
    )?;
    let bar = progress(cp.size, "exporting");
    let mut next = 0u64;
    while next < cp.size {
        let limit = (cp.size - next).min(1000);
        let page = client
            .get_json(&format!("/v1/audit/entries?from={next}&limit={limit}"))
            .await?;
        let entries = page["entries"].as_array().context("malformed page")?;
        if entries.is_empty() {
            bail!(
                "server returned no entries at {next} though the checkpoint covers {}",
                cp.size
            );
        }
        for e in entries {
            let index = e["index"].as_u64().context("entry without index")?;
            if index != next {
                bail!("server returned entry {index} where {next} was expected");
            }
            let leaf = STANDARD.decode(e["leaf"].as_str().context("entry without leaf")?)?;
            let hash = decode_hash(&e["leaf_hash"])?;
            export::write_entry(&mut file, index, &hash, &leaf)?;
            next += 1;
        }
        bar.set_position(next);
    }
    file.flush()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    out.done(
        &serde_json::json!({
            "file": output.display().to_string(),
            "origin": cp.origin,
            "tree_size": cp.size,
            "root": STANDARD.encode(cp.root.as_bytes()),
        }),
        format!(
            "exported {} entries of {} to {}",
            cp.size,
            cp.origin,
            output.display()
        ),
    )
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} entries ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Hidden when stderr is not a terminal (CI, pipes); indicatif handles that itself.
    bar
}

/// `warden audit verify`: offline, no server, no trust in the file's own claims.
/// Exits 0 when the export verifies, 1 when it does not (the reason is printed).
pub(crate) fn verify_offline(
    out: Out,
    file: &PathBuf,
    key: Option<String>,
    key_file: Option<PathBuf>,
    quiet: bool,
) -> Result<()> {
    let vkey = match (key, key_file) {
        (Some(k), _) => k,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading the key file {} (--key-file)", path.display()))?,
        (None, None) => bail!("give --key or --key-file"),
    };
    let verifier = NoteVerifier::from_vkey(&vkey)
        .context("the verifier key (--key / --key-file) is not a vkey")?;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let reader = std::io::BufReader::with_capacity(1 << 20, f);
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        progress(0, "verifying")
    };
    let result = export::verify(reader, &verifier, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match result {
        Ok(v) => out.done(
            &serde_json::json!({
                "verified": true,
                "origin": v.origin,
                "tree_size": v.tree_size,
                "root": STANDARD.encode(v.root.as_bytes()),
                "signer": verifier.name(),
            }),
            format!(
                "OK: {} entries of {} verified; root {} is signed by {}",
                v.tree_size,
                v.origin,
                STANDARD.encode(v.root.as_bytes()),
                verifier.name()
            ),
        ),
        Err(e) => {
            out.done(
                &serde_json::json!({"verified": false, "error": e.to_string()}),
                format!("FAILED: {e}"),
            )?;
            Err(Negative.into())
        }
    }
}

/// `warden api-token …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCmd {
    /// Create an API token (admin); prints the secret once
    Create {
        /// Unique name
        #[arg(long)]
        name: String,
        /// admin, approver, auditor or enforcer
        #[arg(long)]
        role: String,
    },
    /// List API tokens (admin)
    List,
    /// Revoke an API token by id (admin)
    Revoke {
        /// Token id (tok_…)
        id: String,
    },
    /// Show the calling token
    Whoami,
}

/// The columns of an API token.
const TOKEN_COLS: &[output::Col] = &[
    ("ID", Cell::Str("id")),
    ("NAME", Cell::Str("name")),
    ("ROLE", Cell::Str("role")),
    ("CREATED", Cell::Time("created_unix_ms")),
    ("REVOKED", Cell::Time("revoked_unix_ms")),
    (
        "STATE",
        Cell::With(|t| {
            if t["revoked_unix_ms"].is_null() {
                "active".into()
            } else {
                "revoked".into()
            }
        }),
    ),
];

pub(crate) async fn tokens(client: &Client, out: Out, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create { name, role } => {
            let v = client
                .post_json(
                    "/v1/tokens",
                    &serde_json::json!({ "name": name, "role": role }),
                )
                .await?;
            out.object(
                &v,
                &[
                    ("ID", Cell::Str("id")),
                    ("NAME", Cell::Str("name")),
                    ("ROLE", Cell::Str("role")),
                    ("TOKEN", Cell::Str("token")),
                ],
            )?;
            eprintln!("(the token is shown once; Warden keeps only its hash)");
        }
        TokenCmd::List => {
            let v = client.get_json("/v1/tokens").await?;
            out.list(&v, &v, "no API tokens", TOKEN_COLS)?;
        }
        TokenCmd::Revoke { id } => {
            client
                .delete(&format!("/v1/tokens/{}", path_segment(&id, "token id")?))
                .await?;
            out.done(
                &serde_json::json!({"id": id, "revoked": true}),
                format!("revoked {id}"),
            )?;
        }
        TokenCmd::Whoami => {
            let v = client.get_json("/v1/whoami").await?;
            out.object(
                &v,
                &[
                    ("TOKEN_ID", Cell::Str("token_id")),
                    ("NAME", Cell::Str("name")),
                    ("ROLE", Cell::Str("role")),
                ],
            )?;
        }
    }
    Ok(())
}

/// Parses the one duration syntax of every TTL flag: `90s`, `10m`, `8h`, `2d`, or bare seconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: use 90s, 10m, 8h, 2d or bare seconds"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{s}` is not a duration: use 90s, 10m, 8h, 2d or bare seconds"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// [`parse_duration`] for a setting that cannot be negative.
pub(crate) fn parse_seconds(s: &str) -> Result<u64, String> {
    parse_duration(s).and_then(|n| u64::try_from(n).map_err(|_| format!("`{s}` is negative")))
}

/// `warden entry …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum EntryCmd {
    /// Register a workload: the SPIFFE ID it gets when its kernel-attested selectors match
    /// (admin)
    Create {
        /// SPIFFE ID, e.g. spiffe://example.org/agent/coder
        #[arg(long)]
        spiffe_id: String,
        /// Selector TYPE:VALUE, repeatable: unix:uid:N, unix:gid:N, unix:user:NAME,
        /// unix:path:/ABS/PATH, unix:sha256:HEX
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// X.509-SVID lifetime (90s, 10m, 8h, 2d or seconds) [default: 1h]
        #[arg(long, value_parser = parse_duration)]
        x509_ttl: Option<i64>,
        /// JWT-SVID lifetime (90s, 10m, 8h, 2d or seconds) [default: 5m]
        #[arg(long, value_parser = parse_duration)]
        jwt_ttl: Option<i64>,
        /// Kind of agent, e.g. coder
        #[arg(long)]
        kind: Option<String>,
        /// Owning human or team
        #[arg(long)]
        owner: Option<String>,
        /// Description
        #[arg(long)]
        description: Option<String>,
    },
    /// List registration entries
    List,
    /// Show one entry
    Show {
        /// Entry id (ent_…)
        id: String,
    },
    /// Delete an entry (admin)
    Delete {
        /// Entry id (ent_…)
        id: String,
    },
    /// Register many workloads from a file, in batches of one transaction each (admin).
    /// Entries already registered exactly so are left alone, so re-running a file is safe
    Import {
        /// JSON Lines (.jsonl, .json: one `POST /v1/entries` object per line) or CSV (.csv:
        /// header `spiffe_id,selectors,x509_ttl,jwt_ttl,kind,owner,description`, selectors
        /// separated by `;`); `-` reads standard input
        file: PathBuf,
        /// File format, when the extension does not say (required for `-`)
        #[arg(long, value_enum)]
        format: Option<ImportFormat>,
        /// Entries per batch (1–10000; a batch must also fit in the server's request body
        /// limit, 1 MiB by default)
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        batch_size: u16,
    },
}

/// The formats `warden entry import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ImportFormat {
    /// One JSON object per line, as `POST /v1/entries` takes it
    Jsonl,
    /// A header row, then one entry per row
    Csv,
}

/// One entry of an import file, as `POST /v1/entries` takes it.
#[derive(Debug, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportEntry {
    spiffe_id: String,
    selectors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x509_ttl_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jwt_ttl_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

/// The header row an import CSV starts with.
const IMPORT_CSV_HEADER: [&str; 7] = [
    "spiffe_id",
    "selectors",
    "x509_ttl",
    "jwt_ttl",
    "kind",
    "owner",
    "description",
];

/// Splits one CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote; no line breaks inside
/// a field).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("a quoted field is not closed".to_owned()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("`{c}` after a closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote inside an unquoted field".to_owned()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// One CSV row (after the header) as an entry.
fn csv_entry(line: &str) -> Result<ImportEntry, String> {
    let fields = csv_fields(line)?;
    if fields.len() != IMPORT_CSV_HEADER.len() {
        return Err(format!(
            "{} fields, expected {} ({})",
            fields.len(),
            IMPORT_CSV_HEADER.len(),
            IMPORT_CSV_HEADER.join(",")
        ));
    }
    let text = |i: usize| Some(fields[i].trim().to_owned()).filter(|v| !v.is_empty());
    let ttl = |i: usize| text(i).map(|v| parse_duration(&v)).transpose();
    Ok(ImportEntry {
        spiffe_id: fields[0].trim().to_owned(),
        selectors: fields[1]
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        x509_ttl_secs: ttl(2).map_err(|e| format!("x509_ttl: {e}"))?,
        jwt_ttl_secs: ttl(3).map_err(|e| format!("jwt_ttl: {e}"))?,
        agent_kind: text(4),
        owner: text(5),
        description: text(6),
    })
}

/// Checks what can be checked without the server, so a bad line is found before anything is
/// sent: the SPIFFE ID and every selector parse.
fn check_entry(entry: &ImportEntry) -> Result<(), String> {
    identity::SpiffeId::parse(&entry.spiffe_id)
        .map_err(|e| format!("spiffe_id `{}`: {e}", entry.spiffe_id))?;
    if entry.selectors.is_empty() {
        return Err("no selectors".to_owned());
    }
    for s in &entry.selectors {
        identity::Selector::parse(s).map_err(|e| format!("selector `{s}`: {e}"))?;
    }
    Ok(())
}

/// Reads and parses a whole import file: each entry with its line number. The first bad line
/// is an error naming the file and the line.
fn read_import(
    file: &std::path::Path,
    format: Option<ImportFormat>,
) -> Result<Vec<(usize, ImportEntry)>> {
    let name = file.display().to_string();
    let format = match format {
        Some(f) => f,
        None => match file.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "json") => ImportFormat::Jsonl,
            Some("csv") => ImportFormat::Csv,
            _ => bail!(
                "cannot tell the format of `{name}` from its name: pass --format jsonl or --format csv"
            ),
        },
    };
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read `{name}`"))?
    };
    let mut entries = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    if format == ImportFormat::Csv {
        let header = lines.find(|(_, l)| !l.trim().is_empty());
        let ok = header.is_some_and(|(_, l)| {
            csv_fields(l).is_ok_and(|f| f.iter().map(|h| h.trim()).eq(IMPORT_CSV_HEADER))
        });
        if !ok {
            bail!(
                "{name} line {}: the first row must be the header `{}`",
                header.map_or(1, |(n, _)| n),
                IMPORT_CSV_HEADER.join(",")
            );
        }
    }
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let entry = match format {
            ImportFormat::Jsonl => {
                serde_json::from_str::<ImportEntry>(line).map_err(|e| e.to_string())
            }
            ImportFormat::Csv => csv_entry(line),
        }
        .and_then(|e| check_entry(&e).map(|()| e))
        .map_err(|e| anyhow::anyhow!("{name} line {n}: {e}"))?;
        entries.push((n, entry));
    }
    Ok(entries)
}

/// The answer of `POST /v1/entries/batch`.
#[derive(Debug, Deserialize)]
struct BatchAnswer {
    created: Vec<String>,
    existing: Vec<String>,
}

/// `warden entry import`: parses the whole file first (nothing is sent if a line is bad), then
/// sends it in batches, each one transaction and one ledger entry.
async fn import_entries(
    client: &Client,
    out: Out,
    file: &std::path::Path,
    format: Option<ImportFormat>,
    batch_size: usize,
) -> Result<()> {
    let name = file.display().to_string();
    let entries = read_import(file, format)?;
    let bar = progress(entries.len() as u64, "importing");
    let (mut created, mut existing, mut batches) = (0usize, 0usize, 0usize);
    for chunk in entries.chunks(batch_size) {
        let body = serde_json::json!({
            "entries": chunk.iter().map(|(_, e)| e).collect::<Vec<_>>(),
        });
        let answer = match client.post_json("/v1/entries/batch", &body).await {
            Ok(v) => v,
            Err(e) => {
                bar.abandon();
                let done = if batches == 0 {
                    "nothing was registered".to_owned()
                } else {
                    format!(
                        "the {batches} batches before it were registered ({created} created, \
                         {existing} already registered); re-running the file is safe"
                    )
                };
                // The server names the refused entry by its index in the batch: say its line.
                if let Some(f) = e.downcast_ref::<ApiFailure>() {
                    let line = f
                        .message
                        .strip_prefix("entry ")
                        .and_then(|rest| rest.split_once(": "))
                        .and_then(|(i, m)| Some((chunk.get(i.parse::<usize>().ok()?)?.0, m)));
                    let message = match line {
                        Some((n, m)) => format!("{name} line {n}: {m}; {done}"),
                        None if f.status == 413 => format!(
                            "{name}: a batch of {} entries is over the server's request body \
                             limit: pass a smaller --batch-size; {done}",
                            chunk.len()
                        ),
                        None => format!("{name}: {}; {done}", f.message),
                    };
                    return Err(ApiFailure {
                        status: f.status,
                        code: f.code.clone(),
                        message,
                    }
                    .into());
                }
                return Err(e.context(format!("{name}: {done}")));
            }
        };
        let answer: BatchAnswer = serde_json::from_value(answer)
            .context("the server's answer to a batch has an unexpected shape")?;
        created += answer.created.len();
        existing += answer.existing.len();
        batches += 1;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let total = created + existing;
    let sentence = if total > 0 && created == 0 {
        format!(
            "imported {total} entries (0 created, {existing} already registered) in {batches} batches: nothing new to register"
        )
    } else {
        format!(
            "imported {total} entries ({created} created, {existing} already registered) in {batches} batches"
        )
    };
    out.done(
        &serde_json::json!({"created": created, "existing": existing, "batches": batches}),
        sentence,
    )
}

/// The fields of a registration entry.
const ENTRY_FIELDS: &[output::Col] = &[
    ("ID", Cell::Str("id")),
    ("SPIFFE_ID", Cell::Str("spiffe_id")),
    ("SELECTORS", Cell::List("selectors")),
    ("X509_TTL_SECS", Cell::Str("x509_ttl_secs")),
    ("JWT_TTL_SECS", Cell::Str("jwt_ttl_secs")),
    ("KIND", Cell::Str("agent_kind")),
    ("OWNER", Cell::Str("owner")),
    ("DESCRIPTION", Cell::Str("description")),
    ("CREATED", Cell::Time("created_unix_ms")),
];

pub(crate) async fn entries(client: &Client, out: Out, cmd: EntryCmd) -> Result<()> {
    match cmd {
        EntryCmd::Create {
            spiffe_id,
            selectors,
            x509_ttl,
            jwt_ttl,
            kind,
            owner,
            description,
        } => {
            let v = client
                .post_json(
                    "/v1/entries",
                    &serde_json::json!({
                        "spiffe_id": spiffe_id,
                        "selectors": selectors,
                        "x509_ttl_secs": x509_ttl,
                        "jwt_ttl_secs": jwt_ttl,
                        "agent_kind": kind,
                        "owner": owner,
                        "description": description,
                    }),
                )
                .await?;
            out.object(&v, ENTRY_FIELDS)?;
        }
        EntryCmd::List => {
            let v = client.get_json("/v1/entries").await?;
            out.list(
                &v,
                &v,
                "no registration entries",
                &[
                    ("ID", Cell::Str("id")),
                    ("SPIFFE_ID", Cell::Str("spiffe_id")),
                    ("OWNER", Cell::Str("owner")),
                    ("SELECTORS", Cell::List("selectors")),
                ],
            )?;
        }
        EntryCmd::Show { id } => {
            let v = client
                .get_json(&format!("/v1/entries/{}", path_segment(&id, "entry id")?))
                .await?;
            out.object(&v, ENTRY_FIELDS)?;
        }
        EntryCmd::Import {
            file,
            format,
            batch_size,
        } => {
            import_entries(client, out, &file, format, usize::from(batch_size)).await?;
        }
        EntryCmd::Delete { id } => {
            client
                .delete(&format!("/v1/entries/{}", path_segment(&id, "entry id")?))
                .await?;
            out.done(
                &serde_json::json!({"id": id, "deleted": true}),
                format!("deleted {id}"),
            )?;
        }
    }
    Ok(())
}

/// An id to put in a URL path: refused if it could change the path.
fn path_segment<'a>(id: &'a str, what: &str) -> Result<&'a str> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("`{id}` is not a {what} (letters, digits, `_` and `-`)");
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records() {
        assert_eq!(csv_fields("a,b,,c").unwrap(), ["a", "b", "", "c"]);
        assert_eq!(
            csv_fields(r#""x, y","say ""hi""",z"#).unwrap(),
            ["x, y", r#"say "hi""#, "z"]
        );
        assert_eq!(csv_fields("").unwrap(), [""]);
        for bad in [r#""open"#, r#"a"b"#, r#""x"y"#] {
            assert!(csv_fields(bad).is_err(), "{bad}");
        }
        let e =
            csv_entry("spiffe://x.org/a,unix:uid:1;unix:gid:2,1h,5m,coder,me,\"a, b\"").unwrap();
        assert_eq!(e.selectors, ["unix:uid:1", "unix:gid:2"]);
        assert_eq!((e.x509_ttl_secs, e.jwt_ttl_secs), (Some(3600), Some(300)));
        assert_eq!(e.description.as_deref(), Some("a, b"));
        let e = csv_entry("spiffe://x.org/a,unix:uid:1,,,,,").unwrap();
        assert_eq!((e.x509_ttl_secs, e.agent_kind), (None, None));
        assert!(csv_entry("spiffe://x.org/a,unix:uid:1").is_err());
        assert!(csv_entry("spiffe://x.org/a,unix:uid:1,soon,,,,").is_err());
    }

    #[test]
    fn durations() {
        for (input, want) in [
            ("90s", 90),
            ("5m", 300),
            ("1h", 3600),
            ("2d", 172_800),
            ("45", 45),
        ] {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
        for bad in ["", "5x", "m", "-5m", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

/// `warden token …` (join tokens for agents on other hosts)
#[derive(Debug, clap::Subcommand)]
pub(crate) enum JoinTokenCmd {
    /// Generate a one-time join token for a SPIFFE ID (admin); prints the secret once
    Generate {
        /// SPIFFE ID the token may be exchanged for
        #[arg(long)]
        spiffe_id: String,
        /// Token lifetime (90s, 10m, 8h, 2d or seconds; 60s to 7d) [default: 10m]
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
    },
}

pub(crate) async fn join_tokens(client: &Client, out: Out, cmd: JoinTokenCmd) -> Result<()> {
    match cmd {
        JoinTokenCmd::Generate { spiffe_id, ttl } => {
            let v = client
                .post_json(
                    "/v1/join-tokens",
                    &serde_json::json!({ "spiffe_id": spiffe_id, "ttl_secs": ttl }),
                )
                .await?;
            out.object(
                &v,
                &[
                    ("TOKEN", Cell::Str("token")),
                    ("SPIFFE_ID", Cell::Str("spiffe_id")),
                    ("EXPIRES", Cell::Time("expires_unix_ms")),
                ],
            )?;
            eprintln!("(one use; the token is shown once)");
        }
    }
    Ok(())
}

/// `warden join`: exchange a join token for this host's first X.509-SVID. The private key is
/// made here and never sent.
pub(crate) async fn join(
    client: &Client,
    out: Out,
    join_token: &str,
    dir: &std::path::Path,
) -> Result<()> {
    let (key_pem, csr) =
        identity::ca::new_key_and_csr().map_err(|e| anyhow::anyhow!("cannot make a key: {e}"))?;
    let v = client
        .post_json(
            "/v1/join",
            &serde_json::json!({ "token": join_token, "csr": csr }),
        )
        .await?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {} (--out)", dir.display()))?;
    let field = |name: &str| -> Result<String> {
        Ok(v[name]
            .as_str()
            .with_context(|| format!("server answer has no `{name}`"))?
            .to_owned())
    };
    let (svid, bundle) = (field("svid_pem")?, field("bundle_pem")?);
    write_identity(dir, &svid, key_pem.as_bytes(), &bundle)?;
    let mut answer = serde_json::json!({
        "spiffe_id": field("spiffe_id")?,
        "expires_unix_ms": v["expires_unix_ms"],
    });
    answer["files"] = serde_json::json!(identity_files(dir));
    out.object(
        &answer,
        &[
            ("SPIFFE_ID", Cell::Str("spiffe_id")),
            ("EXPIRES", Cell::Time("expires_unix_ms")),
            ("FILES", Cell::List("files")),
        ],
    )
}

/// The three files an identity is written to: the SVID chain, its key (0600) and the bundle.
fn identity_files(dir: &std::path::Path) -> Vec<String> {
    ["svid.pem", "svid.key", "bundle.pem"]
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect()
}

/// Writes svid.pem, svid.key (0600, replaced, never widened) and bundle.pem into `dir`.
fn write_identity(
    dir: &std::path::Path,
    svid_pem: &str,
    key_pem: &[u8],
    bundle_pem: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {} (--out)", dir.display()))?;
    let key_path = dir.join("svid.key");
    if key_path.exists() {
        std::fs::remove_file(&key_path)
            .with_context(|| format!("replacing {}", key_path.display()))?;
    }
    crate::keys::write_secret_file(&key_path, key_pem)?;
    std::fs::write(dir.join("svid.pem"), svid_pem)
        .with_context(|| format!("writing {}", dir.join("svid.pem").display()))?;
    std::fs::write(dir.join("bundle.pem"), bundle_pem)
        .with_context(|| format!("writing {}", dir.join("bundle.pem").display()))?;
    Ok(())
}

/// What a denial names.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum DenyKind {
    /// A workload identity, by SPIFFE ID
    SpiffeId,
    /// One JWT, by its jti
    Jti,
    /// One X.509 certificate, by its serial (lowercase hex)
    Serial,
}

impl DenyKind {
    fn as_str(self) -> &'static str {
        match self {
            DenyKind::SpiffeId => "spiffe_id",
            DenyKind::Jti => "jti",
            DenyKind::Serial => "serial",
        }
    }
}

/// `warden deny …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DenyCmd {
    /// Deny an identity or credential everywhere, now (admin)
    Add {
        /// spiffe-id, jti or serial
        #[arg(value_enum)]
        kind: DenyKind,
        /// The SPIFFE ID, jti or serial
        value: String,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
    /// Show the denylist
    List,
    /// Lift a denial (admin)
    Remove {
        /// spiffe-id, jti or serial
        #[arg(value_enum)]
        kind: DenyKind,
        /// The SPIFFE ID, jti or serial
        value: String,
    },
}

pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(crate) async fn deny(client: &Client, out: Out, cmd: DenyCmd) -> Result<()> {
    match cmd {
        DenyCmd::Add {
            kind,
            value,
            reason,
        } => {
            let v = client
                .post_json(
                    "/v1/denylist",
                    &serde_json::json!({ "kind": kind.as_str(), "value": value, "reason": reason }),
                )
                .await?;
            out.done(
                &v,
                format!(
                    "denied {} {}",
                    output::scalar(&v["kind"]),
                    output::scalar(&v["value"])
                ),
            )?;
        }
        DenyCmd::List => {
            let v = client.get_json("/v1/denylist").await?;
            out.list(
                &v,
                &v,
                "no denials",
                &[
                    ("KIND", Cell::Str("kind")),
                    ("VALUE", Cell::Str("value")),
                    ("CREATED", Cell::Time("created_unix_ms")),
                    ("BY", Cell::Str("created_by")),
                    ("REASON", Cell::Str("reason")),
                ],
            )?;
        }
        DenyCmd::Remove { kind, value } => {
            let kind = kind.as_str();
            client
                .delete(&format!("/v1/denylist/{kind}/{}", percent_encode(&value)))
                .await?;
            out.done(
                &serde_json::json!({"kind": kind, "value": value, "removed": true}),
                format!("removed {kind} {value}"),
            )?;
        }
    }
    Ok(())
}

/// `warden svid …`: fetch this process's identity from the local Workload API, for agents
/// written as shell scripts. The caller is attested from the kernel: it gets what the
/// registration entries give the user and executable running `warden`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SvidCmd {
    /// Write the X.509-SVID, its key (0600) and the bundle as PEM files
    X509 {
        /// Directory for svid.pem, svid.key and bundle.pem
        #[arg(long = "out", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print a JWT-SVID for an audience
    Jwt {
        /// Audience (repeatable)
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// Which of this process's identities (default: the first)
        #[arg(long)]
        spiffe_id: Option<String>,
    },
}

/// The Workload API socket: `--socket`, else `SPIFFE_ENDPOINT_SOCKET`, else the data
/// directory's default.
/// directory's default. Each may be a path or a `unix://` / `unix:` address.
pub(crate) fn workload_socket(flag: Option<String>, data_dir: &std::path::Path) -> PathBuf {
    flag.or_else(|| std::env::var("SPIFFE_ENDPOINT_SOCKET").ok())
        .map(|v| socket_path(&v))
        .unwrap_or_else(|| data_dir.join("workload.sock"))
}

/// A Workload API address as a path: `unix:///run/x.sock`, `unix:/run/x.sock` or `/run/x.sock`.
fn socket_path(address: &str) -> PathBuf {
    PathBuf::from(
        address
            .strip_prefix("unix://")
            .or_else(|| address.strip_prefix("unix:"))
            .unwrap_or(address),
    )
}

/// A Workload API refusal as an error: a permission refusal (no identity for this caller, a
/// held or denied one) is a "no" (exit 1), anything else an error (exit 2).
pub(crate) fn workload_error(s: &workload::api::Status) -> anyhow::Error {
    // 7: gRPC's PERMISSION_DENIED; its message says why (not attested, on hold, denied).
    if s.code() as i32 == 7 {
        output::Refused(format!("the Workload API refused: {}", s.message())).into()
    } else {
        anyhow::anyhow!("the Workload API failed: {}: {}", s.code(), s.message())
    }
}

pub(crate) async fn svid(socket: PathBuf, out: Out, cmd: SvidCmd) -> Result<()> {
    use workload::api::client;
    let mut api = client::connect(socket.clone())
        .await
        .with_context(|| format!("cannot reach the Workload API at {}", socket.display()))?;
    let status = |s: workload::api::Status| workload_error(&s);
    match cmd {
        SvidCmd::X509 { dir } => {
            let svids = client::fetch_x509(&mut api).await.map_err(status)?;
            let svid = svids.first().context("no X.509-SVID in the answer")?;
            // Both fields are DER certificates back to back: the leaf then its intermediates,
            // and every root of the trust domain.
            let pems = |der: &[u8]| -> Result<String> {
                Ok(identity::x509::split_der(der)
                    .map_err(|e| anyhow::anyhow!("the Workload API sent bad certificates: {e}"))?
                    .iter()
                    .map(|c| identity::ca::cert_pem(c))
                    .collect())
            };
            write_identity(
                &dir,
                &pems(&svid.x509_svid)?,
                identity::ca::pem("PRIVATE KEY", &svid.x509_svid_key).as_bytes(),
                &pems(&svid.bundle)?,
            )?;
            if out.is_json() {
                output::json(&serde_json::json!({
                    "spiffe_id": svid.spiffe_id,
                    "files": identity_files(&dir),
                }))?;
            } else {
                output::line(&svid.spiffe_id)?;
            }
        }
        SvidCmd::Jwt {
            audiences,
            spiffe_id,
        } => {
            let (_, token) =
                client::fetch_jwt_as(&mut api, audiences, spiffe_id.unwrap_or_default())
                    .await
                    .map_err(status)?;
            if out.is_json() {
                output::json(&serde_json::json!({ "token": token }))?;
            } else {
                output::line(&token)?;
            }
        }
    }
    Ok(())
}
