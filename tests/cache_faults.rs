//! End to end for cache faults, with the real binary, real `go` and curl, and a real full
//! filesystem:
//!
//! - A cache on a 2 MiB tmpfs: a zip bigger than the free space is still served whole (200,
//!   checked by the ledger), bypassing the cache; so is every miss once the filesystem is
//!   full. The failure is counted (`modgate_cache_write_failures_total`), and the log and the
//!   audit record name the cache, never the upstream.
//! - An exact version is held whole to be checked before it is served: in memory (within
//!   `cache.max_spill`) when the full filesystem cannot take it, and beyond that a 503 that
//!   names the cache's filesystem, never a cut transfer.
//! - Stale-while-revalidate behind an upstream that answers only callers it knows (the
//!   identity the route forwards): the background refresh carries the identity of the
//!   request that triggered it, and a refresh never replaces a good answer with a failure.
//! - `modgate cache verify` reports a body cut short on disk (exit 1, naming it) instead of
//!   silently dropping it; the start-up scan logs what it drops.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modgate_ledger::{Artifact, Ledger};
use modgate_testkit::{
    free_addr, get, metric, modgate, raw_upstream, request, FixtureProxy, Gateway, GoEnv,
    ModuleVersion, Tmpfs,
};
use sha2::{Digest, Sha256};

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
fn wait_for<T>(what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
    wait_logged(what, secs, None, f)
}

