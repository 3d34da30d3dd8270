//! The integrity ledger in PostgreSQL, shared by every replica of a cluster: the semantics of
//! the embedded SQLite [`modgate_ledger::Ledger`] (the same checks and comparison, from
//! `modgate_ledger::store`), with each write (`observe`, `accept`) one transaction holding a
//! transaction-scoped advisory lock on its `(module, version, artifact)`: concurrent first
//! observations on different replicas resolve to exactly one record, and a mismatch or an
//! accept is decided against the record as committed. An accept also publishes an
//! [`EventKind::Accept`](crate::EventKind::Accept) event in its transaction, so every replica
//! forgets its refusal of the old bytes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use modgate_ledger::store::{
    check_text, compare, key_of, list_key, prefix_range, Compared, LedgerStore, Observation,
};
use modgate_ledger::{Artifact, Check, Entry, HistoryEntry, LedgerError};
use postgres::Transaction;

use crate::events::{publish, EventKind};
use crate::migrate::migrate;
use crate::pool::Pool;

pub use modgate_ledger::store::now_unix;

/// The ledger of a cluster, in PostgreSQL. `Send + Sync`.
pub struct PgLedger {
    pool: Arc<Pool>,
    /// This replica's name, recorded as the origin of the events it publishes.
    origin: String,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("store", &self.pool.name())
            .finish_non_exhaustive()
    }
}

const SELECT_ENTRY: &str = "SELECT module, version, artifact, sha256, h1, size, \
                            first_seen_unix, source, accepted_by FROM ledger_entries";

impl PgLedger {
    /// The ledger on `pool`'s database, its schema migrated first (safe when several replicas
    /// start at once). `origin` names this replica in the events it publishes.
    pub fn open(pool: Arc<Pool>, origin: &str) -> Result<PgLedger, LedgerError> {
        migrate(&pool).map_err(|e| LedgerError::OpenStore {
            store: pool.name().to_owned(),
            step: "migrating the schema",
            detail: e.to_string(),
        })?;
        Ok(PgLedger {
            pool,
            origin: origin.to_owned(),
        })
    }

