//! Answers read while batches are appended: every `/latest` head read has all its tiles served,
//! and every lookup answer's head covers its record. Plus a measurement of answer latencies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use modgate_sumdb::{answer, Answer, Entry, Log, Response};
use modgate_tlog::note::{key_pair_from_seed, open_tree};
use modgate_tlog::{new_tiles, parse_record, record_hash, Signer, Tree};

fn signer() -> Signer {
    let (skey, _) = key_pair_from_seed("sum.corp.example", &[1; 32]).expect("key");
    Signer::new(&skey).expect("signer")
}

fn entry(i: u64) -> Entry {
    let h = |s: String| format!("h1:{}", record_hash(s.as_bytes()));
    Entry::new(
        &format!("example.com/m{}", i % 100),
        &format!("v1.{}.0", i / 100),
        &h(format!("zip {i}")),
        &h(format!("mod {i}")),
    )
    .expect("entry")
}

fn ok(log: &Log, path: &str) -> Response {
    match answer(log, path) {
        Answer::Response(r) if r.status == 200 => r,
        other => panic!("{path}: {other:?}"),
    }
}

#[test]
fn reads_during_appends_see_only_servable_heads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(&dir.path().join("sumdb.db"), signer()).expect("open"));
    let verifier = log.verifier().clone();
    let done = Arc::new(AtomicBool::new(false));
    let total = 1500u64;
    let writer = {
        let (log, done) = (Arc::clone(&log), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut next = 0;
            let mut size = 1;
            while next < total {
                let end = (next + size).min(total);
                let entries: Vec<Entry> = (next..end).map(entry).collect();
                log.append(&entries).expect("append");
                next = end;
                size = size % 61 + 7;
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (log, done, verifier) = (Arc::clone(&log), Arc::clone(&done), verifier.clone());
            std::thread::spawn(move || {
                let mut checked = 0u64;
                let mut last = Tree {
                    n: 0,
                    hash: Default::default(),
                };
                // Until the writer is done, and at most 100,000 rounds.
                for round in 0..100_000u64 {
                    let finished = done.load(Ordering::SeqCst);
                    let head = ok(&log, "/latest");
                    let tree = open_tree(&head.body, &verifier).expect("head verifies");
                    assert!(tree.n >= last.n, "heads never go back");
                    last = tree;
                    for t in new_tiles(8, 0, tree.n) {
                        ok(&log, &format!("/{}", t.path()));
                    }
                    if tree.n > 0 {
                        let i = (round * 7 + r) % tree.n;
                        let e = entry(i);
                        let found = ok(&log, &format!("/lookup/{}@{}", e.path(), e.version()));
                        let (id, text, signed) = parse_record(&found.body).expect("record");
                        assert_eq!((id, text), (i, e.text().as_bytes()));
                        let covering = open_tree(signed, &verifier).expect("head verifies");
                        assert!(covering.n > id, "the lookup's head covers its record");
                    }
                    checked += 1;
                    if finished {
                        break;
                    }
                }
                checked
            })
        })
        .collect();
    writer.join().expect("writer");
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    assert_eq!(log.tree_size().expect("size"), total);
}

/// Answer latencies for the docs: `cargo test --release -p modgate-sumdb --test answers --
/// --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run with --release --ignored --nocapture"]
fn measure_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(&dir.path().join("sumdb.db"), signer()).expect("open");
    let n = 100_000u64;
    let started = Instant::now();
    let entries: Vec<Entry> = (0..n).map(entry).collect();
    for chunk in entries.chunks(1000) {
        log.append(chunk).expect("append");
    }
    eprintln!(
        "appended {n} records in batches of 1,000: {:?}",
        started.elapsed()
    );
    let time = |what: &str, paths: &[String]| {
        let started = Instant::now();
        for p in paths {
            ok(&log, p);
        }
        eprintln!(
            "{what}: {:.1} µs per answer ({} answers)",
            started.elapsed().as_secs_f64() * 1e6 / paths.len() as f64,
            paths.len()
        );
    };
    let k = 5000u64;
    time("/latest", &vec!["/latest".to_string(); k as usize]);
    let lookups: Vec<String> = (0..k)
        .map(|i| {
            let e = &entries[((i * 7919) % n) as usize];
            format!("/lookup/{}@{}", e.path(), e.version())
        })
        .collect();
    time("/lookup", &lookups);
    let full: Vec<String> = (0..k)
        .map(|i| format!("/tile/8/0/{:03}", i % 390))
        .collect();
    time("full level-0 tiles, first read then cached", &full);
    time("full level-0 tiles, cached", &full);
    let partial: Vec<String> = (0..k)
        .map(|i| format!("/tile/8/0/{:03}.p/{}", i % 390, 1 + i % 255))
        .collect();
    time("partial level-0 tiles (database)", &partial);
    let data: Vec<String> = (0..k)
        .map(|i| format!("/tile/8/data/{:03}.p/{}", i % 390, 1 + i % 255))
        .collect();
    time("partial data tiles (database)", &data);
    let stats = log.tile_cache_stats();
    eprintln!("tile cache: {stats:?}");
}
