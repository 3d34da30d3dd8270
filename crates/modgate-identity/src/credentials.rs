//! HTTP credentials: the `Authorization` header (Basic and Bearer), the users file (bcrypt or
//! argon2 hashes) and the tokens file (SHA-256 of high-entropy tokens), and an [`Authenticator`]
//! that checks presented credentials against them.
//!
//! # Files
//!
//! Both files are line based; blank lines and lines starting with `#` are ignored.
//!
//! - Users: `name:hash[:group1,group2]`, where `hash` is bcrypt (`$2a$`, `$2b$`, `$2y$`, as
//!   written by `htpasswd -B`) or an argon2 PHC string (`$argon2id$v=19$m=...`, also argon2i and
//!   argon2d).
//! - Tokens: `name:sha256:<64 hex digits>[:group1,group2]`. Tokens must be long random strings
//!   (a SHA-256 without salt is only adequate for those); only their SHA-256 is stored, see
//!   [`token_sha256_hex`].
//!
//! # Cost and the verified-credentials cache
//!
//! bcrypt and argon2 take tens of milliseconds per check by design, and the `go` command sends
//! credentials with every request, so a successful Basic check is remembered for
//! [`DEFAULT_CACHE_TTL`] in a bounded cache ([`DEFAULT_CACHE_CAPACITY`] entries, oldest evicted).
//! The cache key is SHA-256 over a random per-process salt, the user name (length-prefixed) and
//! the password; no password is stored. Only successes are cached. The cache belongs to one
//! [`Authenticator`]: rebuilding it (on reload) starts empty, so a changed or removed password
//! stops working at once. Checks still block the calling thread on a cache miss: call
//! [`Authenticator::verify`] from a blocking-capable context if that matters.
//!
//! # Timing
//!
//! Token digests are compared in constant time against every entry. For an unknown user name,
//! the password is still hashed (against the first user's stored hash, result ignored) so the
//! answer takes as long as for a known user with a wrong password.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::cert::hex_lower;

/// Successful Basic checks are remembered this long by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// At most this many verified credentials are remembered by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Why the `Authorization` header or a credentials file was refused. Messages never contain a
/// password, token or hash.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The `Authorization` header is malformed.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// A credentials file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a credentials file is wrong.
    #[error("{}:{line}: {problem}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// Credentials as the client presented them.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The user name (before the first `:`).
        user: String,
        /// The password (after the first `:`, may contain `:`).
        password: String,
    },
    /// `Authorization: Bearer token`.
    Bearer {
        /// The token.
        token: String,
    },
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Presented::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Presented::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses an `Authorization` header value. The scheme is case-insensitive; spaces and tabs
/// around the parts are ignored. Basic credentials must be base64 of UTF-8 `user:password`.
/// Error messages never echo the value (a client may have put a secret where the scheme goes).
pub fn parse_authorization(value: &str) -> Result<Presented, CredentialError> {
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return Err(CredentialError::Malformed("empty value"));
    }
    let (scheme, rest) = match value.find([' ', '\t']) {
        Some(i) => (&value[..i], value[i..].trim_matches([' ', '\t'])),
        None => (value, ""),
    };
    let is_basic = scheme.eq_ignore_ascii_case("basic");
    let is_bearer = scheme.eq_ignore_ascii_case("bearer");
    if !is_basic && !is_bearer {
        return Err(CredentialError::Malformed(
            "unsupported scheme (expected Basic or Bearer)",
        ));
    }
    if rest.is_empty() {
        return Err(CredentialError::Malformed(
            "no credentials after the scheme",
        ));
    }
    if rest.contains([' ', '\t']) {
        return Err(CredentialError::Malformed(
            "unexpected data after the credentials",
        ));
    }
    if rest.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(CredentialError::Malformed(
            "credentials contain characters outside printable ASCII",
        ));
    }
    if is_bearer {
        return Ok(Presented::Bearer {
            token: rest.to_string(),
        });
    }
    let bytes = BASE64_LENIENT
        .decode(rest)
        .map_err(|_| CredentialError::Malformed("Basic credentials are not valid base64"))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CredentialError::Malformed("Basic credentials are not UTF-8"))?;
    let (user, password) = text.split_once(':').ok_or(CredentialError::Malformed(
        "Basic credentials have no ':' between user and password",
    ))?;
    Ok(Presented::Basic {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// A stored password hash; `Debug` shows only the algorithm.
#[derive(Clone)]
enum StoredHash {
    Bcrypt(String),
    Argon2(String),
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoredHash::Bcrypt(_) => "bcrypt",
            StoredHash::Argon2(_) => "argon2",
        })
    }
}

/// The lowest bcrypt cost a users file may use (bcrypt's own minimum).
pub const MIN_BCRYPT_COST: u32 = 4;
/// The highest bcrypt cost a users file may use: above it one check takes seconds of CPU (each
/// step doubles it).
pub const MAX_BCRYPT_COST: u32 = 16;

