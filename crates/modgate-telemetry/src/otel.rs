//! OpenTelemetry tracing for modgate: W3C trace-context extraction, an always-exported
//! `modgate.deny` span for every denied request, optional sampled server spans per request,
//! and OTLP export (gRPC via tonic or HTTP/protobuf via hyper) that never blocks the gateway.
//!
//! # Configuration resolution ([`resolve`])
//!
//! Endpoint (first non-empty wins; none ⇒ tracing disabled):
//! 1. [`OtelConfig::endpoint`];
//! 2. `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! 3. `OTEL_EXPORTER_OTLP_ENDPOINT`.
//!
//! Protocol (first present wins; an unknown value is an error, it does not fall through):
//! [`OtelConfig::protocol`], `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, else `http/protobuf` (the OTel spec default). Accepted
//! values are `grpc` and `http/protobuf`.
//!
//! URL actually used (following the OTLP exporter spec, "Endpoint URLs for OTLP/HTTP"):
//! - gRPC: the endpoint as given, whatever its source.
//! - HTTP from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: as given (a signal-specific URL is
//!   used verbatim, even without a path).
//! - HTTP from `OTEL_EXPORTER_OTLP_ENDPOINT`: a base URL; `v1/traces` is appended to its path
//!   (`http://c:4318` → `http://c:4318/v1/traces`, `http://c:4318/p/` → `http://c:4318/p/v1/traces`).
//! - HTTP from the config `endpoint`: if its path is empty or `/`, it is treated as a base URL
//!   and `/v1/traces` is appended; otherwise it is taken as the full traces URL.
//!
//! Only `http://` endpoints are accepted: this build carries no TLS stack for the exporter,
//! so an `https://` endpoint is a configuration error rather than a silent export failure.
//!
//! # Runtime and export design
//!
//! `main` is not inside a tokio runtime and Pingora's runtimes belong to its services, so
//! [`Telemetry`] owns a dedicated thread (`modgate-otel`) running a current-thread tokio
//! runtime. The OTLP exporter (tonic channel or hyper client) is built inside that runtime's
//! context. Spans are batched by the SDK's thread-based `BatchSpanProcessor` (its own thread,
//! no runtime needed); every batch it exports goes through a wrapper exporter that spawns the
//! real export onto the owned runtime, caps it at [`OtelConfig::timeout`], and counts the
//! outcome ([`Telemetry::exported_spans`], [`Telemetry::dropped_spans`]). This works the same
//! for gRPC and HTTP and never needs an ambient runtime.
//!
//! Ending a span only enqueues it (a non-blocking channel send). The queue is bounded at
//! [`MAX_QUEUE_SPANS`]: a span that would overflow it is dropped and counted in
//! `dropped_spans` (the SDK does not expose its own queue-full counter, so a wrapper
//! processor enforces the bound itself, at or below the SDK channel's capacity).
//!
//! # Sampling
//!
//! Spans named [`DENY_SPAN_NAME`] are always recorded and exported. Other spans use
//! `ParentBased(TraceIdRatioBased(sample_ratio))` when `sample_ratio > 0`, and are never
//! sampled when `sample_ratio == 0`.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt,
    TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, Sampler,
    SamplingDecision, SamplingResult, SdkTracer, SdkTracerProvider, ShouldSample, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

pub use opentelemetry::{Context, KeyValue};

/// Name of the span emitted for every denied request.
pub const DENY_SPAN_NAME: &str = "modgate.deny";

/// Bound of the span queue between `span.end()` and the exporter thread.
pub const MAX_QUEUE_SPANS: usize = 2048;

const MAX_EXPORT_BATCH: usize = 512;

/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
pub const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_ENDPOINT`
pub const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`
pub const ENV_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// `OTEL_EXPORTER_OTLP_PROTOCOL`
pub const ENV_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses the OTel spelling (`grpc`, `http/protobuf`).
    pub fn parse(s: &str) -> Option<OtlpProtocol> {
        match s.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }

    /// The OTel spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

impl std::str::FromStr for OtlpProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<OtlpProtocol, String> {
        OtlpProtocol::parse(s)
            .ok_or_else(|| format!("unknown OTLP protocol {s:?} (use grpc or http/protobuf)"))
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tracing configuration (from `gateway.yaml`; unset fields fall back to the standard
/// `OTEL_EXPORTER_OTLP_*` environment variables, see [`resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    /// Collector endpoint (`http://host:port[/path]`).
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: Option<OtlpProtocol>,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Fraction of requests that get a server span (0..=1). 0 = only deny spans.
    pub sample_ratio: f64,
    /// Export timeout per batch; also bounds `flush` and `shutdown`.
    pub timeout: Duration,
    /// Extra headers (HTTP) / metadata (gRPC) sent to the collector.
    pub headers: Vec<(String, String)>,
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            endpoint: None,
            protocol: None,
            service_name: "modgate".to_string(),
            sample_ratio: 0.0,
            timeout: Duration::from_secs(10),
            headers: Vec::new(),
        }
    }
}

/// The exporter settings after applying config and environment (see [`resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedExporter {
    /// Transport.
    pub protocol: OtlpProtocol,
    /// The URL the exporter sends to (for HTTP, the full traces URL).
    pub url: String,
    /// Where the endpoint came from: `"config"` or the environment variable's name.
    pub source: &'static str,
}

