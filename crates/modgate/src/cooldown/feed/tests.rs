//! The tailer against a module index served by the test on 127.0.0.1 (the real feed's JSON
//! lines and `?since=` paging, entries at `since` repeated), and its pure parts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::build::upstream::{gateway_client, GatewayClient};
use crate::cooldown::age::{age, Age, Vouch};
use crate::upstream::UpstreamUrl;

const WINDOW: i64 = 7 * 86_400;
/// 2026-06-01T00:00:00Z.
const NOW: i64 = 1_780_272_000;
const M: &str = "example.com/m";

/// What the test index does when asked for a `since` once.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Status503,
    Garbage,
}

#[derive(Default)]
struct Index {
    /// `(path, version, timestamp text)`, in timestamp order.
    entries: Vec<(String, String, String)>,
    /// Faults served once for a `since`.
    faults: HashMap<String, Fault>,
    /// Every `since` asked, in order.
    asked: Vec<String>,
}

fn stamp(secs: i64, nanos: u32) -> String {
    let t = show_time(secs);
    format!("{}.{nanos:09}Z", t.trim_end_matches('Z'))
}

fn key(ts: &str) -> (i64, i32) {
    let t = parse_time(ts).expect("test timestamp");
    (t.as_second(), t.subsec_nanosecond())
}

fn unescape(q: &str) -> String {
    let mut out = Vec::new();
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf8")
}

/// Serves `index` at `http://127.0.0.1:<port>/index` (one request per connection).
async fn serve(index: Arc<Mutex<Index>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let index = index.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let params: HashMap<String, String> = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), unescape(v)))
                    .collect();
                let (status, body) = {
                    let mut ix = index.lock().expect("index");
                    let since = params.get("since").cloned().unwrap_or_default();
                    ix.asked.push(since.clone());
                    let limit: usize = params
                        .get("limit")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(2000)
                        .min(2000);
                    match (path, ix.faults.remove(&since)) {
                        ("/index", Some(Fault::Status503)) => (503, "unavailable\n".to_string()),
                        ("/index", Some(Fault::Garbage)) => (200, "{\"Path\": \n".to_string()),
                        ("/index", None) => {
                            let from = key(&since);
                            let body: String = ix
                                .entries
                                .iter()
                                .filter(|(_, _, t)| key(t) >= from)
                                .take(limit)
                                .map(|(p, v, t)| {
                                    format!(
                                        "{{\"Path\":\"{p}\",\"Version\":\"{v}\",\"Timestamp\":\"{t}\"}}\n"
                                    )
                                })
                                .collect();
                            (200, body)
                        }
                        _ => (404, "not found\n".to_string()),
                    }
                };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

fn options(page_size: usize) -> FeedOptions {
    let mut o = FeedOptions::new("test-index", Duration::from_secs(WINDOW as u64));
    o.page_size = page_size;
    o.settle = Duration::ZERO;
    o.round_pause = Duration::from_millis(10);
    o.poll_interval = Duration::from_secs(3600);
    o.poke_interval = Duration::from_millis(10);
    o.min_backoff = Duration::from_millis(10);
    o.max_backoff = Duration::from_millis(50);
    o.page_timeout = Duration::from_secs(20);
    o
}

fn source(port: u16) -> Arc<dyn FeedSource> {
    let url = UpstreamUrl::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let upstream = gateway_client(
        "index",
        GatewayClient {
            url,
            ca: None,
            client_cert: None,
            sni: None,
            read_timeout: Duration::from_secs(10),
            max_h2_streams: 1,
            h2_ping_interval: None,
        },
    );
    Arc::new(UpstreamFeed::new(Arc::new(upstream)))
}

/// Seven versions inside the window, two sharing a second.
fn seven() -> Vec<(String, String, String)> {
    let start = NOW - WINDOW;
    (0..7)
        .map(|i: i64| {
            let secs = start + 100 + i - i64::from(i == 4);
            (
                M.to_string(),
                format!("v1.{i}.0"),
                stamp(secs, 250_000_000 + u32::try_from(i).expect("small")),
            )
        })
        .collect()
}

fn fixed(at: Arc<AtomicI64>) -> Clock {
    Arc::new(move || at.load(Ordering::SeqCst))
}

