//! Property tests of `credentials.rs`: generated users and tokens files (names and groups from
//! all of Unicode short of whitespace, control characters and the separators; bcrypt-shaped and
//! real argon2 hashes; SHA-256 digests in either case; comments, blank lines, padding and CRLF
//! in between) load with every entry and its groups, and their real passwords and tokens
//! authenticate; duplicates and forbidden characters are refused naming the line; arbitrary
//! text never panics either parser; `Authorization` values round-trip and never panic.

use std::sync::OnceLock;

use super::*;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use proptest::prelude::*;

const PATH: &str = "/etc/modgate/credentials";

/// A user or token name as the files allow it: no whitespace, control character or `:`, and
/// not starting with `#` (that line would be a comment) or a byte-order mark (stripped from the
/// start of a file).
fn name() -> impl Strategy<Value = String> {
    "[^\\s\\p{Cc}:#\u{feff}][^\\s\\p{Cc}:]{0,11}"
}

/// A group name; small ones repeat often, to exercise de-duplication.
fn group() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c]", "[^\\s\\p{Cc}:,]{1,8}"]
}

/// `count` distinct names in random order.
fn names(count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set(name(), count)
        .prop_map(|set| set.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

/// bcrypt's own base64: its alphabet, no padding.
const BCRYPT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::BCRYPT,
    base64::engine::general_purpose::NO_PAD,
);

/// A syntactically valid bcrypt hash (`$2a$`/`$2b$`/`$2y$`, any cost the parser accepts, random
/// salt and digest in bcrypt's base64); the parser checks the shape and the cost range only.
fn bcrypt_shaped() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["2a", "2b", "2y"]),
        MIN_BCRYPT_COST..=MAX_BCRYPT_COST,
        any::<[u8; 16]>(),
        prop::collection::vec(any::<u8>(), 23),
    )
        .prop_map(|(v, cost, salt, digest)| {
            format!(
                "${v}${cost:02}${}{}",
                BCRYPT_BASE64.encode(salt),
                BCRYPT_BASE64.encode(digest)
            )
        })
}

/// A real argon2 PHC string (tiny parameters, random salt and output length).
fn argon2_real() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            argon2::Algorithm::Argon2id,
            argon2::Algorithm::Argon2i,
            argon2::Algorithm::Argon2d,
        ]),
        8u32..=32,
        1u32..=2,
        any::<[u8; 16]>(),
        10usize..=32,
        "\\PC{0,12}",
    )
        .prop_map(|(alg, m, t, salt, len, password)| {
            use argon2::password_hash::{PasswordHasher as _, SaltString};
            let salt = SaltString::encode_b64(&salt).expect("salt");
            let params = argon2::Params::new(m, t, 1, Some(len)).expect("params");
            argon2::Argon2::new(alg, argon2::Version::V0x13, params)
                .hash_password(password.as_bytes(), &salt)
                .expect("hash")
                .to_string()
        })
}

/// Real hashes of known passwords, made once (bcrypt takes milliseconds even at cost 4).
fn real_hashes() -> &'static [(&'static str, String)] {
    static HASHES: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    HASHES.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let params = argon2::Params::new(16, 1, 1, None).expect("params");
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password("pässwörd:with:colons".as_bytes(), &salt)
                .expect("argon2")
                .to_string();
        vec![
            ("bcrypt-pw", bcrypt::hash("bcrypt-pw", 4).expect("bcrypt")),
            ("pässwörd:with:colons", argon2),
        ]
    })
}

/// One entry of a generated file, with the layout choices that must not matter.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    /// The hash (users) or hex digest (tokens) as written.
    secret: String,
    /// The token whose digest `secret` is (tokens files only).
    token: String,
    /// Groups as written, repeats included.
    groups: Vec<String>,
    /// Write `name:hash:` when there are no groups.
    empty_groups_field: bool,
    /// Spaces and tabs around fields and group names.
    pads: [String; 6],
}

impl Entry {
    /// The groups the parser keeps: first occurrences, in order.
    fn expected_groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in &self.groups {
            if !out.contains(g) {
                out.push(g.clone());
            }
        }
        out
    }

    /// The line, with `middle` between name and secret (`""` for users, `sha256` for tokens).
    fn render(&self, middle: &str) -> String {
        let p = &self.pads;
        let mut line = format!("{}{}{}:", p[0], self.name, p[1]);
        if !middle.is_empty() {
            line.push_str(&format!("{}{middle}{}:", p[2], p[3]));
        }
        line.push_str(&format!("{}{}{}", p[2], self.secret, p[3]));
        if !self.groups.is_empty() || self.empty_groups_field {
            let sep = format!("{},{}", p[5], p[4]);
            line.push_str(&format!(":{}{}{}", p[4], self.groups.join(&sep), p[5]));
        }
        line
    }
}