/// Tracing errors.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// A protocol value is not `grpc` or `http/protobuf`.
    #[error("{source_name}: unsupported OTLP protocol {value:?} (expected \"grpc\" or \"http/protobuf\")")]
    InvalidProtocol {
        /// `"config"` or the environment variable.
        source_name: &'static str,
        /// The rejected value.
        value: String,
    },
    /// The endpoint is not a usable URL.
    #[error("{source_name}: invalid OTLP endpoint {value:?}: {reason}")]
    InvalidEndpoint {
        /// `"config"` or the environment variable.
        source_name: &'static str,
        /// The rejected value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A configured header name or value is invalid.
    #[error("invalid OTLP header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Why.
        reason: String,
    },
    /// `sample_ratio` is not within 0..=1.
    #[error("sample_ratio must be within 0..=1, got {0}")]
    InvalidSampleRatio(f64),
    /// `timeout` is zero.
    #[error("the OTLP export timeout must be greater than zero")]
    InvalidTimeout,
    /// The telemetry runtime thread could not be started.
    #[error("cannot start the telemetry runtime: {0}")]
    Runtime(String),
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// A flush failed or timed out.
    #[error("span flush failed: {0}")]
    Flush(String),
    /// Shutdown failed or timed out.
    #[error("telemetry shutdown failed: {0}")]
    Shutdown(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EndpointKind {
    /// Base URL: append `v1/traces` for HTTP.
    Base,
    /// Full traces URL: use verbatim.
    Full,
    /// Config: base if the path is empty or `/`, else full.
    Config,
}

/// Applies config and environment to find the exporter (see the module docs for the exact
/// rules). `env` looks up an environment variable; empty values count as unset. Returns
/// `Ok(None)` when no endpoint is named anywhere (tracing disabled). Also validates
/// `sample_ratio`, `timeout` and `headers`.
pub fn resolve(
    cfg: &OtelConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ResolvedExporter>, OtelError> {
    if !(0.0..=1.0).contains(&cfg.sample_ratio) {
        return Err(OtelError::InvalidSampleRatio(cfg.sample_ratio));
    }
    if cfg.timeout.is_zero() {
        return Err(OtelError::InvalidTimeout);
    }
    for (name, value) in &cfg.headers {
        http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| OtelError::InvalidHeader {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        http::HeaderValue::from_str(value).map_err(|e| OtelError::InvalidHeader {
            name: name.clone(),
            reason: e.to_string(),
        })?;
    }
    let get = |k: &str| {
        env(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };

    let protocol = match cfg.protocol {
        Some(p) => p,
        None => {
            let from_env = [ENV_TRACES_PROTOCOL, ENV_PROTOCOL]
                .into_iter()
                .find_map(|var| get(var).map(|v| (var, v)));
            match from_env {
                Some((var, v)) => OtlpProtocol::parse(&v).ok_or(OtelError::InvalidProtocol {
                    source_name: var,
                    value: v,
                })?,
                None => OtlpProtocol::HttpProtobuf,
            }
        }
    };

    let config_endpoint = cfg
        .endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    let (source, endpoint, kind) = if let Some(e) = config_endpoint {
        ("config", e, EndpointKind::Config)
    } else if let Some(e) = get(ENV_TRACES_ENDPOINT) {
        (ENV_TRACES_ENDPOINT, e, EndpointKind::Full)
    } else if let Some(e) = get(ENV_ENDPOINT) {
        (ENV_ENDPOINT, e, EndpointKind::Base)
    } else {
        return Ok(None);
    };

    let parts = split_url(&endpoint).map_err(|reason| OtelError::InvalidEndpoint {
        source_name: source,
        value: endpoint.clone(),
        reason,
    })?;
    let url = match protocol {
        OtlpProtocol::Grpc => endpoint.clone(),
        OtlpProtocol::HttpProtobuf => {
            let append = match kind {
                EndpointKind::Full => false,
                EndpointKind::Base => true,
                EndpointKind::Config => parts.path.is_empty() || parts.path == "/",
            };
            if append {
                let sep = if parts.path.ends_with('/') { "" } else { "/" };
                format!("{}{}{sep}v1/traces{}", parts.origin, parts.path, parts.rest)
            } else {
                endpoint.clone()
            }
        }
    };
    Ok(Some(ResolvedExporter {
        protocol,
        url,
        source,
    }))
}

struct UrlParts<'a> {
    /// `http://host:port`
    origin: &'a str,
    /// Path (possibly empty), without query or fragment.
    path: &'a str,
    /// `?query#fragment` (possibly empty).
    rest: &'a str,
}

fn split_url(url: &str) -> Result<UrlParts<'_>, &'static str> {
    let lower = url.to_ascii_lowercase();
    let scheme_len = if lower.starts_with("http://") {
        "http://".len()
    } else if lower.starts_with("https://") {
        return Err("https endpoints are not supported (no TLS in the OTLP exporter); use http://");
    } else {
        return Err("expected an http:// URL");
    };
    let after = &url[scheme_len..];
    let auth_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..auth_end];
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err("missing or invalid host");
    }
    let origin_end = scheme_len + auth_end;
    let tail = &url[origin_end..];
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    Ok(UrlParts {
        origin: &url[..origin_end],
        path: &tail[..path_end],
        rest: &tail[path_end..],
    })
}

// ---------------------------------------------------------------------------------------
// Trace context helpers
// ---------------------------------------------------------------------------------------

/// The trace id chosen for a request that arrived without a valid `traceparent`: kept in the
/// request's [`Context`] so the audit record and any spans of the request share it.
#[derive(Debug, Clone, Copy)]
struct RootTraceId(TraceId);

thread_local! {
    /// Trace id the next root span built on this thread must use (see `Inner::build`).
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Random ids, except that a root span takes the trace id pinned by `Inner::build`.
#[derive(Debug, Default)]
struct PinnedIdGenerator {
    random: RandomIdGenerator,
}

impl IdGenerator for PinnedIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.random.new_span_id()
    }
}

