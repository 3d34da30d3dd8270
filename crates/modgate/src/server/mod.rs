//! Builds and runs the Pingora server: one proxy service per configured listener (each with its
//! own TLS, HTTP/2, keepalive, deadline and connection-cap settings), all sharing one live
//! runtime model ([`crate::model::Live`]).
//!
//! Process lifecycle is Pingora's, watched by [`shutdown::Signals`]: SIGTERM drains (exiting
//! as soon as no request is in flight, at the latest after `server.grace_period` and
//! `server.shutdown_timeout`), SIGINT stops at once, and a graceful upgrade is
//! `modgate run --upgrade` followed by SIGQUIT to the old process, which hands its listening
//! sockets over through `server.upgrade_sock` (refused, and the old process keeps serving,
//! when no new process waits there). SIGHUP reloads the whole configuration in place
//! ([`crate::reload`]). Every orderly exit saves the cache's LRU state, flushes the audit log,
//! exports pending spans and removes the pid file.

pub mod shutdown;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use modgate_identity::ReloadableTls;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};

use self::shutdown::{InFlight, Signals};
use pingora::services::listening::Service;
use pingora::services::ServiceHandle;

use crate::build::upstream::tcp_keepalive;
use crate::cache::CacheRuntime;
use crate::config::{self, GatewayConfig, ListenerConfig};
use crate::conn::accept::{AcceptOptions, ListenerService};
use crate::conn::fds::Class;
use crate::conn::{Caps, ConnMetrics, Deadlines, GuardedApp, Limits};
use crate::identity::HandshakeCapture;
use crate::model::{Live, Model};
use crate::proxy::metrics::ProxyMetrics;
use crate::proxy::verified::{Verifier, VerifyingOrigin};
use crate::proxy::GatewayProxy;
use crate::record::Recorder;
use crate::reload::{ReloadMetrics, Reloader};

/// Every label value the request path's concerns produce, handed to the model so each model
/// built creates their series at 0 ([`crate::metrics::prime`]): connection cuts and cap
/// refusals, upstream attempt outcomes, authentication failures, cache outcomes.
pub fn metric_labels() -> crate::metrics::Labels {
    use crate::conn::caps::Over;
    use crate::conn::deadline::Cut;
    crate::metrics::Labels {
        cut_reasons: Cut::labels().into_iter().chain(Over::labels()).collect(),
        attempt_outcomes: crate::proxy::chain::Outcome::labels(),
        auth_failures: crate::proxy::admit::Refusal::auth_failure_labels(),
        cache_outcomes: crate::proxy::report::CacheOutcome::labels(),
    }
}

/// How `modgate run` was asked to start.
pub struct RunOptions {
    pub upgrade: bool,
    /// The file SIGHUP reads again.
    pub config_path: std::path::PathBuf,
}

fn server_conf(config: &GatewayConfig) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads.max(1),
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(s.grace_period.0.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.0.as_secs()),
        upstream_keepalive_pool_size: s.upstream_pool_size,
        max_blocking_threads: Some(s.max_blocking_threads.max(1)),
        work_stealing: s.work_stealing,
        ..ServerConf::default()
    }
}

/// SIGHUP's default action is to end the process, and the reload service only starts listening
/// for it once Pingora runs its services — after the listeners accept. Registering a tokio
/// handler now closes that window: tokio never unregisters a signal handler, so from here on a
/// SIGHUP is queued for the reload service instead of killing the gateway.
fn hold_sighup() {
    let registered = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        });
    if let Err(e) = registered {
        log::warn!("could not register for SIGHUP early: {e}");
    }
}

