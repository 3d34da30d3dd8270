//! `modgate agent`: a loopback GOPROXY endpoint for the stock `go` command, which cannot present
//! a TLS client certificate (golang/go#30119).
//!
//! ```text
//!  go ──http(h1/h2c)──▶ agent 127.0.0.1:7070 ──https + the user's client cert──▶ gateway
//! ```
//!
//! Every request is forwarded unchanged (method, path, query) to the gateway URL, under its path
//! prefix. The certificate and key files are polled for changes, so short-lived certificates
//! renewed on disk are picked up without a restart; a renewal that does not load (half-written,
//! mismatched key) is logged and the previous certificate stays in use. Pingora keys its
//! connection pool by the client certificate, so connections made with an old certificate are
//! simply no longer reused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::HeaderName;
use pingora::apps::HttpServerOptions;
use pingora::http::RequestHeader;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;
use pingora::{Error, ErrorType, Result};

use crate::config::UpstreamUrl;
use crate::respond;
use crate::tls;
use crate::upstream::{GatewayClient, Upstream};

/// How `modgate agent` was asked to run.
pub struct AgentOptions {
    pub gateway: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub listen: SocketAddr,
    pub server_name: Option<String>,
    pub watch: Duration,
    pub allow_remote: bool,
    pub pid_file: String,
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
    cert_key: Arc<CertKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
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

fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertKey>, String> {
    let certs = tls::read_certs(cert)?;
    let k = tls::read_key(key)?;
    let pair = tls::client_cert_key(cert.to_path_buf(), certs, key.to_path_buf(), k)?;
    Ok(Arc::new(pair.to_cert_key()))
}

impl UserCert {
    /// Loads the pair once; a failure here stops the agent from starting.
    pub fn load(cert: &Path, key: &Path) -> Result<UserCert, String> {
        let stamp_now = (stamp(cert), stamp(key));
        let cert_key = load_pair(cert, key)?;
        Ok(UserCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new(CertState {
                cert_key,
                stamp: stamp_now,
            }),
        })
    }

    /// The certificate to present now.
    fn current(&self) -> Option<Arc<CertKey>> {
        self.state.lock().ok().map(|s| s.cert_key.clone())
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
                state.cert_key = ck;
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
    cert: Arc<UserCert>,
    /// `Host` values a client of this agent sends (any, with `--allow-remote`).
    allowed_hosts: Vec<String>,
}

#[async_trait]
impl ProxyHttp for AgentProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        // The agent lends the user's certificate to whoever can reach it. A web page can reach
        // a loopback port too (DNS rebinding, fetch from a browser): only GOPROXY reads from
        // a client that names this agent's own address are forwarded.
        let req = session.req_header();
        let refusal = if let Some(r) = crate::local::refusal(req, &self.allowed_hosts, "agent") {
            Some(r)
        } else if req.method != http::Method::GET && req.method != http::Method::HEAD {
            Some(format!(
                "agent: method {} is not forwarded (GOPROXY is read-only)",
                req.method
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            respond::text(session, 403, &message, &[]).await?;
            return Ok(true);
        }
        if session.req_header().uri.path() == "/agent/healthz" {
            respond::ok(
                session,
                "text/plain",
                bytes::Bytes::from_static(b"agent ok\n"),
            )
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = self.gateway.peer().await?;
        peer.client_cert_key = self.cert.current();
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
            .request_path(&target)
            .parse()
            .map_err(|e| Error::because(ErrorType::InternalError, "building gateway URI", e))?;
        upstream_request.set_uri(uri);
        for name in HOP_BY_HOP {
            upstream_request.remove_header(&HeaderName::from_static(name));
        }
        upstream_request.insert_header("Host", self.gateway.host_header.as_str())?;
        Ok(())
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

/// Runs the agent until it is told to stop.
pub fn run(o: AgentOptions) -> anyhow::Result<()> {
    if !o.listen.ip().is_loopback() && !o.allow_remote {
        anyhow::bail!(
            "--listen {} is not a loopback address: anyone who can connect would borrow your \
             certificate (pass --allow-remote if that is really wanted)",
            o.listen
        );
    }
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
    let conf = ServerConf {
        threads: 1,
        pid_file: o.pid_file.clone(),
        upgrade_sock: format!("{}.upgrade.sock", o.pid_file),
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
            cert,
            allowed_hosts: if o.allow_remote {
                Vec::new()
            } else {
                crate::local::allowed_hosts(o.listen)
            },
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
    let pid_file = crate::server::PidFile::write(&o.pid_file);
    server.run(pingora::server::RunArgs::default());
    drop(pid_file);
    Ok(())
}
