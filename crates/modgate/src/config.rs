//! The `gateway.yaml` file format: typed, strictly validated, with errors that name the file,
//! line, column and YAML path of the offending value.
//!
//! Every check that can be made while reading happens *inside* deserialization (patterns are
//! compiled, URLs parsed, upstream references resolved, TLS files read), because that is where
//! `serde_yaml_ng` knows the position: a bad value is reported as
//! `gateway.yaml:14:18: routes[1].chain[0]: unknown upstream "corp-athen" (defined: golang)`.
//! Cross-references need to know the upstream names before the routes are read, so loading runs
//! two passes over the text: a lenient one that only collects `upstreams`, then the strict one.
//! Before either, the text is parsed as plain YAML: a structural slip (a mis-indented line) is
//! reported where the parser first sees it, with the parser's own words, rather than as a
//! consequence a typed pass stumbles on earlier or later (a missing field, a key read as an
//! upstream, an "unknown upstream" because pass 1 could not read the upstreams).
//! This file holds only the file format; `crate::gateway` turns it into the runtime model.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use modgate_policy::Pattern;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::tls::{self, ClientCertKey, PemBundle};
pub use crate::upstream::{Fallthrough, UpstreamKind, UpstreamUrl};

mod access;
mod cache;
pub mod checksum_log;
pub mod cluster;
pub mod fetched;
pub mod forward;
mod identity;
mod ratelimit;
mod text;
mod versions;

use text::from_str_with;

pub use access::AccessConfig;
pub use cache::{CacheConfig, PathValue, RouteCacheConfig};
pub use checksum_log::ChecksumLogConfig;
pub use cluster::ClusterConfig;
pub use fetched::FetchedConfig;
pub use forward::{ForwardIdentityConfig, ForwardNames, ForwardedInput};
pub use identity::{
    AuditConfig, AuditFailMode, AuditOutput, AuthConfig, CidrValue, ListenerTls, TelemetryConfig,
};
pub use ratelimit::RateLimitsConfig;
#[cfg(test)]
pub use versions::parse_expiry;
#[cfg(test)]
pub use versions::WaiverConfig;
pub use versions::{
    mode_for, AdvisoryFilter, CooldownConfig, RetractionsConfig, VersionMode, VersionsConfig,
    VulnerabilitiesConfig,
};

/// Longest upstream chain accepted; Pingora retries a request at most 16 times and a reused
/// connection that turns out dead also costs a retry.
pub const MAX_CHAIN_LEN: usize = 8;

/// A configuration error, already formatted as `file:line:column: path: message`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// What the loader knows while deserializing: where relative file paths start and which
/// upstreams exist (name → private; `None` when pass 1 could not read them, and the strict
/// pass reports why at the upstreams themselves).
struct LoadContext {
    base_dir: PathBuf,
    upstreams: Option<BTreeMap<String, bool>>,
}

thread_local! {
    static CONTEXT: RefCell<Option<LoadContext>> = const { RefCell::new(None) };
}

fn with_context<R>(f: impl FnOnce(&LoadContext) -> R) -> Option<R> {
    CONTEXT.with(|c| c.borrow().as_ref().map(f))
}

/// Resolves a path from the config file against the directory holding the file.
fn resolve_path(p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        return path;
    }
    with_context(|c| c.base_dir.join(&path)).unwrap_or(path)
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub server: ServerSettings,
    pub listeners: NonEmpty<ListenerConfig>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub routes: NonEmpty<RouteConfig>,
    /// Credential files for basic auth and bearer tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Roles and their permissions on module paths.
    #[serde(default)]
    pub access: AccessConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The persistent response cache and integrity ledger (off when absent).
    pub cache: Option<CacheConfig>,
    /// Replicas sharing their ledger in PostgreSQL (off when absent; needs `cache`).
    pub cluster: Option<ClusterConfig>,
    /// The index of what each identity fetched (off when absent; needs `cache`).
    pub fetched: Option<FetchedConfig>,
    /// Checksum databases proxied at `/sumdb/<name>/...` (name → where it is served).
    #[serde(default)]
    pub sumdb: BTreeMap<SumdbName, UpstreamConfig>,
    /// The company's own checksum database, served at `/sumdb/<name>/` (off when absent;
    /// needs `cache`).
    pub checksum_log: Option<ChecksumLogConfig>,
    /// The process log (format and level; `RUST_LOG`, when set, decides the level instead).
    #[serde(default)]
    pub log: LogConfig,
    /// Which versions anyone may build with (the vulnerability database and its policy).
    #[serde(default)]
    pub versions: VersionsConfig,
    /// Requests and response bytes per identity (no limits when absent).
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
}

/// `log:` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default): one human line per event; `json`: one JSON object per line, the
    /// access line's fields as an `access` object.
    pub format: LogFormat,
    /// `error`, `warn`, `info` (default), `debug` or `trace`.
    pub level: LogLevel,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogConfig {
    /// Installs these settings in the process logger.
    pub fn apply(&self) {
        crate::logging::configure(self.format == LogFormat::Json, self.level.0);
    }
}

/// The most verbose level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevel(pub log::LevelFilter);

impl Default for LogLevel {
    fn default() -> Self {
        LogLevel(log::LevelFilter::Info)
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(
            d,
            "a log level: error, warn, info, debug or trace",
            |s| match s.to_ascii_lowercase().as_str() {
                "error" => Ok(LogLevel(log::LevelFilter::Error)),
                "warn" => Ok(LogLevel(log::LevelFilter::Warn)),
                "info" => Ok(LogLevel(log::LevelFilter::Info)),
                "debug" => Ok(LogLevel(log::LevelFilter::Debug)),
                "trace" => Ok(LogLevel(log::LevelFilter::Trace)),
                _ => Err(format!(
                    "unknown log level {s:?} (use error, warn, info, debug or trace)"
                )),
            },
        )
    }
}

/// The name of a checksum database, as `go` puts it in `/sumdb/<name>/` (e.g. `sum.golang.org`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SumdbName(pub String);

impl<'de> Deserialize<'de> for SumdbName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a checksum database name such as sum.golang.org", |s| {
            if modgate_protocol::sumdb::is_valid_sumdb_name(s) {
                Ok(SumdbName(s.to_string()))
            } else {
                Err(format!(
                    "{s:?} is not a checksum database name (a host name such as sum.golang.org)"
                ))
            }
        })
    }
}

/// Process-wide settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Worker threads per listener service.
    pub threads: usize,
    /// `false` (default): one scheduler per worker thread, as nginx's workers: less
    /// scheduling overhead (small cached hits: about a fifth less CPU). Nothing in the request
    /// path blocks a worker thread: misses of exact versions are checked by the verifying
    /// origin, on its own threads and the blocking pool. `true`: tokio's work-stealing
    /// scheduler (idle threads take queued tasks from busy ones).
    pub work_stealing: bool,
    /// Optional path prefix the GOPROXY protocol is served under (e.g. `/goproxy`).
    pub path_prefix: String,
    /// Time given to in-flight requests on graceful shutdown / upgrade.
    pub grace_period: DurationValue,
    /// Hard limit after the grace period.
    pub shutdown_timeout: DurationValue,
    pub pid_file: String,
    /// Socket used to hand listeners over on a graceful upgrade (`modgate run --upgrade`).
    pub upgrade_sock: String,
    /// Idle upstream connections kept per worker thread.
    pub upstream_pool_size: usize,
    /// Most threads of each listener's blocking pool (disk cache reads and writes, password
    /// hashes, git): a burst of large downloads queues instead of growing memory with threads.
    pub max_blocking_threads: usize,
    /// Where `kind: git` upstreams keep their bare mirrors (default: `git/` in the cache
    /// directory, else a private per-instance directory).
    pub git_dir: Option<cache::PathValue>,
    /// The gateway's own base URL as clients reach it (`https://modgate.corp`), for the
    /// `?go-get=1` answers; default: the scheme of the listener and the request's `Host`.
    pub public_url: Option<UpstreamUrl>,
    /// A git configuration file every git command of the gateway reads (`url.*.insteadOf`,
    /// `http.proxy`, `http.sslCAInfo`, ...); none by default.
    pub git_config: Option<cache::PathValue>,
    /// How long a git upstream remembers that the Git host has no such repository (requests
    /// for it meanwhile are answered 404 without asking the host; default 5s, `0s`: not kept).
    pub git_not_found_ttl: DurationValue,
    /// A version a git mirror lacks makes it ask the host again before answering "unknown
    /// revision", at most once per this interval per repository (default 1s).
    pub git_miss_refresh: DurationValue,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            threads: 2,
            work_stealing: false,
            path_prefix: String::new(),
            grace_period: DurationValue(Duration::from_secs(30)),
            shutdown_timeout: DurationValue(Duration::from_secs(10)),
            // Filled by `load` with per-instance paths (`instance_paths`).
            pid_file: String::new(),
            upgrade_sock: String::new(),
            upstream_pool_size: 128,
            max_blocking_threads: 16,
            git_dir: None,
            git_config: None,
            git_not_found_ttl: DurationValue(Duration::from_secs(5)),
            git_miss_refresh: DurationValue(Duration::from_secs(1)),
            public_url: None,
        }
    }
}