#[tokio::test]
async fn the_tailer_catches_up_without_skipping_a_failing_page() {
    let entries = seven();
    let mut faults = HashMap::new();
    faults.insert(entries[2].2.clone(), Fault::Status503);
    faults.insert(entries[4].2.clone(), Fault::Garbage);
    let index = Arc::new(Mutex::new(Index {
        entries: entries.clone(),
        faults,
        asked: Vec::new(),
    }));
    let port = serve(index.clone()).await;
    let store = Arc::new(Sightings::open_in_memory().expect("store"));
    let clock = Arc::new(AtomicI64::new(NOW));
    let (tailer, handle) = Tailer::new(store.clone(), source(port), options(3), fixed(clock));

    // First round: page 1 (entries 0-2) is stored, page 2 (since entry 2) fails.
    let e = tailer.round().await.expect_err("the second page fails");
    assert!(e.contains("503"), "{e}");
    let p = store.feed_progress("test-index").expect("p").expect("some");
    assert_eq!(p.window_start, NOW - WINDOW);
    assert_eq!(
        p.cursor, entries[2].2,
        "progress stops at the last stored page"
    );
    assert_eq!(p.read_to, key(&entries[2].2).0);
    assert_eq!(handle.progress(), Some(p.clone()));
    assert!(store.get(M, "v1.2.0").expect("get").feed.is_some());
    assert_eq!(store.get(M, "v1.3.0").expect("get").feed, None);

    // Second round: the failed page is asked again (not skipped), then the garbage page
    // fails it without moving the progress.
    let e = tailer.round().await.expect_err("garbage");
    assert!(e.contains("line 1"), "{e}");
    let p2 = store.feed_progress("test-index").expect("p").expect("some");
    assert_eq!(p2.cursor, entries[4].2);

    // Third round: to the end.
    assert_eq!(tailer.round().await.expect("caught up"), Round::CaughtUp);
    let p3 = store.feed_progress("test-index").expect("p").expect("some");
    assert_eq!(
        p3.read_to,
        key(&entries[6].2).0,
        "as far as the newest entry proves, settle 0"
    );
    assert_eq!(p3.cursor, entries[6].2);
    for (_, v, t) in &entries {
        assert_eq!(
            store.get(M, v).expect("get").feed,
            Some(key(t).0),
            "{v} recorded with the index's time"
        );
    }
    let asked = index.lock().expect("index").asked.clone();
    assert_eq!(asked.first(), Some(&show_time(NOW - WINDOW)), "{asked:?}");
    assert_eq!(
        asked.iter().filter(|s| **s == entries[2].2).count(),
        2,
        "the failed page was asked again: {asked:?}"
    );
    assert_eq!(asked.iter().filter(|s| **s == entries[4].2).count(), 2);

    // The decision over what was read: a version the index never listed, seen by the
    // gateway at NOW-5, is new while the index has not been read past that sighting (a quiet
    // index proves nothing), and old once an entry after it has been read.
    store
        .record_seen(M, "v0.9.0", "info", NOW - 5)
        .expect("seen");
    let old = store.get(M, "v0.9.0").expect("get");
    assert!(!age(&old, Vouch::Feed(Some(&p3)), NOW, WINDOW, None).is_old());
    // Nothing is pruned yet: every version read is inside the window.
    assert_eq!(store.list(M).expect("list").len(), 8);
    index.lock().expect("index").entries.push((
        "example.com/other".into(),
        "v0.1.0".into(),
        stamp(NOW - 1, 0),
    ));
    assert_eq!(tailer.round().await.expect("caught up"), Round::CaughtUp);
    let p3 = store.feed_progress("test-index").expect("p").expect("some");
    assert_eq!(p3.read_to, NOW - 1);
    assert!(age(&old, Vouch::Feed(Some(&p3)), NOW, WINDOW, None).is_old());
    let listed = store.get(M, "v1.6.0").expect("get");
    assert!(matches!(
        age(&listed, Vouch::Feed(Some(&p3)), NOW, WINDOW, None),
        Age::New { .. }
    ));
}

