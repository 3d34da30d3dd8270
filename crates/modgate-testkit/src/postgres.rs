//! A real, throwaway PostgreSQL 15 server for tests ([`PgServer`]): its own cluster (`initdb`)
//! in a temporary directory, listening on 127.0.0.1 at a port of its own and on a Unix socket
//! in that directory, with trust authentication for the superuser `modgate`. It can be stopped,
//! killed and started again on the same port and data directory (for outage and recovery
//! tests), and is killed and removed when dropped.
//!
//! `initdb` and `postgres` refuse to run as root: as root (this project's sandboxes and CI
//! containers) they run as the `postgres` system user that Debian's package creates, and the
//! directory is handed to that user. Every wait is `pg_ctl -w` with a bound (`-t`), never a
//! sleep. [`require_postgres`] is how a test asks for the server: under `CI` a missing one fails
//! the test (`make postgres` installs it), elsewhere the test says loudly that it skipped.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where Debian's `postgresql-15` package (`make postgres`) puts the server's programs.
pub const DEBIAN_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The superuser `initdb` creates; every connection uses it (trust authentication).
pub const SUPERUSER: &str = "modgate";

/// The system user the server runs as when the tests run as root.
const SERVER_USER: &str = "postgres";

/// Seconds `pg_ctl -w` waits for a start or a stop before giving up.
const PG_CTL_TIMEOUT: &str = "60";

/// Seconds a client program (`createdb`) waits for a connection.
const CONNECT_TIMEOUT: &str = "10";

/// Ports tried before [`PgServer::start`] gives up, when each one is taken by someone else
/// between being picked and the server binding it.
const PORT_ATTEMPTS: usize = 8;

/// Bytes of the server log [`PgServer::log_tail`] returns at most.
const LOG_TAIL: u64 = 8 * 1024;

/// What the server logs when its TCP port is taken.
const PORT_TAKEN: [&str; 2] = [
    "could not create any TCP/IP sockets",
    "Address already in use",
];

/// libpq variables from the developer's environment that would redirect or alter the client
/// programs this module runs; they are removed.
const PG_ENV: [&str; 12] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGPASSFILE",
    "PGDATA",
    "PGCONNECT_TIMEOUT",
];

/// Errors creating, starting or stopping a [`PgServer`].
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("postgres: `{cmd}` failed ({status}): {output}\n--- server log (tail):\n{log}")]
    Command {
        cmd: String,
        status: String,
        output: String,
        log: String,
    },
    #[error(
        "postgres: {attempts} ports were each taken before the server could listen on them\n\
         --- server log (tail):\n{log}"
    )]
    NoPort { attempts: usize, log: String },
    #[error("postgres: cannot run the server as the system user `{user}`: {why}")]
    User { user: &'static str, why: String },
    #[error("postgres: the directory {0:?} has a quote the server's command line cannot carry")]
    Path(PathBuf),
}

/// The server's programs: `$MODGATE_PG_BIN` if set (used as given), else Debian's PostgreSQL 15.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("MODGATE_PG_BIN").map_or_else(|| PathBuf::from(DEBIAN_PG_BIN), PathBuf::from)
}

/// The PostgreSQL 15 bin directory for a test that needs a server, tallied: `None` (after a loud
/// message) when `initdb`, `pg_ctl` or `postgres` is missing there outside CI. Panics in CI.
pub fn require_postgres() -> Option<PathBuf> {
    let bin = pg_bin();
    let found = ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|p| crate::tools::is_executable(&bin.join(p)))
        .then_some(bin);
    crate::tools::require("postgres", found, "make postgres")
}

/// How the server's programs are run: directly, or (as root) as the `postgres` user.
#[derive(Debug, Clone)]
enum RunAs {
    Me,
    Runuser(PathBuf),
    Setpriv(PathBuf),
    Su(PathBuf),
}

