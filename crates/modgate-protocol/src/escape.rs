//! Module path and version checks and the `!`-case-encoding used by the
//! GOPROXY protocol: a faithful port of `golang.org/x/mod/module`'s
//! `CheckPath`, `CheckImportPath`, `CheckFilePath`, `SplitPathVersion`,
//! `CheckPathMajor`, `EscapePath`/`UnescapePath` and
//! `EscapeVersion`/`UnescapeVersion`.
//!
//! Escaping replaces every uppercase ASCII letter with `!` followed by its
//! lowercase form (`github.com/Azure/x` → `github.com/!azure/x`), so that
//! escaped paths are safe on case-insensitive file systems and URLs.

use crate::error::{PathError, PathKind, PathReason, VersionError};
use crate::version::{semver_build, semver_major};

/// Go's `firstPathOK`: allowed in the first (domain) element of a module path.
fn first_path_ok(c: char) -> bool {
    c == '-' || c == '.' || c.is_ascii_digit() || c.is_ascii_lowercase()
}

/// Go's `modPathOK`: ASCII letters, digits and `- . _ ~`.
fn mod_path_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Go's `importPathOK`: [`mod_path_ok`] plus `+`.
fn import_path_ok(c: char) -> bool {
    mod_path_ok(c) || c == '+'
}

/// Go's `fileNameOK`. For non-ASCII Go uses `unicode.IsLetter`; Rust's
/// `char::is_alphabetic` is the closest std equivalent (it also admits
/// letter-like numbers and some combining marks).
fn file_name_ok(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || "!#$%&()+,-.=@[]^_{}~ ".contains(c);
    }
    c.is_alphabetic()
}

/// Reserved file names on Windows (Go's `badWindowsNames`).
const BAD_WINDOWS_NAMES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Go's `checkPath`: the checks shared by module, import and file paths.
fn check_path_kind(path: &str, kind: PathKind) -> Result<(), PathReason> {
    if path.is_empty() {
        return Err(PathReason::Empty);
    }
    if path.starts_with('-') && kind != PathKind::File {
        return Err(PathReason::LeadingDash);
    }
    if path.contains("//") {
        return Err(PathReason::DoubleSlash);
    }
    if path.ends_with('/') {
        return Err(PathReason::TrailingSlash);
    }
    for elem in path.split('/') {
        check_elem(elem, kind)?;
    }
    Ok(())
}

/// Go's `checkElem`: checks one path element.
fn check_elem(elem: &str, kind: PathKind) -> Result<(), PathReason> {
    if elem.is_empty() {
        return Err(PathReason::EmptyElement);
    }
    if elem.bytes().all(|b| b == b'.') {
        return Err(PathReason::DotsElement(elem.to_owned()));
    }
    if elem.starts_with('.') && kind == PathKind::Module {
        return Err(PathReason::LeadingDot);
    }
    if elem.ends_with('.') {
        return Err(PathReason::TrailingDot);
    }
    for c in elem.chars() {
        let ok = match kind {
            PathKind::Module => mod_path_ok(c),
            PathKind::Import => import_path_ok(c),
            PathKind::File => file_name_ok(c),
        };
        if !ok {
            return Err(PathReason::InvalidChar(c));
        }
    }

    // Windows disallows a bunch of path elements, sadly.
    let short = elem.find('.').map_or(elem, |i| &elem[..i]);
    // Go uses strings.EqualFold; none of these names contains a letter with
    // a non-ASCII case-fold partner (only K and S have one), so ASCII
    // case-insensitive comparison is exact.
    if BAD_WINDOWS_NAMES
        .iter()
        .any(|bad| bad.eq_ignore_ascii_case(short))
    {
        return Err(PathReason::WindowsReserved(short.to_owned()));
    }

    if kind == PathKind::File {
        // Windows short-names are only an issue for import paths.
        return Ok(());
    }

    // Reject path components that look like Windows short-names: a tilde
    // followed by one or more ASCII digits at the end of the short name.
    if let Some(tilde) = short.rfind('~') {
        if tilde < short.len() - 1 && short[tilde + 1..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(PathReason::WindowsShortName);
        }
    }
    Ok(())
}

