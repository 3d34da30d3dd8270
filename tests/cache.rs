//! End to end for the response cache and the integrity ledger: the real modgate binary with a
//! `cache:` section, fixture upstreams on 127.0.0.1 that count what reaches them, and a TCP
//! relay in front of them that can be killed outright or made to stall mid-body.
//!
//! - A miss, then hits for `.info` / `.mod` / `.zip` / `list` / `@latest` with identical bytes
//!   and one upstream request each; HEAD always goes upstream and never fills the cache.
//! - Restart: a gateway stopped with SIGTERM and started again on the same directory answers
//!   from its cache; the ledger kept the first-seen hashes (checked with an independent `h1:`).
//! - `kill -9` while a large zip is being fetched and checked: the client got no byte of it,
//!   nothing is in the cache, and the restarted gateway fetches it afresh, complete.
//! - A 256 KiB budget evicts the least recently used zips, and the LRU order survives a restart.
//! - 500 concurrent clients for one uncached zip: one upstream request, 500 identical bodies.
//! - stale-if-error: an expired `list` / `@latest` is served stale when the upstream answers
//!   503, times out or is killed; an exact version is answered from the cache with the upstream
//!   dead; a version never cached is a 502.
//! - stale-while-revalidate: an expired `list` is answered at once and refreshed once in the
//!   background, for HTTP/1.1 and HTTP/2 requests alike.
//! - 404 / 410 answers are cached for the route's `not_found` TTL and asked again after it.
//! - Re-tag: an upstream that swaps a zip's bytes (different length: refused at its header;
//!   same length: once hashed) is a clean 502 with the reason, for the requester and 50
//!   coalesced waiters, and `go` prints it; quarantined; the ledger keeps the original; a
//!   gateway that cached the original keeps serving it.
//! - Verified before served: a truncated upstream body is never served or stored and is
//!   fetched again by the next request; a miss whose check waits seconds for the ledger's lock
//!   does not hold up hits on the same worker thread (one thread, one scheduler per thread).
//! - A hot hit (a fresh memory-tier object answered without Pingora's cache phase) sends the
//!   same head and body as a hit read from disk through Pingora; HEAD, ranges and conditions
//!   take the normal path.
//! - The key includes the route: a module moved from the public route to a private one gets
//!   its own entries from its own upstream, and the public entries stay as they were.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use modgate_ledger::{Artifact, Ledger};
use modgate_testkit::{
    free_addr, get, raw_upstream, request, Behaviour, FixtureProxy, Gateway, GoEnv, ModuleVersion,
    Response, SumDb,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Configuration and gateways
// ---------------------------------------------------------------------------------------------

/// The `cache:` section of a test gateway.
#[derive(Clone)]
struct CacheSpec {
    dir: PathBuf,
    max_size: &'static str,
    /// A ledger outside the cache directory (default `<dir>/ledger.sqlite`).
    ledger: Option<PathBuf>,
}

impl CacheSpec {
    fn new(dir: &Path) -> CacheSpec {
        CacheSpec {
            dir: dir.to_path_buf(),
            max_size: "64MiB",
            ledger: None,
        }
    }

    fn ledger_path(&self) -> PathBuf {
        self.ledger
            .clone()
            .unwrap_or_else(|| self.dir.join("ledger.sqlite"))
    }

    fn yaml(&self) -> String {
        let ledger = self
            .ledger
            .as_ref()
            .map(|l| format!("  ledger: \"{}\"\n", l.display()))
            .unwrap_or_default();
        format!(
            "cache:\n  dir: \"{dir}\"\n  max_size: {max}\n  max_object_size: 600MiB\n  \
             memory: 1MiB\n  memory_object_max: 256KiB\n  lock_timeout: 30s\n  \
             ttl: {{ mutable: 60s, not_found: 30s, stale_if_error: 24h, sumdb_latest: 30s }}\n  \
             fsync: true\n{ledger}",
            dir = self.dir.display(),
            max = self.max_size,
        )
    }
}

/// One upstream `up` and one catch-all route `all`; `route_cache` is the route's `cache:`
/// value (or empty for the defaults).
fn one_route(upstream: &str, route_cache: &str) -> String {
    let cache = if route_cache.is_empty() {
        String::new()
    } else {
        format!(", cache: {route_cache}")
    };
    format!(
        "upstreams:\n  up: {{ url: \"{upstream}\", read_timeout: 1s }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up]{cache} }}\n"
    )
}

/// A running gateway with a plain listener (metrics on) and an audit log.
struct Gw {
    gateway: Gateway,
    addr: SocketAddr,
}

impl Gw {
    /// `body` holds the `upstreams:` and `routes:` sections (and anything else).
    fn start(body: &str, cache: &CacheSpec) -> Gw {
        let addr = free_addr();
        let config = format!(
            "listeners:\n  - {{ name: plain, address: \"{addr}\", metrics: true, debug_headers: true }}\n{body}{cache}\
             audit: {{ output: audit.jsonl }}\n",
            cache = cache.yaml()
        );
        Gw {
            gateway: Gateway::start(&config, addr),
            addr,
        }
    }

    fn get(&self, path: &str) -> Response {
        get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.gateway.log()))
    }

    fn head(&self, path: &str) -> Response {
        request(self.addr, "HEAD", path, &[])
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}\n{}", self.gateway.log()))
    }

    /// GET that must be a 200 with exactly `body`; returns the cache outcome header.
    fn expect_body(&self, path: &str, body: &[u8]) -> String {
        let r = self.get(path);
        assert_eq!(
            r.status,
            200,
            "GET {path}: {}\n{}",
            r.text(),
            self.gateway.log()
        );
        assert!(
            r.body == body,
            "GET {path}: {} bytes, not the expected {} bytes",
            r.body.len(),
            body.len()
        );
        cache_header(&r)
    }

    /// The value of one Prometheus series (`name{labels}` exactly as rendered), 0 if absent.
    fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Waits for at least `n` audit lines and returns them all.
    fn audit(&self, n: usize) -> Vec<serde_json::Value> {
        let path = self.gateway.dir.path().join("audit.jsonl");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} audit lines:\n{}",
                lines.len(),
                self.gateway.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the process must exit cleanly.
    fn stop(mut self) {
        self.gateway.signal("TERM");
        let code = self.gateway.wait_exit(Duration::from_secs(20));
        assert_eq!(code, Some(0), "exit after SIGTERM:\n{}", self.gateway.log());
    }
}

fn cache_header(r: &Response) -> String {
    r.header("x-modgate-cache").unwrap_or("<none>").to_string()
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn module(path: &str, version: &str) -> ModuleVersion {
    ModuleVersion::new(path, version).expect("fixture module")
}

/// `n` deterministic, incompressible-looking bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn zip_of(m: &ModuleVersion) -> Vec<u8> {
    m.zip().expect("zip")
}

fn at(module: &str, version: &str, ext: &str) -> String {
    format!("/{module}/@v/{version}.{ext}")
}

/// GET requests the fixture received for exactly `path`.
fn gets(f: &FixtureProxy, path: &str) -> usize {
    f.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

fn heads(f: &FixtureProxy, path: &str) -> usize {
    f.requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.path == path)
        .count()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The cache directory, read the way its format is documented (modgate-cache `format`)
// ---------------------------------------------------------------------------------------------

/// Every file under `<dir>/objects`.
fn object_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("objects"), &mut out);
    out
}

/// The primary key text of every committed object (`<hash>.meta`: after the fixed 69-byte
/// header, a u16-prefixed user tag, then the u32-prefixed primary key).
fn cached_keys(dir: &Path) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for f in object_files(dir) {
        if f.extension().and_then(|e| e.to_str()) != Some("meta") {
            continue;
        }
        let Ok(data) = std::fs::read(&f) else {
            continue; // removed while we looked
        };
        let key = (|| {
            let tag_len = u16::from_le_bytes(data.get(69..71)?.try_into().ok()?) as usize;
            let at = 71 + tag_len;
            let key_len = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize;
            let key = data.get(at + 4..at + 4 + key_len)?;
            Some(String::from_utf8_lossy(key).to_string())
        })();
        keys.insert(key.unwrap_or_else(|| format!("<unreadable {}>", f.display())));
    }
    keys
}

/// Waits until the committed keys satisfy `ok` (commits and evictions finish asynchronously,
/// shortly after the client has its answer).
fn wait_keys(dir: &Path, what: &str, ok: impl Fn(&BTreeSet<String>) -> bool) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = cached_keys(dir);
        if ok(&keys) {
            return keys;
        }
        assert!(Instant::now() < deadline, "{what}; cached keys: {keys:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn key(route: &str, path: &str) -> String {
    format!("route:{route}|{path}")
}

