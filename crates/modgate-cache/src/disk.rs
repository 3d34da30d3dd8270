//! [`DiskCache`]: opening (the index restored from its snapshot; the clean-up and the rest are
//! the background reconciliation's, see `reconcile`), the file-level operations shared by the
//! [`Storage`](pingora::cache::Storage) implementation, and the
//! administrative API (listing, purging by predicate, statistics, saving the index snapshot).

use crate::config::DiskCacheConfig;
use crate::error::CacheError;
use crate::format::{self, FileKind, ObjectHeader};
use crate::generation::{self, Generation};
use crate::index::{snapshot, Lru, LruIndex};
use crate::memtier::{MemObject, MemTier, SerializedMeta};
use crate::miss::Inflight;
use crate::reconcile::Reconciliation;
use pingora::cache::eviction::{CacheEntryKeyRef, EvictionManager};
use pingora::cache::key::{CacheHashKey, CompactCacheKey};
use pingora::cache::CacheMeta;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Number of lock stripes serializing commits, purges and meta rewrites per key hash.
const STRIPES: usize = 64;
/// Sub-directory of the root holding the objects.
const OBJECTS_DIR: &str = "objects";
/// Sub-directory of the root holding the eviction manager's saved state.
const EVICTION_DIR: &str = "eviction";
/// Fewer free inodes than this: the filesystem is taken as full (an object needs a temp file,
/// a body and a meta file, and a fan-out directory may be new).
const MIN_FREE_INODES: u64 = 16;
/// At most one write-failure warning per this interval.
const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether an object of `len` bytes (`None`: unknown, taken as 0) fits in `free` bytes of which
/// `reserved` are promised to writes in progress, keeping `min_free` free. `Err((needed,
/// available))` when it does not.
fn fits(free: u64, reserved: u64, len: Option<u64>, min_free: u64) -> Result<(), (u64, u64)> {
    let available = free.saturating_sub(reserved);
    let needed = len.unwrap_or(0).saturating_add(min_free);
    if needed > available || needed == u64::MAX {
        return Err((needed, available));
    }
    Ok(())
}

/// What `statvfs` says about a filesystem, in bytes and inodes available to unprivileged users.
struct FsStat {
    bytes_free: u64,
    files: u64,
    files_free: u64,
}

/// `statvfs(2)` of the filesystem holding `path`.
fn statvfs(path: &Path) -> Result<FsStat, CacheError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        CacheError::io(
            "statvfs",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })?;
    let st = rustix::fs::statvfs(c_path.as_c_str())
        .map_err(|e| CacheError::io("statvfs", path, io::Error::from(e)))?;
    let (bavail, frsize, files, favail) = (st.f_bavail, st.f_frsize, st.f_files, st.f_favail);
    Ok(FsStat {
        bytes_free: bavail.saturating_mul(frsize),
        files,
        files_free: favail,
    })
}

/// Lock a mutex, recovering the data if a panicking thread poisoned it (every critical section
/// here leaves the data consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn saturating_sub(counter: &AtomicU64, v: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        Some(c.saturating_sub(v))
    });
}

/// Event counters and the object/byte gauges.
#[derive(Default)]
pub(crate) struct Counters {
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
    pub hits_memory: AtomicU64,
    pub hits_hot: AtomicU64,
    pub hits_disk: AtomicU64,
    pub hits_partial: AtomicU64,
    pub misses: AtomicU64,
    pub writes_committed: AtomicU64,
    pub writes_abandoned: AtomicU64,
    pub corrupt_removed: AtomicU64,
    pub purged: AtomicU64,
    pub evicted: AtomicU64,
    pub write_failures_no_space: AtomicU64,
    pub write_failures_io: AtomicU64,
}

/// A snapshot of the cache's counters, see [`DiskCache::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Committed objects on disk.
    pub objects: u64,
    /// Bytes of committed objects on disk (bodies plus meta files).
    pub bytes: u64,
    /// Objects held by the memory tier.
    pub memory_objects: u64,
    /// Bytes charged to the memory tier.
    pub memory_bytes: u64,
    /// Lookups answered from memory (includes hits that populated the memory tier on this lookup).
    pub hits_memory: u64,
    /// Of those, hot hits ([`DiskCache::hot_hit`]): answered without Pingora's cache phase.
    pub hits_hot: u64,
    /// Lookups answered by streaming from a disk file.
    pub hits_disk: u64,
    /// Lookups answered from a write still in progress.
    pub hits_partial: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Writes committed to disk.
    pub writes_committed: u64,
    /// Writes dropped, failed or refused before commit.
    pub writes_abandoned: u64,
    /// Objects found invalid (torn, truncated, checksum) and deleted.
    pub corrupt_removed: u64,
    /// Objects removed by purges (Pingora invalidation, [`DiskCache::purge_where`]).
    pub purged: u64,
    /// Objects removed because the eviction manager chose them.
    pub evicted: u64,
    /// Objects not stored because the cache's filesystem had no room for them (refused before
    /// the first byte, or `ENOSPC` / `EDQUOT` while writing).
    pub write_failures_no_space: u64,
    /// Objects not stored because of another I/O error of the cache's filesystem.
    pub write_failures_io: u64,
    /// Bytes of the filesystem promised to writes in progress (their lengths, less what they
    /// have written).
    pub reserved_bytes: u64,
    /// Objects the memory tier dropped to stay within its budget (they stay on disk).
    pub memory_evicted: u64,
    /// Bytes tracked by the eviction manager.
    pub eviction_tracked_bytes: u64,
    /// Items tracked by the eviction manager.
    pub eviction_tracked_items: u64,
}

