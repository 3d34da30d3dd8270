//! The log's durable store: one SQLite file (WAL, `synchronous=FULL`) holding the records, their
//! stored hashes (modgate-tlog's layout), every signed tree head, and the log's name and
//! verifier key.
//!
//! An append of a batch is one `BEGIN IMMEDIATE` transaction: the new records, their stored
//! hashes, the new tree hash, the signed head of the new tree, commit. So a crash leaves either
//! all of a batch or none of it: never a signed head whose tiles cannot be served, never a
//! record no signed head covers. A module version already logged with the same text keeps its
//! id; with other text the append is refused ([`Error::Conflict`]). Nothing rewrites or deletes
//! history: the schema's triggers refuse `UPDATE` and `DELETE` on the log's tables.
//!
//! Reads use a small pool of read-only connections; each answer reads in one read transaction,
//! so a lookup's record and the head it is served with come from the same committed state.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use modgate_tlog::note::sign_tree;
use modgate_tlog::{
    stored_hash_count, tree_hash, Hash, HashReader, Signer, Tile, TlogError, Tree, Verifier,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::cache::{TileCache, TileCacheStats};
use crate::store::{self, check_records, plan_append, record_range, tile_bytes, LogStore};
use crate::{Entry, Error};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Read connections kept for reuse (more are opened while busy, then closed).
const POOL: usize = 8;

/// Default budget of the full-tile cache.
pub const DEFAULT_TILE_CACHE_BYTES: usize = 32 << 20;

const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE records (
    id      INTEGER PRIMARY KEY CHECK (id >= 0),
    path    TEXT NOT NULL,
    version TEXT NOT NULL,
    text    BLOB NOT NULL,
    UNIQUE (path, version)
);
CREATE TABLE hashes (
    idx  INTEGER PRIMARY KEY CHECK (idx >= 0),
    hash BLOB NOT NULL CHECK (length(hash) = 32)
);
CREATE TABLE heads (
    size        INTEGER PRIMARY KEY CHECK (size >= 0),
    hash        BLOB NOT NULL CHECK (length(hash) = 32),
    signed_note BLOB NOT NULL,
    signed_unix INTEGER NOT NULL
);
CREATE TRIGGER meta_no_update BEFORE UPDATE ON meta
    BEGIN SELECT RAISE(ABORT, 'the checksum database is append-only'); END;
CREATE TRIGGER meta_no_delete BEFORE DELETE ON meta
    BEGIN SELECT RAISE(ABORT, 'the checksum database is append-only'); END;
CREATE TRIGGER records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'the checksum database is append-only'); END;
CREATE TRIGGER records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'the checksum database is append-only'); END;
CREATE TRIGGER hashes_no_update BEFORE UPDATE ON hashes
    BEGIN SELECT RAISE(ABORT, 'the checksum database is append-only'); END;
CREATE TRIGGER hashes_no_delete BEFORE DELETE ON hashes
    BEGIN SELECT RAISE(ABORT, 'the checksum database is append-only'); END;
CREATE TRIGGER heads_no_update BEFORE UPDATE ON heads
    BEGIN SELECT RAISE(ABORT, 'the checksum database is append-only'); END;
CREATE TRIGGER heads_no_delete BEFORE DELETE ON heads
    BEGIN SELECT RAISE(ABORT, 'the checksum database is append-only'); END;
";

/// A signed tree head as stored: the tree and the signed note served at `/latest`.
#[derive(Clone, PartialEq, Eq)]
pub struct Head {
    /// The tree: size (records) and root hash.
    pub tree: Tree,
    /// The signed note (`go.sum database tree\n<N>\n<hash>\n` and its signature line).
    pub signed_note: Vec<u8>,
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Head({} records, {})", self.tree.n, self.tree.hash)
    }
}

/// What an append did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record id of the module version.
    pub id: u64,
    /// Whether this append added it (`false`: it was logged before, with the same text, or
    /// earlier in the same batch).
    pub new: bool,
}

/// A logged record as `/lookup/` serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRecord {
    /// The record id.
    pub id: u64,
    /// The record text (the two go.sum lines).
    pub text: Vec<u8>,
    /// The latest signed head's note, read in the same transaction (it covers the record).
    pub signed_head: Vec<u8>,
}

/// The result of appending a batch.
#[derive(Debug)]
pub struct Batch {
    /// One outcome per entry, in order: its id, or why it was refused ([`Error::Conflict`]).
    pub outcomes: Vec<Result<Appended, Error>>,
    /// Records this batch added (0: nothing was signed).
    pub new_records: u64,
    /// The tree size after the batch.
    pub tree_size: u64,
}

