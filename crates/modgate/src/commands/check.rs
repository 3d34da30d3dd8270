//! `modgate check`: validates a configuration file exactly as `run` and a reload would, and
//! says so: exit 0 with a summary (and warnings), or 1 with the first problem at its
//! `file:line:col`.

use std::path::Path;

use super::{load_config, Exit, Outcome};
use crate::gateway;

/// Checks the file. A file that cannot be read is refused like an invalid one (status 1): the
/// question is whether `run` would serve it.
pub fn check(path: &Path) -> Outcome {
    match load_config(path).and_then(|c| gateway::Gateway::new(&c).map(|g| (c, g))) {
        Ok((c, g)) => {
            for w in g.warnings() {
                eprintln!("modgate: warning: {}: {w}", path.display());
            }
            println!(
                "{}: ok ({} listener(s), {} upstream(s), {} route(s))",
                path.display(),
                c.listeners.len(),
                c.upstreams.len(),
                c.routes.len()
            );
            Ok(Exit::Success)
        }
        Err(e) => {
            eprintln!("modgate: {e:#}");
            Ok(Exit::No)
        }
    }
}
