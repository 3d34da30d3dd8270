//! The in-memory index of the disk cache: every object the cache tracks, by combined key hash,
//! with its eviction weight, in LRU order. It is the cache's eviction manager (Pingora's
//! [`EvictionManager`]) and what the index snapshot saves and restores (see [`snapshot`]), so
//! `DiskCache::open` rebuilds it from one file instead of every object's files.
//!
//! Objects are keyed by the 16-byte combined hash that also names their files; a key's user tag
//! is not part of the file name, so it is not part of the index either. Evicted entries are
//! handed back to Pingora as `CacheEntryKey`s whose primary hash is that combined hash (no
//! variance, no tag): `DiskCache::purge` only uses `combined()`, which is that hash again.
//!
//! The map is a `BTreeMap` so the background reconciliation can walk one fan-out directory's
//! entries (a range of hashes) without a second copy of the keys; the LRU order is a doubly
//! linked list threaded through a slab of nodes. About 55 bytes per object.

pub(crate) mod snapshot;

use crate::disk::lock;
use async_trait::async_trait;
use pingora::cache::eviction::{CacheEntryKey, CacheEntryKeyRef, EvictionManager};
use pingora::cache::key::{CacheHashKey, CompactCacheKey};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// A combined cache key hash, big-endian (so numeric order is the order of its hex name).
pub(crate) type Hash = u128;

/// "No node".
const NIL: u32 = u32::MAX;

/// The combined hash of a key.
pub(crate) fn hash_of(key: &CompactCacheKey) -> Hash {
    Hash::from_be_bytes(key.combined_bin())
}

/// The hash named by a file name stem (32 lowercase hex digits), if it is one.
pub(crate) fn hash_of_hex(hex: &str) -> Option<Hash> {
    if !crate::format::is_hash_hex(hex) {
        return None;
    }
    Hash::from_str_radix(hex, 16).ok()
}

/// The hex name of a hash (what `CompactCacheKey::combined()` gives).
pub(crate) fn hex_of(hash: Hash) -> String {
    format!("{hash:032x}")
}

/// The key handed to Pingora for an evicted entry (its `combined()` is `hash`).
fn entry_key(hash: Hash) -> CacheEntryKey {
    CacheEntryKey::key_only(CompactCacheKey {
        primary: hash.to_be_bytes(),
        variance: None,
        user_tag: "".into(),
    })
}

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: Hash,
    weight: u64,
    /// Towards the least recently used end.
    prev: u32,
    /// Towards the most recently used end.
    next: u32,
}

/// Where a new entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Most recently used.
    Hot,
    /// Least recently used: evicted first.
    Cold,
}

/// Found on disk by the reconciliation, not yet in the index (placed when it ends, by age).
/// 32 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub hash: Hash,
    pub weight: u64,
    /// Modification time of the meta file, nanoseconds since the epoch; [`Pending::GONE`] once taken
    /// out again (removed from disk meanwhile, or tracked by then).
    pub mtime: i64,
}

impl Pending {
    /// The `mtime` of an entry taken out again.
    pub(crate) const GONE: i64 = i64::MIN;
}

/// The LRU list and its map. Not synchronized: [`LruIndex`] keeps it behind a mutex.
#[derive(Default)]
pub(crate) struct Lru {
    map: BTreeMap<Hash, u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Least recently used.
    head: u32,
    /// Most recently used.
    tail: u32,
    used: u64,
    /// Objects found by the reconciliation that the index did not track, sorted by hash.
    pending: Vec<Pending>,
}

impl Lru {
    /// An empty index.
    pub(crate) fn new() -> Lru {
        Lru {
            head: NIL,
            tail: NIL,
            ..Default::default()
        }
    }

