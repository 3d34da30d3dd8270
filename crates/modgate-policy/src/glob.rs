//! Faithful ports of Go's `path.Match` and `golang.org/x/mod/module.MatchPrefixPatterns`.
//!
//! These are the matching rules the `go` command applies to `GOPRIVATE`,
//! `GONOPROXY` and `GONOSUMDB`, so a modgate glob route behaves exactly like
//! the corresponding Go environment variable. The port works on bytes, like
//! Go's string handling, so that a `*` skipping into the middle of a
//! multi-byte character behaves as it does in Go (the partial character
//! decodes as U+FFFD).

use thiserror::Error;

/// A malformed `path.Match` pattern (Go's `path.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[error("syntax error in pattern")]
pub struct BadPattern;

/// Go's `utf8.RuneError`.
const RUNE_ERROR: u32 = 0xFFFD;

/// Reports whether `name` matches the shell pattern `pattern`, exactly as
/// Go's `path.Match` does.
///
/// Pattern syntax:
///
/// ```text
/// pattern:
///     { term }
/// term:
///     '*'         matches any sequence of non-/ characters
///     '?'         matches any single non-/ character
///     '[' [ '^' ] { character-range } ']'
///                 character class (must be non-empty)
///     c           matches character c (c != '*', '?', '\\', '[')
///     '\\' c      matches character c
///
/// character-range:
///     c           matches character c (c != '\\', '-', ']')
///     '\\' c      matches character c
///     lo '-' hi   matches character c for lo <= c <= hi
/// ```
///
/// The pattern must match all of `name`. A malformed pattern yields
/// [`BadPattern`]; like Go ≥ 1.16, the rest of the pattern is checked for
/// syntax errors even after a mismatch has been established.
pub fn path_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    match_bytes(pattern.as_bytes(), name.as_bytes())
}

fn match_bytes(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, BadPattern> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // Trailing * matches rest of string unless it has a /.
            return Ok(!name.contains(&b'/'));
        }
        // Look for match at current position.
        let here = match_chunk(chunk, name)?;
        // If we're the last chunk, make sure we've exhausted the name,
        // otherwise we'd give a false result even if we could still match
        // using the star.
        if let Some(t) = here {
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        if star {
            // Look for match skipping i+1 bytes. Cannot skip /.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    // If we're the last chunk, make sure we exhausted the name.
                    if !pattern.is_empty() || t.is_empty() {
                        name = t;
                        continue 'pattern;
                    }
                }
                i += 1;
            }
        }
        // Before returning false with no error, check that the remainder of
        // the pattern is syntactically valid.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Gets the next segment of `pattern`: a non-star string possibly preceded
/// by a star. Returns `(star, chunk, rest)`.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut inrange = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // A trailing backslash is left for match_chunk to report as a bad pattern.
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => inrange = true,
            b']' => inrange = false,
            b'*' if !inrange => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Checks whether `chunk` matches the beginning of `s`; if so returns the
/// remainder of `s`. `Ok(None)` is a mismatch of a well-formed chunk.
///
/// After the match has failed the chunk is still parsed to the end so that
/// syntax errors are reported.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, BadPattern> {
    let mut failed = false;
    while let Some((&c, after)) = chunk.split_first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                // Character class.
                let mut r = 0u32;
                if !failed {
                    let (rr, n) = decode_rune(s);
                    r = rr;
                    s = &s[n..];
                }
                chunk = after;
                // Possibly negated.
                let mut negated = false;
                if let [b'^', rest @ ..] = chunk {
                    negated = true;
                    chunk = rest;
                }
                // Parse all ranges.
                let mut matched = false;
                let mut nrange = 0usize;
                loop {
                    if let [b']', rest @ ..] = chunk {
                        if nrange > 0 {
                            chunk = rest;
                            break;
                        }
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if let [b'-', rest @ ..] = chunk {
                        let (h, rest) = get_esc(rest)?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s.first() == Some(&b'/') {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = after;
            }
            b'\\' => {
                let Some((&lit, after_lit)) = after.split_first() else {
                    return Err(BadPattern);
                };
                literal(lit, &mut s, &mut failed);
                chunk = after_lit;
            }
            _ => {
                literal(c, &mut s, &mut failed);
                chunk = after;
            }
        }
    }
    if failed {
        Ok(None)
    } else {
        Ok(Some(s))
    }
}

/// Matches one literal pattern byte against the head of `s`.
fn literal(c: u8, s: &mut &[u8], failed: &mut bool) {
    if *failed {
        return;
    }
    match s.split_first() {
        Some((&head, rest)) => {
            if head != c {
                *failed = true;
            }
            *s = rest;
        }
        None => *failed = true,
    }
}