    /// The pool it uses.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    fn store_err(&self, op: &'static str, key: &str, detail: String) -> LedgerError {
        LedgerError::Store {
            store: self.pool.name().to_owned(),
            op,
            key: key.to_owned(),
            detail,
        }
    }

    /// Runs `work` on a pooled client; an error from the client marks it broken (its session
    /// may be in an unknown state) and is reported as `op` on `key`.
    fn with_client<T>(
        &self,
        op: &'static str,
        key: &str,
        work: impl FnOnce(&mut postgres::Client) -> Result<T, Failure>,
    ) -> Result<T, LedgerError> {
        let mut conn = self
            .pool
            .get()
            .map_err(|e| self.store_err(op, key, e.to_string()))?;
        match work(&mut conn) {
            Ok(v) => Ok(v),
            Err(Failure::Db(e)) => {
                conn.broken();
                Err(self.store_err(op, key, crate::error::detail(&e)))
            }
            Err(Failure::Ledger(e)) => Err(e),
        }
    }

    /// One write transaction on the record of `(module, version, artifact)`: the advisory lock
    /// of the record, its current row, `work`, commit.
    fn on_record<T>(
        &self,
        op: &'static str,
        (module, version, artifact): (&str, &str, Artifact),
        work: impl FnOnce(&mut Transaction<'_>, Option<Entry>, &str) -> Result<T, Failure>,
    ) -> Result<T, LedgerError> {
        let key = key_of(module, version, Some(artifact));
        self.with_client(op, &key, |client| {
            let mut tx = client.transaction()?;
            // Newlines cannot occur in a module or version (`check_text`): the key is unambiguous.
            let lock = format!("{module}\n{version}\n{}", artifact.as_str());
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&lock],
            )?;
            let row = tx.query_opt(
                &format!("{SELECT_ENTRY} WHERE module = $1 AND version = $2 AND artifact = $3"),
                &[&module, &version, &artifact.as_str()],
            )?;
            let recorded = row.map(|r| entry_of(&r, &key)).transpose()?;
            let out = work(&mut tx, recorded, &key)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// What went wrong inside a transaction: the database, or the ledger's own rules.
enum Failure {
    Db(postgres::Error),
    Ledger(LedgerError),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Self {
        Failure::Ledger(e)
    }
}

fn corrupt(key: &str, detail: String) -> Failure {
    Failure::Ledger(LedgerError::CorruptRow {
        key: key.to_owned(),
        detail,
    })
}

fn size_of(size: i64, key: &str) -> Result<u64, Failure> {
    u64::try_from(size).map_err(|_| corrupt(key, format!("negative size {size}")))
}

fn artifact_of(name: &str, key: &str) -> Result<Artifact, Failure> {
    Artifact::from_str(name).map_err(|_| corrupt(key, format!("unknown artifact {name:?}")))
}

fn entry_of(row: &postgres::Row, key: &str) -> Result<Entry, Failure> {
    let artifact: String = row.try_get(2)?;
    Ok(Entry {
        module: row.try_get(0)?,
        version: row.try_get(1)?,
        artifact: artifact_of(&artifact, key)?,
        sha256: row.try_get(3)?,
        h1: row.try_get(4)?,
        size: size_of(row.try_get(5)?, key)?,
        first_seen_unix: row.try_get(6)?,
        source: row.try_get(7)?,
        accepted_by: row.try_get(8)?,
    })
}

impl LedgerStore for PgLedger {
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
        let obs = Observation::new(module, version, artifact, sha256, h1, size)?;
        self.on_record("observe", (module, version, artifact), |tx, recorded, _| {
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
                        "INSERT INTO ledger_entries (module, version, artifact, sha256, h1, size,
                                                     first_seen_unix, source, accepted_by)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)",
                        &[
                            &entry.module,
                            &entry.version,
                            &artifact.as_str(),
                            &entry.sha256,
                            &entry.h1,
                            &obs.size,
                            &entry.first_seen_unix,
                            &entry.source,
                        ],
                    )?;
                    Check::FirstSeen(entry)
                }
                Some(recorded) => match compare(&recorded, &obs) {
                    Compared::Match { fill_h1 } => {
                        let mut entry = recorded;
                        if fill_h1.is_some() {
                            tx.execute(
                                "UPDATE ledger_entries SET h1 = $4
                                 WHERE module = $1 AND version = $2 AND artifact = $3",
                                &[&module, &version, &artifact.as_str(), &fill_h1],
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
                },
            })
        })
    }

    fn get(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
    ) -> Result<Option<Entry>, LedgerError> {
        let key = key_of(module, version, Some(artifact));
        self.with_client("get", &key, |client| {
            let row = client.query_opt(
                &format!("{SELECT_ENTRY} WHERE module = $1 AND version = $2 AND artifact = $3"),
                &[&module, &version, &artifact.as_str()],
            )?;
            row.map(|r| entry_of(&r, &key)).transpose()
        })
    }

    fn list(&self, module_prefix: Option<&str>) -> Result<Vec<Entry>, LedgerError> {
        let prefix = module_prefix.unwrap_or("");
        let key = list_key(prefix);
        self.with_client("list", &key, |client| {
            let rows = match prefix_range(prefix) {
                None => client.query(
                    &format!("{SELECT_ENTRY} ORDER BY module, version, artifact"),
                    &[],
                )?,
                Some((exact, low, high)) => client.query(
                    &format!(
                        "{SELECT_ENTRY} WHERE module = $1 OR (module >= $2 AND module < $3)
                         ORDER BY module, version, artifact"
                    ),
                    &[&exact, &low, &high],
                )?,
            };
            rows.iter().map(|r| entry_of(r, &key)).collect()
        })
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
        let obs = Observation::new(module, version, artifact, sha256, h1, size)?;
        check_text("operator", operator)?;
        check_text("reason", reason)?;
        self.on_record("accept", (module, version, artifact), |tx, old, _| {
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
            let old_size = old
                .as_ref()
                .map(|o| i64::try_from(o.size).unwrap_or(i64::MAX));
            tx.execute(
                "INSERT INTO ledger_history (module, version, artifact,
                 old_sha256, old_h1, old_size, old_first_seen_unix, old_source, old_accepted_by,
                 new_sha256, new_h1, new_size, operator, reason, accepted_unix)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                &[
                    &module,
                    &version,
                    &artifact.as_str(),
                    &old.as_ref().map(|o| &o.sha256),
                    &old.as_ref().and_then(|o| o.h1.as_ref()),
                    &old_size,
                    &old.as_ref().map(|o| o.first_seen_unix),
                    &old.as_ref().map(|o| &o.source),
                    &old.as_ref().and_then(|o| o.accepted_by.as_ref()),
                    &entry.sha256,
                    &entry.h1,
                    &obs.size,
                    &operator,
                    &reason,
                    &now,
                ],
            )?;
            tx.execute(
                "INSERT INTO ledger_entries (module, version, artifact, sha256, h1, size,
                                             first_seen_unix, source, accepted_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (module, version, artifact) DO UPDATE SET
                     sha256 = excluded.sha256, h1 = excluded.h1, size = excluded.size,
                     first_seen_unix = excluded.first_seen_unix, source = excluded.source,
                     accepted_by = excluded.accepted_by",
                &[
                    &entry.module,
                    &entry.version,
                    &artifact.as_str(),
                    &entry.sha256,
                    &entry.h1,
                    &obs.size,
                    &entry.first_seen_unix,
                    &entry.source,
                    &entry.accepted_by,
                ],
            )?;
            publish(
                tx,
                EventKind::Accept,
                module,
                Some(version),
                Some(artifact.as_str()),
                &self.origin,
            )?;
            Ok(entry)
        })
    }

    fn history(&self, module: &str, version: &str) -> Result<Vec<HistoryEntry>, LedgerError> {
        let key = key_of(module, version, None);
        self.with_client("history", &key, |client| {
            let rows = client.query(
                "SELECT artifact, old_sha256, old_h1, old_size, old_first_seen_unix, old_source,
                        old_accepted_by, new_sha256, new_h1, new_size, operator, reason,
                        accepted_unix
                 FROM ledger_history WHERE module = $1 AND version = $2 ORDER BY id",
                &[&module, &version],
            )?;
            rows.iter()
                .map(|r| history_of(r, module, version, &key))
                .collect()
        })
    }

    fn count(&self) -> Result<u64, LedgerError> {
        self.with_client("count", "all entries", |client| {
            let n: i64 = client
                .query_one("SELECT COUNT(*) FROM ledger_entries", &[])?
                .try_get(0)?;
            size_of(n, "entries")
        })
    }

    fn describe(&self) -> String {
        format!("{} (ledger)", self.pool.name())
    }
}

