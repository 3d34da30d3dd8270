//! The real Git host ([`GitHost`]) against the real `git` and `go` commands, all on loopback:
//! smart-HTTP clones (protocol v2 and v0, chunked and gzip request bodies), the forward proxy
//! for a fake host name, `?go-get=1` pages, a required credential and what the host recorded,
//! and `go mod download` in `GOPROXY=direct` mode through the proxy.

use std::path::Path;
use std::process::{Command, Output};

use modgate_testkit::{raw_request, GitHost, GoEnv, WorkTree};

const HOST: &str = "git.corp.example";
const T0: i64 = 1_600_000_000;

/// A `git` client with its own HOME and no global or system configuration.
struct Client {
    home: tempfile::TempDir,
}

impl Client {
    fn new() -> Client {
        Client {
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn dir(&self, name: &str) -> std::path::PathBuf {
        self.home.path().join(name)
    }

    /// Runs `git args` in HOME with extra environment variables.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(self.home.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run git")
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run(args, env);
        assert!(
            out.status.success(),
            "git {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The commits of the sample repository.
struct Sample {
    repo: WorkTree,
    v100: String,
    v110: String,
    feature: String,
}

/// `group/repo`: module `git.corp.example/group/repo` with a symlink, `v1.0.0` (lightweight),
/// `v1.1.0` (annotated), a `feature` branch, all pushed.
fn sample(host: &GitHost) -> Sample {
    let repo = host.create_repo("group/repo").expect("create repo");
    repo.write("go.mod", format!("module {HOST}/group/repo\n\ngo 1.21\n"))
        .and_then(|r| r.write("repo.go", "package repo\n\nconst V = 1\n"))
        .and_then(|r| r.write("sub/pkg/pkg.go", "package pkg\n"))
        .and_then(|r| r.symlink("link.go", "repo.go"))
        .expect("files");
    let v100 = repo.commit("first", T0).expect("commit");
    repo.tag("v1.0.0").expect("tag");
    repo.write("repo.go", "package repo\n\nconst V = 2\n")
        .expect("write");
    let v110 = repo.commit("second", T0 + 3600).expect("commit");
    repo.tag_annotated("v1.1.0", "release 1.1.0", T0 + 3700)
        .expect("annotated tag");
    repo.branch("feature").expect("branch");
    repo.write("feature.go", "package repo\n").expect("write");
    let feature = repo.commit("feature", T0 + 7200).expect("commit");
    repo.switch("main").expect("switch").push().expect("push");
    Sample {
        repo,
        v100,
        v110,
        feature,
    }
}

fn clone_checks(client: &Client, dir: &str, s: &Sample) {
    let d = client.dir(dir);
    let d = d.to_str().expect("utf-8 path");
    let rev = |r: &str| client.ok(&["-C", d, "rev-parse", r], &[]);
    assert_eq!(rev("HEAD"), s.v110);
    assert_eq!(rev("v1.0.0"), s.v100);
    assert_eq!(rev("v1.1.0^{commit}"), s.v110);
    assert_eq!(rev("origin/feature"), s.feature);
    assert_eq!(
        client.ok(&["-C", d, "cat-file", "-t", "v1.1.0"], &[]),
        "tag"
    );
    let link = Path::new(d).join("link.go");
    assert_eq!(
        std::fs::read_link(&link).expect("symlink").to_str(),
        Some("repo.go")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_over_smart_http_v2_and_v0() {
    let host = GitHost::start(&[HOST]).await.expect("start");
    let s = sample(&host);
    let client = Client::new();
    let url = format!("{}/group/repo.git", host.url());

    client.ok(&["clone", "-q", &url, "v2"], &[]);
    clone_checks(&client, "v2", &s);
    let v2 = host.requests();
    assert!(!v2.is_empty());
    assert!(
        v2.iter()
            .all(|r| r.git_protocol.as_deref() == Some("version=2") && r.status == 200),
        "{v2:#?}"
    );
    assert!(v2
        .iter()
        .any(|r| r.method == "POST" && r.target == "/group/repo.git/git-upload-pack"));

    host.clear_requests();
    client.ok(
        &["-c", "protocol.version=0", "clone", "-q", &url, "v0"],
        &[],
    );
    clone_checks(&client, "v0", &s);
    let v0 = host.requests();
    assert!(
        v0.iter()
            .all(|r| r.git_protocol.is_none() && r.status == 200),
        "{v0:#?}"
    );
    assert_eq!(
        v0.first().map(|r| r.target.as_str()),
        Some("/group/repo.git/info/refs?service=git-upload-pack")
    );

    // A fetch after new commits, and a repository that does not exist.
    s.repo.write("more.go", "package repo\n").expect("write");
    let tip = s.repo.commit("more", T0 + 9000).expect("commit");
    s.repo.push().expect("push");
    let v2dir = client.dir("v2");
    let v2dir = v2dir.to_str().expect("utf-8");
    client.ok(&["-C", v2dir, "pull", "-q", "--ff-only"], &[]);
    assert_eq!(client.ok(&["-C", v2dir, "rev-parse", "HEAD"], &[]), tip);
    let missing = client.run(
        &[
            "clone",
            "-q",
            &format!("{}/group/nope.git", host.url()),
            "x",
        ],
        &[],
    );
    assert!(!missing.status.success());
    assert!(host
        .requests()
        .iter()
        .any(|r| r.target.starts_with("/group/nope.git/") && r.status == 404));
}

/// Adds `n` branches `b0`.. each with one distinct commit on `main`, quickly (`git
/// fast-import`).
fn branches(repo: &WorkTree, n: usize) {
    let mut stream = String::new();
    for i in 0..n {
        stream.push_str(&format!(
            "commit refs/heads/b{i}\ncommitter t <t@example.com> {T0} +0000\ndata <<EOF\nc{i}\nEOF\nfrom refs/heads/main^0\n\n"
        ));
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(repo.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("fast-import");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(stream.as_bytes())
            .expect("feed fast-import");
    }
    assert!(child.wait().expect("wait").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_gzip_request_bodies() {
    let host = GitHost::start(&[HOST]).await.expect("start");
    let repo = host.create_repo("group/many").expect("repo");
    repo.write("a.txt", "a\n").expect("write");
    repo.commit("base", T0).expect("commit");
    // 1500 distinct commits on 1500 branches: a mirror clone wants every one of them, a
    // request body (75 kB) over git's post buffer (made its minimum, 64 KiB), which git then
    // sends chunked; a smaller one (> 1 KiB) it sends gzipped.
    branches(&repo, 1500);
    repo.push().expect("push");

    let client = Client::new();
    let url = format!("{}/group/many.git", host.url());
    for (version, dir) in [("2", "m2"), ("0", "m0")] {
        host.clear_requests();
        client.ok(
            &[
                "-c",
                &format!("protocol.version={version}"),
                "-c",
                "http.postBuffer=65536",
                "clone",
                "-q",
                "--mirror",
                &url,
                dir,
            ],
            &[],
        );
        let branches = client.ok(
            &[
                "-C",
                client.dir(dir).to_str().expect("utf-8"),
                "for-each-ref",
                "--format=%(refname)",
                "refs/heads/",
            ],
            &[],
        );
        assert_eq!(branches.lines().count(), 1501, "protocol v{version}");
        let reqs = host.requests();
        assert!(
            reqs.iter().any(|r| r.method == "POST"
                && r.header("transfer-encoding") == Some("chunked")
                && r.status == 200),
            "protocol v{version}: no chunked POST in {:#?}",
            reqs.iter().map(|r| &r.headers).collect::<Vec<_>>()
        );
    }

    // A smaller mirror: 40 wants, gzipped.
    host.clear_requests();
    let small = host.create_repo("group/small").expect("repo");
    small.commit("base", T0).expect("commit");
    branches(&small, 40);
    small.push().expect("push");
    client.ok(
        &[
            "-c",
            "protocol.version=0",
            "clone",
            "-q",
            "--mirror",
            &format!("{}/group/small.git", host.url()),
            "small",
        ],
        &[],
    );
    let reqs = host.requests();
    assert!(
        reqs.iter().any(|r| r.method == "POST"
            && r.header("content-encoding") == Some("gzip")
            && r.status == 200),
        "no gzip POST in {:#?}",
        reqs.iter().map(|r| &r.headers).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_through_http_proxy_with_a_fake_host_name() {
    let host = GitHost::start(&[HOST]).await.expect("start");
    let s = sample(&host);
    let client = Client::new();
    let proxy = host.proxy_url();
    // git (libcurl) honours only the lower-case http_proxy.
    let env = [("http_proxy", proxy.as_str())];
    client.ok(
        &["clone", "-q", &format!("http://{HOST}/group/repo.git"), "c"],
        &env,
    );
    clone_checks(&client, "c", &s);
    let reqs = host.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter().all(|r| r
            .target
            .starts_with(&format!("http://{HOST}/group/repo.git/"))
            && r.status == 200),
        "{reqs:#?}"
    );

    // A host it does not serve: 502, nothing forwarded anywhere.
    host.clear_requests();
    let other = client.run(
        &["clone", "-q", "http://other.example/group/repo.git", "o"],
        &env,
    );
    assert!(!other.status.success());
    let reqs = host.requests();
    assert!(
        reqs.iter().all(|r| r.status == 502) && !reqs.is_empty(),
        "{reqs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_get_pages_and_connect() {
    let host = GitHost::start(&[HOST]).await.expect("start");
    let _s = sample(&host);
    let nested = host.create_repo("group/repo/nested").expect("nested");
    nested.commit("n", T0).expect("commit");
    nested.push().expect("push");
    let addr = host.addr();
    let want = format!(
        r#"<meta name="go-import" content="{HOST}/group/repo git http://{HOST}/group/repo.git">"#
    );

    // Absolute form, through the proxy.
    let r = raw_request(
        addr,
        format!(
            "GET http://{HOST}/group/repo/sub/pkg?go-get=1 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains(&want), "{}", r.text());

    // Origin form with the Host header; the module root itself; a nested repository wins.
    for (path, root) in [
        ("/group/repo?go-get=1", "group/repo"),
        ("/group/repo/v2?go-get=1", "group/repo"),
        ("/group/repo/nested/x?go-get=1", "group/repo/nested"),
    ] {
        let r = raw_request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("request");
        assert_eq!(r.status, 200, "{path}");
        let meta = format!(r#"content="{HOST}/{root} git http://{HOST}/{root}.git""#);
        assert!(r.text().contains(&meta), "{path}: {}", r.text());
    }

    // No repository there.
    let r = raw_request(
        addr,
        format!("GET http://{HOST}/group/other/x?go-get=1 HTTP/1.1\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("request");
    assert_eq!(r.status, 404);

    // CONNECT (https through HTTPS_PROXY): refused at once.
    let r = raw_request(
        addr,
        format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes(),
    )
    .expect("request");
    assert_eq!(r.status, 502);

    let seen: Vec<(String, u16)> = host
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET".to_string(), 200),
            ("GET".to_string(), 200),
            ("GET".to_string(), 200),
            ("GET".to_string(), 200),
            ("GET".to_string(), 404),
            ("CONNECT".to_string(), 502),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_authorization() {
    let host = GitHost::start(&[HOST]).await.expect("start");
    let s = sample(&host);
    let secret = "Bearer s3cret-token";
    host.require_authorization(secret);
    let client = Client::new();
    let url = format!("{}/group/repo.git", host.url());

    let anon = client.run(&["clone", "-q", &url, "anon"], &[]);
    assert!(!anon.status.success());
    let stderr = String::from_utf8_lossy(&anon.stderr);
    let reqs = host.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.status == 401 && r.authorization.is_none()),
        "{reqs:#?}\n{stderr}"
    );

    let wrong = client.run(
        &[
            "-c",
            "http.extraHeader=Authorization: Bearer wrong",
            "clone",
            "-q",
            &url,
            "wrong",
        ],
        &[],
    );
    assert!(!wrong.status.success());

    host.clear_requests();
    client.ok(
        &[
            "-c",
            &format!("http.extraHeader=Authorization: {secret}"),
            "clone",
            "-q",
            &url,
            "authed",
        ],
        &[],
    );
    clone_checks(&client, "authed", &s);
    let reqs = host.requests();
    assert!(
        reqs.iter()
            .all(|r| r.status == 200 && r.authorization.as_deref() == Some(secret)),
        "{reqs:#?}"
    );
}

/// The real `go` in direct mode, through the host as an HTTP proxy. The environment that works
/// (Go 1.23.5, git 2.47), on top of the sealed [`GoEnv`] (own HOME, GOPATH, caches,
/// `GOSUMDB=off`, `GOFLAGS=-mod=mod`, `GOTOOLCHAIN=local`), found by dropping one variable at
/// a time:
///
/// - `GOPROXY=direct` and `GOINSECURE=git.corp.example` — required: without it `go` tries
///   only `https://` and fails at once; with it, the `?go-get=1` page and the `http://`
///   repository URL in its meta tag are both accepted.
/// - `http_proxy=<proxy_url>` (lower case) — required: `git` (libcurl) honours only the lower
///   case name, and `go` itself reads `HTTP_PROXY` and falls back to `http_proxy`, so this one
///   variable serves both. `HTTP_PROXY` is set as well, for clarity.
/// - `HTTPS_PROXY=<proxy_url>` — optional: `go` first tries
///   `https://git.corp.example/group/repo?go-get=1`, which becomes a `CONNECT` answered `502`
///   at once; without it that attempt is a DNS lookup of the fake name (fails quickly offline,
///   but a resolver could be slow or answer for it).
/// - `GOPRIVATE` / `GONOSUMDB=git.corp.example` — what a real setup has; with `GoEnv`'s
///   `GOSUMDB=off` they change nothing here. `NO_PROXY` / `no_proxy` must not name the host.
/// - `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null` — keep the machine's git
///   configuration out of the `git` that `go` runs (not needed for success).
///
/// What the host then sees: `CONNECT git.corp.example:443` (502), `GET
/// http://git.corp.example/group/repo?go-get=1`, then protocol-v2 `info/refs` and
/// `git-upload-pack` requests in absolute form. About 0.1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_mod_download_direct_through_the_proxy() {
    if modgate_testkit::require_go().is_none() {
        return;
    }
    let host = GitHost::start(&[HOST]).await.expect("start");
    let s = sample(&host);
    let proxy = host.proxy_url();
    let mut env = GoEnv::new("direct");
    env.set("GOPRIVATE", HOST)
        .set("GONOSUMDB", HOST)
        .set("GOINSECURE", HOST)
        .set("GOFLAGS", "-mod=mod")
        .set("HTTP_PROXY", &proxy)
        .set("http_proxy", &proxy)
        .set("HTTPS_PROXY", &proxy)
        .set("GIT_CONFIG_NOSYSTEM", "1")
        .set("GIT_CONFIG_GLOBAL", "/dev/null");
    env.write_main_module(&[]);
    let run = env.go(&[
        "mod",
        "download",
        "-json",
        &format!("{HOST}/group/repo@v1.0.0"),
    ]);
    run.expect_ok("go mod download");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout()).expect("json");
    assert!(doc.get("Error").is_none(), "{doc}");
    assert_eq!(doc["Path"], format!("{HOST}/group/repo"));
    assert_eq!(doc["Version"], "v1.0.0");
    let sum = doc["Sum"].as_str().unwrap_or_default();
    assert!(sum.starts_with("h1:"), "{doc}");
    assert_eq!(doc["Origin"]["Hash"], s.v100.as_str(), "{doc}");

    let reqs = host.requests();
    assert_eq!(
        reqs.first()
            .map(|r| (r.method.as_str(), r.target.as_str(), r.status)),
        Some(("CONNECT", "git.corp.example:443", 502)),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter().any(|r| r.method == "GET"
            && r.target == format!("http://{HOST}/group/repo?go-get=1")
            && r.status == 200),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter().any(|r| r.method == "POST"
            && r.target == format!("http://{HOST}/group/repo.git/git-upload-pack")
            && r.status == 200),
        "{reqs:#?}"
    );
}
