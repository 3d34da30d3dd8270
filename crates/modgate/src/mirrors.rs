//! Where the git origin keeps its mirrors (`server.git_dir`, else under the cache directory,
//! else beside its socket), and the check that the directory is this user's alone: it holds
//! private repositories fetched with the gateway's credential. Read by the model (a reload
//! verifies it), `modgate check` and start-up (which prepares it).

use std::path::{Path, PathBuf};

use crate::config::GatewayConfig;

/// Where the git mirrors live: `server.git_dir`, else `git/` in the cache directory, else a
/// per-instance directory beside the origin's socket.
pub fn mirrors_dir(config: &GatewayConfig) -> PathBuf {
    config
        .server
        .git_dir
        .as_ref()
        .map(|p| p.0.clone())
        .or_else(|| config.cache.as_ref().map(|c| c.dir.0.join("git")))
        .unwrap_or_else(|| PathBuf::from(format!("{}.mirrors", config.git_origin_sock())))
}

/// Why the mirrors directory `meta` describes is not ours alone to write in: a symlink,
/// not a directory, another user's, or writable by group or others (who may have planted
/// mirrors, hooks or links in it). Changes nothing.
fn not_ours(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let euid = rustix::process::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_string())
    } else if !meta.is_dir() {
        Some("is not a directory".to_string())
    } else if meta.uid() != euid {
        Some(format!(
            "is owned by uid {}, not by this process's uid {euid}",
            meta.uid()
        ))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "has mode {mode:04o}: group or others may write in it"
        ))
    } else {
        None
    }
}

fn mirrors_refusal(dir: &Path, meta: &std::fs::Metadata, problem: &str) -> anyhow::Error {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    anyhow::anyhow!(
        "git mirrors directory {} {problem} (owner uid {}, mode {:04o}): it holds private \
         repositories, so it must be a directory of this user's with no group or other \
         access; remove it or set server.git_dir",
        dir.display(),
        meta.uid(),
        meta.permissions().mode() & 0o7777
    )
}

/// Checks, changing nothing, that an existing mirrors directory is ours alone to write in
/// ([`not_ours`]); a missing one is fine (it is made private when first needed). For
/// `modgate check` and for a reload, which must not create or change anything on disk.
pub fn verify_mirrors_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => match not_ours(&meta) {
            Some(p) => Err(mirrors_refusal(dir, &meta, &p)),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => anyhow::bail!("git mirrors {}: {e}", dir.display()),
    }
}

/// Makes the mirrors directory ready at start: created (mode 0700) when missing, refused
/// when it is not ours alone ([`not_ours`]), and made `0700` when it is ours and others may
/// only read it (made by an older version or a umask: nothing can be in it but what we put
/// there).
pub fn prepare_mirrors_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::anyhow!(
                "git mirrors {}: cannot create {}: {e}",
                dir.display(),
                parent.display()
            )
        })?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("git mirrors {}: cannot create it: {e}", dir.display()),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| anyhow::anyhow!("git mirrors {}: {e}", dir.display()))?;
    if let Some(p) = not_ours(&meta) {
        return Err(mirrors_refusal(dir, &meta, &p));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).map_err(
            |e| {
                mirrors_refusal(
                    dir,
                    &meta,
                    &format!("may be entered by group or others and cannot be made private: {e}"),
                )
            },
        )?;
    }
    Ok(())
}
