//! The Pingora `ProxyHttp` implementation: one request from the client to an upstream chain
//! and back.
//!
//! ```text
//!  new_ctx ──────── the runtime model in force, kept to the end of the request (a reload
//!                   never changes a request half-way)
//!  early_request_filter ─ the headers are in: the connection's header deadline is lifted
//!  request_filter ─ health / metrics endpoints; identity (TLS peer, trusted proxy, basic /
//!                   bearer; identity headers stripped; bad credentials → 401); method check;
//!                   GOPROXY path parsed and `!`-decoded (bad input → 4xx, never forwarded);
//!                   route chosen; RBAC decision (deny → 403, or 401 when anonymous);
//!                   checksum-database requests (private lookups → 404); the cache plan;
//!                   the admin purge endpoint
//!  request_cache_filter / cache_key_callback ─ cache on for planned GETs, key = route + path
//!  proxy_upstream_filter ─ (cache miss) an artifact whose changed bytes were refused → 502
//!  response_cache_filter / should_serve_stale ─ TTL by kind and route; stale-if-error for
//!                   mutable answers
//!  upstream_peer ── the chain's current step → peer (a step whose host does not resolve
//!                   falls through on `any-error`)
//!  upstream_request_filter ─ canonical encoded path, Host, User-Agent; every other client
//!                   header dropped except an allow-list (no credentials reach an upstream);
//!                   the upstream's configured client-certificate headers; traceparent
//!  upstream_response_filter ─ 404/410 → next step; 5xx etc. → next step on `any-error`,
//!                   otherwise 502 with a reason; an exact version whose size differs from
//!                   the ledger → 502
//!  upstream_response_body_filter ─ exact versions hashed as they stream and checked against
//!                   (or recorded in) the ledger; changed bytes cut off before the end
//!  fail_to_connect / error_while_proxy ─ connect errors and timeouts: next step on
//!                   `any-error`; a dead pooled connection is retried on the same step
//!  fail_to_proxy ── 502 / 504 with a one-line reason (never a silent 404)
//!  logging ──────── one access-log line, the metrics, one audit record, a span for a deny
//! ```
//! Moving on to the next step is done with Pingora's retry loop: the failing phase returns an
//! error marked retryable and advances `ctx.step`, and `upstream_peer` is asked again.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, Method};
use modgate_policy::{AccessRequest, Decision};
use modgate_protocol::{GoProxyRequest, ModuleRequest, RequestKind, SumdbEndpoint};
use modgate_telemetry::{AuditDecision, AuditIdentity, AuditRecord};
use pingora::cache::{CacheKey, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::cache::{self, CachePlan, CacheRuntime, IntegrityCheck, Refusal};
use crate::identity::{self, IdentitySettings, RequestIdentity};
use crate::metrics;
use crate::model::{Live, Model};
use crate::record::Trace;
use crate::respond;
use crate::upstream::{Chain, Upstream};
use modgate_ledger::Artifact;

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

/// The role an identity must hold to use the admin endpoint when `access:` is configured.
pub const ADMIN_ROLE: &str = "admin";

/// The challenge sent with a 401, so clients that wait for one send their `.netrc` credentials.
const BASIC_CHALLENGE: &str = "Basic realm=\"modgate\"";

/// The error type that tells the retry loop to move to the next chain step.
const FALLTHROUGH: ErrorType = ErrorType::Custom("modgate: next chain step");

/// Per-listener settings the proxy needs at request time.
pub struct ListenerRuntime {
    pub name: String,
    pub keepalive_secs: u64,
    pub metrics: bool,
    /// Serves the admin endpoints.
    pub admin: bool,
    /// Adds the `X-Modgate-Cache/Route/Upstream` headers to answers.
    pub debug_headers: bool,
    /// The `Host` values that name this listener (the admin endpoint answers no other).
    pub own_hosts: Vec<String>,
    /// Anonymous requests get a 401.
    pub require_identity: bool,
    pub identity: IdentitySettings,
    /// The listener's TLS material, against which every connection's client certificate is
    /// judged again (resumed sessions, reloads); `None` for plaintext listeners.
    pub tls: Option<Arc<modgate_identity::ReloadableTls>>,
}

/// The proxy logic for one listener.
pub struct GatewayProxy {
    live: Arc<Live>,
    /// This listener's settings at start-up: used if a reload's model lacks the listener.
    initial: Arc<ListenerRuntime>,
    cache: Option<Arc<CacheRuntime>>,
}

impl GatewayProxy {
    pub fn new(
        live: Arc<Live>,
        listener: &str,
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
            initial,
            cache,
        })
    }

    /// For an exact-version artifact answered 200 by an upstream: refuses a size that differs
    /// from the first-seen one before anything reaches the client, and starts hashing the body.
    async fn start_integrity(&self, resp: &ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        let (Some(c), Some(req)) = (&self.cache, ctx.request.as_ref()) else {
            return Ok(());
        };
        let Some((a, version)) = ctx.ledger_key.clone() else {
            return Ok(());
        };
        let module = req.module.clone();
        if let Some(enc) = resp
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .filter(|e| !e.eq_ignore_ascii_case("identity"))
        {
            // Not asked for; hashing encoded bytes would pin the wrong thing.
            let message = format!(
                "{module}@{version} (.{a}): upstream sent Content-Encoding {enc:?} although none \
                 was asked for; refused (its bytes cannot be checked against the ledger)"
            );
            ctx.integrity_refusal = Some(message.clone());
            return Error::e_explain(ErrorType::HTTPStatus(502), message);
        }
        let upstream = ctx
            .attempts
            .last()
            .map(|a| a.upstream.clone())
            .unwrap_or_default();
        let length = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(length) = length {
            let ledger = c.ledger.clone();
            let (m, v) = (module.clone(), version.clone());
            let recorded = tokio::task::spawn_blocking(move || ledger.get(&m, &v, a))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            if let Some(e) = recorded.filter(|e| e.size != length) {
                let message = cache::mismatch_message(
                    &module,
                    &version,
                    a,
                    &upstream,
                    &e.sha256,
                    e.size,
                    &format!("{length} bytes"),
                );
                self.refuse_integrity(ctx, message.clone());
                return Error::e_explain(ErrorType::HTTPStatus(502), message);
            }
        }
        let check = IntegrityCheck::new(&module, &version, a, length);
        ctx.integrity = Some(match cache::unshareable(&resp.headers) {
            // Not the one shared representation: compared with a record, never recorded.
            Some(_) => check.without_pinning(),
            None => check,
        });
        Ok(())
    }

    /// Refuses changed upstream bytes: remembered (so the next request is a 502 with the
    /// reason unless the original is in the cache), counted and logged.
    fn refuse_integrity(&self, ctx: &mut RequestCtx, message: String) {
        if let (Some(c), Some(req), Some((a, v))) =
            (&self.cache, ctx.request.as_ref(), ctx.ledger_key.clone())
        {
            c.quarantine.insert(
                &req.module,
                &v,
                a,
                Refusal {
                    message: message.clone(),
                },
            );
            if let Some(m) = metrics::metrics() {
                m.integrity_refusals.with_label_values(&[a.as_str()]).inc();
            }
        }
        log::error!("integrity: {message}");
        ctx.integrity_refusal = Some(message);
    }

    /// The audit record of a finished request.
    fn audit_record(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        status: u16,
        client: String,
        route: String,
    ) -> AuditRecord {
        let p = &ctx.identity.principal;
        let cert = ctx.identity.cert.as_ref().map(|c| &c.identity);
        let answered = ctx
            .attempts
            .iter()
            .rev()
            .find(|a| {
                matches!(
                    a.outcome,
                    Some(Outcome::Answered(_)) | Some(Outcome::NotFound(_))
                )
            })
            .or(ctx.attempts.last());
        let mut record = AuditRecord::now();
        record.trace_id = ctx
            .trace
            .as_ref()
            .map(|t| t.trace_id.clone())
            .unwrap_or_default();
        record.listener = ctx.listener.name.clone();
        record.client_addr = client;
        record.identity = AuditIdentity {
            source: p.source.as_str().to_string(),
            name: p.name.clone(),
            dn: cert.map(|c| c.subject_dn.clone()),
            fingerprint: cert.map(|c| c.fingerprint_sha256.clone()),
            serial: cert.map(|c| c.serial_hex.clone()),
            principals: ctx.identity.principals.clone(),
            matched: (!ctx.identity.matched.is_empty()).then(|| ctx.identity.matched.join(",")),
        };
        record.roles = ctx
            .decision
            .as_ref()
            .map(|d| d.roles.clone())
            .unwrap_or_default();
        record.method = session.req_header().method.to_string();
        record.path = session
            .req_header()
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        if let Some(r) = &ctx.request {
            record.module = Some(r.module.clone());
            record.version = r.version.as_ref().map(|v| v.as_str().to_string());
        }
        record.kind = ctx.kind.map(|k| k.as_str().to_string());
        if let Some((module, version)) = &ctx.admin_target {
            record.event = Some("cache-purge".into());
            record.module = Some(module.clone());
            record.version = version.clone();
        }
        record.route = (route != "-").then_some(route);
        record.decision = ctx.audit.decision;
        if let Some(d) = &ctx.decision {
            record.rule = Some(d.rule.clone());
            if !d.is_allowed() {
                record.reason = Some(d.reason.clone());
            }
        }
        if record.reason.is_none() {
            record.reason = ctx.audit.reason.take();
        }
        if let Some(refusal) = &ctx.integrity_refusal {
            // Changed upstream bytes (refused now or quarantined earlier): the reason is the
            // refusal, not the upstream's 200 (and the header may already have gone out).
            record.reason = Some(refusal.clone());
        } else if record.decision == AuditDecision::Allow && status >= 500 {
            record.reason = ctx
                .attempts
                .last()
                .and_then(|a| a.outcome.as_ref())
                .map(Outcome::describe);
        }
        record.status = status;
        record.bytes = session.body_bytes_sent() as u64;
        // Microsecond precision is plenty and keeps the line short.
        record.duration_ms = (ctx.started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        record.upstream = answered.map(|a| a.upstream.clone());
        record.cache = Some(cache_outcome(session, ctx).unwrap_or("none").to_string());
        record
    }

    /// `POST /admin/cache/purge?target=MODULE[@VERSION]`: what `modgate cache purge` does, for a
    /// running gateway; audited with the caller's identity.
    async fn admin_purge(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if session.req_header().method != Method::POST {
            let message = "use POST /admin/cache/purge?target=MODULE[@VERSION]".to_string();
            return self
                .refuse(session, ctx, 405, message, &[("Allow", "POST")])
                .await;
        }
        let Some(c) = self.cache.clone() else {
            let message = "this gateway has no cache".to_string();
            return self.refuse(session, ctx, 404, message, &[]).await;
        };
        let query = session.req_header().uri.query().unwrap_or("");
        let Some(raw) = query.split('&').find_map(|kv| kv.strip_prefix("target=")) else {
            let message = "missing ?target=MODULE[@VERSION]".to_string();
            return self.refuse(session, ctx, 400, message, &[]).await;
        };
        let target = match modgate_protocol::percent_decode(raw) {
            Ok(t) => t,
            Err(e) => return self.refuse(session, ctx, 400, e.to_string(), &[]).await,
        };
        let parsed = match cache::target(&target) {
            Ok(t) => t,
            Err(e) => return self.refuse(session, ctx, 400, e.to_string(), &[]).await,
        };
        let (module, version) = parsed.clone();
        let result = tokio::task::spawn_blocking(move || {
            cache::purge_module(c.storage, &module, version.as_deref())
        })
        .await;
        match result {
            Ok(Ok(report)) => {
                ctx.audit.decision = AuditDecision::Allow;
                ctx.audit.reason = Some(format!(
                    "cache-purge of {target}: {} object(s), {} bytes",
                    report.objects, report.bytes
                ));
                ctx.request = None;
                ctx.admin_target = Some(parsed);
                let body = format!(
                    "{{\"target\":{:?},\"objects\":{},\"bytes\":{}}}\n",
                    target, report.objects, report.bytes
                );
                respond::ok(session, "application/json", Bytes::from(body)).await?;
                Ok(true)
            }
            Ok(Err(e)) => {
                self.refuse(session, ctx, 500, format!("purge failed: {e:#}"), &[])
                    .await
            }
            Err(e) => {
                self.refuse(session, ctx, 500, format!("purge failed: {e}"), &[])
                    .await
            }
        }
    }

    /// Answers 401 with the Basic challenge and records why.
    async fn unauthenticated(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        message: String,
    ) -> Result<bool> {
        ctx.audit.decision = AuditDecision::Unauthenticated;
        respond::text(
            session,
            401,
            &message,
            &[("WWW-Authenticate", BASIC_CHALLENGE)],
        )
        .await?;
        ctx.audit.reason = Some(message);
        Ok(true)
    }

    /// Answers a policy denial: 401 with the challenge for an anonymous client (a credential
    /// might be allowed), else 403. A leading `modgate: ` is dropped (`respond` adds it).
    async fn deny(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        message: String,
    ) -> Result<bool> {
        let message = match message.strip_prefix("modgate: ") {
            Some(m) => m.to_string(),
            None => message,
        };
        if ctx.identity.principal.is_anonymous() {
            self.unauthenticated(session, ctx, message).await
        } else {
            ctx.audit.decision = AuditDecision::Deny;
            respond::text(session, 403, &message, &[]).await?;
            ctx.audit.reason = Some(message);
            Ok(true)
        }
    }

    /// Answers a request modgate handles itself with an error status, and records why.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        message: String,
        extra: &[(&'static str, &str)],
    ) -> Result<bool> {
        ctx.audit.decision = AuditDecision::Error;
        respond::text(session, status, &message, extra).await?;
        ctx.audit.reason = Some(message);
        Ok(true)
    }

    fn chain<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a Chain> {
        ctx.route
            .and_then(|i| ctx.model.gateway.routes.routes().get(i))
            .map(|r| &r.target)
    }

    fn current_upstream(&self, ctx: &RequestCtx) -> Option<Arc<Upstream>> {
        if let Some((db, _)) = &ctx.sumdb {
            return Some(db.clone());
        }
        self.chain(ctx)
            .and_then(|c| c.steps.get(ctx.step))
            .map(|s| s.upstream.clone())
    }

    fn route_name<'a>(&self, ctx: &'a RequestCtx) -> &'a str {
        ctx.route
            .and_then(|i| ctx.model.gateway.routes.routes().get(i))
            .map(|r| r.name.as_str())
            .unwrap_or("-")
    }

    /// Records the outcome of the attempt at the current step and, if it is a failure the
    /// chain lets pass, moves to the next step. Returns whether it moved.
    fn settle_attempt(&self, ctx: &mut RequestCtx, outcome: Outcome) -> bool {
        let not_found = matches!(outcome, Outcome::NotFound(_));
        let failed = !matches!(outcome, Outcome::Answered(_));
        if let Some(m) = metrics::metrics() {
            if let Some(up) = self.current_upstream(ctx) {
                m.upstream_attempts
                    .with_label_values(&[up.name.as_str(), outcome.label()])
                    .inc();
            }
        }
        if let Some(a) = ctx.attempts.last_mut() {
            a.outcome = Some(outcome);
        }
        let moves = failed
            && self
                .chain(ctx)
                .is_some_and(|c| c.falls_through(ctx.step, not_found));
        if moves {
            ctx.step += 1;
        }
        moves
    }
}

