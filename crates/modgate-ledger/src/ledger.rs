//! The SQLite-backed integrity ledger.
//!
//! One row per `(module, version, artifact)` holds the hashes of the bytes
//! first seen for it. [`Ledger::observe`] records a new triple or compares
//! against the recorded one in a single `BEGIN IMMEDIATE` transaction, so
//! concurrent observers — threads sharing a [`Ledger`], or several
//! connections and processes on the same file — agree on exactly one first
//! observation. [`Ledger::accept`] lets an operator deliberately replace the
//! recorded hashes; the replaced record, who accepted, when and why go to a
//! history table.
//!
//! The database runs in WAL mode with `synchronous=FULL` (a recorded
//! observation survives a power cut once `observe` returns) and a busy
//! timeout, so writers on the same file wait for each other instead of
//! failing. The schema is versioned in a `schema_version` table; opening an
//! older database applies the missing migrations, opening a newer one is
//! refused.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::error::{excerpt, LedgerError};
use crate::store::{
    check_text, compare, key_of, list_key, now_unix, prefix_range, Compared, LedgerStore,
    Observation,
};

/// The newest schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another connection's write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Schema migrations; entry `i` brings the schema from version `i` to
/// `i + 1`. Append only: never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: entries and the history of accepted changes.
    "CREATE TABLE entries (
        module          TEXT    NOT NULL,
        version         TEXT    NOT NULL,
        artifact        TEXT    NOT NULL CHECK (artifact IN ('mod', 'zip', 'info')),
        sha256          TEXT    NOT NULL,
        h1              TEXT,
        size            INTEGER NOT NULL CHECK (size >= 0),
        first_seen_unix INTEGER NOT NULL,
        source          TEXT    NOT NULL,
        accepted_by     TEXT,
        PRIMARY KEY (module, version, artifact)
    ) WITHOUT ROWID;
    CREATE TABLE history (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        module              TEXT    NOT NULL,
        version             TEXT    NOT NULL,
        artifact            TEXT    NOT NULL,
        old_sha256          TEXT,
        old_h1              TEXT,
        old_size            INTEGER,
        old_first_seen_unix INTEGER,
        old_source          TEXT,
        old_accepted_by     TEXT,
        new_sha256          TEXT    NOT NULL,
        new_h1              TEXT,
        new_size            INTEGER NOT NULL,
        operator            TEXT    NOT NULL,
        reason              TEXT    NOT NULL,
        accepted_unix       INTEGER NOT NULL
    );
    CREATE INDEX history_by_version ON history (module, version);",
];

/// Which file of a module version an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Artifact {
    /// The `go.mod` file (`@v/VERSION.mod`).
    Mod,
    /// The module zip (`@v/VERSION.zip`).
    Zip,
    /// The version info JSON (`@v/VERSION.info`).
    Info,
}

impl Artifact {
    /// All artifacts, in the order `mod`, `zip`, `info`.
    pub const ALL: [Artifact; 3] = [Artifact::Mod, Artifact::Zip, Artifact::Info];

    /// The name stored in the ledger and used in URLs: `"mod"`, `"zip"` or
    /// `"info"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Artifact::Mod => "mod",
            Artifact::Zip => "zip",
            Artifact::Info => "info",
        }
    }

    /// Whether `go.sum` records an `h1:` hash for this artifact (`.mod` and
    /// `.zip`; `.info` has none).
    pub fn has_h1(self) -> bool {
        !matches!(self, Artifact::Info)
    }
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Artifact {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mod" => Ok(Artifact::Mod),
            "zip" => Ok(Artifact::Zip),
            "info" => Ok(Artifact::Info),
            _ => Err(LedgerError::InvalidInput {
                what: "artifact",
                value: excerpt(s),
                detail: "expected \"mod\", \"zip\" or \"info\"",
            }),
        }
    }
}

