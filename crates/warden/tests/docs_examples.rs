//! Docs that cannot drift: every ```` ```sh ```` block of the README, of `docs/*.md` and of
//! `examples/*/README.md` runs here, in order, against a real `warden serve` started from the
//! binary under test — so a renamed flag, a changed message or a wrong step fails this test.
//!
//! # How a page runs
//!
//! Each page gets a fresh temporary directory as its working directory and its own server
//! (`warden serve --listen 127.0.0.1:0`, data directory `./warden-data`, so its bootstrap token
//! is `warden-data/admin.token` as the README says). Its blocks run in order in one `bash`, so
//! variables, aliases and `cd` carry from block to block; every command (a line, or several
//! joined by `\`, an open quote or a here-document) must exit 0 unless its comment says
//! otherwise, and the page
//! stops at the first command that does not do what it should. The failure names the page, the
//! line, the command, its exit status, its stdout and stderr, and the server's last log lines.
//!
//! What the reader types is what runs, with these substitutions:
//!
//! - `warden …` runs the binary under test (a shell function); so does `cargo run … -p warden
//!   -- …` (a `cargo` function; `cargo build` does nothing, the binary is built), and so do
//!   `target/debug/warden` and `target/release/warden`, which are links to it in the working
//!   directory (`CARGO_TARGET_DIR` is unset). `examples/` is a link to the repository's.
//! - A `warden serve …` command (or `cargo run … -- serve …`) is not run by bash: the test
//!   starts the page's server there, with the command's flags plus `--listen 127.0.0.1:0`
//!   (again at a second one, on the same data directory). A page without one gets a plain
//!   `warden serve` before its first command.
//! - `WARDEN_SERVER` is set to the server's address, and `localhost:8080` / `127.0.0.1:8080`
//!   in a command are rewritten to it. `WARDEN_TOKEN_FILE` is `warden-data/admin.token` (its
//!   absolute path, so a page may `cd`), as the README's tour sets it (docs/cli.md, "Connecting
//!   to a server").
//! - `postgres://postgres@127.0.0.1:5432/test` is rewritten to `WARDEN_TEST_DATABASE_URL`.
//! - No `WARDEN_*` variable of the caller's environment reaches the page, and git reads no
//!   configuration but the page's own (`git config --global` writes a file of the page's).
//!
//! # What a page says to the test
//!
//! A trailing comment states what a command must do, in words a reader understands too:
//!
//! - `# refused`, `# denied` (at the comment's start): the command exits 1 (docs/cli.md: the
//!   answer is no); `# exits N`: it exits N;
//! - `# → TEXT` (anywhere in the comment): its stdout or stderr contains TEXT.
//!
//! Any other comment is prose. What the reader need not see goes in HTML comments, which
//! Markdown does not render, right before the block they are about:
//!
//! - `<!-- docs-test: skip REASON -->`: the block is not run (every skip gives its reason);
//! - `<!-- docs-test: needs postgres -->`: the block runs only when `WARDEN_TEST_DATABASE_URL`
//!   is set (a `skipped:` line says so otherwise; `.ci/run` sets it); tools a script calls are
//!   named too (`needs git jq`, see below);
//! - `<!-- docs-test: setup` … `-->`: commands, one per line, run before the block (files the
//!   block reads, a task it assumes);
//! - `<!-- docs-test: teardown` … `-->` (anywhere): commands run when the page ends, passed or
//!   not (dropping a database the page made);
//! - `<!-- docs-test: no-server REASON -->` (anywhere): the page starts no server.
//!
//! Commands calling `openssl`, `jq`, `psql`, `git`, `python3` (and the `spiffe` module) or
//! `curl` need them installed: without one, the rest of the page is skipped with a `skipped:`
//! line — unless `CI=true` or `WARDEN_REQUIRE_INTEROP=1` (as `.ci/run` sets), where a missing
//! tool fails the page.
//!
//! `docs/benchmarks.md` is not run (see [`NOT_RUN`]); every other page is listed below, and a
//! test checks that no page is forgotten. `DOCS_TEST_KEEP=1` keeps each page's directory (its
//! `work/`, and in `ctl/` every command as run with its stdout and stderr).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;
#[path = "docs_examples/markdown.rs"]
mod markdown;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use markdown::{Command, Page};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

