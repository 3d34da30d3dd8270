//! Which commit a tag points at, for rules limited to `commits`.
//!
//! A version string such as `v1.0.0` does not say which commit it is; the upstream's `.info`
//! does (`Origin.Hash`, written by the go command since Go 1.20 and by modgate's own Git
//! origin). When admission says a request's decision could depend on the commit
//! ([`super::admit::Admission::commit_needed`]), the proxy asks the matched route's chain for
//! the version's `.info` (the same steps, fall-through rules, credentials and forwarded
//! identity as the request itself would use), takes its `Origin.Hash`, and admits the request
//! again with it. Answers are remembered per route, module and version (a tag's commit does
//! not change: the ledger refuses a re-tagged version), a bounded number of them; an upstream
//! that did not say is asked again after [`UNTOLD_TTL`].
//!
//! What the upstream does not tell cannot be judged: a `.info` without `Origin.Hash` leaves
//! the tag undecided by commit (documented in docs/configuration.md), while an upstream that
//! fails or cannot be reached refuses the request (502) rather than guessing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use modgate_protocol::{ModuleRequest, RequestKind};
use serde::Deserialize;

use super::lookup::{Fetched, IdentityHeaders, Lookup};
use crate::upstream::Chain;

/// How many resolved tags are remembered (the memory is emptied when it is full).
const KNOWN_MAX: usize = 65_536;
/// How long "the upstream did not say" is remembered before asking again.
pub const UNTOLD_TTL: Duration = Duration::from_secs(60);
/// The largest `.info` read (Go's own `.info` files are a few hundred bytes).
const INFO_MAX: usize = 64 * 1024;

/// What the chain said about a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The full commit hash (lower-case hex).
    Commit(String),
    /// The `.info` did not carry `Origin.Hash`.
    Untold,
    /// No step has the version (404/410 to the end of the chain): the request itself will be
    /// answered the same way.
    NotFound,
}

/// What remembering a resolution keeps.
#[derive(Debug, Clone)]
enum Known {
    Commit(String),
    Untold(Instant),
}

/// The commit resolver shared by a listener's requests.
#[derive(Default)]
pub struct Commits {
    known: Mutex<HashMap<(String, String, String), Known>>,
}

/// The part of a `.info` this module reads.
#[derive(Deserialize)]
struct Info {
    #[serde(rename = "Origin")]
    origin: Option<Origin>,
}

#[derive(Deserialize)]
struct Origin {
    #[serde(rename = "Hash", default)]
    hash: String,
}

/// The commit a `.info` body names: `Origin.Hash` when it is a full object name (40 or 64 hex
/// digits); `Ok(None)` when the body has no such field; an error when the body is not a
/// `.info` at all.
pub fn origin_hash(body: &[u8]) -> Result<Option<String>, String> {
    let info: Info =
        serde_json::from_slice(body).map_err(|e| format!("the .info is not valid JSON: {e}"))?;
    let Some(hash) = info.origin.map(|o| o.hash).filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    if !matches!(hash.len(), 40 | 64) || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the .info names commit {:?}, which is not a commit hash",
            hash.chars().take(80).collect::<String>()
        ));
    }
    Ok(Some(hash.to_ascii_lowercase()))
}

impl Commits {
    /// The commit `req` (an exact tag) points at, asked of `chain` for the route `route`.
    /// `headers` are the identity headers each upstream that forwards identity receives
    /// (computed by the caller for that upstream). `private`: the route is private, and no
    /// public upstream may be asked.
    pub async fn resolve(
        &self,
        lookup: &Lookup,
        memo: &str,
        private: bool,
        chain: &Chain,
        req: &ModuleRequest,
        headers: IdentityHeaders<'_>,
    ) -> Result<Resolved, String> {
        let version = req
            .version
            .as_ref()
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        // `memo`: the route, and who the answer is for on a chain that answers each identity
        // its own way (identity forwarded, or cached per identity).
        let key = (memo.to_owned(), req.module.clone(), version.clone());
        if let Some(known) = self.recall(&key) {
            return Ok(known);
        }
        let info = ModuleRequest {
            module: req.module.clone(),
            kind: RequestKind::Info,
            version: req.version.clone(),
        };
        let path = info.upstream_path();
        let fetched = lookup
            .get(chain, private, &path, &req.module, headers, INFO_MAX)
            .await
            .map_err(|e| format!("its .info: {e}"))?;
        let resolved = match fetched {
            Fetched::NotFound => Resolved::NotFound,
            Fetched::Body(body) => match origin_hash(&body)? {
                Some(hash) => Resolved::Commit(hash),
                None => Resolved::Untold,
            },
        };
        self.remember(key, &resolved);
        Ok(resolved)
    }