// ---------------------------------------------------------------------------------------------
// A TCP relay in front of a fixture: killed outright, or stalling after N response bytes
// ---------------------------------------------------------------------------------------------

/// Forwards every connection to `target`. It runs on its own runtime and thread, so `kill`
/// closes every socket it holds before it returns: new connections are refused, pooled ones
/// are reset.
struct Relay {
    addr: SocketAddr,
    /// Response bytes passed on so far, all connections together.
    passed: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// With `stall_after`, each connection passes at most that many response bytes and then
    /// holds the connection open without sending anything more.
    fn start(target: SocketAddr, stall_after: Option<usize>) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let passed = Arc::new(AtomicUsize::new(0));
        let counted = passed.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("relay runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("relay listener");
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(relay_connection(
                            client,
                            target,
                            stall_after,
                            counted.clone(),
                        ));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task and so closes its sockets.
            drop(rt);
        });
        Relay {
            addr,
            passed,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn relay_connection(
    client: tokio::net::TcpStream,
    target: SocketAddr,
    stall_after: Option<usize>,
    passed: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(upstream) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let to_upstream = async {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
    };
    let to_client = async {
        let mut left = stall_after.unwrap_or(usize::MAX);
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let take = n.min(left);
            if cw.write_all(&buf[..take]).await.is_err() {
                return;
            }
            passed.fetch_add(take, Ordering::SeqCst);
            left -= take;
            if left == 0 {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = to_upstream => {}
        _ = to_client => {}
    }
}

/// A raw GET read until the server closes or resets the connection: the bytes received, and
/// `received` updated as they arrive.
fn raw_get_counting(addr: SocketAddr, path: &str, received: &AtomicUsize) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return data,
            Ok(n) => {
                data.extend_from_slice(&buf[..n]);
                received.store(data.len(), Ordering::SeqCst);
            }
        }
    }
}

/// Splits a raw HTTP/1.1 response: status, content-length, body bytes received.
fn split_raw(data: &[u8]) -> (u16, Option<usize>, &[u8]) {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {} bytes", data.len()));
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    (status, length, &data[end + 4..])
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const HITS: &str = "example.com/hits";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_miss_then_hits_with_identical_bytes_and_one_upstream_request() {
    miss_then_hits("").await;
}

/// The same with the work-stealing scheduler (the default is one scheduler per worker
/// thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_miss_then_hits_with_the_work_stealing_scheduler() {
    miss_then_hits("server:\n  work_stealing: true\n").await;
}

