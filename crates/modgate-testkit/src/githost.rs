//! A real Git host for end-to-end tests: an HTTP/1.1 server on 127.0.0.1 that runs git's own
//! `git http-backend` as a CGI program per request (smart HTTP, protocol v0 and v2) over bare
//! repositories the tests create with the `git` CLI ([`GitHost::create_repo`] → [`WorkTree`]).
//!
//! It is also an HTTP forward proxy for fake host names (`git.corp.example`): requests in
//! absolute form (`GET http://git.corp.example/g/r.git/info/refs?... HTTP/1.1`) are served like
//! origin-form ones, so the real `go` (`GOPROXY=direct`) and `git` reach it through
//! `HTTP_PROXY` / `http_proxy`; a `CONNECT` (an `https://` attempt through `HTTPS_PROXY`) gets
//! an immediate `502`. It answers `?go-get=1` with a `go-import` meta tag for any path under a
//! repository, can require one exact `Authorization` value on every git request, and records
//! every request it receives (method, target, credential, status).
//!
//! One request per connection: every answer says `Connection: close` and CGI output is
//! delimited by the close. Every `git` it runs (the CGI and the [`WorkTree`] helpers) gets a
//! scrubbed environment (its own HOME and global config, no system config), so the developer's
//! configuration never matters.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Largest request head accepted (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (after chunked decoding; gzip stays compressed).
const MAX_BODY: usize = 64 << 20;
/// Largest CGI response head accepted.
const MAX_CGI_HEAD: usize = 64 * 1024;
/// Longest line in a chunked body (a chunk size, its extensions, a trailer).
const MAX_CHUNK_LINE: usize = 4096;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// Stderr kept from one CGI run (echoed to the test output when not empty).
const MAX_CGI_STDERR: usize = 16 * 1024;

/// The global git configuration every `git` run by this module gets.
const GITCONFIG: &str = "[user]\n\tname = GitHost Test\n\temail = githost@example.com\n\
[init]\n\tdefaultBranch = main\n\
[core]\n\tautocrlf = false\n\tsymlinks = true\n\
[commit]\n\tgpgsign = false\n\
[tag]\n\tgpgsign = false\n\
[advice]\n\tdetachedHead = false\n\
[uploadpack]\n\tallowReachableSHA1InWant = true\n\tallowFilter = true\n";

/// Errors starting the host or driving `git`.
#[derive(Debug, thiserror::Error)]
pub enum GitHostError {
    #[error("githost I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("githost: `git {args}` failed ({status}): {stderr}")]
    Git {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("githost: invalid {what} {name:?}")]
    Name { what: &'static str, name: String },
}

/// One request as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    pub method: String,
    /// The request target as sent: origin form (`/g/r.git/info/refs?service=...`) or absolute
    /// form (`http://git.corp.example/g/r.git/...`, through the proxy), or `host:443` for a
    /// `CONNECT`.
    pub target: String,
    /// The `Authorization` header value, if any.
    pub authorization: Option<String>,
    /// The `Git-Protocol` header value, if any (`version=2` for protocol v2).
    pub git_protocol: Option<String>,
    /// The status the host answered with.
    pub status: u16,
    /// Every request header, names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl GitRequest {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::client::find_header(&self.headers, name)
    }
}

#[derive(Default)]
struct State {
    authorization: Option<String>,
    requests: Vec<GitRequest>,
}

/// What every connection task needs.
struct Shared {
    /// GIT_PROJECT_ROOT: the bare repositories, `<root>/<group>/<repo>.git`.
    root: PathBuf,
    /// HOME (and its `.gitconfig`) for every `git` run.
    home: PathBuf,
    /// `$(git --exec-path)/git-http-backend`.
    backend: PathBuf,
    /// Host names served through the proxy, lower-cased, without ports.
    hosts: Vec<String>,
    addr: SocketAddr,
    state: Mutex<State>,
}

