//! Live reload of the whole gateway.yaml (issue 9), against the real binary: while HTTP/1.1
//! requests, HTTP/2 requests over TLS with a client certificate, and `go mod download` runs keep
//! going, the test in turn adds a route, turns an RBAC rule from allow to deny and back, swaps a
//! route's upstream, changes a TTL, rotates the server certificate, changes `client_auth` from
//! optional to required, moves a path from a public route to a private one, and applies a broken
//! configuration. Each change is applied with `modgate reload` and takes effect on the next
//! request; the broken one is refused (exit 1, `file:line:col`), counted, and changes nothing;
//! no request that should succeed fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use modgate_testkit::{
    free_addr, get, metric, ClientSpec, FixtureProxy, Gateway, GoEnv, ModuleVersion, Pki, TlsClient,
};

const PUBLIC_INFO: &str = "/example.com/pub/@v/v1.0.0.info";
const SECRET_INFO: &str = "/corp.example.com/secret/@v/v1.0.0.info";
const SERVER_NAME: &str = "localhost";

/// What the test changes between reloads.
#[derive(Clone)]
struct Knobs {
    tools_route: bool,
    corp_rule: &'static str,
    public_upstream: &'static str,
    mutable_ttl: &'static str,
    client_auth: &'static str,
    moving_private: bool,
    broken: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            tools_route: false,
            corp_rule: "allow",
            public_upstream: "a",
            mutable_ttl: "1h",
            client_auth: "optional",
            moving_private: false,
            broken: false,
        }
    }
}

struct World {
    gw: Gateway,
    pki: Pki,
    plain: SocketAddr,
    tls: SocketAddr,
    a: FixtureProxy,
    b: FixtureProxy,
    corp: FixtureProxy,
    _rt: tokio::runtime::Runtime,
}

fn modules() -> Vec<ModuleVersion> {
    [
        ("example.com/pub", "v1.0.0"),
        ("example.com/swap", "v1.0.0"),
        ("example.com/ttl", "v1.0.0"),
        ("example.com/ttl2", "v1.0.0"),
        ("golang.org/x/tools", "v0.1.0"),
        ("moving.example.com/lib", "v1.0.0"),
    ]
    .iter()
    .map(|(p, v)| ModuleVersion::new(p, v).expect("module"))
    .collect()
}

fn config(w: (&SocketAddr, &SocketAddr, &str, &str, &str), k: &Knobs) -> String {
    let (plain, tls, a, b, corp) = w;
    let moving_route = if k.moving_private {
        "  - { name: moving, match: { prefix: moving.example.com }, chain: [corp], private: true }\n"
    } else {
        ""
    };
    let moving_rule = if k.moving_private {
        "        - { id: moving-read, allow: { prefix: moving.example.com } }\n"
    } else {
        ""
    };
    let tools_route = if k.tools_route {
        "  - { name: tools, match: { prefix: golang.org/x }, chain: [b] }\n"
    } else {
        ""
    };
    let public_chain = if k.broken {
        "nowhere"
    } else {
        k.public_upstream
    };
    format!(
        r#"audit: {{ output: "off" }}
cache:
  dir: "@DIR@/cache"
  ttl: {{ mutable: {ttl} }}
listeners:
  - {{ name: plain, address: "{plain}", metrics: true, debug_headers: true }}
  - name: tls
    address: "{tls}"
    debug_headers: true
    tls:
      cert: server.pem
      key: server.key
      client_auth: {client_auth}
      client_ca: [root.pem]
upstreams:
  a: {{ url: "{a}" }}
  b: {{ url: "{b}" }}
  corp: {{ url: "{corp}", private: true }}
routes:
{moving_route}  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true }}
{tools_route}  - {{ name: public, match: {{ prefix: "" }}, chain: [{public_chain}] }}
access:
  default: allow
  roles:
    - name: devs
      members: [ {{ cn: alice }} ]
      rules:
        - {{ id: corp-read, {rule}: {{ prefix: corp.example.com }} }}
{moving_rule}"#,
        ttl = k.mutable_ttl,
        client_auth = k.client_auth,
        rule = k.corp_rule,
    )
}

