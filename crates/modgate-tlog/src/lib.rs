//! Go's checksum-database log, as pure logic: the formats of `golang.org/x/mod/sumdb/tlog` and
//! `golang.org/x/mod/sumdb/note`, byte for byte, so that a log kept by modgate is one the stock
//! `go` command verifies (`GOSUMDB="<name>+<key id>+<key>"`). No I/O: storage, HTTP and
//! batching belong to the caller (the gateway); this crate computes and checks.
//!
//! * [`hash`] — [`Hash`](struct@Hash), RFC 6962 [`record_hash`] (`SHA-256(0x00 ‖ data)`) and [`node_hash`]
//!   (`SHA-256(0x01 ‖ left ‖ right)`).
//! * [`stored`] — the stored-hash layout ([`stored_hash_index`], [`stored_hashes`]): the hashes
//!   a log writes when it appends record `n`, and the [`HashReader`] that reads them back.
//! * [`proof`] — [`tree_hash`], inclusion proofs ([`prove_record`] / [`check_record`]) and
//!   consistency proofs ([`prove_tree`] / [`check_tree`]).
//! * [`tile`] — [`Tile`] coordinates and paths (`tile/8/0/x001/234.p/5`, `tile/8/data/…`),
//!   hash-tile contents ([`read_tile_data`]), [`new_tiles`], [`hash_from_tile`].
//! * [`record`] — the texts: a module version's record (`path version h1:…` lines), the
//!   `lookup` and data-tile framing ([`format_record`]), the tree head ([`format_tree`]).
//! * [`remote`] — checking an upstream checksum database's `/lookup` answer as Go's
//!   `sumdb.Client` does: [`parse_lookup`], the tiles to fetch ([`tiles_for_inclusion`]),
//!   [`verify_inclusion`] against the signed tree, and the record's [`record_hashes`].
//! * [`note`] — Ed25519 signed notes: keys ([`generate_key`], [`Signer`], [`Verifier`]),
//!   [`sign`](note::sign) and [`open`](note::open), and the signed tree head helpers.
//!
//! Sizes and indexes are `u64` where Go uses `int64` (they are never negative there either).
//! The oracle tests (`tests/oracle.rs`) compare every output with Go's own packages.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod b64;
pub mod error;
pub mod hash;
pub mod note;
pub mod proof;
pub mod record;
pub mod remote;
pub mod stored;
pub mod tile;

pub use error::{NoteError, RemoteError, TlogError};
pub use hash::{node_hash, record_hash, Hash, EMPTY_TREE_HASH, HASH_SIZE};
pub use note::{generate_key, Note, Signature, Signer, Verifier};
pub use proof::{check_record, check_tree, prove_record, prove_tree, tree_hash};
pub use proof::{RecordProof, TreeProof};
pub use record::{format_record, format_tree, gosum_record, parse_record, parse_tree, Tree};
pub use remote::{
    parse_lookup, record_hashes, tiles_for_inclusion, verify_inclusion, LookupAnswer,
};
pub use stored::{
    split_stored_hash_index, stored_hash_count, stored_hash_index, stored_hashes,
    stored_hashes_for_record_hash, HashReader,
};
pub use tile::{hash_from_tile, new_tiles, read_tile_data, tile_for_index, Tile, TILE_HEIGHT};

/// A small in-memory log for the unit tests.
#[cfg(test)]
pub(crate) mod test_log {
    use crate::{stored_hashes, Hash};

    /// The text of record `i` in test logs.
    pub(crate) fn record(i: u64) -> Vec<u8> {
        format!("example.com/m{i} v1.0.0 h1:x\n").into_bytes()
    }

    /// A log of `n` records [`record`]`(0..n)`, as stored hashes.
    pub(crate) fn log_of(n: u64) -> Vec<Hash> {
        let mut hashes = Vec::new();
        for i in 0..n {
            let new = stored_hashes(i, &record(i), &hashes).expect("stored hashes");
            hashes.extend(new);
        }
        hashes
    }
}