impl GatewayConfig {
    /// Where the integrity ledger of `cache` is: the cluster's PostgreSQL database when
    /// `cluster:` is set (events published as `origin`, appended to the replica's name), else
    /// the cache's SQLite file.
    pub fn ledger_at(
        &self,
        cache: &CacheConfig,
        role: Option<&str>,
    ) -> anyhow::Result<crate::cache::LedgerAt> {
        Ok(match &self.cluster {
            Some(cluster) => {
                let replica = cluster.replica();
                crate::cache::LedgerAt::Postgres {
                    settings: cluster.settings().map_err(|e| anyhow::anyhow!(e))?,
                    origin: match role {
                        Some(r) => format!("{replica} ({r})"),
                        None => replica,
                    },
                }
            }
            None => crate::cache::LedgerAt::Sqlite(cache.ledger_path()),
        })
    }

    /// Where the checksum database (`checksum_log:`) is kept: the cluster's PostgreSQL
    /// database when `cluster:` is configured, else its SQLite file.
    pub fn checksum_log_at(&self, cache: &CacheConfig) -> anyhow::Result<crate::sumlog::LogAt> {
        Ok(match (&self.cluster, &self.checksum_log) {
            (Some(cluster), _) => {
                crate::sumlog::LogAt::Postgres(cluster.settings().map_err(|e| anyhow::anyhow!(e))?)
            }
            (None, Some(l)) => crate::sumlog::LogAt::File(l.log_path(cache)),
            (None, None) => anyhow::bail!("no checksum_log: section in the configuration"),
        })
    }

    /// The fetched index's file, when `fetched:` (and so `cache:`) is configured. Not used
    /// when `cluster:` is set (see `fetched::FetchedAt::of`).
    pub fn fetched_path(&self) -> Option<PathBuf> {
        Some(self.fetched.as_ref()?.path(&self.cache.as_ref()?.dir.0))
    }

    /// The cache lifetimes in force (the defaults when there is no cache).
    pub fn ttls(&self) -> crate::cache::Ttls {
        self.cache
            .as_ref()
            .map(|c| c.ttl.runtime())
            .unwrap_or_default()
    }

    /// The Unix socket of the gateway's git origin (beside the upgrade socket, as private).
    pub fn git_origin_sock(&self) -> String {
        format!("{}.git", self.server.upgrade_sock)
    }

    /// The prefix of the Unix sockets of the gateways' verifying origins (beside the git
    /// origin's); each process's is this and its pid ([`Self::verify_origin_sock`]).
    pub fn verify_origin_prefix(&self) -> String {
        format!("{}.verify.", self.server.upgrade_sock)
    }

    /// This process's verifying origin's socket: its own, never handed over in a graceful
    /// upgrade (its jobs are this process's).
    pub fn verify_origin_sock(&self) -> String {
        format!("{}{}", self.verify_origin_prefix(), std::process::id())
    }
}

/// One listening socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: Name,
    pub address: ListenAddress,
    /// Serve HTTPS with this certificate (and verify client certificates); plaintext when
    /// absent.
    pub tls: Option<ListenerTls>,
    /// Answer 401 to requests that carry no identity (no client certificate, no credentials).
    #[serde(default)]
    pub require_identity: bool,
    /// Peers whose forwarded client-certificate headers are believed (an L7 load balancer that
    /// terminates TLS); from anyone else those headers are removed.
    #[serde(default)]
    pub trusted_proxies: Vec<CidrValue>,
    /// Accept `trusted_proxies` networks wider than /8 (IPv4) or /16 (IPv6), such as
    /// `0.0.0.0/0`: anyone there may claim any client certificate.
    #[serde(default)]
    pub trusted_proxies_force: bool,
    /// Add `X-Modgate-Cache`, `X-Modgate-Route` and `X-Modgate-Upstream` to answers (for
    /// operators and tests; they tell clients what the organisation fetched and from where).
    #[serde(default)]
    pub debug_headers: bool,
    /// Header names a trusted proxy uses.
    #[serde(default)]
    pub forwarded_headers: ForwardedInput,
    /// Offer HTTP/2: via ALPN on TLS listeners, as h2c (prior knowledge) on plaintext ones.
    #[serde(default = "default_true")]
    pub http2: bool,
    /// Most concurrent HTTP/2 streams per client connection.
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// Bytes one HTTP/2 stream may queue for its client before the gateway waits for the client
    /// to take them (bounds memory under many concurrent large downloads).
    #[serde(default = "default_h2_send_buffer")]
    pub h2_send_buffer: crate::config::cache::ByteSize,
    /// Close an HTTP/2 connection with no request for this long (the listener's
    /// `idle_timeout` plus `header_timeout` when absent).
    pub h2_idle_timeout: Option<DurationValue>,
    /// Close a TLS connection whose handshake is not done this long after it was accepted.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: DurationValue,
    /// HTTP/1.1 keep-alive idle timeout.
    #[serde(default = "default_keepalive")]
    pub keepalive_timeout: DurationValue,
    /// Most requests served on one HTTP/1.1 connection (unlimited when absent).
    pub keepalive_requests: Option<u32>,
    /// Close a connection that sends nothing for this long before a request's first byte (new
    /// connections after their TLS handshake, and kept-alive ones between requests).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: DurationValue,
    /// Answer `408` and close when a request's headers are not complete this long after its
    /// first byte, however the bytes trickle in.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: DurationValue,
    /// Most client connections open on this listener at once; more are answered `503`.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Most client connections open from one source address at once; more are answered `503`.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: u32,
    /// TCP keepalive probes on accepted connections (the only liveness check for idle h2
    /// clients: Pingora 0.9 sends no server-side h2 PING).
    pub tcp_keepalive: Option<TcpKeepaliveConfig>,
    /// Serve Prometheus metrics at `/metrics` on this listener.
    #[serde(default)]
    pub metrics: bool,
    /// Serve `POST /admin/cache/purge?target=MODULE[@VERSION]` on this listener (put it on a
    /// loopback or otherwise restricted listener).
    #[serde(default)]
    pub admin: bool,
}

fn default_true() -> bool {
    true
}
fn default_h2_send_buffer() -> crate::config::cache::ByteSize {
    crate::config::cache::ByteSize(128 << 10)
}

fn default_h2_streams() -> u32 {
    100
}
fn default_idle_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}

fn default_handshake_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(10))
}

fn default_header_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(20))
}

fn default_max_connections() -> u32 {
    10_000
}

fn default_max_connections_per_source() -> u32 {
    1_000
}

fn default_keepalive() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}

/// TCP keepalive settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepaliveConfig {
    pub idle: DurationValue,
    pub interval: DurationValue,
    pub count: usize,
}

