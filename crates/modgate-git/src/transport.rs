//! Talking to git: every operation is a `git` subprocess (never libgit2)
//! run with a scrubbed environment, a deadline and a bound on its output,
//! against one bare mirror per repository.
//!
//! Credentials never appear in a process's arguments: a [`Credential`] is
//! handed to git through `GIT_CONFIG_COUNT` / `GIT_CONFIG_KEY_n` /
//! `GIT_CONFIG_VALUE_n` environment variables (readable only by the same
//! user, unlike `/proc/<pid>/cmdline`), scoped with git's URL matching
//! (`http.<scheme>://<host>/.extraHeader`) to the repository's own host, so
//! a redirect elsewhere does not carry it. Credential helpers and prompts
//! are disabled, the system and user git configuration are not read (an
//! explicit [`GitOptions::global_config`] may be given, e.g. for proxies or
//! `insteadOf` rules), and the URL itself may not carry user information.
//!
//! The mirror keeps exactly what the go command may see: `refs/heads/*` and
//! `refs/tags/*` with their history (not `refs/pull/*` and the like, whose
//! commits Go refuses to resolve), and the remote's `HEAD` as `git
//! ls-remote` reports it. A refresh is one `git ls-remote` and, only when
//! the refs changed, one incremental `git fetch --prune`; concurrent
//! refreshes of one mirror are coalesced (see [`Mirror::refresh`]). A
//! revision the refs lack gets one more listing that started after the
//! question, rate-limited per mirror ([`Mirror::refresh_after`]). A
//! repository the host does not have is [`GitError::RepositoryNotFound`],
//! remembered for [`GitOptions::not_found_ttl`], and leaves no mirror;
//! mirrors are made without git's template (no hook samples).

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{excerpt, says_repository_missing, GitError};
use crate::rules::parse_ls_remote;

/// A secret value that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How the gateway authenticates to a Git host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A complete `Authorization` header value, e.g. `Bearer t0ken` or
    /// `Basic dXNlcjpwYXNz`.
    Authorization(Secret),
    /// A client certificate and its key (PEM files; the paths are not
    /// secret, the files are protected by their permissions).
    ClientCertificate {
        /// The certificate (chain) file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
}

/// How git subprocesses are run.
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// The git executable.
    pub git: PathBuf,
    /// A git configuration file read as the "global" one
    /// (`GIT_CONFIG_GLOBAL`); `None` reads none.
    pub global_config: Option<PathBuf>,
    /// Deadline of commands that talk to the Git host.
    pub network_timeout: Duration,
    /// Deadline of commands that only read the mirror.
    pub local_timeout: Duration,
    /// How long "the host has no such repository" is remembered: requests
    /// for an unknown repository within this time are answered without
    /// asking the host again (and leave nothing on disk).
    pub not_found_ttl: Duration,
    /// A revision the mirror lacks makes it ask the host again before the
    /// answer is "unknown revision", but at most once per this interval per
    /// repository (a later miss waits for the next turn instead of being
    /// answered from refs older than its question).
    pub miss_refresh_interval: Duration,
}

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            git: PathBuf::from("git"),
            global_config: None,
            network_timeout: Duration::from_secs(300),
            local_timeout: Duration::from_secs(60),
            not_found_ttl: Duration::from_secs(5),
            miss_refresh_interval: Duration::from_secs(1),
        }
    }
}

/// What a finished git command left behind.
#[derive(Debug)]
pub(crate) struct RunOutput {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
}

/// Where a command's standard output goes.
pub(crate) enum Sink<'a> {
    Memory,
    File(&'a mut std::fs::File),
}

/// One git invocation, described without secrets.
pub(crate) struct GitCommand<'a> {
    pub args: Vec<String>,
    pub network: bool,
    pub limit: u64,
    pub stdin: Option<&'a [u8]>,
    /// Exit codes that are answers, not failures (`merge-base
    /// --is-ancestor` exits 1 for "no").
    pub ok_codes: &'a [i32],
}

impl<'a> GitCommand<'a> {
    pub fn local(args: &[&str], limit: u64) -> GitCommand<'a> {
        GitCommand {
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            network: false,
            limit,
            stdin: None,
            ok_codes: &[0],
        }
    }
}

