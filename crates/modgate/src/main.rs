//! modgate: an edge gateway for Go module proxies on Cloudflare Pingora.
//!
//! Subcommands: `run` serves `gateway.yaml`, `check` validates it, `explain` shows the route,
//! chain and access decision of a module request for an identity, `agent` is a loopback
//! GOPROXY that presents the user's client certificate to the gateway, `certs` writes a
//! development PKI, `warm` pre-fetches the modules of go.sum / go.mod files through a gateway.

mod admin;
mod agent;
mod cache;
mod certs;
mod commands;
mod config;
mod conn;
mod explain;
mod gateway;
mod identity;
mod local;
mod logging;
mod metrics;
mod model;
mod proxy;
mod record;
mod reload;
mod respond;
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

#[derive(Parser)]
#[command(
    name = "modgate",
    version,
    about = "Edge gateway for Go module proxies"
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
    },
    /// Make the running gateway re-read its configuration (SIGHUP through its pid file) and
    /// report what changed. Exit 0: applied; 1: refused (the old configuration stays in force,
    /// the reason is printed); 2: no running gateway answered.
    Reload {
        /// Configuration file (the running gateway's; its server.pid_file is used).
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
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
        /// PID file.
        #[arg(long, default_value = "/tmp/modgate-agent.pid")]
        pid_file: String,
    },
    /// Write a development CA, server and client certificate as PEM files.
    Certs {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Server certificate names (DNS names or IP addresses); default localhost, 127.0.0.1, ::1.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Common name of the CA.
        #[arg(long, default_value = "modgate development CA")]
        ca_name: String,
        /// Common name of the client certificate.
        #[arg(long, default_value = "modgate-dev-client")]
        client_name: String,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
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
    /// Pin new bytes for a version after checking them (the values are in the 502 / audit record).
    Accept {
        /// MODULE@VERSION.
        target: String,
        /// info, mod or zip.
        artifact: String,
        #[arg(long)]
        sha256: String,
        #[arg(long)]
        h1: Option<String>,
        #[arg(long)]
        size: u64,
        /// Why the change is accepted (kept in the ledger history and the audit log).
        #[arg(long)]
        reason: String,
    },
}

fn with_config(
    path: &std::path::Path,
    f: impl FnOnce(&config::GatewayConfig) -> anyhow::Result<bool>,
) -> ExitCode {
    let result = config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|c| f(&c));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("modgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    logging::init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => {
            init_logging();
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("modgate: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match server::run(
                cfg,
                server::RunOptions {
                    upgrade,
                    config_path: config.clone(),
                },
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("modgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload { config, timeout } => commands::reload(&config, timeout),
        Command::Check {
            config_flag,
            config,
        } => {
            let config = config_flag
                .or(config)
                .unwrap_or_else(|| PathBuf::from("gateway.yaml"));
            commands::check(&config)
        }
        Command::Explain {
            target,
            kind,
            config,
            cert,
            user,
            token_name,
            groups,
        } => {
            let result = config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    let g = gateway::Gateway::new(&c).map_err(|e| format!("{e:#}"))?;
                    let who = identity::ExplainIdentity {
                        cert,
                        user,
                        token_name,
                        groups,
                    };
                    let principal = who.principal(&g.auth.current.load())?;
                    explain::explain(&g, &c.server.path_prefix, &target, kind, &principal)
                });
            match result {
                Ok(explained) => {
                    print!("{}", explained.text);
                    if explained.denied {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("modgate: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Agent {
            gateway,
            cert,
            key,
            ca,
            listen,
            server_name,
            watch,
            allow_remote,
            pid_file,
        } => {
            init_logging();
            let options = agent::AgentOptions {
                gateway,
                cert,
                key,
                ca,
                listen,
                server_name,
                watch: Duration::try_from_secs_f64(watch).unwrap_or(Duration::from_secs(2)),
                allow_remote,
                pid_file,
            };
            match agent::run(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("modgate agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Certs {
            out,
            hosts,
            ca_name,
            client_name,
            force,
        } => {
            let req = certs::CertRequest {
                out: &out,
                hosts: &hosts,
                ca_name: &ca_name,
                client_name: &client_name,
                force,
            };
            match certs::generate(&req) {
                Ok(written) if written.is_empty() => {
                    println!(
                        "{}: certificates already present (use --force to replace)",
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Ok(written) => {
                    for p in written {
                        println!("wrote {}", p.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("modgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Warm(args) => warm::main(args),
        Command::Cache { action, config } => with_config(&config, |c| match action {
            CacheCommand::Purge { target } => admin::cache_purge(c, &target).map(|()| true),
            CacheCommand::Verify { purge } => admin::cache_verify(c, purge),
        }),
        Command::Ledger { action, config } => with_config(&config, |c| match action {
            LedgerCommand::Show { target } => {
                admin::ledger_show(c, target.as_deref()).map(|()| true)
            }
            LedgerCommand::Accept {
                target,
                artifact,
                sha256,
                h1,
                size,
                reason,
            } => admin::ledger_accept(
                c,
                &admin::Accept {
                    target: &target,
                    artifact: &artifact,
                    sha256: &sha256,
                    h1: h1.as_deref(),
                    size,
                    reason: &reason,
                },
            )
            .map(|()| true),
        }),
    }
}
