//! Oracle tests: real repositories made with `git` in a temporary
//! directory, the real go command (Go 1.23) with `GOPROXY=direct` against
//! them, and this crate, compared byte for byte: `.info` and `.mod` bytes as
//! `go mod download -json` stores them, the zip's `h1:` against its `Sum`,
//! the `.mod` `h1:` against `GoModSum`, `go list -m -versions` against
//! [`ModuleSource::versions`], and `go list -m -json m@<query>` (branch,
//! hash prefix, full hash) against [`ModuleSource::stat`].
//!
//! How `go` reaches a local repository without a server: the module paths
//! carry a `.git` qualifier (`git.corp.example/g/r.git/...`), which Go
//! resolves without any `?go-get=1` request to the repository
//! `https://git.corp.example/g/r` (the `Origin.URL` it records); a git
//! configuration file passed as `GIT_CONFIG_GLOBAL` rewrites that prefix
//! with `url."file:///<tmp>/repos/".insteadOf`. The crate gets the same
//! URL and the same configuration file, so both sides record the same
//! `Origin`. No network at all; `GOPRIVATE` keeps the checksum database
//! out. (Module paths without `.git` need a `?go-get=1` answer; that is the
//! gateway's part, tested end to end with a real Git host.)
//!
//! Commit dates are fixed, so pseudo-versions are stable. They need the
//! real `go` (`make go-toolchain`): a failure under `CI`, a loud skip
//! elsewhere (`modgate_testkit::require_go`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use modgate_git::{GitOptions, Mirror, Mirrors, ModuleSource};
use serde_json::Value;

const HOST: &str = "git.corp.example";

