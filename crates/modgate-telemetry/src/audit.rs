//! The audit log: one JSON line per request decision (and per administrative event such as a
//! cache purge), written by a single background thread so that request handling never waits
//! on disk I/O, and never wakes that thread per record.
//!
//! Design (issue 11: the previous channel send and futex wake per record cost about 3 context
//! switches and 7 µs of CPU per record on one core, now 0.04 and 2 µs; see
//! docs/performance.md):
//! - [`AuditLog::record`] serializes the record on the caller's thread straight into that
//!   thread's own buffer (one buffer per thread and log, registered once in the log's registry
//!   of buffers and kept by it after the thread exits). A line is appended whole under the
//!   buffer's (uncontended) lock, so lines are never torn or interleaved, and one thread's
//!   records stay in the order it logged them (a request is handled by one thread at a time, so
//!   its record is ordered too).
//! - A buffer that reaches [`BATCH_BYTES`] is handed to the writer as one batch: pushed on an
//!   ordered queue, with a condvar signal only if the writer is waiting. The first record put
//!   into an empty buffer arms a timer (one atomic flag; the writer is signalled only when it
//!   was not already armed). The timer is rate-limited on its leading edge: the writer takes
//!   every registered buffer's partial contents itself at once if it last did so at least
//!   [`FLUSH_INTERVAL`] ago, else when that interval has passed. So a quiet gateway's lines
//!   land as promptly as before (one wake per record is free at that rate), and a busy one
//!   wakes the writer once per batch and at most twice per interval, whatever the request
//!   rate.
//! - Every hand-over (full buffer, timer, reopen, shutdown) takes a buffer's contents and
//!   queues them while holding that buffer's lock, and the writer writes the queue in order:
//!   this is what keeps each thread's lines in order across batches.
//! - The call never blocks on I/O and never drops a record itself; the price is that a writer slower
//!   than the request rate grows memory until it catches up (the queue is unbounded).
//! - [`AuditLog::reopen`] (SIGHUP after logrotate) hands every thread's buffer over, then asks
//!   the writer to close and reopen the file by path in append mode, creating it with mode
//!   `0640` (minus the process umask) when missing. If the reopen fails, the error is logged
//!   and the old handle is kept.
//! - [`AuditLog::shutdown`] refuses further records, hands every thread's buffer over (those
//!   of live threads such as tokio workers as well as those of threads that have exited),
//!   writes the queue, flushes, fsyncs and joins the thread; it is idempotent, and dropping
//!   the last handle does the same.
//!
//! Guarantees: a record for which `record` returned `Ok` before `shutdown` returns (or was
//! called, for records on the calling thread) is written and fsynced by the time `shutdown`
//! returns; a record that races with `shutdown` is either written or refused with
//! [`AuditError::Closed`], never silently lost. A process crash (abort, SIGKILL) loses the
//! records of the last [`FLUSH_INTERVAL`] or so (still in thread buffers) plus any batch the
//! writer had not yet written; nothing is fsynced before shutdown, so a machine crash loses
//! what the kernel had not written back, as before. Lines go to standard output in the same
//! batches.
//!
//! A sink that fails (disk full, …) does not stop the gateway: the records the writer cannot
//! write are lost and counted ([`AuditLog::lost_records`], [`AuditOptions::on_lost`]), and
//! [`AuditLog::writable`] is false until a write succeeds again, so a caller that must refuse
//! what it cannot audit can (modgate's `audit.fail_mode: closed`). Each write of the
//! writer's batch is checked: a write that stops part-way through a line never leaves that
//! partial line behind (a file is cut back to its last whole line; on standard output, which
//! cannot be cut, the rest of the line is written first when writes work again), so once space
//! returns every line of the file is still one whole JSON record. The failure is logged once
//! when it starts, then at most every [`FAILURE_LOG_INTERVAL`] with the records lost since,
//! and once when writes recover.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The outcome of a request as recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDecision {
    /// The request was allowed by policy.
    Allow,
    /// The request was denied by policy.
    Deny,
    /// The request failed (upstream or internal error). This is also the default, so a record
    /// whose decision was never set cannot read as an allow.
    #[default]
    Error,
    /// The client could not be authenticated.
    Unauthenticated,
}

impl AuditDecision {
    /// The serialized name (`"allow"`, `"deny"`, `"error"`, `"unauthenticated"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allow => "allow",
            AuditDecision::Deny => "deny",
            AuditDecision::Error => "error",
            AuditDecision::Unauthenticated => "unauthenticated",
        }
    }
}

/// Who made the request, as established by the identity layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditIdentity {
    /// How the identity was established (e.g. `"mtls"`, `"basic"`, `"bearer"`, `"anonymous"`).
    pub source: String,
    /// The principal name.
    pub name: String,
    /// Client certificate subject DN, for mTLS identities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dn: Option<String>,
    /// Client certificate SHA-256 fingerprint, for mTLS identities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Client certificate serial number, for mTLS identities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Every principal the request presented when there was more than one (a certificate
    /// and a password or token), as `<source>:<name>`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Which of `principals` the deciding rule's role was granted through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
}

/// One audit-log line. Serialized as a single JSON object; `None` fields are omitted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC timestamp with milliseconds (see [`rfc3339_millis`]).
    pub ts: String,
    /// W3C trace id (32 lowercase hex digits).
    pub trace_id: String,
    /// Name of the listener that accepted the request.
    pub listener: String,
    /// Client socket address.
    pub client_addr: String,
    /// The authenticated (or anonymous) identity.
    pub identity: AuditIdentity,
    /// Roles granted to the identity (shared with the access decision, not copied).
    pub roles: std::sync::Arc<[String]>,
    /// HTTP method.
    pub method: String,
    /// The raw request target.
    pub path: String,
    /// Module path, when the request addressed a module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Module version, when the request addressed a version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind of GOPROXY request (`list`, `info`, `mod`, `zip`, `latest`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the route that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The decision.
    pub decision: AuditDecision,
    /// The policy rule that decided, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Human-readable reason for a deny or error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    /// The answer was cut before its end (the upstream or the client went away mid-body):
    /// `status` is what the client was told first, `bytes` what it got, `reason` why.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// Total request duration in milliseconds.
    pub duration_ms: f64,
    /// Upstream the request was forwarded to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Cache outcome (`"miss"`, `"hit"`, `"stale"`, `"none"`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// For non-request audit events (e.g. `"cache-purge"`): the event name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Advisories of the vulnerability policy that count against the version (it was denied
    /// for them, or let through in report mode).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<String>,
    /// Report mode: what the version would have been denied for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_deny: Option<String>,
    /// Versions left out of a `list` or `@latest` answer: `version (IDs)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<String>,
    /// Waivers that kept an advisory from counting: `ID: reason (until date)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waived: Vec<String>,
}

