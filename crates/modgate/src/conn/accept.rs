//! A client listener's accept loop, in place of Pingora's: Pingora admits nothing before a
//! connection's TLS handshake, which it allows 60 s, so one address opening idle TCP
//! connections could take every descriptor of the process. Here, at `accept`:
//!
//! 1. a connection whose descriptor lies in the process's reserve ([`super::fds`]) is closed
//!    at once (`reason="fd_limit"`; a plaintext client is told why in one non-blocking write);
//! 2. the listener's caps (in all, per source address) admit it or refuse it
//!    (`listener_limit` / `source_limit`): a plaintext client gets its `503` at once; a TLS
//!    client gets it after a short handshake in a small refusal lane, else the connection is
//!    closed;
//! 3. the TLS handshake runs under the listener's `handshake_timeout` (`reason="handshake"`);
//! 4. the admitted connection is served by the [`GuardedApp`] (deadlines between and during
//!    request headers).
//!
//! Listening sockets come from (and go to) Pingora's descriptor table, so a graceful upgrade
//! hands them over as before.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, TcpKeepalive, IO};
use pingora::server::{ListenFds, ShutdownWatch};
use tokio::sync::Semaphore;

use super::caps::Over;
use super::fds::{self, Class};
use super::guard::{plain_answer, refuse, GuardedApp};

/// Connections refused over a cap that may hold a TLS handshake at once, per listener, to be
/// told why; more are closed at once.
const REFUSAL_LANE: usize = 16;
/// How long a refused TLS client is given to complete its handshake and read its `503`.
const REFUSAL_HANDSHAKE: Duration = Duration::from_secs(2);
/// The listen backlog (Pingora's).
const BACKLOG: u32 = 65535;

/// What a listening service needs beyond its application.
pub struct AcceptOptions {
    /// The address to listen on (the key of the upgrade descriptor table too).
    pub address: String,
    pub tls: Option<TlsSettings>,
    pub keepalive: Option<TcpKeepalive>,
    pub handshake_timeout: Duration,
    pub class: Class,
    pub threads: usize,
}

/// A Pingora service that accepts a listener's connections itself.
pub struct ListenerService<A> {
    name: String,
    options: AcceptOptions,
    app: Arc<GuardedApp<A>>,
}

impl<A> ListenerService<A> {
    pub fn new(name: String, app: GuardedApp<A>, options: AcceptOptions) -> ListenerService<A> {
        ListenerService {
            name,
            options,
            app: Arc::new(app),
        }
    }
}

/// Logs `what` at most once per ten seconds per kind, with how many happened in between.
struct RateLimited {
    last: AtomicU64,
    since: AtomicU64,
}