/// [`wait_for`], with the gateway's log in the failure message.
fn wait_logged<T>(
    what: &str,
    secs: u64,
    gw: Option<&Gateway>,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            gw.map(|g| g.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// The audit records, once at least `n` of them are for `path`: a record is written after its
/// answer has gone out, so a test that just got the answer waits for it (bounded).
fn audit_records_for(dir: &Path, path: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let records = audit_records(dir);
        if records.iter().filter(|r| r["path"] == path).count() >= n
            || std::time::Instant::now() >= deadline
        {
            return records;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A gateway on `addr` (metrics, debug headers, an audit log) with one route to `up`, its cache
/// in `cache` (without fsync) and its ledger at `ledger`; `extra` is more of the `cache:` section.
fn one_cached_route(
    addr: SocketAddr,
    up: &str,
    cache: &Path,
    ledger: &Path,
    extra: &str,
) -> String {
    format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", metrics: true, debug_headers: true }}
upstreams:
  up: {{ url: "{up}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
cache:
  dir: "{cache}"
  ledger: "{ledger}"
{extra}  fsync: false
audit: {{ output: audit.jsonl }}
"#,
        cache = cache.display(),
        ledger = ledger.display(),
    )
}

/// Incompressible, reproducible bytes (xorshift), so a zip of them is as large as they are.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 22. A full cache filesystem
// ---------------------------------------------------------------------------------------------

/// A cache whose filesystem cannot hold an object (or anything at all) never fails the
/// request: the answer streams from the upstream, checked by the ledger, and the cache (not the
/// upstream) is named in the metric, the log and the audit record. Watched failing first:
/// `go mod download` got `502 … upstream up failed` and the audit blamed the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_cache_filesystem_bypasses_the_cache_and_never_fails_the_request() {
    const BIG: &str = "example.com/bigzip";
    if modgate_testkit::require_go().is_none() {
        return;
    }
    let Some(fs) = Tmpfs::mount("2m", 0o700) else {
        return;
    };
    let big = ModuleVersion::new(BIG, "v1.0.0")
        .expect("module")
        .file("big.go", b"package bigzip\n")
        .file("testdata/blob.bin", &noise(3 << 20, 7));
    let small = ModuleVersion::new(BIG, "v1.1.0")
        .expect("module")
        .file("big.go", b"package bigzip // small\n");
    let zip = big.zip().expect("zip");
    assert!(
        zip.len() as u64 > fs.available(),
        "the zip ({} bytes) must not fit in the tmpfs ({} bytes free)",
        zip.len(),
        fs.available()
    );
    let upstream = FixtureProxy::start(&[big.clone(), small.clone()])
        .await
        .expect("fixture");
    let state = tempfile::tempdir().expect("tempdir");
    let ledger = state.path().join("ledger.sqlite");
    let cache_dir = fs.path().join("cache");
    let addr = free_addr();
    let gw = Gateway::start(
        &one_cached_route(addr, &upstream.url(), &cache_dir, &ledger, ""),
        addr,
    );

    // The real `go`: the whole module, through the gateway, verified by go itself.
    let goenv = GoEnv::new(&format!("http://{addr}"));
    let run = goenv.go(&["mod", "download", "-json", &format!("{BIG}@v1.0.0")]);
    assert!(
        run.ok(),
        "go mod download failed:\n{}\n{}\n{}",
        run.stdout(),
        run.stderr(),
        gw.log()
    );
    let downloaded = goenv
        .modcache()
        .join("cache/download")
        .join(BIG)
        .join("@v/v1.0.0.zip");
    assert_eq!(
        std::fs::read(&downloaded).expect("go's copy of the zip"),
        zip,
        "go got other bytes than the upstream's"
    );
    // Checked by the ledger as it streamed: recorded with the upstream's hash.
    let record = Ledger::open(&ledger)
        .expect("ledger")
        .get(BIG, "v1.0.0", Artifact::Zip)
        .expect("ledger read")
        .expect("the zip is in the ledger");
    assert_eq!(record.sha256, sha256(&zip));
    assert_eq!(record.size, zip.len() as u64);

    // curl: the whole body again (not stored, so asked upstream again), and a 200.
    let zip_path = format!("/{BIG}/@v/v1.0.0.zip");
    let url = format!("http://{addr}{zip_path}");
    let out = tempfile::NamedTempFile::new().expect("tempfile");
    let r = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "%{http_code}", "-o"])
        .arg(out.path())
        .arg(&url)
        .output()
        .expect("curl is installed");
    let status = String::from_utf8_lossy(&r.stdout).to_string();
    assert_eq!(
        status,
        "200",
        "{}\n{}",
        String::from_utf8_lossy(&r.stderr),
        gw.log()
    );
    assert_eq!(std::fs::read(out.path()).expect("curl's copy"), zip);

    // The cache, not the upstream, is named.
    let failures = r#"modgate_cache_write_failures_total{reason="no_space"}"#;
    assert!(metric(addr, failures) >= 2.0, "{}", gw.log());
    assert_eq!(
        metric(
            addr,
            r#"modgate_upstream_attempts_total{upstream="up",outcome="failed"}"#
        ),
        0.0,
        "the upstream was blamed"
    );
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("disk cache")
            && l.contains(&cache_dir.display().to_string())
            && l.contains("not storing")),
        "no log line names the cache:\n{log}"
    );
    let records = audit_records_for(gw.dir.path(), zip_path.as_str(), 2);
    let zips: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["path"] == zip_path.as_str())
        .collect();
    assert!(zips.len() >= 2, "{records:?}");
    for rec in &zips {
        assert_eq!(rec["status"], 200, "{rec}");
        assert_eq!(rec["cache"], "not-stored", "{rec}");
        let reason = rec["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("cache") && !reason.contains("upstream up"),
            "{rec}"
        );
    }

    // Now fill the filesystem: every miss bypasses the cache, however small.
    let filler = fs.path().join("filler");
    let free = fs.available();
    std::fs::write(&filler, vec![0u8; free as usize]).ok();
    assert!(
        fs.available() < 64 << 10,
        "{} bytes still free",
        fs.available()
    );
    for path in [
        format!("/{BIG}/@v/v1.1.0.info"),
        format!("/{BIG}/@v/v1.1.0.mod"),
        format!("/{BIG}/@v/v1.1.0.zip"),
    ] {
        let r = get(addr, &path).expect("get");
        assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), gw.log());
        assert_eq!(r.header("x-modgate-cache"), Some("not-stored"), "{path}");
    }
    let small_zip = small.zip().expect("zip");
    let r = get(addr, &format!("/{BIG}/@v/v1.1.0.zip")).expect("get");
    assert_eq!(r.body, small_zip);
    assert!(metric(addr, failures) >= 6.0);
    drop(gw);
}

