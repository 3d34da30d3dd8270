//! The errors of this crate: [`TlogError`] for the log (hashes, proofs, tiles, records) and
//! [`NoteError`] for signed notes and keys; each names what was wrong, as Go's messages do.

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
