//! End to end: the company's checksum database (`checksum_log:`) shared by the replicas of a
//! cluster in PostgreSQL (issue 23), with the real binary, a real PostgreSQL 15 and the real
//! `go`:
//!
//! - concurrent lookups of unlogged versions on two replicas at once append each version once,
//!   into one log that never forks: both replicas then serve the same signed head, every answer's
//!   head is a head of that one tree, and `modgate sumdb verify` (run against either replica's
//!   configuration) recomputes it from its records;
//! - the real `go`, through a round-robin balancer over both replicas' TLS listeners, verifies a
//!   private module graph against the log (`GOSUMDB=<the log's key>`, no GONOSUMDB hole): the
//!   lookups and tiles it reads come from both replicas and fit together;
//! - a replica started with another key for the log's name is refused at start, naming the
//!   store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use modgate_testkit::{
    free_addr, make_certs, modgate, modgate_bin, modgate_with, request, require_postgres,
    round_robin, FixtureProxy, Gateway, GoEnv, ModuleVersion, PgServer,
};

const LOG: &str = "sum.cluster.test";
const ALICE_PW: &str = "alice-Pa55-9f8e7d6c";
const MANY: &str = "corp.example.com/many";

fn module(path: &str, version: &str) -> ModuleVersion {
    ModuleVersion::new(path, version).expect("fixture module")
}

/// The private graph `go` fetches: top requires lib and leaf/v2; leaf/v2 requires lib v1.1.0.
fn graph() -> Vec<ModuleVersion> {
    vec![
        module("corp.example.com/lib", "v1.0.0").file("lib.go", b"package lib\n"),
        module("corp.example.com/lib", "v1.1.0").file("lib.go", b"package lib // 1.1\n"),
        module("corp.example.com/leaf/v2", "v2.0.0")
            .file("leaf.go", b"package leaf\n")
            .require("corp.example.com/lib", "v1.1.0"),
        module("corp.example.com/top", "v1.0.0")
            .file("top.go", b"package top\n")
            .require("corp.example.com/lib", "v1.0.0")
            .require("corp.example.com/leaf/v2", "v2.0.0"),
    ]
}

/// Versions of one module that the concurrent lookups log.
fn many() -> Vec<ModuleVersion> {
    (0..12)
        .map(|i| {
            module(MANY, &format!("v1.0.{i}"))
                .file("many.go", format!("package many // {i}\n").as_bytes())
        })
        .collect()
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// What every replica shares: the TLS certificates (one CA), the users file and the log's
/// signer key; and the key's verifier key as `modgate sumdb keygen` printed it.
struct Shared {
    dir: tempfile::TempDir,
    vkey: String,
}

fn shared() -> Shared {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path(), "modgate cluster CA", "client");
    let hash = bcrypt::hash(ALICE_PW, 4).expect("bcrypt");
    std::fs::write(dir.path().join("users"), format!("alice:{hash}\n")).expect("users");
    let key = dir.path().join("sumdb.key");
    let out = modgate(&["sumdb", "keygen", LOG, "--out", &key.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Shared { dir, vkey }
}

/// One replica: its own directory (cache), a plain and a TLS listener.
struct Replica {
    /// Kept for the process's life (killed when dropped).
    _gateway: Gateway,
    plain: SocketAddr,
    tls: SocketAddr,
    config: PathBuf,
}

fn replica_dir(shared: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["server.pem", "server.key", "ca.pem", "users", "sumdb.key"] {
        std::fs::copy(shared.join(f), dir.path().join(f)).expect("copy shared file");
    }
    dir
}

fn replica_config(
    name: &str,
    upstream: &str,
    dsn: &str,
    plain: SocketAddr,
    tls: SocketAddr,
) -> String {
    format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}", metrics: true, admin: true, max_connections_per_source: 4000 }}
  - name: tls
    address: "{tls}"
    tls: {{ cert: server.pem, key: server.key }}
upstreams:
  corp: {{ url: "{upstream}", private: true }}
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true }}
auth:
  users_file: users
access:
  default: deny
  roles:
    - {{ name: devs, members: [ {{ user: alice }} ], rules: [ {{ allow: {{ prefix: corp.example.com }} }} ] }}
cache:
  dir: cache
  fsync: false
