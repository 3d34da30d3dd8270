//! The company's checksum database as the process holds it (`checksum_log:`): the log opened
//! with its signer key — the SQLite file, or the cluster's PostgreSQL database when `cluster:`
//! is configured, so every replica serves and appends to one log ([`LogAt`]) — the batching
//! appender, and the single flight that makes
//! concurrent lookups of one unlogged version fetch and check it once. Opened at start beside
//! the integrity ledger (its records are the ledger's first-seen hashes); the request side is
//! `proxy/checksum_log.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use modgate_sumdb::LogStore;

/// Where the checksum database is kept.
#[derive(Debug, Clone)]
pub enum LogAt {
    /// The embedded SQLite file (the single-machine default).
    File(PathBuf),
    /// The cluster's PostgreSQL database (`cluster.postgres`), shared by every replica.
    Postgres(modgate_postgres::PgSettings),
}

impl LogAt {
    /// Opens the log signed by `signer` (blocking; PostgreSQL's schema is migrated first).
    pub fn open(&self, signer: modgate_sumdb::Signer) -> anyhow::Result<Arc<dyn LogStore>> {
        Ok(match self {
            LogAt::File(path) => Arc::new(
                modgate_sumdb::Log::open(path, signer).map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            LogAt::Postgres(settings) => {
                let pool = modgate_postgres::Pool::new(settings)?;
                Arc::new(
                    modgate_postgres::PgLog::open(
                        pool,
                        signer,
                        modgate_sumdb::DEFAULT_TILE_CACHE_BYTES,
                    )
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                )
            }
        })
    }

    /// Opens the log for a command (blocking): the file as [`LogAt::open`] does; the shared
    /// database with its schema checked, never migrated, and the log never created (a command
    /// must not change the cluster's database under its replicas).
    pub fn open_existing(
        &self,
        signer: modgate_sumdb::Signer,
    ) -> anyhow::Result<Arc<dyn LogStore>> {
        match self {
            LogAt::File(_) => self.open(signer),
            LogAt::Postgres(settings) => {
                let mut s = settings.clone();
                s.pool_size = 2;
                let pool = modgate_postgres::Pool::new(&s)?;
                Ok(Arc::new(
                    modgate_postgres::PgLog::open_existing(pool, signer, 0)
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                ))
            }
        }
    }
}

/// How the last attempt of a flight failed: when it ended, whether the version was missing
/// (`true`: a 404) or could not be learnt (a 502), and the reason.
pub type Failure = Option<(std::time::Instant, bool, String)>;

/// One lock per module version (path, version) being fetched, checked and appended, holding
/// how its last attempt failed.
type Flights = HashMap<(String, String), Arc<tokio::sync::Mutex<Failure>>>;

/// The log, its appender, and the lookups in flight.
pub struct SumLog {
    pub log: Arc<dyn LogStore>,
    pub appender: modgate_sumdb::Appender,
    flights: Mutex<Flights>,
    /// Bounds the versions fetched at once to be logged (each read whole into memory to hash
    /// it, up to Go's 500 MiB zip limit): readers cannot make the gateway hold many at once.
    pub fetches: tokio::sync::Semaphore,
}

/// How many versions are fetched at once to be logged.
const FETCHES: usize = 4;

impl SumLog {
    /// Opens (or creates) the log `name` where `at` says, with the signer key in `key_file`.
    pub fn open(name: &str, key_file: &Path, at: &LogAt) -> anyhow::Result<SumLog> {
        let signer = modgate_sumdb::keys::read_signer_key(key_file)
            .map_err(|e| anyhow::anyhow!("checksum_log.key_file: {e}"))?;
        anyhow::ensure!(
            signer.name() == name,
            "checksum_log.key_file: {} holds the key of {:?}, not of checksum_log.name {name:?}",
            key_file.display(),
            signer.name(),
        );
        let log = at.open(signer)?;
        let appender =
            modgate_sumdb::Appender::new(log.clone(), modgate_sumdb::AppenderConfig::default())
                .map_err(|e| anyhow::anyhow!("checksum_log: {e}"))?;
        Ok(SumLog {
            log,
            appender,
            flights: Mutex::new(HashMap::new()),
            fetches: tokio::sync::Semaphore::new(FETCHES),
        })
    }

    /// The lock of `module@version`'s flight: whoever holds it fetches, checks and appends;
    /// the others wait for it and then find the version logged, or take the failure of an
    /// attempt that ended after they asked (one attempt per burst, never one per waiter).
    pub fn flight(&self, module: &str, version: &str) -> Arc<tokio::sync::Mutex<Failure>> {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Flights nobody holds or waits for any more are dropped as new ones start.
        flights.retain(|_, f| Arc::strong_count(f) > 1);
        flights
            .entry((module.to_owned(), version.to_owned()))
            .or_default()
            .clone()
    }
}
