//! Go's own checksum-database client and server against modgate-sumdb, offline.
//!
//! `testdata/client` is built once per run against the copy of `golang.org/x/mod` vendored in
//! Go's source tree (testkit's `gooracle`: a `replace` to a shim module linking it). In client
//! mode it runs `sumdb.Client.Lookup`; its `ReadRemote` asks this test over a pipe and gets
//! exactly what [`answer`] says, so the go command's verification code
//! checks the log: logs of 1, 255, 256, 257 and 600 records (tiles crossing boundaries), the
//! same client again after the log grew (consistency proofs), and the cases where Go's client
//! must refuse: an edited record, a head signed by another key, a rolled-back tree (a client
//! that cannot get the proof refuses; one holding it accepts the older, consistent head but
//! never moves back, and reports the server once the restored log grows differently), a fork
//! of the same size. A version not logged is logged on demand as the gateway will.
//! In server mode it answers paths with `sumdb.Server` over the same records and head, and the
//! answers must be byte for byte ours.
//!
//! They need `go` (testkit's `require_go`: a failure under `CI`, a loud skip elsewhere).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use modgate_sumdb::{answer, verify, Answer, Entry, Log, Problem, Response};
use modgate_testkit::build_against_vendored_xmod;
use modgate_testkit::tools::require_go;
use modgate_tlog::note::key_pair_from_seed;
use modgate_tlog::{record_hash, Signer};
use serde_json::{json, Value};

const NAME: &str = "sum.corp.example";

/// Most requests one Go run may make (each lookup needs a handful).
const MAX_EXCHANGES: usize = 10_000;

fn signer(seed: u8) -> Signer {
    let (skey, _) = key_pair_from_seed(NAME, &[seed; 32]).expect("key");
    Signer::new(&skey).expect("signer")
}

fn vkey(seed: u8) -> String {
    signer(seed).verifier().key()
}

/// Module version `i` of the logs: some paths have capitals (escaped as `!x` in lookups).
fn entry(i: u64, salt: &str) -> Entry {
    let path = if i.is_multiple_of(5) {
        format!("example.com/Corp/Mod{}", i % 37)
    } else {
        format!("example.com/corp/mod{}", i % 37)
    };
    let zip = record_hash(format!("zip {i} {salt}").as_bytes());
    let md = record_hash(format!("mod {i} {salt}").as_bytes());
    Entry::new(
        &path,
        &format!("v1.{}.0", i / 37),
        &format!("h1:{zip}"),
        &format!("h1:{md}"),
    )
    .expect("entry")
}

/// Appends entries `from..to` in batches of 100.
fn grow(log: &Log, from: u64, to: u64, salt: &str) {
    let entries: Vec<Entry> = (from..to).map(|i| entry(i, salt)).collect();
    for chunk in entries.chunks(100) {
        let batch = log.append(chunk).expect("append");
        assert!(batch
            .outcomes
            .iter()
            .all(|o| o.as_ref().is_ok_and(|a| a.new)));
    }
    assert_eq!(log.tree_size().expect("size"), to);
}

/// The built Go program (testkit's [`build_against_vendored_xmod`]), or `None` (after
/// testkit's loud skip) without `go`.
fn client_bin() -> Option<&'static Path> {
    let go = require_go()?;
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    Some(BUILT.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/client");
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
        build_against_vendored_xmod(&go, &source, scratch, "sumdb-go-client")
            .unwrap_or_else(|e| panic!("building the Go client: {e}"))
    }))
}

/// What the gateway does with a lookup of a version not logged: log it (path, version).
type Fetch<'a> = dyn Fn(&str, &str) + 'a;

/// A Go `sumdb.Client`'s state kept between runs: its config (the latest tree it has seen) and
/// its cache of lookups and tiles.
struct GoClient {
    vkey: String,
    config: PathBuf,
    cache: PathBuf,
}

/// What one run of the Go client found.
#[derive(Debug)]
struct Run {
    /// Per lookup: its go.sum lines, or Go's error.
    lookups: Vec<Result<Vec<String>, String>>,
    /// Security errors Go's client reported (misbehaving server).
    security: Vec<String>,
    /// The paths it asked.
    asked: Vec<String>,
}

