//! `modgate warm`: pre-fetch module versions through a running modgate gateway, so that they
//! land in its cache and integrity ledger before a build needs them.
//!
//! ```text
//! modgate warm --gateway https://modgate.corp [--ca ca.pem] [--cert me.pem --key me.key]
//!              [--token-file F | --netrc-user USER]   (password in $MODGATE_WARM_PASSWORD)
//!              [--concurrency 8] [--go-sum F]... [--go-mod F]... [--list F]... [FILES...]
//! ```
//!
//! What to fetch comes from `go.sum` files (a version listed only with `/go.mod` needs only its
//! `.mod`), the `require` directives of `go.mod` files, and module lists (`module@version` per
//! line); FILES are told apart by name (`go.sum`/`go.work.sum`, `go.mod`, anything else is a
//! module list; a directory stands for its `go.sum`, else its `go.mod`). For every module
//! version `<gateway>/<module>/@v/<version>.info`, `.mod` and (when wanted) `.zip` are requested
//! in that order with Pingora's HTTP client (HTTP/2 over TLS when the gateway offers it), at
//! most `--concurrency` module versions at a time; bodies are read to the end and discarded. A
//! module version stops at its first failure.
//!
//! Progress goes to stderr: one updating line on a terminal, a plain line every few seconds
//! otherwise. At the end a summary is printed, then one line per failed module version with
//! the gateway's one-line reason (`example.com/x@v1.0.0 (.zip): 403 modgate: ...`). Exit
//! status: 0 when everything was fetched, 1 when something failed, 2 when the inputs or options
//! are unusable.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use modgate_protocol::{
    dedupe, escape_path, escape_version, parse_go_mod_requires, parse_go_sum, parse_module_list,
    GoSumError, ModVersion,
};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::tls;
use crate::upstream::{GatewayClient, Upstream, UpstreamUrl};

/// Environment variable holding the password for `--netrc-user`.
pub const PASSWORD_ENV: &str = "MODGATE_WARM_PASSWORD";

/// How much of an error body is kept to find the gateway's reason.
const REASON_BODY_LIMIT: usize = 4096;
/// Longest reason printed for one failure.
const REASON_MAX_CHARS: usize = 400;

/// Command-line arguments of `modgate warm`.
#[derive(clap::Args, Debug)]
pub struct WarmArgs {
    /// The gateway's URL, e.g. https://modgate.corp (with its path prefix, if any).
    #[arg(long)]
    gateway: String,
    /// CA bundle that verifies the gateway (system roots when absent).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate to present (PEM, chain allowed); needs --key and an https gateway.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS server name to send and verify (the URL's host when absent).
    #[arg(long)]
    server_name: Option<String>,
    /// File holding a bearer token (sent as `Authorization: Bearer ...`).
    #[arg(long, conflicts_with = "netrc_user")]
    token_file: Option<PathBuf>,
    /// Basic-auth user (as in a .netrc entry); the password is read from $MODGATE_WARM_PASSWORD.
    #[arg(long)]
    netrc_user: Option<String>,
    /// How many module versions are fetched at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Give up on a request when the gateway sends nothing for this many seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// A go.sum (or go.work.sum) file.
    #[arg(long = "go-sum", value_name = "FILE")]
    go_sum: Vec<PathBuf>,
    /// A go.mod file (its require directives).
    #[arg(long = "go-mod", value_name = "FILE")]
    go_mod: Vec<PathBuf>,
    /// A module list: one module@version per line (module@version/go.mod for the .mod only),
    /// `#` comments.
    #[arg(long = "list", value_name = "FILE")]
    list: Vec<PathBuf>,
    /// Input files, by name: go.sum / go.work.sum, go.mod, anything else is a module list; a
    /// directory means its go.sum (else its go.mod).
    #[arg(value_name = "FILES")]
    files: Vec<PathBuf>,
}

/// How an input file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    GoSum,
    GoMod,
    List,
}

impl InputKind {
    /// Which parser a positional FILE gets, from its name.
    fn detect(path: &Path) -> InputKind {
        match path.file_name().and_then(|n| n.to_str()) {
            Some("go.sum" | "go.work.sum") => InputKind::GoSum,
            Some("go.mod") => InputKind::GoMod,
            _ => InputKind::List,
        }
    }

    fn parse(self, text: &str) -> Result<Vec<ModVersion>, GoSumError> {
        match self {
            InputKind::GoSum => parse_go_sum(text),
            InputKind::GoMod => parse_go_mod_requires(text),
            InputKind::List => parse_module_list(text),
        }
    }
}

