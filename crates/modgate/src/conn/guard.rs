//! The connection guard in front of a listener's HTTP service: [`GuardedApp`] admits each
//! accepted connection against the listener's caps (called at accept by [`super::accept`],
//! before any TLS handshake) and wraps its stream in a [`GuardedStream`], which enforces the [`Clock`]'s deadlines on every read. Pingora's own
//! read timeouts are per read, so a client trickling one byte at a time, or sending nothing,
//! would hold a connection for ever; here a cut connection reads as closed, after a best-effort
//! `408` naming the reason when it was cut half-way through HTTP/1.1 request headers.
//!
//! On an HTTP/2 connection it also coalesces flushes ([`FlushBatch`]): the first flush after a
//! small write yields to the other ready tasks once, so the answers of every stream served in
//! that pass leave in one `send` instead of one each.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// Bytes of writes held until a flush: Pingora's own listener buffers 1460 (one TCP segment).
const WRITE_BUFFER: usize = 1460;

use super::caps::{Counter, Over, Permit};
use super::deadline::{Clock, Cut, Deadlines};
use super::metrics::ConnMetrics;

/// What a listener's guard enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub deadlines: Deadlines,
    pub caps: super::caps::Caps,
}

/// A client stream whose reads end (as end-of-stream) once its clock's deadline passes.
pub struct GuardedStream {
    /// The connection's place (declared first: dropped before the socket closes).
    place: Option<Place>,
    /// The connection, behind a small write buffer: the socket under it has none (see
    /// [`super::accept`]), and an answer's head and a short body should leave in one `send`.
    inner: BufWriter<Stream>,
    clock: Arc<Mutex<Clock>>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: Option<Cut>,
    listener: Arc<str>,
    metrics: ConnMetrics,
    header_timeout: Duration,
    flush: FlushBatch,
}

/// What an open connection holds: its place under the caps and its count in
/// `modgate_connections_open`. Given back when the server shuts the connection down, before the
/// client can see it close: a client that reconnects at once must find its place free.
struct Place {
    _permit: Permit,
    _open: OpenGauge,
}

/// Flush coalescing for an HTTP/2 connection.
///
/// Pingora spawns one task per HTTP/2 stream; the stream task that answers wakes the
/// connection task, and tokio's work-stealing scheduler runs a task woken that way next (its
/// LIFO slot), before the other streams of the same read have answered: the connection task
/// then flushes that one answer (a `send` each, 0.44 per request under `h2load -m8`). Here the
/// first flush after a small write returns `Pending` once and wakes its own task, which tokio
/// reschedules at the back of the run queue (a task woken while it runs yields): the other
/// ready stream tasks answer first and the next flush sends them all (each answer is still its
/// own TLS record: tokio-rustls seals every write). Bounded: a flush is put off at most once,
/// a flush that the socket holds up is not put off again, and a flush after
/// [`FlushBatch::SMALL`] bytes or more (a download's DATA frames) is never put off, since
/// those writes reach the socket anyway. The per-thread scheduler (`server.work_stealing:
/// false`) already runs tasks in this order; the yield costs it one extra poll per flush.
#[derive(Debug, Default)]
struct FlushBatch {
    /// An HTTP/2 connection (TLS with ALPN h2).
    on: bool,
    /// Bytes written since the last completed flush.
    written: usize,
    /// This flush was already put off once.
    deferred: bool,
}

impl FlushBatch {
    /// Writes since the last flush at least this large are flushed at once: one default-sized
    /// HTTP/2 DATA frame.
    const SMALL: usize = 16 << 10;

    fn wrote(&mut self, n: usize) {
        self.written = self.written.saturating_add(n);
    }

    /// Whether to put this flush off (and wake the task to come back for it).
    fn defer(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.on || self.written == 0 || self.written >= Self::SMALL || self.deferred {
            return false;
        }
        self.deferred = true;
        cx.waker().wake_by_ref();
        true
    }

    fn flushed(&mut self) {
        self.written = 0;
        self.deferred = false;
    }
}

impl fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .field("cut", &self.cut)
            .finish()
    }
}

