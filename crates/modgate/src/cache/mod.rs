//! The response cache and the integrity ledger at run time: which requests are cached and for
//! how long, the cache key (which always includes the route, so a private and a public module
//! can never share an entry), and the first-seen hash check of exact-version artifacts.
//!
//! | request | kept |
//! |---|---|
//! | exact-version `.info` / `.mod` / `.zip`, sumdb full tiles | forever (immutable) |
//! | `list`, `@latest`, version-query `.info`, sumdb partial tiles and lookups | `ttl.mutable` (route may override), then served stale for `ttl.stale_if_error` when the upstream fails |
//! | sumdb `latest` | `ttl.sumdb_latest` |
//! | 404 / 410 | `ttl.not_found` |
//!
//! One concern per file: `plan` (lifetimes, keys, what is kept), `share` (what may be shared
//! between requesters), `integrity` (the first-seen hash check of exact versions),
//! `quarantine` (refused changed bytes), `purge` (removing a module's answers), `cluster` (the
//! cluster's accepts and purges applied here); this file opens the cache and the ledger (the
//! SQLite file, or the cluster's PostgreSQL database).

mod cluster;
mod integrity;
mod plan;
mod purge;
mod quarantine;
mod share;

use std::sync::Arc;
use std::time::Duration;

use modgate_cache::DiskCache;
use modgate_ledger::{Ledger, LedgerStore};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};

pub use cluster::{follow, purge_objects, state_file, SharedTier};
pub use integrity::{artifact, mismatch_message, IntegrityCheck, IntegrityFailure, Reservation};
pub use plan::{CachePlan, RouteCache, Ttls};
pub use purge::{cached_request, purge_module, target};
pub use quarantine::{Quarantine, Quarantined};
pub use share::unshareable;

/// The cache and ledger of a running gateway.
pub struct CacheRuntime {
    pub storage: &'static DiskCache,
    pub lock: &'static CacheKeyLockImpl,
    pub ledger: Arc<dyn LedgerStore>,
    /// Artifacts whose upstream bytes were refused: served from cache if held, else 502.
    pub quarantine: Quarantine,
    /// The writer of the index of what each identity fetched (`fetched:`; it takes its
    /// hashes from this ledger).
    pub fetched: Option<Arc<modgate_fetched::Writer>>,
    /// When versions were first seen (`versions.cooldown`), beside the ledger.
    pub sightings: Option<Arc<modgate_ledger::Sightings>>,
    /// The module-index tailer's progress (`versions.cooldown.index`), when it runs.
    pub feed: Option<crate::cooldown::feed::FeedHandle>,
    /// The company's checksum database (`checksum_log:`), beside the ledger whose first-seen
    /// hashes it logs.
    pub checksum_log: Option<Arc<crate::sumlog::SumLog>>,
    /// The cluster's events channel (`cluster:`): where this replica publishes its purges.
    pub cluster: Option<ClusterLink>,
    /// The cluster's shared object tier (`cluster.objects`).
    pub shared: Option<SharedTier>,
}

/// This replica in its cluster: the pool its events go through and its name in them.
pub struct ClusterLink {
    pub pool: Arc<modgate_postgres::Pool>,
    pub origin: String,
}

/// Where the integrity ledger is kept.
#[derive(Debug, Clone)]
pub enum LedgerAt {
    /// The embedded SQLite file (the single-machine default).
    Sqlite(std::path::PathBuf),
    /// The cluster's PostgreSQL database (`cluster.postgres`), shared by every replica.
    Postgres {
        settings: modgate_postgres::PgSettings,
        /// This replica's (or this command's) name in the events it publishes.
        origin: String,
    },
}

impl LedgerAt {
    /// Opens the ledger (blocking; PostgreSQL's schema is migrated first).
    pub fn open(&self) -> anyhow::Result<Arc<dyn LedgerStore>> {
        Ok(match self {
            LedgerAt::Sqlite(path) => Arc::new(
                Ledger::open(path)
                    .map_err(|e| anyhow::anyhow!("ledger {}: {e}", path.display()))?,
            ),
            LedgerAt::Postgres { settings, origin } => {
                let pool = modgate_postgres::Pool::new(settings)?;
                Arc::new(modgate_postgres::PgLedger::open(pool, origin)?)
            }
        })
    }

    /// The cluster's events channel and this side's name in it, when the ledger is shared.
    pub fn link(&self) -> anyhow::Result<Option<ClusterLink>> {
        match self {
            LedgerAt::Sqlite(_) => Ok(None),
            LedgerAt::Postgres { settings, origin } => {
                let mut s = settings.clone();
                s.pool_size = 2;
                Ok(Some(ClusterLink {
                    pool: modgate_postgres::Pool::new(&s)?,
                    origin: origin.clone(),
                }))
            }
        }
    }
}

impl CacheRuntime {
    /// Opens the disk cache (blocking: scans the directory) and the ledger.
    pub fn open(
        disk: modgate_cache::DiskCacheConfig,
        lock_timeout: Duration,
        ledger_at: &LedgerAt,
    ) -> anyhow::Result<CacheRuntime> {
        let dir = disk.root.clone();
        let storage =
            DiskCache::open(disk).map_err(|e| anyhow::anyhow!("cache {}: {e}", dir.display()))?;
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(lock_timeout));
        let ledger = ledger_at.open()?;
        Ok(CacheRuntime {
            storage,
            lock,
            ledger,
            quarantine: Quarantine::default(),
            fetched: None,
            sightings: None,
            checksum_log: None,
            feed: None,
            cluster: None,
            shared: None,
        })
    }
}
