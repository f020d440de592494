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

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// Server base URL
    #[arg(
        long,
        env = "WARDEN_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// API token (prefer --token-file or WARDEN_TOKEN: flags show up in `ps`)
    #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// File holding the API token
    #[arg(long, env = "WARDEN_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for an https:// server
    #[arg(long, env = "WARDEN_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> Result<Self> {
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading token file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .use_rustls_tls();
        if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading CA file {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate bundle", path.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: http.build()?,
            base: args.server.trim_end_matches('/').to_owned(),
            token,
        })
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
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => bail!("{} ({}): {}", e.code, status.as_u16(), e.message),
            Err(_) => bail!("server answered {status}: {text}"),
        }
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
        /// Keep printing new entries as they arrive
        #[arg(short, long)]
        follow: bool,
        /// Print each entry as one JSON object
        #[arg(long)]
        json: bool,
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
        /// Output file
        #[arg(short, long)]
        output: PathBuf,
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

fn print_entry(e: &Value, json: bool) {
    if json {
        println!("{e}");
        return;
    }
    let ev = &e["event"];
    println!(
        "{:>8}  {}  {:<8} {:<24} {:<28} {}",
        e["index"],
        ev["time"].as_str().unwrap_or("?"),
        ev["outcome"].as_str().unwrap_or("?"),
        ev["action"].as_str().unwrap_or("?"),
        ev["actor"].as_str().unwrap_or("?"),
        ev["fields"]
    );
}

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

/// The latest checkpoint, its signed note, and the server's key, with the signature checked
/// against that key.
async fn trusted_checkpoint(client: &Client) -> Result<(Checkpoint, String, String)> {
    let vkey = client.get_text("/v1/audit/key").await?;
    let note = client.get_text("/v1/audit/checkpoint").await?;
    let verifier = NoteVerifier::from_vkey(&vkey)?;
    let cp = Checkpoint::parse(verifier.verify(&note)?)?;
    Ok((cp, note, vkey.trim().to_owned()))
}

