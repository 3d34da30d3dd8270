//! The company checksum database on its two stores (issue 23; `make bench-cluster`, figures in
//! docs/performance.md, "The checksum database of a cluster"): the embedded SQLite log
//! (`synchronous=FULL`) and the cluster's log in a real PostgreSQL 15 started with `fsync` on
//! (as in production), each on this machine's disk. Criterion times:
//!
//! - `append/<store>/<n>`: one batch of `n` new versions (one transaction, one signed head);
//! - `lookup/<store>`: a lookup of a logged version (the record and the latest head);
//! - `partial_tile/<store>`: a partial level-0 hash tile (never cached);
//!
//! and, printed once per store: two handles appending batches of 16 at the same time (two
//! replicas), records per second over `CONCURRENT_BATCHES` batches each.
//!
//! Not a test: it asserts only what it needs to measure (every append succeeds).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use modgate_postgres::{PgLog, PgSettings, Pool};
use modgate_sumdb::{Entry, Log, LogStore, Signer, Tile};
use modgate_testkit::{require_postgres, PgServer};
use modgate_tlog::note::key_pair_from_seed;
use modgate_tlog::record_hash;

/// Batches each of the two concurrent appenders writes.
const CONCURRENT_BATCHES: u64 = 200;

fn signer() -> Arc<Signer> {
    let (skey, _) = key_pair_from_seed("sum.bench.example", &[3; 32]).expect("key");
    Arc::new(Signer::new(&skey).expect("signer"))
}

/// A new version each call (a process-wide counter).
fn entries(n: u64) -> Vec<Entry> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let first = NEXT.fetch_add(n, Ordering::Relaxed);
    (first..first + n)
        .map(|i| {
            let h1 = |s: String| format!("h1:{}", record_hash(s.as_bytes()));
            Entry::new(
                &format!("corp.example.com/m{}", i % 97),
                &format!("v1.0.{i}"),
                &h1(format!("zip {i}")),
                &h1(format!("mod {i}")),
            )
            .expect("entry")
        })
        .collect()
}

/// A store's name and two handles on it (two replicas).
type Handles = (&'static str, Arc<dyn LogStore>, Arc<dyn LogStore>);

struct Stores {
    _pg: PgServer,
    _dir: tempfile::TempDir,
    both: Vec<Handles>,
}

fn stores() -> Stores {
    require_postgres().expect("PostgreSQL 15 (make postgres)");
    let pg = PgServer::start_durable().expect("start PostgreSQL");
    pg.create_db("bench").expect("create database");
    let pool = || {
        let mut s = PgSettings::new(pg.dsn("bench"));
        s.pool_size = 4;
        s.statement_timeout = Duration::from_secs(60);
        Pool::new(&s).expect("pool")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sumdb.sqlite");
    let sqlite: Arc<dyn LogStore> = Arc::new(Log::open(&path, signer()).expect("sqlite log"));
    let sqlite2: Arc<dyn LogStore> = Arc::new(Log::open(&path, signer()).expect("sqlite log"));
    let postgres: Arc<dyn LogStore> =
        Arc::new(PgLog::open(pool(), signer(), 32 << 20).expect("postgres log"));
    let postgres2: Arc<dyn LogStore> =
        Arc::new(PgLog::open(pool(), signer(), 32 << 20).expect("postgres log"));
    // A log of a few thousand records to read from.
    for log in [&sqlite, &postgres] {
        for _ in 0..40 {
            log.append(&entries(100)).expect("append");
        }
    }
    Stores {
        _pg: pg,
        _dir: dir,
        both: vec![
            ("sqlite", sqlite, sqlite2),
            ("postgres", postgres, postgres2),
        ],
    }
}

fn two_appenders(name: &str, a: &Arc<dyn LogStore>, b: &Arc<dyn LogStore>) {
    let started = Instant::now();
    std::thread::scope(|s| {
        for log in [a, b] {
            s.spawn(move || {
                for _ in 0..CONCURRENT_BATCHES {
                    log.append(&entries(16)).expect("append");
                }
            });
        }
    });
    let took = started.elapsed().as_secs_f64();
    let records = 2 * CONCURRENT_BATCHES * 16;
    println!(
        "two appenders at once on {name}: {records} records in {took:.2} s, {:.0} records/s, \
         {:.0} signed heads/s",
        records as f64 / took,
        (2 * CONCURRENT_BATCHES) as f64 / took
    );
}

fn bench(c: &mut Criterion) {
    let stores = stores();
    for (name, log, other) in &stores.both {
        two_appenders(name, log, other);
    }
    let mut group = c.benchmark_group("append");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    for (name, log, _) in &stores.both {
        for n in [1u64, 64] {
            group.bench_with_input(BenchmarkId::new(*name, n), &n, |b, &n| {
                b.iter(|| log.append(&entries(n)).expect("append"));
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("read");
    for (name, log, _) in &stores.both {
        let known = entries(1).remove(0);
        log.append(std::slice::from_ref(&known)).expect("append");
        group.bench_function(BenchmarkId::new("lookup", *name), |b| {
            b.iter(|| black_box(log.lookup_record(known.path(), known.version())).expect("lookup"));
        });
        let mut size = log.tree_size().expect("size");
        if size % 256 == 0 {
            // A partial tile needs a tree that does not end on a tile's edge.
            log.append(&entries(1)).expect("append");
            size += 1;
        }
        let w = u32::try_from(size % 256).expect("width");
        let tile = Tile {
            h: 8,
            l: 0,
            n: size / 256,
            w,
        };
        group.bench_function(BenchmarkId::new("partial_tile", *name), |b| {
            b.iter(|| black_box(log.tile(&tile)).expect("tile"));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
