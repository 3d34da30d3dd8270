//! `modgate agent`: a loopback GOPROXY endpoint for the stock `go` command, which cannot present
//! a TLS client certificate (golang/go#30119).
//!
//! ```text
//!  go ──http(h1/h2c)──▶ agent 127.0.0.1:7070 ──https + the user's client cert──▶ gateway
//! ```
//!
//! Every request is forwarded unchanged (method, path, query) to the gateway URL, under its path
//! prefix, and every answer of the gateway (its `4xx`/`5xx` with their `modgate: …` reasons
//! included) comes back unchanged. When the gateway gives no answer at all, the agent answers
//! itself with `502` (or `504` for a timeout) and one line saying why — `modgate agent: …`: the
//! TLS alert with which the gateway refused the certificate in the handshake (`unknown ca`,
//! `certificate expired`, …), a gateway certificate the agent does not trust, a refused or
//! timed-out connection ([`no_answer`]); `go` prints that line.
//!
//! The certificate and key files are polled for changes, so short-lived certificates renewed on
//! disk are picked up without a restart; a renewal that does not load (half-written, mismatched
//! key) is logged and the previous certificate stays in use. Pingora keys its connection pool
//! by the client certificate, so connections made with an old certificate are simply no longer
//! reused.
//!
//! Loopback TCP carries no credential, and any local user can connect to the agent's port: the
//! agent lends the certificate only to the user it runs as (and root, who can read the key file
//! anyway), plus the users named with `--allow-user`. It finds the user owning the client end of
//! each connection in the kernel's socket table ([`crate::peer`]) and refuses anyone else, or a
//! connection whose owner cannot be found, with a `403` that says why, before forwarding.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::HeaderName;
use pingora::apps::HttpServerOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;
use pingora::{Error, ErrorSource, ErrorType, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::io::AsyncReadExt;

use crate::tls;
use crate::upstream::UpstreamUrl;
use crate::upstream::{GatewayClient, Upstream};

/// How `modgate agent` was asked to run (its command line; the field comments are the help).
#[derive(clap::Args)]
pub struct AgentOptions {
    /// The gateway's URL, e.g. https://modgate.corp (with its path prefix, if any).
    #[arg(long)]
    pub gateway: String,
    /// Your client certificate (PEM, chain allowed); reloaded when it changes.
    #[arg(long)]
    pub cert: PathBuf,
    /// Your private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// CA bundle that verifies the gateway (system roots when absent).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Where `go` connects: GOPROXY=http://<this address>.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// TLS server name to send and verify (the URL's host when absent).
    #[arg(long)]
    pub server_name: Option<String>,
    /// How often the certificate files are checked for renewal, in seconds.
    #[arg(long, default_value = "2", value_parser = watch_interval)]
    pub watch: Duration,
    /// Allow a non-loopback --listen address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Also lend the certificate to this local user (name or uid; repeatable). By default
    /// only the agent's own user (and root) may use it; other users get a 403.
    #[arg(long = "allow-user", value_name = "USER")]
    pub allow_users: Vec<String>,
    /// PID file (default: agent-<listen address>.pid in the per-user runtime directory,
    /// $XDG_RUNTIME_DIR/modgate or /tmp/modgate-<uid>, so agents never share one).
    #[arg(long)]
    pub pid_file: Option<String>,
}

/// `--watch SECONDS`: any float; one a `Duration` cannot hold (negative, NaN, huge) means
/// the default 2 s.
fn watch_interval(s: &str) -> Result<Duration, std::num::ParseFloatError> {
    let secs: f64 = s.parse()?;
    Ok(Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(2)))
}

/// The agent's own pid file in the per-user runtime directory, one per listen address (two
/// agents never share one): `agent-127.0.0.1-7070.pid`.
pub fn default_pid_file(listen: SocketAddr) -> PathBuf {
    let mut name = String::new();
    for c in listen.to_string().chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    crate::config::instance_dir().join(format!("agent-{}.pid", name.trim_end_matches('-')))
}

