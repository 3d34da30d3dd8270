//! The one test suite every fetched-index store passes (issue 23): the embedded SQLite
//! [`FetchIndex`] in this crate's tests and the shared PostgreSQL index in `modgate-postgres`'s,
//! so the two keep the same semantics — a query is one identity (every source, or one) in a
//! half-open time range, summarised per module version with zip and mod merged and the hashes
//! of each, sorted bytewise; pruning by age and by count keeps exactly the newest; bad records
//! and empty ranges are refused; and concurrent batches through separate handles (threads,
//! processes or replicas on one store) are all kept.
//!
//! A run is [`run_all`] with a [`Harness`]: each case gets a new, empty store and opens as many
//! handles on it as it needs.
//!
//! [`FetchIndex`]: crate::FetchIndex

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::error::FetchedError;
use crate::index::{Fetch, Hashes, IdentityFilter, Kind, Limits, Pruned, Query, VersionFetched};
use crate::store::FetchStore;

/// Opens a new handle on one store.
pub type Opener = dyn Fn() -> Box<dyn FetchStore> + Send + Sync;

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
        (
            "a_query_is_one_identity_in_a_half_open_time_range",
            a_query_is_one_identity_in_a_half_open_time_range,
        ),
        (
            "versions_are_sorted_bytewise_and_merged_per_version",
            versions_are_sorted_bytewise_and_merged_per_version,
        ),
        (
            "changed_hashes_within_a_range_are_all_shown",
            changed_hashes_within_a_range_are_all_shown,
        ),
        (
            "a_name_without_a_source_lists_every_source",
            a_name_without_a_source_lists_every_source,
        ),
        (
            "retention_removes_what_is_older_and_keeps_the_rest",
            retention_removes_what_is_older_and_keeps_the_rest,
        ),
        (
            "max_records_keeps_exactly_the_newest",
            max_records_keeps_exactly_the_newest,
        ),
        (
            "record_inserts_and_prunes_in_one_call",
            record_inserts_and_prunes_in_one_call,
        ),
        (
            "bad_records_are_refused_and_nothing_of_their_batch_kept",
            bad_records_are_refused_and_nothing_of_their_batch_kept,
        ),
        (
            "records_persist_across_handles",
            records_persist_across_handles,
        ),
    ];
    for (name, case) in plain {
        eprintln!("fetched conformance: {name}");
        case(&*harness.store(name));
    }
    let name = "concurrent_batches_on_separate_handles_are_all_kept";
    eprintln!("fetched conformance: {name}");
    concurrent_batches_on_separate_handles_are_all_kept(&harness.store(name));
}

/// A fetch at `at_ms` with hashes made from its fields (also for the index's own tests).
pub(crate) fn fetch(at_ms: i64, who: &str, module: &str, version: &str, kind: Kind) -> Fetch {
    Fetch {
        at_ms,
        identity: who.into(),
        source: "certificate".into(),
        module: module.into(),
        version: version.into(),
        kind,
        hashes: Some(Hashes {
            sha256: format!("{at_ms:064x}"),
            h1: Some(format!("h1:{module}@{version}/{}", kind.as_str())),
        }),
    }
}

fn query(who: &str, since_ms: i64, until_ms: i64) -> Query {
    Query {
        identity: IdentityFilter::parse(who).expect("identity"),
        since_ms,
        until_ms,
    }
}

fn versions(v: &[VersionFetched]) -> Vec<String> {
    v.iter()
        .map(|v| format!("{}@{}", v.module, v.version))
        .collect()
}

fn listed(store: &dyn FetchStore, who: &str, since_ms: i64, until_ms: i64) -> Vec<String> {
    versions(&store.query(&query(who, since_ms, until_ms)).expect("query"))
}

