//! The one test suite every ledger store passes (issue 23): the embedded SQLite [`Ledger`] in
//! this crate's tests and the shared PostgreSQL ledger in `modgate-postgres`'s, so the two keep
//! the same semantics — first-seen, match, mismatch, the `h1:` fill-in, operator acceptance and
//! its history, prefix listing, input checks, and concurrent first observations through one
//! handle and through separate handles (threads, processes or replicas on one store).
//!
//! A run is [`run_all`] with a [`Harness`]: each case gets a new, empty store and opens as many
//! handles on it as it needs.
//!
//! [`Ledger`]: crate::Ledger

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Barrier};

use crate::error::LedgerError;
use crate::hash::{mod_h1, sha256_hex};
use crate::ledger::{Artifact, Check};
use crate::store::LedgerStore;

/// Opens a new handle on one store.
pub type Opener = dyn Fn() -> Box<dyn LedgerStore> + Send + Sync;

/// One case of the suite, on handles of one store.
type Case = fn(&Opener);

/// What a backend gives the suite.
pub trait Harness {
    /// A new, empty store named after the case; the function opens handles on it.
    fn store(&self, case: &str) -> Arc<Opener>;
}

/// Runs every case against `harness`, each on its own empty store.
pub fn run_all(harness: &dyn Harness) {
    let plain: &[(&str, Case)] = &[
        ("first_seen_then_match", first_seen_then_match),
        (
            "artifacts_are_recorded_separately",
            artifacts_are_recorded_separately,
        ),
        (
            "mismatch_leaves_the_record_unchanged",
            mismatch_leaves_the_record_unchanged,
        ),
        (
            "missing_h1_is_filled_in_on_match",
            missing_h1_is_filled_in_on_match,
        ),
        (
            "accept_replaces_and_keeps_history",
            accept_replaces_and_keeps_history,
        ),
        (
            "accept_without_prior_record_pins_the_version",
            accept_without_prior_record_pins_the_version,
        ),
        (
            "accept_requires_operator_and_reason",
            accept_requires_operator_and_reason,
        ),
        (
            "invalid_input_is_rejected_before_the_database",
            invalid_input_is_rejected_before_the_database,
        ),
        ("list_by_prefix", list_by_prefix),
        (
            "concurrent_first_observations_on_one_ledger",
            concurrent_first_observations_on_one_ledger,
        ),
    ];
    for (name, case) in plain {
        eprintln!("ledger conformance: {name}");
        case(&*harness.store(name));
    }
    let name = "concurrent_first_observations_on_separate_handles";
    eprintln!("ledger conformance: {name}");
    concurrent_first_observations_on_separate_handles(&harness.store(name));
}

const M: &str = "example.com/m";
const V: &str = "v1.0.0";
const GOOD: &[u8] = b"module example.com/m\n\ngo 1.21\n";
const EVIL: &[u8] = b"module example.com/m\n\ngo 1.21\nrequire evil.example v6.6.6\n";

fn observe_mod(ledger: &dyn LedgerStore, bytes: &[u8], source: &str) -> Check {
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

/// A first observation is recorded; the same bytes again match it.
pub fn first_seen_then_match(open: &Opener) {
    let ledger = open();
    assert_eq!(ledger.count().expect("count"), 0);

    let first = observe_mod(&*ledger, GOOD, "proxy.golang.org");
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

    let again = observe_mod(&*ledger, GOOD, "mirror");
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

/// `.mod`, `.zip` and `.info` of one version are three records.
pub fn artifacts_are_recorded_separately(open: &Opener) {
    let ledger = open();
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

/// Other bytes (SHA-256, `h1:` or size) are a mismatch and change nothing.
pub fn mismatch_leaves_the_record_unchanged(open: &Opener) {
    let ledger = open();
    let Check::FirstSeen(recorded) = observe_mod(&*ledger, GOOD, "up") else {
        panic!("expected FirstSeen");
    };
    let check = observe_mod(&*ledger, EVIL, "up");
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
        observe_mod(&*ledger, GOOD, "up"),
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

/// A record without an `h1:` gets the observed one on a match.
pub fn missing_h1_is_filled_in_on_match(open: &Opener) {
    let ledger = open();
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

/// An accept replaces the record; the history keeps each replaced one, oldest first.
pub fn accept_replaces_and_keeps_history(open: &Opener) {
    let ledger = open();
    let Check::FirstSeen(original) = observe_mod(&*ledger, GOOD, "proxy.golang.org") else {
        panic!("expected FirstSeen");
    };
    assert!(observe_mod(&*ledger, EVIL, "proxy.golang.org").is_mismatch());
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
        observe_mod(&*ledger, EVIL, "proxy.golang.org"),
        Check::Match(accepted.clone())
    );
    assert!(observe_mod(&*ledger, GOOD, "proxy.golang.org").is_mismatch());

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

/// Accepting bytes never observed records them (source `operator`).
pub fn accept_without_prior_record_pins_the_version(open: &Opener) {
    let ledger = open();
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

/// An accept names who and why.
pub fn accept_requires_operator_and_reason(open: &Opener) {
    let ledger = open();
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

/// Bad arguments are refused before the store is touched.
pub fn invalid_input_is_rejected_before_the_database(open: &Opener) {
    let ledger = open();
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

/// Listing by prefix is on path element boundaries, with no wildcards.
pub fn list_by_prefix(open: &Opener) {
    let ledger = open();
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

/// Eight threads on one handle race to observe one version with two byte sets.
pub fn concurrent_first_observations_on_one_ledger(open: &Opener) {
    const THREADS: usize = 8;
    let ledger: Arc<dyn LedgerStore> = Arc::from(open());
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

/// Eight threads, each with its own handle on the store, race to observe the same versions
/// with two different byte sets: exactly one observation per version is recorded; every other
/// one matches it or mismatches it according to its bytes.
pub fn concurrent_first_observations_on_separate_handles(open: &Arc<Opener>) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 5;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (barrier, open) = (Arc::clone(&barrier), Arc::clone(open));
            std::thread::spawn(move || {
                barrier.wait();
                // Even the first open (schema creation) races.
                let ledger = open();
                barrier.wait();
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

    let ledger = open();
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
