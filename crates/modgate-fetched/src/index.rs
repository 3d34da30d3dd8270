//! The SQLite-backed index of what each identity fetched.
//!
//! One row per artifact served whole: time (Unix milliseconds), identity name and source,
//! module, version, artifact (`zip` or `mod`) and the ledger's SHA-256 and `h1:` for it. The
//! database is its own file (never the ledger's: pruning this one must not contend with the
//! ledger's write lock, which the request path takes at the end of every miss), in WAL mode
//! with `synchronous=FULL` and a busy timeout; its schema is versioned as the ledger's is.
//!
//! Size is bounded two ways ([`FetchIndex::prune`]): rows older than the retention go, and
//! only the newest `max_records` rows are kept (by row id, which only grows, so the bound is
//! exact and found through the primary key without counting the table).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use crate::error::FetchedError;
use crate::store::{
    check_fetches, check_query, keep, retention_cutoff, summarize, FetchStore, GroupRow,
    MAX_FIELD_LEN,
};

/// The newest schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Schema migrations; entry `i` brings the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &["CREATE TABLE fetches (
        id       INTEGER PRIMARY KEY,
        at_ms    INTEGER NOT NULL,
        identity TEXT    NOT NULL,
        source   TEXT    NOT NULL,
        module   TEXT    NOT NULL,
        version  TEXT    NOT NULL,
        kind     TEXT    NOT NULL CHECK (kind IN ('mod', 'zip')),
        sha256   TEXT,
        h1       TEXT
    );
    CREATE INDEX fetches_by_identity ON fetches (identity, at_ms);
    CREATE INDEX fetches_by_time ON fetches (at_ms);"];

/// Which artifact of a version was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `@v/VERSION.mod`.
    Mod,
    /// `@v/VERSION.zip`.
    Zip,
}

impl Kind {
    /// `"mod"` or `"zip"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mod => "mod",
            Kind::Zip => "zip",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        match s {
            "mod" => Some(Kind::Mod),
            "zip" => Some(Kind::Zip),
            _ => None,
        }
    }
}

/// One artifact served whole to one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// When the transfer ended (Unix milliseconds).
    pub at_ms: i64,
    /// The identity's name (certificate name, user, token name, `anonymous`).
    pub identity: String,
    /// How the identity was established (`certificate`, `basic`, `token`, `anonymous`, ...).
    pub source: String,
    /// Module path.
    pub module: String,
    /// Exact version.
    pub version: String,
    /// Which artifact.
    pub kind: Kind,
    /// The ledger's hashes of the artifact (`None` when the ledger had no record).
    pub hashes: Option<Hashes>,
}

/// The hashes the integrity ledger holds for one artifact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hashes {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// The `go.sum` hash (`h1:...`), when the ledger computed it.
    pub h1: Option<String>,
}

/// Whose fetches a query is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFilter {
    /// Only this source (`certificate`, `basic`, ...); `None`: every source.
    pub source: Option<String>,
    /// The identity's name.
    pub name: String,
}

impl IdentityFilter {
    /// `NAME` (every source) or `SOURCE:NAME` for a known source.
    pub fn parse(s: &str) -> Result<IdentityFilter, FetchedError> {
        if s.is_empty() || s.len() > MAX_FIELD_LEN {
            return Err(FetchedError::Invalid(
                "identity: give a name (or SOURCE:NAME, e.g. certificate:ci-7)".into(),
            ));
        }
        const SOURCES: [&str; 5] = ["certificate", "basic", "token", "anonymous", "forwarded"];
        if let Some((source, name)) = s.split_once(':') {
            if SOURCES.contains(&source) && !name.is_empty() {
                return Ok(IdentityFilter {
                    source: Some(source.to_string()),
                    name: name.to_string(),
                });
            }
        }
        Ok(IdentityFilter {
            source: None,
            name: s.to_string(),
        })
    }

    /// As written: `NAME` or `SOURCE:NAME`.
    pub fn label(&self) -> String {
        match &self.source {
            Some(s) => format!("{s}:{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A query: one identity's fetches in `[since, until)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Whose fetches.
    pub identity: IdentityFilter,
    /// From (Unix milliseconds, inclusive).
    pub since_ms: i64,
    /// To (Unix milliseconds, exclusive).
    pub until_ms: i64,
}

/// One module version an identity fetched in the queried range, zip and mod merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFetched {
    /// Module path.
    pub module: String,
    /// Exact version.
    pub version: String,
    /// The first and last transfer in the range (Unix milliseconds).
    pub first_ms: i64,
    /// See `first_ms`.
    pub last_ms: i64,
    /// How many transfers (zip and mod together).
    pub count: u64,
    /// Who fetched it, as `source:name` (one entry unless the filter named no source).
    pub identities: BTreeSet<String>,
    /// The ledger's hashes of the `.zip` served (several only if an operator accepted
    /// changed bytes within the range); empty when no zip was fetched.
    pub zip: BTreeSet<Hashes>,
    /// Whether a `.zip` was fetched (also when the ledger had no hashes for it).
    pub zip_fetched: bool,
    /// The same for the `.mod`.
    pub module_file: BTreeSet<Hashes>,
    /// Whether a `.mod` was fetched.
    pub mod_fetched: bool,
}

/// How the index is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows older than this are removed (`None`: kept until `max_records` pushes them out).
    pub retention: Option<Duration>,
    /// At most this many rows are kept (the oldest go first).
    pub max_records: u64,
}

/// What [`FetchIndex::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows older than the retention.
    pub aged: u64,
    /// Rows beyond `max_records`.
    pub over: u64,
}

