//! Configuration of a [`DiskCache`](crate::DiskCache): where it lives, how much it may hold on
//! disk and in memory, and how it reads and verifies bodies.

use crate::error::CacheError;
use std::path::PathBuf;

/// Settings for [`DiskCache::open`](crate::DiskCache::open).
///
/// Start from [`DiskCacheConfig::new`] (sensible defaults) and adjust the public fields.
#[derive(Debug, Clone)]
pub struct DiskCacheConfig {
    /// Root directory. Objects live in `<root>/objects/xx/yy/`, the index snapshot in
    /// `<root>/eviction/`. Created if missing.
    pub root: PathBuf,
    /// Size budget in bytes (bodies plus meta files) enforced by the LRU eviction manager.
    pub max_disk_bytes: usize,
    /// Largest body that may be stored. Also give it to Pingora with
    /// `session.cache.set_max_file_size_bytes(..)` so oversize responses are refused early.
    pub max_object_bytes: u64,
    /// Bodies up to this size are also kept in the in-memory tier.
    pub memory_object_max_bytes: usize,
    /// Total budget of the in-memory tier (bodies plus serialized meta).
    pub memory_budget_bytes: usize,
    /// Maximum size of each chunk a hit handler returns.
    pub read_chunk_bytes: usize,
    /// Bodies up to this size have their checksum verified before the first byte of their first
    /// hit in this process is served (later hits of the same object, and larger bodies, are
    /// verified while they stream: a mismatch fails the last read, so the response is aborted
    /// rather than completed with bad bytes, and the object is removed).
    pub verify_before_serve_max_bytes: u64,
    /// Bytes always left free on the cache's filesystem: an object is stored only if its length
    /// (known from `Content-Length`, else 0) plus this fits in the free space less what
    /// writes in progress were promised; otherwise it is not stored (the answer goes to the
    /// client without the cache).
    pub min_free_bytes: u64,
    /// When the filesystem fills up during a write (a body of unknown length, or another
    /// process filling the disk), the rest of the body is held in memory for the readers of
    /// that write — among them the request being answered — and not stored; this bounds those
    /// bytes for all writes together. Beyond it such a request is cut off.
    pub max_spill_bytes: u64,
    /// fsync files and directories when committing (turn off only for tests or throwaway caches).
    pub fsync: bool,
    /// Report `support_streaming_partial_write() == true` to Pingora: readers (including the
    /// filling request's own downstream) stream the body from the temp file while it is written.
    pub streaming_partial_write: bool,
}

impl DiskCacheConfig {
    /// Defaults: 10 GiB on disk, 1 GiB maximum object, memory tier of 64 MiB for bodies up to
    /// 2 MiB (those above 256 KiB sharing half of it), 64 KiB read chunks, verify bodies up to
    /// 1 MiB before serving, keep 1 MiB of the filesystem free, fsync on, streaming partial writes on.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DiskCacheConfig {
            root: root.into(),
            max_disk_bytes: 10 << 30,
            max_object_bytes: 1 << 30,
            memory_object_max_bytes: 2 << 20,
            memory_budget_bytes: 64 << 20,
            read_chunk_bytes: 64 << 10,
            verify_before_serve_max_bytes: 1 << 20,
            min_free_bytes: 1 << 20,
            max_spill_bytes: 64 << 20,
            fsync: true,
            streaming_partial_write: true,
        }
    }

    /// Reject settings the cache cannot work with.
    pub fn validate(&self) -> Result<(), CacheError> {
        if self.root.as_os_str().is_empty() {
            return Err(CacheError::Config("root directory is empty".into()));
        }
        if self.read_chunk_bytes == 0 || self.read_chunk_bytes > 16 << 20 {
            return Err(CacheError::Config(format!(
                "read_chunk_bytes must be between 1 and 16 MiB, got {}",
                self.read_chunk_bytes
            )));
        }
        if self.max_disk_bytes == 0 {
            return Err(CacheError::Config("max_disk_bytes must not be 0".into()));
        }
        if self.max_object_bytes == 0 {
            return Err(CacheError::Config("max_object_bytes must not be 0".into()));
        }
        if self.memory_object_max_bytes > self.memory_budget_bytes {
            return Err(CacheError::Config(format!(
                "memory_object_max_bytes ({}) exceeds memory_budget_bytes ({})",
                self.memory_object_max_bytes, self.memory_budget_bytes
            )));
        }
        Ok(())
    }
}
