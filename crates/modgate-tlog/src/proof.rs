//! Tree hashes and proofs over stored hashes (`tlog.TreeHash`, RFC 6962 §2.1): the root of the
//! tree of `n` records, the inclusion proof that a tree contains a record
//! ([`prove_record`] / [`check_record`], RFC 6962's "Merkle audit path") and the consistency
//! proof that a tree extends an older one ([`prove_tree`] / [`check_tree`]).
//!
//! Each `prove_*` first lists the stored-hash indexes it needs, reads them in one call, then
//! folds them, exactly as Go does, so the proofs are the same bytes as Go's.

use crate::stored::read_exact;
use crate::{node_hash, stored_hash_index, Hash, HashReader, TlogError, EMPTY_TREE_HASH};

/// An inclusion proof: the hashes of the paths not taken, leaf to root.
pub type RecordProof = Vec<Hash>;

/// A consistency proof between a tree and an older prefix of it.
pub type TreeProof = Vec<Hash>;

/// The largest tree size (Go's sizes are `int64`); larger sizes are refused as invalid input.
pub const MAX_TREE_SIZE: u64 = i64::MAX as u64;

/// `maxpow2`: the largest power of two `k` smaller than `n` (1 for `n ≤ 2`), with log₂ k.
fn maxpow2(n: u64) -> (u64, u32) {
    let mut l = 0u32;
    while l + 1 < 64 && (1u64 << (l + 1)) < n {
        l += 1;
    }
    (1u64 << l, l)
}

/// `subTreeIndex`: appends the stored-hash indexes needed for the hash of records `[lo, hi)`.
pub(crate) fn sub_tree_index(mut lo: u64, hi: u64, need: &mut Vec<u64>) {
    while lo < hi {
        let (k, level) = maxpow2(hi - lo + 1);
        need.push(stored_hash_index(level, lo >> level));
        lo += k;
    }
}

/// `subTreeHash`: the hash of records `[lo, hi)` from the hashes [`sub_tree_index`] listed;
/// returns the hashes left over.
fn sub_tree_hash(mut lo: u64, hi: u64, hashes: &[Hash]) -> (Hash, &[Hash]) {
    let mut num_tree = 0;
    while lo < hi {
        let (k, _) = maxpow2(hi - lo + 1);
        num_tree += 1;
        lo += k;
    }
    // The counts were checked against the index list, so the slice is long enough.
    let (mine, rest) = hashes.split_at(num_tree);
    let mut h = mine[num_tree - 1];
    for left in mine[..num_tree - 1].iter().rev() {
        h = node_hash(left, &h);
    }
    (h, rest)
}

/// `tlog.TreeHash`: the root hash of the tree of `n` records, reading at most 1 + log₂ n
/// stored hashes from `r` in one call.
pub fn tree_hash<R: HashReader + ?Sized>(n: u64, r: &R) -> Result<Hash, TlogError> {
    if n > MAX_TREE_SIZE {
        return Err(TlogError::InvalidInput("TreeHash"));
    }
    if n == 0 {
        return Ok(EMPTY_TREE_HASH);
    }
    let mut indexes = Vec::new();
    sub_tree_index(0, n, &mut indexes);
    let hashes = read_exact(r, &indexes)?;
    Ok(sub_tree_hash(0, n, &hashes).0)
}

/// `leafProofIndex`: the indexes for the proof that leaf `n` is in `[lo, hi)`.
fn leaf_proof_index(lo: u64, hi: u64, n: u64, need: &mut Vec<u64>) {
    if lo + 1 == hi {
        return;
    }
    let (k, _) = maxpow2(hi - lo);
    if n < lo + k {
        leaf_proof_index(lo, lo + k, n, need);
        sub_tree_index(lo + k, hi, need);
    } else {
        sub_tree_index(lo, lo + k, need);
        leaf_proof_index(lo + k, hi, n, need);
    }
}

/// `leafProof`: the proof that leaf `n` is in `[lo, hi)`, and the hashes left over.
fn leaf_proof(lo: u64, hi: u64, n: u64, hashes: &[Hash]) -> (RecordProof, &[Hash]) {
    if lo + 1 == hi {
        // The verifier knows the leaf hash.
        return (Vec::new(), hashes);
    }
    let (k, _) = maxpow2(hi - lo);
    let (mut p, th, rest) = if n < lo + k {
        let (p, hashes) = leaf_proof(lo, lo + k, n, hashes);
        let (th, hashes) = sub_tree_hash(lo + k, hi, hashes);
        (p, th, hashes)
    } else {
        let (th, hashes) = sub_tree_hash(lo, lo + k, hashes);
        let (p, hashes) = leaf_proof(lo + k, hi, n, hashes);
        (p, th, hashes)
    };
    p.push(th);
    (p, rest)
}

