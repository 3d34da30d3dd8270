//! The access-log line: one per request, as JSON (`log.format: json`) or as text, and the
//! line of a request cut before its `logging` phase.

use std::time::Duration;

use super::report::Seen;

/// Whether the access line is written at all (log.level warn or RUST_LOG may filter it out:
/// then it is not formatted).
pub(super) fn enabled() -> bool {
    log::log_enabled!(target: crate::logging::ACCESS, log::Level::Info)
}

/// What the access line of a finished request says.
pub(super) struct AccessLine<'a> {
    pub listener: &'a str,
    pub client: &'a str,
    /// The principal's name.
    pub identity: &'a str,
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    /// The client's HTTP version.
    pub version: http::Version,
    pub status: u16,
    pub route: &'a str,
    /// [`super::chain::Cursor::log_summary`].
    pub upstreams: String,
    pub elapsed: Duration,
    /// Empty without a trace.
    pub trace_id: &'a str,
    pub error: Option<String>,
}

impl AccessLine<'_> {
    pub(super) fn write(self) {
        if crate::logging::json() {
            let line = serde_json::json!({
                "listener": self.listener,
                "client": self.client,
                "identity": self.identity,
                "method": self.method.as_str(),
                "uri": self.uri.to_string(),
                "version": format!("{:?}", self.version),
                "status": self.status,
                "route": self.route,
                "upstreams": self.upstreams,
                "duration_ms": self.elapsed.as_millis() as u64,
                "trace_id": self.trace_id,
                "error": self.error,
            });
            log::info!(target: crate::logging::ACCESS, "{line}");
        } else {
            log::info!(
                target: crate::logging::ACCESS,
                "{} {} {} {} {} {:?} {} route={} upstreams=[{}] {}ms{}{}",
                self.listener,
                self.client,
                self.identity,
                self.method,
                self.uri,
                self.version,
                self.status,
                self.route,
                self.upstreams,
                self.elapsed.as_millis(),
                if self.trace_id.is_empty() {
                    String::new()
                } else {
                    format!(" trace={}", self.trace_id)
                },
                self.error
                    .map(|e| format!(" error={e}"))
                    .unwrap_or_default()
            );
        }
    }
}

/// The line of a request cut before its `logging` phase (`seen`: what `request_filter` kept of
/// it): no HTTP version, and the status of the answer whose header went out, if one did.
#[allow(clippy::too_many_arguments)]
pub(super) fn cut(
    listener: &str,
    seen: &Seen,
    identity: &str,
    status: u16,
    route: &str,
    upstreams: &str,
    elapsed: Duration,
    why: &str,
) {
    log::info!(
        target: crate::logging::ACCESS,
        "{} {} {} {} {} - {} route={} upstreams=[{}] {}ms error=cut {why}",
        listener,
        seen.client,
        identity,
        seen.method,
        seen.path,
        status,
        route,
        upstreams,
        elapsed.as_millis(),
    );
}