/// Headers that describe one hop and are not passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The user's certificate as currently loaded, with the file stamps it was loaded from.
struct CertState {
    pair: Arc<Pair>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

/// One loaded certificate and key: Pingora's form for requests, rustls's for the handshake
/// probe ([`AgentProxy::handshake_alert`]).
struct Pair {
    cert_key: Arc<CertKey>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The certificate files and what was last loaded from them.
pub struct UserCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<CertState>,
}

fn stamp(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<Pair>, String> {
    let certs = tls::read_certs(cert)?;
    let k = tls::read_key(key)?;
    let pair = tls::client_cert_key(
        cert.to_path_buf(),
        certs.clone(),
        key.to_path_buf(),
        k.clone_key(),
    )?;
    Ok(Arc::new(Pair {
        cert_key: Arc::new(pair.to_cert_key()),
        chain: certs,
        key: k,
    }))
}

impl UserCert {
    /// Loads the pair once; a failure here stops the agent from starting.
    pub fn load(cert: &Path, key: &Path) -> Result<UserCert, String> {
        let stamp_now = (stamp(cert), stamp(key));
        let pair = load_pair(cert, key)?;
        Ok(UserCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new(CertState {
                pair,
                stamp: stamp_now,
            }),
        })
    }

    /// The certificate to present now.
    fn current(&self) -> Option<Arc<Pair>> {
        self.state.lock().ok().map(|s| s.pair.clone())
    }

    /// Reloads the pair if either file changed since the last load. Returns whether a new
    /// certificate is now in use; a pair that does not load is logged and ignored (it is tried
    /// again on the next change).
    pub fn refresh(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if now == state.stamp {
            return false;
        }
        state.stamp = now;
        match load_pair(&self.cert, &self.key) {
            Ok(ck) => {
                state.pair = ck;
                log::info!(
                    "agent: loaded renewed client certificate {}",
                    self.cert.display()
                );
                true
            }
            Err(e) => {
                log::error!("agent: renewed certificate not used, keeping the previous one: {e}");
                false
            }
        }
    }
}

/// The agent's proxy logic: everything to the gateway, with the user's certificate.
pub struct AgentProxy {
    gateway: Upstream,
    /// The gateway URL, for the reasons the agent gives when the gateway does not answer.
    url: UpstreamUrl,
    /// The name the gateway's certificate is verified for, and the CAs that verify it (as for
    /// requests), for the handshake probe.
    sni: String,
    roots: Arc<RootCertStore>,
    cert: Arc<UserCert>,
    /// `Host` values a client of this agent sends (any, with `--allow-remote`).
    allowed_hosts: Vec<String>,
    /// Who may borrow the certificate: the agent's own user, root, and these.
    users: Users,
}

/// The local users the agent lends the certificate to.
pub struct Users {
    /// The agent's own (effective) uid.
    pub owner: u32,
    /// Named with `--allow-user`.
    pub allowed: Vec<u32>,
    /// `--allow-remote`: peers on other hosts (whose owner this host cannot know) are served.
    pub remote: bool,
}

impl Users {
    /// Why a connection from `client` to our `server` address may not use the certificate;
    /// `None` when it may. Root is always allowed: it can read the key file and the agent's
    /// memory, so refusing it would protect nothing.
    fn refusal(&self, client: SocketAddr, server: SocketAddr) -> Option<String> {
        let uid = crate::peer::owner(client, server);
        // Only an unknown owner with --allow-remote needs to know whether the peer is here.
        let here = uid.is_none()
            && self.remote
            && match crate::peer::host_addresses() {
                Ok(host) => crate::peer::on_this_host(client.ip(), server.ip(), &host),
                Err(e) => {
                    // Fail closed: without the list, the peer may be a local user.
                    log::warn!("cannot list this host's addresses: {e}");
                    true
                }
            };
        self.judge(client, uid, here)
    }

