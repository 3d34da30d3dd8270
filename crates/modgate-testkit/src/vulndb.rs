//! A Go vulnerability database in its published v1 layout, written by tests: `index/db.json`,
//! `index/modules.json`, `index/vulns.json` and `ID/<id>.json` (OSV 1.x), with consistent
//! indexes. Versions in ranges are written as the format wants them: without the `v`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

/// One advisory about one module.
#[derive(Debug, Clone)]
pub struct Advisory {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: String,
    pub module: String,
    /// SEMVER events as written in OSV (`{"introduced": "0"}`, `{"fixed": "1.2.3"}`).
    pub events: Vec<Value>,
    /// Packages for `ecosystem_specific.imports`.
    pub packages: Vec<String>,
    /// `withdrawn` time, if withdrawn.
    pub withdrawn: Option<String>,
}

impl Advisory {
    /// An advisory affecting `module` from `introduced` (`"0"` for every version) until
    /// `fixed` (without `v`, `None`: no fix).
    pub fn new(id: &str, module: &str, introduced: &str, fixed: Option<&str>) -> Advisory {
        let mut events = vec![json!({ "introduced": introduced })];
        if let Some(f) = fixed {
            events.push(json!({ "fixed": f }));
        }
        Advisory {
            id: id.to_owned(),
            aliases: vec![format!("CVE-{}", &id[3.min(id.len())..])],
            summary: format!("Something bad in {module}"),
            module: module.to_owned(),
            events,
            packages: vec![module.to_owned()],
            withdrawn: None,
        }
    }

    pub fn withdrawn(mut self, at: &str) -> Advisory {
        self.withdrawn = Some(at.to_owned());
        self
    }

    fn osv(&self, modified: &str) -> Value {
        let imports: Vec<Value> = self.packages.iter().map(|p| json!({ "path": p })).collect();
        let mut v = json!({
            "schema_version": "1.3.1",
            "id": self.id,
            "modified": modified,
            "published": "2024-01-01T00:00:00Z",
            "aliases": self.aliases,
            "summary": self.summary,
            "details": "Details.",
            "affected": [{
                "package": { "name": self.module, "ecosystem": "Go" },
                "ranges": [{ "type": "SEMVER", "events": self.events }],
                "ecosystem_specific": { "imports": imports }
            }],
            "database_specific": { "url": format!("https://pkg.go.dev/vuln/{}", self.id) }
        });
        if let (Some(w), Some(o)) = (&self.withdrawn, v.as_object_mut()) {
            o.insert("withdrawn".into(), json!(w));
        }
        v
    }
}

/// Writes the database of `advisories` into `dir` (created), stamped `modified`.
pub fn write_vulndb(dir: &Path, modified: &str, advisories: &[Advisory]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("index"))?;
    std::fs::create_dir_all(dir.join("ID"))?;
    let mut vulns = Vec::new();
    let mut modules: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for a in advisories {
        vulns.push(json!({ "id": a.id, "modified": modified, "aliases": a.aliases }));
        modules
            .entry(&a.module)
            .or_default()
            .push(json!({ "id": a.id, "modified": modified }));
        std::fs::write(
            dir.join("ID").join(format!("{}.json", a.id)),
            a.osv(modified).to_string(),
        )?;
    }
    let modules: Vec<Value> = modules
        .into_iter()
        .map(|(path, vulns)| json!({ "path": path, "vulns": vulns }))
        .collect();
    std::fs::write(
        dir.join("index/db.json"),
        json!({ "modified": modified }).to_string(),
    )?;
    std::fs::write(dir.join("index/vulns.json"), Value::from(vulns).to_string())?;
    std::fs::write(
        dir.join("index/modules.json"),
        Value::from(modules).to_string(),
    )
}
