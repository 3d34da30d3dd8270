//! A fixture GOPROXY upstream: a real HTTP/1.1 server (optionally HTTPS, optionally requiring
//! a client certificate) on 127.0.0.1 that serves generated modules and records every request
//! it receives, so tests can prove what reached an upstream and what did not. Under
//! `$MODGATE_CANARY_DIR` every request is also appended to the suite-wide privacy canary
//! ([`crate::canary`]): a fixture that serves a `private: true` route must say so with
//! [`FixtureProxy::mark_private`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modgate_protocol::{compare_semver, escape_path, escape_version, is_pseudo_version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::canary::{CanaryLog, Role};
use crate::module::ModuleVersion;

/// One request as the fixture saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::client::find_header(&self.headers, name)
    }
}

/// How the fixture answers requests whose path starts with a given prefix.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answer with this status and a short body.
    Status(u16),
    /// Wait, then answer normally.
    Delay(Duration),
    /// Never answer (the connection stays open until the client gives up).
    Hang,
    /// Answer with this status and this body (e.g. a `203` carrying re-tagged bytes).
    Answer(u16, Vec<u8>),
}

#[derive(Default)]
struct State {
    /// Served files by encoded request path (`/mod/@v/v1.0.0.zip`).
    files: BTreeMap<String, (Vec<u8>, &'static str)>,
    requests: Vec<RecordedRequest>,
    behaviours: Vec<(String, Behaviour)>,
    /// Extra response headers by request-path prefix.
    headers: Vec<(String, String, String)>,
    /// Other bodies by request-path prefix, served when a request header contains a value:
    /// (prefix, header name, substring, body).
    variants: Vec<(String, String, String, Vec<u8>)>,
    /// A header every request must carry with exactly this value, and the status of those that
    /// do not (`401` like GitLab's per-project Go proxy without its project token).
    required: Option<(String, String, u16)>,
    /// `Content-Length` announced to HEAD requests by request-path prefix.
    head_lengths: Vec<(String, u64)>,
}

/// Optional TLS for the fixture.
pub struct FixtureTls {
    pub cert_pem: std::path::PathBuf,
    pub key_pem: std::path::PathBuf,
    /// Require a client certificate signed by this CA.
    pub client_ca_pem: Option<std::path::PathBuf>,
}

/// A running fixture upstream; stops when dropped.
pub struct FixtureProxy {
    addr: SocketAddr,
    tls: bool,
    prefix: String,
    state: Arc<Mutex<State>>,
    canary: CanaryLog,
    task: JoinHandle<()>,
}

impl Drop for FixtureProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Errors starting a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("fixture I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("fixture TLS: {0}")]
    Tls(String),
    #[error("fixture module: {0}")]
    Module(#[from] crate::module::ModuleError),
}

impl FixtureProxy {
    /// Starts a plain-HTTP fixture serving `modules` at the root path.
    pub async fn start(modules: &[ModuleVersion]) -> Result<FixtureProxy, FixtureError> {
        Self::start_with(modules, "", None).await
    }

    /// Starts a fixture serving under a path prefix (e.g. `/athens`), optionally with TLS.
    pub async fn start_with(
        modules: &[ModuleVersion],
        prefix: &str,
        tls: Option<FixtureTls>,
    ) -> Result<FixtureProxy, FixtureError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let prefix = prefix.trim_end_matches('/').to_string();
        let acceptor = match tls {
            Some(t) => Some(tls_acceptor(&t)?),
            None => None,
        };
        let fixture_tls = acceptor.is_some();
        let canary = CanaryLog::for_fixture(addr, Role::Public);
        let task = {
            let state = state.clone();
            let prefix = prefix.clone();
            let canary = canary.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    let prefix = prefix.clone();
                    let acceptor = acceptor.clone();
                    let canary = canary.clone();
                    tokio::spawn(async move {
                        match acceptor {
                            Some(a) => {
                                if let Ok(s) = a.accept(stream).await {
                                    serve_connection(s, state, prefix, canary).await;
                                }
                            }
                            None => serve_connection(stream, state, prefix, canary).await,
                        }
                    });
                }
            })
        };
        let fixture = FixtureProxy {
            addr,
            tls: fixture_tls,
            prefix,
            state,
            canary,
            task,
        };
        for m in modules {
            fixture.add(m)?;
        }
        Ok(fixture)
    }

    /// Declares that this fixture serves a `private: true` route, so the privacy canary expects
    /// private module paths here (every other fixture is public: a private path reaching it
    /// fails the suite). Call it before the gateway can send anything.
    pub fn mark_private(&self) {
        self.canary.set_role(Role::Private);
    }

    /// Adds (or replaces) a module version and refreshes `list` and `@latest`.
    pub fn add(&self, m: &ModuleVersion) -> Result<(), FixtureError> {
        let esc = escape_path(&m.path).map_err(|e| FixtureError::Tls(e.to_string()))?;
        let v = escape_version(&m.version).map_err(|e| FixtureError::Tls(e.to_string()))?;
        let zip = m.zip()?;
        let mut st = self
            .state
            .lock()
            .map_err(|_| FixtureError::Tls("poisoned".into()))?;
        st.files.insert(
            format!("/{esc}/@v/{v}.info"),
            (m.info(), "application/json"),
        );
        st.files.insert(
            format!("/{esc}/@v/{v}.mod"),
            (m.mod_file(), "text/plain; charset=utf-8"),
        );
        st.files
            .insert(format!("/{esc}/@v/{v}.zip"), (zip, "application/zip"));
        // Rebuild list (release and pre-release versions, not pseudo-versions) and @latest.
        let info_prefix = format!("/{esc}/@v/");
        let mut versions: Vec<String> = st
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&info_prefix))
            .filter_map(|rest| rest.strip_suffix(".info"))
            .map(|s| s.to_string())
            .collect();
        versions.sort_by(|a, b| compare_semver(a, b));
        let listed: Vec<&String> = versions.iter().filter(|v| !is_pseudo_version(v)).collect();
        let mut list = String::new();
        for v in &listed {
            list.push_str(v);
            list.push('\n');
        }
        st.files.insert(
            format!("/{esc}/@v/list"),
            (list.into_bytes(), "text/plain; charset=utf-8"),
        );
        if let Some(latest) = listed
            .last()
            .map(|s| s.to_string())
            .or_else(|| versions.last().cloned())
        {
            if let Some((info, _)) = st.files.get(&format!("/{esc}/@v/{latest}.info")).cloned() {
                st.files
                    .insert(format!("/{esc}/@latest"), (info, "application/json"));
            }
        }
        Ok(())
    }

    /// Replaces the bytes served for one encoded path (to simulate an upstream changing).
    pub fn set_file(&self, path: &str, body: Vec<u8>) {
        if let Ok(mut st) = self.state.lock() {
            let ct = st
                .files
                .get(path)
                .map(|(_, c)| *c)
                .unwrap_or("application/octet-stream");
            st.files.insert(path.to_string(), (body, ct));
        }
    }

    /// Makes every request without header `name` set to exactly `value` a `401` (nothing is
    /// served), like GitLab's per-project Go proxy without its project token.
    pub fn require_header(&self, name: &str, value: &str) {
        self.require_header_status(name, value, 401);
    }

    /// Like [`FixtureProxy::require_header`], answering `status` instead (a private upstream
    /// that answers 404 or 403 to callers it does not know).
    pub fn require_header_status(&self, name: &str, value: &str, status: u16) {
        if let Ok(mut st) = self.state.lock() {
            st.required = Some((name.to_ascii_lowercase(), value.to_string(), status));
        }
    }

    /// Makes every request whose path (after the fixture's prefix) starts with `path_prefix`
    /// behave as given; `""` applies to all requests. Later calls take precedence.
    pub fn set_behaviour(&self, path_prefix: &str, b: Behaviour) {
        if let Ok(mut st) = self.state.lock() {
            st.behaviours.insert(0, (path_prefix.to_string(), b));
        }
    }

    /// Adds a response header to every answer for paths starting with `path_prefix`.
    pub fn set_header(&self, path_prefix: &str, name: &str, value: &str) {
        if let Ok(mut st) = self.state.lock() {
            st.headers
                .push((path_prefix.to_string(), name.to_string(), value.to_string()));
        }
    }

    /// Serves `body` instead of the file for paths under `path_prefix` when the request's
    /// `header` contains `contains` (an upstream that varies on a request header).
    pub fn set_variant(&self, path_prefix: &str, header: &str, contains: &str, body: Vec<u8>) {
        if let Ok(mut s) = self.state.lock() {
            s.variants.push((
                path_prefix.to_string(),
                header.to_ascii_lowercase(),
                contains.to_string(),
                body,
            ));
        }
    }

    /// Announces `length` as the `Content-Length` of HEAD answers under `path_prefix` (many
    /// servers say 0, or the length of another representation).
    pub fn set_head_length(&self, path_prefix: &str, length: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.head_lengths.push((path_prefix.to_string(), length));
        }
    }

    /// Removes all behaviours: serve normally again.
    pub fn clear_behaviours(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.behaviours.clear();
        }
    }

    /// Base URL, including the path prefix.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.tls { "https" } else { "http" },
            self.addr,
            self.prefix
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.state.lock().map(|s| s.requests.len()).unwrap_or(0)
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.requests.clear();
        }
    }
}