    /// An index holding `entries` (hash, weight) in LRU order, least recently used first.
    /// `None` if a hash repeats.
    pub(crate) fn from_ordered(entries: impl ExactSizeIterator<Item = (Hash, u64)>) -> Option<Lru> {
        let n = entries.len();
        let n32 = u32::try_from(n).ok().filter(|n| *n < NIL)?;
        let mut nodes = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut used = 0u64;
        for (i, (hash, weight)) in entries.enumerate() {
            let i = i as u32;
            nodes.push(Node {
                hash,
                weight,
                prev: if i == 0 { NIL } else { i - 1 },
                next: if i + 1 == n32 { NIL } else { i + 1 },
            });
            keys.push((hash, i));
            used = used.saturating_add(weight);
        }
        keys.sort_unstable_by_key(|(h, _)| *h);
        if keys.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        let map: BTreeMap<Hash, u32> = keys.into_iter().collect();
        Some(Lru {
            map,
            nodes,
            free: Vec::new(),
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n32 - 1 },
            used,
            pending: Vec::new(),
        })
    }

    /// Entries.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Sum of the weights.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Every entry in LRU order, least recently used first.
    pub(crate) fn for_each_ordered(&self, mut f: impl FnMut(Hash, u64)) {
        let mut i = self.head;
        let mut left = self.map.len();
        while i != NIL && left > 0 {
            let n = &self.nodes[i as usize];
            f(n.hash, n.weight);
            i = n.next;
            left -= 1;
        }
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn link(&mut self, i: u32, place: Place) {
        match place {
            Place::Hot => {
                self.nodes[i as usize].prev = self.tail;
                self.nodes[i as usize].next = NIL;
                if self.tail == NIL {
                    self.head = i;
                } else {
                    self.nodes[self.tail as usize].next = i;
                }
                self.tail = i;
            }
            Place::Cold => {
                self.nodes[i as usize].prev = NIL;
                self.nodes[i as usize].next = self.head;
                if self.head == NIL {
                    self.tail = i;
                } else {
                    self.nodes[self.head as usize].prev = i;
                }
                self.head = i;
            }
        }
    }

    /// Insert or update `hash` with `weight`. A new entry goes to `place`; an existing one moves
    /// to the hot end if `place` is hot, else stays where it is. Returns the old weight.
    pub(crate) fn insert(&mut self, hash: Hash, weight: u64, place: Place) -> Option<u64> {
        self.drop_pending(hash);
        if let Some(&i) = self.map.get(&hash) {
            let old = self.nodes[i as usize].weight;
            self.nodes[i as usize].weight = weight;
            self.used = self.used.saturating_sub(old).saturating_add(weight);
            if place == Place::Hot {
                self.unlink(i);
                self.link(i, Place::Hot);
            }
            return Some(old);
        }
        let node = Node {
            hash,
            weight,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.map.insert(hash, i);
        self.link(i, place);
        self.used = self.used.saturating_add(weight);
        None
    }

    /// Mark as most recently used; false if absent.
    pub(crate) fn touch(&mut self, hash: Hash) -> bool {
        let Some(&i) = self.map.get(&hash) else {
            return false;
        };
        self.unlink(i);
        self.link(i, Place::Hot);
        true
    }

    /// The weight of `hash`, if tracked.
    pub(crate) fn weight(&self, hash: Hash) -> Option<u64> {
        self.map.get(&hash).map(|&i| self.nodes[i as usize].weight)
    }

    /// Set the weight of a tracked entry without moving it; false if absent.
    pub(crate) fn set_weight(&mut self, hash: Hash, weight: u64) -> bool {
        let Some(&i) = self.map.get(&hash) else {
            return false;
        };
        let old = std::mem::replace(&mut self.nodes[i as usize].weight, weight);
        self.used = self.used.saturating_sub(old).saturating_add(weight);
        true
    }

    /// Remove `hash` (also from the pending list); its weight if it was tracked.
    pub(crate) fn remove(&mut self, hash: Hash) -> Option<u64> {
        self.drop_pending(hash);
        let i = self.map.remove(&hash)?;
        self.unlink(i);
        let w = self.nodes[i as usize].weight;
        self.used = self.used.saturating_sub(w);
        self.free.push(i);
        Some(w)
    }

    /// Remove and return the least recently used entry.
    pub(crate) fn pop_lru(&mut self) -> Option<(Hash, u64)> {
        if self.head == NIL {
            return None;
        }
        let hash = self.nodes[self.head as usize].hash;
        self.remove(hash).map(|w| (hash, w))
    }

    /// The tracked entries of fan-out directory `prefix` (`objects/xx/yy`: hashes starting with
    /// those 16 bits), (hash, weight).
    pub(crate) fn dir_entries(&self, prefix: u32) -> Vec<(Hash, u64)> {
        self.entries_with_prefix(Hash::from(prefix), 16)
    }

    /// The tracked entries whose hash starts with the `bits` low bits of `prefix`.
    pub(crate) fn entries_with_prefix(&self, prefix: Hash, bits: u32) -> Vec<(Hash, u64)> {
        let lo = prefix << (128 - bits);
        let hi = lo | (Hash::MAX >> bits);
        self.map
            .range(lo..=hi)
            .map(|(&h, &i)| (h, self.nodes[i as usize].weight))
            .collect()
    }

    /// Record an object found on disk and not tracked (`hash` above every pending one so far).
    pub(crate) fn add_pending(&mut self, p: Pending) {
        if self.pending.last().is_some_and(|last| last.hash >= p.hash) {
            // out of order (cannot happen: directories are walked in order): keep it sorted
            let at = self.pending.partition_point(|q| q.hash < p.hash);
            if self.pending.get(at).is_some_and(|q| q.hash == p.hash) {
                self.pending[at] = p;
            } else {
                self.pending.insert(at, p);
            }
            return;
        }
        self.pending.push(p);
    }

    fn drop_pending(&mut self, hash: Hash) {
        if self.pending.is_empty() {
            return;
        }
        let at = self.pending.partition_point(|q| q.hash < hash);
        if let Some(p) = self.pending.get_mut(at).filter(|p| p.hash == hash) {
            p.mtime = Pending::GONE;
        }
    }

    /// Take the pending list (what is still pending).
    pub(crate) fn take_pending(&mut self) -> Vec<Pending> {
        let mut v = std::mem::take(&mut self.pending);
        v.retain(|p| p.mtime != Pending::GONE);
        v
    }
}

/// The index, shared: Pingora's eviction manager for the disk cache, with a size limit.
pub(crate) struct LruIndex {
    lru: Mutex<Lru>,
    limit: u64,
    evicted_size: AtomicU64,
    evicted_items: AtomicU64,
}

impl LruIndex {
    /// An index over `lru` evicting beyond `limit` bytes.
    pub(crate) fn new(lru: Lru, limit: u64) -> LruIndex {
        LruIndex {
            lru: Mutex::new(lru),
            limit,
            evicted_size: AtomicU64::new(0),
            evicted_items: AtomicU64::new(0),
        }
    }

    /// Run `f` on the locked index.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Lru) -> T) -> T {
        f(&mut lock(&self.lru))
    }

    /// Entries beyond the limit, least recently used first, taken out of the index.
    pub(crate) fn evict_hashes(&self) -> Vec<Hash> {
        let mut lru = lock(&self.lru);
        let mut out = Vec::new();
        while lru.used > self.limit {
            let Some((hash, w)) = lru.pop_lru() else {
                break;
            };
            self.evicted_size.fetch_add(w, Ordering::Relaxed);
            self.evicted_items.fetch_add(1, Ordering::Relaxed);
            out.push(hash);
        }
        out
    }

    fn evict(&self) -> Vec<CacheEntryKey> {
        self.evict_hashes().into_iter().map(entry_key).collect()
    }
}