impl AuditRecord {
    /// An empty record stamped with `t` (all other fields default).
    pub fn at(t: SystemTime) -> AuditRecord {
        AuditRecord {
            ts: rfc3339_millis(t),
            ..AuditRecord::default()
        }
    }

    /// An empty record stamped with the current time.
    pub fn now() -> AuditRecord {
        AuditRecord::at(SystemTime::now())
    }
}

/// Formats `t` as RFC 3339 UTC with millisecond precision, e.g. `2026-11-21T10:00:00.123Z`.
/// Times before the Unix epoch are clamped to the epoch, times past jiff's last civil
/// instant (9999-12-31T23:59:59.999) to that instant.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (dt, millis) = match utc_civil(d.as_secs()) {
        Some(dt) => (dt, d.subsec_millis()),
        None => (jiff::civil::DateTime::MAX, 999),
    };
    // Digits written in place: `format!` with seven arguments cost about 0.25 µs per record.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    for (range, v) in [
        (0..4, i32::from(dt.year())),
        (5..7, i32::from(dt.month())),
        (8..10, i32::from(dt.day())),
        (11..13, i32::from(dt.hour())),
        (14..16, i32::from(dt.minute())),
        (17..19, i32::from(dt.second())),
        (20..23, i32::try_from(millis).unwrap_or(0)),
    ] {
        // Every field is non-negative here: the year is 1970..=9999.
        let mut v = v.unsigned_abs();
        for d in b[range].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    b.iter().map(|&c| char::from(c)).collect()
}

/// Unix seconds → the UTC civil date and time (jiff's proleptic Gregorian calendar);
/// `None` past 9999-12-31T23:59:59. A `civil::DateTime` rather than a `Timestamp`: the
/// timestamp range stops a day short of 9999-12-31 (it leaves room for any offset).
fn utc_civil(secs: u64) -> Option<jiff::civil::DateTime> {
    const EPOCH: jiff::civil::DateTime = jiff::civil::DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
    let secs = i64::try_from(secs).ok()?;
    EPOCH
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .ok()
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSinkConfig {
    /// Standard output (one line per record; `reopen` is a no-op).
    Stdout,
    /// A file, opened in append mode and created with mode `0640` if missing.
    File(PathBuf),
    /// No audit log: `record` does nothing.
    Off,
}

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file could not be opened.
    #[error("cannot open audit log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(io::Error),
    /// A record could not be serialized.
    #[error("cannot serialize an audit record: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The log has been shut down; the record was not written.
    #[error("the audit log is shut down")]
    Closed,
    /// The final flush / fsync failed.
    #[error("audit log flush failed: {0}")]
    Flush(io::Error),
    /// The writer thread panicked.
    #[error("the audit writer thread panicked")]
    WriterPanicked,
}

/// Called with the number of records just lost (the sink failed to take them).
pub type LostHook = Arc<dyn Fn(u64) + Send + Sync>;

/// How the log behaves when its sink fails.
#[derive(Clone, Default)]
pub struct AuditOptions {
    /// The caller refuses requests while records cannot be written (`fail_mode: closed`);
    /// the log says so when writes fail. Otherwise requests go on and their records are lost.
    pub fail_closed: bool,
    /// Told of every lost record (e.g. to count them in a metric).
    pub on_lost: Option<LostHook>,
}

impl std::fmt::Debug for AuditOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditOptions")
            .field("fail_closed", &self.fail_closed)
            .field("on_lost", &self.on_lost.is_some())
            .finish()
    }
}

/// A thread's buffer is handed to the writer as one batch once it holds this many bytes.
pub const BATCH_BYTES: usize = 32 * 1024;

/// The writer takes the threads' partial buffers at most once per interval: the first record
/// after a quiet interval is taken at once, later ones at the end of the interval. So a record
/// waits in its thread's buffer at most this long (plus the writer's scheduling delay), and
/// under load the writer is woken for the timer at most twice per interval.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Capacity of a fresh thread buffer: a batch plus room for the record that crosses the mark.
const BUFFER_CAPACITY: usize = BATCH_BYTES + BATCH_BYTES / 4;

/// Written batches kept for reuse as thread buffers (no larger than four batches each).
const SPARE_BUFFERS: usize = 16;

/// Tells logs apart in the per-thread buffer table.
static NEXT_LOG_ID: AtomicU64 = AtomicU64::new(1);

enum Msg {
    Batch(Vec<u8>),
    Reopen,
    Shutdown,
}

/// One thread's pending lines for one log (whole lines only).
struct ThreadBuf {
    lines: Mutex<Vec<u8>>,
}

/// What the writer is given, in order.
#[derive(Default)]
struct Queue {
    msgs: VecDeque<Msg>,
    /// Written batches, emptied, to replace handed-over buffers.
    spare: Vec<Vec<u8>>,
    /// The writer is blocked on [`Shared::wake`] (so a hand-over must signal it).
    waiting: bool,
}

/// State shared by the handles, the per-thread buffers and the writer thread.
struct Shared {
    id: u64,
    /// Set by `shutdown` (and when the writer exits): records are refused from then on.
    closed: AtomicBool,
    /// Some buffer holds lines and the writer has been told (or will see) that the timer is
    /// due; cleared by the writer just before it takes every buffer.
    armed: AtomicBool,
    /// Every thread buffer of this log, kept after its thread exits until it is empty.
    buffers: Mutex<Vec<Arc<ThreadBuf>>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The last write to the sink failed (set and cleared by the writer).
    failing: AtomicBool,
    /// Records that could not be written.
    lost: AtomicU64,
    /// Told each time records are lost, with how many.
    on_lost: Option<LostHook>,
    /// The site refuses requests while records cannot be written (only changes what the log
    /// says; the refusing is the caller's, see [`AuditLog::writable`]).
    fail_closed: bool,
}

/// This thread's buffer for one log.
struct LocalBuf {
    id: u64,
    log: Weak<Shared>,
    buf: Arc<ThreadBuf>,
}

thread_local! {
    /// This thread's buffers, one per live log (usually one; a reload that changes the audit
    /// settings briefly makes two).
    static LOCAL: RefCell<Vec<LocalBuf>> = const { RefCell::new(Vec::new()) };
}

