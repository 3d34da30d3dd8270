//! Cooldown's clock: how old a module version is, measured from sightings its author cannot
//! back-date (see `docs/architecture.md`, "Cooldown's clock").
//!
//! - [`age`]: the pure decision ([`age::age`]) over a version's [`VersionSightings`].
//! - [`feed`]: the background task tailing the Go module index into the sightings store.
//!
//! The store itself is [`modgate_ledger::Sightings`]; `modgate ledger seed` records versions
//! already in use as old.

pub mod age;
pub mod feed;

pub use age::{age, show_time, Age, Vouch};
