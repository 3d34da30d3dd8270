//! Admission for expensive credential checks (bcrypt / argon2 verifications): how many may run
//! at once per client address and per user name, and how many may fail before that address or
//! name is made to wait. Pure bookkeeping with the clock passed in, so it is tested without
//! sleeping; the gateway calls it around each password hash it computes.
//!
//! Cheap checks (bearer tokens, passwords already verified and cached) never come here: they
//! cannot be starved by a flood of wrong passwords.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckLimits {
    /// Expensive checks running at once for one client address.
    pub per_source: usize,
    /// Expensive checks running at once for one user name.
    pub per_user: usize,
    /// Failed checks an address or a user name may have in a burst before it is refused
    /// (with a time to retry) until it has earned a new attempt.
    pub failure_burst: u32,
    /// One more failed check is allowed after this long.
    pub failure_refill: Duration,
    /// Addresses and names tracked at once; beyond that, idle entries are forgotten and, if
    /// none is idle, new keys are refused as busy (memory stays bounded under a spray of names).
    pub max_keys: usize,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            per_source: 2,
            per_user: 2,
            failure_burst: 10,
            failure_refill: Duration::from_secs(6),
            max_keys: 16_384,
        }
    }
}

/// Which key a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client address.
    Source,
    /// The user name presented.
    User,
}

impl Scope {
    /// `source` or `user`, for metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Source => "source",
            Scope::User => "user",
        }
    }
}

/// Why an expensive check may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Enough checks for this key are running; try again shortly (the caller may wait).
    Busy(Scope),
    /// Too many failures for this key: refuse until `retry_after` has passed.
    Throttled {
        /// The key that failed too often.
        scope: Scope,
        /// When one more attempt will be allowed.
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Source(IpAddr),
    User(u64),
}

#[derive(Debug)]
struct Entry {
    running: usize,
    /// Failure allowance left (fractional refill).
    tokens: f64,
    updated: Instant,
}

