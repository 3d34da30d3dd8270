//! What the gateway records when things go wrong (issue 18), against the real binary:
//! - a full audit filesystem (a real tmpfs, filled): with `audit.fail_mode: open` requests
//!   are served, every lost record is counted in `modgate_audit_records_lost_total` (exactly:
//!   lines written plus records lost is the number of audited requests), the failure is logged
//!   once rather than per write, and after space returns every line of the file is whole JSON;
//!   with `fail_mode: closed` requests are refused with a 503 that says why, until a record can
//!   be written again; a gateway stopped while the disk is full leaves no half-record at the
//!   end of the file for the next process to glue its first record to;
//! - a transfer the upstream cuts mid-body is audited as `incomplete`, with the bytes the
//!   client got and why (not as a clean 200);
//! - an HTTP/1.1 keep-alive answer given during the SIGTERM drain says `Connection: close`;
//! - ordinary traffic (HTTP/2 clients that connect and close, a `modgate warm` over HTTP/2, a
//!   first start with a cache) logs no ERROR or WARN line;
//! - a request still in flight when the grace period ends gets an access line and an
//!   `incomplete` audit record, and the drain says it cuts it;
//! - spans dropped for a collector that is down are said in the log and counted on `/metrics`
//!   at the next scrape, without waiting for a request.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use modgate_testkit::{free_addr, get, metric, FixtureProxy, Gateway, ModuleVersion, Tmpfs};

const INFO: &str = "/example.com/pub/@v/v1.0.0.info";
const LOST: &str = "modgate_audit_records_lost_total";

struct World {
    gw: Gateway,
    addr: SocketAddr,
    _upstream: FixtureProxy,
    _rt: tokio::runtime::Runtime,
}

fn world(extra: &str) -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let modules = [ModuleVersion::new("example.com/pub", "v1.0.0").expect("module")];
    let upstream = rt.block_on(FixtureProxy::start(&modules)).expect("fixture");
    let addr = free_addr();
    let config = format!(
        "listeners:\n  - {{ name: plain, address: \"{addr}\", metrics: true }}\n\
         upstreams:\n  up: {{ url: \"{}\" }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n{extra}",
        upstream.url()
    );
    let gw = Gateway::start(&config, addr);
    World {
        gw,
        addr,
        _upstream: upstream,
        _rt: rt,
    }
}

/// The audit file's lines; every one must be a whole JSON object.
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the audit file ends in a partial line: {:?}",
        &text[text.len().saturating_sub(200)..]
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit line {} is not JSON ({e}): {l}", i + 1))
        })
        .collect()
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Waits (bounded) until every one of `audited` records is accounted for: written as a line
/// or counted lost. Returns (lines, lost).
fn settle(addr: SocketAddr, path: &Path, audited: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lost = metric(addr, LOST) as usize;
        let lines = line_count(path);
        if lines + lost >= audited {
            return (lines, lost);
        }
        assert!(
            Instant::now() < deadline,
            "records unaccounted for: {lines} line(s) + {lost} lost < {audited} audited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// ERROR lines about the audit log in the process log.
fn audit_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("ERROR") && l.contains("audit"))
        .collect()
}

