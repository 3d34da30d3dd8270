//! A bounded in-memory cache of full tiles. A full tile never changes once the tree has it (its
//! hashes or records are fixed forever), so a cached copy never needs invalidating; the cache
//! is bounded by bytes and drops the least recently used tiles when over budget.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use modgate_tlog::Tile;

/// What the cache has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TileCacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads of full tiles that went to the database.
    pub misses: u64,
    /// Tiles held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
}

#[derive(Default)]
struct Inner {
    tiles: HashMap<Tile, (Bytes, u64)>,
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

/// Full tiles by coordinate, at most `budget` bytes, the least recently used dropped first (a
/// full tile never changes once in a tree).
pub struct TileCache {
    inner: Mutex<Inner>,
    budget: usize,
}

impl TileCache {
    /// A cache holding at most `budget` bytes of tile data (0: no caching).
    pub fn new(budget: usize) -> TileCache {
        TileCache {
            inner: Mutex::new(Inner::default()),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The cache holds no invariant a panic could break halfway: keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached tile, counting a hit or a miss.
    pub fn get(&self, tile: &Tile) -> Option<Bytes> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let found = inner.tiles.get_mut(tile).map(|(data, used)| {
            *used = tick;
            data.clone()
        });
        if found.is_some() {
            inner.hits += 1;
        } else {
            inner.misses += 1;
        }
        found
    }

    /// Caches `data` for the full tile `tile`, evicting the least recently used tiles while over
    /// budget (a quarter at a time, so eviction is rare).
    pub fn put(&self, tile: Tile, data: Bytes) {
        if data.len() > self.budget / 4 || !tile.is_full() {
            return;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let len = data.len();
        if let Some((old, _)) = inner.tiles.insert(tile, (data, tick)) {
            inner.bytes -= old.len();
        }
        inner.bytes += len;
        if inner.bytes > self.budget {
            let mut by_age: Vec<(u64, Tile)> = inner
                .tiles
                .iter()
                .map(|(t, (_, used))| (*used, *t))
                .collect();
            by_age.sort_unstable();
            let target = self.budget - self.budget / 4;
            for (_, t) in by_age {
                if inner.bytes <= target {
                    break;
                }
                if let Some((old, _)) = inner.tiles.remove(&t) {
                    inner.bytes -= old.len();
                }
            }
        }
    }

    /// Counters and sizes now.
    pub fn stats(&self) -> TileCacheStats {
        let inner = self.lock();
        TileCacheStats {
            hits: inner.hits,
            misses: inner.misses,
            entries: inner.tiles.len() as u64,
            bytes: inner.bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(n: u64) -> Tile {
        Tile {
            h: 8,
            l: 0,
            n,
            w: 256,
        }
    }

    #[test]
    fn keeps_recent_tiles_within_budget() {
        let cache = TileCache::new(4000);
        for n in 0..10 {
            cache.put(tile(n), Bytes::from(vec![n as u8; 500]));
            // Tile 0 stays hot.
            assert!(cache.get(&tile(0)).is_some(), "after {n}");
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 4000, "{stats:?}");
        assert!(cache.get(&tile(9)).is_some());
        assert!(
            cache.get(&tile(1)).is_none(),
            "the oldest cold tile is evicted"
        );
    }

    #[test]
    fn partial_and_oversized_tiles_are_not_cached() {
        let cache = TileCache::new(4000);
        let partial = Tile { w: 5, ..tile(0) };
        cache.put(partial, Bytes::from_static(b"x"));
        cache.put(tile(1), Bytes::from(vec![0; 2000]));
        assert!(cache.get(&partial).is_none());
        assert!(cache.get(&tile(1)).is_none());
        assert_eq!(cache.stats().misses, 2);
        let off = TileCache::new(0);
        off.put(tile(2), Bytes::from_static(b"x"));
        assert!(off.get(&tile(2)).is_none());
    }
}
