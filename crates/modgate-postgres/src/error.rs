//! The errors of the PostgreSQL stores: each names the store (`PostgreSQL 10.0.0.5:5432/modgate`)
//! and what was being done, so a client's 502/503 and the operator's log say which component
//! failed.

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The settings are unusable (a DSN that does not parse, a CA file that cannot be read).
    #[error("PostgreSQL settings: {0}")]
    Settings(String),

    /// The server could not be reached, refused the login, or failed a statement.
    #[error("{store}: {step}: {detail}")]
    Db {
        /// The store, e.g. `PostgreSQL 10.0.0.5:5432/modgate`.
        store: String,
        /// What was being done.
        step: &'static str,
        /// The server's or the connection's error.
        detail: String,
    },

    /// The database's schema is newer than this build's.
    #[error("{store}: schema version {found} is newer than version {supported} that this build understands")]
    SchemaTooNew {
        /// The store.
        store: String,
        /// The version found.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },

    /// The database's schema is older than this build's, and the caller (a command) does not
    /// migrate it.
    #[error(
        "{store}: schema version {found} is older than version {supported} of this build: \
         upgrade the replicas first (each migrates the schema at start)"
    )]
    SchemaTooOld {
        /// The store.
        store: String,
        /// The version found (0: no modgate schema at all).
        found: i64,
        /// The version this build writes.
        supported: i64,
    },

    /// No connection of the pool became free in time.
    #[error("{store}: all {size} connection(s) busy for {waited_ms} ms")]
    PoolTimeout {
        /// The store.
        store: String,
        /// The pool's size.
        size: usize,
        /// How long the caller waited.
        waited_ms: u128,
    },
}

/// The whole chain of a `postgres::Error` (its own text is often only "db error").
pub fn detail(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