impl Shared {
    fn record(&self, r: GitRequest) {
        if let Ok(mut s) = self.state.lock() {
            s.requests.push(r);
        }
    }

    fn required_authorization(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.authorization.clone())
    }

    /// Whether an absolute-form authority (`host[:port]`) is one this host serves.
    fn serves(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        if authority == self.addr.to_string()
            || authority == format!("localhost:{}", self.addr.port())
        {
            return true;
        }
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority.as_str(),
        };
        self.hosts.iter().any(|h| h == host)
    }
}

/// A running Git host; stops accepting connections when dropped (its repositories live as long
/// as it or any [`WorkTree`] made from it).
pub struct GitHost {
    shared: Arc<Shared>,
    dir: Arc<tempfile::TempDir>,
    task: JoinHandle<()>,
}

impl Drop for GitHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHost {
    /// Starts a host on an ephemeral 127.0.0.1 port, serving the bare repositories under a
    /// fresh temporary root, also as a forward proxy for `hosts` (e.g. `["git.corp.example"]`).
    /// Must be called inside a tokio runtime (a multi-threaded one when the test then blocks on
    /// `git` or `go`).
    pub async fn start(hosts: &[&str]) -> Result<GitHost, GitHostError> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("repos");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&home)?;
        std::fs::write(home.join(".gitconfig"), GITCONFIG)?;
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("--exec-path");
        scrub_tokio(&mut cmd, &home);
        let out = cmd.output().await?;
        if !out.status.success() {
            return Err(GitHostError::Git {
                args: "--exec-path".into(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let exec_path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let backend = Path::new(&exec_path).join("git-http-backend");
        if !backend.exists() {
            return Err(GitHostError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} not found", backend.display()),
            )));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            root,
            home,
            backend,
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            addr,
            state: Mutex::new(State::default()),
        });
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => {
                            tokio::spawn(serve(stream, peer, shared.clone()));
                        }
                        // Out of descriptors and the like: do not spin.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
        };
        Ok(GitHost {
            shared,
            dir: Arc::new(dir),
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: repositories are at `<url>/<group>/<repo>.git`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The same address, as the value of `http_proxy` / `HTTP_PROXY` / `HTTPS_PROXY`.
    pub fn proxy_url(&self) -> String {
        self.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The host names served through the proxy.
    pub fn hosts(&self) -> &[String] {
        &self.shared.hosts
    }

    /// GIT_PROJECT_ROOT: the bare repositories, `<root>/<group>/<repo>.git`.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// From now on every git request (everything but `?go-get=1` pages, which real hosts answer
    /// without credentials) must carry exactly this `Authorization` value, else it gets `401`
    /// with `WWW-Authenticate: Basic realm="git"`.
    pub fn require_authorization(&self, value: &str) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.authorization = Some(value.to_string());
        }
    }

    /// Serves without credentials again.
    pub fn allow_anonymous(&self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.authorization = None;
        }
    }

    /// Every request received so far, in the order they were answered.
    pub fn requests(&self) -> Vec<GitRequest> {
        self.shared
            .state
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.requests.clear();
        }
    }

    /// Creates the bare repository `<root>/<name>.git` (`name` like `group/repo`, HEAD on
    /// `main`) and a working repository whose [`WorkTree::push`] goes to it. Blocking (runs
    /// `git`).
    pub fn create_repo(&self, name: &str) -> Result<WorkTree, GitHostError> {
        let name = name.strip_suffix(".git").unwrap_or(name);
        check_relative(name, "repository name")?;
        let bare = self.shared.root.join(format!("{name}.git"));
        let work = self.dir.path().join("work").join(name);
        if bare.exists() || work.exists() {
            return Err(GitHostError::Name {
                what: "repository name (already exists)",
                name: name.to_string(),
            });
        }
        std::fs::create_dir_all(&bare)?;
        std::fs::create_dir_all(&work)?;
        let tree = WorkTree {
            dir: work,
            bare,
            home: self.shared.home.clone(),
            clock: AtomicI64::new(1_600_000_000),
            _keep: self.dir.clone(),
        };
        tree.git_in(&tree.bare, &["init", "-q", "--bare", "-b", "main"])?;
        tree.git(&["init", "-q", "-b", "main"])?;
        Ok(tree)
    }
}

