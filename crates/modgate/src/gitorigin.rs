//! The origin of `kind: git` upstreams: a GOPROXY server inside the gateway process, on a
//! private Unix socket, that answers from Git repositories with `modgate-git` (byte-identical to
//! what `go` computes with `GOPROXY=direct`).
//!
//! A git upstream is reached like any other upstream — an `HttpPeer`, here on that socket — so
//! what is built from Git takes the same path as an upstream proxy's bytes: the route and its
//! RBAC decision, the chain with its failover, the cache with coalesced misses and
//! stale-if-error, the first-seen ledger, the audit record. The origin only maps
//! `/<upstream>/<escaped module>/@v/…` to a repository and asks `modgate-git`, on the blocking
//! pool (every operation is a few short git subprocesses).
//!
//! Module path → repository: a template of path elements (`git.corp.example/{group}/{repo}`)
//! matches the repository root's import path at the start of the module path; its named
//! captures fill the repository URL template (`https://git.corp.example/{group}/{repo}.git`).
//! `modgate-git` then works out a subdirectory and a `/vN` suffix from the rest, as Go does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use modgate_git::{Credential, GitError, Mirrors, ModuleSource};
use modgate_protocol::{GoProxyRequest, RequestKind, RequestParser};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::GatewayConfig;
use crate::model::Live;

/// One element of a module-path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Element {
    Literal(String),
    /// `{name}`: any one path element, captured as `name`.
    Capture(String),
}

/// The import path of a repository's root, as a template over path elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootTemplate {
    elements: Vec<Element>,
}

/// The captures of a matched template, by name.
pub type Captures = BTreeMap<String, String>;

impl RootTemplate {
    /// Parses `host/{group}/{repo}`: `/`-separated elements, each a literal or one `{name}`.
    pub fn parse(s: &str) -> Result<RootTemplate, String> {
        let mut elements = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in s.split('/').enumerate() {
            if e.is_empty() {
                return Err(format!("{s:?}: empty path element"));
            }
            let element = match e.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                Some(name) => {
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(format!(
                            "{s:?}: capture {{{name}}} must be a name of letters, digits, _ or -"
                        ));
                    }
                    if !seen.insert(name.to_string()) {
                        return Err(format!("{s:?}: capture {{{name}}} appears twice"));
                    }
                    if i == 0 {
                        return Err(format!(
                            "{s:?}: the first element (the host) must be literal"
                        ));
                    }
                    Element::Capture(name.to_string())
                }
                None if e.contains('{') || e.contains('}') => {
                    return Err(format!(
                        "{s:?}: element {e:?}: a capture is a whole element, like {{repo}}"
                    ))
                }
                None => Element::Literal(e.to_string()),
            };
            elements.push(element);
        }
        Ok(RootTemplate { elements })
    }

    /// The names this template captures.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.elements.iter().filter_map(|e| match e {
            Element::Capture(n) => Some(n.as_str()),
            Element::Literal(_) => None,
        })
    }

    /// Matches the start of `module`: the repository root's import path and the captures.
    pub fn root_of(&self, module: &str) -> Option<(String, Captures)> {
        let parts: Vec<&str> = module.split('/').collect();
        if parts.len() < self.elements.len() {
            return None;
        }
        let mut captures = Captures::new();
        for (e, p) in self.elements.iter().zip(&parts) {
            match e {
                Element::Literal(l) if l == p => {}
                Element::Literal(_) => return None,
                Element::Capture(name) => {
                    captures.insert(name.clone(), (*p).to_string());
                }
            }
        }
        Some((parts[..self.elements.len()].join("/"), captures))
    }
}

impl RootTemplate {
    /// The repository a Git host resolves `module` to, as a module path: `module` with every
    /// alias suffix (`.git`, `.wiki`, …; repeatedly, so `x.git.git` is `x`) stripped from each
    /// captured element of its root. Hosts serve `group/repo.git` (and a wiki as
    /// `group/repo.wiki`) as `group/repo`, so a decision on `group/repo` must hold for those
    /// spellings too. Literal elements compare without regard to case (a lower-cased spelling
    /// of the path has its canonical form as well). `None` when `module` is not under the
    /// template or nothing is stripped.
    pub fn canonical(&self, module: &str, aliases: &[String]) -> Option<String> {
        let mut parts: Vec<&str> = module.split('/').collect();
        if parts.len() < self.elements.len() {
            return None;
        }
        let mut changed = false;
        for (e, p) in self.elements.iter().zip(parts.iter_mut()) {
            match e {
                Element::Literal(l) if l.eq_ignore_ascii_case(p) => {}
                Element::Literal(_) => return None,
                Element::Capture(_) => {
                    while let Some(stem) = aliases
                        .iter()
                        .find_map(|a| p.strip_suffix(a.as_str()).filter(|s| !s.is_empty()))
                    {
                        *p = stem;
                        changed = true;
                    }
                }
            }
        }
        changed.then(|| parts.join("/"))
    }
}