#[tokio::test]
async fn the_running_tailer_reads_on_demand_and_stops_on_shutdown() {
    let index = Arc::new(Mutex::new(Index {
        entries: seven(),
        ..Index::default()
    }));
    let port = serve(index.clone()).await;
    let store = Arc::new(Sightings::open_in_memory().expect("store"));
    let clock = Arc::new(AtomicI64::new(NOW));
    let (tailer, handle) = Tailer::new(
        store.clone(),
        source(port),
        options(2),
        fixed(clock.clone()),
    );
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(async move { tailer.run(shutdown).await });

    let newest = key(&seven()[6].2).0;
    let p = handle
        .read_past(newest - 1, Duration::from_secs(30))
        .await
        .expect("caught up");
    assert_eq!(p.read_to, newest);
    // 2 a page and the boundary entry repeated: each full page brings one new entry, and the
    // sixth (entries 5 and 6) reaches the newest (the seventh, entry 6 alone, may be under way).
    assert!(handle.status().pages >= 6, "{:?}", handle.status());

    // A fresh tag, listed after the last read (the gateway saw it at NOW+3). The poll
    // interval is an hour: only the poke reads it.
    index
        .lock()
        .expect("index")
        .entries
        .push((M.into(), "v2.0.0".into(), stamp(NOW + 4, 0)));
    clock.store(NOW + 10, Ordering::SeqCst);
    let p = handle
        .read_past(NOW + 3, Duration::from_secs(30))
        .await
        .expect("read again");
    assert_eq!(p.read_to, NOW + 4);
    assert_eq!(store.get(M, "v2.0.0").expect("get").feed, Some(NOW + 4));

    stop.send(true).expect("stop");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops on shutdown")
        .expect("no panic");
}

#[tokio::test]
async fn an_entry_the_index_lists_late_inside_the_margin_is_still_read() {
    let mut entries = seven();
    entries.push((M.into(), "v1.7.0".into(), stamp(NOW - 10, 0)));
    let index = Arc::new(Mutex::new(Index {
        entries,
        ..Index::default()
    }));
    let port = serve(index.clone()).await;
    let store = Arc::new(Sightings::open_in_memory().expect("store"));
    let mut o = options(3);
    o.settle = Duration::from_secs(60);
    let clock = Arc::new(AtomicI64::new(NOW));
    let (tailer, _handle) = Tailer::new(store.clone(), source(port), o, fixed(clock));
    assert_eq!(tailer.round().await.expect("caught up"), Round::CaughtUp);
    let p = store.feed_progress("test-index").expect("p").expect("some");
    assert_eq!(
        p.cursor,
        show_time(NOW - 60),
        "the cursor waits at the horizon"
    );
    assert_eq!(p.read_to, NOW - 60);
    assert_eq!(store.get(M, "v1.7.0").expect("get").feed, Some(NOW - 10));
    // The index now lists a version dated before the newest one already read (its lag).
    {
        let mut ix = index.lock().expect("index");
        ix.entries
            .insert(7, (M.into(), "v1.6.5".into(), stamp(NOW - 30, 0)));
    }
    assert_eq!(tailer.round().await.expect("caught up"), Round::CaughtUp);
    assert_eq!(store.get(M, "v1.6.5").expect("get").feed, Some(NOW - 30));
}

#[tokio::test]
async fn versions_known_only_from_the_index_are_pruned_once_past_the_window() {
    let index = Arc::new(Mutex::new(Index {
        entries: seven(),
        ..Index::default()
    }));
    let port = serve(index).await;
    let store = Arc::new(Sightings::open_in_memory().expect("store"));
    let mut o = options(3);
    o.retain = Duration::from_secs(86_400);
    let clock = Arc::new(AtomicI64::new(NOW));
    let (tailer, _handle) = Tailer::new(store.clone(), source(port), o, fixed(clock.clone()));
    assert_eq!(tailer.round().await.expect("caught up"), Round::CaughtUp);
    store.record_seen(M, "v1.3.0", "zip", NOW).expect("seen");
    assert_eq!(store.list(M).expect("list").len(), 7);
    // A window and a day (`retain`) later, only what the gateway saw itself is kept; and the
    // reading starts again at the new window's start.
    clock.store(NOW + WINDOW + 86_400, Ordering::SeqCst);
    assert_eq!(tailer.round().await.expect("caught up"), Round::CaughtUp);
    let left: Vec<String> = store
        .list(M)
        .expect("list")
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(left, ["v1.3.0"]);
    let p = store.feed_progress("test-index").expect("p").expect("some");
    assert_eq!(p.window_start, NOW + 86_400);
}

/// The tailer is what the server adds as a Pingora background service.
#[test]
fn the_tailer_is_a_pingora_background_service() {
    let store = Arc::new(Sightings::open_in_memory().expect("store"));
    let (tailer, handle) = Tailer::new(store, source(9), options(3), system_clock());
    let service = pingora::services::background::background_service("modgate module index", tailer);
    assert_eq!(service.task().options.name, "test-index");
    assert_eq!(handle.status(), FeedStatus::default());
}

