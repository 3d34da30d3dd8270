//! The cluster's change events: what one replica (or an operator's command) changed that every
//! other replica must act on — an operator's accept (forget the refusal of the old bytes) and a
//! purge (drop the module's answers from the local tiers).
//!
//! An event is a row of `cluster_events`, written in the transaction of the change it reports,
//! and a `NOTIFY modgate_events` sent on commit. Each replica's [`Listener`] holds one
//! connection with `LISTEN modgate_events` and, when woken, reads the rows after the last one it
//! applied: a notification is only a wake-up, the table is the record, so a replica whose
//! connection was lost (a PostgreSQL restart) reads what it missed when it reconnects, and a
//! replica that restarts reads from the id it saved. A quiet connection is checked (and missed
//! rows read) every [`CHECK_EVERY`], which bounds how late an event can be seen even if a
//! notification were lost. Events older than [`RETENTION_SECS`] are pruned by the writers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{GenericClient, Transaction};

use crate::error::PgError;
use crate::ledger::now_unix;
use crate::pool::Pool;

/// The advisory lock key of event writers ("modgate" and 2).
const EVENTS_LOCK: i64 = 0x6d6f_6467_6174_6502;

/// The notification channel.
pub const CHANNEL: &str = "modgate_events";

/// How long events are kept (a replica down for longer is told of the gap, [`Delivery::Gap`],
/// and its operator what to run).
pub const RETENTION_SECS: i64 = 7 * 24 * 3600;

/// Longest a listening connection stays quiet before it is checked and missed rows are read.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An operator accepted new bytes for `module@version` `artifact`.
    Accept,
    /// A module's (or one version's) answers were purged.
    Purge,
}

impl EventKind {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accept => "accept",
            EventKind::Purge => "purge",
        }
    }

    fn parse(s: &str) -> Option<EventKind> {
        match s {
            "accept" => Some(EventKind::Accept),
            "purge" => Some(EventKind::Purge),
            _ => None,
        }
    }
}

/// One change event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in the cluster's order of events.
    pub id: i64,
    /// What changed.
    pub kind: EventKind,
    /// The module.
    pub module: String,
    /// The version, when the change is about one.
    pub version: Option<String>,
    /// The artifact (`mod`, `zip`, `info`), when the change is about one.
    pub artifact: Option<String>,
    /// Who published it (a replica's name, or an operator command's).
    pub origin: String,
    /// When (seconds since the Unix epoch).
    pub at_unix: i64,
}

/// Records an event in `tx` (sent to the listeners when `tx` commits) and prunes old ones.
pub fn publish(
    tx: &mut Transaction<'_>,
    kind: EventKind,
    module: &str,
    version: Option<&str>,
    artifact: Option<&str>,
    origin: &str,
) -> Result<i64, postgres::Error> {
    // Writers of events take turns until they commit, so ids are handed out in commit order
    // and a listener that has read up to an id never finds an older one committed later.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK])?;
    let now = now_unix();
    let id: i64 = tx
        .query_one(
            "INSERT INTO cluster_events (kind, module, version, artifact, origin, at_unix)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[&kind.as_str(), &module, &version, &artifact, &origin, &now],
        )?
        .try_get(0)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id.to_string()])?;
    tx.execute(
        "DELETE FROM cluster_events WHERE at_unix < $1",
        &[&(now - RETENTION_SECS)],
    )?;
    Ok(id)
}

/// Publishes a purge of `module` (or of one version) for every replica.
pub fn publish_purge(
    pool: &Arc<Pool>,
    module: &str,
    version: Option<&str>,
    origin: &str,
) -> Result<i64, PgError> {
    crate::migrate::migrate(pool)?;
    let mut conn = pool.get()?;
    let result = (|| {
        let mut tx = conn.transaction()?;
        let id = publish(&mut tx, EventKind::Purge, module, version, None, origin)?;
        tx.commit()?;
        Ok(id)
    })();
    result.map_err(|e: postgres::Error| {
        conn.broken();
        pool.error("publishing a purge", &e)
    })
}

/// The newest event's id (0 when there is none).
pub fn newest(client: &mut impl GenericClient) -> Result<i64, postgres::Error> {
    client
        .query_one("SELECT COALESCE(MAX(id), 0) FROM cluster_events", &[])?
        .try_get(0)
}

/// The oldest event still kept (`None` when there is none).
fn oldest(client: &mut impl GenericClient) -> Result<Option<i64>, postgres::Error> {
    client
        .query_one("SELECT MIN(id) FROM cluster_events", &[])?
        .try_get(0)
}

/// What the listener hands its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An event, in order, exactly once per listener (unless the callback's process dies
    /// before saving the id, then again after restart).
    Event(Event),
    /// Events after the id the listener started from were pruned before it could read them:
    /// whatever the local tiers hold may be stale and should be dropped.
    Gap,
    /// A fetch lease of the shared object tier was released: the object under this key is in
    /// the shared store now, or its fetch failed (a wake-up only; not recorded, not replayed).
    Released(String),
}

