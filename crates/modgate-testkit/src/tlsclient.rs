//! A small blocking HTTPS client for mTLS tests, built on rustls: trusts one CA file,
//! optionally presents a client certificate chain, speaks HTTP/1.1 or HTTP/2 (ALPN), reports
//! the fingerprint of the certificate the server presented, and tells TLS handshake failures
//! (including TLS 1.3 alerts that only arrive on the first read) apart from I/O and protocol
//! errors. Each call runs on its own current-thread tokio runtime.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::pki::fingerprint_sha256;

/// Limit for connecting, the handshake and the whole exchange of one request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsClientError {
    /// The TLS handshake failed: certificate verification on either side, or a TLS alert
    /// (in TLS 1.3 the server's rejection of a client certificate arrives as an alert on the
    /// first read after the handshake; that counts as a handshake failure too).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// Connecting, reading or writing failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// The server's answer was not the HTTP expected (bad framing, wrong ALPN, HTTP/2 error).
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct TlsResponse {
    pub status: u16,
    /// `"HTTP/1.1"` or `"HTTP/2"`.
    pub version: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// SHA-256 fingerprint (lower-case hex) of the leaf certificate the server presented.
    pub server_cert_sha256: String,
}

impl TlsResponse {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::client::find_header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// An HTTPS client configuration; cheap to clone.
#[derive(Debug, Clone)]
pub struct TlsClient {
    roots: Arc<RootCertStore>,
    config: ClientConfig,
}

impl TlsClient {
    /// A client that trusts only the certificates in `ca_pem`, presents no client
    /// certificate and speaks HTTP/1.1.
    pub fn new(ca_pem: &Path) -> TlsClient {
        let mut roots = RootCertStore::empty();
        let certs = read_certs(ca_pem);
        assert!(!certs.is_empty(), "{}: no certificates", ca_pem.display());
        for c in certs {
            roots
                .add(c)
                .unwrap_or_else(|e| panic!("{}: bad CA certificate: {e}", ca_pem.display()));
        }
        let roots = Arc::new(roots);
        let config = config_builder(&roots).with_no_client_auth();
        TlsClient { roots, config }.http2(false)
    }

    /// Presents the certificate chain in `cert_pem` (leaf first) with the key in `key_pem`.
    pub fn with_client_cert(self, cert_pem: &Path, key_pem: &Path) -> TlsClient {
        let chain = read_certs(cert_pem);
        assert!(!chain.is_empty(), "{}: no certificates", cert_pem.display());
        let key_data = read(key_pem);
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_data.as_slice())
            .unwrap_or_else(|e| panic!("{}: {e}", key_pem.display()))
            .unwrap_or_else(|| panic!("{}: no private key", key_pem.display()));
        let mut config = config_builder(&self.roots)
            .with_client_auth_cert(chain, key)
            .unwrap_or_else(|e| panic!("client certificate {}: {e}", cert_pem.display()));
        config.alpn_protocols = self.config.alpn_protocols.clone();
        TlsClient {
            roots: self.roots,
            config,
        }
    }

