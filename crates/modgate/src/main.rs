//! modgate: an edge gateway for Go module proxies on Cloudflare Pingora.
//!
//! Subcommands: `run` serves `gateway.yaml`, `check` validates it, `explain` shows the route
//! and chain a module request takes, `certs` writes a development PKI.

mod certs;
mod config;
mod explain;
mod gateway;
mod metrics;
mod proxy;
mod respond;
mod server;
mod tls;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;

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
        /// Detach and run in the background.
        #[arg(short, long)]
        daemon: bool,
    },
    /// Validate a configuration file (exit status 1 with file:line:column on error).
    Check {
        /// Configuration file.
        #[arg(default_value = "gateway.yaml")]
        config: PathBuf,
    },
    /// Show which route and upstream chain a module request takes.
    Explain {
        /// Module path, optionally with @version (e.g. github.com/Azure/go-autorest@v14.2.0+incompatible).
        target: String,
        /// Request kind: list, latest, info, mod or zip (zip when a version is given, else list).
        #[arg(long)]
        kind: Option<RequestKind>,
        /// Configuration file.
        #[arg(short, long, default_value = "gateway.yaml")]
        config: PathBuf,
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
}

fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            upgrade,
            daemon,
        } => {
            init_logging();
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("modgate: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match server::run(cfg, server::RunOptions { upgrade, daemon }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("modgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| gateway::Gateway::new(&c).map(|g| (c, g)))
        {
            Ok((c, g)) => {
                for w in g.warnings() {
                    eprintln!("modgate: warning: {}: {w}", config.display());
                }
                println!(
                    "{}: ok ({} listener(s), {} upstream(s), {} route(s))",
                    config.display(),
                    c.listeners.len(),
                    c.upstreams.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("modgate: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Explain {
            target,
            kind,
            config,
        } => {
            let result = config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    let g = gateway::Gateway::new(&c).map_err(|e| format!("{e:#}"))?;
                    explain::explain(&g, &c.server.path_prefix, &target, kind)
                });
            match result {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("modgate: {e}");
                    ExitCode::from(2)
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
    }
}
