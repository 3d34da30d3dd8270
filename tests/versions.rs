//! Which versions anyone may build with (issue 20), against the real binary and the real `go`:
//! an offline Go vulnerability database in the v1 layout, written by the test with the format's
//! traps (versions without `v`, `introduced: "0"`, a withdrawn advisory), decides exact
//! versions — denied with the advisory named (`go` prints it), allowed and audited "would deny"
//! in report mode, exempt for a role, waived until a waiver expires — and is served again at
//! `/vulndb/`. A reload with a new database applies at once; a corrupt one is refused and the
//! previous one stays in force.

use std::net::SocketAddr;

use modgate_testkit::vulndb::{write_vulndb, Advisory};
use modgate_testkit::{
    free_addr, metric, request, require_go, FixtureProxy, Gateway, GoEnv, ModuleVersion,
};

const M: &str = "example.com/vuln";
const OTHER: &str = "example.com/other";
const ALICE_TOKEN: &str = "alice-token-0123456789";
const SEC_TOKEN: &str = "sec-token-0123456789";

fn token_line(name: &str, token: &str) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{name}:sha256:{hex}\n")
}

fn config(addr: SocketAddr, upstream: &str, waiver: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", metrics: true }}
upstreams:
  public: {{ url: "{upstream}" }}
routes:
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
auth:
  tokens_file: tokens
access:
  default: allow
  roles:
    - {{ name: devs, members: [ {{ token: alice }} ], rules: [] }}
    - {{ name: security, members: [ {{ token: sec }} ], rules: [] }}
versions:
  vulnerabilities:
    db: vulndb
    roles: {{ security: off }}
    waivers: [ {waiver} ]
audit: {{ output: audit.jsonl }}
"#
    )
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    let r = request(addr, "GET", path, &headers).expect("request");
    (r.status, r.text())
}