/// Locks `m`, recovering from poisoning: every critical section leaves the data consistent
/// (whole lines, whole queue entries), so a panic elsewhere must not stop the audit log.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(options: AuditOptions) -> Shared {
        Shared {
            id: NEXT_LOG_ID.fetch_add(1, Ordering::Relaxed),
            closed: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            buffers: Mutex::new(Vec::new()),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            failing: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            on_lost: options.on_lost,
            fail_closed: options.fail_closed,
        }
    }

    /// Appends `rec` as one line to this thread's buffer, handing the buffer over when full.
    fn record(self: &Arc<Self>, rec: &AuditRecord) -> Result<(), AuditError> {
        let local = LOCAL.try_with(|cell| {
            // Fast path: this thread already has a buffer for this log.
            if let Ok(locals) = cell.try_borrow() {
                if let Some(l) = locals.iter().find(|l| l.id == self.id) {
                    return Some(self.append(&l.buf, rec));
                }
            }
            let buf = self.register(cell)?;
            Some(self.append(&buf, rec))
        });
        match local {
            Ok(Some(result)) => result,
            // The thread's buffers are being torn down (a record from another thread-local's
            // destructor) or borrowed (re-entrancy): queue the line directly.
            Ok(None) | Err(_) => self.record_direct(rec),
        }
    }

    /// Creates and registers this thread's buffer for this log, dropping entries of logs that
    /// are gone or shut down. `None` if the table is borrowed.
    fn register(self: &Arc<Self>, cell: &RefCell<Vec<LocalBuf>>) -> Option<Arc<ThreadBuf>> {
        let mut locals = cell.try_borrow_mut().ok()?;
        locals.retain(|l| {
            l.log
                .upgrade()
                .is_some_and(|s| !s.closed.load(Ordering::Relaxed))
        });
        let buf = Arc::new(ThreadBuf {
            lines: Mutex::new(Vec::with_capacity(BUFFER_CAPACITY)),
        });
        lock(&self.buffers).push(Arc::clone(&buf));
        locals.push(LocalBuf {
            id: self.id,
            log: Arc::downgrade(self),
            buf: Arc::clone(&buf),
        });
        Some(buf)
    }

    fn append(&self, buf: &ThreadBuf, rec: &AuditRecord) -> Result<(), AuditError> {
        let mut lines = lock(&buf.lines);
        // Checked under the buffer's lock: `shutdown` sets `closed` before it takes the
        // buffers, so a record either sees `closed` or is appended before its buffer is taken.
        if self.closed.load(Ordering::SeqCst) {
            return Err(AuditError::Closed);
        }
        let start = lines.len();
        if let Err(e) = serde_json::to_writer(&mut *lines, rec) {
            lines.truncate(start); // never a partial line
            return Err(e.into());
        }
        lines.push(b'\n');
        if lines.len() >= BATCH_BYTES {
            self.hand_over(&mut lines);
        } else if start == 0 {
            self.arm();
        }
        Ok(())
    }

    /// The slow path: one line queued on its own (no thread buffer available).
    fn record_direct(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        let mut q = lock(&self.queue);
        // Under the queue lock: `shutdown` queues `Shutdown` after setting `closed`.
        if self.closed.load(Ordering::SeqCst) {
            return Err(AuditError::Closed);
        }
        q.msgs.push_back(Msg::Batch(line));
        let waiting = q.waiting;
        drop(q);
        if waiting {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queues a buffer's lines as one batch, leaving it empty (a spare buffer takes its
    /// place). Called with the buffer's lock held, which is what keeps a thread's batches in
    /// order.
    fn hand_over(&self, lines: &mut Vec<u8>) {
        if lines.is_empty() {
            return;
        }
        let mut q = lock(&self.queue);
        let fresh = q
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY));
        q.msgs
            .push_back(Msg::Batch(std::mem::replace(lines, fresh)));
        let waiting = q.waiting;
        drop(q);
        if waiting {
            self.wake.notify_one();
        }
    }

    /// Makes sure the writer's timer runs: only the record that sets the flag signals it.
    fn arm(&self) {
        // A relaxed look first keeps the flag's cache line shared while it stays set. Seeing a
        // stale `true` is harmless: the writer clears the flag before it takes the buffers, and
        // this buffer's lock orders this record after that take or before it.
        if self.armed.load(Ordering::Relaxed) || self.armed.swap(true, Ordering::SeqCst) {
            return;
        }
        let waiting = lock(&self.queue).waiting;
        if waiting {
            self.wake.notify_one();
        }
    }

    /// Hands over every registered buffer's lines, and forgets buffers of exited threads once
    /// they are empty.
    fn hand_over_all(&self) {
        let buffers: Vec<Arc<ThreadBuf>> = lock(&self.buffers).clone();
        for b in &buffers {
            self.hand_over(&mut lock(&b.lines));
        }
        drop(buffers);
        // A count of one: only the registry holds it, its thread is gone and can add nothing.
        lock(&self.buffers).retain(|b| Arc::strong_count(b) > 1 || !lock(&b.lines).is_empty());
    }

    /// Queues a control message after everything handed over so far, and wakes the writer.
    fn send(&self, msg: Msg) {
        lock(&self.queue).msgs.push_back(msg);
        self.wake.notify_one();
    }

    /// Takes the queue, waiting for messages or for the timer: `deadline` is the timer's, set
    /// once armed to `last_take` + [`FLUSH_INTERVAL`] (possibly already past).
    fn next_batch(
        &self,
        deadline: &mut Option<Instant>,
        last_take: Instant,
        done: &mut Vec<Vec<u8>>,
    ) -> VecDeque<Msg> {
        let mut q = lock(&self.queue);
        for mut b in done.drain(..) {
            if q.spare.len() < SPARE_BUFFERS && b.capacity() <= 4 * BUFFER_CAPACITY {
                b.clear();
                q.spare.push(b);
            }
        }
        loop {
            if deadline.is_none() && self.armed.load(Ordering::SeqCst) {
                *deadline = Some(last_take + FLUSH_INTERVAL);
            }
            let now = Instant::now();
            let due = deadline.is_some_and(|d| now >= d);
            if !q.msgs.is_empty() || due {
                return std::mem::take(&mut q.msgs);
            }
            q.waiting = true;
            q = match *deadline {
                Some(d) => {
                    self.wake
                        .wait_timeout(q, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self.wake.wait(q).unwrap_or_else(PoisonError::into_inner),
            };
            q.waiting = false;
        }
    }
}

/// Where the writer's lines go. No buffer of modgate's own in front of the file: the writer
/// already hands over whole batches, and a write that fails half-way must be undone at a line
/// boundary, which needs to know exactly which bytes reached the file.
enum Sink {
    Stdout(io::Stdout),
    File {
        path: PathBuf,
        file: File,
    },
    /// A device of limited room, for the tests.
    #[cfg(test)]
    Mem(tests::MemSink),
}

impl Sink {
    fn name(&self) -> String {
        match self {
            Sink::Stdout(_) => "stdout".into(),
            Sink::File { path, .. } => path.display().to_string(),
            #[cfg(test)]
            Sink::Mem(_) => "memory".into(),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Stdout(w) => w.write(buf),
            Sink::File { file, .. } => file.write(buf),
            #[cfg(test)]
            Sink::Mem(m) => m.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(w) => w.flush(),
            Sink::File { .. } => Ok(()),
            #[cfg(test)]
            Sink::Mem(_) => Ok(()),
        }
    }

    /// Takes back the last `n` bytes written (a torn line): `Ok(false)` where that cannot be
    /// done (standard output).
    fn take_back(&mut self, n: u64) -> io::Result<bool> {
        match self {
            Sink::Stdout(_) => Ok(false),
            Sink::File { file, .. } => {
                // Only our own bytes: the file may have another writer (the recorder a reload
                // replaced, `modgate cache purge`, the other process of an upgrade). After an
                // append our offset is the end of what we wrote; if the file has grown past
                // it, truncating would cut another writer's record, so the torn line is left
                // to be ended with a newline instead.
                use std::io::Seek;
                let ours = file.stream_position()?;
                let len = file.metadata()?.len();
                if len != ours {
                    return Err(io::Error::other(format!(
                        "another writer appended after it ({len} bytes, ours end at {ours})"
                    )));
                }
                file.set_len(len.saturating_sub(n))?;
                Ok(true)
            }
            #[cfg(test)]
            Sink::Mem(m) => m.take_back(n),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        match self {
            Sink::File { file, .. } => file.sync_all(),
            _ => Ok(()),
        }
    }

    fn reopen(&mut self) {
        let Sink::File { path, file } = self else {
            return;
        };
        match open_append(path) {
            Ok(f) => {
                // Replacing the handle closes the old file (nothing of ours is buffered).
                *file = f;
                log::info!("audit log {} reopened", path.display());
            }
            Err(e) => log::error!(
                "audit log {}: reopen failed, keeping the old file handle: {e}",
                path.display()
            ),
        }
    }
}

/// Writes `data` whole, or says how many of its bytes were written before the error.
fn write_counted(sink: &mut Sink, data: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut done = 0;
    while done < data.len() {
        match sink.write(&data[done..]) {
            Ok(0) => return Err((done, io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    sink.flush().map_err(|e| (done, e))
}

fn count_lines(data: &[u8]) -> u64 {
    data.iter().filter(|&&b| b == b'\n').count() as u64
}

/// How long a failing audit sink stays quiet in the log after saying it fails: one line when
/// writes start failing, then at most one line per interval (with the records lost since),
/// and one when they recover.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// An outage of the sink: since when, and what was lost.
struct Outage {
    since: Instant,
    logged: Instant,
    lost: u64,
    unlogged: u64,
}

/// The writer thread's end: writes whole lines or none, takes a torn line back, counts the
/// records that could not be written and says so in the log without flooding it.
struct LineWriter {
    sink: Sink,
    shared: Arc<Shared>,
    /// The rest of a line cut short on a sink that cannot take bytes back (standard
    /// output): written first next time, so that line is completed rather than glued to the
    /// next one.
    tail: Vec<u8>,
    /// A torn line could not be taken back: the next write starts on a line of its own.
    newline_first: bool,
    outage: Option<Outage>,
}

impl LineWriter {
    fn new(sink: Sink, shared: Arc<Shared>) -> LineWriter {
        LineWriter {
            sink,
            shared,
            tail: Vec::new(),
            newline_first: false,
            outage: None,
        }
    }

    /// Writes `data` (whole lines). A write that fails part-way leaves no partial line: the
    /// torn line's bytes are taken back (files), or completed on the next write (standard
    /// output). Records that could not be written are counted as lost.
    fn commit(&mut self, data: &[u8]) {
        if data.is_empty() && self.tail.is_empty() && !self.newline_first {
            return;
        }
        if !self.tail.is_empty() {
            match write_counted(&mut self.sink, &self.tail) {
                Ok(()) => self.tail.clear(),
                Err((k, e)) => {
                    self.tail.drain(..k);
                    return self.lose(count_lines(data), &e);
                }
            }
        }
        if self.newline_first {
            if let Err((_, e)) = write_counted(&mut self.sink, b"\n") {
                return self.lose(count_lines(data), &e);
            }
            self.newline_first = false;
        }
        let Err((k, e)) = write_counted(&mut self.sink, data) else {
            return self.recovered();
        };
        let boundary = data[..k]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let mut lost_from = boundary;
        if k > boundary {
            match self.sink.take_back((k - boundary) as u64) {
                Ok(true) => {}
                Ok(false) => {
                    let end = data[k..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| k + i + 1);
                    self.tail.extend_from_slice(&data[k..end]);
                    lost_from = end;
                }
                Err(te) => {
                    log::error!(
                        "audit log {}: cannot take back a partly written record ({te}); the \
                         next record starts on a new line",
                        self.sink.name()
                    );
                    self.newline_first = true;
                }
            }
        }
        self.lose(count_lines(&data[lost_from..]), &e);
    }

    fn lose(&mut self, n: u64, e: &io::Error) {
        self.shared.failing.store(true, Ordering::SeqCst);
        if n > 0 {
            self.shared.lost.fetch_add(n, Ordering::Relaxed);
            if let Some(hook) = &self.shared.on_lost {
                hook(n);
            }
        }
        let now = Instant::now();
        let name = self.sink.name();
        match &mut self.outage {
            None => {
                let policy = if self.shared.fail_closed {
                    "requests are refused until a record can be written (audit fail_mode: closed)"
                } else {
                    "requests are still served and their records lost (audit fail_mode: open)"
                };
                log::error!(
                    "audit log {name}: write failed: {e}; {policy}; {n} record(s) lost so far \
                     (this is logged again at most every {}s while it lasts)",
                    FAILURE_LOG_INTERVAL.as_secs()
                );
                self.outage = Some(Outage {
                    since: now,
                    logged: now,
                    lost: n,
                    unlogged: 0,
                });
            }
            Some(o) => {
                o.lost += n;
                o.unlogged += n;
                if now.duration_since(o.logged) >= FAILURE_LOG_INTERVAL {
                    log::error!(
                        "audit log {name}: still failing ({e}): {} more record(s) lost, {} in \
                         the last {}s",
                        o.unlogged,
                        o.lost,
                        now.duration_since(o.since).as_secs()
                    );
                    o.logged = now;
                    o.unlogged = 0;
                }
            }
        }
    }

    fn recovered(&mut self) {
        if let Some(o) = self.outage.take() {
            self.shared.failing.store(false, Ordering::SeqCst);
            log::warn!(
                "audit log {}: writes recovered after {}s; {} record(s) were lost",
                self.sink.name(),
                o.since.elapsed().as_secs(),
                o.lost
            );
        }
    }

    /// The last write of all: flush and fsync. A line still incomplete is lost.
    fn finish(&mut self) -> io::Result<()> {
        self.commit(&[]);
        if !self.tail.is_empty() {
            self.tail.clear();
            self.lose(
                1,
                &io::Error::other("a record was still incomplete at shutdown"),
            );
        }
        self.sink.sync()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o640);
    }
    opts.open(path)
}

struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

impl Inner {
    fn shutdown(&self) -> Result<(), AuditError> {
        let Some(handle) = lock(&self.thread).take() else {
            return Ok(());
        };
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.hand_over_all();
        self.shared.send(Msg::Shutdown);
        match handle.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AuditError::Flush(e)),
            Err(_) => Err(AuditError::WriterPanicked),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("audit log shutdown: {e}");
        }
    }
}

/// Handle to the audit log. Cheap to clone; all clones share one writer thread.
#[derive(Clone)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl AuditLog {
    /// Opens the sink and starts the writer thread (no thread for [`AuditSinkConfig::Off`]).
    pub fn start(cfg: AuditSinkConfig) -> Result<AuditLog, AuditError> {
        AuditLog::start_with(cfg, AuditOptions::default())
    }

    /// [`AuditLog::start`] with what to do when the sink fails.
    pub fn start_with(cfg: AuditSinkConfig, options: AuditOptions) -> Result<AuditLog, AuditError> {
        let sink = match cfg {
            AuditSinkConfig::Off => return Ok(AuditLog { inner: None }),
            AuditSinkConfig::Stdout => Sink::Stdout(io::stdout()),
            AuditSinkConfig::File(path) => {
                let file = open_append(&path).map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                })?;
                Sink::File { path, file }
            }
        };
        let shared = Arc::new(Shared::new(options));
        let for_writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("modgate-audit".into())
            .spawn(move || writer_loop(sink, for_writer))
            .map_err(AuditError::Spawn)?;
        Ok(AuditLog {
            inner: Some(Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(thread)),
            })),
        })
    }

    /// A disabled log (same as starting with [`AuditSinkConfig::Off`]).
    pub fn off() -> AuditLog {
        AuditLog { inner: None }
    }

    /// Whether records are written anywhere.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Serializes `rec` on the calling thread into that thread's buffer, as one line. Never
    /// blocks on I/O and never wakes the writer per record (see the module documentation for
    /// when lines reach the sink). Fails only if the record cannot be serialized or the log
    /// was shut down.
    pub fn record(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        match &self.inner {
            Some(inner) => inner.shared.record(rec),
            None => Ok(()),
        }
    }

    /// Whether records reach the sink: false from a failed write until a write succeeds again
    /// (always true for a disabled log). A site that must not serve what it cannot audit
    /// refuses requests while this is false.
    pub fn writable(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|i| !i.shared.failing.load(Ordering::SeqCst))
    }

    /// Records lost so far: accepted by [`AuditLog::record`] but not written (the sink failed).
    pub fn lost_records(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.shared.lost.load(Ordering::Relaxed))
    }

    /// Asks the writer to close and reopen the file by path (after logrotate moved it).
    /// Records logged before this call (on any thread) go to the old file, records logged
    /// after it returns to the new one.
    pub fn reopen(&self) {
        let Some(inner) = &self.inner else { return };
        if inner.shared.closed.load(Ordering::SeqCst) {
            log::warn!("audit log reopen requested after shutdown");
            return;
        }
        inner.shared.hand_over_all();
        inner.shared.send(Msg::Reopen);
    }

    /// Writes everything recorded so far (every thread's buffer, including threads that have
    /// exited), flushes, fsyncs and stops the writer thread. Later calls (from any clone)
    /// return `Ok(())` at once; later records fail with [`AuditError::Closed`].
    pub fn shutdown(&self) -> Result<(), AuditError> {
        match &self.inner {
            Some(inner) => inner.shutdown(),
            None => Ok(()),
        }
    }
}