fn inject(cx: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut map);
    map
}

fn root_trace_id(cx: &Context) -> Option<TraceId> {
    if cx.span().span_context().is_valid() {
        None
    } else {
        cx.get::<RootTraceId>().map(|r| r.0)
    }
}

/// Always samples deny spans; other spans go to `requests`.
#[derive(Debug, Clone)]
struct ModgateSampler {
    requests: Sampler,
}

impl ShouldSample for ModgateSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if name == DENY_SPAN_NAME {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: parent_context
                    .map(|cx| cx.span().span_context().trace_state().clone())
                    .unwrap_or_default(),
            };
        }
        self.requests
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

fn request_sampler(ratio: f64) -> Sampler {
    if ratio > 0.0 {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
    } else {
        Sampler::AlwaysOff
    }
}

// ---------------------------------------------------------------------------------------
// Export plumbing
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    /// Spans accepted by `BoundedProcessor` and not yet handed to an export.
    queued: AtomicUsize,
    /// Export failures, as said in the log.
    outage: Mutex<ExportOutage>,
}

/// How long a failing export stays quiet in the log after saying so: a WARN when exports start
/// failing, then at most one per interval (with the spans dropped since), an INFO when they
/// work again.
pub const EXPORT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The export failures since the last success.
#[derive(Debug, Default)]
struct ExportOutage {
    /// When the failure was last logged; `None`: exports work.
    logged: Option<std::time::Instant>,
    /// Spans dropped since then.
    unlogged: u64,
}

impl Counters {
    /// Counts an export's outcome and says in the log when exports start or stop failing.
    fn settle(&self, spans: u64, result: &OTelSdkResult) {
        let mut outage = lock(&self.outage);
        match result {
            Ok(()) => {
                self.exported.fetch_add(spans, Ordering::Relaxed);
                if outage.logged.take().is_some() {
                    log::info!(
                        "OTLP span export works again ({} span(s) dropped in all)",
                        self.dropped.load(Ordering::Relaxed)
                    );
                }
            }
            Err(e) => {
                let dropped = self.dropped.fetch_add(spans, Ordering::Relaxed) + spans;
                outage.unlogged += spans;
                let now = std::time::Instant::now();
                let due = outage
                    .logged
                    .is_none_or(|t| now.duration_since(t) >= EXPORT_FAILURE_LOG_INTERVAL);
                if due {
                    log::warn!(
                        "OTLP span export failed ({e}): {} span(s) dropped ({dropped} in all; \
                         counted in modgate_otel_spans_dropped_total; said again at most every \
                         {}s while it lasts)",
                        outage.unlogged,
                        EXPORT_FAILURE_LOG_INTERVAL.as_secs()
                    );
                    outage.logged = Some(now);
                    outage.unlogged = 0;
                }
            }
        }
    }
}

/// Runs the wrapped exporter's futures on the telemetry runtime and counts outcomes.
#[derive(Debug)]
struct RuntimeExporter<E> {
    inner: Arc<E>,
    rt: tokio::runtime::Handle,
    timeout: Duration,
    counters: Arc<Counters>,
}

