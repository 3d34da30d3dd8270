//! The in-memory tier: a byte-budgeted LRU map from combined key hash to small complete objects
//! (body plus serialized meta), consulted before the disk.
//!
//! Bodies above [`LARGE_FROM`] (zips, in practice) may take at most half of the budget between
//! them, and make room among themselves first: a job downloading many zips cycles through that
//! half instead of pushing the `.info` / `.mod` / `list` answers every build asks for out of
//! memory.

use crate::hot::HotMeta;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

/// Pingora's serialized meta: (internal meta, response header).
pub(crate) type SerializedMeta = (Vec<u8>, Vec<u8>);

/// Fixed per-entry overhead charged against the budget (map slots, key, Arc).
const ENTRY_OVERHEAD: usize = 128;

/// Bodies larger than this are "large": together they may take at most half the budget.
pub(crate) const LARGE_FROM: usize = 256 << 10;

/// A complete object held in memory.
#[derive(Debug)]
pub(crate) struct MemObject {
    /// Serialized meta as stored on disk.
    pub meta: SerializedMeta,
    /// The whole body.
    pub body: Bytes,
    /// Generation of the disk body this copy came from.
    pub gen: u64,
    /// Inode of the meta file this copy came from: a hit checks the meta file still has it, so a
    /// purge by another process (the CLI) is noticed.
    pub meta_ino: u64,
    /// Weight reported to the eviction manager (body plus meta file bytes).
    pub weight: usize,
    /// The meta decoded for hot hits, the first time one asks (`None` inside: undecodable).
    pub decoded: OnceLock<Option<Arc<HotMeta>>>,
    /// The shared change generation at which the meta file was last seen to be this copy's
    /// (see `DiskCache::still_current`).
    pub checked: AtomicU64,
}

impl MemObject {
    pub(crate) fn new(
        meta: SerializedMeta,
        body: Bytes,
        gen: u64,
        meta_ino: u64,
        weight: usize,
    ) -> MemObject {
        MemObject {
            meta,
            body,
            gen,
            meta_ino,
            weight,
            decoded: OnceLock::new(),
            checked: AtomicU64::new(crate::generation::UNCHECKED),
        }
    }

    fn cost(&self) -> usize {
        self.body.len() + self.meta.0.len() + self.meta.1.len() + ENTRY_OVERHEAD
    }
}

struct Slot {
    obj: Arc<MemObject>,
    tick: u64,
    cost: usize,
    large: bool,
}

/// The LRU map. Not synchronized: the cache keeps it behind a mutex.
pub(crate) struct MemTier {
    budget: usize,
    max_object: usize,
    slots: HashMap<String, Slot>,
    /// Every entry by last use.
    order: BTreeMap<u64, String>,
    /// The large entries by last use (also in `order`).
    large_order: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
    large_bytes: usize,
    /// Entries dropped to stay within the budget, since start.
    evicted: u64,
}

impl MemTier {
    /// An empty tier holding bodies up to `max_object` bytes within `budget` bytes in total.
    pub(crate) fn new(budget: usize, max_object: usize) -> Self {
        MemTier {
            budget,
            max_object,
            slots: HashMap::new(),
            order: BTreeMap::new(),
            large_order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            large_bytes: 0,
            evicted: 0,
        }
    }

    /// Whether a body of `len` bytes may be kept in memory.
    pub(crate) fn accepts(&self, len: u64) -> bool {
        self.budget > 0
            && len <= self.max_object as u64
            && (len <= LARGE_FROM as u64 || Self::large_fits(len, self.budget))
    }

    /// Whether a large body of `len` bytes fits in the half of `budget` large bodies share.
    fn large_fits(len: u64, budget: usize) -> bool {
        len.saturating_add(ENTRY_OVERHEAD as u64) <= (budget / 2) as u64
    }

