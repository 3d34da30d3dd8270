//! Artifacts whose upstream bytes changed and were refused, remembered until an operator
//! accepts the change or the gateway restarts.

use std::collections::HashMap;
use std::sync::Mutex;

use modgate_ledger::Artifact;

/// One quarantined artifact: why its changed upstream bytes were refused (what was first seen
/// and what the upstream served instead), the reason every later request is given.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub message: String,
}

/// Artifacts whose upstream bytes changed, until an operator accepts the change or the gateway
/// restarts (then the next fetch is checked against the ledger again).
#[derive(Default)]
pub struct Quarantine {
    refused: Mutex<HashMap<(String, String, Artifact), Quarantined>>,
}

impl Quarantine {
    pub fn get(&self, module: &str, version: &str, a: Artifact) -> Option<Quarantined> {
        self.refused
            .lock()
            .ok()?
            .get(&(module.to_string(), version.to_string(), a))
            .cloned()
    }

    /// Forgets every refusal; returns how many there were.
    pub fn clear(&self) -> usize {
        self.refused
            .lock()
            .map(|mut m| {
                let n = m.len();
                m.clear();
                n
            })
            .unwrap_or(0)
    }

    /// Forgets one refusal (an operator accepted the change); whether there was one.
    pub fn forget(&self, module: &str, version: &str, a: Artifact) -> bool {
        self.refused
            .lock()
            .map(|mut m| {
                m.remove(&(module.to_string(), version.to_string(), a))
                    .is_some()
            })
            .unwrap_or(false)
    }

    pub fn insert(&self, module: &str, version: &str, a: Artifact, r: Quarantined) {
        if let Ok(mut m) = self.refused.lock() {
            m.insert((module.to_string(), version.to_string(), a), r);
        }
    }
}
