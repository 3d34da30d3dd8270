//! The `retract` directives of a module's `go.mod`, with their rationale, as the `go` command
//! reads them from a dependency's latest `go.mod` (`modfile.ParseLax`, Go 1.23:
//! `cmd/vendor/golang.org/x/mod/modfile/read.go` and `rule.go`), and the test of a version
//! against them (`modload.CheckRetractions`).
//!
//! * Forms: `retract v1.0.1`, `retract [v1.0.0, v1.0.5]` (closed interval), quoted versions,
//!   and the block `retract ( ... )` with one version or interval per line.
//! * Rationale (`parseDirectiveComment`): the `//` comment at the end of the directive's line
//!   and the comment lines directly above it (a blank line between detaches them), each
//!   trimmed, joined with `\n`. A line inside a block with no comment of its own (none above
//!   it since the previous line of the block, none after it) takes the comments directly above
//!   `retract (`. A comment after `retract (` or after `)` belongs to neither.
//! * Lax, as for a dependency: a `retract` directive that is malformed (no version, an
//!   unclosed `[`, a backquoted or badly quoted version) is skipped; tokens after the version
//!   are ignored; versions are kept as written (`v1.2` stays `v1.2`, as `modfile` keeps them
//!   without a fixer) and compared with [`compare_semver`], so a shorthand compares as the
//!   version it stands for. Blocks of other kinds, and other directives, are not interpreted.
//! * Errors are the lexical and block errors that make `modfile` refuse the file: an
//!   unterminated string or block, `/* */` comments, a character Go does not print, text after
//!   a block's `)`.
//!
//! Pure: no I/O, no panics on input.

use std::cmp::Ordering;

use crate::error::{go_quote_rune, is_go_printable};
use crate::gosum::{unquote, GoSumError, GoSumErrorKind};
use crate::version::compare_semver;

/// One retracted version or closed interval of versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    /// The lowest retracted version (as written).
    pub low: String,
    /// The highest retracted version (as written; equal to `low` for a single version).
    pub high: String,
    /// The rationale comment, lines joined with `\n`; empty if none.
    pub rationale: String,
}

impl Retraction {
    /// Whether `version` lies in `[low, high]` (Go's semver order; build metadata ignored).
    pub fn contains(&self, version: &str) -> bool {
        compare_semver(&self.low, version) != Ordering::Greater
            && compare_semver(version, &self.high) != Ordering::Greater
    }

    /// The rationale as `go` prints it after "retracted by module author: "
    /// (`modload.ShortMessage`): its first line, trimmed; `""` if empty; a fixed text if it is
    /// longer than 500 bytes or holds characters that are not printable.
    pub fn short_rationale(&self) -> &str {
        let first = self.rationale.split('\n').next().unwrap_or("").trim();
        if first.len() > 500 {
            return "(message omitted: too long)";
        }
        if first
            .chars()
            .any(|c| !is_go_printable(c) && !c.is_whitespace())
        {
            return "(message omitted: contains non-printable characters)";
        }
        first
    }
}

/// The retractions of one `go.mod`, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retractions(pub Vec<Retraction>);

impl Retractions {
    /// Parses the `retract` directives of a `go.mod` (see the module documentation).
    pub fn parse(gomod: &str) -> Result<Retractions, GoSumError> {
        parse_retractions(gomod).map(Retractions)
    }

    /// Whether `version` is retracted: the first retraction that covers it and gives a
    /// rationale, else the first that covers it (`go` reports the first non-empty rationale of
    /// all that apply). `None` if none covers it.
    pub fn is_retracted(&self, version: &str) -> Option<&Retraction> {
        let mut covering = self.0.iter().filter(|r| r.contains(version));
        let first = covering.next()?;
        if !first.rationale.is_empty() {
            return Some(first);
        }
        Some(covering.find(|r| !r.rationale.is_empty()).unwrap_or(first))
    }
}