/// An exact version is checked before it is served, held whole while it is: in an unnamed
/// file on the cache's filesystem, in memory (within `cache.max_spill`) when that filesystem
/// is full. A zip neither can hold is a 503 that names the cache's filesystem (not the
/// upstream, and never a cut transfer); one that fits in memory is served whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zip_that_neither_the_full_cache_nor_the_spill_budget_can_hold_is_a_503_naming_the_cache()
{
    const HELD: &str = "example.com/held";
    let Some(fs) = Tmpfs::mount("2m", 0o700) else {
        return;
    };
    let big = ModuleVersion::new(HELD, "v1.0.0")
        .expect("module")
        .file("blob.bin", &noise(3 << 20, 21));
    let mid = ModuleVersion::new(HELD, "v1.1.0")
        .expect("module")
        .file("blob.bin", &noise(1536 << 10, 22));
    let (big_zip, mid_zip) = (big.zip().expect("zip"), mid.zip().expect("zip"));
    let upstream = FixtureProxy::start(&[big.clone(), mid.clone()])
        .await
        .expect("fixture");
    let state = tempfile::tempdir().expect("tempdir");
    let cache_dir = fs.path().join("cache");
    let addr = free_addr();
    let ledger = state.path().join("ledger.sqlite");
    let gw = Gateway::start(
        &one_cached_route(
            addr,
            &upstream.url(),
            &cache_dir,
            &ledger,
            "  max_spill: 2MiB\n",
        ),
        addr,
    );
    // Fill the filesystem.
    let free = fs.available();
    std::fs::write(fs.path().join("filler"), vec![0u8; free as usize]).ok();
    assert!(fs.available() < 64 << 10, "{} bytes free", fs.available());

    // 1.5 MiB: more than is kept in memory anyway, held in memory for want of disk.
    let mid_path = format!("/{HELD}/@v/v1.1.0.zip");
    let r = get(addr, &mid_path).expect("get");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.log());
    assert!(r.body == mid_zip, "{} bytes", r.body.len());
    assert_eq!(r.header("x-modgate-cache"), Some("not-stored"));
    let held = r#"modgate_verified_fetches_total{result="held_in_memory"}"#;
    assert_eq!(metric(addr, held), 1.0);

    // 3 MiB: over the budget.
    let big_path = format!("/{HELD}/@v/v1.0.0.zip");
    let r = get(addr, &big_path).expect("get");
    let text = r.text();
    assert_eq!(r.status, 503, "{text}\n{}", gw.log());
    assert!(
        text.contains(&format!("{HELD}@v1.0.0 (.zip)"))
            && text.contains(&cache_dir.display().to_string())
            && text.contains("cache filesystem")
            && !text.contains("upstream up"),
        "{text}"
    );
    assert_eq!(
        metric(
            addr,
            r#"modgate_verified_fetches_total{result="unavailable"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            addr,
            r#"modgate_upstream_attempts_total{upstream="up",outcome="failed"}"#
        ),
        0.0,
        "the upstream was blamed"
    );
    let records = audit_records_for(gw.dir.path(), big_path.as_str(), 1);
    let rec = records
        .iter()
        .find(|r| r["path"] == big_path.as_str())
        .expect("the 503's audit record");
    assert_eq!(rec["status"], 503, "{rec}");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("cache filesystem"),
        "{rec}"
    );
    // Nothing was recorded in the ledger for the zip that could not be checked.
    let ledger = Ledger::open(&ledger).expect("ledger");
    assert_eq!(
        ledger.get(HELD, "v1.0.0", Artifact::Zip).expect("get"),
        None
    );
    assert_eq!(
        ledger
            .get(HELD, "v1.1.0", Artifact::Zip)
            .expect("get")
            .map(|e| e.sha256),
        Some(sha256(&mid_zip))
    );
    // Not remembered as a refusal: the next request asks the upstream again.
    let asked = || {
        upstream
            .requests()
            .iter()
            .filter(|q| q.path == big_path && q.method == "GET")
            .count()
    };
    assert_eq!(asked(), 1);
    let r = get(addr, &big_path).expect("get");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(asked(), 2);
    assert!(big_zip.len() > 2 << 20);
    drop(gw);
}

