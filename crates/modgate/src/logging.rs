//! The process logger: `env_logger` (filtered by `RUST_LOG`, `info` by default) behind a thin
//! layer that lowers the level of Pingora's ERROR lines about ordinary client behaviour — a
//! client that closed or was cut half-way through its request headers, a failed or abandoned
//! TLS handshake (port scans, health probes, clients without the required certificate) — so
//! that ERROR stays meaningful to whoever is paged by it.

use log::{Level, Log, Metadata, Record};

/// The level a Pingora ERROR line deserves, when it is about the client rather than the gateway.
fn demoted(message: &str) -> Option<Level> {
    if message.contains("while reading request headers") {
        return Some(Level::Debug);
    }
    if message.starts_with("Downstream handshake error")
        || message == "Downstream handshake timeout"
    {
        return Some(Level::Info);
    }
    None
}

struct Demoting {
    inner: env_logger::Logger,
}

impl Log for Demoting {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if record.level() == Level::Error && record.target().starts_with("pingora") {
            let text = record.args().to_string();
            if let Some(level) = demoted(&text) {
                let metadata = Metadata::builder()
                    .level(level)
                    .target(record.target())
                    .build();
                if self.inner.enabled(&metadata) {
                    self.inner.log(
                        &Record::builder()
                            .metadata(metadata)
                            .args(format_args!("{text}"))
                            .module_path(record.module_path())
                            .file(record.file())
                            .line(record.line())
                            .build(),
                    );
                }
                return;
            }
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger (once per process).
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Demoting { inner })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_behaviour_is_not_an_error() {
        assert_eq!(
            demoted(
                "Fail to proxy: Downstream ConnectionClosed context: while reading request \
                 headers, bytes already read: 50, downstream session type: h1"
            ),
            Some(Level::Debug)
        );
        assert_eq!(
            demoted("Downstream handshake error from 127.0.0.1:5000: TLS handshake failed"),
            Some(Level::Info)
        );
        assert_eq!(demoted("Downstream handshake timeout"), Some(Level::Info));
    }

    #[test]
    fn gateway_failures_stay_errors() {
        assert_eq!(demoted("Fail to proxy: Upstream ConnectRefused"), None);
        assert_eq!(demoted("failed to send error response to downstream"), None);
    }
}