fn history_of(
    row: &postgres::Row,
    module: &str,
    version: &str,
    key: &str,
) -> Result<HistoryEntry, Failure> {
    let artifact = artifact_of(&row.try_get::<_, String>(0)?, key)?;
    let old_sha256: Option<String> = row.try_get(1)?;
    let replaced = match old_sha256 {
        None => None,
        Some(sha256) => {
            let size: Option<i64> = row.try_get(3)?;
            let first_seen: Option<i64> = row.try_get(4)?;
            let source: Option<String> = row.try_get(5)?;
            Some(Entry {
                module: module.to_owned(),
                version: version.to_owned(),
                artifact,
                sha256,
                h1: row.try_get(2)?,
                size: size_of(size.unwrap_or(-1), key)?,
                first_seen_unix: first_seen
                    .ok_or_else(|| corrupt(key, "replaced record without a time".to_owned()))?,
                source: source
                    .ok_or_else(|| corrupt(key, "replaced record without a source".to_owned()))?,
                accepted_by: row.try_get(6)?,
            })
        }
    };
    Ok(HistoryEntry {
        module: module.to_owned(),
        version: version.to_owned(),
        artifact,
        replaced,
        sha256: row.try_get(7)?,
        h1: row.try_get(8)?,
        size: size_of(row.try_get(9)?, key)?,
        operator: row.try_get(10)?,
        reason: row.try_get(11)?,
        accepted_unix: row.try_get(12)?,
    })
}
