//! End to end for the operator side of the cache and the integrity ledger, with the real binary:
//! `modgate cache purge` and `POST /admin/cache/purge` (a running gateway fetches again, an
//! audit record names who did it), `modgate cache verify` (a cached object whose bytes differ
//! from the ledger is reported, exit 1, and removed with `--purge`), and `modgate ledger
//! show` / `accept` (an accepted change is pinned, kept in the history, audited, and after a
//! SIGHUP the gateway fetches the accepted bytes instead of refusing them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use modgate_testkit::{
    free_addr, get, modgate, modgate_bin, request, FixtureProxy, Gateway, ModuleVersion,
};
use sha2::{Digest, Sha256};

const MODULE: &str = "example.com/ops";

struct World {
    upstream: FixtureProxy,
    gateway: Gateway,
    addr: SocketAddr,
    config: PathBuf,
    cache_dir: tempfile::TempDir,
}

fn module(version: &str, body: &[u8]) -> ModuleVersion {
    ModuleVersion::new(MODULE, version)
        .expect("module")
        .file("ops.go", body)
}

fn zip_path(version: &str) -> String {
    format!("/{MODULE}/@v/{version}.zip")
}

async fn world() -> World {
    let upstream = FixtureProxy::start(&[
        module("v1.0.0", b"package ops // one\n"),
        module("v1.1.0", b"package ops // two\n"),
    ])
    .await
    .expect("fixture");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", metrics: true, admin: true }}
upstreams:
  up: {{ url: "{up}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
cache:
  dir: "{cache}"
  fsync: false
audit:
  output: "@DIR@/audit.jsonl"
"#,
        up = upstream.url(),
        cache = cache_dir.path().display(),
    );
    let gateway = Gateway::start(&config, addr);
    let config = gateway.dir.path().join("gateway.yaml");
    assert!(config.exists(), "the test gateway writes its config here");
    World {
        upstream,
        gateway,
        addr,
        config,
        cache_dir,
    }
}

fn upstream_gets(w: &World, path: &str) -> usize {
    w.upstream
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

fn cli(w: &World, args: &[&str]) -> (i32, String, String) {
    let config = w.config.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", config.as_str()]);
    let out = modgate(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn audit_events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_cli_and_admin_endpoint_makes_the_gateway_fetch_again() {
    let w = world().await;
    for v in ["v1.0.0", "v1.1.0"] {
        assert_eq!(get(w.addr, &zip_path(v)).expect("get").status, 200);
        assert_eq!(get(w.addr, &zip_path(v)).expect("get").status, 200);
        assert_eq!(upstream_gets(&w, &zip_path(v)), 1, "second one was a hit");
    }

    // CLI: one version only.
    let (code, out, err) = cli(&w, &["cache", "purge", &format!("{MODULE}@v1.0.0")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("purged 1 object(s)"), "{out}");
    assert_eq!(get(w.addr, &zip_path("v1.0.0")).expect("get").status, 200);
    assert_eq!(
        upstream_gets(&w, &zip_path("v1.0.0")),
        2,
        "purged: fetched again"
    );
    assert_eq!(get(w.addr, &zip_path("v1.1.0")).expect("get").status, 200);
    assert_eq!(
        upstream_gets(&w, &zip_path("v1.1.0")),
        1,
        "the other version stays"
    );

    // Admin endpoint: the whole module; GET is refused.
    let r = get(w.addr, &format!("/admin/cache/purge?target={MODULE}")).expect("get");
    assert_eq!(r.status, 405, "{}", r.text());
    let r = request(
        w.addr,
        "POST",
        &format!("/admin/cache/purge?target={MODULE}"),
        &[],
    )
    .expect("post");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"objects\":2"), "{}", r.text());
    assert_eq!(get(w.addr, &zip_path("v1.1.0")).expect("get").status, 200);
    assert_eq!(upstream_gets(&w, &zip_path("v1.1.0")), 2);

    // Bad targets are refused with a reason.
    let (code, _, err) = cli(&w, &["cache", "purge", "Not A Module"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("malformed module path"), "{err}");

    // Both purges are audited.
    let events = wait_for("audit events", || {
        let e = audit_events(w.gateway.dir.path());
        (e.len() >= 2).then_some(e)
    });
    let purges: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "cache-purge")
        .collect();
    assert_eq!(purges.len(), 2, "{events:?}");
    assert!(purges.iter().all(|e| e["module"] == MODULE));
    assert!(purges
        .iter()
        .any(|e| e["version"] == "v1.0.0" && e["identity"]["source"] == "operator"));
    assert!(purges
        .iter()
        .any(|e| e["identity"]["source"] == "anonymous" && e["listener"] == "plain"));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_and_purges_objects_that_disagree_with_the_ledger() {
    let w = world().await;
    assert_eq!(get(w.addr, &zip_path("v1.0.0")).expect("get").status, 200);
    let (code, out, err) = cli(&w, &["cache", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 mismatch(es)"), "{out}");

    // Pin different bytes for the version in the ledger: the cached copy now disagrees.
    let other = module("v1.0.0", b"package ops // accepted\n")
        .zip()
        .expect("zip");
    let (code, out, err) = cli(
        &w,
        &[
            "ledger",
            "accept",
            &format!("{MODULE}@v1.0.0"),
            "zip",
            "--sha256",
            &sha256(&other),
            "--size",
            &other.len().to_string(),
            "--reason",
            "test: the upstream re-published v1.0.0 deliberately",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(&w, &["cache", "verify"]);
    assert_eq!(code, 1, "a mismatch is exit 1: {out}");
    assert!(
        out.contains(&format!("MISMATCH {MODULE}@v1.0.0 (.zip)")),
        "{out}"
    );
    assert!(out.contains(&sha256(&other)), "{out}");
    let (code, out, _) = cli(&w, &["cache", "verify", "--purge"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("purged 1 mismatching object(s)"), "{out}");
    let (code, out, _) = cli(&w, &["cache", "verify"]);
    assert_eq!(code, 0, "nothing cached disagrees any more: {out}");
    assert!(w.cache_dir.path().join("ledger.sqlite").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_accepted_change_is_fetched_after_sighup() {
    let w = world().await;
    let original = module("v1.0.0", b"package ops // one\n")
        .zip()
        .expect("zip");
    assert_eq!(get(w.addr, &zip_path("v1.0.0")).expect("get").status, 200);
    let (_, shown, _) = cli(&w, &["ledger", "show", MODULE]);
    assert!(shown.contains(&sha256(&original)), "{shown}");

    // The upstream re-publishes v1.0.0 with other bytes (a different length); the cached copy
    // is purged, so the gateway asks the upstream and refuses what it gets.
    let retagged = module("v1.0.0", b"package ops // re-published, longer\n");
    let new_zip = retagged.zip().expect("zip");
    w.upstream.set_file(&zip_path("v1.0.0"), new_zip.clone());
    let (code, _, err) = cli(&w, &["cache", "purge", &format!("{MODULE}@v1.0.0")]);
    assert_eq!(code, 0, "{err}");
    let r = get(w.addr, &zip_path("v1.0.0")).expect("get");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains(&sha256(&original)), "{}", r.text());
    // The length differed, so the body was never read: the refusal says how to get the new
    // sha256 (on one line) and spells out the command with the new size.
    let refusal = r.text();
    assert_eq!(refusal.trim_end().lines().count(), 1, "{refusal}");
    assert!(
        refusal.contains(&format!(
            "now serves {} bytes; refused (a re-tagged or tampered version; to accept it, get \
             its sha256 from the upstream: `curl -sS <URL of upstream up>/{MODULE}/@v/v1.0.0.zip \
             | sha256sum`, then `modgate ledger accept {MODULE}@v1.0.0 zip --sha256 <that \
             sha256> --size {} --reason '...'`)",
            new_zip.len(),
            new_zip.len()
        )),
        "{refusal}"
    );
    // ... and the audit record of the refusal says the same.
    let refused = wait_for("the refusal's audit record", || {
        std::fs::read_to_string(w.gateway.dir.path().join("audit.jsonl"))
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["status"] == 502)
    });
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("| sha256sum`")),
        "{refused}"
    );
    // Following it: the upstream's bytes hashed as `sha256sum` would.
    let fetched = get(w.upstream.addr(), &zip_path("v1.0.0")).expect("get upstream");
    assert_eq!(fetched.body, new_zip);

    // The operator accepts the new bytes; until SIGHUP the gateway still refuses them.
    let (code, out, err) = cli(
        &w,
        &[
            "ledger",
            "accept",
            &format!("{MODULE}@v1.0.0"),
            "zip",
            "--sha256",
            &sha256(&fetched.body),
            "--size",
            &new_zip.len().to_string(),
            "--reason",
            "upstream re-published after a broken release",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(get(w.addr, &zip_path("v1.0.0")).expect("get").status, 502);
    w.gateway.signal("HUP");
    let body = wait_for("the accepted zip", || {
        let r = get(w.addr, &zip_path("v1.0.0")).ok()?;
        (r.status == 200).then_some(r.body)
    });
    assert_eq!(body, new_zip);

    // The history keeps what was replaced, who accepted it and why; the acceptance is audited.
    let (_, shown, _) = cli(&w, &["ledger", "show", &format!("{MODULE}@v1.0.0")]);
    assert!(shown.contains(&sha256(&new_zip)), "{shown}");
    assert!(shown.contains("accepted by"), "{shown}");
    assert!(
        shown.contains(&format!("replaced sha256:{}", sha256(&original))),
        "{shown}"
    );
    assert!(shown.contains("broken release"), "{shown}");
    let events = wait_for("ledger-accept audit", || {
        let e = audit_events(w.gateway.dir.path());
        e.iter().any(|e| e["event"] == "ledger-accept").then_some(e)
    });
    assert!(events
        .iter()
        .any(|e| e["event"] == "ledger-accept" && e["version"] == "v1.0.0"));
}

/// Runs `modgate <args> -c <config>` with the OS user variables set as given (`None`: unset).
fn cli_as(w: &World, args: &[&str], users: &[(&str, Option<&str>)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(modgate_bin());
    cmd.args(args).arg("-c").arg(&w.config);
    for (k, v) in users {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run modgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `ledger accept` records who ran it as `operator:<OS user>` (the user behind sudo first, the
/// account when the environment names none), refuses a `--size` that contradicts what the
/// ledger knows about the same sha256 (and a `.mod`'s `--h1` that its sha256 contradicts), and
/// fills in a `.mod`'s `h1:`.
#[tokio::test(flavor = "multi_thread")]
async fn ledger_accept_names_the_os_user_and_refuses_values_that_contradict_the_ledger() {
    let w = world().await;
    let original = module("v1.0.0", b"package ops // one\n")
        .zip()
        .expect("zip");
    assert_eq!(get(w.addr, &zip_path("v1.0.0")).expect("get").status, 200);
    let other = module("v1.0.0", b"package ops // other\n")
        .zip()
        .expect("zip");
    let target = format!("{MODULE}@v1.0.0");
    let accept = |sha: &str, size: usize, users: &[(&str, Option<&str>)]| {
        let size = size.to_string();
        cli_as(
            &w,
            &[
                "ledger", "accept", &target, "zip", "--sha256", sha, "--size", &size, "--reason",
                "test",
            ],
            users,
        )
    };

    // Through sudo: the user who ran sudo.
    let (code, out, err) = accept(
        &sha256(&other),
        other.len(),
        &[("SUDO_USER", Some("alice")), ("USER", Some("root"))],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("accepted by operator:alice"), "{out}");
    assert!(out.contains("modgate reload"), "{out}");
    let (_, shown, _) = cli(&w, &["ledger", "show", &target]);
    assert!(shown.contains("(accepted by operator:alice)"), "{shown}");
    assert!(shown.contains("by operator:alice: test"), "{shown}");
    let events = wait_for("ledger-accept audit", || {
        let e = audit_events(w.gateway.dir.path());
        e.iter().any(|e| e["event"] == "ledger-accept").then_some(e)
    });
    let event = events
        .iter()
        .find(|e| e["event"] == "ledger-accept")
        .expect("event");
    assert_eq!(event["identity"]["source"], "operator", "{event}");
    assert_eq!(event["identity"]["name"], "alice", "{event}");

    // Going back to the original bytes with a mistyped size: the ledger knows those bytes (they
    // were replaced a moment ago), so the size is refused and nothing changes.
    let (code, out, err) = accept(&sha256(&original), original.len() + 1, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!(
            "--size {} does not match sha256:{}",
            original.len() + 1,
            sha256(&original)
        )) && err.contains(&format!("as {} bytes", original.len())),
        "{err}"
    );
    let (_, shown, _) = cli(&w, &["ledger", "show", &target]);
    assert!(
        shown.contains(&format!("sha256:{}", sha256(&other))),
        "{shown}"
    );
    // The same mistake for bytes the ledger holds right now.
    let (code, _, err) = accept(&sha256(&other), other.len() - 1, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not match"), "{err}");

    // No user in the environment: the account of the effective uid.
    let (code, out, err) = accept(
        &sha256(&original),
        original.len(),
        &[("SUDO_USER", None), ("USER", None), ("LOGNAME", None)],
    );
    assert_eq!(code, 0, "{out}{err}");
    let account = std::process::Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("id -un");
    assert!(
        out.contains(&format!("accepted by operator:{account}")),
        "{out}"
    );

    // A .mod: its h1: follows from its sha256, so it is filled in, and a wrong one is refused.
    let go_mod = b"module example.com/ops\n";
    let mod_sha = sha256(go_mod);
    let wrong_h1 = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    let (code, _, err) = cli(
        &w,
        &[
            "ledger",
            "accept",
            &format!("{MODULE}@v1.1.0"),
            "mod",
            "--sha256",
            &mod_sha,
            "--size",
            &go_mod.len().to_string(),
            "--h1",
            wrong_h1,
            "--reason",
            "test",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not the h1: of a go.mod"), "{err}");
    let (code, out, err) = cli(
        &w,
        &[
            "ledger",
            "accept",
            &format!("{MODULE}@v1.1.0"),
            "mod",
            "--sha256",
            &mod_sha,
            "--size",
            &go_mod.len().to_string(),
            "--reason",
            "test",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (_, shown, _) = cli(&w, &["ledger", "show", &format!("{MODULE}@v1.1.0")]);
    assert!(
        shown
            .lines()
            .any(|l| l.contains(".mod") && l.contains(" h1:")),
        "{shown}"
    );

    // Every flag has help text.
    let out = modgate(&["ledger", "accept", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    for flag in [
        "--sha256 <HEX>",
        "--h1 <H1>",
        "--size <BYTES>",
        "--reason <REASON>",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} not in:\n{help}"));
        assert!(
            line.trim_start().len() > flag.len() + 10,
            "{flag} has no help: {line}"
        );
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `cache verify` only reports: a corrupt body is counted as a mismatch and left in place (it
/// used to be deleted while the report said `0 mismatch(es)`); `--purge` removes it.
#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_a_corrupt_body_without_deleting_it() {
    let w = world().await;
    assert_eq!(get(w.addr, &zip_path("v1.0.0")).expect("get").status, 200);
    // The zip's body is the largest file in the cache; change one byte, keep the length.
    let body = files_under(w.cache_dir.path())
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".sqlite"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a cached body");
    let mut bytes = std::fs::read(&body).expect("read body");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&body, &bytes).expect("corrupt body");
    let (code, out, err) = cli(&w, &["cache", "verify"]);
    assert_eq!(code, 1, "a corrupt object is a finding: {out}{err}");
    assert!(out.contains("1 mismatch(es)"), "{out}");
    assert!(out.contains("corrupt"), "{out}");
    assert!(
        body.exists(),
        "verify without --purge deleted {}",
        body.display()
    );
    let (code, out, _) = cli(&w, &["cache", "verify", "--purge"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("purged 1 mismatching object(s)"), "{out}");
    assert!(!body.exists());
    let (code, out, _) = cli(&w, &["cache", "verify"]);
    assert_eq!(code, 0, "{out}");
}