/// The environment-only configuration a credential becomes:
/// `(key, value)` pairs for `GIT_CONFIG_KEY_n` / `GIT_CONFIG_VALUE_n`.
pub(crate) fn credential_config(
    url: &str,
    credential: Option<&Credential>,
) -> Vec<(String, String)> {
    // Never let git ask anyone or anything else for credentials, and never follow a
    // redirect: git matches `http.<url>.*` once, against the URL it was given, and then sends
    // the header to wherever a redirect moved the repository.
    let mut pairs = vec![
        ("credential.helper".to_owned(), String::new()),
        ("http.followRedirects".to_owned(), "false".to_owned()),
    ];
    let scope = url_scope(url);
    match credential {
        None => {}
        Some(Credential::Authorization(secret)) => pairs.push((
            format!("http.{scope}.extraHeader"),
            format!("Authorization: {}", secret.expose()),
        )),
        Some(Credential::ClientCertificate { cert, key }) => {
            pairs.push((format!("http.{scope}.sslCert"), cert.display().to_string()));
            pairs.push((format!("http.{scope}.sslKey"), key.display().to_string()));
        }
    }
    pairs
}

/// `scheme://host[:port]/` of a URL: the scope of `http.<url>.*` settings.
fn url_scope(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}/")
}

/// Checks a repository URL: an http(s), ssh or file URL without user
/// information (credentials go through [`Credential`]) and without
/// characters git could take for options.
pub(crate) fn check_url(url: &str) -> Result<(), GitError> {
    let bad = |detail: &str| {
        Err(GitError::Config {
            what: format!("repository URL {url}"),
            detail: detail.to_owned(),
        })
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("must be an absolute URL (https://host/path)");
    };
    if !matches!(scheme, "https" | "http" | "ssh" | "file") {
        return bad("scheme must be https, http, ssh or file");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return bad("must not contain user information; configure a credential instead");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must not contain spaces or control characters");
    }
    Ok(())
}

/// A runner of git commands for one repository.
#[derive(Debug)]
pub(crate) struct GitRunner {
    pub options: GitOptions,
    pub url: String,
    pub credential: Mutex<Option<Credential>>,
}

