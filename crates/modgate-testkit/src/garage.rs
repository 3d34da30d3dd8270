//! A real, throwaway Garage 2.5 S3-compatible server for tests ([`GarageServer`]): one node in a
//! temporary directory (SQLite metadata, replication factor 1), its S3 API, RPC and admin API on
//! 127.0.0.1 at ports of its own, a single-node layout applied, one access key and one bucket the
//! key may read, write and own. It can be stopped, killed and started again on the same ports
//! and directory (layout, key, buckets and objects persist), and is killed and removed when
//! dropped.
//!
//! Everything is set up with the `garage` CLI against the running node. Every wait is a poll of
//! a condition (the process listening on its three ports, per `/proc`; the CLI reaching the
//! node; the admin API's `/health` answering 200; the bucket readable; the S3 port answering
//! HTTP) with a bound, never a fixed sleep; every CLI run has a time limit. A port taken by
//! another process between being picked and bound is replaced (Linux `/proc` tells). [`require_garage`] is how a test asks for the server: under `CI` a missing binary
//! fails the test (`make garage` builds it), elsewhere the test says loudly that it skipped.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The Garage release the tests use (`make garage` installs it).
pub const GARAGE_VERSION: &str = "2.5.0";

/// The S3 region the server is configured with.
pub const REGION: &str = "garage";

/// The bucket every server is created with.
pub const BUCKET: &str = "modgate";

/// The name of the access key every server is created with.
const KEY_NAME: &str = "modgate-test";

/// How long the node may take to answer the CLI, report itself healthy and serve S3 after its
/// process starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one CLI run may take before it is killed.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopped (SIGTERM) server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a killed (SIGKILL) server may take to be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(50);

/// Ports sets tried before [`GarageServer::start`] gives up, when one is taken by someone else
/// between being picked and the server binding it.
const PORT_ATTEMPTS: usize = 4;

/// Bytes of the server log [`GarageServer::log_tail`] returns at most.
const LOG_TAIL: u64 = 8 * 1024;

/// What the server logs when one of its ports is taken.
const PORT_TAKEN: &str = "Address already in use";

/// Errors creating, starting or stopping a [`GarageServer`].
#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    #[error("garage: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("garage: `{cmd}` failed ({status}): {output}\n--- server log (tail):\n{log}")]
    Command {
        cmd: String,
        status: String,
        output: String,
        log: String,
    },
    #[error("garage: `{cmd}` did not finish within {timeout:?}\n--- server log (tail):\n{log}")]
    Timeout {
        cmd: String,
        timeout: Duration,
        log: String,
    },
    #[error(
        "garage: the server was not ready within {timeout:?} ({waiting}; last: {last})\n\
         --- server log (tail):\n{log}"
    )]
    NotReady {
        waiting: &'static str,
        last: String,
        timeout: Duration,
        log: String,
    },
    #[error("garage: the server exited ({status}) while {what}\n--- server log (tail):\n{log}")]
    Exited {
        what: &'static str,
        status: String,
        log: String,
    },
    #[error("garage: the server did not exit within {timeout:?} of {signal}")]
    StillRunning {
        signal: &'static str,
        timeout: Duration,
    },
    #[error(
        "garage: a port in garage.toml was taken by another process\n\
         --- server log (tail):\n{log}"
    )]
    PortTaken { log: String },
    #[error("garage: `{cmd}` printed no node id: {output:?}")]
    NodeId { cmd: String, output: String },
    #[error(
        "garage: {attempts} port sets were each taken before the server could listen on them\n\
         --- server log (tail):\n{log}"
    )]
    NoPort { attempts: usize, log: String },
    #[error("garage: the directory {0:?} is not valid UTF-8 and cannot go into garage.toml")]
    Path(PathBuf),
}

/// The `garage` binary: `$MODGATE_GARAGE_BIN` if set (used as given), else where `make garage`
/// installs it, `$HOME/.cache/modgate/garage-2.5.0/bin/garage`.
pub fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MODGATE_GARAGE_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/modgate")
        .join(format!("garage-{GARAGE_VERSION}"))
        .join("bin/garage")
}