/// A non-bare working repository made by [`GitHost::create_repo`]; [`WorkTree::push`] sends
/// everything to its bare repository by file path. Every method runs `git` (blocking) with the
/// scrubbed environment and the date of the last commit or tag, so hashes are reproducible.
pub struct WorkTree {
    dir: PathBuf,
    bare: PathBuf,
    home: PathBuf,
    /// Unix seconds used as author, committer and tagger date.
    clock: AtomicI64,
    _keep: Arc<tempfile::TempDir>,
}

impl WorkTree {
    /// The working directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The bare repository the host serves.
    pub fn bare_path(&self) -> &Path {
        &self.bare
    }

    /// Writes a file (creating its directories), replacing a file or symlink already there.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> Result<&Self, GitHostError> {
        let p = self.prepare(rel)?;
        std::fs::write(p, contents)?;
        Ok(self)
    }

    /// Makes `rel` a symbolic link to `target` (taken literally, e.g. `../a.go`).
    pub fn symlink(&self, rel: &str, target: &str) -> Result<&Self, GitHostError> {
        let p = self.prepare(rel)?;
        std::os::unix::fs::symlink(target, p)?;
        Ok(self)
    }

    /// Removes a file or symlink (the next commit records the deletion).
    pub fn remove(&self, rel: &str) -> Result<&Self, GitHostError> {
        check_relative(rel, "file path")?;
        std::fs::remove_file(self.dir.join(rel))?;
        Ok(self)
    }

    /// Stages everything and commits (empty commits allowed) with author and committer date
    /// `unix_seconds` (UTC); returns the commit hash.
    pub fn commit(&self, message: &str, unix_seconds: i64) -> Result<String, GitHostError> {
        self.clock.store(unix_seconds, Ordering::Relaxed);
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "--allow-empty", "-m", message])?;
        self.head()
    }

    /// The hash of HEAD.
    pub fn head(&self) -> Result<String, GitHostError> {
        self.git(&["rev-parse", "HEAD"])
    }

    /// A lightweight tag on HEAD (replacing one of that name).
    pub fn tag(&self, name: &str) -> Result<&Self, GitHostError> {
        self.git(&["tag", "-f", "--", name])?;
        Ok(self)
    }

    /// An annotated tag on HEAD (replacing one of that name), tagged at `unix_seconds`.
    pub fn tag_annotated(
        &self,
        name: &str,
        message: &str,
        unix_seconds: i64,
    ) -> Result<&Self, GitHostError> {
        self.clock.store(unix_seconds, Ordering::Relaxed);
        self.git(&["tag", "-f", "-a", "-m", message, "--", name])?;
        Ok(self)
    }

    /// Creates branch `name` at HEAD and switches to it.
    pub fn branch(&self, name: &str) -> Result<&Self, GitHostError> {
        self.git(&["switch", "-q", "-c", name])?;
        Ok(self)
    }

    /// Switches to an existing branch.
    pub fn switch(&self, name: &str) -> Result<&Self, GitHostError> {
        self.git(&["switch", "-q", name])?;
        Ok(self)
    }

    /// Pushes every branch and every tag to the bare repository, forced (so a test can move a
    /// tag or rewrite a branch the host already served).
    pub fn push(&self) -> Result<&Self, GitHostError> {
        let bare = self.bare.to_string_lossy().to_string();
        self.git(&["push", "-q", "--force", "--all", &bare])?;
        self.git(&["push", "-q", "--force", "--tags", &bare])?;
        Ok(self)
    }

    /// Runs any `git` command in the working directory; returns its trimmed stdout.
    pub fn git(&self, args: &[&str]) -> Result<String, GitHostError> {
        self.git_in(&self.dir, args)
    }

    fn git_in(&self, dir: &Path, args: &[&str]) -> Result<String, GitHostError> {
        let date = format!("@{} +0000", self.clock.load(Ordering::Relaxed));
        let mut cmd = std::process::Command::new("git");
        cmd.args(args).current_dir(dir);
        scrub_std(&mut cmd, &self.home);
        cmd.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(GitHostError::Git {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Checks `rel` and makes room for it: parents created, an old file or link removed.
    fn prepare(&self, rel: &str) -> Result<PathBuf, GitHostError> {
        check_relative(rel, "file path")?;
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p)?;
        }
        Ok(p)
    }
}

