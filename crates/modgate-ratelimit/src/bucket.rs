//! One token bucket: `rate` tokens are added per second up to `burst`. A request takes one
//! token when there is one ([`Bucket::take`]); response bytes are charged after they were
//! served ([`Bucket::charge`]), which may leave the bucket in debt, and the next request waits
//! until the debt is paid back ([`Bucket::clear`]). Time is an argument.

use std::time::{Duration, Instant};

/// A sustained rate (tokens per second, more than 0) and a burst (the most tokens held, at
/// least 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: f64,
}

/// Rounding slack: refills added in many small steps may fall short of a whole token by a few
/// ulps; a millionth of a token (of a request, of a byte) is no difference.
const SLACK: f64 = 1e-6;

/// The longest wait ever reported (a rate as small as it gets and a huge debt).
const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

impl Limit {
    /// How long the refill takes to add `missing` tokens.
    pub fn time_for(&self, missing: f64) -> Duration {
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        let secs = missing / self.rate;
        if !secs.is_finite() || secs >= MAX_WAIT.as_secs_f64() {
            return MAX_WAIT;
        }
        Duration::from_secs_f64(secs)
    }
}

/// A bucket's level at a point in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    limit: Limit,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket (an identity not seen before gets its whole burst).
    pub fn full(limit: Limit, now: Instant) -> Bucket {
        Bucket {
            limit,
            tokens: limit.burst,
            at: now,
        }
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// The level at `now` (negative: in debt), without changing the bucket.
    pub fn level(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.limit.rate).min(self.limit.burst)
    }

    /// Whether the bucket has refilled to its burst by `now`: forgetting it then loses nothing
    /// (a new one starts full).
    pub fn is_full(&self, now: Instant) -> bool {
        self.level(now) + SLACK >= self.limit.burst
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.level(now);
        // A `now` earlier than the last one (callers on several threads) adds nothing.
        self.at = self.at.max(now);
    }

    /// Takes `cost` tokens when there are that many; otherwise takes nothing and says how long
    /// until there are.
    pub fn take(&mut self, cost: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens + SLACK >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err(self.limit.time_for(cost - self.tokens))
        }
    }

    /// Charges `amount` tokens whatever the level: a debt is paid back by the refill.
    pub fn charge(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.tokens -= amount;
    }

    /// `Ok` while the bucket is not in debt; otherwise how long until the debt is paid.
    pub fn clear(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens + SLACK >= 0.0 {
            Ok(())
        } else {
            Err(self.limit.time_for(-self.tokens))
        }
    }

    /// Applies a changed limit from `now` on: the level so far is kept (refilled at the old
    /// rate up to now), cut to the new burst; a debt stays a debt.
    pub fn relimit(&mut self, limit: Limit, now: Instant) {
        self.refill(now);
        self.limit = limit;
        self.tokens = self.tokens.min(limit.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const TEN_PER_S_BURST_3: Limit = Limit {
        rate: 10.0,
        burst: 3.0,
    };

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(TEN_PER_S_BURST_3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(1.0, t0), Ok(()));
        }
        // Empty: the next token comes in 100 ms.
        let wait = b.take(1.0, t0).expect_err("over the burst");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // 50 ms later, half a token: still refused, and the wait is what is left.
        let wait = b.take(1.0, t0 + ms(50)).expect_err("half a token");
        assert!((wait.as_secs_f64() - 0.05).abs() < 1e-9, "{wait:?}");
        assert_eq!(b.take(1.0, t0 + ms(100)), Ok(()));
        assert!(b.take(1.0, t0 + ms(100)).is_err());
    }

    #[test]
    fn a_refused_take_takes_nothing() {
        let t0 = Instant::now();
        let mut b = Bucket::full(TEN_PER_S_BURST_3, t0);
        for _ in 0..3 {
            b.take(1.0, t0).expect("burst");
        }
        for _ in 0..100 {
            assert!(b.take(1.0, t0 + ms(10)).is_err());
        }
        // Refused requests did not push the next token further away.
        assert_eq!(b.take(1.0, t0 + ms(100)), Ok(()));
    }

    #[test]
    fn the_refill_stops_at_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::full(TEN_PER_S_BURST_3, t0);
        b.take(1.0, t0).expect("one");
        assert!(!b.is_full(t0));
        assert!(b.is_full(t0 + ms(100)));
        // An hour idle is still only the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.level(later), 3.0);
        for _ in 0..3 {
            b.take(1.0, later).expect("burst");
        }
        assert!(b.take(1.0, later).is_err());
    }

    #[test]
    fn a_charge_may_run_into_debt_and_the_debt_is_paid_back() {
        let t0 = Instant::now();
        let mut b = Bucket::full(
            Limit {
                rate: 1000.0,
                burst: 2000.0,
            },
            t0,
        );
        assert_eq!(b.clear(t0), Ok(()));
        b.charge(5000.0, t0);
        // 3000 in debt: 3 s at 1000/s.
        let wait = b.clear(t0).expect_err("in debt");
        assert!((wait.as_secs_f64() - 3.0).abs() < 1e-9, "{wait:?}");
        assert!(b.clear(t0 + ms(2999)).is_err());
        assert_eq!(b.clear(t0 + ms(3000)), Ok(()));
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now();
        let t1 = t0 + ms(1000);
        let mut b = Bucket::full(TEN_PER_S_BURST_3, t1);
        for _ in 0..3 {
            b.take(1.0, t1).expect("burst");
        }
        // Another thread's earlier `now`.
        assert!(b.take(1.0, t0).is_err());
        assert!(b.take(1.0, t1 + ms(50)).is_err());
        assert_eq!(b.take(1.0, t1 + ms(100)), Ok(()));
    }

    #[test]
    fn relimit_keeps_the_level_cut_to_the_new_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::full(
            Limit {
                rate: 1.0,
                burst: 100.0,
            },
            t0,
        );
        for _ in 0..40 {
            b.take(1.0, t0).expect("burst");
        }
        // 60 left; a smaller burst cuts it, a larger one does not add to it.
        b.relimit(
            Limit {
                rate: 1.0,
                burst: 10.0,
            },
            t0,
        );
        assert_eq!(b.level(t0), 10.0);
        b.relimit(
            Limit {
                rate: 1.0,
                burst: 1000.0,
            },
            t0,
        );
        assert_eq!(b.level(t0), 10.0);
        // The new rate applies from now on.
        b.relimit(
            Limit {
                rate: 100.0,
                burst: 1000.0,
            },
            t0,
        );
        assert_eq!(b.level(t0 + ms(1000)), 110.0);
    }

    #[test]
    fn waits_are_bounded() {
        let tiny = Limit {
            rate: 1e-300,
            burst: 1.0,
        };
        assert_eq!(tiny.time_for(1e300), MAX_WAIT);
        assert_eq!(tiny.time_for(0.0), Duration::ZERO);
        assert_eq!(tiny.time_for(-1.0), Duration::ZERO);
    }
}
