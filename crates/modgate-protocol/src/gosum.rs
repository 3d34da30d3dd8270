//! The module versions a Go build needs, read from the files that list them: `go.sum`
//! (`<module> <version>[/go.mod] h1:<hash>`), the `require` directives of `go.mod`, and plain
//! module lists (`module@version` per line, `#` comments). `modgate warm` uses these to know
//! what to pre-fetch through a gateway.
//!
//! Pure functions only: no I/O, no panics on input. Every module path passes [`check_path`]
//! and every version is canonical and matches the path's major-version suffix
//! ([`check_path_major`]), so each [`ModVersion`] can be escaped with
//! [`escape_path`](crate::escape_path) / [`escape_version`](crate::escape_version) and
//! requested from a GOPROXY. Errors carry the 1-based line number.
//!
//! * [`parse_go_sum`] — a version that appears only with `/go.mod` needs only its `.mod`
//!   (module graph pruning); one with a plain line also needs its `.zip`.
//! * [`parse_go_mod_requires`] — `require` in single-line and block form, quoted paths,
//!   `// indirect` and other comments; `module`, `go`, `toolchain`, `replace`, `exclude`,
//!   `retract`, `tool`, `godebug`, `ignore` and unknown directives are skipped. The lexer
//!   follows `golang.org/x/mod/modfile` (punctuation tokens, `//` comments only at the start
//!   of a token, `"..."` and `` `...` `` strings on one line, `verb (` blocks); versions are
//!   canonicalised like `modfile` does (`v1.2` → `v1.2.0`).
//! * [`parse_module_list`] — `module@version` lines; `module@version/go.mod` asks for the
//!   `.mod` only.
//! * [`dedupe`] — merges repeated module versions, keeping first-seen order.

use std::collections::HashMap;
use std::fmt;

use crate::error::{go_quote, PathError, VersionError};
use crate::escape::{check_path, check_path_major, split_path_version};
use crate::version::canonical_version;

/// One module version to fetch: its `.info` and `.mod` always, its `.zip` when `want_zip`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModVersion {
    /// Module path, e.g. `github.com/Azure/go-autorest`.
    pub module: String,
    /// Canonical version, e.g. `v14.2.0+incompatible`.
    pub version: String,
    /// Whether the module's source (`.zip`) is needed, not just its `go.mod`.
    pub want_zip: bool,
}

impl ModVersion {
    /// A module version (not checked; the parsers check what they return).
    pub fn new(module: impl Into<String>, version: impl Into<String>, want_zip: bool) -> Self {
        ModVersion {
            module: module.into(),
            version: version.into(),
            want_zip,
        }
    }
}

impl fmt::Display for ModVersion {
    /// `module@version`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.module, self.version)
    }
}

/// A line of a `go.sum`, `go.mod` or module list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct GoSumError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub kind: GoSumErrorKind,
}

/// What is wrong with a line (see [`GoSumError`]). Every `Display` is one line; text taken
/// from the input is quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoSumErrorKind {
    /// A `go.sum` line that does not have exactly three fields.
    #[error("wrong number of fields ({found}), want \"<module> <version>[/go.mod] h1:<hash>\"")]
    Fields {
        /// How many whitespace-separated fields the line has.
        found: usize,
    },
    /// A `go.sum` hash that is not `h<N>:<base64>`.
    #[error("malformed hash {}, want h1:<base64>", go_quote(hash))]
    Hash {
        /// The hash field.
        hash: String,
    },
    /// The module path fails `module.CheckPath`.
    #[error("{0}")]
    Path(PathError),
    /// The version is not a (canonical) semantic version.
    #[error("{}: version {} invalid: {reason}", module, go_quote(version))]
    Version {
        /// Module path the version belongs to.
        module: String,
        /// The version text.
        version: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// The version does not match the module path's major-version suffix.
    #[error("{module}: {error}")]
    PathMajor {
        /// Module path.
        module: String,
        /// Go's `CheckPathMajor` error.
        error: VersionError,
    },
    /// A module-list line that is not `module@version`.
    #[error("{} is not module@version", go_quote(text))]
    NotModuleVersion {
        /// The line (comment removed, trimmed).
        text: String,
    },
    /// `go.mod` syntax error (wording after Go's `modfile`).
    #[error("{0}")]
    Syntax(String),
}

