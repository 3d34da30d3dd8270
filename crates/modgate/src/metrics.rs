//! Prometheus metrics of the gateway: requests by listener/route/kind/status, upstream attempts
//! by upstream and outcome, request latency, access decisions, authentication failures,
//! reloads and span export. Served at `/metrics` on listeners that enable
//! it. The only global state of the binary.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// All metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub upstream_attempts: IntCounterVec,
    pub duration: HistogramVec,
    pub decisions: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub reloads: IntCounterVec,
    pub spans_dropped: IntCounter,
    pub spans_exported: IntCounter,
    pub cert_not_after: IntGaugeVec,
    pub cache_lookups: IntCounterVec,
    pub stale_served: IntCounter,
    pub integrity_refusals: IntCounterVec,
    pub checks_throttled: IntCounterVec,
    pub connections_cut: IntCounterVec,
    pub connections_open: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_last_success: Gauge,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "modgate_requests_total",
            "Requests answered, by listener, route, request kind and status",
        ),
        &["listener", "route", "kind", "status"],
    )?;
    let upstream_attempts = IntCounterVec::new(
        Opts::new(
            "modgate_upstream_attempts_total",
            "Requests sent to upstreams, by upstream and outcome",
        ),
        &["upstream", "outcome"],
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "modgate_request_duration_seconds",
            "Time from request to the end of the response, by request kind",
        )
        .buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        &["kind"],
    )?;
    let decisions = IntCounterVec::new(
        Opts::new(
            "modgate_access_decisions_total",
            "Access decisions on module requests, by route, decision and decisive rule",
        ),
        &["route", "decision", "rule"],
    )?;
    let auth_failures = IntCounterVec::new(
        Opts::new(
            "modgate_auth_failures_total",
            "Requests refused because their credentials were not accepted, by reason",
        ),
        &["reason"],
    )?;
    let checks_throttled = IntCounterVec::new(
        Opts::new(
            "modgate_credential_checks_throttled_total",
            "Password checks refused before hashing: too many failures (throttled, 429) or too \
             many running (busy, 503), by the key that was limited (source address or user)",
        ),
        &["reason", "scope"],
    )?;
    let connections_cut = IntCounterVec::new(
        Opts::new(
            "modgate_connections_cut_total",
            "Client connections closed by the gateway, by listener and reason: idle (nothing sent \
             within idle_timeout), headers (request headers not complete within header_timeout), \
             listener_limit or source_limit (max_connections, max_connections_per_source)",
        ),
        &["listener", "reason"],
    )?;
    let connections_open = IntGaugeVec::new(
        Opts::new(
            "modgate_connections_open",
            "Client connections open now (after their TLS handshake), by listener",
        ),
        &["listener"],
    )?;
    let config_reloads = IntCounterVec::new(
        Opts::new(
            "modgate_config_reloads_total",
            "Reloads of gateway.yaml (SIGHUP or modgate reload), by result: applied or refused",
        ),
        &["result"],
    )?;
    let config_generation = IntGauge::new(
        "modgate_config_generation",
        "Generation of the configuration in force: 1 at start, one more per applied reload",
    )?;
    let config_last_success = Gauge::new(
        "modgate_config_last_reload_success_timestamp_seconds",
        "When the configuration in force was applied (Unix time)",
    )?;
    registry.register(Box::new(config_reloads.clone()))?;
    registry.register(Box::new(config_generation.clone()))?;
    registry.register(Box::new(config_last_success.clone()))?;
    registry.register(Box::new(connections_cut.clone()))?;
    registry.register(Box::new(connections_open.clone()))?;
    let reloads = IntCounterVec::new(
        Opts::new(
            "modgate_reloads_total",
            "Reloads of TLS material and credential files, by what and result",
        ),
        &["what", "result"],
    )?;
    let spans_dropped = IntCounter::new(
        "modgate_otel_spans_dropped_total",
        "Spans that could not be exported (collector unreachable or queue full)",
    )?;
    let spans_exported = IntCounter::new(
        "modgate_otel_spans_exported_total",
        "Spans accepted by the OTLP collector",
    )?;
    let cert_not_after = IntGaugeVec::new(
        Opts::new(
            "modgate_tls_cert_not_after_seconds",
            "Expiry (Unix time) of the server certificate each TLS listener presents",
        ),
        &["listener"],
    )?;
    registry.register(Box::new(cert_not_after.clone()))?;
    let cache_lookups = IntCounterVec::new(
        Opts::new(
            "modgate_cache_requests_total",
            "Cacheable requests by cache outcome (hit, miss, expired, stale-if-error, ...)",
        ),
        &["outcome"],
    )?;
    let stale_served = IntCounter::new(
        "modgate_cache_stale_served_total",
        "Stale answers served because the upstream failed (stale-if-error)",
    )?;
    let integrity_refusals = IntCounterVec::new(
        Opts::new(
            "modgate_integrity_refusals_total",
            "Upstream answers refused because an exact version's bytes differ from the first-seen ones",
        ),
        &["artifact"],
    )?;
    registry.register(Box::new(cache_lookups.clone()))?;
    registry.register(Box::new(stale_served.clone()))?;
    registry.register(Box::new(integrity_refusals.clone()))?;
    registry.register(Box::new(decisions.clone()))?;
    registry.register(Box::new(auth_failures.clone()))?;
    registry.register(Box::new(checks_throttled.clone()))?;
    registry.register(Box::new(reloads.clone()))?;
    registry.register(Box::new(spans_dropped.clone()))?;
    registry.register(Box::new(spans_exported.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(upstream_attempts.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        upstream_attempts,
        duration,
        decisions,
        auth_failures,
        checks_throttled,
        connections_cut,
        connections_open,
        config_reloads,
        config_generation,
        config_last_success,
        reloads,
        spans_dropped,
        spans_exported,
        cert_not_after,
        cache_lookups,
        stale_served,
        integrity_refusals,
    })
}

/// The process-wide metrics; `None` only if registration itself failed (logged once).
pub fn metrics() -> Option<&'static Metrics> {
    static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| match build() {
            Ok(m) => Some(m),
            Err(e) => {
                log::error!("metrics disabled: {e}");
                None
            }
        })
        .as_ref()
}

/// Brings a counter up to a total kept elsewhere (an atomic owned by another crate).
pub fn sync_counter(c: &IntCounter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// The text exposition of every metric.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(m) = metrics() {
        if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
            log::error!("encoding metrics: {e}");
        }
    }
    out
}
