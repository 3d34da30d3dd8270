//! Hot hits: a plain GET of a fresh memory-tier object answered without Pingora's cache
//! phase (in `request_filter`, and again by a miss holding the cache lock).

use http::Method;
use pingora::cache::NoCacheReason;
use pingora::http::RequestHeader;
use pingora::proxy::{ProxyHttp, Session};
use pingora::Result;

use super::{GatewayProxy, RequestCtx};

impl GatewayProxy {
    /// Answers an admitted, cacheable request from a fresh memory-tier object when the normal
    /// cache path would answer it with the same whole stored response: a plain GET (no range,
    /// no condition: those take Pingora's path). The head is the stored one prepared once
    /// ([`modgate_cache::HotMeta`]) plus its `Age`, then the range filter and `response_filter`
    /// as on any hit.
    /// Returns whether the request was answered.
    ///
    /// `holding_lock`: the request holds the cache write lock as a miss (`proxy_upstream_filter`);
    /// the cache is turned off before anything is written, so the lock is let go at once and
    /// the requests waiting on it look again, however slowly this client reads.
    pub(super) async fn serve_hot(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        holding_lock: bool,
    ) -> Result<bool> {
        let (Some(c), Some(plan)) = (self.cache.as_deref(), ctx.cache_plan()) else {
            return Ok(false);
        };
        if ctx.git() || !hot_eligible(session.req_header()) {
            return Ok(false);
        }
        let key = plan.key();
        let hit = if holding_lock {
            // another request may be writing the object right now (Pingora lets the lock go
            // once a write streams): its result, rather than a second upstream fetch
            c.storage.hot_hit_after_write(&key, HOT_WRITE_WAIT).await
        } else {
            c.storage.hot_hit(&key, std::time::SystemTime::now())
        };
        let Some(hit) = hit else {
            return Ok(false);
        };
        let now = std::time::SystemTime::now();
        if holding_lock && session.cache.enabled() {
            session.cache.disable(NoCacheReason::DeclinedToUpstream);
        }
        ctx.hot = true;
        self.metrics.hot_hit();
        // Over HTTP/2 the head goes out without its header names' case: the copy without it.
        let mut head = hit.head(now, session.as_downstream().is_http2());
        // As Pingora's hit path: the range filter (a memory hit can seek; with no Range header it
        // only adds `Accept-Ranges`), then response_filter.
        self.range_header_filter(session, &mut head, ctx);
        self.response_filter(session, &mut head, ctx).await?;
        // A failed write is the client's (as on Pingora's hit path), never an upstream's.
        session
            .write_response_header(head, false)
            .await
            .map_err(|e| e.into_down())?;
        session
            .write_response_body(Some(hit.body), true)
            .await
            .map_err(|e| e.into_down())?;
        Ok(true)
    }
}

/// How long a miss holding the cache lock waits for another request's write of the same object
/// before fetching it itself.
const HOT_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Request headers that make Pingora's hit path answer something other than the whole stored
/// response (a range, a 304, a 412): such requests are never hot hits.
const NOT_HOT_HEADERS: &[http::HeaderName] = &[
    http::header::RANGE,
    http::header::IF_RANGE,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_MATCH,
    http::header::IF_UNMODIFIED_SINCE,
];

/// Whether a request may be answered as a hot hit: a GET (a HEAD takes the normal path) with
/// none of [`NOT_HOT_HEADERS`].
fn hot_eligible(req: &RequestHeader) -> bool {
    req.method == Method::GET && !NOT_HOT_HEADERS.iter().any(|h| req.headers.contains_key(h))
}
