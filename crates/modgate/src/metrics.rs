//! Prometheus metrics of the gateway: requests by listener/route/kind/status, upstream attempts
//! by upstream and outcome, request latency, access decisions, authentication failures,
//! reloads and span export, `modgate_build_info`, and the process's CPU, memory, file
//! descriptors and threads (read from `/proc` at each scrape). Served at `/metrics` on
//! listeners that enable it. The only global state of the binary.
//!
//! A labelled series only exists once its label values are known, so [`prime`] creates, at 0,
//! every series whose labels the model already names (each listener, route and upstream, and
//! every fixed reason and outcome): a dashboard or an alert sees 0 from the first scrape rather
//! than no data until the first event. Label values are taken from the types that produce
//! them at request time, never from request contents, so cardinality stays bounded by the
//! configuration.

use std::sync::OnceLock;
use std::time::Duration;

use modgate_identity::{AuthFailure, Scope};
use modgate_ledger::Artifact;
use modgate_policy::{DEFAULT_RULE, PRIVATE_DEFAULT_RULE};
use modgate_protocol::RequestKind;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::conn::caps::Over;
use crate::conn::deadline::Cut;
use crate::identity::IdentityError;
use crate::model::Model;
use crate::proxy::admit::Refusal;
use crate::proxy::chain::Outcome;
use crate::proxy::report::CacheOutcome;

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
    if cfg!(target_os = "linux") {
        registry.register(Box::new(ProcessCollector::new()?))?;
    }
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
        audit_lost,
        fetched_records,
        route_duration,
        cache_objects,
        cache_bytes,
        cache_evictions,
        git_refreshes,
        git_refresh_duration,
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

/// Counts audit records the audit writer could not write (called from its thread).
pub fn audit_records_lost(n: u64) {
    if let Some(m) = metrics() {
        m.audit_lost.inc_by(n);
    }
}

/// The outcomes of `modgate_fetched_records_total`.
const FETCHED_OUTCOMES: [&str; 4] = ["written", "lost", "failed", "pruned"];

