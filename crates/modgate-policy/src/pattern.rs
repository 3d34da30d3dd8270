//! Module-path patterns: element-boundary prefixes, GOPRIVATE-style globs and
//! anchored regular expressions, each matched against a decoded module path.

use std::fmt;

use regex::{Regex, RegexBuilder};
use thiserror::Error;

use crate::glob::{first_bad_glob, glob_elements, match_prefix_patterns};

/// Upper bound on the compiled size (and lazy-DFA cache) of a regex pattern,
/// so a hostile configuration cannot make the gateway allocate unbounded
/// memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a pattern could not be built. Every message is one line and names the
/// offending pattern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    /// The prefix is not a usable module-path prefix.
    #[error("invalid prefix pattern {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An element of the glob list is not a valid `path.Match` pattern.
    #[error("invalid glob pattern {glob:?}: element {element:?} has a syntax error")]
    InvalidGlob {
        /// The whole comma-separated list as given.
        glob: String,
        /// The first malformed element (trailing `/` trimmed).
        element: String,
    },
    /// The glob list has no non-empty element, so it could never match.
    #[error("invalid glob pattern {glob:?}: no non-empty elements")]
    EmptyGlob {
        /// The list as given.
        glob: String,
    },
    /// The regular expression does not compile (syntax error or too big).
    #[error("invalid regex pattern {regex:?}: {message}")]
    InvalidRegex {
        /// The expression as given (before anchoring).
        regex: String,
        /// One-line description of the compile error.
        message: String,
    },
}

/// A rule deciding whether a module path belongs to a route.
///
/// Build patterns with [`Pattern::prefix`], [`Pattern::glob`] and
/// [`Pattern::regex`], which validate their input and (for regexes) add the
/// anchoring; the variants are public for matching on, not for direct
/// construction.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Element-boundary prefix, stored without a trailing `/`; `""` matches
    /// every module path.
    Prefix(String),
    /// Comma-separated `GOPRIVATE`-style glob list.
    Glob(String),
    /// Regular expression compiled as `^(?:…)$`.
    Regex(Regex),
}

impl Pattern {
    /// An element-boundary prefix: `corp.example.com` matches
    /// `corp.example.com` and `corp.example.com/x/y` but not
    /// `corp.example.comx`. One trailing `/` is trimmed; `""` matches every
    /// module path (an explicit catch-all). Prefixes starting with `/` or
    /// containing `//` are rejected.
    pub fn prefix(p: &str) -> Result<Pattern, PatternError> {
        let reason = if p.starts_with('/') {
            Some("must not start with '/'")
        } else if p.contains("//") {
            Some("must not contain \"//\"")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(PatternError::InvalidPrefix {
                prefix: p.to_owned(),
                reason,
            });
        }
        Ok(Pattern::Prefix(p.strip_suffix('/').unwrap_or(p).to_owned()))
    }

    /// A comma-separated glob list with `GOPRIVATE` semantics (see
    /// [`match_prefix_patterns`]). Every non-empty element must be a valid
    /// `path.Match` pattern and at least one element must be non-empty.
    pub fn glob(g: &str) -> Result<Pattern, PatternError> {
        if let Some(bad) = first_bad_glob(g) {
            return Err(PatternError::InvalidGlob {
                glob: g.to_owned(),
                element: bad.to_owned(),
            });
        }
        if glob_elements(g).next().is_none() {
            return Err(PatternError::EmptyGlob { glob: g.to_owned() });
        }
        Ok(Pattern::Glob(g.to_owned()))
    }

    /// A regular expression that must match the whole module path: it is
    /// compiled as `^(?:r)$` with a compiled-size limit of
    /// [`REGEX_SIZE_LIMIT`] bytes.
    ///
    /// `r` is first compiled on its own, so text such as `a)|(b` cannot
    /// escape the anchoring group.
    pub fn regex(r: &str) -> Result<Pattern, PatternError> {
        let invalid = |e: regex::Error| PatternError::InvalidRegex {
            regex: r.to_owned(),
            message: one_line_regex_error(&e),
        };
        build_regex(r).map_err(invalid)?;
        let re = build_regex(&format!("^(?:{r})$")).map_err(invalid)?;
        Ok(Pattern::Regex(re))
    }

