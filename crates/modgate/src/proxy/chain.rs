//! The chain cursor: which step of a route's upstream chain (or which checksum database) a
//! request is at, what each attempt came to, when a failure moves on to the next step, and
//! how the attempts are told to the client, the access log and the audit record. Pure state;
//! the proxy phases drive it.

use std::sync::Arc;

use pingora::ErrorType;

use crate::upstream::{Chain, Upstream};

/// What happened at one chain step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status and the answer is being used.
    Answered(u16),
    /// 404 or 410.
    NotFound(u16),
    /// Another error status.
    Status(u16),
    /// Timed out connecting, reading or writing.
    Timeout(String),
    /// Could not connect or the connection failed.
    Failed(Failure),
}

/// An attempt that could not connect, or whose connection failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    /// What a client is told.
    pub class: FailureClass,
    /// The error in full (addresses included), for the log and the audit record.
    pub detail: String,
}

impl Failure {
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Failure {
        Failure {
            class,
            detail: detail.into(),
        }
    }
}

/// The kinds of failure a client is told apart, from Pingora's [`ErrorType`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureClass {
    /// The connection was refused.
    Refused,
    /// The TLS handshake failed (or timed out).
    Tls,
    /// The connection was closed.
    Closed,
    /// Anything else.
    #[default]
    Other,
}

impl FailureClass {
    /// The class of a Pingora error type.
    pub fn of(etype: &ErrorType) -> FailureClass {
        match etype {
            ErrorType::ConnectRefused => FailureClass::Refused,
            ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::TLSWantX509Lookup => FailureClass::Tls,
            ErrorType::ConnectionClosed => FailureClass::Closed,
            _ => FailureClass::Other,
        }
    }
}

impl Outcome {
    /// The upstream's answer `status`, judged: an exact version is accepted only as a 200
    /// (whose bytes the ledger checks): any other 2xx or a redirect would carry bytes, or send
    /// the client to bytes, the ledger never saw.
    pub fn of_status(status: u16, exact: bool) -> Outcome {
        match status {
            404 | 410 => Outcome::NotFound(status),
            200 => Outcome::Answered(status),
            _ if exact => Outcome::Status(status),
            100..=399 => Outcome::Answered(status),
            _ => Outcome::Status(status),
        }
    }

    /// The `outcome` label of `modgate_upstream_attempts_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Answered(_) => "answered",
            Outcome::NotFound(_) => "not_found",
            Outcome::Status(_) => "error_status",
            Outcome::Timeout(_) => "timeout",
            Outcome::Failed(_) => "failed",
        }
    }

    /// Every `outcome` label of `modgate_upstream_attempts_total` (`match` without a wildcard:
    /// a new variant fails to compile until it is listed).
    pub fn labels() -> Vec<&'static str> {
        let _every = |o: &Outcome| match o {
            Outcome::Answered(_)
            | Outcome::NotFound(_)
            | Outcome::Status(_)
            | Outcome::Timeout(_)
            | Outcome::Failed(_) => (),
        };
        [
            Outcome::Answered(200),
            Outcome::NotFound(404),
            Outcome::Status(500),
            Outcome::Timeout(String::new()),
            Outcome::Failed(Default::default()),
        ]
        .iter()
        .map(Outcome::label)
        .collect()
    }

    /// What a client is told: the outcome class, never an address, port, scheme or SNI.
    pub fn public(&self) -> String {
        match self {
            Outcome::Timeout(_) => "timed out".to_string(),
            Outcome::Failed(f) => match f.class {
                FailureClass::Refused => "failed: connection refused",
                FailureClass::Tls => "failed: TLS handshake",
                FailureClass::Closed => "failed: connection closed",
                FailureClass::Other => "failed",
            }
            .to_string(),
            other => other.describe(),
        }
    }

    /// The full description, for the server's log and the audit record.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered(s) => format!("answered {s}"),
            Outcome::NotFound(s) => format!("not found ({s})"),
            Outcome::Status(s) => {
                let reason = http::StatusCode::from_u16(*s)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("");
                format!("answered {s} {reason}").trim_end().to_string()
            }
            Outcome::Timeout(e) => format!("timed out ({e})"),
            Outcome::Failed(f) => format!("failed ({})", f.detail),
        }
    }
}

/// One try of one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub upstream: String,
    pub outcome: Option<Outcome>,
}

/// Where a request is along its chain.
#[derive(Debug, Default)]
pub struct Cursor {
    /// The one upstream of a request that has no chain (a checksum database, a Git host).
    single: Option<Arc<Upstream>>,
    step: usize,
    attempts: Vec<Attempt>,
}

impl Cursor {
    /// The cursor of a request with one upstream and no chain.
    pub fn single(upstream: Arc<Upstream>) -> Cursor {
        Cursor {
            single: Some(upstream),
            ..Cursor::default()
        }
    }