fn tls_acceptor(t: &FixtureTls) -> Result<tokio_rustls::TlsAcceptor, FixtureError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| FixtureError::Tls(format!("{}: {e}", p.display())));
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(&t.cert_pem)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| FixtureError::Tls(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut read(&t.key_pem)?.as_slice())
        .map_err(|e| FixtureError::Tls(e.to_string()))?
        .ok_or_else(|| FixtureError::Tls("no key".into()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| FixtureError::Tls(e.to_string()))?;
    let builder = match &t.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut read(ca)?.as_slice()) {
                let c = c.map_err(|e| FixtureError::Tls(e.to_string()))?;
                roots.add(c).map_err(|e| FixtureError::Tls(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| FixtureError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| FixtureError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves HTTP/1.1 requests on one connection until it closes.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    state: Arc<Mutex<State>>,
    prefix: String,
    canary: CanaryLog,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let Some(recorded) = read_request(&mut stream, &mut buf, &canary).await else {
            return;
        };
        let close = recorded
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let extra: String;
        let head_length: Option<u64>;
        let (status, body, content_type, delay, hang) = {
            let Ok(mut st) = state.lock() else { return };
            st.requests.push(recorded.clone());
            let rel = recorded
                .path
                .strip_prefix(prefix.as_str())
                .unwrap_or("")
                .to_string();
            let behaviour = st
                .behaviours
                .iter()
                .find(|(p, _)| rel.starts_with(p.as_str()))
                .map(|(_, b)| b.clone());
            let mut delay = None;
            let mut fixed = None;
            let mut hang = false;
            let mut answer = None;
            let refused = st
                .required
                .as_ref()
                .filter(|(h, v, _)| recorded.header(h) != Some(v.as_str()))
                .map(|(_, _, status)| *status);
            let behaviour = match refused {
                Some(status) => Some(Behaviour::Status(status)),
                None => behaviour,
            };
            match behaviour {
                Some(Behaviour::Status(s)) => fixed = Some(s),
                Some(Behaviour::Delay(d)) => delay = Some(d),
                Some(Behaviour::Hang) => hang = true,
                Some(Behaviour::Answer(s, b)) => answer = Some((s, b)),
                None => {}
            }
            let variant = st
                .variants
                .iter()
                .find(|(p, h, c, _)| {
                    rel.starts_with(p.as_str())
                        && recorded.header(h).is_some_and(|v| v.contains(c.as_str()))
                })
                .map(|(_, _, _, b)| b.clone());
            head_length = st
                .head_lengths
                .iter()
                .find(|(p, _)| rel.starts_with(p.as_str()))
                .map(|(_, n)| *n);
            extra = st
                .headers
                .iter()
                .filter(|(p, _, _)| rel.starts_with(p.as_str()))
                .map(|(_, n, v)| format!("{n}: {v}\r\n"))
                .collect::<String>();
            match (fixed, st.files.get(&rel)) {
                _ if answer.is_some() => {
                    let (s, b) = answer.unwrap_or_default();
                    (s, b, "application/octet-stream", delay, hang)
                }
                (None, Some(_)) if variant.is_some() && recorded.path.starts_with(&prefix) => (
                    200,
                    variant.clone().unwrap_or_default(),
                    "text/html",
                    delay,
                    hang,
                ),
                (Some(s), _) => (
                    s,
                    format!("fixture: status {s}\n").into_bytes(),
                    "text/plain",
                    delay,
                    hang,
                ),
                (None, Some((body, ct))) if recorded.path.starts_with(&prefix) => {
                    (200, body.clone(), *ct, delay, hang)
                }
                _ => (
                    404,
                    format!("not found: {}\n", recorded.path).into_bytes(),
                    "text/plain",
                    delay,
                    hang,
                ),
            }
        };
        if hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let reason = match status {
            200 => "OK",
            404 => "Not Found",
            410 => "Gone",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let head_only = recorded.method == "HEAD";
        let length = match head_length {
            Some(n) if head_only => n,
            _ => body.len() as u64,
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{}{extra}\r\n",
            length,
            if close { "connection: close\r\n" } else { "" }
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        if !head_only && stream.write_all(&body).await.is_err() {
            return;
        }
        if stream.flush().await.is_err() || close {
            return;
        }
    }
}

/// Reads one request head from a keep-alive connection (the fixtures' requests have no body),
/// records it in the canary log and drains it from `buf`. `None`: the connection is done — it
/// closed, sent more than 1 MiB of head, or sent something httparse refuses (answered 400 and
/// logged whole for the canary).
pub(crate) async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    canary: &CanaryLog,
) -> Option<RecordedRequest> {
    let head_len = loop {
        if let Some(pos) = find_head_end(buf) {
            break pos;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(
        req.parse(&buf[..head_len]),
        Ok(httparse::Status::Complete(_))
    ) {
        canary.record("?", &unparsed_target(&buf[..head_len]));
        let _ = stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        return None;
    }
    let recorded = RecordedRequest {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).to_string(),
                )
            })
            .collect(),
    };
    canary.record(&recorded.method, &recorded.path);
    buf.drain(..head_len);
    Some(recorded)
}

/// The request line of a head httparse refused, for the canary (which checks it whole).
pub(crate) fn unparsed_target(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).trim_end().to_string()
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}
