//! How one request is cached: the lifetimes by kind (`cache.ttl`, a route's overrides), the
//! cache key (which always includes the route, so a private and a public module can never share
//! an entry), and whether an upstream's answer is kept and for how long.

use std::time::{Duration, SystemTime};

use modgate_protocol::{ModuleRequest, SumdbEndpoint, SumdbRequest};
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;

use super::unshareable;

/// "Forever" for immutable artifacts.
const IMMUTABLE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

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
