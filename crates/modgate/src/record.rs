//! Where request decisions are recorded: one JSON audit line per request, an OpenTelemetry span
//! for every denied or unauthenticated request (and a server span per sampled request), and the
//! W3C trace context carried from the client to the upstream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use modgate_telemetry::{
    AuditDecision, AuditLog, AuditOptions, AuditRecord, AuditSinkConfig, OtelConfig, RequestSpan,
    Telemetry,
};
use opentelemetry::{Context, KeyValue};
use pingora::http::RequestHeader;

use crate::metrics::{self, Metrics};

/// The recording concern's metric handle: `modgate_audit_records_lost_total` (counted from the
/// audit writer's thread) and the span export counters, made by `Model::build` for the recorder
/// it starts.
#[derive(Clone, Default)]
pub struct RecordMetrics(Option<RecordSeries>);

#[derive(Clone)]
struct RecordSeries {
    audit_lost: prometheus::IntCounter,
    spans_dropped: prometheus::IntCounter,
    spans_exported: prometheus::IntCounter,
}

impl RecordMetrics {
    pub fn new(metrics: Option<&Metrics>) -> RecordMetrics {
        RecordMetrics(metrics.map(|m| RecordSeries {
            audit_lost: m.audit_lost.clone(),
            spans_dropped: m.spans_dropped.clone(),
            spans_exported: m.spans_exported.clone(),
        }))
    }

    /// Brings the span counters up to the exporter's own totals.
    fn sync_spans(&self, t: &Telemetry) {
        if let Some(s) = &self.0 {
            metrics::sync_counter(&s.spans_dropped, t.dropped_spans());
            metrics::sync_counter(&s.spans_exported, t.exported_spans());
        }
    }
}

/// The trace a request belongs to.
pub struct Trace {
    /// The incoming trace id, or a new one.
    pub trace_id: String,
    cx: Context,
    span: Option<RequestSpan>,
    /// Made the first time an upstream is asked (most requests are cache hits and never need it):
    /// the same value for every attempt of the request.
    upstream_traceparent: OnceLock<Option<String>>,
}

impl Trace {
    /// The `traceparent` to send upstream: modgate's span when the request is sampled, the
    /// client's own when it sent a valid one, else one carrying the request's (audit) trace id.
    pub fn upstream_traceparent(&self) -> Option<String> {
        self.upstream_traceparent
            .get_or_init(|| {
                self.span
                    .as_ref()
                    .map(|s| s.traceparent())
                    .or_else(|| Telemetry::traceparent_for_upstream(&self.cx))
            })
            .clone()
    }
}

/// The audit log and the span exporter.
pub struct Recorder {
    pub audit: AuditLog,
    /// The audit log writes somewhere (not `output: off`).
    audit_on: bool,
    /// `audit.fail_mode: closed`: requests are refused while records cannot be written.
    fail_closed: bool,
    telemetry: Option<Telemetry>,
    metrics: RecordMetrics,
    stopped: AtomicBool,
}

impl Recorder {
    /// Opens the audit sink and starts the span exporter (a collector that is down does not
    /// stop modgate: spans are counted as dropped). `fail_closed`: `audit.fail_mode: closed`
    /// (refuse requests while records cannot be written; moot when the sink is off). Lost
    /// records and exported spans are counted on `metrics`.
    pub fn start(
        sink: AuditSinkConfig,
        fail_closed: bool,
        otel: OtelConfig,
        metrics: RecordMetrics,
    ) -> anyhow::Result<Recorder> {
        let audit_on = !matches!(sink, AuditSinkConfig::Off);
        // The exporter first: it touches no file, so a refusal leaves no new audit file.
        let telemetry = Telemetry::start(otel).map_err(|e| anyhow::anyhow!("telemetry: {e}"))?;
        let fail_closed = audit_on && fail_closed;
        let options =
            AuditOptions {
                fail_closed,
                on_lost: metrics.0.as_ref().map(|s| s.audit_lost.clone()).map(|c| {
                    Arc::new(move |n: u64| c.inc_by(n)) as modgate_telemetry::audit::LostHook
                }),
            };
        let audit =
            AuditLog::start_with(sink, options).map_err(|e| anyhow::anyhow!("audit: {e}"))?;
        if telemetry.is_none() {
            log::info!("OpenTelemetry export off (no telemetry.otlp_endpoint, no OTEL_EXPORTER_OTLP_ENDPOINT)");
        }
        Ok(Recorder {
            audit,
            audit_on,
            fail_closed,
            telemetry,
            metrics,
            stopped: AtomicBool::new(false),
        })
    }