impl GitRunner {
    /// Builds the `Command` (without spawning it): scrubbed environment,
    /// credential in environment variables only.
    pub fn command(&self, dir: &Path, cmd: &GitCommand<'_>) -> Command {
        let mut c = Command::new(&self.options.git);
        c.args(&cmd.args).current_dir(dir).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            c.env("PATH", path);
        }
        c.env("HOME", dir)
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GCM_INTERACTIVE", "never")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "");
        match &self.options.global_config {
            Some(path) => c.env("GIT_CONFIG_GLOBAL", path),
            None => c.env("GIT_CONFIG_GLOBAL", "/dev/null"),
        };
        let credential = self
            .credential
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let pairs = if cmd.network {
            credential_config(&self.url, credential.as_ref())
        } else {
            credential_config(&self.url, None)
        };
        c.env("GIT_CONFIG_COUNT", pairs.len().to_string());
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            c.env(format!("GIT_CONFIG_KEY_{i}"), k);
            c.env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        c
    }

    /// Runs a command to completion within its deadline.
    pub fn run(
        &self,
        dir: &Path,
        cmd: &GitCommand<'_>,
        sink: Sink<'_>,
    ) -> Result<RunOutput, GitError> {
        let name = cmd
            .args
            .iter()
            .find(|a| !a.starts_with('-') && !a.contains('='))
            .cloned();
        let name = name.unwrap_or_else(|| "git".to_owned());
        let timeout = if cmd.network {
            self.options.network_timeout
        } else {
            self.options.local_timeout
        };
        let mut command = self.command(dir, cmd);
        command
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut command = tokio::process::Command::from(command);
        // One thread for the whole command: its input, both outputs, the deadline and the
        // wait are futures on a runtime of its own (the callers are blocking threads).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| GitError::Io {
                what: "cannot run git in",
                path: dir.to_owned(),
                source,
            })?;
        let overflow = Cell::new(false);
        let finished = runtime.block_on(async {
            let mut child = command.spawn()?;
            let group = child.id();
            let stdin = child.stdin.take();
            let feed = async {
                if let (Some(mut pipe), Some(data)) = (stdin, cmd.stdin) {
                    let _ = pipe.write_all(data).await;
                }
            };
            let mut stderr = child.stderr.take();
            let errors = async {
                let mut kept = Vec::new();
                if let Some(pipe) = stderr.as_mut() {
                    let _ = pipe
                        .take(crate::error::STDERR_EXCERPT as u64)
                        .read_to_end(&mut kept)
                        .await;
                    let _ = tokio::io::copy(pipe, &mut tokio::io::sink()).await;
                }
                kept
            };
            let mut stdout = child.stdout.take();
            let output = async {
                let read = read_limited(stdout.as_mut(), cmd.limit, sink).await;
                if matches!(read, Ok(Limited::Overflow)) {
                    overflow.set(true);
                    // No more is read: stop git now rather than at the deadline.
                    kill_group(group);
                }
                read
            };
            let work = async {
                let (_, stderr, stdout) = tokio::join!(feed, errors, output);
                (
                    child.wait().await.ok().and_then(|s| s.code()),
                    stdout,
                    stderr,
                )
            };
            let finished = tokio::time::timeout(timeout, work).await.ok();
            if finished.is_none() {
                kill_group(group);
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            Ok(finished)
        });
        let finished = finished.map_err(|source| GitError::Io {
            what: "cannot run git in",
            path: dir.to_owned(),
            source,
        })?;
        if overflow.get() {
            return Err(GitError::OutputTooLarge {
                command: name,
                limit: cmd.limit,
            });
        }
        let Some((code, stdout, stderr)) = finished else {
            return Err(GitError::Timeout {
                command: name,
                seconds: timeout.as_secs(),
            });
        };
        let stdout = match stdout {
            Ok(Limited::Read(bytes)) => bytes,
            Ok(Limited::Overflow) => Vec::new(),
            Err(source) => {
                return Err(GitError::Io {
                    what: "cannot read the output of git in",
                    path: dir.to_owned(),
                    source,
                })
            }
        };
        if !code.is_some_and(|c| cmd.ok_codes.contains(&c)) {
            return Err(GitError::Git {
                command: name,
                status: code.map_or("killed by a signal".to_owned(), |c| format!("exit {c}")),
                stderr: excerpt(&stderr),
            });
        }
        Ok(RunOutput { code, stdout })
    }
}

/// What [`read_limited`] read.
enum Limited {
    /// All of the output (empty when it went to a file).
    Read(Vec<u8>),
    /// More than the limit: reading stopped there.
    Overflow,
}

/// Reads a command's standard output into memory or `sink`'s file, at most
/// `limit` bytes of it.
async fn read_limited(
    pipe: Option<&mut tokio::process::ChildStdout>,
    limit: u64,
    sink: Sink<'_>,
) -> std::io::Result<Limited> {
    let Some(pipe) = pipe else {
        return Ok(Limited::Read(Vec::new()));
    };
    let mut limited = pipe.take(limit + 1);
    let mut buf = Vec::new();
    let n = match sink {
        Sink::Memory => limited.read_to_end(&mut buf).await? as u64,
        Sink::File(file) => {
            let mut chunk = vec![0u8; 64 << 10];
            let mut total = 0u64;
            loop {
                let n = limited.read(&mut chunk).await?;
                if n == 0 {
                    break total;
                }
                file.write_all(&chunk[..n])?;
                total += n as u64;
            }
        }
    };
    Ok(if n > limit {
        Limited::Overflow
    } else {
        Limited::Read(buf)
    })
}

