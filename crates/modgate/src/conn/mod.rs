//! Client connections before and between requests: per-listener deadlines (nothing sent, request
//! headers too slow) and caps on open connections (per listener, per source address). The
//! pure rules live in [`deadline`] and [`caps`]; [`guard`] applies them to Pingora's streams.

pub mod caps;
pub mod deadline;
pub mod guard;

pub use caps::Caps;
pub use deadline::Deadlines;
pub use guard::{guarded, GuardedApp, Limits};
