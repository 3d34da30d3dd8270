//! Prometheus metrics of the gateway: requests by listener/route/kind/status, upstream attempts
//! by upstream and outcome, and request latency. Served at `/metrics` on listeners that enable
//! it. The only global state of the binary.

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// All metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub upstream_attempts: IntCounterVec,
    pub duration: HistogramVec,
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
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(upstream_attempts.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        upstream_attempts,
        duration,
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
