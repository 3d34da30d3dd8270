//! The module-index tailer: a background task that reads the Go module index (the feed of
//! every version the public proxy has fetched, with the time it first fetched it) into the
//! sightings store, from the start of the longest cooldown window on, without gaps.
//!
//! The feed's format is `GET <base>/index?since=<RFC 3339>&limit=<n>`: JSON lines
//! `{"Path":…,"Version":…,"Timestamp":…}` in timestamp order, at most `limit` (2000 at most on
//! the real index) per page, entries at `since` included, so the next page is asked with the
//! page's last `Timestamp` and repeats the boundary entries (recording is idempotent).
//!
//! Progress moves only after a page is durably stored, in the same transaction: a page that
//! fails (unreachable, an error status, a malformed line, entries out of order, more entries
//! at one timestamp than a page holds) is asked again after a backoff and never skipped, so
//! what the store reports as "read without gaps" is exactly that. `settle` is a margin for the
//! index's lag in listing what the proxy fetched and for the two clocks' skew: the cursor stays
//! that far behind the gateway's clock (the last `settle` of entries are read again each
//! time), and how far the index has been read (`read_to`) is the newest timestamp read, never
//! past that horizon. The real index lists new versions every few seconds, so it moves on its
//! own; a quiet or stalled index does not move it (fail closed).
//!
//! Bounded: at most `pages_per_round` pages before it pauses, a poll interval once caught up,
//! an exponential backoff on errors, a timeout and a size limit per page, and it stops when the
//! server shuts down. [`FeedHandle`] lets the gateway read the progress without the database
//! and ask for a read now (for a version first seen after the last read).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use modgate_ledger::{FeedEntry, FeedProgress, Sightings};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{watch, Notify};

use super::age::show_time;
use crate::upstream::Upstream;

/// `User-Agent` of the tailer's requests.
const USER_AGENT: &str = concat!(
    "modgate/",
    env!("CARGO_PKG_VERSION"),
    " (module index tailer)"
);

/// How the tailer reads its feed.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// The feed's key in the store (its progress is kept under it): the base URL. Another key
    /// starts reading afresh.
    pub name: String,
    /// The longest cooldown window: reading starts at now − `window`.
    pub window: Duration,
    /// Entries asked per page (`limit=`; the real index serves at most 2000); a page with
    /// fewer is the last one.
    pub page_size: usize,
    /// Pages read in one round before pausing (`round_pause`) and checking for shutdown.
    pub pages_per_round: usize,
    /// Pause between rounds while pages remain.
    pub round_pause: Duration,
    /// Pause between reads once caught up.
    pub poll_interval: Duration,
    /// Shortest time between reads asked for by [`FeedHandle::read_past`], however many ask.
    pub poke_interval: Duration,
    /// Margin for the index's listing lag and clock skew, taken off `read_to`.
    pub settle: Duration,
    /// First backoff after an error (doubling up to `max_backoff`).
    pub min_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Longest a page may take.
    pub page_timeout: Duration,
    /// Largest page body accepted.
    pub max_page_bytes: usize,
    /// How long past the window versions known only from the index are kept (then pruned,
    /// at most `PRUNE_BATCH` a round: they are decided the same without their rows).
    pub retain: Duration,
}

/// Most rows pruned after one round.
const PRUNE_BATCH: usize = 10_000;

impl FeedOptions {
    /// The defaults for a feed under `name` and a longest window of `window`.
    pub fn new(name: impl Into<String>, window: Duration) -> FeedOptions {
        FeedOptions {
            name: name.into(),
            window,
            page_size: 2000,
            pages_per_round: 50,
            round_pause: Duration::from_millis(200),
            poll_interval: Duration::from_secs(60),
            poke_interval: Duration::from_secs(2),
            settle: Duration::from_secs(120),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            page_timeout: Duration::from_secs(60),
            max_page_bytes: 8 << 20,
            retain: Duration::from_secs(30 * 86_400),
        }
    }
}

/// Where pages come from.
#[async_trait]
pub trait FeedSource: Send + Sync {
    /// The body of the page starting at `since` with at most `limit` entries, or why not.
    async fn page(&self, since: &str, limit: usize, max_bytes: usize) -> Result<Vec<u8>, String>;
}

/// The feed read from an upstream (its address, TLS, credential, timeouts): the index's base
/// URL is the upstream's URL (`https://index.golang.org`), pages are `<path>/index?…`.
pub struct UpstreamFeed {
    upstream: Arc<Upstream>,
    connector: Connector,
}

