//! Writes: [`DiskMissHandler`] streams a response body into a temp file next to its final place,
//! then `finish` fsyncs it, renames it, and commits the meta file. Writes in progress are
//! registered as [`Inflight`] so readers can stream them (Pingora's streaming partial writes).
//!
//! When the filesystem fills up half-way (`ENOSPC`, `EDQUOT`: a body of unknown length, or a
//! disk filled by someone else), the write is given up but its readers — the request being
//! answered among them, which Pingora serves from this write — are not: the rest of the body
//! is held in memory for them ([`Spill`], within `max_spill_bytes` for all writes together),
//! and the object is never committed.

use crate::disk::{lock, read_meta_file, DiskCache};
use crate::error::{to_pingora, CacheError};
use crate::format::{self, ObjectHeader};
use crate::memtier::{MemObject, SerializedMeta};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::CompactCacheKey;
use pingora::cache::storage::{HandleMiss, MissFinishType};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Progress of a write as seen by readers of the partial object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteState {
    /// This many bytes are in the temp file; more may follow.
    Partial(u64),
    /// The body is complete with this many bytes.
    Complete(u64),
    /// The write failed or was abandoned: readers must fail rather than end early.
    Failed,
}

/// A write in progress, shared with readers of the partial object.
pub(crate) struct Inflight {
    /// Write id (also the body generation and the streaming write tag).
    pub id: u64,
    /// The serialized meta the write started with.
    pub meta: Arc<SerializedMeta>,
    /// The temp file (readers use positioned reads on it; it stays readable after rename/unlink).
    pub file: Arc<File>,
    /// Progress.
    pub state: watch::Receiver<WriteState>,
    /// Set by an invalidating purge: do not commit, and do not hand out to new readers.
    doomed: AtomicBool,
    /// The body from where the filesystem filled up on, held in memory for the readers.
    spill: Mutex<Option<Spill>>,
    /// The cache's count of bytes held in spills, given back when this write is gone.
    spilled_total: &'static AtomicU64,
}

/// The part of a body the filesystem had no room for: chunks from offset `from` on.
pub(crate) struct Spill {
    from: u64,
    /// (offset, bytes), in order and contiguous.
    chunks: Vec<(u64, Bytes)>,
    bytes: u64,
}

impl Spill {
    /// Up to `max` bytes from `pos` (at or beyond `from`), if they are here.
    fn read(&self, pos: u64, max: u64) -> Option<Bytes> {
        let i = self
            .chunks
            .partition_point(|(start, b)| start + b.len() as u64 <= pos);
        let (start, b) = self.chunks.get(i)?;
        let skip = usize::try_from(pos.checked_sub(*start)?).ok()?;
        let n = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(b.len() - skip);
        Some(b.slice(skip..skip + n))
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let spill = self.spill.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = spill {
            crate::disk::saturating_sub(self.spilled_total, s.bytes);
        }
    }
}

impl Inflight {
    /// Mark as not to be committed.
    pub(crate) fn doom(&self) {
        self.doomed.store(true, Ordering::Release);
    }

    /// Whether an invalidating purge hit this write.
    pub(crate) fn is_doomed(&self) -> bool {
        self.doomed.load(Ordering::Acquire)
    }

    /// Whether new readers may be given this write.
    pub(crate) fn is_readable(&self) -> bool {
        !self.is_doomed() && *self.state.borrow() != WriteState::Failed
    }

    /// Where the body continues in memory rather than in the file, if it does.
    pub(crate) fn spilled_from(&self) -> Option<u64> {
        lock(&self.spill).as_ref().map(|s| s.from)
    }

    /// Up to `max` bytes at `pos` of the part held in memory.
    pub(crate) fn read_spilled(&self, pos: u64, max: u64) -> Option<Bytes> {
        lock(&self.spill).as_ref()?.read(pos, max)
    }
}

/// Pingora's [`HandleMiss`] for the disk cache.
pub struct DiskMissHandler {
    cache: &'static DiskCache,
    hash: String,
    key: CompactCacheKey,
    primary_key: Vec<u8>,
    inflight: Arc<Inflight>,
    tx: watch::Sender<WriteState>,
    temp_path: PathBuf,
    tag: [u8; 8],
    /// `Content-Length` of the stored header, if any: the body must match it to be committed.
    expected_len: Option<u64>,
    /// Bytes of the filesystem's free space still promised to this write (its length, less
    /// what it has written), given back as it writes and when it ends.
    reserved: u64,
    written: u64,
    crc: crc32fast::Hasher,
    /// The body while it is small enough for the memory tier.
    small: Option<Vec<u8>>,
    eof: bool,
    failed: bool,
    done: bool,
    /// The filesystem filled up: the rest goes to the [`Spill`], nothing is committed.
    spilled: bool,
}

