//! Parsing of raw GOPROXY request targets (`/<module>/@v/list`,
//! `/<module>/@v/<version>.info|.mod|.zip`, `/<module>/@latest`,
//! `/sumdb/<name>/...` and `?go-get=1`) into typed requests, with strict
//! percent-decoding and path validation, and rebuilding of canonical
//! upstream paths.
//!
//! Percent-decoding happens exactly once, before classification; encoded
//! path separators (`%2F`, `%5C`), control bytes and invalid UTF-8 are
//! rejected outright. Module paths and versions are then unescaped with
//! [`unescape_path`] / [`unescape_version`], which enforce Go's
//! `module.CheckPath` rules (no `..`, no uppercase, no leading dots, ...).

use std::fmt;
use std::str::FromStr;

use crate::error::{go_quote, PathError, VersionError};
use crate::escape::{
    check_import_path, check_path, check_path_major, split_path_version, unescape_path,
    unescape_version, version_escapable,
};
use crate::sumdb::{is_valid_sumdb_name, parse_tile_path, split_lookup};
pub use crate::sumdb::{SumdbEndpoint, SumdbRequest};
use crate::version::Version;

/// Longest raw request target (path and query) accepted, in bytes.
pub const MAX_REQUEST_PATH: usize = 4096;

/// The kind of a GOPROXY request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `<module>/@v/list`
    List,
    /// `<module>/@v/<version>.info`
    Info,
    /// `<module>/@v/<version>.mod`
    Mod,
    /// `<module>/@v/<version>.zip`
    Zip,
    /// `<module>/@latest`
    Latest,
    /// `/sumdb/<name>/supported`
    SumdbSupported,
    /// `/sumdb/<name>/latest`
    SumdbLatest,
    /// `/sumdb/<name>/lookup/<module>@<version>`
    SumdbLookup,
    /// `/sumdb/<name>/tile/...`
    SumdbTile,
    /// `<import path>?go-get=1`
    GoGet,
    /// git smart HTTP: `<repository>/info/refs?service=…` and `<repository>/git-upload-pack`
    Git,
}

impl RequestKind {
    /// All kinds, in declaration order.
    pub const ALL: [RequestKind; 11] = [
        RequestKind::List,
        RequestKind::Info,
        RequestKind::Mod,
        RequestKind::Zip,
        RequestKind::Latest,
        RequestKind::SumdbSupported,
        RequestKind::SumdbLatest,
        RequestKind::SumdbLookup,
        RequestKind::SumdbTile,
        RequestKind::GoGet,
        RequestKind::Git,
    ];

    /// The kind's name: `list`, `info`, `mod`, `zip`, `latest`,
    /// `sumdb-supported`, `sumdb-latest`, `sumdb-lookup`, `sumdb-tile`,
    /// `go-get` or `git`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestKind::List => "list",
            RequestKind::Info => "info",
            RequestKind::Mod => "mod",
            RequestKind::Zip => "zip",
            RequestKind::Latest => "latest",
            RequestKind::SumdbSupported => "sumdb-supported",
            RequestKind::SumdbLatest => "sumdb-latest",
            RequestKind::SumdbLookup => "sumdb-lookup",
            RequestKind::SumdbTile => "sumdb-tile",
            RequestKind::GoGet => "go-get",
            RequestKind::Git => "git",
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown [`RequestKind`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown request kind {} (expected one of list, info, mod, zip, latest, sumdb-supported, sumdb-latest, sumdb-lookup, sumdb-tile, go-get, git)", go_quote(.0))]
pub struct ParseRequestKindError(pub String);

impl FromStr for RequestKind {
    type Err = ParseRequestKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseRequestKindError(s.to_owned()))
    }
}

/// A module download-protocol request (`list`, `info`, `mod`, `zip`,
/// `latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleRequest {
    /// The decoded module path, e.g. `github.com/Azure/x`.
    pub module: String,
    /// One of [`RequestKind::List`], [`RequestKind::Info`],
    /// [`RequestKind::Mod`], [`RequestKind::Zip`], [`RequestKind::Latest`].
    pub kind: RequestKind,
    /// The decoded version: `Some` for info/mod/zip (always canonical for
    /// mod/zip), `None` for list/latest. An `.info` for `vN.x.y` (N ≥ 2) of
    /// a path without a `/vN` suffix is a [`Version::Query`]: it may resolve
    /// to `vN.x.y+incompatible`.
    pub version: Option<Version>,
}

impl ModuleRequest {
    /// The canonical escaped path for this request, relative to a GOPROXY
    /// base URL: e.g. `/github.com/!azure/x/@v/v1.0.0.zip`,
    /// `/m.example/@v/list`, `/m.example/@latest`.
    ///
    /// For requests produced by [`RequestParser`] this re-parses to the same
    /// request. Hand-built requests with an invalid module or version get
    /// that field percent-encoded as one opaque segment (no `/`, `.` or `..`
    /// can leak through).
    pub fn upstream_path(&self) -> String {
        // Escaped and percent-encoded in one pass into one string (issue 22): the same text as
        // `percent_encode_path(escape_path(..))`, one step after the other (the test
        // `upstream_path_is_one_pass_of_the_same_escapes`).
        let version = self.version.as_ref().map_or("", Version::as_str);
        let mut out = String::with_capacity(self.module.len() + version.len() + 16);
        out.push('/');
        if check_path(&self.module).is_err() || !push_escaped(&mut out, &self.module, true) {
            out.truncate(1);
            out.push_str(&fallback_segment(&self.module));
        }
        let suffix = match self.kind {
            RequestKind::Latest => {
                out.push_str("/@latest");
                return out;
            }
            RequestKind::Info => ".info",
            RequestKind::Mod => ".mod",
            RequestKind::Zip => ".zip",
            // List, and (for hand-built values) any non-module kind.
            _ => {
                out.push_str("/@v/list");
                return out;
            }
        };
        out.push_str("/@v/");
        let start = out.len();
        if !version_escapable(version) || !push_escaped(&mut out, version, false) {
            out.truncate(start);
            out.push_str(&fallback_segment(version));
        }
        out.push_str(suffix);
        out
    }

    /// True exactly for info/mod/zip requests of a canonical version, whose
    /// responses never change.
    pub fn is_immutable(&self) -> bool {
        matches!(
            self.kind,
            RequestKind::Info | RequestKind::Mod | RequestKind::Zip
        ) && self.version.as_ref().is_some_and(Version::is_canonical)
    }
}

/// Any request a GOPROXY front end receives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GoProxyRequest {
    /// A module download-protocol request.
    Module(ModuleRequest),
    /// A proxied checksum-database request.
    Sumdb(SumdbRequest),
    /// A `?go-get=1` discovery request.
    GoGet {
        /// The validated import path (no leading or trailing `/`).
        import_path: String,
    },
}

