//! Batched appends for async callers. [`Appender::append`] queues the module version and waits;
//! a dedicated thread owns the writing: it takes every request queued (up to the batch bound),
//! appends them as one [`Log::append`] — one transaction, one signature — and answers each
//! waiter once that batch's head is committed. Requests that arrive while a batch commits form
//! the next batch, so under load many records share one signature; alone, a request is a batch
//! of one and waits for nothing but its own commit. The same module version asked for twice
//! (in one batch or later) gets one record and one id. SQLite never runs on the async caller's
//! thread.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::{Entry, Error, LogStore};

/// Upper bounds (seconds) of the batch-latency histogram buckets in [`AppendStats`].
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How many recent latencies the percentiles are computed from.
const RECENT: usize = 4096;

/// Settings of an [`Appender`].
#[derive(Debug, Clone, Copy)]
pub struct AppenderConfig {
    /// Most requests in one batch (one transaction, one signature). Default 1024.
    pub max_batch: usize,
    /// Requests that may wait in the queue before `append` waits to queue. Default 8192.
    pub queue: usize,
}

impl Default for AppenderConfig {
    fn default() -> Self {
        AppenderConfig {
            max_batch: 1024,
            queue: 8192,
        }
    }
}

/// A snapshot of what the appender has done (for Prometheus and for the docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendStats {
    /// Append requests answered.
    pub requests: u64,
    /// Records added to the log.
    pub records_appended: u64,
    /// Requests answered with a record already logged (before, or earlier in the batch).
    pub already_logged: u64,
    /// Requests refused as conflicting with the logged record.
    pub conflicts: u64,
    /// Requests whose batch failed (rolled back).
    pub failed: u64,
    /// Batches that added records: signed heads written.
    pub batches: u64,
    /// Transactions run (batches that added records, and those that found everything logged).
    pub rounds: u64,
    /// The most records one batch added.
    pub max_batch_records: u64,
    /// Records the latest signed batch added.
    pub last_batch_records: u64,
    /// Sum of the durations of the batches that added records (transaction and signature).
    pub batch_seconds_sum: f64,
    /// Cumulative histogram of those durations: `(upper bound in seconds, batches ≤ it)` for
    /// each of [`LATENCY_BUCKETS`].
    pub batch_seconds_buckets: Vec<(f64, u64)>,
    /// Median batch duration of the latest (up to 4,096) signed batches.
    pub batch_p50: Option<Duration>,
    /// 99th percentile of the same.
    pub batch_p99: Option<Duration>,
    /// The tree size after this appender's latest transaction (at start: the log's size then).
    /// With several replicas on one log, the others' appends show at this one's next batch.
    pub tree_size: u64,
    /// Median time from `append` queuing a request to its answer, latest 4,096 requests.
    pub wait_p50: Option<Duration>,
    /// 99th percentile of the same.
    pub wait_p99: Option<Duration>,
}

impl AppendStats {
    /// Records per signature so far (0 before the first batch).
    pub fn records_per_signature(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.records_appended as f64 / self.batches as f64
        }
    }
}

/// A ring of the latest durations.
#[derive(Default)]
struct Recent {
    values: Vec<Duration>,
    next: usize,
}

impl Recent {
    fn push(&mut self, d: Duration) {
        if self.values.len() < RECENT {
            self.values.push(d);
        } else {
            self.values[self.next] = d;
        }
        self.next = (self.next + 1) % RECENT;
    }

    fn percentiles(&self) -> (Option<Duration>, Option<Duration>) {
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        let at = |q: f64| {
            let last = sorted.len().checked_sub(1)?;
            sorted.get(((last as f64) * q).round() as usize).copied()
        };
        (at(0.5), at(0.99))
    }
}

#[derive(Default)]
struct Counters {
    stats: AppendStats,
    buckets: [u64; LATENCY_BUCKETS.len()],
    batch_recent: Recent,
    wait_recent: Recent,
}

struct Job {
    entry: Entry,
    queued: Instant,
    reply: oneshot::Sender<Result<u64, Error>>,
}

