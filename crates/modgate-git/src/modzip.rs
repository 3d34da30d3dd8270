//! The module zip rules of `golang.org/x/mod/zip` (`checkFiles` and
//! `Create`), as the go command applies them to the files of a `git
//! archive`: which files are omitted (vendored packages — with Go's
//! historical offset bug —, files of nested modules, `.hg_archival.txt`,
//! symbolic links and other irregular files), which make the whole zip
//! invalid (unclean or invalid names, case-insensitive collisions, a
//! `GO.MOD`, go.mod or LICENSE over 16 MiB, more than 500 MiB in total), and
//! the `module@version/` prefix of every name. Pure: the caller supplies
//! the entries and their bytes.

use std::collections::{HashMap, HashSet};
use std::io::{Seek, Write};

use modgate_protocol::check_file_path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// `MaxZipFile`: the most bytes a module's files may add up to.
pub const MAX_ZIP_FILE: u64 = 500 << 20;
/// `MaxGoMod`: the largest go.mod in a module zip (and the largest go.mod
/// read from a repository).
pub const MAX_GO_MOD: u64 = 16 << 20;
/// `MaxLICENSE`: the largest LICENSE in a module zip.
pub const MAX_LICENSE: u64 = 16 << 20;

/// What a file in the source archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    Regular,
    /// A symbolic link (always omitted).
    Symlink,
    /// Anything else that is not a directory (always omitted).
    Other,
}

/// One file offered for the zip, its path relative to the module root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Slash-separated path relative to the module directory.
    pub path: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Its size in bytes.
    pub size: u64,
}

/// The outcome of checking the candidates: the indexes of the files that
/// go into the zip, in order, and the omitted files with Go's reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZipPlan {
    /// Indexes into the candidate list.
    pub valid: Vec<usize>,
    /// `(path, reason)` of every omitted file.
    pub omitted: Vec<(String, &'static str)>,
}

/// Why a set of files cannot make a module zip: Go's `CheckedFiles.Err()`
/// text (the size error, or one `path: reason` line per invalid file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ZipRuleError(pub String);

/// Go's `checkFiles`.
pub fn check_files(files: &[Candidate]) -> Result<ZipPlan, ZipRuleError> {
    let mut plan = ZipPlan::default();
    let mut invalid: Vec<String> = Vec::new();
    let mut seen_errors: HashSet<&str> = HashSet::new();
    let mut size_error = None;

    // Directories holding a go.mod (other than the root): nested modules.
    let mut have_go_mod: HashSet<&str> = HashSet::new();
    for f in files {
        let (dir, base) = split(&f.path);
        if base.eq_ignore_ascii_case("go.mod") && f.kind == EntryKind::Regular {
            have_go_mod.insert(dir);
        }
    }
    let in_submodule = |p: &str| {
        let mut p = p;
        loop {
            let (dir, _) = split(p);
            if dir.is_empty() {
                return false;
            }
            if have_go_mod.contains(dir) {
                return true;
            }
            p = &dir[..dir.len() - 1];
        }
    };

    let mut collisions: HashMap<String, (String, bool)> = HashMap::new();
    let mut remaining = MAX_ZIP_FILE;
    for (index, f) in files.iter().enumerate() {
        let p = f.path.as_str();
        let mut omit = |reason: &'static str| plan.omitted.push((p.to_owned(), reason));
        let mut fail = |reason: String| {
            if seen_errors.insert(p) {
                invalid.push(format!("{p}: {reason}"));
            }
        };
        if !is_clean(p) {
            fail("file path is not clean".into());
            continue;
        }
        if p.starts_with('/') {
            fail("file path is not relative".into());
            continue;
        }
        if is_vendored_package(p) {
            omit("file is in vendor directory");
            continue;
        }
        if in_submodule(p) {
            omit("file is in another module");
            continue;
        }
        if p == ".hg_archival.txt" {
            omit("file is inserted by 'hg archive' and is always omitted");
            continue;
        }
        if let Err(e) = check_file_path(p) {
            fail(e.to_string());
            continue;
        }
        if p.to_lowercase() == "go.mod" && p != "go.mod" {
            fail("go.mod files must have lowercase names".into());
            continue;
        }
        if let Err(e) = check_collision(&mut collisions, p, false) {
            fail(e);
            continue;
        }
        match f.kind {
            EntryKind::Symlink => {
                omit("file is a symbolic link");
                continue;
            }
            EntryKind::Other => {
                omit("not a regular file");
                continue;
            }
            EntryKind::Regular => {}
        }
        if f.size <= remaining {
            remaining -= f.size;
        } else if size_error.is_none() {
            size_error = Some(format!(
                "module source tree too large (max size is {MAX_ZIP_FILE} bytes)"
            ));
        }
        if p == "go.mod" && f.size > MAX_GO_MOD {
            fail(format!(
                "go.mod file too large (max size is {MAX_GO_MOD} bytes)"
            ));
            continue;
        }
        if p == "LICENSE" && f.size > MAX_LICENSE {
            fail(format!(
                "LICENSE file too large (max size is {MAX_LICENSE} bytes)"
            ));
            continue;
        }
        plan.valid.push(index);
    }
    if let Some(e) = size_error {
        return Err(ZipRuleError(e));
    }
    if !invalid.is_empty() {
        return Err(ZipRuleError(invalid.join("\n")));
    }
    Ok(plan)
}

