//! The audit log: one JSON line per request decision (and per administrative event such as a
//! cache purge), written by a single background thread so that request handling never waits
//! on disk I/O.
//!
//! Design:
//! - [`AuditLog::record`] serializes the record on the caller's thread and hands the finished
//!   line to the writer thread over an unbounded std `mpsc` channel. The call never blocks on
//!   I/O and never drops a record; the price is that a writer slower than the request rate
//!   grows memory until it catches up.
//! - The writer thread owns a `BufWriter` and flushes it whenever its channel is momentarily
//!   empty, so lines appear promptly under light load and are batched under heavy load.
//! - [`AuditLog::reopen`] (SIGHUP after logrotate) closes the file and reopens it by path in
//!   append mode, creating it with mode `0640` (minus the process umask) when missing. If the
//!   reopen fails, the error is logged and the old handle is kept.
//! - [`AuditLog::shutdown`] drains the channel, flushes, fsyncs and joins the thread; it is
//!   idempotent, and dropping the last handle does the same.
//!
//! A write error (disk full, …) is logged when it first occurs (and again after writes
//! recover and fail anew); records written while the file is failing are lost.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Roles granted to the identity.
    pub roles: Vec<String>,
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
/// Times before the Unix epoch are clamped to the epoch.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, restricted to non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
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

enum Msg {
    Line(Vec<u8>),
    Reopen,
    Shutdown,
}

enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File { path: PathBuf, out: BufWriter<File> },
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File { out, .. } => out,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        match self {
            Sink::Stdout(_) => Ok(()),
            Sink::File { out, .. } => out.get_ref().sync_all(),
        }
    }

    fn reopen(&mut self) {
        let Sink::File { path, out } = self else {
            return;
        };
        if let Err(e) = out.flush() {
            log::error!("audit log {}: flush before reopen: {e}", path.display());
        }
        match open_append(path) {
            Ok(f) => {
                // Replacing the BufWriter drops (closes) the old file after its buffer was
                // flushed above.
                *out = BufWriter::new(f);
                log::info!("audit log {} reopened", path.display());
            }
            Err(e) => log::error!(
                "audit log {}: reopen failed, keeping the old file handle: {e}",
                path.display()
            ),
        }
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
    tx: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

impl Inner {
    fn shutdown(&self) -> Result<(), AuditError> {
        let handle = match self.thread.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(handle) = handle else {
            return Ok(());
        };
        // If the thread already exited the send fails; the join still reports why.
        let _ = self.tx.send(Msg::Shutdown);
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
        let sink = match cfg {
            AuditSinkConfig::Off => return Ok(AuditLog { inner: None }),
            AuditSinkConfig::Stdout => Sink::Stdout(BufWriter::new(io::stdout())),
            AuditSinkConfig::File(path) => {
                let f = open_append(&path).map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                })?;
                Sink::File {
                    path,
                    out: BufWriter::new(f),
                }
            }
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("modgate-audit".into())
            .spawn(move || writer_loop(sink, rx))
            .map_err(AuditError::Spawn)?;
        Ok(AuditLog {
            inner: Some(Arc::new(Inner {
                tx,
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

    /// Serializes `rec` on the calling thread and queues the line for the writer. Never blocks
    /// on I/O. Fails only if the record cannot be serialized or the log was shut down.
    pub fn record(&self, rec: &AuditRecord) -> Result<(), AuditError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        inner
            .tx
            .send(Msg::Line(line))
            .map_err(|_| AuditError::Closed)
    }

    /// Asks the writer to close and reopen the file by path (after logrotate moved it). Lines
    /// queued before this call go to the old file, lines queued after it to the new one.
    pub fn reopen(&self) {
        if let Some(inner) = &self.inner {
            if inner.tx.send(Msg::Reopen).is_err() {
                log::warn!("audit log reopen requested after shutdown");
            }
        }
    }

    /// Writes everything queued so far, flushes, fsyncs and stops the writer thread. Later
    /// calls (from any clone) return `Ok(())` at once; later records fail with
    /// [`AuditError::Closed`].
    pub fn shutdown(&self) -> Result<(), AuditError> {
        match &self.inner {
            Some(inner) => inner.shutdown(),
            None => Ok(()),
        }
    }
}

fn writer_loop(mut sink: Sink, rx: Receiver<Msg>) -> io::Result<()> {
    let mut failing = false;
    let mut write_line = |sink: &mut Sink, line: &[u8]| match sink.writer().write_all(line) {
        Ok(()) => failing = false,
        Err(e) => {
            if !failing {
                log::error!("audit log write failed (records are being lost): {e}");
            }
            failing = true;
        }
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                // Momentarily idle: make what we have visible, then wait.
                if let Err(e) = sink.flush() {
                    log::error!("audit log flush failed: {e}");
                }
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        match msg {
            Msg::Line(line) => write_line(&mut sink, &line),
            Msg::Reopen => sink.reopen(),
            Msg::Shutdown => {
                // Records sent concurrently with the shutdown request are still written.
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Line(line) => write_line(&mut sink, &line),
                        Msg::Reopen => sink.reopen(),
                        Msg::Shutdown => {}
                    }
                }
                break;
            }
        }
    }
    sink.sync()
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
            roles: vec!["reader".into()],
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
            duration_ms: 1.5,
            upstream: None,
            cache: Some("none".into()),
            event: None,
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
        assert_eq!(AuditRecord::now().ts.len(), 24);
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

    #[test]
    fn handle_is_send_sync_clone() {
        fn assert_traits<T: Clone + Send + Sync + 'static>() {}
        assert_traits::<AuditLog>();
    }
}