impl DiskMissHandler {
    /// Check that the object fits on the filesystem (reserving its length), create the temp
    /// file and register the write. Blocking.
    pub(crate) fn start(
        cache: &'static DiskCache,
        hash: String,
        key: CompactCacheKey,
        primary_key: Vec<u8>,
        meta: SerializedMeta,
        expected_len: Option<u64>,
    ) -> Result<DiskMissHandler, CacheError> {
        let reserved = cache.reserve_space(expected_len)?;
        let id = cache.next_gen();
        let dir = cache.dir_of(&hash);
        let temp_path = dir.join(format::body_temp_name(&hash, id));
        let created = fs::create_dir_all(&dir)
            .map_err(|e| CacheError::io("create directory", &dir, e))
            .and_then(|()| {
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&temp_path)
                    .map_err(|e| CacheError::io("create", &temp_path, e))
            });
        let file = match created {
            Ok(f) => f,
            Err(e) => {
                cache.release_space(reserved);
                return Err(e);
            }
        };
        let (tx, rx) = watch::channel(WriteState::Partial(0));
        let inflight = Arc::new(Inflight {
            id,
            meta: Arc::new(meta),
            file: Arc::new(file),
            state: rx,
            doomed: AtomicBool::new(false),
            spill: Mutex::new(None),
            spilled_total: &cache.spilled,
        });
        lock(&cache.inflight)
            .entry(hash.clone())
            .or_default()
            .push(inflight.clone());
        let small = (cache.config.memory_budget_bytes > 0).then(Vec::new);
        Ok(DiskMissHandler {
            cache,
            hash,
            key,
            primary_key,
            inflight,
            tx,
            temp_path,
            tag: id.to_be_bytes(),
            expected_len,
            reserved,
            written: 0,
            crc: crc32fast::Hasher::new(),
            small,
            eof: false,
            failed: false,
            done: false,
            spilled: false,
        })
    }

    /// The object this write is for, in log lines: its primary key text.
    fn what(&self) -> String {
        String::from_utf8_lossy(&self.primary_key).into_owned()
    }

    /// Keep `data` (at offset `written`) in memory for the readers; the first time, the write is
    /// given up (not committed, not offered to new readers, its reservation returned).
    fn spill(&mut self, data: &Bytes) -> Result<(), CacheError> {
        let n = data.len() as u64;
        let limit = self.cache.config.max_spill_bytes;
        let total = &self.cache.spilled;
        if total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                t.checked_add(n).filter(|&after| after <= limit)
            })
            .is_err()
        {
            return Err(CacheError::SpillFull { limit });
        }
        let mut spill = lock(&self.inflight.spill);
        let spill = spill.get_or_insert_with(|| Spill {
            from: self.written,
            chunks: Vec::new(),
            bytes: 0,
        });
        spill.chunks.push((self.written, data.clone()));
        spill.bytes += n;
        if !self.spilled {
            self.spilled = true;
            self.inflight.doom();
            self.small = None;
            self.cache.release_space(std::mem::take(&mut self.reserved));
        }
        Ok(())
    }

    fn fail(&mut self) {
        self.failed = true;
        self.tx.send_replace(WriteState::Failed);
    }

    fn unregister(&self) {
        let mut map = lock(&self.cache.inflight);
        if let Some(list) = map.get_mut(&self.hash) {
            list.retain(|w| w.id != self.inflight.id);
            if list.is_empty() {
                map.remove(&self.hash);
            }
        }
    }

    fn check_length(&self) -> Result<(), CacheError> {
        match self.expected_len {
            Some(expected) if expected != self.written => Err(CacheError::LengthMismatch {
                written: self.written,
                expected,
            }),
            _ => Ok(()),
        }
    }

    /// fsync, rename the body, write the meta (the commit point), drop older bodies. Blocking.
    /// Returns the eviction weight of the new object.
    fn commit(&self, crc: u32, small: Option<Vec<u8>>) -> Result<usize, CacheError> {
        let cache = self.cache;
        if cache.config.fsync {
            self.inflight
                .file
                .sync_all()
                .map_err(|e| CacheError::io("fsync", &self.temp_path, e))?;
        }
        let dir = cache.dir_of(&self.hash);
        let gen = self.inflight.id;
        let _guard = cache.stripe(&self.hash);
        if self.inflight.is_doomed() {
            return Err(CacheError::PurgedDuringWrite);
        }
        let body_path = dir.join(format::body_name(&self.hash, gen));
        fs::rename(&self.temp_path, &body_path)
            .map_err(|e| CacheError::io("rename", &body_path, e))?;
        let header = ObjectHeader {
            gen,
            body_len: self.written,
            body_crc: crc,
            key: self.key.clone(),
            primary_key: self.primary_key.clone(),
            meta_internal: self.inflight.meta.0.clone(),
            meta_header: self.inflight.meta.1.clone(),
        };
        // what is being replaced: its recorded weight comes off the gauges
        let old = match read_meta_file(&dir.join(format::meta_name(&self.hash))) {
            Ok(Some((h, meta_len, _))) => Some(Some(h.body_len.saturating_add(meta_len))),
            Ok(None) => None,
            Err(_) => Some(None), // unreadable: count what its files hold instead
        };
        let meta_result = cache
            .sync_dir(&dir)
            .and_then(|()| cache.write_meta_locked(&self.hash, &header));
        let (ino, old_meta_len, meta_len) = match meta_result {
            Ok(x) => x,
            Err(e) => {
                // the old object (if any) is still intact; drop the body nobody refers to
                let _ = fs::remove_file(&body_path);
                return Err(e);
            }
        };
        // the new meta is in place: older bodies of this key are garbage now
        let old_bodies = cache.remove_files_locked(&self.hash, Some(gen));
        let counters = &cache.counters;
        let weight = self.written.saturating_add(meta_len);
        match old {
            Some(recorded) => {
                let old_weight = recorded
                    .unwrap_or_else(|| old_meta_len.unwrap_or(0).saturating_add(old_bodies.bytes));
                cache.gauge_add(&self.hash, 0, weight);
                cache.gauge_sub(&self.hash, 0, old_weight);
            }
            None => cache.gauge_add(&self.hash, 1, weight),
        }
        counters.writes_committed.fetch_add(1, Ordering::Relaxed);
        let weight = usize::try_from(weight).unwrap_or(usize::MAX);
        match small {
            Some(body) => cache.remember(
                &self.hash,
                MemObject::new(
                    (header.meta_internal, header.meta_header),
                    Bytes::from(body),
                    gen,
                    ino,
                    weight,
                ),
            ),
            None => {
                lock(&cache.mem).remove(&self.hash);
            }
        }
        // new lookups now find the committed object; stop offering the temp one
        self.unregister();
        Ok(weight)
    }

    /// What to tell Pingora when a complete body could not be committed.
    ///
    /// With streaming partial writes on, Pingora 0.9.1 disables the cache after a failed
    /// `finish` while the downstream may still be reading through `miss_body_reader()`, which it
    /// then unwraps (a panic). So in that mode the failure is logged and reported as a 0-byte
    /// object; the eviction manager then tracks a weightless entry that disappears when evicted.
    fn finish_failed(&self, e: CacheError) -> pingora::Result<MissFinishType> {
        self.cache
            .counters
            .writes_abandoned
            .fetch_add(1, Ordering::Relaxed);
        self.cache
            .note_write_failure(&self.what(), &e, "the answer was sent but is not kept");
        if self.cache.config.streaming_partial_write {
            if !e.is_storage_failure() {
                // (a failure of the filesystem was just logged, rate-limited)
                log::error!("disk cache: not storing {}: {e}", self.hash);
            }
            Ok(MissFinishType::Created(0))
        } else {
            Err(to_pingora(e))
        }
    }
}

