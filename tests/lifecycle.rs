//! Process lifecycle against the real binary (issue 9, operator papercuts):
//! - SIGTERM with a `grace_period` of a minute: a request in flight finishes, and the process
//!   exits as soon as it has, not a minute later; the pid file is gone.
//! - SIGQUIT with no new process waiting on the upgrade socket is refused: the process keeps
//!   serving and says why (a mistaken `kill -QUIT` no longer takes the service down).
//! - SIGINT (fast stop) still saves the cache's LRU state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use modgate_testkit::{free_addr, get, Behaviour, FixtureProxy, Gateway, ModuleVersion};

const INFO: &str = "/example.com/pub/@v/v1.0.0.info";

struct World {
    gw: Gateway,
    addr: SocketAddr,
    upstream: FixtureProxy,
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
        "server:\n  grace_period: 60s\n  shutdown_timeout: 60s\n\
         listeners:\n  - {{ name: plain, address: \"{addr}\" }}\n\
         upstreams:\n  up: {{ url: \"{}\" }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n{extra}",
        upstream.url()
    );
    let gw = Gateway::start(&config, addr);
    World {
        gw,
        addr,
        upstream,
        _rt: rt,
    }
}

#[test]
fn sigterm_exits_as_soon_as_the_last_request_ends() {
    let mut w = world("");
    w.upstream
        .set_behaviour(INFO, Behaviour::Delay(Duration::from_millis(1500)));
    let addr = w.addr;
    let slow = std::thread::spawn(move || get(addr, INFO));
    // The request is in flight (the upstream holds it) when SIGTERM arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.upstream.request_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid_file = w.gw.dir.path().join("modgate.pid");
    assert!(pid_file.exists());
    let signalled = Instant::now();
    w.gw.signal("TERM");
    let answer = slow.join().expect("thread").expect("the request in flight");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.text().contains("v1.0.0"));
    // Well inside the 60 s grace period: the drain noticed nothing was left in flight.
    let code = w.gw.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", w.gw.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "{:?}",
        signalled.elapsed()
    );
    assert!(
        w.gw.log()
            .contains("SIGTERM: no request in flight; exiting before the grace period ends"),
        "{}",
        w.gw.log()
    );
    assert!(!pid_file.exists(), "pid file left behind");
}

#[test]
fn sigquit_without_a_new_process_keeps_serving() {
    let mut w = world("");
    w.gw.signal("QUIT");
    // Once the process has given up waiting for a new process on the upgrade socket.
    w.gw.wait_for_log(
        "SIGQUIT refused: no new process is waiting on",
        Duration::from_secs(30),
    );
    let r = get(w.addr, INFO).expect("still serving after SIGQUIT");
    assert_eq!(r.status, 200);
    // And the process still stops normally.
    w.gw.signal("TERM");
    assert_eq!(w.gw.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn sigint_saves_the_cache_index() {
    let cache = tempfile::tempdir().expect("tempdir");
    let extra = format!("cache:\n  dir: \"{}\"\n", cache.path().display());
    let mut w = world(&extra);
    let r = get(w.addr, INFO).expect("fetch");
    assert_eq!(r.status, 200);
    // The reconciliation after start-up saves one; wait for it, then start from none.
    let state = cache.path().join("eviction").join("index.snapshot");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.exists() {
        assert!(
            Instant::now() < deadline,
            "no reconciliation:\n{}",
            w.gw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&state).expect("rm the reconciliation's snapshot");
    w.gw.signal("INT");
    w.gw.wait_exit(Duration::from_secs(30));
    assert!(
        state.exists(),
        "SIGINT lost the cache index:\n{}",
        w.gw.log()
    );
}

#[test]
fn json_logs_carry_the_access_fields_and_the_audit_trace_id() {
    let audit = tempfile::tempdir().expect("tempdir");
    let audit_file = audit.path().join("audit.log");
    let extra = format!(
        "log: {{ format: json, level: info }}\naudit: {{ output: \"{}\" }}\n",
        audit_file.display()
    );
    let mut w = world(&extra);
    let r = get(w.addr, INFO).expect("fetch");
    assert_eq!(r.status, 200);
    w.gw.signal("TERM");
    assert_eq!(w.gw.wait_exit(Duration::from_secs(30)), Some(0));

    // Every line the process wrote is one JSON object with time, level and target.
    let log = w.gw.log();
    let mut access = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["time"].is_string() && v["level"].is_string(), "{line}");
        if v["target"] == "modgate::access" {
            access.push(v["access"].clone());
        }
    }
    let ok = access
        .iter()
        .find(|a| a["uri"] == INFO)
        .unwrap_or_else(|| panic!("no access object for {INFO}:\n{log}"));
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["listener"], "plain");
    assert_eq!(ok["route"], "all");
    assert_eq!(ok["upstreams"], "up:answered");
    let trace = ok["trace_id"].as_str().expect("trace id");
    assert_eq!(trace.len(), 32, "{ok}");
    // The audit record of the same request has the same trace id.
    let audit_text = std::fs::read_to_string(&audit_file).expect("audit log");
    let record = audit_text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["path"] == INFO)
        .unwrap_or_else(|| panic!("no audit record for {INFO}:\n{audit_text}"));
    assert_eq!(record["trace_id"], trace);
}
