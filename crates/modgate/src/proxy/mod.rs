//! The Pingora `ProxyHttp` implementation: one request from the client to an upstream chain
//! and back. The phases are thin: each is one call to a method of [`GatewayProxy`] in the file
//! of its concern (as Pingora splits `HttpProxy`'s impl across `proxy_cache.rs`,
//! `proxy_purge.rs`, …), and those methods delegate to the request's state types kept in
//! [`RequestCtx`] — the [`admit::Admission`] (what the request is for and what was decided,
//! kept whole), the [`chain::Cursor`] (where it is along the chain), the [`integrity::Guard`]
//! (the ledger check of an exact version), and the [`report::Record`].
//!
//! ```text
//!  new_ctx ──────── context.rs: the runtime model in force, kept to the end of the request (a
//!                   reload never changes a request half-way)
//!  early_request_filter ─ the headers are in: the connection's header deadline is lifted
//!  request_filter ─ request.rs: endpoints::unaudited (health, metrics); identity::resolve (TLS
//!                   peer, trusted proxy, basic / bearer; identity headers stripped); admit::admit
//!                   (listener requirements, admin endpoint, method, body, GOPROXY path
//!                   `!`-decoded, route, RBAC, checksum databases, cache plan, ledger key) →
//!                   Answer (endpoints) | Refuse (endpoints::refuse) | Forward | Git | Sumdb;
//!                   a tag a rule limited to commits could decide: its commit learnt from the
//!                   route's chain (commits.rs), then admitted again with it; ratelimit.rs
//!                   rate_check: the identity's buckets (over a limit: Refuse, 429);
//!                   hot.rs serve_hot: a plain GET of a fresh memory-tier object answered here
//!  request_cache_filter / cache_key_callback ─ caching.rs: cache on for planned GETs, key =
//!                   route + path
//!  proxy_upstream_filter ─ caching.rs: (cache miss) serve_hot again, after a concurrent write
//!                   of the same object if there is one; integrity::Guard::quarantined → 502
//!  response_cache_filter / should_serve_stale ─ caching.rs: TTL by kind and route;
//!                   stale-while-revalidate (an HTTP/2 request line made HTTP/1.1 for Pingora's
//!                   refresh); stale-if-error for mutable answers once the chain has no next step
//!  upstream_peer ── forward.rs: Cursor::current → peer (a step whose host does not resolve
//!                   falls through on `any-error`)
//!  upstream_request_filter ─ headers.rs: canonical encoded path, Host, User-Agent; every other
//!                   client header dropped except an allow-list (no credentials reach an
//!                   upstream); the upstream's configured client-certificate headers; traceparent
//!  upstream_response_filter ─ forward.rs: chain::Outcome::of_status: 404/410 → next step;
//!                   5xx etc. → next step on `any-error`, otherwise 502 with a reason;
//!                   Guard::start: an encoded body or a changed size → 502
//!  upstream_response_body_filter ─ forward.rs: Guard::body: hashed as it streams, checked
//!                   against (or recorded in) the ledger; changed bytes cut off before the end
//!  response_filter ─ headers.rs: debug headers; Server and (unless allowed) Set-Cookie removed
//!  fail_to_connect / error_while_proxy ─ failure.rs: connect errors and timeouts: next step on
//!                   `any-error`; a dead pooled connection is retried on the same step
//!  fail_to_proxy ── failure.rs: 502 / 504 with Cursor::public_summary (never a silent 404)
//!  logging ──────── finish.rs: the body bytes charged to the identity (ratelimit.rs),
//!                   one access-log line (access_line.rs), the metrics,
//!                   report::audit_record, a span for a deny; a request dropped before this
//!                   phase gets its line and record when its context drops
//! ```
//! Moving on to the next step is done with Pingora's retry loop: the failing phase returns an
//! error marked retryable and the cursor advances, and `upstream_peer` is asked again.

mod access_line;
pub mod admit;
mod caching;
pub mod chain;
mod checksum_log;
mod commits;
mod context;
mod endpoints;
mod failure;
mod finish;
mod forward;
mod headers;
mod hot;
mod integrity;
pub mod lookup;
pub mod metrics;
mod public_sums;
pub mod ratelimit;
mod refresh;
pub mod report;
mod request;
mod resolved;
pub mod retractions;
pub mod verified;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::cache::{CacheKey, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, Result};

