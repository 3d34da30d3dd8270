//! `modgate certs`: writes the development PKI (the work is in `certs.rs`) and lists the files
//! written; a CA already in the directory is kept and signs what is missing, so more client
//! certificates can be issued later (`--client NAME`). Exit 0, or 2 when it cannot.

use std::path::Path;

use super::{Exit, Outcome};
use crate::certs;

/// What to write.
pub struct Request<'a> {
    pub out: &'a Path,
    pub hosts: &'a [String],
    pub ca_name: &'a str,
    pub client_name: &'a str,
    pub clients: &'a [String],
    pub days: u32,
    pub force: bool,
}

/// Writes what is missing and says what was written.
pub fn certs(r: &Request<'_>) -> Outcome {
    let report = certs::generate_with(
        &certs::CertRequest {
            out: r.out,
            hosts: r.hosts,
            ca_name: r.ca_name,
            client_name: r.client_name,
            force: r.force,
        },
        &certs::Issue {
            days: r.days,
            clients: r.clients,
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
