//! Following the cluster's change events (`cluster:`, issue 23): what another replica or an
//! operator's command changed in the shared ledger or cache, applied to this replica's own
//! tiers. An accept forgets this replica's refusal of the old bytes (the next request is
//! checked against the new record); a purge drops the module's answers from the local cache.
//! The id of the last event applied is saved beside the cache (`cluster-events.last`), so a
//! replica that restarts applies what it missed while down.
//!
//! Also the shared object tier ([`SharedTier`]): the S3-compatible store, this replica's name
//! as a fetch-lease holder, and the requests waiting for another replica's fetch, woken by the
//! listener when that replica releases the object's lease.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

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
        Delivery::Released(key) => {
            if let Some(shared) = &rt.shared {
                shared.waiters.wake(&key);
            }
        }
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

/// The shared object tier of a cluster (`cluster.objects`).
pub struct SharedTier {
    pub tier: modgate_objstore::ObjectTier,
    /// The pool fetch leases are taken through.
    pub pool: Arc<Pool>,
    /// This process as a lease holder: the replica's name and its pid (each fetch adds the
    /// verifier's random secret's first characters and a number of its own).
    pub holder: String,
    pub waiters: Waiters,
}

impl SharedTier {
    /// The store's key of an exact version's artifact on a route: the module's objects share
    /// a prefix (`<module>/@v/`), so a purge lists them.
    pub fn key(route: &str, module: &str, version: &str, artifact: Artifact) -> String {
        format!("{module}/@v/{version}.{artifact}/{route}")
    }

    /// Removes a module's objects (one version's, or all) from the store.
    pub async fn purge(&self, module: &str, version: Option<&str>) -> anyhow::Result<usize> {
        purge_objects(&self.tier, module, version).await
    }
}

/// Removes a module's objects (one version's, or all) from the shared store; how many.
pub async fn purge_objects(
    tier: &modgate_objstore::ObjectTier,
    module: &str,
    version: Option<&str>,
) -> anyhow::Result<usize> {
    // One version's keys are `<module>/@v/<version>.<artifact>/<route>`: exactly those (not
    // `v1.0.0-rc.1`'s for `v1.0.0-rc`).
    let prefixes: Vec<String> = match version {
        Some(v) => Artifact::ALL
            .iter()
            .map(|a| format!("{module}/@v/{v}.{a}/"))
            .collect(),
        None => vec![format!("{module}/@v/")],
    };
    // `list` takes whole path segments: list the module's directory and filter.
    let keys = tier.list(&format!("{module}/@v"), 100_000).await?;
    let mut n = 0;
    for k in keys
        .iter()
        .filter(|k| prefixes.iter().any(|p| k.starts_with(p.as_str())))
    {
        tier.delete(k).await?;
        n += 1;
    }
    Ok(n)
}

/// Requests waiting for another replica's fetch of a key, woken when its lease is released.
#[derive(Default)]
pub struct Waiters(Mutex<HashMap<String, Weak<tokio::sync::Notify>>>);

impl Waiters {
    /// The wake-up of `key` (shared by every request waiting for it).
    pub fn subscribe(&self, key: &str) -> Arc<tokio::sync::Notify> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get(key).and_then(Weak::upgrade) {
            return n;
        }
        if map.len() >= 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let n = Arc::new(tokio::sync::Notify::new());
        map.insert(key.to_owned(), Arc::downgrade(&n));
        n
    }

    /// Wakes every request waiting for `key`.
    pub fn wake(&self, key: &str) {
        let n = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .and_then(Weak::upgrade);
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}
