//! End to end: an independent audit of the company checksum database (`checksum_log:`) a
//! running gateway serves. `testdata/sumdb_audit` — a Go program on Go's own `sumdb/tlog` and
//! `sumdb/note` (the copy vendored in Go's source tree, built offline by testkit's
//! `gooracle`) — reads `/sumdb/<name>/latest` and every data and hash tile over HTTP as a
//! reader, checks the head's signature with the key `modgate sumdb keygen` printed, recomputes
//! every stored hash and the tree hash from the records served, and lists the records. The log
//! holds some 300 private and public (`trust: first-seen`) module versions, logged through
//! concurrent lookups, so it crosses a 256-record tile boundary. The audit passes and lists
//! exactly the ledger's `h1:` hashes at the ids the lookups answered; a record edited in the
//! log's file, a key of another log, and no credentials each make it fail, naming why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use modgate_testkit::{
    build_against_vendored_xmod, free_addr, metric, modgate, request, require_go, FixtureProxy,
    Gateway, ModuleVersion, SumDb,
};

const LOG: &str = "sum.corp.test";
const READER: &str = "auditor";
const READER_PW: &str = "auditor-Pa55-9e8d7c6b";
/// Private module versions: with the public ones, more than one full tile of 256 records.
const PRIVATE: usize = 290;
/// Lookups under way at once.
const CONCURRENCY: usize = 8;

/// A module version: (path, version).
type Key = (String, String);

struct World {
    gateway: Gateway,
    plain: SocketAddr,
    /// The log's verifier key, as `modgate sumdb keygen` printed it.
    vkey: String,
    /// Every module version the fixtures serve, private and public.
    modules: Vec<ModuleVersion>,
    // The upstreams, kept running.
    _private: FixtureProxy,
    _public: FixtureProxy,
}

fn module(path: &str, version: &str) -> ModuleVersion {
    ModuleVersion::new(path, version).expect("fixture module")
}

/// Private module versions; some paths have capitals (escaped `!x` in lookups).
fn private_modules() -> Vec<ModuleVersion> {
    (0..PRIVATE)
        .map(|i| {
            let path = if i % 50 == 7 {
                format!("corp.example.com/Team{i}/svc")
            } else {
                format!("corp.example.com/team{}/svc{i}", i % 13)
            };
            let version = format!("v1.{}.{}", i % 3, i / 3);
            module(&path, &version).file("svc.go", format!("package svc // {i}\n").as_bytes())
        })
        .collect()
}

/// Public module versions, logged on first sight (air-gapped).
fn public_modules() -> Vec<ModuleVersion> {
    ["v1.0.0", "v1.1.0", "v2.0.0-rc.1+incompatible"]
        .into_iter()
        .flat_map(|v| {
            ["example.com/pub", "example.com/Other"]
                .into_iter()
                .map(move |p| (p, v))
        })
        .map(|(p, v)| module(p, v).file("pub.go", format!("package pub // {v}\n").as_bytes()))
        .collect()
}

async fn world() -> World {
    let private = FixtureProxy::start(&private_modules())
        .await
        .expect("private fixture");
    private.mark_private();
    let public = FixtureProxy::start(&public_modules())
        .await
        .expect("public fixture");

    let dir = tempfile::tempdir().expect("tempdir");
    let users = format!("{READER}:{}\n", bcrypt::hash(READER_PW, 4).expect("bcrypt"));
    std::fs::write(dir.path().join("users"), users).expect("users");
    let vkey = keygen(&dir.path().join("sumdb.key"));

    let plain = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}", metrics: true }}
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
    - {{ name: auditors, members: [ {{ user: {READER} }} ], rules: [ {{ allow: {{ prefix: corp.example.com }} }} ] }}
cache:
  dir: cache
  fsync: false
checksum_log:
  name: {LOG}
  key_file: sumdb.key
  readers: [auditors]
  public: {{ trust: first-seen }}
