//! Verified before served: the origin of every exact-version miss (`.info`, `.mod`, `.zip` by
//! GET, with a cache and its ledger). No client ever receives bytes of an exact version that
//! were not checked against the ledger.
//!
//! The proxy keeps its chain, cache, coalescing and retries, and only swaps the peer: for such a
//! request `upstream_peer` registers a [`Job`] (the real step's peer and the ledger key) and
//! returns this origin's private Unix socket; `upstream_request_filter` names the job in a
//! header. The origin takes the job, sends the request the proxy built to the real upstream,
//! and for a 200:
//! - judges the header (an encoding, a size other than the first-seen one: refused at once);
//! - reads the whole body into a [`Held`] body (in memory up to [`IN_MEMORY`], else an
//!   anonymous file in the cache's directory; when that filesystem is full, in memory within the
//!   cache's spill budget), hashing it as it arrives, and checks that it is whole;
//! - checks it against the ledger (or records it first-seen) on the blocking pool;
//! - only then answers the proxy: the whole verified body with its length, or a 502 whose
//!   reason the proxy gives the client (`x-modgate-refusal`), or the step's failure
//!   (`x-modgate-failure`, judged by the chain like a failed connection), or a 503 naming the
//!   cache (`x-modgate-unavailable`).
//!
//! Pingora stores the verified answer as for any upstream and serves the requester and every
//! waiter of its cache lock from the committed object. Identical requests in flight together
//! share one upstream fetch ([`Verifier::flights`]), and a request that arrived before a fetch
//! failed shares that failure (Pingora's lock waiters re-compete one by one after a failed
//! write: each is told the same reason at once rather than fetching again); a request that
//! arrives after the failure fetches again. Nothing of this runs on a listener's event loop:
//! the origin is its own service with its own threads, and the ledger on the blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use modgate_ledger::Artifact;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use super::chain::{Failure, FailureClass};
use super::failure::short_error;
use super::integrity::{judge_header, HeaderRefusal};
use super::metrics::ProxyMetrics;
use crate::cache::{self, CacheRuntime, IntegrityFailure, Reservation};

/// The request header naming the job (proxy → origin only).
pub const JOB_HEADER: &str = "x-modgate-verify";
/// On a 200 from the origin: the body was checked against the ledger.
pub const VERIFIED_HEADER: &str = "x-modgate-verified";
/// On a 502 from the origin: the upstream's answer was refused; the value is the reason.
pub const REFUSAL_HEADER: &str = "x-modgate-refusal";
/// On a 502 from the origin: the step failed; the value is `<class> <detail>`.
pub const FAILURE_HEADER: &str = "x-modgate-failure";
/// On a 503 from the origin: the body could not be held to be checked; the value is why.
pub const UNAVAILABLE_HEADER: &str = "x-modgate-unavailable";
/// Bodies up to this size are held in memory; larger ones in an anonymous file.
pub const IN_MEMORY: usize = 1 << 20;
/// Writes to the anonymous file are gathered to this size.
const WRITE_CHUNK: usize = 256 << 10;
/// Reads from it, when serving, are this size.
const READ_CHUNK: usize = 256 << 10;
/// A non-200 answer's body is passed on up to this size (a 404's reason).
const PASSED_BODY: usize = 64 << 10;
/// How long a failure is remembered for requests that arrived before it.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// At most this many failures are remembered at once.
const MAX_FAILURES: usize = 4096;
/// The longest one fetch may take, all of the body (a trickling upstream is cut off).
const FETCH_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// The largest `.info` or `.mod` taken (as Go's `codehost.MaxGoMod`).
const MAX_SMALL: u64 = 16 << 20;

/// What the proxy hands the origin for one attempt at one chain step.
pub struct Job {
    /// The real upstream's peer.
    pub peer: Box<HttpPeer>,
    /// The route (the shared tier's objects are per route, as the cache's); `None` when its
    /// chain answers each identity its own way: then the shared tier is never used.
    pub route: Option<String>,
    /// Its name (for the messages and the ledger's `upstream`).
    pub upstream: String,
    pub module: String,
    pub version: String,
    pub artifact: Artifact,
    /// When the client's request arrived.
    pub arrived: Instant,
}

/// A registered job, removed when dropped (if the origin did not take it).
pub struct Ticket {
    verifier: Arc<Verifier>,
    id: u64,
}

impl Ticket {
    /// The value of [`JOB_HEADER`]: this process's secret and the job's number (a job of
    /// another process, or a guessed one, is never taken).
    pub fn header_value(&self) -> String {
        format!("{}.{}", self.verifier.secret, self.id)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.verifier.lock_jobs().remove(&self.id);
    }
}

/// A body read whole from the upstream and checked.
pub enum Held {
    Memory(Vec<Bytes>),
    /// An anonymous file (gone with its last handle) and its length.
    File(Arc<File>, u64),
}

impl Held {
    pub fn len(&self) -> u64 {
        match self {
            Held::Memory(parts) => parts.iter().map(|b| b.len() as u64).sum(),
            Held::File(_, len) => *len,
        }
    }
}

/// How one fetch ended.
pub enum Fetched {
    /// A 200 whose body was checked: the upstream's header and the body (and the memory it
    /// holds of the spill budget, returned when the last request served drops it).
    Verified {
        header: Box<ResponseHeader>,
        body: Held,
        _spill: Reservation,
    },
    /// Any other answer, passed on (status, header, a bounded body).
    Passed(Box<ResponseHeader>, Bytes),
    /// The answer was refused (changed bytes, an encoding, not a module zip, the ledger
    /// unavailable): the reason.
    Refused(String),
    /// The step failed (connection, timeout, a truncated body).
    Failed {
        class: FailureClass,
        timeout: bool,
        detail: String,
    },
    /// The body could not be held to be checked (the cache's filesystem full and the spill
    /// budget spent).
    Unavailable(String),
}