impl UpstreamFeed {
    /// Reads the feed at `upstream`.
    pub fn new(upstream: Arc<Upstream>) -> UpstreamFeed {
        UpstreamFeed {
            upstream,
            connector: Connector::new(None),
        }
    }
}

/// `since` as a query value (RFC 3339 has `:` and maybe `+`).
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl FeedSource for UpstreamFeed {
    async fn page(&self, since: &str, limit: usize, max: usize) -> Result<Vec<u8>, String> {
        let u = &self.upstream;
        if u.url.path.contains('{') {
            return Err(format!(
                "{}: a module index is read at a plain base URL, not a module template",
                u.name
            ));
        }
        let path = format!(
            "{}/index?since={}&limit={limit}",
            u.url.path,
            query_value(since)
        );
        let peer = u.peer().await.map_err(|e| e.to_string())?;
        let mut head =
            RequestHeader::build("GET", path.as_bytes(), None).map_err(|e| e.to_string())?;
        let set = |head: &mut RequestHeader| -> pingora::Result<()> {
            head.insert_header("Host", u.host_header.as_str())?;
            head.insert_header("User-Agent", USER_AGENT)?;
            if let Some(credential) = u.credential() {
                head.insert_header("Authorization", credential)?;
            }
            Ok(())
        };
        set(&mut head).map_err(|e| e.to_string())?;
        let (mut session, _reused) = self
            .connector
            .get_http_session(&*peer)
            .await
            .map_err(|e| e.to_string())?;
        let answer: pingora::Result<(u16, Option<Vec<u8>>)> = async {
            session.write_request_header(Box::new(head)).await?;
            session.finish_request_body().await?;
            session.read_response_header().await?;
            let status = session.response_header().map_or(0, |h| h.status.as_u16());
            let mut body = Vec::new();
            if status == 200 {
                while let Some(chunk) = session.read_response_body().await? {
                    let chunk: Bytes = chunk;
                    if body.len() + chunk.len() > max {
                        return Ok((status, None));
                    }
                    body.extend_from_slice(&chunk);
                }
            }
            Ok((status, Some(body)))
        }
        .await;
        match answer {
            Ok((200, Some(body))) => {
                self.connector
                    .release_http_session(session, &*peer, Some(Duration::from_secs(60)))
                    .await;
                Ok(body)
            }
            Ok((200, None)) => {
                session.shutdown().await;
                Err(format!("a page larger than {max} bytes"))
            }
            Ok((status, _)) => {
                session.shutdown().await;
                Err(format!("{} answered {status}", u.name))
            }
            Err(e) => {
                session.shutdown().await;
                Err(format!("{}: {e}", u.name))
            }
        }
    }
}

/// One parsed page.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    entries: Vec<FeedEntry>,
    /// The last entry's `Timestamp` as written, and its Unix seconds.
    last: Option<(String, i64)>,
    lines: usize,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Line {
    path: String,
    version: String,
    timestamp: String,
}

/// An RFC 3339 timestamp as the index writes it (`2019-04-10T19:08:52.997264Z`), by jiff.
fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse::<jiff::Timestamp>().ok()
}

/// Parses a page of JSON lines; any bad line, or timestamps going back, fails the page.
fn parse_page(body: &[u8]) -> Result<Page, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the page is not UTF-8: {e}"))?;
    let mut page = Page {
        entries: Vec::new(),
        last: None,
        lines: 0,
    };
    let mut previous: Option<jiff::Timestamp> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        page.lines += 1;
        let l: Line = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let t = parse_time(&l.timestamp).ok_or_else(|| {
            format!(
                "line {}: Timestamp {:?} is not RFC 3339",
                i + 1,
                l.timestamp
            )
        })?;
        if previous.is_some_and(|p| p > t) {
            return Err(format!(
                "line {}: Timestamp {} goes back: the feed is not in order",
                i + 1,
                l.timestamp
            ));
        }
        previous = Some(t);
        let bad = |s: &str| s.is_empty() || s.len() > 4096 || s.chars().any(char::is_control);
        if bad(&l.path) || bad(&l.version) {
            return Err(format!(
                "line {}: an empty or malformed Path or Version",
                i + 1
            ));
        }
        page.entries.push(FeedEntry {
            module: l.path,
            version: l.version,
            at: t.as_second(),
        });
        page.last = Some((l.timestamp, t.as_second()));
    }
    Ok(page)
}