checksum_log:
  name: {LOG}
  key_file: sumdb.key
  readers: [devs]
  public: {{ trust: first-seen }}
cluster:
  name: {name}
  postgres:
    dsn: "{dsn}"
    pool_size: 4
    connect_timeout: 2s
"#
    )
}

fn replica(name: &str, upstream: &str, dsn: &str, shared: &Shared) -> Replica {
    let (plain, tls) = (free_addr(), free_addr());
    let dir = replica_dir(shared.dir.path());
    let config = replica_config(name, upstream, dsn, plain, tls);
    let gateway = Gateway::start_in(dir, &config, plain);
    let config = gateway.dir.path().join("gateway.yaml");
    Replica {
        _gateway: gateway,
        plain,
        tls,
        config,
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let auth = basic("alice", ALICE_PW);
    let r = request(addr, "GET", path, &[("Authorization", &auth)]).expect("request");
    (r.status, r.body)
}

fn cli(r: &Replica, args: &[&str]) -> (i32, String) {
    let (code, out, err) = modgate_with(&r.config, args);
    (code, format!("{out}{err}"))
}

fn postgres(db: &str) -> Option<PgServer> {
    require_postgres()?;
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_db(db).expect("create database");
    Some(pg)
}

/// The tree (size, hash line) a signed head note states.
fn tree_of(note: &[u8]) -> (u64, String) {
    let text = String::from_utf8_lossy(note);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("go.sum database tree"), "{text}");
    let size = lines
        .next()
        .and_then(|l| l.parse().ok())
        .expect("tree size");
    (size, lines.next().expect("tree hash").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_keep_one_log_that_the_real_go_verifies_through_both() {
    let Some(pg) = postgres("sum") else {
        return;
    };
    if modgate_testkit::tools::require_go().is_none() {
        return;
    }
    let mut modules = graph();
    modules.extend(many());
    let upstream = FixtureProxy::start(&modules).await.expect("fixture");
    upstream.mark_private();
    let shared = shared();
    let a = replica("replica-a", &upstream.url(), &pg.dsn("sum"), &shared);
    let b = replica("replica-b", &upstream.url(), &pg.dsn("sum"), &shared);

    // Concurrent lookups of the unlogged versions, each asked of both replicas at once.
    let lookups: Vec<(SocketAddr, String)> = many()
        .iter()
        .flat_map(|m| {
            let path = format!("/sumdb/{LOG}/lookup/{}@{}", m.path, m.version);
            [(a.plain, path.clone()), (b.plain, path)]
        })
        .collect();
    let answers: Vec<(String, u16, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = lookups
            .iter()
            .map(|(addr, path)| {
                s.spawn(move || {
                    let (status, body) = get(*addr, path);
                    (path.clone(), status, body)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("lookup thread"))
            .collect()
    });
    let mut ids = std::collections::HashMap::new();
    for (path, status, body) in &answers {
        let text = String::from_utf8_lossy(body);
        assert_eq!(*status, 200, "{path}: {text}");
        let id: u64 = text
            .lines()
            .next()
            .and_then(|l| l.parse().ok())
            .expect("record id");
        // Both replicas answer a version with the one record id.
        let known = *ids.entry(path.clone()).or_insert(id);
        assert_eq!(known, id, "{path} has two record ids: {text}");
    }
    assert_eq!(ids.len(), many().len());

    // One log: both replicas serve the same latest head, of exactly the versions logged.
    let latest = |r: &Replica| {
        let (status, body) = get(r.plain, &format!("/sumdb/{LOG}/latest"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        body
    };
    let head = latest(&a);
    assert_eq!(head, latest(&b), "both replicas serve one signed head");
    let (size, _) = tree_of(&head);
    assert_eq!(size, many().len() as u64, "each version logged once");

    // `modgate sumdb verify` recomputes the shared log (from either replica's configuration).
    for r in [&a, &b] {
        let (code, out) = cli(r, &["sumdb", "verify"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("{size} records")) && out.contains("ok"),
            "{out}"
        );
    }

    // The real go, alternating between the replicas, verifies the private graph against the
    // log: the versions it looks up are appended by whichever replica it asks.
    let (lb, counts) = round_robin(vec![a.tls, b.tls]).await;
    let mut env = GoEnv::new(&format!("https://{lb}"));
    env.set(
        "SSL_CERT_FILE",
        &shared.dir.path().join("ca.pem").to_string_lossy(),
    );
    env.set("GOSUMDB", &shared.vkey);
    env.set("GONOSUMDB", "");
    env.set("GOPRIVATE", "");
    env.set("GOFLAGS", "-mod=mod");
    // HTTP/1.1, so go's parallel fetches open several connections for the balancer to spread
    // (over HTTP/2 they would share one).
    env.set("GODEBUG", "http2client=0");
    let netrc = env.dir.path().join("netrc");
    std::fs::write(
        &netrc,
        format!("machine {lb} login alice password {ALICE_PW}\n"),
    )
    .expect("netrc");
    env.set("NETRC", &netrc.to_string_lossy());
    env.write_main_module(&[("corp.example.com/top", "v1.0.0")]);
    env.go(&["mod", "download", "all"])
        .expect_ok("go mod download all, verified against the shared log through both replicas");
    let served: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert!(
        served.iter().all(|&n| n > 0),
        "both replicas served go's connections: {served:?}"
    );
    // Every go.sum line go wrote is in the log's record of its version, as either replica
    // serves it; the log holds those versions and the concurrent lookups', each once.
    let sum = std::fs::read_to_string(env.work().join("go.sum")).expect("go.sum");
    let mut versions = std::collections::BTreeSet::new();
    for line in sum.lines() {
        let mut words = line.split(' ');
        let (path, version) = (words.next().expect("path"), words.next().expect("version"));
        let version = version.trim_end_matches("/go.mod");
        versions.insert((path.to_string(), version.to_string()));
        for r in [&a, &b] {
            let (status, body) = get(r.plain, &format!("/sumdb/{LOG}/lookup/{path}@{version}"));
            let record = String::from_utf8_lossy(&body);
            assert_eq!(status, 200, "{record}");
            assert!(
                record.contains(line),
                "the log's record of {path}@{version} lacks {line}:\n{record}"
            );
        }
    }
    assert!(
        versions.contains(&("corp.example.com/leaf/v2".to_string(), "v2.0.0".to_string())),
        "{sum}"
    );
    let head = latest(&a);
    assert_eq!(head, latest(&b));
    let (size, hash) = tree_of(&head);
    assert_eq!(size, (many().len() + versions.len()) as u64, "{sum}");
    // go kept the log's latest head it verified; it is the one both replicas serve now.
    let kept = std::fs::read_to_string(
        env.dir
            .path()
            .join("gopath/pkg/sumdb")
            .join(LOG)
            .join("latest"),
    )
    .expect("go's copy of the latest head");
    assert_eq!(
        tree_of(kept.as_bytes()),
        (size, hash),
        "go verified the head both serve"
    );
    let (code, out) = cli(&b, &["sumdb", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{size} records")), "{out}");

    // A replica with another key for the log's name is refused at start, naming the store.
    let other = tempfile::tempdir().expect("tempdir");
    let key = other.path().join("other.key");
    let out = modgate(&["sumdb", "keygen", LOG, "--out", &key.to_string_lossy()]);
    assert!(out.status.success());
    let dir = replica_dir(shared.dir.path());
    std::fs::copy(&key, dir.path().join("sumdb.key")).expect("copy key");
    let (plain, tls) = (free_addr(), free_addr());
    std::fs::write(
        dir.path().join("gateway.yaml"),
        replica_config("replica-c", &upstream.url(), &pg.dsn("sum"), plain, tls),
    )
    .expect("config");
    // Bounded: a gateway that started after all (a regression) is killed and the test fails.
    let mut child = std::process::Command::new(modgate_bin())
        .arg("run")
        .arg("-c")
        .arg(dir.path().join("gateway.yaml"))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run modgate");
    let mut exited = None;
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if exited.is_none() {
        let _ = child.kill();
    }
    let run = child.wait_with_output().expect("output");
    assert!(exited.is_some(), "a replica with another key kept running");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "started with another key: {stderr}");
    assert!(
        stderr.contains(&format!(
            "PostgreSQL 127.0.0.1:{}/sum holds the log",
            pg.port()
        )) && stderr.contains(&shared.vkey),
        "{stderr}"
    );
}
