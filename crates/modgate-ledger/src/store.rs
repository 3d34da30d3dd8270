//! What every ledger store does, whichever database holds it: the [`LedgerStore`] trait that
//! the embedded SQLite [`Ledger`](crate::Ledger) and the shared PostgreSQL ledger (crate
//! `modgate-postgres`) implement with the same semantics, and the pure rules both apply (input
//! checks, the first-seen comparison, prefix listing), so the two cannot drift apart.
//! `conformance` holds the one test suite both must pass.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::error::{excerpt, LedgerError};
use crate::hash::normalize_sha256_hex;
use crate::ledger::{Artifact, Check, Entry, HistoryEntry};

/// Longest module path or version accepted (Go's own limits are far lower).
const MAX_NAME_LEN: usize = 4096;

/// A ledger of first-seen hashes, wherever it is kept. Every method is one atomic operation on
/// the shared record: of two concurrent first observations (threads, processes or replicas) of
/// different bytes exactly one is recorded; an accept is seen by every later operation of every
/// handle on the same store.
pub trait LedgerStore: Send + Sync + fmt::Debug {
    /// Records the hashes if nothing is recorded for `(module, version, artifact)`, else
    /// compares them with the record (see [`compare`]); a mismatch never changes the record.
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
        sha256: &str,
        h1: Option<&str>,
        size: u64,
        source: &str,
    ) -> Result<Check, LedgerError>;

    /// The record for `(module, version, artifact)`, if any.
    fn get(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
    ) -> Result<Option<Entry>, LedgerError>;

    /// All records ordered by module, version and artifact; with a prefix, only the modules
    /// at or below it on a path element boundary (see [`prefix_range`]).
    fn list(&self, module_prefix: Option<&str>) -> Result<Vec<Entry>, LedgerError>;

    /// An operator replaces the recorded hashes (or records them before any upstream served
    /// them); the replaced record, who, when and why go to the history.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        module: &str,
        version: &str,
        artifact: Artifact,
        sha256: &str,
        h1: Option<&str>,
        size: u64,
        operator: &str,
        reason: &str,
    ) -> Result<Entry, LedgerError>;

    /// Every acceptance recorded for any artifact of `module@version`, oldest first.
    fn history(&self, module: &str, version: &str) -> Result<Vec<HistoryEntry>, LedgerError>;

    /// How many records the ledger holds.
    fn count(&self) -> Result<u64, LedgerError>;

    /// Where the ledger is kept, for messages: `SQLite ledger /var/cache/modgate/ledger.sqlite`,
    /// `PostgreSQL ledger 10.0.0.5:5432/modgate`.
    fn describe(&self) -> String;
}

/// What an observation of recorded bytes comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compared {
    /// The same bytes; `fill_h1` is the observed `h1:` to store when the record had none.
    Match {
        /// The `h1:` to fill into the record.
        fill_h1: Option<String>,
    },
    /// Different bytes: the record stays as it is.
    Mismatch,
}

/// The first-seen rule: the bytes match when the SHA-256 and the size are the recorded ones and
/// the `h1:` hashes agree where both are known; a record without an `h1:` gets the observed one
/// (derived from the same bytes) on a match.
pub fn compare(recorded: &Entry, observed: &Observation) -> Compared {
    let h1_agrees = match (&recorded.h1, &observed.h1) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    let same_size = i64::try_from(recorded.size).is_ok_and(|s| s == observed.size);
    if recorded.sha256 == observed.sha256 && same_size && h1_agrees {
        Compared::Match {
            fill_h1: if recorded.h1.is_none() {
                observed.h1.clone()
            } else {
                None
            },
        }
    } else {
        Compared::Mismatch
    }
}

/// The module paths a prefix lists: `(exact, low, high)`, meaning `module = exact OR (low <=
/// module < high)` bytewise. `example.com/a` lists `example.com/a` and `example.com/a/v2` but
/// not `example.com/ab`; `example.com/a/` lists only the modules below `example.com/a`. `None`
/// for an empty prefix (everything).
pub fn prefix_range(prefix: &str) -> Option<(Option<String>, String, String)> {
    if prefix.is_empty() {
        return None;
    }
    let trimmed = prefix.trim_end_matches('/');
    // Module paths below `trimmed` sort in [trimmed + "/", trimmed + "0") bytewise, since '0'
    // follows '/' in ASCII.
    let exact = (!prefix.ends_with('/')).then(|| trimmed.to_owned());
    Some((exact, format!("{trimmed}/"), format!("{trimmed}0")))
}

/// How a listing is named in error messages.
pub fn list_key(prefix: &str) -> String {
    if prefix.is_empty() {
        "all modules".to_owned()
    } else {
        format!("modules under {}", excerpt(prefix))
    }
}

/// An observation's input, checked and normalized: what both backends record.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// The `h1:` hash, checked.
    pub h1: Option<String>,
    /// The size, as both databases store it.
    pub size: i64,
}

impl Observation {
    /// Checks and normalizes an observation's arguments (module and version text, the SHA-256,
    /// the `h1:` and whether this artifact has one, the size).
    pub fn new(
        module: &str,
        version: &str,
        artifact: Artifact,
        sha256: &str,
        h1: Option<&str>,
        size: u64,
    ) -> Result<Self, LedgerError> {
        check_text("module", module)?;
        check_text("version", version)?;
        let sha256 = normalize_sha256_hex(sha256)?;
        let h1 = match h1 {
            None => None,
            Some(_) if !artifact.has_h1() => {
                return Err(LedgerError::InvalidInput {
                    what: "h1",
                    value: excerpt(h1.unwrap_or_default()),
                    detail: "an .info file has no h1: hash",
                })
            }
            Some(h1) => Some(check_h1(h1)?),
        };
        let size = i64::try_from(size).map_err(|_| LedgerError::InvalidInput {
            what: "size",
            value: size.to_string(),
            detail: "larger than the ledger can store",
        })?;
        Ok(Observation { sha256, h1, size })
    }
}

/// Checks a text argument: not empty, not too long, no control characters.
pub fn check_text(what: &'static str, value: &str) -> Result<(), LedgerError> {
    let detail = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_NAME_LEN {
        "too long"
    } else if value.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(LedgerError::InvalidInput {
        what,
        value: excerpt(value),
        detail,
    })
}

/// Checks an `h1:` hash: `h1:` and the base64 of 32 bytes.
fn check_h1(h1: &str) -> Result<String, LedgerError> {
    let valid = h1
        .strip_prefix("h1:")
        .and_then(|b64| BASE64.decode(b64).ok())
        .is_some_and(|digest| digest.len() == 32);
    if valid {
        Ok(h1.to_owned())
    } else {
        Err(LedgerError::InvalidInput {
            what: "h1",
            value: excerpt(h1),
            detail: "expected \"h1:\" and the base64 of a SHA-256 digest",
        })
    }
}

/// How an operation's record is named in error messages: `module@version artifact`.
pub fn key_of(module: &str, version: &str, artifact: Option<Artifact>) -> String {
    match artifact {
        Some(artifact) => format!("{}@{} {artifact}", excerpt(module), excerpt(version)),
        None => format!("{}@{}", excerpt(module), excerpt(version)),
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
