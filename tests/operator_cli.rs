//! The operator's helpers, with the real binary:
//!
//! - `modgate certs`: a CA valid about ten years and leaves valid a year (or `--days`), all from
//!   an hour before now (not rcgen's 1975–4096); several client certificates (`--client`) that
//!   chain to the one CA; a client issued later is signed by the CA in place, which stays byte
//!   for byte; a gateway requiring client certificates from that CA accepts both clients.
//! - `modgate passwd`: the password from standard input (never argv), one users-file line that
//!   a gateway started with it accepts for Basic credentials (groups included), names the file
//!   could not carry refused with exit 2.
//! - The exit-status policy where it changed: `run` that cannot start exits 2; `explain` of a
//!   request the gateway answers 400 exits 2, never 0; `run --upgrade` with no running gateway
//!   exits 2 at once, saying so.
//! - `modgate agent` instances each get their own default pid file.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use modgate_testkit::{
    curl, free_addr, modgate, modgate_bin, request, ClientSpec, FixtureProxy, Gateway, Issuer,
    ModuleVersion, Pki,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;

const DAY: i64 = 86_400;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn read_pem(path: &Path) -> Pem {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pem
}

/// (notBefore, notAfter) as Unix seconds.
fn window(c: &X509Certificate<'_>) -> (i64, i64) {
    (
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    )
}

/// Valid from about an hour before `t0` for `days` days (and the hour).
fn assert_window(what: &str, c: &X509Certificate<'_>, t0: i64, t1: i64, days: i64) {
    let (from, to) = window(c);
    assert!(
        from >= t0 - 3600 - 2 && from <= t1 - 3600 + 2,
        "{what}: notBefore {from} is not an hour before now ({t0}..{t1})"
    );
    assert_eq!(to - from, days * DAY + 3600, "{what}: validity");
}

/// Checks that `leaf` was issued and signed by `ca`, for client authentication.
fn assert_issued_by(what: &str, leaf: &X509Certificate<'_>, ca: &X509Certificate<'_>) {
    assert_eq!(
        leaf.issuer().as_raw(),
        ca.subject().as_raw(),
        "{what}: issuer is not the CA"
    );
    leaf.verify_signature(Some(ca.public_key()))
        .unwrap_or_else(|e| panic!("{what}: not signed by the CA: {e:?}"));
}

fn certs(dir: &Path, args: &[&str]) -> Output {
    let out = dir.display().to_string();
    let mut all = vec!["certs", "--out", out.as_str()];
    all.extend_from_slice(args);
    modgate(&all)
}

