//! Stale-while-revalidate's background refresh asks the upstream as a request it serves.
//! Pingora runs the refresh as a subrequest with a fresh context, built from the triggering
//! request's header as it arrived (an HTTP/1 request's raw bytes: whatever the gateway changed
//! since is not there): the identity the gateway resolved for that request, and its access
//! decision (the roles forwarded upstream), are handed over here, by cache key, when the
//! gateway agrees to serve the stale answer — just before Pingora starts the refresh. The
//! refresh takes what is kept for its own key. Nothing a client sends selects a hand-over: a
//! refresh asks as a request admitted for that very answer a moment before (the one that
//! started it, or one for the same key in the same instant).
//!
//! A hand-over not taken within [`TTL`] (the request was served stale while another refresh
//! ran) is dropped at the next hand-over; at most [`MAX`] are held.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use modgate_policy::Decision;

use crate::identity::RequestIdentity;

/// How long a hand-over waits for its refresh.
const TTL: Duration = Duration::from_secs(60);
/// Most hand-overs held at once (beyond that, a refresh goes without: see `take`'s callers).
const MAX: usize = 4096;

/// What a refresh inherits from the request that started it.
#[derive(Clone)]
pub struct Inherited {
    pub identity: RequestIdentity,
    /// The access decision of that request (its roles are forwarded upstream).
    pub decision: Option<Decision>,
}

struct Entry {
    at: Instant,
    inherited: Inherited,
}

/// The pending hand-overs of one proxy (a refresh runs on the proxy of its request).
#[derive(Default)]
pub struct Handovers {
    pending: Mutex<HashMap<String, Entry>>,
}

impl Handovers {
    /// Keeps `inherited` for a refresh of the answer cached under `key` (the cache key's
    /// text), replacing what an earlier request left for it. Returns whether it was kept (not
    /// when [`MAX`] other keys are pending).
    pub fn put(&self, key: &str, inherited: Inherited) -> bool {
        self.put_at(key, inherited, Instant::now())
    }

    fn put_at(&self, key: &str, inherited: Inherited, now: Instant) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, e| now.saturating_duration_since(e.at) < TTL);
        if pending.len() >= MAX && !pending.contains_key(key) {
            return false;
        }
        pending.insert(key.to_string(), Entry { at: now, inherited });
        true
    }

    /// What was handed over for a refresh of `key` (once).
    pub fn take(&self, key: &str) -> Option<Inherited> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.remove(key).map(|e| e.inherited)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Inherited {
        let mut identity = RequestIdentity::default();
        identity.principal.name = name.to_string();
        Inherited {
            identity,
            decision: None,
        }
    }

    #[test]
    fn a_hand_over_is_taken_once_for_its_key_and_the_latest_wins() {
        let h = Handovers::default();
        assert!(h.put("route:a|/m/@v/list", named("alice")));
        assert!(h.put("route:a|/n/@v/list", named("bob")));
        assert!(h.put("route:a|/m/@v/list", named("carol")));
        let got = h.take("route:a|/m/@v/list").expect("m's");
        assert_eq!(got.identity.principal.name, "carol");
        assert!(h.take("route:a|/m/@v/list").is_none(), "taken twice");
        assert!(h.take("route:b|/m/@v/list").is_none());
        assert_eq!(
            h.take("route:a|/n/@v/list")
                .expect("n's")
                .identity
                .principal
                .name,
            "bob"
        );
    }

    #[test]
    fn hand_overs_not_taken_expire_and_are_bounded() {
        let h = Handovers::default();
        let t0 = Instant::now();
        let later = t0 + TTL + Duration::from_secs(1);
        assert!(h.put_at("old", named("old"), t0));
        assert!(h.put_at("new", named("new"), later));
        assert!(h.take("old").is_none(), "an expired hand-over was kept");
        for i in 0..MAX - 1 {
            assert!(h.put_at(&format!("k{i}"), named("x"), later));
        }
        assert_eq!(h.len(), MAX);
        assert!(!h.put_at("one too many", named("y"), later));
        assert!(
            h.put_at("new", named("z"), later),
            "a pending key is replaced"
        );
    }
}
