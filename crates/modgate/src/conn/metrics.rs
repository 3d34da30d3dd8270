//! The connection concern's metric handle: one listener's series of `modgate_connections_open`
//! and `modgate_connections_cut_total`, resolved once when the listener's service is built
//! (server start-up makes it from the registry and hands it to the listener's
//! [`super::GuardedApp`]), so the accept loop and the guard count each event on a counter they
//! hold, without a registry or label lookup.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge};

use super::caps::Over;
use super::deadline::Cut;
use crate::metrics::Metrics;

/// One listener's connection series; counts nothing when metrics are disabled.
#[derive(Clone, Default)]
pub struct ConnMetrics(Option<Arc<Series>>);

struct Series {
    open: IntGauge,
    idle: IntCounter,
    headers: IntCounter,
    listener_limit: IntCounter,
    source_limit: IntCounter,
    /// For the cuts whose series are not created at 0 ([`crate::metrics::prime`] creates the
    /// deadline and cap reasons only): `fd_limit` and `handshake` appear with their first cut,
    /// as they always have, so their series are looked up when one happens (rarely).
    cut: IntCounterVec,
    listener: String,
}

impl ConnMetrics {
    /// The series of `listener` in `metrics` (none when metrics are disabled).
    pub fn new(metrics: Option<&Metrics>, listener: &str) -> ConnMetrics {
        ConnMetrics(metrics.map(|m| {
            let cut = |reason: &str| m.connections_cut.with_label_values(&[listener, reason]);
            Arc::new(Series {
                open: m.connections_open.with_label_values(&[listener]),
                idle: cut(Cut::Idle.label()),
                headers: cut(Cut::Headers.label()),
                listener_limit: cut(Over::Listener.label()),
                source_limit: cut(Over::Source.label()),
                cut: m.connections_cut.clone(),
                listener: listener.to_string(),
            })
        }))
    }

    /// A connection was cut by a deadline.
    pub fn cut(&self, why: Cut) {
        if let Some(s) = &self.0 {
            match why {
                Cut::Idle => &s.idle,
                Cut::Headers => &s.headers,
            }
            .inc();
        }
    }

    /// A connection was refused at accept over one of the listener's caps.
    pub fn over(&self, over: Over) {
        if let Some(s) = &self.0 {
            match over {
                Over::Listener => &s.listener_limit,
                Over::Source => &s.source_limit,
            }
            .inc();
        }
    }

    /// A connection was closed at accept: its descriptor lay in the process's reserve.
    pub fn fd_limit(&self) {
        self.cut_other("fd_limit");
    }

    /// A connection's TLS handshake was not done within the listener's `handshake_timeout`.
    pub fn handshake_timed_out(&self) {
        self.cut_other("handshake");
    }

    fn cut_other(&self, reason: &str) {
        if let Some(s) = &self.0 {
            s.cut.with_label_values(&[&s.listener, reason]).inc();
        }
    }

    /// The listener's `modgate_connections_open` series.
    pub(super) fn open(&self) -> Option<&IntGauge> {
        self.0.as_ref().map(|s| &s.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(m: &Metrics, listener: &str, reason: &str) -> u64 {
        m.connections_cut
            .with_label_values(&[listener, reason])
            .get()
    }

    #[test]
    fn each_event_counts_on_its_own_listener_and_reason() {
        let m = Metrics::new().expect("a registry of its own");
        let a = ConnMetrics::new(Some(&m), "a");
        let b = ConnMetrics::new(Some(&m), "b");
        a.cut(Cut::Idle);
        a.cut(Cut::Headers);
        a.cut(Cut::Headers);
        a.over(Over::Listener);
        a.over(Over::Source);
        a.fd_limit();
        a.handshake_timed_out();
        b.over(Over::Source);
        for (reason, n) in [
            ("idle", 1),
            ("headers", 2),
            ("listener_limit", 1),
            ("source_limit", 1),
            ("fd_limit", 1),
            ("handshake", 1),
        ] {
            assert_eq!(value(&m, "a", reason), n, "{reason}");
        }
        assert_eq!(value(&m, "b", "source_limit"), 1);
        assert_eq!(value(&m, "b", "idle"), 0);
        if let Some(g) = a.open() {
            g.inc();
        }
        assert_eq!(m.connections_open.with_label_values(&["a"]).get(), 1);
        assert_eq!(m.connections_open.with_label_values(&["b"]).get(), 0);
    }

    #[test]
    fn disabled_metrics_count_nothing_and_do_not_fail() {
        let off = ConnMetrics::default();
        off.cut(Cut::Idle);
        off.over(Over::Listener);
        off.fd_limit();
        off.handshake_timed_out();
        assert!(off.open().is_none());
    }
}
