//! The process's file-descriptor budget: client connections may not take the last descriptors,
//! which the gateway needs for its own files (cache objects, the ledger, the audit log, git
//! mirrors), its upstream connections, and operator listeners (`/healthz`, `/metrics`).
//!
//! At start the soft `RLIMIT_NOFILE` is raised to the hard limit ([`raise_nofile`]). A
//! [`Budget`] then sets aside a reserve (10 % of the limit, at least 64): an accepted client
//! connection whose descriptor lies in the reserve is closed at once, and one on an operator
//! listener (`admin: true` or `metrics: true`) only in the upper half of the reserve. The
//! kernel gives an accepted socket the lowest free descriptor, so a descriptor number `n`
//! proves at least `n` descriptors are open; [`Budget::open_estimate`] also counts
//! `/proc/self/fd` now and then, which catches a table with holes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which part of the descriptor table a listener may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Client traffic: everything below the reserve.
    Client,
    /// Operator listeners: the lower half of the reserve too.
    Operator,
}

/// The descriptor limit and the reserve kept from client connections.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    reserve: u64,
    /// The last count of open descriptors (0: never counted).
    counted: AtomicU64,
    /// When it was counted, in milliseconds since `epoch`.
    counted_at: AtomicU64,
    epoch: Instant,
}

/// How often the open descriptors are counted, at most.
const RECOUNT: Duration = Duration::from_millis(500);

impl Budget {
    /// The budget for a process allowed `limit` descriptors.
    pub fn new(limit: u64) -> Budget {
        let reserve = (limit / 10).max(64).min(limit / 2);
        Budget {
            limit,
            reserve,
            counted: AtomicU64::new(0),
            counted_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The descriptor limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Descriptors kept from client listeners.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// The highest descriptor count a new connection of `class` may bring the process to.
    pub fn ceiling(&self, class: Class) -> u64 {
        match class {
            Class::Client => self.limit - self.reserve,
            Class::Operator => self.limit - self.reserve / 2,
        }
    }

    /// Whether a connection just accepted as descriptor `fd`, with about `open` descriptors
    /// open, must be closed at once on a listener of `class`.
    pub fn refuses(&self, fd: u64, open: u64, class: Class) -> bool {
        fd.max(open) >= self.ceiling(class)
    }

    /// The open descriptors, counted at most every [`RECOUNT`] (the last count in between).
    pub fn open_estimate(&self) -> u64 {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let at = self.counted_at.load(Ordering::Relaxed);
        let last = self.counted.load(Ordering::Relaxed);
        let stale = last == 0 || now.saturating_sub(at) >= RECOUNT.as_millis() as u64;
        if stale
            && self
                .counted_at
                .compare_exchange(at, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if let Some(n) = count_open() {
                self.counted.store(n, Ordering::Relaxed);
                return n;
            }
        }
        last
    }
}

/// The open descriptors of this process (`/proc/self/fd`), when it can be read.
fn count_open() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory's own descriptor is listed too.
    Some((dir.count() as u64).saturating_sub(1))
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// The process's budget (set at start by [`init`]; unlimited before).
pub fn budget() -> Option<&'static Budget> {
    BUDGET.get()
}

/// Raises the soft descriptor limit to the hard one and sets the process's budget from it.
/// Returns the limit in force.
pub fn init() -> u64 {
    let limit = match raise_nofile() {
        Ok(n) => n,
        Err(e) => {
            log::warn!("cannot raise the open-files limit: {e}");
            current_nofile().unwrap_or(1024)
        }
    };
    let _ = BUDGET.set(Budget::new(limit));
    limit
}

fn current_nofile() -> Option<u64> {
    Some(
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(libc::RLIM_INFINITY),
    )
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> std::io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    // rustix spells RLIM_INFINITY `None`; as a number it is the largest limit.
    let value = |l: Option<u64>| l.unwrap_or(libc::RLIM_INFINITY);
    let mut lim = getrlimit(Resource::Nofile);
    if value(lim.current) < value(lim.maximum) {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
        lim = raised;
    }
    Ok(value(lim.current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_tenth_but_at_least_64_and_at_most_half() {
        assert_eq!(Budget::new(65536).reserve(), 6553);
        assert_eq!(Budget::new(300).reserve(), 64);
        assert_eq!(Budget::new(100).reserve(), 50);
    }

    #[test]
    fn client_connections_stop_below_the_reserve_operators_half_way_into_it() {
        let b = Budget::new(300);
        assert_eq!(b.ceiling(Class::Client), 236);
        assert_eq!(b.ceiling(Class::Operator), 268);
        assert!(!b.refuses(235, 10, Class::Client));
        assert!(b.refuses(236, 10, Class::Client));
        assert!(!b.refuses(236, 10, Class::Operator));
        assert!(b.refuses(268, 10, Class::Operator));
        // A low descriptor in a table with holes: the count decides.
        assert!(b.refuses(12, 250, Class::Client));
        assert!(!b.refuses(12, 250, Class::Operator));
    }

    #[test]
    fn the_open_count_is_read_from_proc() {
        let b = Budget::new(1 << 20);
        let n = b.open_estimate();
        assert!(n >= 3, "stdin, stdout, stderr at least: {n}");
    }
}