/// The recorded hashes of one artifact of one module version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Module path, e.g. `golang.org/x/text`.
    pub module: String,
    /// Exact version, e.g. `v0.14.0`.
    pub version: String,
    /// Which file of the version.
    pub artifact: Artifact,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// The `go.sum` `h1:` hash (`.mod` and `.zip` only; `None` if the
    /// observer did not compute it).
    pub h1: Option<String>,
    /// Size of the bytes.
    pub size: u64,
    /// When these bytes were first recorded (seconds since the Unix epoch);
    /// for accepted bytes, when they were accepted.
    pub first_seen_unix: i64,
    /// The upstream the bytes came from (`"operator"` for bytes an operator
    /// accepted before any upstream served them).
    pub source: String,
    /// The operator who accepted these bytes in place of earlier ones.
    pub accepted_by: Option<String>,
}

/// The outcome of [`Ledger::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing was recorded for this artifact: the observation has been
    /// recorded now.
    FirstSeen(Entry),
    /// The observed bytes are the recorded ones.
    Match(Entry),
    /// The observed bytes differ from the recorded ones; the record is
    /// unchanged.
    Mismatch {
        /// What the ledger holds.
        recorded: Entry,
        /// SHA-256 of the observed bytes.
        observed_sha256: String,
        /// `h1:` of the observed bytes, if the observer computed it.
        observed_h1: Option<String>,
    },
}

impl Check {
    /// The entry as recorded after the check.
    pub fn recorded(&self) -> &Entry {
        match self {
            Check::FirstSeen(entry) | Check::Match(entry) => entry,
            Check::Mismatch { recorded, .. } => recorded,
        }
    }

    /// Whether the observed bytes differ from the recorded ones.
    pub fn is_mismatch(&self) -> bool {
        matches!(self, Check::Mismatch { .. })
    }
}

/// One operator acceptance, as kept by [`Ledger::accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Module path.
    pub module: String,
    /// Exact version.
    pub version: String,
    /// Which file of the version.
    pub artifact: Artifact,
    /// The record that was replaced (`None` when nothing had been recorded).
    pub replaced: Option<Entry>,
    /// SHA-256 of the accepted bytes.
    pub sha256: String,
    /// `h1:` of the accepted bytes.
    pub h1: Option<String>,
    /// Size of the accepted bytes.
    pub size: u64,
    /// Who accepted them.
    pub operator: String,
    /// Why.
    pub reason: String,
    /// When (seconds since the Unix epoch).
    pub accepted_unix: i64,
}

