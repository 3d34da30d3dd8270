//! The one error type of the Git module source. Every variant names what
//! failed (module, version, git subcommand) without ever carrying a
//! credential: git's standard error is kept only as a bounded excerpt, and
//! the argument lists recorded here never contain secrets by construction
//! (credentials travel in the child's environment, see `transport`).

use std::path::PathBuf;

/// Everything that can go wrong while answering for a module from Git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The module path, repository root or URL given to the source is not
    /// usable.
    #[error("{what}: {detail}")]
    Config {
        /// What was being configured, e.g. `module path example.com/x`.
        what: String,
        /// Why it is unusable.
        detail: String,
    },

    /// The revision does not exist in the repository (Go's
    /// `UnknownRevisionError`): a 404 for the GOPROXY protocol.
    #[error("{module}@{rev}: unknown revision {rev}")]
    UnknownRevision {
        /// The module path.
        module: String,
        /// The revision that was asked for.
        rev: String,
    },

    /// The Git host has no such repository (git's "repository '…' not
    /// found" over HTTP, "does not appear to be a git repository" over
    /// ssh/file, hosts' "Repository not found"): Go's `notExistError`, a
    /// 404 for the GOPROXY protocol, so `,direct` and `on: not-found`
    /// chains go on to the next source.
    #[error("repository {url} not found on the Git host: {detail}")]
    RepositoryNotFound {
        /// The repository URL (never carries credentials: see `check_url`).
        url: String,
        /// A bounded excerpt of what git said.
        detail: String,
    },

    /// The revision exists but is not a valid version of this module, or
    /// the module does not exist at it (missing go.mod, wrong major
    /// version, ...), in Go's words: a 404 for the GOPROXY protocol.
    #[error("{module}@{version}: invalid version: {detail}")]
    InvalidVersion {
        /// The module path.
        module: String,
        /// The version that was asked for.
        version: String,
        /// Go's explanation.
        detail: String,
    },

    /// The module zip cannot be built: files with invalid names, case
    /// collisions, oversized go.mod/LICENSE, or a source tree over 500 MiB.
    #[error("{module}@{version}: create zip: {detail}")]
    Zip {
        /// The module path.
        module: String,
        /// The version.
        version: String,
        /// Which files and why.
        detail: String,
    },

    /// A git subprocess failed.
    #[error("git {command} failed ({status}): {stderr}")]
    Git {
        /// The git subcommand and its non-secret arguments.
        command: String,
        /// The exit status as text.
        status: String,
        /// A bounded excerpt of git's standard error.
        stderr: String,
    },

    /// A git subprocess ran past its deadline and was killed.
    #[error("git {command} timed out after {seconds} s")]
    Timeout {
        /// The git subcommand.
        command: String,
        /// The deadline.
        seconds: u64,
    },

    /// A git subprocess wrote more than it is allowed to.
    #[error("git {command} produced more than {limit} bytes")]
    OutputTooLarge {
        /// The git subcommand.
        command: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// git's output could not be understood.
    #[error("unexpected output from git {command}: {detail}")]
    BadOutput {
        /// The git subcommand.
        command: String,
        /// What was wrong.
        detail: String,
    },

    /// A local file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    /// Whether the error means "this module version does not exist" (the
    /// GOPROXY protocol's 404/410) rather than a failure of the Git host or
    /// of this machine.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            GitError::UnknownRevision { .. }
                | GitError::InvalidVersion { .. }
                | GitError::RepositoryNotFound { .. }
        )
    }

    pub(crate) fn invalid(module: &str, version: &str, detail: impl Into<String>) -> GitError {
        GitError::InvalidVersion {
            module: module.to_owned(),
            version: version.to_owned(),
            detail: detail.into(),
        }
    }
}

/// Whether git's standard error (of `ls-remote`) says the repository does
/// not exist, as opposed to the host failing or refusing the credential:
/// git's own words over HTTP (the host answered 404/410 to `info/refs`), over
/// ssh and `file://` (`does not appear to be a git repository`), and the
/// words GitHub, GitLab and Gitea print over ssh.
pub(crate) fn says_repository_missing(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    (s.contains("fatal: repository '") && s.contains("' not found"))
        || s.contains("does not appear to be a git repository")
        || s.contains("repository not found")
        || s.contains("repository does not exist")
        || s.contains("the project you were looking for could not be found")
}

/// At most this many bytes of a subprocess's standard error are kept.
pub(crate) const STDERR_EXCERPT: usize = 2048;

/// A printable, bounded excerpt of `bytes` for error messages.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(STDERR_EXCERPT)];
    let text = String::from_utf8_lossy(cut);
    text.trim().replace('\n', "; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_repositories_are_told_from_failures() {
        for missing in [
            "fatal: repository 'http://127.0.0.1:4000/g/nope.git/' not found",
            "fatal: '/srv/git/nope.git' does not appear to be a git repository; fatal: Could not read from remote repository.",
            "ERROR: Repository not found.; fatal: Could not read from remote repository.",
            "remote: ERROR: The project you were looking for could not be found or you don't have permission to view it.",
            "Gitea: Repository does not exist",
        ] {
            assert!(says_repository_missing(missing), "{missing}");
        }
        for failure in [
            "fatal: unable to access 'http://127.0.0.1:1/x.git/': Failed to connect to 127.0.0.1 port 1",
            "fatal: could not read Username for 'https://h.example': terminal prompts disabled",
            "fatal: Authentication failed for 'https://h.example/g/r.git/'",
            "remote: Internal Server Error",
        ] {
            assert!(!says_repository_missing(failure), "{failure}");
        }
    }
}
