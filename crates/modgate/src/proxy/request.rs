//! The request side: `request_filter` — the unaudited endpoints, identity, admission, the
//! identity's rate limits, and what admission decided taken into the context (answered here,
//! refused, or forwarded).

use bytes::Bytes;
use modgate_protocol::{ModuleRequest, RequestKind, Version};
use modgate_telemetry::AuditDecision;
use pingora::proxy::Session;
use pingora::Result;

use super::admit::{self, Admission, Inbound, Local, Refusal, Scope, Verdict};
use super::chain::Cursor;
use super::lookup::Fetched;
use super::report::{self, Record};
use super::{commits, endpoints, integrity, GatewayProxy, RequestCtx};
use crate::config::VersionMode;
use crate::identity;
use crate::respond;
use crate::server::shutdown;
use crate::upstream::Upstream;

impl GatewayProxy {
    /// `request_filter`: answers the request here (returns true) or admits it to be forwarded.
    pub(super) async fn filter_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // Draining: this connection closes after this answer, and the answer says so.
        session.set_keepalive((!shutdown::draining()).then_some(ctx.listener.keepalive_secs));
        // HTTP/1.1 pipelining (RFC 9112 §9.3.2): a request sent before the previous answer is
        // answered in order on the same connection, instead of being dropped with the
        // connection (HTTP/2 and TLS-less h2c ignore this).
        session.as_downstream_mut().set_pipelining_enabled(true);
        if session.subrequest_ctx.is_some() {
            // Pingora's background refresh of a stale cached answer (stale-while-revalidate),
            // for a request admitted a moment ago: nothing to decide again, nothing a client
            // sees, no audit record (the request it serves has one). It asks the upstream as
            // that request would have: with the identity (and roles) it handed over.
            let scope = Scope::on_listener(&ctx.model, &ctx.listener, self.cache.is_some(), true);
            let inbound = Inbound {
                head: session.req_header(),
                peer: None,
                commit: None,
            };
            let admission = admit::admit(&scope, &inbound, &ctx.identity);
            if self.apply(session, ctx, admission).await? {
                return Ok(true);
            }
            let inherited = ctx
                .cache_plan()
                .and_then(|p| self.refreshes.take(&p.primary()));
            if let Some(h) = &inherited {
                ctx.identity = h.identity.clone();
                if let (Some(d), Some(a)) = (&h.decision, ctx.admission.as_mut()) {
                    a.decision = Some(d.clone());
                }
            }
            let forwards_identity = ctx
                .chain()
                .is_some_and(|c| c.steps.iter().any(|s| s.upstream.forward.is_some()));
            if inherited.is_none() && forwards_identity {
                // Without the identity the upstream would be asked as nobody, and might answer
                // as it answers strangers: the stale answer stays, and the next request
                // starts another refresh.
                respond::text(
                    session,
                    503,
                    "refresh skipped: no identity to ask with",
                    &[],
                )
                .await?;
                return Ok(true);
            }
            return Ok(false);
        }
        // A connection whose client certificate is missing (where required), unreadable or
        // not accepted is refused whatever it asks for, health and metrics included.
        let tls = ctx.listener.tls.as_deref();
        let refused = identity::connection_refusal(session, tls);
        let target = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str());
        if target == "/metrics" {
            ctx.model.recorder.sync_metrics();
            if let Some(c) = &self.cache {
                self.metrics.cache_tiers(&c.storage.stats());
                // Counted by the storage when it refuses a write, before the answer streams:
                // a scrape sees it at once, not only after the next request ends.
                let (no_space, io) = c.storage.write_failures();
                self.metrics.cache_write_failures(no_space, io);
                if let Some(l) = &c.checksum_log {
                    // The size this replica last saw (no database read on a scrape).
                    let stats = l.appender.stats();
                    self.metrics.sumdb(stats.tree_size, &stats);
                }
                if let Some(f) = &c.feed {
                    let status = f.status();
                    self.metrics.module_index(
                        status.progress.map(|p| p.read_to),
                        status.last_error.is_some(),
                    );
                }
            }
        }
        if let (None, Some((content_type, body))) =
            (&refused, endpoints::unaudited(target, ctx.listener.metrics))
        {
            respond::ok(session, content_type, body).await?;
            return Ok(true);
        }
        ctx.record.enabled = true;
        ctx.record.seen = Some(Box::new(report::Seen {
            client: session
                .client_addr()
                .map_or_else(|| "-".into(), |a| a.to_string()),
            method: session.req_header().method.to_string(),
            path: target.to_string(),
        }));
        ctx.trace = Some(ctx.model.recorder.begin(session.req_header()));
        if let Some(e) = refused {
            let admission = Admission::refused(Refusal::Identity(e));
            return self.apply(session, ctx, admission).await;
        }

        let authenticator = ctx.model.gateway.auth.clone();
        let admission =
            match identity::resolve(session, &ctx.listener.identity, authenticator).await {
                Ok(id) => {
                    ctx.identity = id;
                    let scope =
                        Scope::on_listener(&ctx.model, &ctx.listener, self.cache.is_some(), false);
                    let peer = session
                        .client_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| a.ip());
                    let inbound = Inbound {
                        head: session.req_header(),
                        peer,
                        commit: None,
                    };
                    admit::admit(&scope, &inbound, &ctx.identity)
                }
                Err(failed) => {
                    // The audit record names what was presented (a user name, never a secret).
                    ctx.identity = failed.presented;
                    Admission::refused(Refusal::Identity(failed.error))
                }
            };
        // The identity's rate limits, whatever admission decided (a flood of refused requests
        // is a flood all the same): over a limit, the request is refused with a 429, and its
        // audit record still names what it asked for. Judged before the retraction check and
        // the withholding of `list`/`@latest`, which may ask the upstream: a request over its
        // limit costs the upstream nothing (the commit of a tag and the cooldown too, which may
        // ask for a `.info`).
        let admission = match self.rate_check(session, ctx) {
            Some(over) => Admission {
                verdict: Verdict::Refuse(over),
                ..admission
            },
            None => {
                let admission = self.with_commit(session, ctx, admission).await;
                let admission = self.judge_retraction(ctx, admission).await;
                let admission = self.withhold(ctx, admission).await;
                self.judge_cooldown(ctx, admission).await
            }
        };
        // `audit.fail_mode: closed`: nothing is served while it could not be audited.
        if let Some(why) = ctx.model.recorder.unaudited_refusal() {
            endpoints::error(session, &mut ctx.record, 503, why).await?;
            return Ok(true);
        }
        if self.apply(session, ctx, admission).await? {
            return Ok(true);
        }
        self.serve_hot(session, ctx, false).await
    }

    /// `versions.retractions`: an exact version its module retracts (the `retract` directives
    /// of the module's latest `go.mod`) is refused with the author's rationale (`enforce`), or
    /// let through and audited "would deny" (`report`). Only a request admission lets through
    /// is judged, so a refused request asks nothing upstream.
    async fn judge_retraction(&self, ctx: &RequestCtx, mut admission: Admission) -> Admission {
        let gateway = &ctx.model.gateway;
        let (Some(policy), Some(req), Some(index), Some(decision)) = (
            &gateway.retractions,
            &admission.request,
            admission.route,
            &admission.decision,
        ) else {
            return admission;
        };
        let exact = matches!(
            req.kind,
            RequestKind::Info | RequestKind::Mod | RequestKind::Zip
        );
        let Some(version) = req.version.as_ref().filter(|v| exact && v.is_canonical()) else {
            return admission;
        };
        if !matches!(admission.verdict, admit::Verdict::Forward { .. }) {
            return admission;
        }
        let Some(route) = gateway.routes.routes().get(index) else {
            return admission;
        };
        let mode = crate::config::mode_for(
            policy.mode,
            &policy.routes,
            &policy.roles,
            &route.name,
            &decision.roles,
        );
        if mode == VersionMode::Off {
            return admission;
        }
        let identity = &ctx.identity;
        let roles = &decision.roles[..];
        let headers = |u: &Upstream| match &u.forward {
            Some(f) => identity::forward_headers(f, identity, roles),
            None => Vec::new(),
        };
        let learnt = self
            .retracted
            .of(
                &self.lookup,
                &answer_scope(&route.name, &route.target, identity),
                route.private,
                &route.target,
                &req.module,
                &headers,
            )
            .await;
        let (latest, retractions) = match learnt {
            Ok(Some(r)) => r,
            Ok(None) => return admission,
            Err(why) => {
                log::warn!(
                    "{}: retractions unknown, {}@{} not judged by them: {why}",
                    route.name,
                    req.module,
                    version.as_str()
                );
                return admission;
            }
        };
        let Some(r) = retractions.is_retracted(version.as_str()) else {
            return admission;
        };
        let why = if r.rationale.is_empty() {
            String::from("no rationale given")
        } else {
            r.short_rationale().to_string()
        };
        let reason = format!(
            "{}@{} is retracted by its module (go.mod of {latest}): {why}",
            req.module,
            version.as_str()
        );
        if mode == VersionMode::Enforce {
            admission.verdict = admit::Verdict::Refuse(Refusal::Denied {
                message: format!(
                    "{} may not read {}: {reason}",
                    identity.principal.name,
                    admit::describe(req)
                ),
                anonymous: false,
            });
        }
        admission.retracted = Some((mode, reason));
        admission
    }

    /// `versions.cooldown`: an exact version younger than the window, measured from the
    /// earliest sighting its author cannot back-date ([`crate::cooldown::age`]), is refused with
    /// the time it becomes available (`enforce`) or let through and audited "would deny"
    /// (`report`). A version the gateway has never seen is first asked of the chain (its
    /// `.info`): the answer that names it is its first sighting, and its `Time` (the author's)
    /// may make it younger, never older. Only requests admission lets through are judged.
    /// Public routes' versions are vouched for by the module index when
    /// `versions.cooldown.index` is tailed; private ones (and all, without an index) are dated
    /// by the gateway's own first sighting and `modgate ledger seed`.
    async fn judge_cooldown(&self, ctx: &RequestCtx, mut admission: Admission) -> Admission {
        let gateway = &ctx.model.gateway;
        let (Some((policy, exempt)), Some(req), Some(index), Some(decision)) = (
            &gateway.cooldown,
            &admission.request,
            admission.route,
            &admission.decision,
        ) else {
            return admission;
        };
        let Some(store) = self.cache.as_ref().and_then(|c| c.sightings.clone()) else {
            return admission;
        };
        let exact = matches!(
            req.kind,
            RequestKind::Info | RequestKind::Mod | RequestKind::Zip
        );
        let Some(version) = req.version.as_ref().filter(|v| exact && v.is_canonical()) else {
            return admission;
        };
        if !matches!(admission.verdict, admit::Verdict::Forward { .. })
            || exempt.iter().any(|p| p.matches(&req.module))
        {
            return admission;
        }
        let Some(route) = gateway.routes.routes().get(index) else {
            return admission;
        };
        let roles = &decision.roles[..];
        let mode = crate::config::mode_for(
            policy.mode,
            &policy.routes,
            &policy.roles,
            &route.name,
            roles,
        );
        if mode == VersionMode::Off {
            return admission;
        }
        let now = admit::unix_now();
        let (module, v) = (req.module.clone(), version.as_str().to_string());
        let read = {
            let (store, module, v) = (store.clone(), module.clone(), v.clone());
            tokio::task::spawn_blocking(move || store.get(&module, &v)).await
        };
        let known = match read {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return cooldown_refusal(admission, format!("sightings: {e}")),
            Err(e) => return cooldown_refusal(admission, format!("sightings: {e}")),
        };
        let (sightings, info_time) = if known.first_seen.is_none() && known.seeded.is_none() {
            let identity = &ctx.identity;
            let headers = |u: &Upstream| match &u.forward {
                Some(f) => identity::forward_headers(f, identity, roles),
                None => Vec::new(),
            };
            let info = ModuleRequest {
                module: module.clone(),
                kind: RequestKind::Info,
                version: req.version.clone(),
            };
            let fetched = self
                .lookup
                .get(
                    &route.target,
                    route.private,
                    &info.upstream_path(),
                    &module,
                    &headers,
                    64 << 10,
                )
                .await;
            let body = match fetched {
                Ok(Fetched::Body(b)) => b,
                // The chain does not have it: answered 404 here, never from a cache filled by an
                // identity the cooldown does not judge (an exempt role, a module exempt then).
                Ok(Fetched::NotFound) => {
                    admission.verdict = admit::Verdict::Refuse(Refusal::NotFound(format!(
                        "{module}@{v}: not found upstream (its .info, whose answer dates it \
                         for the cooldown, is missing)"
                    )));
                    return admission;
                }
                Err(why) => {
                    return cooldown_refusal(
                        admission,
                        format!("cannot learn whether {module}@{v} exists to date it: {why}"),
                    )
                }
            };
            let info_time = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|j| j.get("Time")?.as_str().map(str::to_owned))
                .and_then(|t| modgate_vulndb::parse_rfc3339(&t))
                .map(|t| t.unix_seconds);
            let seen = {
                let (store, module, v) = (store.clone(), module.clone(), v.clone());
                tokio::task::spawn_blocking(move || store.see(&module, &[&v], "info", now)).await
            };
            match seen {
                Ok(Ok(mut s)) if !s.is_empty() => (s.remove(0), info_time),
                Ok(Ok(_)) => return cooldown_refusal(admission, "sightings: nothing read".into()),
                Ok(Err(e)) => return cooldown_refusal(admission, format!("sightings: {e}")),
                Err(e) => return cooldown_refusal(admission, format!("sightings: {e}")),
            }
        } else {
            (known, None)
        };
        let window = i64::try_from(policy.window.0.as_secs()).unwrap_or(i64::MAX);
        // Public routes are vouched for by the module index, when it is tailed: a version seen
        // for the first time just now waits briefly for the index to be read past it.
        let feed = self
            .cache
            .as_ref()
            .and_then(|c| c.feed.as_ref())
            .filter(|_| !route.private && policy.index_routes.contains(&route.name));
        let progress = match (feed, sightings.first_seen) {
            // The index is not read past the first sighting yet: ask for a read (at most one
            // per poke interval, however many ask). Only the request that made the sighting
            // waits for it (once); later ones are decided on what is read so far.
            (Some(f), Some(seen)) if f.progress().is_none_or(|p| p.read_to <= seen) => {
                let wait = if seen == now {
                    INDEX_WAIT
                } else {
                    std::time::Duration::ZERO
                };
                f.read_past(seen, wait).await
            }
            (Some(f), _) => f.progress(),
            (None, _) => None,
        };
        let vouch = match feed {
            Some(_) => crate::cooldown::Vouch::Feed(progress.as_ref()),
            None => crate::cooldown::Vouch::GatewayOnly,
        };
        let age = crate::cooldown::age(&sightings, vouch, now, window, info_time);
        if age.is_old() {
            return admission;
        }
        let why = match age {
            crate::cooldown::Age::Old { .. } => return admission,
            crate::cooldown::Age::New { available_at, why } => format!(
                "{module}@{v} is in cooldown until {}: {why}",
                crate::cooldown::show_time(available_at)
            ),
            crate::cooldown::Age::Unknown { why } => {
                format!("{module}@{v} is in cooldown (its age is unknown): {why}")
            }
        };
        if mode == VersionMode::Enforce {
            admission.verdict = admit::Verdict::Refuse(Refusal::Denied {
                message: format!(
                    "{} may not read {}: {why}",
                    identity_name(ctx),
                    admit::describe(req)
                ),
                anonymous: false,
            });
        }
        admission.cooled = Some((mode, why));
        admission
    }

    /// `list` and `@latest` without the versions the identity may not use: those the
    /// vulnerability policy refuses it (for a module the database names) and those in cooldown
    /// (for an identity the cooldown refuses, a module not exempt), answered by the gateway from
    /// the chain's own answer (not the shared cache, which holds every version), so that
    /// `go get m@latest` picks the newest version it may build with. The versions a `list` or
    /// `@latest` answer names are sightings for the cooldown. `@latest` (which `go` asks only
    /// of modules without tagged versions) naming a refused version answers the newest version
    /// of the list that is not refused, or 404 with the reason when none is.
    async fn withhold(&self, ctx: &RequestCtx, mut admission: Admission) -> Admission {
        let gateway = &ctx.model.gateway;
        let (Some(req), Some(index), Some(decision)) =
            (&admission.request, admission.route, &admission.decision)
        else {
            return admission;
        };
        if !matches!(req.kind, RequestKind::List | RequestKind::Latest)
            || !matches!(admission.verdict, admit::Verdict::Forward { .. })
        {
            return admission;
        }
        let Some(route) = gateway.routes.routes().get(index) else {
            return admission;
        };
        let roles = &decision.roles[..];
        let vulns = gateway
            .vulns
            .as_ref()
            .filter(|p| p.may_withhold(&req.module, &route.name, roles));
        // Cooldown withholds too, for identities it refuses (enforce), modules not exempt.
        let cooling = match (
            &gateway.cooldown,
            self.cache.as_ref().and_then(|c| c.sightings.clone()),
        ) {
            (Some((policy, exempt)), Some(store))
                if !exempt.iter().any(|p| p.matches(&req.module))
                    && crate::config::mode_for(
                        policy.mode,
                        &policy.routes,
                        &policy.roles,
                        &route.name,
                        roles,
                    ) == VersionMode::Enforce =>
            {
                Some((policy, store))
            }
            _ => None,
        };
        if vulns.is_none() && cooling.is_none() {
            return admission;
        }
        let identity = &ctx.identity;
        let headers = |u: &Upstream| match &u.forward {
            Some(f) => identity::forward_headers(f, identity, roles),
            None => Vec::new(),
        };
        let now = admit::unix_now();
        let get = |path: String| {
            let headers = &headers;
            let module = req.module.clone();
            async move {
                self.lookup
                    .get(
                        &route.target,
                        route.private,
                        &path,
                        &module,
                        headers,
                        4 << 20,
                    )
                    .await
            }
        };
        let request = |kind: RequestKind, version: Option<&str>| ModuleRequest {
            module: req.module.clone(),
            kind,
            version: version.map(Version::parse),
        };
        let list = match get(request(RequestKind::List, None).upstream_path()).await {
            Ok(Fetched::Body(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Fetched::NotFound) => String::new(),
            Err(why) => {
                admission.verdict = admit::Verdict::Refuse(Refusal::Unlearnt(format!(
                    "cannot list {} to leave out the versions it may not use: {why}",
                    req.module
                )));
                return admission;
            }
        };
        // @latest: the chain's answer too (it may name a version the list lacks).
        let latest = if req.kind == RequestKind::Latest {
            match get(request(RequestKind::Latest, None).upstream_path()).await {
                Ok(Fetched::Body(b)) => Some(b),
                Ok(Fetched::NotFound) => None,
                Err(why) => {
                    admission.verdict = admit::Verdict::Refuse(Refusal::Unlearnt(format!(
                        "cannot ask {}@latest: {why}",
                        req.module
                    )));
                    return admission;
                }
            }
        } else {
            None
        };
        let named = latest.as_deref().and_then(|b| {
            serde_json::from_slice::<serde_json::Value>(b)
                .ok()
                .and_then(|v| v.get("Version")?.as_str().map(str::to_owned))
        });
        let listed: Vec<String> = list
            .lines()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        // The cooldown's verdict on every version named: these answers are their sightings.
        let mut cooled: std::collections::HashMap<String, String> = Default::default();
        if let Some((policy, store)) = &cooling {
            let mut named_versions: Vec<String> = listed
                .iter()
                .filter(|v| Version::parse(v).is_canonical())
                .cloned()
                .collect();
            named_versions.extend(
                named
                    .iter()
                    .filter(|v| Version::parse(v).is_canonical())
                    .cloned(),
            );
            let seen = {
                let (store, module) = (store.clone(), req.module.clone());
                let versions = named_versions.clone();
                tokio::task::spawn_blocking(move || {
                    let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
                    store.see(&module, &refs, "list", now)
                })
                .await
            };
            let sightings = match seen {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return cooldown_refusal(admission, format!("sightings: {e}")),
                Err(e) => return cooldown_refusal(admission, format!("sightings: {e}")),
            };
            let window = i64::try_from(policy.window.0.as_secs()).unwrap_or(i64::MAX);
            let feed = self
                .cache
                .as_ref()
                .and_then(|c| c.feed.as_ref())
                .filter(|_| !route.private && policy.index_routes.contains(&route.name));
            let progress = feed.and_then(|f| f.progress());
            for s in &sightings {
                let vouch = match feed {
                    Some(_) => crate::cooldown::Vouch::Feed(progress.as_ref()),
                    None => crate::cooldown::Vouch::GatewayOnly,
                };
                match crate::cooldown::age(s, vouch, now, window, None) {
                    crate::cooldown::Age::Old { .. } => {}
                    crate::cooldown::Age::New { available_at, .. } => {
                        cooled.insert(
                            s.version.clone(),
                            format!(
                                "cooldown until {}",
                                crate::cooldown::show_time(available_at)
                            ),
                        );
                    }
                    crate::cooldown::Age::Unknown { .. } => {
                        cooled.insert(s.version.clone(), "cooldown: age unknown".into());
                    }
                }
            }
        }
        let refused = |v: &str| -> Option<String> {
            let vuln = vulns.and_then(|p| {
                p.judge(&req.module, v, &route.name, roles, now)
                    .judged
                    .filter(|j| j.mode == VersionMode::Enforce)
            });
            match (vuln, cooled.get(v)) {
                (Some(j), _) => Some(j.ids.join(", ")),
                (None, Some(c)) => Some(c.clone()),
                (None, None) => None,
            }
        };
        let mut kept = Vec::new();
        let mut withheld = Vec::new();
        for v in &listed {
            match refused(v) {
                Some(why) => withheld.push(format!("{v} ({why})")),
                None => kept.push(v.clone()),
            }
        }
        if req.kind == RequestKind::List {
            let mut body = kept.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            admission.verdict = admit::Verdict::Answer(Local::Withheld {
                content_type: "text/plain; charset=utf-8",
                body: Bytes::from(body),
                withheld,
            });
            return admission;
        }
        // @latest: the chain's answer when it may be built with, else the newest kept version.
        if let (Some(body), Some(v)) = (&latest, &named) {
            match refused(v) {
                None => {
                    admission.verdict = admit::Verdict::Answer(Local::Withheld {
                        content_type: "application/json",
                        body: Bytes::from(body.clone()),
                        withheld,
                    });
                    return admission;
                }
                Some(why) => withheld.push(format!("{v} ({why})")),
            }
        }
        let newest = super::retractions::latest_for_retractions(&kept.join("\n"));
        let info = match &newest {
            Some(v) => match get(request(RequestKind::Info, Some(v)).upstream_path()).await {
                Ok(Fetched::Body(b)) => Some(b),
                _ => None,
            },
            None => None,
        };
        admission.verdict = match info {
            Some(body) => admit::Verdict::Answer(Local::Withheld {
                content_type: "application/json",
                body: Bytes::from(body),
                withheld,
            }),
            None => admit::Verdict::Refuse(Refusal::NotFound(format!(
                "{}@latest: no version may be used ({})",
                req.module,
                withheld.join("; ")
            ))),
        };
        admission
    }

    /// A rule limited to `commits` could decide this tag (`commit_needed`): learn its commit
    /// from the upstream, then admit the request again with it.
    async fn with_commit(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        admission: Admission,
    ) -> Admission {
        if !admission.commit_needed {
            return admission;
        }
        match self.commit_of(ctx, &admission).await {
            Ok(Some(commit)) => {
                let scope =
                    Scope::on_listener(&ctx.model, &ctx.listener, self.cache.is_some(), false);
                let inbound = Inbound {
                    head: session.req_header(),
                    peer: session
                        .client_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| a.ip()),
                    commit: Some(&commit),
                };
                admit::admit(&scope, &inbound, &ctx.identity)
            }
            Ok(None) => admission,
            Err(refusal) => Admission {
                verdict: admit::Verdict::Refuse(refusal),
                ..admission
            },
        }
    }

    /// The commit the tag `admission` asks for points at, from its route's chain
    /// ([`commits::Commits::resolve`]); `Ok(None)` when the upstream's `.info` does not say.
    /// Fails closed: a chain without the version's `.info` is a 404 (the request is not
    /// forwarded on a guess), a chain that fails is a 502.
    async fn commit_of(
        &self,
        ctx: &RequestCtx,
        admission: &Admission,
    ) -> Result<Option<String>, Refusal> {
        let (Some(req), Some(index)) = (&admission.request, admission.route) else {
            return Ok(None);
        };
        let Some(route) = ctx.model.gateway.routes.routes().get(index) else {
            return Ok(None);
        };
        let roles = admission
            .decision
            .as_ref()
            .map(|d| &d.roles[..])
            .unwrap_or(&[]);
        let identity = &ctx.identity;
        let headers = |u: &Upstream| match &u.forward {
            Some(f) => identity::forward_headers(f, identity, roles),
            None => Vec::new(),
        };
        let version = req.version.as_ref().map_or("", |v| v.as_str());
        match self
            .commits
            .resolve(
                &self.lookup,
                &answer_scope(&route.name, &route.target, identity),
                route.private,
                &route.target,
                req,
                &headers,
            )
            .await
        {
            Ok(commits::Resolved::Commit(c)) => Ok(Some(c)),
            Ok(commits::Resolved::Untold) => {
                log::debug!(
                    "{}@{version}: the upstream's .info names no commit; rules limited to \
                     commits cannot judge this tag",
                    req.module
                );
                Ok(None)
            }
            Ok(commits::Resolved::NotFound) => Err(Refusal::NotFound(format!(
                "{}@{version}: not found upstream (its .info, which names the commit a rule \
                 limited to commits is checked against, is missing)",
                req.module
            ))),
            Err(why) => Err(Refusal::Unlearnt(format!(
                "cannot learn which commit {}@{version} is, to check the rules limited to \
                 commits: {why}",
                req.module
            ))),
        }
    }

    /// Takes in what admission decided (kept whole in the context); answers it when modgate
    /// answers it itself. Returns whether the request was answered.
    pub(super) async fn apply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        admission: Admission,
    ) -> Result<bool> {
        // Module requests' decisions, by route, effect and rule.
        let module_decision = admission
            .decision
            .as_ref()
            .filter(|_| admission.request.is_some());
        if let Some(d) = module_decision {
            let route = ctx.route_of(admission.route).unwrap_or("-");
            self.metrics
                .access_decided(route, d.effect.as_str(), &d.rule);
        }
        if !admission.principals.is_empty() {
            ctx.identity.principals = admission.principals.clone();
            ctx.identity.matched = admission.matched.clone();
        }
        let admission = ctx.admission.insert(admission);
        match &admission.verdict {
            Verdict::Refuse(r) => {
                refuse(session, &mut ctx.record, &ctx.listener.identity.metrics, r).await?;
                Ok(true)
            }
            Verdict::Answer(Local::GoImport { root, proxy }) => {
                ctx.record.decision = AuditDecision::Allow;
                let page = admit::go_import_page(root, proxy);
                respond::ok(session, "text/html; charset=utf-8", Bytes::from(page)).await?;
                Ok(true)
            }
            // (what was left out is in the audit record, from the admission)
            Verdict::Answer(Local::Withheld {
                content_type, body, ..
            }) => {
                ctx.record.decision = AuditDecision::Allow;
                respond::ok(session, content_type, body.clone()).await?;
                Ok(true)
            }
            Verdict::Answer(Local::VulnDb { rel }) => {
                let file = ctx.model.gateway.vulns.as_ref().and_then(|p| {
                    p.db.file(rel).map(|b| {
                        (
                            modgate_vulndb::content_type(rel),
                            Bytes::from_owner(b.clone()),
                        )
                    })
                });
                match file {
                    Some((content_type, body)) => {
                        ctx.record.decision = AuditDecision::Allow;
                        respond::ok(session, content_type, body).await?;
                    }
                    None => {
                        let r =
                            Refusal::NotFound("the vulnerability database has no such file".into());
                        refuse(session, &mut ctx.record, &ctx.listener.identity.metrics, &r)
                            .await?;
                    }
                }
                Ok(true)
            }
            Verdict::Answer(Local::ChecksumLog { endpoint }) => {
                let endpoint = endpoint.clone();
                super::checksum_log::serve(self, session, ctx, &endpoint).await?;
                Ok(true)
            }
            Verdict::Answer(Local::SumdbSupported) => {
                ctx.record.decision = AuditDecision::Allow;
                respond::ok(session, "text/plain; charset=utf-8", Bytes::new()).await?;
                Ok(true)
            }
            Verdict::Answer(Local::Purge {
                target,
                module,
                version,
            }) => {
                let Some(c) = self.cache.as_deref() else {
                    // (admission refuses a purge where there is no cache)
                    let r = Refusal::NotFound("this gateway has no cache".into());
                    refuse(session, &mut ctx.record, &ctx.listener.identity.metrics, &r).await?;
                    admission.verdict = Verdict::Refuse(r);
                    return Ok(true);
                };
                endpoints::purge(
                    session,
                    &mut ctx.record,
                    c,
                    {
                        // The repositories of the model in force, in the directory the
                        // origin started with (a changed git_dir waits for an upgrade).
                        let config = self.live.current().config.clone();
                        let dir = crate::mirrors::mirrors_dir(self.live.started());
                        move |m: &str| crate::gitorigin::request_mirror_refresh(&config, &dir, m)
                    },
                    target,
                    module,
                    version.as_deref(),
                )
                .await?;
                Ok(true)
            }
            Verdict::Answer(Local::Fetched {
                identity,
                since,
                until,
                format,
            }) => {
                // The shared index through the writer's pool in a cluster, else the file.
                let source = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.fetched.as_ref())
                    .and_then(|w| {
                        let started = self.live.started();
                        match &started.cluster {
                            Some(_) => Some(crate::fetched::Source::Store(w.store().clone())),
                            None => started.fetched_path().map(crate::fetched::Source::File),
                        }
                    });
                let Some(source) = source else {
                    let r = Refusal::NotFound(
                        "this gateway keeps no fetched index (fetched: is not configured)".into(),
                    );
                    refuse(session, &mut ctx.record, &ctx.listener.identity.metrics, &r).await?;
                    admission.verdict = Verdict::Refuse(r);
                    return Ok(true);
                };
                let ask = (
                    identity.clone(),
                    since.clone(),
                    until.clone(),
                    format.clone(),
                );
                endpoints::fetched(session, &mut ctx.record, source, ask).await?;
                Ok(true)
            }
            Verdict::Forward { ledger_key, .. } => {
                ctx.record.decision = AuditDecision::Allow;
                let module = admission.request.as_ref().map_or("", |r| r.module.as_str());
                ctx.guard = integrity::Guard::new(module, ledger_key.clone());
                Ok(false)
            }
            Verdict::Git { host: one, .. } | Verdict::Sumdb { db: one, .. } => {
                ctx.record.decision = AuditDecision::Allow;
                ctx.cursor = Cursor::single(one.clone());
                Ok(false)
            }
        }
    }
}

