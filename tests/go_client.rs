//! End to end with the real `go` command: `go mod download` and `go list -m -versions` through
//! a running modgate, over plain HTTP/1.1 and HTTPS/HTTP/2, for a module graph with an
//! uppercase path (`!` encoding), a `/v2` major version, a pseudo-version and an
//! `+incompatible` version; a private and a public route to two different fixture upstreams;
//! `GOPROXY=modgate,<next>` fallthrough on 404; and an upstream failure that becomes a 502/504
//! and does *not* fall through.

use std::net::SocketAddr;
use std::time::Duration;

use modgate_testkit::{
    curl, free_addr, free_port, make_certs, Behaviour, FixtureProxy, FixtureTls, Gateway, GoEnv,
    ModuleVersion,
};

const UPPER: &str = "example.com/Upper/lib";
const MAJOR: &str = "example.com/major/v2";
const PSEUDO: &str = "example.com/pseudo";
const PSEUDO_V: &str = "v0.0.0-20240315101112-abcdefabcdef";
const INCOMPAT: &str = "example.com/incompat";
const INCOMPAT_V: &str = "v3.0.0+incompatible";
const APP: &str = "example.com/app";
const SECRET: &str = "corp.example.com/Secret";

fn public_modules() -> Vec<ModuleVersion> {
    let m = |p: &str, v: &str| ModuleVersion::new(p, v).expect("fixture module");
    vec![
        m(UPPER, "v1.0.0"),
        m(UPPER, "v1.1.0"),
        m(MAJOR, "v2.0.0"),
        m(MAJOR, "v2.1.0"),
        m(PSEUDO, PSEUDO_V),
        m(INCOMPAT, INCOMPAT_V),
        m(APP, "v1.0.0")
            .require(UPPER, "v1.1.0")
            .require(MAJOR, "v2.1.0")
            .require(PSEUDO, PSEUDO_V)
            .require(INCOMPAT, INCOMPAT_V),
        m("example.com/broken", "v1.0.0"),
        m("example.com/slow", "v1.0.0"),
    ]
}

fn private_modules() -> Vec<ModuleVersion> {
    vec![ModuleVersion::new(SECRET, "v1.2.0").expect("fixture module")]
}

/// The private fixture upstream: HTTPS with its own CA (written into `pki`), requiring a
/// client certificate from that CA.
async fn private_fixture(pki: &std::path::Path, prefix: &str) -> FixtureProxy {
    make_certs(pki, "fixture upstream CA", "gateway");
    let fixture = FixtureProxy::start_with(
        &private_modules(),
        prefix,
        Some(FixtureTls {
            cert_pem: pki.join("server.pem"),
            key_pem: pki.join("server.key"),
            client_ca_pem: Some(pki.join("ca.pem")),
        }),
    )
    .await
    .expect("private fixture");
    // Serves the `private: true` route `corp`: the privacy canary expects corp paths here.
    fixture.mark_private();
    fixture
}

/// Two fixture upstreams (public over HTTP, private over HTTPS with its own CA under a path
/// prefix) and a modgate with a plain listener (h1 + h2c) and a TLS listener (h1 + h2).
struct World {
    public: FixtureProxy,
    private: FixtureProxy,
    gateway: Gateway,
    plain: SocketAddr,
    tls: SocketAddr,
    ca_pem: String,
    /// The private upstream's PKI; it must outlive the gateway that reads it.
    _upstream_pki: tempfile::TempDir,
}

async fn world() -> World {
    // The private upstream gets its own PKI: modgate must trust it through `ca:` and present
    // a client certificate from it (upstream mTLS); it is addressed by IP with `sni:` and a
    // `host:` override.
    let upstream_pki = tempfile::tempdir().expect("tempdir");
    let public = FixtureProxy::start(&public_modules())
        .await
        .expect("public fixture");
    let private = private_fixture(upstream_pki.path(), "/athens").await;

    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path(), "modgate test CA", "client");
    let plain = free_addr();
    let tls = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}" }}
  - name: tls
    address: "{tls}"
    tls: {{ cert: server.pem, key: server.key }}
upstreams:
  public: {{ url: "{public_url}", read_timeout: 2s }}
  corp:
    url: "{private_url}"
    private: true
    ca: "{upstream_ca}"
    client_cert: {{ cert: "{upstream_client}.pem", key: "{upstream_client}.key" }}
    sni: localhost
    host: athens.corp.example
