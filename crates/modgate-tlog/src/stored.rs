//! The stored-hash layout of `tlog` (Crosby and Wallach, §3.3): every hash of the tree — leaves
//! and the roots of completed subtrees — at one dense index, written in order as records are
//! appended. Appending record `n` writes [`stored_hashes`]`(n, …)` starting at
//! [`stored_hash_index`]`(0, n)`; a log of `n` records holds [`stored_hash_count`]`(n)` hashes.

use crate::{node_hash, record_hash, Hash, TlogError};

/// Reads stored hashes by their [`stored_hash_index`].
pub trait HashReader {
    /// The hashes at `indexes`, in that order, one per index; an error if any is missing.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError>;
}

/// A log's stored hashes held in memory, index `i` at position `i`.
impl HashReader for [Hash] {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|at| self.get(at))
                    .copied()
                    .ok_or(TlogError::MissingHash(i))
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        self.as_slice().read_hashes(indexes)
    }
}

/// Reads `indexes` from `r`, checking that it answered one hash per index.
pub(crate) fn read_exact<R: HashReader + ?Sized>(
    r: &R,
    indexes: &[u64],
) -> Result<Vec<Hash>, TlogError> {
    let hashes = r.read_hashes(indexes)?;
    if hashes.len() != indexes.len() {
        return Err(TlogError::ShortRead {
            want: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes)
}

/// `tlog.StoredHashIndex`: where the `n`th hash of `level` (level 0: the records) is stored.
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    // Level L's n'th hash is written right after level L+1's 2n+1'th hash: walk down to
    // level 0, whose n'th hash is at n + n/2 + n/4 + …, then add the levels back.
    let mut n = n;
    for _ in 0..level {
        n = n.wrapping_mul(2).wrapping_add(1);
    }
    let mut i = 0u64;
    while n > 0 {
        i = i.wrapping_add(n);
        n >>= 1;
    }
    i.wrapping_add(u64::from(level))
}

/// `tlog.SplitStoredHashIndex`: the `(level, n)` stored at `index`, the inverse of
/// [`stored_hash_index`].
pub fn split_stored_hash_index(index: u64) -> (u32, u64) {
    // stored_hash_index(0, n) < 2n, so the record n we want is in [index/2, index/2+log₂ index].
    let mut n = index / 2;
    let mut index_n = stored_hash_index(0, n);
    loop {
        // Each new record n adds 1 + trailing_zeros(n+1) hashes.
        let x = index_n
            .saturating_add(1)
            .saturating_add(u64::from(n.wrapping_add(1).trailing_zeros()));
        if x > index {
            break;
        }
        n += 1;
        index_n = x;
    }
    // The hash was written with record n: it is one of (0, n), (1, n/2), (2, n/4), …
    let level = (index - index_n) as u32;
    (level, n >> level)
}

/// `tlog.StoredHashCount`: how many hashes a log of `n` records stores.
pub fn stored_hash_count(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // The hashes up to the last leaf, and one per subtree that leaf completes.
    stored_hash_index(0, n - 1)
        .wrapping_add(1)
        .wrapping_add(u64::from((n - 1).trailing_ones()))
}

/// `tlog.StoredHashes`: the hashes to store, from [`stored_hash_index`]`(0, n)` on, when record
/// `n` with `data` is appended; reads up to log₂ n earlier hashes from `r`.
pub fn stored_hashes<R: HashReader + ?Sized>(
    n: u64,
    data: &[u8],
    r: &R,
) -> Result<Vec<Hash>, TlogError> {
    stored_hashes_for_record_hash(n, record_hash(data), r)
}

/// `tlog.StoredHashesForRecordHash`: [`stored_hashes`] given the record's hash.
pub fn stored_hashes_for_record_hash<R: HashReader + ?Sized>(
    n: u64,
    h: Hash,
    r: &R,
) -> Result<Vec<Hash>, TlogError> {
    // Each trailing 1 bit of n completes a subtree, consuming the hash of its left sibling.
    let m = (n.wrapping_add(1)).trailing_zeros();
    let indexes: Vec<u64> = (0..m)
        .rev()
        .map(|i| stored_hash_index(i, (n >> i) - 1))
        .collect();
    let old = read_exact(r, &indexes)?;
    let mut hashes = Vec::with_capacity(1 + m as usize);
    let mut h = h;
    hashes.push(h);
    for left in old.iter().rev() {
        h = node_hash(left, &h);
        hashes.push(h);
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_log::log_of;

    #[test]
    fn index_layout_matches_the_paper() {
        // Level 0: 0 1 3 4 7 8 10 11 15 …; level 1 follows its right child.
        let level0: Vec<u64> = (0..9).map(|n| stored_hash_index(0, n)).collect();
        assert_eq!(level0, [0, 1, 3, 4, 7, 8, 10, 11, 15]);
        assert_eq!(stored_hash_index(1, 0), 2);
        assert_eq!(stored_hash_index(2, 0), 6);
        assert_eq!(stored_hash_index(1, 1), 5);
    }

    #[test]
    fn split_inverts_index() {
        for index in 0..5000 {
            let (level, n) = split_stored_hash_index(index);
            assert_eq!(stored_hash_index(level, n), index, "index {index}");
        }
    }

    #[test]
    fn counts_match_what_appends_write() {
        for n in 0..600 {
            assert_eq!(log_of(n).len() as u64, stored_hash_count(n), "n={n}");
        }
    }

    #[test]
    fn a_missing_hash_is_an_error() {
        let empty: Vec<Hash> = Vec::new();
        // Record 1 completes a subtree with record 0, which is not stored.
        assert_eq!(
            stored_hashes(1, b"x\n", &empty),
            Err(TlogError::MissingHash(0))
        );
    }
}