/// What happened at one chain step.
#[derive(Debug, Clone)]
enum Outcome {
    /// The upstream answered with this status and the answer is being used.
    Answered(u16),
    /// 404 or 410.
    NotFound(u16),
    /// Another error status.
    Status(u16),
    /// Timed out connecting, reading or writing.
    Timeout(String),
    /// Could not connect or the connection failed.
    Failed(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Answered(_) => "answered",
            Outcome::NotFound(_) => "not_found",
            Outcome::Status(_) => "error_status",
            Outcome::Timeout(_) => "timeout",
            Outcome::Failed(_) => "failed",
        }
    }

    /// What a client is told: the outcome class, never an address, port, scheme or SNI.
    fn public(&self) -> String {
        match self {
            Outcome::Timeout(_) => "timed out".to_string(),
            Outcome::Failed(e) if e.starts_with("ConnectRefused") => {
                "failed: connection refused".to_string()
            }
            Outcome::Failed(e) if e.starts_with("TLS") => "failed: TLS handshake".to_string(),
            Outcome::Failed(e) if e.starts_with("ConnectionClosed") => {
                "failed: connection closed".to_string()
            }
            Outcome::Failed(_) => "failed".to_string(),
            other => other.describe(),
        }
    }

    /// The full description, for the server's log and the audit record.
    fn describe(&self) -> String {
        match self {
            Outcome::Answered(s) => format!("answered {s}"),
            Outcome::NotFound(s) => format!("not found ({s})"),
            Outcome::Status(s) => {
                let reason = http::StatusCode::from_u16(*s)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("");
                format!("answered {s} {reason}").trim_end().to_string()
            }
            Outcome::Timeout(e) => format!("timed out ({e})"),
            Outcome::Failed(e) => format!("failed ({e})"),
        }
    }
}