/// Every input, in command-line order (named options first, then FILES).
fn inputs(a: &WarmArgs) -> anyhow::Result<Vec<(PathBuf, InputKind)>> {
    let mut out: Vec<(PathBuf, InputKind)> = Vec::new();
    out.extend(a.go_sum.iter().map(|p| (p.clone(), InputKind::GoSum)));
    out.extend(a.go_mod.iter().map(|p| (p.clone(), InputKind::GoMod)));
    out.extend(a.list.iter().map(|p| (p.clone(), InputKind::List)));
    for p in &a.files {
        if p.is_dir() {
            let sum = p.join("go.sum");
            let gomod = p.join("go.mod");
            if sum.is_file() {
                out.push((sum, InputKind::GoSum));
            } else if gomod.is_file() {
                out.push((gomod, InputKind::GoMod));
            } else {
                bail!("{}: directory has neither go.sum nor go.mod", p.display());
            }
        } else {
            out.push((p.clone(), InputKind::detect(p)));
        }
    }
    if out.is_empty() {
        bail!("nothing to warm: give go.sum, go.mod or module-list files (see --help)");
    }
    Ok(out)
}

/// Reads and parses every input; the module versions of all of them, each once.
fn read_inputs(files: &[(PathBuf, InputKind)]) -> anyhow::Result<Vec<ModVersion>> {
    let mut all = Vec::new();
    for (path, kind) in files {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let list = kind
            .parse(&text)
            .map_err(|e| anyhow!("{}:{}: {}", path.display(), e.line, e.kind))?;
        all.extend(list);
    }
    Ok(dedupe(all))
}

/// One of the three files fetched for a module version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Info,
    Mod,
    Zip,
}

impl FileKind {
    fn ext(self) -> &'static str {
        match self {
            FileKind::Info => ".info",
            FileKind::Mod => ".mod",
            FileKind::Zip => ".zip",
        }
    }
}

/// Standard base64 (with padding) for the basic-auth header.
fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The `Authorization` header value, if credentials were given.
fn authorization(a: &WarmArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &a.token_file {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let token = text.trim();
        if token.is_empty() {
            bail!("{}: the token file is empty", path.display());
        }
        if token.contains(|c: char| c.is_whitespace() || c.is_control()) {
            bail!(
                "{}: the token file must hold one token on one line",
                path.display()
            );
        }
        return Ok(Some(format!("Bearer {token}")));
    }
    if let Some(user) = &a.netrc_user {
        if user.is_empty() || user.contains(':') || user.contains(char::is_control) {
            bail!("--netrc-user {user:?}: not a usable user name");
        }
        let password = std::env::var(PASSWORD_ENV)
            .map_err(|_| anyhow!("--netrc-user needs the password in ${PASSWORD_ENV}"))?;
        if password.contains(char::is_control) {
            bail!("${PASSWORD_ENV} holds a control character");
        }
        return Ok(Some(format!(
            "Basic {}",
            base64(format!("{user}:{password}").as_bytes())
        )));
    }
    Ok(None)
}

/// A request that got no complete answer.
struct GetError {
    message: String,
    /// No connection to the gateway could be made.
    connect: bool,
}

/// A Pingora error in one line: its type, the innermost context and the underlying cause,
/// e.g. `ConnectRefused: Fail to connect to 127.0.0.1:9: Connection refused (os error 111)`.
fn brief(e: &pingora::Error) -> String {
    let chain = crate::error_chain::walk(e);
    let parts: Vec<String> = chain.context.into_iter().chain(chain.cause).collect();
    if parts.is_empty() {
        e.reason_str().to_owned()
    } else {
        format!("{}: {}", e.reason_str(), parts.join(": "))
    }
}

/// The outcome of one request that was answered.
struct Answer {
    status: u16,
    bytes: u64,
    /// The start of the body of an error answer.
    error_body: Vec<u8>,
}

/// The gateway, ready to take requests.
struct Client {
    connector: Connector,
    peer: HttpPeer,
    url: UpstreamUrl,
    host_header: String,
    authorization: Option<String>,
    user_agent: String,
    timeout: Duration,
}