/// Kills the process group a child leads (it was started with
/// `process_group(0)`, so its id is the group id; git starts helpers such as
/// `git-remote-https`).
fn kill_group(group: Option<u32>) {
    let pid = group.and_then(|g| i32::try_from(g).ok());
    if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// The refs of a repository as the go command sees them (`git ls-remote`:
/// `HEAD`, `refs/heads/*`, `refs/tags/*`, annotated tags peeled).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    /// Full ref name → commit hash.
    pub map: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct RefreshState {
    refs: Option<Arc<Refs>>,
    /// How many times the host was asked (`ls-remote`), for metrics and
    /// the coalescing test.
    host_round_trips: u64,
    refreshed_at: Option<Instant>,
    /// When the `ls-remote` behind `refs` started: refs that answer a
    /// question asked at `t` must come from a listing started after `t`.
    listed_at: Option<Instant>,
    /// When the host was last asked, successfully or not (the rate limit
    /// of refreshes caused by misses).
    attempted_at: Option<Instant>,
    fetched: bool,
    /// A refresh is talking to the host (with the state unlocked); whoever
    /// needs the state to refresh waits on [`Mirror::refreshed`] instead.
    refreshing: bool,
}

/// Repositories the host said it does not have, by URL: when it said so
/// and git's words.
type Missing = Mutex<HashMap<String, (Instant, String)>>;

/// A bare mirror of one repository, shared by every module in it.
#[derive(Debug)]
pub struct Mirror {
    pub(crate) runner: GitRunner,
    pub(crate) dir: PathBuf,
    /// Locked only for short moments, never while git talks to the host.
    state: Mutex<RefreshState>,
    /// Signalled when a refresh ends (`RefreshState::refreshing` falls).
    refreshed: Condvar,
    missing: Arc<Missing>,
}

/// The set of mirrors under one cache directory: one [`Mirror`] per
/// repository URL, so that every request for a repository shares its
/// refresh coalescing.
#[derive(Debug)]
pub struct Mirrors {
    root: PathBuf,
    options: GitOptions,
    repos: Mutex<HashMap<String, Arc<Mirror>>>,
    missing: Arc<Missing>,
}

impl Mirrors {
    /// Mirrors kept under `root`, git run with `options`.
    pub fn new(root: impl Into<PathBuf>, options: GitOptions) -> Mirrors {
        Mirrors {
            root: root.into(),
            options,
            repos: Mutex::new(HashMap::new()),
            missing: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The mirror of `url`, authenticated with `credential` from now on
    /// (a rotated credential replaces the old one).
    ///
    /// A repository the host said it does not have less than
    /// [`GitOptions::not_found_ttl`] ago is answered with
    /// [`GitError::RepositoryNotFound`] at once, and the mirrors of unknown
    /// repositories are forgotten (memory stays bounded by the real
    /// repositories plus those asked for within the time).
    pub fn repo(&self, url: &str, credential: Option<Credential>) -> Result<Arc<Mirror>, GitError> {
        check_url(url)?;
        let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, detail)) = missing.get(url) {
                if at.elapsed() < self.options.not_found_ttl {
                    repos.remove(url);
                    return Err(GitError::RepositoryNotFound {
                        url: url.to_owned(),
                        detail: detail.clone(),
                    });
                }
            }
            if !repos.contains_key(url) {
                repos.retain(|u, _| !missing.contains_key(u));
                let ttl = self.options.not_found_ttl;
                missing.retain(|_, (at, _)| at.elapsed() < ttl);
            }
        }
        if let Some(m) = repos.get(url) {
            *m.runner
                .credential
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = credential;
            return Ok(Arc::clone(m));
        }
        let mirror = Arc::new(Mirror {
            runner: GitRunner {
                options: self.options.clone(),
                url: url.to_owned(),
                credential: Mutex::new(credential),
            },
            dir: self.root.join(mirror_dir_name(url)),
            state: Mutex::new(RefreshState::default()),
            refreshed: Condvar::new(),
            missing: Arc::clone(&self.missing),
        });
        repos.insert(url.to_owned(), Arc::clone(&mirror));
        Ok(mirror)
    }

    /// Asks for `url`'s mirror to be refreshed from the host on its next
    /// use, whatever the age of its refs (`modgate cache purge`): forgets a
    /// remembered "not found" and leaves a marker file in the mirror, which
    /// a gateway process reading the same directory also honours. `Ok(false)`
    /// when there is no mirror of `url` yet (nothing to refresh).
    pub fn request_refresh(&self, url: &str) -> Result<bool, GitError> {
        check_url(url)?;
        self.missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(url);
        let dir = self.root.join(mirror_dir_name(url));
        if !dir.join("HEAD").is_file() {
            return Ok(false);
        }
        let marker = dir.join(REFRESH_MARKER);
        std::fs::write(&marker, b"").map_err(|source| GitError::Io {
            what: "cannot ask for a refresh of the mirror with",
            path: marker,
            source,
        })?;
        Ok(true)
    }
}