/// One stored object, as listed by [`DiskCache::list_objects`].
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Combined cache key hash (hex), the object's file name stem.
    pub hash: String,
    /// The primary key text given to `CacheKey::new` (lossily decoded as UTF-8).
    pub primary_key: String,
    /// The cache key's user tag.
    pub user_tag: String,
    /// Variance hash (hex) if the object is a variant.
    pub variance: Option<String>,
    /// Body length in bytes.
    pub body_bytes: u64,
    /// Bytes on disk (body plus meta file).
    pub disk_bytes: u64,
    /// HTTP status of the stored response, if its header could be decoded.
    pub status: Option<u16>,
    /// When the response was admitted, if the meta could be decoded.
    pub created: Option<SystemTime>,
    /// When the response stops being fresh, if the meta could be decoded.
    pub fresh_until: Option<SystemTime>,
}

/// Totals of a purge by [`DiskCache::purge_where`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Objects removed.
    pub objects: u64,
    /// Bytes removed (bodies plus meta files).
    pub bytes: u64,
}

/// A committed object opened for reading (under the stripe lock).
pub(crate) struct Committed {
    pub header: ObjectHeader,
    pub meta_ino: u64,
    pub meta_len: u64,
    pub body: File,
}

impl Committed {
    /// Eviction weight: body plus meta file.
    pub(crate) fn weight(&self) -> usize {
        usize::try_from(self.header.body_len.saturating_add(self.meta_len)).unwrap_or(usize::MAX)
    }
}

/// What removing the files of one object found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Removed {
    pub meta: bool,
    pub bytes: u64,
}

/// A persistent disk [`Storage`](pingora::cache::Storage) for pingora-cache with a small
/// in-memory tier and an LRU size budget whose state survives restarts.
///
/// Pingora wants `&'static (dyn Storage + Sync)`, so [`DiskCache::open`] leaks one instance:
/// open each cache root once per process and keep the reference.
pub struct DiskCache {
    pub(crate) config: DiskCacheConfig,
    pub(crate) objects: PathBuf,
    pub(crate) state_dir: PathBuf,
    /// The index: every tracked object's hash and weight in LRU order; Pingora's eviction
    /// manager for this cache.
    pub(crate) eviction: LruIndex,
    /// The background reconciliation of the index with the directory (see `reconcile`).
    pub(crate) recon: Reconciliation,
    pub(crate) mem: Mutex<MemTier>,
    pub(crate) inflight: Mutex<HashMap<String, Vec<Arc<Inflight>>>>,
    stripes: Vec<Mutex<()>>,
    /// Bodies (hash → generation) this process has verified whole before serving: later hits
    /// of the same generation are checked while they stream instead of read twice.
    pub(crate) verified: Mutex<HashMap<String, u64>>,
    /// Large bodies being read whole to enter the memory tier (see `DiskCache::large_load`).
    pub(crate) large_loads: Mutex<crate::storage::LargeLoads>,
    /// The change generation shared with the other processes using this directory.
    pub(crate) generation: Generation,
    next_gen: AtomicU64,
    pub(crate) counters: Counters,
    /// Bytes promised to writes in progress whose length is known, not yet written: taken off
    /// the filesystem's free space when deciding whether another object fits.
    reserved: AtomicU64,
    /// Serializes "does it fit?" with the reservation that follows.
    space: Mutex<()>,
    /// Bytes of bodies held in memory because the filesystem filled up during their write.
    pub(crate) spilled: AtomicU64,
    /// Rate limit of the write-failure warning: when it was last logged, and how many were
    /// not logged since.
    failure_log: Mutex<(Option<std::time::Instant>, u64)>,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("root", &self.config.root)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl DiskCache {
    /// Open (or create) the cache at `config.root` and leak it for the lifetime of the process,
    /// as Pingora's `session.cache.enable(..)` needs `&'static` storage and eviction manager.
    ///
    /// Restores the index (what is cached, its weights, the LRU order) from the snapshot the
    /// last [`DiskCache::save_state`] wrote, one sequential read, without touching the object
    /// files; then starts the reconciliation on a background thread (low CPU and I/O priority):
    /// it walks the object directories, deletes what an interrupted run left (temp files, torn
    /// objects, orphan bodies), adds objects the snapshot did not know, drops entries whose
    /// files are gone, corrects the byte and object gauges, evicts down to the budget and saves
    /// a fresh snapshot ([`DiskCache::wait_reconciled`]). Without a usable snapshot (none yet,
    /// truncated, corrupt) the index starts empty and the reconciliation fills it. Meanwhile
    /// every lookup reads the disk as always: an object the index does not know yet is found,
    /// and an entry whose files are gone is a clean miss.
    pub fn open(config: DiskCacheConfig) -> Result<&'static DiskCache, CacheError> {
        let t0 = std::time::Instant::now();
        let cache: &'static DiskCache = Box::leak(Box::new(Self::open_owned(config, true)?));
        let stats = cache.stats();
        log::info!(
            "disk cache {}: {} objects, {} bytes ({}, restored in {} ms; reconciling with the \
             directory in the background)",
            cache.config.root.display(),
            stats.objects,
            stats.bytes,
            if cache.recon.has_snapshot() {
                "index from its snapshot"
            } else {
                "no usable index snapshot"
            },
            t0.elapsed().as_millis()
        );
        crate::reconcile::start(cache);
        Ok(cache)
    }