/// The process's pid file: written before serving and locked while the process runs (the lock
/// is what proves to `modgate reload` that the pid is this gateway's, see
/// [`crate::rundir::running_pid`]), removed on exit unless another process (the new one of a
/// graceful upgrade) has written its own since.
pub struct PidFile(std::path::PathBuf, #[allow(dead_code)] std::fs::File);

impl PidFile {
    pub fn write(path: &str) -> Option<PidFile> {
        if path.is_empty() {
            return None;
        }
        let path = std::path::PathBuf::from(path);
        match crate::rundir::write_locked_pid(&path) {
            Ok(f) => Some(PidFile(path, f)),
            Err(e) => {
                log::warn!("pid file {} not written: {e}", path.display());
                None
            }
        }
    }
}

/// Removes the pid file at `path` if it still names this process.
fn remove_pid_file(path: &std::path::Path) {
    let ours = crate::rundir::read_nofollow(path)
        .map(|t| String::from_utf8_lossy(&t).trim() == std::process::id().to_string())
        .unwrap_or(false);
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        remove_pid_file(&self.0);
    }
}

/// Creates the per-user directory of the pid file / upgrade socket (`0700`) when it is the
/// default one, and refuses one that is a symlink, another user's, or open to others (they
/// could replace the socket, or have `modgate reload` signal a process of their choosing).
pub fn private_parent(file: &std::path::Path, hint: &str) -> anyhow::Result<()> {
    match file.parent() {
        Some(dir) if dir == crate::config::instance_dir() => crate::rundir::ensure(dir, hint),
        _ => Ok(()),
    }
}

/// What to do about an unusable default runtime directory, for `modgate run`.
pub const RUNTIME_HINT: &str = "remove it, or set server.pid_file and server.upgrade_sock";

/// The running process an upgrade takes the listening sockets over from: the one named by the
/// pid file, alive.
fn old_process(pid_file: &str) -> anyhow::Result<i32> {
    let none = |why: String| {
        anyhow::anyhow!(
            "--upgrade: no running modgate to take the listening sockets over from ({why}); \
             start it without --upgrade"
        )
    };
    if pid_file.is_empty() {
        return Err(none("no server.pid_file".into()));
    }
    // Alive and the gateway of this pid file: the holder of its lock, not merely a process
    // with the pid a stale file names.
    crate::rundir::running_pid(std::path::Path::new(pid_file))
        .map_err(|e| none(format!("pid file {pid_file}: {e}")))
}

/// Whether `addr` can be listened on now (std binds with `SO_REUSEADDR`, as Pingora does, so
/// sockets left in TIME_WAIT by a previous run do not count).
pub fn probe_bind(addr: std::net::SocketAddr) -> std::io::Result<()> {
    std::net::TcpListener::bind(addr).map(drop)
}

