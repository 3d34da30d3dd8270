//! Fetch leases: cluster-wide coalescing of misses (issue 23). Before a replica fetches an
//! object from an upstream for the shared tier, it takes the object's lease; the others wait
//! for its `NOTIFY modgate_objects '<key>'` (sent when the holder releases the lease, after the
//! object is in the shared store or the fetch failed) and then read the store. A lease expires
//! unless renewed ([`LEASE_TTL`]; the holder renews it every third of that while it fetches),
//! so a holder that dies (`kill -9`) is taken over within that bound. Times are the database
//! server's clock (`clock_timestamp()`), so replicas' clocks do not matter.

use std::sync::Arc;
use std::time::Duration;

use crate::error::PgError;
use crate::pool::Pool;

/// The notification channel of committed (or abandoned) fetches; the payload is the key.
pub const OBJECTS_CHANNEL: &str = "modgate_objects";

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// The result of [`try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This replica holds the lease now.
    Acquired,
    /// Another holds it, for at most this much longer unless it renews it.
    HeldBy {
        /// Who.
        holder: String,
        /// Until when at the latest (from now).
        expires_in: Duration,
    },
}

const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Takes the lease of `key` for `holder` if nobody holds it or its holder's lease expired.
pub fn try_acquire(
    pool: &Arc<Pool>,
    key: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Lease, PgError> {
    with(pool, "taking a fetch lease", |c| {
        let taken = c.query_opt(
            &format!(
                "INSERT INTO fetch_leases (key, holder, expires_ms) VALUES ($1, $2, {NOW_MS} + $3)
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder,
                     expires_ms = excluded.expires_ms
                 WHERE fetch_leases.expires_ms < {NOW_MS}
                 RETURNING holder"
            ),
            &[&key, &holder, &ttl_ms(ttl)],
        )?;
        if taken.is_some() {
            return Ok(Lease::Acquired);
        }
        let row = c.query_opt(
            &format!("SELECT holder, expires_ms - {NOW_MS} FROM fetch_leases WHERE key = $1"),
            &[&key],
        )?;
        Ok(match row {
            // Released between the two statements: try again at once.
            None => Lease::HeldBy {
                holder: String::new(),
                expires_in: Duration::ZERO,
            },
            Some(r) => {
                let left: i64 = r.try_get(1)?;
                Lease::HeldBy {
                    holder: r.try_get(0)?,
                    expires_in: Duration::from_millis(u64::try_from(left.max(0)).unwrap_or(0)),
                }
            }
        })
    })
}

/// Extends `holder`'s lease of `key`; `false` when it no longer holds it (it expired and was
/// taken over).
pub fn renew(pool: &Arc<Pool>, key: &str, holder: &str, ttl: Duration) -> Result<bool, PgError> {
    with(pool, "renewing a fetch lease", |c| {
        let n = c.execute(
            &format!(
                "UPDATE fetch_leases SET expires_ms = {NOW_MS} + $3
                 WHERE key = $1 AND holder = $2"
            ),
            &[&key, &holder, &ttl_ms(ttl)],
        )?;
        Ok(n == 1)
    })
}

/// Gives the lease of `key` up (if `holder` still holds it) and wakes every replica waiting
/// for it.
pub fn release(pool: &Arc<Pool>, key: &str, holder: &str) -> Result<(), PgError> {
    with(pool, "releasing a fetch lease", |c| {
        let mut tx = c.transaction()?;
        tx.execute(
            "DELETE FROM fetch_leases WHERE key = $1 AND holder = $2",
            &[&key, &holder],
        )?;
        tx.execute("SELECT pg_notify($1, $2)", &[&OBJECTS_CHANNEL, &key])?;
        tx.commit()
    })
}

fn with<T>(
    pool: &Arc<Pool>,
    step: &'static str,
    work: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
) -> Result<T, PgError> {
    let mut conn = pool.get()?;
    work(&mut conn).map_err(|e| {
        conn.broken();
        pool.error(step, &e)
    })
}