/// A file in a mirror that asks for its refs to be listed again on its next
/// use (written by [`Mirrors::request_refresh`], removed by the refresh).
const REFRESH_MARKER: &str = "modgate-refresh-requested";

/// A readable, collision-free directory name for a URL.
fn mirror_dir_name(url: &str) -> String {
    let readable: String = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let digest = Sha256::digest(url.as_bytes());
    let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{readable}-{tag}.git")
}

/// The attributes Go writes before `git archive` (`ensureGitAttributes`).
const GO_ARCHIVE_ATTRIBUTES: &str = "\n* -export-subst -export-ignore\n";

/// The refspecs of the mirror: branches and tags only.
const REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

impl Mirror {
    /// The repository URL.
    pub fn url(&self) -> &str {
        &self.runner.url
    }

    /// The mirror's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many refreshes actually went to the host so far.
    pub fn host_round_trips(&self) -> u64 {
        self.state
            .lock()
            .map(|s| s.host_round_trips)
            .unwrap_or_else(|e| e.into_inner().host_round_trips)
    }

    /// The refs, refreshed from the host if the last refresh is older than
    /// `max_age` (or a refresh was asked for with
    /// [`Mirrors::request_refresh`]).
    ///
    /// Coalescing: at most one `ls-remote`/`fetch` per mirror is in flight
    /// (single flight: it runs with the state unlocked and marked
    /// `refreshing`). Callers that find fresh refs take them at once, even
    /// during a refresh; callers that need a refresh meanwhile wait for the
    /// one in flight and then find a refresh that finished after they asked,
    /// which they take instead of starting another.
    pub fn refresh(&self, max_age: Duration) -> Result<Arc<Refs>, GitError> {
        let asked = Instant::now();
        let mut state = self.lock_state();
        loop {
            if let (Some(refs), Some(at)) = (&state.refs, state.refreshed_at) {
                if (at >= asked || at.elapsed() < max_age)
                    && !self.dir.join(REFRESH_MARKER).exists()
                {
                    return Ok(Arc::clone(refs));
                }
            }
            if !state.refreshing {
                return self.refresh_locked(state);
            }
            state = self.await_refresh(state);
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, RefreshState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (the state unlocked) until no refresh is in flight.
    fn settled(&self) -> MutexGuard<'_, RefreshState> {
        let mut state = self.lock_state();
        while state.refreshing {
            state = self.await_refresh(state);
        }
        state
    }

    /// Waits (the state unlocked) for the refresh in flight to end.
    fn await_refresh<'a>(
        &self,
        state: MutexGuard<'a, RefreshState>,
    ) -> MutexGuard<'a, RefreshState> {
        self.refreshed
            .wait(state)
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The refs as listed by an `ls-remote` that started after `asked` (a
    /// revision was not found in refs listed before the question): at most
    /// one such refresh per `min_interval` per mirror, shared by every miss
    /// waiting for it. Waits at most `min_interval` for its turn; if that
    /// refresh fails, the refs held are returned (the miss stays a miss).
    pub fn refresh_after(
        &self,
        asked: Instant,
        min_interval: Duration,
    ) -> Result<Arc<Refs>, GitError> {
        // Bounded: each pass either answers, refreshes, or sleeps until the
        // turn of a refresh that starts after `asked`.
        for _ in 0..4 {
            let state = self.settled();
            if let (Some(refs), Some(listed)) = (&state.refs, state.listed_at) {
                if listed >= asked {
                    return Ok(Arc::clone(refs));
                }
            }
            if let (Some(refs), Some(tried)) = (&state.refs, state.attempted_at) {
                if tried >= asked {
                    // A refresh after the question failed: nothing newer.
                    return Ok(Arc::clone(refs));
                }
                let turn = tried + min_interval;
                let now = Instant::now();
                if now < turn {
                    drop(state);
                    std::thread::sleep(turn - now);
                    continue;
                }
            }
            return self.refresh_locked(state);
        }
        // Not reached (the second pass always answers or refreshes); never a listing out of turn.
        let state = self.settled();
        match &state.refs {
            Some(refs) => Ok(Arc::clone(refs)),
            None => self.refresh_locked(state),
        }
    }

    /// Lists the host's refs and fetches what changed: the single flight.
    /// Called with the state locked and no refresh in flight; the state is
    /// unlocked (marked `refreshing`) while git talks to the host.
    fn refresh_locked(
        &self,
        mut state: MutexGuard<'_, RefreshState>,
    ) -> Result<Arc<Refs>, GitError> {
        if let Some(e) = self.known_missing() {
            return Err(e);
        }
        self.ensure_init()?;
        let _ = std::fs::remove_file(self.dir.join(REFRESH_MARKER));
        state.host_round_trips += 1;
        let started = Instant::now();
        state.attempted_at = Some(started);
        let (held, fetched) = (state.refs.clone(), state.fetched);
        state.refreshing = true;
        drop(state);
        // Clears `refreshing` and wakes the waiters however the flight ends
        // (a panic included), after the results are stored.
        let flight = Flight(self);
        let mut timing = crate::observe::Timing::start();
        let listed = self.runner.run(
            &self.dir,
            &GitCommand {
                args: vec!["ls-remote".into(), "-q".into(), "origin".into()],
                network: true,
                limit: 64 << 20,
                stdin: None,
                ok_codes: &[0],
            },
            Sink::Memory,
        );
        let listed = match listed {
            Ok(listed) => listed,
            Err(GitError::Git { stderr, .. }) if says_repository_missing(&stderr) => {
                return Err(self.record_missing(&mut flight.land(), stderr));
            }
            Err(e) => return Err(e),
        };
        let refs = Refs {
            map: parse_ls_remote(&String::from_utf8_lossy(&listed.stdout)),
        };
        let changed = held.as_deref() != Some(&refs);
        if changed || !fetched {
            let mut args = vec![
                "fetch".to_owned(),
                "--prune".into(),
                "--no-tags".into(),
                "--quiet".into(),
                "origin".into(),
            ];
            args.extend(REFSPECS.iter().map(|s| (*s).to_owned()));
            self.runner.run(
                &self.dir,
                &GitCommand {
                    args,
                    network: true,
                    limit: 1 << 20,
                    stdin: None,
                    ok_codes: &[0],
                },
                Sink::Memory,
            )?;
            flight.land().fetched = true;
        }
        let refs = Arc::new(refs);
        let mut state = flight.land();
        state.refs = Some(Arc::clone(&refs));
        state.refreshed_at = Some(Instant::now());
        state.listed_at = Some(started);
        drop(state);
        // It exists now: an expired "not found" must not make `Mirrors::repo` drop this mirror.
        self.missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.runner.url);
        timing.succeeded();
        Ok(refs)
    }