/// The suffixes a Git host folds onto a repository's name when `repo_aliases` is not set:
/// `.git` (every host) and `.wiki` (a repository's wiki on GitHub, GitLab and Gitea, readable
/// by whoever reads the repository).
pub const DEFAULT_REPO_ALIASES: [&str; 2] = [".git", ".wiki"];

/// The suffix every Git host folds onto a repository's name: always an alias.
pub const GIT_SUFFIX: &str = ".git";

/// Fills `{name}` in `template` from `captures`; every name must be captured.
pub fn expand(template: &str, captures: &Captures) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{template:?}: unclosed {{"))?;
        let name = &after[..close];
        let value = captures.get(name).ok_or_else(|| {
            format!("{template:?}: {{{name}}} is not captured by the module template")
        })?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{template:?}: unmatched }}"));
    }
    out.push_str(rest);
    Ok(out)
}

/// Where the git mirrors live: `server.git_dir`, else `git/` in the cache directory, else a
/// per-instance directory beside the origin's socket.
pub fn mirrors_dir(config: &GatewayConfig) -> PathBuf {
    config
        .server
        .git_dir
        .as_ref()
        .map(|p| p.0.clone())
        .or_else(|| config.cache.as_ref().map(|c| c.dir.0.join("git")))
        .unwrap_or_else(|| PathBuf::from(format!("{}.mirrors", config.git_origin_sock())))
}

/// Asks every git mirror in `dir` that serves `module` (by the configured `kind: git`
/// upstreams) to refresh from its host on its next use (`modgate cache purge`): the
/// repositories asked, or why one could not be. Nothing is fetched here; a mirror not made yet
/// needs nothing. A running gateway passes the directory its origin started with (a changed
/// `git_dir` waits for an upgrade).
pub fn request_mirror_refresh(config: &GatewayConfig, dir: &Path, module: &str) -> Vec<String> {
    let mirrors = Mirrors::new(dir.to_path_buf(), modgate_git::GitOptions::default());
    let mut done = Vec::new();
    for (name, c) in &config.upstreams {
        let (Some(template), Some(repo)) = (c.module.as_deref(), c.repo.as_deref()) else {
            continue;
        };
        if c.kind != crate::config::UpstreamKind::Git {
            continue;
        }
        let Some((_, captures)) = RootTemplate::parse(template)
            .ok()
            .and_then(|t| t.root_of(module))
        else {
            continue;
        };
        // As `gateway::git_upstreams` builds the repository URL.
        let url = format!(
            "{}/{}",
            c.url.to_string().trim_end_matches('/'),
            repo.trim_start_matches('/')
        );
        let Ok(url) = expand(&url, &captures) else {
            continue;
        };
        match mirrors.request_refresh(&url) {
            Ok(true) => done.push(format!(
                "git mirror of {url} ({name}) refreshes on next use"
            )),
            Ok(false) => {}
            Err(e) => done.push(format!("git mirror of {url} ({name}): {e}")),
        }
    }
    done
}

/// Why the mirrors directory `meta` describes is not ours alone to write in: a symlink,
/// not a directory, another user's, or writable by group or others (who may have planted
/// mirrors, hooks or links in it). Changes nothing.
fn not_ours(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let euid = rustix::process::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_string())
    } else if !meta.is_dir() {
        Some("is not a directory".to_string())
    } else if meta.uid() != euid {
        Some(format!(
            "is owned by uid {}, not by this process's uid {euid}",
            meta.uid()
        ))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "has mode {mode:04o}: group or others may write in it"
        ))
    } else {
        None
    }
}

fn mirrors_refusal(dir: &Path, meta: &std::fs::Metadata, problem: &str) -> anyhow::Error {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    anyhow::anyhow!(
        "git mirrors directory {} {problem} (owner uid {}, mode {:04o}): it holds private \
         repositories, so it must be a directory of this user's with no group or other \
         access; remove it or set server.git_dir",
        dir.display(),
        meta.uid(),
        meta.permissions().mode() & 0o7777
    )
}