struct Fixture {
    tmp: tempfile::TempDir,
    go: PathBuf,
    mirrors: Mirrors,
    clock: std::cell::Cell<i64>,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        let go = modgate_testkit::require_go()?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for d in ["repos", "home", "gomod", "gopath", "gocache", "mirrors"] {
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
                ..GitOptions::default()
            },
        );
        Some(Fixture {
            tmp,
            go,
            mirrors,
            clock: std::cell::Cell::new(1_600_000_000),
        })
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Creates `repos/<name>` with a `main` branch.
    fn repo(&self, name: &str) -> PathBuf {
        let dir = self.root().join("repos").join(name);
        std::fs::create_dir_all(&dir).expect("mkdir repo");
        self.git(&dir, &["init", "-q", "-b", "main"]);
        dir
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let t = self.clock.get();
        let date = format!("@{t} +0200");
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes files (a `->` target makes a symlink) and commits them.
    fn commit(&self, dir: &Path, files: &[(&str, &str)]) -> String {
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            if let Some(target) = content.strip_prefix("->") {
                std::os::unix::fs::symlink(target, &p).expect("symlink");
            } else {
                std::fs::write(&p, content).expect("write");
            }
        }
        self.clock.set(self.clock.get() + 3600);
        self.git(dir, &["add", "-A"]);
        self.git(dir, &["commit", "-q", "--allow-empty", "-m", "c"]);
        self.git(dir, &["rev-parse", "HEAD"])
    }

    fn go(&self, args: &[&str]) -> (bool, String, String) {
        self.go_in(args, "gomod")
    }

    /// Runs go with the module cache `root/<cache>`.
    fn go_in(&self, args: &[&str], cache: &str) -> (bool, String, String) {
        let r = self.root();
        modgate_testkit::tools::tally("go");
        let out = Command::new(&self.go)
            .args(args)
            .current_dir(r)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", r.join("home"))
            .env("GIT_CONFIG_GLOBAL", r.join("gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GOPROXY", "direct")
            .env("GOPRIVATE", HOST)
            .env("GOMODCACHE", r.join(cache))
            .env("GOPATH", r.join("gopath"))
            .env("GOCACHE", r.join("gocache"))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod -modcacherw")
            .output()
            .expect("run go");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn mirror(&self, repo: &str) -> Arc<Mirror> {
        self.mirrors
            .repo(&format!("https://{HOST}/{repo}"), None)
            .expect("mirror")
    }

    fn source(&self, repo: &str, module: &str) -> ModuleSource {
        let root = format!("{HOST}/{repo}.git");
        ModuleSource::new(self.mirror(repo), &root, module)
            .expect("source")
            .with_max_age(std::time::Duration::ZERO)
    }

    /// `go mod download -json` of every `module@version` against the crate.
    fn check_downloads(&self, repo: &str, wanted: &[(&str, &str)]) {
        let args: Vec<String> = wanted.iter().map(|(m, v)| format!("{m}@{v}")).collect();
        let mut cmd = vec!["mod", "download", "-json"];
        cmd.extend(args.iter().map(String::as_str));
        let (_, stdout, stderr) = self.go(&cmd);
        let docs: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("go output: {e}\n{stdout}\n{stderr}"));
        assert_eq!(docs.len(), wanted.len(), "{stdout}\n{stderr}");
        for (doc, (module, version)) in docs.iter().zip(wanted) {
            assert!(doc.get("Error").is_none(), "go failed: {doc}");
            let src = self.source(repo, module);
            let s = |k: &str| doc[k].as_str().unwrap_or_default().to_owned();
            let go_info = std::fs::read(s("Info")).expect("go .info");
            let ours = src.info(version).expect("info").to_json();
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&go_info),
                ".info of {module}@{version}"
            );
            let go_mod = std::fs::read(s("GoMod")).expect("go .mod");
            let our_mod = src.go_mod(version).expect("go.mod");
            assert_eq!(
                String::from_utf8_lossy(&our_mod),
                String::from_utf8_lossy(&go_mod),
                ".mod of {module}@{version}"
            );
            assert_eq!(modgate_ledger::mod_h1(&our_mod), s("GoModSum"));
            let zip = src.zip(version).expect("zip");
            assert_eq!(
                modgate_ledger::zip_h1(&zip).expect("h1"),
                s("Sum"),
                "zip of {module}@{version}: ours has {:?}",
                zip_names(&zip)
            );
        }
    }

    /// `go list -m -versions` against [`ModuleSource::versions`].
    fn check_list(&self, repo: &str, module: &str) {
        let (ok, stdout, stderr) = self.go(&["list", "-m", "-versions", "-json", module]);
        assert!(ok, "{stderr}");
        let doc: Value = serde_json::from_str(&stdout).expect("json");
        let go: Vec<String> = doc["Versions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            self.source(repo, module).versions().expect("versions"),
            go,
            "{module}"
        );
    }

    /// `go list -m -json module@query` against [`ModuleSource::stat`].
    ///
    /// Each query runs with a module cache of its own: Go's answer for a
    /// commit hash depends on what its cache already holds (a branch tip
    /// fetched earlier loses its `Origin.Ref`), and the crate answers as
    /// an empty cache does.
    fn check_query(&self, repo: &str, module: &str, query: &str) -> String {
        let n = self.clock.get();
        self.clock.set(n + 1);
        let cache = format!("gomod-query-{n}");
        let (ok, stdout, stderr) = self.go_in(
            &["list", "-m", "-json", &format!("{module}@{query}")],
            &cache,
        );
        assert!(ok, "{stderr}");
        let go: Value = serde_json::from_str(&stdout).expect("json");
        let ours: Value = serde_json::from_slice(
            &self
                .source(repo, module)
                .stat(query)
                .expect("stat")
                .to_json(),
        )
        .expect("our json");
        for key in ["Version", "Time", "Origin"] {
            assert_eq!(ours[key], go[key], "{key} of {module}@{query}");
        }
        go["Version"].as_str().unwrap_or_default().to_owned()
    }
}

fn zip_names(zip: &[u8]) -> Vec<String> {
    let archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("zip");
    archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect()
}

#[test]
fn root_module_tags_branches_and_hashes() {
    let Some(f) = Fixture::new() else { return };
    let dir = f.repo("g/root");
    let m = format!("{HOST}/g/root.git");
    let go_mod = format!("module {m}\n\ngo 1.21\n");
    let c1 = f.commit(&dir, &[("go.mod", &go_mod), ("a.go", "package root\n")]);
    f.git(&dir, &["tag", "v1.0.0"]);
    f.commit(&dir, &[("b.go", "package root\n\nconst B = 1\n")]);
    f.git(&dir, &["tag", "-a", "-m", "annotated", "v1.1.0"]);
    f.commit(&dir, &[("c.go", "package root\n")]);
    f.git(&dir, &["tag", "v1.2.0-rc.1"]);
    f.git(&dir, &["tag", "v1.3"]);
    let middle = f.commit(&dir, &[("d.go", "package root\n")]);
    let tip = f.commit(&dir, &[("e.go", "package root\n")]);
    f.git(&dir, &["checkout", "-q", "-b", "feature", &c1]);
    let feature = f.commit(&dir, &[("f.go", "package root\n")]);
    f.git(&dir, &["checkout", "-q", "main"]);

    f.check_list("g/root", &m);
    let on_main = f.check_query("g/root", &m, "main");
    assert!(on_main.starts_with("v1.2.0-rc.1.0."), "{on_main}");
    let on_feature = f.check_query("g/root", &m, "feature");
    assert!(on_feature.starts_with("v1.0.1-0."), "{on_feature}");
    f.check_query("g/root", &m, &middle[..12]);
    f.check_query("g/root", &m, &tip);
    f.check_query("g/root", &m, &feature);
    f.check_query("g/root", &m, "v1.1.0");
    f.check_downloads(
        "g/root",
        &[
            (&m, "v1.0.0"),
            (&m, "v1.1.0"),
            (&m, "v1.2.0-rc.1"),
            (&m, &on_main),
            (&m, &on_feature),
        ],
    );
}