/// Checks that `path` is a valid module path (`module.CheckPath`).
///
/// A valid module path is a valid import path (see [`check_import_path`])
/// whose first element is a lowercase LDH domain name containing a dot and
/// not starting with a dash, whose final `/vN` element (if any) is a valid
/// major-version suffix (`gopkg.in/` paths follow gopkg.in conventions), and
/// none of whose elements begins with a dot.
pub fn check_path(path: &str) -> Result<(), PathError> {
    check_path_reason(path).map_err(|reason| PathError::Malformed {
        kind: PathKind::Module,
        path: path.to_owned(),
        reason,
    })
}

fn check_path_reason(path: &str) -> Result<(), PathReason> {
    check_path_kind(path, PathKind::Module)?;
    let i = path.find('/').unwrap_or(path.len());
    if i == 0 {
        return Err(PathReason::LeadingSlash);
    }
    let first = &path[..i];
    if !first.contains('.') {
        return Err(PathReason::MissingDotInFirstElement);
    }
    if path.starts_with('-') {
        return Err(PathReason::LeadingDashInFirstElement);
    }
    if let Some(c) = first.chars().find(|&c| !first_path_ok(c)) {
        return Err(PathReason::InvalidCharInFirstElement(c));
    }
    if split_path_version(path).is_none() {
        return Err(PathReason::InvalidVersionSuffix);
    }
    Ok(())
}

/// Checks that `path` is a valid package import path
/// (`module.CheckImportPath`).
///
/// Elements are non-empty, made of ASCII letters, digits and `- . _ ~ +`,
/// do not end with a dot, are not all dots, are not Windows reserved names
/// (`CON`, `com1`, `NuL.txt`, ...) and do not end in `~` plus digits.
pub fn check_import_path(path: &str) -> Result<(), PathError> {
    check_path_kind(path, PathKind::Import).map_err(|reason| PathError::Malformed {
        kind: PathKind::Import,
        path: path.to_owned(),
        reason,
    })
}

/// Checks that `path` is a valid slash-separated file path
/// (`module.CheckFilePath`): like an import path but also allowing
/// Unicode letters, spaces and `!#$%&()+,-.=@[]^_{}~`, and not rejecting
/// Windows short names or a leading dash.
pub fn check_file_path(path: &str) -> Result<(), PathError> {
    check_path_kind(path, PathKind::File).map_err(|reason| PathError::Malformed {
        kind: PathKind::File,
        path: path.to_owned(),
        reason,
    })
}

/// Splits a module path into `(prefix, path_major)` with
/// `prefix + path_major == path` (`module.SplitPathVersion`).
///
/// `path_major` is `""` or `/vN` for N ≥ 2; for `gopkg.in/` paths it is
/// `.vN` (any N, optionally followed by `-unstable`). Returns `None` when
/// the final element is not an acceptable major-version suffix, e.g.
/// `example.com/pkg/v1`, `example.com/pkg/v1.2` or `gopkg.in/yaml`.
pub fn split_path_version(path: &str) -> Option<(&str, &str)> {
    if path.starts_with("gopkg.in/") {
        return split_gopkg_in(path);
    }
    let b = path.as_bytes();
    let mut i = b.len();
    let mut dot = false;
    while i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.') {
        if b[i - 1] == b'.' {
            dot = true;
        }
        i -= 1;
    }
    if i <= 1 || i == b.len() || b[i - 1] != b'v' || b[i - 2] != b'/' {
        return Some((path, ""));
    }
    let (prefix, path_major) = path.split_at(i - 2);
    let pm = path_major.as_bytes();
    if dot || pm.len() <= 2 || pm[2] == b'0' || path_major == "/v1" {
        return None;
    }
    Some((prefix, path_major))
}

/// Go's `splitGopkgIn`.
fn split_gopkg_in(path: &str) -> Option<(&str, &str)> {
    if !path.starts_with("gopkg.in/") {
        return None;
    }
    let b = path.as_bytes();
    let mut i = b.len();
    if path.ends_with("-unstable") {
        i -= "-unstable".len();
    }
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i <= 1 || b[i - 1] != b'v' || b[i - 2] != b'.' {
        // All gopkg.in paths must end in vN for some N.
        return None;
    }
    let (prefix, path_major) = path.split_at(i - 2);
    let pm = path_major.as_bytes();
    if pm.len() <= 2 || (pm[2] == b'0' && path_major != ".v0") {
        return None;
    }
    Some((prefix, path_major))
}

