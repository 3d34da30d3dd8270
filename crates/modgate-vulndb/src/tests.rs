//! Loading whole databases built here in the v1 layout (directory, gzip-only, zip at the root and
//! under a folder), with every trap of the format, and the lookups and served files they give.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::source::{gunzip, gzip};

/// A database as files: relative path → bytes.
#[derive(Clone)]
struct Files(BTreeMap<String, Vec<u8>>);

impl Files {
    /// The v1 layout of `entries` (`.json` only), with a consistent index.
    fn of(entries: &[Value]) -> Files {
        let mut files = BTreeMap::new();
        let mut vulns = Vec::new();
        let mut modules: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for e in entries {
            let id = e["id"].as_str().unwrap().to_owned();
            vulns.push(json!({"id": id, "modified": e["modified"], "aliases": e["aliases"]}));
            for a in e["affected"].as_array().unwrap() {
                let path = a["package"]["name"].as_str().unwrap().to_owned();
                modules
                    .entry(path)
                    .or_default()
                    .push(json!({"id": id, "modified": e["modified"]}));
            }
            files.insert(format!("ID/{id}.json"), serde_json::to_vec(e).unwrap());
        }
        let modules: Vec<Value> = modules
            .into_iter()
            .map(|(path, vulns)| json!({"path": path, "vulns": vulns}))
            .collect();
        files.insert(
            "index/db.json".into(),
            br#"{"modified":"2024-05-06T07:08:09Z"}"#.to_vec(),
        );
        files.insert(
            "index/vulns.json".into(),
            serde_json::to_vec(&vulns).unwrap(),
        );
        files.insert(
            "index/modules.json".into(),
            serde_json::to_vec(&modules).unwrap(),
        );
        Files(files)
    }

    /// Every `.json` replaced by its `.json.gz` only.
    fn gz_only(&self) -> Files {
        Files(
            self.0
                .iter()
                .map(|(k, v)| (format!("{k}.gz"), gzip(v)))
                .collect(),
        )
    }