async fn miss_then_hits(server: &str) {
    let v1 = module(HITS, "v1.0.0");
    let v11 = module(HITS, "v1.1.0");
    let fixture = FixtureProxy::start(&[v1.clone(), v11.clone()])
        .await
        .expect("fixture");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let gw = Gw::start(
        &format!("{server}{}", one_route(&fixture.url(), "")),
        &CacheSpec::new(cache_dir.path()),
    );

    let list = b"v1.0.0\nv1.1.0\n".to_vec();
    let artifacts: Vec<(String, Vec<u8>)> = vec![
        (at(HITS, "v1.0.0", "info"), v1.info()),
        (at(HITS, "v1.0.0", "mod"), v1.mod_file()),
        (at(HITS, "v1.0.0", "zip"), zip_of(&v1)),
        (format!("/{HITS}/@v/list"), list),
        (format!("/{HITS}/@latest"), v11.info()),
    ];
    for (path, body) in &artifacts {
        assert_eq!(gw.expect_body(path, body), "miss", "first GET {path}");
        assert_eq!(gets(&fixture, path), 1, "{path}");
    }
    for round in 0..2 {
        for (path, body) in &artifacts {
            let r = gw.get(path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert!(
                r.body == *body,
                "{path}: cached bytes differ from the upstream's"
            );
            assert_eq!(cache_header(&r), "hit", "GET {path} (round {round})");
            assert_eq!(
                r.header("x-modgate-upstream"),
                None,
                "a hit asks no upstream"
            );
            assert_eq!(gets(&fixture, path), 1, "{path} went upstream again");
        }
    }
    assert_eq!(
        gw.metric(r#"modgate_cache_requests_total{outcome="miss"}"#),
        5.0
    );
    assert_eq!(
        gw.metric(r#"modgate_cache_requests_total{outcome="hit"}"#),
        10.0
    );

    // HEAD is never answered from the cache and never fills it.
    let zip = at(HITS, "v1.0.0", "zip");
    for n in 1..=2 {
        let r = gw.head(&zip);
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(heads(&fixture, &zip), n, "HEAD goes upstream each time");
    }
    let zip11 = at(HITS, "v1.1.0", "zip");
    assert_eq!(gw.head(&zip11).status, 200);
    assert_eq!(heads(&fixture, &zip11), 1);
    assert_eq!(gw.expect_body(&zip11, &zip_of(&v11)), "miss");
    assert_eq!(gw.expect_body(&zip11, &zip_of(&v11)), "hit");
    assert_eq!(gets(&fixture, &zip11), 1);

    // The audit records carry the cache outcome.
    let lines = gw.audit(5 + 10 + 3 + 2);
    // A record is written after its response is sent, so the next request's record can come
    // first (seen with the work-stealing scheduler): the outcomes are compared as a multiset.
    let outcome = |path: &str| -> Vec<String> {
        let mut seen: Vec<String> = lines
            .iter()
            .filter(|l| l["path"] == path && l["method"] == "GET")
            .map(|l| l["cache"].as_str().unwrap_or("").to_string())
            .collect();
        seen.sort();
        seen
    };
    assert_eq!(outcome(&zip), ["hit", "hit", "miss"], "{lines:#?}");
    assert_eq!(outcome(&zip11), ["hit", "miss"], "{lines:#?}");
}

const HOTPATH: &str = "example.com/hotpath";

/// A raw HTTP/1.1 GET on a fresh connection: the response head's lines (the status line first,
/// in the order sent) and the body.
fn raw_get(addr: SocketAddr, path: &str) -> (Vec<String>, Vec<u8>) {
    let received = AtomicUsize::new(0);
    let data = raw_get_counting(addr, path, &received);
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no response head in {} bytes", data.len()));
    let head = String::from_utf8_lossy(&data[..end])
        .split("\r\n")
        .map(str::to_string)
        .collect();
    (head, data[end + 4..].to_vec())
}

/// The head without its `Age` and `Date` lines (the values that may differ between two hits a
/// second apart), and the `Age` value; it must have a `Date`.
fn without_age(head: &[String]) -> (Vec<String>, Option<u64>) {
    let mut age = None;
    let mut date = false;
    let rest = head
        .iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("age:") {
                age = v.trim().parse().ok();
                return false;
            }
            date |= l.starts_with("date:");
            !l.starts_with("date:")
        })
        .cloned()
        .collect();
    assert!(date, "no Date in {head:?}");
    (rest, age)
}

/// A module cached by a gateway that was then stopped: the fixture serving `m`, the cache
/// directory, its spec, the gateway config body, and the artifacts (`.info`, `.mod`, `.zip`,
/// `list`, then `extra`) with their bytes, each fetched once (a miss) before the stop.
struct Cached {
    fixture: FixtureProxy,
    _dir: tempfile::TempDir,
    spec: CacheSpec,
    body: String,
    artifacts: Vec<(String, Vec<u8>)>,
}

async fn cached_then_stopped(m: &ModuleVersion, extra: Vec<(String, Vec<u8>)>) -> Cached {
    let fixture = FixtureProxy::start(std::slice::from_ref(m))
        .await
        .expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = CacheSpec::new(dir.path());
    let body = one_route(&fixture.url(), "");
    let (path, version) = (m.path.as_str(), m.version.as_str());
    let mut artifacts: Vec<(String, Vec<u8>)> = vec![
        (at(path, version, "info"), m.info()),
        (at(path, version, "mod"), m.mod_file()),
        (at(path, version, "zip"), zip_of(m)),
        (
            format!("/{path}/@v/list"),
            format!("{version}\n").into_bytes(),
        ),
    ];
    artifacts.extend(extra);
    let gw = Gw::start(&body, &spec);
    for (path, bytes) in &artifacts {
        assert_eq!(gw.expect_body(path, bytes), "miss", "{path}");
    }
    gw.stop();
    Cached {
        fixture,
        _dir: dir,
        spec,
        body,
        artifacts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_hit_answers_exactly_what_the_disk_path_answers() {
    let v1 = module(HOTPATH, "v1.0.0").file("h.go", b"package hotpath\n");
    let latest = vec![(format!("/{HOTPATH}/@latest"), v1.info())];
    let Cached {
        fixture,
        _dir,
        spec,
        body,
        artifacts,
    } = cached_then_stopped(&v1, latest).await;

    // After a restart the memory tier is empty: the first hit is read from disk through
    // Pingora's cache phase (and fills the memory tier), the second is a hot hit.
    let gw = Gw::start(&body, &spec);
    let hot = "modgate_cache_hot_hits_total";
    for (n, (path, bytes)) in artifacts.iter().enumerate() {
        let (disk_head, disk_body) = raw_get(gw.addr, path);
        assert_eq!(
            gw.metric(hot),
            n as f64,
            "{path}: the first hit is not a hot one"
        );
        let (hot_head, hot_body) = raw_get(gw.addr, path);
        assert_eq!(
            gw.metric(hot),
            (n + 1) as f64,
            "{path}: the second hit is a hot one"
        );
        assert_eq!(&disk_body, bytes, "{path}: disk-path body");
        assert_eq!(&hot_body, bytes, "{path}: hot-hit body");
        let (disk_rest, disk_age) = without_age(&disk_head);
        let (hot_rest, hot_age) = without_age(&hot_head);
        assert_eq!(disk_rest, hot_rest, "{path}: heads differ");
        assert!(
            disk_age.is_some() && hot_age.is_some(),
            "{path}: Age on both"
        );
        let has = |name: &str| {
            hot_rest
                .iter()
                .any(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
        };
        assert!(
            has("content-length") && has("accept-ranges"),
            "{hot_rest:?}"
        );
        assert!(
            hot_rest.contains(&"X-Modgate-Cache: hit".to_string()),
            "{hot_rest:?}"
        );
    }

    // What a hot hit would answer differently goes the normal way: HEAD (to the upstream), a
    // range (206 from the cache), a condition (answered by Pingora's hit path).
    let info = &artifacts[0].0;
    let before = gw.metric(hot);
    let heads_before = heads(&fixture, info);
    assert_eq!(gw.head(info).status, 200);
    assert_eq!(heads(&fixture, info), heads_before + 1);
    let ranged = request(gw.addr, "GET", info, &[("Range", "bytes=0-3")]).expect("range");
    assert_eq!(ranged.status, 206, "{}", ranged.text());
    assert_eq!(ranged.body, artifacts[0].1[..4].to_vec());
    assert_eq!(gw.metric(hot), before, "HEAD and Range are no hot hits");
    let cond = request(gw.addr, "GET", info, &[("If-None-Match", "\"other\"")]).expect("GET");
    assert_eq!(cond.status, 200);
    assert_eq!(cond.body, artifacts[0].1);
    assert_eq!(gw.metric(hot), before, "a conditional GET is no hot hit");
    assert_eq!(
        fixture.request_count(),
        artifacts.len() + 1,
        "all hits but the HEAD"
    );

    // Every hit, hot or not, is audited as a hit.
    let lines = gw.audit(2 * artifacts.len() + 3);
    let hits = lines
        .iter()
        .filter(|l| l["method"] == "GET" && l["cache"] == "hit")
        .count();
    assert_eq!(hits, 2 * artifacts.len() + 2, "{lines:#?}");
    gw.stop();
}

const KEPT: &str = "example.com/kept";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_gateway_answers_from_its_cache_and_ledger() {
    let m = module(KEPT, "v1.0.0").file("k.go", b"package kept\n");
    let zip = zip_of(&m);
    let Cached {
        fixture,
        _dir,
        spec,
        body,
        artifacts,
    } = cached_then_stopped(&m, Vec::new()).await;
    let upstream_before = fixture.request_count();
    assert_eq!(upstream_before, artifacts.len());

    let gw = Gw::start(&body, &spec);
    for (path, bytes) in &artifacts {
        assert_eq!(gw.expect_body(path, bytes), "hit", "{path} after restart");
    }
    assert_eq!(
        fixture.request_count(),
        upstream_before,
        "the restarted gateway asked the upstream: {:?}",
        fixture.requests()
    );

    // The ledger holds the first-seen hashes; the h1: values agree with the testkit's own
    // implementation of Go's dirhash.
    let ledger = Ledger::open(&spec.ledger_path()).expect("ledger");
    let z = ledger
        .get(KEPT, "v1.0.0", Artifact::Zip)
        .expect("ledger get")
        .expect("zip recorded");
    assert_eq!(z.sha256, sha256(&zip));
    assert_eq!(z.size, zip.len() as u64);
    assert_eq!(z.h1.as_deref(), Some(SumDb::zip_h1(&zip).as_str()));
    assert_eq!(z.source, "up");
    let md = ledger
        .get(KEPT, "v1.0.0", Artifact::Mod)
        .expect("ledger get")
        .expect("mod recorded");
    assert_eq!(md.sha256, sha256(&m.mod_file()));
    assert_eq!(
        md.h1.as_deref(),
        Some(SumDb::mod_h1(&m.mod_file()).as_str())
    );
    let info = ledger
        .get(KEPT, "v1.0.0", Artifact::Info)
        .expect("ledger get")
        .expect("info recorded");
    assert_eq!(info.sha256, sha256(&m.info()));
    assert_eq!(info.h1, None);
    assert_eq!(
        ledger.count().expect("count"),
        3,
        "list is not in the ledger"
    );
    gw.stop();
}

const CRASH: &str = "example.com/crash";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_write_leaves_no_torn_object() {
    let m = module(CRASH, "v1.0.0").file("blob.bin", &noise(4 << 20, 3));
    let zip = zip_of(&m);
    let path = at(CRASH, "v1.0.0", "zip");
    let fixture = FixtureProxy::start(std::slice::from_ref(&m))
        .await
        .expect("fixture");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let spec = CacheSpec::new(cache_dir.path());

    // The first gateway gets 1 MiB of the response and then nothing more: it is killed while
    // it holds that part to check it, with a client waiting for the zip.
    let relay = Relay::start(fixture.addr(), Some(1 << 20));
    let mut gw = Gw::start(&one_route(&relay.url(), ""), &spec);
    let received = Arc::new(AtomicUsize::new(0));
    let client = {
        let (addr, path, received) = (gw.addr, path.clone(), received.clone());
        std::thread::spawn(move || raw_get_counting(addr, &path, &received))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.passed.load(Ordering::SeqCst) < 1 << 20 {
        assert!(
            Instant::now() < deadline,
            "the upstream sent {} bytes:\n{}",
            relay.passed.load(Ordering::SeqCst),
            gw.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Verified before served: not a byte of the unchecked zip reached the client, and nothing
    // of it is in the cache's directory (held in an unnamed file).
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "unchecked bytes were sent"
    );
    assert!(
        object_files(cache_dir.path()).is_empty(),
        "{:?}",
        object_files(cache_dir.path())
    );
    gw.gateway.signal("KILL");
    assert!(gw.gateway.wait_exit(Duration::from_secs(10)).is_some());
    let data = client.join().expect("client thread");
    assert!(
        data.is_empty(),
        "the client got {} bytes: {:?}",
        data.len(),
        String::from_utf8_lossy(&data[..data.len().min(200)])
    );
    assert!(
        !cached_keys(cache_dir.path()).contains(&key("all", &path)),
        "the interrupted fetch was committed"
    );
    assert_eq!(gets(&fixture, &path), 1);
    drop(relay);

    // Restarted (now straight to the fixture) on the same directory: the leftovers are gone
    // and the zip is fetched afresh, complete.
    // (The clean-up is the background reconciliation's: wait for it.)
    let gw = Gw::start(&one_route(&fixture.url(), ""), &spec);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leftovers: Vec<PathBuf> = object_files(cache_dir.path())
            .into_iter()
            .filter(|f| f.to_string_lossy().ends_with(".tmp"))
            .collect();
        if leftovers.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "temp files survived: {leftovers:?}\n{}",
            gw.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gw.expect_body(&path, &zip), "miss");
    assert_eq!(gets(&fixture, &path), 2, "a fresh upstream fetch");
    wait_keys(cache_dir.path(), "the zip is committed", |k| {
        k.contains(&key("all", &path))
    });
    assert_eq!(gw.expect_body(&path, &zip), "hit");
    assert_eq!(gets(&fixture, &path), 2);
    let ledger = Ledger::open(&spec.ledger_path()).expect("ledger");
    let e = ledger
        .get(CRASH, "v1.0.0", Artifact::Zip)
        .expect("get")
        .expect("recorded");
    assert_eq!(
        (e.sha256.as_str(), e.size),
        (sha256(&zip).as_str(), zip.len() as u64)
    );
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_budget_evicts_the_least_recently_used_and_the_order_survives_a_restart() {
    let modules: Vec<ModuleVersion> = (1..=5)
        .map(|i| {
            module(&format!("example.com/evict{i}"), "v1.0.0").file("blob.bin", &noise(60 << 10, i))
        })
        .collect();
    let zips: Vec<Vec<u8>> = modules.iter().map(zip_of).collect();
    let paths: Vec<String> = (1..=5)
        .map(|i| at(&format!("example.com/evict{i}"), "v1.0.0", "zip"))
        .collect();
    let keys: Vec<String> = paths.iter().map(|p| key("all", p)).collect();
    let fixture = FixtureProxy::start(&modules).await.expect("fixture");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let mut spec = CacheSpec::new(cache_dir.path());
    spec.max_size = "256KiB";
    let body = one_route(&fixture.url(), "");
    let set =
        |idx: &[usize]| -> BTreeSet<String> { idx.iter().map(|&i| keys[i].clone()).collect() };
    let dir = cache_dir.path();

    let gw = Gw::start(&body, &spec);
    // Four ~60 KiB zips fit in 256 KiB, five do not: the fifth evicts the first.
    for i in 0..5 {
        assert_eq!(gw.expect_body(&paths[i], &zips[i]), "miss");
        if i < 4 {
            wait_keys(dir, "committed", |k| k.contains(&keys[i]));
        }
    }
    wait_keys(dir, "zip 1 evicted", |k| *k == set(&[1, 2, 3, 4]));
    assert_eq!(gw.expect_body(&paths[4], &zips[4]), "hit");
    assert_eq!(gw.expect_body(&paths[0], &zips[0]), "miss", "zip 1 again");
    assert_eq!(gets(&fixture, &paths[0]), 2, "zip 1 was fetched again");
    // LRU: 2 3 4 5 1 → 2 goes.
    wait_keys(dir, "zip 2 evicted", |k| *k == set(&[0, 2, 3, 4]));
    // A hit on 3 makes it the most recent: LRU order 4 5 1 3.
    assert_eq!(gw.expect_body(&paths[2], &zips[2]), "hit");
    gw.stop();

    let gw = Gw::start(&body, &spec);
    assert_eq!(cached_keys(dir), set(&[0, 2, 3, 4]), "after restart");
    // Zip 2 comes back and evicts the least recently used one before the restart: 4 (not 3,
    // the oldest write, which was read last).
    assert_eq!(gw.expect_body(&paths[1], &zips[1]), "miss");
    wait_keys(dir, "zip 4 evicted after the restart", |k| {
        *k == set(&[0, 1, 2, 4])
    });
    for i in [0, 1, 2, 4] {
        assert_eq!(gw.expect_body(&paths[i], &zips[i]), "hit", "zip {}", i + 1);
    }
    let before = gets(&fixture, &paths[3]);
    assert_eq!(gw.expect_body(&paths[3], &zips[3]), "miss", "zip 4");
    assert_eq!(gets(&fixture, &paths[3]), before + 1);
    // The hits made 1 the least recently used.
    wait_keys(dir, "zip 1 evicted", |k| *k == set(&[1, 2, 3, 4]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used: u64 = object_files(dir)
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        if used <= 256 << 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{used} bytes on disk over a 256 KiB budget: {:?}",
            object_files(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.stop();
}

const HOT: &str = "example.com/hot";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_misses_make_one_upstream_request() {
    let m = module(HOT, "v1.0.0").file("blob.bin", &noise(64 << 10, 7));
    let zip = zip_of(&m);
    let path = at(HOT, "v1.0.0", "zip");
    let fixture = FixtureProxy::start(std::slice::from_ref(&m))
        .await
        .expect("fixture");
    fixture.set_behaviour(&path, Behaviour::Delay(Duration::from_millis(500)));
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let gw = Gw::start(
        &one_route(&fixture.url(), ""),
        &CacheSpec::new(cache_dir.path()),
    );

    const CLIENTS: usize = 500;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (barrier, addr, path) = (barrier.clone(), gw.addr, path.clone());
            std::thread::spawn(move || {
                barrier.wait();
                get(addr, &path)
            })
        })
        .collect();
    let responses: Vec<Response> = clients
        .into_iter()
        .map(|c| c.join().expect("client").expect("GET"))
        .collect();
    let mut outcomes: Vec<String> = Vec::new();
    for r in &responses {
        assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.gateway.log());
        assert!(r.body == zip, "a client got {} bytes", r.body.len());
        outcomes.push(cache_header(r));
    }
    assert_eq!(
        gets(&fixture, &path),
        1,
        "coalesced into one upstream request"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "miss").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(gw.expect_body(&path, &zip), "hit");
    assert_eq!(gets(&fixture, &path), 1);
}

const STALE: &str = "example.com/stale";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lists_are_served_stale_when_the_upstream_fails_or_dies() {
    let v1 = module(STALE, "v1.0.0");
    let fixture = FixtureProxy::start(std::slice::from_ref(&v1))
        .await
        .expect("fixture");
    let mut relay = Relay::start(fixture.addr(), None);
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let gw = Gw::start(
        &one_route(
            &relay.url(),
            "{ mutable: 1s, not_found: 1s, stale_if_error: 1h, stale_while_revalidate: 0s }",
        ),
        &CacheSpec::new(cache_dir.path()),
    );
    let list = format!("/{STALE}/@v/list");
    let latest = format!("/{STALE}/@latest");
    let zip = at(STALE, "v1.0.0", "zip");
    let info = at(STALE, "v1.0.0", "info");
    assert_eq!(gw.expect_body(&list, b"v1.0.0\n"), "miss");
    assert_eq!(gw.expect_body(&latest, &v1.info()), "miss");
    assert_eq!(gw.expect_body(&zip, &zip_of(&v1)), "miss");
    assert_eq!(gw.expect_body(&info, &v1.info()), "miss");

    // A new version is published, but the upstream fails for the list.
    let v2 = module(STALE, "v1.1.0");
    fixture.add(&v2).expect("add");
    std::thread::sleep(Duration::from_millis(1100));
    fixture.set_behaviour(&list, Behaviour::Status(503));
    assert_eq!(gw.expect_body(&list, b"v1.0.0\n"), "stale-if-error", "503");
    assert_eq!(gets(&fixture, &list), 2);
    fixture.set_behaviour(&list, Behaviour::Hang);
    assert_eq!(
        gw.expect_body(&list, b"v1.0.0\n"),
        "stale-if-error",
        "read timeout"
    );
    assert_eq!(gets(&fixture, &list), 3);

    // The upstream recovers: the expired list is fetched again.
    fixture.clear_behaviours();
    assert_eq!(gw.expect_body(&list, b"v1.0.0\nv1.1.0\n"), "expired");
    assert_eq!(gets(&fixture, &list), 4);

    // The upstream dies: connections refused, pooled ones reset.
    std::thread::sleep(Duration::from_millis(1100));
    relay.kill();
    let upstream_seen = fixture.request_count();
    assert_eq!(
        gw.expect_body(&list, b"v1.0.0\nv1.1.0\n"),
        "stale-if-error",
        "upstream dead"
    );
    assert_eq!(
        gw.expect_body(&latest, &v1.info()),
        "stale-if-error",
        "@latest, upstream dead"
    );
    // Exact versions never go upstream once cached, dead or not.
    assert_eq!(gw.expect_body(&zip, &zip_of(&v1)), "hit");
    assert_eq!(gw.expect_body(&info, &v1.info()), "hit");
    // What was never cached cannot be served.
    let r = gw.get(&at(STALE, "v1.1.0", "zip"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text().contains("example.com/stale@v1.1.0"),
        "{}",
        r.text()
    );
    assert_eq!(fixture.request_count(), upstream_seen);

    assert_eq!(gw.metric("modgate_cache_stale_served_total"), 4.0);
    assert_eq!(
        gw.metric(r#"modgate_cache_requests_total{outcome="stale-if-error"}"#),
        4.0
    );
}

/// A gateway in front of a fixture holding `module@v1.0.0`, whose route keeps lists fresh for
/// 1 s and serves them stale for an hour while one refresh runs (the tempdir is the cache's).
async fn swr_gateway(module_path: &str) -> (FixtureProxy, tempfile::TempDir, Gw) {
    let v1 = module(module_path, "v1.0.0");
    let fixture = FixtureProxy::start(std::slice::from_ref(&v1))
        .await
        .expect("fixture");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let gw = Gw::start(
        &one_route(
            &fixture.url(),
            "{ mutable: 1s, stale_while_revalidate: 1h }",
        ),
        &CacheSpec::new(cache_dir.path()),
    );
    (fixture, cache_dir, gw)
}

/// Stale-while-revalidate (issue 11): a list past its TTL is answered at once from the cache
/// while one background refresh asks the upstream; the next request gets the refreshed list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lists_are_served_at_once_while_one_refresh_runs() {
    const SWR: &str = "example.com/swr";
    let (fixture, _cache_dir, gw) = swr_gateway(SWR).await;
    let list = format!("/{SWR}/@v/list");
    assert_eq!(gw.expect_body(&list, b"v1.0.0\n"), "miss");
    assert_eq!(gets(&fixture, &list), 1);
    fixture.add(&module(SWR, "v1.1.0")).expect("add");
    std::thread::sleep(Duration::from_millis(1100));
    // The upstream is slow now: the stale answer does not wait for it.
    fixture.set_behaviour(&list, Behaviour::Delay(Duration::from_millis(500)));
    let started = std::time::Instant::now();
    assert_eq!(gw.expect_body(&list, b"v1.0.0\n"), "stale-updating");
    let served_in = started.elapsed();
    // One background refresh reaches the upstream.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gets(&fixture, &list) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background refresh"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Then the refreshed list is what everyone gets, from the cache.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.get(&list);
        if r.text() == "v1.0.0\nv1.1.0\n" {
            assert_eq!(cache_header(&r), "hit");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never landed: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        gets(&fixture, &list),
        2,
        "one refresh, however many requests"
    );
    assert!(
        served_in < Duration::from_millis(500),
        "the stale answer waited for the upstream: {served_in:?}"
    );
    assert!(gw.metric(r#"modgate_cache_requests_total{outcome="stale-updating"}"#) >= 1.0);
}

/// `go` talks HTTP/2 to an https GOPROXY: the background refresh must happen for an HTTP/2
/// request too (Pingora builds it from the request's HTTP/1 form, which has no `HTTP/2`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http2_request_for_an_expired_list_starts_the_refresh_too() {
    const SWR2: &str = "example.com/swr2";
    let (fixture, _cache_dir, gw) = swr_gateway(SWR2).await;
    let list = format!("/{SWR2}/@v/list");
    let url = format!("http://{}{list}", gw.addr);
    let h2 = |what: &str| {
        let r = modgate_testkit::curl(&["--http2-prior-knowledge", &url]);
        assert_eq!(r.http_version, "2", "{what}: {r:?}");
        assert_eq!(r.status, 200, "{what}: {r:?}");
        r
    };
    assert_eq!(h2("first").body, "v1.0.0\n");
    assert_eq!(gets(&fixture, &list), 1);
    fixture.add(&module(SWR2, "v1.1.0")).expect("add");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(h2("stale").body, "v1.0.0\n");
    let stale = r#"modgate_cache_requests_total{outcome="stale-updating"}"#;
    assert_eq!(gw.metric(stale), 1.0);
    // One background refresh reaches the upstream, and then everyone gets the new list.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = h2("after");
        if r.body == "v1.0.0\nv1.1.0\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refresh after an HTTP/2 request: {} upstream request(s)\n{}",
            gets(&fixture, &list),
            gw.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gets(&fixture, &list), 2, "one refresh");
    // The access line keeps the client's protocol.
    assert!(
        gw.gateway.log().contains("HTTP/2.0 200"),
        "{}",
        gw.gateway.log()
    );
}

const NEG: &str = "example.com/negative";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_found_answers_are_cached_for_the_not_found_ttl() {
    let fixture = FixtureProxy::start(&[module(NEG, "v1.0.0")])
        .await
        .expect("fixture");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let gw = Gw::start(
        &one_route(
            &fixture.url(),
            "{ mutable: 1s, not_found: 1s, stale_if_error: 1h }",
        ),
        &CacheSpec::new(cache_dir.path()),
    );
    let unknown = at(NEG, "v1.9.9", "info");
    let gone = at(NEG, "v1.8.0", "zip");
    fixture.set_behaviour(&gone, Behaviour::Status(410));
    let started = Instant::now();

    let r = gw.get(&unknown);
    assert_eq!((r.status, cache_header(&r).as_str()), (404, "miss"));
    let upstream_404 = r.body.clone();
    let r = gw.get(&gone);
    assert_eq!((r.status, cache_header(&r).as_str()), (410, "miss"));

    // Published meanwhile: the cached 404 still answers within the TTL, from the cache.
    fixture.add(&module(NEG, "v1.9.9")).expect("add");
    for _ in 0..2 {
        let r = gw.get(&unknown);
        assert_eq!((r.status, cache_header(&r).as_str()), (404, "hit"));
        assert_eq!(r.body, upstream_404, "the upstream's 404 body is kept");
        let r = gw.get(&gone);
        assert_eq!((r.status, cache_header(&r).as_str()), (410, "hit"));
    }
    assert_eq!(gets(&fixture, &unknown), 1);
    assert_eq!(gets(&fixture, &gone), 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "too slow to test a 1 s TTL"
    );
    let ledger = Ledger::open(&CacheSpec::new(cache_dir.path()).ledger_path()).expect("ledger");
    assert_eq!(
        ledger.get(NEG, "v1.9.9", Artifact::Info).expect("get"),
        None,
        "a 404 is not recorded"
    );

    // After the TTL: asked again. The new version is served; a failing upstream is not
    // papered over with the old 410 (no stale-if-error for negative answers).
    std::thread::sleep(Duration::from_millis(1100));
    fixture.set_behaviour(&gone, Behaviour::Status(503));
    let info = module(NEG, "v1.9.9").info();
    assert_eq!(gw.expect_body(&unknown, &info), "expired");
    assert_eq!(gets(&fixture, &unknown), 2);
    let r = gw.get(&gone);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(gets(&fixture, &gone), 2);
    assert_eq!(gw.expect_body(&unknown, &info), "hit");
    assert_eq!(gets(&fixture, &unknown), 2);
}

const RETAG: &str = "example.com/retag";

/// A version of the re-tag module: a ~300 KiB blob (so a body arrives in many chunks) and a
/// source file whose text tells the variants apart.
fn retag(version: &str, source: &str) -> ModuleVersion {
    module(RETAG, version)
        .file("blob.bin", &noise(300 << 10, 11))
        .file("r.go", source.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_that_swaps_a_zip_is_refused_and_the_ledger_keeps_the_original() {
    let a1 = retag("v1.0.0", "package retag // one\n");
    let b1 = retag("v1.1.0", "package retag // two\n");
    let (a1_zip, b1_zip) = (zip_of(&a1), zip_of(&b1));
    let fixture = FixtureProxy::start(&[a1.clone(), b1.clone()])
        .await
        .expect("fixture");
    // Two gateways with their own caches sharing one ledger.
    let ledger_dir = tempfile::tempdir().expect("tempdir");
    let ledger_path = ledger_dir.path().join("ledger.sqlite");
    let (cache_a, cache_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let spec = |dir: &Path| CacheSpec {
        ledger: Some(ledger_path.clone()),
        ..CacheSpec::new(dir)
    };
    let body = one_route(&fixture.url(), "");
    let gw_a = Gw::start(&body, &spec(cache_a.path()));
    let gw_b = Gw::start(&body, &spec(cache_b.path()));
    let (a_path, b_path) = (at(RETAG, "v1.0.0", "zip"), at(RETAG, "v1.1.0", "zip"));

    assert_eq!(gw_a.expect_body(&a_path, &a1_zip), "miss");
    assert_eq!(gw_a.expect_body(&b_path, &b1_zip), "miss");
    let ledger = Ledger::open(&ledger_path).expect("ledger");
    let recorded_a = ledger
        .get(RETAG, "v1.0.0", Artifact::Zip)
        .expect("get")
        .expect("v1.0.0 recorded");
    let recorded_b = ledger
        .get(RETAG, "v1.1.0", Artifact::Zip)
        .expect("get")
        .expect("v1.1.0 recorded");
    assert_eq!(recorded_a.sha256, sha256(&a1_zip));
    assert_eq!(recorded_b.sha256, sha256(&b1_zip));

    // (a) v1.0.0 re-tagged with a different length: refused before any byte.
    let a2_zip = zip_of(&retag("v1.0.0", "package retag // one, re-tagged\n"));
    assert_ne!(a2_zip.len(), a1_zip.len());
    fixture.set_file(&a_path, a2_zip.clone());
    let r = gw_b.get(&a_path);
    assert_eq!(r.status, 502, "{}", r.text());
    let expected = format!(
        "modgate: {RETAG}@v1.0.0 (.zip) changed upstream: first seen sha256:{} ({} bytes), \
         upstream up now serves {} bytes; refused",
        sha256(&a1_zip),
        a1_zip.len(),
        a2_zip.len()
    );
    assert!(
        r.text().starts_with(&expected),
        "{}\nexpected: {expected}",
        r.text()
    );
    assert_eq!(gets(&fixture, &a_path), 2, "the upstream was asked");
    // Quarantined: the next request is refused without asking the upstream.
    let r = gw_b.get(&a_path);
    assert_eq!(r.status, 502);
    assert!(r.text().starts_with(&expected), "{}", r.text());
    assert_eq!(gets(&fixture, &a_path), 2, "quarantined: not fetched again");
    // The gateway that cached the original keeps serving it.
    assert_eq!(gw_a.expect_body(&a_path, &a1_zip), "hit");

    // (b) v1.1.0 re-tagged with the same length: verified before served, so a clean 502 with
    // the reason (never a 200 cut off before the end).
    let b2_zip = zip_of(&retag("v1.1.0", "package retag // TWO\n"));
    assert_eq!(b2_zip.len(), b1_zip.len());
    assert_ne!(b2_zip, b1_zip);
    fixture.set_file(&b_path, b2_zip.clone());
    let data = raw_get_counting(gw_b.addr, &b_path, &AtomicUsize::new(0));
    let expected_b = format!(
        "modgate: {RETAG}@v1.1.0 (.zip) changed upstream: first seen sha256:{} ({n} bytes), \
         upstream up now serves sha256:{} ({n} bytes); refused",
        sha256(&b1_zip),
        sha256(&b2_zip),
        n = b1_zip.len(),
    );
    let (status, length, got) = split_raw(&data);
    let text = String::from_utf8_lossy(got);
    assert_eq!(status, 502, "{text}");
    assert_eq!(length, Some(got.len()), "the whole 502 arrived");
    assert!(
        text.starts_with(&expected_b),
        "{text}\nexpected: {expected_b}"
    );
    assert_eq!(gets(&fixture, &b_path), 2);
    let r = gw_b.get(&b_path);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text().starts_with(&expected_b),
        "{}\nexpected: {expected_b}",
        r.text()
    );
    assert_eq!(gets(&fixture, &b_path), 2, "quarantined: not fetched again");
    assert_eq!(gw_a.expect_body(&b_path, &b1_zip), "hit");

    // Neither swapped zip was stored by gateway B; the ledger is unchanged.
    let keys = cached_keys(cache_b.path());
    assert!(
        !keys.contains(&key("all", &a_path)) && !keys.contains(&key("all", &b_path)),
        "{keys:?}"
    );
    // Not even a temp file is left behind (an abandoned write is deleted).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !object_files(cache_b.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            object_files(cache_b.path())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (version, before, original) in [
        ("v1.0.0", &recorded_a, &a1_zip),
        ("v1.1.0", &recorded_b, &b1_zip),
    ] {
        let now = ledger
            .get(RETAG, version, Artifact::Zip)
            .expect("get")
            .expect("recorded");
        assert_eq!(&now, before, "{version}: the ledger record changed");
        assert_eq!(now.sha256, sha256(original));
        assert_eq!(now.size, original.len() as u64);
        assert_eq!(now.h1.as_deref(), Some(SumDb::zip_h1(original).as_str()));
    }

    assert_eq!(
        gw_b.metric(r#"modgate_integrity_refusals_total{artifact="zip"}"#),
        2.0
    );
    assert_eq!(
        gw_a.metric(r#"modgate_integrity_refusals_total{artifact="zip"}"#),
        0.0
    );
    // Gateway B's audit log: the four refused requests, each with the reason.
    let lines = gw_b.audit(4);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for (line, (path, status, reason)) in lines.iter().zip([
        (&a_path, 502, &expected),
        (&a_path, 502, &expected),
        (&b_path, 502, &expected_b),
        (&b_path, 502, &expected_b),
    ]) {
        assert_eq!(line["path"], path.as_str(), "{line:#}");
        assert_eq!(line["status"], status, "{line:#}");
        let why = line["reason"].as_str().unwrap_or("");
        assert!(
            why.starts_with(reason.trim_start_matches("modgate: ")),
            "audit reason {why:?}, expected {reason:?}: {line:#}"
        );
    }
}

/// Not under the suite's private host: in the first and last phase it is a public module and
/// reaches the public upstream on purpose.
const SHARED: &str = "example.net/moved";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_key_includes_the_route() {
    // The same module on both upstreams: identical v1.0.0 (so the ledger agrees), and only the
    // private one has v1.1.0.
    let v1 = module(SHARED, "v1.0.0");
    let v2 = module(SHARED, "v1.1.0");
    let public = FixtureProxy::start(std::slice::from_ref(&v1))
        .await
        .expect("public fixture");
    let private = FixtureProxy::start(&[v1.clone(), v2.clone()])
        .await
        .expect("private fixture");
    private.mark_private();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let spec = CacheSpec::new(cache_dir.path());
    let public_only = format!(
        "upstreams:\n  pub: {{ url: \"{}\" }}\n\
         routes:\n  - {{ name: public, match: {{ prefix: \"\" }}, chain: [pub] }}\n",
        public.url()
    );
    let with_private = format!(
        r#"upstreams:
  pub: {{ url: "{}" }}
  corp: {{ url: "{}", private: true }}
routes:
  - {{ name: corp, match: {{ prefix: example.net/moved }}, chain: [corp], private: true }}
  - {{ name: public, match: {{ prefix: "" }}, chain: [pub] }}
access:
  default: allow
  roles:
    - {{ name: everyone, members: [any], rules: [{{ allow: {{ prefix: example.net/moved }} }}] }}
"#,
        public.url(),
        private.url()
    );
    let list = format!("/{SHARED}/@v/list");
    let zip = at(SHARED, "v1.0.0", "zip");
    let info2 = at(SHARED, "v1.1.0", "info");

    // First the module is served by the public route.
    let gw = Gw::start(&public_only, &spec);
    assert_eq!(gw.expect_body(&list, b"v1.0.0\n"), "miss");
    assert_eq!(gw.expect_body(&zip, &zip_of(&v1)), "miss");
    let r = gw.get(&info2);
    assert_eq!((r.status, cache_header(&r).as_str()), (404, "miss"));
    assert_eq!(r.header("x-modgate-route"), Some("public"));
    gw.stop();
    let public_seen = public.request_count();

    // Then a private route takes it over: nothing cached for the public route is used.
    let gw = Gw::start(&with_private, &spec);
    let r = gw.get(&list);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "v1.0.0\nv1.1.0\n");
    assert_eq!(cache_header(&r), "miss");
    assert_eq!(r.header("x-modgate-route"), Some("corp"));
    assert_eq!(gw.expect_body(&zip, &zip_of(&v1)), "miss");
    assert_eq!(
        gw.expect_body(&info2, &v2.info()),
        "miss",
        "not the public 404"
    );
    for (path, body) in [
        (&list, b"v1.0.0\nv1.1.0\n".to_vec()),
        (&zip, zip_of(&v1)),
        (&info2, v2.info()),
    ] {
        assert_eq!(gw.expect_body(path, &body), "hit");
        assert_eq!(gets(&private, path), 1, "{path}");
    }
    assert_eq!(
        public.request_count(),
        public_seen,
        "the public upstream was asked"
    );
    gw.stop();
    let keys = cached_keys(cache_dir.path());
    for k in [
        key("public", &list),
        key("public", &zip),
        key("public", &info2),
        key("corp", &list),
        key("corp", &zip),
        key("corp", &info2),
    ] {
        assert!(keys.contains(&k), "{k} not cached: {keys:#?}");
    }

    // And back: the public route's own entries, untouched by the private ones.
    let gw = Gw::start(&public_only, &spec);
    assert_eq!(gw.expect_body(&list, b"v1.0.0\n"), "hit");
    assert_eq!(gw.expect_body(&zip, &zip_of(&v1)), "hit");
    let r = gw.get(&info2);
    assert_eq!((r.status, cache_header(&r).as_str()), (404, "hit"));
    assert_eq!(public.request_count(), public_seen);
    assert_eq!(private.request_count(), 3);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_any_error_step_is_tried_before_a_stale_answer() {
    // Chain [a | b]: when the expired list's refresh fails at `a`, `b` is asked (as `|` in
    // GOPROXY would), and only if `b` fails too is the stale answer served.
    let old = module("example.com/chained", "v1.0.0");
    let new = module("example.com/chained", "v1.1.0");
    let a = FixtureProxy::start(std::slice::from_ref(&old))
        .await
        .expect("fixture a");
    let b = FixtureProxy::start(&[old.clone(), new.clone()])
        .await
        .expect("fixture b");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let body = format!(
        "upstreams:\n  a: {{ url: \"{}\", read_timeout: 1s }}\n  b: {{ url: \"{}\", read_timeout: 1s }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [{{ upstream: a, on: any-error }}, b], \
         cache: {{ mutable: 1s, stale_while_revalidate: 0s }} }}\n",
        a.url(),
        b.url()
    );
    let gw = Gw::start(&body, &CacheSpec::new(cache_dir.path()));
    let list = "/example.com/chained/@v/list";
    let first = gw.get(list);
    assert_eq!(first.text(), "v1.0.0\n", "{}", gw.gateway.log());
    std::thread::sleep(Duration::from_millis(1300));
    a.set_behaviour(list, Behaviour::Status(503));
    let r = gw.get(list);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "v1.0.0\nv1.1.0\n",
        "b answered, not the stale copy"
    );
    assert_eq!(r.header("x-modgate-upstream"), Some("b"));
    assert_ne!(cache_header(&r), "stale-if-error");
    // Both failing: now the stale answer.
    std::thread::sleep(Duration::from_millis(1300));
    b.set_behaviour(list, Behaviour::Status(503));
    let r = gw.get(list);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(cache_header(&r), "stale-if-error");
    assert_eq!(r.text(), "v1.0.0\nv1.1.0\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_are_asked_for_identity_encoding_and_encoded_versions_are_refused() {
    let m = module("example.com/enc", "v1.0.0");
    let fixture = FixtureProxy::start(std::slice::from_ref(&m))
        .await
        .expect("fixture");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let gw = Gw::start(
        &one_route(&fixture.url(), ""),
        &CacheSpec::new(cache_dir.path()),
    );
    let info = at("example.com/enc", "v1.0.0", "info");
    let r = request(gw.addr, "GET", &info, &[("Accept-Encoding", "gzip")]).expect("get");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = fixture.requests();
    assert!(
        seen.iter().all(|r| r.header("accept-encoding").is_none()),
        "{seen:?}"
    );
    // An upstream that encodes an exact version anyway is refused: its bytes cannot be pinned.
    let zip = at("example.com/enc", "v1.0.0", "zip");
    fixture.set_header(&zip, "Content-Encoding", "gzip");
    let r = gw.get(&zip);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("Content-Encoding"), "{}", r.text());
}

const RETAG2: &str = "example.com/retagged";

/// Verified before served: a zip re-tagged at the upstream with the same length is a clean
/// 502 whose reason names the change and the `ledger accept` command, for the request that
/// fetched it and for 50 others that waited on that fetch (coalesced: one upstream request);
/// the real `go` prints the reason; nothing is stored and the ledger is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retagged_zip_is_a_clean_502_for_the_requester_and_fifty_waiters() {
    let go = modgate_testkit::require_go();
    let v = |source: &str| {
        module(RETAG2, "v1.0.0")
            .file("blob.bin", &noise(256 << 10, 5))
            .file("r.go", source.as_bytes())
    };
    let (first, second) = (
        v("package retagged // one\n"),
        v("package retagged // ONE\n"),
    );
    let (zip1, zip2) = (zip_of(&first), zip_of(&second));
    assert_eq!(zip1.len(), zip2.len());
    let path = at(RETAG2, "v1.0.0", "zip");
    let fixture = FixtureProxy::start(std::slice::from_ref(&first))
        .await
        .expect("fixture");
    let ledger_dir = tempfile::tempdir().expect("tempdir");
    let ledger_path = ledger_dir.path().join("ledger.sqlite");
    let (cache_a, cache_b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let spec = |dir: &Path| CacheSpec {
        ledger: Some(ledger_path.clone()),
        ..CacheSpec::new(dir)
    };
    let body = one_route(&fixture.url(), "");
    let gw_a = Gw::start(&body, &spec(cache_a.path()));
    assert_eq!(gw_a.expect_body(&path, &zip1), "miss");
    let recorded = Ledger::open(&ledger_path)
        .expect("ledger")
        .get(RETAG2, "v1.0.0", Artifact::Zip)
        .expect("get")
        .expect("recorded");

    // Re-tagged, and slow enough that every client below waits on the one fetch.
    fixture.set_file(&path, zip2.clone());
    fixture.set_behaviour(&path, Behaviour::Delay(Duration::from_millis(400)));
    let gw_b = Gw::start(&body, &spec(cache_b.path()));
    let expected = format!(
        "modgate: {RETAG2}@v1.0.0 (.zip) changed upstream: first seen sha256:{} ({n} bytes), \
         upstream up now serves sha256:{} ({n} bytes); refused",
        sha256(&zip1),
        sha256(&zip2),
        n = zip1.len(),
    );
    const CLIENTS: usize = 51;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (barrier, addr, path) = (barrier.clone(), gw_b.addr, path.clone());
            std::thread::spawn(move || {
                barrier.wait();
                raw_get_counting(addr, &path, &AtomicUsize::new(0))
            })
        })
        .collect();
    for c in clients {
        let data = c.join().expect("client");
        let (status, length, got) = split_raw(&data);
        let text = String::from_utf8_lossy(got);
        assert_eq!(status, 502, "{text}\n{}", gw_b.gateway.log());
        assert_eq!(length, Some(got.len()), "a whole 502, not a cut: {text}");
        assert!(
            text.starts_with(&expected) && text.contains("modgate ledger accept"),
            "{text}\nexpected: {expected}"
        );
    }
    assert_eq!(
        gets(&fixture, &path),
        2,
        "one fetch for all 51 clients of B"
    );

    // `go` prints the reason.
    if go.is_some() {
        let goenv = GoEnv::new(&format!("http://{}", gw_b.addr));
        let run = goenv.go(&["mod", "download", "-json", &format!("{RETAG2}@v1.0.0")]);
        assert!(!run.ok(), "go accepted a re-tagged zip:\n{}", run.stdout());
        assert!(
            run.stdout().contains("changed upstream") && run.stdout().contains("ledger accept"),
            "go did not print the reason:\n{}\n{}",
            run.stdout(),
            run.stderr()
        );
    }

    // Nothing stored by B; the ledger unchanged; A still serves the original.
    assert!(
        !cached_keys(cache_b.path()).contains(&key("all", &path)),
        "the re-tagged zip was stored"
    );
    let now = Ledger::open(&ledger_path)
        .expect("ledger")
        .get(RETAG2, "v1.0.0", Artifact::Zip)
        .expect("get")
        .expect("recorded");
    assert_eq!(now, recorded, "the ledger record changed");
    assert_eq!(gw_a.expect_body(&path, &zip1), "hit");
    assert_eq!(
        gw_b.metric(r#"modgate_integrity_refusals_total{artifact="zip"}"#),
        1.0
    );
}

/// An upstream that announces `body.len()` bytes and, for the first `cut` requests, sends half
/// of them and closes; then the whole body. Counts requests.
fn cutting_upstream(body: Vec<u8>, cut: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let addr = raw_upstream(move |_, s| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        let send = if n < cut { body.len() / 2 } else { body.len() };
        let _ = s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        let _ = s.write_all(&body[..send]);
    });
    (addr, count)
}

const CUT: &str = "example.com/cut";

/// A body the upstream cuts short is never served (not a byte of it) and never stored; the
/// next request fetches again and gets the whole, checked zip.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncated_upstream_body_is_never_served_or_stored_and_is_fetched_again() {
    let m = module(CUT, "v1.0.0").file("blob.bin", &noise(2 << 20, 9));
    let zip = zip_of(&m);
    let path = at(CUT, "v1.0.0", "zip");
    let (up, asked) = cutting_upstream(zip.clone(), 1);
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let spec = CacheSpec::new(cache_dir.path());
    let gw = Gw::start(&one_route(&format!("http://{up}"), ""), &spec);

    let data = raw_get_counting(gw.addr, &path, &AtomicUsize::new(0));
    let (status, length, got) = split_raw(&data);
    let text = String::from_utf8_lossy(got);
    assert_eq!(status, 502, "{text}\n{}", gw.gateway.log());
    assert_eq!(length, Some(got.len()), "{text}");
    assert!(
        text.contains(&format!("{CUT}@v1.0.0")) && text.contains("upstream up"),
        "{text}"
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(
        !cached_keys(cache_dir.path()).contains(&key("all", &path)),
        "the cut body was stored"
    );
    let ledger = Ledger::open(&spec.ledger_path()).expect("ledger");
    assert_eq!(
        ledger.get(CUT, "v1.0.0", Artifact::Zip).expect("get"),
        None,
        "the cut body was recorded"
    );
    // The operator's log says what happened.
    assert!(
        gw.gateway.log().contains("cut after"),
        "{}",
        gw.gateway.log()
    );

    // The next request fetches again: the whole zip, checked, stored.
    assert_eq!(gw.expect_body(&path, &zip), "miss");
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    let e = ledger
        .get(CUT, "v1.0.0", Artifact::Zip)
        .expect("get")
        .expect("recorded");
    assert_eq!(e.sha256, sha256(&zip));
    wait_keys(cache_dir.path(), "the zip is committed", |k| {
        k.contains(&key("all", &path))
    });
    assert_eq!(gw.expect_body(&path, &zip), "hit");
    assert_eq!(asked.load(Ordering::SeqCst), 2);
}

const LOCKED: &str = "example.com/locked";

/// With one worker thread and one scheduler per thread, a miss whose check waits for the
/// ledger's write lock (held here for 3 s, as `modgate ledger` holds it while it writes) does
/// not hold up cached hits: they are answered while the miss waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_miss_waiting_on_the_ledger_lock_does_not_delay_hits_on_the_same_thread() {
    let hot = module(LOCKED, "v1.0.0");
    let cold = module(LOCKED, "v1.1.0").file("blob.bin", &noise(256 << 10, 4));
    let fixture = FixtureProxy::start(&[hot.clone(), cold.clone()])
        .await
        .expect("fixture");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let spec = CacheSpec::new(cache_dir.path());
    let gw = Gw::start(
        &format!(
            "server:\n  threads: 1\n  work_stealing: false\n{}",
            one_route(&fixture.url(), "")
        ),
        &spec,
    );
    let hot_path = at(LOCKED, "v1.0.0", "info");
    assert_eq!(gw.expect_body(&hot_path, &hot.info()), "miss");
    assert_eq!(gw.expect_body(&hot_path, &hot.info()), "hit");

    // Hold the ledger's write lock, as another writer would.
    let conn = rusqlite::Connection::open(spec.ledger_path()).expect("open ledger");
    conn.execute_batch("BEGIN EXCLUSIVE")
        .expect("lock the ledger");
    let held = Instant::now();
    let cold_path = at(LOCKED, "v1.1.0", "zip");
    let miss = {
        let (addr, path) = (gw.addr, cold_path.clone());
        std::thread::spawn(move || get(addr, &path))
    };
    // The miss has reached the ledger (the upstream answered) before hits are timed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gets(&fixture, &cold_path) == 0 {
        assert!(Instant::now() < deadline, "{}", gw.gateway.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut latencies = Vec::new();
    while held.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let r = gw.get(&hot_path);
        latencies.push(t.elapsed());
        assert_eq!(r.status, 200);
        assert_eq!(cache_header(&r), "hit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!miss.is_finished(), "the miss did not wait for the ledger");
    conn.execute_batch("COMMIT").expect("unlock");
    let r = miss.join().expect("miss").expect("GET");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == zip_of(&cold));
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    println!(
        "{} hits during a 3 s ledger lock: median {median:?}, max {max:?}",
        latencies.len()
    );
    assert!(latencies.len() >= 20, "{latencies:?}");
    // Blocked, every hit would wait for the lock (seconds); a loaded machine may slow one.
    assert!(median <= Duration::from_millis(50), "{latencies:?}");
    assert!(max < Duration::from_millis(1000), "{latencies:?}");
}

// ---------------------------------------------------------------------------------------------
// The verifying origin across a graceful upgrade, and bodies whose end cannot be told
// ---------------------------------------------------------------------------------------------

/// An upstream that answers any `.info` with a body naming the path it was asked, after
/// `delay`; one request per connection.
fn echo_upstream(delay: Duration) -> SocketAddr {
    raw_upstream(move |path, s| {
        std::thread::sleep(delay);
        let body = format!("{{\"Version\":\"x\",\"Path\":\"{path}\"}}");
        let _ = s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    })
}

/// Exact-version misses keep flowing through a graceful upgrade: every one is a 200 with the
/// bytes of the path it asked for. (Each process has its own origin socket and job secret: the
/// upgrade hands sockets over by address, and a job is known only to the process that
/// registered it; with one shared socket some requests were answered by the other process's
/// origin, "the verification job is unknown".)
#[test]
fn exact_version_misses_survive_a_graceful_upgrade() {
    let up = echo_upstream(Duration::from_millis(150));
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let spec = CacheSpec::new(cache_dir.path());
    let addr = free_addr();
    let config = format!(
        "listeners:\n  - {{ name: plain, address: \"{addr}\", metrics: true, debug_headers: true }}\n{body}{cache}",
        body = one_route(&format!("http://{up}"), ""),
        cache = spec.yaml()
    );
    let mut gw = Gateway::start(&config, addr);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (stop, next, failures, done) =
                (stop.clone(), next.clone(), failures.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let path = format!("/example.com/up/@v/v1.0.{i}.info");
                    match get(addr, &path) {
                        Ok(r) if r.status == 200 && r.text().contains(&path) => {}
                        Ok(r) => failures.lock().expect("lock").push(format!(
                            "{path}: {} {}",
                            r.status,
                            r.text()
                        )),
                        Err(e) => failures.lock().expect("lock").push(format!("{path}: {e}")),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let old_exit = gw.upgrade(&config, addr);
    let before = done.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::SeqCst) < before + 40 {
        assert!(Instant::now() < deadline, "no progress after the upgrade");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("worker");
    }
    let failures = failures.lock().expect("lock").clone();
    let old_log = std::fs::read_to_string(gw.dir.path().join("modgate.log")).unwrap_or_default()
        + &std::fs::read_to_string(gw.dir.path().join("modgate-upgrade.log")).unwrap_or_default();
    assert_eq!(old_exit, Some(0));
    assert!(
        failures.is_empty(),
        "{} of {} failed across the upgrade: {:#?}\n{}",
        failures.len(),
        done.load(Ordering::SeqCst),
        &failures[..failures.len().min(20)],
        old_log
            .lines()
            .filter(|l| l.contains("unknown") || l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// An upstream that answers a 200 without Content-Length (close-delimited) and, for the first
/// `cut` requests, closes after half the body.
fn close_delimited_upstream(body: Vec<u8>, cut: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let addr = raw_upstream(move |_, s| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        let send = if n < cut { body.len() / 2 } else { body.len() };
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let _ = s.write_all(&body[..send]);
    });
    (addr, count)
}

/// A 200 without Content-Length or chunked framing (its end is the connection's close) is not
/// taken for an exact version: cut short, it would be served and pinned as whole. It is the
/// step's failure (a 502 naming the upstream), nothing is recorded, and the next request asks
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_body_is_never_taken_for_an_exact_version() {
    let body = b"module example.com/cd\n\ngo 1.21\n\nrequire example.com/other v1.2.3\n".to_vec();
    let (up, asked) = close_delimited_upstream(body.clone(), 1);
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let spec = CacheSpec::new(cache_dir.path());
    let gw = Gw::start(&one_route(&format!("http://{up}"), ""), &spec);
    let path = at("example.com/cd", "v1.0.0", "mod");
    let ledger = Ledger::open(&spec.ledger_path()).expect("ledger");
    for n in 1..=2 {
        let r = gw.get(&path);
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("upstream up"), "{}", r.text());
        assert_eq!(asked.load(Ordering::SeqCst), n, "asked again");
        assert_eq!(
            ledger
                .get("example.com/cd", "v1.0.0", Artifact::Mod)
                .expect("get"),
            None,
            "a close-delimited body was pinned"
        );
    }
    assert!(
        gw.gateway
            .log()
            .contains("neither a Content-Length nor chunked"),
        "{}",
        gw.gateway.log()
    );
}
