//! A hook for the embedding process's metrics: told of every mirror refresh that went to the
//! host (how long it took, whether it worked). Kept apart from the transport so that the
//! transport only marks where a refresh starts and succeeds.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Told of each refresh that asked the host: its duration and whether it succeeded.
pub type RefreshObserver = fn(Duration, bool);

static OBSERVER: OnceLock<RefreshObserver> = OnceLock::new();

/// Sets the process's refresh observer (the first call wins; later ones are ignored).
pub fn observe_refreshes(observer: RefreshObserver) {
    let _ = OBSERVER.set(observer);
}

/// One refresh in progress: reported when dropped, as a failure unless [`Timing::succeeded`]
/// was called (so every early return on an error counts).
pub(crate) struct Timing {
    start: Instant,
    ok: bool,
}

impl Timing {
    pub(crate) fn start() -> Timing {
        Timing {
            start: Instant::now(),
            ok: false,
        }
    }

    pub(crate) fn succeeded(&mut self) {
        self.ok = true;
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        if let Some(observe) = OBSERVER.get() {
            observe(self.start.elapsed(), self.ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static OK: AtomicU64 = AtomicU64::new(0);
    static FAILED: AtomicU64 = AtomicU64::new(0);

    fn count(_: Duration, ok: bool) {
        if ok { &OK } else { &FAILED }.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn a_refresh_counts_as_failed_unless_it_says_it_succeeded() {
        observe_refreshes(count);
        let mut t = Timing::start();
        t.succeeded();
        drop(t);
        drop(Timing::start());
        assert_eq!(OK.load(Ordering::SeqCst), 1);
        assert_eq!(FAILED.load(Ordering::SeqCst), 1);
    }
}
