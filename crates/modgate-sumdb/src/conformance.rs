//! The one test suite every checksum-database store passes (issue 23): the embedded SQLite
//! [`Log`] in this crate's tests and the log a cluster shares in PostgreSQL in
//! `modgate-postgres`'s. The oracle is the embedded log itself: the same batches appended to a
//! fresh [`Log`] must give the same heads (signed notes: Ed25519 signs deterministically), the
//! same records, lookups and tiles, byte for byte. And with several handles appending at once
//! (replicas), the log never forks: every head anyone saw is a head of the one final tree.
//!
//! A run is [`run_all`] with a [`Harness`]: each case gets a new, empty store and opens as many
//! handles on it as it needs, with the signer it names.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use modgate_tlog::note::{key_pair_from_seed, open_tree};
use modgate_tlog::{record_hash, tree_hash, Hash, Signer, Tile};

use crate::store::LogStore;
use crate::{Entry, Error, Log};

/// Opens a new handle on one store, signing with the signer given.
pub type Opener = dyn Fn(Arc<Signer>) -> Result<Arc<dyn LogStore>, Error> + Send + Sync;

/// What a backend gives the suite.
pub trait Harness {
    /// A new, empty store named after the case; the function opens handles on it.
    fn store(&self, case: &str) -> Arc<Opener>;
}

type Case = fn(&Opener);

/// Runs every case against `harness`, each on its own empty store.
pub fn run_all(harness: &dyn Harness) {
    let cases: &[(&str, Case)] = &[
        (
            "a_new_log_has_a_signed_empty_tree",
            a_new_log_has_a_signed_empty_tree,
        ),
        (
            "batches_match_the_embedded_log_byte_for_byte",
            batches_match_the_embedded_log_byte_for_byte,
        ),
        (
            "logged_versions_keep_their_id_and_conflicts_are_refused",
            logged_versions_keep_their_id_and_conflicts_are_refused,
        ),
        (
            "another_key_of_the_same_name_is_refused",
            another_key_of_the_same_name_is_refused,
        ),
        (
            "reads_beyond_the_tree_are_refused",
            reads_beyond_the_tree_are_refused,
        ),
        (
            "concurrent_appenders_on_separate_handles_never_fork_the_log",
            concurrent_appenders_on_separate_handles_never_fork_the_log,
        ),
    ];
    for (name, case) in cases {
        eprintln!("checksum database conformance: {name}");
        case(&*harness.store(name));
    }
}

const NAME: &str = "sum.conformance.example";

fn signer() -> Arc<Signer> {
    let (skey, _) = key_pair_from_seed(NAME, &[5; 32]).unwrap();
    Arc::new(Signer::new(&skey).unwrap())
}

fn other_signer() -> Arc<Signer> {
    let (skey, _) = key_pair_from_seed(NAME, &[6; 32]).unwrap();
    Arc::new(Signer::new(&skey).unwrap())
}

fn h1(seed: &str) -> String {
    format!("h1:{}", record_hash(seed.as_bytes()))
}

/// Entry `i`: seven modules, versions in order.
fn entry(i: u64) -> Entry {
    Entry::new(
        &format!("example.com/m{}", i % 7),
        &format!("v1.{}.0", i / 7),
        &h1(&format!("zip {i}")),
        &h1(&format!("mod {i}")),
    )
    .unwrap()
}

/// The entry of a record's text (`<path> <version> <h1>\n<path> <version>/go.mod <h1>\n`).
fn entry_of(text: &[u8]) -> Entry {
    let text = std::str::from_utf8(text).unwrap();
    let mut lines = text.lines().map(|l| l.split(' ').collect::<Vec<_>>());
    let (zip, module) = (lines.next().unwrap(), lines.next().unwrap());
    Entry::new(zip[0], zip[1], zip[2], module[2]).unwrap()
}

/// A fresh embedded log with the suite's signer, and the directory holding it.
fn reference() -> (Log, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(&dir.path().join("reference.db"), signer()).unwrap();
    (log, dir)
}

/// Every tile of a tree of `size` records at heights 8 (levels 0 to 2 and data), full and
/// partial, as `go` asks for them.
fn tiles_of(size: u64) -> Vec<Tile> {
    let mut tiles = Vec::new();
    for l in 0..3i32 {
        let width = 1u64 << (8 * l);
        let records_per_tile = width << 8;
        let full = size / records_per_tile;
        for n in 0..full {
            tiles.push(Tile { h: 8, l, n, w: 256 });
        }
        let rest = (size % records_per_tile) / width;
        if rest > 0 {
            let w = u32::try_from(rest).unwrap();
            tiles.push(Tile {
                h: 8,
                l,
                n: full,
                w,
            });
        }
    }
    let data: Vec<Tile> = tiles
        .iter()
        .filter(|t| t.l == 0)
        .map(|t| Tile { l: -1, ..*t })
        .collect();
    tiles.extend(data);
    tiles
}

