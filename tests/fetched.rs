//! End to end for "what each identity fetched", with the real binary and the real `go`:
//! alice runs `go get` of fixture modules through the gateway (basic credentials in GOPROXY,
//! over https), bob `go mod download`s another one and one of alice's (a cache hit); then `modgate fetched --identity alice`
//! lists exactly the versions alice's run downloaded, with the `h1:` hashes `go` computed
//! itself (the go.sum alice's run wrote, and the `Sum` and `GoModSum` of
//! `go mod download -json`), and none of bob's.
//! A HEAD and an `.info` are not fetches. The admin endpoint answers the same to an admin and
//! refuses alice; the CycloneDX output validates against the official CycloneDX 1.6 JSON
//! schema (the validator `make cyclonedx-validator` installs from PyPI), and a broken document
//! does not (the validator can fail).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use modgate_testkit::{
    free_addr, make_certs, metric, modgate, request, require, require_go, FixtureProxy, Gateway,
    GoEnv, ModuleVersion,
};
use sha2::{Digest, Sha256};

const ALICE_PW: &str = "alice-Pa55-3e1f0c7b";
const BOB_PW: &str = "bob-Pa55-a9d2e640";
const ROOT_PW: &str = "root-Pa55-5c8b11f2";

/// (module, version) alice downloads; bob downloads [`BOBS`]; [`HEADED`] is only asked with
/// HEAD and `.info` by alice.
const ALICES: [(&str, &str); 4] = [
    ("example.com/fa", "v1.0.0"),
    ("example.com/fa", "v1.1.0"),
    ("example.com/Fb/util", "v0.2.0"),
    ("example.com/inc", "v2.0.0+incompatible"),
];
const BOBS: (&str, &str) = ("example.com/bobs", "v1.3.0");
const HEADED: (&str, &str) = ("example.com/headed", "v1.0.0");

fn fixtures() -> Vec<ModuleVersion> {
    let mut all: Vec<(&str, &str)> = ALICES.to_vec();
    all.push(BOBS);
    all.push(HEADED);
    all.iter()
        .map(|(m, v)| {
            ModuleVersion::new(m, v)
                .expect("module")
                .file("x.go", format!("package x // {m} {v}\n").as_bytes())
        })
        .collect()
}

struct World {
    upstream: FixtureProxy,
    gateway: Gateway,
    /// The plain listener (admin endpoint, curl-like requests).
    addr: SocketAddr,
    /// The TLS listener `go` uses: it sends credentials over https only.
    tls: SocketAddr,
    config: PathBuf,
    /// The configuration as written (with `@DIR@`), for a reload with changes.
    text: String,
}