    /// The budget bodies above [`LARGE_FROM`] share.
    pub(crate) fn large_budget(&self) -> usize {
        self.budget / 2
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Look up and mark as most recently used.
    pub(crate) fn get(&mut self, hash: &str) -> Option<Arc<MemObject>> {
        let tick = self.next_tick();
        let slot = self.slots.get_mut(hash)?;
        if let Some(key) = self.order.remove(&slot.tick) {
            if slot.large {
                self.large_order.remove(&slot.tick);
                self.large_order.insert(tick, key.clone());
            }
            self.order.insert(tick, key);
        }
        slot.tick = tick;
        Some(slot.obj.clone())
    }

    /// Insert or replace, then evict least recently used entries beyond the budget (large
    /// entries beyond their half first, among themselves).
    pub(crate) fn insert(&mut self, hash: &str, obj: MemObject) {
        self.remove(hash);
        if !self.accepts(obj.body.len() as u64) {
            return;
        }
        let large = obj.body.len() > LARGE_FROM;
        let cost = obj.cost();
        let tick = self.next_tick();
        self.order.insert(tick, hash.to_string());
        if large {
            self.large_order.insert(tick, hash.to_string());
            self.large_bytes += cost;
        }
        self.slots.insert(
            hash.to_string(),
            Slot {
                obj: Arc::new(obj),
                tick,
                cost,
                large,
            },
        );
        self.bytes += cost;
        // The entry just inserted is the most recent: it is never its own victim here (its
        // meta can take it slightly past the half, which the whole budget then bounds).
        while self.large_bytes > self.budget / 2 {
            let Some((_, victim)) = self.large_order.first_key_value() else {
                break;
            };
            if victim == hash {
                break;
            }
            let victim = victim.clone();
            if self.remove(&victim) {
                self.evicted += 1;
            } else {
                // not in the map (cannot happen): drop the stray order entry, never spin
                self.large_order.pop_first();
            }
        }
        while self.bytes > self.budget {
            let Some((_, victim)) = self.order.first_key_value() else {
                break;
            };
            let victim = victim.clone();
            if self.remove(&victim) {
                self.evicted += 1;
            } else {
                self.order.pop_first();
            }
        }
    }

    /// Drop an entry; returns whether there was one.
    pub(crate) fn remove(&mut self, hash: &str) -> bool {
        match self.slots.remove(hash) {
            Some(slot) => {
                self.order.remove(&slot.tick);
                self.bytes -= slot.cost;
                if slot.large {
                    self.large_order.remove(&slot.tick);
                    self.large_bytes -= slot.cost;
                }
                true
            }
            None => false,
        }
    }

    /// Replace the meta of an entry (after `update_meta`/`expire` rewrote the meta file).
    pub(crate) fn replace_meta(&mut self, hash: &str, meta: SerializedMeta, meta_ino: u64) {
        let Some(slot) = self.slots.get(hash) else {
            return;
        };
        let old = &slot.obj;
        // a new meta: decoded again by the next hot hit
        let obj = MemObject::new(meta, old.body.clone(), old.gen, meta_ino, old.weight);
        // re-inserting keeps the accounting exact; the entry becomes most recently used
        self.insert(hash, obj);
    }

    /// (entries, bytes charged).
    pub(crate) fn usage(&self) -> (usize, usize) {
        (self.slots.len(), self.bytes)
    }

    /// Entries evicted for the budget since start.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(len: usize) -> MemObject {
        MemObject::new(
            (vec![0; 10], vec![0; 10]),
            Bytes::from(vec![1; len]),
            1,
            1,
            len,
        )
    }

    #[test]
    fn lru_order_and_budget() {
        let cost = obj(100).cost();
        let mut t = MemTier::new(cost * 3, 1000);
        t.insert("a", obj(100));
        t.insert("b", obj(100));
        t.insert("c", obj(100));
        assert!(t.get("a").is_some()); // a is now most recent; b is the oldest
        t.insert("d", obj(100));
        assert!(t.get("b").is_none());
        assert!(t.get("a").is_some() && t.get("c").is_some() && t.get("d").is_some());
        assert_eq!(t.usage(), (3, cost * 3));
        assert_eq!(t.evicted(), 1, "b was evicted for the budget");
        assert!(t.remove("a"));
        assert_eq!(t.usage(), (2, cost * 2));
        assert_eq!(t.evicted(), 1, "a removal is not an eviction");
    }