    fn write_dir(&self, dir: &Path) {
        for (rel, bytes) in &self.0 {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    }

    fn write_zip(&self, path: &Path, folder: &str) {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (rel, bytes) in &self.0 {
            w.start_file(format!("{folder}{rel}"), opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
    }

    fn set(&mut self, rel: &str, bytes: &[u8]) -> &mut Self {
        self.0.insert(rel.to_owned(), bytes.to_vec());
        self
    }
}

fn entry(id: &str, affected: Value) -> Value {
    json!({
        "schema_version": "1.3.1",
        "id": id,
        "modified": "2024-05-06T07:08:09Z",
        "published": "2024-01-01T00:00:00Z",
        "aliases": [format!("CVE-{id}"), format!("GHSA-{id}")],
        "summary": format!("Summary of {id}"),
        "details": "Details.",
        "affected": affected,
        "references": [{"type": "FIX", "url": "https://example.com/fix"}],
        "database_specific": {"url": format!("https://pkg.go.dev/vuln/{id}")}
    })
}

fn semver(events: Value) -> Value {
    json!([{"type": "SEMVER", "events": events}])
}

fn module(path: &str, ranges: Value, imports: Value) -> Value {
    json!({"package": {"name": path, "ecosystem": "Go"}, "ranges": ranges,
           "ecosystem_specific": {"imports": imports}})
}

/// Every trap of the format in one database.
fn trap_entries() -> Vec<Value> {
    let mut withdrawn = entry(
        "GO-2024-0002",
        json!([module(
            "example.com/m",
            semver(json!([{"introduced": "0"}])),
            json!([])
        )]),
    );
    withdrawn["withdrawn"] = json!("2024-02-01T00:00:00Z");
    let mut ghsa = entry(
        "GHSA-2024-0006",
        json!([{"package": {"name": "example.com/sev", "ecosystem": "Go"}}]),
    );
    ghsa["severity"] =
        json!([{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]);
    ghsa["database_specific"] = json!({"severity": "CRITICAL"});
    vec![
        // Several events in one range and several ranges; no `v` prefix; introduced "0";
        // package-level imports.
        entry(
            "GO-2024-0001",
            json!([module(
                "example.com/m",
                json!([
                    {"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.3"},
                                                  {"introduced": "1.5.0"}, {"fixed": "1.5.2"}]},
                    {"type": "SEMVER", "events": [{"introduced": "1.8.0"}]},
                    {"type": "GIT", "repo": "https://example.com/m", "events": [{"introduced": "abc123"}]}
                ]),
                json!([{"path": "example.com/m/sub", "symbols": ["F", "T.M"], "goos": ["windows"]}])
            )]),
        ),
        withdrawn,
        // The pseudo-modules, and a module fixed at a pseudo-version.
        entry(
            "GO-2024-0003",
            json!([
                module(
                    "stdlib",
                    semver(json!([{"introduced": "0"}, {"fixed": "1.21.5"}])),
                    json!([{"path": "net/http"}])
                ),
                module(
                    "toolchain",
                    semver(json!([{"introduced": "0"}])),
                    json!([{"path": "cmd/go"}])
                ),
                module(
                    "example.com/other",
                    semver(
                        json!([{"introduced": "0"}, {"fixed": "0.0.0-20200124225646-8b5121be2f68"}])
                    ),
                    json!([])
                )
            ]),
        ),
        // +incompatible.
        entry(
            "GO-2024-0004",
            json!([module(
                "github.com/docker/docker",
                semver(json!([{"introduced": "0"}, {"fixed": "20.10.11+incompatible"}])),
                json!([{"path": "github.com/docker/docker/daemon"}])
            )]),
        ),
        // Two blocks for one module with different packages and ranges (unsorted events).
        entry(
            "GO-2024-0005",
            json!([
                module(
                    "example.com/m",
                    semver(json!([{"fixed": "1.1.0"}, {"introduced": "1.0.0"}])),
                    json!([{"path": "example.com/m/a"}])
                ),
                module(
                    "example.com/m",
                    semver(json!([{"introduced": "1.0.5"}, {"fixed": "1.0.9"}])),
                    json!([{"path": "example.com/m/b"}])
                )
            ]),
        ),
        ghsa,
        // A different major version is a different module.
        entry(
            "GO-2024-0007",
            json!([module(
                "example.com/m/v2",
                semver(json!([{"introduced": "2.0.0"}, {"fixed": "2.1.0"}])),
                json!([])
            )]),
        ),
    ]
}

fn ids(db: &VulnDb, m: &str, v: &str) -> Vec<String> {
    db.affecting(m, v)
        .unwrap()
        .iter()
        .map(|f| f.advisory.id.clone())
        .collect()
}

fn load_dir(files: &Files) -> (tempfile::TempDir, Result<VulnDb, VulnDbError>) {
    let dir = tempfile::tempdir().unwrap();
    files.write_dir(dir.path());
    let db = VulnDb::load(dir.path());
    (dir, db)
}

fn check_traps(db: &VulnDb) {
    assert_eq!(db.modified().unix_seconds, 1_714_979_289);
    assert_eq!(db.modified().text, "2024-05-06T07:08:09Z");
    assert_eq!(db.advisories().len(), 7);

    // Ranges, several events, no `v` prefix, introduced "0", [introduced, fixed).
    for (v, want) in [
        ("v0.1.0", vec!["GO-2024-0001"]),
        ("v1.0.0", vec!["GO-2024-0001", "GO-2024-0005"]),
        ("v1.2.2", vec!["GO-2024-0001"]),
        ("v1.2.3", vec![]),
        ("v1.4.9", vec![]),
        ("v1.5.0", vec!["GO-2024-0001"]),
        ("v1.5.2", vec![]),
        ("v1.7.99", vec![]),
        ("v1.8.0", vec!["GO-2024-0001"]),
        ("v1.80.0", vec!["GO-2024-0001"]),
        // Pseudo-versions: v1.2.3-0.… follows v1.2.2 and precedes the fix; v1.2.4-0.… follows it.
        ("v1.2.3-0.20240101000000-abcdefabcdef", vec!["GO-2024-0001"]),
        ("v1.2.4-0.20240101000000-abcdefabcdef", vec![]),
    ] {
        assert_eq!(ids(db, "example.com/m", v), want, "example.com/m@{v}");
    }
    // The withdrawn advisory (every version of example.com/m) never shows up.
    assert!(db.advisory("GO-2024-0002").unwrap().withdrawn.is_some());
    assert!(ids(db, "example.com/m", "v1.3.0").is_empty());

    // A finding carries what a denial names.
    let found = db.affecting("example.com/m", "v1.5.1").unwrap();
    let f = &found[0];
    assert_eq!(
        f.advisory.aliases,
        ["CVE-GO-2024-0001", "GHSA-GO-2024-0001"]
    );
    assert_eq!(
        f.advisory.summary.as_deref(),
        Some("Summary of GO-2024-0001")
    );
    assert_eq!(f.interval.to_string(), "[v1.5.0, v1.5.2)");
    // Imports are shown (with their symbols and platforms) but do not narrow the decision.
    assert_eq!(f.imports.len(), 1);
    assert_eq!(f.imports[0].path, "example.com/m/sub");
    assert_eq!(f.imports[0].symbols, ["F", "T.M"]);
    assert_eq!(f.imports[0].goos, ["windows"]);

    // Two matching blocks of one advisory: one finding, the packages of both.
    let found = db.affecting("example.com/m", "v1.0.6").unwrap();
    let f5 = found
        .iter()
        .find(|f| f.advisory.id == "GO-2024-0005")
        .unwrap();
    let paths: Vec<&str> = f5.imports.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["example.com/m/a", "example.com/m/b"]);
    assert_eq!(f5.interval.to_string(), "[v1.0.0, v1.1.0)");
    let found = db.affecting("example.com/m", "v1.0.2").unwrap();
    let f5 = found
        .iter()
        .find(|f| f.advisory.id == "GO-2024-0005")
        .unwrap();
    assert_eq!(f5.imports.len(), 1, "only the matching block's packages");

    // stdlib / toolchain are never module paths.
    assert!(ids(db, "stdlib", "v1.21.0").is_empty());
    assert!(ids(db, "toolchain", "v1.21.0").is_empty());
    // Pseudo-version fix.
    assert_eq!(
        ids(
            db,
            "example.com/other",
            "v0.0.0-20191109021931-daa7c04131f5"
        ),
        ["GO-2024-0003"]
    );
    assert!(ids(
        db,
        "example.com/other",
        "v0.0.0-20200124225646-8b5121be2f68"
    )
    .is_empty());
    assert!(ids(db, "example.com/other", "v0.1.0").is_empty());
    // +incompatible.
    assert_eq!(
        ids(db, "github.com/docker/docker", "v20.10.10+incompatible"),
        ["GO-2024-0004"]
    );
    assert!(ids(db, "github.com/docker/docker", "v20.10.11+incompatible").is_empty());
    // No ranges: every version; severity when present.
    let found = db.affecting("example.com/sev", "v9.9.9").unwrap();
    assert_eq!(found[0].advisory.id, "GHSA-2024-0006");
    assert_eq!(found[0].advisory.severity[0].kind, "CVSS_V3");
    assert_eq!(
        found[0].advisory.severity_label.as_deref(),
        Some("CRITICAL")
    );
    assert_eq!(found[0].interval, &Interval::all());
    // Major versions are distinct modules; unknown modules have nothing.
    assert_eq!(ids(db, "example.com/m/v2", "v2.0.5"), ["GO-2024-0007"]);
    assert!(ids(db, "example.com/m/v2", "v1.0.0").is_empty());
    assert!(ids(db, "example.com/M", "v1.0.0").is_empty());
    assert!(ids(db, "example.com/nothing", "v1.0.0").is_empty());
    // A query is not a version.
    assert_eq!(
        db.affecting("example.com/m", "master")
            .unwrap_err()
            .to_string(),
        "\"master\" is not a semantic version; resolve the query to a version first"
    );
    assert!(
        db.affecting("example.com/m", "1.0.0").is_err(),
        "Go versions carry their v"
    );
}

/// The served files: both forms of every layout file, the gzip holding the same JSON.
fn check_served(db: &VulnDb, source: &Files) {
    let served: Vec<&str> = db.files().map(|(k, _)| k).collect();
    let mut want: Vec<String> = source
        .0
        .keys()
        .map(|k| k.trim_end_matches(".gz").to_owned())
        .flat_map(|k| [k.clone(), format!("{k}.gz")])
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(served, want);
    for (rel, bytes) in db.files() {
        if let Some(json_rel) = rel.strip_suffix(".gz") {
            let json = db.file(json_rel).unwrap();
            assert_eq!(
                &gunzip(bytes, 1 << 30, rel).unwrap()[..],
                &json[..],
                "{rel}"
            );
            assert_eq!(content_type(rel), "application/gzip");
        } else {
            assert_eq!(content_type(rel), "application/json");
            let orig =
                source.0.get(rel).cloned().unwrap_or_else(|| {
                    gunzip(&source.0[&format!("{rel}.gz")], 1 << 30, rel).unwrap()
                });
            assert_eq!(&bytes[..], &orig[..], "{rel} served as found");
        }
    }
    assert!(db.file("ID/GO-2024-0001.json.gz").is_some());
    assert!(db.file("../index/db.json").is_none());
    assert!(db.file("/index/db.json").is_none());
}

#[test]
fn a_directory_with_every_trap() {
    let files = Files::of(&trap_entries());
    let (_dir, db) = load_dir(&files);
    let db = db.unwrap();
    check_traps(&db);
    check_served(&db, &files);
}

#[test]
fn gzip_only_and_mixed_layouts() {
    let files = Files::of(&trap_entries());
    let gz = files.gz_only();
    let (_dir, db) = load_dir(&gz);
    let db = db.unwrap();
    check_traps(&db);
    check_served(&db, &gz);
    // The .gz files are served exactly as found.
    for (rel, bytes) in &gz.0 {
        assert_eq!(&db.file(rel).unwrap()[..], &bytes[..], "{rel}");
    }

    // Both forms, one .json.gz stale: the .json counts and the stale gzip is not served.
    let mut mixed = files.clone();
    mixed.0.extend(gz.0.clone());
    mixed.set("ID/GO-2024-0001.json.gz", &gzip(b"{\"id\":\"stale\"}"));
    mixed.set("index/db.json.gz", b"torn");
    let (_dir, db) = load_dir(&mixed);
    let db = db.unwrap();
    check_traps(&db);
    let served = db.file("ID/GO-2024-0001.json.gz").unwrap();
    assert_eq!(
        gunzip(served, 1 << 30, "x").unwrap(),
        files.0["ID/GO-2024-0001.json"]
    );
    let served = db.file("index/db.json.gz").unwrap();
    assert_eq!(
        gunzip(served, 1 << 30, "x").unwrap(),
        files.0["index/db.json"]
    );
    // An intact .json.gz next to its .json is served as found.
    assert_eq!(
        &db.file("ID/GO-2024-0004.json.gz").unwrap()[..],
        &gz.0["ID/GO-2024-0004.json.gz"][..]
    );
}

#[test]
fn zips_at_the_root_and_under_one_folder() {
    let files = Files::of(&trap_entries());
    let dir = tempfile::tempdir().unwrap();
    for (name, folder, layout) in [
        ("root.zip", "", &files),
        ("folder.zip", "vulndb/", &files),
        ("gz.zip", "vuln-2024-05-06/", &files.gz_only()),
    ] {
        let path = dir.path().join(name);
        layout.write_zip(&path, folder);
        let db = VulnDb::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_traps(&db);
        check_served(&db, layout);
    }

    // Two folders that each hold a database: ambiguous, refused.
    let mut two = Files(BTreeMap::new());
    for (k, v) in &files.0 {
        two.0.insert(format!("a/{k}"), v.clone());
        two.0.insert(format!("b/{k}"), v.clone());
    }
    let path = dir.path().join("two.zip");
    two.write_zip(&path, "");
    let e = VulnDb::load(&path).unwrap_err();
    assert!(
        e.to_string()
            .contains("several top-level folders hold a database (a, b)"),
        "{e}"
    );

    // Deeper than one folder, or not there at all: index/db is missing.
    let path = dir.path().join("deep.zip");
    files.write_zip(&path, "x/y/");
    assert_eq!(
        VulnDb::load(&path).unwrap_err().to_string(),
        "index/db.json (or index/db.json.gz) is missing"
    );

    // Not a zip at all.
    let path = dir.path().join("junk.zip");
    std::fs::write(&path, b"PK\x03\x04 not really").unwrap();
    let e = VulnDb::load(&path).unwrap_err();
    assert!(e.to_string().contains("not a readable zip archive"), "{e}");

    // Too many zip entries.
    let path = dir.path().join("many.zip");
    files.write_zip(&path, "");
    let limits = Limits {
        max_zip_entries: 3,
        ..Limits::default()
    };
    let e = VulnDb::load_with(&path, &limits).unwrap_err();
    assert!(e.to_string().ends_with("zip entries: more than 3"), "{e}");
}

#[test]
fn ids_cannot_leave_the_id_directory() {
    let files = Files::of(&trap_entries());
    for bad in ["../index/db", "ID/../../etc/passwd", "a/b", ".hidden", ""] {
        let mut f = files.clone();
        let vulns = json!([{"id": bad, "modified": "2024-05-06T07:08:09Z"}]);
        f.set("index/vulns.json", &serde_json::to_vec(&vulns).unwrap());
        f.set("index/modules.json", b"[]");
        let (_dir, db) = load_dir(&f);
        assert_eq!(
            db.unwrap_err().to_string(),
            format!("index/vulns.json: invalid advisory id {bad:?}")
        );
    }
}

/// A change made to a good database.
type Change = Box<dyn Fn(&mut Files)>;

#[test]
fn inconsistent_or_half_written_databases_are_refused() {
    let files = Files::of(&trap_entries());
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "entry missing",
            Box::new(|f| {
                f.0.remove("ID/GO-2024-0004.json");
            }),
            "ID/GO-2024-0004.json (or ID/GO-2024-0004.json.gz) is missing",
        ),
        (
            "db.json missing",
            Box::new(|f| {
                f.0.remove("index/db.json");
            }),
            "index/db.json (or index/db.json.gz) is missing",
        ),
        (
            "entry truncated",
            Box::new(|f| {
                let b = f.0["ID/GO-2024-0001.json"].clone();
                f.set("ID/GO-2024-0001.json", &b[..b.len() / 2]);
            }),
            "ID/GO-2024-0001.json: invalid JSON: EOF while parsing",
        ),
        (
            "gzip torn",
            Box::new(|f| {
                let gz = gzip(&f.0.remove("index/modules.json").unwrap());
                f.set("index/modules.json.gz", &gz[..gz.len() / 2]);
            }),
            "index/modules.json.gz: not valid gzip",
        ),
        (
            "bad modified",
            Box::new(|f| {
                f.set("index/db.json", br#"{"modified":"May 6th"}"#);
            }),
            "index/db.json: invalid time \"May 6th\" in modified",
        ),
        (
            "entry under another name",
            Box::new(|f| {
                let b = f.0["ID/GO-2024-0001.json"].clone();
                f.set("ID/GO-2024-0004.json", &b);
            }),
            "ID/GO-2024-0004.json: holds advisory \"GO-2024-0001\"",
        ),
        (
            "module index names an unlisted advisory",
            Box::new(|f| {
                f.set(
                    "index/modules.json",
                    br#"[{"path":"example.com/x","vulns":[{"id":"GO-2099-0001"}]}]"#,
                );
            }),
            "index/modules.json lists advisory GO-2099-0001 for example.com/x",
        ),
        (
            "duplicate id",
            Box::new(|f| {
                f.set(
                    "index/vulns.json",
                    br#"[{"id":"GO-2024-0001"},{"id":"GO-2024-0001"}]"#,
                );
            }),
            "index/vulns.json lists advisory GO-2024-0001 twice",
        ),
        (
            "invalid range version",
            Box::new(|f| {
                let e = entry(
                    "GO-2024-0004",
                    json!([module(
                        "m.com/x",
                        semver(json!([{"introduced": "v1.x"}])),
                        json!([])
                    )]),
                );
                f.set("ID/GO-2024-0004.json", &serde_json::to_vec(&e).unwrap());
            }),
            "advisory GO-2024-0004, module m.com/x: invalid version \"v1.x\"",
        ),
        (
            "index not a list",
            Box::new(|f| {
                f.set("index/vulns.json", br#"{"id":"GO-2024-0001"}"#);
            }),
            "index/vulns.json: invalid JSON: invalid type: map, expected a sequence",
        ),
    ];
    for (what, change, want) in cases {
        let mut f = files.clone();
        change(&mut f);
        let (_dir, db) = load_dir(&f);
        let e = db.expect_err(what).to_string();
        assert!(e.starts_with(want), "{what}: {e}");
    }
    // A file of the layout that is a symbolic link (here to a file outside the database).
    let (dir, _) = load_dir(&files);
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, b"not for serving").unwrap();
    let entry = dir.path().join("ID/GO-2024-0004.json");
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&outside, &entry).unwrap();
    let e = VulnDb::load(dir.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read ID/GO-2024-0004.json: is a symbolic link (the database's files must be regular files)"
    );
    // Not there at all.
    let e = VulnDb::load(Path::new("/nonexistent/vulndb")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/vulndb: "),
        "{e}"
    );
}

