//! `modgate run`: serves the gateway a configuration file describes, in the foreground, until
//! SIGTERM (drain) or SIGINT; exit 0 then, 2 when the file does not load or serving fails.

use std::path::Path;

use super::{load_config, Exit, Outcome};
use crate::{logging, server};

/// Serves `config`; with `upgrade`, takes the listening sockets over from a running modgate.
pub fn run(config: &Path, upgrade: bool) -> Outcome {
    logging::init();
    let cfg = load_config(config)?;
    server::run(
        cfg,
        server::RunOptions {
            upgrade,
            config_path: config.to_path_buf(),
        },
    )?;
    Ok(Exit::Success)
}
