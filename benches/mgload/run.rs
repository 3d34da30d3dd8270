//! The run: one task per connection (HTTP/2: with `-m` stream workers sharing it; HTTP/1.1:
//! one request at a time), all drawing from one request counter that picks the path
//! round-robin and ends the run at the deadline or the request count. A connection that
//! breaks is made again; one that cannot be made (or yields nothing) three times in a row
//! gives up. Every connect, handshake and request has a timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::args::{Limit, Plan, Protocol};
use crate::stats::Stats;
use crate::tls::{negotiated, Negotiated};
use crate::{http1, http2};

/// Connections in a row that could not be made, or were made and answered nothing, before a
/// connection task gives up.
const MAX_FRUITLESS: u32 = 3;
/// Connections one task makes at most (a server closing after every answer reaches it).
const MAX_CYCLES: u64 = 10_000_000;
/// How long a finished HTTP/2 connection may take to close before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Why the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0:?} is not a name a TLS certificate can be checked against")]
    ServerName(String),
    #[error("URL {0:?}: {1}")]
    Uri(String, http::uri::InvalidUri),
}

/// What every connection task shares.
pub struct Ctx {
    plan: Plan,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    /// Absolute URIs of the paths (HTTP/2).
    uris: Vec<http::Uri>,
    /// Request bytes of the paths (HTTP/1.1).
    h1_requests: Vec<Vec<u8>>,
    /// Requests handed out so far (a few more than started at the end).
    issued: AtomicU64,
    /// When the context was made; the deadline is counted from it.
    base: Instant,
    /// No request starts after `base` + this many nanoseconds (u64::MAX: no deadline).
    deadline_ns: AtomicU64,
    /// What the first connection negotiated.
    negotiated: Mutex<Option<Negotiated>>,
}

/// The figures of a finished run.
#[derive(Debug)]
pub struct Outcome {
    /// What every connection counted, summed.
    pub stats: Stats,
    /// From the start until the last request ended.
    pub elapsed: Duration,
    /// CPU time of this process (user, system) over the run.
    pub cpu: (Duration, Duration),
    /// What the first connection negotiated (None when none was made).
    pub negotiated: Option<Negotiated>,
}

impl Ctx {
    /// Prepares the shared state (nothing connects yet).
    pub fn new(plan: Plan, tls: Arc<rustls::ClientConfig>) -> Result<Ctx, SetupError> {
        let server_name = ServerName::try_from(plan.target.host.clone())
            .map_err(|_| SetupError::ServerName(plan.target.host.clone()))?;
        let mut uris = Vec::with_capacity(plan.paths.len());
        let mut h1_requests = Vec::with_capacity(plan.paths.len());
        for p in &plan.paths {
            let text = format!("https://{}{p}", plan.target.authority);
            uris.push(text.parse().map_err(|e| SetupError::Uri(text.clone(), e))?);
            h1_requests.push(http1::request(&plan.target.authority, p));
        }
        Ok(Ctx {
            plan,
            tls: TlsConnector::from(tls),
            server_name,
            uris,
            h1_requests,
            issued: AtomicU64::new(0),
            base: Instant::now(),
            deadline_ns: AtomicU64::new(u64::MAX),
            negotiated: Mutex::new(None),
        })
    }

    /// True once the deadline (if any) has passed.
    fn past_deadline(&self) -> bool {
        let d = self.deadline_ns.load(Ordering::Relaxed);
        d != u64::MAX && self.base.elapsed().as_nanos() >= u128::from(d)
    }

    /// True once no more requests will be handed out.
    fn finished(&self) -> bool {
        if self.past_deadline() {
            return true;
        }
        match self.plan.limit {
            Limit::Requests(n) => self.issued.load(Ordering::Relaxed) >= n,
            Limit::Duration(_) => false,
        }
    }

    /// The next request's path index, or None when the run is over.
    fn ticket(&self) -> Option<usize> {
        if self.past_deadline() {
            return None;
        }
        let i = self.issued.fetch_add(1, Ordering::Relaxed);
        if let Limit::Requests(n) = self.plan.limit {
            if i >= n {
                return None;
            }
        }
        Some((i % self.plan.paths.len() as u64) as usize)
    }

    /// TCP connect and TLS handshake, checking the ALPN protocol.
    async fn connect(&self, read: Arc<AtomicU64>) -> Result<Counted, String> {
        let t = &self.plan.target;
        let tls = timeout(self.plan.connect_timeout, async {
            let tcp = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            // Lower latency for small answers; failing to set it changes only timing.
            let _ = tcp.set_nodelay(true);
            self.tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))
        })
        .await
        .map_err(|_| "connect: timed out".to_string())??;
        let got = negotiated(tls.get_ref().1);
        let want = self.plan.protocol.alpn();
        if got.alpn != want {
            return Err(format!(
                "the server did not agree to {want} (ALPN: {})",
                got.alpn
            ));
        }
        let mut first = self.negotiated.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(got);
        }
        Ok(Counted { inner: tls, read })
    }
}

