//! What each identity fetched from the gateway.
//!
//! Every exact module `.zip` or `.mod` the gateway serves whole (status 200, the whole body
//! sent) is one [`Fetch`]: when, to which identity (name and source), which module version and
//! artifact, and the hashes the integrity ledger holds for it (the SHA-256 of the bytes and the
//! `go.sum` `h1:`). This crate keeps them and renders them:
//!
//! * [`index`] — the records and queries, and the SQLite [`FetchIndex`] (its own file, WAL): batched inserts, pruning by
//!   age and by count ([`Limits`]), and queries by identity and time range, summarised per
//!   module version ([`VersionFetched`]).
//! * [`store`] — the [`FetchStore`] trait the SQLite index and the shared PostgreSQL one
//!   (crate `modgate-postgres`) implement with the same semantics, and the rules they share;
//!   `conformance` (feature `conformance`) is the one test suite both pass.
//! * [`writer`] — the [`Writer`]: a background thread fed by a bounded channel, so a request
//!   never waits for the disk; a full channel drops the record and counts it.
//! * [`render`] — text, JSON and CycloneDX 1.6 JSON of a query's answer.
//! * [`purl`] — the Package URL of a Go module version (`pkg:golang/...@v...`).
//! * [`time`] — the times a query takes (`2026-12-01`, RFC 3339, `7d` ago) and prints.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod error;
pub mod index;
pub mod purl;
pub mod render;
pub mod store;
pub mod time;
pub mod writer;

pub use error::FetchedError;
pub use index::{
    Fetch, FetchIndex, Hashes, IdentityFilter, Kind, Limits, Pruned, Query, VersionFetched,
};
pub use render::{Format, Tool};
pub use store::FetchStore;
pub use writer::{Served, Writer, WriterStats};

/// 16 random bytes for a CycloneDX serial number, from the system's random source (falling
/// back to a SHA-256 of the time and process id, unique enough for a document serial).
pub fn random_serial() -> [u8; 16] {
    use std::io::Read;
    let mut b = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        use sha2::Digest;
        let seed = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
        let d = sha2::Sha256::digest(seed.as_bytes());
        b.copy_from_slice(&d[..16]);
    }
    b
}