impl RunAs {
    /// Directly unless this process is root; then the first of `runuser`, `setpriv`, `su`.
    fn detect() -> Result<RunAs, PgError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(RunAs::Me);
        }
        let find = |name: &str| {
            crate::tools::on_path(name).or_else(|| {
                ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                    .iter()
                    .map(|d| Path::new(d).join(name))
                    .find(|p| crate::tools::is_executable(p))
            })
        };
        if let Some(p) = find("runuser") {
            Ok(RunAs::Runuser(p))
        } else if let Some(p) = find("setpriv") {
            Ok(RunAs::Setpriv(p))
        } else if let Some(p) = find("su") {
            Ok(RunAs::Su(p))
        } else {
            Err(PgError::User {
                user: SERVER_USER,
                why: "running as root and none of runuser, setpriv, su is installed".into(),
            })
        }
    }

    /// `program args` as the server's user.
    fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut cmd = match self {
            RunAs::Me => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
            RunAs::Runuser(runuser) => {
                let mut c = Command::new(runuser);
                c.args(["-u", SERVER_USER, "--"]).arg(program).args(args);
                c
            }
            RunAs::Setpriv(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args([
                    &format!("--reuid={SERVER_USER}"),
                    &format!("--regid={SERVER_USER}"),
                    "--init-groups",
                    "--",
                ])
                .arg(program)
                .args(args);
                c
            }
            RunAs::Su(su) => {
                let line = std::iter::once(program.to_string_lossy().into_owned())
                    .chain(args.iter().cloned())
                    .map(|a| shell_quote(&a))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut c = Command::new(su);
                c.args([SERVER_USER, "-s", "/bin/sh", "-c", &line]);
                c
            }
        };
        scrub(&mut cmd);
        cmd
    }
}

/// `s` quoted for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Removes the developer's libpq settings and detaches stdin.
fn scrub(cmd: &mut Command) {
    for var in PG_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
}

