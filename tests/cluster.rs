//! End to end for a cluster of replicas sharing their ledger in PostgreSQL (issue 23), with the
//! real binary and a real PostgreSQL 15 (a throwaway cluster on a loopback port):
//!
//! - a re-tag first seen by replica A is refused by replica B (which never fetched the version
//!   before); an operator's accept run against B lets the new bytes through on A without a
//!   reload (A hears of it through `LISTEN/NOTIFY`); a purge run against A drops B's copy;
//! - PostgreSQL killed mid-run: cached hits are still served from the replica's local tiers, a
//!   miss is refused naming the store, no process exits, and service resumes by itself when the
//!   server is back;
//! - the real `go` downloads a module graph through a round-robin balancer in front of two
//!   replicas, with the same results as straight from one replica.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use modgate_testkit::{
    free_addr, get, modgate_with, require_postgres, round_robin, FixtureProxy, Gateway, GoEnv,
    ModuleVersion, PgServer,
};
use sha2::{Digest, Sha256};

const MODULE: &str = "example.com/shared";

fn module(version: &str, body: &[u8]) -> ModuleVersion {
    ModuleVersion::new(MODULE, version)
        .expect("module")
        .file("shared.go", body)
}

fn zip_path(version: &str) -> String {
    format!("/{MODULE}/@v/{version}.zip")
}

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// One replica: its gateway (own cache directory) and address.
struct Replica {
    gateway: Gateway,
    addr: SocketAddr,
    config: PathBuf,
}

