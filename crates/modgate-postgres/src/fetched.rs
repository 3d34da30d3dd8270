//! The fetched-by-identity index in PostgreSQL, shared by every replica of a cluster (issue
//! 23): the semantics of the embedded SQLite [`modgate_fetched::FetchIndex`] (the same checks
//! and per-version summary, from `modgate_fetched::store`; `modgate_fetched::conformance` is run
//! against both), so `modgate fetched` and `/admin/fetched` on any replica list what every
//! replica served.
//!
//! A batch is one statement (`INSERT … SELECT FROM unnest(…)`, one round trip) and, with its
//! prune, one transaction. Records of replicas writing at once are all kept (plain inserts, no
//! read-modify-write). The count bound keeps the rows whose id is within `max_records` of the
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

use crate::migrate::migrate;
use crate::pool::Pool;

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

    /// The pool it uses.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
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
        let what = if prune.is_some() {
            "recording and pruning fetches"
        } else {
            "inserting fetches"
        };
        self.with_client(what, |client| {
            let mut tx = client.transaction()?;
            insert_in(&mut tx, fetches)?;
            let pruned = match prune {
                Some((now_ms, limits)) => prune_in(&mut tx, now_ms, limits)?,
                None => Pruned::default(),
            };
            tx.commit()?;
            Ok(pruned)
        })
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

/// Removes the rows older than the retention, then all but the newest `max_records`.
fn prune_in(
    client: &mut impl GenericClient,
    now_ms: i64,
    limits: Limits,
) -> Result<Pruned, postgres::Error> {
    let mut pruned = Pruned::default();
    if let Some(cutoff) = retention_cutoff(now_ms, limits) {
        pruned.aged = client.execute("DELETE FROM fetched_records WHERE at_ms < $1", &[&cutoff])?;
    }
    pruned.over = client.execute(
        "DELETE FROM fetched_records WHERE id <= (SELECT MAX(id) FROM fetched_records) - $1",
        &[&keep(limits)],
    )?;
    Ok(pruned)
}

impl FetchStore for PgFetchIndex {
    fn insert(&self, fetches: &[Fetch]) -> Result<(), FetchedError> {
        self.write(fetches, None).map(drop)
    }

    fn prune(&self, now_ms: i64, limits: Limits) -> Result<Pruned, FetchedError> {
        self.with_client("pruning fetches", |client| prune_in(client, now_ms, limits))
    }

    /// Records and prunes in one transaction.
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
