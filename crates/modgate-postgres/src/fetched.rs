//! The fetched-by-identity index in PostgreSQL, shared by every replica of a cluster (issue
//! 23): the semantics of the embedded SQLite [`modgate_fetched::FetchIndex`] (the same checks
//! and per-version summary, from `modgate_fetched::store`; `modgate_fetched::conformance` is run
//! against both), so `modgate fetched` and `/admin/fetched` on any replica list what every
//! replica served.
//!
//! A batch is one statement (`INSERT … SELECT FROM unnest(…)`, one round trip), committed on
//! its own: records of replicas writing at once are all kept (plain inserts, no
//! read-modify-write), and a prune that fails never takes a batch's records with it. The prune
//! after a batch is best effort and bounded: one replica at a time (a transaction-scoped
//! advisory lock, skipped when another replica holds it, so pruners never deadlock each other)
//! removes at most [`PRUNE_CHUNK`] rows per bound, so lowering `retention` or `max_records` on a
//! large table trims it over the following batches instead of one statement that outlives the
//! statement timeout. An explicit [`FetchStore::prune`] goes on chunk by chunk to the end. The count bound keeps the rows whose id is within `max_records` of the
//! largest: ids come from one sequence, so this is exact for the rows of committed batches; a
//! batch rolled back leaves a gap in the sequence, after which slightly fewer rows are kept
//! until the gap ages out — never more than `max_records`.

use std::fmt;
use std::sync::Arc;

use modgate_fetched::store::{
    check_fetches, check_query, keep, retention_cutoff, summarize, FetchStore, GroupRow,
};
use modgate_fetched::{Fetch, FetchedError, Limits, Pruned, Query, VersionFetched};
use postgres::GenericClient;

use crate::migrate::{check_schema, migrate};
use crate::pool::Pool;

/// Rows one prune statement removes at most.
pub const PRUNE_CHUNK: i64 = 10_000;

/// The advisory lock of pruning ("modgate" and 3).
const PRUNE_LOCK: i64 = 0x6d6f_6467_6174_6503;

/// Chunks an explicit prune removes at most (a bound on its loop: 100 million rows).
const MAX_CHUNKS: usize = 10_000;

/// The fetched index of a cluster, in PostgreSQL. `Send + Sync`.
pub struct PgFetchIndex {
    pool: Arc<Pool>,
}

impl fmt::Debug for PgFetchIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgFetchIndex")
            .field("store", &self.pool.name())
            .finish_non_exhaustive()
    }
}

impl PgFetchIndex {
    /// The index on `pool`'s database, its schema migrated first (safe when several replicas
    /// start at once).
    pub fn open(pool: Arc<Pool>) -> Result<PgFetchIndex, FetchedError> {
        migrate(&pool).map_err(|e| FetchedError::Store {
            store: pool.name().to_owned(),
            what: "migrating the schema",
            detail: e.to_string(),
        })?;
        Ok(PgFetchIndex { pool })
    }

    /// The index on `pool`'s database for queries (the commands): the schema is checked, never
    /// migrated ([`check_schema`]).
    pub fn open_existing(pool: Arc<Pool>) -> Result<PgFetchIndex, FetchedError> {
        check_schema(&pool).map_err(|e| FetchedError::Store {
            store: pool.name().to_owned(),
            what: "checking the schema",
            detail: e.to_string(),
        })?;
        Ok(PgFetchIndex { pool })
    }

    /// Runs `work` on a pooled client; an error from the client marks it broken (its session
    /// may be in an unknown state) and is reported as `what` on this store.
    fn with_client<T>(
        &self,
        what: &'static str,
        work: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, FetchedError> {
        let mut conn = self.pool.get().map_err(|e| FetchedError::Store {
            store: self.pool.name().to_owned(),
            what,
            detail: e.to_string(),
        })?;
        work(&mut conn).map_err(|e| {
            conn.broken();
            FetchedError::Store {
                store: self.pool.name().to_owned(),
                what,
                detail: crate::error::detail(&e),
            }
        })
    }

    fn write(
        &self,
        fetches: &[Fetch],
        prune: Option<(i64, Limits)>,
    ) -> Result<Pruned, FetchedError> {
        check_fetches(fetches)?;
        self.with_client("inserting fetches", |client| insert_in(client, fetches))?;
        let Some((now_ms, limits)) = prune else {
            return Ok(Pruned::default());
        };
        // Best effort: the batch is in; a prune that fails is logged and tried after the next.
        let pruned = self.with_client("pruning fetches", |client| {
            let mut tx = client.transaction()?;
            let locked: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])?
                .try_get(0)?;
            if !locked {
                return Ok(Pruned::default());
            }
            let pruned = prune_in(&mut tx, now_ms, limits)?;
            tx.commit()?;
            Ok(pruned)
        });
        Ok(pruned.unwrap_or_else(|e| {
            log::warn!("{e} (the batch was recorded; pruning is tried again after the next)");
            Pruned::default()
        }))
    }
}

