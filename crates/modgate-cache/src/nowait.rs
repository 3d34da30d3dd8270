//! Reads that never wait for the disk: `preadv2(RWF_NOWAIT)` returns what the page cache holds
//! at once, or says it would have to wait. A hit on a recently served object is then read on
//! the request's own thread (like nginx's read from its event loop, minus the risk of blocking
//! on I/O) instead of one blocking-pool hand-off per chunk; only what is not in memory goes to
//! the blocking pool.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// The kernel, file system or a seccomp filter refused `RWF_NOWAIT` once: do not ask again.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Up to `len` bytes of `file` at `offset` if the page cache has them now: `Some` (possibly
/// fewer bytes than asked, never empty), or `None` when the read would wait for the disk, is
/// at end of file, or the kernel or file system cannot do it (the caller then reads the blocking
/// way, which also tells a shrunk file apart).
pub(crate) fn read_cached(file: &File, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
    if len == 0 || UNSUPPORTED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return Ok(None);
    };
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    // libc, not rustix: rustix's preadv2 reads into initialised `IoSliceMut`s, so every call
    // would first zero `len` bytes, on the hot path this module exists to keep cheap.
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: the iovec points at `len` bytes of `buf`'s allocation, which outlives the call;
    // the kernel writes at most `len` bytes there.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(None),
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL | libc::EPERM) => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                Ok(None)
            }
            _ => Err(e),
        };
    }
    let n = usize::try_from(n).unwrap_or(0).min(len);
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: the kernel initialised the first `n` bytes (n <= len <= capacity).
    unsafe { buf.set_len(n) };
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_what_the_page_cache_holds() {
        let mut f = tempfile::tempfile().expect("tempfile");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).expect("write");
        f.sync_all().expect("sync");
        // just written: in the page cache
        let got = read_cached(&f, 1000, 70_000)
            .expect("read")
            .expect("cached");
        assert!(!got.is_empty() && got.len() <= 70_000);
        assert_eq!(got[..], data[1000..1000 + got.len()]);
        // at or past the end: nothing, so the caller reads the blocking way
        assert!(read_cached(&f, 200_000, 10).expect("read").is_none());
        assert!(read_cached(&f, 300_000, 10).expect("read").is_none());
        assert!(read_cached(&f, 0, 0).expect("read").is_none());
    }
}