fn err(line: usize, kind: GoSumErrorKind) -> GoSumError {
    GoSumError { line, kind }
}

/// `module.Check` for an exact version: a valid module path, a canonical version and a
/// matching major-version suffix.
fn check_module_version(module: &str, version: &str) -> Result<(), GoSumErrorKind> {
    check_path(module).map_err(GoSumErrorKind::Path)?;
    match canonical_version(version) {
        Some(c) if c == version => {}
        Some(_) => {
            return Err(GoSumErrorKind::Version {
                module: module.to_owned(),
                version: version.to_owned(),
                reason: "not a canonical version (want e.g. v1.2.3)",
            })
        }
        None => {
            return Err(GoSumErrorKind::Version {
                module: module.to_owned(),
                version: version.to_owned(),
                reason: "not a semantic version",
            })
        }
    }
    // check_path passed, so the suffix splits.
    let path_major = split_path_version(module).map_or("", |(_, pm)| pm);
    check_path_major(version, path_major).map_err(|error| GoSumErrorKind::PathMajor {
        module: module.to_owned(),
        error,
    })
}

/// Whether a `go.sum` hash looks like `h1:<base64>` (any `h<digits>:` algorithm is accepted,
/// as Go itself only compares the text).
fn valid_hash(h: &str) -> bool {
    let Some((alg, sum)) = h.split_once(':') else {
        return false;
    };
    let alg_ok =
        alg.len() >= 2 && alg.starts_with('h') && alg[1..].bytes().all(|b| b.is_ascii_digit());
    let sum_ok = !sum.is_empty()
        && sum
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    alg_ok && sum_ok
}

/// Parses a `go.sum` (or `go.work.sum`): one `<module> <version>[/go.mod] <hash>` per line,
/// blank lines ignored (like Go's `readGoSum`).
///
/// Returns each module version once, in first-seen order; `want_zip` is set when the version
/// has a line without `/go.mod` (its source was hashed, so a build needs it). A version that
/// only has a `/go.mod` line was needed for the module graph alone.
pub fn parse_go_sum(text: &str) -> Result<Vec<ModVersion>, GoSumError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let [module, version, hash] = fields[..] else {
            return Err(err(
                n,
                GoSumErrorKind::Fields {
                    found: fields.len(),
                },
            ));
        };
        let (version, want_zip) = match version.strip_suffix("/go.mod") {
            Some(v) => (v, false),
            None => (version, true),
        };
        check_module_version(module, version).map_err(|k| err(n, k))?;
        if !valid_hash(hash) {
            return Err(err(
                n,
                GoSumErrorKind::Hash {
                    hash: hash.to_owned(),
                },
            ));
        }
        out.push(ModVersion::new(module, version, want_zip));
    }
    Ok(dedupe(out))
}

/// Parses a module list: one `module@version` per line (`module@version/go.mod` for the
/// `.mod` only), `#` starts a comment, blank lines ignored. Versions must be canonical.
pub fn parse_module_list(text: &str) -> Result<Vec<ModVersion>, GoSumError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        // `#` cannot occur in a module path or a canonical version.
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let not_mv = || {
            err(
                n,
                GoSumErrorKind::NotModuleVersion {
                    text: line.to_owned(),
                },
            )
        };
        if line.contains(char::is_whitespace) {
            return Err(not_mv());
        }
        let Some((module, version)) = line.split_once('@') else {
            return Err(not_mv());
        };
        if module.is_empty() || version.is_empty() {
            return Err(not_mv());
        }
        let (version, want_zip) = match version.strip_suffix("/go.mod") {
            Some(v) => (v, false),
            None => (version, true),
        };
        check_module_version(module, version).map_err(|k| err(n, k))?;
        out.push(ModVersion::new(module, version, want_zip));
    }
    Ok(dedupe(out))
}