routes:
  - name: corp
    match: {{ glob: "corp.example.com" }}
    chain: [corp]
    private: true
  - name: public
    match: {{ prefix: "" }}
    chain: [public]
# Private routes are closed unless a role opens them; this world tests transport, not access.
access:
  default: allow
  roles:
    - {{ name: everyone, members: [any], rules: [{{ id: corp-open, allow: {{ prefix: corp.example.com }} }}] }}
"#,
        public_url = public.url(),
        private_url = private.url(),
        upstream_ca = upstream_pki.path().join("ca.pem").display(),
        upstream_client = upstream_pki.path().join("client").display(),
    );
    let ca_pem = dir.path().join("ca.pem").to_string_lossy().to_string();
    let gateway = Gateway::start_in(dir, &config, tls);
    World {
        public,
        private,
        gateway,
        plain,
        tls,
        ca_pem,
        _upstream_pki: upstream_pki,
    }
}

fn assert_private_never_reached_public(w: &World) {
    for r in w.public.requests() {
        assert!(
            !r.path.to_ascii_lowercase().contains("corp.example.com"),
            "public upstream saw a private path: {}",
            r.path
        );
    }
}

fn download_graph(env: &GoEnv) {
    env.write_main_module(&[(APP, "v1.0.0"), (SECRET, "v1.2.0")]);
    env.go(&["mod", "download", "all"])
        .expect_ok("go mod download all");
    let cache = env.modcache();
    for p in [
        "cache/download/example.com/!upper/lib/@v/v1.1.0.zip",
        "cache/download/example.com/major/v2/@v/v2.1.0.zip",
        "cache/download/example.com/pseudo/@v/v0.0.0-20240315101112-abcdefabcdef.zip",
        "cache/download/example.com/incompat/@v/v3.0.0+incompatible.zip",
        "cache/download/corp.example.com/!secret/@v/v1.2.0.zip",
    ] {
        assert!(cache.join(p).exists(), "missing from module cache: {p}");
    }
    let versions = env.go(&["list", "-m", "-versions", UPPER]);
    versions.expect_ok("go list -m -versions");
    assert_eq!(versions.stdout().trim(), format!("{UPPER} v1.0.0 v1.1.0"));
    let versions = env.go(&["list", "-m", "-versions", MAJOR]);
    versions.expect_ok("go list -m -versions /v2");
    assert_eq!(versions.stdout().trim(), format!("{MAJOR} v2.0.0 v2.1.0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn go_downloads_a_module_graph_over_plain_http() {
    let w = world().await;
    let env = GoEnv::new(&format!("http://{}", w.plain));
    download_graph(&env);

    // Private module went to the private upstream, under its path prefix, case-encoded.
    let private = w.private.requests();
    assert!(private
        .iter()
        .any(|r| r.path == "/athens/corp.example.com/!secret/@v/v1.2.0.zip"));
    assert!(private
        .iter()
        .all(|r| r.path.starts_with("/athens/corp.example.com/")
            && r.header("host") == Some("athens.corp.example")));
    assert_private_never_reached_public(&w);

    // Upstream requests are modgate's own: its User-Agent, the upstream's Host, no client
    // identity.
    let public = w.public.requests();
    assert!(public
        .iter()
        .any(|r| r.path == "/example.com/!upper/lib/@v/v1.1.0.zip"));
    for r in &public {
        let ua = r.header("user-agent").unwrap_or("");
        assert!(ua.starts_with("modgate/"), "user-agent {ua:?}");
        assert_eq!(r.header("host"), Some(w.public.addr().to_string().as_str()));
    }
    let log = w.gateway.log();
    assert!(
        log.contains("HTTP/1.1"),
        "go used HTTP/1.1 over plain http:\n{log}"
    );
}

/// A `go` environment pointed at the gateway's TLS listener, trusting the test CA.
fn https_go_env(w: &World) -> GoEnv {
    let mut env = GoEnv::new(&format!("https://localhost:{}", w.tls.port()));
    env.set("SSL_CERT_FILE", &w.ca_pem);
    env
}

/// Whether the access log shows a request on the `tls` listener made with `version`.
fn tls_request_with(log: &str, version: &str) -> bool {
    log.lines()
        .any(|l| l.contains(" tls 127.0.0.1:") && l.contains(version))
}

#[tokio::test(flavor = "multi_thread")]
async fn go_downloads_a_module_graph_over_https_and_http2() {
    let w = world().await;
    download_graph(&https_go_env(&w));
    assert_private_never_reached_public(&w);
    let log = w.gateway.log();
    assert!(
        tls_request_with(&log, "HTTP/2"),
        "go should use HTTP/2 to an HTTPS GOPROXY:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn go_downloads_over_https_with_http1() {
    let w = world().await;
    let mut env = https_go_env(&w);
    env.set("GODEBUG", "http2client=0");
    download_graph(&env);
    let log = w.gateway.log();
    assert!(
        tls_request_with(&log, "HTTP/1.1"),
        "go with http2client=0 uses HTTP/1.1:\n{log}"
    );
    assert!(!tls_request_with(&log, "HTTP/2"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn private_upstream_refuses_a_gateway_without_its_client_certificate() {
    // Same private upstream, but modgate is not given the client certificate: the upstream
    // TLS handshake fails and the client gets a 502 with the reason, never a 404.
    let pki = tempfile::tempdir().expect("tempdir");
    let private = private_fixture(pki.path(), "").await;
    let plain = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}" }}
upstreams:
  corp: {{ url: "{}", private: true, ca: "{}" }}
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true }}
access:
  roles:
    - {{ name: everyone, members: [any], rules: [{{ allow: {{ prefix: corp.example.com }} }}] }}
"#,
        private.url(),
        pki.path().join("ca.pem").display()
    );
    let gw = Gateway::start(&config, plain);
    let r = curl(&[&format!("http://{plain}/corp.example.com/!secret/@v/list")]);
    assert_eq!(r.status, 502, "{r:?}\n{}", gw.log());
    assert!(
        r.body
            .starts_with("modgate: corp.example.com/Secret (list): upstream corp failed"),
        "{r:?}"
    );
    assert_eq!(private.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_speaks_every_protocol_flavour() {
    let w = world().await;
    let list = "/example.com/%21upper/lib/@v/list";
    // HTTP/1.1 and h2c (prior knowledge) on the plain listener.
    let r = curl(&["--http1.1", &format!("http://{}{list}", w.plain)]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "1.1"), "{r:?}");
    assert_eq!(r.body, "v1.0.0\nv1.1.0\n");
    let r = curl(&[
        "--http2-prior-knowledge",
        &format!("http://{}{list}", w.plain),
    ]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(r.body, "v1.0.0\nv1.1.0\n");
    // HTTPS: HTTP/1.1 and HTTP/2 by ALPN.
    let url = format!("https://localhost:{}{list}", w.tls.port());
    let r = curl(&["--cacert", &w.ca_pem, "--http1.1", &url]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "1.1"), "{r:?}");
    let r = curl(&["--cacert", &w.ca_pem, "--http2", &url]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(r.body, "v1.0.0\nv1.1.0\n");
    // @latest and a .info of a query version are forwarded too.
    let r = curl(&[
        "--cacert",
        &w.ca_pem,
        &format!(
            "https://localhost:{}/example.com/major/v2/@latest",
            w.tls.port()
        ),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"Version\":\"v2.1.0\""), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found_falls_through_the_client_chain() {
    let w = world().await;
    // A module only the "next" proxy in the client's GOPROXY list has.
    let next = FixtureProxy::start(&[
        ModuleVersion::new("other.example.org/thing", "v1.0.0").expect("module")
    ])
    .await
    .expect("fixture");
    let env = GoEnv::new(&format!("http://{},{}", w.plain, next.url()));
    env.write_main_module(&[("other.example.org/thing", "v1.0.0")]);
    env.go(&["mod", "download", "all"])
        .expect_ok("download through fallthrough");
    // modgate asked its upstream, which said 404, and modgate passed the 404 on.
    assert!(w
        .public
        .requests()
        .iter()
        .any(|r| r.path.starts_with("/other.example.org/thing/@v/")));
    assert!(w
        .gateway
        .log()
        .lines()
        .any(|l| l.contains("/other.example.org/thing/@v/") && l.contains(" 404 ")));
    assert!(next.request_count() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failure_is_a_502_and_does_not_fall_through() {
    let w = world().await;
    let next =
        FixtureProxy::start(&[ModuleVersion::new("example.com/broken", "v1.0.0").expect("module")])
            .await
            .expect("fixture");
    w.public
        .set_behaviour("/example.com/broken/", Behaviour::Status(503));
    let env = GoEnv::new(&format!("http://{},{}", w.plain, next.url()));
    env.write_main_module(&[("example.com/broken", "v1.0.0")]);
    let run = env.go(&["mod", "download", "all"]);
    assert!(!run.ok(), "download must fail: {}", run.stdout());
    let err = run.stderr();
    assert!(err.contains("502 Bad Gateway"), "{err}");
    assert!(
        err.contains("modgate: example.com/broken@v1.0.0") && err.contains("answered 503"),
        "the go command prints modgate's reason: {err}"
    );
    assert_eq!(next.request_count(), 0, "`,` must not fall through on 502");

    // A hanging upstream is a 504 after the read timeout, with a reason.
    w.public
        .set_behaviour("/example.com/slow/", Behaviour::Hang);
    let r = curl(&[&format!(
        "http://{}/example.com/slow/@v/v1.0.0.info",
        w.plain
    )]);
    assert_eq!(r.status, 504, "{r:?}");
    assert!(r.body.contains("timed out"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chains_fail_over_inside_the_gateway() {
    let primary =
        FixtureProxy::start(&[ModuleVersion::new("a.example.com/m", "v1.0.0").expect("module")])
            .await
            .expect("fixture");
    let secondary = FixtureProxy::start(&[
        ModuleVersion::new("a.example.com/m", "v1.0.0").expect("module"),
        ModuleVersion::new("b.example.com/m", "v1.0.0").expect("module"),
        ModuleVersion::new("c.example.com/m", "v1.0.0").expect("module"),
        ModuleVersion::new("d.example.com/m", "v1.0.0").expect("module"),
    ])
    .await
    .expect("fixture");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let plain = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}", debug_headers: true }}
upstreams:
  primary: {{ url: "{p}" }}
  secondary: {{ url: "{s}" }}
  dead: {{ url: "{dead}", connect_timeout: 1s }}
routes:
  - name: strict
    match: {{ glob: "a.example.com,d.example.com" }}
    chain: [primary, secondary]
  - name: lenient
    match: {{ prefix: b.example.com }}
    chain: [{{ upstream: primary, on: any-error }}, secondary]
  - name: dead-first
    match: {{ prefix: c.example.com }}
    chain: [{{ upstream: dead, on: any-error }}, secondary]
"#,
        p = primary.url(),
        s = secondary.url()
    );
    let gw = Gateway::start(&config, plain);
    let get = |path: &str| curl(&[&format!("http://{plain}{path}")]);

    // 404 at the primary → the secondary answers, on a `not-found` step and an `any-error` one.
    let r = get("/d.example.com/m/@v/v1.0.0.mod");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "module d.example.com/m\n\ngo 1.21\n");
    let r = get("/b.example.com/m/@v/v1.0.0.mod");
    assert_eq!(r.status, 200, "{r:?}");
    // A 500 from the primary: a `not-found` step stops with a 502 …
    primary.set_behaviour("", Behaviour::Status(500));
    let r = get("/a.example.com/m/@v/v1.0.0.mod");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("primary answered 500"), "{r:?}");
    let secondary_a = secondary
        .requests()
        .iter()
        .filter(|q| q.path.starts_with("/a.example.com/"))
        .count();
    assert_eq!(secondary_a, 0, "not-found steps must not fail over on 5xx");
    // … an `any-error` step moves on.
    let r = get("/b.example.com/m/@v/v1.0.0.info");
    assert_eq!(r.status, 200, "{r:?}");
    // A refused connection on an `any-error` step moves on too; the answer names who gave it.
    let r = get("/c.example.com/m/@v/v1.0.0.info");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.log());
    let r = modgate_testkit::get(plain, "/c.example.com/m/@v/v1.0.0.info").expect("get");
    assert_eq!(r.header("x-modgate-upstream"), Some("secondary"));
    assert_eq!(r.header("x-modgate-route"), Some("dead-first"));
    primary.clear_behaviours();
    let r = modgate_testkit::get(plain, "/a.example.com/m/@v/v1.0.0.info").expect("get");
    assert_eq!(r.header("x-modgate-upstream"), Some("primary"));
    // Both answered 404 → 404 to the client.
    let r = get("/b.example.com/none/@v/list");
    assert_eq!(r.status, 404, "{r:?}");
    drop(gw);
    let _ = Duration::ZERO;
}