/// Options of [`Log::open_with`].
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Bytes of full tiles kept in memory (0: none). Default [`DEFAULT_TILE_CACHE_BYTES`].
    pub tile_cache_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            tile_cache_bytes: DEFAULT_TILE_CACHE_BYTES,
        }
    }
}

/// The checksum database's log in one SQLite file: append in batches, read records, heads and
/// tiles. `Send + Sync`: share it (`Arc<Log>`) between the appender and the readers.
pub struct Log {
    path: PathBuf,
    signer: Arc<Signer>,
    verifier: Verifier,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    tiles: TileCache,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("path", &self.path)
            .field("key", &self.verifier.key())
            .finish_non_exhaustive()
    }
}

pub(crate) fn to_i64(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::Corrupt(format!("{n} is beyond SQLite's integers")))
}

pub(crate) fn to_u64(n: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| Error::Corrupt(format!("negative {what} {n}")))
}

/// Column `i` as bytes, whether SQLite holds it as a blob or as text (an edit by hand can turn
/// a blob into text).
pub(crate) fn bytes_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Vec<u8>> {
    Ok(row.get_ref(i)?.as_bytes()?.to_vec())
}

pub(crate) fn to_hash(bytes: &[u8], what: &str) -> Result<Hash, Error> {
    Hash::from_slice(bytes)
        .ok_or_else(|| Error::Corrupt(format!("{what} is {} bytes, not 32", bytes.len())))
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Runs `op` again while SQLite reports a lock conflict it does not wait for in the busy
/// handler (two connections switching a new file to WAL), for at most [`BUSY_TIMEOUT`].
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

/// The latest signed head in `conn`'s current transaction.
pub(crate) fn latest_head(conn: &Connection) -> Result<Head, Error> {
    let row: Option<(i64, Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT size, hash, signed_note FROM heads ORDER BY size DESC LIMIT 1")
        .and_then(|mut s| {
            s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(Error::sqlite("reading the latest head"))?;
    let (size, hash, signed_note) =
        row.ok_or_else(|| Error::Corrupt("no signed tree head at all".into()))?;
    Ok(Head {
        tree: Tree {
            n: to_u64(size, "tree size")?,
            hash: to_hash(&hash, "a head's tree hash")?,
        },
        signed_note,
    })
}

/// Stored hashes read from a connection (in its current transaction).
pub(crate) struct DbHashes<'c> {
    conn: &'c Connection,
    failure: RefCell<Option<Error>>,
    /// The point and range queries, prepared on first use (an append reads up to log₂ n
    /// hashes per record).
    point: RefCell<Option<rusqlite::Statement<'c>>>,
    range: RefCell<Option<rusqlite::Statement<'c>>>,
}

impl<'c> DbHashes<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        DbHashes {
            conn,
            failure: RefCell::new(None),
            point: RefCell::new(None),
            range: RefCell::new(None),
        }
    }

    /// The statement in `slot`, prepared from `sql` if not yet.
    fn prepared<'s>(
        &self,
        slot: &'s RefCell<Option<rusqlite::Statement<'c>>>,
        sql: &str,
    ) -> Result<std::cell::RefMut<'s, rusqlite::Statement<'c>>, Error> {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                self.conn
                    .prepare(sql)
                    .map_err(Error::sqlite("reading stored hashes"))?,
            );
        }
        std::cell::RefMut::filter_map(slot, Option::as_mut)
            .map_err(|_| Error::Corrupt("a prepared statement vanished".into()))
    }

    /// The database error behind a [`TlogError::MissingHash`] this reader returned, if any.
    fn take_failure(&self) -> Option<Error> {
        self.failure.borrow_mut().take()
    }

    /// `err` as this crate's error: the database failure behind it if there was one.
    fn explain(&self, err: TlogError) -> Error {
        self.take_failure().unwrap_or(Error::Tlog(err))
    }

    fn read_db(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        let (Some(&lo), Some(&hi)) = (indexes.iter().min(), indexes.iter().max()) else {
            return Ok(Vec::new());
        };
        let mut found: HashMap<u64, Hash> = HashMap::with_capacity(indexes.len());
        if hi - lo < 4 * indexes.len() as u64 + 16 {
            // Close together (a level-0 tile): one range scan.
            let mut stmt = self.prepared(
                &self.range,
                "SELECT idx, hash FROM hashes WHERE idx BETWEEN ?1 AND ?2",
            )?;
            let rows = stmt
                .query_map(params![to_i64(lo)?, to_i64(hi)?], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(Error::sqlite("reading stored hashes"))?;
            for row in rows {
                let (idx, hash) = row.map_err(Error::sqlite("reading stored hashes"))?;
                found.insert(to_u64(idx, "hash index")?, to_hash(&hash, "a stored hash")?);
            }
        } else {
            let mut stmt = self.prepared(&self.point, "SELECT hash FROM hashes WHERE idx = ?1")?;
            for &i in indexes {
                let hash: Option<Vec<u8>> = stmt
                    .query_row([to_i64(i)?], |r| r.get(0))
                    .optional()
                    .map_err(Error::sqlite("reading stored hashes"))?;
                if let Some(hash) = hash {
                    found.insert(i, to_hash(&hash, "a stored hash")?);
                }
            }
        }
        indexes
            .iter()
            .map(|i| {
                found
                    .get(i)
                    .copied()
                    .ok_or(Error::Tlog(TlogError::MissingHash(*i)))
            })
            .collect()
    }
}

