//! Go version syntax: a faithful port of `golang.org/x/mod/semver`, plus
//! `module.CanonicalVersion` and `module.IsPseudoVersion`, and the
//! [`Version`] type that tells canonical versions from version queries.
//!
//! Semantic versions here always carry the leading `v`, and `vMAJOR` /
//! `vMAJOR.MINOR` are accepted as shorthands for `vMAJOR.0.0` /
//! `vMAJOR.MINOR.0`, exactly as in Go.

use std::cmp::Ordering;

/// The parsed parts of a semantic version (Go's `semver.parsed`).
struct Parsed<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    short: &'static str,
    prerelease: &'a str,
    build: &'a str,
}

fn parse(v: &str) -> Option<Parsed<'_>> {
    let rest = v.strip_prefix('v')?;
    let (major, rest) = parse_int(rest)?;
    let mut p = Parsed {
        major,
        minor: "0",
        patch: "0",
        short: "",
        prerelease: "",
        build: "",
    };
    if rest.is_empty() {
        p.short = ".0.0";
        return Some(p);
    }
    let rest = rest.strip_prefix('.')?;
    let (minor, rest) = parse_int(rest)?;
    p.minor = minor;
    if rest.is_empty() {
        p.short = ".0";
        return Some(p);
    }
    let rest = rest.strip_prefix('.')?;
    let (patch, mut rest) = parse_int(rest)?;
    p.patch = patch;
    if rest.starts_with('-') {
        let (pre, r) = parse_prerelease(rest)?;
        p.prerelease = pre;
        rest = r;
    }
    if rest.starts_with('+') {
        let (build, r) = parse_build(rest)?;
        p.build = build;
        rest = r;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(p)
}