/// Merges repeated module versions: each appears once, at its first position, wanting its
/// `.zip` if any occurrence did.
pub fn dedupe(list: impl IntoIterator<Item = ModVersion>) -> Vec<ModVersion> {
    let mut out: Vec<ModVersion> = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for mv in list {
        match seen.get(&(mv.module.clone(), mv.version.clone())) {
            Some(&i) => out[i].want_zip |= mv.want_zip,
            None => {
                seen.insert((mv.module.clone(), mv.version.clone()), out.len());
                out.push(mv);
            }
        }
    }
    out
}

/// One `go.mod` token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An identifier or a quoted string (already unquoted).
    Word(String),
    /// One of `( ) [ ] { } ,`.
    Punct(char),
}

fn is_punct(c: char) -> bool {
    matches!(c, '(' | ')' | '[' | ']' | '{' | '}' | ',')
}

/// Splits one `go.mod` line into tokens, dropping a `//` comment (only recognised at the
/// start of a token, as in `modfile`).
fn lex_line(line: &str, n: usize) -> Result<Vec<Token>, GoSumError> {
    let syntax = |m: String| err(n, GoSumErrorKind::Syntax(m));
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if line[start..].starts_with("//") {
            break;
        }
        if is_punct(c) {
            chars.next();
            tokens.push(Token::Punct(c));
            continue;
        }
        if c == '"' || c == '`' {
            chars.next();
            let mut end = None;
            while let Some((j, d)) = chars.next() {
                if d == c {
                    end = Some(j);
                    break;
                }
                if d == '\\' && c == '"' {
                    chars.next();
                }
            }
            let Some(end) = end else {
                return Err(syntax("unexpected newline in string".to_owned()));
            };
            let body = &line[start + 1..end];
            let word = if c == '`' {
                body.to_owned()
            } else {
                unquote(body).ok_or_else(|| {
                    syntax(format!("invalid quoted string: {}", &line[start..=end]))
                })?
            };
            tokens.push(Token::Word(word));
            continue;
        }
        if c.is_control() {
            return Err(syntax(format!(
                "unexpected input character {}",
                crate::error::go_quote_rune(c)
            )));
        }
        let mut end = line.len();
        while let Some(&(j, d)) = chars.peek() {
            if d.is_whitespace() || is_punct(d) || d == '"' || d == '`' {
                end = j;
                break;
            }
            if d.is_control() {
                return Err(syntax(format!(
                    "unexpected input character {}",
                    crate::error::go_quote_rune(d)
                )));
            }
            chars.next();
        }
        tokens.push(Token::Word(line[start..end].to_owned()));
    }
    Ok(tokens)
}

