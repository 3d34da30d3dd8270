//! The subcommands of the `modgate` binary, one file each (`main.rs` only parses the arguments
//! and dispatches here), and the one exit-status policy they all follow: [`Exit`].
//!
//! A subcommand returns an [`Outcome`]: its answer ([`Exit`]), or an error, which [`finish`]
//! prints as `modgate: <error>: <causes>` and turns into exit status 2.

pub mod agent;
pub mod cache;
pub mod certs;
pub mod check;
pub mod explain;
pub mod fetched;
pub mod ledger;
mod operator;
pub mod passwd;
pub mod reload;
pub mod run;
pub mod sumdb;

use std::path::Path;
use std::process::ExitCode;

use crate::config;

/// The exit status of every `modgate` subcommand (`warm`, whose body is in `warm.rs`, follows it
/// too):
///
/// | status | meaning |
/// |---|---|
/// | 0 | success: served and stopped cleanly, the file is valid, allowed, applied, written |
/// | 1 | a negative answer to the question the command asks: `check` refuses the file (whatever the reason, an unreadable file included), `explain` denies, `reload` is refused, `cache verify` finds a mismatch, `warm` could not fetch some version |
/// | 2 | usage or operational error: bad arguments (clap's own status), unusable input, a file, ledger or cache that cannot be used, no running gateway answered, `run` or `agent` could not start |
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Success,
    /// 1: the command's answer is "no".
    No,
    /// 2: the command could not give an answer.
    Error,
}

impl Exit {
    /// [`Exit::Success`] when `yes`, else [`Exit::No`].
    pub fn answer(yes: bool) -> Exit {
        if yes {
            Exit::Success
        } else {
            Exit::No
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(match e {
            Exit::Success => 0,
            Exit::No => 1,
            Exit::Error => 2,
        })
    }
}

/// What a subcommand returns: its answer, or an error that [`finish`] prints (exit status 2).
pub type Outcome = anyhow::Result<Exit>;

/// Ends a subcommand: prints an error as `<prefix>: <error>: <causes>` and returns the status
/// the policy gives it.
pub fn finish(prefix: &str, outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("{prefix}: {e:#}");
            Exit::Error.into()
        }
    }
}

/// Loads the configuration file at `path` (a file that does not load is an error).
pub fn load_config(path: &Path) -> anyhow::Result<config::GatewayConfig> {
    Ok(config::load(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_in_numbers() {
        // ExitCode has no accessor: compare through its Debug form.
        let code = |e: Exit| format!("{:?}", ExitCode::from(e));
        assert_eq!(code(Exit::Success), format!("{:?}", ExitCode::SUCCESS));
        assert_eq!(code(Exit::No), format!("{:?}", ExitCode::from(1)));
        assert_eq!(code(Exit::Error), format!("{:?}", ExitCode::from(2)));
        assert_eq!(Exit::answer(true), Exit::Success);
        assert_eq!(Exit::answer(false), Exit::No);
    }
}
