//! The shared stores of a modgate cluster in PostgreSQL (issue 23): N replicas behind any
//! balancer share one ledger and one fetched index, and hear of each other's changes.
//!
//! * [`pool`] — connection settings (DSN, pool size, TLS against a CA bundle) and a bounded pool
//!   of blocking clients that drops broken connections and reconnects on the next use, so a
//!   restarted server is used again without a restart of the gateway.
//! * [`migrate`] — versioned schema migrations, applied at start under a transaction-scoped
//!   advisory lock: several replicas starting at once apply each migration exactly once.
//! * [`ledger`] — [`PgLedger`], the integrity ledger with the semantics of the embedded SQLite
//!   one (`modgate_ledger::conformance` is run against both).
//! * [`fetched`] — [`PgFetchIndex`], the fetched-by-identity index with the semantics of the
//!   embedded SQLite one (`modgate_fetched::conformance` is run against both).
//! * [`lease`] — fetch leases for cluster-wide miss coalescing: one replica fetches an object,
//!   the others wait for its `NOTIFY` and read the shared store; an expired lease is taken over.
//! * [`sumlog`] — [`PgLog`], the company's checksum database with the semantics of the embedded
//!   one (`modgate_sumdb::conformance` is run against both) and one writer at a time: an append
//!   holds the log's advisory lock, so the tree grows batch after batch and never forks.
//! * [`events`] — the change events of the cluster (an operator's accept, a purge): a table each
//!   replica reads from where it left off, woken by `LISTEN/NOTIFY`, so an event is seen by every
//!   replica within a bounded time even across a lost connection.
//!
//! Every call blocks (the gateway calls it on its blocking pool); errors name the store.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod events;
pub mod fetched;
pub mod lease;
pub mod ledger;
pub mod migrate;
pub mod pool;
pub mod sumlog;

pub use error::PgError;
pub use events::{publish_purge, Delivery, Event, EventKind, Listener};
pub use fetched::PgFetchIndex;
pub use lease::{Lease, LEASE_TTL};
pub use ledger::PgLedger;
pub use pool::{PgSettings, Pool};
pub use sumlog::PgLog;