impl Fetched {
    fn failed(e: &Error) -> Fetched {
        let timeout = matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        Fetched::Failed {
            class: FailureClass::of(e.etype()),
            timeout,
            detail: short_error(e),
        }
    }

    /// The `result` label of `modgate_verified_fetches_total`.
    fn label(&self) -> &'static str {
        match self {
            Fetched::Verified { .. } => "verified",
            Fetched::Passed(..) => "passed",
            Fetched::Refused(_) => "refused",
            Fetched::Failed { .. } => "failed",
            Fetched::Unavailable(_) => "unavailable",
        }
    }

    /// Remembered for the requests that arrived before it ended.
    fn is_failure(&self) -> bool {
        matches!(
            self,
            Fetched::Refused(_) | Fetched::Failed { .. } | Fetched::Unavailable(_)
        )
    }
}

/// What makes two fetches the same: the upstream, and the request it gets (path and every
/// header, the identity headers included).
type FlightKey = (String, String);

type Flight = Arc<tokio::sync::OnceCell<Arc<Fetched>>>;

/// The jobs, the fetches in flight and the failures remembered; shared by the proxies (which
/// register jobs) and the origin (which runs them).
pub struct Verifier {
    sock: String,
    /// Names this process's jobs (random, made at start).
    secret: String,
    /// The largest zip taken (`cache.max_object_size`).
    max_zip: u64,
    cache: Arc<CacheRuntime>,
    metrics: ProxyMetrics,
    connector: Connector,
    /// Where large bodies are held (the cache's directory: its filesystem).
    spill_dir: std::path::PathBuf,
    /// Bytes held in memory because that filesystem could not take them, and the limit.
    spilled: &'static AtomicUsize,
    spill_limit: usize,
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, Job>>,
    flights: Mutex<HashMap<FlightKey, Flight>>,
    failures: Mutex<HashMap<FlightKey, (Instant, Arc<Fetched>)>>,
}

impl Verifier {
    /// The verifier of the origin on `sock`; `max_zip` bounds a zip, `spill_limit` the memory
    /// for bodies `spill_dir`'s filesystem cannot take. Fails only when no random secret can
    /// be read.
    pub fn new(
        sock: String,
        cache: Arc<CacheRuntime>,
        metrics: ProxyMetrics,
        spill_dir: std::path::PathBuf,
        spill_limit: usize,
        max_zip: u64,
    ) -> std::io::Result<Arc<Verifier>> {
        Ok(Arc::new(Verifier {
            sock,
            secret: random_hex()?,
            max_zip,
            cache,
            metrics,
            connector: Connector::new(None),
            spill_dir,
            // One verifier per process: its count lives as long.
            spilled: Box::leak(Box::new(AtomicUsize::new(0))),
            spill_limit,
            next: AtomicU64::new(1),
            jobs: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }))
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `job`; the proxy sends its request to [`peer`](Self::peer) with the ticket's
    /// id in [`JOB_HEADER`].
    pub fn register(self: &Arc<Self>, job: Job) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock_jobs().insert(id, job);
        Ticket {
            verifier: self.clone(),
            id,
        }
    }