/// The integrity ledger: an SQLite database of first-seen artifact hashes.
///
/// A `Ledger` is `Send + Sync`; its single connection is used under a mutex.
/// Several `Ledger`s (and processes) may open the same file: SQLite's
/// locking and the busy timeout serialize their writes.
pub struct Ledger {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger database at `path`, creating
    /// missing parent directories, switching it to WAL mode with
    /// `synchronous=FULL` and bringing its schema up to [`SCHEMA_VERSION`].
    ///
    /// A file that is not an SQLite database, or one whose schema is newer
    /// than this build's, is an error naming `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|source| LedgerError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
        }
        let conn = Connection::open(path).map_err(|source| LedgerError::Open {
            path: path.to_path_buf(),
            step: "opening the file",
            source,
        })?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// A ledger that lives in memory only, for tests and dry runs.
    pub fn open_in_memory() -> Result<Ledger, LedgerError> {
        let conn = Connection::open_in_memory().map_err(|source| LedgerError::Open {
            path: PathBuf::from(":memory:"),
            step: "opening an in-memory database",
            source,
        })?;
        Self::init(conn, None)
    }

    /// The database file, `None` for an in-memory ledger.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Ledger, LedgerError> {
        let shown = path.clone().unwrap_or_else(|| PathBuf::from(":memory:"));
        let open_err = |step: &'static str| {
            let shown = shown.clone();
            move |source| LedgerError::Open {
                path: shown,
                step,
                source,
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_err("setting the busy timeout"))?;
        // The first statement that reads the file: a non-database fails here.
        // Switching to WAL needs an exclusive lock, and SQLite reports a
        // conflict with another connection doing the same without waiting
        // in the busy handler: retry such conflicts until the timeout.
        retry_busy(|| {
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        })
        .map_err(open_err("switching to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err("setting synchronous=FULL"))?;
        let found = retry_busy(|| migrate(&mut conn, MIGRATIONS))
            .map_err(open_err("migrating the schema"))?;
        if let Err(found) = found {
            return Err(LedgerError::SchemaTooNew {
                path: shown,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(Ledger {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic elsewhere while holding the lock leaves no half-done
        // transaction behind (rusqlite rolls back on drop): keep going.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the hashes if nothing is recorded for `(module, version,
    /// artifact)`, else compares them with the record.
    ///
    /// Atomic: the lookup and the insert run in one `BEGIN IMMEDIATE`
    /// transaction, so of two concurrent first observations of different
    /// bytes exactly one is recorded ([`Check::FirstSeen`]) and the other
    /// reports [`Check::Mismatch`].
    ///
    /// The bytes match when the SHA-256 and the size are the recorded ones
    /// and the `h1:` hashes agree where both are known. A record without an
    /// `h1:` gets the observed one filled in on a match (it is derived from
    /// the same bytes). A mismatch never changes the record.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
        sha256: &str,
        h1: Option<&str>,
        size: u64,
        source: &str,
    ) -> Result<Check, LedgerError> {
        let obs = Observation::new(module, version, artifact, sha256, h1, size)?;
        self.on_record("observe", (module, version, artifact), |tx, recorded| {
            Ok(match recorded {
                None => {
                    let entry = Entry {
                        module: module.to_owned(),
                        version: version.to_owned(),
                        artifact,
                        sha256: obs.sha256,
                        h1: obs.h1,
                        size,
                        first_seen_unix: now_unix(),
                        source: source.to_owned(),
                        accepted_by: None,
                    };
                    tx.execute(
                        "INSERT INTO entries (module, version, artifact, sha256, h1, size,
                                          first_seen_unix, source, accepted_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
                        params![
                            entry.module,
                            entry.version,
                            artifact.as_str(),
                            entry.sha256,
                            entry.h1,
                            obs.size,
                            entry.first_seen_unix,
                            entry.source,
                        ],
                    )?;
                    Check::FirstSeen(entry)
                }
                Some(recorded) => {
                    let recorded = recorded.into_entry(&tx.key)?;
                    match compare(&recorded, &obs) {
                        Compared::Match { fill_h1 } => {
                            let mut entry = recorded;
                            if fill_h1.is_some() {
                                tx.execute(
                                    "UPDATE entries SET h1 = ?4
                                 WHERE module = ?1 AND version = ?2 AND artifact = ?3",
                                    params![module, version, artifact.as_str(), fill_h1],
                                )?;
                                entry.h1 = fill_h1;
                            }
                            Check::Match(entry)
                        }
                        Compared::Mismatch => Check::Mismatch {
                            recorded,
                            observed_sha256: obs.sha256,
                            observed_h1: obs.h1,
                        },
                    }
                }
            })
        })
    }

    /// The record for `(module, version, artifact)`, if any.
    pub fn get(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
    ) -> Result<Option<Entry>, LedgerError> {
        let key = key_of(module, version, Some(artifact));
        let conn = self.lock();
        let raw = select_entry(&conn, module, version, artifact).map_err(|source| {
            LedgerError::Sqlite {
                op: "get",
                key: key.clone(),
                source,
            }
        })?;
        raw.map(|raw| raw.into_entry(&key)).transpose()
    }

    /// All records, ordered by module, version and artifact; with
    /// `module_prefix`, only the modules at or below that path on a path
    /// element boundary: `example.com/a` lists `example.com/a` and
    /// `example.com/a/v2` but not `example.com/ab`; `example.com/a/` lists
    /// only the modules below `example.com/a`. An empty prefix lists all.
    pub fn list(&self, module_prefix: Option<&str>) -> Result<Vec<Entry>, LedgerError> {
        let prefix = module_prefix.unwrap_or("");
        let key = list_key(prefix);
        let sql_err = |source| LedgerError::Sqlite {
            op: "list",
            key: key.clone(),
            source,
        };
        let conn = self.lock();
        let raws = match prefix_range(prefix) {
            None => {
                let mut stmt = conn
                    .prepare(&format!(
                        "{SELECT_ENTRY} ORDER BY module, version, artifact"
                    ))
                    .map_err(sql_err)?;
                let rows = stmt.query_map([], RawEntry::from_row).map_err(sql_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)?
            }
            Some((exact, low, high)) => {
                let mut stmt = conn
                    .prepare(&format!(
                        "{SELECT_ENTRY} WHERE module = ?1 OR (module >= ?2 AND module < ?3)
                         ORDER BY module, version, artifact"
                    ))
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![exact, low, high], RawEntry::from_row)
                    .map_err(sql_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)?
            }
        };
        drop(conn);
        raws.into_iter()
            .map(|raw| {
                let key = key_of(&raw.module, &raw.version, None);
                raw.into_entry(&key)
            })
            .collect()
    }

    /// An operator deliberately accepts new bytes for a module version's
    /// artifact: the recorded hashes are replaced (with `first_seen_unix`
    /// set to now and `accepted_by` to `operator`), and the replaced record
    /// is kept in the history with who accepted, when and why. Accepting
    /// bytes for an artifact never observed records them (source
    /// `"operator"`), which pins a version before any upstream serves it.
    ///
    /// `operator` and `reason` must not be empty.
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
        sha256: &str,
        h1: Option<&str>,
        size: u64,
        operator: &str,
        reason: &str,
    ) -> Result<Entry, LedgerError> {
        let obs = Observation::new(module, version, artifact, sha256, h1, size)?;
        check_text("operator", operator)?;
        check_text("reason", reason)?;
        self.on_record("accept", (module, version, artifact), |tx, old| {
            let now = now_unix();
            let entry = Entry {
                module: module.to_owned(),
                version: version.to_owned(),
                artifact,
                sha256: obs.sha256,
                h1: obs.h1,
                size,
                first_seen_unix: now,
                source: old
                    .as_ref()
                    .map_or_else(|| "operator".to_owned(), |old| old.source.clone()),
                accepted_by: Some(operator.to_owned()),
            };
            tx.execute(
                "INSERT INTO history (module, version, artifact,
                 old_sha256, old_h1, old_size, old_first_seen_unix, old_source, old_accepted_by,
                 new_sha256, new_h1, new_size, operator, reason, accepted_unix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    module,
                    version,
                    artifact.as_str(),
                    old.as_ref().map(|o| &o.sha256),
                    old.as_ref().and_then(|o| o.h1.as_ref()),
                    old.as_ref().map(|o| o.size),
                    old.as_ref().map(|o| o.first_seen_unix),
                    old.as_ref().map(|o| &o.source),
                    old.as_ref().and_then(|o| o.accepted_by.as_ref()),
                    entry.sha256,
                    entry.h1,
                    obs.size,
                    operator,
                    reason,
                    now,
                ],
            )?;
            tx.execute(
                "INSERT INTO entries (module, version, artifact, sha256, h1, size,
                                  first_seen_unix, source, accepted_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (module, version, artifact) DO UPDATE SET
                 sha256 = excluded.sha256, h1 = excluded.h1, size = excluded.size,
                 first_seen_unix = excluded.first_seen_unix, source = excluded.source,
                 accepted_by = excluded.accepted_by",
                params![
                    entry.module,
                    entry.version,
                    artifact.as_str(),
                    entry.sha256,
                    entry.h1,
                    obs.size,
                    entry.first_seen_unix,
                    entry.source,
                    entry.accepted_by,
                ],
            )?;
            Ok(entry)
        })
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction that first reads the record of
    /// `(module, version, artifact)`, and commits it when `work` succeeds (dropped, it rolls
    /// back); SQLite's errors are reported as `op` on that record.
    fn on_record<T>(
        &self,
        op: &'static str,
        (module, version, artifact): (&str, &str, Artifact),
        work: impl FnOnce(&RecordTx<'_>, Option<RawEntry>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let key = key_of(module, version, Some(artifact));
        let sql_err = |source| LedgerError::Sqlite {
            op,
            key: key.clone(),
            source,
        };
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let recorded = select_entry(&tx, module, version, artifact).map_err(sql_err)?;
        let tx = RecordTx {
            tx,
            op,
            key: key.clone(),
        };
        let out = work(&tx, recorded)?;
        tx.tx.commit().map_err(sql_err)?;
        Ok(out)
    }

    /// Every acceptance recorded for any artifact of `module@version`,
    /// oldest first.
    pub fn history(&self, module: &str, version: &str) -> Result<Vec<HistoryEntry>, LedgerError> {
        let key = key_of(module, version, None);
        let sql_err = |source| LedgerError::Sqlite {
            op: "history",
            key: key.clone(),
            source,
        };
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT artifact, old_sha256, old_h1, old_size, old_first_seen_unix, old_source,
                        old_accepted_by, new_sha256, new_h1, new_size, operator, reason,
                        accepted_unix
                 FROM history WHERE module = ?1 AND version = ?2 ORDER BY id",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(params![module, version], RawHistory::from_row)
            .map_err(sql_err)?;
        let raws = rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)?;
        drop(stmt);
        drop(conn);
        raws.into_iter()
            .map(|raw| raw.into_history(module, version, &key))
            .collect()
    }

    /// How many `(module, version, artifact)` records the ledger holds.
    pub fn count(&self) -> Result<u64, LedgerError> {
        let conn = self.lock();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM entries", [], |row| row.get(0))
            .map_err(|source| LedgerError::Sqlite {
                op: "count",
                key: "all entries".to_owned(),
                source,
            })?;
        u64::try_from(n).map_err(|_| LedgerError::CorruptRow {
            key: "entries".to_owned(),
            detail: format!("negative row count {n}"),
        })
    }
}

impl LedgerStore for Ledger {
    fn observe(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
        sha256: &str,
        h1: Option<&str>,
        size: u64,
        source: &str,
    ) -> Result<Check, LedgerError> {
        Ledger::observe(self, module, version, artifact, sha256, h1, size, source)
    }

    fn get(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
    ) -> Result<Option<Entry>, LedgerError> {
        Ledger::get(self, module, version, artifact)
    }

    fn list(&self, module_prefix: Option<&str>) -> Result<Vec<Entry>, LedgerError> {
        Ledger::list(self, module_prefix)
    }

    fn accept(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
        sha256: &str,
        h1: Option<&str>,
        size: u64,
        operator: &str,
        reason: &str,
    ) -> Result<Entry, LedgerError> {
        Ledger::accept(
            self, module, version, artifact, sha256, h1, size, operator, reason,
        )
    }

    fn history(&self, module: &str, version: &str) -> Result<Vec<HistoryEntry>, LedgerError> {
        Ledger::history(self, module, version)
    }

    fn count(&self) -> Result<u64, LedgerError> {
        Ledger::count(self)
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("SQLite ledger {}", p.display()),
            None => "in-memory SQLite ledger".to_owned(),
        }
    }
}

/// The transaction of [`Ledger::on_record`]: statements fail as its operation on its record.
struct RecordTx<'c> {
    tx: rusqlite::Transaction<'c>,
    op: &'static str,
    key: String,
}

impl RecordTx<'_> {
    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, LedgerError> {
        self.tx
            .execute(sql, params)
            .map_err(|source| LedgerError::Sqlite {
                op: self.op,
                key: self.key.clone(),
                source,
            })
    }
}

