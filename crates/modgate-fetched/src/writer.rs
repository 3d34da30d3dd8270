//! The background writer of the fetched index: requests hand a [`Served`] record to
//! [`Writer::submit`], which never blocks (a bounded channel; when it is full the record is
//! dropped, counted as lost and logged); one thread takes them in batches, looks up the
//! ledger's hashes for each (through the lookup it was given), and records each batch and
//! prunes the index to its [`Limits`] ([`FetchStore::record`]). The limits can be changed while
//! it runs ([`Writer::set_limits`], a reload); [`Writer::shutdown`] writes what is queued and
//! stops the thread.
//!
//! When the store fails (the shared database is away), the batch is dropped and counted as
//! `failed`, the first failure and then every power of two are logged naming the store, and the
//! thread goes on with the next batch: it never stops and never panics for a store's error; a
//! recovery is logged once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::index::{now_ms, Fetch, Hashes, Kind, Limits};
use crate::store::FetchStore;

/// Most records written in one transaction.
const MAX_BATCH: usize = 512;

/// How often the thread looks whether it was asked to stop while the channel is idle.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// One artifact served whole, as the request path knows it (the hashes are looked up by the
/// writer, off the request path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// When the transfer ended (Unix milliseconds).
    pub at_ms: i64,
    /// The identity's name.
    pub identity: String,
    /// How it was established.
    pub source: String,
    /// Module path.
    pub module: String,
    /// Exact version.
    pub version: String,
    /// Which artifact.
    pub kind: Kind,
}

/// Looks up the ledger's hashes of an artifact (module, version, kind).
pub type HashLookup = Box<dyn Fn(&str, &str, Kind) -> Option<Hashes> + Send>;

/// Told of each count as it changes: `("written" | "lost" | "failed" | "pruned", n)`.
pub type Observer = Arc<dyn Fn(&'static str, u64) + Send + Sync>;

/// Totals since the writer started.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records written to the index.
    pub written: AtomicU64,
    /// Records dropped because the channel was full (or the writer had stopped).
    pub lost: AtomicU64,
    /// Records whose batch could not be written (the database failed).
    pub failed: AtomicU64,
    /// Rows removed by retention or `max_records`.
    pub pruned: AtomicU64,
}

/// The handle requests submit to.
pub struct Writer {
    store: Arc<dyn FetchStore>,
    tx: SyncSender<Served>,
    limits: Arc<Mutex<Limits>>,
    stats: Arc<WriterStats>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    observer: Observer,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer thread on `store`, with a channel of `capacity` records.
    pub fn start(
        store: Arc<dyn FetchStore>,
        limits: Limits,
        capacity: usize,
        lookup: HashLookup,
        observer: Observer,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let limits = Arc::new(Mutex::new(limits));
        let stats = Arc::new(WriterStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (index, limits, stats, stop, observer) = (
                store.clone(),
                limits.clone(),
                stats.clone(),
                stop.clone(),
                observer.clone(),
            );
            std::thread::Builder::new()
                .name("modgate-fetched".into())
                .spawn(move || run(index, rx, limits, stats, stop, lookup, observer))?
        };
        Ok(Writer {
            store,
            tx,
            limits,
            stats,
            stop,
            thread: Mutex::new(Some(thread)),
            observer,
        })
    }

    /// Hands a record to the writer without waiting: `false` when it was dropped (the
    /// channel is full or the writer stopped), which is counted and logged.
    pub fn submit(&self, served: Served) -> bool {
        match self.tx.try_send(served) {
            Ok(()) => true,
            Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => {
                let n = self.stats.lost.fetch_add(1, Ordering::Relaxed) + 1;
                (self.observer)("lost", 1);
                // The first loss and then every power of two: a flood does not flood the log.
                if n.is_power_of_two() {
                    log::warn!(
                        "fetched: record of {}@{} (.{}) for {} dropped: the index writer is \
                         behind ({n} lost so far; see modgate_fetched_records_total)",
                        s.module,
                        s.version,
                        s.kind.as_str(),
                        s.identity
                    );
                }
                false
            }
        }
    }

    /// The store it writes to (queries may share it).
    pub fn store(&self) -> &Arc<dyn FetchStore> {
        &self.store
    }

    /// The limits from now on (a reload).
    pub fn set_limits(&self, limits: Limits) {
        *self
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        *self
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The totals so far.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Writes what is queued, then stops the thread (later records are counted as lost).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            if t.join().is_err() {
                log::error!("fetched: the index writer thread panicked");
            }
        }
    }
}

