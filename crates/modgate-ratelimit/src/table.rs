//! The buckets of every identity seen ([`Limiter`]), in a bounded table.
//!
//! Memory is bounded by `max_identities`: the table is split in shards (one lock each, so
//! requests of different identities rarely wait on each other), each holding at most its share.
//! When a shard is full and a new identity arrives, the shard first forgets every entry whose
//! buckets have refilled to their burst (nothing is lost: a new bucket starts full); when that
//! frees less than a quarter of the shard, it forgets the least recently seen entries down to
//! three quarters. So an insertion costs O(1) amortized, and an adversary rotating identities
//! (anonymous source addresses) cannot grow memory past the bound. What it can do is push other
//! identities' partly used buckets out, giving them a fresh burst: the bound is a memory bound,
//! not a promise that every bucket is remembered (docs/security.md).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::bucket::{Bucket, Limit};
use crate::policy::{Applied, Dimension, Effective};

/// Shards at most (fewer when the bound is small).
const SHARDS: usize = 16;

/// Why a request is refused: which limit, and how long until it would pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Over<'a> {
    pub dimension: Dimension,
    pub applied: Applied<'a>,
    pub wait: Duration,
}

impl Over<'_> {
    /// The `Retry-After` value: whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.wait.as_secs_f64().ceil();
        if secs.is_finite() && secs >= 1.0 {
            secs as u64
        } else {
            1
        }
    }
}

#[derive(Debug)]
struct Entry {
    requests: Option<Bucket>,
    bytes: Option<Bucket>,
    seen: Instant,
}

impl Entry {
    /// Whether forgetting the entry loses nothing at `now`.
    fn idle(&self, now: Instant) -> bool {
        self.requests.as_ref().is_none_or(|b| b.is_full(now))
            && self.bytes.as_ref().is_none_or(|b| b.is_full(now))
    }

    /// Brings the buckets in line with the limits in force (a reload may have changed them):
    /// an unchanged limit keeps its bucket as it is, a changed one keeps its level
    /// ([`Bucket::relimit`]), a new one starts full, a lifted one is dropped.
    fn align(&mut self, e: &Effective<'_>, now: Instant) {
        align(&mut self.requests, e.requests.map(|a| a.limit), now);
        align(&mut self.bytes, e.bytes.map(|a| a.limit), now);
    }
}