/// Brings the schema up to the last of `migrations` (version `migrations.len()`) in one
/// transaction; the inner `Err` carries the version of a schema newer than this build's.
pub(crate) fn migrate(
    conn: &mut Connection,
    migrations: &[&str],
) -> rusqlite::Result<Result<(), i64>> {
    let supported = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version      INTEGER PRIMARY KEY,
            applied_unix INTEGER NOT NULL
        );",
    )?;
    let found: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |row| row.get(0),
    )?;
    if found > supported {
        return Ok(Err(found));
    }
    let start = usize::try_from(found.max(0)).unwrap_or(usize::MAX);
    for (index, migration) in migrations.iter().enumerate().skip(start) {
        tx.execute_batch(migration)?;
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO schema_version (version, applied_unix) VALUES (?1, ?2)",
            params![version, now_unix()],
        )?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

/// Runs `op` again while it fails with `SQLITE_BUSY`/`SQLITE_LOCKED`, for at
/// most [`BUSY_TIMEOUT`]: for the conflicts SQLite reports without calling
/// the busy handler (such as two connections switching a new file to WAL).
pub(crate) fn retry_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match op() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

const SELECT_ENTRY: &str = "SELECT module, version, artifact, sha256, h1, size, first_seen_unix, \
                            source, accepted_by FROM entries";

