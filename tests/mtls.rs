//! Two-way TLS end to end, with the real `modgate` binary and a fixture upstream that records
//! every request it receives:
//!
//! - a matrix of listeners (`client_auth: required / optional / none`) × client certificates
//!   (valid, SPIFFE, intermediate chain, intermediate leaf alone, other organisation, other CA,
//!   expired, revoked by CRL, none) × HTTP/1.1 and HTTP/2, with the Rust client and a subset
//!   with curl: which handshakes are refused (and with which TLS alert), which requests get 200,
//!   401 or 403;
//! - the client-certificate headers an upstream receives (default and custom names, escaped PEM
//!   and base64 DER);
//! - spoofed identity headers from clients are never believed nor forwarded, and a trusted front
//!   proxy's forwarded certificate is believed only with `Verify: SUCCESS`;
//! - rotation under load: the server certificate and the CRL replaced and SIGHUP'd (or watched)
//!   while requests keep succeeding, broken replacements refused with the old material kept;
//! - `modgate check` on broken TLS material.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modgate_testkit::{
    curl, fingerprint_sha256, free_addr, modgate, request, ClientSpec, CurlResult, FixtureProxy,
    Gateway, Issuer, ModuleVersion, Pki, RecordedRequest, TlsClient, TlsClientError, TlsResponse,
};

const SERVER_NAME: &str = "localhost";
const PUBLIC_INFO: &str = "/example.com/pub/@v/v1.0.0.info";
const SECRET_INFO: &str = "/corp.example.com/secret/@v/v1.0.0.info";
const PARTNER_INFO: &str = "/partner.example.com/lib/@v/v1.0.0.info";

const ALICE_SERIAL: u64 = 0x0A_11CE;
const ALICE_DN: &str = "CN=alice,OU=dev,O=Example Corp";
const CI_SPIFFE: &str = "spiffe://corp.example/ci/runner";

/// The 401 body for an anonymous request of the private module.
const ANONYMOUS_DENIED: &str = "modgate: anonymous may not read \
    corp.example.com/secret@v1.0.0 (.info): no role grants access to private route \"corp\" \
    (rule private-default)\n";

// ---------------------------------------------------------------------------------------------
// Helpers

