//! Reads: Pingora [`HandleHit`] implementations for an object in the memory tier
//! ([`MemHit`]), a committed object on disk streamed in bounded chunks ([`DiskHit`]), and a
//! write still in progress ([`PartialHit`]).

use crate::disk::DiskCache;
use crate::error::{to_pingora, CacheError};
use crate::miss::{Inflight, WriteState};
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::CompactCacheKey;
use pingora::cache::storage::HandleHit;
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, Storage};
use std::any::Any;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Resolve a requested range against a body of `len` bytes (`end` exclusive, clamped), the way
/// Pingora's `MemCache` does: a start at or beyond the end is an error.
fn seek_range(len: u64, start: usize, end: Option<usize>) -> pingora::Result<(u64, u64)> {
    let start = start as u64;
    if start >= len {
        return pingora::Error::e_explain(
            pingora::ErrorType::InternalError,
            format!("seek start out of range {start} >= {len}"),
        );
    }
    let end = end.map_or(len, |e| (e as u64).min(len));
    Ok((start, end.max(start)))
}

/// A hit served from memory, in chunks of at most `chunk` bytes (zero-copy slices).
pub struct MemHit {
    body: Bytes,
    pos: usize,
    end: usize,
    chunk: usize,
    weight: usize,
}

impl MemHit {
    pub(crate) fn new(body: Bytes, chunk: usize, weight: usize) -> Self {
        let end = body.len();
        MemHit {
            body,
            pos: 0,
            end,
            chunk,
            weight,
        }
    }
}

#[async_trait]
impl HandleHit for MemHit {
    async fn read_body(&mut self) -> pingora::Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let n = (self.end - self.pos).min(self.chunk);
        let out = self.body.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(Some(out))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> pingora::Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> pingora::Result<()> {
        let (start, end) = seek_range(self.body.len() as u64, start, end)?;
        // both fit in usize: they are bounded by body.len()
        self.pos = start as usize;
        self.end = end as usize;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A hit streamed from a committed body file with positioned reads of at most `chunk` bytes
/// (from the page cache on the calling thread when it holds them, else on the blocking pool).
///
/// A full sequential read of a body that was not verified before serving is checksummed as it
/// goes; a mismatch (or a body that shrank under us) fails the read that would have completed the
/// body, and the object is removed, so a corrupt object is never delivered as a whole response.
pub struct DiskHit {
    cache: &'static DiskCache,
    hash: String,
    key: CompactCacheKey,
    gen: u64,
    file: Arc<File>,
    len: u64,
    pos: u64,
    end: u64,
    chunk: u64,
    /// Running CRC while reading the whole body from the start; `None` once verified or seeked.
    crc: Option<crc32fast::Hasher>,
    /// A body small enough to be verified before serving that this hit did not verify (it was
    /// verified by an earlier hit): a seek (a range) is then verified whole before its first
    /// byte, since a range's bytes cannot be checked as they stream.
    check_on_seek: bool,
    expected_crc: u32,
    weight: usize,
}

impl DiskHit {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cache: &'static DiskCache,
        hash: String,
        key: CompactCacheKey,
        gen: u64,
        file: File,
        len: u64,
        expected_crc: u32,
        verified: bool,
        weight: usize,
    ) -> Self {
        DiskHit {
            chunk: cache.config.read_chunk_bytes as u64,
            cache,
            hash,
            key,
            gen,
            file: Arc::new(file),
            len,
            pos: 0,
            end: len,
            crc: (!verified).then(crc32fast::Hasher::new),
            check_on_seek: !verified && len <= cache.config.verify_before_serve_max_bytes,
            expected_crc,
            weight,
        }
    }

    /// Reads the whole body on the blocking pool and compares its checksum (a seeked hit of a
    /// small body that an earlier hit verified).
    async fn verify_whole(&mut self) -> pingora::Result<()> {
        let (file, len, chunk) = (self.file.clone(), self.len, self.chunk);
        let sum =
            tokio::task::spawn_blocking(move || crate::disk::body_crc(&file, len, chunk, |_| {}))
                .await
                .map_err(|e| to_pingora(CacheError::Task(e.to_string())))?;
        match sum {
            Ok(sum) if sum == self.expected_crc => Ok(()),
            Ok(_) => Err(self.corrupt("body checksum mismatch").await),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.corrupt("body file shrank while being read").await)
            }
            Err(e) => Err(to_pingora(CacheError::io(
                "read",
                self.cache.meta_path(&self.hash),
                e,
            ))),
        }
    }

    async fn corrupt(&mut self, reason: &'static str) -> Box<pingora::Error> {
        let (cache, hash, gen, key) = (self.cache, self.hash.clone(), self.gen, self.key.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let err = CacheError::corrupt(cache.meta_path(&hash), reason);
            cache.drop_corrupt(&hash, Some(gen), Some(&key), &err);
        })
        .await;
        to_pingora(CacheError::corrupt(
            self.cache.meta_path(&self.hash),
            reason,
        ))
    }
}