    /// The remembered "not found" of this repository, if still fresh.
    fn known_missing(&self) -> Option<GitError> {
        let missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        let (at, detail) = missing.get(&self.runner.url)?;
        (at.elapsed() < self.runner.options.not_found_ttl).then(|| GitError::RepositoryNotFound {
            url: self.runner.url.clone(),
            detail: detail.clone(),
        })
    }

    /// The host has no such repository: removes the mirror if it holds
    /// nothing (a repository that vanished keeps what was fetched), then
    /// remembers the answer for [`GitOptions::not_found_ttl`].
    fn record_missing(&self, state: &mut RefreshState, stderr: String) -> GitError {
        if state.refs.is_none() && mirror_is_empty(&self.dir) {
            let _ = std::fs::remove_dir_all(&self.dir);
            state.fetched = false;
        }
        if !self.runner.options.not_found_ttl.is_zero() {
            self.missing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.runner.url.clone(), (Instant::now(), stderr.clone()));
        }
        GitError::RepositoryNotFound {
            url: self.runner.url.clone(),
            detail: stderr,
        }
    }

    /// Creates the bare repository on first use (atomically: built in a
    /// temporary directory and renamed into place).
    fn ensure_init(&self) -> Result<(), GitError> {
        if self.dir.join("HEAD").is_file() {
            return ensure_attributes(&self.dir);
        }
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| GitError::Io {
            what: "cannot create the mirror directory",
            path: parent.to_owned(),
            source,
        })?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            self.dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("mirror"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|source| GitError::Io {
            what: "cannot create the mirror directory",
            path: tmp.clone(),
            source,
        })?;
        let url = self.runner.url.clone();
        let steps: [Vec<&str>; 2] = [
            // No template: no hook samples, no description (a mirror is
            // only objects, refs and config).
            vec!["init", "--bare", "--quiet", "--template="],
            vec!["remote", "add", "origin", "--", &url],
        ];
        for args in steps {
            self.runner
                .run(&tmp, &GitCommand::local(&args, 1 << 16), Sink::Memory)?;
        }
        ensure_attributes(&tmp)?;
        match std::fs::rename(&tmp, &self.dir) {
            Ok(()) => Ok(()),
            Err(_) if self.dir.join("HEAD").is_file() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(source) => Err(GitError::Io {
                what: "cannot move the new mirror into place at",
                path: self.dir.clone(),
                source,
            }),
        }
    }

    /// Runs a read-only command in the mirror.
    pub(crate) fn local(&self, cmd: &GitCommand<'_>) -> Result<RunOutput, GitError> {
        self.runner.run(&self.dir, cmd, Sink::Memory)
    }

    /// Runs a read-only command in the mirror with its output in `file`.
    pub(crate) fn local_to_file(
        &self,
        cmd: &GitCommand<'_>,
        file: &mut std::fs::File,
    ) -> Result<RunOutput, GitError> {
        self.runner.run(&self.dir, cmd, Sink::File(file))
    }
}