    /// The decision for a peer at `client` owned by `uid` (`None`: no local socket found);
    /// `here`: the peer's address is one of this host's (a local user whose socket was not
    /// found, never a remote host).
    fn judge(&self, client: SocketAddr, uid: Option<u32>, here: bool) -> Option<String> {
        match uid {
            Some(uid) if uid == 0 || uid == self.owner || self.allowed.contains(&uid) => None,
            Some(uid) => Some(format!(
                "modgate agent: this agent lends the client certificate of user {} to that user \
                 only, and this connection is from user {} (its owner can share it with \
                 --allow-user)",
                crate::peer::describe(self.owner),
                crate::peer::describe(uid)
            )),
            None if self.remote
                && !here
                && !crate::peer::canonical_ip(client.ip()).is_loopback() =>
            {
                None
            }
            None => Some(format!(
                "modgate agent: cannot tell which user the connection from {client} belongs to, \
                 so the client certificate is not lent to it"
            )),
        }
    }
}

/// How long the handshake probe waits for the gateway's verdict once its side is done, and for
/// the whole probe.
const VERDICT_WAIT: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl AgentProxy {
    /// Asks the gateway for its verdict on the certificate: a TLS handshake that sends no
    /// request and then waits for the gateway to speak. A TLS 1.3 server judges the client's
    /// certificate after the client has finished its side of the handshake, so a request sent
    /// at once races the refusal: the request's write meets the closed connection, and the
    /// alert in flight is never read. Returns the alert, in words, if the gateway sent one
    /// (`None` also when the gateway cannot be asked, or keeps the connection open: it took
    /// the certificate).
    async fn handshake_alert(&self) -> Option<String> {
        let pair = self.cert.current()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(pair.chain.clone(), pair.key.clone_key())
            .ok()?;
        let name = ServerName::try_from(self.sni.clone()).ok()?;
        let connector = pingora::tls::TlsConnector::from(Arc::new(config));
        let ask = async {
            let tcp =
                tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port)).await?;
            let mut stream = connector.connect(name, tcp).await?;
            let mut byte = [0u8; 1];
            match tokio::time::timeout(VERDICT_WAIT, stream.read(&mut byte)).await {
                Ok(read) => read.map(|_| ()),
                // The gateway took the certificate and waits for a request.
                Err(_) => Ok(()),
            }
        };
        match tokio::time::timeout(PROBE_TIMEOUT, ask).await {
            Ok(Err(e)) => tls_alert(&e.to_string()),
            _ => None,
        }
    }
}

/// Whether the connection to the gateway ended without an answer, for no reason the error
/// names (no alert, no untrusted gateway certificate): then the handshake probe may know more.
fn connection_lost(e: &Error, text: &str) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::ConnectionClosed
            | ErrorType::H1Error
            | ErrorType::H2Error
            | ErrorType::TLSHandshakeFailure
    ) && untrusted_gateway(text).is_none()
}

#[async_trait]
impl ProxyHttp for AgentProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        // The agent lends the user's certificate to whoever can reach it. A web page can reach
        // a loopback port too (DNS rebinding, fetch from a browser): only GOPROXY reads from
        // a client that names this agent's own address are forwarded.
        // Only its own user may borrow the certificate (checked first: another user learns
        // nothing else from this agent).
        let peer = match (
            session.client_addr().and_then(|a| a.as_inet()),
            session.server_addr().and_then(|a| a.as_inet()),
        ) {
            (Some(client), Some(server)) => self.users.refusal(*client, *server),
            _ => Some("modgate agent: cannot tell who is connecting (not a TCP connection)".into()),
        };
        if let Some(line) = peer {
            log::warn!("agent: refused: {line}");
            answer(session, 403, &line).await?;
            return Ok(true);
        }
        let req = session.req_header();
        let refusal =
            if let Some(r) = crate::local::refusal(req, &self.allowed_hosts, "modgate agent") {
                Some(r)
            } else if req.method != http::Method::GET && req.method != http::Method::HEAD {
                Some(format!(
                    "modgate agent: method {} is not forwarded (GOPROXY is read-only)",
                    req.method
                ))
            } else {
                None
            };
        if let Some(line) = refusal {
            answer(session, 403, &line).await?;
            return Ok(true);
        }
        if session.req_header().uri.path() == "/agent/healthz" {
            answer(session, 200, "agent ok").await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = self.gateway.peer().await?;
        peer.client_cert_key = self.cert.current().map(|p| p.cert_key.clone());
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        let target = upstream_request
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let uri: http::Uri = self
            .gateway
            .request_path(&target, None)
            .map_err(|e| Error::explain(ErrorType::InternalError, e))?
            .parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "building gateway URI", e))?;
        upstream_request.set_uri(uri);
        for name in HOP_BY_HOP {
            upstream_request.remove_header(&HeaderName::from_static(name));
        }
        upstream_request.insert_header("Host", self.gateway.host_header.as_str())?;
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut ()) -> FailToProxy {
        let (code, line) = if *e.esource() == ErrorSource::Downstream {
            match e.etype() {
                // The client is gone: nobody to answer.
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    (0, String::new())
                }
                _ => (400, "modgate agent: malformed request".to_string()),
            }
        } else {
            let text = e.to_string();
            let mut alert = tls_alert(&text);
            if alert.is_none() && connection_lost(e, &text) {
                alert = self.handshake_alert().await;
            }
            let cert = self.cert.cert.display().to_string();
            no_answer(e, &self.url, &cert, alert)
        };
        if code > 0 && session.response_written().is_none() {
            if let Err(err) = answer(session, code, &line).await {
                log::debug!("agent: could not send the error answer: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, _ctx: &mut ()) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        log::info!(
            "agent {} {} {}{}",
            session.req_header().method,
            session.req_header().uri,
            status,
            e.map(|e| format!(" error={e}")).unwrap_or_default()
        );
    }
}

