//! Access control end to end: who may read which module, proven with real clients.
//!
//! - The real `go` command with `.netrc` basic auth over HTTPS: allowed on one private path,
//!   refused on another with modgate's exact 403 line in `go`'s output; a wrong password and a
//!   missing `.netrc` are 401s. The private upstream never sees a refused request.
//! - An RBAC table over HTTP (basic users, bearer tokens, anonymous, bad credentials; a rule
//!   limited to `zip` below v2.0.0), with the Prometheus decision and auth-failure counters
//!   checked against the table; bearer tokens over HTTPS/HTTP/2 with curl; `require_identity`;
//!   SIGHUP re-reading the users file.
//! - `go` through `modgate agent` to a listener that requires a client certificate; without
//!   the agent the handshake fails; the agent picks up a replaced certificate and the gateway
//!   then refuses the new identity by name; the audit log names each certificate.
//! - An in-test OTLP receiver (real protobuf decoding, HTTP and gRPC): one denied request is
//!   exactly one `modgate.deny` span in the client's trace, with the decision's attributes; an
//!   allowed request adds none and its `traceparent` reaches the upstream. With sampling on,
//!   modgate's request span sits between the client's span and the upstream (and the deny
//!   span). A dead collector does not stop the gateway; its lost spans are counted.
//! - The audit log: one JSON line per request with the decision's fields and no secrets,
//!   reopened on SIGHUP after a rename, flushed on SIGTERM.
//! - `modgate explain` for a user, a token name and a certificate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use modgate_testkit::{
    curl, fingerprint_sha256, free_addr, free_port, modgate, modgate_bin, raw_request, request,
    ClientSpec, FixtureProxy, Gateway, GoEnv, Issuer, ModuleVersion, OtlpReceiver, Pki,
    ReceivedSpan, Response,
};

const ALICE_PW: &str = "alice-Pa55-7f3c9e1d";
const BOB_PW: &str = "bob-Pa55-0b8e2c44";
const CAROL_PW: &str = "carol-Pa55-91d0aa3f";
const WRONG_PW: &str = "not-alices-Pa55-5521";
/// Bearer token of `ci-bot` (group `ci`, so role `devs`).
const CI_TOKEN: &str = "mgt_2b7e151628aed2a6abf7158809cf4f3c";
/// Bearer token of `lonely-bot` (no groups, no role).
const LONELY_TOKEN: &str = "mgt_6bc1bee22e409f96e93d7e117393172a";
const UNKNOWN_TOKEN: &str = "mgt_ae2d8a571e03ac9c9eb76fac45af8e51";

const OPEN: &str = "corp.example.com/open";
const SECRET: &str = "corp.example.com/secret";
const CRYPTO: &str = "corp.example.com/crypto";
const CRYPTO_V2: &str = "corp.example.com/crypto/v2";
const PUBLIC: &str = "example.com/pub";

/// alice's refusals for `corp.example.com/secret`: the version and kind are named, the rule
/// id once.
const ALICE_SECRET_INFO_403: &str = "modgate: alice may not read \
    corp.example.com/secret@v1.0.0 (.info): denied by rule \"corp-secret\" of role \"devs\"";
const ALICE_SECRET_LIST_403: &str = "modgate: alice may not read corp.example.com/secret (list): \
    denied by rule \"corp-secret\" of role \"devs\"";
const ALICE_SECRET_ZIP_403: &str = "modgate: alice may not read \
    corp.example.com/secret@v1.0.0 (.zip): denied by rule \"corp-secret\" of role \"devs\"";

/// The gateway configuration every test starts from. `@PLAIN@`, `@STRICT@`, `@TLS@`,
/// `@TLS_EXTRA@`, `@PUBLIC@`, `@CORP@` and `@EXTRA@` are filled in by [`config_text`]; relative
/// file names are read from the gateway's directory.
const CONFIG: &str = r#"
listeners:
  - { name: plain, address: "@PLAIN@", metrics: true, debug_headers: true }
  - { name: strict, address: "@STRICT@", require_identity: true }
  - name: tls
    address: "@TLS@"
    tls: { cert: server.pem, key: server.key@TLS_EXTRA@ }
upstreams:
  public: { url: "@PUBLIC@" }
  corp: { url: "@CORP@", private: true }
routes:
  - { name: corp, match: { prefix: corp.example.com }, chain: [corp], private: true }
  - { name: public, match: { prefix: "" }, chain: [public] }
auth:
  users_file: users
  tokens_file: tokens
access:
  default: allow
  roles:
    - name: devs
      members: [ { user: alice }, { group: ci } ]
      rules:
        - { id: corp-open, allow: { prefix: corp.example.com/open } }
        - { id: corp-crypto, allow: { prefix: corp.example.com/crypto } }
        - { id: corp-secret, deny: { prefix: corp.example.com/secret } }
        - id: crypto-old-zips
          deny: { prefix: corp.example.com/crypto }
          kinds: [zip]
          versions: "<v2.0.0"
    - name: auditors
      members: [ { user: bob } ]
      rules:
        - { id: auditors-secret, allow: { prefix: corp.example.com/secret } }
    - name: agents
      members: [ { cn: "agent-*" } ]
      rules:
        - { id: agents-open, allow: { prefix: corp.example.com/open } }
@EXTRA@
"#;

/// Addresses of the plain, strict (`require_identity`) and TLS listeners.
#[derive(Clone, Copy)]
struct Listeners {
    plain: SocketAddr,
    strict: SocketAddr,
    tls: SocketAddr,
}

impl Listeners {
    fn free() -> Listeners {
        Listeners {
            plain: free_addr(),
            strict: free_addr(),
            tls: free_addr(),
        }
    }
}

fn config_text(
    l: Listeners,
    tls_extra: &str,
    public_url: &str,
    corp_url: &str,
    extra: &str,
) -> String {
    CONFIG
        .replace("@PLAIN@", &l.plain.to_string())
        .replace("@STRICT@", &l.strict.to_string())
        .replace("@TLS@", &l.tls.to_string())
        .replace("@TLS_EXTRA@", tls_extra)
        .replace("@PUBLIC@", public_url)
        .replace("@CORP@", corp_url)
        .replace("@EXTRA@", extra)
}

/// Writes the users file (bcrypt, cost 4) and the tokens file (SHA-256) into `dir`.
fn write_credentials(dir: &Path) {
    let hash = |pw: &str| bcrypt::hash(pw, 4).expect("bcrypt");
    let users = format!(
        "# name:hash[:groups]\nalice:{}:staff\nbob:{}\ncarol:{}\n",
        hash(ALICE_PW),
        hash(BOB_PW),
        hash(CAROL_PW)
    );
    std::fs::write(dir.join("users"), users).expect("write users");
    let tokens = format!(
        "ci-bot:sha256:{}:ci\nlonely-bot:sha256:{}\n",
        fingerprint_sha256(CI_TOKEN.as_bytes()),
        fingerprint_sha256(LONELY_TOKEN.as_bytes())
    );
    std::fs::write(dir.join("tokens"), tokens).expect("write tokens");
}

fn corp_modules() -> Vec<ModuleVersion> {
    let m = |p: &str, v: &str| ModuleVersion::new(p, v).expect("fixture module");
    vec![
        m(OPEN, "v1.0.0"),
        m(OPEN, "v1.1.0"),
        m(SECRET, "v1.0.0"),
        m(CRYPTO, "v1.5.0"),
        m(CRYPTO_V2, "v2.1.0"),
    ]
}

/// A gateway in front of two fixture upstreams (public and private), with a plain listener
/// (metrics on) and a TLS listener, and a test PKI in the gateway's directory.
struct World {
    public: FixtureProxy,
    corp: FixtureProxy,
    gateway: Gateway,
    plain: SocketAddr,
    strict: SocketAddr,
    tls: SocketAddr,
    pki: Pki,
}

