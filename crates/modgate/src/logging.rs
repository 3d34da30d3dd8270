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
//!   WARN stay meaningful to whoever is paged by them;
//! - redacts credentials from every line, whatever its level and origin ([`redact`]): Pingora
//!   dumps each upstream request's headers at `debug` (the gateway's `Authorization` for an
//!   upstream with a `credential:` and for the git smart-HTTP proxy), and no secret, the
//!   gateway's or a client's, may reach the log at any level.

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
    // Pingora's connection pool lost a race between a connection's release and its next use
    // on another thread (its idle watcher still held the connection): the request simply
    // opens a new connection. Seen with one scheduler per thread and the verifying origin's
    // pooled hop.
    if message == "failed to acquire reusable stream" {
        return Some(Level::Debug);
    }
    None
}

/// Header names whose values are secrets (matched case-insensitively, as a header name: the
/// name is followed by `:` or `=`, possibly after a closing quote).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "private-token",
    "job-token",
    "deploy-token",
];

/// Authentication schemes whose next word is a secret, wherever they appear.
const SCHEMES: &[&str] = &["bearer ", "basic ", "token "];

/// What replaces a secret.
const REDACTED: &str = "[redacted]";

/// Whether `c` ends a header value in the forms a log line carries it: a `Debug` map
/// (`"authorization": "Bearer x"`), raw or escaped wire bytes (`Authorization: x\r\n`), JSON.
fn ends_value(c: char) -> bool {
    matches!(
        c,
        '"' | '\\' | '\r' | '\n' | '}' | ']' | '\'' | ',' | ';' | '&'
    )
}

/// Whether `c` may be part of a credential token after an authentication scheme (RFC 7235
/// token68, plus what `Debug` and URL forms keep).
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=' | '%' | ':')
}

/// The byte ranges of `text` that hold secrets: header values after [`SECRET_HEADERS`],
/// tokens after [`SCHEMES`], and the password of `scheme://user:password@host`.
fn secret_ranges(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut out = Vec::new();
    for name in SECRET_HEADERS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(name).map(|i| i + from) {
            from = at + name.len();
            // A name, not the tail of a longer one (`x-authorization-hint`); after an escaped
            // line end (`\r\n` in `Debug` bytes) it starts a header.
            let before = at.checked_sub(1).map(|i| bytes[i]);
            let escaped_line_end =
                at >= 2 && bytes[at - 2] == b'\\' && matches!(bytes[at - 1], b'n' | b'r' | b't');
            if !escaped_line_end
                && before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                continue;
            }
            let mut i = from;
            if bytes.get(i) == Some(&b'"') {
                i += 1;
            }
            if !matches!(bytes.get(i), Some(b':') | Some(b'=')) {
                continue;
            }
            i += 1;
            while matches!(bytes.get(i), Some(b' ') | Some(b'\t')) {
                i += 1;
            }
            if bytes.get(i) == Some(&b'"') {
                i += 1;
            }
            let end = text[i..]
                .char_indices()
                .find(|(_, c)| ends_value(*c))
                .map_or(text.len(), |(j, _)| i + j);
            if end > i {
                out.push((i, end));
            }
        }
    }
    for scheme in SCHEMES {
        let mut from = 0;
        while let Some(at) = lower[from..].find(scheme).map(|i| i + from) {
            from = at + scheme.len();
            let before = at.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric()) {
                continue;
            }
            let start = from;
            let end = text[start..]
                .char_indices()
                .find(|(_, c)| !token_char(*c))
                .map_or(text.len(), |(j, _)| start + j);
            // `Basic realm="…"` is a challenge, not a credential.
            let word = &lower[start..end];
            if end > start && !word.starts_with("realm=") {
                out.push((start, end));
            }
        }
    }
    out.extend(userinfo(text));
    out
}

/// Whether `text` holds anything [`secret_ranges`] looks for: one case-insensitive pass of
/// one automaton over every header name and scheme, and a URL with userinfo, so the common
/// line (an access line, whose HTTP/2 URI is absolute; a lifecycle message) costs a scan and
/// no allocation.
fn may_hold_secrets(text: &str) -> bool {
    static TRIGGERS: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::LazyLock::new(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(SECRET_HEADERS.iter().chain(SCHEMES))
                .ok()
        });
    // Without the automaton (it cannot fail to build for these words), every line is scanned.
    TRIGGERS.as_ref().is_none_or(|ac| ac.is_match(text)) || userinfo(text).next().is_some()
}

/// The byte ranges of the passwords of `scheme://user:password@host` URLs in `text`.
fn userinfo(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    text.match_indices("://").filter_map(move |(at, _)| {
        let from = at + 3;
        let authority_end = text[from..]
            .char_indices()
            .find(|(_, c)| matches!(c, '/' | '?' | '#' | ' ' | '"' | '\'' | '>' | '\n'))
            .map_or(text.len(), |(j, _)| from + j);
        let authority = &text[from..authority_end];
        let userinfo_end = authority.rfind('@')?;
        let colon = authority[..userinfo_end].find(':')?;
        Some((from + colon + 1, from + userinfo_end))
    })
}