/// Gets a possibly-escaped character from `chunk`, for a character class.
fn get_esc(mut chunk: &[u8]) -> Result<(u32, &[u8]), BadPattern> {
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern);
            }
        }
        Some(_) => {}
    }
    let (r, n) = decode_rune(chunk);
    if r == RUNE_ERROR && n == 1 {
        return Err(BadPattern);
    }
    let nchunk = &chunk[n..];
    if nchunk.is_empty() {
        return Err(BadPattern);
    }
    Ok((r, nchunk))
}

/// Go's `utf8.DecodeRune`: the first rune of `s` and its width in bytes;
/// `(RuneError, 0)` for empty input and `(RuneError, 1)` for an invalid or
/// truncated encoding.
fn decode_rune(s: &[u8]) -> (u32, usize) {
    let Some(&b0) = s.first() else {
        return (RUNE_ERROR, 0);
    };
    if b0 < 0x80 {
        return (u32::from(b0), 1);
    }
    let window = &s[..s.len().min(4)];
    let valid = match std::str::from_utf8(window) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&window[..e.valid_up_to()]).unwrap_or(""),
    };
    match valid.chars().next() {
        Some(ch) => (u32::from(ch), ch.len_utf8()),
        None => (RUNE_ERROR, 1),
    }
}

/// Splits a comma-separated glob list into the globs `MatchPrefixPatterns`
/// actually uses: one trailing `/` trimmed, empty elements skipped.
pub(crate) fn glob_elements(globs: &str) -> impl Iterator<Item = &str> {
    globs
        .split(',')
        .map(|g| g.strip_suffix('/').unwrap_or(g))
        .filter(|g| !g.is_empty())
}

/// The first element of a glob list that is not a valid `path.Match`
/// pattern, if any.
pub(crate) fn first_bad_glob(globs: &str) -> Option<&str> {
    glob_elements(globs).find(|g| path_match(g, "").is_err())
}

/// Checks that every non-empty element of the comma-separated list `globs`
/// is a syntactically valid `path.Match` pattern.
///
/// Elements are taken as [`match_prefix_patterns`] uses them (a trailing
/// `/` trimmed, empty elements skipped). Matching against the empty name
/// parses the whole pattern, so it reports [`BadPattern`] exactly when the
/// pattern is malformed.
pub fn validate_glob_list(globs: &str) -> Result<(), BadPattern> {
    match first_bad_glob(globs) {
        Some(_) => Err(BadPattern),
        None => Ok(()),
    }
}

/// Reports whether any path prefix of `target` matches one of the glob
/// patterns in the comma-separated list `globs`, exactly as
/// `golang.org/x/mod/module.MatchPrefixPatterns` (the `GOPRIVATE` rule).
///
/// Empty elements are skipped and one trailing `/` of each element is
/// trimmed. A glob with N slashes is matched against the first N+1 path
/// elements of `target`; a target with fewer elements does not match it.
/// Malformed globs never match.
pub fn match_prefix_patterns(globs: &str, target: &str) -> bool {
    glob_elements(globs).any(|glob| match_prefix_pattern(glob, target))
}

