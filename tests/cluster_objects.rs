//! End to end for the shared object tier of a cluster (issue 23): three replicas of the real
//! binary sharing a real PostgreSQL 15 (ledger, fetch leases, events) and a real Garage S3
//! store, each with its own local cache in front:
//!
//! - 300 concurrent clients spread over the replicas ask for one uncached zip: exactly one
//!   upstream fetch, and every client gets the same verified bytes;
//! - `kill -9` of the replica holding the fetch lease mid-fetch: the other replicas' clients
//!   still get the object, from one new upstream fetch, once the lease lapses; the store never
//!   holds a torn object;
//! - the store stopped: hits are served from the replica's local cache, a miss is a 503 naming
//!   the store, no process exits, and service resumes by itself when the store is back.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use modgate_testkit::{
    free_addr, get, require_garage, require_postgres, Behaviour, FixtureProxy, GarageServer,
    Gateway, ModuleVersion, PgServer,
};

const MODULE: &str = "example.com/fanin";

fn module(version: &str) -> ModuleVersion {
    // A zip of a few hundred KiB: large enough to be held in a file, not only in memory.
    let filler: String = (0..40_000).map(|i| format!("// line {i}\n")).collect();
    ModuleVersion::new(MODULE, version)
        .expect("module")
        .file("fanin.go", format!("package fanin\n{filler}").as_bytes())
}

fn zip_path(version: &str) -> String {
    format!("/{MODULE}/@v/{version}.zip")
}

struct Stores {
    pg: PgServer,
    s3: GarageServer,
}

fn stores(db: &str) -> Option<Stores> {
    require_postgres()?;
    require_garage()?;
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_db(db).expect("create database");
    let s3 = GarageServer::start().expect("start Garage");
    Some(Stores { pg, s3 })
}

struct Replica {
    gateway: Gateway,
    addr: SocketAddr,
}

fn replica(name: &str, upstream: &str, stores: &Stores, db: &str) -> Replica {
    replica_with(name, upstream, "", stores, db)
}

