//! Where modgate's decisions are recorded: the JSON audit log ([`audit`]: one line per request
//! decision, written by a background thread, reopenable for logrotate) and OpenTelemetry
//! tracing ([`otel`]: W3C trace context, always-exported deny spans, sampled request spans,
//! OTLP export over gRPC or HTTP/protobuf on a runtime owned by [`Telemetry`]).

#![warn(missing_docs)]

pub mod audit;
pub mod otel;

pub use audit::{
    rfc3339_millis, AuditDecision, AuditError, AuditIdentity, AuditLog, AuditOptions, AuditRecord,
    AuditSinkConfig, LostHook,
};
pub use otel::{
    resolve, Context, KeyValue, OtelConfig, OtelError, OtlpProtocol, RequestSpan, ResolvedExporter,
    Telemetry, DENY_SPAN_NAME, MAX_QUEUE_SPANS,
};
