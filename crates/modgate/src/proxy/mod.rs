//! The Pingora `ProxyHttp` implementation: one request from the client to an upstream chain
//! and back. The phases are thin: each delegates to the request's state types — the
//! [`report::Target`] and [`admit::Admission`] (what the request is for and what was decided),
//! the [`chain::Cursor`] (where it is along the chain), the [`integrity::Guard`] (the ledger
//! check of an exact version), the cache plan, and the [`report::Record`].
//!
//! ```text
//!  new_ctx ──────── the runtime model in force, kept to the end of the request (a reload
//!                   never changes a request half-way)
//!  early_request_filter ─ the headers are in: the connection's header deadline is lifted
//!  request_filter ─ endpoints::unaudited (health, metrics); identity::resolve (TLS peer,
//!                   trusted proxy, basic / bearer; identity headers stripped); admit::admit
//!                   (listener requirements, admin endpoint, method, body, GOPROXY path
//!                   `!`-decoded, route, RBAC, checksum databases, cache plan, ledger key) →
//!                   Answer (endpoints) | Refuse (endpoints::refuse) | Forward | Sumdb;
//!                   serve_hot: a plain GET of a fresh memory-tier object answered here
//!  request_cache_filter / cache_key_callback ─ cache on for planned GETs, key = route + path
//!  proxy_upstream_filter ─ (cache miss) serve_hot again, after a concurrent write of the same
//!                   object if there is one; integrity::Guard::quarantined → 502
//!  response_cache_filter / should_serve_stale ─ TTL by kind and route; stale-while-revalidate
//!                   (an HTTP/2 request line made HTTP/1.1 for Pingora's refresh); stale-if-error
//!                   for mutable answers once the chain has no next step
//!  upstream_peer ── Cursor::current → peer (a step whose host does not resolve falls through
//!                   on `any-error`)
//!  upstream_request_filter ─ canonical encoded path, Host, User-Agent; every other client
//!                   header dropped except an allow-list (no credentials reach an upstream);
//!                   the upstream's configured client-certificate headers; traceparent
//!  upstream_response_filter ─ chain::Outcome::of_status: 404/410 → next step; 5xx etc. →
//!                   next step on `any-error`, otherwise 502 with a reason;
//!                   Guard::start: an encoded body or a changed size → 502
//!  upstream_response_body_filter ─ Guard::body: hashed as it streams, checked against (or
//!                   recorded in) the ledger; changed bytes cut off before the end
//!  fail_to_connect / error_while_proxy ─ connect errors and timeouts: next step on
//!                   `any-error`; a dead pooled connection is retried on the same step
//!  fail_to_proxy ── 502 / 504 with Cursor::public_summary (never a silent 404)
//!  logging ──────── one access-log line, the metrics, report::audit_record, a span for a deny
//! ```
//! Moving on to the next step is done with Pingora's retry loop: the failing phase returns an
//! error marked retryable and the cursor advances, and `upstream_peer` is asked again.

pub mod admit;
pub mod chain;
mod commits;
mod endpoints;
mod integrity;
mod refresh;
pub mod report;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, Method};
use modgate_telemetry::AuditDecision;
use pingora::cache::{CacheKey, CachePhase, NoCacheReason, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use self::admit::{Admission, Inbound, Local, Refusal, Scope, Verdict};
use self::chain::{Cursor, Outcome};
use self::report::{CacheOutcome, Finished, Record, Target};
use crate::cache::{CachePlan, CacheRuntime};
use crate::identity::{self, RequestIdentity};
use crate::metrics;
use crate::model::{ListenerRuntime, Live, Model};
use crate::record::Trace;
use crate::respond;
use crate::server::shutdown::{self, InFlight};
use crate::upstream::{Chain, Upstream};

/// `User-Agent` modgate sends upstream.
pub const USER_AGENT: &str = concat!("modgate/", env!("CARGO_PKG_VERSION"));

/// Client request headers passed on to upstreams; everything else (cookies, credentials,
/// identity headers, proxy headers, content negotiation) stays behind. The GOPROXY protocol
/// has one representation per URL and the cache shares it between clients, so neither
/// `Accept` nor `Accept-Encoding` is forwarded: one client's preferences must never choose
/// the bytes everyone else is served (or the ledger pins). Conditional headers are forwarded
/// for mutable answers only: an exact version is always fetched whole, so its bytes are
/// checked against the ledger.
const FORWARDED_HEADERS: &[&str] = &["traceparent", "tracestate"];
const CONDITIONAL_HEADERS: &[&str] = &["if-none-match", "if-modified-since"];
/// What git smart HTTP needs besides (the body's framing and encoding, the protocol version);
/// the client's `Authorization` is never among them: the gateway sends its own.
const GIT_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "accept",
    "git-protocol",
];

/// The error type that tells the retry loop to move to the next chain step.
const FALLTHROUGH: ErrorType = ErrorType::Custom("modgate: next chain step");

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
}

