//! Along the chain: the peer of the current step, the upstream's answer judged (next step,
//! 502, or accepted and its integrity check started) and its body checked as it streams.

use bytes::Bytes;
use http::Method;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::chain::{Failure, FailureClass, Outcome};
use super::context::chain_of;
use super::failure::{short_error, FALLTHROUGH};
use super::{GatewayProxy, RequestCtx};

impl GatewayProxy {
    /// Settles the attempt at the cursor's step (counted by upstream and outcome); returns
    /// whether the chain moved on.
    pub(super) fn settle(&self, ctx: &mut RequestCtx, outcome: Outcome) -> bool {
        if let Some(up) = ctx.cursor.current(ctx.chain()) {
            self.metrics.upstream_attempted(&up.name, outcome.label());
        }
        let chain = chain_of(&ctx.model, ctx.route_index());
        ctx.cursor.settle(chain, outcome)
    }

    /// `upstream_peer`: the peer of the current step (steps whose peer cannot be made are settled on the way).
    pub(super) async fn peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let private = ctx.route().is_some_and(|r| r.private);
        loop {
            let Some(upstream) = ctx.upstream() else {
                return Error::e_explain(ErrorType::InternalError, "no upstream for this step");
            };
            if private && !upstream.private {
                // Configuration loading refuses this; never let a private path out anyway.
                return Error::e_explain(
                    ErrorType::InternalError,
                    format!(
                        "refusing to send a private module path to public upstream {}",
                        upstream.name
                    ),
                );
            }
            ctx.cursor.begin(&upstream.name);
            match upstream.peer().await {
                Ok(peer) => return Ok(peer),
                Err(e) => {
                    // (a failure, whatever its type: the peer could not be made)
                    let failed = Failure::new(FailureClass::of(e.etype()), short_error(&e));
                    if !self.settle(ctx, Outcome::Failed(failed)) {
                        return Err(e.into_up());
                    }
                }
            }
        }
    }

    /// `upstream_response_filter`: the upstream's answer judged.
    pub(super) async fn judge_response(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        // An exact version, and git smart HTTP, are accepted only as a 200 (a Git host's
        // redirect would send the client to another host, with its address).
        let outcome = Outcome::of_status(status, ctx.guard.exact() || ctx.git());
        match outcome {
            Outcome::Answered(_) => {
                self.settle(ctx, outcome);
                // HEAD answers carry no bytes: they never feed (or trip) the ledger.
                if status == 200 && session.req_header().method == Method::GET {
                    if let Some(c) = self.cache.as_deref() {
                        let upstream = ctx.cursor.last_upstream().unwrap_or("").to_string();
                        if let Err(message) = ctx
                            .guard
                            .start(c, upstream_response, &upstream, &self.metrics)
                            .await
                        {
                            return Error::e_explain(ErrorType::HTTPStatus(502), message);
                        }
                    }
                }
                Ok(())
            }
            Outcome::NotFound(_) => {
                if self.settle(ctx, outcome) {
                    Err(Error::new(FALLTHROUGH))
                } else {
                    // The last word: pass the upstream's 404/410 through so that
                    // `GOPROXY=modgate,direct` falls through.
                    Ok(())
                }
            }
            _ => {
                if self.settle(ctx, outcome) {
                    Err(Error::new(FALLTHROUGH))
                } else {
                    Error::e_explain(
                        ErrorType::HTTPStatus(502),
                        format!("upstream answered {status}"),
                    )
                }
            }
        }
    }

    /// `upstream_response_body_filter`: the body checked as it streams.
    pub(super) fn check_body(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let upstream = ctx.cursor.last_upstream().unwrap_or("");
        let checked = ctx.guard.body(
            body.as_ref(),
            end_of_stream,
            self.cache.as_deref(),
            upstream,
            &self.metrics,
        );
        match checked {
            Ok(()) => Ok(None),
            // The client is cut off before the last byte and the cache never commits the
            // object.
            Err(message) => Error::e_explain(ErrorType::Custom("modgate: integrity"), message),
        }
    }
}
