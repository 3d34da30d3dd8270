//! Per-identity rate limits as pure logic, with the clock passed in: no I/O, no clock read.
//!
//! - [`bucket`]: one token bucket (a rate and a burst); requests take a token each, response
//!   bytes are charged after the fact and may run the bucket into debt;
//! - [`policy`]: which limits apply to an identity — its own entry, else the most generous of
//!   its roles' entries, else the default (or the anonymous entry) — per dimension;
//! - [`table`]: the buckets of every identity seen, in a bounded table that forgets idle
//!   (refilled) buckets first and the least recently seen ones when it must.
//!
//! The gateway calls [`table::Limiter::admit`] once per request with the identity's key and
//! the limits that apply, and [`table::Limiter::charge`] with the body bytes it served.

pub mod bucket;
pub mod policy;
pub mod table;

pub use bucket::{Bucket, Limit};
pub use policy::{Applied, Dimension, Effective, Origin, RateLimits, Setting, Spec};
pub use table::{Limiter, Over};