impl GatewayProxy {
    pub fn new(
        live: Arc<Live>,
        listener: &str,
        inflight: Arc<InFlight>,
        cache: Option<Arc<CacheRuntime>>,
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
        })
    }

    /// The commit the tag `admission` asks for points at, from its route's chain
    /// ([`commits::Commits::resolve`]); `Ok(None)` when the upstream's `.info` does not say.
    /// Fails closed: a chain without the version's `.info` is a 404 (the request is not
    /// forwarded on a guess), a chain that fails is a 502.
    async fn commit_of(
        &self,
        ctx: &RequestCtx,
        admission: &Admission,
    ) -> Result<Option<String>, Refusal> {
        let (Some(req), Some(index)) = (&admission.request, admission.route) else {
            return Ok(None);
        };
        let Some(route) = ctx.model.gateway.routes.routes().get(index) else {
            return Ok(None);
        };
        let roles = admission
            .decision
            .as_ref()
            .map(|d| &d.roles[..])
            .unwrap_or(&[]);
        let identity = &ctx.identity;
        let headers = |u: &Upstream| match &u.forward {
            Some(f) => identity::forward_headers(f, identity, roles),
            None => Vec::new(),
        };
        let version = req.version.as_ref().map_or("", |v| v.as_str());
        match self
            .commits
            .resolve(&route.name, route.private, &route.target, req, &headers)
            .await
        {
            Ok(commits::Resolved::Commit(c)) => Ok(Some(c)),
            Ok(commits::Resolved::Untold) => {
                log::debug!(
                    "{}@{version}: the upstream's .info names no commit; rules limited to \
                     commits cannot judge this tag",
                    req.module
                );
                Ok(None)
            }
            Ok(commits::Resolved::NotFound) => Err(Refusal::NotFound(format!(
                "{}@{version}: not found upstream (its .info, which names the commit a rule \
                 limited to commits is checked against, is missing)",
                req.module
            ))),
            Err(why) => Err(Refusal::CommitUnknown(format!(
                "cannot learn which commit {}@{version} is, to check the rules limited to \
                 commits: {why}",
                req.module
            ))),
        }
    }

    /// Settles the attempt at the cursor's step (counted by upstream and outcome); returns
    /// whether the chain moved on.
    fn settle(&self, ctx: &mut RequestCtx, outcome: Outcome) -> bool {
        if let Some(up) = ctx.cursor.current(ctx.chain()) {
            metrics::upstream_attempted(&up.name, outcome.label());
        }
        let chain = chain_of(&ctx.model, ctx.target.route);
        ctx.cursor.settle(chain, outcome)
    }

    /// Takes in what admission decided; answers it when modgate answers it itself.
    /// Returns whether the request was answered.
    async fn apply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        admission: Admission,
    ) -> Result<bool> {
        // Module requests' decisions, by route, effect and rule.
        let module_decision = admission
            .decision
            .as_ref()
            .filter(|_| admission.request.is_some());
        if let Some(d) = module_decision {
            let route = ctx.route_of(admission.route).unwrap_or("-");
            metrics::access_decided(route, d.effect.as_str(), &d.rule);
        }
        ctx.target = Target {
            kind: admission.kind,
            git: admission.git.clone(),
            request: admission.request,
            route: admission.route,
            decision: admission.decision,
            purge: None,
        };
        if !admission.principals.is_empty() {
            ctx.identity.principals = admission.principals;
            ctx.identity.matched = admission.matched;
        }
        match admission.verdict {
            Verdict::Refuse(r) => {
                self.refuse(session, ctx, &r).await?;
                Ok(true)
            }
            Verdict::Answer(Local::GoImport { root, proxy }) => {
                ctx.record.decision = AuditDecision::Allow;
                let page = admit::go_import_page(&root, &proxy);
                respond::ok(session, "text/html; charset=utf-8", Bytes::from(page)).await?;
                Ok(true)
            }
            Verdict::Answer(Local::SumdbSupported) => {
                ctx.record.decision = AuditDecision::Allow;
                respond::ok(session, "text/plain; charset=utf-8", Bytes::new()).await?;
                Ok(true)
            }
            Verdict::Answer(Local::Purge {
                target,
                module,
                version,
            }) => {
                let Some(c) = self.cache.as_deref() else {
                    let r = Refusal::NotFound("this gateway has no cache".into());
                    self.refuse(session, ctx, &r).await?;
                    return Ok(true);
                };
                ctx.target.request = None;
                ctx.target.purge = Some((module.clone(), version.clone()));
                endpoints::purge(
                    session,
                    &mut ctx.record,
                    c,
                    {
                        // The repositories of the model in force, in the directory the
                        // origin started with (a changed git_dir waits for an upgrade).
                        let config = self.live.current().config.clone();
                        let dir = crate::gitorigin::mirrors_dir(self.live.started());
                        move |m: &str| crate::gitorigin::request_mirror_refresh(&config, &dir, m)
                    },
                    &target,
                    &module,
                    version.as_deref(),
                )
                .await?;
                Ok(true)
            }
            Verdict::Forward {
                cache_plan,
                ledger_key,
            } => {
                ctx.record.decision = AuditDecision::Allow;
                let module = ctx
                    .target
                    .request
                    .as_ref()
                    .map_or("", |r| r.module.as_str());
                ctx.guard = integrity::Guard::new(module, ledger_key);
                ctx.cache_plan = cache_plan;
                Ok(false)
            }
            Verdict::Git { host, path } => {
                ctx.record.decision = AuditDecision::Allow;
                ctx.cursor = Cursor::single(host);
                ctx.single_path = Some(path);
                ctx.git = true;
                Ok(false)
            }
            Verdict::Sumdb {
                db,
                path,
                cache_plan,
            } => {
                ctx.record.decision = AuditDecision::Allow;
                ctx.cursor = Cursor::single(db);
                ctx.single_path = Some(path);
                ctx.cache_plan = cache_plan;
                Ok(false)
            }
        }
    }

    /// Answers an admitted, cacheable request from a fresh memory-tier object when the normal
    /// cache path would answer it with the same whole stored response: a plain GET (no range,
    /// no condition: those take Pingora's path). The head is the stored one prepared once
    /// ([`modgate_cache::HotMeta`]) plus its `Age`, then the range filter and `response_filter`
    /// as on any hit.
    /// Returns whether the request was answered.
    ///
    /// `holding_lock`: the request holds the cache write lock as a miss (`proxy_upstream_filter`);
    /// the cache is turned off before anything is written, so the lock is let go at once and
    /// the requests waiting on it look again, however slowly this client reads.
    async fn serve_hot(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        holding_lock: bool,
    ) -> Result<bool> {
        let (Some(c), Some(plan)) = (self.cache.as_deref(), ctx.cache_plan.as_ref()) else {
            return Ok(false);
        };
        if ctx.git || !hot_eligible(session.req_header()) {
            return Ok(false);
        }
        let key = plan.key();
        let hit = if holding_lock {
            // another request may be writing the object right now (Pingora lets the lock go
            // once a write streams): its result, rather than a second upstream fetch
            c.storage.hot_hit_after_write(&key, HOT_WRITE_WAIT).await
        } else {
            c.storage.hot_hit(&key, std::time::SystemTime::now())
        };
        let Some(hit) = hit else {
            return Ok(false);
        };
        let now = std::time::SystemTime::now();
        if holding_lock && session.cache.enabled() {
            session.cache.disable(NoCacheReason::DeclinedToUpstream);
        }
        ctx.hot = true;
        metrics::hot_hit();
        let mut head = hit.head(now);
        // As Pingora's hit path: the range filter (a memory hit can seek; with no Range header it
        // only adds `Accept-Ranges`), then response_filter.
        self.range_header_filter(session, &mut head, ctx);
        self.response_filter(session, &mut head, ctx).await?;
        // A failed write is the client's (as on Pingora's hit path), never an upstream's.
        session
            .write_response_header(head, false)
            .await
            .map_err(|e| e.into_down())?;
        session
            .write_response_body(Some(hit.body), true)
            .await
            .map_err(|e| e.into_down())?;
        Ok(true)
    }

    async fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, r: &Refusal) -> Result<()> {
        if let Some(reason) = r.auth_failure() {
            metrics::auth_failed(reason);
        }
        endpoints::refuse(session, &mut ctx.record, r).await
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
    target: Target,
    cursor: Cursor,
    /// A request with one upstream (checksum database, Git host): the path to ask it for.
    single_path: Option<String>,
    /// A git smart HTTP request (its body and git headers go to the host).
    git: bool,
    guard: integrity::Guard,
    /// How this request is cached (None: not cached).
    cache_plan: Option<CachePlan>,
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
}