"#,
        public = public.url(),
        private = private.url(),
    );
    let gateway = Gateway::start_in(dir, &config, plain);
    World {
        gateway,
        plain,
        vkey,
        modules: private_modules()
            .into_iter()
            .chain(public_modules())
            .collect(),
        _private: private,
        _public: public,
    }
}

/// `modgate sumdb keygen LOG --out key`: the verifier key it prints.
fn keygen(key: &Path) -> String {
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
    vkey
}

fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

/// Looks up every module version, `CONCURRENCY` at a time, as the reader: the gateway fetches,
/// records and logs each. Returns the id each lookup answered.
fn log_all(w: &World) -> BTreeMap<Key, u64> {
    let auth = basic(READER, READER_PW);
    let next = AtomicUsize::new(0);
    let ids = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY {
            s.spawn(|| {
                // Each worker takes the next module version until none is left.
                while let Some(m) = w.modules.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let path = format!(
                        "/sumdb/{LOG}/lookup/{}@{}",
                        modgate_protocol::escape_path(&m.path).expect("escape path"),
                        modgate_protocol::escape_version(&m.version).expect("escape version"),
                    );
                    let r = request(w.plain, "GET", &path, &[("Authorization", &auth)])
                        .expect("lookup");
                    let text = r.text();
                    assert_eq!(r.status, 200, "{path}: {text}");
                    let id: u64 = text
                        .lines()
                        .next()
                        .and_then(|l| l.parse().ok())
                        .unwrap_or_else(|| panic!("{path}: no id: {text}"));
                    let line = format!("{} {} h1:", m.path, m.version);
                    assert!(text.contains(&line), "{path}: {text}");
                    let key = (m.path.clone(), m.version.clone());
                    ids.lock().expect("ids").insert(key, id);
                }
            });
        }
    });
    ids.into_inner().expect("ids")
}

/// The built auditor, or `None` (after testkit's loud skip) without `go`.
fn auditor() -> Option<PathBuf> {
    let go = require_go()?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sumdb_audit");
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    Some(
        build_against_vendored_xmod(&go, &source, scratch, "sumdb-audit")
            .unwrap_or_else(|e| panic!("building the Go auditor: {e}")),
    )
}

/// Runs the auditor against the gateway with `vkey`, as the reader (password `pw`).
fn audit(bin: &Path, w: &World, vkey: &str, pw: &str) -> Output {
    Command::new(bin)
        .args(["-url", &format!("http://{}", w.plain), "-name", LOG])
        .args(["-key", vkey, "-user", READER, "-timeout", "10s"])
        .env("SUMDB_AUDIT_PASSWORD", pw)
        .output()
        .expect("run the auditor")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The auditor's records: (path, version) → (id, zip h1, mod h1).
fn audited(out: &Output) -> BTreeMap<Key, (u64, String, String)> {
    let mut records = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let s = |k: &str| {
            r[k].as_str()
                .unwrap_or_else(|| panic!("{k}: {r}"))
                .to_string()
        };
        let id = r["id"].as_u64().unwrap_or_else(|| panic!("id: {r}"));
        let old = records.insert((s("path"), s("version")), (id, s("zip_h1"), s("mod_h1")));
        assert!(old.is_none(), "listed twice: {line}");
    }
    records
}

