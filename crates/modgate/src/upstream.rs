//! Upstream GOPROXY servers at run time: how to reach one (address, TLS, timeouts, HTTP/2,
//! pool settings), `kind: git` upstreams as the git origin sees them ([`GitUpstream`]), and
//! the chains that routes send requests along. Built from the file by `build/upstream.rs`
//! and `gateway.rs`; nothing here imports the file format.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modgate_git::Credential;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::{HttpPeer, PeerOptions};
use pingora::utils::tls::CertKey;
use pingora::{Error, ErrorType};

use crate::config::forward::ForwardIdentityConfig;
use crate::template::{self, RootTemplate};

/// How long a resolved upstream address is reused before it is looked up again.
const DNS_TTL: Duration = Duration::from_secs(30);

/// One upstream GOPROXY server, ready to build Pingora peers for.
pub struct Upstream {
    pub name: String,
    pub url: UpstreamUrl,
    pub private: bool,
    /// `Host` header sent with every request.
    pub host_header: String,
    sni: String,
    options: PeerOptions,
    client_cert: Option<Arc<CertKey>>,
    /// Which client identity headers this upstream receives.
    pub forward: Option<ForwardIdentityConfig>,
    /// Its answers are cached per identity.
    pub per_identity_cache: bool,
    /// Its `Set-Cookie` headers reach clients.
    pub forward_set_cookie: bool,
    /// Last resolved address of a host name (unused for IP literals).
    resolved: Mutex<Option<(Instant, SocketAddr)>>,
    /// `kind: git`: reached through the gateway's own git origin on this Unix socket, under
    /// `/<name>`, instead of at `url`.
    origin: Option<String>,
    /// The module template whose captures fill `{name}` in the URL's path.
    template: Option<RootTemplate>,
    /// The gateway's own `Authorization` for this upstream (never a client's; never logged).
    credential: Option<String>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &self.url.to_string())
            .field("private", &self.private)
            .finish_non_exhaustive()
    }
}

/// What an upstream is made of, filled in from its configuration by the builder
/// (`build::upstream::from_config`).
pub struct UpstreamParts {
    pub name: String,
    pub url: UpstreamUrl,
    pub private: bool,
    pub host_header: String,
    pub sni: String,
    pub options: PeerOptions,
    pub client_cert: Option<Arc<CertKey>>,
    pub forward: Option<ForwardIdentityConfig>,
    pub per_identity_cache: bool,
    pub forward_set_cookie: bool,
}

impl Upstream {
    /// An upstream reached at its URL, with no template and no credential of the gateway's.
    pub fn new(p: UpstreamParts) -> Upstream {
        Upstream {
            name: p.name,
            url: p.url,
            private: p.private,
            host_header: p.host_header,
            sni: p.sni,
            options: p.options,
            client_cert: p.client_cert,
            forward: p.forward,
            per_identity_cache: p.per_identity_cache,
            forward_set_cookie: p.forward_set_cookie,
            resolved: Mutex::new(None),
            origin: None,
            template: None,
            credential: None,
        }
    }

    /// A module proxy whose URL path is a template over `module`'s captures (GitLab's
    /// `/api/v4/projects/{group}%2F{project}/packages/go`), and the credential it is sent.
    pub fn with_template(
        mut self,
        template: Option<RootTemplate>,
        credential: Option<String>,
    ) -> Upstream {
        self.template = template;
        self.credential = credential;
        self
    }

    /// Whether the server behind this upstream names repositories or projects without regard
    /// to case (Git hosts, GitLab's per-project proxy): access decisions for its modules must
    /// hold for the lower-cased spelling too.
    pub fn folds_case(&self) -> bool {
        self.origin.is_some() || self.template.is_some()
    }

    /// The gateway's own `Authorization` value for this upstream.
    pub fn credential(&self) -> Option<&str> {
        self.credential.as_deref()
    }