pub(crate) async fn audit(client: &Client, cmd: AuditCmd) -> Result<()> {
    match cmd {
        AuditCmd::Tail {
            lines,
            follow,
            json,
        } => {
            let page = client.get_json("/v1/audit/entries?limit=1").await?;
            let size = page["tree_size"].as_u64().unwrap_or(0);
            let mut next = size.saturating_sub(lines);
            loop {
                let page = client
                    .get_json(&format!("/v1/audit/entries?from={next}&limit=1000"))
                    .await?;
                let entries = page["entries"].as_array().cloned().unwrap_or_default();
                for e in &entries {
                    print_entry(e, json);
                    next = e["index"].as_u64().map_or(next, |i| i + 1);
                }
                if !follow {
                    return Ok(());
                }
                if entries.is_empty() {
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
                println!("{}", serde_json::to_string_pretty(&p)?);
                let proof = decode_proof(&p["proof"])?;
                let (leaf, root) = (decode_hash(&p["leafHash"])?, decode_hash(&p["root"])?);
                merkle::verify_inclusion(index, size, &leaf, &proof, &root)
                    .context("the server's inclusion proof does not verify")?;
                if size == cp.size {
                    if root != cp.root {
                        bail!("the proof's root differs from the signed checkpoint's root");
                    }
                    eprintln!(
                        "verified: entry {index} is in the signed checkpoint at size {size} ({vkey})"
                    );
                } else {
                    eprintln!(
                        "verified against the root at size {size} (no signed checkpoint at that size)"
                    );
                }
            } else if let Some(from) = from {
                let to = to.unwrap_or(cp.size);
                let p = client
                    .get_json(&format!("/v1/audit/proof/consistency?from={from}&to={to}"))
                    .await?;
                println!("{}", serde_json::to_string_pretty(&p)?);
                let proof = decode_proof(&p["proof"])?;
                let (r1, r2) = (decode_hash(&p["root1"])?, decode_hash(&p["root2"])?);
                merkle::verify_consistency(from, to, &r1.0, &r2.0, &proof)
                    .context("the server's consistency proof does not verify")?;
                if to == cp.size && r2 != cp.root {
                    bail!("the proof's new root differs from the signed checkpoint's root");
                }
                eprintln!("verified: the log at size {to} extends the log at size {from}");
            } else {
                bail!("give --index (inclusion proof) or --from (consistency proof)");
            }
            Ok(())
        }
        AuditCmd::Checkpoint { publish } => {
            if publish {
                let cp = client
                    .post_json("/v1/audit/checkpoint", &Value::Null)
                    .await?;
                print!("{}", cp["note"].as_str().unwrap_or_default());
            } else {
                print!("{}", client.get_text("/v1/audit/checkpoint").await?);
            }
            Ok(())
        }
        AuditCmd::Export { output, publish } => export_log(client, &output, publish).await,
        AuditCmd::Verify { .. } => unreachable_offline(),
    }
}

fn unreachable_offline() -> Result<()> {
    bail!("`audit verify` runs offline and is dispatched before connecting")
}

async fn export_log(client: &Client, output: &PathBuf, publish: bool) -> Result<()> {
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
    let mut out = BufWriter::new(file);
    export::write_header(
        &mut out,
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
            export::write_entry(&mut out, index, &hash, &leaf)?;
            next += 1;
        }
        bar.set_position(next);
    }
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    eprintln!(
        "exported {} entries of {} to {}",
        cp.size,
        cp.origin,
        output.display()
    );
    Ok(())
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
pub(crate) fn verify_offline(
    file: &PathBuf,
    key: Option<String>,
    key_file: Option<PathBuf>,
    quiet: bool,
) -> Result<bool> {
    let vkey = match (key, key_file) {
        (Some(k), _) => k,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading key file {}", path.display()))?,
        (None, None) => bail!("give --key or --key-file"),
    };
    let verifier = NoteVerifier::from_vkey(&vkey)?;
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
        Ok(v) => {
            println!(
                "OK: {} entries of {} verified; root {} is signed by {}",
                v.tree_size,
                v.origin,
                STANDARD.encode(v.root.as_bytes()),
                verifier.name()
            );
            Ok(true)
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(false)
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

pub(crate) async fn tokens(client: &Client, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create { name, role } => {
            let v = client
                .post_json(
                    "/v1/tokens",
                    &serde_json::json!({ "name": name, "role": role }),
                )
                .await?;
            println!("id:    {}", v["id"].as_str().unwrap_or_default());
            println!("role:  {}", v["role"].as_str().unwrap_or_default());
            println!("token: {}", v["token"].as_str().unwrap_or_default());
            eprintln!("(shown once; Warden keeps only its hash)");
        }
        TokenCmd::List => {
            let v = client.get_json("/v1/tokens").await?;
            for t in v.as_array().into_iter().flatten() {
                println!(
                    "{}  {:<9} {:<24} {}",
                    t["id"].as_str().unwrap_or_default(),
                    t["role"].as_str().unwrap_or_default(),
                    t["name"].as_str().unwrap_or_default(),
                    if t["revoked_unix_ms"].is_null() {
                        "active"
                    } else {
                        "revoked"
                    }
                );
            }
        }
        TokenCmd::Revoke { id } => {
            client
                .delete(&format!("/v1/tokens/{}", path_segment(&id)?))
                .await?;
            println!("revoked {id}");
        }
        TokenCmd::Whoami => {
            println!("{}", client.get_json("/v1/whoami").await?);
        }
    }
    Ok(())
}

/// Parses `90s`, `5m`, `1h`, `2d` or plain seconds into seconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 5m, 1h or 2d"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}` is not a duration like 90s, 5m, 1h or 2d")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too long"))
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
        /// X.509-SVID lifetime (90s, 5m, 1h, 2d) [default: 1h]
        #[arg(long, value_parser = parse_duration)]
        x509_ttl: Option<i64>,
        /// JWT-SVID lifetime [default: 5m]
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
}

pub(crate) async fn entries(client: &Client, cmd: EntryCmd) -> Result<()> {
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
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        EntryCmd::List => {
            let v = client.get_json("/v1/entries").await?;
            for e in v.as_array().into_iter().flatten() {
                let selectors: Vec<&str> = e["selectors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{}  {:<40} {}",
                    e["id"].as_str().unwrap_or_default(),
                    e["spiffe_id"].as_str().unwrap_or_default(),
                    selectors.join(",")
                );
            }
        }
        EntryCmd::Show { id } => {
            let v = client
                .get_json(&format!("/v1/entries/{}", path_segment(&id)?))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        EntryCmd::Delete { id } => {
            client
                .delete(&format!("/v1/entries/{}", path_segment(&id)?))
                .await?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

/// An id to put in a URL path: refused if it could change the path.
fn path_segment(id: &str) -> Result<&str> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!("`{id}` is not an id");
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        /// Token lifetime (60s to 7d) [default: 10m]
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
    },
}

pub(crate) async fn join_tokens(client: &Client, cmd: JoinTokenCmd) -> Result<()> {
    match cmd {
        JoinTokenCmd::Generate { spiffe_id, ttl } => {
            let v = client
                .post_json(
                    "/v1/join-tokens",
                    &serde_json::json!({ "spiffe_id": spiffe_id, "ttl_secs": ttl }),
                )
                .await?;
            println!("token:      {}", v["token"].as_str().unwrap_or_default());
            println!(
                "spiffe_id:  {}",
                v["spiffe_id"].as_str().unwrap_or_default()
            );
            println!("expires_ms: {}", v["expires_unix_ms"]);
            eprintln!("(one use; shown once)");
        }
    }
    Ok(())
}

/// `warden join`: exchange a join token for this host's first X.509-SVID. The private key is
/// made here and never sent.
pub(crate) async fn join(client: &Client, join_token: &str, out: &std::path::Path) -> Result<()> {
    let (key_pem, csr) =
        identity::ca::new_key_and_csr().map_err(|e| anyhow::anyhow!("cannot make a key: {e}"))?;
    let v = client
        .post_json(
            "/v1/join",
            &serde_json::json!({ "token": join_token, "csr": csr }),
        )
        .await?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let field = |name: &str| -> Result<String> {
        Ok(v[name]
            .as_str()
            .with_context(|| format!("server answer has no `{name}`"))?
            .to_owned())
    };
    let (svid, bundle) = (field("svid_pem")?, field("bundle_pem")?);
    let key_path = out.join("svid.key");
    if key_path.exists() {
        std::fs::remove_file(&key_path)?;
    }
    crate::keys::write_secret_file(&key_path, key_pem.as_bytes())?;
    std::fs::write(out.join("svid.pem"), svid)?;
    std::fs::write(out.join("bundle.pem"), bundle)?;
    println!("spiffe_id:  {}", field("spiffe_id")?);
    println!("expires_ms: {}", v["expires_unix_ms"]);
    println!(
        "wrote {}/svid.pem, svid.key (0600) and bundle.pem",
        out.display()
    );
    Ok(())
}

/// What to deny: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub(crate) struct DenyTarget {
    /// A workload identity
    #[arg(long)]
    spiffe_id: Option<String>,
    /// One JWT, by its jti
    #[arg(long)]
    jti: Option<String>,
    /// One X.509 certificate, by its serial (lowercase hex)
    #[arg(long)]
    serial: Option<String>,
}

impl DenyTarget {
    fn pair(&self) -> (&'static str, &str) {
        match (&self.spiffe_id, &self.jti, &self.serial) {
            (Some(v), _, _) => ("spiffe_id", v),
            (_, Some(v), _) => ("jti", v),
            (_, _, Some(v)) => ("serial", v),
            // INVARIANT: clap's group makes exactly one present; an empty value fails server-side.
            _ => ("serial", ""),
        }
    }
}

/// `warden deny …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DenyCmd {
    /// Deny an identity or credential everywhere, now (admin)
    Add {
        #[command(flatten)]
        target: DenyTarget,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
    /// Show the denylist
    List,
    /// Lift a denial (admin)
    Remove {
        #[command(flatten)]
        target: DenyTarget,
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

pub(crate) async fn deny(client: &Client, cmd: DenyCmd) -> Result<()> {
    match cmd {
        DenyCmd::Add { target, reason } => {
            let (kind, value) = target.pair();
            let v = client
                .post_json(
                    "/v1/denylist",
                    &serde_json::json!({ "kind": kind, "value": value, "reason": reason }),
                )
                .await?;
            println!(
                "denied {} {}",
                v["kind"].as_str().unwrap_or_default(),
                v["value"].as_str().unwrap_or_default()
            );
        }
        DenyCmd::List => {
            let v = client.get_json("/v1/denylist").await?;
            for e in v.as_array().into_iter().flatten() {
                println!(
                    "{:<9} {:<50} {}",
                    e["kind"].as_str().unwrap_or_default(),
                    e["value"].as_str().unwrap_or_default(),
                    e["reason"].as_str().unwrap_or_default()
                );
            }
        }
        DenyCmd::Remove { target } => {
            let (kind, value) = target.pair();
            client
                .delete(&format!("/v1/denylist/{kind}/{}", percent_encode(value)))
                .await?;
            println!("removed {kind} {value}");
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
        #[arg(long)]
        out: PathBuf,
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
pub(crate) fn workload_socket(flag: Option<PathBuf>, data_dir: &std::path::Path) -> PathBuf {
    flag.or_else(|| {
        std::env::var("SPIFFE_ENDPOINT_SOCKET").ok().map(|v| {
            let path = v
                .strip_prefix("unix://")
                .or_else(|| v.strip_prefix("unix:"))
                .unwrap_or(&v);
            PathBuf::from(path)
        })
    })
    .unwrap_or_else(|| data_dir.join("workload.sock"))
}

pub(crate) async fn svid(socket: PathBuf, cmd: SvidCmd) -> Result<()> {
    use workload::api::client;
    let mut api = client::connect(socket.clone())
        .await
        .with_context(|| format!("cannot reach the Workload API at {}", socket.display()))?;
    let status = |s: workload::api::Status| anyhow::anyhow!("{}: {}", s.code(), s.message());
    match cmd {
        SvidCmd::X509 { out } => {
            let svids = client::fetch_x509(&mut api).await.map_err(status)?;
            let svid = svids.first().context("no X.509-SVID in the answer")?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let key_path = out.join("svid.key");
            if key_path.exists() {
                std::fs::remove_file(&key_path)?;
            }
            crate::keys::write_secret_file(
                &key_path,
                identity::ca::pem("PRIVATE KEY", &svid.x509_svid_key).as_bytes(),
            )?;
            // Both fields are DER certificates back to back: the leaf then its intermediates,
            // and every root of the trust domain.
            let pems = |der: &[u8]| -> Result<String> {
                Ok(identity::x509::split_der(der)
                    .map_err(|e| anyhow::anyhow!("the Workload API sent bad certificates: {e}"))?
                    .iter()
                    .map(|c| identity::ca::cert_pem(c))
                    .collect())
            };
            std::fs::write(out.join("svid.pem"), pems(&svid.x509_svid)?)?;
            std::fs::write(out.join("bundle.pem"), pems(&svid.bundle)?)?;
            println!("{}", svid.spiffe_id);
        }
        SvidCmd::Jwt {
            audiences,
            spiffe_id,
        } => {
            let (_, token) =
                client::fetch_jwt_as(&mut api, audiences, spiffe_id.unwrap_or_default())
                    .await
                    .map_err(status)?;
            println!("{token}");
        }
    }
    Ok(())
}