#[test]
fn certs_have_sane_validity_and_several_clients_share_one_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let t0 = now();
    let out = certs(d, &["--client", "alice", "--client", "bob"]);
    let t1 = now();
    assert!(out.status.success(), "{}", text(&out));
    for f in ["client-alice.pem", "client-alice.key", "client-bob.pem"] {
        assert!(text(&out).contains(&format!("wrote {}", d.join(f).display())));
    }

    let ca_pem = read_pem(&d.join("ca.pem"));
    let ca = ca_pem.parse_x509().expect("ca");
    assert!(ca.is_ca());
    assert_window("ca.pem", &ca, t0, t1, 3650);
    for f in [
        "server.pem",
        "client.pem",
        "client-alice.pem",
        "client-bob.pem",
    ] {
        let pem = read_pem(&d.join(f));
        let c = pem.parse_x509().expect(f);
        assert_window(f, &c, t0, t1, 365);
        assert_issued_by(f, &c, &ca);
        assert!(!c.is_ca(), "{f}");
    }
    let alice_pem = read_pem(&d.join("client-alice.pem"));
    let alice = alice_pem.parse_x509().expect("alice");
    assert_eq!(
        alice
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok()),
        Some("alice")
    );
    let eku = alice
        .extended_key_usage()
        .expect("eku")
        .expect("an extended key usage");
    assert!(eku.value.client_auth && !eku.value.server_auth);
    let key_mode = |f: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(d.join(f))
            .expect("key")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(key_mode("client-bob.key"), 0o600);

    // Later: another client, for 30 days. The CA (and what it already signed) stays.
    let before: Vec<Vec<u8>> = ["ca.pem", "ca.key", "client-alice.pem", "server.pem"]
        .iter()
        .map(|f| std::fs::read(d.join(f)).expect("read"))
        .collect();
    let t0 = now();
    let out = certs(
        d,
        &["--client", "carol", "--client", "alice", "--days", "30"],
    );
    let t1 = now();
    assert!(out.status.success(), "{}", text(&out));
    let written: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf-8")
        .lines()
        .collect();
    assert_eq!(
        written,
        [
            format!("wrote {}", d.join("client-carol.pem").display()),
            format!("wrote {}", d.join("client-carol.key").display()),
        ],
        "only carol is new"
    );
    let after: Vec<Vec<u8>> = ["ca.pem", "ca.key", "client-alice.pem", "server.pem"]
        .iter()
        .map(|f| std::fs::read(d.join(f)).expect("read"))
        .collect();
    assert_eq!(
        before, after,
        "the CA and the earlier certificates were replaced"
    );
    let carol_pem = read_pem(&d.join("client-carol.pem"));
    let carol = carol_pem.parse_x509().expect("carol");
    assert_window("client-carol.pem", &carol, t0, t1, 30);
    assert_issued_by("client-carol.pem", &carol, &ca);
    // The CA's subject key identifier is the new certificate's authority key identifier.
    let ski = ca
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
        .expect("the CA has a subject key identifier");
    let aki = carol
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })
        .expect("an authority key identifier");
    assert_eq!(ski, aki);

    // Nothing missing: nothing written, as before.
    let out = certs(d, &[]);
    assert!(out.status.success());
    assert!(
        text(&out).contains("certificates already present"),
        "{}",
        text(&out)
    );
    // A name that is not a file name, and a CA whose key is gone, are errors (exit 2).
    let out = certs(d, &["--client", "../evil"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("client name \"../evil\""),
        "{}",
        text(&out)
    );
    assert!(!d.join("client-..").exists() && !d.parent().expect("p").join("evil.pem").exists());
    std::fs::remove_file(d.join("ca.key")).expect("rm");
    let out = certs(d, &["--client", "dave"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("ca.pem but not ca.key"),
        "{}",
        text(&out)
    );

    // A gateway that requires certificates from this CA accepts each client.
    let (plain, tls) = (free_addr(), free_addr());
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}" }}
  - name: tls
    address: "{tls}"
    tls: {{ cert: {d}/server.pem, key: {d}/server.key, client_auth: required, client_ca: {d}/ca.pem }}
upstreams:
  up: {{ url: "http://127.0.0.1:9" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
"#,
        d = d.display()
    );
    let gw = Gateway::start(&config, plain);
    let url = format!("https://localhost:{}/healthz", tls.port());
    let resolve = format!("localhost:{}:127.0.0.1", tls.port());
    let ca_file = d.join("ca.pem").display().to_string();
    for who in ["alice", "carol"] {
        let cert = d.join(format!("client-{who}.pem")).display().to_string();
        let key = d.join(format!("client-{who}.key")).display().to_string();
        let r = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            &ca_file,
            "--cert",
            &cert,
            "--key",
            &key,
            &url,
        ]);
        assert_eq!(r.status, 200, "{who}: {r:?}\n{}", gw.log());
    }
    let r = curl(&["--resolve", &resolve, "--cacert", &ca_file, &url]);
    assert_ne!(r.status, 200, "no client certificate: {r:?}");
}