/// Refuses records once the writer is gone, however it ended (a panic included), so that
/// records cannot pile up in buffers nobody will take.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
    }
}

fn writer_loop(sink: Sink, shared: Arc<Shared>) -> io::Result<()> {
    let _close = CloseOnExit(Arc::clone(&shared));
    let mut writer = LineWriter::new(sink, Arc::clone(&shared));
    // What one wake-up writes, in one system call where it fits.
    let mut out: Vec<u8> = Vec::with_capacity(4 * BATCH_BYTES);
    let mut deadline = None;
    // The first record is taken at once.
    let mut last_take = Instant::now()
        .checked_sub(FLUSH_INTERVAL)
        .unwrap_or_else(Instant::now);
    let mut done = Vec::new();
    let mut stop = false;
    while !stop {
        for msg in shared.next_batch(&mut deadline, last_take, &mut done) {
            match msg {
                Msg::Batch(b) => {
                    if out.len() + b.len() > 4 * BATCH_BYTES {
                        writer.commit(&out);
                        out.clear();
                    }
                    if out.is_empty() && b.len() > 4 * BATCH_BYTES {
                        writer.commit(&b);
                    } else {
                        out.extend_from_slice(&b);
                    }
                    done.push(b);
                }
                Msg::Reopen => {
                    writer.commit(&out);
                    out.clear();
                    writer.sink.reopen();
                }
                // Anything queued after it in this batch is still written.
                Msg::Shutdown => stop = true,
            }
        }
        // Make what we have visible.
        writer.commit(&out);
        out.clear();
        let now = Instant::now();
        if !stop && deadline.is_some_and(|d| now >= d) {
            // Clear before taking, so a record after its buffer is taken re-arms the timer.
            deadline = None;
            last_take = now;
            shared.armed.store(false, Ordering::SeqCst);
            shared.hand_over_all();
        }
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(i: usize) -> AuditRecord {
        AuditRecord {
            ts: rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            trace_id: format!("{i:032x}"),
            listener: "public".into(),
            client_addr: "127.0.0.1:5555".into(),
            identity: AuditIdentity {
                source: "mtls".into(),
                name: "ci".into(),
                dn: Some("CN=ci".into()),
                fingerprint: None,
                serial: Some("01".into()),
                principals: Vec::new(),
                matched: None,
            },
            roles: vec!["reader".to_string()].into(),
            method: "GET".into(),
            path: format!("/example.com/m/@v/v1.0.{i}.zip"),
            module: Some("example.com/m".into()),
            version: Some(format!("v1.0.{i}")),
            kind: Some("zip".into()),
            route: Some("default".into()),
            decision: AuditDecision::Deny,
            rule: Some("deny-bad".into()),
            reason: Some("blocked".into()),
            status: 403,
            bytes: 12,
            incomplete: false,
            duration_ms: 1.5,
            upstream: None,
            cache: Some("none".into()),
            event: None,
            advisories: Vec::new(),
            would_deny: None,
            withheld: Vec::new(),
            waived: Vec::new(),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("read audit file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("valid JSON line"))
            .collect()
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
        // 2024-02-29 (leap day) 23:59:59.999
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_709_251_199_999)),
            "2024-02-29T23:59:59.999Z"
        );
        // 2000-03-01T00:00:00Z
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(951_868_800)),
            "2000-03-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        // 2100 is not a leap year; the last second jiff's civil calendar holds; past it.
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(4_107_456_000 + 86_400)),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(253_402_300_799)),
            "9999-12-31T23:59:59.000Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(AuditRecord::now().ts.len(), 24);
        // Every millisecond of a few days and years, against the formatting it replaced.
        let days = [0u64, 59, 365, 10_957, 11_016, 19_782, 20_513, 2_932_896];
        for (i, day) in days.into_iter().enumerate() {
            for ms in (0..86_400_000u64).step_by(3_600_007 + i) {
                let t = UNIX_EPOCH + Duration::from_millis(day * 86_400_000 + ms);
                let date = utc_civil(day * 86_400).expect("in range");
                let (y, m, d) = (date.year(), date.month(), date.day());
                let rem = ms / 1000;
                let want = format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                    rem / 3600,
                    (rem % 3600) / 60,
                    rem % 60,
                    ms % 1000
                );
                assert_eq!(rfc3339_millis(t), want);
            }
        }
    }

    #[test]
    fn serializes_snake_case_and_skips_none() {
        let mut r = sample(1);
        r.identity.fingerprint = None;
        r.upstream = None;
        r.event = None;
        let v: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&r).expect("serialize")).expect("json");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["identity"]["dn"], "CN=ci");
        assert!(v["identity"].get("fingerprint").is_none());
        assert!(v.get("upstream").is_none());
        assert!(v.get("event").is_none());
        assert_eq!(v["client_addr"], "127.0.0.1:5555");
        let d = AuditRecord::default();
        assert_eq!(d.decision, AuditDecision::Error);
        assert_eq!(AuditDecision::Unauthenticated.as_str(), "unauthenticated");
    }

    #[test]
    fn writes_records_as_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        for i in 0..3 {
            log.record(&sample(i)).expect("record");
        }
        let mut purge = AuditRecord::now();
        purge.event = Some("cache-purge".into());
        purge.decision = AuditDecision::Allow;
        log.record(&purge).expect("record");
        log.shutdown().expect("shutdown");
        let got = lines(&path);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0]["trace_id"], format!("{:032x}", 0));
        assert_eq!(got[2]["version"], "v1.0.2");
        assert_eq!(got[2]["status"], 403);
        assert_eq!(got[3]["event"], "cache-purge");
        assert_eq!(got[3]["decision"], "allow");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & !0o640 & 0o777, 0, "mode {mode:o} wider than 0640");
        }
        // After shutdown: idempotent, and records are refused.
        log.shutdown().expect("second shutdown");
        assert!(matches!(log.record(&sample(9)), Err(AuditError::Closed)));
    }

    #[test]
    fn lines_appear_without_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        log.record(&sample(1)).expect("record");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n = std::fs::read_to_string(&path)
                .map(|s| s.lines().count())
                .unwrap_or(0);
            if n == 1 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "line never flushed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn reopen_after_rename() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        log.record(&sample(1)).expect("record");
        log.record(&sample(2)).expect("record");
        std::fs::rename(&path, &rotated).expect("rename");
        log.reopen();
        log.record(&sample(3)).expect("record");
        log.shutdown().expect("shutdown");
        let old = lines(&rotated);
        let new = lines(&path);
        assert_eq!(old.len(), 2);
        assert_eq!(old[1]["version"], "v1.0.2");
        assert_eq!(new.len(), 1);
        assert_eq!(new[0]["version"], "v1.0.3");
    }

    #[test]
    fn failed_reopen_keeps_old_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        let path = sub.join("audit.log");
        let moved = dir.path().join("audit.log.1");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        log.record(&sample(1)).expect("record");
        std::fs::rename(&path, &moved).expect("rename");
        std::fs::remove_dir(&sub).expect("rmdir");
        log.reopen(); // cannot create sub/audit.log: the old handle keeps writing
        log.record(&sample(2)).expect("record");
        log.shutdown().expect("shutdown");
        assert_eq!(lines(&moved).len(), 2);
    }

    #[test]
    fn nothing_lost_under_concurrency() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..2500 {
                        log.record(&sample(t * 10_000 + i)).expect("record");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        log.shutdown().expect("shutdown");
        let got = lines(&path);
        assert_eq!(got.len(), 10_000);
        let mut ids: Vec<String> = got
            .iter()
            .map(|v| v["trace_id"].as_str().unwrap_or_default().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn drop_of_last_handle_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        {
            let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
            let clone = log.clone();
            for i in 0..100 {
                clone.record(&sample(i)).expect("record");
            }
        }
        assert_eq!(lines(&path).len(), 100);
    }

    #[test]
    fn off_and_open_errors() {
        let log = AuditLog::start(AuditSinkConfig::Off).expect("off");
        assert!(!log.is_enabled());
        log.record(&sample(1)).expect("no-op");
        log.reopen();
        log.shutdown().expect("no-op");
        let err = AuditLog::start(AuditSinkConfig::File(PathBuf::from(
            "/nonexistent-dir-for-modgate/audit.log",
        )))
        .expect_err("must fail");
        assert!(matches!(err, AuditError::Open { .. }));
    }

    /// Trace id of record `seq` of thread `t`, and back.
    fn tagged(t: usize, seq: usize) -> AuditRecord {
        let mut r = sample(seq);
        r.trace_id = format!("{t:08x}{seq:024x}");
        r
    }

    fn tag_of(v: &serde_json::Value) -> (usize, usize) {
        let id = v["trace_id"].as_str().expect("trace_id");
        let t = usize::from_str_radix(&id[..8], 16).expect("hex");
        let seq = usize::from_str_radix(&id[8..], 16).expect("hex");
        (t, seq)
    }

    /// Every thread's records, in file order, must be exactly `0..counts[t]`.
    fn assert_complete_and_ordered(got: &[serde_json::Value], counts: &[usize]) {
        let mut next = vec![0usize; counts.len()];
        for v in got {
            let (t, seq) = tag_of(v);
            assert_eq!(
                seq, next[t],
                "thread {t}: record {seq} out of order or repeated"
            );
            next[t] += 1;
        }
        assert_eq!(next, counts, "records missing");
    }

    /// Polls `path` until it holds `n` lines (bounded; never asserts on timing itself).
    fn wait_for_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n && text.ends_with('\n') {
                return lines(path);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} never reached {n} lines",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn burst_from_8_threads_is_complete_and_ordered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        std::thread::scope(|s| {
            for t in 0..8 {
                let log = log.clone();
                s.spawn(move || {
                    for i in 0..2500 {
                        log.record(&tagged(t, i)).expect("record");
                    }
                });
            }
        });
        log.shutdown().expect("shutdown");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with('\n'));
        let got = lines(&path); // every line parses
        assert_eq!(got.len(), 20_000);
        assert_complete_and_ordered(&got, &[2500; 8]);
    }

    #[test]
    fn shutdown_takes_buffers_of_live_and_exited_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        // Thread 0 logs and exits; thread 1 logs and stays alive (a tokio worker) until after
        // the shutdown.
        let l0 = log.clone();
        std::thread::spawn(move || {
            for i in 0..7 {
                l0.record(&tagged(0, i)).expect("record");
            }
        })
        .join()
        .expect("join");
        let (logged_tx, logged_rx) = std::sync::mpsc::channel();
        let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
        let l1 = log.clone();
        let alive = std::thread::spawn(move || {
            for i in 0..5 {
                l1.record(&tagged(1, i)).expect("record");
            }
            logged_tx.send(()).expect("send");
            let _ = exit_rx.recv();
            // After the shutdown this thread's buffer refuses records.
            matches!(l1.record(&tagged(1, 99)), Err(AuditError::Closed))
        });
        logged_rx.recv().expect("logged");
        log.shutdown().expect("shutdown");
        exit_tx.send(()).expect("send");
        assert!(
            alive.join().expect("join"),
            "record after shutdown accepted"
        );
        let got = lines(&path);
        assert_eq!(got.len(), 12);
        assert_complete_and_ordered(&got, &[7, 5]);
    }

    #[test]
    fn exited_thread_is_written_by_the_timer_and_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        let l = log.clone();
        std::thread::spawn(move || {
            for i in 0..3 {
                l.record(&tagged(0, i)).expect("record");
            }
        })
        .join()
        .expect("join");
        let got = wait_for_lines(&path, 3);
        assert_complete_and_ordered(&got, &[3]);
        // The exited thread's empty buffer is dropped from the registry (bounded wait: the
        // writer forgets it right after writing its lines).
        let shared = &log.inner.as_ref().expect("enabled").shared;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !lock(&shared.buffers).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "buffer never forgotten"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        log.shutdown().expect("shutdown");
        assert_eq!(lines(&path).len(), 3);
    }

    #[test]
    fn records_racing_shutdown_are_written_or_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                let started = started_tx.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    loop {
                        match log.record(&tagged(t, n)) {
                            Ok(()) => n += 1,
                            Err(AuditError::Closed) => return n,
                            Err(e) => panic!("record: {e}"),
                        }
                        if n == 100 {
                            let _ = started.send(());
                        }
                    }
                })
            })
            .collect();
        for _ in 0..4 {
            started_rx.recv().expect("started");
        }
        log.shutdown().expect("shutdown");
        let counts: Vec<usize> = workers
            .into_iter()
            .map(|w| w.join().expect("join"))
            .collect();
        assert_complete_and_ordered(&lines(&path), &counts);
    }

    #[test]
    fn record_larger_than_a_batch_stays_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        let mut big = tagged(0, 1);
        big.reason = Some("x".repeat(3 * BATCH_BYTES));
        log.record(&tagged(0, 0)).expect("record");
        log.record(&big).expect("record");
        log.record(&tagged(0, 2)).expect("record");
        log.shutdown().expect("shutdown");
        let got = lines(&path);
        assert_complete_and_ordered(&got, &[3]);
        assert_eq!(
            got[1]["reason"].as_str().map(str::len),
            Some(3 * BATCH_BYTES)
        );
    }

    #[test]
    fn reopen_with_a_live_worker_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let log = AuditLog::start(AuditSinkConfig::File(path.clone())).expect("start");
        // A long-lived worker that logs on request, like a tokio worker thread.
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<usize>();
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let l = log.clone();
        let worker = std::thread::spawn(move || {
            while let Ok(seq) = cmd_rx.recv() {
                l.record(&tagged(0, seq)).expect("record");
                ack_tx.send(()).expect("ack");
            }
        });
        let log_on_worker = |seq| {
            cmd_tx.send(seq).expect("cmd");
            ack_rx.recv().expect("ack");
        };
        log_on_worker(0);
        log_on_worker(1);
        std::fs::rename(&path, &rotated).expect("rename");
        log.reopen();
        log_on_worker(2);
        // Without shutdown: the timer writes the new record to the new file.
        let new = wait_for_lines(&path, 1);
        assert_eq!(new.len(), 1);
        assert_eq!(tag_of(&new[0]), (0, 2));
        let old = lines(&rotated);
        assert_eq!(old.iter().map(tag_of).collect::<Vec<_>>(), [(0, 0), (0, 1)]);
        log_on_worker(3);
        log.shutdown().expect("shutdown");
        drop(cmd_tx);
        worker.join().expect("join");
        let new = lines(&path);
        assert_eq!(new.iter().map(tag_of).collect::<Vec<_>>(), [(0, 2), (0, 3)]);
        assert_eq!(lines(&rotated).len(), 2);
    }

    #[test]
    fn two_logs_on_one_thread_keep_their_own_buffers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (pa, pb) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let a = AuditLog::start(AuditSinkConfig::File(pa.clone())).expect("start");
        let b = AuditLog::start(AuditSinkConfig::File(pb.clone())).expect("start");
        for i in 0..10 {
            a.record(&tagged(0, i)).expect("record");
            b.record(&tagged(1, i)).expect("record");
        }
        a.shutdown().expect("shutdown");
        // A log started after one was shut down gets a fresh buffer on this thread.
        let pc = dir.path().join("c.log");
        let c = AuditLog::start(AuditSinkConfig::File(pc.clone())).expect("start");
        c.record(&tagged(0, 0)).expect("record");
        b.shutdown().expect("shutdown");
        c.shutdown().expect("shutdown");
        assert_complete_and_ordered(&lines(&pa), &[10]);
        assert_complete_and_ordered(&lines(&pb), &[0, 10]);
        assert_complete_and_ordered(&lines(&pc), &[1]);
    }

    /// A device holding what was written, with `room` bytes left; `cuttable`: whether bytes
    /// can be taken back (a file) or not (a pipe).
    #[derive(Clone)]
    pub(super) struct MemSink {
        pub data: Arc<Mutex<Vec<u8>>>,
        pub room: Arc<std::sync::atomic::AtomicUsize>,
        pub cuttable: bool,
    }

    impl MemSink {
        fn new(room: usize, cuttable: bool) -> MemSink {
            MemSink {
                data: Arc::default(),
                room: Arc::new(room.into()),
                cuttable,
            }
        }

        pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.room.load(Ordering::SeqCst);
            if room == 0 {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = buf.len().min(room);
            self.room.fetch_sub(n, Ordering::SeqCst);
            lock(&self.data).extend_from_slice(&buf[..n]);
            Ok(n)
        }

        pub(super) fn take_back(&mut self, n: u64) -> io::Result<bool> {
            if !self.cuttable {
                return Ok(false);
            }
            let mut d = lock(&self.data);
            let keep = d.len().saturating_sub(n as usize);
            self.room.fetch_add(d.len() - keep, Ordering::SeqCst);
            d.truncate(keep);
            Ok(true)
        }

        fn text(&self) -> String {
            String::from_utf8(lock(&self.data).clone()).expect("utf-8")
        }
    }

    fn line(i: usize) -> Vec<u8> {
        let mut l = serde_json::to_vec(&tagged(0, i)).expect("json");
        l.push(b'\n');
        l
    }

    /// Every line parses, and the records are exactly `want` in order.
    fn assert_lines(text: &str, want: &[usize]) {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "partial line: {text:?}"
        );
        let got: Vec<usize> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("invalid JSON line ({e}): {l}"));
                tag_of(&v).1
            })
            .collect();
        assert_eq!(got, want);
    }

    fn writer_on(mem: &MemSink, lost: &Arc<AtomicU64>) -> LineWriter {
        let seen = Arc::clone(lost);
        let shared = Arc::new(Shared::new(AuditOptions {
            fail_closed: false,
            on_lost: Some(Arc::new(move |n| {
                seen.fetch_add(n, Ordering::SeqCst);
            })),
        }));
        LineWriter::new(Sink::Mem(mem.clone()), shared)
    }

    #[test]
    fn a_full_file_loses_whole_records_counted_and_never_a_partial_line() {
        let (l0, l1, l2, l3) = (line(0), line(1), line(2), line(3));
        // Room for record 0 and half of record 1.
        let mem = MemSink::new(l0.len() + l1.len() / 2, true);
        let hooked = Arc::new(AtomicU64::new(0));
        let mut w = writer_on(&mem, &hooked);
        w.commit(&[l0.clone(), l1.clone(), l2.clone()].concat());
        assert_lines(&mem.text(), &[0]);
        assert!(
            w.shared.failing.load(Ordering::SeqCst),
            "not marked failing"
        );
        assert_eq!(w.shared.lost.load(Ordering::SeqCst), 2);
        assert_eq!(hooked.load(Ordering::SeqCst), 2);
        // Still full: record 3 is lost too, and counted.
        mem.room.store(0, Ordering::SeqCst);
        w.commit(&l3);
        assert_eq!(w.shared.lost.load(Ordering::SeqCst), 3);
        // Space returns: the next record follows the last whole line.
        mem.room.store(1 << 20, Ordering::SeqCst);
        w.commit(&line(4));
        assert!(
            !w.shared.failing.load(Ordering::SeqCst),
            "recovery not seen"
        );
        assert_lines(&mem.text(), &[0, 4]);
        assert_eq!(hooked.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_torn_line_on_a_pipe_is_completed_when_writes_recover() {
        let (l0, l1, l2) = (line(0), line(1), line(2));
        let mem = MemSink::new(l0.len() + 7, false);
        let hooked = Arc::new(AtomicU64::new(0));
        let mut w = writer_on(&mem, &hooked);
        w.commit(&[l0, l1, l2].concat());
        // Record 1 is half out and will be completed; record 2 is lost.
        assert_eq!(w.shared.lost.load(Ordering::SeqCst), 1);
        mem.room.store(1 << 20, Ordering::SeqCst);
        w.commit(&line(3));
        assert_lines(&mem.text(), &[0, 1, 3]);
        // A line still incomplete at the end is lost, and counted.
        let l4 = line(4);
        mem.room.store(5, Ordering::SeqCst);
        w.commit(&l4);
        let _ = w.finish();
        assert_eq!(hooked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_device_through_the_writer_thread_counts_every_record() {
        // /dev/full fails every write with ENOSPC: every record is lost, and counted.
        let full = Path::new("/dev/full");
        if !full.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "/dev/full missing under CI"
            );
            return;
        }
        let hooked = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&hooked);
        let log = AuditLog::start_with(
            AuditSinkConfig::File(full.to_path_buf()),
            AuditOptions {
                fail_closed: true,
                on_lost: Some(Arc::new(move |n| {
                    seen.fetch_add(n, Ordering::SeqCst);
                })),
            },
        )
        .expect("start");
        assert!(log.writable());
        for i in 0..50 {
            log.record(&sample(i)).expect("record");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.writable() {
            assert!(std::time::Instant::now() < deadline, "never failing");
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = log.shutdown();
        assert_eq!(log.lost_records(), 50);
        assert_eq!(hooked.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn handle_is_send_sync_clone() {
        fn assert_traits<T: Clone + Send + Sync + 'static>() {}
        assert_traits::<AuditLog>();
    }
}
