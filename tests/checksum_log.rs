//! End to end: the company's own checksum database (`checksum_log:`, issue 21) with the real
//! `go` command. `GOSUMDB="<name>+<key id>+<key>"` pointed at the gateway and no
//! `GOPRIVATE`/`GONOSUMDB`: `go` verifies every module, public and private, against the log the
//! gateway keeps — found through `<GOPROXY>/sumdb/<name>/supported`, read over HTTPS with
//! `.netrc` credentials (the log is served to its reader roles only). Public modules are logged
//! only once a fixture public checksum database (proxied under `sumdb:`) agrees; a public
//! database that states other hashes is a refused, audited security event. Tampering with the
//! log's storage or its key makes `go` fail with its verification error.

use std::net::SocketAddr;

use modgate_testkit::{
    free_addr, make_certs, metric, modgate, request, require_go, FixtureProxy, Gateway, GoEnv,
    ModuleVersion, SumDb, SumDbServer,
};

const LOG: &str = "sum.corp.test";
const PUBLIC_DB: &str = "sum.public.test";
const SECRET: &str = "corp.example.com/secret";
const TOOLS: &str = "corp.example.com/tools";
const PUB: &str = "example.com/pub";
const DEP: &str = "example.com/dep";
const ALICE_PW: &str = "alice-Pa55-0c1d2e3f";
const BOB_PW: &str = "bob-Pa55-4a5b6c7d";

struct World {
    public: FixtureProxy,
    private: FixtureProxy,
    db: SumDbServer,
    gateway: Gateway,
    plain: SocketAddr,
    tls: SocketAddr,
    /// The log's verifier key, as `modgate sumdb keygen` printed it.
    vkey: String,
}

fn module(path: &str, version: &str) -> ModuleVersion {
    ModuleVersion::new(path, version).expect("fixture module")
}

/// The public graph: pub requires dep.
fn public_modules() -> Vec<ModuleVersion> {
    vec![
        module(DEP, "v1.0.0").file("dep.go", b"package dep\n"),
        module(PUB, "v1.0.0")
            .file("pub.go", b"package pub\n")
            .require(DEP, "v1.0.0"),
    ]
}

/// The private graph: secret requires tools and pub.
fn private_modules() -> Vec<ModuleVersion> {
    vec![
        module(TOOLS, "v1.0.0").file("tools.go", b"package tools\n"),
        module(SECRET, "v1.0.0")
            .file("secret.go", b"package secret\n")
            .require(TOOLS, "v1.0.0")
            .require(PUB, "v1.0.0"),
    ]
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

async fn world_with(public_trust: &str) -> World {
    let mut db = SumDb::new(PUBLIC_DB);
    for m in public_modules() {
        db.add(&m);
    }
    let db = db.start();
    let public = FixtureProxy::start(&public_modules())
        .await
        .expect("public fixture");
    let private = FixtureProxy::start(&private_modules())
        .await
        .expect("private fixture");
    private.mark_private();

    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path(), "modgate test CA", "client");
    let hash = |pw: &str| bcrypt::hash(pw, 4).expect("bcrypt");
    std::fs::write(
        dir.path().join("users"),
        format!("alice:{}\nbob:{}\n", hash(ALICE_PW), hash(BOB_PW)),
    )
    .expect("users");
    let key = dir.path().join("sumdb.key");
    let out = modgate(&[
        "sumdb",
        "keygen",
        LOG,
        "--out",
        key.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(vkey.starts_with(&format!("{LOG}+")), "{vkey}");

    let (plain, tls) = (free_addr(), free_addr());
    let public_trust = public_trust.replace("@VKEY@", &db.verifier_key());
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}", metrics: true }}
  - name: tls
    address: "{tls}"
    tls: {{ cert: server.pem, key: server.key }}
upstreams:
  public: {{ url: "{public}" }}
  corp: {{ url: "{private}", private: true }}
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true }}
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
auth:
  users_file: users
access:
  default: allow
  roles:
    - {{ name: devs, members: [ {{ user: alice }} ], rules: [ {{ allow: {{ prefix: corp.example.com }} }} ] }}
    - {{ name: guests, members: [ {{ user: bob }} ], rules: [ {{ allow: {{ prefix: corp.example.com }} }} ] }}
sumdb:
  {PUBLIC_DB}: {{ url: "{db}" }}
