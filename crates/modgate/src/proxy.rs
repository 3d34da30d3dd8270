//! The Pingora `ProxyHttp` implementation: one request from the client to an upstream chain
//! and back.
//!
//! ```text
//!  request_filter ─ health / metrics endpoints; method check; GOPROXY path parsed and
//!                   `!`-decoded (bad input → 4xx, never forwarded); route chosen
//!  upstream_peer ── the chain's current step → peer (a step whose host does not resolve
//!                   falls through on `any-error`)
//!  upstream_request_filter ─ canonical encoded path, Host, User-Agent; every other client
//!                   header dropped except an allow-list (no credentials reach an upstream)
//!  upstream_response_filter ─ 404/410 → next step; 5xx etc. → next step on `any-error`,
//!                   otherwise 502 with a reason
//!  fail_to_connect / error_while_proxy ─ connect errors and timeouts: next step on
//!                   `any-error`; a dead pooled connection is retried on the same step
//!  fail_to_proxy ── 502 / 504 with a one-line reason (never a silent 404)
//!  logging ──────── one access-log line and the metrics
//! ```
//! Moving on to the next step is done with Pingora's retry loop: the failing phase returns an
//! error marked retryable and advances `ctx.step`, and `upstream_peer` is asked again.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, Method};
use modgate_protocol::{GoProxyRequest, ModuleRequest, RequestKind};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::gateway::Gateway;
use crate::metrics;
use crate::respond;
use crate::upstream::{Chain, Upstream};

/// `User-Agent` modgate sends upstream.
pub const USER_AGENT: &str = concat!("modgate/", env!("CARGO_PKG_VERSION"));

/// Client request headers passed on to upstreams; everything else (cookies, credentials,
/// identity headers, proxy headers) stays behind.
const FORWARDED_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "if-none-match",
    "if-modified-since",
    "traceparent",
    "tracestate",
];

/// The error type that tells the retry loop to move to the next chain step.
const FALLTHROUGH: ErrorType = ErrorType::Custom("modgate: next chain step");

/// Per-listener settings the proxy needs at request time.
#[derive(Debug, Clone)]
pub struct ListenerRuntime {
    pub name: String,
    pub keepalive_secs: u64,
    pub metrics: bool,
}

/// The proxy logic for one listener.
pub struct GatewayProxy {
    gateway: Arc<Gateway>,
    listener: ListenerRuntime,
}

impl GatewayProxy {
    pub fn new(gateway: Arc<Gateway>, listener: ListenerRuntime) -> Self {
        GatewayProxy { gateway, listener }
    }

    fn chain<'a>(&'a self, ctx: &RequestCtx) -> Option<&'a Chain> {
        ctx.route
            .and_then(|i| self.gateway.routes.routes().get(i))
            .map(|r| &r.target)
    }

    fn current_upstream(&self, ctx: &RequestCtx) -> Option<Arc<Upstream>> {
        self.chain(ctx)
            .and_then(|c| c.steps.get(ctx.step))
            .map(|s| s.upstream.clone())
    }

    fn route_name(&self, ctx: &RequestCtx) -> &str {
        ctx.route
            .and_then(|i| self.gateway.routes.routes().get(i))
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

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    request: Option<ModuleRequest>,
    kind: Option<RequestKind>,
    route: Option<usize>,
    step: usize,
    attempts: Vec<Attempt>,
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
        RequestCtx {
            started: Instant::now(),
            request: None,
            kind: None,
            route: None,
            step: 0,
            attempts: Vec::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        session.set_keepalive(Some(self.listener.keepalive_secs));
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
            "/metrics" if self.listener.metrics => {
                let body = Bytes::from(metrics::render());
                respond::ok(session, "text/plain; version=0.0.4", body).await?;
                return Ok(true);
            }
            _ => {}
        }

        if method != Method::GET && method != Method::HEAD {
            respond::text(
                session,
                405,
                &format!(
                    "method {method} is not allowed: the GOPROXY protocol is read-only (GET, HEAD)"
                ),
                &[("Allow", "GET, HEAD")],
            )
            .await?;
            return Ok(true);
        }

        let parsed = match self.gateway.parser.parse(&target) {
            Ok(p) => p,
            Err(e) => {
                respond::text(session, e.status(), &e.to_string(), &[]).await?;
                return Ok(true);
            }
        };
        ctx.kind = Some(parsed.kind());
        match parsed {
            GoProxyRequest::GoGet { import_path } => {
                respond::text(
                    session,
                    404,
                    &format!("{import_path}: modgate does not serve ?go-get=1 pages"),
                    &[],
                )
                .await?;
                Ok(true)
            }
            GoProxyRequest::Sumdb(s) => {
                // Answered here and never forwarded: a lookup can name a private module.
                // 404 on `supported` tells `go` to use the checksum database directly.
                respond::text(
                    session,
                    404,
                    &format!(
                        "checksum database {:?} is not proxied by this gateway",
                        s.name
                    ),
                    &[],
                )
                .await?;
                Ok(true)
            }
            GoProxyRequest::Module(req) => match self.gateway.routes.lookup(&req.module) {
                None => {
                    respond::text(
                        session,
                        404,
                        &format!("no route for module {}", req.module),
                        &[],
                    )
                    .await?;
                    Ok(true)
                }
                Some(m) => {
                    ctx.route = Some(m.index);
                    ctx.request = Some(req);
                    Ok(false)
                }
            },
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let private = ctx
            .route
            .and_then(|i| self.gateway.routes.routes().get(i))
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
        let (Some(req), Some(upstream)) = (ctx.request.as_ref(), self.current_upstream(ctx)) else {
            return Error::e_explain(ErrorType::InternalError, "no request to forward");
        };
        let path = upstream.request_path(&req.upstream_path());
        let uri: http::Uri = path
            .parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "building upstream URI", e))?;
        upstream_request.set_uri(uri);
        let drop: Vec<HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|n| !FORWARDED_HEADERS.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in drop {
            upstream_request.remove_header(&name);
        }
        upstream_request.insert_header("Host", upstream.host_header.as_str())?;
        upstream_request.insert_header("User-Agent", USER_AGENT)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        let outcome = match status {
            404 | 410 => Outcome::NotFound(status),
            100..=399 => Outcome::Answered(status),
            _ => Outcome::Status(status),
        };
        match outcome {
            Outcome::Answered(_) => {
                self.settle_attempt(ctx, outcome);
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

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = ctx.route.and_then(|i| self.gateway.routes.routes().get(i)) {
            upstream_response.insert_header("X-Modgate-Route", route.name.as_str())?;
        }
        if let Some(a) = ctx.attempts.last() {
            upstream_response.insert_header("X-Modgate-Upstream", a.upstream.as_str())?;
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
            None => "request".to_string(),
        };
        let tried: Vec<String> = ctx
            .attempts
            .iter()
            .map(|a| {
                let outcome = a
                    .outcome
                    .as_ref()
                    .map(Outcome::describe)
                    .unwrap_or_else(|| short_error(e));
                format!("{} {}", a.upstream, outcome)
            })
            .collect();
        let message = if tried.is_empty() {
            format!("{what}: {}", short_error(e))
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
                    self.listener.name.as_str(),
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
            "{} {} {} {} {:?} {} route={} upstreams=[{}] {}ms{}",
            self.listener.name,
            client,
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
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // `logging` writes one line per request, errors included.
        true
    }
}