/// `path.Split`: `("a/b/", "c")` for `a/b/c`.
fn split(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..=i], &p[i + 1..]),
        None => ("", p),
    }
}

/// Whether `path.Clean(p) == p`.
fn is_clean(p: &str) -> bool {
    if p.is_empty() {
        return false;
    }
    if p == "/" {
        return true;
    }
    let body = p.strip_prefix('/').unwrap_or(p);
    !body.is_empty()
        && body
            .split('/')
            .all(|e| !e.is_empty() && e != "." && e != "..")
}

/// `isVendoredPackage`, bug included: a file directly in a nested `vendor`
/// directory (`a/vendor/x.go`) counts as vendored too.
pub fn is_vendored_package(name: &str) -> bool {
    let i = if name.starts_with("vendor/") {
        "vendor/".len()
    } else if name.contains("/vendor/") {
        // Go adds len("/vendor/") to 0, not to the match offset
        // (golang.org/issue/31562); checksums depend on it.
        "/vendor/".len()
    } else {
        return false;
    };
    name.get(i..).is_some_and(|rest| rest.contains('/'))
}

/// Go's `collisionChecker.check` over `strToFold` keys.
fn check_collision(
    seen: &mut HashMap<String, (String, bool)>,
    p: &str,
    is_dir: bool,
) -> Result<(), String> {
    let fold = fold(p);
    if let Some((other, other_dir)) = seen.get(&fold) {
        if p != other {
            return Err(format!(
                "case-insensitive file name collision: {} and {}",
                modgate_protocol::go_quote(other),
                modgate_protocol::go_quote(p)
            ));
        }
        if is_dir != *other_dir {
            return Err(format!(
                "entry {} is both a file and a directory",
                modgate_protocol::go_quote(p)
            ));
        }
        if !is_dir {
            return Err(format!(
                "multiple entries for file {}",
                modgate_protocol::go_quote(p)
            ));
        }
    } else {
        seen.insert(fold, (p.to_owned(), is_dir));
    }
    match p.rfind('/') {
        Some(i) => check_collision(seen, &p[..i], true),
        None => Ok(()),
    }
}

/// A case-folding key: equal for strings `strings.EqualFold` calls equal
/// (exact for ASCII; Unicode via upper- then lower-casing each character,
/// which also folds `ſ`/`K`-style equivalents).
fn fold(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return s.to_owned();
    }
    s.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Writes a module zip: every file under `module@version/`, deflated, with
/// a fixed timestamp so that the same content always gives the same bytes.
pub struct ZipBuilder<W: Write + Seek> {
    writer: ZipWriter<W>,
    prefix: String,
}

