//! Reloading without a restart. On SIGHUP (sent by `modgate reload`, systemd's `ExecReload=`, or
//! by hand) the whole `gateway.yaml` is read again with every file it names — routes,
//! upstreams, access, credentials, cache TTLs, checksum databases, audit and telemetry
//! settings, each listener's request settings, TLS material and `client_auth` mode — and the
//! new runtime model replaces the old one at once ([`crate::model::Live::reload`]), or nothing
//! changes. The audit file is reopened (for logrotate). Listeners with `tls.watch` are also
//! checked for changed TLS files at that interval (material only, not the rest of the file);
//! which listeners are watched, and how often, follows the configuration in force, so a watch
//! added or removed by a reload takes effect.
//!
//! Each reload's outcome is logged, counted (`modgate_config_reloads_total{result}`), and
//! written beside the pid file (`<pid_file>.reload`, JSON) for `modgate reload` to report.
//! Connections already established are never touched; new handshakes and new requests use the
//! new model, and a request in flight finishes on the model it started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use modgate_identity::ReloadableTls;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::Metrics;
use crate::model::{Live, ReloadReport};

/// The reloader's metric handle: `modgate_reloads_total` (TLS material and credential files, by
/// what and result) and `modgate_tls_cert_not_after_seconds`, made by server start-up. (The
/// configuration's own reloads are counted by [`Live`], which applies them.)
#[derive(Clone, Default)]
pub struct ReloadMetrics(Option<ReloadSeries>);

#[derive(Clone)]
struct ReloadSeries {
    reloads: prometheus::IntCounterVec,
    cert_not_after: prometheus::IntGaugeVec,
}

impl ReloadMetrics {
    pub fn new(metrics: Option<&Metrics>) -> ReloadMetrics {
        ReloadMetrics(metrics.map(|m| ReloadSeries {
            reloads: m.reloads.clone(),
            cert_not_after: m.cert_not_after.clone(),
        }))
    }

    fn count(&self, what: &str, result: &str) {
        if let Some(s) = &self.0 {
            s.reloads.with_label_values(&[what, result]).inc();
        }
    }

    /// The expiry of the server certificate `listener` presents now.
    fn publish_expiry(&self, listener: &str, tls: &ReloadableTls) {
        if let Some(s) = &self.0 {
            s.cert_not_after
                .with_label_values(&[listener])
                .set(tls.server_not_after_unix());
        }
    }
}

/// Where a process reports its reloads: beside its pid file.
pub fn status_path(pid_file: &Path) -> PathBuf {
    let mut p = pid_file.as_os_str().to_owned();
    p.push(".reload");
    PathBuf::from(p)
}

/// Writes the report atomically (a reader never sees half of it).
fn write_status(path: &Path, report: &ReloadReport) {
    let tmp = {
        let mut p = path.as_os_str().to_owned();
        p.push(".tmp");
        PathBuf::from(p)
    };
    // Never through a symlink planted at the temporary name; the rename replaces (never
    // follows) one planted at the report's own name.
    let written = serde_json::to_vec_pretty(report)
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::rundir::write_nofollow(&tmp, &bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        log::warn!("reload status not written to {}: {e}", path.display());
    }
}

/// The background service that reloads on SIGHUP and watches TLS files.
pub struct Reloader {
    pub live: Arc<Live>,
    pub cache: Option<Arc<crate::cache::CacheRuntime>>,
    /// The status file `modgate reload` reads.
    pub status: PathBuf,
    pub metrics: ReloadMetrics,
}

type Stamps = Vec<Option<(SystemTime, u64)>>;

