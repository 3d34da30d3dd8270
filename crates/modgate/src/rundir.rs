//! The per-user runtime directory (`$XDG_RUNTIME_DIR/modgate`, else `/tmp/modgate-<uid>`) that
//! holds the default pid files, reload reports and upgrade sockets, and how its files are
//! opened. In a shared `/tmp` another local user can create that name first: as a symlink to a
//! directory of their choosing (then `modgate reload` would signal the pid they write there, and
//! the reload report would overwrite a file of theirs choosing), or as a directory they own. So
//! the directory is created `0700` when absent and, when present, used only if it is a real
//! directory (never followed through a symlink), owned by this process's user, and closed to
//! group and others; its files are opened with `O_NOFOLLOW`.
//!
//! A pid file alone does not prove that the process it names is the gateway: after a `kill -9`
//! the file stays and its pid can be reused by any process. So the gateway holds a `fcntl`
//! write lock on its pid file for as long as it runs ([`write_locked_pid`]), and a pid is taken
//! for the gateway's only when the file's lock holder is that pid ([`running_pid`]). The file is
//! written under another name and renamed into place, so the new process of a graceful upgrade
//! locks its own file while the old one still holds the lock on the file it replaces.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why the metadata of an existing runtime directory (as `lstat` gives it, not followed) makes
/// it unusable for a process running as `euid`; `None` when it is a private directory of ours.
pub fn unsafe_because(meta: &std::fs::Metadata, euid: u32) -> Option<String> {
    if meta.file_type().is_symlink() {
        return Some("is a symbolic link".into());
    }
    if !meta.is_dir() {
        return Some("is not a directory".into());
    }
    if meta.uid() != euid {
        return Some(format!(
            "is owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Some(format!(
            "is open to group or others (mode {mode:04o}, must be 0700)"
        ));
    }
    None
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks that `dir` is a private directory of this user, without creating it. `hint` says what
/// to do instead (remove it, or name other files).
pub fn verify(dir: &Path, hint: &str) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| anyhow::anyhow!("runtime directory {}: {e}", dir.display()))?;
    match unsafe_because(&meta, euid()) {
        None => Ok(()),
        Some(why) => anyhow::bail!(
            "runtime directory {} {why}; another local user may have planted it: {hint}",
            dir.display()
        ),
    }
}

/// Creates `dir` (`0700`) when it is absent, then [`verify`]s it.
pub fn ensure(dir: &Path, hint: &str) -> anyhow::Result<()> {
    if let Err(e) = std::fs::symlink_metadata(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            anyhow::bail!("runtime directory {}: {e}", dir.display());
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| anyhow::anyhow!("{}: {e}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            // Made meanwhile: judged below like any existing one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => anyhow::bail!("runtime directory {}: {e}", dir.display()),
        }
    }
    verify(dir, hint)
}

/// Writes `text` to `path`, replacing its contents, without following a symlink at `path`.
pub fn write_nofollow(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(text)
}

/// Writes this process's pid to `path` (never through a symlink) and returns the open file,
/// which holds a `fcntl` write lock on it: the lock lasts while the file stays open in this
/// process (and ends with the process). Locks of `fcntl` are released when the process closes
/// any descriptor of the file, so nothing else in the process may open it while it runs.
pub fn write_locked_pid(path: &Path) -> std::io::Result<File> {
    use std::io::Write;
    let pid = std::process::id();
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the pid file path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{pid}.tmp"));
    let tmp = path.with_file_name(tmp_name);
    // A leftover of an earlier process with this pid (never followed: unlink removes a link).
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = (|| {
        // F_SETLK with F_WRLCK on the whole file (a process lock, which F_GETLK reports).
        rustix::fs::fcntl_lock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        f.write_all(format!("{pid}\n").as_bytes())?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(f)
}

/// A lock request of type `kind` on the whole file, for `F_GETLK` (libc, not rustix: rustix's
/// `fcntl_lock` only sets locks, and `running_pid` asks who holds one).
fn whole_file_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value, completed below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0;
    lock
}

/// Why a pid file does not name a running gateway.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// It cannot be opened or read.
    #[error("{0}")]
    Read(std::io::Error),
    /// It holds no pid.
    #[error("holds no pid ({0:?})")]
    Bad(String),
    /// The pid it names does not hold its lock: a stale file, the pid perhaps reused.
    #[error(
        "names pid {pid}, which is not a modgate gateway holding that file ({}); a stale pid \
         file (a gateway killed without cleaning up, its pid reused?): no process was signalled",
        match holder {
            Some(h) => format!("its lock is held by pid {h}"),
            None => "no process holds its lock".to_string(),
        }
    )]
    NotHolder { pid: i32, holder: Option<i32> },
}

