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
mod cache;
mod certs;
mod commands;
mod config;
mod conn;
mod explain;
mod fetched;
mod gateway;
mod gitorigin;
mod host;
mod identity;
mod local;
mod logging;
mod metrics;
mod model;
mod peer;
mod preflight;
mod proxy;
mod record;
mod reload;
mod respond;
mod rundir;
mod server;
mod tls;
mod upstream;
mod warm;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use modgate_protocol::RequestKind;

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
        /// Configuration file (also accepted as the only argument).
        #[arg(short, long = "config", value_name = "CONFIG")]
        config_flag: Option<PathBuf>,
        /// Configuration file.
        #[arg(value_name = "FILE", conflicts_with = "config_flag")]
        config: Option<PathBuf>,
        /// Resolve the file's relative paths from DIR, where the file will be installed,
        /// instead of the file's own directory (for checking a copy, e.g. Ansible's
        /// `validate: modgate check --base-dir /etc/modgate %s`).
        #[arg(long, value_name = "DIR")]
        base_dir: Option<PathBuf>,
    },
    /// Make the running gateway re-read its configuration (SIGHUP through its pid file) and
    /// report what changed. Exit 0: applied; 1: refused (the old configuration stays in force,
    /// the reason is printed); 2: no running gateway answered.
    Reload {
        /// Configuration file (the running gateway's; its server.pid_file is used; also
        /// accepted as the only argument).
        #[arg(short, long = "config", value_name = "CONFIG")]
        config_flag: Option<PathBuf>,
        /// Configuration file.
        #[arg(value_name = "FILE", conflicts_with = "config_flag")]
        config: Option<PathBuf>,
        /// How long to wait for the gateway's answer, in seconds.
        #[arg(long, default_value_t = 15.0)]
        timeout: f64,
    },
    /// Show which route and upstream chain a module request takes, and the access decision.
    /// Exit 0: allowed (or not a policy question); 1: denied by the access policy; 2: bad input.
    Explain {
        /// Module path, optionally with @version (e.g. github.com/Azure/go-autorest@v14.2.0+incompatible).
        target: String,
        /// Request kind: list, latest, info, mod or zip (zip when a version is given, else list).
        #[arg(long)]
        kind: Option<RequestKind>,
        /// Configuration file.
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// Decide for the identity in this client certificate (PEM).
        #[arg(long, conflicts_with_all = ["user", "token_name"])]
        cert: Option<PathBuf>,
        /// Decide for this basic-auth user (groups from the users file).
        #[arg(long, conflicts_with = "token_name")]
        user: Option<String>,
        /// Decide for this bearer token name (groups from the tokens file).
        #[arg(long)]
        token_name: Option<String>,
        /// Extra group memberships to assume.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Serve a loopback GOPROXY that forwards to the gateway with your client certificate
    /// (the `go` command cannot present one itself).
    Agent {
        /// The gateway's URL, e.g. https://modgate.corp (with its path prefix, if any).
        #[arg(long)]
        gateway: String,
        /// Your client certificate (PEM, chain allowed); reloaded when it changes.
        #[arg(long)]
        cert: PathBuf,
        /// Your private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// CA bundle that verifies the gateway (system roots when absent).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Where `go` connects: GOPROXY=http://<this address>.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        /// TLS server name to send and verify (the URL's host when absent).
        #[arg(long)]
        server_name: Option<String>,
        /// How often the certificate files are checked for renewal, in seconds.
        #[arg(long, default_value_t = 2.0)]
        watch: f64,
        /// Allow a non-loopback --listen address.
        #[arg(long)]
        allow_remote: bool,
        /// Also lend the certificate to this local user (name or uid; repeatable). By default
        /// only the agent's own user (and root) may use it; other users get a 403.
        #[arg(long = "allow-user", value_name = "USER")]
        allow_users: Vec<String>,
        /// PID file (default: agent-<listen address>.pid in the per-user runtime directory,
        /// $XDG_RUNTIME_DIR/modgate or /tmp/modgate-<uid>, so agents never share one).
        #[arg(long)]
        pid_file: Option<String>,
    },
    /// Write a development CA, server and client certificates as PEM files. A CA already in
    /// the directory is kept and signs whatever is missing (so `--client NAME` issues another
    /// client certificate later); existing files are kept unless --force.
    Certs {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Server certificate names (DNS names or IP addresses); default localhost, 127.0.0.1, ::1.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Common name of a new CA.
        #[arg(long, default_value = "modgate development CA")]
        ca_name: String,
        /// Common name of the client certificate client.pem.
        #[arg(long, default_value = "modgate-dev-client")]
        client_name: String,
        /// Also issue client-NAME.pem / client-NAME.key with common name NAME (repeatable).
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Days the server and client certificates are valid (the CA: 3650).
        #[arg(long, default_value_t = certs::DEFAULT_DAYS)]
        days: u32,
        /// Make a new CA and every certificate anew, replacing existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print a users-file line `USER:<bcrypt hash>[:groups]` for the password on standard input
    /// (one line; prompted without echo on a terminal; never taken from the command line).
    Passwd {
        /// User name (no whitespace, ':' or leading '#').
        user: String,
        /// Groups, comma-separated (or repeat the flag).
        #[arg(long, value_delimiter = ',', value_name = "GROUP,...")]
        groups: Vec<String>,
        /// bcrypt cost (work factor, 4 to 16, as the users file accepts; each step doubles the time of a check).
        #[arg(long, default_value_t = commands::passwd::DEFAULT_COST,
              value_parser = clap::value_parser!(u32).range(4..=16))]
        cost: u32,
    },
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
    Fetched {
        /// Configuration file.
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
        /// The identity: its name (every source), or SOURCE:NAME (certificate:, basic:, token:,
        /// anonymous:, forwarded:).
        #[arg(long)]
        identity: String,
        /// From: RFC 3339 (2026-12-01T08:00:00Z), a date (2026-12-01), or a span ago (7d, 12h).
        #[arg(long)]
        since: String,
        /// To (exclusive), as --since; default: now.
        #[arg(long)]
        until: Option<String>,
        /// text, json, or cyclonedx (a CycloneDX 1.6 JSON BOM).
        #[arg(long, default_value = "text", value_parser = ["text", "json", "cyclonedx"])]
        format: String,
    },
    /// Inspect the integrity ledger or accept changed bytes for a version.
    Ledger {
        #[command(subcommand)]
        action: LedgerCommand,
        /// Configuration file.
        #[arg(short, long, default_value = "gateway.yaml", global = true)]
        config: PathBuf,
    },
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
enum LedgerCommand {
    /// Print recorded hashes (all, a module, or one version with its accepted changes).
    Show {
        /// MODULE or MODULE@VERSION.
        target: Option<String>,
    },
    /// Pin new bytes for a version after checking them (the 502 and the audit record give the
    /// values, or say how to get the sha256); recorded as accepted by operator:<OS user>.
    Accept {
        /// MODULE@VERSION.
        target: String,
        /// Which file of the version.
        #[arg(value_parser = ["info", "mod", "zip"])]
        artifact: String,
        /// SHA-256 of the new bytes, 64 hex digits (what `sha256sum` prints).
        #[arg(long, value_name = "HEX")]
        sha256: String,
        /// The go.sum `h1:` hash of the new bytes (.mod and .zip; a .mod's follows from its
        /// sha256 and is filled in).
        #[arg(long, value_name = "H1")]
        h1: Option<String>,
        /// Size of the new bytes; refused when the ledger already saw this sha256 with another.
        #[arg(long, value_name = "BYTES")]
        size: u64,
        /// Why the change is accepted (kept in the ledger history and the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => finish("modgate", commands::run::run(&config, upgrade)),
        Command::Check {
            config_flag,
            config,
            base_dir,
        } => {
            let config = config_flag
                .or(config)
                .unwrap_or_else(|| PathBuf::from("gateway.yaml"));
            finish(
                "modgate",
                commands::check::check(&config, base_dir.as_deref()),
            )
        }
        Command::Reload {
            config_flag,
            config,
            timeout,
        } => {
            let config = config_flag
                .or(config)
                .unwrap_or_else(|| PathBuf::from("gateway.yaml"));
            finish("modgate", commands::reload::reload(&config, timeout))
        }
        Command::Explain {
            target,
            kind,
            config,
            cert,
            user,
            token_name,
            groups,
        } => finish(
            "modgate",
            commands::explain::explain(commands::explain::Question {
                target,
                kind,
                config,
                who: identity::ExplainIdentity {
                    cert,
                    user,
                    token_name,
                    groups,
                },
            }),
        ),
        Command::Agent {
            gateway,
            cert,
            key,
            ca,
            listen,
            server_name,
            watch,
            allow_remote,
            allow_users,
            pid_file,
        } => finish(
            "modgate agent",
            commands::agent::agent(agent::AgentOptions {
                gateway,
                cert,
                key,
                ca,
                listen,
                server_name,
                watch: Duration::try_from_secs_f64(watch).unwrap_or(Duration::from_secs(2)),
                allow_remote,
                allow_users,
                pid_file,
            }),
        ),
        Command::Certs {
            out,
            hosts,
            ca_name,
            client_name,
            clients,
            days,
            force,
        } => finish(
            "modgate",
            commands::certs::certs(&commands::certs::Request {
                out: &out,
                hosts: &hosts,
                ca_name: &ca_name,
                client_name: &client_name,
                clients: &clients,
                days,
                force,
            }),
        ),
        Command::Passwd { user, groups, cost } => finish(
            "modgate",
            commands::passwd::passwd(&commands::passwd::Request {
                user: &user,
                groups: &groups,
                cost,
            }),
        ),
        Command::Warm(args) => warm::main(args),
        Command::Cache { action, config } => finish(
            "modgate",
            commands::load_config(&config).and_then(|c| match action {
                CacheCommand::Purge { target } => commands::cache::purge(&c, &target),
                CacheCommand::Verify { purge } => commands::cache::verify(&c, purge),
            }),
        ),
        Command::Fetched {
            config,
            identity,
            since,
            until,
            format,
        } => finish(
            "modgate",
            commands::load_config(&config).and_then(|c| {
                commands::fetched::fetched(
                    &c,
                    &fetched::Ask {
                        identity: &identity,
                        since: &since,
                        until: until.as_deref(),
                        format: &format,
                    },
                )
            }),
        ),
        Command::Ledger { action, config } => finish(
            "modgate",
            commands::load_config(&config).and_then(|c| match action {
                LedgerCommand::Show { target } => commands::ledger::show(&c, target.as_deref()),
                LedgerCommand::Accept {
                    target,
                    artifact,
                    sha256,
                    h1,
                    size,
                    reason,
                } => commands::ledger::accept(
                    &c,
                    &commands::ledger::Accept {
                        target: &target,
                        artifact: &artifact,
                        sha256: &sha256,
                        h1: h1.as_deref(),
                        size,
                        reason: &reason,
                    },
                ),
            }),
        ),
    }
}
