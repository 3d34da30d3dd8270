//! The company's checksum database in a real PostgreSQL 15 (a throwaway cluster on a loopback
//! port): the conformance suite the embedded SQLite log passes (byte for byte against it, and
//! no fork with several handles appending at once), tables that refuse rewriting history, two
//! logs side by side (a rotated key is a new log name), and a server restart: appends fail with
//! an error naming the store, nothing half-written, and the log goes on by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use modgate_postgres::PgLog;
use modgate_sumdb::conformance::{run_all, Harness, Opener};
use modgate_sumdb::{Entry, Error, LogStore, Signer};
use modgate_tlog::note::{key_pair_from_seed, open_tree};
use modgate_tlog::record_hash;

mod common;
use common::{pool_on as pool, server, Databases};

impl Harness for Databases {
    fn store(&self, _case: &str) -> Arc<Opener> {
        let dsn = self.fresh("sum");
        Arc::new(move |signer| {
            Ok(Arc::new(PgLog::open(pool(dsn.clone()), signer, 1 << 20)?) as Arc<dyn LogStore>)
        })
    }
}

#[test]
fn conformance_suite_on_postgres() {
    let Some(server) = server() else { return };
    run_all(&Databases::on(server));
}

fn signer(name: &str, seed: u8) -> Signer {
    let (skey, _) = key_pair_from_seed(name, &[seed; 32]).expect("key");
    Signer::new(&skey).expect("signer")
}

fn entry(i: u64) -> Entry {
    let h1 = |s: String| format!("h1:{}", record_hash(s.as_bytes()));
    Entry::new(
        "corp.example/svc",
        &format!("v1.0.{i}"),
        &h1(format!("zip {i}")),
        &h1(format!("mod {i}")),
    )
    .expect("entry")
}

#[test]
fn history_cannot_be_rewritten_and_logs_of_other_names_live_side_by_side() {
    let Some(server) = server() else { return };
    server.create_db("h").expect("create database");
    let log = PgLog::open(pool(server.dsn("h")), signer("sum.corp.example", 1), 0).expect("open");
    log.append(&[entry(0), entry(1)]).expect("append");
    let mut client = postgres::Client::connect(&server.dsn("h"), postgres::NoTls).expect("client");
    for statement in [
        "UPDATE sumdb_records SET text = 'forged'",
        "DELETE FROM sumdb_heads WHERE size > 0",
        "UPDATE sumdb_hashes SET hash = hash",
        "DELETE FROM sumdb_logs",
        "TRUNCATE sumdb_records CASCADE",
    ] {
        let err = client.batch_execute(statement).expect_err(statement);
        let text = format!("{err:?}");
        assert!(text.contains("append-only"), "{statement}: {text}");
    }
    assert_eq!(log.tree_size().expect("size"), 2);

    // A rotated key is a new log name: both logs live in the one database, each with its own
    // tree, and each name stays bound to its key.
    let rotated =
        PgLog::open(pool(server.dsn("h")), signer("sum2.corp.example", 2), 0).expect("open");
    assert_eq!(rotated.tree_size().expect("size"), 0);
    rotated.append(&[entry(7)]).expect("append");
    assert_eq!(
        rotated
            .lookup("corp.example/svc", "v1.0.7")
            .expect("lookup"),
        Some(0)
    );
    assert_eq!(
        log.lookup("corp.example/svc", "v1.0.7").expect("lookup"),
        None
    );
    assert_eq!(log.tree_size().expect("size"), 2);
    let err = PgLog::open(pool(server.dsn("h")), signer("sum2.corp.example", 3), 0)
        .expect_err("another key for sum2");
    assert!(matches!(err, Error::WrongKey { .. }), "{err:?}");
}

