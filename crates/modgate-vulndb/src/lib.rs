//! An offline Go vulnerability database, as published (<https://go.dev/security/vuln/database>,
//! the v1 layout that `govulncheck -db` reads): `index/db.json` (its `modified` time),
//! `index/vulns.json`, `index/modules.json` and one OSV 1.x entry per advisory in
//! `ID/<id>.json`, each file as `.json`, `.json.gz` or both; from a directory or from a zip with
//! the same layout at its root or under one top-level folder (`vulndb.zip`).
//!
//! * [`VulnDb::load`] reads and checks the whole database at once, bounded by [`Limits`]; any
//!   problem (a missing or torn file, invalid JSON, an advisory ID that could escape `ID/`, an
//!   invalid version in a range, a file over its size limit) refuses the database as a whole
//!   with a message naming the file, so a reload keeps the previous one in force.
//! * [`VulnDb::affecting`] answers which advisories affect `module@version`, from an index by
//!   module path (no I/O, no scan of other modules). See [`affects`] for the version semantics
//!   (x/vuln's), and [`VulnDb::affecting`] for what is never matched (withdrawn advisories,
//!   the `stdlib` / `toolchain` pseudo-modules).
//! * [`VulnDb::files`] / [`VulnDb::file`] give the files to serve again under `/vulndb/` in the
//!   same layout, each as `.json` and `.json.gz` (govulncheck fetches `<endpoint>.json.gz` over
//!   HTTP and gunzips the body itself, so the `.gz` bytes are served as they are, without a
//!   `Content-Encoding`).
//!
//! Not wired into the gateway yet.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod affects;
mod error;
mod osv;
mod source;
mod time;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use modgate_protocol::is_valid_semver;
use serde::de::DeserializeOwned;

pub use affects::{End, Interval};
pub use error::{LookupError, VulnDbError};
pub use osv::{Advisory, AffectedModule, ImportedPackage, Severity};
pub use time::{parse_rfc3339, DbTime};

use source::Source;

/// The pseudo-module paths the database uses for Go itself: never module paths.
pub const PSEUDO_MODULES: [&str; 2] = ["stdlib", "toolchain"];

/// Bounds on what a database may hold; beyond them it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest single file, compressed or after decompression (default 64 MiB; the published
    /// `index/modules.json` is a few MiB).
    pub max_file_bytes: u64,
    /// Largest total of all files kept for serving, `.json` and `.json.gz` (default 1 GiB).
    pub max_total_bytes: u64,
    /// Most advisories (default 200,000; the published database has a few thousand).
    pub max_advisories: usize,
    /// Most entries in a zip's directory (default 1,000,000).
    pub max_zip_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 64 << 20,
            max_total_bytes: 1 << 30,
            max_advisories: 200_000,
            max_zip_entries: 1_000_000,
        }
    }
}

/// One advisory that affects a module version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<'a> {
    /// The advisory: [`Advisory::id`], [`Advisory::aliases`], [`Advisory::summary`],
    /// [`Advisory::severity`], [`Advisory::severity_label`].
    pub advisory: &'a Advisory,
    /// The first `affected` block of the module that matched.
    pub affected: &'a AffectedModule,
    /// The interval of that block the version lies in.
    pub interval: &'a Interval,
    /// The packages (`ecosystem_specific.imports`) of every matching block of the module, for
    /// display: they never narrow the decision, which is about the whole module version.
    pub imports: Vec<&'a ImportedPackage>,
}

/// A loaded database.
#[derive(Debug)]
pub struct VulnDb {
    modified: DbTime,
    /// Sorted by ID.
    advisories: Vec<Advisory>,
    /// Module path → (advisory index, affected index), for advisories not withdrawn.
    by_module: HashMap<String, Vec<(u32, u32)>>,
    /// Lower-cased module path → the module paths of `by_module` it folds to.
    folded: HashMap<String, Vec<String>>,
    /// Relative path → bytes, in both forms.
    files: BTreeMap<String, Arc<[u8]>>,
}

