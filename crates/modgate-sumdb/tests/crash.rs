//! Crash safety: a process appending through the [`Appender`] is killed (SIGKILL) in the middle
//! of its batches; the file must reopen, verify, serve a signed head covering every record it
//! holds, and hold every record whose append had returned.
//!
//! The appending process is this test binary run again on `crash_child` (ignored on its own).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use modgate_sumdb::{answer, verify, Answer, Appender, AppenderConfig, Log};
use modgate_tlog::note::key_pair_from_seed;
use modgate_tlog::{record_hash, Signer};

const ENV: &str = "MODGATE_SUMDB_CRASH_CHILD";

/// Appends the child reports before it is killed.
const KILL_AFTER: usize = 2000;

fn signer() -> Signer {
    let (skey, _) = key_pair_from_seed("sum.corp.example", &[1; 32]).expect("key");
    Signer::new(&skey).expect("signer")
}

fn h1(s: &str) -> String {
    format!("h1:{}", record_hash(s.as_bytes()))
}

#[test]
#[ignore = "the appending process of crash_mid_append_leaves_a_servable_log"]
fn crash_child() {
    let Some(path) = std::env::var_os(ENV) else {
        return;
    };
    let log = Arc::new(Log::open(Path::new(&path), signer()).expect("open"));
    let appender = Arc::new(Appender::new(log, AppenderConfig::default()).expect("appender"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut tasks = Vec::new();
        // 64 callers appending until killed (bounded all the same).
        for caller in 0..64u64 {
            let appender = Arc::clone(&appender);
            tasks.push(tokio::spawn(async move {
                for i in 0..10_000u64 {
                    let version = format!("v1.{caller}.{i}");
                    let id = appender
                        .append("example.com/crash", &version, &h1(&version), &h1("mod"))
                        .await
                        .expect("append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "committed {id} {version}").expect("stdout");
                    out.flush().expect("flush");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
}

#[test]
fn crash_mid_append_leaves_a_servable_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sumdb.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the appending process");
    let stdout = child.stdout.take().expect("stdout");
    let mut committed = Vec::new();
    // The pipe stays open until the child is killed (a closed pipe would stop it otherwise).
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("read");
        if let Some(rest) = line.strip_prefix("committed ") {
            let (id, version) = rest.split_once(' ').expect("id version");
            committed.push((id.parse::<u64>().expect("id"), version.to_string()));
            if committed.len() >= KILL_AFTER {
                break;
            }
        }
    }
    // SIGKILL, by its pid: no destructor, no rollback but SQLite's own on reopen.
    child.kill().expect("kill");
    child.wait().expect("reap");
    drop(lines);
    assert_eq!(committed.len(), KILL_AFTER, "the child stopped early");

    let log = Log::open(&path, signer()).expect("reopen after the crash");
    let size = log.tree_size().expect("size");
    let report = verify(&path, log.verifier()).expect("verify");
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.records, size,
        "every record is under the latest signed head"
    );
    for (id, version) in &committed {
        assert!(
            *id < size,
            "record {id} returned to its caller but is not in the tree"
        );
        assert_eq!(
            log.lookup("example.com/crash", version).expect("lookup"),
            Some(*id)
        );
    }
    eprintln!(
        "killed after {} reported appends: the log holds {size} records under {} heads",
        committed.len(),
        report.heads
    );
    // Every tile of the latest tree is served.
    for t in modgate_tlog::new_tiles(8, 0, size) {
        match answer(&log, &format!("/{}", t.path())) {
            Answer::Response(r) => assert_eq!(r.status, 200, "{t}"),
            other => panic!("{t}: {other:?}"),
        }
    }
    // And the log goes on.
    let id = log
        .append_one("example.com/after", "v1.0.0", &h1("a"), &h1("b"))
        .expect("append after the crash");
    assert_eq!(id, size);
}
