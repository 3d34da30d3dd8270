//! Error types for module-path and version checks, worded like Go's
//! `golang.org/x/mod/module` errors, plus Go-style `%q` quoting helpers.
//!
//! Every `Display` is a single line: strings taken from the input are quoted
//! the way Go's `strconv.Quote` would quote them, so control characters and
//! newlines never reach the output raw.

use std::fmt;

/// Which kind of path a [`PathError::Malformed`] is about (Go's
/// `InvalidPathError.Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// A module path (`module.CheckPath`).
    Module,
    /// A package import path (`module.CheckImportPath`).
    Import,
    /// A slash-separated file path (`module.CheckFilePath`).
    File,
}

impl PathKind {
    /// The word Go uses for this kind: `"module"`, `"import"` or `"file"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Module => "module",
            PathKind::Import => "import",
            PathKind::File => "file",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a path (or path element) is invalid: the inner error of Go's
/// `InvalidPathError`, with Go's exact wording as its `Display`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathReason {
    /// `empty string`
    Empty,
    /// `leading dash`
    LeadingDash,
    /// `double slash`
    DoubleSlash,
    /// `trailing slash`
    TrailingSlash,
    /// `empty path element`
    EmptyElement,
    /// `invalid path element "..."` (an element made only of dots).
    DotsElement(String),
    /// `leading dot in path element`
    LeadingDot,
    /// `trailing dot in path element`
    TrailingDot,
    /// `invalid char 'c'`
    InvalidChar(char),
    /// `"con" disallowed as path element component on Windows`
    WindowsReserved(String),
    /// `trailing tilde and digits in path element`
    WindowsShortName,
    /// `leading slash`
    LeadingSlash,
    /// `missing dot in first path element`
    MissingDotInFirstElement,
    /// `leading dash in first path element`
    LeadingDashInFirstElement,
    /// `invalid char 'c' in first path element`
    InvalidCharInFirstElement(char),
    /// `invalid version` (the final element is a malformed major-version
    /// suffix, such as `/v1`, `/v0`, `/v2.0` or a bad `gopkg.in` suffix).
    InvalidVersionSuffix,
}

impl fmt::Display for PathReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathReason::Empty => f.write_str("empty string"),
            PathReason::LeadingDash => f.write_str("leading dash"),
            PathReason::DoubleSlash => f.write_str("double slash"),
            PathReason::TrailingSlash => f.write_str("trailing slash"),
            PathReason::EmptyElement => f.write_str("empty path element"),
            PathReason::DotsElement(e) => write!(f, "invalid path element {}", go_quote(e)),
            PathReason::LeadingDot => f.write_str("leading dot in path element"),
            PathReason::TrailingDot => f.write_str("trailing dot in path element"),
            PathReason::InvalidChar(c) => write!(f, "invalid char {}", go_quote_rune(*c)),
            PathReason::WindowsReserved(s) => write!(
                f,
                "{} disallowed as path element component on Windows",
                go_quote(s)
            ),
            PathReason::WindowsShortName => {
                f.write_str("trailing tilde and digits in path element")
            }
            PathReason::LeadingSlash => f.write_str("leading slash"),
            PathReason::MissingDotInFirstElement => {
                f.write_str("missing dot in first path element")
            }
            PathReason::LeadingDashInFirstElement => {
                f.write_str("leading dash in first path element")
            }
            PathReason::InvalidCharInFirstElement(c) => {
                write!(
                    f,
                    "invalid char {} in first path element",
                    go_quote_rune(*c)
                )
            }
            PathReason::InvalidVersionSuffix => f.write_str("invalid version"),
        }
    }
}

/// An invalid module or import path, or an invalid escaped module path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PathError {
    /// Go's `InvalidPathError`: `malformed module path "x": missing dot in first path element`.
    #[error("malformed {kind} path {}: {reason}", go_quote(path))]
    Malformed {
        /// Module, import or file path.
        kind: PathKind,
        /// The offending path.
        path: String,
        /// Why it is invalid.
        reason: PathReason,
    },
    /// The escaped form itself is broken (uppercase letter, non-ASCII, `!`
    /// not followed by a lowercase letter): `invalid escaped module path "Foo"`.
    #[error("invalid escaped module path {}", go_quote(escaped))]
    BadEscape {
        /// The escaped text as received.
        escaped: String,
    },
    /// The escape decodes, but to an invalid module path:
    /// `invalid escaped module path "x": malformed module path "x": ...`.
    #[error(
        "invalid escaped module path {}: malformed module path {}: {reason}",
        go_quote(escaped),
        go_quote(path)
    )]
    InvalidEscapedPath {
        /// The escaped text as received.
        escaped: String,
        /// What it decodes to.
        path: String,
        /// Why the decoded path is invalid.
        reason: PathReason,
    },
    /// Go's consistency check in `escapeString` (unreachable for paths that
    /// pass [`crate::check_path`]).
    #[error("internal error: inconsistency in EscapePath")]
    Inconsistent {
        /// The path that could not be escaped.
        path: String,
    },
}

impl PathError {
    /// The underlying reason, when there is one.
    pub fn reason(&self) -> Option<&PathReason> {
        match self {
            PathError::Malformed { reason, .. } | PathError::InvalidEscapedPath { reason, .. } => {
                Some(reason)
            }
            PathError::BadEscape { .. } | PathError::Inconsistent { .. } => None,
        }
    }
}