#[test]
fn a_full_audit_disk_fail_open_serves_counts_every_lost_record_and_leaves_whole_lines() {
    let Some(fs) = Tmpfs::mount("256k", 0o755) else {
        return;
    };
    let audit = fs.path().join("audit.log");
    let w = world(&format!("audit: {{ output: \"{}\" }}\n", audit.display()));
    let mut audited = 0;
    for _ in 0..5 {
        assert_eq!(get(w.addr, INFO).expect("fetch").status, 200);
        audited += 1;
    }
    assert_eq!(settle(w.addr, &audit, audited), (5, 0));

    let filler = fs.fill();
    // Fail open: the full disk does not stop requests.
    for i in 0..60 {
        let r = get(w.addr, INFO).expect("fetch");
        assert_eq!(
            r.status,
            200,
            "request {i} on a full audit disk: {}",
            r.text()
        );
        audited += 1;
    }
    let (lines, lost) = settle(w.addr, &audit, audited);
    assert!(
        lost > 0,
        "nothing counted lost on a full disk ({lines} lines)"
    );
    assert_eq!(lines + lost, audited, "the counter is not exact");

    // Space returns: later records land, each on a line of its own.
    std::fs::remove_file(&filler).expect("free the tmpfs");
    for _ in 0..5 {
        assert_eq!(get(w.addr, INFO).expect("fetch").status, 200);
        audited += 1;
    }
    let (lines, lost_after) = settle(w.addr, &audit, audited);
    assert_eq!(lost_after, lost, "records lost after space returned");
    let records = audit_lines(&audit);
    assert_eq!(records.len(), lines);
    assert_eq!(lines + lost, audited);
    assert!(records.iter().all(|r| r["path"] == INFO));

    // Said once (when writes started failing), not per write; and the recovery is logged.
    let log = w.gw.log();
    let errors = audit_errors(&log);
    assert!(
        !errors.is_empty() && errors.len() <= 2,
        "{} ERROR line(s) about the audit log:\n{}",
        errors.len(),
        errors.join("\n")
    );
    assert!(errors[0].contains("fail_mode: open"), "{}", errors[0]);
    assert!(log.contains("writes recovered"), "{log}");
}

#[test]
fn a_full_audit_disk_fail_closed_refuses_with_a_reason_until_records_can_be_written() {
    let Some(fs) = Tmpfs::mount("256k", 0o755) else {
        return;
    };
    let audit = fs.path().join("audit.log");
    let w = world(&format!(
        "audit: {{ output: \"{}\", fail_mode: closed }}\n",
        audit.display()
    ));
    let mut audited = 0;
    for _ in 0..3 {
        assert_eq!(get(w.addr, INFO).expect("fetch").status, 200);
        audited += 1;
    }
    assert_eq!(settle(w.addr, &audit, audited), (3, 0));

    let filler = fs.fill();
    // The first failed write closes the gate: within a few requests every answer is a 503
    // that says why.
    let mut refused = None;
    for _ in 0..200 {
        let r = get(w.addr, INFO).expect("fetch");
        audited += 1;
        if r.status == 503 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        // Let the writer try the record before the next request (bounded).
        settle(w.addr, &audit, audited);
    }
    let refused = refused.expect("never refused on a full audit disk");
    assert!(
        refused.text().contains("cannot write its audit log")
            && refused.text().contains("fail_mode: closed"),
        "{}",
        refused.text()
    );
    for _ in 0..5 {
        let r = get(w.addr, INFO).expect("fetch");
        audited += 1;
        assert_eq!(r.status, 503, "served while the audit disk is full");
    }
    let (lines, lost) = settle(w.addr, &audit, audited);
    assert_eq!(lines + lost, audited);

    // Space returns: the refused requests' own records are the writes that find out, and
    // requests are served again.
    std::fs::remove_file(&filler).expect("free the tmpfs");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(w.addr, INFO).expect("fetch");
        audited += 1;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after space returned"
        );
        settle(w.addr, &audit, audited);
    }
    let (lines, lost_after) = settle(w.addr, &audit, audited);
    assert_eq!(lost_after, lost);
    assert_eq!(lines + lost, audited);
    let records = audit_lines(&audit);
    let refusals: Vec<_> = records.iter().filter(|r| r["status"] == 503).collect();
    assert!(!refusals.is_empty(), "no refusal recorded after recovery");
    assert!(refusals.iter().all(|r| r["decision"] == "error"
        && r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("audit log"))));
    let errors = audit_errors(&w.gw.log()).len();
    assert!(errors <= 2, "{errors} ERROR lines about the audit log");
}