fn pads() -> impl Strategy<Value = [String; 6]> {
    prop::array::uniform6("[ \t]{0,2}")
}

/// A line the parsers skip: a comment or a blank line (any Unicode white space).
fn filler() -> impl Strategy<Value = String> {
    prop_oneof!["[ \t]{0,2}#[^\n]{0,20}", "[ \t\u{a0}\u{3000}]{0,3}",]
}

/// One line of a file: entry `i`, or a line to skip.
#[derive(Debug, Clone)]
enum Line {
    Entry(usize),
    Filler(String),
    Raw(String),
}

/// A whole generated file: its entries and its lines in order.
#[derive(Debug, Clone)]
struct File {
    entries: Vec<Entry>,
    lines: Vec<Line>,
    crlf: Vec<bool>,
    final_newline: bool,
}

impl File {
    fn text(&self, middle: &str) -> String {
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            match line {
                Line::Entry(e) => out.push_str(&self.entries[*e].render(middle)),
                Line::Filler(s) | Line::Raw(s) => out.push_str(s),
            }
            if i + 1 < self.lines.len() || self.final_newline {
                out.push_str(if self.crlf.get(i).copied().unwrap_or(false) {
                    "\r\n"
                } else {
                    "\n"
                });
            }
        }
        out
    }

    /// 1-based line number of entry `e`.
    fn line_of(&self, e: usize) -> usize {
        self.lines
            .iter()
            .position(|l| matches!(l, Line::Entry(i) if *i == e))
            .map_or(0, |i| i + 1)
    }
}

/// A file of entries whose secrets come from `secrets` (one `(secret, token)` per name), with
/// skipped lines, CRLF and a missing final newline mixed in.
fn file(
    secrets: impl Fn(usize) -> BoxedStrategy<Vec<(String, String)>>,
) -> impl Strategy<Value = File> {
    names(1..7)
        .prop_flat_map(move |names| {
            let n = names.len();
            (
                Just(names),
                secrets(n),
                prop::collection::vec(prop::collection::vec(group(), 0..4), n),
                prop::collection::vec(any::<bool>(), n),
                prop::collection::vec(pads(), n),
                prop::collection::vec(prop::collection::vec(filler(), 0..3), n + 1),
                prop::collection::vec(any::<bool>(), 4 * n + 4),
                any::<bool>(),
            )
        })
        .prop_map(
            |(names, secrets, groups, empty, pads, fillers, crlf, final_newline)| {
                let entries: Vec<Entry> = names
                    .into_iter()
                    .zip(secrets)
                    .zip(groups)
                    .zip(empty)
                    .zip(pads)
                    .map(
                        |((((name, (secret, token)), groups), empty_groups_field), pads)| Entry {
                            name,
                            secret,
                            token,
                            groups,
                            empty_groups_field,
                            pads,
                        },
                    )
                    .collect();
                let mut lines = Vec::new();
                for (i, before) in fillers.into_iter().enumerate() {
                    lines.extend(before.into_iter().map(Line::Filler));
                    if i < entries.len() {
                        lines.push(Line::Entry(i));
                    }
                }
                File {
                    entries,
                    lines,
                    crlf,
                    final_newline,
                }
            },
        )
}

fn users_file() -> impl Strategy<Value = File> {
    file(|n| {
        let hash = prop_oneof![3 => bcrypt_shaped(), 1 => argon2_real()];
        prop::collection::vec(hash.prop_map(|h| (h, String::new())), n).boxed()
    })
}

/// A tokens file: distinct tokens (by construction), their digests in hex of random case.
fn tokens_file() -> impl Strategy<Value = File> {
    file(|n| {
        prop::collection::vec(("[!-~]{16,40}", any::<u64>()), n)
            .prop_map(|seeds| {
                seeds
                    .into_iter()
                    .enumerate()
                    .map(|(i, (t, case))| {
                        let token = format!("{i}-{t}");
                        (mixed_case(&token_sha256_hex(&token), case), token)
                    })
                    .collect()
            })
            .boxed()
    })
}

