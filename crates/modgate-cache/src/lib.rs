//! A persistent disk [`Storage`](pingora::cache::Storage) for pingora-cache 0.9.1, with a small
//! in-memory tier for small objects and an LRU size budget whose state survives restarts.
//!
//! * **Crash safety.** A body streams into a temp file next to its final place; `finish` fsyncs
//!   it, renames it, then writes the meta file (temp, fsync, rename: the commit point) and fsyncs
//!   the directory. A lookup validates the meta checksum, the key, the body length and the body
//!   CRC-32 (before the first hit in this process for bodies up to 1 MiB by default, else while
//!   streaming: a mismatch fails the read that would complete the body);
//!   anything invalid is logged, deleted and reported as a miss. The reconciliation after
//!   opening the cache deletes temp files, incomplete objects and orphan bodies. See
//!   [`format`](mod@format) for the layout.
//! * **A full filesystem.** A write starts only if the object's length (when known) plus
//!   `min_free_bytes` fits in the free space less what writes in progress were promised
//!   ([`DiskCache::check_space`]); a refusal is a storage error before any byte, on which
//!   Pingora passes the answer through uncached. If the filesystem still fills up mid-write, the
//!   write is given up and the rest of the body is held in memory for its readers (bounded by
//!   `max_spill_bytes`). Such failures are counted ([`CacheStats::write_failures_no_space`]) and
//!   logged, at most one line every 10 s.
//! * **Streaming.** Hits are read in chunks of at most 64 KiB (configurable), so memory stays
//!   flat for any body size; single and multipart ranges seek. Writes in progress can be streamed
//!   by other readers (Pingora's streaming partial writes), like `MemCache` does.
//! * **Memory tier.** Bodies up to 2 MiB are also kept in a byte-budgeted LRU map, those above
//!   256 KiB within half of its budget (so zips never push small answers out). A fresh
//!   object there can be answered as a hot hit ([`DiskCache::hot_hit`]): head decoded once,
//!   no Pingora cache phase.
//! * **Budget and start-up.** The cache's index (every object's key hash and weight in LRU
//!   order) is Pingora's eviction manager ([`DiskCache::eviction_manager`]) and evicts beyond
//!   `max_disk_bytes`. It is saved as a snapshot in the cache root ([`DiskCache::save_state`],
//!   [`PersistService`]); [`DiskCache::open`] restores it from there without touching the object
//!   files, and a background reconciliation brings index and gauges in line with what is on
//!   disk (objects written after the snapshot, files gone, debris of a crash;
//!   [`DiskCache::wait_reconciled`]). Lookups always read the disk, so they are right meanwhile.
//! * **Administration.** [`DiskCache::list_objects`], [`DiskCache::purge_where`] (by primary
//!   key text, which the meta file records) and [`DiskCache::stats`].
//!
//! # Wiring into a `ProxyHttp`
//!
//! ```ignore
//! static CACHE: OnceLock<&'static DiskCache> = OnceLock::new();      // DiskCache::open(..) at start-up
//! static LOCK: LazyLock<Box<CacheKeyLockImpl>> =
//!     LazyLock::new(|| CacheLock::new_boxed(Duration::from_secs(30)));
//!
//! fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
//!     if !cacheable_route(session, ctx) { return Ok(()); }
//!     let cache = *CACHE.get().unwrap();
//!     session.cache.enable(cache, Some(cache.eviction_manager()), None, Some(LOCK.as_ref()), None);
//!     session.cache.set_max_file_size_bytes(cache.max_object_bytes());
//!     Ok(())
//! }
//! fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
//!     // the primary key text is stored on disk and matched by `purge_where`
//!     Ok(CacheKey::new(format!("{}|{}", ctx.route, session.req_header().uri.path()), ""))
//! }
//! fn response_cache_filter(&self, _s: &Session, resp: &ResponseHeader, _c: &mut Ctx)
//!     -> Result<RespCacheable> {
//!     if resp.status != 200 { return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache)); }
//!     let now = SystemTime::now();
//!     Ok(RespCacheable::Cacheable(CacheMeta::new(now + ttl, now, 60, 3600, resp.clone())))
//! }
//! // and: server.add_service(background_service("cache state",
//! //          cache.persist_service(Duration::from_secs(300))));
//! ```

#![warn(missing_docs)]

mod config;
mod disk;
mod error;
pub mod format;
mod generation;
mod hit;
mod hot;
mod index;
mod memtier;
mod miss;
mod nowait;
mod persist;
mod reconcile;
mod storage;

pub use config::DiskCacheConfig;
pub use disk::{CacheStats, DiskCache, ObjectInfo, PurgeReport};
pub use error::CacheError;
pub use hit::{DiskHit, MemHit, PartialHit};
pub use hot::{hash_hex, HotHit, HotMeta};
pub use miss::DiskMissHandler;
pub use persist::PersistService;