/// `tlog.ProveRecord`: the proof that the tree of size `t` contains record `n`.
pub fn prove_record<R: HashReader + ?Sized>(
    t: u64,
    n: u64,
    r: &R,
) -> Result<RecordProof, TlogError> {
    if n >= t || t > MAX_TREE_SIZE {
        return Err(TlogError::InvalidInput("ProveRecord"));
    }
    let mut indexes = Vec::new();
    leaf_proof_index(0, t, n, &mut indexes);
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = read_exact(r, &indexes)?;
    Ok(leaf_proof(0, t, n, &hashes).0)
}

/// `tlog.CheckRecord`: whether `p` proves that the tree of size `t` with hash `th` has record
/// `n` with hash `h`.
pub fn check_record(p: &[Hash], t: u64, th: &Hash, n: u64, h: &Hash) -> Result<(), TlogError> {
    if n >= t || t > MAX_TREE_SIZE {
        return Err(TlogError::InvalidInput("CheckRecord"));
    }
    if run_record_proof(p, 0, t, n, h)? == *th {
        Ok(())
    } else {
        Err(TlogError::ProofFailed)
    }
}

/// `runRecordProof`: the hash of `[lo, hi)` implied by proof `p` for leaf `n`.
fn run_record_proof(p: &[Hash], lo: u64, hi: u64, n: u64, leaf: &Hash) -> Result<Hash, TlogError> {
    if lo + 1 == hi {
        // The proof must not have any unnecessary hashes.
        return if p.is_empty() {
            Ok(*leaf)
        } else {
            Err(TlogError::ProofFailed)
        };
    }
    let Some((last, p)) = p.split_last() else {
        return Err(TlogError::ProofFailed);
    };
    let (k, _) = maxpow2(hi - lo);
    if n < lo + k {
        let th = run_record_proof(p, lo, lo + k, n, leaf)?;
        Ok(node_hash(&th, last))
    } else {
        let th = run_record_proof(p, lo + k, hi, n, leaf)?;
        Ok(node_hash(last, &th))
    }
}

/// `treeProofIndex`: the indexes for the sub-proof of `[lo, hi)` against the old size `n`.
fn tree_proof_index(lo: u64, hi: u64, n: u64, need: &mut Vec<u64>) {
    if n == hi {
        if lo != 0 {
            sub_tree_index(lo, hi, need);
        }
        return;
    }
    let (k, _) = maxpow2(hi - lo);
    if n <= lo + k {
        tree_proof_index(lo, lo + k, n, need);
        sub_tree_index(lo + k, hi, need);
    } else {
        sub_tree_index(lo, lo + k, need);
        tree_proof_index(lo + k, hi, n, need);
    }
}

/// `treeProof`: the sub-proof of `[lo, hi)` against the old size `n`, and the hashes left.
fn tree_proof(lo: u64, hi: u64, n: u64, hashes: &[Hash]) -> (TreeProof, &[Hash]) {
    if n == hi {
        if lo == 0 {
            // This subtree is the old tree: the verifier knows its hash.
            return (Vec::new(), hashes);
        }
        let (th, rest) = sub_tree_hash(lo, hi, hashes);
        return (vec![th], rest);
    }
    let (k, _) = maxpow2(hi - lo);
    let (mut p, th, rest) = if n <= lo + k {
        let (p, hashes) = tree_proof(lo, lo + k, n, hashes);
        let (th, hashes) = sub_tree_hash(lo + k, hi, hashes);
        (p, th, hashes)
    } else {
        let (th, hashes) = sub_tree_hash(lo, lo + k, hashes);
        let (p, hashes) = tree_proof(lo + k, hi, n, hashes);
        (p, th, hashes)
    };
    p.push(th);
    (p, rest)
}

/// `tlog.ProveTree`: the proof that the tree of size `t` contains the tree of size `n` as a
/// prefix (`1 ≤ n ≤ t`).
pub fn prove_tree<R: HashReader + ?Sized>(t: u64, n: u64, r: &R) -> Result<TreeProof, TlogError> {
    if n < 1 || n > t || t > MAX_TREE_SIZE {
        return Err(TlogError::InvalidInput("ProveTree"));
    }
    let mut indexes = Vec::new();
    tree_proof_index(0, t, n, &mut indexes);
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = read_exact(r, &indexes)?;
    Ok(tree_proof(0, t, n, &hashes).0)
}