/// Hex digits upper-cased where the bits of `case` say so.
fn mixed_case(hex: &str, case: u64) -> String {
    hex.chars()
        .enumerate()
        .map(|(i, c)| {
            if case >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// The parse result as a line number and message, or the test fails.
fn line_error<T: fmt::Debug>(
    result: Result<T, CredentialError>,
) -> Result<(usize, String), TestCaseError> {
    match result {
        Err(e @ CredentialError::Line { line, .. }) => {
            let msg = e.to_string();
            prop_assert!(msg.starts_with(&format!("{PATH}:{line}: ")), "{}", msg);
            Ok((line, msg))
        }
        other => Err(TestCaseError::fail(format!(
            "expected a line error, got {other:?}"
        ))),
    }
}

/// Characters refused inside a name or group: white space and control characters.
fn forbidden_char() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        ' ', '\t', '\r', '\u{0}', '\u{1}', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{1680}',
        '\u{2003}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{3000}', '\u{b}', '\u{c}',
    ])
}

/// Text made of the pieces the parsers look for, so that random cases reach deep into them.
fn credentials_like_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            name(),
            Just(":".to_string()),
            Just(",".to_string()),
            Just("#".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("sha256".to_string()),
            "[0-9a-fA-F]{64}",
            bcrypt_shaped(),
            Just("$2x$04$abcdefghijklmnopqrstuuAbCdEfGhIjKlMnOpQrStUvWxYz01234".to_string()),
            Just("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_string()),
            "\\$argon2(id|i|d)\\$[a-z0-9=,$]{0,20}",
            "[ \t]",
            "\\PC",
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// A generated users or tokens file with a few characters inserted or removed: often still
/// valid, often wrong in one place.
fn damaged_file() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        prop::option::of(prop::sample::select(vec![
            ':', ',', '#', '\n', '\r', ' ', '\t', '\u{0}', '\u{a0}', 'x', '$', '0',
        ])),
    );
    (
        prop_oneof![
            users_file().prop_map(|f| f.text("")),
            tokens_file().prop_map(|f| f.text("sha256")),
        ],
        prop::collection::vec(edit, 0..3),
    )
        .prop_map(|(text, edits)| {
            let mut chars: Vec<char> = text.chars().collect();
            for (at, insert) in edits {
                match insert {
                    Some(c) => chars.insert(at.index(chars.len() + 1), c),
                    None if !chars.is_empty() => {
                        chars.remove(at.index(chars.len()));
                    }
                    None => {}
                }
            }
            chars.into_iter().collect()
        })
}

