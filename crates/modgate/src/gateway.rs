//! The run-time model built once from `gateway.yaml`: the request parser, the route table with
//! each route's upstream chain, and the upstreams. Shared by every listener and by
//! `modgate explain`, so both decide the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use modgate_policy::{AccessPolicy, Route, RouteTable};
use modgate_protocol::RequestParser;

use crate::config::GatewayConfig;
use crate::reload::AuthState;
use crate::upstream::{Chain, Step, Upstream};

/// Routing and access state shared by all listeners.
pub struct Gateway {
    pub parser: RequestParser,
    pub routes: RouteTable<Chain>,
    pub access: AccessPolicy,
    /// Whether `gateway.yaml` has an `access:` section.
    pub access_configured: bool,
    /// The credential files, reloadable.
    pub auth: Arc<AuthState>,
    /// Checksum databases proxied at `/sumdb/<name>/`, by name.
    pub sumdbs: BTreeMap<String, Arc<Upstream>>,
}

impl Gateway {
    /// Builds the run-time model; the configuration has already been validated.
    pub fn new(config: &GatewayConfig) -> anyhow::Result<Gateway> {
        let parser = RequestParser::new(&config.server.path_prefix)
            .with_context(|| format!("server.path_prefix {:?}", config.server.path_prefix))?;
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, c)| (name.clone(), Arc::new(Upstream::from_config(name, c))))
            .collect();
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in config.routes.iter() {
            let mut steps = Vec::with_capacity(r.chain.len());
            for s in &r.chain {
                let upstream = upstreams.get(&s.upstream).with_context(|| {
                    format!("route {:?}: unknown upstream {:?}", r.name, s.upstream)
                })?;
                anyhow::ensure!(
                    !r.private || upstream.private,
                    "route {:?} is private but upstream {:?} is not",
                    r.name,
                    s.upstream
                );
                steps.push(Step {
                    upstream: upstream.clone(),
                    on: s.on,
                });
            }
            routes.push(Route {
                name: r.name.clone(),
                pattern: r.pattern.clone(),
                private: r.private,
                target: Chain::new(steps, r.cache.runtime()),
            });
        }
        let routes = RouteTable::new(routes).context("routes")?;
        let authenticator = config.auth.load().map_err(anyhow::Error::msg)?;
        let sumdbs = config
            .sumdb
            .iter()
            .map(|(name, c)| (name.0.clone(), Arc::new(Upstream::from_config(&name.0, c))))
            .collect();
        Ok(Gateway {
            parser,
            routes,
            sumdbs,
            access: config.access.policy.clone(),
            access_configured: config.access.configured,
            auth: Arc::new(AuthState {
                current: ArcSwap::from_pointee(authenticator),
            }),
        })
    }

    /// Route table warnings worth printing at start-up and from `modgate check`.
    pub fn warnings(&self) -> Vec<String> {
        let routes = self.routes.routes();
        let mut out = Vec::new();
        if !self.access_configured {
            for r in routes.iter().filter(|r| r.private) {
                out.push(format!(
                    "route {:?} is private and there is no access: section, so nobody may read it \
                     (private routes are denied unless a role allows them)",
                    r.name
                ));
            }
        }
        out.extend(
            self.routes
                .shadowed_routes()
                .into_iter()
                .map(|(shadowed, by)| {
                    format!(
                        "route {:?} can never match: route {:?} ({}) comes first and covers it",
                        routes[shadowed].name, routes[by].name, routes[by].pattern
                    )
                }),
        );
        out
    }
}
