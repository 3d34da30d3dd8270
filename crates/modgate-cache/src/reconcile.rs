//! The background reconciliation of the index with the directory, started by
//! [`DiskCache::open`](crate::DiskCache::open) once the index is restored from its snapshot (or
//! found missing): on its own thread at low CPU and I/O priority, while the cache serves.
//!
//! It walks the 65,536 fan-out directories in order, each under the stripe lock its objects
//! share (so no commit, purge or meta rewrite of those objects runs meanwhile), and per
//! directory:
//!
//! * deletes temp files and orphan bodies (no meta, or another generation than the meta's) whose
//!   last change (`ctime`) is older than this process's open (a younger one may be another
//!   process's write in progress), and torn objects (undecodable meta, meta of another key,
//!   body missing or of the wrong length), as the start-up scan did before;
//! * for an object the index tracks with one body: two `stat`s, and if meta plus body still
//!   weigh what the index says, nothing else (the meta is not read: every lookup validates it);
//!   otherwise the meta file is read and decoded;
//! * corrects the weights that changed, drops the entries whose files are gone, and records the
//!   objects the index did not track as pending (32 bytes each);
//! * adds what it found to its own count of objects and bytes.
//!
//! The gauges: every change of the object/byte gauges happens under the stripe lock of the
//! object's directory, and is also applied to the reconciliation's own count when that
//! directory has been walked already (its number is below the watermark). So once every
//! directory is walked, that count is exactly what is on disk, and it replaces the gauges (with
//! every stripe lock held for the moment of the swap).
//!
//! At the end the pending objects are placed by age: those written after the snapshot at the
//! most recently used end, oldest first; older ones (no snapshot at all, say) at the least
//! recently used end, the oldest last in line. Then it evicts beyond the budget and saves a
//! fresh snapshot. Memory: the index itself, one directory's listing, and the pending list.

use crate::disk::{lock, read_meta_file_md, DiskCache};
use crate::error::CacheError;
use crate::format::{self, FileKind};
use crate::index::{hash_of_hex, hex_of, Hash, Pending, Place};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Watermark value while no reconciliation runs: gauge changes are not followed.
const IDLE: u32 = u32::MAX;

/// State of the reconciliation, shared with the cache's gauge updates and with waiters.
pub(crate) struct Reconciliation {
    /// When the cache was opened: temp files and orphan bodies unchanged since are debris.
    started: SystemTime,
    /// When the snapshot the index came from was written.
    snapshot_time: Option<SystemTime>,
    /// Directories below this number have been walked; [`IDLE`]: not running.
    watermark: AtomicU32,
    /// Objects and bytes on disk in the directories walked so far (kept current).
    objects: AtomicU64,
    bytes: AtomicU64,
    done: Mutex<bool>,
    ended: Condvar,
}

/// The fan-out directory number of a hex object name (its first four digits).
fn prefix_of_hex(hash: &str) -> u32 {
    hash.get(..4)
        .and_then(|p| u32::from_str_radix(p, 16).ok())
        .unwrap_or(0)
}

impl Reconciliation {
    /// For a cache opened at `started` from a snapshot written at `snapshot_time`; `run`: a
    /// reconciliation will run (else it counts as done).
    pub(crate) fn new(
        started: SystemTime,
        snapshot_time: Option<SystemTime>,
        run: bool,
    ) -> Reconciliation {
        Reconciliation {
            started,
            snapshot_time,
            watermark: AtomicU32::new(if run { 0 } else { IDLE }),
            objects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            done: Mutex::new(!run),
            ended: Condvar::new(),
        }
    }

    /// Whether the gauge change of object `hash` concerns a directory already walked (call under
    /// the object's stripe lock).
    fn follows(&self, hash: &str) -> bool {
        let w = self.watermark.load(Ordering::Acquire);
        w != IDLE && prefix_of_hex(hash) < w
    }