/// One upstream GOPROXY server.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `proxy` (default): a GOPROXY server; `git`: a Git host, whose modules modgate builds
    /// itself (`url` is then the host's base URL).
    #[serde(default, deserialize_with = "parsed")]
    pub kind: UpstreamKind,
    pub url: UpstreamUrl,
    /// `kind: git`: the repository root's import path, as path elements and `{name}`
    /// captures, e.g. `git.corp.example/{group}/{repo}`.
    pub module: Option<String>,
    /// `kind: git`: the repository's path under `url`, over the captures of `module`, e.g.
    /// `{group}/{repo}.git`.
    pub repo: Option<String>,
    /// `kind: git`: suffixes the Git host folds onto a repository's name (default `.git` and
    /// `.wiki`; `.git` always applies): access to `group/repo.git` is decided as access to
    /// `group/repo` too.
    pub repo_aliases: Option<Vec<String>>,
    /// `kind: git`: what the gateway authenticates to the Git host with.
    pub credential: Option<GitCredentialConfig>,
    /// Private upstreams may serve private routes; public ones never see a private path.
    #[serde(default)]
    pub private: bool,
    /// CA bundle that verifies this upstream's certificate (system roots when absent).
    pub ca: Option<PemBundle>,
    /// Client certificate presented to this upstream (upstream mTLS).
    pub client_cert: Option<ClientCertKey>,
    /// `Host` header sent upstream (the URL's authority when absent).
    pub host: Option<String>,
    /// TLS server name sent and verified (the URL's host when absent).
    pub sni: Option<String>,
    /// Use HTTP/2: negotiated by ALPN on https (default on), prior knowledge (h2c) on http
    /// (default off).
    pub http2: Option<bool>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: DurationValue,
    /// Longest wait for any single read from the upstream.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: DurationValue,
    #[serde(default = "default_read_timeout")]
    pub write_timeout: DurationValue,
    /// How long an idle pooled connection is kept.
    #[serde(default = "default_keepalive")]
    pub idle_timeout: DurationValue,
    /// Send HTTP/2 PINGs on idle upstream connections at this interval.
    pub h2_ping_interval: Option<DurationValue>,
    /// Most concurrent streams modgate opens on one upstream HTTP/2 connection.
    #[serde(default = "default_upstream_h2_streams")]
    pub max_h2_streams: usize,
    pub tcp_keepalive: Option<TcpKeepaliveConfig>,
    /// Which client-certificate / identity headers this upstream receives.
    pub forward_identity: Option<ForwardIdentityConfig>,
    /// Whether this upstream's answers may be shared between identities through the cache
    /// (`shared`, the default) or are kept per identity (`per-identity`: for an upstream that
    /// authorises each identity itself without saying so in `Cache-Control`/`Vary`).
    #[serde(default)]
    pub cache_scope: CacheScope,
    /// Pass the upstream's `Set-Cookie` headers on to clients (default: removed; an answer
    /// that sets a cookie is never cached either way).
    #[serde(default)]
    pub forward_set_cookie: bool,
}

/// The gateway's own credential for a Git host: exactly one of these. Secrets are read from
/// files or the environment when the configuration is loaded (and again on every reload), are
/// sent to the upstream's host only, and never appear in a log or a process's arguments.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitCredentialConfig {
    /// A file holding a token, sent as `Authorization: Bearer <token>`.
    pub token_file: Option<cache::PathValue>,
    /// An environment variable holding such a token.
    pub token_env: Option<String>,
    /// A file holding `user:password`, sent as `Authorization: Basic`.
    pub basic_file: Option<cache::PathValue>,
    /// A file holding a whole `Authorization` value (e.g. `token abc` for Gitea).
    pub header_file: Option<cache::PathValue>,
    /// A client certificate (PEM) presented to the Git host, with `key`.
    pub cert: Option<cache::PathValue>,
    pub key: Option<cache::PathValue>,
}

/// How an upstream's answers are shared through the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheScope {
    /// One cached answer per route and path, for every identity.
    #[default]
    Shared,
    /// One cached answer per route, path and identity.
    PerIdentity,
}

fn default_connect_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}
fn default_read_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}
fn default_upstream_h2_streams() -> usize {
    100
}

/// One routing rule.
#[derive(Debug, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub pattern: Pattern,
    pub chain: Vec<ChainStep>,
    pub private: bool,
    /// Cache overrides for this route.
    pub cache: RouteCacheConfig,
}

/// One step of an upstream chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainStep {
    pub upstream: String,
    pub on: Fallthrough,
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Reads and validates a config file; relative paths in it are relative to its directory.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    load_from(path, None)
}

/// Like [`load`], with relative paths resolved from `base_dir` when given (`check --base-dir`:
/// a copy of the file checked where it will be installed).
pub fn load_from(path: &Path, base_dir: Option<&Path>) -> Result<GatewayConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
    let base_dir = base_dir
        .map(Path::to_path_buf)
        .or_else(|| path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut config = parse(&text, &path.display().to_string(), &base_dir)?;
    let (pid_file, upgrade_sock) = instance_paths(path);
    if config.server.pid_file.is_empty() {
        config.server.pid_file = pid_file.to_string_lossy().into_owned();
    }
    if config.server.upgrade_sock.is_empty() {
        config.server.upgrade_sock = upgrade_sock.to_string_lossy().into_owned();
    }
    Ok(config)
}

/// The directory for this user's per-instance files: `$XDG_RUNTIME_DIR/modgate` when set, else
/// `/tmp/modgate-<uid>` (created `0700` by `modgate run`).
pub fn instance_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() => d.join("modgate"),
        _ => {
            let uid = rustix::process::getuid().as_raw();
            PathBuf::from(format!("/tmp/modgate-{uid}"))
        }
    }
}

/// Default pid file and upgrade socket of the gateway run from `config_path`: private to the
/// user, and distinct per configuration file, so two instances never share them while an
/// upgrade (same file) finds the running one.
pub fn instance_paths(config_path: &Path) -> (PathBuf, PathBuf) {
    use sha2::Digest;
    let absolute = std::fs::canonicalize(config_path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(config_path))
            .unwrap_or_else(|_| config_path.to_path_buf())
    });
    let digest = sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let id: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let dir = instance_dir();
    (
        dir.join(format!("gateway-{id}.pid")),
        dir.join(format!("gateway-{id}.upgrade.sock")),
    )
}

/// Parses config text; `origin` names the file in messages, `base_dir` anchors relative paths.
pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<GatewayConfig, ConfigError> {
    #[derive(Deserialize, Default)]
    struct UpstreamNames {
        #[serde(default)]
        upstreams: BTreeMap<String, LenientUpstream>,
    }
    #[derive(Deserialize, Default)]
    struct LenientUpstream {
        #[serde(default)]
        private: bool,
    }
    // Pass 0: the YAML structure alone, to its end.
    if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        return Err(indentation_hint(format_yaml_error(origin, &e)));
    }
    // Pass 1: the upstream names. If they cannot be read, references to them are not checked:
    // the strict pass reports the upstreams' own error wherever it is in the file.
    let names = serde_yaml_ng::from_str::<UpstreamNames>(text).ok();
    let ctx = LoadContext {
        base_dir: base_dir.to_path_buf(),
        upstreams: names.map(|n| {
            n.upstreams
                .into_iter()
                .map(|(k, v)| (k, v.private))
                .collect()
        }),
    };
    CONTEXT.with(|c| *c.borrow_mut() = Some(ctx));
    let result: Result<GatewayConfig, _> = serde_yaml_ng::from_str(text);
    CONTEXT.with(|c| *c.borrow_mut() = None);
    let config = result.map_err(|e| misplaced_upstream_key(format_yaml_error(origin, &e)))?;
    check_whole(&config).map_err(|m| ConfigError(format!("{origin}: {m}")))?;
    Ok(config)
}

