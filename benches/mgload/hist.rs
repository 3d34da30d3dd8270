//! Latency histogram of mgload: log-linear buckets over nanoseconds (exact below 128 ns, then
//! 128 buckets per power of two, so any reported value is within 1/128 of a recorded one),
//! mergeable across connections, with nearest-rank percentiles.

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 7;
/// Sub-buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// Largest exponent kept: values from 2^41 ns (about 37 minutes) up share the last bucket.
const MAX_EXP: u32 = 40;
/// Number of buckets.
const BUCKETS: usize = (SUB + (MAX_EXP - SUB_BITS + 1) as u64 * SUB) as usize;

/// Counts of recorded values (nanoseconds), with their exact minimum, maximum and sum.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// The bucket a value falls in.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = (63 - v.leading_zeros()).min(MAX_EXP);
    if exp == MAX_EXP && v >> MAX_EXP > 1 {
        return BUCKETS - 1;
    }
    let shift = exp - SUB_BITS;
    let sub = (v >> shift) - SUB;
    (SUB + u64::from(exp - SUB_BITS) * SUB + sub) as usize
}

/// The largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let exp = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    let shift = exp - u64::from(SUB_BITS);
    ((SUB + sub + 1) << shift) - 1
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            n: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value (nanoseconds).
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Smallest value recorded (None when empty).
    pub fn min(&self) -> Option<u64> {
        (self.n > 0).then_some(self.min)
    }

    /// Largest value recorded (None when empty).
    pub fn max(&self) -> Option<u64> {
        (self.n > 0).then_some(self.max)
    }

    /// Mean of the values recorded (None when empty).
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    /// Nearest-rank percentile `p` (0 < p <= 100): the smallest recorded value such that at
    /// least p % of the values are at most it, to within its bucket (reported as the bucket's
    /// upper end, never above the maximum). None when empty or p is out of range.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.n == 0 || !(p > 0.0 && p <= 100.0) {
            return None;
        }
        let rank = ((p / 100.0) * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        // Every bucket's upper end maps back to it, and the next value to the next bucket.
        for i in 0..BUCKETS - 1 {
            let u = upper(i);
            assert_eq!(index(u), i, "upper({i}) = {u}");
            assert_eq!(index(u + 1), i + 1, "upper({i}) + 1 = {}", u + 1);
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(index(1 << 50), BUCKETS - 1);
    }

    #[test]
    fn small_values_are_exact_nearest_rank() {
        let mut h = Histogram::new();
        for v in (1..=100).rev() {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(90.0), Some(90));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(99.5), Some(100));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(0.001), Some(1));
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.max(), Some(100));
        assert_eq!(h.mean(), Some(50.5));
    }

    #[test]
    fn large_values_within_one_bucket() {
        // 1,000 values from 1 ms to 1 s: each percentile within 1/128 of the exact one, and
        // never below it (the bucket's upper end).
        let mut h = Histogram::new();
        let vals: Vec<u64> = (1..=1000).map(|k| k * 1_000_000).collect();
        for &v in vals.iter().rev() {
            h.record(v);
        }
        for (p, exact) in [(50.0, 500), (90.0, 900), (99.0, 990), (99.9, 999)] {
            let exact = exact * 1_000_000u64;
            let got = h.percentile(p).unwrap_or(0);
            assert!(got >= exact, "p{p}: {got} < {exact}");
            assert!(
                (got - exact) as f64 <= exact as f64 / 128.0,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.percentile(100.0), Some(1_000_000_000), "the max, exactly");
    }

    #[test]
    fn skewed_distribution_tail() {
        // 990 fast answers and 10 slow ones: p99 is still fast, p99.1 is slow.
        let mut h = Histogram::new();
        for _ in 0..990 {
            h.record(200_000);
        }
        for _ in 0..10 {
            h.record(50_000_000);
        }
        let p99 = h.percentile(99.0).unwrap_or(0);
        assert!((200_000..=201_600).contains(&p99), "{p99}");
        let p991 = h.percentile(99.1).unwrap_or(0);
        assert_eq!(p991, 50_000_000, "clamped to the max");
    }

    #[test]
    fn empty_and_out_of_range() {
        let h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.min(), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.mean(), None);
        let mut h = Histogram::new();
        h.record(5);
        assert_eq!(h.percentile(0.0), None);
        assert_eq!(h.percentile(100.1), None);
        assert_eq!(h.percentile(f64::NAN), None);
        assert_eq!(h.percentile(50.0), Some(5));
    }

    #[test]
    fn merge_adds_counts_and_extremes() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in 1..=50 {
            a.record(v);
        }
        for v in 51..=100 {
            b.record(v);
        }
        a.merge(&b);
        a.merge(&Histogram::new());
        assert_eq!(a.count(), 100);
        assert_eq!(a.percentile(50.0), Some(50));
        assert_eq!(a.percentile(75.0), Some(75));
        assert_eq!(a.min(), Some(1));
        assert_eq!(a.max(), Some(100));
    }
}
