//! The one error type of the ledger crate. Every variant names what failed:
//! the database path, the ledger operation and the module version it was
//! about, or the zip entry that could not be hashed.

use std::path::PathBuf;

/// Everything that can go wrong while hashing artifacts or using the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The directory that should hold the database could not be created.
    #[error("cannot create the directory {path} for the integrity ledger: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The database file could not be opened, is not an SQLite database, or
    /// its schema could not be set up.
    #[error("cannot open the integrity ledger {path} ({step}): {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What was being done: `switching to WAL mode`, `migrating the
        /// schema`, ...
        step: &'static str,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// The sightings store (cooldown's clock) could not be opened, is not an SQLite
    /// database, or its schema could not be set up or is newer than this build's.
    #[error("cannot open the sightings store {path} ({step}): {detail}")]
    OpenSightings {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// What went wrong.
        detail: String,
    },

    /// The database was written by a newer modgate with a schema this build
    /// does not know.
    #[error(
        "the integrity ledger {path} has schema version {found}, newer than version {supported} \
         that this build of modgate understands"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },

    /// An SQLite statement failed during a ledger operation.
    #[error("integrity ledger: {op} of {key} failed: {source}")]
    Sqlite {
        /// The ledger operation (`observe`, `get`, `accept`, ...).
        op: &'static str,
        /// What the operation was about, e.g. `example.com/m@v1.0.0 zip`.
        key: String,
        /// The underlying SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// A shared ledger store (PostgreSQL) could not be opened: unreachable, refused the
    /// credentials, or its schema could not be set up or is newer than this build's.
    #[error("cannot open the integrity ledger {store} ({step}): {detail}")]
    OpenStore {
        /// The store, e.g. `PostgreSQL ledger 10.0.0.5:5432/modgate`.
        store: String,
        /// What was being done.
        step: &'static str,
        /// What went wrong.
        detail: String,
    },

    /// A shared ledger store (PostgreSQL) could not be reached or failed an operation.
    #[error("integrity ledger ({store}): {op} of {key} failed: {detail}")]
    Store {
        /// The store, e.g. `PostgreSQL ledger 10.0.0.5:5432/modgate`.
        store: String,
        /// The ledger operation (`observe`, `get`, `accept`, ...).
        op: &'static str,
        /// What the operation was about.
        key: String,
        /// What went wrong.
        detail: String,
    },

    /// A row in the database does not hold what the ledger wrote there.
    #[error("integrity ledger: corrupt row for {key}: {detail}")]
    CorruptRow {
        /// The module version (and artifact) of the row.
        key: String,
        /// What is wrong with it.
        detail: String,
    },

    /// An argument was rejected before touching the database.
    #[error("integrity ledger: invalid {what} {value:?}: {detail}")]
    InvalidInput {
        /// Which argument (`sha256`, `h1`, `module`, ...).
        what: &'static str,
        /// The offending value (truncated when long).
        value: String,
        /// Why it was rejected.
        detail: &'static str,
    },

    /// The bytes are not a readable zip archive.
    #[error("cannot hash module zip: not a readable zip archive: {detail}")]
    ZipArchive {
        /// The zip reader's complaint.
        detail: String,
    },

    /// One entry of the zip archive is not acceptable or could not be read.
    #[error("cannot hash module zip: entry {name:?}: {detail}")]
    ZipEntry {
        /// The entry's name, lossily decoded.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// Shortens `value` for inclusion in an error message (at most 120 bytes and an ellipsis).
pub fn excerpt(value: &str) -> String {
    const MAX: usize = 120;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}