/// Renders a serde_yaml_ng error as `origin:line:col: path: message`. The parser's own
/// messages name their position in the text (`did not find expected key at line 47 column 4,
/// while parsing a block mapping at line 45 column 3`): the position already leads the line, and
/// the structure being parsed is said in parentheses.
fn format_yaml_error(origin: &str, e: &serde_yaml_ng::Error) -> ConfigError {
    let text = e.to_string();
    match e.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            let message = match text.split_once(&format!("{at}, ")) {
                Some((problem, context)) => format!("{problem} ({context})"),
                None => text.strip_suffix(&at).unwrap_or(&text).to_string(),
            };
            ConfigError(format!(
                "{origin}:{}:{}: {message}",
                loc.line(),
                loc.column()
            ))
        }
        None => ConfigError(format!("{origin}: {text}")),
    }
}

/// The parser's messages that an indentation slip causes, for [`indentation_hint`].
const INDENTATION_SYMPTOMS: &[&str] = &[
    ": did not find expected key",
    ": did not find expected '-' indicator",
    ": mapping values are not allowed in this context",
];

/// A structural error the parser reports where a mis-indented line breaks the structure (that
/// line or the next): says where to look.
fn indentation_hint(e: ConfigError) -> ConfigError {
    if INDENTATION_SYMPTOMS.iter().any(|m| e.0.contains(m)) {
        ConfigError(format!(
            "{}; check the indentation of this line and the one above",
            e.0
        ))
    } else {
        e
    }
}

/// The keys of an upstream's settings, for [`misplaced_upstream_key`].
const UPSTREAM_KEYS: &[&str] = &[
    "kind",
    "url",
    "module",
    "repo",
    "repo_aliases",
    "credential",
    "private",
    "ca",
    "client_cert",
    "host",
    "sni",
    "http2",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "idle_timeout",
    "h2_ping_interval",
    "max_h2_streams",
    "tcp_keepalive",
    "forward_identity",
    "cache_scope",
    "forward_set_cookie",
];

/// An error about an upstream named like an upstream setting (`upstreams.read_timeout: …`) is
/// almost always a setting indented like an upstream name: says so.
fn misplaced_upstream_key(e: ConfigError) -> ConfigError {
    let key = UPSTREAM_KEYS.iter().find(|k| {
        [":", ".", "["]
            .iter()
            .any(|end| e.0.contains(&format!(": upstreams.{k}{end}")))
    });
    match key {
        Some(k) => ConfigError(format!(
            "{} (`{k}` is an upstream setting, not an upstream name: is it indented less than \
             the settings of its upstream?)",
            e.0
        )),
        None => e,
    }
}

/// Checks that need the whole file: unique listener names and addresses.
fn check_whole(config: &GatewayConfig) -> Result<(), String> {
    if config.versions.cooldown.is_some() && config.cache.is_none() {
        return Err(
            "versions.cooldown: needs a `cache:` section (the sightings that date versions are \
             kept beside the cache's integrity ledger)"
                .into(),
        );
    }
    if let Some(log) = &config.checksum_log {
        if config.cache.is_none() {
            return Err(
                "checksum_log: needs a `cache:` section (the hashes it logs are the first-seen \
                 hashes of the cache's integrity ledger)"
                    .into(),
            );
        }
        let proxied: Vec<&str> = config.sumdb.keys().map(|n| n.0.as_str()).collect();
        log.check(&proxied)?;
        for r in &log.readers {
            if !config
                .access
                .policy
                .roles()
                .iter()
                .any(|role| &role.name == r)
            {
                return Err(format!(
                    "checksum_log.readers: no role {r:?} under access.roles"
                ));
            }
        }
    }
    if let Some(cluster) = &config.cluster {
        if config.cache.is_none() {
            return Err(
                "cluster: needs a `cache:` section (the shared ledger is the cache's integrity \
                 ledger)"
                    .into(),
            );
        }
        cluster.check()?;
        if let Some(path) = config.checksum_log.as_ref().and_then(|l| l.path.as_ref()) {
            return Err(format!(
                "checksum_log.path ({}): with `cluster:` the checksum database is kept in \
                 cluster.postgres, shared by every replica; remove the path",
                path.0.display()
            ));
        }
        if let Some(path) = config.fetched.as_ref().and_then(|f| f.path.as_ref()) {
            return Err(format!(
                "fetched.path ({}): with `cluster:` the fetched index is kept in \
                 cluster.postgres, shared by every replica; remove the path",
                path.0.display()
            ));
        }
    }
    if config.fetched.is_some() && config.cache.is_none() {
        return Err(
            "fetched: needs a `cache:` section (the hashes it records come from the \
                    cache's integrity ledger)"
                .into(),
        );
    }
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    for (i, l) in config.listeners.iter().enumerate() {
        if !names.insert(l.name.0.as_str()) {
            return Err(format!(
                "listeners[{i}].name: listener name \"{}\" is used twice",
                l.name.0
            ));
        }
        if !addresses.insert(l.address.0) {
            return Err(format!(
                "listeners[{i}].address: address {} is used twice",
                l.address.0
            ));
        }
    }
    for (i, l) in config.listeners.iter().enumerate() {
        if l.max_connections == 0 || l.max_connections_per_source == 0 {
            return Err(format!(
                "listeners[{i}]: max_connections and max_connections_per_source must be at \
                 least 1 (listener {:?} would refuse every client)",
                l.name.0
            ));
        }
        if l.handshake_timeout.0.is_zero() {
            return Err(format!(
                "listeners[{i}].handshake_timeout must be longer than 0s"
            ));
        }
        if l.idle_timeout.0.is_zero() || l.header_timeout.0.is_zero() {
            return Err(format!(
                "listeners[{i}]: idle_timeout and header_timeout must be longer than 0s"
            ));
        }
        // Pingora closes an h2 connection the moment it is idle when this is 0, before the
        // last answer's flush (which the connection guard may put off by one turn) goes out.
        if l.h2_idle_timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(format!(
                "listeners[{i}].h2_idle_timeout must be longer than 0s (leave it out for idle_timeout + header_timeout)"
            ));
        }
        // h2 panics above u32::MAX; below a frame's worth every write waits
        if !(16 << 10..=1 << 30).contains(&l.h2_send_buffer.0) {
            return Err(format!(
                "listeners[{i}].h2_send_buffer: {} bytes; must be between 16KiB and 1GiB",
                l.h2_send_buffer.0
            ));
        }
        for (j, c) in l.trusted_proxies.iter().enumerate() {
            if c.0.is_world_wide() && !l.trusted_proxies_force {
                return Err(format!(
                    "listeners[{i}].trusted_proxies[{j}]: {}/{} trusts (nearly) every address \
                     to forward any client certificate it likes; list the front proxies' own \
                     addresses, or set trusted_proxies_force: true on listener {:?} if this is \
                     really meant",
                    c.0.network(),
                    c.0.prefix_len(),
                    l.name.0
                ));
            }
        }
    }
    for (name, u) in &config.upstreams {
        if u.forward_identity.is_some() && !u.private {
            return Err(format!(
                "upstreams.{name}.forward_identity: client identities (DNs, e-mail addresses, \
                 certificates) are only sent to upstreams marked private: true"
            ));
        }
    }
    for (name, db) in &config.sumdb {
        if db.forward_identity.is_some() {
            return Err(format!(
                "sumdb.{}.forward_identity: a public checksum database never receives client identities",
                name.0
            ));
        }
        if db.private {
            return Err(format!(
                "sumdb.{}: a checksum database is a public service; private modules are never \
                 looked up in it, so it cannot be marked private",
                name.0
            ));
        }
    }
    let ratio = config.telemetry.sample_ratio;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!(
            "telemetry.sample_ratio: {ratio} is not between 0 and 1"
        ));
    }
    for role in config.rate_limits.0.roles.keys() {
        if !config.access.policy.roles().iter().any(|r| &r.name == role) {
            let known: Vec<&str> = config
                .access
                .policy
                .roles()
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            return Err(format!(
                "rate_limits.roles.{role}: no role named {role:?} in access.roles (roles: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    let mut route_names = HashSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        if !route_names.insert(r.name.as_str()) {
            return Err(format!(
                "routes[{i}].name: route name \"{}\" is used twice",
                r.name
            ));
        }
    }
    let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    let roles: Vec<&str> = config
        .access
        .policy
        .roles()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let upstreams: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
    config.versions.check(&routes, &roles, &upstreams)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Value types that validate themselves while being read

/// A domain value spelled as a word in the file (`required`, `end-entity`, `grpc`, ...): parsed
/// by the domain type's own `FromStr`, so the file format needs no mirror enum, and checked
/// where it is written.
pub(crate) fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    from_str_with(d, "a setting value", |s| s.parse())
}

/// [`parsed`] for an optional value.
pub(crate) fn parsed_some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    parsed(d).map(Some)
}

