//! End to end for the fetched-by-identity index in a cluster (issue 23), with the real binary
//! and a real PostgreSQL 15 (a throwaway cluster on a loopback port): two replicas share their
//! stores; alice fetches a module zip through replica 1, bob another through replica 2; then
//! `modgate fetched` run with replica 2's configuration and replica 1's `/admin/fetched` each
//! list both identities' fetches (with the shared ledger's hashes), no replica writes a SQLite
//! fetched index, and with PostgreSQL stopped a query is refused naming the store while the
//! replica keeps running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use modgate_testkit::{
    free_addr, modgate_with, request, require_postgres, FixtureProxy, Gateway, ModuleVersion,
    PgServer,
};
use sha2::{Digest, Sha256};

const ALICE_PW: &str = "alice-Pa55-71c0d2e4";
const BOB_PW: &str = "bob-Pa55-0b9e33f1";
const ROOT_PW: &str = "root-Pa55-d4a6f218";

const ALICES: (&str, &str) = ("example.com/alices", "v1.0.0");
const BOBS: (&str, &str) = ("example.com/bobs", "v0.3.0");

fn modules() -> Vec<ModuleVersion> {
    [ALICES, BOBS]
        .iter()
        .map(|(m, v)| {
            ModuleVersion::new(m, v)
                .expect("module")
                .file("x.go", format!("package x // {m} {v}\n").as_bytes())
        })
        .collect()
}

