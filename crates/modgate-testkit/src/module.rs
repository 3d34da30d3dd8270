//! Go module fixtures: a module version's files and the three artifacts a GOPROXY serves for
//! it — the `.info` JSON, the `.mod` file and the module zip in Go's format (every entry under
//! `<module>@<version>/`, the size limits of `golang.org/x/mod/zip`).

use std::collections::BTreeMap;
use std::io::Write;

use modgate_protocol::{check_path, Version, VersionClass};

/// Go's limits for module zips (`golang.org/x/mod/zip`).
pub const MAX_ZIP_FILE: u64 = 500 << 20;
pub const MAX_GO_MOD: u64 = 16 << 20;
pub const MAX_LICENSE: u64 = 16 << 20;

/// Errors building a fixture module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module path {0:?}: {1}")]
    Path(String, String),
    #[error("{module}@{version}: {reason}")]
    Version {
        module: String,
        version: String,
        reason: String,
    },
    #[error("{module}@{version}: file {file:?}: {reason}")]
    File {
        module: String,
        version: String,
        file: String,
        reason: String,
    },
    #[error("{0}: module zip would be larger than 500 MiB")]
    TooLarge(String),
}

/// One version of one module, with its source files.
#[derive(Debug, Clone)]
pub struct ModuleVersion {
    pub path: String,
    pub version: String,
    /// RFC 3339 commit time for `.info`.
    pub time: String,
    /// Files by path relative to the module root. `go.mod` is added unless the version is
    /// `+incompatible`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// `require` lines for go.mod: (module, version).
    pub requires: Vec<(String, String)>,
}

impl ModuleVersion {
    /// A module version with one Go package file; checks the path and version the way Go does.
    pub fn new(path: &str, version: &str) -> Result<ModuleVersion, ModuleError> {
        check_path(path).map_err(|e| ModuleError::Path(path.into(), e.to_string()))?;
        let v = Version::parse(version);
        let Version::Canonical {
            class,
            incompatible,
            ..
        } = &v
        else {
            return Err(ModuleError::Version {
                module: path.into(),
                version: version.into(),
                reason: "not a canonical version".into(),
            });
        };
        let time = if *class == VersionClass::Pseudo {
            pseudo_time(version).unwrap_or_else(|| "2024-01-01T00:00:00Z".into())
        } else {
            "2024-01-01T00:00:00Z".into()
        };
        let pkg = path
            .rsplit('/')
            .find(|e| !(e.starts_with('v') && e[1..].chars().all(|c| c.is_ascii_digit())))
            .unwrap_or("m")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect::<String>();
        let pkg = if pkg.starts_with(|c: char| c.is_ascii_digit()) || pkg.is_empty() {
            format!("p{pkg}")
        } else {
            pkg
        };
        let mut files = BTreeMap::new();
        files.insert(
            format!("{pkg}.go"),
            format!(
                "// Package {pkg} is a modgate test fixture: {path}@{version}.\npackage {pkg}\n\n// Version is the version of this fixture.\nconst Version = \"{version}\"\n"
            )
            .into_bytes(),
        );
        files.insert("LICENSE".into(), b"Fixture license: use freely.\n".to_vec());
        let mut m = ModuleVersion {
            path: path.into(),
            version: version.into(),
            time,
            files,
            requires: Vec::new(),
        };
        if !incompatible {
            m.files.insert("go.mod".into(), Vec::new());
        }
        Ok(m)
    }

    /// Adds a requirement to go.mod.
    pub fn require(mut self, module: &str, version: &str) -> Self {
        self.requires.push((module.into(), version.into()));
        self
    }

    /// Adds or replaces a file.
    pub fn file(mut self, name: &str, contents: &[u8]) -> Self {
        self.files.insert(name.into(), contents.to_vec());
        self
    }

    fn is_incompatible(&self) -> bool {
        self.version.ends_with("+incompatible")
    }

    /// The `.mod` file: go.mod text; for `+incompatible` versions the synthesized
    /// `module <path>` line Go expects.
    pub fn mod_file(&self) -> Vec<u8> {
        if self.is_incompatible() {
            return format!("module {}\n", self.path).into_bytes();
        }
        let mut s = format!("module {}\n\ngo 1.21\n", self.path);
        if !self.requires.is_empty() {
            s.push_str("\nrequire (\n");
            for (m, v) in &self.requires {
                s.push_str(&format!("\t{m} {v}\n"));
            }
            s.push_str(")\n");
        }
        s.into_bytes()
    }

    /// The `.info` JSON.
    pub fn info(&self) -> Vec<u8> {
        serde_json::json!({ "Version": self.version, "Time": self.time })
            .to_string()
            .into_bytes()
    }

    /// The module zip in Go's format.
    pub fn zip(&self) -> Result<Vec<u8>, ModuleError> {
        let prefix = format!("{}@{}/", self.path, self.version);
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        let mut total: u64 = 0;
        for (name, data) in &self.files {
            let data = if name == "go.mod" {
                self.mod_file()
            } else {
                data.clone()
            };
            let err = |reason: &str| ModuleError::File {
                module: self.path.clone(),
                version: self.version.clone(),
                file: name.clone(),
                reason: reason.into(),
            };
            if name.is_empty()
                || name.starts_with('/')
                || name
                    .split('/')
                    .any(|e| e.is_empty() || e == "." || e == "..")
            {
                return Err(err("invalid file path"));
            }
            let size = data.len() as u64;
            if name == "go.mod" && size > MAX_GO_MOD {
                return Err(err("go.mod larger than 16 MiB"));
            }
            if name == "LICENSE" && size > MAX_LICENSE {
                return Err(err("LICENSE larger than 16 MiB"));
            }
            total += size;
            if total > MAX_ZIP_FILE {
                return Err(ModuleError::TooLarge(format!(
                    "{}@{}",
                    self.path, self.version
                )));
            }
            entries.push((format!("{prefix}{name}"), data));
        }
        Ok(write_zip(&entries))
    }
}