impl HashReader for DbHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        match self.read_db(indexes) {
            Ok(hashes) => Ok(hashes),
            Err(Error::Tlog(e)) => Err(e),
            Err(e) => {
                let first = indexes.first().copied().unwrap_or_default();
                *self.failure.borrow_mut() = Some(e);
                Err(TlogError::MissingHash(first))
            }
        }
    }
}

/// Stored hashes of a [`Log`], read from the database (a [`HashReader`] for modgate-tlog's
/// proofs and tree hashes). A database failure reads as [`TlogError::MissingHash`];
/// [`LogHashReader::last_error`] tells the cause.
pub struct LogHashReader<'l> {
    log: &'l Log,
    conn: RefCell<Option<Connection>>,
    failure: RefCell<Option<Error>>,
}

impl LogHashReader<'_> {
    /// The database error behind the last [`TlogError::MissingHash`], if that was the cause.
    pub fn last_error(&self) -> Option<Error> {
        self.failure.borrow_mut().take()
    }
}

impl HashReader for LogHashReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        let conn = self.conn.borrow();
        let Some(conn) = conn.as_ref() else {
            return Err(TlogError::MissingHash(
                indexes.first().copied().unwrap_or_default(),
            ));
        };
        let db = DbHashes::new(conn);
        let result = db.read_hashes(indexes);
        if let Some(e) = db.take_failure() {
            *self.failure.borrow_mut() = Some(e);
        }
        result
    }
}

impl Drop for LogHashReader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().take() {
            self.log.give_back(conn);
        }
    }
}

impl Log {
    /// Opens the log in `path`, creating it (and its directory) if needed, signed by `signer`.
    /// A new file gets the log's name and verifier key and a signed head of the empty tree. An
    /// existing file must be this signer's log ([`Error::WrongLog`] otherwise: rotating the key
    /// means a new log name and a new file), and its latest head must verify and match its
    /// stored hashes.
    pub fn open(path: &Path, signer: impl Into<Arc<Signer>>) -> Result<Log, Error> {
        Self::open_with(path, signer, LogOptions::default())
    }