/// Checks that the semantic version `version` matches the path major
/// version `path_major` as returned by [`split_path_version`]
/// (`module.CheckPathMajor`).
///
/// `""` accepts v0, v1 and `+incompatible` versions; `/vN` and `.vN` require
/// major version N. As in Go, `v0.0.0-` pseudo-versions are accepted for
/// gopkg.in `.v1` paths.
pub fn check_path_major(version: &str, path_major: &str) -> Result<(), VersionError> {
    let mut pm = path_major;
    if pm.starts_with(".v") {
        if let Some(trimmed) = pm.strip_suffix("-unstable") {
            pm = trimmed;
        }
    }
    if version.starts_with("v0.0.0-") && pm == ".v1" {
        // Allow old bug in pseudo-versions that generated v0.0.0- pseudo-versions for gopkg .v1.
        return Ok(());
    }
    let major = semver_major(version).unwrap_or_default();
    let expected = if pm.is_empty() {
        if major == "v0" || major == "v1" || semver_build(version) == "+incompatible" {
            return Ok(());
        }
        "v0 or v1"
    } else if pm.starts_with('/') || pm.starts_with('.') {
        if major == pm[1..] {
            return Ok(());
        }
        &pm[1..]
    } else {
        pm
    };
    Err(VersionError::PathMajorMismatch {
        version: version.to_owned(),
        expected: expected.to_owned(),
        actual: major,
    })
}

