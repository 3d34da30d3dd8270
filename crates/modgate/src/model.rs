//! The runtime model every request runs on, and its live replacement. [`Model`] is built from a
//! validated `gateway.yaml` in one place ([`Model::build`]): the gateway (routes, upstreams,
//! chains, access policy, credentials, checksum databases), each listener's request-time
//! settings, cache TTLs and the audit/telemetry recorder. [`Live`] holds the model in force; a
//! request takes it once when it starts and keeps it to its end, and a reload swaps in a
//! complete new one or nothing at all ([`Live::reload`]). What a running process cannot change
//! (listener addresses, listeners added or removed, TLS added to or removed from a listener,
//! threads, the cache's storage, the process files) is named in the reload's answer and left
//! as it is; everything else in the same file still applies.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::HeaderName;
use modgate_identity::{CidrSet, PreparedTls, ReloadableTls};
use serde::Serialize;

use crate::cache::Ttls;
use crate::config::{self, GatewayConfig, ListenerConfig};
use crate::gateway::Gateway;
use crate::identity::IdentitySettings;
use crate::metrics;
use crate::record::Recorder;

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

/// One listener's request-time settings.
pub fn listener_runtime(
    l: &ListenerConfig,
    strip: &[HeaderName],
    tls: Option<Arc<ReloadableTls>>,
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
        },
        tls,
    }
}

impl Model {
    /// Builds the model of a validated configuration. `tls` holds each running TLS listener's
    /// material (already loaded for this configuration); `recorder` makes the audit/telemetry
    /// recorder to use, called only once everything else has loaded: a configuration refused
    /// for any other reason opens (creates) no audit file.
    pub fn build(
        config: Arc<GatewayConfig>,
        generation: u64,
        tls: &BTreeMap<String, Arc<ReloadableTls>>,
        recorder: impl FnOnce() -> anyhow::Result<Arc<Recorder>>,
    ) -> anyhow::Result<Model> {
        let gateway = Arc::new(Gateway::new(&config)?);
        let recorder = recorder()?;
        let strip = identity_header_names(&config);
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let runtime = listener_runtime(l, &strip, tls.get(&l.name.0).cloned());
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
        metrics::prime(&model);
        Ok(model)
    }
}

/// What a reload did, as `modgate reload` prints it and the status file records it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// The process that reports.
    pub pid: u32,
    /// Counts every reload attempt of this process (applied or refused).
    pub attempt: u64,
    /// The model generation in force after the attempt.
    pub generation: u64,
    pub applied: bool,
    /// Why the configuration was refused (the same `file:line:col` message `check` prints).
    pub error: Option<String>,
    /// What changed and is now in force.
    pub changes: Vec<String>,
    /// What changed but needs `modgate run --upgrade`.
    pub needs_upgrade: Vec<String>,
}

fn debug_eq<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Named entries added, removed and changed between two maps.
fn diff_named<T: Debug>(
    what: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    out: &mut Vec<String>,
) {
    for (name, n) in new {
        match old.get(name) {
            None => out.push(format!("{what} {name:?} added")),
            Some(o) if !debug_eq(o, n) => out.push(format!("{what} {name:?} changed")),
            _ => {}
        }
    }
    for name in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{what} {name:?} removed"));
    }
}