/// What any successful parse must look like, and any failed one.
fn check_parse<D>(
    text: &str,
    db: Result<D, CredentialError>,
    names: impl Fn(&D) -> Vec<String>,
    groups: impl Fn(&D, &str) -> Option<Vec<String>>,
) -> Result<(), TestCaseError> {
    match db {
        Ok(db) => {
            let names = names(&db);
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), names.len(), "duplicate names accepted");
            for n in &names {
                prop_assert!(!n.is_empty() && !n.contains(':'));
                prop_assert!(!n.chars().any(|c| c.is_whitespace() || c.is_control()));
                let g =
                    groups(&db, n).ok_or_else(|| TestCaseError::fail("listed name not found"))?;
                prop_assert!(g.iter().all(|g| !g.is_empty() && !g.contains([':', ','])));
            }
        }
        Err(CredentialError::Line { line, .. }) => {
            prop_assert!(
                line >= 1 && line <= text.lines().count(),
                "line {} of {:?}",
                line,
                text
            );
        }
        Err(e) => prop_assert!(false, "unexpected error {}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every generated user is found, in file order, with its groups de-duplicated; comments,
    /// blank lines, padding and CRLF change nothing.
    #[test]
    fn users_file_round_trips(f in users_file()) {
        let text = f.text("");
        let db = UserDb::parse(Path::new(PATH), &text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(db.len(), f.entries.len());
        prop_assert_eq!(
            db.names().collect::<Vec<_>>(),
            f.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>()
        );
        for e in &f.entries {
            prop_assert!(db.contains(&e.name));
            prop_assert_eq!(db.groups(&e.name), Some(&e.expected_groups()[..]));
        }
    }

    /// Every generated token is found with its groups, and the token itself authenticates as
    /// its name; a token not in the file does not.
    #[test]
    fn tokens_file_round_trips(f in tokens_file()) {
        let text = f.text("sha256");
        let db = TokenDb::parse(Path::new(PATH), &text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(db.len(), f.entries.len());
        prop_assert_eq!(
            db.names().collect::<Vec<_>>(),
            f.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>()
        );
        let auth = Authenticator::new(None, Some(db));
        for e in &f.entries {
            prop_assert_eq!(
                auth.tokens().and_then(|db| db.groups(&e.name)),
                Some(&e.expected_groups()[..])
            );
            let got = auth.verify(&Presented::Bearer { token: e.token.clone() });
            prop_assert_eq!(
                got,
                Ok(Authenticated {
                    kind: CredentialKind::Token,
                    name: e.name.clone(),
                    groups: e.expected_groups(),
                })
            );
        }
        let all: Vec<&str> = f.entries.iter().map(|e| e.token.as_str()).collect();
        let stranger = Presented::Bearer { token: format!("{}x", all.concat()) };
        prop_assert_eq!(auth.verify(&stranger), Err(AuthFailure::UnknownToken));
    }

    /// A second entry for a name already in the file is refused on its own line, naming the
    /// line of the first.
    #[test]
    fn duplicate_names_are_refused(
        f in users_file(),
        tf in tokens_file(),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        hash in bcrypt_shaped(),
    ) {
        for (f, middle, what, secret) in [
            (f, "", "user", hash),
            (tf, "sha256", "token name", token_sha256_hex("another token")),
        ] {
            let d = which.index(f.entries.len());
            let first = f.line_of(d);
            let mut f = f;
            let insert = first + at.index(f.lines.len() + 1 - first);
            let mut dup = f.entries[d].clone();
            dup.secret = secret;
            dup.groups = vec!["other".into()];
            f.lines.insert(insert, Line::Raw(dup.render(middle)));
            let text = f.text(middle);
            let result = if middle.is_empty() {
                UserDb::parse(Path::new(PATH), &text).map(|_| ())
            } else {
                TokenDb::parse(Path::new(PATH), &text).map(|_| ())
            };
            let (line, msg) = line_error(result)?;
            prop_assert_eq!(line, insert + 1, "{}", msg);
            let expected = format!(
                "duplicate {what} {:?} (first defined on line {first})",
                f.entries[d].name
            );
            prop_assert!(msg.ends_with(&expected), "{} / {}", msg, expected);
        }
    }

    /// Two names with the same token digest are refused on the second, naming the first.
    #[test]
    fn shared_token_digests_are_refused(
        f in tokens_file(),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        newcomer in name(),
    ) {
        prop_assume!(f.entries.iter().all(|e| e.name != newcomer));
        let d = which.index(f.entries.len());
        let first = f.line_of(d);
        let mut f = f;
        let insert = first + at.index(f.lines.len() + 1 - first);
        let mut dup = f.entries[d].clone();
        dup.name = newcomer.clone();
        dup.secret = token_sha256_hex(&dup.token).to_uppercase();
        f.lines.insert(insert, Line::Raw(dup.render("sha256")));
        let (line, msg) = line_error(TokenDb::parse(Path::new(PATH), &f.text("sha256")))?;
        prop_assert_eq!(line, insert + 1, "{}", msg);
        let expected = format!(
            "token of {newcomer:?} is the same as that of {:?} on line {first}",
            f.entries[d].name
        );
        prop_assert!(msg.ends_with(&expected), "{} / {}", msg, expected);
        prop_assert!(!msg.to_lowercase().contains(&token_sha256_hex(&f.entries[d].token)));
    }

    /// White space or a control character inside a name or a group refuses the file at that
    /// entry's line, saying so and without quoting the hash; a `:` there refuses it too.
    #[test]
    fn forbidden_characters_are_refused(
        f in users_file(),
        tf in tokens_file(),
        which in any::<prop::sample::Index>(),
        bad in forbidden_char(),
        in_group in any::<bool>(),
        colon in any::<bool>(),
    ) {
        for (f, middle) in [(f, ""), (tf, "sha256")] {
            let k = which.index(f.entries.len());
            let mut f = f;
            let bad = if colon { ':' } else { bad };
            let e = &mut f.entries[k];
            let hash = e.secret.clone();
            // A `:` makes a field too many, or shifts the hash or scheme to where it is wrong.
            if in_group {
                e.groups.push(format!("g{bad}h"));
            } else {
                e.name = format!("{}{bad}n", e.name);
            }
            let text = f.text(middle);
            let result = if middle.is_empty() {
                UserDb::parse(Path::new(PATH), &text).map(|_| ())
            } else {
                TokenDb::parse(Path::new(PATH), &text).map(|_| ())
            };
            let (line, msg) = line_error(result)?;
            prop_assert_eq!(line, f.line_of(k), "{}", msg);
            if !colon {
                prop_assert!(msg.contains("contains whitespace or control characters"), "{}", msg);
                prop_assert!(!msg.contains(&hash), "{}", msg);
            }
        }
    }

    /// No text makes either parser panic, and what they accept or refuse is well formed.
    #[test]
    fn arbitrary_files_never_panic(
        text in prop_oneof![credentials_like_text(), damaged_file(), any::<String>()],
    ) {
        check_parse(
            &text,
            UserDb::parse(Path::new(PATH), &text),
            |db| db.names().map(str::to_string).collect(),
            |db, n| db.groups(n).map(<[String]>::to_vec),
        )?;
        check_parse(
            &text,
            TokenDb::parse(Path::new(PATH), &text),
            |db| db.names().map(str::to_string).collect(),
            |db, n| db.groups(n).map(<[String]>::to_vec),
        )?;
    }

    /// `Basic base64(user:password)` gives back the user (anything without `:`) and password
    /// (anything), whatever the scheme's case, the padding and the surrounding blanks.
    #[test]
    fn basic_round_trips(
        user in "[^:]{0,16}",
        password in any::<String>(),
        scheme in "[bB][aA][sS][iI][cC]",
        padded in any::<bool>(),
        (before, between, after) in ("[ \t]{0,2}", "[ \t]{1,3}", "[ \t]{0,2}"),
    ) {
        let plain = format!("{user}:{password}");
        let b64 = if padded { STANDARD.encode(&plain) } else { STANDARD_NO_PAD.encode(&plain) };
        let value = format!("{before}{scheme}{between}{b64}{after}");
        prop_assert_eq!(
            parse_authorization(&value).ok(),
            Some(Presented::Basic { user, password })
        );
    }

    /// `Bearer <token>` gives back any token of printable ASCII.
    #[test]
    fn bearer_round_trips(
        token in "[!-~]{1,80}",
        scheme in "[bB][eE][aA][rR][eE][rR]",
        (before, between, after) in ("[ \t]{0,2}", "[ \t]{1,3}", "[ \t]{0,2}"),
    ) {
        let value = format!("{before}{scheme}{between}{token}{after}");
        prop_assert_eq!(parse_authorization(&value).ok(), Some(Presented::Bearer { token }));
    }

    /// No header value makes the parser panic; what it accepts is consistent with the value.
    #[test]
    fn arbitrary_authorization_never_panics(
        value in prop_oneof![
            any::<String>(),
            prop::collection::vec(
                prop_oneof![
                    "[bB]asic|BEARER|bearer|Digest",
                    "[ \t]{1,2}",
                    "[A-Za-z0-9+/=]{0,16}",
                    "[!-~]{0,6}",
                    "\\PC",
                ],
                0..6,
            )
            .prop_map(|p| p.concat()),
        ],
    ) {
        match parse_authorization(&value) {
            Ok(Presented::Bearer { token }) => {
                prop_assert!(!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()));
                prop_assert!(value.trim_end_matches([' ', '\t']).ends_with(&token));
            }
            Ok(Presented::Basic { user, password }) => {
                prop_assert!(!user.contains(':'));
                let again = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
                prop_assert_eq!(
                    parse_authorization(&again).ok(),
                    Some(Presented::Basic { user, password })
                );
            }
            Err(e) => {
                prop_assert!(e.to_string().starts_with("malformed Authorization header: "));
            }
        }
    }
}

proptest! {
    // Each case runs real bcrypt or argon2 checks: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// In a generated users file, an entry given a real hash authenticates with its password
    /// (and its groups) and not with another.
    #[test]
    fn real_passwords_authenticate(
        f in users_file(),
        which in any::<prop::sample::Index>(),
        real in any::<prop::sample::Index>(),
    ) {
        let k = which.index(f.entries.len());
        let (password, hash) = &real_hashes()[real.index(real_hashes().len())];
        let mut f = f;
        f.entries[k].secret = hash.clone();
        let db = UserDb::parse(Path::new(PATH), &f.text(""))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let auth = Authenticator::new(Some(db), None).with_cache(0, DEFAULT_CACHE_TTL);
        let e = &f.entries[k];
        let presented = Presented::Basic { user: e.name.clone(), password: password.to_string() };
        prop_assert_eq!(
            auth.verify(&presented),
            Ok(Authenticated {
                kind: CredentialKind::Basic,
                name: e.name.clone(),
                groups: e.expected_groups(),
            })
        );
        let wrong = Presented::Basic { user: e.name.clone(), password: format!("{password}!") };
        prop_assert_eq!(auth.verify(&wrong), Err(AuthFailure::BadPassword));
    }
}