/// Asserts that `store` answers as `reference` does: head, records, lookups, every tile.
fn same_as(store: &dyn LogStore, reference: &Log, entries: &[Entry]) {
    let head = store.head().unwrap();
    assert_eq!(head, reference.head().unwrap(), "heads differ");
    assert_eq!(store.signed_head().unwrap(), head.signed_note);
    assert_eq!(store.tree_size().unwrap(), head.tree.n);
    let n = head.tree.n;
    assert_eq!(
        store.records(0, n).unwrap(),
        reference.records(0, n).unwrap()
    );
    for e in entries {
        let got = store.lookup_record(e.path(), e.version()).unwrap();
        assert_eq!(
            got,
            reference.lookup_record(e.path(), e.version()).unwrap(),
            "lookup of {}@{}",
            e.path(),
            e.version()
        );
        assert_eq!(
            got.map(|r| r.id),
            store.lookup(e.path(), e.version()).unwrap()
        );
    }
    for tile in tiles_of(n) {
        let got = store.tile(&tile).unwrap();
        assert_eq!(got, reference.tile(&tile).unwrap(), "{tile} differs");
        // A second read (from a cache, if the store has one) is the same.
        assert_eq!(store.tile(&tile).unwrap(), got, "{tile} read again differs");
    }
}

fn a_new_log_has_a_signed_empty_tree(open: &Opener) {
    let store = open(signer()).unwrap();
    assert_eq!(store.name(), NAME);
    assert_eq!(store.verifier_key(), signer().verifier().key());
    let head = store.head().unwrap();
    assert_eq!(head.tree.n, 0);
    assert_eq!(
        open_tree(&head.signed_note, store.verifier()).unwrap(),
        head.tree
    );
    let (reference, _dir) = reference();
    same_as(&*store, &reference, &[]);
    // A second handle on the same store sees the same log and signs nothing new.
    let again = open(signer()).unwrap();
    assert_eq!(again.head().unwrap(), head);
}