impl World {
    fn dir(&self) -> &Path {
        self.gateway.dir.path()
    }

    fn root_pem(&self) -> String {
        self.pki.path("root.pem").to_string_lossy().to_string()
    }

    /// `GET path` on the plain listener.
    fn get(&self, who: &Who, path: &str) -> Response {
        self.get_with(who, path, &[])
    }

    fn get_with(&self, who: &Who, path: &str, headers: &[(&str, &str)]) -> Response {
        let auth = who.authorization();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            all.push(("Authorization", a));
        }
        request(self.plain, "GET", path, &all)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.gateway.log()))
    }

    fn metrics(&self) -> String {
        let r = request(self.plain, "GET", "/metrics", &[]).expect("GET /metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }
}

/// Starts a [`World`]; `tls_extra` goes inside the TLS listener's `tls:` map, `extra` at the
/// end of the file (audit, telemetry).
async fn world(tls_extra: &str, extra: &str) -> World {
    let public = FixtureProxy::start(&[ModuleVersion::new(PUBLIC, "v1.0.0").expect("module")])
        .await
        .expect("public fixture");
    let corp = FixtureProxy::start(&corp_modules())
        .await
        .expect("corp fixture");
    corp.mark_private();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(dir.path());
    write_credentials(dir.path());
    let l = Listeners::free();
    let config = config_text(l, tls_extra, &public.url(), &corp.url(), extra);
    let gateway = Gateway::start_in(dir, &config, l.plain);
    // Every listener is up once the others accept too.
    wait_for_port(l.strict, &gateway);
    wait_for_port(l.tls, &gateway);
    World {
        public,
        corp,
        gateway,
        plain: l.plain,
        strict: l.strict,
        tls: l.tls,
        pki,
    }
}

fn wait_for_port(addr: SocketAddr, gateway: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{addr} not listening:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Who makes a request.
#[derive(Debug, Clone)]
enum Who {
    Anonymous,
    Basic(&'static str, &'static str),
    Bearer(&'static str),
    /// An `Authorization` header value as is.
    Raw(&'static str),
}

impl Who {
    fn authorization(&self) -> Option<String> {
        match self {
            Who::Anonymous => None,
            Who::Basic(u, p) => Some(format!("Basic {}", basic_b64(u, p))),
            Who::Bearer(t) => Some(format!("Bearer {t}")),
            Who::Raw(v) => Some(v.to_string()),
        }
    }
}

fn basic_b64(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

const ALICE: Who = Who::Basic("alice", ALICE_PW);

/// Reads a counter from a Prometheus text exposition: the sample of `name` whose labels
/// include every pair in `labels` (0 when there is none).
fn counter(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    let mut seen = 0;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let have: BTreeMap<&str, &str> = label_text
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once("=\""))
            .map(|(k, v)| (k, v.trim_end_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            total += value.trim().parse::<f64>().expect("metric value");
            seen += 1;
        }
    }
    assert!(seen <= 1, "{name}{labels:?} matches {seen} samples");
    total
}

/// A `go` environment whose GOPROXY is the gateway's TLS listener (by IP, so the `.netrc`
/// machine is `127.0.0.1:<port>`), trusting the test root.
fn https_go_env(w: &World) -> GoEnv {
    let mut env = GoEnv::new(&format!("https://{}", w.tls));
    env.set("SSL_CERT_FILE", &w.root_pem());
    // No checksum database for the private modules (GoEnv already sets GOSUMDB=off). Not
    // GOPRIVATE: that would also imply GONOPROXY and send `go` around the gateway.
    env.set("GONOSUMDB", "corp.example.com");
    env.write_main_module(&[]);
    env
}

/// Writes a `.netrc` for the TLS listener into the go environment and points NETRC at it.
fn use_netrc(env: &mut GoEnv, w: &World, user: &str, password: &str) {
    let path = env.dir.path().join("netrc");
    std::fs::write(
        &path,
        format!("machine {} login {user} password {password}\n", w.tls),
    )
    .expect("write netrc");
    env.set("NETRC", &path.to_string_lossy());
}

fn in_modcache(env: &GoEnv, module: &str, version: &str) -> bool {
    env.modcache()
        .join(format!("cache/download/{module}/@v/{version}.zip"))
        .is_file()
}

fn assert_corp_never_saw(w: &World, fragment: &str) {
    for r in w.corp.requests() {
        assert!(
            !r.path.contains(fragment),
            "the private upstream received a refused request: {}",
            r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn go_with_netrc_reads_one_private_path_and_is_refused_another() {
    let w = world("", "").await;

    let mut env = https_go_env(&w);
    use_netrc(&mut env, &w, "alice", ALICE_PW);
    env.go(&["mod", "download", &format!("{OPEN}@v1.0.0")])
        .expect_ok("go mod download of an allowed private module");
    assert!(in_modcache(&env, OPEN, "v1.0.0"));
    // Public modules are open to alice too (default: allow).
    env.go(&["mod", "download", &format!("{PUBLIC}@v1.0.0")])
        .expect_ok("go mod download of a public module");

    let run = env.go(&["mod", "download", &format!("{SECRET}@v1.0.0")]);
    assert!(!run.ok(), "a denied module downloaded: {}", run.stdout());
    let err = run.stderr();
    assert!(err.contains("403 Forbidden"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.trim_start().ends_with(ALICE_SECRET_INFO_403)),
        "go prints modgate's refusal line verbatim:\n{err}"
    );
    assert!(!in_modcache(&env, SECRET, "v1.0.0"));

    // The credentials went to the gateway only: the upstream saw alice's allowed downloads
    // without any Authorization header, and never the refused module.
    let corp = w.corp.requests();
    assert!(corp
        .iter()
        .any(|r| r.path == "/corp.example.com/open/@v/v1.0.0.zip"));
    assert!(corp.iter().all(|r| r.header("authorization").is_none()));
    assert_corp_never_saw(&w, "secret");

    // A wrong password: 401 with modgate's reason, nothing downloaded.
    let mut env = https_go_env(&w);
    use_netrc(&mut env, &w, "alice", WRONG_PW);
    let run = env.go(&["mod", "download", &format!("{OPEN}@v1.1.0")]);
    assert!(!run.ok(), "a wrong password downloaded: {}", run.stdout());
    let err = run.stderr();
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(
        err.contains("modgate: the credentials sent were not accepted"),
        "{err}"
    );
    assert!(!err.contains(WRONG_PW), "{err}");

    // No .netrc at all: the private route asks for credentials (401), naming the rule.
    let env = https_go_env(&w);
    let run = env.go(&["mod", "download", &format!("{OPEN}@v1.1.0")]);
    assert!(
        !run.ok(),
        "an anonymous client downloaded: {}",
        run.stdout()
    );
    let err = run.stderr();
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(
        err.contains(
            "modgate: anonymous may not read corp.example.com/open@v1.1.0 (.info): no role \
             grants access to private route \"corp\" (rule private-default)"
        ),
        "{err}"
    );
    assert!(!w.corp.requests().iter().any(|r| r.path.contains("v1.1.0")));

    // A `.netrc` entry without the port: the go command looks the machine up with the port of
    // its GOPROXY URL, finds nothing, sends nothing, and is told which machine it looked for.
    let mut env = https_go_env(&w);
    let path = env.dir.path().join("netrc");
    std::fs::write(
        &path,
        format!("machine 127.0.0.1 login alice password {ALICE_PW}\n"),
    )
    .expect("write netrc");
    env.set("NETRC", &path.to_string_lossy());
    let run = env.go(&["mod", "download", &format!("{OPEN}@v1.1.0")]);
    assert!(
        !run.ok(),
        "downloaded without credentials: {}",
        run.stdout()
    );
    let err = run.stderr();
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(
        err.contains(&format!(
            "modgate: anonymous may not read corp.example.com/open@v1.1.0 (.info): no role \
             grants access to private route \"corp\" (rule private-default); for .netrc, the go \
             command looks for \"machine {}\" (host and port as in GOPROXY)",
            w.tls
        )),
        "{err}"
    );
    // Over plain HTTP the go command sends no .netrc credentials at all, and is told so.
    let mut env = GoEnv::new(&format!("http://{}", w.plain));
    env.write_main_module(&[]);
    use_netrc(&mut env, &w, "alice", ALICE_PW);
    let run = env.go(&["mod", "download", &format!("{OPEN}@v1.1.0")]);
    assert!(
        !run.ok(),
        "downloaded without credentials: {}",
        run.stdout()
    );
    let err = run.stderr();
    assert!(
        err.contains("401 Unauthorized")
            && err.contains(
                "(rule private-default); the go command sends .netrc credentials over https only"
            ),
        "{err}"
    );
    assert!(!w.corp.requests().iter().any(|r| r.path.contains("v1.1.0")));
}

/// What a table row is expected to add to the metrics.
#[derive(Debug, Clone, Copy)]
enum Counted {
    /// `modgate_access_decisions_total{route, decision, rule}`.
    Decision(&'static str, &'static str, &'static str),
    /// `modgate_auth_failures_total{reason}`.
    AuthFailure(&'static str),
}

struct Case {
    who: Who,
    path: &'static str,
    status: u16,
    /// The whole body for modgate's own answers (without the newline); a fragment (`~...`)
    /// for upstream bodies.
    body: &'static str,
    counted: Counted,
}

const fn case(
    who: Who,
    path: &'static str,
    status: u16,
    body: &'static str,
    counted: Counted,
) -> Case {
    Case {
        who,
        path,
        status,
        body,
        counted,
    }
}

fn access_table() -> Vec<Case> {
    use Counted::{AuthFailure, Decision};
    const BOB: Who = Who::Basic("bob", BOB_PW);
    const CAROL: Who = Who::Basic("carol", CAROL_PW);
    const CI: Who = Who::Bearer(CI_TOKEN);
    const LONELY: Who = Who::Bearer(LONELY_TOKEN);
    vec![
        // alice (role devs): open yes, secret no.
        case(
            ALICE,
            "/corp.example.com/open/@v/list",
            200,
            "~v1.0.0\nv1.1.0\n",
            Decision("corp", "allow", "corp-open"),
        ),
        case(
            ALICE,
            "/corp.example.com/open/@v/v1.0.0.zip",
            200,
            "~PK",
            Decision("corp", "allow", "corp-open"),
        ),
        case(
            ALICE,
            "/corp.example.com/secret/@v/v1.0.0.info",
            403,
            ALICE_SECRET_INFO_403,
            Decision("corp", "deny", "corp-secret"),
        ),
        case(
            ALICE,
            "/corp.example.com/secret/@v/list",
            403,
            ALICE_SECRET_LIST_403,
            Decision("corp", "deny", "corp-secret"),
        ),
        // bob (role auditors): the other way round.
        case(
            BOB,
            "/corp.example.com/secret/@v/v1.0.0.mod",
            200,
            "~module corp.example.com/secret",
            Decision("corp", "allow", "auditors-secret"),
        ),
        case(
            BOB,
            "/corp.example.com/open/@v/list",
            403,
            "modgate: bob may not read corp.example.com/open (list): no role grants access to private \
             route \"corp\" (rule private-default)",
            Decision("corp", "deny", "private-default"),
        ),
        // carol holds no role: no private module, but public ones (default: allow).
        case(
            CAROL,
            "/corp.example.com/open/@v/list",
            403,
            "modgate: carol may not read corp.example.com/open (list): no role grants access to \
             private route \"corp\" (rule private-default)",
            Decision("corp", "deny", "private-default"),
        ),
        case(
            CAROL,
            "/example.com/pub/@v/list",
            200,
            "~v1.0.0",
            Decision("public", "allow", "default"),
        ),
        // Bearer token with group ci (role devs); the zip rule only catches zips below v2.
        case(
            CI,
            "/corp.example.com/crypto/@v/list",
            200,
            "~v1.5.0",
            Decision("corp", "allow", "corp-crypto"),
        ),
        case(
            CI,
            "/corp.example.com/crypto/@v/v1.5.0.info",
            200,
            "~\"Version\":\"v1.5.0\"",
            Decision("corp", "allow", "corp-crypto"),
        ),
        case(
            CI,
            "/corp.example.com/crypto/@v/v1.5.0.mod",
            200,
            "~module corp.example.com/crypto",
            Decision("corp", "allow", "corp-crypto"),
        ),
        case(
            CI,
            "/corp.example.com/crypto/@v/v1.5.0.zip",
            403,
            "modgate: ci-bot may not read corp.example.com/crypto@v1.5.0 (.zip): denied by \
             rule \"crypto-old-zips\" of role \"devs\"",
            Decision("corp", "deny", "crypto-old-zips"),
        ),
        case(
            CI,
            "/corp.example.com/crypto/v2/@v/v2.1.0.zip",
            200,
            "~PK",
            Decision("corp", "allow", "corp-crypto"),
        ),
        case(
            CI,
            "/corp.example.com/secret/@v/list",
            403,
            "modgate: ci-bot may not read corp.example.com/secret (list): denied by rule \
             \"corp-secret\" of role \"devs\"",
            Decision("corp", "deny", "corp-secret"),
        ),
        // A valid token without a role.
        case(
            LONELY,
            "/corp.example.com/open/@v/list",
            403,
            "modgate: lonely-bot may not read corp.example.com/open (list): no role grants access to \
             private route \"corp\" (rule private-default)",
            Decision("corp", "deny", "private-default"),
        ),
        // Anonymous: public yes; private → 401 so that a client sends credentials.
        case(
            Who::Anonymous,
            "/example.com/pub/@v/v1.0.0.info",
            200,
            "~\"Version\":\"v1.0.0\"",
            Decision("public", "allow", "default"),
        ),
        case(
            Who::Anonymous,
            "/corp.example.com/open/@v/list",
            401,
            "modgate: anonymous may not read corp.example.com/open (list): no role grants \
             access to private route \"corp\" (rule private-default)",
            Decision("corp", "deny", "private-default"),
        ),
        // Credentials that do not check out are 401 even for public modules.
        case(
            Who::Basic("alice", WRONG_PW),
            "/example.com/pub/@v/list",
            401,
            "modgate: the credentials sent were not accepted",
            AuthFailure("bad-password"),
        ),
        case(
            Who::Basic("mallory", WRONG_PW),
            "/corp.example.com/open/@v/list",
            401,
            "modgate: the credentials sent were not accepted",
            AuthFailure("unknown-user"),
        ),
        case(
            Who::Bearer(UNKNOWN_TOKEN),
            "/corp.example.com/open/@v/list",
            401,
            "modgate: the credentials sent were not accepted",
            AuthFailure("unknown-token"),
        ),
        case(
            Who::Raw("Digest username=\"alice\""),
            "/example.com/pub/@v/list",
            401,
            "modgate: bad Authorization header: malformed Authorization header: unsupported \
             scheme (expected Basic or Bearer)",
            AuthFailure("malformed"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_table_over_http_with_decision_and_auth_failure_metrics() {
    let w = world("", "").await;
    let mut decisions: BTreeMap<(&str, &str, &str), f64> = BTreeMap::new();
    let mut failures: BTreeMap<&str, f64> = BTreeMap::new();
    for c in access_table() {
        let r = w.get(&c.who, c.path);
        let what = format!("{:?} GET {}", c.who, c.path);
        assert_eq!(r.status, c.status, "{what}: {}", r.text());
        match c.body.strip_prefix('~') {
            Some(fragment) => assert!(r.text().contains(fragment), "{what}: {}", r.text()),
            None => assert_eq!(r.text(), format!("{}\n", c.body), "{what}"),
        }
        if r.status == 401 {
            assert_eq!(
                r.header("www-authenticate"),
                Some("Basic realm=\"modgate\""),
                "{what}"
            );
        } else {
            assert_eq!(r.header("www-authenticate"), None, "{what}");
        }
        if r.status == 200 {
            let route = if c.path.starts_with("/corp.") {
                "corp"
            } else {
                "public"
            };
            assert_eq!(r.header("x-modgate-route"), Some(route), "{what}");
            assert_eq!(r.header("x-modgate-upstream"), Some(route), "{what}");
        }
        match c.counted {
            Counted::Decision(route, decision, rule) => {
                *decisions.entry((route, decision, rule)).or_default() += 1.0
            }
            Counted::AuthFailure(reason) => *failures.entry(reason).or_default() += 1.0,
        }
    }
    // Nothing refused reached the private upstream; nothing carried credentials upstream.
    assert_corp_never_saw(&w, "/secret/@v/v1.0.0.info");
    assert_corp_never_saw(&w, "v1.5.0.zip");
    for r in w.corp.requests().iter().chain(w.public.requests().iter()) {
        assert_eq!(r.header("authorization"), None, "{}", r.path);
    }

    let m = w.metrics();
    for ((route, decision, rule), n) in &decisions {
        let labels = [("route", *route), ("decision", *decision), ("rule", *rule)];
        assert_eq!(
            counter(&m, "modgate_access_decisions_total", &labels),
            *n,
            "{labels:?}\n{m}"
        );
    }
    let total: f64 = decisions.values().sum();
    assert_eq!(sum_all(&m, "modgate_access_decisions_total"), total, "{m}");
    for (reason, n) in &failures {
        assert_eq!(
            counter(&m, "modgate_auth_failures_total", &[("reason", reason)]),
            *n,
            "{reason}\n{m}"
        );
    }
    assert_eq!(
        sum_all(&m, "modgate_auth_failures_total"),
        failures.values().sum::<f64>(),
        "{m}"
    );

    // Bearer tokens with curl over HTTPS (HTTP/2).
    let url = |path: &str| format!("https://{}{path}", w.tls);
    let ci = format!("Authorization: Bearer {CI_TOKEN}");
    let root = w.root_pem();
    let r = curl(&[
        "--cacert",
        &root,
        "--http2",
        "-H",
        &ci,
        &url("/corp.example.com/crypto/v2/@v/list"),
    ]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(r.body, "v2.1.0\n");
    let r = curl(&[
        "--cacert",
        &root,
        "--http2",
        "-H",
        &ci,
        &url("/corp.example.com/crypto/@v/v1.5.0.zip"),
    ]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.body
            .ends_with("denied by rule \"crypto-old-zips\" of role \"devs\"\n"),
        "{r:?}"
    );
    let r = curl(&[
        "--cacert",
        &root,
        "-H",
        &format!("Authorization: Bearer {UNKNOWN_TOKEN}"),
        &url("/corp.example.com/crypto/@v/list"),
    ]);
    assert_eq!(r.status, 401, "{r:?}");

    // `require_identity`: anonymous requests are refused even for public modules.
    let r = request(w.strict, "GET", "/example.com/pub/@v/list", &[]).expect("GET");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.text(),
        "modgate: authentication required: present a client certificate (modgate agent) or \
         .netrc credentials\n"
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"modgate\"")
    );
    let alice = ALICE.authorization().expect("basic");
    let r = request(
        w.strict,
        "GET",
        "/example.com/pub/@v/list",
        &[("Authorization", &alice)],
    )
    .expect("GET");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = w.metrics();
    assert_eq!(
        counter(&m, "modgate_auth_failures_total", &[("reason", "missing")]),
        1.0,
        "{m}"
    );

    // SIGHUP re-reads the credential files: a changed password stops working at once (even
    // though the old one was verified and cached), a new user starts working.
    const NEW_PW: &str = "alice-NewPa55-e4a1c0";
    let users = std::fs::read_to_string(w.dir().join("users")).expect("users");
    let users: String = users
        .lines()
        .map(|l| match l.strip_prefix("alice:") {
            Some(_) => format!("alice:{}:staff\n", bcrypt::hash(NEW_PW, 4).expect("bcrypt")),
            None => format!("{l}\n"),
        })
        .collect();
    let users = format!("{users}dave:{}\n", bcrypt::hash(NEW_PW, 4).expect("bcrypt"));
    std::fs::write(w.dir().join("users"), users).expect("rewrite users");
    w.gateway.signal("HUP");
    wait_for_log(&w.gateway, "reloaded credential files");
    let open_list = "/corp.example.com/open/@v/list";
    assert_eq!(w.get(&ALICE, open_list).status, 401);
    assert_eq!(w.get(&Who::Basic("alice", NEW_PW), open_list).status, 200);
    let r = w.get(&Who::Basic("dave", NEW_PW), open_list);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().starts_with("modgate: dave may not read"),
        "{}",
        r.text()
    );
}

/// Waits until the gateway's log contains `needle`.
fn wait_for_log(gateway: &Gateway, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gateway.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sum of every sample of a metric.
fn sum_all(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next())
        .map(|v| v.parse::<f64>().expect("metric value"))
        .sum()
}

/// Kills the child process when dropped (also when a test panics).
struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `modgate agent` in front of the TLS listener and waits until it answers.
fn start_agent(w: &World, dir: &Path, listen: SocketAddr) -> ChildGuard {
    let gateway = format!("https://{}", w.tls);
    start_agent_to(&gateway, Some(&w.pki.path("root.pem")), dir, listen)
}

/// Starts `modgate agent` for `gateway` with `dir`'s `agent.pem` / `agent.key`, trusting `ca`
/// (else the system roots), and waits until it answers.
fn start_agent_to(gateway: &str, ca: Option<&Path>, dir: &Path, listen: SocketAddr) -> ChildGuard {
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).expect("agent log");
    let err = out.try_clone().expect("agent log");
    let mut command = Command::new(modgate_bin());
    command
        .arg("agent")
        .args(["--gateway", gateway])
        .arg("--cert")
        .arg(dir.join("agent.pem"))
        .arg("--key")
        .arg(dir.join("agent.key"));
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    let child = command
        .args(["--listen", &listen.to_string()])
        .arg("--pid-file")
        .arg(dir.join("agent.pid"))
        .args(["--watch", "0.2"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", modgate_bin().display()));
    let mut agent = ChildGuard { child, log };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("modgate agent exited ({status}):\n{}", agent.log());
        }
        if let Ok(r) = request(listen, "GET", "/agent/healthz", &[]) {
            if r.status == 200 {
                return agent;
            }
        }
        assert!(
            Instant::now() < deadline,
            "modgate agent did not start:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn go_through_modgate_agent_to_an_mtls_listener_and_certificate_reload() {
    let w = world(
        ", client_auth: required, client_ca: root.pem",
        "audit:\n  output: audit.jsonl\n",
    )
    .await;
    // The agent's certificate, issued by the gateway's root, lives in the user's directory.
    let agent_dir = tempfile::tempdir().expect("tempdir");
    let agent_der = w
        .pki
        .client("agent", &ClientSpec::new("agent-7", 7).o("Corp"));
    for f in ["agent.pem", "agent.key"] {
        std::fs::copy(w.pki.path(f), agent_dir.path().join(f)).expect("copy agent cert");
    }
    let listen = free_addr();
    let agent = start_agent(&w, agent_dir.path(), listen);

    // `go` cannot present a client certificate; through the agent it need not.
    let env = GoEnv::new(&format!("http://{listen}"));
    env.write_main_module(&[]);
    env.go(&["mod", "download", &format!("{OPEN}@v1.0.0")])
        .expect_ok("go mod download through modgate agent");
    assert!(in_modcache(&env, OPEN, "v1.0.0"));

    // The agent lends the certificate only to GOPROXY reads that name it: not to a web page
    // (DNS rebinding or a browser fetch), not for other methods.
    let corp_before = w.corp.request_count();
    let info = format!("/{OPEN}/@v/v1.0.0.info");
    let ask = |method: &str, host: &str, extra: &str| {
        let raw = format!(
            "{method} {info} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        raw_request(listen, raw.as_bytes()).expect("agent answer")
    };
    let own = listen.to_string();
    for (method, host, extra, why) in [
        ("GET", "attacker.example", "", "Host"),
        (
            "GET",
            own.as_str(),
            "Origin: http://attacker.example\r\n",
            "web pages",
        ),
        (
            "GET",
            own.as_str(),
            "Sec-Fetch-Site: cross-site\r\n",
            "web pages",
        ),
        ("POST", own.as_str(), "", "method POST"),
    ] {
        let r = ask(method, host, extra);
        assert_eq!(r.status, 403, "{method} {host} {extra:?}: {}", r.text());
        assert!(r.text().contains(why), "{}", r.text());
    }
    assert_eq!(w.corp.request_count(), corp_before, "nothing was forwarded");
    let r = ask("GET", &format!("localhost:{}", listen.port()), "");
    assert_eq!(r.status, 200, "{}", r.text());

    // Straight to the listener, without a certificate: `go` cannot present one, and prints
    // the gateway's reason (the handshake completes; the request is refused).
    let direct = {
        let mut env = GoEnv::new(&format!("https://{}", w.tls));
        env.set("SSL_CERT_FILE", &w.root_pem());
        env.write_main_module(&[]);
        env
    };
    let upstream_before = w.corp.request_count();
    let run = direct.go(&["mod", "download", &format!("{OPEN}@v1.0.0")]);
    assert!(!run.ok(), "downloaded without a client certificate");
    let err = run.stderr();
    assert!(
        err.contains("403 Forbidden")
            && err.contains(
                "modgate: this listener requires a client certificate and none was presented \
                 (the go command cannot present one: use `modgate agent`"
            ),
        "{err}"
    );
    assert_eq!(w.corp.request_count(), upstream_before);

    // The agent's certificate is renewed on disk with another identity, which no role
    // covers: after the agent's watch interval the gateway refuses it by its new name.
    let renewed = tempfile::tempdir().expect("tempdir");
    let intruder_der = w
        .pki
        .client("intruder", &ClientSpec::new("intruder-9", 0x1f09));
    for (from, to) in [("intruder.key", "agent.key"), ("intruder.pem", "agent.pem")] {
        let staged = renewed.path().join(to);
        std::fs::copy(w.pki.path(from), &staged).expect("copy");
        std::fs::rename(&staged, agent_dir.path().join(to)).expect("rename");
    }
    let refusal = "modgate: intruder-9 may not read corp.example.com/open (list): no role grants \
                   access to private route \"corp\" (rule private-default)\n";
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = request(listen, "GET", "/corp.example.com/open/@v/list", &[])
            .expect("GET through the agent");
        if r.status == 403 {
            assert_eq!(r.text(), refusal);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "the agent did not pick up the renewed certificate:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        agent.log().contains("loaded renewed client certificate"),
        "{}",
        agent.log()
    );
    let run = env.go(&["mod", "download", &format!("{OPEN}@v1.1.0")]);
    assert!(!run.ok(), "the new identity downloaded: {}", run.stdout());
    let err = run.stderr();
    assert!(err.contains("403 Forbidden"), "{err}");
    assert!(
        err.contains(
            "modgate: intruder-9 may not read corp.example.com/open@v1.1.0 (.info): no role \
             grants access to private route \"corp\" (rule private-default)"
        ),
        "{err}"
    );
    drop(agent);

    // The audit log names each certificate: DN, fingerprint and serial.
    let lines = audit_lines(&w.dir().join("audit.jsonl"));
    let by = |name: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["identity"]["name"] == name)
            .collect()
    };
    let agent_lines = by("agent-7");
    let intruder_lines = by("intruder-9");
    // The direct `go` without a certificate is audited as refused, never served.
    let anonymous_lines = by("anonymous");
    assert!(!anonymous_lines.is_empty(), "{lines:#?}");
    for l in &anonymous_lines {
        assert_eq!(l["decision"], "unauthenticated", "{l}");
        assert_eq!(l["status"], 403, "{l}");
    }
    assert_eq!(
        agent_lines.len() + intruder_lines.len() + anonymous_lines.len(),
        lines.len(),
        "only the two certificates made requests: {lines:#?}"
    );
    assert!(agent_lines.iter().any(|l| l["kind"] == "zip"), "{lines:#?}");
    for l in agent_lines {
        assert_eq!(l["decision"], "allow", "{l}");
        assert_eq!(l["rule"], "agents-open", "{l}");
        assert_eq!(l["roles"], serde_json::json!(["agents"]), "{l}");
        let id = &l["identity"];
        assert_eq!(id["source"], "certificate", "{l}");
        assert_eq!(id["dn"], "CN=agent-7,O=Corp", "{l}");
        assert_eq!(id["fingerprint"], fingerprint_sha256(&agent_der), "{l}");
        assert_eq!(id["serial"], "07", "{l}");
    }
    assert!(!intruder_lines.is_empty());
    for l in intruder_lines {
        assert_eq!(l["decision"], "deny", "{l}");
        assert_eq!(l["status"], 403, "{l}");
        assert_eq!(l["rule"], "private-default", "{l}");
        let id = &l["identity"];
        assert_eq!(id["dn"], "CN=intruder-9", "{l}");
        assert_eq!(id["fingerprint"], fingerprint_sha256(&intruder_der), "{l}");
        assert_eq!(id["serial"], "1F09", "{l}");
    }
}

/// Copies the test PKI's `<name>.pem` / `.key` into `dir` as the agent's `agent.pem` /
/// `agent.key` (staged and renamed, as a renewal tool would).
fn install_agent_cert(w: &World, name: &str, dir: &Path) {
    for ext in ["key", "pem"] {
        let staged = dir.join(format!("staged.{ext}"));
        std::fs::copy(w.pki.path(&format!("{name}.{ext}")), &staged).expect("copy");
        std::fs::rename(&staged, dir.join(format!("agent.{ext}"))).expect("rename");
    }
}

/// When the gateway gives no answer, the agent says why in one line that `go` prints: the TLS
/// alert the gateway refused the certificate with (`refuse_in: handshake`), a gateway
/// certificate it does not trust, a refused connection. The gateway's own answers (a 403 with
/// its reason) pass through unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_says_why_the_gateway_refused_it_or_could_not_be_reached() {
    let w = world(
        ", client_auth: required, client_ca: root.pem, refuse_in: handshake",
        "",
    )
    .await;
    let gateway = format!("https://{}", w.tls);
    w.pki
        .client("eve", &ClientSpec::new("eve", 0x3e).issuer(Issuer::Other));
    w.pki
        .client("old", &ClientSpec::new("old", 0x01d).expired());
    w.pki.client("agent", &ClientSpec::new("agent-7", 7));
    let dir = tempfile::tempdir().expect("tempdir");
    install_agent_cert(&w, "eve", dir.path());
    let cert = dir.path().join("agent.pem");
    let listen = free_addr();
    let agent = start_agent(&w, dir.path(), listen);
    let info = format!("/{OPEN}/@v/v1.0.0.info");
    let refused = |alert: &str, why: &str| {
        format!(
            "modgate agent: the gateway at {gateway} refused the client certificate {} in the \
             TLS handshake: {alert} ({why})\n",
            cert.display()
        )
    };

    // A certificate from a CA the listener does not trust: `unknown ca`, with what it means.
    let unknown_ca = refused(
        "unknown ca",
        "it is not issued by a CA the gateway trusts for client certificates",
    );
    let r = request(listen, "GET", &info, &[]).expect("GET through the agent");
    assert_eq!(
        (r.status, r.text()),
        (502, unknown_ca.clone()),
        "{}",
        agent.log()
    );
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    // `go` prints the line under the status.
    let env = GoEnv::new(&format!("http://{listen}"));
    env.write_main_module(&[]);
    let run = env.go(&["mod", "download", &format!("{OPEN}@v1.0.0")]);
    assert!(!run.ok(), "downloaded with a refused certificate");
    let err = run.stderr();
    assert!(
        err.contains("502 Bad Gateway") && err.contains(unknown_ca.trim_end()),
        "{err}"
    );

    // Renewed on disk with an expired certificate: `certificate expired`.
    install_agent_cert(&w, "old", dir.path());
    let expired = refused(
        "certificate expired",
        "it has expired or is not valid yet: renew it",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = request(listen, "GET", &info, &[]).expect("GET through the agent");
        assert_eq!(r.status, 502, "{}", r.text());
        if r.text() == expired {
            break;
        }
        assert_eq!(r.text(), unknown_ca);
        assert!(
            Instant::now() < deadline,
            "the agent did not pick up the renewed certificate:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A certificate the gateway accepts, for a module no role of it covers: the gateway's own
    // 403 and reason, unchanged.
    install_agent_cert(&w, "agent", dir.path());
    let secret = format!("/{SECRET}/@v/v1.0.0.info");
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = request(listen, "GET", &secret, &[]).expect("GET through the agent");
        if r.status != 502 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not pick up the renewed certificate:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        r.text(),
        "modgate: agent-7 may not read corp.example.com/secret@v1.0.0 (.info): no role grants \
         access to private route \"corp\" (rule private-default)\n"
    );
    let r = request(listen, "GET", &info, &[]).expect("GET through the agent");
    assert_eq!(r.status, 200, "{}", r.text());
    drop(agent);

    // Without --ca the agent does not trust the gateway's certificate, and says what to pass.
    let listen = free_addr();
    let agent = start_agent_to(&gateway, None, dir.path(), listen);
    let r = request(listen, "GET", &info, &[]).expect("GET through the agent");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        r.text(),
        format!(
            "modgate agent: the gateway at {gateway} presented a certificate the agent does not \
             trust: UnknownIssuer (pass --ca with the CA that issued it)\n"
        )
    );
    drop(agent);

    // Nothing listens at the gateway's address.
    let closed = format!("https://127.0.0.1:{}", free_port());
    let listen = free_addr();
    let agent = start_agent_to(&closed, Some(&w.pki.path("root.pem")), dir.path(), listen);
    let r = request(listen, "GET", &info, &[]).expect("GET through the agent");
    assert_eq!(
        (r.status, r.text()),
        (
            502,
            format!(
                "modgate agent: cannot connect to the gateway at {closed}: connection refused\n"
            )
        ),
        "{}",
        agent.log()
    );
    // HEAD gets the status alone.
    let r = request(listen, "HEAD", &info, &[]).expect("HEAD through the agent");
    assert_eq!((r.status, r.text()), (502, String::new()));
}

/// A `traceparent` with a fixed trace id and parent span id.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

/// One denied request gives exactly one `modgate.deny` span in the client's trace; an
/// allowed request gives none, and its traceparent reaches the upstream.
async fn deny_span_is_exported(protocol: &str, endpoint: impl Fn(&OtlpReceiver) -> String) {
    let receiver = OtlpReceiver::start();
    let extra = format!(
        "telemetry:\n  otlp_endpoint: \"{}\"\n  otlp_protocol: {protocol}\n  sample_ratio: 0.0\n",
        endpoint(&receiver)
    );
    let mut w = world("", &extra).await;

    // An allowed request first: had it made a span, that span would be exported no later
    // than the deny span below.
    let allowed_tp = traceparent("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let r = w.get_with(
        &ALICE,
        "/corp.example.com/open/@v/list",
        &[("traceparent", &allowed_tp)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = w.corp.requests();
    let upstream = seen.last().expect("the upstream saw the allowed request");
    assert_eq!(upstream.header("traceparent"), Some(allowed_tp.as_str()));

    let tp = traceparent(TRACE_ID, CLIENT_SPAN);
    let ci = Who::Bearer(CI_TOKEN);
    let r = w.get_with(
        &ci,
        "/corp.example.com/crypto/@v/v1.5.0.zip",
        &[("traceparent", &tp)],
    );
    assert_eq!(r.status, 403, "{}", r.text());

    let spans = receiver.wait_for_spans(1, Duration::from_secs(20));
    assert_eq!(spans.len(), 1, "{spans:#?}\n{}", w.gateway.log());
    let s = &spans[0];
    check_deny_span(s);
    assert_eq!(
        s.transport,
        if protocol == "grpc" { "grpc" } else { "http" }
    );

    // Another allowed request, then a clean stop, which exports whatever is still queued:
    // still exactly the one span.
    let r = w.get_with(
        &ALICE,
        "/corp.example.com/open/@v/v1.0.0.mod",
        &[("traceparent", &allowed_tp)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    w.gateway.signal("TERM");
    assert_eq!(
        w.gateway.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        w.gateway.log()
    );
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert!(receiver.requests().iter().all(|r| r.span_count <= 1));
}

fn check_deny_span(s: &ReceivedSpan) {
    assert_eq!(s.name, "modgate.deny");
    assert_eq!(s.trace_id, TRACE_ID);
    assert_eq!(s.parent_span_id, CLIENT_SPAN, "child of the client's span");
    assert_ne!(s.span_id, CLIENT_SPAN);
    assert_eq!(s.kind, 2, "a server span");
    assert_eq!(s.status_code, 2, "status error");
    assert_eq!(
        s.status_message,
        "denied by rule \"crypto-old-zips\" of role \"devs\""
    );
    let a = &s.attributes;
    let want = [
        ("modgate.identity.name", "ci-bot"),
        ("modgate.identity.source", "token"),
        ("modgate.roles", "devs"),
        ("modgate.module", CRYPTO),
        ("modgate.version", "v1.5.0"),
        ("modgate.kind", "zip"),
        ("modgate.route", "corp"),
        ("modgate.rule", "crypto-old-zips"),
        ("modgate.decision", "deny"),
        ("modgate.listener", "plain"),
        ("http.response.status_code", "403"),
        ("http.request.method", "GET"),
        ("url.path", "/corp.example.com/crypto/@v/v1.5.0.zip"),
        (
            "modgate.reason",
            "denied by rule \"crypto-old-zips\" of role \"devs\"",
        ),
    ];
    for (k, v) in want {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k} in {a:#?}");
    }
    assert!(a["client.address"].starts_with("127.0.0.1:"), "{a:#?}");
    assert!(!a.contains_key("modgate.upstream"), "{a:#?}");
    for v in a.values() {
        assert!(!v.contains(CI_TOKEN), "a span attribute holds the token");
    }
    assert_eq!(
        s.resource.get("service.name").map(String::as_str),
        Some("modgate")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_span_over_otlp_http_protobuf() {
    deny_span_is_exported("http/protobuf", OtlpReceiver::http_endpoint).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_span_over_otlp_grpc() {
    deny_span_is_exported("grpc", OtlpReceiver::grpc_endpoint).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_collector_does_not_stop_the_gateway() {
    let extra = format!(
        "telemetry:\n  otlp_endpoint: \"http://127.0.0.1:{}\"\n  otlp_protocol: http/protobuf\n  \
         timeout: 500ms\n",
        free_port()
    );
    let w = world("", &extra).await;
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let r = w.get(&ALICE, "/corp.example.com/secret/@v/list");
        assert_eq!(r.status, 403, "{}", r.text());
        let r = w.get(&ALICE, "/corp.example.com/open/@v/list");
        assert_eq!(r.status, 200, "{}", r.text());
        let m = w.metrics();
        if counter(&m, "modgate_otel_spans_dropped_total", &[]) > 0.0 {
            assert_eq!(counter(&m, "modgate_otel_spans_exported_total", &[]), 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dropped spans counted:\n{m}\n{}",
            w.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_requests_put_modgate_between_the_client_and_the_upstream() {
    let receiver = OtlpReceiver::start();
    let extra = format!(
        "telemetry:\n  otlp_endpoint: \"{}\"\n  sample_ratio: 1.0\n",
        receiver.http_endpoint()
    );
    let mut w = world("", &extra).await;
    let tp = traceparent(TRACE_ID, CLIENT_SPAN);

    // Allowed: one modgate.request span, child of the client's; the upstream is told that
    // span is its parent.
    let r = w.get_with(
        &ALICE,
        "/corp.example.com/open/@v/list",
        &[("traceparent", &tp)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let upstream_tp = w
        .corp
        .requests()
        .last()
        .and_then(|r| r.header("traceparent").map(str::to_string))
        .expect("traceparent upstream");
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream_tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE_ID, "01"));
    assert_ne!(parts[2], CLIENT_SPAN);

    // Anonymous on a private route: 401, one request span and one deny span under it.
    let tp2 = traceparent("5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8");
    let r = w.get_with(
        &Who::Anonymous,
        "/corp.example.com/open/@v/list",
        &[("traceparent", &tp2)],
    );
    assert_eq!(r.status, 401, "{}", r.text());

    w.gateway.signal("TERM");
    assert_eq!(w.gateway.wait_exit(Duration::from_secs(20)), Some(0));
    let spans = receiver.wait_for_spans(3, Duration::from_secs(5));
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let find = |name: &str, trace: &str| -> ReceivedSpan {
        let found: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.name == name && s.trace_id == trace)
            .collect();
        assert_eq!(found.len(), 1, "{name} in {trace}: {spans:#?}");
        found[0].clone()
    };
    let allowed = find("modgate.request", TRACE_ID);
    assert_eq!(allowed.parent_span_id, CLIENT_SPAN);
    assert_eq!(
        allowed.span_id, parts[2],
        "the upstream's parent is modgate's span"
    );
    assert_eq!(allowed.attributes["modgate.decision"], "allow");
    assert_eq!(allowed.attributes["modgate.rule"], "corp-open");
    assert_eq!(allowed.attributes["modgate.upstream"], "corp");
    assert_eq!(allowed.attributes["http.response.status_code"], "200");

    let request = find("modgate.request", "5bf92f3577b34da6a3ce929d0e0e4737");
    let deny = find("modgate.deny", "5bf92f3577b34da6a3ce929d0e0e4737");
    assert_eq!(request.parent_span_id, "10f067aa0ba902b8");
    assert_eq!(deny.parent_span_id, request.span_id);
    for s in [&request, &deny] {
        assert_eq!(s.attributes["modgate.decision"], "unauthenticated");
        assert_eq!(s.attributes["modgate.identity.source"], "anonymous");
        assert_eq!(s.attributes["modgate.rule"], "private-default");
        assert_eq!(s.attributes["http.response.status_code"], "401");
    }
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn wait_for_lines(path: &Path, n: usize, gateway: &Gateway) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = audit_lines(path);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {} of {n} lines:\n{}",
            path.display(),
            lines.len(),
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_lines_record_every_decision_and_survive_rotation() {
    let mut w = world("", "audit:\n  output: audit.jsonl\n").await;
    let audit = w.dir().join("audit.jsonl");
    let tp = traceparent(TRACE_ID, CLIENT_SPAN);
    let ci = Who::Bearer(CI_TOKEN);

    // (who, path, status) in order; /healthz is not audited.
    let zip = "/corp.example.com/open/@v/v1.0.0.zip";
    let requests: Vec<(&Who, &str, u16)> = vec![
        (&ALICE, zip, 200),
        (&ALICE, "/corp.example.com/secret/@v/v1.0.0.info", 403),
        (&Who::Anonymous, "/corp.example.com/open/@v/list", 401),
        (
            &Who::Basic("alice", WRONG_PW),
            "/corp.example.com/open/@v/list",
            401,
        ),
        (&ci, "/corp.example.com/crypto/@v/v1.5.0.mod", 200),
        (&ALICE, "/Corp.example.com/open/@v/list", 400),
        (&Who::Anonymous, "/example.com/pub/@v/list", 200),
        (
            &Who::Basic("mallory", WRONG_PW),
            "/corp.example.com/open/@v/list",
            401,
        ),
        (
            &Who::Bearer(UNKNOWN_TOKEN),
            "/corp.example.com/open/@v/list",
            401,
        ),
    ];
    for (i, (who, path, status)) in requests.iter().enumerate() {
        let headers: &[(&str, &str)] = if i == 0 { &[("traceparent", &tp)] } else { &[] };
        let r = w.get_with(who, path, headers);
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        // Records are written in batches per worker thread, ordered per request, not across
        // requests: wait for this one before the next, so the file follows the sequence.
        wait_for_lines(&audit, i + 1, &w.gateway);
    }
    assert_eq!(w.get(&ALICE, "/healthz").status, 200);

    let lines = wait_for_lines(&audit, requests.len(), &w.gateway);
    assert_eq!(lines.len(), requests.len());
    for (line, (_, path, status)) in lines.iter().zip(&requests) {
        // One line per request, in order.
        assert_eq!(line["path"], *path, "{line}");
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["listener"], "plain");
        assert!(line["client_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")));
        assert!(
            is_hex(line["trace_id"].as_str().unwrap_or(""), 32),
            "{line}"
        );
        let ts = line["ts"].as_str().unwrap_or("");
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{line}");
        assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
        assert!(line["bytes"].as_u64().is_some_and(|b| b > 0), "{line}");
    }
    let field = |i: usize, k: &str| lines[i][k].clone();
    let s = |v: &str| serde_json::Value::String(v.into());

    // 0: alice's allowed zip, in the client's trace.
    let l = &lines[0];
    assert_eq!(l["trace_id"], TRACE_ID);
    assert_eq!(l["identity"]["source"], "basic");
    assert_eq!(l["identity"]["name"], "alice");
    assert_eq!(l["roles"], serde_json::json!(["devs"]));
    assert_eq!(l["decision"], "allow");
    assert_eq!(l["rule"], "corp-open");
    assert_eq!(l["module"], OPEN);
    assert_eq!(l["version"], "v1.0.0");
    assert_eq!(l["kind"], "zip");
    assert_eq!(l["route"], "corp");
    assert_eq!(l["upstream"], "corp");
    assert!(l.get("reason").is_none(), "{l}");
    let zip_len = ModuleVersion::new(OPEN, "v1.0.0")
        .expect("module")
        .zip()
        .expect("zip")
        .len() as u64;
    assert_eq!(l["bytes"], zip_len);

    // 1: alice refused by rule.
    assert_eq!(field(1, "decision"), s("deny"));
    assert_eq!(field(1, "rule"), s("corp-secret"));
    assert_eq!(
        field(1, "reason"),
        s("denied by rule \"corp-secret\" of role \"devs\"")
    );
    assert_eq!(field(1, "module"), s(SECRET));
    assert_eq!(field(1, "version"), s("v1.0.0"));
    assert_eq!(field(1, "kind"), s("info"));
    assert_eq!(field(1, "identity")["name"], "alice");
    assert!(lines[1].get("upstream").is_none(), "{}", lines[1]);

    // 2: anonymous on a private route: unauthenticated, with the rule that refused it.
    assert_eq!(field(2, "decision"), s("unauthenticated"));
    assert_eq!(field(2, "identity")["source"], "anonymous");
    assert_eq!(field(2, "identity")["name"], "anonymous");
    assert_eq!(field(2, "rule"), s("private-default"));
    assert_eq!(
        field(2, "reason"),
        s("no role grants access to private route \"corp\"")
    );
    assert_eq!(field(2, "kind"), s("list"));
    assert!(lines[2].get("version").is_none());

    // 3: a wrong password: unauthenticated before anything else was looked at, naming the
    // user the credentials were for (never the password).
    assert_eq!(field(3, "decision"), s("unauthenticated"));
    assert_eq!(field(3, "identity")["source"], "basic");
    assert_eq!(field(3, "identity")["name"], "alice");
    assert_eq!(
        field(3, "reason"),
        s("the credentials sent were not accepted")
    );
    assert!(lines[3].get("rule").is_none() && lines[3].get("module").is_none());
    assert_eq!(lines[3]["roles"], serde_json::json!([]));

    // 4: a bearer token.
    assert_eq!(field(4, "decision"), s("allow"));
    assert_eq!(field(4, "identity")["source"], "token");
    assert_eq!(field(4, "identity")["name"], "ci-bot");
    assert_eq!(field(4, "rule"), s("corp-crypto"));
    assert_eq!(field(4, "kind"), s("mod"));
    assert_eq!(field(4, "upstream"), s("corp"));
    // It came without a traceparent: the upstream still gets one, carrying the audit trace id.
    let sent = w
        .corp
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/crypto/@v/v1.5.0.mod"))
        .and_then(|r| r.header("traceparent").map(str::to_string))
        .expect("traceparent sent upstream");
    assert_eq!(
        sent.split('-').nth(1),
        lines[4]["trace_id"].as_str(),
        "{sent} vs {}",
        lines[4]
    );

    // 5: a bad path is an error of the request, never forwarded.
    assert_eq!(field(5, "decision"), s("error"));
    assert_eq!(field(5, "identity")["name"], "alice");
    assert!(field(5, "reason")
        .as_str()
        .is_some_and(|r| r.contains("invalid escaped module path")));
    assert!(lines[5].get("upstream").is_none() && lines[5].get("rule").is_none());

    // 6: anonymous on a public route: the public default.
    assert_eq!(field(6, "decision"), s("allow"));
    assert_eq!(field(6, "rule"), s("default"));
    assert_eq!(field(6, "route"), s("public"));
    assert_eq!(field(6, "upstream"), s("public"));

    // 7: an unknown user is named as well; 8: an unknown token is not (only that one came).
    assert_eq!(field(7, "decision"), s("unauthenticated"));
    assert_eq!(field(7, "identity")["source"], "basic");
    assert_eq!(field(7, "identity")["name"], "mallory");
    assert_eq!(field(8, "decision"), s("unauthenticated"));
    assert_eq!(field(8, "identity")["source"], "token");
    assert_eq!(field(8, "identity")["name"], "(unknown token)");

    let text = std::fs::read_to_string(&audit).expect("audit");
    for secret in [
        ALICE_PW,
        WRONG_PW,
        CI_TOKEN,
        UNKNOWN_TOKEN,
        &basic_b64("alice", ALICE_PW),
        &basic_b64("alice", WRONG_PW),
    ] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }

    // logrotate: rename, SIGHUP, and the next line starts a new file.
    let rotated = w.dir().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).expect("rename audit log");
    w.gateway.signal("HUP");
    wait_for_log(
        &w.gateway,
        &format!("audit log {} reopened", audit.display()),
    );
    let r = w.get(&ci, "/corp.example.com/crypto/v2/@v/v2.1.0.zip");
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = wait_for_lines(&audit, 1, &w.gateway);
    assert_eq!(fresh.len(), 1);
    assert_eq!(
        fresh[0]["path"],
        "/corp.example.com/crypto/v2/@v/v2.1.0.zip"
    );
    assert_eq!(fresh[0]["decision"], "allow");
    assert_eq!(audit_lines(&rotated).len(), requests.len());

    // A burst right before SIGTERM: every line is on disk once the process has exited.
    for _ in 0..5 {
        assert_eq!(w.get(&ALICE, "/corp.example.com/open/@v/list").status, 200);
    }
    w.gateway.signal("TERM");
    assert_eq!(
        w.gateway.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        w.gateway.log()
    );
    assert_eq!(audit_lines(&audit).len(), 1 + 5);
    assert_eq!(audit_lines(&rotated).len(), requests.len());
}

#[test]
fn explain_shows_roles_rules_and_decisions_for_user_token_and_cert() {
    // `explain` needs only the file: the upstreams are never contacted.
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(dir.path());
    write_credentials(dir.path());
    pki.client("agent", &ClientSpec::new("agent-3", 3).o("Corp"));
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        config_text(
            Listeners::free(),
            "",
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "",
        ),
    )
    .expect("write config");
    let explain = |args: &[&str]| -> String {
        let mut all = vec!["explain", "-c", config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let out = modgate(&all);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        // Exit 1 exactly when the policy denies (scripts can test a change with it).
        let denied = stdout.lines().any(|l| l.starts_with("decision: deny"));
        assert_eq!(
            out.status.code(),
            Some(i32::from(denied)),
            "modgate {all:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let has = |out: &str, line: &str| {
        assert!(
            out.lines().any(|l| l == line),
            "expected the line {line:?} in:\n{out}"
        );
    };

    let out = explain(&[&format!("{OPEN}@v1.0.0"), "--user", "alice"]);
    has(&out, "identity: alice (basic) user=alice groups=staff");
    has(&out, "role:     devs (member entry #1)");
    has(&out, "applies:  rule corp-open of role devs: allow");
    has(
        &out,
        "rule:     corp-open (allowed by rule \"corp-open\" of role \"devs\")",
    );
    has(&out, "decision: allow: forward along the chain");

    let out = explain(&[&format!("{SECRET}@v1.0.0"), "--user", "alice"]);
    has(&out, "applies:  rule corp-secret of role devs: deny");
    has(&out, &format!("decision: deny: 403 {ALICE_SECRET_ZIP_403}"));
    // alice's role holds rules for other modules: considered, and said not to apply.
    has(
        &out,
        "skipped:  rule corp-open of role devs: allow (not for this module, kind or version)",
    );

    // A token name: its groups come from the tokens file (ci → devs by group).
    let out = explain(&[&format!("{CRYPTO}@v1.5.0"), "--token-name", "ci-bot"]);
    has(&out, "identity: ci-bot (token) token=ci-bot groups=ci");
    has(&out, "role:     devs (member entry #2)");
    has(&out, "applies:  rule corp-crypto of role devs: allow");
    has(&out, "applies:  rule crypto-old-zips of role devs: deny");
    has(
        &out,
        "decision: deny: 403 modgate: ci-bot may not read corp.example.com/crypto@v1.5.0 (.zip): \
         denied by rule \"crypto-old-zips\" of role \"devs\"",
    );
    let out = explain(&[
        &format!("{CRYPTO}@v1.5.0"),
        "--kind",
        "mod",
        "--token-name",
        "ci-bot",
    ]);
    has(&out, "decision: allow: forward along the chain");

    // A certificate: the CN matches the agents role.
    let cert = pki.path("agent.pem");
    let cert = cert.to_str().expect("utf-8 path");
    let out = explain(&[&format!("{OPEN}@v1.0.0"), "--cert", cert]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("identity: agent-3 (certificate) dn=\"")),
        "{out}"
    );
    has(&out, "role:     agents (member entry #1)");
    has(&out, "decision: allow: forward along the chain");
    // The role it holds says nothing about the secret module.
    let out = explain(&[&format!("{SECRET}@v1.0.0"), "--cert", cert]);
    has(&out, "role:     agents (member entry #1)");
    assert!(!out.contains("applies:"), "{out}");
    has(
        &out,
        "decision: deny: 403 modgate: agent-3 may not read corp.example.com/secret@v1.0.0 (.zip): \
         no role \
         grants access to private route \"corp\" (rule private-default)",
    );

    // A user the file does not know is an error, not a guess.
    let out = modgate(&[
        "explain",
        "-c",
        config.to_str().expect("utf-8 path"),
        OPEN,
        "--user",
        "nobody",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("user \"nobody\" is not in the users file")
    );
}