#[test]
fn a_gateway_stopped_on_a_full_audit_disk_leaves_no_partial_line_for_the_next_one() {
    let Some(fs) = Tmpfs::mount("256k", 0o755) else {
        return;
    };
    let audit = fs.path().join("audit.log");
    let extra = format!("audit: {{ output: \"{}\" }}\n", audit.display());
    let mut w = world(&extra);
    for _ in 0..3 {
        assert_eq!(get(w.addr, INFO).expect("fetch").status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while line_count(&audit) < 3 {
        assert!(Instant::now() < deadline, "records never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let filler = fs.fill();
    for _ in 0..20 {
        assert_eq!(get(w.addr, INFO).expect("fetch").status, 200);
    }
    // Stopped while the disk is still full: what it could not write must not end the file
    // with half a record.
    w.gw.signal("TERM");
    assert!(w.gw.wait_exit(Duration::from_secs(30)).is_some());
    let before = audit_lines(&audit).len();
    std::fs::remove_file(&filler).expect("free the tmpfs");
    // The next process appends to the same file: each of its records is a line of its own.
    let w2 = world(&extra);
    for _ in 0..3 {
        assert_eq!(get(w2.addr, INFO).expect("fetch").status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while line_count(&audit) < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the new process's records never written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let records = audit_lines(&audit);
    assert!(records.iter().all(|r| r["path"] == INFO));
}

/// An upstream that answers every request `200` with a `Content-Length` of `total` bytes, sends
/// `sent` of them and closes the connection. Serves until dropped.
struct CuttingUpstream {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CuttingUpstream {
    fn start(total: usize, sent: usize) -> CuttingUpstream {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\n\
                     Content-Length: {total}\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes());
                let chunk = vec![b'z'; 64 * 1024];
                let mut left = sent;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                let _ = s.flush();
                // Dropped: the body ends short of its Content-Length.
            }
        });
        CuttingUpstream { addr, stop }
    }
}

impl Drop for CuttingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The audit record of `path` in `file`, waiting for it (bounded).
fn audit_record_of(file: &Path, path: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(r) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["path"] == path)
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record for {path}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_transfer_the_upstream_cuts_is_audited_as_cut_with_the_bytes_sent_and_why() {
    let up = CuttingUpstream::start(200_000, 100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.log");
    let addr = free_addr();
    let config = format!(
        "listeners:\n  - {{ name: plain, address: \"{addr}\" }}\n\
         upstreams:\n  up: {{ url: \"http://{}\" }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n\
         audit: {{ output: \"{}\" }}\n",
        up.addr,
        audit.display()
    );
    let _gw = Gateway::start(&config, addr);
    let zip = "/example.com/cut/@v/v1.0.0.zip";
    // The client sees a 200 whose body stops short (or an error): either way not the whole.
    if let Ok(r) = get(addr, zip) {
        assert!(r.body.len() < 200_000, "the whole body arrived");
    }
    let record = audit_record_of(&audit, zip);
    assert_eq!(record["incomplete"], true, "{record}");
    let bytes = record["bytes"].as_u64().expect("bytes");
    assert!(bytes > 0 && bytes < 200_000, "{record}");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cut") && reason.contains(&bytes.to_string()),
        "{record}"
    );
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `s`: (head, body).
fn read_one_response(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).expect("read the answer");
        assert!(n > 0, "connection closed before an answer: {data:?}");
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    while data.len() < head_end + len {
        let n = s.read(&mut buf).expect("read the body");
        assert!(n > 0, "body cut");
        data.extend_from_slice(&buf[..n]);
    }
    (head, data[head_end..head_end + len].to_vec())
}

#[test]
fn a_keepalive_answer_during_the_drain_says_connection_close() {
    use std::io::Write;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let modules = [ModuleVersion::new("example.com/pub", "v1.0.0").expect("module")];
    let upstream = rt.block_on(FixtureProxy::start(&modules)).expect("fixture");
    let addr = free_addr();
    let config = format!(
        "server:\n  grace_period: 60s\n  shutdown_timeout: 60s\n\
         listeners:\n  - {{ name: plain, address: \"{addr}\" }}\n\
         upstreams:\n  up: {{ url: \"{}\" }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n",
        upstream.url()
    );
    let mut gw = Gateway::start(&config, addr);
    // A keep-alive connection: one answer before the drain says keep-alive...
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let req = format!("GET {INFO} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let (head, _) = read_one_response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    // ...the next is in flight (held by the upstream) when SIGTERM arrives.
    upstream.set_behaviour(
        INFO,
        modgate_testkit::Behaviour::Delay(Duration::from_millis(1500)),
    );
    let before = upstream.request_count();
    s.write_all(req.as_bytes()).expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.request_count() == before {
        assert!(Instant::now() < deadline, "never reached the upstream");
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.signal("TERM");
    let (head, body) = read_one_response(&mut s);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!body.is_empty());
    assert!(
        head.contains("connection: close"),
        "an answer during the drain did not say Connection: close:\n{head}"
    );
    assert_eq!(
        gw.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        gw.log()
    );
}

/// Lines of the process log at ERROR or WARN (text format: `[time LEVEL target] …`).
fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect()
}

#[test]
fn ordinary_traffic_logs_no_error_or_warning() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let modules = [
        ModuleVersion::new("example.com/pub", "v1.0.0").expect("module"),
        ModuleVersion::new("example.com/other", "v1.2.0").expect("module"),
    ];
    let upstream = rt.block_on(FixtureProxy::start(&modules)).expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    modgate_testkit::make_certs(dir.path(), "noise test CA", "noise-client");
    let cache = dir.path().join("cache");
    let tls = free_addr();
    let config = format!(
        "listeners:\n  - name: tls\n    address: \"{tls}\"\n    \
         tls: {{ cert: server.pem, key: server.key }}\n\
         upstreams:\n  up: {{ url: \"{}\" }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n\
         cache:\n  dir: \"{}\"\n",
        upstream.url(),
        cache.display()
    );
    let gw = Gateway::start_in(dir, &config, tls);
    let ca = gw.dir.path().join("ca.pem");
    // HTTP/2 clients that connect and close without a request (health probes, pools).
    for _ in 0..3 {
        let out = Command::new("openssl")
            .args(["s_client", "-alpn", "h2", "-connect", &tls.to_string()])
            .arg("-CAfile")
            .arg(&ca)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client (install openssl)");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("ALPN protocol: h2"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // One `modgate warm` over HTTPS (HTTP/2).
    let list = gw.dir.path().join("modules.txt");
    std::fs::write(&list, "example.com/pub@v1.0.0\nexample.com/other@v1.2.0\n").expect("list");
    let out = Command::new(modgate_testkit::modgate_bin())
        .args(["warm", "--gateway", &format!("https://{tls}"), "--ca"])
        .arg(&ca)
        .arg("--list")
        .arg(&list)
        .output()
        .expect("modgate warm");
    assert!(
        out.status.success(),
        "warm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every request of the warm has its access line before the log is judged.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.log().matches("modgate::access").count() < 6 {
        assert!(
            Instant::now() < deadline,
            "access lines missing:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = gw.log();
    let loud = loud_lines(&log);
    assert!(
        loud.is_empty(),
        "ordinary traffic logged {} ERROR/WARN line(s):\n{}",
        loud.len(),
        loud.join("\n")
    );
    // A first start has no saved LRU state, and that is not worth a line at INFO either.
    assert!(!log.contains("no usable LRU state"), "{log}");
}

#[test]
fn a_request_cut_at_the_end_of_the_grace_period_is_logged_and_audited() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let modules = [ModuleVersion::new("example.com/pub", "v1.0.0").expect("module")];
    let upstream = rt.block_on(FixtureProxy::start(&modules)).expect("fixture");
    upstream.set_behaviour(INFO, modgate_testkit::Behaviour::Hang);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.log");
    let addr = free_addr();
    let config = format!(
        "server:\n  grace_period: 1s\n  shutdown_timeout: 1s\n\
         listeners:\n  - {{ name: plain, address: \"{addr}\" }}\n\
         upstreams:\n  up: {{ url: \"{}\", read_timeout: 60s }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n\
         audit: {{ output: \"{}\" }}\n",
        upstream.url(),
        audit.display()
    );
    let mut gw = Gateway::start(&config, addr);
    let held = std::thread::spawn(move || get(addr, INFO));
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.request_count() == 0 {
        assert!(Instant::now() < deadline, "never reached the upstream");
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(30)).is_some(),
        "{}",
        gw.log()
    );
    let _ = held.join();
    let log = gw.log();
    assert!(
        log.contains("1 request(s) still in flight at the end of the grace period"),
        "{log}"
    );
    let access = log
        .lines()
        .find(|l| l.contains("modgate::access") && l.contains(INFO))
        .unwrap_or_else(|| panic!("no access line for the cut request:\n{log}"));
    assert!(access.contains("cut"), "{access}");
    let record = audit_record_of(&audit, INFO);
    assert_eq!(record["incomplete"], true, "{record}");
    assert!(
        record["reason"]
            .as_str()
            .is_some_and(|r| r.contains("grace period")),
        "{record}"
    );
}

#[test]
fn spans_dropped_for_a_collector_that_is_down_are_said_and_counted_at_the_next_scrape() {
    // A port nothing listens on: the collector is down.
    let collector = free_addr();
    let w = world(&format!(
        "telemetry: {{ otlp_endpoint: \"http://{collector}\", sample_ratio: 1.0, timeout: 1s }}\n"
    ));
    assert_eq!(get(w.addr, INFO).expect("fetch").status, 200);
    // No request after it: only scrapes (not requests) must show the drop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(w.addr, "modgate_otel_spans_dropped_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the dropped span never showed on /metrics:\n{}",
            w.gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.gw.log().contains("OTLP span export failed") {
        assert!(
            Instant::now() < deadline,
            "the drop is silent:\n{}",
            w.gw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cache_tier_git_refresh_and_route_latency_metrics_exist_and_move() {
    const HOST: &str = "git.corp.example";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let modules: Vec<ModuleVersion> = (0..8)
        .map(|i| ModuleVersion::new(&format!("example.com/m{i}"), "v1.0.0").expect("module"))
        .collect();
    let upstream = rt.block_on(FixtureProxy::start(&modules)).expect("fixture");
    let host = rt
        .block_on(modgate_testkit::GitHost::start(&[HOST]))
        .expect("git host");
    host.allow_anonymous();
    let repo = host.create_repo("group/repo").expect("repo");
    repo.write("go.mod", format!("module {HOST}/group/repo\n\ngo 1.21\n"))
        .expect("write");
    repo.write("lib.go", b"package repo\n").expect("write");
    repo.commit("v1.0.0", 1_710_497_472).expect("commit");
    repo.tag("v1.0.0").expect("tag");
    repo.push().expect("push");
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let config = format!(
        "server:\n  git_dir: \"{mirrors}\"\n\
         listeners:\n  - {{ name: plain, address: \"{addr}\", metrics: true }}\n\
         upstreams:\n  up: {{ url: \"{up}\" }}\n  \
         corp-git: {{ kind: git, url: \"{git}\", module: \"{HOST}/{{group}}/{{repo}}\", \
         repo: \"{{group}}/{{repo}}.git\", private: true }}\n\
         routes:\n  - {{ name: git, match: {{ prefix: {HOST} }}, chain: [corp-git], \
         private: true }}\n  \
         - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n\
         access:\n  default: allow\n  roles:\n    - name: everyone\n      \
         members: [ anonymous ]\n      rules:\n        \
         - {{ id: git-read, allow: {{ prefix: {HOST} }} }}\n\
         cache:\n  dir: \"{cache}\"\n  memory: 1KiB\n  memory_object_max: 512B\n",
        mirrors = dir.path().join("mirrors").display(),
        up = upstream.url(),
        git = host.url(),
        cache = dir.path().join("cache").display(),
    );
    let gw = Gateway::start(&config, addr);
    let m = |series: &str| metric(addr, series);
    let text = get(addr, "/metrics").expect("metrics").text();
    for name in [
        "modgate_cache_objects{tier=\"memory\"}",
        "modgate_cache_objects{tier=\"disk\"}",
        "modgate_cache_bytes{tier=\"disk\"}",
        "modgate_cache_evictions_total{tier=\"memory\"}",
        "modgate_cache_evictions_total{tier=\"disk\"}",
        "modgate_git_mirror_refreshes_total{result=\"ok\"}",
        "modgate_git_mirror_refreshes_total{result=\"error\"}",
        "modgate_git_mirror_refresh_duration_seconds_count",
        "modgate_route_request_duration_seconds_count{route=\"all\",status_class=\"2xx\"}",
        "modgate_audit_records_lost_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} is not on /metrics before any request"
        );
    }
    // Eight cached answers through a memory tier that holds a few: the disk tier fills, the
    // memory tier evicts.
    for i in 0..8 {
        let r = get(addr, &format!("/example.com/m{i}/@v/v1.0.0.info")).expect("fetch");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while m("modgate_cache_objects{tier=\"disk\"}") < 8.0 {
        assert!(Instant::now() < deadline, "disk objects never counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(m("modgate_cache_bytes{tier=\"disk\"}") > 0.0);
    assert!(m("modgate_cache_objects{tier=\"memory\"}") > 0.0);
    assert!(m("modgate_cache_bytes{tier=\"memory\"}") > 0.0);
    assert!(
        m("modgate_cache_evictions_total{tier=\"memory\"}") >= 1.0,
        "no memory eviction counted:\n{}",
        get(addr, "/metrics").expect("metrics").text()
    );
    assert!(
        m("modgate_route_request_duration_seconds_count{route=\"all\",status_class=\"2xx\"}")
            >= 8.0
    );
    // A Git module: one refresh that works; an unknown repository: one that fails.
    let r = get(addr, &format!("/{HOST}/group/repo/@v/v1.0.0.info")).expect("fetch");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(m("modgate_git_mirror_refreshes_total{result=\"ok\"}") >= 1.0);
    assert!(m("modgate_git_mirror_refresh_duration_seconds_count") >= 1.0);
    let r = get(addr, &format!("/{HOST}/group/nothing/@v/v1.0.0.info")).expect("fetch");
    assert!(r.status >= 400, "{}", r.text());
    assert!(
        m("modgate_git_mirror_refreshes_total{result=\"error\"}") >= 1.0,
        "{}",
        gw.log()
    );
    let class = if r.status >= 500 { "5xx" } else { "4xx" };
    assert!(
        m(&format!(
            "modgate_route_request_duration_seconds_count{{route=\"git\",status_class=\"{class}\"}}"
        )) >= 1.0
    );
}

#[test]
fn a_client_that_goes_away_mid_zip_is_audited_as_a_cut_transfer() {
    use std::io::{Read, Write};
    const TOTAL: usize = 256 << 20;
    let up = CuttingUpstream::start(TOTAL, TOTAL);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.log");
    let addr = free_addr();
    let config = format!(
        "listeners:\n  - {{ name: plain, address: \"{addr}\" }}\n\
         upstreams:\n  up: {{ url: \"http://{}\" }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n\
         audit: {{ output: \"{}\" }}\n",
        up.addr,
        audit.display()
    );
    let _gw = Gateway::start(&config, addr);
    let zip = "/example.com/big/@v/v1.0.0.zip";
    {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let req = format!("GET {zip} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).expect("send");
        let mut got = 0;
        let mut buf = [0u8; 65536];
        while got < 1 << 20 {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "the answer ended early");
            got += n;
        }
        // The client goes away after 1 MiB of 256.
    }
    let record = audit_record_of(&audit, zip);
    assert_eq!(record["incomplete"], true, "{record}");
    assert_eq!(record["status"], 200, "{record}");
    let bytes = record["bytes"].as_u64().expect("bytes");
    assert!(bytes < TOTAL as u64, "{record}");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("by the client"), "{record}");
}
