//! Label sets resolved once per thread (issue 22): the series a request counts on, found by
//! `with_label_values` the first time a thread counts that label set and kept in the thread's
//! own small map, so a request does not hash its label values with FNV, format its status, take
//! the family's lock and clone an `Arc` for each series it touches.
//!
//! The kept handles are the registry's own series (a `prometheus` vector never drops a child:
//! modgate removes none), so counting on them is counting on the registry, before and after a
//! reload: a route that is renamed or added is a new label set, resolved when first counted; a
//! route that is gone is never looked up again. Each thread's map holds at most [`MAX_ENTRIES`]
//! label sets (cleared when full, then filled again by what is counted), so memory stays bounded
//! whatever the configuration. Without dependencies on the rest of the crate (the criterion
//! bench `benches/per_hit.rs` compiles this very file).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

/// The label sets one thread keeps resolved at most.
pub const MAX_ENTRIES: usize = 4096;

/// Tells the families of different registries (tests make their own) apart in the per-thread
/// maps.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// A new owner id: one per set of families (`ProxyMetrics::new`).
pub fn new_owner() -> u64 {
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
}

/// The `status_class` label: `2xx`, `4xx`, …; `none` when no answer was sent (status 0).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// A finished request's label set: `requests{listener, route, kind, status}` and
/// `route_duration{route, status_class}` (the class follows from the status).
struct RequestEntry {
    owner: u64,
    listener: Box<str>,
    route: Box<str>,
    kind: Box<str>,
    status: u16,
    count: IntCounter,
    latency: Histogram,
}

/// A counter with one or two label values (`cache_lookups{outcome}`,
/// `upstream_attempts{upstream, outcome}`).
struct CounterEntry {
    owner: u64,
    /// Which family of the owner.
    family: u8,
    first: Box<str>,
    second: Box<str>,
    count: IntCounter,
}

#[derive(Default)]
struct Maps {
    requests: HashMap<u64, RequestEntry, Fixed>,
    counters: HashMap<u64, CounterEntry, Fixed>,
}

/// The maps' own hasher: the keys are already hashes.
type Fixed = foldhash::fast::FixedState;

thread_local! {
    static MAPS: RefCell<Maps> = RefCell::new(Maps::default());
}

fn hash_of(owner: u64, tag: u8, texts: &[&str], number: u16) -> u64 {
    let mut h = Fixed::default().build_hasher();
    h.write_u64(owner);
    h.write_u8(tag);
    for t in texts {
        // the length first: ("ab", "c") and ("a", "bc") hash apart
        h.write_usize(t.len());
        h.write(t.as_bytes());
    }
    h.write_u16(number);
    h.finish()
}

/// Counts one finished request: `requests` by (listener, route, kind, status) and its latency
/// on `route_duration` by (route, status class). `owner`: [`new_owner`] of these families.
#[allow(clippy::too_many_arguments)]
pub fn request_finished(
    owner: u64,
    requests: &IntCounterVec,
    route_duration: &HistogramVec,
    listener: &str,
    route: &str,
    kind: &str,
    status: u16,
    seconds: f64,
) {
    let key = hash_of(owner, 0, &[listener, route, kind], status);
    let counted = MAPS.try_with(|maps| {
        let Ok(mut maps) = maps.try_borrow_mut() else {
            return false;
        };
        if let Some(e) = maps.requests.get(&key) {
            if e.owner == owner
                && e.status == status
                && &*e.listener == listener
                && &*e.route == route
                && &*e.kind == kind
            {
                e.count.inc();
                e.latency.observe(seconds);
                return true;
            }
            // Another label set with the same hash: counted the slow way, never mixed up.
            return false;
        }
        if maps.requests.len() >= MAX_ENTRIES {
            maps.requests.clear();
        }
        let e = RequestEntry {
            owner,
            listener: listener.into(),
            route: route.into(),
            kind: kind.into(),
            status,
            count: requests.with_label_values(&[listener, route, kind, &status.to_string()]),
            latency: route_duration.with_label_values(&[route, status_class(status)]),
        };
        e.count.inc();
        e.latency.observe(seconds);
        maps.requests.insert(key, e);
        true
    });
    if counted != Ok(true) {
        requests
            .with_label_values(&[listener, route, kind, &status.to_string()])
            .inc();
        route_duration
            .with_label_values(&[route, status_class(status)])
            .observe(seconds);
    }
}