/// The progress after `page`, asked at `asked_at`, following `p` (pure); and whether to pause
/// (the last page, or the cursor has reached the settled horizon).
///
/// The **horizon** is `asked_at − settle`: the index may still list versions dated after it
/// (its lag in listing what the proxy fetched, and clock skew), not before. So:
/// - the cursor never moves past the horizon: entries after it are read again next time, with
///   any the index lists late among them;
/// - `read_to` is the newest timestamp read, never past the horizon: only entries prove how
///   far the index is complete (an index that stopped listing would otherwise pass for a quiet
///   one, and every unlisted version for old);
/// - an entry dated after `asked_at + settle` fails the page: a cursor there would skip what is
///   still to come.
fn advance(
    p: &FeedProgress,
    page: &Page,
    page_size: usize,
    asked_at: i64,
    settle: i64,
) -> Result<(FeedProgress, bool), String> {
    let full = page.lines >= page_size;
    let horizon = asked_at.saturating_sub(settle);
    let Some((text, last)) = &page.last else {
        return Ok((p.clone(), true));
    };
    let last = *last;
    if last > asked_at.saturating_add(settle) {
        return Err(format!(
            "an entry dated {text}, after this gateway's clock ({}): clock skew or a broken \
             index; not read past",
            show_time(asked_at)
        ));
    }
    let at_cursor = parse_time(&p.cursor).map_or(p.read_to, |t| t.as_second());
    let (cursor, capped) = if last < horizon {
        (text.clone(), false)
    } else if at_cursor < horizon {
        (show_time(horizon), true)
    } else {
        (p.cursor.clone(), true)
    };
    if full && !capped && cursor == p.cursor {
        return Err(format!(
            "{} or more entries at {cursor}: a page cannot get past them",
            page.lines
        ));
    }
    let progress = FeedProgress {
        window_start: p.window_start,
        cursor,
        read_to: last.min(horizon).max(p.read_to),
    };
    Ok((progress, !full || capped))
}

/// The progress to read from at `now`: the stored one, or a fresh start at the window's start
/// when there is none, the window grew past it, or all it covers is older than the window.
fn start_from(stored: Option<FeedProgress>, now: i64, window: i64) -> (FeedProgress, bool) {
    let start = now.saturating_sub(window);
    match stored {
        Some(p) if p.window_start <= start && p.read_to >= start => (p, false),
        _ => (
            FeedProgress {
                window_start: start,
                cursor: show_time(start),
                read_to: start,
            },
            true,
        ),
    }
}

/// The clock the tailer reads (Unix seconds); injectable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    })
}

/// What the gateway may ask of a running tailer.
#[derive(Clone)]
pub struct FeedHandle {
    progress: watch::Receiver<FeedStatus>,
    poke: Arc<Notify>,
}

/// The tailer's state, as published after every page and error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedStatus {
    /// How far the feed has been read (`None` before the first page, or after a reset until
    /// the first page at the new start).
    pub progress: Option<FeedProgress>,
    /// The last error, cleared by the next stored page.
    pub last_error: Option<String>,
    /// Pages stored since start.
    pub pages: u64,
}

impl FeedHandle {
    /// The current state (no database read).
    pub fn status(&self) -> FeedStatus {
        self.progress.borrow().clone()
    }

    /// How far the feed has been read, for [`super::age`].
    pub fn progress(&self) -> Option<FeedProgress> {
        self.progress.borrow().progress.clone()
    }

    /// Asks for a read now and waits at most `timeout` until the feed has been read past
    /// `seen` (a first sighting); returns the progress then. For a version seen after the last
    /// read: an old one is then served without waiting for the next poll.
    pub async fn read_past(&self, seen: i64, timeout: Duration) -> Option<FeedProgress> {
        let mut rx = self.progress.clone();
        self.poke.notify_one();
        let past = |s: &FeedStatus| s.progress.as_ref().is_some_and(|p| p.read_to > seen);
        let _ = tokio::time::timeout(timeout, rx.wait_for(past)).await;
        let now = rx.borrow().progress.clone();
        now
    }
}

/// The background task; add it as a Pingora background service (see [`Tailer::new`]).
pub struct Tailer {
    store: Arc<Sightings>,
    source: Arc<dyn FeedSource>,
    options: FeedOptions,
    clock: Clock,
    status: watch::Sender<FeedStatus>,
    poke: Arc<Notify>,
}

/// How a round ended.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// The last page was read.
    CaughtUp,
    /// Pages remain.
    More,
}

