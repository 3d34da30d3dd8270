//! What each identity fetched, at run time: starts the index writer of `fetched:` (with the
//! integrity ledger as its source of hashes and the metrics as its observer), decides which
//! finished requests are a fetch ([`fetch_of`], pure), and answers a query of the index for
//! the command and the admin endpoint ([`answer`]).
//!
//! The index is the SQLite file of `fetched.path`, or, when `cluster:` is set, the cluster's
//! PostgreSQL database ([`FetchedAt`]): every replica writes there, and the command and the
//! endpoint of any replica list what all of them served. While that database is away, the
//! writer drops its batches and counts them (`modgate_fetched_records_total{outcome="failed"}`),
//! and a query is refused naming the store.
//!
//! A fetch is an exact `.zip` or `.mod` GET answered 200 whose whole body went out: no error
//! at the end, no cut transfer, no integrity refusal, not a background refresh, and as many
//! body bytes sent as the answer's `Content-Length` said. A transfer cut half-way is not
//! "fetched" (the client has no module), and a HEAD sends no body.

use std::path::PathBuf;
use std::sync::Arc;

use modgate_fetched::{
    FetchIndex, FetchStore, FetchedError, Format, Hashes, IdentityFilter, Kind, Query, Served,
    Tool, Writer,
};
use modgate_ledger::{Artifact, LedgerStore};

use crate::config::GatewayConfig;
use crate::metrics::Metrics;

/// Records held in memory for the writer before new ones are dropped (and counted).
const QUEUE: usize = 16_384;

/// Connections of a replica's pool to the shared fetched index: the writer's and the admin
/// endpoint's queries.
const WRITER_POOL: usize = 3;

/// Where the fetched index is kept.
#[derive(Debug, Clone)]
pub enum FetchedAt {
    /// The embedded SQLite file (the single-machine default).
    Sqlite(PathBuf),
    /// The cluster's PostgreSQL database (`cluster.postgres`), shared by every replica.
    Postgres(modgate_postgres::PgSettings),
}

impl FetchedAt {
    /// Where `config`'s fetched index is, when `fetched:` (and so `cache:`) is configured: the
    /// cluster's PostgreSQL database when `cluster:` is set (shared by every replica), else the
    /// SQLite file of [`GatewayConfig::fetched_path`].
    pub fn of(config: &GatewayConfig) -> anyhow::Result<Option<FetchedAt>> {
        let Some(path) = config.fetched_path() else {
            return Ok(None);
        };
        Ok(Some(match &config.cluster {
            Some(cluster) => {
                FetchedAt::Postgres(cluster.settings().map_err(|e| anyhow::anyhow!(e))?)
            }
            None => FetchedAt::Sqlite(path),
        }))
    }

    /// Opens the index for writing (blocking; creates the SQLite file, or migrates
    /// PostgreSQL's schema), with a pool of `pool_size` connections for PostgreSQL.
    fn open(&self, pool_size: usize) -> Result<Arc<dyn FetchStore>, FetchedError> {
        Ok(match self {
            FetchedAt::Sqlite(path) => Arc::new(FetchIndex::open(path)?),
            FetchedAt::Postgres(settings) => {
                let mut s = settings.clone();
                s.pool_size = pool_size;
                let pool = modgate_postgres::Pool::new(&s).map_err(|e| FetchedError::Store {
                    store: "PostgreSQL".into(),
                    what: "settings",
                    detail: e.to_string(),
                })?;
                Arc::new(modgate_postgres::PgFetchIndex::open(pool)?)
            }
        })
    }

    /// What a query reads (blocking): the SQLite file (opened per query, never created), or
    /// the shared database (connected now; its schema checked, never migrated: a command must
    /// not change the database under the replicas).
    pub fn for_queries(&self) -> Result<Source, FetchedError> {
        Ok(match self {
            FetchedAt::Sqlite(path) => Source::File(path.clone()),
            FetchedAt::Postgres(settings) => {
                let mut s = settings.clone();
                s.pool_size = 1;
                let pool = modgate_postgres::Pool::new(&s).map_err(|e| FetchedError::Store {
                    store: "PostgreSQL".into(),
                    what: "settings",
                    detail: e.to_string(),
                })?;
                Source::Store(Arc::new(modgate_postgres::PgFetchIndex::open_existing(
                    pool,
                )?))
            }
        })
    }
}

