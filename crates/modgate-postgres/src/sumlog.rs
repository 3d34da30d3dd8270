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
use postgres::{IsolationLevel, Transaction};

use crate::migrate::migrate;
use crate::pool::Pool;

pub use modgate_sumdb::DEFAULT_TILE_CACHE_BYTES;

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

/// Stored hashes of one log read in a transaction; a database failure reads as
/// [`TlogError::MissingHash`] and is kept for [`PgHashes::explain`].
struct PgHashes<'t, 'a, 'b> {
    tx: &'t TxCell<'a, 'b>,
    log: &'t str,
    failure: RefCell<Option<Failure>>,
}

impl PgHashes<'_, '_, '_> {
    fn read(&self, indexes: &[u64]) -> Result<Vec<Hash>, Failure> {
        let wanted: Vec<i64> = indexes
            .iter()
            .map(|&i| to_i64(i))
            .collect::<Result<_, _>>()?;
        let rows = self.tx.borrow_mut().query(
            "SELECT idx, hash FROM sumdb_hashes WHERE log = $1 AND idx = ANY($2)",
            &[&self.log, &wanted],
        )?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let idx: i64 = row.try_get(0)?;
            let hash: Vec<u8> = row.try_get(1)?;
            found.insert(to_u64(idx, "hash index")?, to_hash(&hash, "a stored hash")?);
        }
        Ok(indexes
            .iter()
            .map(|i| found.get(i).copied().ok_or(TlogError::MissingHash(*i)))
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

/// The latest signed head of `log` in `tx`.
fn latest_head(tx: &mut Transaction<'_>, log: &str) -> Result<Head, Failure> {
    let row = tx.query_opt(
        "SELECT size, hash, signed_note FROM sumdb_heads WHERE log = $1 \
         ORDER BY size DESC LIMIT 1",
        &[&log],
    )?;
    let row = row.ok_or_else(|| Error::Corrupt(format!("no signed tree head of {log}")))?;
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
        let signer = signer.into();
        let verifier = signer.verifier();
        migrate(&pool).map_err(|e| Error::Store {
            store: pool.name().to_owned(),
            op: "migrating the schema".into(),
            detail: e.to_string(),
        })?;
        let log = PgLog {
            pool,
            signer,
            verifier,
            tiles: TileCache::new(tile_cache_bytes),
        };
        log.with_tx("opening the log", false, |tx, name| {
            log.lock(tx)?;
            let key: Option<String> = tx
                .query_opt(
                    "SELECT verifier_key FROM sumdb_logs WHERE name = $1",
                    &[&name],
                )?
                .map(|r| r.try_get(0))
                .transpose()?;
            match key {
                Some(key) if key != log.verifier.key() => {
                    return Err(Failure::Log(Error::WrongKey {
                        store: log.pool.name().to_owned(),
                        logged_key: key,
                        signer_key: log.verifier.key(),
                    }))
                }
                Some(_) => {}
                None => {
                    let now = modgate_ledger::store::now_unix();
                    tx.execute(
                        "INSERT INTO sumdb_logs (name, verifier_key, created_unix) \
                         VALUES ($1, $2, $3)",
                        &[&name, &log.verifier.key(), &now],
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
                            &sign_tree(&empty, &log.signer),
                            &now,
                        ],
                    )?;
                }
            }
            let head = latest_head(tx, name)?;
            let counted = counts(tx, name)?;
            let cell = RefCell::new(tx);
            let hashes = PgHashes {
                tx: &cell,
                log: name,
                failure: RefCell::new(None),
            };
            let db = RefCell::new(None);
            let checked = check_head(&head, &log.verifier, counted, |n| {
                tree_hash(n, &hashes).map_err(|e| explained(&hashes, &db, e))
            });
            if let Some(e) = db.take() {
                return Err(Failure::Db(e));
            }
            Ok(checked?)
        })?;
        Ok(log)
    }

    /// The pool it uses.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
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

    /// Runs `work` in one transaction on a pooled client (read-only and repeatable-read when
    /// `read`), committing when it succeeds. A database error marks the client broken and is
    /// reported as `op` on this store.
    fn with_tx<T>(
        &self,
        op: &str,
        read: bool,
        work: impl FnOnce(&mut Transaction<'_>, &str) -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let store_err = |detail: String| Error::Store {
            store: self.pool.name().to_owned(),
            op: op.to_owned(),
            detail,
        };
        let mut conn = self.pool.get().map_err(|e| store_err(e.to_string()))?;
        let result = (|| {
            let mut tx = if read {
                conn.build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?
            } else {
                conn.transaction()?
            };
            let out = work(&mut tx, self.verifier.name())?;
            tx.commit()?;
            Ok(out)
        })();
        match result {
            Ok(v) => Ok(v),
            Err(Failure::Db(e)) => {
                conn.broken();
                Err(store_err(crate::error::detail(&e)))
            }
            Err(Failure::Log(e)) => Err(e),
        }
    }
}

impl LogStore for PgLog {
    fn describe(&self) -> String {
        self.pool.name().to_owned()
    }

    fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn append(&self, entries: &[Entry]) -> Result<Batch, Error> {
        self.with_tx("appending to the log", false, |tx, name| {
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
            let db = RefCell::new(None);
            let plan = {
                let cell = RefCell::new(&mut *tx);
                let stored = PgHashes {
                    tx: &cell,
                    log: name,
                    failure: RefCell::new(None),
                };
                let find = |path: &str, version: &str| -> Result<Option<(u64, String)>, Error> {
                    let row = cell.borrow_mut().query_opt(
                        "SELECT id, text FROM sumdb_records \
                         WHERE log = $1 AND path = $2 AND version = $3",
                        &[&name, &path, &version],
                    );
                    let row = match row {
                        Ok(row) => row,
                        Err(e) => {
                            let text = crate::error::detail(&e);
                            *db.borrow_mut() = Some(e);
                            return Err(Error::Corrupt(text));
                        }
                    };
                    row.map(|r| {
                        let id: i64 = r.try_get(0).map_err(|e| Error::Corrupt(e.to_string()))?;
                        let text: Vec<u8> =
                            r.try_get(1).map_err(|e| Error::Corrupt(e.to_string()))?;
                        Ok((
                            to_u64(id, "record id")?,
                            String::from_utf8_lossy(&text).into_owned(),
                        ))
                    })
                    .transpose()
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
        self.with_tx("looking up a record", true, |tx, name| {
            let row = tx.query_opt(
                "SELECT id, text FROM sumdb_records WHERE log = $1 AND path = $2 AND version = $3",
                &[&name, &path, &version],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            let id = to_u64(row.try_get(0)?, "record id")?;
            let text: Vec<u8> = row.try_get(1)?;
            let head = latest_head(tx, name)?;
            if id >= head.tree.n {
                return Err(Failure::Log(Error::Corrupt(format!(
                    "record {id} ({path}@{version}) is not covered by the latest head of {} \
                     records",
                    head.tree.n
                ))));
            }
            Ok(Some(LookupRecord {
                id,
                text,
                signed_head: head.signed_note,
            }))
        })
    }

    fn head(&self) -> Result<Head, Error> {
        self.with_tx("reading the latest head", true, |tx, name| {
            latest_head(tx, name)
        })
    }

    fn records(&self, start: u64, n: u64) -> Result<Vec<Vec<u8>>, Error> {
        self.with_tx("reading records", true, |tx, name| {
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
        let data = self.with_tx("reading a tile", true, |tx, name| {
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
            let hashes = PgHashes {
                tx: &cell,
                log: name,
                failure: RefCell::new(None),
            };
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