async fn world() -> World {
    let upstream = FixtureProxy::start(&fixtures()).await.expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = |pw: &str| bcrypt::hash(pw, 4).expect("bcrypt");
    std::fs::write(
        dir.path().join("users"),
        format!(
            "alice:{}\nbob:{}\nroot:{}\n",
            hash(ALICE_PW),
            hash(BOB_PW),
            hash(ROOT_PW)
        ),
    )
    .expect("users");
    make_certs(dir.path(), "fetched test CA", "client");
    let (addr, tls) = (free_addr(), free_addr());
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{addr}", admin: true, metrics: true }}
  - name: tls
    address: "{tls}"
    tls: {{ cert: server.pem, key: server.key }}
upstreams:
  up: {{ url: "{up}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [up] }}
auth:
  users_file: users
access:
  default: allow
  roles:
    - name: admin
      members: [ {{ user: root }} ]
      rules:
        - {{ id: admin-all, allow: {{ prefix: "" }} }}
cache:
  dir: "@DIR@/cache"
  fsync: false
fetched:
  path: "@DIR@/fetched.sqlite"
  retention: 30d
  max_records: 1000
"#,
        up = upstream.url(),
    );
    let gateway = Gateway::start_in(dir, &config, addr);
    let text = config;
    let config = gateway.dir.path().join("gateway.yaml");
    World {
        upstream,
        gateway,
        addr,
        tls,
        config,
        text,
    }
}

/// A sealed go environment that authenticates to the gateway's TLS listener as `user` (basic
/// credentials in GOPROXY, trusting the test CA).
fn go_as(w: &World, user: &str, password: &str) -> GoEnv {
    let mut env = GoEnv::new(&format!("https://{user}:{password}@{}", w.tls));
    let ca = w.gateway.dir.path().join("ca.pem");
    env.set("SSL_CERT_FILE", &ca.to_string_lossy());
    env.write_main_module(&[]);
    env
}

/// `go get` of each of `targets` in turn in the main module (which writes its go.sum; one
/// version of a module at a time), then what `go mod download -json` reports for them (from
/// the module cache): (module, version) → (Sum, GoModSum).
fn get(env: &GoEnv, targets: &[(&str, &str)]) -> BTreeMap<(String, String), (String, String)> {
    for (m, v) in targets {
        env.go(&["get", &format!("{m}@{v}")]).expect_ok("go get");
    }
    download(env, targets)
}

/// What `go mod download -json` reported: (module, version) → (Sum, GoModSum).
fn download(env: &GoEnv, targets: &[(&str, &str)]) -> BTreeMap<(String, String), (String, String)> {
    let mut args = vec!["mod".to_string(), "download".into(), "-json".into()];
    args.extend(targets.iter().map(|(m, v)| format!("{m}@{v}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = env.go(&args);
    run.expect_ok("go mod download");
    let mut out = BTreeMap::new();
    for v in serde_json::Deserializer::from_str(&run.stdout()).into_iter::<serde_json::Value>() {
        let v = v.expect("go mod download -json output");
        assert!(v.get("Error").is_none(), "{v}");
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {v}"))
                .to_string()
        };
        out.insert((s("Path"), s("Version")), (s("Sum"), s("GoModSum")));
    }
    out
}

fn cli(w: &World, args: &[&str]) -> (i32, String, String) {
    let config = w.config.display().to_string();
    let mut all = vec!["fetched", "-c", config.as_str()];
    all.extend_from_slice(args);
    let out = modgate(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn fetched_json(w: &World, identity: &str) -> serde_json::Value {
    let (code, out, err) = cli(
        w,
        &["--identity", identity, "--since", "1h", "--format", "json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn listed(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    doc["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["module"].as_str().expect("module").to_string(),
                v["version"].as_str().expect("version").to_string(),
            )
        })
        .collect()
}

/// Waits (bounded) until the index lists `n` versions for `identity`: the writer records off
/// the request path.
fn wait_listed(w: &World, identity: &str, n: usize) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        last = fetched_json(w, identity);
        if listed(&last).len() >= n {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the index never listed {n} version(s) for {identity}: {last}\n{}",
        w.gateway.log()
    );
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The CycloneDX validator `make cyclonedx-validator` installs (a Python with
/// cyclonedx-python-lib); missing, the test fails under CI and says how to install it.
fn validator() -> Option<PathBuf> {
    let python = std::env::var_os("MODGATE_CYCLONEDX_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/modgate/cyclonedx-11.12.0/bin/python")
        });
    let works = std::process::Command::new(&python)
        .args(["-c", "import cyclonedx.validation.json"])
        .output()
        .is_ok_and(|o| o.status.success());
    require(
        "cyclonedx-validator",
        works.then_some(python),
        "make cyclonedx-validator",
    )
}

/// Validates a document against the CycloneDX 1.6 JSON schema (strict): `Err(why)` if invalid.
fn validate(python: &Path, doc: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bom.json");
    std::fs::write(&file, doc).expect("write bom");
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys\n\
             from cyclonedx.schema import SchemaVersion\n\
             from cyclonedx.validation.json import JsonStrictValidator\n\
             errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
             print(errors if errors else 'valid')\n\
             sys.exit(1 if errors else 0)\n",
        ])
        .arg(&file)
        .output()
        .expect("run the validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.trim() == "valid" {
        Ok(())
    } else {
        Err(text)
    }
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fetched_lists_what_go_downloaded_with_its_go_sum_hashes_per_identity() {
    if require_go().is_none() {
        return;
    }
    let python = validator();
    let w = world().await;

    let alice = go_as(&w, "alice", ALICE_PW);
    let sums = get(&alice, &ALICES);
    let want: BTreeSet<(String, String)> = ALICES
        .iter()
        .map(|(m, v)| (m.to_string(), v.to_string()))
        .collect();
    assert_eq!(sums.keys().cloned().collect::<BTreeSet<_>>(), want);
    // bob downloads his own module and one of alice's, which the gateway now serves from its
    // cache (a hit, from memory for these small files): a hit is a fetch too.
    let bob = go_as(&w, "bob", BOB_PW);
    let bob_sums = download(&bob, &[BOBS, ALICES[0]]);
    let zip_gets = w
        .upstream
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/example.com/fa/@v/v1.0.0.zip")
        .count();
    assert_eq!(zip_gets, 1, "bob's copy came from the cache");
    // alice only looks at this one: a HEAD of its zip and its .info are not fetches.
    let auth = basic("alice", ALICE_PW);
    for (method, ext) in [("HEAD", "zip"), ("GET", "info")] {
        let path = format!("/{}/@v/{}.{ext}", HEADED.0, HEADED.1);
        let r = request(w.addr, method, &path, &[("Authorization", &auth)]).expect(method);
        assert_eq!(r.status, 200, "{method} {path}");
    }

    // Exactly alice's versions, with go's own hashes (go.sum's `h1:` lines).
    let doc = wait_listed(&w, "alice", ALICES.len());
    assert_eq!(listed(&doc), want, "{doc}");
    for v in doc["versions"].as_array().expect("versions") {
        let key = (
            v["module"].as_str().expect("module").to_string(),
            v["version"].as_str().expect("version").to_string(),
        );
        let (sum, go_mod_sum) = &sums[&key];
        assert_eq!(v["zip"]["hashes"][0]["h1"], sum.as_str(), "{v}");
        assert_eq!(v["mod"]["hashes"][0]["h1"], go_mod_sum.as_str(), "{v}");
        assert_eq!(v["identities"][0], "basic:alice");
    }
    // The go.sum alice's run wrote holds the same lines.
    let go_sum = std::fs::read_to_string(alice.work().join("go.sum")).expect("go.sum written");
    let mut lines = 0;
    for line in go_sum.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [m, v, h1] = f[..] else {
            panic!("go.sum line {line:?}");
        };
        let (v, artifact) = match v.strip_suffix("/go.mod") {
            Some(v) => (v, "mod"),
            None => (v, "zip"),
        };
        let listed = doc["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .find(|x| x["module"] == m && x["version"] == v)
            .unwrap_or_else(|| panic!("{m}@{v} of go.sum not listed: {doc}"));
        assert_eq!(listed[artifact]["hashes"][0]["h1"], h1, "{line}");
        lines += 1;
    }
    assert_eq!(lines, 2 * ALICES.len(), "{go_sum}");
    // bob's own listing has what he fetched, with the same hashes; his is not in alice's.
    let bobs = wait_listed(&w, "bob", 2);
    assert_eq!(
        listed(&bobs),
        bob_sums.keys().cloned().collect::<BTreeSet<_>>(),
        "{bobs}"
    );
    for v in bobs["versions"].as_array().expect("versions") {
        let key = (
            v["module"].as_str().expect("module").to_string(),
            v["version"].as_str().expect("version").to_string(),
        );
        assert_eq!(
            v["zip"]["hashes"][0]["h1"],
            bob_sums[&key].0.as_str(),
            "{v}"
        );
        assert_eq!(
            v["mod"]["hashes"][0]["h1"],
            bob_sums[&key].1.as_str(),
            "{v}"
        );
        assert_eq!(v["identities"][0], "basic:bob");
    }
    // A source that is not alice's lists nothing; the text format names each version.
    assert!(listed(&fetched_json(&w, "token:alice")).is_empty());
    let (code, text, err) = cli(&w, &["--identity", "basic:alice", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    for (m, v) in ALICES {
        let (sum, _) = &sums[&(m.to_string(), v.to_string())];
        assert!(text.contains(&format!("{m}@{v} zip {sum}")), "{text}");
    }
    // Bad input is an error that says why (exit 2).
    let (code, _, err) = cli(&w, &["--identity", "alice", "--since", "yesterday"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a time"), "{err}");

    // The admin endpoint: the same versions for an admin, refused to alice.
    let path = "/admin/fetched?identity=alice&since=1h&format=json";
    let r = request(
        w.addr,
        "GET",
        path,
        &[("Authorization", &basic("root", ROOT_PW))],
    )
    .expect("admin GET");
    assert_eq!(r.status, 200, "{}", r.text());
    let answered: serde_json::Value = serde_json::from_str(&r.text()).expect("json");
    assert_eq!(answered["versions"], doc["versions"]);
    let r = request(w.addr, "GET", path, &[("Authorization", &auth)]).expect("alice GET");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("does not hold the role \"admin\""),
        "{}",
        r.text()
    );
    let r = request(
        w.addr,
        "GET",
        "/admin/fetched?identity=alice&since=nope",
        &[("Authorization", &basic("root", ROOT_PW))],
    )
    .expect("admin GET");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("since"), "{}", r.text());

    // CycloneDX 1.6: one library per version, Go purls, the zip's SHA-256, valid per the
    // official schema; the endpoint's document too.
    let (code, bom, err) = cli(
        &w,
        &[
            "--identity",
            "alice",
            "--since",
            "1h",
            "--format",
            "cyclonedx",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let d: serde_json::Value = serde_json::from_str(&bom).expect("bom json");
    assert_eq!(d["specVersion"], "1.6");
    let components = d["components"].as_array().expect("components");
    assert_eq!(components.len(), ALICES.len());
    let zips: BTreeMap<(String, String), String> = fixtures()
        .iter()
        .map(|m| {
            (
                (m.path.clone(), m.version.clone()),
                sha256_hex(&m.zip().expect("zip")),
            )
        })
        .collect();
    for c in components {
        let key = (
            c["name"].as_str().expect("name").to_string(),
            c["version"].as_str().expect("version").to_string(),
        );
        assert_eq!(c["type"], "library");
        assert_eq!(c["hashes"][0]["alg"], "SHA-256");
        assert_eq!(c["hashes"][0]["content"], zips[&key].as_str(), "{c}");
        assert_eq!(
            c["purl"],
            format!(
                "pkg:golang/{}@{}",
                key.0.to_ascii_lowercase(),
                key.1.replace('+', "%2B")
            )
        );
    }
    if let Some(python) = &python {
        validate(python, &bom).unwrap_or_else(|e| panic!("invalid CycloneDX: {e}\n{bom}"));
        let r = request(
            w.addr,
            "GET",
            "/admin/fetched?identity=alice&since=1h&format=cyclonedx",
            &[("Authorization", &basic("root", ROOT_PW))],
        )
        .expect("admin GET");
        assert_eq!(r.status, 200);
        validate(python, &r.text()).unwrap_or_else(|e| panic!("invalid CycloneDX: {e}"));
        // The validator does refuse what is not CycloneDX 1.6.
        let mut broken = d.clone();
        broken["components"][0]["type"] = "not-a-type".into();
        assert!(validate(python, &broken.to_string()).is_err());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_records_changed_by_a_reload_bounds_the_index_at_once() {
    let w = world().await;
    let auth = basic("alice", ALICE_PW);
    let zip = |(m, v): (&str, &str)| {
        let escaped = modgate_protocol::escape_path(m).expect("module path");
        let path = format!("/{escaped}/@v/{v}.zip");
        let r = request(w.addr, "GET", &path, &[("Authorization", &auth)]).expect("GET zip");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    };
    zip(ALICES[0]);
    wait_listed(&w, "alice", 1);

    w.gateway
        .write_config(&w.text.replace("max_records: 1000", "max_records: 2"));
    let out = w.gateway.reload();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("fetched: retention or max_records changed"),
        "{said}"
    );

    for m in &ALICES[1..] {
        zip(*m);
    }
    // The last one fetched is recorded, and only the newest two records are kept.
    let last = ALICES[ALICES.len() - 1];
    let mut doc = serde_json::Value::Null;
    for _ in 0..200 {
        doc = fetched_json(&w, "alice");
        if listed(&doc).contains(&(last.0.to_string(), last.1.to_string())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let want: BTreeSet<(String, String)> = ALICES[ALICES.len() - 2..]
        .iter()
        .map(|(m, v)| (m.to_string(), v.to_string()))
        .collect();
    assert_eq!(listed(&doc), want, "{doc}");
    assert!(
        metric(w.addr, "modgate_fetched_records_total{outcome=\"pruned\"}") >= 2.0,
        "{}",
        w.gateway.log()
    );
    assert_eq!(
        metric(w.addr, "modgate_fetched_records_total{outcome=\"written\"}"),
        ALICES.len() as f64
    );
    assert_eq!(
        metric(w.addr, "modgate_fetched_records_total{outcome=\"lost\"}"),
        0.0
    );
}