impl RequestCtx {
    fn route(&self) -> Option<&modgate_policy::Route<Chain>> {
        self.target
            .route
            .and_then(|i| self.model.gateway.routes.routes().get(i))
    }

    fn route_of(&self, index: Option<usize>) -> Option<&str> {
        index
            .and_then(|i| self.model.gateway.routes.routes().get(i))
            .map(|r| r.name.as_str())
    }

    fn chain(&self) -> Option<&Chain> {
        chain_of(&self.model, self.target.route)
    }

    fn upstream(&self) -> Option<Arc<Upstream>> {
        self.cursor.current(self.chain())
    }

    /// How the cache took part; `None` when the request was not cacheable.
    fn cache_outcome(&self, session: &Session) -> Option<CacheOutcome> {
        self.cache_plan.as_ref()?;
        if self.hot {
            return Some(CacheOutcome::Hit);
        }
        if self.not_stored.is_some() {
            return Some(CacheOutcome::NotStored);
        }
        Some(CacheOutcome::of(
            session.cache.phase(),
            self.served_stale,
            self.guard.refusal().is_some(),
        ))
    }

    /// What the request was for, in a client-facing failure message.
    fn what(&self) -> String {
        if let Some((repo, service)) = &self.target.git {
            return format!("{repo} ({service})");
        }
        match (&self.target.request, &self.cursor.current(None)) {
            (Some(r), _) => admit::describe(r),
            (None, Some(db)) => format!(
                "checksum database {} {}",
                db.name,
                self.single_path.as_deref().unwrap_or("")
            ),
            (None, None) => "request".to_string(),
        }
    }
}

/// How long a miss holding the cache lock waits for another request's write of the same object
/// before fetching it itself.
const HOT_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Request headers that make Pingora's hit path answer something other than the whole stored
/// response (a range, a 304, a 412): such requests are never hot hits.
const NOT_HOT_HEADERS: &[http::HeaderName] = &[
    http::header::RANGE,
    http::header::IF_RANGE,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_MATCH,
    http::header::IF_UNMODIFIED_SINCE,
];

/// Whether a request may be answered as a hot hit: a GET (a HEAD takes the normal path) with
/// none of [`NOT_HOT_HEADERS`].
fn hot_eligible(req: &RequestHeader) -> bool {
    req.method == Method::GET && !NOT_HOT_HEADERS.iter().any(|h| req.headers.contains_key(h))
}