/// One try of one upstream.
#[derive(Debug)]
struct Attempt {
    upstream: String,
    outcome: Option<Outcome>,
}

/// What the audit record of a request will say, filled in as the request goes.
#[derive(Default)]
struct AuditState {
    /// False for health and metrics endpoints, which are not audited.
    enabled: bool,
    decision: AuditDecision,
    reason: Option<String>,
}

/// Per-request state.
pub struct RequestCtx {
    /// The model this request runs on, from its start to its end (a reload does not change it).
    model: Arc<Model>,
    /// This listener's settings in that model.
    listener: Arc<ListenerRuntime>,
    started: Instant,
    request: Option<ModuleRequest>,
    kind: Option<RequestKind>,
    route: Option<usize>,
    step: usize,
    attempts: Vec<Attempt>,
    identity: RequestIdentity,
    decision: Option<Decision>,
    audit: AuditState,
    trace: Option<Trace>,
    /// A checksum-database request: the database and the path to ask it for.
    sumdb: Option<(Arc<Upstream>, String)>,
    /// How this request is cached (None: not cached).
    cache_plan: Option<CachePlan>,
    /// The ledger entry an exact-version request answers to: (artifact, version).
    ledger_key: Option<(Artifact, String)>,
    /// Hashing of an exact-version artifact coming from an upstream.
    integrity: Option<IntegrityCheck>,
    /// Why upstream bytes were refused.
    integrity_refusal: Option<String>,
    /// A stale answer was served because the upstream failed.
    served_stale: bool,
    /// The module (and version) of an admin cache purge, for the audit record.
    admin_target: Option<(String, Option<String>)>,
}

