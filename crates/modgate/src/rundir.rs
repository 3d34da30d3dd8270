//! The per-user runtime directory (`$XDG_RUNTIME_DIR/modgate`, else `/tmp/modgate-<uid>`) that
//! holds the default pid files, reload reports and upgrade sockets, and how its files are
//! opened. In a shared `/tmp` another local user can create that name first: as a symlink to a
//! directory of their choosing (then `modgate reload` would signal the pid they write there, and
//! the reload report would overwrite a file of theirs choosing), or as a directory they own. So
//! the directory is created `0700` when absent and, when present, used only if it is a real
//! directory (never followed through a symlink), owned by this process's user, and closed to
//! group and others; its files are opened with `O_NOFOLLOW`.

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
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
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
}
