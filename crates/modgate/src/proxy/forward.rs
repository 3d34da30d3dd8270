//! Along the chain: the peer of the current step (an exact version's GET through the verifying
//! origin, `verified.rs`), and the upstream's answer judged: next step, 502, or accepted.

use http::Method;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::chain::{Failure, FailureClass, Outcome};
use super::context::chain_of;
use super::failure::{short_error, FALLTHROUGH};
use super::verified::{self, Job, Verdict};
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
        session: &mut Session,
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
            ctx.verify = None;
            match upstream.peer().await {
                Ok(peer) => return self.verifying(session, ctx, &upstream.name, peer),
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

    /// An exact version's GET goes to the verifying origin, which fetches from `real` and
    /// answers only with checked bytes; anything else goes to `real` itself.
    fn verifying(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        upstream: &str,
        real: Box<HttpPeer>,
    ) -> Result<Box<HttpPeer>> {
        let (Some(verifier), Some((module, (artifact, version)))) =
            (self.verifier.as_ref(), ctx.guard.ledger_key())
        else {
            return Ok(real);
        };
        if session.req_header().method != Method::GET {
            return Ok(real);
        }
        let peer = verifier.peer(&real)?;
        // Answers personal to each identity are never shared between replicas.
        let route = ctx
            .route()
            .filter(|r| !r.target.personal())
            .map(|r| r.name.clone());
        ctx.verify = Some(verifier.register(Job {
            peer: real,
            route,
            upstream: upstream.to_string(),
            module: module.to_string(),
            version: version.to_string(),
            artifact,
            arrived: ctx.started,
        }));
        Ok(peer)
    }

    /// `upstream_response_filter`: the upstream's answer judged.
    pub(super) async fn judge_response(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if ctx.verify.take().is_some() {
            match verified::verdict(upstream_response) {
                Verdict::Verified => {}
                // Never from the origin: a 200 it did not mark as checked is not served.
                Verdict::Passed if status == 200 => {
                    return Error::e_explain(
                        ErrorType::HTTPStatus(502),
                        "an exact version's answer did not pass the gateway's check",
                    );
                }
                Verdict::Passed => {}
                Verdict::Refused(reason) => {
                    // The upstream answered; what it sent was refused (and, if its bytes
                    // changed, quarantined and counted by the origin).
                    self.settle(ctx, Outcome::Answered(200));
                    ctx.guard.refuse(reason.clone());
                    return Error::e_explain(ErrorType::HTTPStatus(502), reason);
                }
                Verdict::Unavailable(reason) => {
                    ctx.unavailable = Some(reason.clone());
                    return Error::e_explain(ErrorType::HTTPStatus(503), reason);
                }
                Verdict::Failed { timeout, failure } => {
                    let detail = failure.detail.clone();
                    let outcome = if timeout {
                        Outcome::Timeout(detail.clone())
                    } else {
                        Outcome::Failed(failure)
                    };
                    if self.settle(ctx, outcome) {
                        return Err(Error::new(FALLTHROUGH));
                    }
                    let code = if timeout { 504 } else { 502 };
                    return Error::e_explain(ErrorType::HTTPStatus(code), detail);
                }
            }
        } else if status == 200
            && ctx.guard.exact()
            && self.verifier.is_some()
            && session.req_header().method == Method::GET
        {
            // Never: an exact version's 200 comes checked, through the origin.
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "an exact version's answer did not pass the gateway's check",
            );
        }
        // An exact version, and git smart HTTP, are accepted only as a 200 (a Git host's
        // redirect would send the client to another host, with its address).
        let outcome = Outcome::of_status(status, ctx.guard.exact() || ctx.git());
        match outcome {
            Outcome::Answered(_) => {
                self.settle(ctx, outcome);
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
}