    /// [`Log::open`] with options.
    pub fn open_with(
        path: &Path,
        signer: impl Into<Arc<Signer>>,
        options: LogOptions,
    ) -> Result<Log, Error> {
        let signer = signer.into();
        let verifier = signer.verifier();
        let open_err = |step: &'static str| {
            let path = path.to_path_buf();
            move |source| Error::Open { path, step, source }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open(path).map_err(open_err("opening the file"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(open_err("setting the busy timeout"))?;
        retry_busy(|| {
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        })
        .map_err(open_err("switching to WAL mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err("setting synchronous=FULL"))?;

        retry_busy(|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            match init_schema(&tx, path, &signer, &verifier) {
                Ok(()) => tx.commit().map(|()| Ok(())),
                Err(Error::Sqlite { source, .. }) => Err(source),
                Err(e) => Ok(Err(e)),
            }
        })
        .map_err(open_err("creating or reading the schema"))??;
        check_head(&conn, &verifier)?;
        Ok(Log {
            path: path.to_path_buf(),
            signer,
            verifier,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            tiles: TileCache::new(options.tile_cache_bytes),
        })
    }

    fn lock_writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction (rusqlite rolls back
        // on drop): keep going.
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pool(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A read connection from the pool, or a new one.
    fn take_reader(&self) -> Result<Connection, Error> {
        if let Some(conn) = self.pool().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(Error::sqlite("opening a read connection"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(Error::sqlite("opening a read connection"))?;
        Ok(conn)
    }

    /// Returns a read connection to the pool (or closes it when the pool is full).
    fn give_back(&self, conn: Connection) {
        let mut pool = self.pool();
        if pool.len() < POOL {
            pool.push(conn);
        }
    }

    /// Runs `f` on a pooled read connection.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.take_reader()?;
        let result = f(&mut conn);
        self.give_back(conn);
        result
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log's name (the server name of its key).
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// The verifier of the log's heads.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The verifier key, `<name>+<key id>+<key>`: what `GOSUMDB` names.
    pub fn verifier_key(&self) -> String {
        self.verifier.key()
    }

    /// Appends `entries` as one batch: one transaction and, if any entry is new, one signed
    /// head. Entries already logged with the same text (before or earlier in the batch) keep
    /// their id; with other text they are refused ([`Error::Conflict`]) and the rest of the
    /// batch is appended. An `Err` means the whole batch was rolled back. This blocks on
    /// SQLite and an fsync: from async code, use an [`Appender`](crate::Appender).
    pub fn append(&self, entries: &[Entry]) -> Result<Batch, Error> {
        let mut conn = self.lock_writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::sqlite("starting an append"))?;
        let head = latest_head(&tx)?;
        let size = head.tree.n;
        let (records, hashes) = counts(&tx)?;
        let base = stored_hash_count(size);
        if records != size || hashes != base {
            return Err(Error::Corrupt(format!(
                "{records} records and {hashes} stored hashes under a head of {size} records"
            )));
        }
        let db = DbHashes::new(&tx);
        let plan = {
            let mut find = tx
                .prepare("SELECT id, text FROM records WHERE path = ?1 AND version = ?2")
                .map_err(Error::sqlite("append"))?;
            plan_append(
                size,
                entries,
                |path, version| {
                    find.query_row(params![path, version], |r| {
                        Ok((r.get::<_, i64>(0)?, bytes_at(r, 1)?))
                    })
                    .optional()
                    .map_err(Error::sqlite("append"))?
                    .map(|(id, t)| {
                        Ok((
                            to_u64(id, "record id")?,
                            String::from_utf8_lossy(&t).into_owned(),
                        ))
                    })
                    .transpose()
                },
                &db,
                |e| db.explain(e),
            )?
        };
        drop(db);
        let new_records = plan.records.len() as u64;
        let Some(tree) = plan.tree else {
            // Nothing new: nothing to sign; the transaction wrote nothing.
            tx.rollback().map_err(Error::sqlite("append"))?;
            return Ok(Batch {
                outcomes: plan.outcomes,
                new_records,
                tree_size: size,
            });
        };
        {
            let mut insert = tx
                .prepare("INSERT INTO records (id, path, version, text) VALUES (?1, ?2, ?3, ?4)")
                .map_err(Error::sqlite("append"))?;
            for r in &plan.records {
                insert
                    .execute(params![to_i64(r.id)?, r.path, r.version, r.text.as_bytes()])
                    .map_err(Error::sqlite("append"))?;
            }
            let mut insert = tx
                .prepare("INSERT INTO hashes (idx, hash) VALUES (?1, ?2)")
                .map_err(Error::sqlite("append"))?;
            for (i, h) in (base..).zip(&plan.hashes) {
                insert
                    .execute(params![to_i64(i)?, &h.0[..]])
                    .map_err(Error::sqlite("append"))?;
            }
        }
        tx.execute(
            "INSERT INTO heads (size, hash, signed_note, signed_unix) VALUES (?1, ?2, ?3, ?4)",
            params![
                to_i64(tree.n)?,
                &tree.hash.0[..],
                sign_tree(&tree, &self.signer),
                now_unix()
            ],
        )
        .map_err(Error::sqlite("signing the new head"))?;
        tx.commit()
            .map_err(Error::sqlite("committing the append"))?;
        Ok(Batch {
            outcomes: plan.outcomes,
            new_records,
            tree_size: tree.n,
        })
    }

    /// Appends one module version (a batch of one): its record id, new or as logged before.
    pub fn append_one(
        &self,
        path: &str,
        version: &str,
        zip_h1: &str,
        mod_h1: &str,
    ) -> Result<u64, Error> {
        let entry = Entry::new(path, version, zip_h1, mod_h1)?;
        let mut batch = self.append(std::slice::from_ref(&entry))?;
        match batch.outcomes.pop() {
            Some(outcome) => outcome.map(|a| a.id),
            None => Err(Error::Corrupt(
                "an append of one entry had no outcome".into(),
            )),
        }
    }

    /// The record id of `path@version`, if logged (every logged record is covered by the
    /// latest signed head).
    pub fn lookup(&self, path: &str, version: &str) -> Result<Option<u64>, Error> {
        self.with_reader(|conn| {
            let id: Option<i64> = conn
                .prepare("SELECT id FROM records WHERE path = ?1 AND version = ?2")
                .and_then(|mut s| s.query_row([path, version], |r| r.get(0)).optional())
                .map_err(Error::sqlite("lookup"))?;
            id.map(|id| to_u64(id, "record id")).transpose()
        })
    }

    /// The answer to `/lookup/<path>@<version>`, read in one transaction: the record's id and
    /// text and the latest signed head's note (which covers it). `None` if not logged.
    pub fn lookup_record(&self, path: &str, version: &str) -> Result<Option<LookupRecord>, Error> {
        self.with_reader(|conn| {
            let tx = conn.transaction().map_err(Error::sqlite("lookup"))?;
            let found: Option<(i64, Vec<u8>)> = tx
                .prepare("SELECT id, text FROM records WHERE path = ?1 AND version = ?2")
                .and_then(|mut s| {
                    s.query_row([path, version], |r| Ok((r.get(0)?, bytes_at(r, 1)?)))
                        .optional()
                })
                .map_err(Error::sqlite("lookup"))?;
            let Some((id, text)) = found else {
                return Ok(None);
            };
            let id = to_u64(id, "record id")?;
            let head = latest_head(&tx)?;
            if id >= head.tree.n {
                return Err(Error::Corrupt(format!(
                    "record {id} ({path}@{version}) is not covered by the latest head of {} \
                     records",
                    head.tree.n
                )));
            }
            Ok(Some(LookupRecord {
                id,
                text,
                signed_head: head.signed_note,
            }))
        })
    }

    /// The latest signed head.
    pub fn head(&self) -> Result<Head, Error> {
        self.with_reader(|conn| latest_head(conn))
    }

    /// The latest signed tree head's note (what `/latest` serves).
    pub fn signed_head(&self) -> Result<Vec<u8>, Error> {
        Ok(self.head()?.signed_note)
    }

    /// The number of records in the latest signed tree.
    pub fn tree_size(&self) -> Result<u64, Error> {
        Ok(self.head()?.tree.n)
    }

    /// The texts of records `start..start+n`, all within the latest signed tree.
    pub fn records(&self, start: u64, n: u64) -> Result<Vec<Vec<u8>>, Error> {
        self.with_reader(|conn| {
            let tx = conn
                .transaction()
                .map_err(Error::sqlite("reading records"))?;
            let size = latest_head(&tx)?.tree.n;
            read_records(&tx, start, n, size)
        })
    }

    /// The contents of `tile` (a hash tile, or a data tile of `<id>\n<text>\n` records as
    /// `sumdb.Server` serves them), full or partial; [`Error::NotInTree`] for a tile the latest
    /// signed tree does not have yet. Full tiles are cached in memory.
    pub fn tile(&self, tile: &Tile) -> Result<Bytes, Error> {
        if tile.is_full() {
            if let Some(data) = self.tiles.get(tile) {
                return Ok(data);
            }
        }
        let data = self.with_reader(|conn| {
            let tx = conn
                .transaction()
                .map_err(Error::sqlite(format!("reading {tile}")))?;
            let size = latest_head(&tx)?.tree.n;
            let db = DbHashes::new(&tx);
            tile_bytes(
                tile,
                size,
                |start, n| read_records(&tx, start, n, size),
                &db,
                |e| db.explain(e),
            )
        })?;
        let data = Bytes::from(data);
        if tile.is_full() {
            self.tiles.put(*tile, data.clone());
        }
        Ok(data)
    }

    /// A [`HashReader`] over the stored hashes (for proofs and tree hashes). It reads the
    /// database as it is at each call.
    pub fn hash_reader(&self) -> Result<LogHashReader<'_>, Error> {
        Ok(LogHashReader {
            log: self,
            conn: RefCell::new(Some(self.take_reader()?)),
            failure: RefCell::new(None),
        })
    }

    /// What the full-tile cache has done.
    pub fn tile_cache_stats(&self) -> TileCacheStats {
        self.tiles.stats()
    }
}

impl LogStore for Log {
    fn describe(&self) -> String {
        format!("the checksum database {}", self.path.display())
    }

    fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn append(&self, entries: &[Entry]) -> Result<Batch, Error> {
        Log::append(self, entries)
    }

    fn lookup_record(&self, path: &str, version: &str) -> Result<Option<LookupRecord>, Error> {
        Log::lookup_record(self, path, version)
    }

    fn head(&self) -> Result<Head, Error> {
        Log::head(self)
    }

    fn heads(&self) -> Result<Vec<Head>, Error> {
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare("SELECT size, hash, signed_note FROM heads ORDER BY size")
                .map_err(Error::sqlite("reading the signed heads"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)?, bytes_at(r, 1)?, bytes_at(r, 2)?))
                })
                .map_err(Error::sqlite("reading the signed heads"))?;
            let mut heads = Vec::new();
            for row in rows {
                let (size, hash, signed_note) =
                    row.map_err(Error::sqlite("reading the signed heads"))?;
                heads.push(Head {
                    tree: Tree {
                        n: to_u64(size, "tree size")?,
                        hash: to_hash(&hash, "a head's tree hash")?,
                    },
                    signed_note,
                });
            }
            Ok(heads)
        })
    }

