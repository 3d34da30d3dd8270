//! mgload against a tiny in-process TLS server (rustls, client certificates required, HTTP/2
//! and HTTP/1.1 by ALPN): with a client certificate it gets its answers over both protocols,
//! the paths round-robin and the statuses counted; without one the server refuses it and it
//! says so; given a certificate without its key (or with another's key) it refuses to start.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use modgate_testkit::{ClientSpec, Pki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Connections the test server accepts at most.
const MAX_CONNS: usize = 1000;
/// Requests one connection may carry.
const MAX_REQUESTS: usize = 100_000;

/// What the test server saw.
#[derive(Default)]
struct Seen {
    conns: AtomicU64,
    /// Connections whose client presented a certificate.
    with_cert: AtomicU64,
    /// (ALPN, path) -> requests.
    requests: Mutex<BTreeMap<(String, String), u64>>,
}

impl Seen {
    fn requests(&self) -> BTreeMap<(String, String), u64> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count(&self, alpn: &str, path: &str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((alpn.to_string(), path.to_string()))
            .or_insert(0) += 1;
    }
}

fn answer(path: &str) -> (u16, &'static [u8]) {
    if path.starts_with("/ok") {
        (200, b"ok\n")
    } else {
        (404, b"not found\n")
    }
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let mut r = std::io::BufReader::new(std::fs::File::open(path).expect("open cert"));
    rustls_pemfile::certs(&mut r)
        .collect::<Result<_, _>>()
        .expect("certs")
}

fn pem_key(path: &Path) -> PrivateKeyDer<'static> {
    let mut r = std::io::BufReader::new(std::fs::File::open(path).expect("open key"));
    rustls_pemfile::private_key(&mut r)
        .expect("key")
        .expect("a key")
}

/// Starts the server on 127.0.0.1 and returns its port.
async fn serve(pki: &Pki, seen: Arc<Seen>) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in pem_certs(&pki.path("root.pem")) {
        roots.add(c).expect("root");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pem_certs(&pki.path("server.pem")),
            pem_key(&pki.path("server.key")),
        )
        .expect("server cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNS {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            seen.conns.fetch_add(1, Ordering::SeqCst);
            // Small answers leave at once (no Nagle wait for the client's delayed ACK).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                if conn.peer_certificates().is_some_and(|c| !c.is_empty()) {
                    seen.with_cert.fetch_add(1, Ordering::SeqCst);
                }
                if conn.alpn_protocol() == Some(b"h2") {
                    serve_h2(tls, &seen).await;
                } else {
                    serve_h1(tls, &seen).await;
                }
            });
        }
    });
    port
}

async fn serve_h2<T: AsyncRead + AsyncWrite + Unpin>(io: T, seen: &Seen) {
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    for _ in 0..MAX_REQUESTS {
        let Some(Ok((req, mut respond))) = conn.accept().await else {
            return;
        };
        let path = req.uri().path().to_string();
        seen.count("h2", &path);
        let (status, body) = answer(&path);
        let resp = http::Response::builder()
            .status(status)
            .header("content-length", body.len())
            .body(())
            .expect("response");
        if let Ok(mut send) = respond.send_response(resp, false) {
            let _ = send.send_data(Bytes::from_static(body), true);
        }
    }
}

async fn serve_h1<T: AsyncRead + AsyncWrite + Unpin>(mut io: T, seen: &Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..MAX_REQUESTS {
        // Read one request head.
        let (path, used) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                break (req.path.unwrap_or("").to_string(), n);
            }
            if buf.len() > 65536 {
                return;
            }
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..used);
        seen.count("http/1.1", &path);
        let (status, body) = answer(&path);
        let mut answer = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        if io.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// Runs mgload (at most 60 s).