impl Client {
    async fn new(a: &WarmArgs) -> anyhow::Result<Client> {
        let url = UpstreamUrl::parse(&a.gateway).map_err(|e| anyhow!("--gateway {e}"))?;
        if a.cert.is_some() && !url.tls {
            bail!(
                "--gateway {}: a client certificate needs an https gateway URL",
                a.gateway
            );
        }
        let authorization = authorization(a)?;
        if authorization.is_some() && !url.tls && !is_loopback(&url.host) {
            eprintln!(
                "modgate warm: warning: sending credentials in the clear to {} (use https)",
                a.gateway
            );
        }
        let timeout = Duration::try_from_secs_f64(a.timeout)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow!("--timeout {}: want a positive number of seconds", a.timeout))?;

        let mut connector_options = None;
        let ca = match &a.ca {
            Some(ca) => {
                // Trust only this bundle (and do not depend on a system store being present).
                let mut o = ConnectorOptions::new(usize::from(a.concurrency).max(1) * 2);
                o.ca_file = Some(ca.to_string_lossy().into_owned());
                connector_options = Some(o);
                Some(tls::load_ca_bundle(ca).map_err(anyhow::Error::msg)?)
            }
            None => None,
        };
        let client_cert = match (&a.cert, &a.key) {
            (Some(cert), Some(key)) => {
                let certs = tls::read_certs(cert).map_err(anyhow::Error::msg)?;
                let k = tls::read_key(key).map_err(anyhow::Error::msg)?;
                Some(
                    tls::client_cert_key(cert.clone(), certs, key.clone(), k)
                        .map_err(anyhow::Error::msg)?,
                )
            }
            _ => None,
        };
        let gateway = Upstream::gateway_client(
            "gateway",
            GatewayClient {
                url: url.clone(),
                ca,
                client_cert,
                sni: a.server_name.clone(),
                read_timeout: timeout,
                max_h2_streams: usize::from(a.concurrency).max(1),
                h2_ping_interval: None,
            },
        );
        let peer = *gateway
            .peer()
            .await
            .map_err(|e| anyhow!("--gateway {}: {e}", a.gateway))?;
        Ok(Client {
            connector: Connector::new(connector_options),
            peer,
            host_header: url.authority(),
            url,
            authorization,
            user_agent: format!("modgate-warm/{}", env!("CARGO_PKG_VERSION")),
            timeout,
        })
    }

    /// The request path of one file of a module version, under the gateway's prefix.
    fn path(&self, mv: &ModVersion, kind: FileKind) -> Result<String, String> {
        let module = escape_path(&mv.module).map_err(|e| e.to_string())?;
        let version = escape_version(&mv.version).map_err(|e| e.to_string())?;
        Ok(format!(
            "{}/{module}/@v/{version}{}",
            self.url.path,
            kind.ext()
        ))
    }

    fn request(&self, path: &str) -> pingora::Result<Box<RequestHeader>> {
        let mut req = RequestHeader::build("GET", path.as_bytes(), None)?;
        req.insert_header("Host", self.host_header.as_str())?;
        req.insert_header("User-Agent", self.user_agent.as_str())?;
        if let Some(auth) = &self.authorization {
            req.insert_header("Authorization", auth.as_str())?;
        }
        Ok(Box::new(req))
    }

    /// GETs `path`, reading the whole body. A request that fails on a pooled connection (the
    /// gateway may have closed it meanwhile) is tried once more on a new one.
    async fn get(&self, path: &str) -> Result<Answer, GetError> {
        let mut first_try = true;
        loop {
            let (mut session, reused) =
                self.connector
                    .get_http_session(&self.peer)
                    .await
                    .map_err(|e| GetError {
                        message: format!("cannot connect to the gateway: {}", brief(&e)),
                        connect: true,
                    })?;
            session.set_read_timeout(Some(self.timeout));
            match self.exchange(&mut session, path).await {
                Ok(answer) => {
                    self.connector
                        .release_http_session(session, &self.peer, Some(Duration::from_secs(60)))
                        .await;
                    return Ok(answer);
                }
                Err((e, answered)) => {
                    session.shutdown().await;
                    if reused && first_try && !answered {
                        first_try = false;
                        continue;
                    }
                    return Err(GetError {
                        message: e,
                        connect: false,
                    });
                }
            }
        }
    }

    /// One request/response on a session. The error says whether a response had started.
    async fn exchange(
        &self,
        session: &mut HttpSession,
        path: &str,
    ) -> Result<Answer, (String, bool)> {
        let req = self.request(path).map_err(|e| (brief(&e), false))?;
        session
            .write_request_header(req)
            .await
            .map_err(|e| (format!("sending the request: {}", brief(&e)), false))?;
        session
            .finish_request_body()
            .await
            .map_err(|e| (format!("sending the request: {}", brief(&e)), false))?;
        session
            .read_response_header()
            .await
            .map_err(|e| (format!("reading the response: {}", brief(&e)), false))?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .ok_or_else(|| ("no response header".to_owned(), false))?;
        let mut bytes = 0u64;
        let mut error_body = Vec::new();
        let keep = !(200..300).contains(&status);
        while let Some(chunk) = session.read_response_body().await.map_err(|e| {
            (
                format!("reading the body ({bytes} bytes in): {}", brief(&e)),
                true,
            )
        })? {
            bytes += chunk.len() as u64;
            if keep && error_body.len() < REASON_BODY_LIMIT {
                let room = REASON_BODY_LIMIT - error_body.len();
                error_body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
        }
        Ok(Answer {
            status,
            bytes,
            error_body,
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The gateway's one-line reason from an error answer: the first non-empty line of its body
/// (control characters escaped, length capped), else the status's canonical reason.
fn reason(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let mut out = String::new();
    match line {
        Some(l) => {
            for (i, c) in l.chars().enumerate() {
                if i == REASON_MAX_CHARS {
                    out.push('…');
                    break;
                }
                if c.is_control() {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
            }
        }
        None => out.push_str(
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no reason given"),
        ),
    }
    format!("{status} {out}")
}

/// What happened to one module version.
struct JobResult {
    index: usize,
    /// Not tried: the gateway could not be reached by earlier module versions.
    skipped: bool,
    /// The file that failed and why.
    failure: Option<(FileKind, String)>,
}

/// Counters shared between the jobs and the progress display.
#[derive(Default)]
struct Counters {
    ok: AtomicUsize,
    failed: AtomicUsize,
    files: AtomicUsize,
    bytes: AtomicU64,
}

/// How many module versions in a row must fail with one identical reason, before anything
/// succeeded, for the failure to count as the gateway's or the credentials' (a reason that
/// names no module: wrong password, certificate refused, gateway overloaded) and not the
/// modules'.
const SYSTEMIC_STREAK: usize = 5;

/// Why the remaining module versions are not tried.
#[derive(Default)]
struct Stop {
    reason: std::sync::OnceLock<String>,
    /// The reason of the failures so far, and how many gave it (only before any success).
    streak: std::sync::Mutex<(String, usize)>,
}

impl Stop {
    /// The gateway could not be connected to before anything was fetched.
    fn unreachable(&self, why: &str) {
        let _ = self
            .reason
            .set(format!("the gateway cannot be reached ({why})"));
    }

    /// A module version failed with `why`; `succeeded`: something was fetched already.
    fn failed(&self, why: &str, succeeded: bool) {
        if succeeded {
            return;
        }
        let Ok(mut streak) = self.streak.lock() else {
            return;
        };
        if streak.0 == why {
            streak.1 += 1;
        } else {
            *streak = (why.to_string(), 1);
        }
        if streak.1 >= SYSTEMIC_STREAK {
            let _ = self.reason.set(format!(
                "the first {SYSTEMIC_STREAK} module versions all failed with the same reason \
                 ({why})"
            ));
        }
    }

    fn stopped(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// Fetches `.info`, `.mod` and (if wanted) `.zip` of one module version, stopping at the first
/// failure.
///
/// A connection that cannot be made before anything was fetched, or the same failure for the
/// first [`SYSTEMIC_STREAK`] module versions, stops the run: the remaining module versions are
/// not tried.
async fn warm_one(
    client: &Client,
    mv: &ModVersion,
    counters: &Counters,
    stop: &Stop,
) -> Option<(FileKind, String)> {
    let mut kinds = vec![FileKind::Info, FileKind::Mod];
    if mv.want_zip {
        kinds.push(FileKind::Zip);
    }
    for kind in kinds {
        let path = match client.path(mv, kind) {
            Ok(p) => p,
            Err(e) => return Some((kind, e)),
        };
        match client.get(&path).await {
            Ok(a) => {
                counters.bytes.fetch_add(a.bytes, Ordering::Relaxed);
                if !(200..300).contains(&a.status) {
                    let why = reason(a.status, &a.error_body);
                    stop.failed(&why, counters.files.load(Ordering::Relaxed) > 0);
                    return Some((kind, why));
                }
                counters.files.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let succeeded = counters.files.load(Ordering::Relaxed) > 0;
                if e.connect && !succeeded {
                    stop.unreachable(&e.message);
                }
                stop.failed(&e.message, succeeded);
                return Some((kind, e.message));
            }
        }
    }
    None
}

/// Human-readable byte count.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The progress display on stderr.
struct Progress {
    total: usize,
    tty: bool,
}

impl Progress {
    const BAR: usize = 20;

    fn render(&self, c: &Counters) -> String {
        let ok = c.ok.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        let done = ok + failed;
        let bytes = human_bytes(c.bytes.load(Ordering::Relaxed));
        if self.tty {
            let filled = (done * Self::BAR)
                .checked_div(self.total)
                .unwrap_or(Self::BAR);
            format!(
                "\r\x1b[K[{}{}] {done}/{} ok={ok} failed={failed} {bytes}",
                "#".repeat(filled),
                "-".repeat(Self::BAR - filled),
                self.total
            )
        } else {
            format!(
                "modgate warm: {done}/{} ok={ok} failed={failed} {bytes}\n",
                self.total
            )
        }
    }

    fn print(&self, c: &Counters) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(self.render(c).as_bytes());
        let _ = err.flush();
    }

    /// Redraws (terminal) or prints a line (otherwise) until aborted.
    async fn run(self: Arc<Self>, counters: Arc<Counters>) {
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(every).await;
            let done =
                counters.ok.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed);
            if self.tty || done != last {
                self.print(&counters);
                last = done;
            }
        }
    }
}

/// Fetches every module version with at most `concurrency` in flight; results by input order.
async fn warm_all(
    client: Arc<Client>,
    list: Arc<Vec<ModVersion>>,
    concurrency: usize,
    counters: Arc<Counters>,
    stop: Arc<Stop>,
) -> Vec<JobResult> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut jobs = tokio::task::JoinSet::new();
    let mut results = Vec::with_capacity(list.len());
    for index in 0..list.len() {
        // Holding the permit before spawning keeps at most `concurrency` tasks alive.
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        if stop.stopped().is_some() {
            results.extend((index..list.len()).map(|index| JobResult {
                index,
                skipped: true,
                failure: None,
            }));
            break;
        }
        let (client, list, counters, stop) =
            (client.clone(), list.clone(), counters.clone(), stop.clone());
        jobs.spawn(async move {
            let _permit = permit;
            let failure = warm_one(&client, &list[index], &counters, &stop).await;
            if failure.is_some() {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            JobResult {
                index,
                skipped: false,
                failure,
            }
        });
        while let Some(done) = jobs.try_join_next() {
            collect(&mut results, done);
        }
    }
    while let Some(done) = jobs.join_next().await {
        collect(&mut results, done);
    }
    results.sort_by_key(|r| r.index);
    results
}

fn collect(results: &mut Vec<JobResult>, done: Result<JobResult, tokio::task::JoinError>) {
    match done {
        Ok(r) => results.push(r),
        // A job that panicked: its module version is reported as not attempted below.
        Err(e) => eprintln!("modgate warm: internal error: {e}"),
    }
}

/// Runs `modgate warm`.
pub fn main(args: WarmArgs) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("modgate warm: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: WarmArgs) -> anyhow::Result<ExitCode> {
    let list = read_inputs(&inputs(&args)?)?;
    let files: usize = list.iter().map(|m| if m.want_zip { 3 } else { 2 }).sum();
    let concurrency = usize::from(args.concurrency);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(concurrency.clamp(1, 4))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = Instant::now();
    let list = Arc::new(list);
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(Stop::default());
    let progress = Arc::new(Progress {
        total: list.len(),
        tty: std::io::stderr().is_terminal(),
    });
    let results = runtime.block_on(async {
        let client = Arc::new(Client::new(&args).await?);
        if list.is_empty() {
            return Ok::<_, anyhow::Error>(Vec::new());
        }
        eprintln!(
            "modgate warm: {} module version(s), {files} file(s), through {} ({} at a time)",
            list.len(),
            args.gateway,
            concurrency
        );
        let ticker = tokio::spawn(progress.clone().run(counters.clone()));
        let results = warm_all(
            client,
            list.clone(),
            concurrency,
            counters.clone(),
            stop.clone(),
        )
        .await;
        ticker.abort();
        progress.print(&counters);
        if progress.tty {
            eprintln!();
        }
        Ok(results)
    })?;
    // Close pooled connections before the summary.
    runtime.shutdown_timeout(Duration::from_secs(1));

    if list.is_empty() {
        eprintln!("modgate warm: nothing to warm (the inputs list no module versions)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut failures: Vec<String> = Vec::new();
    let mut seen = vec![false; list.len()];
    let mut skipped = 0;
    for r in &results {
        seen[r.index] = true;
        if r.skipped {
            skipped += 1;
        } else if let Some((kind, why)) = &r.failure {
            failures.push(format!("{} ({}): {why}", list[r.index], kind.ext()));
        }
    }
    for (i, s) in seen.iter().enumerate() {
        if !s {
            failures.push(format!("{}: not attempted (internal error)", list[i]));
        }
    }
    let ok = list.len() - failures.len() - skipped;
    eprintln!(
        "modgate warm: {ok} of {} module version(s) warmed ({} file(s), {}) in {:.1}s",
        list.len(),
        counters.files.load(Ordering::Relaxed),
        human_bytes(counters.bytes.load(Ordering::Relaxed)),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() && skipped == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("modgate warm: {} failed:", failures.len() + skipped);
    for f in &failures {
        eprintln!("  {f}");
    }
    if skipped > 0 {
        let why = stop.stopped().unwrap_or("the run was stopped");
        eprintln!("  ... and {skipped} more not attempted: {why}");
    }
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("alice:pa55:w?rd", "YWxpY2U6cGE1NTp3P3Jk"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn only_a_repeated_reason_before_any_success_stops_the_run() {
        let stop = Stop::default();
        for _ in 0..SYSTEMIC_STREAK - 1 {
            stop.failed("401 modgate: the credentials sent were not accepted", false);
        }
        assert_eq!(stop.stopped(), None);
        // Another reason restarts the count.
        stop.failed(
            "403 modgate: alice may not read a.org/x@v1.0.0 (.info)",
            false,
        );
        for _ in 0..SYSTEMIC_STREAK - 1 {
            stop.failed("401 modgate: the credentials sent were not accepted", false);
        }
        assert_eq!(stop.stopped(), None);
        stop.failed("401 modgate: the credentials sent were not accepted", false);
        assert!(stop
            .stopped()
            .is_some_and(|r| r.contains("all failed with the same reason (401")));

        // Once something succeeded, failures are the modules' own.
        let stop = Stop::default();
        for _ in 0..SYSTEMIC_STREAK * 2 {
            stop.failed("404 not found", true);
        }
        assert_eq!(stop.stopped(), None);
        // A connection refused before anything was fetched stops at once.
        stop.unreachable("connection refused");
        assert!(stop
            .stopped()
            .is_some_and(|r| r.starts_with("the gateway cannot be reached")));
    }

    #[test]
    fn input_kind_by_name() {
        assert_eq!(InputKind::detect(Path::new("a/b/go.sum")), InputKind::GoSum);
        assert_eq!(
            InputKind::detect(Path::new("go.work.sum")),
            InputKind::GoSum
        );
        assert_eq!(InputKind::detect(Path::new("x/go.mod")), InputKind::GoMod);
        assert_eq!(InputKind::detect(Path::new("modules.txt")), InputKind::List);
        assert_eq!(InputKind::detect(Path::new("go.sum.bak")), InputKind::List);
    }

    #[test]
    fn reasons_are_one_line() {
        assert_eq!(
            reason(403, b"\nmodgate: alice may not read x: denied\nmore\n"),
            "403 modgate: alice may not read x: denied"
        );
        assert_eq!(reason(404, b""), "404 Not Found");
        assert_eq!(reason(502, b"  \r\n"), "502 Bad Gateway");
        assert_eq!(reason(500, b"a\x1bb"), "500 a\\u{1b}b");
        let long = "x".repeat(1000);
        assert_eq!(
            reason(500, long.as_bytes()).chars().count(),
            4 + REASON_MAX_CHARS + 1
        );
    }

    #[test]
    fn progress_lines() {
        let c = Counters::default();
        c.ok.store(40, Ordering::Relaxed);
        c.failed.store(2, Ordering::Relaxed);
        c.bytes.store(3 * 1024 * 1024, Ordering::Relaxed);
        let tty = Progress {
            total: 100,
            tty: true,
        };
        assert_eq!(
            tty.render(&c),
            "\r\x1b[K[########------------] 42/100 ok=40 failed=2 3.0 MiB"
        );
        let plain = Progress {
            total: 100,
            tty: false,
        };
        assert_eq!(
            plain.render(&c),
            "modgate warm: 42/100 ok=40 failed=2 3.0 MiB\n"
        );
        assert_eq!(human_bytes(512), "512 B");
    }
}