/// Since inclusive, until exclusive; another identity's fetches are never listed, nor a source
/// that is not the identity's; an empty range is refused.
pub fn a_query_is_one_identity_in_a_half_open_time_range(open: &Opener) {
    let ix = open();
    assert_eq!(ix.count().expect("count"), 0);
    assert!(!ix.describe().is_empty());
    ix.insert(&[
        fetch(1_000, "ci", "example.com/a", "v1.0.0", Kind::Mod),
        fetch(1_001, "ci", "example.com/a", "v1.0.0", Kind::Zip),
        fetch(2_000, "ci", "example.com/b", "v0.1.0", Kind::Zip),
        fetch(
            3_000,
            "ci",
            "example.com/c",
            "v2.0.0+incompatible",
            Kind::Mod,
        ),
        fetch(1_500, "alice", "example.com/secret", "v1.0.0", Kind::Zip),
    ])
    .expect("insert");
    assert_eq!(ix.count().expect("count"), 5);
    let all = ix.query(&query("ci", 0, i64::MAX)).expect("query");
    assert_eq!(
        versions(&all),
        [
            "example.com/a@v1.0.0",
            "example.com/b@v0.1.0",
            "example.com/c@v2.0.0+incompatible"
        ]
    );
    // zip and mod merged, with the hashes of each.
    let a = &all[0];
    assert!(a.zip_fetched && a.mod_fetched);
    assert_eq!((a.first_ms, a.last_ms, a.count), (1_000, 1_001, 2));
    assert_eq!(
        a.zip.iter().next().and_then(|h| h.h1.as_deref()),
        Some("h1:example.com/a@v1.0.0/zip")
    );
    assert_eq!(
        a.module_file.iter().next().map(|h| h.sha256.as_str()),
        Some(format!("{:064x}", 1_000).as_str())
    );
    assert_eq!(a.identities.iter().collect::<Vec<_>>(), ["certificate:ci"]);
    let c = &all[2];
    assert!(c.mod_fetched && !c.zip_fetched && c.zip.is_empty());
    // since inclusive, until exclusive.
    assert_eq!(listed(&*ix, "ci", 2_000, 3_000), ["example.com/b@v0.1.0"]);
    assert_eq!(
        listed(&*ix, "ci", 1_001, 2_001),
        ["example.com/a@v1.0.0", "example.com/b@v0.1.0"]
    );
    let one = ix.query(&query("ci", 1_001, 2_000)).expect("query");
    assert_eq!(
        (one[0].first_ms, one[0].count),
        (1_001, 1),
        "only the zip in range"
    );
    assert!(one[0].zip_fetched && !one[0].mod_fetched);
    assert!(listed(&*ix, "ci", 3_001, i64::MAX).is_empty());
    // another identity's fetches are never listed, nor a source that is not theirs.
    assert_eq!(
        listed(&*ix, "alice", 0, i64::MAX),
        ["example.com/secret@v1.0.0"]
    );
    assert!(listed(&*ix, "basic:ci", 0, i64::MAX).is_empty());
    assert_eq!(listed(&*ix, "certificate:ci", 0, i64::MAX).len(), 3);
    assert!(listed(&*ix, "nobody", 0, i64::MAX).is_empty());
    for (since, until) in [(5, 5), (6, 5)] {
        assert!(
            matches!(
                ix.query(&query("ci", since, until)),
                Err(FetchedError::Invalid(_))
            ),
            "empty range [{since}, {until})"
        );
    }
}

