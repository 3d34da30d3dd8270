//! Hot hits: a fresh object of the memory tier answered without Pingora's cache phase. Its
//! response head is decoded once per stored meta (not per hit, as `CacheMeta::deserialize`
//! would) and kept prepared the way Pingora prepares a cache hit's head, so the proxy only adds
//! the `Age` and writes head and body.
//!
//! A hot hit is the same lookup as [`Storage::lookup`](pingora::cache::Storage::lookup)'s
//! memory step: a write in progress is preferred (so no hot hit then), the meta file on disk must
//! still be the one the copy came from (a purge by another process is noticed: checked when the
//! shared change generation moved), and the access is reported to the eviction manager with the
//! same weight.

use crate::disk::{lock, DiskCache};
use crate::miss::WriteState;
use bytes::Bytes;
use pingora::cache::eviction::CacheEntryKey;
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A stored meta, decoded for hot hits.
#[derive(Debug)]
pub struct HotMeta {
    /// The stored response head as Pingora serves a cache hit: HTTP/1.1, and
    /// `Transfer-Encoding: chunked` when there is no `Content-Length`. No `Age` yet.
    head: ResponseHeader,
    /// The same head without the original case of its header names (an HTTP/2 answer sends
    /// them in lower case anyway): one header map to copy per hit instead of two.
    head_h2: ResponseHeader,
    /// Fresh until then (inclusive, as `CacheMeta::is_fresh`).
    fresh_until: SystemTime,
    /// What the `Age` counts from (`CacheMeta::epoch`).
    epoch: SystemTime,
}

impl HotMeta {
    /// Decodes a serialized meta; `None` when it does not decode (the normal path then reports
    /// it).
    pub(crate) fn decode(internal: &[u8], header: &[u8]) -> Option<HotMeta> {
        let meta = CacheMeta::deserialize(internal, header).ok()?;
        Some(HotMeta::of(&meta))
    }

    /// From a decoded meta.
    pub fn of(meta: &CacheMeta) -> HotMeta {
        let mut head = meta.response_header_copy();
        head.set_version(http::Version::HTTP_11);
        // Pingora's cache_hit_header: a body without a length is sent chunked
        let no_body = matches!(head.status.as_u16(), 204 | 304);
        if !no_body
            && !head.status.is_informational()
            && head.headers.get(http::header::CONTENT_LENGTH).is_none()
        {
            // Pingora adds the Age before this header: a placeholder keeps that order (each hit
            // replaces its value in place). Header names and values that are always valid.
            if !head.headers.contains_key(http::header::AGE) {
                let _ = head.insert_header(http::header::AGE, "0");
            }
            let _ = head.insert_header(http::header::TRANSFER_ENCODING, "chunked");
        }
        HotMeta {
            head_h2: ResponseHeader::from(head.as_owned_parts()),
            head,
            fresh_until: meta.fresh_until(),
            epoch: meta.epoch(),
        }
    }

    /// Whether the object may be served without revalidation at `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.fresh_until >= now
    }

    /// The response head to send at `now`: the stored head with its `Age` (RFC 9111 §4, as
    /// Pingora adds it to every hit). `http2`: for an HTTP/2 answer (no header-name case kept).
    pub fn head(&self, now: SystemTime, http2: bool) -> Box<ResponseHeader> {
        let mut head = Box::new(if http2 {
            self.head_h2.clone()
        } else {
            self.head.clone()
        });
        let age = now.duration_since(self.epoch).unwrap_or_default();
        // a number is always a valid header value
        let _ = head.insert_header(http::header::AGE, age.as_secs());
        head
    }
}