/// A numeric id of the server's user from `id <flag> postgres`.
fn user_id(flag: &str) -> Result<u32, PgError> {
    let out = Command::new("id")
        .args([flag, SERVER_USER])
        .output()
        .map_err(|e| PgError::User {
            user: SERVER_USER,
            why: format!("`id {flag} {SERVER_USER}`: {e}"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse() {
        Ok(id) if out.status.success() => Ok(id),
        _ => Err(PgError::User {
            user: SERVER_USER,
            why: format!(
                "`id {flag} {SERVER_USER}`: {} (the postgresql-15 package creates the user: \
                 `make postgres`)",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// A running throwaway cluster. Dropping it kills the server (`pg_ctl -m immediate`) and
/// removes its directory.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    run_as: RunAs,
    port: u16,
    dir: tempfile::TempDir,
    /// Whether commits reach the disk (`fsync`, full-page writes): off for tests, on for
    /// benchmarks compared with the embedded stores (which sync).
    durable: bool,
}

impl PgServer {
    /// [`PgServer::start`] with `fsync` and full-page writes on, as in production: for
    /// benchmarks that compare it with the embedded SQLite stores (`synchronous=FULL`).
    pub fn start_durable() -> Result<PgServer, PgError> {
        PgServer::start_with(crate::process::free_port, true)
    }

    /// A new cluster from [`pg_bin`], started on a free loopback port (taken below the kernel's
    /// ephemeral range, like [`crate::free_port`], so that neither a concurrent test's client
    /// socket nor a fixture binding port 0 is given it while the server is stopped).
    pub fn start() -> Result<PgServer, PgError> {
        PgServer::start_picking(crate::process::free_port)
    }

    /// A new cluster from [`pg_bin`], started on the first port `pick` returns that the server
    /// can bind: a port taken between being picked and the server listening is replaced by the
    /// next one `pick` returns, at most 8 ports in all.
    pub fn start_picking(pick: impl FnMut() -> u16) -> Result<PgServer, PgError> {
        PgServer::start_with(pick, false)
    }

    fn start_with(mut pick: impl FnMut() -> u16, durable: bool) -> Result<PgServer, PgError> {
        let bin = pg_bin();
        let run_as = RunAs::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("modgate-pg-")
            .tempdir()
            .map_err(|source| PgError::Io {
                what: "creating the temporary directory".into(),
                source,
            })?;
        if dir.path().to_string_lossy().contains('\'') {
            return Err(PgError::Path(dir.path().to_path_buf()));
        }
        if !matches!(run_as, RunAs::Me) {
            let (uid, gid) = (user_id("-u")?, user_id("-g")?);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|source| {
                PgError::Io {
                    what: format!("handing {} to {SERVER_USER}", dir.path().display()),
                    source,
                }
            })?;
        }
        let mut server = PgServer {
            bin,
            run_as,
            port: 0,
            dir,
            durable,
        };
        let data = server.data_dir().to_string_lossy().into_owned();
        server.run_server_program(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        for _ in 0..PORT_ATTEMPTS {
            server.port = pick();
            let logged = server.log_len();
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(PgError::Command { .. }) if server.port_was_taken(logged) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(PgError::NoPort {
            attempts: PORT_ATTEMPTS,
            log: server.log_tail(),
        })
    }

    /// The TCP port on 127.0.0.1 (also the number in the Unix socket's name).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's programs (`psql`, `createdb`, …).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The directory of the Unix socket (and of the data directory and the log).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A key=value libpq connection string for database `db` over TCP as the superuser.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={db}",
            self.port
        )
    }

    /// Creates the database `name` (`createdb` from the same bin directory).
    pub fn create_db(&self, name: &str) -> Result<(), PgError> {
        let mut cmd = Command::new(self.bin.join("createdb"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, "--", name]);
        scrub(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT);
        self.check(&format!("createdb {name}"), cmd.output())
    }

    /// Stops the server cleanly (`pg_ctl -m fast`), waiting until it has exited.
    pub fn stop(&self) -> Result<(), PgError> {
        self.pg_ctl_stop("fast")
    }

    /// Kills the server (`pg_ctl -m immediate`: no checkpoint, crash recovery at the next start),
    /// waiting until it has exited.
    pub fn kill(&self) -> Result<(), PgError> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts the stopped or killed server again on the same port and data directory, waiting
    /// until it accepts connections.
    pub fn start_again(&self) -> Result<(), PgError> {
        self.pg_ctl_start()
    }

    /// The end of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let len = self.log_len();
        match self.read_log(len.saturating_sub(LOG_TAIL), LOG_TAIL) {
            Ok(text) => text,
            Err(e) => format!("(server log unreadable: {e})"),
        }
    }

    /// `pg_ctl start` with this server's port and settings, waiting until it accepts
    /// connections (at most [`PG_CTL_TIMEOUT`] seconds).
    fn pg_ctl_start(&self) -> Result<(), PgError> {
        let sync = if self.durable { "on" } else { "off" };
        let opts = format!(
            "-p {} -k {} -h 127.0.0.1 -c fsync={sync} -c max_connections=200 \
             -c full_page_writes={sync}",
            self.port,
            shell_quote(&self.dir.path().to_string_lossy()),
        );
        let data = self.data_dir().to_string_lossy().into_owned();
        let log = self.log_path().to_string_lossy().into_owned();
        self.run_server_program(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                &log,
                "-w",
                "-t",
                PG_CTL_TIMEOUT,
                "start",
                "-o",
                &opts,
            ],
        )
    }

    /// `pg_ctl stop -m mode`, waiting until the server has exited.
    fn pg_ctl_stop(&self, mode: &str) -> Result<(), PgError> {
        let data = self.data_dir().to_string_lossy().into_owned();
        self.run_server_program(
            "pg_ctl",
            &["-D", &data, "-m", mode, "-w", "-t", PG_CTL_TIMEOUT, "stop"],
        )
    }

    /// Runs one of the server's programs as the server's user, in the server's directory.
    fn run_server_program(&self, program: &str, args: &[&str]) -> Result<(), PgError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut cmd = self.run_as.command(&self.bin.join(program), &args);
        cmd.current_dir(self.dir.path());
        self.check(&format!("{program} {}", args.join(" ")), cmd.output())
    }

    /// `Ok` when the program ran and succeeded, else an error with its output and the log.
    fn check(&self, what: &str, out: std::io::Result<Output>) -> Result<(), PgError> {
        let out = out.map_err(|source| PgError::Io {
            what: format!("running `{what}`"),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(PgError::Command {
            cmd: what.to_string(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_string(),
            log: self.log_tail(),
        })
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

    /// Whether what the server logged after byte `from` says its TCP port was taken.
    fn port_was_taken(&self, from: u64) -> bool {
        self.read_log(from, 1 << 20)
            .is_ok_and(|new| PORT_TAKEN.iter().any(|m| new.contains(m)))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Not running (stopped, killed, never started) is fine: pg_ctl then just fails.
        if self.data_dir().join("postmaster.pid").exists() {
            if let Err(e) = self.kill() {
                eprintln!("PgServer on port {}: {e}", self.port);
            }
        }
    }
}