/// A token as `modfile` lexes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok<'a> {
    /// An identifier or a quoted string, as written (quotes included).
    Word(&'a str),
    /// One of `( ) [ ] { } ,`.
    Punct(char),
}

impl Tok<'_> {
    fn text(&self) -> String {
        match self {
            Tok::Word(w) => (*w).to_owned(),
            Tok::Punct(c) => c.to_string(),
        }
    }
}

/// One physical line: its tokens and its `//` comment (with the `//`), if any.
struct Line<'a> {
    tokens: Vec<Tok<'a>>,
    comment: Option<&'a str>,
}

fn syntax(line: usize, message: String) -> GoSumError {
    GoSumError {
        line,
        kind: GoSumErrorKind::Syntax(message),
    }
}

fn is_punct(c: char) -> bool {
    matches!(c, '(' | ')' | '[' | ']' | '{' | '}' | ',')
}

/// `modfile`'s `isIdent`: printable, not a space, not punctuation (quotes are ident runes
/// inside an identifier).
fn is_ident(c: char) -> bool {
    c != ' ' && !is_punct(c) && !c.is_whitespace() && is_go_printable(c)
}

/// Lexes one line (without its newline) as `modfile`'s `readToken` does.
fn lex(text: &str, n: usize) -> Result<Line<'_>, GoSumError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    let b = text.as_bytes();
    while i < text.len() {
        let rest = &text[i..];
        let Some(c) = rest.chars().next() else { break };
        if matches!(c, ' ' | '\t' | '\r') {
            i += 1;
            continue;
        }
        if rest.starts_with("//") {
            return Ok(Line {
                tokens,
                comment: Some(rest),
            });
        }
        if rest.starts_with("/*") {
            return Err(syntax(
                n,
                "mod files must use // comments (not /* */ comments)".to_owned(),
            ));
        }
        if is_punct(c) {
            tokens.push(Tok::Punct(c));
            i += 1;
            continue;
        }
        if c == '"' || c == '`' {
            let mut j = i + 1;
            loop {
                match b.get(j) {
                    None => return Err(syntax(n, "unexpected newline in string".to_owned())),
                    Some(&q) if q == c as u8 => break,
                    Some(b'\\') if c == '"' => j += 2,
                    Some(_) => j += 1,
                }
            }
            // j is at the closing quote (ASCII), so j + 1 is a char boundary.
            tokens.push(Tok::Word(&text[i..=j]));
            i = j + 1;
            continue;
        }
        if !is_ident(c) {
            return Err(syntax(
                n,
                format!("unexpected input character {}", go_quote_rune(c)),
            ));
        }
        let start = i;
        for (k, d) in rest.char_indices() {
            let at = &rest[k..];
            if !is_ident(d) || at.starts_with("//") {
                break;
            }
            if at.starts_with("/*") {
                return Err(syntax(
                    n,
                    "mod files must use // comments (not /* */ comments)".to_owned(),
                ));
            }
            i = start + k + d.len_utf8();
        }
        tokens.push(Tok::Word(&text[start..i]));
    }
    Ok(Line {
        tokens,
        comment: None,
    })
}

/// `parseString` then the lax retract fixer (none): the version as written, unquoted.
fn version(tok: &Tok<'_>) -> Option<String> {
    let t = tok.text();
    if let Some(inner) = t.strip_prefix('"') {
        return unquote(inner.strip_suffix('"')?);
    }
    if t.contains(['"', '\'', '`']) {
        return None;
    }
    Some(t)
}