async fn mgload(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mgload"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("mgload finished within 60 s")
        .expect("mgload ran")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The numbers on the printout's line that starts with `prefix`.
fn numbers(t: &str, prefix: &str) -> Vec<u64> {
    let line = t
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line:\n{t}"));
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    seen: Arc<Seen>,
    port: u16,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(dir.path());
    pki.client("alice", &ClientSpec::new("alice", 7));
    pki.client("bob", &ClientSpec::new("bob", 8));
    let seen = Arc::new(Seen::default());
    let port = serve(&pki, seen.clone()).await;
    Setup {
        _dir: dir,
        pki,
        seen,
        port,
    }
}

fn p(s: &Setup, name: &str) -> String {
    s.pki.path(name).display().to_string()
}

#[tokio::test]
async fn client_certificate_gets_answers_over_h2_and_h1() {
    let s = setup().await;
    let ok = format!("https://127.0.0.1:{}/ok/a.info", s.port);
    let missing = format!("https://127.0.0.1:{}/missing", s.port);
    let (ca, cert, key) = (p(&s, "root.pem"), p(&s, "alice.pem"), p(&s, "alice.key"));
    let common = [
        "-n", "40", "-c", "2", "--cacert", &ca, "--cert", &cert, "--key", &key, &ok, &missing,
    ];

    let mut args = vec!["-m", "4", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256"];
    args.extend_from_slice(&common);
    let out = mgload(&args).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for want in [
        "TLS Protocol: TLSv1.3\n",
        "Cipher: TLS_AES_128_GCM_SHA256\n",
        "Application protocol: h2\n",
        "requests: 40 total, 40 started, 40 done, 20 succeeded, 0 failed, 0 errored, 0 timeout\n",
        "status codes: 20 2xx, 0 3xx, 20 4xx, 0 5xx\n",
        "status: 200 20, 404 20\n",
        "connections: 2 made, 0 failed\n",
        "latency ms: min ",
        " us/req, ",
    ] {
        assert!(t.contains(want), "{want:?} missing:\n{t}");
    }
    assert!(!t.contains("errors:"), "{t}");

    let mut args = vec!["--h1"];
    args.extend_from_slice(&common);
    let out = mgload(&args).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for want in [
        "Application protocol: http/1.1\n",
        "requests: 40 total, 40 started, 40 done, 20 succeeded, 0 failed, 0 errored, 0 timeout\n",
        "status: 200 20, 404 20\n",
        // Keep-alive: two connections carried all 40.
        "connections: 2 made, 0 failed\n",
    ] {
        assert!(t.contains(want), "{want:?} missing:\n{t}");
    }

    // The server's side: every request arrived, round-robin over the two paths, on four
    // connections that all presented the certificate.
    let want: BTreeMap<(String, String), u64> = [
        (("h2", "/missing"), 20),
        (("h2", "/ok/a.info"), 20),
        (("http/1.1", "/missing"), 20),
        (("http/1.1", "/ok/a.info"), 20),
    ]
    .into_iter()
    .map(|((a, b), n)| ((a.to_string(), b.to_string()), n))
    .collect();
    assert_eq!(s.seen.requests(), want);
    assert_eq!(s.seen.conns.load(Ordering::SeqCst), 4);
    assert_eq!(s.seen.with_cert.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn duration_run_ends_on_time() {
    let s = setup().await;
    let url = format!("https://127.0.0.1:{}/ok", s.port);
    let (ca, cert, key) = (p(&s, "root.pem"), p(&s, "alice.pem"), p(&s, "alice.key"));
    let started = std::time::Instant::now();
    let out = mgload(&[
        "-D", "0.3", "-c", "2", "-m", "2", "--cacert", &ca, "--cert", &cert, "--key", &key, &url,
    ])
    .await;
    let took = started.elapsed();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{t}");
    let n = numbers(&t, "requests: ");
    // total, started, done, succeeded, failed, errored, timeout
    assert!(
        n.len() == 7 && n[3] > 0 && n[3] == n[0] && n[4..] == [0, 0, 0],
        "{t}"
    );
    // "finished in 312.45ms, ..." or "finished in 1.02s, ...": from the start to the last
    // answer, so at least the 0.3 s asked for.
    let finished = t
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("no finished line:\n{t}"));
    let secs = if let Some(v) = finished.strip_suffix("ms") {
        v.parse::<f64>().map(|v| v / 1e3)
    } else {
        finished.trim_end_matches('s').parse::<f64>()
    }
    .unwrap_or_else(|e| panic!("{finished}: {e}\n{t}"));
    assert!((0.3..5.0).contains(&secs), "{secs} s\n{t}");
}

#[tokio::test]
async fn without_a_client_certificate_the_server_refuses() {
    let s = setup().await;
    let url = format!("https://127.0.0.1:{}/ok", s.port);
    let ca = p(&s, "root.pem");
    for extra in [&["-m", "2"][..], &["--h1"][..]] {
        let mut args = vec!["-n", "10", "-c", "1", "--cacert", &ca, &url];
        args.extend_from_slice(extra);
        let out = mgload(&args).await;
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains("Client certificate: none"), "{t}");
        assert!(t.contains(" 0 succeeded, "), "{t}");
        assert!(t.contains("errors:\n"), "{t}");
        assert!(t.contains("no request was answered"), "{t}");
        // TLS 1.3: the refusal arrives as an alert after the client's side of the handshake,
        // so each request is lost with its connection (the message depends on whether the
        // alert or a failed write comes first).
        let n = numbers(&t, "requests: ");
        assert!(n.len() == 7 && n[0] > 0 && n[4] == n[0], "{t}");
    }
    assert!(s.seen.requests().is_empty(), "{:?}", s.seen.requests());
    assert!(s.seen.conns.load(Ordering::SeqCst) > 0);
    assert_eq!(s.seen.with_cert.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn certificate_without_its_key_refuses_to_start() {
    let s = setup().await;
    let url = format!("https://127.0.0.1:{}/ok", s.port);
    let (ca, cert) = (p(&s, "root.pem"), p(&s, "alice.pem"));
    let out = mgload(&["-n", "10", "--cacert", &ca, "--cert", &cert, &url]).await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(out.stdout.is_empty(), "{t}");
    assert!(t.contains("--cert") && t.contains("needs --key"), "{t}");

    // Another certificate's key.
    let bob_key = p(&s, "bob.key");
    let out = mgload(&[
        "-n", "10", "--cacert", &ca, "--cert", &cert, "--key", &bob_key, &url,
    ])
    .await;
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("bob.key"), "{t}");

    // A key file that is not there.
    let out = mgload(&[
        "-n",
        "10",
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        "/nonexistent/k",
        &url,
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    assert_eq!(s.seen.conns.load(Ordering::SeqCst), 0, "nothing connected");
}
