//! The change generation: a counter in `<root>/generation`, mapped shared by every process that
//! opens the cache on this machine (the gateway, `modgate cache purge`, the new process of a
//! graceful upgrade). Whoever renames or deletes a meta file adds one afterwards. A memory-tier
//! object remembers the generation at which its meta file was last seen on disk, so a hit only
//! looks at the file system (`statx`) when something changed since: a purge by another process
//! is still noticed on the next lookup after it returns, without a system call per hit.
//!
//! Only processes on one machine share the mapping; a cache directory shared between machines
//! (not supported anyway) would need the check on every hit. If the file cannot be opened or
//! mapped, [`Generation::get`] is always "unknown" and every hit checks, as before.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The name of the counter file in the cache root.
pub(crate) const FILE: &str = "generation";

/// "Not seen at any generation": forces a check.
pub(crate) const UNCHECKED: u64 = u64::MAX;

/// A shared mapping of the counter (or none).
pub(crate) struct Generation {
    map: Option<Mapping>,
}

struct Mapping {
    ptr: *mut std::ffi::c_void,
    _file: File,
}

// SAFETY: the mapping is only accessed through an AtomicU64 (atomic loads and adds); the
// pointer stays valid until Drop unmaps it, which needs exclusive ownership.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing uses the mapping any more.
        let _ = unsafe { rustix::mm::munmap(self.ptr, 8) };
    }
}

impl Generation {
    /// Maps `<root>/generation`, creating it (8 zero bytes) if missing; on any failure the
    /// counter is off (logged) and every hit checks the file system.
    pub(crate) fn open(root: &Path) -> Generation {
        let path = root.join(FILE);
        match Self::map(&path) {
            Ok(m) => Generation { map: Some(m) },
            Err(e) => {
                log::warn!(
                    "disk cache: no shared change generation ({}: {e}); memory hits check the \
                     meta file each time",
                    path.display()
                );
                Generation { map: None }
            }
        }
    }

    fn map(path: &Path) -> std::io::Result<Mapping> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() < 8 {
            // two processes racing here both extend to 8 zero bytes: harmless
            file.set_len(8)?;
        }
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh shared mapping of the file's first 8 bytes (the file is at least that
        // long), at an address the kernel picks (so no existing mapping is replaced).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                8,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &file,
                0,
            )
        }?;
        Ok(Mapping { ptr, _file: file })
    }

    fn counter(&self) -> Option<&AtomicU64> {
        // SAFETY: the mapping is page-aligned, 8 bytes long, lives as long as `self`, and is only
        // ever accessed atomically (here and in the other processes).
        self.map
            .as_ref()
            .map(|m| unsafe { AtomicU64::from_ptr(m.ptr.cast::<u64>()) })
    }

    /// The current generation, or [`UNCHECKED`] when there is no shared counter (so nothing
    /// ever matches and every hit checks).
    pub(crate) fn get(&self) -> u64 {
        match self.counter() {
            Some(c) => c.load(Ordering::Acquire).min(UNCHECKED - 1),
            None => UNCHECKED,
        }
    }

    /// Something on disk changed (a meta file renamed or deleted): call after the change.
    pub(crate) fn bump(&self) {
        if let Some(c) = self.counter() {
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                Some(if g >= UNCHECKED - 1 { 0 } else { g + 1 })
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_of_one_file_see_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Generation::open(dir.path());
        let b = Generation::open(dir.path());
        let g = a.get();
        assert_ne!(g, UNCHECKED);
        assert_eq!(b.get(), g);
        b.bump();
        assert_eq!(a.get(), g + 1);
        a.bump();
        assert_eq!(b.get(), g + 2);
    }

    #[test]
    fn without_a_counter_nothing_matches() {
        let g = Generation::open(Path::new("/nonexistent/dir/for/sure"));
        assert_eq!(g.get(), UNCHECKED);
        g.bump();
        assert_eq!(g.get(), UNCHECKED);
    }
}
