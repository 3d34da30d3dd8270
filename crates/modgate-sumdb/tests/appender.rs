//! The batching appender under concurrency: many callers, one record per module version, few
//! signatures, every waiter answered only once a signed head covers its record; conflicts go to
//! their own waiter; SQLite never runs on the caller's thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use modgate_sumdb::{verify, AppendStats, Appender, AppenderConfig, Error, Log};
use modgate_tlog::note::key_pair_from_seed;
use modgate_tlog::{record_hash, Signer};

fn signer() -> Signer {
    let (skey, _) = key_pair_from_seed("sum.corp.example", &[1; 32]).expect("key");
    Signer::new(&skey).expect("signer")
}

fn h1(s: &str) -> String {
    format!("h1:{}", record_hash(s.as_bytes()))
}

fn show(stats: &AppendStats) -> String {
    format!(
        "{} requests, {} records in {} signed batches ({:.1} records per signature, max {}, \
         last {}), {} already logged, batch p50 {:?} p99 {:?}, wait p50 {:?} p99 {:?}",
        stats.requests,
        stats.records_appended,
        stats.batches,
        stats.records_per_signature(),
        stats.max_batch_records,
        stats.last_batch_records,
        stats.already_logged,
        stats.batch_p50,
        stats.batch_p99,
        stats.wait_p50,
        stats.wait_p99
    )
}

/// `callers` concurrent appends of `versions` distinct versions (caller `k` asks for version
/// `k % versions`); checks every waiter's id is covered by a signed head when it returns.
async fn append_concurrently(
    log: &Arc<Log>,
    appender: &Arc<Appender>,
    callers: u64,
    versions: u64,
) -> HashMap<u64, u64> {
    let start = Arc::new(tokio::sync::Barrier::new(callers as usize));
    let mut tasks = Vec::new();
    for k in 0..callers {
        let (log, appender, start) = (Arc::clone(log), Arc::clone(appender), Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            let v = k % versions;
            let version = format!("v1.0.{v}");
            start.wait().await;
            let id = appender
                .append(
                    "example.com/m",
                    &version,
                    &h1(&format!("zip{v}")),
                    &h1("mod"),
                )
                .await
                .expect("append");
            // When append returns, the record is logged under a committed signed head.
            let found =
                tokio::task::spawn_blocking(move || log.lookup_record("example.com/m", &version))
                    .await
                    .expect("join")
                    .expect("lookup");
            assert_eq!(found.map(|r| r.id), Some(id), "version {v}");
            (v, id)
        }));
    }
    let mut ids: HashMap<u64, u64> = HashMap::new();
    for task in tasks {
        let (v, id) = task.await.expect("task");
        let first = *ids.entry(v).or_insert(id);
        assert_eq!(first, id, "every waiter of version {v} gets the same id");
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_appends_of_a_hundred_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sumdb.db");
    let log = Arc::new(Log::open(&path, signer()).expect("open"));
    let appender =
        Arc::new(Appender::new(log.clone(), AppenderConfig::default()).expect("appender"));
    let ids = append_concurrently(&log, &appender, 1000, 100).await;
    let mut distinct: Vec<u64> = ids.values().copied().collect();
    distinct.sort_unstable();
    assert_eq!(
        distinct,
        (0..100).collect::<Vec<_>>(),
        "each version logged once"
    );
    assert_eq!(log.tree_size().expect("size"), 100);
    let stats = appender.stats();
    eprintln!("1,000 appends of 100 versions: {}", show(&stats));
    assert_eq!(stats.requests, 1000);
    assert_eq!(stats.records_appended, 100);
    assert_eq!(stats.already_logged, 900);
    assert!(stats.batches <= 100, "{}", show(&stats));
    assert!(
        stats.batches < 50,
        "batches should share signatures: {}",
        show(&stats)
    );
    // One head per signed batch, plus the empty tree's.
    let report = verify(&path, log.verifier()).expect("verify");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.heads, stats.batches + 1);
    assert_eq!(
        stats.batch_seconds_buckets.last().map(|b| b.1),
        Some(stats.batches),
        "every batch took under 2.5 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(&dir.path().join("sumdb.db"), signer()).expect("open"));
    let config = AppenderConfig {
        max_batch: 8,
        queue: 1024,
    };
    let appender = Arc::new(Appender::new(log.clone(), config).expect("appender"));
    let ids = append_concurrently(&log, &appender, 200, 200).await;
    assert_eq!(ids.len(), 200);
    let stats = appender.stats();
    assert!(stats.max_batch_records <= 8, "{}", show(&stats));
    assert!(stats.batches >= 25, "{}", show(&stats));
    assert_eq!(stats.records_appended, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_goes_to_its_own_waiter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(&dir.path().join("sumdb.db"), signer()).expect("open"));
    let appender = Appender::new(log.clone(), AppenderConfig::default()).expect("appender");
    let (a, b, c) = tokio::join!(
        appender.append("example.com/m", "v1.0.0", &h1("zip"), &h1("mod")),
        appender.append("example.com/m", "v1.0.0", &h1("other zip"), &h1("mod")),
        appender.append("example.com/n", "v1.0.0", &h1("zip"), &h1("mod")),
    );
    // Whichever came first is logged; the other is refused; the rest is unaffected.
    let (ok, conflict) = match (a, b) {
        (Ok(id), Err(e)) | (Err(e), Ok(id)) => (id, e),
        other => panic!("{other:?}"),
    };
    assert!(matches!(conflict, Error::Conflict { .. }), "{conflict}");
    assert!(c.is_ok());
    assert_eq!(
        log.lookup("example.com/m", "v1.0.0").expect("lookup"),
        Some(ok)
    );
    assert_eq!(appender.stats().conflicts, 1);
    // Invalid input is refused before it is queued.
    assert!(matches!(
        appender
            .append("example.com/m", "1.0.0", &h1("zip"), &h1("mod"))
            .await,
        Err(Error::InvalidEntry { .. })
    ));
}