use self::admit::Admission;
use self::chain::Cursor;
use self::report::Record;
use crate::cache::CacheRuntime;
use crate::identity::RequestIdentity;
use crate::model::{ListenerRuntime, Live, Model};
use crate::record::Trace;
use crate::server::shutdown::{self, InFlight};

/// The proxy logic for one listener.
pub struct GatewayProxy {
    live: Arc<Live>,
    /// Requests in flight across listeners (SIGTERM exits once there are none).
    inflight: Arc<InFlight>,
    /// This listener's settings at start-up: used if a reload's model lacks the listener.
    initial: Arc<ListenerRuntime>,
    cache: Option<Arc<CacheRuntime>>,
    /// Identities handed from requests to the background refreshes they start.
    refreshes: refresh::Handovers,
    /// Which commit a tag points at, for rules limited to `commits`.
    commits: commits::Commits,
    /// The gateway's own reads from a route's chain before it decides.
    lookup: lookup::Lookup,
    /// Modules' retractions, learnt from their latest go.mod.
    retracted: retractions::Retracted,
    /// What the phases count (one handle shared by every listener).
    metrics: metrics::ProxyMetrics,
    /// The verifying origin every exact-version GET is sent through (with a cache).
    verifier: Option<Arc<verified::Verifier>>,
}

impl GatewayProxy {
    pub fn new(
        live: Arc<Live>,
        listener: &str,
        inflight: Arc<InFlight>,
        cache: Option<Arc<CacheRuntime>>,
        metrics: metrics::ProxyMetrics,
        verifier: Option<Arc<verified::Verifier>>,
    ) -> anyhow::Result<Self> {
        let initial = live
            .current()
            .listeners
            .get(listener)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("listener {listener:?} is not in the model"))?;
        Ok(GatewayProxy {
            live,
            inflight,
            initial,
            cache,
            refreshes: refresh::Handovers::default(),
            commits: commits::Commits::default(),
            lookup: lookup::Lookup::default(),
            retracted: retractions::Retracted::default(),
            metrics,
            verifier,
        })
    }
}

/// Per-request state: the model it runs on and one state value per concern.
pub struct RequestCtx {
    /// Counts the request in flight until the context drops.
    _inflight: shutdown::Request,
    /// The model this request runs on, from its start to its end (a reload does not change it).
    model: Arc<Model>,
    /// This listener's settings in that model.
    listener: Arc<ListenerRuntime>,
    started: Instant,
    identity: RequestIdentity,
    /// What admission decided, whole: what the request is for (kind, module request, route,
    /// decision) and its verdict (the cache plan, the one upstream and path of a checksum
    /// database or Git host). `None` until the request is admitted (and for the unaudited
    /// endpoints).
    admission: Option<Admission>,
    cursor: Cursor,
    guard: integrity::Guard,
    /// A stale answer was served because the upstream failed.
    served_stale: bool,
    /// Why the cache did not store this answer when it could not (its filesystem is full or
    /// failing): for the audit record's reason.
    not_stored: Option<String>,
    /// Answered as a hot hit (a fresh memory-tier object, without Pingora's cache phase).
    hot: bool,
    /// The client's HTTP version, when the request header's had to change (see
    /// `should_serve_stale`).
    client_version: Option<http::Version>,
    record: Record,
    trace: Option<Trace>,
    /// An admitted request under a byte limit: what `logging` charges its bytes to.
    rate: Option<ratelimit::Ticket>,
    /// The current attempt's job at the verifying origin (an exact-version GET).
    verify: Option<verified::Ticket>,
    /// Why the answer could not be checked (the origin could not hold it): a 503.
    unavailable: Option<String>,
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.new_request_ctx()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The headers are in: the connection's header deadline no longer applies.
        if let Some(g) = crate::conn::guarded(session.as_downstream().stream()) {
            g.request_started();
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.filter_request(session, ctx).await
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        self.enable_cache(session, ctx)
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        self.cache_key(session, ctx)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        self.cacheable(session, resp, ctx)
    }

    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        self.serve_stale(session, ctx, error)
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        self.before_upstream(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.peer(session, ctx).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_headers(session, upstream_request, ctx).await
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.judge_response(session, upstream_response, ctx).await
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.response_headers(session, upstream_response, ctx).await
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(session, peer, ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.proxy_failed(peer, session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.finish(session, e, ctx).await
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // `logging` writes one line per request, errors included.
        true
    }
}
