//! How many client connections a listener holds open, in all and per source address: admission
//! hands out a [`Permit`] that gives its place back when dropped (when the connection closes).
//! Pure bookkeeping, no I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// A listener's connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Most connections open on the listener.
    pub listener: u32,
    /// Most connections open from one source address.
    pub source: u32,
}

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    Listener,
    Source,
}

impl Over {
    /// The `reason` label of `modgate_connections_cut_total`.
    pub fn label(self) -> &'static str {
        match self {
            Over::Listener => "listener_limit",
            Over::Source => "source_limit",
        }
    }

    /// Every `reason` label an over-cap refusal gives (`match` without a wildcard: a new
    /// variant fails to compile until it is listed).
    pub fn labels() -> [&'static str; 2] {
        let _every = |o: Over| match o {
            Over::Listener | Over::Source => (),
        };
        [Over::Listener.label(), Over::Source.label()]
    }

    /// What the refused client is told.
    pub fn message(self) -> &'static str {
        match self {
            Over::Listener => "too many connections to this gateway listener; retry shortly",
            Over::Source => {
                "too many connections from your address; reuse connections or retry shortly"
            }
        }
    }
}

#[derive(Default)]
struct Open {
    total: u32,
    by_source: HashMap<IpAddr, u32>,
}

/// The open connections of one listener.
pub struct Counter {
    caps: Caps,
    open: Mutex<Open>,
}

/// One admitted connection's place; dropping it gives the place back.
pub struct Permit {
    counter: Arc<Counter>,
    source: Option<IpAddr>,
}

impl Counter {
    pub fn new(caps: Caps) -> Arc<Counter> {
        Arc::new(Counter {
            caps,
            open: Mutex::new(Open::default()),
        })
    }

    /// Admits a connection from `source` (`None` for peers without an IP address, which count
    /// towards the listener's total only).
    pub fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Result<Permit, Over> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.caps.listener {
            return Err(Over::Listener);
        }
        if let Some(ip) = source {
            let n = open.by_source.entry(ip).or_insert(0);
            if *n >= self.caps.source {
                return Err(Over::Source);
            }
            *n += 1;
        }
        open.total += 1;
        Ok(Permit {
            counter: self.clone(),
            source,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> u32 {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .counter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.source {
            if let Some(n) = open.by_source.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.by_source.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn each_source_has_its_own_allowance() {
        let c = Counter::new(Caps {
            listener: 10,
            source: 2,
        });
        let a1 = c.admit(ip(1)).expect("first");
        let _a2 = c.admit(ip(1)).expect("second");
        assert_eq!(c.admit(ip(1)).err(), Some(Over::Source));
        let _b1 = c.admit(ip(2)).expect("another source");
        drop(a1);
        let _a3 = c.admit(ip(1)).expect("a place given back is reused");
        assert_eq!(c.open(), 3);
    }

    #[test]
    fn the_listener_total_binds_every_source_and_addressless_peers() {
        let c = Counter::new(Caps {
            listener: 2,
            source: 5,
        });
        let _a = c.admit(ip(1)).expect("a");
        let _u = c.admit(None).expect("unix peer");
        assert_eq!(c.admit(ip(2)).err(), Some(Over::Listener));
        assert_eq!(c.admit(None).err(), Some(Over::Listener));
    }

    #[test]
    fn refused_connections_take_no_place_and_sources_are_forgotten() {
        let c = Counter::new(Caps {
            listener: 1,
            source: 1,
        });
        let a = c.admit(ip(1)).expect("a");
        assert!(c.admit(ip(1)).is_err());
        assert!(c.admit(ip(2)).is_err());
        drop(a);
        assert_eq!(c.open(), 0);
        assert!(c
            .open
            .lock()
            .map(|o| o.by_source.is_empty())
            .unwrap_or(false));
    }
}
