//! The JSON of the v1 layout (`index/db.json`, `index/vulns.json`, `index/modules.json`) and of
//! OSV 1.x entries (`ID/<id>.json`), and their checked, ready-to-match form ([`Advisory`]).
//! Field names follow <https://go.dev/security/vuln/database#schema> and golang.org/x/vuln
//! `internal/osv/osv.go` / `internal/client/schema.go`. Unknown fields are ignored; fields the
//! gateway does not use (details, references, credits) are not kept. Pure.

use serde::Deserialize;

use crate::affects::{find, intervals, sort_intervals, Event, Interval};
use crate::error::VulnDbError;
use crate::time::{parse_rfc3339, DbTime};

/// `index/db.json`.
#[derive(Deserialize)]
pub(crate) struct DbMeta {
    pub modified: String,
}

/// One element of `index/vulns.json`.
#[derive(Deserialize)]
pub(crate) struct VulnMeta {
    pub id: String,
}

/// One element of `index/modules.json`.
#[derive(Deserialize)]
pub(crate) struct ModuleMeta {
    pub path: String,
    #[serde(default)]
    pub vulns: Vec<ModuleVuln>,
}

/// One advisory of a module in `index/modules.json`.
#[derive(Deserialize)]
pub(crate) struct ModuleVuln {
    pub id: String,
}

#[derive(Deserialize)]
struct RawEntry {
    id: String,
    #[serde(default)]
    modified: Option<String>,
    #[serde(default)]
    withdrawn: Option<String>,
    #[serde(default)]
    aliases: Option<Vec<String>>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    severity: Option<Vec<RawSeverity>>,
    #[serde(default)]
    affected: Option<Vec<RawAffected>>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawSeverity {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Deserialize)]
struct RawAffected {
    package: RawPackage,
    #[serde(default)]
    ranges: Option<Vec<RawRange>>,
    #[serde(default)]
    ecosystem_specific: Option<RawEcosystemSpecific>,
    #[serde(default)]
    severity: Option<Vec<RawSeverity>>,
}

#[derive(Deserialize)]
struct RawPackage {
    name: String,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    events: Option<Vec<RawEvent>>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(default)]
    introduced: Option<String>,
    #[serde(default)]
    fixed: Option<String>,
    #[serde(default)]
    last_affected: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

#[derive(Deserialize)]
struct RawEcosystemSpecific {
    #[serde(default)]
    imports: Option<Vec<RawImport>>,
}

#[derive(Deserialize)]
struct RawImport {
    path: String,
    #[serde(default)]
    symbols: Option<Vec<String>>,
    #[serde(default)]
    goos: Option<Vec<String>>,
    #[serde(default)]
    goarch: Option<Vec<String>>,
}

/// An OSV severity score (`{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/..."}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Severity {
    /// The scoring system, e.g. `CVSS_V3`, `CVSS_V4`, `Ubuntu`.
    pub kind: String,
    /// The score or vector as given.
    pub score: String,
}

/// A package of the module named by `ecosystem_specific.imports`: for display only (a module
/// version is affected whichever of its packages a build imports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedPackage {
    /// The package import path, e.g. `github.com/beego/beego/v2/server/web`.
    pub path: String,
    /// Affected functions and methods (`Recv.Method`); empty = the whole package.
    pub symbols: Vec<String>,
    /// Operating systems where it applies; empty = all.
    pub goos: Vec<String>,
    /// Architectures where it applies; empty = all.
    pub goarch: Vec<String>,
}

/// One `affected` block: a module and the versions of it that are affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedModule {
    /// The module path (`stdlib` and `toolchain` name Go itself, not modules).
    pub module: String,
    /// Affected intervals, sorted by their start (an empty list never occurs: "no ranges" is
    /// one interval of all).
    pub intervals: Vec<Interval>,
    /// Whether the intervals are disjoint (binary search), as they are within one range.
    disjoint: bool,
    /// `ecosystem_specific.imports`.
    pub imports: Vec<ImportedPackage>,
    /// `affected[].severity`, if given.
    pub severity: Vec<Severity>,
}

impl AffectedModule {
    /// The interval that contains the Go version `v`, if any.
    pub fn interval_containing(&self, v: &str) -> Option<&Interval> {
        find(&self.intervals, self.disjoint, v)
    }
}

/// One advisory, checked and ready to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    /// The ID, e.g. `GO-2022-0475`.
    pub id: String,
    /// Other IDs of the same vulnerability (`CVE-…`, `GHSA-…`).
    pub aliases: Vec<String>,
    /// The one-line summary, if any.
    pub summary: Option<String>,
    /// Top-level `severity` scores, if any (the Go database gives none).
    pub severity: Vec<Severity>,
    /// `database_specific.severity` (e.g. GitHub's `HIGH`), if given as a string.
    pub severity_label: Option<String>,
    /// When it was last modified, if given.
    pub modified: Option<DbTime>,
    /// When it was withdrawn, if it was: a withdrawn advisory never affects anything.
    pub withdrawn: Option<DbTime>,
    /// The affected modules.
    pub affected: Vec<AffectedModule>,
}