#[test]
fn sqlite_work_never_runs_on_the_callers_thread() {
    // A runtime of one thread: if the append did its SQLite work there, it would block it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sumdb.db");
    let log = Arc::new(Log::open(&path, signer()).expect("open"));
    let appender =
        Arc::new(Appender::new(log.clone(), AppenderConfig::default()).expect("appender"));
    // Another connection holds the write lock: the append must wait for it.
    let blocker = rusqlite::Connection::open(&path).expect("open");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    rt.block_on(async {
        let task = {
            let appender = Arc::clone(&appender);
            tokio::spawn(async move {
                appender
                    .append("example.com/m", "v1.0.0", &h1("zip"), &h1("mod"))
                    .await
            })
        };
        // Let the append run until it waits; the runtime's only thread must come back here
        // while the write lock is still held.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !task.is_finished(),
            "the append cannot finish while the lock is held"
        );
        let released = Instant::now();
        blocker.execute_batch("COMMIT").expect("unlock");
        let id = task.await.expect("join").expect("append");
        assert_eq!(id, 0);
        assert!(
            released.elapsed().as_secs() < 20,
            "the append waited for its busy timeout"
        );
    });
}

/// Throughput and latency for the docs: `cargo test --release -p modgate-sumdb --test appender
/// -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run with --release --ignored --nocapture"]
async fn measure_batching() {
    for (callers, versions) in [
        (1u64, 1u64),
        (10, 10),
        (100, 100),
        (1000, 1000),
        (5000, 5000),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sumdb.db");
        let log = Arc::new(Log::open(&path, signer()).expect("open"));
        let appender =
            Arc::new(Appender::new(log.clone(), AppenderConfig::default()).expect("appender"));
        let started = Instant::now();
        // Sequential rounds for the one-caller case, so the numbers show a batch of one.
        let rounds = if callers == 1 { 200 } else { 1 };
        for round in 0..rounds {
            let ids = append_concurrently(&log, &appender, callers, versions).await;
            assert_eq!(ids.len() as u64, versions.min(callers));
            if rounds > 1 {
                // The next round appends new versions.
                let v = format!("v2.0.{round}");
                appender
                    .append("example.com/seq", &v, &h1(&v), &h1("mod"))
                    .await
                    .expect("append");
            }
        }
        let took = started.elapsed();
        let stats = appender.stats();
        eprintln!(
            "{callers} concurrent callers x {rounds} rounds: {:.0} records/s; {}",
            stats.records_appended as f64 / took.as_secs_f64(),
            show(&stats)
        );
        assert!(verify(&path, log.verifier()).expect("verify").is_ok());
    }
}