/// Adds one to `family{first}` (`second` empty) or `family{first, second}`. `tag`: which family
/// of the owner's this is (the same family always with the same tag).
pub fn count(owner: u64, tag: u8, family: &IntCounterVec, first: &str, second: Option<&str>) {
    let key = hash_of(owner, tag, &[first, second.unwrap_or("")], 0);
    let labels = |first, second: Option<&str>| match second {
        Some(s) => family.with_label_values(&[first, s]),
        None => family.with_label_values(&[first]),
    };
    let counted = MAPS.try_with(|maps| {
        let Ok(mut maps) = maps.try_borrow_mut() else {
            return false;
        };
        if let Some(e) = maps.counters.get(&key) {
            if e.owner == owner
                && e.family == tag
                && &*e.first == first
                && &*e.second == second.unwrap_or("")
            {
                e.count.inc();
                return true;
            }
            return false;
        }
        if maps.counters.len() >= MAX_ENTRIES {
            maps.counters.clear();
        }
        let e = CounterEntry {
            owner,
            family: tag,
            first: first.into(),
            second: second.unwrap_or("").into(),
            count: labels(first, second),
        };
        e.count.inc();
        maps.counters.insert(key, e);
        true
    });
    if counted != Ok(true) {
        labels(first, second).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, Opts};

    fn families() -> (IntCounterVec, HistogramVec, IntCounterVec) {
        (
            IntCounterVec::new(
                Opts::new("r", "r"),
                &["listener", "route", "kind", "status"],
            )
            .expect("family"),
            HistogramVec::new(HistogramOpts::new("d", "d"), &["route", "status_class"])
                .expect("family"),
            IntCounterVec::new(Opts::new("u", "u"), &["upstream", "outcome"]).expect("family"),
        )
    }

    #[test]
    fn resolved_series_are_the_registrys_own() {
        let (requests, duration, attempts) = families();
        let owner = new_owner();
        for _ in 0..3 {
            request_finished(owner, &requests, &duration, "l", "r", "info", 200, 0.5);
        }
        request_finished(owner, &requests, &duration, "l", "r", "info", 404, 0.5);
        // A route of the next configuration (a reload renamed it): its own series.
        request_finished(owner, &requests, &duration, "l", "r2", "info", 200, 0.5);
        let n = |route: &str, status: &str| {
            requests
                .with_label_values(&["l", route, "info", status])
                .get()
        };
        assert_eq!((n("r", "200"), n("r", "404"), n("r2", "200")), (3, 1, 1));
        let class = |route: &str, class: &str| {
            duration
                .with_label_values(&[route, class])
                .get_sample_count()
        };
        assert_eq!((class("r", "2xx"), class("r", "4xx")), (3, 1));
        count(owner, 1, &attempts, "a", Some("ok"));
        count(owner, 1, &attempts, "a", Some("ok"));
        count(owner, 1, &attempts, "ab", Some(""));
        assert_eq!(attempts.with_label_values(&["a", "ok"]).get(), 2);
        assert_eq!(attempts.with_label_values(&["ab", ""]).get(), 1);
    }

    #[test]
    fn another_registrys_families_count_apart() {
        let (requests_a, duration_a, _) = families();
        let (requests_b, duration_b, _) = families();
        let (a, b) = (new_owner(), new_owner());
        request_finished(a, &requests_a, &duration_a, "l", "r", "zip", 200, 0.1);
        request_finished(b, &requests_b, &duration_b, "l", "r", "zip", 200, 0.1);
        request_finished(b, &requests_b, &duration_b, "l", "r", "zip", 200, 0.1);
        let n = |v: &IntCounterVec| v.with_label_values(&["l", "r", "zip", "200"]).get();
        assert_eq!((n(&requests_a), n(&requests_b)), (1, 2));
    }

    #[test]
    fn a_full_map_starts_again_and_still_counts() {
        let (requests, duration, _) = families();
        let owner = new_owner();
        let routes: Vec<String> = (0..MAX_ENTRIES + 10).map(|i| format!("r{i}")).collect();
        for r in routes.iter().chain(routes.iter().take(20)) {
            request_finished(owner, &requests, &duration, "l", r, "mod", 200, 0.1);
        }
        let n = |r: &str| requests.with_label_values(&["l", r, "mod", "200"]).get();
        assert_eq!((n("r0"), n("r19"), n("r20")), (2, 2, 1));
        let last = format!("r{}", MAX_ENTRIES + 9);
        assert_eq!(n(&last), 1);
        MAPS.with(|m| assert!(m.borrow().requests.len() <= MAX_ENTRIES));
    }
}