fn stamps(tls: &ReloadableTls) -> Stamps {
    let files = tls.files();
    let mut paths = vec![files.cert.clone(), files.key.clone()];
    paths.extend(files.client_ca.iter().cloned());
    paths.extend(files.crl.iter().cloned());
    paths
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Re-reads one listener's TLS files (the `tls.watch` path).
fn reload_tls(listener: &str, tls: &ReloadableTls, why: &str, metrics: &ReloadMetrics) {
    let result = tls.reload();
    metrics.publish_expiry(listener, tls);
    match result {
        Ok(_) => {
            log::info!("listener {listener}: TLS material reloaded ({why})");
            metrics.count(&format!("tls:{listener}"), "ok");
        }
        Err(e) => {
            log::error!(
                "listener {listener}: new TLS material refused ({why}), previous material stays in force: {e}"
            );
            metrics.count(&format!("tls:{listener}"), "error");
        }
    }
}

/// The running TLS listeners whose files the configuration in force asks to watch
/// (`tls.watch`), with their intervals: read again after every reload, so a watch added or
/// removed by a reload takes effect.
fn watched_listeners(live: &Live) -> Vec<(String, Arc<ReloadableTls>, Duration)> {
    live.current()
        .config
        .listeners
        .iter()
        .filter_map(|l| {
            let every = l.tls.as_ref()?.watch?;
            Some((l.name.0.clone(), live.tls().get(&l.name.0)?.clone(), every))
        })
        .collect()
}

/// How often to look at the watched files: the shortest interval asked for (hourly, doing
/// nothing, when none is).
fn tick_every(watched: &[(String, Arc<ReloadableTls>, Duration)]) -> tokio::time::Interval {
    let every = watched
        .iter()
        .map(|(_, _, d)| *d)
        .min()
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

impl Reloader {
    fn reload_all(&self) {
        log::info!(
            "SIGHUP: reloading {} (TLS material, credential files, routes, access, ...), reopening audit log",
            self.live.config_path().display()
        );
        let report = self.live.reload();
        let model = self.live.current();
        if report.applied {
            model.config.log.apply();
            for (name, tls) in self.live.tls() {
                self.metrics.publish_expiry(name, tls);
                log::info!("listener {name}: TLS material reloaded (SIGHUP)");
                self.metrics.count(&format!("tls:{name}"), "ok");
            }
            let auth = &model.config.auth;
            if auth.users_file.is_some() || auth.tokens_file.is_some() {
                log::info!("reloaded credential files");
                self.metrics.count("auth", "ok");
            }
            log::info!(
                "configuration reloaded: generation {}; {}{}",
                report.generation,
                if report.changes.is_empty() {
                    "no changes in gateway.yaml".to_string()
                } else {
                    format!("changed: {}", report.changes.join("; "))
                },
                if report.needs_upgrade.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; not applied, needs `modgate run --upgrade`: {}",
                        report.needs_upgrade.join("; ")
                    )
                }
            );
            if let Some(c) = &self.cache {
                // Retention and max_records apply live (a changed path waits for an upgrade).
                if let (Some(w), Some(f)) = (&c.fetched, &model.config.fetched) {
                    w.set_limits(f.limits());
                }
                let n = c.quarantine.clear();
                if n > 0 {
                    log::info!("forgot {n} integrity refusal(s); the next fetch is checked against the ledger again");
                }
            }
        } else {
            let why = report.error.as_deref().unwrap_or("unknown error");
            // Name the listener whose TLS files are at fault (the common case), as the
            // `tls.watch` path does.
            for (name, tls) in self.live.tls() {
                if let Err(e) = tls.prepare(&tls.files()) {
                    log::error!(
                        "listener {name}: new TLS material refused (SIGHUP), previous material stays in force: {e}"
                    );
                    self.metrics.count(&format!("tls:{name}"), "error");
                }
            }
            log::error!(
                "configuration not reloaded, generation {} stays in force: {why}",
                report.generation
            );
        }
        write_status(&self.status, &report);
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reloads disabled: {e}");
                return;
            }
        };
        write_status(&self.status, &self.live.last_report());
        for (name, tls) in self.live.tls() {
            self.metrics.publish_expiry(name, tls);
        }
        let mut watched = watched_listeners(&self.live);
        let mut last: Vec<Stamps> = watched.iter().map(|(_, t, _)| stamps(t)).collect();
        let mut tick = tick_every(&watched);
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    // Blocks while files are read: this service's own runtime, not a listener's.
                    self.reload_all();
                    watched = watched_listeners(&self.live);
                    last = watched.iter().map(|(_, t, _)| stamps(t)).collect();
                    tick = tick_every(&watched);
                }
                _ = tick.tick() => {
                    for ((name, t, _), prev) in watched.iter().zip(last.iter_mut()) {
                        let now = stamps(t);
                        if now != *prev {
                            *prev = now;
                            reload_tls(name, t, "files changed", &self.metrics);
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
