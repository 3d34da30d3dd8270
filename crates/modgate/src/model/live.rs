//! The model in force ([`Live`]) and its replacement: a request takes the model once when it
//! starts and keeps it to its end, and a reload swaps in a complete new one or nothing at all
//! ([`Live::reload`]), reporting what changed ([`ReloadReport`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use modgate_identity::{PreparedTls, ReloadableTls};
use modgate_ratelimit::Limiter;
use serde::Serialize;

use super::diff::diff;
use super::Model;
use crate::config::{self, GatewayConfig};
use crate::metrics::{self, Metrics};
use crate::record::Recorder;

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
    /// The process's metrics, from which every model built makes its concerns' handles, and
    /// the concerns' label values every model built is primed with.
    metrics: Option<&'static Metrics>,
    labels: metrics::Labels,
    /// The reload series.
    counted: ConfigMetrics,
    /// Every identity's rate-limit buckets: kept across reloads (an unchanged limit keeps its
    /// state; the model in force says which limits apply).
    limiter: Limiter,
}

impl Live {
    pub fn new(
        model: Model,
        config_path: PathBuf,
        tls: BTreeMap<String, Arc<ReloadableTls>>,
        metrics: Option<&'static Metrics>,
        labels: metrics::Labels,
    ) -> Live {
        let generation = model.generation;
        let counted = ConfigMetrics::new(metrics);
        counted.published(generation, true);
        let limiter = Limiter::new(model.config.rate_limits.0.max_identities);
        Live {
            limiter,
            started: model.config.clone(),
            current: ArcSwap::from_pointee(model),
            config_path,
            tls,
            metrics,
            labels,
            counted,
            reloading: Mutex::new(0),
            last: Mutex::new(ReloadReport {
                pid: std::process::id(),
                generation,
                applied: true,
                ..ReloadReport::default()
            }),
        }
    }

    /// The configuration this process started with (its sockets, storage and directories).
    pub fn started(&self) -> &GatewayConfig {
        &self.started
    }

    /// The model in force now.
    pub fn current(&self) -> Arc<Model> {
        self.current.load_full()
    }

    /// Every identity's rate-limit buckets.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
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

    /// The process's metrics (server start-up makes each listener's handles from them).
    pub fn metrics(&self) -> Option<&'static Metrics> {
        self.metrics
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
                self.limiter
                    .set_max_identities(model.config.rate_limits.0.max_identities);
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
        self.counted.published(report.generation, report.applied);
        self.counted.reloaded(report.applied);
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
        crate::mirrors::verify_mirrors_dir(&crate::mirrors::mirrors_dir(&self.started))?;
        // The recorder last: a refused reload opens (creates) no new audit file.
        let same_recorder =
            old.config.audit == config.audit && old.config.telemetry == config.telemetry;
        let config = Arc::new(config);
        let model = Model::build(
            config.clone(),
            old.generation + 1,
            &self.tls,
            self.metrics,
            &self.labels,
            |counted| {
                if same_recorder {
                    old.recorder.audit.reopen();
                    Ok(old.recorder.clone())
                } else {
                    Ok(Arc::new(Recorder::start(
                        config.audit.sink(),
                        config.audit.fail_mode == config::AuditFailMode::Closed,
                        config.telemetry.otel(),
                        counted,
                    )?))
                }
            },
        )?;
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

/// The reload concern's metric handle: `modgate_config_reloads_total` by result (resolved
/// once), `modgate_config_generation` and `modgate_config_last_reload_success_timestamp_seconds`.
struct ConfigMetrics(Option<ConfigSeries>);

struct ConfigSeries {
    applied: prometheus::IntCounter,
    refused: prometheus::IntCounter,
    generation: prometheus::IntGauge,
    last_success: prometheus::Gauge,
}

impl ConfigMetrics {
    fn new(metrics: Option<&Metrics>) -> ConfigMetrics {
        ConfigMetrics(metrics.map(|m| ConfigSeries {
            applied: m.config_reloads.with_label_values(&["applied"]),
            refused: m.config_reloads.with_label_values(&["refused"]),
            generation: m.config_generation.clone(),
            last_success: m.config_last_success.clone(),
        }))
    }

    /// A reload attempt ended.
    fn reloaded(&self, applied: bool) {
        if let Some(s) = &self.0 {
            if applied { &s.applied } else { &s.refused }.inc();
        }
    }

    /// `generation` is in force; `applied`: it was applied now.
    fn published(&self, generation: u64, applied: bool) {
        let Some(s) = &self.0 else { return };
        s.generation.set(generation as i64);
        if applied {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            s.last_success.set(now);
        }
    }
}
