//! Prometheus metrics of the gateway: requests by listener/route/kind/status, upstream attempts
//! by upstream and outcome, request latency, access decisions, authentication failures,
//! reloads and span export, `modgate_build_info`, and the process's CPU, memory, file
//! descriptors and threads (the prometheus crate's process collector, which reads `/proc` at
//! each scrape). Served at `/metrics` on
//! listeners that enable it. The registry is process-wide (one `OnceLock`), as Prometheus's is;
//! server start-up takes it once and each concern counts on a handle of its own families made
//! from it (`conn::ConnMetrics`, `identity::IdentityMetrics`, `record::RecordMetrics`,
//! `proxy::metrics::ProxyMetrics`, `reload::ReloadMetrics`, `Live`'s), handed to the concern by
//! whoever builds it (server start-up, `Live`, `Model::build`): this file defines, registers and
//! primes the families; the only event it counts itself is the git crate's mirror refresh
//! ([`git_refreshed`], a process-wide hook that takes a plain function: no owner to hold a
//! handle).
//!
//! This file sits on the lowest floor of the binary (docs/architecture.md, "Floors of the binary
//! crate") and imports nothing of it: the concerns count events on their handles with label
//! values their own types produce (`Outcome::label`, `CacheOutcome::as_str`, `Refusal::auth_failure`,
//! `Cut::label`, `Over::label`), and each concern hands over the list of every value its label
//! takes ([`Labels`], gathered by `server::metric_labels`); the model names its listeners,
//! routes and upstreams ([`Named`], from `Model::build`).
//!
//! A labelled series only exists once its label values are known, so [`prime`] creates, at 0,
//! every series whose labels the model already names (each listener, route and upstream, and
//! every fixed reason and outcome): a dashboard or an alert sees 0 from the first scrape rather
//! than no data until the first event. Label values are taken from the types that produce
//! them at request time, never from request contents, so cardinality stays bounded by the
//! configuration.

use std::sync::OnceLock;
use std::time::Duration;

use modgate_identity::Scope;
use modgate_ledger::Artifact;
use modgate_protocol::RequestKind;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    pub hot_hits: IntCounter,
    pub cache_write_failures: IntCounterVec,
    pub integrity_refusals: IntCounterVec,
    pub checks_throttled: IntCounterVec,
    pub rate_limited: IntCounterVec,
    /// The vulnerability database in force: its `modified` time and how many advisories.
    pub vulndb_modified: IntGauge,
    pub vulndb_advisories: IntGauge,
    /// How far the module index has been read (cooldown's clock), and its last error.
    pub index_read_to: IntGauge,
    pub index_failing: IntGauge,
    pub connections_cut: IntCounterVec,
    pub connections_open: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_last_success: Gauge,
    pub audit_lost: IntCounter,
    pub fetched_records: IntCounterVec,
    pub route_duration: HistogramVec,
    pub cache_objects: IntGaugeVec,
    pub cache_bytes: IntGaugeVec,
    pub cache_evictions: IntCounterVec,
    pub git_refreshes: IntCounterVec,
    pub git_refresh_duration: Histogram,
    /// The company's checksum database (`checksum_log:`).
    pub sumdb_tree_size: IntGauge,
    pub sumdb_appended: IntCounter,
    pub sumdb_batches: IntCounter,
    pub sumdb_batch_seconds: prometheus::GaugeVec,
    pub sumdb_lookups: IntCounterVec,
    pub verified_fetches: IntCounterVec,
}

