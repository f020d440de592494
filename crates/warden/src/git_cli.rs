//! `warden git …`: Warden guarding a git repository server-side. `install-hook` makes a bare
//! repository's `pre-receive` hook run `warden git pre-receive`, which asks Warden
//! (`POST /v1/git/authorize`) about every ref of every push and refuses the push unless each
//! is allowed — and when Warden cannot be reached (fail closed).
//!
//! The pusher's credential is a JWT-SVID for the audience `git:<repository>` alone — good for
//! that repository's pushes and refused by Warden's agent APIs, so the git server that sees it
//! cannot replay it — sent as the push option `warden-token=<JWT-SVID>`:
//! `git push -o warden-token="$(warden svid jwt --audience git:REPO)" origin HEAD:refs/heads/x`.
//! The hook's own credential is an API token of role `enforcer` in a file.

use std::{
    io::{BufRead, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Marks a hook written by `warden git install-hook` (one that may be replaced).
const MARKER: &str = "# warden-git-hook:";

/// The push option carrying the pusher's JWT-SVID.
pub(crate) const TOKEN_OPTION: &str = "warden-token=";

/// Most ref updates in one push (the server's limit).
const MAX_REFS: usize = 100;

/// Most push options read.
const MAX_PUSH_OPTIONS: usize = 100;

/// How long the hook waits for Warden.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `warden git …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum GitCmd {
    /// Guard a bare repository: every push to it is authorized by Warden, ref by ref
    ///
    /// Writes REPO/hooks/pre-receive (running this warden binary with these settings) and sets
    /// receive.advertisePushOptions, so pushers can send a JWT-SVID for audience
    /// git:<repository> as `git push -o warden-token=<JWT-SVID>`.
    InstallHook {
        /// The bare repository pushes go to
        repo: PathBuf,
        #[command(flatten)]
        hook: HookArgs,
        /// Replace a pre-receive hook that Warden did not install
        #[arg(long)]
        force: bool,
    },
    /// The pre-receive hook itself (git runs it): reads `<old> <new> <ref>` lines on stdin and
    /// the push option warden-token=<JWT-SVID>, asks Warden, prints one line per ref, and
    /// exits non-zero unless every ref is allowed
    PreReceive {
        #[command(flatten)]
        hook: HookArgs,
    },
}

/// What the hook needs: where Warden is, its own credential, and which resource the
/// repository is. Read only from flags — never from the pusher's environment.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HookArgs {
    /// Warden's base URL
    #[arg(long)]
    server: String,
    /// File holding an API token of role enforcer (the hook's credential)
    #[arg(long)]
    token_file: PathBuf,
    /// Extra CA certificate (PEM) to trust for an https:// server
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The repository's name in Warden: the resource Repository::"NAME", relationship
    /// object repository:NAME
    #[arg(long)]
    repository: String,
    /// The policy package that decides pushes [default: the only package in force]
    #[arg(long)]
    package: Option<String>,
}

pub(crate) async fn git(out: crate::output::Out, cmd: GitCmd) -> Result<ExitCode> {
    match cmd {
        GitCmd::InstallHook { repo, hook, force } => {
            install_hook(out, &repo, &hook, force).await?;
            Ok(ExitCode::SUCCESS)
        }
        GitCmd::PreReceive { hook } => Ok(pre_receive(&hook).await),
    }
}

// ---- the hook's HTTP client ---------------------------------------------------------------

struct Warden {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Warden {
    fn new(args: &HookArgs) -> Result<Self> {
        let token = std::fs::read_to_string(&args.token_file)
            .with_context(|| format!("reading token file {}", args.token_file.display()))?
            .trim()
            .to_owned();
        if token.is_empty() {
            bail!("token file {} is empty", args.token_file.display());
        }
        let mut http = reqwest::Client::builder().timeout(TIMEOUT).use_rustls_tls();
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

    /// Sends `req`; the JSON body of a success, else the server's error as an error.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach Warden at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            match (body["code"].as_str(), body["message"].as_str()) {
                (Some(code), Some(message)) => {
                    bail!("{code} ({}): {message}", status.as_u16())
                }
                _ => bail!("Warden answered {status}"),
            }
        }
        Ok(body)
    }

    async fn get(&self, path: &str, authenticated: bool) -> Result<Value> {
        let req = self.http.get(format!("{}{path}", self.base));
        let req = if authenticated {
            req.bearer_auth(&self.token)
        } else {
            req
        };
        self.send(req).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .json(body),
        )
        .await
    }
}