fn audit_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    std::fs::read_to_string(gw.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for an audit record of `path` answered with `status` (records are written in the
/// background), and returns the latest such.
fn audit_of(gw: &Gateway, path: &str, status: u16) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(r) = audit_lines(gw)
            .into_iter()
            .rev()
            .find(|r| r["path"] == path && r["status"] == status)
        {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit record of {path}:\n{}",
            gw.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn affected_versions_are_denied_reported_exempted_and_waived_and_the_db_reloads() {
    let modules: Vec<ModuleVersion> = ["v1.0.0", "v1.1.0", "v1.2.0"]
        .iter()
        .map(|v| ModuleVersion::new(M, v).expect("module"))
        .chain(
            ["v0.1.0"]
                .iter()
                .map(|v| ModuleVersion::new(OTHER, v).expect("module")),
        )
        .collect();
    let upstream = FixtureProxy::start(&modules).await.expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tokens"),
        token_line("alice", ALICE_TOKEN) + &token_line("sec", SEC_TOKEN),
    )
    .expect("tokens");
    // v1.0.x is affected (fixed in 1.1.0, written without `v`); every version of OTHER is
    // affected by an advisory that was withdrawn; v1.2.0 by one that a waiver covers for devs.
    let db = dir.path().join("vulndb");
    write_vulndb(
        &db,
        "2024-05-06T07:08:09Z",
        &[
            Advisory::new("GO-2024-0001", M, "0", Some("1.1.0")),
            Advisory::new("GO-2024-0002", OTHER, "0", None).withdrawn("2024-03-01T00:00:00Z"),
            Advisory::new("GO-2024-0003", M, "1.2.0", None),
        ],
    )
    .expect("vulndb");
    let addr = free_addr();
    let waiver = "{ advisory: GO-2024-0003, modules: [example.com/vuln], roles: [devs], \
                  reason: \"INC-7: not reachable\", expires: 2999-01-01 }";
    let gw = Gateway::start_in(dir, &config(addr, &upstream.url(), waiver), addr);

    // Denied with the advisory, for every exact artifact; the upstream never asked.
    for file in ["v1.0.0.zip", "v1.0.0.mod", "v1.0.0.info"] {
        let (status, text) = get(addr, &format!("/{M}/@v/{file}"), Some(ALICE_TOKEN));
        assert_eq!(status, 403, "{file}: {text}\n{}", gw.log());
        assert!(
            text.contains("example.com/vuln@v1.0.0 is affected by GO-2024-0001 (CVE-2024-0001)")
                && text.contains("fixed in v1.1.0"),
            "{file}: {text}"
        );
    }
    assert!(
        !upstream
            .requests()
            .iter()
            .any(|r| r.path.contains("v1.0.0")),
        "{:?}",
        upstream.requests()
    );
    let record = audit_of(&gw, &format!("/{M}/@v/v1.0.0.info"), 403);
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(record["rule"], "versions.vulnerabilities", "{record}");
    assert_eq!(
        record["advisories"],
        serde_json::json!(["GO-2024-0001"]),
        "{record}"
    );
    // The fixed version and a withdrawn advisory pass.
    for path in [
        format!("/{M}/@v/v1.1.0.zip"),
        format!("/{OTHER}/@v/v0.1.0.zip"),
    ] {
        let (status, text) = get(addr, &path, Some(ALICE_TOKEN));
        assert_eq!(status, 200, "{path}: {text}\n{}", gw.log());
    }
    // The list leaves out what this identity may not build with (v1.0.0; v1.2.0 is waived for
    // devs); anonymous clients hold no waiver; the exempt role sees everything.
    let (status, text) = get(addr, &format!("/{M}/@v/list"), Some(ALICE_TOKEN));
    assert_eq!(
        (status, text.as_str()),
        (200, "v1.1.0\nv1.2.0\n"),
        "{}",
        gw.log()
    );
    let record = audit_of(&gw, &format!("/{M}/@v/list"), 200);
    assert_eq!(
        record["withheld"],
        serde_json::json!(["v1.0.0 (GO-2024-0001)"]),
        "{record}"
    );
    let (status, text) = get(addr, &format!("/{M}/@v/list"), None);
    assert_eq!((status, text.as_str()), (200, "v1.1.0\n"));
    let (_, text) = get(addr, &format!("/{M}/@v/list"), Some(SEC_TOKEN));
    let mut all: Vec<&str> = text.lines().collect();
    all.sort();
    assert_eq!(all, ["v1.0.0", "v1.1.0", "v1.2.0"]);
    // @latest names v1.2.0 upstream: refused for anonymous clients, who get the newest version
    // they may build with instead.
    let (status, text) = get(addr, &format!("/{M}/@latest"), None);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"Version\":\"v1.1.0\""), "{text}");
    let (_, text) = get(addr, &format!("/{M}/@latest"), Some(ALICE_TOKEN));
    assert!(text.contains("\"Version\":\"v1.2.0\""), "{text}");
    // A withdrawn advisory withholds nothing.
    let (status, text) = get(addr, &format!("/{OTHER}/@v/list"), None);
    assert_eq!((status, text.as_str()), (200, "v0.1.0\n"));
    // The security role is exempt (off), and audited as allowed without advisories.
    let (status, _) = get(addr, &format!("/{M}/@v/v1.0.0.mod"), Some(SEC_TOKEN));
    assert_eq!(status, 200);
    // The waiver covers devs for GO-2024-0003, not anonymous clients.
    let (status, text) = get(addr, &format!("/{M}/@v/v1.2.0.mod"), Some(ALICE_TOKEN));
    assert_eq!(status, 200, "{text}");
    let record = audit_of(&gw, &format!("/{M}/@v/v1.2.0.mod"), 200);
    assert_eq!(
        record["waived"],
        serde_json::json!(["GO-2024-0003: INC-7: not reachable (until 2999-01-01)"]),
        "{record}"
    );
    let (status, text) = get(addr, &format!("/{M}/@v/v1.2.0.mod"), None);
    assert_eq!(status, 403, "{text}");
    assert!(
        text.contains("GO-2024-0003") && text.contains("no fixed version"),
        "{text}"
    );

    // The database is served again in its layout.
    let (status, text) = get(addr, "/vulndb/index/db.json", None);
    assert_eq!(status, 200);
    assert_eq!(text, r#"{"modified":"2024-05-06T07:08:09Z"}"#);
    let (status, _) = get(addr, "/vulndb/ID/GO-2024-0001.json.gz", None);
    assert_eq!(status, 200);
    let (status, _) = get(addr, "/vulndb/ID/../../tokens", None);
    assert_eq!(status, 404);

    // The real go command prints the reason.
    if require_go().is_some() {
        let env = GoEnv::new(&format!("http://{addr}"));
        env.write_main_module(&[]);
        let run = env.go(&["mod", "download", &format!("{M}@v1.0.0")]);
        assert!(!run.ok(), "{}", run.stdout());
        assert!(
            run.stderr().contains("is affected by GO-2024-0001"),
            "{}",
            run.stderr()
        );
        let run = env.go(&["mod", "download", &format!("{M}@v1.1.0")]);
        run.expect_ok("go mod download v1.1.0");
        // `@latest` resolves to the newest version this client may build with.
        let run = env.go(&["list", "-m", "-json", &format!("{M}@latest")]);
        run.expect_ok("go list -m @latest");
        let latest: serde_json::Value = serde_json::from_str(&run.stdout()).expect("json");
        assert_eq!(latest["Version"], "v1.1.0", "{latest}");
    }

    // Report mode, by reload: allowed, audited "would deny".
    gw.write_config(
        &config(addr, &upstream.url(), waiver).replace("roles: { security: off }", "mode: report"),
    );
    let out = gw.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, text) = get(addr, &format!("/{M}/@v/v1.0.0.info"), Some(ALICE_TOKEN));
    assert_eq!(status, 200, "{text}\n{}", gw.log());
    let record = audit_of(&gw, &format!("/{M}/@v/v1.0.0.info"), 200);
    assert_eq!(record["decision"], "allow", "{record}");
    assert!(
        record["would_deny"]
            .as_str()
            .is_some_and(|r| r.contains("GO-2024-0001")),
        "{record}"
    );

    // A new database applies at reload without a restart: v1.1.0 is now affected too; the
    // metric says which database is in force.
    let modified = || metric(addr, "modgate_vulndb_modified_timestamp_seconds");
    assert_eq!(modified(), 1_714_979_289.0, "2024-05-06T07:08:09Z");
    gw.write_config(&config(addr, &upstream.url(), waiver));
    write_vulndb(
        &gw.dir.path().join("vulndb"),
        "2024-06-01T00:00:00Z",
        &[Advisory::new("GO-2024-0009", M, "0", Some("1.2.0"))],
    )
    .expect("vulndb");
    let out = gw.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, text) = get(addr, &format!("/{M}/@v/v1.1.0.info"), Some(ALICE_TOKEN));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("GO-2024-0009"), "{text}");
    assert_eq!(modified(), 1_717_200_000.0, "2024-06-01T00:00:00Z");

    // A corrupt database is refused at reload, with the file named; the previous one stays.
    std::fs::write(
        gw.dir.path().join("vulndb/index/modules.json"),
        b"[{\"path\":",
    )
    .expect("cut");
    let out = gw.reload();
    assert!(!out.status.success(), "a corrupt database was accepted");
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &gw.log();
    assert!(said.contains("modules.json"), "{said}");
    let (status, text) = get(addr, &format!("/{M}/@v/v1.1.0.info"), Some(ALICE_TOKEN));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("GO-2024-0009"), "{text}");
    assert_eq!(
        modified(),
        1_717_200_000.0,
        "the previous database stays in force"
    );
}