/// Go's `escapeString`: `None` if `s` contains `!` or non-ASCII.
fn escape_string(s: &str) -> Option<String> {
    if s.chars().any(|c| c == '!' || !c.is_ascii()) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Go's `unescapeString`: `None` on non-ASCII, a raw uppercase letter, or a
/// `!` not followed by a lowercase ASCII letter.
fn unescape_string(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut bang = false;
    for c in escaped.chars() {
        if !c.is_ascii() {
            return None;
        }
        if bang {
            bang = false;
            if !c.is_ascii_lowercase() {
                return None;
            }
            out.push(c.to_ascii_uppercase());
            continue;
        }
        if c == '!' {
            bang = true;
            continue;
        }
        if c.is_ascii_uppercase() {
            return None;
        }
        out.push(c);
    }
    if bang {
        return None;
    }
    Some(out)
}

/// Returns the escaped form of module path `path` (`module.EscapePath`),
/// e.g. `github.com/Azure/x` → `github.com/!azure/x`. Fails if `path` is
/// not a valid module path.
pub fn escape_path(path: &str) -> Result<String, PathError> {
    check_path(path)?;
    escape_string(path).ok_or_else(|| PathError::Inconsistent {
        path: path.to_owned(),
    })
}

/// Returns the module path for an escaped path (`module.UnescapePath`).
/// Fails if the escaping is broken or the result is not a valid module path.
pub fn unescape_path(escaped: &str) -> Result<String, PathError> {
    let path = unescape_string(escaped).ok_or_else(|| PathError::BadEscape {
        escaped: escaped.to_owned(),
    })?;
    if let Err(reason) = check_path_reason(&path) {
        return Err(PathError::InvalidEscapedPath {
            escaped: escaped.to_owned(),
            path,
            reason,
        });
    }
    Ok(path)
}

/// Returns the escaped form of a version (`module.EscapeVersion`).
/// Versions need not be semver but must be valid file names without `!`.
pub fn escape_version(v: &str) -> Result<String, VersionError> {
    if check_elem(v, PathKind::File).is_err() || v.contains('!') {
        return Err(VersionError::Disallowed {
            version: v.to_owned(),
        });
    }
    escape_string(v).ok_or_else(|| VersionError::Inconsistent {
        version: v.to_owned(),
    })
}

/// Whether [`escape_version`] accepts `v` (a valid file name without `!`), without building
/// the escaped text.
pub(crate) fn version_escapable(v: &str) -> bool {
    check_elem(v, PathKind::File).is_ok() && !v.contains('!')
}

/// Returns the version for an escaped version (`module.UnescapeVersion`).
/// The result must be a valid file name (it need not be semver).
pub fn unescape_version(escaped: &str) -> Result<String, VersionError> {
    let v = unescape_string(escaped).ok_or_else(|| VersionError::BadEscape {
        escaped: escaped.to_owned(),
    })?;
    if let Err(reason) = check_elem(&v, PathKind::File) {
        return Err(VersionError::InvalidEscapedVersion { version: v, reason });
    }
    Ok(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// module_test.go's `checkPathTests`: (path, module ok, import ok, file ok).
    const CHECK_PATH_TESTS: &[(&str, bool, bool, bool)] = &[
        ("x.y/z", true, true, true),
        ("x.y", true, true, true),
        ("", false, false, false),
        ("/x.y/z", false, false, false),
        ("x./z", false, false, false),
        (".x/z", false, true, true),
        ("-x/z", false, false, true),
        ("x..y/z", true, true, true),
        ("x.y/z/../../w", false, false, false),
        ("x.y//z", false, false, false),
        ("x.y/z//w", false, false, false),
        ("x.y/z/", false, false, false),
        ("x.y/z/v0", false, true, true),
        ("x.y/z/v1", false, true, true),
        ("x.y/z/v2", true, true, true),
        ("x.y/z/v2.0", false, true, true),
        ("X.y/z", false, true, true),
        ("!x.y/z", false, false, true),
        ("_x.y/z", false, true, true),
        ("x.y!/z", false, false, true),
        ("x.y\"/z", false, false, false),
        ("x.y#/z", false, false, true),
        ("x.y$/z", false, false, true),
        ("x.y%/z", false, false, true),
        ("x.y&/z", false, false, true),
        ("x.y'/z", false, false, false),
        ("x.y(/z", false, false, true),
        ("x.y)/z", false, false, true),
        ("x.y*/z", false, false, false),
        ("x.y+/z", false, true, true),
        ("x.y,/z", false, false, true),
        ("x.y-/z", true, true, true),
        ("x.y./zt", false, false, false),
        ("x.y:/z", false, false, false),
        ("x.y;/z", false, false, false),
        ("x.y</z", false, false, false),
        ("x.y=/z", false, false, true),
        ("x.y>/z", false, false, false),
        ("x.y?/z", false, false, false),
        ("x.y@/z", false, false, true),
        ("x.y[/z", false, false, true),
        ("x.y\\/z", false, false, false),
        ("x.y]/z", false, false, true),
        ("x.y^/z", false, false, true),
        ("x.y_/z", false, true, true),
        ("x.y`/z", false, false, false),
        ("x.y{/z", false, false, true),
        ("x.y}/z", false, false, true),
        ("x.y~/z", false, true, true),
        ("x.y/z!", false, false, true),
        ("x.y/z\"", false, false, false),
        ("x.y/z#", false, false, true),
        ("x.y/z$", false, false, true),
        ("x.y/z%", false, false, true),
        ("x.y/z&", false, false, true),
        ("x.y/z'", false, false, false),
        ("x.y/z(", false, false, true),
        ("x.y/z)", false, false, true),
        ("x.y/z*", false, false, false),
        ("x.y/z+", false, true, true),
        ("x.y/z,", false, false, true),
        ("x.y/z-", true, true, true),
        ("x.y/z.t", true, true, true),
        ("x.y/z/t", true, true, true),
        ("x.y/z:", false, false, false),
        ("x.y/z;", false, false, false),
        ("x.y/z<", false, false, false),
        ("x.y/z=", false, false, true),
        ("x.y/z>", false, false, false),
        ("x.y/z?", false, false, false),
        ("x.y/z@", false, false, true),
        ("x.y/z[", false, false, true),
        ("x.y/z\\", false, false, false),
        ("x.y/z]", false, false, true),
        ("x.y/z^", false, false, true),
        ("x.y/z_", true, true, true),
        ("x.y/z`", false, false, false),
        ("x.y/z{", false, false, true),
        ("x.y/z}", false, false, true),
        ("x.y/z~", true, true, true),
        ("x.y/x.foo", true, true, true),
        ("x.y/aux.foo", false, false, false),
        ("x.y/prn", false, false, false),
        ("x.y/prn", false, false, false),
        ("x.y/com", true, true, true),
        ("x.y/com1", false, false, false),
        ("x.y/com1.txt", false, false, false),
        ("x.y/calm1", true, true, true),
        ("x.y/z~", true, true, true),
        ("x.y/z~0", false, false, true),
        ("x.y/z~09", false, false, true),
        ("x.y/z09", true, true, true),
        ("x.y/z09~", true, true, true),
        ("x.y/z09~09z", true, true, true),
        ("x.y/z09~09z~09", false, false, true),
        ("github.com/!123/logrus", false, false, true),
        // Unicode letters are allowed in file paths only.
        ("github.com/user/unicode/испытание", false, false, true),
        ("../x", false, false, false),
        ("./y", false, false, false),
        ("x:y", false, false, false),
        ("\\temp\\foo", false, false, false),
        (".gitignore", false, true, true),
        (".github/ISSUE_TEMPLATE", false, true, true),
        ("x☺y", false, false, false),
    ];

    #[test]
    fn check_path_table() {
        for &(path, ok, import_ok, file_ok) in CHECK_PATH_TESTS {
            assert_eq!(
                check_path(path).is_ok(),
                ok,
                "check_path({path:?}) = {:?}",
                check_path(path)
            );
            assert_eq!(
                check_import_path(path).is_ok(),
                import_ok,
                "check_import_path({path:?}) = {:?}",
                check_import_path(path)
            );
            assert_eq!(
                check_file_path(path).is_ok(),
                file_ok,
                "check_file_path({path:?}) = {:?}",
                check_file_path(path)
            );
        }
    }

    #[test]
    fn check_path_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "x",
                r#"malformed module path "x": missing dot in first path element"#,
            ),
            ("", r#"malformed module path "": empty string"#),
            ("-x.y/z", r#"malformed module path "-x.y/z": leading dash"#),
            ("x.y//z", r#"malformed module path "x.y//z": double slash"#),
            (
                "x.y/z/",
                r#"malformed module path "x.y/z/": trailing slash"#,
            ),
            (
                "/x.y",
                r#"malformed module path "/x.y": empty path element"#,
            ),
            (
                "x.y/../z",
                r#"malformed module path "x.y/../z": invalid path element "..""#,
            ),
            (
                "x.y/.z",
                r#"malformed module path "x.y/.z": leading dot in path element"#,
            ),
            (
                "x.y/z.",
                r#"malformed module path "x.y/z.": trailing dot in path element"#,
            ),
            (
                "x.y/z@v1",
                r#"malformed module path "x.y/z@v1": invalid char '@'"#,
            ),
            (
                "x.y/Con.txt",
                r#"malformed module path "x.y/Con.txt": "Con" disallowed as path element component on Windows"#,
            ),
            (
                "x.y/abc~1",
                r#"malformed module path "x.y/abc~1": trailing tilde and digits in path element"#,
            ),
            (
                "X.y/z",
                r#"malformed module path "X.y/z": invalid char 'X' in first path element"#,
            ),
            (
                "x_y.com/z",
                r#"malformed module path "x_y.com/z": invalid char '_' in first path element"#,
            ),
            (
                "x.y/z/v1",
                r#"malformed module path "x.y/z/v1": invalid version"#,
            ),
            (
                "gopkg.in/yaml",
                r#"malformed module path "gopkg.in/yaml": invalid version"#,
            ),
            (
                "x.y/z\u{1}",
                r#"malformed module path "x.y/z\x01": invalid char '\x01'"#,
            ),
        ];
        for &(path, want) in cases {
            assert_eq!(check_path(path).unwrap_err().to_string(), want, "{path:?}");
        }
        assert_eq!(
            check_import_path("a/b@c").unwrap_err().to_string(),
            r#"malformed import path "a/b@c": invalid char '@'"#
        );
    }

    /// module_test.go's `splitPathVersionTests` plus the failures it documents.
    #[test]
    fn split_path_version_table() {
        let good: &[(&str, &str)] = &[
            ("x.y/z", ""),
            ("x.y/z", "/v2"),
            ("x.y/z", "/v3"),
            ("x.y/v", ""),
            ("gopkg.in/yaml", ".v0"),
            ("gopkg.in/yaml", ".v1"),
            ("gopkg.in/yaml", ".v2"),
            ("gopkg.in/yaml", ".v3"),
            ("gopkg.in/yaml", ".v2-unstable"),
            ("gopkg.in/user/pkg", ".v10"),
            ("x.y/z", "/v10"),
        ];
        for &(prefix, major) in good {
            let path = format!("{prefix}{major}");
            assert_eq!(split_path_version(&path), Some((prefix, major)), "{path}");
        }
        for bad in [
            "x.y/z/v0",
            "x.y/z/v1",
            "x.y/z/v2.0",
            "x.y/z/v05",
            "gopkg.in/yaml",
            "gopkg.in/yaml.v",
            "gopkg.in/yaml.v01",
            "gopkg.in/yaml.v1.0",
            "gopkg.in/yaml/v2",
            "gopkg.in/yaml.v2-",
        ] {
            assert_eq!(split_path_version(bad), None, "{bad}");
        }
        assert_eq!(split_path_version("x.y/zv2"), Some(("x.y/zv2", "")));
        assert_eq!(split_path_version("v2"), Some(("v2", "")));
        assert_eq!(split_path_version("/v2"), Some(("", "/v2")));
        assert_eq!(split_path_version(""), Some(("", "")));
    }

    /// module_test.go's `checkTests` (module.Check) expressed through
    /// check_path + split_path_version + check_path_major.
    #[test]
    fn check_module_version_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("rsc.io/quote", "0.1.0", false),
            ("rsc io/quote", "v1.0.0", false),
            ("github.com/go-yaml/yaml", "v0.8.0", true),
            ("github.com/go-yaml/yaml", "v1.0.0", true),
            ("github.com/go-yaml/yaml", "v2.0.0", false),
            ("github.com/go-yaml/yaml", "v2.1.5", false),
            ("github.com/go-yaml/yaml", "v3.0.0", false),
            ("github.com/go-yaml/yaml", "v2.0.0+incompatible", true),
            ("github.com/go-yaml/yaml/v2", "v1.0.0", false),
            ("github.com/go-yaml/yaml/v2", "v2.0.0", true),
            ("github.com/go-yaml/yaml/v2", "v2.1.5", true),
            ("github.com/go-yaml/yaml/v2", "v3.0.0", false),
            ("gopkg.in/yaml.v0", "v0.8.0", true),
            ("gopkg.in/yaml.v0", "v1.0.0", false),
            ("gopkg.in/yaml.v0", "v2.0.0", false),
            ("gopkg.in/yaml.v0", "v2.1.5", false),
            ("gopkg.in/yaml.v0", "v3.0.0", false),
            ("gopkg.in/yaml.v1", "v0.8.0", false),
            ("gopkg.in/yaml.v1", "v1.0.0", true),
            ("gopkg.in/yaml.v1", "v2.0.0", false),
            ("gopkg.in/yaml.v1", "v2.1.5", false),
            ("gopkg.in/yaml.v1", "v3.0.0", false),
            // For gopkg.in, .v1 means v1 only (not v0).
            // But early versions of vgo still generated v0 pseudo-versions for it.
            // Even though now we'd generate those as v1 pseudo-versions,
            // we accept the old pseudo-versions to avoid breaking existing go.mod files.
            // For example gopkg.in/yaml.v2@v2.2.1's go.mod requires check.v1 at a v0 pseudo-version.
            ("gopkg.in/check.v1", "v0.0.0", false),
            (
                "gopkg.in/check.v1",
                "v0.0.0-20160102150405-abcdef123456",
                true,
            ),
            ("gopkg.in/yaml.v2", "v1.0.0", false),
            ("gopkg.in/yaml.v2", "v2.0.0", true),
            ("gopkg.in/yaml.v2", "v2.1.5", true),
            ("gopkg.in/yaml.v2", "v3.0.0", false),
            ("gopkg.in/yaml.v2-unstable", "v2.0.0", true),
            ("gopkg.in/yaml.v2-unstable", "v1.0.0", false),
            ("rsc.io/quote", "v17.0.0", false),
            ("rsc.io/quote", "v17.0.0+incompatible", true),
        ];
        for &(path, version, ok) in cases {
            let got = check_path(path).is_ok()
                && crate::is_valid_semver(version)
                && split_path_version(path)
                    .is_some_and(|(_, major)| check_path_major(version, major).is_ok());
            assert_eq!(got, ok, "check({path}, {version})");
        }
    }

    #[test]
    fn check_path_major_messages() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "v2.0.0",
                "",
                r#"version "v2.0.0" invalid: should be v0 or v1, not v2"#,
            ),
            (
                "v1.0.0",
                "/v2",
                r#"version "v1.0.0" invalid: should be v2, not v1"#,
            ),
            (
                "v1.0.0",
                ".v2",
                r#"version "v1.0.0" invalid: should be v2, not v1"#,
            ),
            (
                "v1.0.0",
                ".v2-unstable",
                r#"version "v1.0.0" invalid: should be v2, not v1"#,
            ),
            (
                "bad",
                "",
                r#"version "bad" invalid: should be v0 or v1, not "#,
            ),
            (
                "v1.0.0",
                "v2",
                r#"version "v1.0.0" invalid: should be v2, not v1"#,
            ),
        ];
        for &(v, pm, want) in cases {
            assert_eq!(check_path_major(v, pm).unwrap_err().to_string(), want);
        }
        assert!(check_path_major("v3.1.0", "/v3").is_ok());
        assert!(check_path_major("v0.0.0-20160102150405-abcdef123456", ".v1-unstable").is_ok());
    }

    /// module_test.go's `escapeTests` / `badUnescape`.
    #[test]
    fn escape_path_table() {
        let cases: &[(&str, &str)] = &[
            (
                "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789",
                "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789",
            ),
            (
                "github.com/GoogleCloudPlatform/omega",
                "github.com/!google!cloud!platform/omega",
            ),
            (
                "github.com/Azure/azure-sdk-for-go",
                "github.com/!azure/azure-sdk-for-go",
            ),
            ("github.com/Sirupsen/logrus", "github.com/!sirupsen/logrus"),
            ("github.com/BurntSushi/toml", "github.com/!burnt!sushi/toml"),
        ];
        for &(path, esc) in cases {
            assert_eq!(escape_path(path).as_deref(), Ok(esc), "escape({path})");
            assert_eq!(unescape_path(esc).as_deref(), Ok(path), "unescape({esc})");
        }
        for bad in [
            "github.com/GoogleCloudPlatform/omega",
            "github.com/!google!cloud!platform!/omega",
            "github.com/!0google!cloud!platform/omega",
            "github.com/!_google!cloud!platform/omega",
            "github.com/!!google!cloud!platform/omega",
            "",
        ] {
            assert!(unescape_path(bad).is_err(), "unescape({bad:?}) should fail");
        }
        assert_eq!(
            unescape_path("Foo").unwrap_err().to_string(),
            r#"invalid escaped module path "Foo""#
        );
        assert_eq!(
            unescape_path("!example.com/x").unwrap_err().to_string(),
            r#"invalid escaped module path "!example.com/x": malformed module path "Example.com/x": invalid char 'E' in first path element"#
        );
        assert_eq!(
            unescape_path("example.com/../x").unwrap_err().to_string(),
            r#"invalid escaped module path "example.com/../x": malformed module path "example.com/../x": invalid path element "..""#
        );
        assert_eq!(
            escape_path("x").unwrap_err().to_string(),
            r#"malformed module path "x": missing dot in first path element"#
        );
        assert!(unescape_path("example.com/é").is_err());
    }

    #[test]
    fn escape_version_table() {
        let cases: &[(&str, &str)] = &[
            ("v1.2.3", "v1.2.3"),
            ("v1.2.3-RC1", "v1.2.3-!r!c1"),
            ("v2.0.0+incompatible", "v2.0.0+incompatible"),
            ("master", "master"),
            ("Master", "!master"),
            ("v1.0.0-a b#%", "v1.0.0-a b#%"),
        ];
        for &(v, esc) in cases {
            assert_eq!(escape_version(v).as_deref(), Ok(esc), "escape({v})");
            assert_eq!(unescape_version(esc).as_deref(), Ok(v), "unescape({esc})");
        }
        for bad in [
            "", "v1!", "a/b", "..", "v1.", "con", "a*b", "a\"b", "a:b", "a?b", "a\\b",
        ] {
            assert!(escape_version(bad).is_err(), "escape_version({bad:?})");
        }
        assert_eq!(
            escape_version("v1!").unwrap_err().to_string(),
            r#"version "v1!" invalid: disallowed version string"#
        );
        assert_eq!(
            escape_version("v1.0.0-é").unwrap_err().to_string(),
            "internal error: inconsistency in EscapePath"
        );
        // Tilde-digit short names are fine for versions (file-name rules).
        assert_eq!(escape_version("v1~1").as_deref(), Ok("v1~1"));
        assert_eq!(
            unescape_version("V1").unwrap_err().to_string(),
            r#"invalid escaped version "V1""#
        );
        assert_eq!(
            unescape_version("v1!").unwrap_err().to_string(),
            r#"invalid escaped version "v1!""#
        );
        assert_eq!(
            unescape_version("!v1/x").unwrap_err().to_string(),
            r#"invalid escaped version "V1/x": invalid char '/'"#
        );
        assert_eq!(
            unescape_version("").unwrap_err().to_string(),
            r#"invalid escaped version "": empty path element"#
        );
    }

    /// Strategy for valid module paths (filtered through check_path).
    pub(crate) fn module_path() -> impl Strategy<Value = String> {
        let label = "[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?";
        let first = prop::collection::vec(label, 2..4).prop_map(|v| v.join("."));
        let elem = "[A-Za-z0-9_~-]([A-Za-z0-9._~-]{0,8}[A-Za-z0-9_~-])?";
        let rest = prop::collection::vec(elem, 0..4);
        let suffix = prop_oneof![
            Just(String::new()),
            (2u32..30).prop_map(|n| format!("/v{n}")),
        ];
        let plain = (first, rest, suffix).prop_map(|(f, r, s)| {
            let mut p = f;
            for e in r {
                p.push('/');
                p.push_str(&e);
            }
            p.push_str(&s);
            p
        });
        let gopkg = ("[a-zA-Z][a-zA-Z0-9_-]{0,8}", 0u32..12, any::<bool>())
            .prop_map(|(n, v, u)| format!("gopkg.in/{n}.v{v}{}", if u { "-unstable" } else { "" }));
        prop_oneof![4 => plain, 1 => gopkg]
            .prop_filter("valid module path", |p| check_path(p).is_ok())
    }

    proptest! {
        #[test]
        fn escape_unescape_path_roundtrip(path in module_path()) {
            let esc = escape_path(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!esc.bytes().any(|b| b.is_ascii_uppercase()));
            prop_assert_eq!(unescape_path(&esc), Ok(path.clone()));
            prop_assert_eq!(escape_path(&unescape_path(&esc).unwrap_or_default()), Ok(esc));
        }

        #[test]
        fn escape_unescape_version_roundtrip(v in "[A-Za-z0-9#$%&()+,=@\\[\\]^_{}~ .-]{1,20}") {
            match escape_version(&v) {
                Ok(esc) => {
                    prop_assert!(!esc.bytes().any(|b| b.is_ascii_uppercase()));
                    prop_assert_eq!(unescape_version(&esc), Ok(v.clone()));
                }
                Err(_) => prop_assert!(check_file_path(&v).is_err() || v.contains('/')),
            }
        }

        #[test]
        fn escape_semver_roundtrip(v in "v[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(-[0-9A-Za-z.-]{1,10})?(\\+[0-9A-Za-z-]{1,10})?") {
            prop_assume!(crate::is_valid_semver(&v));
            let esc = escape_version(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(unescape_version(&esc), Ok(v));
        }

        #[test]
        fn checks_never_panic(s in "\\PC{0,40}") {
            let _ = check_path(&s);
            let _ = check_import_path(&s);
            let _ = check_file_path(&s);
            let _ = split_path_version(&s);
            let _ = check_path_major(&s, "/v2");
            let _ = escape_path(&s);
            let _ = escape_version(&s);
            if let Ok(p) = unescape_path(&s) {
                prop_assert!(check_path(&p).is_ok());
                prop_assert_eq!(escape_path(&p), Ok(s.clone()));
            }
            if let Ok(v) = unescape_version(&s) {
                prop_assert_eq!(escape_version(&v), Ok(s.clone()));
            }
        }
    }
}
