//! The cache phases: when a request is cached and under which key, which answers are stored
//! (and whether the cache's filesystem can hold them), stale answers (while revalidating, or
//! when the upstream failed), and what a miss does before the upstream is asked.

use http::Method;
use pingora::cache::{CacheKey, CachePhase, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::{refresh, GatewayProxy, RequestCtx};
use crate::respond;

impl GatewayProxy {
    /// `request_cache_filter`: the cache on for a planned GET.
    pub(super) fn enable_cache(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if let (Some(c), Some(_)) = (&self.cache, ctx.cache_plan()) {
            // HEAD is answered by the upstream: a cached HEAD would have no body to serve GETs.
            if session.req_header().method == Method::GET {
                session.cache.enable(
                    c.storage,
                    Some(c.storage.eviction_manager()),
                    None,
                    Some(c.lock),
                    None,
                );
                session
                    .cache
                    .set_max_file_size_bytes(c.storage.max_object_bytes());
            }
        }
        Ok(())
    }

    /// `cache_key_callback`: the plan's key.
    pub(super) fn cache_key(&self, _session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        match ctx.cache_plan() {
            Some(plan) => Ok(plan.key()),
            None => Error::e_explain(ErrorType::InternalError, "cache enabled without a plan"),
        }
    }

    /// `response_cache_filter`: whether (and how long) the answer is stored.
    pub(super) fn cacheable(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let Some(plan) = ctx.cache_plan() else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        if session.subrequest_ctx.is_some() && resp.status != http::StatusCode::OK {
            // A background refresh replaces a good answer only with a good answer: a 404 may
            // be how an upstream answers a caller it does not take for the one it knows, and
            // is left for a request of a client to find (the stale answer stays meanwhile).
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        }
        let cacheable = plan.cacheable(resp);
        // An answer the cache's filesystem cannot hold is not stored, and goes to the client
        // from the upstream as an uncached one would (checked by the ledger all the same): a
        // full cache never fails a request. Pingora would give the request up if a write
        // failed once the client is being served from the cache.
        if let (RespCacheable::Cacheable(_), Some(c)) = (&cacheable, self.cache.as_deref()) {
            if let Err(e) = c.storage.check_space(&plan.primary(), content_length(resp)) {
                ctx.not_stored = Some(format!("not stored in the cache: {e}"));
                return Ok(RespCacheable::Uncacheable(NoCacheReason::StorageError));
            }
        }
        Ok(cacheable)
    }

    /// `should_serve_stale`.
    pub(super) fn serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // Only when the upstream failed (never to skip a revalidation), and only mutable
        // answers (list, @latest): an exact version is never stale.
        // A chain step that may fall through (`any-error`) gets its chance first: the next
        // upstream is asked before a stale answer is.
        let Some(plan) = ctx.cache_plan().filter(|p| !p.immutable()) else {
            return false;
        };
        if error.is_none() {
            // Stale-while-revalidate (Pingora has checked the answer's window): the stale answer
            // now, one background refresh for everyone.
            let swr = !plan.stale_while_revalidate.is_zero();
            if swr {
                // Pingora may start the refresh now: it asks the upstream as this request.
                let inherited = refresh::Inherited {
                    identity: ctx.identity.clone(),
                    decision: ctx.decision().cloned(),
                };
                if !self.refreshes.put(&plan.primary(), inherited) {
                    log::debug!("too many refreshes pending: this one goes without an identity");
                }
            }
            if swr && session.req_header().version == http::Version::HTTP_2 {
                // Pingora 0.9.1 builds the refresh from this request's HTTP/1 form, and an
                // `HTTP/2` request line does not parse: the refresh never ran and an HTTP/2
                // client (`go` over https) got the stale answer until the window closed. The
                // request line is what changes; the answer still goes out over HTTP/2, and the
                // access line keeps the client's version.
                ctx.client_version.get_or_insert(http::Version::HTTP_2);
                session.req_header_mut().set_version(http::Version::HTTP_11);
            }
            return swr;
        }
        let serve = !ctx.cursor.has_next(ctx.chain());
        if serve {
            ctx.served_stale = true;
            self.metrics.stale_served();
        }
        serve
    }

    /// `proxy_upstream_filter`: whether the upstream is asked (false: answered here).
    pub(super) async fn before_upstream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // A miss that took the cache lock after another request's write of the object began or
        // ended (its lookup ran before that write was visible, its lock request after Pingora
        // let the lock go, which it does once a write streams): Pingora does not look again, so
        // without this it would fetch the object a second time. Answered from memory instead,
        // after that write ends (Pingora then drops the lock).
        if session.cache.enabled()
            && session.cache.phase() == CachePhase::Miss
            && self.serve_hot(session, ctx, true).await?
        {
            return Ok(false);
        }
        // Not in the cache: changed bytes already refused for this artifact are not fetched
        // again until an operator accepts them.
        let refused = self.cache.as_deref().and_then(|c| ctx.guard.quarantined(c));
        if let Some(message) = refused {
            respond::text(session, 502, &message, &[]).await?;
            ctx.record.reason = Some(message);
            return Ok(false);
        }
        Ok(true)
    }
}

/// The `Content-Length` of an answer, unless `Transfer-Encoding` overrides it.
fn content_length(resp: &ResponseHeader) -> Option<u64> {
    if resp.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    resp.headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_unless_chunked() {
        let mut resp = ResponseHeader::build(200, None).expect("header");
        assert_eq!(content_length(&resp), None);
        resp.insert_header("Content-Length", "1234")
            .expect("header");
        assert_eq!(content_length(&resp), Some(1234));
        resp.insert_header("Transfer-Encoding", "chunked")
            .expect("header");
        assert_eq!(content_length(&resp), None);
    }
}