impl StoredHash {
    /// Recognizes and checks the format of a hash from the users file.
    fn parse(s: &str) -> Result<StoredHash, String> {
        if s.starts_with("$2a$") || s.starts_with("$2b$") || s.starts_with("$2y$") {
            let parts = s
                .parse::<bcrypt::HashParts>()
                .map_err(|e| format!("malformed bcrypt hash: {e}"))?;
            // Checked at load: cost 31 parses but makes every check (and every unknown-user
            // check, which uses the first hash as its decoy) take hours of CPU.
            let cost = parts.get_cost();
            if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
                return Err(format!(
                    "bcrypt cost {cost} is outside {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST} (a login \
                     check would take too long, or be too cheap); re-hash with `modgate passwd \
                     --cost 10`"
                ));
            }
            return Ok(StoredHash::Bcrypt(s.to_string()));
        }
        if s.starts_with("$argon2id$") || s.starts_with("$argon2i$") || s.starts_with("$argon2d$") {
            let parsed = argon2::PasswordHash::new(s)
                .map_err(|e| format!("malformed argon2 PHC string: {e}"))?;
            argon2::Params::try_from(&parsed)
                .map_err(|e| format!("unusable argon2 parameters: {e}"))?;
            if parsed.salt.is_none() || parsed.hash.is_none() {
                return Err("argon2 PHC string lacks a salt or hash".into());
            }
            return Ok(StoredHash::Argon2(s.to_string()));
        }
        if s.starts_with("$2x$") {
            return Err(
                "bcrypt $2x$ hashes (from a buggy implementation) are not supported; \
                        re-hash the password with $2b$"
                    .into(),
            );
        }
        Err(
            "unknown password hash format (expected bcrypt $2a$/$2b$/$2y$ or an argon2 PHC \
             string $argon2id$/$argon2i$/$argon2d$)"
                .into(),
        )
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            StoredHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            StoredHash::Argon2(h) => {
                use argon2::PasswordVerifier as _;
                match argon2::PasswordHash::new(h) {
                    Ok(parsed) => argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok(),
                    Err(_) => false,
                }
            }
        }
    }
}

/// A users file's stored password hash for one user (opaque; `Debug` shows only the algorithm).
#[derive(Debug, Clone)]
pub struct PasswordHash(StoredHash);

/// A tokens file's SHA-256 of one token (opaque; `Debug` shows nothing of it).
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256")
    }
}

mod sealed {
    /// What a credential file stores per name: a password hash or a token digest.
    pub trait Secret {
        /// The type name `Debug` shows.
        const FILE: &'static str;
        /// What the file's entries are, plural, for `Debug`.
        const ENTRIES: &'static str;
    }
}

impl sealed::Secret for PasswordHash {
    const FILE: &'static str = "UserDb";
    const ENTRIES: &'static str = "users";
}

impl sealed::Secret for TokenDigest {
    const FILE: &'static str = "TokenDb";
    const ENTRIES: &'static str = "tokens";
}

#[derive(Debug, Clone)]
struct Entry<S> {
    name: String,
    secret: S,
    groups: Vec<String>,
}

/// A credentials file: names with their secret (`S`) and groups, in file order, found by name.
/// The users file is a [`UserDb`], the tokens file a [`TokenDb`].
#[derive(Clone)]
pub struct CredentialDb<S> {
    path: PathBuf,
    entries: Vec<Entry<S>>,
    index: HashMap<String, usize>,
}

/// The users file: names, password hashes and groups.
pub type UserDb = CredentialDb<PasswordHash>;

/// The tokens file: names, SHA-256 digests of the tokens, and groups.
pub type TokenDb = CredentialDb<TokenDigest>;

impl<S: sealed::Secret> fmt::Debug for CredentialDb<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(S::FILE)
            .field("path", &self.path)
            .field(S::ENTRIES, &self.entries.len())
            .finish()
    }
}

/// The layout of one kind of credentials file, for [`CredentialDb::parse_lines`].
struct Layout {
    /// How many `:`-separated fields a line has (the last, the groups, is optional).
    fields: std::ops::RangeInclusive<usize>,
    /// The error for a line with another count.
    expected: &'static str,
    /// What a repeated name is called in its error (`user`, `token name`).
    duplicate: &'static str,
}