/// `parseVersionInterval` over a directive's arguments; `None` where `modfile` errs.
fn interval(args: &[Tok<'_>]) -> Option<(String, String)> {
    match args {
        [] | [Tok::Punct('('), ..] => None,
        [Tok::Punct('['), lo, Tok::Punct(','), hi, Tok::Punct(']'), ..] => {
            Some((version(lo)?, version(hi)?))
        }
        [Tok::Punct('['), ..] => None,
        [v, ..] => {
            let v = version(v)?;
            Some((v.clone(), v))
        }
    }
}

/// `parseDirectiveComment`: the comments' text, `//` removed, trimmed, joined with `\n`
/// (blank-line markers are `None` and skipped).
fn rationale<'a>(before: &[Option<&'a str>], suffix: Option<&'a str>) -> String {
    before
        .iter()
        .copied()
        .chain(std::iter::once(suffix))
        .flatten()
        .map(|c| c.strip_prefix("//").unwrap_or(c).trim())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `retract` directives of `gomod`, in file order (see the module documentation).
pub fn parse_retractions(gomod: &str) -> Result<Vec<Retraction>, GoSumError> {
    let mut out = Vec::new();
    // Whole-line comments waiting for the statement right below them (top level).
    let mut pending: Vec<Option<&str>> = Vec::new();
    // Inside a block: (is it a one-word `retract` block, its comments above, the line it
    // started on, comments since its previous line, whether it has lines yet).
    struct Block<'a> {
        retract: bool,
        above: Vec<Option<&'a str>>,
        start: usize,
        comments: Vec<Option<&'a str>>,
        has_lines: bool,
    }
    let mut block: Option<Block<'_>> = None;
    for (i, text) in gomod.lines().enumerate() {
        let n = i + 1;
        let line = lex(text, n)?;
        if let Some(b) = &mut block {
            match line.tokens.first() {
                None => match line.comment {
                    Some(c) => b.comments.push(Some(c)),
                    None => {
                        // A blank line is kept as a marker (it makes "comments above" non-empty).
                        if (b.comments.is_empty() && b.has_lines)
                            || b.comments.last().is_some_and(Option::is_some)
                        {
                            b.comments.push(None);
                        }
                    }
                },
                Some(Tok::Punct(')')) => {
                    if line.tokens.len() > 1 {
                        return Err(syntax(
                            n,
                            "syntax error (expected newline after closing paren)".to_owned(),
                        ));
                    }
                    block = None;
                }
                Some(_) => {
                    let before = std::mem::take(&mut b.comments);
                    b.has_lines = true;
                    if b.retract {
                        if let Some((low, high)) = interval(&line.tokens) {
                            let rationale = if before.is_empty() && line.comment.is_none() {
                                rationale(&b.above, None)
                            } else {
                                rationale(&before, line.comment)
                            };
                            out.push(Retraction {
                                low,
                                high,
                                rationale,
                            });
                        }
                    }
                }
            }
            continue;
        }
        if line.tokens.is_empty() {
            match line.comment {
                Some(c) => pending.push(Some(c)),
                None => pending.clear(),
            }
            continue;
        }
        let above = std::mem::take(&mut pending);
        let toks = &line.tokens;
        // `verb ... (` at the end of a line opens a block; `verb ... ()` is an empty block;
        // a parenthesis anywhere else (or first) is an ordinary token.
        let opens = toks.len() > 1 && toks[toks.len() - 1] == Tok::Punct('(');
        let empty_block = toks.len() > 2
            && toks[toks.len() - 2] == Tok::Punct('(')
            && toks[toks.len() - 1] == Tok::Punct(')');
        if opens {
            block = Some(Block {
                retract: toks.len() == 2 && toks[0] == Tok::Word("retract"),
                above,
                start: n,
                comments: Vec::new(),
                has_lines: false,
            });
            continue;
        }
        if empty_block {
            continue;
        }
        if toks[0] == Tok::Word("retract") {
            if let Some((low, high)) = interval(&toks[1..]) {
                out.push(Retraction {
                    low,
                    high,
                    rationale: rationale(&above, line.comment),
                });
            }
        }
    }
    if let Some(b) = block {
        return Err(syntax(
            b.start,
            format!(
                "syntax error (unterminated block started at line {})",
                b.start
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(low: &str, high: &str, rationale: &str) -> Retraction {
        Retraction {
            low: low.into(),
            high: high.into(),
            rationale: rationale.into(),
        }
    }

    fn parse(s: &str) -> Vec<Retraction> {
        parse_retractions(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn single_versions_ranges_and_blocks() {
        let gomod = "module example.com/m\n\ngo 1.21\n\n\
            // Published too early.\n\
            retract v1.0.1\n\
            retract [v1.0.0, v1.0.5] // Bad range.\n\
            retract (\n\
            \tv0.9.0 // Broken build.\n\
            \t[v0.1.0,v0.2.0]\n\
            )\n";
        assert_eq!(
            parse(gomod),
            [
                r("v1.0.1", "v1.0.1", "Published too early."),
                r("v1.0.0", "v1.0.5", "Bad range."),
                r("v0.9.0", "v0.9.0", "Broken build."),
                r("v0.1.0", "v0.2.0", ""),
            ]
        );
    }

    #[test]
    fn rationale_comments_as_modfile_attaches_them() {
        // Several lines above plus the suffix; a blank line detaches what is above it.
        let gomod = "module m.com/x\n\
            // Detached.\n\
            \n\
            // First.\n\
            //   Second.  \n\
            retract v1.0.0 // Third.\n";
        assert_eq!(
            parse(gomod),
            [r("v1.0.0", "v1.0.0", "First.\nSecond.\nThird.")]
        );

        // In a block: a line's own comments; else the comments above `retract (`.
        let gomod = "// Block reason.\n\
            retract ( // not a rationale\n\
            \tv1.0.0\n\
            \t// Own above.\n\
            \tv1.0.1\n\
            \tv1.0.2 // Own suffix.\n\
            \n\
            \tv1.0.3\n\
            \t// Kept across a blank line.\n\
            \n\
            \tv1.0.4\n\
            \t// Trailing, belongs to the paren.\n\
            ) // Also the paren's.\n\
            retract v2.0.0\n";
        assert_eq!(
            parse(gomod),
            [
                r("v1.0.0", "v1.0.0", "Block reason."),
                r("v1.0.1", "v1.0.1", "Own above."),
                r("v1.0.2", "v1.0.2", "Own suffix."),
                // A blank line above is "a comment" to modfile: the block's text is not used.
                r("v1.0.3", "v1.0.3", ""),
                r("v1.0.4", "v1.0.4", "Kept across a blank line."),
                r("v2.0.0", "v2.0.0", ""),
            ]
        );
    }

    #[test]
    fn lax_skips_malformed_directives_and_keeps_versions_as_written() {
        let gomod = "retract\n\
            retract [v1.0.0\n\
            retract [v1.0.0, v1.0.1\n\
            retract [v1.0.0 v1.0.1]\n\
            retract ( v1.0.0 )\n\
            retract `v1.0.0`\n\
            retract v1'0\n\
            retract \"v1.\\x32\" // quoted\n\
            retract v1.3 v1.4 // extra tokens ignored\n\
            retract [\"v1.5.0\", v1.6] \n\
            exclude v9.9.9\n\
            retract foo (\n\
            \tv3.0.0\n\
            )\n\
            retract ()\n";
        assert_eq!(
            parse(gomod),
            [
                r("v1.2", "v1.2", "quoted"),
                r("v1.3", "v1.3", "extra tokens ignored"),
                r("v1.5.0", "v1.6", ""),
            ]
        );
    }

    #[test]
    fn lexing_like_modfile() {
        // `//` ends an identifier; quotes inside an identifier make it invalid (skipped);
        // CRLF line ends.
        assert_eq!(
            parse("retract v1.0.0//why\r\n"),
            [r("v1.0.0", "v1.0.0", "why")]
        );
        assert_eq!(parse("retract v1\"x\"\n"), []);
        assert_eq!(parse("\tretract\tv1.0.0\r\n"), [r("v1.0.0", "v1.0.0", "")]);
        // Unicode in a rationale.
        assert_eq!(
            parse("retract v1.0.0 // Défaut ☃\n"),
            [r("v1.0.0", "v1.0.0", "Défaut ☃")]
        );
    }

    #[test]
    fn syntax_errors() {
        for (gomod, want) in [
            (
                "retract (\nv1.0.0\n",
                "line 1: syntax error (unterminated block started at line 1)",
            ),
            (
                "retract (\nv1.0.0\n) x\n",
                "line 3: syntax error (expected newline after closing paren)",
            ),
            ("retract \"v1.0.0\n", "line 1: unexpected newline in string"),
            (
                "/* c */\n",
                "line 1: mod files must use // comments (not /* */ comments)",
            ),
            (
                "retract v1/*x*/\n",
                "line 1: mod files must use // comments (not /* */ comments)",
            ),
            (
                "retract \u{1}\n",
                "line 1: unexpected input character '\\x01'",
            ),
            (
                "retract\u{a0}v1\n",
                "line 1: unexpected input character '\\u00a0'",
            ),
        ] {
            assert_eq!(
                parse_retractions(gomod).unwrap_err().to_string(),
                want,
                "{gomod:?}"
            );
        }
    }

    #[test]
    fn is_retracted_and_its_rationale() {
        let rs = Retractions::parse(
            "retract [v1.0.0, v1.0.5]\n\
             // Second reason.\n\
             retract v1.0.3\n\
             retract v2.0.0+incompatible // Incompatible.\n\
             retract v1.2 // Shorthand.\n",
        )
        .unwrap();
        assert_eq!(rs.is_retracted("v0.9.9"), None);
        assert_eq!(rs.is_retracted("v1.0.0").unwrap().low, "v1.0.0");
        assert_eq!(rs.is_retracted("v1.0.5").unwrap().rationale, "");
        assert_eq!(rs.is_retracted("v1.0.6"), None);
        // Covered twice: the one with a rationale.
        assert_eq!(
            rs.is_retracted("v1.0.3").unwrap().rationale,
            "Second reason."
        );
        // Prereleases and pseudo-versions order by semver.
        assert!(rs.is_retracted("v1.0.5-rc.1").is_some());
        assert!(rs.is_retracted("v1.0.0-rc.1").is_none());
        assert!(rs
            .is_retracted("v1.0.1-0.20240101000000-abcdefabcdef")
            .is_some());
        // Build metadata is ignored; a shorthand stands for its full version.
        assert_eq!(
            rs.is_retracted("v2.0.0+incompatible").unwrap().rationale,
            "Incompatible."
        );
        assert_eq!(rs.is_retracted("v1.2.0").unwrap().rationale, "Shorthand.");
        assert_eq!(rs.is_retracted("v1.2.1"), None);
    }

    #[test]
    fn short_rationale_like_go() {
        assert_eq!(
            r("v1", "v1", "First line.\nMore.").short_rationale(),
            "First line."
        );
        assert_eq!(r("v1", "v1", "").short_rationale(), "");
        assert_eq!(
            r("v1", "v1", &"x".repeat(501)).short_rationale(),
            "(message omitted: too long)"
        );
        assert_eq!(
            r("v1", "v1", "bell\u{7}").short_rationale(),
            "(message omitted: contains non-printable characters)"
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "",
            "(",
            ")",
            "retract",
            "retract [",
            "retract [,",
            "retract \"",
            "retract `",
            "retract \"\\",
            "//",
            "/",
            "retract ( //\n)",
            "\u{feff}retract v1",
            "é(\n)",
            "retract [v1, v2] ]",
            "retract \"\\u00\"",
            "retract \"a\\\"b\"",
        ] {
            let _ = parse_retractions(s);
        }
    }
}