fn parse_json<T: DeserializeOwned>(file: &str, json: &[u8]) -> Result<T, VulnDbError> {
    serde_json::from_slice(json).map_err(|source| VulnDbError::Json {
        file: file.to_owned(),
        source,
    })
}

/// Keeps one layout file's two forms for serving, within the total limit.
fn keep(
    files: &mut BTreeMap<String, Arc<[u8]>>,
    total: &mut u64,
    limits: &Limits,
    base: &str,
    f: source::LayoutFile,
) -> Result<(), VulnDbError> {
    *total += (f.json.len() + f.gz.len()) as u64;
    if *total > limits.max_total_bytes {
        return Err(VulnDbError::TooLarge {
            what: "the database".to_owned(),
            limit: limits.max_total_bytes,
        });
    }
    files.insert(format!("{base}.json"), f.json.into());
    files.insert(format!("{base}.json.gz"), f.gz.into());
    Ok(())
}

impl VulnDb {
    /// Loads the database at `path` (a directory or a zip file) with the default [`Limits`].
    pub fn load(path: &Path) -> Result<VulnDb, VulnDbError> {
        Self::load_with(path, &Limits::default())
    }

    /// Loads the database at `path` (a directory or a zip file) within `limits`.
    pub fn load_with(path: &Path, limits: &Limits) -> Result<VulnDb, VulnDbError> {
        let mut src = Source::open(path, limits.max_zip_entries)?;
        let max = limits.max_file_bytes;
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        let required = |src: &mut Source, base: &str| {
            src.read(base, max)?.ok_or_else(|| VulnDbError::Missing {
                file: base.to_owned(),
            })
        };

        let db = required(&mut src, "index/db")?;
        let meta: osv::DbMeta = parse_json("index/db.json", &db.json)?;
        let modified = parse_rfc3339(&meta.modified).ok_or_else(|| VulnDbError::InvalidTime {
            file: "index/db.json".to_owned(),
            field: "modified",
            value: meta.modified.clone(),
        })?;
        keep(&mut files, &mut total, limits, "index/db", db)?;

        let vulns = required(&mut src, "index/vulns")?;
        let listed: Vec<osv::VulnMeta> = parse_json("index/vulns.json", &vulns.json)?;
        keep(&mut files, &mut total, limits, "index/vulns", vulns)?;
        if listed.len() > limits.max_advisories {
            return Err(VulnDbError::TooMany {
                what: "index/vulns.json: advisories".to_owned(),
                limit: limits.max_advisories,
            });
        }
        let mut ids = HashSet::with_capacity(listed.len());
        for v in &listed {
            if !osv::valid_id(&v.id) {
                return Err(VulnDbError::InvalidId {
                    file: "index/vulns.json".to_owned(),
                    id: v.id.clone(),
                });
            }
            if !ids.insert(v.id.as_str()) {
                return Err(VulnDbError::DuplicateId { id: v.id.clone() });
            }
        }

        let modules = required(&mut src, "index/modules")?;
        let module_index: Vec<osv::ModuleMeta> = parse_json("index/modules.json", &modules.json)?;
        keep(&mut files, &mut total, limits, "index/modules", modules)?;
        for m in &module_index {
            for v in &m.vulns {
                if !ids.contains(v.id.as_str()) {
                    return Err(VulnDbError::Unlisted {
                        id: v.id.clone(),
                        module: m.path.clone(),
                    });
                }
            }
        }

        let mut advisories = Vec::with_capacity(listed.len());
        for v in &listed {
            let base = format!("ID/{}", v.id);
            let f = required(&mut src, &base)?;
            advisories.push(osv::parse_entry(&format!("{base}.json"), &f.json, &v.id)?);
            keep(&mut files, &mut total, limits, &base, f)?;
        }
        advisories.sort_by(|a, b| a.id.cmp(&b.id));

        let mut by_module: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        for (i, a) in advisories.iter().enumerate() {
            if a.withdrawn.is_some() {
                continue;
            }
            for (j, m) in a.affected.iter().enumerate() {
                if PSEUDO_MODULES.contains(&m.module.as_str()) {
                    continue;
                }
                // Both fit: advisories and their blocks are bounded far below u32::MAX.
                let at = (i as u32, j as u32);
                by_module.entry(m.module.clone()).or_default().push(at);
            }
        }
        let mut folded: HashMap<String, Vec<String>> = HashMap::new();
        for m in by_module.keys() {
            folded
                .entry(m.to_ascii_lowercase())
                .or_default()
                .push(m.clone());
        }
        Ok(VulnDb {
            modified,
            advisories,
            by_module,
            folded,
            files,
        })
    }

