//! Signals and orderly exit. Pingora's own signal handling is kept (SIGQUIT hands the
//! listening sockets to a new process, SIGTERM drains, SIGINT stops at once), with three
//! changes: after SIGTERM (and after a SIGQUIT hand-off) the process exits as soon as no
//! request is in flight instead of always sleeping the whole `grace_period`; a SIGQUIT with no
//! new process waiting on `upgrade_sock` is refused (the process keeps serving) instead of
//! shutting the service down; and the early exit runs the same finish as every other orderly
//! exit: LRU state saved, audit log flushed, spans exported, pid file removed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// How long no request may be in flight, after SIGTERM has closed the listeners, before the
/// process exits early. A connection accepted just before the listeners closed has this long
/// to get its request header in.
const QUIET: Duration = Duration::from_millis(300);

/// How long before the grace period ends the drain says what is still in flight.
const FINAL_WORD: Duration = Duration::from_millis(200);

/// How often the drain looks at the in-flight count.
const POLL: Duration = Duration::from_millis(25);

/// Set when a drain begins (SIGTERM, or a SIGQUIT hand-off): from then on every answer tells
/// an HTTP/1.1 client `Connection: close`, since the process is about to close the connection
/// (without it, a keep-alive client would send its next request on a connection that closes
/// unanswered).
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Whether the process is draining (see [`DRAINING`]).
pub fn draining() -> bool {
    DRAINING.load(Ordering::SeqCst)
}

/// Requests being served, across every listener.
#[derive(Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    /// Counts a request until the returned guard is dropped (with the request's context).
    pub fn enter(self: &Arc<Self>) -> Request {
        self.0.fetch_add(1, Ordering::SeqCst);
        Request(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// One request in flight.
pub struct Request(Arc<InFlight>);

impl Drop for Request {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What every orderly exit does last.
pub type Finish = Arc<dyn Fn() + Send + Sync>;

/// Whether a drain that began at `start` may end now: nothing has been in flight since
/// `quiet_since`, for at least [`QUIET`]. Pure, for the tests.
fn drained(now: Instant, quiet_since: Option<Instant>) -> bool {
    quiet_since.is_some_and(|q| now.duration_since(q) >= QUIET)
}

/// How long Pingora's old process keeps accepting on the handed-over sockets after a
/// SIGQUIT (its `CLOSE_TIMEOUT`), plus a margin: no early exit before that.
const HANDOFF: Duration = Duration::from_millis(5_500);

/// How long a SIGQUIT waits for the new process's upgrade socket to listen.
const UPGRADE_WAIT: Duration = Duration::from_secs(2);

/// Whether a process listens on the Unix socket `path`, from `/proc/net/unix` (`text`): a
/// listening socket has the `__SO_ACCEPTCON` flag (`00010000`). Pure, for the tests.
fn listening_on(text: &str, path: &str) -> bool {
    text.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & 0x0001_0000 != 0)
            && fields[7..].join(" ") == path
    })
}

/// Whether a new process (`modgate run --upgrade`) is waiting for the listening sockets.
fn upgrade_waiting(sock: &str) -> bool {
    let absolute = std::path::absolute(sock)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| sock.to_string());
    std::fs::read_to_string("/proc/net/unix")
        .is_ok_and(|t| listening_on(&t, sock) || listening_on(&t, &absolute))
}

/// modgate's [`ShutdownSignalWatch`] for Pingora's `RunArgs`.
pub struct Signals {
    pub inflight: Arc<InFlight>,
    /// `server.grace_period`: past it, Pingora's own shutdown takes over.
    pub grace: Duration,
    /// `server.upgrade_sock`.
    pub upgrade_sock: String,
    pub finish: Finish,
}

