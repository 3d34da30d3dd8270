//! Driving the real `go` command in a sealed environment: its own HOME, GOPATH, module and
//! build caches, `GOTOOLCHAIN=local`, `GOSUMDB=off` unless a test sets it, and a GOPROXY of the
//! test's choosing — so every module the `go` command gets comes through the proxy under test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::tools::go_bin;

/// A sealed Go environment in a temporary directory.
pub struct GoEnv {
    pub dir: tempfile::TempDir,
    pub vars: Vec<(String, String)>,
}

/// The result of one `go` invocation.
pub struct GoRun {
    pub output: Output,
}

impl GoRun {
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).to_string()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).to_string()
    }
    /// Panics with both streams unless the command succeeded.
    pub fn expect_ok(&self, what: &str) -> &Self {
        assert!(
            self.ok(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self
    }
}

impl GoEnv {
    /// A fresh environment that fetches modules only from `goproxy`.
    pub fn new(goproxy: &str) -> GoEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["home", "gopath", "gocache", "work"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let p = |s: &str| d.join(s).to_string_lossy().to_string();
        let vars = vec![
            ("HOME".into(), p("home")),
            ("GOPATH".into(), p("gopath")),
            ("GOMODCACHE".into(), p("gopath/pkg/mod")),
            ("GOCACHE".into(), p("gocache")),
            ("GOTOOLCHAIN".into(), "local".into()),
            ("GOFLAGS".into(), "-mod=mod".into()),
            ("GOPROXY".into(), goproxy.into()),
            ("GOSUMDB".into(), "off".into()),
            ("GONOSUMDB".into(), String::new()),
            ("GOPRIVATE".into(), String::new()),
            ("GOINSECURE".into(), String::new()),
            ("GOENV".into(), "off".into()),
            ("GOTELEMETRY".into(), "off".into()),
            ("CGO_ENABLED".into(), "0".into()),
        ];
        GoEnv { dir, vars }
    }

    /// Sets (or overrides) an environment variable for every later `go` run.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.into(), value.into()));
        self
    }

    /// The working directory where `go.mod` files for the test live.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The module cache.
    pub fn modcache(&self) -> PathBuf {
        self.dir.path().join("gopath/pkg/mod")
    }

    /// Writes a `go.mod` for a main module requiring `requires` (module, version).
    pub fn write_main_module(&self, requires: &[(&str, &str)]) {
        let mut s = String::from("module example.test/main\n\ngo 1.21\n");
        if !requires.is_empty() {
            s.push_str("\nrequire (\n");
            for (m, v) in requires {
                s.push_str(&format!("\t{m} {v}\n"));
            }
            s.push_str(")\n");
        }
        std::fs::write(self.work().join("go.mod"), s).expect("write go.mod");
    }

    /// Runs `go <args>` in the work directory.
    pub fn go(&self, args: &[&str]) -> GoRun {
        self.go_in(&self.work(), args)
    }

    /// Runs `go <args>` in `dir`.
    pub fn go_in(&self, dir: &Path, args: &[&str]) -> GoRun {
        crate::tools::tally("go");
        let mut cmd = Command::new(go_bin());
        cmd.args(args).current_dir(dir).env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        let output = cmd.output().unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (install it: make go-toolchain)",
                go_bin().display()
            )
        });
        GoRun { output }
    }
}
