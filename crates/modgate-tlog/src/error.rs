//! The errors of this crate: [`TlogError`] for the log (hashes, proofs, tiles, records),
//! [`NoteError`] for signed notes and keys, and [`RemoteError`] for checking an upstream
//! checksum database's answers; each names what was wrong, as Go's messages do.

use crate::Tile;

/// An error of the log's logic: bad input, a failed proof, a missing or malformed piece.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    /// The arguments do not describe a possible question (e.g. record `n` of a tree of size
    /// `t ≤ n`).
    #[error("tlog: invalid inputs in {0}")]
    InvalidInput(&'static str),
    /// The proof does not prove the claim (Go: `invalid transparency proof`).
    #[error("invalid transparency proof")]
    ProofFailed,
    /// A [`HashReader`](crate::HashReader) does not have the stored hash at this index.
    #[error("tlog: stored hash {0} is not available")]
    MissingHash(u64),
    /// A [`HashReader`](crate::HashReader) answered with the wrong number of hashes.
    #[error("tlog: ReadHashes({want} indexes) = {got} hashes")]
    ShortRead {
        /// Hashes asked for.
        want: usize,
        /// Hashes returned.
        got: usize,
    },
    /// Not the base64 of a 32-byte hash.
    #[error("malformed hash")]
    MalformedHash,
    /// Not a tile coordinate path in canonical form.
    #[error("malformed tile path {0:?}")]
    MalformedTilePath(String),
    /// A tile outside the valid ranges, or data that does not fit it.
    #[error("invalid tile: {0}")]
    InvalidTile(String),
    /// Not a tree note (`go.sum database tree\n<N>\n<hash>\n`).
    #[error("malformed tree note")]
    MalformedTree,
    /// Record text that is not valid (control characters, blank lines, no final newline).
    #[error("malformed record data")]
    MalformedRecord,
}

/// An error of signed notes and their keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A verifier key that is not `<name>+<8 hex>+<base64(alg ‖ key)>`.
    #[error("malformed verifier id")]
    MalformedVerifierKey,
    /// A signer key that is not `PRIVATE+KEY+<name>+<8 hex>+<base64(alg ‖ seed)>`.
    #[error("malformed signer key")]
    MalformedSignerKey,
    /// A key whose algorithm byte is not Ed25519 (1).
    #[error("unknown key algorithm {0}")]
    UnknownAlgorithm(u8),
    /// A key whose 8-hex key id is not the hash of its name and public key.
    #[error("invalid key hash: the key id does not match the name and public key")]
    KeyHashMismatch,
    /// A server name that is empty or has a space or `+`.
    #[error("invalid key name {0:?}: it must be non-empty, without spaces or '+'")]
    InvalidName(String),
    /// Not a signed note (text, blank line, signature lines).
    #[error("malformed note")]
    MalformedNote,
    /// A known key's signature does not verify.
    #[error("invalid signature for key {name}+{hash:08x}")]
    InvalidSignature {
        /// The key's name.
        name: String,
        /// The key's id.
        hash: u32,
    },
    /// Two known verifiers have the same name and key id.
    #[error("ambiguous key {name}+{hash:08x}")]
    AmbiguousVerifier {
        /// The key's name.
        name: String,
        /// The key's id.
        hash: u32,
    },
    /// The note parsed but no known key signed it (Go: `note has no verifiable signatures`).
    #[error("note has no verifiable signatures (signed by: {signers})")]
    Unverified {
        /// The `name+keyid` of each signature found, comma-separated.
        signers: String,
    },
    /// The system's random number generator failed while making a key.
    #[error("cannot generate a key: the system random number generator failed")]
    Random,
    /// The tree head inside a verified note is malformed.
    #[error(transparent)]
    Tree(#[from] TlogError),
}

/// Why an upstream checksum database's answer (a `/lookup` body, its tiles, its record) was not
/// accepted ([`crate::remote`]). Each variant names the piece that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The `/lookup` body does not start with `<id>\n<record text>\n` (Go: `tlog.ParseRecord`).
    #[error("malformed lookup answer: {0}")]
    MalformedLookup(TlogError),
    /// The signed tree note of the answer does not verify with the database's key.
    #[error("lookup answer's tree note: {0}")]
    TreeNote(NoteError),
    /// The verified note is not a tree head (`go.sum database tree\n<N>\n<hash>\n`).
    #[error("lookup answer's tree note: {0}")]
    MalformedTree(TlogError),
    /// The record's id is not in the signed tree (Go: `cannot validate record`).
    #[error("cannot validate record {id} in tree of size {size}")]
    NotInTree {
        /// The record id.
        id: u64,
        /// The signed tree's size.
        size: u64,
    },
    /// A tile the proof needs was not given.
    #[error("tile {0} is missing")]
    MissingTile(Tile),
    /// A tile's data is not `W` hashes long.
    #[error("tile {tile} has {len} bytes, want {want}")]
    TileLength {
        /// The tile.
        tile: Tile,
        /// Bytes given.
        len: usize,
        /// Bytes a tile of its width has.
        want: usize,
    },
    /// The tiles holding the tree's top hashes do not hash to the signed tree hash (Go:
    /// `downloaded inconsistent tile`): at least one of them is forged or stale.
    #[error("downloaded inconsistent tile: the tiles do not hash to the signed tree hash")]
    TreeHashMismatch,
    /// A full tile does not hash to the entry its (already authenticated) parent tile lists
    /// (Go: `downloaded inconsistent tile`).
    #[error("downloaded inconsistent tile: {0} does not hash to its parent tile's entry")]
    TileMismatch(Tile),
    /// The authenticated leaf hash of the record id is not the hash of the record text (Go:
    /// `cannot authenticate record data in server response`).
    #[error("cannot authenticate record data in server response: record {id} is not this text")]
    RecordMismatch {
        /// The record id.
        id: u64,
    },
    /// The inclusion proof built from the tiles does not check against the signed tree.
    #[error("inclusion proof of record {id}: {source}")]
    Proof {
        /// The record id.
        id: u64,
        /// What the proof check said.
        source: TlogError,
    },
    /// A line of the record text is not `<path> <version>[/go.mod] <hash>`.
    #[error("malformed record line {0:?}")]
    MalformedLine(String),
    /// A line of the record text is for another module path or version than the one asked.
    #[error("record line {line:?} is not for {path} {version}")]
    WrongModule {
        /// The line.
        line: String,
        /// The path asked for.
        path: String,
        /// The version asked for.
        version: String,
    },
    /// The record text has no `h1:` line of this kind (`zip` or `go.mod`).
    #[error("record has no h1: {what} hash line")]
    MissingHash {
        /// `zip` or `go.mod`.
        what: &'static str,
    },
    /// The record text states two different `h1:` hashes of one kind.
    #[error("record states two h1: {what} hashes")]
    DuplicateHash {
        /// `zip` or `go.mod`.
        what: &'static str,
    },
    /// The tile plan is inconsistent (a bug here, as Go's `bad math in tileHashReader`).
    #[error("bad math in tile plan for record {id} in tree of size {size}")]
    BadMath {
        /// The record id.
        id: u64,
        /// The tree size.
        size: u64,
    },
}
