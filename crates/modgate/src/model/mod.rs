//! The runtime model every request runs on. [`Model`] is built from a validated `gateway.yaml`
//! in one place ([`Model::build`]): the gateway (routes, upstreams, chains, access policy,
//! credentials, checksum databases), each listener's request-time settings, cache TTLs and the
//! audit/telemetry recorder. [`Live`] (`live.rs`) holds the model in force; a request takes it
//! once when it starts and keeps it to its end, and a reload swaps in a complete new one or
//! nothing at all ([`Live::reload`]). What a running process cannot change (listener
//! addresses, listeners added or removed, TLS added to or removed from a listener, threads, the
//! cache's storage, the process files) is named in the reload's answer and left as it is
//! (`diff.rs` decides which); everything else in the same file still applies.

mod diff;
mod live;

pub use live::{Live, ReloadReport};

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;
use modgate_identity::{CidrSet, ReloadableTls};
use modgate_policy::{DEFAULT_RULE, PRIVATE_DEFAULT_RULE};

use crate::cache::Ttls;
use crate::config::{self, GatewayConfig, ListenerConfig};
use crate::gateway::Gateway;
use crate::identity::{IdentityMetrics, IdentitySettings};
use crate::metrics::{self, Metrics};
use crate::record::{RecordMetrics, Recorder};

/// Per-listener settings the proxy needs at request time.
pub struct ListenerRuntime {
    pub name: String,
    pub keepalive_secs: u64,
    pub metrics: bool,
    /// Serves the admin endpoints.
    pub admin: bool,
    /// Adds the `X-Modgate-Cache/Route/Upstream` headers to answers.
    pub debug_headers: bool,
    /// The `Host` values that name this listener (the admin endpoint answers no other).
    pub own_hosts: Vec<String>,
    /// Anonymous requests get a 401.
    pub require_identity: bool,
    pub identity: IdentitySettings,
    /// The listener's TLS material, against which every connection's client certificate is
    /// judged again (resumed sessions, reloads); `None` for plaintext listeners.
    pub tls: Option<Arc<ReloadableTls>>,
}

/// Everything a request is decided and served with.
pub struct Model {
    /// 1 at start-up, one more for every reload applied.
    pub generation: u64,
    pub gateway: Arc<Gateway>,
    /// Request-time settings by listener name.
    pub listeners: BTreeMap<String, Arc<ListenerRuntime>>,
    /// Cache lifetimes by kind (used only when a cache is configured).
    pub ttl: Ttls,
    pub recorder: Arc<Recorder>,
    /// The file this was built from (what the next reload is compared with).
    pub config: Arc<GatewayConfig>,
}

/// Every header name that could carry a client identity: removed from every request.
fn identity_header_names(config: &GatewayConfig) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = config::ForwardNames::default()
        .all()
        .into_iter()
        .cloned()
        .collect();
    for u in config.upstreams.values() {
        if let Some(f) = &u.forward_identity {
            names.extend(f.names.all().into_iter().cloned());
        }
    }
    for l in config.listeners.iter() {
        names.push(l.forwarded_headers.cert.0.clone());
        names.push(l.forwarded_headers.verify.0.clone());
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// One listener's request-time settings; `identity` counts its identities' refusals.
pub fn listener_runtime(
    l: &ListenerConfig,
    strip: &[HeaderName],
    tls: Option<Arc<ReloadableTls>>,
    identity: IdentityMetrics,
) -> ListenerRuntime {
    ListenerRuntime {
        name: l.name.0.clone(),
        keepalive_secs: l.keepalive_timeout.0.as_secs().max(1),
        metrics: l.metrics,
        admin: l.admin,
        debug_headers: l.debug_headers,
        own_hosts: crate::local::allowed_hosts(l.address.0),
        require_identity: l.require_identity,
        identity: IdentitySettings {
            trusted: CidrSet::new(l.trusted_proxies.iter().map(|c| c.0).collect()),
            forwarded: l.forwarded_headers.clone(),
            strip: strip.to_vec(),
            metrics: identity,
        },
        tls,
    }
}

impl Model {
    /// Builds the model of a validated configuration. `tls` holds each running TLS listener's
    /// material (already loaded for this configuration); `recorder` makes the audit/telemetry
    /// recorder to use, called only once everything else has loaded: a configuration refused
    /// for any other reason opens (creates) no audit file; it is handed the recorder's metric
    /// handle. Each concern the model builds gets its handle made from `metrics` (the
    /// process's registry, `None` when metrics are disabled): each listener's identity
    /// resolution its [`IdentityMetrics`], the recorder its [`RecordMetrics`]. `labels` are the
    /// label values of the concerns the model's metric series are primed with
    /// ([`metrics::prime`]).
    pub fn build(
        config: Arc<GatewayConfig>,
        generation: u64,
        tls: &BTreeMap<String, Arc<ReloadableTls>>,
        metrics: Option<&Metrics>,
        labels: &metrics::Labels,
        recorder: impl FnOnce(RecordMetrics) -> anyhow::Result<Arc<Recorder>>,
    ) -> anyhow::Result<Model> {
        let gateway = Arc::new(Gateway::new(&config)?);
        let recorder = recorder(RecordMetrics::new(metrics))?;
        let strip = identity_header_names(&config);
        let identity = IdentityMetrics::new(metrics);
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let tls = tls.get(&l.name.0).cloned();
                let runtime = listener_runtime(l, &strip, tls, identity.clone());
                (l.name.0.clone(), Arc::new(runtime))
            })
            .collect();
        let ttl = config.ttls();
        let model = Model {
            generation,
            gateway,
            listeners,
            ttl,
            recorder,
            config,
        };
        if let Some(m) = metrics {
            metrics::prime(m, &model.named(), labels);
        }
        Ok(model)
    }

    /// What this model names, for the metric series created at 0 ([`metrics::prime`]).
    fn named(&self) -> metrics::Named<'_> {
        let auth = &self.config.auth;
        let access = &self.gateway.access;
        metrics::Named {
            listeners: self
                .listeners
                .iter()
                .map(|(name, l)| {
                    let not_after = l.tls.as_ref().map(|t| t.server_not_after_unix());
                    (name.as_str(), not_after)
                })
                .collect(),
            credential_files: auth.users_file.is_some() || auth.tokens_file.is_some(),
            upstreams: self
                .config
                .upstreams
                .keys()
                .chain(self.gateway.sumdbs.values().map(|u| &u.name))
                .map(String::as_str)
                .collect(),
            routes: self
                .config
                .routes
                .iter()
                .map(|route| {
                    let (effect, rule) = if route.private {
                        (access.default_private(), PRIVATE_DEFAULT_RULE)
                    } else {
                        (access.default_public(), DEFAULT_RULE)
                    };
                    (route.name.as_str(), effect.as_str(), rule)
                })
                .collect(),
            cache: self.config.cache.is_some(),
            vulndb: self
                .gateway
                .vulns
                .as_ref()
                .map(|v| (v.db.modified().unix_seconds, v.db.advisories().len())),
            rate_limits: {
                let limits = &self.config.rate_limits.0;
                if limits.is_empty() {
                    Vec::new()
                } else {
                    let mut names = vec!["default".to_string(), "anonymous".to_string()];
                    names.extend(limits.roles.keys().map(|r| format!("role:{r}")));
                    if !limits.identities.is_empty() {
                        names.push("identity".to_string());
                    }
                    names
                }
            },
        }
    }
}
