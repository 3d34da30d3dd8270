//! The company's checksum database in PostgreSQL, shared by every replica of a cluster (issue
//! 23): the semantics of the embedded SQLite [`modgate_sumdb::Log`] (the same append plan, tile
//! rules and head checks, from `modgate_sumdb`'s store rules; `modgate_sumdb::conformance` is
//! run against both), with one writer at a time cluster-wide.
//!
//! An append is one transaction holding the log's transaction-scoped advisory lock: read the
//! latest head, plan the batch on it, write the records, stored hashes and the new signed head,
//! commit. A replica appending while another does waits for the lock (bounded by the statement
//! timeout) and then plans on the head the other committed: the tree only ever grows by whole
//! batches, one after the other, so it never forks. The tables refuse `UPDATE`, `DELETE` and
//! `TRUNCATE` (a trigger), as the SQLite file's do. Several logs (a rotated key means a new log
//! name) live side by side, keyed by name; a name is bound to its verifier key forever.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use modgate_sumdb::{
    check_head, check_records, plan_append, record_range, tile_bytes, Batch, Entry, Error, Head,
    LogStore, LookupRecord, Signer, Tile, TileCache, TileCacheStats, Verifier,
};
use modgate_tlog::note::sign_tree;
use modgate_tlog::{tree_hash, Hash, HashReader, TlogError, Tree};
use postgres::{GenericClient, IsolationLevel, Transaction};

use crate::migrate::{check_schema, migrate};
use crate::pool::Pool;

/// The checksum database of a cluster, in PostgreSQL. `Send + Sync`.
pub struct PgLog {
    pool: Arc<Pool>,
    signer: Arc<Signer>,
    verifier: Verifier,
    tiles: TileCache,
}

impl fmt::Debug for PgLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLog")
            .field("store", &self.pool.name())
            .field("key", &self.verifier.key())
            .finish_non_exhaustive()
    }
}

/// Why a step failed: the database (the client is then not reused), or the log's rules.
enum Failure {
    Db(postgres::Error),
    Log(Error),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Log(e)
    }
}

fn to_i64(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::Corrupt(format!("{n} is beyond PostgreSQL's BIGINT")))
}

fn to_u64(n: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| Error::Corrupt(format!("negative {what} {n}")))
}

fn to_hash(bytes: &[u8], what: &str) -> Result<Hash, Error> {
    Hash::from_slice(bytes)
        .ok_or_else(|| Error::Corrupt(format!("{what} is {} bytes, not 32", bytes.len())))
}

/// A transaction shared by the append plan's lookups and its hash reads (they alternate).
type TxCell<'a, 'b> = RefCell<&'a mut Transaction<'b>>;

/// Stored hashes of one log read in a transaction, each read once (an append asks for the
/// tree's right edge for every record it adds); a database failure reads as
/// [`TlogError::MissingHash`] and is kept for [`PgHashes::explain`].
struct PgHashes<'t, 'a, 'b> {
    tx: &'t TxCell<'a, 'b>,
    log: &'t str,
    read: RefCell<HashMap<u64, Hash>>,
    failure: RefCell<Option<Failure>>,
}

impl<'t, 'a, 'b> PgHashes<'t, 'a, 'b> {
    fn new(tx: &'t TxCell<'a, 'b>, log: &'t str) -> Self {
        PgHashes {
            tx,
            log,
            read: RefCell::new(HashMap::new()),
            failure: RefCell::new(None),
        }
    }

    fn read(&self, indexes: &[u64]) -> Result<Vec<Hash>, Failure> {
        let wanted: Vec<i64> = {
            let known = self.read.borrow();
            indexes
                .iter()
                .filter(|i| !known.contains_key(i))
                .map(|&i| to_i64(i))
                .collect::<Result<_, _>>()?
        };
        if let (Some(&lo), Some(&hi)) = (wanted.iter().min(), wanted.iter().max()) {
            // Close together (a tile's hashes): one range scan of the primary key; else the
            // points (a tree's right edge).
            let rows = if hi - lo < 4 * wanted.len() as i64 + 16 {
                self.tx.borrow_mut().query(
                    "SELECT idx, hash FROM sumdb_hashes WHERE log = $1 AND idx BETWEEN $2 AND $3",
                    &[&self.log, &lo, &hi],
                )?
            } else {
                self.tx.borrow_mut().query(
                    "SELECT idx, hash FROM sumdb_hashes WHERE log = $1 AND idx = ANY($2)",
                    &[&self.log, &wanted],
                )?
            };
            let mut known = self.read.borrow_mut();
            for row in rows {
                let idx: i64 = row.try_get(0)?;
                let hash: Vec<u8> = row.try_get(1)?;
                known.insert(to_u64(idx, "hash index")?, to_hash(&hash, "a stored hash")?);
            }
        }
        let known = self.read.borrow();
        Ok(indexes
            .iter()
            .map(|i| known.get(i).copied().ok_or(TlogError::MissingHash(*i)))
            .collect::<Result<_, _>>()
            .map_err(Error::Tlog)?)
    }