/// A thread that applies the cluster's events as they come.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts listening on its own connection of `pool`'s database. Events after `from` are
    /// delivered (`None`: only those published from now on). `on` runs on the listener's
    /// thread, one delivery at a time. A lost connection is re-established with a backoff
    /// (100 ms doubling to 5 s); events published meanwhile are delivered on reconnection.
    pub fn start(
        pool: Arc<Pool>,
        from: Option<i64>,
        on: impl Fn(Delivery) + Send + 'static,
    ) -> std::io::Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("modgate-events".to_owned())
            .spawn(move || listen(&pool, from, &flag, &on))?;
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (within about a second) and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn listen(pool: &Arc<Pool>, from: Option<i64>, stop: &AtomicBool, on: &dyn Fn(Delivery)) {
    let mut last = from;
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        match listen_once(pool, &mut last, stop, on, &mut failing) {
            Ok(()) => return,
            Err(e) => {
                if !failing {
                    log::warn!("cluster events: {e}; reconnecting");
                    failing = true;
                }
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50).min(backoff));
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One connection's life: `LISTEN`, read what was missed, then wait for wake-ups.
fn listen_once(
    pool: &Arc<Pool>,
    last: &mut Option<i64>,
    stop: &AtomicBool,
    on: &dyn Fn(Delivery),
    failing: &mut bool,
) -> Result<(), PgError> {
    let err = |step| move |e: postgres::Error| pool.error(step, &e);
    let mut client = pool.connect()?;
    client
        .batch_execute(&format!(
            "LISTEN {CHANNEL}; LISTEN {}",
            crate::lease::OBJECTS_CHANNEL
        ))
        .map_err(err("LISTEN"))?;
    if *failing {
        log::info!("cluster events: listening on {} again", pool.name());
        *failing = false;
    }
    match *last {
        None => *last = Some(newest(&mut client).map_err(err("reading the newest event"))?),
        Some(from) => {
            if let Some(oldest) = oldest(&mut client).map_err(err("reading the oldest event"))? {
                if oldest > from + 1 {
                    deliver(on, Delivery::Gap);
                }
            }
        }
    }
    catch_up(&mut client, last, on).map_err(err("reading events"))?;
    let mut quiet_since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut woken = false;
        let mut wait = Duration::from_secs(1);
        loop {
            let next = client
                .notifications()
                .timeout_iter(wait)
                .next()
                .map_err(err("waiting for notifications"))?;
            let Some(n) = next else { break };
            if n.channel() == crate::lease::OBJECTS_CHANNEL {
                deliver(on, Delivery::Released(n.payload().to_owned()));
            } else {
                woken = true;
            }
            // Take what else is pending without waiting.
            wait = Duration::from_millis(1);
        }
        if client.is_closed() {
            return Err(PgError::Db {
                store: pool.name().to_owned(),
                step: "listening",
                detail: "the server closed the connection".to_owned(),
            });
        }
        if woken || quiet_since.elapsed() >= CHECK_EVERY {
            catch_up(&mut client, last, on).map_err(err("reading events"))?;
            quiet_since = Instant::now();
        }
    }
    Ok(())
}

/// Hands `d` to the callback; a panic in it is logged, never the end of the listener.
fn deliver(on: &dyn Fn(Delivery), d: Delivery) {
    let shown = format!("{d:?}");
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on(d))).is_err() {
        log::error!("cluster events: applying {shown} panicked; going on with the next");
    }
}

/// Delivers every event after `last`, in order, and moves `last` on.
fn catch_up(
    client: &mut postgres::Client,
    last: &mut Option<i64>,
    on: &dyn Fn(Delivery),
) -> Result<(), postgres::Error> {
    const PAGE: i64 = 1000;
    loop {
        let after = last.unwrap_or(0);
        let rows = client.query(
            "SELECT id, kind, module, version, artifact, origin, at_unix FROM cluster_events
             WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &PAGE],
        )?;
        let n = rows.len();
        for row in rows {
            let id: i64 = row.try_get(0)?;
            *last = Some(id);
            let kind: String = row.try_get(1)?;
            let Some(kind) = EventKind::parse(&kind) else {
                log::warn!("cluster events: event {id} of unknown kind {kind:?} ignored");
                continue;
            };
            deliver(
                on,
                Delivery::Event(Event {
                    id,
                    kind,
                    module: row.try_get(2)?,
                    version: row.try_get(3)?,
                    artifact: row.try_get(4)?,
                    origin: row.try_get(5)?,
                    at_unix: row.try_get(6)?,
                }),
            );
        }
        if i64::try_from(n).unwrap_or(i64::MAX) < PAGE {
            return Ok(());
        }
    }
}