/// Compares two configurations: (changes a reload applies, changes that need an upgrade).
pub fn diff(old: &GatewayConfig, new: &GatewayConfig) -> (Vec<String>, Vec<String>) {
    let mut live = Vec::new();
    let mut upgrade = Vec::new();
    let by_name = |c: &GatewayConfig| -> BTreeMap<String, String> {
        c.routes
            .iter()
            .map(|r| (r.name.clone(), format!("{r:?}")))
            .collect()
    };
    let (old_routes, new_routes) = (by_name(old), by_name(new));
    diff_named("route", &old_routes, &new_routes, &mut live);
    let order = |c: &GatewayConfig| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    if old_routes.keys().eq(new_routes.keys()) && order(old) != order(new) {
        live.push("routes reordered".to_string());
    }
    diff_named("upstream", &old.upstreams, &new.upstreams, &mut live);
    let sumdbs = |c: &GatewayConfig| -> BTreeMap<String, String> {
        c.sumdb
            .iter()
            .map(|(k, v)| (k.0.clone(), format!("{v:?}")))
            .collect()
    };
    diff_named("sumdb", &sumdbs(old), &sumdbs(new), &mut live);
    let roles = |c: &GatewayConfig| -> BTreeMap<String, String> {
        c.access
            .policy
            .roles()
            .iter()
            .map(|r| (r.name.clone(), format!("{r:?}")))
            .collect()
    };
    let (old_roles, new_roles) = (roles(old), roles(new));
    diff_named("role", &old_roles, &new_roles, &mut live);
    if old_roles == new_roles && !debug_eq(&old.access, &new.access) {
        live.push("access policy changed".to_string());
    }
    if !debug_eq(&old.auth, &new.auth) {
        live.push("auth settings changed".to_string());
    }
    if !debug_eq(&old.audit, &new.audit) {
        live.push("audit settings changed".to_string());
    }
    if !debug_eq(&old.telemetry, &new.telemetry) {
        live.push("telemetry settings changed".to_string());
    }
    if old.log != new.log {
        live.push("log settings changed".to_string());
    }
    match (&old.cache, &new.cache) {
        (Some(o), Some(n)) => {
            if !debug_eq(&o.ttl, &n.ttl) {
                live.push("cache TTLs changed".to_string());
            }
            let storage = |c: &config::CacheConfig| {
                format!(
                    "{:?}",
                    (
                        &c.dir,
                        c.max_size,
                        c.max_object_size,
                        c.memory,
                        c.memory_object_max,
                        &c.lock_timeout,
                        c.ledger_path(),
                        c.fsync
                    )
                )
            };
            if storage(o) != storage(n) {
                upgrade.push(
                    "cache: storage settings (dir, sizes, lock, ledger, fsync) changed".to_string(),
                );
            }
        }
        (None, None) => {}
        _ => upgrade.push("cache: added or removed".to_string()),
    }
    if old.server.path_prefix != new.server.path_prefix {
        live.push("server.path_prefix changed".to_string());
    }
    let process = |s: &config::ServerSettings| {
        format!(
            "{:?}",
            (
                s.threads,
                s.work_stealing,
                &s.grace_period,
                &s.shutdown_timeout,
                &s.pid_file,
                &s.upgrade_sock,
                s.upstream_pool_size,
                s.max_blocking_threads,
                s.git_dir.as_ref().map(|p| &p.0),
                s.git_config.as_ref().map(|p| &p.0),
                (&s.git_not_found_ttl, &s.git_miss_refresh),
            )
        )
    };
    if process(&old.server) != process(&new.server) {
        upgrade.push(
            "server: process settings (threads, work_stealing, pid_file, upgrade_sock, \
             grace_period, shutdown_timeout, upstream_pool_size, max_blocking_threads, git_dir, \
             git_config, git_not_found_ttl, git_miss_refresh) changed"
                .to_string(),
        );
    }
    if old.server.public_url != new.server.public_url {
        live.push("server.public_url changed".to_string());
    }
    fn listeners(c: &GatewayConfig) -> BTreeMap<String, &ListenerConfig> {
        c.listeners.iter().map(|l| (l.name.0.clone(), l)).collect()
    }
    let (old_l, new_l) = (listeners(old), listeners(new));
    for (name, n) in &new_l {
        let Some(o) = old_l.get(name) else {
            upgrade.push(format!("listener {name}: added"));
            continue;
        };
        if o.address.0 != n.address.0 {
            upgrade.push(format!(
                "listener {name}: address changed ({} → {})",
                o.address.0, n.address.0
            ));
        }
        if o.tls.is_some() != n.tls.is_some() {
            upgrade.push(format!("listener {name}: TLS turned on or off"));
        }
        let socket = |l: &ListenerConfig| {
            format!(
                "{:?}",
                (
                    l.http2,
                    l.h2_max_concurrent_streams,
                    l.h2_send_buffer.0,
                    &l.h2_idle_timeout,
                    l.keepalive_requests,
                    &l.tcp_keepalive,
                    &l.idle_timeout,
                    &l.header_timeout,
                    &l.handshake_timeout,
                    l.max_connections,
                    l.max_connections_per_source
                )
            )
        };
        if socket(o) != socket(n) {
            upgrade.push(format!(
                "listener {name}: connection settings (http2, h2_*, keepalive_requests, \
                 tcp_keepalive, idle/header timeouts, connection caps) changed"
            ));
        }
        if !debug_eq(&o.tls, &n.tls) && o.tls.is_some() && n.tls.is_some() {
            live.push(format!("listener {name}: TLS settings changed"));
        }
        let request = |l: &ListenerConfig| {
            format!(
                "{:?}",
                (
                    l.require_identity,
                    &l.trusted_proxies,
                    l.trusted_proxies_force,
                    l.debug_headers,
                    &l.forwarded_headers,
                    &l.keepalive_timeout,
                    l.metrics,
                    l.admin
                )
            )
        };
        if request(o) != request(n) {
            live.push(format!("listener {name}: request settings changed"));
        }
    }
    for name in old_l.keys().filter(|k| !new_l.contains_key(*k)) {
        upgrade.push(format!("listener {name}: removed"));
    }
    (live, upgrade)
}

