//! Building an offline Go program against Go's own `golang.org/x/mod` (the copy vendored in the
//! toolchain's source tree, `$GOROOT/src/cmd/vendor/golang.org/x/mod`): the oracles and
//! independent checkers that compare modgate's checksum-database code with Go's. The program's
//! directory holds its `.go` files and a `go.mod` requiring `golang.org/x/mod v0.0.0`; the build
//! copies them into a scratch directory and adds `replace golang.org/x/mod => ../xmod`, a shim
//! module whose packages are links to the vendored copy, and builds with `GOPROXY=off`,
//! `GOFLAGS=-mod=mod`, `GOTOOLCHAIN=local`: nothing is downloaded.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The vendored `golang.org/x/mod` packages the shim links: `sumdb` (with `tlog`, `note`,
/// `dirhash`) needs `module`, which needs `semver` and `internal/lazyregexp`.
pub const XMOD_PACKAGES: [&str; 4] = ["sumdb", "module", "semver", "internal"];

/// Files the vendored copy must have for the programs here to build.
const XMOD_FILES: [&str; 4] = [
    "sumdb/tlog/tlog.go",
    "sumdb/note/note.go",
    "sumdb/client.go",
    "module/module.go",
];

/// Why a Go program could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GoBuildError {
    /// Running `go` itself failed.
    #[error("cannot run {go}: {source}")]
    Run {
        /// The `go` binary.
        go: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `go env GOROOT` or `go build` exited non-zero.
    #[error("`go {what}` failed:\n{stderr}")]
    Failed {
        /// The subcommand.
        what: String,
        /// Its standard error.
        stderr: String,
    },
    /// The toolchain has no vendored x/mod (a Go without its source tree).
    #[error(
        "{0} has no vendored golang.org/x/mod/{{sumdb,module}}: the Go program needs Go's \
         source tree (Debian's golang-1.23-src, which `make go-toolchain` installs)"
    )]
    NoVendoredXmod(PathBuf),
    /// The program's directory has no `go.mod` (or it names no `golang.org/x/mod`).
    #[error("{0}: the program needs a go.mod requiring golang.org/x/mod v0.0.0")]
    NoGoMod(PathBuf),
    /// Preparing the scratch directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GoBuildError {
    let path = path.to_path_buf();
    move |source| GoBuildError::Io { what, path, source }
}

/// `go` in `dir`, sealed offline: no proxy, no checksum database, no toolchain switch, no
/// workspace or user `go.env`, no cgo. Without `GOCACHE` and `HOME` (a bare environment) the
/// build cache is `<scratch>/go-build`: callers share one scratch directory (the target's
/// `CARGO_TARGET_TMPDIR`) so the programs share one build cache.
pub fn offline_go(go: &Path, dir: &Path, scratch: &Path) -> Command {
    let mut cmd = Command::new(go);
    cmd.current_dir(dir)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOSUMDB", "off")
        .env("GOWORK", "off")
        .env("GOENV", "off")
        .env("GOTELEMETRY", "off")
        .env("CGO_ENABLED", "0");
    if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
        cmd.env("GOCACHE", scratch.join("go-build"));
    }
    cmd
}

fn run(mut cmd: Command, go: &Path, what: &str) -> Result<Vec<u8>, GoBuildError> {
    let out = cmd.output().map_err(|source| GoBuildError::Run {
        go: go.to_path_buf(),
        source,
    })?;
    if !out.status.success() {
        return Err(GoBuildError::Failed {
            what: what.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

/// The copy of `golang.org/x/mod` vendored in `go`'s source tree, checked to hold what the
/// programs here use.
pub fn vendored_xmod(go: &Path, scratch: &Path) -> Result<PathBuf, GoBuildError> {
    let mut cmd = offline_go(go, Path::new("/"), scratch);
    cmd.args(["env", "GOROOT"]);
    let goroot = PathBuf::from(String::from_utf8_lossy(&run(cmd, go, "env GOROOT")?).trim());
    let xmod = goroot.join("src/cmd/vendor/golang.org/x/mod");
    if XMOD_FILES.iter().all(|f| xmod.join(f).is_file()) {
        Ok(xmod)
    } else {
        Err(GoBuildError::NoVendoredXmod(goroot))
    }
}

/// Builds the Go program in `source` (its `go.mod` and `.go` files) with `go` into
/// `<scratch>/<name>/<name>` against the vendored x/mod, offline, and returns the binary.
/// `<scratch>/<name>` is made anew; `<scratch>/<name>-xmod` is the shim. `name` must be unique
/// among the programs built in `scratch` (each test binary builds its own once).
pub fn build_against_vendored_xmod(
    go: &Path,
    source: &Path,
    scratch: &Path,
    name: &str,
) -> Result<PathBuf, GoBuildError> {
    let xmod = vendored_xmod(go, scratch)?;
    let main = scratch.join(name);
    let shim = scratch.join(format!("{name}-xmod"));
    for dir in [&main, &shim] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let shim_mod = shim.join("go.mod");
    std::fs::write(&shim_mod, "module golang.org/x/mod\n\ngo 1.18\n")
        .map_err(io("writing", &shim_mod))?;
    for pkg in XMOD_PACKAGES {
        std::os::unix::fs::symlink(xmod.join(pkg), shim.join(pkg))
            .map_err(io("linking", &shim.join(pkg)))?;
    }

    let go_mod = source.join("go.mod");
    let text = std::fs::read_to_string(&go_mod).map_err(io("reading", &go_mod))?;
    if !text.contains("golang.org/x/mod") {
        return Err(GoBuildError::NoGoMod(go_mod));
    }
    let replace = format!("{text}\nreplace golang.org/x/mod => ../{name}-xmod\n");
    std::fs::write(main.join("go.mod"), replace).map_err(io("writing", &main.join("go.mod")))?;
    for entry in std::fs::read_dir(source).map_err(io("reading", source))? {
        let path = entry.map_err(io("reading", source))?.path();
        if path.extension().is_some_and(|e| e == "go") {
            let to = main.join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &to).map_err(io("copying", &path))?;
        }
    }

    let bin = main.join(name);
    let mut cmd = offline_go(go, &main, scratch);
    cmd.args(["build", "-o"]).arg(&bin).arg(".");
    run(cmd, go, &format!("build {}", source.display()))?;
    Ok(bin)
}
