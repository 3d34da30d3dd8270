//! Versions their own module retracts (`versions.retractions`): the `retract` directives of the
//! module's latest `go.mod`, read as the go command reads them, learnt from the route's chain
//! before an exact version is answered, and remembered per route and module for
//! [`RETRACTIONS_TTL`].
//!
//! Which `go.mod` is "latest" follows `cmd/go` (`modload.queryLatestVersionIgnoringRetractions`:
//! the query `latest` with every version allowed): the highest release version of the module's
//! `list`, else its highest prerelease (`+incompatible` versions only when there is nothing
//! else), else the version `@latest` names. A module whose retractions cannot be learnt (the
//! chain fails) is not judged, and the log says so: retraction is the author's advice, not an
//! access control, and a cached version must stay servable while an upstream is away; the last
//! retractions learnt are used meanwhile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use modgate_protocol::version::{compare_semver, is_valid_semver, semver_build, semver_prerelease};
use modgate_protocol::{ModuleRequest, RequestKind, Retractions, Version};

use super::lookup::{Fetched, IdentityHeaders, Lookup};
use crate::upstream::Chain;

/// How long a module's retractions are used before they are asked again.
pub const RETRACTIONS_TTL: Duration = Duration::from_secs(600);
/// How many modules' retractions are remembered (emptied when full).
const KNOWN_MAX: usize = 16_384;
/// The largest `list` or `go.mod` read.
const BODY_MAX: usize = 4 << 20;

/// The version whose `go.mod` states the module's retractions, from its `list` (one version per
/// line); `None` when the list has no valid version.
pub fn latest_for_retractions(list: &str) -> Option<String> {
    let versions: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|v| is_valid_semver(v) && matches!(semver_build(v), "" | "+incompatible"))
        .collect();
    let max_of = |pick: &dyn Fn(&str) -> bool| {
        versions
            .iter()
            .copied()
            .filter(|v| pick(v))
            .max_by(|a, b| compare_semver(a, b))
    };
    let compatible = |v: &str| !v.ends_with("+incompatible");
    let release = |v: &str| semver_prerelease(v).is_empty();
    max_of(&|v| compatible(v) && release(v))
        .or_else(|| max_of(&|v| compatible(v)))
        .or_else(|| max_of(&|v| release(v)))
        .or_else(|| max_of(&|_| true))
        .map(str::to_owned)
}

/// What is remembered of a module.
#[derive(Debug, Clone)]
struct Known {
    at: Instant,
    /// The latest version and its retractions; `None`: the module has no versions.
    retractions: Option<(String, Retractions)>,
}

/// The retractions of modules, shared by a listener's requests.
#[derive(Default)]
pub struct Retracted {
    known: Mutex<HashMap<(String, String), Known>>,
}

impl Retracted {
    /// The latest version of `module` and the retractions its `go.mod` states; `Ok(None)` when
    /// the chain has no version of it. Errors say why the chain could not tell (the last
    /// retractions learnt, however old, are returned instead when there are some).
    pub async fn of(
        &self,
        lookup: &Lookup,
        memo: &str,
        private: bool,
        chain: &Chain,
        module: &str,
        headers: IdentityHeaders<'_>,
    ) -> Result<Option<(String, Retractions)>, String> {
        // `memo`: the route, and who the answer is for on a per-identity chain.
        let key = (memo.to_owned(), module.to_owned());
        let stale = match self.known.lock() {
            Ok(known) => match known.get(&key) {
                Some(k) if k.at.elapsed() < RETRACTIONS_TTL => return Ok(k.retractions.clone()),
                Some(k) => Some(k.retractions.clone()),
                None => None,
            },
            Err(_) => None,
        };
        match self.learn(lookup, private, chain, module, headers).await {
            Ok(retractions) => {
                if let Ok(mut known) = self.known.lock() {
                    if known.len() >= KNOWN_MAX {
                        known.clear();
                    }
                    known.insert(
                        key,
                        Known {
                            at: Instant::now(),
                            retractions: retractions.clone(),
                        },
                    );
                }
                Ok(retractions)
            }
            Err(e) => stale.ok_or(e),
        }
    }

    async fn learn(
        &self,
        lookup: &Lookup,
        private: bool,
        chain: &Chain,
        module: &str,
        headers: IdentityHeaders<'_>,
    ) -> Result<Option<(String, Retractions)>, String> {
        let request = |kind: RequestKind, version: Option<&str>| ModuleRequest {
            module: module.to_owned(),
            kind,
            version: version.map(Version::parse),
        };
        let list = request(RequestKind::List, None).upstream_path();
        let latest = match lookup
            .get(chain, private, &list, module, headers, BODY_MAX)
            .await
            .map_err(|e| format!("its list: {e}"))?
        {
            Fetched::Body(b) => latest_for_retractions(&String::from_utf8_lossy(&b)),
            Fetched::NotFound => None,
        };
        let latest = match latest {
            Some(v) => v,
            None => {
                let at_latest = request(RequestKind::Latest, None).upstream_path();
                match lookup
                    .get(chain, private, &at_latest, module, headers, BODY_MAX)
                    .await
                    .map_err(|e| format!("its @latest: {e}"))?
                {
                    Fetched::Body(b) => match version_of_info(&b) {
                        Some(v) => v,
                        None => return Err("its @latest names no version".into()),
                    },
                    Fetched::NotFound => return Ok(None),
                }
            }
        };
        let gomod = request(RequestKind::Mod, Some(&latest)).upstream_path();
        match lookup
            .get(chain, private, &gomod, module, headers, BODY_MAX)
            .await
            .map_err(|e| format!("the go.mod of {latest}: {e}"))?
        {
            Fetched::Body(b) => {
                let text = String::from_utf8_lossy(&b);
                let retractions = Retractions::parse(&text)
                    .map_err(|e| format!("the go.mod of {latest}: {e}"))?;
                Ok(Some((latest, retractions)))
            }
            Fetched::NotFound => Err(format!("the go.mod of {latest} is missing")),
        }
    }
}

/// The `Version` of a `.info` body.
fn version_of_info(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let version = v.get("Version")?.as_str()?;
    is_valid_semver(version).then(|| version.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_is_the_highest_release_else_prerelease_else_incompatible() {
        assert_eq!(
            latest_for_retractions("v1.0.0\nv1.10.0\nv1.9.0\nv2.0.0-rc.1\n").as_deref(),
            Some("v1.10.0")
        );
        assert_eq!(
            latest_for_retractions("v0.1.0-pre\nv0.2.0-alpha\n").as_deref(),
            Some("v0.2.0-alpha")
        );
        assert_eq!(
            latest_for_retractions("v1.0.0\nv3.0.0+incompatible\n").as_deref(),
            Some("v1.0.0")
        );
        assert_eq!(
            latest_for_retractions("v3.0.0+incompatible\nv2.0.0+incompatible\n").as_deref(),
            Some("v3.0.0+incompatible")
        );
        assert_eq!(latest_for_retractions("\nnot-a-version\n"), None);
        assert_eq!(latest_for_retractions(""), None);
    }

    #[test]
    fn an_info_names_its_version() {
        assert_eq!(
            version_of_info(br#"{"Version":"v1.2.3","Time":"2024-01-01T00:00:00Z"}"#).as_deref(),
            Some("v1.2.3")
        );
        assert_eq!(version_of_info(br#"{"Version":"latest"}"#), None);
        assert_eq!(version_of_info(b"nope"), None);
    }
}
