//! The integrity ledger of modgate.
//!
//! For every exact module version the gateway serves, the ledger keeps the
//! *first-seen* hashes of its artifacts: the SHA-256 of the `.mod`, `.zip`
//! and `.info` bytes, and for `.mod` and `.zip` also the Go `h1:` hash that
//! `go.sum` and the checksum database record. A later fetch whose bytes
//! differ from what was first seen is reported as a [`Check::Mismatch`]
//! instead of being silently served.
//!
//! * [`hash`] — pure hashing: [`zip_h1`] (the `dirhash.HashZip` of a module
//!   zip), [`mod_h1`], [`sha256_hex`] and a streaming [`Sha256Hasher`].
//! * [`ledger`] — the SQLite-backed [`Ledger`]: atomic
//!   [`observe`](Ledger::observe), operator [`accept`](Ledger::accept) with
//!   an audit [`history`](Ledger::history), lookups and listing.
//! * [`store`] — the [`LedgerStore`] trait both the SQLite ledger and the shared PostgreSQL
//!   ledger implement, and the rules they share; `conformance` (feature `conformance`) is the one
//!   test suite both pass.
//! * [`sightings`] — cooldown's clock: the gateway's own first sighting of each version, the
//!   Go module index's time for it, the seeded flag, and how far the index has been read
//!   ([`Sightings`], in its own SQLite file).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod error;
pub mod hash;
pub mod ledger;
pub mod sightings;
pub mod store;

pub use error::LedgerError;
pub use hash::{
    mod_h1, mod_h1_from_sha256, sha256_hex, zip_h1, Sha256Hasher, MAX_ZIP_UNCOMPRESSED,
};
pub use ledger::{Artifact, Check, Entry, HistoryEntry, Ledger, SCHEMA_VERSION};
pub use sightings::{FeedEntry, FeedProgress, Sightings, VersionSightings};
pub use store::{LedgerStore, Observation};
