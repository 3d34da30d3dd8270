//! The cluster's figures (issue 23; `make bench-cluster`, figures in docs/performance.md): three
//! replicas of the release binary sharing a real PostgreSQL 15 and a real Garage S3 store, with
//! a fixture upstream that answers each zip after `ORIGIN_MS` (a distant upstream):
//!
//! - **cold fan-in**: 300 clients (100 per replica) ask for one uncached zip at once; the time
//!   until the last has it, and the upstream fetches it caused (per object), over `OBJECTS`
//!   objects;
//! - **first hits from the store**: a fourth replica with an empty local cache serves objects
//!   the others put in the store (read from S3, checked against the ledger), one client per
//!   object, 16 at a time: objects/s and MiB/s;
//! - **local hits**: the same objects again from that replica's own cache tiers (memory and
//!   disk), with h2load over HTTP/1.1 keep-alive: requests/s and MiB/s.
//!
//! Not a test: it asserts nothing but what it needs to measure (every answer a 200 with the
//! right bytes). `BUSY_MAX` and the other settings come from the environment.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use modgate_testkit::{
    free_addr, get, require_garage, require_postgres, Behaviour, FixtureProxy, GarageServer,
    Gateway, ModuleVersion, PgServer,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn module(i: u64, kib: u64) -> ModuleVersion {
    // Incompressible-ish content, so the zip is about `kib` KiB.
    let mut body = String::from("package m\n/*\n");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ i;
    while body.len() < (kib * 1024) as usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push_str(&format!("{x:016x}"));
    }
    body.push_str("\n*/\n");
    ModuleVersion::new(&format!("example.com/bench/m{i}"), "v1.0.0")
        .expect("module")
        .file("m.go", body.as_bytes())
}

fn zip_path(i: u64) -> String {
    format!("/example.com/bench/m{i}/@v/v1.0.0.zip")
}

