//! Starting the real `modgate` binary for a test: a temporary directory with the test's
//! `gateway.yaml` (ephemeral ports, per-instance pid file and upgrade socket), the process
//! started, readiness awaited on `/healthz`, its log kept for failure messages, and the
//! process killed when the handle is dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of the `modgate` binary under test: `$MODGATE_BIN`, else `target/<profile>/modgate`
/// next to the running test executable.
pub fn modgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MODGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>/modgate
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join("modgate")
}

/// Runs `modgate <args>` to completion.
pub fn modgate(args: &[&str]) -> Output {
    Command::new(modgate_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (build it first: cargo build -p modgate)",
                modgate_bin().display()
            )
        })
}

/// Runs `modgate <args> -c <config>` to completion: its exit code (-1 if a signal ended it),
/// and its stdout and stderr as text.
pub fn modgate_with(config: &Path, args: &[&str]) -> (i32, String, String) {
    let config = config.to_string_lossy();
    let mut all = args.to_vec();
    all.extend(["-c", config.as_ref()]);
    let out = modgate(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free TCP port on 127.0.0.1 (bound and released; the test then binds it).
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by default),
/// where fixtures and clients bind port 0: a port handed out here and then released would
/// otherwise be the next one the kernel gives such a socket of a concurrent test, and the
/// gateway started on it could not listen (while its readiness probe reached that socket).
pub fn free_port() -> u16 {
    // Ports this process already handed out are never given again.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    use std::hash::{BuildHasher, Hasher};
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0u32..4096 {
        let mut h = seed.build_hasher();
        h.write_u32(attempt);
        h.write_u32(std::process::id());
        let port = (LOW + (h.finish() % u64::from(SPAN)) as u32) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
    panic!(
        "no free port on 127.0.0.1 in {LOW}..{} after 4096 tries",
        LOW + SPAN
    );
}

/// A free `127.0.0.1:<port>` address for a listener in a test's gateway.yaml.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Writes a development PKI with `modgate certs` into `dir`.
pub fn make_certs(dir: &Path, ca_name: &str, client_name: &str) {
    let dir_s = dir.to_string_lossy().to_string();
    let out = modgate(&[
        "certs",
        "--out",
        &dir_s,
        "--ca-name",
        ca_name,
        "--client-name",
        client_name,
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
    ]);
    assert!(
        out.status.success(),
        "modgate certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test's gateway.yaml as written: `@DIR@` replaced by the instance directory, and (unless
/// the test sets them) a pid file and upgrade socket inside it and short shutdown times.
fn render_config(dir: &Path, config: &str) -> String {
    let d = dir.to_string_lossy().to_string();
    let mut text = config.replace("@DIR@", &d);
    if !text.contains("pid_file") {
        let mut server_block =
            format!("server:\n  pid_file: {d}/modgate.pid\n  upgrade_sock: {d}/upgrade.sock\n");
        if !text.contains("grace_period") {
            server_block.push_str("  grace_period: 1s\n  shutdown_timeout: 2s\n");
        }
        text = if text.contains("server:\n") {
            text.replace("server:\n", &server_block)
        } else {
            format!("{server_block}{text}")
        };
    }
    text
}

/// A running modgate process.
pub struct Gateway {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_path: PathBuf,
}

impl Gateway {
    /// Writes `config` (a complete gateway.yaml; `@DIR@` is replaced by the instance directory)
    /// and starts modgate; waits until `ready_addr` answers `/healthz` over plain HTTP or TLS.
    pub fn start(config: &str, ready_addr: SocketAddr) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, config, ready_addr)
    }

    /// Like [`Gateway::start`] in a given directory (which may already hold certificates).
    pub fn start_in(dir: tempfile::TempDir, config: &str, ready_addr: SocketAddr) -> Gateway {
        Self::start_in_env(dir, config, ready_addr, &[("RUST_LOG", "info")], None)
    }

    /// Like [`Gateway::start`] with at most `nofile` open files (soft and hard limit, set with
    /// util-linux `prlimit` before the binary starts).
    pub fn start_with_nofile(config: &str, ready_addr: SocketAddr, nofile: u64) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in_env(
            dir,
            config,
            ready_addr,
            &[("RUST_LOG", "info")],
            Some(nofile),
        )
    }

    /// Like [`Gateway::start`] with these environment variables (`RUST_LOG` is `info` unless
    /// given; an empty `RUST_LOG` lets the configuration's `log.level` decide).
    pub fn start_env(config: &str, ready_addr: SocketAddr, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut all = vec![("RUST_LOG", "info")];
        all.extend_from_slice(env);
        Self::start_in_env(dir, config, ready_addr, &all, None)
    }

    fn start_in_env(
        dir: tempfile::TempDir,
        config: &str,
        ready_addr: SocketAddr,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Gateway {
        let text = render_config(dir.path(), config);
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, &text).expect("write gateway.yaml");
        let log_path = dir.path().join("modgate.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let log2 = log.try_clone().expect("log file");
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(modgate_bin());
                c
            }
            None => Command::new(modgate_bin()),
        };
        let child = command
            .args(["run", "-c"])
            .arg(&config_path)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", modgate_bin().display()));
        let mut gw = Gateway {
            child: Some(child),
            dir,
            config_path,
            log_path,
        };
        gw.wait_ready(ready_addr);
        gw
    }

    fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("modgate exited early ({status}):\n{}", self.log());
                }
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("modgate did not start listening on {addr}:\n{}", self.log());
    }

    /// Everything modgate has logged so far.
    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let upgraded = self.dir.path().join("modgate-upgrade.log");
        if let Ok(more) = std::fs::read_to_string(upgraded) {
            text.push_str(&more);
        }
        text
    }

    /// Waits (at most `timeout`) until the log contains `needle`; panics with the log if it
    /// never does. Returns the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed {needle:?} within {timeout:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the instance's gateway.yaml (atomically, as a deploy tool would) with `config`,
    /// rendered like the one it started with. Nothing is reloaded until asked.
    pub fn write_config(&self, config: &str) {
        let text = render_config(self.dir.path(), config);
        let tmp = self.dir.path().join("gateway.yaml.tmp");
        std::fs::write(&tmp, text).expect("write gateway.yaml");
        std::fs::rename(&tmp, &self.config_path).expect("rename gateway.yaml");
    }

    /// Runs `modgate reload -c <this instance's gateway.yaml>`.
    pub fn reload(&self) -> Output {
        let path = self.config_path.to_string_lossy().to_string();
        modgate(&["reload", "-c", &path])
    }

    /// A graceful upgrade in this instance's directory: writes `config`, starts
    /// `modgate run --upgrade` (logging to `modgate-upgrade.log`, which [`Gateway::log`] reads
    /// too), waits until it listens on the upgrade socket, sends the running process SIGQUIT,
    /// waits for that process to exit and for `ready_addr` to answer. Returns the old process's
    /// exit code. Needs the upgrade socket the test kit chose (`@DIR@/upgrade.sock`).
    pub fn upgrade(&mut self, config: &str, ready_addr: SocketAddr) -> Option<i32> {
        self.write_config(config);
        let sock = self.dir.path().join("upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        let log = std::fs::File::create(self.dir.path().join("modgate-upgrade.log"))
            .expect("upgrade log file");
        let log2 = log.try_clone().expect("log file");
        let new = Command::new(modgate_bin())
            .args(["run", "--upgrade", "-c"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", modgate_bin().display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "the new process never listened on {}:\n{}",
                sock.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal("QUIT");
        let code = self.wait_exit(Duration::from_secs(30));
        self.child = Some(new);
        self.wait_ready(ready_addr);
        code
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status();
        }
    }

    /// Waits for the process to exit and returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(s)) = c.try_wait() {
                    self.child = None;
                    return s.code().or(Some(-1));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