/// One element of [`match_prefix_patterns`]: whether the glob `glob` (already trimmed of its
/// trailing `/`) matches a path prefix of `target`.
pub(crate) fn match_prefix_pattern(glob: &str, target: &str) -> bool {
    // A glob with N+1 path elements (N slashes) needs to be matched
    // against the first N+1 path elements of target, which end just
    // before the N+1'th slash.
    let mut n = glob.bytes().filter(|&b| b == b'/').count();
    let mut prefix = target;
    for (i, b) in target.bytes().enumerate() {
        if b == b'/' {
            if n == 0 {
                prefix = &target[..i];
                break;
            }
            n -= 1;
        }
    }
    if n > 0 {
        // Not enough prefix elements.
        return false;
    }
    path_match(glob, prefix) == Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Go's `path/match_test.go` table (go1.23).
    const MATCH_TESTS: &[(&str, &str, bool, bool)] = &[
        // (pattern, name, match, bad pattern)
        ("abc", "abc", true, false),
        ("*", "abc", true, false),
        ("*c", "abc", true, false),
        ("a*", "a", true, false),
        ("a*", "abc", true, false),
        ("a*", "ab/c", false, false),
        ("a*/b", "abc/b", true, false),
        ("a*/b", "a/c/b", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
        ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
        ("ab[c]", "abc", true, false),
        ("ab[b-d]", "abc", true, false),
        ("ab[e-g]", "abc", false, false),
        ("ab[^c]", "abc", false, false),
        ("ab[^b-d]", "abc", false, false),
        ("ab[^e-g]", "abc", true, false),
        ("a\\*b", "a*b", true, false),
        ("a\\*b", "ab", false, false),
        ("a?b", "a☺b", true, false),
        ("a[^a]b", "a☺b", true, false),
        ("a???b", "a☺b", false, false),
        ("a[^a][^a][^a]b", "a☺b", false, false),
        ("[a-ζ]*", "α", true, false),
        ("*[a-ζ]", "A", false, false),
        ("a?b", "a/b", false, false),
        ("a*b", "a/b", false, false),
        ("[\\]a]", "]", true, false),
        ("[\\-]", "-", true, false),
        ("[x\\-]", "x", true, false),
        ("[x\\-]", "-", true, false),
        ("[x\\-]", "z", false, false),
        ("[\\-x]", "x", true, false),
        ("[\\-x]", "-", true, false),
        ("[\\-x]", "a", false, false),
        ("[]a]", "]", false, true),
        ("[-]", "-", false, true),
        ("[x-]", "x", false, true),
        ("[x-]", "-", false, true),
        ("[x-]", "z", false, true),
        ("[-x]", "x", false, true),
        ("[-x]", "-", false, true),
        ("[-x]", "a", false, true),
        ("\\", "a", false, true),
        ("[a-b-c]", "a", false, true),
        ("[", "a", false, true),
        ("[^", "a", false, true),
        ("[^bc", "a", false, true),
        ("a[", "a", false, true),
        ("a[", "ab", false, true),
        ("a[", "x", false, true),
        ("a/b[", "x", false, true),
        ("*x", "xxx", true, false),
    ];

    #[test]
    fn go_match_table() {
        for &(pattern, name, want, bad) in MATCH_TESTS {
            let want = if bad { Err(BadPattern) } else { Ok(want) };
            assert_eq!(
                path_match(pattern, name),
                want,
                "path_match({pattern:?}, {name:?})"
            );
        }
    }

    #[test]
    fn extra_match_cases() {
        // Results checked against go1.23 path.Match.
        let cases: &[(&str, &str, Result<bool, BadPattern>)] = &[
            ("", "", Ok(true)),
            ("", "a", Ok(false)),
            ("*", "", Ok(true)),
            ("**", "a/b", Ok(false)),
            ("*/*", "a/b", Ok(true)),
            ("?", "", Ok(false)),
            ("?", "é", Ok(true)),
            ("\\a", "a", Ok(true)),
            ("a\\", "a", Err(BadPattern)),
            // Bad pattern after a mismatch (Go ≥ 1.16).
            ("x*[", "abc", Err(BadPattern)),
            ("b*[", "abc", Err(BadPattern)),
            ("a*[", "abc", Err(BadPattern)),
            ("a/*[", "b/c", Err(BadPattern)),
            // Unterminated class reached only after a mismatch.
            ("z[a-", "a", Err(BadPattern)),
            ("[^a]", "a", Ok(false)),
            ("[é]", "é", Ok(true)),
            ("*é", "xé", Ok(true)),
            ("*[é]", "xé", Ok(true)),
            ("*\u{FFFD}", "é", Ok(false)),
            ("*?", "é", Ok(true)),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(
                path_match(pattern, name),
                *want,
                "path_match({pattern:?}, {name:?})"
            );
        }
    }

    /// Cases from x/mod's `TestMatchPrefixPatterns` plus GOPRIVATE examples.
    const PREFIX_TESTS: &[(&str, &str, bool)] = &[
        ("", "rsc.io/quote", false),
        ("/", "rsc.io/quote", false),
        ("*/quote", "rsc.io/quote", true),
        ("*/quo", "rsc.io/quote", false),
        ("*/quo??", "rsc.io/quote", true),
        ("*/quo*", "rsc.io/quote", true),
        ("*quo*", "rsc.io/quote", false),
        ("rsc.io", "rsc.io/quote", true),
        ("*.io", "rsc.io/quote", true),
        ("rsc.io/", "rsc.io/quote", true),
        ("rsc", "rsc.io/quote", false),
        ("rsc*", "rsc.io/quote", true),
        ("rsc.io", "rsc.io/quote/v3", true),
        ("*/quote", "rsc.io/quote/v3", true),
        ("*/quote/", "rsc.io/quote/v3", true),
        ("*/quote/*", "rsc.io/quote/v3", true),
        ("*/quote/*/", "rsc.io/quote/v3", true),
        ("*/v3", "rsc.io/quote/v3", false),
        ("*/*/v3", "rsc.io/quote/v3", true),
        ("*/*/*", "rsc.io/quote/v3", true),
        ("*/*/*/", "rsc.io/quote/v3", true),
        ("*/*/*", "rsc.io/quote", false),
        ("*/*/*/", "rsc.io/quote", false),
        ("*/*/*,,", "rsc.io/quote", false),
        ("*/*/*,,*/quote", "rsc.io/quote", true),
        (",,*/quote", "rsc.io/quote", true),
        // GOPRIVATE documentation example.
        (
            "*.corp.example.com,rsc.io/private",
            "git.corp.example.com/x",
            true,
        ),
        (
            "*.corp.example.com,rsc.io/private",
            "git.corp.example.com",
            true,
        ),
        (
            "*.corp.example.com,rsc.io/private",
            "corp.example.com/x",
            false,
        ),
        (
            "*.corp.example.com,rsc.io/private",
            "a.b.corp.example.com/x",
            true,
        ),
        ("*.corp.example.com,rsc.io/private", "rsc.io/private", true),
        (
            "*.corp.example.com,rsc.io/private",
            "rsc.io/private/quux",
            true,
        ),
        (
            "*.corp.example.com,rsc.io/private",
            "rsc.io/privatex",
            false,
        ),
        ("*.corp.example.com,rsc.io/private", "rsc.io/public", false),
        ("*.corp.example.com,rsc.io/private", "rsc.io", false),
        ("corp.example.com", "corp.example.com", true),
        ("corp.example.com", "corp.example.comx", false),
        ("corp.example.com", "corp.example.com/a/b", true),
        // Malformed globs never match but do not stop the list.
        ("[,rsc.io", "rsc.io/quote", true),
        ("[", "[", false),
        (",,,", "rsc.io", false),
        ("rsc.io//", "rsc.io/quote", false),
    ];

    #[test]
    fn match_prefix_patterns_table() {
        for &(globs, target, want) in PREFIX_TESTS {
            assert_eq!(
                match_prefix_patterns(globs, target),
                want,
                "match_prefix_patterns({globs:?}, {target:?})"
            );
        }
    }

    #[test]
    fn validate_glob_list_cases() {
        assert_eq!(validate_glob_list(""), Ok(()));
        assert_eq!(validate_glob_list(",,"), Ok(()));
        assert_eq!(
            validate_glob_list("*.corp.example.com,rsc.io/private"),
            Ok(())
        );
        assert_eq!(validate_glob_list("a*b*[cd]?/\\*"), Ok(()));
        assert_eq!(validate_glob_list("ok,["), Err(BadPattern));
        assert_eq!(validate_glob_list("a\\"), Err(BadPattern));
        assert_eq!(validate_glob_list("a\\/"), Err(BadPattern));
        assert_eq!(validate_glob_list("x*[-]"), Err(BadPattern));
        assert_eq!(first_bad_glob("ok,[x-],y"), Some("[x-]"));
        for &(pattern, _, _, bad) in MATCH_TESTS {
            if !pattern.contains(',') {
                assert_eq!(validate_glob_list(pattern).is_err(), bad, "{pattern:?}");
            }
        }
    }

    fn literal_elem() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._~-]{1,12}"
    }

    proptest! {
        #[test]
        fn literal_glob_matches_itself_and_extensions(
            elems in prop::collection::vec(literal_elem(), 1..5),
            ext in prop::collection::vec(literal_elem(), 0..3),
        ) {
            let target = elems.join("/");
            prop_assert!(match_prefix_patterns(&target, &target));
            let listed = format!(",{target}/,");
            prop_assert!(match_prefix_patterns(&listed, &target));
            let mut longer = target.clone();
            for e in &ext {
                longer.push('/');
                longer.push_str(e);
            }
            prop_assert!(match_prefix_patterns(&target, &longer));
            let glued = format!("{target}x");
            prop_assert!(!match_prefix_patterns(&target, &glued));
        }

        #[test]
        fn never_panics(pattern in any::<String>(), name in any::<String>()) {
            let _ = path_match(&pattern, &name);
            let _ = match_prefix_patterns(&pattern, &name);
            let _ = validate_glob_list(&pattern);
        }

        #[test]
        fn never_panics_on_metachar_soup(
            pattern in "[\\[\\]\\\\*?^a-c/é-]{0,12}",
            name in "[\\[\\]\\\\*?^a-c/é-]{0,12}",
        ) {
            let r = path_match(&pattern, &name);
            // A pattern that errors on some name errors on the empty name.
            if r.is_err() {
                prop_assert!(path_match(&pattern, "").is_err());
            }
        }
    }
}