/// The repository's root.
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Pages whose blocks are not run, and why.
const NOT_RUN: &[(&str, &str)] = &[(
    "docs/benchmarks.md",
    "its commands are the benchmarks themselves: minutes of load on a quiet machine each, \
     with figures that depend on it",
)];

/// How long one command may run (a debug build on two busy cores; the example scripts take
/// seconds).
const COMMAND_DEADLINE: Duration = Duration::from_secs(300);

/// The literal PostgreSQL URL the pages use, replaced by `WARDEN_TEST_DATABASE_URL`.
const DOC_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Tools a command may call that a machine may lack.
const TOOLS: &[&str] = &["openssl", "jq", "psql", "git", "python3", "curl"];

macro_rules! pages {
    ($($name:ident => $path:literal,)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                run_page($path).await;
            }
        )*
        /// Every page that runs here.
        const PAGES: &[&str] = &[$($path),*];
    };
}

pages! {
    readme => "README.md",
    docs_api => "docs/api.md",
    docs_broker => "docs/broker.md",
    docs_cli => "docs/cli.md",
    docs_configuration => "docs/configuration.md",
    docs_git => "docs/git.md",
    docs_identity => "docs/identity.md",
    docs_ledger => "docs/ledger.md",
    docs_policy => "docs/policy.md",
    docs_rebac => "docs/rebac.md",
    docs_tasks => "docs/tasks.md",
    example_least_privilege_db => "examples/least-privilege-db/README.md",
    example_multi_agent_bugfix => "examples/multi-agent-bugfix/README.md",
}

#[test]
fn every_page_runs_or_says_why_not() {
    let mut found = vec!["README.md".to_owned()];
    for (dir, file) in [("docs", None), ("examples", Some("README.md"))] {
        let mut names: Vec<String> = std::fs::read_dir(Path::new(REPO).join(dir))
            .unwrap()
            .map(|e| e.unwrap())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                match file {
                    None => name.ends_with(".md").then(|| format!("{dir}/{name}")),
                    Some(f) => e
                        .path()
                        .join(f)
                        .is_file()
                        .then(|| format!("{dir}/{name}/{f}")),
                }
            })
            .collect();
        names.sort();
        found.extend(names);
    }
    let mut listed: Vec<String> = PAGES
        .iter()
        .chain(NOT_RUN.iter().map(|(p, _)| p))
        .map(|p| (*p).to_owned())
        .collect();
    listed.sort();
    found.sort();
    assert_eq!(
        found, listed,
        "every page is run (pages! in this file) or in NOT_RUN with a reason"
    );
}

#[test]
fn pages_not_run_hold_no_directives() {
    // A page that is not run must not look as if it were tested.
    for (page, _) in NOT_RUN {
        let text = std::fs::read_to_string(Path::new(REPO).join(page)).unwrap();
        assert!(!text.contains("docs-test:"), "{page} is not run");
    }
}

/// Why a page failed: already formatted for the reader.
struct Failure(String);

/// One page's run: its directories, its server and its shell.
struct Run {
    page: &'static str,
    install: common::Install,
    ctl: PathBuf,
    server: Option<common::Server>,
    /// `host:port` of the server.
    addr: Option<String>,
    no_server: bool,
    shell: Shell,
    database_url: Option<String>,
    /// The rest of the page is skipped (a missing tool), for this reason.
    skipping: Option<String>,
    /// Whether a missing tool fails the page (CI) or skips the rest of it.
    require_tools: bool,
    tool_cache: BTreeMap<String, bool>,
    commands: usize,
    /// Lines of the blocks not run for want of PostgreSQL.
    without_postgres: Vec<usize>,
    /// Line of the block being run (0: teardown).
    block: usize,
}