/// A replica whose upstream has `options` (`, cache_scope: per-identity`).
fn replica_with(name: &str, upstream: &str, options: &str, stores: &Stores, db: &str) -> Replica {
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", metrics: true }}
upstreams:
  up: {{ url: "{upstream}"{options} }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
cache:
  dir: "@DIR@/cache"
  fsync: false
cluster:
  name: {name}
  postgres:
    dsn: "{dsn}"
    pool_size: 8
    connect_timeout: 2s
  objects:
    endpoint: "{endpoint}"
    region: "{region}"
    bucket: "{bucket}"
    timeout: 10s
"#,
        dsn = stores.pg.dsn(db),
        endpoint = stores.s3.endpoint(),
        region = stores.s3.region(),
        bucket = stores.s3.bucket(),
    );
    let gateway = Gateway::start_env(
        &config,
        addr,
        &[
            ("AWS_ACCESS_KEY_ID", stores.s3.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", stores.s3.secret_access_key()),
        ],
    );
    Replica { gateway, addr }
}

/// The test's own client of the store (to plant bytes in it, or list it).
fn store_of(stores: &Stores) -> modgate_objstore::ObjectTier {
    let mut s3 = modgate_objstore::S3Settings::new(
        stores.s3.endpoint(),
        stores.s3.region(),
        stores.s3.bucket(),
        stores.s3.access_key_id(),
        stores.s3.secret_access_key(),
    );
    s3.timeout = Duration::from_secs(10);
    modgate_objstore::ObjectTier::new(&s3).expect("tier")
}

/// A new replica (empty local cache) on `stores` serves v1.0.0's `zip` whole from the store:
/// the upstream's fetches stay at `fetches`.
fn a_new_replica_serves_it_from_the_store(
    upstream: &FixtureProxy,
    stores: &Stores,
    db: &str,
    zip: &[u8],
    fetches: usize,
) {
    let d = replica("d", &upstream.url(), stores, db);
    let r = get(d.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!((r.status, r.body == zip), (200, true));
    assert_eq!(upstream_gets(upstream, &zip_path("v1.0.0")), fetches);
}

/// Every client got a 200 with exactly `zip`.
fn all_served(answers: &[(u16, Vec<u8>)], zip: &[u8]) {
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(
            *status,
            200,
            "client {i}: {}",
            String::from_utf8_lossy(body)
        );
        assert!(body.as_slice() == zip, "client {i} got other bytes");
    }
}

fn upstream_gets(up: &FixtureProxy, path: &str) -> usize {
    up.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1200 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// `n` clients at once, client `i` on `addrs[i % len]`: each one's status and body.
fn clients(addrs: &[SocketAddr], n: usize, path: &str) -> Vec<(u16, Vec<u8>)> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (addr, path, barrier) = (addrs[i % addrs.len()], path.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                match get(addr, &path) {
                    Ok(r) => (r.status, r.body),
                    Err(e) => (0, e.to_string().into_bytes()),
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_clients_on_three_replicas_cause_one_upstream_fetch() {
    let Some(stores) = stores("fanin") else {
        return;
    };
    let zip = module("v1.0.0").zip().expect("zip");
    let upstream = FixtureProxy::start(&[module("v1.0.0")])
        .await
        .expect("fixture");
    // The fetch takes a while, so every client asks while it runs.
    upstream.set_behaviour(
        &zip_path("v1.0.0"),
        Behaviour::Delay(Duration::from_millis(1500)),
    );
    let replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|n| replica(n, &upstream.url(), &stores, "fanin"))
        .collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();

    let answers = clients(&addrs, 300, &zip_path("v1.0.0"));
    all_served(&answers, &zip);
    assert_eq!(
        upstream_gets(&upstream, &zip_path("v1.0.0")),
        1,
        "one upstream fetch for the whole cluster"
    );
    // Each replica holds it locally now; the store holds it for a new replica too.
    a_new_replica_serves_it_from_the_store(&upstream, &stores, "fanin", &zip, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_lease_holder_mid_fetch_is_taken_over_by_one_new_fetch() {
    let Some(stores) = stores("kill") else {
        return;
    };
    let zip = module("v1.0.0").zip().expect("zip");
    let upstream = FixtureProxy::start(&[module("v1.0.0")])
        .await
        .expect("fixture");
    upstream.set_behaviour(
        &zip_path("v1.0.0"),
        Behaviour::Delay(Duration::from_secs(3)),
    );
    let a = replica("a", &upstream.url(), &stores, "kill");
    let b = replica("b", &upstream.url(), &stores, "kill");
    let c = replica("c", &upstream.url(), &stores, "kill");

    // A's client starts the fetch: A holds the lease.
    let first = {
        let addr = a.addr;
        std::thread::spawn(move || get(addr, &zip_path("v1.0.0")))
    };
    wait_for("A's upstream fetch", || {
        (upstream_gets(&upstream, &zip_path("v1.0.0")) == 1).then_some(())
    });
    // B's and C's clients wait on A's lease.
    let waiting = {
        let addrs = [b.addr, c.addr];
        std::thread::spawn(move || clients(&addrs, 20, &zip_path("v1.0.0")))
    };
    for r in [&b, &c] {
        let _ = r
            .gateway
            .wait_for_log("waiting for a/", Duration::from_secs(30));
    }
    a.gateway.signal("KILL");
    let _ = first.join();

    let answers = waiting.join().expect("clients");
    all_served(&answers, &zip);
    assert_eq!(
        upstream_gets(&upstream, &zip_path("v1.0.0")),
        2,
        "one new fetch after the holder died"
    );
    // What the store holds is whole: a fresh replica serves it from there.
    a_new_replica_serves_it_from_the_store(&upstream, &stores, "kill", &zip, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_store_stopped_hits_are_served_misses_name_it_and_service_resumes() {
    let Some(stores) = stores("s3down") else {
        return;
    };
    let upstream = FixtureProxy::start(&[module("v1.0.0"), module("v1.1.0")])
        .await
        .expect("fixture");
    let mut a = replica("a", &upstream.url(), &stores, "s3down");
    let cached = get(a.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!(cached.status, 200);

    stores.s3.stop().expect("stop Garage");
    let hit = get(a.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!((hit.status, &hit.body), (200, &cached.body), "a local hit");
    let miss = get(a.addr, &zip_path("v1.1.0")).expect("get");
    assert_eq!(miss.status, 503, "{}", miss.text());
    assert!(
        miss.text().contains(&format!(
            "S3 {}/{}",
            stores.s3.endpoint(),
            stores.s3.bucket()
        )),
        "the client is told which store failed: {}",
        miss.text()
    );
    assert_eq!(
        a.gateway.wait_exit(Duration::from_millis(1)),
        None,
        "still running"
    );

    stores.s3.start_again().expect("start Garage again");
    let body = wait_for("the miss served once the store is back", || {
        let r = get(a.addr, &zip_path("v1.1.0")).ok()?;
        (r.status == 200).then_some(r.body)
    });
    assert_eq!(body, module("v1.1.0").zip().expect("zip"));
}

/// The store is trusted for nothing: bytes planted in it (an attacker with the bucket's
/// credentials, a corrupted disk) are never served. An object that differs from the ledger's
/// record is removed and the version fetched again from the upstream; an object for a version
/// the ledger does not know is not even read.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_planted_in_the_store_are_never_served() {
    let Some(stores) = stores("tamper") else {
        return;
    };
    let upstream = FixtureProxy::start(&[module("v1.0.0"), module("v1.1.0")])
        .await
        .expect("fixture");
    let a = replica("a", &upstream.url(), &stores, "tamper");
    let original = get(a.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!(original.status, 200);

    let tier = store_of(&stores);
    let plant = |key: &'static str, bytes: Vec<u8>| {
        let tier = tier.clone();
        async move {
            let len = bytes.len() as u64;
            let chunks = futures::stream::iter([Ok(bytes::Bytes::from(bytes))]);
            tier.put(key, len, Box::pin(chunks)).await.expect("plant");
        }
    };
    // Same length, other bytes, for the version A recorded; any bytes for one never seen.
    let mut evil = original.body.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    plant("example.com/fanin/@v/v1.0.0.zip/all", evil).await;
    plant(
        "example.com/fanin/@v/v1.1.0.zip/all",
        b"PK planted, never seen".to_vec(),
    )
    .await;

    let b = replica("b", &upstream.url(), &stores, "tamper");
    let r = get(b.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == original.body, "B served the planted bytes");
    let _ = b
        .gateway
        .wait_for_log("its bytes are not the ledger's", Duration::from_secs(10));
    assert_eq!(
        upstream_gets(&upstream, &zip_path("v1.0.0")),
        2,
        "fetched again from the upstream"
    );
    let r = get(b.addr, &zip_path("v1.1.0")).expect("get");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, module("v1.1.0").zip().expect("zip"));
    // The store now holds the verified bytes again: a third replica reads them from there.
    let c = replica("c", &upstream.url(), &stores, "tamper");
    let r = get(c.addr, &zip_path("v1.0.0")).expect("get");
    assert!(r.status == 200 && r.body == original.body);
    assert_eq!(upstream_gets(&upstream, &zip_path("v1.0.0")), 2);
}

/// An upstream that authorises per identity (`cache_scope: per-identity`, or one told the
/// identity) answers each identity its own way: its answers are never put in the shared store,
/// so another replica (serving another identity) asks the upstream itself.
#[tokio::test(flavor = "multi_thread")]
async fn answers_personal_to_an_identity_are_never_shared() {
    let Some(stores) = stores("personal") else {
        return;
    };
    let upstream = FixtureProxy::start(&[module("v1.0.0")])
        .await
        .expect("fixture");
    let personal = ", cache_scope: per-identity";
    let a = replica_with("a", &upstream.url(), personal, &stores, "personal");
    let b = replica_with("b", &upstream.url(), personal, &stores, "personal");
    assert_eq!(get(a.addr, &zip_path("v1.0.0")).expect("get").status, 200);
    assert_eq!(get(b.addr, &zip_path("v1.0.0")).expect("get").status, 200);
    assert_eq!(
        upstream_gets(&upstream, &zip_path("v1.0.0")),
        2,
        "each replica asked the upstream: nothing personal went through the store"
    );
    let tier = store_of(&stores);
    let keys = tier.list(MODULE, 100).await.expect("list");
    assert!(keys.is_empty(), "the store holds {keys:?}");
}