/// Checks, changing nothing, that an existing mirrors directory is ours alone to write in
/// ([`not_ours`]); a missing one is fine (it is made private when first needed). For
/// `modgate check` and for a reload, which must not create or change anything on disk.
pub fn verify_mirrors_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => match not_ours(&meta) {
            Some(p) => Err(mirrors_refusal(dir, &meta, &p)),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => anyhow::bail!("git mirrors {}: {e}", dir.display()),
    }
}

/// Makes the mirrors directory ready at start: created (mode 0700) when missing, refused
/// when it is not ours alone ([`not_ours`]), and made `0700` when it is ours and others may
/// only read it (made by an older version or a umask: nothing can be in it but what we put
/// there).
pub fn prepare_mirrors_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::anyhow!(
                "git mirrors {}: cannot create {}: {e}",
                dir.display(),
                parent.display()
            )
        })?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("git mirrors {}: cannot create it: {e}", dir.display()),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| anyhow::anyhow!("git mirrors {}: {e}", dir.display()))?;
    if let Some(p) = not_ours(&meta) {
        return Err(mirrors_refusal(dir, &meta, &p));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).map_err(
            |e| {
                mirrors_refusal(
                    dir,
                    &meta,
                    &format!("may be entered by group or others and cannot be made private: {e}"),
                )
            },
        )?;
    }
    Ok(())
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

/// What the origin answers: status and body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// `Cache-Control: no-store`: the gateway must not keep it (a revision the repository does
    /// not have yet: a tag pushed a moment later must be found at once).
    no_store: bool,
}

impl Answer {
    fn ok(content_type: &'static str, body: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            content_type,
            body,
            no_store: false,
        }
    }

    fn error(status: u16, message: String) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{message}\n").into_bytes(),
            no_store: false,
        }
    }

    /// The answer to a failed git operation. Not-found answers are `404` with Go's words (the
    /// go command then tries the next proxy, `,direct`, and `on: not-found` chains go on): an
    /// unknown repository names the module and the repository, and is kept briefly by the
    /// gateway's cache (`ttl.not_found`) as by the origin (`server.git_not_found_ttl`); an
    /// unknown revision is not kept at all (the origin asked the host again before saying so).
    fn failed(upstream: &str, module: &str, e: &GitError) -> Answer {
        match e {
            GitError::RepositoryNotFound { .. } => {
                Answer::error(404, format!("module {module}: {e}"))
            }
            GitError::UnknownRevision { .. } => Answer {
                no_store: true,
                ..Answer::error(404, e.to_string())
            },
            e if e.is_not_found() => Answer::error(404, e.to_string()),
            e => {
                log::warn!("git upstream {upstream}: {e}");
                Answer::error(502, e.to_string())
            }
        }
    }
}

/// How many git operations run at once for one git upstream, by its name (the rest wait their
/// turn): a burst of cold module fetches must not become a burst of clones on the Git host.
/// The bound is per upstream name, not per host: two upstreams on one host have one each.
const PER_UPSTREAM_CONCURRENCY: usize = 8;