/// Inserts `fetches` in one statement.
fn insert_in(client: &mut impl GenericClient, fetches: &[Fetch]) -> Result<(), postgres::Error> {
    if fetches.is_empty() {
        return Ok(());
    }
    let mut at = Vec::with_capacity(fetches.len());
    let (mut identity, mut source, mut module, mut version, mut kind) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sha256, mut h1) = (Vec::new(), Vec::new());
    for f in fetches {
        at.push(f.at_ms);
        identity.push(f.identity.as_str());
        source.push(f.source.as_str());
        module.push(f.module.as_str());
        version.push(f.version.as_str());
        kind.push(f.kind.as_str());
        sha256.push(f.hashes.as_ref().map(|h| h.sha256.as_str()));
        h1.push(f.hashes.as_ref().and_then(|h| h.h1.as_deref()));
    }
    // `unnest` of several arrays yields their elements side by side, in order: ids follow the
    // batch's order, so "the newest" is the last inserted as in SQLite.
    client.execute(
        "INSERT INTO fetched_records (at_ms, identity, source, module, version, kind, sha256, h1)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::text[])",
        &[
            &at, &identity, &source, &module, &version, &kind, &sha256, &h1,
        ],
    )?;
    Ok(())
}

/// Removes at most [`PRUNE_CHUNK`] of the rows older than the retention, then at most as many
/// of those beyond the newest `max_records` (oldest first).
fn prune_in(
    client: &mut impl GenericClient,
    now_ms: i64,
    limits: Limits,
) -> Result<Pruned, postgres::Error> {
    let mut pruned = Pruned::default();
    if let Some(cutoff) = retention_cutoff(now_ms, limits) {
        pruned.aged = client.execute(
            "DELETE FROM fetched_records WHERE id IN (SELECT id FROM fetched_records \
             WHERE at_ms < $1 ORDER BY at_ms LIMIT $2)",
            &[&cutoff, &PRUNE_CHUNK],
        )?;
    }
    pruned.over = client.execute(
        "DELETE FROM fetched_records WHERE id IN (SELECT id FROM fetched_records \
         WHERE id <= (SELECT MAX(id) FROM fetched_records) - $1 ORDER BY id LIMIT $2)",
        &[&keep(limits), &PRUNE_CHUNK],
    )?;
    Ok(pruned)
}

impl FetchStore for PgFetchIndex {
    fn insert(&self, fetches: &[Fetch]) -> Result<(), FetchedError> {
        self.write(fetches, None).map(drop)
    }

    fn prune(&self, now_ms: i64, limits: Limits) -> Result<Pruned, FetchedError> {
        let mut total = Pruned::default();
        for _ in 0..MAX_CHUNKS {
            let p =
                self.with_client("pruning fetches", |client| prune_in(client, now_ms, limits))?;
            total.aged += p.aged;
            total.over += p.over;
            if p.aged < PRUNE_CHUNK as u64 && p.over < PRUNE_CHUNK as u64 {
                break;
            }
        }
        Ok(total)
    }

    /// Records the batch (committed on its own), then prunes at most a chunk, best effort.
    fn record(
        &self,
        fetches: &[Fetch],
        now_ms: i64,
        limits: Limits,
    ) -> Result<Pruned, FetchedError> {
        self.write(fetches, Some((now_ms, limits)))
    }

    fn count(&self) -> Result<u64, FetchedError> {
        let n: i64 = self.with_client("counting fetches", |client| {
            client
                .query_one("SELECT COUNT(*) FROM fetched_records", &[])?
                .try_get(0)
        })?;
        Ok(n.max(0) as u64)
    }

    fn query(&self, q: &Query) -> Result<Vec<VersionFetched>, FetchedError> {
        check_query(q)?;
        let rows = self.with_client("querying fetches", |client| {
            client.query(
                "SELECT module, version, kind, source, identity, sha256, h1, MIN(at_ms),
                        MAX(at_ms), COUNT(*)
                 FROM fetched_records
                 WHERE identity = $1 AND ($2::text IS NULL OR source = $2) AND at_ms >= $3
                   AND at_ms < $4
                 GROUP BY module, version, kind, source, identity, sha256, h1",
                &[
                    &q.identity.name,
                    &q.identity.source,
                    &q.since_ms,
                    &q.until_ms,
                ],
            )
        })?;
        let grouped = rows
            .iter()
            .map(|r| {
                Ok(GroupRow {
                    module: r.try_get(0)?,
                    version: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    source: r.try_get(3)?,
                    identity: r.try_get(4)?,
                    sha256: r.try_get(5)?,
                    h1: r.try_get(6)?,
                    first_ms: r.try_get(7)?,
                    last_ms: r.try_get(8)?,
                    count: r.try_get(9)?,
                })
            })
            .collect::<Result<Vec<GroupRow>, postgres::Error>>()
            .map_err(|e| FetchedError::Store {
                store: self.pool.name().to_owned(),
                what: "reading fetches",
                detail: crate::error::detail(&e),
            })?;
        Ok(summarize(grouped))
    }

    fn describe(&self) -> String {
        self.pool.name().to_owned()
    }
}