impl Signals {
    /// After SIGTERM (or a SIGQUIT hand-off, after `delay`): exits the process once nothing
    /// has been in flight for [`QUIET`], or leaves the rest to Pingora when the grace period
    /// runs out first.
    fn drain(&self, why: &'static str, delay: Duration) {
        DRAINING.store(true, Ordering::SeqCst);
        let inflight = self.inflight.clone();
        let finish = self.finish.clone();
        // Pingora sleeps the grace period in whole seconds, then stops its runtimes (cutting
        // what is left) and the process exits: the count is said a little before that, or the
        // exit could come first.
        let grace = Duration::from_secs(self.grace.as_secs());
        let deadline = Instant::now() + delay + grace.saturating_sub(FINAL_WORD);
        let spawned = std::thread::Builder::new()
            .name("modgate-drain".into())
            .spawn(move || {
                std::thread::sleep(delay);
                let mut quiet_since = None;
                while Instant::now() < deadline {
                    let now = Instant::now();
                    if inflight.count() > 0 {
                        quiet_since = None;
                    } else if quiet_since.is_none() {
                        quiet_since = Some(now);
                    }
                    if drained(now, quiet_since) {
                        log::info!(
                            "{why}: no request in flight; exiting before the grace period ends"
                        );
                        finish();
                        std::process::exit(0);
                    }
                    std::thread::sleep(POLL);
                }
                let left = inflight.count();
                if left > 0 {
                    log::warn!(
                        "{why}: {left} request(s) still in flight at the end of the grace \
                         period: they are cut (each gets its access line and audit record)"
                    );
                } else {
                    log::info!("{why}: the grace period ends");
                }
            });
        if let Err(e) = spawned {
            log::warn!("{why}: cannot watch the drain ({e}); waiting the whole grace period");
        }
    }

    /// Whether a new process waits for the sockets (it may still be starting to listen).
    async fn upgrade_ready(&self) -> bool {
        let deadline = Instant::now() + UPGRADE_WAIT;
        loop {
            if upgrade_waiting(&self.upgrade_sock) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (quit, term, int) = match (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(q), Ok(t), Ok(i)) => (q, t, i),
            (q, t, i) => {
                let e = [q.err(), t.err(), i.err()].into_iter().flatten().next();
                log::error!("cannot watch for signals: {e:?}; stop modgate with SIGKILL");
                return std::future::pending().await;
            }
        };
        let (mut quit, mut term, mut int) = (quit, term, int);
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    if self.upgrade_ready().await {
                        self.drain("SIGQUIT", HANDOFF);
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    log::error!(
                        "SIGQUIT refused: no new process is waiting on {} (start `modgate run \
                         --upgrade` first, then send SIGQUIT); still serving",
                        self.upgrade_sock
                    );
                }
                _ = term.recv() => {
                    self.drain("SIGTERM", Duration::ZERO);
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    // Stops here, at once, after the same finish as every orderly exit.
                    // Pingora's fast shutdown stops its runtimes one by one, and a listener
                    // whose reactor is already gone (the verifying origin's) spins in its
                    // accept loop until `shutdown_timeout` runs out.
                    log::info!("SIGINT: stopping at once");
                    (self.finish)();
                    std::process::exit(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_until_their_guard_drops() {
        let f = Arc::new(InFlight::default());
        let a = f.enter();
        let b = f.enter();
        assert_eq!(f.count(), 2);
        drop(a);
        assert_eq!(f.count(), 1);
        drop(b);
        assert_eq!(f.count(), 0);
    }

    #[test]
    fn only_a_listening_socket_counts_as_a_waiting_upgrade() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 41 /run/m/up.sock\n\
            0000000000000000: 00000002 00000000 00000000 0001 01 42 /run/m/bound.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 43\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 44 /tmp/with space.sock\n";
        assert!(listening_on(table, "/run/m/up.sock"));
        assert!(!listening_on(table, "/run/m/bound.sock"));
        assert!(!listening_on(table, "/run/m/other.sock"));
        assert!(listening_on(table, "/tmp/with space.sock"));
        assert!(!listening_on("", "/run/m/up.sock"));
    }

    #[test]
    fn a_drain_ends_only_after_a_quiet_spell() {
        let t0 = Instant::now();
        assert!(!drained(t0, None));
        assert!(!drained(t0 + QUIET / 2, Some(t0)));
        assert!(drained(t0 + QUIET, Some(t0)));
    }
}