    /// Open the cache at `config.root` to look at it and act on single objects (list, verify,
    /// purge) without the start-up work: nothing is removed at open (no temp files, which may be
    /// a running gateway's writes in progress, and no torn objects, which an inspection must
    /// report rather than silently drop), no index is loaded and nothing is reconciled.
    /// For `modgate cache verify` and `purge`, beside a running gateway. Leaked like
    /// [`DiskCache::open`].
    pub fn inspect(config: DiskCacheConfig) -> Result<&'static DiskCache, CacheError> {
        Ok(Box::leak(Box::new(Self::open_owned(config, false)?)))
    }

    pub(crate) fn open_owned(
        config: DiskCacheConfig,
        serve: bool,
    ) -> Result<DiskCache, CacheError> {
        config.validate()?;
        let started = SystemTime::now();
        let objects = config.root.join(OBJECTS_DIR);
        let state_dir = config.root.join(EVICTION_DIR);
        for dir in [&objects, &state_dir] {
            fs::create_dir_all(dir).map_err(|e| CacheError::io("create directory", dir, e))?;
        }
        if state_dir.to_str().is_none() {
            return Err(CacheError::Config("cache root must be valid UTF-8".into()));
        }

        let generation = Generation::open(&config.root);
        // An inspection neither cleans up nor loads anything.
        let (lru, snapshot_time) = if serve {
            remove_temp_files(&state_dir);
            load_snapshot(&state_dir)
        } else {
            (Lru::new(), None)
        };
        let counters = Counters::default();
        counters.objects.store(lru.len() as u64, Ordering::Relaxed);
        counters.bytes.store(lru.used(), Ordering::Relaxed);

        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let limit = u64::try_from(config.max_disk_bytes).unwrap_or(u64::MAX);
        Ok(DiskCache {
            eviction: LruIndex::new(lru, limit),
            recon: Reconciliation::new(started, snapshot_time, serve),
            mem: Mutex::new(MemTier::new(
                config.memory_budget_bytes,
                config.memory_object_max_bytes,
            )),
            inflight: Mutex::new(HashMap::new()),
            stripes,
            verified: Mutex::new(HashMap::new()),
            large_loads: Mutex::new(Default::default()),
            generation,
            next_gen: AtomicU64::new(seed),
            counters,
            reserved: AtomicU64::new(0),
            space: Mutex::new(()),
            spilled: AtomicU64::new(0),
            failure_log: Mutex::new((None, 0)),
            objects,
            state_dir,
            config,
        })
    }

    /// Add to the object and byte gauges for an object named `hash` (call under its stripe lock).
    pub(crate) fn gauge_add(&self, hash: &str, objects: u64, bytes: u64) {
        self.counters.objects.fetch_add(objects, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.recon.follow_add(hash, objects, bytes);
    }

    /// Take from the object and byte gauges for an object named `hash` (call under its stripe
    /// lock).
    pub(crate) fn gauge_sub(&self, hash: &str, objects: u64, bytes: u64) {
        saturating_sub(&self.counters.objects, objects);
        saturating_sub(&self.counters.bytes, bytes);
        self.recon.follow_sub(hash, objects, bytes);
    }

    /// Whether the background reconciliation started by [`DiskCache::open`] has ended (also
    /// true for a cache opened with [`DiskCache::inspect`], which has none).
    pub fn is_reconciled(&self) -> bool {
        self.recon.is_done()
    }

    /// Wait up to `timeout` for the background reconciliation to end; whether it has.
    pub fn wait_reconciled(&self, timeout: std::time::Duration) -> bool {
        self.recon.wait(timeout)
    }

    /// The LRU eviction manager to give Pingora with the storage:
    /// `session.cache.enable(cache, Some(cache.eviction_manager()), ..)`. Pingora admits every
    /// committed write into it and purges what it evicts; without it nothing is evicted.
    pub fn eviction_manager(&'static self) -> &'static (dyn EvictionManager + Sync) {
        &self.eviction
    }

    /// The configuration the cache was opened with.
    pub fn config(&self) -> &DiskCacheConfig {
        &self.config
    }

    /// Largest body that will be stored; give it to `session.cache.set_max_file_size_bytes`.
    pub fn max_object_bytes(&self) -> usize {
        usize::try_from(self.config.max_object_bytes).unwrap_or(usize::MAX)
    }

    /// Save the index snapshot (`<root>/eviction/index.snapshot`: every tracked object's hash and
    /// weight in LRU order, about 24 bytes per object) atomically: temp file, fsync, rename.
    /// Call it periodically and at shutdown (see [`DiskCache::persist_service`]); the index is
    /// locked only while it is encoded, the file is written on the blocking pool.
    pub async fn save_state(&'static self) -> Result<(), CacheError> {
        tokio::task::spawn_blocking(move || self.save_state_blocking())
            .await
            .map_err(|e| CacheError::Task(e.to_string()))?
    }

    /// [`DiskCache::save_state`] for code without a Tokio runtime (blocking).
    pub fn save_state_blocking(&self) -> Result<(), CacheError> {
        let bytes = self
            .eviction
            .with(|lru| snapshot::encode(lru, SystemTime::now()));
        snapshot::write(&self.state_dir, &bytes, self.config.fsync).map_err(|e| {
            CacheError::EvictionState {
                dir: self.state_dir.clone(),
                reason: e.to_string(),
            }
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let (memory_objects, memory_bytes, memory_evicted) = {
            let mem = lock(&self.mem);
            let (objects, bytes) = mem.usage();
            (objects, bytes, mem.evicted())
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            objects: get(&c.objects),
            bytes: get(&c.bytes),
            memory_objects: memory_objects as u64,
            memory_bytes: memory_bytes as u64,
            hits_memory: get(&c.hits_memory),
            hits_hot: get(&c.hits_hot),
            hits_disk: get(&c.hits_disk),
            hits_partial: get(&c.hits_partial),
            misses: get(&c.misses),
            writes_committed: get(&c.writes_committed),
            writes_abandoned: get(&c.writes_abandoned),
            corrupt_removed: get(&c.corrupt_removed),
            purged: get(&c.purged),
            evicted: get(&c.evicted),
            write_failures_no_space: get(&c.write_failures_no_space),
            write_failures_io: get(&c.write_failures_io),
            reserved_bytes: get(&self.reserved),
            memory_evicted,
            eviction_tracked_bytes: self.eviction.total_size() as u64,
            eviction_tracked_items: self.eviction.total_items() as u64,
        }
    }

    /// Bytes the filesystem holding the cache has free for new objects: what an unprivileged
    /// writer may still use (`statvfs`'s `f_bavail`), 0 when it has no free inodes left.
    pub fn free_bytes(&self) -> Result<u64, CacheError> {
        let stat = statvfs(&self.objects)?;
        if stat.files > 0 && stat.files_free < MIN_FREE_INODES {
            return Ok(0);
        }
        Ok(stat.bytes_free)
    }

    /// Whether a new object of `len` bytes (`None`: unknown) fits on the cache's filesystem,
    /// keeping `min_free_bytes` free and the bytes promised to writes in progress. Call it
    /// before storing an answer; a refusal is counted and logged (naming `what`, the object),
    /// and the answer should then go to the client without being stored.
    pub fn check_space(&self, what: &str, len: Option<u64>) -> Result<(), CacheError> {
        let _space = lock(&self.space);
        let result = self.fits_locked(len);
        if let Err(e) = &result {
            self.note_write_failure(what, e, "answering from the upstream without storing it");
        }
        result
    }

    fn fits_locked(&self, len: Option<u64>) -> Result<(), CacheError> {
        let free = self.free_bytes()?;
        let reserved = self.reserved.load(Ordering::Relaxed);
        fits(free, reserved, len, self.config.min_free_bytes).map_err(|(needed, available)| {
            CacheError::NoSpace {
                path: self.objects.clone(),
                needed,
                available,
            }
        })
    }

    /// [`DiskCache::check_space`] for a write about to start, reserving its length (if known)
    /// until [`DiskCache::release_space`]: the bytes reserved. Not counted or logged here.
    pub(crate) fn reserve_space(&self, len: Option<u64>) -> Result<u64, CacheError> {
        let _space = lock(&self.space);
        self.fits_locked(len)?;
        let n = len.unwrap_or(0);
        self.reserved.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    /// Give back `n` reserved bytes (written, or no longer needed).
    pub(crate) fn release_space(&self, n: u64) {
        saturating_sub(&self.reserved, n);
    }

    /// An object could not be stored because of the cache's filesystem (no space, an I/O error):
    /// counted, and logged naming the cache, the object and what happens to the request — at
    /// most one line every 10 s (with how many were not logged), so a full disk does not flood
    /// the log. Other failures (too large, a short body, a purge) are the object's and are not
    /// counted here.
    pub(crate) fn note_write_failure(&self, what: &str, e: &CacheError, consequence: &str) {
        if !e.is_storage_failure() {
            return;
        }
        let counter = if e.is_no_space() {
            &self.counters.write_failures_no_space
        } else {
            &self.counters.write_failures_io
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = std::time::Instant::now();
        let mut last = lock(&self.failure_log);
        if last
            .0
            .is_some_and(|t| now.duration_since(t) < FAILURE_LOG_EVERY)
        {
            last.1 += 1;
            return;
        }
        let more = std::mem::take(&mut last.1);
        last.0 = Some(now);
        drop(last);
        let more = if more > 0 {
            format!(" ({more} more such failure(s) not logged in the last 10 s)")
        } else {
            String::new()
        };
        log::warn!(
            "disk cache {}: not storing {what}: {e}; {consequence}{more}",
            self.config.root.display()
        );
    }

    /// Objects not stored for want of space, and for another I/O error of the filesystem, so
    /// far (without the locking of [`DiskCache::stats`]).
    pub fn write_failures(&self) -> (u64, u64) {
        let c = &self.counters;
        (
            c.write_failures_no_space.load(Ordering::Relaxed),
            c.write_failures_io.load(Ordering::Relaxed),
        )
    }

    /// Every committed object (reads each meta file; blocking, use `spawn_blocking` in async
    /// code). Unreadable meta files are skipped, not removed.
    pub fn list_objects(&self) -> Result<Vec<ObjectInfo>, CacheError> {
        let mut out = Vec::new();
        self.for_each_meta(|hash, path| {
            if let Some(info) = read_info(hash, path) {
                out.push(info);
            }
        })?;
        Ok(out)
    }

    /// Remove every object for which `pred` returns true, from disk, the memory tier and the
    /// eviction manager; writes in progress for those keys are not committed. For
    /// `modgate cache purge <module>[@version]`: match on [`ObjectInfo::primary_key`].
    ///
    /// Blocking (use `spawn_blocking` in async code). Run from another process (the CLI) while a
    /// gateway serves the same root, the objects disappear from disk and the gateway's memory
    /// tier notices on the next hit; its eviction manager forgets them when it next evicts.
    pub fn purge_where(
        &self,
        mut pred: impl FnMut(&ObjectInfo) -> bool,
    ) -> Result<PurgeReport, CacheError> {
        let mut victims = Vec::new();
        self.for_each_meta(|hash, path| {
            if let Some(info) = read_info(hash, path) {
                if pred(&info) {
                    victims.push(info);
                }
            }
        })?;
        let mut report = PurgeReport::default();
        for info in victims {
            let (removed, _) = self.purge_hash(&info.hash, true, true);
            if removed.meta {
                report.objects += 1;
                self.counters.purged.fetch_add(1, Ordering::Relaxed);
            }
            report.bytes += removed.bytes;
        }
        Ok(report)
    }

    /// Remove every object whose primary key starts with `prefix`.
    pub fn purge_prefix(&self, prefix: &str) -> Result<PurgeReport, CacheError> {
        self.purge_where(|o| o.primary_key.starts_with(prefix))
    }

    /// Remove one object (disk and memory). With `doom_writes`, writes in progress for the hash
    /// will not be committed; with `forget`, the eviction manager stops tracking the key (Pingora
    /// does that itself for the purges it issues). Returns what was removed and whether a write
    /// in progress was doomed. Blocking.
    pub(crate) fn purge_hash(
        &self,
        hash: &str,
        doom_writes: bool,
        forget: bool,
    ) -> (Removed, bool) {
        let _guard = self.stripe(hash);
        let doomed = doom_writes && self.doom_inflight(hash);
        let key = if forget {
            self.read_header_locked(hash).ok().flatten().map(|h| h.key)
        } else {
            None
        };
        let removed = self.remove_object_locked(hash);
        lock(&self.mem).remove(hash);
        if let Some(key) = key {
            self.eviction.remove(CacheEntryKeyRef::KeyOnly(&key));
        }
        (removed, doomed)
    }

    /// Mark writes in progress for `hash` as not to be committed; returns whether there were any.
    pub(crate) fn doom_inflight(&self, hash: &str) -> bool {
        let map = lock(&self.inflight);
        let Some(list) = map.get(hash) else {
            return false;
        };
        for w in list {
            w.doom();
        }
        !list.is_empty()
    }

    fn for_each_meta(&self, mut f: impl FnMut(&str, &Path)) -> Result<(), CacheError> {
        for dir in fanout_dirs(&self.objects)? {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if let Some(FileKind::Meta(hash)) = name.to_str().map(format::classify) {
                    f(&hash, &entry.path());
                }
            }
        }
        Ok(())
    }

    // ---- file-level helpers shared with the Storage implementation ----

    /// A fresh generation number for a write.
    pub(crate) fn next_gen(&self) -> u64 {
        self.next_gen.fetch_add(1, Ordering::Relaxed)
    }

    /// The lock serializing commits, purges and meta rewrites of `hash`.
    pub(crate) fn stripe(&self, hash: &str) -> MutexGuard<'_, ()> {
        let i = hash
            .get(..2)
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        lock(&self.stripes[i % STRIPES])
    }

    /// Every stripe lock, in order (nothing else holds two at once): no commit, purge or meta
    /// rewrite runs while they are held.
    pub(crate) fn all_stripes(&self) -> Vec<MutexGuard<'_, ()>> {
        self.stripes.iter().map(lock).collect()
    }

    /// Fan-out directory of `hash` (must be a hash from Pingora's key, 32 hex digits).
    pub(crate) fn dir_of(&self, hash: &str) -> PathBuf {
        format::object_dir(&self.objects, hash)
    }

    pub(crate) fn meta_path(&self, hash: &str) -> PathBuf {
        self.dir_of(hash).join(format::meta_name(hash))
    }

    /// Read and decode the meta file only. `Ok(None)`: no object.
    pub(crate) fn read_header_locked(
        &self,
        hash: &str,
    ) -> Result<Option<ObjectHeader>, CacheError> {
        let path = self.meta_path(hash);
        Ok(read_meta_file(&path)?.map(|(h, _, _)| h))
    }

    /// Open a committed object and check it is whole: decodable meta for this very hash, a body
    /// file of the recorded length. `Ok(None)`: no object. `Err(Corrupt)`: remove it.
    pub(crate) fn open_committed_locked(
        &self,
        hash: &str,
    ) -> Result<Option<Committed>, CacheError> {
        let meta_path = self.meta_path(hash);
        let Some((header, meta_len, meta_ino)) = read_meta_file(&meta_path)? else {
            return Ok(None);
        };
        if header.hash_hex() != hash {
            return Err(CacheError::corrupt(
                &meta_path,
                "meta belongs to another key",
            ));
        }
        let body_path = self.dir_of(hash).join(format::body_name(hash, header.gen));
        let body = match File::open(&body_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CacheError::corrupt(&body_path, "body file missing"))
            }
            Err(e) => return Err(CacheError::io("open", &body_path, e)),
        };
        let len = body
            .metadata()
            .map_err(|e| CacheError::io("stat", &body_path, e))?
            .len();
        if len != header.body_len {
            return Err(CacheError::corrupt(
                &body_path,
                format!("body has {len} bytes, meta says {}", header.body_len),
            ));
        }
        Ok(Some(Committed {
            header,
            meta_ino,
            meta_len,
            body,
        }))
    }

    /// Delete a committed object (meta and every body) and take its recorded weight off the
    /// gauges. Returns whether there was a meta file and the weight removed. Call under the
    /// stripe lock.
    pub(crate) fn remove_object_locked(&self, hash: &str) -> Removed {
        let recorded = read_meta_file(&self.meta_path(hash))
            .ok()
            .flatten()
            .map(|(h, meta_len, _)| h.body_len.saturating_add(meta_len));
        let mut removed = self.remove_files_locked(hash, None);
        if let Some(weight) = recorded {
            removed.bytes = weight; // what was counted at commit, even if a file changed since
        }
        self.gauge_sub(hash, u64::from(removed.meta), removed.bytes);
        removed
    }

    /// Delete the files of `hash`: with `keep_gen: None` the meta and every body, with
    /// `Some(gen)` only bodies of other generations. Temp files are left to their writers.
    /// Returns the bytes of the files removed; the gauges are left alone. Call under the stripe
    /// lock.
    pub(crate) fn remove_files_locked(&self, hash: &str, keep_gen: Option<u64>) -> Removed {
        let dir = self.dir_of(hash);
        let mut removed = Removed::default();
        let Ok(entries) = fs::read_dir(&dir) else {
            return removed;
        };
        let prefix = format!("{hash}.");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(&prefix) {
                continue;
            }
            let doomed = match format::classify(name) {
                FileKind::Meta(_) => keep_gen.is_none(),
                FileKind::Body(_, gen) => keep_gen != Some(gen),
                FileKind::Temp | FileKind::Other => false,
            };
            if !doomed {
                continue;
            }
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed.bytes += len;
                    if name.ends_with(".meta") {
                        removed.meta = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
        if removed.meta {
            self.generation.bump();
        }
        removed
    }

    /// Whether the meta file on disk is still the one `obj` was read from (a purge or a new
    /// write by another process replaces or deletes it): free while the shared change
    /// generation has not moved since the object was last seen, else one `statx`.
    pub(crate) fn still_current(&self, hash: &str, obj: &MemObject) -> bool {
        let g = self.generation.get();
        if g != generation::UNCHECKED && obj.checked.load(Ordering::Relaxed) == g {
            return true;
        }
        let on_disk = fs::metadata(self.meta_path(hash)).map(|m| m.ino()).ok();
        if on_disk != Some(obj.meta_ino) {
            return false;
        }
        if g != generation::UNCHECKED {
            obj.checked.store(g, Ordering::Relaxed);
        }
        true
    }

    /// An object failed validation: log, delete it if the meta still names generation `gen` (or
    /// is itself unreadable), drop it from memory and the eviction manager. Blocking.
    pub(crate) fn drop_corrupt(
        &self,
        hash: &str,
        gen: Option<u64>,
        key: Option<&CompactCacheKey>,
        err: &CacheError,
    ) {
        let _guard = self.stripe(hash);
        if let (Some(gen), Ok(Some(current))) = (gen, self.read_header_locked(hash)) {
            if current.gen != gen {
                return; // replaced meanwhile; the new object is not the corrupt one
            }
        }
        self.drop_corrupt_locked(hash, key, err);
    }

    /// [`DiskCache::drop_corrupt`] with the stripe lock held and the object known to be the bad
    /// one.
    pub(crate) fn drop_corrupt_locked(
        &self,
        hash: &str,
        key: Option<&CompactCacheKey>,
        err: &CacheError,
    ) {
        log::warn!("disk cache: removing invalid object {hash}: {err}");
        let removed = self.remove_object_locked(hash);
        lock(&self.mem).remove(hash);
        if let Some(key) = key {
            self.eviction.remove(CacheEntryKeyRef::KeyOnly(key));
        }
        if removed.meta || removed.bytes > 0 {
            self.counters
                .corrupt_removed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rewrite the meta of a committed object atomically, keeping its body. `edit` gets the
    /// current header and returns the new serialized meta; `Ok(None)`: no (valid) object.
    /// Updates the memory tier. Blocking.
    pub(crate) fn rewrite_meta(
        &self,
        hash: &str,
        edit: impl FnOnce(&ObjectHeader) -> Result<SerializedMeta, CacheError>,
    ) -> Result<Option<()>, CacheError> {
        let _guard = self.stripe(hash);
        let header = match self.open_committed_locked(hash) {
            Ok(Some(c)) => c.header,
            Ok(None) => return Ok(None),
            Err(e @ CacheError::Corrupt { .. }) => {
                self.drop_corrupt_locked(hash, None, &e);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let (meta_internal, meta_header) = edit(&header)?;
        let new = ObjectHeader {
            meta_internal,
            meta_header,
            ..header
        };
        let (ino, old_len, new_len) = self.write_meta_locked(hash, &new)?;
        self.gauge_add(hash, 0, new_len);
        self.gauge_sub(hash, 0, old_len.unwrap_or(0));
        lock(&self.mem).replace_meta(hash, (new.meta_internal, new.meta_header), ino);
        Ok(Some(()))
    }

    /// Write `h.meta` through a temp file: write, fsync, rename, fsync the directory. Returns the
    /// new meta's inode, the replaced meta's length (if any) and the new length.
    pub(crate) fn write_meta_locked(
        &self,
        hash: &str,
        header: &ObjectHeader,
    ) -> Result<(u64, Option<u64>, u64), CacheError> {
        let dir = self.dir_of(hash);
        let bytes = header.encode();
        let tmp = dir.join(format::meta_temp_name(hash, self.next_gen()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| CacheError::io("create", &tmp, e))?;
            f.write_all(&bytes)
                .map_err(|e| CacheError::io("write", &tmp, e))?;
            if self.config.fsync {
                f.sync_all().map_err(|e| CacheError::io("fsync", &tmp, e))?;
            }
            let ino = f
                .metadata()
                .map_err(|e| CacheError::io("stat", &tmp, e))?
                .ino();
            let final_path = dir.join(format::meta_name(hash));
            let old_len = fs::metadata(&final_path).ok().map(|m| m.len());
            fs::rename(&tmp, &final_path).map_err(|e| CacheError::io("rename", &final_path, e))?;
            self.generation.bump();
            self.sync_dir(&dir)?;
            Ok((ino, old_len, bytes.len() as u64))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// fsync a directory so renames in it are durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<(), CacheError> {
        if self.config.fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| CacheError::io("fsync directory", dir, e))?;
        }
        Ok(())
    }

    /// Reads a committed object's whole body and checks it (length, checksum) without changing
    /// anything: `Ok(None)` when there is no such object, `Err` naming what is wrong with a torn
    /// or corrupt one, which stays in place (for `cache verify`, which only reports; serving
    /// drops such an object at its next lookup).
    pub fn read_checked(&self, hash: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let _stripe = self.stripe(hash);
        let Some(c) = self.open_committed_locked(hash)? else {
            return Ok(None);
        };
        self.verify_body(&c, true)
    }

    /// Insert a complete small object into the memory tier.
    pub(crate) fn remember(&self, hash: &str, obj: MemObject) {
        let mut mem = lock(&self.mem);
        if mem.accepts(obj.body.len() as u64) {
            mem.insert(hash, obj);
        } else {
            mem.remove(hash);
        }
    }

    /// Read a whole body in chunks, checking its CRC; keeps the bytes if `keep`.
    pub(crate) fn verify_body(
        &self,
        c: &Committed,
        keep: bool,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        let len = c.header.body_len;
        let mut kept = if keep {
            Vec::with_capacity(usize::try_from(len).unwrap_or(0))
        } else {
            Vec::new()
        };
        let crc = body_crc(&c.body, len, self.config.read_chunk_bytes as u64, |buf| {
            if keep {
                kept.extend_from_slice(buf);
            }
        })
        .map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                CacheError::corrupt(self.meta_path(&c.header.hash_hex()), "body truncated")
            } else {
                CacheError::io("read", self.meta_path(&c.header.hash_hex()), e)
            }
        })?;
        if crc != c.header.body_crc {
            return Err(CacheError::corrupt(
                self.meta_path(&c.header.hash_hex()),
                "body checksum mismatch",
            ));
        }
        Ok(keep.then_some(kept))
    }
}

/// The CRC-32 of the first `len` bytes of `file`, read in chunks of at most `chunk` bytes, each
/// also given to `each`; an `UnexpectedEof` error when the file is shorter. Blocking.
pub(crate) fn body_crc(
    file: &File,
    len: u64,
    chunk: u64,
    mut each: impl FnMut(&[u8]),
) -> io::Result<u32> {
    let mut buf = vec![0u8; usize::try_from(chunk.min(len)).unwrap_or(0)];
    let mut crc = crc32fast::Hasher::new();
    let mut pos = 0u64;
    while pos < len {
        let n = usize::try_from((len - pos).min(chunk)).unwrap_or(0);
        let buf = &mut buf[..n];
        file.read_exact_at(buf, pos)?;
        crc.update(buf);
        each(buf);
        pos += n as u64;
    }
    Ok(crc.finalize())
}

/// Read and decode a meta file: (header, file length, inode). `Ok(None)` if it does not exist;
/// `Err(Corrupt)` if it cannot be decoded.
pub(crate) fn read_meta_file(path: &Path) -> Result<Option<(ObjectHeader, u64, u64)>, CacheError> {
    Ok(read_meta_file_md(path)?.map(|(h, len, md)| (h, len, md.ino())))
}

/// [`read_meta_file`] with the meta file's metadata instead of its inode.
pub(crate) fn read_meta_file_md(
    path: &Path,
) -> Result<Option<(ObjectHeader, u64, fs::Metadata)>, CacheError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CacheError::io("open", path, e)),
    };
    let md = file
        .metadata()
        .map_err(|e| CacheError::io("stat", path, e))?;
    if md.len() > format::MAX_META_FILE {
        return Err(CacheError::corrupt(
            path,
            format!("meta file of {} bytes", md.len()),
        ));
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    file.take(format::MAX_META_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CacheError::io("read", path, e))?;
    let header = ObjectHeader::decode(&buf).map_err(|reason| CacheError::corrupt(path, reason))?;
    Ok(Some((header, buf.len() as u64, md)))
}