fn replica(name: &str, upstream: &str, dsn: &str) -> Replica {
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", metrics: true, admin: true }}
upstreams:
  up: {{ url: "{upstream}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
cache:
  dir: "@DIR@/cache"
  fsync: false
cluster:
  name: {name}
  postgres:
    dsn: "{dsn}"
    pool_size: 4
    connect_timeout: 2s
"#
    );
    let gateway = Gateway::start(&config, addr);
    let config = gateway.dir.path().join("gateway.yaml");
    Replica {
        gateway,
        addr,
        config,
    }
}

fn cli(r: &Replica, args: &[&str]) -> (i32, String) {
    let (code, out, err) = modgate_with(&r.config, args);
    (code, format!("{out}{err}"))
}

/// Waits (bounded) until `f` gives a value.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn upstream_gets(up: &FixtureProxy, path: &str) -> usize {
    up.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

fn postgres(db: &str) -> Option<PgServer> {
    require_postgres()?;
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_db(db).expect("create database");
    Some(pg)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retag_seen_by_one_replica_is_refused_by_another_and_an_accept_reaches_both() {
    let Some(pg) = postgres("cluster") else {
        return;
    };
    let upstream = FixtureProxy::start(&[
        module("v1.0.0", b"package shared // one\n"),
        module("v1.1.0", b"package shared // two\n"),
    ])
    .await
    .expect("fixture");
    let a = replica("replica-a", &upstream.url(), &pg.dsn("cluster"));
    let b = replica("replica-b", &upstream.url(), &pg.dsn("cluster"));

    // A sees v1.0.0 first: the shared ledger records it.
    let original = get(a.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!(original.status, 200, "{}", original.text());

    // The upstream re-tags v1.0.0. B never fetched it; its answer is refused all the same.
    let retagged = module("v1.0.0", b"package shared // re-published, longer\n")
        .zip()
        .expect("zip");
    upstream.set_file(&zip_path("v1.0.0"), retagged.clone());
    let r = get(b.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!(
        r.status,
        502,
        "B refuses the re-tag A recorded: {}",
        r.text()
    );
    assert!(r.text().contains(&sha256(&original.body)), "{}", r.text());
    // A still serves what it holds; purged, it refuses as well (and quarantines).
    assert_eq!(
        get(a.addr, &zip_path("v1.0.0")).expect("get").body,
        original.body
    );
    let (code, out) = cli(&a, &["cache", "purge", &format!("{MODULE}@v1.0.0")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("purge published to the cluster"), "{out}");
    assert_eq!(get(a.addr, &zip_path("v1.0.0")).expect("get").status, 502);

    // The operator accepts the new bytes against B; A lets them through without a reload.
    let (code, out) = cli(
        &b,
        &[
            "ledger",
            "accept",
            &format!("{MODULE}@v1.0.0"),
            "zip",
            "--sha256",
            &sha256(&retagged),
            "--size",
            &retagged.len().to_string(),
            "--reason",
            "re-published after a broken release",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let body = wait_for("A serving the accepted bytes", || {
        let r = get(a.addr, &zip_path("v1.0.0")).ok()?;
        (r.status == 200).then_some(r.body)
    });
    assert_eq!(body, retagged);
    let _ = a
        .gateway
        .wait_for_log("refusal lifted", Duration::from_secs(10));
    let r = get(b.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!((r.status, r.body), (200, retagged.clone()));

    // A purge run against A reaches B: B's copy of v1.1.0 goes, and B fetches it again.
    assert_eq!(get(b.addr, &zip_path("v1.1.0")).expect("get").status, 200);
    assert_eq!(get(b.addr, &zip_path("v1.1.0")).expect("get").status, 200);
    assert_eq!(upstream_gets(&upstream, &zip_path("v1.1.0")), 1, "a hit");
    let (code, out) = cli(&a, &["cache", "purge", &format!("{MODULE}@v1.1.0")]);
    assert_eq!(code, 0, "{out}");
    let _ = b.gateway.wait_for_log(
        &format!("purge of {MODULE}@v1.1.0"),
        Duration::from_secs(30),
    );
    assert_eq!(get(b.addr, &zip_path("v1.1.0")).expect("get").status, 200);
    assert_eq!(
        upstream_gets(&upstream, &zip_path("v1.1.0")),
        2,
        "B purged its copy when it heard of A's purge"
    );

    // The admin endpoint of B purges B and reaches A the same way.
    assert_eq!(get(a.addr, &zip_path("v1.1.0")).expect("get").status, 200);
    let gets = upstream_gets(&upstream, &zip_path("v1.1.0"));
    let r = modgate_testkit::request(
        b.addr,
        "POST",
        &format!("/admin/cache/purge?target={MODULE}@v1.1.0"),
        &[],
    )
    .expect("post");
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = a.gateway.wait_for_log(
        &format!("purge of {MODULE}@v1.1.0 from replica-b"),
        Duration::from_secs(30),
    );
    assert_eq!(get(a.addr, &zip_path("v1.1.0")).expect("get").status, 200);
    assert_eq!(upstream_gets(&upstream, &zip_path("v1.1.0")), gets + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_postgresql_down_hits_are_served_misses_name_the_store_and_service_resumes() {
    let Some(pg) = postgres("down") else {
        return;
    };
    let upstream = FixtureProxy::start(&[
        module("v1.0.0", b"package shared // one\n"),
        module("v1.1.0", b"package shared // two\n"),
    ])
    .await
    .expect("fixture");
    let mut a = replica("replica-a", &upstream.url(), &pg.dsn("down"));
    let cached = get(a.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!(cached.status, 200);

    pg.kill().expect("kill PostgreSQL");
    let hit = get(a.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!(
        (hit.status, &hit.body),
        (200, &cached.body),
        "hits need no ledger"
    );
    let miss = get(a.addr, &zip_path("v1.1.0")).expect("get");
    assert!(
        miss.status == 502 || miss.status == 503,
        "a miss cannot be verified: {} {}",
        miss.status,
        miss.text()
    );
    assert!(
        miss.text()
            .contains(&format!("PostgreSQL 127.0.0.1:{}", pg.port())),
        "the client is told which store failed: {}",
        miss.text()
    );
    assert_eq!(
        a.gateway.wait_exit(Duration::from_millis(1)),
        None,
        "still running"
    );

    pg.start_again().expect("start PostgreSQL again");
    let body = wait_for("the miss served once PostgreSQL is back", || {
        let r = get(a.addr, &zip_path("v1.1.0")).ok()?;
        (r.status == 200).then_some(r.body)
    });
    assert_eq!(
        body,
        module("v1.1.0", b"package shared // two\n")
            .zip()
            .expect("zip")
    );
    let _ = a
        .gateway
        .wait_for_log("listening on PostgreSQL", Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_go_downloads_a_module_graph_through_two_replicas_alternately() {
    let Some(pg) = postgres("go") else {
        return;
    };
    if modgate_testkit::tools::require_go().is_none() {
        return;
    }
    let m = |p: &str, v: &str| ModuleVersion::new(p, v).expect("fixture module");
    let upstream = FixtureProxy::start(&[
        m("example.com/left", "v1.0.0"),
        m("example.com/left", "v1.2.0"),
        m("example.com/right/v2", "v2.0.0").require("example.com/left", "v1.2.0"),
        m("example.com/deep", "v0.3.0").require("example.com/right/v2", "v2.0.0"),
        m("example.com/top", "v1.0.0")
            .require("example.com/left", "v1.0.0")
            .require("example.com/deep", "v0.3.0"),
    ])
    .await
    .expect("fixture");
    let a = replica("replica-a", &upstream.url(), &pg.dsn("go"));
    let b = replica("replica-b", &upstream.url(), &pg.dsn("go"));
    let (lb, counts) = round_robin(vec![a.addr, b.addr]).await;

    let through_both = GoEnv::new(&format!("http://{lb}"));
    through_both.write_main_module(&[("example.com/top", "v1.0.0")]);
    through_both
        .go(&["mod", "download", "all"])
        .expect_ok("go mod download all through the balancer");
    let served: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        served.iter().all(|&n| n > 0),
        "both replicas served connections: {served:?}"
    );

    let straight = GoEnv::new(&format!("http://{}", b.addr));
    straight.write_main_module(&[("example.com/top", "v1.0.0")]);
    straight
        .go(&["mod", "download", "all"])
        .expect_ok("go mod download all from one replica");
    let sum = |env: &GoEnv| std::fs::read_to_string(env.work().join("go.sum")).expect("go.sum");
    assert_eq!(sum(&through_both), sum(&straight), "identical go.sum");
    assert!(
        sum(&straight).contains("example.com/deep v0.3.0 h1:"),
        "{}",
        sum(&straight)
    );
    let graph = |env: &GoEnv| {
        let run = env.go(&["list", "-m", "all"]);
        run.expect_ok("go list -m all");
        run.stdout()
    };
    assert_eq!(
        graph(&through_both),
        graph(&straight),
        "identical build list"
    );
    assert!(graph(&straight).contains("example.com/deep v0.3.0"));
    // Every file `go` kept, byte for byte.
    let files = |env: &GoEnv| {
        let root = env.modcache().join("cache/download");
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if !p.to_string_lossy().ends_with(".lock") {
                    let rel = p
                        .strip_prefix(&root)
                        .expect("under root")
                        .display()
                        .to_string();
                    out.push((rel, sha256(&std::fs::read(&p).expect("read"))));
                }
            }
        }
        out.sort();
        out
    };
    let kept = files(&through_both);
    assert!(
        kept.iter().any(|(p, _)| p.ends_with("deep/@v/v0.3.0.zip")),
        "{kept:?}"
    );
    assert_eq!(kept, files(&straight), "identical module cache downloads");
    let _ = a;
}
