//! Proptest strategies shared by the route-table and RBAC property tests: module paths and
//! prefix / glob / regex patterns drawn from a small alphabet of path elements, so that
//! random patterns and random paths actually match each other (test builds only).

use proptest::prelude::*;

use crate::pattern::Pattern;

/// Path elements modules and patterns are made of.
const ELEMENTS: &[&str] = &[
    "corp.example.com",
    "git.corp.example.com",
    "x.git.corp.example.com",
    "team-1",
    "team-2",
    "svc-1",
    "svc-12",
    "a",
    "b",
    "v2",
    "",
];

/// Glob path elements: literals, and `*`, `?`, classes and escapes in various places,
/// including a class and an escape that match `/`.
const GLOB_PARTS: &[&str] = &[
    "*",
    "*.corp.example.com",
    "*.git.corp.example.com",
    "**.example.com",
    "*-1",
    "team-?",
    "svc-*",
    "svc-1*",
    "[ab]",
    "[^a]",
    "t*m-[12]",
    "\\a",
    "a[/]b",
    "a\\/b",
    "corp.example.*",
    "*com",
    "*-[12]",
    "*a[/]b",
    "*\\/b",
];

/// Tails appended to a regex's literal start, some of which make the start non-literal or
/// the whole regex an alternation.
const REGEX_TAILS: &[&str] = &[
    "",
    "/.*",
    "(/.*)?",
    "/[a-z0-9-]+",
    "/(team-1|team-2)/.*",
    "|b",
    "|corp\\.example\\.com/.*",
    "*/.*",
    "?",
    "+/a",
    "{0,1}/b",
    ".*",
    "/(?i)SVC-1",
    "[/]b",
    "(a|b)|c",
];

/// Regexes that do not start with a literal.
const REGEX_WHOLE: &[&str] = &[
    ".*",
    "(?i)CORP\\.EXAMPLE\\.COM/.*",
    "(a|b)/.*",
    "[a-z.]+/team-1",
    "a|b",
    "(?x) corp\\.example\\.com / .* # comment ( [",
    "\\x61/.*",
    ".+/svc-1",
    // A comment hiding structure: the alternation is real, the parentheses are not.
    "a/b(?x)#(\n|b#)\n",
];

fn element() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(ELEMENTS).prop_map(str::to_owned),
        1 => "[a-z.-]{0,6}",
    ]
}

/// Module paths of 1 to 5 elements, mostly from the alphabet.
pub(crate) fn module() -> impl Strategy<Value = String> {
    prop::collection::vec(element(), 1..6).prop_map(|e| e.join("/"))
}

fn regex_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (
            prop::collection::vec(element(), 0..3),
            prop::sample::select(REGEX_TAILS),
        )
            .prop_map(|(e, tail)| format!("{}{tail}", regex_escape(&e.join("/")))),
        1 => prop::sample::select(REGEX_WHOLE).prop_map(str::to_owned),
    ]
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

fn glob_element() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        2 => prop::sample::select(ELEMENTS).prop_map(str::to_owned),
        1 => prop::sample::select(GLOB_PARTS).prop_map(str::to_owned),
    ];
    (prop::collection::vec(part, 1..4), any::<bool>()).prop_map(|(parts, slash)| {
        let g = parts.join("/");
        if slash {
            format!("{g}/")
        } else {
            g
        }
    })
}

/// Patterns of every kind: validated ones through the constructors, and now and then a
/// variant built directly (a malformed glob, an unnormalised prefix), which must behave the
/// same through the index.
pub(crate) fn pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![
        4 => (prop::collection::vec(element(), 0..4), any::<bool>()).prop_map(|(e, slash)| {
            let p = e.join("/");
            let p = if slash { format!("{p}/") } else { p };
            Pattern::prefix(&p).unwrap_or(Pattern::Prefix(p))
        }),
        4 => prop::collection::vec(glob_element(), 1..4).prop_map(|g| {
            let g = g.join(",");
            Pattern::glob(&g).unwrap_or(Pattern::Glob(g))
        }),
        2 => regex_text().prop_filter_map("regex compiles", |r| Pattern::regex(&r).ok()),
        1 => prop::sample::select(&["[", "a//b", "/a", "a//", ",,", "a/[x-]/b,*/svc-1"][..])
            .prop_map(|raw| if raw.contains([',', '[']) {
                Pattern::Glob(raw.to_owned())
            } else {
                Pattern::Prefix(raw.to_owned())
            }),
    ]
}