fn read_info(hash: &str, path: &Path) -> Option<ObjectInfo> {
    let (h, meta_len, _) = match read_meta_file(path) {
        Ok(Some(x)) => x,
        Ok(None) => return None,
        Err(e) => {
            log::warn!("disk cache: skipping {}: {e}", path.display());
            return None;
        }
    };
    let meta = CacheMeta::deserialize(&h.meta_internal, &h.meta_header).ok();
    Some(ObjectInfo {
        hash: hash.to_string(),
        primary_key: String::from_utf8_lossy(&h.primary_key).into_owned(),
        user_tag: h.key.user_tag.to_string(),
        variance: h.key.variance(),
        body_bytes: h.body_len,
        disk_bytes: h.body_len.saturating_add(meta_len),
        status: meta.as_ref().map(|m| m.response_header().status.as_u16()),
        created: meta.as_ref().map(|m| m.created()),
        fresh_until: meta.as_ref().map(|m| m.fresh_until()),
    })
}

/// The index saved in `state_dir`, and when it was written; an empty index (logged) if there is
/// no usable snapshot.
fn load_snapshot(state_dir: &Path) -> (Lru, Option<SystemTime>) {
    let path = state_dir.join(snapshot::FILE);
    match snapshot::read(&path) {
        Ok(Some(s)) => (s.lru, Some(s.written)),
        Ok(None) => {
            log::info!(
                "disk cache: no index snapshot at {} yet; the index is rebuilt from the \
                 directory in the background",
                path.display()
            );
            (Lru::new(), None)
        }
        Err(why) => {
            log::warn!(
                "disk cache: ignoring the index snapshot {} ({why}); the index is rebuilt from \
                 the directory in the background",
                path.display()
            );
            (Lru::new(), None)
        }
    }
}