    fn records(&self, start: u64, n: u64) -> Result<Vec<Vec<u8>>, Error> {
        Log::records(self, start, n)
    }

    fn tile(&self, tile: &Tile) -> Result<Bytes, Error> {
        Log::tile(self, tile)
    }

    fn tile_cache_stats(&self) -> TileCacheStats {
        Log::tile_cache_stats(self)
    }

    fn lookup(&self, path: &str, version: &str) -> Result<Option<u64>, Error> {
        Log::lookup(self, path, version)
    }
}

/// The number of records and of stored hashes (from the largest ids: the ids are dense).
fn counts(conn: &Connection) -> Result<(u64, u64), Error> {
    let (records, hashes): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT COALESCE(MAX(id) + 1, 0) FROM records), \
                    (SELECT COALESCE(MAX(idx) + 1, 0) FROM hashes)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(Error::sqlite("counting records"))?;
    Ok((to_u64(records, "count")?, to_u64(hashes, "count")?))
}

/// Records `start..start+n`, which must be within a tree of `size`.
fn read_records(conn: &Connection, start: u64, n: u64, size: u64) -> Result<Vec<Vec<u8>>, Error> {
    let range = record_range(start, n, size)?;
    let mut stmt = conn
        .prepare("SELECT id, text FROM records WHERE id >= ?1 AND id < ?2 ORDER BY id")
        .map_err(Error::sqlite("reading records"))?;
    let rows = stmt
        .query_map(params![to_i64(range.start)?, to_i64(range.end)?], |r| {
            Ok((r.get::<_, i64>(0)?, bytes_at(r, 1)?))
        })
        .map_err(Error::sqlite("reading records"))?;
    let (mut ids, mut texts) = (Vec::new(), Vec::new());
    for row in rows {
        let (id, text) = row.map_err(Error::sqlite("reading records"))?;
        ids.push(to_u64(id, "record id")?);
        texts.push(text);
    }
    check_records(&range, &ids, texts)
}