/// The model in force, and how to replace it.
pub struct Live {
    current: ArcSwap<Model>,
    config_path: PathBuf,
    /// The TLS material of each running TLS listener (the acceptors consult these).
    tls: BTreeMap<String, Arc<ReloadableTls>>,
    /// The configuration this process started with: what its sockets, threads, storage and
    /// process files were made from, and so what "needs an upgrade" is judged against.
    started: Arc<GatewayConfig>,
    /// One reload at a time; counts attempts.
    reloading: Mutex<u64>,
    last: Mutex<ReloadReport>,
}

impl Live {
    pub fn new(
        model: Model,
        config_path: PathBuf,
        tls: BTreeMap<String, Arc<ReloadableTls>>,
    ) -> Live {
        let generation = model.generation;
        publish_generation(generation, true);
        Live {
            started: model.config.clone(),
            current: ArcSwap::from_pointee(model),
            config_path,
            tls,
            reloading: Mutex::new(0),
            last: Mutex::new(ReloadReport {
                pid: std::process::id(),
                generation,
                applied: true,
                ..ReloadReport::default()
            }),
        }
    }

    /// The model in force now.
    /// The configuration this process started with (its sockets, storage and directories).
    pub fn started(&self) -> &GatewayConfig {
        &self.started
    }

    pub fn current(&self) -> Arc<Model> {
        self.current.load_full()
    }

    /// The running listeners' TLS material.
    pub fn tls(&self) -> &BTreeMap<String, Arc<ReloadableTls>> {
        &self.tls
    }

