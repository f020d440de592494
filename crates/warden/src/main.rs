//! The `warden` binary: `init`, `serve`, the admin and audit commands, and `bench`.

#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: a decision allocates and frees many small
/// objects across worker threads, where glibc malloc spent a fifth of the server's time
/// (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent_cli;
mod bench;
mod bench_agents;
mod bench_broker;
mod broker_cli;
mod client;
mod config;
mod demo;
mod demo_db;
mod demo_git;
mod git_cli;
mod identity_keys;
mod init;
mod keys;
mod output;
mod policy_cli;
mod policy_test;
mod rebac_cli;
mod serve;
mod task_cli;
mod trust_cli;

/// Warden: zero-trust identity governance for AI agents.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about, propagate_version = true)]
struct Cli {
    /// Data directory (config, keys, embedded database)
    #[arg(
        long,
        env = "WARDEN_DATA_DIR",
        default_value = "./warden-data",
        global = true,
        help_heading = "Data directory"
    )]
    data_dir: PathBuf,
    #[command(flatten)]
    output: output::OutputArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A guided tour: runs the scenarios against a throw-away Warden, narrating each step,
    /// and verifies the ledger at the end (no setup; PostgreSQL only with --database-url)
    Demo(demo::DemoArgs),
    /// Create the data directory, keys, store and the bootstrap admin token (idempotent)
    Init(init::InitArgs),
    /// Run the API server
    Serve(config::Overrides),
    /// Read, prove, export and verify the audit ledger
    Audit {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: client::AuditCmd,
    },
    /// Manage API tokens (admin, approver, auditor)
    ApiToken {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: client::TokenCmd,
    },
    /// Manage registration entries (which SPIFFE ID a workload gets)
    Entry {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: client::EntryCmd,
    },
    /// Join tokens for agents on other hosts
    Token {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: client::JoinTokenCmd,
    },
    /// Exchange a join token for this host's X.509-SVID (the key is made here, never sent)
    Join {
        #[command(flatten)]
        server: client::ServerArgs,
        /// The join token (wjt_…)
        #[arg(long, env = "WARDEN_JOIN_TOKEN", hide_env_values = true)]
        join_token: String,
        /// Where to write svid.pem, svid.key and bundle.pem
        #[arg(long = "out", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Fetch this process's SVID from the local Workload API (for shell agents)
    Svid {
        /// Workload API socket, a path or unix:///path [default: SPIFFE_ENDPOINT_SOCKET, else
        /// DATA_DIR/workload.sock]
        #[arg(
            long,
            global = true,
            value_name = "PATH",
            help_heading = "Workload API"
        )]
        socket: Option<String>,
        #[command(subcommand)]
        cmd: client::SvidCmd,
    },
    /// Deny identities or credentials everywhere, before they expire
    Deny {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: client::DenyCmd,
    },
    /// The trust domain's CA and JWT-SVID keys: list, rotate, revoke
    Ca {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: trust_cli::CaCmd,
    },
    /// Trust other trust domains' SVIDs (SPIFFE federation)
    Federation {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: trust_cli::FederationCmd,
    },
    /// Policy packages (Cedar, Rego): push, list, show, roll back, evaluate
    Policy {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: policy_cli::PolicyCmd,
    },
    /// Relationships (Zanzibar, OpenFGA's language): models, tuples, check, list
    Rebac {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(flatten)]
        args: rebac_cli::RebacArgs,
    },
    /// Credential leases: list, show, revoke (one, by agent, task or prefix), renew
    Lease {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: broker_cli::LeaseCmd,
    },
    /// Kill switch: revoke every lease and deny every token and SVID of an agent, a task or a
    /// vendor, and refuse new issuance
    Hold {
        #[command(flatten)]
        client: client::ClientArgs,
        /// agent, task or vendor
        #[arg(value_enum)]
        kind: broker_cli::HoldKind,
        /// SPIFFE ID, task id or vendor
        value: String,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
    /// Lift a hold (revoked credentials stay revoked)
    Release {
        #[command(flatten)]
        client: client::ClientArgs,
        /// agent, task or vendor
        #[arg(value_enum)]
        kind: broker_cli::HoldKind,
        /// SPIFFE ID, task id or vendor
        value: String,
        /// Why, for the record
        #[arg(long)]
        reason: String,
    },
    /// List holds
    Holds {
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Dynamic database credentials: target databases and role templates
    Db {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: broker_cli::DbCmd,
    },
    /// Upstream secrets in custody (envelope-encrypted; agents never see them)
    Secret {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: broker_cli::SecretCmd,
    },
    /// The broker from an agent's side (token exchange, database credentials, leases),
    /// authenticated by this process's SVID from the Workload API
    Agent {
        #[command(flatten)]
        server: client::ServerArgs,
        /// Workload API socket, a path or unix:///path [default: SPIFFE_ENDPOINT_SOCKET, else
        /// DATA_DIR/workload.sock]
        #[arg(
            long,
            global = true,
            value_name = "PATH",
            help_heading = "Agent identity"
        )]
        socket: Option<String>,
        /// Act as this one of the process's identities (default: the first)
        #[arg(long = "as", global = true, help_heading = "Agent identity")]
        spiffe_id: Option<String>,
        #[command(subcommand)]
        cmd: agent_cli::AgentCmd,
    },
    /// Tasks: create, assign agents in roles (grants), show, list, complete, fail, cancel
    Task {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: task_cli::TaskCmd,
    },
    /// Just-in-time grant requests waiting for a human: list, approve, deny
    Approvals {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: task_cli::ApprovalsCmd,
    },
    /// Operator-set risk scores (policies see them as context.risk_score)
    Risk {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        cmd: task_cli::RiskCmd,
    },
    /// Guard a git repository: Warden authorizes every push, ref by ref (pre-receive hook)
    #[command(subcommand)]
    Git(git_cli::GitCmd),
    /// Measure the ledger's performance on this machine
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let out = output::Out::new(&cli.output);
    match cli.command {
        Command::Init(args) => init::run(&cli.data_dir, args).await?,
        Command::Demo(args) => demo::run(args).await?,
        Command::Serve(overrides) => serve::start(&cli.data_dir, &overrides).await?,
        Command::Audit {
            cmd:
                client::AuditCmd::Verify {
                    file,
                    key,
                    key_file,
                    quiet,
                },
            ..
        } => {
            client::verify_offline(out, &file, key, key_file, quiet)?;
        }
        Command::Audit { client, cmd } => {
            client::audit(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::ApiToken { client, cmd } => {
            client::tokens(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Entry { client, cmd } => {
            client::entries(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Token { client, cmd } => {
            client::join_tokens(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Join {
            server,
            join_token,
            dir,
        } => {
            client::join(
                &client::Client::without_token(&server)?,
                out,
                &join_token,
                &dir,
            )
            .await?;
        }
        Command::Lease { client, cmd } => {
            broker_cli::lease(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Hold {
            client,
            kind,
            value,
            reason,
        } => broker_cli::hold(&client::Client::new(&client)?, out, kind, &value, &reason).await?,
        Command::Release {
            client,
            kind,
            value,
            reason,
        } => {
            broker_cli::release(&client::Client::new(&client)?, out, kind, &value, &reason).await?
        }
        Command::Holds { client } => broker_cli::holds(&client::Client::new(&client)?, out).await?,
        Command::Secret { client, cmd } => {
            broker_cli::secret(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Db { client, cmd } => {
            broker_cli::db(&client::Client::new(&client)?, out, cmd).await?
        }
        // `request-grant` polls as the agent and has its own exit code.
        Command::Agent {
            server,
            socket,
            spiffe_id,
            cmd,
        } => {
            agent_cli::agent(
                &client::Client::without_token(&server)?,
                out,
                client::workload_socket(socket, &cli.data_dir),
                spiffe_id,
                cmd,
            )
            .await?;
        }
        Command::Svid { socket, cmd } => {
            client::svid(client::workload_socket(socket, &cli.data_dir), out, cmd).await?;
        }
        // `policy test` is offline: no client, so no token or server settings are read.
        Command::Policy {
            cmd: policy_cli::PolicyCmd::Test(args),
            ..
        } => policy_test::run_and_exit(&args),
        Command::Policy { client, cmd } => {
            policy_cli::policy(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Rebac { client, args } => {
            rebac_cli::rebac(&client::Client::new(&client)?, out, args).await?;
        }
        Command::Ca { client, cmd } => {
            trust_cli::ca(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Federation { client, cmd } => {
            trust_cli::federation(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Deny { client, cmd } => {
            client::deny(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Task { client, cmd } => {
            task_cli::task(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Approvals { client, cmd } => {
            task_cli::approvals(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Risk { client, cmd } => {
            task_cli::risk(&client::Client::new(&client)?, out, cmd).await?;
        }
        Command::Git(cmd) => return git_cli::git(out, cmd).await,
        Command::Bench(cmd) => bench::run(cmd, out).await?,
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // 8 MiB worker stacks (tokio's default is 2 MiB) leave the Rego evaluator the 4 MiB of
    // headroom it requires on the worker itself, instead of a fresh 16 MiB stack being mapped
    // for every decision.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 * 1024 * 1024)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(output::exit::ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // A negative answer the command printed itself needs no error line.
            if !e.is::<output::Negative>() && !e.is::<output::Pending>() {
                // Not `eprintln!`: with stderr closed by its reader it would panic (exit 101).
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "error: {e:#}");
            }
            ExitCode::from(output::exit_status(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    /// Clap checks a command definition (unique flags, valid defaults) only when it is parsed in
    /// a debug build — at run time, as a panic. Check every subcommand here instead.
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every subcommand, depth first, with its full name.
    fn leaves(cmd: &clap::Command, name: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((name.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            leaves(sub, format!("{name} {}", sub.get_name()), out);
        }
    }

    /// docs/cli.md's conventions, over the whole command tree: one duration syntax for every
    /// lifetime flag, `--output` instead of per-command JSON flags, and the server connection
    /// flags in their own help group (and not on commands that do not use an API token).
    #[test]
    fn every_command_follows_the_cli_conventions() {
        use clap::CommandFactory;
        let mut all = Vec::new();
        leaves(&super::Cli::command(), "warden".into(), &mut all);
        let mut durations = 0;
        for (name, cmd) in &all {
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                assert_ne!(long, "json", "{name}: use --output json, not --json");
                let is_duration = long.contains("ttl")
                    || long.contains("timeout")
                    || matches!(long, "expires-in" | "wait" | "deadline");
                if is_duration {
                    durations += 1;
                    // The flag alone, with its own value parser, in a command of its own.
                    let alone = clap::Command::new("t").arg(
                        clap::Arg::new("x")
                            // clap takes 'static names; a test may leak a few bytes.
                            .long(&*Box::leak(long.to_owned().into_boxed_str()))
                            .value_parser(arg.get_value_parser().clone()),
                    );
                    for text in ["90s", "10m", "8h", "2d", "600"] {
                        alone
                            .clone()
                            .try_get_matches_from(["t", &format!("--{long}"), text])
                            .unwrap_or_else(|e| panic!("{name} --{long} {text}: {e}"));
                    }
                }
                if matches!(long, "server" | "token" | "token-file" | "ca-file")
                    && !name.starts_with("warden db add-connection")
                    && !name.starts_with("warden git")
                    && !name.starts_with("warden bench")
                {
                    assert_eq!(
                        arg.get_help_heading(),
                        Some("Server connection"),
                        "{name} --{long}"
                    );
                }
                if matches!(long, "token" | "token-file") {
                    for no_token in ["warden join", "warden agent", "warden svid"] {
                        assert!(
                            !name.starts_with(no_token),
                            "{name} takes --{long}, which it never sends"
                        );
                    }
                }
            }
        }
        assert!(durations >= 10, "only {durations} duration flags found");
    }
}
