//! `modgate check`: validates a configuration file exactly as `run` and a reload would, and
//! says so: exit 0 with a summary (and warnings), or 1 with the first problem at its
//! `file:line:col`. Like `nginx -t` it also asks whether what `run` will open can be opened
//! (the cache and git directories, the audit file: [`crate::preflight`]), creating nothing.
//! `--base-dir` resolves the file's relative paths from where it will be installed, for a copy
//! checked elsewhere (Ansible's `validate:`).

use std::path::Path;

use super::{Exit, Outcome};
use crate::{config, gateway, preflight};

/// Checks the file. A file that cannot be read is refused like an invalid one (status 1): the
/// question is whether `run` would serve it.
pub fn check(path: &Path, base_dir: Option<&Path>) -> Outcome {
    let loaded = config::load_from(path, base_dir)
        .map_err(anyhow::Error::from)
        .and_then(|c| gateway::Gateway::new(&c).map(|g| (c, g)))
        .and_then(|(c, g)| {
            let problems = preflight::problems(&c);
            if problems.is_empty() {
                Ok((c, g))
            } else {
                Err(anyhow::anyhow!(
                    "{}: run could not open: {}",
                    path.display(),
                    problems.join("; ")
                ))
            }
        });
    match loaded {
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
