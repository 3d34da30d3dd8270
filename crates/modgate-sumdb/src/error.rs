//! The one error type of the checksum-database store: every variant names what failed — the
//! database file, the module version, the tile, the key file — so an operator can act on it.

use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong opening, appending to, reading or verifying the log, or handling
/// its key files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file could not be opened or set up (not SQLite, schema, pragmas).
    #[error("cannot open the checksum database {path} ({step}): {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What was being done (`switching to WAL mode`, `creating the schema`, …).
        step: &'static str,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// The file belongs to another log: its name or verifier key is not the signer's. A new key
    /// means a new log name (and a new file); a log is never re-signed under another key.
    #[error(
        "the checksum database {path} is the log {file_key:?}, not {signer_key:?}: a rotated key \
         needs a new log name and a new file"
    )]
    WrongLog {
        /// The database file.
        path: PathBuf,
        /// The verifier key recorded in the file.
        file_key: String,
        /// The verifier key of the signer it was opened with.
        signer_key: String,
    },

    /// A shared store already holds the log of this name under another verifier key. A new key
    /// means a new log name; a log is never re-signed under another key.
    #[error(
        "{store} holds the log {logged_key:?}, not {signer_key:?}: a rotated key needs a new log \
         name"
    )]
    WrongKey {
        /// The store, e.g. `PostgreSQL 10.0.0.5:5432/modgate`.
        store: String,
        /// The verifier key the store holds for the log's name.
        logged_key: String,
        /// The verifier key of the signer it was opened with.
        signer_key: String,
    },

    /// A shared store failed (unreachable, a statement refused): names the store and the step.
    #[error("checksum database in {store}: {op} failed: {detail}")]
    Store {
        /// The store, e.g. `PostgreSQL 10.0.0.5:5432/modgate`.
        store: String,
        /// What was being done.
        op: String,
        /// The store's error.
        detail: String,
    },

    /// The file's schema is newer than this build understands, or its tables are not this
    /// crate's.
    #[error(
        "the checksum database {path} has schema {found:?}; this build writes schema {supported}"
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The schema version found (empty when missing).
        found: String,
        /// The version this build writes.
        supported: u32,
    },

    /// An SQLite statement failed.
    #[error("checksum database: {op} failed: {source}")]
    Sqlite {
        /// What was being done (`append`, `reading tile tile/8/0/000`, …).
        op: String,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// What the file holds is not what this crate writes (a hash of the wrong length, a gap
    /// in the record ids, records no signed head covers): the file was changed by hand or is
    /// damaged; `verify` says more.
    #[error("checksum database is inconsistent: {0}")]
    Corrupt(String),

    /// The module version is already logged with other go.sum lines. History is never
    /// rewritten: the logged lines stay, the offered ones are refused.
    #[error(
        "{path}@{version} is already logged with other checksums: logged {logged:?}, offered \
         {offered:?}"
    )]
    Conflict {
        /// The module path.
        path: String,
        /// The version.
        version: String,
        /// The record text in the log.
        logged: String,
        /// The record text offered now.
        offered: String,
    },

    /// An append's input is not a module version the log can hold (bad path, version or hash).
    #[error("cannot log {path}@{version}: {reason}")]
    InvalidEntry {
        /// The module path as given.
        path: String,
        /// The version as given.
        version: String,
        /// What is wrong.
        reason: String,
    },

    /// A read asked for records or a tile beyond the latest signed tree.
    #[error("{what} is not within the signed tree of {size} records")]
    NotInTree {
        /// What was asked for (`tile/8/0/001`, `records 5..9`).
        what: String,
        /// The latest signed tree size.
        size: u64,
    },

    /// A log computation failed (a stored hash missing while appending, …).
    #[error("checksum database: {0}")]
    Tlog(#[from] modgate_tlog::TlogError),

    /// The batch this append was part of failed as a whole (its transaction rolled back;
    /// nothing of it is in the log).
    #[error("the append batch failed and was rolled back: {0}")]
    BatchFailed(Arc<Error>),

    /// The appender's thread is gone (it panicked, or the appender is shutting down).
    #[error("the checksum database appender has stopped")]
    AppenderStopped,

    /// The directory for the database file could not be created.
    #[error("cannot create the directory {path} for the checksum database: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The appender's thread could not be started.
    #[error("cannot start the checksum database appender thread: {0}")]
    Spawn(#[source] std::io::Error),

    /// A key file could not be created, read or written.
    #[error("key file {path}: {detail}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What was being done.
        detail: &'static str,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A signer key file that group or others may read: the key could have leaked.
    #[error(
        "signer key file {path} has mode {mode:04o}; it must not be readable or writable by group \
         or others (chmod 600 {path})"
    )]
    KeyFileMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A key that is not a valid signer or verifier key.
    #[error("key: {0}")]
    Key(#[from] modgate_tlog::NoteError),
}

impl Error {
    /// An [`Error::Sqlite`] maker for `map_err`.
    pub(crate) fn sqlite(op: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
        let op = op.into();
        move |source| Error::Sqlite { op, source }
    }
}