/// A minimal upstream whose `list` answers are chunked (no `Content-Length`, so the cache
/// cannot know their size before writing) and `body` long; everything else is a 404.
fn chunked_upstream(body: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let addr = raw_upstream(move |path, stream| {
        if !path.ends_with("/@v/list") {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        );
        for piece in body.chunks(64 << 10) {
            let mut frame = format!("{:x}\r\n", piece.len()).into_bytes();
            frame.extend_from_slice(piece);
            frame.extend_from_slice(b"\r\n");
            if stream.write_all(&frame).is_err() {
                return;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n");
    });
    (addr, served)
}

/// An answer of unknown length (chunked) that runs the cache's filesystem out of space half-way:
/// the cache lets go of it and the client still gets every byte (the rest is held in memory for
/// the readers of the write, within a bound); nothing is stored, the failure is counted and
/// names the cache. Watched failing first: the transfer was cut after about 1 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_of_unknown_length_that_fills_the_cache_disk_is_still_served_whole() {
    let Some(fs) = Tmpfs::mount("2m", 0o700) else {
        return;
    };
    let mut body = Vec::new();
    let mut i = 0u64;
    while body.len() < 3 << 20 {
        body.extend_from_slice(format!("v1.0.{i}\n").as_bytes());
        i += 1;
    }
    let (up, served) = chunked_upstream(body.clone());
    let cache_dir = fs.path().join("cache");
    let state = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", metrics: true, debug_headers: true }}
upstreams:
  up: {{ url: "http://{up}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
cache:
  dir: "{cache}"
  ledger: "{ledger}"
  fsync: false
audit: {{ output: audit.jsonl }}
"#,
        cache = cache_dir.display(),
        ledger = state.path().join("ledger.sqlite").display(),
    );
    let gw = Gateway::start(&config, addr);
    let list = "/example.com/chunky/@v/list";
    let r = get(addr, list).unwrap_or_else(|e| panic!("GET {list}: {e}\n{}", gw.log()));
    assert_eq!(r.status, 200, "{}", gw.log());
    assert_eq!(r.body.len(), body.len(), "cut short:\n{}", gw.log());
    assert!(r.body == body, "other bytes than the upstream's");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // Not stored: the next request goes upstream again, and is whole too.
    let r = get(addr, list).expect("get");
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert_eq!(served.load(Ordering::SeqCst), 2);
    let failures = r#"modgate_cache_write_failures_total{reason="no_space"}"#;
    assert!(metric(addr, failures) >= 1.0, "{}", gw.log());
    assert_eq!(
        metric(
            addr,
            r#"modgate_upstream_attempts_total{upstream="up",outcome="failed"}"#
        ),
        0.0
    );
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("disk cache") && l.contains("not storing") && l.contains(list)),
        "{log}"
    );
    // nothing left behind on the full disk
    assert!(
        fs.available() > 1 << 20,
        "{} bytes free after the write was dropped",
        fs.available()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Stale-while-revalidate behind an upstream that needs the caller's identity
// ---------------------------------------------------------------------------------------------

const ALICE_TOKEN: &str = "alice-token-0123456789";

fn token_line(name: &str, token: &str) -> String {
    format!("{name}:sha256:{}\n", sha256(token.as_bytes()))
}

/// A private upstream that knows only the callers the gateway forwards to it (here alice, as
/// `X-Modgate-Identity: token:alice`) and answers 404 to anyone else, behind a route whose
/// lists are fresh for 1 s and served stale for an hour while one refresh runs. The
/// background refresh must ask as alice (it went as `anonymous`, and the upstream's 404 then
/// replaced the list for everyone); and a refresh the upstream refuses must leave the good
/// list in place. Watched failing first: the list became a 404 after the refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_background_refresh_asks_as_the_requester_and_never_stores_a_refusal() {
    const M: &str = "corp.example.com/swr";
    let v1 = ModuleVersion::new(M, "v1.0.0").expect("module");
    let upstream = FixtureProxy::start(std::slice::from_ref(&v1))
        .await
        .expect("fixture");
    upstream.mark_private();
    upstream.require_header_status("x-modgate-identity", "token:alice", 404);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tokens"), token_line("alice", ALICE_TOKEN)).expect("tokens");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", metrics: true, debug_headers: true }}
upstreams:
  corp:
    url: "{up}"
    private: true
    forward_identity: {{ identity: true }}
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true,
       cache: {{ mutable: 1s, stale_while_revalidate: 1h }} }}
auth:
  tokens_file: tokens
access:
  roles:
    - {{ name: devs, members: [ {{ token: alice }} ], rules: [ {{ allow: {{ prefix: corp.example.com }} }} ] }}
cache:
  dir: "@DIR@/cache"
  fsync: false
audit: {{ output: audit.jsonl }}
"#,
        up = upstream.url(),
    );
    let gw = Gateway::start_in(dir, &config, addr);
    let list = format!("/{M}/@v/list");
    let bearer = format!("Bearer {ALICE_TOKEN}");
    let as_alice = || {
        let r = request(addr, "GET", &list, &[("Authorization", bearer.as_str())]).expect("get");
        assert_eq!(r.status, 200, "{}: {}\n{}", list, r.text(), gw.log());
        (
            r.text(),
            r.header("x-modgate-cache").unwrap_or_default().to_string(),
        )
    };
    let upstream_gets = || {
        upstream
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&list))
            .count()
    };
    assert_eq!(as_alice(), ("v1.0.0\n".to_string(), "miss".to_string()));

    // A new version upstream; once the list is past its TTL, alice's request is answered
    // stale and starts the background refresh, which must ask as alice.
    upstream
        .add(&ModuleVersion::new(M, "v1.1.0").expect("module"))
        .expect("add");
    std::thread::sleep(Duration::from_millis(1100));
    let (body, outcome) = as_alice();
    assert_eq!(body, "v1.0.0\n");
    assert_eq!(outcome, "stale-updating");
    let refreshed = wait_logged("the refreshed list", 10, Some(&gw), || {
        let (body, _) = as_alice();
        (body == "v1.0.0\nv1.1.0\n").then_some(body)
    });
    assert_eq!(refreshed, "v1.0.0\nv1.1.0\n");
    let refreshes: Vec<_> = upstream
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&list))
        .collect();
    assert!(
        refreshes
            .iter()
            .all(|r| r.header("x-modgate-identity") == Some("token:alice")),
        "a request reached the upstream without alice's identity: {refreshes:?}"
    );

    // Now the upstream refuses alice too: the refresh fails, the good list stays.
    upstream.require_header_status("x-modgate-identity", "token:nobody", 404);
    let before = upstream_gets();
    std::thread::sleep(Duration::from_millis(1100));
    // Each request meanwhile is answered with the good list and may start a refresh; two
    // refused refreshes have run (the first one's answer is dealt with by then).
    wait_logged("two refused refreshes", 10, Some(&gw), || {
        let (body, outcome) = as_alice();
        assert_eq!(body, "v1.0.0\nv1.1.0\n", "the refusal replaced the list");
        assert_eq!(outcome, "stale-updating");
        (upstream_gets() >= before + 2).then_some(())
    });
    for _ in 0..3 {
        let (body, outcome) = as_alice();
        assert_eq!(body, "v1.0.0\nv1.1.0\n", "the refusal replaced the list");
        assert_eq!(outcome, "stale-updating");
    }
}

