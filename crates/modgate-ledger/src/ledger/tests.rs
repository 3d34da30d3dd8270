//! Tests of the SQLite ledger: first-seen, match, mismatch, operator
//! acceptance with history, persistence, concurrency on one file, corrupt
//! files and prefix listing.

use std::sync::{Arc, Barrier};

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

#[test]
fn first_seen_then_match() {
    let ledger = Ledger::open_in_memory().expect("open");
    assert_eq!(ledger.count().expect("count"), 0);

    let first = observe_mod(&ledger, GOOD, "proxy.golang.org");
    let Check::FirstSeen(entry) = &first else {
        panic!("expected FirstSeen, got {first:?}");
    };
    assert_eq!(entry.module, M);
    assert_eq!(entry.version, V);
    assert_eq!(entry.artifact, Artifact::Mod);
    assert_eq!(entry.sha256, sha256_hex(GOOD));
    assert_eq!(entry.h1.as_deref(), Some(mod_h1(GOOD).as_str()));
    assert_eq!(entry.size, GOOD.len() as u64);
    assert_eq!(entry.source, "proxy.golang.org");
    assert_eq!(entry.accepted_by, None);
    assert!(entry.first_seen_unix > 1_600_000_000);

    let again = observe_mod(&ledger, GOOD, "mirror");
    assert_eq!(
        again,
        Check::Match(entry.clone()),
        "the source of the first sighting is kept"
    );
    assert_eq!(
        ledger.get(M, V, Artifact::Mod).expect("get"),
        Some(entry.clone())
    );
    assert_eq!(ledger.get(M, V, Artifact::Zip).expect("get"), None);
    assert_eq!(ledger.get(M, "v1.0.1", Artifact::Mod).expect("get"), None);
    assert_eq!(ledger.count().expect("count"), 1);
}

#[test]
fn artifacts_are_recorded_separately() {
    let ledger = Ledger::open_in_memory().expect("open");
    let info = br#"{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}"#;
    for artifact in Artifact::ALL {
        let h1 = artifact.has_h1().then(|| mod_h1(info));
        let check = ledger
            .observe(M, V, artifact, &sha256_hex(info), h1.as_deref(), 50, "up")
            .expect("observe");
        assert!(
            matches!(check, Check::FirstSeen(_)),
            "{artifact}: {check:?}"
        );
    }
    assert_eq!(ledger.count().expect("count"), 3);
}

#[test]
fn mismatch_leaves_the_record_unchanged() {
    let ledger = Ledger::open_in_memory().expect("open");
    let Check::FirstSeen(recorded) = observe_mod(&ledger, GOOD, "up") else {
        panic!("expected FirstSeen");
    };
    let check = observe_mod(&ledger, EVIL, "up");
    assert!(check.is_mismatch());
    assert_eq!(
        check,
        Check::Mismatch {
            recorded: recorded.clone(),
            observed_sha256: sha256_hex(EVIL),
            observed_h1: Some(mod_h1(EVIL)),
        }
    );
    assert_eq!(check.recorded(), &recorded);
    assert_eq!(
        ledger.get(M, V, Artifact::Mod).expect("get"),
        Some(recorded.clone())
    );
    // The good bytes still match afterwards.
    assert_eq!(
        observe_mod(&ledger, GOOD, "up"),
        Check::Match(recorded.clone())
    );

    // Same SHA-256 but a different h1 or size is a mismatch too.
    let sha = sha256_hex(GOOD);
    let other_h1 = mod_h1(EVIL);
    let check = ledger
        .observe(
            M,
            V,
            Artifact::Mod,
            &sha,
            Some(&other_h1),
            GOOD.len() as u64,
            "up",
        )
        .expect("observe");
    assert!(check.is_mismatch(), "{check:?}");
    let check = ledger
        .observe(M, V, Artifact::Mod, &sha, None, GOOD.len() as u64 + 1, "up")
        .expect("observe");
    assert!(check.is_mismatch(), "{check:?}");
    assert_eq!(
        ledger.get(M, V, Artifact::Mod).expect("get"),
        Some(recorded)
    );
}