cache:
  dir: cache
  fsync: false
checksum_log:
  name: {LOG}
  key_file: sumdb.key
  readers: [devs]
  public: {public_trust}
audit: {{ output: audit.jsonl }}
"#,
        public = public.url(),
        private = private.url(),
        db = db.url(),
    );
    let gateway = Gateway::start_in(dir, &config, plain);
    World {
        public,
        private,
        db,
        gateway,
        plain,
        tls,
        vkey,
    }
}

async fn world() -> World {
    world_with(&format!("{{ sumdb: {PUBLIC_DB}, key: \"@VKEY@\" }}")).await
}

/// A `go` that verifies every module against the company log through the gateway's TLS
/// listener, as alice (`.netrc`), with no GOPRIVATE/GONOSUMDB hole.
fn go_env(w: &World, vkey: &str) -> GoEnv {
    let mut env = GoEnv::new(&format!("https://{}", w.tls));
    env.set(
        "SSL_CERT_FILE",
        &w.gateway.dir.path().join("ca.pem").to_string_lossy(),
    );
    env.set("GOSUMDB", vkey);
    env.set("GONOSUMDB", "");
    env.set("GOPRIVATE", "");
    let netrc = env.dir.path().join("netrc");
    std::fs::write(
        &netrc,
        format!("machine {} login alice password {ALICE_PW}\n", w.tls),
    )
    .expect("netrc");
    env.set("NETRC", &netrc.to_string_lossy());
    env
}

/// The `go.sum` lines of `m`, as `go` writes them.
fn go_sum_lines(m: &ModuleVersion) -> [String; 2] {
    let zip = m.zip().expect("zip");
    [
        format!("{} {} {}", m.path, m.version, SumDb::zip_h1(&zip)),
        format!(
            "{} {}/go.mod {}",
            m.path,
            m.version,
            SumDb::mod_h1(&m.mod_file())
        ),
    ]
}

fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let r = request(addr, "GET", path, &headers).expect("request");
    (r.status, r.text())
}

fn log_file(w: &World) -> std::path::PathBuf {
    w.gateway.dir.path().join("cache").join("sumdb.sqlite")
}

