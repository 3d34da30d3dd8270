//! `modgate agent`: the loopback GOPROXY that presents the user's client certificate to the
//! gateway (the body is in `agent.rs`); exit 0 when stopped, 2 when it cannot start.

use super::{Exit, Outcome};
use crate::{agent, logging};

/// Runs the agent until it is stopped.
pub fn agent(options: agent::AgentOptions) -> Outcome {
    logging::init();
    agent::run(options)?;
    Ok(Exit::Success)
}