#[test]
fn missing_h1_is_filled_in_on_match() {
    let ledger = Ledger::open_in_memory().expect("open");
    let sha = sha256_hex(GOOD);
    let size = GOOD.len() as u64;
    let first = ledger
        .observe(M, V, Artifact::Mod, &sha, None, size, "up")
        .expect("observe");
    assert_eq!(first.recorded().h1, None);
    // Without an h1 on either side it is still a match.
    let check = ledger
        .observe(
            M,
            V,
            Artifact::Mod,
            &sha.to_ascii_uppercase(),
            None,
            size,
            "up",
        )
        .expect("observe");
    assert!(
        matches!(check, Check::Match(_)),
        "upper-case hex is normalized: {check:?}"
    );
    let h1 = mod_h1(GOOD);
    let check = ledger
        .observe(M, V, Artifact::Mod, &sha, Some(&h1), size, "up")
        .expect("observe");
    let Check::Match(entry) = check else {
        panic!("expected Match");
    };
    assert_eq!(entry.h1.as_deref(), Some(h1.as_str()));
    assert_eq!(
        ledger
            .get(M, V, Artifact::Mod)
            .expect("get")
            .and_then(|e| e.h1),
        Some(h1)
    );
}

#[test]
fn accept_replaces_and_keeps_history() {
    let ledger = Ledger::open_in_memory().expect("open");
    let Check::FirstSeen(original) = observe_mod(&ledger, GOOD, "proxy.golang.org") else {
        panic!("expected FirstSeen");
    };
    assert!(observe_mod(&ledger, EVIL, "proxy.golang.org").is_mismatch());
    assert!(ledger.history(M, V).expect("history").is_empty());

    let accepted = ledger
        .accept(
            M,
            V,
            Artifact::Mod,
            &sha256_hex(EVIL),
            Some(&mod_h1(EVIL)),
            EVIL.len() as u64,
            "alice",
            "upstream retagged v1.0.0; confirmed with the maintainers",
        )
        .expect("accept");
    assert_eq!(accepted.sha256, sha256_hex(EVIL));
    assert_eq!(accepted.accepted_by.as_deref(), Some("alice"));
    assert_eq!(accepted.source, "proxy.golang.org");
    assert_eq!(
        ledger.get(M, V, Artifact::Mod).expect("get"),
        Some(accepted.clone())
    );
    assert_eq!(
        observe_mod(&ledger, EVIL, "proxy.golang.org"),
        Check::Match(accepted.clone())
    );
    assert!(observe_mod(&ledger, GOOD, "proxy.golang.org").is_mismatch());

    let history = ledger.history(M, V).expect("history");
    assert_eq!(history.len(), 1);
    let h = &history[0];
    assert_eq!(
        (h.module.as_str(), h.version.as_str(), h.artifact),
        (M, V, Artifact::Mod)
    );
    assert_eq!(h.replaced.as_ref(), Some(&original));
    assert_eq!(h.sha256, sha256_hex(EVIL));
    assert_eq!(h.h1.as_deref(), Some(mod_h1(EVIL).as_str()));
    assert_eq!(h.size, EVIL.len() as u64);
    assert_eq!(h.operator, "alice");
    assert!(h.reason.contains("retagged"));
    assert!(h.accepted_unix >= original.first_seen_unix);

    // Back again: the history grows, oldest first.
    ledger
        .accept(
            M,
            V,
            Artifact::Mod,
            &sha256_hex(GOOD),
            None,
            GOOD.len() as u64,
            "bob",
            "revert",
        )
        .expect("accept");
    let history = ledger.history(M, V).expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].replaced.as_ref(), Some(&accepted));
    assert_eq!(history[1].operator, "bob");
    assert!(ledger.history(M, "v9.9.9").expect("history").is_empty());
    assert_eq!(ledger.count().expect("count"), 1);
}