#[async_trait]
impl HandleHit for DiskHit {
    async fn read_body(&mut self) -> pingora::Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.crc.is_none() && self.check_on_seek {
            self.check_on_seek = false;
            self.verify_whole().await?;
        }
        let n = (self.end - self.pos).min(self.chunk);
        // What the page cache holds is read here at once; the rest on the blocking pool.
        // n <= chunk <= 16 MiB
        let read = match crate::nowait::read_cached(&self.file, self.pos, n as usize) {
            Ok(Some(buf)) => Ok(buf),
            _ => {
                let (file, pos) = (self.file.clone(), self.pos);
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    file.read_exact_at(&mut buf, pos).map(|()| buf)
                })
                .await
                .map_err(|e| to_pingora(CacheError::Task(e.to_string())))?
            }
        };
        let buf = match read {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(self.corrupt("body file shrank while being read").await)
            }
            Err(e) => {
                return Err(to_pingora(CacheError::io(
                    "read",
                    self.cache.meta_path(&self.hash),
                    e,
                )))
            }
        };
        let n = buf.len() as u64;
        self.pos += n;
        if let Some(crc) = &mut self.crc {
            crc.update(&buf);
            if self.pos == self.len {
                let sum = std::mem::take(crc).finalize();
                self.crc = None;
                if sum != self.expected_crc {
                    return Err(self.corrupt("body checksum mismatch").await);
                }
            }
        }
        Ok(Some(Bytes::from(buf)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> pingora::Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> pingora::Result<()> {
        let (start, end) = seek_range(self.len, start, end)?;
        self.pos = start;
        self.end = end;
        self.crc = None; // ranges are not verified
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A hit on a write in progress: streams what the writer has put in the temp file so far and
/// waits for more. Fails (rather than ending early) if the write is abandoned.
pub struct PartialHit {
    inflight: Arc<Inflight>,
    state: tokio::sync::watch::Receiver<WriteState>,
    pos: u64,
    chunk: u64,
}

impl PartialHit {
    pub(crate) fn new(inflight: Arc<Inflight>, chunk: usize) -> Self {
        PartialHit {
            state: inflight.state.clone(),
            inflight,
            pos: 0,
            chunk: chunk as u64,
        }
    }
}

#[async_trait]
impl HandleHit for PartialHit {
    async fn read_body(&mut self) -> pingora::Result<Option<Bytes>> {
        loop {
            let state = *self.state.borrow_and_update();
            let available = match state {
                WriteState::Failed => {
                    return Err(to_pingora(CacheError::WriteClosed(
                        "the write being streamed was abandoned",
                    )))
                }
                WriteState::Partial(n) | WriteState::Complete(n) => n,
            };
            if available > self.pos {
                // past where the filesystem filled up, the body is in memory
                let spilled_from = self.inflight.spilled_from();
                if spilled_from.is_some_and(|from| self.pos >= from) {
                    let Some(b) = self.inflight.read_spilled(self.pos, self.chunk) else {
                        return Err(to_pingora(CacheError::WriteClosed(
                            "the part of the write held in memory is missing",
                        )));
                    };
                    self.pos += b.len() as u64;
                    return Ok(Some(b));
                }
                let end = spilled_from.map_or(available, |from| from.min(available));
                let n = (end - self.pos).min(self.chunk);
                let (file, pos) = (self.inflight.file.clone(), self.pos);
                let buf = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    file.read_exact_at(&mut buf, pos).map(|()| buf)
                })
                .await
                .map_err(|e| to_pingora(CacheError::Task(e.to_string())))?
                .map_err(|e| to_pingora(CacheError::io("read", "(write in progress)", e)))?;
                self.pos += n;
                return Ok(Some(Bytes::from(buf)));
            }
            if matches!(state, WriteState::Complete(_)) {
                return Ok(None);
            }
            if self.state.changed().await.is_err() {
                // the writer is gone; its last word is in the channel
                if matches!(*self.state.borrow(), WriteState::Partial(_)) {
                    return Err(to_pingora(CacheError::WriteClosed(
                        "the write being streamed ended without completing",
                    )));
                }
            }
        }
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> pingora::Result<()> {
        Ok(())
    }

    fn should_count_access(&self) -> bool {
        false // like MemCache: the writer admits the object when it finishes
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}