/// `versions.retractions`: the module's latest `go.mod` retracts a version and a range (with
/// rationale comments). An explicit `go get` of a retracted version is refused with the
/// rationale, which `go` prints; a role in report mode gets it, audited "would deny"; the
/// latest version is served; `go list -m -versions -retracted` still lists every version (the
/// list is not rewritten: `go` hides retracted versions itself).
#[tokio::test(flavor = "multi_thread")]
async fn retracted_versions_follow_the_policy_and_the_list_is_left_to_go() {
    const R: &str = "example.com/retr";
    let versions = ["v1.0.0", "v1.0.1", "v1.0.2", "v1.1.0"];
    let modules: Vec<ModuleVersion> = versions
        .iter()
        .map(|v| ModuleVersion::new(R, v).expect("module"))
        .collect();
    let upstream = FixtureProxy::start(&modules).await.expect("fixture");
    upstream.set_file(
        &format!("/{R}/@v/v1.1.0.mod"),
        format!(
            "module {R}\n\ngo 1.21\n\nretract (\n\t// The build is broken.\n\tv1.0.1\n\t\
             [v1.0.2, v1.0.2] // Leaks credentials to the log.\n)\n"
        )
        .into_bytes(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tokens"),
        token_line("alice", ALICE_TOKEN) + &token_line("sec", SEC_TOKEN),
    )
    .expect("tokens");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}" }}
upstreams:
  public: {{ url: "{up}" }}
routes:
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
auth:
  tokens_file: tokens
access:
  default: allow
  roles:
    - {{ name: security, members: [ {{ token: sec }} ], rules: [] }}
versions:
  retractions:
    mode: enforce
    roles: {{ security: report }}
audit: {{ output: audit.jsonl }}
"#,
        up = upstream.url()
    );
    let gw = Gateway::start_in(dir, &config, addr);

    for (v, why) in [
        ("v1.0.1", "The build is broken."),
        ("v1.0.2", "Leaks credentials to the log."),
    ] {
        let (status, text) = get(addr, &format!("/{R}/@v/{v}.zip"), Some(ALICE_TOKEN));
        assert_eq!(status, 403, "{v}: {text}\n{}", gw.log());
        assert!(
            text.contains(&format!(
                "{R}@{v} is retracted by its module (go.mod of v1.1.0): {why}"
            )),
            "{v}: {text}"
        );
    }
    for v in ["v1.0.0", "v1.1.0"] {
        let (status, text) = get(addr, &format!("/{R}/@v/{v}.zip"), Some(ALICE_TOKEN));
        assert_eq!(status, 200, "{v}: {text}\n{}", gw.log());
    }
    let (status, _) = get(addr, &format!("/{R}/@v/v1.0.1.mod"), Some(SEC_TOKEN));
    assert_eq!(status, 200);
    let record = audit_of(&gw, &format!("/{R}/@v/v1.0.1.mod"), 200);
    assert!(
        record["would_deny"]
            .as_str()
            .is_some_and(|r| r.contains("The build is broken.")),
        "{record}"
    );
    let record = audit_of(&gw, &format!("/{R}/@v/v1.0.1.zip"), 403);
    assert_eq!(record["rule"], "versions.retractions", "{record}");
    // The list and the latest go.mod were read once for all these requests.
    let lists = upstream
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/@v/list"))
        .count();
    assert_eq!(lists, 1, "{:?}", upstream.requests());

    // `modgate explain` asks the chain for the latest go.mod as the gateway does and prints the
    // rationale, with the identity's mode.
    let config_path = gw.config_path.to_str().expect("utf-8 path");
    for (who, v, said) in [
        (
            "alice",
            "v1.0.2",
            "retractions: example.com/retr@v1.0.2 is retracted by its module (go.mod of v1.1.0): \
             Leaks credentials to the log.; mode enforce",
        ),
        (
            "sec",
            "v1.0.1",
            "retractions: example.com/retr@v1.0.1 is retracted by its module (go.mod of v1.1.0): \
             The build is broken.; mode report",
        ),
        (
            "alice",
            "v1.0.0",
            "retractions: example.com/retr@v1.0.0 is not retracted (go.mod of v1.1.0); mode enforce",
        ),
    ] {
        let target = format!("{R}@{v}");
        let out = modgate_testkit::modgate(&[
            "explain",
            "-c",
            config_path,
            &target,
            "--token-name",
            who,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(said),
            "{who} {v}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    if require_go().is_some() {
        let env = GoEnv::new(&format!("http://{addr}"));
        env.write_main_module(&[]);
        let run = env.go(&["list", "-m", "-versions", "-retracted", "-json", R]);
        run.expect_ok("go list -m -versions -retracted");
        let listed: serde_json::Value = serde_json::from_str(&run.stdout()).expect("json");
        assert_eq!(
            listed["Versions"],
            serde_json::json!(["v1.0.0", "v1.0.1", "v1.0.2", "v1.1.0"]),
            "{listed}"
        );
        let run = env.go(&["get", &format!("{R}@v1.0.1")]);
        assert!(!run.ok(), "{}", run.stdout());
        assert!(
            run.stderr().contains("is retracted by its module")
                && run.stderr().contains("The build is broken."),
            "{}",
            run.stderr()
        );
    }
}

/// `versions.cooldown`, dated by the gateway's own sightings (no module index configured): a
/// version seeded with `modgate ledger seed` is old at once; a version the gateway sees for the
/// first time is withheld for the window, whatever its `.info` Time says (back-dated by years
/// here) — refused with the time it becomes available, which `go` prints; a role in report mode
/// gets it, audited "would deny"; an exempt module passes; once the window is shortened by a
/// reload past the first sighting, the version is served.
#[tokio::test(flavor = "multi_thread")]
async fn new_versions_wait_out_the_cooldown_measured_from_the_first_sighting() {
    const C: &str = "example.com/fresh";
    const EXEMPT: &str = "example.com/trusted";
    let modules: Vec<ModuleVersion> = ["v1.0.0", "v1.1.0"]
        .iter()
        .map(|v| ModuleVersion::new(C, v).expect("module"))
        .chain([ModuleVersion::new(EXEMPT, "v0.1.0").expect("module")])
        .collect();
    let upstream = FixtureProxy::start(&modules).await.expect("fixture");
    // The author back-dates v1.1.0 by years: its Time may make it younger, never older.
    upstream.set_file(
        &format!("/{C}/@v/v1.1.0.info"),
        br#"{"Version":"v1.1.0","Time":"2019-01-01T00:00:00Z"}"#.to_vec(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tokens"),
        token_line("alice", ALICE_TOKEN) + &token_line("sec", SEC_TOKEN),
    )
    .expect("tokens");
    std::fs::write(
        dir.path().join("in-use.sum"),
        format!("{C} v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"),
    )
    .expect("go.sum");
    let addr = free_addr();
    let config = |window: &str| {
        format!(
            r#"
listeners:
  - {{ name: plain, address: "{addr}" }}
upstreams:
  public: {{ url: "{up}" }}
routes:
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
auth:
  tokens_file: tokens
access:
  default: allow
  roles:
    - {{ name: security, members: [ {{ token: sec }} ], rules: [] }}
cache:
  dir: "@DIR@/cache"
  fsync: false
versions:
  cooldown:
    window: {window}
    roles: {{ security: report }}
    exempt: [ {EXEMPT} ]
audit: {{ output: audit.jsonl }}
"#,
            up = upstream.url()
        )
    };
    let gw = Gateway::start_in(dir, &config("72h"), addr);
    let seed = modgate_testkit::modgate(&[
        "ledger",
        "seed",
        "-c",
        &gw.config_path.to_string_lossy(),
        "--reason",
        "in use before the cooldown",
        &gw.dir.path().join("in-use.sum").to_string_lossy(),
    ]);
    assert!(
        seed.status.success(),
        "{}",
        String::from_utf8_lossy(&seed.stderr)
    );

    let (status, text) = get(addr, &format!("/{C}/@v/v1.0.0.zip"), Some(ALICE_TOKEN));
    assert_eq!(status, 200, "seeded: {text}\n{}", gw.log());
    for file in ["v1.1.0.zip", "v1.1.0.mod", "v1.1.0.info"] {
        let (status, text) = get(addr, &format!("/{C}/@v/{file}"), Some(ALICE_TOKEN));
        assert_eq!(status, 403, "{file}: {text}\n{}", gw.log());
        assert!(
            text.contains(&format!("{C}@v1.1.0 is in cooldown until ")),
            "{file}: {text}"
        );
    }
    let (status, _) = get(addr, &format!("/{EXEMPT}/@v/v0.1.0.zip"), Some(ALICE_TOKEN));
    assert_eq!(status, 200, "exempt");
    // A version the chain does not have is a 404 from the gateway (never a cached answer).
    let (status, text) = get(addr, &format!("/{C}/@v/v1.9.9.zip"), Some(ALICE_TOKEN));
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("not found upstream"), "{text}");
    let (status, _) = get(addr, &format!("/{C}/@v/v1.1.0.mod"), Some(SEC_TOKEN));
    assert_eq!(status, 200, "report mode");
    let record = audit_of(&gw, &format!("/{C}/@v/v1.1.0.mod"), 200);
    assert!(
        record["would_deny"]
            .as_str()
            .is_some_and(|r| r.contains("in cooldown until")),
        "{record}"
    );
    let record = audit_of(&gw, &format!("/{C}/@v/v1.1.0.zip"), 403);
    assert_eq!(record["rule"], "versions.cooldown", "{record}");
    // The zip was never asked of the upstream while in cooldown.
    assert!(
        !upstream
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/v1.1.0.zip")),
        "{:?}",
        upstream.requests()
    );

    // The list leaves out what is in cooldown, and @latest names the newest version left.
    let (status, text) = get(addr, &format!("/{C}/@v/list"), Some(ALICE_TOKEN));
    assert_eq!((status, text.as_str()), (200, "v1.0.0\n"), "{}", gw.log());
    let record = audit_of(&gw, &format!("/{C}/@v/list"), 200);
    assert!(
        record["withheld"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("v1.1.0 (cooldown until ")),
        "{record}"
    );
    let (_, text) = get(addr, &format!("/{C}/@latest"), Some(ALICE_TOKEN));
    assert!(text.contains("\"Version\":\"v1.0.0\""), "{text}");
    // `modgate explain` reads the same sightings.
    let explained = modgate_testkit::modgate(&[
        "explain",
        "-c",
        &gw.config_path.to_string_lossy(),
        &format!("{C}@v1.1.0"),
        "--token-name",
        "alice",
    ]);
    let said = String::from_utf8_lossy(&explained.stdout).to_string();
    assert!(
        said.contains(&format!("cooldown: {C}@v1.1.0 in cooldown until ")),
        "{said}{}",
        String::from_utf8_lossy(&explained.stderr)
    );
    let explained = modgate_testkit::modgate(&[
        "explain",
        "-c",
        &gw.config_path.to_string_lossy(),
        &format!("{C}@v1.0.0"),
    ]);
    let said = String::from_utf8_lossy(&explained.stdout).to_string();
    assert!(said.contains("old enough (seeded"), "{said}");
    // The role in report mode sees every version.
    let (_, text) = get(addr, &format!("/{C}/@v/list"), Some(SEC_TOKEN));
    assert_eq!(text.lines().count(), 2, "{text}");

    if require_go().is_some() {
        let env = GoEnv::new(&format!("http://{addr}"));
        env.write_main_module(&[]);
        let run = env.go(&["mod", "download", &format!("{C}@v1.1.0")]);
        assert!(!run.ok(), "{}", run.stdout());
        assert!(
            run.stderr().contains("is in cooldown until"),
            "{}",
            run.stderr()
        );
        // `go get m@latest` resolves to the newest version out of cooldown.
        let run = env.go(&["list", "-m", "-json", &format!("{C}@latest")]);
        run.expect_ok("go list -m @latest");
        let latest: serde_json::Value = serde_json::from_str(&run.stdout()).expect("json");
        assert_eq!(latest["Version"], "v1.0.0", "{latest}");
    }

    // A one-second window: v1.1.0 was first seen over a second ago once this passes.
    gw.write_config(&config("1s"));
    let out = gw.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, text) = get(addr, &format!("/{C}/@v/v1.1.0.zip"), Some(ALICE_TOKEN));
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused: {status} {text}\n{}",
            gw.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A module index served by the test as the real one is (`GET /index?since=…&limit=…`, JSON
/// lines `{"Path","Version","Timestamp"}`), live: it keeps listing, every answer ends with a
/// version of another module published at the moment of the request. `listed` is listed too,
/// with its time.
async fn live_index(listed: Vec<(String, String, String)>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            n += 1;
            let listed = listed.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = 0;
                while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") && got < buf.len() {
                    match sock.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got += k,
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let stamp = |unix: u64| {
                    jiff::Timestamp::from_second(i64::try_from(unix).unwrap_or(0))
                        .map_or_else(|_| String::new(), |t| t.to_string())
                };
                let mut body = String::new();
                for (path, version, at) in &listed {
                    body.push_str(&format!(
                        "{{\"Path\":\"{path}\",\"Version\":\"{version}\",\"Timestamp\":\"{at}\"}}\n"
                    ));
                }
                body.push_str(&format!(
                    "{{\"Path\":\"example.com/busy\",\"Version\":\"v0.0.{n}\",\"Timestamp\":\"{}\"}}\n",
                    stamp(now)
                ));
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

/// Cooldown with the module index (issue 20): a version the index listed a minute ago is in
/// cooldown; an old version the gateway never saw and the index never listed (so it was
/// published before the window) is served at once, once the index has been read past the
/// gateway's first sighting of it — no seed needed; a route not in `index_routes` (here the
/// same upstream under another prefix) is dated by the gateway's own sighting only, so there
/// the same kind of version waits.
#[tokio::test(flavor = "multi_thread")]
async fn the_module_index_vouches_for_old_versions_the_gateway_never_saw() {
    const OLD: &str = "example.com/old";
    const NEW: &str = "example.com/new";
    const GIT: &str = "git.example.com/other";
    let modules: Vec<ModuleVersion> = [(OLD, "v1.0.0"), (NEW, "v1.1.0"), (GIT, "v1.0.0")]
        .iter()
        .map(|(m, v)| ModuleVersion::new(m, v).expect("module"))
        .collect();
    let upstream = FixtureProxy::start(&modules).await.expect("fixture");
    let minute_ago = rfc3339_ago(60);
    let index = live_index(vec![(NEW.to_string(), "v1.1.0".to_string(), minute_ago)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", metrics: true }}
upstreams:
  public: {{ url: "{up}" }}
  elsewhere: {{ url: "{up}" }}
  goindex: {{ url: "http://{index}" }}
routes:
  - {{ name: git, match: {{ prefix: git.example.com }}, chain: [elsewhere] }}
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
cache:
  dir: "@DIR@/cache"
  fsync: false
versions:
  cooldown:
    window: 72h
    index: goindex
    index_routes: [public]
    index_settle: 0s
"#,
        up = upstream.url()
    );
    let gw = Gateway::start_in(dir, &config, addr);
    // Listed a minute ago: new.
    let (status, text) = get(addr, &format!("/{NEW}/@v/v1.1.0.zip"), None);
    assert_eq!(status, 403, "{text}\n{}", gw.log());
    assert!(text.contains("is in cooldown until"), "{text}");
    // Never listed, never seen: old once the index is read past its first sighting (the
    // request that sees it first waits a few seconds for that at most; later ones ask for a
    // read and are decided on what is read).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, text) = get(addr, &format!("/{OLD}/@v/v1.0.0.zip"), None);
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old version was never served: {status} {text}\n{}",
            gw.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        metric(addr, "modgate_module_index_read_to_timestamp_seconds") > 0.0,
        "the index's progress is a metric"
    );
    // The same kind of version on a route the index does not describe: new for the window.
    let (status, text) = get(addr, &format!("/{GIT}/@v/v1.0.0.zip"), None);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("is in cooldown until"), "{text}");
}

/// `ago` seconds before now, as RFC 3339 (UTC).
fn rfc3339_ago(ago: i64) -> String {
    let now = jiff::Timestamp::now().as_second();
    jiff::Timestamp::from_second(now - ago).map_or_else(|_| String::new(), |t| t.to_string())
}

/// A burst of requests for a version the gateway has never seen, under cooldown: each needs the
/// version's `.info` (its first sighting) before it is decided, and the upstream answers slowly.
/// The gateway asks once for the whole burst, and every request gets the same decision (issue
/// 20's review: the gateway's own reads were not coalesced; seen failing first with one `.info`
/// per request).
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_that_needs_the_same_upstream_answer_asks_for_it_once() {
    const B: &str = "example.com/burst";
    let upstream = FixtureProxy::start(&[ModuleVersion::new(B, "v1.0.0").expect("module")])
        .await
        .expect("fixture");
    upstream.set_behaviour(
        &format!("/{B}/@v/v1.0.0.info"),
        modgate_testkit::Behaviour::Delay(std::time::Duration::from_secs(1)),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}" }}
upstreams:
  public: {{ url: "{up}" }}
routes:
  - {{ name: public, match: {{ prefix: "" }}, chain: [public] }}
cache:
  dir: cache
  fsync: false
versions:
  cooldown:
    window: 72h
"#,
        up = upstream.url()
    );
    let gw = Gateway::start_in(dir, &config, addr);
    let burst: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                request(addr, "GET", &format!("/{B}/@v/v1.0.0.zip"), &[]).expect("request")
            })
        })
        .collect();
    for t in burst {
        let r = t.join().expect("request thread");
        assert_eq!(r.status, 403, "{}\n{}", r.text(), gw.log());
        assert!(r.text().contains("is in cooldown until"), "{}", r.text());
    }
    let asked = upstream
        .requests()
        .iter()
        .filter(|r| r.path == format!("/{B}/@v/v1.0.0.info"))
        .count();
    assert_eq!(asked, 1, "{:?}", upstream.requests());
}