/// The shared bookkeeping.
#[derive(Debug)]
pub struct CheckLimiter {
    limits: CheckLimits,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// A started expensive check; call [`CheckLimiter::finish`] with it.
#[derive(Debug)]
#[must_use = "finish the check so its slot is released"]
pub struct Ticket {
    keys: Vec<Key>,
}

/// A stable, non-reversible short key for a user name (names are attacker-chosen; storing a
/// hash keeps entries small).
fn user_key(name: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    h.write(name.as_bytes());
    h.finish()
}

impl CheckLimiter {
    /// Empty bookkeeping with these limits.
    pub fn new(limits: CheckLimits) -> CheckLimiter {
        CheckLimiter {
            limits,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> CheckLimits {
        self.limits
    }

    fn refill(&self, e: &mut Entry, now: Instant) {
        let limits = &self.limits;
        let elapsed = now.saturating_duration_since(e.updated).as_secs_f64();
        let per_sec = 1.0 / limits.failure_refill.as_secs_f64().max(1e-3);
        e.tokens = (e.tokens + elapsed * per_sec).min(f64::from(limits.failure_burst));
        e.updated = now;
    }

    fn retry_after(&self, e: &Entry) -> Duration {
        let missing = (1.0 - e.tokens).max(0.0);
        let secs = missing * self.limits.failure_refill.as_secs_f64();
        Duration::from_secs_f64(secs.ceil().max(1.0))
    }

    /// Asks to start an expensive check for `user` from `source` (no address: only the user
    /// name is limited).
    pub fn admit(
        &self,
        source: Option<IpAddr>,
        user: &str,
        now: Instant,
    ) -> Result<Ticket, Refused> {
        let mut keys = Vec::with_capacity(2);
        if let Some(ip) = source {
            keys.push(Key::Source(ip));
        }
        keys.push(Key::User(user_key(user)));
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Throttled first (a clear answer with a time), then busy.
        for key in &keys {
            if let Some(e) = entries.get_mut(key) {
                self.refill(e, now);
                if e.tokens < 1.0 {
                    return Err(Refused::Throttled {
                        scope: scope(key),
                        retry_after: self.retry_after(e),
                    });
                }
            }
        }
        for key in &keys {
            let limit = match key {
                Key::Source(_) => self.limits.per_source,
                Key::User(_) => self.limits.per_user,
            };
            if entries.get(key).is_some_and(|e| e.running >= limit) {
                return Err(Refused::Busy(scope(key)));
            }
        }
        let missing = keys.iter().filter(|k| !entries.contains_key(k)).count();
        if entries.len() + missing > self.limits.max_keys {
            self.forget_idle(&mut entries, now);
            if entries.len() + missing > self.limits.max_keys {
                return Err(Refused::Busy(Scope::Source));
            }
        }
        for key in &keys {
            let e = entries.entry(*key).or_insert(Entry {
                running: 0,
                tokens: f64::from(self.limits.failure_burst),
                updated: now,
            });
            e.running += 1;
        }
        Ok(Ticket { keys })
    }

    /// Ends a check; a failed one spends one of its keys' failure allowance.
    pub fn finish(&self, ticket: Ticket, failed: bool, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for key in &ticket.keys {
            if let Some(e) = entries.get_mut(key) {
                e.running = e.running.saturating_sub(1);
                if failed {
                    self.refill(e, now);
                    e.tokens = (e.tokens - 1.0).max(0.0);
                }
            }
        }
    }

    /// Drops entries with nothing running and a full allowance (they hold no information).
    fn forget_idle(&self, entries: &mut HashMap<Key, Entry>, now: Instant) {
        let burst = f64::from(self.limits.failure_burst);
        entries.retain(|_, e| {
            self.refill(e, now);
            e.running > 0 || e.tokens < burst
        });
    }

    /// Keys tracked now (for tests and a gauge).
    pub fn tracked(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn scope(key: &Key) -> Scope {
    match key {
        Key::Source(_) => Scope::Source,
        Key::User(_) => Scope::User,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    fn limits() -> CheckLimits {
        CheckLimits {
            per_source: 2,
            per_user: 2,
            failure_burst: 3,
            failure_refill: Duration::from_secs(10),
            max_keys: 8,
        }
    }

    #[test]
    fn concurrency_is_bounded_per_source_and_per_user() {
        let l = CheckLimiter::new(limits());
        let t0 = Instant::now();
        let a = l.admit(ip("10.0.0.1"), "alice", t0).expect("first");
        let b = l.admit(ip("10.0.0.1"), "bob", t0).expect("second");
        assert_eq!(
            l.admit(ip("10.0.0.1"), "carol", t0).unwrap_err(),
            Refused::Busy(Scope::Source)
        );
        // Another source may check alice once more, then alice is busy everywhere.
        let c = l.admit(ip("10.0.0.2"), "alice", t0).expect("other source");
        assert_eq!(
            l.admit(ip("10.0.0.3"), "alice", t0).unwrap_err(),
            Refused::Busy(Scope::User)
        );
        l.finish(a, false, t0);
        l.admit(ip("10.0.0.1"), "carol", t0)
            .map(|t| l.finish(t, false, t0))
            .expect("slot freed");
        l.finish(b, false, t0);
        l.finish(c, false, t0);
    }

    #[test]
    fn failures_are_rate_limited_and_recover() {
        let l = CheckLimiter::new(limits());
        let t0 = Instant::now();
        for i in 0..3 {
            let t = l
                .admit(ip("10.0.0.1"), &format!("u{i}"), t0)
                .expect("within burst");
            l.finish(t, true, t0);
        }
        match l.admit(ip("10.0.0.1"), "u9", t0) {
            Err(Refused::Throttled { scope, retry_after }) => {
                assert_eq!(scope, Scope::Source);
                assert_eq!(retry_after, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
        // Other sources are not affected.
        let t = l.admit(ip("10.0.0.2"), "u9", t0).expect("other source");
        l.finish(t, false, t0);
        // One more attempt is earned after the refill interval.
        let later = t0 + Duration::from_secs(10);
        let t = l.admit(ip("10.0.0.1"), "u9", later).expect("refilled");
        l.finish(t, true, later);
        assert!(matches!(
            l.admit(ip("10.0.0.1"), "u9", later),
            Err(Refused::Throttled { .. })
        ));
        // Successes cost nothing.
        let t = l.admit(ip("10.0.0.5"), "ok", t0).expect("admit");
        l.finish(t, false, t0);
        for _ in 0..10 {
            let t = l
                .admit(ip("10.0.0.5"), "ok", t0)
                .expect("successes are free");
            l.finish(t, false, t0);
        }
    }

    #[test]
    fn one_user_name_is_throttled_across_sources() {
        let l = CheckLimiter::new(limits());
        let t0 = Instant::now();
        for i in 0..3 {
            let t = l
                .admit(ip(&format!("10.0.1.{i}")), "alice", t0)
                .expect("burst");
            l.finish(t, true, t0);
        }
        assert!(matches!(
            l.admit(ip("10.0.2.1"), "alice", t0),
            Err(Refused::Throttled {
                scope: Scope::User,
                ..
            })
        ));
    }

    #[test]
    fn tracked_keys_stay_bounded() {
        let l = CheckLimiter::new(limits());
        let t0 = Instant::now();
        // Successful checks leave idle entries, which are forgotten when room is needed.
        for i in 0..100 {
            let t = l
                .admit(ip(&format!("10.1.0.{i}")), &format!("n{i}"), t0)
                .expect("idle entries make room");
            l.finish(t, false, t0);
            assert!(l.tracked() <= 8);
        }
        // Entries that remember failures are kept; when they fill the table, new keys wait.
        for i in 0..4 {
            let t = l
                .admit(ip(&format!("10.2.0.{i}")), &format!("f{i}"), t0)
                .expect("room");
            l.finish(t, true, t0);
        }
        assert_eq!(
            l.admit(ip("10.3.0.1"), "new", t0).unwrap_err(),
            Refused::Busy(Scope::Source)
        );
        assert!(l.tracked() <= 8);
    }
}