    /// Reports whether the decoded module path `module` matches.
    pub fn matches(&self, module: &str) -> bool {
        match self {
            Pattern::Prefix(p) => prefix_matches(p, module),
            Pattern::Glob(g) => match_prefix_patterns(g, module),
            Pattern::Regex(re) => re.is_match(module),
        }
    }

    /// The pattern kind: `"prefix"`, `"glob"` or `"regex"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Pattern::Prefix(_) => "prefix",
            Pattern::Glob(_) => "glob",
            Pattern::Regex(_) => "regex",
        }
    }

    /// The pattern text as the user wrote it (a prefix without its trailing
    /// `/`; a regex without the added anchoring).
    pub fn text(&self) -> &str {
        match self {
            Pattern::Prefix(p) => p,
            Pattern::Glob(g) => g,
            Pattern::Regex(re) => {
                let s = re.as_str();
                s.strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s)
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind(), self.text())
    }
}

/// Element-boundary prefix test; tolerant of a trailing `/` in `p`.
pub(crate) fn prefix_matches(p: &str, module: &str) -> bool {
    let p = p.strip_suffix('/').unwrap_or(p);
    if p.is_empty() {
        return true;
    }
    match module.strip_prefix(p) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn build_regex(re: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(re)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Regex syntax errors render over several lines (pattern, caret, message);
/// keep only the message so the error stays one line.
fn one_line_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    if let Some(msg) = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:"))
    {
        return msg.trim().to_owned();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_element_boundary() {
        let p = Pattern::prefix("corp.example.com").unwrap();
        assert!(p.matches("corp.example.com"));
        assert!(p.matches("corp.example.com/x"));
        assert!(p.matches("corp.example.com/x/y"));
        assert!(!p.matches("corp.example.comx"));
        assert!(!p.matches("corp.example.co"));
        assert!(!p.matches("x/corp.example.com"));
        assert!(!p.matches(""));
    }

    #[test]
    fn prefix_trailing_slash_trimmed() {
        let p = Pattern::prefix("corp.example.com/team/").unwrap();
        assert_eq!(p.text(), "corp.example.com/team");
        assert!(p.matches("corp.example.com/team"));
        assert!(p.matches("corp.example.com/team/lib"));
        assert!(!p.matches("corp.example.com/teamx"));
        assert!(!p.matches("corp.example.com"));
    }

    #[test]
    fn prefix_empty_is_catch_all() {
        let p = Pattern::prefix("").unwrap();
        for m in ["", "a", "golang.org/x/mod", "corp.example.com/x/y"] {
            assert!(p.matches(m), "{m:?}");
        }
    }

    #[test]
    fn prefix_rejects_bad() {
        for bad in ["/", "/corp", "corp//x", "corp//"] {
            let err = Pattern::prefix(bad).unwrap_err();
            assert!(
                matches!(err, PatternError::InvalidPrefix { ref prefix, .. } if prefix == bad),
                "{bad:?}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")));
        }
    }

    #[test]
    fn glob_semantics() {
        let p = Pattern::glob("*.corp.example.com,rsc.io/private").unwrap();
        assert!(p.matches("git.corp.example.com/a/b"));
        assert!(p.matches("rsc.io/private/x"));
        assert!(!p.matches("corp.example.com"));
        assert!(!p.matches("rsc.io/quote"));
    }

    #[test]
    fn glob_rejects_bad() {
        assert_eq!(
            Pattern::glob("ok,[x-]").unwrap_err(),
            PatternError::InvalidGlob {
                glob: "ok,[x-]".into(),
                element: "[x-]".into()
            }
        );
        for empty in ["", ",", ",,/,"] {
            assert_eq!(
                Pattern::glob(empty).unwrap_err(),
                PatternError::EmptyGlob { glob: empty.into() }
            );
        }
        let msg = Pattern::glob("a,b\\").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid glob pattern \"a,b\\\\\": element \"b\\\\\" has a syntax error"
        );
    }

    #[test]
    fn regex_is_anchored() {
        let p = Pattern::regex("corp").unwrap();
        assert!(p.matches("corp"));
        assert!(!p.matches("xcorpx"));
        assert!(!p.matches("corp/x"));
        assert!(!p.matches("xcorp"));
        let alt = Pattern::regex("a|b").unwrap();
        assert!(alt.matches("a"));
        assert!(!alt.matches("ab"));
        assert!(!alt.matches("xa"));
        let any = Pattern::regex("corp\\.example\\.com/.*").unwrap();
        assert!(any.matches("corp.example.com/x/y"));
        assert!(!any.matches("corp.example.com"));
        // Multi-line mode inside the user's group cannot loosen the anchors.
        let m = Pattern::regex("(?m)a").unwrap();
        assert!(!m.matches("a\nb"));
    }

    #[test]
    fn regex_cannot_escape_group() {
        for bad in ["a)|(b", "a)(?:b", ")", "(", "a)|.*|(b"] {
            let err = Pattern::regex(bad).unwrap_err();
            assert!(
                matches!(err, PatternError::InvalidRegex { ref regex, .. } if regex == bad),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn regex_error_is_one_line() {
        let err = Pattern::regex("foo(").unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.starts_with("invalid regex pattern \"foo(\": "), "{msg}");
        assert!(msg.contains("unclosed group"), "{msg}");
    }

    #[test]
    fn regex_size_limited() {
        let err = Pattern::regex("\\w{1000}\\w{1000}\\w{1000}").unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(msg.contains("size limit"), "{msg}");
    }

    #[test]
    fn display_shows_user_text() {
        assert_eq!(
            Pattern::prefix("corp.example.com").unwrap().to_string(),
            "prefix \"corp.example.com\""
        );
        assert_eq!(
            Pattern::glob("corp.example.com,*.corp.example.com")
                .unwrap()
                .to_string(),
            "glob \"corp.example.com,*.corp.example.com\""
        );
        assert_eq!(
            Pattern::regex("^.*$").unwrap().to_string(),
            "regex \"^.*$\""
        );
        assert_eq!(Pattern::regex("a|b").unwrap().text(), "a|b");
    }

    fn elem() -> impl Strategy<Value = String> {
        // Module-path-ish elements; '/' excluded by construction.
        "[a-zA-Z0-9._~+-]{1,12}"
    }

    proptest! {
        #[test]
        fn prefix_matches_path_and_extensions(
            elems in prop::collection::vec(elem(), 1..6),
            ext in prop::collection::vec(elem(), 1..4),
            trailing_slash in any::<bool>(),
            suffix in "[a-zA-Z0-9._~+-]{1,4}",
        ) {
            let path = elems.join("/");
            let spec = if trailing_slash { format!("{path}/") } else { path.clone() };
            let p = Pattern::prefix(&spec).unwrap();
            prop_assert!(p.matches(&path));
            let mut longer = path.clone();
            for e in &ext {
                longer.push('/');
                longer.push_str(e);
                prop_assert!(p.matches(&longer), "{} vs {}", p, longer);
            }
            // Extending the last element is not an element-boundary match.
            let glued = format!("{path}{suffix}");
            prop_assert!(!p.matches(&glued));
        }

        #[test]
        fn constructors_never_panic(s in any::<String>(), m in any::<String>()) {
            if let Ok(p) = Pattern::prefix(&s) { let _ = p.matches(&m); }
            if let Ok(p) = Pattern::glob(&s) { let _ = p.matches(&m); }
            if let Ok(p) = Pattern::regex(&s) { let _ = p.matches(&m); }
        }
    }
}
