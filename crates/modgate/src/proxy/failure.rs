//! Failures: connect errors and errors while proxying (next step, retry on the same step, or
//! give up), the client's answer when nothing could be proxied, and the classes of Pingora's
//! errors (timeouts, the cache's own failures).

use pingora::proxy::{FailToProxy, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use super::chain::{Failure, FailureClass, Outcome};
use super::{GatewayProxy, RequestCtx};
use crate::respond;
use crate::server::shutdown;

/// The error type that tells the retry loop to move to the next chain step.
pub(super) const FALLTHROUGH: ErrorType = ErrorType::Custom("modgate: next chain step");

impl GatewayProxy {
    /// `fail_to_connect`.
    pub(super) fn connect_failed(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let moved = self.settle(ctx, failure(&e));
        e.set_retry(moved);
        e
    }

    /// `error_while_proxy`.
    pub(super) fn proxy_failed(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if *e.etype() == FALLTHROUGH {
            // The step was settled (and advanced) in upstream_response_filter.
            let mut e = e;
            e.set_retry(true);
            return e;
        }
        if let Some(cause) = cache_failure(&e) {
            // The cache failed while the answer streamed through it: the upstream answered,
            // and is neither blamed nor asked again.
            ctx.not_stored = Some(format!(
                "the cache failed while storing the answer: {cause}"
            ));
            let mut e = e;
            e.set_retry(false);
            return e;
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if session.response_written().is_some() {
            // Part of the answer is already on its way to the client: nothing can be retried.
            e.set_retry(false);
            return e;
        }
        let idempotent = session.req_header().method.is_idempotent();
        if matches!(e.etype(), ErrorType::HTTPStatus(_)) {
            e.set_retry(false);
            return e;
        }
        // A pooled connection that turned out dead: try the same step once more.
        e.retry.decide_reuse(client_reused);
        if idempotent && e.retry() {
            ctx.cursor.retry_same();
            return e;
        }
        let moved = self.settle(ctx, failure(&e)) && idempotent;
        e.set_retry(moved);
        e
    }

    /// `fail_to_proxy`: the client told why nothing could be proxied.
    pub(super) async fn answer_failure(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        // An answer given here during a drain closes its connection, as every other does.
        if shutdown::draining() {
            session.set_keepalive(None);
        }
        if session.response_written().is_some() {
            // The answer had begun: the client was told a status, then the transfer failed.
            let by = match e.esource() {
                ErrorSource::Downstream => "by the client",
                ErrorSource::Upstream => "by the upstream",
                _ => "by the gateway",
            };
            ctx.record.cut = Some(format!("{by} ({})", short_error(e)));
        }
        if *e.esource() == ErrorSource::Downstream {
            let code = match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            };
            if code > 0 && session.response_written().is_none() {
                let _ = respond::text(session, code, "malformed request", &[]).await;
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        // The cache's doing, not the upstream's: its filesystem failed while storing the
        // answer, or could not hold it to be checked (the verifying origin). Said as a 503
        // (when nothing was sent yet), and as the audit record's reason.
        let cache_503 = match cache_failure(e) {
            Some(cause) => Some(format!(
                "{}: the gateway's cache failed while storing the answer ({cause}); try again",
                ctx.what()
            )),
            None => ctx.unavailable.clone(),
        };
        if let Some(message) = cache_503 {
            ctx.not_stored.get_or_insert_with(|| message.clone());
            if session.response_written().is_none() {
                if let Err(err) = respond::text(session, 503, &message, &[]).await {
                    log::debug!("could not send error response: {err}");
                }
            }
            return FailToProxy {
                error_code: 503,
                can_reuse_downstream: false,
            };
        }
        let timed_out = ctx.cursor.timed_out(is_timeout(e));
        let code = if timed_out { 504 } else { 502 };
        // Client-facing: the upstream's name and the outcome class; addresses and the full
        // error go to the log line and the audit record only.
        let message = match (ctx.guard.refusal(), ctx.cursor.public_summary(timed_out)) {
            (Some(refusal), _) => refusal.to_string(),
            (None, Some(tried)) => format!("{}: upstream {tried}", ctx.what()),
            (None, None) => format!(
                "{}: no upstream could be asked ({})",
                ctx.what(),
                e.etype().as_str()
            ),
        };
        if session.response_written().is_none() {
            if let Err(err) = respond::text(session, code, &message, &[]).await {
                log::debug!("could not send error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

pub(super) fn short_error(e: &Error) -> String {
    match &e.context {
        Some(c) => format!("{}: {}", e.etype().as_str(), c.as_str()),
        None => e.etype().as_str().to_string(),
    }
}

/// The cache's own failure (its filesystem full or failing) behind a Pingora error, if that is
/// what it is: never the upstream's.
pub(super) fn cache_failure(e: &Error) -> Option<&modgate_cache::CacheError> {
    let mut e = e;
    // Pingora may wrap the storage's error in another of its own (a few levels at most).
    // A cause is kept as given: the error itself, or boxed.
    for _ in 0..8 {
        let cause = e.cause.as_deref()?;
        let found = cause
            .downcast_ref::<modgate_cache::CacheError>()
            .or_else(|| {
                cause
                    .downcast_ref::<Box<modgate_cache::CacheError>>()
                    .map(|b| &**b)
            });
        if let Some(c) = found {
            return c.is_storage_failure().then_some(c);
        }
        e = cause
            .downcast_ref::<Error>()
            .or_else(|| cause.downcast_ref::<Box<Error>>().map(|b| &**b))?;
    }
    None
}

/// The outcome of an attempt that failed with `e`: a timeout, or a failure of its class.
fn failure(e: &Error) -> Outcome {
    if is_timeout(e) {
        Outcome::Timeout(short_error(e))
    } else {
        Outcome::Failed(Failure::new(FailureClass::of(e.etype()), short_error(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modgate_cache::CacheError;

    fn no_space() -> CacheError {
        CacheError::NoSpace {
            path: "/var/cache/modgate/objects".into(),
            needed: 10,
            available: 1,
        }
    }

    #[test]
    fn the_cache_s_own_failure_is_found_behind_pingora_s_errors() {
        let direct = Error::because(ErrorType::InternalError, "modgate-cache", no_space());
        assert!(cache_failure(&direct).is_some_and(|c| c.is_no_space()));
        let wrapped = Error::because(ErrorType::InternalError, "while caching", direct);
        assert!(cache_failure(&wrapped).is_some_and(|c| c.is_no_space()));
        // the object's fault, or no cache at all: not the cache failing
        let too_large = Error::because(
            ErrorType::InternalError,
            "modgate-cache",
            CacheError::TooLarge { size: 2, limit: 1 },
        );
        assert!(cache_failure(&too_large).is_none());
        let upstream = Error::explain(ErrorType::ConnectRefused, "upstream down");
        assert!(cache_failure(&upstream).is_none());
    }
}