fn parse_int(v: &str) -> Option<(&str, &str)> {
    let b = v.as_bytes();
    if b.is_empty() || !b[0].is_ascii_digit() {
        return None;
    }
    let mut i = 1;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if b[0] == b'0' && i != 1 {
        return None;
    }
    Some((&v[..i], &v[i..]))
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

fn is_bad_num(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i == b.len() && i > 1 && b[0] == b'0'
}

fn is_num(v: &str) -> bool {
    v.bytes().all(|c| c.is_ascii_digit())
}

fn parse_prerelease(v: &str) -> Option<(&str, &str)> {
    let b = v.as_bytes();
    if b.first() != Some(&b'-') {
        return None;
    }
    let mut i = 1;
    let mut start = 1;
    while i < b.len() && b[i] != b'+' {
        if !is_ident_char(b[i]) && b[i] != b'.' {
            return None;
        }
        if b[i] == b'.' {
            if start == i || is_bad_num(&v[start..i]) {
                return None;
            }
            start = i + 1;
        }
        i += 1;
    }
    if start == i || is_bad_num(&v[start..i]) {
        return None;
    }
    Some((&v[..i], &v[i..]))
}

fn parse_build(v: &str) -> Option<(&str, &str)> {
    let b = v.as_bytes();
    if b.first() != Some(&b'+') {
        return None;
    }
    let mut i = 1;
    let mut start = 1;
    while i < b.len() {
        if !is_ident_char(b[i]) && b[i] != b'.' {
            return None;
        }
        if b[i] == b'.' {
            if start == i {
                return None;
            }
            start = i + 1;
        }
        i += 1;
    }
    if start == i {
        return None;
    }
    Some((&v[..i], &v[i..]))
}

/// Reports whether `v` is a valid semantic version string (`semver.IsValid`).
pub fn is_valid_semver(v: &str) -> bool {
    parse(v).is_some()
}

/// The canonical formatting of `v` (`semver.Canonical`): fills in missing
/// `.MINOR`/`.PATCH` and drops build metadata. `None` if `v` is invalid.
pub fn canonical_semver(v: &str) -> Option<String> {
    let p = parse(v)?;
    if !p.build.is_empty() {
        return Some(v[..v.len() - p.build.len()].to_owned());
    }
    if !p.short.is_empty() {
        return Some(format!("{v}{}", p.short));
    }
    Some(v.to_owned())
}

/// The canonical form of `v` as used for module versions
/// (`module.CanonicalVersion`): like [`canonical_semver`] but keeps a
/// `+incompatible` build suffix. `None` if `v` is invalid.
pub fn canonical_version(v: &str) -> Option<String> {
    let mut cv = canonical_semver(v)?;
    if semver_build(v) == "+incompatible" {
        cv.push_str("+incompatible");
    }
    Some(cv)
}

/// The major version prefix of `v` (`semver.Major`), e.g. `"v2"` for
/// `"v2.1.0"`. `None` if `v` is invalid.
pub fn semver_major(v: &str) -> Option<String> {
    let p = parse(v)?;
    Some(v[..1 + p.major.len()].to_owned())
}

/// The `vMAJOR.MINOR` prefix of `v` (`semver.MajorMinor`). `None` if invalid.
pub fn semver_major_minor(v: &str) -> Option<String> {
    let p = parse(v)?;
    let i = 1 + p.major.len();
    let j = i + 1 + p.minor.len();
    if j <= v.len() && v.as_bytes()[i] == b'.' && &v[i + 1..j] == p.minor {
        return Some(v[..j].to_owned());
    }
    Some(format!("{}.{}", &v[..i], p.minor))
}

/// The prerelease suffix of `v` including the leading `-`
/// (`semver.Prerelease`); `""` if there is none or `v` is invalid.
pub fn semver_prerelease(v: &str) -> &str {
    parse(v).map_or("", |p| p.prerelease)
}

/// The build suffix of `v` including the leading `+` (`semver.Build`);
/// `""` if there is none or `v` is invalid.
pub fn semver_build(v: &str) -> &str {
    parse(v).map_or("", |p| p.build)
}

fn compare_int(x: &str, y: &str) -> Ordering {
    if x == y {
        return Ordering::Equal;
    }
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

fn next_ident(x: &str) -> (&str, &str) {
    let i = x.find('.').unwrap_or(x.len());
    (&x[..i], &x[i..])
}

fn compare_prerelease(mut x: &str, mut y: &str) -> Ordering {
    if x == y {
        return Ordering::Equal;
    }
    if x.is_empty() {
        return Ordering::Greater;
    }
    if y.is_empty() {
        return Ordering::Less;
    }
    while !x.is_empty() && !y.is_empty() {
        // Skip the leading '-' or '.'.
        x = &x[1..];
        y = &y[1..];
        let (dx, rx) = next_ident(x);
        let (dy, ry) = next_ident(y);
        x = rx;
        y = ry;
        if dx != dy {
            let ix = is_num(dx);
            let iy = is_num(dy);
            if ix != iy {
                return if ix {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
            }
            if ix && dx.len() != dy.len() {
                return dx.len().cmp(&dy.len());
            }
            return dx.cmp(dy);
        }
    }
    if x.is_empty() {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

/// Compares two versions by semantic-version precedence (`semver.Compare`).
///
/// An invalid version is less than any valid one, and all invalid versions
/// are equal to each other. Build metadata is ignored.
pub fn compare_semver(a: &str, b: &str) -> Ordering {
    match (parse(a), parse(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(pa), Some(pb)) => compare_int(pa.major, pb.major)
            .then_with(|| compare_int(pa.minor, pb.minor))
            .then_with(|| compare_int(pa.patch, pb.patch))
            .then_with(|| compare_prerelease(pa.prerelease, pb.prerelease)),
    }
}

/// Matches Go's `pseudoVersionRE`:
/// `^v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)\d{14}-[A-Za-z0-9]+(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`
fn matches_pseudo_re(v: &str) -> bool {
    // The build part is the only place a '+' may appear.
    let (main, build) = match v.find('+') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, ""),
    };
    if v.contains('+')
        && (build.is_empty()
            || build
                .split('.')
                .any(|id| id.is_empty() || !id.bytes().all(is_ident_char)))
    {
        return false;
    }
    // Revision: [A-Za-z0-9]+ after the last '-'.
    let Some(dash) = main.rfind('-') else {
        return false;
    };
    let rev = &main[dash + 1..];
    if rev.is_empty() || !rev.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    // Timestamp: exactly 14 digits right before that '-'.
    let before = &main[..dash];
    if before.len() < 14 {
        return false;
    }
    let (prefix, stamp) = before.split_at(before.len() - 14);
    if !stamp.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    // prefix: v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)
    let Some(rest) = prefix.strip_prefix('v') else {
        return false;
    };
    let Some(rest) = skip_digits_then(rest, b'.') else {
        return false;
    };
    if rest == "0.0-" {
        return true;
    }
    let Some(rest) = skip_digits_then(rest, b'.') else {
        return false;
    };
    let Some(rest) = skip_digits_then(rest, b'-') else {
        return false;
    };
    rest == "0." || rest.ends_with(".0.")
}

/// Skips one or more ASCII digits followed by `sep`, returning what follows.
fn skip_digits_then(s: &str, sep: u8) -> Option<&str> {
    let b = s.as_bytes();
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || b.get(n) != Some(&sep) {
        return None;
    }
    Some(&s[n + 1..])
}

/// Reports whether `v` is a pseudo-version (`module.IsPseudoVersion`), such
/// as `v0.0.0-20191109021931-daa7c04131f5` or
/// `v1.2.4-0.20191109021931-daa7c04131f5+incompatible`.
pub fn is_pseudo_version(v: &str) -> bool {
    v.matches('-').count() >= 2 && is_valid_semver(v) && matches_pseudo_re(v)
}

/// What kind of canonical version a [`Version::Canonical`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionClass {
    /// A release such as `v1.2.3` (or `v2.0.0+incompatible`).
    Release,
    /// A prerelease such as `v1.2.3-rc.1` that is not a pseudo-version.
    Prerelease,
    /// A pseudo-version such as `v0.0.0-20191109021931-daa7c04131f5`.
    Pseudo,
}

/// A version as it appears in a GOPROXY request: either a canonical module
/// version (immutable content) or anything else, which the proxy must treat
/// as a query (branch name, commit hash, non-canonical semver such as `v1.2`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    /// `canonical_version(text) == Some(text)`.
    Canonical {
        /// The version text, e.g. `v1.2.3` or `v2.0.0+incompatible`.
        text: String,
        /// Release, prerelease or pseudo-version.
        class: VersionClass,
        /// Whether the text ends in `+incompatible`.
        incompatible: bool,
    },
    /// Any other (already unescaped) version string.
    Query(String),
}

impl Version {
    /// Classifies `v`: [`Version::Canonical`] iff
    /// `canonical_version(v) == Some(v)`, otherwise [`Version::Query`].
    pub fn parse(v: &str) -> Version {
        if canonical_version(v).as_deref() != Some(v) {
            return Version::Query(v.to_owned());
        }
        let class = if is_pseudo_version(v) {
            VersionClass::Pseudo
        } else if !semver_prerelease(v).is_empty() {
            VersionClass::Prerelease
        } else {
            VersionClass::Release
        };
        Version::Canonical {
            text: v.to_owned(),
            class,
            incompatible: semver_build(v) == "+incompatible",
        }
    }

    /// The version text.
    pub fn as_str(&self) -> &str {
        match self {
            Version::Canonical { text, .. } => text,
            Version::Query(q) => q,
        }
    }

    /// Whether this is a canonical version.
    pub fn is_canonical(&self) -> bool {
        matches!(self, Version::Canonical { .. })
    }

    /// The class of a canonical version; `None` for a query.
    pub fn class(&self) -> Option<VersionClass> {
        match self {
            Version::Canonical { class, .. } => Some(*class),
            Version::Query(_) => None,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// semver_test.go's `tests` table: sorted by precedence, with equal
    /// canonical forms adjacent; `""` means invalid.
    const SEMVER_TESTS: &[(&str, &str)] = &[
        ("bad", ""),
        ("v1-alpha.beta.gamma", ""),
        ("v1-pre", ""),
        ("v1+meta", ""),
        ("v1-pre+meta", ""),
        ("v1.2-pre", ""),
        ("v1.2+meta", ""),
        ("v1.2-pre+meta", ""),
        ("v1.0.0-alpha", "v1.0.0-alpha"),
        ("v1.0.0-alpha.1", "v1.0.0-alpha.1"),
        ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta"),
        ("v1.0.0-beta", "v1.0.0-beta"),
        ("v1.0.0-beta.2", "v1.0.0-beta.2"),
        ("v1.0.0-beta.11", "v1.0.0-beta.11"),
        ("v1.0.0-rc.1", "v1.0.0-rc.1"),
        ("v1", "v1.0.0"),
        ("v1.0", "v1.0.0"),
        ("v1.0.0", "v1.0.0"),
        ("v1.2", "v1.2.0"),
        ("v1.2.0", "v1.2.0"),
        ("v1.2.3-456", "v1.2.3-456"),
        ("v1.2.3-456.789", "v1.2.3-456.789"),
        ("v1.2.3-456-789", "v1.2.3-456-789"),
        ("v1.2.3-456a", "v1.2.3-456a"),
        ("v1.2.3-pre", "v1.2.3-pre"),
        ("v1.2.3-pre+meta", "v1.2.3-pre"),
        ("v1.2.3-pre.1", "v1.2.3-pre.1"),
        ("v1.2.3-zzz", "v1.2.3-zzz"),
        ("v1.2.3", "v1.2.3"),
        ("v1.2.3+meta", "v1.2.3"),
        ("v1.2.3+meta-pre", "v1.2.3"),
        ("v1.2.3+meta-pre.sha.256a", "v1.2.3"),
    ];

    #[test]
    fn semver_is_valid_and_canonical() {
        for &(input, out) in SEMVER_TESTS {
            assert_eq!(is_valid_semver(input), !out.is_empty(), "is_valid({input})");
            assert_eq!(
                canonical_semver(input).unwrap_or_default(),
                out,
                "canonical({input})"
            );
        }
        for bad in [
            "",
            "v",
            "1.2.3",
            "v01",
            "v1.02",
            "v1.2.03",
            "v1.2.3-",
            "v1.2.3+",
            "v1.2.3-01",
            "v1.2.3-a..b",
            "v1.2.3+a..b",
            "v1.2.3-a_b",
            "v1.2.3.4",
            "V1.2.3",
            "v1.2.3 ",
            "v-1",
            "v1.2.3-é",
        ] {
            assert!(!is_valid_semver(bad), "{bad:?} should be invalid");
            assert_eq!(canonical_semver(bad), None);
        }
        for good in [
            "v0",
            "v0.0.0",
            "v1.2.3-0",
            "v1.2.3-0a",
            "v1.2.3--",
            "v1.2.3+01",
            "v1.2.3-x.0",
        ] {
            assert!(is_valid_semver(good), "{good:?} should be valid");
        }
    }

    #[test]
    fn semver_major_minor_prerelease_build() {
        for &(input, out) in SEMVER_TESTS {
            let major = if out.is_empty() {
                None
            } else {
                Some(out[..out.find('.').unwrap_or(out.len())].to_owned())
            };
            assert_eq!(semver_major(input), major, "major({input})");
        }
        assert_eq!(semver_major("v2.1.0").as_deref(), Some("v2"));
        assert_eq!(semver_major_minor("v2.1.0").as_deref(), Some("v2.1"));
        assert_eq!(semver_major_minor("v2").as_deref(), Some("v2.0"));
        assert_eq!(semver_major_minor("v2.1").as_deref(), Some("v2.1"));
        assert_eq!(
            semver_major_minor("v2.1.0-pre+meta").as_deref(),
            Some("v2.1")
        );
        assert_eq!(semver_major_minor("bad"), None);
        assert_eq!(semver_prerelease("v2.1.0-pre+meta"), "-pre");
        assert_eq!(semver_prerelease("v2.1.0+meta"), "");
        assert_eq!(semver_prerelease("v2.1-pre"), "");
        assert_eq!(semver_build("v2.1.0+meta"), "+meta");
        assert_eq!(semver_build("v2.1.0-pre+meta"), "+meta");
        assert_eq!(semver_build("bad+meta"), "");
    }

    #[test]
    fn semver_compare_table() {
        for (i, &(vi, oi)) in SEMVER_TESTS.iter().enumerate() {
            for (j, &(vj, oj)) in SEMVER_TESTS.iter().enumerate() {
                let want = if oi == oj { Ordering::Equal } else { i.cmp(&j) };
                assert_eq!(compare_semver(vi, vj), want, "compare({vi}, {vj})");
            }
        }
        assert_eq!(compare_semver("v1.10.0", "v1.9.0"), Ordering::Greater);
        assert_eq!(compare_semver("v1.0.0-10", "v1.0.0-9"), Ordering::Greater);
        assert_eq!(compare_semver("v1.0.0-a", "v1.0.0-10"), Ordering::Greater);
        assert_eq!(compare_semver("v10.0.0", "v9.99.99"), Ordering::Greater);
        assert_eq!(compare_semver("", "v0.0.0-0"), Ordering::Less);
        assert_eq!(compare_semver("junk", "other junk"), Ordering::Equal);
    }

    #[test]
    fn canonical_version_keeps_incompatible() {
        let cases: &[(&str, Option<&str>)] = &[
            ("v1.2.3", Some("v1.2.3")),
            ("v2.0.0+incompatible", Some("v2.0.0+incompatible")),
            ("v2+incompatible", None),
            ("v2.0.0+meta", Some("v2.0.0")),
            ("v2.0.0+incompatible.1", Some("v2.0.0")),
            ("v2.0.0-pre+incompatible", Some("v2.0.0-pre+incompatible")),
            ("v1.2", Some("v1.2.0")),
            ("master", None),
            ("", None),
        ];
        for &(input, want) in cases {
            assert_eq!(canonical_version(input).as_deref(), want, "{input}");
        }
    }

    /// pseudo_test.go's `pseudoTests` versions, plus edge cases.
    #[test]
    fn pseudo_versions() {
        for v in [
            "v0.0.0-20060102150405-hash",
            "v1.0.0-20060102150405-hash",
            "v2.0.0-20060102150405-hash",
            "v0.0.1-0.20060102150405-hash",
            "v1.2.4-0.20060102150405-hash",
            "v1.2.100000000000000000-0.20060102150405-hash",
            "v1.2.3-pre.0.20060102150405-hash",
            "v1.3.0-pre.0.20060102150405-hash",
            "v0.0.0--.0.20060102150405-hash",
            "v1.0.1-0.20060102150405-hash+metadata",
            "v2.0.1-0.20060102150405-hash+incompatible",
            "v2.3.0-pre.0.20060102150405-hash+incompatible",
            "v0.0.0-20191109021931-daa7c04131f5",
            "v0.0.0-00010101000000-000000000000",
        ] {
            assert!(is_pseudo_version(v), "{v} should be a pseudo-version");
        }
        for v in [
            "v1.0.0",
            "v1.0.0-pre",
            "v0.0.0-2006010215040-hash",
            "v0.0.0-200601021504055-hash",
            "v1.2.3-20060102150405-hash",
            "v1.2.4-1.20060102150405-hash",
            "v0.0.0-20060102150405-",
            "v0.0.0-20060102150405-ha_sh",
            "v0.0.0-20060102150405-hash+",
            "v0.0.0-20060102150405",
            "v0.0.0-20060102150405-hash-more",
            "0.0.0-20060102150405-hash",
            "v0.0-20060102150405-hash",
            "v1.2.3-pre0.20060102150405-hash",
            "master",
            "",
        ] {
            assert!(!is_pseudo_version(v), "{v} should not be a pseudo-version");
        }
    }

    #[test]
    fn version_parse_classes() {
        let rel = Version::parse("v1.2.3");
        assert_eq!(
            rel,
            Version::Canonical {
                text: "v1.2.3".into(),
                class: VersionClass::Release,
                incompatible: false
            }
        );
        assert!(rel.is_canonical());
        assert_eq!(rel.as_str(), "v1.2.3");
        assert_eq!(rel.to_string(), "v1.2.3");
        assert_eq!(
            Version::parse("v1.2.3-rc.1").class(),
            Some(VersionClass::Prerelease)
        );
        assert_eq!(
            Version::parse("v0.0.0-20191109021931-daa7c04131f5").class(),
            Some(VersionClass::Pseudo)
        );
        assert_eq!(
            Version::parse("v2.0.0+incompatible"),
            Version::Canonical {
                text: "v2.0.0+incompatible".into(),
                class: VersionClass::Release,
                incompatible: true
            }
        );
        assert_eq!(
            Version::parse("v2.0.1-0.20060102150405-hash+incompatible"),
            Version::Canonical {
                text: "v2.0.1-0.20060102150405-hash+incompatible".into(),
                class: VersionClass::Pseudo,
                incompatible: true
            }
        );
        for q in [
            "v1.2",
            "v1",
            "master",
            "v1.2.3+meta",
            "daa7c04131f5",
            "latest",
            "",
        ] {
            let v = Version::parse(q);
            assert_eq!(v, Version::Query(q.into()));
            assert!(!v.is_canonical());
            assert_eq!(v.as_str(), q);
            assert_eq!(v.class(), None);
        }
    }

    proptest! {
        #[test]
        fn semver_properties(a in "v[0-9]{1,3}(\\.[0-9]{1,3}(\\.[0-9]{1,3}(-[0-9A-Za-z.-]{1,8})?(\\+[0-9A-Za-z.-]{1,8})?)?)?",
                             b in "v[0-9]{1,2}(\\.[0-9]{1,2}(\\.[0-9]{1,2}(-[0-9a-z.]{1,6})?)?)?") {
            prop_assert_eq!(compare_semver(&a, &b), compare_semver(&b, &a).reverse());
            prop_assert_eq!(compare_semver(&a, &a), Ordering::Equal);
            if let Some(c) = canonical_semver(&a) {
                prop_assert!(is_valid_semver(&c));
                prop_assert_eq!(canonical_semver(&c), Some(c.clone()));
                prop_assert_eq!(compare_semver(&a, &c), Ordering::Equal);
                let cv = canonical_version(&a).unwrap_or_default();
                prop_assert!(Version::parse(&cv).is_canonical());
            } else {
                prop_assert!(!is_valid_semver(&a));
                prop_assert_eq!(compare_semver(&a, &b).is_le(), true);
            }
        }

        #[test]
        fn semver_never_panics(s in "\\PC{0,24}") {
            let _ = canonical_semver(&s);
            let _ = canonical_version(&s);
            let _ = semver_major(&s);
            let _ = semver_major_minor(&s);
            let _ = is_pseudo_version(&s);
            let _ = compare_semver(&s, "v1.0.0");
            let v = Version::parse(&s);
            prop_assert_eq!(v.as_str(), s.as_str());
        }
    }
}