/// What [`answer`] queries.
pub enum Source {
    /// The SQLite file, opened for the query (missing: [`FetchedError::Missing`]).
    File(PathBuf),
    /// An open store (the shared database).
    Store(Arc<dyn FetchStore>),
}

/// Starts the writer of the configured index; `None` when `fetched:` is off. Its records are
/// counted on `metrics` (`modgate_fetched_records_total`).
pub fn start(
    config: &GatewayConfig,
    ledger: Arc<dyn LedgerStore>,
    metrics: Option<&'static Metrics>,
) -> anyhow::Result<Option<Arc<Writer>>> {
    let (Some(f), Some(at)) = (&config.fetched, FetchedAt::of(config)?) else {
        return Ok(None);
    };
    let store = at
        .open(WRITER_POOL)
        .map_err(|e| anyhow::anyhow!("fetched: {e}"))?;
    let described = store.describe();
    let lookup = Box::new(move |module: &str, version: &str, kind: Kind| {
        let artifact = match kind {
            Kind::Zip => Artifact::Zip,
            Kind::Mod => Artifact::Mod,
        };
        match ledger.get(module, version, artifact) {
            Ok(e) => e.map(|e| Hashes {
                sha256: e.sha256,
                h1: e.h1,
            }),
            Err(e) => {
                log::warn!("fetched: no ledger hashes for {module}@{version} (.{artifact}): {e}");
                None
            }
        }
    });
    let writer = Writer::start(
        store,
        f.limits(),
        QUEUE,
        lookup,
        match metrics {
            Some(m) => Arc::new(move |outcome, n| m.fetched_records(outcome, n)),
            None => Arc::new(|_, _| ()),
        },
    )
    .map_err(|e| anyhow::anyhow!("fetched: cannot start the index writer: {e}"))?;
    log::info!(
        "fetched: recording served .zip/.mod per identity in {described} (retention {}d, at \
         most {} records)",
        f.retention.0.as_secs() / 86_400,
        f.max_records.0
    );
    Ok(Some(Arc::new(writer)))
}

/// What a finished request was, for [`fetch_of`].
pub struct Finished<'a> {
    pub method: &'a http::Method,
    pub status: u16,
    /// The request ended with an error (after its header, it is a cut transfer).
    pub failed: bool,
    /// The transfer was cut, or its bytes refused by the integrity guard.
    pub cut_or_refused: bool,
    /// A background refresh (no client).
    pub subrequest: bool,
    /// The answer's `Content-Length`, if it had one.
    pub content_length: Option<u64>,
    pub body_bytes_sent: u64,
    /// The ledger entry the request answered to (artifact, version): exact versions only.
    pub ledger_key: Option<(Artifact, &'a str)>,
    pub module: &'a str,
    pub identity: &'a str,
    pub source: &'a str,
}

/// The fetch a finished request is, if it is one (pure).
pub fn fetch_of(f: &Finished, at_ms: i64) -> Option<Served> {
    let (artifact, version) = f.ledger_key?;
    let kind = match artifact {
        Artifact::Zip => Kind::Zip,
        Artifact::Mod => Kind::Mod,
        Artifact::Info => return None,
    };
    let whole = f.content_length.is_none_or(|n| n == f.body_bytes_sent);
    let complete = f.method == http::Method::GET
        && f.status == 200
        && !f.failed
        && !f.cut_or_refused
        && !f.subrequest
        && whole;
    if !complete || f.module.is_empty() || version.is_empty() {
        return None;
    }
    Some(Served {
        at_ms,
        identity: f.identity.to_string(),
        source: f.source.to_string(),
        module: f.module.to_string(),
        version: version.to_string(),
        kind,
    })
}

/// A query as the command line and the admin endpoint take it (times as text).
pub struct Ask<'a> {
    pub identity: &'a str,
    pub since: &'a str,
    pub until: Option<&'a str>,
    pub format: &'a str,
}

/// Why a query was not answered: bad input (400, exit 2 with the message) or the index failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{0}")]
    Bad(String),
    #[error("{0}")]
    Index(FetchedError),
}

