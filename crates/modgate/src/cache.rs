//! The response cache and the integrity ledger at run time: which requests are cached and for
//! how long, the cache key (which always includes the route, so a private and a public module
//! can never share an entry), and the first-seen hash check of exact-version artifacts.
//!
//! | request | kept |
//! |---|---|
//! | exact-version `.info` / `.mod` / `.zip`, sumdb full tiles | forever (immutable) |
//! | `list`, `@latest`, version-query `.info`, sumdb partial tiles and lookups | `ttl.mutable` (route may override), then served stale for `ttl.stale_if_error` when the upstream fails |
//! | sumdb `latest` | `ttl.sumdb_latest` |
//! | 404 / 410 | `ttl.not_found` |

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use modgate_cache::{DiskCache, ObjectInfo};
use modgate_ledger::{Artifact, Check, Ledger};
use modgate_protocol::{
    escape_version, GoProxyRequest, ModuleRequest, RequestKind, RequestParser, SumdbEndpoint,
    SumdbRequest,
};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;

/// "Forever" for immutable artifacts.
const IMMUTABLE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The cache and ledger of a running gateway.
pub struct CacheRuntime {
    pub storage: &'static DiskCache,
    pub lock: &'static CacheKeyLockImpl,
    pub ledger: Arc<Ledger>,
    /// Artifacts whose upstream bytes were refused: served from cache if held, else 502.
    pub quarantine: Quarantine,
}

impl CacheRuntime {
    /// Opens the disk cache (blocking: scans the directory) and the ledger.
    pub fn open(
        disk: modgate_cache::DiskCacheConfig,
        lock_timeout: Duration,
        ledger_path: &std::path::Path,
    ) -> anyhow::Result<CacheRuntime> {
        let dir = disk.root.clone();
        let storage =
            DiskCache::open(disk).map_err(|e| anyhow::anyhow!("cache {}: {e}", dir.display()))?;
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(lock_timeout));
        let ledger = Ledger::open(ledger_path)
            .map_err(|e| anyhow::anyhow!("ledger {}: {e}", ledger_path.display()))?;
        Ok(CacheRuntime {
            storage,
            lock,
            ledger: Arc::new(ledger),
            quarantine: Quarantine::default(),
        })
    }
}

/// Cache lifetimes by kind (`cache.ttl`), at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// `list`, `@latest` and version-query `.info`.
    pub mutable: Duration,
    /// 404 / 410 answers.
    pub not_found: Duration,
    /// How long past freshness a mutable answer is still served when the upstream fails.
    pub stale_if_error: Duration,
    /// How long past freshness a mutable answer is served while one background refresh runs.
    pub stale_while_revalidate: Duration,
    /// A checksum database's signed `latest` tree.
    pub sumdb_latest: Duration,
}

impl Default for Ttls {
    fn default() -> Self {
        Ttls {
            mutable: Duration::from_secs(60),
            not_found: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(24 * 3600),
            stale_while_revalidate: Duration::from_secs(3600),
            sumdb_latest: Duration::from_secs(30),
        }
    }
}

/// A route's cache settings (`routes[].cache`), at run time: overrides of [`Ttls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// `false`: the route's answers are not cached.
    pub enabled: bool,
    pub mutable: Option<Duration>,
    pub not_found: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache {
            enabled: true,
            mutable: None,
            not_found: None,
            stale_if_error: None,
            stale_while_revalidate: None,
        }
    }
}

/// How one request is cached.
#[derive(Debug, Clone)]
pub struct CachePlan {
    /// `route:<name>` or `sumdb:<name>`: part of the key.
    pub namespace: String,
    /// The canonical upstream path.
    pub path: String,
    /// Fresh time of a 200.
    pub fresh: Duration,
    /// Fresh time of a 404/410.
    pub not_found: Duration,
    /// How long past freshness a 200 may still be served when the upstream fails.
    pub stale_if_error: Duration,
    /// How long past freshness a 200 is served while one background refresh runs (zero for
    /// immutable answers and for answers kept per identity: a background refresh has no
    /// identity to key them by).
    pub stale_while_revalidate: Duration,
}

impl CachePlan {
    /// The text of the cache key (also what `modgate cache purge` matches).
    pub fn primary(&self) -> String {
        format!("{}|{}", self.namespace, self.path)
    }

    pub fn key(&self) -> CacheKey {
        CacheKey::new(self.primary(), "")
    }