/// Go's `strconv.Unquote` for the inside of a double-quoted string; `None` if malformed.
pub(crate) fn unquote(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '"' || c == '\n' {
            return None;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = it.next()?;
        let hex = |it: &mut std::str::Chars<'_>, n: usize| -> Option<u32> {
            let digits: String = it.by_ref().take(n).collect();
            if digits.len() != n {
                return None;
            }
            u32::from_str_radix(&digits, 16).ok()
        };
        match e {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            'x' => out.push(char::from_u32(hex(&mut it, 2)?)?),
            'u' => out.push(char::from_u32(hex(&mut it, 4)?)?),
            'U' => out.push(char::from_u32(hex(&mut it, 8)?)?),
            '0'..='7' => {
                let rest: String = it.by_ref().take(2).collect();
                if rest.len() != 2 {
                    return None;
                }
                let v = u32::from_str_radix(&format!("{e}{rest}"), 8).ok()?;
                if v > 255 {
                    return None;
                }
                out.push(char::from_u32(v)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// One `require` line's arguments → a module version to fetch (source included).
fn parse_require(args: &[Token], n: usize) -> Result<ModVersion, GoSumError> {
    let usage = || {
        err(
            n,
            GoSumErrorKind::Syntax("usage: require module/path v1.2.3".to_owned()),
        )
    };
    let [Token::Word(module), Token::Word(version)] = args else {
        return Err(usage());
    };
    // modfile canonicalises what it can (`v1.2` → `v1.2.0`) and rejects the rest.
    let Some(canonical) = canonical_version(version) else {
        return Err(err(
            n,
            GoSumErrorKind::Version {
                module: module.clone(),
                version: version.clone(),
                reason: "must be of the form v1.2.3",
            },
        ));
    };
    check_module_version(module, &canonical).map_err(|k| err(n, k))?;
    Ok(ModVersion::new(module.as_str(), canonical, true))
}

/// Parses the `require` directives of a `go.mod` (single-line `require m v` and
/// `require ( ... )` blocks). Each required module version wants its `.zip`: since Go 1.17
/// a `go.mod` lists every module that provides a package to the build.
///
/// Other directives and blocks are skipped without being interpreted, so `replace`d
/// requirements are still returned under their original path.
pub fn parse_go_mod_requires(text: &str) -> Result<Vec<ModVersion>, GoSumError> {
    let mut out = Vec::new();
    // (verb, line the block started on) while inside a `verb (` block.
    let mut block: Option<(String, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let tokens = lex_line(line, n)?;
        if tokens.is_empty() {
            continue;
        }
        if let Some((verb, _)) = &block {
            if tokens[0] == Token::Punct(')') {
                if tokens.len() > 1 {
                    return Err(err(
                        n,
                        GoSumErrorKind::Syntax(
                            "syntax error (expected newline after closing paren)".to_owned(),
                        ),
                    ));
                }
                block = None;
                continue;
            }
            if verb == "require" {
                out.push(parse_require(&tokens, n)?);
            }
            continue;
        }
        // `verb (` at the end of a line opens a block; `verb ()` is an empty block; a
        // parenthesis anywhere else is an ordinary token.
        let (head, opens_block) = match tokens.as_slice() {
            [head @ .., Token::Punct('(')] if !head.is_empty() => (head, true),
            [head @ .., Token::Punct('('), Token::Punct(')')] if !head.is_empty() => (head, false),
            _ => (tokens.as_slice(), false),
        };
        let Token::Word(verb) = &head[0] else {
            continue;
        };
        if opens_block {
            if verb == "require" && head.len() > 1 {
                return Err(err(
                    n,
                    GoSumErrorKind::Syntax(format!(
                        "unknown block type: {}",
                        head.iter()
                            .map(|t| match t {
                                Token::Word(w) => w.clone(),
                                Token::Punct(c) => c.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    )),
                ));
            }
            block = Some((verb.clone(), n));
            continue;
        }
        if verb == "require" && head.len() == tokens.len() {
            out.push(parse_require(&tokens[1..], n)?);
        }
    }
    if let Some((verb, start)) = block {
        return Err(err(
            start,
            GoSumErrorKind::Syntax(format!("unexpected EOF in {verb} block (no closing paren)")),
        ));
    }
    Ok(dedupe(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mv(m: &str, v: &str, zip: bool) -> ModVersion {
        ModVersion::new(m, v, zip)
    }

    const H: &str = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn go_sum_mod_only_and_zip() {
        let text = format!(
            "github.com/Azure/go-autorest v14.2.0+incompatible {H}\n\
             github.com/Azure/go-autorest v14.2.0+incompatible/go.mod {H}\n\
             \n\
             golang.org/x/text v0.3.0/go.mod {H}\n\
             gopkg.in/yaml.v2 v2.4.0/go.mod {H}\r\n\
             gopkg.in/yaml.v2 v2.4.0 {H}\n\
             example.com/m/v2 v2.0.0-20240315101112-abcdefabcdef {H}\n\
             \t  example.com/zip-only v1.0.0   {H}  \n"
        );
        let got = parse_go_sum(&text).expect("parse");
        assert_eq!(
            got,
            vec![
                mv("github.com/Azure/go-autorest", "v14.2.0+incompatible", true),
                mv("golang.org/x/text", "v0.3.0", false),
                mv("gopkg.in/yaml.v2", "v2.4.0", true),
                mv(
                    "example.com/m/v2",
                    "v2.0.0-20240315101112-abcdefabcdef",
                    true
                ),
                mv("example.com/zip-only", "v1.0.0", true),
            ]
        );
        assert_eq!(
            got[0].to_string(),
            "github.com/Azure/go-autorest@v14.2.0+incompatible"
        );
        assert_eq!(parse_go_sum("").expect("empty"), vec![]);
    }

    #[test]
    fn go_sum_errors_have_line_numbers() {
        let cases: &[(&str, usize, &str)] = &[
            ("example.com/a v1.0.0\n", 1, "wrong number of fields (2)"),
            (
                &format!("example.com/a v1.0.0 {H}\nexample.com/a v1.0.0 {H} x\n"),
                2,
                "wrong number of fields (4)",
            ),
            (
                &format!("\n\nExample.com/a v1.0.0 {H}\n"),
                3,
                "malformed module path \"Example.com/a\": invalid char 'E' in first path element",
            ),
            (
                &format!("example.com/a v1.0 {H}\n"),
                1,
                "example.com/a: version \"v1.0\" invalid: not a canonical version",
            ),
            (
                &format!("example.com/a master {H}\n"),
                1,
                "not a semantic version",
            ),
            (
                &format!("example.com/a/v2 v1.0.0/go.mod {H}\n"),
                1,
                "example.com/a/v2: version \"v1.0.0\" invalid: should be v2, not v1",
            ),
            (
                &format!("example.com/a v2.0.0 {H}\n"),
                1,
                "should be v0 or v1, not v2",
            ),
            (
                "example.com/a v1.0.0 deadbeef\n",
                1,
                "malformed hash \"deadbeef\"",
            ),
            ("example.com/a v1.0.0 h1:\n", 1, "malformed hash"),
            ("example.com/a v1.0.0 x1:abc\n", 1, "malformed hash"),
            (
                &format!("example.com/a v1.0.0/go.sum {H}\n"),
                1,
                "not a semantic version",
            ),
        ];
        for (text, line, want) in cases {
            let e = parse_go_sum(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            let s = e.to_string();
            assert!(s.starts_with(&format!("line {line}: ")), "{s}");
            assert!(s.contains(want), "{text:?}: {s} does not contain {want}");
            assert!(!s.contains('\n'), "{s}");
        }
    }

    #[test]
    fn go_sum_other_hash_algorithms() {
        let got = parse_go_sum("example.com/a v1.0.0 h2:abc=\n").expect("h2");
        assert_eq!(got, vec![mv("example.com/a", "v1.0.0", true)]);
    }

    #[test]
    fn module_list() {
        let text = "# warm these\n\
                    example.com/a@v1.0.0\n\
                    \n\
                    example.com/b@v1.2.3/go.mod   # graph only\n\
                    github.com/Azure/x@v0.0.0-20191109021931-daa7c04131f5\n\
                    example.com/a@v1.0.0\n\
                    example.com/b@v1.2.3\n";
        assert_eq!(
            parse_module_list(text).expect("list"),
            vec![
                mv("example.com/a", "v1.0.0", true),
                mv("example.com/b", "v1.2.3", true),
                mv(
                    "github.com/Azure/x",
                    "v0.0.0-20191109021931-daa7c04131f5",
                    true
                ),
            ]
        );
        let mod_only = parse_module_list("example.com/b@v1.2.3/go.mod\n").expect("mod only");
        assert_eq!(mod_only, vec![mv("example.com/b", "v1.2.3", false)]);
    }

    #[test]
    fn module_list_errors() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "example.com/a\n",
                1,
                "\"example.com/a\" is not module@version",
            ),
            (
                "ok.com/a@v1.0.0\nexample.com/a v1.0.0\n",
                2,
                "is not module@version",
            ),
            ("@v1.0.0\n", 1, "is not module@version"),
            ("example.com/a@\n", 1, "is not module@version"),
            ("example.com/a@latest\n", 1, "not a semantic version"),
            ("example.com/a@v1.2\n", 1, "not a canonical version"),
            ("example.com/a@v1.0.0@v2\n", 1, "not a semantic version"),
            ("foo@v1.0.0\n", 1, "missing dot in first path element"),
            ("example.com/../x@v1.0.0\n", 1, "malformed module path"),
        ];
        for (text, line, want) in cases {
            let e = parse_module_list(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn go_mod_requires_single_and_block() {
        let text = r#"// A go.mod with everything in it.
module example.test/main // the main module

go 1.23.0

toolchain go1.23.4

godebug (
	default=go1.21
)

require example.com/single v1.0.0
require "example.com/quoted" v1.1.0 // indirect
require `example.com/raw` "v1.2"

require (
	github.com/Azure/go-autorest v14.2.0+incompatible
	gopkg.in/yaml.v3 v3.0.1 // indirect

	// a comment line inside the block
	"example.com/q/v2" v2.3.4
	example.com/pseudo v0.0.0-20240315101112-abcdefabcdef // indirect; see (x)
)

require ()

replace (
	example.com/single => ../single
	example.com/quoted v1.1.0 => example.com/fork v1.1.1
)
replace example.com/raw => example.com/raw2 v9.9.9

exclude example.com/single v0.9.0
exclude (
	example.com/single v0.8.0
)

retract [v1.0.0, v1.0.5] // broken
retract (
	v0.1.0 // rationale with ( parens )
	[v0.2.0, v0.3.0]
)

tool example.com/tool/cmd
tool (
	golang.org/x/tools/cmd/stringer
)
ignore ./third_party

require example.com/single v1.0.0
"#;
        let got = parse_go_mod_requires(text).expect("parse");
        assert_eq!(
            got,
            vec![
                mv("example.com/single", "v1.0.0", true),
                mv("example.com/quoted", "v1.1.0", true),
                mv("example.com/raw", "v1.2.0", true),
                mv("github.com/Azure/go-autorest", "v14.2.0+incompatible", true),
                mv("gopkg.in/yaml.v3", "v3.0.1", true),
                mv("example.com/q/v2", "v2.3.4", true),
                mv(
                    "example.com/pseudo",
                    "v0.0.0-20240315101112-abcdefabcdef",
                    true
                ),
            ]
        );
    }

    #[test]
    fn go_mod_tricky_lexing() {
        // Comments only start at a token boundary; CRLF line ends; tabs; a block opened
        // with a trailing comment; a closing paren followed by a comment.
        let text = "module m\r\n\
                    require (\t// deps\r\n\
                    \texample.com/a v1.0.0//not-a-comment-start-but-part-of-version\r\n\
                    ) // end\r\n";
        let e = parse_go_mod_requires(text).expect_err("version glued to //");
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.to_string().contains("not a semantic version")
                || e.to_string().contains("must be of the form"),
            "{e}"
        );

        let text = "require (\n\texample.com/a v1.0.0 // indirect\n) // end\n";
        assert_eq!(
            parse_go_mod_requires(text).expect("ok"),
            vec![mv("example.com/a", "v1.0.0", true)]
        );

        // An escaped quoted path.
        let text = "require \"example.com/\\x61\\u0062\" v1.0.0\n";
        assert_eq!(
            parse_go_mod_requires(text).expect("escapes"),
            vec![mv("example.com/ab", "v1.0.0", true)]
        );
        // A module named like a directive inside a block is just a path.
        let text = "require (\n\trequire.example.com/x v1.0.0\n)\n";
        assert_eq!(
            parse_go_mod_requires(text).expect("require-named module"),
            vec![mv("require.example.com/x", "v1.0.0", true)]
        );
        // No go.mod content at all.
        assert_eq!(parse_go_mod_requires("").expect("empty"), vec![]);
        assert_eq!(
            parse_go_mod_requires("module m\n\ngo 1.21\n").expect("no requires"),
            vec![]
        );
    }

    #[test]
    fn go_mod_errors() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "require example.com/a\n",
                1,
                "usage: require module/path v1.2.3",
            ),
            ("require example.com/a v1.0.0 extra\n", 1, "usage: require"),
            (
                "module m\nrequire (\n\texample.com/a v1.0.0\n\texample.com/b\n)\n",
                4,
                "usage: require",
            ),
            (
                "require (\n\texample.com/a v1.0.0\n",
                1,
                "unexpected EOF in require block",
            ),
            (
                "require (\n) x\n",
                2,
                "expected newline after closing paren",
            ),
            (
                "require example.com/a master\n",
                1,
                "must be of the form v1.2.3",
            ),
            (
                "require example.com/a/v2 v1.0.0\n",
                1,
                "should be v2, not v1",
            ),
            ("require Example.com/a v1.0.0\n", 1, "malformed module path"),
            (
                "require \"example.com/a v1.0.0\n",
                1,
                "unexpected newline in string",
            ),
            (
                "require \"example.com/\\q\" v1.0.0\n",
                1,
                "invalid quoted string",
            ),
            ("require x y (\n)\n", 1, "unknown block type: require x y"),
            ("require (example.com/a v1.0.0)\n", 1, "usage: require"),
            (
                "require example.com/a\u{7} v1.0.0\n",
                1,
                "unexpected input character",
            ),
        ];
        for (text, line, want) in cases {
            let e = parse_go_mod_requires(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
        // Errors inside skipped blocks are not errors.
        let text = "replace (\n\tanything goes here (\n\t[\n)\nrequire example.com/a v1.0.0\n";
        assert_eq!(
            parse_go_mod_requires(text).expect("skipped"),
            vec![mv("example.com/a", "v1.0.0", true)]
        );
    }

    #[test]
    fn dedupe_merges_want_zip() {
        let got = dedupe(vec![
            mv("example.com/a", "v1.0.0", false),
            mv("example.com/b", "v1.0.0", false),
            mv("example.com/a", "v1.0.0", true),
            mv("example.com/a", "v1.1.0", false),
            mv("example.com/b", "v1.0.0", false),
        ]);
        assert_eq!(
            got,
            vec![
                mv("example.com/a", "v1.0.0", true),
                mv("example.com/b", "v1.0.0", false),
                mv("example.com/a", "v1.1.0", false),
            ]
        );
    }

    /// Whatever the parsers accept can be requested from a GOPROXY.
    fn all_escape(list: &[ModVersion]) -> bool {
        list.iter().all(|m| {
            crate::escape_path(&m.module).is_ok() && crate::escape_version(&m.version).is_ok()
        })
    }

    fn fragments() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("require"),
            Just("replace"),
            Just("("),
            Just(")"),
            Just("=>"),
            Just("example.com/a"),
            Just("example.com/A/v2"),
            Just("\"example.com/q\""),
            Just("`example.com/r`"),
            Just("v1.0.0"),
            Just("v2.0.0"),
            Just("v1.2"),
            Just("/go.mod"),
            Just("@"),
            Just("#"),
            Just("//"),
            Just("h1:abc="),
            Just(" "),
            Just("\t"),
            Just("\n"),
            Just("\r\n"),
            Just("\""),
            Just("\\"),
        ];
        proptest::collection::vec(pieces, 0..48).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parsers_never_panic_and_results_escape(text in fragments()) {
            for parsed in [
                parse_go_sum(&text),
                parse_go_mod_requires(&text),
                parse_module_list(&text),
            ] {
                match parsed {
                    Ok(list) => prop_assert!(all_escape(&list), "{text:?}: {list:?}"),
                    Err(e) => {
                        prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1));
                        prop_assert!(!e.to_string().contains('\n'), "{e}");
                    }
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_go_sum(&text);
            let _ = parse_go_mod_requires(&text);
            let _ = parse_module_list(&text);
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "\u{0}",
            "(",
            ")",
            "require",
            "require (",
            "require ()",
            "\"",
            "`",
            "\\",
            "@",
            "#",
            "//",
            "require \"\\",
            "require \"\\x6\" v1.0.0",
            "require \"\\777\" v1",
            "é@v1.0.0",
            "example.com/é v1.0.0 h1:x",
        ] {
            let _ = parse_go_sum(text);
            let _ = parse_go_mod_requires(text);
            let _ = parse_module_list(text);
        }
    }
}