fn parse_time(
    file: &str,
    field: &'static str,
    value: Option<String>,
) -> Result<Option<DbTime>, VulnDbError> {
    match value {
        None => Ok(None),
        Some(v) => parse_rfc3339(&v)
            .map(Some)
            .ok_or_else(|| VulnDbError::InvalidTime {
                file: file.to_owned(),
                field,
                value: v,
            }),
    }
}

fn severities(raw: Option<Vec<RawSeverity>>) -> Vec<Severity> {
    raw.unwrap_or_default()
        .into_iter()
        .map(|s| Severity {
            kind: s.kind,
            score: s.score,
        })
        .collect()
}

/// Parses and checks one entry file. `expected_id` is the ID its name says.
pub(crate) fn parse_entry(
    file: &str,
    json: &[u8],
    expected_id: &str,
) -> Result<Advisory, VulnDbError> {
    let raw: RawEntry = serde_json::from_slice(json).map_err(|source| VulnDbError::Json {
        file: file.to_owned(),
        source,
    })?;
    if raw.id != expected_id {
        return Err(VulnDbError::IdMismatch {
            file: file.to_owned(),
            found: raw.id,
        });
    }
    let id = raw.id;
    let mut affected = Vec::new();
    for a in raw.affected.unwrap_or_default() {
        let module = a.package.name;
        let bad_event = || VulnDbError::InvalidEvent {
            id: id.clone(),
            module: module.clone(),
        };
        let mut ivs = Vec::new();
        let mut semver_ranges = 0;
        for r in a.ranges.unwrap_or_default() {
            if r.kind != "SEMVER" {
                continue;
            }
            semver_ranges += 1;
            let mut events = Vec::new();
            for e in r.events.unwrap_or_default() {
                let set = [&e.introduced, &e.fixed, &e.last_affected, &e.limit]
                    .iter()
                    .filter(|f| f.is_some())
                    .count();
                if set != 1 {
                    return Err(bad_event());
                }
                match (e.introduced, e.fixed, e.last_affected) {
                    (Some(v), _, _) => events.push(Event::Introduced(v)),
                    (_, Some(v), _) => events.push(Event::Fixed(v)),
                    (_, _, Some(v)) => events.push(Event::LastAffected(v)),
                    // `limit` (see affects.rs): ignored, as x/vuln does.
                    _ => {}
                }
            }
            ivs.extend(
                intervals(&events).map_err(|version| VulnDbError::InvalidVersion {
                    id: id.clone(),
                    module: module.clone(),
                    version,
                })?,
            );
        }
        if semver_ranges == 0 {
            ivs.push(Interval::all());
        }
        let imports = a
            .ecosystem_specific
            .and_then(|e| e.imports)
            .unwrap_or_default()
            .into_iter()
            .map(|i| ImportedPackage {
                path: i.path,
                symbols: i.symbols.unwrap_or_default(),
                goos: i.goos.unwrap_or_default(),
                goarch: i.goarch.unwrap_or_default(),
            })
            .collect();
        let disjoint = sort_intervals(&mut ivs);
        affected.push(AffectedModule {
            module,
            intervals: ivs,
            disjoint,
            imports,
            severity: severities(a.severity),
        });
    }
    let severity_label = raw
        .database_specific
        .as_ref()
        .and_then(|d| d.get("severity"))
        .and_then(|s| s.as_str())
        .map(str::to_owned);
    Ok(Advisory {
        aliases: raw.aliases.unwrap_or_default(),
        summary: raw.summary.filter(|s| !s.is_empty()),
        severity: severities(raw.severity),
        severity_label,
        modified: parse_time(file, "modified", raw.modified)?,
        withdrawn: parse_time(file, "withdrawn", raw.withdrawn)?,
        affected,
        id,
    })
}