    /// The upstream of the current step.
    pub fn current(&self, chain: Option<&Chain>) -> Option<Arc<Upstream>> {
        if let Some(u) = &self.single {
            return Some(u.clone());
        }
        chain
            .and_then(|c| c.steps.get(self.step))
            .map(|s| s.upstream.clone())
    }

    /// Starts an attempt at `upstream`.
    pub fn begin(&mut self, upstream: &str) {
        self.attempts.push(Attempt {
            upstream: upstream.to_string(),
            outcome: None,
        });
    }

    /// Records the outcome of the attempt at the current step and, if it is a failure the
    /// chain lets pass, moves to the next step. Returns whether it moved.
    pub fn settle(&mut self, chain: Option<&Chain>, outcome: Outcome) -> bool {
        let not_found = matches!(outcome, Outcome::NotFound(_));
        let failed = !matches!(outcome, Outcome::Answered(_));
        if let Some(a) = self.attempts.last_mut() {
            a.outcome = Some(outcome);
        }
        let moves = failed && chain.is_some_and(|c| c.falls_through(self.step, not_found));
        if moves {
            self.step += 1;
        }
        moves
    }

    /// A pooled connection turned out dead: the same step is tried once more.
    pub fn retry_same(&mut self) {
        if let Some(a) = self.attempts.last_mut() {
            a.outcome = Some(Outcome::Failed(Failure::new(
                FailureClass::Other,
                "reused connection closed",
            )));
        }
    }

    /// Whether an error at the current step would move on (so a stale answer must wait).
    pub fn has_next(&self, chain: Option<&Chain>) -> bool {
        chain.is_some_and(|c| c.falls_through(self.step, false))
    }

    /// The upstream of the latest attempt.
    pub fn last_upstream(&self) -> Option<&str> {
        self.attempts.last().map(|a| a.upstream.as_str())
    }

    /// The last attempt's outcome.
    pub fn last_outcome(&self) -> Option<&Outcome> {
        self.attempts.last().and_then(|a| a.outcome.as_ref())
    }

    /// Whether the request ended on a timeout; `unsettled` is what an attempt cut short
    /// before it was settled counts as.
    pub fn timed_out(&self, unsettled: bool) -> bool {
        self.last_outcome()
            .map_or(unsettled, |o| matches!(o, Outcome::Timeout(_)))
    }

    /// The upstream whose answer the client got (answered or not found), else the last tried.
    pub fn answering(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .rev()
            .find(|a| {
                matches!(
                    a.outcome,
                    Some(Outcome::Answered(_)) | Some(Outcome::NotFound(_))
                )
            })
            .or(self.attempts.last())
    }

    /// The attempts as the client is told them: `upstream outcome; then …`.
    pub fn public_summary(&self, timed_out: bool) -> Option<String> {
        if self.attempts.is_empty() {
            return None;
        }
        let tried: Vec<String> = self
            .attempts
            .iter()
            .map(|a| {
                let outcome = match &a.outcome {
                    Some(o) => o.public(),
                    None if timed_out => "timed out".to_string(),
                    None => "failed".to_string(),
                };
                format!("{} {}", a.upstream, outcome)
            })
            .collect();
        Some(tried.join("; then "))
    }

