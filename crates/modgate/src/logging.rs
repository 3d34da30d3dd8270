//! The process logger: `env_logger` behind a thin layer that
//! - writes each event as text or as one JSON object per line (`log.format`), switchable at run
//!   time, so a reload changes it; the access line (target `modgate::access`) carries its
//!   fields as an `access` object in JSON;
//! - filters by `log.level`, also switchable — unless `RUST_LOG` is set, which then decides
//!   (with its per-module syntax, e.g. `RUST_LOG=info,pingora_core=warn`);
//! - lowers the level of Pingora's ERROR lines about ordinary client behaviour — a client that
//!   closed or was cut half-way through its request headers, a failed or abandoned TLS
//!   handshake (port scans, health probes, clients without the required certificate) — and of
//!   its WARN about a missing header-compression dictionary at every start, and of the lines
//!   ordinary HTTP/2 traffic produces ([`ordinary_traffic`]), so that ERROR and
//!   WARN stay meaningful to whoever is paged by them.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The target of the one access line per request.
pub const ACCESS: &str = "modgate::access";

/// JSON lines instead of text.
static JSON: AtomicBool = AtomicBool::new(false);
/// The `log.level` in force (a `LevelFilter` as usize), when `RUST_LOG` is not set.
static LEVEL: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);
/// `RUST_LOG` was set at start: it decides the level.
static FROM_ENV: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON (callers that build structured lines ask).
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

fn level() -> LevelFilter {
    match LEVEL.load(Ordering::Relaxed) {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Applies the configuration's `log:` (at start and on every reload): JSON lines or text, and
/// the most verbose level (unless `RUST_LOG` decides).
pub fn configure(json: bool, level: LevelFilter) {
    JSON.store(json, Ordering::Relaxed);
    if !FROM_ENV.load(Ordering::Relaxed) {
        LEVEL.store(level as usize, Ordering::Relaxed);
        log::set_max_level(level);
    }
}

/// The level a Pingora ERROR/WARN line deserves, when it is about the client (or about an
/// optional feature) rather than the gateway.
fn demoted(message: &str) -> Option<Level> {
    if let Some(level) = ordinary_traffic(message) {
        return Some(level);
    }
    if message.contains("while reading request headers") {
        return Some(Level::Debug);
    }
    if message.starts_with("Downstream handshake error")
        || message == "Downstream handshake timeout"
    {
        return Some(Level::Info);
    }
    if message.starts_with("no header compression dictionary loaded") {
        return Some(Level::Debug);
    }
    None
}

/// Pingora's ERROR/WARN lines that ordinary traffic produces (issue 18): an HTTP/2 client that
/// connects and closes without a request (health probes, connection pools, `openssl s_client`),
/// any other failed HTTP/2 handshake (the client's doing), and a request body's end arriving
/// after the body was already complete (every HTTP/2 request forwarded to an HTTP/1.1
/// upstream).
fn ordinary_traffic(message: &str) -> Option<Level> {
    if message.starts_with("H2 handshake error") {
        return Some(if message.contains("before reading preface") {
            Level::Debug
        } else {
            Level::Info
        });
    }
    if message.starts_with("Upstream body is already finished") {
        return Some(Level::Debug);
    }
    None
}

/// One log line as JSON: time, level, target, and the message (or, for the access line whose
/// message is already a JSON object, that object as `access`).
fn json_line(time: &str, level: Level, target: &str, message: &str) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let body = if target == ACCESS && message.starts_with('{') {
        format!("\"access\":{message}")
    } else {
        format!("\"message\":{}", quote(message))
    };
    format!(
        "{{\"time\":{},\"level\":\"{}\",\"target\":{},{body}}}",
        quote(time),
        level,
        quote(target)
    )
}

struct Demoting {
    inner: env_logger::Logger,
}

impl Demoting {
    fn passes(&self, metadata: &Metadata<'_>) -> bool {
        let ours = FROM_ENV.load(Ordering::Relaxed) || metadata.level() <= level();
        ours && self.inner.enabled(metadata)
    }
}

impl Log for Demoting {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.passes(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let lowered = (record.level() <= Level::Warn && record.target().starts_with("pingora"))
            .then(|| record.args().to_string())
            .and_then(|text| demoted(&text).map(|level| (level, text)));
        if let Some((level, text)) = lowered {
            let metadata = Metadata::builder()
                .level(level)
                .target(record.target())
                .build();
            if self.passes(&metadata) {
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
        if self.passes(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger (once per process): text at `info` until [`configure`] says otherwise;
/// `RUST_LOG`, when set, is the filter.
pub fn init() {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    FROM_ENV.store(from_env, Ordering::Relaxed);
    let mut builder = if from_env {
        env_logger::Builder::from_env(env_logger::Env::default())
    } else {
        let mut b = env_logger::Builder::new();
        b.filter_level(LevelFilter::Trace);
        b
    };
    builder.format(|buf, record| {
        if json() {
            let time = buf.timestamp_millis().to_string();
            let line = json_line(
                &time,
                record.level(),
                record.target(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        } else {
            let time = buf.timestamp_seconds();
            writeln!(
                buf,
                "[{time} {:<5} {}] {}",
                record.level(),
                record.target(),
                record.args()
            )
        }
    });
    let inner = builder.build();
    let max = if from_env { inner.filter() } else { level() };
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
        assert_eq!(
            demoted("no header compression dictionary loaded - use set_compression_dict_content()"),
            Some(Level::Debug)
        );
    }

    #[test]
    fn ordinary_traffic_is_not_an_error() {
        assert_eq!(
            demoted(
                "H2 handshake error  HandshakeError context: while h2 handshaking with client \
                 cause: connection closed before reading preface"
            ),
            Some(Level::Debug)
        );
        assert_eq!(
            demoted("H2 handshake error  HandshakeError cause: invalid preface"),
            Some(Level::Info)
        );
        assert_eq!(
            demoted("Upstream body is already finished. Nothing to write"),
            Some(Level::Debug)
        );
    }

    #[test]
    fn gateway_failures_stay_errors() {
        assert_eq!(demoted("Fail to proxy: Upstream ConnectRefused"), None);
        assert_eq!(demoted("failed to send error response to downstream"), None);
    }

    #[test]
    fn json_lines_are_json_and_embed_the_access_object() {
        let line = json_line(
            "2026-12-02T00:00:00.000Z",
            Level::Warn,
            "modgate",
            "a \"q\"\nb",
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "a \"q\"\nb");
        assert_eq!(v["target"], "modgate");
        let line = json_line("t", Level::Info, ACCESS, "{\"status\":200}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["access"]["status"], 200);
        // An access message that is not an object stays a message.
        let line = json_line("t", Level::Info, ACCESS, "plain");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["message"], "plain");
    }
}
