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
    // A route's key dedented: the parser's error on that line, not a missing field.
    check_broken(
        &BASE.replace("    chain: [corp]\n", "  chain: [corp]\n"),
        &[
            ":9:3: did not find expected '-' indicator (while parsing a block collection at \
             line 7 column 3); check the indentation of this line and the one above",
        ],
    );
    // Routes before upstreams, and an upstream that is not a mapping: the upstream's own
    // error, not an `unknown upstream` at the route.
    let routes_first = BASE.replace(
        "upstreams:\n  golang: { url: \"https://proxy.golang.org\" }\n  corp: { url: \
         \"https://athens.corp.example\", private: true }\n",
        "",
    ) + "upstreams:\n  golang: \"https://proxy.golang.org\"\n  corp: { url: \
         \"https://athens.corp.example\", private: true }\n";
    check_broken(
        &routes_first,
        &[":12:11: upstreams.golang: invalid type: string"],
    );
}

/// The shipped file with the first line that is exactly `line` re-indented to `to`; returns the
/// text and that line's number.
fn slip(text: &str, line: &str, to: &str) -> (String, usize) {
    let n = text
        .lines()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{line:?} is not a line of the shipped gateway.yaml"));
    let out: Vec<&str> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == n { to } else { l })
        .collect();
    (out.join("\n") + "\n", n + 1)
}

/// Indentation slips in the shipped file are reported where the YAML parser first sees them,
/// in its words, never as a consequence found elsewhere (a missing field, or "unknown upstream"
/// for every route when the slip is further down).
#[test]
fn indentation_slips_in_the_shipped_file_are_reported_where_the_parser_sees_them() {
    let dir = shipped_config_dir();
    let cfg = dir.path().join("gateway.yaml");
    let shipped = std::fs::read_to_string(&cfg).expect("read");
    let c = cfg.to_string_lossy().to_string();
    let check = |text: &str, expect: &str| {
        std::fs::write(&cfg, text).expect("write");
        let (ok, out, err) = run(&["check", "-c", &c]);
        assert!(!ok, "accepted:\n{text}\n{out}");
        let want = format!("modgate: {c}:{expect}");
        assert_eq!(err.lines().next(), Some(want.as_str()), "{err}");
        assert!(!err.contains("unknown upstream"), "{err}");
    };
    let hint = "; check the indentation of this line and the one above";
    // A key of the first upstream dedented by two: the parser trips on the next line.
    let (text, n) = slip(&shipped, "    read_timeout: 60s", "  read_timeout: 60s");
    check(
        &text,
        &format!(
            "{}:17: mapping values are not allowed in this context{hint}",
            n + 1
        ),
    );
    // A route's `chain:` dedented.
    let (text, n) = slip(
        &shipped,
        "    chain: [corp-athens]",
        "  chain: [corp-athens]",
    );
    let item = shipped
        .lines()
        .position(|l| l == "  - name: corp")
        .expect("route corp")
        + 1;
    check(
        &text,
        &format!(
            "{n}:3: did not find expected '-' indicator (while parsing a block collection at \
             line {item} column 3){hint}"
        ),
    );
    // One space too many on a key of the second upstream.
    let (text, n) = slip(
        &shipped,
        "    url: \"https://athens.corp.example\"",
        "     url: x",
    );
    let golang = shipped
        .lines()
        .position(|l| l == "  golang:")
        .expect("upstream golang")
        + 1;
    check(
        &text,
        &format!(
            "{}:5: did not find expected key (while parsing a block mapping at line {golang} \
             column 3){hint}",
            n + 1
        ),
    );
    // Below the routes: reported there (it used to be `unknown upstream` at the first route,
    // because the upstreams could not be read either).
    let (text, n) = slip(&shipped, "        - id: corp-read", "      - id: corp-read");
    check(
        &text,
        &format!(
            "{}:16: mapping values are not allowed in this context{hint}",
            n + 1
        ),
    );
    // Valid YAML, but an upstream setting indented as an upstream name: said so.
    let (text, n) = slip(&shipped, "    forward_identity:", "  forward_identity:");
    std::fs::write(&cfg, &text).expect("write");
    let (ok, _, err) = run(&["check", "-c", &c]);
    assert!(!ok);
    assert!(
        err.starts_with(&format!(
            "modgate: {c}:{}:7: upstreams.forward_identity: unknown field `cert`",
            n + 1
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "(`forward_identity` is an upstream setting, not an upstream name: is it indented \
             less than the settings of its upstream?)"
        ),
        "{err}"
    );
}

#[test]
fn explain_shows_route_and_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, BASE).expect("write");
    let c = cfg.to_string_lossy().to_string();
    // A private route with no access: section: nobody may read it, so explain exits 1.
    let (ok, out, err) = run(&["explain", "-c", &c, "corp.example.com/Tools@v1.2.3"]);
    assert!(!ok && out.contains("decision: deny"), "{out}{err}");
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
    // The pid file names the running process, and is gone once it has stopped.
    let pid_file = gw.dir.path().join("modgate.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("pid file written");
    let pid: u32 = pid.trim().parse().expect("a pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the process exists");
    assert!(String::from_utf8_lossy(&cmdline).contains("modgate"));
    gw.signal("TERM");
    let code = gw.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", gw.log());
    assert!(!pid_file.exists(), "pid file left behind");
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

/// A listener address that is taken makes `run` fail at once, naming the address, before it
/// claims to serve (issue 9: it used to log "serving", retry, and linger without listeners).
#[test]
fn a_taken_address_fails_run_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = BASE.replace("127.0.0.1:18080", &addr.to_string());
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write");
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(modgate_testkit::modgate_bin())
        .args(["run", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("modgate still running 10 s after failing to bind {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains(&addr.to_string()) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("serving"), "claimed to serve:\n{stderr}");
    drop(taken);
}

/// Without `pid_file` / `upgrade_sock`, two gateways on one host get their own, in a directory
/// only their user can enter, and `modgate reload -c FILE` finds the one started from FILE.
#[test]
fn per_instance_pid_files_do_not_collide_and_reload_finds_its_gateway() {
    use std::os::unix::fs::PermissionsExt;
    let runtime = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |name: &str| {
        let port = free_port();
        let path = dir.path().join(name);
        let yaml = format!(
            "server: {{ grace_period: 1s, shutdown_timeout: 1s }}\n{}",
            BASE.replace("127.0.0.1:18080", &format!("127.0.0.1:{port}"))
        );
        std::fs::write(&path, yaml).expect("write");
        let child = std::process::Command::new(modgate_testkit::modgate_bin())
            .args(["run", "-c"])
            .arg(&path)
            .env("XDG_RUNTIME_DIR", runtime.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        (path, port, child)
    };
    let (first, port1, mut c1) = start("first.yaml");
    let (_second, port2, mut c2) = start("second.yaml");
    for port in [port1, port2] {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while modgate_testkit::get(addr, "/healthz").is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "gateway on {port} never served"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let own = runtime.path().join("modgate");
    let mode = std::fs::metadata(&own)
        .expect("runtime dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    let mut pids: Vec<u32> = std::fs::read_dir(&own)
        .expect("list")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "pid").then(|| std::fs::read_to_string(&p).ok())?
        })
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    pids.sort();
    let mut expected = vec![c1.id(), c2.id()];
    expected.sort();
    assert_eq!(pids, expected, "one pid file per instance");
    let out = std::process::Command::new(modgate_testkit::modgate_bin())
        .args(["reload", "-c"])
        .arg(&first)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .expect("reload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reloaded: generation 2"), "{stdout}");
    for c in [&mut c1, &mut c2] {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    let left = std::fs::read_dir(&own)
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "pid"))
        })
        .count();
    assert_eq!(left, 0, "pid files left behind");
}