fn zip_path((m, v): (&str, &str)) -> String {
    format!("/{m}/@v/{v}.zip")
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// One replica: its gateway (own directory: cache, users), address and configuration file.
struct Replica {
    gateway: Gateway,
    addr: SocketAddr,
    config: PathBuf,
}

fn replica(name: &str, upstream: &str, dsn: &str) -> Replica {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = |pw: &str| bcrypt::hash(pw, 4).expect("bcrypt");
    std::fs::write(
        dir.path().join("users"),
        format!(
            "alice:{}\nbob:{}\nroot:{}\n",
            hash(ALICE_PW),
            hash(BOB_PW),
            hash(ROOT_PW)
        ),
    )
    .expect("users");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", admin: true, metrics: true }}
upstreams:
  up: {{ url: "{upstream}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
auth:
  users_file: users
access:
  default: allow
  roles:
    - name: admin
      members: [ {{ user: root }} ]
      rules:
        - {{ id: admin-all, allow: {{ prefix: "" }} }}
cache:
  dir: "@DIR@/cache"
  fsync: false
fetched:
  retention: 30d
  max_records: 1000
cluster:
  name: {name}
  postgres:
    dsn: "{dsn}"
    pool_size: 4
    connect_timeout: 2s
"#
    );
    let gateway = Gateway::start_in(dir, &config, addr);
    let config = gateway.dir.path().join("gateway.yaml");
    Replica {
        gateway,
        addr,
        config,
    }
}

/// `modgate fetched` with `r`'s configuration: (exit code, stdout, stderr).
fn cli(r: &Replica, args: &[&str]) -> (i32, String, String) {
    modgate_with(&r.config, &[&["fetched"], args].concat())
}

/// The versions (module, version, identities, zip sha256s) a JSON answer lists.
fn listed(doc: &serde_json::Value) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    doc["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("versions in {doc}"))
        .iter()
        .map(|v| {
            let strings = |x: &serde_json::Value| -> Vec<String> {
                x.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let shas = v["zip"]["hashes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|h| h["sha256"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (
                v["module"].as_str().expect("module").to_string(),
                v["version"].as_str().expect("version").to_string(),
                strings(&v["identities"]),
                shas,
            )
        })
        .collect()
}

/// The command's JSON answer about `identity`, once it lists a version (bounded: the writers
/// record off the request path).
fn command_lists(r: &Replica, identity: &str) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..300 {
        let (code, out, err) = cli(
            r,
            &["--identity", identity, "--since", "1h", "--format", "json"],
        );
        assert_eq!(code, 0, "{out}{err}");
        let doc: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        if !listed(&doc).is_empty() {
            return doc;
        }
        last = out;
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "`modgate fetched` never listed {identity}'s fetch: {last}\n{}",
        r.gateway.log()
    );
}

/// The admin endpoint's JSON answer about `identity` (as root), once it lists a version.
fn endpoint_lists(r: &Replica, identity: &str) -> serde_json::Value {
    let path = format!("/admin/fetched?identity={identity}&since=1h&format=json");
    let auth = basic("root", ROOT_PW);
    let mut last = String::new();
    for _ in 0..300 {
        let resp = request(r.addr, "GET", &path, &[("Authorization", &auth)]).expect("admin GET");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let doc: serde_json::Value = serde_json::from_str(&resp.text()).expect("json");
        if !listed(&doc).is_empty() {
            return doc;
        }
        last = resp.text();
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "/admin/fetched never listed {identity}'s fetch: {last}\n{}",
        r.gateway.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fetches_through_either_replica_are_listed_by_the_command_and_endpoint_of_both() {
    if require_postgres().is_none() {
        return;
    }
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_db("fetched").expect("create database");
    let upstream = FixtureProxy::start(&modules()).await.expect("fixture");
    let one = replica("replica-1", &upstream.url(), &pg.dsn("fetched"));
    let two = replica("replica-2", &upstream.url(), &pg.dsn("fetched"));

    // alice through replica 1, bob through replica 2.
    let a = request(
        one.addr,
        "GET",
        &zip_path(ALICES),
        &[("Authorization", &basic("alice", ALICE_PW))],
    )
    .expect("alice GET");
    assert_eq!(a.status, 200, "{}", a.text());
    let b = request(
        two.addr,
        "GET",
        &zip_path(BOBS),
        &[("Authorization", &basic("bob", BOB_PW))],
    )
    .expect("bob GET");
    assert_eq!(b.status, 200, "{}", b.text());

    let want = |(m, v): (&str, &str), who: &str, body: &[u8]| {
        vec![(
            m.to_string(),
            v.to_string(),
            vec![format!("basic:{who}")],
            vec![sha256_hex(body)],
        )]
    };
    // The command, with replica 2's configuration: alice's fetch through replica 1 too.
    assert_eq!(
        listed(&command_lists(&two, "alice")),
        want(ALICES, "alice", &a.body)
    );
    assert_eq!(
        listed(&command_lists(&two, "bob")),
        want(BOBS, "bob", &b.body)
    );
    // Replica 1's admin endpoint: bob's fetch through replica 2 too.
    assert_eq!(
        listed(&endpoint_lists(&one, "bob")),
        want(BOBS, "bob", &b.body)
    );
    assert_eq!(
        listed(&endpoint_lists(&one, "alice")),
        want(ALICES, "alice", &a.body)
    );
    // The text format names each too; another identity lists nothing.
    let (code, text, err) = cli(&one, &["--identity", "basic:bob", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(&format!("{}@{}", BOBS.0, BOBS.1)), "{text}");
    let (code, out, err) = cli(
        &one,
        &["--identity", "root", "--since", "1h", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(listed(&doc).is_empty(), "{doc}");
    // The shared index is the only one: no replica wrote a SQLite file.
    for r in [&one, &two] {
        assert!(
            !r.gateway.dir.path().join("fetched.sqlite").exists(),
            "a replica wrote its own fetched index"
        );
    }

    // PostgreSQL stopped: a query is refused naming the store, no replica exits.
    pg.stop().expect("stop PostgreSQL");
    let store = format!("PostgreSQL 127.0.0.1:{}", pg.port());
    let (code, out, err) = cli(&two, &["--identity", "alice", "--since", "1h"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains(&store), "{err}");
    let r = request(
        one.addr,
        "GET",
        "/admin/fetched?identity=alice&since=1h",
        &[("Authorization", &basic("root", ROOT_PW))],
    )
    .expect("admin GET");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains(&store), "{}", r.text());
    assert_eq!(
        request(one.addr, "GET", "/healthz", &[])
            .expect("healthz")
            .status,
        200
    );
    pg.start_again().expect("start PostgreSQL");
    assert_eq!(
        listed(&endpoint_lists(&one, "alice")),
        want(ALICES, "alice", &a.body),
        "answers again once the server is back"
    );
}