/// The fetched index: one SQLite connection, shared behind a mutex.
pub struct FetchIndex {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for FetchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchIndex")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl FetchIndex {
    /// Opens (creating it and its directory if needed) the index at `path`. A new file is
    /// created readable by its owner only (who fetched what is personal data); SQLite gives
    /// its `-wal` and `-shm` files the same mode.
    pub fn open(path: &Path) -> Result<FetchIndex, FetchedError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| FetchedError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        {
            use std::os::unix::fs::OpenOptionsExt;
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path);
            match created {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(FetchedError::CreateDir {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        }
        let conn = Connection::open(path).map_err(|source| FetchedError::Open {
            path: path.to_path_buf(),
            step: "opening the file",
            source,
        })?;
        Self::init(conn, path.to_path_buf())
    }

    /// Opens an index that must already exist (for queries: a query never creates one).
    pub fn open_existing(path: &Path) -> Result<FetchIndex, FetchedError> {
        if !path.is_file() {
            return Err(FetchedError::Missing(path.to_path_buf()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| FetchedError::Open {
                path: path.to_path_buf(),
                step: "opening the file",
                source,
            })?;
        Self::init(conn, path.to_path_buf())
    }

    /// An index in memory only, for tests.
    pub fn open_in_memory() -> Result<FetchIndex, FetchedError> {
        let conn = Connection::open_in_memory().map_err(|source| FetchedError::Open {
            path: PathBuf::from(":memory:"),
            step: "opening an in-memory database",
            source,
        })?;
        Self::init(conn, PathBuf::from(":memory:"))
    }

    fn init(mut conn: Connection, path: PathBuf) -> Result<FetchIndex, FetchedError> {
        let open_err = |step: &'static str| {
            let path = path.clone();
            move |source| FetchedError::Open { path, step, source }
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_err("setting the busy timeout"))?;
        retry_busy(|| {
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        })
        .map_err(open_err("switching to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err("setting synchronous=FULL"))?;
        let found = retry_busy(|| migrate(&mut conn)).map_err(open_err("migrating the schema"))?;
        if let Err(found) = found {
            return Err(FetchedError::SchemaTooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(FetchIndex {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file (`:memory:` for an in-memory index).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sql(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> FetchedError + '_ {
        move |source| FetchedError::Sql {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn write(
        &self,
        fetches: &[Fetch],
        prune: Option<(i64, Limits)>,
    ) -> Result<Pruned, FetchedError> {
        check_fetches(fetches)?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("starting a write"))?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO fetches (at_ms, identity, source, module, version, kind, \
                     sha256, h1) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(self.sql("preparing the insert"))?;
            for f in fetches {
                let (sha256, h1) = match &f.hashes {
                    Some(h) => (Some(h.sha256.as_str()), h.h1.as_deref()),
                    None => (None, None),
                };
                stmt.execute(params![
                    f.at_ms,
                    f.identity,
                    f.source,
                    f.module,
                    f.version,
                    f.kind.as_str(),
                    sha256,
                    h1
                ])
                .map_err(self.sql("inserting a fetch"))?;
            }
        }
        let pruned = match prune {
            Some((now_ms, limits)) => {
                prune_in(&tx, now_ms, limits).map_err(self.sql("pruning fetches"))?
            }
            None => Pruned::default(),
        };
        tx.commit().map_err(self.sql("committing fetches"))?;
        Ok(pruned)
    }
}

impl FetchStore for FetchIndex {
    fn insert(&self, fetches: &[Fetch]) -> Result<(), FetchedError> {
        self.write(fetches, None).map(drop)
    }

    fn prune(&self, now_ms: i64, limits: Limits) -> Result<Pruned, FetchedError> {
        let conn = self.lock();
        prune_in(&conn, now_ms, limits).map_err(self.sql("pruning fetches"))
    }

    /// Records and prunes in one transaction (one sync to disk), so the index never holds
    /// more than `max_records`.
    fn record(
        &self,
        fetches: &[Fetch],
        now_ms: i64,
        limits: Limits,
    ) -> Result<Pruned, FetchedError> {
        self.write(fetches, Some((now_ms, limits)))
    }

    fn count(&self) -> Result<u64, FetchedError> {
        let n: i64 = self
            .lock()
            .query_row("SELECT COUNT(*) FROM fetches", [], |r| r.get(0))
            .map_err(self.sql("counting fetches"))?;
        Ok(n.max(0) as u64)
    }

    fn query(&self, q: &Query) -> Result<Vec<VersionFetched>, FetchedError> {
        check_query(q)?;
        let conn = self.lock();
        // Aggregated in SQL (the index may hold millions of rows for one identity): one row
        // per distinct (version, artifact, identity, hashes).
        let mut stmt = conn
            .prepare(
                "SELECT module, version, kind, source, identity, sha256, h1, MIN(at_ms), \
                 MAX(at_ms), COUNT(*) FROM fetches \
                 WHERE identity = ?1 AND (?2 IS NULL OR source = ?2) AND at_ms >= ?3 \
                 AND at_ms < ?4 \
                 GROUP BY module, version, kind, source, identity, sha256, h1",
            )
            .map_err(self.sql("preparing the query"))?;
        let rows = stmt
            .query_map(
                params![q.identity.name, q.identity.source, q.since_ms, q.until_ms],
                |r| {
                    Ok(GroupRow {
                        module: r.get(0)?,
                        version: r.get(1)?,
                        kind: r.get(2)?,
                        source: r.get(3)?,
                        identity: r.get(4)?,
                        sha256: r.get(5)?,
                        h1: r.get(6)?,
                        first_ms: r.get(7)?,
                        last_ms: r.get(8)?,
                        count: r.get(9)?,
                    })
                },
            )
            .map_err(self.sql("querying fetches"))?;
        let rows = rows
            .collect::<rusqlite::Result<Vec<GroupRow>>>()
            .map_err(self.sql("reading fetches"))?;
        Ok(summarize(rows))
    }

    fn describe(&self) -> String {
        format!("SQLite fetched index {}", self.path.display())
    }
}

/// Removes rows older than `now_ms - retention`, then all but the newest `max_records`.
fn prune_in(conn: &Connection, now_ms: i64, limits: Limits) -> rusqlite::Result<Pruned> {
    let mut pruned = Pruned::default();
    if let Some(cutoff) = retention_cutoff(now_ms, limits) {
        pruned.aged = conn.execute("DELETE FROM fetches WHERE at_ms < ?1", params![cutoff])? as u64;
    }
    // Row ids only grow (a new row takes the largest id plus one), so the newest
    // `max_records` rows are exactly those with an id above `max(id) - max_records`.
    pruned.over = conn.execute(
        "DELETE FROM fetches WHERE id <= (SELECT MAX(id) FROM fetches) - ?1",
        params![keep(limits)],
    )? as u64;
    Ok(pruned)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), i64>> {
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
    if found > SCHEMA_VERSION {
        return Ok(Err(found));
    }
    let start = usize::try_from(found.max(0)).unwrap_or(usize::MAX);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(migration)?;
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO schema_version (version, applied_unix) VALUES (?1, ?2)",
            params![version, now_ms() / 1000],
        )?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

/// Runs `op` again while it fails with `SQLITE_BUSY`/`SQLITE_LOCKED` (conflicts SQLite reports
/// without its busy handler, such as two connections switching a new file to WAL), for at most
/// [`BUSY_TIMEOUT`].
fn retry_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conformance::fetch;

    /// Each case on its own file in a temporary directory, each handle its own connection.
    struct SqliteFiles;

    impl crate::conformance::Harness for SqliteFiles {
        fn store(&self, case: &str) -> Arc<crate::conformance::Opener> {
            let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
            let path = dir.path().join(format!("{case}.sqlite"));
            Arc::new(move || {
                let _keep = &dir;
                Box::new(FetchIndex::open(&path).expect("open")) as Box<dyn FetchStore>
            })
        }
    }

    #[test]
    fn conformance_suite_on_sqlite() {
        crate::conformance::run_all(&SqliteFiles);
    }

    #[test]
    fn a_name_with_a_colon_that_is_not_a_source_is_a_name() {
        let f = IdentityFilter::parse("team:build").expect("parse");
        assert_eq!((f.source, f.name.as_str()), (None, "team:build"));
        let f = IdentityFilter::parse("token:deploy").expect("parse");
        assert_eq!(
            (f.source.as_deref(), f.name.as_str()),
            (Some("token"), "deploy")
        );
        assert!(IdentityFilter::parse("").is_err());
    }

    #[test]
    fn the_file_survives_reopening_and_a_query_never_creates_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/fetched.sqlite");
        assert!(matches!(
            FetchIndex::open_existing(&path),
            Err(FetchedError::Missing(_))
        ));
        assert!(!path.exists());
        {
            let ix = FetchIndex::open(&path).expect("open");
            ix.insert(&[fetch(1, "ci", "example.com/a", "v1.0.0", Kind::Mod)])
                .expect("insert");
            use std::os::unix::fs::PermissionsExt;
            for f in [path.clone(), dir.path().join("sub/fetched.sqlite-wal")] {
                let mode = std::fs::metadata(&f).expect("stat").permissions().mode();
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", f.display());
            }
        }
        let ix = FetchIndex::open_existing(&path).expect("reopen");
        assert_eq!(ix.count().expect("count"), 1);
        let bad = dir.path().join("not-a-db");
        std::fs::write(&bad, b"this is not sqlite, not at all, no").expect("write");
        let err = FetchIndex::open_existing(&bad).expect_err("not a database");
        assert!(err.to_string().contains("not-a-db"), "{err}");
    }
}