impl GoProxyRequest {
    /// The kind of request.
    pub fn kind(&self) -> RequestKind {
        match self {
            GoProxyRequest::Module(m) => m.kind,
            GoProxyRequest::Sumdb(s) => s.kind(),
            GoProxyRequest::GoGet { .. } => RequestKind::GoGet,
        }
    }

    /// The module path for module requests and sumdb lookups, the import
    /// path for go-get requests, `None` otherwise.
    pub fn module(&self) -> Option<&str> {
        match self {
            GoProxyRequest::Module(m) => Some(&m.module),
            GoProxyRequest::Sumdb(SumdbRequest {
                endpoint: SumdbEndpoint::Lookup { module, .. },
                ..
            }) => Some(module),
            GoProxyRequest::Sumdb(_) => None,
            GoProxyRequest::GoGet { import_path } => Some(import_path),
        }
    }
}

/// Why a request target was rejected. [`RequestError::status`] gives the
/// HTTP status; `Display` is a one-line reason for a `text/plain` body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RequestError {
    /// The configured prefix is unusable (a construction error, not a
    /// request error; status 500).
    #[error("invalid path prefix {}: {reason}", go_quote(prefix))]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The raw request target exceeds [`MAX_REQUEST_PATH`] bytes (414).
    #[error("request path longer than {MAX_REQUEST_PATH} bytes")]
    TooLong {
        /// The length received.
        len: usize,
    },
    /// The path is not under the configured prefix (404).
    #[error("request path outside {}", if prefix.is_empty() { "\"/\"".to_owned() } else { go_quote(prefix) })]
    OutsidePrefix {
        /// The normalised prefix.
        prefix: String,
    },
    /// A `%` not followed by two hex digits (400).
    #[error("malformed percent-encoding in request path")]
    BadPercentEncoding,
    /// `%2F` or `%5C` (any case) in the path (400).
    #[error("encoded path separator ({sequence}) in request path")]
    EncodedSeparator {
        /// The escape seen, uppercased: `%2F` or `%5C`.
        sequence: String,
    },
    /// A control byte (< 0x20 or 0x7F), raw or decoded, in the path (400).
    #[error("control character in request path")]
    ControlCharacter,
    /// The decoded path is not UTF-8 (400).
    #[error("request path is not valid UTF-8")]
    InvalidUtf8,
    /// The module path is not a valid escaped module path (400).
    #[error("{0}")]
    InvalidModulePath(PathError),
    /// The go-get import path is invalid (400).
    #[error("{0}")]
    InvalidImportPath(PathError),
    /// The version is not a valid escaped version (400).
    #[error("{0}")]
    InvalidVersion(VersionError),
    /// `.mod`/`.zip` of a non-canonical version (400).
    #[error("{module}@{version}: invalid version: {kind} requests require a canonical version")]
    NonCanonicalVersion {
        /// The decoded module path.
        module: String,
        /// The decoded version.
        version: String,
        /// [`RequestKind::Mod`] or [`RequestKind::Zip`].
        kind: RequestKind,
    },
    /// The version does not match the module path's major version (400);
    /// worded like Go's `ModuleError`:
    /// `example.com/m/v2@v1.0.0: invalid version: should be v2, not v1`.
    #[error("{module}@{}: invalid version: {}", .error.version(), .error.reason())]
    VersionMismatch {
        /// The decoded module path.
        module: String,
        /// The underlying check failure.
        error: VersionError,
    },
    /// The checksum database name is not a lowercase host-like name (400).
    #[error("invalid checksum database name {}", go_quote(name))]
    InvalidSumdbName {
        /// The name as decoded.
        name: String,
    },
    /// The text after `lookup/` is not `<module>@<version>` (400).
    #[error("invalid module@version syntax")]
    InvalidSumdbLookup,
    /// A malformed tile path (400).
    #[error("malformed tile path {}", go_quote(path))]
    InvalidTilePath {
        /// The path starting at `tile/`.
        path: String,
    },
    /// Not a known GOPROXY or sumdb endpoint (404).
    #[error("unknown endpoint")]
    UnknownEndpoint,
}

impl RequestError {
    /// The HTTP status code for this error: 414 for [`RequestError::TooLong`],
    /// 404 for [`RequestError::OutsidePrefix`] and
    /// [`RequestError::UnknownEndpoint`], 500 for
    /// [`RequestError::InvalidPrefix`], 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::TooLong { .. } => 414,
            RequestError::OutsidePrefix { .. } | RequestError::UnknownEndpoint => 404,
            RequestError::InvalidPrefix { .. } => 500,
            _ => 400,
        }
    }
}

/// Parses raw request targets, optionally under a path prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestParser {
    /// Normalised prefix: `""` or `/a/b` (no trailing slash).
    prefix: String,
}

/// Bytes allowed raw in a prefix element (unreserved and sub-delims).
fn prefix_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

impl RequestParser {
    /// Creates a parser for requests under `prefix`: `""` or `"/"` for the
    /// root, or e.g. `"/goproxy"` / `"/goproxy/"` (normalised without the
    /// trailing slash). A non-empty prefix must start with `/` and consist
    /// of non-empty elements of unreserved URL characters, none `.` or `..`.
    pub fn new(prefix: &str) -> Result<RequestParser, RequestError> {
        let bad = |reason| RequestError::InvalidPrefix {
            prefix: prefix.to_owned(),
            reason,
        };
        let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
        if trimmed.is_empty() {
            return Ok(RequestParser::default());
        }
        let Some(body) = trimmed.strip_prefix('/') else {
            return Err(bad("must start with '/'"));
        };
        for elem in body.split('/') {
            if elem.is_empty() {
                return Err(bad("empty path element"));
            }
            if elem == "." || elem == ".." {
                return Err(bad("dot path element"));
            }
            if !elem.bytes().all(prefix_byte_ok) {
                return Err(bad("invalid character"));
            }
        }
        Ok(RequestParser {
            prefix: trimmed.to_owned(),
        })
    }

