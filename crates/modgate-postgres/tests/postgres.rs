//! The PostgreSQL stores against a real PostgreSQL 15 (a throwaway cluster on a loopback port,
//! from `modgate_testkit::postgres`): the ledger and fetched-index conformance suites (the ones
//! the SQLite stores pass), migrations under replicas starting at once, a newer schema refused, change events
//! delivered to another replica's listener (also across a server restart), and a pool that
//! fails fast while the server is down and recovers by itself.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use modgate_fetched::FetchStore;
use modgate_ledger::conformance::{run_all, Harness, Opener};
use modgate_ledger::hash::sha256_hex;
use modgate_ledger::{Artifact, Check, LedgerStore};
use modgate_postgres::{Delivery, EventKind, Listener, PgFetchIndex, PgLedger, PgSettings, Pool};
use modgate_testkit::postgres::PgServer;

mod common;
use common::{pool_on, server, Databases};

fn pool(server: &PgServer, db: &str) -> Arc<Pool> {
    pool_on(server.dsn(db))
}

impl Harness for Databases {
    fn store(&self, _case: &str) -> Arc<Opener> {
        let dsn = self.fresh("case");
        Arc::new(move || {
            Box::new(PgLedger::open(pool_on(dsn.clone()), "test").expect("open"))
                as Box<dyn LedgerStore>
        })
    }
}

#[test]
fn conformance_suite_on_postgres() {
    let Some(server) = server() else { return };
    run_all(&Databases::on(server));
}

impl modgate_fetched::conformance::Harness for Databases {
    fn store(&self, _case: &str) -> Arc<modgate_fetched::conformance::Opener> {
        let dsn = self.fresh("fetched");
        Arc::new(move || {
            Box::new(PgFetchIndex::open(pool_on(dsn.clone())).expect("open")) as Box<dyn FetchStore>
        })
    }
}

#[test]
fn fetched_conformance_suite_on_postgres() {
    let Some(server) = server() else { return };
    modgate_fetched::conformance::run_all(&Databases::on(server));
}

#[test]
fn the_fetched_index_names_the_store_when_the_server_is_away_and_recovers() {
    let Some(server) = server() else { return };
    server.create_db("f").expect("create database");
    let mut s = PgSettings::new(server.dsn("f"));
    s.pool_size = 2;
    s.connect_timeout = Duration::from_secs(2);
    let ix = PgFetchIndex::open(Pool::new(&s).expect("pool")).expect("open");
    let fetch = |at_ms| modgate_fetched::Fetch {
        at_ms,
        identity: "ci".into(),
        source: "token".into(),
        module: "example.com/m".into(),
        version: "v1.0.0".into(),
        kind: modgate_fetched::Kind::Zip,
        hashes: None,
    };
    ix.insert(&[fetch(1)]).expect("insert");
    server.stop().expect("stop PostgreSQL");
    let err = ix
        .insert(&[fetch(2)])
        .expect_err("the server is away")
        .to_string();
    assert!(
        err.contains(&format!("PostgreSQL 127.0.0.1:{}", server.port())),
        "{err}"
    );
    let q = modgate_fetched::Query {
        identity: modgate_fetched::IdentityFilter::parse("ci").expect("identity"),
        since_ms: 0,
        until_ms: 10,
    };
    let err = ix.query(&q).expect_err("the server is away").to_string();
    assert!(
        err.contains("PostgreSQL 127.0.0.1:") && err.contains("querying"),
        "{err}"
    );
    server.start_again().expect("start PostgreSQL");
    ix.insert(&[fetch(3)]).expect("insert after the restart");
    assert_eq!(ix.count().expect("count"), 2);
    assert_eq!(ix.query(&q).expect("query")[0].count, 2);
}