#[test]
fn accept_without_prior_record_pins_the_version() {
    let ledger = Ledger::open_in_memory().expect("open");
    let entry = ledger
        .accept(
            M,
            V,
            Artifact::Zip,
            &sha256_hex(b"zip"),
            None,
            3,
            "carol",
            "pre-seeded",
        )
        .expect("accept");
    assert_eq!(entry.source, "operator");
    let history = ledger.history(M, V).expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].replaced, None);
    let check = ledger
        .observe(M, V, Artifact::Zip, &sha256_hex(b"other"), None, 5, "up")
        .expect("observe");
    assert!(check.is_mismatch());
}

#[test]
fn accept_requires_operator_and_reason() {
    let ledger = Ledger::open_in_memory().expect("open");
    let sha = sha256_hex(GOOD);
    for (operator, reason, what) in [("", "why", "operator"), ("alice", "", "reason")] {
        let err = ledger
            .accept(M, V, Artifact::Mod, &sha, None, 1, operator, reason)
            .expect_err("rejected");
        assert!(
            matches!(&err, LedgerError::InvalidInput { what: w, .. } if *w == what),
            "{err}"
        );
    }
    assert_eq!(ledger.count().expect("count"), 0);
}

#[test]
fn invalid_input_is_rejected_before_the_database() {
    let ledger = Ledger::open_in_memory().expect("open");
    let sha = sha256_hex(GOOD);
    let h1 = mod_h1(GOOD);
    let cases: Vec<(&str, Result<Check, LedgerError>)> = vec![
        (
            "module",
            ledger.observe("", V, Artifact::Mod, &sha, None, 1, "up"),
        ),
        (
            "version",
            ledger.observe(M, "", Artifact::Mod, &sha, None, 1, "up"),
        ),
        (
            "module",
            ledger.observe("a\nb", V, Artifact::Mod, &sha, None, 1, "up"),
        ),
        (
            "sha256",
            ledger.observe(M, V, Artifact::Mod, "abc", None, 1, "up"),
        ),
        (
            "sha256",
            ledger.observe(M, V, Artifact::Mod, &"z".repeat(64), None, 1, "up"),
        ),
        (
            "h1",
            ledger.observe(M, V, Artifact::Mod, &sha, Some("h1:bogus"), 1, "up"),
        ),
        (
            "h1",
            ledger.observe(M, V, Artifact::Mod, &sha, Some(&sha), 1, "up"),
        ),
        (
            "h1",
            ledger.observe(M, V, Artifact::Info, &sha, Some(&h1), 1, "up"),
        ),
        (
            "size",
            ledger.observe(M, V, Artifact::Mod, &sha, None, u64::MAX, "up"),
        ),
    ];
    for (what, result) in cases {
        match result {
            Err(LedgerError::InvalidInput { what: w, .. }) => assert_eq!(w, what),
            other => panic!("expected invalid {what}, got {other:?}"),
        }
    }
    assert_eq!(ledger.count().expect("count"), 0);
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
fn list_by_prefix() {
    let ledger = Ledger::open_in_memory().expect("open");
    let sha = sha256_hex(b"x");
    for (module, version, artifact) in [
        ("example.com/a", "v1.0.0", Artifact::Zip),
        ("example.com/a", "v1.0.0", Artifact::Mod),
        ("example.com/a/v2", "v2.0.0", Artifact::Mod),
        ("example.com/a/b/c", "v0.1.0", Artifact::Info),
        ("example.com/ab", "v1.0.0", Artifact::Mod),
        ("example.com/a0", "v1.0.0", Artifact::Mod),
        ("example.com/a-b", "v1.0.0", Artifact::Mod),
        ("golang.org/x/text", "v0.14.0", Artifact::Mod),
    ] {
        ledger
            .observe(module, version, artifact, &sha, None, 1, "up")
            .expect("observe");
    }
    let keys = |prefix: Option<&str>| -> Vec<String> {
        ledger
            .list(prefix)
            .expect("list")
            .into_iter()
            .map(|e| format!("{}@{} {}", e.module, e.version, e.artifact))
            .collect()
    };
    assert_eq!(
        keys(Some("example.com/a")),
        [
            "example.com/a@v1.0.0 mod",
            "example.com/a@v1.0.0 zip",
            "example.com/a/b/c@v0.1.0 info",
            "example.com/a/v2@v2.0.0 mod",
        ]
    );
    assert_eq!(
        keys(Some("example.com/a/")),
        [
            "example.com/a/b/c@v0.1.0 info",
            "example.com/a/v2@v2.0.0 mod"
        ]
    );
    assert_eq!(keys(Some("example.com/ab")), ["example.com/ab@v1.0.0 mod"]);
    assert_eq!(keys(Some("golang.org")), ["golang.org/x/text@v0.14.0 mod"]);
    assert!(keys(Some("example.com/a%")).is_empty(), "no LIKE wildcards");
    assert!(keys(Some("nothing.example")).is_empty());
    assert_eq!(keys(None).len(), 8);
    assert_eq!(keys(Some("")).len(), 8);
}

/// Eight threads, each with its own connection to one file, race to observe
/// the same version with two different byte sets. Exactly one observation
/// is recorded; every other one matches it or mismatches it according to
/// its bytes.
#[test]
fn concurrent_first_observations_on_one_file() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.sqlite");
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (barrier, path) = (Arc::clone(&barrier), path.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Even the first open (schema creation) races. Reach the
                // second barrier whatever happens, or the others hang.
                let opened = Ledger::open(&path);
                barrier.wait();
                let ledger = opened.expect("open");
                let bytes = if t % 2 == 0 { GOOD } else { EVIL };
                let mut checks = Vec::new();
                for round in 0..ROUNDS {
                    let version = format!("v1.0.{round}");
                    let check = ledger
                        .observe(
                            M,
                            &version,
                            Artifact::Mod,
                            &sha256_hex(bytes),
                            Some(&mod_h1(bytes)),
                            bytes.len() as u64,
                            &format!("thread-{t}"),
                        )
                        .expect("observe");
                    checks.push((version, sha256_hex(bytes), check));
                }
                checks
            })
        })
        .collect();
    let checks: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();

    let ledger = Ledger::open(&path).expect("open");
    assert_eq!(ledger.count().expect("count"), ROUNDS as u64);
    for round in 0..ROUNDS {
        let version = format!("v1.0.{round}");
        let winner = ledger
            .get(M, &version, Artifact::Mod)
            .expect("get")
            .expect("recorded");
        let mut first_seen = 0;
        for (_, sha, check) in checks.iter().filter(|(v, _, _)| *v == version) {
            assert_eq!(
                check.recorded(),
                &winner,
                "{version}: every observer sees the winner"
            );
            match check {
                Check::FirstSeen(_) => {
                    first_seen += 1;
                    assert_eq!(*sha, winner.sha256);
                }
                Check::Match(_) => assert_eq!(*sha, winner.sha256),
                Check::Mismatch {
                    observed_sha256, ..
                } => {
                    assert_eq!(observed_sha256, sha);
                    assert_ne!(*sha, winner.sha256);
                }
            }
        }
        assert_eq!(first_seen, 1, "{version}: exactly one first sighting");
    }
}

/// The same race through one shared `Ledger` (its mutex) from 8 threads.
#[test]
fn concurrent_first_observations_on_one_ledger() {
    const THREADS: usize = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(Ledger::open(&dir.path().join("ledger.sqlite")).expect("open"));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ledger, barrier) = (Arc::clone(&ledger), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let bytes = if t % 2 == 0 { GOOD } else { EVIL };
                barrier.wait();
                let check = ledger
                    .observe(
                        M,
                        V,
                        Artifact::Mod,
                        &sha256_hex(bytes),
                        None,
                        bytes.len() as u64,
                        "up",
                    )
                    .expect("observe");
                (sha256_hex(bytes), check)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let winner = ledger
        .get(M, V, Artifact::Mod)
        .expect("get")
        .expect("recorded");
    let first = results
        .iter()
        .filter(|(_, c)| matches!(c, Check::FirstSeen(_)))
        .count();
    assert_eq!(first, 1);
    for (sha, check) in &results {
        assert_eq!(check.recorded(), &winner);
        assert_eq!(check.is_mismatch(), *sha != winner.sha256);
    }
}

#[test]
fn ledger_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ledger>();
}