    /// The gauges grew for object `hash`.
    pub(crate) fn follow_add(&self, hash: &str, objects: u64, bytes: u64) {
        if self.follows(hash) {
            self.objects.fetch_add(objects, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The gauges shrank for object `hash`.
    pub(crate) fn follow_sub(&self, hash: &str, objects: u64, bytes: u64) {
        if self.follows(hash) {
            crate::disk::saturating_sub(&self.objects, objects);
            crate::disk::saturating_sub(&self.bytes, bytes);
        }
    }

    /// Whether the index came from a snapshot.
    pub(crate) fn has_snapshot(&self) -> bool {
        self.snapshot_time.is_some()
    }

    pub(crate) fn is_done(&self) -> bool {
        *lock(&self.done)
    }

    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = lock(&self.done);
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .ended
                .wait_timeout(done, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    fn finish(&self) {
        *lock(&self.done) = true;
        self.ended.notify_all();
    }
}

/// Start the reconciliation of `cache` on its own thread (inline if no thread can be made).
pub(crate) fn start(cache: &'static DiskCache) {
    let spawned = std::thread::Builder::new()
        .name("modgate-cache-reconcile".into())
        .spawn(move || {
            lower_priority();
            run(cache);
        });
    if let Err(e) = spawned {
        log::warn!("disk cache: no thread for the reconciliation ({e}); running it now");
        run(cache);
    }
}

/// This thread at nice 19 and the lowest best-effort I/O priority (best effort: failures are
/// ignored).
fn lower_priority() {
    // SAFETY: plain system calls on the calling thread (Linux: `who` 0 is the calling thread),
    // no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS as _, 0, 19);
        // IOPRIO_WHO_PROCESS = 1, class best-effort (2) << 13 | level 7
        libc::syscall(libc::SYS_ioprio_set, 1, 0, (2 << 13) | 7);
    }
}

/// What a reconciliation found and did.
#[derive(Debug, Default)]
struct Tally {
    objects: u64,
    bytes: u64,
    added: u64,
    dropped: u64,
    reweighed: u64,
    torn: u64,
    orphans: u64,
    temps: u64,
    evicted: u64,
}

fn run(cache: &'static DiskCache) {
    let t0 = Instant::now();
    let mut tally = Tally::default();
    // a snapshot larger than the budget (the budget shrank since)
    tally.evicted += evict(cache);
    for top in 0..256 {
        if skip_absent(cache, top, &mut tally) {
            continue;
        }
        for prefix in top << 8..(top + 1) << 8 {
            reconcile_dir(cache, prefix, &mut tally);
        }
    }
    {
        let _all = cache.all_stripes();
        let r = &cache.recon;
        let (objects, bytes) = (
            r.objects.load(Ordering::Relaxed),
            r.bytes.load(Ordering::Relaxed),
        );
        cache.counters.objects.store(objects, Ordering::Relaxed);
        cache.counters.bytes.store(bytes, Ordering::Relaxed);
        r.watermark.store(IDLE, Ordering::Release);
    }
    place_pending(cache);
    tally.evicted += evict(cache);
    if let Err(e) = cache.save_state_blocking() {
        log::warn!("disk cache: cannot save the index snapshot after reconciling: {e}");
    }
    let stats = cache.stats();
    log::info!(
        "disk cache {}: index reconciled with the directory in {:.1} s: {} objects, {} bytes on \
         disk; {} added to the index, {} dropped (files gone), {} weights corrected; removed {} \
         torn objects, {} orphan bodies, {} temp files; {} evicted for the budget",
        cache.config.root.display(),
        t0.elapsed().as_secs_f64(),
        stats.objects,
        stats.bytes,
        tally.added,
        tally.dropped,
        tally.reweighed,
        tally.torn,
        tally.orphans,
        tally.temps,
        tally.evicted,
    );
    cache.recon.finish();
}

/// Evict beyond the budget: the index's least recently used entries, files included.
fn evict(cache: &DiskCache) -> u64 {
    let mut n = 0;
    for hash in cache.eviction.evict_hashes() {
        let (removed, _) = cache.purge_hash(&hex_of(hash), false, false);
        if removed.meta {
            cache.counters.evicted.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
    }
    n
}

/// Place the objects found but not tracked, by age (see the module documentation).
fn place_pending(cache: &DiskCache) {
    let snap = cache.recon.snapshot_time.map(|t| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    });
    cache.eviction.with(|lru| {
        let mut pending = lru.take_pending();
        pending.sort_by_key(|p| (p.mtime, p.hash));
        // File times come from the kernel's coarse clock (a few ms behind the one the snapshot
        // time was read from): an object the snapshot does not know that was written up to a
        // second before it was written around then, and counts as newer.
        let split = pending
            .partition_point(|p| snap.is_none_or(|s| p.mtime <= s.saturating_sub(1_000_000_000)));
        let (older, newer) = pending.split_at(split);
        for p in older.iter().rev() {
            if lru.weight(p.hash).is_none() {
                lru.insert(p.hash, p.weight, Place::Cold);
            }
        }
        for p in newer {
            if lru.weight(p.hash).is_none() {
                lru.insert(p.hash, p.weight, Place::Hot);
            }
        }
    });
}

/// Whether a file last changed before the cache was opened (so no writer of this process, nor
/// most likely of another, is still working on it).
fn is_debris(path: &Path, started: SystemTime) -> bool {
    match fs::symlink_metadata(path) {
        Ok(md) => {
            let ctime = UNIX_EPOCH
                + Duration::new(
                    u64::try_from(md.ctime()).unwrap_or(0),
                    u32::try_from(md.ctime_nsec()).unwrap_or(0),
                );
            ctime < started
        }
        Err(_) => false,
    }
}

fn remove(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            log::warn!("disk cache: cannot remove {}: {e}", path.display());
            false
        }
    }
}

fn file_len(path: &Path) -> Option<u64> {
    fs::symlink_metadata(path).ok().map(|m| m.len())
}

/// If `objects/<top>` does not exist, the 256 directories under it in one step: whatever the
/// index tracks there is gone. Under the stripe lock those objects share, so no commit of one
/// of them can happen meanwhile (a write may create the directory, but commits only after the
/// watermark moved on, so its gauge change is followed).
fn skip_absent(cache: &DiskCache, top: u32, tally: &mut Tally) -> bool {
    let hex2 = format!("{top:02x}");
    let _stripe = cache.stripe(&hex2);
    match fs::symlink_metadata(cache.objects.join(&hex2)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        _ => return false,
    }
    cache.eviction.with(|lru| {
        for (h, _) in lru.entries_with_prefix(Hash::from(top), 8) {
            if lru.remove(h).is_some() {
                tally.dropped += 1;
            }
        }
    });
    cache
        .recon
        .watermark
        .store((top + 1) << 8, Ordering::Release);
    true
}

/// One object found in a directory: (hash, weight, meta mtime if the meta was read).
type Truth = (Hash, u64, Option<i64>);

/// Reconcile fan-out directory `prefix` (see the module documentation).
fn reconcile_dir(cache: &DiskCache, prefix: u32, tally: &mut Tally) {
    let hex4 = format!("{prefix:04x}");
    let dir = cache.objects.join(&hex4[..2]).join(&hex4[2..]);
    let started = cache.recon.started;
    let _stripe = cache.stripe(&hex4);
    let mut tracked: HashMap<Hash, u64> = cache
        .eviction
        .with(|lru| lru.dir_entries(prefix))
        .into_iter()
        .collect();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => Some(e),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            // cannot tell: keep what the index says about this directory
            log::warn!("disk cache: cannot read {}: {e}", dir.display());
            let r = &cache.recon;
            r.objects.fetch_add(tracked.len() as u64, Ordering::Relaxed);
            r.bytes.fetch_add(tracked.values().sum(), Ordering::Relaxed);
            r.watermark.store(prefix + 1, Ordering::Release);
            return;
        }
    };
    let mut metas: Vec<(Hash, String)> = Vec::new();
    let mut bodies: HashMap<Hash, Vec<(u64, PathBuf)>> = HashMap::new();
    for entry in entries.into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match format::classify(name) {
            FileKind::Temp => {
                let path = entry.path();
                if is_debris(&path, started) && remove(&path) {
                    tally.temps += 1;
                }
            }
            FileKind::Meta(hex) => {
                if let Some(h) = hash_of_hex(&hex) {
                    metas.push((h, hex));
                }
            }
            FileKind::Body(hex, gen) => {
                if let Some(h) = hash_of_hex(&hex) {
                    bodies.entry(h).or_default().push((gen, entry.path()));
                }
            }
            FileKind::Other => {}
        }
    }
    let mut truth: Vec<Truth> = Vec::with_capacity(metas.len());
    let mut removed_meta = false;
    for (h, hex) in metas {
        let own = bodies.remove(&h).unwrap_or_default();
        let meta_path = dir.join(format::meta_name(&hex));
        if let (Some(&weight), [(_, body)]) = (tracked.get(&h), own.as_slice()) {
            let on_disk = file_len(&meta_path)
                .zip(file_len(body))
                .map(|(m, b)| m.saturating_add(b));
            if on_disk == Some(weight) {
                truth.push((h, weight, None));
                continue;
            }
        }
        match check_object(&meta_path, &hex, &own) {
            Ok(Some((weight, mtime, gen))) => {
                truth.push((h, weight, Some(mtime)));
                for (g, p) in &own {
                    if *g != gen && is_debris(p, started) && remove(p) {
                        tally.orphans += 1;
                    }
                }
            }
            Ok(None) => {
                // the meta went away meanwhile (another process): its bodies are orphans
                for (_, p) in &own {
                    if is_debris(p, started) && remove(p) {
                        tally.orphans += 1;
                    }
                }
            }
            Err(CheckError::Torn(what, why)) => {
                log::warn!(
                    "disk cache {}: removing incomplete object {what} ({}): {why}",
                    cache.config.root.display(),
                    meta_path.display()
                );
                removed_meta |= remove(&meta_path);
                for (_, p) in &own {
                    remove(p);
                }
                lock(&cache.mem).remove(&hex);
                tally.torn += 1;
            }
            Err(CheckError::Io(e)) => {
                // cannot tell: keep what the index says
                log::warn!("disk cache: cannot check {}: {e}", meta_path.display());
                if let Some(&weight) = tracked.get(&h) {
                    truth.push((h, weight, None));
                }
            }
        }
    }
    for (_, list) in bodies {
        for (_, p) in list {
            if is_debris(&p, started) && remove(&p) {
                tally.orphans += 1;
            }
        }
    }
    if removed_meta {
        cache.generation.bump();
    }
    truth.sort_unstable_by_key(|t| t.0);
    let (objects, bytes) = (
        truth.len() as u64,
        truth.iter().map(|t| t.1).fold(0u64, u64::saturating_add),
    );
    cache.eviction.with(|lru| {
        for &(h, weight, mtime) in &truth {
            match tracked.remove(&h) {
                Some(w) if w == weight => {}
                Some(_) => {
                    if lru.set_weight(h, weight) {
                        tally.reweighed += 1;
                    }
                }
                None => {
                    if lru.weight(h).is_none() {
                        lru.add_pending(Pending {
                            hash: h,
                            weight,
                            mtime: mtime.unwrap_or(0),
                        });
                        tally.added += 1;
                    }
                }
            }
        }
        for h in tracked.keys() {
            if lru.remove(*h).is_some() {
                tally.dropped += 1;
            }
        }
    });
    let r = &cache.recon;
    r.objects.fetch_add(objects, Ordering::Relaxed);
    r.bytes.fetch_add(bytes, Ordering::Relaxed);
    tally.objects += objects;
    tally.bytes = tally.bytes.saturating_add(bytes);
    r.watermark.store(prefix + 1, Ordering::Release);
}