/// The commit time encoded in a pseudo-version (`...-yyyymmddhhmmss-abcdef123456`).
fn pseudo_time(v: &str) -> Option<String> {
    let base = v.split('+').next()?;
    let mut parts = base.rsplitn(3, '-');
    let _rev = parts.next()?;
    let stamp_part = parts.next()?;
    let stamp = stamp_part.rsplit('.').next()?;
    if stamp.len() != 14 || !stamp.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[8..10],
        &stamp[10..12],
        &stamp[12..14]
    ))
}

/// Writes a zip archive with stored (uncompressed) entries.
fn write_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut central: Vec<u8> = Vec::new();
    // 1980-01-01 00:00 in DOS format.
    let (dos_time, dos_date): (u16, u16) = (0, (1 << 5) | 1);
    for (name, data) in entries {
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let size = data.len() as u32;
        let name_bytes = name.as_bytes();
        // Local file header.
        let _ = out.write_all(&0x0403_4b50u32.to_le_bytes());
        let _ = out.write_all(&20u16.to_le_bytes()); // version needed
        let _ = out.write_all(&0x0800u16.to_le_bytes()); // flags: UTF-8 names
        let _ = out.write_all(&0u16.to_le_bytes()); // method: stored
        let _ = out.write_all(&dos_time.to_le_bytes());
        let _ = out.write_all(&dos_date.to_le_bytes());
        let _ = out.write_all(&crc.to_le_bytes());
        let _ = out.write_all(&size.to_le_bytes());
        let _ = out.write_all(&size.to_le_bytes());
        let _ = out.write_all(&(name_bytes.len() as u16).to_le_bytes());
        let _ = out.write_all(&0u16.to_le_bytes()); // extra length
        let _ = out.write_all(name_bytes);
        let _ = out.write_all(data);
        // Central directory entry.
        let _ = central.write_all(&0x0201_4b50u32.to_le_bytes());
        let _ = central.write_all(&20u16.to_le_bytes()); // version made by
        let _ = central.write_all(&20u16.to_le_bytes()); // version needed
        let _ = central.write_all(&0x0800u16.to_le_bytes());
        let _ = central.write_all(&0u16.to_le_bytes());
        let _ = central.write_all(&dos_time.to_le_bytes());
        let _ = central.write_all(&dos_date.to_le_bytes());
        let _ = central.write_all(&crc.to_le_bytes());
        let _ = central.write_all(&size.to_le_bytes());
        let _ = central.write_all(&size.to_le_bytes());
        let _ = central.write_all(&(name_bytes.len() as u16).to_le_bytes());
        let _ = central.write_all(&0u16.to_le_bytes()); // extra
        let _ = central.write_all(&0u16.to_le_bytes()); // comment
        let _ = central.write_all(&0u16.to_le_bytes()); // disk number
        let _ = central.write_all(&0u16.to_le_bytes()); // internal attrs
        let _ = central.write_all(&(0o100644u32 << 16).to_le_bytes()); // external attrs
        let _ = central.write_all(&offset.to_le_bytes());
        let _ = central.write_all(name_bytes);
    }
    let cd_offset = out.len() as u32;
    let cd_size = central.len() as u32;
    out.extend_from_slice(&central);
    let _ = out.write_all(&0x0605_4b50u32.to_le_bytes());
    let _ = out.write_all(&0u16.to_le_bytes());
    let _ = out.write_all(&0u16.to_le_bytes());
    let _ = out.write_all(&(entries.len() as u16).to_le_bytes());
    let _ = out.write_all(&(entries.len() as u16).to_le_bytes());
    let _ = out.write_all(&cd_size.to_le_bytes());
    let _ = out.write_all(&cd_offset.to_le_bytes());
    let _ = out.write_all(&0u16.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_entries_carry_the_module_prefix() {
        let m = ModuleVersion::new("example.com/Upper/v2", "v2.1.0").expect("module");
        let zip = m.zip().expect("zip");
        let text = String::from_utf8_lossy(&zip);
        assert!(text.contains("example.com/Upper/v2@v2.1.0/go.mod"));
        assert!(text.contains("example.com/Upper/v2@v2.1.0/LICENSE"));
        assert_eq!(&zip[..4], b"PK\x03\x04");
        assert!(String::from_utf8_lossy(&m.mod_file()).starts_with("module example.com/Upper/v2\n"));
    }

    #[test]
    fn incompatible_versions_have_no_go_mod_in_the_zip() {
        let m = ModuleVersion::new("example.com/old", "v3.0.0+incompatible").expect("module");
        let zip = m.zip().expect("zip");
        assert!(!String::from_utf8_lossy(&zip).contains("go.mod"));
        assert_eq!(m.mod_file(), b"module example.com/old\n");
    }

    #[test]
    fn pseudo_versions_carry_their_time() {
        let m = ModuleVersion::new("example.com/p", "v0.0.0-20240315101112-abcdefabcdef")
            .expect("module");
        assert_eq!(m.time, "2024-03-15T10:11:12Z");
        assert!(ModuleVersion::new("Example.com/x", "v1.0.0").is_err());
        assert!(ModuleVersion::new("example.com/x", "master").is_err());
        let bad = ModuleVersion::new("example.com/x", "v1.0.0")
            .expect("module")
            .file("../evil", b"x");
        assert!(bad.zip().is_err());
    }
}