/// `modgate ledger show`: (path, version) → (zip h1, mod h1).
fn ledger(w: &World) -> BTreeMap<Key, (String, String)> {
    let out = modgate(&[
        "ledger",
        "show",
        "-c",
        w.gateway.config_path.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut hashes: BTreeMap<Key, (String, String)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `<path>@<version> .<artifact> sha256:… N bytes [h1:…] first seen …`
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some((path, version)) = fields.first().and_then(|f| f.rsplit_once('@')) else {
            continue;
        };
        let Some(h1) = fields.iter().find(|f| f.starts_with("h1:")) else {
            continue;
        };
        let entry = hashes
            .entry((path.to_string(), version.to_string()))
            .or_default();
        match fields.get(1) {
            Some(&".zip") => entry.0 = h1.to_string(),
            Some(&".mod") => entry.1 = h1.to_string(),
            _ => {}
        }
    }
    hashes
}

/// Go's own tlog and note audit the log the running gateway serves: the signature verifies,
/// the tree hash recomputed from every record served (two tiles of records, the second partial)
/// is the signed one, every hash tile is the recomputed hashes, and the records are exactly
/// the ledger's `h1:` hashes (and the fixtures' own) at the ids the lookups answered. Then a
/// record edited in the log's file fails the audit, naming the record and the tree hash; so do
/// another log's key and a wrong password.
#[tokio::test(flavor = "multi_thread")]
async fn go_s_tlog_and_note_audit_the_log_the_gateway_serves() {
    let Some(bin) = auditor() else { return };
    let w = world().await;
    let ids = log_all(&w);
    let n = w.modules.len();
    assert!(n > 256, "the log must cross a tile boundary");
    assert_eq!(ids.len(), n);
    assert_eq!(metric(w.plain, "modgate_sumdb_tree_size"), n as f64);

    let out = audit(&bin, &w, &w.vkey, READER_PW);
    assert!(out.status.success(), "the audit failed:\n{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "OK: {LOG}: {n} records, 2 data tiles, 3 hash tiles"
        )),
        "{}",
        stderr(&out)
    );
    let records = audited(&out);
    let mut listed: Vec<u64> = records.values().map(|r| r.0).collect();
    listed.sort_unstable();
    assert_eq!(listed, (0..n as u64).collect::<Vec<_>>(), "ids 0..{n}");
    let ledger = ledger(&w);
    for m in &w.modules {
        let key = (m.path.clone(), m.version.clone());
        let (id, zip_h1, mod_h1) = records
            .get(&key)
            .unwrap_or_else(|| panic!("the audit lists no {key:?}"));
        assert_eq!(Some(id), ids.get(&key), "{key:?}: id of its lookup");
        let want = (
            SumDb::zip_h1(&m.zip().expect("zip")),
            SumDb::mod_h1(&m.mod_file()),
        );
        assert_eq!(
            (zip_h1, mod_h1),
            (&want.0, &want.1),
            "{key:?}: the module's"
        );
        assert_eq!(ledger.get(&key), Some(&want), "{key:?}: the ledger's");
    }

    // A record of the partial tile edited in the log's file (full tiles are served from the
    // gateway's memory, as immutable): the last logged.
    let (last_key, last) = ids
        .iter()
        .max_by_key(|(_, id)| **id)
        .map(|(k, id)| (k.clone(), *id))
        .expect("a record");
    let db = rusqlite::Connection::open(w.gateway.dir.path().join("cache/sumdb.sqlite"))
        .expect("open the log");
    // (The log's own triggers refuse edits: whoever holds the file can drop them.)
    db.execute_batch("DROP TRIGGER records_no_update")
        .expect("drop the trigger");
    let changed = db
        .execute(
            "UPDATE records SET text = replace(text, ' h1:', ' h1:Z') WHERE id = ?1",
            [i64::try_from(last).expect("an id")],
        )
        .expect("edit a record");
    assert_eq!(changed, 1);
    drop(db);
    let out = audit(&bin, &w, &w.vkey, READER_PW);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an edited record passed:\n{err}"
    );
    let names_record = format!(
        "MISMATCH: tile/8/0/001.p/{}: record {last} ({} {}) as served hashes to",
        n - 256,
        last_key.0,
        last_key.1
    );
    assert!(err.contains(&names_record), "{names_record}:\n{err}");
    assert!(
        err.contains(&format!(
            "MISMATCH: tree hash: the {n} records served hash to"
        )),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "records listed by a failed audit");

    // Another log's key (same name): the signed head does not verify.
    let other = tempfile::tempdir().expect("tempdir");
    let other_vkey = keygen(&other.path().join("k"));
    let out = audit(&bin, &w, &other_vkey, READER_PW);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/latest does not verify") && err.contains("no verifiable signatures"),
        "{err}"
    );

    // A wrong password: the log is not read.
    let out = audit(&bin, &w, &w.vkey, "wrong");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("401"), "{err}");
}