#[test]
fn a_restarted_server_fails_appends_with_its_name_and_the_log_goes_on() {
    let Some(server) = server() else { return };
    server.create_db("r").expect("create database");
    let log = PgLog::open(pool(server.dsn("r")), signer("sum.corp.example", 1), 0).expect("open");
    log.append(&[entry(0)]).expect("append");
    let before = log.head().expect("head");

    server.kill().expect("kill PostgreSQL");
    let err = log
        .append(&[entry(1)])
        .expect_err("append while the server is down");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("PostgreSQL 127.0.0.1:{}", server.port())),
        "the error names the store: {text}"
    );
    let err = log.head().expect_err("read while the server is down");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");

    server.start_again().expect("start PostgreSQL again");
    // The pool reconnects on the next use (bounded wait for the server to accept logins).
    let deadline = Instant::now() + Duration::from_secs(60);
    let batch = loop {
        match log.append(&[entry(1), entry(2)]) {
            Ok(batch) => break batch,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for PostgreSQL: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the log did not come back: {e}"),
        }
    };
    assert_eq!(batch.tree_size, 3, "the failed append left nothing behind");
    let head = log.head().expect("head");
    assert_eq!(
        open_tree(&head.signed_note, log.verifier())
            .expect("verifies")
            .n,
        3
    );
    assert_ne!(head, before);
    // Reopening checks the latest head against the stored hashes.
    PgLog::open(pool(server.dsn("r")), signer("sum.corp.example", 1), 0).expect("reopen");
}

#[test]
fn commands_open_the_log_without_creating_or_migrating_anything() {
    let Some(server) = server() else { return };
    server.create_db("c").expect("create database");
    let dsn = server.dsn("c");
    let mut client = postgres::Client::connect(&dsn, postgres::NoTls).expect("client");
    let has_schema = |client: &mut postgres::Client| -> bool {
        client
            .query_one("SELECT to_regclass('modgate_schema') IS NOT NULL", &[])
            .and_then(|r| r.try_get(0))
            .expect("query")
    };

    // No schema yet (no replica ever started): refused, and nothing is created.
    let err = PgLog::open_existing(pool(dsn.clone()), signer("sum.corp.example", 1), 0)
        .expect_err("no schema");
    assert!(
        err.to_string().contains("schema version 0 is older than"),
        "{err}"
    );
    let err =
        modgate_postgres::PgFetchIndex::open_existing(pool(dsn.clone())).expect_err("no schema");
    assert!(
        err.to_string().contains("upgrade the replicas first"),
        "{err}"
    );
    assert!(!has_schema(&mut client), "a command migrated the database");

    // A replica of another log started: no log of this name, refused and not created.
    PgLog::open(pool(dsn.clone()), signer("other.corp.example", 9), 0).expect("open");
    let err = PgLog::open_existing(pool(dsn.clone()), signer("sum.corp.example", 1), 0)
        .expect_err("no such log");
    assert!(
        err.to_string()
            .contains("there is no checksum database sum.corp.example"),
        "{err}"
    );
    let logs: i64 = client
        .query_one(
            "SELECT count(*) FROM sumdb_logs WHERE name = 'sum.corp.example'",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .expect("count");
    assert_eq!(logs, 0, "a command created the log");

    // Once a replica made it, a command reads it (and refuses another key).
    let replica = PgLog::open(pool(dsn.clone()), signer("sum.corp.example", 1), 0).expect("open");
    replica.append(&[entry(0), entry(1)]).expect("append");
    let command = PgLog::open_existing(pool(dsn.clone()), signer("sum.corp.example", 1), 0)
        .expect("open for a command");
    assert_eq!(command.head().expect("head"), replica.head().expect("head"));
    assert_eq!(command.heads().expect("heads").len(), 2);
    let err = PgLog::open_existing(pool(dsn.clone()), signer("sum.corp.example", 2), 0)
        .expect_err("another key");
    assert!(matches!(err, Error::WrongKey { .. }), "{err:?}");
    let report = modgate_sumdb::verify_store(&command).expect("verify");
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.records, report.heads), (2, 2));
}
