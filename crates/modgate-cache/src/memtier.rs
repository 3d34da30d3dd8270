//! The in-memory tier: a byte-budgeted LRU map from combined key hash to small complete objects
//! (body plus serialized meta), consulted before the disk.

use crate::hot::HotMeta;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

/// Pingora's serialized meta: (internal meta, response header).
pub(crate) type SerializedMeta = (Vec<u8>, Vec<u8>);

/// Fixed per-entry overhead charged against the budget (map slots, key, Arc).
const ENTRY_OVERHEAD: usize = 128;

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
}

/// The LRU map. Not synchronized: the cache keeps it behind a mutex.
pub(crate) struct MemTier {
    budget: usize,
    max_object: usize,
    slots: HashMap<String, Slot>,
    order: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
}

impl MemTier {
    /// An empty tier holding bodies up to `max_object` bytes within `budget` bytes in total.
    pub(crate) fn new(budget: usize, max_object: usize) -> Self {
        MemTier {
            budget,
            max_object,
            slots: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
        }
    }

    /// Whether a body of `len` bytes may be kept in memory.
    pub(crate) fn accepts(&self, len: u64) -> bool {
        self.budget > 0 && len <= self.max_object as u64
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Look up and mark as most recently used.
    pub(crate) fn get(&mut self, hash: &str) -> Option<Arc<MemObject>> {
        let tick = self.next_tick();
        let slot = self.slots.get_mut(hash)?;
        self.order.remove(&slot.tick);
        slot.tick = tick;
        self.order.insert(tick, hash.to_string());
        Some(slot.obj.clone())
    }

    /// Insert or replace, then evict least recently used entries beyond the budget.
    pub(crate) fn insert(&mut self, hash: &str, obj: MemObject) {
        self.remove(hash);
        if !self.accepts(obj.body.len() as u64) {
            return;
        }
        let cost = obj.cost();
        let tick = self.next_tick();
        self.order.insert(tick, hash.to_string());
        self.slots.insert(
            hash.to_string(),
            Slot {
                obj: Arc::new(obj),
                tick,
                cost,
            },
        );
        self.bytes += cost;
        while self.bytes > self.budget {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some(slot) = self.slots.remove(&victim) {
                self.bytes -= slot.cost;
            }
        }
    }

    /// Drop an entry; returns whether there was one.
    pub(crate) fn remove(&mut self, hash: &str) -> bool {
        match self.slots.remove(hash) {
            Some(slot) => {
                self.order.remove(&slot.tick);
                self.bytes -= slot.cost;
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
        assert!(t.remove("a"));
        assert_eq!(t.usage(), (2, cost * 2));
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
