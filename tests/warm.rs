//! `modgate warm` end to end: the real `modgate` binary warming module versions through a
//! running gateway in front of fixture upstreams that record what reaches them.
//!
//! - A real `go.sum` (the real `go` command, `go mod tidy` on a main module importing a small
//!   graph with an uppercase path, a `/v2` module, a pseudo-version and an `+incompatible`
//!   version): every `.info` and `.mod` it implies, and the `.zip` of exactly the versions with
//!   a source hash, reach the upstream through the gateway; versions listed only with `/go.mod`
//!   get no `.zip` request. Also the same through HTTPS (HTTP/2) with `--ca`, given the module
//!   directory and its `go.mod`.
//! - A module list naming a module that does not exist: exit status 1, and stderr names it
//!   with the 404 and the reason the gateway passed on; the other entries are still warmed.
//! - A private module denied by an `access:` rule: exit status 1 naming the 403 and
//!   modgate's one-line reason, with a bearer token (`--token-file`), basic credentials
//!   (`--netrc-user` + `$MODGATE_WARM_PASSWORD`) and a client certificate (`--cert/--key`);
//!   the private upstream never sees the denied module; without credentials it is a 401.
//! - Unusable input: exit status 2 with `file:line:` before anything is fetched.
//!
//! The `go` command fetches through a separate gateway, so the gateway under test has seen
//! none of the go.sum's modules and every request the fixture records afterwards came from
//! `modgate warm`, whatever the gateway caches.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use modgate_testkit::{
    fingerprint_sha256, free_addr, make_certs, modgate_bin, FixtureProxy, Gateway, GoEnv,
    ModuleVersion,
};

const APP: &str = "example.com/app";
const UPPER: &str = "example.com/Upper/lib";
const MAJOR: &str = "example.com/major/v2";
const PSEUDO: &str = "example.com/pseudo";
const PSEUDO_V: &str = "v0.0.0-20240315101112-abcdefabcdef";
const INCOMPAT: &str = "example.com/incompat";
const INCOMPAT_V: &str = "v3.0.0+incompatible";
const OPEN: &str = "corp.example.com/open";
const SECRET: &str = "corp.example.com/secret";

const CI_TOKEN: &str = "mgt_9f86d081884c7d659a2feaa0c55ad015";
const ALICE_PW: &str = "alice-Warm-5c1e77b0";

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
    ]
}

fn corp_modules() -> Vec<ModuleVersion> {
    let m = |p: &str, v: &str| ModuleVersion::new(p, v).expect("fixture module");
    vec![m(OPEN, "v1.0.0"), m(SECRET, "v1.0.0")]
}

/// A public and a private fixture upstream behind one modgate with a plain listener and a TLS
/// listener that asks for (but does not require) a client certificate.
struct World {
    public: FixtureProxy,
    corp: FixtureProxy,
    gateway: Gateway,
    plain: SocketAddr,
    tls: SocketAddr,
}

impl World {
    fn dir(&self) -> &Path {
        self.gateway.dir.path()
    }
    fn file(&self, name: &str) -> String {
        self.dir().join(name).to_string_lossy().into_owned()
    }
}

async fn world() -> World {
    let public = FixtureProxy::start(&public_modules())
        .await
        .expect("public fixture");
    let corp = FixtureProxy::start(&corp_modules())
        .await
        .expect("corp fixture");
    corp.mark_private();
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path(), "modgate warm test CA", "warm-client");
    std::fs::write(
        dir.path().join("users"),
        format!("alice:{}\n", bcrypt::hash(ALICE_PW, 4).expect("bcrypt")),
    )
    .expect("write users");
    std::fs::write(
        dir.path().join("tokens"),
        format!(
            "ci-bot:sha256:{}:ci\n",
            fingerprint_sha256(CI_TOKEN.as_bytes())
        ),
    )
    .expect("write tokens");
    std::fs::write(dir.path().join("ci.token"), format!("{CI_TOKEN}\n")).expect("token file");
    let plain = free_addr();
    let tls = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}" }}
  - name: tls
    address: "{tls}"
    tls: {{ cert: server.pem, key: server.key, client_auth: optional, client_ca: ca.pem }}
upstreams:
  public: {{ url: "{public_url}" }}
  corp: {{ url: "{corp_url}", private: true }}
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true }}
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
auth:
  users_file: users
  tokens_file: tokens
access:
  default: allow
  roles:
    - name: builders
      members: [ {{ user: alice }}, {{ group: ci }}, {{ cn: warm-client }} ]
      rules:
        - {{ id: corp-open, allow: {{ prefix: corp.example.com/open }} }}
        - {{ id: corp-secret, deny: {{ prefix: corp.example.com/secret }} }}
