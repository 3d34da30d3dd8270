//! The suite-wide privacy canary, run last by `make e2e`: while the other end-to-end tests ran
//! under `MODGATE_CANARY_DIR`, every fixture upstream and fixture checksum database appended
//! each request it received to `<dir>/<pid>-<port>.log` (see `modgate_testkit::canary`). After
//! the whole suite, no fixture that is not marked private (`FixtureProxy::mark_private`) may
//! have seen a path under `corp.example.com`, in any spelling: percent-encoded, `!`-case-encoded
//! or in another case — including checksum-database lookups.
//!
//! Run on its own (`cargo test -p modgate-e2e`) without the variable, it has nothing to check
//! and says so. The name is what `make e2e` skips in the first pass:
//! `--skip canary_saw_no_private_path`.

use std::path::PathBuf;

use modgate_testkit::canary::{scan_dir, CANARY_DIR_ENV, PRIVATE_HOST};

#[test]
fn canary_saw_no_private_path() {
    let Some(dir) = std::env::var_os(CANARY_DIR_ENV).filter(|d| !d.is_empty()) else {
        eprintln!(
            "{CANARY_DIR_ENV} is not set: the privacy canary only checks a whole suite, under \
             `make e2e`"
        );
        return;
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.is_dir(),
        "{CANARY_DIR_ENV}={} does not exist: no fixture recorded anything, so the canary \
         cannot vouch for the suite (run the other e2e tests first with the same variable)",
        dir.display()
    );
    let scan = scan_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    assert!(
        !scan.files.is_empty(),
        "no *.log in {}: no fixture recorded anything, so the canary cannot vouch for the suite",
        dir.display()
    );
    let total = scan.public + scan.private + scan.sumdb;
    assert!(total > 0, "the canary logs in {} are empty", dir.display());
    eprintln!(
        "privacy canary: {} log(s), {} public, {} sumdb and {} private request(s), {} malformed \
         line(s)",
        scan.files.len(),
        scan.public,
        scan.sumdb,
        scan.private,
        scan.malformed
    );
    if !scan.leaks.is_empty() {
        let list: Vec<String> = scan.leaks.iter().map(|l| format!("  {l}")).collect();
        panic!(
            "{} request(s) for a private path ({PRIVATE_HOST}) reached a fixture not marked \
             private (a public upstream or a checksum database):\n{}",
            scan.leaks.len(),
            list.join("\n")
        );
    }
}