/// Runs `modgate passwd <args>` with `stdin` as its standard input.
fn passwd(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(modgate_bin())
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modgate passwd");
    // A refusal of the arguments exits before reading: a closed pipe is then expected.
    if let Err(e) = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
    {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().expect("wait")
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn passwd_writes_a_line_the_gateway_accepts() {
    const PW: &str = "correct horse: battery staple";
    let out = passwd(
        &["alice", "--groups", "staff,ops", "--cost", "4"],
        &format!("{PW}\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let line = line.trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    let fields: Vec<&str> = line.split(':').collect();
    assert_eq!(fields.len(), 3, "{line}");
    assert_eq!((fields[0], fields[2]), ("alice", "staff,ops"));
    assert!(fields[1].starts_with("$2b$04$"), "{line}");
    assert!(bcrypt::verify(PW, fields[1]).expect("bcrypt"));
    assert!(!line.contains(PW));
    // The password is a warning's subject (whitespace breaks .netrc), never its text.
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PW));
    let out = passwd(&["bob", "--cost", "4"], "bob-Pa55\n");
    assert!(out.status.success(), "{}", text(&out));
    let bob = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(bob.trim_end().split(':').count(), 2, "{bob}");

    // Refusals: exit 2, nothing on stdout.
    for (args, stdin, expect) in [
        (&["al:ice"][..], "pw\n", "contains ':'"),
        (&["#alice"][..], "pw\n", "comment"),
        (&["alice", "--groups", "a b"][..], "pw\n", "whitespace"),
        (&["alice", "--groups", "staff,"][..], "pw\n", "empty"),
        (&["alice"][..], "\n", "empty password"),
        (&["alice"][..], "pw\nmore\n", "more than one line"),
    ] {
        let out = passwd(args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(text(&out).contains(expect), "{args:?}: {}", text(&out));
    }
    // The password is not an argument.
    let out = passwd(&["alice", "hunter2"], "pw\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // A gateway reading that users file: alice (group staff) may read, bob may not, a wrong
    // password is refused.
    let upstream = FixtureProxy::start(&[ModuleVersion::new("example.com/m", "v1.0.0")
        .expect("module")
        .file("m.go", b"package m\n")])
    .await
    .expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("users");
    std::fs::write(&users, format!("# modgate passwd\n{line}\n{bob}")).expect("users");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}" }}
upstreams:
  up: {{ url: "{up}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
auth:
  users_file: users
access:
  default: deny
  roles:
    - name: staff
      members: [ {{ group: staff }} ]
      rules:
        - {{ id: read, allow: {{ prefix: example.com }} }}
"#,
        up = upstream.url()
    );
    let gw = Gateway::start_in(dir, &config, addr);
    let get = |auth: Option<String>| {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        request(addr, "GET", "/example.com/m/@v/list", &headers)
            .unwrap_or_else(|e| panic!("GET: {e}\n{}", gw.log()))
    };
    let r = get(Some(basic("alice", PW)));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.log());
    assert!(r.text().contains("v1.0.0"), "{}", r.text());
    assert_eq!(get(Some(basic("alice", "wrong"))).status, 401);
    assert_eq!(get(None).status, 401);
    let r = get(Some(basic("bob", "bob-Pa55")));
    assert_eq!(r.status, 403, "bob is known but not in staff: {}", r.text());
}

#[test]
fn run_that_cannot_start_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, "listeners: [").expect("write");
    let cfg = cfg.display().to_string();
    let out = modgate(&["run", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // `check` answers the same file with "no": 1.
    let out = modgate(&["check", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // A usage error is clap's 2.
    let out = modgate(&["check", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// `modgate explain --cert` judges the certificate as each listener that asks for client
/// certificates would (chain, validity, revocation), and exits 1 when every one refuses it.
#[test]
fn explain_cert_judges_the_certificate_like_the_listeners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pki = Pki::generate(dir.path());
    let corp = |cn: &str, serial: u64| ClientSpec::new(cn, serial).o("Example Corp");
    pki.client("good", &corp("good", 0x501));
    pki.client("old", &corp("old", 0x502).expired());
    pki.client("rex", &corp("rex", 0x503));
    pki.client("stranger", &corp("stranger", 0x504).issuer(Issuer::Other));
    pki.revoke(Issuer::Root, &[0x503]);
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n\
             \x20 - name: mtls\n\
             \x20   address: \"{}\"\n\
             \x20   tls: {{ cert: server.pem, key: server.key, client_auth: required, \
             client_ca: root.pem, crl: crl.pem }}\n\
             \x20 - {{ name: plain, address: \"{}\" }}\n\
             upstreams:\n  up: {{ url: \"http://127.0.0.1:9\" }}\n\
             routes:\n  - {{ name: all, match: {{ prefix: \"\" }}, chain: [up] }}\n",
            free_addr(),
            free_addr()
        ),
    )
    .expect("write config");
    let explain = |who: &str| {
        let cert = pki.path(&format!("{who}.pem"));
        modgate(&[
            "explain",
            "-c",
            &config.to_string_lossy(),
            "example.com/x@v1.0.0",
            "--cert",
            &cert.to_string_lossy(),
        ])
    };
    let out = explain("good");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(
            "listener: mtls (client_auth required): certificate accepted (chain, validity and \
             revocation check out)"
        ),
        "{}",
        text(&out)
    );
    for (who, reason) in [
        ("old", "expired"),
        ("rex", "revoked"),
        ("stranger", "unknown issuer"),
    ] {
        let out = explain(who);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{who}: {t}");
        assert!(
            t.contains(&format!(
                "listener: mtls (client_auth required): certificate refused: {reason}"
            )),
            "{who}: {t}"
        );
        assert!(
            t.contains("certificate: refused by every listener that asks for one"),
            "{t}"
        );
        // The policy part is still explained.
        assert!(t.contains("decision: allow"), "{t}");
    }
}

/// A minimal gateway.yaml listening on `addr`.
fn minimal(addr: std::net::SocketAddr) -> String {
    format!(
        "server: {{ grace_period: 1s, shutdown_timeout: 1s }}\nlisteners:\n  - {{ name: plain, \
         address: \"{addr}\" }}\nupstreams:\n  u: {{ url: \"http://127.0.0.1:9\" }}\nroutes:\n  \
         - {{ name: all, match: {{ prefix: \"\" }}, chain: [u] }}\n"
    )
}

/// A typo in the version is bad input (2), not "allowed" (0): a deploy script must not read
/// it as a yes.
#[test]
fn explain_of_a_malformed_request_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, minimal(free_addr())).expect("write");
    let cfg = cfg.display().to_string();
    let out = modgate(&["explain", "example.com/m@vbad", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("400"), "{}", text(&out));
    let out = modgate(&["explain", "example.com/m@v1.0.0", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `run --upgrade` with no gateway to take over from stops at once with status 2 and says why
/// (not Pingora's "Bootstrap failed on error: EAGAIN" with status 1 after seconds).
#[test]
fn run_upgrade_without_a_running_gateway_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("gateway.yaml");
    let yaml = minimal(free_addr()).replace(
        "server: {",
        &format!(
            "server: {{ pid_file: \"{0}/modgate.pid\", upgrade_sock: \"{0}/upgrade.sock\",",
            dir.path().display()
        ),
    );
    std::fs::write(&cfg, yaml).expect("write");
    let started = std::time::Instant::now();
    let out = modgate(&["run", "--upgrade", "-c", &cfg.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no running modgate to take the listening sockets over from"),
        "{}",
        text(&out)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// Two agents started without `--pid-file` each get their own, in the private per-user
/// directory.
#[test]
fn agents_get_their_own_default_pid_files() {
    let runtime = tempfile::tempdir().expect("tempdir");
    let certs = tempfile::tempdir().expect("tempdir");
    modgate_testkit::make_certs(certs.path(), "agent CA", "me");
    let start = |listen: std::net::SocketAddr| {
        Command::new(modgate_bin())
            .arg("agent")
            .args([
                "--gateway",
                "https://127.0.0.1:9",
                "--listen",
                &listen.to_string(),
            ])
            .arg("--cert")
            .arg(certs.path().join("client.pem"))
            .arg("--key")
            .arg(certs.path().join("client.key"))
            .env("XDG_RUNTIME_DIR", runtime.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent")
    };
    let (a, b) = (free_addr(), free_addr());
    let mut agents = [start(a), start(b)];
    let own = runtime.path().join("modgate");
    let pid_files = || -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(&own)
            .map(|d| {
                d.filter_map(|e| {
                    let p = e.ok()?.path();
                    let name = p.file_name()?.to_string_lossy().to_string();
                    name.ends_with(".pid").then(|| {
                        Some((name, std::fs::read_to_string(&p).ok()?.trim().to_string()))
                    })?
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while pid_files().len() < 2 {
        for c in agents.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("an agent exited ({status}); pid files: {:?}", pid_files());
            }
        }
        if std::time::Instant::now() > deadline {
            for c in agents.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            panic!("two agents did not write two pid files: {:?}", pid_files());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let files = pid_files();
    let mut pids: Vec<String> = files.iter().map(|(_, p)| p.clone()).collect();
    pids.sort();
    let mut expected: Vec<String> = agents.iter().map(|c| c.id().to_string()).collect();
    expected.sort();
    for c in agents.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(pids, expected, "{files:?}");
    assert!(
        files.iter().any(|(n, _)| n.contains(&a.port().to_string())),
        "{files:?}"
    );
}