/// The `objects/xx/yy` directories that exist.
fn fanout_dirs(objects: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let is_fan = |name: &std::ffi::OsStr| {
        name.to_str()
            .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let mut out = Vec::new();
    let top = fs::read_dir(objects).map_err(|e| CacheError::io("read directory", objects, e))?;
    for first in top.flatten() {
        if !is_fan(&first.file_name()) || !first.path().is_dir() {
            continue;
        }
        let Ok(second) = fs::read_dir(first.path()) else {
            continue;
        };
        for d in second.flatten() {
            if is_fan(&d.file_name()) && d.path().is_dir() {
                out.push(d.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Delete `*.tmp` files directly in `dir` (left by an interrupted save of the index snapshot).
fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(format::TMP_SUFFIX));
        if is_temp {
            if let Err(e) = fs::remove_file(entry.path()) {
                log::warn!("disk cache: cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_fits_with_the_reserve_and_the_promises_left_free() {
        // 10 MiB free, 1 MiB kept free, nothing promised: up to 9 MiB fits.
        let (free, min) = (10 << 20, 1 << 20);
        assert_eq!(fits(free, 0, Some(9 << 20), min), Ok(()));
        assert_eq!(
            fits(free, 0, Some((9 << 20) + 1), min),
            Err(((10 << 20) + 1, 10 << 20))
        );
        // 4 MiB promised to writes in progress: 5 MiB is the most.
        assert_eq!(fits(free, 4 << 20, Some(5 << 20), min), Ok(()));
        assert!(fits(free, 4 << 20, Some((5 << 20) + 1), min).is_err());
        // unknown length: only the reserve must be left
        assert_eq!(fits(free, 9 << 20, None, min), Ok(()));
        assert_eq!(
            fits(free, (9 << 20) + 1, None, min),
            Err((1 << 20, (1 << 20) - 1))
        );
        // promises beyond what is free (another process filled the disk): nothing fits
        assert!(fits(1, u64::MAX, Some(1), 0).is_err());
        assert!(fits(0, 5, Some(1), 0).is_err());
        assert!(fits(u64::MAX, 0, Some(u64::MAX), 1).is_err(), "no overflow");
    }
}
