//! An upstream's file settings ([`UpstreamConfig`]) into a runtime [`Upstream`]: the one place
//! an upstream becomes a Pingora peer (also the gateway as seen by `agent` and `warm`, through
//! [`gateway_client`]), and TCP keepalive settings into Pingora's.

use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::{TcpKeepalive, ALPN};
use pingora::upstreams::peer::PeerOptions;

use crate::config::{CacheScope, DurationValue, TcpKeepaliveConfig, UpstreamConfig};
use crate::tls::{ClientCertKey, PemBundle};
use crate::upstream::{Upstream, UpstreamKind, UpstreamParts, UpstreamUrl};

/// Pingora's TCP keepalive settings from the file's.
pub fn tcp_keepalive(c: &TcpKeepaliveConfig) -> TcpKeepalive {
    TcpKeepalive {
        idle: c.idle.0,
        interval: c.interval.0,
        count: c.count,
        #[cfg(target_os = "linux")]
        user_timeout: Duration::ZERO,
    }
}

/// How one of modgate's own client commands (`agent`, `warm`) reaches a gateway: the one
/// upstream-peer builder is [`from_config`], these are the settings it gets.
pub struct GatewayClient {
    pub url: UpstreamUrl,
    /// CA bundle that verifies the gateway (system roots when absent).
    pub ca: Option<PemBundle>,
    /// The client certificate presented (the agent swaps its own in per request).
    pub client_cert: Option<ClientCertKey>,
    /// TLS server name sent and verified (the URL's host when absent).
    pub sni: Option<String>,
    /// Longest wait for any single read from the gateway.
    pub read_timeout: Duration,
    /// Most concurrent streams on one HTTP/2 connection.
    pub max_h2_streams: usize,
    /// HTTP/2 PINGs on idle connections.
    pub h2_ping_interval: Option<Duration>,
}

/// The gateway as an upstream of one of modgate's client commands: private (it may be sent
/// anything), verified, HTTP/2 negotiated on https.
pub fn gateway_client(name: &str, c: GatewayClient) -> Upstream {
    let config = UpstreamConfig {
        kind: UpstreamKind::Proxy,
        url: c.url,
        module: None,
        repo: None,
        repo_aliases: None,
        credential: None,
        private: true,
        ca: c.ca,
        client_cert: c.client_cert,
        host: None,
        sni: c.sni,
        http2: None,
        connect_timeout: DurationValue(Duration::from_secs(10)),
        read_timeout: DurationValue(c.read_timeout),
        write_timeout: DurationValue(Duration::from_secs(60)),
        idle_timeout: DurationValue(Duration::from_secs(60)),
        h2_ping_interval: c.h2_ping_interval.map(DurationValue),
        max_h2_streams: c.max_h2_streams,
        tcp_keepalive: None,
        forward_identity: None,
        cache_scope: Default::default(),
        forward_set_cookie: false,
    };
    from_config(name, &config)
}

/// Builds the run-time form of an upstream from its configuration.
pub fn from_config(name: &str, c: &UpstreamConfig) -> Upstream {
    let mut options = PeerOptions::new();
    options.connection_timeout = Some(c.connect_timeout.0);
    options.total_connection_timeout = Some(c.connect_timeout.0 * 2);
    options.read_timeout = Some(c.read_timeout.0);
    options.write_timeout = Some(c.write_timeout.0);
    options.idle_timeout = Some(c.idle_timeout.0);
    options.h2_ping_interval = c.h2_ping_interval.map(|d| d.0);
    options.max_h2_streams = c.max_h2_streams.max(1);
    options.tcp_keepalive = c.tcp_keepalive.as_ref().map(tcp_keepalive);
    options.verify_cert = true;
    options.verify_hostname = true;
    options.alpn = match (c.url.tls, c.http2) {
        // https: negotiate, preferring h2, unless told not to.
        (true, None | Some(true)) => ALPN::H2H1,
        (true, Some(false)) => ALPN::H1,
        // http: h2c only by prior knowledge, when asked for.
        (false, Some(true)) => ALPN::H2,
        (false, None | Some(false)) => ALPN::H1,
    };
    options.ca = c.ca.as_ref().map(|b| b.to_ca());
    Upstream::new(UpstreamParts {
        name: name.to_string(),
        url: c.url.clone(),
        private: c.private,
        host_header: c.host.clone().unwrap_or_else(|| c.url.authority()),
        sni: c.sni.clone().unwrap_or_else(|| c.url.host.clone()),
        options,
        client_cert: c.client_cert.as_ref().map(|k| Arc::new(k.to_cert_key())),
        forward: c.forward_identity.clone(),
        per_identity_cache: c.cache_scope == CacheScope::PerIdentity,
        forward_set_cookie: c.forward_set_cookie,
    })
}

/// A `kind: git` upstream: served by the gateway's git origin listening on `sock`.
pub fn git(name: &str, c: &UpstreamConfig, sock: &str) -> Upstream {
    from_config(name, c).through_origin(sock)
}
