//! `modgate ledger seed`, the real binary: every module version of the go.sum files is recorded
//! as already in use (old for cooldown) in the sightings store, by the OS user, audited once per
//! version newly seeded; a malformed go.sum records nothing and names the file and line.

use std::path::Path;
use std::process::Command;

use modgate_ledger::Sightings;
use modgate_testkit::modgate_bin;

const H1: &str = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

fn config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listeners:
  - {{ name: plain, address: \"127.0.0.1:18080\" }}
upstreams:
  golang: {{ url: \"https://proxy.golang.org\" }}
routes:
  - name: public
    match: {{ prefix: \"\" }}
    chain: [golang]
cache:
  dir: \"{0}/cache\"
audit:
  output: \"{0}/audit.jsonl\"
",
            dir.display()
        ),
    )
    .expect("write config");
    cfg
}

fn seed(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(modgate_bin())
        .args(["ledger", "seed"])
        .args(args)
        .arg("-c")
        .arg(cfg)
        .env("USER", "alice")
        .env_remove("SUDO_USER")
        .output()
        .expect("run modgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn seed_events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "ledger-seed")
        .collect()
}

#[test]
fn seed_records_every_version_of_the_go_sums_as_old_audited_by_the_os_user() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path());
    let a = dir.path().join("a.sum");
    let b = dir.path().join("b.sum");
    std::fs::write(
        &a,
        format!(
            "example.com/x v1.0.0 {H1}\nexample.com/x v1.0.0/go.mod {H1}\n\
             example.com/y v0.2.0/go.mod {H1}\n"
        ),
    )
    .expect("write");
    std::fs::write(&b, format!("example.com/z v2.0.0+incompatible {H1}\n")).expect("write");

    // A malformed file: nothing at all is recorded, and the error names the file and line.
    let bad = dir.path().join("bad.sum");
    std::fs::write(&bad, "example.com/w v1.0.0\n").expect("write");
    let a_s = a.to_string_lossy().to_string();
    let (code, _, err) = seed(&cfg, &["--reason", "in use", &a_s, &bad.to_string_lossy()]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("bad.sum") && err.contains("line 1"), "{err}");
    assert!(seed_events(dir.path()).is_empty());

    let (code, out, err) = seed(
        &cfg,
        &[
            "--reason",
            "already in production",
            &a_s,
            &b.to_string_lossy(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 module version(s) seeded"), "{out}");
    assert!(out.contains("operator:alice"), "{out}");
    let store = Sightings::open(&dir.path().join("cache/sightings.sqlite")).expect("store");
    for (m, v) in [
        ("example.com/x", "v1.0.0"),
        ("example.com/y", "v0.2.0"),
        ("example.com/z", "v2.0.0+incompatible"),
    ] {
        let s = store.get(m, v).expect("get");
        assert!(s.seeded.is_some(), "{m}@{v} seeded");
        assert_eq!(s.seeded_by.as_deref(), Some("operator:alice"));
    }
    assert_eq!(
        store.get("example.com/w", "v1.0.0").expect("get").seeded,
        None
    );
    drop(store);
    let events = seed_events(dir.path());
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events.iter().all(|e| e.to_string().contains("alice")
        && e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("already in production"))));

    // Again: nothing new, nothing audited again.
    let (code, out, err) = seed(&cfg, &["--reason", "again", &a_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 module version(s) seeded"), "{out}");
    assert_eq!(seed_events(dir.path()).len(), 3);

    // A reason is required.
    let (code, _, err) = seed(&cfg, &[&a_s]);
    assert_ne!(code, 0);
    assert!(err.contains("--reason"), "{err}");
}
