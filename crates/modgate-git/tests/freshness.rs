//! How fresh a mirror is and what it costs (issue 18, items 6 and 15), against real
//! repositories made with `git` in a temporary directory and reached through a `file://`
//! `insteadOf` rule (no network):
//!
//! - a tag pushed after the last refresh is found at once by a query for it (the miss makes
//!   the mirror list the host again), while misses share and rate-limit those refreshes;
//! - [`Mirrors::request_refresh`] (`modgate cache purge`) makes the next use list the host
//!   again whatever the age of the refs;
//! - a repository the host does not have is [`GitError::RepositoryNotFound`] (not found for
//!   the GOPROXY protocol), leaves nothing on disk, and is remembered for
//!   `not_found_ttl` (a repository created meanwhile is seen once that passes or a refresh is
//!   requested);
//! - mirrors carry no hook samples.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modgate_git::{GitError, GitOptions, Mirrors, ModuleSource};

const HOST: &str = "git.corp.example";

struct Fixture {
    tmp: tempfile::TempDir,
    mirrors: Mirrors,
}

impl Fixture {
    fn new(not_found_ttl: Duration, miss_refresh_interval: Duration) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for d in ["repos", "mirrors"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let config = format!(
            "[url \"file://{}/repos/\"]\n\tinsteadOf = https://{HOST}/\n",
            root.display()
        );
        std::fs::write(root.join("gitconfig"), config).expect("gitconfig");
        let mirrors = Mirrors::new(
            root.join("mirrors"),
            GitOptions {
                global_config: Some(root.join("gitconfig")),
                not_found_ttl,
                miss_refresh_interval,
                ..GitOptions::default()
            },
        );
        Fixture { tmp, mirrors }
    }

    fn mirrors_dir(&self) -> PathBuf {
        self.tmp.path().join("mirrors")
    }

    fn url(repo: &str) -> String {
        format!("https://{HOST}/{repo}")
    }

    /// `repos/<name>` with one commit holding a go.mod, tagged `v1.0.0`.
    fn repo(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join("repos").join(name);
        std::fs::create_dir_all(&dir).expect("mkdir repo");
        git(&dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("go.mod"), format!("module {}\n", module(name))).expect("go.mod");
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "c"]);
        git(&dir, &["tag", "v1.0.0"]);
        dir
    }

    /// The module at the root of `repo`, refs refreshed at most once a minute.
    fn source(&self, repo: &str) -> Result<ModuleSource, GitError> {
        let mirror = self.mirrors.repo(&Self::url(repo), None)?;
        Ok(ModuleSource::new(mirror, &module(repo), &module(repo))?
            .with_max_age(Duration::from_secs(60)))
    }
}

fn module(repo: &str) -> String {
    format!("{HOST}/{repo}.git")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_tag_pushed_after_the_last_refresh_is_found_at_once() {
    let f = Fixture::new(Duration::from_secs(5), Duration::from_millis(300));
    let dir = f.repo("g/fresh");
    let src = f.source("g/fresh").expect("source");
    assert_eq!(src.versions().expect("versions"), ["v1.0.0"]);
    let mirror = f
        .mirrors
        .repo(&Fixture::url("g/fresh"), None)
        .expect("mirror");
    assert_eq!(mirror.host_round_trips(), 1);

    // Pushed after the refresh, within its minute: the list may lag, a query for it may not.
    git(&dir, &["tag", "v1.1.0"]);
    assert_eq!(src.stat("v1.1.0").expect("v1.1.0").version, "v1.1.0");
    git(&dir, &["tag", "v1.2.0"]);
    assert!(!src.go_mod("v1.2.0").expect("v1.2.0 .mod").is_empty());
    git(&dir, &["tag", "v1.3.0"]);
    assert!(!src.zip("v1.3.0").expect("v1.3.0 .zip").is_empty());
    let after_pushes = mirror.host_round_trips();
    assert_eq!(after_pushes, 4, "one listing per miss");

    // Misses are rate-limited and shared: eight at once, then eight more, cost at most one
    // listing each round, spaced by the interval.
    let started = Instant::now();
    for _ in 0..2 {
        std::thread::scope(|scope| {
            for i in 0..8 {
                let src = &src;
                scope.spawn(move || {
                    let err = src.stat(&format!("v9.0.{i}")).expect_err("no such tag");
                    assert!(err.is_not_found(), "{err}");
                });
            }
        });
    }
    let misses = mirror.host_round_trips() - after_pushes;
    let elapsed = started.elapsed();
    assert!(
        (1..=4).contains(&misses),
        "16 misses in two bursts listed the host {misses} times"
    );
    assert!(
        elapsed >= Duration::from_millis(300) * u32::try_from(misses - 1).unwrap_or(0),
        "{misses} listings within {elapsed:?}: not spaced by the interval"
    );

    // A refresh asked for (cache purge) is honoured on next use, whatever the refs' age.
    git(&dir, &["tag", "v1.4.0"]);
    assert_eq!(
        src.versions().expect("versions"),
        ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]
    );
    assert!(f
        .mirrors
        .request_refresh(&Fixture::url("g/fresh"))
        .expect("request refresh"));
    assert_eq!(
        src.versions().expect("versions"),
        ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0", "v1.4.0"]
    );
    // Asked once, honoured once.
    let n = mirror.host_round_trips();
    src.versions().expect("versions");
    assert_eq!(mirror.host_round_trips(), n);

    // No hook samples (nor anything else of git's template) in a mirror.
    assert!(!mirror.dir().join("hooks").exists(), "hooks in the mirror");
    assert!(!mirror.dir().join("description").exists());
}