    fn recall(&self, key: &(String, String, String)) -> Option<Resolved> {
        let known = self.known.lock().ok()?;
        match known.get(key)? {
            Known::Commit(c) => Some(Resolved::Commit(c.clone())),
            Known::Untold(at) if at.elapsed() < UNTOLD_TTL => Some(Resolved::Untold),
            Known::Untold(_) => None,
        }
    }

    fn remember(&self, key: (String, String, String), resolved: &Resolved) {
        let value = match resolved {
            Resolved::Commit(c) => Known::Commit(c.clone()),
            Resolved::Untold => Known::Untold(Instant::now()),
            // A version that appears later is asked about then.
            Resolved::NotFound => return,
        };
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= KNOWN_MAX {
                known.clear();
            }
            known.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_hash_is_read_from_an_info_as_go_writes_it() {
        // As `go mod download -json` caches it (Go 1.23, codehost.Origin).
        let body = br#"{"Version":"v1.0.0","Time":"2024-03-15T10:11:12Z","Origin":{"VCS":"git","URL":"https://git.corp.example/team/lib","Ref":"refs/tags/v1.0.0","Hash":"05DB99CDA9E5F3B1C2D3E4F5A6B7C8D9E0F1A2B3"}}"#;
        assert_eq!(
            origin_hash(body),
            Ok(Some("05db99cda9e5f3b1c2d3e4f5a6b7c8d9e0f1a2b3".into()))
        );
        let sha256 = format!(
            r#"{{"Version":"v1.0.0","Origin":{{"Hash":"{}"}}}}"#,
            "a".repeat(64)
        );
        assert_eq!(origin_hash(sha256.as_bytes()), Ok(Some("a".repeat(64))));
    }

    #[test]
    fn an_info_without_a_commit_is_untold_and_a_malformed_one_is_an_error() {
        assert_eq!(
            origin_hash(br#"{"Version":"v1.0.0","Time":"2024-03-15T10:11:12Z"}"#),
            Ok(None)
        );
        assert_eq!(
            origin_hash(br#"{"Version":"v1.0.0","Origin":{"VCS":"git"}}"#),
            Ok(None)
        );
        assert_eq!(
            origin_hash(br#"{"Version":"v1.0.0","Origin":{"Hash":""}}"#),
            Ok(None)
        );
        for bad in [
            &br#"{"Origin":{"Hash":"05db99cda9e5"}}"#[..],
            br#"{"Origin":{"Hash":"zz05db99cda9e5f3b1c2d3e4f5a6b7c8d9e0f1a2"}}"#,
            b"<html>not found</html>",
        ] {
            assert!(
                origin_hash(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn resolutions_are_remembered_and_untold_ones_expire() {
        let commits = Commits::default();
        let key = |v: &str| ("r".to_owned(), "corp.example/lib".to_owned(), v.to_owned());
        commits.remember(key("v1.0.0"), &Resolved::Commit("ab".repeat(20)));
        commits.remember(key("v1.1.0"), &Resolved::Untold);
        commits.remember(key("v1.2.0"), &Resolved::NotFound);
        assert_eq!(
            commits.recall(&key("v1.0.0")),
            Some(Resolved::Commit("ab".repeat(20)))
        );
        assert_eq!(commits.recall(&key("v1.1.0")), Some(Resolved::Untold));
        assert_eq!(commits.recall(&key("v1.2.0")), None);
        // An untold answer older than its TTL is asked again.
        let long_ago = Instant::now()
            .checked_sub(UNTOLD_TTL + Duration::from_secs(1))
            .expect("the clock has run for over a minute");
        commits
            .known
            .lock()
            .expect("lock")
            .insert(key("v1.1.0"), Known::Untold(long_ago));
        assert_eq!(commits.recall(&key("v1.1.0")), None);
    }
}