/// The chain of route `index` in `model`.
fn chain_of(model: &Model, index: Option<usize>) -> Option<&Chain> {
    index
        .and_then(|i| model.gateway.routes.routes().get(i))
        .map(|r| &r.target)
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

fn short_error(e: &Error) -> String {
    match &e.context {
        Some(c) => format!("{}: {}", e.etype().as_str(), c.as_str()),
        None => e.etype().as_str().to_string(),
    }
}

/// The cache's own failure (its filesystem full or failing) behind a Pingora error, if that is
/// what it is: never the upstream's.
fn cache_failure(e: &Error) -> Option<&modgate_cache::CacheError> {
    let mut e = e;
    // Pingora may wrap the storage's error in another of its own (a few levels at most).
    // A cause is kept as given: the error itself, or boxed.
    for _ in 0..8 {
        let cause = e.cause.as_deref()?;
        let found = cause
            .downcast_ref::<modgate_cache::CacheError>()
            .or_else(|| {
                cause
                    .downcast_ref::<Box<modgate_cache::CacheError>>()
                    .map(|b| &**b)
            });
        if let Some(c) = found {
            return c.is_storage_failure().then_some(c);
        }
        e = cause
            .downcast_ref::<Error>()
            .or_else(|| cause.downcast_ref::<Box<Error>>().map(|b| &**b))?;
    }
    None
}

/// The `Content-Length` of an answer, unless `Transfer-Encoding` overrides it.
fn content_length(resp: &ResponseHeader) -> Option<u64> {
    if resp.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    resp.headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn failure(e: &Error) -> Outcome {
    if is_timeout(e) {
        Outcome::Timeout(short_error(e))
    } else {
        Outcome::Failed(short_error(e))
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        let model = self.live.current();
        let listener = model
            .listeners
            .get(&self.initial.name)
            .cloned()
            .unwrap_or_else(|| self.initial.clone());
        RequestCtx {
            _inflight: self.inflight.enter(),
            model,
            listener,
            started: Instant::now(),
            identity: RequestIdentity::default(),
            target: Target::default(),
            cursor: Cursor::default(),
            single_path: None,
            git: false,
            guard: integrity::Guard::default(),
            cache_plan: None,
            served_stale: false,
            not_stored: None,
            hot: false,
            client_version: None,
            record: Record::default(),
            trace: None,
        }
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
        // Draining: this connection closes after this answer, and the answer says so.
        session.set_keepalive((!shutdown::draining()).then_some(ctx.listener.keepalive_secs));
        // HTTP/1.1 pipelining (RFC 9112 §9.3.2): a request sent before the previous answer is
        // answered in order on the same connection, instead of being dropped with the
        // connection (HTTP/2 and TLS-less h2c ignore this).
        session.as_downstream_mut().set_pipelining_enabled(true);
        if session.subrequest_ctx.is_some() {
            // Pingora's background refresh of a stale cached answer (stale-while-revalidate),
            // for a request admitted a moment ago: nothing to decide again, nothing a client
            // sees, no audit record (the request it serves has one). It asks the upstream as
            // that request would have: with the identity (and roles) it handed over.
            let scope = Scope {
                gateway: &ctx.model.gateway,
                ttl: &ctx.model.ttl,
                caching: self.cache.is_some(),
                listener: Some(&ctx.listener),
                refresh: true,
            };
            let inbound = Inbound {
                head: session.req_header(),
                peer: None,
                commit: None,
            };
            let admission = admit::admit(&scope, &inbound, &ctx.identity);
            if self.apply(session, ctx, admission).await? {
                return Ok(true);
            }
            let inherited = ctx
                .cache_plan
                .as_ref()
                .and_then(|p| self.refreshes.take(&p.primary()));
            if let Some(h) = &inherited {
                ctx.identity = h.identity.clone();
                if h.decision.is_some() {
                    ctx.target.decision = h.decision.clone();
                }
            }
            let forwards_identity = ctx
                .chain()
                .is_some_and(|c| c.steps.iter().any(|s| s.upstream.forward.is_some()));
            if inherited.is_none() && forwards_identity {
                // Without the identity the upstream would be asked as nobody, and might answer
                // as it answers strangers: the stale answer stays, and the next request
                // starts another refresh.
                respond::text(
                    session,
                    503,
                    "refresh skipped: no identity to ask with",
                    &[],
                )
                .await?;
                return Ok(true);
            }
            return Ok(false);
        }
        // A connection whose client certificate is missing (where required), unreadable or
        // not accepted is refused whatever it asks for, health and metrics included.
        let tls = ctx.listener.tls.as_deref();
        let refused = identity::connection_refusal(session, tls);
        let target = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str());
        if target == "/metrics" {
            ctx.model.recorder.sync_metrics();
            if let Some(c) = &self.cache {
                metrics::cache_tiers(&c.storage.stats());
                // Counted by the storage when it refuses a write, before the answer streams:
                // a scrape sees it at once, not only after the next request ends.
                let (no_space, io) = c.storage.write_failures();
                metrics::cache_write_failures(no_space, io);
            }
        }
        if let (None, Some((content_type, body))) =
            (&refused, endpoints::unaudited(target, ctx.listener.metrics))
        {
            respond::ok(session, content_type, body).await?;
            return Ok(true);
        }
        ctx.record.enabled = true;
        ctx.record.seen = Some(Box::new(report::Seen {
            client: session
                .client_addr()
                .map_or_else(|| "-".into(), |a| a.to_string()),
            method: session.req_header().method.to_string(),
            path: target.to_string(),
        }));
        ctx.trace = Some(ctx.model.recorder.begin(session.req_header()));
        if let Some(e) = refused {
            let admission = Admission::refused(Refusal::Identity(e));
            return self.apply(session, ctx, admission).await;
        }

        let authenticator = ctx.model.gateway.auth.current.load_full();
        let admission =
            match identity::resolve(session, &ctx.listener.identity, authenticator).await {
                Ok(id) => {
                    ctx.identity = id;
                    let scope = Scope {
                        gateway: &ctx.model.gateway,
                        ttl: &ctx.model.ttl,
                        caching: self.cache.is_some(),
                        listener: Some(&ctx.listener),
                        refresh: false,
                    };
                    let peer = session
                        .client_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| a.ip());
                    let inbound = Inbound {
                        head: session.req_header(),
                        peer,
                        commit: None,
                    };
                    let admission = admit::admit(&scope, &inbound, &ctx.identity);
                    if admission.commit_needed {
                        // A rule limited to `commits` could decide this tag: learn its commit
                        // from the upstream, then decide again with it.
                        match self.commit_of(ctx, &admission).await {
                            Ok(Some(commit)) => {
                                let inbound = Inbound {
                                    commit: Some(&commit),
                                    ..inbound
                                };
                                admit::admit(&scope, &inbound, &ctx.identity)
                            }
                            Ok(None) => admission,
                            Err(refusal) => Admission {
                                verdict: admit::Verdict::Refuse(refusal),
                                ..admission
                            },
                        }
                    } else {
                        admission
                    }
                }
                Err(failed) => {
                    // The audit record names what was presented (a user name, never a secret).
                    ctx.identity = failed.presented;
                    Admission::refused(Refusal::Identity(failed.error))
                }
            };
        // `audit.fail_mode: closed`: nothing is served while it could not be audited.
        if let Some(why) = ctx.model.recorder.unaudited_refusal() {
            endpoints::error(session, &mut ctx.record, 503, why).await?;
            return Ok(true);
        }
        if self.apply(session, ctx, admission).await? {
            return Ok(true);
        }
        self.serve_hot(session, ctx, false).await
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if let (Some(c), Some(_)) = (&self.cache, &ctx.cache_plan) {
            // HEAD is answered by the upstream: a cached HEAD would have no body to serve GETs.
            if session.req_header().method == Method::GET {
                session.cache.enable(
                    c.storage,
                    Some(c.storage.eviction_manager()),
                    None,
                    Some(c.lock),
                    None,
                );
                session
                    .cache
                    .set_max_file_size_bytes(c.storage.max_object_bytes());
            }
        }
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        match &ctx.cache_plan {
            Some(plan) => Ok(plan.key()),
            None => Error::e_explain(ErrorType::InternalError, "cache enabled without a plan"),
        }
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let Some(plan) = &ctx.cache_plan else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        if session.subrequest_ctx.is_some() && resp.status != http::StatusCode::OK {
            // A background refresh replaces a good answer only with a good answer: a 404 may
            // be how an upstream answers a caller it does not take for the one it knows, and
            // is left for a request of a client to find (the stale answer stays meanwhile).
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        }
        let cacheable = plan.cacheable(resp);
        // An answer the cache's filesystem cannot hold is not stored, and goes to the client
        // from the upstream as an uncached one would (checked by the ledger all the same): a
        // full cache never fails a request. Pingora would give the request up if a write
        // failed once the client is being served from the cache.
        if let (RespCacheable::Cacheable(_), Some(c)) = (&cacheable, self.cache.as_deref()) {
            if let Err(e) = c.storage.check_space(&plan.primary(), content_length(resp)) {
                ctx.not_stored = Some(format!("not stored in the cache: {e}"));
                return Ok(RespCacheable::Uncacheable(NoCacheReason::StorageError));
            }
        }
        Ok(cacheable)
    }

    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // Only when the upstream failed (never to skip a revalidation), and only mutable
        // answers (list, @latest): an exact version is never stale.
        // A chain step that may fall through (`any-error`) gets its chance first: the next
        // upstream is asked before a stale answer is.
        let Some(plan) = ctx.cache_plan.as_ref().filter(|p| !p.immutable()) else {
            return false;
        };
        if error.is_none() {
            // Stale-while-revalidate (Pingora has checked the answer's window): the stale answer
            // now, one background refresh for everyone.
            let swr = !plan.stale_while_revalidate.is_zero();
            if swr {
                // Pingora may start the refresh now: it asks the upstream as this request.
                let inherited = refresh::Inherited {
                    identity: ctx.identity.clone(),
                    decision: ctx.target.decision.clone(),
                };
                if !self.refreshes.put(&plan.primary(), inherited) {
                    log::debug!("too many refreshes pending: this one goes without an identity");
                }
            }
            if swr && session.req_header().version == http::Version::HTTP_2 {
                // Pingora 0.9.1 builds the refresh from this request's HTTP/1 form, and an
                // `HTTP/2` request line does not parse: the refresh never ran and an HTTP/2
                // client (`go` over https) got the stale answer until the window closed. The
                // request line is what changes; the answer still goes out over HTTP/2, and the
                // access line keeps the client's version.
                ctx.client_version.get_or_insert(http::Version::HTTP_2);
                session.req_header_mut().set_version(http::Version::HTTP_11);
            }
            return swr;
        }
        let serve = !ctx.cursor.has_next(ctx.chain());
        if serve {
            ctx.served_stale = true;
            metrics::stale_served();
        }
        serve
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // A miss that took the cache lock after another request's write of the object began or
        // ended (its lookup ran before that write was visible, its lock request after Pingora
        // let the lock go, which it does once a write streams): Pingora does not look again, so
        // without this it would fetch the object a second time. Answered from memory instead,
        // after that write ends (Pingora then drops the lock).
        if session.cache.enabled()
            && session.cache.phase() == CachePhase::Miss
            && self.serve_hot(session, ctx, true).await?
        {
            return Ok(false);
        }
        // Not in the cache: changed bytes already refused for this artifact are not fetched
        // again until an operator accepts them.
        let refused = self.cache.as_deref().and_then(|c| ctx.guard.quarantined(c));
        if let Some(message) = refused {
            respond::text(session, 502, &message, &[]).await?;
            ctx.record.reason = Some(message);
            return Ok(false);
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let private = ctx.route().is_some_and(|r| r.private);
        loop {
            let Some(upstream) = ctx.upstream() else {
                return Error::e_explain(ErrorType::InternalError, "no upstream for this step");
            };
            if private && !upstream.private {
                // Configuration loading refuses this; never let a private path out anyway.
                return Error::e_explain(
                    ErrorType::InternalError,
                    format!(
                        "refusing to send a private module path to public upstream {}",
                        upstream.name
                    ),
                );
            }
            ctx.cursor.begin(&upstream.name);
            match upstream.peer().await {
                Ok(peer) => return Ok(peer),
                Err(e) => {
                    if !self.settle(ctx, Outcome::Failed(short_error(&e))) {
                        return Err(e.into_up());
                    }
                }
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(upstream) = ctx.upstream() else {
            return Error::e_explain(ErrorType::InternalError, "no upstream for this request");
        };
        let path = match (&ctx.single_path, &ctx.target.request) {
            (Some(path), _) => upstream.request_path(path, None),
            (None, Some(req)) => upstream.request_path(&req.upstream_path(), Some(&req.module)),
            (None, None) => {
                return Error::e_explain(ErrorType::InternalError, "no request to forward")
            }
        };
        let path = match path {
            Ok(p) => p,
            Err(e) => return Error::e_explain(ErrorType::InternalError, e),
        };
        let uri: http::Uri = path
            .parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "building upstream URI", e))?;
        upstream_request.set_uri(uri);
        let exact = ctx.guard.exact();
        let git = ctx.git;
        let drop: Vec<HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|n| {
                !(FORWARDED_HEADERS.contains(&n.as_str())
                    || (!exact && CONDITIONAL_HEADERS.contains(&n.as_str()))
                    || (git && GIT_HEADERS.contains(&n.as_str())))
            })
            .cloned()
            .collect();
        for name in drop {
            upstream_request.remove_header(&name);
        }
        upstream_request.insert_header("Host", upstream.host_header.as_str())?;
        upstream_request.insert_header("User-Agent", USER_AGENT)?;
        // The gateway's own credential for this upstream (every client's was dropped above).
        if let Some(credential) = upstream.credential() {
            upstream_request.insert_header("Authorization", credential)?;
        }
        // GOPROXY reads have no body. Saying so keeps Pingora from framing an HTTP/2 client's
        // request (no Content-Length, END_STREAM on an empty DATA frame) as a chunked body,
        // whose terminator a keep-alive HTTP/1.1 upstream would read as the next request. A git
        // request's body (the negotiation) streams through with its own framing.
        if !git {
            upstream_request.insert_header("Content-Length", "0")?;
        }
        if let Some(forward) = &upstream.forward {
            let roles = ctx
                .target
                .decision
                .as_ref()
                .map(|d| &d.roles[..])
                .unwrap_or(&[]);
            for (name, value) in identity::forward_headers(forward, &ctx.identity, roles) {
                upstream_request.insert_header(name, value)?;
            }
        }
        if let Some(tp) = ctx.trace.as_ref().and_then(|t| t.upstream_traceparent()) {
            upstream_request.insert_header("traceparent", tp)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        // An exact version, and git smart HTTP, are accepted only as a 200 (a Git host's
        // redirect would send the client to another host, with its address).
        let outcome = Outcome::of_status(status, ctx.guard.exact() || ctx.git);
        match outcome {
            Outcome::Answered(_) => {
                self.settle(ctx, outcome);
                // HEAD answers carry no bytes: they never feed (or trip) the ledger.
                if status == 200 && session.req_header().method == Method::GET {
                    if let Some(c) = self.cache.as_deref() {
                        let upstream = ctx.cursor.last_upstream().unwrap_or("").to_string();
                        if let Err(message) = ctx.guard.start(c, upstream_response, &upstream).await
                        {
                            return Error::e_explain(ErrorType::HTTPStatus(502), message);
                        }
                    }
                }
                Ok(())
            }
            Outcome::NotFound(_) => {
                if self.settle(ctx, outcome) {
                    Err(Error::new(FALLTHROUGH))
                } else {
                    // The last word: pass the upstream's 404/410 through so that
                    // `GOPROXY=modgate,direct` falls through.
                    Ok(())
                }
            }
            _ => {
                if self.settle(ctx, outcome) {
                    Err(Error::new(FALLTHROUGH))
                } else {
                    Error::e_explain(
                        ErrorType::HTTPStatus(502),
                        format!("upstream answered {status}"),
                    )
                }
            }
        }
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let upstream = ctx.cursor.last_upstream().unwrap_or("");
        let checked = ctx.guard.body(
            body.as_ref(),
            end_of_stream,
            self.cache.as_deref(),
            upstream,
        );
        match checked {
            Ok(()) => Ok(None),
            // The client is cut off before the last byte and the cache never commits the
            // object.
            Err(message) => Error::e_explain(ErrorType::Custom("modgate: integrity"), message),
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if shutdown::draining() {
            // A drain that began while this request was in flight.
            session.set_keepalive(None);
        }
        ctx.record.status_sent = upstream_response.status.as_u16();
        if ctx.listener.debug_headers {
            let not_stored = ctx.cache_outcome(session) == Some(CacheOutcome::NotStored);
            if ctx.cache_plan.is_some() && (ctx.hot || session.cache.enabled() || not_stored) {
                let outcome = if ctx.hot {
                    CacheOutcome::Hit
                } else if not_stored {
                    CacheOutcome::NotStored
                } else {
                    CacheOutcome::of(session.cache.phase(), ctx.served_stale, false)
                };
                upstream_response.insert_header("X-Modgate-Cache", outcome.as_str())?;
            }
            if let Some(route) = ctx.route() {
                upstream_response.insert_header("X-Modgate-Route", route.name.as_str())?;
            }
            if let Some(a) = ctx.cursor.last_upstream() {
                upstream_response.insert_header("X-Modgate-Upstream", a)?;
            }
        }
        // What software the origin runs is nobody's business but the operator's.
        upstream_response.remove_header(&http::header::SERVER);
        // An upstream's cookies are its business with modgate, not with every client (cached
        // answers never carry one: an answer that sets a cookie is not cached).
        let pass_cookies = ctx.upstream().is_some_and(|u| u.forward_set_cookie);
        if !pass_cookies {
            upstream_response.remove_header(&http::header::SET_COOKIE);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let moved = self.settle(ctx, failure(&e));
        e.set_retry(moved);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if *e.etype() == FALLTHROUGH {
            // The step was settled (and advanced) in upstream_response_filter.
            let mut e = e;
            e.set_retry(true);
            return e;
        }
        if let Some(cause) = cache_failure(&e) {
            // The cache failed while the answer streamed through it: the upstream answered,
            // and is neither blamed nor asked again.
            ctx.not_stored = Some(format!(
                "the cache failed while storing the answer: {cause}"
            ));
            let mut e = e;
            e.set_retry(false);
            return e;
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if session.response_written().is_some() {
            // Part of the answer is already on its way to the client: nothing can be retried.
            e.set_retry(false);
            return e;
        }
        let idempotent = session.req_header().method.is_idempotent();
        if matches!(e.etype(), ErrorType::HTTPStatus(_)) {
            e.set_retry(false);
            return e;
        }
        // A pooled connection that turned out dead: try the same step once more.
        e.retry.decide_reuse(client_reused);
        if idempotent && e.retry() {
            ctx.cursor.retry_same();
            return e;
        }
        let moved = self.settle(ctx, failure(&e)) && idempotent;
        e.set_retry(moved);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // An answer given here during a drain closes its connection, as every other does.
        if shutdown::draining() {
            session.set_keepalive(None);
        }
        if session.response_written().is_some() {
            // The answer had begun: the client was told a status, then the transfer failed.
            let by = match e.esource() {
                ErrorSource::Downstream => "by the client",
                ErrorSource::Upstream => "by the upstream",
                _ => "by the gateway",
            };
            ctx.record.cut = Some(format!("{by} ({})", short_error(e)));
        }
        if *e.esource() == ErrorSource::Downstream {
            let code = match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            };
            if code > 0 && session.response_written().is_none() {
                let _ = respond::text(session, code, "malformed request", &[]).await;
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        if let Some(cause) = cache_failure(e) {
            // Not the upstream's doing: say so (when nothing was sent yet).
            let message = format!(
                "{}: the gateway's cache failed while storing the answer ({cause}); try again",
                ctx.what()
            );
            ctx.not_stored.get_or_insert_with(|| message.clone());
            if session.response_written().is_none() {
                if let Err(err) = respond::text(session, 503, &message, &[]).await {
                    log::debug!("could not send error response: {err}");
                }
            }
            return FailToProxy {
                error_code: 503,
                can_reuse_downstream: false,
            };
        }
        let timed_out = ctx.cursor.timed_out(is_timeout(e));
        let code = if timed_out { 504 } else { 502 };
        // Client-facing: the upstream's name and the outcome class; addresses and the full
        // error go to the log line and the audit record only.
        let message = match (ctx.guard.refusal(), ctx.cursor.public_summary(timed_out)) {
            (Some(refusal), _) => refusal.to_string(),
            (None, Some(tried)) => format!("{}: upstream {tried}", ctx.what()),
            (None, None) => format!(
                "{}: no upstream could be asked ({})",
                ctx.what(),
                e.etype().as_str()
            ),
        };
        if session.response_written().is_none() {
            if let Err(err) = respond::text(session, code, &message, &[]).await {
                log::debug!("could not send error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.record.finished = true;
        if let Some(g) = crate::conn::guarded(session.as_downstream().stream()) {
            g.request_finished();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let kind = ctx.target.kind.map(|k| k.as_str()).unwrap_or("other");
        let route = ctx.route().map(|r| r.name.clone());
        let route_label = route.as_deref().unwrap_or("-");
        let elapsed = ctx.started.elapsed();
        // A background refresh (a subrequest) answered no client: it is not a request of the
        // request counters and latency (its outcome shows in the cache counters).
        if session.subrequest_ctx.is_none() {
            metrics::request_finished(
                &ctx.listener.name,
                route_label,
                kind,
                status,
                elapsed.as_secs_f64(),
            );
        }
        // What request_filter kept for a request cut before this phase, used here instead of
        // formatting it again.
        let seen = ctx.record.seen.take();
        let (client, seen_path) = match seen {
            Some(s) => (s.client, Some(s.path)),
            None => (
                session
                    .client_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                None,
            ),
        };
        let trace_id = ctx
            .trace
            .as_ref()
            .map(|t| t.trace_id.clone())
            .unwrap_or_default();
        let req = session.req_header();
        let error = e.map(short_error);
        // With the access line filtered out (log.level warn, RUST_LOG), it is not formatted.
        let access = log::log_enabled!(target: crate::logging::ACCESS, log::Level::Info);
        if access && crate::logging::json() {
            let line = serde_json::json!({
                "listener": ctx.listener.name,
                "client": client,
                "identity": ctx.identity.principal.name,
                "method": req.method.as_str(),
                "uri": req.uri.to_string(),
                "version": format!("{:?}", ctx.client_version.unwrap_or(req.version)),
                "status": status,
                "route": route_label,
                "upstreams": ctx.cursor.log_summary(),
                "duration_ms": elapsed.as_millis() as u64,
                "trace_id": trace_id,
                "error": error,
            });
            log::info!(target: crate::logging::ACCESS, "{line}");
        } else if access {
            log::info!(
                target: crate::logging::ACCESS,
                "{} {} {} {} {} {:?} {} route={} upstreams=[{}] {}ms{}{}",
                ctx.listener.name,
                client,
                ctx.identity.principal.name,
                req.method,
                req.uri,
                ctx.client_version.unwrap_or(req.version),
                status,
                route_label,
                ctx.cursor.log_summary(),
                elapsed.as_millis(),
                if trace_id.is_empty() {
                    String::new()
                } else {
                    format!(" trace={trace_id}")
                },
                error.map(|e| format!(" error={e}")).unwrap_or_default()
            );
        }
        let cache = ctx.cache_outcome(session);
        if let Some(outcome) = cache {
            metrics::cache_looked_up(outcome.as_str());
        }
        if let Some(c) = self.cache.as_deref() {
            let (no_space, io) = c.storage.write_failures();
            metrics::cache_write_failures(no_space, io);
        }
        if cache == Some(CacheOutcome::NotStored) || ctx.not_stored.is_some() {
            let why = ctx.not_stored.take().unwrap_or_else(|| {
                "not stored in the cache: its storage failed (see the log)".to_string()
            });
            ctx.record.reason.get_or_insert(why);
        }
        if ctx.record.enabled && ctx.model.recorder.wants_records() {
            let trace = ctx.trace.take();
            let finished = Finished {
                listener: &ctx.listener.name,
                client,
                method: session.req_header().method.to_string(),
                path: seen_path.unwrap_or_else(|| {
                    session
                        .req_header()
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default()
                }),
                route: route.as_deref(),
                status,
                bytes: session.body_bytes_sent() as u64,
                // Microsecond precision is plenty and keeps the line short.
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                trace_id: trace
                    .as_ref()
                    .map(|t| t.trace_id.clone())
                    .unwrap_or_default(),
                cache,
                integrity_refusal: ctx.guard.refusal(),
            };
            let record = report::audit_record(
                finished,
                &ctx.identity,
                &ctx.target,
                &ctx.cursor,
                &mut ctx.record,
            );
            ctx.model.recorder.finish(trace, record);
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // `logging` writes one line per request, errors included.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modgate_cache::CacheError;

    fn no_space() -> CacheError {
        CacheError::NoSpace {
            path: "/var/cache/modgate/objects".into(),
            needed: 10,
            available: 1,
        }
    }

    #[test]
    fn the_cache_s_own_failure_is_found_behind_pingora_s_errors() {
        let direct = Error::because(ErrorType::InternalError, "modgate-cache", no_space());
        assert!(cache_failure(&direct).is_some_and(|c| c.is_no_space()));
        let wrapped = Error::because(ErrorType::InternalError, "while caching", direct);
        assert!(cache_failure(&wrapped).is_some_and(|c| c.is_no_space()));
        // the object's fault, or no cache at all: not the cache failing
        let too_large = Error::because(
            ErrorType::InternalError,
            "modgate-cache",
            CacheError::TooLarge { size: 2, limit: 1 },
        );
        assert!(cache_failure(&too_large).is_none());
        let upstream = Error::explain(ErrorType::ConnectRefused, "upstream down");
        assert!(cache_failure(&upstream).is_none());
    }

    #[test]
    fn content_length_unless_chunked() {
        let mut resp = ResponseHeader::build(200, None).expect("header");
        assert_eq!(content_length(&resp), None);
        resp.insert_header("Content-Length", "1234")
            .expect("header");
        assert_eq!(content_length(&resp), Some(1234));
        resp.insert_header("Transfer-Encoding", "chunked")
            .expect("header");
        assert_eq!(content_length(&resp), None);
    }
}
