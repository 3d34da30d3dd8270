//! modgate: an edge gateway for Go module proxies on Cloudflare Pingora.
//!
//! This file parses the command line and dispatches; each subcommand's body is in
//! `commands/<name>.rs` (`warm`'s in `warm.rs`), and every exit status follows the one policy
//! of [`commands::Exit`]: 0 success, 1 a negative answer, 2 usage or operational error.
//!
//! Subcommands: `run` serves `gateway.yaml`, `check` validates it, `reload` makes the running
//! gateway apply it, `explain` shows the route, chain and access decision of a module request
//! for an identity, `agent` is a loopback GOPROXY that presents the user's client certificate
//! to the gateway, `certs` writes a development PKI, `passwd` writes a users-file line, `warm`
//! pre-fetches the modules of go.sum / go.mod files through a gateway, `cache` and `ledger`
//! operate on the cache and the integrity ledger, `fetched` lists what an identity fetched.

mod agent;
mod alloc;
mod build;
mod cache;
mod certs;
mod commands;
mod config;
mod conn;
mod cooldown;
mod error_chain;
mod explain;
mod fetched;
mod gateway;
mod gitorigin;
mod host;
mod identity;
mod local;
mod logging;
mod metrics;
mod mirrors;
mod model;
mod peer;
mod preflight;
mod proxy;
mod record;
mod reload;
mod respond;
mod rundir;
mod server;
mod sumlog;
mod template;
mod tls;
mod upstream;
mod vulns;
mod warm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use commands::finish;

#[derive(Parser)]
#[command(
    name = "modgate",
    version,
    about = "Edge gateway for Go module proxies",
    after_help = "Exit status: 0 success; 1 a negative answer (check refuses the file, explain \
                  denies, reload is refused, cache verify finds a mismatch, warm could not fetch \
                  something); 2 usage or operational error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway described by the configuration file.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Take the listening sockets over from a running modgate (graceful upgrade/reload:
        /// start with --upgrade, then send SIGQUIT to the old process).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a configuration file (exit status 1 with file:line:column on error).
    Check {
        #[command(flatten)]
        file: ConfigFile,
        /// Resolve the file's relative paths from DIR, where the file will be installed,
        /// instead of the file's own directory (for checking a copy, e.g. Ansible's
        /// `validate: modgate check --base-dir /etc/modgate %s`).
        #[arg(long, value_name = "DIR")]
        base_dir: Option<PathBuf>,
    },
    /// Make the running gateway re-read its configuration (SIGHUP through its pid file) and
    /// report what changed. Exit 0: applied; 1: refused (the old configuration stays in force,
    /// the reason is printed); 2: no running gateway answered.
    #[command(mut_arg("config_flag", |a| a.help(
        "Configuration file (the running gateway's; its server.pid_file is used; also \
         accepted as the only argument)"
    )))]
    Reload {
        #[command(flatten)]
        file: ConfigFile,
        /// How long to wait for the gateway's answer, in seconds.
        #[arg(long, default_value_t = 15.0)]
        timeout: f64,
    },
    /// Show which route and upstream chain a module request takes, and the access decision.
    /// Exit 0: allowed (or not a policy question); 1: denied by the access policy; 2: bad input.
    Explain(commands::explain::Question),
    /// Serve a loopback GOPROXY that forwards to the gateway with your client certificate
    /// (the `go` command cannot present one itself).
    Agent(agent::AgentOptions),
    /// Write a development CA, server and client certificates as PEM files. A CA already in
    /// the directory is kept and signs whatever is missing (so `--client NAME` issues another
    /// client certificate later); existing files are kept unless --force.
    Certs(commands::certs::Request),
    /// Print a users-file line `USER:<bcrypt hash>[:groups]` for the password on standard input
    /// (one line; prompted without echo on a terminal; never taken from the command line).
    Passwd(commands::passwd::Request),
    /// Pre-fetch the module versions of go.sum / go.mod / module-list files through a running
    /// gateway, so they land in its cache (exit status 1 listing what failed).
    Warm(warm::WarmArgs),
    /// Operate on the response cache (purge, verify against the ledger).
    Cache {
        #[command(subcommand)]
        action: CacheCommand,
        /// Configuration file.
        #[arg(short, long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
    },
    /// List the module versions an identity was served whole (zip or mod) in a time range,
    /// with their ledger hashes, from the index `fetched:` keeps.
    Fetched(commands::fetched::Query),
    /// The company checksum database (`checksum_log:`): make its key, or verify its log.
    Sumdb {
        #[command(subcommand)]
        action: SumdbCommand,
    },
    /// Inspect the integrity ledger, accept changed bytes for a version, or seed versions
    /// already in use as old for cooldown.
    Ledger {
        #[command(subcommand)]
        action: LedgerCommand,
        /// Configuration file.
        #[arg(short, long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
    },
}