impl RateLimited {
    const fn new() -> RateLimited {
        RateLimited {
            last: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    fn warn(&self, what: impl FnOnce(u64) -> String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.since.store(0, Ordering::Relaxed);
            log::warn!("{}", what(n));
        }
    }
}

static FD_REFUSALS: RateLimited = RateLimited::new();
static ACCEPT_ERRORS: RateLimited = RateLimited::new();

/// Binds `address`, or takes the socket a previous process handed over.
async fn listen(
    address: &str,
    fds: Option<&ListenFds>,
) -> std::io::Result<tokio::net::TcpListener> {
    if let Some(fd) = fds.and_then(|t| t.lock().get(address).copied()) {
        // SAFETY: the descriptor table holds listening sockets the previous process sent us,
        // each taken by exactly one service (the one listening on that address).
        let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std.set_nonblocking(true)?;
        return tokio::net::TcpListener::from_std(std);
    }
    let addr: SocketAddr = address
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?;
    if let Some(t) = fds {
        t.lock().add(address.to_string(), listener.as_raw_fd());
    }
    Ok(listener)
}

/// Tells a refused plaintext client why in one write that never waits, reading first what it
/// already sent (closing a socket with unread data would reset it and lose the answer).
fn refuse_now(tcp: &tokio::net::TcpStream, message: &str) {
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match tcp.try_read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let answer = plain_answer("503 Service Unavailable\r\nRetry-After: 1", message);
    let _ = tcp.try_write(answer.as_bytes());
}

impl<A> ListenerService<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn accept_loop(
        app: Arc<GuardedApp<A>>,
        listener: Arc<tokio::net::TcpListener>,
        acceptor: Option<Arc<Acceptor>>,
        options: Arc<AcceptOptions>,
        lane: Arc<Semaphore>,
        mut shutdown: ShutdownWatch,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                changed = shutdown.changed() => {
                    match changed {
                        Ok(()) if !*shutdown.borrow() => continue,
                        _ => break,
                    }
                }
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    let full = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
                    if full {
                        app.metrics().fd_limit();
                    }
                    ACCEPT_ERRORS.warn(|n| {
                        format!(
                            "listener {}: accept failed ({n} time(s)): {e}",
                            app.listener()
                        )
                    });
                    if full {
                        // The table is full: wait for descriptors to be given back rather than
                        // spin (connections stay queued in the backlog meanwhile).
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            };
            Self::on_accept(&app, tcp, peer, &acceptor, &options, &lane, &shutdown);
        }
    }

    fn on_accept(
        app: &Arc<GuardedApp<A>>,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        acceptor: &Option<Arc<Acceptor>>,
        options: &Arc<AcceptOptions>,
        lane: &Arc<Semaphore>,
        shutdown: &ShutdownWatch,
    ) {
        let listener = app.listener();
        if let Some(budget) = fds::budget() {
            let fd = u64::try_from(tcp.as_raw_fd()).unwrap_or(u64::MAX);
            if budget.refuses(fd, budget.open_estimate(), options.class) {
                app.metrics().fd_limit();
                FD_REFUSALS.warn(|n| {
                    format!(
                        "listener {listener}: refused {n} connection(s): the process is near its \
                         open-files limit ({}; {} kept for the gateway's own files and operator \
                         listeners)",
                        budget.limit(),
                        budget.reserve()
                    )
                });
                if acceptor.is_none() {
                    refuse_now(
                        &tcp,
                        "the gateway is at its connection capacity; retry shortly",
                    );
                }
                return;
            }
        }
        let permit = match app.admit(Some(peer.ip())) {
            Ok(p) => p,
            Err(over) => {
                app.metrics().over(over);
                log::debug!(
                    "listener {listener}: refusing a connection from {peer}: {}",
                    over.label()
                );
                match acceptor {
                    None => refuse_now(&tcp, over.message()),
                    Some(acceptor) => Self::refuse_tls(tcp, peer, acceptor.clone(), over, lane),
                }
                return;
            }
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        let options = options.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Some(stream) = Self::establish(tcp, peer, acceptor, &options, &app).await else {
                return;
            };
            app.serve(stream, permit, &shutdown).await;
        });
    }

    /// Wraps an accepted socket as Pingora's stream (peer address known, keepalive set).
    fn l4(
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        keepalive: Option<&TcpKeepalive>,
    ) -> L4Stream {
        let mut s = L4Stream::from(tcp);
        let digest = SocketDigest::from_raw_fd(s.as_raw_fd());
        let _ = digest.peer_addr.set(Some(peer.into()));
        s.set_socket_digest(digest);
        let _ = s.set_nodelay();
        if let Some(ka) = keepalive {
            if let Err(e) = s.set_keepalive(ka) {
                log::debug!("tcp keepalive on a connection from {peer}: {e}");
            }
        }
        s
    }

    /// The connection's stream once its TLS handshake (if any) is done in time.
    async fn establish(
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        acceptor: Option<Arc<Acceptor>>,
        options: &AcceptOptions,
        app: &GuardedApp<A>,
    ) -> Option<pingora::protocols::Stream> {
        let l4 = Self::l4(tcp, peer, options.keepalive.as_ref());
        let Some(acceptor) = acceptor else {
            return Some(Box::new(l4));
        };
        match tokio::time::timeout(options.handshake_timeout, acceptor.tls_handshake(l4)).await {
            Ok(Ok(tls)) => Some(Box::new(tls) as Box<dyn IO>),
            Ok(Err(e)) => {
                log::info!("Downstream handshake error from {peer}: {e}");
                None
            }
            Err(_) => {
                app.metrics().handshake_timed_out();
                log::debug!(
                    "listener {}: TLS handshake from {peer} not done within {}s",
                    app.listener(),
                    options.handshake_timeout.as_secs_f64()
                );
                None
            }
        }
    }

    /// A TLS client over a cap: told why after a short handshake while the lane has room,
    /// else closed at once.
    fn refuse_tls(
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        acceptor: Arc<Acceptor>,
        over: Over,
        lane: &Arc<Semaphore>,
    ) {
        let Ok(place) = lane.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _place = place;
            let l4 = Self::l4(tcp, peer, None);
            if let Ok(Ok(tls)) =
                tokio::time::timeout(REFUSAL_HANDSHAKE, acceptor.tls_handshake(l4)).await
            {
                let mut stream: pingora::protocols::Stream = Box::new(tls);
                if matches!(
                    stream.selected_alpn_proto(),
                    Some(pingora::protocols::ALPN::H2)
                ) {
                    return;
                }
                refuse(&mut stream, over.message()).await;
            }
        });
    }
}

#[async_trait]
impl<A> pingora::services::Service for ListenerService<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let listener = match listen(&self.options.address, fds.as_ref()).await {
            Ok(l) => Arc::new(l),
            Err(e) => {
                // Pingora panics here too; `modgate run` probed the address before starting.
                panic!(
                    "listener {}: cannot listen on {}: {e}",
                    self.app.listener(),
                    self.options.address
                );
            }
        };
        let acceptor = self
            .options
            .tls
            .take()
            .map(|settings| Arc::new(settings.build()));
        let options = Arc::new(AcceptOptions {
            address: self.options.address.clone(),
            tls: None,
            keepalive: self.options.keepalive.clone(),
            handshake_timeout: self.options.handshake_timeout,
            class: self.options.class,
            threads: self.options.threads,
        });
        let lane = Arc::new(Semaphore::new(REFUSAL_LANE));
        let loops: Vec<_> = (0..listeners_per_fd.max(1))
            .map(|_| {
                tokio::spawn(Self::accept_loop(
                    self.app.clone(),
                    listener.clone(),
                    acceptor.clone(),
                    options.clone(),
                    lane.clone(),
                    shutdown.clone(),
                ))
            })
            .collect();
        for l in loops {
            let _ = l.await;
        }
        log::info!("listener {}: no longer accepting", self.app.listener());
        self.app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        Some(self.options.threads.max(1))
    }
}