/// A list that must have at least one element.
#[derive(Debug)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<T> std::ops::Deref for NonEmpty<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NonEmpty<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-empty list")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<NonEmpty<T>, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                if v.is_empty() {
                    // Raised inside the visitor so the error carries the list's position.
                    return Err(de::Error::custom("must list at least one entry"));
                }
                Ok(NonEmpty(v))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// A name made of `[A-Za-z0-9_.-]`, 1–64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(pub String);

fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!("name {s:?} must be 1 to 64 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "name {s:?} contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a name", |s| check_name(s).map(|()| Name(s.to_string())))
    }
}

/// A listen address `ip:port`.
#[derive(Debug, Clone, Copy)]
pub struct ListenAddress(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an ip:port address", |s| {
            s.parse::<SocketAddr>().map(ListenAddress).map_err(|_| {
                format!("{s:?} is not an ip:port address (e.g. \"0.0.0.0:8443\" or \"[::]:8443\")")
            })
        })
    }
}

/// Splits `"1.5GiB"` into `(1.5, "GiB")` (unit trimmed; may be empty); `None` without a number.
pub(crate) fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    num.parse().ok().map(|v| (v, unit.trim()))
}

/// A duration written as `250ms`, `30s`, `5m`, `1h`, or a plain number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

/// Parses `250ms`, `30s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (value, unit) = number_and_unit(s)
        .ok_or_else(|| format!("{s:?} is not a duration (use e.g. \"250ms\", \"30s\", \"5m\")"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=31_536_000.0).contains(&secs) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or \"250ms\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationValue, E> {
                parse_duration(&v.to_string())
                    .map(DurationValue)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationValue, E> {
                parse_duration(&v.to_string())
                    .map(DurationValue)
                    .map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationValue, E> {
                parse_duration(&v.to_string())
                    .map(DurationValue)
                    .map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v).map(DurationValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an http:// or https:// URL", UpstreamUrl::parse)
    }
}

/// `match:` of a route: exactly one of `prefix`, `glob`, `regex`, each compiled as it is read
/// so a bad pattern is reported at its own line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchSpec {
    prefix: Option<PatternValue<PrefixKind>>,
    glob: Option<PatternValue<GlobKind>>,
    regex: Option<PatternValue<RegexKind>>,
}

trait PatternKind {
    fn compile(text: &str) -> Result<Pattern, String>;
}
struct PrefixKind;
struct GlobKind;
struct RegexKind;
impl PatternKind for PrefixKind {
    fn compile(text: &str) -> Result<Pattern, String> {
        Pattern::prefix(text).map_err(|e| e.to_string())
    }
}
impl PatternKind for GlobKind {
    fn compile(text: &str) -> Result<Pattern, String> {
        Pattern::glob(text).map_err(|e| e.to_string())
    }
}
impl PatternKind for RegexKind {
    fn compile(text: &str) -> Result<Pattern, String> {
        Pattern::regex(text).map_err(|e| e.to_string())
    }
}

/// A pattern of kind `K`, compiled while reading.
struct PatternValue<K>(Pattern, std::marker::PhantomData<K>);

impl<'de, K: PatternKind> Deserialize<'de> for PatternValue<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a pattern", |text| {
            K::compile(text).map(|p| PatternValue(p, std::marker::PhantomData))
        })
    }
}

impl MatchSpec {
    fn into_pattern(self) -> Result<Pattern, String> {
        match (self.prefix, self.glob, self.regex) {
            (Some(p), None, None) => Ok(p.0),
            (None, Some(g), None) => Ok(g.0),
            (None, None, Some(r)) => Ok(r.0),
            (None, None, None) => Err("match: give one of prefix, glob or regex".into()),
            _ => Err("match: give only one of prefix, glob or regex".into()),
        }
    }
}

/// A route as written; converted to [`RouteConfig`] once its fields are all read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Name,
    #[serde(rename = "match")]
    matcher: MatchSpec,
    chain: NonEmpty<ChainStep>,
    #[serde(default)]
    private: bool,
    cache: Option<RouteCacheConfig>,
}

impl<'de> Deserialize<'de> for RouteConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRoute::deserialize(d)?;
        let pattern = raw.matcher.into_pattern().map_err(de::Error::custom)?;
        let chain = raw.chain.0;
        if chain.len() > MAX_CHAIN_LEN {
            return Err(de::Error::custom(format!(
                "route {:?}: a chain has at most {MAX_CHAIN_LEN} steps",
                raw.name.0
            )));
        }
        let mut seen = HashSet::new();
        for step in &chain {
            if !seen.insert(step.upstream.as_str()) {
                return Err(de::Error::custom(format!(
                    "route {:?}: upstream {:?} appears twice in the chain",
                    raw.name.0, step.upstream
                )));
            }
        }
        if raw.private {
            let public: Vec<&str> = chain
                .iter()
                .filter(|s| {
                    with_context(|c| {
                        c.upstreams.as_ref().and_then(|u| u.get(&s.upstream)) == Some(&false)
                    })
                    .unwrap_or(false)
                })
                .map(|s| s.upstream.as_str())
                .collect();
            if !public.is_empty() {
                return Err(de::Error::custom(format!(
                    "route {:?} is private but its chain names upstream(s) not marked private: {}; \
                     a private module path must never reach a public upstream (mark the upstream \
                     `private: true` if it is inside your network)",
                    raw.name.0,
                    public.join(", ")
                )));
            }
        }
        Ok(RouteConfig {
            name: raw.name.0,
            pattern,
            chain,
            private: raw.private,
            cache: raw.cache.unwrap_or(RouteCacheConfig {
                enabled: true,
                ..RouteCacheConfig::default()
            }),
        })
    }
}

/// Resolves an upstream reference against the names collected in pass 1.
fn check_upstream_ref(name: &str) -> Result<(), String> {
    let known = with_context(|c| {
        c.upstreams
            .as_ref()
            .map(|u| (u.contains_key(name), u.keys().cloned().collect::<Vec<_>>()))
    })
    .flatten();
    match known {
        Some((true, _)) | None => Ok(()),
        Some((false, names)) if names.is_empty() => Err(format!(
            "unknown upstream {name:?}: no upstreams are defined"
        )),
        Some((false, names)) => Err(format!(
            "unknown upstream {name:?} (defined: {})",
            names.join(", ")
        )),
    }
}

impl<'de> Deserialize<'de> for ChainStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ChainStep;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an upstream name or { upstream: NAME, on: not-found | any-error }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ChainStep, E> {
                check_upstream_ref(v).map_err(E::custom)?;
                Ok(ChainStep {
                    upstream: v.to_string(),
                    on: Fallthrough::NotFound,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ChainStep, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Step {
                    upstream: String,
                    #[serde(default = "default_on", deserialize_with = "parsed")]
                    on: Fallthrough,
                }
                fn default_on() -> Fallthrough {
                    Fallthrough::NotFound
                }
                let step = Step::deserialize(de::value::MapAccessDeserializer::new(map))?;
                check_upstream_ref(&step.upstream).map_err(de::Error::custom)?;
                Ok(ChainStep {
                    upstream: step.upstream,
                    on: step.on,
                })
            }
        }
        d.deserialize_any(V)
    }
}

// TLS file values, each file read and checked as its path is read.