impl<E: SpanExporter + 'static> SpanExporter for RuntimeExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let n = batch.len();
        // These spans have left the processor's queue.
        let _ = self
            .counters
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
        let inner = Arc::clone(&self.inner);
        let timeout = self.timeout;
        let counters = Arc::clone(&self.counters);
        let task = self.rt.spawn(async move {
            match tokio::time::timeout(timeout, inner.export(batch)).await {
                Ok(r) => r,
                Err(_) => Err(OTelSdkError::Timeout(timeout)),
            }
        });
        async move {
            let result = match task.await {
                Ok(r) => r,
                Err(e) => Err(OTelSdkError::InternalFailure(format!(
                    "export task did not complete: {e}"
                ))),
            };
            counters.settle(n as u64, &result);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Enforces the queue bound (counting overflow as dropped) in front of the SDK's
/// `BatchSpanProcessor`, whose own drop counter is private.
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    counters: Arc<Counters>,
    max_queue: usize,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let before = self.counters.queued.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_queue {
            self.counters.queued.fetch_sub(1, Ordering::AcqRel);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The thread that owns the telemetry tokio runtime.
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RuntimeThread {
    fn start() -> Result<RuntimeThread, OtelError> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("modgate-otel".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
                // Dropping the runtime here cancels any export still in flight.
            })
            .map_err(|e| OtelError::Runtime(e.to_string()))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| OtelError::Runtime("runtime thread exited".into()))?
            .map_err(OtelError::Runtime)?;
        Ok(RuntimeThread {
            handle,
            stop: Mutex::new(Some(stop_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn stop(&self) {
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(());
        }
        if let Some(t) = lock(&self.thread).take() {
            if t.join().is_err() {
                log::error!("telemetry runtime thread panicked");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    counters: Arc<Counters>,
    resolved: ResolvedExporter,
    timeout: Duration,
    runtime: RuntimeThread,
    shut_down: AtomicBool,
}

impl Inner {
    /// Builds a span; a root span takes the request's pinned trace id (see [`RootTraceId`]).
    fn build(&self, builder: SpanBuilder, parent: &Context) -> opentelemetry_sdk::trace::Span {
        let pinned = root_trace_id(parent);
        if pinned.is_some() {
            NEXT_TRACE_ID.with(|c| c.set(pinned));
        }
        let span = self.tracer.build_with_context(builder, parent);
        NEXT_TRACE_ID.with(|c| c.set(None));
        span
    }

    fn shutdown(&self) -> Result<(), OtelError> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Exports still need the runtime, so the provider goes first.
        let result = self
            .provider
            .shutdown_with_timeout(self.timeout)
            .map_err(|e| OtelError::Shutdown(e.to_string()));
        self.runtime.stop();
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!("{e}");
        }
    }
}

/// The tracing handle of the gateway (exists only when an endpoint is configured). Cheap to
/// clone; all clones share one exporter. The associated functions ([`Telemetry::extract`],
/// [`Telemetry::trace_id_for`], …) work without a handle.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporter", &self.inner.resolved)
            .finish()
    }
}

impl Telemetry {
    /// Resolves `cfg` against the process environment and starts exporting; `Ok(None)` when
    /// no endpoint is configured anywhere (tracing off). Callable outside any tokio runtime
    /// (and inside one: nothing blocks on it).
    pub fn start(cfg: OtelConfig) -> Result<Option<Telemetry>, OtelError> {
        Self::start_with_env(cfg, |k| std::env::var(k).ok())
    }

    /// Like [`Telemetry::start`] with an explicit environment lookup.
    pub fn start_with_env(
        cfg: OtelConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Telemetry>, OtelError> {
        let Some(resolved) = resolve(&cfg, env)? else {
            return Ok(None);
        };
        let runtime = RuntimeThread::start()?;
        let exporter = {
            let _guard = runtime.handle.enter();
            build_otlp_exporter(&cfg, &resolved)
        };
        let exporter = match exporter {
            Ok(e) => e,
            Err(e) => {
                runtime.stop();
                return Err(e);
            }
        };
        Ok(Some(Self::from_exporter(
            &cfg,
            resolved,
            runtime,
            exporter,
            MAX_QUEUE_SPANS,
        )))
    }

    fn from_exporter<E: SpanExporter + 'static>(
        cfg: &OtelConfig,
        resolved: ResolvedExporter,
        runtime: RuntimeThread,
        mut exporter: E,
        max_queue: usize,
    ) -> Telemetry {
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let counters = Arc::new(Counters::default());
        let wrapped = RuntimeExporter {
            inner: Arc::new(exporter),
            rt: runtime.handle.clone(),
            timeout: cfg.timeout,
            counters: Arc::clone(&counters),
        };
        let batch = BatchSpanProcessor::builder(wrapped)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(max_queue)
                    .with_max_export_batch_size(MAX_EXPORT_BATCH.min(max_queue))
                    .build(),
            )
            .build();
        let processor = BoundedProcessor {
            inner: batch,
            counters: Arc::clone(&counters),
            max_queue,
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(ModgateSampler {
                requests: request_sampler(cfg.sample_ratio),
            })
            .with_id_generator(PinnedIdGenerator::default())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer_with_scope(
            opentelemetry::InstrumentationScope::builder("modgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        Telemetry {
            inner: Arc::new(Inner {
                provider,
                tracer,
                counters,
                resolved,
                timeout: cfg.timeout,
                runtime,
                shut_down: AtomicBool::new(false),
            }),
        }
    }

    /// The exporter in use (for a startup log line).
    pub fn exporter(&self) -> &ResolvedExporter {
        &self.inner.resolved
    }

    /// Builds the request's trace context from its `traceparent` / `tracestate` headers
    /// (W3C Trace Context). A missing or invalid `traceparent` yields a new root context
    /// carrying a fresh random trace id, which [`Telemetry::trace_id_for`] and every span of
    /// the request then share.
    pub fn extract(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
        if traceparent.is_none() {
            // Without a traceparent there is no remote context (a tracestate alone is ignored
            // by the propagator): skip building its header map.
            return Context::new()
                .with_value(RootTraceId(RandomIdGenerator::default().new_trace_id()));
        }
        let mut map = HashMap::new();
        if let Some(tp) = traceparent {
            map.insert("traceparent".to_string(), tp.to_string());
        }
        if let Some(ts) = tracestate {
            map.insert("tracestate".to_string(), ts.to_string());
        }
        let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &map);
        if cx.span().span_context().is_valid() {
            cx
        } else {
            Context::new().with_value(RootTraceId(RandomIdGenerator::default().new_trace_id()))
        }
    }

    /// The trace id to log for the request (32 lowercase hex digits): the span's or incoming
    /// trace id, else the root id chosen by [`Telemetry::extract`], else a fresh random one.
    pub fn trace_id_for(cx: &Context) -> String {
        let sc = cx.span().span_context().clone();
        let id = if sc.is_valid() {
            sc.trace_id()
        } else if let Some(r) = cx.get::<RootTraceId>() {
            r.0
        } else {
            RandomIdGenerator::default().new_trace_id()
        };
        format!("{id:032x}")
    }

    /// The `traceparent` to send upstream when the request has no [`RequestSpan`]: the
    /// incoming one (unchanged) when it was valid; for a root context from
    /// [`Telemetry::extract`], the request's trace id with a fresh parent id and the sampled
    /// flag clear (so upstream logs correlate with the audit log); `None` for a context
    /// without either.
    pub fn traceparent_for_upstream(cx: &Context) -> Option<String> {
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return inject(cx).remove("traceparent");
        }
        let root = cx.get::<RootTraceId>()?;
        let sc = SpanContext::new(
            root.0,
            RandomIdGenerator::default().new_span_id(),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        inject(&Context::new().with_remote_span_context(sc)).remove("traceparent")
    }

    /// The `tracestate` to send upstream alongside [`Telemetry::traceparent_for_upstream`].
    pub fn tracestate_for_upstream(cx: &Context) -> Option<String> {
        inject(cx).remove("tracestate").filter(|s| !s.is_empty())
    }

    /// Records one `modgate.deny` server span (the given attributes, status Error with
    /// `reason`) as a child of `parent`, ended immediately. Always exported, whatever the
    /// sample ratio. Never blocks: the span is only queued.
    pub fn deny_span(&self, parent: &Context, attrs: Vec<KeyValue>, reason: &str) {
        let builder = SpanBuilder::from_name(DENY_SPAN_NAME)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs);
        let mut span = self.inner.build(builder, parent);
        span.set_status(Status::error(reason.to_string()));
        span.end();
    }

    /// Starts a server span for the request if the sampler picks it (`None` otherwise, and
    /// always `None` when `sample_ratio == 0`).
    pub fn start_request_span(
        &self,
        parent: &Context,
        name: &str,
        attrs: &[KeyValue],
    ) -> Option<RequestSpan> {
        let builder = SpanBuilder::from_name(name.to_string())
            .with_kind(SpanKind::Server)
            .with_attributes(attrs.to_vec());
        let span = self.inner.build(builder, parent);
        if !span.span_context().is_sampled() {
            return None;
        }
        Some(RequestSpan {
            cx: parent.with_span(span),
        })
    }

    /// Spans successfully exported so far.
    pub fn exported_spans(&self) -> u64 {
        self.inner.counters.exported.load(Ordering::Relaxed)
    }

    /// Spans lost so far: failed or timed-out exports, and spans refused because the queue
    /// ([`MAX_QUEUE_SPANS`]) was full.
    pub fn dropped_spans(&self) -> u64 {
        self.inner.counters.dropped.load(Ordering::Relaxed)
    }

    /// Exports everything queued so far. Blocks the calling thread for at most the configured
    /// timeout (call it from a blocking context, not on a busy async worker). An `Err` means
    /// the export failed or did not finish in time; the spans are then counted as dropped
    /// (once their export attempt ends).
    pub fn flush(&self) -> Result<(), OtelError> {
        let inner = &self.inner;
        if inner.shut_down.load(Ordering::Acquire) {
            return Ok(());
        }
        let provider = inner.provider.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("modgate-otel-flush".into())
            .spawn(move || {
                let _ = tx.send(provider.force_flush());
            })
            .map_err(|e| OtelError::Flush(e.to_string()))?;
        match rx.recv_timeout(inner.timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(OtelError::Flush(e.to_string())),
            Err(_) => Err(OtelError::Flush(format!(
                "not finished within {:?}",
                inner.timeout
            ))),
        }
    }

    /// Exports what is queued (bounded by the timeout), then stops the exporter and its
    /// runtime. Idempotent; later spans are not recorded. Dropping the last handle does the
    /// same. A failure (collector down, timeout) is logged as a warning: at that point there
    /// is nothing else to do about it.
    pub fn shutdown(&self) {
        if let Err(e) = self.inner.shutdown() {
            log::warn!("{e} (spans lost so far: {})", self.dropped_spans());
        }
    }
}

fn build_otlp_exporter(
    cfg: &OtelConfig,
    resolved: &ResolvedExporter,
) -> Result<opentelemetry_otlp::SpanExporter, OtelError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
    let built = match resolved.protocol {
        OtlpProtocol::HttpProtobuf => {
            let headers: HashMap<String, String> = cfg.headers.iter().cloned().collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(resolved.url.clone())
                .with_timeout(cfg.timeout)
                .with_headers(headers)
                .build()
        }
        OtlpProtocol::Grpc => {
            let mut map = http::HeaderMap::new();
            for (name, value) in &cfg.headers {
                let n = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                    OtelError::InvalidHeader {
                        name: name.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let v =
                    http::HeaderValue::from_str(value).map_err(|e| OtelError::InvalidHeader {
                        name: name.clone(),
                        reason: e.to_string(),
                    })?;
                map.append(n, v);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .with_endpoint(resolved.url.clone())
                .with_timeout(cfg.timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map),
                )
                .build()
        }
    };
    built.map_err(|e| OtelError::Exporter(e.to_string()))
}

/// A sampled server span for one request. Ends when [`RequestSpan::end`] is called (or when
/// the span and every context holding it are dropped).
#[derive(Debug, Clone)]
pub struct RequestSpan {
    cx: Context,
}

impl RequestSpan {
    /// The `traceparent` to send upstream (this span as parent).
    pub fn traceparent(&self) -> String {
        inject(&self.cx).remove("traceparent").unwrap_or_default()
    }

    /// The `tracestate` to send upstream, if any.
    pub fn tracestate(&self) -> Option<String> {
        inject(&self.cx)
            .remove("tracestate")
            .filter(|s| !s.is_empty())
    }

    /// This span's trace id (32 hex digits).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.cx.span().span_context().trace_id())
    }

    /// A context with this span as the active span (e.g. the parent of a deny span).
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// Sets (or replaces) an attribute.
    pub fn set_attr(&mut self, kv: KeyValue) {
        self.cx.span().set_attribute(kv);
    }

    /// Ends the span with the response status: records `http.response.status_code` and, per
    /// the HTTP semantic conventions for server spans, sets status Error for 5xx only.
    pub fn end(self, status_code: u16) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status_code),
        ));
        if status_code >= 500 {
            span.set_status(Status::error(format!("HTTP {status_code}")));
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn cfg(endpoint: Option<&str>, protocol: Option<OtlpProtocol>) -> OtelConfig {
        OtelConfig {
            endpoint: endpoint.map(str::to_string),
            protocol,
            ..OtelConfig::default()
        }
    }

    #[test]
    fn resolve_table() {
        use OtlpProtocol::*;
        type Case = (
            Option<&'static str>,
            Option<OtlpProtocol>,
            &'static [(&'static str, &'static str)],
            Option<(OtlpProtocol, &'static str, &'static str)>,
        );
        let cases: &[Case] = &[
            // Nothing anywhere: disabled.
            (None, None, &[], None),
            (Some("  "), None, &[(ENV_ENDPOINT, "")], None),
            // Generic env: base URL, /v1/traces appended; default protocol http/protobuf.
            (
                None,
                None,
                &[(ENV_ENDPOINT, "http://c:4318")],
                Some((HttpProtobuf, "http://c:4318/v1/traces", ENV_ENDPOINT)),
            ),
            (
                None,
                None,
                &[(ENV_ENDPOINT, "http://c:4318/")],
                Some((HttpProtobuf, "http://c:4318/v1/traces", ENV_ENDPOINT)),
            ),
            (
                None,
                None,
                &[(ENV_ENDPOINT, "http://c:4318/prefix")],
                Some((HttpProtobuf, "http://c:4318/prefix/v1/traces", ENV_ENDPOINT)),
            ),
            (
                None,
                None,
                &[(ENV_ENDPOINT, "http://c:4318/p/?x=1")],
                Some((HttpProtobuf, "http://c:4318/p/v1/traces?x=1", ENV_ENDPOINT)),
            ),
            // Signal env: verbatim, and preferred over generic.
            (
                None,
                None,
                &[
                    (ENV_ENDPOINT, "http://generic:4318"),
                    (ENV_TRACES_ENDPOINT, "http://t:4318"),
                ],
                Some((HttpProtobuf, "http://t:4318", ENV_TRACES_ENDPOINT)),
            ),
            (
                None,
                None,
                &[(ENV_TRACES_ENDPOINT, "http://t:4318/custom/traces")],
                Some((
                    HttpProtobuf,
                    "http://t:4318/custom/traces",
                    ENV_TRACES_ENDPOINT,
                )),
            ),
            // Config beats env; without a path it is a base URL, with one it is verbatim.
            (
                Some("http://cfg:4318"),
                None,
                &[(ENV_TRACES_ENDPOINT, "http://t:4318")],
                Some((HttpProtobuf, "http://cfg:4318/v1/traces", "config")),
            ),
            (
                Some("http://cfg:4318/"),
                None,
                &[],
                Some((HttpProtobuf, "http://cfg:4318/v1/traces", "config")),
            ),
            (
                Some("http://cfg:4318/otlp/v1/traces"),
                None,
                &[],
                Some((HttpProtobuf, "http://cfg:4318/otlp/v1/traces", "config")),
            ),
            // Protocol: config > traces env > generic env.
            (
                None,
                None,
                &[(ENV_ENDPOINT, "http://c:4317"), (ENV_PROTOCOL, "grpc")],
                Some((Grpc, "http://c:4317", ENV_ENDPOINT)),
            ),
            (
                None,
                None,
                &[
                    (ENV_ENDPOINT, "http://c:4317"),
                    (ENV_PROTOCOL, "http/protobuf"),
                    (ENV_TRACES_PROTOCOL, "grpc"),
                ],
                Some((Grpc, "http://c:4317", ENV_ENDPOINT)),
            ),
            (
                Some("http://cfg:4318"),
                Some(HttpProtobuf),
                &[(ENV_TRACES_PROTOCOL, "grpc"), (ENV_PROTOCOL, "bogus")],
                Some((HttpProtobuf, "http://cfg:4318/v1/traces", "config")),
            ),
            // gRPC: verbatim whatever the source.
            (
                Some("http://cfg:4317"),
                Some(Grpc),
                &[],
                Some((Grpc, "http://cfg:4317", "config")),
            ),
        ];
        for (i, (endpoint, protocol, env, want)) in cases.iter().enumerate() {
            let got = resolve(&cfg(*endpoint, *protocol), env_of(env))
                .unwrap_or_else(|e| panic!("case {i}: {e}"));
            let want = want.map(|(protocol, url, source)| ResolvedExporter {
                protocol,
                url: url.to_string(),
                source,
            });
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn resolve_errors() {
        let e = resolve(
            &cfg(None, None),
            env_of(&[(ENV_ENDPOINT, "http://c"), (ENV_PROTOCOL, "http/json")]),
        )
        .expect_err("bad protocol");
        assert!(
            matches!(&e, OtelError::InvalidProtocol { source_name, value } if *source_name == ENV_PROTOCOL && value == "http/json"),
            "{e}"
        );
        // A bad signal-specific protocol is an error even if the generic one is fine.
        let e = resolve(
            &cfg(None, None),
            env_of(&[
                (ENV_ENDPOINT, "http://c"),
                (ENV_TRACES_PROTOCOL, "GRPC!"),
                (ENV_PROTOCOL, "grpc"),
            ]),
        )
        .expect_err("bad protocol");
        assert!(
            matches!(e, OtelError::InvalidProtocol { source_name, .. } if source_name == ENV_TRACES_PROTOCOL)
        );
        for bad in [
            "https://c:4318",
            "c:4318",
            "ftp://c",
            "http://",
            "http:///x",
        ] {
            let e = resolve(&cfg(Some(bad), None), env_of(&[])).expect_err(bad);
            assert!(matches!(e, OtelError::InvalidEndpoint { .. }), "{bad}: {e}");
        }
        let mut c = cfg(Some("http://c"), None);
        c.sample_ratio = 1.5;
        assert!(matches!(
            resolve(&c, env_of(&[])),
            Err(OtelError::InvalidSampleRatio(_))
        ));
        c.sample_ratio = f64::NAN;
        assert!(matches!(
            resolve(&c, env_of(&[])),
            Err(OtelError::InvalidSampleRatio(_))
        ));
        c.sample_ratio = 0.5;
        c.timeout = Duration::ZERO;
        assert!(matches!(
            resolve(&c, env_of(&[])),
            Err(OtelError::InvalidTimeout)
        ));
        c.timeout = Duration::from_secs(1);
        c.headers = vec![("bad header".into(), "v".into())];
        assert!(matches!(
            resolve(&c, env_of(&[])),
            Err(OtelError::InvalidHeader { .. })
        ));
        c.headers = vec![("x-ok".into(), "bad\nvalue".into())];
        assert!(matches!(
            resolve(&c, env_of(&[])),
            Err(OtelError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn extract_and_trace_ids() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = Telemetry::extract(Some(tp), Some("vendor=x"));
        assert_eq!(
            Telemetry::trace_id_for(&cx),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            Telemetry::traceparent_for_upstream(&cx).as_deref(),
            Some(tp)
        );
        assert_eq!(
            Telemetry::tracestate_for_upstream(&cx).as_deref(),
            Some("vendor=x")
        );

        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ] {
            let cx = Telemetry::extract(bad, None);
            let id = Telemetry::trace_id_for(&cx);
            assert_eq!(id.len(), 32);
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
            assert_ne!(id, "00000000000000000000000000000000");
            // Stable for the request.
            assert_eq!(Telemetry::trace_id_for(&cx), id);
            let up = Telemetry::traceparent_for_upstream(&cx).expect("root traceparent");
            assert!(up.starts_with(&format!("00-{id}-")), "{up}");
            assert!(up.ends_with("-00"), "{up}");
        }
        // A tracestate without a traceparent is no remote context: a root trace, and no
        // tracestate goes upstream.
        let cx = Telemetry::extract(None, Some("vendor=x"));
        assert!(!cx.span().span_context().is_valid());
        assert_eq!(Telemetry::trace_id_for(&cx).len(), 32);
        assert_eq!(Telemetry::tracestate_for_upstream(&cx), None);
        assert_eq!(Telemetry::traceparent_for_upstream(&Context::new()), None);
        assert_eq!(Telemetry::trace_id_for(&Context::new()).len(), 32);
    }

    #[test]
    fn handles_are_send_sync() {
        fn assert_traits<T: Send + Sync + 'static>() {}
        assert_traits::<Telemetry>();
        assert_traits::<RequestSpan>();
        assert_traits::<Context>();
    }

    #[test]
    fn no_endpoint_means_no_handle() {
        let t = Telemetry::start_with_env(OtelConfig::default(), |_| None).expect("start");
        assert!(t.is_none());
        let bad = OtelConfig {
            endpoint: Some("https://c:4318".into()),
            ..OtelConfig::default()
        };
        assert!(Telemetry::start_with_env(bad, |_| None).is_err());
    }

    /// Collects spans; optionally fails or stalls every export.
    #[derive(Debug, Clone, Default)]
    struct FakeExporter {
        spans: Arc<Mutex<Vec<SpanData>>>,
        fail: bool,
        stall: Option<Duration>,
    }

    impl SpanExporter for FakeExporter {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if let Some(d) = self.stall {
                tokio::time::sleep(d).await;
            }
            if self.fail {
                return Err(OTelSdkError::InternalFailure("collector down".into()));
            }
            lock(&self.spans).extend(batch);
            Ok(())
        }
    }

    fn fake(sample_ratio: f64, exp: FakeExporter, max_queue: usize) -> Telemetry {
        let c = OtelConfig {
            endpoint: Some("http://unused".into()),
            sample_ratio,
            timeout: Duration::from_secs(2),
            ..OtelConfig::default()
        };
        let resolved = resolve(&c, |_| None).expect("resolve").expect("enabled");
        let rt = RuntimeThread::start().expect("runtime");
        Telemetry::from_exporter(&c, resolved, rt, exp, max_queue)
    }

    #[test]
    fn deny_spans_always_sampled_and_share_root_trace_id() {
        let exp = FakeExporter::default();
        let t = fake(0.0, exp.clone(), MAX_QUEUE_SPANS);
        let root = Telemetry::extract(None, None);
        assert!(t.start_request_span(&root, "GET", &[]).is_none());
        t.deny_span(
            &root,
            vec![KeyValue::new("modgate.rule", "x")],
            "blocked by rule x",
        );
        // Parent with sampled=0: the deny span is still exported, as its child.
        let unsampled = Telemetry::extract(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            None,
        );
        t.deny_span(&unsampled, vec![], "nope");
        t.flush().expect("flush");
        let spans = lock(&exp.spans).clone();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, DENY_SPAN_NAME);
        assert_eq!(
            format!("{:032x}", spans[0].span_context.trace_id()),
            Telemetry::trace_id_for(&root)
        );
        assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
        assert_eq!(spans[0].span_kind, SpanKind::Server);
        assert_eq!(spans[0].status, Status::error("blocked by rule x"));
        assert_eq!(
            format!("{:016x}", spans[1].parent_span_id),
            "00f067aa0ba902b7"
        );
        assert!(spans[1].span_context.is_sampled());
        assert_eq!(t.exported_spans(), 2);
        assert_eq!(t.dropped_spans(), 0);
        t.shutdown();
        t.shutdown(); // idempotent
    }

    #[test]
    fn request_spans_follow_ratio_and_parent() {
        let exp = FakeExporter::default();
        let t = fake(1.0, exp.clone(), MAX_QUEUE_SPANS);
        let root = Telemetry::extract(None, None);
        let mut span = t
            .start_request_span(
                &root,
                "GET /x",
                &[KeyValue::new("http.request.method", "GET")],
            )
            .expect("sampled at ratio 1");
        assert_eq!(span.trace_id(), Telemetry::trace_id_for(&root));
        let tp = span.traceparent();
        assert!(tp.starts_with(&format!("00-{}-", span.trace_id())) && tp.ends_with("-01"));
        span.set_attr(KeyValue::new("modgate.route", "default"));
        t.deny_span(&span.context(), vec![], "denied");
        span.end(503);
        // A parent that says "not sampled" is respected for request spans.
        let unsampled = Telemetry::extract(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
            None,
        );
        assert!(t.start_request_span(&unsampled, "GET", &[]).is_none());
        t.flush().expect("flush");
        let spans = lock(&exp.spans).clone();
        assert_eq!(spans.len(), 2);
        let deny = spans
            .iter()
            .find(|s| s.name == DENY_SPAN_NAME)
            .expect("deny");
        let req = spans.iter().find(|s| s.name == "GET /x").expect("request");
        assert_eq!(deny.parent_span_id, req.span_context.span_id());
        assert!(req
            .attributes
            .contains(&KeyValue::new("http.response.status_code", 503_i64)));
        assert!(req
            .attributes
            .contains(&KeyValue::new("modgate.route", "default")));
        assert_eq!(req.status, Status::error("HTTP 503"));
    }

    #[test]
    fn failed_exports_are_counted() {
        let exp = FakeExporter {
            fail: true,
            ..FakeExporter::default()
        };
        let t = fake(0.0, exp, MAX_QUEUE_SPANS);
        let cx = Telemetry::extract(None, None);
        for _ in 0..3 {
            t.deny_span(&cx, vec![], "x");
        }
        assert!(t.flush().is_err());
        assert_eq!(t.dropped_spans(), 3);
        assert_eq!(t.exported_spans(), 0);
    }

    #[test]
    fn full_queue_drops_and_counts_without_blocking() {
        let exp = FakeExporter {
            stall: Some(Duration::from_millis(300)),
            ..FakeExporter::default()
        };
        let t = fake(0.0, exp.clone(), 4);
        let cx = Telemetry::extract(None, None);
        let started = Instant::now();
        for _ in 0..100 {
            t.deny_span(&cx, vec![], "x");
        }
        assert!(started.elapsed() < Duration::from_millis(250));
        let _ = t.flush();
        t.shutdown();
        let exported = t.exported_spans();
        let dropped = t.dropped_spans();
        assert!(dropped >= 90, "dropped {dropped}");
        assert_eq!(exported + dropped, 100, "exported {exported}");
        assert_eq!(lock(&exp.spans).len() as u64, exported);
    }

    #[test]
    fn slow_exports_time_out_and_flush_is_bounded() {
        let exp = FakeExporter {
            stall: Some(Duration::from_secs(30)),
            ..FakeExporter::default()
        };
        let t = fake(0.0, exp, MAX_QUEUE_SPANS);
        let cx = Telemetry::extract(None, None);
        t.deny_span(&cx, vec![], "x");
        let started = Instant::now();
        let _ = t.flush();
        t.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(t.dropped_spans(), 1);
    }
    #[test]
    fn export_failures_are_said_once_then_rate_limited_and_recovery_is_noticed() {
        let c = Counters::default();
        let failed: OTelSdkResult = Err(OTelSdkError::InternalFailure("refused".into()));
        c.settle(3, &failed);
        let first = lock(&c.outage).logged.expect("the first failure is logged");
        c.settle(2, &failed);
        {
            let o = lock(&c.outage);
            assert_eq!(o.logged, Some(first), "logged again within the interval");
            assert_eq!(o.unlogged, 2);
        }
        assert_eq!(c.dropped.load(Ordering::Relaxed), 5);
        c.settle(4, &Ok(()));
        assert!(lock(&c.outage).logged.is_none(), "recovery not noticed");
        assert_eq!(c.exported.load(Ordering::Relaxed), 4);
    }
}