/// A relative slash-separated path without empty, `.`, `..` or `.git` components.
fn check_relative(s: &str, what: &'static str) -> Result<(), GitHostError> {
    let bad = s.is_empty()
        || s.split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c == ".git" || c.contains('\0'));
    if bad {
        return Err(GitHostError::Name {
            what,
            name: s.to_string(),
        });
    }
    Ok(())
}

/// The environment every `git` gets, as (name, value) pairs after `env_clear`.
fn scrubbed_env(home: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", home.to_string_lossy().into_owned()),
        (
            "XDG_CONFIG_HOME",
            home.join(".config").to_string_lossy().into_owned(),
        ),
        ("GIT_CONFIG_NOSYSTEM", "1".into()),
        (
            "GIT_CONFIG_GLOBAL",
            home.join(".gitconfig").to_string_lossy().into_owned(),
        ),
        ("GIT_TERMINAL_PROMPT", "0".into()),
        ("LC_ALL", "C".into()),
        ("TZ", "UTC".into()),
    ]
}

fn scrub_std(cmd: &mut std::process::Command, home: &Path) {
    cmd.env_clear();
    for (k, v) in scrubbed_env(home) {
        cmd.env(k, v);
    }
}

fn scrub_tokio(cmd: &mut tokio::process::Command, home: &Path) {
    cmd.env_clear();
    for (k, v) in scrubbed_env(home) {
        cmd.env(k, v);
    }
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        crate::client::find_header(&self.headers, name)
    }

    fn recorded(&self, status: u16) -> GitRequest {
        GitRequest {
            method: self.method.clone(),
            target: self.target.clone(),
            authorization: self.header("authorization").map(str::to_string),
            git_protocol: self.header("git-protocol").map(str::to_string),
            status,
            headers: self.headers.clone(),
        }
    }
}

/// Why a request body could not be read.
enum BodyError {
    /// The connection failed or closed early: nothing to answer.
    Io,
    /// Malformed framing: answer 400.
    Bad,
    /// Over [`MAX_BODY`]: answer 413.
    TooLarge,
}