/// Creates the schema and the empty tree's head in a new file, or checks an existing file's
/// schema, name and key.
fn init_schema(
    tx: &Connection,
    path: &Path,
    signer: &Signer,
    verifier: &Verifier,
) -> Result<(), Error> {
    let tables: i64 = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(Error::sqlite("reading the schema"))?;
    let has_meta: bool = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )
        .map_err(Error::sqlite("reading the schema"))?;
    let schema_error = |found: String| Error::Schema {
        path: path.to_path_buf(),
        found,
        supported: SCHEMA_VERSION,
    };
    if tables == 0 {
        tx.execute_batch(SCHEMA)
            .map_err(Error::sqlite("creating the schema"))?;
        let key = verifier.key();
        let mut insert = tx
            .prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")
            .map_err(Error::sqlite("writing the log's name and key"))?;
        for (k, v) in [
            ("schema", SCHEMA_VERSION.to_string()),
            ("name", verifier.name().to_string()),
            ("verifier_key", key),
            ("created_unix", now_unix().to_string()),
        ] {
            insert
                .execute(params![k, v])
                .map_err(Error::sqlite("writing the log's name and key"))?;
        }
        let empty = Tree {
            n: 0,
            hash: tree_hash(0, &Vec::<Hash>::new())?,
        };
        tx.execute(
            "INSERT INTO heads (size, hash, signed_note, signed_unix) VALUES (0, ?1, ?2, ?3)",
            params![&empty.hash.0[..], sign_tree(&empty, signer), now_unix()],
        )
        .map_err(Error::sqlite("signing the empty tree"))?;
        return Ok(());
    }
    if !has_meta {
        return Err(schema_error(String::new()));
    }
    let meta = |key: &str| -> Result<String, Error> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(Error::sqlite("reading the log's name and key"))
            .map(Option::unwrap_or_default)
    };
    let schema = meta("schema")?;
    if schema != SCHEMA_VERSION.to_string() {
        return Err(schema_error(schema));
    }
    let file_key = meta("verifier_key")?;
    let name = meta("name")?;
    if file_key != verifier.key() || name != verifier.name() {
        return Err(Error::WrongLog {
            path: path.to_path_buf(),
            file_key,
            signer_key: verifier.key(),
        });
    }
    Ok(())
}