/// Starts every listener and serves until the process is told to stop, then flushes the
/// audit log and pending spans.
pub fn run(config: GatewayConfig, options: RunOptions) -> anyhow::Result<()> {
    config.log.apply();
    let nofile = crate::conn::fds::init();
    log::info!("open-files limit {nofile}");
    if options.upgrade {
        // Pingora waits for sockets that no process will send, then exits 1 with
        // "Bootstrap failed on error: EAGAIN": say at once that there is nothing to take over.
        old_process(&config.server.pid_file)?;
    } else {
        // Pingora binds inside its service threads, retries for half a minute and then panics
        // them, leaving a process without listeners; find a taken address before anything
        // starts (an upgrade takes the sockets over instead).
        for l in config.listeners.iter() {
            probe_bind(l.address.0)
                .map_err(|e| anyhow::anyhow!("listener {:?}: {}: {e}", l.name.0, l.address.0))?;
        }
    }
    for f in [&config.server.pid_file, &config.server.upgrade_sock] {
        private_parent(std::path::Path::new(f), RUNTIME_HINT)?;
    }
    hold_sighup();
    // The process's registry, taken here once: every concern is handed its own handle made
    // from it (the fetched index's writer below; the model's concerns by `Model::build`, now
    // and at each reload through `Live`; each listener's connections and proxy, the reloader).
    let registry = crate::metrics::metrics();
    let mut tailer = None;
    // The cluster's events (accepts, purges) applied to this replica, while it runs.
    let mut events = None;
    let cache = match &config.cache {
        Some(c) => {
            let ledger_at = config.ledger_at(c, None)?;
            let mut rt = CacheRuntime::open(c.disk(), c.lock_timeout.0, &ledger_at)?;
            rt.fetched = crate::fetched::start(&config, rt.ledger.clone(), registry)?;
            // Opened whenever there is a cache, so a cooldown added by a reload finds it.
            let sightings = c.sightings_path();
            let store = Arc::new(
                modgate_ledger::Sightings::open(&sightings)
                    .map_err(|e| anyhow::anyhow!("sightings {}: {e}", sightings.display()))?,
            );
            rt.sightings = Some(store.clone());
            if let Some(l) = &config.checksum_log {
                let at = config.checksum_log_at(c)?;
                let opened = crate::sumlog::SumLog::open(&l.name, &l.key_file.0, &at)?;
                log::info!(
                    "checksum database {}: {} record(s) in {}; GOSUMDB=\"{}\"",
                    l.name,
                    opened.appender.stats().tree_size,
                    opened.log.describe(),
                    opened.log.verifier_key()
                );
                rt.checksum_log = Some(Arc::new(opened));
            }
            if let Some((t, handle)) = index_tailer(&config, store)? {
                rt.feed = Some(handle);
                tailer = Some(t);
            }
            let stats = rt.storage.stats();
            log::info!(
                "cache {}: {} object(s), {} bytes; {}: {} record(s)",
                c.dir.0.display(),
                stats.objects,
                stats.bytes,
                rt.ledger.describe(),
                rt.ledger.count().unwrap_or(0)
            );
            rt.cluster = ledger_at.link()?;
            if let (Some(cluster), crate::cache::LedgerAt::Postgres { settings, .. }) =
                (&config.cluster, &ledger_at)
            {
                if let Some(objects) = &cluster.objects {
                    let s3 = objects.settings().map_err(|e| anyhow::anyhow!(e))?;
                    let tier = modgate_objstore::ObjectTier::new(&s3)?;
                    log::info!("shared object tier: {}", tier.name());
                    rt.shared = Some(crate::cache::SharedTier {
                        tier,
                        pool: modgate_postgres::Pool::new(settings)?,
                        holder: format!("{}/{}", cluster.replica(), std::process::id()),
                        waiters: Default::default(),
                    });
                }
            }
            let rt = Arc::new(rt);
            if let Some(link) = &rt.cluster {
                events = Some(crate::cache::follow(
                    rt.clone(),
                    link.pool.clone(),
                    crate::cache::state_file(&c.dir.0),
                )?);
            }
            Some(rt)
        }
        None => None,
    };
    // Checked when the configuration was read; loaded again here so a file changed since then
    // is still a clean error and never reaches Pingora's panicking build().
    let mut tls = BTreeMap::new();
    for l in config.listeners.iter() {
        if let Some(t) = &l.tls {
            let material = ReloadableTls::new(&t.files)
                .map_err(|e| anyhow::anyhow!("listener {:?}: tls: {e}", l.name.0))?;
            tls.insert(l.name.0.clone(), material);
        }
    }
    let conf = server_conf(&config);
    let status = crate::reload::status_path(std::path::Path::new(&config.server.pid_file));
    // The mirrors hold private repositories fetched with the gateway's credential: only this
    // user may enter the directory, else the gateway does not start — decided before the
    // model opens (creates) the audit file.
    crate::mirrors::prepare_mirrors_dir(&crate::mirrors::mirrors_dir(&config))?;
    let config = Arc::new(config);
    let labels = metric_labels();
    let model = Model::build(config.clone(), 1, &tls, registry, &labels, |counted| {
        Ok(Arc::new(Recorder::start(
            config.audit.sink(),
            config.audit.fail_mode == config::AuditFailMode::Closed,
            config.telemetry.otel(),
            counted,
        )?))
    })?;
    for w in model.gateway.warnings() {
        log::warn!("{w}");
    }
    let routes = model.gateway.routes.len();
    let live = Arc::new(Live::new(
        model,
        options.config_path.clone(),
        tls,
        registry,
        labels,
    ));
    let inflight = Arc::new(InFlight::default());
    let proxy_metrics = ProxyMetrics::new(registry);
    let opt = Opt {
        upgrade: options.upgrade,
        // Foreground only: Pingora daemonizes by forking inside `run`, after the audit writer,
        // the span exporter and the ledger are running, and their threads would not survive the
        // fork. Run modgate under systemd or another supervisor.
        daemon: false,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let verifying = add_verifying_origin(&mut server, &config, cache.as_ref(), &proxy_metrics)?;
    let verifier = verifying.as_ref().map(|(v, _)| v.clone());
    for listener in config.listeners.iter() {
        let handle = add_listener(
            &mut server,
            live.clone(),
            inflight.clone(),
            cache.clone(),
            verifier.clone(),
            proxy_metrics.clone(),
            listener,
            config.server.threads,
        )
        .with_context(|| format!("listener {:?}", listener.name.0))?;
        // No request before the origin of its exact-version misses is up.
        if let Some((_, origin)) = &verifying {
            handle.add_dependency(origin);
        }
    }
    add_git_origin(
        &mut server,
        live.clone(),
        &config,
        cache.as_ref().and_then(|c| c.sightings.clone()),
    )?;
    let reloader = Reloader {
        live: live.clone(),
        cache: cache.clone(),
        status,
        metrics: ReloadMetrics::new(registry),
    };
    server.add_service(pingora::services::background::background_service(
        "modgate reloader",
        reloader,
    ));
    if let Some(t) = tailer {
        server.add_service(pingora::services::background::background_service(
            "modgate module index",
            t,
        ));
    }
    if let Some(c) = &cache {
        server.add_service(pingora::services::background::background_service(
            "modgate cache state",
            c.storage
                .persist_service(std::time::Duration::from_secs(300)),
        ));
    }
    log::info!(
        "modgate {} serving {} route(s) on {}",
        env!("CARGO_PKG_VERSION"),
        routes,
        config
            .listeners
            .iter()
            .map(|l| format!(
                "{}://{} ({}{})",
                if l.tls.is_some() { "https" } else { "http" },
                l.address.0,
                l.name.0,
                match l.tls.as_ref().map(|t| t.client_auth()) {
                    Some(modgate_identity::ClientAuth::Required) => ", client cert required",
                    Some(modgate_identity::ClientAuth::Optional) => ", client cert optional",
                    _ => "",
                }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pid_file = PidFile::write(&config.server.pid_file);
    let finish: shutdown::Finish = {
        let (live, cache) = (live.clone(), cache.clone());
        let pid_path = pid_file.as_ref().map(|p| p.0.clone());
        let verify_sock = verifying.as_ref().map(|_| config.verify_origin_sock());
        Arc::new(move || {
            if let Some(c) = &cache {
                if let Err(e) = c.storage.save_state_blocking() {
                    log::warn!("disk cache: cannot save LRU state: {e}");
                }
            }
            live.current().recorder.shutdown();
            if let Some(w) = cache.as_ref().and_then(|c| c.fetched.as_ref()) {
                w.shutdown();
            }
            if let Some(p) = &pid_path {
                remove_pid_file(p);
            }
            if let Some(sock) = &verify_sock {
                let _ = std::fs::remove_file(sock);
            }
            log::info!("modgate stopped");
        })
    };
    let signals = Signals {
        inflight,
        grace: config.server.grace_period.0,
        upgrade_sock: config.server.upgrade_sock.clone(),
        finish: finish.clone(),
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    finish();
    if let Some(l) = events {
        l.stop();
    }
    drop(pid_file);
    Ok(())
}

/// The git origin: the GOPROXY server of `kind: git` upstreams, on a private Unix socket
/// (always started, so a reload can add git upstreams).
fn add_git_origin(
    server: &mut Server,
    live: Arc<Live>,
    config: &GatewayConfig,
    sightings: Option<Arc<modgate_ledger::Sightings>>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Made ready (ours alone) in `run` before anything else opened.
    let dir = crate::mirrors::mirrors_dir(config);
    let options = modgate_git::GitOptions {
        global_config: config.server.git_config.as_ref().map(|p| p.0.clone()),
        not_found_ttl: config.server.git_not_found_ttl.0,
        miss_refresh_interval: config.server.git_miss_refresh.0,
        ..modgate_git::GitOptions::default()
    };
    let origin =
        crate::gitorigin::GitOrigin::new(live, modgate_git::Mirrors::new(dir, options), sightings)?;
    let mut service = Service::new("modgate git origin".into(), origin);
    service.add_uds(
        &config.git_origin_sock(),
        Some(std::fs::Permissions::from_mode(0o600)),
    );
    service.threads = Some(1);
    server.add_service(service);
    Ok(())
}

/// The verifying origin (with a cache): every exact-version GET is fetched, checked against the
/// ledger and held by it before the proxy gets a byte (`proxy/verified.rs`). On a private Unix
/// socket, with its own threads: no check ever runs on a listener's event loop.
///
/// Each process has its own socket (`<upgrade_sock>.verify.<pid>`): a graceful upgrade hands
/// listening sockets over by address, and a job is known only to the process that registered
/// it. Sockets left by processes that no longer run are removed here; a process removes its
/// own when it exits.
fn add_verifying_origin(
    server: &mut Server,
    config: &GatewayConfig,
    cache: Option<&Arc<CacheRuntime>>,
    metrics: &ProxyMetrics,
) -> anyhow::Result<Option<(Arc<Verifier>, ServiceHandle)>> {
    use std::os::unix::fs::PermissionsExt;
    let (Some(cache), Some(c)) = (cache, config.cache.as_ref()) else {
        return Ok(None);
    };
    remove_stale_sockets(&config.verify_origin_prefix());
    let sock = config.verify_origin_sock();
    let disk = c.disk();
    let verifier = Verifier::new(
        sock.clone(),
        cache.clone(),
        metrics.clone(),
        c.dir.0.clone(),
        usize::try_from(disk.max_spill_bytes).unwrap_or(usize::MAX),
        disk.max_object_bytes,
    )
    .context("the verifying origin's secret")?;
    let mut service = Service::new(
        "modgate verifying origin".into(),
        VerifyingOrigin(verifier.clone()),
    );
    service.add_uds(&sock, Some(std::fs::Permissions::from_mode(0o600)));
    service.threads = Some(config.server.threads.max(1));
    let handle = server.add_service(service);
    Ok(Some((verifier, handle)))
}

/// Removes `<prefix><pid>` sockets whose process is gone.
fn remove_stale_sockets(prefix: &str) {
    let path = std::path::Path::new(prefix);
    let (Some(dir), Some(stem)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(stem))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn add_listener(
    server: &mut Server,
    live: Arc<Live>,
    inflight: Arc<InFlight>,
    cache: Option<Arc<CacheRuntime>>,
    verifier: Option<Arc<Verifier>>,
    metrics: ProxyMetrics,
    l: &ListenerConfig,
    threads: usize,
) -> anyhow::Result<ServiceHandle> {
    let material = live.tls().get(&l.name.0).cloned();
    let mut app = pingora::proxy::http_proxy(
        &server.configuration,
        GatewayProxy::new(live.clone(), &l.name.0, inflight, cache, metrics, verifier)?,
    );
    let mut options = HttpServerOptions::default();
    options.h2c = l.http2 && l.tls.is_none();
    options.keepalive_request_limit = l.keepalive_requests;
    // Unless configured, an HTTP/2 connection goes no longer without a request than an
    // HTTP/1.1 one can (silent for idle_timeout, then header_timeout to complete its headers).
    // Longer than header_timeout, so that before its first request the guard's header deadline
    // (counted from the preface's first byte) cuts it first, and counts the cut.
    options.h2_idle_timeout = Some(
        l.h2_idle_timeout
            .map(|d| d.0)
            .unwrap_or(l.idle_timeout.0 + l.header_timeout.0),
    );
    app.server_options = Some(options);
    let mut h2 = default_h2_options();
    h2.max_concurrent_streams(l.h2_max_concurrent_streams);
    // h2's default is about 400 KB per stream: with 64 clients on a large zip those queues were
    // most of the gateway's memory (docs/performance.md, Memory)
    h2.max_send_buffer_size(usize::try_from(l.h2_send_buffer.0).unwrap_or(usize::MAX));
    app.h2_options = Some(h2);
    let limits = Limits {
        deadlines: Deadlines {
            idle: l.idle_timeout.0,
            headers: l.header_timeout.0,
        },
        caps: Caps {
            listener: l.max_connections,
            source: l.max_connections_per_source,
        },
    };
    let tls = match (&l.tls, material) {
        (Some(_), Some(material)) => {
            let mut settings = TlsSettings::with_callbacks(Box::new(HandshakeCapture))
                .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
            settings.set_cert_resolver(material.cert_resolver());
            // Always installed: it asks for certificates only while the material in force
            // says so, so a reload can turn client authentication on, off, or to required.
            settings.set_client_cert_verifier(material.client_verifier());
            if l.http2 {
                settings.enable_h2();
            }
            Some(settings)
        }
        _ => None,
    };
    // Operator listeners may use half of the descriptor reserve: `/healthz` and `/metrics`
    // answer there while client listeners are refused for want of descriptors.
    let class = if l.admin || l.metrics {
        Class::Operator
    } else {
        Class::Client
    };
    let service = ListenerService::new(
        format!("modgate listener {}", l.name.0),
        GuardedApp::new(
            app,
            &l.name.0,
            limits,
            ConnMetrics::new(live.metrics(), &l.name.0),
        ),
        AcceptOptions {
            address: l.address.0.to_string(),
            tls,
            keepalive: l.tcp_keepalive.as_ref().map(tcp_keepalive),
            handshake_timeout: l.handshake_timeout.0,
            class,
            threads: threads.max(1),
        },
    );
    Ok(server.add_service(service))
}

/// The module-index tailer of `versions.cooldown.index`, when configured: it reads the index
/// from the start of the cooldown window into the sightings store.
fn index_tailer(
    config: &GatewayConfig,
    store: Arc<modgate_ledger::Sightings>,
) -> anyhow::Result<
    Option<(
        crate::cooldown::feed::Tailer,
        crate::cooldown::feed::FeedHandle,
    )>,
> {
    use crate::cooldown::feed::{system_clock, FeedOptions, Tailer, UpstreamFeed};
    let Some(c) = &config.versions.cooldown else {
        return Ok(None);
    };
    let Some(name) = &c.index else {
        return Ok(None);
    };
    let Some(u) = config.upstreams.get(name) else {
        anyhow::bail!("versions.cooldown.index: no upstream is named {name:?}");
    };
    let upstream = Arc::new(crate::build::upstream::from_config(name, u));
    let mut options = FeedOptions::new(u.url.to_string(), c.window.0);
    if let Some(settle) = c.index_settle {
        options.settle = settle.0;
    }
    Ok(Some(Tailer::new(
        store,
        Arc::new(UpstreamFeed::new(upstream)),
        options,
        system_clock(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_list_is_complete_and_distinct() {
        let labels = metric_labels();
        let mut auth = labels.auth_failures.clone();
        assert!(auth.contains(&"missing") && auth.contains(&"bad-password"));
        let n = auth.len();
        auth.sort_unstable();
        auth.dedup();
        assert_eq!(auth.len(), n, "{auth:?}");
        assert_eq!(auth.len(), 10);
        let mut outcomes = labels.attempt_outcomes.clone();
        outcomes.sort_unstable();
        outcomes.dedup();
        assert_eq!(outcomes.len(), 5);
        let mut cache = labels.cache_outcomes.clone();
        cache.sort_unstable();
        cache.dedup();
        assert_eq!(cache.len(), 14);
        assert_eq!(
            labels.cut_reasons,
            ["idle", "headers", "listener_limit", "source_limit"]
        );
    }
}