impl GoClient {
    fn new(dir: &Path, vkey: &str) -> GoClient {
        GoClient {
            vkey: vkey.to_string(),
            config: dir.join("config"),
            cache: dir.join("cache"),
        }
    }

    /// Forgets the cache (as `go clean -modcache`), keeping the latest tree seen.
    fn clear_cache(&self) {
        let _ = std::fs::remove_dir_all(&self.cache);
    }

    /// The latest signed tree this client remembers.
    fn remembered(&self) -> Vec<u8> {
        std::fs::read(self.config.join(NAME).join("latest")).unwrap_or_default()
    }

    /// Looks up `path@version` for each of `lookups` with the Go client talking to `log`. A
    /// lookup of a version not logged is answered 404 unless `fetch` logs it (as the gateway
    /// does), then answered again.
    fn run(&self, log: &Log, lookups: &[String], fetch: Option<&Fetch>) -> Run {
        let Some(bin) = client_bin() else {
            panic!("client_bin checked by the caller");
        };
        let mut child = Command::new(bin)
            .arg("client")
            .arg("-vkey")
            .arg(&self.vkey)
            .arg("-config")
            .arg(&self.config)
            .arg("-cache")
            .arg(&self.cache)
            .args(lookups)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the Go client");
        let mut stderr = child.stderr.take().expect("stderr");
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut asked = Vec::new();
        let mut result = None;
        for _ in 0..MAX_EXCHANGES {
            let mut line = String::new();
            if stdout
                .read_line(&mut line)
                .expect("read from the Go client")
                == 0
            {
                break;
            }
            let line = line.trim_end_matches('\n');
            if let Some(json) = line.strip_prefix("RESULT ") {
                result = Some(serde_json::from_str::<Value>(json).expect("result JSON"));
                break;
            }
            let path = line
                .strip_prefix("GET ")
                .unwrap_or_else(|| panic!("unexpected line from the Go client: {line:?}"));
            asked.push(path.to_string());
            let response = match answer(log, path) {
                Answer::Response(r) => r,
                Answer::NotLogged { path: p, version } => match fetch {
                    Some(fetch) => {
                        fetch(&p, &version);
                        match answer(log, path) {
                            Answer::Response(r) => r,
                            other => panic!("still not logged after fetching: {other:?}"),
                        }
                    }
                    None => Response::not_found(&format!("not found: {p}@{version}")),
                },
            };
            writeln!(stdin, "{} {}", response.status, response.body.len()).expect("write");
            stdin.write_all(&response.body).expect("write");
            stdin.flush().expect("flush");
        }
        drop(stdin);
        let status = child.wait().expect("wait for the Go client");
        let stderr = err_thread.join().expect("stderr thread");
        let result = result.unwrap_or_else(|| {
            panic!("the Go client gave no result ({status}); stderr:\n{stderr}")
        });
        assert!(status.success(), "Go client failed: {stderr}");
        let lookups = result["lookups"]
            .as_array()
            .expect("lookups")
            .iter()
            .map(|r| match r.get("err").and_then(Value::as_str) {
                Some(err) => Err(err.to_string()),
                None => Ok(r["lines"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|s| s.as_str().expect("line").to_string())
                            .collect()
                    })
                    .unwrap_or_default()),
            })
            .collect();
        let security = result["security"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|m| m.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        Run {
            lookups,
            security,
            asked,
        }
    }
}

/// The lookups of record `i` (its zip line, then its go.mod line) and the lines Go must return.
fn lookups_of(ids: &[u64], salt: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut args = Vec::new();
    let mut want = Vec::new();
    for &i in ids {
        let e = entry(i, salt);
        let text = e.text();
        let mut lines = text.lines().map(str::to_string);
        args.push(format!("{}@{}", e.path(), e.version()));
        want.push(vec![lines.next().expect("zip line")]);
        args.push(format!("{}@{}/go.mod", e.path(), e.version()));
        want.push(vec![lines.next().expect("go.mod line")]);
    }
    (args, want)
}