    /// The origin's peer, with the real step's connect timeouts; no read timeout (the origin
    /// answers once the whole body is checked, and bounds its own reads from the upstream).
    pub fn peer(&self, real: &HttpPeer) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new_uds(&self.sock, false, String::new())?;
        peer.options.connection_timeout = real.options.connection_timeout;
        peer.options.total_connection_timeout = real.options.total_connection_timeout;
        peer.options.write_timeout = real.options.write_timeout;
        peer.options.read_timeout = None;
        Ok(Box::new(peer))
    }

    /// The answer for `job` and the request `req`: a remembered failure, a fetch in flight
    /// joined, or a new fetch.
    async fn answer(self: &Arc<Self>, job: Job, req: RequestHeader) -> Arc<Fetched> {
        let key = flight_key(&format!("{} {}", job.upstream, job.peer), &req);
        {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            failures.retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
            if let Some((at, failed)) = failures.get(&key) {
                if job.arrived < *at {
                    return failed.clone();
                }
            }
        }
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            flights.entry(key.clone()).or_default().clone()
        };
        let this = self.clone();
        let answer = flight
            .get_or_init(|| async move {
                // In its own task: a client that goes away does not abandon the waiters.
                let fetch = tokio::spawn(async move {
                    let (upstream, peer) = (job.upstream.clone(), job.peer.to_string());
                    let fetched = tokio::time::timeout(FETCH_DEADLINE, this.fetch_shared(job, req))
                        .await
                        .unwrap_or_else(|_| Fetched::Failed {
                            class: FailureClass::Other,
                            timeout: true,
                            detail: format!(
                                "the upstream did not send the whole answer within {} minutes",
                                FETCH_DEADLINE.as_secs() / 60
                            ),
                        });
                    this.metrics.verified_fetch(fetched.label());
                    // The whole story for the operator (the client is told less).
                    match &fetched {
                        Fetched::Failed { detail, .. } => {
                            log::warn!("upstream {upstream} (Peer: {peer}): {detail}");
                        }
                        Fetched::Unavailable(why) => log::warn!("verification: {why}"),
                        _ => {}
                    }
                    Arc::new(fetched)
                });
                fetch.await.unwrap_or_else(|e| {
                    Arc::new(Fetched::Refused(format!(
                        "the gateway's verification of the upstream's answer failed: {e}"
                    )))
                })
            })
            .await
            .clone();
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(&key);
            if answer.is_failure() {
                let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
                // Bounded: past it, a failure is simply not shared (each waiter asks again).
                if failures.len() < MAX_FAILURES {
                    failures.insert(key, (Instant::now(), answer.clone()));
                }
            }
        }
        answer
    }

    /// With a shared object tier (`cluster.objects`): the object from the store if another
    /// replica put it there, else from the upstream by whichever replica takes its fetch lease
    /// (the others wait for its release, then read the store; a lease whose holder died lapses
    /// and is taken over). Without one: [`fetch`](Self::fetch).
    async fn fetch_shared(&self, job: Job, req: RequestHeader) -> Fetched {
        let (Some(shared), Some(route)) = (self.cache.shared.as_ref(), job.route.as_deref()) else {
            return self.fetch(job, req).await;
        };
        let key = cache::SharedTier::key(route, &job.module, &job.version, job.artifact);
        // This fetch as a lease holder: the replica, its process, this process's secret's first
        // characters and a number of its own (two fetches of one key never share a name).
        let holder = format!(
            "{}/{}#{}",
            shared.holder,
            self.secret.get(..8).unwrap_or(""),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        loop {
            // Subscribed before looking: a release between the look and the wait still wakes.
            let wake = shared.waiters.subscribe(&key);
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.read_shared(shared, &job, &key).await {
                Ok(Some(fetched)) => return fetched,
                Ok(None) => {}
                Err(fetched) => return fetched,
            }
            let (pool, k, h) = (shared.pool.clone(), key.clone(), holder.clone());
            let lease = tokio::task::spawn_blocking(move || {
                modgate_postgres::lease::try_acquire(&pool, &k, &h, modgate_postgres::LEASE_TTL)
            })
            .await;
            match lease {
                Ok(Ok(modgate_postgres::Lease::Acquired)) => {
                    return self.fetch_as_holder(shared, job, req, &key, &holder).await;
                }
                Ok(Ok(modgate_postgres::Lease::HeldBy { holder, expires_in })) => {
                    log::info!("shared object tier: waiting for {holder}'s fetch of {key}");
                    // Woken by the holder's release; else when its lease would lapse.
                    let _ =
                        tokio::time::timeout(expires_in + Duration::from_millis(50), woken).await;
                }
                Ok(Err(e)) => {
                    return Fetched::Refused(format!(
                        "{}@{}: the cluster's fetch lease could not be taken: {e}",
                        job.module, job.version
                    ))
                }
                Err(e) => return Fetched::Refused(format!("the fetch lease failed: {e}")),
            }
        }
    }

    /// The object from the shared store, checked against the ledger: `Ok(None)` when the store
    /// has none (or one the ledger refuses: it is removed), `Err` when the store or the ledger
    /// cannot be asked (a 503 or 502 naming it).
    async fn read_shared(
        &self,
        shared: &cache::SharedTier,
        job: &Job,
        key: &str,
    ) -> Result<Option<Fetched>, Fetched> {
        let ledger = self.cache.ledger.clone();
        let (m, v, a) = (job.module.clone(), job.version.clone(), job.artifact);
        let recorded = match tokio::task::spawn_blocking(move || ledger.get(&m, &v, a)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(Fetched::Refused(format!(
                    "{}@{}: the integrity ledger could not be consulted: {e}",
                    job.module, job.version
                )))
            }
            Err(e) => return Err(Fetched::Refused(format!("the ledger's lookup failed: {e}"))),
        };
        let unavailable = |e: &dyn std::fmt::Display| {
            Fetched::Unavailable(format!(
                "{}@{} (.{}): the shared object store: {e}; try again later",
                job.module, job.version, job.artifact
            ))
        };
        // Only bytes the ledger knows are taken from the store. A version it does not know is
        // fetched from the upstream, but only while the store can take it: a miss with the
        // store away is a 503 naming it, whether the ledger knows the version or not.
        let Some(entry) = recorded else {
            return match shared.tier.head(key).await {
                Ok(_) => Ok(None),
                Err(e) => Err(unavailable(&e)),
            };
        };
        let reading = match shared.tier.get(key, entry.size).await {
            Ok(None) => return Ok(None),
            Ok(Some(r)) => r,
            Err(modgate_objstore::TierError::TooLarge { .. }) => {
                self.drop_shared(shared, key, "larger than the ledger's record")
                    .await;
                return Ok(None);
            }
            Err(e) => return Err(unavailable(&e)),
        };
        if reading.size != entry.size {
            self.drop_shared(shared, key, "its size is not the ledger's")
                .await;
            return Ok(None);
        }
        let mut hasher = modgate_ledger::Sha256Hasher::new();
        let mut holder = Holder::new(self, Some(reading.size));
        let mut chunks = reading.chunks;
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            let chunk = chunk.map_err(|e| unavailable(&e))?;
            hasher.update(&chunk);
            holder.push(chunk).await.map_err(|why| {
                Fetched::Unavailable(format!(
                    "{}@{} (.{}): {why}; try again later",
                    job.module, job.version, job.artifact
                ))
            })?;
        }
        if hasher.bytes_hashed() != entry.size || hasher.finish() != entry.sha256 {
            self.drop_shared(shared, key, "its bytes are not the ledger's")
                .await;
            return Ok(None);
        }
        let (body, reservation) = holder.finish().await.map_err(|why| {
            Fetched::Unavailable(format!(
                "{}@{} (.{}): {why}; try again later",
                job.module, job.version, job.artifact
            ))
        })?;
        let mut header = ResponseHeader::build(200, Some(3))
            .map_err(|e| Fetched::Refused(format!("building the answer: {e}")))?;
        let content_type = match job.artifact {
            Artifact::Zip => "application/zip",
            Artifact::Mod => "text/plain; charset=utf-8",
            Artifact::Info => "application/json",
        };
        let _ = header.insert_header(http::header::CONTENT_TYPE, content_type);
        let _ = header.insert_header(http::header::CONTENT_LENGTH, entry.size.to_string());
        log::debug!("shared object tier: {key} read from {}", shared.tier.name());
        Ok(Some(Fetched::Verified {
            header: Box::new(header),
            body,
            _spill: reservation,
        }))
    }

    /// Removes an object the ledger refuses from the shared store (a corrupt or foreign one).
    async fn drop_shared(&self, shared: &cache::SharedTier, key: &str, why: &str) {
        log::error!(
            "shared object tier: {key} in {} refused: {why}; removed, fetched again",
            shared.tier.name()
        );
        if let Err(e) = shared.tier.delete(key).await {
            log::warn!("shared object tier: {e}");
        }
    }

    /// The fetch of the lease's holder: from the upstream, checked; a verified, shareable
    /// answer is put in the shared store; then the lease is released (which wakes the waiting
    /// replicas, whatever the outcome). The lease is renewed while the fetch and the put run;
    /// if this future is dropped (the fetch's deadline), the renewal stops and the lease is
    /// released all the same.
    async fn fetch_as_holder(
        &self,
        shared: &cache::SharedTier,
        job: Job,
        req: RequestHeader,
        key: &str,
        holder: &str,
    ) -> Fetched {
        // The previous holder may have put the object and released the lease between this
        // replica's look at the store and its taking the lease: look again first.
        let found = match self.read_shared(shared, &job, key).await {
            Ok(None) => None,
            Ok(Some(fetched)) | Err(fetched) => Some(fetched),
        };
        if let Some(fetched) = found {
            self.release_lease(shared, key, holder).await;
            return fetched;
        }
        let (pool, k, h) = (shared.pool.clone(), key.to_owned(), holder.to_owned());
        let renewing = tokio::spawn(async move {
            loop {
                tokio::time::sleep(modgate_postgres::LEASE_TTL / 3).await;
                let (p, key, who) = (pool.clone(), k.clone(), h.clone());
                let renewed = tokio::task::spawn_blocking(move || {
                    modgate_postgres::lease::renew(&p, &key, &who, modgate_postgres::LEASE_TTL)
                })
                .await;
                if !matches!(renewed, Ok(Ok(true))) {
                    log::warn!("shared object tier: the fetch lease of {k} was lost");
                    return;
                }
            }
        });
        let mut lease = HeldLease {
            renewing,
            release: Some((shared.pool.clone(), key.to_owned(), holder.to_owned())),
        };
        let fetched = self.fetch(job, req).await;
        if let Fetched::Verified { header, body, .. } = &fetched {
            if cache::unshareable(&header.headers).is_none() {
                let put = shared.tier.put(key, body.len(), held_chunks(body)).await;
                match put {
                    Ok(()) => {
                        log::debug!("shared object tier: {key} put in {}", shared.tier.name())
                    }
                    Err(e) => log::warn!("shared object tier: {e} (served from this replica only)"),
                }
            }
        }
        lease.renewing.abort();
        lease.release = None;
        self.release_lease(shared, key, holder).await;
        fetched
    }

    /// Gives the fetch lease of `key` up, waking the replicas waiting for it.
    async fn release_lease(&self, shared: &cache::SharedTier, key: &str, holder: &str) {
        let (pool, k, holder) = (shared.pool.clone(), key.to_owned(), holder.to_owned());
        let released = tokio::task::spawn_blocking(move || {
            modgate_postgres::lease::release(&pool, &k, &holder)
        })
        .await;
        if let Ok(Err(e)) = released {
            log::warn!(
                "shared object tier: {e} (the other replicas take the lease over when it lapses)"
            );
        }
    }

    /// One fetch from the upstream, checked.
    async fn fetch(&self, job: Job, req: RequestHeader) -> Fetched {
        // A pooled connection found dead before any answer is tried once more, on a new one.
        let mut attempt = 0;
        let mut session = loop {
            attempt += 1;
            let (mut s, reused) = match self.connector.get_http_session(&*job.peer).await {
                Ok(s) => s,
                Err(e) => return Fetched::failed(&e),
            };
            s.set_read_timeout(job.peer.options.read_timeout);
            s.set_write_timeout(job.peer.options.write_timeout);
            let sent: pingora::Result<()> = async {
                s.write_request_header(Box::new(req.clone())).await?;
                s.finish_request_body().await?;
                s.read_response_header().await
            }
            .await;
            match sent {
                Ok(()) => break s,
                Err(e) => {
                    s.shutdown().await;
                    if !(reused && attempt == 1) {
                        return Fetched::failed(&e);
                    }
                }
            }
        };
        let Some(header) = session.response_header().cloned() else {
            return Fetched::Failed {
                class: FailureClass::Other,
                timeout: false,
                detail: "no response header".into(),
            };
        };
        let header = Box::new(header);
        if header.status.as_u16() != 200 {
            let mut body = BytesMut::new();
            loop {
                match session.read_response_body().await {
                    Ok(Some(b)) if body.len() + b.len() <= PASSED_BODY => {
                        body.extend_from_slice(&b)
                    }
                    Ok(Some(_)) | Err(_) => {
                        session.shutdown().await;
                        break;
                    }
                    Ok(None) => {
                        self.release(session, &job.peer).await;
                        break;
                    }
                }
            }
            return Fetched::Passed(header, body.freeze());
        }
        let c = &self.cache;
        let length = content_length(&header.headers);
        let recorded = if length.is_some() {
            let ledger = c.ledger.clone();
            let (m, v, a) = (job.module.clone(), job.version.clone(), job.artifact);
            match tokio::task::spawn_blocking(move || ledger.get(&m, &v, a)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    session.shutdown().await;
                    return Fetched::Refused(format!(
                        "{}@{}: the integrity ledger could not be consulted: {e}",
                        job.module, job.version
                    ));
                }
                Err(e) => {
                    session.shutdown().await;
                    return Fetched::Refused(format!("the ledger's lookup failed: {e}"));
                }
            }
        } else {
            None
        };
        let mut check = match judge_header(
            &job.module,
            &job.version,
            job.artifact,
            &job.upstream,
            &header.headers,
            recorded.as_ref(),
        ) {
            Ok(check) => check,
            Err(refusal) => {
                session.shutdown().await;
                if let HeaderRefusal::Changed(message) = &refusal {
                    self.quarantine(&job, message);
                }
                return Fetched::Refused(refusal.to_string());
            }
        };
        // A body delimited only by the connection's close cannot be told whole from one cut
        // short: not taken for an exact version (HTTP/2 ends its streams explicitly).
        let chunked = header
            .headers
            .get(http::header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if session.as_http1().is_some() && length.is_none() && !chunked {
            session.shutdown().await;
            return Fetched::Failed {
                class: FailureClass::Other,
                timeout: false,
                detail: "the answer has neither a Content-Length nor chunked framing: its end \
                         cannot be told from a cut"
                    .into(),
            };
        }
        let limit = match job.artifact {
            Artifact::Zip => self.max_zip,
            Artifact::Info | Artifact::Mod => MAX_SMALL,
        };
        let too_large = |n: u64| {
            format!(
                "{}@{} (.{}) from upstream {}: {n} bytes, more than the {limit} bytes the gateway \
                 takes for a .{}; refused",
                job.module, job.version, job.artifact, job.upstream, job.artifact
            )
        };
        if let Some(l) = length.filter(|l| *l > limit) {
            session.shutdown().await;
            return Fetched::Refused(too_large(l));
        }
        let mut holder = Holder::new(self, length);
        let mut received: u64 = 0;
        loop {
            match session.read_response_body().await {
                Ok(Some(b)) => {
                    received += b.len() as u64;
                    if received > limit {
                        session.shutdown().await;
                        return Fetched::Refused(too_large(received));
                    }
                    if length.is_some_and(|l| received > l) {
                        session.shutdown().await;
                        return Fetched::Failed {
                            class: FailureClass::Other,
                            timeout: false,
                            detail: format!(
                                "the body is longer than its Content-Length ({} bytes)",
                                length.unwrap_or(0)
                            ),
                        };
                    }
                    check.update(&b);
                    if let Err(why) = holder.push(b).await {
                        session.shutdown().await;
                        return Fetched::Unavailable(format!(
                            "{}@{} (.{}): {why}; try again later",
                            job.module, job.version, job.artifact
                        ));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    session.shutdown().await;
                    let mut failed = Fetched::failed(&e);
                    if let Fetched::Failed { detail, .. } = &mut failed {
                        *detail = format!(
                            "the body was cut after {received}{} bytes: {detail}",
                            length.map(|l| format!(" of {l}")).unwrap_or_default()
                        );
                    }
                    return failed;
                }
            }
        }
        if let Some(l) = length.filter(|l| received < *l) {
            session.shutdown().await;
            return Fetched::Failed {
                class: FailureClass::Closed,
                timeout: false,
                detail: format!("the body was cut after {received} of {l} bytes"),
            };
        }
        self.release(session, &job.peer).await;
        let held = match holder.finish().await {
            Ok(h) => h,
            Err(why) => {
                return Fetched::Unavailable(format!(
                    "{}@{} (.{}): {why}; try again later",
                    job.module, job.version, job.artifact
                ))
            }
        };
        let (held, reservation) = held;
        let ledger = c.ledger.clone();
        let upstream = job.upstream.clone();
        let verdict = tokio::task::spawn_blocking(move || check.finish(&*ledger, &upstream)).await;
        match verdict {
            Ok(Ok(_)) => {}
            Ok(Err(failure)) => {
                let message = failure.message().to_string();
                match failure {
                    IntegrityFailure::Changed(_) => self.quarantine(&job, &message),
                    IntegrityFailure::Invalid(_) | IntegrityFailure::Ledger(_) => {
                        log::error!("integrity: {message}");
                    }
                }
                return Fetched::Refused(message);
            }
            Err(e) => return Fetched::Refused(format!("the ledger's check failed: {e}")),
        }
        Fetched::Verified {
            header,
            body: held,
            _spill: reservation,
        }
    }

    async fn release(
        &self,
        session: pingora::protocols::http::client::HttpSession,
        peer: &HttpPeer,
    ) {
        let mut session = session;
        if session.response_done() {
            self.connector
                .release_http_session(session, peer, peer.options.idle_timeout)
                .await;
        } else {
            session.shutdown().await;
        }
    }

    /// Changed bytes: quarantined (the next request is a 502 with the reason, unless the
    /// original is in the cache), counted and logged.
    fn quarantine(&self, job: &Job, message: &str) {
        self.cache.quarantine.insert(
            &job.module,
            &job.version,
            job.artifact,
            cache::Quarantined {
                message: message.to_string(),
            },
        );
        self.metrics.integrity_refused(job.artifact);
        log::error!("integrity: {message}");
    }
}

