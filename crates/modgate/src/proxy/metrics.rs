//! The request path's metric handle: what the proxy phases count (requests and their latency,
//! access decisions, rate-limit refusals, upstream attempts, cache outcomes, stale and hot
//! answers, cache write failures and tier sizes, integrity refusals), made once by server
//! start-up from the registry and shared by every listener's [`super::GatewayProxy`]. Callers
//! say what happened, with the label values their own types give, and never touch label order.
//!
//! Series whose label set is fixed and created at 0 anyway ([`crate::metrics::prime`]) are
//! resolved here once: the latency by request kind, the two cache write failure reasons, the
//! integrity refusals by artifact. Series named by the model (routes, upstreams) or by the
//! answer (status) are resolved the first time a thread counts them and kept in that thread's
//! map ([`super::resolved`]): a request's counters are not looked up by their label values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use modgate_ledger::Artifact;
use modgate_protocol::RequestKind;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::resolved;
use crate::metrics::{sync_counter, Metrics, CACHE_WRITE_FAILURES};

/// The proxy's series; counts nothing when metrics are disabled.
#[derive(Clone, Default)]
pub struct ProxyMetrics(Option<Arc<Series>>);

struct Series {
    /// Tells these families apart in the per-thread maps of resolved series.
    owner: u64,
    requests: IntCounterVec,
    /// `modgate_request_duration_seconds` by kind, in [`RequestKind::ALL`]'s order, then
    /// `other` (a request that is no GOPROXY request).
    duration: [Histogram; RequestKind::ALL.len() + 1],
    route_duration: HistogramVec,
    decisions: IntCounterVec,
    rate_limited: IntCounterVec,
    upstream_attempts: IntCounterVec,
    cache_lookups: IntCounterVec,
    stale_served: IntCounter,
    hot_hits: IntCounter,
    /// `no_space`, `io` ([`CACHE_WRITE_FAILURES`]), and the totals last seen of each.
    write_failures: [IntCounter; 2],
    write_failures_seen: [AtomicU64; 2],
    /// In [`Artifact::ALL`]'s order.
    integrity_refusals: [IntCounter; Artifact::ALL.len()],
    cache_objects: IntGaugeVec,
    cache_bytes: IntGaugeVec,
    cache_evictions: IntCounterVec,
    index_read_to: IntGauge,
    index_failing: IntGauge,
    sumdb_tree_size: IntGauge,
    sumdb_appended: IntCounter,
    sumdb_batches: IntCounter,
    sumdb_batch_seconds: prometheus::GaugeVec,
    sumdb_lookups: IntCounterVec,
    verified_fetches: IntCounterVec,
}

/// The tags of the counter families in the per-thread maps ([`resolved::count`]).
const CACHE_LOOKUPS: u8 = 1;
const UPSTREAM_ATTEMPTS: u8 = 2;

impl ProxyMetrics {
    pub fn new(metrics: Option<&Metrics>) -> ProxyMetrics {
        ProxyMetrics(metrics.map(|m| {
            let kinds = RequestKind::ALL.map(|k| k.as_str());
            Arc::new(Series {
                owner: resolved::new_owner(),
                requests: m.requests.clone(),
                duration: std::array::from_fn(|i| {
                    m.duration
                        .with_label_values(&[kinds.get(i).copied().unwrap_or("other")])
                }),
                route_duration: m.route_duration.clone(),
                decisions: m.decisions.clone(),
                rate_limited: m.rate_limited.clone(),
                upstream_attempts: m.upstream_attempts.clone(),
                cache_lookups: m.cache_lookups.clone(),
                stale_served: m.stale_served.clone(),
                hot_hits: m.hot_hits.clone(),
                write_failures: CACHE_WRITE_FAILURES
                    .map(|reason| m.cache_write_failures.with_label_values(&[reason])),
                write_failures_seen: [AtomicU64::new(0), AtomicU64::new(0)],
                integrity_refusals: Artifact::ALL
                    .map(|a| m.integrity_refusals.with_label_values(&[a.as_str()])),
                cache_objects: m.cache_objects.clone(),
                cache_bytes: m.cache_bytes.clone(),
                cache_evictions: m.cache_evictions.clone(),
                index_read_to: m.index_read_to.clone(),
                sumdb_tree_size: m.sumdb_tree_size.clone(),
                sumdb_appended: m.sumdb_appended.clone(),
                sumdb_batches: m.sumdb_batches.clone(),
                sumdb_batch_seconds: m.sumdb_batch_seconds.clone(),
                sumdb_lookups: m.sumdb_lookups.clone(),
                verified_fetches: m.verified_fetches.clone(),
                index_failing: m.index_failing.clone(),
            })
        }))
    }