#[test]
fn pages_are_parsed_strictly() {
    let ok = br#"{"Path":"a.example/m","Version":"v1.0.0","Timestamp":"2026-05-25T00:00:01.5Z"}
{"Path":"b.example/m","Version":"v0.1.0","Timestamp":"2026-05-25T00:00:01.6Z"}
"#;
    let page = parse_page(ok).expect("ok");
    assert_eq!(page.lines, 2);
    assert_eq!(page.entries[1].module, "b.example/m");
    assert_eq!(
        page.last.as_ref().map(|l| l.0.as_str()),
        Some("2026-05-25T00:00:01.6Z")
    );
    let back = br#"{"Path":"a.example/m","Version":"v1.0.0","Timestamp":"2026-05-25T00:00:02Z"}
{"Path":"b.example/m","Version":"v0.1.0","Timestamp":"2026-05-25T00:00:01Z"}
"#;
    assert!(parse_page(back).expect_err("order").contains("goes back"));
    let bad_time = br#"{"Path":"a.example/m","Version":"v1.0.0","Timestamp":"yesterday"}"#;
    assert!(parse_page(bad_time).expect_err("time").contains("RFC 3339"));
    let empty_path = br#"{"Path":"","Version":"v1.0.0","Timestamp":"2026-05-25T00:00:02Z"}"#;
    assert!(parse_page(empty_path).is_err());
    assert_eq!(parse_page(b"").expect("empty").lines, 0);
}

#[test]
fn progress_advances_only_as_far_as_the_page_proves() {
    let t = show_time;
    let p = FeedProgress {
        window_start: 100,
        cursor: t(100),
        read_to: 100,
    };
    let page = |lines: usize, last: Option<i64>| Page {
        entries: Vec::new(),
        last: last.map(|a| (t(a), a)),
        lines,
    };
    // Asked at 900 with a margin of 60: everything before 840 is final.
    let step = |p: &FeedProgress, pg: Page| advance(p, &pg, 3, 900, 60);
    // A full page well before that: up to its last timestamp, more to come.
    let (next, last) = step(&p, page(3, Some(500))).expect("ok");
    assert_eq!(
        (next.cursor.clone(), next.read_to, last),
        (t(500), 500, false)
    );
    // The last page: up to its newest entry too (a quiet or stalled index proves nothing
    // after it).
    let (next, last) = step(&p, page(1, Some(500))).expect("ok");
    assert_eq!(
        (next.cursor.clone(), next.read_to, last),
        (t(500), 500, true)
    );
    // An empty last page keeps the cursor and what was proven.
    let (next, last) = step(&p, page(0, None)).expect("ok");
    assert_eq!(
        (next.cursor.clone(), next.read_to, last),
        (t(100), 100, true)
    );
    // Entries inside the margin are read again next time (the index may still list others
    // dated before them): the cursor stops at 840, and a full page there is no error.
    for lines in [1, 3] {
        let (next, last) = step(&p, page(lines, Some(870))).expect("ok");
        assert_eq!(
            (next.cursor.clone(), next.read_to, last),
            (t(840), 840, true)
        );
        let (again, last) = step(&next, page(lines, Some(870))).expect("ok");
        assert_eq!((again, last), (next, true), "nothing moves, nothing fails");
    }
    // An entry dated after the gateway's clock (beyond the margin) fails the page.
    let e = step(&p, page(1, Some(961))).expect_err("future");
    assert!(e.contains("after this gateway's clock"), "{e}");
    // Never backwards.
    let ahead = FeedProgress {
        read_to: 600,
        ..p.clone()
    };
    assert_eq!(step(&ahead, page(3, Some(500))).expect("ok").0.read_to, 600);
    // A full page that cannot move the cursor (more entries at one instant than a page
    // holds) is an error, not a skip.
    assert!(step(&p, page(3, Some(100))).is_err());
}

#[test]
fn reading_starts_at_the_window_and_restarts_when_it_moved() {
    let (p, fresh) = start_from(None, 1000, 300);
    assert!(fresh);
    assert_eq!((p.window_start, p.read_to), (700, 700));
    assert_eq!(p.cursor, show_time(700));
    let stored = FeedProgress {
        window_start: 650,
        cursor: "x".into(),
        read_to: 900,
    };
    assert_eq!(
        start_from(Some(stored.clone()), 1000, 300),
        (stored.clone(), false)
    );
    // The window grew: read again from its new start.
    let (p, fresh) = start_from(Some(stored.clone()), 1000, 400);
    assert!(fresh);
    assert_eq!(p.window_start, 600);
    // Everything read is older than the window (a long outage): start at the window.
    let (p, fresh) = start_from(Some(stored), 2000, 300);
    assert!(fresh);
    assert_eq!(p.window_start, 1700);
}
