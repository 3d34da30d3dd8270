//! What a request leaves behind: in the `logging` phase, the access-log line, the metrics and
//! the audit record; for a request cut before that phase, its line and record all the same.

use pingora::proxy::Session;
use pingora::Error;

use super::access_line::{self, AccessLine};
use super::admit::Verdict;
use super::failure::short_error;
use super::report::{self, CacheOutcome, Finished};
use super::{GatewayProxy, RequestCtx};
use crate::fetched;

impl GatewayProxy {
    /// `logging`.
    pub(super) async fn finish(
        &self,
        session: &mut Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        ctx.record.finished = true;
        self.rate_charge(session, ctx);
        if let Some(g) = crate::conn::guarded(session.as_downstream().stream()) {
            g.request_finished();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let kind = ctx.admission.as_ref().and_then(|a| a.kind);
        let route = ctx.route().map(|r| r.name.clone());
        let route_label = route.as_deref().unwrap_or("-");
        let elapsed = ctx.started.elapsed();
        // A background refresh (a subrequest) answered no client: it is not a request of the
        // request counters and latency (its outcome shows in the cache counters).
        if session.subrequest_ctx.is_none() {
            self.metrics.request_finished(
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
        // With the access line filtered out (log.level warn, RUST_LOG), it is not formatted.
        if access_line::enabled() {
            let req = session.req_header();
            AccessLine {
                listener: &ctx.listener.name,
                client: &client,
                identity: &ctx.identity.principal.name,
                method: &req.method,
                uri: &req.uri,
                version: ctx.client_version.unwrap_or(req.version),
                status,
                route: route_label,
                upstreams: ctx.cursor.log_summary(),
                elapsed,
                trace_id: ctx.trace.as_ref().map_or("", |t| t.trace_id.as_str()),
                error: e.map(short_error),
            }
            .write();
        }
        let cache = ctx.cache_outcome(session);
        if let Some(outcome) = cache {
            self.metrics.cache_looked_up(outcome.as_str());
        }
        if let Some(c) = self.cache.as_deref() {
            let (no_space, io) = c.storage.write_failures();
            self.metrics.cache_write_failures(no_space, io);
        }
        if cache == Some(CacheOutcome::NotStored) || ctx.not_stored.is_some() {
            let why = ctx.not_stored.take().unwrap_or_else(|| {
                "not stored in the cache: its storage failed (see the log)".to_string()
            });
            ctx.record.reason.get_or_insert(why);
        }
        if let Some(w) = self.cache.as_deref().and_then(|c| c.fetched.as_deref()) {
            self.note_fetch(w, session, e.is_some(), status, ctx);
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
                ctx.admission.as_ref(),
                &ctx.cursor,
                &mut ctx.record,
            );
            ctx.model.recorder.finish(trace, record);
        }
    }
}

impl GatewayProxy {
    /// Hands an exact `.zip`/`.mod` served whole to the fetched index's writer (never waits).
    fn note_fetch(
        &self,
        writer: &modgate_fetched::Writer,
        session: &Session,
        failed: bool,
        status: u16,
        ctx: &RequestCtx,
    ) {
        let Some(admission) = ctx.admission.as_ref() else {
            return;
        };
        let Verdict::Forward {
            ledger_key: Some((artifact, version)),
            ..
        } = &admission.verdict
        else {
            return;
        };
        let content_length = session
            .response_written()
            .and_then(|r| r.headers.get(http::header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let principal = &ctx.identity.principal;
        let finished = fetched::Finished {
            method: &session.req_header().method,
            status,
            failed,
            cut_or_refused: ctx.record.cut.is_some() || ctx.guard.refusal().is_some(),
            subrequest: session.subrequest_ctx.is_some(),
            content_length,
            body_bytes_sent: session.body_bytes_sent() as u64,
            ledger_key: Some((*artifact, version.as_str())),
            module: admission.request.as_ref().map_or("", |r| r.module.as_str()),
            identity: &principal.name,
            source: principal.source.as_str(),
        };
        if let Some(served) = fetched::fetch_of(&finished, modgate_fetched::index::now_ms()) {
            writer.submit(served);
        }
    }
}

/// A request whose future is dropped before its `logging` phase — still in flight when the
/// grace period of a shutdown ended and Pingora stopped its runtime (or a phase panicked) —
/// still gets its access line and its audit record, saying it was cut.
impl Drop for RequestCtx {
    fn drop(&mut self) {
        if self.record.finished || !self.record.enabled {
            return;
        }
        let Some(seen) = self.record.seen.take() else {
            return;
        };
        let elapsed = self.started.elapsed();
        let route = self.route().map(|r| r.name.clone());
        let status = self.record.status_sent;
        let why = "by the gateway: it stopped before the answer ended (the shutdown's grace \
                   period was over); bytes sent unknown";
        access_line::cut(
            &self.listener.name,
            &seen,
            &self.identity.principal.name,
            status,
            route.as_deref().unwrap_or("-"),
            &self.cursor.log_summary(),
            elapsed,
            why,
        );
        if !self.model.recorder.wants_records() {
            return;
        }
        self.record.cut = Some(why.to_string());
        let trace = self.trace.take();
        let finished = Finished {
            listener: &self.listener.name,
            client: seen.client,
            method: seen.method,
            path: seen.path,
            route: route.as_deref(),
            status,
            bytes: 0,
            duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            trace_id: trace
                .as_ref()
                .map(|t| t.trace_id.clone())
                .unwrap_or_default(),
            cache: None,
            integrity_refusal: None,
        };
        let record = report::audit_record(
            finished,
            &self.identity,
            self.admission.as_ref(),
            &self.cursor,
            &mut self.record,
        );
        self.model.recorder.finish(trace, record);
    }
}