fn select_entry(
    conn: &Connection,
    module: &str,
    version: &str,
    artifact: Artifact,
) -> rusqlite::Result<Option<RawEntry>> {
    conn.query_row(
        &format!("{SELECT_ENTRY} WHERE module = ?1 AND version = ?2 AND artifact = ?3"),
        params![module, version, artifact.as_str()],
        RawEntry::from_row,
    )
    .optional()
}

/// A row of `entries` as SQLite returns it, before validation.
struct RawEntry {
    module: String,
    version: String,
    artifact: String,
    sha256: String,
    h1: Option<String>,
    size: i64,
    first_seen_unix: i64,
    source: String,
    accepted_by: Option<String>,
}

impl RawEntry {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawEntry {
            module: row.get(0)?,
            version: row.get(1)?,
            artifact: row.get(2)?,
            sha256: row.get(3)?,
            h1: row.get(4)?,
            size: row.get(5)?,
            first_seen_unix: row.get(6)?,
            source: row.get(7)?,
            accepted_by: row.get(8)?,
        })
    }

    fn into_entry(self, key: &str) -> Result<Entry, LedgerError> {
        Ok(Entry {
            artifact: parse_artifact(&self.artifact, key)?,
            size: parse_size(self.size, key)?,
            module: self.module,
            version: self.version,
            sha256: self.sha256,
            h1: self.h1,
            first_seen_unix: self.first_seen_unix,
            source: self.source,
            accepted_by: self.accepted_by,
        })
    }
}