    /// This upstream as a `kind: git` one: served by the gateway's git origin listening on
    /// `sock` (private, HTTP/1.1, nothing of the client forwarded).
    pub fn through_origin(self, sock: &str) -> Upstream {
        let mut u = self;
        u.origin = Some(sock.to_string());
        u.host_header = "modgate-git-origin".into();
        u.private = true;
        u.forward = None;
        u.options.alpn = ALPN::H1;
        u.options.ca = None;
        u.client_cert = None;
        u
    }

    /// The path to request upstream for a canonical GOPROXY path (`/mod/@v/v1.0.0.zip`).
    /// `module` fills a templated URL path; a module the template does not match cannot be
    /// asked of this upstream.
    pub fn request_path(&self, proxy_path: &str, module: Option<&str>) -> Result<String, String> {
        if self.origin.is_some() {
            return Ok(format!("/{}{}", self.name, proxy_path));
        }
        if !self.url.path.contains('{') {
            return Ok(format!("{}{}", self.url.path, proxy_path));
        }
        let (Some(t), Some(m)) = (&self.template, module) else {
            return Err(format!(
                "upstream {}: its URL needs a module path",
                self.name
            ));
        };
        let (_, captures) = t.root_of(m).ok_or_else(|| {
            format!(
                "upstream {}: module {m} does not match its module template",
                self.name
            )
        })?;
        let encoded: template::Captures = captures
            .into_iter()
            .map(|(k, v)| (k, encode_segment(&v)))
            .collect();
        let base = template::expand(&self.url.path, &encoded)?;
        Ok(format!("{base}{proxy_path}"))
    }

    /// Resolves the upstream host (cached for [`DNS_TTL`]).
    async fn address(&self) -> Result<SocketAddr, Box<Error>> {
        if let Ok(ip) = self.url.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.url.port));
        }
        if let Ok(guard) = self.resolved.lock() {
            if let Some((at, addr)) = *guard {
                if at.elapsed() < DNS_TTL {
                    return Ok(addr);
                }
            }
        }
        let found = tokio::net::lookup_host((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("cannot resolve {}: {e}", self.url.host),
                )
            })?
            .next()
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("{} resolves to no address", self.url.host),
                )
            })?;
        if let Ok(mut guard) = self.resolved.lock() {
            *guard = Some((Instant::now(), found));
        }
        Ok(found)
    }

    /// A Pingora peer for one request to this upstream.
    pub async fn peer(&self) -> Result<Box<HttpPeer>, Box<Error>> {
        if let Some(sock) = &self.origin {
            let mut peer = HttpPeer::new_uds(sock, false, String::new())?;
            peer.options = self.options.clone();
            return Ok(Box::new(peer));
        }
        let addr = self.address().await?;
        let mut peer = HttpPeer::new(addr, self.url.tls, self.sni.clone());
        peer.options = self.options.clone();
        peer.client_cert_key = self.client_cert.clone();
        Ok(Box::new(peer))
    }
}

/// An upstream base URL: `http(s)://host[:port][/path/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`""` for none).
    pub path: String,
}