#[test]
fn an_unknown_repository_is_not_found_leaves_nothing_and_is_remembered() {
    let f = Fixture::new(Duration::from_secs(30), Duration::from_secs(1));
    let err = f
        .source("g/ghost")
        .and_then(|s| s.versions())
        .expect_err("no such repository");
    assert!(
        matches!(err, GitError::RepositoryNotFound { .. }),
        "{err:?}"
    );
    assert!(err.is_not_found());
    assert!(err.to_string().contains("g/ghost"), "{err}");
    let left: Vec<_> = std::fs::read_dir(f.mirrors_dir())
        .expect("mirrors dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "an unknown repository left {left:?}");

    // Remembered: created on the host meanwhile, it is still not found (without asking).
    f.repo("g/ghost");
    let err = f
        .source("g/ghost")
        .and_then(|s| s.versions())
        .expect_err("remembered");
    assert!(matches!(err, GitError::RepositoryNotFound { .. }), "{err}");
    // A purge forgets it at once.
    f.mirrors
        .request_refresh(&Fixture::url("g/ghost"))
        .expect("request refresh");
    let src = f.source("g/ghost").expect("source");
    assert_eq!(src.versions().expect("versions"), ["v1.0.0"]);
}

#[test]
fn an_unknown_repository_is_asked_again_once_the_time_has_passed() {
    let f = Fixture::new(Duration::from_millis(200), Duration::from_secs(1));
    let err = f
        .source("g/later")
        .and_then(|s| s.versions())
        .expect_err("no such repository");
    assert!(matches!(err, GitError::RepositoryNotFound { .. }), "{err}");
    f.repo("g/later");
    // Bounded wait on the condition: the remembered answer expires.
    let deadline = Instant::now() + Duration::from_secs(20);
    let versions = loop {
        match f.source("g/later").and_then(|s| s.versions()) {
            Ok(v) => break v,
            Err(GitError::RepositoryNotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(versions, ["v1.0.0"]);
    // A mirror whose repository vanishes keeps what it fetched (and says not found).
    let mirror = f
        .mirrors
        .repo(&Fixture::url("g/later"), None)
        .expect("mirror");
    std::fs::remove_dir_all(f.tmp.path().join("repos/g/later")).expect("remove");
    let src = ModuleSource::new(Arc::clone(&mirror), &module("g/later"), &module("g/later"))
        .expect("source")
        .with_max_age(Duration::ZERO);
    let err = src.versions().expect_err("vanished");
    assert!(matches!(err, GitError::RepositoryNotFound { .. }), "{err}");
    assert!(mirror.dir().join("HEAD").is_file());
}

/// A refresh talking to the host (its `ls-remote` held until a gate file appears) blocks
/// neither a reader of the mirror's counters nor a caller whose refs are fresh enough; callers
/// that need a refresh meanwhile wait for that one (never two listings at once).
#[test]
fn a_refresh_in_flight_blocks_no_reader_and_runs_alone() {
    let f = Fixture::new(Duration::from_secs(5), Duration::from_millis(300));
    f.repo("g/slow");
    let root = f.tmp.path();
    let (gate, log, started) = (root.join("gate"), root.join("log"), root.join("started"));
    let script = root.join("slow-git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = ls-remote ]; then\n\
               echo start >> '{log}'; : > '{started}'\n\
               i=0; while [ ! -e '{gate}' ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n\
               git \"$@\"; rc=$?; echo end >> '{log}'; exit $rc\n\
             fi\n\
             exec git \"$@\"\n",
            log = log.display(),
            started = started.display(),
            gate = gate.display(),
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mirrors = Mirrors::new(
        f.mirrors_dir(),
        GitOptions {
            git: script,
            global_config: Some(root.join("gitconfig")),
            ..GitOptions::default()
        },
    );
    let mirror = mirrors.repo(&Fixture::url("g/slow"), None).expect("mirror");
    std::fs::write(&gate, b"").expect("open the gate");
    let first = mirror.refresh(Duration::ZERO).expect("first refresh");
    assert_eq!(mirror.host_round_trips(), 1);
    std::fs::remove_file(&gate).expect("close the gate");
    std::fs::remove_file(&started).expect("reset");

    let mirror = &mirror;
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| mirror.refresh(Duration::ZERO)))
            .collect();
        // Bounded wait for the flight to reach the host.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !started.exists() {
            assert!(Instant::now() < deadline, "no refresh reached the host");
            std::thread::yield_now();
        }
        // Readers answer while the listing is held (each within a bounded wait).
        let (tx, rx) = std::sync::mpsc::channel();
        scope.spawn(move || {
            let trips = mirror.host_round_trips();
            let fresh = mirror.refresh(Duration::from_secs(60));
            let _ = tx.send((trips, fresh));
        });
        let answered = rx.recv_timeout(Duration::from_secs(20));
        let gate_was_closed = !gate.exists();
        std::fs::write(&gate, b"").expect("open the gate");
        let (trips, fresh) = answered.expect("a reader waited for the refresh in flight");
        assert!(gate_was_closed);
        assert!(trips >= 2, "the flight counts as a round trip: {trips}");
        assert!(Arc::ptr_eq(&fresh.expect("fresh refs"), &first));
        for c in callers {
            let refs = c.join().expect("caller").expect("refresh");
            assert_eq!(refs.map, first.map);
        }
    });
    // Never two listings at once: starts and ends alternate.
    let lines = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<&str> = lines.lines().collect();
    assert!(lines.len() >= 4, "{lines:?}");
    for pair in lines.chunks(2) {
        assert_eq!(pair, ["start", "end"], "overlapping listings: {lines:?}");
    }
}