    /// Offers only `h2` in ALPN when `on`, else only `http/1.1`.
    pub fn http2(mut self, on: bool) -> TlsClient {
        self.config.alpn_protocols = vec![if on {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        self
    }

    fn http2_enabled(&self) -> bool {
        self.config.alpn_protocols.iter().any(|p| p == b"h2")
    }

    /// `GET path` on a new connection to `addr`, verifying the server as `server_name` (also
    /// used for `Host` / `:authority`, with the port). Extra headers are sent in order;
    /// repeated names are sent repeatedly.
    pub fn get(
        &self,
        addr: SocketAddr,
        server_name: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<TlsResponse, TlsClientError> {
        block_on(self.request(addr, server_name, path, headers))
    }

    /// `n` sequential `GET path` requests, each on a new connection (a full handshake each:
    /// session resumption is disabled).
    pub fn get_many(
        &self,
        addr: SocketAddr,
        server_name: &str,
        path: &str,
        n: usize,
    ) -> Vec<Result<TlsResponse, TlsClientError>> {
        block_on(async {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(self.request(addr, server_name, path, &[]).await);
            }
            out
        })
    }

    /// Opens one HTTP/2 connection (whatever [`TlsClient::http2`] says) for
    /// [`TlsSession::get`] to reuse.
    pub fn keepalive_session(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<TlsSession, TlsClientError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = self.clone().http2(true).config;
        let connected = rt.block_on(async {
            let open = async {
                let (tls, fingerprint) = connect(config, addr, server_name).await?;
                check_alpn(&tls, true)?;
                let seen = Arc::new(Mutex::new(Seen::default()));
                let send = h2_open(tls, seen.clone()).await?;
                Ok::<_, TlsClientError>((send, seen, fingerprint))
            };
            with_timeout(open).await
        });
        let (send, seen, server_cert_sha256) = connected?;
        Ok(TlsSession {
            send,
            seen,
            authority: authority(server_name, addr.port()),
            server_cert_sha256,
            rt,
        })
    }

    async fn request(
        &self,
        addr: SocketAddr,
        server_name: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<TlsResponse, TlsClientError> {
        let http2 = self.http2_enabled();
        with_timeout(async {
            let (tls, fingerprint) = connect(self.config.clone(), addr, server_name).await?;
            check_alpn(&tls, http2)?;
            let authority = authority(server_name, addr.port());
            if http2 {
                let seen = Arc::new(Mutex::new(Seen::default()));
                let send = h2_open(tls, seen.clone()).await?;
                h2_get(send, &seen, &authority, path, headers, fingerprint).await
            } else {
                h1_get(tls, &authority, path, headers, fingerprint).await
            }
        })
        .await
    }
}

/// One HTTP/2 connection kept open across requests (see [`TlsClient::keepalive_session`]);
/// closed when dropped.
pub struct TlsSession {
    send: h2::client::SendRequest<Bytes>,
    seen: Arc<Mutex<Seen>>,
    authority: String,
    server_cert_sha256: String,
    /// Drives the connection in the background between requests; dropped last.
    rt: tokio::runtime::Runtime,
}

impl TlsSession {
    /// `GET path` as a new stream on the session's connection.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<TlsResponse, TlsClientError> {
        self.rt.block_on(with_timeout(h2_get(
            self.send.clone(),
            &self.seen,
            &self.authority,
            path,
            headers,
            self.server_cert_sha256.clone(),
        )))
    }

    /// Fingerprint of the certificate the server presented when the connection was opened.
    pub fn server_cert_sha256(&self) -> &str {
        &self.server_cert_sha256
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut read(path).as_slice())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config_builder(
    roots: &Arc<RootCertStore>,
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots.clone())
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

async fn with_timeout<T>(
    f: impl Future<Output = Result<T, TlsClientError>>,
) -> Result<T, TlsClientError> {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(TlsClientError::Io(format!("timed out after {TIMEOUT:?}"))))
}

/// `Host` / `:authority` for a server name and port (IPv6 literals bracketed).
fn authority(server_name: &str, port: u16) -> String {
    match server_name.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{server_name}:{port}"),
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if that is what it is.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

/// TCP connect and TLS handshake; returns the stream and the server leaf's fingerprint.
async fn connect(
    mut config: ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> Result<(TlsStream<TcpStream>, String), TlsClientError> {
    config.resumption = rustls::client::Resumption::disabled();
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| TlsClientError::Protocol(format!("server name {server_name:?}: {e}")))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| TlsClientError::Io(format!("connect {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| TlsClientError::Handshake(e.to_string()))?;
    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|leaf| fingerprint_sha256(leaf))
        .ok_or_else(|| TlsClientError::Protocol("server presented no certificate".into()))?;
    Ok((tls, fingerprint))
}

fn check_alpn(tls: &TlsStream<TcpStream>, http2: bool) -> Result<(), TlsClientError> {
    let alpn = tls.get_ref().1.alpn_protocol();
    let ok = match alpn {
        Some(p) => p == if http2 { &b"h2"[..] } else { &b"http/1.1"[..] },
        // A server without ALPN speaks HTTP/1.1.
        None => !http2,
    };
    if ok {
        Ok(())
    } else {
        Err(TlsClientError::Protocol(format!(
            "server negotiated ALPN {:?}, wanted {}",
            alpn.map(String::from_utf8_lossy),
            if http2 { "h2" } else { "http/1.1" }
        )))
    }
}

// --- HTTP/1.1 ---

async fn h1_get(
    mut tls: TlsStream<TcpStream>,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    server_cert_sha256: String,
) -> Result<TlsResponse, TlsClientError> {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {authority}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let written = async {
        tls.write_all(req.as_bytes()).await?;
        tls.flush().await
    }
    .await;
    if let Err(e) = written {
        // A server that rejected our certificate may already have closed the connection;
        // its alert is still readable.
        let mut probe = [0u8; 1];
        return Err(match tls.read(&mut probe).await {
            Err(read_err) if tls_error(&read_err).is_some() => {
                TlsClientError::Handshake(read_err.to_string())
            }
            _ => match tls_error(&e) {
                Some(_) => TlsClientError::Handshake(e.to_string()),
                None => TlsClientError::Io(format!("writing request: {e}")),
            },
        });
    }

    let mut reader = H1Reader {
        tls,
        chunk: vec![0u8; 16 * 1024],
        total: 0,
    };
    let mut data = Vec::new();
    let head_len = loop {
        if let Some(p) = find(&data, b"\r\n\r\n") {
            break p + 4;
        }
        if !reader.fill(&mut data).await? {
            return Err(TlsClientError::Protocol(format!(
                "connection closed before a complete response head ({} bytes)",
                data.len()
            )));
        }
    };
    let mut header_buf = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut header_buf);
    match parsed.parse(&data[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        other => {
            return Err(TlsClientError::Protocol(format!(
                "bad response head ({other:?}): {:?}",
                String::from_utf8_lossy(&data[..head_len])
            )))
        }
    }
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect();
    let mut body = data.split_off(head_len);

    let chunked = crate::client::find_header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = crate::client::find_header(&headers, "content-length")
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| TlsClientError::Protocol(format!("bad content-length {v:?}")))
        })
        .transpose()?;
    let mut eof = false;
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Vec::new()
    } else if chunked {
        loop {
            // The last chunk (and trailers) end with an empty line.
            if eof || body.ends_with(b"\r\n\r\n") {
                match dechunk(&body)? {
                    Some(decoded) => break decoded,
                    None if eof => {
                        return Err(TlsClientError::Protocol(
                            "connection closed inside a chunked body".into(),
                        ))
                    }
                    None => {}
                }
            }
            eof = !reader.fill(&mut body).await?;
        }
    } else if let Some(len) = length {
        while body.len() < len {
            if !reader.fill(&mut body).await? {
                return Err(TlsClientError::Protocol(format!(
                    "connection closed after {} of {len} body bytes",
                    body.len()
                )));
            }
        }
        body.truncate(len);
        body
    } else {
        while reader.fill(&mut body).await? {}
        body
    };
    Ok(TlsResponse {
        status,
        version: "HTTP/1.1".into(),
        headers,
        body,
        server_cert_sha256,
    })
}