#[async_trait]
impl HandleMiss for DiskMissHandler {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> pingora::Result<()> {
        if self.failed {
            return Err(to_pingora(CacheError::WriteClosed("write failed earlier")));
        }
        if self.eof && (!data.is_empty() || !eof) {
            self.fail();
            return Err(to_pingora(CacheError::WriteClosed("body already ended")));
        }
        let new_len = self.written.saturating_add(data.len() as u64);
        if new_len > self.cache.config.max_object_bytes {
            self.fail();
            return Err(to_pingora(CacheError::TooLarge {
                size: new_len,
                limit: self.cache.config.max_object_bytes,
            }));
        }
        if !data.is_empty() && self.spilled {
            if let Err(e) = self.spill(&data) {
                self.fail();
                log::warn!(
                    "disk cache {}: {}: {e}; the request streaming it is cut",
                    self.cache.config.root.display(),
                    self.what()
                );
                return Err(to_pingora(e));
            }
        } else if !data.is_empty() {
            let file = self.inflight.file.clone();
            let offset = self.written;
            let chunk = data.clone();
            let path = self.temp_path.clone();
            let result = tokio::task::spawn_blocking(move || {
                file.write_all_at(&chunk, offset)
                    .map_err(|e| CacheError::io("write", path, e))
            })
            .await
            .map_err(|e| CacheError::Task(e.to_string()))
            .and_then(|r| r);
            match result {
                Ok(()) => {
                    let done = self.reserved.min(data.len() as u64);
                    self.reserved -= done;
                    self.cache.release_space(done);
                    self.crc.update(&data);
                    if let Some(small) = &mut self.small {
                        if new_len <= self.cache.config.memory_object_max_bytes as u64 {
                            small.extend_from_slice(&data);
                        } else {
                            self.small = None;
                        }
                    }
                }
                Err(e) if e.is_no_space() && self.cache.config.streaming_partial_write => {
                    let spilled = self.spill(&data);
                    let consequence = match &spilled {
                        Ok(()) => "the rest of the answer is held in memory for its readers",
                        Err(_) => "the request streaming it is cut (too much held in memory)",
                    };
                    self.cache.note_write_failure(&self.what(), &e, consequence);
                    if let Err(e) = spilled {
                        self.fail();
                        return Err(to_pingora(e));
                    }
                }
                Err(e) => {
                    self.fail();
                    self.cache.note_write_failure(
                        &self.what(),
                        &e,
                        "the write is abandoned and the request streaming it is cut",
                    );
                    return Err(to_pingora(e));
                }
            }
        }
        if !data.is_empty() {
            self.written = new_len;
        }
        if eof {
            self.eof = true;
            if let Err(e) = self.check_length() {
                // readers must not take a short body for a whole one
                self.fail();
                return Err(to_pingora(e));
            }
            self.tx.send_replace(WriteState::Complete(self.written));
        } else {
            self.tx.send_replace(WriteState::Partial(self.written));
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> pingora::Result<MissFinishType> {
        if self.failed {
            self.done = true;
            return self.finish_failed(CacheError::WriteClosed("write failed earlier"));
        }
        if let Err(e) = self.check_length() {
            self.fail();
            self.done = true;
            return self.finish_failed(e);
        }
        // Pingora may finish without an eof write (HttpTask::Done): the body is complete now
        self.tx.send_replace(WriteState::Complete(self.written));
        self.eof = true;
        if self.spilled {
            // served whole from the file and memory; not stored (counted and logged when the
            // filesystem filled up)
            self.done = true;
            self.cache
                .counters
                .writes_abandoned
                .fetch_add(1, Ordering::Relaxed);
            return Ok(MissFinishType::Created(0));
        }
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        let small = self.small.take();
        let (mut handler, result) = tokio::task::spawn_blocking(move || {
            let result = self.commit(crc, small);
            (self, result)
        })
        .await
        .map_err(|e| to_pingora(CacheError::Task(e.to_string())))?;
        handler.done = true;
        match result {
            Ok(weight) => Ok(MissFinishType::Created(weight)),
            // the temp file (if still there) is removed when the handler drops
            Err(e) => handler.finish_failed(e),
        }
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(&self.tag)
    }
}

impl Drop for DiskMissHandler {
    fn drop(&mut self) {
        self.cache.release_space(std::mem::take(&mut self.reserved));
        if !self.done {
            self.cache
                .counters
                .writes_abandoned
                .fetch_add(1, Ordering::Relaxed);
        }
        // readers that already have every byte may finish; everyone else must fail
        if !matches!(*self.tx.borrow(), WriteState::Complete(_)) {
            self.tx.send_replace(WriteState::Failed);
        }
        self.unregister();
        // after a commit the temp name no longer exists; otherwise this discards the write
        // (readers keep their open descriptor)
        match fs::remove_file(&self.temp_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!(
                "disk cache: cannot remove {}: {e}",
                self.temp_path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spill_reads_across_its_chunks_from_where_the_file_ended() {
        let spill = Spill {
            from: 100,
            chunks: vec![
                (100, Bytes::from_static(b"abcd")),
                (104, Bytes::from_static(b"ef")),
                (106, Bytes::from_static(b"ghijk")),
            ],
            bytes: 11,
        };
        assert_eq!(spill.read(100, 64).as_deref(), Some(&b"abcd"[..]));
        assert_eq!(spill.read(102, 64).as_deref(), Some(&b"cd"[..]));
        assert_eq!(spill.read(104, 1).as_deref(), Some(&b"e"[..]));
        assert_eq!(spill.read(105, 64).as_deref(), Some(&b"f"[..]));
        assert_eq!(spill.read(107, 3).as_deref(), Some(&b"hij"[..]));
        assert_eq!(spill.read(110, 64).as_deref(), Some(&b"k"[..]));
        assert!(spill.read(111, 64).is_none(), "past the end");
        assert!(
            spill.read(99, 64).is_none(),
            "before the spill: in the file"
        );
    }
}
