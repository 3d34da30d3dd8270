//! Periodic and shutdown-time saving of the cache index snapshot, as a Pingora background service.

use crate::disk::DiskCache;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

/// Saves the index snapshot of a [`DiskCache`] every `interval` and once more at shutdown.
///
/// Add it with `server.add_service(pingora::services::background::background_service(
/// "cache state", cache.persist_service(Duration::from_secs(300))))`.
#[derive(Debug)]
pub struct PersistService {
    cache: &'static DiskCache,
    interval: Duration,
}

impl DiskCache {
    /// A [`PersistService`] for this cache.
    pub fn persist_service(&'static self, interval: Duration) -> PersistService {
        PersistService {
            cache: self,
            interval,
        }
    }
}

impl PersistService {
    async fn save(&self) {
        match self.cache.save_state().await {
            Ok(()) => log::debug!("disk cache: index snapshot saved"),
            Err(e) => log::warn!("disk cache: cannot save the index snapshot: {e}"),
        }
    }
}

#[async_trait]
impl BackgroundService for PersistService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_secs(1)));
        tick.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = tick.tick() => self.save().await,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.save().await;
                        return;
                    }
                }
            }
        }
    }
}
