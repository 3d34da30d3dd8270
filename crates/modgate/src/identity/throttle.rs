//! The bounds on password-hash checks, process-wide: how many run at once, per-source and
//! per-user admission with the failure rate limit, and how long a request waits for its turn.
//! The bounds stay process-wide statics (one per listener or per model would let a second
//! listener or a reload reset a failure count); what they refuse is counted on the listener's
//! [`IdentityMetrics`], which the caller hands in.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use modgate_identity::credentials::Presented;
use modgate_identity::{Authenticated, CheckLimiter, CheckLimits, Refused, Scope};

use super::{IdentityError, IdentityMetrics};

/// Password hashes computed at once (each a bcrypt/argon2 verification on the blocking pool).
static VERIFY_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Per-source and per-user admission of password hashes, and the failure rate limit.
static LIMITER: LazyLock<CheckLimiter> =
    LazyLock::new(|| CheckLimiter::new(CheckLimits::default()));

/// Longest a request waits for its turn to have a password hashed.
const CHECK_WAIT: Duration = Duration::from_secs(5);

/// Releases an admitted password check, also when the request is dropped mid-check.
struct Running {
    ticket: Option<modgate_identity::Ticket>,
    failed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            LIMITER.finish(t, self.failed, Instant::now());
        }
    }
}

/// A check that needs a password hash: admitted per source and per user name (waiting up to
/// [`CHECK_WAIT`] for a slot, refused at once when that source or name has failed too often),
/// then run on the blocking pool under the global bound.
pub(super) async fn expensive_check(
    authenticator: Arc<modgate_identity::Authenticator>,
    presented: Presented,
    source: Option<IpAddr>,
    metrics: &IdentityMetrics,
) -> Result<Authenticated, IdentityError> {
    let user = match &presented {
        Presented::Basic { user, .. } => user.clone(),
        Presented::Bearer { .. } => String::new(),
    };
    let deadline = Instant::now() + CHECK_WAIT;
    let mut running = loop {
        match LIMITER.admit(source, &user, Instant::now()) {
            Ok(t) => {
                break Running {
                    ticket: Some(t),
                    failed: false,
                }
            }
            Err(Refused::Throttled { scope, retry_after }) => {
                metrics.throttled(scope);
                return Err(IdentityError::Throttled { scope, retry_after });
            }
            Err(Refused::Busy(scope)) => {
                if Instant::now() >= deadline {
                    metrics.busy(scope);
                    return Err(IdentityError::Busy);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let _permit = match tokio::time::timeout(remaining, VERIFY_PERMITS.acquire()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => {
            return Err(IdentityError::Malformed(
                "credential checks are shut down".into(),
            ))
        }
        Err(_) => {
            metrics.busy(Scope::Source);
            return Err(IdentityError::Busy);
        }
    };
    let result = tokio::task::spawn_blocking(move || authenticator.verify(&presented))
        .await
        .map_err(|e| IdentityError::Malformed(format!("credential check failed: {e}")))?;
    running.failed = result.is_err();
    result.map_err(IdentityError::BadCredentials)
}
