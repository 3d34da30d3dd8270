//! The sightings store: cooldown's clock, the times at which a module version was first seen
//! by parties its author does not control.
//!
//! Per `(module, version)` it keeps
//! - the gateway's **own first sighting**: the gateway's clock when an answer first named the
//!   version (a `list`, an `.info`, an artifact, or a Git mirror refresh that first saw the
//!   tag), and how it was seen;
//! - the **module index's time**: the `Timestamp` the Go module index (the feed of every
//!   version the public proxy has fetched, with the time it first fetched it) gave it;
//! - whether it was **seeded** as old by `modgate ledger seed`, by whom and when.
//!
//! and, per feed, how far the feed has been read without gaps ([`FeedProgress`]). A feed page
//! and the progress past it are written in one transaction, so the progress never runs ahead
//! of what is stored.
//!
//! No time here comes from an author: record calls take the caller's clock and keep the first
//! value ever recorded (a later sighting moves nothing, earlier or later); feed times keep the
//! earliest the feed gave. The decision built on these records is pure and lives with the
//! gateway (`cooldown::age`).
//!
//! Its own SQLite file (next to the integrity ledger), with the ledger's conventions: WAL,
//! `synchronous=FULL`, a busy timeout, a versioned schema. A separate file because its load is
//! different: the feed writes every version the public proxy sees (hundreds of thousands of
//! rows per cooldown window) in large page transactions, which must neither slow the ledger's
//! per-artifact writes on the request path nor bloat the file operators back up and audit as
//! the integrity record; and the feed part can be rebuilt by reading the feed again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{excerpt, LedgerError};
use crate::ledger::{migrate, retry_busy, BUSY_TIMEOUT};
use crate::store::check_text;

/// Schema migrations of the sightings store; entry `i` brings it from version `i` to `i + 1`.
/// Append only.
const MIGRATIONS: &[&str] = &[
    // 1: sightings and feed progress.
    "CREATE TABLE sightings (
        module          TEXT    NOT NULL,
        version         TEXT    NOT NULL,
        first_seen_unix INTEGER,
        first_seen_how  TEXT,
        feed_unix       INTEGER,
        seeded_unix     INTEGER,
        seeded_by       TEXT,
        PRIMARY KEY (module, version)
    ) WITHOUT ROWID;
    CREATE INDEX sightings_index_only ON sightings (feed_unix)
        WHERE first_seen_unix IS NULL AND seeded_unix IS NULL;
    CREATE TABLE feed_progress (
        feed              TEXT    PRIMARY KEY,
        window_start_unix INTEGER NOT NULL,
        cursor            TEXT    NOT NULL,
        read_to_unix      INTEGER NOT NULL,
        updated_unix      INTEGER NOT NULL
    );",
];

/// What is known about one module version's age. All times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionSightings {
    /// Module path.
    pub module: String,
    /// Exact version.
    pub version: String,
    /// The gateway's own first sighting (its clock when it first saw the version named).
    pub first_seen: Option<i64>,
    /// How it was first seen (`list`, `info`, `zip`, `git mirror`, ...).
    pub first_seen_how: Option<String>,
    /// The module index's `Timestamp` for it, when the feed listed it.
    pub feed: Option<i64>,
    /// When it was seeded as old (`modgate ledger seed`), if it was.
    pub seeded: Option<i64>,
    /// Who seeded it.
    pub seeded_by: Option<String>,
}

/// How far one feed has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedProgress {
    /// Where reading started: every entry of the feed from here to `read_to` is stored.
    pub window_start: i64,
    /// The `since=` to ask next, as the feed wrote its last timestamp.
    pub cursor: String,
    /// The feed has been read without gaps from `window_start` up to this time.
    pub read_to: i64,
}

/// One entry of a feed page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Module path.
    pub module: String,
    /// Exact version.
    pub version: String,
    /// The feed's time for it (Unix seconds).
    pub at: i64,
}

