//! What the PostgreSQL store tests share: a throwaway PostgreSQL 15 server (`None` outside CI
//! when it is not installed; a failure under `CI=true`), a small pool on one of its databases,
//! and [`Databases`], a new database of one server per conformance case.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use modgate_postgres::{PgSettings, Pool};
use modgate_testkit::postgres::{require_postgres, PgServer};

/// A new server on a loopback port, if PostgreSQL is installed.
pub fn server() -> Option<PgServer> {
    require_postgres()?;
    Some(PgServer::start().expect("start PostgreSQL"))
}

/// A pool of 4 connections on `dsn` (5 s to connect, 20 s per statement).
pub fn pool_on(dsn: String) -> Arc<Pool> {
    let mut s = PgSettings::new(dsn);
    s.pool_size = 4;
    s.connect_timeout = Duration::from_secs(5);
    s.statement_timeout = Duration::from_secs(20);
    Pool::new(&s).expect("pool")
}

/// A new, empty database of one server for each case of a conformance suite.
pub struct Databases {
    server: PgServer,
    n: AtomicUsize,
}

impl Databases {
    /// Cases on `server`.
    pub fn on(server: PgServer) -> Databases {
        Databases {
            server,
            n: AtomicUsize::new(0),
        }
    }

    /// A new database named `<prefix><n>`: its DSN.
    pub fn fresh(&self, prefix: &str) -> String {
        let db = format!("{prefix}{}", self.n.fetch_add(1, Ordering::Relaxed));
        self.server.create_db(&db).expect("create database");
        self.server.dsn(&db)
    }
}
