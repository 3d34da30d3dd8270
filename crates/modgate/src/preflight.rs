//! What `modgate run` will open, probed for `modgate check` without creating anything (like
//! `nginx -t`, but leaving no file or directory behind, so a check run as another user, root
//! included, cannot leave a directory the service then cannot write): the cache directory and
//! the ledger's (created with their parents), the git mirrors directory, and the audit file
//! (created in an existing directory), and the per-user runtime directory when the pid file or
//! upgrade socket is its default there (refused as `run` refuses it: a symlink, another
//! user's, or open to others, [`crate::rundir::verify`]). Each problem is named with the
//! setting it comes from.
//!
//! Writability is asked of the kernel with `access(2)`, for the user running `check`: run it as
//! the service's user for the answer that matters.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::{AuditOutput, GatewayConfig};

/// Whether this user may write into (and enter) `path`, per `access(2)`.
fn writable(path: &Path) -> Result<(), String> {
    use rustix::fs::Access;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: contains a NUL byte", path.display()))?;
    rustix::fs::access(c.as_c_str(), Access::WRITE_OK | Access::EXEC_OK)
        .map_err(|e| format!("{}: {}", path.display(), std::io::Error::from(e)))
}

/// Why the directory `dir` could not be used or created with its parents (`create_dir_all`):
/// the nearest part of it that exists must be a directory this user may write into.
pub fn creatable_dir(dir: &Path) -> Result<(), String> {
    for at in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => {
                return writable(at).map_err(|e| {
                    if at == dir {
                        format!("not writable: {e}")
                    } else {
                        format!("cannot be created: {e}")
                    }
                })
            }
            Ok(_) if at == dir => return Err("exists and is not a directory".into()),
            Ok(_) => {
                return Err(format!(
                    "cannot be created: {} is not a directory",
                    at.display()
                ))
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    // Relative to the working directory, none of whose parts exist yet.
    writable(Path::new("."))
}

/// Why the file `file` could not be opened for appending, created if absent in a directory
/// that must exist (as the audit log is opened).
pub fn appendable_file(file: &Path) -> Result<(), String> {
    match std::fs::metadata(file) {
        Ok(m) if m.is_dir() => Err("is a directory".into()),
        Ok(_) => {
            let c = CString::new(file.as_os_str().as_bytes())
                .map_err(|_| "contains a NUL byte".to_string())?;
            rustix::fs::access(c.as_c_str(), rustix::fs::Access::WRITE_OK)
                .map_err(|e| format!("not writable: {}", std::io::Error::from(e)))
        }
        Err(_) => {
            let parent = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => {
                    writable(parent).map_err(|e| format!("cannot be created: {e}"))
                }
                Ok(_) => Err(format!(
                    "cannot be created: {} is not a directory",
                    parent.display()
                )),
                Err(e) => Err(format!(
                    "cannot be created: its directory {}: {e}",
                    parent.display()
                )),
            }
        }
    }
}

/// Every problem `run` would meet opening the files and directories of `config`, one line
/// each: `cache.dir /x: cannot be created: /y is not a directory`.
pub fn problems(config: &GatewayConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut dir = |what: &str, p: &Path| {
        if let Err(e) = creatable_dir(p) {
            out.push(format!("{what} {}: {e}", p.display()));
        }
    };
    if let Some(c) = &config.cache {
        dir("cache.dir", &c.dir.0);
        let ledger = c.ledger_path();
        if let Some(parent) = ledger
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && *p != c.dir.0)
        {
            dir("cache.ledger (its directory)", parent);
        }
        if let Some(fetched) = config.fetched_path() {
            if let Some(parent) = fetched
                .parent()
                .filter(|p| !p.as_os_str().is_empty() && *p != c.dir.0)
            {
                dir("fetched.path (its directory)", parent);
            }
        }
    }
    if let Some(g) = &config.server.git_dir {
        dir("server.git_dir", &g.0);
    }
    // What `run` refuses about an existing mirrors directory (another user's, a symlink,
    // writable by others), wherever it is.
    if let Err(e) = crate::mirrors::verify_mirrors_dir(&crate::mirrors::mirrors_dir(config)) {
        out.push(format!("{e:#}"));
    }
    // The default runtime directory, judged as `run` judges it before creating anything in
    // it (`server::private_parent`); when absent, `run` creates it.
    let runtime = crate::config::instance_dir();
    let defaults = [&config.server.pid_file, &config.server.upgrade_sock]
        .iter()
        .any(|f| Path::new(f.as_str()).parent() == Some(runtime.as_path()));
    if defaults {
        if std::fs::symlink_metadata(&runtime).is_ok() {
            if let Err(e) = crate::rundir::verify(&runtime, crate::server::RUNTIME_HINT) {
                out.push(format!("{e:#}"));
            }
        } else if let Err(e) = creatable_dir(&runtime) {
            out.push(format!("runtime directory {}: {e}", runtime.display()));
        }
    }
    if let AuditOutput::File(f) = &config.audit.output {
        if let Err(e) = appendable_file(f) {
            out.push(format!("audit.output {}: {e}", f.display()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_below_a_file_cannot_be_created_and_nothing_is_made() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let e = creatable_dir(&file.join("a/b")).expect_err("below a file");
        assert!(e.contains("is not a directory"), "{e}");
        assert_eq!(
            creatable_dir(&file).expect_err("a file"),
            "exists and is not a directory"
        );
        let deep = tmp.path().join("x/y/z");
        creatable_dir(&deep).expect("creatable");
        assert!(!tmp.path().join("x").exists(), "probing created something");
        creatable_dir(tmp.path()).expect("existing");
    }

    #[test]
    fn the_audit_file_needs_an_existing_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        appendable_file(&tmp.path().join("audit.jsonl")).expect("creatable");
        let e = appendable_file(&tmp.path().join("nope/audit.jsonl")).expect_err("no dir");
        assert!(e.contains("cannot be created: its directory"), "{e}");
        assert_eq!(
            appendable_file(tmp.path()).expect_err("dir"),
            "is a directory"
        );
        let existing = tmp.path().join("a.jsonl");
        std::fs::write(&existing, "").expect("write");
        appendable_file(&existing).expect("appendable");
        assert!(!tmp.path().join("audit.jsonl").exists());
    }
}
