//! The [`Storage`] implementation of [`DiskCache`]: lookups try a write in progress, then the
//! memory tier, then the disk (validating the object and treating anything invalid as a miss);
//! misses stream into a temp file; purge, expire and `update_meta` work on both tiers.

use crate::disk::{lock, DiskCache};
use crate::error::{to_pingora, CacheError};
use crate::hit::{DiskHit, MemHit, PartialHit};
use crate::memtier::{MemObject, SerializedMeta, LARGE_FROM};
use crate::miss::{DiskMissHandler, Inflight};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::eviction::CacheEntryKey;
use pingora::cache::key::{CacheHashKey, CompactCacheKey};
use pingora::cache::storage::{HitHandler, MissHandler, PurgeOutcome, PurgeTarget};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, PurgeType, Storage};
use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

/// Run blocking file work on Tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CacheError::Task(e.to_string()))?
}

/// The `Content-Length` a stored response promises, unless `Transfer-Encoding` overrides it.
fn content_length(meta: &CacheMeta) -> Option<u64> {
    let headers = meta.headers();
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn deserialize(meta: &SerializedMeta) -> Result<CacheMeta, CacheError> {
    CacheMeta::deserialize(&meta.0, &meta.1).map_err(|e| CacheError::Meta(e.to_string()))
}

type Found = Option<(CacheMeta, HitHandler)>;

/// How many verified bodies are remembered (emptied when full: they are verified again).
const VERIFIED_MAX: usize = 65_536;

impl DiskCache {
    /// A write in progress for `hash` that new readers may stream.
    pub(crate) fn readable_inflight(&self, hash: &str) -> Option<Arc<Inflight>> {
        lock(&self.inflight)
            .get(hash)?
            .iter()
            .find(|w| w.is_readable())
            .cloned()
    }

    /// A memory-tier hit, if the meta file on disk is still the one the copy came from.
    fn memory_lookup(&self, hash: &str) -> Option<(CacheMeta, HitHandler)> {
        let obj = lock(&self.mem).get(hash)?;
        let current = self.still_current(hash, &obj);
        let meta = match deserialize(&obj.meta) {
            Ok(meta) if current => meta,
            _ => {
                lock(&self.mem).remove(hash);
                return None;
            }
        };
        let hit = MemHit::new(obj.body.clone(), self.config.read_chunk_bytes, obj.weight);
        Some((meta, Box::new(hit)))
    }

    /// Leave to read a large body (above [`LARGE_FROM`]) whole into the memory tier, until the
    /// returned guard drops: one request at a time per body, and such reads together within the
    /// large half of the tier's budget. `None`: the hit streams from disk instead. So a burst
    /// of hits on zips not (yet, or no longer) in memory holds at most that half in copies,
    /// not one copy per request.
    pub(crate) fn large_load(&self, hash: &str, len: u64) -> Option<LargeLoad<'_>> {
        let budget = lock(&self.mem).large_budget() as u64;
        let mut loads = lock(&self.large_loads);
        if loads.hashes.contains(hash) || loads.bytes.saturating_add(len) > budget {
            return None;
        }
        loads.hashes.insert(hash.to_string());
        loads.bytes += len;
        Some(LargeLoad {
            cache: self,
            hash: hash.to_string(),
            len,
        })
    }

    /// Open, validate and (for small bodies) verify a committed object. Blocking.
    fn disk_lookup(&'static self, hash: &str, key: &CompactCacheKey) -> Result<Found, CacheError> {
        let committed = {
            let _guard = self.stripe(hash);
            match self.open_committed_locked(hash) {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(None),
                Err(e @ CacheError::Corrupt { .. }) => {
                    self.drop_corrupt_locked(hash, Some(key), &e);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        };
        let gen = committed.header.gen;
        let meta = match CacheMeta::deserialize(
            &committed.header.meta_internal,
            &committed.header.meta_header,
        ) {
            Ok(meta) => meta,
            Err(e) => {
                let err = CacheError::corrupt(self.meta_path(hash), e.to_string());
                self.drop_corrupt(hash, Some(gen), Some(key), &err);
                return Ok(None);
            }
        };
        let len = committed.header.body_len;
        let mut keep = lock(&self.mem).accepts(len);
        let _load = if keep && len > LARGE_FROM as u64 {
            let load = self.large_load(hash, len);
            keep = load.is_some();
            load
        } else {
            None
        };
        // A small body is verified whole before its first hit in this process; later hits of the
        // same generation are checksummed as they stream (a mismatch still fails the read that
        // would complete the body), instead of reading it twice.
        let verify = keep
            || (len <= self.config.verify_before_serve_max_bytes
                && lock(&self.verified).get(hash) != Some(&gen));
        if verify {
            match self.verify_body(&committed, keep) {
                Ok(Some(body)) => {
                    let body = Bytes::from(body);
                    let weight = committed.weight();
                    self.remember(
                        hash,
                        MemObject::new(
                            (
                                committed.header.meta_internal.clone(),
                                committed.header.meta_header.clone(),
                            ),
                            body.clone(),
                            gen,
                            committed.meta_ino,
                            weight,
                        ),
                    );
                    self.counters.hits_memory.fetch_add(1, Ordering::Relaxed);
                    let hit = MemHit::new(body, self.config.read_chunk_bytes, weight);
                    return Ok(Some((meta, Box::new(hit))));
                }
                Ok(None) => {
                    let mut verified = lock(&self.verified);
                    if verified.len() >= VERIFIED_MAX {
                        verified.clear();
                    }
                    verified.insert(hash.to_string(), gen);
                }
                Err(e @ CacheError::Corrupt { .. }) => {
                    self.drop_corrupt(hash, Some(gen), Some(key), &e);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        self.counters.hits_disk.fetch_add(1, Ordering::Relaxed);
        let weight = committed.weight();
        let hit = DiskHit::new(
            self,
            hash.to_string(),
            key.clone(),
            gen,
            committed.body,
            len,
            committed.header.body_crc,
            verify,
            weight,
        );
        Ok(Some((meta, Box::new(hit))))
    }

    fn partial_hit(&self, w: Arc<Inflight>) -> pingora::Result<Found> {
        let meta = deserialize(&w.meta).map_err(to_pingora)?;
        self.counters.hits_partial.fetch_add(1, Ordering::Relaxed);
        let hit = PartialHit::new(w, self.config.read_chunk_bytes);
        Ok(Some((meta, Box::new(hit))))
    }
}

/// The large bodies being read whole into the memory tier, and their bytes.
#[derive(Debug, Default)]
pub(crate) struct LargeLoads {
    hashes: std::collections::HashSet<String>,
    bytes: u64,
}

/// One large body being read whole (see [`DiskCache::large_load`]); ends on drop.
pub(crate) struct LargeLoad<'a> {
    cache: &'a DiskCache,
    hash: String,
    len: u64,
}

impl Drop for LargeLoad<'_> {
    fn drop(&mut self) {
        let mut loads = lock(&self.cache.large_loads);
        loads.hashes.remove(&self.hash);
        loads.bytes = loads.bytes.saturating_sub(self.len);
    }
}

#[async_trait]
impl Storage for DiskCache {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> pingora::Result<Found> {
        let hash = key.combined();
        // like MemCache, prefer a write in progress: otherwise a refreshed asset would stay
        // invisible behind the expired one until it is fully written
        if let Some(w) = self.readable_inflight(&hash) {
            return self.partial_hit(w);
        }
        if let Some(found) = self.memory_lookup(&hash) {
            self.counters.hits_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(found));
        }
        let compact = key.to_compact();
        let hash2 = hash.clone();
        match blocking(move || self.disk_lookup(&hash2, &compact)).await {
            Ok(Some(found)) => Ok(Some(found)),
            Ok(None) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => {
                // an unreadable object is a miss: the origin can still answer
                log::warn!("disk cache: lookup of {hash} failed, treating as a miss: {e}");
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> pingora::Result<Found> {
        let Some(id) = streaming_write_tag
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes)
        else {
            return self.lookup(key, trace).await;
        };
        let hash = key.combined();
        let w = lock(&self.inflight)
            .get(&hash)
            .and_then(|list| list.iter().find(|w| w.id == id).cloned());
        match w {
            Some(w) => self.partial_hit(w),
            // never Ok(None) here: Pingora 0.9.1 panics on it
            None => Err(to_pingora(CacheError::WriteClosed(
                "no write in progress with this streaming tag",
            ))),
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> pingora::Result<MissHandler> {
        let expected_len = content_length(meta);
        if let Some(len) = expected_len {
            if len > self.config.max_object_bytes {
                return Err(to_pingora(CacheError::TooLarge {
                    size: len,
                    limit: self.config.max_object_bytes,
                }));
            }
        }
        let serialized = meta.serialize()?;
        let hash = key.combined();
        let compact = key.to_compact();
        let primary = key.primary_key().to_vec();
        let what = String::from_utf8_lossy(&primary).into_owned();
        let started = blocking(move || {
            DiskMissHandler::start(self, hash, compact, primary, serialized, expected_len)
        })
        .await;
        match started {
            Ok(handler) => Ok(Box::new(handler)),
            Err(e) => {
                // Pingora does not store the answer then, and sends it on from the upstream
                // (no body has been read from the cache yet).
                self.note_write_failure(
                    &what,
                    &e,
                    "answering from the upstream without storing it",
                );
                Err(to_pingora(e))
            }
        }
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> pingora::Result<PurgeOutcome> {
        // entries are identified by key only; an identified target is not ours
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        let hash = target.key().combined();
        let invalidation = matches!(purge_type, PurgeType::Invalidation);
        let (removed, doomed) = blocking(move || Ok(self.purge_hash(&hash, invalidation, false)))
            .await
            .map_err(to_pingora)?;
        if removed.meta {
            let counter = match purge_type {
                PurgeType::Eviction => &self.counters.evicted,
                PurgeType::Invalidation => &self.counters.purged,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if removed.meta || doomed {
            Ok(PurgeOutcome::Purged(None))
        } else {
            Ok(PurgeOutcome::NotFound)
        }
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> pingora::Result<PurgeOutcome> {
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        let hash = target.key().combined();
        let now = SystemTime::now();
        let done = blocking(move || {
            self.rewrite_meta(&hash, |header| {
                let mut meta = CacheMeta::deserialize(&header.meta_internal, &header.meta_header)
                    .map_err(|e| CacheError::Meta(e.to_string()))?;
                meta.expire_at(now);
                meta.serialize()
                    .map_err(|e| CacheError::Meta(e.to_string()))
            })
        })
        .await
        .map_err(to_pingora)?;
        Ok(match done {
            Some(()) => PurgeOutcome::Expired,
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> pingora::Result<bool> {
        let serialized = meta.serialize()?;
        let hash = key.combined();
        let done = blocking(move || self.rewrite_meta(&hash, move |_| Ok(serialized)))
            .await
            .map_err(to_pingora)?;
        Ok(done.is_some())
    }

    fn support_streaming_partial_write(&self) -> bool {
        self.config.streaming_partial_write
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiskCacheConfig;

    #[test]
    fn large_bodies_are_read_whole_by_one_request_at_a_time_within_half_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = DiskCacheConfig::new(dir.path());
        c.memory_budget_bytes = 8 << 20;
        let cache = DiskCache::open(c).expect("open");
        let mib = 1u64 << 20;
        let a = cache.large_load("a", mib).expect("first read of a");
        assert!(
            cache.large_load("a", mib).is_none(),
            "a second read of a streams"
        );
        let b = cache.large_load("b", 2 * mib).expect("b");
        assert!(
            cache.large_load("c", 2 * mib).is_none(),
            "past half the budget"
        );
        let c1 = cache.large_load("c", mib).expect("exactly half");
        drop(a);
        let a2 = cache
            .large_load("a", mib)
            .expect("a again once the first read ended");
        drop((a2, b, c1));
        let loads = lock(&cache.large_loads);
        assert!(loads.hashes.is_empty() && loads.bytes == 0, "{loads:?}");
    }
}