    /// `index/db.json`'s `modified`: when the database last changed.
    pub fn modified(&self) -> &DbTime {
        &self.modified
    }

    /// Every advisory (withdrawn ones included), sorted by ID.
    pub fn advisories(&self) -> &[Advisory] {
        &self.advisories
    }

    /// The advisory with this ID.
    pub fn advisory(&self, id: &str) -> Option<&Advisory> {
        self.advisories
            .binary_search_by(|a| a.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.advisories[i])
    }

    /// The advisories that affect `module` at `version` (a Go version with its `v`: a release,
    /// prerelease, pseudo-version or `+incompatible` version), sorted by ID, one per advisory.
    ///
    /// Never matched: withdrawn advisories (`withdrawn` set, whatever its time: the database
    /// is a snapshot and the gateway keeps no clock here); the `stdlib` and `toolchain`
    /// pseudo-modules (no module request names them). A module version is affected whichever of
    /// its packages a build imports: `ecosystem_specific.imports` is shown, never narrows.
    /// Module paths match exactly (`example.com/m/v2` is another module than `example.com/m`).
    pub fn affecting(&self, module: &str, version: &str) -> Result<Vec<Finding<'_>>, LookupError> {
        if !is_valid_semver(version) {
            return Err(LookupError::NotSemver {
                version: version.to_owned(),
            });
        }
        let Some(hits) = self.by_module.get(module) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Finding<'_>> = Vec::new();
        for &(i, j) in hits {
            let advisory = &self.advisories[i as usize];
            let affected = &advisory.affected[j as usize];
            let Some(interval) = affected.interval_containing(version) else {
                continue;
            };
            match out.last_mut() {
                Some(f) if f.advisory.id == advisory.id => f.imports.extend(&affected.imports),
                _ => out.push(Finding {
                    advisory,
                    affected,
                    interval,
                    imports: affected.imports.iter().collect(),
                }),
            }
        }
        Ok(out)
    }

    /// The module paths of the database that `module` spells, letters compared without regard
    /// to case (`github.com/Gorilla/websocket` spells `github.com/gorilla/websocket`): where a
    /// host resolves every case spelling to one repository, each is the same code.
    pub fn spelled_by(&self, module: &str) -> &[String] {
        self.folded
            .get(&module.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// Every module path an advisory (not withdrawn) names.
    pub fn module_paths(&self) -> impl Iterator<Item = &str> {
        self.by_module.keys().map(String::as_str)
    }

    /// Whether any advisory (not withdrawn) names `module`: only then can a version of it be
    /// affected.
    pub fn names_module(&self, module: &str) -> bool {
        self.by_module.contains_key(module)
    }

    /// Every file to serve under `/vulndb/`, by path relative to it (`index/db.json`,
    /// `index/db.json.gz`, `ID/GO-2022-0475.json.gz`, ...), in path order.
    pub fn files(&self) -> impl Iterator<Item = (&str, &Arc<[u8]>)> {
        self.files.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The file at `rel` (relative to `/vulndb/`, no leading `/`), if the layout has it.
    pub fn file(&self, rel: &str) -> Option<&Arc<[u8]>> {
        self.files.get(rel)
    }
}

/// The `Content-Type` to serve a database file with: `application/json` for `.json`,
/// `application/gzip` for `.json.gz` (never a `Content-Encoding`: clients gunzip it themselves).
pub fn content_type(rel: &str) -> &'static str {
    if rel.ends_with(".gz") {
        "application/gzip"
    } else {
        "application/json"
    }
}

#[cfg(test)]
mod tests;