/// The sightings store; `Send + Sync`, its one connection used under a mutex.
pub struct Sightings {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl fmt::Debug for Sightings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sightings")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const SELECT: &str = "SELECT module, version, first_seen_unix, first_seen_how, feed_unix, \
                      seeded_unix, seeded_by FROM sightings";

fn row_to_sightings(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionSightings> {
    Ok(VersionSightings {
        module: row.get(0)?,
        version: row.get(1)?,
        first_seen: row.get(2)?,
        first_seen_how: row.get(3)?,
        feed: row.get(4)?,
        seeded: row.get(5)?,
        seeded_by: row.get(6)?,
    })
}

impl Sightings {
    /// Opens (creating if needed, with missing parent directories) the store at `path`, in WAL
    /// mode with `synchronous=FULL`, its schema brought up to date. A file that is not an
    /// SQLite database, or has a newer schema, is an error naming `path`.
    pub fn open(path: &Path) -> Result<Sightings, LedgerError> {
        let err = |step: &'static str, detail: String| LedgerError::OpenSightings {
            path: path.to_path_buf(),
            step,
            detail,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| err("creating its directory", e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(|e| err("opening the file", e.to_string()))?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// A store in memory only, for tests.
    pub fn open_in_memory() -> Result<Sightings, LedgerError> {
        let conn = Connection::open_in_memory().map_err(|e| LedgerError::OpenSightings {
            path: PathBuf::from(":memory:"),
            step: "opening an in-memory database",
            detail: e.to_string(),
        })?;
        Self::init(conn, None)
    }

    /// The database file, `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Sightings, LedgerError> {
        let shown = path.clone().unwrap_or_else(|| PathBuf::from(":memory:"));
        let err = |step: &'static str| {
            let shown = shown.clone();
            move |e: rusqlite::Error| LedgerError::OpenSightings {
                path: shown,
                step,
                detail: e.to_string(),
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("setting the busy timeout"))?;
        retry_busy(|| {
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        })
        .map_err(err("switching to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("setting synchronous=FULL"))?;
        let found =
            retry_busy(|| migrate(&mut conn, MIGRATIONS)).map_err(err("migrating the schema"))?;
        if let Err(found) = found {
            return Err(LedgerError::OpenSightings {
                path: shown,
                step: "reading the schema version",
                detail: format!(
                    "schema version {found} is newer than version {} that this build of modgate \
                     understands",
                    MIGRATIONS.len()
                ),
            });
        }
        Ok(Sightings {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction, committed when it succeeds.
    fn write<T>(
        &self,
        op: &'static str,
        key: &str,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let sql_err = |source| LedgerError::Sqlite {
            op,
            key: key.to_owned(),
            source,
        };
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let out = work(&tx).map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        Ok(out)
    }

    /// Records that the gateway saw `module@version` named at `at` (its own clock), `how`
    /// (`list`, `info`, `mod`, `zip`, ...). Only the first sighting is kept; returns the time
    /// recorded.
    pub fn record_seen(
        &self,
        module: &str,
        version: &str,
        how: &str,
        at: i64,
    ) -> Result<i64, LedgerError> {
        self.record_seen_many(module, &[version], how, at)
            .map(|v| v.first().copied().unwrap_or(at))
    }

    /// [`record_seen`](Self::record_seen) for several versions of one module (a `list`
    /// answer), in one transaction; returns the first sighting recorded for each.
    pub fn record_seen_many(
        &self,
        module: &str,
        versions: &[&str],
        how: &str,
        at: i64,
    ) -> Result<Vec<i64>, LedgerError> {
        check_text("module", module)?;
        check_text("how", how)?;
        for v in versions {
            check_text("version", v)?;
        }
        // Versions seen before (every request after the first): a read, no write, no fsync.
        let known = self.get_many(module, versions)?;
        if let Some(times) = known
            .iter()
            .map(|k| k.first_seen)
            .collect::<Option<Vec<_>>>()
        {
            return Ok(times);
        }
        self.write("record sighting", module, |tx| {
            let mut upsert = tx.prepare(
                "INSERT INTO sightings (module, version, first_seen_unix, first_seen_how)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (module, version) DO UPDATE SET
                    first_seen_unix = excluded.first_seen_unix,
                    first_seen_how = excluded.first_seen_how
                 WHERE sightings.first_seen_unix IS NULL",
            )?;
            let mut read = tx.prepare(
                "SELECT first_seen_unix FROM sightings WHERE module = ?1 AND version = ?2",
            )?;
            let mut out = Vec::with_capacity(versions.len());
            for v in versions {
                upsert.execute(params![module, v, at, how])?;
                let t: Option<i64> = read.query_row(params![module, v], |r| r.get(0))?;
                out.push(t.unwrap_or(at));
            }
            Ok(out)
        })
    }

    /// What the gateway calls when an upstream's answer names versions of `module`: records
    /// the first sighting of those not seen before (at `at`, `how`) and returns every
    /// version's record, ready for the age decision. One read when all were seen before.
    pub fn see(
        &self,
        module: &str,
        versions: &[&str],
        how: &str,
        at: i64,
    ) -> Result<Vec<VersionSightings>, LedgerError> {
        let known = self.get_many(module, versions)?;
        let unseen: Vec<&str> = known
            .iter()
            .filter(|k| k.first_seen.is_none())
            .map(|k| k.version.as_str())
            .collect();
        if unseen.is_empty() {
            return Ok(known);
        }
        self.record_seen_many(module, &unseen, how, at)?;
        self.get_many(module, versions)
    }

    /// Records `module@version` as seeded (old) by `by` at `at`; returns whether it was newly
    /// seeded (an earlier seed is kept).
    pub fn seed(
        &self,
        module: &str,
        version: &str,
        by: &str,
        at: i64,
    ) -> Result<bool, LedgerError> {
        Ok(self.seed_many(&[(module, version)], by, at)? == 1)
    }

    /// [`seed`](Self::seed) for many versions in one transaction; returns how many were newly
    /// seeded.
    pub fn seed_many(
        &self,
        versions: &[(&str, &str)],
        by: &str,
        at: i64,
    ) -> Result<usize, LedgerError> {
        check_text("seeded by", by)?;
        for (m, v) in versions {
            check_text("module", m)?;
            check_text("version", v)?;
        }
        self.write("seed", &format!("{} version(s)", versions.len()), |tx| {
            let mut upsert = tx.prepare(
                "INSERT INTO sightings (module, version, seeded_unix, seeded_by)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (module, version) DO UPDATE SET
                    seeded_unix = excluded.seeded_unix, seeded_by = excluded.seeded_by
                 WHERE sightings.seeded_unix IS NULL",
            )?;
            let mut n = 0;
            for (m, v) in versions {
                n += upsert.execute(params![m, v, at, by])?;
            }
            Ok(n)
        })
    }

    /// What is known about `module@version` (all `None` when nothing is).
    pub fn get(&self, module: &str, version: &str) -> Result<VersionSightings, LedgerError> {
        Ok(self.get_many(module, &[version])?.pop().unwrap_or_default())
    }

    /// [`get`](Self::get) for several versions of one module, in the order given.
    pub fn get_many(
        &self,
        module: &str,
        versions: &[&str],
    ) -> Result<Vec<VersionSightings>, LedgerError> {
        let conn = self.lock();
        let sql_err = |source| LedgerError::Sqlite {
            op: "get sightings",
            key: excerpt(module),
            source,
        };
        let mut stmt = conn
            .prepare(&format!("{SELECT} WHERE module = ?1 AND version = ?2"))
            .map_err(sql_err)?;
        versions
            .iter()
            .map(|v| {
                Ok(stmt
                    .query_row(params![module, v], row_to_sightings)
                    .optional()
                    .map_err(sql_err)?
                    .unwrap_or_else(|| VersionSightings {
                        module: module.to_owned(),
                        version: (*v).to_owned(),
                        ..VersionSightings::default()
                    }))
            })
            .collect()
    }

    /// Every version of `module` with a record, ordered by version text; for listings and
    /// tests.
    pub fn list(&self, module: &str) -> Result<Vec<VersionSightings>, LedgerError> {
        let conn = self.lock();
        let sql_err = |source| LedgerError::Sqlite {
            op: "list sightings",
            key: excerpt(module),
            source,
        };
        let mut stmt = conn
            .prepare(&format!("{SELECT} WHERE module = ?1 ORDER BY version"))
            .map_err(sql_err)?;
        let rows = stmt
            .query_map(params![module], row_to_sightings)
            .map_err(sql_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
    }

    /// Deletes at most `max` versions known only from the index (never seen by the gateway,
    /// not seeded) whose index time is before `before`; returns how many. Such a version,
    /// once older than every window, is decided the same without its row (old: the index,
    /// read past its first sighting, does not list it), so the store stays bounded.
    pub fn prune_index_only(&self, before: i64, max: usize) -> Result<usize, LedgerError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.write("prune index-only sightings", "sightings", |tx| {
            tx.execute(
                "DELETE FROM sightings WHERE (module, version) IN (
                    SELECT module, version FROM sightings INDEXED BY sightings_index_only
                    WHERE first_seen_unix IS NULL AND seeded_unix IS NULL AND feed_unix < ?1
                    LIMIT ?2)",
                params![before, max],
            )
        })
    }

    /// How far `feed` has been read, `None` before its first page.
    pub fn feed_progress(&self, feed: &str) -> Result<Option<FeedProgress>, LedgerError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT window_start_unix, cursor, read_to_unix FROM feed_progress WHERE feed = ?1",
            params![feed],
            |r| {
                Ok(FeedProgress {
                    window_start: r.get(0)?,
                    cursor: r.get(1)?,
                    read_to: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(|source| LedgerError::Sqlite {
            op: "feed progress",
            key: excerpt(feed),
            source,
        })
    }

    /// Starts reading `feed` afresh at `progress` (its window start, cursor and `read_to` =
    /// the window start), forgetting earlier progress (not the sightings already recorded).
    pub fn reset_feed(
        &self,
        feed: &str,
        progress: &FeedProgress,
        at: i64,
    ) -> Result<(), LedgerError> {
        check_text("feed", feed)?;
        self.write("reset feed", feed, |tx| {
            put_progress(tx, feed, progress, at)?;
            Ok(())
        })
    }

    /// Stores one page of `feed` and the progress past it, in one transaction: the progress
    /// only moves when the page's entries are durably stored. Each entry's feed time keeps the
    /// earliest one seen. The progress must continue the stored one (same window start,
    /// `read_to` not moving back); otherwise nothing is written and an error says why.
    pub fn record_feed_page(
        &self,
        feed: &str,
        entries: &[FeedEntry],
        progress: &FeedProgress,
        at: i64,
    ) -> Result<(), LedgerError> {
        check_text("feed", feed)?;
        check_text("cursor", &progress.cursor)?;
        for e in entries {
            check_text("module", &e.module)?;
            check_text("version", &e.version)?;
        }
        let continued = self.write("record feed page", feed, |tx| {
            // Checked inside the transaction: nothing moves it meanwhile.
            let stored: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT window_start_unix, read_to_unix FROM feed_progress WHERE feed = ?1",
                    params![feed],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let continues = stored.is_some_and(|(start, read_to)| {
                start == progress.window_start && read_to <= progress.read_to
            });
            if !continues {
                return Ok(Err(stored));
            }
            let mut upsert = tx.prepare(
                "INSERT INTO sightings (module, version, feed_unix) VALUES (?1, ?2, ?3)
                 ON CONFLICT (module, version) DO UPDATE SET feed_unix = excluded.feed_unix
                 WHERE sightings.feed_unix IS NULL OR sightings.feed_unix > excluded.feed_unix",
            )?;
            for e in entries {
                upsert.execute(params![e.module, e.version, e.at])?;
            }
            put_progress(tx, feed, progress, at)?;
            Ok(Ok(()))
        })?;
        continued.map_err(|stored| LedgerError::InvalidInput {
            what: "feed progress",
            value: format!(
                "window start {} read to {} after stored {stored:?}",
                progress.window_start, progress.read_to
            ),
            detail: "a feed page must continue the stored progress (reset_feed first)",
        })
    }
}

fn put_progress(
    tx: &rusqlite::Transaction<'_>,
    feed: &str,
    p: &FeedProgress,
    at: i64,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO feed_progress (feed, window_start_unix, cursor, read_to_unix, updated_unix)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (feed) DO UPDATE SET window_start_unix = excluded.window_start_unix,
            cursor = excluded.cursor, read_to_unix = excluded.read_to_unix,
            updated_unix = excluded.updated_unix",
        params![feed, p.window_start, p.cursor, p.read_to, at],
    )
}

#[cfg(test)]
mod tests;
