//! The command line around `gateway.yaml`: `modgate check` accepts the shipped file and
//! rejects broken ones with `file:line:column: path: reason`; `modgate explain` shows the
//! route and chain; `modgate run` refuses a bad file without starting; SIGTERM stops cleanly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use modgate_testkit::{free_port, make_certs, modgate, Gateway};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The shipped gateway.yaml, in a directory with freshly generated certificates.
fn shipped_config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo_root().join("gateway.yaml"),
        dir.path().join("gateway.yaml"),
    )
    .expect("copy gateway.yaml");
    make_certs(&dir.path().join("certs"), "check CA", "client");
    dir
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = modgate(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn shipped_gateway_yaml_is_valid() {
    let dir = shipped_config_dir();
    let cfg = dir.path().join("gateway.yaml");
    let (ok, out, err) = run(&["check", &cfg.to_string_lossy()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(": ok ("), "{out}");
}

fn check_broken(yaml: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, yaml).expect("write");
    let (ok, out, err) = run(&["check", &cfg.to_string_lossy()]);
    assert!(!ok, "accepted a broken config:\n{yaml}\n{out}");
    let first = err.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!("modgate: {}:", cfg.display())),
        "{err}"
    );
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    // `run` refuses the same file before binding anything.
    let (ok, _, err2) = run(&["run", "-c", &cfg.to_string_lossy()]);
    assert!(!ok);
    assert_eq!(
        err.lines().next(),
        err2.lines().next(),
        "run and check agree"
    );
}

const BASE: &str = "listeners:
  - { name: plain, address: \"127.0.0.1:18080\" }
upstreams:
  golang: { url: \"https://proxy.golang.org\" }
  corp: { url: \"https://athens.corp.example\", private: true }
routes:
  - name: corp
    match: { glob: \"corp.example.com\" }
    chain: [corp]
    private: true
  - name: public
    match: { prefix: \"\" }
    chain: [golang]
";

#[test]
fn broken_configs_name_file_line_and_path() {
    check_broken(
        &BASE.replace("    private: true\n", "    privat: true\n"),
        &[":10:", "routes[0]", "unknown field `privat`"],
    );
    check_broken(
        &BASE.replace("chain: [golang]", "chain: [golang, nowhere]"),
        &[":13:", "routes[1].chain[1]", "unknown upstream \"nowhere\""],
    );
    check_broken(
        &BASE.replace("chain: [corp]", "chain: [corp, golang]"),
        &["is private", "golang"],
    );
    check_broken(
        &BASE.replace("glob: \"corp.example.com\"", "regex: \"corp[\""),
        &[":8:", "routes[0].match", "regex"],
    );
    check_broken(
        &BASE.replace("https://proxy.golang.org", "proxy.golang.org"),
        &[":4:", "upstreams.golang.url", "scheme"],
    );
    check_broken(
        &BASE.replace("127.0.0.1:18080", "127.0.0.1:99999"),
        &[":2:", "listeners[0].address"],
    );
    check_broken(
        &BASE.replace(
            "address: \"127.0.0.1:18080\"",
            "address: \"127.0.0.1:18443\", tls: { cert: missing.pem, key: missing.key }",
        ),
        &[":2:", "listeners[0].tls", "missing.pem"],
    );
    check_broken("listeners: [\n", &["gateway.yaml"]);
    check_broken("", &["gateway.yaml"]);
}

#[test]
fn explain_shows_route_and_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, BASE).expect("write");
    let c = cfg.to_string_lossy().to_string();
    let (ok, out, err) = run(&["explain", "-c", &c, "corp.example.com/Tools@v1.2.3"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("GET /corp.example.com/!tools/@v/v1.2.3.zip"),
        "{out}"
    );
    assert!(
        out.contains("route:    #1 corp (glob \"corp.example.com\"), private"),
        "{out}"
    );
    assert!(
        out.contains(
            "1. corp GET https://athens.corp.example/corp.example.com/!tools/@v/v1.2.3.zip"
        ),
        "{out}"
    );
    assert!(out.contains("immutable"), "{out}");
    let (ok, out, _) = run(&["explain", "-c", &c, "github.com/x/y", "--kind", "latest"]);
    assert!(ok);
    assert!(out.contains("route:    #2 public"), "{out}");
    assert!(out.contains("/github.com/x/y/@latest"), "{out}");
    assert!(out.contains("mutable"), "{out}");
    let (ok, _, err) = run(&["explain", "-c", &c, "Bad..path"]);
    assert!(!ok);
    assert!(err.contains("malformed module path"), "{err}");
}

#[test]
fn sigterm_stops_the_gateway_cleanly() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let yaml = BASE.replace("127.0.0.1:18080", &format!("127.0.0.1:{port}"));
    let mut gw = Gateway::start(&yaml, addr);
    let health = modgate_testkit::get(addr, "/healthz").expect("healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    gw.signal("TERM");
    let code = gw.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", gw.log());
}

#[test]
fn shipped_config_serves_health_and_metrics() {
    let dir = shipped_config_dir();
    let text = std::fs::read_to_string(dir.path().join("gateway.yaml")).expect("read");
    // Move the shipped listeners to free ports; everything else stays as shipped.
    let mut rewritten = String::new();
    let mut ports = Vec::new();
    for line in text.lines() {
        if let Some(idx) = line.find("address: \"") {
            let start = idx + "address: \"".len();
            let end = line[start..]
                .find('"')
                .map(|e| start + e)
                .expect("quoted address");
            let port = free_port();
            ports.push(port);
            rewritten.push_str(&format!(
                "{}127.0.0.1:{port}{}\n",
                &line[..start],
                &line[end..]
            ));
        } else {
            rewritten.push_str(line);
            rewritten.push('\n');
        }
    }
    assert!(!ports.is_empty());
    let dir_path = dir.path().to_path_buf();
    let gw = Gateway::start_in(
        dir,
        &rewritten,
        format!("127.0.0.1:{}", ports[0]).parse().expect("addr"),
    );
    let _ = dir_path;
    let mut saw_metrics = false;
    for p in &ports {
        let addr = format!("127.0.0.1:{p}").parse().expect("addr");
        // Plain listeners answer directly; TLS ones need curl.
        let health = modgate_testkit::get(addr, "/healthz");
        let (status, metrics) = match health {
            Ok(r) if r.status == 200 => {
                let m = modgate_testkit::get(addr, "/metrics").expect("metrics");
                (200, m)
            }
            _ => {
                let r = modgate_testkit::curl(&["-k", &format!("https://127.0.0.1:{p}/healthz")]);
                assert_eq!(r.status, 200, "{r:?}\n{}", gw.log());
                continue;
            }
        };
        assert_eq!(status, 200);
        if metrics.status == 200 && metrics.text().contains("modgate_requests_total") {
            saw_metrics = true;
        }
    }
    assert!(
        saw_metrics,
        "one shipped listener serves /metrics:\n{}",
        gw.log()
    );
}
