//! `modgate certs`: writes the development PKI (the work is in `certs.rs`) and lists the files
//! written; a CA already in the directory is kept and signs what is missing, so more client
//! certificates can be issued later (`--client NAME`). Exit 0, or 2 when it cannot.

use std::path::PathBuf;

use super::{Exit, Outcome};
use crate::certs;

/// What to write (the command line of `modgate certs`; the field comments are its help).
#[derive(clap::Args)]
pub struct Request {
    /// Output directory.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Server certificate names (DNS names or IP addresses); default localhost, 127.0.0.1, ::1.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Common name of a new CA.
    #[arg(long, default_value = "modgate development CA")]
    pub ca_name: String,
    /// Common name of the client certificate client.pem.
    #[arg(long, default_value = "modgate-dev-client")]
    pub client_name: String,
    /// Also issue client-NAME.pem / client-NAME.key with common name NAME (repeatable).
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Days the server and client certificates are valid (the CA: 3650).
    #[arg(long, default_value_t = certs::DEFAULT_DAYS)]
    pub days: u32,
    /// Make a new CA and every certificate anew, replacing existing files.
    #[arg(long)]
    pub force: bool,
}

/// Writes what is missing and says what was written.
pub fn certs(r: &Request) -> Outcome {
    let report = certs::generate_with(
        &certs::CertRequest {
            out: &r.out,
            hosts: &r.hosts,
            ca_name: &r.ca_name,
            client_name: &r.client_name,
            force: r.force,
        },
        &certs::Issue {
            days: r.days,
            clients: &r.clients,
        },
    )?;
    if report.written.is_empty() {
        println!(
            "{}: certificates already present (use --force to replace)",
            r.out.display()
        );
    }
    for p in &report.written {
        println!("wrote {}", p.display());
    }
    for n in &report.notes {
        eprintln!("modgate: note: {n}");
    }
    Ok(Exit::Success)
}