impl Metrics {
    /// Every metric family, registered in a registry of their own. The process has one
    /// ([`metrics`]); a test may make its own to count into.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        build()
    }
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
    let rate_limited = IntCounterVec::new(
        Opts::new(
            "modgate_rate_limited_total",
            "Requests refused (429) by a per-identity rate limit, by reason (requests or bytes) \
             and by the limit that applied (default, anonymous, role:<name> or identity; never \
             an identity's name)",
        ),
        &["reason", "limit"],
    )?;
    let vulndb_modified = IntGauge::new(
        "modgate_vulndb_modified_timestamp_seconds",
        "The `modified` time (Unix seconds) of the vulnerability database in force \
         (versions.vulnerabilities); 0 when none is loaded",
    )?;
    let vulndb_advisories = IntGauge::new(
        "modgate_vulndb_advisories",
        "Advisories in the vulnerability database in force (withdrawn ones included)",
    )?;
    let index_read_to = IntGauge::new(
        "modgate_module_index_read_to_timestamp_seconds",
        "How far (Unix seconds) the Go module index has been read without gaps for \
         versions.cooldown; 0 before the first page",
    )?;
    let index_failing = IntGauge::new(
        "modgate_module_index_failing",
        "1 while the last read of the Go module index failed (cooldown then counts unlisted \
         versions as new)",
    )?;
    let connections_cut = IntCounterVec::new(
        Opts::new(
            "modgate_connections_cut_total",
            "Client connections closed by the gateway, by listener and reason: idle (nothing sent \
             within idle_timeout), headers (request headers not complete within header_timeout), \
             listener_limit or source_limit (max_connections, max_connections_per_source, \
             counted at accept), handshake (TLS handshake not done within handshake_timeout), \
             fd_limit (the process near its open-files limit)",
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
    let audit_lost = IntCounter::new(
        "modgate_audit_records_lost_total",
        "Audit records that could not be written (a full or failing audit disk); with \
         audit.fail_mode: open the requests were served anyway",
    )?;
    registry.register(Box::new(audit_lost.clone()))?;
    let fetched_records = IntCounterVec::new(
        Opts::new(
            "modgate_fetched_records_total",
            "Records of the fetched index (fetched:), by outcome: written; lost (the writer was \
             behind and its queue full: the request was served, its record dropped); failed \
             (the database refused the write); pruned (removed by retention or max_records)",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(fetched_records.clone()))?;
    for outcome in FETCHED_OUTCOMES {
        fetched_records.with_label_values(&[outcome]);
    }
    let route_duration = HistogramVec::new(
        HistogramOpts::new(
            "modgate_route_request_duration_seconds",
            "Time from request to the end of the response, by route and status class (2xx, \
             4xx, …; none: no answer was sent)",
        )
        .buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        &["route", "status_class"],
    )?;
    let cache_objects = IntGaugeVec::new(
        Opts::new(
            "modgate_cache_objects",
            "Objects held by each cache tier (memory, disk), at the scrape",
        ),
        &["tier"],
    )?;
    let cache_bytes = IntGaugeVec::new(
        Opts::new(
            "modgate_cache_bytes",
            "Bytes held by each cache tier (memory: bytes charged to its budget; disk: bodies \
             and meta files), at the scrape",
        ),
        &["tier"],
    )?;
    let cache_evictions = IntCounterVec::new(
        Opts::new(
            "modgate_cache_evictions_total",
            "Objects evicted to stay within each tier's budget (memory: max_memory_bytes, the \
             object stays on disk; disk: max_disk_bytes)",
        ),
        &["tier"],
    )?;
    let sumdb_tree_size = IntGauge::new(
        "modgate_sumdb_tree_size",
        "Records in the company checksum database's latest signed tree (checksum_log), as this \
         replica last saw it: at its start or its latest append (with cluster:, others append too)",
    )?;
    let sumdb_appended = IntCounter::new(
        "modgate_sumdb_records_appended_total",
        "Module versions appended to the company checksum database",
    )?;
    let sumdb_batches = IntCounter::new(
        "modgate_sumdb_batches_total",
        "Batches appended to the company checksum database: one signed tree head each",
    )?;
    let sumdb_batch_seconds = prometheus::GaugeVec::new(
        Opts::new(
            "modgate_sumdb_batch_seconds",
            "Time to append and sign one batch (transaction and signature), by quantile of the \
             latest 4,096 batches",
        ),
        &["quantile"],
    )?;
    let sumdb_lookups = IntCounterVec::new(
        Opts::new(
            "modgate_sumdb_lookups_total",
            "Lookups in the company checksum database, by result: logged (answered from the \
             log), appended (fetched, checked and appended first), refused, disagreement (a \
             public database stated other hashes: a security event), failed (the log could not \
             be read: its store is away)",
        ),
        &["result"],
    )?;
    let verified_fetches = IntCounterVec::new(
        Opts::new(
            "modgate_verified_fetches_total",
            "Upstream fetches of exact versions by the verifying origin, by result: verified \
             (checked against the ledger, then served), passed (another status, passed on), \
             refused (changed bytes, an encoding, not a module zip, the ledger unavailable), \
             failed (connection, timeout, a body cut short), unavailable (the cache's \
             filesystem could not hold the body and the spill budget was spent), \
             held_in_memory (the cache's filesystem could not hold the body: kept in memory)",
        ),
        &["result"],
    )?;
    let git_refreshes = IntCounterVec::new(
        Opts::new(
            "modgate_git_mirror_refreshes_total",
            "Git mirror refreshes that asked the host (ls-remote, and a fetch when refs \
             changed), by result: ok or error",
        ),
        &["result"],
    )?;
    let git_refresh_duration = Histogram::with_opts(
        HistogramOpts::new(
            "modgate_git_mirror_refresh_duration_seconds",
            "Time a Git mirror refresh that asked the host took",
        )
        .buckets(vec![
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]),
    )?;
    registry.register(Box::new(route_duration.clone()))?;
    registry.register(Box::new(cache_objects.clone()))?;
    registry.register(Box::new(cache_bytes.clone()))?;
    registry.register(Box::new(cache_evictions.clone()))?;
    registry.register(Box::new(git_refreshes.clone()))?;
    registry.register(Box::new(git_refresh_duration.clone()))?;
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
    let hot_hits = IntCounter::new(
        "modgate_cache_hot_hits_total",
        "Cache hits answered from memory without Pingora's cache phase (also counted as hits)",
    )?;
    let cache_write_failures = IntCounterVec::new(
        Opts::new(
            "modgate_cache_write_failures_total",
            "Answers the cache could not store, by reason: no_space (its filesystem is full: \
             refused before the first byte, the answer then comes from the upstream uncached) or \
             io (another error of its filesystem)",
        ),
        &["reason"],
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
    registry.register(Box::new(hot_hits.clone()))?;
    registry.register(Box::new(cache_write_failures.clone()))?;
    registry.register(Box::new(integrity_refusals.clone()))?;
    registry.register(Box::new(decisions.clone()))?;
    registry.register(Box::new(auth_failures.clone()))?;
    registry.register(Box::new(checks_throttled.clone()))?;
    registry.register(Box::new(rate_limited.clone()))?;
    registry.register(Box::new(vulndb_modified.clone()))?;
    registry.register(Box::new(vulndb_advisories.clone()))?;
    registry.register(Box::new(index_read_to.clone()))?;
    registry.register(Box::new(sumdb_tree_size.clone()))?;
    registry.register(Box::new(sumdb_appended.clone()))?;
    registry.register(Box::new(sumdb_batches.clone()))?;
    registry.register(Box::new(sumdb_batch_seconds.clone()))?;
    registry.register(Box::new(sumdb_lookups.clone()))?;
    registry.register(Box::new(verified_fetches.clone()))?;
    registry.register(Box::new(index_failing.clone()))?;
    registry.register(Box::new(reloads.clone()))?;
    registry.register(Box::new(spans_dropped.clone()))?;
    registry.register(Box::new(spans_exported.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(upstream_attempts.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    let build_info = IntGaugeVec::new(
        Opts::new(
            "modgate_build_info",
            "Always 1; the version of the running modgate binary is in the labels",
        ),
        &["version"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    registry.register(Box::new(build_info))?;
    // The conventional `process_*` metrics (CPU, memory, descriptors, threads, start time),
    // read from `/proc` at each scrape by the prometheus crate's own collector.
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(Metrics {
        registry,
        requests,
        upstream_attempts,
        duration,
        decisions,
        auth_failures,
        checks_throttled,
        rate_limited,
        vulndb_modified,
        vulndb_advisories,
        index_read_to,
        index_failing,
        connections_cut,
        connections_open,
        config_reloads,
        config_generation,
        config_last_success,
        audit_lost,
        fetched_records,
        route_duration,
        cache_objects,
        cache_bytes,
        cache_evictions,
        git_refreshes,
        git_refresh_duration,
        sumdb_tree_size,
        sumdb_appended,
        sumdb_batches,
        sumdb_batch_seconds,
        sumdb_lookups,
        verified_fetches,
        reloads,
        spans_dropped,
        spans_exported,
        cert_not_after,
        cache_lookups,
        stale_served,
        hot_hits,
        cache_write_failures,
        integrity_refusals,
    })
}

/// The process-wide metrics; `None` only if registration itself failed (logged once). Taken
/// once by server start-up, which makes each concern's handle from it; read here besides only
/// to render the exposition ([`render`]) and by the git refresh observer ([`git_refreshed`]).
pub fn metrics() -> Option<&'static Metrics> {
    static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| match Metrics::new() {
            Ok(m) => Some(m),
            Err(e) => {
                log::error!("metrics disabled: {e}");
                None
            }
        })
        .as_ref()
}

/// The outcomes of `modgate_fetched_records_total`.
const FETCHED_OUTCOMES: [&str; 4] = ["written", "lost", "failed", "pruned"];

impl Metrics {
    /// Counts records of the fetched index (the index writer's observer, called from its
    /// thread); an outcome it does not name is not counted.
    pub fn fetched_records(&self, outcome: &'static str, n: u64) {
        if FETCHED_OUTCOMES.contains(&outcome) {
            self.fetched_records.with_label_values(&[outcome]).inc_by(n);
        }
    }
}

/// Brings a counter up to a total kept elsewhere (an atomic owned by another crate).
pub fn sync_counter(c: &IntCounter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// The text exposition of every metric: the whole process registry (no one concern's), so read
/// from the process-wide one here rather than from a handle.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(m) = metrics() {
        if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
            log::error!("encoding metrics: {e}");
        }
    }
    out
}

/// Every value of a label that a concern produces, handed over by the concern that produces it:
/// each exports its own list (`Cut::LABELS`, `Over::LABELS`, `Outcome::labels`,
/// `Refusal::auth_failure_labels`, `CacheOutcome::labels`), so this file, on the lowest floor,
/// names none of their types.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    /// The `reason` labels of `modgate_connections_cut_total`.
    pub cut_reasons: Vec<&'static str>,
    /// The `outcome` labels of `modgate_upstream_attempts_total`.
    pub attempt_outcomes: Vec<&'static str>,
    /// The `reason` labels of `modgate_auth_failures_total`.
    pub auth_failures: Vec<&'static str>,
    /// The `outcome` labels of `modgate_cache_requests_total`.
    pub cache_outcomes: Vec<&'static str>,
}

/// What the model being built names, for [`prime`] (gathered by `Model::build`).
#[derive(Debug, Default)]
pub struct Named<'a> {
    /// Each listener, with the expiry (Unix time) of the certificate it presents if TLS.
    pub listeners: Vec<(&'a str, Option<i64>)>,
    /// Credential files (users or tokens) are configured.
    pub credential_files: bool,
    /// Each upstream and checksum database.
    pub upstreams: Vec<&'a str>,
    /// Each route with its fallback access decision: the effect and the rule.
    pub routes: Vec<(&'a str, &'static str, &'static str)>,
    /// A cache is configured.
    pub cache: bool,
    /// The `limit` labels of `modgate_rate_limited_total` the rate limits configured name.
    pub rate_limits: Vec<String>,
    /// The vulnerability database in force: its `modified` time (Unix seconds) and how many
    /// advisories it holds.
    pub vulndb: Option<(i64, usize)>,
}

/// Creates, at 0, every series whose labels `named` (the model) and `labels` already name, so
/// they exist from the first scrape: requests of each listener (the series its health checks
/// and scrapes count in), connections open and cut by each listener and reason, upstream
/// attempts by each upstream and checksum database and each outcome, each route's fallback
/// access decision, latency by request kind, every authentication-failure and throttling
/// reason, every cache outcome, integrity refusals by artifact, configuration reloads by
/// result, TLS and credential file reloads, and the certificate expiry of each TLS listener
/// (its real value). Series already there keep their values. Runs for every model built
/// (start-up and each reload).
pub fn prime(m: &Metrics, named: &Named, labels: &Labels) {
    for (name, not_after) in &named.listeners {
        m.requests.with_label_values(&[name, "-", "other", "200"]);
        m.connections_open.with_label_values(&[name]);
        for reason in &labels.cut_reasons {
            m.connections_cut.with_label_values(&[name, reason]);
        }
        if let Some(not_after) = not_after {
            let what = format!("tls:{name}");
            for result in ["ok", "error"] {
                m.reloads.with_label_values(&[&what, result]);
            }
            m.cert_not_after.with_label_values(&[name]).set(*not_after);
        }
    }
    if named.credential_files {
        m.reloads.with_label_values(&["auth", "ok"]);
    }
    for upstream in &named.upstreams {
        for outcome in &labels.attempt_outcomes {
            m.upstream_attempts.with_label_values(&[upstream, outcome]);
        }
    }
    for (route, effect, rule) in &named.routes {
        m.decisions.with_label_values(&[route, effect, rule]);
    }
    for kind in RequestKind::ALL.iter().map(|k| k.as_str()).chain(["other"]) {
        m.duration.with_label_values(&[kind]);
    }
    for route in named.routes.iter().map(|r| r.0).chain(["-"]) {
        for class in ["2xx", "3xx", "4xx", "5xx"] {
            m.route_duration.with_label_values(&[route, class]);
        }
    }
    if named.cache {
        for tier in ["memory", "disk"] {
            m.cache_objects.with_label_values(&[tier]);
            m.cache_bytes.with_label_values(&[tier]);
            m.cache_evictions.with_label_values(&[tier]);
        }
    }
    modgate_git::observe_refreshes(git_refreshed);
    for result in ["ok", "error"] {
        m.git_refreshes.with_label_values(&[result]);
    }
    for reason in &labels.auth_failures {
        m.auth_failures.with_label_values(&[reason]);
    }
    let (modified, advisories) = named.vulndb.unwrap_or((0, 0));
    m.vulndb_modified.set(modified);
    m.vulndb_advisories
        .set(i64::try_from(advisories).unwrap_or(i64::MAX));
    for reason in ["requests", "bytes"] {
        for name in &named.rate_limits {
            m.rate_limited.with_label_values(&[reason, name]);
        }
    }
    for reason in ["throttled", "busy"] {
        for scope in [Scope::Source, Scope::User] {
            m.checks_throttled
                .with_label_values(&[reason, scope.as_str()]);
        }
    }
    for outcome in &labels.cache_outcomes {
        m.cache_lookups.with_label_values(&[outcome]);
    }
    for reason in CACHE_WRITE_FAILURES {
        m.cache_write_failures.with_label_values(&[reason]);
    }
    for artifact in Artifact::ALL {
        m.integrity_refusals.with_label_values(&[artifact.as_str()]);
    }
    for result in ["applied", "refused"] {
        m.config_reloads.with_label_values(&[result]);
    }
}

/// The `reason` labels of `modgate_cache_write_failures_total`.
pub const CACHE_WRITE_FAILURES: [&str; 2] = ["no_space", "io"];

// ---------------------------------------------------------------------------------------------
// What the families are counted through: each concern holds a handle made from [`Metrics`]
// (`conn::ConnMetrics`, `identity::IdentityMetrics`, `record::RecordMetrics`, `proxy::metrics::
// ProxyMetrics`, the reloader's and `Live`'s), handed to it by whoever builds it. The one event
// left here has no owner to hold a handle: the git crate's refresh observer, a process-wide hook
// (`modgate_git::observe_refreshes`) that takes a plain function.

/// A Git mirror refresh that asked the host ended (the git crate's refresh observer).
pub fn git_refreshed(took: Duration, ok: bool) {
    if let Some(m) = metrics() {
        m.git_refreshes
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        m.git_refresh_duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_and_build_info_are_rendered() {
        let text = String::from_utf8(render()).unwrap_or_default();
        let version = format!(
            "modgate_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        if std::path::Path::new("/proc/self/stat").exists() {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_virtual_memory_bytes ",
                "process_threads ",
                "process_open_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(
                    text.lines().any(|l| l.starts_with(name)),
                    "{name} missing:\n{text}"
                );
            }
        }
    }
}