/// Parses `ask` into a query and a format.
pub fn parse_ask(ask: &Ask, now_ms: i64) -> Result<(Query, Format), AskError> {
    let identity = IdentityFilter::parse(ask.identity).map_err(|e| AskError::Bad(e.to_string()))?;
    let since = modgate_fetched::time::parse_time(ask.since, now_ms)
        .map_err(|e| AskError::Bad(format!("since: {e}")))?;
    let until = match ask.until {
        Some(u) => modgate_fetched::time::parse_time(u, now_ms)
            .map_err(|e| AskError::Bad(format!("until: {e}")))?,
        // Everything up to now, and the moment just after.
        None => now_ms.saturating_add(1),
    };
    if until <= since {
        return Err(AskError::Bad(
            "the time range is empty: until must be after since".into(),
        ));
    }
    let format = Format::parse(ask.format).map_err(AskError::Bad)?;
    Ok((
        Query {
            identity,
            since_ms: since,
            until_ms: until,
        },
        format,
    ))
}

/// Answers `ask` from `source` (blocking): the rendering and its media type.
pub fn answer(source: &Source, ask: &Ask) -> Result<(String, &'static str), AskError> {
    let now = modgate_fetched::index::now_ms();
    let (query, format) = parse_ask(ask, now)?;
    let versions = match source {
        Source::File(path) => FetchIndex::open_existing(path)
            .and_then(|index| index.query(&query))
            .map_err(AskError::Index)?,
        Source::Store(store) => store.query(&query).map_err(AskError::Index)?,
    };
    let body = modgate_fetched::render::render(
        format,
        &query,
        &versions,
        Tool {
            name: "modgate",
            version: env!("CARGO_PKG_VERSION"),
        },
        now,
        modgate_fetched::random_serial(),
    );
    Ok((body, format.content_type()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished<'a>(method: &'a http::Method, artifact: Artifact) -> Finished<'a> {
        Finished {
            method,
            status: 200,
            failed: false,
            cut_or_refused: false,
            subrequest: false,
            content_length: Some(100),
            body_bytes_sent: 100,
            ledger_key: Some((artifact, "v1.0.0")),
            module: "example.com/m",
            identity: "ci",
            source: "certificate",
        }
    }

    #[test]
    fn only_a_whole_exact_zip_or_mod_is_a_fetch() {
        let get = http::Method::GET;
        let s = fetch_of(&finished(&get, Artifact::Zip), 5).expect("a whole zip");
        assert_eq!(
            (s.kind, s.module.as_str(), s.version.as_str(), s.at_ms),
            (Kind::Zip, "example.com/m", "v1.0.0", 5)
        );
        assert_eq!(
            fetch_of(&finished(&get, Artifact::Mod), 5).map(|s| s.kind),
            Some(Kind::Mod)
        );
        assert!(fetch_of(&finished(&get, Artifact::Info), 5).is_none());
        let head = http::Method::HEAD;
        assert!(fetch_of(&finished(&head, Artifact::Zip), 5).is_none());
        let cases: [fn(&mut Finished); 7] = [
            |f| f.status = 304,
            |f| f.failed = true,
            |f| f.cut_or_refused = true,
            |f| f.subrequest = true,
            |f| f.body_bytes_sent = 99,
            |f| f.ledger_key = None,
            |f| f.status = 206,
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut f = finished(&get, Artifact::Zip);
            change(&mut f);
            assert!(fetch_of(&f, 5).is_none(), "case {i}");
        }
        // Chunked (no Content-Length) and complete: a fetch.
        let mut f = finished(&get, Artifact::Zip);
        f.content_length = None;
        f.body_bytes_sent = 7;
        assert!(fetch_of(&f, 5).is_some());
    }

    #[test]
    fn a_query_needs_a_valid_identity_range_and_format() {
        let ask = |identity, since, until, format| Ask {
            identity,
            since,
            until,
            format,
        };
        let now = 10 * 86_400_000;
        let (q, f) = parse_ask(&ask("ci", "7d", None, "cyclonedx"), now).expect("ok");
        assert_eq!((q.since_ms, q.until_ms), (3 * 86_400_000, now + 1));
        assert_eq!(f, Format::CycloneDx);
        for bad in [
            ask("", "7d", None, "text"),
            ask("ci", "yesterday", None, "text"),
            ask("ci", "1d", Some("2d"), "text"),
            ask("ci", "1d", None, "xml"),
        ] {
            assert!(matches!(parse_ask(&bad, now), Err(AskError::Bad(_))));
        }
    }
}