fn weight_of(size: usize) -> u64 {
    u64::try_from(size).unwrap_or(u64::MAX)
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[async_trait]
impl EvictionManager for LruIndex {
    fn total_size(&self) -> usize {
        usize_of(lock(&self.lru).used)
    }

    fn total_items(&self) -> usize {
        lock(&self.lru).len()
    }

    fn evicted_size(&self) -> usize {
        usize_of(self.evicted_size.load(Ordering::Relaxed))
    }

    fn evicted_items(&self) -> usize {
        usize_of(self.evicted_items.load(Ordering::Relaxed))
    }

    fn admit(
        &self,
        item: CacheEntryKey,
        size: usize,
        _fresh_until: SystemTime,
    ) -> Vec<CacheEntryKey> {
        lock(&self.lru).insert(hash_of(item.key()), weight_of(size), Place::Hot);
        self.evict()
    }

    fn increment_weight(
        &self,
        item: &CacheEntryKey,
        delta: usize,
        max_weight: Option<usize>,
    ) -> Vec<CacheEntryKey> {
        let hash = hash_of(item.key());
        let delta = weight_of(delta);
        let max = max_weight.map(weight_of);
        {
            let mut lru = lock(&self.lru);
            match lru.weight(hash) {
                Some(w) => {
                    let grown = w.saturating_add(delta);
                    let new = max.map_or(grown, |m| grown.min(m).max(w));
                    lru.set_weight(hash, new);
                }
                None => {
                    let w = max.map_or(delta, |m| delta.min(m)).max(1);
                    lru.insert(hash, w, Place::Hot);
                }
            }
        }
        self.evict()
    }

    fn remove(&self, item: CacheEntryKeyRef<'_>) {
        lock(&self.lru).remove(hash_of(item.key()));
    }

    fn access(&self, item: &CacheEntryKey, size: usize, _fresh_until: SystemTime) -> bool {
        let hash = hash_of(item.key());
        let mut lru = lock(&self.lru);
        if lru.touch(hash) {
            true
        } else {
            lru.insert(hash, weight_of(size), Place::Hot);
            false
        }
    }

    fn peek(&self, item: &CacheEntryKey) -> bool {
        lock(&self.lru).weight(hash_of(item.key())).is_some()
    }

    async fn save(&self, dir_path: &str) -> pingora::Result<()> {
        let bytes = self.with(|lru| snapshot::encode(lru, SystemTime::now()));
        let dir = dir_path.to_string();
        tokio::task::spawn_blocking(move || snapshot::write(Path::new(&dir), &bytes, true))
            .await
            .map_err(|e| pingora::Error::explain(pingora::ErrorType::InternalError, e.to_string()))?
            .map_err(|e| pingora::Error::explain(pingora::ErrorType::InternalError, e.to_string()))
    }

    async fn load(&self, dir_path: &str) -> pingora::Result<()> {
        let path = Path::new(dir_path).join(snapshot::FILE);
        match snapshot::read(&path) {
            Ok(Some(s)) => {
                *lock(&self.lru) = s.lru;
                Ok(())
            }
            Ok(None) => Err(pingora::Error::explain(
                pingora::ErrorType::InternalError,
                format!("no {}", path.display()),
            )),
            Err(e) => Err(pingora::Error::explain(
                pingora::ErrorType::InternalError,
                e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> Hash {
        (Hash::from(i) << 112) | Hash::from(i)
    }

    fn order(lru: &Lru) -> Vec<(Hash, u64)> {
        let mut v = Vec::new();
        lru.for_each_ordered(|h, w| v.push((h, w)));
        v
    }

    #[test]
    fn lru_order_weights_and_removal() {
        let mut lru = Lru::new();
        for i in 0..4 {
            lru.insert(h(i), 10 + u64::from(i), Place::Hot);
        }
        assert!(lru.touch(h(0)));
        lru.insert(h(9), 1, Place::Cold);
        assert_eq!(
            order(&lru).iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![h(9), h(1), h(2), h(3), h(0)]
        );
        assert_eq!(lru.used(), 10 + 11 + 12 + 13 + 1);
        assert!(lru.set_weight(h(2), 100));
        assert_eq!(lru.used(), 10 + 11 + 100 + 13 + 1);
        assert_eq!(lru.pop_lru(), Some((h(9), 1)));
        assert_eq!(lru.remove(h(2)), Some(100));
        assert_eq!(lru.remove(h(2)), None);
        lru.insert(h(5), 5, Place::Hot); // reuses the freed slot
        assert_eq!(
            order(&lru),
            vec![(h(1), 11), (h(3), 13), (h(0), 10), (h(5), 5)]
        );
        assert_eq!(lru.len(), 4);
        assert_eq!(lru.used(), 39);
        assert_eq!(lru.dir_entries(3), vec![(h(3), 13)]);
        assert!(lru.dir_entries(7).is_empty());
        assert_eq!(
            lru.entries_with_prefix(0, 8).len(),
            4,
            "h(0), h(1), h(3), h(5)"
        );
    }

    #[test]
    fn from_ordered_keeps_the_order_and_rejects_repeats() {
        let entries = vec![(h(3), 1), (h(1), 2), (h(2), 3)];
        let lru = Lru::from_ordered(entries.clone().into_iter()).expect("builds");
        assert_eq!(order(&lru), entries);
        assert_eq!(lru.used(), 6);
        assert!(Lru::from_ordered(vec![(h(1), 1), (h(1), 2)].into_iter()).is_none());
        let empty = Lru::from_ordered(Vec::new().into_iter()).expect("empty");
        assert_eq!(empty.len(), 0);
    }

    #[test]
    fn pending_entries_are_dropped_when_their_hash_is_inserted_or_removed() {
        let mut lru = Lru::new();
        for i in [1, 2, 3] {
            lru.add_pending(Pending {
                hash: h(i),
                weight: 1,
                mtime: 0,
            });
        }
        lru.insert(h(1), 1, Place::Hot);
        lru.remove(h(3));
        let left: Vec<Hash> = lru.take_pending().iter().map(|p| p.hash).collect();
        assert_eq!(left, vec![h(2)]);
    }

    #[test]
    fn eviction_manager_evicts_least_recently_used_beyond_the_limit() {
        let idx = LruIndex::new(Lru::new(), 25);
        let key =
            |s: &str| CacheEntryKey::key_only(pingora::cache::CacheKey::new(s, "").to_compact());
        let now = SystemTime::now();
        assert!(idx.admit(key("a"), 10, now).is_empty());
        assert!(idx.admit(key("b"), 10, now).is_empty());
        assert!(idx.access(&key("a"), 10, now));
        let evicted = idx.admit(key("c"), 10, now);
        assert_eq!(evicted.len(), 1);
        // the evicted key names the same files as the original one
        assert_eq!(evicted[0].key().combined(), key("b").key().combined());
        assert!(!idx.peek(&key("b")));
        assert_eq!((idx.total_items(), idx.total_size()), (2, 20));
        assert_eq!((idx.evicted_items(), idx.evicted_size()), (1, 10));
        idx.remove(CacheEntryKeyRef::KeyOnly(key("a").key()));
        assert_eq!(idx.total_items(), 1);
    }
}
