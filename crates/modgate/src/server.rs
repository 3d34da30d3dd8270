//! Builds and runs the Pingora server: one proxy service per configured listener (each with its
//! own TLS, HTTP/2 and keepalive settings), all sharing one [`Gateway`].
//!
//! Process lifecycle is Pingora's: SIGTERM drains gracefully (`server.grace_period`, then
//! `server.shutdown_timeout`), SIGINT stops at once, and a graceful upgrade/reload is
//! `modgate run --upgrade` followed by SIGQUIT to the old process, which hands its listening
//! sockets over through `server.upgrade_sock`. SIGHUP reloads TLS material and credential
//! files in place ([`crate::reload`]). When Pingora returns, the audit log is flushed and
//! pending spans are exported before the process exits.

use std::sync::Arc;

use anyhow::Context;
use http::HeaderName;
use modgate_identity::{CidrSet, ReloadableTls};
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TcpSocketOptions;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::cache::CacheRuntime;
use crate::config::{GatewayConfig, ListenerConfig};
use crate::conn::{Caps, Deadlines, GuardedApp, Limits};
use crate::gateway::Gateway;
use crate::identity::{HandshakeCapture, IdentitySettings};
use crate::proxy::{GatewayProxy, ListenerRuntime};
use crate::record::Recorder;
use crate::reload::{Reloader, TlsReload};
use crate::upstream::tcp_keepalive;

/// How `modgate run` was asked to start.
pub struct RunOptions {
    pub upgrade: bool,
}

fn server_conf(config: &GatewayConfig) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads.max(1),
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(s.grace_period.0.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.0.as_secs()),
        upstream_keepalive_pool_size: s.upstream_pool_size,
        ..ServerConf::default()
    }
}

/// SIGHUP's default action is to end the process, and the reload service only starts listening
/// for it once Pingora runs its services — after the listeners accept. Registering a tokio
/// handler now closes that window: tokio never unregisters a signal handler, so from here on a
/// SIGHUP is queued for the reload service instead of killing the gateway.
fn hold_sighup() {
    let registered = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        });
    if let Err(e) = registered {
        log::warn!("could not register for SIGHUP early: {e}");
    }
}