#[test]
fn untagged_repository_latest_is_a_pseudo_version() {
    let Some(f) = Fixture::new() else { return };
    let dir = f.repo("g/untagged");
    let m = format!("{HOST}/g/untagged.git");
    f.commit(
        &dir,
        &[
            ("go.mod", &format!("module {m}\n")),
            ("a.go", "package a\n"),
        ],
    );
    f.commit(&dir, &[("b.go", "package a\n")]);
    let latest = f.check_query("g/untagged", &m, "latest");
    assert!(latest.starts_with("v0.0.0-"), "{latest}");
    let ours = f.source("g/untagged", &m).latest().expect("latest");
    assert_eq!(ours.version, latest);
    f.check_downloads("g/untagged", &[(&m, &latest)]);
}

#[test]
fn subdirectory_modules_and_major_subdirectories() {
    let Some(f) = Fixture::new() else { return };
    let dir = f.repo("g/multi");
    let root = format!("{HOST}/g/multi.git");
    let sub = format!("{root}/sub");
    let sub2 = format!("{root}/sub/v2");
    f.commit(
        &dir,
        &[
            ("go.mod", &format!("module {root}\n")),
            ("LICENSE", "root license\n"),
            ("sub/go.mod", &format!("module {sub}\n")),
            ("sub/s.go", "package sub\n"),
        ],
    );
    f.git(&dir, &["tag", "sub/v1.0.0"]);
    f.git(&dir, &["tag", "v0.1.0"]);
    f.commit(&dir, &[("sub/t.go", "package sub\n")]);
    f.git(&dir, &["tag", "sub/v1.0.1"]);
    f.commit(
        &dir,
        &[
            ("sub/v2/go.mod", &format!("module {sub2}\n")),
            ("sub/v2/s.go", "package sub\n"),
        ],
    );
    f.git(&dir, &["tag", "sub/v2.0.0"]);
    f.commit(&dir, &[("sub/u.go", "package sub\n")]);

    f.check_list("g/multi", &sub);
    f.check_list("g/multi", &sub2);
    f.check_list("g/multi", &root);
    let q = f.check_query("g/multi", &sub, "main");
    assert!(q.starts_with("v1.0.2-0."), "{q}");
    f.check_downloads(
        "g/multi",
        &[
            (&sub, "v1.0.0"),
            (&sub, "v1.0.1"),
            (&sub, &q),
            (&sub2, "v2.0.0"),
            (&root, "v0.1.0"),
        ],
    );
}

#[test]
fn major_version_by_go_mod_path_and_incompatible() {
    let Some(f) = Fixture::new() else { return };
    // /v2 declared in the root go.mod.
    let dir = f.repo("g/major");
    let m1 = format!("{HOST}/g/major.git");
    let m2 = format!("{m1}/v2");
    f.commit(
        &dir,
        &[
            ("go.mod", &format!("module {m1}\n")),
            ("a.go", "package a\n"),
        ],
    );
    f.git(&dir, &["tag", "v1.0.0"]);
    f.commit(&dir, &[("go.mod", &format!("module {m2}\n\ngo 1.20\n"))]);
    f.git(&dir, &["tag", "v2.0.0"]);
    f.commit(&dir, &[("b.go", "package a\n")]);
    f.git(&dir, &["tag", "v2.1.0"]);
    f.commit(&dir, &[("c.go", "package a\n")]);
    f.check_list("g/major", &m1);
    f.check_list("g/major", &m2);
    let q = f.check_query("g/major", &m2, "main");
    assert!(q.starts_with("v2.1.1-0."), "{q}");
    f.check_downloads(
        "g/major",
        &[(&m1, "v1.0.0"), (&m2, "v2.0.0"), (&m2, "v2.1.0"), (&m2, &q)],
    );

    // A repository from before modules: no go.mod, tags up to v3.
    let dir = f.repo("g/old");
    let old = format!("{HOST}/g/old.git");
    f.commit(&dir, &[("a.go", "package old\n")]);
    f.git(&dir, &["tag", "v1.0.0"]);
    f.commit(&dir, &[("b.go", "package old\n")]);
    f.git(&dir, &["tag", "v3.0.0"]);
    f.commit(&dir, &[("c.go", "package old\n")]);
    f.check_list("g/old", &old);
    let q = f.check_query("g/old", &old, "main");
    assert!(q.ends_with("+incompatible"), "{q}");
    f.check_downloads(
        "g/old",
        &[(&old, "v1.0.0"), (&old, "v3.0.0+incompatible"), (&old, &q)],
    );
}

