//! The request's context: its state types (what was admitted, where along the chain, the
//! integrity guard, the cache plan, the record) and what is read off them.

use std::sync::Arc;
use std::time::Instant;

use pingora::proxy::Session;

use super::chain::Cursor;
use super::report::{CacheOutcome, Record, Target};
use super::{admit, integrity, GatewayProxy, RequestCtx};
use crate::identity::RequestIdentity;
use crate::model::Model;
use crate::upstream::{Chain, Upstream};

impl GatewayProxy {
    pub(super) fn new_request_ctx(&self) -> RequestCtx {
        let model = self.live.current();
        let listener = model
            .listeners
            .get(&self.initial.name)
            .cloned()
            .unwrap_or_else(|| self.initial.clone());
        RequestCtx {
            _inflight: self.inflight.enter(),
            model,
            listener,
            started: Instant::now(),
            identity: RequestIdentity::default(),
            target: Target::default(),
            cursor: Cursor::default(),
            single_path: None,
            git: false,
            guard: integrity::Guard::default(),
            cache_plan: None,
            served_stale: false,
            not_stored: None,
            hot: false,
            client_version: None,
            record: Record::default(),
            trace: None,
        }
    }
}

impl RequestCtx {
    pub(super) fn route(&self) -> Option<&modgate_policy::Route<Chain>> {
        self.target
            .route
            .and_then(|i| self.model.gateway.routes.routes().get(i))
    }

    pub(super) fn route_of(&self, index: Option<usize>) -> Option<&str> {
        index
            .and_then(|i| self.model.gateway.routes.routes().get(i))
            .map(|r| r.name.as_str())
    }

    pub(super) fn chain(&self) -> Option<&Chain> {
        chain_of(&self.model, self.target.route)
    }

    pub(super) fn upstream(&self) -> Option<Arc<Upstream>> {
        self.cursor.current(self.chain())
    }

    /// How the cache took part; `None` when the request was not cacheable.
    pub(super) fn cache_outcome(&self, session: &Session) -> Option<CacheOutcome> {
        self.cache_plan.as_ref()?;
        if self.hot {
            return Some(CacheOutcome::Hit);
        }
        if self.not_stored.is_some() {
            return Some(CacheOutcome::NotStored);
        }
        Some(CacheOutcome::of(
            session.cache.phase(),
            self.served_stale,
            self.guard.refusal().is_some(),
        ))
    }

    /// What the request was for, in a client-facing failure message.
    pub(super) fn what(&self) -> String {
        if let Some((repo, service)) = &self.target.git {
            return format!("{repo} ({service})");
        }
        match (&self.target.request, &self.cursor.current(None)) {
            (Some(r), _) => admit::describe(r),
            (None, Some(db)) => format!(
                "checksum database {} {}",
                db.name,
                self.single_path.as_deref().unwrap_or("")
            ),
            (None, None) => "request".to_string(),
        }
    }
}
/// The chain of route `index` in `model`.
pub(super) fn chain_of(model: &Model, index: Option<usize>) -> Option<&Chain> {
    index
        .and_then(|i| model.gateway.routes.routes().get(i))
        .map(|r| &r.target)
}