impl Tailer {
    /// A tailer of `source` into `store`; the handle reads its progress. The progress already
    /// stored is published at once.
    pub fn new(
        store: Arc<Sightings>,
        source: Arc<dyn FeedSource>,
        options: FeedOptions,
        clock: Clock,
    ) -> (Tailer, FeedHandle) {
        let stored = store.feed_progress(&options.name).ok().flatten();
        let (status, rx) = watch::channel(FeedStatus {
            progress: stored,
            ..FeedStatus::default()
        });
        let poke = Arc::new(Notify::new());
        let handle = FeedHandle {
            progress: rx,
            poke: poke.clone(),
        };
        (
            Tailer {
                store,
                source,
                options,
                clock,
                status,
                poke,
            },
            handle,
        )
    }

    fn window_secs(&self) -> i64 {
        i64::try_from(self.options.window.as_secs()).unwrap_or(i64::MAX)
    }

    /// Runs `work` on the store off the async threads.
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Sightings) -> Result<T, modgate_ledger::LedgerError> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| format!("the store task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// Reads up to `pages_per_round` pages.
    async fn round(&self) -> Result<Round, String> {
        let name = self.options.name.clone();
        let now = (self.clock)();
        let stored = {
            let name = name.clone();
            self.on_store(move |s| s.feed_progress(&name)).await?
        };
        let (mut p, fresh) = start_from(stored, now, self.window_secs());
        if fresh {
            log::info!(
                "module index {name}: reading from the window's start {}",
                p.cursor
            );
            let (name, start) = (name.clone(), p.clone());
            self.on_store(move |s| s.reset_feed(&name, &start, now))
                .await?;
            self.status.send_modify(|s| s.progress = Some(p.clone()));
        }
        let settle = i64::try_from(self.options.settle.as_secs()).unwrap_or(i64::MAX);
        for _ in 0..self.options.pages_per_round.max(1) {
            let asked_at = (self.clock)();
            let body = tokio::time::timeout(
                self.options.page_timeout,
                self.source.page(
                    &p.cursor,
                    self.options.page_size,
                    self.options.max_page_bytes,
                ),
            )
            .await
            .map_err(|_| format!("no page within {}s", self.options.page_timeout.as_secs()))?
            .map_err(|e| format!("page since {}: {e}", p.cursor))?;
            let page = parse_page(&body).map_err(|e| format!("page since {}: {e}", p.cursor))?;
            let (next, last) = advance(&p, &page, self.options.page_size, asked_at, settle)
                .map_err(|e| format!("page since {}: {e}", p.cursor))?;
            let (name, stored_next) = (name.clone(), next.clone());
            self.on_store(move |s| {
                s.record_feed_page(&name, &page.entries, &stored_next, asked_at)
            })
            .await?;
            p = next;
            self.status.send_modify(|s| {
                s.progress = Some(p.clone());
                s.last_error = None;
                s.pages += 1;
            });
            if last {
                self.prune(now).await;
                return Ok(Round::CaughtUp);
            }
        }
        Ok(Round::More)
    }

    /// Drops versions known only from the index that are older than the window by `retain`.
    async fn prune(&self, now: i64) {
        let retain = i64::try_from(self.options.retain.as_secs()).unwrap_or(i64::MAX);
        let before = now
            .saturating_sub(self.window_secs())
            .saturating_sub(retain);
        match self
            .on_store(move |s| s.prune_index_only(before, PRUNE_BATCH))
            .await
        {
            Ok(0) => {}
            Ok(n) => log::debug!(
                "module index {}: pruned {n} version(s) listed before {}",
                self.options.name,
                show_time(before)
            ),
            Err(e) => log::warn!("module index {}: pruning failed: {e}", self.options.name),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = self.options.min_backoff;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let outcome = tokio::select! {
                r = self.round() => r,
                _ = shutdown.changed() => return,
            };
            let (wait, pokeable) = match outcome {
                Ok(Round::CaughtUp) => {
                    backoff = self.options.min_backoff;
                    (self.options.poll_interval, true)
                }
                Ok(Round::More) => {
                    backoff = self.options.min_backoff;
                    (self.options.round_pause, false)
                }
                Err(e) => {
                    log::warn!(
                        "module index {}: {e}; progress kept, asking again in {}s",
                        self.options.name,
                        backoff.as_secs_f64()
                    );
                    self.status.send_modify(|s| s.last_error = Some(e));
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.options.max_backoff);
                    // A failing feed is not asked again sooner because requests poke.
                    (wait, false)
                }
            };
            // Pokes come from requests: at most one read per `poke_interval` however many.
            if pokeable {
                tokio::select! {
                    _ = tokio::time::sleep(self.options.poke_interval.min(wait)) => {}
                    _ = shutdown.changed() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.poke.notified(), if pokeable => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Tailer {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}

#[cfg(test)]
mod tests;