/// Checks that the latest head verifies with this log's key, matches the stored hashes,
/// and covers exactly the records there are.
fn check_head(conn: &Connection, verifier: &Verifier) -> Result<(), Error> {
    let head = latest_head(conn)?;
    let db = DbHashes::new(conn);
    store::check_head(&head, verifier, counts(conn)?, |n| {
        tree_hash(n, &db).map_err(|e| db.explain(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{h1, other_signer, signer};
    use modgate_tlog::note::open_tree;
    use modgate_tlog::record::format_data_tile;
    use modgate_tlog::{read_tile_data, record_hash, stored_hashes, Tile};

    /// Each case on its own file in a temporary directory, each handle its own `Log`.
    struct SqliteFiles;

    impl crate::conformance::Harness for SqliteFiles {
        fn store(&self, case: &str) -> Arc<crate::conformance::Opener> {
            let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
            let path = dir.path().join(format!("{case}.db"));
            Arc::new(move |signer| {
                let _keep = &dir;
                Ok(Arc::new(Log::open(&path, signer)?) as Arc<dyn LogStore>)
            })
        }
    }

    #[test]
    fn conformance_suite_on_sqlite() {
        crate::conformance::run_all(&SqliteFiles);
    }

    fn entry(i: u64) -> Entry {
        Entry::new(
            &format!("example.com/m{}", i % 7),
            &format!("v1.{}.0", i / 7),
            &h1(&format!("zip {i}")),
            &h1(&format!("mod {i}")),
        )
        .unwrap()
    }

    /// The stored hashes of `entries` computed in memory by modgate-tlog.
    fn memory_log(entries: &[Entry]) -> Vec<Hash> {
        let mut hashes = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let new = stored_hashes(i as u64, e.text().as_bytes(), &hashes).unwrap();
            hashes.extend(new);
        }
        hashes
    }

    #[test]
    fn a_new_log_signs_the_empty_tree_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/sumdb.db");
        let log = Log::open(&path, signer("sum.corp.example")).unwrap();
        let head = log.head().unwrap();
        assert_eq!(head.tree.n, 0);
        assert_eq!(open_tree(&head.signed_note, log.verifier()), Ok(head.tree));
        let mode: String = log
            .lock_writer()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = log
            .lock_writer()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        drop(log);
        let again = Log::open(&path, signer("sum.corp.example")).unwrap();
        assert_eq!(again.head().unwrap(), head);
    }

    #[test]
    fn another_key_or_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sumdb.db");
        Log::open(&path, signer("sum.corp.example")).unwrap();
        for other in [
            other_signer("sum.corp.example"),
            signer("sum2.corp.example"),
        ] {
            let err = Log::open(&path, other).unwrap_err();
            assert!(matches!(err, Error::WrongLog { .. }), "{err}");
            assert!(err.to_string().contains("new log name"), "{err}");
        }
        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        assert!(matches!(
            Log::open(&foreign, signer("sum.corp.example")),
            Err(Error::Schema { .. })
        ));
    }

    #[test]
    fn batches_append_dense_ids_and_match_tlog() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&dir.path().join("sumdb.db"), signer("sum.corp.example")).unwrap();
        let entries: Vec<Entry> = (0..600).map(entry).collect();
        let mut start = 0;
        // Batches of uneven sizes crossing the 256 boundaries.
        for size in [1, 254, 1, 1, 100, 243] {
            let batch = log.append(&entries[start..start + size]).unwrap();
            assert_eq!(batch.new_records, size as u64);
            let ids: Vec<u64> = batch
                .outcomes
                .iter()
                .map(|o| o.as_ref().unwrap().id)
                .collect();
            assert_eq!(
                ids,
                (start as u64..(start + size) as u64).collect::<Vec<_>>()
            );
            start += size;
            assert_eq!(batch.tree_size, start as u64);
        }
        let memory = memory_log(&entries);
        let head = log.head().unwrap();
        assert_eq!(head.tree.n, 600);
        assert_eq!(head.tree.hash, tree_hash(600, &memory).unwrap());
        assert_eq!(open_tree(&head.signed_note, log.verifier()), Ok(head.tree));
        // Hash tiles equal modgate-tlog's over the in-memory log; data tiles frame the texts.
        for path in [
            "tile/8/0/000",
            "tile/8/0/001",
            "tile/8/0/002.p/88",
            "tile/8/1/000.p/2",
            "tile/8/0/001.p/3",
        ] {
            let t = Tile::parse(path).unwrap();
            assert_eq!(
                &log.tile(&t).unwrap()[..],
                &read_tile_data(&t, &memory).unwrap()[..],
                "{path}"
            );
        }
        let data = log
            .tile(&Tile::parse("tile/8/data/002.p/88").unwrap())
            .unwrap();
        let texts: Vec<String> = entries[512..600].iter().map(Entry::text).collect();
        assert_eq!(&data[..], &format_data_tile(512, &texts).unwrap()[..]);
        assert!(matches!(
            log.tile(&Tile::parse("tile/8/0/002.p/89").unwrap()),
            Err(Error::NotInTree { size: 600, .. })
        ));
        assert!(matches!(log.records(599, 2), Err(Error::NotInTree { .. })));
        assert_eq!(
            log.records(599, 1).unwrap(),
            vec![entries[599].text().into_bytes()]
        );
        // The hash reader reads the stored hashes.
        let reader = log.hash_reader().unwrap();
        assert_eq!(tree_hash(600, &reader).unwrap(), head.tree.hash);
        assert_eq!(
            reader.read_hashes(&[0]).unwrap(),
            vec![record_hash(entries[0].text().as_bytes())]
        );
        assert_eq!(
            reader.read_hashes(&[1 << 40]),
            Err(TlogError::MissingHash(1 << 40))
        );
    }

    #[test]
    fn repeats_keep_their_id_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&dir.path().join("sumdb.db"), signer("sum.corp.example")).unwrap();
        let a = entry(0);
        let b = entry(1);
        let a2 = Entry::new(a.path(), a.version(), &h1("other"), &h1("mod 0")).unwrap();
        let batch = log
            .append(&[a.clone(), b.clone(), a.clone(), a2.clone()])
            .unwrap();
        assert_eq!(batch.new_records, 2);
        assert_eq!(
            *batch.outcomes[0].as_ref().unwrap(),
            Appended { id: 0, new: true }
        );
        assert_eq!(
            *batch.outcomes[1].as_ref().unwrap(),
            Appended { id: 1, new: true }
        );
        assert_eq!(
            *batch.outcomes[2].as_ref().unwrap(),
            Appended { id: 0, new: false }
        );
        assert!(
            matches!(&batch.outcomes[3], Err(Error::Conflict { logged, offered, .. })
            if *logged == a.text() && *offered == a2.text())
        );
        let heads_before = log.head().unwrap();
        // Already logged: same id, no new head.
        let again = log.append(&[b.clone(), a2.clone()]).unwrap();
        assert_eq!(again.new_records, 0);
        assert_eq!(
            *again.outcomes[0].as_ref().unwrap(),
            Appended { id: 1, new: false }
        );
        assert!(matches!(again.outcomes[1], Err(Error::Conflict { .. })));
        assert_eq!(log.head().unwrap(), heads_before);
        assert_eq!(log.lookup(a.path(), a.version()).unwrap(), Some(0));
        assert_eq!(log.lookup(a.path(), "v9.9.9").unwrap(), None);
        let found = log.lookup_record(b.path(), b.version()).unwrap().unwrap();
        assert_eq!((found.id, found.text), (1, b.text().into_bytes()));
        assert_eq!(found.signed_head, heads_before.signed_note);
        assert!(matches!(
            log.append_one(a.path(), a.version(), &h1("other"), &h1("mod 0")),
            Err(Error::Conflict { .. })
        ));
    }

    #[test]
    fn history_cannot_be_rewritten_through_sql() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&dir.path().join("sumdb.db"), signer("sum.corp.example")).unwrap();
        log.append(&[entry(0)]).unwrap();
        let conn = log.lock_writer();
        for sql in [
            "UPDATE records SET text = 'x'",
            "DELETE FROM records",
            "UPDATE hashes SET hash = zeroblob(32)",
            "DELETE FROM hashes",
            "DELETE FROM heads",
            "UPDATE meta SET value = 'x'",
        ] {
            let err = conn.execute(sql, []).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
    }

    #[test]
    fn a_failing_append_leaves_the_previous_head_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sumdb.db");
        let log = Log::open(&path, signer("sum.corp.example")).unwrap();
        log.append(&(0..10).map(entry).collect::<Vec<_>>()).unwrap();
        let before = log.head().unwrap();
        // Fail the batch at its last step, signing the head, after records and hashes went in.
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER fail BEFORE INSERT ON heads \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
            )
            .unwrap();
        let err = log
            .append(&(10..20).map(entry).collect::<Vec<_>>())
            .unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(log.head().unwrap(), before);
        assert_eq!(
            log.lookup(entry(10).path(), entry(10).version()).unwrap(),
            None
        );
        assert!(matches!(log.records(10, 1), Err(Error::NotInTree { .. })));
        other.execute_batch("DROP TRIGGER fail").unwrap();
        drop(log);
        let log = Log::open(&path, signer("sum.corp.example")).unwrap();
        assert_eq!(log.head().unwrap(), before);
        let batch = log
            .append(&(10..20).map(entry).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(batch.tree_size, 20);
        assert!(crate::verify(&path, log.verifier()).unwrap().is_ok());
    }

    #[test]
    fn open_refuses_a_file_whose_records_no_head_covers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sumdb.db");
        let log = Log::open(&path, signer("sum.corp.example")).unwrap();
        log.append(&[entry(0)]).unwrap();
        drop(log);
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO records (id, path, version, text) VALUES (1, 'example.com/x', 'v1.0.0', 'x')",
            [],
        )
        .unwrap();
        let err = Log::open(&path, signer("sum.corp.example")).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
    }
}