impl<S> CredentialDb<S> {
    /// Parses the lines of a credentials file: for each, the name (checked, unique), the secret
    /// fields between the name and the groups (read by `secret`, given the name and the line
    /// number), and the optional groups. `path` is only used in error messages.
    fn parse_lines(
        path: &Path,
        text: &str,
        layout: &Layout,
        mut secret: impl FnMut(&str, &[&str], usize) -> Result<S, String>,
    ) -> Result<CredentialDb<S>, CredentialError> {
        let mut entries: Vec<Entry<S>> = Vec::new();
        let mut index = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let groups_at = *layout.fields.start();
        for (line_no, line) in content_lines(text) {
            let err = |problem: String| CredentialError::Line {
                path: path.to_path_buf(),
                line: line_no,
                problem,
            };
            let fields: Vec<&str> = line.split(':').collect();
            if !layout.fields.contains(&fields.len()) {
                return Err(err(layout.expected.into()));
            }
            let name = check_name(fields[0]).map_err(&err)?;
            if let Some(first) = first_line.get(name) {
                return Err(err(format!(
                    "duplicate {} {name:?} (first defined on line {first})",
                    layout.duplicate
                )));
            }
            let secret = secret(name, &fields[1..groups_at], line_no).map_err(&err)?;
            let groups = match fields.get(groups_at) {
                Some(g) => parse_groups(g).map_err(&err)?,
                None => Vec::new(),
            };
            first_line.insert(name.to_string(), line_no);
            index.insert(name.to_string(), entries.len());
            entries.push(Entry {
                name: name.to_string(),
                secret,
                groups,
            });
        }
        Ok(CredentialDb {
            path: path.to_path_buf(),
            entries,
            index,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries (users or tokens).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file named nobody.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a user or token of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The groups of a user, or of the token named `name` (looked up by name, not by secret).
    pub fn groups(&self, name: &str) -> Option<&[String]> {
        self.entry(name).map(|e| e.groups.as_slice())
    }

    /// User or token names in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    fn entry(&self, name: &str) -> Option<&Entry<S>> {
        self.index.get(name).and_then(|&i| self.entries.get(i))
    }
}

impl CredentialDb<PasswordHash> {
    /// Reads and checks a users file.
    pub fn load(path: &Path) -> Result<UserDb, CredentialError> {
        let text = read_secret_file(path)?;
        UserDb::parse(path, &text)
    }

    /// Parses users-file text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<UserDb, CredentialError> {
        let layout = Layout {
            fields: 2..=3,
            expected: "expected name:hash or name:hash:group1,group2",
            duplicate: "user",
        };
        CredentialDb::parse_lines(path, text, &layout, |_, fields, _| {
            StoredHash::parse(fields[0].trim()).map(PasswordHash)
        })
    }

    /// Checks a password; `Err(UnknownUser)` costs about as much as a wrong password.
    fn check(&self, user: &str, password: &str) -> Result<&Entry<PasswordHash>, AuthFailure> {
        match self.entry(user) {
            Some(entry) => {
                if entry.secret.0.verify(password) {
                    Ok(entry)
                } else {
                    Err(AuthFailure::BadPassword)
                }
            }
            None => {
                if let Some(decoy) = self.entries.first() {
                    let _ = std::hint::black_box(decoy.secret.0.verify(password));
                }
                Err(AuthFailure::UnknownUser)
            }
        }
    }
}

impl CredentialDb<TokenDigest> {
    /// Reads and checks a tokens file.
    pub fn load(path: &Path) -> Result<TokenDb, CredentialError> {
        let text = read_secret_file(path)?;
        TokenDb::parse(path, &text)
    }

    /// Parses tokens-file text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<TokenDb, CredentialError> {
        let layout = Layout {
            fields: 3..=4,
            expected: "expected name:sha256:<64 hex digits> or name:sha256:<64 hex digits>:groups",
            duplicate: "token name",
        };
        let mut by_digest: HashMap<[u8; 32], (String, usize)> = HashMap::new();
        let db = CredentialDb::parse_lines(path, text, &layout, |name, fields, line_no| {
            if fields[0].trim() != "sha256" {
                return Err("unknown token hash scheme (expected \"sha256\")".into());
            }
            let digest = parse_digest(fields[1].trim())?;
            if let Some((other, other_line)) = by_digest.get(&digest) {
                return Err(format!(
                    "token of {name:?} is the same as that of {other:?} on line {other_line}"
                ));
            }
            by_digest.insert(digest, (name.to_string(), line_no));
            Ok(TokenDigest(digest))
        })?;
        if db.entries.len() > u32::MAX as usize - 1 {
            return Err(CredentialError::Line {
                path: path.to_path_buf(),
                line: 0,
                problem: "too many tokens".into(),
            });
        }
        Ok(db)
    }

    /// Finds the token's entry, comparing the digest with every entry in constant time.
    fn check(&self, token: &str) -> Option<&Entry<TokenDigest>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: u32 = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            // Fits: parse() caps the count below u32::MAX.
            let candidate = (i as u32).wrapping_add(1);
            let eq = digest.ct_eq(&entry.secret.0);
            found = u32::conditional_select(&found, &candidate, eq);
        }
        match found {
            0 => None,
            n => self.entries.get((n - 1) as usize),
        }
    }
}

/// The lowercase hex SHA-256 of a token, as written in the tokens file
/// (`name:sha256:<this>`).
pub fn token_sha256_hex(token: &str) -> String {
    hex_lower(&Sha256::digest(token.as_bytes()))
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("token digest must be 64 hex digits (the SHA-256 of the token)".into());
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).unwrap_or("");
        *slot = u8::from_str_radix(pair, 16)
            .map_err(|_| "token digest must be 64 hex digits".to_string())?;
    }
    Ok(out)
}

/// Non-comment, non-blank lines with their 1-based numbers, trimmed. A byte-order mark that an
/// editor put at the start of the file is not part of the first name.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

fn check_name(name: &str) -> Result<&str, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "name {name:?} contains whitespace or control characters"
        ));
    }
    Ok(name)
}

fn parse_groups(field: &str) -> Result<Vec<String>, String> {
    let field = field.trim();
    let mut groups: Vec<String> = Vec::new();
    if field.is_empty() {
        return Ok(groups);
    }
    for g in field.split(',') {
        let g = g.trim();
        if g.is_empty() {
            return Err(format!("empty group name in {field:?}"));
        }
        if g.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "group {g:?} contains whitespace or control characters"
            ));
        }
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    Ok(groups)
}