/// A PEM certificate chain file.
struct CertFile(PathBuf, Vec<rustls::pki_types::CertificateDer<'static>>);
/// A PEM private key file.
struct KeyFile(PathBuf, rustls::pki_types::PrivateKeyDer<'static>);

impl<'de> Deserialize<'de> for CertFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a PEM certificate file", |p| {
            let path = resolve_path(p);
            tls::read_certs(&path).map(|certs| CertFile(path, certs))
        })
    }
}

impl<'de> Deserialize<'de> for KeyFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a PEM private key file", |p| {
            let path = resolve_path(p);
            tls::read_key(&path).map(|key| KeyFile(path, key))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertKeyFiles {
    cert: CertFile,
    key: KeyFile,
}

impl<'de> Deserialize<'de> for ClientCertKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = CertKeyFiles::deserialize(d)?;
        tls::client_cert_key(f.cert.0, f.cert.1, f.key.0, f.key.1)
            .map_err(|e| de::Error::custom(format!("client_cert: {e}")))
    }
}

impl<'de> Deserialize<'de> for PemBundle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a PEM CA bundle file", |p| {
            tls::load_ca_bundle(&resolve_path(p))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<GatewayConfig, ConfigError> {
        parse(text, "gateway.yaml", Path::new("."))
    }

    const MINIMAL: &str = "\
listeners:
  - { name: plain, address: \"127.0.0.1:8080\" }
upstreams:
  golang: { url: \"https://proxy.golang.org\" }
  corp: { url: \"http://10.0.0.1:3000/athens/\", private: true }
routes:
  - name: corp
    match: { glob: \"corp.example.com\" }
    chain: [corp]
    private: true
  - name: public
    match: { prefix: \"\" }
    chain:
      - { upstream: golang, on: any-error }
      - corp
";

    #[test]
    fn h2_send_buffer_has_a_default_and_bounds() {
        let c = parse_str(MINIMAL).expect("valid");
        assert_eq!(c.listeners[0].h2_send_buffer.0, 128 << 10);
        let with = |v: &str| {
            MINIMAL.replace(
                "address: \"127.0.0.1:8080\" }",
                &format!("address: \"127.0.0.1:8080\", h2_send_buffer: {v} }}"),
            )
        };
        let c = parse_str(&with("1MiB")).expect("valid");
        assert_eq!(c.listeners[0].h2_send_buffer.0, 1 << 20);
        for bad in ["1KiB", "2GiB"] {
            let e = err(&with(bad));
            assert!(
                e.contains("h2_send_buffer") && e.contains("16KiB"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn h2_idle_timeout_is_longer_than_zero() {
        let with = |v: &str| {
            MINIMAL.replace(
                "address: \"127.0.0.1:8080\" }",
                &format!("address: \"127.0.0.1:8080\", h2_idle_timeout: {v} }}"),
            )
        };
        let c = parse_str(&with("30s")).expect("valid");
        assert_eq!(
            c.listeners[0].h2_idle_timeout.map(|d| d.0),
            Some(Duration::from_secs(30))
        );
        let e = err(&with("0s"));
        assert!(e.contains("h2_idle_timeout must be longer than 0s"), "{e}");
    }

    #[test]
    fn the_fetched_index_is_the_clusters_database_when_there_is_a_cluster() {
        let base = format!("cache:\n  dir: /tmp/c\nfetched:\n  path: /tmp/f.sqlite\n{MINIMAL}");
        let c = parse_str(&base).expect("valid");
        assert!(matches!(
            crate::fetched::FetchedAt::of(&c).expect("fetched_at"),
            Some(crate::fetched::FetchedAt::Sqlite(p)) if p == std::path::Path::new("/tmp/f.sqlite")
        ));
        let clustered = format!(
            "cluster:\n  name: a\n  postgres: {{ dsn: \"host=10.0.0.5 user=modgate dbname=m\" }}\n{}",
            base.replace("  path: /tmp/f.sqlite\n", "  retention: 7d\n")
        );
        let c = parse_str(&clustered).expect("valid");
        let Some(crate::fetched::FetchedAt::Postgres(s)) =
            crate::fetched::FetchedAt::of(&c).expect("fetched_at")
        else {
            panic!("the cluster's database");
        };
        assert_eq!(s.dsn, "host=10.0.0.5 user=modgate dbname=m");
        // A file path for the index of a cluster is refused: it would not be the replicas'.
        let e = err(&format!(
            "cluster:\n  name: a\n  postgres: {{ dsn: \"host=h user=u\" }}\n{base}"
        ));
        assert!(
            e.contains("fetched.path (/tmp/f.sqlite): with `cluster:`"),
            "{e}"
        );
        // No fetched: section, no index, cluster or not.
        let c = parse_str(&format!(
            "cluster:\n  name: a\n  postgres: {{ dsn: \"host=h user=u\" }}\ncache:\n  dir: /tmp/c\n{MINIMAL}"
        ))
        .expect("valid");
        assert!(crate::fetched::FetchedAt::of(&c)
            .expect("fetched_at")
            .is_none());
    }

    #[test]
    fn the_checksum_database_is_the_clusters_database_when_there_is_a_cluster() {
        let log = |path: &str| {
            format!(
                "cache:\n  dir: /tmp/c\nauth:\n  users_file: /etc/hostname\naccess:\n  default: allow\n  \
                 roles:\n    - {{ name: devs, members: [ {{ user: alice }} ], rules: [ {{ allow: {{ prefix: corp }} }} ] }}\n\
                 checksum_log:\n  name: sum.corp.example\n  key_file: /k\n  readers: [devs]\n  \
                 public: {{ trust: first-seen }}\n{path}{MINIMAL}"
            )
        };
        let c = parse_str(&log("")).expect("valid");
        let cache = c.cache.as_ref().expect("cache");
        assert!(matches!(
            c.checksum_log_at(cache).expect("at"),
            crate::sumlog::LogAt::File(p) if p == std::path::Path::new("/tmp/c/sumdb.sqlite")
        ));
        let cluster =
            "cluster:\n  name: a\n  postgres: { dsn: \"host=10.0.0.5 user=modgate dbname=m\" }\n";
        let c = parse_str(&format!("{cluster}{}", log(""))).expect("valid");
        let cache = c.cache.as_ref().expect("cache");
        let crate::sumlog::LogAt::Postgres(s) = c.checksum_log_at(cache).expect("at") else {
            panic!("the cluster's database");
        };
        assert_eq!(s.dsn, "host=10.0.0.5 user=modgate dbname=m");
        // A file path for the log of a cluster is refused: it would not be the replicas' log.
        let e = err(&format!(
            "{cluster}{}",
            log("").replace(
                "readers: [devs]\n",
                "readers: [devs]\n  path: /var/lib/sum.sqlite\n"
            )
        ));
        assert!(
            e.contains("checksum_log.path (/var/lib/sum.sqlite): with `cluster:`"),
            "{e}"
        );
    }

    #[test]
    fn a_cluster_needs_a_cache_a_usable_dsn_and_a_ca_for_required_tls() {
        let cluster = |pg: &str| format!("cluster:\n  name: a\n  postgres: {pg}\n{MINIMAL}");
        let cached = |pg: &str| format!("cache:\n  dir: /tmp/c\n{}", cluster(pg));
        let c =
            parse_str(&cached("{ dsn: \"host=10.0.0.5 user=modgate dbname=m\" }")).expect("valid");
        let cl = c.cluster.as_ref().expect("cluster");
        assert_eq!((cl.replica(), cl.postgres.pool_size), ("a".to_string(), 16));
        let e = err(&cluster("{ dsn: \"host=10.0.0.5 user=modgate\" }"));
        assert!(e.contains("cluster: needs a `cache:` section"), "{e}");
        let e = err(&cached("{ dsn: \"host=10.0.0.5 user=modgate nonsense\" }"));
        assert!(e.contains("the DSN does not parse"), "{e}");
        let e = err(&cached("{ dsn: \"host=10.0.0.5 dbname=m\" }"));
        assert!(e.contains("the DSN names no user"), "{e}");
        let e = err(&cached(
            "{ dsn: \"host=10.0.0.5 user=modgate sslmode=require\" }",
        ));
        assert!(e.contains("no CA bundle"), "{e}");
        let e = err(&cached(
            "{ dsn: \"host=10.0.0.5 user=modgate\", tls: { ca: /nonexistent/ca.pem } }",
        ));
        assert!(
            e.contains("cannot read the CA bundle /nonexistent/ca.pem"),
            "{e}"
        );
        let e = err(&cached("{ dsn: \"host=h user=u\", pool_size: 0 }"));
        assert!(e.contains("pool_size"), "{e}");
        // The object store: an http(s) endpoint, credentials from the file or the environment.
        let objects = |o: &str| cached(&format!("{{ dsn: \"host=h user=u\" }}\n  objects: {o}"));
        let e = err(&objects(
            "{ endpoint: \"ftp://s3\", bucket: b, access_key_id: k, secret_access_key_file: /etc/hostname }",
        ));
        assert!(e.contains("is not an http:// or https:// URL"), "{e}");
        let e = err(&objects(
            "{ endpoint: \"http://s3:3900\", bucket: b, access_key_id: k, secret_access_key_file: /nonexistent/s }",
        ));
        assert!(e.contains("cannot read /nonexistent/s"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("s3.secret");
        std::fs::write(&secret, "sekrit\n").expect("write");
        let c = parse_str(&objects(&format!(
            "{{ endpoint: \"http://s3:3900\", bucket: b, access_key_id: k, secret_access_key_file: {} }}",
            secret.display()
        )))
        .expect("valid");
        let o = c
            .cluster
            .as_ref()
            .and_then(|c| c.objects.as_ref())
            .expect("objects");
        let s3 = o.settings().expect("settings");
        assert_eq!(
            (s3.secret_access_key.as_str(), s3.region.as_str()),
            ("sekrit", "us-east-1")
        );
        assert!(!format!("{o:?}").contains("sekrit"));
        // The DSN (which may hold a password) is never in a debug print.
        let c = parse_str(&cached("{ dsn: \"host=h user=u password=hunter2\" }")).expect("valid");
        assert!(!format!("{:?}", c.cluster).contains("hunter2"));
    }

    #[test]
    fn minimal_config_loads() {
        let c = parse_str(MINIMAL).expect("valid");
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].chain[0].on, Fallthrough::AnyError);
        assert_eq!(c.routes[1].chain[1].on, Fallthrough::NotFound);
        let corp = &c.upstreams["corp"];
        assert_eq!(corp.url.path, "/athens");
        assert_eq!(corp.url.port, 3000);
        assert!(!corp.url.tls);
        assert_eq!(c.server.threads, 2);
        assert!(!c.server.work_stealing);
        let c = parse_str(&format!("server:\n  work_stealing: true\n{MINIMAL}")).expect("valid");
        assert!(c.server.work_stealing);
    }

    fn err(text: &str) -> String {
        match parse_str(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_field_names_line_and_path() {
        let text = MINIMAL.replace("    private: true\n", "    privat: true\n");
        let e = err(&text);
        assert!(e.starts_with("gateway.yaml:10:"), "{e}");
        assert!(e.contains("routes[0]"), "{e}");
        assert!(e.contains("unknown field `privat`"), "{e}");
    }

    #[test]
    fn indentation_slips_are_reported_where_the_parser_sees_them() {
        // A route's key dedented: the parser's error at that line, not `missing field`.
        let e = err(&MINIMAL.replace("    chain: [corp]\n", "  chain: [corp]\n"));
        assert_eq!(
            e,
            "gateway.yaml:9:3: did not find expected '-' indicator (while parsing a block \
             collection at line 7 column 3); check the indentation of this line and the one above"
        );
        // An upstream's key dedented below a flow mapping that then continues.
        let text = MINIMAL.replace(
            "  golang: { url: \"https://proxy.golang.org\" }\n",
            "  golang:\n    url: \"https://proxy.golang.org\"\n  read_timeout: 60s\n    \
             idle_timeout: 90s\n",
        );
        let e = err(&text);
        assert!(
            e.starts_with(
                "gateway.yaml:7:17: mapping values are not allowed in this context; check the \
                 indentation"
            ),
            "{e}"
        );
        // A slip after the routes: never an `unknown upstream` about the routes above it.
        let e = err(&format!(
            "{MINIMAL}access:\n  default: allow\n   roles: []\n"
        ));
        assert!(e.starts_with("gateway.yaml:18:9: mapping values"), "{e}");
        assert!(!e.contains("unknown upstream"), "{e}");
    }

    #[test]
    fn unreadable_upstreams_are_reported_at_the_upstreams() {
        // Routes first, then an upstream that is not a mapping: pass 1 cannot read the names,
        // and the error is the upstream's own, not the route's reference to it.
        let text = "\
listeners:
  - { name: plain, address: \"127.0.0.1:8080\" }
routes:
  - { name: public, match: { prefix: \"\" }, chain: [golang] }
upstreams:
  golang: \"https://proxy.golang.org\"
";
        let e = err(text);
        assert!(
            e.starts_with("gateway.yaml:6:11: upstreams.golang: "),
            "{e}"
        );
        assert!(!e.contains("unknown upstream"), "{e}");
    }

    #[test]
    fn a_setting_indented_as_an_upstream_name_is_called_one() {
        let text = MINIMAL.replace(
            "  corp: { url: \"http://10.0.0.1:3000/athens/\", private: true }\n",
            "  corp:\n    url: \"http://10.0.0.1:3000/athens/\"\n  forward_identity:\n    \
             dn: true\n",
        );
        let e = err(&text);
        assert!(e.starts_with("gateway.yaml:"), "{e}");
        assert!(e.contains("upstreams.forward_identity"), "{e}");
        assert!(
            e.ends_with(
                "(`forward_identity` is an upstream setting, not an upstream name: is it \
                 indented less than the settings of its upstream?)"
            ),
            "{e}"
        );
        // The list of settings is the one serde knows.
        let e = err(&MINIMAL.replace(
            "golang: { url: \"https://proxy.golang.org\" }",
            "golang: { url: \"https://proxy.golang.org\", zzz: 1 }",
        ));
        let listed: Vec<&str> = e
            .split_once("expected one of ")
            .map(|(_, l)| l)
            .unwrap_or("")
            .split(", ")
            .map(|k| k.trim_matches('`'))
            .collect();
        assert_eq!(listed, UPSTREAM_KEYS, "{e}");
    }

    #[test]
    fn unknown_upstream_reference_is_located() {
        let text = MINIMAL.replace("chain: [corp]", "chain: [corpp]");
        let e = err(&text);
        assert!(e.starts_with("gateway.yaml:9:"), "{e}");
        assert!(e.contains("routes[0].chain[0]"), "{e}");
        assert!(
            e.contains("unknown upstream \"corpp\" (defined: corp, golang)"),
            "{e}"
        );
    }

    #[test]
    fn private_route_cannot_use_public_upstream() {
        let text = MINIMAL.replace("chain: [corp]", "chain: [corp, golang]");
        let e = err(&text);
        assert!(e.contains("is private"), "{e}");
        assert!(e.contains("golang"), "{e}");
        assert!(e.starts_with("gateway.yaml:"), "{e}");
    }

    #[test]
    fn bad_values_are_reported() {
        let e = err(&MINIMAL.replace("glob: \"corp.example.com\"", "regex: \"(\""));
        assert!(e.contains("routes[0].match.regex: invalid regex"), "{e}");
        assert!(e.starts_with("gateway.yaml:8:"), "{e}");
        let e = err(&MINIMAL.replace("127.0.0.1:8080", "localhost"));
        assert!(e.contains("listeners[0].address"), "{e}");
        assert!(e.contains("not an ip:port"), "{e}");
        let e = err(&MINIMAL.replace("https://proxy.golang.org", "ftp://x"));
        assert!(e.contains("upstreams.golang.url"), "{e}");
        let e = err(&MINIMAL.replace("on: any-error", "on: sometimes"));
        assert!(e.contains("routes[1].chain[0]"), "{e}");
        let e = err(&MINIMAL.replace("{ glob: \"corp.example.com\" }", "{ glob: a, prefix: b }"));
        assert!(e.contains("only one of"), "{e}");
        let e = err("listeners: []\nroutes: []\n");
        assert!(e.contains("listeners"), "{e}");
        assert!(e.contains("at least one"), "{e}");
        let e = err(&format!(
            "{MINIMAL}  - name: public\n    match: {{ prefix: x.org }}\n    chain: [golang]\n"
        ));
        assert!(e.contains("route name \"public\" is used twice"), "{e}");
    }

    #[test]
    fn missing_tls_file_is_a_clear_error() {
        let text = MINIMAL.replace(
            "address: \"127.0.0.1:8080\"",
            "address: \"127.0.0.1:8443\", tls: { cert: /nonexistent/server.pem, key: /nonexistent/server.key }",
        );
        let e = err(&text);
        assert!(
            e.contains("listeners[0].tls.cert: /nonexistent/server.pem"),
            "{e}"
        );
        assert!(e.starts_with("gateway.yaml:2:"), "{e}");
        assert!(e.contains("/nonexistent/server.pem"), "{e}");
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    }

    #[test]
    fn listener_tls_is_checked_as_a_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = crate::certs::CertRequest {
            out: dir.path(),
            hosts: &[],
            ca_name: "test CA",
            client_name: "alice",
            force: false,
        };
        crate::certs::generate(&req).expect("certs");
        let d = dir.path().display();
        let with_tls = |tls: &str| {
            MINIMAL.replace(
                "address: \"127.0.0.1:8080\" }",
                &format!("address: \"127.0.0.1:8443\", tls: {{ cert: {d}/server.pem, key: {d}/server.key, {tls} }} }}"),
            )
        };
        let ok = parse_str(&with_tls(&format!(
            "client_auth: required, client_ca: {d}/ca.pem"
        )))
        .expect("valid");
        let tls = ok.listeners[0].tls.as_ref().expect("tls");
        assert_eq!(tls.files.client_ca.len(), 1);
        let e = err(&with_tls("client_auth: required"));
        assert!(
            e.contains("listeners[0].tls") && e.contains("needs client_ca"),
            "{e}"
        );
        let e = err(&with_tls(&format!("client_ca: {d}/ca.pem")));
        assert!(e.contains("client_auth is none"), "{e}");
        let e = err(&with_tls(&format!(
            "client_auth: sometimes, client_ca: {d}/ca.pem"
        )));
        assert!(
            e.contains("tls.client_auth")
                && e.contains("unknown client_auth \"sometimes\" (use none, optional, required)"),
            "{e}"
        );
        // Every domain word is parsed by its own type, at its own position.
        let e = err(&with_tls(&format!(
            "client_auth: optional, client_ca: {d}/ca.pem, crl_scope: leaf"
        )));
        assert!(
            e.contains("tls.crl_scope") && e.contains("use end-entity, chain"),
            "{e}"
        );
        let e = err(&with_tls(&format!(
            "client_auth: required, client_ca: {d}/ca.pem, refuse_in: tcp"
        )));
        assert!(e.contains("use http, handshake"), "{e}");
        // A missing CA in a list is reported at its own position.
        let e = err(&with_tls(&format!(
            "client_auth: optional, client_ca: [{d}/ca.pem, {d}/nope.pem]"
        )));
        assert!(
            e.contains("tls.client_ca[1]") && e.contains("nope.pem"),
            "{e}"
        );
        let garbage = write(dir.path(), "bad.crl", "not a CRL");
        let e = err(&with_tls(&format!(
            "client_auth: optional, client_ca: {d}/ca.pem, crl: {garbage}"
        )));
        assert!(e.contains("bad.crl"), "{e}");
        let e = err(&with_tls(&format!(
            "client_auth: optional, client_ca: {d}/ca.pem, bogus: 1"
        )));
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = err(&MINIMAL.replace(
            "address: \"127.0.0.1:8080\" }",
            &format!("address: \"127.0.0.1:8443\", tls: {{ cert: {d}/server.pem, key: {d}/client.key }} }}"),
        ));
        assert!(e.contains("client.key"), "{e}");
    }

    #[test]
    fn access_section_errors_are_located() {
        let with_access = |a: &str| format!("{MINIMAL}access:\n{a}");
        let ok = parse_str(&with_access(
            "  default: allow\n  roles:\n    - name: devs\n      members: [authenticated, { cn: \"ci-*\", o: Corp }]\n      rules:\n        - { id: r1, allow: { prefix: corp.example.com }, kinds: [list, zip], versions: \">=v1.0.0\" }\n        - deny: [{ glob: \"x.org/*\" }, { prefix: y.org }]\n",
        ))
        .expect("valid");
        assert!(ok.access.configured);
        assert_eq!(ok.access.policy.roles()[0].rules[1].id, "devs.1");
        let cases = [
            ("      members: [{ cn: \"[\" }]\n", "roles[0].members[0].cn"),
            ("      members: [sometimes]\n", "unknown member keyword"),
            ("      members: [{}]\n", "needs at least one of"),
            ("      members: [any]\n      rules: [{ allow: { prefix: a.org }, versions: \"~v1\" }]\n", "rules[0].versions"),
            ("      members: [any]\n      rules: [{ allow: { prefix: a.org }, kinds: [tile] }]\n", "unknown request kind"),
            ("      members: [any]\n      rules: [{ deny: { prefix: a.org }, commits: [abc123] }]\n", "invalid commit \"abc123\""),
            ("      members: [any]\n      rules: [{ deny: { prefix: a.org }, commits: [\"05db99cda9e5\"], versions: \"=v1.0.0\" }]\n", "not both"),
            ("      members: [any]\n      rules: [{ allow: { prefix: a.org }, deny: { prefix: b.org } }]\n", "not both"),
            ("      members: [any]\n      rules: [{ id: a, allow: { prefix: a.org } }, { id: a, allow: { prefix: b.org } }]\n", "\"a\""),
        ];
        for (role_body, want) in cases {
            let e = err(&with_access(&format!(
                "  roles:\n    - name: devs\n{role_body}"
            )));
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.starts_with("gateway.yaml:"), "{e}");
        }
        let e = err(&format!("{MINIMAL}telemetry: {{ sample_ratio: 2 }}\n"));
        assert!(e.contains("sample_ratio"), "{e}");
        // Identities only go to private upstreams.
        let e = err(&MINIMAL.replace(
            "golang: { url: \"https://proxy.golang.org\" }",
            "golang: { url: \"https://proxy.golang.org\", forward_identity: { dn: true } }",
        ));
        assert!(e.contains("upstreams.golang.forward_identity"), "{e}");
        parse_str(&MINIMAL.replace(
            "corp: { url: \"http://10.0.0.1:3000/athens/\", private: true }",
            "corp: { url: \"http://10.0.0.1:3000/athens/\", private: true, forward_identity: { dn: true } }",
        ))
        .expect("a private upstream may receive identities");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        use super::cache::parse_size;
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1e30").is_err());
    }

    #[test]
    fn upstream_urls() {
        let u = UpstreamUrl::parse("https://proxy.golang.org").expect("ok");
        assert_eq!((u.tls, u.port, u.path.as_str()), (true, 443, ""));
        assert_eq!(u.authority(), "proxy.golang.org");
        let u = UpstreamUrl::parse("http://[::1]:3000/a/b/").expect("ok");
        assert_eq!(u.host, "::1");
        assert_eq!(u.authority(), "[::1]:3000");
        assert_eq!(u.path, "/a/b");
        assert!(UpstreamUrl::parse("https://user:pw@host").is_err());
        assert!(UpstreamUrl::parse("proxy.golang.org").is_err());
        assert!(UpstreamUrl::parse("https://h/?x=1").is_err());
    }
}