    /// The attempts for the access log: `upstream:label,…`.
    pub fn log_summary(&self) -> String {
        let tried: Vec<String> = self
            .attempts
            .iter()
            .map(|a| match &a.outcome {
                Some(o) => format!("{}:{}", a.upstream, o.label()),
                None => a.upstream.clone(),
            })
            .collect();
        tried.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::RouteCache;
    use crate::upstream::test_upstream as upstream;
    use crate::upstream::{Fallthrough, Step};

    fn chain(steps: &[(&str, Fallthrough)]) -> Chain {
        Chain::new(
            steps
                .iter()
                .map(|(n, on)| Step {
                    upstream: upstream(n),
                    on: *on,
                })
                .collect(),
            RouteCache::default(),
        )
    }

    fn name(c: &Cursor, chain: &Chain) -> String {
        c.current(Some(chain))
            .map(|u| u.name.clone())
            .unwrap_or_default()
    }

    #[test]
    fn not_found_moves_on_errors_only_from_any_error_steps() {
        let ch = chain(&[
            ("a", Fallthrough::NotFound),
            ("b", Fallthrough::AnyError),
            ("c", Fallthrough::NotFound),
        ]);
        let mut c = Cursor::default();
        c.begin("a");
        assert!(c.settle(Some(&ch), Outcome::NotFound(404)));
        assert_eq!(name(&c, &ch), "b");
        c.begin("b");
        assert!(c.has_next(Some(&ch)));
        assert!(c.settle(Some(&ch), Outcome::Timeout("ReadTimedout".into())));
        assert_eq!(name(&c, &ch), "c");
        c.begin("c");
        assert!(!c.has_next(Some(&ch)));
        // The last step's answer is final, whatever it is.
        assert!(!c.settle(Some(&ch), Outcome::NotFound(410)));
        assert_eq!(name(&c, &ch), "c");
        assert_eq!(c.log_summary(), "a:not_found,b:timeout,c:not_found");
        assert_eq!(
            c.public_summary(false).as_deref(),
            Some("a not found (404); then b timed out; then c not found (410)")
        );
        assert_eq!(c.answering().map(|a| a.upstream.as_str()), Some("c"));
    }

    #[test]
    fn an_error_at_a_not_found_step_stops_the_chain() {
        let ch = chain(&[("a", Fallthrough::NotFound), ("b", Fallthrough::NotFound)]);
        let mut c = Cursor::default();
        c.begin("a");
        assert!(!c.has_next(Some(&ch)));
        assert!(!c.settle(Some(&ch), Outcome::Status(503)));
        assert_eq!(name(&c, &ch), "a");
        assert!(!c.timed_out(false));
        assert_eq!(
            c.public_summary(false).as_deref(),
            Some("a answered 503 Service Unavailable")
        );
    }

    #[test]
    fn answered_never_moves_and_is_the_answering_attempt() {
        let ch = chain(&[("a", Fallthrough::AnyError), ("b", Fallthrough::AnyError)]);
        let mut c = Cursor::default();
        c.begin("a");
        let refused = Failure::new(
            FailureClass::of(&ErrorType::ConnectRefused),
            "ConnectRefused",
        );
        assert!(c.settle(Some(&ch), Outcome::Failed(refused)));
        c.begin("b");
        assert!(!c.settle(Some(&ch), Outcome::Answered(200)));
        assert_eq!(c.answering().map(|a| a.upstream.as_str()), Some("b"));
        assert_eq!(
            c.public_summary(false).as_deref(),
            Some("a failed: connection refused; then b answered 200")
        );
    }

    #[test]
    fn unsettled_attempts_and_retries() {
        let ch = chain(&[("a", Fallthrough::AnyError)]);
        let mut c = Cursor::default();
        assert_eq!(c.public_summary(true), None);
        c.begin("a");
        assert!(c.timed_out(true) && !c.timed_out(false));
        assert_eq!(c.public_summary(true).as_deref(), Some("a timed out"));
        c.retry_same();
        c.begin("a");
        assert_eq!(c.log_summary(), "a:failed,a");
        assert_eq!(name(&c, &ch), "a");
    }

    #[test]
    fn a_sumdb_cursor_has_one_upstream_and_no_next_step() {
        let mut c = Cursor::single(upstream("sum"));
        assert_eq!(
            c.current(None).map(|u| u.name.clone()).as_deref(),
            Some("sum")
        );
        c.begin("sum");
        assert!(!c.settle(None, Outcome::NotFound(404)));
        assert!(!c.has_next(None));
    }

    #[test]
    fn statuses_are_judged_stricter_for_exact_versions() {
        assert_eq!(Outcome::of_status(200, true), Outcome::Answered(200));
        assert_eq!(Outcome::of_status(304, false), Outcome::Answered(304));
        assert_eq!(Outcome::of_status(302, true), Outcome::Status(302));
        assert_eq!(Outcome::of_status(206, true), Outcome::Status(206));
        assert_eq!(Outcome::of_status(410, true), Outcome::NotFound(410));
        assert_eq!(Outcome::of_status(500, false), Outcome::Status(500));
    }

    #[test]
    fn the_client_never_sees_addresses() {
        let failed = |etype: ErrorType, detail: &str| {
            Outcome::Failed(Failure::new(FailureClass::of(&etype), detail))
        };
        let o = failed(
            ErrorType::ConnectRefused,
            "ConnectRefused context: 10.1.2.3:443",
        );
        assert_eq!(o.public(), "failed: connection refused");
        assert!(o.describe().contains("10.1.2.3"));
        let o = Outcome::Timeout("ConnectTimedout 10.1.2.3".into());
        assert_eq!(o.public(), "timed out");
        let o = failed(ErrorType::TLSHandshakeFailure, "TLSHandshakeFailure sni=x");
        assert_eq!(o.public(), "failed: TLS handshake");
        let o = failed(ErrorType::TLSHandshakeTimedout, "TLSHandshakeTimedout");
        assert_eq!(o.public(), "failed: TLS handshake");
        let o = failed(ErrorType::ConnectionClosed, "ConnectionClosed 10.1.2.3");
        assert_eq!(o.public(), "failed: connection closed");
        // Classified by the error's type, never by what its text happens to start with.
        let o = failed(ErrorType::ConnectNoRoute, "TLS-looking text 10.1.2.3");
        assert_eq!(o.public(), "failed");
        assert!(o.describe().contains("10.1.2.3"));
    }
}
