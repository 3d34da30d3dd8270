//! What the connections saw, counted per connection (or per HTTP/2 stream worker) and summed
//! at the end: requests started and how each ended (an answer with its status, a failure of
//! the connection, a bad answer, a timeout), latency of the answers, bytes read, connection
//! attempts, and the error messages with their counts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::hist::Histogram;

/// Distinct error messages kept; the rest are counted under [`OTHER_ERRORS`].
const MAX_ERROR_KINDS: usize = 16;
/// Where errors go once [`MAX_ERROR_KINDS`] messages are kept.
pub const OTHER_ERRORS: &str = "(other errors)";
/// Longest error message kept (characters).
const MAX_ERROR_LEN: usize = 160;

/// Counters of one connection, one stream worker, or the whole run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests sent (or about to be).
    pub started: u64,
    /// Answers received in full, any status.
    pub responses: u64,
    /// Answers with a 2xx status.
    pub succeeded: u64,
    /// Requests lost with their connection, and connection attempts that failed.
    pub failed: u64,
    /// Answers that were not valid HTTP, or streams the server reset.
    pub errored: u64,
    /// Requests not answered within the timeout.
    pub timeout: u64,
    /// Answers by status code.
    pub status: BTreeMap<u16, u64>,
    /// Connections made (TCP, TLS and, for HTTP/2, its handshake).
    pub connects: u64,
    /// Connection attempts that failed (also counted in `failed`).
    pub connect_errors: u64,
    /// Bytes read from the TLS streams (decrypted: HTTP framing, headers and bodies).
    pub bytes: u64,
    /// Error messages and how often each occurred.
    pub errors: BTreeMap<String, u64>,
    /// Time from sending a request to the end of its answer, nanoseconds, answers only.
    pub latency: Histogram,
    /// When the last request ended (in any way).
    pub last_end: Option<Instant>,
}

impl Stats {
    /// Requests that ended, in any way, plus failed connection attempts.
    pub fn done(&self) -> u64 {
        self.responses + self.failed + self.errored + self.timeout
    }

    /// Requests tried in all: started ones plus failed connection attempts.
    pub fn total(&self) -> u64 {
        self.started + self.connect_errors
    }

    /// Answers whose status is in `lo..=hi`.
    pub fn status_range(&self, lo: u16, hi: u16) -> u64 {
        self.status.range(lo..=hi).map(|(_, n)| n).sum()
    }

    fn ended(&mut self) {
        let now = Instant::now();
        self.last_end = Some(self.last_end.map_or(now, |t| t.max(now)));
    }

    /// A complete answer with this status, `elapsed` after its request was sent.
    pub fn response(&mut self, status: u16, elapsed: Duration) {
        self.responses += 1;
        if (200..300).contains(&status) {
            self.succeeded += 1;
        }
        *self.status.entry(status).or_insert(0) += 1;
        self.latency
            .record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        self.ended();
    }

    /// A request lost with its connection.
    pub fn failed(&mut self, why: &str) {
        self.failed += 1;
        self.error(why);
        self.ended();
    }

    /// A bad answer or a reset stream.
    pub fn errored(&mut self, why: &str) {
        self.errored += 1;
        self.error(why);
        self.ended();
    }

    /// A request not answered in time.
    pub fn timed_out(&mut self) {
        self.timeout += 1;
        self.error("request timed out");
        self.ended();
    }

    /// A connection attempt that failed.
    pub fn connect_failed(&mut self, why: &str) {
        self.connect_errors += 1;
        self.failed += 1;
        self.error(why);
    }

    /// Counts one occurrence of an error message.
    pub fn error(&mut self, why: &str) {
        self.error_n(why, 1);
    }

    fn error_n(&mut self, why: &str, n: u64) {
        let why: String = why.chars().take(MAX_ERROR_LEN).collect();
        if let Some(c) = self.errors.get_mut(&why) {
            *c += n;
            return;
        }
        let kinds = self.errors.len() - usize::from(self.errors.contains_key(OTHER_ERRORS));
        let key = if kinds < MAX_ERROR_KINDS && why != OTHER_ERRORS {
            why
        } else {
            OTHER_ERRORS.to_string()
        };
        *self.errors.entry(key).or_insert(0) += n;
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Stats) {
        self.started += other.started;
        self.responses += other.responses;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.errored += other.errored;
        self.timeout += other.timeout;
        for (s, n) in &other.status {
            *self.status.entry(*s).or_insert(0) += n;
        }
        self.connects += other.connects;
        self.connect_errors += other.connect_errors;
        self.bytes += other.bytes;
        for (why, n) in &other.errors {
            self.error_n(why, *n);
        }
        self.latency.merge(&other.latency);
        self.last_end = match (self.last_end, other.last_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_once_each() {
        let mut s = Stats {
            started: 5,
            ..Stats::default()
        };
        s.response(200, Duration::from_micros(100));
        s.response(404, Duration::from_micros(300));
        s.failed("connection reset");
        s.errored("bad status line");
        s.timed_out();
        s.connect_failed("connect: refused");
        assert_eq!(s.done(), 6);
        assert_eq!(s.total(), 6);
        assert_eq!(s.succeeded, 1);
        assert_eq!(s.status_range(400, 499), 1);
        assert_eq!(s.latency.count(), 2);
        assert_eq!(s.errors.len(), 4);
    }

    #[test]
    fn merge_sums_and_keeps_error_counts() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.response(200, Duration::from_micros(1));
        a.failed("x");
        for _ in 0..3 {
            b.failed("x");
            b.failed("y");
        }
        b.response(503, Duration::from_micros(2));
        a.merge(&b);
        assert_eq!(a.responses, 2);
        assert_eq!(a.failed, 7);
        assert_eq!(a.errors.get("x"), Some(&4));
        assert_eq!(a.errors.get("y"), Some(&3));
        assert_eq!(a.status_range(500, 599), 1);
        assert_eq!(a.latency.count(), 2);
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut s = Stats::default();
        for i in 0..40 {
            s.error(&format!("error {i}"));
        }
        s.error(&"long ".repeat(100));
        assert_eq!(s.errors.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(s.errors.get(OTHER_ERRORS), Some(&25));
        let mut t = Stats::default();
        t.merge(&s);
        assert_eq!(t.errors.values().sum::<u64>(), 41);
    }
}
