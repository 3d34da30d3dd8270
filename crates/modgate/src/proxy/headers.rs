//! The header policy: what of the client's request reaches an upstream (an allow-list; the
//! gateway's own Host, User-Agent and credential; the configured identity headers; the trace),
//! and what of the upstream's answer reaches the client (debug headers added; Server and, unless
//! allowed, Set-Cookie removed).

use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::report::CacheOutcome;
use super::{GatewayProxy, RequestCtx};
use crate::identity;
use crate::server::shutdown;

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

impl GatewayProxy {
    /// `upstream_request_filter`: the request the upstream gets.
    pub(super) async fn upstream_headers(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(upstream) = ctx.upstream() else {
            return Error::e_explain(ErrorType::InternalError, "no upstream for this request");
        };
        let path = match (ctx.single_path(), ctx.module_request()) {
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
        let git = ctx.git();
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
            let roles = ctx.decision().map(|d| &d.roles[..]).unwrap_or(&[]);
            for (name, value) in identity::forward_headers(forward, &ctx.identity, roles) {
                upstream_request.insert_header(name, value)?;
            }
        }
        if let Some(tp) = ctx.trace.as_ref().and_then(|t| t.upstream_traceparent()) {
            upstream_request.insert_header("traceparent", tp)?;
        }
        // To the verifying origin: which job this is (removed before the upstream).
        if let Some(job) = &ctx.verify {
            upstream_request.insert_header(super::verified::JOB_HEADER, job.header_value())?;
        }
        Ok(())
    }

    /// `response_filter`: the headers the client gets.
    pub(super) async fn response_headers(
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
            if ctx.cache_plan().is_some() && (ctx.hot || session.cache.enabled() || not_stored) {
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
}