fn batches_match_the_embedded_log_byte_for_byte(open: &Opener) {
    let store = open(signer()).unwrap();
    let (reference, _dir) = reference();
    let mut all = Vec::new();
    let mut next = 0u64;
    // Sizes that cross full tiles at levels 0 and 1 (256 and 65,536 are beyond a unit test:
    // 600 records make two full level-0 tiles, a partial one and a partial level-1 tile).
    for size in [1u64, 3, 250, 2, 300, 44] {
        let batch: Vec<Entry> = (next..next + size).map(entry).collect();
        next += size;
        let got = store.append(&batch).unwrap();
        let want = reference.append(&batch).unwrap();
        assert_eq!(got.tree_size, want.tree_size);
        assert_eq!(got.new_records, size);
        let ids = |b: &crate::Batch| {
            b.outcomes
                .iter()
                .map(|o| {
                    o.as_ref()
                        .map(|a| (a.id, a.new))
                        .map_err(ToString::to_string)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&got), ids(&want));
        all.extend(batch);
        same_as(&*store, &reference, &all);
    }
    // A handle opened afterwards (a restarted or another replica) reads the same log.
    let again = open(signer()).unwrap();
    same_as(&*again, &reference, &all);
}

fn logged_versions_keep_their_id_and_conflicts_are_refused(open: &Opener) {
    let store = open(signer()).unwrap();
    let first = store.append(&[entry(0), entry(1)]).unwrap();
    assert_eq!(first.new_records, 2);
    let head = store.head().unwrap();

    // Only versions logged before, with the same text: nothing new, nothing signed.
    let again = store.append(&[entry(1), entry(0), entry(1)]).unwrap();
    assert_eq!(again.new_records, 0);
    assert_eq!(again.tree_size, 2);
    let ids: Vec<_> = again
        .outcomes
        .iter()
        .map(|o| o.as_ref().map(|a| (a.id, a.new)).unwrap())
        .collect();
    assert_eq!(ids, [(1, false), (0, false), (1, false)]);
    assert_eq!(store.head().unwrap(), head, "nothing new is signed");

    // Other checksums for a logged version are refused; the rest of the batch goes in, and a
    // version twice in one batch is logged once.
    let forged = Entry::new(
        entry(0).path(),
        entry(0).version(),
        &h1("forged zip"),
        &h1("forged mod"),
    )
    .unwrap();
    let batch = store
        .append(&[entry(2), forged, entry(2), entry(3)])
        .unwrap();
    assert_eq!(batch.new_records, 2);
    assert_eq!(batch.tree_size, 4);
    assert!(matches!(batch.outcomes[0], Ok(a) if a.id == 2 && a.new));
    match &batch.outcomes[1] {
        Err(Error::Conflict {
            path,
            logged,
            offered,
            ..
        }) => {
            assert_eq!(path, entry(0).path());
            assert_eq!(*logged, entry(0).text());
            assert_eq!(*offered, batch_text_of_forged());
        }
        other => panic!("a forged entry gave {other:?}"),
    }
    assert!(matches!(batch.outcomes[2], Ok(a) if a.id == 2 && !a.new));
    assert!(matches!(batch.outcomes[3], Ok(a) if a.id == 3 && a.new));
    let record = store
        .lookup_record(entry(0).path(), entry(0).version())
        .unwrap()
        .unwrap();
    assert_eq!(
        record.text,
        entry(0).text().into_bytes(),
        "the record is unchanged"
    );
    assert_eq!(
        open_tree(&record.signed_head, store.verifier()).unwrap().n,
        4,
        "a lookup carries the latest head"
    );
    assert_eq!(store.lookup("example.com/never", "v1.0.0").unwrap(), None);
}

fn batch_text_of_forged() -> String {
    Entry::new(
        entry(0).path(),
        entry(0).version(),
        &h1("forged zip"),
        &h1("forged mod"),
    )
    .unwrap()
    .text()
}

fn another_key_of_the_same_name_is_refused(open: &Opener) {
    let store = open(signer()).unwrap();
    store.append(&[entry(0)]).unwrap();
    let err = open(other_signer()).expect_err("another key of the same log name");
    assert!(
        matches!(err, Error::WrongLog { .. } | Error::WrongKey { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&signer().verifier().key()),
        "the error names the log's key: {err}"
    );
    // The log is untouched and still opens with its own key.
    assert_eq!(open(signer()).unwrap().tree_size().unwrap(), 1);
}

fn reads_beyond_the_tree_are_refused(open: &Opener) {
    let store = open(signer()).unwrap();
    store
        .append(&(0..3).map(entry).collect::<Vec<_>>())
        .unwrap();
    assert!(matches!(
        store.records(2, 2),
        Err(Error::NotInTree { size: 3, .. })
    ));
    assert!(matches!(
        store.records(u64::MAX, 2),
        Err(Error::NotInTree { .. })
    ));
    assert_eq!(store.records(1, 2).unwrap().len(), 2);
    for (l, n, w) in [(0, 0, 4), (0, 1, 1), (-1, 0, 4), (1, 0, 1)] {
        let tile = Tile { h: 8, l, n, w };
        assert!(
            matches!(store.tile(&tile), Err(Error::NotInTree { size: 3, .. })),
            "{tile}"
        );
    }
}

fn concurrent_appenders_on_separate_handles_never_fork_the_log(open: &Opener) {
    const WRITERS: u64 = 4;
    const BATCHES: u64 = 12;
    const PER_BATCH: u64 = 5;
    // Each writer appends its own entries and, in every batch, one entry another writer also
    // appends: both must get the same id.
    let barrier = Barrier::new(usize::try_from(WRITERS).unwrap() + 1);
    let finished = AtomicU64::new(0);
    let ids: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let seen: Mutex<Vec<(u64, Hash)>> = Mutex::new(Vec::new());
    let first = open(signer()).unwrap();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let store = open(signer()).unwrap();
            let (barrier, ids, finished) = (&barrier, &ids, &finished);
            s.spawn(move || {
                barrier.wait();
                for b in 0..BATCHES {
                    let own = (0..PER_BATCH - 1).map(|k| entry(1000 + (w * BATCHES + b) * 10 + k));
                    let batch: Vec<Entry> = own.chain([entry(b)]).collect();
                    let got = store.append(&batch).unwrap();
                    let mut ids = ids.lock().unwrap();
                    for (e, outcome) in batch.iter().zip(got.outcomes) {
                        let id = outcome.unwrap().id;
                        let key = format!("{}@{}", e.path(), e.version());
                        let known = *ids.entry(key.clone()).or_insert(id);
                        assert_eq!(known, id, "{key} has two ids");
                    }
                }
                finished.fetch_add(1, Ordering::AcqRel);
            });
        }
        // A reader of the latest head while the writers run (bounded: it stops when they are
        // done, or after 100,000 reads).
        barrier.wait();
        for _ in 0..100_000 {
            let head = first.head().unwrap();
            assert_eq!(
                open_tree(&head.signed_note, first.verifier()).unwrap(),
                head.tree
            );
            seen.lock().unwrap().push((head.tree.n, head.tree.hash));
            if finished.load(Ordering::Acquire) == WRITERS {
                break;
            }
        }
    });

    let distinct = WRITERS * BATCHES * (PER_BATCH - 1) + BATCHES;
    let size = first.tree_size().unwrap();
    assert_eq!(size, distinct, "every distinct version logged exactly once");
    assert_eq!(ids.lock().unwrap().len() as u64, distinct);

    // The oracle: the records in id order appended to a fresh embedded log make the same tree;
    // every head seen during the run is that tree's head at its size (no fork).
    let (reference, _dir) = reference();
    let texts = first.records(0, size).unwrap();
    let entries: Vec<Entry> = texts.iter().map(|t| entry_of(t)).collect();
    reference.append(&entries).unwrap();
    assert_eq!(first.head().unwrap().tree, reference.head().unwrap().tree);
    let reader = reference.hash_reader().unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(!seen.is_empty());
    for (n, hash) in seen {
        assert_eq!(
            tree_hash(n, &reader).unwrap(),
            hash,
            "a head of {n} records is not a head of the final tree: the log forked"
        );
    }
    for tile in tiles_of(size) {
        assert_eq!(
            first.tile(&tile).unwrap(),
            reference.tile(&tile).unwrap(),
            "{tile}"
        );
    }
}