/// A connection with its read-ahead buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads more bytes into the buffer; `false` at end of stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Reads and parses one request head. `Err(status)` to answer and close; `Ok(None)` when
    /// the connection closed first.
    async fn read_head(&mut self) -> Result<Option<Head>, u16> {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(431);
            }
            match self.fill().await {
                Ok(true) => {}
                _ => return Ok(None),
            }
        };
        if end > MAX_HEAD {
            return Err(431);
        }
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&self.buf[..end]) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(400),
        }
        let head = Head {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
        };
        self.buf.drain(..end);
        Ok(Some(head))
    }

    /// Reads exactly `n` body bytes.
    async fn read_exact_body(&mut self, n: usize) -> Result<Vec<u8>, BodyError> {
        while self.buf.len() < n {
            if !self.fill().await.map_err(|_| BodyError::Io)? {
                return Err(BodyError::Io);
            }
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    async fn read_line(&mut self) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..p].to_vec();
                self.buf.drain(..p + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_CHUNK_LINE {
                return Err(BodyError::Bad);
            }
            if !self.fill().await.map_err(|_| BodyError::Io)? {
                return Err(BodyError::Io);
            }
        }
    }

    /// Decodes a chunked body (extensions and trailers ignored).
    async fn read_chunked(&mut self) -> Result<Vec<u8>, BodyError> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .map_err(|_| BodyError::Bad)?
                .trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| BodyError::Bad)?;
            if size == 0 {
                // Trailers up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            let chunk = self.read_exact_body(size).await?;
            body.extend_from_slice(&chunk);
            if !self.read_line().await?.is_empty() {
                return Err(BodyError::Bad);
            }
        }
    }

    /// Reads the body as framed by the head.
    async fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, BodyError> {
        if let Some(te) = head.header("transfer-encoding") {
            if te.to_ascii_lowercase().contains("chunked") {
                return self.read_chunked().await;
            }
            return Err(BodyError::Bad);
        }
        match head.header("content-length") {
            None => Ok(Vec::new()),
            Some(v) => {
                let n: usize = v.trim().parse().map_err(|_| BodyError::Bad)?;
                if n > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
                self.read_exact_body(n).await
            }
        }
    }

    /// Writes a complete small answer and closes.
    async fn answer(
        &mut self,
        status: u16,
        extra: &[(&str, &str)],
        content_type: &str,
        body: &[u8],
    ) {
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
            reason(status),
            body.len()
        );
        for (n, v) in extra {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = self.stream.write_all(head.as_bytes()).await;
        let _ = self.stream.write_all(body).await;
        let _ = self.stream.shutdown().await;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

/// Serves one request on a connection, then closes it.
async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(4096),
    };
    let head = match tokio::time::timeout(HEAD_TIMEOUT, conn.read_head()).await {
        Ok(Ok(Some(h))) => h,
        Ok(Err(status)) => {
            conn.answer(status, &[], "text/plain", b"githost: bad request head\n")
                .await;
            return;
        }
        Ok(Ok(None)) | Err(_) => return,
    };

    if head.method.eq_ignore_ascii_case("CONNECT") {
        shared.record(head.recorded(502));
        conn.answer(
            502,
            &[],
            "text/plain",
            b"githost: no tunnels (plain http only)\n",
        )
        .await;
        return;
    }

    // Origin form, or absolute form for a host served through the proxy.
    let (host, path_query) = if head.target.starts_with('/') {
        let host = head
            .header("host")
            .map(str::to_string)
            .unwrap_or_else(|| shared.addr.to_string());
        (host, head.target.clone())
    } else if let Some(rest) = strip_prefix_ci(&head.target, "http://") {
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, pq) = rest.split_at(split);
        if !shared.serves(authority) {
            shared.record(head.recorded(502));
            let msg = format!("githost: {authority} is not a host served here\n");
            conn.answer(502, &[], "text/plain", msg.as_bytes()).await;
            return;
        }
        let pq = if pq.starts_with('/') {
            pq.to_string()
        } else {
            format!("/{pq}")
        };
        (authority.to_string(), pq)
    } else {
        shared.record(head.recorded(400));
        conn.answer(
            400,
            &[],
            "text/plain",
            b"githost: unsupported request target\n",
        )
        .await;
        return;
    };
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path_query, String::new()),
    };

    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        && conn
            .stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return;
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, conn.read_body(&head)).await {
        Err(_) => return,
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::Io)) => return,
        Ok(Err(e)) => {
            let status = if matches!(e, BodyError::TooLarge) {
                413
            } else {
                400
            };
            shared.record(head.recorded(status));
            conn.answer(status, &[], "text/plain", b"githost: bad request body\n")
                .await;
            return;
        }
    };

    let Some(decoded) = percent_decode(&path) else {
        shared.record(head.recorded(400));
        conn.answer(400, &[], "text/plain", b"githost: bad path encoding\n")
            .await;
        return;
    };

    if head.method == "GET" && query.split('&').any(|kv| kv == "go-get=1") {
        let (status, page) = go_get_page(&shared.root, &host, &decoded);
        shared.record(head.recorded(status));
        conn.answer(status, &[], "text/html; charset=utf-8", page.as_bytes())
            .await;
        return;
    }

    let required = shared.required_authorization();
    if let Some(req) = &required {
        if head.header("authorization") != Some(req.as_str()) {
            shared.record(head.recorded(401));
            conn.answer(
                401,
                &[("www-authenticate", "Basic realm=\"git\"")],
                "text/plain",
                b"githost: credentials required\n",
            )
            .await;
            return;
        }
    }

    run_cgi(
        conn,
        &shared,
        &head,
        Cgi {
            peer,
            host: &host,
            path: &decoded,
            query: &query,
            body,
            authenticated: required.is_some(),
        },
    )
    .await;
}