    #[test]
    fn oversize_objects_are_not_kept() {
        let mut t = MemTier::new(10_000, 100);
        t.insert("a", obj(101));
        assert!(t.get("a").is_none());
        assert_eq!(t.usage(), (0, 0));
        let mut off = MemTier::new(0, 0);
        off.insert("a", obj(0));
        assert_eq!(off.usage(), (0, 0));
    }

    #[test]
    fn large_bodies_share_half_the_budget_and_make_room_among_themselves() {
        let small = obj(1000).cost();
        let large = obj(LARGE_FROM + 1).cost();
        // Room for four large bodies in all, two in their half.
        let mut t = MemTier::new(4 * large, LARGE_FROM * 2);
        t.insert("s1", obj(1000));
        t.insert("s2", obj(1000));
        t.insert("z1", obj(LARGE_FROM + 1));
        t.insert("z2", obj(LARGE_FROM + 1));
        assert!(t.get("z1").is_some()); // z2 is now the least recent large entry
        t.insert("z3", obj(LARGE_FROM + 1));
        assert!(
            t.get("z2").is_none(),
            "the least recent large entry goes first"
        );
        assert!(t.get("z1").is_some() && t.get("z3").is_some());
        // Ten more zips never push the small answers out.
        for i in 0..10 {
            t.insert(&format!("y{i}"), obj(LARGE_FROM + 1));
        }
        assert!(t.get("s1").is_some() && t.get("s2").is_some());
        assert_eq!(t.usage(), (4, 2 * small + 2 * large));
        assert!(t.large_bytes <= t.budget / 2);
        // A large body bigger than half the budget is not kept (and not accepted, so a disk
        // hit does not read it whole for nothing); a body at LARGE_FROM is small.
        let mut t = MemTier::new(2 * (LARGE_FROM + ENTRY_OVERHEAD) - 2, LARGE_FROM * 4);
        assert!(!t.accepts(LARGE_FROM as u64 + 1));
        t.insert("big", obj(LARGE_FROM + 1));
        assert!(t.get("big").is_none());
        t.insert("edge", obj(LARGE_FROM));
        assert!(t.get("edge").is_some());
        // One accepted large body is kept even when its meta takes it past the half.
        let mut t = MemTier::new(2 * (LARGE_FROM + 1 + ENTRY_OVERHEAD), LARGE_FROM * 2);
        assert!(t.accepts(LARGE_FROM as u64 + 1));
        t.insert("z", obj(LARGE_FROM + 1));
        assert!(t.get("z").is_some(), "kept: it does not evict itself");
        // Small entries evict large ones by age when the whole budget is full.
        let mut t = MemTier::new(2 * large + small, LARGE_FROM * 2);
        t.insert("z", obj(LARGE_FROM + 1));
        t.insert("s", obj(1000));
        for i in 0..(large / small + 1) {
            t.insert(&format!("s{i}"), obj(1000));
        }
        assert!(
            t.get("z").is_none(),
            "the oldest entry goes when the budget is full"
        );
        assert_eq!(t.large_bytes, 0);
        assert!(t.bytes <= t.budget);
    }

    #[test]
    fn replace_meta_keeps_body() {
        let mut t = MemTier::new(10_000, 1000);
        t.insert("a", obj(5));
        t.replace_meta("a", (vec![9], vec![8]), 7);
        let o = t.get("a").expect("still there");
        assert_eq!(o.meta, (vec![9], vec![8]));
        assert_eq!(o.meta_ino, 7);
        assert_eq!(o.body.len(), 5);
    }
}