    /// A request on `listener` was answered (or given up on) with `status` (0: none sent);
    /// `kind`: what it asked for, `None` for a request that is no GOPROXY request.
    pub fn request_finished(
        &self,
        listener: &str,
        route: &str,
        kind: Option<RequestKind>,
        status: u16,
        seconds: f64,
    ) {
        let Some(s) = &self.0 else { return };
        let kind_at = kind
            .and_then(|k| RequestKind::ALL.iter().position(|&a| a == k))
            .unwrap_or(RequestKind::ALL.len());
        let kind_label = kind.as_ref().map_or("other", RequestKind::as_str);
        if let Some(h) = s.duration.get(kind_at) {
            h.observe(seconds);
        }
        resolved::request_finished(
            s.owner,
            &s.requests,
            &s.route_duration,
            listener,
            route,
            kind_label,
            status,
            seconds,
        );
    }

    /// The access policy decided a module request on `route`.
    pub fn access_decided(&self, route: &str, effect: &str, rule: &str) {
        if let Some(s) = &self.0 {
            s.decisions.with_label_values(&[route, effect, rule]).inc();
        }
    }

    /// A request was refused by a rate limit (`reason`: `requests` or `bytes`; `limit`: where
    /// the limit comes from, never an identity's name).
    pub fn rate_limited(&self, reason: &str, limit: &str) {
        if let Some(s) = &self.0 {
            s.rate_limited.with_label_values(&[reason, limit]).inc();
        }
    }

    /// One attempt at an upstream ended with `outcome` (the attempt-outcome label).
    pub fn upstream_attempted(&self, upstream: &str, outcome: &str) {
        if let Some(s) = &self.0 {
            resolved::count(
                s.owner,
                UPSTREAM_ATTEMPTS,
                &s.upstream_attempts,
                upstream,
                Some(outcome),
            );
        }
    }

    /// The cache took part in a request this way (the cache-outcome label).
    pub fn cache_looked_up(&self, outcome: &str) {
        if let Some(s) = &self.0 {
            resolved::count(s.owner, CACHE_LOOKUPS, &s.cache_lookups, outcome, None);
        }
    }

    /// A stale answer was served because the upstream failed.
    pub fn stale_served(&self) {
        if let Some(s) = &self.0 {
            s.stale_served.inc();
        }
    }

    /// A cache hit was answered from memory without Pingora's cache phase.
    pub fn hot_hit(&self) {
        if let Some(s) = &self.0 {
            s.hot_hits.inc();
        }
    }

    /// Changed upstream bytes of `artifact` were refused.
    pub fn integrity_refused(&self, artifact: Artifact) {
        if let Some(s) = &self.0 {
            if let Some(c) = Artifact::ALL
                .iter()
                .position(|&a| a == artifact)
                .and_then(|i| s.integrity_refusals.get(i))
            {
                c.inc();
            }
        }
    }

    /// Brings `modgate_cache_write_failures_total` up to the cache's own counts (kept by the
    /// storage, which sees every failure, including those after the answer was sent). Called
    /// for every request: the counters are only touched when a count moved, and then by the
    /// one caller that saw it move.
    pub fn cache_write_failures(&self, no_space: u64, io: u64) {
        let Some(s) = &self.0 else { return };
        let totals = [no_space, io];
        let moved = totals
            .iter()
            .zip(&s.write_failures_seen)
            .fold(false, |moved, (total, seen)| {
                seen.fetch_max(*total, Ordering::Relaxed) < *total || moved
            });
        if moved {
            for (counter, total) in s.write_failures.iter().zip(totals) {
                sync_counter(counter, total);
            }
        }
    }

    /// The module index's state at a scrape (cooldown's clock): how far it was read without
    /// gaps, and whether its last read failed.
    pub fn module_index(&self, read_to: Option<i64>, failing: bool) {
        let Some(s) = &self.0 else { return };
        s.index_read_to.set(read_to.unwrap_or(0));
        s.index_failing.set(i64::from(failing));
    }