/// Versions sort by module path then version text, bytewise (upper case before lower case,
/// `/` before letters); both kinds of one version are one entry; a fetch without hashes marks
/// its kind fetched and adds no hashes.
pub fn versions_are_sorted_bytewise_and_merged_per_version(open: &Opener) {
    let ix = open();
    let mut unhashed = fetch(7, "ci", "example.com/a/v2", "v2.0.0", Kind::Zip);
    unhashed.hashes = None;
    let mut no_h1 = fetch(8, "ci", "example.com/a/v2", "v2.0.0", Kind::Mod);
    no_h1.hashes = Some(Hashes {
        sha256: "ab".repeat(32),
        h1: None,
    });
    ix.insert(&[
        fetch(1, "ci", "example.com/b", "v1.0.0", Kind::Zip),
        fetch(2, "ci", "example.com/a", "v1.10.0", Kind::Zip),
        fetch(3, "ci", "example.com/a", "v1.9.0", Kind::Mod),
        fetch(4, "ci", "example.com/B", "v1.0.0", Kind::Mod),
        fetch(5, "ci", "example.com/a", "v1.9.0", Kind::Zip),
        fetch(6, "ci", "example.com/ab", "v1.0.0", Kind::Zip),
        unhashed,
        no_h1,
    ])
    .expect("insert");
    let all = ix.query(&query("ci", 0, 100)).expect("query");
    assert_eq!(
        versions(&all),
        [
            "example.com/B@v1.0.0",
            "example.com/a@v1.10.0",
            "example.com/a@v1.9.0",
            "example.com/a/v2@v2.0.0",
            "example.com/ab@v1.0.0",
            "example.com/b@v1.0.0",
        ]
    );
    let v19 = &all[2];
    assert_eq!((v19.first_ms, v19.last_ms, v19.count), (3, 5, 2));
    assert!(v19.zip_fetched && v19.mod_fetched);
    assert_eq!((v19.zip.len(), v19.module_file.len()), (1, 1));
    let v2 = &all[3];
    assert!(
        v2.zip_fetched && v2.zip.is_empty(),
        "no hashes, still fetched"
    );
    assert!(v2.mod_fetched);
    assert_eq!(
        v2.module_file.iter().collect::<Vec<_>>(),
        [&Hashes {
            sha256: "ab".repeat(32),
            h1: None
        }]
    );
}

/// Two records of one artifact with different hashes (an accepted re-tag) both show; one
/// without hashes adds none.
pub fn changed_hashes_within_a_range_are_all_shown(open: &Opener) {
    let ix = open();
    let mut a = fetch(1, "ci", "example.com/a", "v1.0.0", Kind::Zip);
    let mut b = a.clone();
    b.at_ms = 2;
    b.hashes = Some(Hashes {
        sha256: "ff".repeat(32),
        h1: Some("h1:accepted".into()),
    });
    let c = fetch(3, "ci", "example.com/a", "v1.0.0", Kind::Zip);
    a.hashes = None;
    ix.insert(&[a, b, c.clone(), c]).expect("insert");
    let v = ix.query(&query("ci", 0, 10)).expect("query");
    assert_eq!(v.len(), 1);
    assert!(v[0].zip_fetched && !v[0].mod_fetched);
    assert_eq!(
        v[0].zip.len(),
        2,
        "two different hashes, the unhashed adds none"
    );
    assert_eq!(v[0].count, 4);
    assert_eq!((v[0].first_ms, v[0].last_ms), (1, 3));
}

/// A name without a source lists the fetches of every source with that name, each source
/// named; `SOURCE:NAME` only that source's.
pub fn a_name_without_a_source_lists_every_source(open: &Opener) {
    let ix = open();
    let mut by_token = fetch(2, "deploy", "example.com/a", "v1.0.0", Kind::Zip);
    by_token.source = "token".into();
    let by_cert = fetch(1, "deploy", "example.com/a", "v1.0.0", Kind::Mod);
    let mut other = fetch(3, "team:deploy", "example.com/z", "v1.0.0", Kind::Zip);
    other.source = "basic".into();
    ix.insert(&[by_token, by_cert, other]).expect("insert");
    let v = ix.query(&query("deploy", 0, 10)).expect("query");
    assert_eq!(versions(&v), ["example.com/a@v1.0.0"]);
    assert_eq!(
        v[0].identities.iter().collect::<Vec<_>>(),
        ["certificate:deploy", "token:deploy"]
    );
    assert_eq!(v[0].count, 2);
    let t = ix.query(&query("token:deploy", 0, 10)).expect("query");
    assert_eq!(t[0].identities.iter().collect::<Vec<_>>(), ["token:deploy"]);
    assert!(t[0].zip_fetched && !t[0].mod_fetched);
    // A colon that does not start a known source is part of the name.
    assert_eq!(listed(&*ix, "team:deploy", 0, 10), ["example.com/z@v1.0.0"]);
}

