//! The real tools the tests drive (`go`, `git`, …): where each one is, and the rule that a test
//! needing one never skips silently. Under `CI` (any value but `false`/`0`) a missing tool fails
//! the test with the command that installs it; elsewhere the test says loudly that it skipped.
//! Every test that ran a real tool is tallied in `$MODGATE_TALLY_DIR/<tool>` (one line per test
//! binary and test), so `make test` can print how many tests ran the real `go`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where `make go-toolchain` installs Go 1.23 (Debian bookworm-backports).
pub const DEBIAN_GO: &str = "/usr/lib/go-1.23/bin/go";

/// Whether this run is CI's: a missing tool is then a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `name` on `PATH`: the first executable file of that name, as the shell would find it.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `go` binary: `$GO` if set (used as given, even if missing: a typo must not fall back to
/// another toolchain), else Debian's Go 1.23, else `go` on `PATH`; the Debian path when there is
/// none (so messages name what `make go-toolchain` installs).
pub fn go_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GO") {
        return PathBuf::from(p);
    }
    let debian = PathBuf::from(DEBIAN_GO);
    if is_executable(&debian) {
        return debian;
    }
    on_path("go").unwrap_or(debian)
}

/// The `go` binary for a test that needs it, tallied; `None` (after a loud message) when it is
/// missing outside CI. Panics in CI.
pub fn require_go() -> Option<PathBuf> {
    let go = go_bin();
    require("go", is_executable(&go).then_some(go), "make go-toolchain")
}

/// A tool a test needs: `found` when it is there (tallied), else a failure in CI or a loud
/// skip elsewhere, naming `install`.
pub fn require(tool: &str, found: Option<PathBuf>, install: &str) -> Option<PathBuf> {
    match found {
        Some(p) => {
            tally(tool);
            Some(p)
        }
        None if in_ci() => panic!(
            "{tool} is required and missing (CI is set, so this fails instead of skipping): \
             install it with `{install}`"
        ),
        None => {
            eprintln!(
                "SKIPPED {}: {tool} is not installed (`{install}`); with CI=true this fails",
                test_name()
            );
            None
        }
    }
}

/// This test's name: libtest names each test's thread after it.
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string()
}

/// Records that the current test ran the real `tool` (no-op without `$MODGATE_TALLY_DIR`).
pub fn tally(tool: &str) {
    let Some(dir) = std::env::var_os("MODGATE_TALLY_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // Test binaries are named `<target>-<hash>`: the target is what a reader recognises.
    let target = exe.rsplit_once('-').map_or(exe.as_str(), |(t, _)| t);
    let line = format!("{target}::{}\n", test_name());
    // One short O_APPEND write per line: concurrent tests and binaries never interleave.
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(tool))?
            .write_all(line.as_bytes())
    });
    if let Err(e) = written {
        eprintln!("tally of {tool} in {}: {e}", dir.display());
    }
}
