//! The request's context: its state types (what was admitted, where along the chain, the
//! integrity guard, the cache plan, the record) and what is read off them.

use std::sync::Arc;
use std::time::Instant;

use pingora::proxy::Session;

use super::chain::Cursor;
use super::report::{CacheOutcome, Record};
use modgate_policy::Decision;
use modgate_protocol::ModuleRequest;

use super::admit::{self, Admission};
use super::{integrity, GatewayProxy, RequestCtx};
use crate::cache::CachePlan;
use crate::identity::RequestIdentity;
use crate::model::Model;
use crate::upstream::{Chain, Upstream};

impl GatewayProxy {
    /// `new_ctx`: the context of a new request, on the model in force.
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
            admission: None,
            cursor: Cursor::default(),
            guard: integrity::Guard::default(),
            served_stale: false,
            not_stored: None,
            hot: false,
            client_version: None,
            record: Record::default(),
            trace: None,
            rate: None,
            verify: None,
            unavailable: None,
        }
    }
}

impl RequestCtx {
    /// The index of the matched route in the model's route table.
    pub(super) fn route_index(&self) -> Option<usize> {
        self.admission.as_ref()?.route
    }

    pub(super) fn route(&self) -> Option<&modgate_policy::Route<Chain>> {
        self.route_index()
            .and_then(|i| self.model.gateway.routes.routes().get(i))
    }

    pub(super) fn route_of(&self, index: Option<usize>) -> Option<&str> {
        index
            .and_then(|i| self.model.gateway.routes.routes().get(i))
            .map(|r| r.name.as_str())
    }

    pub(super) fn chain(&self) -> Option<&Chain> {
        chain_of(&self.model, self.route_index())
    }

    /// How this request is cached (None: not cached).
    pub(super) fn cache_plan(&self) -> Option<&CachePlan> {
        self.admission.as_ref()?.cache_plan()
    }

    /// A request with one upstream (checksum database, Git host): the path to ask it for.
    pub(super) fn single_path(&self) -> Option<&str> {
        self.admission.as_ref()?.single_path()
    }

    /// A git smart HTTP request (its body and git headers go to the host).
    pub(super) fn git(&self) -> bool {
        self.admission.as_ref().is_some_and(Admission::is_git)
    }

    /// The access decision, when the policy was asked.
    pub(super) fn decision(&self) -> Option<&Decision> {
        self.admission.as_ref()?.decision.as_ref()
    }

    /// The module request, once the path parsed as one.
    pub(super) fn module_request(&self) -> Option<&ModuleRequest> {
        self.admission.as_ref()?.request.as_ref()
    }

    pub(super) fn upstream(&self) -> Option<Arc<Upstream>> {
        self.cursor.current(self.chain())
    }

    /// How the cache took part; `None` when the request was not cacheable.
    pub(super) fn cache_outcome(&self, session: &Session) -> Option<CacheOutcome> {
        self.cache_plan()?;
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
        if let Some((repo, service)) = self.admission.as_ref().and_then(|a| a.git.as_ref()) {
            return format!("{repo} ({service})");
        }
        match (self.module_request(), &self.cursor.current(None)) {
            (Some(r), _) => admit::describe(r),
            (None, Some(db)) => format!(
                "checksum database {} {}",
                db.name,
                self.single_path().unwrap_or("")
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