impl<W: Write + Seek> ZipBuilder<W> {
    /// Starts a zip for `module@version` written to `sink`.
    pub fn new(sink: W, module: &str, version: &str) -> ZipBuilder<W> {
        ZipBuilder {
            writer: ZipWriter::new(sink),
            prefix: format!("{module}@{version}/"),
        }
    }

    /// Adds one file (`path` relative to the module root).
    pub fn add(&mut self, path: &str, data: &[u8]) -> Result<(), zip::result::ZipError> {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .last_modified_time(DateTime::default())
            .unix_permissions(0o644)
            .large_file(data.len() as u64 >= u64::from(u32::MAX));
        self.writer
            .start_file(format!("{}{path}", self.prefix), options)?;
        self.writer.write_all(data)?;
        Ok(())
    }

    /// Finishes the archive and returns the sink.
    pub fn finish(self) -> Result<W, zip::result::ZipError> {
        self.writer.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(path: &str, size: u64) -> Candidate {
        Candidate {
            path: path.into(),
            kind: EntryKind::Regular,
            size,
        }
    }

    fn valid_paths(files: &[Candidate]) -> Vec<&str> {
        let plan = check_files(files).unwrap();
        plan.valid.iter().map(|&i| files[i].path.as_str()).collect()
    }

    #[test]
    fn omits_what_x_mod_zip_omits() {
        let files = vec![
            reg("go.mod", 10),
            reg("a.go", 1),
            reg("vendor/modules.txt", 1),
            reg("vendor/x.example/y/y.go", 1),
            reg("pkg/vendor/z.go", 1),
            reg("pkg/vendor/q/z.go", 1),
            reg("nested/go.mod", 1),
            reg("nested/n.go", 1),
            reg("nested/deeper/n.go", 1),
            reg(".hg_archival.txt", 1),
            Candidate {
                path: "link".into(),
                kind: EntryKind::Symlink,
                size: 4,
            },
            reg("LICENSE", 5),
        ];
        assert_eq!(
            valid_paths(&files),
            ["go.mod", "a.go", "vendor/modules.txt", "LICENSE"]
        );
        let plan = check_files(&files).unwrap();
        assert!(plan
            .omitted
            .contains(&("link".into(), "file is a symbolic link")));
        assert!(plan
            .omitted
            .contains(&("pkg/vendor/z.go".into(), "file is in vendor directory")));
    }

    #[test]
    fn refuses_invalid_sets() {
        let err = check_files(&[reg("a.go", 1), reg("A.go", 1)]).unwrap_err();
        assert_eq!(
            err.0,
            "A.go: case-insensitive file name collision: \"a.go\" and \"A.go\""
        );
        let err = check_files(&[reg("GO.MOD", 1)]).unwrap_err();
        assert_eq!(err.0, "GO.MOD: go.mod files must have lowercase names");
        let err = check_files(&[reg("go.mod", MAX_GO_MOD + 1)]).unwrap_err();
        assert!(err.0.starts_with("go.mod: go.mod file too large"));
        let err = check_files(&[reg("big", MAX_ZIP_FILE), reg("more", 1)]).unwrap_err();
        assert_eq!(
            err.0,
            "module source tree too large (max size is 524288000 bytes)"
        );
        assert!(check_files(&[reg("a/../b", 1)]).is_err());
    }

    #[test]
    fn vendored_package_bug_kept() {
        assert!(!is_vendored_package("vendor/modules.txt"));
        assert!(is_vendored_package("vendor/a/b.go"));
        assert!(is_vendored_package("x/vendor/b.go"));
        assert!(!is_vendored_package("xvendor/b.go"));
        assert!(!is_vendored_package("a/b.go"));
    }

    #[test]
    fn zips_carry_the_prefix() {
        let mut b = ZipBuilder::new(std::io::Cursor::new(Vec::new()), "h.example/m", "v1.0.0");
        b.add("go.mod", b"module h.example/m\n").unwrap();
        let bytes = b.finish().unwrap().into_inner();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
        assert_eq!(
            archive.by_index(0).unwrap().name().unwrap(),
            "h.example/m@v1.0.0/go.mod"
        );
        assert!(modgate_ledger::zip_h1(&bytes).unwrap().starts_with("h1:"));
    }
}
