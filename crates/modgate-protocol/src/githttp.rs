//! git smart HTTP requests (protocol v0 and v2): which repository a request is for and which
//! service and endpoint it asks. Only the endpoints a clone or fetch uses, and the push ones
//! (to refuse them by name), are recognised; anything else is not a git request.

/// A git service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitService {
    /// Clone and fetch.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl GitService {
    /// The service's name (`git-upload-pack`, `git-receive-pack`).
    pub fn as_str(self) -> &'static str {
        match self {
            GitService::UploadPack => "git-upload-pack",
            GitService::ReceivePack => "git-receive-pack",
        }
    }

    fn parse(s: &str) -> Option<GitService> {
        match s {
            "git-upload-pack" => Some(GitService::UploadPack),
            "git-receive-pack" => Some(GitService::ReceivePack),
            _ => None,
        }
    }
}

/// Which endpoint of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitEndpoint {
    /// `GET <repo>/info/refs?service=<service>`: the ref advertisement.
    InfoRefs,
    /// `POST <repo>/<service>`: the negotiation and the pack.
    Rpc,
}

/// A git smart HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// The repository path as requested, without a leading `/` (e.g.
    /// `git.corp.example/group/repo.git`).
    pub repo: String,
    /// The repository's import path: `repo` without a trailing `.git`.
    pub import_path: String,
    /// What the client asks of the repository.
    pub service: GitService,
    /// Which of the service's endpoints.
    pub endpoint: GitEndpoint,
}

impl GitRequest {
    /// The path to ask the Git host for, under the repository's path there.
    pub fn host_path(&self, repo_path: &str) -> String {
        let repo_path = repo_path.trim_end_matches('/');
        match self.endpoint {
            GitEndpoint::InfoRefs => {
                format!("{repo_path}/info/refs?service={}", self.service.as_str())
            }
            GitEndpoint::Rpc => format!("{repo_path}/{}", self.service.as_str()),
        }
    }
}

/// Recognises a git smart HTTP request from its path (without the gateway's prefix) and query.
/// Paths with `..`, empty elements or percent signs are not git requests (the GOPROXY parser
/// then refuses them as it would anyway).
pub fn parse_git_request(path: &str, query: Option<&str>) -> Option<GitRequest> {
    let path = path.strip_prefix('/')?;
    let (repo, endpoint, service) = if let Some(repo) = path.strip_suffix("/info/refs") {
        let service = query?
            .split('&')
            .find_map(|kv| kv.strip_prefix("service="))
            .and_then(GitService::parse)?;
        (repo, GitEndpoint::InfoRefs, service)
    } else {
        let (repo, last) = path.rsplit_once('/')?;
        (repo, GitEndpoint::Rpc, GitService::parse(last)?)
    };
    let clean = !repo.is_empty()
        && !repo.contains('%')
        && repo
            .split('/')
            .all(|e| !e.is_empty() && e != "." && e != "..");
    if !clean {
        return None;
    }
    let import_path = repo.strip_suffix(".git").unwrap_or(repo).to_string();
    // A repository is named by a module path (Go's rules: no `;`, `\`, `@`, `:`, no element
    // ending in a dot, ...): a Git host's server may read anything else its own way.
    crate::escape::check_path(&import_path).ok()?;
    Some(GitRequest {
        repo: repo.to_string(),
        import_path,
        service,
        endpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_and_push_endpoints() {
        let r = parse_git_request(
            "/git.corp.example/group/repo.git/info/refs",
            Some("service=git-upload-pack"),
        )
        .expect("info/refs");
        assert_eq!(r.repo, "git.corp.example/group/repo.git");
        assert_eq!(r.import_path, "git.corp.example/group/repo");
        assert_eq!(
            (r.service, r.endpoint),
            (GitService::UploadPack, GitEndpoint::InfoRefs)
        );
        assert_eq!(
            r.host_path("/group/repo.git"),
            "/group/repo.git/info/refs?service=git-upload-pack"
        );
        let r =
            parse_git_request("/git.corp.example/group/repo/git-upload-pack", None).expect("rpc");
        assert_eq!(r.import_path, "git.corp.example/group/repo");
        assert_eq!(
            r.host_path("/group/repo.git/"),
            "/group/repo.git/git-upload-pack"
        );
        let r = parse_git_request("/h.example/r.git/git-receive-pack", None).expect("push");
        assert_eq!(r.service, GitService::ReceivePack);
        let r = parse_git_request(
            "/h.example/r.git/info/refs",
            Some("x=1&service=git-receive-pack"),
        )
        .expect("push refs");
        assert_eq!(r.service, GitService::ReceivePack);
    }

    #[test]
    fn other_paths_are_not_git_requests() {
        for (path, query) in [
            ("/h.example/r.git/info/refs", None),
            (
                "/h.example/r.git/info/refs",
                Some("service=git-upload-archive"),
            ),
            ("/h.example/r/@v/list", None),
            ("/git-upload-pack", None),
            ("/h.example/../r.git/git-upload-pack", None),
            ("/h.example//r.git/git-upload-pack", None),
            ("/h.example/%2e%2e/git-upload-pack", None),
            ("h.example/r.git/git-upload-pack", None),
            ("/h.example/r.git/objects/info/packs", None),
            ("/h.example/secret;a/x.git/git-upload-pack", None),
            ("/h.example/x\\..\\y/r.git/git-upload-pack", None),
            ("/h.example/x@y:z/r.git/git-upload-pack", None),
            ("/h.example/secret./x.git/git-upload-pack", None),
        ] {
            assert_eq!(parse_git_request(path, query), None, "{path} {query:?}");
        }
    }
}