/// Why an object is not whole.
enum CheckError {
    /// (what it is, what is wrong with it): remove it.
    Torn(String, String),
    /// Could not look: leave it.
    Io(CacheError),
}

/// Read and check an object's meta against its bodies: (weight, meta mtime in nanoseconds,
/// generation), or
/// `None` if the meta is gone.
fn check_object(
    meta_path: &Path,
    hex: &str,
    bodies: &[(u64, PathBuf)],
) -> Result<Option<(u64, i64, u64)>, CheckError> {
    let (h, meta_len, md) = match read_meta_file_md(meta_path) {
        Ok(Some(x)) => x,
        Ok(None) => return Ok(None),
        Err(e @ CacheError::Corrupt { .. }) => {
            return Err(CheckError::Torn(hex.to_string(), e.to_string()))
        }
        Err(e) => return Err(CheckError::Io(e)),
    };
    if h.hash_hex() != hex {
        return Err(CheckError::Torn(
            hex.to_string(),
            "meta belongs to another key".into(),
        ));
    }
    let what = || String::from_utf8_lossy(&h.primary_key).into_owned();
    let Some((_, body)) = bodies.iter().find(|(g, _)| *g == h.gen) else {
        return Err(CheckError::Torn(what(), "body file missing".into()));
    };
    match file_len(body) {
        Some(len) if len == h.body_len => {}
        Some(len) => {
            return Err(CheckError::Torn(
                what(),
                format!("body has {len} bytes, meta says {}", h.body_len),
            ))
        }
        None => return Err(CheckError::Torn(what(), "body file missing".into())),
    }
    let mtime = md
        .mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec());
    Ok(Some((h.body_len.saturating_add(meta_len), mtime, h.gen)))
}

#[cfg(test)]
mod tests;