    /// Keeps the answer apart per identity (an upstream with `cache_scope: per-identity`):
    /// the identity, hashed, joins the namespace, so purging a module still finds every copy.
    pub fn per_identity(mut self, identity: &str) -> CachePlan {
        self.stale_while_revalidate = Duration::ZERO;
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(identity.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        self.namespace = format!("{}#id={hex}", self.namespace);
        self
    }

    /// Whether this plan is for an artifact that never changes.
    pub fn immutable(&self) -> bool {
        self.fresh >= IMMUTABLE
    }

    /// The plan for a module request on a route.
    pub fn module(
        route: &str,
        req: &ModuleRequest,
        ttl: &Ttls,
        r: &RouteCache,
    ) -> Option<CachePlan> {
        if !r.enabled {
            return None;
        }
        let mutable = r.mutable.unwrap_or(ttl.mutable);
        Some(CachePlan {
            namespace: format!("route:{route}"),
            path: req.upstream_path(),
            fresh: if req.is_immutable() {
                IMMUTABLE
            } else {
                mutable
            },
            not_found: r.not_found.unwrap_or(ttl.not_found),
            stale_if_error: if req.is_immutable() {
                Duration::ZERO
            } else {
                r.stale_if_error.unwrap_or(ttl.stale_if_error)
            },
            stale_while_revalidate: if req.is_immutable() {
                Duration::ZERO
            } else {
                r.stale_while_revalidate
                    .unwrap_or(ttl.stale_while_revalidate)
            },
        })
    }

    /// The plan for a checksum-database request.
    pub fn sumdb(s: &SumdbRequest, ttl: &Ttls) -> Option<CachePlan> {
        let fresh = match &s.endpoint {
            SumdbEndpoint::Supported => return None,
            SumdbEndpoint::Latest => ttl.sumdb_latest,
            SumdbEndpoint::Lookup { .. } => ttl.mutable,
            SumdbEndpoint::Tile { .. } => match s.tile() {
                Some(t) if !t.is_partial() => IMMUTABLE,
                _ => ttl.mutable,
            },
        };
        Some(CachePlan {
            namespace: format!("sumdb:{}", s.name),
            path: s.upstream_path(),
            fresh,
            not_found: ttl.not_found,
            stale_if_error: if fresh >= IMMUTABLE {
                Duration::ZERO
            } else {
                ttl.stale_if_error
            },
            stale_while_revalidate: if fresh >= IMMUTABLE {
                Duration::ZERO
            } else {
                ttl.stale_while_revalidate
            },
        })
    }

    /// Whether and for how long a response is kept: never when [`unshareable`] says it belongs
    /// to one requester, nor when its body is encoded (modgate asks for the identity encoding).
    pub fn cacheable(&self, resp: &ResponseHeader) -> RespCacheable {
        if unshareable(&resp.headers).is_some() {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
        let header = |name| {
            resp.headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(",")
                .to_ascii_lowercase()
        };
        let enc = header(http::header::CONTENT_ENCODING);
        if !enc.is_empty() && enc != "identity" {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
        let fresh = match resp.status.as_u16() {
            200 => self.fresh,
            404 | 410 => self.not_found,
            _ => return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache),
        };
        if fresh.is_zero() {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
        let now = SystemTime::now();
        let sie = if resp.status.as_u16() == 200 {
            u32::try_from(self.stale_if_error.as_secs()).unwrap_or(u32::MAX)
        } else {
            0
        };
        let swr = if resp.status.as_u16() == 200 {
            u32::try_from(self.stale_while_revalidate.as_secs()).unwrap_or(u32::MAX)
        } else {
            0
        };
        RespCacheable::Cacheable(CacheMeta::new(now + fresh, now, swr, sie, resp.clone()))
    }
}

/// Why an upstream answer must not be shared through the cache between requesters (nor pinned
/// in the ledger as an artifact's first-seen bytes); `None`: it may be.
///
/// The GOPROXY protocol has one representation per URL, so an answer that varies on anything
/// but the encoding, sets a cookie, or asks not to be stored or reused without revalidation
/// was made for one requester: an upstream that authorises per identity says so this way.
pub fn unshareable(headers: &http::HeaderMap) -> Option<&'static str> {
    let values = |name: http::header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if headers.contains_key(http::header::SET_COOKIE) {
        return Some("it sets a cookie");
    }
    let vary = values(http::header::VARY);
    if vary
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|f| !f.is_empty() && f != "accept-encoding")
    {
        return Some("it varies on a request header");
    }
    for v in values(http::header::CACHE_CONTROL) {
        for d in v.split(',').map(str::trim) {
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d, None),
            };
            match name {
                "private" | "no-store" | "no-cache" => {
                    return Some("its Cache-Control forbids sharing");
                }
                "max-age" | "s-maxage" if value.is_some_and(|v| v.parse() == Ok(0u64)) => {
                    return Some("its Cache-Control forbids sharing");
                }
                _ => {}
            }
        }
    }
    if values(http::header::PRAGMA)
        .iter()
        .any(|v| v.split(',').any(|d| d.trim() == "no-cache"))
    {
        return Some("its Pragma forbids sharing");
    }
    None
}