/// The `garage` binary for a test that needs a server, tallied: `None` (after a loud message)
/// when it is missing outside CI. Panics in CI.
pub fn require_garage() -> Option<PathBuf> {
    let bin = garage_bin();
    let found = crate::tools::is_executable(&bin).then_some(bin);
    crate::tools::require("garage", found, "make garage")
}

/// `n` random bytes as lower-case hex.
fn random_hex(n: usize) -> Result<String, GarageError> {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        GarageError::Io {
            what: "drawing random bytes".into(),
            source: std::io::Error::other("the system's random source failed"),
        }
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The ports one server listens on, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
struct Ports {
    s3: u16,
    rpc: u16,
    admin: u16,
}

impl Ports {
    fn all(self) -> [u16; 3] {
        [self.s3, self.rpc, self.admin]
    }

    fn pick(pick: &mut impl FnMut() -> u16) -> Ports {
        Ports {
            s3: pick(),
            rpc: pick(),
            admin: pick(),
        }
    }
}

/// The text of `garage.toml` for a server in `dir` on `ports`.
fn config_text(dir: &str, ports: Ports, rpc_secret: &str) -> String {
    format!(
        r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"

replication_factor = 1

rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
        rpc = ports.rpc,
        s3 = ports.s3,
        admin = ports.admin,
    )
}

/// A running throwaway Garage node. Dropping it kills the server and removes its directory.
#[derive(Debug)]
pub struct GarageServer {
    bin: PathBuf,
    ports: Ports,
    access_key_id: String,
    secret_access_key: String,
    child: Mutex<Option<Child>>,
    /// Where the current run's output starts in the log.
    run_from: AtomicU64,
    dir: tempfile::TempDir,
}

impl GarageServer {
    /// A new node from [`garage_bin`] on free loopback ports (below the kernel's ephemeral
    /// range, like [`crate::free_port`]), set up with a single-node layout, the access key and
    /// the bucket [`BUCKET`], and ready: the CLI reaches it, its admin API reports it healthy,
    /// the bucket is readable and the S3 port answers HTTP.
    pub fn start() -> Result<GarageServer, GarageError> {
        GarageServer::start_picking(crate::process::free_port)
    }

    /// Like [`GarageServer::start`] with ports from `pick` (S3, RPC, admin, in that order): when
    /// one is taken between being picked and the server binding it, three new ones are picked,
    /// at most 4 sets in all.
    pub fn start_picking(mut pick: impl FnMut() -> u16) -> Result<GarageServer, GarageError> {
        let dir = tempfile::Builder::new()
            .prefix("modgate-garage-")
            .tempdir()
            .map_err(|source| GarageError::Io {
                what: "creating the temporary directory".into(),
                source,
            })?;
        for sub in ["meta", "data"] {
            let path = dir.path().join(sub);
            std::fs::create_dir(&path).map_err(|source| GarageError::Io {
                what: format!("creating {}", path.display()),
                source,
            })?;
        }
        let rpc_secret = random_hex(32)?;
        let mut server = GarageServer {
            bin: garage_bin(),
            ports: Ports::pick(&mut pick),
            access_key_id: format!("GK{}", random_hex(12)?),
            secret_access_key: random_hex(32)?,
            child: Mutex::new(None),
            run_from: AtomicU64::new(0),
            dir,
        };
        // The layout, key and bucket are set up only once the node runs on ports of its own:
        // until then its directory holds nothing that depends on them.
        let mut attempt = 1;
        loop {
            server.write_config(&rpc_secret)?;
            match server.boot() {
                Ok(()) => break,
                Err(GarageError::PortTaken { .. }) if attempt < PORT_ATTEMPTS => {
                    server.kill()?;
                    attempt += 1;
                    server.ports = Ports::pick(&mut pick);
                }
                Err(GarageError::PortTaken { log }) => {
                    return Err(GarageError::NoPort {
                        attempts: PORT_ATTEMPTS,
                        log,
                    })
                }
                Err(e) => return Err(e),
            }
        }
        server.set_up()?;
        server.wait_ready()?;
        Ok(server)
    }

    /// The S3 API's base URL, `http://127.0.0.1:<port>` (path-style requests:
    /// `<endpoint>/<bucket>/<key>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// The S3 API's port on 127.0.0.1.
    pub fn s3_port(&self) -> u16 {
        self.ports.s3
    }

    /// The admin API's base URL, `http://127.0.0.1:<port>` (no admin token: only its public
    /// endpoints such as `/health` answer).
    pub fn admin_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.admin)
    }

    /// The S3 region to sign requests for.
    pub fn region(&self) -> &str {
        REGION
    }

    /// The bucket the server was created with; the key may read, write and own it.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The access key id (`GK` and 24 hex digits).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The key's secret access key.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The node's directory (`garage.toml`, `meta/`, `data/`, `garage.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    /// The server log (its stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    /// Creates the bucket `name` and lets the server's key read, write and own it.
    pub fn create_bucket(&self, name: &str) -> Result<(), GarageError> {
        self.cli(&["bucket", "create", name])?;
        self.allow(name)
    }

    /// Stops the server (SIGTERM), waiting until it has exited; killed if it has not within 30
    /// seconds (and then an error). Stopping a server that is not running is a no-op.
    pub fn stop(&self) -> Result<(), GarageError> {
        let mut child = self.child();
        let Some(c) = child.as_mut() else {
            return Ok(());
        };
        let pid = rustix::process::Pid::from_child(c);
        // Already exited (and not yet reaped) is fine: the wait below reaps it.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let exited = wait_exit(c, STOP_TIMEOUT)?.is_some();
        if !exited {
            let _ = c.kill();
            let _ = wait_exit(c, KILL_TIMEOUT);
        }
        *child = None;
        if exited {
            Ok(())
        } else {
            Err(GarageError::StillRunning {
                signal: "SIGTERM",
                timeout: STOP_TIMEOUT,
            })
        }
    }

    /// Kills the server (SIGKILL), waiting until it has exited. Killing a server that is not
    /// running is a no-op.
    pub fn kill(&self) -> Result<(), GarageError> {
        let mut child = self.child();
        let Some(c) = child.as_mut() else {
            return Ok(());
        };
        // Already exited (and not yet reaped) is fine: the wait below reaps it.
        let _ = c.kill();
        let exited = wait_exit(c, KILL_TIMEOUT)?.is_some();
        *child = None;
        if exited {
            Ok(())
        } else {
            Err(GarageError::StillRunning {
                signal: "SIGKILL",
                timeout: KILL_TIMEOUT,
            })
        }
    }

    /// Starts the stopped or killed server again with the same configuration, ports and
    /// directory, waiting until it is ready (as after [`GarageServer::start`]). A server still
    /// running is stopped first.
    pub fn start_again(&self) -> Result<(), GarageError> {
        self.stop()?;
        self.boot()?;
        self.wait_ready()
    }

    /// Whether the server process is running (started and not yet exited).
    pub fn is_running(&self) -> bool {
        self.child()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The end of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let len = self.log_len();
        match self.read_log(len.saturating_sub(LOG_TAIL), LOG_TAIL) {
            Ok(text) => text,
            Err(e) => format!("(server log unreadable: {e})"),
        }
    }

    /// The server process, locked (a panic elsewhere while it was held does not matter).
    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `garage.toml` (owner-only: it holds the RPC secret) for the current ports.
    fn write_config(&self, rpc_secret: &str) -> Result<(), GarageError> {
        let dir = self
            .dir
            .path()
            .to_str()
            .filter(|d| !d.contains(['"', '\\']))
            .ok_or_else(|| GarageError::Path(self.dir.path().to_path_buf()))?;
        let path = self.config_path();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(config_text(dir, self.ports, rpc_secret).as_bytes()));
        written.map_err(|source| GarageError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    }

    /// Starts `garage server`, its output appended to the log.
    fn spawn(&self) -> Result<(), GarageError> {
        let log_path = self.log_path();
        let io = |what: &str| {
            let what = format!("{what} {}", log_path.display());
            move |source| GarageError::Io { what, source }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("opening"))?;
        let log2 = log.try_clone().map_err(io("opening"))?;
        self.run_from.store(self.log_len(), Ordering::Relaxed);
        let mut cmd = self.command(&["server"]);
        cmd.env("RUST_LOG", "garage=info")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = cmd.spawn().map_err(|source| GarageError::Io {
            what: format!("starting {} server", self.bin.display()),
            source,
        })?;
        *self.child() = Some(child);
        Ok(())
    }

    /// `garage -c garage.toml <args>` with a scrubbed environment (no `GARAGE_*` settings from
    /// the developer's) and no stdin.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GARAGE_") {
                cmd.env_remove(name);
            }
        }
        cmd.arg("-c")
            .arg(self.config_path())
            .args(args)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a CLI command to completion (killed after [`CLI_TIMEOUT`]); its stdout when it
    /// succeeded, else an error naming it, with its output and the server log.
    fn cli(&self, args: &[&str]) -> Result<String, GarageError> {
        let what = format!("garage {}", args.join(" "));
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| GarageError::Io {
                what: format!("running `{what}` ({})", self.bin.display()),
                source,
            })?;
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut text);
                }
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let out = drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let finished = wait_exit(&mut child, CLI_TIMEOUT);
        if !matches!(finished, Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match finished? {
            Some(status) if status.success() => Ok(stdout),
            Some(status) => Err(GarageError::Command {
                cmd: what,
                status: status.to_string(),
                output: format!("{stdout}{stderr}").trim().to_string(),
                log: self.log_tail(),
            }),
            None => Err(GarageError::Timeout {
                cmd: what,
                timeout: CLI_TIMEOUT,
                log: self.log_tail(),
            }),
        }
    }

    /// Lets the server's key read, write and own `bucket`.
    fn allow(&self, bucket: &str) -> Result<(), GarageError> {
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            bucket,
            "--key",
            &self.access_key_id,
        ])
        .map(drop)
    }

    /// The single-node layout, the access key and the bucket.
    fn set_up(&self) -> Result<(), GarageError> {
        let line = self.cli(&["node", "id", "-q"])?;
        let id = line
            .trim()
            .split('@')
            .next()
            .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| GarageError::NodeId {
                cmd: "garage node id -q".into(),
                output: line.clone(),
            })?;
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", id])?;
        self.cli(&["layout", "apply", "--version", "1"])?;
        self.cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            KEY_NAME,
            &self.access_key_id,
            &self.secret_access_key,
        ])?;
        self.create_bucket(BUCKET)
    }

    /// Polls `check` until it returns `Ok`, the server exits or logs that a port was taken, or
    /// [`READY_TIMEOUT`] passes.
    fn poll(
        &self,
        waiting: &'static str,
        mut check: impl FnMut() -> Result<(), String>,
    ) -> Result<(), GarageError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_ports()?;
            let last = match check() {
                Ok(()) => return Ok(()),
                Err(last) => last,
            };
            self.check_ports()?;
            if let Some(status) = self.exit_status() {
                return Err(GarageError::Exited {
                    what: waiting,
                    status,
                    log: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(GarageError::NotReady {
                    waiting,
                    last,
                    timeout: READY_TIMEOUT,
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts the server process and waits until it listens on its three ports and `garage
    /// status` reaches it; [`GarageError::PortTaken`] when another socket listens on one of
    /// them or the server logged that one was taken (it then runs on without that API, or
    /// exits).
    fn boot(&self) -> Result<(), GarageError> {
        self.spawn()?;
        self.poll("waiting for the server to listen on its ports", || {
            let pid = self.pid().ok_or("not running")?;
            let listening = listeners(pid).map_err(|e| format!("reading /proc: {e}"))?;
            let missing: Vec<u16> = self
                .ports
                .all()
                .into_iter()
                .filter(|p| !listening.contains(&(*p, true)))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet listening on {missing:?}"))
            }
        })?;
        self.poll("waiting for `garage status` to reach the node", || {
            self.cli(&["status"]).map(drop).map_err(|e| e.to_string())
        })?;
        self.check_ports()
    }

    /// [`GarageError::PortTaken`] if another process's socket listens on one of the server's
    /// ports (the server logs a taken S3 port, but not a taken admin port) or the current run
    /// logged that a port was taken.
    fn check_ports(&self) -> Result<(), GarageError> {
        let foreign = self.pid().is_some_and(|pid| {
            listeners(pid).is_ok_and(|l| self.ports.all().iter().any(|p| l.contains(&(*p, false))))
        });
        if foreign || self.port_was_taken(self.run_from.load(Ordering::Relaxed)) {
            return Err(GarageError::PortTaken {
                log: self.log_tail(),
            });
        }
        Ok(())
    }

    /// Waits until the admin API reports the node healthy, the bucket is readable and the S3
    /// port answers HTTP.
    fn wait_ready(&self) -> Result<(), GarageError> {
        let admin = SocketAddr::from(([127, 0, 0, 1], self.ports.admin));
        self.poll(
            "waiting for the admin API's /health to answer 200",
            || match http_status(admin, "/health") {
                Ok(200) => Ok(()),
                Ok(status) => Err(format!("/health answered {status}")),
                Err(e) => Err(format!("/health: {e}")),
            },
        )?;
        self.poll("waiting for `garage bucket info` to succeed", || {
            self.cli(&["bucket", "info", BUCKET])
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        let s3 = SocketAddr::from(([127, 0, 0, 1], self.ports.s3));
        self.poll("waiting for the S3 API to answer HTTP", || {
            http_status(s3, &format!("/{BUCKET}"))
                .map(drop)
                .map_err(|e| format!("S3 API: {e}"))
        })
    }

    /// The server process's id while it is started (it may have exited since).
    fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// The server's exit status if it has exited (or was never started).
    fn exit_status(&self) -> Option<String> {
        match self.child().as_mut().map(Child::try_wait) {
            None => Some("not running".into()),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(format!("unknown: {e}")),
        }
    }

    /// The server log's length now.
    fn log_len(&self) -> u64 {
        std::fs::metadata(self.log_path()).map_or(0, |m| m.len())
    }

    /// At most `max` bytes of the server log from byte `from`.
    fn read_log(&self, from: u64, max: u64) -> std::io::Result<String> {
        let mut f = std::fs::File::open(self.log_path())?;
        f.seek(SeekFrom::Start(from))?;
        let mut text = Vec::new();
        f.take(max).read_to_end(&mut text)?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Whether what the server logged after byte `from` says one of its ports was taken.
    fn port_was_taken(&self, from: u64) -> bool {
        self.read_log(from, 1 << 20)
            .is_ok_and(|new| new.contains(PORT_TAKEN))
    }
}

impl Drop for GarageServer {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("GarageServer on port {}: {e}", self.ports.s3);
        }
    }
}

/// Waits (at most `timeout`) for `child` to exit: its status when it has.
fn wait_exit(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, GarageError> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => return Ok(None),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => {
                return Err(GarageError::Io {
                    what: format!("waiting for process {}", child.id()),
                    source,
                })
            }
        }
    }
}

/// The ports on 127.0.0.1 with a listening TCP socket, each with whether that socket is one of
/// process `pid`'s (from `/proc/<pid>/fd` and `/proc/net/tcp`).
fn listeners(pid: u32) -> std::io::Result<Vec<(u16, bool)>> {
    let mut ours = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // An fd closed since the listing is not a socket of interest.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            ours.insert(inode.to_string());
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    // `sl local_address rem_address st ... inode`; 0100007F is 127.0.0.1, 0A is LISTEN.
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, port) = f.get(1)?.split_once(':')?;
            if addr != "0100007F" || *f.get(3)? != "0A" {
                return None;
            }
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((port, ours.contains(*f.get(9)?)))
        })
        .collect())
}

/// The status of `GET path` (unauthenticated, `Connection: close`) on `addr`.
fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP status line: {text:?}"),
            )
        })
}