/// Answers a refusal (and counts an authentication failure on the listener's identity series).
async fn refuse(
    session: &mut Session,
    record: &mut Record,
    counted: &identity::IdentityMetrics,
    r: &Refusal,
) -> Result<()> {
    if let Some(reason) = r.auth_failure() {
        counted.auth_failed(reason);
    }
    endpoints::refuse(session, record, r).await
}

/// What the gateway remembers an answer of `route`'s chain under: the route, and the identity's
/// cache key where the chain answers each identity its own way (it is told the identity, or its
/// answers are cached per identity).
fn answer_scope(
    route: &str,
    chain: &crate::upstream::Chain,
    identity: &identity::RequestIdentity,
) -> String {
    if chain.personal() {
        format!(
            "{route}\u{0}{}",
            identity::cache_identity(&identity.principal)
        )
    } else {
        route.to_owned()
    }
}

/// How long a request waits for the module index to be read past a version first seen now.
const INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The name the client is told it was refused as.
fn identity_name(ctx: &RequestCtx) -> &str {
    &ctx.identity.principal.name
}

/// A cooldown that cannot be decided refuses (502: the gateway failed, not the client): a
/// version whose age is not known is never served on a guess.
fn cooldown_refusal(mut admission: Admission, why: String) -> Admission {
    admission.verdict = admit::Verdict::Refuse(Refusal::Unlearnt(format!(
        "cooldown cannot be decided: {why}"
    )));
    admission
}