    /// A lookup in the company checksum database ended: `logged`, `appended`, `refused` or
    /// `disagreement`.
    /// The verifying origin finished a fetch with `result`.
    pub fn verified_fetch(&self, result: &'static str) {
        let Some(s) = &self.0 else { return };
        s.verified_fetches.with_label_values(&[result]).inc();
    }

    pub fn sumdb_lookup(&self, result: &'static str) {
        let Some(s) = &self.0 else { return };
        s.sumdb_lookups.with_label_values(&[result]).inc();
    }

    /// The company checksum database at a scrape: its tree size and what the appender did.
    pub fn sumdb(&self, tree_size: u64, stats: &modgate_sumdb::AppendStats) {
        let Some(s) = &self.0 else { return };
        s.sumdb_tree_size
            .set(i64::try_from(tree_size).unwrap_or(i64::MAX));
        sync_counter(&s.sumdb_appended, stats.records_appended);
        sync_counter(&s.sumdb_batches, stats.batches);
        for (q, d) in [("0.5", stats.batch_p50), ("0.99", stats.batch_p99)] {
            if let Some(d) = d {
                s.sumdb_batch_seconds
                    .with_label_values(&[q])
                    .set(d.as_secs_f64());
            }
        }
    }

    /// The cache tiers' sizes and evictions, at a scrape.
    pub fn cache_tiers(&self, stats: &modgate_cache::CacheStats) {
        let Some(s) = &self.0 else { return };
        for (tier, objects, bytes, evicted) in [
            (
                "memory",
                stats.memory_objects,
                stats.memory_bytes,
                stats.memory_evicted,
            ),
            ("disk", stats.objects, stats.bytes, stats.evicted),
        ] {
            s.cache_objects
                .with_label_values(&[tier])
                .set(i64::try_from(objects).unwrap_or(i64::MAX));
            s.cache_bytes
                .with_label_values(&[tier])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            sync_counter(&s.cache_evictions.with_label_values(&[tier]), evicted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_request_counts_on_its_kind_route_and_status_class() {
        let m = Metrics::new().expect("a registry of its own");
        let h = ProxyMetrics::new(Some(&m));
        h.request_finished("l", "r", Some(RequestKind::Zip), 200, 0.5);
        h.request_finished("l", "-", None, 0, 0.1);
        h.request_finished("l", "r", Some(RequestKind::Git), 404, 0.1);
        let count = |kind: &str| m.duration.with_label_values(&[kind]).get_sample_count();
        assert_eq!(count("zip"), 1);
        assert_eq!(count("other"), 1);
        assert_eq!(count("git"), 1);
        assert_eq!(count("mod"), 0);
        let req = |route: &str, kind: &str, status: &str| {
            m.requests
                .with_label_values(&["l", route, kind, status])
                .get()
        };
        assert_eq!(req("r", "zip", "200"), 1);
        assert_eq!(req("-", "other", "0"), 1);
        let class = |route: &str, class: &str| {
            m.route_duration
                .with_label_values(&[route, class])
                .get_sample_count()
        };
        assert_eq!(class("r", "2xx"), 1);
        assert_eq!(class("r", "4xx"), 1);
        assert_eq!(class("-", "none"), 1);
    }

    #[test]
    fn integrity_refusals_and_write_failures_count_on_their_own_series() {
        let m = Metrics::new().expect("a registry of its own");
        let h = ProxyMetrics::new(Some(&m));
        h.integrity_refused(Artifact::Zip);
        h.integrity_refused(Artifact::Info);
        h.integrity_refused(Artifact::Info);
        let refused = |a: &str| m.integrity_refusals.with_label_values(&[a]).get();
        assert_eq!((refused("mod"), refused("zip"), refused("info")), (0, 1, 2));
        h.cache_write_failures(2, 0);
        h.cache_write_failures(2, 3);
        h.cache_write_failures(1, 3);
        let failed = |r: &str| m.cache_write_failures.with_label_values(&[r]).get();
        assert_eq!((failed("no_space"), failed("io")), (2, 3));
        ProxyMetrics::default().integrity_refused(Artifact::Mod);
    }
}
