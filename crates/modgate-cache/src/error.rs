//! Errors of the disk cache ([`CacheError`]) and their conversion into Pingora errors for the
//! [`Storage`](pingora::cache::Storage) trait methods.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the disk cache.
///
/// A corrupt object is never an error for a lookup (it is a miss, logged and removed); these
/// errors reach callers for configuration mistakes, I/O failures while writing, and writes that
/// cannot be committed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The configuration is unusable.
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("create", "rename", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An object on disk failed validation.
    #[error("corrupt cache object {}: {reason}", path.display())]
    Corrupt {
        /// The meta or body file that failed.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// A body grew beyond the configured maximum object size.
    #[error("cache object too large: {size} bytes exceeds the maximum of {limit} bytes")]
    TooLarge {
        /// Bytes the body would have had.
        size: u64,
        /// The configured maximum.
        limit: u64,
    },
    /// The cache's filesystem cannot take the object: too little free space for its length
    /// (or, for a body of unknown length, less than the configured reserve).
    #[error(
        "cache filesystem at {} is full: {available} bytes free for new objects, {needed} needed",
        path.display()
    )]
    NoSpace {
        /// The cache's object directory.
        path: PathBuf,
        /// Bytes the object would take, plus the reserve kept free.
        needed: u64,
        /// Bytes free on the filesystem, less what writes in progress have been promised.
        available: u64,
    },
    /// The filesystem filled up during a write and the rest of the body would exceed what may
    /// be held in memory for its readers.
    #[error(
        "cache filesystem is full and the rest of the body exceeds the {limit} bytes that may be \
         held in memory meanwhile"
    )]
    SpillFull {
        /// `max_spill_bytes`.
        limit: u64,
    },
    /// The body that was written does not have the length the response header announced.
    #[error("cache body has {written} bytes but Content-Length says {expected}")]
    LengthMismatch {
        /// Bytes received.
        written: u64,
        /// The `Content-Length` of the stored response header.
        expected: u64,
    },
    /// A write was used after it ended or failed.
    #[error("cache write is no longer usable: {0}")]
    WriteClosed(&'static str),
    /// The object was purged while it was being written, so the write was not committed.
    #[error("cache object was purged while it was being written")]
    PurgedDuringWrite,
    /// Pingora could not (de)serialize the cache metadata.
    #[error("cache metadata: {0}")]
    Meta(String),
    /// The LRU eviction state could not be saved or loaded.
    #[error("eviction state in {}: {reason}", dir.display())]
    EvictionState {
        /// The state directory.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A blocking I/O task could not run to completion (runtime shutting down, panic).
    #[error("cache I/O task failed: {0}")]
    Task(String),
}

impl CacheError {
    /// Shorthand for [`CacheError::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CacheError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this is the filesystem being out of space (or quota): the cache cannot hold the
    /// object, which is no fault of the object or of the upstream.
    pub fn is_no_space(&self) -> bool {
        match self {
            CacheError::NoSpace { .. } | CacheError::SpillFull { .. } => true,
            CacheError::Io { source, .. } => is_no_space_io(source),
            _ => false,
        }
    }

    /// Whether storing failed for a reason of the cache's own (its filesystem: no space, an I/O
    /// error), as opposed to the object (too large, a short body) or a purge.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            CacheError::NoSpace { .. }
                | CacheError::SpillFull { .. }
                | CacheError::Io { .. }
                | CacheError::Task(_)
        )
    }

    /// Shorthand for [`CacheError::Corrupt`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        CacheError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// `ENOSPC` or `EDQUOT`.
pub(crate) fn is_no_space_io(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Wrap a [`CacheError`] into the error type the Pingora traits return.
pub(crate) fn to_pingora(e: CacheError) -> Box<pingora::Error> {
    pingora::Error::because(pingora::ErrorType::InternalError, "modgate-cache", e)
}