    /// Starts the trace of a request from its `traceparent` / `tracestate` headers.
    pub fn begin(&self, req: &RequestHeader) -> Trace {
        let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
        let cx = Telemetry::extract(header("traceparent"), header("tracestate"));
        let trace_id = Telemetry::trace_id_for(&cx);
        let span = self.telemetry.as_ref().and_then(|t| {
            t.start_request_span(
                &cx,
                "modgate.request",
                &[KeyValue::new("http.request.method", req.method.to_string())],
            )
        });
        // The upstream's traceparent: modgate's own span when sampled; else the client's header
        // unchanged; else (no valid header from the client) the request's trace id, unsampled,
        // so the upstream's logs can be matched with the audit record.
        Trace {
            trace_id: span.as_ref().map(|s| s.trace_id()).unwrap_or(trace_id),
            cx,
            span,
            upstream_traceparent: OnceLock::new(),
        }
    }

    /// Why a request must be refused before it is served, if it must: with `audit.fail_mode:
    /// closed`, while the audit log cannot be written (from its first failed write until a
    /// write succeeds again; the refused requests' own records are the writes that find out).
    pub fn unaudited_refusal(&self) -> Option<String> {
        (self.fail_closed && !self.audit.writable()).then(|| {
            "the gateway cannot write its audit log (a full or failing disk), and this site \
             refuses what it cannot audit (audit.fail_mode: closed); try again later"
                .to_string()
        })
    }

    /// Brings the span export counters up to date (at each scrape, not only at the next
    /// request).
    pub fn sync_metrics(&self) {
        if let Some(t) = &self.telemetry {
            self.metrics.sync_spans(t);
        }
    }

    /// Whether a finished request's record goes anywhere (an audit log or spans): with both
    /// off, the record is not even built.
    pub fn wants_records(&self) -> bool {
        self.audit_on || self.telemetry.is_some()
    }

    /// Writes the audit record and, for a refusal, the deny span.
    pub fn finish(&self, trace: Option<Trace>, record: AuditRecord) {
        if let Err(e) = self.audit.record(&record) {
            log::error!("audit record not written: {e}");
        }
        let Some(trace) = trace else { return };
        let denied = matches!(
            record.decision,
            AuditDecision::Deny | AuditDecision::Unauthenticated
        );
        // The attributes only go to spans: not built when no span will carry them.
        let attrs = if trace.span.is_some() || (denied && self.telemetry.is_some()) {
            span_attributes(&record)
        } else {
            Vec::new()
        };
        if let Some(t) = &self.telemetry {
            if denied {
                // Under modgate's own request span when there is one, else under the client's.
                let parent = trace
                    .span
                    .as_ref()
                    .map(RequestSpan::context)
                    .unwrap_or_else(|| trace.cx.clone());
                t.deny_span(
                    &parent,
                    attrs.clone(),
                    record.reason.as_deref().unwrap_or(""),
                );
            }
            self.metrics.sync_spans(t);
        }
        if let Some(mut span) = trace.span {
            for kv in attrs {
                span.set_attr(kv);
            }
            span.end(record.status);
        }
    }

    /// Flushes the audit log and pending spans (bounded: a dead collector cannot hold up exit).
    pub fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.audit.shutdown() {
            log::error!("audit log not flushed: {e}");
        }
        if let Some(t) = &self.telemetry {
            t.shutdown();
        }
    }
}

/// The audit record's fields as span attributes (no credentials: the record has none).
fn span_attributes(r: &AuditRecord) -> Vec<KeyValue> {
    let mut kv = vec![
        KeyValue::new("modgate.listener", r.listener.clone()),
        KeyValue::new("client.address", r.client_addr.clone()),
        KeyValue::new("modgate.identity.source", r.identity.source.clone()),
        KeyValue::new("modgate.identity.name", r.identity.name.clone()),
        KeyValue::new("modgate.roles", r.roles.join(",")),
        KeyValue::new("http.request.method", r.method.clone()),
        KeyValue::new("url.path", r.path.clone()),
        KeyValue::new("modgate.decision", r.decision.as_str()),
        KeyValue::new("http.response.status_code", i64::from(r.status)),
        KeyValue::new("modgate.duration_ms", r.duration_ms),
    ];
    let optional = [
        ("modgate.identity.dn", &r.identity.dn),
        ("modgate.identity.fingerprint", &r.identity.fingerprint),
        ("modgate.identity.serial", &r.identity.serial),
        ("modgate.module", &r.module),
        ("modgate.version", &r.version),
        ("modgate.kind", &r.kind),
        ("modgate.route", &r.route),
        ("modgate.rule", &r.rule),
        ("modgate.reason", &r.reason),
        ("modgate.upstream", &r.upstream),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            kv.push(KeyValue::new(k, v.clone()));
        }
    }
    kv
}
