//! The one error type of the fetched index: every variant names the store (the database file,
//! or the shared database's server) and what was being done, or the input that was refused.

use std::path::PathBuf;

/// Everything that can go wrong with the fetched index or a query of it.
#[derive(Debug, thiserror::Error)]
pub enum FetchedError {
    /// The database file or the directory that should hold it could not be created.
    #[error("cannot create {path} for the fetched index: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// There is no index at the configured path (nothing recorded yet, or `fetched:` off).
    #[error(
        "no fetched index at {0} (is `fetched:` configured, and has the gateway served a .zip or \
         .mod since?)"
    )]
    Missing(PathBuf),
    /// The database could not be opened or set up (not an SQLite file, newer schema, ...).
    #[error("cannot open the fetched index {path} ({step}): {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer modgate.
    #[error(
        "the fetched index {path} has schema version {found}, newer than version {supported} \
         that this build of modgate understands"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A statement failed.
    #[error("fetched index {path}: {what}: {source}")]
    Sql {
        /// The database file (`:memory:` for an in-memory index).
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A store other than the SQLite file failed (the shared PostgreSQL index: unreachable,
    /// a statement failed, the schema is newer).
    #[error("{store}: fetched index: {what}: {detail}")]
    Store {
        /// The store, e.g. `PostgreSQL 10.0.0.5:5432/modgate`.
        store: String,
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        detail: String,
    },
    /// A query or a record that cannot be taken as it is.
    #[error("{0}")]
    Invalid(String),
}