fn replica(name: &str, upstream: &str, pg: &PgServer, s3: &GarageServer) -> (Gateway, SocketAddr) {
    let addr = free_addr();
    let config = format!(
        r#"
server:
  threads: 2
listeners:
  - {{ name: plain, address: "{addr}" }}
upstreams:
  up: {{ url: "{upstream}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
cache:
  dir: "@DIR@/cache"
  fsync: false
  memory: 256MiB
  memory_object_max: 4MiB
audit:
  output: "@DIR@/audit.jsonl"
cluster:
  name: {name}
  postgres: {{ dsn: "{dsn}", pool_size: 16 }}
  objects: {{ endpoint: "{ep}", region: "{region}", bucket: "{bucket}" }}
"#,
        dsn = pg.dsn("bench"),
        ep = s3.endpoint(),
        region = s3.region(),
        bucket = s3.bucket(),
    );
    let g = Gateway::start_env(
        &config,
        addr,
        &[
            ("RUST_LOG", "warn"),
            ("AWS_ACCESS_KEY_ID", s3.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key()),
        ],
    );
    (g, addr)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (objects, kib, origin_ms) = (
        env("OBJECTS", 8),
        env("ZIP_KIB", 1024),
        env("ORIGIN_MS", 200),
    );
    let (fanin, h2_requests) = (env("FANIN_CLIENTS", 300), env("HIT_REQUESTS", 4000));
    if require_postgres().is_none() || require_garage().is_none() {
        eprintln!("cluster bench: needs PostgreSQL and Garage (make postgres garage)");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pg = PgServer::start().expect("PostgreSQL");
    pg.create_db("bench").expect("database");
    let s3 = GarageServer::start().expect("Garage");
    let mods: Vec<ModuleVersion> = (0..objects).map(|i| module(i, kib)).collect();
    let zips: Vec<Vec<u8>> = mods.iter().map(|m| m.zip().expect("zip")).collect();
    let upstream = rt.block_on(FixtureProxy::start(&mods)).expect("fixture");
    upstream.set_behaviour("/", Behaviour::Delay(Duration::from_millis(origin_ms)));
    let replicas: Vec<(Gateway, SocketAddr)> = ["a", "b", "c"]
        .iter()
        .map(|n| replica(n, &upstream.url(), &pg, &s3))
        .collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.1).collect();
    println!(
        "cluster bench: {objects} zips of {} KiB, upstream answers after {origin_ms} ms, \
         3 replicas, {fanin} clients per object; load {}",
        zips[0].len() / 1024,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    // Cold fan-in, then the same again warm (every replica holds the zip locally): the
    // difference is what the cluster's miss costs beyond the clients' own work.
    let fan_in = |i: u64| {
        let barrier = Arc::new(Barrier::new(fanin as usize + 1));
        let threads: Vec<_> = (0..fanin)
            .map(|c| {
                let (addr, barrier) = (addrs[(c % 3) as usize], barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    get(addr, &zip_path(i)).map(|r| (r.status, r.body))
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        for t in threads {
            let (status, body) = t.join().expect("client").expect("answer");
            assert!(status == 200 && body == zips[i as usize], "a wrong answer");
        }
        started.elapsed().as_secs_f64() * 1000.0
    };
    let (mut cold, mut warm, mut fetches) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..objects {
        cold.push(fan_in(i));
        warm.push(fan_in(i));
        let n = upstream
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == zip_path(i))
            .count();
        fetches.push(n);
    }
    let origin = {
        let started = Instant::now();
        let r = get(upstream.addr(), &zip_path(0)).expect("origin");
        assert_eq!(r.status, 200);
        started.elapsed().as_secs_f64() * 1000.0
    };
    println!(
        "fan-in of {fanin} clients over 3 replicas: cold median {:.0} ms (min {:.0}, max {:.0}), \
         warm median {:.0} ms; one origin fetch takes {origin:.0} ms; upstream fetches per \
         object: {:?}",
        median(cold.clone()),
        cold.iter().cloned().fold(f64::MAX, f64::min),
        cold.iter().cloned().fold(0.0, f64::max),
        median(warm),
        fetches
    );

    // First hits from the store: a new replica, empty local cache.
    let (_d, d) = replica("d", &upstream.url(), &pg, &s3);
    let started = Instant::now();
    let threads: Vec<_> = (0..objects)
        .map(|i| std::thread::spawn(move || get(d, &zip_path(i)).map(|r| (r.status, r.body.len()))))
        .collect();
    let mut bytes = 0usize;
    for t in threads {
        let (status, n) = t.join().expect("client").expect("answer");
        assert_eq!(status, 200);
        bytes += n;
    }
    let secs = started.elapsed().as_secs_f64();
    let fetched_again: usize = (0..objects)
        .map(|i| {
            upstream
                .requests()
                .iter()
                .filter(|r| r.method == "GET" && r.path == zip_path(i))
                .count()
        })
        .sum::<usize>()
        - 1; // the origin's own timing above
    println!(
        "first hits from the store (replica d, empty local cache): {objects} objects in {:.0} ms: \
         {:.1} objects/s, {:.1} MiB/s; upstream fetches still {fetched_again} for {objects} objects",
        secs * 1000.0,
        objects as f64 / secs,
        bytes as f64 / secs / (1 << 20) as f64
    );

    // Local hits on d.
    let urls: Vec<String> = (0..objects)
        .map(|i| format!("http://{d}{}", zip_path(i)))
        .collect();
    let out = Command::new("h2load")
        .args(["--h1", "-c", "8", "-n", &h2_requests.to_string()])
        .args(&urls)
        .output()
        .expect("h2load (apt install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().filter(|l| {
        l.starts_with("finished in") || l.starts_with("requests:") || l.starts_with("status codes:")
    }) {
        println!("local hits (replica d, h2load --h1 -c 8): {line}");
    }
}
