//! Client connections before and between requests: per-listener deadlines (nothing sent, request
//! headers too slow) and caps on open connections (per listener, per source address). The
//! pure rules live in [`deadline`], [`caps`] and [`fds`]; [`accept`] applies the caps and the
//! descriptor reserve at accept and bounds TLS handshakes; [`guard`] applies the deadlines to
//! Pingora's streams. Both count on the listener's [`ConnMetrics`], handed to its
//! [`GuardedApp`] by server start-up.

pub mod accept;
pub mod caps;
pub mod deadline;
pub mod fds;
pub mod guard;
pub mod metrics;

pub use caps::Caps;
pub use deadline::Deadlines;
pub use guard::{guarded, GuardedApp, Limits};
pub use metrics::ConnMetrics;