#[test]
fn sizes_are_bounded() {
    let files = Files::of(&trap_entries());
    let dir = tempfile::tempdir().unwrap();
    files.write_dir(dir.path());
    let largest = files.0.values().map(Vec::len).max().unwrap() as u64;
    let limits = |f: &dyn Fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        l
    };
    // Exactly the largest file is fine; one byte less is refused, naming the file.
    VulnDb::load_with(dir.path(), &limits(&|l| l.max_file_bytes = largest)).unwrap();
    let e =
        VulnDb::load_with(dir.path(), &limits(&|l| l.max_file_bytes = largest - 1)).unwrap_err();
    assert!(
        e.to_string().ends_with(&format!(
            "is larger than the limit of {} bytes",
            largest - 1
        )),
        "{e}"
    );
    let e = VulnDb::load_with(dir.path(), &limits(&|l| l.max_total_bytes = 1000)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the database is larger than the limit of 1000 bytes"
    );
    let e = VulnDb::load_with(dir.path(), &limits(&|l| l.max_advisories = 6)).unwrap_err();
    assert_eq!(e.to_string(), "index/vulns.json: advisories: more than 6");

    // A small .json.gz that decompresses past the limit (a gzip bomb) is refused.
    let mut bomb = files.clone();
    bomb.0.remove("index/modules.json");
    let mut padded = b"[".to_vec();
    padded.extend(std::iter::repeat_n(b' ', 8 << 20));
    padded.extend(b"]");
    bomb.set("index/modules.json.gz", &gzip(&padded));
    let dir = tempfile::tempdir().unwrap();
    bomb.write_dir(dir.path());
    let gz_len = bomb.0["index/modules.json.gz"].len();
    assert!(gz_len < 1 << 20, "{gz_len}");
    let e = VulnDb::load_with(dir.path(), &limits(&|l| l.max_file_bytes = 1 << 20)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "index/modules.json.gz is larger than the limit of 1048576 bytes"
    );
}

