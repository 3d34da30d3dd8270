//! Following the cluster's change events (`cluster:`, issue 23): what another replica or an
//! operator's command changed in the shared ledger or cache, applied to this replica's own
//! tiers. An accept forgets this replica's refusal of the old bytes (the next request is
//! checked against the new record); a purge drops the module's answers from the local cache.
//! The id of the last event applied is saved beside the cache (`cluster-events.last`), so a
//! replica that restarts applies what it missed while down.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use modgate_ledger::Artifact;
use modgate_postgres::{Delivery, Event, EventKind, Listener, Pool};

use super::{purge_module, CacheRuntime};

/// The file beside the cache holding the id of the last event applied.
pub fn state_file(cache_dir: &Path) -> PathBuf {
    cache_dir.join("cluster-events.last")
}

/// Starts applying the cluster's events to `rt` on a listener thread.
pub fn follow(rt: Arc<CacheRuntime>, pool: Arc<Pool>, state: PathBuf) -> std::io::Result<Listener> {
    let from = std::fs::read_to_string(&state)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok());
    Listener::start(pool, from, move |d| match d {
        Delivery::Event(e) => {
            apply(&rt, &e);
            save(&state, e.id);
        }
        Delivery::Gap => log::warn!(
            "cluster events: this replica was away longer than events are kept; purges made \
             meanwhile may not have reached its local cache: run `modgate cache verify` and \
             purge what must go"
        ),
    })
}

fn apply(rt: &CacheRuntime, e: &Event) {
    match e.kind {
        EventKind::Accept => {
            let (Some(v), Some(a)) = (&e.version, &e.artifact) else {
                return;
            };
            let Ok(a) = Artifact::from_str(a) else {
                return;
            };
            if rt.quarantine.forget(&e.module, v, a) {
                log::info!(
                    "cluster events: {}@{v} (.{a}) accepted by {} (event {}): refusal lifted",
                    e.module,
                    e.origin,
                    e.id
                );
            }
        }
        EventKind::Purge => match purge_module(rt.storage, &e.module, e.version.as_deref()) {
            Ok(report) => log::info!(
                "cluster events: purge of {}{} from {} (event {}): {} object(s) removed here",
                e.module,
                e.version
                    .as_deref()
                    .map(|v| format!("@{v}"))
                    .unwrap_or_default(),
                e.origin,
                e.id,
                report.objects
            ),
            Err(err) => log::warn!(
                "cluster events: purge of {} (event {}) failed here: {err}",
                e.module,
                e.id
            ),
        },
    }
}

/// Saves the id atomically (a temporary file renamed over the old one).
fn save(state: &Path, id: i64) {
    let tmp = state.with_extension("tmp");
    let done = std::fs::write(&tmp, format!("{id}\n")).and_then(|()| std::fs::rename(&tmp, state));
    if let Err(e) = done {
        log::warn!(
            "cluster events: cannot save the last event id in {}: {e}",
            state.display()
        );
    }
}