/// Appends module versions to a [`Log`] in batches from async code. Dropping it lets the
/// thread finish the queued requests and stop.
pub struct Appender {
    queue: mpsc::Sender<Job>,
    counters: Arc<Mutex<Counters>>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

impl Appender {
    /// Starts the appender's thread for `log`.
    pub fn new(log: Arc<dyn LogStore>, config: AppenderConfig) -> Result<Appender, Error> {
        let (queue, rx) = mpsc::channel(config.queue.max(1));
        let mut start = Counters::default();
        start.stats.tree_size = log.tree_size()?;
        let counters = Arc::new(Mutex::new(start));
        let thread_counters = Arc::clone(&counters);
        let max_batch = config.max_batch.max(1);
        std::thread::Builder::new()
            .name("sumdb-appender".into())
            .spawn(move || run(&*log, rx, max_batch, &thread_counters))
            .map_err(Error::Spawn)?;
        Ok(Appender { queue, counters })
    }

    /// Appends `path@version` with its zip and go.mod `h1:` hashes and returns its record id
    /// once a signed head covering it is committed. A version logged before with the same
    /// hashes returns its id; with other hashes, [`Error::Conflict`]. The input is checked
    /// (and copied) at once: the future borrows only the appender.
    pub fn append(
        &self,
        path: &str,
        version: &str,
        zip_h1: &str,
        mod_h1: &str,
    ) -> impl Future<Output = Result<u64, Error>> + Send + '_ {
        let entry = Entry::new(path, version, zip_h1, mod_h1);
        async move { self.append_entry(entry?).await }
    }

    /// [`Appender::append`] of a checked [`Entry`].
    pub async fn append_entry(&self, entry: Entry) -> Result<u64, Error> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            entry,
            queued: Instant::now(),
            reply,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| Error::AppenderStopped)?;
        answer.await.map_err(|_| Error::AppenderStopped)?
    }

    /// What the appender has done so far.
    pub fn stats(&self) -> AppendStats {
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stats = counters.stats.clone();
        stats.batch_seconds_buckets = LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(counters.buckets.iter().copied())
            .collect();
        (stats.batch_p50, stats.batch_p99) = counters.batch_recent.percentiles();
        (stats.wait_p50, stats.wait_p99) = counters.wait_recent.percentiles();
        stats
    }
}

/// The appender thread: batch, append, answer, until every [`Appender`] handle is gone.
fn run(
    log: &dyn LogStore,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    counters: &Mutex<Counters>,
) {
    // Bounded by the queue's life: it ends when the last sender is dropped.
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let entries: Vec<Entry> = jobs.iter().map(|j| j.entry.clone()).collect();
        let started = Instant::now();
        let result = log.append(&entries);
        let took = started.elapsed();

        let mut c = counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.stats.rounds += 1;
        c.stats.requests += jobs.len() as u64;
        match result {
            Ok(batch) => {
                c.stats.tree_size = batch.tree_size;
                if batch.new_records > 0 {
                    c.stats.batches += 1;
                    c.stats.records_appended += batch.new_records;
                    c.stats.last_batch_records = batch.new_records;
                    c.stats.max_batch_records = c.stats.max_batch_records.max(batch.new_records);
                    c.stats.batch_seconds_sum += took.as_secs_f64();
                    let secs = took.as_secs_f64();
                    for (bound, count) in LATENCY_BUCKETS.iter().zip(c.buckets.iter_mut()) {
                        if secs <= *bound {
                            *count += 1;
                        }
                    }
                    c.batch_recent.push(took);
                }
                for (job, outcome) in jobs.into_iter().zip(batch.outcomes) {
                    match &outcome {
                        Ok(a) if !a.new => c.stats.already_logged += 1,
                        Ok(_) => {}
                        Err(_) => c.stats.conflicts += 1,
                    }
                    c.wait_recent.push(job.queued.elapsed());
                    // A waiter that gave up (dropped its future) needs no answer.
                    let _ = job.reply.send(outcome.map(|a| a.id));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                c.stats.failed += jobs.len() as u64;
                for job in jobs {
                    c.wait_recent.push(job.queued.elapsed());
                    let _ = job.reply.send(Err(Error::BatchFailed(Arc::clone(&e))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_recent_values() {
        let mut r = Recent::default();
        assert_eq!(r.percentiles(), (None, None));
        for ms in 1..=100 {
            r.push(Duration::from_millis(ms));
        }
        let (p50, p99) = r.percentiles();
        assert_eq!(p50, Some(Duration::from_millis(51)));
        assert_eq!(p99, Some(Duration::from_millis(99)));
        for _ in 0..RECENT {
            r.push(Duration::from_millis(7));
        }
        assert_eq!(
            r.percentiles(),
            (
                Some(Duration::from_millis(7)),
                Some(Duration::from_millis(7))
            )
        );
    }
}