/// Writes the agent's own answer: `status` with `line` (kept on one line) as a `text/plain`
/// body; HEAD gets the headers only.
async fn answer(session: &mut Session, status: u16, line: &str) -> Result<()> {
    let one_line: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let body = format!("{one_line}\n");
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header("Content-Type", "text/plain; charset=utf-8")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(bytes::Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// Why the gateway gave no HTTP answer, as the status the agent answers with (`502`, `504` for
/// a timeout) and the one line `go` prints: `modgate agent: …`. `alert`: the TLS alert the
/// gateway refused the certificate with, when the handshake probe learnt it. Pingora keeps the
/// TLS details (the alert, why the gateway's certificate was not trusted) only as text in the
/// error chain, so they are read from there.
fn no_answer(e: &Error, gateway: &UpstreamUrl, cert: &str, alert: Option<String>) -> (u16, String) {
    let text = e.to_string();
    if let Some(alert) = alert.or_else(|| tls_alert(&text)) {
        let line = match alert_hint(&alert) {
            Some(hint) => format!(
                "modgate agent: the gateway at {gateway} refused the client certificate {cert} \
                 in the TLS handshake: {alert} ({hint})"
            ),
            None => format!(
                "modgate agent: the TLS handshake with the gateway at {gateway} failed: it sent \
                 the alert {alert}"
            ),
        };
        return (502, line);
    }
    if let Some(why) = untrusted_gateway(&text) {
        let hint = if why.contains("UnknownIssuer") || why.contains("unknown issuer") {
            " (pass --ca with the CA that issued it)".to_string()
        } else if why.contains("not valid for name") || why.contains("NotValidForName") {
            format!(
                " (it is not issued for {}; pass --server-name with a name it is issued for)",
                gateway.host
            )
        } else {
            String::new()
        };
        return (
            502,
            format!(
                "modgate agent: the gateway at {gateway} presented a certificate the agent does \
                 not trust: {why}{hint}"
            ),
        );
    }
    let cause = innermost(e);
    let (code, why) = match e.etype() {
        ErrorType::ConnectRefused => (
            502,
            format!("cannot connect to the gateway at {gateway}: connection refused"),
        ),
        ErrorType::ConnectTimedout => (
            504,
            format!("cannot connect to the gateway at {gateway}: timed out"),
        ),
        ErrorType::TLSHandshakeTimedout => (
            504,
            format!("the TLS handshake with the gateway at {gateway} timed out"),
        ),
        ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::SocketError
        | ErrorType::ConnectProxyFailure => (
            502,
            format!("cannot connect to the gateway at {gateway}: {cause}"),
        ),
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError => (
            502,
            format!("the TLS handshake with the gateway at {gateway} failed: {cause}"),
        ),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => (
            504,
            format!("the gateway at {gateway} did not answer in time ({cause})"),
        ),
        ErrorType::ConnectionClosed => (
            502,
            format!("the gateway at {gateway} closed the connection without an answer"),
        ),
        ErrorType::HTTPStatus(code) => (*code, format!("the gateway at {gateway}: {cause}")),
        _ => (
            502,
            format!("no answer from the gateway at {gateway}: {cause}"),
        ),
    };
    (code, format!("modgate agent: {why}"))
}

/// The TLS alert a peer ended the connection with, in words (`UnknownCA` → `unknown ca`, as
/// OpenSSL and curl name it).
fn tls_alert(text: &str) -> Option<String> {
    const MARK: &str = "received fatal alert: ";
    let start = text.find(MARK)? + MARK.len();
    let name: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '(' | ')'))
        .collect();
    if name.is_empty() {
        return None;
    }
    let mut words = String::new();
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous.is_some_and(|p| p.is_ascii_lowercase()) {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
        previous = Some(c);
    }
    Some(words)
}

