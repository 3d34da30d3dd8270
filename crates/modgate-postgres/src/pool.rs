//! Connection settings and a bounded pool of blocking PostgreSQL clients.
//!
//! A client found closed (the server restarted, the network dropped it) is discarded when it is
//! taken or returned, and a caller that saw an error on a client marks it broken, so the next
//! caller connects anew: the pool recovers by itself once the server is back. Connecting is
//! bounded by `connect_timeout` and every statement by `statement_timeout`, so an unreachable or
//! hung server is an error within a known time, never a request held forever.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::config::{Host, SslMode};
use postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{detail, PgError};

/// How to reach the database.
#[derive(Clone)]
pub struct PgSettings {
    /// A libpq connection string (`host=… port=… user=… dbname=… sslmode=require`) or URL
    /// (`postgresql://user@host:5432/db`). A password may be in it or in `password`.
    pub dsn: String,
    /// The password, when it is kept apart from the DSN (read from a file by the caller).
    pub password: Option<String>,
    /// Most connections open at once.
    pub pool_size: usize,
    /// Longest wait for a connection to be established.
    pub connect_timeout: Duration,
    /// Longest a statement may run (PostgreSQL's `statement_timeout`).
    pub statement_timeout: Duration,
    /// The CA bundle (PEM) the server's certificate is verified against when the DSN asks for
    /// TLS (`sslmode=require` or `prefer`); without it, TLS is not offered.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the DSN: it may hold a password.
        f.debug_struct("PgSettings")
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl PgSettings {
    /// Settings with the defaults: 16 connections, 5 s to connect, 30 s per statement, no TLS.
    pub fn new(dsn: impl Into<String>) -> PgSettings {
        PgSettings {
            dsn: dsn.into(),
            password: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            ca_file: None,
        }
    }
}

/// Longest a pooled connection's liveness check may take.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(2);

enum Tls {
    Off,
    Rustls(MakeRustlsConnect),
}

/// A bounded pool of clients of one database. `Send + Sync`; share it in an `Arc`.
pub struct Pool {
    config: Config,
    tls: Tls,
    name: String,
    size: usize,
    statement_timeout: Duration,
    acquire_timeout: Duration,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    idle: Vec<Client>,
    open: usize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("store", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Checks the settings (the DSN parses, the CA bundle reads) without connecting.
    pub fn new(settings: &PgSettings) -> Result<Arc<Pool>, PgError> {
        let mut config = Config::from_str(&settings.dsn)
            .map_err(|e| PgError::Settings(format!("the DSN does not parse: {}", detail(&e))))?;
        if let Some(p) = &settings.password {
            config.password(p);
        }
        if config.get_user().is_none() {
            return Err(PgError::Settings("the DSN names no user".to_owned()));
        }
        config
            .connect_timeout(settings.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("modgate");
        let tls = match &settings.ca_file {
            Some(path) => Tls::Rustls(MakeRustlsConnect::new(client_tls(path)?)),
            None if config.get_ssl_mode() == SslMode::Require => {
                return Err(PgError::Settings(
                    "the DSN requires TLS (sslmode=require) but no CA bundle is configured \
                     to verify the server with"
                        .to_owned(),
                ))
            }
            None => Tls::Off,
        };
        let name = store_name(&config);
        let size = settings.pool_size.max(1);
        Ok(Arc::new(Pool {
            config,
            tls,
            name,
            size,
            statement_timeout: settings.statement_timeout,
            acquire_timeout: settings.connect_timeout + settings.statement_timeout,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }))
    }

    /// `PostgreSQL host:port/dbname`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A database error of `step` on this store.
    pub fn error(&self, step: &'static str, e: &postgres::Error) -> PgError {
        PgError::Db {
            store: self.name.clone(),
            step,
            detail: detail(e),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new client outside the pool (for `LISTEN`, which holds its connection).
    pub fn connect(&self) -> Result<Client, PgError> {
        let mut client = match &self.tls {
            Tls::Off => self.config.connect(NoTls),
            Tls::Rustls(tls) => self.config.connect(tls.clone()),
        }
        .map_err(|e| self.error("connecting", &e))?;
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}",
                self.statement_timeout.as_millis()
            ))
            .map_err(|e| self.error("setting statement_timeout", &e))?;
        Ok(client)
    }

    /// A client of the pool: an idle one, else a new connection while fewer than the pool's
    /// size are open, else the first one returned (waiting at most the connect and statement
    /// timeouts).
    pub fn get(self: &Arc<Self>) -> Result<Conn, PgError> {
        let started = Instant::now();
        let mut state = self.lock();
        loop {
            while let Some(mut client) = state.idle.pop() {
                // A pooled connection may have died with a server restart: an empty query
                // tells (one round trip: ledger operations are per miss, never per hit; the
                // checksum database's reads are one statement each, its full tiles cached).
                // Checked without holding the pool's lock.
                drop(state);
                let alive = !client.is_closed() && client.is_valid(VALIDATE_TIMEOUT).is_ok();
                if !alive {
                    drop(client);
                    state = self.lock();
                    state.open -= 1;
                    continue;
                }
                return Ok(Conn {
                    pool: Arc::clone(self),
                    client: Some(client),
                    broken: false,
                });
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(client) => Ok(Conn {
                        pool: Arc::clone(self),
                        client: Some(client),
                        broken: false,
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let waited = started.elapsed();
            let Some(left) = self.acquire_timeout.checked_sub(waited) else {
                return Err(PgError::PoolTimeout {
                    store: self.name.clone(),
                    size: self.size,
                    waited_ms: waited.as_millis(),
                });
            };
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Closes every idle connection (the open ones close when returned).
    pub fn close_idle(&self) {
        let mut state = self.lock();
        let n = state.idle.len();
        state.idle.clear();
        state.open -= n;
    }
}

/// A client taken from the pool, returned when dropped (unless broken or closed).
pub struct Conn {
    pool: Arc<Pool>,
    client: Option<Client>,
    broken: bool,
}

impl Conn {
    /// Marks the client as not to be reused: an error on it may have left the session in an
    /// unknown state.
    pub fn broken(&mut self) {
        self.broken = true;
    }
}

impl Deref for Conn {
    type Target = Client;

    fn deref(&self) -> &Client {
        // Only `Drop` takes the client out.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut state = self.pool.lock();
        if self.broken || client.is_closed() {
            state.open -= 1;
            drop(state);
            drop(client);
        } else {
            state.idle.push(client);
        }
        self.pool.freed.notify_one();
    }
}

/// `PostgreSQL host:port/dbname` (the first host of the DSN).
fn store_name(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("PostgreSQL {host}:{port}/{db}")
}

/// A rustls client configuration trusting only the CA bundle at `path`.
fn client_tls(path: &std::path::Path) -> Result<rustls::ClientConfig, PgError> {
    let pem = std::fs::read(path).map_err(|e| {
        PgError::Settings(format!("cannot read the CA bundle {}: {e}", path.display()))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| {
            PgError::Settings(format!(
                "the CA bundle {} does not parse: {e}",
                path.display()
            ))
        })?;
        roots.add(cert).map_err(|e| {
            PgError::Settings(format!(
                "the CA bundle {} holds an unusable certificate: {e}",
                path.display()
            ))
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(PgError::Settings(format!(
            "the CA bundle {} holds no certificate",
            path.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| PgError::Settings(format!("TLS settings: {e}")))
}