/// `check` opens what `run` will open (like `nginx -t`): a cache directory that cannot be
/// created and an audit file that cannot be written are refused by `check`, not first by `run`.
#[test]
fn check_refuses_what_run_cannot_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A regular file where a directory is needed: no user, root included, can create below it.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    for (extra, needle) in [
        (
            format!("cache:\n  dir: \"{}/cache\"\n", file.display()),
            "cache.dir",
        ),
        (
            format!("audit:\n  output: \"{}/audit.jsonl\"\n", file.display()),
            "audit.output",
        ),
        (
            format!(
                "audit:\n  output: \"{}/no-such-dir/audit.jsonl\"\n",
                dir.path().display()
            ),
            "audit.output",
        ),
    ] {
        let cfg = dir.path().join("gateway.yaml");
        std::fs::write(&cfg, format!("{BASE}{extra}")).expect("write");
        let (ok, out, err) = run(&["check", &cfg.to_string_lossy()]);
        assert!(!ok, "check accepted {extra}: {out}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // Nothing was created by checking.
    assert!(!dir.path().join("no-such-dir").exists());
    // What can be opened passes, and check creates nothing: the cache directory is left for run.
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{BASE}cache:\n  dir: \"{0}/cache\"\naudit:\n  output: \"{0}/audit.jsonl\"\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let (ok, out, err) = run(&["check", &cfg.to_string_lossy()]);
    assert!(ok, "{out}{err}");
    assert!(!dir.path().join("cache").exists());
    assert!(!dir.path().join("audit.jsonl").exists());
}

/// Checking a copy of the file elsewhere (Ansible's `validate:` writes a temporary file) with
/// `--base-dir` resolves its relative paths where the file will be installed.
#[test]
fn check_of_a_copy_resolves_relative_paths_from_base_dir() {
    let installed = tempfile::tempdir().expect("tempdir");
    std::fs::write(installed.path().join("users"), "").expect("users file");
    let yaml = format!("{BASE}auth:\n  users_file: users\n");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let copy = elsewhere.path().join("tmp-validate.yaml");
    std::fs::write(&copy, &yaml).expect("write");
    let (ok, _, err) = run(&["check", &copy.to_string_lossy()]);
    assert!(!ok, "the copy's users file resolved next to the copy?");
    assert!(err.contains("users"), "{err}");
    let base = installed.path().to_string_lossy().to_string();
    let (ok, out, err) = run(&["check", "--base-dir", &base, &copy.to_string_lossy()]);
    assert!(ok, "{out}{err}");
}