// ---- install-hook -------------------------------------------------------------------------

/// Runs `git --git-dir REPO ARGS…`; its trimmed stdout on success, `None` on a non-zero exit.
async fn git_in(repo: &Path, args: &[&str]) -> Result<Option<String>> {
    let out = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("cannot run `git` (is it installed and on PATH?)")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// `'…'` for /bin/sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))
}

/// The hook script: the settings are fixed in it, so a pusher cannot change them.
fn hook_script(warden: &Path, hook: &HookArgs, token_file: &Path) -> Result<String> {
    let mut command = format!(
        "exec {} git pre-receive --server {} --token-file {} --repository {}",
        sh_quote(utf8(warden)?),
        sh_quote(&hook.server),
        sh_quote(utf8(token_file)?),
        sh_quote(&hook.repository),
    );
    if let Some(ca) = &hook.ca_file {
        command.push_str(&format!(" --ca-file {}", sh_quote(utf8(ca)?)));
    }
    if let Some(p) = &hook.package {
        command.push_str(&format!(" --package {}", sh_quote(p)));
    }
    Ok(format!(
        "#!/bin/sh\n\
         {MARKER} installed by `warden git install-hook`; replace it by running that again.\n\
         # Warden authorizes every ref of every push to this repository; a push is refused\n\
         # unless Warden allows each ref, and whenever Warden cannot be reached.\n\
         # Pushers send a JWT-SVID for this repository's pushes alone as a push option:\n\
         #   git push -o {TOKEN_OPTION}\"$(warden svid jwt --audience git:{repository})\" origin HEAD:refs/heads/<branch>\n\
         # Only the settings below count: no WARDEN_* variable of the pusher's environment.\n\
         for name in $(env | sed -n 's/^\\(WARDEN_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset \"$name\"; done\n\
         {command}\n",
        repository = hook.repository
    ))
}

/// Repository names the server accepts (1-128 of `[A-Za-z0-9._/-]`, no `..`, `//`, no
/// leading `.`, `/`, `-`, no trailing `/`).
fn check_repository(name: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        && !name.starts_with(['.', '/', '-'])
        && !name.ends_with('/')
        && !name.contains("..")
        && !name.contains("//");
    if !ok {
        bail!(
            "repository name `{name}` must be 1-128 of [A-Za-z0-9._/-], not starting with `.`, `/` or `-`"
        );
    }
    Ok(())
}