/// What an alert about the client certificate means for its holder; `None` for alerts that are
/// not about the certificate.
fn alert_hint(alert: &str) -> Option<&'static str> {
    Some(match alert {
        "unknown ca" => "it is not issued by a CA the gateway trusts for client certificates",
        "certificate expired" => "it has expired or is not valid yet: renew it",
        "certificate revoked" => "it has been revoked",
        "certificate required" => "the gateway requires a client certificate",
        "bad certificate" | "unsupported certificate" | "certificate unknown" => {
            "the gateway cannot use it"
        }
        "access denied" => "the gateway does not accept it",
        _ => return None,
    })
}

/// Why the agent did not trust the gateway's certificate (rustls's words).
fn untrusted_gateway(text: &str) -> Option<String> {
    const MARK: &str = "invalid peer certificate: ";
    let start = text.find(MARK)? + MARK.len();
    let rest = &text[start..];
    let end = [", SNI: ", " cause: ", " context: "]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// The innermost explanation of an error: its deepest cause that is not itself a Pingora error,
/// else the deepest context, else the error type.
fn innermost(e: &Error) -> String {
    let chain = crate::error_chain::walk(e);
    chain
        .cause
        .or(chain.context)
        .unwrap_or_else(|| e.etype().as_str().to_string())
}

/// The CAs the handshake probe verifies the gateway with: `--ca`, else the system's (as
/// Pingora does for requests). A bundle that does not load leaves the probe without trust
/// (it then learns nothing; requests are unaffected).
fn probe_roots(ca: Option<&Path>) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let loaded = match ca {
        Some(path) => tls::read_certs(path).and_then(|certs| {
            certs
                .into_iter()
                .try_for_each(|c| roots.add(c).map_err(|e| e.to_string()))
        }),
        None => pingora::tls::load_platform_certs_incl_env_into_store(&mut roots)
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = loaded {
        log::debug!("agent: the handshake probe has no CAs to verify the gateway with: {e}");
    }
    Arc::new(roots)
}

/// Runs the agent until it is told to stop.
pub fn run(o: AgentOptions) -> anyhow::Result<()> {
    if !o.listen.ip().is_loopback() && !o.allow_remote {
        anyhow::bail!(
            "--listen {} is not a loopback address: anyone who can connect would borrow your \
             certificate (pass --allow-remote if that is really wanted)",
            o.listen
        );
    }
    let allowed = o
        .allow_users
        .iter()
        .map(|u| crate::peer::resolve_user(u).map_err(|e| anyhow::anyhow!("--allow-user: {e}")))
        .collect::<anyhow::Result<Vec<u32>>>()?;
    let users = Users {
        owner: rustix::process::geteuid().as_raw(),
        allowed,
        remote: o.allow_remote,
    };
    let url = UpstreamUrl::parse(&o.gateway).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        url.tls,
        "--gateway {}: the agent presents a client certificate, so the gateway URL must be https",
        o.gateway
    );
    let ca = match &o.ca {
        Some(p) => Some(tls::load_ca_bundle(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let cert = Arc::new(UserCert::load(&o.cert, &o.key).map_err(anyhow::Error::msg)?);
    let roots = probe_roots(o.ca.as_deref());
    let gateway = Upstream::gateway_client(
        "gateway",
        GatewayClient {
            url: url.clone(),
            ca,
            client_cert: None,
            sni: o.server_name.clone(),
            read_timeout: Duration::from_secs(300),
            max_h2_streams: 100,
            h2_ping_interval: Some(Duration::from_secs(30)),
        },
    );

    let watcher = cert.clone();
    let interval = o.watch.max(Duration::from_millis(200));
    std::thread::Builder::new()
        .name("agent-cert-watch".into())
        .spawn(move || loop {
            std::thread::sleep(interval);
            watcher.refresh();
        })?;

    crate::server::probe_bind(o.listen)
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", o.listen))?;
    let pid_file = o
        .pid_file
        .clone()
        .unwrap_or_else(|| default_pid_file(o.listen).to_string_lossy().into_owned());
    crate::server::private_parent(Path::new(&pid_file), "remove it, or pass --pid-file")?;
    let conf = ServerConf {
        threads: 1,
        pid_file: pid_file.clone(),
        upgrade_sock: format!("{pid_file}.upgrade.sock"),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        AgentProxy {
            gateway,
            url: url.clone(),
            sni: o.server_name.clone().unwrap_or_else(|| url.host.clone()),
            roots,
            cert,
            allowed_hosts: if o.allow_remote {
                Vec::new()
            } else {
                crate::local::allowed_hosts(o.listen)
            },
            users,
        },
        "modgate agent",
    );
    if let Some(app) = service.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    service.add_tcp(&o.listen.to_string());
    server.add_service(service);
    log::info!(
        "modgate agent: GOPROXY=http://{} → {url} with client certificate {}",
        o.listen,
        o.cert.display()
    );
    let pid_file = crate::server::PidFile::write(&pid_file);
    server.run(pingora::server::RunArgs::default());
    drop(pid_file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> UpstreamUrl {
        UpstreamUrl::parse("https://gw.corp:8443").expect("url")
    }

    /// An error as Pingora builds it: `outer` with `inner` as its cause.
    fn chained(outer: ErrorType, context: &str, inner: Box<Error>) -> Error {
        *Error::because(outer, context.to_string(), inner)
    }

    #[test]
    fn each_listen_address_has_its_own_default_pid_file() {
        let name = |a: &str| {
            default_pid_file(a.parse().expect("addr"))
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        };
        assert_eq!(
            name("127.0.0.1:7070").as_deref(),
            Some("agent-127.0.0.1-7070.pid")
        );
        assert_eq!(name("[::1]:7071").as_deref(), Some("agent-1-7071.pid"));
        assert_ne!(name("127.0.0.1:7070"), name("127.0.0.2:7070"));
    }

    #[test]
    fn only_the_owner_root_and_named_users_borrow_the_certificate() {
        let users = Users {
            owner: 1000,
            allowed: vec![1001],
            remote: false,
        };
        let lo: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        for uid in [0, 1000, 1001] {
            assert_eq!(users.judge(lo, Some(uid), true), None, "uid {uid}");
        }
        let r = users.judge(lo, Some(1002), true).expect("refused");
        assert!(
            r.contains("lends the client certificate of user 1000")
                && r.contains("this connection is from user 1002")
                && r.contains("--allow-user"),
            "{r}"
        );
        // Fail closed when the owner cannot be found.
        let r = users.judge(lo, None, true).expect("refused");
        assert!(r.contains("cannot tell which user"), "{r}");
        let far: SocketAddr = "192.0.2.7:40000".parse().expect("addr");
        assert!(users.judge(far, None, false).is_some());
        // --allow-remote: a peer on another host is served; a local one is still judged.
        let remote = Users {
            remote: true,
            ..users
        };
        assert_eq!(remote.judge(far, None, false), None);
        assert!(remote.judge(lo, None, false).is_some());
        assert!(remote.judge(far, Some(1002), false).is_some());
    }

    /// With `--allow-remote` on a dual-stack listener, a local client on 127.0.0.1 is seen as
    /// `::ffff:127.0.0.1` (which `Ipv6Addr::is_loopback` does not call loopback): when its
    /// owner is not found it is refused, not taken for a remote host's.
    #[test]
    fn a_local_ipv4_mapped_peer_whose_owner_is_not_found_is_not_remote() {
        let users = Users {
            owner: 1000,
            allowed: vec![],
            remote: true,
        };
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().expect("addr");
        assert!(
            users.judge(mapped, None, false).is_some(),
            "a loopback peer (IPv4-mapped) with no owner found was lent the certificate"
        );
        let mapped_far: SocketAddr = "[::ffff:192.0.2.7]:40000".parse().expect("addr");
        assert_eq!(users.judge(mapped_far, None, false), None);
    }

    /// With `--allow-remote`, a peer at one of this host's own addresses (its LAN address,
    /// its link-local one) is a local user: when its owner is not found it is refused.
    #[test]
    fn a_peer_at_an_address_of_this_host_whose_owner_is_not_found_is_refused() {
        let users = Users {
            owner: 1000,
            allowed: vec![],
            remote: true,
        };
        let here: SocketAddr = "192.0.2.2:40000".parse().expect("addr");
        let r = users.judge(here, None, true).expect("refused");
        assert!(r.contains("cannot tell which user"), "{r}");
        assert_eq!(users.judge(here, None, false), None);
        assert_eq!(users.judge(here, Some(1000), true), None);
    }

    #[test]
    fn alerts_are_named_as_curl_names_them() {
        assert_eq!(
            tls_alert("cause: received fatal alert: UnknownCA").as_deref(),
            Some("unknown ca")
        );
        assert_eq!(
            tls_alert("received fatal alert: CertificateExpired, SNI: x").as_deref(),
            Some("certificate expired")
        );
        assert_eq!(tls_alert("connection reset"), None);
    }

    #[test]
    fn a_certificate_refused_in_the_handshake_names_the_alert() {
        // TLS 1.3: the alert arrives when the answer is read.
        let e = chained(
            ErrorType::ReadError,
            "Peer: addr: 127.0.0.1:8443",
            Error::explain(
                ErrorType::ReadError,
                "while reading h2 header: received fatal alert: CertificateRevoked",
            ),
        );
        let (code, line) = no_answer(&e, &gateway(), "me.pem", None);
        assert_eq!(code, 502);
        assert_eq!(
            line,
            "modgate agent: the gateway at https://gw.corp:8443 refused the client certificate \
             me.pem in the TLS handshake: certificate revoked (it has been revoked)"
        );
        // TLS 1.2: during the handshake; an alert not about the certificate.
        let e = Error::explain(
            ErrorType::TLSHandshakeFailure,
            "TLS connect() failed: received fatal alert: ProtocolVersion, SNI: gw.corp",
        );
        let (_, line) = no_answer(&e, &gateway(), "me.pem", None);
        assert_eq!(
            line,
            "modgate agent: the TLS handshake with the gateway at https://gw.corp:8443 failed: \
             it sent the alert protocol version"
        );
    }

    #[test]
    fn an_untrusted_gateway_certificate_says_what_to_pass() {
        let e = Error::explain(
            ErrorType::TLSHandshakeFailure,
            "TLS connect() failed:  TLSHandshakeFailure context: tls connect error cause: \
             invalid peer certificate: UnknownIssuer, SNI: gw.corp",
        );
        let (code, line) = no_answer(&e, &gateway(), "me.pem", None);
        assert_eq!(code, 502);
        assert_eq!(
            line,
            "modgate agent: the gateway at https://gw.corp:8443 presented a certificate the \
             agent does not trust: UnknownIssuer (pass --ca with the CA that issued it)"
        );
    }

    #[test]
    fn connection_failures_and_timeouts() {
        let refused = chained(
            ErrorType::ConnectRefused,
            "Fail to connect to addr: 127.0.0.1:8443",
            Error::because(
                ErrorType::ConnectRefused,
                "Fail to connect to 127.0.0.1:8443",
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            ),
        );
        let cases = [
            (
                refused,
                502,
                "modgate agent: cannot connect to the gateway at https://gw.corp:8443: connection \
                 refused",
            ),
            (
                *Error::explain(ErrorType::ConnectTimedout, "connecting"),
                504,
                "modgate agent: cannot connect to the gateway at https://gw.corp:8443: timed out",
            ),
            (
                *Error::explain(ErrorType::TLSHandshakeTimedout, "handshake"),
                504,
                "modgate agent: the TLS handshake with the gateway at https://gw.corp:8443 timed \
                 out",
            ),
            (
                *Error::explain(ErrorType::ReadTimedout, "while reading h2 header"),
                504,
                "modgate agent: the gateway at https://gw.corp:8443 did not answer in time \
                 (while reading h2 header)",
            ),
            (
                *Error::explain(
                    ErrorType::ConnectNoRoute,
                    "cannot resolve gw.corp: no such host",
                ),
                502,
                "modgate agent: cannot connect to the gateway at https://gw.corp:8443: cannot \
                 resolve gw.corp: no such host",
            ),
            (
                *Error::new(ErrorType::ConnectionClosed),
                502,
                "modgate agent: the gateway at https://gw.corp:8443 closed the connection without \
                 an answer",
            ),
        ];
        for (e, code, line) in cases {
            assert_eq!(
                no_answer(&e, &gateway(), "me.pem", None),
                (code, line.to_string())
            );
        }
    }
}