/// `text` with every secret it holds replaced by `[redacted]` (borrowed when there is none).
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    if !may_hold_secrets(text) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut ranges = secret_ranges(text);
    if ranges.is_empty() {
        return std::borrow::Cow::Borrowed(text);
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in ranges {
        if end <= at {
            continue;
        }
        out.push_str(&text[at..start.max(at)]);
        if start >= at {
            out.push_str(REDACTED);
        }
        at = end;
    }
    out.push_str(&text[at..]);
    std::borrow::Cow::Owned(out)
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
        let pingora_alarm = record.level() <= Level::Warn && record.target().starts_with("pingora");
        // Nothing is formatted for a line that is not written (only a Pingora ERROR/WARN may be
        // lowered, which needs its text).
        if !pingora_alarm && !self.passes(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        let level = if pingora_alarm {
            demoted(&text).unwrap_or(record.level())
        } else {
            record.level()
        };
        let metadata = Metadata::builder()
            .level(level)
            .target(record.target())
            .build();
        if !self.passes(&metadata) {
            return;
        }
        // Every line, whatever its level or origin: no secret reaches the log.
        let text = redact(&text);
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
    fn a_line_without_a_trigger_is_passed_through_and_every_trigger_is_looked_at() {
        for plain in [
            "public 10.0.0.1:5000 anonymous GET /example.com/x/@v/v1.0.0.info HTTP/1.1 200",
            "public 10.0.0.1:5000 anonymous GET https://gw:8443/example.com/x/@v/v1.0.0.info \
             HTTP/2.0 200 route=all upstreams=[a: 200] 0ms",
        ] {
            assert!(!may_hold_secrets(plain), "{plain}");
            assert!(matches!(redact(plain), std::borrow::Cow::Borrowed(_)));
        }
        for line in [
            "AUTHORIZATION: Bearer abc",
            "x: basic dXNlcjpwYXNz",
            "Cookie=s3cret;",
            "https://u:pw@host/",
            "Private-Token: glpat-1",
        ] {
            assert!(may_hold_secrets(line), "{line}");
            assert!(
                redact(line).contains("[redacted]"),
                "{line}: {}",
                redact(line)
            );
        }
    }

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
        assert_eq!(
            demoted("failed to acquire reusable stream"),
            Some(Level::Debug)
        );
    }

    #[test]
    fn credentials_are_redacted_in_every_form_a_line_carries_them() {
        // Pingora's `Debug` of a request header (an http::HeaderMap).
        let debug = r#"Sending header to upstream RequestHeader { base: Parts { method: GET, uri: /x, version: HTTP/1.1, headers: {"host": "h", "authorization": "Bearer s3cret-1", "accept": "*/*"} } }"#;
        let out = redact(debug);
        assert!(!out.contains("s3cret-1"), "{out}");
        assert!(
            out.contains(r#""authorization": "[redacted]", "accept": "*/*""#),
            "{out}"
        );
        // Escaped wire bytes, any case, any scheme (a `header_file` value has none).
        let wire = r#"Writing request header: b"GET / HTTP/1.1\r\nAuthorization: custom-9x\r\nHost: h\r\n""#;
        let out = redact(wire);
        assert!(!out.contains("custom-9x"), "{out}");
        assert!(out.contains(r"Host: h\r\n"), "{out}");
        // The same on the wire, with real line ends.
        let out = redact("GET / HTTP/1.1\r\nAuthorization: custom-9x\r\nHost: h\r\n");
        assert!(!out.contains("custom-9x"), "{out}");
        assert!(out.contains("Host: h\r\n"), "{out}");
        // Raw lines, proxy credentials, cookies.
        for (line, secret) in [
            (
                "proxy-authorization: Basic dXNlcjpwYXNz\r\n",
                "dXNlcjpwYXNz",
            ),
            ("cookie: session=abc123; other=1", "abc123"),
            ("PRIVATE-TOKEN: glpat-xyz", "glpat-xyz"),
            (
                "the token was Bearer eyJhbGciOi.J9.x_y in a message",
                "eyJhbGciOi",
            ),
            (
                "clone https://user:hunter2@git.example/r.git failed",
                "hunter2",
            ),
        ] {
            let out = redact(line);
            assert!(!out.contains(secret), "{line} → {out}");
            assert!(out.contains(REDACTED), "{line} → {out}");
        }
        // JSON access objects keep their shape.
        let json = r#"{"status":401,"authorization":"Bearer abc.def","path":"/x"}"#;
        let out = redact(json);
        assert!(!out.contains("abc.def"), "{out}");
        serde_json::from_str::<serde_json::Value>(&out).expect("still JSON");
    }

    #[test]
    fn lines_without_secrets_are_left_alone() {
        for line in [
            "GET /example.com/pub/@v/list HTTP/1.1 200",
            "anonymous 401: WWW-Authenticate: Basic realm=\"modgate\"",
            "the credentials sent were not accepted",
            "x-authorization-hint: fine",
            "upstream https://git.example/r.git (user@host is not a password)",
            "basic",
        ] {
            assert!(
                matches!(redact(line), std::borrow::Cow::Borrowed(_)),
                "{line} → {}",
                redact(line)
            );
        }
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