async fn install_hook(
    out: crate::output::Out,
    repo: &Path,
    hook: &HookArgs,
    force: bool,
) -> Result<()> {
    check_repository(&hook.repository)?;
    let repo = std::fs::canonicalize(repo)
        .with_context(|| format!("no repository at {}", repo.display()))?;
    match git_in(&repo, &["rev-parse", "--is-bare-repository"]).await? {
        Some(bare) if bare == "true" => {}
        Some(_) => bail!(
            "{} is not a bare repository: Warden guards the repository pushes go to; make one with `git init --bare` or `git clone --bare`",
            repo.display()
        ),
        None if repo.join(".git").exists() => bail!(
            "{} is a working tree, not a bare repository: Warden guards the repository pushes go to; make one with `git clone --bare`",
            repo.display()
        ),
        None => bail!("{} is not a git repository", repo.display()),
    }
    if let Some(path) = git_in(&repo, &["config", "--get", "core.hooksPath"])
        .await?
        .filter(|p| !p.is_empty())
    {
        bail!(
            "core.hooksPath is set to `{path}`: git would not run {}/hooks/pre-receive; unset it first",
            repo.display()
        );
    }
    let token_file = std::fs::canonicalize(&hook.token_file)
        .with_context(|| format!("no token file at {}", hook.token_file.display()))?;
    let mut settings = hook.clone();
    if let Some(ca) = &hook.ca_file {
        settings.ca_file = Some(
            std::fs::canonicalize(ca).with_context(|| format!("no CA file at {}", ca.display()))?,
        );
    }

    // The hook's credential must work now, or every push would be refused.
    let warden = Warden::new(&settings)?;
    let me = warden
        .get("/v1/whoami", true)
        .await
        .context("cannot check the token with Warden")?;
    match me["role"].as_str() {
        Some("enforcer") => {}
        Some("admin") => eprintln!(
            "warning: the token has role admin; a hook needs only role enforcer (warden api-token create --role enforcer)"
        ),
        other => bail!(
            "the token has role `{}`; the hook needs role enforcer (warden api-token create --role enforcer)",
            other.unwrap_or("?")
        ),
    }
    let hooks = repo.join("hooks");
    std::fs::create_dir_all(&hooks)
        .with_context(|| format!("cannot create {}", hooks.display()))?;
    let path = hooks.join("pre-receive");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.contains(MARKER) && !force {
            bail!(
                "{} exists and was not installed by Warden: move it away, or pass --force to replace it",
                path.display()
            );
        }
    } else if path.exists() && !force {
        bail!(
            "{} exists and was not installed by Warden: move it away, or pass --force to replace it",
            path.display()
        );
    }
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot tell where this warden binary is")?;
    let script = hook_script(&exe, &settings, &token_file)?;
    // Written beside and renamed into place: git never runs a half-written hook.
    let mut tmp = tempfile::NamedTempFile::new_in(&hooks)
        .with_context(|| format!("cannot write in {}", hooks.display()))?;
    tmp.write_all(script.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o755))?;
    }
    tmp.persist(&path)
        .with_context(|| format!("cannot install {}", path.display()))?;
    if git_in(&repo, &["config", "receive.advertisePushOptions", "true"])
        .await?
        .is_none()
    {
        bail!(
            "cannot set receive.advertisePushOptions in {}",
            repo.display()
        );
    }
    out.done(
        &serde_json::json!({
            "hook": path.display().to_string(),
            "repository": hook.repository,
            "server": hook.server,
            "package": hook.package,
            "audience": format!("git:{}", hook.repository),
        }),
        format!(
            "installed {}: every push to `{}` is authorized by Warden at {}{}\n\
             pushers send a JWT-SVID for this repository alone: git push -o {TOKEN_OPTION}\"$(warden svid jwt --audience git:{})\" …",
            path.display(),
            hook.repository,
            hook.server,
            hook.package
                .as_deref()
                .map(|p| format!(" (package {p})"))
                .unwrap_or_default(),
            hook.repository
        ),
    )
}

// ---- pre-receive --------------------------------------------------------------------------

/// One line for the pusher (git shows hook output as `remote: …`).
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "warden: {line}");
}

/// The ref updates git gives the hook: `<old> <new> <ref>` per line.
fn read_updates(input: impl BufRead) -> Result<Vec<Value>, String> {
    let mut refs = Vec::new();
    // Bounded: one more line than allowed is enough to refuse.
    for line in input.lines().take(MAX_REFS + 1) {
        let line = line.map_err(|e| format!("cannot read the pushed refs: {e}"))?;
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "unexpected line from git: `{}`",
                line.chars().take(200).collect::<String>()
            ));
        };
        refs.push(json!({"ref": name, "old": old, "new": new}));
    }
    if refs.len() > MAX_REFS {
        return Err(format!(
            "more than {MAX_REFS} refs in one push; push fewer at a time"
        ));
    }
    if refs.is_empty() {
        return Err("git named no refs".into());
    }
    Ok(refs)
}

/// The pusher's JWT-SVID from the push options (`GIT_PUSH_OPTION_COUNT`,
/// `GIT_PUSH_OPTION_<i>`): `Ok(None)` when it sent none.
fn token_from_push_options(env: impl Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    let count = env("GIT_PUSH_OPTION_COUNT")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_PUSH_OPTIONS);
    let tokens: Vec<String> = (0..count)
        .filter_map(|i| env(&format!("GIT_PUSH_OPTION_{i}")))
        .filter_map(|o| o.strip_prefix(TOKEN_OPTION).map(|t| t.trim().to_owned()))
        .collect();
    match tokens.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(format!(
            "more than one `-o {TOKEN_OPTION}…` push option; send exactly one"
        )),
    }
}

