//! Reloading without a restart: on SIGHUP every listener's TLS material (certificate, key, CA
//! bundles, CRLs) and the credential files are read again and the audit file is reopened (for
//! logrotate). Listeners with `tls.watch` are also checked for changed files at that interval.
//!
//! Each reload is all-or-nothing: a new file that does not load (half-written, key mismatch,
//! bad CRL) is refused with a log line and a metric, and the material in force stays in force.
//! Connections already established are never touched; new handshakes use the new material.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use modgate_identity::{Authenticator, ReloadableTls};
use modgate_telemetry::AuditLog;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::AuthConfig;
use crate::metrics;

/// One TLS listener's reloadable material.
pub struct TlsReload {
    pub listener: String,
    pub tls: Arc<ReloadableTls>,
    pub files: Vec<PathBuf>,
    pub watch: Option<Duration>,
}

/// The credential files and the authenticator built from them.
pub struct AuthState {
    pub config: AuthConfig,
    pub current: ArcSwap<Authenticator>,
}

impl AuthState {
    pub fn reload(&self) {
        if self.config.users_file.is_none() && self.config.tokens_file.is_none() {
            return;
        }
        match self.config.load() {
            Ok(a) => {
                self.current.store(Arc::new(a));
                log::info!("reloaded credential files");
                count("auth", "ok");
            }
            Err(e) => {
                log::error!("credential files not reloaded, previous ones stay in force: {e}");
                count("auth", "error");
            }
        }
    }
}

fn count(what: &str, result: &str) {
    if let Some(m) = metrics::metrics() {
        m.reloads.with_label_values(&[what, result]).inc();
    }
}

/// The background service that performs reloads.
pub struct Reloader {
    pub tls: Vec<TlsReload>,
    pub auth: Arc<AuthState>,
    pub audit: AuditLog,
    /// Its refusals of changed upstream bytes are forgotten (after `modgate ledger accept`).
    pub cache: Option<Arc<crate::cache::CacheRuntime>>,
}

type Stamps = Vec<Option<(SystemTime, u64)>>;

fn stamps(files: &[PathBuf]) -> Stamps {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

impl TlsReload {
    /// Publishes the expiry of the certificate in force.
    fn publish(&self) {
        if let Some(m) = metrics::metrics() {
            m.cert_not_after
                .with_label_values(&[self.listener.as_str()])
                .set(self.tls.server_not_after_unix());
        }
    }

    fn reload(&self, why: &str) {
        let result = self.tls.reload();
        self.publish();
        match result {
            Ok(_) => {
                log::info!("listener {}: TLS material reloaded ({why})", self.listener);
                count(&format!("tls:{}", self.listener), "ok");
            }
            Err(e) => {
                log::error!(
                    "listener {}: new TLS material refused ({why}), previous material stays in force: {e}",
                    self.listener
                );
                count(&format!("tls:{}", self.listener), "error");
            }
        }
    }
}

impl Reloader {
    fn reload_all(&self) {
        log::info!("SIGHUP: reloading TLS material and credential files, reopening audit log");
        for t in &self.tls {
            t.reload("SIGHUP");
        }
        self.auth.reload();
        self.audit.reopen();
        if let Some(c) = &self.cache {
            let n = c.quarantine.clear();
            if n > 0 {
                log::info!("forgot {n} integrity refusal(s); the next fetch is checked against the ledger again");
            }
        }
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
        let tick_every = self
            .tls
            .iter()
            .filter_map(|t| t.watch)
            .min()
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(100));
        for t in &self.tls {
            t.publish();
        }
        let mut last: Vec<Stamps> = self.tls.iter().map(|t| stamps(&t.files)).collect();
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    self.reload_all();
                    last = self.tls.iter().map(|t| stamps(&t.files)).collect();
                }
                _ = tick.tick() => {
                    for (t, prev) in self.tls.iter().zip(last.iter_mut()) {
                        if t.watch.is_none() {
                            continue;
                        }
                        let now = stamps(&t.files);
                        if now != *prev {
                            *prev = now;
                            t.reload("files changed");
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