fn assert_found(run: &Run, want: &[Vec<String>], what: &str) {
    assert!(run.security.is_empty(), "{what}: {:?}", run.security);
    for (got, want) in run.lookups.iter().zip(want) {
        assert_eq!(got.as_ref(), Ok(want), "{what}");
    }
    assert_eq!(run.lookups.len(), want.len(), "{what}");
}

/// The single error of a run that must fail.
fn refused(run: &Run, what: &str) -> String {
    match &run.lookups[..] {
        [Err(e)] => {
            eprintln!("{what}: Go's client refused: {e}");
            e.clone()
        }
        other => panic!(
            "{what}: Go's client accepted: {other:?} (asked {:?})",
            run.asked
        ),
    }
}

fn copy_log(from: &Path, to: &Path) {
    rusqlite::Connection::open(from)
        .expect("open")
        .execute("VACUUM INTO ?1", [to.to_str().expect("utf-8 path")])
        .expect("VACUUM INTO");
}

#[test]
fn go_client_verifies_logs_of_several_sizes_and_their_growth() {
    if client_bin().is_none() {
        return;
    }
    for n in [1u64, 255, 256, 257, 600] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(&dir.path().join("sumdb.db"), signer(1)).expect("open");
        grow(&log, 0, n, "");
        let client = GoClient::new(dir.path(), &vkey(1));
        let mut ids = vec![0, n / 2, n - 1];
        ids.extend([254, 255, 256].iter().filter(|&&i| i < n));
        let (args, want) = lookups_of(&ids, "");
        let run = client.run(&log, &args, None);
        assert_found(&run, &want, &format!("log of {n}"));
        assert_eq!(client.remembered(), log.signed_head().expect("head"));

        // The log grows past tile boundaries; the same client (its remembered tree and cache)
        // must prove the new tree consistent with the old one.
        grow(&log, n, n + 300, "");
        let (args, want) = lookups_of(&[n - 1, n, n + 299, n / 3], "");
        let run = client.run(&log, &args, None);
        assert_found(&run, &want, &format!("log of {n} grown by 300"));
        assert_eq!(client.remembered(), log.signed_head().expect("head"));

        // And again with its cache gone: every tile comes from the log.
        grow(&log, n + 300, n + 301, "");
        client.clear_cache();
        let (args, want) = lookups_of(&[n + 300, 0], "");
        let run = client.run(&log, &args, None);
        assert_found(&run, &want, &format!("log of {n} grown by 301, no cache"));
        assert!(
            run.asked.iter().any(|p| p.starts_with("/tile/8/0/")),
            "{:?}",
            run.asked
        );
    }
}

#[test]
fn a_version_not_logged_is_logged_by_the_gateway_then_verified() {
    if client_bin().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(&dir.path().join("sumdb.db"), signer(1)).expect("open");
    grow(&log, 0, 257, "");
    let client = GoClient::new(dir.path(), &vkey(1));
    let (args, want) = lookups_of(&[257], "");
    // Without a gateway to log it, the lookup fails with the 404.
    let run = client.run(&log, &args[..1], None);
    assert!(
        refused(&run, "not logged").contains("404 not found"),
        "{run:?}"
    );
    let fetch = |path: &str, version: &str| {
        let e = entry(257, "");
        assert_eq!((path, version), (e.path(), e.version()));
        log.append(&[e]).expect("append");
    };
    let run = client.run(&log, &args, Some(&fetch));
    assert_found(&run, &want, "logged on demand");
    assert_eq!(log.tree_size().expect("size"), 258);
}