    /// The normalised prefix (`""` for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Parses a raw request target (path and optional query, as received,
    /// still percent-encoded), e.g. `/example.com/%21upper/@v/list`.
    pub fn parse(&self, path_and_query: &str) -> Result<GoProxyRequest, RequestError> {
        if path_and_query.len() > MAX_REQUEST_PATH {
            return Err(RequestError::TooLong {
                len: path_and_query.len(),
            });
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        if query.is_some_and(has_go_get) {
            let decoded = percent_decode(path)?;
            let import_path = decoded.trim_matches('/');
            check_import_path(import_path).map_err(RequestError::InvalidImportPath)?;
            return Ok(GoProxyRequest::GoGet {
                import_path: import_path.to_owned(),
            });
        }
        let rest = path
            .strip_prefix(self.prefix.as_str())
            .filter(|r| r.starts_with('/') || (r.is_empty() && !self.prefix.is_empty()))
            .ok_or_else(|| RequestError::OutsidePrefix {
                prefix: self.prefix.clone(),
            })?;
        let decoded = percent_decode(rest)?;
        classify(&decoded)
    }
}

/// Whether a raw query string has a `go-get=1` parameter (Go's
/// `url.ParseQuery` rules: `&`-separated, pairs containing `;` ignored,
/// `+` is a space, malformed escapes ignored).
fn has_go_get(query: &str) -> bool {
    query.split('&').any(|pair| {
        if pair.contains(';') || pair.is_empty() {
            return false;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query_unescape(k).as_deref() == Some("go-get") && query_unescape(v).as_deref() == Some("1")
    })
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex_val(*b.get(i + 1)?)?;
                let lo = hex_val(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes `%XX` escapes once, rejecting malformed escapes, encoded `/` and
/// `\`, control bytes and non-UTF-8 results.
pub fn percent_decode(raw: &str) -> Result<String, RequestError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_val);
            let lo = b.get(i + 2).copied().and_then(hex_val);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(RequestError::BadPercentEncoding);
            };
            let byte = hi << 4 | lo;
            if byte == b'/' || byte == b'\\' {
                return Err(RequestError::EncodedSeparator {
                    sequence: format!("%{byte:02X}"),
                });
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Err(RequestError::ControlCharacter);
    }
    String::from_utf8(out).map_err(|_| RequestError::InvalidUtf8)
}

/// Percent-encodes everything except RFC 3986 `pchar`s (and `/` when
/// `keep_slash`), the way Go's `url.URL.EscapedPath` would for these texts.
pub(crate) fn percent_encode_path(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@".contains(&b)
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends `s` escaped (`escape_string`: a capital letter as `!` and its lower case) and
/// percent-encoded as [`percent_encode_path`] does, in one pass. False when `s` cannot be
/// escaped (a `!` or a non-ASCII character): then what was appended is to be cut off.
fn push_escaped(out: &mut String, s: &str, keep_slash: bool) -> bool {
    if s.bytes().any(|b| b == b'!' || !b.is_ascii()) {
        return false;
    }
    for &b in s.as_bytes() {
        if b.is_ascii_uppercase() {
            // `!` is a pchar: never percent-encoded
            out.push('!');
            out.push(char::from(b.to_ascii_lowercase()));
        } else if b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@".contains(&b)
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    true
}

/// Encodes an invalid, hand-built field as one opaque segment: every byte
/// outside `[A-Za-z0-9_~-]` (including `/`, `.` and `!`) is percent-encoded.
pub(crate) fn fallback_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'~' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Classifies a decoded path relative to the prefix (empty or starting
/// with `/`).
fn classify(path: &str) -> Result<GoProxyRequest, RequestError> {
    if let Some(rest) = path.strip_prefix("/sumdb/") {
        return classify_sumdb(rest).map(GoProxyRequest::Sumdb);
    }
    let idx = match (path.find("/@v/"), path.find("/@latest")) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Err(RequestError::UnknownEndpoint),
    };
    let escaped_module = path.get(1..idx).unwrap_or("");
    let tail = &path[idx + 1..];
    let (kind, escaped_version) = if tail == "@latest" {
        (RequestKind::Latest, None)
    } else if tail == "@v/list" {
        (RequestKind::List, None)
    } else if let Some(file) = tail.strip_prefix("@v/") {
        if let Some(v) = file.strip_suffix(".info") {
            (RequestKind::Info, Some(v))
        } else if let Some(v) = file.strip_suffix(".mod") {
            (RequestKind::Mod, Some(v))
        } else if let Some(v) = file.strip_suffix(".zip") {
            (RequestKind::Zip, Some(v))
        } else {
            return Err(RequestError::UnknownEndpoint);
        }
    } else {
        return Err(RequestError::UnknownEndpoint);
    };
    let module = unescape_path(escaped_module).map_err(RequestError::InvalidModulePath)?;
    let version = match escaped_version {
        None => None,
        Some(ev) => {
            let v = unescape_version(ev).map_err(RequestError::InvalidVersion)?;
            let mut version = Version::parse(&v);
            if !version.is_canonical() && kind != RequestKind::Info {
                return Err(RequestError::NonCanonicalVersion {
                    module,
                    version: v,
                    kind,
                });
            }
            if version.is_canonical() {
                // check_path succeeded, so the split always succeeds.
                let major = split_path_version(&module).map_or("", |(_, m)| m);
                if let Err(error) = check_path_major(&v, major) {
                    if kind == RequestKind::Info && major.is_empty() {
                        // `vN.x.y` (N ≥ 2) of a path without `/vN` is no version of the module,
                        // but it is a query the go command sends (`go get m@v3.0.0`) and that
                        // resolves to `vN.x.y+incompatible` for a repository without go.mod
                        // (`codeRepo.Stat`; `proxyRepo.Stat` accepts that other version): ask
                        // the upstream, as for a branch name.
                        version = Version::Query(v);
                    } else {
                        return Err(RequestError::VersionMismatch { module, error });
                    }
                }
            }
            Some(version)
        }
    };
    Ok(GoProxyRequest::Module(ModuleRequest {
        module,
        kind,
        version,
    }))
}

/// Classifies the decoded text after `/sumdb/`.
fn classify_sumdb(rest: &str) -> Result<SumdbRequest, RequestError> {
    let Some((name, tail)) = rest.split_once('/') else {
        return Err(RequestError::UnknownEndpoint);
    };
    if !is_valid_sumdb_name(name) {
        return Err(RequestError::InvalidSumdbName {
            name: name.to_owned(),
        });
    }
    let endpoint = if tail == "supported" {
        SumdbEndpoint::Supported
    } else if tail == "latest" {
        SumdbEndpoint::Latest
    } else if let Some(text) = tail.strip_prefix("lookup/") {
        let (escaped_module, escaped_version) =
            split_lookup(text).ok_or(RequestError::InvalidSumdbLookup)?;
        let module = unescape_path(escaped_module).map_err(RequestError::InvalidModulePath)?;
        let version = unescape_version(escaped_version).map_err(RequestError::InvalidVersion)?;
        SumdbEndpoint::Lookup { module, version }
    } else if let Some(path) = tail.strip_prefix("tile/") {
        parse_tile_path(tail).map_err(|_| RequestError::InvalidTilePath {
            path: tail.to_owned(),
        })?;
        SumdbEndpoint::Tile {
            path: path.to_owned(),
        }
    } else {
        return Err(RequestError::UnknownEndpoint);
    };
    Ok(SumdbRequest {
        name: name.to_owned(),
        endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_path;
    use crate::version::VersionClass;
    use proptest::prelude::*;

    fn root() -> RequestParser {
        RequestParser::default()
    }

    fn module(req: Result<GoProxyRequest, RequestError>) -> ModuleRequest {
        match req {
            Ok(GoProxyRequest::Module(m)) => m,
            other => panic!("expected a module request, got {other:?}"),
        }
    }

    fn sumdb(req: Result<GoProxyRequest, RequestError>) -> SumdbRequest {
        match req {
            Ok(GoProxyRequest::Sumdb(s)) => s,
            other => panic!("expected a sumdb request, got {other:?}"),
        }
    }

    fn status(req: Result<GoProxyRequest, RequestError>) -> u16 {
        match req {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e.status(),
        }
    }

    #[test]
    fn request_kind_strings() {
        for k in RequestKind::ALL {
            assert_eq!(k.as_str().parse::<RequestKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!("zip".parse(), Ok(RequestKind::Zip));
        assert_eq!("go-get".parse(), Ok(RequestKind::GoGet));
        assert!("ZIP".parse::<RequestKind>().is_err());
        assert!("".parse::<RequestKind>().is_err());
    }

    #[test]
    fn module_endpoints() {
        let p = root();
        let m = module(p.parse("/example.com/%21upper/@v/list"));
        assert_eq!(m.module, "example.com/Upper");
        assert_eq!(m.kind, RequestKind::List);
        assert_eq!(m.version, None);
        assert!(!m.is_immutable());
        assert_eq!(m.upstream_path(), "/example.com/!upper/@v/list");

        let m = module(p.parse("/github.com/!azure/x/@v/v1.0.0.zip"));
        assert_eq!(m.module, "github.com/Azure/x");
        assert_eq!(m.kind, RequestKind::Zip);
        assert_eq!(
            m.version,
            Some(Version::Canonical {
                text: "v1.0.0".into(),
                class: VersionClass::Release,
                incompatible: false
            })
        );
        assert!(m.is_immutable());
        assert_eq!(m.upstream_path(), "/github.com/!azure/x/@v/v1.0.0.zip");

        let m = module(p.parse("/m.example/@v/v1.2.3.mod"));
        assert_eq!((m.kind, m.is_immutable()), (RequestKind::Mod, true));
        assert_eq!(m.upstream_path(), "/m.example/@v/v1.2.3.mod");

        let m = module(p.parse("/m.example/@v/v1.2.3.info"));
        assert_eq!((m.kind, m.is_immutable()), (RequestKind::Info, true));
        assert_eq!(m.upstream_path(), "/m.example/@v/v1.2.3.info");

        let m = module(p.parse("/m.example/@latest"));
        assert_eq!((m.kind, m.version.clone()), (RequestKind::Latest, None));
        assert!(!m.is_immutable());
        assert_eq!(m.upstream_path(), "/m.example/@latest");

        // Info accepts queries.
        for (raw, q) in [
            ("/m.example/@v/master.info", "master"),
            ("/m.example/@v/!main.info", "Main"),
            ("/m.example/@v/v1.2.info", "v1.2"),
            ("/m.example/@v/daa7c04131f5.info", "daa7c04131f5"),
            ("/m.example/@v/v1.0.0+meta.info", "v1.0.0+meta"),
            ("/m.example/@v/list.info", "list"),
        ] {
            let m = module(p.parse(raw));
            assert_eq!(m.version, Some(Version::Query(q.into())), "{raw}");
            assert!(!m.is_immutable());
            assert_eq!(m.upstream_path(), raw);
        }

        // Pseudo-versions, +incompatible, gopkg.in.
        let m = module(p.parse("/golang.org/x/text/@v/v0.0.0-20191109021931-daa7c04131f5.zip"));
        assert_eq!(
            m.version.and_then(|v| v.class()),
            Some(VersionClass::Pseudo)
        );
        let m = module(p.parse("/github.com/docker/docker/@v/v20.10.0+incompatible.mod"));
        assert!(matches!(
            m.version,
            Some(Version::Canonical {
                incompatible: true,
                ..
            })
        ));
        // `v20.10.0` of a pre-modules path is a query for `v20.10.0+incompatible` (`.info`
        // only: `go` never asks for the `.mod`/`.zip` of a version that is not the module's).
        let m = module(p.parse("/github.com/docker/docker/@v/v20.10.0.info"));
        assert_eq!(m.version, Some(Version::Query("v20.10.0".into())));
        assert!(!m.is_immutable());
        assert_eq!(
            m.upstream_path(),
            "/github.com/docker/docker/@v/v20.10.0.info"
        );
        let m = module(p.parse("/github.com/docker/docker/@v/v3.0.0-rc.1.info"));
        assert_eq!(m.version, Some(Version::Query("v3.0.0-rc.1".into())));
        assert!(p
            .parse("/github.com/docker/docker/@v/v20.10.0.zip")
            .is_err());
        assert!(p.parse("/gopkg.in/yaml.v2/@v/v3.0.0.info").is_err());
        module(p.parse("/gopkg.in/yaml.v2/@v/v2.4.0.zip"));
        module(p.parse("/gopkg.in/check.v1/@v/v0.0.0-20161208181325-20d25e280405.mod"));
        module(p.parse("/example.com/m/v2/@v/v2.1.0.info"));
        // Query strings other than go-get are ignored.
        module(p.parse("/m.example/@v/list?x=1&go-get=0"));
    }

    #[test]
    fn module_errors() {
        let p = root();
        let cases: &[(&str, u16, &str)] = &[
            (
                "/m.example/@v/master.zip",
                400,
                "m.example@master: invalid version: zip requests require a canonical version",
            ),
            (
                "/m.example/@v/v1.2.mod",
                400,
                "m.example@v1.2: invalid version: mod requests require a canonical version",
            ),
            (
                "/m.example/@v/v1.0.0+meta.zip",
                400,
                "m.example@v1.0.0+meta: invalid version: zip requests require a canonical version",
            ),
            (
                "/example.com/m/v2/@v/v1.0.0.zip",
                400,
                "example.com/m/v2@v1.0.0: invalid version: should be v2, not v1",
            ),
            (
                "/example.com/m/@v/v2.0.0.zip",
                400,
                "example.com/m@v2.0.0: invalid version: should be v0 or v1, not v2",
            ),
            (
                "/example.com/m/@v/v2.0.0.mod",
                400,
                "example.com/m@v2.0.0: invalid version: should be v0 or v1, not v2",
            ),
            (
                "/example.com/m/v2/@v/v3.0.0.info",
                400,
                "example.com/m/v2@v3.0.0: invalid version: should be v2, not v3",
            ),
            (
                "/gopkg.in/yaml.v2/@v/v3.0.0.zip",
                400,
                "gopkg.in/yaml.v2@v3.0.0: invalid version: should be v2, not v3",
            ),
            (
                "/Example.com/x/@v/list",
                400,
                r#"invalid escaped module path "Example.com/x""#,
            ),
            (
                "/example.com/Upper/@v/list",
                400,
                r#"invalid escaped module path "example.com/Upper""#,
            ),
            (
                "/a.com/../@v/list",
                400,
                r#"invalid escaped module path "a.com/..": malformed module path "a.com/..": invalid path element "..""#,
            ),
            (
                "/a.com/%2e%2e/@v/list",
                400,
                r#"invalid escaped module path "a.com/..": malformed module path "a.com/..": invalid path element "..""#,
            ),
            (
                "/a.com/%2E%2E/x/@v/list",
                400,
                r#"invalid escaped module path "a.com/../x": malformed module path "a.com/../x": invalid path element "..""#,
            ),
            (
                "/a.com/./x/@v/list",
                400,
                r#"invalid escaped module path "a.com/./x": malformed module path "a.com/./x": invalid path element ".""#,
            ),
            (
                "/a.com/%2Fx/@v/list",
                400,
                "encoded path separator (%2F) in request path",
            ),
            (
                "/a.com/%2fx/@v/list",
                400,
                "encoded path separator (%2F) in request path",
            ),
            (
                "/a.com/%5cx/@v/list",
                400,
                "encoded path separator (%5C) in request path",
            ),
            (
                "/a.com%5C..%5C/@v/list",
                400,
                "encoded path separator (%5C) in request path",
            ),
            (
                "/a.com/x\\y/@v/list",
                400,
                r#"invalid escaped module path "a.com/x\\y": malformed module path "a.com/x\\y": invalid char '\\'"#,
            ),
            (
                "/a.com/%zz/@v/list",
                400,
                "malformed percent-encoding in request path",
            ),
            (
                "/a.com/%2/@v/list",
                400,
                "malformed percent-encoding in request path",
            ),
            (
                "/a.com/x/@v/list%",
                400,
                "malformed percent-encoding in request path",
            ),
            (
                "/a.com/%00/@v/list",
                400,
                "control character in request path",
            ),
            (
                "/a.com/%0a/@v/list",
                400,
                "control character in request path",
            ),
            (
                "/a.com/%7F/@v/list",
                400,
                "control character in request path",
            ),
            (
                "/a.com/x\t/@v/list",
                400,
                "control character in request path",
            ),
            ("/a.com/%ff/@v/list", 400, "request path is not valid UTF-8"),
            (
                "/a.com/%c3%a9/@v/list",
                400,
                r#"invalid escaped module path "a.com/é""#,
            ),
            (
                "/a.com/!!x/@v/list",
                400,
                r#"invalid escaped module path "a.com/!!x""#,
            ),
            (
                "/a.com/x!/@v/list",
                400,
                r#"invalid escaped module path "a.com/x!""#,
            ),
            (
                "/a.com/.x/@v/list",
                400,
                r#"invalid escaped module path "a.com/.x": malformed module path "a.com/.x": leading dot in path element"#,
            ),
            (
                "/.a.com/x/@v/list",
                400,
                r#"invalid escaped module path ".a.com/x": malformed module path ".a.com/x": leading dot in path element"#,
            ),
            (
                "//a.com/x/@v/list",
                400,
                r#"invalid escaped module path "/a.com/x": malformed module path "/a.com/x": empty path element"#,
            ),
            (
                "/a.com//x/@v/list",
                400,
                r#"invalid escaped module path "a.com//x": malformed module path "a.com//x": double slash"#,
            ),
            (
                "/a.com/x//@v/list",
                400,
                r#"invalid escaped module path "a.com/x/": malformed module path "a.com/x/": trailing slash"#,
            ),
            (
                "/x/@v/list",
                400,
                r#"invalid escaped module path "x": malformed module path "x": missing dot in first path element"#,
            ),
            (
                "/@v/list",
                400,
                r#"invalid escaped module path "": malformed module path "": empty string"#,
            ),
            (
                "/a.com/x/v1/@v/list",
                400,
                r#"invalid escaped module path "a.com/x/v1": malformed module path "a.com/x/v1": invalid version"#,
            ),
            (
                "/a.com/x/nul/@v/list",
                400,
                r#"invalid escaped module path "a.com/x/nul": malformed module path "a.com/x/nul": "nul" disallowed as path element component on Windows"#,
            ),
            (
                "/a.com/x~1/@v/list",
                400,
                r#"invalid escaped module path "a.com/x~1": malformed module path "a.com/x~1": trailing tilde and digits in path element"#,
            ),
            (
                "/a.com/x/@v/V1.0.0.info",
                400,
                r#"invalid escaped version "V1.0.0""#,
            ),
            (
                "/a.com/x/@v/.info",
                400,
                r#"invalid escaped version "": empty path element"#,
            ),
            (
                "/a.com/x/@v/...info",
                400,
                r#"invalid escaped version "..": invalid path element "..""#,
            ),
            (
                "/a.com/x/@v/v1.0.0/x.zip",
                400,
                r#"invalid escaped version "v1.0.0/x": invalid char '/'"#,
            ),
            (
                "/a.com/x/@v/con.info",
                400,
                r#"invalid escaped version "con": "con" disallowed as path element component on Windows"#,
            ),
            (
                "/a.com/x/@v/v1!.info",
                400,
                r#"invalid escaped version "v1!""#,
            ),
            ("/a.com/x/@v/", 404, "unknown endpoint"),
            ("/a.com/x/@v/v1.0.0", 404, "unknown endpoint"),
            ("/a.com/x/@v/v1.0.0.tar", 404, "unknown endpoint"),
            ("/a.com/x/@v/list/", 404, "unknown endpoint"),
            ("/a.com/x/@latest/", 404, "unknown endpoint"),
            ("/a.com/x/@latestx", 404, "unknown endpoint"),
            ("/a.com/x/@v", 404, "unknown endpoint"),
            ("/a.com/x", 404, "unknown endpoint"),
            ("/", 404, "unknown endpoint"),
            ("", 404, "request path outside \"/\""),
            ("a.com/x/@v/list", 404, "request path outside \"/\""),
            (
                "/a.com/x@v1/@v/list",
                400,
                r#"invalid escaped module path "a.com/x@v1": malformed module path "a.com/x@v1": invalid char '@'"#,
            ),
        ];
        for &(raw, want_status, want_msg) in cases {
            match p.parse(raw) {
                Ok(r) => panic!("{raw:?} parsed as {r:?}"),
                Err(e) => {
                    assert_eq!(e.to_string(), want_msg, "{raw:?}");
                    assert_eq!(e.status(), want_status, "{raw:?}");
                }
            }
        }
    }

    #[test]
    fn too_long() {
        let p = root();
        let ok = format!("/a.com/{}/@v/list", "x".repeat(MAX_REQUEST_PATH - 15));
        assert_eq!(ok.len(), MAX_REQUEST_PATH);
        assert_eq!(module(p.parse(&ok)).kind, RequestKind::List);
        let long = format!("/a.com/{}/@v/list", "x".repeat(MAX_REQUEST_PATH - 14));
        let err = p.parse(&long).unwrap_err();
        assert_eq!(
            err,
            RequestError::TooLong {
                len: MAX_REQUEST_PATH + 1
            }
        );
        assert_eq!(err.status(), 414);
        assert_eq!(err.to_string(), "request path longer than 4096 bytes");
        // The query counts too.
        let q = format!("/a.com/x/@v/list?{}", "q".repeat(MAX_REQUEST_PATH));
        assert_eq!(status(p.parse(&q)), 414);
    }

    #[test]
    fn prefixes() {
        for good in ["/goproxy", "/goproxy/", "/a/b", "/a/b/"] {
            let p = RequestParser::new(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(p.prefix(), good.trim_end_matches('/'));
        }
        for root in ["", "/"] {
            assert_eq!(RequestParser::new(root), Ok(RequestParser::default()));
        }
        for bad in [
            "goproxy", "//", "/a//b", "/a/../b", "/./a", "/a?b", "/a%20b", "/a b", "/a#", "\\a",
            "/a\\b", "/é",
        ] {
            let err = RequestParser::new(bad).unwrap_err();
            assert_eq!(err.status(), 500, "{bad}");
            assert!(matches!(err, RequestError::InvalidPrefix { .. }), "{bad}");
        }

        let p = RequestParser::new("/goproxy/").unwrap_or_default();
        let m = module(p.parse("/goproxy/m.example/@v/list"));
        assert_eq!(m.module, "m.example");
        assert_eq!(m.upstream_path(), "/m.example/@v/list");
        sumdb(p.parse("/goproxy/sumdb/sum.golang.org/latest"));
        assert_eq!(status(p.parse("/goproxyx/m.example/@v/list")), 404);
        assert_eq!(status(p.parse("/m.example/@v/list")), 404);
        assert_eq!(status(p.parse("/goproxy")), 404);
        assert_eq!(status(p.parse("/goproxy/")), 404);
        assert_eq!(status(p.parse("/GOPROXY/m.example/@v/list")), 404);
        assert_eq!(status(p.parse("/go%70roxy/m.example/@v/list")), 404);
        assert_eq!(
            p.parse("/other/x").unwrap_err().to_string(),
            r#"request path outside "/goproxy""#
        );
    }

    #[test]
    fn go_get() {
        let p = root();
        assert_eq!(
            p.parse("/x.org/y?go-get=1"),
            Ok(GoProxyRequest::GoGet {
                import_path: "x.org/y".into()
            })
        );
        let r = p.parse("/x.org/y/?a=b&go-get=1");
        assert_eq!(r.as_ref().map(GoProxyRequest::kind), Ok(RequestKind::GoGet));
        assert_eq!(
            r.as_ref().ok().and_then(GoProxyRequest::module),
            Some("x.org/y")
        );
        // Import paths may contain uppercase and '+'; they are not escaped.
        assert_eq!(
            p.parse("/github.com/Azure/c++?go-get=1"),
            Ok(GoProxyRequest::GoGet {
                import_path: "github.com/Azure/c++".into()
            })
        );
        assert_eq!(
            p.parse("/x.org/%79?go-get=%31"),
            Ok(GoProxyRequest::GoGet {
                import_path: "x.org/y".into()
            })
        );
        // go-get bypasses the prefix (rule order) and uses the whole path.
        let pp = RequestParser::new("/goproxy").unwrap_or_default();
        assert_eq!(
            pp.parse("/x.org/y?go-get=1"),
            Ok(GoProxyRequest::GoGet {
                import_path: "x.org/y".into()
            })
        );
        assert_eq!(status(p.parse("/x.org/../y?go-get=1")), 400);
        assert_eq!(status(p.parse("/x.org/%2Fy?go-get=1")), 400);
        assert_eq!(status(p.parse("/?go-get=1")), 400);
        assert_eq!(
            p.parse("/x.org/y@v1?go-get=1").unwrap_err().to_string(),
            r#"malformed import path "x.org/y@v1": invalid char '@'"#
        );
        // Not go-get: other values, semicolons.
        assert_eq!(status(p.parse("/x.org/y?go-get=0")), 404);
        assert_eq!(status(p.parse("/x.org/y?go-get=1;x=2")), 404);
        assert_eq!(status(p.parse("/x.org/y?go-get")), 404);
    }

    #[test]
    fn sumdb_endpoints() {
        let p = root();
        let s = sumdb(p.parse("/sumdb/sum.golang.org/supported"));
        assert_eq!(s.name, "sum.golang.org");
        assert_eq!(s.endpoint, SumdbEndpoint::Supported);
        assert_eq!(s.kind(), RequestKind::SumdbSupported);
        assert_eq!(s.upstream_path(), "/supported");

        let s = sumdb(p.parse("/sumdb/sum.golang.org/latest"));
        assert_eq!(s.kind(), RequestKind::SumdbLatest);
        assert_eq!(s.upstream_path(), "/latest");

        let r = p.parse("/sumdb/sum.golang.org/lookup/github.com/%21azure/x@v1.0.0");
        assert_eq!(
            r.as_ref().ok().and_then(GoProxyRequest::module),
            Some("github.com/Azure/x")
        );
        let s = sumdb(r);
        assert_eq!(
            s.endpoint,
            SumdbEndpoint::Lookup {
                module: "github.com/Azure/x".into(),
                version: "v1.0.0".into()
            }
        );
        assert_eq!(s.kind(), RequestKind::SumdbLookup);
        assert_eq!(s.upstream_path(), "/lookup/github.com/!azure/x@v1.0.0");

        let s = sumdb(p.parse(
            "/sumdb/sum.golang.org/lookup/golang.org/x/text@v0.0.0-20170915032832-14c0d48ead0c",
        ));
        assert_eq!(
            s.upstream_path(),
            "/lookup/golang.org/x/text@v0.0.0-20170915032832-14c0d48ead0c"
        );
        sumdb(
            p.parse("/sumdb/sum.golang.org/lookup/github.com/docker/docker@v20.10.0+incompatible"),
        );

        let s = sumdb(p.parse("/sumdb/sum.golang.org/tile/8/0/x001/234.p/5"));
        assert_eq!(
            s.endpoint,
            SumdbEndpoint::Tile {
                path: "8/0/x001/234.p/5".into()
            }
        );
        assert_eq!(s.kind(), RequestKind::SumdbTile);
        assert_eq!(s.upstream_path(), "/tile/8/0/x001/234.p/5");
        assert_eq!(s.tile().map(|t| t.index), Some(1234));
        let r = p.parse("/sumdb/sum.golang.org/tile/8/data/000");
        assert_eq!(r.as_ref().ok().and_then(GoProxyRequest::module), None);
        assert!(sumdb(r).tile().is_some_and(|t| t.is_data()));
    }

    #[test]
    fn sumdb_errors() {
        let p = root();
        let cases: &[(&str, u16, &str)] = &[
            (
                "/sumdb/sum.golang.org/tile/8/0/00",
                400,
                r#"malformed tile path "tile/8/0/00""#,
            ),
            (
                "/sumdb/sum.golang.org/tile/8/0/000.p/256",
                400,
                r#"malformed tile path "tile/8/0/000.p/256""#,
            ),
            (
                "/sumdb/sum.golang.org/tile/8/0/x000/001",
                400,
                r#"malformed tile path "tile/8/0/x000/001""#,
            ),
            (
                "/sumdb/sum.golang.org/tile/31/0/000",
                400,
                r#"malformed tile path "tile/31/0/000""#,
            ),
            (
                "/sumdb/sum.golang.org/tile/8/0/../000",
                400,
                r#"malformed tile path "tile/8/0/../000""#,
            ),
            (
                "/sumdb/sum.golang.org/tile/",
                400,
                r#"malformed tile path "tile/""#,
            ),
            (
                "/sumdb/sum.golang.org/tile/8/0/%2F000",
                400,
                "encoded path separator (%2F) in request path",
            ),
            (
                "/sumdb/sum.golang.org/lookup/",
                400,
                "invalid module@version syntax",
            ),
            (
                "/sumdb/sum.golang.org/lookup/golang.org/x/text",
                400,
                "invalid module@version syntax",
            ),
            (
                "/sumdb/sum.golang.org/lookup/golang.org/x/text@v1.0",
                400,
                "invalid module@version syntax",
            ),
            (
                "/sumdb/sum.golang.org/lookup/golang.org/x/text@master",
                400,
                "invalid module@version syntax",
            ),
            (
                "/sumdb/sum.golang.org/lookup/golang.org/x/text@v1.0.0+meta",
                400,
                "invalid module@version syntax",
            ),
            (
                "/sumdb/sum.golang.org/lookup/Golang.org/x/text@v1.0.0",
                400,
                r#"invalid escaped module path "Golang.org/x/text""#,
            ),
            (
                "/sumdb/sum.golang.org/lookup/golang.org/../text@v1.0.0",
                400,
                r#"invalid escaped module path "golang.org/../text": malformed module path "golang.org/../text": invalid path element "..""#,
            ),
            (
                "/sumdb/sum.golang.org/lookup/golang.org/x/text@v1.0.0-RC",
                400,
                r#"invalid escaped version "v1.0.0-RC""#,
            ),
            (
                "/sumdb/sum.golang.org/lookup/golang.org/x/text@v1.0.0-a/b",
                400,
                r#"invalid escaped version "v1.0.0-a/b": invalid char '/'"#,
            ),
            (
                "/sumdb/Sum.golang.org/latest",
                400,
                r#"invalid checksum database name "Sum.golang.org""#,
            ),
            (
                "/sumdb/../latest",
                400,
                r#"invalid checksum database name "..""#,
            ),
            ("/sumdb/sum.golang.org", 404, "unknown endpoint"),
            ("/sumdb/sum.golang.org/", 404, "unknown endpoint"),
            ("/sumdb/sum.golang.org/latest/", 404, "unknown endpoint"),
            ("/sumdb/sum.golang.org/supported/x", 404, "unknown endpoint"),
            ("/sumdb/sum.golang.org/other", 404, "unknown endpoint"),
            ("/sumdb/", 404, "unknown endpoint"),
            ("/sumdb", 404, "unknown endpoint"),
        ];
        for &(raw, want_status, want_msg) in cases {
            match p.parse(raw) {
                Ok(r) => panic!("{raw:?} parsed as {r:?}"),
                Err(e) => {
                    assert_eq!(e.to_string(), want_msg, "{raw:?}");
                    assert_eq!(e.status(), want_status, "{raw:?}");
                }
            }
        }
    }

    #[test]
    fn upstream_path_encodes_unsafe_version_chars() {
        let p = root();
        // '#', '%', ' ' and brackets are legal in version queries (file-name
        // rules) and must be re-encoded for the upstream URL.
        let m = module(p.parse("/m.example/@v/a%23b%25c%20d[e].info"));
        assert_eq!(m.version, Some(Version::Query("a#b%c d[e]".into())));
        assert_eq!(m.upstream_path(), "/m.example/@v/a%23b%25c%20d%5Be%5D.info");
        assert_eq!(p.parse(&m.upstream_path()), Ok(GoProxyRequest::Module(m)));
        let m = module(p.parse("/m.example/@v/a@b.info"));
        assert_eq!(m.upstream_path(), "/m.example/@v/a@b.info");
        let s = sumdb(p.parse("/sumdb/sum.golang.org/lookup/m.example@v1.0.0-%23"));
        assert_eq!(s.upstream_path(), "/lookup/m.example@v1.0.0-%23");
    }

    /// The upstream path as it was built before issue 22: escaped, then percent-encoded, one
    /// allocation per step.
    fn upstream_path_in_steps(m: &ModuleRequest) -> String {
        use crate::escape::{escape_path, escape_version};
        let module = escape_path(&m.module)
            .map(|e| percent_encode_path(&e, true))
            .unwrap_or_else(|_| fallback_segment(&m.module));
        let version = || {
            let v = m.version.as_ref().map_or("", Version::as_str);
            escape_version(v)
                .map(|e| percent_encode_path(&e, false))
                .unwrap_or_else(|_| fallback_segment(v))
        };
        match m.kind {
            RequestKind::Latest => format!("/{module}/@latest"),
            RequestKind::Info => format!("/{module}/@v/{}.info", version()),
            RequestKind::Mod => format!("/{module}/@v/{}.mod", version()),
            RequestKind::Zip => format!("/{module}/@v/{}.zip", version()),
            _ => format!("/{module}/@v/list"),
        }
    }

    #[test]
    fn upstream_path_is_one_pass_of_the_same_escapes() {
        let modules = [
            "github.com/aws/aws-sdk-go-v2/service/s3",
            "github.com/Azure/azure-sdk-for-go",
            "m.example/a~b+c",
            "../../etc",
            "a.com/x!y",
            "a.com/caf\u{e9}",
            "",
            "a.com/x y",
            "gopkg.in/yaml.v3",
        ];
        let versions = [
            None,
            Some(Version::parse("v1.58.2")),
            Some(Version::Query("a#b%c d[e]".into())),
            Some(Version::Query("master".into())),
            Some(Version::Query("Dev".into())),
            Some(Version::Query("../x".into())),
            Some(Version::Query("x!y".into())),
            Some(Version::Query("".into())),
            Some(Version::Query("v1.0.0-\u{e9}".into())),
        ];
        for module in modules {
            for version in &versions {
                for kind in [
                    RequestKind::List,
                    RequestKind::Info,
                    RequestKind::Mod,
                    RequestKind::Zip,
                    RequestKind::Latest,
                ] {
                    let m = ModuleRequest {
                        module: module.into(),
                        kind,
                        version: version.clone(),
                    };
                    assert_eq!(m.upstream_path(), upstream_path_in_steps(&m), "{m:?}");
                }
            }
        }
    }

    #[test]
    fn hand_built_requests_fail_safe() {
        let m = ModuleRequest {
            module: "../../etc".into(),
            kind: RequestKind::Zip,
            version: Some(Version::Query("../x".into())),
        };
        assert_eq!(
            m.upstream_path(),
            "/%2E%2E%2F%2E%2E%2Fetc/@v/%2E%2E%2Fx.zip"
        );
        assert!(!m.is_immutable());
        let m = ModuleRequest {
            module: "a.com/x".into(),
            kind: RequestKind::Info,
            version: None,
        };
        assert_eq!(m.upstream_path(), "/a.com/x/@v/.info");
    }

    /// Fragments for building near-valid request targets.
    const FRAGMENTS: &[&str] = &[
        "/",
        "/",
        "/",
        "github.com",
        "a.com",
        "gopkg.in",
        "x",
        "!azure",
        "%21azure",
        "Azure",
        "@v",
        "@v/",
        "list",
        "v1.0.0",
        "v2.3.4-pre",
        "v0.0.0-20191109021931-daa7c04131f5",
        ".zip",
        ".info",
        ".mod",
        "@latest",
        "%2F",
        "%2e%2e",
        "..",
        ".",
        "sumdb",
        "sum.golang.org",
        "supported",
        "latest",
        "lookup",
        "tile",
        "8",
        "0",
        "data",
        "x001",
        "000",
        ".p",
        "5",
        "@",
        "?go-get=1",
        "?x=1",
        "/v2",
        "v2",
        ".v1",
        "+incompatible",
        "-",
        "~1",
        "%",
        "%41",
        "%c3%a9",
        "\\",
        "#",
        " ",
        "master",
    ];

    fn fragment_path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..16).prop_map(|v| v.concat())
    }

    fn check_ok_invariants(p: &RequestParser, raw: &str) -> Result<(), TestCaseError> {
        match p.parse(raw) {
            Ok(GoProxyRequest::Module(m)) => {
                prop_assert!(check_path(&m.module).is_ok(), "{:?}", m);
                prop_assert!(matches!(
                    m.kind,
                    RequestKind::List
                        | RequestKind::Info
                        | RequestKind::Mod
                        | RequestKind::Zip
                        | RequestKind::Latest
                ));
                prop_assert_eq!(
                    m.version.is_some(),
                    matches!(
                        m.kind,
                        RequestKind::Info | RequestKind::Mod | RequestKind::Zip
                    )
                );
                let again = p.parse(&format!("{}{}", p.prefix(), m.upstream_path()));
                prop_assert_eq!(again, Ok(GoProxyRequest::Module(m)));
            }
            Ok(GoProxyRequest::Sumdb(s)) => {
                if let SumdbEndpoint::Lookup { module, .. } = &s.endpoint {
                    prop_assert!(check_path(module).is_ok());
                }
                let again = p.parse(&format!("{}{}", p.prefix(), s.proxy_path()));
                prop_assert_eq!(again, Ok(GoProxyRequest::Sumdb(s)));
            }
            Ok(GoProxyRequest::GoGet { import_path }) => {
                prop_assert!(check_import_path(&import_path).is_ok());
            }
            Err(e) => {
                prop_assert!(matches!(e.status(), 400 | 404 | 414));
                prop_assert!(!e.to_string().contains('\n'));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn parse_never_panics_on_strings(s in "\\PC{0,64}") {
            check_ok_invariants(&root(), &s)?;
            check_ok_invariants(&root(), &format!("/{s}"))?;
        }

        #[test]
        fn parse_never_panics_on_lossy_bytes(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let s = String::from_utf8_lossy(&b);
            check_ok_invariants(&root(), &s)?;
        }

        #[test]
        fn parse_fragments(s in fragment_path(), prefixed in any::<bool>()) {
            let p = if prefixed { RequestParser::new("/gp").unwrap_or_default() } else { root() };
            check_ok_invariants(&p, &format!("{}{s}", p.prefix()))?;
            check_ok_invariants(&p, &s)?;
        }

        #[test]
        fn valid_modules_roundtrip(path in crate::escape::tests::module_path(),
                                   v in "v[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-[0-9A-Za-z]{1,6})?",
                                   kind in prop::sample::select(&[RequestKind::List, RequestKind::Info, RequestKind::Mod, RequestKind::Zip, RequestKind::Latest][..])) {
            let major = split_path_version(&path).map_or("", |(_, m)| m);
            let m = ModuleRequest {
                module: path.clone(),
                kind,
                version: matches!(kind, RequestKind::Info | RequestKind::Mod | RequestKind::Zip)
                    .then(|| Version::parse(&v)),
            };
            let parsed = root().parse(&m.upstream_path());
            let mismatch = m.version.as_ref().is_some_and(|ver| ver.is_canonical() && check_path_major(&v, major).is_err());
            let bad = match &m.version {
                None => false,
                Some(_) if mismatch => kind != RequestKind::Info || !major.is_empty(),
                Some(ver) if ver.is_canonical() => false,
                Some(_) => kind != RequestKind::Info,
            };
            if bad {
                prop_assert_eq!(parsed.map_err(|e| e.status()), Err(400));
            } else if mismatch {
                // A query that may resolve to `+incompatible`.
                let query = ModuleRequest { version: Some(Version::Query(v.clone())), ..m };
                prop_assert_eq!(parsed, Ok(GoProxyRequest::Module(query)));
            } else {
                prop_assert_eq!(parsed, Ok(GoProxyRequest::Module(m)));
            }
        }
    }
}