/// The ledger artifact of a request, when it is an exact version.
pub fn artifact(req: &ModuleRequest) -> Option<(Artifact, String)> {
    let version = req.version.as_ref()?;
    if !req.is_immutable() {
        return None;
    }
    let a = match req.kind {
        RequestKind::Info => Artifact::Info,
        RequestKind::Mod => Artifact::Mod,
        RequestKind::Zip => Artifact::Zip,
        _ => return None,
    };
    Some((a, version.as_str().to_string()))
}

/// A refused artifact: what was first seen and what the upstream served instead.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub message: String,
}

/// Artifacts whose upstream bytes changed, until an operator accepts the change or the gateway
/// restarts (then the next fetch is checked against the ledger again).
#[derive(Default)]
pub struct Quarantine {
    refused: Mutex<HashMap<(String, String, Artifact), Refusal>>,
}

impl Quarantine {
    pub fn get(&self, module: &str, version: &str, a: Artifact) -> Option<Refusal> {
        self.refused
            .lock()
            .ok()?
            .get(&(module.to_string(), version.to_string(), a))
            .cloned()
    }

    /// Forgets every refusal; returns how many there were.
    pub fn clear(&self) -> usize {
        self.refused
            .lock()
            .map(|mut m| {
                let n = m.len();
                m.clear();
                n
            })
            .unwrap_or(0)
    }

    pub fn insert(&self, module: &str, version: &str, a: Artifact, r: Refusal) {
        if let Ok(mut m) = self.refused.lock() {
            m.insert((module.to_string(), version.to_string(), a), r);
        }
    }
}

/// The one-line reason for refusing changed bytes, ending with the `modgate ledger accept`
/// command that would pin them. `observed` is `sha256:<hex> (<n> bytes)` once the body was
/// hashed, or only `<n> bytes` when the header's length already differed: then the message says
/// how to get the sha256 the command needs.
pub fn mismatch_message(
    module: &str,
    version: &str,
    a: Artifact,
    upstream: &str,
    recorded_sha256: &str,
    recorded_size: u64,
    observed: &str,
) -> String {
    let accept = |sha256: &str, size: &str| {
        format!(
            "modgate ledger accept {module}@{version} {a} --sha256 {sha256} --size {size} \
             --reason '...'"
        )
    };
    let size_only = observed
        .strip_suffix(" bytes")
        .filter(|n| n.parse::<u64>().is_ok());
    let hashed = observed
        .strip_prefix("sha256:")
        .and_then(|rest| rest.split_once(" ("))
        .and_then(|(sha, rest)| Some((sha, rest.strip_suffix(" bytes)")?)));
    let how = match (size_only, hashed) {
        (Some(size), _) => {
            let path = format!(
                "{}/@v/{}.{a}",
                modgate_protocol::escape_path(module).unwrap_or_else(|_| module.to_string()),
                escape_version(version).unwrap_or_else(|_| version.to_string())
            );
            format!(
                "to accept it, get its sha256 from the upstream: `curl -sS <URL of upstream \
                 {upstream}>/{path} | sha256sum`, then `{}`",
                accept("<that sha256>", size)
            )
        }
        (None, Some((sha256, size))) => format!("accept it with `{}`", accept(sha256, size)),
        (None, None) => "accept it with `modgate ledger accept`".to_string(),
    };
    format!(
        "{module}@{version} (.{a}) changed upstream: first seen sha256:{recorded_sha256} \
         ({recorded_size} bytes), upstream {upstream} now serves {observed}; refused \
         (a re-tagged or tampered version; {how})"
    )
}