#[test]
fn go_client_refuses_an_edited_record() {
    if client_bin().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sumdb.db");
    let log = Log::open(&path, signer(1)).expect("open");
    grow(&log, 0, 300, "");
    // Someone with the file edits record 100's checksums (the triggers are no obstacle to
    // them).
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "DROP TRIGGER records_no_update; \
         UPDATE records SET text = replace(text, ' h1:', ' h1:Z') WHERE id = 100;",
    )
    .expect("edit");
    let client = GoClient::new(dir.path(), &vkey(1));
    let (args, _) = lookups_of(&[100], "");
    let run = client.run(&log, &args[..1], None);
    let err = refused(&run, "edited record");
    assert!(err.contains("cannot authenticate record data"), "{err}");
    // The record next to it is fine, and verify names the edit.
    let (args, want) = lookups_of(&[101], "");
    assert_found(&client.run(&log, &args, None), &want, "record 101");
    let report = verify(&path, log.verifier()).expect("verify");
    assert!(
        matches!(
            &report.problems[..],
            [Problem::RecordEdited { id: 100, .. }]
        ),
        "{report}"
    );
}

#[test]
fn go_client_refuses_a_head_signed_by_another_key() {
    if client_bin().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The same records, in a log of the same name under another key.
    let log = Log::open(&dir.path().join("other.db"), signer(2)).expect("open");
    grow(&log, 0, 10, "");
    let client = GoClient::new(dir.path(), &vkey(1));
    let (args, _) = lookups_of(&[3], "");
    let run = client.run(&log, &args[..1], None);
    let err = refused(&run, "other key");
    assert!(err.contains("no verifiable signatures"), "{err}");
}

#[test]
fn go_client_refuses_a_rolled_back_tree() {
    if client_bin().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sumdb.db");
    let log = Log::open(&path, signer(1)).expect("open");
    grow(&log, 0, 300, "");
    let backup = dir.path().join("backup-300.db");
    copy_log(&path, &backup);
    grow(&log, 300, 600, "");
    // Two clients see the tree of 600 (and cache the tiles of records 599, 300 and 10).
    let a = GoClient::new(&dir.path().join("a"), &vkey(1));
    let b = GoClient::new(&dir.path().join("b"), &vkey(1));
    let (args, want) = lookups_of(&[599, 300, 10], "");
    assert_found(&a.run(&log, &args, None), &want, "tree of 600, client a");
    assert_found(&b.run(&log, &args, None), &want, "tree of 600, client b");
    drop(log);
    let remembers_600 = |c: &GoClient| {
        let text = String::from_utf8(c.remembered()).expect("utf-8");
        assert!(text.starts_with("go.sum database tree\n600\n"), "{text}");
    };

    // The server is restored from the backup of 300 records.
    let rolled = Log::open(&backup, signer(1)).expect("open the backup");
    assert_eq!(rolled.tree_size().expect("size"), 300);

    // A client without its cache cannot get the tiles of the tree of 600 it remembers: it
    // refuses to go on.
    a.clear_cache();
    let (args, _) = lookups_of(&[10], "");
    let run = a.run(&rolled, &args[..1], None);
    let err = refused(&run, "rolled back to 300, no cache");
    assert!(
        err.contains("checking tree#600") && err.contains("404"),
        "{err}"
    );
    remembers_600(&a);

    // A client with its cache proves the head of 300 a prefix of the tree it knows: the old
    // head is consistent, the record authentic, and the client keeps the tree of 600.
    let (args, want) = lookups_of(&[20], "");
    assert_found(
        &b.run(&rolled, &args, None),
        &want,
        "an older consistent head",
    );
    remembers_600(&b);

    // The restored server logs versions again: record 300 is now another record than in the
    // tree the client knows, and the client reports the server's misbehaviour.
    let (args, _) = lookups_of(&[450], "");
    let fetch = |_: &str, _: &str| {
        rolled.append(&[entry(450, "")]).expect("append");
    };
    let run = b.run(&rolled, &args[..1], Some(&fetch));
    let err = refused(&run, "rolled back and grown again");
    assert!(err.contains("security error"), "{err}");
    assert!(
        run.security
            .iter()
            .any(|s| s.contains("go.sum database server misbehavior detected")),
        "{run:?}"
    );
    remembers_600(&b);
}

