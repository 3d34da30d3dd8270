//! `modgate sumdb keygen NAME --out FILE` and `modgate sumdb verify`: the company checksum
//! database's signer key (written once, mode 0600; the verifier key printed for `GOSUMDB`), and
//! an offline check of its log file (every record, stored hash and signed head recomputed;
//! exit 1 on any difference). There is no command that rewrites the log.

use std::path::Path;

use super::{Exit, Outcome};
use crate::config::GatewayConfig;

/// `modgate sumdb keygen`: a new key for the log `name`, its signer half written to `out`.
pub fn keygen(name: &str, out: &Path) -> Outcome {
    if !modgate_protocol::sumdb::is_valid_sumdb_name(name)
        || !modgate_tlog::note::is_valid_name(name)
    {
        anyhow::bail!(
            "{name:?} is not a checksum database name (a host-like name such as sum.corp.example)"
        );
    }
    let vkey = modgate_sumdb::keys::keygen(name, out)?;
    println!("{vkey}");
    eprintln!(
        "signer key written to {} (mode 0600; keep it secret). Clients: GOSUMDB=\"{vkey}\" \
         with GOPROXY pointing at this gateway. Rotating the key means a new name and a new log.",
        out.display()
    );
    Ok(Exit::Success)
}

/// `modgate sumdb verify`: recomputes the configured log from its records.
pub fn verify(config: &GatewayConfig) -> Outcome {
    let (Some(l), Some(cache)) = (&config.checksum_log, &config.cache) else {
        anyhow::bail!("no checksum_log: section in the configuration");
    };
    let signer = modgate_sumdb::keys::read_signer_key(&l.key_file.0)?;
    let report = match config.checksum_log_at(cache)? {
        crate::sumlog::LogAt::File(path) => modgate_sumdb::verify(&path, &signer.verifier())?,
        // A cluster's log, checked as the store serves it to every replica.
        at @ crate::sumlog::LogAt::Postgres(_) => {
            modgate_sumdb::verify_store(&*at.open_existing(signer)?)?
        }
    };
    print!("{report}");
    if !report.to_string().ends_with('\n') {
        println!();
    }
    Ok(Exit::answer(report.problems_total == 0))
}