/// The configuration file of `check` and `reload`: `-c CONFIG`, or the only argument.
#[derive(Args)]
struct ConfigFile {
    /// Configuration file (also accepted as the only argument).
    #[arg(short, long = "config", value_name = "CONFIG")]
    config_flag: Option<PathBuf>,
    /// Configuration file.
    #[arg(value_name = "FILE", conflicts_with = "config_flag")]
    config: Option<PathBuf>,
}

impl ConfigFile {
    /// The file named either way, `gateway.yaml` when neither.
    fn path(self) -> PathBuf {
        self.config_flag
            .or(self.config)
            .unwrap_or_else(|| PathBuf::from("gateway.yaml"))
    }
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Remove a module's cached answers (all versions, or one) on every route; audited.
    Purge {
        /// MODULE or MODULE@VERSION.
        target: String,
    },
    /// Re-hash every cached exact-version artifact against the ledger (exit 1 on mismatch).
    Verify {
        /// Also remove mismatching objects from the cache.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Subcommand)]
enum SumdbCommand {
    /// Make the signer key of a new log NAME (written to --out, mode 0600, never overwritten)
    /// and print the verifier key clients put in GOSUMDB.
    Keygen {
        /// The log's name, e.g. sum.corp.example.
        name: String,
        /// Where to write the signer key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Recompute every record's hashes, every stored hash and signed tree head of the
    /// configured log; exit 1 on any difference.
    Verify {
        /// Configuration file.
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Print recorded hashes (all, a module, or one version with its accepted changes).
    Show {
        /// MODULE or MODULE@VERSION.
        target: Option<String>,
    },
    /// Pin new bytes for a version after checking them (the 502 and the audit record give the
    /// values, or say how to get the sha256); recorded as accepted by operator:<OS user>.
    Accept(commands::ledger::Accept),
    /// Record every module version of go.sum files as already in use (old for cooldown), so a
    /// fresh deployment does not hold back what the organisation builds with; audited.
    Seed(commands::ledger::Seed),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => finish("modgate", commands::run::run(&config, upgrade)),
        Command::Check { file, base_dir } => finish(
            "modgate",
            commands::check::check(&file.path(), base_dir.as_deref()),
        ),
        Command::Reload { file, timeout } => {
            finish("modgate", commands::reload::reload(&file.path(), timeout))
        }
        Command::Explain(question) => finish("modgate", commands::explain::explain(question)),
        Command::Agent(options) => finish("modgate agent", commands::agent::agent(options)),
        Command::Certs(request) => finish("modgate", commands::certs::certs(&request)),
        Command::Passwd(request) => finish("modgate", commands::passwd::passwd(&request)),
        Command::Warm(args) => warm::main(args),
        Command::Cache { action, config } => finish(
            "modgate",
            commands::load_config(&config).and_then(|c| match action {
                CacheCommand::Purge { target } => commands::cache::purge(&c, &target),
                CacheCommand::Verify { purge } => commands::cache::verify(&c, purge),
            }),
        ),
        Command::Fetched(query) => finish("modgate", commands::fetched::fetched(&query)),
        Command::Sumdb { action } => finish(
            "modgate",
            match action {
                SumdbCommand::Keygen { name, out } => commands::sumdb::keygen(&name, &out),
                SumdbCommand::Verify { config } => {
                    commands::load_config(&config).and_then(|c| commands::sumdb::verify(&c))
                }
            },
        ),
        Command::Ledger { action, config } => finish(
            "modgate",
            commands::load_config(&config).and_then(|c| match action {
                LedgerCommand::Show { target } => commands::ledger::show(&c, target.as_deref()),
                LedgerCommand::Accept(accept) => commands::ledger::accept(&c, &accept),
                LedgerCommand::Seed(seed) => commands::ledger::seed(&c, &seed),
            }),
        ),
    }
}
