//! `modgate explain`: which route and upstream chain a module request takes and what the
//! access policy decides for an identity (the reasoning is in `explain.rs`). Exit 0 allowed (or
//! no policy question), 1 denied, 2 bad input.

use std::path::PathBuf;

use modgate_protocol::RequestKind;

use super::{load_config, Exit, Outcome};
use crate::{explain, gateway, identity};

/// The request to explain and who asks.
pub struct Question {
    /// `MODULE[@VERSION]`.
    pub target: String,
    pub kind: Option<RequestKind>,
    pub config: PathBuf,
    pub who: identity::ExplainIdentity,
}

/// Prints the explanation.
pub fn explain(q: Question) -> Outcome {
    let c = load_config(&q.config)?;
    let g = gateway::Gateway::new(&c)?;
    let principal = q
        .who
        .principal(&g.auth.current.load())
        .map_err(anyhow::Error::msg)?;
    let explained = explain::explain(&g, &c.server.path_prefix, &q.target, q.kind, &principal)
        .map_err(anyhow::Error::msg)?;
    print!("{}", explained.text);
    Ok(Exit::answer(!explained.denied))
}