/// Reads a response off a TLS stream.
struct H1Reader {
    tls: TlsStream<TcpStream>,
    chunk: Vec<u8>,
    /// Bytes read so far.
    total: usize,
}

impl H1Reader {
    /// Reads more into `data`; returns false at EOF.
    async fn fill(&mut self, data: &mut Vec<u8>) -> Result<bool, TlsClientError> {
        match self.tls.read(&mut self.chunk).await {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.total += n;
                data.extend_from_slice(&self.chunk[..n]);
                Ok(true)
            }
            // A peer that closes without close_notify after answering: treat as EOF.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.total > 0 => Ok(false),
            // TLS 1.3: the server's verdict on our certificate arrives on the first read.
            Err(e) if self.total == 0 && tls_error(&e).is_some() => {
                Err(TlsClientError::Handshake(e.to_string()))
            }
            Err(e) => Err(TlsClientError::Io(format!("reading response: {e}"))),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body; `Ok(None)` when more data is needed.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, TlsClientError> {
    let bad = |m: &str| TlsClientError::Protocol(format!("bad chunked body: {m}"));
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| bad("size line"))?;
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad(size_text))?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailer lines up to an empty line.
            loop {
                let Some(end) = find(data, b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(out));
                }
                data = &data[end + 2..];
            }
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(bad("missing CRLF after chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// --- HTTP/2 ---

/// What the HTTP/2 connection's reads have seen: plaintext bytes, and a TLS error that came
/// before any of them (a TLS 1.3 alert rejecting our certificate).
#[derive(Debug, Default)]
struct Seen {
    bytes_read: u64,
    alert: Option<String>,
}

/// Wraps the TLS stream under h2 to record [`Seen`], since h2 keeps only the text of I/O
/// errors.
struct Recorded<S> {
    inner: S,
    seen: Arc<Mutex<Seen>>,
    /// A write error held back while we wait to read whether a TLS alert explains it.
    write_error: Option<io::Error>,
}

impl<S: AsyncRead + Unpin> Recorded<S> {
    fn new(inner: S, seen: Arc<Mutex<Seen>>) -> Self {
        Recorded {
            inner,
            seen,
            write_error: None,
        }
    }

    fn note_error(&self, e: &io::Error) {
        let mut seen = self.seen.lock().expect("seen lock");
        if seen.bytes_read == 0 && seen.alert.is_none() && tls_error(e).is_some() {
            seen.alert = Some(e.to_string());
        }
    }

    /// A write failed. A server that rejects our certificate (TLS 1.3) sends an alert and
    /// closes, so our first writes can fail before anything was read; then hold the error
    /// back until a read shows whether an alert is waiting.
    fn write_failed<T>(&mut self, cx: &mut Context<'_>, e: io::Error) -> Poll<io::Result<T>> {
        self.note_error(&e);
        let seen_anything = {
            let seen = self.seen.lock().expect("seen lock");
            seen.bytes_read > 0 || seen.alert.is_some()
        };
        if seen_anything {
            return Poll::Ready(Err(e));
        }
        self.write_error = Some(e);
        self.poll_held_write_error(cx)
    }

    /// Reads once (a failed connection is readable at once: alert, EOF or reset), then
    /// releases the held write error.
    fn poll_held_write_error<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let mut scratch = [0u8; 512];
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(read_err)) => self.note_error(&read_err),
            Poll::Ready(Ok(())) => {}
        }
        Poll::Ready(Err(self.write_error.take().expect("a held write error")))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                self.seen.lock().expect("seen lock").bytes_read += n;
            }
            Poll::Ready(Err(e)) => self.note_error(e),
            Poll::Pending => {}
        }
        res
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_error.is_some() {
            return self.poll_held_write_error(cx);
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => self.write_failed(cx, e),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_error.is_some() {
            return self.poll_held_write_error(cx);
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => self.write_failed(cx, e),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An h2 error as a [`TlsClientError`]: a handshake failure if the connection's first read
/// was a TLS alert.
fn h2_error(seen: &Mutex<Seen>, what: &str, e: h2::Error) -> TlsClientError {
    if let Some(alert) = seen.lock().expect("seen lock").alert.clone() {
        return TlsClientError::Handshake(alert);
    }
    if e.is_io() {
        TlsClientError::Io(format!("{what}: {e}"))
    } else {
        TlsClientError::Protocol(format!("{what}: {e}"))
    }
}

/// Starts HTTP/2 on a TLS stream; the connection runs as a task on the current runtime.
async fn h2_open(
    tls: TlsStream<TcpStream>,
    seen: Arc<Mutex<Seen>>,
) -> Result<h2::client::SendRequest<Bytes>, TlsClientError> {
    let io = Recorded::new(tls, seen.clone());
    let (send, conn) = h2::client::handshake(io)
        .await
        .map_err(|e| h2_error(&seen, "HTTP/2 handshake", e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

async fn h2_get(
    send: h2::client::SendRequest<Bytes>,
    seen: &Mutex<Seen>,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    server_cert_sha256: String,
) -> Result<TlsResponse, TlsClientError> {
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| TlsClientError::Protocol(format!("bad URI for {path:?}: {e}")))?;
    let mut req = http::Request::get(uri)
        .body(())
        .map_err(|e| TlsClientError::Protocol(e.to_string()))?;
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| TlsClientError::Protocol(format!("header name {k:?}: {e}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|e| TlsClientError::Protocol(format!("header {k} value {v:?}: {e}")))?;
        req.headers_mut().append(name, value);
    }
    let mut send = send
        .ready()
        .await
        .map_err(|e| h2_error(seen, "HTTP/2 connection", e))?;
    let (response, _) = send
        .send_request(req, true)
        .map_err(|e| h2_error(seen, "sending request", e))?;
    let response = response
        .await
        .map_err(|e| h2_error(seen, "awaiting response", e))?;
    let (parts, mut recv) = response.into_parts();
    let mut body = Vec::new();
    while let Some(data) = recv.data().await {
        let data = data.map_err(|e| h2_error(seen, "reading body", e))?;
        let _ = recv.flow_control().release_capacity(data.len());
        body.extend_from_slice(&data);
    }
    Ok(TlsResponse {
        status: parts.status.as_u16(),
        version: "HTTP/2".into(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect(),
        body,
        server_cert_sha256,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::pki::{ClientSpec, Issuer, Pki};

    /// A tokio-rustls server requiring a client certificate from the PKI's root. It answers
    /// every request with `hello <version> <path> x-dup=<values>` and an `x-conn` header
    /// numbering the connection; over HTTP/1.1, `/chunked` is sent chunked and `/close`
    /// delimited by closing the connection.
    struct Server {
        addr: SocketAddr,
        _rt: tokio::runtime::Runtime,
    }

    struct ServerOpts {
        tls12_only: bool,
        alpn: Vec<Vec<u8>>,
    }

    impl Default for ServerOpts {
        fn default() -> Self {
            ServerOpts {
                tls12_only: false,
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            }
        }
    }

    fn start_server(pki: &Pki, opts: ServerOpts) -> Server {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in read_certs(&pki.path("root.pem")) {
            roots.add(c).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let key = rustls_pemfile::private_key(&mut read(&pki.path("server.key")).as_slice())
            .unwrap()
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(read_certs(&pki.path("server.pem")), key)
            .unwrap();
        config.alpn_protocols = opts.alpn;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let conns = AtomicU64::new(1);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let id = conns.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_h2(tls, id).await;
                    } else {
                        serve_h1(tls, id).await;
                    }
                });
            }
        });
        Server { addr, _rt: rt }
    }

    fn answer(version: &str, path: &str, dup: &[String]) -> String {
        format!("hello {version} {path} x-dup={}", dup.join(","))
    }

    async fn serve_h2<S: AsyncRead + AsyncWrite + Unpin>(io: S, id: u64) {
        let Ok(mut conn) = h2::server::handshake(io).await else {
            return;
        };
        while let Some(Ok((req, mut respond))) = conn.accept().await {
            let dup: Vec<String> = req
                .headers()
                .get_all("x-dup")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            let body = answer("HTTP/2", req.uri().path(), &dup);
            let resp = http::Response::builder()
                .status(200)
                .header("x-conn", id.to_string())
                .body(())
                .unwrap();
            let Ok(mut stream) = respond.send_response(resp, false) else {
                return;
            };
            let _ = stream.send_data(Bytes::from(body), true);
        }
    }

    async fn serve_h1<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, id: u64) {
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        while find(&data, b"\r\n\r\n").is_none() {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(&data).unwrap();
        let path = req.path.unwrap().to_string();
        let dup: Vec<String> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-dup"))
            .map(|h| String::from_utf8_lossy(h.value).to_string())
            .collect();
        let body = answer("HTTP/1.1", &path, &dup);
        let response = match path.as_str() {
            "/chunked" => {
                let (a, b) = body.split_at(5);
                format!(
                    "HTTP/1.1 200 OK\r\nx-conn: {id}\r\ntransfer-encoding: chunked\r\n\r\n\
                     {:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\nx-trailer: t\r\n\r\n",
                    a.len(),
                    b.len()
                )
            }
            "/close" => format!("HTTP/1.1 200 OK\r\nx-conn: {id}\r\n\r\n{body}"),
            _ => format!(
                "HTTP/1.1 200 OK\r\nx-conn: {id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        };
        let _ = io.write_all(response.as_bytes()).await;
        let _ = io.shutdown().await;
    }

    fn setup() -> (tempfile::TempDir, Pki) {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::generate(tmp.path());
        pki.client("good", &ClientSpec::new("good", 10).ou("ci"));
        pki.client(
            "via-int",
            &ClientSpec::new("via-int", 11).issuer(Issuer::Intermediate),
        );
        pki.client("other", &ClientSpec::new("other", 12).issuer(Issuer::Other));
        pki.client("old", &ClientSpec::new("old", 13).expired());
        (tmp, pki)
    }

    fn client(pki: &Pki, name: &str) -> TlsClient {
        TlsClient::new(&pki.path("ca-bundle.pem")).with_client_cert(
            &pki.path(&format!("{name}.pem")),
            &pki.path(&format!("{name}.key")),
        )
    }

    fn server_fingerprint(pki: &Pki) -> String {
        fingerprint_sha256(&read_certs(&pki.path("server.pem"))[0])
    }

    fn assert_handshake_error(r: Result<TlsResponse, TlsClientError>, what: &str) {
        match r {
            Err(TlsClientError::Handshake(msg)) => assert!(!msg.is_empty()),
            other => panic!("{what}: expected a handshake error, got {other:?}"),
        }
    }

    #[test]
    fn h1_and_h2_with_client_cert() {
        let (_tmp, pki) = setup();
        let server = start_server(&pki, ServerOpts::default());
        let dup = [("x-dup", "a"), ("X-Dup", "b")];

        let h1 = client(&pki, "good");
        let r = h1
            .get(server.addr, "localhost", "/hello?q=1", &dup)
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.version, "HTTP/1.1");
        assert_eq!(r.text(), "hello HTTP/1.1 /hello?q=1 x-dup=a,b");
        assert_eq!(r.server_cert_sha256, server_fingerprint(&pki));
        assert!(r.header("X-Conn").is_some());

        let r = h1.get(server.addr, "127.0.0.1", "/chunked", &[]).unwrap();
        assert_eq!(r.text(), "hello HTTP/1.1 /chunked x-dup=");
        let r = h1.get(server.addr, "localhost", "/close", &[]).unwrap();
        assert_eq!(r.text(), "hello HTTP/1.1 /close x-dup=");

        let h2 = client(&pki, "good").http2(true);
        let r = h2.get(server.addr, "localhost", "/v2", &dup).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.version, "HTTP/2");
        assert_eq!(r.text(), "hello HTTP/2 /v2 x-dup=a,b");
        assert_eq!(r.server_cert_sha256, server_fingerprint(&pki));

        // A leaf from the intermediate verifies because the .pem carries the chain.
        for on in [false, true] {
            let r = client(&pki, "via-int")
                .http2(on)
                .get(server.addr, "localhost", "/int", &[])
                .unwrap();
            assert_eq!(r.status, 200);
        }
    }

    #[test]
    fn rejected_client_certificates_are_handshake_errors() {
        let (_tmp, pki) = setup();
        for tls12_only in [false, true] {
            let server = start_server(
                &pki,
                ServerOpts {
                    tls12_only,
                    ..ServerOpts::default()
                },
            );
            for on in [false, true] {
                let what = format!("tls12_only={tls12_only} h2={on}");
                let none = TlsClient::new(&pki.path("root.pem")).http2(on);
                assert_handshake_error(
                    none.get(server.addr, "localhost", "/", &[]),
                    &format!("no client cert, {what}"),
                );
                assert_handshake_error(
                    client(&pki, "other")
                        .http2(on)
                        .get(server.addr, "localhost", "/", &[]),
                    &format!("other CA, {what}"),
                );
                assert_handshake_error(
                    client(&pki, "old")
                        .http2(on)
                        .get(server.addr, "localhost", "/", &[]),
                    &format!("expired, {what}"),
                );
            }
        }
    }

    #[test]
    fn untrusted_server_is_a_handshake_error() {
        let (_tmp, pki) = setup();
        let server = start_server(&pki, ServerOpts::default());
        let wrong_ca = TlsClient::new(&pki.path("other-ca.pem"))
            .with_client_cert(&pki.path("good.pem"), &pki.path("good.key"));
        assert_handshake_error(
            wrong_ca.get(server.addr, "localhost", "/", &[]),
            "server from an untrusted CA",
        );
        assert_handshake_error(
            client(&pki, "good").get(server.addr, "wrong.example", "/", &[]),
            "wrong server name",
        );
    }

    #[test]
    fn h2_without_alpn_h2_is_a_protocol_error() {
        let (_tmp, pki) = setup();
        let server = start_server(
            &pki,
            ServerOpts {
                alpn: vec![],
                ..ServerOpts::default()
            },
        );
        match client(&pki, "good")
            .http2(true)
            .get(server.addr, "localhost", "/", &[])
        {
            Err(TlsClientError::Protocol(msg)) => assert!(msg.contains("ALPN"), "{msg}"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
        // The same server speaks HTTP/1.1 without ALPN.
        let r = client(&pki, "good")
            .get(server.addr, "localhost", "/", &[])
            .unwrap();
        assert_eq!(r.status, 200);
    }

    #[test]
    fn get_many_uses_new_connections_and_sessions_reuse_one() {
        let (_tmp, pki) = setup();
        let server = start_server(&pki, ServerOpts::default());
        let c = client(&pki, "good");

        for on in [false, true] {
            let results = c
                .clone()
                .http2(on)
                .get_many(server.addr, "localhost", "/m", 3);
            let conns: Vec<String> = results
                .into_iter()
                .map(|r| r.unwrap().header("x-conn").unwrap().to_string())
                .collect();
            assert_eq!(conns.len(), 3);
            assert!(
                conns[0] != conns[1] && conns[1] != conns[2] && conns[0] != conns[2],
                "{conns:?}"
            );
        }

        let session = c.keepalive_session(server.addr, "localhost").unwrap();
        assert_eq!(session.server_cert_sha256(), server_fingerprint(&pki));
        let a = session.get("/one", &[]).unwrap();
        let b = session
            .get("/two", &[("x-dup", "1"), ("x-dup", "2")])
            .unwrap();
        assert_eq!(a.version, "HTTP/2");
        assert_eq!(b.text(), "hello HTTP/2 /two x-dup=1,2");
        assert_eq!(a.header("x-conn"), b.header("x-conn"));

        let none = TlsClient::new(&pki.path("root.pem"));
        // The TLS 1.3 rejection may surface when opening the session or on the first request.
        match none.keepalive_session(server.addr, "localhost") {
            Err(e) => assert!(matches!(e, TlsClientError::Handshake(_)), "{e:?}"),
            Ok(s) => assert_handshake_error(s.get("/", &[]), "session without client cert"),
        }
    }

    #[test]
    fn dechunk_handles_partial_and_complete_bodies() {
        assert_eq!(dechunk(b"3\r\nabc\r\n").unwrap(), None);
        assert_eq!(
            dechunk(b"3\r\nabc\r\n0\r\n\r\n").unwrap(),
            Some(b"abc".to_vec())
        );
        assert_eq!(
            dechunk(b"1;x=y\r\na\r\n0\r\nt: v\r\n\r\n").unwrap(),
            Some(b"a".to_vec())
        );
        assert!(dechunk(b"zz\r\n").is_err());
        assert_eq!(authority("::1", 443), "[::1]:443");
        assert_eq!(authority("localhost", 8443), "localhost:8443");
    }
}