/// How the cache took part in a request: `hit`, `miss`, `expired`, `stale-if-error`, ...;
/// `None` when the request was not cacheable.
fn cache_outcome(session: &Session, ctx: &RequestCtx) -> Option<&'static str> {
    ctx.cache_plan.as_ref()?;
    if ctx.served_stale {
        return Some("stale-if-error");
    }
    if ctx.integrity_refusal.is_some() {
        // Changed upstream bytes: neither served nor stored.
        return Some("refused");
    }
    Some(match session.cache.phase() {
        pingora::cache::CachePhase::Disabled(_) => "off",
        p => p.as_str(),
    })
}

/// Whether the client connected from this host (admin endpoints answer nobody else).
fn is_loopback_peer(session: &Session) -> bool {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .is_some_and(|a| a.ip().is_loopback())
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
            model,
            listener,
            started: Instant::now(),
            request: None,
            kind: None,
            route: None,
            step: 0,
            attempts: Vec::new(),
            identity: RequestIdentity::default(),
            decision: None,
            audit: AuditState::default(),
            trace: None,
            sumdb: None,
            cache_plan: None,
            ledger_key: None,
            integrity: None,
            integrity_refusal: None,
            served_stale: false,
            admin_target: None,
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
        session.set_keepalive(Some(ctx.listener.keepalive_secs));
        // HTTP/1.1 pipelining (RFC 9112 §9.3.2): a request sent before the previous answer is
        // answered in order on the same connection, instead of being dropped with the
        // connection (HTTP/2 and TLS-less h2c ignore this).
        session.as_downstream_mut().set_pipelining_enabled(true);
        let method = session.req_header().method.clone();
        let target = session
            .req_header()
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());

        match target.as_str() {
            "/healthz" => {
                respond::ok(session, "text/plain", Bytes::from_static(b"ok\n")).await?;
                return Ok(true);
            }
            "/readyz" => {
                respond::ok(session, "text/plain", Bytes::from_static(b"ready\n")).await?;
                return Ok(true);
            }
            "/metrics" if ctx.listener.metrics => {
                let body = Bytes::from(metrics::render());
                respond::ok(session, "text/plain; version=0.0.4", body).await?;
                return Ok(true);
            }
            _ => {}
        }
        ctx.audit.enabled = true;
        ctx.trace = Some(ctx.model.recorder.begin(session.req_header()));

        let authenticator = ctx.model.gateway.auth.current.load_full();
        let tls = ctx.listener.tls.as_deref();
        match identity::resolve(session, &ctx.listener.identity, tls, authenticator).await {
            Ok(id) => ctx.identity = id,
            Err(
                e @ (identity::IdentityError::CertificateRefused { .. }
                | identity::IdentityError::CertificateRequired
                | identity::IdentityError::Throttled { .. }
                | identity::IdentityError::Busy),
            ) => {
                if let Some(m) = metrics::metrics() {
                    m.auth_failures.with_label_values(&[e.reason()]).inc();
                }
                // No challenge: no credential can stand in for a refused certificate, and a
                // throttled client must wait, not retry at once.
                let (status, retry) = match &e {
                    identity::IdentityError::Throttled { retry_after, .. } => {
                        (429, Some(retry_after.as_secs().max(1).to_string()))
                    }
                    identity::IdentityError::Busy => (503, Some("1".to_string())),
                    _ => (403, None),
                };
                ctx.audit.decision = AuditDecision::Unauthenticated;
                let message = e.message();
                let extra: Vec<(&'static str, &str)> = retry
                    .as_deref()
                    .map(|r| vec![("Retry-After", r)])
                    .unwrap_or_default();
                respond::text(session, status, &message, &extra).await?;
                ctx.audit.reason = Some(message);
                return Ok(true);
            }
            Err(e) => {
                if let Some(m) = metrics::metrics() {
                    m.auth_failures.with_label_values(&[e.reason()]).inc();
                }
                return self.unauthenticated(session, ctx, e.message()).await;
            }
        }
        if ctx.listener.require_identity && ctx.identity.principal.is_anonymous() {
            if let Some(m) = metrics::metrics() {
                m.auth_failures.with_label_values(&["missing"]).inc();
            }
            return self
                .unauthenticated(
                    session,
                    ctx,
                    "authentication required: present a client certificate (modgate agent) or \
                     .netrc credentials"
                        .into(),
                )
                .await;
        }

        if ctx.listener.admin
            && session.req_header().uri.path() == "/admin/cache/purge"
            && is_loopback_peer(session)
        {
            // Loopback is not enough: a web page can reach it too (DNS rebinding, cross-site
            // fetch), and a loopback peer that is a trusted front proxy speaks for a remote
            // client. With `access:` configured, the caller must hold the role `admin`.
            let through_proxy = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .is_some_and(|a| ctx.listener.identity.trusted.contains(&a.ip()));
            let refusal =
                crate::local::refusal(session.req_header(), &ctx.listener.own_hosts, "admin")
                    .or_else(|| {
                        through_proxy.then(|| {
                            "admin: requests through a trusted front proxy are not local; call the \
                     admin endpoint directly"
                                .to_string()
                        })
                    });
            if let Some(message) = refusal {
                return self.refuse(session, ctx, 403, message, &[]).await;
            }
            if ctx.model.gateway.access_configured {
                let holds_admin = ctx
                    .model
                    .gateway
                    .access
                    .roles_for(&ctx.identity.principal)
                    .iter()
                    .any(|r| r.name == ADMIN_ROLE);
                if !holds_admin {
                    let message = format!(
                        "admin: {} does not hold the role {ADMIN_ROLE:?} the admin endpoint \
                         requires",
                        ctx.identity.principal.name
                    );
                    return self.deny(session, ctx, message).await;
                }
            }
            return self.admin_purge(session, ctx).await;
        }

        if method != Method::GET && method != Method::HEAD {
            let message = format!(
                "method {method} is not allowed: the GOPROXY protocol is read-only (GET, HEAD)"
            );
            return self
                .refuse(session, ctx, 405, message, &[("Allow", "GET, HEAD")])
                .await;
        }

        let declares_body = {
            let h = &session.req_header().headers;
            h.contains_key(http::header::TRANSFER_ENCODING)
                || h.get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.trim() != "0")
        };
        if declares_body {
            let message = "GOPROXY requests have no body".to_string();
            return self.refuse(session, ctx, 400, message, &[]).await;
        }

        let parsed = match ctx.model.gateway.parser.parse(&target) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .refuse(session, ctx, e.status(), e.to_string(), &[])
                    .await
            }
        };
        ctx.kind = Some(parsed.kind());
        match parsed {
            GoProxyRequest::GoGet { import_path } => {
                let message = format!("{import_path}: modgate does not serve ?go-get=1 pages");
                self.refuse(session, ctx, 404, message, &[]).await
            }
            GoProxyRequest::Sumdb(s) => {
                let Some(db) = ctx.model.gateway.sumdbs.get(&s.name) else {
                    // 404 on `supported` tells `go` to use the database directly.
                    let message = format!(
                        "checksum database {:?} is not proxied by this gateway",
                        s.name
                    );
                    return self.refuse(session, ctx, 404, message, &[]).await;
                };
                match &s.endpoint {
                    SumdbEndpoint::Supported => {
                        ctx.audit.decision = AuditDecision::Allow;
                        respond::ok(session, "text/plain; charset=utf-8", Bytes::new()).await?;
                        return Ok(true);
                    }
                    SumdbEndpoint::Lookup { module, .. } => {
                        // A private module's name never leaves the intranet, not even to ask
                        // for its checksum: 404 sends `go` to its GONOSUMDB handling.
                        if let Some(m) = ctx.model.gateway.routes.lookup(module) {
                            let private = m.route.private
                                || m.route.target.steps.iter().any(|s| s.upstream.private);
                            if private {
                                ctx.route = Some(m.index);
                                let message = format!(
                                    "{module} is on private route {:?}: it is never looked up in \
                                     a public checksum database (set GONOSUMDB/GOPRIVATE for it)",
                                    m.route.name
                                );
                                return self.refuse(session, ctx, 404, message, &[]).await;
                            }
                        }
                    }
                    SumdbEndpoint::Latest | SumdbEndpoint::Tile { .. } => {}
                }
                // The access policy applies to checksum-database reads too: a lookup is about
                // its module (rules for that module apply), `latest` and tiles about no module
                // (only rules whose pattern matches every path, e.g. `prefix: ""`, apply). A
                // rule may name them with `kinds: [sumdb]`.
                if ctx.model.gateway.access_configured {
                    let (module, version) = match &s.endpoint {
                        SumdbEndpoint::Lookup { module, version } => {
                            (module.as_str(), Some(version.as_str()))
                        }
                        _ => ("", None),
                    };
                    let route = format!("sumdb:{}", s.name);
                    let decision = ctx.model.gateway.access.decide(
                        &ctx.identity.principal,
                        &AccessRequest {
                            module,
                            kind: s.kind(),
                            version,
                            route: &route,
                            private_route: false,
                        },
                    );
                    let allowed = decision.is_allowed();
                    let what = if module.is_empty() {
                        format!("checksum database {}", s.name)
                    } else {
                        module.to_string()
                    };
                    let message = decision.deny_message(&ctx.identity.principal.name, &what);
                    ctx.decision = Some(decision);
                    if !allowed {
                        return self.deny(session, ctx, message).await;
                    }
                }
                ctx.audit.decision = AuditDecision::Allow;
                ctx.sumdb = Some((db.clone(), s.upstream_path()));
                if self.cache.is_some() {
                    ctx.cache_plan = CachePlan::sumdb(&s, &ctx.model.ttl);
                }
                Ok(false)
            }
            GoProxyRequest::Module(req) => {
                let Some(m) = ctx.model.gateway.routes.lookup(&req.module) else {
                    let message = format!("no route for module {}", req.module);
                    ctx.request = Some(req);
                    return self.refuse(session, ctx, 404, message, &[]).await;
                };
                let route = m.route;
                ctx.route = Some(m.index);
                let access = AccessRequest {
                    module: &req.module,
                    kind: req.kind,
                    version: req.version.as_ref().map(|v| v.as_str()),
                    route: &route.name,
                    private_route: route.private,
                };
                let decision = ctx
                    .model
                    .gateway
                    .access
                    .decide(&ctx.identity.principal, &access);
                identity::attribute(&mut ctx.identity, &decision, |p| {
                    ctx.model.gateway.access.decide(p, &access)
                });
                if let Some(m) = metrics::metrics() {
                    m.decisions
                        .with_label_values(&[
                            route.name.as_str(),
                            decision.effect.as_str(),
                            decision.rule.as_str(),
                        ])
                        .inc();
                }
                let allowed = decision.is_allowed();
                let message = decision.deny_message(&ctx.identity.principal.name, &req.module);
                if self.cache.is_some() {
                    let plan =
                        CachePlan::module(&route.name, &req, &ctx.model.ttl, &route.target.cache);
                    ctx.cache_plan = match plan {
                        Some(p) if route.target.per_identity_cache => {
                            Some(p.per_identity(&identity::cache_identity(&ctx.identity.principal)))
                        }
                        other => other,
                    };
                    ctx.ledger_key = cache::artifact(&req);
                }
                ctx.request = Some(req);
                ctx.decision = Some(decision);
                if allowed {
                    ctx.audit.decision = AuditDecision::Allow;
                    return Ok(false);
                }
                self.deny(session, ctx, message).await
            }
        }
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
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        Ok(match &ctx.cache_plan {
            Some(plan) => plan.cacheable(resp),
            None => RespCacheable::Uncacheable(pingora::cache::NoCacheReason::NeverEnabled),
        })
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // Only when the upstream failed (never to skip a revalidation), and only mutable
        // answers (list, @latest): an exact version is never stale.
        // A chain step that may fall through (`any-error`) gets its chance first: the next
        // upstream is asked before a stale answer is.
        let more_steps = self
            .chain(ctx)
            .is_some_and(|c| c.falls_through(ctx.step, false));
        let serve = error.is_some()
            && !more_steps
            && ctx.cache_plan.as_ref().is_some_and(|p| !p.immutable());
        if serve {
            ctx.served_stale = true;
            if let Some(m) = metrics::metrics() {
                m.stale_served.inc();
            }
        }
        serve
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // Not in the cache: changed bytes already refused for this artifact are not fetched
        // again until an operator accepts them.
        let refused = match (&self.cache, ctx.request.as_ref(), &ctx.ledger_key) {
            (Some(c), Some(req), Some((a, v))) => c.quarantine.get(&req.module, v, *a),
            _ => None,
        };
        if let Some(r) = refused {
            ctx.integrity_refusal = Some(r.message.clone());
            ctx.audit.reason = Some(r.message.clone());
            respond::text(session, 502, &r.message, &[]).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let private = ctx
            .route
            .and_then(|i| ctx.model.gateway.routes.routes().get(i))
            .is_some_and(|r| r.private);
        loop {
            let Some(upstream) = self.current_upstream(ctx) else {
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
            ctx.attempts.push(Attempt {
                upstream: upstream.name.clone(),
                outcome: None,
            });
            match upstream.peer().await {
                Ok(peer) => return Ok(peer),
                Err(e) => {
                    if !self.settle_attempt(ctx, Outcome::Failed(short_error(&e))) {
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
        let Some(upstream) = self.current_upstream(ctx) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream for this request");
        };
        let path = match (&ctx.sumdb, &ctx.request) {
            (Some((_, path)), _) => upstream.request_path(path),
            (None, Some(req)) => upstream.request_path(&req.upstream_path()),
            (None, None) => {
                return Error::e_explain(ErrorType::InternalError, "no request to forward")
            }
        };
        let uri: http::Uri = path
            .parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "building upstream URI", e))?;
        upstream_request.set_uri(uri);
        let exact = ctx.ledger_key.is_some();
        let drop: Vec<HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|n| {
                !(FORWARDED_HEADERS.contains(&n.as_str())
                    || (!exact && CONDITIONAL_HEADERS.contains(&n.as_str())))
            })
            .cloned()
            .collect();
        for name in drop {
            upstream_request.remove_header(&name);
        }
        upstream_request.insert_header("Host", upstream.host_header.as_str())?;
        upstream_request.insert_header("User-Agent", USER_AGENT)?;
        // GOPROXY reads have no body. Saying so keeps Pingora from framing an HTTP/2 client's
        // request (no Content-Length, END_STREAM on an empty DATA frame) as a chunked body,
        // whose terminator a keep-alive HTTP/1.1 upstream would read as the next request.
        upstream_request.insert_header("Content-Length", "0")?;
        if let Some(forward) = &upstream.forward {
            let roles = ctx
                .decision
                .as_ref()
                .map(|d| d.roles.as_slice())
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
        // An exact version is accepted only as a 200 (whose bytes the ledger checks): any other
        // 2xx or a redirect would carry bytes, or send the client to bytes, the ledger never saw.
        let exact = ctx.ledger_key.is_some();
        let outcome = match status {
            404 | 410 => Outcome::NotFound(status),
            200 => Outcome::Answered(status),
            _ if exact => Outcome::Status(status),
            100..=399 => Outcome::Answered(status),
            _ => Outcome::Status(status),
        };
        match outcome {
            Outcome::Answered(_) => {
                self.settle_attempt(ctx, outcome);
                // HEAD answers carry no bytes: they never feed (or trip) the ledger.
                if status == 200 && session.req_header().method == Method::GET {
                    self.start_integrity(upstream_response, ctx).await?;
                }
                Ok(())
            }
            Outcome::NotFound(_) => {
                if self.settle_attempt(ctx, outcome) {
                    Err(Error::new(FALLTHROUGH))
                } else {
                    // The last word: pass the upstream's 404/410 through so that
                    // `GOPROXY=modgate,direct` falls through.
                    Ok(())
                }
            }
            _ => {
                if self.settle_attempt(ctx, outcome) {
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
        let Some(check) = ctx.integrity.as_mut() else {
            return Ok(None);
        };
        if let Some(b) = body {
            check.update(b);
        }
        if !end_of_stream {
            return Ok(None);
        }
        let (Some(check), Some(c)) = (ctx.integrity.take(), &self.cache) else {
            return Ok(None);
        };
        let upstream = ctx
            .attempts
            .last()
            .map(|a| a.upstream.clone())
            .unwrap_or_default();
        // One indexed SQLite statement; kept off the other tasks of this worker thread.
        let ledger = c.ledger.clone();
        let finish = move || check.finish(&ledger, &upstream);
        let result = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(finish),
            _ => finish(),
        };
        match result {
            Ok(_) => Ok(None),
            Err(failure) => {
                // The client is cut off before the last byte and the cache never commits the
                // object. Changed bytes are remembered, so the next request gets a 502 with
                // this reason; an invalid zip or a ledger failure is tried again next time.
                let message = failure.message().to_string();
                match failure {
                    cache::IntegrityFailure::Changed(_) => {
                        self.refuse_integrity(ctx, message.clone())
                    }
                    cache::IntegrityFailure::Invalid(_) | cache::IntegrityFailure::Ledger(_) => {
                        log::error!("integrity: {message}");
                        ctx.integrity_refusal = Some(message.clone());
                    }
                }
                Error::e_explain(ErrorType::Custom("modgate: integrity"), message)
            }
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.listener.debug_headers {
            if ctx.cache_plan.is_some() && session.cache.enabled() {
                let phase = if ctx.served_stale {
                    "stale-if-error"
                } else {
                    session.cache.phase().as_str()
                };
                upstream_response.insert_header("X-Modgate-Cache", phase)?;
            }
            if let Some(route) = ctx
                .route
                .and_then(|i| ctx.model.gateway.routes.routes().get(i))
            {
                upstream_response.insert_header("X-Modgate-Route", route.name.as_str())?;
            }
            if let Some(a) = ctx.attempts.last() {
                upstream_response.insert_header("X-Modgate-Upstream", a.upstream.as_str())?;
            }
        }
        // What software the origin runs is nobody's business but the operator's.
        upstream_response.remove_header(&http::header::SERVER);
        // An upstream's cookies are its business with modgate, not with every client (cached
        // answers never carry one: an answer that sets a cookie is not cached).
        let pass_cookies = self
            .current_upstream(ctx)
            .is_some_and(|u| u.forward_set_cookie);
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
        let outcome = if is_timeout(&e) {
            Outcome::Timeout(short_error(&e))
        } else {
            Outcome::Failed(short_error(&e))
        };
        let moved = self.settle_attempt(ctx, outcome);
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
            if let Some(a) = ctx.attempts.last_mut() {
                a.outcome = Some(Outcome::Failed("reused connection closed".into()));
            }
            return e;
        }
        let outcome = if is_timeout(&e) {
            Outcome::Timeout(short_error(&e))
        } else {
            Outcome::Failed(short_error(&e))
        };
        let moved = self.settle_attempt(ctx, outcome) && idempotent;
        e.set_retry(moved);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
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
        let timed_out = ctx
            .attempts
            .last()
            .and_then(|a| a.outcome.as_ref())
            .map_or(is_timeout(e), |o| matches!(o, Outcome::Timeout(_)));
        let code = if timed_out { 504 } else { 502 };
        let what = match &ctx.request {
            Some(r) => match &r.version {
                Some(v) => format!("{}@{} ({})", r.module, v.as_str(), r.kind.as_str()),
                None => format!("{} ({})", r.module, r.kind.as_str()),
            },
            None => match &ctx.sumdb {
                Some((db, path)) => format!("checksum database {} {path}", db.name),
                None => "request".to_string(),
            },
        };
        // Client-facing: the upstream's name and the outcome class; addresses and the full
        // error go to the log line and the audit record only.
        let tried: Vec<String> = ctx
            .attempts
            .iter()
            .map(|a| {
                let outcome = match &a.outcome {
                    Some(o) => o.public(),
                    None if timed_out => "timed out".to_string(),
                    None => "failed".to_string(),
                };
                format!("{} {}", a.upstream, outcome)
            })
            .collect();
        let message = if let Some(refusal) = &ctx.integrity_refusal {
            refusal.clone()
        } else if tried.is_empty() {
            format!(
                "{what}: no upstream could be asked ({})",
                e.etype().as_str()
            )
        } else {
            format!("{what}: upstream {}", tried.join("; then "))
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
        if let Some(g) = crate::conn::guarded(session.as_downstream().stream()) {
            g.request_finished();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let kind = ctx.kind.map(|k| k.as_str()).unwrap_or("other");
        let route = self.route_name(ctx).to_string();
        let elapsed = ctx.started.elapsed();
        if let Some(m) = metrics::metrics() {
            m.requests
                .with_label_values(&[
                    ctx.listener.name.as_str(),
                    route.as_str(),
                    kind,
                    &status.to_string(),
                ])
                .inc();
            m.duration
                .with_label_values(&[kind])
                .observe(elapsed.as_secs_f64());
        }
        let client = session
            .client_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        let tried: Vec<String> = ctx
            .attempts
            .iter()
            .map(|a| match &a.outcome {
                Some(o) => format!("{}:{}", a.upstream, o.label()),
                None => a.upstream.clone(),
            })
            .collect();
        log::info!(
            "{} {} {} {} {} {:?} {} route={} upstreams=[{}] {}ms{}",
            ctx.listener.name,
            client,
            ctx.identity.principal.name,
            session.req_header().method,
            session.req_header().uri,
            session.req_header().version,
            status,
            route,
            tried.join(","),
            elapsed.as_millis(),
            e.map(|e| format!(" error={}", short_error(e)))
                .unwrap_or_default()
        );
        if let (Some(outcome), Some(m)) = (cache_outcome(session, ctx), metrics::metrics()) {
            m.cache_lookups.with_label_values(&[outcome]).inc();
        }
        if ctx.audit.enabled {
            let record = self.audit_record(session, ctx, status, client, route);
            ctx.model.recorder.finish(ctx.trace.take(), record);
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // `logging` writes one line per request, errors included.
        true
    }
}