/// Hashes an artifact as it streams from the upstream and checks it against the ledger at the
/// end.
pub struct IntegrityCheck {
    pub module: String,
    pub version: String,
    pub artifact: Artifact,
    hasher: modgate_ledger::Sha256Hasher,
    /// Kept for the `h1:` hash of `.mod` and of zips up to [`H1_ZIP_LIMIT`].
    buffer: Option<Vec<u8>>,
    budget: H1Reservation,
    /// Record first-seen bytes (false: only compare with a record).
    pin: bool,
}

/// Zips up to this size also get their `h1:` directory hash recorded (the whole zip has to
/// be held to read its central directory); larger ones are pinned by SHA-256 only.
pub const H1_ZIP_LIMIT: usize = 64 << 20;

/// Memory all artifacts being held for their `h1:` may use together; past it, an artifact is
/// pinned by SHA-256 (and size) only.
pub const H1_BUDGET: usize = 256 << 20;

static H1_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// Bytes of [`H1_BUDGET`] held by one artifact, returned when it is dropped.
#[derive(Default)]
struct H1Reservation(usize);

impl H1Reservation {
    /// Takes `n` more bytes of the budget, if there is room.
    fn grow(&mut self, n: usize) -> bool {
        let mut current = H1_IN_USE.load(Ordering::Relaxed);
        loop {
            if current + n > H1_BUDGET {
                return false;
            }
            match H1_IN_USE.compare_exchange_weak(
                current,
                current + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.0 += n;
                    return true;
                }
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for H1Reservation {
    fn drop(&mut self) {
        H1_IN_USE.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// Why an artifact from an upstream was not accepted.
#[derive(Debug)]
pub enum IntegrityFailure {
    /// Its bytes differ from the first-seen ones: refused, and refused again until accepted.
    Changed(String),
    /// Not a valid module zip.
    Invalid(String),
    /// The ledger could not be read or written (disk full, locked): not checked, so not served.
    Ledger(String),
}

impl IntegrityFailure {
    pub fn message(&self) -> &str {
        match self {
            IntegrityFailure::Changed(m)
            | IntegrityFailure::Invalid(m)
            | IntegrityFailure::Ledger(m) => m,
        }
    }
}

impl IntegrityCheck {
    /// `length` is the upstream's `Content-Length`: a body announced larger than
    /// [`H1_ZIP_LIMIT`] is never buffered.
    pub fn new(
        module: &str,
        version: &str,
        artifact: Artifact,
        length: Option<u64>,
    ) -> IntegrityCheck {
        let small = length.is_none_or(|l| l <= H1_ZIP_LIMIT as u64);
        IntegrityCheck {
            module: module.to_string(),
            version: version.to_string(),
            artifact,
            hasher: modgate_ledger::Sha256Hasher::new(),
            buffer: (artifact.has_h1() && small).then(Vec::new),
            budget: H1Reservation::default(),
            pin: true,
        }
    }

    /// Compares with what the ledger holds but records nothing when nothing is held: for an
    /// answer that is not the one shared representation ([`unshareable`]).
    pub fn without_pinning(mut self) -> IntegrityCheck {
        self.pin = false;
        self
    }

    /// Whether first-seen bytes are recorded (false: only compared with a record).
    #[cfg(test)]
    pub fn pins(&self) -> bool {
        self.pin
    }

    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        if let Some(b) = &mut self.buffer {
            if b.len() + data.len() > H1_ZIP_LIMIT || !self.budget.grow(data.len()) {
                self.buffer = None;
            } else {
                b.extend_from_slice(data);
            }
        }
    }

    /// Records or compares the finished artifact.
    /// `Ok(None)`: not pinned and nothing was recorded to compare with.
    pub fn finish(
        self,
        ledger: &Ledger,
        upstream: &str,
    ) -> Result<Option<Check>, IntegrityFailure> {
        let _budget = self.budget;
        let size = self.hasher.bytes_hashed();
        let sha = self.hasher.finish();
        let h1 = match (&self.buffer, self.artifact) {
            (Some(b), Artifact::Mod) => Some(modgate_ledger::mod_h1(b)),
            (Some(b), Artifact::Zip) => match modgate_ledger::zip_h1(b) {
                Ok(h) => Some(h),
                Err(e) => {
                    return Err(IntegrityFailure::Invalid(format!(
                        "{}@{} (.zip) from upstream {upstream} is not a valid module zip: {e}",
                        self.module, self.version
                    )))
                }
            },
            _ => None,
        };
        let unavailable = |e: modgate_ledger::LedgerError| {
            IntegrityFailure::Ledger(format!(
                "{}@{}: the integrity ledger could not be consulted: {e}",
                self.module, self.version
            ))
        };
        let check = if self.pin {
            Some(
                ledger
                    .observe(
                        &self.module,
                        &self.version,
                        self.artifact,
                        &sha,
                        h1.as_deref(),
                        size,
                        upstream,
                    )
                    .map_err(unavailable)?,
            )
        } else {
            // Compared with what is recorded, never recorded itself.
            ledger
                .get(&self.module, &self.version, self.artifact)
                .map_err(unavailable)?
                .map(|recorded| {
                    if recorded.sha256 == sha && recorded.size == size {
                        Check::Match(recorded)
                    } else {
                        Check::Mismatch {
                            recorded,
                            observed_sha256: sha.clone(),
                            observed_h1: h1.clone(),
                        }
                    }
                })
        };
        match &check {
            Some(Check::Mismatch { recorded, .. }) => {
                Err(IntegrityFailure::Changed(mismatch_message(
                    &self.module,
                    &self.version,
                    self.artifact,
                    upstream,
                    &recorded.sha256,
                    recorded.size,
                    &format!("sha256:{sha} ({size} bytes)"),
                )))
            }
            _ => Ok(check),
        }
    }
}

/// Splits `module[@version]`, checking both.
pub fn target(s: &str) -> anyhow::Result<(String, Option<String>)> {
    let (m, v) = match s.split_once('@') {
        Some((m, v)) => (m, Some(v.to_string())),
        None => (s, None),
    };
    modgate_protocol::check_path(m).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(v) = &v {
        escape_version(v).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok((m.to_string(), v))
}

/// The module request a cached object answers, for objects of a route (not of a checksum
/// database): the key's path parsed by the same parser the proxy uses.
pub fn cached_request(o: &ObjectInfo) -> Option<ModuleRequest> {
    let (ns, path) = o.primary_key.split_once('|')?;
    if !ns.starts_with("route:") {
        return None;
    }
    match RequestParser::new("").ok()?.parse(path) {
        Ok(GoProxyRequest::Module(req)) => Some(req),
        _ => None,
    }
}

/// Removes a module's cached answers (one version, or all of them with `list` and
/// `@latest`) on every route. Blocking.
pub fn purge_module(
    cache: &DiskCache,
    module: &str,
    version: Option<&str>,
) -> anyhow::Result<modgate_cache::PurgeReport> {
    Ok(cache.purge_where(|o| {
        cached_request(o).is_some_and(|req| {
            req.module == module
                && version.is_none_or(|v| req.version.as_ref().is_some_and(|rv| rv.as_str() == v))
        })
    })?)
}

#[cfg(test)]
mod tests {
    use super::unshareable;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn what_is_never_shared() {
        let never: &[&[(&str, &str)]] = &[
            &[("Set-Cookie", "a=b")],
            &[("Vary", "Accept")],
            &[("Vary", "Accept-Encoding, X-Modgate-Identity")],
            &[("vary", "*")],
            &[("Cache-Control", "no-cache")],
            &[("Cache-Control", "public, no-cache=\"Set-Cookie\"")],
            &[("Cache-Control", "max-age=0")],
            &[("Cache-Control", "public, s-maxage=0")],
            &[("Cache-Control", "PRIVATE")],
            &[("Cache-Control", "no-store")],
            &[
                ("Cache-Control", "max-age=60"),
                ("Cache-Control", "private"),
            ],
            &[("Pragma", "no-cache")],
        ];
        for h in never {
            assert!(unshareable(&headers(h)).is_some(), "{h:?} was shareable");
        }
        let shared: &[&[(&str, &str)]] = &[
            &[],
            &[("Vary", "Accept-Encoding")],
            &[("Vary", "accept-encoding,")],
            &[("Cache-Control", "public, max-age=3600")],
            &[("Cache-Control", "max-age=10")],
            &[("Content-Type", "application/json")],
        ];
        for h in shared {
            assert_eq!(unshareable(&headers(h)), None, "{h:?}");
        }
    }
}