impl World {
    fn start() -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let all = modules();
        let a = rt.block_on(FixtureProxy::start(&all)).expect("fixture a");
        let b = rt.block_on(FixtureProxy::start(&all)).expect("fixture b");
        let corp_modules = [
            ModuleVersion::new("corp.example.com/secret", "v1.0.0").expect("module"),
            ModuleVersion::new("moving.example.com/lib", "v1.0.0").expect("module"),
        ];
        let corp = rt
            .block_on(FixtureProxy::start(&corp_modules))
            .expect("corp");
        corp.mark_private();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path());
        pki.client("alice", &ClientSpec::new("alice", 7001));
        let (plain, tls) = (free_addr(), free_addr());
        let text = config(
            (&plain, &tls, &a.url(), &b.url(), &corp.url()),
            &Knobs::default(),
        );
        let gw = Gateway::start_in(dir, &text, plain);
        World {
            gw,
            pki,
            plain,
            tls,
            a,
            b,
            corp,
            _rt: rt,
        }
    }

    fn text(&self, k: &Knobs) -> String {
        config(
            (
                &self.plain,
                &self.tls,
                &self.a.url(),
                &self.b.url(),
                &self.corp.url(),
            ),
            k,
        )
    }

    /// Writes the configuration and runs `modgate reload`; returns (exit code, stdout, stderr).
    fn reload(&self, k: &Knobs) -> (i32, String, String) {
        self.gw.write_config(&self.text(k));
        let out = self.gw.reload();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Applies `k`, expecting success and `change` among the reported changes.
    fn apply(&self, k: &Knobs, change: &str) {
        let (code, out, err) = self.reload(k);
        assert_eq!(code, 0, "reload failed:\n{out}\n{err}\n{}", self.gw.log());
        assert!(out.contains(change), "{change:?} not reported:\n{out}");
    }

    fn alice(&self) -> TlsClient {
        TlsClient::new(&self.pki.path("ca-bundle.pem"))
            .with_client_cert(&self.pki.path("alice.pem"), &self.pki.path("alice.key"))
            .http2(true)
    }

    fn anonymous(&self) -> TlsClient {
        TlsClient::new(&self.pki.path("ca-bundle.pem")).http2(true)
    }
}