"#,
        public_url = public.url(),
        corp_url = corp.url(),
    );
    let gateway = Gateway::start_in(dir, &config, tls);
    World {
        public,
        corp,
        gateway,
        plain,
        tls,
    }
}

/// Runs `modgate warm <args>` with `$MODGATE_WARM_PASSWORD` set to `password` (or unset).
fn warm(args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = Command::new(modgate_bin());
    cmd.arg("warm")
        .args(args)
        .env_remove("MODGATE_WARM_PASSWORD");
    if let Some(pw) = password {
        cmd.env("MODGATE_WARM_PASSWORD", pw);
    }
    cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e} (build it first: cargo build -p modgate)",
            modgate_bin().display()
        )
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_exit(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// Go's `!`-case-encoding of a module path.
fn escape(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn paths_seen(f: &FixtureProxy) -> BTreeSet<String> {
    f.requests().into_iter().map(|r| r.path).collect()
}

/// A main module importing part of the fixture graph; `go mod tidy` writes its go.sum. `go` goes
/// through a gateway of its own in front of the same fixture (the fixture does not decode the
/// `%21` that `go` sends for `!`), so the gateway under test has seen none of it.
fn tidy_module(public: &FixtureProxy) -> GoEnv {
    let addr = free_addr();
    let _go_side = Gateway::start(
        &format!(
            "listeners: [ {{ name: plain, address: \"{addr}\" }} ]\n\
             upstreams: {{ public: {{ url: \"{}\" }} }}\n\
             routes: [ {{ name: all, match: {{ prefix: \"\" }}, chain: [public] }} ]\n",
            public.url()
        ),
        addr,
    );
    let env = GoEnv::new(&format!("http://{addr}"));
    env.write_main_module(&[(APP, "v1.0.0")]);
    std::fs::write(
        env.work().join("main.go"),
        "package main\n\nimport (\n\t\"example.com/app\"\n\tlib \"example.com/Upper/lib\"\n\t\
         major \"example.com/major/v2\"\n)\n\nfunc main() { println(app.Version, lib.Version, \
         major.Version) }\n",
    )
    .expect("write main.go");
    // `-compat=1.16` keeps what Go 1.16 needs to load the unpruned module graph: the go.mod
    // hashes of APP's requirements that `main.go` does not import (PSEUDO, INCOMPAT), which
    // the go.sum then lists with their `/go.mod` hash alone.
    env.go(&["mod", "tidy", "-compat=1.16"])
        .expect_ok("go mod tidy");
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn warms_every_file_a_real_go_sum_needs() {
    let w = world().await;
    let env = tidy_module(&w.public);
    let go_sum = env.work().join("go.sum");
    let text = std::fs::read_to_string(&go_sum).expect("go.sum");

    // What the go.sum asks for: .info and .mod for every version, .zip for those with a
    // source hash.
    let mut want = BTreeSet::new();
    let mut zips = BTreeSet::new();
    let mut mod_only = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (module, version) = (escape(f[0]), f[1]);
        let base = match version.strip_suffix("/go.mod") {
            Some(v) => format!("/{module}/@v/{v}"),
            None => {
                zips.insert(format!("/{module}/@v/{version}.zip"));
                format!("/{module}/@v/{version}")
            }
        };
        want.insert(format!("{base}.info"));
        want.insert(format!("{base}.mod"));
        mod_only.insert(format!("{base}.zip"));
    }
    let mod_only: BTreeSet<String> = mod_only.difference(&zips).cloned().collect();
    want.extend(zips.iter().cloned());
    assert!(
        zips.contains("/example.com/!upper/lib/@v/v1.1.0.zip")
            && zips.contains("/example.com/major/v2/@v/v2.1.0.zip"),
        "go.sum:\n{text}"
    );
    assert!(
        mod_only.contains(&format!("/{PSEUDO}/@v/{PSEUDO_V}.zip"))
            && mod_only.contains(&format!("/{INCOMPAT}/@v/{INCOMPAT_V}.zip")),
        "the go.sum has no /go.mod-only version:\n{text}\n{}",
        std::fs::read_to_string(env.work().join("go.mod")).unwrap_or_default()
    );

    w.public.clear_requests();
    let gateway = format!("http://{}", w.plain);
    let out = warm(&["--gateway", &gateway, &go_sum.to_string_lossy()], None);
    assert_exit(&out, 0, "warm go.sum");
    let seen = paths_seen(&w.public);
    let missing: Vec<&String> = want.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "never requested upstream: {missing:?}\n{}",
        w.gateway.log()
    );
    let unwanted: Vec<&String> = mod_only.intersection(&seen).collect();
    assert!(
        unwanted.is_empty(),
        ".zip of /go.mod-only versions fetched: {unwanted:?}"
    );
    assert!(
        seen.is_subset(&want),
        "extra requests: {:?}",
        seen.difference(&want)
    );
    let versions = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0], f[1].trim_end_matches("/go.mod")))
        })
        .collect::<BTreeSet<_>>()
        .len();
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{versions} of {versions} module version(s) warmed"
        )),
        "{err}"
    );
    assert!(!err.contains("failed:"), "{err}");

    // The module directory (its go.sum) and its go.mod over HTTPS, HTTP/2, verified with --ca.
    w.public.clear_requests();
    let gateway_tls = format!("https://localhost:{}", w.tls.port());
    let work = env.work().to_string_lossy().into_owned();
    let go_mod = env.work().join("go.mod").to_string_lossy().into_owned();
    let out = warm(
        &[
            "--gateway",
            &gateway_tls,
            "--ca",
            &w.file("ca.pem"),
            "--concurrency",
            "2",
            &work,
            "--go-mod",
            &go_mod,
        ],
        None,
    );
    assert_exit(&out, 0, "warm directory + go.mod over https");
    let seen = paths_seen(&w.public);
    assert!(seen.contains("/example.com/app/@v/v1.0.0.zip"), "{seen:?}");
    assert!(
        seen.contains("/example.com/!upper/lib/@v/v1.1.0.zip"),
        "{seen:?}"
    );

    // Without --ca the gateway's certificate does not verify: the first module version says
    // why, the others are not attempted, nothing reaches the upstream.
    w.public.clear_requests();
    let out = warm(
        &["--gateway", &gateway_tls, "--concurrency", "1", &work],
        None,
    );
    assert_exit(&out, 1, "https without --ca");
    let err = stderr(&out);
    assert!(
        err.contains("(.info): cannot connect to the gateway: TLSHandshakeFailure")
            && err.contains("invalid peer certificate")
            && err.contains("more not attempted: the gateway cannot be reached"),
        "{err}"
    );
    assert_eq!(w.public.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_module_fails_with_the_404_reason() {
    let w = world().await;
    let list = w.dir().join("modules.txt");
    std::fs::write(
        &list,
        format!(
            "# modules to warm\n{UPPER}@v1.1.0\nexample.com/missing@v1.0.0\n\
             {MAJOR}@v2.0.0/go.mod   # graph only\n{PSEUDO}@{PSEUDO_V}\n"
        ),
    )
    .expect("write list");
    for gateway in [
        format!("http://{}", w.plain),
        format!("https://localhost:{}", w.tls.port()),
    ] {
        w.public.clear_requests();
        let out = warm(
            &[
                "--gateway",
                &gateway,
                "--ca",
                &w.file("ca.pem"),
                &list.to_string_lossy(),
            ],
            None,
        );
        assert_exit(&out, 1, "warm with a missing module");
        let err = stderr(&out);
        let line = err
            .lines()
            .find(|l| l.contains("example.com/missing@v1.0.0"))
            .unwrap_or_else(|| panic!("missing module not named:\n{err}"));
        assert!(
            line.contains("example.com/missing@v1.0.0 (.info): 404 "),
            "{line}"
        );
        // The reason is the one line the gateway passed on from the upstream.
        assert!(
            line.contains("not found: /example.com/missing/@v/v1.0.0.info"),
            "{line}"
        );
        assert!(err.contains("3 of 4 module version(s) warmed"), "{err}");
        assert!(err.contains("1 failed:"), "{err}");
        let seen = paths_seen(&w.public);
        for p in [
            "/example.com/!upper/lib/@v/v1.1.0.zip",
            "/example.com/major/v2/@v/v2.0.0.mod",
            "/example.com/pseudo/@v/v0.0.0-20240315101112-abcdefabcdef.zip",
        ] {
            assert!(seen.contains(p), "{p} not requested: {seen:?}");
        }
        assert!(!seen.contains("/example.com/major/v2/@v/v2.0.0.zip"));
        // A version that does not exist: nothing after its .info.
        assert!(!seen.contains("/example.com/missing/@v/v1.0.0.mod"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_denied_private_module_fails_with_the_403_reason() {
    let w = world().await;
    let list = w.dir().join("corp.txt");
    std::fs::write(&list, format!("{OPEN}@v1.0.0\n{SECRET}@v1.0.0\n")).expect("write list");
    let list = list.to_string_lossy().into_owned();
    let plain = format!("http://{}", w.plain);
    let tls = format!("https://localhost:{}", w.tls.port());
    let (ca, token, cert, key) = (
        w.file("ca.pem"),
        w.file("ci.token"),
        w.file("client.pem"),
        w.file("client.key"),
    );

    let cases: Vec<(&str, Vec<&str>, Option<&str>)> = vec![
        (
            "bearer token",
            vec!["--gateway", &plain, "--token-file", &token, &list],
            None,
        ),
        (
            "basic credentials",
            vec!["--gateway", &plain, "--netrc-user", "alice", &list],
            Some(ALICE_PW),
        ),
        (
            "client certificate",
            vec![
                "--gateway",
                &tls,
                "--ca",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
                &list,
            ],
            None,
        ),
    ];
    for (what, args, password) in cases {
        w.corp.clear_requests();
        let out = warm(&args, password);
        assert_exit(&out, 1, what);
        let err = stderr(&out);
        let line = err
            .lines()
            .find(|l| l.contains("corp.example.com/secret@v1.0.0"))
            .unwrap_or_else(|| panic!("{what}: denied module not named:\n{err}"));
        assert!(
            line.contains("corp.example.com/secret@v1.0.0 (.info): 403 modgate: "),
            "{what}: {line}"
        );
        assert!(
            line.contains(
                "may not read corp.example.com/secret@v1.0.0 (.info): denied by rule \"corp-secret\""
            ),
            "{what}: {line}"
        );
        assert!(
            err.contains("1 of 2 module version(s) warmed"),
            "{what}: {err}"
        );
        let seen = paths_seen(&w.corp);
        assert!(
            seen.contains("/corp.example.com/open/@v/v1.0.0.zip"),
            "{what}: {seen:?}"
        );
        assert!(
            seen.iter().all(|p| !p.contains("secret")),
            "{what}: the private upstream saw a denied request: {seen:?}"
        );
    }

    // No credentials: the private route is closed to anonymous clients, which get a 401.
    let out = warm(&["--gateway", &plain, &list], None);
    assert_exit(&out, 1, "anonymous");
    let err = stderr(&out);
    assert!(
        err.contains("corp.example.com/secret@v1.0.0 (.info): 401 ")
            && err.contains("corp.example.com/open@v1.0.0 (.info): 401 "),
        "{err}"
    );

    // A wrong password is the same failure for every module version: after the first few
    // the run stops instead of printing it once per module.
    let many = w.dir().join("many.txt");
    let lines: String = (0..8)
        .map(|i| format!("example.com/m{i}@v1.0.0\n"))
        .collect();
    std::fs::write(&many, lines).expect("write list");
    w.public.clear_requests();
    let out = warm(
        &[
            "--gateway",
            &plain,
            "--concurrency",
            "1",
            "--netrc-user",
            "alice",
            &many.to_string_lossy(),
        ],
        Some("not-the-password"),
    );
    assert_exit(&out, 1, "wrong password");
    let err = stderr(&out);
    assert_eq!(
        err.matches("the credentials sent were not accepted")
            .count(),
        6,
        "five failures and the stop line:\n{err}"
    );
    assert!(
        err.contains(
            "... and 3 more not attempted: the first 5 module versions all failed with the same \
             reason (401 modgate: the credentials sent were not accepted)"
        ),
        "{err}"
    );
    assert_eq!(w.public.request_count(), 0);

    // --netrc-user without the password is a usage error, before anything is fetched.
    let out = warm(&["--gateway", &plain, "--netrc-user", "alice", &list], None);
    assert_exit(&out, 2, "no password");
    assert!(
        stderr(&out).contains("MODGATE_WARM_PASSWORD"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unusable_input_is_exit_2_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("modules.txt");
    std::fs::write(&list, "example.com/a@v1.0.0\nexample.com/b@master\n").expect("write");
    // Nothing listens there: the input is rejected before any connection is made.
    let gateway = format!("http://{}", free_addr());
    let out = warm(&["--gateway", &gateway, &list.to_string_lossy()], None);
    assert_exit(&out, 2, "bad list");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:2: example.com/b: version \"master\" invalid: not a semantic version",
            list.display()
        )),
        "{err}"
    );

    let go_sum = dir.path().join("go.sum");
    std::fs::write(
        &go_sum,
        "example.com/a v1.0.0 h1:abc=\nexample.com/a v1.0.0\n",
    )
    .expect("w");
    let out = warm(&["--gateway", &gateway, &go_sum.to_string_lossy()], None);
    assert_exit(&out, 2, "bad go.sum");
    assert!(
        stderr(&out).contains(&format!(
            "{}:2: wrong number of fields (2)",
            go_sum.display()
        )),
        "{}",
        stderr(&out)
    );

    let out = warm(&["--gateway", &gateway], None);
    assert_exit(&out, 2, "no input");
    assert!(stderr(&out).contains("nothing to warm"), "{}", stderr(&out));
}