/// Counts records of the fetched index (called from its writer thread and the request path).
pub fn fetched_records(outcome: &'static str, n: u64) {
    if let Some(m) = metrics().filter(|_| FETCHED_OUTCOMES.contains(&outcome)) {
        m.fetched_records.with_label_values(&[outcome]).inc_by(n);
    }
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

/// Creates, at 0, every series whose labels `model` already names, so they exist from the first
/// scrape: requests of each listener (the series its health checks and scrapes count in),
/// connections open and cut by each listener and reason, upstream attempts by each upstream
/// and checksum database and each outcome, each route's fallback access decision, latency by
/// request kind, every authentication-failure and throttling reason, every cache outcome,
/// integrity refusals by artifact, configuration reloads by result, TLS and credential file
/// reloads, and the certificate expiry of each TLS listener (its real value). Series already
/// there keep their values. Runs for every model built (start-up and each reload).
pub fn prime(model: &Model) {
    let Some(m) = metrics() else {
        return;
    };
    for (name, listener) in &model.listeners {
        m.requests.with_label_values(&[name, "-", "other", "200"]);
        m.connections_open.with_label_values(&[name]);
        for reason in cut_reasons() {
            m.connections_cut.with_label_values(&[name, reason]);
        }
        if let Some(tls) = &listener.tls {
            let what = format!("tls:{name}");
            for result in ["ok", "error"] {
                m.reloads.with_label_values(&[&what, result]);
            }
            m.cert_not_after
                .with_label_values(&[name])
                .set(tls.server_not_after_unix());
        }
    }
    let auth = &model.config.auth;
    if auth.users_file.is_some() || auth.tokens_file.is_some() {
        m.reloads.with_label_values(&["auth", "ok"]);
    }
    let upstreams = model
        .config
        .upstreams
        .keys()
        .chain(model.gateway.sumdbs.values().map(|u| &u.name));
    for upstream in upstreams {
        for outcome in outcome_labels() {
            m.upstream_attempts.with_label_values(&[upstream, outcome]);
        }
    }
    let access = &model.gateway.access;
    for route in model.config.routes.iter() {
        let (effect, rule) = if route.private {
            (access.default_private(), PRIVATE_DEFAULT_RULE)
        } else {
            (access.default_public(), DEFAULT_RULE)
        };
        m.decisions
            .with_label_values(&[&route.name, effect.as_str(), rule]);
    }
    for kind in RequestKind::ALL.iter().map(|k| k.as_str()).chain(["other"]) {
        m.duration.with_label_values(&[kind]);
    }
    let route_names = model.config.routes.iter().map(|r| r.name.as_str());
    for route in route_names.chain(["-"]) {
        for class in ["2xx", "3xx", "4xx", "5xx"] {
            m.route_duration.with_label_values(&[route, class]);
        }
    }
    if model.config.cache.is_some() {
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
    for reason in auth_failure_reasons() {
        m.auth_failures.with_label_values(&[reason]);
    }
    for reason in ["throttled", "busy"] {
        for scope in [Scope::Source, Scope::User] {
            m.checks_throttled
                .with_label_values(&[reason, scope.as_str()]);
        }
    }
    for outcome in cache_outcomes() {
        m.cache_lookups.with_label_values(&[outcome.as_str()]);
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

// The label lists below are made from the values that produce the labels at request time.
// Each comes with a `match` without a wildcard: a new variant fails to compile until it is
// listed here too.

/// The `reason` labels of `modgate_connections_cut_total`.
fn cut_reasons() -> [&'static str; 4] {
    let _every = |c: Cut, o: Over| match (c, o) {
        (Cut::Idle | Cut::Headers, Over::Listener | Over::Source) => (),
    };
    [
        Cut::Idle.label(),
        Cut::Headers.label(),
        Over::Listener.label(),
        Over::Source.label(),
    ]
}

/// The `outcome` labels of `modgate_upstream_attempts_total`.
fn outcome_labels() -> Vec<&'static str> {
    let _every = |o: &Outcome| match o {
        Outcome::Answered(_)
        | Outcome::NotFound(_)
        | Outcome::Status(_)
        | Outcome::Timeout(_)
        | Outcome::Failed(_) => (),
    };
    [
        Outcome::Answered(200),
        Outcome::NotFound(404),
        Outcome::Status(500),
        Outcome::Timeout(String::new()),
        Outcome::Failed(Default::default()),
    ]
    .iter()
    .map(Outcome::label)
    .collect()
}

/// The `reason` labels of `modgate_auth_failures_total`.
fn auth_failure_reasons() -> Vec<&'static str> {
    let _every = |e: &IdentityError, f: AuthFailure| match (e, f) {
        (
            IdentityError::BadCredentials(_)
            | IdentityError::Malformed(_)
            | IdentityError::CertificateRefused { .. }
            | IdentityError::CertificateRequired
            | IdentityError::Throttled { .. }
            | IdentityError::Busy,
            AuthFailure::UnknownUser
            | AuthFailure::BadPassword
            | AuthFailure::UnknownToken
            | AuthFailure::NotConfigured,
        ) => (),
    };
    let errors = [
        IdentityError::BadCredentials(AuthFailure::UnknownUser),
        IdentityError::BadCredentials(AuthFailure::BadPassword),
        IdentityError::BadCredentials(AuthFailure::UnknownToken),
        IdentityError::BadCredentials(AuthFailure::NotConfigured),
        IdentityError::Malformed(String::new()),
        IdentityError::CertificateRefused {
            subject: String::new(),
            reason: "",
        },
        IdentityError::CertificateRequired,
        IdentityError::Throttled {
            scope: Scope::Source,
            retry_after: Duration::ZERO,
        },
        IdentityError::Busy,
    ];
    errors
        .into_iter()
        .map(Refusal::Identity)
        .chain([Refusal::IdentityRequired])
        .filter_map(|r| r.auth_failure())
        .collect()
}

/// Every value of the `outcome` label of `modgate_cache_requests_total`.
fn cache_outcomes() -> [CacheOutcome; 14] {
    let _every = |o: CacheOutcome| match o {
        CacheOutcome::Off
        | CacheOutcome::Uninitialized
        | CacheOutcome::Bypass
        | CacheOutcome::Key
        | CacheOutcome::Hit
        | CacheOutcome::Miss
        | CacheOutcome::Stale
        | CacheOutcome::StaleUpdating
        | CacheOutcome::Expired
        | CacheOutcome::Revalidated
        | CacheOutcome::RevalidatedNoCache
        | CacheOutcome::StaleIfError
        | CacheOutcome::Refused
        | CacheOutcome::NotStored => (),
    };
    [
        CacheOutcome::Off,
        CacheOutcome::Uninitialized,
        CacheOutcome::Bypass,
        CacheOutcome::Key,
        CacheOutcome::Hit,
        CacheOutcome::Miss,
        CacheOutcome::Stale,
        CacheOutcome::StaleUpdating,
        CacheOutcome::Expired,
        CacheOutcome::Revalidated,
        CacheOutcome::RevalidatedNoCache,
        CacheOutcome::StaleIfError,
        CacheOutcome::Refused,
        CacheOutcome::NotStored,
    ]
}

/// What `/proc/self/stat` says about the process (the fields the process metrics use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    /// User and system CPU time, in clock ticks.
    cpu_ticks: u64,
    threads: i64,
    /// Start time, in clock ticks after boot.
    start_ticks: u64,
    virtual_bytes: i64,
    resident_pages: i64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself
/// contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest[0] is field 3 (state); field n is rest[n - 3].
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let utime: u64 = field(14)?.parse().ok()?;
    let stime: u64 = field(15)?.parse().ok()?;
    Some(ProcStat {
        cpu_ticks: utime.saturating_add(stime),
        threads: field(20)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        virtual_bytes: field(23)?.parse().ok()?,
        resident_pages: field(24)?.parse().ok()?,
    })
}

/// Boot time (Unix seconds), the `btime` line of `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on open files, from `/proc/<pid>/limits`; `None` when unlimited.
fn parse_max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// A `sysconf` value, if the system knows it.
fn sysconf(name: libc::c_int) -> Option<i64> {
    // SAFETY: sysconf takes a plain integer and has no memory effects.
    let v = unsafe { libc::sysconf(name) };
    // `c_long` is `i64` only on 64-bit targets.
    #[allow(clippy::useless_conversion)]
    let v = i64::from(v);
    (v > 0).then_some(v)
}

/// The conventional `process_*` metrics of this process, read from `/proc` each time the
/// registry is gathered. The `prometheus` crate's `process` feature would give the same names
/// but needs `procfs`, which modgate does not otherwise depend on.
struct ProcessCollector {
    descs: Vec<Desc>,
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    threads: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    /// Whether the start time could be read (else that series is left out).
    start_known: bool,
    ticks_per_second: f64,
    page_size: i64,
}

impl ProcessCollector {
    fn new() -> Result<ProcessCollector, prometheus::Error> {
        let cpu = Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent, in seconds",
        )?;
        let resident = IntGauge::new("process_resident_memory_bytes", "Resident memory size")?;
        let virtual_memory = IntGauge::new("process_virtual_memory_bytes", "Virtual memory size")?;
        let threads = IntGauge::new("process_threads", "Number of OS threads in the process")?;
        let open_fds = IntGauge::new("process_open_fds", "Number of open file descriptors")?;
        let max_fds = IntGauge::new(
            "process_max_fds",
            "Maximum number of open file descriptors (soft limit)",
        )?;
        let start_time = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
        )?;
        let ticks_per_second = sysconf(libc::_SC_CLK_TCK).unwrap_or(100) as f64;
        let start = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t))
            .zip(
                std::fs::read_to_string("/proc/stat")
                    .ok()
                    .and_then(|t| parse_boot_time(&t)),
            )
            .map(|(stat, boot)| boot as f64 + stat.start_ticks as f64 / ticks_per_second);
        if let Some(s) = start {
            start_time.set(s);
        }
        let mut descs = Vec::new();
        for c in [
            &cpu as &dyn Collector,
            &resident,
            &virtual_memory,
            &threads,
            &open_fds,
            &max_fds,
            &start_time,
        ] {
            descs.extend(c.desc().into_iter().cloned());
        }
        Ok(ProcessCollector {
            descs,
            cpu,
            resident,
            virtual_memory,
            threads,
            open_fds,
            max_fds,
            start_time,
            start_known: start.is_some(),
            ticks_per_second,
            page_size: sysconf(libc::_SC_PAGESIZE).unwrap_or(4096),
        })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t));
        if let Some(s) = stat {
            let cpu = s.cpu_ticks as f64 / self.ticks_per_second;
            let now = self.cpu.get();
            if cpu > now {
                self.cpu.inc_by(cpu - now);
            }
            self.resident
                .set(s.resident_pages.saturating_mul(self.page_size));
            self.virtual_memory.set(s.virtual_bytes);
            self.threads.set(s.threads);
            out.extend(self.cpu.collect());
            out.extend(self.resident.collect());
            out.extend(self.virtual_memory.collect());
            out.extend(self.threads.collect());
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory being listed holds one descriptor itself.
            let open = dir.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(open).unwrap_or(i64::MAX));
            out.extend(self.open_fds.collect());
        }
        let max = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| parse_max_open_files(&t));
        if let Some(max) = max {
            self.max_fds.set(i64::try_from(max).unwrap_or(i64::MAX));
            out.extend(self.max_fds.collect());
        }
        if self.start_known {
            out.extend(self.start_time.collect());
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Events: what the request path records, one function per event, so callers say what happened
// and never touch label order (each is a no-op when metrics are disabled).

/// A request was answered (or given up on) with `status`.
pub fn request_finished(listener: &str, route: &str, kind: &str, status: u16, seconds: f64) {
    if let Some(m) = metrics() {
        m.requests
            .with_label_values(&[listener, route, kind, &status.to_string()])
            .inc();
        m.duration.with_label_values(&[kind]).observe(seconds);
        m.route_duration
            .with_label_values(&[route, status_class(status)])
            .observe(seconds);
    }
}

/// The `status_class` label: `2xx`, `4xx`, …; `none` when no answer was sent (status 0).
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// The cache tiers' sizes and evictions, at a scrape.
pub fn cache_tiers(stats: &modgate_cache::CacheStats) {
    if let Some(m) = metrics() {
        for (tier, objects, bytes, evicted) in [
            (
                "memory",
                stats.memory_objects,
                stats.memory_bytes,
                stats.memory_evicted,
            ),
            ("disk", stats.objects, stats.bytes, stats.evicted),
        ] {
            m.cache_objects
                .with_label_values(&[tier])
                .set(i64::try_from(objects).unwrap_or(i64::MAX));
            m.cache_bytes
                .with_label_values(&[tier])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            sync_counter(&m.cache_evictions.with_label_values(&[tier]), evicted);
        }
    }
}

/// A Git mirror refresh that asked the host ended (the git crate's refresh observer).
pub fn git_refreshed(took: Duration, ok: bool) {
    if let Some(m) = metrics() {
        m.git_refreshes
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        m.git_refresh_duration.observe(took.as_secs_f64());
    }
}

/// The access policy decided a module request on `route`.
pub fn access_decided(route: &str, effect: &str, rule: &str) {
    if let Some(m) = metrics() {
        m.decisions.with_label_values(&[route, effect, rule]).inc();
    }
}

/// A request could not be given an identity (`reason`: the auth-failure label).
pub fn auth_failed(reason: &str) {
    if let Some(m) = metrics() {
        m.auth_failures.with_label_values(&[reason]).inc();
    }
}

/// One attempt at an upstream ended with `outcome` (the attempt-outcome label).
pub fn upstream_attempted(upstream: &str, outcome: &str) {
    if let Some(m) = metrics() {
        m.upstream_attempts
            .with_label_values(&[upstream, outcome])
            .inc();
    }
}

/// The cache took part in a request this way (the cache-outcome label).
pub fn cache_looked_up(outcome: &str) {
    if let Some(m) = metrics() {
        m.cache_lookups.with_label_values(&[outcome]).inc();
    }
}

/// A stale answer was served because the upstream failed.
pub fn stale_served() {
    if let Some(m) = metrics() {
        m.stale_served.inc();
    }
}

/// The `reason` labels of `modgate_cache_write_failures_total`.
const CACHE_WRITE_FAILURES: [&str; 2] = ["no_space", "io"];

/// Brings `modgate_cache_write_failures_total` up to the cache's own counts (kept by the
/// storage, which sees every failure, including those after the answer was sent).
pub fn cache_write_failures(no_space: u64, io: u64) {
    // called for every request: the labelled series are only looked up when a count moved
    static SEEN: [std::sync::atomic::AtomicU64; 2] = [
        std::sync::atomic::AtomicU64::new(0),
        std::sync::atomic::AtomicU64::new(0),
    ];
    let moved = [no_space, io]
        .iter()
        .zip(&SEEN)
        .fold(false, |moved, (total, seen)| {
            seen.fetch_max(*total, std::sync::atomic::Ordering::Relaxed) < *total || moved
        });
    if !moved {
        return;
    }
    if let Some(m) = metrics() {
        for (reason, total) in CACHE_WRITE_FAILURES.iter().zip([no_space, io]) {
            sync_counter(&m.cache_write_failures.with_label_values(&[reason]), total);
        }
    }
}

/// A cache hit was answered from memory without Pingora's cache phase.
pub fn hot_hit() {
    if let Some(m) = metrics() {
        m.hot_hits.inc();
    }
}

/// Changed upstream bytes of `artifact` were refused.
pub fn integrity_refused(artifact: &str) {
    if let Some(m) = metrics() {
        m.integrity_refusals.with_label_values(&[artifact]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and parentheses, as a process may set it.
        let line = "4242 (mod gate) (x)) S 1 4242 4242 0 -1 4194560 2050 0 0 0 \
                    150 25 0 0 20 0 17 0 123456 987654321 2345 18446744073709551615 1 1 0 0 \
                    0 0 0 4096 0 0 0 0 17 3 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                cpu_ticks: 175,
                threads: 17,
                start_ticks: 123456,
                virtual_bytes: 987654321,
                resident_pages: 2345,
            })
        );
    }

    #[test]
    fn a_short_or_garbled_stat_is_none() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("1 (modgate) S 1 2 3"), None);
        assert_eq!(
            parse_stat(
                "1 (modgate) S 1 1 1 0 -1 0 0 0 0 0 x 0 0 0 20 0 1 0 1 1 1 0 1 1 0 0 0 0 0 0"
            ),
            None
        );
    }

    #[test]
    fn the_stat_of_this_process_parses() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        if text.is_empty() {
            return; // not Linux
        }
        let stat = parse_stat(&text).unwrap_or_else(|| panic!("unparsed: {text}"));
        assert!(stat.threads >= 1 && stat.resident_pages > 0, "{stat:?}");
    }

    #[test]
    fn boot_time_and_open_file_limit() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1 2\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);
    }

    #[test]
    fn every_label_list_is_complete_and_distinct() {
        let mut auth = auth_failure_reasons();
        assert!(auth.contains(&"missing") && auth.contains(&"bad-password"));
        let n = auth.len();
        auth.sort_unstable();
        auth.dedup();
        assert_eq!(auth.len(), n, "{auth:?}");
        assert_eq!(auth.len(), 10);
        let mut outcomes = outcome_labels();
        outcomes.sort_unstable();
        outcomes.dedup();
        assert_eq!(outcomes.len(), 5);
        let mut cache: Vec<&str> = cache_outcomes().iter().map(|o| o.as_str()).collect();
        cache.sort_unstable();
        cache.dedup();
        assert_eq!(cache.len(), 14);
        assert_eq!(
            cut_reasons(),
            ["idle", "headers", "listener_limit", "source_limit"]
        );
    }

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
