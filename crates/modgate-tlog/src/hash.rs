//! The log's hash (`tlog.Hash`) and RFC 6962 §2.1 hashing: a record's leaf hash is
//! `SHA-256(0x00 ‖ data)`, an interior node's `SHA-256(0x01 ‖ left ‖ right)`, and the empty
//! tree's the SHA-256 of nothing. Printed and parsed as standard base64, as Go does.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{b64, TlogError};

/// The size of a [`Hash`](struct@Hash) in bytes.
pub const HASH_SIZE: usize = 32;

/// A hash identifying a log record, a subtree or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_SIZE]);

/// The hash of the empty tree (RFC 6962 §2.1: the hash of the empty string).
pub const EMPTY_TREE_HASH: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

impl Hash {
    /// `tlog.ParseHash`: the standard base64 of exactly 32 bytes.
    pub fn parse(s: &str) -> Result<Hash, TlogError> {
        let data = b64::decode(s).ok_or(TlogError::MalformedHash)?;
        Self::from_slice(&data).ok_or(TlogError::MalformedHash)
    }

    /// The hash in `bytes` if it is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        Some(Hash(bytes.try_into().ok()?))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_SIZE] {
        &self.0
    }
}

/// Standard base64 (`tlog.Hash.String`).
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64::encode(&self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// `tlog.RecordHash`: the leaf hash of a record, `SHA-256(0x00 ‖ data)`.
pub fn record_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// `tlog.NodeHash`: the hash of an interior node, `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tree_hash_is_sha256_of_nothing() {
        assert_eq!(EMPTY_TREE_HASH.0, <[u8; 32]>::from(Sha256::digest(b"")));
    }

    #[test]
    fn rfc6962_leaf_and_node_prefixes() {
        // The leaf hash of the empty record is SHA-256(0x00) (RFC 6962 test vectors).
        assert_eq!(
            record_hash(b"").to_string(),
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="
        );
        let a = record_hash(b"a");
        let b = record_hash(b"b");
        let mut input = vec![1u8];
        input.extend_from_slice(&a.0);
        input.extend_from_slice(&b.0);
        assert_eq!(
            node_hash(&a, &b).0,
            <[u8; 32]>::from(Sha256::digest(&input))
        );
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn parse_round_trips_and_rejects_wrong_lengths() {
        let h = record_hash(b"x");
        assert_eq!(Hash::parse(&h.to_string()), Ok(h));
        assert_eq!(Hash::parse("YWI="), Err(TlogError::MalformedHash));
        assert_eq!(Hash::parse("not base64!"), Err(TlogError::MalformedHash));
    }
}
