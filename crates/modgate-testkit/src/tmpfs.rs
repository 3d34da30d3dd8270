//! A small tmpfs mounted for one test — a real filesystem that fills up, for the full-disk
//! faults (cache, audit log) — unmounted when dropped. Mounting needs root: under `CI` a
//! machine that cannot mount one fails the test; elsewhere the test says loudly that it skips.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount` syntax: `256k`, `2m`) with the root directory's
    /// `mode`. `None` (after saying why) when this machine cannot; panics under CI.
    pub fn mount(size: &str, mode: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode={mode:04o}"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            !crate::tools::in_ci(),
            "cannot mount a tmpfs (the test needs root; CI is set, so this fails): {why}"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (the test needs root): {why}");
        None
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes for an unprivileged writer (`df`'s "Avail").
    pub fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }

    /// Fills the filesystem: a file written until the disk says it is full. Returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        for _ in 0..1_000_000 {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let _ = f.write(b"x"); // the last bytes of a partly filled page
        path
    }
}

/// `ENOSPC` on Linux.
const fn libc_enospc() -> i32 {
    28
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a gateway the test has not reaped yet may still hold a file in it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