/// Waits until every address accepts TCP connections (the gateway's listeners start in
/// parallel; `Gateway::start_in` waits for one of them).
fn wait_listening(gw: &Gateway, addrs: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for addr in addrs {
        while TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{addr} never listened:\n{}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last `n` lines of the gateway's log, for failure messages.
fn log_tail(gw: &Gateway, n: usize) -> String {
    let log = gw.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `needle` occurs at least `count` times in the log.
fn wait_for_log(gw: &Gateway, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "log never showed {needle:?} {count} time(s):\n{}",
            log_tail(gw, 40)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client trusting the test root, presenting `<cert>.pem` / `<cert>.key` if given.
fn tls_client(pki: &Pki, cert: Option<&str>, h2: bool) -> TlsClient {
    let c = TlsClient::new(&pki.path("ca-bundle.pem"));
    let c = match cert {
        Some(name) => c.with_client_cert(
            &pki.path(&format!("{name}.pem")),
            &pki.path(&format!("{name}.key")),
        ),
        None => c,
    };
    c.http2(h2)
}

fn proto(h2: bool) -> &'static str {
    if h2 {
        "h2"
    } else {
        "h1"
    }
}

/// The first `CERTIFICATE` PEM block of a file, exactly as written.
fn first_pem_block(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read PEM");
    let end = "-----END CERTIFICATE-----\n";
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a PEM certificate");
    let stop = text[start..].find(end).expect("PEM end line") + start + end.len();
    text[start..stop].to_string()
}

/// The base64 body of a PEM block on one line: the certificate's DER in standard base64.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// nginx's `$ssl_client_escaped_cert` encoding, written independently of modgate's.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("percent escape"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Every value a recorded request carries for `name`.
fn values<'a>(r: &'a RecordedRequest, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Writes `dir/name` atomically (a watcher never sees half a file).
fn write_atomic(dir: &Path, name: &str, data: &[u8]) {
    let tmp = dir.join(format!(".{name}.mtls-tmp"));
    std::fs::write(&tmp, data).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

// ---------------------------------------------------------------------------------------------
// The world: one PKI, two fixture upstreams, one gateway with five listeners

/// Client certificates issued for the matrix: file stem → what it is.
fn issue_clients(pki: &mut Pki) -> BTreeMap<&'static str, Vec<u8>> {
    let mut ders = BTreeMap::new();
    let corp = |cn: &str, serial: u64| ClientSpec::new(cn, serial).o("Example Corp");
    ders.insert(
        "alice",
        pki.client(
            "alice",
            &corp("alice", ALICE_SERIAL)
                .ou("dev")
                .dns("alice.corp.example")
                .email("alice@corp.example"),
        ),
    );
    // A member through its SPIFFE ID, with no organisation.
    ders.insert(
        "ci",
        pki.client("ci", &ClientSpec::new("runner", 0x20).uri(CI_SPIFFE)),
    );
    // Issued by the intermediate: the .pem holds leaf + intermediate.
    ders.insert(
        "bob-chain",
        pki.client("bob-chain", &corp("bob", 0x30).issuer(Issuer::Intermediate)),
    );
    // The same leaf without its intermediate.
    std::fs::write(
        pki.path("bob-leaf.pem"),
        first_pem_block(&pki.path("bob-chain.pem")),
    )
    .expect("write bob-leaf.pem");
    std::fs::copy(pki.path("bob-chain.key"), pki.path("bob-leaf.key")).expect("copy key");
    // Verifies, but holds no role.
    ders.insert(
        "mallory",
        pki.client("mallory", &ClientSpec::new("mallory", 0x40).o("Other Org")),
    );
    // The right organisation from the wrong CA.
    ders.insert(
        "eve-other-ca",
        pki.client("eve-other-ca", &corp("eve", 0x50).issuer(Issuer::Other)),
    );
    ders.insert(
        "old-expired",
        pki.client("old-expired", &corp("old", 0x60).expired()),
    );
    ders.insert("rex-revoked", pki.client("rex-revoked", &corp("rex", 0x70)));
    pki.revoke(Issuer::Root, &[0x70]);
    ders
}

struct World {
    gw: Gateway,
    pki: Pki,
    ders: BTreeMap<&'static str, Vec<u8>>,
    /// Fingerprint of the server certificate the TLS listeners present.
    server_fp: String,
    /// Serves the public module; its upstream forwards verify / identity / cert / DN, so what
    /// anonymous clients send can be checked too.
    public: FixtureProxy,
    /// Serves the private modules of the `corp` and `partner` routes.
    corp: FixtureProxy,
    required: SocketAddr,
    optional: SocketAddr,
    none: SocketAddr,
    /// Like `required`, with `refuse_in: handshake`: refusals are TLS alerts.
    strict: SocketAddr,
    /// Plaintext, `trusted_proxies: 127.0.0.1/32` (a TLS-terminating proxy in front).
    edge: SocketAddr,
    /// Plaintext, nobody trusted.
    plain: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl World {
    fn start() -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let m = |p: &str| ModuleVersion::new(p, "v1.0.0").expect("module");
        let public = rt
            .block_on(FixtureProxy::start(&[m("example.com/pub")]))
            .expect("public fixture");
        let corp = rt
            .block_on(FixtureProxy::start(&[
                m("corp.example.com/secret"),
                m("partner.example.com/lib"),
            ]))
            .expect("corp fixture");
        // Behind the `private: true` routes `corp` and `partner`.
        corp.mark_private();

        let dir = tempfile::tempdir().expect("tempdir");
        let mut pki = Pki::generate(dir.path());
        let server_fp = pki.rotate_server();
        let ders = issue_clients(&mut pki);
        let (required, optional, none, edge, plain, strict) = (
            free_addr(),
            free_addr(),
            free_addr(),
            free_addr(),
            free_addr(),
            free_addr(),
        );
        let config = format!(
            r#"
audit: {{ output: "off" }}
listeners:
  - name: required
    address: "{required}"
    tls:
      cert: server.pem
      key: server.key
      client_auth: required
      # The intermediate is a trust anchor here: its leaf verifies even when sent alone.
      client_ca: [root.pem, intermediate.pem]
      crl: [crl.pem, intermediate-crl.pem]
      crl_scope: end-entity
      allow_unknown_revocation: false
  - name: strict
    address: "{strict}"
    tls:
      cert: server.pem
      key: server.key
      client_auth: required
      refuse_in: handshake
      client_ca: [root.pem, intermediate.pem]
      crl: [crl.pem, intermediate-crl.pem]
      crl_scope: end-entity
  - name: optional
    address: "{optional}"
    tls:
      cert: server.pem
      key: server.key
      client_auth: optional
      client_ca: root.pem
      crl: [crl.pem, intermediate-crl.pem]
  - name: none
    address: "{none}"
    tls: {{ cert: server.pem, key: server.key }}
  - name: edge
    address: "{edge}"
    trusted_proxies: ["127.0.0.1/32"]
  - name: plain
    address: "{plain}"
upstreams:
  # An in-house proxy for public modules: marked private (trusted with identities, which are
  # never sent to a public upstream), though it only ever serves the public route.
  public:
    url: "{public_url}"
    private: true
    forward_identity: {{ cert: escaped-pem, dn: true, verify: true, identity: true, roles: true }}
  corp:
    url: "{corp_url}"
    private: true
    forward_identity: {{ cert: escaped-pem, chain: true, dn: true, verify: true, sans: true, fingerprint: true, serial: true, identity: true, roles: true }}
  partner:
    url: "{corp_url}"
    private: true
    forward_identity:
      cert: base64-der
      chain: true
      dn: true
      verify: true
      sans: true
      fingerprint: true
      serial: true
      identity: true
      roles: true
      names:
        cert: X-Client-Cert
        chain: X-Client-Chain
        dn: X-Client-DN
        verify: X-Client-Verify
        sans: X-Client-SAN
        fingerprint: X-Client-Fingerprint
        serial: X-Client-Serial
        identity: X-Who
        roles: X-Groups
routes:
  - {{ name: corp, match: {{ prefix: corp.example.com }}, chain: [corp], private: true }}
  - {{ name: partner, match: {{ prefix: partner.example.com }}, chain: [partner], private: true }}
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
access:
  default: allow
  roles:
    - name: devs
      members: [ {{ o: "Example Corp" }}, {{ spiffe: "spiffe://corp.example/ci/*" }} ]
      rules:
        - {{ id: corp-read, allow: {{ prefix: corp.example.com }} }}
        - {{ id: partner-read, allow: {{ prefix: partner.example.com }} }}
"#,
            public_url = public.url(),
            corp_url = corp.url(),
        );
        let gw = Gateway::start_in(dir, &config, required);
        wait_listening(&gw, &[required, optional, none, edge, plain, strict]);
        World {
            gw,
            pki,
            ders,
            server_fp,
            public,
            corp,
            required,
            optional,
            none,
            strict,
            edge,
            plain,
            _rt: rt,
        }
    }

    fn listener(&self, name: &str) -> SocketAddr {
        match name {
            "required" => self.required,
            "optional" => self.optional,
            "none" => self.none,
            "strict" => self.strict,
            "edge" => self.edge,
            "plain" => self.plain,
            other => panic!("no listener {other}"),
        }
    }

    fn get(
        &self,
        listener: &str,
        cert: Option<&str>,
        h2: bool,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<TlsResponse, TlsClientError> {
        tls_client(&self.pki, cert, h2).get(self.listener(listener), SERVER_NAME, path, headers)
    }

    /// The last request the corp fixture received.
    fn last_corp(&self) -> RecordedRequest {
        self.corp
            .requests()
            .last()
            .cloned()
            .expect("the corp fixture saw a request")
    }

    fn last_public(&self) -> RecordedRequest {
        self.public
            .requests()
            .last()
            .cloned()
            .expect("the public fixture saw a request")
    }

    /// curl against a TLS listener, `localhost` pinned to 127.0.0.1. `proto` is `h1`, `h2` or
    /// `h2/tls1.2`.
    fn curl(&self, listener: &str, cert: Option<&str>, proto: &str, path: &str) -> CurlResult {
        let port = self.listener(listener).port();
        let mut args: Vec<String> = vec![
            "--cacert".into(),
            self.pki.path("ca-bundle.pem").display().to_string(),
            "--resolve".into(),
            format!("{SERVER_NAME}:{port}:127.0.0.1"),
        ];
        match proto {
            "h1" => args.push("--http1.1".into()),
            "h2" => args.push("--http2".into()),
            "h2/tls1.2" => args.extend(["--http2", "--tls-max", "1.2", "-v"].map(String::from)),
            other => panic!("proto {other}"),
        }
        if let Some(name) = cert {
            args.push("--cert".into());
            args.push(self.pki.path(&format!("{name}.pem")).display().to_string());
            args.push("--key".into());
            args.push(self.pki.path(&format!("{name}.key")).display().to_string());
        }
        args.push(format!("https://{SERVER_NAME}:{port}{path}"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs)
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The matrix

/// What a (listener, client) cell must do: `refused:<TLS alert>` (the handshake fails),
/// `403:<reason>` (the handshake completes and every request, health included, is refused with
/// a 403 whose body names the reason), or `<public status>/<private status>` for the public
/// module and the private `corp` module. Clients are file stems from [`issue_clients`], `-` for
/// no certificate. The `none` listener asks for no certificate, so every client is anonymous
/// there; `strict` is `required` with `refuse_in: handshake`.
#[rustfmt::skip]
const MATRIX: &[(&str, [&str; 4])] = &[
    //                  required                     optional                 none        strict
    ("alice",        ["200/200",                 "200/200",               "200/401", "200/200"]),
    ("ci",           ["200/200",                 "200/200",               "200/401", "200/200"]),
    ("bob-chain",    ["200/200",                 "200/200",               "200/401", "200/200"]),
    ("bob-leaf",     ["200/200",                 "403:not accepted: unknown issuer",    "200/401", "200/200"]),
    ("mallory",      ["200/403",                 "200/403",               "200/401", "200/403"]),
    ("eve-other-ca", ["403:not accepted: unknown issuer",      "403:not accepted: unknown issuer",    "200/401", "refused:UnknownCA"]),
    ("old-expired",  ["403:not accepted: expired",             "403:not accepted: expired",           "200/401", "refused:CertificateExpired"]),
    ("rex-revoked",  ["403:not accepted: revoked",             "403:not accepted: revoked",           "200/401", "refused:CertificateRevoked"]),
    ("-",            ["403:none was presented",  "200/401",               "200/401", "refused:CertificateRequired"]),
];
const LISTENERS: [&str; 4] = ["required", "optional", "none", "strict"];

/// Checks one response against the expected status; returns what was wrong.
fn check_response(
    w: &World,
    r: &Result<TlsResponse, TlsClientError>,
    want: u16,
    h2: bool,
    who: &str,
) -> Option<String> {
    let r = match r {
        Ok(r) => r,
        Err(e) => return Some(format!("expected {want}, got {e}")),
    };
    let version = if h2 { "HTTP/2" } else { "HTTP/1.1" };
    let mut wrong = Vec::new();
    if r.status != want {
        wrong.push(format!("status {} (body {:?})", r.status, r.text()));
    }
    if r.version != version {
        wrong.push(format!("version {}", r.version));
    }
    if r.server_cert_sha256 != w.server_fp {
        wrong.push("server presented an unexpected certificate".into());
    }
    match want {
        200 if !r.text().contains("\"Version\":\"v1.0.0\"") => {
            wrong.push(format!("body {:?}", r.text()))
        }
        401 => {
            if r.header("www-authenticate") != Some("Basic realm=\"modgate\"") {
                wrong.push(format!(
                    "www-authenticate {:?}",
                    r.header("www-authenticate")
                ));
            }
            if r.text() != ANONYMOUS_DENIED {
                wrong.push(format!("401 body {:?}", r.text()));
            }
        }
        403 => {
            let body = format!(
                "modgate: {who} may not read corp.example.com/secret@v1.0.0 (.info): no role \
                 grants access to private route \"corp\" (rule private-default)\n"
            );
            if r.text() != body {
                wrong.push(format!("403 body {:?}", r.text()));
            }
        }
        _ => {}
    }
    (!wrong.is_empty()).then(|| format!("expected {want}: {}", wrong.join("; ")))
}

#[test]
fn matrix_listeners_by_client_certificates_by_protocol() {
    let w = World::start();
    let mut failures = Vec::new();
    let mut private_ok = 0;
    for (client, expected) in MATRIX {
        let cert = (*client != "-").then_some(*client);
        for (listener, want) in LISTENERS.iter().zip(expected) {
            for h2 in [false, true] {
                let cell = format!("[{listener} × {client} × {}]", proto(h2));
                if let Some(alert) = want.strip_prefix("refused:") {
                    match w.get(listener, cert, h2, PUBLIC_INFO, &[]) {
                        Err(TlsClientError::Handshake(msg)) if msg.contains(alert) => {}
                        other => failures.push(format!(
                            "{cell}: expected the handshake refused with {alert}, got {}",
                            match other {
                                Ok(r) => format!("HTTP {} {:?}", r.status, r.text()),
                                Err(e) => e.to_string(),
                            }
                        )),
                    }
                    continue;
                }
                if let Some(reason) = want.strip_prefix("403:") {
                    // Refused over HTTP, whatever is asked (health included), with the reason.
                    for path in [PUBLIC_INFO, SECRET_INFO, "/healthz"] {
                        match w.get(listener, cert, h2, path, &[]) {
                            Ok(r)
                                if r.status == 403
                                    && r.text().contains(reason)
                                    && r.header("www-authenticate").is_none() => {}
                            other => failures.push(format!(
                                "{cell} {path}: expected 403 naming {reason:?}, got {}",
                                match other {
                                    Ok(r) => format!("HTTP {} {:?}", r.status, r.text()),
                                    Err(e) => e.to_string(),
                                }
                            )),
                        }
                    }
                    continue;
                }
                let (public, private) = want.split_once('/').expect("a/b");
                let public: u16 = public.parse().expect("status");
                let private: u16 = private.parse().expect("status");
                // A 403 names the certificate's CN; the one client denied (mallory) has its CN
                // as file stem.
                let who = *client;
                for (what, path, status) in [
                    ("public", PUBLIC_INFO, public),
                    ("private", SECRET_INFO, private),
                ] {
                    let r = w.get(listener, cert, h2, path, &[]);
                    if let Some(wrong) = check_response(&w, &r, status, h2, who) {
                        failures.push(format!("{cell} {what} {path}: {wrong}"));
                    }
                    if what == "private" && status == 200 {
                        private_ok += 1;
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} matrix cell(s) wrong:\n  {}\n--- modgate log (tail) ---\n{}",
        failures.len(),
        failures.join("\n  "),
        log_tail(&w.gw, 30)
    );
    // Only allowed private requests reached the private upstream.
    assert_eq!(
        w.corp.request_count(),
        private_ok,
        "{:?}",
        w.corp.requests()
    );
}

/// The same verdicts through curl (OpenSSL). A `refused:` is a TLS alert and no HTTP at all
/// (`refuse_in: handshake`); a `403:` is an answer curl prints, with the reason.
///
/// Refusals over HTTP/2 are checked with TLS 1.2 (`-v` shows the alert): with TLS 1.3 the
/// server's verdict on the client certificate arrives after curl considers the handshake done,
/// and curl's HTTP/2 code then often reports only that the connection went away (exit 55)
/// instead of the alert. Over HTTP/1.1, TLS 1.3 reports the alert reliably.
#[test]
fn matrix_subset_with_curl() {
    let w = World::start();
    // (listener, client or "-", protocol, path, "<status>" or "refused:<alert as OpenSSL says>")
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        ("required", "alice",        "h1",        SECRET_INFO, "200"),
        ("required", "alice",        "h2",        SECRET_INFO, "200"),
        ("required", "alice",        "h2/tls1.2", SECRET_INFO, "200"),
        ("required", "ci",           "h2",        SECRET_INFO, "200"),
        ("required", "bob-chain",    "h2",        SECRET_INFO, "200"),
        ("required", "bob-leaf",     "h1",        SECRET_INFO, "200"),
        ("required", "mallory",      "h2",        SECRET_INFO, "403"),
        ("required", "-",            "h1",        PUBLIC_INFO, "403:none was presented"),
        ("required", "-",            "h2",        PUBLIC_INFO, "403:none was presented"),
        ("required", "eve-other-ca", "h1",        PUBLIC_INFO, "403:not accepted: unknown issuer"),
        ("required", "eve-other-ca", "h2",        PUBLIC_INFO, "403:not accepted: unknown issuer"),
        ("required", "old-expired",  "h1",        PUBLIC_INFO, "403:not accepted: expired"),
        ("required", "old-expired",  "h2",        PUBLIC_INFO, "403:not accepted: expired"),
        ("required", "rex-revoked",  "h1",        PUBLIC_INFO, "403:not accepted: revoked"),
        ("required", "rex-revoked",  "h2",        PUBLIC_INFO, "403:not accepted: revoked"),
        ("strict",   "-",            "h1",        PUBLIC_INFO, "refused:certificate required"),
        ("strict",   "-",            "h2/tls1.2", PUBLIC_INFO, "refused:certificate required"),
        ("strict",   "eve-other-ca", "h1",        PUBLIC_INFO, "refused:unknown ca"),
        ("strict",   "eve-other-ca", "h2/tls1.2", PUBLIC_INFO, "refused:unknown ca"),
        ("strict",   "old-expired",  "h1",        PUBLIC_INFO, "refused:certificate expired"),
        ("strict",   "old-expired",  "h2/tls1.2", PUBLIC_INFO, "refused:certificate expired"),
        ("strict",   "rex-revoked",  "h1",        PUBLIC_INFO, "refused:certificate revoked"),
        ("strict",   "rex-revoked",  "h2/tls1.2", PUBLIC_INFO, "refused:certificate revoked"),
        ("optional", "-",            "h2",        PUBLIC_INFO, "200"),
        ("optional", "-",            "h1",        SECRET_INFO, "401"),
        ("optional", "bob-chain",    "h1",        SECRET_INFO, "200"),
        ("optional", "bob-leaf",     "h1",        PUBLIC_INFO, "403:not accepted: unknown issuer"),
        ("optional", "rex-revoked",  "h2",        PUBLIC_INFO, "403:not accepted: revoked"),
        ("none",     "alice",        "h2",        SECRET_INFO, "401"),
        ("none",     "old-expired",  "h1",        PUBLIC_INFO, "200"),
    ];
    let mut failures = Vec::new();
    for (listener, client, proto, path, want) in cases {
        let cert = (*client != "-").then_some(*client);
        let cell = format!("[curl {listener} × {client} × {proto}] {path}");
        let r = w.curl(listener, cert, proto, path);
        let ok = match (want.strip_prefix("refused:"), want.strip_prefix("403:")) {
            (Some(alert), _) => {
                r.status == 0
                    && r.http_version == "0"
                    && r.stderr.to_ascii_lowercase().contains(alert)
            }
            (None, Some(reason)) => {
                let version = if proto.starts_with("h2") { "2" } else { "1.1" };
                r.status == 403 && r.http_version == version && r.body.contains(reason)
            }
            (None, None) => {
                let version = if proto.starts_with("h2") { "2" } else { "1.1" };
                r.status.to_string() == *want && r.http_version == version
            }
        };
        if !ok {
            failures.push(format!("{cell}: expected {want}, got {r:?}"));
        }
        if *want == "401" && r.body != ANONYMOUS_DENIED {
            failures.push(format!("{cell}: 401 body {:?}", r.body));
        }
        if *want == "200" && !r.body.contains("\"Version\":\"v1.0.0\"") {
            failures.push(format!("{cell}: body {:?}", r.body));
        }
    }
    assert!(
        failures.is_empty(),
        "{} curl case(s) wrong:\n  {}\n--- modgate log (tail) ---\n{}",
        failures.len(),
        failures.join("\n  "),
        log_tail(&w.gw, 30)
    );
}

// ---------------------------------------------------------------------------------------------
// 2. What the upstream is told

/// The single value of `name` in a recorded request (it must occur exactly once).
fn one<'a>(r: &'a RecordedRequest, name: &str, what: &str) -> &'a str {
    let v = values(r, name);
    assert_eq!(
        v.len(),
        1,
        "{what}: {name} should arrive exactly once, got {v:?} in {r:#?}"
    );
    v[0]
}

fn absent(r: &RecordedRequest, names: &[&str], what: &str) {
    for name in names {
        assert!(
            values(r, name).is_empty(),
            "{what}: {name} must not reach the upstream: {r:#?}"
        );
    }
}

#[test]
fn upstream_receives_client_certificate_headers() {
    let w = World::start();
    let alice_pem = first_pem_block(&w.pki.path("alice.pem"));
    let alice_fp = fingerprint_sha256(&w.ders["alice"]);
    let intermediate_pem = first_pem_block(&w.pki.path("intermediate.pem"));
    let bob_pem = first_pem_block(&w.pki.path("bob-chain.pem"));

    for h2 in [false, true] {
        // A root-issued certificate on the required listener: every default header.
        let what = format!("alice over {}", proto(h2));
        let r = w
            .get("required", Some("alice"), h2, SECRET_INFO, &[])
            .expect("response");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = w.last_corp();
        assert_eq!(seen.path, SECRET_INFO);
        assert_eq!(one(&seen, "x-ssl-client-verify", &what), "SUCCESS");
        assert_eq!(one(&seen, "x-ssl-client-dn", &what), ALICE_DN);
        assert_eq!(one(&seen, "x-ssl-client-fingerprint", &what), alice_fp);
        assert_eq!(one(&seen, "x-ssl-client-serial", &what), "0A11CE");
        assert_eq!(
            one(&seen, "x-ssl-client-san", &what),
            "DNS:alice.corp.example, email:alice@corp.example"
        );
        // nginx's $ssl_client_escaped_cert: the PEM, URL-escaped.
        let cert = one(&seen, "x-ssl-client-cert", &what);
        assert_eq!(unescape(cert), alice_pem, "{what}: the leaf, as PEM");
        assert_eq!(cert, escape(&alice_pem), "{what}: escaped like nginx");
        assert!(
            cert.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
            "{cert}"
        );
        assert_eq!(one(&seen, "x-modgate-identity", &what), "certificate:alice");
        assert_eq!(one(&seen, "x-modgate-roles", &what), "devs");
        // A single certificate has no chain to send.
        absent(&seen, &["x-ssl-client-chain"], &what);

        // From the intermediate, with the chain, on a listener that trusts only the root.
        let what = format!("bob (chain) over {}", proto(h2));
        let r = w
            .get("optional", Some("bob-chain"), h2, SECRET_INFO, &[])
            .expect("response");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = w.last_corp();
        assert_eq!(unescape(one(&seen, "x-ssl-client-cert", &what)), bob_pem);
        assert_eq!(
            unescape(one(&seen, "x-ssl-client-chain", &what)),
            intermediate_pem,
            "{what}: the intermediate the client sent"
        );
        assert_eq!(
            one(&seen, "x-ssl-client-dn", &what),
            "CN=bob,O=Example Corp"
        );
        assert_eq!(one(&seen, "x-ssl-client-serial", &what), "30");
        assert_eq!(
            one(&seen, "x-ssl-client-fingerprint", &what),
            fingerprint_sha256(&w.ders["bob-chain"])
        );
        assert_eq!(one(&seen, "x-modgate-identity", &what), "certificate:bob");
        absent(&seen, &["x-ssl-client-san"], &what);

        // The same leaf sent alone (the intermediate is an anchor there): no chain header.
        let what = format!("bob (leaf only) over {}", proto(h2));
        let r = w
            .get("required", Some("bob-leaf"), h2, SECRET_INFO, &[])
            .expect("response");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = w.last_corp();
        assert_eq!(unescape(one(&seen, "x-ssl-client-cert", &what)), bob_pem);
        absent(&seen, &["x-ssl-client-chain"], &what);

        // A member through its SPIFFE ID: that is its name.
        let what = format!("ci over {}", proto(h2));
        let r = w
            .get("required", Some("ci"), h2, SECRET_INFO, &[])
            .expect("response");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = w.last_corp();
        assert_eq!(
            one(&seen, "x-modgate-identity", &what),
            format!("certificate:{CI_SPIFFE}")
        );
        assert_eq!(
            one(&seen, "x-ssl-client-san", &what),
            format!("URI:{CI_SPIFFE}")
        );
        assert_eq!(one(&seen, "x-ssl-client-dn", &what), "CN=runner");
        assert_eq!(one(&seen, "x-modgate-roles", &what), "devs");

        // Custom header names and base64 DER on the partner upstream.
        let what = format!("partner names, bob (chain) over {}", proto(h2));
        let r = w
            .get("optional", Some("bob-chain"), h2, PARTNER_INFO, &[])
            .expect("response");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = w.last_corp();
        assert_eq!(seen.path, PARTNER_INFO);
        assert_eq!(one(&seen, "X-Client-Verify", &what), "SUCCESS");
        assert_eq!(one(&seen, "X-Client-DN", &what), "CN=bob,O=Example Corp");
        assert_eq!(one(&seen, "X-Client-Cert", &what), pem_body(&bob_pem));
        assert_eq!(
            one(&seen, "X-Client-Chain", &what),
            pem_body(&intermediate_pem)
        );
        assert_eq!(
            one(&seen, "X-Client-Fingerprint", &what),
            fingerprint_sha256(&w.ders["bob-chain"])
        );
        assert_eq!(one(&seen, "X-Client-Serial", &what), "30");
        assert_eq!(one(&seen, "X-Who", &what), "certificate:bob");
        assert_eq!(one(&seen, "X-Groups", &what), "devs");
        absent(
            &seen,
            &[
                "x-ssl-client-cert",
                "x-ssl-client-chain",
                "x-ssl-client-dn",
                "x-ssl-client-verify",
                "x-ssl-client-fingerprint",
                "x-ssl-client-serial",
                "x-modgate-identity",
                "x-modgate-roles",
                "X-Client-SAN",
            ],
            &what,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Spoofing

/// Every identity header a client might try, in odd case, each twice; `forged` is an escaped
/// PEM certificate of an identity the policy allows.
fn spoofed_headers(forged: &str) -> Vec<(&'static str, String)> {
    let evil_spiffe = "URI:spiffe://corp.example/ci/evil";
    vec![
        ("X-SSL-Client-Cert", forged.to_string()),
        ("x-ssl-CLIENT-cert", forged.to_string()),
        ("X-Ssl-Client-Verify", "SUCCESS".into()),
        ("X-SSL-CLIENT-VERIFY", "SUCCESS".into()),
        ("x-ssl-client-dn", "CN=root,O=Example Corp".into()),
        ("X-SSL-Client-DN", "CN=admin".into()),
        ("X-SSL-Client-Chain", forged.to_string()),
        ("x-SSL-client-chain", forged.to_string()),
        ("X-SSL-Client-SAN", "DNS:admin.corp.example".into()),
        ("x-ssl-client-san", evil_spiffe.into()),
        ("X-SSL-Client-Fingerprint", "00".repeat(32)),
        ("x-ssl-client-fingerprint", "ff".repeat(32)),
        ("X-SSL-Client-Serial", "01".into()),
        ("x-ssl-client-serial", "02".into()),
        ("X-SSL-Client-Whatever", "x".into()),
        ("X-Modgate-Identity", "certificate:admin".into()),
        ("x-MODGATE-identity", "forwarded:root".into()),
        ("X-Modgate-Roles", "admins".into()),
        ("x-modgate-roles", "devs".into()),
        // The partner upstream's custom names.
        ("X-Client-DN", "CN=partner-admin".into()),
        ("x-client-dn", "CN=partner-root".into()),
        ("X-Who", "certificate:admin".into()),
        ("X-Groups", "devs".into()),
    ]
}

fn as_refs<'a>(h: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Header names (lower case) a client sent that an upstream must never receive from it.
const NEVER_FROM_CLIENTS: &[&str] = &[
    "x-ssl-client-whatever",
    "x-client-dn",
    "x-client-cert",
    "x-client-verify",
    "x-who",
    "x-groups",
];

#[test]
fn spoofed_identity_headers_are_neither_believed_nor_forwarded() {
    let w = World::start();
    let alice_pem = first_pem_block(&w.pki.path("alice.pem"));
    let mallory_pem = first_pem_block(&w.pki.path("mallory.pem"));
    let spoof = spoofed_headers(&escape(&alice_pem));
    let spoof = as_refs(&spoof);

    for h2 in [false, true] {
        // A verified client: the upstream gets modgate's values, once each.
        let what = format!("mallory + spoofed headers over {}", proto(h2));
        let r = w
            .get("required", Some("mallory"), h2, PUBLIC_INFO, &spoof)
            .expect("response");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = w.last_public();
        assert_eq!(one(&seen, "x-ssl-client-verify", &what), "SUCCESS");
        assert_eq!(
            one(&seen, "x-ssl-client-dn", &what),
            "CN=mallory,O=Other Org"
        );
        assert_eq!(
            unescape(one(&seen, "x-ssl-client-cert", &what)),
            mallory_pem
        );
        assert_eq!(
            one(&seen, "x-modgate-identity", &what),
            "certificate:mallory"
        );
        // The public upstream is not told about SANs, chains, fingerprints or serials, and
        // mallory holds no role.
        absent(
            &seen,
            &[
                "x-ssl-client-chain",
                "x-ssl-client-san",
                "x-ssl-client-fingerprint",
                "x-ssl-client-serial",
                "x-modgate-roles",
            ],
            &what,
        );
        absent(&seen, NEVER_FROM_CLIENTS, &what);
        // ... and the forged identity does not open the private module.
        let r = w
            .get("required", Some("mallory"), h2, SECRET_INFO, &spoof)
            .expect("response");
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert!(
            r.text().starts_with("modgate: mallory may not read"),
            "{}",
            r.text()
        );

        // An allowed client with spoofed headers: its own identity, once each.
        let what = format!("alice + spoofed headers over {}", proto(h2));
        let r = w
            .get("required", Some("alice"), h2, SECRET_INFO, &spoof)
            .expect("response");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = w.last_corp();
        assert_eq!(one(&seen, "x-ssl-client-verify", &what), "SUCCESS");
        assert_eq!(one(&seen, "x-ssl-client-dn", &what), ALICE_DN);
        assert_eq!(
            one(&seen, "x-ssl-client-fingerprint", &what),
            fingerprint_sha256(&w.ders["alice"])
        );
        assert_eq!(one(&seen, "x-ssl-client-serial", &what), "0A11CE");
        assert_eq!(
            one(&seen, "x-ssl-client-san", &what),
            "DNS:alice.corp.example, email:alice@corp.example"
        );
        assert_eq!(unescape(one(&seen, "x-ssl-client-cert", &what)), alice_pem);
        assert_eq!(one(&seen, "x-modgate-identity", &what), "certificate:alice");
        assert_eq!(one(&seen, "x-modgate-roles", &what), "devs");
        absent(&seen, &["x-ssl-client-chain"], &what);
        absent(&seen, NEVER_FROM_CLIENTS, &what);

        // Anonymous with spoofed headers: NONE and anonymous, nothing else.
        let what = format!("anonymous + spoofed headers over {}", proto(h2));
        let r = w
            .get("optional", None, h2, PUBLIC_INFO, &spoof)
            .expect("response");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let seen = w.last_public();
        assert_eq!(one(&seen, "x-ssl-client-verify", &what), "NONE");
        assert_eq!(
            one(&seen, "x-modgate-identity", &what),
            "anonymous:anonymous"
        );
        absent(
            &seen,
            &[
                "x-ssl-client-cert",
                "x-ssl-client-chain",
                "x-ssl-client-dn",
                "x-ssl-client-san",
                "x-ssl-client-fingerprint",
                "x-ssl-client-serial",
                "x-modgate-roles",
            ],
            &what,
        );
        absent(&seen, NEVER_FROM_CLIENTS, &what);

        // A forged certificate of an allowed identity from a peer nobody trusts: 401.
        let before = w.corp.request_count();
        for (listener, path) in [
            ("optional", SECRET_INFO),
            ("none", SECRET_INFO),
            ("optional", PARTNER_INFO),
        ] {
            let r = w.get(listener, None, h2, path, &spoof).expect("response");
            assert_eq!(r.status, 401, "{what} on {listener} {path}: {}", r.text());
        }
        assert_eq!(w.corp.request_count(), before, "{:?}", w.corp.requests());
    }

    // The same from an untrusted plaintext peer, over HTTP/1.1 (raw) and HTTP/2 (h2c).
    let before = w.corp.request_count();
    let r = request(w.plain, "GET", SECRET_INFO, &spoof).expect("response");
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.text(), ANONYMOUS_DENIED);
    let mut args = vec!["--http2-prior-knowledge".to_string()];
    for (k, v) in &spoof {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args.push(format!("http://{}{SECRET_INFO}", w.plain));
    let r = curl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((r.status, r.http_version.as_str()), (401, "2"), "{r:?}");
    assert_eq!(w.corp.request_count(), before, "{:?}", w.corp.requests());
}

#[test]
fn trusted_proxy_forwarded_certificate_is_believed_only_with_success() {
    let w = World::start();
    let alice_pem = first_pem_block(&w.pki.path("alice.pem"));
    let mallory_pem = first_pem_block(&w.pki.path("mallory.pem"));
    let old_pem = first_pem_block(&w.pki.path("old-expired.pem"));
    let alice_fp = fingerprint_sha256(&w.ders["alice"]);

    // Escaped PEM (nginx), verify SUCCESS: believed.
    let r = request(
        w.edge,
        "GET",
        SECRET_INFO,
        &[
            ("X-SSL-Client-Cert", &escape(&alice_pem)),
            ("X-SSL-Client-Verify", "SUCCESS"),
        ],
    )
    .expect("response");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), log_tail(&w.gw, 10));
    let what = "forwarded escaped PEM";
    let seen = w.last_corp();
    assert_eq!(one(&seen, "x-modgate-identity", what), "forwarded:alice");
    assert_eq!(one(&seen, "x-ssl-client-verify", what), "SUCCESS");
    assert_eq!(one(&seen, "x-ssl-client-dn", what), ALICE_DN);
    assert_eq!(one(&seen, "x-ssl-client-fingerprint", what), alice_fp);
    assert_eq!(unescape(one(&seen, "x-ssl-client-cert", what)), alice_pem);
    assert_eq!(one(&seen, "x-modgate-roles", what), "devs");

    // Base64 DER over h2c: believed too.
    let r = curl(&[
        "--http2-prior-knowledge",
        "-H",
        &format!("x-ssl-client-cert: {}", pem_body(&alice_pem)),
        "-H",
        "x-ssl-client-verify: SUCCESS",
        &format!("http://{}{SECRET_INFO}", w.edge),
    ]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "{r:?}");
    assert_eq!(
        one(&w.last_corp(), "x-modgate-identity", "base64 DER"),
        "forwarded:alice"
    );

    // Not vouched for: anonymous.
    let before = w.corp.request_count();
    let not_believed: &[(&str, Vec<(&str, String)>)] = &[
        (
            "verify FAILED",
            vec![
                ("X-SSL-Client-Cert", escape(&alice_pem)),
                (
                    "X-SSL-Client-Verify",
                    "FAILED:certificate has expired".into(),
                ),
            ],
        ),
        (
            "no verify header",
            vec![("X-SSL-Client-Cert", escape(&alice_pem))],
        ),
        (
            "verify NONE",
            vec![
                ("X-SSL-Client-Cert", escape(&alice_pem)),
                ("X-SSL-Client-Verify", "NONE".into()),
            ],
        ),
        (
            "SUCCESS without a certificate, identity headers instead",
            vec![
                ("X-SSL-Client-Verify", "SUCCESS".into()),
                ("X-SSL-Client-DN", ALICE_DN.into()),
                ("X-Modgate-Identity", "forwarded:alice".into()),
                ("X-Modgate-Roles", "devs".into()),
            ],
        ),
        (
            "a certificate that does not parse",
            vec![
                (
                    "X-SSL-Client-Cert",
                    "-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----%0A".into(),
                ),
                ("X-SSL-Client-Verify", "SUCCESS".into()),
            ],
        ),
        (
            // A proxy that appends its header after the client's: which one is the proxy's
            // is unknowable, so neither is believed.
            "two certificates",
            vec![
                ("X-SSL-Client-Cert", escape(&alice_pem)),
                ("X-SSL-Client-Cert", escape(&mallory_pem)),
                ("X-SSL-Client-Verify", "SUCCESS".into()),
            ],
        ),
        (
            "two verify results",
            vec![
                ("X-SSL-Client-Cert", escape(&alice_pem)),
                ("X-SSL-Client-Verify", "SUCCESS".into()),
                (
                    "X-SSL-Client-Verify",
                    "FAILED:unable to get issuer certificate".into(),
                ),
            ],
        ),
    ];
    for (case, headers) in not_believed {
        let r = request(w.edge, "GET", SECRET_INFO, &as_refs(headers)).expect("response");
        assert_eq!(r.status, 401, "{case}: {}", r.text());
        assert_eq!(r.text(), ANONYMOUS_DENIED, "{case}");
    }
    assert_eq!(w.corp.request_count(), before, "{:?}", w.corp.requests());

    // The proxy's failure is passed on as nginx would; the certificate is not.
    let r = request(
        w.edge,
        "GET",
        PUBLIC_INFO,
        &[
            ("X-SSL-Client-Cert", &escape(&old_pem)),
            ("X-SSL-Client-Verify", "FAILED:certificate has expired"),
        ],
    )
    .expect("response");
    assert_eq!(r.status, 200, "{}", r.text());
    let what = "forwarded FAILED";
    let seen = w.last_public();
    assert_eq!(
        one(&seen, "x-ssl-client-verify", what),
        "FAILED:certificate has expired"
    );
    assert_eq!(
        one(&seen, "x-modgate-identity", what),
        "anonymous:anonymous"
    );
    absent(&seen, &["x-ssl-client-cert", "x-ssl-client-dn"], what);

    // The same headers on a listener that does not trust its peer: nothing believed, and
    // the verify result is modgate's own.
    let r = request(
        w.plain,
        "GET",
        PUBLIC_INFO,
        &[
            ("X-SSL-Client-Cert", &escape(&alice_pem)),
            ("X-SSL-Client-Verify", "FAILED:certificate has expired"),
        ],
    )
    .expect("response");
    assert_eq!(r.status, 200, "{}", r.text());
    let what = "untrusted FAILED";
    let seen = w.last_public();
    assert_eq!(one(&seen, "x-ssl-client-verify", what), "NONE");
    assert_eq!(
        one(&seen, "x-modgate-identity", what),
        "anonymous:anonymous"
    );
    absent(&seen, &["x-ssl-client-cert", "x-ssl-client-dn"], what);
}

// ---------------------------------------------------------------------------------------------
// 4. Rotation under load

/// One request of the background load.
struct Sample {
    started: Instant,
    h2: bool,
    result: Result<(u16, String), TlsClientError>,
}

/// Sequential requests, each on a new connection (a full handshake each), alternating
/// HTTP/1.1 and HTTP/2, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(client: TlsClient, addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            std::thread::spawn(move || {
                let mut h2 = false;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let result = client
                        .clone()
                        .http2(h2)
                        .get(addr, SERVER_NAME, PUBLIC_INFO, &[])
                        .map(|r| (r.status, r.server_cert_sha256));
                    samples.lock().expect("samples").push(Sample {
                        started,
                        h2,
                        result,
                    });
                    h2 = !h2;
                }
            })
        };
        Load {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.samples.lock().expect("samples").len()
    }

    /// Waits until `n` more requests have completed.
    fn wait_more(&self, n: usize) {
        let target = self.count() + n;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count() < target {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

/// A gateway with one required-mTLS listener (client CA: the root, CRL: the root's) in front
/// of a public fixture; `watch` is the listener's `tls.watch` (none: SIGHUP only).
struct RotationWorld {
    gw: Gateway,
    pki: Pki,
    addr: SocketAddr,
    /// Fingerprint of the server certificate at start.
    fp0: String,
    _fixture: FixtureProxy,
    _rt: tokio::runtime::Runtime,
}

const CAROL_SERIAL: u64 = 0x200;

impl RotationWorld {
    fn start(watch: Option<&str>) -> RotationWorld {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let fixture = rt
            .block_on(FixtureProxy::start(&[ModuleVersion::new(
                "example.com/pub",
                "v1.0.0",
            )
            .expect("module")]))
            .expect("fixture");
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path());
        let fp0 = pki.rotate_server();
        let corp = |cn: &str, serial: u64| ClientSpec::new(cn, serial).o("Example Corp");
        pki.client("alice", &corp("alice", 0x100));
        pki.client("carol", &corp("carol", CAROL_SERIAL));
        let addr = free_addr();
        let watch = watch
            .map(|w| format!("\n      watch: {w}"))
            .unwrap_or_default();
        let config = format!(
            r#"
audit: {{ output: "off" }}
listeners:
  - name: rot
    address: "{addr}"
    tls:
      cert: server.pem
      key: server.key
      client_auth: required
      # Refusals here are checked as TLS alerts (the rotation is about what the handshake
      # consults); the HTTP refusal is covered by the matrix.
      refuse_in: handshake
      client_ca: root.pem
      crl: crl.pem{watch}
upstreams:
  public: {{ url: "{url}" }}
routes:
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
"#,
            url = fixture.url()
        );
        let gw = Gateway::start_in(dir, &config, addr);
        RotationWorld {
            gw,
            pki,
            addr,
            fp0,
            _fixture: fixture,
            _rt: rt,
        }
    }

    /// A new connection as `who` over HTTP/1.1: (status, server fingerprint).
    fn get(&self, who: &str, h2: bool) -> Result<(u16, String), TlsClientError> {
        tls_client(&self.pki, Some(who), h2)
            .get(self.addr, SERVER_NAME, PUBLIC_INFO, &[])
            .map(|r| (r.status, r.server_cert_sha256))
    }

    /// `who` gets 200 on new connections (h1 and h2) from the server certificate `fp`.
    fn assert_serves(&self, who: &str, fp: &str, when: &str) {
        for h2 in [false, true] {
            match self.get(who, h2) {
                Ok((200, got)) if got == fp => {}
                other => panic!(
                    "{when}: {who} over {}: expected 200 from {fp}, got {other:?}\n{}",
                    proto(h2),
                    log_tail(&self.gw, 20)
                ),
            }
        }
    }

    fn assert_refused(&self, who: &str, alert: &str, when: &str) {
        for h2 in [false, true] {
            match self.get(who, h2) {
                Err(TlsClientError::Handshake(msg)) if msg.contains(alert) => {}
                other => panic!(
                    "{when}: {who} over {}: expected the handshake refused with {alert}, got \
                     {other:?}",
                    proto(h2)
                ),
            }
        }
    }

    /// SIGHUP, then waits for the `n`th log line saying so.
    fn hup_and_wait(&self, needle: &str, n: usize) {
        self.gw.signal("HUP");
        wait_for_log(&self.gw, needle, n);
    }
}

const RELOADED_HUP: &str = "listener rot: TLS material reloaded (SIGHUP)";
const REFUSED_HUP: &str = "listener rot: new TLS material refused (SIGHUP)";

#[test]
fn rotation_under_load_with_sighup() {
    let mut w = RotationWorld::start(None);
    w.assert_serves("alice", &w.fp0, "at start");
    w.assert_serves("carol", &w.fp0, "at start");

    // Connections established before anything changes.
    let alice_session = tls_client(&w.pki, Some("alice"), true)
        .keepalive_session(w.addr, SERVER_NAME)
        .expect("alice session");
    let carol_session = tls_client(&w.pki, Some("carol"), true)
        .keepalive_session(w.addr, SERVER_NAME)
        .expect("carol session");
    for s in [&alice_session, &carol_session] {
        assert_eq!(s.get(PUBLIC_INFO, &[]).expect("session").status, 200);
        assert_eq!(s.server_cert_sha256(), w.fp0);
    }

    let load = Load::start(tls_client(&w.pki, Some("alice"), false), w.addr);
    load.wait_more(4);

    // (a) A new server certificate.
    let fp1 = w.pki.rotate_server();
    w.hup_and_wait(RELOADED_HUP, 1);
    let a_done = Instant::now();
    w.assert_serves("alice", &fp1, "after rotating the server certificate");
    w.assert_serves("carol", &fp1, "after rotating the server certificate");
    load.wait_more(4);

    // (b) Carol revoked: her new handshakes fail, everyone else carries on.
    w.pki.revoke(Issuer::Root, &[CAROL_SERIAL]);
    w.hup_and_wait(RELOADED_HUP, 2);
    w.assert_refused("carol", "CertificateRevoked", "after revoking carol");
    w.assert_serves("alice", &fp1, "after revoking carol");
    load.wait_more(4);

    // (c) Broken replacements are refused and the material in force stays.
    let dir = w.pki.dir.clone();
    let cases: [(&str, &str, Vec<u8>, &str); 3] = [
        (
            "garbage server certificate",
            "server.pem",
            b"this is not a certificate\n".to_vec(),
            "server.pem: no PEM certificate",
        ),
        (
            "a key that does not match",
            "server.key",
            std::fs::read(dir.join("intermediate.key")).expect("key"),
            "server.key: private key does not match the certificate",
        ),
        (
            "garbage CRL",
            "crl.pem",
            b"-----BEGIN X509 CRL-----\nnot base64!\n-----END X509 CRL-----\n".to_vec(),
            "crl.pem: bad PEM",
        ),
    ];
    for (i, (case, file, data, message)) in cases.into_iter().enumerate() {
        let good = std::fs::read(dir.join(file)).expect("read");
        write_atomic(&dir, file, &data);
        w.hup_and_wait(REFUSED_HUP, i + 1);
        let line =
            w.gw.log()
                .lines()
                .filter(|l| l.contains(REFUSED_HUP))
                .nth(i)
                .expect("refusal line")
                .to_string();
        assert!(line.contains(message), "{case}: {line}");
        w.assert_serves("alice", &fp1, case);
        w.assert_refused("carol", "CertificateRevoked", case);
        load.wait_more(4);
        write_atomic(&dir, file, &good);
    }

    // Fixed: the next reload goes through.
    let fp2 = w.pki.rotate_server();
    w.hup_and_wait(RELOADED_HUP, 3);
    w.assert_serves("alice", &fp2, "after the fix");
    w.assert_refused("carol", "CertificateRevoked", "after the fix");
    load.wait_more(4);
    let samples = load.stop();

    // Every request of the load succeeded, and it saw the certificates in order.
    let fps = [&w.fp0, &fp1, &fp2];
    let mut last = 0;
    let mut bad = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        match &s.result {
            Ok((200, fp)) => match fps.iter().position(|f| *f == fp) {
                Some(p) if p >= last => last = p,
                other => bad.push(format!(
                    "#{i} ({}): certificate {fp} out of order ({other:?}, after #{last})",
                    proto(s.h2)
                )),
            },
            other => bad.push(format!("#{i} ({}): {other:?}", proto(s.h2))),
        }
        if s.started > a_done && s.result.as_ref().is_ok_and(|(_, fp)| *fp == w.fp0) {
            bad.push(format!("#{i}: the old certificate after the reload"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} background requests wrong:\n  {}",
        bad.len(),
        samples.len(),
        bad.join("\n  ")
    );
    assert!(samples.len() >= 24, "only {} requests", samples.len());
    assert_eq!(last, 2, "the load reached the last certificate");

    // Established connections keep their handshake: alice's still sees the old server
    // certificate. But a revoked client certificate loses access at once, on a connection
    // opened before the revocation too (issue 8; tests/security.rs covers resumed sessions).
    let r = alice_session.get(PUBLIC_INFO, &[]).expect("old session");
    assert_eq!(r.status, 200, "alice's old session");
    assert_eq!(r.server_cert_sha256, w.fp0, "alice's old session");
    let r = carol_session.get(PUBLIC_INFO, &[]).expect("old session");
    assert_eq!(r.status, 403, "carol's old session: {}", r.text());
    assert!(
        r.text().contains("revoked"),
        "carol's old session: {}",
        r.text()
    );
}

#[test]
fn watched_files_are_reloaded_without_sighup() {
    let w = RotationWorld::start(Some("200ms"));
    w.assert_serves("alice", &w.fp0, "at start");

    let wait_for_cert = |fp: &str, when: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match w.get("alice", false) {
                Ok((200, got)) if got == fp => return,
                Ok((200, _)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                other => panic!("{when}: {other:?}\n{}", log_tail(&w.gw, 20)),
            }
        }
    };
    // The key and the certificate are replaced one after the other: a tick between the two
    // sees a mismatch and is refused, the next one loads the pair.
    let fp1 = w.pki.rotate_server();
    wait_for_cert(&fp1, "after rotating");
    assert!(
        w.gw.log()
            .contains("listener rot: TLS material reloaded (files changed)"),
        "{}",
        log_tail(&w.gw, 20)
    );

    // A broken certificate is refused; the rotated one stays in force.
    let dir = w.pki.dir.clone();
    let refused = "listener rot: new TLS material refused (files changed)";
    let before = w.gw.log().matches(refused).count();
    write_atomic(&dir, "server.pem", b"garbage\n");
    wait_for_log(&w.gw, refused, before + 1);
    w.assert_serves("alice", &fp1, "after a broken certificate");

    let fp2 = w.pki.rotate_server();
    wait_for_cert(&fp2, "after fixing");
    w.assert_serves("alice", &fp2, "after fixing");
}

// ---------------------------------------------------------------------------------------------
// 5. `modgate check` on broken TLS material

/// A config whose only listener has the `tls:` block given (file names relative to the config).
fn check_config(tls: &str) -> String {
    format!(
        "listeners:
  - name: mtls
    address: \"127.0.0.1:18443\"
    tls:
{tls}
upstreams:
  public: {{ url: \"http://127.0.0.1:9\" }}
routes:
  - {{ name: all, match: {{ prefix: \"\" }}, chain: [public] }}
"
    )
}

/// Runs `modgate check` on `yaml` in a directory with a fresh PKI (after `prepare`); it must
/// fail with status 1 and a first line `modgate: <file>:<line>:<col>: ...` holding `expect`.
fn check_fails(what: &str, yaml: &str, prepare: impl FnOnce(&Path), expect: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    Pki::generate(dir.path());
    prepare(dir.path());
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(&cfg, yaml).expect("write");
    let cfg_s = cfg.display().to_string();
    let out = modgate(&["check", &cfg_s]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    let first = err.lines().next().unwrap_or("");
    let rest = first
        .strip_prefix(&format!("modgate: {cfg_s}:"))
        .unwrap_or_else(|| panic!("{what}: not `modgate: {cfg_s}:...`: {err}"));
    let mut parts = rest.splitn(3, ':');
    let (line, col) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    assert!(
        line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
        "{what}: no line:column in {first}"
    );
    for e in expect {
        let e = e.replace("@DIR@", &dir.path().display().to_string());
        assert!(first.contains(&e), "{what}: expected {e:?} in: {first}");
    }
}

#[test]
fn check_refuses_broken_tls_material() {
    let base = "      cert: server.pem\n      key: server.key\n";
    check_fails(
        "required without client_ca",
        &check_config(&format!("{base}      client_auth: required")),
        |_| {},
        &[
            ":5:7: listeners[0].tls: ",
            "client_auth: required needs client_ca",
        ],
    );
    check_fails(
        "client_ca file missing",
        &check_config(&format!(
            "{base}      client_auth: required\n      client_ca: [root.pem, missing-ca.pem]"
        )),
        |_| {},
        &[":8:29: listeners[0].tls.client_ca[1]: @DIR@/missing-ca.pem: cannot read: No such file"],
    );
    check_fails(
        "garbage CRL",
        &check_config(&format!(
            "{base}      client_auth: required\n      client_ca: root.pem\n      crl: crl.pem"
        )),
        |d| std::fs::write(d.join("crl.pem"), "not a CRL at all\n").expect("write"),
        &[":5:7: listeners[0].tls: @DIR@/crl.pem: no CRL found"],
    );
    check_fails(
        "DER-looking garbage CRL",
        &check_config(&format!(
            "{base}      client_auth: optional\n      client_ca: root.pem\n      crl: [intermediate-crl.pem, crl.der]"
        )),
        |d| std::fs::write(d.join("crl.der"), [0x30, 0x03, 0x02, 0x01, 0x00]).expect("write"),
        &[":5:7: listeners[0].tls: @DIR@/crl.der: CRL is not usable"],
    );
    check_fails(
        "key that does not match",
        &check_config("      cert: server.pem\n      key: intermediate.key"),
        |_| {},
        &[
            ":5:7: listeners[0].tls: @DIR@/intermediate.key: private key does not match the \
           certificate in @DIR@/server.pem",
        ],
    );
    check_fails(
        "client CA that is not a certificate",
        &check_config(&format!(
            "{base}      client_auth: required\n      client_ca: root.key"
        )),
        |_| {},
        &[":8:18: listeners[0].tls.client_ca: @DIR@/root.key: no PEM certificate"],
    );
}
