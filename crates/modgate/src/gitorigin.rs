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
//! Module path → repository: a template of path elements (`git.corp.example/{group}/{repo}`,
//! `template.rs`) matches the repository root's import path at the start of the module path;
//! its named captures fill the repository URL template
//! (`https://git.corp.example/{group}/{repo}.git`).
//! `modgate-git` then works out a subdirectory and a `/vN` suffix from the rest, as Go does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use modgate_git::{GitError, Mirrors, ModuleSource};
use modgate_protocol::{GoProxyRequest, RequestKind, RequestParser};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::GatewayConfig;
use crate::model::Live;
use crate::template::{expand, RootTemplate};

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
    /// Where the versions a mirror refresh finds in tags are recorded as first seen (the
    /// cooldown's clock for Git upstreams); `None` without a cache.
    sightings: Option<Arc<modgate_ledger::Sightings>>,
}

impl GitOrigin {
    pub fn new(
        live: Arc<Live>,
        mirrors: Mirrors,
        sightings: Option<Arc<modgate_ledger::Sightings>>,
    ) -> Result<GitOrigin, modgate_protocol::RequestError> {
        Ok(GitOrigin {
            live,
            parser: RequestParser::new("")?,
            mirrors: Arc::new(mirrors),
            turns: std::sync::Mutex::new(BTreeMap::new()),
            sightings,
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
        let sightings = self.sightings.clone();
        let work = move || -> Result<Answer, GitError> {
            let repo = mirrors.repo(&url, up.credential.clone())?;
            let m = ModuleSource::new(repo, &root, &parsed.module)?.with_max_age(up.refresh);
            let version = parsed.version.as_ref().map(|v| v.as_str().to_string());
            let answer = answer_from(&m, parsed.kind, version)?;
            if let Some(store) = &sightings {
                record_tags(store, &m, &parsed.module);
            }
            Ok(answer)
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

/// The answer of `kind` (for `version`) from the module's source.
fn answer_from(
    m: &ModuleSource,
    kind: RequestKind,
    version: Option<String>,
) -> Result<Answer, GitError> {
    Ok(match (kind, version) {
        (RequestKind::List, _) => Answer::ok("text/plain; charset=utf-8", m.list()?.into_bytes()),
        (RequestKind::Latest, _) => Answer::ok("application/json", m.latest()?.to_json()),
        (RequestKind::Info, Some(v)) => Answer::ok("application/json", m.info(&v)?.to_json()),
        (RequestKind::Mod, Some(v)) => Answer::ok("text/plain; charset=utf-8", m.go_mod(&v)?),
        (RequestKind::Zip, Some(v)) => Answer::ok("application/zip", m.zip(&v)?),
        _ => Answer::error(404, "not a module request".into()),
    })
}

/// Records, as first seen now (`git`), every version of `module` the mirror's refs name that
/// the gateway had not seen: for a Git upstream, the cooldown's clock starts when a mirror
/// refresh first saw the tag, not when someone first asked for the version. A failure is
/// logged, never the answer's: the cooldown fails closed on its own reading.
fn record_tags(store: &modgate_ledger::Sightings, m: &ModuleSource, module: &str) {
    let versions = match m.tagged_versions() {
        Ok(v) if !v.is_empty() => v,
        Ok(_) => return,
        Err(e) => {
            log::warn!("git origin: the tags of {module} could not be listed for sightings: {e}");
            return;
        }
    };
    let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
    if let Err(e) = store.see(module, &refs, "git", crate::proxy::admit::unix_now()) {
        log::warn!("git origin: sightings of {module}: {e}");
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
}