/// A fetch lease being held: its renewal, stopped when dropped, and (unless given up in the
/// ordinary way) its release, done when dropped (the fetch's deadline cut it short).
struct HeldLease {
    renewing: tokio::task::JoinHandle<()>,
    release: Option<(Arc<modgate_postgres::Pool>, String, String)>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewing.abort();
        if let Some((pool, key, holder)) = self.release.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || {
                    if let Err(e) = modgate_postgres::lease::release(&pool, &key, &holder) {
                        log::warn!("shared object tier: {e}");
                    }
                });
            }
        }
    }
}

/// A held body as a stream of chunks (a file's read on the blocking pool).
fn held_chunks(body: &Held) -> futures::stream::BoxStream<'static, Result<Bytes, String>> {
    use futures::StreamExt;
    match body {
        Held::Memory(parts) => futures::stream::iter(parts.clone().into_iter().map(Ok)).boxed(),
        Held::File(file, len) => {
            let (file, len) = (file.clone(), *len);
            futures::stream::unfold(0u64, move |at| {
                let file = file.clone();
                async move {
                    if at >= len {
                        return None;
                    }
                    let n = (len - at).min(READ_CHUNK as u64) as usize;
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; n];
                        file.read_exact_at(&mut buf, at).map(|()| buf)
                    })
                    .await;
                    Some(match read {
                        Ok(Ok(buf)) => (Ok(Bytes::from(buf)), at + n as u64),
                        Ok(Err(e)) => (Err(e.to_string()), len),
                        Err(e) => (Err(e.to_string()), len),
                    })
                }
            })
            .boxed()
        }
    }
}