#[test]
fn replicas_starting_at_once_apply_each_migration_once() {
    let Some(server) = server() else { return };
    server.create_db("m").expect("create database");
    const REPLICAS: usize = 8;
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let dsn = server.dsn("m");
    let threads: Vec<_> = (0..REPLICAS)
        .map(|i| {
            let (barrier, dsn) = (Arc::clone(&barrier), dsn.clone());
            std::thread::spawn(move || {
                let pool = Pool::new(&PgSettings::new(dsn)).expect("pool");
                barrier.wait();
                PgLedger::open(pool, &format!("replica-{i}")).map(|_| ())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread").expect("every replica starts");
    }
    let p = pool(&server, "m");
    let mut c = p.get().expect("client");
    let rows = c
        .query("SELECT version FROM modgate_schema ORDER BY version", &[])
        .expect("query");
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let want: Vec<i64> = (1..=modgate_postgres::migrate::supported()).collect();
    assert_eq!(versions, want, "each migration recorded exactly once");
}

#[test]
fn a_newer_schema_is_refused_naming_the_store() {
    let Some(server) = server() else { return };
    server.create_db("n").expect("create database");
    let p = pool(&server, "n");
    PgLedger::open(Arc::clone(&p), "a").expect("first open");
    p.get()
        .expect("client")
        .execute(
            "INSERT INTO modgate_schema (version, applied_unix) VALUES (999, 0)",
            &[],
        )
        .expect("insert");
    let err = PgLedger::open(p, "b").expect_err("refused").to_string();
    assert!(
        err.contains("999") && err.contains("PostgreSQL 127.0.0.1:"),
        "{err}"
    );
}

fn accept_zip(ledger: &dyn LedgerStore, version: &str) {
    ledger
        .accept(
            "example.com/m",
            version,
            Artifact::Zip,
            &sha256_hex(b"new bytes"),
            None,
            9,
            "alice",
            "re-tag confirmed",
        )
        .expect("accept");
}

fn next_event(rx: &mpsc::Receiver<Delivery>) -> modgate_postgres::Event {
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Delivery::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn an_accept_on_one_replica_reaches_the_listener_of_another_even_across_a_restart() {
    let Some(server) = server() else { return };
    server.create_db("e").expect("create database");
    let a = PgLedger::open(pool(&server, "e"), "replica-a").expect("a");
    let b_pool = pool(&server, "e");
    let _b = PgLedger::open(Arc::clone(&b_pool), "replica-b").expect("b");
    let (tx, rx) = mpsc::channel();
    let listener = Listener::start(b_pool, None, move |d| {
        let _ = tx.send(d);
    })
    .expect("listener");
    // The listener starts from the newest event once connected: give it a first event to be
    // sure it is listening before the one the test is about.
    let mut warmups = 0;
    loop {
        modgate_postgres::publish_purge(a.pool(), "warm.example", None, "test").expect("purge");
        warmups += 1;
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(Delivery::Event(e)) if e.module == "warm.example" => break,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => assert!(warmups < 30, "the listener never heard a purge"),
        }
    }
    while rx.try_recv().is_ok() {}

    accept_zip(&a, "v1.0.0");
    let e = next_event(&rx);
    assert_eq!(e.kind, EventKind::Accept);
    assert_eq!(
        (
            e.module.as_str(),
            e.version.as_deref(),
            e.artifact.as_deref()
        ),
        ("example.com/m", Some("v1.0.0"), Some("zip"))
    );
    assert_eq!(e.origin, "replica-a");

    // The server restarts; an accept made before the listener is back is still delivered.
    server.stop().expect("stop");
    let down = a
        .get("example.com/m", "v1.0.0", Artifact::Zip)
        .expect_err("the server is down");
    assert!(
        down.to_string().contains("PostgreSQL 127.0.0.1:"),
        "the error names the store: {down}"
    );
    server.start_again().expect("start again");
    accept_zip(&a, "v1.0.1");
    let e = next_event(&rx);
    assert_eq!(
        (e.kind, e.version.as_deref()),
        (EventKind::Accept, Some("v1.0.1"))
    );
    listener.stop();
}

#[test]
fn a_pool_fails_fast_while_the_server_is_down_and_recovers_by_itself() {
    let Some(server) = server() else { return };
    server.create_db("r").expect("create database");
    let ledger = PgLedger::open(pool(&server, "r"), "a").expect("open");
    let sha = sha256_hex(b"zip");
    let observe = || {
        ledger.observe(
            "example.com/r",
            "v1.0.0",
            Artifact::Zip,
            &sha,
            None,
            3,
            "up",
        )
    };
    assert!(matches!(observe().expect("observe"), Check::FirstSeen(_)));
    server.kill().expect("kill");
    let started = std::time::Instant::now();
    let err = observe().expect_err("down");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "an unreachable store is an error within the connect timeout, took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("PostgreSQL 127.0.0.1:"), "{err}");
    server.start_again().expect("start again");
    // Pooled connections died with the server: the pool notices and connects anew.
    assert!(matches!(
        observe().expect("observe after the restart"),
        Check::Match(_)
    ));
}