#[test]
fn go_client_detects_a_fork_of_the_same_size() {
    if client_bin().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sumdb.db");
    let log = Log::open(&path, signer(1)).expect("open");
    grow(&log, 0, 300, "");
    let fork_path = dir.path().join("fork.db");
    copy_log(&path, &fork_path);
    grow(&log, 300, 600, "");
    // The fork: the same first 300 records, then 300 others; same size, same key.
    let fork = Log::open(&fork_path, signer(1)).expect("open fork");
    grow(&fork, 300, 600, "forked");
    assert_eq!(fork.tree_size().expect("size"), 600);
    assert_ne!(fork.head().expect("head"), log.head().expect("head"));

    let client = GoClient::new(&dir.path().join("client"), &vkey(1));
    let (args, want) = lookups_of(&[599, 5], "");
    assert_found(&client.run(&log, &args, None), &want, "the real tree");
    // With its cache (the tiles of the tree it verified), the client proves the fork.
    let (args, _) = lookups_of(&[20], "");
    let run = client.run(&fork, &args[..1], None);
    refused(&run, "fork");
    assert!(
        run.security
            .iter()
            .any(|s| s.contains("go.sum database server misbehavior detected")),
        "{run:?}"
    );
    // Without its cache, the fork's tiles do not hash to the tree it remembers.
    client.clear_cache();
    let run = client.run(&fork, &args[..1], None);
    refused(&run, "fork, no cache");
}

#[test]
fn answers_equal_go_sumdb_server() {
    let Some(bin) = client_bin() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(&dir.path().join("sumdb.db"), signer(1)).expect("open");
    grow(&log, 0, 300, "");
    let records: Vec<String> = log
        .records(0, 300)
        .expect("records")
        .into_iter()
        .map(|t| String::from_utf8(t).expect("utf-8"))
        .collect();
    let signed = String::from_utf8(log.signed_head().expect("head")).expect("utf-8");
    let paths = [
        "/latest",
        "/lookup/example.com/!corp/!mod0@v1.0.0",
        "/lookup/example.com/corp/mod1@v1.0.0",
        "/lookup/example.com/corp/mod0@v1.8.0",
        "/lookup/example.com/corp/mod1",
        "/lookup/example.com/corp/mod1@1.0.0",
        "/lookup/example.com/corp/mod1@v1.0",
        "/lookup/@v1.0.0",
        "/lookup/example.com/Corp/mod1@v1.0.0",
        "/lookup/example.com/corp/mod1@v1.0.0-!A",
        "/lookup/example.com/corp/mod1@v1.0.0-A",
        "/lookup/-x/y@v1.0.0",
        "/tile/8/0/000",
        "/tile/8/0/000.p/1",
        "/tile/8/0/000.p/255",
        "/tile/8/0/001.p/44",
        "/tile/8/0/001.p/3",
        "/tile/8/1/000.p/1",
        "/tile/8/data/000",
        "/tile/8/data/000.p/7",
        "/tile/8/data/001.p/44",
        "/tile/8/0/00",
        "/tile/8/0/000.p/256",
        "/tile/8/-1/000",
        "/tile/",
        "/tile",
        "/latest/",
        "/lookup",
        "/",
        "/nothing",
    ];
    let request = json!({ "records": records, "signed": signed, "paths": paths });
    let mut child = Command::new(bin)
        .arg("server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the Go server");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(&request).expect("json"))
        .expect("write");
    let out = child.wait_with_output().expect("server output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let go: Vec<Value> = serde_json::from_slice(&out.stdout).expect("answers");
    assert_eq!(go.len(), paths.len());
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (path, go) in paths.iter().zip(&go) {
        let ours = match answer(&log, path) {
            Answer::Response(r) => r,
            other => panic!("{path}: {other:?}"),
        };
        let go_body = b64
            .decode(go["body"].as_str().unwrap_or_default())
            .expect("base64 body");
        assert_eq!(
            (
                u64::from(ours.status),
                ours.content_type,
                String::from_utf8_lossy(&ours.body)
            ),
            (
                go["status"].as_u64().expect("status"),
                go["content_type"].as_str().expect("content type"),
                String::from_utf8_lossy(&go_body)
            ),
            "{path}"
        );
        assert_eq!(&ours.body[..], &go_body[..], "{path}");
    }
}