#[test]
fn zip_exclusions_attributes_and_root_license() {
    let Some(f) = Fixture::new() else { return };
    let dir = f.repo("g/files");
    let m = format!("{HOST}/g/files.git");
    let lib = format!("{m}/lib");
    f.commit(
        &dir,
        &[
            ("go.mod", &format!("module {m}\n")),
            ("LICENSE", "Copyright\n"),
            ("a.go", "package files\n"),
            ("vendor/modules.txt", "# x\n"),
            ("vendor/x.example/y/y.go", "package y\n"),
            ("pkg/vendor/z.go", "package vendor\n"),
            ("pkg/p.go", "package pkg\n"),
            ("nested/go.mod", "module other.example/nested\n"),
            ("nested/n.go", "package nested\n"),
            (".hg_archival.txt", "repo: x\n"),
            ("link.go", "->a.go"),
            (
                ".gitattributes",
                "crlf.txt text eol=crlf\nignored.txt export-ignore\n",
            ),
            ("crlf.txt", "one\ntwo\n"),
            ("ignored.txt", "still in Go's zip\n"),
            ("lib/go.mod", &format!("module {lib}\n")),
            ("lib/l.go", "package lib\n"),
            ("empty/.keep", ""),
        ],
    );
    f.git(&dir, &["tag", "v1.0.0"]);
    f.git(&dir, &["tag", "lib/v1.0.0"]);
    f.check_downloads("g/files", &[(&m, "v1.0.0"), (&lib, "v1.0.0")]);
    let names = zip_names(&f.source("g/files", &lib).zip("v1.0.0").expect("zip"));
    assert!(
        names.contains(&format!("{lib}@v1.0.0/LICENSE")),
        "{names:?}"
    );

    // An oversized LICENSE makes the version unusable for Go and for us.
    let big = "x".repeat((16 << 20) + 1);
    f.commit(&dir, &[("LICENSE", &big)]);
    f.git(&dir, &["tag", "v1.1.0"]);
    let (_, stdout, _) = f.go(&["mod", "download", "-json", &format!("{m}@v1.1.0")]);
    assert!(stdout.contains("LICENSE file too large"), "{stdout}");
    let err = f
        .source("g/files", &m)
        .zip("v1.1.0")
        .expect_err("too large");
    assert!(err.to_string().contains("LICENSE file too large"), "{err}");
}

#[test]
fn concurrent_refreshes_share_one_round_trip() {
    let Some(f) = Fixture::new() else { return };
    let dir = f.repo("g/busy");
    let m = format!("{HOST}/g/busy.git");
    f.commit(&dir, &[("go.mod", &format!("module {m}\n"))]);
    f.git(&dir, &["tag", "v1.0.0"]);
    let mirror = f.mirror("g/busy");
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                barrier.wait();
                let src = ModuleSource::new(Arc::clone(&mirror), &m, &m)
                    .expect("source")
                    .with_max_age(std::time::Duration::from_secs(60));
                assert_eq!(src.versions().expect("versions"), ["v1.0.0"]);
            });
        }
    });
    assert_eq!(mirror.host_round_trips(), 1);
    // A new tag is seen once the refs are older than the allowed age.
    f.git(&dir, &["tag", "v1.0.1"]);
    let fresh = f.source("g/busy", &m);
    assert_eq!(fresh.versions().expect("versions"), ["v1.0.0", "v1.0.1"]);
    assert_eq!(mirror.host_round_trips(), 2);
}
