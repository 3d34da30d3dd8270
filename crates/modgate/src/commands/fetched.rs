//! `modgate fetched --identity X --since T [--until T] [--format text|json|cyclonedx]`: the
//! module versions an identity was served whole (zip or mod) in a time range, with the
//! ledger's hashes, read from the index `fetched:` keeps (beside, or without, a running
//! gateway; WAL lets it read while the gateway writes).

use super::{Exit, Outcome};
use crate::config::GatewayConfig;
use crate::fetched::{answer, Ask, AskError};

/// `modgate fetched`.
pub fn fetched(config: &GatewayConfig, ask: &Ask) -> Outcome {
    let Some(path) = config.fetched_path() else {
        anyhow::bail!("the configuration has no fetched: section (nothing is recorded)");
    };
    match answer(&path, ask) {
        Ok((body, _)) => {
            print!("{body}");
            Ok(Exit::Success)
        }
        Err(AskError::Bad(m)) => Err(anyhow::anyhow!("{m}")),
        Err(AskError::Index(e)) => Err(e.into()),
    }
}