fn run(
    index: Arc<dyn FetchStore>,
    rx: Receiver<Served>,
    limits: Arc<Mutex<Limits>>,
    stats: Arc<WriterStats>,
    stop: Arc<AtomicBool>,
    lookup: HashLookup,
    observer: Observer,
) {
    let mut batch: Vec<Served> = Vec::with_capacity(MAX_BATCH);
    // Batches failed in a row (logged at the first and every power of two).
    let mut failing: u64 = 0;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if batch.is_empty() {
            match rx.recv_timeout(IDLE_POLL) {
                Ok(s) => batch.push(s),
                Err(RecvTimeoutError::Timeout) if !stopping => continue,
                Err(_) => return,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let fetches: Vec<Fetch> = batch
            .drain(..)
            .map(|s| {
                let hashes = lookup(&s.module, &s.version, s.kind);
                Fetch {
                    at_ms: s.at_ms,
                    identity: s.identity,
                    source: s.source,
                    module: s.module,
                    version: s.version,
                    kind: s.kind,
                    hashes,
                }
            })
            .collect();
        let n = fetches.len() as u64;
        let now = now_ms();
        let l = *limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match index.record(&fetches, now, l) {
            Ok(p) => {
                if failing > 0 {
                    log::info!(
                        "fetched: {} writable again after {failing} failed batch(es)",
                        index.describe()
                    );
                    failing = 0;
                }
                stats.written.fetch_add(n, Ordering::Relaxed);
                observer("written", n);
                let gone = p.aged + p.over;
                if gone > 0 {
                    stats.pruned.fetch_add(gone, Ordering::Relaxed);
                    observer("pruned", gone);
                }
            }
            Err(e) => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
                observer("failed", n);
                failing += 1;
                if failing.is_power_of_two() {
                    log::error!(
                        "fetched: {n} record(s) not written ({failing} failed batch(es) in a \
                         row; see modgate_fetched_records_total{{outcome=\"failed\"}}): {e}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{FetchIndex, IdentityFilter, Query};

    fn served(i: usize, who: &str) -> Served {
        Served {
            at_ms: 1_000 + i as i64,
            identity: who.into(),
            source: "basic".into(),
            module: format!("example.com/m{i}"),
            version: "v1.0.0".into(),
            kind: if i.is_multiple_of(2) {
                Kind::Zip
            } else {
                Kind::Mod
            },
        }
    }

    fn no_observer() -> Observer {
        Arc::new(|_, _| {})
    }

    #[test]
    fn records_are_written_with_the_ledger_hashes_and_kept_after_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fetched.sqlite");
        let limits = Limits {
            retention: None,
            max_records: 1_000,
        };
        let lookup: HashLookup = Box::new(|m, v, k| {
            (m != "example.com/m3").then(|| Hashes {
                sha256: "ab".repeat(32),
                h1: Some(format!("h1:{m}@{v}.{}", k.as_str())),
            })
        });
        let w = Writer::start(
            Arc::new(FetchIndex::open(&path).expect("open")),
            limits,
            64,
            lookup,
            no_observer(),
        )
        .expect("start");
        for i in 0..10 {
            assert!(w.submit(served(i, "ci")));
        }
        w.shutdown();
        assert_eq!(w.stats().written.load(Ordering::Relaxed), 10);
        // After the thread stopped, records are refused and counted, never block.
        assert!(!w.submit(served(99, "ci")));
        assert_eq!(w.stats().lost.load(Ordering::Relaxed), 1);
        let ix = FetchIndex::open_existing(&path).expect("reopen");
        let v = ix
            .query(&Query {
                identity: IdentityFilter::parse("ci").expect("id"),
                since_ms: 0,
                until_ms: i64::MAX,
            })
            .expect("query");
        assert_eq!(v.len(), 10);
        let m0 = v.iter().find(|v| v.module == "example.com/m0").expect("m0");
        assert_eq!(
            m0.zip.iter().next().and_then(|h| h.h1.as_deref()),
            Some("h1:example.com/m0@v1.0.0.zip")
        );
        let m3 = v.iter().find(|v| v.module == "example.com/m3").expect("m3");
        assert!(m3.mod_fetched && m3.module_file.is_empty());
    }

    #[test]
    fn a_full_channel_drops_and_counts_instead_of_blocking() {
        // The lookup holds the writer thread until the test lets it go, so the channel
        // fills up: submit must return at once, counting each record it could not queue.
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let entered_tx = Mutex::new(entered_tx);
        let lookup: HashLookup = Box::new(move |_, _, _| {
            let _ = entered_tx.lock().map(|t| t.send(()));
            let _ = release_rx
                .lock()
                .map(|r| r.recv_timeout(Duration::from_secs(30)));
            None
        });
        let lost_seen = Arc::new(AtomicU64::new(0));
        let observer: Observer = {
            let lost_seen = lost_seen.clone();
            Arc::new(move |what, n| {
                if what == "lost" {
                    lost_seen.fetch_add(n, Ordering::Relaxed);
                }
            })
        };
        let w = Writer::start(
            Arc::new(FetchIndex::open_in_memory().expect("open")),
            Limits {
                retention: None,
                max_records: 100,
            },
            2,
            lookup,
            observer,
        )
        .expect("start");
        assert!(w.submit(served(0, "ci")));
        // The writer took the first record and is held in its lookup.
        entered_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("writer started");
        assert!(w.submit(served(1, "ci")));
        assert!(w.submit(served(2, "ci")));
        let started = std::time::Instant::now();
        assert!(!w.submit(served(3, "ci")), "the channel is full");
        assert!(!w.submit(served(4, "ci")));
        assert!(started.elapsed() < Duration::from_secs(5), "submit waited");
        assert_eq!(w.stats().lost.load(Ordering::Relaxed), 2);
        assert_eq!(lost_seen.load(Ordering::Relaxed), 2);
        for _ in 0..3 {
            let _ = release_tx.send(());
        }
        w.shutdown();
        assert_eq!(w.stats().written.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn limits_changed_while_running_apply_to_the_next_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fetched.sqlite");
        let w = Writer::start(
            Arc::new(FetchIndex::open(&path).expect("open")),
            Limits {
                retention: None,
                max_records: 100,
            },
            64,
            Box::new(|_, _, _| None),
            no_observer(),
        )
        .expect("start");
        w.set_limits(Limits {
            retention: None,
            max_records: 3,
        });
        for i in 0..8 {
            assert!(w.submit(served(i, "ci")));
        }
        w.shutdown();
        let ix = FetchIndex::open_existing(&path).expect("reopen");
        assert_eq!(ix.count().expect("count"), 3);
        assert_eq!(w.stats().pruned.load(Ordering::Relaxed), 5);
    }

    /// A store that fails while `down` is set (a shared database that is away).
    #[derive(Debug)]
    struct Flaky {
        inner: FetchIndex,
        down: AtomicBool,
        calls: AtomicU64,
    }

    impl FetchStore for Flaky {
        fn insert(&self, fetches: &[Fetch]) -> Result<(), crate::FetchedError> {
            self.inner.insert(fetches)
        }
        fn prune(&self, now_ms: i64, limits: Limits) -> Result<crate::Pruned, crate::FetchedError> {
            self.inner.prune(now_ms, limits)
        }
        fn record(
            &self,
            fetches: &[Fetch],
            now_ms: i64,
            limits: Limits,
        ) -> Result<crate::Pruned, crate::FetchedError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(crate::FetchedError::Store {
                    store: self.describe(),
                    what: "inserting fetches",
                    detail: "connection refused".into(),
                });
            }
            self.inner.record(fetches, now_ms, limits)
        }
        fn count(&self) -> Result<u64, crate::FetchedError> {
            self.inner.count()
        }
        fn query(&self, q: &Query) -> Result<Vec<crate::VersionFetched>, crate::FetchedError> {
            self.inner.query(q)
        }
        fn describe(&self) -> String {
            "PostgreSQL 127.0.0.1:1/test".into()
        }
    }

    /// Waits (bounded) until `f` holds.
    fn wait(what: &str, f: impl Fn() -> bool) {
        for _ in 0..600 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn a_failing_store_drops_and_counts_its_batches_and_the_writer_goes_on() {
        let store = Arc::new(Flaky {
            inner: FetchIndex::open_in_memory().expect("open"),
            down: AtomicBool::new(true),
            calls: AtomicU64::new(0),
        });
        let w = Writer::start(
            store.clone(),
            Limits {
                retention: None,
                max_records: 100,
            },
            64,
            Box::new(|_, _, _| None),
            no_observer(),
        )
        .expect("start");
        assert!(w.submit(served(0, "ci")));
        wait("the failed batch", || {
            w.stats().failed.load(Ordering::Relaxed) == 1
        });
        assert!(w.submit(served(1, "ci")));
        wait("the second failed batch", || {
            w.stats().failed.load(Ordering::Relaxed) == 2
        });
        store.down.store(false, Ordering::SeqCst);
        assert!(w.submit(served(2, "ci")));
        wait("the written batch", || {
            w.stats().written.load(Ordering::Relaxed) == 1
        });
        w.shutdown();
        assert_eq!(w.stats().failed.load(Ordering::Relaxed), 2);
        assert_eq!(w.stats().lost.load(Ordering::Relaxed), 0);
        assert_eq!(
            store.count().expect("count"),
            1,
            "only the batch after recovery"
        );
        assert_eq!(w.store().describe(), "PostgreSQL 127.0.0.1:1/test");
    }
}