/// A TLS stream that counts the (decrypted) bytes read from it.
struct Counted {
    inner: TlsStream<TcpStream>,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// CPU time (user, system) of this process so far.
pub fn cpu_time() -> (Duration, Duration) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes only into the struct it is given, which is valid (zeroed)
    // memory of the right type; on failure it writes nothing and the zeroes are used.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Runs the plan to its end and sums what every connection saw.
pub async fn run(ctx: Arc<Ctx>) -> Outcome {
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    if let Limit::Duration(d) = ctx.plan.limit {
        let at = (t0 - ctx.base) + d;
        let ns = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX - 1);
        ctx.deadline_ns.store(ns, Ordering::Relaxed);
    }
    let mut set = JoinSet::new();
    for _ in 0..ctx.plan.connections {
        let c = ctx.clone();
        match ctx.plan.protocol {
            Protocol::H2 => set.spawn(h2_connection(c)),
            Protocol::H1 => set.spawn(h1_connection(c)),
        };
    }
    let mut stats = Stats::default();
    // One pass per connection task.
    while let Some(r) = set.join_next().await {
        match r {
            Ok(s) => stats.merge(&s),
            Err(e) => stats.error(&format!("connection task ended abnormally: {e}")),
        }
    }
    let cpu1 = cpu_time();
    let end = stats.last_end.unwrap_or_else(Instant::now).max(t0);
    let negotiated = ctx
        .negotiated
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Outcome {
        elapsed: end - t0,
        cpu: (cpu1.0.saturating_sub(cpu0.0), cpu1.1.saturating_sub(cpu0.1)),
        stats,
        negotiated,
    }
}

/// Counts a connection that yielded no answer; true when the task should give up.
fn fruitless(count: &mut u32, answered: bool) -> bool {
    if answered {
        *count = 0;
        return false;
    }
    *count += 1;
    *count >= MAX_FRUITLESS
}

async fn h1_connection(ctx: Arc<Ctx>) -> Stats {
    let mut stats = Stats::default();
    let mut misses = 0u32;
    for _ in 0..MAX_CYCLES {
        if ctx.finished() {
            break;
        }
        let read = Arc::new(AtomicU64::new(0));
        let mut io = match ctx.connect(read.clone()).await {
            Ok(io) => io,
            Err(e) => {
                stats.connect_failed(&e);
                if fruitless(&mut misses, false) {
                    break;
                }
                continue;
            }
        };
        stats.connects += 1;
        let before = stats.responses;
        let mut reader = http1::Reader::new();
        // Ends when the run does (deadline or count) or the connection cannot go on.
        while let Some(i) = ctx.ticket() {
            stats.started += 1;
            let t0 = Instant::now();
            let r = timeout(
                ctx.plan.timeout,
                http1::exchange(&mut io, &mut reader, &ctx.h1_requests[i]),
            )
            .await;
            match r {
                Ok(Ok(a)) => {
                    stats.response(a.status, t0.elapsed());
                    if a.close {
                        break;
                    }
                }
                Ok(Err(http1::Fail::Connection(m))) => {
                    stats.failed(&m);
                    break;
                }
                Ok(Err(http1::Fail::Protocol(m))) => {
                    stats.errored(&m);
                    break;
                }
                Err(_) => {
                    stats.timed_out();
                    break;
                }
            }
        }
        // close_notify, briefly: the server may already be gone.
        let _ = timeout(Duration::from_millis(100), io.shutdown()).await;
        stats.bytes += read.load(Ordering::Relaxed);
        if fruitless(&mut misses, stats.responses > before) {
            break;
        }
    }
    stats
}

async fn h2_connection(ctx: Arc<Ctx>) -> Stats {
    let mut stats = Stats::default();
    let mut misses = 0u32;
    for _ in 0..MAX_CYCLES {
        if ctx.finished() {
            break;
        }
        let read = Arc::new(AtomicU64::new(0));
        let io = match ctx.connect(read.clone()).await {
            Ok(io) => io,
            Err(e) => {
                stats.connect_failed(&e);
                if fruitless(&mut misses, false) {
                    break;
                }
                continue;
            }
        };
        let (send, conn) = match timeout(ctx.plan.connect_timeout, http2::handshake(io)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                stats.connect_failed(&format!("h2 handshake: {e}"));
                stats.bytes += read.load(Ordering::Relaxed);
                if fruitless(&mut misses, false) {
                    break;
                }
                continue;
            }
            Err(_) => {
                stats.connect_failed("h2 handshake: timed out");
                if fruitless(&mut misses, false) {
                    break;
                }
                continue;
            }
        };
        stats.connects += 1;
        let mut driver = tokio::spawn(conn);
        let before = stats.responses;
        let mut streams = JoinSet::new();
        for _ in 0..ctx.plan.streams {
            streams.spawn(h2_stream(ctx.clone(), send.clone()));
        }
        drop(send);
        // One pass per stream worker.
        while let Some(r) = streams.join_next().await {
            match r {
                Ok(s) => stats.merge(&s),
                Err(e) => stats.error(&format!("stream task ended abnormally: {e}")),
            }
        }
        // Every handle is gone: the connection closes itself, or is dropped.
        if timeout(CLOSE_GRACE, &mut driver).await.is_err() {
            driver.abort();
        }
        stats.bytes += read.load(Ordering::Relaxed);
        if fruitless(&mut misses, stats.responses > before) {
            break;
        }
    }
    stats
}

/// One stream worker: requests one after another on its connection until the run ends or
/// the connection breaks.
async fn h2_stream(ctx: Arc<Ctx>, mut send: h2::client::SendRequest<Bytes>) -> Stats {
    let mut stats = Stats::default();
    while let Some(i) = ctx.ticket() {
        stats.started += 1;
        let t0 = Instant::now();
        match timeout(ctx.plan.timeout, http2::get(&mut send, &ctx.uris[i])).await {
            Ok(Ok((status, _))) => stats.response(status, t0.elapsed()),
            Ok(Err(http2::Fail::Stream(m))) => stats.errored(&m),
            Ok(Err(http2::Fail::Connection(m))) => {
                stats.failed(&m);
                break;
            }
            Err(_) => stats.timed_out(),
        }
    }
    stats
}