/// Retention removes the records older than now minus the retention (the cut-off itself is
/// kept); no retention removes nothing for its age.
pub fn retention_removes_what_is_older_and_keeps_the_rest(open: &Opener) {
    let ix = open();
    let day = 86_400_000;
    ix.insert(&[
        fetch(9 * day, "ci", "example.com/old", "v1.0.0", Kind::Zip),
        fetch(9 * day, "ci", "example.com/old", "v1.0.0", Kind::Mod),
        fetch(10 * day, "ci", "example.com/edge", "v1.0.0", Kind::Zip),
        fetch(95 * day, "ci", "example.com/new", "v1.0.0", Kind::Zip),
    ])
    .expect("insert");
    let limits = Limits {
        retention: Some(Duration::from_secs(90 * 86_400)),
        max_records: 1_000,
    };
    let pruned = ix.prune(100 * day, limits).expect("prune");
    assert_eq!(pruned, Pruned { aged: 2, over: 0 });
    assert_eq!(
        listed(&*ix, "ci", 0, i64::MAX),
        ["example.com/edge@v1.0.0", "example.com/new@v1.0.0"]
    );
    // No retention: nothing goes for its age.
    let pruned = ix
        .prune(
            1_000 * day,
            Limits {
                retention: None,
                max_records: 1_000,
            },
        )
        .expect("prune");
    assert_eq!(pruned, Pruned::default());
    assert_eq!(ix.count().expect("count"), 2);
}

/// `max_records` keeps exactly the newest records (by insertion, not by their time), across
/// batches; an emptied store starts again.
pub fn max_records_keeps_exactly_the_newest(open: &Opener) {
    let ix = open();
    let limits = Limits {
        retention: None,
        max_records: 5,
    };
    for batch in 0..4 {
        let rows: Vec<Fetch> = (0..3)
            .map(|i| {
                let n = batch * 3 + i;
                // Times run backwards: the newest insert is kept, not the latest time.
                fetch(
                    1_000 - n,
                    "ci",
                    &format!("example.com/m{n:02}"),
                    "v1.0.0",
                    Kind::Zip,
                )
            })
            .collect();
        ix.insert(&rows).expect("insert");
        let pruned = ix.prune(0, limits).expect("prune");
        assert_eq!(pruned.aged, 0);
        let n = ix.count().expect("count");
        assert_eq!(n, (((batch as u64) + 1) * 3).min(5), "batch {batch}");
    }
    assert_eq!(ix.count().expect("count"), 5);
    assert_eq!(
        listed(&*ix, "ci", 0, i64::MAX),
        [
            "example.com/m07@v1.0.0",
            "example.com/m08@v1.0.0",
            "example.com/m09@v1.0.0",
            "example.com/m10@v1.0.0",
            "example.com/m11@v1.0.0"
        ]
    );
    // Emptied entirely, it starts again and is still bounded.
    let pruned = ix
        .prune(
            i64::MAX,
            Limits {
                retention: Some(Duration::from_millis(1)),
                max_records: 5,
            },
        )
        .expect("prune");
    assert_eq!(pruned, Pruned { aged: 5, over: 0 });
    assert_eq!(ix.count().expect("count"), 0);
    ix.insert(&[fetch(1, "ci", "example.com/again", "v1.0.0", Kind::Zip)])
        .expect("insert");
    assert_eq!(ix.count().expect("count"), 1);
    // max_records 0 keeps nothing.
    let pruned = ix
        .prune(
            0,
            Limits {
                retention: None,
                max_records: 0,
            },
        )
        .expect("prune");
    assert_eq!(pruned, Pruned { aged: 0, over: 1 });
    assert_eq!(ix.count().expect("count"), 0);
}