/// A row of `history` as SQLite returns it, before validation.
struct RawHistory {
    artifact: String,
    old_sha256: Option<String>,
    old_h1: Option<String>,
    old_size: Option<i64>,
    old_first_seen_unix: Option<i64>,
    old_source: Option<String>,
    old_accepted_by: Option<String>,
    new_sha256: String,
    new_h1: Option<String>,
    new_size: i64,
    operator: String,
    reason: String,
    accepted_unix: i64,
}

impl RawHistory {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawHistory {
            artifact: row.get(0)?,
            old_sha256: row.get(1)?,
            old_h1: row.get(2)?,
            old_size: row.get(3)?,
            old_first_seen_unix: row.get(4)?,
            old_source: row.get(5)?,
            old_accepted_by: row.get(6)?,
            new_sha256: row.get(7)?,
            new_h1: row.get(8)?,
            new_size: row.get(9)?,
            operator: row.get(10)?,
            reason: row.get(11)?,
            accepted_unix: row.get(12)?,
        })
    }

    fn into_history(
        self,
        module: &str,
        version: &str,
        key: &str,
    ) -> Result<HistoryEntry, LedgerError> {
        let artifact = parse_artifact(&self.artifact, key)?;
        let replaced = match (self.old_sha256, self.old_size, self.old_first_seen_unix) {
            (Some(sha256), Some(size), Some(first_seen_unix)) => Some(Entry {
                module: module.to_owned(),
                version: version.to_owned(),
                artifact,
                sha256,
                h1: self.old_h1,
                size: parse_size(size, key)?,
                first_seen_unix,
                source: self.old_source.unwrap_or_default(),
                accepted_by: self.old_accepted_by,
            }),
            (None, None, None) => None,
            _ => {
                return Err(LedgerError::CorruptRow {
                    key: key.to_owned(),
                    detail: "history row has a partial replaced record".to_owned(),
                })
            }
        };
        Ok(HistoryEntry {
            module: module.to_owned(),
            version: version.to_owned(),
            artifact,
            replaced,
            sha256: self.new_sha256,
            h1: self.new_h1,
            size: parse_size(self.new_size, key)?,
            operator: self.operator,
            reason: self.reason,
            accepted_unix: self.accepted_unix,
        })
    }
}

fn parse_artifact(value: &str, key: &str) -> Result<Artifact, LedgerError> {
    value.parse().map_err(|_| LedgerError::CorruptRow {
        key: key.to_owned(),
        detail: format!("unknown artifact {:?}", excerpt(value)),
    })
}

fn parse_size(value: i64, key: &str) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| LedgerError::CorruptRow {
        key: key.to_owned(),
        detail: format!("negative size {value}"),
    })
}

#[cfg(test)]
mod tests;