/// Request headers that differ between requests without changing the answer: left out of the
/// flight key (each request carries its own trace).
const NOT_IN_KEY: &[&str] = &["traceparent", "tracestate"];

/// The flight key of `req` to `upstream`.
fn flight_key(upstream: &str, req: &RequestHeader) -> FlightKey {
    let mut headers: Vec<String> = req
        .headers
        .iter()
        .filter(|(n, _)| !NOT_IN_KEY.contains(&n.as_str()))
        .map(|(n, v)| format!("{}: {}", n.as_str(), String::from_utf8_lossy(v.as_bytes())))
        .collect();
    headers.sort();
    (
        upstream.to_string(),
        format!("{} {}\n{}", req.method, req.uri, headers.join("\n")),
    )
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Holds a body while it arrives: in memory up to [`IN_MEMORY`], then in an anonymous file in
/// the cache's directory; in memory within the spill budget when that file cannot be written.
struct Holder<'a> {
    verifier: &'a Verifier,
    memory: Vec<Bytes>,
    memory_len: usize,
    file: Option<Arc<File>>,
    file_len: u64,
    pending: BytesMut,
    /// The file could not be written: memory only, within the budget.
    spilled: bool,
    reservation: Reservation,
}

impl<'a> Holder<'a> {
    fn new(verifier: &'a Verifier, _length: Option<u64>) -> Holder<'a> {
        Holder {
            verifier,
            memory: Vec::new(),
            memory_len: 0,
            file: None,
            file_len: 0,
            pending: BytesMut::new(),
            spilled: false,
            reservation: Reservation::default(),
        }
    }

    /// Takes `b`, or says why it cannot be held.
    async fn push(&mut self, b: Bytes) -> Result<(), String> {
        if self.spilled {
            return self.keep_in_memory(b);
        }
        if self.file.is_none() && self.memory_len + b.len() <= IN_MEMORY {
            self.memory_len += b.len();
            self.memory.push(b);
            return Ok(());
        }
        if self.file.is_none() {
            let dir = self.verifier.spill_dir.clone();
            match tokio::task::spawn_blocking(move || anonymous_file(&dir)).await {
                Ok(Ok(f)) => {
                    self.file = Some(Arc::new(f));
                    for part in std::mem::take(&mut self.memory) {
                        self.pending.extend_from_slice(&part);
                    }
                    self.memory_len = 0;
                }
                Ok(Err(e)) => return self.fall_back(b, e.to_string()).await,
                Err(e) => return Err(format!("the gateway could not hold the body: {e}")),
            }
        }
        self.pending.extend_from_slice(&b);
        if self.pending.len() >= WRITE_CHUNK {
            if let Err(e) = self.flush().await {
                return self.fall_back(Bytes::new(), e).await;
            }
        }
        Ok(())
    }

    /// Writes what is pending to the file.
    async fn flush(&mut self) -> Result<(), String> {
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.pending).freeze();
        let at = self.file_len;
        let n = data.len() as u64;
        let kept = data.clone();
        let written = tokio::task::spawn_blocking(move || file.write_all_at(&data, at)).await;
        match written {
            Ok(Ok(())) => {
                self.file_len += n;
                Ok(())
            }
            failed => {
                // Not written (or not wholly): kept for the fall-back, which reads back only
                // the file's first `file_len` bytes.
                self.pending = BytesMut::from(&kept[..]);
                Err(match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(())) => String::new(),
                })
            }
        }
    }

    /// The cache's filesystem could not take the body (`why`): what was written is read back
    /// and the body is held in memory from now on, within the spill budget.
    async fn fall_back(&mut self, b: Bytes, why: String) -> Result<(), String> {
        let dir = self.verifier.spill_dir.display().to_string();
        let total = self.file_len as usize + self.pending.len() + self.memory_len + b.len();
        if !self
            .reservation
            .grow(self.verifier.spilled, self.verifier.spill_limit, total)
        {
            return Err(format!(
                "the gateway's cache filesystem ({dir}) cannot hold the body to check it ({why}), \
                 and the memory it may use instead is spent"
            ));
        }
        log::warn!(
            "verification: the cache filesystem ({dir}) cannot hold a body ({why}); held in memory"
        );
        self.verifier.metrics.verified_fetch("held_in_memory");
        if let Some(file) = self.file.take() {
            let len = self.file_len as usize;
            let read = tokio::task::spawn_blocking(move || {
                let mut v = vec![0u8; len];
                file.read_exact_at(&mut v, 0).map(|()| v)
            })
            .await;
            match read {
                Ok(Ok(v)) => self.memory.push(Bytes::from(v)),
                Ok(Err(e)) => return Err(format!("reading back the held body: {e}")),
                Err(e) => return Err(format!("reading back the held body: {e}")),
            }
            self.file_len = 0;
        }
        if !self.pending.is_empty() {
            self.memory.push(std::mem::take(&mut self.pending).freeze());
        }
        if !b.is_empty() {
            self.memory.push(b);
        }
        self.memory_len = self.memory.iter().map(Bytes::len).sum();
        self.spilled = true;
        Ok(())
    }

    fn keep_in_memory(&mut self, b: Bytes) -> Result<(), String> {
        if !self
            .reservation
            .grow(self.verifier.spilled, self.verifier.spill_limit, b.len())
        {
            return Err(format!(
                "the gateway's cache filesystem ({}) cannot hold the body to check it, and the \
                 memory it may use instead is spent",
                self.verifier.spill_dir.display()
            ));
        }
        self.memory_len += b.len();
        self.memory.push(b);
        Ok(())
    }

    /// The whole body.
    async fn finish(mut self) -> Result<(Held, Reservation), String> {
        if self.file.is_some() {
            if let Err(e) = self.flush().await {
                self.fall_back(Bytes::new(), e).await?;
            }
        }
        let reservation = std::mem::take(&mut self.reservation);
        Ok(match self.file.take() {
            Some(f) => (Held::File(f, self.file_len), reservation),
            None => (Held::Memory(std::mem::take(&mut self.memory)), reservation),
        })
    }
}