/// `tlog.CheckTree`: whether `p` proves that the tree of size `t` with hash `th` contains the
/// tree of size `n` with hash `h` as a prefix.
pub fn check_tree(p: &[Hash], t: u64, th: &Hash, n: u64, h: &Hash) -> Result<(), TlogError> {
    if n < 1 || n > t || t > MAX_TREE_SIZE {
        return Err(TlogError::InvalidInput("CheckTree"));
    }
    let (h2, th2) = run_tree_proof(p, 0, t, n, h)?;
    if th2 == *th && h2 == *h {
        Ok(())
    } else {
        Err(TlogError::ProofFailed)
    }
}

/// `runTreeProof`: the hashes of `[lo, hi)` in the old and the new tree implied by `p`.
fn run_tree_proof(
    p: &[Hash],
    lo: u64,
    hi: u64,
    n: u64,
    old: &Hash,
) -> Result<(Hash, Hash), TlogError> {
    if n == hi {
        return match (lo, p) {
            (0, []) => Ok((*old, *old)),
            (0, _) => Err(TlogError::ProofFailed),
            (_, [h]) => Ok((*h, *h)),
            _ => Err(TlogError::ProofFailed),
        };
    }
    let Some((last, p)) = p.split_last() else {
        return Err(TlogError::ProofFailed);
    };
    let (k, _) = maxpow2(hi - lo);
    if n <= lo + k {
        let (oh, th) = run_tree_proof(p, lo, lo + k, n, old)?;
        Ok((oh, node_hash(&th, last)))
    } else {
        let (oh, th) = run_tree_proof(p, lo + k, hi, n, old)?;
        Ok((node_hash(last, &oh), node_hash(last, &th)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_hash;
    use crate::test_log::{log_of, record};

    /// The RFC 6962 root computed recursively from the leaves, independent of stored hashes.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_TREE_HASH,
            1 => leaves[0],
            len => {
                let (k, _) = maxpow2(len as u64);
                let k = k as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn tree_hash_is_the_rfc6962_root() {
        let log = log_of(70);
        let leaves: Vec<Hash> = (0..70).map(|i| record_hash(&record(i))).collect();
        for n in 0..=70u64 {
            assert_eq!(
                tree_hash(n, &log).unwrap(),
                reference_root(&leaves[..n as usize]),
                "n={n}"
            );
        }
    }

    #[test]
    fn every_record_proof_checks_and_a_wrong_one_fails() {
        let log = log_of(40);
        for t in 1..=40u64 {
            let th = tree_hash(t, &log).unwrap();
            for n in 0..t {
                let h = record_hash(&record(n));
                let p = prove_record(t, n, &log).unwrap();
                assert_eq!(check_record(&p, t, &th, n, &h), Ok(()), "t={t} n={n}");
                let other = record_hash(b"other\n");
                assert_eq!(
                    check_record(&p, t, &th, n, &other),
                    Err(TlogError::ProofFailed)
                );
                if let Some((_, shorter)) = p.split_last() {
                    assert_eq!(
                        check_record(shorter, t, &th, n, &h),
                        Err(TlogError::ProofFailed)
                    );
                }
            }
        }
        assert_eq!(
            prove_record(3, 3, &log),
            Err(TlogError::InvalidInput("ProveRecord"))
        );
    }

    #[test]
    fn every_tree_proof_checks_and_a_fork_fails() {
        let log = log_of(40);
        for t in 1..=40u64 {
            let th = tree_hash(t, &log).unwrap();
            for n in 1..=t {
                let h = tree_hash(n, &log).unwrap();
                let p = prove_tree(t, n, &log).unwrap();
                assert_eq!(check_tree(&p, t, &th, n, &h), Ok(()), "t={t} n={n}");
                let fork = record_hash(b"fork\n");
                assert_eq!(
                    check_tree(&p, t, &th, n, &fork),
                    Err(TlogError::ProofFailed),
                    "t={t} n={n}"
                );
            }
        }
        assert_eq!(
            prove_tree(3, 0, &log),
            Err(TlogError::InvalidInput("ProveTree"))
        );
        // Sizes beyond Go's int64 are refused, not overflowed.
        let h = record_hash(b"x");
        assert_eq!(
            check_tree(&[], u64::MAX, &h, 1, &h),
            Err(TlogError::InvalidInput("CheckTree"))
        );
        assert_eq!(
            check_record(&[], u64::MAX, &h, 0, &h),
            Err(TlogError::InvalidInput("CheckRecord"))
        );
        assert_eq!(
            tree_hash(u64::MAX, &log),
            Err(TlogError::InvalidInput("TreeHash"))
        );
    }
}