/// A combined cache-key hash as 32 lowercase hex digits: the same text as Pingora's
/// `CacheHashKey::combined` (an object's name in the memory tier and on disk), without a
/// formatter call per byte.
pub fn hash_hex(bin: &HashBinary) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bin.len() * 2);
    for &b in bin {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A fresh object answered from memory.
#[derive(Debug, Clone)]
pub struct HotHit {
    meta: Arc<HotMeta>,
    /// The whole body.
    pub body: Bytes,
}

impl HotHit {
    /// The response head to send at `now` ([`HotMeta::head`]).
    pub fn head(&self, now: SystemTime, http2: bool) -> Box<ResponseHeader> {
        self.meta.head(now, http2)
    }
}

impl DiskCache {
    /// [`DiskCache::hot_hit`] for a request about to fetch `key` from upstream: when another
    /// request is writing that object right now, wait (at most `wait`) for its write to end and
    /// answer from what it committed, rather than fetching the object a second time. `None`:
    /// no such write, the write failed, took too long, or left nothing in memory.
    pub async fn hot_hit_after_write(&self, key: &CacheKey, wait: Duration) -> Option<HotHit> {
        let deadline = tokio::time::Instant::now() + wait;
        let compact = key.to_compact();
        let hash = hash_hex(&compact.combined_bin());
        // every turn either returns or waits for the write's state to change; bounded by the
        // deadline in any case
        for _ in 0..1000 {
            let Some(write) = self.readable_inflight(&hash) else {
                return self.hot_hit_hashed(&hash, compact, SystemTime::now());
            };
            let mut state = write.state.clone();
            drop(write);
            let ended = match tokio::time::timeout_at(
                deadline,
                state.wait_for(|s| !matches!(s, WriteState::Partial(_))),
            )
            .await
            {
                Ok(Ok(s)) => Some(*s),
                Ok(Err(_)) => None,    // the writer is gone: look again
                Err(_) => return None, // waited long enough
            };
            if ended == Some(WriteState::Failed) {
                return None;
            }
            // complete: the commit (rename, memory tier) follows at once
            tokio::time::sleep(Duration::from_millis(1)).await;
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
        None
    }

    /// A fresh object of the memory tier for `key` at `now`, with its access reported to the
    /// eviction manager; `None` sends the request down the normal path (a write in progress, not
    /// in memory, purged on disk, stale, or a meta that does not decode).
    pub fn hot_hit(&self, key: &CacheKey, now: SystemTime) -> Option<HotHit> {
        // The key is hashed once (`to_compact`); the compact key's hash is that same hash.
        let compact = key.to_compact();
        self.hot_hit_hashed(&hash_hex(&compact.combined_bin()), compact, now)
    }

    /// [`DiskCache::hot_hit`] with the key hashed (`hash` is [`hash_hex`] of the compact key's
    /// combined hash).
    fn hot_hit_hashed(
        &self,
        hash: &str,
        compact: CompactCacheKey,
        now: SystemTime,
    ) -> Option<HotHit> {
        if self.readable_inflight(hash).is_some() {
            return None;
        }
        let obj = lock(&self.mem).get(hash)?;
        if !self.still_current(hash, &obj) {
            lock(&self.mem).remove(hash);
            return None;
        }
        let meta = obj
            .decoded
            .get_or_init(|| HotMeta::decode(&obj.meta.0, &obj.meta.1).map(Arc::new))
            .clone()?;
        if !meta.is_fresh(now) {
            return None;
        }
        self.counters.hits_memory.fetch_add(1, Ordering::Relaxed);
        self.counters.hits_hot.fetch_add(1, Ordering::Relaxed);
        let entry = CacheEntryKey::key_only(compact);
        pingora::cache::eviction::EvictionManager::access(
            &self.eviction,
            &entry,
            obj.weight,
            meta.fresh_until,
        );
        Some(HotHit {
            meta,
            body: obj.body.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_hex_is_pingoras_combined() {
        for primary in [
            "",
            "route:a|/x/@v/v1.0.0.info",
            "sumdb:sum.golang.org|/latest",
        ] {
            let key = CacheKey::new(primary, "").to_compact();
            assert_eq!(hash_hex(&key.combined_bin()), key.combined());
        }
        assert_eq!(hash_hex(&[0x0f; 16]), "0f".repeat(16));
    }
}