impl UpstreamUrl {
    /// Parses and validates an upstream URL.
    pub fn parse(s: &str) -> Result<UpstreamUrl, String> {
        // `{name}` captures (a templated module proxy) may appear in the path only: checked
        // with each one replaced by a plain segment, the template kept as the path.
        let path_start = s
            .find("://")
            .map(|i| i + 3)
            .and_then(|i| s[i..].find('/').map(|j| i + j))
            .unwrap_or(s.len());
        if s[..path_start].contains(['{', '}']) {
            return Err(format!(
                "{s:?}: {{captures}} may appear in the URL's path only"
            ));
        }
        let template = s[path_start..].contains('{');
        let plain = if template {
            let mut out = String::new();
            let mut depth = false;
            for ch in s.chars() {
                match ch {
                    '{' if !depth => depth = true,
                    '}' if depth => {
                        depth = false;
                        out.push('x');
                    }
                    _ if depth => {}
                    c => out.push(c),
                }
            }
            out
        } else {
            s.to_string()
        };
        let uri: http::Uri = plain
            .parse()
            .map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => {
                return Err(format!(
                    "{s:?}: scheme {other:?} is not supported (use http or https)"
                ))
            }
            None => return Err(format!("{s:?} needs a scheme (http:// or https://)")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{s:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{s:?}: credentials in upstream URLs are not supported"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        if uri.query().is_some() {
            return Err(format!("{s:?}: a query string is not allowed"));
        }
        let path = if template {
            s[path_start..].trim_end_matches('/').to_string()
        } else {
            uri.path().trim_end_matches('/').to_string()
        };
        Ok(UpstreamUrl {
            tls,
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path,
        })
    }

    /// The `Host` header value for this URL: host, plus the port when it is not the default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl std::fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

/// Percent-encodes a captured path element for a URL path segment (RFC 3986 unreserved
/// characters stay; a module path element holds nothing else but `~`, `!`-escaped letters are
/// not involved: captures are of the decoded module path).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What an upstream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamKind {
    /// A GOPROXY server.
    #[default]
    Proxy,
    /// A Git host: modgate builds the module answers itself (`gitorigin`).
    Git,
}

impl std::str::FromStr for UpstreamKind {
    type Err = String;
    /// `proxy` or `git`.
    fn from_str(s: &str) -> Result<UpstreamKind, String> {
        match s {
            "proxy" => Ok(UpstreamKind::Proxy),
            "git" => Ok(UpstreamKind::Git),
            _ => Err(format!("unknown upstream kind {s:?} (use proxy, git)")),
        }
    }
}

/// When a chain moves on from a step to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallthrough {
    /// Only on 404/410, like `,` in `GOPROXY`.
    NotFound,
    /// On 404/410, any other error status, timeouts and connection failures, like `|`.
    AnyError,
}

impl Fallthrough {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallthrough::NotFound => "not-found",
            Fallthrough::AnyError => "any-error",
        }
    }
}

impl std::fmt::Display for Fallthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Fallthrough {
    type Err = String;
    /// `not-found` or `any-error`.
    fn from_str(s: &str) -> Result<Fallthrough, String> {
        match s {
            "not-found" => Ok(Fallthrough::NotFound),
            "any-error" => Ok(Fallthrough::AnyError),
            _ => Err(format!(
                "unknown fall-through {s:?} (use not-found, any-error)"
            )),
        }
    }
}

/// A `kind: git` upstream at run time.
pub struct GitUpstream {
    pub name: String,
    /// The repository root's import path.
    pub root: RootTemplate,
    /// The repository URL, over the root's captures.
    pub repo: String,
    /// What the gateway authenticates to the host with (read from its file or variable when
    /// the model was built; a reload reads it again).
    pub credential: Option<Credential>,
    /// Refs are asked of the host again when older than this (the mutable TTL).
    pub refresh: Duration,
    /// Suffixes the host folds onto a repository's name (`.git` always among them): access
    /// is decided for the repository they name too ([`RootTemplate::canonical`]).
    pub aliases: Vec<String>,
}

impl std::fmt::Debug for GitUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitUpstream")
            .field("name", &self.name)
            .field("repo", &self.repo)
            .field("credential", &self.credential.is_some())
            .finish_non_exhaustive()
    }
}

/// One step of a chain at run time.
#[derive(Debug, Clone)]
pub struct Step {
    pub upstream: Arc<Upstream>,
    pub on: Fallthrough,
}

/// The ordered upstreams a route sends requests along, and how the route's answers are cached.
#[derive(Debug, Clone)]
pub struct Chain {
    pub steps: Vec<Step>,
    pub cache: crate::cache::RouteCache,
    /// Some step's upstream has `cache_scope: per-identity`, so answers are cached per identity.
    pub per_identity_cache: bool,
    /// Some step reaches a server that names repositories without regard to case (see
    /// [`Upstream::folds_case`]).
    pub folds_case: bool,
}

impl Chain {
    /// Whether the chain answers each identity its own way: it is told the identity
    /// (`forward_identity`), or an upstream authorises per identity (`cache_scope:
    /// per-identity`). Such answers are cached per identity and never shared between replicas.
    pub fn personal(&self) -> bool {
        self.per_identity_cache || self.steps.iter().any(|s| s.upstream.forward.is_some())
    }
}