fn align(slot: &mut Option<Bucket>, limit: Option<Limit>, now: Instant) {
    match (slot.as_mut(), limit) {
        (Some(b), Some(l)) if b.limit() != l => b.relimit(l, now),
        (Some(_), Some(_)) => {}
        (None, Some(l)) => *slot = Some(Bucket::full(l, now)),
        (_, None) => *slot = None,
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Entry>,
}

impl Shard {
    /// Makes room for one more entry when the shard holds `cap` or more.
    fn make_room(&mut self, cap: usize, now: Instant) {
        if self.map.len() < cap {
            return;
        }
        self.map.retain(|_, e| !e.idle(now));
        // At least a quarter free (at least one entry), so the next sweep is that many
        // insertions away.
        let keep = (cap - cap / 4).min(cap - 1);
        if self.map.len() <= keep {
            return;
        }
        // Forget the least recently seen down to `keep`.
        let mut seen: Vec<Instant> = self.map.values().map(|e| e.seen).collect();
        let drop = seen.len() - keep;
        let (_, cutoff, _) = seen.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        let mut dropped = 0;
        self.map.retain(|_, e| {
            if dropped < drop && e.seen <= cutoff {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
}

/// Every identity's buckets.
#[derive(Debug)]
pub struct Limiter {
    shards: Box<[Mutex<Shard>]>,
    /// Entries per shard at most.
    cap: std::sync::atomic::AtomicUsize,
    hasher: RandomState,
}

impl Limiter {
    /// A table holding at most about `max_identities` identities (at least one per shard).
    pub fn new(max_identities: usize) -> Limiter {
        let shards = SHARDS.min(max_identities.max(1));
        let limiter = Limiter {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            cap: std::sync::atomic::AtomicUsize::new(1),
            hasher: RandomState::new(),
        };
        limiter.set_max_identities(max_identities);
        limiter
    }

    /// Changes the bound (a reload); a smaller one takes effect as identities arrive.
    pub fn set_max_identities(&self, max_identities: usize) {
        let per_shard = max_identities.div_ceil(self.shards.len()).max(1);
        self.cap
            .store(per_shard, std::sync::atomic::Ordering::Relaxed);
    }

    /// The most entries kept at once.
    pub fn capacity(&self) -> usize {
        self.cap.load(std::sync::atomic::Ordering::Relaxed) * self.shards.len()
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides one request of the identity `key` under `limits`: refused while its response
    /// bytes are in debt, or when its request bucket is empty (a refused request takes
    /// nothing); otherwise it takes one request token.
    pub fn admit<'a>(
        &self,
        key: &str,
        limits: &Effective<'a>,
        now: Instant,
    ) -> Result<(), Over<'a>> {
        if limits.is_unlimited() {
            // Lifted: its buckets are forgotten (a limit set again starts with a full burst).
            self.shard(key).map.remove(key);
            return Ok(());
        }
        let cap = self.cap.load(std::sync::atomic::Ordering::Relaxed);
        let mut shard = self.shard(key);
        if !shard.map.contains_key(key) {
            shard.make_room(cap, now);
            shard.map.insert(
                key.to_string(),
                Entry {
                    requests: None,
                    bytes: None,
                    seen: now,
                },
            );
        }
        let Some(entry) = shard.map.get_mut(key) else {
            return Ok(());
        };
        entry.seen = entry.seen.max(now);
        entry.align(limits, now);
        if let (Some(b), Some(applied)) = (entry.bytes.as_mut(), limits.bytes) {
            if let Err(wait) = b.clear(now) {
                return Err(Over {
                    dimension: Dimension::Bytes,
                    applied,
                    wait,
                });
            }
        }
        if let (Some(b), Some(applied)) = (entry.requests.as_mut(), limits.requests) {
            if let Err(wait) = b.take(1.0, now) {
                return Err(Over {
                    dimension: Dimension::Requests,
                    applied,
                    wait,
                });
            }
        }
        Ok(())
    }

    /// Charges `bytes` served to the identity `key` under the byte `limit` that applied to its
    /// request (after its answer): the next request waits while they are not paid back.
    /// Nothing to do when the entry was forgotten meanwhile (pushed out by the bound).
    pub fn charge(&self, key: &str, limit: Limit, bytes: u64, now: Instant) {
        if bytes == 0 {
            return;
        }
        let cap = self.cap.load(std::sync::atomic::Ordering::Relaxed);
        let mut shard = self.shard(key);
        if !shard.map.contains_key(key) {
            // Forgotten while the answer was served (its buckets had refilled): the bytes are
            // charged all the same, to a fresh bucket.
            shard.make_room(cap, now);
            shard.map.insert(
                key.to_string(),
                Entry {
                    requests: None,
                    bytes: None,
                    seen: now,
                },
            );
        }
        let Some(entry) = shard.map.get_mut(key) else {
            return;
        };
        entry.seen = entry.seen.max(now);
        align(&mut entry.bytes, Some(limit), now);
        if let Some(b) = entry.bytes.as_mut() {
            b.charge(bytes as f64, now);
        }
    }

    /// How many identities have buckets now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The levels of the identity's buckets at `now` (requests, bytes), if it has any.
    pub fn levels(&self, key: &str, now: Instant) -> Option<(Option<f64>, Option<f64>)> {
        let shard = self.shard(key);
        let e = shard.map.get(key)?;
        Some((
            e.requests.as_ref().map(|b| b.level(now)),
            e.bytes.as_ref().map(|b| b.level(now)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Origin, RateLimits, Setting, Spec};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limits(requests: Option<(f64, f64)>, bytes: Option<(f64, f64)>) -> RateLimits {
        let set = |x: Option<(f64, f64)>| match x {
            Some((rate, burst)) => Setting::Limited(Limit { rate, burst }),
            None => Setting::Inherit,
        };
        RateLimits {
            default: Spec {
                requests: set(requests),
                bytes: set(bytes),
            },
            ..RateLimits::default()
        }
    }

    #[test]
    fn identities_have_buckets_of_their_own() {
        let p = limits(Some((1.0, 2.0)), None);
        let e = p.effective(&[], &[], false);
        let l = Limiter::new(100);
        let t0 = Instant::now();
        assert!(l.admit("alice", &e, t0).is_ok());
        assert!(l.admit("alice", &e, t0).is_ok());
        let over = l
            .admit("alice", &e, t0)
            .expect_err("third in the same instant");
        assert_eq!(over.dimension, Dimension::Requests);
        assert_eq!(over.applied.origin, Origin::Default);
        assert_eq!(over.retry_after_secs(), 1);
        // Bob is not affected by Alice.
        assert!(l.admit("bob", &e, t0).is_ok());
        assert!(l.admit("bob", &e, t0).is_ok());
        // A second later Alice has one token again.
        assert!(l.admit("alice", &e, t0 + ms(1000)).is_ok());
        assert!(l.admit("alice", &e, t0 + ms(1000)).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_at_least_one() {
        let p = limits(Some((0.25, 1.0)), None);
        let e = p.effective(&[], &[], false);
        let l = Limiter::new(10);
        let t0 = Instant::now();
        l.admit("k", &e, t0).expect("first");
        assert_eq!(
            l.admit("k", &e, t0).expect_err("empty").retry_after_secs(),
            4
        );
        assert_eq!(
            l.admit("k", &e, t0 + ms(1100))
                .expect_err("2.9 s left")
                .retry_after_secs(),
            3
        );
        assert_eq!(
            l.admit("k", &e, t0 + ms(3500))
                .expect_err("half a second left")
                .retry_after_secs(),
            1
        );
        assert!(l.admit("k", &e, t0 + ms(4000)).is_ok());
    }

    #[test]
    fn bytes_refuse_the_next_request_until_paid_back() {
        let p = limits(None, Some((1000.0, 500.0)));
        let e = p.effective(&[], &[], false);
        let l = Limiter::new(10);
        let t0 = Instant::now();
        // Whatever the size of the answer, the request that asks for it passes.
        assert!(l.admit("k", &e, t0).is_ok());
        let limit = e.bytes.expect("a byte limit").limit;
        l.charge("k", limit, 2500, t0);
        // 2000 in debt: 2 s.
        let over = l.admit("k", &e, t0).expect_err("in debt");
        assert_eq!(over.dimension, Dimension::Bytes);
        assert_eq!(over.retry_after_secs(), 2);
        assert!(l.admit("k", &e, t0 + ms(1999)).is_err());
        assert!(l.admit("k", &e, t0 + ms(2000)).is_ok());
        // Another identity is not in debt.
        assert!(l.admit("other", &e, t0).is_ok());
    }

    #[test]
    fn bytes_are_charged_even_when_the_entry_was_forgotten_meanwhile() {
        let p = limits(None, Some((1000.0, 500.0)));
        let e = p.effective(&[], &[], false);
        let limit = e.bytes.expect("a byte limit").limit;
        let l = Limiter::new(1);
        let t0 = Instant::now();
        l.admit("k", &e, t0).expect("first");
        // A long answer: meanwhile another identity pushed "k" out (its bucket was full).
        l.admit("other", &e, t0 + ms(10)).expect("other");
        assert!(l.levels("k", t0 + ms(10)).is_none());
        l.charge("k", limit, 1500, t0 + ms(10));
        assert_eq!(
            l.admit("k", &e, t0 + ms(10))
                .expect_err("in debt")
                .dimension,
            Dimension::Bytes
        );
    }

    #[test]
    fn unlimited_identities_take_no_memory() {
        let p = RateLimits::default();
        let e = p.effective(&[], &[], false);
        let l = Limiter::new(10);
        for i in 0..1000 {
            assert!(l.admit(&format!("k{i}"), &e, Instant::now()).is_ok());
        }
        assert!(l.is_empty());
    }

    #[test]
    fn memory_is_bounded_whatever_identities_arrive() {
        let p = limits(Some((1.0, 5.0)), Some((1.0, 10.0)));
        let e = p.effective(&[], &[], false);
        let l = Limiter::new(256);
        let t0 = Instant::now();
        // An adversary rotating identities, each leaving a used bucket behind (nothing idle).
        for i in 0..100_000u32 {
            let key = format!("anonymous\0198.51.{}.{}", i / 256, i % 256);
            let _ = l.admit(&key, &e, t0 + Duration::from_micros(u64::from(i)));
            assert!(l.len() <= l.capacity(), "{} > {}", l.len(), l.capacity());
        }
        assert!(l.capacity() <= 256 + SHARDS);
    }

    #[test]
    fn idle_buckets_are_forgotten_before_used_ones() {
        let p = limits(Some((1.0, 3.0)), None);
        let e = p.effective(&[], &[], false);
        // One shard, so the test knows where everything goes.
        let l = Limiter::new(1);
        l.set_max_identities(4);
        assert_eq!(l.capacity(), 4);
        let t0 = Instant::now();
        // "busy" empties its bucket; the others take one token and refill after a second.
        for _ in 0..3 {
            l.admit("busy", &e, t0).expect("burst");
        }
        for k in ["a", "b", "c"] {
            l.admit(k, &e, t0 + ms(500)).expect("one");
        }
        // At t0 + 1.6 s: a, b, c are full again (idle), busy is not (1.6 of 3 tokens).
        let t1 = t0 + ms(1600);
        l.admit("new", &e, t1).expect("new identity");
        assert_eq!(l.len(), 2);
        let (requests, _) = l.levels("busy", t1).expect("busy is remembered");
        assert!(requests.is_some_and(|r| r < 3.0));
        assert!(l.levels("a", t1).is_none());
        // Still limited: busy's state survived.
        assert!(l.admit("busy", &e, t1).is_ok());
        assert!(l.admit("busy", &e, t1).is_err());
    }

    #[test]
    fn when_nothing_is_idle_the_least_recently_seen_go() {
        let p = limits(Some((0.001, 2.0)), None);
        let e = p.effective(&[], &[], false);
        let l = Limiter::new(1);
        l.set_max_identities(4);
        let t0 = Instant::now();
        for (i, k) in ["old", "b", "c", "d"].iter().enumerate() {
            l.admit(k, &e, t0 + ms(i as u64)).expect("first");
        }
        // "old" is used again last: "b" is now the least recently seen.
        l.admit("old", &e, t0 + ms(10)).expect("second");
        l.admit("e", &e, t0 + ms(20)).expect("new");
        assert!(l.len() <= 4);
        assert!(l.levels("old", t0 + ms(20)).is_some());
        assert!(l.levels("b", t0 + ms(20)).is_none());
    }

    #[test]
    fn an_unchanged_limit_keeps_its_state_across_a_new_policy() {
        let old = limits(Some((1.0, 2.0)), None);
        let same = limits(Some((1.0, 2.0)), None);
        let l = Limiter::new(10);
        let t0 = Instant::now();
        let e = old.effective(&[], &[], false);
        l.admit("k", &e, t0).expect("1");
        l.admit("k", &e, t0).expect("2");
        // A reload with the same limit (a new policy value, equal): still empty.
        let e = same.effective(&[], &[], false);
        assert!(l.admit("k", &e, t0).is_err());
        // A higher limit applies from the reload on: its rate refills the level carried over.
        let higher = limits(Some((1000.0, 2000.0)), None);
        let e = higher.effective(&[], &[], false);
        assert!(l.admit("k", &e, t0 + ms(10)).is_err());
        assert!(l.admit("k", &e, t0 + ms(12)).is_ok());
        // Lifted: no limit at all, and the bucket is forgotten.
        let none = RateLimits::default();
        let e = none.effective(&[], &[], false);
        for _ in 0..100 {
            assert!(l.admit("k", &e, t0 + ms(20)).is_ok());
        }
        assert!(l.levels("k", t0 + ms(20)).is_none());
        // Set again: a full burst.
        let e = old.effective(&[], &[], false);
        assert!(l.admit("k", &e, t0 + ms(20)).is_ok());
        assert!(l.admit("k", &e, t0 + ms(20)).is_ok());
        assert!(l.admit("k", &e, t0 + ms(20)).is_err());
    }
}