/// An invalid (escaped) version, or a version that does not match a module
/// path's major-version suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VersionError {
    /// `version "v1!" invalid: disallowed version string` (Go's `EscapeVersion`).
    #[error("version {} invalid: disallowed version string", go_quote(version))]
    Disallowed {
        /// The version that cannot be escaped.
        version: String,
    },
    /// Non-ASCII letters pass the file-name check but cannot be escaped
    /// (Go reports `internal error: inconsistency in EscapePath`).
    #[error("internal error: inconsistency in EscapePath")]
    Inconsistent {
        /// The version that could not be escaped.
        version: String,
    },
    /// `invalid escaped version "V1"` (Go's `UnescapeVersion`).
    #[error("invalid escaped version {}", go_quote(escaped))]
    BadEscape {
        /// The escaped text as received.
        escaped: String,
    },
    /// `invalid escaped version "v1/x": invalid char '/'` — note Go quotes
    /// the decoded version here.
    #[error("invalid escaped version {}: {reason}", go_quote(version))]
    InvalidEscapedVersion {
        /// The decoded version.
        version: String,
        /// Why it is not a valid file name.
        reason: PathReason,
    },
    /// `version "v1.0.0" invalid: should be v2, not v1` (Go's `CheckPathMajor`).
    #[error(
        "version {} invalid: should be {expected}, not {actual}",
        go_quote(version)
    )]
    PathMajorMismatch {
        /// The version checked.
        version: String,
        /// What the path's major suffix requires (`v2`, `v0 or v1`, ...).
        expected: String,
        /// `semver.Major(version)` (empty if the version is not semver).
        actual: String,
    },
}

impl VersionError {
    /// The version string the error is about (escaped text for
    /// [`VersionError::BadEscape`]).
    pub fn version(&self) -> &str {
        match self {
            VersionError::Disallowed { version }
            | VersionError::Inconsistent { version }
            | VersionError::InvalidEscapedVersion { version, .. }
            | VersionError::PathMajorMismatch { version, .. } => version,
            VersionError::BadEscape { escaped } => escaped,
        }
    }

    /// The inner reason without the version (Go's `InvalidVersionError.Err`),
    /// e.g. `should be v2, not v1`.
    pub fn reason(&self) -> String {
        match self {
            VersionError::Disallowed { .. } => "disallowed version string".to_owned(),
            VersionError::PathMajorMismatch {
                expected, actual, ..
            } => format!("should be {expected}, not {actual}"),
            VersionError::InvalidEscapedVersion { reason, .. } => reason.to_string(),
            other => other.to_string(),
        }
    }
}

/// Quotes `s` the way Go's `strconv.Quote` (`%q`) does.
///
/// Non-ASCII printability is approximated (control, whitespace and a few
/// format characters are escaped); everything reaching this crate's messages
/// is ASCII in practice because the checks reject other characters early.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_quoted_char(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// Quotes one character the way Go's `strconv.QuoteRune` (`%q` on a rune) does.
pub fn go_quote_rune(c: char) -> String {
    let mut out = String::with_capacity(4);
    out.push('\'');
    push_quoted_char(&mut out, c, '\'');
    out.push('\'');
    out
}

pub(crate) fn is_go_printable(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
        || ('\u{e000}'..='\u{f8ff}').contains(&c)
        || c >= '\u{f0000}')
}

fn push_quoted_char(out: &mut String, c: char, quote: char) {
    if c == quote || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if is_go_printable(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            out.push_str(&format!("\\x{:02x}", c as u32));
        }
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_matches_go() {
        let cases: &[(&str, &str)] = &[
            ("", r#""""#),
            ("abc", r#""abc""#),
            ("a\"b", r#""a\"b""#),
            ("a\\b", r#""a\\b""#),
            ("a\nb\tc\u{7}\u{0}\u{7f}", r#""a\nb\tc\a\x00\x7f""#),
            ("испытание", "\"испытание\""),
            ("a\u{2028}", r#""a\u2028""#),
        ];
        for (input, want) in cases {
            assert_eq!(go_quote(input), *want, "go_quote({input:?})");
        }
        assert_eq!(go_quote_rune('@'), "'@'");
        assert_eq!(go_quote_rune('\''), r"'\''");
        assert_eq!(go_quote_rune('"'), "'\"'");
        assert_eq!(go_quote_rune('\\'), r"'\\'");
        assert_eq!(go_quote_rune('☺'), "'☺'");
        assert_eq!(go_quote_rune('\u{1}'), r"'\x01'");
    }

    #[test]
    fn display_is_single_line() {
        let e = PathError::Malformed {
            kind: PathKind::Module,
            path: "a\nb".into(),
            reason: PathReason::InvalidChar('\n'),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert_eq!(s, r#"malformed module path "a\nb": invalid char '\n'"#);
    }

    #[test]
    fn version_error_reason() {
        let e = VersionError::PathMajorMismatch {
            version: "v1.0.0".into(),
            expected: "v2".into(),
            actual: "v1".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"version "v1.0.0" invalid: should be v2, not v1"#
        );
        assert_eq!(e.reason(), "should be v2, not v1");
        assert_eq!(e.version(), "v1.0.0");
    }
}
