//! Builds and runs the Pingora server: one proxy service per configured listener (each with its
//! own TLS, HTTP/2 and keepalive settings), all sharing one [`Gateway`].
//!
//! Process lifecycle is Pingora's: SIGTERM drains gracefully (`server.grace_period`, then
//! `server.shutdown_timeout`), SIGINT stops at once, and a graceful upgrade/reload is
//! `modgate run --upgrade` followed by SIGQUIT to the old process, which hands its listening
//! sockets over through `server.upgrade_sock`.

use std::sync::Arc;

use anyhow::Context;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TcpSocketOptions;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use crate::config::{GatewayConfig, ListenerConfig};
use crate::gateway::Gateway;
use crate::proxy::{GatewayProxy, ListenerRuntime};
use crate::upstream::tcp_keepalive;

/// How `modgate run` was asked to start.
pub struct RunOptions {
    pub upgrade: bool,
    pub daemon: bool,
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

/// Starts every listener and serves until the process is told to stop. Never returns on
/// success (Pingora exits the process).
pub fn run(config: GatewayConfig, options: RunOptions) -> anyhow::Result<()> {
    let gateway = Arc::new(Gateway::new(&config)?);
    for w in gateway.warnings() {
        log::warn!("{w}");
    }
    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();
    for listener in config.listeners.iter() {
        add_listener(
            &mut server,
            gateway.clone(),
            listener,
            config.server.threads,
        )
        .with_context(|| format!("listener {:?}", listener.name.0))?;
    }
    log::info!(
        "modgate {} serving {} route(s) on {}",
        env!("CARGO_PKG_VERSION"),
        gateway.routes.len(),
        config
            .listeners
            .iter()
            .map(|l| format!(
                "{}://{} ({})",
                if l.tls.is_some() { "https" } else { "http" },
                l.address.0,
                l.name.0
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.run_forever()
}

fn add_listener(
    server: &mut Server,
    gateway: Arc<Gateway>,
    l: &ListenerConfig,
    threads: usize,
) -> anyhow::Result<()> {
    let runtime = ListenerRuntime {
        name: l.name.0.clone(),
        keepalive_secs: l.keepalive_timeout.0.as_secs().max(1),
        metrics: l.metrics,
    };
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        GatewayProxy::new(gateway, runtime),
        &format!("modgate listener {}", l.name.0),
    );
    if let Some(app) = service.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = l.http2 && l.tls.is_none();
        options.keepalive_request_limit = l.keepalive_requests;
        options.h2_idle_timeout = l.h2_idle_timeout.map(|d| d.0);
        app.server_options = Some(options);
        let mut h2 = default_h2_options();
        h2.max_concurrent_streams(l.h2_max_concurrent_streams);
        app.h2_options = Some(h2);
    }
    let mut socket = TcpSocketOptions::default();
    socket.tcp_keepalive = l.tcp_keepalive.as_ref().map(tcp_keepalive);
    let address = l.address.0.to_string();
    match &l.tls {
        Some(tls) => {
            let cert = tls.cert_path.to_string_lossy();
            let key = tls.key_path.to_string_lossy();
            let mut settings = TlsSettings::intermediate(&cert, &key)
                .map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
            if l.http2 {
                settings.enable_h2();
            }
            service.add_tls_with_settings(&address, Some(socket), settings);
        }
        None => service.add_tcp_with_settings(&address, socket),
    }
    service.threads = Some(threads.max(1));
    server.add_service(service);
    Ok(())
}