/// The refresh in flight of a mirror: when dropped, the refresh is over
/// (`refreshing` cleared, waiters woken).
struct Flight<'a>(&'a Mirror);

impl Flight<'_> {
    /// The state, locked, to store what the flight found (it stays marked
    /// `refreshing` until the flight is dropped).
    fn land(&self) -> MutexGuard<'_, RefreshState> {
        self.0.lock_state()
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.0.lock_state().refreshing = false;
        self.0.refreshed.notify_all();
    }
}

/// Whether a mirror holds no refs and no objects (it was made for a
/// repository that was never fetched).
fn mirror_is_empty(dir: &Path) -> bool {
    let empty = |p: PathBuf| {
        std::fs::read_dir(p)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    };
    !dir.join("packed-refs").exists()
        && empty(dir.join("refs").join("heads"))
        && empty(dir.join("refs").join("tags"))
        && empty(dir.join("objects").join("pack"))
}

/// Appends Go's archive attributes to `info/attributes` unless present.
fn ensure_attributes(dir: &Path) -> Result<(), GitError> {
    let info = dir.join("info");
    let path = info.join("attributes");
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| GitError::Io { what, path, source }
    };
    std::fs::create_dir_all(&info).map_err(io("cannot create", &info))?;
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    if !existing.ends_with(GO_ARCHIVE_ATTRIBUTES) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        f.write_all(GO_ARCHIVE_ATTRIBUTES.as_bytes())
            .map_err(io("cannot write", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(credential: Credential) -> GitRunner {
        GitRunner {
            options: GitOptions::default(),
            url: "https://git.corp.example/g/r.git".into(),
            credential: Mutex::new(Some(credential)),
        }
    }

    #[test]
    fn secrets_travel_in_the_environment_only() {
        let secret = "Bearer s3cr3t-t0ken-value";
        let r = runner(Credential::Authorization(Secret::new(secret)));
        let cmd = GitCommand {
            args: vec!["ls-remote".into(), "-q".into(), "origin".into()],
            network: true,
            limit: 10,
            stdin: None,
            ok_codes: &[0],
        };
        let command = r.command(Path::new("/"), &cmd);
        let argv: Vec<String> = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(argv.iter().all(|a| !a.contains("s3cr3t")), "{argv:?}");
        let envs: HashMap<String, String> = command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into(), v?.to_string_lossy().into())))
            .collect();
        let key = envs
            .iter()
            .find(|(_, v)| v.contains("s3cr3t"))
            .map(|(k, _)| k.clone());
        let key = key.expect("the secret is in some GIT_CONFIG_VALUE_n");
        assert!(key.starts_with("GIT_CONFIG_VALUE_"));
        let n = &key["GIT_CONFIG_VALUE_".len()..];
        assert_eq!(
            envs[&format!("GIT_CONFIG_KEY_{n}")],
            "http.https://git.corp.example/.extraHeader"
        );
        assert_eq!(envs[&key], format!("Authorization: {secret}"));
        // Local commands do not even get it.
        let local = r.command(Path::new("/"), &GitCommand::local(&["log"], 10));
        assert!(local
            .get_envs()
            .all(|(_, v)| !v.is_some_and(|v| v.to_string_lossy().contains("s3cr3t"))));
        assert_eq!(format!("{:?}", Secret::new(secret)), "Secret(..)");
    }

    #[test]
    fn client_certificates_scoped_to_the_host() {
        let pairs = credential_config(
            "https://git.corp.example:8443/g/r",
            Some(&Credential::ClientCertificate {
                cert: "/etc/c.pem".into(),
                key: "/etc/k.pem".into(),
            }),
        );
        assert!(pairs.contains(&(
            "http.https://git.corp.example:8443/.sslKey".into(),
            "/etc/k.pem".into()
        )));
        assert_eq!(pairs[0], ("credential.helper".into(), String::new()));
    }

    #[test]
    fn urls_with_credentials_are_refused() {
        assert!(check_url("https://user:pw@h.example/r").is_err());
        assert!(check_url("h.example/r").is_err());
        assert!(check_url("ext::sh -c x").is_err());
        assert!(check_url("https://h.example/g/r.git").is_ok());
    }

    #[test]
    fn mirror_names_are_distinct() {
        assert_ne!(
            mirror_dir_name("https://h.example/a/b"),
            mirror_dir_name("https://h.example/a_b")
        );
    }

    #[test]
    fn deadlines_kill_the_process() {
        let r = GitRunner {
            options: GitOptions {
                git: "sleep".into(),
                local_timeout: Duration::from_millis(200),
                ..GitOptions::default()
            },
            url: "https://h.example/r".into(),
            credential: Mutex::new(None),
        };
        let started = Instant::now();
        let err = r
            .run(Path::new("/"), &GitCommand::local(&["5"], 10), Sink::Memory)
            .unwrap_err();
        assert!(matches!(err, GitError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn output_is_bounded() {
        let r = GitRunner {
            options: GitOptions {
                git: "yes".into(),
                ..GitOptions::default()
            },
            url: "https://h.example/r".into(),
            credential: Mutex::new(None),
        };
        let err = r
            .run(Path::new("/"), &GitCommand::local(&[], 1000), Sink::Memory)
            .unwrap_err();
        assert!(matches!(err, GitError::OutputTooLarge { .. }), "{err}");
        let mut file = tempfile::tempfile().expect("tempfile");
        let err = r
            .run(
                Path::new("/"),
                &GitCommand::local(&[], 1000),
                Sink::File(&mut file),
            )
            .unwrap_err();
        assert!(matches!(err, GitError::OutputTooLarge { .. }), "{err}");
    }

    #[test]
    fn input_is_fed_and_output_read_back() {
        let r = GitRunner {
            options: GitOptions {
                git: "cat".into(),
                ..GitOptions::default()
            },
            url: "https://h.example/r".into(),
            credential: Mutex::new(None),
        };
        let mut cmd = GitCommand::local(&[], 1000);
        cmd.stdin = Some(b"deadbeef refs/heads/main\n");
        let out = r.run(Path::new("/"), &cmd, Sink::Memory).expect("cat");
        assert_eq!(out.code, Some(0));
        assert_eq!(out.stdout, b"deadbeef refs/heads/main\n");
        let mut file = tempfile::tempfile().expect("tempfile");
        let out = r
            .run(Path::new("/"), &cmd, Sink::File(&mut file))
            .expect("cat into a file");
        assert!(out.stdout.is_empty());
        let mut written = String::new();
        std::io::Seek::rewind(&mut file).expect("rewind");
        std::io::Read::read_to_string(&mut file, &mut written).expect("read back");
        assert_eq!(written, "deadbeef refs/heads/main\n");
        // An exit code outside ok_codes is a failure, with git's words.
        let r = GitRunner {
            options: GitOptions {
                git: "sh".into(),
                ..GitOptions::default()
            },
            ..r
        };
        let err = r
            .run(
                Path::new("/"),
                &GitCommand::local(&["-c", "echo nope >&2; exit 3"], 1000),
                Sink::Memory,
            )
            .unwrap_err();
        assert!(
            matches!(&err, GitError::Git { status, stderr, .. } if status == "exit 3" && stderr.contains("nope")),
            "{err}"
        );
    }
}