/// Whether `id` can name a file `ID/<id>.json`: 1 to 128 of `A-Z a-z 0-9 - _ .`, not starting
/// with `.` (so never `..`, a separator or a hidden file).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affects::End;

    #[test]
    fn a_go_entry() {
        let json = br#"{"schema_version":"1.3.1","id":"GO-2022-0475","modified":"2023-04-03T15:57:51Z",
          "published":"2022-07-28T17:24:30Z","aliases":["CVE-2020-28366"],"summary":"Code injection in cmd/go",
          "details":"...","affected":[{"package":{"name":"example.com/m","ecosystem":"Go"},
          "ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.14.12"},{"introduced":"1.15.0"},{"fixed":"1.15.5"}]}],
          "ecosystem_specific":{"imports":[{"path":"example.com/m/cgo","symbols":["Builder.cgo"],"goos":["linux"]}]}}],
          "references":[{"type":"FIX","url":"https://go.dev/cl/269658"}],"database_specific":{"url":"https://pkg.go.dev/vuln/GO-2022-0475"}}"#;
        let a = parse_entry("ID/GO-2022-0475.json", json, "GO-2022-0475").unwrap();
        assert_eq!(a.id, "GO-2022-0475");
        assert_eq!(a.aliases, ["CVE-2020-28366"]);
        assert_eq!(a.summary.as_deref(), Some("Code injection in cmd/go"));
        assert_eq!(a.modified.unwrap().unix_seconds, 1_680_537_471);
        assert!(a.withdrawn.is_none());
        assert!(a.severity_label.is_none());
        let m = &a.affected[0];
        assert_eq!(m.module, "example.com/m");
        assert_eq!(m.intervals.len(), 2);
        assert_eq!(m.intervals[1].introduced.as_deref(), Some("v1.15.0"));
        assert_eq!(m.intervals[1].end, Some(End::Fixed("v1.15.5".into())));
        assert_eq!(m.imports[0].path, "example.com/m/cgo");
        assert_eq!(m.imports[0].symbols, ["Builder.cgo"]);
        assert_eq!(m.imports[0].goos, ["linux"]);
    }

    #[test]
    fn severity_withdrawn_and_missing_ranges() {
        let json = br#"{"id":"GHSA-xxxx","withdrawn":"2024-01-01T00:00:00Z",
          "severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
          "database_specific":{"severity":"HIGH"},
          "affected":[{"package":{"name":"example.com/a","ecosystem":"Go"}},
                      {"package":{"name":"example.com/b","ecosystem":"Go"},"ranges":[{"type":"GIT","repo":"x","events":[{"introduced":"abc"}]}]},
                      {"package":{"name":"example.com/c","ecosystem":"Go"},"ranges":[{"type":"SEMVER","events":[]}]}]}"#;
        let a = parse_entry("ID/GHSA-xxxx.json", json, "GHSA-xxxx").unwrap();
        assert_eq!(a.withdrawn.unwrap().text, "2024-01-01T00:00:00Z");
        assert_eq!(a.severity[0].kind, "CVSS_V3");
        assert_eq!(a.severity_label.as_deref(), Some("HIGH"));
        for m in &a.affected {
            assert_eq!(m.intervals, vec![Interval::all()], "{}", m.module);
        }
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        let e = parse_entry("ID/GO-1.json", br#"{"id":"GO-2","affected":[]}"#, "GO-1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "ID/GO-1.json: holds advisory \"GO-2\", not the one its name says"
        );
        let e = parse_entry("ID/GO-1.json", b"{\"id\":\"GO-1\",", "GO-1").unwrap_err();
        assert!(
            e.to_string().starts_with("ID/GO-1.json: invalid JSON: "),
            "{e}"
        );
        let e = parse_entry(
            "ID/GO-1.json",
            br#"{"id":"GO-1","affected":[{"package":{"name":"m.com/x"},"ranges":[{"type":"SEMVER","events":[{"introduced":"one"}]}]}]}"#,
            "GO-1",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "advisory GO-1, module m.com/x: invalid version \"one\" in a SEMVER range"
        );
        let e = parse_entry(
            "ID/GO-1.json",
            br#"{"id":"GO-1","affected":[{"package":{"name":"m.com/x"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0","fixed":"1.0.0"}]}]}]}"#,
            "GO-1",
        )
        .unwrap_err();
        assert!(matches!(e, VulnDbError::InvalidEvent { .. }), "{e}");
        let e = parse_entry(
            "ID/GO-1.json",
            br#"{"id":"GO-1","modified":"yesterday"}"#,
            "GO-1",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid time \"yesterday\" in modified"),
            "{e}"
        );
    }

    #[test]
    fn limit_events_are_ignored() {
        let json = br#"{"id":"X-1","affected":[{"package":{"name":"m.com/x"},"ranges":[{"type":"SEMVER","events":[{"introduced":"1.0.0"},{"limit":"2.0.0"}]}]}]}"#;
        let a = parse_entry("ID/X-1.json", json, "X-1").unwrap();
        assert_eq!(a.affected[0].intervals[0].to_string(), "[v1.0.0, no fix)");
    }

    #[test]
    fn ids_that_cannot_escape_the_id_directory() {
        for ok in ["GO-2022-0475", "GHSA-qx32-f6g6-fcfr", "CVE-2020_1.x"] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".hidden",
            "../index/db",
            "a/b",
            "a\\b",
            "GO 1",
            "GO-1\0",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
