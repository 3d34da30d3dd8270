//! Tests of the SQLite ledger: the conformance suite every store passes (first-seen, match,
//! mismatch, acceptance with history, prefix listing, concurrency through one handle and through
//! separate connections to one file), and what is SQLite's own: persistence, schema versions,
//! corrupt files.

use std::sync::Arc;

use super::*;
use crate::hash::{mod_h1, sha256_hex};

const M: &str = "example.com/m";
const V: &str = "v1.0.0";
const GOOD: &[u8] = b"module example.com/m\n\ngo 1.21\n";
const EVIL: &[u8] = b"module example.com/m\n\ngo 1.21\nrequire evil.example v6.6.6\n";

fn observe_mod(ledger: &Ledger, bytes: &[u8], source: &str) -> Check {
    ledger
        .observe(
            M,
            V,
            Artifact::Mod,
            &sha256_hex(bytes),
            Some(&mod_h1(bytes)),
            bytes.len() as u64,
            source,
        )
        .expect("observe")
}

/// Each case on its own file in a temporary directory, each handle its own connection.
struct SqliteFiles;

impl crate::conformance::Harness for SqliteFiles {
    fn store(&self, case: &str) -> Arc<crate::conformance::Opener> {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let path = dir.path().join(format!("{case}.sqlite"));
        Arc::new(move || {
            let _keep = &dir;
            Box::new(Ledger::open(&path).expect("open")) as Box<dyn LedgerStore>
        })
    }
}

#[test]
fn conformance_suite_on_sqlite() {
    crate::conformance::run_all(&SqliteFiles);
}

#[test]
fn artifact_names() {
    for artifact in Artifact::ALL {
        assert_eq!(
            artifact.as_str().parse::<Artifact>().expect("parse"),
            artifact
        );
        assert_eq!(artifact.to_string(), artifact.as_str());
    }
    assert_eq!(Artifact::ALL.map(Artifact::as_str), ["mod", "zip", "info"]);
    assert!("ZIP".parse::<Artifact>().is_err());
}

#[test]
fn persists_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dirs/ledger.sqlite");
    let recorded = {
        let ledger = Ledger::open(&path).expect("open");
        assert_eq!(ledger.path(), Some(path.as_path()));
        let Check::FirstSeen(entry) = observe_mod(&ledger, GOOD, "up") else {
            panic!("expected FirstSeen");
        };
        ledger
            .accept(
                M,
                "v2.0.0",
                Artifact::Info,
                &sha256_hex(b"{}"),
                None,
                2,
                "dave",
                "test",
            )
            .expect("accept");
        entry
    };
    let ledger = Ledger::open(&path).expect("reopen");
    assert_eq!(ledger.count().expect("count"), 2);
    assert_eq!(
        ledger.get(M, V, Artifact::Mod).expect("get"),
        Some(recorded.clone())
    );
    assert_eq!(
        observe_mod(&ledger, GOOD, "up"),
        Check::Match(recorded.clone())
    );
    assert!(observe_mod(&ledger, EVIL, "up").is_mismatch());
    assert_eq!(ledger.history(M, "v2.0.0").expect("history").len(), 1);

    // WAL mode and the schema version are on disk.
    let conn = Connection::open(&path).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .expect("schema version");
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.sqlite");
    drop(Ledger::open(&path).expect("open"));
    Connection::open(&path)
        .expect("raw open")
        .execute(
            "INSERT INTO schema_version (version, applied_unix) VALUES (?1, 0)",
            [SCHEMA_VERSION + 1],
        )
        .expect("bump");
    match Ledger::open(&path) {
        Err(LedgerError::SchemaTooNew {
            path: p,
            found,
            supported,
        }) => {
            assert_eq!(p, path);
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn corrupt_file_is_a_clear_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.sqlite");
    std::fs::write(&path, vec![0x5a; 8192]).expect("write garbage");
    let err = Ledger::open(&path).expect_err("not a database");
    assert!(
        matches!(&err, LedgerError::Open { path: p, .. } if *p == path),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a database"), "{message}");
    // The garbage is left alone.
    assert_eq!(std::fs::read(&path).expect("read"), vec![0x5a; 8192]);
}

#[test]
fn directory_in_the_way_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").expect("write");
    let err = Ledger::open(&blocker.join("ledger.sqlite")).expect_err("parent is a file");
    assert!(
        matches!(&err, LedgerError::CreateDir { path, .. } if *path == blocker),
        "{err:?}"
    );
    assert!(err.to_string().contains(&blocker.display().to_string()));
}

#[test]
fn ledger_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ledger>();
}