    /// `err` as a failure: the database failure behind it if there was one.
    fn explain(&self, err: TlogError) -> Failure {
        self.failure
            .borrow_mut()
            .take()
            .unwrap_or(Failure::Log(Error::Tlog(err)))
    }
}

impl HashReader for PgHashes<'_, '_, '_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        match self.read(indexes) {
            Ok(hashes) => Ok(hashes),
            Err(Failure::Log(Error::Tlog(e))) => Err(e),
            Err(other) => {
                *self.failure.borrow_mut() = Some(other);
                Err(TlogError::MissingHash(
                    indexes.first().copied().unwrap_or_default(),
                ))
            }
        }
    }
}

/// Explains a failed hash read as the crate's error, keeping a database failure aside in
/// `db` (the plan and tile rules take an `Fn(TlogError) -> Error`).
fn explained(
    hashes: &PgHashes<'_, '_, '_>,
    db: &RefCell<Option<postgres::Error>>,
    e: TlogError,
) -> Error {
    match hashes.explain(e) {
        Failure::Log(e) => e,
        Failure::Db(e) => {
            let text = crate::error::detail(&e);
            *db.borrow_mut() = Some(e);
            Error::Corrupt(text)
        }
    }
}

/// A head from a row of `(size, hash, signed_note)`.
fn head_of(row: &postgres::Row) -> Result<Head, Failure> {
    let (size, hash, signed_note): (i64, Vec<u8>, Vec<u8>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(Head {
        tree: Tree {
            n: to_u64(size, "tree size")?,
            hash: to_hash(&hash, "a head's tree hash")?,
        },
        signed_note,
    })
}

/// The latest signed head of `log`.
fn latest_head(client: &mut impl GenericClient, log: &str) -> Result<Head, Failure> {
    let row = client.query_opt(
        "SELECT size, hash, signed_note FROM sumdb_heads WHERE log = $1 \
         ORDER BY size DESC LIMIT 1",
        &[&log],
    )?;
    let row = row.ok_or_else(|| Error::Corrupt(format!("no signed tree head of {log}")))?;
    head_of(&row)
}

/// The number of records and stored hashes of `log` (from the largest ids: they are dense).
fn counts(tx: &mut Transaction<'_>, log: &str) -> Result<(u64, u64), Failure> {
    let row = tx.query_one(
        "SELECT (SELECT COALESCE(MAX(id) + 1, 0) FROM sumdb_records WHERE log = $1), \
                (SELECT COALESCE(MAX(idx) + 1, 0) FROM sumdb_hashes WHERE log = $1)",
        &[&log],
    )?;
    let (records, hashes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok((to_u64(records, "count")?, to_u64(hashes, "count")?))
}

/// Records `start..start+n` of `log`, within a tree of `size`.
fn read_records(
    tx: &mut Transaction<'_>,
    log: &str,
    start: u64,
    n: u64,
    size: u64,
) -> Result<Vec<Vec<u8>>, Failure> {
    let range = record_range(start, n, size)?;
    let rows = tx.query(
        "SELECT id, text FROM sumdb_records WHERE log = $1 AND id >= $2 AND id < $3 ORDER BY id",
        &[&log, &to_i64(range.start)?, &to_i64(range.end)?],
    )?;
    let (mut ids, mut texts) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for row in rows {
        ids.push(to_u64(row.try_get(0)?, "record id")?);
        texts.push(row.try_get::<_, Vec<u8>>(1)?);
    }
    Ok(check_records(&range, &ids, texts)?)
}

impl PgLog {
    /// The log of `signer`'s name on `pool`'s database, its schema migrated first: created
    /// with the signed head of the empty tree if new; refused ([`Error::WrongKey`]) if the name
    /// is held under another key; and its latest head checked against the stored hashes.
    pub fn open(
        pool: Arc<Pool>,
        signer: impl Into<Arc<Signer>>,
        tile_cache_bytes: usize,
    ) -> Result<PgLog, Error> {
        migrate(&pool).map_err(|e| Error::Store {
            store: pool.name().to_owned(),
            op: "migrating the schema".into(),
            detail: e.to_string(),
        })?;
        let log = PgLog::new(pool, signer.into(), tile_cache_bytes);
        log.with_tx("opening the log", Mode::Write, |tx, name| {
            log.lock(tx)?;
            log.check_log(tx, name, true)
        })?;
        Ok(log)
    }

    /// The log for the commands (`sumdb verify`, `ledger accept`): the schema checked, never
    /// migrated, the log never created (a command must not change the database under the
    /// replicas, and may run against a read-only standby); refused if there is no log of this
    /// name or it has another key; its latest head checked.
    pub fn open_existing(
        pool: Arc<Pool>,
        signer: impl Into<Arc<Signer>>,
        tile_cache_bytes: usize,
    ) -> Result<PgLog, Error> {
        check_schema(&pool).map_err(|e| Error::Store {
            store: pool.name().to_owned(),
            op: "checking the schema".into(),
            detail: e.to_string(),
        })?;
        let log = PgLog::new(pool, signer.into(), tile_cache_bytes);
        log.with_tx("opening the log", Mode::Read, |tx, name| {
            log.check_log(tx, name, false)
        })?;
        Ok(log)
    }

    fn new(pool: Arc<Pool>, signer: Arc<Signer>, tile_cache_bytes: usize) -> PgLog {
        let verifier = signer.verifier();
        PgLog {
            pool,
            signer,
            verifier,
            tiles: TileCache::new(tile_cache_bytes),
        }
    }

    /// Checks the log `name` in `tx`: its key is the signer's (a log missing is created with
    /// the signed empty tree when `create`, else refused), and its latest head verifies and
    /// matches the stored hashes.
    fn check_log(&self, tx: &mut Transaction<'_>, name: &str, create: bool) -> Result<(), Failure> {
        let key: Option<String> = tx
            .query_opt(
                "SELECT verifier_key FROM sumdb_logs WHERE name = $1",
                &[&name],
            )?
            .map(|r| r.try_get(0))
            .transpose()?;
        match key {
            Some(key) if key != self.verifier.key() => {
                return Err(Failure::Log(Error::WrongKey {
                    store: self.pool.name().to_owned(),
                    logged_key: key,
                    signer_key: self.verifier.key(),
                }))
            }
            Some(_) => {}
            None if !create => {
                return Err(Failure::Log(Error::Store {
                    store: self.pool.name().to_owned(),
                    op: "opening the log".into(),
                    detail: format!(
                        "there is no checksum database {name}: a replica with this \
                         checksum_log: creates it at its start"
                    ),
                }))
            }
            None => {
                let now = modgate_ledger::store::now_unix();
                tx.execute(
                    "INSERT INTO sumdb_logs (name, verifier_key, created_unix) \
                     VALUES ($1, $2, $3)",
                    &[&name, &self.verifier.key(), &now],
                )?;
                let empty = Tree {
                    n: 0,
                    hash: tree_hash(0, &Vec::<Hash>::new()).map_err(Error::Tlog)?,
                };
                tx.execute(
                    "INSERT INTO sumdb_heads (log, size, hash, signed_note, signed_unix) \
                     VALUES ($1, 0, $2, $3, $4)",
                    &[
                        &name,
                        &&empty.hash.0[..],
                        &sign_tree(&empty, &self.signer),
                        &now,
                    ],
                )?;
            }
        }
        let head = latest_head(tx, name)?;
        let counted = counts(tx, name)?;
        let cell = RefCell::new(tx);
        let hashes = PgHashes::new(&cell, name);
        let db = RefCell::new(None);
        let checked = check_head(&head, &self.verifier, counted, |n| {
            tree_hash(n, &hashes).map_err(|e| explained(&hashes, &db, e))
        });
        if let Some(e) = db.take() {
            return Err(Failure::Db(e));
        }
        Ok(checked?)
    }

    /// Takes the log's writer lock for the rest of `tx`: one writer at a time cluster-wide.
    fn lock(&self, tx: &mut Transaction<'_>) -> Result<(), Failure> {
        let key = format!("modgate sumdb\n{}", self.verifier.name());
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&key],
        )?;
        Ok(())
    }

    /// Runs `work` on a pooled client; a database error marks the client broken and is
    /// reported as `op` on this store.
    fn with_client<T>(
        &self,
        op: &str,
        work: impl FnOnce(&mut postgres::Client, &str) -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let store_err = |detail: String| Error::Store {
            store: self.pool.name().to_owned(),
            op: op.to_owned(),
            detail,
        };
        let mut conn = self.pool.get().map_err(|e| store_err(e.to_string()))?;
        match work(&mut conn, self.verifier.name()) {
            Ok(v) => Ok(v),
            Err(Failure::Db(e)) => {
                conn.broken();
                Err(store_err(crate::error::detail(&e)))
            }
            Err(Failure::Log(e)) => Err(e),
        }
    }

    /// Runs `work` in one transaction of `mode` on a pooled client, committing when it
    /// succeeds.
    fn with_tx<T>(
        &self,
        op: &str,
        mode: Mode,
        work: impl FnOnce(&mut Transaction<'_>, &str) -> Result<T, Failure>,
    ) -> Result<T, Error> {
        self.with_client(op, |client, name| {
            let mut tx = match mode {
                // One snapshot for the head and what it covers.
                Mode::Read => client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?,
                // Read committed, whatever the server's default: a writer that waited for the
                // lock then reads the head the previous writer committed.
                Mode::Write => client
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
                    .start()?,
            };
            let out = work(&mut tx, name)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// How a transaction reads.
#[derive(Clone, Copy)]
enum Mode {
    /// Read-only, one snapshot (repeatable read).
    Read,
    /// Read committed (appends, under the writer lock).
    Write,
}

impl LogStore for PgLog {
    fn describe(&self) -> String {
        self.pool.name().to_owned()
    }

    fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn append(&self, entries: &[Entry]) -> Result<Batch, Error> {
        self.with_tx("appending to the log", Mode::Write, |tx, name| {
            self.lock(tx)?;
            let head = latest_head(tx, name)?;
            let size = head.tree.n;
            let (records, hashes) = counts(tx, name)?;
            let base = modgate_tlog::stored_hash_count(size);
            if records != size || hashes != base {
                return Err(Failure::Log(Error::Corrupt(format!(
                    "{records} records and {hashes} stored hashes under a head of {size} records"
                ))));
            }
            // The versions of the batch already logged, in one statement.
            let paths: Vec<&str> = entries.iter().map(Entry::path).collect();
            let versions: Vec<&str> = entries.iter().map(Entry::version).collect();
            let mut logged: HashMap<(String, String), (u64, String)> = HashMap::new();
            for r in tx.query(
                "SELECT r.path, r.version, r.id, r.text FROM sumdb_records r \
                 JOIN UNNEST($2::TEXT[], $3::TEXT[]) AS b (path, version) \
                   ON r.path = b.path AND r.version = b.version \
                 WHERE r.log = $1",
                &[&name, &paths, &versions],
            )? {
                let text: Vec<u8> = r.try_get(3)?;
                logged.insert(
                    (r.try_get(0)?, r.try_get(1)?),
                    (
                        to_u64(r.try_get(2)?, "record id")?,
                        String::from_utf8_lossy(&text).into_owned(),
                    ),
                );
            }
            let db = RefCell::new(None);
            let plan = {
                let cell = RefCell::new(&mut *tx);
                let stored = PgHashes::new(&cell, name);
                let find = |path: &str, version: &str| {
                    Ok(logged.get(&(path.to_owned(), version.to_owned())).cloned())
                };
                plan_append(size, entries, find, &stored, |e| explained(&stored, &db, e))
            };
            if let Some(e) = db.take() {
                return Err(Failure::Db(e));
            }
            let plan = plan?;
            let new_records = plan.records.len() as u64;
            let Some(tree) = plan.tree else {
                // Nothing new: nothing is written or signed.
                return Ok(Batch {
                    outcomes: plan.outcomes,
                    new_records,
                    tree_size: size,
                });
            };
            let ids: Vec<i64> = plan
                .records
                .iter()
                .map(|r| to_i64(r.id))
                .collect::<Result<_, _>>()?;
            let paths: Vec<&str> = plan.records.iter().map(|r| r.path.as_str()).collect();
            let versions: Vec<&str> = plan.records.iter().map(|r| r.version.as_str()).collect();
            let texts: Vec<&[u8]> = plan.records.iter().map(|r| r.text.as_bytes()).collect();
            tx.execute(
                "INSERT INTO sumdb_records (log, id, path, version, text) \
                 SELECT $1, * FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[])",
                &[&name, &ids, &paths, &versions, &texts],
            )?;
            let idxs: Vec<i64> = (base..base + plan.hashes.len() as u64)
                .map(to_i64)
                .collect::<Result<_, _>>()?;
            let hashes: Vec<&[u8]> = plan.hashes.iter().map(|h| &h.0[..]).collect();
            tx.execute(
                "INSERT INTO sumdb_hashes (log, idx, hash) \
                 SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BYTEA[])",
                &[&name, &idxs, &hashes],
            )?;
            tx.execute(
                "INSERT INTO sumdb_heads (log, size, hash, signed_note, signed_unix) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &name,
                    &to_i64(tree.n)?,
                    &&tree.hash.0[..],
                    &sign_tree(&tree, &self.signer),
                    &modgate_ledger::store::now_unix(),
                ],
            )?;
            Ok(Batch {
                outcomes: plan.outcomes,
                new_records,
                tree_size: tree.n,
            })
        })
    }

    fn lookup_record(&self, path: &str, version: &str) -> Result<Option<LookupRecord>, Error> {
        // One statement (one snapshot, one round trip): the record and the latest head.
        self.with_client("looking up a record", |client, name| {
            let row = client.query_opt(
                "SELECT r.id, r.text, h.size, h.signed_note FROM sumdb_records r, \
                 (SELECT size, signed_note FROM sumdb_heads WHERE log = $1 \
                  ORDER BY size DESC LIMIT 1) h \
                 WHERE r.log = $1 AND r.path = $2 AND r.version = $3",
                &[&name, &path, &version],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            let id = to_u64(row.try_get(0)?, "record id")?;
            let text: Vec<u8> = row.try_get(1)?;
            let size = to_u64(row.try_get(2)?, "tree size")?;
            if id >= size {
                return Err(Failure::Log(Error::Corrupt(format!(
                    "record {id} ({path}@{version}) is not covered by the latest head of {size} \
                     records"
                ))));
            }
            Ok(Some(LookupRecord {
                id,
                text,
                signed_head: row.try_get(3)?,
            }))
        })
    }

    fn head(&self) -> Result<Head, Error> {
        self.with_client("reading the latest head", |client, name| {
            latest_head(client, name)
        })
    }

    fn heads(&self) -> Result<Vec<Head>, Error> {
        self.with_client("reading the signed heads", |client, name| {
            let rows = client.query(
                "SELECT size, hash, signed_note FROM sumdb_heads WHERE log = $1 ORDER BY size",
                &[&name],
            )?;
            rows.iter().map(head_of).collect()
        })
    }

    fn records(&self, start: u64, n: u64) -> Result<Vec<Vec<u8>>, Error> {
        self.with_tx("reading records", Mode::Read, |tx, name| {
            let size = latest_head(tx, name)?.tree.n;
            read_records(tx, name, start, n, size)
        })
    }

    fn tile(&self, tile: &Tile) -> Result<Bytes, Error> {
        if tile.is_full() {
            if let Some(data) = self.tiles.get(tile) {
                return Ok(data);
            }
        }
        let data = self.with_tx("reading a tile", Mode::Read, |tx, name| {
            let size = latest_head(tx, name)?.tree.n;
            if tile.is_data() && tile.within(size) {
                let start = tile.n << tile.h;
                let texts = read_records(tx, name, start, u64::from(tile.w), size)?;
                return Ok(tile_bytes(
                    tile,
                    size,
                    |_, _| Ok(texts),
                    &NoHashes,
                    Error::Tlog,
                )?);
            }
            let cell = RefCell::new(tx);
            let hashes = PgHashes::new(&cell, name);
            let db = RefCell::new(None);
            let data = tile_bytes(
                tile,
                size,
                |_, _| Ok(Vec::new()),
                &hashes,
                |e| explained(&hashes, &db, e),
            );
            if let Some(e) = db.take() {
                return Err(Failure::Db(e));
            }
            Ok(data?)
        })?;
        let data = Bytes::from(data);
        if tile.is_full() {
            self.tiles.put(*tile, data.clone());
        }
        Ok(data)
    }

    fn tile_cache_stats(&self) -> TileCacheStats {
        self.tiles.stats()
    }
}

/// The hash reader of a data tile, which reads no hashes.
struct NoHashes;

impl HashReader for NoHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        Err(TlogError::MissingHash(
            indexes.first().copied().unwrap_or_default(),
        ))
    }
}
