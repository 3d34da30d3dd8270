//! Module-path patterns: element-boundary prefixes, GOPRIVATE-style globs and
//! anchored regular expressions, each matched against a decoded module path.

use std::fmt;

use regex::{Regex, RegexBuilder};
use thiserror::Error;

use crate::glob::{first_bad_glob, glob_elements, match_prefix_patterns, path_match};

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

/// Patterns are equal when written alike; a regex compares by its source (the compiled
/// automaton has no equality, and one source always compiles to the same matcher).
impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Prefix(a), Pattern::Prefix(b)) | (Pattern::Glob(a), Pattern::Glob(b)) => {
                a == b
            }
            (Pattern::Regex(a), Pattern::Regex(b)) => a.as_str() == b.as_str(),
            // Listed in full, so that a new kind of pattern must say how it compares.
            (Pattern::Prefix(_) | Pattern::Glob(_) | Pattern::Regex(_), _) => false,
        }
    }
}

impl Eq for Pattern {}

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

    /// Whether the pattern could match `root` or some module path below it (`root/…`): what
    /// a clone of the repository whose root is `root` carries, whatever nested modules its
    /// history holds. With `case_insensitive` (a host that folds the case of repository
    /// names) letters compare without regard to case.
    ///
    /// Prefixes and globs are compared element by element (a glob matches the first elements
    /// of a path; those past `root`'s can be anything). A regex is decided on its automaton:
    /// the lazy DFA of the anchored expression is fed `root` and then `/`, and every state
    /// reachable from there is visited for a match. The answer errs only towards `true`:
    /// a regex whose automaton cannot be explored within [`REGEX_SIZE_LIMIT`] (or that the
    /// lazy DFA cannot decide, such as a Unicode word boundary) could match.
    pub fn may_match_within(&self, root: &str, case_insensitive: bool) -> bool {
        let fold = |s: &str| {
            if case_insensitive {
                s.to_lowercase()
            } else {
                s.to_owned()
            }
        };
        match self {
            Pattern::Prefix(p) => {
                let (p, root) = (fold(p), fold(root));
                prefix_matches(&p, &root) || p.starts_with(&format!("{root}/"))
            }
            Pattern::Glob(list) => {
                let root = fold(root);
                glob_elements(list).any(|g| glob_may_match_within(&fold(g), &root))
            }
            Pattern::Regex(re) => {
                regex_may_match_within(re.as_str(), root, case_insensitive).unwrap_or(true)
            }
        }
    }

    /// Whether the pattern matches `root` and every module path below it (`root/…`): an
    /// allow that covers everything a clone of the repository `root` carries. A prefix or a
    /// glob that matches `root` matches every path below it. A regex is decided on its lazy
    /// DFA: fed `root`, it must match there, and every state reachable by a module path's
    /// bytes below it (elements of letters, digits and `-._~`, joined by `/`) must match at
    /// the end of an element. Errs only towards `false` (cannot tell: does not cover).
    pub fn matches_all_within(&self, root: &str) -> bool {
        match self {
            Pattern::Prefix(p) => prefix_matches(p, root),
            Pattern::Glob(g) => match_prefix_patterns(g, root),
            Pattern::Regex(re) => regex_matches_all_within(re.as_str(), root).unwrap_or(false),
        }
    }

    /// The pattern with letters compared without regard to case, for a server that folds
    /// the case of names (a Git host): a prefix or glob lower-cased (ASCII, as module paths
    /// are; match it against a lower-cased path), a regex made case-insensitive with the flag
    /// in its text (`^(?:(?i:r))$`, so the policy's index, which reads the text, sees it). A
    /// regex whose case-insensitive form exceeds [`REGEX_SIZE_LIMIT`] stays as it is (`None`).
    pub fn case_folded(&self) -> Option<Pattern> {
        match self {
            Pattern::Prefix(p) => Some(Pattern::Prefix(p.to_ascii_lowercase())),
            Pattern::Glob(g) => Some(Pattern::Glob(g.to_ascii_lowercase())),
            Pattern::Regex(_) => build_regex(&format!("^(?:(?i:{}))$", self.text()))
                .ok()
                .map(Pattern::Regex),
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

/// Whether one glob of a list could match `root` or a path below it: a glob with N
/// elements matches the first N elements of a path; those of them within `root` must match
/// `root`'s, the others lie below it and could be anything. A malformed element could match
/// (it never reaches here from [`Pattern::glob`], which refuses it).
fn glob_may_match_within(glob: &str, root: &str) -> bool {
    glob.split('/')
        .zip(root.split('/'))
        .all(|(g, r)| path_match(g, r) != Ok(false))
}

/// Most lazy-DFA states [`regex_may_match_within`] visits before it answers "could match".
const MAX_REACHABLE_STATES: usize = 20_000;

/// The lazy DFA of an anchored pattern regex, walked one byte at a time. Every step gives up
/// (`None`) on anything the walk cannot be sure of: a cache that had to be cleared (state IDs
/// from before a clear are no longer valid), a quit state, a build or search error.
struct Walk {
    dfa: regex_automata::hybrid::dfa::DFA,
    cache: regex_automata::hybrid::dfa::Cache,
}

type StateId = regex_automata::hybrid::LazyStateID;

impl Walk {
    fn new(anchored: &str, case_insensitive: bool) -> Option<Walk> {
        use regex_automata::hybrid::dfa::DFA;
        use regex_automata::nfa::thompson;
        use regex_automata::util::syntax;
        let dfa = DFA::builder()
            .syntax(syntax::Config::new().case_insensitive(case_insensitive))
            .thompson(thompson::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
            .configure(DFA::config().cache_capacity(REGEX_SIZE_LIMIT))
            .build(anchored)
            .ok()?;
        let cache = dfa.create_cache();
        Some(Walk { dfa, cache })
    }

    /// The state after `bytes` from the anchored start.
    fn feed(&mut self, bytes: &[u8]) -> Option<StateId> {
        use regex_automata::util::start;
        use regex_automata::Anchored;
        let start = start::Config::new().anchored(Anchored::Yes);
        let mut sid = self.dfa.start_state(&mut self.cache, &start).ok()?;
        for &b in bytes {
            sid = self.step(sid, Some(b))?;
        }
        Some(sid)
    }

    /// The state after `byte` (`None`: the end of the input).
    fn step(&mut self, sid: StateId, byte: Option<u8>) -> Option<StateId> {
        let next = match byte {
            Some(b) => self.dfa.next_state(&mut self.cache, sid, b).ok()?,
            None => self.dfa.next_eoi_state(&mut self.cache, sid).ok()?,
        };
        (self.cache.clear_count() == 0 && !next.is_quit() && !next.is_unknown()).then_some(next)
    }

    /// Whether the input read so far (ending in state `sid`) matches.
    fn accepts(&mut self, sid: StateId) -> Option<bool> {
        Some(sid.is_match() || self.step(sid, None)?.is_match())
    }
}

/// Whether the anchored regex `anchored` (`^(?:…)$`) matches `root` or some `root/…`: its
/// lazy DFA fed `root`, then `/`, then every byte class from every state reached, breadth
/// first, looking for a state that matches at the end of the input. `None` when that cannot
/// be decided within the limits (see [`Walk`], or more than [`MAX_REACHABLE_STATES`]
/// states): the caller takes it as "could match".
fn regex_may_match_within(anchored: &str, root: &str, case_insensitive: bool) -> Option<bool> {
    let mut walk = Walk::new(anchored, case_insensitive)?;
    let at_root = walk.feed(root.as_bytes())?;
    if at_root.is_dead() {
        return Some(false);
    }
    if walk.accepts(at_root)? {
        return Some(true);
    }
    let below = walk.step(at_root, Some(b'/'))?;
    let classes: Vec<u8> = walk
        .dfa
        .byte_classes()
        .representatives(0..=255)
        .filter_map(|u| u.as_u8())
        .collect();
    let mut seen = std::collections::HashSet::from([below]);
    let mut queue = std::collections::VecDeque::from([below]);
    while let Some(sid) = queue.pop_front() {
        if sid.is_dead() {
            continue;
        }
        if walk.accepts(sid)? {
            return Some(true);
        }
        for &b in &classes {
            let next = walk.step(sid, Some(b))?;
            if seen.insert(next) {
                if seen.len() > MAX_REACHABLE_STATES {
                    return None;
                }
                queue.push_back(next);
            }
        }
    }
    Some(false)
}

/// Whether the anchored regex `anchored` matches `root` and every module path below it: its
/// lazy DFA fed `root` must match, and so must every state reached from `root/` by whole
/// elements of module-path bytes joined by `/`. `None` when that cannot be decided within
/// the limits: the caller takes it as "does not cover".
fn regex_matches_all_within(anchored: &str, root: &str) -> Option<bool> {
    let mut walk = Walk::new(anchored, false)?;
    let at_root = walk.feed(root.as_bytes())?;
    if !walk.accepts(at_root)? {
        return Some(false);
    }
    // The bytes of a module path element (Go's `module.CheckPath`).
    let element: Vec<u8> = (0..=u8::MAX)
        .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b))
        .collect();
    // (state, just after a `/`): there a path cannot end and no `/` may follow.
    let first = (walk.step(at_root, Some(b'/'))?, true);
    let mut seen = std::collections::HashSet::from([first]);
    let mut queue = std::collections::VecDeque::from([first]);
    while let Some((sid, slash)) = queue.pop_front() {
        if sid.is_dead() || (!slash && !walk.accepts(sid)?) {
            return Some(false);
        }
        let slash_byte: &[u8] = if slash { &[] } else { b"/" };
        for &b in element.iter().chain(slash_byte) {
            let next = (walk.step(sid, Some(b))?, b == b'/');
            if seen.insert(next) {
                if seen.len() > MAX_REACHABLE_STATES {
                    return None;
                }
                queue.push_back(next);
            }
        }
    }
    Some(true)
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
    fn patterns_are_equal_when_written_alike() {
        let re = |r: &str| Pattern::regex(r).expect("regex");
        assert_eq!(re("corp/.*"), re("corp/.*"));
        assert_ne!(re("corp/.*"), re("corp/.+"));
        assert_eq!(Pattern::prefix("corp/").ok(), Pattern::prefix("corp").ok());
        assert_ne!(Pattern::prefix("corp").ok(), Pattern::glob("corp").ok());
        assert_ne!(Pattern::glob("corp").ok(), Some(re("corp")));
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

    #[test]
    fn what_may_match_within_a_repository() {
        const ROOT: &str = "git.corp.example/team/open";
        // (pattern, matches within ROOT as spelled, … with case folded for ROOT in upper case)
        let cases = [
            (Pattern::prefix("git.corp.example/team/open/internal"), true),
            (Pattern::prefix("git.corp.example/team/open"), true),
            (Pattern::prefix("git.corp.example/team"), true),
            (Pattern::prefix(""), true),
            (Pattern::prefix("git.corp.example/team/opener"), false),
            (
                Pattern::prefix("git.corp.example/team/other/internal"),
                false,
            ),
            (Pattern::glob("git.corp.example/team/open/internal"), true),
            (Pattern::glob("git.corp.example/*/open/*/keys"), true),
            (Pattern::glob("other.example,git.corp.example/*/o?en"), true),
            (Pattern::glob("git.corp.example/team/closed/*"), false),
            (Pattern::glob("git.corp.example/team/op"), false),
            (
                Pattern::regex(r"git\.corp\.example/team/open/internal(/.*)?"),
                true,
            ),
            (Pattern::regex(r".*/internal"), true),
            (Pattern::regex(r"git\.corp\.example/team/open"), true),
            (Pattern::regex(r"git\.corp\.example/.*/keys/[a-z]+"), true),
            (
                Pattern::regex(r"git\.corp\.example/team/open-[a-z]+"),
                false,
            ),
            (
                Pattern::regex(r"git\.corp\.example/team/[a-n]+(/.*)?"),
                false,
            ),
            (Pattern::regex(r"[a-z.]+/team"), false),
            (Pattern::regex(r"(?i)GIT\.corp\.example/TEAM/open/x"), true),
        ];
        for (p, want) in cases {
            let p = p.expect("pattern");
            assert_eq!(p.may_match_within(ROOT, false), want, "{p}");
            // Every spelling a case-folding host takes for the same repository, the same.
            for root in ["git.corp.example/team/OPEN", "Git.Corp.Example/Team/Open"] {
                assert_eq!(p.may_match_within(root, true), want, "{p} within {root}");
            }
        }
        // As spelled, an upper-case spelling escapes a lower-case pattern; folded it does not.
        let p = Pattern::regex(r"git\.corp\.example/team/open/internal(/.*)?").expect("regex");
        assert!(!p.may_match_within("git.corp.example/team/Open", false));
        let p = Pattern::prefix("git.corp.example/team/open/internal").expect("prefix");
        assert!(!p.may_match_within("git.corp.example/team/OPEN", false));
        let p = Pattern::prefix("git.corp.example/Team/Open/internal").expect("prefix");
        assert!(p.may_match_within("git.corp.example/team/open", true));
        // A regex whose automaton the lazy DFA cannot decide could match (fails closed).
        let p = Pattern::regex(r"git\.corp\.example/team/zzz\b.*").expect("regex");
        assert!(p.may_match_within(ROOT, false));
    }

    #[test]
    fn what_matches_everything_within_a_repository() {
        const ROOT: &str = "git.corp.example/team/open";
        for (p, want) in [
            (Pattern::prefix("git.corp.example/team/open"), true),
            (Pattern::prefix("git.corp.example"), true),
            (Pattern::prefix(""), true),
            (
                Pattern::prefix("git.corp.example/team/open/internal"),
                false,
            ),
            (Pattern::glob("git.corp.example/*/open"), true),
            (Pattern::glob("git.corp.example/team/open/*"), false),
            (Pattern::regex(r"git\.corp\.example/team/open(/.*)?"), true),
            (Pattern::regex(r"git\.corp\.example/.*"), true),
            (Pattern::regex(r".*"), true),
            (Pattern::regex(r"git\.corp\.example/team/open"), false),
            (
                Pattern::regex(r"git\.corp\.example/team/open(/[a-z]+)*"),
                false,
            ),
            (
                Pattern::regex(r"git\.corp\.example/team/open(/[a-z]+)?"),
                false,
            ),
            (
                Pattern::regex(r"git\.corp\.example/team/open(/[^i].*)?"),
                false,
            ),
            (
                Pattern::regex(r"git\.corp\.example/team/open(/[-.\w~]+)*"),
                true,
            ),
            (
                Pattern::regex(r"git\.corp\.example/team/(open|x)(/.*)?"),
                true,
            ),
        ] {
            let p = p.expect("pattern");
            assert_eq!(p.matches_all_within(ROOT), want, "{p}");
        }
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

        /// Soundness of the clone checks: a pattern that matches the root or a path below it
        /// may match within it (as spelled, and in any case when folding); one said to match
        /// all within it matches every path below it.
        #[test]
        fn within_answers_agree_with_matches(
            root in prop::collection::vec("[a-cA-C]{1,3}", 1..4),
            below in prop::collection::vec("[a-cA-C._-]{1,3}", 0..3),
            spec in prop::collection::vec(
                prop_oneof![
                    Just("a".to_string()), Just("b".to_string()), Just("[a-b]".to_string()),
                    Just(".*".to_string()), Just("[^/]+".to_string()), Just("/".to_string()),
                    Just("(/.*)?".to_string()), Just("A".to_string()), Just("c?".to_string()),
                ],
                1..8,
            ),
            kind in 0..3u8,
        ) {
            let root = root.join("/");
            let path = if below.is_empty() {
                root.clone()
            } else {
                format!("{root}/{}", below.join("/"))
            };
            let text = spec.concat();
            let pattern = match kind {
                0 => Pattern::regex(&text),
                1 => Pattern::prefix(&text.replace(['[', ']', '(', ')', '?', '*', '^', '+', '.'], "")),
                _ => Pattern::glob(&text.replace(['(', ')', '+', '.'], "")),
            };
            let Ok(p) = pattern else { return Ok(()) };
            if p.matches(&path) {
                prop_assert!(p.may_match_within(&root, false), "{p} matches {path}");
            }
            if p.matches(&path.to_lowercase()) || p.matches(&path.to_uppercase()) {
                prop_assert!(p.may_match_within(&root, true), "{p} matches a case of {path}");
            }
            if p.matches_all_within(&root) {
                prop_assert!(p.matches(&path), "{p} said to cover {root}, not {path}");
            }
        }
    }

    #[test]
    fn case_folded_patterns_match_lower_cased_paths_of_any_spelling() {
        let cases = [
            (
                Pattern::prefix("git.corp.example/Team/Secret"),
                "git.corp.example/team/secret/sub",
            ),
            (
                Pattern::glob("git.corp.example/Team/*"),
                "git.corp.example/team/glob",
            ),
            (
                Pattern::regex(r"git\.corp\.example/Team/Rx(/.*)?"),
                "git.corp.example/team/rx/internal",
            ),
            (Pattern::regex("a|B"), "b"),
        ];
        for (p, lower) in cases {
            let p = p.expect("pattern");
            assert!(!p.matches(lower), "{p:?} is case-sensitive");
            let folded = p.case_folded().expect("folds");
            assert!(folded.matches(lower), "{folded:?} on {lower}");
            assert_eq!(folded.case_folded().map(|f| f.matches(lower)), Some(true));
        }
        // Folding never makes a pattern match a path it could not match in some spelling.
        let p = Pattern::regex("x/[A-Z]+").expect("pattern");
        let folded = p.case_folded().expect("folds");
        assert!(folded.matches("x/abc") && !folded.matches("x/1"));
    }
}