/// Requests that must all succeed, repeated until told to stop (bounded).
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    done: Arc<Mutex<[usize; 3]>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(w: &World) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(Mutex::new([0usize; 3]));
        let mut threads = Vec::new();
        let spawn = |i: usize, f: Box<dyn Fn() -> Result<(), String> + Send>| {
            let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match f() {
                        Ok(()) => done.lock().expect("lock")[i] += 1,
                        Err(e) => failures.lock().expect("lock").push(e),
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let plain = w.plain;
        threads.push(spawn(
            0,
            Box::new(move || match get(plain, PUBLIC_INFO) {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("http/1.1: {} {}", r.status, r.text())),
                Err(e) => Err(format!("http/1.1: {e}")),
            }),
        ));
        let (alice, tls) = (w.alice(), w.tls);
        threads.push(spawn(
            1,
            Box::new(
                move || match alice.get(tls, SERVER_NAME, PUBLIC_INFO, &[]) {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!("h2 tls: {} {}", r.status, r.text())),
                    Err(e) => Err(format!("h2 tls: {e}")),
                },
            ),
        ));
        let goproxy = format!("http://{}", w.plain);
        threads.push(spawn(
            2,
            Box::new(move || {
                let env = GoEnv::new(&goproxy);
                let run = env.go(&["mod", "download", "-json", "example.com/pub@v1.0.0"]);
                if run.ok() {
                    Ok(())
                } else {
                    Err(format!("go mod download: {}{}", run.stdout(), run.stderr()))
                }
            }),
        ));
        Load {
            stop,
            failures,
            done,
            threads,
        }
    }

    fn counts(&self) -> [usize; 3] {
        *self.done.lock().expect("lock")
    }

    /// Waits until every kind of request has run `n` more times.
    fn wait_more(&self, n: usize) {
        let start = self.counts();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.counts().iter().zip(start).any(|(c, s)| *c < s + n) {
            assert!(
                Instant::now() < deadline,
                "the load stalled at {:?}",
                self.counts()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> ([usize; 3], Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let counts = *self.done.lock().expect("lock");
        let failures = self.failures.lock().expect("lock").clone();
        (counts, failures)
    }
}

fn header(r: &modgate_testkit::Response, name: &str) -> String {
    r.header(name).unwrap_or("").to_string()
}

fn requested(f: &FixtureProxy, path: &str) -> bool {
    f.requests().iter().any(|r| r.path == path)
}

#[test]
fn the_whole_configuration_reloads_under_load() {
    let w = World::start();
    let load = Load::start(&w);
    load.wait_more(1);
    let mut k = Knobs::default();
    assert_eq!(metric(w.plain, "modgate_config_generation"), 1.0);

    // 1. A route is added: the next request takes it.
    let tools = "/golang.org/x/tools/@v/v0.1.0.info";
    let r = get(w.plain, tools).expect("tools");
    assert_eq!(
        (r.status, header(&r, "x-modgate-route")),
        (200, "public".into())
    );
    k.tools_route = true;
    w.apply(&k, "route \"tools\" added");
    let r = get(w.plain, "/golang.org/x/tools/@v/v0.1.0.mod").expect("tools");
    assert_eq!(
        (r.status, header(&r, "x-modgate-route")),
        (200, "tools".into())
    );
    assert!(requested(&w.b, "/golang.org/x/tools/@v/v0.1.0.mod"));
    load.wait_more(1);

    // 2. An RBAC rule from allow to deny and back: alice is refused right after the reload.
    let alice = w.alice();
    let ok = alice
        .get(w.tls, SERVER_NAME, SECRET_INFO, &[])
        .expect("alice");
    assert_eq!(ok.status, 200, "{}", ok.text());
    k.corp_rule = "deny";
    w.apply(&k, "role \"devs\" changed");
    let denied = alice
        .get(w.tls, SERVER_NAME, SECRET_INFO, &[])
        .expect("alice");
    assert_eq!(denied.status, 403, "{}", denied.text());
    k.corp_rule = "allow";
    w.apply(&k, "role \"devs\" changed");
    let again = alice
        .get(w.tls, SERVER_NAME, SECRET_INFO, &[])
        .expect("alice");
    assert_eq!(again.status, 200, "{}", again.text());
    load.wait_more(1);

    // 3. A route's upstream is swapped: the next request (a cache miss) goes to the new one.
    k.public_upstream = "b";
    w.apply(&k, "route \"public\" changed");
    let swap = "/example.com/swap/@v/v1.0.0.info";
    let r = get(w.plain, swap).expect("swap");
    assert_eq!(
        (r.status, header(&r, "x-modgate-upstream")),
        (200, "b".into())
    );
    assert!(requested(&w.b, swap) && !requested(&w.a, swap));
    load.wait_more(1);

    // 4. A TTL changes: answers stored from now on expire by the new one.
    let list = |m: &str| {
        let r = get(w.plain, &format!("/{m}/@v/list")).expect("list");
        assert_eq!(r.status, 200, "{}", r.text());
        header(&r, "x-modgate-cache")
    };
    assert_eq!(list("example.com/ttl"), "miss");
    assert_eq!(list("example.com/ttl"), "hit", "fresh for an hour");
    k.mutable_ttl = "1s";
    w.apply(&k, "cache TTLs changed");
    assert_eq!(list("example.com/ttl2"), "miss");
    std::thread::sleep(Duration::from_millis(1500));
    assert_ne!(
        list("example.com/ttl2"),
        "hit",
        "stored after the reload: fresh for 1 s"
    );
    load.wait_more(1);

    // 5. The server certificate is rotated: the next handshake presents the new one.
    let before = w
        .alice()
        .keepalive_session(w.tls, SERVER_NAME)
        .expect("session")
        .server_cert_sha256()
        .to_string();
    let rotated = w.pki.rotate_server();
    assert_ne!(before, rotated);
    w.apply(&k, "server certificate changed");
    let session = w
        .alice()
        .keepalive_session(w.tls, SERVER_NAME)
        .expect("session");
    assert_eq!(session.server_cert_sha256(), rotated);
    load.wait_more(1);

    // 6. client_auth optional → required: a client without a certificate is refused on a new
    //    connection, and on its connection opened before, with a 403 that says why.
    let anonymous = w.anonymous();
    let open = anonymous
        .keepalive_session(w.tls, SERVER_NAME)
        .expect("anonymous session");
    let r = open.get(PUBLIC_INFO, &[]).expect("anonymous");
    assert_eq!(r.status, 200, "{}", r.text());
    k.client_auth = "required";
    w.apply(&k, "listener tls: TLS settings changed");
    match anonymous.get(w.tls, SERVER_NAME, PUBLIC_INFO, &[]) {
        Ok(r) if r.status == 403 && r.text().contains("requires a client certificate") => {}
        Ok(r) => panic!(
            "a new connection without a certificate was served: {} {}",
            r.status,
            r.text()
        ),
        Err(e) => panic!("a new connection without a certificate was not told why: {e}"),
    }
    let r = open
        .get(PUBLIC_INFO, &[])
        .expect("old anonymous connection");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("requires a client certificate"),
        "{}",
        r.text()
    );
    load.wait_more(1);

    // 7. A path moves from a public route to a private one: never answered from the public
    //    route's cache afterwards.
    let moving = "/moving.example.com/lib/@v/v1.0.0.info";
    let r = get(w.plain, moving).expect("moving");
    assert_eq!(
        (r.status, header(&r, "x-modgate-route")),
        (200, "public".into())
    );
    let r = get(w.plain, moving).expect("moving");
    assert_eq!(header(&r, "x-modgate-cache"), "hit");
    k.moving_private = true;
    w.apply(&k, "route \"moving\" added");
    let r = get(w.plain, moving).expect("moving");
    assert!(
        matches!(r.status, 401 | 403),
        "an anonymous client read a now-private path: {} {}",
        r.status,
        r.text()
    );
    let r = alice.get(w.tls, SERVER_NAME, moving, &[]).expect("alice");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-modgate-route"), Some("moving"));
    assert!(
        requested(&w.corp, moving),
        "the private route's upstream was not asked"
    );
    load.wait_more(1);

    // 8. A broken configuration is refused, counted, and changes nothing.
    let generation = metric(w.plain, "modgate_config_generation");
    let broken = Knobs {
        broken: true,
        ..k.clone()
    };
    let (code, out, err) = w.reload(&broken);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("gateway.yaml:") && err.contains("nowhere"),
        "the refusal names the place and the problem:\n{err}"
    );
    assert!(err.contains("stays in force"), "{err}");
    assert_eq!(metric(w.plain, "modgate_config_generation"), generation);
    assert_eq!(
        metric(w.plain, "modgate_config_reloads_total{result=\"refused\"}"),
        1.0
    );
    let r = alice.get(w.tls, SERVER_NAME, moving, &[]).expect("alice");
    assert_eq!(r.status, 200, "the model in force changed: {}", r.text());
    load.wait_more(2);

    // A listener's address cannot change live: named, and the rest still applies.
    let text = w.text(&k).replace(&w.plain.to_string(), "127.0.0.1:1");
    w.gw.write_config(&text);
    let out = w.gw.reload();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("listener plain: address changed") && stdout.contains("run --upgrade"),
        "{stdout}"
    );
    w.gw.write_config(&w.text(&k));

    let (counts, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} request(s) failed that should have succeeded: {failures:#?}",
        failures.len()
    );
    assert!(counts.iter().all(|c| *c > 0), "{counts:?}");
    let applied = metric(w.plain, "modgate_config_reloads_total{result=\"applied\"}");
    assert_eq!(applied, 9.0);
    assert_eq!(metric(w.plain, "modgate_config_generation"), 10.0);
    assert!(
        metric(
            w.plain,
            "modgate_config_last_reload_success_timestamp_seconds"
        ) > 0.0,
        "no reload time"
    );
}