/// 5,000 advisories with 200 range events each (a million versions): loads and answers from
/// the module index. The time is printed, not asserted (the suite runs on busy machines).
#[test]
fn a_million_version_database() {
    // Written as text: building a million `serde_json::Value`s would take longer than loading.
    let mut files = Files(BTreeMap::new());
    let mut vulns = Vec::new();
    let mut modules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..5_000 {
        let id = format!("GO-2024-{i:05}");
        let module = format!("example.com/m{}", i % 1000);
        let mut events = String::from(r#"{"introduced":"0"}"#);
        for k in 0..199 {
            let kind = if k % 2 == 0 { "fixed" } else { "introduced" };
            events.push_str(&format!(r#",{{"{kind}":"{}.{}.0"}}"#, i % 7, k + 1));
        }
        let json = format!(
            r#"{{"id":"{id}","modified":"2024-05-06T07:08:09Z","affected":[{{"package":{{"name":"{module}","ecosystem":"Go"}},"ranges":[{{"type":"SEMVER","events":[{events}]}}]}}]}}"#
        );
        files.set(&format!("ID/{id}.json"), json.as_bytes());
        vulns.push(format!(r#"{{"id":"{id}"}}"#));
        modules
            .entry(module)
            .or_default()
            .push(format!(r#"{{"id":"{id}"}}"#));
    }
    let modules: Vec<String> = modules
        .into_iter()
        .map(|(m, v)| format!(r#"{{"path":"{m}","vulns":[{}]}}"#, v.join(",")))
        .collect();
    files.set("index/db.json", br#"{"modified":"2024-05-06T07:08:09Z"}"#);
    files.set(
        "index/vulns.json",
        format!("[{}]", vulns.join(",")).as_bytes(),
    );
    files.set(
        "index/modules.json",
        format!("[{}]", modules.join(",")).as_bytes(),
    );
    let dir = tempfile::tempdir().unwrap();
    files.write_dir(dir.path());
    let start = std::time::Instant::now();
    let db = VulnDb::load(dir.path()).unwrap();
    eprintln!(
        "loaded 5,000 advisories / 1,000,000 events in {:?}",
        start.elapsed()
    );
    assert_eq!(db.advisories().len(), 5_000);
    // example.com/m3 has advisories 3, 1003, 2003, 3003, 4003 (major i % 7).
    // Advisory 3 has events 0, fixed 3.1.0, introduced 3.2.0, fixed 3.3.0, …
    let start = std::time::Instant::now();
    let found = ids(&db, "example.com/m3", "v3.2.5");
    eprintln!("one lookup in {:?}", start.elapsed());
    // Majors: 3→3, 1003→2, 2003→1, 3003→0, 4003→6: v3.2.5 lies in [3.2.0, 3.3.0) of advisory 3;
    // below every event of major 6 (affected from "0" to 6.1.0); above all events of majors < 3
    // (the last event, k = 198, is "fixed", so not affected).
    assert_eq!(found, ["GO-2024-00003", "GO-2024-04003"]);
    assert!(ids(&db, "example.com/m3", "v3.1.5").contains(&"GO-2024-04003".to_owned()));
    assert!(!ids(&db, "example.com/m3", "v3.1.5").contains(&"GO-2024-00003".to_owned()));
}