fn read_secret_file(path: &Path) -> Result<String, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o004 != 0 {
                log::warn!(
                    "{}: credentials file is readable by every user; chmod o-r it",
                    path.display()
                );
            }
        }
    }
    Ok(text)
}

/// Which kind of credential authenticated a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// A user name and password (Basic).
    Basic,
    /// A bearer token.
    Token,
}

impl CredentialKind {
    /// `basic` or `token`, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialKind::Basic => "basic",
            CredentialKind::Token => "token",
        }
    }
}

/// A successful check: who, and in which groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Basic or token.
    pub kind: CredentialKind,
    /// The user or token name from the file.
    pub name: String,
    /// The groups listed for it.
    pub groups: Vec<String>,
}

/// Why presented credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthFailure {
    /// No such user in the users file.
    #[error("unknown user")]
    UnknownUser,
    /// The user exists; the password is wrong.
    #[error("wrong password")]
    BadPassword,
    /// The token matches no entry of the tokens file.
    #[error("unknown token")]
    UnknownToken,
    /// This kind of credential is not accepted here (no users or tokens file).
    #[error("this kind of credential is not configured")]
    NotConfigured,
}

impl AuthFailure {
    /// A stable label for metrics and logs: `unknown-user`, `bad-password`, `unknown-token`,
    /// `not-configured`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown-user",
            AuthFailure::BadPassword => "bad-password",
            AuthFailure::UnknownToken => "unknown-token",
            AuthFailure::NotConfigured => "not-configured",
        }
    }
}

/// Counters of the verified-credentials cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Basic checks answered from the cache.
    pub hits: u64,
    /// Basic checks that ran the password hash.
    pub misses: u64,
    /// Entries held now (expired ones may still be counted until evicted).
    pub entries: usize,
}

struct CacheEntry {
    result: Authenticated,
    inserted: Instant,
}

/// Checks presented credentials against a users file and/or a tokens file. Immutable apart from
/// its cache: to reload, build a new one (e.g. behind an `ArcSwap`) with [`Authenticator::load`]
/// or [`Authenticator::reload`].
pub struct Authenticator {
    users: Option<UserDb>,
    tokens: Option<TokenDb>,
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
    capacity: usize,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users)
            .field("tokens", &self.tokens)
            .field("cache_capacity", &self.capacity)
            .field("cache_ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over already-loaded files, with the default cache settings.
    pub fn new(users: Option<UserDb>, tokens: Option<TokenDb>) -> Authenticator {
        Authenticator {
            users,
            tokens,
            cache: Mutex::new(HashMap::new()),
            capacity: DEFAULT_CACHE_CAPACITY,
            ttl: DEFAULT_CACHE_TTL,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Reads the users and/or tokens file.
    pub fn load(
        users: Option<&Path>,
        tokens: Option<&Path>,
    ) -> Result<Authenticator, CredentialError> {
        let users = users.map(UserDb::load).transpose()?;
        let tokens = tokens.map(TokenDb::load).transpose()?;
        Ok(Authenticator::new(users, tokens))
    }

    /// Re-reads the same files into a new authenticator (with an empty cache and the same cache
    /// settings); `self` is untouched, so on error the caller keeps using it.
    pub fn reload(&self) -> Result<Authenticator, CredentialError> {
        let users = self.users.as_ref().map(|u| u.path().to_path_buf());
        let tokens = self.tokens.as_ref().map(|t| t.path().to_path_buf());
        Ok(Authenticator::load(users.as_deref(), tokens.as_deref())?
            .with_cache(self.capacity, self.ttl))
    }

    /// Sets the cache size and lifetime; a capacity of 0 turns caching off.
    pub fn with_cache(mut self, capacity: usize, ttl: Duration) -> Authenticator {
        self.capacity = capacity;
        self.ttl = ttl;
        self
    }

    /// The users file, if configured.
    pub fn users(&self) -> Option<&UserDb> {
        self.users.as_ref()
    }

    /// The tokens file, if configured.
    pub fn tokens(&self) -> Option<&TokenDb> {
        self.tokens.as_ref()
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.lock_cache().len(),
        }
    }

    /// Answers what costs no password hash: a bearer token, a password verified recently (the
    /// cache), or a kind of credential that is not configured. `None`: only [`Self::verify`],
    /// which may hash, can tell.
    pub fn verify_cheap(
        &self,
        presented: &Presented,
    ) -> Option<Result<Authenticated, AuthFailure>> {
        match presented {
            Presented::Bearer { .. } => Some(self.verify(presented)),
            Presented::Basic { .. } if self.users.is_none() => {
                Some(Err(AuthFailure::NotConfigured))
            }
            Presented::Basic { user, password } if self.capacity > 0 => {
                let hit = self.cache_get(&cache_key(user, password))?;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(Ok(hit))
            }
            Presented::Basic { .. } => None,
        }
    }

    /// Checks presented credentials.
    pub fn verify(&self, presented: &Presented) -> Result<Authenticated, AuthFailure> {
        match presented {
            Presented::Basic { user, password } => self.verify_basic(user, password),
            Presented::Bearer { token } => {
                let db = self.tokens.as_ref().ok_or(AuthFailure::NotConfigured)?;
                let entry = db.check(token).ok_or(AuthFailure::UnknownToken)?;
                Ok(Authenticated {
                    kind: CredentialKind::Token,
                    name: entry.name.clone(),
                    groups: entry.groups.clone(),
                })
            }
        }
    }

    fn verify_basic(&self, user: &str, password: &str) -> Result<Authenticated, AuthFailure> {
        let db = self.users.as_ref().ok_or(AuthFailure::NotConfigured)?;
        let key = cache_key(user, password);
        if self.capacity > 0 {
            if let Some(hit) = self.cache_get(&key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit);
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let entry = db.check(user, password)?;
        let result = Authenticated {
            kind: CredentialKind::Basic,
            name: entry.name.clone(),
            groups: entry.groups.clone(),
        };
        if self.capacity > 0 {
            self.cache_put(key, result.clone());
        }
        Ok(result)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], CacheEntry>> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_get(&self, key: &[u8; 32]) -> Option<Authenticated> {
        let mut cache = self.lock_cache();
        let fresh = cache.get(key).map(|e| e.inserted.elapsed() <= self.ttl)?;
        if fresh {
            cache.get(key).map(|e| e.result.clone())
        } else {
            cache.remove(key);
            None
        }
    }

    fn cache_put(&self, key: [u8; 32], result: Authenticated) {
        let mut cache = self.lock_cache();
        if cache.len() >= self.capacity && !cache.contains_key(&key) {
            let ttl = self.ttl;
            cache.retain(|_, e| e.inserted.elapsed() <= ttl);
            while cache.len() >= self.capacity {
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, e)| e.inserted)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) => {
                        cache.remove(&k);
                    }
                    None => break,
                }
            }
        }
        cache.insert(
            key,
            CacheEntry {
                result,
                inserted: Instant::now(),
            },
        );
    }
}

