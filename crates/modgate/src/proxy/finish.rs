//! The `logging` phase: what a finished request leaves behind — the access-log line, the
//! metrics and the audit record.

use pingora::proxy::Session;
use pingora::Error;

use super::failure::short_error;
use super::report::{self, CacheOutcome, Finished};
use super::{GatewayProxy, RequestCtx};
use crate::metrics;

impl GatewayProxy {
    pub(super) async fn finish(
        &self,
        session: &mut Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        ctx.record.finished = true;
        if let Some(g) = crate::conn::guarded(session.as_downstream().stream()) {
            g.request_finished();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let kind = ctx
            .admission
            .as_ref()
            .and_then(|a| a.kind)
            .map(|k| k.as_str())
            .unwrap_or("other");
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
                ctx.admission.as_ref(),
                &ctx.cursor,
                &mut ctx.record,
            );
            ctx.model.recorder.finish(trace, record);
        }
    }
}
