//! The throwaway PostgreSQL 15 server ([`PgServer`]) against the real server and the real `psql`
//! from the same bin directory: a database created and queried over TCP, refused while the
//! server is stopped and served again after `start_again` on the same port; committed rows
//! surviving a kill; concurrent servers on distinct ports; a taken port replaced by the next
//! pick; and nothing left running or on disk after a drop.

use std::net::TcpListener;
use std::process::{Command, Output};

use modgate_testkit::{free_port, require_postgres, PgServer};

/// `psql -c sql` against `db` on the server's TCP port, as the superuser, unaligned tuples only.
fn psql(server: &PgServer, db: &str, sql: &str) -> Output {
    Command::new(server.bin().join("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &server.port().to_string(), "-U", "modgate", "-d", db])
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .env_remove("PGOPTIONS")
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE")
        .output()
        .expect("run psql")
}

/// `psql -c sql` that must succeed; its output, trimmed.
fn psql_ok(server: &PgServer, db: &str, sql: &str) -> String {
    let out = psql(server, db, sql);
    assert!(
        out.status.success(),
        "psql {sql:?} on port {} failed: {}\n--- server log:\n{}",
        server.port(),
        String::from_utf8_lossy(&out.stderr),
        server.log_tail()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn start() -> PgServer {
    PgServer::start().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn database_is_served_refused_when_stopped_and_served_after_start_again() {
    let Some(_) = require_postgres() else { return };
    let server = start();
    server.create_db("gate").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(psql_ok(&server, "gate", "select 1"), "1");
    assert_eq!(
        psql_ok(&server, "gate", "select current_database()"),
        "gate"
    );
    assert_eq!(
        server.dsn("gate"),
        format!(
            "host=127.0.0.1 port={} user=modgate dbname=gate",
            server.port()
        )
    );

    server.stop().unwrap_or_else(|e| panic!("{e}"));
    let refused = psql(&server, "gate", "select 1");
    assert!(
        !refused.status.success(),
        "psql succeeded against a stopped server: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("Connection refused"), "psql: {why}");

    let port = server.port();
    server.start_again().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.port(), port);
    assert_eq!(psql_ok(&server, "gate", "select 1"), "1");
}

#[test]
fn committed_rows_survive_a_kill() {
    let Some(_) = require_postgres() else { return };
    let server = start();
    server.create_db("gate").unwrap_or_else(|e| panic!("{e}"));
    psql_ok(
        &server,
        "gate",
        "create table t (n int); insert into t values (1), (2), (3)",
    );
    server.kill().unwrap_or_else(|e| panic!("{e}"));
    assert!(!psql(&server, "gate", "select 1").status.success());
    server.start_again().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(psql_ok(&server, "gate", "select sum(n) from t"), "6");
    // The kill skipped the shutdown checkpoint: the start replayed the WAL.
    assert!(
        server
            .log_tail()
            .contains("database system was interrupted"),
        "no crash recovery in the log:\n{}",
        server.log_tail()
    );
}

#[test]
fn concurrent_servers_get_different_ports_and_both_serve() {
    let Some(_) = require_postgres() else { return };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(start);
        let b = s.spawn(start);
        (
            a.join().expect("first server"),
            b.join().expect("second server"),
        )
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    a.create_db("one").unwrap_or_else(|e| panic!("{e}"));
    b.create_db("two").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(psql_ok(&a, "one", "select current_database()"), "one");
    assert_eq!(psql_ok(&b, "two", "select current_database()"), "two");
    // Each is its own cluster: the other's database is not there.
    assert!(!psql(&a, "two", "select 1").status.success());
}

#[test]
fn a_taken_port_is_replaced_by_the_next_pick() {
    let Some(_) = require_postgres() else { return };
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let mut picks = 0;
    let server = PgServer::start_picking(|| {
        picks += 1;
        if picks == 1 {
            taken_port
        } else {
            free_port()
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(picks, 2, "one retry after the taken port");
    assert_ne!(server.port(), taken_port);
    assert!(
        server.log_tail().contains("Address already in use"),
        "the first start did not hit the taken port:\n{}",
        server.log_tail()
    );
    assert_eq!(psql_ok(&server, "postgres", "select 1"), "1");
    drop(taken);
}

#[test]
fn drop_stops_the_server_and_removes_its_directory() {
    let Some(_) = require_postgres() else { return };
    let server = start();
    let dir = server.socket_dir().to_path_buf();
    let port = server.port();
    assert!(dir.join("data").join("postmaster.pid").exists());
    drop(server);
    assert!(!dir.exists(), "{} still exists", dir.display());
    // Nothing listens on the port any more: binding it succeeds.
    TcpListener::bind(("127.0.0.1", port)).expect("the dropped server's port is still taken");
}
