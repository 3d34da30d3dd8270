//! What every fetched-index store does, whichever database holds it: the [`FetchStore`] trait
//! that the embedded SQLite [`FetchIndex`](crate::FetchIndex) and the shared PostgreSQL index
//! (crate `modgate-postgres`, issue 23) implement with the same semantics, and the rules both
//! apply (record checks, the query's range check, the retention cut-off, the per-version
//! summary of the grouped rows), so the two cannot drift apart. `conformance` holds the one
//! test suite both must pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::FetchedError;
use crate::index::{Fetch, Hashes, Kind, Limits, Pruned, Query, VersionFetched};

/// Longest module path, version or identity name kept (longer ones are refused).
pub const MAX_FIELD_LEN: usize = 4096;

/// An index of what each identity fetched, wherever it is kept. `Send + Sync`: the writer
/// thread and the queries share one handle; several handles (threads, processes, replicas) on
/// one store never lose each other's records.
pub trait FetchStore: Send + Sync + fmt::Debug {
    /// Records `fetches` in one transaction (all or none); each is checked first
    /// ([`check_fetches`]).
    fn insert(&self, fetches: &[Fetch]) -> Result<(), FetchedError>;

    /// Removes the records older than `now_ms - retention`, then all but the newest
    /// `max_records` (see [`Limits`]).
    fn prune(&self, now_ms: i64, limits: Limits) -> Result<Pruned, FetchedError>;

    /// Records `fetches` and prunes to `limits`: what the writer does with each batch. A store
    /// may do both in one transaction; this default does one after the other.
    fn record(
        &self,
        fetches: &[Fetch],
        now_ms: i64,
        limits: Limits,
    ) -> Result<Pruned, FetchedError> {
        self.insert(fetches)?;
        self.prune(now_ms, limits)
    }

    /// How many records the store holds.
    fn count(&self) -> Result<u64, FetchedError>;

    /// The module versions `q.identity` fetched in `[q.since_ms, q.until_ms)`, sorted by module
    /// path and version text (bytewise), zip and mod merged ([`summarize`]); an empty range is
    /// refused ([`check_query`]).
    fn query(&self, q: &Query) -> Result<Vec<VersionFetched>, FetchedError>;

    /// The store, for messages: `SQLite fetched index /var/cache/modgate/fetched.sqlite`,
    /// `PostgreSQL 10.0.0.5:5432/modgate`.
    fn describe(&self) -> String;
}

/// Checks the records of a batch: identity, source, module and version are neither empty nor
/// longer than [`MAX_FIELD_LEN`] bytes.
pub fn check_fetches(fetches: &[Fetch]) -> Result<(), FetchedError> {
    for f in fetches {
        for (what, v) in [
            ("identity", &f.identity),
            ("source", &f.source),
            ("module", &f.module),
            ("version", &f.version),
        ] {
            if v.is_empty() || v.len() > MAX_FIELD_LEN {
                return Err(FetchedError::Invalid(format!(
                    "a fetch record's {what} is empty or longer than {MAX_FIELD_LEN} bytes"
                )));
            }
        }
    }
    Ok(())
}

/// Checks a query: its time range is not empty.
pub fn check_query(q: &Query) -> Result<(), FetchedError> {
    if q.until_ms <= q.since_ms {
        return Err(FetchedError::Invalid(
            "the time range is empty: --until must be after --since".into(),
        ));
    }
    Ok(())
}

/// The time before which records go for their age (`None`: no retention).
pub fn retention_cutoff(now_ms: i64, limits: Limits) -> Option<i64> {
    limits
        .retention
        .map(|r| now_ms.saturating_sub(i64::try_from(r.as_millis()).unwrap_or(i64::MAX)))
}

/// [`Limits::max_records`] as both databases compare it.
pub fn keep(limits: Limits) -> i64 {
    i64::try_from(limits.max_records).unwrap_or(i64::MAX)
}

/// One row of a query's grouping, as both stores compute it in SQL: the records of one
/// (module, version, artifact, source, identity, hashes) in the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// Module path.
    pub module: String,
    /// Exact version.
    pub version: String,
    /// `"zip"` or `"mod"` as stored (a row of another kind is skipped).
    pub kind: String,
    /// The identity's source.
    pub source: String,
    /// The identity's name.
    pub identity: String,
    /// The SHA-256 recorded (`None`: the ledger had no hashes).
    pub sha256: Option<String>,
    /// The `h1:` recorded.
    pub h1: Option<String>,
    /// The first record's time.
    pub first_ms: i64,
    /// The last record's time.
    pub last_ms: i64,
    /// How many records.
    pub count: i64,
}

/// Merges grouped rows into one [`VersionFetched`] per module version, sorted by module path
/// and version text (bytewise).
pub fn summarize(rows: impl IntoIterator<Item = GroupRow>) -> Vec<VersionFetched> {
    let mut out: BTreeMap<(String, String), VersionFetched> = BTreeMap::new();
    for row in rows {
        let Some(kind) = Kind::parse(&row.kind) else {
            continue;
        };
        let v = out
            .entry((row.module.clone(), row.version.clone()))
            .or_insert_with(|| VersionFetched {
                module: row.module,
                version: row.version,
                first_ms: row.first_ms,
                last_ms: row.last_ms,
                count: 0,
                identities: BTreeSet::new(),
                zip: BTreeSet::new(),
                zip_fetched: false,
                module_file: BTreeSet::new(),
                mod_fetched: false,
            });
        v.first_ms = v.first_ms.min(row.first_ms);
        v.last_ms = v.last_ms.max(row.last_ms);
        v.count += row.count.max(0) as u64;
        v.identities
            .insert(format!("{}:{}", row.source, row.identity));
        let hashes = row.sha256.map(|sha256| Hashes { sha256, h1: row.h1 });
        let (set, fetched) = match kind {
            Kind::Zip => (&mut v.zip, &mut v.zip_fetched),
            Kind::Mod => (&mut v.module_file, &mut v.mod_fetched),
        };
        *fetched = true;
        set.extend(hashes);
    }
    out.into_values().collect()
}
