//! Why a vulnerability database could not be loaded, or a lookup could not be answered. Every
//! message is one line that names the file (relative to the database root, e.g.
//! `ID/GO-2022-0475.json`) and, for an entry, the advisory, so an operator can find what is wrong.

use std::io;

/// A database that cannot be used (the whole load fails: a half-written or corrupt database is
/// refused as a whole, never half applied).
#[derive(Debug, thiserror::Error)]
pub enum VulnDbError {
    /// Reading the directory, the zip or one of its files failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path on disk or inside the database.
        path: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A file of the layout is missing in both its `.json` and `.json.gz` forms.
    #[error("{file}.json (or {file}.json.gz) is missing")]
    Missing {
        /// The file without its extension, e.g. `index/db` or `ID/GO-2022-0475`.
        file: String,
    },
    /// A file (after decompression) or the database as a whole exceeds its limit.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file, or "the database".
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// More advisories or zip entries than the limit allows.
    #[error("{what}: more than {limit}")]
    TooMany {
        /// What was counted.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// A `.json.gz` file is not valid gzip.
    #[error("{file}: not valid gzip: {source}")]
    Gzip {
        /// The file.
        file: String,
        /// The decoder's error.
        source: io::Error,
    },
    /// A file is not the JSON its place in the layout requires.
    #[error("{file}: invalid JSON: {source}")]
    Json {
        /// The file.
        file: String,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// The archive is not a readable zip.
    #[error("{path}: not a readable zip archive: {detail}")]
    Zip {
        /// The zip file on disk.
        path: String,
        /// The zip reader's complaint.
        detail: String,
    },
    /// An advisory ID that cannot name a file (path separators, `..`, odd characters).
    #[error("{file}: invalid advisory id {id:?}")]
    InvalidId {
        /// The index that listed it.
        file: String,
        /// The ID as found.
        id: String,
    },
    /// An advisory listed twice in `index/vulns.json`.
    #[error("index/vulns.json lists advisory {id} twice")]
    DuplicateId {
        /// The ID.
        id: String,
    },
    /// An entry file whose `id` is not the one its name says.
    #[error("{file}: holds advisory {found:?}, not the one its name says")]
    IdMismatch {
        /// The file.
        file: String,
        /// The ID inside it.
        found: String,
    },
    /// `index/modules.json` names an advisory that `index/vulns.json` does not list.
    #[error(
        "index/modules.json lists advisory {id} for {module}, which index/vulns.json does not list"
    )]
    Unlisted {
        /// The advisory ID.
        id: String,
        /// The module it was listed under.
        module: String,
    },
    /// A timestamp that is not RFC 3339.
    #[error(
        "{file}: invalid time {value:?} in {field} (want RFC 3339, e.g. 2023-04-03T15:57:51Z)"
    )]
    InvalidTime {
        /// The file.
        file: String,
        /// The JSON field.
        field: &'static str,
        /// The value as found.
        value: String,
    },
    /// A SEMVER range event whose version is not a semantic version.
    #[error("advisory {id}, module {module}: invalid version {version:?} in a SEMVER range")]
    InvalidVersion {
        /// The advisory.
        id: String,
        /// The affected module.
        module: String,
        /// The version as found.
        version: String,
    },
    /// A range event that is not exactly one of `introduced`, `fixed`, `last_affected`, `limit`.
    #[error("advisory {id}, module {module}: a range event must hold exactly one of introduced, fixed, last_affected or limit")]
    InvalidEvent {
        /// The advisory.
        id: String,
        /// The affected module.
        module: String,
    },
}

/// A lookup that cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The version asked about is not a semantic version (`v1.2.3`, a pseudo-version, ...):
    /// a branch name or another query must be resolved first.
    #[error("{version:?} is not a semantic version; resolve the query to a version first")]
    NotSemver {
        /// The version as given.
        version: String,
    },
}