/// What one CGI run needs besides the head.
struct Cgi<'a> {
    peer: SocketAddr,
    host: &'a str,
    path: &'a str,
    query: &'a str,
    body: Vec<u8>,
    authenticated: bool,
}

/// Runs `git http-backend` for one request and streams its answer back.
async fn run_cgi(mut conn: Conn, shared: &Shared, head: &Head, cgi: Cgi<'_>) {
    let mut cmd = tokio::process::Command::new(&shared.backend);
    scrub_tokio(&mut cmd, &shared.home);
    cmd.env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "modgate-testkit-githost")
        .env("SERVER_NAME", shared.addr.ip().to_string())
        .env("SERVER_PORT", shared.addr.port().to_string())
        .env("REQUEST_METHOD", &head.method)
        .env("SCRIPT_NAME", "")
        .env("PATH_INFO", cgi.path)
        .env("QUERY_STRING", cgi.query)
        .env("REMOTE_ADDR", cgi.peer.ip().to_string())
        .env("HTTP_HOST", cgi.host)
        .env("CONTENT_LENGTH", cgi.body.len().to_string());
    if let Some(ct) = head.header("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(ce) = head.header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", ce);
    }
    if let Some(gp) = head.header("git-protocol") {
        cmd.env("HTTP_GIT_PROTOCOL", gp);
    }
    if cgi.authenticated {
        // As a real host does for an authenticated user (this also enables push over HTTP).
        cmd.env("REMOTE_USER", "git");
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            shared.record(head.recorded(500));
            let msg = format!("githost: cannot run git-http-backend: {e}\n");
            conn.answer(500, &[], "text/plain", msg.as_bytes()).await;
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let body = cgi.body;
        tokio::spawn(async move {
            let _ = stdin.write_all(&body).await;
        });
    }
    let stderr_task = child.stderr.take().map(|mut err| {
        tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let room = MAX_CGI_STDERR.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            kept
        })
    });
    let Some(mut stdout) = child.stdout.take() else {
        shared.record(head.recorded(500));
        conn.answer(500, &[], "text/plain", b"githost: no CGI output\n")
            .await;
        return;
    };

    // The CGI head: lines up to the first empty one (CRLF or LF).
    let mut out = Vec::with_capacity(4096);
    let (head_end, body_start) = loop {
        if let Some(p) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            break (p, p + 4);
        }
        if let Some(p) = out.windows(2).position(|w| w == b"\n\n") {
            break (p, p + 2);
        }
        let mut chunk = [0u8; 8192];
        let n = stdout.read(&mut chunk).await.unwrap_or(0);
        if n == 0 || out.len() > MAX_CGI_HEAD {
            shared.record(head.recorded(502));
            let msg = format!(
                "githost: git-http-backend gave no complete head: {}\n",
                String::from_utf8_lossy(&out[..out.len().min(512)])
            );
            conn.answer(502, &[], "text/plain", msg.as_bytes()).await;
            return;
        }
        out.extend_from_slice(&chunk[..n]);
    };
    let mut status = 200u16;
    let mut status_line = "200 OK".to_string();
    let mut response = String::new();
    for line in String::from_utf8_lossy(&out[..head_end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
            status_line = value.to_string();
        } else if !name.eq_ignore_ascii_case("connection") {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    shared.record(head.recorded(status));
    let head_bytes = format!("HTTP/1.1 {status_line}\r\n{response}connection: close\r\n\r\n");
    let streamed = async {
        conn.stream.write_all(head_bytes.as_bytes()).await?;
        conn.stream.write_all(&out[body_start..]).await?;
        tokio::io::copy(&mut stdout, &mut conn.stream).await?;
        conn.stream.shutdown().await
    }
    .await;
    let _ = child.wait().await;
    if let Some(t) = stderr_task {
        if let Ok(err) = t.await {
            if !err.is_empty() && (streamed.is_err() || status >= 400) {
                eprintln!(
                    "githost: git-http-backend {} {}: {}",
                    head.method,
                    head.target,
                    String::from_utf8_lossy(&err).trim_end()
                );
            }
        }
    }
}

/// The `?go-get=1` page for `path` on `host`: the repository root is the longest prefix of the
/// path for which `<root>/<prefix>.git` is a bare repository.
fn go_get_page(root: &Path, host: &str, path: &str) -> (u16, String) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let html_safe = |s: &str| !s.contains(['"', '<', '>', '&', '\'']);
    if parts.iter().any(|p| *p == "." || *p == "..") || !html_safe(host) || !html_safe(path) {
        return (
            404,
            "<!DOCTYPE html>\n<html><body>not found</body></html>\n".into(),
        );
    }
    for n in (1..=parts.len()).rev() {
        let prefix = parts[..n].join("/");
        let repo = root.join(format!("{prefix}.git"));
        if repo.join("HEAD").is_file() && repo.join("objects").is_dir() {
            let import = format!("{host}/{prefix}");
            let page = format!(
                "<!DOCTYPE html>\n<html>\n<head>\n\
                 <meta name=\"go-import\" content=\"{import} git http://{host}/{prefix}.git\">\n\
                 </head>\n<body>go get {import}</body>\n</html>\n"
            );
            return (200, page);
        }
    }
    (
        404,
        "<!DOCTYPE html>\n<html><body>no repository here</body></html>\n".into(),
    )
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// `%XX`-decodes a path; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked() {
        for ok in ["g/r", "group/sub/repo", "a"] {
            assert!(check_relative(ok, "x").is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "a//b", "a/../b", "./a", "a/.git", "a/"] {
            assert!(check_relative(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%2Fb%20c").as_deref(), Some("/a/b c"));
        assert_eq!(percent_decode("/plain").as_deref(), Some("/plain"));
        assert!(percent_decode("/bad%2").is_none());
        assert!(percent_decode("/bad%zz").is_none());
    }

    #[test]
    fn go_get_finds_the_longest_repository_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        for repo in ["g/r.git", "g/r/sub.git"] {
            let p = dir.path().join(repo);
            std::fs::create_dir_all(p.join("objects")).expect("mkdir");
            std::fs::write(p.join("HEAD"), "ref: refs/heads/main\n").expect("HEAD");
        }
        let (s, page) = go_get_page(dir.path(), "h.example", "/g/r/pkg/x");
        assert_eq!(s, 200);
        assert!(
            page.contains(r#"content="h.example/g/r git http://h.example/g/r.git""#),
            "{page}"
        );
        let (s, page) = go_get_page(dir.path(), "h.example", "/g/r/sub/v2");
        assert_eq!(s, 200);
        assert!(page.contains("h.example/g/r/sub git"), "{page}");
        assert_eq!(go_get_page(dir.path(), "h.example", "/g/other").0, 404);
    }
}