/// The in-process origin of every git upstream.
pub struct GitOrigin {
    live: Arc<Live>,
    /// Paths under an upstream's name are canonical GOPROXY paths (no prefix).
    parser: RequestParser,
    mirrors: Arc<Mirrors>,
    /// One bound per git upstream.
    turns: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl GitOrigin {
    pub fn new(
        live: Arc<Live>,
        mirrors: Mirrors,
    ) -> Result<GitOrigin, modgate_protocol::RequestError> {
        Ok(GitOrigin {
            live,
            parser: RequestParser::new("")?,
            mirrors: Arc::new(mirrors),
            turns: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    async fn answer(&self, path_and_query: &str) -> Answer {
        let Some((name, rest)) = path_and_query
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
        else {
            return Answer::error(404, "not a git upstream path".into());
        };
        let model = self.live.current();
        let Some(up) = model.gateway.git.get(name).cloned() else {
            return Answer::error(404, format!("no git upstream {name:?}"));
        };
        let parsed = match self.parser.parse(&format!("/{rest}")) {
            Ok(GoProxyRequest::Module(r)) => r,
            Ok(_) => return Answer::error(404, "not a module request".into()),
            Err(e) => return Answer::error(e.status(), e.to_string()),
        };
        let Some((root, captures)) = up.root.root_of(&parsed.module) else {
            return Answer::error(
                404,
                format!(
                    "{}: not a module of git upstream {}",
                    parsed.module, up.name
                ),
            );
        };
        let url = match expand(&up.repo, &captures) {
            Ok(u) => u,
            Err(e) => return Answer::error(502, e),
        };
        let mirrors = self.mirrors.clone();
        let module = parsed.module.clone();
        let work = move || -> Result<Answer, GitError> {
            let repo = mirrors.repo(&url, up.credential.clone())?;
            let m = ModuleSource::new(repo, &root, &parsed.module)?.with_max_age(up.refresh);
            let version = parsed.version.as_ref().map(|v| v.as_str().to_string());
            Ok(match (parsed.kind, version) {
                (RequestKind::List, _) => {
                    Answer::ok("text/plain; charset=utf-8", m.list()?.into_bytes())
                }
                (RequestKind::Latest, _) => Answer::ok("application/json", m.latest()?.to_json()),
                (RequestKind::Info, Some(v)) => {
                    Answer::ok("application/json", m.info(&v)?.to_json())
                }
                (RequestKind::Mod, Some(v)) => {
                    Answer::ok("text/plain; charset=utf-8", m.go_mod(&v)?)
                }
                (RequestKind::Zip, Some(v)) => Answer::ok("application/zip", m.zip(&v)?),
                _ => Answer::error(404, "not a module request".into()),
            })
        };
        let turns = self
            .turns
            .lock()
            .map(|mut t| {
                t.entry(name.to_string())
                    .or_insert_with(|| {
                        Arc::new(tokio::sync::Semaphore::new(PER_UPSTREAM_CONCURRENCY))
                    })
                    .clone()
            })
            .ok();
        let _turn = match &turns {
            Some(t) => t.acquire().await.ok(),
            None => None,
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => Answer::failed(name, &module, &e),
            Err(e) => Answer::error(500, format!("git upstream {name}: {e}")),
        }
    }
}

#[async_trait]
impl ServeHttp for GitOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let target = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let a = self.answer(&target).await;
        a.into_response()
    }
}

impl Answer {
    /// The HTTP response that carries this answer; a `500` with the reason when it cannot be
    /// built (a status or header value `http` refuses), never an empty `200`: the gateway
    /// would take that for the artifact and pin its empty bytes in the ledger.
    fn into_response(self) -> Response<Vec<u8>> {
        let length = self.body.len();
        let mut builder = Response::builder()
            .status(self.status)
            .header("Content-Type", self.content_type)
            .header("Content-Length", length);
        if self.no_store {
            builder = builder.header("Cache-Control", "no-store");
        }
        match builder.body(self.body) {
            Ok(r) => r,
            Err(e) => {
                log::error!("git origin: an answer could not be sent: {e}");
                fail_closed(&e)
            }
        }
    }
}

/// A `500` that names `reason`, built from parts that cannot be refused.
fn fail_closed(reason: &dyn std::fmt::Display) -> Response<Vec<u8>> {
    use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
    let body = format!("git origin: the answer could not be sent: {reason}\n").into_bytes();
    let length = HeaderValue::from(body.len());
    let mut r = Response::new(body);
    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CONTENT_LENGTH, length);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_the_repository_root_at_the_start() {
        let t = RootTemplate::parse("git.corp.example/{group}/{repo}").expect("template");
        assert_eq!(t.names().collect::<Vec<_>>(), ["group", "repo"]);
        let (root, c) = t
            .root_of("git.corp.example/platform/tools/sub/v2")
            .expect("match");
        assert_eq!(root, "git.corp.example/platform/tools");
        assert_eq!(c["group"], "platform");
        assert_eq!(c["repo"], "tools");
        assert_eq!(
            expand("https://git.corp.example/{group}/{repo}.git", &c).expect("url"),
            "https://git.corp.example/platform/tools.git"
        );
        assert!(t.root_of("git.corp.example/platform").is_none());
        assert!(t.root_of("other.example/platform/tools").is_none());
    }

    #[test]
    fn git_failures_become_go_not_found_answers_or_502() {
        let missing = GitError::RepositoryNotFound {
            url: "https://git.corp.example/g/nope.git".into(),
            detail: "fatal: repository 'https://git.corp.example/g/nope.git/' not found".into(),
        };
        let a = Answer::failed("corp", "git.corp.example/g/nope/sub", &missing);
        let text = String::from_utf8_lossy(&a.body).to_string();
        assert_eq!((a.status, a.no_store), (404, false));
        assert!(text.starts_with("module git.corp.example/g/nope/sub: repository https://git.corp.example/g/nope.git not found"), "{text}");
        let unknown = GitError::UnknownRevision {
            module: "git.corp.example/g/r".into(),
            rev: "v1.2.0".into(),
        };
        let a = Answer::failed("corp", "git.corp.example/g/r", &unknown);
        assert_eq!((a.status, a.no_store), (404, true));
        let invalid = GitError::InvalidVersion {
            module: "git.corp.example/g/r".into(),
            version: "v3.0.0".into(),
            detail: "module contains a go.mod file".into(),
        };
        assert_eq!(Answer::failed("corp", "m", &invalid).status, 404);
        let down = GitError::Git {
            command: "ls-remote".into(),
            status: "exit 128".into(),
            stderr: "fatal: unable to access: Failed to connect".into(),
        };
        assert_eq!(Answer::failed("corp", "m", &down).status, 502);
    }

    #[test]
    fn alias_spellings_have_the_repository_as_canonical_form() {
        let t = RootTemplate::parse("git.corp.example/{group}/{repo}").expect("template");
        let aliases: Vec<String> = DEFAULT_REPO_ALIASES.iter().map(|s| s.to_string()).collect();
        for (module, want) in [
            (
                "git.corp.example/team/secret.git",
                Some("git.corp.example/team/secret"),
            ),
            (
                "git.corp.example/team/secret.wiki",
                Some("git.corp.example/team/secret"),
            ),
            (
                "git.corp.example/team/secret.git.git",
                Some("git.corp.example/team/secret"),
            ),
            (
                "git.corp.example/team/secret.wiki.git",
                Some("git.corp.example/team/secret"),
            ),
            (
                "git.corp.example/team.git/secret.git/x.git/v2",
                Some("git.corp.example/team/secret/x.git/v2"),
            ),
            (
                "GIT.corp.example/team/secret.git",
                Some("GIT.corp.example/team/secret"),
            ),
            ("git.corp.example/team/secret", None),
            ("git.corp.example/team/.git", None),
            ("git.corp.example/team/git", None),
            ("git.corp.example/team/secret.GIT", None),
            ("git.corp.example/team", None),
            ("other.example/team/secret.git", None),
        ] {
            assert_eq!(t.canonical(module, &aliases).as_deref(), want, "{module}");
        }
        assert_eq!(
            t.canonical("git.corp.example/team/secret.wiki", &[".git".into()]),
            None
        );
    }

    #[test]
    fn an_answer_that_cannot_be_sent_fails_closed() {
        let zip = b"PK\x03\x04 the bytes of a module zip".to_vec();
        let unbuildable = [
            // A status http cannot carry.
            Answer {
                status: 1000,
                ..Answer::ok("application/zip", zip.clone())
            },
            // A header value http refuses.
            Answer::ok("application/zip\n", zip.clone()),
        ];
        for a in unbuildable {
            let r = a.into_response();
            let body = String::from_utf8_lossy(r.body()).to_string();
            assert_eq!(r.status(), 500, "{body}");
            assert!(
                body.starts_with("git origin: the answer could not be sent: "),
                "{body}"
            );
            assert_eq!(
                r.headers()["Content-Length"].to_str().ok(),
                Some(body.len().to_string().as_str())
            );
            assert_eq!(r.headers()["Cache-Control"], "no-store");
        }
        let r = Answer::ok("application/zip", zip.clone()).into_response();
        assert_eq!((r.status().as_u16(), r.body()), (200, &zip));
        assert_eq!(r.headers()["Content-Type"], "application/zip");
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "",
            "git.corp.example//{repo}",
            "{host}/x",
            "git.corp.example/{a}/{a}",
            "git.corp.example/x{repo}",
            "git.corp.example/{re po}",
        ] {
            assert!(RootTemplate::parse(bad).is_err(), "{bad:?}");
        }
        let c = Captures::from([("repo".to_string(), "x".to_string())]);
        assert!(expand("https://h/{group}.git", &c).is_err());
        assert!(expand("https://h/{repo.git", &c).is_err());
        assert!(expand("https://h/repo}.git", &c).is_err());
    }
}
