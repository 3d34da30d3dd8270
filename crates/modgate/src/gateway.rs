//! The run-time model built once from `gateway.yaml`: the request parser, the route table with
//! each route's upstream chain, and the upstreams. Shared by every listener and by
//! `modgate explain`, so both decide the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use modgate_policy::{AccessPolicy, Route, RouteTable};
use modgate_protocol::RequestParser;

use crate::build::upstream;
use crate::config;
use crate::config::GatewayConfig;
use crate::template::{self, RootTemplate};
use crate::upstream::{Chain, GitUpstream, Step, Upstream, UpstreamKind};
use modgate_git::{Credential, Secret};
use modgate_identity::Authenticator;

/// Reads a secret from a file (one line; surrounding whitespace dropped).
fn secret_file(what: &str, p: &config::PathValue) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&p.0)
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", p.0.display()))?;
    let value = text.trim().to_string();
    anyhow::ensure!(!value.is_empty(), "{what} {} is empty", p.0.display());
    anyhow::ensure!(
        !value.contains(['\r', '\n']),
        "{what} {} holds more than one line",
        p.0.display()
    );
    Ok(value)
}

/// An upstream's credential as read: an `Authorization` value, or a client certificate.
enum CredentialValue {
    Header(String),
    ClientCertificate {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
}

/// The credential an upstream presents, read now (a reload reads it again).
fn read_credential(c: &config::GitCredentialConfig) -> anyhow::Result<CredentialValue> {
    use base64::Engine;
    let given = [
        c.token_file.is_some(),
        c.token_env.is_some(),
        c.basic_file.is_some(),
        c.header_file.is_some(),
        c.cert.is_some() || c.key.is_some(),
    ];
    anyhow::ensure!(
        given.iter().filter(|g| **g).count() == 1,
        "credential: give exactly one of token_file, token_env, basic_file, header_file, or \
         cert with key"
    );
    let header = if let Some(p) = &c.token_file {
        format!("Bearer {}", secret_file("credential.token_file", p)?)
    } else if let Some(var) = &c.token_env {
        let token = std::env::var(var)
            .map_err(|_| anyhow::anyhow!("credential.token_env: ${var} is not set"))?;
        format!("Bearer {}", token.trim())
    } else if let Some(p) = &c.basic_file {
        let pair = secret_file("credential.basic_file", p)?;
        anyhow::ensure!(
            pair.contains(':'),
            "credential.basic_file {}: expected user:password",
            p.0.display()
        );
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    } else if let Some(p) = &c.header_file {
        secret_file("credential.header_file", p)?
    } else {
        let (Some(cert), Some(key)) = (&c.cert, &c.key) else {
            anyhow::bail!("credential: cert and key go together");
        };
        crate::tls::read_certs(&cert.0).map_err(anyhow::Error::msg)?;
        crate::tls::read_key(&key.0).map_err(anyhow::Error::msg)?;
        return Ok(CredentialValue::ClientCertificate {
            cert: cert.0.clone(),
            key: key.0.clone(),
        });
    };
    Ok(CredentialValue::Header(header))
}

/// A module-proxy upstream's URL template and credential: `{name}` in the URL's path is filled,
/// percent-encoded, from the captures of `module`; the credential is sent as `Authorization`.
fn proxy_extras(
    name: &str,
    c: &config::UpstreamConfig,
) -> anyhow::Result<(Option<RootTemplate>, Option<String>)> {
    let what = |m: &str| anyhow::anyhow!("upstream {name:?}: {m}");
    anyhow::ensure!(
        c.repo_aliases.is_none(),
        what("repo_aliases is for kind: git")
    );
    anyhow::ensure!(c.repo.is_none(), what("repo is for kind: git"));
    let module = match &c.module {
        Some(m) => Some(RootTemplate::parse(m).map_err(|e| what(&format!("module: {e}")))?),
        None => None,
    };
    if c.url.path.contains('{') {
        let Some(m) = &module else {
            return Err(what(
                "url: {captures} in the path need module: the template they are captured by",
            ));
        };
        let probe: template::Captures = m.names().map(|n| (n.to_string(), "x".into())).collect();
        template::expand(&c.url.path, &probe).map_err(|e| what(&format!("url: {e}")))?;
    }
    let header = match &c.credential {
        None => None,
        Some(cc) => match read_credential(cc).map_err(|e| what(&e.to_string()))? {
            CredentialValue::Header(h) => Some(h),
            CredentialValue::ClientCertificate { .. } => {
                return Err(what(
                    "credential: a module proxy's client certificate is client_cert",
                ))
            }
        },
    };
    Ok((module, header))
}

/// A git upstream's repository aliases: `.git` and those configured (default
/// [`template::DEFAULT_REPO_ALIASES`]), each a `.` and the characters of a path element.
fn repo_aliases(configured: Option<&[String]>) -> Result<Vec<String>, String> {
    let mut out = vec![template::GIT_SUFFIX.to_string()];
    let listed: Vec<String> = match configured {
        Some(list) => list.to_vec(),
        None => template::DEFAULT_REPO_ALIASES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    for a in listed {
        let valid = a.len() > 1
            && a.starts_with('.')
            && a[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'));
        if !valid {
            return Err(format!(
                "repo_aliases: {a:?} is not a name suffix (want a '.' then letters, digits, \
                 '.', '-', '_' or '~', like \".wiki\")"
            ));
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// `kind: git` upstreams by name.
type GitUpstreams = BTreeMap<String, Arc<GitUpstream>>;

/// The `kind: git` upstreams of a configuration, checked and with their credentials read (once),
/// and each one's Git host as an HTTP upstream carrying the same credential (smart HTTP proxy).
fn git_upstreams(
    config: &GatewayConfig,
    ttl: &crate::cache::Ttls,
) -> anyhow::Result<(GitUpstreams, BTreeMap<String, Arc<Upstream>>)> {
    let mut out = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    for (name, c) in &config.upstreams {
        if c.kind != UpstreamKind::Git {
            continue;
        }
        let what = |m: &str| format!("upstream {name:?} (kind: git): {m}");
        anyhow::ensure!(
            c.private,
            what("it serves private modules: set private: true")
        );
        anyhow::ensure!(
            c.forward_identity.is_none(),
            what("forward_identity: a Git host is not told who asked (the gateway asks it)")
        );
        let module = c.module.as_deref().ok_or_else(|| {
            anyhow::anyhow!(what(
                "module: the repository root's import path template is required"
            ))
        })?;
        let root = RootTemplate::parse(module)
            .map_err(|e| anyhow::anyhow!(what(&format!("module: {e}"))))?;
        let repo = c.repo.as_deref().ok_or_else(|| {
            anyhow::anyhow!(what("repo: the repository path template is required"))
        })?;
        let repo = format!(
            "{}/{}",
            c.url.to_string().trim_end_matches('/'),
            repo.trim_start_matches('/')
        );
        // Every name the repository template uses must be captured by the module template.
        let probe: template::Captures = root
            .names()
            .map(|n| (n.to_string(), "x".to_string()))
            .collect();
        template::expand(&repo, &probe)
            .map_err(|e| anyhow::anyhow!(what(&format!("repo: {e}"))))?;
        let value = match &c.credential {
            Some(cc) => {
                Some(read_credential(cc).map_err(|e| anyhow::anyhow!(what(&e.to_string())))?)
            }
            None => None,
        };
        // The Git host itself, for the smart HTTP proxy, with the same credential (read once).
        let header = match &value {
            Some(CredentialValue::Header(h)) => Some(h.clone()),
            _ => None,
        };
        hosts.insert(
            name.clone(),
            Arc::new(upstream::from_config(name, c).with_template(None, header)),
        );
        let aliases =
            repo_aliases(c.repo_aliases.as_deref()).map_err(|e| anyhow::anyhow!(what(&e)))?;
        let credential = value.map(|v| match v {
            CredentialValue::Header(h) => Credential::Authorization(Secret::new(h)),
            CredentialValue::ClientCertificate { cert, key } => {
                Credential::ClientCertificate { cert, key }
            }
        });
        out.insert(
            name.clone(),
            Arc::new(GitUpstream {
                name: name.clone(),
                root,
                repo,
                credential,
                refresh: ttl.mutable,
                aliases,
            }),
        );
    }
    for (name, c) in &config.sumdb {
        anyhow::ensure!(
            c.kind == UpstreamKind::Proxy,
            "sumdb {:?}: a checksum database is served by a proxy, not kind: git",
            name.0
        );
    }
    Ok((out, hosts))
}

/// Routing and access state shared by all listeners.
pub struct Gateway {
    pub parser: RequestParser,
    pub routes: RouteTable<Chain>,
    pub access: AccessPolicy,
    /// The same policy with letters of patterns compared without regard to case
    /// ([`AccessPolicy::case_folded`]): asked, about lower-cased paths, for denials on routes
    /// to servers that fold case (Git hosts), so a rule written `Team/Secret` holds for every
    /// spelling such a host resolves to the same repository.
    pub access_folded: AccessPolicy,
    /// Whether `gateway.yaml` has an `access:` section.
    pub access_configured: bool,
    /// The credential files (a reload builds a new gateway, and with it a new authenticator).
    pub auth: Arc<Authenticator>,
    /// Checksum databases proxied at `/sumdb/<name>/`, by name.
    pub sumdbs: BTreeMap<String, Arc<Upstream>>,
    /// `kind: git` upstreams by name, for the git origin (credentials read).
    pub git: BTreeMap<String, Arc<GitUpstream>>,
    /// `server.public_url`, without a trailing slash.
    pub public_url: Option<String>,
    /// The Git host of each `kind: git` upstream, as an HTTP upstream carrying the gateway's
    /// credential, for the git smart HTTP proxy.
    pub git_hosts: BTreeMap<String, Arc<Upstream>>,
    /// `versions.vulnerabilities`: the loaded database and its policy.
    pub vulns: Option<Arc<crate::vulns::VulnPolicy>>,
    /// `versions.retractions`.
    pub retractions: Option<crate::config::RetractionsConfig>,
    /// `versions.cooldown`, with its exemptions ready to match.
    pub cooldown: Option<(crate::config::CooldownConfig, Vec<modgate_policy::Pattern>)>,
    /// `checksum_log`: who reads the company's checksum database and how public records are
    /// trusted (the log itself is opened with the process).
    pub checksum_log: Option<Arc<ChecksumLogPolicy>>,
}

/// The run-time policy of the company's checksum database (`checksum_log:`).
#[derive(Debug)]
pub struct ChecksumLogPolicy {
    /// Its name, as in `/sumdb/<name>/`.
    pub name: String,
    /// The roles whose members may read it.
    pub readers: Vec<String>,
    /// Public records are checked against this proxied database, with its verifier, before
    /// they are logged; `None`: air-gapped, the gateway's first-seen hashes are trusted.
    pub public: Option<(Arc<Upstream>, modgate_tlog::Verifier)>,
}

impl Gateway {
    /// Builds the run-time model; the configuration has already been validated.
    pub fn new(config: &GatewayConfig) -> anyhow::Result<Gateway> {
        let parser = RequestParser::new(&config.server.path_prefix)
            .with_context(|| format!("server.path_prefix {:?}", config.server.path_prefix))?;
        let upstreams: BTreeMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, c)| {
                let u = match c.kind {
                    UpstreamKind::Git => upstream::git(name, c, &config.git_origin_sock()),
                    UpstreamKind::Proxy => {
                        let (module, credential) = proxy_extras(name, c)?;
                        upstream::from_config(name, c).with_template(module, credential)
                    }
                };
                Ok((name.clone(), Arc::new(u)))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in config.routes.iter() {
            let mut steps = Vec::with_capacity(r.chain.len());
            for s in &r.chain {
                let upstream = upstreams.get(&s.upstream).with_context(|| {
                    format!("route {:?}: unknown upstream {:?}", r.name, s.upstream)
                })?;
                anyhow::ensure!(
                    !r.private || upstream.private,
                    "route {:?} is private but upstream {:?} is not",
                    r.name,
                    s.upstream
                );
                steps.push(Step {
                    upstream: upstream.clone(),
                    on: s.on,
                });
            }
            routes.push(Route {
                name: r.name.clone(),
                pattern: r.pattern.clone(),
                private: r.private,
                target: Chain::new(steps, r.cache.runtime()),
            });
        }
        let routes = RouteTable::new(routes).context("routes")?;
        let authenticator = config.auth.load().map_err(anyhow::Error::msg)?;
        let sumdbs: BTreeMap<String, Arc<Upstream>> = config
            .sumdb
            .iter()
            .map(|(name, c)| (name.0.clone(), Arc::new(upstream::from_config(&name.0, c))))
            .collect();
        let (git, git_hosts) = git_upstreams(config, &config.ttls())?;
        let checksum_log = match &config.checksum_log {
            Some(c) => {
                let public = match (&c.public, c.public_key()) {
                    (crate::config::checksum_log::PublicTrust::Verify { sumdb, .. }, Some(key)) => {
                        let db: &Arc<Upstream> = sumdbs.get(sumdb).with_context(|| {
                            format!("checksum_log.public.sumdb: no sumdb {sumdb:?}")
                        })?;
                        let verifier = modgate_tlog::Verifier::new(&key)
                            .map_err(|e| anyhow::anyhow!("checksum_log.public.key: {e}"))?;
                        Some((db.clone(), verifier))
                    }
                    _ => None,
                };
                Some(Arc::new(ChecksumLogPolicy {
                    name: c.name.clone(),
                    readers: c.readers.clone(),
                    public,
                }))
            }
            None => None,
        };
        let vulns = match &config.versions.vulnerabilities {
            Some(v) => Some(Arc::new(crate::vulns::VulnPolicy::load(v)?)),
            None => None,
        };
        Ok(Gateway {
            checksum_log,
            vulns,
            retractions: config.versions.retractions.clone(),
            cooldown: match &config.versions.cooldown {
                Some(c) => {
                    let exempt = c
                        .exempt
                        .iter()
                        .map(|m| {
                            modgate_policy::Pattern::prefix(m).map_err(|e| {
                                anyhow::anyhow!("versions.cooldown.exempt: {m:?}: {e}")
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    Some((c.clone(), exempt))
                }
                None => None,
            },
            git_hosts,
            public_url: config
                .server
                .public_url
                .as_ref()
                .map(|u| u.to_string().trim_end_matches('/').to_string()),
            git,
            parser,
            routes,
            sumdbs,
            access: config.access.policy.clone(),
            access_folded: config.access.policy.case_folded(),
            access_configured: config.access.configured,
            auth: Arc::new(authenticator),
        })
    }

    /// Route table warnings worth printing at start-up and from `modgate check`.
    pub fn warnings(&self) -> Vec<String> {
        let routes = self.routes.routes();
        let mut out = Vec::new();
        if !self.access_configured {
            for r in routes.iter().filter(|r| r.private) {
                out.push(format!(
                    "route {:?} is private and there is no access: section, so nobody may read it \
                     (private routes are denied unless a role allows them)",
                    r.name
                ));
            }
        }
        out.extend(
            self.routes
                .shadowed_routes()
                .into_iter()
                .map(|(shadowed, by)| {
                    format!(
                        "route {:?} can never match: route {:?} ({}) comes first and covers it",
                        routes[shadowed].name, routes[by].name, routes[by].pattern
                    )
                }),
        );
        out
    }
}
