//! End to end through pingora-proxy: a `ProxyHttp` wired to the disk cache the way the gateway
//! should do it (`enable` with the eviction manager and a `CacheLock`, a cache key, cacheable
//! 200s, `set_max_file_size_bytes`) in front of a tiny HTTP/1.1 origin. Checks miss then hit,
//! concurrent clients coalesced onto one origin fetch while the body streams (partial writes),
//! ranges served from disk, and eviction driven by Pingora.

use async_trait::async_trait;
use modgate_cache::{DiskCache, DiskCacheConfig};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

const BIG: usize = 2 * 1024 * 1024;

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// An origin answering `/slow-big` with 2 MiB in slow chunks and anything else with a
/// 300 KB body derived from the path; counts requests per path.
fn start_origin() -> (SocketAddr, Hits) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits: Hits = Arc::default();
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || serve_origin(conn, counter));
        }
    });
    (addr, hits)
}

fn serve_origin(mut conn: TcpStream, hits: Hits) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    *hits.lock().expect("lock").entry(path.clone()).or_default() += 1;
    let body = if path == "/slow-big" {
        big_body()
    } else {
        path.repeat(300_000 / path.len().max(1))
            .into_bytes()
            .into_iter()
            .take(300_000)
            .collect()
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    for chunk in body.chunks(64 * 1024) {
        if path == "/slow-big" {
            std::thread::sleep(Duration::from_millis(25));
        }
        if conn.write_all(chunk).is_err() {
            return;
        }
    }
}

static LOCK: LazyLock<Box<CacheKeyLockImpl>> =
    LazyLock::new(|| CacheLock::new_boxed(Duration::from_secs(10)));

struct Gateway {
    origin: SocketAddr,
    cache: &'static DiskCache,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
    }

    fn request_cache_filter(&self, session: &mut Session, _ctx: &mut ()) -> pingora::Result<()> {
        session.cache.enable(
            self.cache,
            Some(self.cache.eviction_manager()),
            None,
            Some(LOCK.as_ref()),
            None,
        );
        session
            .cache
            .set_max_file_size_bytes(self.cache.max_object_bytes());
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _ctx: &mut ()) -> pingora::Result<CacheKey> {
        Ok(CacheKey::new(
            format!("e2e|{}", session.req_header().uri.path()),
            "",
        ))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut (),
    ) -> pingora::Result<RespCacheable> {
        if resp.status != 200 {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        }
        let now = SystemTime::now();
        Ok(RespCacheable::Cacheable(CacheMeta::new(
            now + Duration::from_secs(300),
            now,
            0,
            0,
            resp.clone(),
        )))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// GET with `Connection: close`; returns (status, headers lowercased, body).
fn get(port: u16, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: e2e\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end]).expect("utf8").trim(),
            16,
        )
        .expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pingora_proxy_serves_misses_hits_ranges_and_evicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = DiskCacheConfig::new(dir.path());
    config.max_disk_bytes = 3 * 1024 * 1024; // the 2 MiB object plus a few 300 KB ones
    config.memory_object_max_bytes = 256 * 1024; // the 300 KB ones are disk hits
    let cache = DiskCache::open(config).expect("open");
    let (origin, hits) = start_origin();
    let port = free_port();

    let mut server = Server::new(None).expect("server");
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Gateway { origin, cache });
    proxy.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(proxy);
    std::thread::spawn(move || server.run_forever());
    wait_for("the proxy to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let origin_hits = |p: &str| hits.lock().expect("lock").get(p).copied().unwrap_or(0);

    // miss, then a hit (300 KB is above the memory tier: streamed from disk)
    let (status, _, first) = get(port, "/a", "");
    assert_eq!(status, 200);
    assert_eq!(first.len(), 300_000);
    let (status, _, second) = get(port, "/a", "");
    assert_eq!((status, &second), (200, &first));
    assert_eq!(origin_hits("/a"), 1);

    // three clients at once on a slow 2 MiB miss: one origin fetch, all complete
    let clients: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(60 * i));
                get(port, "/slow-big", "")
            })
        })
        .collect();
    for c in clients {
        let (status, _, body) = c.join().expect("client");
        assert_eq!(status, 200);
        assert!(body == big_body(), "body of {} bytes differs", body.len());
    }
    assert_eq!(origin_hits("/slow-big"), 1);
    // the filler's own downstream streamed the write in progress (and so did any waiter
    // that arrived before the body was complete; later ones got a disk hit)
    assert!(cache.stats().hits_partial >= 1, "{:?}", cache.stats());

    // a range served by seeking the disk hit
    let (status, head, part) = get(port, "/slow-big", "Range: bytes=1000-1999\r\n");
    assert_eq!(status, 206, "{head}");
    assert_eq!(part, &big_body()[1000..2000]);
    assert_eq!(origin_hits("/slow-big"), 1);

    // fill beyond the budget: Pingora admits every write and purges what the LRU evicts
    for p in ["/b", "/c", "/d", "/e"] {
        assert_eq!(get(port, p, "").0, 200);
    }
    wait_for("evictions", || cache.stats().evicted > 0);
    let stats = cache.stats();
    assert!(stats.eviction_tracked_bytes <= 3 * 1024 * 1024, "{stats:?}");
    wait_for("disk to match the budget", || {
        cache.stats().bytes <= 3 * 1024 * 1024
    });
    // the least recently used object (/a) went first; fetching it again goes to the origin
    assert_eq!(get(port, "/a", "").2, first);
    assert_eq!(origin_hits("/a"), 2);
    assert!(stats.hits_disk >= 2, "{stats:?}");
}