/// What the writer does with each batch: insert, then prune to the limits, reporting both.
pub fn record_inserts_and_prunes_in_one_call(open: &Opener) {
    let ix = open();
    let day = 86_400_000;
    let limits = Limits {
        retention: Some(Duration::from_secs(2 * 86_400)),
        max_records: 3,
    };
    let pruned = ix
        .record(
            &[
                fetch(day, "ci", "example.com/aged", "v1.0.0", Kind::Zip),
                fetch(9 * day, "ci", "example.com/a", "v1.0.0", Kind::Zip),
            ],
            10 * day,
            limits,
        )
        .expect("record");
    assert_eq!(pruned, Pruned { aged: 1, over: 0 });
    let pruned = ix
        .record(
            &(0..3)
                .map(|i| {
                    fetch(
                        10 * day,
                        "ci",
                        &format!("example.com/b{i}"),
                        "v1.0.0",
                        Kind::Mod,
                    )
                })
                .collect::<Vec<_>>(),
            10 * day,
            limits,
        )
        .expect("record");
    assert_eq!(pruned, Pruned { aged: 0, over: 1 });
    assert_eq!(
        listed(&*ix, "ci", 0, i64::MAX),
        [
            "example.com/b0@v1.0.0",
            "example.com/b1@v1.0.0",
            "example.com/b2@v1.0.0"
        ]
    );
}

/// A batch with an empty or overlong field is refused before the database, and none of it is
/// kept; the next good batch is.
pub fn bad_records_are_refused_and_nothing_of_their_batch_kept(open: &Opener) {
    let ix = open();
    let good = fetch(1, "ci", "example.com/a", "v1.0.0", Kind::Zip);
    let changes: [fn(&mut Fetch); 5] = [
        |f| f.identity.clear(),
        |f| f.source.clear(),
        |f| f.module.clear(),
        |f| f.version.clear(),
        |f| f.module = "m".repeat(4097),
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut bad = good.clone();
        change(&mut bad);
        let err = ix.insert(&[good.clone(), bad]).expect_err("refused");
        assert!(matches!(err, FetchedError::Invalid(_)), "case {i}: {err}");
    }
    assert_eq!(ix.count().expect("count"), 0);
    ix.insert(&[good]).expect("insert");
    ix.insert(&[]).expect("an empty batch");
    assert_eq!(ix.count().expect("count"), 1);
}

/// What one handle wrote, another handle on the same store reads.
pub fn records_persist_across_handles(open: &Opener) {
    {
        let a = open();
        a.insert(&[fetch(1, "ci", "example.com/a", "v1.0.0", Kind::Mod)])
            .expect("insert");
    }
    let b = open();
    assert_eq!(b.count().expect("count"), 1);
    assert_eq!(listed(&*b, "ci", 0, 10), ["example.com/a@v1.0.0"]);
}

/// Eight threads, each with its own handle (opened at once: schema creation races too), write
/// batches at once and prune with a bound none reaches: every record is kept and each
/// thread's identity lists exactly its own versions.
pub fn concurrent_batches_on_separate_handles_are_all_kept(open: &Arc<Opener>) {
    const THREADS: usize = 8;
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 5;
    let barrier = Arc::new(Barrier::new(THREADS));
    let limits = Limits {
        retention: Some(Duration::from_secs(86_400)),
        max_records: 1_000_000,
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (barrier, open) = (Arc::clone(&barrier), Arc::clone(open));
            std::thread::spawn(move || {
                barrier.wait();
                let ix = open();
                barrier.wait();
                for b in 0..BATCHES {
                    let rows: Vec<Fetch> = (0..PER_BATCH)
                        .map(|i| {
                            fetch(
                                1_000 + (b * PER_BATCH + i) as i64,
                                &format!("replica-{t}"),
                                &format!("example.com/t{t}/m{b:02}x{i}"),
                                "v1.0.0",
                                Kind::Zip,
                            )
                        })
                        .collect();
                    if b % 2 == 0 {
                        ix.insert(&rows).expect("insert");
                    } else {
                        ix.record(&rows, 2_000, limits).expect("record");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let ix = open();
    assert_eq!(
        ix.count().expect("count"),
        (THREADS * BATCHES * PER_BATCH) as u64
    );
    for t in 0..THREADS {
        let v = ix
            .query(&query(&format!("replica-{t}"), 0, i64::MAX))
            .expect("query");
        assert_eq!(v.len(), BATCHES * PER_BATCH, "replica-{t}");
        assert!(v
            .iter()
            .all(|v| v.module.starts_with(&format!("example.com/t{t}/"))));
    }
}