/// The pid of the gateway that runs with the pid file `path`: the pid the file names, if that
/// process holds the file's lock ([`write_locked_pid`]).
pub fn running_pid(path: &Path) -> Result<i32, PidFileError> {
    use std::os::fd::AsRawFd;
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(PidFileError::Read)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(PidFileError::Read)?;
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let pid = match text.parse::<i32>() {
        Ok(p) if p > 0 => p,
        _ => return Err(PidFileError::Bad(text)),
    };
    let mut lock = whole_file_lock(libc::F_WRLCK);
    // SAFETY: F_GETLK fills in the flock struct, valid for the call, on a descriptor we own.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut lock) } != 0 {
        return Err(PidFileError::Read(std::io::Error::last_os_error()));
    }
    let holder = (i32::from(lock.l_type) != libc::F_UNLCK).then_some(lock.l_pid);
    if holder == Some(pid) {
        Ok(pid)
    } else {
        Err(PidFileError::NotHolder { pid, holder })
    }
}

/// Reads `path` without following a symlink at `path`.
pub fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_private_real_directory_of_ours_is_used() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let me = euid();
        let dir = tmp.path().join("modgate");
        ensure(&dir, "hint").expect("created");
        let meta = std::fs::symlink_metadata(&dir).expect("lstat");
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(unsafe_because(&meta, me), None);
        // Someone else's.
        assert!(
            unsafe_because(&meta, me.wrapping_add(1)).is_some_and(|w| w.contains("owned by uid"))
        );
        // Readable by the group.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        let e = verify(&dir, "remove it").expect_err("group-readable");
        assert!(e.to_string().contains("group or others (mode 0750"), "{e}");
        assert!(e.to_string().ends_with("remove it"), "{e}");
        // A symlink to a private directory of ours is still refused, and not followed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let e = ensure(&link, "x").expect_err("symlink");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A file.
        let file = tmp.path().join("file");
        std::fs::write(&file, "").expect("write");
        assert!(verify(&file, "x").is_err());
    }

    #[test]
    fn files_are_never_written_or_read_through_a_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("victim");
        std::fs::write(&target, "precious").expect("write");
        let link = tmp.path().join("gateway.pid");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(write_nofollow(&link, b"1\n").is_err());
        assert!(read_nofollow(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
        let plain = tmp.path().join("plain.pid");
        write_nofollow(&plain, b"42\n").expect("write");
        write_nofollow(&plain, b"7\n").expect("rewrite");
        assert_eq!(read_nofollow(&plain).expect("read"), b"7\n");
    }

    #[test]
    fn a_pid_file_names_the_gateway_only_while_its_process_holds_the_lock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("gateway.pid");
        // A pid file nobody holds (a process's own locks never show in its F_GETLK, so the
        // holder's side is covered end to end, by `modgate reload` of a running gateway).
        std::fs::write(&path, "1\n").expect("write");
        let e = running_pid(&path).expect_err("no holder");
        assert!(e.to_string().contains("no process holds its lock"), "{e}");
        assert!(e.to_string().contains("names pid 1,"), "{e}");
        write_nofollow(&path, b"nonsense\n").expect("write");
        assert!(matches!(running_pid(&path), Err(PidFileError::Bad(_))));
        assert!(matches!(
            running_pid(&tmp.path().join("absent.pid")),
            Err(PidFileError::Read(_))
        ));
        // Written by us: the file names us, the lock is ours, and no temporary file is left.
        let held = write_locked_pid(&path).expect("write");
        assert_eq!(
            read_nofollow(&path).expect("read"),
            format!("{}\n", std::process::id()).into_bytes()
        );
        assert_eq!(std::fs::read_dir(tmp.path()).expect("list").count(), 1);
        drop(held);
        // Through a symlink: refused.
        let link = tmp.path().join("link.pid");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(running_pid(&link).is_err());
    }
}