impl GuardedStream {
    fn with_clock<T>(&self, f: impl FnOnce(&mut Clock) -> T) -> T {
        f(&mut self.clock.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The request's headers are in: no deadline until it ends.
    pub fn request_started(&self) {
        self.with_clock(Clock::request_started);
    }

    /// The request ended: a kept-alive connection waits for the next one.
    pub fn request_finished(&self) {
        self.with_clock(|c| c.request_finished(Instant::now()));
    }

    /// Records the cut (once).
    fn record_cut(&mut self, why: Cut) -> bool {
        if self.cut.is_some() {
            return false;
        }
        self.cut = Some(why);
        self.metrics.cut(why);
        log::debug!(
            "listener {}: closing connection {}: {}",
            self.listener,
            self.inner.get_ref().id(),
            why.label()
        );
        true
    }

    /// Records the cut and, half-way through HTTP/1.1 headers, tries to tell the client.
    fn cut(&mut self, why: Cut, cx: &mut Context<'_>) {
        if !self.record_cut(why) {
            return;
        }
        if why == Cut::Headers && !self.with_clock(|c| c.is_http2()) {
            let answer = plain_answer(
                "408 Request Timeout",
                &format!(
                    "request headers not complete within {}s",
                    self.header_timeout.as_secs_f64()
                ),
            );
            // Best effort, never waiting: a client that does not read loses the explanation.
            let inner = Pin::new(&mut self.inner);
            if let Poll::Ready(Ok(_)) = inner.poll_write(cx, answer.as_bytes()) {
                let _ = Pin::new(&mut self.inner).poll_flush(cx);
            }
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.cut.is_some() {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.with_clock(|c| c.on_read(read, Instant::now()));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((at, why)) = this.with_clock(|c| c.deadline()) else {
                    this.timer = None;
                    return Poll::Pending;
                };
                let at = tokio::time::Instant::from_std(at);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        this.cut(why, cx);
                        Poll::Ready(Ok(()))
                    }
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.flush.wrote(n);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.flush.defer(cx) {
            return Poll::Pending;
        }
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        if flushed.is_ready() {
            this.flush.flushed();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.place = None;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            this.flush.wrote(n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.place = None;
        let _ = self.inner.flush().await;
        Shutdown::shutdown(&mut **self.inner.get_mut()).await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.get_ref().id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ref().get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ref().get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.get_ref().selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_ref().get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_ref().get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_ref().get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_ref().get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_ref().get_socket_digest()
    }
}

#[async_trait]
impl Peek for GuardedStream {
    /// Pingora peeks for the h2c preface before it reads: the same deadline applies.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let Some((at, why)) = self.with_clock(|c| c.deadline()) else {
            return self.inner.get_mut().try_peek(buf).await;
        };
        let at = tokio::time::Instant::from_std(at);
        match tokio::time::timeout_at(at, self.inner.get_mut().try_peek(buf)).await {
            Ok(peeked) => peeked,
            Err(_) => {
                self.record_cut(why);
                Err(io::Error::new(io::ErrorKind::TimedOut, why.label()))
            }
        }
    }
}

/// The guarded stream under a request's downstream session (HTTP/1.1 only: an h2 session has
/// no stream of its own).
pub fn guarded(stream: Option<&Stream>) -> Option<&GuardedStream> {
    stream.and_then(|s| s.as_any().downcast_ref::<GuardedStream>())
}

/// Wraps a listener's HTTP application: admission and deadlines for every connection.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    listener: Arc<str>,
    limits: Limits,
    counter: Arc<Counter>,
    /// This listener's connection series, resolved once.
    metrics: ConnMetrics,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, listener: &str, limits: Limits, metrics: ConnMetrics) -> GuardedApp<A> {
        GuardedApp {
            inner: Arc::new(inner),
            listener: Arc::from(listener),
            limits,
            counter: Counter::new(limits.caps),
            metrics,
        }
    }
}

/// A complete HTTP/1.1 answer that closes the connection: `status` (a status line tail, which
/// may carry further header lines) and a one-line plain-text reason.
pub(super) fn plain_answer(status: &str, reason: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    )
}

/// Tells a refused HTTP/1.1 client why, without waiting on it for long.
pub(super) async fn refuse(stream: &mut Stream, message: &str) {
    let answer = plain_answer("503 Service Unavailable\r\nRetry-After: 1", message);
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.flush().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    Shutdown::shutdown(&mut **stream).await;
}

/// Keeps `modgate_connections_open` true while a connection lives.
struct OpenGauge(Option<prometheus::IntGauge>);

impl OpenGauge {
    fn new(gauge: Option<&prometheus::IntGauge>) -> OpenGauge {
        if let Some(g) = gauge {
            g.inc();
        }
        OpenGauge(gauge.cloned())
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

impl<A> GuardedApp<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    /// The listener's name (the `listener` label of its metrics).
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// The listener's connection series (the accept loop counts its refusals there).
    pub fn metrics(&self) -> &ConnMetrics {
        &self.metrics
    }

    /// Admits a connection from `source` against the listener's caps (at accept, before any
    /// handshake).
    pub fn admit(&self, source: Option<IpAddr>) -> Result<Permit, Over> {
        self.counter.admit(source)
    }

    /// Serves an admitted connection (its handshake done) until it closes; `permit` holds its
    /// place until then.
    pub async fn serve(&self, stream: Stream, permit: Permit, shutdown: &ShutdownWatch) {
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let guarded = GuardedStream {
            place: Some(Place {
                _permit: permit,
                _open: OpenGauge::new(self.metrics.open()),
            }),
            inner: BufWriter::with_capacity(WRITE_BUFFER, stream),
            clock: Arc::new(Mutex::new(Clock::new(
                self.limits.deadlines,
                Instant::now(),
            ))),
            timer: None,
            cut: None,
            listener: self.listener.clone(),
            metrics: self.metrics.clone(),
            header_timeout: self.limits.deadlines.headers,
            flush: FlushBatch {
                on: h2,
                ..FlushBatch::default()
            },
        };
        let mut next: Option<Stream> = Some(Box::new(guarded));
        // Pingora hands a kept-alive HTTP/1.1 connection back for its next request.
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
    }

    /// Pingora's clean-up of the application, once the listener stops.
    pub async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_flush_after_a_write_is_put_off_once_and_wakes_its_task() {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut f = FlushBatch {
            on: true,
            ..FlushBatch::default()
        };
        // Nothing written: nothing to hold back.
        assert!(!f.defer(&mut cx));
        f.wrote(300);
        assert!(f.defer(&mut cx), "the first flush after a write yields");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "and wakes its task");
        assert!(
            !f.defer(&mut cx),
            "the flush it comes back for goes through"
        );
        // A flush the socket holds up (not completed) is not put off again, even after more
        // writes; a completed one starts over.
        f.wrote(300);
        assert!(!f.defer(&mut cx));
        f.flushed();
        assert!(!f.defer(&mut cx), "clean after a completed flush");
        f.wrote(300);
        assert!(f.defer(&mut cx));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        // A download's frames are flushed at once.
        f.flushed();
        f.wrote(FlushBatch::SMALL);
        assert!(!f.defer(&mut cx), "a DATA frame's worth goes out at once");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        // Not HTTP/2: never held back.
        let mut h1 = FlushBatch {
            written: 300,
            ..FlushBatch::default()
        };
        assert!(!h1.defer(&mut cx));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }
}