fn ledger_show(w: &World) -> String {
    let out = modgate(&[
        "ledger",
        "show",
        "-c",
        w.gateway.config_path.to_str().expect("utf-8 path"),
    ]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn audit(w: &World) -> Vec<serde_json::Value> {
    std::fs::read_to_string(w.gateway.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The real `go`, with a fresh GOPATH, downloads a graph of public and private modules
/// verifying each against the company log; the go.sum it writes is the ledger's hashes. More
/// versions are logged; the same `go` (its sumdb cache remembers the older tree) verifies them
/// through a consistency proof. `modgate sumdb verify` recomputes the log: clean.
#[tokio::test(flavor = "multi_thread")]
async fn go_verifies_public_and_private_modules_against_the_company_log() {
    let w = world().await;
    if require_go().is_none() {
        return;
    }
    let env = go_env(&w, &w.vkey);
    env.write_main_module(&[(SECRET, "v1.0.0")]);
    let run = env.go(&["mod", "download", "all"]);
    run.expect_ok("go mod download all, verified against the company log");
    let sum = std::fs::read_to_string(env.work().join("go.sum")).unwrap_or_default();
    let run = env.go(&["mod", "tidy"]);
    run.expect_ok("go mod tidy");
    let sum = sum + &std::fs::read_to_string(env.work().join("go.sum")).expect("go.sum");
    let ledger = ledger_show(&w);
    // Every module of the build, private and public, with both lines.
    let built: Vec<ModuleVersion> = private_modules()
        .into_iter()
        .chain(public_modules().into_iter().filter(|m| m.path == PUB))
        .collect();
    for m in &built {
        for line in go_sum_lines(m) {
            assert!(sum.contains(&line), "go.sum lacks {line}:\n{sum}");
        }
    }
    // Every line go wrote (a pruned dependency may have only its go.mod line) is the ledger's.
    let mut versions = std::collections::BTreeSet::new();
    for line in sum.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert!(
            ledger.contains(fields[2]),
            "the ledger lacks {line}:\n{ledger}"
        );
        versions.insert((fields[0], fields[1].trim_end_matches("/go.mod")));
    }
    // go found the log through the proxy and read it.
    assert!(
        std::fs::read_dir(env.dir.path().join("gopath/pkg/sumdb"))
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "go kept no sumdb cache"
    );
    // Each module version go verified was looked up once and logged once.
    let logged = metric(w.plain, "modgate_sumdb_tree_size");
    assert_eq!(logged, versions.len() as f64, "{versions:?}");
    // The public database was asked about public modules only.
    for p in w.db.paths() {
        assert!(
            !p.contains("corp.example.com"),
            "the public database saw {p}"
        );
    }

    // A new version of each kind; the same go (same GOPATH: its sumdb cache holds the tree it
    // saw) verifies them against a bigger tree.
    let pub2 = module(PUB, "v1.1.0")
        .file("pub.go", b"package pub // 1.1\n")
        .require(DEP, "v1.0.0");
    w.public.add(&pub2).expect("add");
    w.db.add(&pub2);
    let tools2 = module(TOOLS, "v1.1.0").file("tools.go", b"package tools // 1.1\n");
    w.private.add(&tools2).expect("add");
    let run = env.go(&["get", &format!("{PUB}@v1.1.0"), &format!("{TOOLS}@v1.1.0")]);
    run.expect_ok("go get of versions logged after the tree go remembers");
    let sum = std::fs::read_to_string(env.work().join("go.sum")).expect("go.sum");
    for line in go_sum_lines(&pub2)
        .iter()
        .chain(go_sum_lines(&tools2).iter())
    {
        assert!(sum.contains(line), "go.sum lacks {line}:\n{sum}");
    }
    assert_eq!(
        metric(w.plain, "modgate_sumdb_tree_size"),
        versions.len() as f64 + 2.0
    );

    let out = modgate(&[
        "sumdb",
        "verify",
        "-c",
        w.gateway.config_path.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tampering makes the real `go` fail with its verification error, never succeed: a verifier
/// key of another log (a head signed by another key), and a record edited in the log's storage.
#[tokio::test(flavor = "multi_thread")]
async fn go_refuses_a_tampered_log() {
    let w = world().await;
    if require_go().is_none() {
        return;
    }
    let env = go_env(&w, &w.vkey);
    env.write_main_module(&[(TOOLS, "v1.0.0")]);
    env.go(&["mod", "download", "all"])
        .expect_ok("the untampered log verifies");

    // Another key of the same name: the signed head does not verify.
    let other = tempfile::tempdir().expect("tempdir");
    let out = modgate(&[
        "sumdb",
        "keygen",
        LOG,
        "--out",
        other.path().join("k").to_str().expect("utf-8"),
    ]);
    let other_vkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let env2 = go_env(&w, &other_vkey);
    env2.write_main_module(&[(TOOLS, "v1.0.0")]);
    let run = env2.go(&["mod", "download", "all"]);
    assert!(!run.ok(), "another key verified: {}", run.stderr());
    assert!(
        run.stderr().contains("note has no verifiable signatures"),
        "{}",
        run.stderr()
    );

    // A record edited in storage: its text no longer hashes to the logged leaf.
    let db = rusqlite::Connection::open(log_file(&w)).expect("open the log");
    // (The log's own triggers refuse edits: whoever holds the file can drop them.)
    db.execute_batch("DROP TRIGGER records_no_update")
        .expect("drop the trigger");
    let changed = db
        .execute(
            "UPDATE records SET text = replace(text, ' h1:', ' h1:Z') WHERE path = ?1",
            [TOOLS],
        )
        .expect("edit a record");
    assert_eq!(changed, 1);
    drop(db);
    let env3 = go_env(&w, &w.vkey);
    env3.write_main_module(&[(TOOLS, "v1.0.0")]);
    let run = env3.go(&["mod", "download", "all"]);
    assert!(!run.ok(), "an edited record verified: {}", run.stderr());
    assert!(
        run.stderr()
            .contains("cannot authenticate record data in server response"),
        "{}",
        run.stderr()
    );
    // And the offline check finds it.
    let out = modgate(&[
        "sumdb",
        "verify",
        "-c",
        w.gateway.config_path.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The log is served to its readers only: anonymous requests get 401 and others 403 on every
/// path under `/sumdb/<name>/`; a reader's lookup of a module the access policy refuses them is
/// 403 and nothing is fetched for it.
#[tokio::test(flavor = "multi_thread")]
async fn only_readers_read_the_log() {
    let w = world().await;
    let alice = basic("alice", ALICE_PW);
    let bob = basic("bob", BOB_PW);
    let paths = [
        format!("/sumdb/{LOG}/supported"),
        format!("/sumdb/{LOG}/latest"),
        format!("/sumdb/{LOG}/lookup/{TOOLS}@v1.0.0"),
        format!("/sumdb/{LOG}/tile/8/0/000.p/1"),
        format!("/sumdb/{LOG}/tile/8/data/000.p/1"),
    ];
    for p in &paths {
        let (status, text) = get(w.plain, p, None);
        assert_eq!(status, 401, "{p}: {text}");
        let (status, text) = get(w.plain, p, Some(&bob));
        assert_eq!(status, 403, "{p}: {text}");
        assert!(
            text.contains("no role of theirs is among its readers"),
            "{text}"
        );
    }
    assert_eq!(
        w.private.request_count(),
        0,
        "a refused lookup fetched something"
    );
    let (status, text) = get(w.plain, &paths[0], Some(&alice));
    assert_eq!(status, 200, "{text}");
    let (status, text) = get(w.plain, &paths[2], Some(&alice));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("{TOOLS} v1.0.0 h1:")), "{text}");
    assert!(text.contains(&format!("— {LOG} ")), "{text}");
    // Now the tiles exist.
    for p in &paths[3..] {
        let (status, text) = get(w.plain, p, Some(&alice));
        assert_eq!(status, 200, "{p}: {text}");
    }
    let denied = audit(&w)
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/sumdb/")))
        .filter(|r| r["status"] == 403)
        .count();
    assert_eq!(denied, paths.len(), "every refusal is audited");
}

/// A public database that states other hashes than the gateway first saw: the lookup is refused
/// (502, the reason names both), audited as a security event, and nothing is logged. An
/// unreachable public database fails the lookup (502). Air-gapped, the first-seen hashes are
/// logged and the audit says so.
#[tokio::test(flavor = "multi_thread")]
async fn public_records_are_logged_only_when_the_public_database_agrees() {
    let w = world().await;
    let alice = basic("alice", ALICE_PW);
    // The public database knows another zip for this version.
    let lying = module("example.com/lied", "v1.0.0").file("a.go", b"package lied\n");
    let served = module("example.com/lied", "v1.0.0").file("a.go", b"package lied // other\n");
    w.db.add(&lying);
    w.public.add(&served).expect("add");
    let (status, text) = get(
        w.plain,
        &format!("/sumdb/{LOG}/lookup/example.com/lied@v1.0.0"),
        Some(&alice),
    );
    assert_eq!(status, 502, "{text}");
    assert!(
        text.contains("SECURITY") && text.contains(PUBLIC_DB),
        "{text}"
    );
    assert_eq!(
        metric(w.plain, "modgate_sumdb_tree_size"),
        0.0,
        "nothing logged"
    );
    let events: Vec<_> = audit(&w)
        .into_iter()
        .filter(|r| r["event"] == "sumdb-disagreement")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        metric(
            w.plain,
            "modgate_sumdb_lookups_total{result=\"disagreement\"}"
        ),
        1.0
    );
    // A version the public database does not know: 404, not logged.
    let unknown = module("example.com/unknown", "v1.0.0");
    w.public.add(&unknown).expect("add");
    let (status, text) = get(
        w.plain,
        &format!("/sumdb/{LOG}/lookup/example.com/unknown@v1.0.0"),
        Some(&alice),
    );
    assert_eq!(status, 404, "{text}");

    // Air-gapped: the gateway's first-seen hashes are logged, audited as such.
    let offline = world_with("{ trust: first-seen }").await;
    let (status, text) = get(
        offline.plain,
        &format!("/sumdb/{LOG}/lookup/{PUB}@v1.0.0"),
        Some(&alice),
    );
    assert_eq!(status, 200, "{text}");
    assert!(offline.db.paths().is_empty(), "{:?}", offline.db.paths());
    assert!(
        audit(&offline)
            .iter()
            .any(|r| r["event"] == "sumdb-logged-first-seen"),
        "{:?}",
        audit(&offline)
    );
}