async fn run_page(page: &'static str) {
    let started = Instant::now();
    let text = std::fs::read_to_string(Path::new(REPO).join(page)).unwrap();
    let parsed = markdown::parse(&text).unwrap_or_else(|e| panic!("{page}: {e}"));
    let mut run = Run::new(page, &parsed).await;
    let result = run.blocks(&parsed).await;
    let teardown = run.teardown(&parsed.teardown).await;
    let log = run.server.as_ref().map(common::Server::log);
    let skipped = run.skipping.take();
    let commands = run.commands;
    if !run.without_postgres.is_empty() {
        let lines: Vec<String> = run.without_postgres.iter().map(usize::to_string).collect();
        let which = match lines.as_slice() {
            [one] => format!("the block at line {one} needs"),
            more => format!("the blocks at lines {} need", more.join(", ")),
        };
        notice(&format!(
            "skipped: {page}: {which} PostgreSQL ({} is not set)",
            common::PG_ENV
        ));
    }
    let Run {
        install,
        server,
        shell,
        ..
    } = run;
    drop((server, shell));
    if std::env::var_os("DOCS_TEST_KEEP").is_some() {
        // For looking into a page's run: its working directory and each command's output.
        notice(&format!("{page}: kept {}", install.tmp.keep().display()));
    }
    if let Err(Failure(report)) = result.and(teardown) {
        panic!("{report}");
    }
    if let Some(log) = log {
        assert!(
            !log.contains("panicked"),
            "{page}: the server panicked:\n{log}"
        );
    }
    if let Some(why) = skipped {
        notice(&format!("skipped: the rest of {page}: {why}"));
    }
    println!(
        "{page}: {commands} commands in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A line past the test harness's output capture, so a plain `cargo test` shows it.
fn notice(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

impl Run {
    async fn new(page: &'static str, parsed: &Page) -> Self {
        let install = common::Install::empty();
        let root = install.tmp.path().to_owned();
        let work = root.join("work");
        let ctl = root.join("ctl");
        for dir in [
            &work,
            &ctl,
            &work.join("target/debug"),
            &work.join("target/release"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let bin = Path::new(common::BIN);
        std::os::unix::fs::symlink(bin, work.join("target/debug/warden")).unwrap();
        std::os::unix::fs::symlink(bin, work.join("target/release/warden")).unwrap();
        std::os::unix::fs::symlink(
            Path::new(REPO).join("examples").canonicalize().unwrap(),
            work.join("examples"),
        )
        .unwrap();
        let install = common::Install {
            data_dir: work.join("warden-data"),
            token_file: work.join("warden-data/admin.token"),
            ..install
        };
        let database_url = std::env::var(common::PG_ENV).ok();
        let require_tools = std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var("WARDEN_REQUIRE_INTEROP").is_ok_and(|v| v == "1");
        let shell = Shell::start(&work, &ctl, database_url.as_deref()).await;
        Self {
            page,
            install,
            ctl,
            server: None,
            addr: None,
            no_server: parsed.no_server.is_some(),
            shell,
            database_url,
            skipping: None,
            require_tools,
            tool_cache: BTreeMap::new(),
            commands: 0,
            without_postgres: Vec::new(),
            block: 0,
        }
    }

    async fn blocks(&mut self, page: &Page) -> Result<(), Failure> {
        for block in &page.blocks {
            if self.skipping.is_some() {
                return Ok(());
            }
            if let Some(reason) = &block.skip {
                println!("{}:{}: not run: {reason}", self.page, block.line);
                continue;
            }
            let mut missing = Vec::new();
            for need in &block.needs {
                if need == "postgres" {
                    if self.database_url.is_none() {
                        self.without_postgres.push(block.line);
                        missing.push(need.clone());
                    }
                } else if !self.has_tool(need) {
                    missing.push(need.clone());
                }
            }
            if missing.iter().any(|m| m != "postgres") {
                self.missing_tools(block.line, &missing)?;
                return Ok(());
            }
            if !missing.is_empty() {
                continue;
            }
            self.block = block.line;
            for command in block.setup.iter().chain(&block.commands) {
                self.command(command).await?;
                if self.skipping.is_some() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A missing tool: a failure where tools are required, else the rest of the page is
    /// skipped.
    fn missing_tools(&mut self, line: usize, missing: &[String]) -> Result<(), Failure> {
        let what = missing.join(", ");
        if self.require_tools {
            return Err(Failure(format!(
                "{}:{line}: needs {what}, which is not installed (CI=true or \
                 WARDEN_REQUIRE_INTEROP=1 requires it; .ci/run installs it)",
                self.page
            )));
        }
        self.skipping = Some(format!("from line {line}, it needs {what} (not installed)"));
        Ok(())
    }

    fn has_tool(&mut self, tool: &str) -> bool {
        if let Some(has) = self.tool_cache.get(tool) {
            return *has;
        }
        let has = match tool.split_once(':') {
            // `python3:MODULE`: the interpreter can import it.
            Some(("python3", module)) => std::process::Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            _ => std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file())
            }),
        };
        self.tool_cache.insert(tool.to_owned(), has);
        has
    }

    async fn command(&mut self, command: &Command) -> Result<(), Failure> {
        let missing: Vec<String> = tools_used(&command.text)
            .into_iter()
            .filter(|t| !self.has_tool(t))
            .collect();
        if !missing.is_empty() {
            return self.missing_tools(command.line, &missing);
        }
        if let Some(args) = serve_args(&command.text) {
            println!(
                "{}:{}: $ {} (the test's server)",
                self.page, command.line, command.text
            );
            return self.serve(command, &args).await;
        }
        if self.server.is_none() && !self.no_server {
            self.serve(command, &[]).await?;
        }
        let text = self.rewrite(&command.text);
        self.commands += 1;
        let started = Instant::now();
        let out = match self.shell.run(&self.ctl, self.commands, &text).await {
            Ok(out) => out,
            Err(why) => return Err(self.failure(command, &text, &why)),
        };
        println!(
            "{}:{}: $ {}\n  exit {} in {} ms",
            self.page,
            command.line,
            command.text,
            out.status,
            started.elapsed().as_millis()
        );
        let mut wrong = Vec::new();
        if out.status != command.expect.status {
            wrong.push(format!(
                "exit status {} (expected {})",
                out.status, command.expect.status
            ));
        }
        if let Some(want) = &command.expect.contains {
            if !out.stdout.contains(want.as_str()) && !out.stderr.contains(want.as_str()) {
                wrong.push(format!("its output does not contain `{want}`"));
            }
        }
        if wrong.is_empty() {
            return Ok(());
        }
        let mut why = wrong.join("; ");
        let _ = write!(
            why,
            "\n--- stdout ---\n{}--- stderr ---\n{}",
            out.stdout, out.stderr
        );
        if out.status == 127 {
            why.push_str("\n(127: a command was not found)");
        }
        Err(self.failure(command, &text, &why))
    }

    fn failure(&self, command: &Command, ran: &str, why: &str) -> Failure {
        let context = match self.block {
            0 => "teardown".to_owned(),
            line => format!("block at line {line}"),
        };
        let mut report = format!(
            "{}:{} ({context}): a documented command does not do what the page says\n$ {}\n",
            self.page, command.line, command.text
        );
        if ran != command.text {
            let _ = writeln!(report, "(run as: {ran})");
        }
        let _ = writeln!(report, "{why}");
        if let Some(server) = &self.server {
            let log = server.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let _ = writeln!(report, "--- server log (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                let _ = writeln!(report, "{line}");
            }
        }
        Failure(report)
    }

    /// Starts (or restarts) the page's server with `args`.
    async fn serve(&mut self, command: &Command, args: &[String]) -> Result<(), Failure> {
        if args
            .iter()
            .any(|a| a.starts_with("--listen") || a.starts_with("--data-dir"))
        {
            return Err(self.failure(
                command,
                &command.text,
                "the docs test chooses the server's address and data directory: a documented \
                 `warden serve` must not set --listen or --data-dir",
            ));
        }
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = self.install.serve_with(&args).await;
        let addr = server
            .url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        let export = format!("export WARDEN_SERVER={}", server.url);
        self.addr = Some(addr);
        self.server = Some(server);
        match self.shell.run(&self.ctl, 0, &export).await {
            Ok(out) if out.status == 0 => Ok(()),
            Ok(out) => Err(self.failure(command, &export, &out.stderr)),
            Err(why) => Err(self.failure(command, &export, &why)),
        }
    }

    fn rewrite(&self, text: &str) -> String {
        let mut text = text.to_owned();
        if let Some(addr) = &self.addr {
            text = text
                .replace("localhost:8080", addr)
                .replace("127.0.0.1:8080", addr);
        }
        if let Some(url) = &self.database_url {
            text = text.replace(DOC_DATABASE_URL, url);
        }
        text
    }

    async fn teardown(&mut self, commands: &[Command]) -> Result<(), Failure> {
        self.block = 0;
        for command in commands {
            if tools_used(&command.text).iter().any(|t| !self.has_tool(t)) {
                // Whatever needed the tool did not run either.
                continue;
            }
            let text = self.rewrite(&command.text);
            self.commands += 1;
            match self.shell.run(&self.ctl, self.commands, &text).await {
                Ok(out) if out.status == command.expect.status => {}
                Ok(out) => {
                    let why = format!(
                        "teardown: exit status {}\n--- stdout ---\n{}--- stderr ---\n{}",
                        out.status, out.stdout, out.stderr
                    );
                    return Err(self.failure(command, &text, &why));
                }
                Err(why) => return Err(self.failure(command, &text, &why)),
            }
        }
        Ok(())
    }
}

/// What a shell command did.
struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

/// The page's `bash`, fed one command at a time.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

const DONE: &str = "__docs_test_done__ ";

/// Defined in the page's shell before its first command.
const PRELUDE: &str = r#"
set -o pipefail
shopt -s expand_aliases
# `warden …` is the binary under test.
warden() { "$WARDEN_BIN" "$@"; }
# `cargo run … -p warden -- ARGS` runs it too; `cargo build` has nothing left to do.
cargo() {
  local args=("$@") i=1 package=
  case "${args[0]-}" in
    build) return 0 ;;
    run)
      while (( i < ${#args[@]} )); do
        case "${args[i]}" in
          --) i=$((i + 1)); break ;;
          -p|--package) package=${args[i+1]-}; i=$((i + 2)) ;;
          *) i=$((i + 1)) ;;
        esac
      done
      if [[ $package != warden ]]; then
        echo "docs test: only \`cargo run -p warden\` runs here" >&2
        return 2
      fi
      "$WARDEN_BIN" "${args[@]:i}" ;;
    *)
      echo "docs test: \`cargo $*\` does not run here; mark its block skip with a reason" >&2
      return 2 ;;
  esac
}
"#;

impl Shell {
    async fn start(work: &Path, ctl: &Path, database_url: Option<&str>) -> Self {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.args(["--noprofile", "--norc"]);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy().to_ascii_uppercase();
            if name.starts_with("WARDEN")
                || name.starts_with("GIT_")
                || name.starts_with("CARGO")
                || name.ends_with("_PROXY")
                || name == "SPIFFE_ENDPOINT_SOCKET"
                || name == "BASH_ENV"
                || name == "ENV"
            {
                cmd.env_remove(&key);
            }
        }
        if let Some(url) = database_url {
            cmd.env(common::PG_ENV, url);
        }
        cmd.env("WARDEN_BIN", common::BIN)
            .env("WARDEN_TOKEN_FILE", work.join("warden-data/admin.token"))
            .env("NO_COLOR", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", ctl.join("gitconfig"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .current_dir(work)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(ctl.join("bash.stderr")).unwrap())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn bash");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut shell = Self {
            child,
            stdin,
            stdout,
        };
        std::fs::write(ctl.join("prelude.sh"), PRELUDE).unwrap();
        let out = shell
            .source(&ctl.join("prelude.sh"), &ctl.join("prelude"))
            .await;
        assert!(
            matches!(out, Ok(Out { status: 0, .. })),
            "the docs test's shell prelude failed"
        );
        shell
    }

    /// Runs `text` as command number `n`.
    async fn run(&mut self, ctl: &Path, n: usize, text: &str) -> Result<Out, String> {
        let script = ctl.join(format!("{n}.sh"));
        std::fs::write(&script, format!("{text}\n")).unwrap();
        self.source(&script, &ctl.join(n.to_string())).await
    }

    async fn source(&mut self, script: &Path, out: &Path) -> Result<Out, String> {
        let (stdout, stderr) = (out.with_extension("out"), out.with_extension("err"));
        let line = format!(
            "source '{}' >'{}' 2>'{}' </dev/null; printf '{DONE}%d\\n' \"$?\"\n",
            script.display(),
            stdout.display(),
            stderr.display()
        );
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("the shell is gone ({e})"))?;
        let status = tokio::time::timeout(COMMAND_DEADLINE, async {
            loop {
                match self.stdout.next_line().await {
                    Ok(Some(l)) => {
                        if let Some(code) = l.strip_prefix(DONE) {
                            return code.trim().parse::<i32>().map_err(|e| e.to_string());
                        }
                    }
                    Ok(None) => return Err("the command ended the shell (`exit`?)".to_owned()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await;
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        match status {
            Ok(Ok(status)) => Ok(Out {
                status,
                stdout: read(&stdout),
                stderr: read(&stderr),
            }),
            Ok(Err(why)) => Err(format!(
                "{why}\n--- stdout ---\n{}--- stderr ---\n{}",
                read(&stdout),
                read(&stderr)
            )),
            Err(_) => {
                if let Some(pid) = self.child.id() {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .status();
                }
                Err(format!(
                    "did not finish within {COMMAND_DEADLINE:?}\n--- stdout ---\n{}--- stderr ---\n{}",
                    read(&stdout),
                    read(&stderr)
                ))
            }
        }
    }
}

/// The arguments of a documented `warden serve …` (or `cargo run … -p warden -- serve …`).
fn serve_args(text: &str) -> Option<Vec<String>> {
    let words = shell_words(text)?;
    let rest = match words.first().map(String::as_str) {
        Some("warden") => &words[1..],
        Some("cargo") if words.get(1).is_some_and(|w| w == "run") => {
            let dashes = words.iter().position(|w| w == "--")?;
            &words[dashes + 1..]
        }
        _ => return None,
    };
    match rest.split_first() {
        Some((first, args)) if first == "serve" => Some(args.to_vec()),
        _ => None,
    }
}

/// Splits a simple command into words (quotes removed, a trailing comment dropped); `None`
/// for anything with expansions or several commands, which is never a `serve` line.
fn shell_words(text: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' => return None,
                        c => w.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(c) => word.get_or_insert_with(String::new).push(c),
            },
            '#' if word.is_none() => break,
            '$' | '`' | ';' | '|' | '&' | '<' | '>' | '(' | ')' => return None,
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// The tools of [`TOOLS`] a command calls (roughly: the first word of each part of a
/// pipeline or list, after any `NAME=value`), and `python3:spiffe` for the SPIFFE module.
fn tools_used(text: &str) -> Vec<String> {
    let mut used = Vec::new();
    let separated = text
        .replace("&&", "\n")
        .replace("||", "\n")
        .replace("$(", "\n");
    for part in separated.split(['\n', '|', ';', '(']) {
        let first = part
            .split_whitespace()
            .find(|w| !(w.contains('=') && w.starts_with(|c: char| c.is_ascii_uppercase())));
        if let Some(tool) = first.filter(|w| TOOLS.contains(w)) {
            if !used.iter().any(|u| u == tool) {
                used.push(tool.to_owned());
            }
        }
    }
    if text.contains("from spiffe") || text.contains("import spiffe") {
        used.push("python3:spiffe".to_owned());
    }
    used
}

#[test]
fn serve_lines_are_recognised() {
    let args = |t: &str| serve_args(t).map(|a| a.join(" "));
    assert_eq!(args("warden serve").as_deref(), Some(""));
    assert_eq!(
        args("cargo run --release -p warden -- serve --oauth-scopes repo:read # why").as_deref(),
        Some("--oauth-scopes repo:read")
    );
    assert_eq!(args("warden serve-x"), None);
    assert_eq!(args("warden policy push serve"), None);
    assert_eq!(args("warden serve $(cat flags)"), None);
}

#[test]
fn tools_are_found_where_commands_start() {
    assert_eq!(
        tools_used("x=$(warden token generate -o json | jq -r .token) && openssl verify a"),
        ["jq", "openssl"]
    );
    assert_eq!(
        tools_used("SPIFFE_ENDPOINT_SOCKET=unix://x python3 -c '\nfrom spiffe import X'"),
        ["python3", "python3:spiffe"]
    );
    assert_eq!(
        tools_used("warden federation add p --routes token_exchange,git"),
        Vec::<String>::new()
    );
}
