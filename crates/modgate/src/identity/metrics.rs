//! The identity concern's metric handle: `modgate_auth_failures_total` (requests refused for
//! their credentials, by the refusal's reason label) and
//! `modgate_credential_checks_throttled_total` (password checks refused before hashing, its four
//! series resolved once). `Model::build` makes one for each listener's [`super::IdentitySettings`];
//! resolution counts its throttling there and the proxy its authentication failures.

use std::sync::Arc;

use modgate_identity::Scope;
use prometheus::{IntCounter, IntCounterVec};

use crate::metrics::Metrics;

/// The identity series; counts nothing when metrics are disabled (and in tests that need none).
#[derive(Clone, Default)]
pub struct IdentityMetrics(Option<Arc<Series>>);

struct Series {
    auth_failures: IntCounterVec,
    /// `[throttled, busy]` × `[source, user]`.
    limited: [[IntCounter; 2]; 2],
}

/// The index of a scope in [`Series::limited`].
fn scope_index(scope: Scope) -> usize {
    match scope {
        Scope::Source => 0,
        Scope::User => 1,
    }
}

impl IdentityMetrics {
    pub fn new(metrics: Option<&Metrics>) -> IdentityMetrics {
        IdentityMetrics(metrics.map(|m| {
            let by = |reason: &str| {
                [Scope::Source, Scope::User].map(|scope| {
                    m.checks_throttled
                        .with_label_values(&[reason, scope.as_str()])
                })
            };
            Arc::new(Series {
                auth_failures: m.auth_failures.clone(),
                limited: [by("throttled"), by("busy")],
            })
        }))
    }

    /// A request could not be given an identity (`reason`: its refusal's auth-failure label).
    pub fn auth_failed(&self, reason: &str) {
        if let Some(s) = &self.0 {
            s.auth_failures.with_label_values(&[reason]).inc();
        }
    }

    /// A password check was refused at once: `scope` has failed too often (429).
    pub(super) fn throttled(&self, scope: Scope) {
        if let Some(s) = &self.0 {
            s.limited[0][scope_index(scope)].inc();
        }
    }

    /// A password check found no free turn in time for `scope` (503).
    pub(super) fn busy(&self, scope: Scope) {
        if let Some(s) = &self.0 {
            s.limited[1][scope_index(scope)].inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_counts_on_its_reason_and_scope() {
        let m = Metrics::new().expect("a registry of its own");
        let h = IdentityMetrics::new(Some(&m));
        h.throttled(Scope::Source);
        h.busy(Scope::User);
        h.busy(Scope::User);
        h.auth_failed("bad-password");
        let limited = |reason: &str, scope: Scope| {
            m.checks_throttled
                .with_label_values(&[reason, scope.as_str()])
                .get()
        };
        assert_eq!(limited("throttled", Scope::Source), 1);
        assert_eq!(limited("throttled", Scope::User), 0);
        assert_eq!(limited("busy", Scope::Source), 0);
        assert_eq!(limited("busy", Scope::User), 2);
        assert_eq!(
            m.auth_failures.with_label_values(&["bad-password"]).get(),
            1
        );
        IdentityMetrics::default().throttled(Scope::User);
    }
}