/// A graceful upgrade (`run --upgrade` + SIGQUIT) that adds a listener, under the same load:
/// no request fails, and the new listener serves.
#[test]
fn a_graceful_upgrade_adds_a_listener_without_failing_a_request() {
    let mut w = World::start();
    let load = Load::start(&w);
    load.wait_more(2);
    let extra = free_addr();
    let text = w.text(&Knobs::default()).replacen(
        "listeners:\n",
        &format!("listeners:\n  - {{ name: extra, address: \"{extra}\" }}\n"),
        1,
    );
    let old_exit = w.gw.upgrade(&text, extra);
    assert_eq!(old_exit, Some(0), "{}", w.gw.log());
    let r = get(extra, PUBLIC_INFO).expect("the added listener");
    assert_eq!(r.status, 200, "{}", r.text());
    load.wait_more(2);
    let (counts, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} request(s) failed across the upgrade: {failures:#?}",
        failures.len()
    );
    assert!(counts.iter().all(|c| *c > 2), "{counts:?}");
    // The new process holds the pid file it wrote (the old one's lock was on the file it
    // replaced): `modgate reload` finds and signals it.
    let out = w.gw.reload();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The operator's reload (issue 18): what a refused reload leaves, what the report says.

/// A gateway with one plain listener in front of one fixture upstream.
struct Small {
    gw: Gateway,
    plain: SocketAddr,
    upstream: String,
    _fixture: FixtureProxy,
    _rt: tokio::runtime::Runtime,
}

/// The gateway.yaml of [`small`]: the listener on `plain`, and `extra` (audit, auth...) added.
fn small_text(plain: SocketAddr, upstream: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - {{ name: plain, address: \"{plain}\" }}\n\
         upstreams:\n  u: {{ url: \"{upstream}\" }}\n\
         routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [u] }}\n{extra}"
    )
}

fn small(extra: &str) -> Small {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let fixture = rt
        .block_on(FixtureProxy::start(&modules()))
        .expect("fixture");
    let plain = free_addr();
    let upstream = fixture.url();
    let gw = Gateway::start(&small_text(plain, &upstream, extra), plain);
    Small {
        gw,
        plain,
        upstream,
        _fixture: fixture,
        _rt: rt,
    }
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A reload refused because a file it names does not load leaves no trace on disk: the new
/// audit file it names is not created.
#[test]
fn a_refused_reload_changes_nothing_on_disk() {
    let w = small("audit:\n  output: \"@DIR@/audit-a.jsonl\"\n");
    let dir = w.gw.dir.path().to_path_buf();
    // The users file exists (the file is valid) but does not load (the model cannot be built).
    std::fs::write(dir.join("bad-users"), "alice\n").expect("write users");
    w.gw.write_config(&small_text(
        w.plain,
        &w.upstream,
        "audit:\n  output: \"@DIR@/audit-b.jsonl\"\nauth:\n  users_file: \"@DIR@/bad-users\"\n",
    ));
    let out = w.gw.reload();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(output(&out).contains("bad-users:1"), "{}", output(&out));
    assert!(
        !dir.join("audit-b.jsonl").exists(),
        "a refused reload created the audit file it names"
    );
    let r = get(w.plain, PUBLIC_INFO).expect("get");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `modgate reload FILE` is accepted like `check FILE`; a file that does not parse is refused
/// by the gateway that runs it (found through the pid file the file names), never reported as
/// "no running gateway".
#[test]
fn reload_takes_the_file_as_argument_and_finds_the_gateway_of_a_broken_file() {
    let w = small("");
    let path = w.gw.config_path.to_string_lossy().to_string();
    let out = modgate_testkit::modgate(&["reload", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    assert!(
        output(&out).contains("reloaded: generation 2"),
        "{}",
        output(&out)
    );
    // Unparseable YAML (an unclosed flow sequence); its server.pid_file line is intact.
    let text = std::fs::read_to_string(&w.gw.config_path).expect("read");
    std::fs::write(&w.gw.config_path, format!("{text}broken: [\n")).expect("write");
    let out = modgate_testkit::modgate(&["reload", &path]);
    let said = output(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(!said.contains("no running gateway"), "{said}");
    assert!(
        said.contains("reload refused, generation 2 stays in force"),
        "{said}"
    );
}

/// What needs an upgrade is judged against the sockets the process holds, not the previous
/// file: a change that needs one is named again on the next reload, and reverting it is not a
/// change.
#[test]
fn needs_upgrade_is_judged_against_the_running_sockets() {
    let w = small("");
    let moved = free_addr();
    let path = w.gw.config_path.to_string_lossy().to_string();
    let moved_text = small_text(moved, &w.upstream, "");
    w.gw.write_config(&moved_text);
    let needs = format!(
        "not applied: listener plain: address changed ({} → {moved})",
        w.plain
    );
    for round in 0..2 {
        let out = modgate_testkit::modgate(&["reload", "-c", &path]);
        assert_eq!(out.status.code(), Some(0), "{}", output(&out));
        assert!(
            output(&out).contains(&needs),
            "round {round}: {}",
            output(&out)
        );
    }
    w.gw.write_config(&small_text(w.plain, &w.upstream, ""));
    let out = modgate_testkit::modgate(&["reload", "-c", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    assert!(!output(&out).contains("not applied"), "{}", output(&out));
}

/// `tls.watch` added by a reload watches from then on: a rotated certificate is picked up
/// without another SIGHUP.
#[test]
fn tls_watch_added_by_a_reload_takes_effect() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let fixture = rt
        .block_on(FixtureProxy::start(&modules()))
        .expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(dir.path());
    let (plain, tls) = (free_addr(), free_addr());
    let text = |watch: &str| {
        small_text(plain, &fixture.url(), "").replace(
            "\nupstreams:",
            &format!(
                "\n  - {{ name: tls, address: \"{tls}\", tls: {{ cert: server.pem, key: \
                 server.key{watch} }} }}\nupstreams:"
            ),
        )
    };
    let gw = Gateway::start_in(dir, &text(""), plain);
    gw.write_config(&text(", watch: 200ms"));
    let out = gw.reload();
    assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    let before = gw
        .log()
        .matches("TLS material reloaded (files changed)")
        .count();
    pki.rotate_server();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .log()
        .matches("TLS material reloaded (files changed)")
        .count()
        == before
    {
        assert!(
            Instant::now() < deadline,
            "the watch added by the reload never saw the rotated certificate:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
