//! End to end with the real `go` command and a fixture checksum database (a signed tree of
//! `go.sum` records with tlog tiles, served on 127.0.0.1): `go` verifies public modules against
//! the database *through modgate* (`<GOPROXY>/sumdb/<name>/...`), rejects a tampered module,
//! and a private module's name never reaches the database or any public upstream — a lookup
//! for it is answered 404 by modgate itself.

use std::net::SocketAddr;

use modgate_testkit::{curl, free_addr, FixtureProxy, Gateway, GoEnv, ModuleVersion, SumDb};

const NAME: &str = "sumdb.test";
const PUBLIC: &str = "example.com/Verified";
const TAMPERED: &str = "example.com/tampered";
const SECRET: &str = "corp.example.com/secret";

struct World {
    public: FixtureProxy,
    private: FixtureProxy,
    db: modgate_testkit::SumDbServer,
    _gateway: Gateway,
    addr: SocketAddr,
}

fn module(path: &str, version: &str) -> ModuleVersion {
    ModuleVersion::new(path, version).expect("fixture module")
}

async fn world() -> World {
    let verified = module(PUBLIC, "v1.0.0").file("v.go", b"package verified\n");
    let tampered = module(TAMPERED, "v1.0.0").file("t.go", b"package tampered\n");
    let secret = module(SECRET, "v1.0.0");

    // The database knows the real modules; the public upstream then serves a different zip for
    // `tampered` (as if re-tagged or poisoned).
    let mut db = SumDb::new(NAME);
    db.add(&verified);
    db.add(&tampered);
    let db = db.start();

    let public = FixtureProxy::start(&[verified])
        .await
        .expect("public fixture");
    let evil = module(TAMPERED, "v1.0.0").file("t.go", b"package tampered // evil\n");
    public.add(&evil).expect("tampered module");
    let private = FixtureProxy::start(&[secret])
        .await
        .expect("private fixture");
    private.mark_private();

    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}" }}
upstreams:
  public: {{ url: "{public}" }}
  corp: {{ url: "{private}", private: true }}
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true }}
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
access:
  default: allow
  roles:
    - {{ name: everyone, members: [any], rules: [{{ allow: {{ prefix: corp.example.com }} }}] }}
sumdb:
  {NAME}: {{ url: "{db}" }}
"#,
        public = public.url(),
        private = private.url(),
        db = db.url(),
    );
    let gateway = Gateway::start(&config, addr);
    World {
        public,
        private,
        db,
        _gateway: gateway,
        addr,
    }
}

/// A `go` environment that verifies against the fixture database through the gateway: only
/// the key is given, so `go` asks the proxy for `/sumdb/<name>/supported` and uses it.
fn verifying_env(w: &World) -> GoEnv {
    let mut env = GoEnv::new(&format!("http://{}", w.addr));
    env.set("GOSUMDB", &w.db.verifier_key());
    env.set("GONOSUMDB", "");
    env.set("GOPRIVATE", "");
    env
}

/// Neither the database nor the public upstream has ever seen the private module's name.
fn assert_private_path_never_left(w: &World) {
    for (who, paths) in [
        ("checksum database", w.db.paths()),
        (
            "public upstream",
            w.public.requests().into_iter().map(|r| r.path).collect(),
        ),
    ] {
        for p in paths {
            assert!(
                !p.to_ascii_lowercase().contains("corp.example.com"),
                "the {who} saw a private path: {p}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn go_verifies_public_modules_against_the_checksum_database_through_modgate() {
    let w = world().await;
    let env = verifying_env(&w);
    let run = env.go(&["mod", "download", "-json", &format!("{PUBLIC}@v1.0.0")]);
    run.expect_ok("go mod download of a module the database knows");
    let zip = module(PUBLIC, "v1.0.0")
        .file("v.go", b"package verified\n")
        .zip()
        .expect("zip");
    assert!(
        run.stdout().contains(&SumDb::zip_h1(&zip)),
        "go reported the database's hash: {}",
        run.stdout()
    );
    // go asked the database through modgate: supported (answered by modgate), then lookup
    // and tiles (proxied).
    let paths = w.db.paths();
    assert!(
        paths.iter().any(|p| p.starts_with("/lookup/example.com/")),
        "{paths:?}"
    );
    assert!(paths.iter().any(|p| p.starts_with("/tile/")), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.contains("supported")),
        "supported is modgate's own answer: {paths:?}"
    );
    // Proxied requests carry modgate's identity, not the client's.
    for r in w.db.requests() {
        assert!(r
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("modgate/")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_module_is_rejected_by_go() {
    let w = world().await;
    let env = verifying_env(&w);
    let run = env.go(&["mod", "download", &format!("{TAMPERED}@v1.0.0")]);
    assert!(
        !run.ok(),
        "a module whose zip differs from the database must fail"
    );
    let err = run.stderr();
    assert!(
        err.contains("SECURITY ERROR") && err.contains("checksum mismatch"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn private_lookups_never_leave_the_gateway() {
    let w = world().await;

    // Asked directly: a 404 from modgate with the reason, and nothing forwarded.
    let r = curl(&[&format!(
        "http://{}/sumdb/{NAME}/lookup/corp.example.com/secret@v1.0.0",
        w.addr
    )]);
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("private route"), "{r:?}");
    // Case-encoded spellings are decoded before the route is chosen.
    let r = curl(&[&format!(
        "http://{}/sumdb/{NAME}/lookup/corp.example.com/!secret@v1.0.0",
        w.addr
    )]);
    assert_eq!(r.status, 404, "{r:?}");

    // `go` without GONOSUMDB for the private module: the lookup is refused, so go fails —
    // safely, without the name leaving the intranet.
    let env = verifying_env(&w);
    let run = env.go(&["mod", "download", &format!("{SECRET}@v1.0.0")]);
    assert!(!run.ok(), "{}", run.stderr());
    assert!(run.stderr().contains("404"), "{}", run.stderr());

    // With GONOSUMDB (as a platform team configures it), the private module downloads.
    let mut env = verifying_env(&w);
    env.set("GONOSUMDB", "corp.example.com");
    env.go(&["mod", "download", &format!("{SECRET}@v1.0.0")])
        .expect_ok("private module with GONOSUMDB");
    assert!(w
        .private
        .requests()
        .iter()
        .any(|r| r.path == "/corp.example.com/secret/@v/v1.0.0.zip"));

    // And a public download in the same world: only public names reach the database.
    verifying_env(&w)
        .go(&["mod", "download", &format!("{PUBLIC}@v1.0.0")])
        .expect_ok("public module");
    assert_private_path_never_left(&w);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_databases_are_not_proxied() {
    let w = world().await;
    let r = curl(&[&format!("http://{}/sumdb/sum.golang.org/supported", w.addr)]);
    assert_eq!(r.status, 404, "{r:?}");
    let r = curl(&[&format!("http://{}/sumdb/{NAME}/supported", w.addr)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(w.db.paths().is_empty(), "{:?}", w.db.paths());
}