/// SHA-256(process salt ‖ len(user) as u64 BE ‖ user ‖ NUL ‖ password). The length prefix makes
/// the encoding unambiguous even for names containing NUL.
fn cache_key(user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(process_salt());
    h.update((user.len() as u64).to_be_bytes());
    h.update(user.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// 32 random bytes chosen once per process, from `/dev/urandom`; if that cannot be read, from
/// the OS-seeded keys of std's `RandomState` mixed with the time and process id.
fn process_salt() -> &'static [u8; 32] {
    static SALT: OnceLock<[u8; 32]> = OnceLock::new();
    SALT.get_or_init(|| {
        use std::io::Read as _;
        let mut salt = [0u8; 32];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            if f.read_exact(&mut salt).is_ok() {
                return salt;
            }
        }
        use std::hash::{BuildHasher as _, Hasher as _};
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for chunk in salt.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(nanos);
            h.write_u32(std::process::id());
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        salt
    })
}

#[cfg(test)]
#[path = "credentials_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn argon2_hash(password: &str, alg: argon2::Algorithm) -> String {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let params = argon2::Params::new(64, 1, 1, None).expect("params");
        argon2::Argon2::new(alg, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .expect("hash")
            .to_string()
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        path
    }

    fn basic(user: &str, password: &str) -> Presented {
        Presented::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn absurd_bcrypt_costs_are_refused_at_load() {
        let path = Path::new("users");
        let ok = bcrypt::hash("pw", 4).expect("hash");
        assert!(UserDb::parse(path, &format!("alice:{ok}\n")).is_ok());
        for cost in ["31", "17", "03"] {
            let hash = ok.replacen("$04$", &format!("${cost}$"), 1);
            let e = UserDb::parse(path, &format!("alice:{hash}\n"))
                .err()
                .map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("bcrypt cost")),
                "{cost}: {e:?}"
            );
        }
    }

    #[test]
    fn a_byte_order_mark_does_not_rename_the_first_user() {
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let db =
            UserDb::parse(Path::new("users"), &format!("\u{feff}alice:{hash}\n")).expect("parse");
        assert!(db.contains("alice"));
    }

    #[test]
    fn parse_basic_and_bearer() {
        assert_eq!(
            parse_authorization(&format!("Basic {}", b64("alice:s3cr:et"))).expect("basic"),
            basic("alice", "s3cr:et")
        );
        assert_eq!(
            parse_authorization(&format!("basic {}", b64("alice:"))).expect("lower"),
            basic("alice", "")
        );
        assert_eq!(
            parse_authorization(&format!("  BASIC \t {}  ", b64("a:b"))).expect("spaces"),
            basic("a", "b")
        );
        // Missing padding is tolerated.
        assert_eq!(
            parse_authorization("Basic YTpi").expect("no pad"),
            basic("a", "b")
        );
        assert_eq!(
            parse_authorization("Basic YTpiYw").expect("no pad 2"),
            basic("a", "bc")
        );
        assert_eq!(
            parse_authorization("bearer abc.DEF-123_~+/=").expect("bearer"),
            Presented::Bearer {
                token: "abc.DEF-123_~+/=".into()
            }
        );
        assert_eq!(
            parse_authorization(&format!("Basic {}", b64("zoë:pässword"))).expect("utf8"),
            basic("zoë", "pässword")
        );
    }

    #[test]
    fn parse_errors_are_safe() {
        let secret = "hunter2-very-secret";
        for (value, needle) in [
            (String::new(), "empty"),
            ("Basic".to_string(), "no credentials"),
            ("Basic    ".to_string(), "no credentials"),
            (
                format!("Basic {}", b64(&format!("nocolon{secret}"))),
                "no ':'",
            ),
            (format!("Basic {secret}!!"), "not valid base64"),
            ("Basic //79".to_string(), "not UTF-8"),
            (format!("Basic {} extra", b64("a:b")), "unexpected data"),
            (format!("Digest {secret}"), "unsupported scheme"),
            (secret.to_string(), "unsupported scheme"),
            (format!("Bearer {secret}\u{1}"), "printable ASCII"),
            (format!("Bearer {secret} more"), "unexpected data"),
        ] {
            let e = parse_authorization(&value).expect_err(&value).to_string();
            assert!(e.contains(needle), "{value:?}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.starts_with("malformed Authorization header: "), "{e}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let p = basic("alice", "hunter2");
        let d = format!("{p:?}");
        assert!(d.contains("alice") && !d.contains("hunter2"), "{d}");
        let t = Presented::Bearer {
            token: "tok-secret".into(),
        };
        assert!(!format!("{t:?}").contains("tok-secret"));
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let db = UserDb::parse(Path::new("users"), &format!("alice:{hash}:g")).expect("db");
        let auth = Authenticator::new(Some(db), None);
        let d = format!("{auth:?}");
        assert!(!d.contains(&hash) && !d.contains("$2"), "{d}");
    }

    #[test]
    fn bcrypt_and_argon2_users() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = format!(
            "# comment\n\n  alice:{}:dev,ops\r\nbob:{}\ncarol:{}:admin\ndave:{}:\n",
            bcrypt::hash("alice-pw", 4).expect("bcrypt"),
            argon2_hash("bob-pw", argon2::Algorithm::Argon2id),
            argon2_hash("carol-pw", argon2::Algorithm::Argon2i),
            argon2_hash("dave-pw", argon2::Algorithm::Argon2d),
        );
        let users = write(&dir, "users", &text);
        let auth = Authenticator::load(Some(&users), None).expect("load");
        let db = auth.users().expect("users");
        assert_eq!(db.len(), 4);
        assert_eq!(
            db.groups("alice"),
            Some(&["dev".to_string(), "ops".to_string()][..])
        );
        assert_eq!(db.groups("dave"), Some(&[][..]));
        assert_eq!(db.groups("nobody"), None);
        assert!(db.contains("bob") && !db.contains("Bob"));
        assert_eq!(
            db.names().collect::<Vec<_>>(),
            ["alice", "bob", "carol", "dave"]
        );

        let ok = auth.verify(&basic("alice", "alice-pw")).expect("alice");
        assert_eq!(
            ok,
            Authenticated {
                kind: CredentialKind::Basic,
                name: "alice".into(),
                groups: vec!["dev".into(), "ops".into()],
            }
        );
        assert_eq!(
            auth.verify(&basic("bob", "bob-pw")).expect("bob").name,
            "bob"
        );
        assert_eq!(
            auth.verify(&basic("carol", "carol-pw"))
                .expect("carol")
                .groups,
            vec!["admin"]
        );
        assert!(auth.verify(&basic("dave", "dave-pw")).is_ok());

        assert_eq!(
            auth.verify(&basic("alice", "wrong")),
            Err(AuthFailure::BadPassword)
        );
        assert_eq!(
            auth.verify(&basic("bob", "alice-pw")),
            Err(AuthFailure::BadPassword)
        );
        assert_eq!(
            auth.verify(&basic("mallory", "alice-pw")),
            Err(AuthFailure::UnknownUser)
        );
        assert_eq!(
            auth.verify(&Presented::Bearer { token: "x".into() }),
            Err(AuthFailure::NotConfigured)
        );
        assert_eq!(AuthFailure::UnknownUser.as_str(), "unknown-user");
        assert_eq!(AuthFailure::BadPassword.as_str(), "bad-password");
        assert_eq!(AuthFailure::UnknownToken.as_str(), "unknown-token");
        assert_eq!(AuthFailure::NotConfigured.as_str(), "not-configured");
    }

    #[test]
    fn users_file_errors_name_path_and_line() {
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let p = Path::new("/etc/modgate/users");
        for (text, line, needle) in [
            ("# c\nalice".to_string(), 2, "expected name:hash"),
            (
                "alice:plaintext".to_string(),
                1,
                "unknown password hash format",
            ),
            (
                "alice:{SHA}abc=".to_string(),
                1,
                "unknown password hash format",
            ),
            ("alice:$2b$04$short".to_string(), 1, "malformed bcrypt hash"),
            (
                "alice:$2x$04$abcdefghijklmnopqrstuuAbCdEfGhIjKlMnOpQrStUvWxYz01234".to_string(),
                1,
                "$2x$",
            ),
            ("alice:$argon2id$v=19$garbage".to_string(), 1, "argon2"),
            (format!(":{hash}"), 1, "empty name"),
            (format!("al ice:{hash}"), 1, "whitespace"),
            (
                format!("alice:{hash}\n\nalice:{hash}"),
                3,
                "duplicate user \"alice\" (first defined on line 1)",
            ),
            (format!("alice:{hash}:a,,b"), 1, "empty group name"),
            (format!("alice:{hash}:a,b c"), 1, "whitespace"),
            (format!("alice:{hash}:a:b"), 1, "expected name:hash"),
        ] {
            let e = UserDb::parse(p, &text).expect_err(&text).to_string();
            assert!(
                e.starts_with(&format!("/etc/modgate/users:{line}: ")),
                "{text}: {e}"
            );
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains(&hash), "{e}");
        }
        let missing = UserDb::load(Path::new("/nonexistent/users")).expect_err("missing");
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/users: cannot read"),
            "{missing}"
        );
        let empty = UserDb::parse(p, "# nothing\n").expect("empty");
        assert!(empty.is_empty());
        let auth = Authenticator::new(Some(empty), None);
        assert_eq!(auth.verify(&basic("a", "b")), Err(AuthFailure::UnknownUser));
    }

    #[test]
    fn tokens() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = format!(
            "# ci tokens\nci:sha256:{}:ci,readers\nbot:sha256:{}\n",
            token_sha256_hex("tok-ci-0123456789"),
            token_sha256_hex("tok-bot-0123456789").to_uppercase(),
        );
        let tokens = write(&dir, "tokens", &text);
        let auth = Authenticator::load(None, Some(&tokens)).expect("load");
        let db = auth.tokens().expect("tokens");
        assert_eq!(db.len(), 2);
        assert_eq!(db.names().collect::<Vec<_>>(), ["ci", "bot"]);
        assert!(db.contains("bot") && !db.contains("tok-ci-0123456789"));
        assert_eq!(
            db.groups("ci"),
            Some(&["ci".to_string(), "readers".to_string()][..])
        );
        assert_eq!(db.groups("bot"), Some(&[][..]));
        assert_eq!(db.groups("nobody"), None);
        let ci = auth
            .verify(&Presented::Bearer {
                token: "tok-ci-0123456789".into(),
            })
            .expect("ci");
        assert_eq!(
            ci,
            Authenticated {
                kind: CredentialKind::Token,
                name: "ci".into(),
                groups: vec!["ci".into(), "readers".into()],
            }
        );
        assert_eq!(
            auth.verify(&Presented::Bearer {
                token: "tok-bot-0123456789".into()
            })
            .expect("bot")
            .name,
            "bot"
        );
        assert_eq!(
            auth.verify(&Presented::Bearer {
                token: "tok-ci-012345678".into()
            }),
            Err(AuthFailure::UnknownToken)
        );
        assert_eq!(
            auth.verify(&basic("ci", "tok-ci-0123456789")),
            Err(AuthFailure::NotConfigured)
        );
        assert_eq!(CredentialKind::Token.as_str(), "token");
    }

    #[test]
    fn tokens_file_errors() {
        let p = Path::new("tokens.txt");
        let d = token_sha256_hex("t");
        for (text, line, needle) in [
            ("ci:sha256".to_string(), 1, "expected name:sha256"),
            (format!("ci:md5:{d}"), 1, "unknown token hash scheme"),
            ("ci:sha256:abcd".to_string(), 1, "64 hex digits"),
            (format!("ci:sha256:{}", "g".repeat(64)), 1, "64 hex digits"),
            (
                format!("ci:sha256:{d}\nci:sha256:{}", token_sha256_hex("u")),
                2,
                "duplicate token name",
            ),
            (
                format!("a:sha256:{d}\nb:sha256:{d}"),
                2,
                "same as that of \"a\" on line 1",
            ),
            (format!("a:sha256:{d}:,"), 1, "empty group"),
            (format!(" :sha256:{d}"), 1, "empty name"),
        ] {
            let e = TokenDb::parse(p, &text).expect_err(&text).to_string();
            assert!(
                e.starts_with(&format!("tokens.txt:{line}: ")),
                "{text}: {e}"
            );
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn cheap_answers_never_hash() {
        let dir = tempfile::tempdir().expect("tmp");
        let users = write(
            &dir,
            "users",
            &format!("alice:{}\n", bcrypt::hash("pw", 4).expect("hash")),
        );
        let digest = token_sha256_hex("t0ken");
        let tokens = write(&dir, "tokens", &format!("ci:sha256:{digest}\n"));
        let auth = Authenticator::load(Some(&users), Some(&tokens)).expect("load");
        // A password not verified yet needs the hash: no cheap answer.
        assert_eq!(auth.verify_cheap(&basic("alice", "pw")), None);
        assert_eq!(auth.verify_cheap(&basic("alice", "wrong")), None);
        auth.verify(&basic("alice", "pw")).expect("verified once");
        // Then it is answered from the cache, as is any token, right or wrong.
        assert!(matches!(
            auth.verify_cheap(&basic("alice", "pw")),
            Some(Ok(_))
        ));
        assert_eq!(auth.verify_cheap(&basic("alice", "wrong")), None);
        let token = Presented::Bearer {
            token: "t0ken".into(),
        };
        assert!(matches!(auth.verify_cheap(&token), Some(Ok(a)) if a.name == "ci"));
        let bad = Presented::Bearer {
            token: "nope".into(),
        };
        assert_eq!(
            auth.verify_cheap(&bad),
            Some(Err(AuthFailure::UnknownToken))
        );
        // No users file: a password is refused at once.
        let tokens_only = Authenticator::load(None, Some(&tokens)).expect("load");
        assert_eq!(
            tokens_only.verify_cheap(&basic("alice", "pw")),
            Some(Err(AuthFailure::NotConfigured))
        );
    }

    #[test]
    fn cache_hits_and_reload_invalidates() {
        let dir = tempfile::tempdir().expect("tmp");
        let users = write(
            &dir,
            "users",
            &format!("alice:{}:dev\n", bcrypt::hash("old-pw", 4).expect("hash")),
        );
        let auth = Authenticator::load(Some(&users), None).expect("load");
        let first = auth.verify(&basic("alice", "old-pw")).expect("first");
        let second = auth.verify(&basic("alice", "old-pw")).expect("second");
        assert_eq!(first, second);
        let stats = auth.cache_stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
        // A wrong password is never answered from the cache, and failures are not cached.
        assert_eq!(
            auth.verify(&basic("alice", "old-pw2")),
            Err(AuthFailure::BadPassword)
        );
        assert_eq!(auth.cache_stats().entries, 1);
        // The same password for another (unknown) name is not a hit.
        assert_eq!(
            auth.verify(&basic("alicE", "old-pw")),
            Err(AuthFailure::UnknownUser)
        );

        write(
            &dir,
            "users",
            &format!("alice:{}:dev\n", bcrypt::hash("new-pw", 4).expect("hash")),
        );
        let reloaded = auth.reload().expect("reload");
        assert_eq!(reloaded.cache_stats(), CacheStats::default());
        assert_eq!(
            reloaded.verify(&basic("alice", "old-pw")),
            Err(AuthFailure::BadPassword)
        );
        assert!(reloaded.verify(&basic("alice", "new-pw")).is_ok());

        // A broken file on reload is an error; the old authenticator keeps working.
        write(&dir, "users", "alice:nonsense\n");
        let e = auth.reload().expect_err("broken").to_string();
        assert!(e.contains("users:1:"), "{e}");
        assert!(auth.verify(&basic("alice", "old-pw")).is_ok());
    }

    #[test]
    fn cache_ttl_capacity_and_off() {
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let text = format!("a:{hash}\nb:{hash}\nc:{hash}\n");
        let db = UserDb::parse(Path::new("u"), &text).expect("db");

        let small = Authenticator::new(Some(db.clone()), None).with_cache(2, DEFAULT_CACHE_TTL);
        for u in ["a", "b", "c"] {
            small.verify(&basic(u, "pw")).expect(u);
        }
        assert_eq!(small.cache_stats().entries, 2);
        // "a" was the oldest and got evicted; "c" is still there.
        small.verify(&basic("c", "pw")).expect("c");
        assert_eq!(small.cache_stats().hits, 1);
        small.verify(&basic("a", "pw")).expect("a");
        assert_eq!(small.cache_stats().hits, 1);

        let expired = Authenticator::new(Some(db.clone()), None).with_cache(10, Duration::ZERO);
        expired.verify(&basic("a", "pw")).expect("a");
        std::thread::sleep(Duration::from_millis(2));
        expired.verify(&basic("a", "pw")).expect("a");
        assert_eq!(expired.cache_stats().hits, 0);

        let off = Authenticator::new(Some(db), None).with_cache(0, DEFAULT_CACHE_TTL);
        off.verify(&basic("a", "pw")).expect("a");
        off.verify(&basic("a", "pw")).expect("a");
        assert_eq!(
            off.cache_stats(),
            CacheStats {
                hits: 0,
                misses: 2,
                entries: 0
            }
        );
    }

    #[test]
    fn cache_key_is_unambiguous_and_salted() {
        assert_ne!(cache_key("a\0b", "c"), cache_key("a", "b\0c"));
        assert_ne!(cache_key("ab", "c"), cache_key("a", "bc"));
        assert_eq!(cache_key("a", "b"), cache_key("a", "b"));
        let unsalted: [u8; 32] = Sha256::digest(b"a\0b").into();
        assert_ne!(cache_key("a", "b"), unsalted);
        assert_ne!(process_salt(), &[0u8; 32]);
    }

    #[test]
    fn not_configured() {
        let auth = Authenticator::new(None, None);
        assert_eq!(
            auth.verify(&basic("a", "b")),
            Err(AuthFailure::NotConfigured)
        );
        assert_eq!(
            auth.verify(&Presented::Bearer { token: "t".into() }),
            Err(AuthFailure::NotConfigured)
        );
        assert_eq!(
            Authenticator::load(None, Some(Path::new("/nonexistent/tokens")))
                .expect_err("missing")
                .to_string()
                .split(':')
                .next(),
            Some("/nonexistent/tokens")
        );
    }
}