// ---------------------------------------------------------------------------------------------
// 24. A body cut short on disk
// ---------------------------------------------------------------------------------------------

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A cached zip whose body file is cut to half its length: `modgate cache verify` (beside
/// the running gateway) reports it, exit 1, naming the module version, and leaves it in place
/// (it only reports); the next start-up scan removes it and says which object and why.
/// Watched failing first: verify's own opening of the cache dropped the object without a
/// word, then reported "0 mismatch(es)" and exit 0, and the restarted gateway had nothing
/// left to log.
#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_a_truncated_body_and_the_start_up_scan_logs_what_it_drops() {
    const M: &str = "example.com/cut";
    let v1 = ModuleVersion::new(M, "v1.0.0")
        .expect("module")
        .file("cut.go", b"package cut\n")
        .file("testdata/blob.bin", &noise(64 << 10, 3));
    let upstream = FixtureProxy::start(std::slice::from_ref(&v1))
        .await
        .expect("fixture");
    let cache = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}" }}
upstreams:
  up: {{ url: "{up}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
cache:
  dir: "{cache}"
  fsync: false
audit: {{ output: "off" }}
"#,
        up = upstream.url(),
        cache = cache.path().display(),
    );
    let mut gw = Gateway::start(&config, addr);
    let zip_path = format!("/{M}/@v/v1.0.0.zip");
    let r = get(addr, &zip_path).expect("get");
    assert_eq!(r.status, 200);
    let zip = v1.zip().expect("zip");
    // The object is committed once its meta file is there; its body is the largest file.
    let body = wait_for("the committed zip", 10, || {
        let files = files_under(cache.path());
        files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "meta"))
            .then(|| {
                files
                    .into_iter()
                    .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == zip.len() as u64))
                    .find(|p| !p.to_string_lossy().contains(".sqlite"))
            })
            .flatten()
    });
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&body)
        .expect("open body");
    f.set_len(zip.len() as u64 / 2).expect("truncate");
    drop(f);

    let (code, out, err) = cli(&gw.config_path, &["cache", "verify"]);
    assert_eq!(code, 1, "a truncated body is a finding:\n{out}{err}");
    assert!(out.contains("1 mismatch(es)"), "{out}");
    let finding = out
        .lines()
        .find(|l| l.starts_with("MISMATCH"))
        .unwrap_or_else(|| panic!("no finding in:\n{out}"));
    assert!(finding.contains(&format!("{M}@v1.0.0")), "{finding}");
    assert!(finding.contains("bytes"), "says what is wrong: {finding}");
    assert!(
        body.exists(),
        "verify without --purge deleted {}",
        body.display()
    );

    // The next start: the scan drops it and says so.
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(30)).is_some(),
        "{}",
        gw.log()
    );
    let gw = Gateway::start(&config, addr);
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("removing")
            && l.contains(&format!("{M}/@v/v1.0.0.zip"))
            && l.contains(&format!("{} bytes", zip.len() / 2))),
        "the start-up scan did not say what it dropped:\n{log}"
    );
    assert!(!body.exists());
    // And the zip is fetched again, whole.
    let r = get(addr, &zip_path).expect("get");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, zip);
}

// ---------------------------------------------------------------------------------------------
// helpers shared by the other sections
// ---------------------------------------------------------------------------------------------

fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let config = config.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", config.as_str()]);
    let out = modgate(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
