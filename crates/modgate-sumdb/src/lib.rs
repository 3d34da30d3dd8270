//! The company's own Go checksum database: a transparency log in Go's sumdb format, which the
//! stock `go` command verifies (`GOSUMDB="<name>+<key id>+<key>"`), kept durably and answered
//! as Go's `sumdb.Server` answers. The log's formats are modgate-tlog's; this crate stores them.
//!
//! * [`LogStore`] — a checksum database whatever holds it, and the rules every store shares
//!   ([`plan_append`], [`tile_bytes`]); `modgate-postgres` holds a cluster's log.
//! * [`Log`] — the SQLite store (WAL, `synchronous=FULL`): append a batch in one transaction
//!   with one signed head, look up records, read heads, records and tiles.
//! * [`answer`] — the protocol answers under `/sumdb/<name>/` (`/supported`, `/latest`,
//!   `/lookup/…`, `/tile/…`); a lookup of a version not logged is [`Answer::NotLogged`], for the
//!   gateway to fetch, verify and append.
//! * [`Appender`] — batching appends from async code: one transaction and one signature per
//!   batch, on a dedicated thread; [`AppendStats`] for metrics.
//! * [`verify`] — recompute and check a log file offline ([`VerifyReport`]).
//! * [`keys`] — the signer key file (`modgate sumdb keygen`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod answer;
mod appender;
mod cache;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod entry;
mod error;
pub mod keys;
mod log;
mod store;
mod verify;

pub use answer::{
    answer, Answer, Response, CACHE_ERROR, CACHE_FULL_TILE, CACHE_LATEST, CACHE_PARTIAL_TILE,
    CACHE_SUPPORTED,
};
pub use appender::{AppendStats, Appender, AppenderConfig, LATENCY_BUCKETS};
pub use cache::{TileCache, TileCacheStats};
pub use entry::Entry;
pub use error::Error;
pub use log::{
    Appended, Batch, Head, Log, LogHashReader, LogOptions, LookupRecord, DEFAULT_TILE_CACHE_BYTES,
    SCHEMA_VERSION,
};
pub use modgate_tlog::{Signer, Tile, Verifier};
pub use store::{
    check_head, check_records, plan_append, record_range, tile_bytes, LogStore, NewRecord, Plan,
};
pub use verify::{verify, verify_store, Problem, VerifyReport};

/// Fixed keys and hashes for the unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use modgate_tlog::note::key_pair_from_seed;
    use modgate_tlog::{record_hash, Signer};

    /// The signer of `name` with a fixed seed.
    pub(crate) fn signer(name: &str) -> Signer {
        let (skey, _) = key_pair_from_seed(name, &[7; 32]).unwrap();
        Signer::new(&skey).unwrap()
    }

    /// Another key of the same name.
    pub(crate) fn other_signer(name: &str) -> Signer {
        let (skey, _) = key_pair_from_seed(name, &[8; 32]).unwrap();
        Signer::new(&skey).unwrap()
    }

    /// An `h1:` hash made from `seed`.
    pub(crate) fn h1(seed: &str) -> String {
        format!("h1:{}", record_hash(seed.as_bytes()))
    }
}