/// An unnamed file in `dir` (gone when closed, and after a crash); where the filesystem has
/// no `O_TMPFILE` (NFS, some FUSE), a new file unlinked at once.
fn anonymous_file(dir: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir);
    match unnamed {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            let path = dir.join(format!(
                ".modgate-verify-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
        other => other,
    }
}

/// 16 random bytes from the kernel, in hex.
fn random_hex() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The origin service (one per process, on the verifier's socket).
pub struct VerifyingOrigin(pub Arc<Verifier>);

#[async_trait]
impl HttpServerApp for VerifyingOrigin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            _ => return None,
        }
        let verifier = &self.0;
        let id = http
            .req_header()
            .headers
            .get(JOB_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once('.'))
            .filter(|(secret, _)| *secret == verifier.secret)
            .and_then(|(_, id)| id.parse::<u64>().ok());
        let job = id.and_then(|id| verifier.lock_jobs().remove(&id));
        let Some(job) = job else {
            if let Ok(resp) = answer_header(
                500,
                &[(FAILURE_HEADER, "other the verification job is unknown")],
                0,
            ) {
                let _ = http.write_response_header(resp).await;
                let _ = http.finish_body().await;
            }
            return None;
        };
        let mut req = http.req_header().clone();
        req.remove_header(JOB_HEADER);
        let answer = verifier.answer(job, req).await;
        http.set_keepalive(Some(60));
        if !serve(&mut http, &answer).await {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            _ => None,
        }
    }
}

