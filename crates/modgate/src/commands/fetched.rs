//! `modgate fetched --identity X --since T [--until T] [--format text|json|cyclonedx]`: the
//! module versions an identity was served whole (zip or mod) in a time range, with the
//! ledger's hashes, read from the index `fetched:` keeps (beside, or without, a running
//! gateway; WAL lets it read while the gateway writes). With `cluster:`, the index is the
//! cluster's PostgreSQL database: the command lists what every replica served.

use std::path::PathBuf;

use super::{load_config, Exit, Outcome};
use crate::fetched::{answer, Ask, AskError};

/// What `modgate fetched` is asked.
#[derive(clap::Args)]
pub struct Query {
    /// Configuration file.
    #[arg(short, long, default_value = "gateway.yaml")]
    pub config: PathBuf,
    /// The identity: its name (every source), or SOURCE:NAME (certificate:, basic:, token:,
    /// anonymous:, forwarded:).
    #[arg(long)]
    pub identity: String,
    /// From: RFC 3339 (2026-12-01T08:00:00Z), a date (2026-12-01), or a span ago (7d, 12h).
    #[arg(long)]
    pub since: String,
    /// To (exclusive), as --since; default: now.
    #[arg(long)]
    pub until: Option<String>,
    /// text, json, or cyclonedx (a CycloneDX 1.6 JSON BOM).
    #[arg(long, default_value = "text", value_parser = ["text", "json", "cyclonedx"])]
    pub format: String,
}

/// `modgate fetched`.
pub fn fetched(q: &Query) -> Outcome {
    let config = load_config(&q.config)?;
    let Some(at) = crate::fetched::FetchedAt::of(&config)? else {
        anyhow::bail!("the configuration has no fetched: section (nothing is recorded)");
    };
    let source = at.for_queries()?;
    let ask = Ask {
        identity: &q.identity,
        since: &q.since,
        until: q.until.as_deref(),
        format: &q.format,
    };
    match answer(&source, &ask) {
        Ok((body, _)) => {
            print!("{body}");
            Ok(Exit::Success)
        }
        Err(AskError::Bad(m)) => Err(anyhow::anyhow!("{m}")),
        Err(AskError::Index(e)) => Err(e.into()),
    }
}