    /// The last reload's report.
    pub fn last_report(&self) -> ReloadReport {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Re-reads `gateway.yaml` and every file it names and swaps in the new model, or refuses
    /// all of it and keeps the model in force.
    pub fn reload(&self) -> ReloadReport {
        let mut attempts = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *attempts += 1;
        let old = self.current();
        let report = match self.try_reload(&old) {
            Ok((model, changes, needs_upgrade)) => {
                let generation = model.generation;
                self.current.store(Arc::new(model));
                ReloadReport {
                    pid: std::process::id(),
                    attempt: *attempts,
                    generation,
                    applied: true,
                    error: None,
                    changes,
                    needs_upgrade,
                }
            }
            Err(e) => ReloadReport {
                pid: std::process::id(),
                attempt: *attempts,
                generation: old.generation,
                applied: false,
                error: Some(format!("{e:#}")),
                ..ReloadReport::default()
            },
        };
        publish_generation(report.generation, report.applied);
        if let Some(m) = metrics::metrics() {
            m.config_reloads
                .with_label_values(&[if report.applied { "applied" } else { "refused" }])
                .inc();
        }
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = report.clone();
        report
    }

    #[allow(clippy::type_complexity)]
    fn try_reload(&self, old: &Model) -> anyhow::Result<(Model, Vec<String>, Vec<String>)> {
        let config = config::load(&self.config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        // What changed since the model in force; what the process cannot apply, since it
        // started (a change that needs an upgrade is named until one is done, and reverting it
        // is no change).
        let (mut changes, _) = diff(&old.config, &config);
        let (_, needs_upgrade) = diff(&self.started, &config);
        // Load every running TLS listener's material for the new settings first: a file that
        // does not load refuses the whole reload before anything changes.
        let mut prepared: Vec<(Arc<ReloadableTls>, PreparedTls)> = Vec::new();
        for l in config.listeners.iter() {
            let (Some(tls), Some(handle)) = (&l.tls, self.tls.get(&l.name.0)) else {
                continue;
            };
            let p = handle
                .prepare(&tls.files)
                .map_err(|e| anyhow::anyhow!("listener {}: tls: {e}", l.name.0))?;
            prepared.push((handle.clone(), p));
        }
        // The running git origin's mirrors (`git_dir` changes need an upgrade) must still be a
        // directory of ours alone: a reload refuses to go on over one someone else took.
        crate::gitorigin::verify_mirrors_dir(&crate::gitorigin::mirrors_dir(&self.started))?;
        // The recorder last: a refused reload opens (creates) no new audit file.
        let same_recorder = debug_eq(&old.config.audit, &config.audit)
            && debug_eq(&old.config.telemetry, &config.telemetry);
        let config = Arc::new(config);
        let model = Model::build(config.clone(), old.generation + 1, &self.tls, || {
            if same_recorder {
                old.recorder.audit.reopen();
                Ok(old.recorder.clone())
            } else {
                Ok(Arc::new(Recorder::start(
                    &config.audit,
                    config.telemetry.otel(),
                )?))
            }
        })?;
        for w in model.gateway.warnings() {
            log::warn!("{w}");
        }
        for (handle, p) in prepared {
            let summary = handle.commit(p);
            if summary.server_cert_changed || summary.client_trust_changed {
                changes.push(format!(
                    "TLS material: server certificate {}, client trust {}",
                    if summary.server_cert_changed {
                        "changed"
                    } else {
                        "unchanged"
                    },
                    if summary.client_trust_changed {
                        "changed"
                    } else {
                        "unchanged"
                    }
                ));
            }
        }
        changes.dedup();
        Ok((model, changes, needs_upgrade))
    }
}

fn publish_generation(generation: u64, applied: bool) {
    if let Some(m) = metrics::metrics() {
        m.config_generation.set(generation as i64);
        if applied {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            m.config_last_success.set(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> GatewayConfig {
        config::parse(text, "test.yaml", Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    const BASE: &str = r#"
listeners:
  - { name: public, address: "127.0.0.1:8080" }
upstreams:
  a: { url: "http://127.0.0.1:9001" }
  b: { url: "http://127.0.0.1:9002" }
routes:
  - { name: corp, match: { prefix: corp.example.com }, chain: [a] }
  - { name: all, match: { prefix: "" }, chain: [b] }
"#;

    #[test]
    fn identical_files_change_nothing() {
        let (live, upgrade) = diff(&parse(BASE), &parse(BASE));
        assert!(
            live.is_empty() && upgrade.is_empty(),
            "{live:?} {upgrade:?}"
        );
    }

    #[test]
    fn routes_and_upstreams_are_named() {
        let new = BASE
            .replace("chain: [a] }", "chain: [b] }")
            .replace("  b: { url: \"http://127.0.0.1:9002\" }", "  b: { url: \"http://127.0.0.1:9003\" }")
            .replace(
                "  - { name: all,",
                "  - { name: tools, match: { prefix: golang.org/x }, chain: [b] }\n  - { name: all,",
            );
        let (live, upgrade) = diff(&parse(BASE), &parse(&new));
        assert_eq!(
            live,
            [
                "route \"corp\" changed",
                "route \"tools\" added",
                "upstream \"b\" changed"
            ]
        );
        assert!(upgrade.is_empty());
    }

    #[test]
    fn what_a_running_process_cannot_change_is_named() {
        let new = BASE.replace("127.0.0.1:8080", "127.0.0.1:8081").replace(
            "listeners:\n",
            "listeners:\n  - { name: admin, address: \"127.0.0.1:9090\", metrics: true }\n",
        );
        let (live, upgrade) = diff(&parse(BASE), &parse(&new));
        assert!(live.is_empty(), "{live:?}");
        assert_eq!(
            upgrade,
            [
                "listener admin: added",
                "listener public: address changed (127.0.0.1:8080 → 127.0.0.1:8081)"
            ]
        );
    }

    #[test]
    fn roles_are_named() {
        let with_access = |rule: &str| {
            format!(
                "{BASE}access:\n  default: deny\n  roles:\n    - name: devs\n      members: [ any ]\n      rules:\n        - {{ id: r, {rule}: {{ prefix: corp.example.com }} }}\n"
            )
        };
        let (live, _) = diff(&parse(&with_access("allow")), &parse(&with_access("deny")));
        assert_eq!(live, ["role \"devs\" changed"]);
    }
}