impl Chain {
    pub fn new(steps: Vec<Step>, cache: crate::cache::RouteCache) -> Chain {
        let per_identity_cache = steps.iter().any(|s| s.upstream.per_identity_cache);
        let folds_case = steps.iter().any(|s| s.upstream.folds_case());
        Chain {
            steps,
            cache,
            per_identity_cache,
            folds_case,
        }
    }

    /// Whether a failure at `step` may move on to the next step.
    ///
    /// `not_found` is true for 404/410 answers, which every step passes on (like `,` and `|` in
    /// `GOPROXY`); other failures move on only from an `any-error` step.
    pub fn falls_through(&self, step: usize, not_found: bool) -> bool {
        match self.steps.get(step) {
            Some(s) if step + 1 < self.steps.len() => not_found || s.on == Fallthrough::AnyError,
            _ => false,
        }
    }
}

/// A plain upstream at `http://127.0.0.1:1/<name>`, for tests.
#[cfg(test)]
pub(crate) fn test_upstream(name: &str) -> Arc<Upstream> {
    let text = format!("url: \"http://127.0.0.1:1/{name}\"\n");
    let cfg: crate::config::UpstreamConfig = serde_yaml_ng::from_str(&text).expect("upstream");
    Arc::new(crate::build::upstream::from_config(name, &cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::upstream::from_config;
    use crate::config::UpstreamConfig;

    fn upstream(name: &str) -> Arc<Upstream> {
        test_upstream(name)
    }

    #[test]
    fn fallthrough_rules() {
        let chain = Chain::new(
            vec![
                Step {
                    upstream: upstream("a"),
                    on: Fallthrough::NotFound,
                },
                Step {
                    upstream: upstream("b"),
                    on: Fallthrough::AnyError,
                },
                Step {
                    upstream: upstream("c"),
                    on: Fallthrough::AnyError,
                },
            ],
            crate::cache::RouteCache::default(),
        );
        assert!(!chain.per_identity_cache);
        assert!(chain.falls_through(0, true));
        assert!(!chain.falls_through(0, false));
        assert!(chain.falls_through(1, false));
        assert!(chain.falls_through(1, true));
        // The last step never falls through.
        assert!(!chain.falls_through(2, true));
        assert!(!chain.falls_through(2, false));
        assert_eq!(
            chain.steps[0].upstream.request_path("/m.org/@v/list", None),
            Ok("/a/m.org/@v/list".to_string())
        );
        assert_eq!(chain.steps[0].upstream.host_header, "127.0.0.1:1");
    }

    #[test]
    fn templated_urls_fill_captures_percent_encoded() {
        let url = "https://gitlab.corp/api/v4/projects/{group}%2F{project}/packages/go";
        let text = format!("url: \"{url}\"\n");
        let cfg: UpstreamConfig = serde_yaml_ng::from_str(&text).expect("upstream");
        assert_eq!(cfg.url.host, "gitlab.corp");
        assert_eq!(
            cfg.url.path,
            "/api/v4/projects/{group}%2F{project}/packages/go"
        );
        let t = RootTemplate::parse("gitlab.corp/{group}/{project}").expect("template");
        let u = from_config("gl", &cfg).with_template(Some(t), Some("Bearer t".into()));
        assert_eq!(
            u.request_path("/gitlab.corp/platform/go~tools/sub/@v/list", Some("gitlab.corp/platform/go~tools/sub")),
            Ok("/api/v4/projects/platform%2Fgo~tools/packages/go/gitlab.corp/platform/go~tools/sub/@v/list".to_string())
        );
        assert_eq!(u.credential(), Some("Bearer t"));
        assert!(u
            .request_path("/x/@v/list", Some("other.example/x"))
            .is_err());
        assert!(u.request_path("/x/@v/list", None).is_err());
        assert_eq!(encode_segment("a b/ü"), "a%20b%2F%C3%BC");
        // Captures only in the path.
        assert!(UpstreamUrl::parse("https://{host}.corp/x").is_err());
        assert!(UpstreamUrl::parse("https://gitlab.corp/{a}").is_ok());
    }
}