/// Every header name that could carry a client identity: removed from every request.
fn identity_header_names(config: &GatewayConfig) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = crate::config::ForwardNames::default()
        .all()
        .into_iter()
        .cloned()
        .collect();
    for u in config.upstreams.values() {
        if let Some(f) = &u.forward_identity {
            names.extend(f.names.all().into_iter().cloned());
        }
    }
    for l in config.listeners.iter() {
        names.push(l.forwarded_headers.cert.0.clone());
        names.push(l.forwarded_headers.verify.0.clone());
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// Starts every listener and serves until the process is told to stop, then flushes the
/// audit log and pending spans.
pub fn run(config: GatewayConfig, options: RunOptions) -> anyhow::Result<()> {
    let gateway = Arc::new(Gateway::new(&config)?);
    for w in gateway.warnings() {
        log::warn!("{w}");
    }
    hold_sighup();
    let cache = match &config.cache {
        Some(c) => {
            let rt = CacheRuntime::open(c)?;
            let stats = rt.storage.stats();
            log::info!(
                "cache {}: {} object(s), {} bytes; ledger {}: {} record(s)",
                c.dir.0.display(),
                stats.objects,
                stats.bytes,
                c.ledger_path().display(),
                rt.ledger.count().unwrap_or(0)
            );
            Some(Arc::new(rt))
        }
        None => None,
    };
    let recorder = Arc::new(Recorder::start(&config.audit, &config.telemetry)?);
    let opt = Opt {
        upgrade: options.upgrade,
        // Foreground only: Pingora daemonizes by forking inside `run`, after the audit writer,
        // the span exporter and the ledger are running, and their threads would not survive the
        // fork. Run modgate under systemd or another supervisor.
        daemon: false,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();
    let strip = identity_header_names(&config);
    let mut reloads = Vec::new();
    for listener in config.listeners.iter() {
        let reload = add_listener(
            &mut server,
            gateway.clone(),
            recorder.clone(),
            cache.clone(),
            listener,
            &strip,
            config.server.threads,
        )
        .with_context(|| format!("listener {:?}", listener.name.0))?;
        reloads.extend(reload);
    }
    let reloader = Reloader {
        tls: reloads,
        auth: gateway.auth.clone(),
        audit: recorder.audit.clone(),
        cache: cache.clone(),
    };
    server.add_service(pingora::services::background::background_service(
        "modgate reloader",
        reloader,
    ));
    if let Some(c) = &cache {
        server.add_service(pingora::services::background::background_service(
            "modgate cache state",
            c.storage
                .persist_service(std::time::Duration::from_secs(300)),
        ));
    }
    log::info!(
        "modgate {} serving {} route(s) on {}",
        env!("CARGO_PKG_VERSION"),
        gateway.routes.len(),
        config
            .listeners
            .iter()
            .map(|l| format!(
                "{}://{} ({}{})",
                if l.tls.is_some() { "https" } else { "http" },
                l.address.0,
                l.name.0,
                match l.tls.as_ref().map(|t| t.client_auth()) {
                    Some(modgate_identity::ClientAuth::Required) => ", client cert required",
                    Some(modgate_identity::ClientAuth::Optional) => ", client cert optional",
                    _ => "",
                }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.run(RunArgs::default());
    recorder.shutdown();
    log::info!("modgate stopped");
    Ok(())
}

fn add_listener(
    server: &mut Server,
    gateway: Arc<Gateway>,
    recorder: Arc<Recorder>,
    cache: Option<Arc<CacheRuntime>>,
    l: &ListenerConfig,
    strip: &[HeaderName],
    threads: usize,
) -> anyhow::Result<Option<TlsReload>> {
    // Checked when the configuration was read; loaded again here so a file changed since then
    // is still a clean error and never reaches Pingora's panicking build().
    let material = match &l.tls {
        Some(tls) => Some(ReloadableTls::new(&tls.files).map_err(|e| anyhow::anyhow!("tls: {e}"))?),
        None => None,
    };
    let runtime = ListenerRuntime {
        name: l.name.0.clone(),
        keepalive_secs: l.keepalive_timeout.0.as_secs().max(1),
        metrics: l.metrics,
        admin: l.admin,
        debug_headers: l.debug_headers,
        own_hosts: crate::local::allowed_hosts(l.address.0),
        require_identity: l.require_identity,
        identity: IdentitySettings {
            trusted: CidrSet::new(l.trusted_proxies.iter().map(|c| c.0).collect()),
            forwarded: l.forwarded_headers.clone(),
            strip: strip.to_vec(),
        },
        tls: material.clone(),
    };
    let mut app = pingora::proxy::http_proxy(
        &server.configuration,
        GatewayProxy::new(gateway, runtime, recorder, cache),
    );
    let mut options = HttpServerOptions::default();
    options.h2c = l.http2 && l.tls.is_none();
    options.keepalive_request_limit = l.keepalive_requests;
    options.h2_idle_timeout = l.h2_idle_timeout.map(|d| d.0);
    app.server_options = Some(options);
    let mut h2 = default_h2_options();
    h2.max_concurrent_streams(l.h2_max_concurrent_streams);
    app.h2_options = Some(h2);
    let limits = Limits {
        deadlines: Deadlines {
            idle: l.idle_timeout.0,
            headers: l.header_timeout.0,
        },
        caps: Caps {
            listener: l.max_connections,
            source: l.max_connections_per_source,
        },
    };
    let mut service = Service::new(
        format!("modgate listener {}", l.name.0),
        GuardedApp::new(app, &l.name.0, limits),
    );
    let mut socket = TcpSocketOptions::default();
    socket.tcp_keepalive = l.tcp_keepalive.as_ref().map(tcp_keepalive);
    let address = l.address.0.to_string();
    let mut reload = None;
    match (&l.tls, material) {
        (Some(tls), Some(material)) => {
            let mut settings = TlsSettings::with_callbacks(Box::new(HandshakeCapture))
                .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
            settings.set_cert_resolver(material.cert_resolver());
            if let Some(verifier) = material.client_verifier() {
                settings.set_client_cert_verifier(verifier);
            }
            if l.http2 {
                settings.enable_h2();
            }
            service.add_tls_with_settings(&address, Some(socket), settings);
            let mut files = vec![tls.files.cert.clone(), tls.files.key.clone()];
            files.extend(tls.files.client_ca.iter().cloned());
            files.extend(tls.files.crl.iter().cloned());
            reload = Some(TlsReload {
                listener: l.name.0.clone(),
                tls: material,
                files,
                watch: tls.watch,
            });
        }
        _ => service.add_tcp_with_settings(&address, socket),
    }
    service.threads = Some(threads.max(1));
    server.add_service(service);
    Ok(reload)
}