/// A header of the origin's own answers.
fn answer_header(
    status: u16,
    extra: &[(&'static str, &str)],
    length: u64,
) -> pingora::Result<Box<ResponseHeader>> {
    let mut h = ResponseHeader::build(status, Some(extra.len() + 1))?;
    for (name, value) in extra {
        h.insert_header(*name, header_text(value))?;
    }
    h.insert_header(http::header::CONTENT_LENGTH, length)?;
    Ok(Box::new(h))
}

/// `text` as a header value: visible ASCII, at most 4 KiB.
fn header_text(text: &str) -> String {
    text.chars()
        .take(4096)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// The origin's own headers: never taken from an upstream's answer.
const OWN_HEADERS: &[&str] = &[
    VERIFIED_HEADER,
    REFUSAL_HEADER,
    FAILURE_HEADER,
    UNAVAILABLE_HEADER,
];

/// An upstream's header as passed on: without hop-by-hop headers or the origin's own.
fn passed_on(upstream: &ResponseHeader, length: u64) -> Box<ResponseHeader> {
    let mut h = Box::new(upstream.clone());
    for name in HOP_BY_HOP {
        h.remove_header(name);
    }
    for name in OWN_HEADERS.iter().chain(&["keep-alive"]) {
        h.remove_header(*name);
    }
    let _ = h.insert_header(http::header::CONTENT_LENGTH, length);
    h
}

/// Hop-by-hop headers, never passed on.
const HOP_BY_HOP: &[http::HeaderName] = &[
    http::header::CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
];

/// Sends `answer` to the proxy; whether the connection can be reused.
async fn serve(http: &mut ServerSession, answer: &Fetched) -> bool {
    match answer {
        Fetched::Verified {
            header: upstream,
            body: held,
            ..
        } => {
            let mut h = passed_on(upstream, held.len());
            if h.insert_header(VERIFIED_HEADER, "1").is_err() {
                return false;
            }
            if http.write_response_header(h).await.is_err() {
                return false;
            }
            match held {
                Held::Memory(parts) => {
                    for part in parts {
                        if http.write_response_body(part.clone(), false).await.is_err() {
                            return false;
                        }
                    }
                }
                Held::File(file, len) => {
                    let mut at = 0u64;
                    while at < *len {
                        let n = READ_CHUNK.min((*len - at) as usize);
                        let f = file.clone();
                        let read = tokio::task::spawn_blocking(move || {
                            let mut v = vec![0u8; n];
                            f.read_exact_at(&mut v, at).map(|()| v)
                        })
                        .await;
                        let Ok(Ok(chunk)) = read else {
                            return false;
                        };
                        at += n as u64;
                        if http.write_response_body(chunk.into(), false).await.is_err() {
                            return false;
                        }
                    }
                }
            }
            http.finish_body().await.is_ok()
        }
        Fetched::Passed(upstream, body) => {
            let h = passed_on(upstream, body.len() as u64);
            if http.write_response_header(h).await.is_err() {
                return false;
            }
            if !body.is_empty() && http.write_response_body(body.clone(), false).await.is_err() {
                return false;
            }
            http.finish_body().await.is_ok()
        }
        Fetched::Refused(reason) => own(http, 502, REFUSAL_HEADER, reason).await,
        Fetched::Unavailable(reason) => own(http, 503, UNAVAILABLE_HEADER, reason).await,
        Fetched::Failed {
            class,
            timeout,
            detail,
        } => {
            let value = format!("{} {detail}", class_name(*class, *timeout));
            own(http, 502, FAILURE_HEADER, &value).await
        }
    }
}

/// One of the origin's own answers: `status`, the reason in `header` and in the body.
async fn own(http: &mut ServerSession, status: u16, header: &'static str, reason: &str) -> bool {
    let body = Bytes::from(format!("{reason}\n"));
    let Ok(h) = answer_header(status, &[(header, reason)], body.len() as u64) else {
        return false;
    };
    http.write_response_header(h).await.is_ok()
        && http.write_response_body(body, false).await.is_ok()
        && http.finish_body().await.is_ok()
}

/// The name of a failure class in [`FAILURE_HEADER`].
fn class_name(class: FailureClass, timeout: bool) -> &'static str {
    if timeout {
        return "timeout";
    }
    match class {
        FailureClass::Refused => "refused",
        FailureClass::Tls => "tls",
        FailureClass::Closed => "closed",
        FailureClass::Other => "other",
    }
}

/// What the proxy reads off the origin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A 200 checked against the ledger.
    Verified,
    /// The upstream's own answer (not a 200), passed on.
    Passed,
    /// Refused: the reason for the client.
    Refused(String),
    /// The step failed: a timeout, or a failure of its class.
    Failed { timeout: bool, failure: Failure },
    /// The body could not be held to be checked: the reason (a 503).
    Unavailable(String),
}

/// Reads the origin's verdict off its answer's header (the internal headers are removed).
pub fn verdict(resp: &mut ResponseHeader) -> Verdict {
    let text = |resp: &ResponseHeader, name: &str| {
        resp.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let verified = text(resp, VERIFIED_HEADER);
    let refusal = text(resp, REFUSAL_HEADER);
    let failure = text(resp, FAILURE_HEADER);
    let unavailable = text(resp, UNAVAILABLE_HEADER);
    for name in [
        VERIFIED_HEADER,
        REFUSAL_HEADER,
        FAILURE_HEADER,
        UNAVAILABLE_HEADER,
    ] {
        resp.remove_header(name);
    }
    if let Some(r) = refusal {
        return Verdict::Refused(r);
    }
    if let Some(u) = unavailable {
        return Verdict::Unavailable(u);
    }
    if let Some(f) = failure {
        let (class, detail) = f.split_once(' ').unwrap_or((f.as_str(), ""));
        let class_of = match class {
            "refused" => FailureClass::Refused,
            "tls" => FailureClass::Tls,
            "closed" => FailureClass::Closed,
            _ => FailureClass::Other,
        };
        return Verdict::Failed {
            timeout: class == "timeout",
            failure: Failure::new(class_of, detail),
        };
    }
    if verified.is_some() && resp.status.as_u16() == 200 {
        return Verdict::Verified;
    }
    Verdict::Passed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_answer(status: u16, extra: &[(&'static str, &str)]) -> ResponseHeader {
        *answer_header(status, extra, 0).expect("header")
    }

    #[test]
    fn each_verdict_reads_back_as_sent_and_the_internal_headers_are_removed() {
        let failures = [
            (FailureClass::Refused, false, "refused"),
            (FailureClass::Tls, false, "tls"),
            (FailureClass::Closed, false, "closed"),
            (FailureClass::Other, false, "other"),
            (FailureClass::Other, true, "timeout"),
        ];
        for (class, timeout, name) in failures {
            assert_eq!(class_name(class, timeout), name);
            let value = format!("{name} the body was cut after 5 of 10 bytes");
            let mut h = origin_answer(502, &[(FAILURE_HEADER, &value)]);
            let Verdict::Failed {
                timeout: t,
                failure,
            } = verdict(&mut h)
            else {
                panic!("{name}: not a failure");
            };
            assert_eq!(t, timeout);
            if !timeout {
                assert_eq!(failure.class, class);
            }
            assert_eq!(failure.detail, "the body was cut after 5 of 10 bytes");
            assert!(h.headers.get(FAILURE_HEADER).is_none());
        }
        let mut h = origin_answer(502, &[(REFUSAL_HEADER, "m@v1 (.zip) changed upstream")]);
        assert_eq!(
            verdict(&mut h),
            Verdict::Refused("m@v1 (.zip) changed upstream".into())
        );
        let mut h = origin_answer(503, &[(UNAVAILABLE_HEADER, "the cache is full")]);
        assert_eq!(
            verdict(&mut h),
            Verdict::Unavailable("the cache is full".into())
        );
        let mut h = origin_answer(200, &[(VERIFIED_HEADER, "1")]);
        assert_eq!(verdict(&mut h), Verdict::Verified);
        assert!(h.headers.get(VERIFIED_HEADER).is_none());
        // A 200 without the mark is not taken for a checked one, nor a 404 with it.
        assert_eq!(verdict(&mut origin_answer(200, &[])), Verdict::Passed);
        assert_eq!(
            verdict(&mut origin_answer(404, &[(VERIFIED_HEADER, "1")])),
            Verdict::Passed
        );
    }

    #[test]
    fn an_upstream_cannot_forge_the_origin_s_verdict() {
        let mut up = ResponseHeader::build(404, None).expect("header");
        for name in OWN_HEADERS {
            up.insert_header(*name, "forged").expect("insert");
        }
        up.insert_header("connection", "close").expect("insert");
        up.insert_header("x-upstream", "kept").expect("insert");
        let mut passed = passed_on(&up, 3);
        for name in OWN_HEADERS {
            assert!(passed.headers.get(*name).is_none(), "{name} passed on");
        }
        assert!(passed.headers.get("connection").is_none());
        assert_eq!(passed.headers["x-upstream"], "kept");
        assert_eq!(passed.headers["content-length"], "3");
        assert_eq!(verdict(&mut passed), Verdict::Passed);
    }

    #[test]
    fn a_reason_becomes_a_header_value_whatever_it_holds() {
        assert_eq!(header_text("m@v1: a\nb\u{e9}"), "m@v1: a?b?");
        assert_eq!(header_text(&"x".repeat(10_000)).len(), 4096);
        let h = answer_header(502, &[(REFUSAL_HEADER, "line\r\nInjected: 1")], 0);
        let h = h.expect("a header");
        assert_eq!(h.headers[REFUSAL_HEADER], "line??Injected: 1");
        assert!(h.headers.get("injected").is_none());
    }

    #[test]
    fn requests_differing_in_any_header_are_different_fetches() {
        let req = |who: &str| {
            let mut r = RequestHeader::build("GET", b"/m/@v/v1.0.0.zip", None).expect("req");
            r.insert_header("Host", "up").expect("host");
            r.insert_header("X-SSL-Client-S-DN", who).expect("dn");
            r
        };
        assert_eq!(
            flight_key("up", &req("CN=a")),
            flight_key("up", &req("CN=a"))
        );
        assert_ne!(
            flight_key("up", &req("CN=a")),
            flight_key("up", &req("CN=b"))
        );
        assert_ne!(
            flight_key("up", &req("CN=a")),
            flight_key("other", &req("CN=a"))
        );
    }
}