/// The hook (docs/cli.md's exit statuses): 0 when Warden allowed every ref, 1 when it refused
/// one, 2 when it could not decide (bad input, Warden unreachable); git refuses the push on
/// anything but 0.
async fn pre_receive(hook: &HookArgs) -> ExitCode {
    let refs = match read_updates(std::io::stdin().lock()) {
        Ok(refs) => refs,
        Err(why) => {
            say(&format!("push refused: {why}"));
            return ExitCode::from(crate::output::exit::ERROR);
        }
    };
    let token = match token_from_push_options(|k| std::env::var(k).ok()) {
        Ok(t) => t,
        Err(why) => {
            say(&format!("push refused: {why}"));
            return ExitCode::from(crate::output::exit::ERROR);
        }
    };
    let mut body = json!({
        "repository": hook.repository,
        "agent_token": token,
        "refs": refs,
    });
    if let Some(p) = &hook.package {
        body["package"] = json!(p);
    }
    let answer = match Warden::new(hook) {
        Ok(warden) => warden.post("/v1/git/authorize", &body).await,
        Err(e) => Err(e),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            say(&format!(
                "push refused: Warden could not authorize it ({e:#}); pushes are refused while Warden cannot decide"
            ));
            return ExitCode::from(crate::output::exit::ERROR);
        }
    };
    let agent = answer["agent"].as_str();
    let mut all = true;
    let answers = answer["refs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if answers.len() != refs.len() {
        say("push refused: Warden's answer does not cover every ref");
        return ExitCode::from(crate::output::exit::ERROR);
    }
    for a in answers {
        let name = a["ref"].as_str().unwrap_or("?");
        let reason = a["reason"].as_str().unwrap_or("no reason given");
        let decision = a["decision_id"]
            .as_str()
            .map(|d| format!(" (decision {d})"))
            .unwrap_or_default();
        if a["allowed"] == Value::Bool(true) {
            say(&format!(
                "push to {name} allowed for {}: {reason}{decision}",
                agent.unwrap_or("?")
            ));
        } else {
            all = false;
            say(&format!("push to {name} refused: {reason}{decision}"));
        }
    }
    if all && answer["allowed"] == Value::Bool(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::output::exit::NO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_git_ref_lines() {
        let a = "a".repeat(40);
        let z = "0".repeat(40);
        let input = format!("{z} {a} refs/heads/fix/T-1\n{a} {z} refs/heads/old\n");
        let refs = read_updates(input.as_bytes()).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0]["ref"], "refs/heads/fix/T-1");
        assert_eq!(refs[0]["old"], z.as_str());
        assert_eq!(refs[1]["new"], z.as_str());
        assert!(read_updates(&b""[..]).is_err());
        assert!(read_updates(&b"just-one-word\n"[..]).is_err());
        let many = format!("{z} {a} refs/heads/x\n").repeat(MAX_REFS + 1);
        assert!(
            read_updates(many.as_bytes())
                .unwrap_err()
                .contains("more than")
        );
    }

    #[test]
    fn finds_the_token_push_option() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(token_from_push_options(env(&[])), Ok(None));
        assert_eq!(
            token_from_push_options(env(&[
                ("GIT_PUSH_OPTION_COUNT", "2"),
                ("GIT_PUSH_OPTION_0", "ci.skip"),
                ("GIT_PUSH_OPTION_1", "warden-token=eyJ.x.y"),
            ])),
            Ok(Some("eyJ.x.y".to_owned()))
        );
        assert!(
            token_from_push_options(env(&[
                ("GIT_PUSH_OPTION_COUNT", "2"),
                ("GIT_PUSH_OPTION_0", "warden-token=a"),
                ("GIT_PUSH_OPTION_1", "warden-token=b"),
            ]))
            .is_err()
        );
        // Options past the count are not read.
        assert_eq!(
            token_from_push_options(env(&[
                ("GIT_PUSH_OPTION_COUNT", "0"),
                ("GIT_PUSH_OPTION_0", "warden-token=a"),
            ])),
            Ok(None)
        );
    }

    #[test]
    fn hook_script_quotes_its_settings() {
        let hook = HookArgs {
            server: "http://127.0.0.1:8080".into(),
            token_file: "/unused".into(),
            ca_file: None,
            repository: "acme/it's".into(),
            package: Some("git".into()),
        };
        let s = hook_script(
            Path::new("/opt/warden dir/warden"),
            &hook,
            Path::new("/etc/warden/hook.token"),
        )
        .unwrap();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains(MARKER));
        assert!(s.contains(
            "exec '/opt/warden dir/warden' git pre-receive --server 'http://127.0.0.1:8080' --token-file '/etc/warden/hook.token' --repository 'acme/it'\\''s' --package 'git'\n"
        ));
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
