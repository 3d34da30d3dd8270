//! The pure rules of `cmd/go/internal/modfetch/coderepo.go` and
//! `codehost/git.go` that turn a repository's tags and files into module
//! versions: where a module lives in its repository ([`ModuleLayout`]),
//! which tags are versions of it, pseudo-versions, the `t1:`/`r1:` origin
//! sums, the module path a go.mod declares, the go.mod Go synthesizes when
//! there is none, and the `@v/list` text. No I/O: `coderepo` feeds these
//! with what git reports.

use std::cmp::Ordering;
use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use modgate_protocol::{
    canonical_semver, check_path, check_path_major, compare_semver, go_quote, is_pseudo_version,
    semver_build, semver_major, semver_prerelease, split_path_version,
};
use sha2::{Digest, Sha256};

use crate::error::GitError;
use crate::info::format_pseudo_timestamp;

/// Where a module lives in its repository: Go's `newCodeRepo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLayout {
    /// The module path, e.g. `git.corp.example/g/r/sub/v2`.
    pub module_path: String,
    /// The import path of the repository root, e.g. `git.corp.example/g/r`.
    pub code_root: String,
    /// The module's directory in the repository without the major-version
    /// element (`sub`), `""` at the root.
    pub code_dir: String,
    /// The module path without its major-version suffix.
    pub path_prefix: String,
    /// `""`, `/vN` (or gopkg.in's `.vN`).
    pub path_major: String,
    /// `""` or `vN`: the major version pseudo-versions must carry.
    pub pseudo_major: String,
}

impl ModuleLayout {
    /// Go's `newCodeRepo(code, codeRoot, path)`.
    pub fn new(code_root: &str, module_path: &str) -> Result<ModuleLayout, GitError> {
        let config = |detail: String| GitError::Config {
            what: format!("module path {module_path}"),
            detail,
        };
        check_path(module_path).map_err(|e| config(e.to_string()))?;
        if !has_path_prefix(module_path, code_root) {
            return Err(config(format!(
                "mismatched repo: found {code_root} for {module_path}"
            )));
        }
        let Some((prefix, path_major)) = split_path_version(module_path) else {
            return Err(config(format!(
                "invalid module path {}",
                go_quote(module_path)
            )));
        };
        let path_prefix = if code_root == module_path {
            module_path.to_owned()
        } else {
            prefix.to_owned()
        };
        let pseudo_major = path_major_prefix(path_major);
        let mut code_dir = String::new();
        if code_root != module_path {
            if !has_path_prefix(&path_prefix, code_root) {
                return Err(config(format!(
                    "repository rooted at {code_root} cannot contain module {module_path}"
                )));
            }
            code_dir = path_prefix[code_root.len()..].trim_matches('/').to_owned();
        }
        Ok(ModuleLayout {
            module_path: module_path.to_owned(),
            code_root: code_root.to_owned(),
            code_dir,
            path_prefix,
            path_major: path_major.to_owned(),
            pseudo_major,
        })
    }

    /// The tag prefix of this module's versions: `""` or `codeDir/`.
    pub fn tag_prefix(&self) -> String {
        if self.code_dir.is_empty() {
            String::new()
        } else {
            format!("{}/", self.code_dir)
        }
    }

    /// Go's `revToRev`: the git revision a version or query names.
    pub fn rev_to_rev(&self, rev: &str) -> String {
        if !modgate_protocol::is_valid_semver(rev) {
            return rev.to_owned();
        }
        if is_pseudo_version(rev) {
            return pseudo_version_rev(rev).unwrap_or_default().to_owned();
        }
        let rev = rev.strip_suffix("+incompatible").unwrap_or(rev);
        if self.code_dir.is_empty() {
            rev.to_owned()
        } else {
            format!("{}/{rev}", self.code_dir)
        }
    }

    /// Go's `tagToVersion`: the canonical version a tag names for this
    /// module and whether the tag is exactly that canonical version; `""`
    /// for tags that are not versions of it.
    pub fn tag_to_version(&self, tag: &str) -> (String, bool) {
        let prefix = self.tag_prefix();
        let Some(trimmed) = tag.strip_prefix(prefix.as_str()) else {
            return (String::new(), false);
        };
        if is_pseudo_version(tag) {
            return (String::new(), false);
        }
        let Some(v) = canonical_semver(trimmed) else {
            return (String::new(), false);
        };
        if !trimmed.starts_with(v.as_str()) {
            return (String::new(), false);
        }
        let exact = v == trimmed;
        (v, exact)
    }

    /// The release tags of this module (Go's `codeRepo.Versions` before the
    /// `+incompatible` step): `(list, incompatible candidates)`, each sorted
    /// by `semver.Sort`.
    pub fn versions_from_tags<'a>(
        &self,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<String>, Vec<String>) {
        let prefix = self.tag_prefix();
        let mut list = Vec::new();
        let mut incompatible = Vec::new();
        for tag in tags {
            let Some(v) = tag.strip_prefix(prefix.as_str()) else {
                continue;
            };
            if v.is_empty() || canonical_semver(v).as_deref() != Some(v) {
                continue;
            }
            if is_pseudo_version(v) {
                continue;
            }
            if check_path_major(v, &self.path_major).is_err() {
                if self.code_dir.is_empty()
                    && self.path_major.is_empty()
                    && semver_major(v).is_some_and(|m| m.as_str() > "v1")
                {
                    incompatible.push(v.to_owned());
                }
                continue;
            }
            list.push(v.to_owned());
        }
        semver_sort(&mut list);
        semver_sort(&mut incompatible);
        (list, incompatible)
    }

    /// Go's `LegacyGoMod`: the go.mod Go uses for a version without one.
    pub fn legacy_go_mod(&self) -> Vec<u8> {
        format!("module {}\n", auto_quote(&self.module_path)).into_bytes()
    }
}

/// `module.MatchPathMajor`.
pub fn match_path_major(v: &str, path_major: &str) -> bool {
    check_path_major(v, path_major).is_ok()
}

/// `module.PathMajorPrefix`: `/v2` → `v2`, `.v1-unstable` → `v1`.
pub fn path_major_prefix(path_major: &str) -> String {
    if path_major.is_empty() {
        return String::new();
    }
    let mut pm = path_major;
    if pm.starts_with(".v") {
        pm = pm.strip_suffix("-unstable").unwrap_or(pm);
    }
    pm[1..].to_owned()
}

/// Go's `hasPathPrefix`: whether `s` starts with the path elements of
/// `prefix`.
pub fn has_path_prefix(s: &str, prefix: &str) -> bool {
    match s.len().cmp(&prefix.len()) {
        Ordering::Less => false,
        Ordering::Equal => s == prefix,
        Ordering::Greater => {
            if prefix.ends_with('/') {
                return s.starts_with(prefix);
            }
            s.as_bytes()[prefix.len()] == b'/' && s.starts_with(prefix)
        }
    }
}

/// `semver.Sort`: by precedence, ties broken by the strings.
pub fn semver_sort(list: &mut [String]) {
    list.sort_by(|a, b| compare_semver(a, b).then_with(|| a.cmp(b)));
}

/// `module.PseudoVersion(major, older, t, rev)`.
pub fn pseudo_version(major: &str, older: &str, time: i64, rev: &str) -> String {
    let major = if major.is_empty() { "v0" } else { major };
    let segment = format!("{}-{rev}", format_pseudo_timestamp(time));
    let build = semver_build(older).to_owned();
    let Some(older) = canonical_semver(older) else {
        return format!("{major}.0.0-{segment}");
    };
    if !semver_prerelease(&older).is_empty() {
        return format!("{older}.0.{segment}{build}");
    }
    let dot = older.rfind('.').map_or(0, |i| i + 1);
    let (v, patch) = older.split_at(dot);
    format!("{v}{}-0.{segment}{build}", inc_decimal(patch))
}

/// The decimal string incremented by one (`incDecimal`).
fn inc_decimal(decimal: &str) -> String {
    let mut digits = decimal.as_bytes().to_vec();
    let mut i = digits.len();
    while i > 0 && digits[i - 1] == b'9' {
        digits[i - 1] = b'0';
        i -= 1;
    }
    if i > 0 {
        digits[i - 1] += 1;
    } else if let Some(first) = digits.first_mut() {
        *first = b'1';
        digits.push(b'0');
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// The revision at the end of a pseudo-version (`module.PseudoVersionRev`).
pub fn pseudo_version_rev(v: &str) -> Option<&str> {
    if !is_pseudo_version(v) {
        return None;
    }
    let main = v.split('+').next().unwrap_or(v);
    main.rsplit('-').next()
}

/// The timestamp of a pseudo-version as its 14 digits.
pub fn pseudo_version_timestamp(v: &str) -> Option<&str> {
    if !is_pseudo_version(v) {
        return None;
    }
    let main = v.split('+').next().unwrap_or(v);
    let mut parts = main.rsplitn(3, '-');
    parts.next()?;
    let stamp_part = parts.next()?;
    stamp_part.get(stamp_part.len().checked_sub(14)?..)
}

/// `module.PseudoVersionBase`: the release or prerelease a pseudo-version
/// is based on, `""` for the `vX.0.0-` form.
pub fn pseudo_version_base(v: &str) -> Option<String> {
    if !is_pseudo_version(v) {
        return None;
    }
    // parsePseudoVersion: strip the build, the revision, then the timestamp.
    let build = semver_build(v);
    let v = &v[..v.len() - build.len()];
    let v = &v[..v.rfind('-')?];
    let i = v.rfind('-')?;
    let base = match v.rfind('.') {
        Some(j) if j > i => &v[..j],
        _ => &v[..i],
    };
    match semver_prerelease(base) {
        // vX.0.0-yyyymmddhhmmss-abcdef: no base (Go rejects a build here).
        "" => build.is_empty().then(String::new),
        // vX.Y.(Z+1)-0.yyyymmddhhmmss-abcdef: the base is vX.Y.Z.
        "-0" => {
            let b = &base[..base.len() - 2];
            let k = b.rfind('.')? + 1;
            let patch = dec_decimal(&b[k..])?;
            Some(format!("{}{patch}{build}", &b[..k]))
        }
        // vX.Y.Z-pre.0.yyyymmddhhmmss-abcdef: the base is vX.Y.Z-pre.
        _ => Some(format!("{}{build}", base.strip_suffix(".0")?)),
    }
}

/// The decimal string decremented by one; `None` if it is all zeros.
fn dec_decimal(decimal: &str) -> Option<String> {
    let mut digits = decimal.as_bytes().to_vec();
    let mut i = digits.len();
    while i > 0 && digits[i - 1] == b'0' {
        digits[i - 1] = b'9';
        i -= 1;
    }
    if i == 0 {
        return None;
    }
    if i == 1 && digits[0] == b'1' && digits.len() > 1 {
        digits.remove(0);
    } else {
        digits[i - 1] -= 1;
    }
    String::from_utf8(digits).ok()
}

/// `codehost.isOriginTag`.
pub fn is_origin_tag(tag: &str) -> bool {
    canonical_semver(tag).is_some_and(|c| tag.starts_with(c.as_str())) && !is_pseudo_version(tag)
}

/// The `t1:` sum of `gitRepo.Tags(prefix)`: over the tags with that prefix,
/// sorted by name, those that look like versions.
pub fn tag_sum(refs: &HashMap<String, String>, prefix: &str) -> String {
    let mut tags: Vec<(&str, &str)> = refs
        .iter()
        .filter_map(|(r, h)| {
            let tag = r.strip_prefix("refs/tags/")?;
            tag.starts_with(prefix).then_some((tag, h.as_str()))
        })
        .collect();
    tags.sort_unstable();
    let dir = &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)];
    let mut h = Sha256::new();
    for (name, hash) in tags {
        if is_origin_tag(name.strip_prefix(dir).unwrap_or(name)) {
            h.update(format!("{} {hash}\n", go_quote(name)).as_bytes());
        }
    }
    format!("t1:{}", BASE64.encode(h.finalize()))
}

/// The `r1:` sum of all refs (`gitRepo.repoSum`).
pub fn repo_sum(refs: &HashMap<String, String>) -> String {
    let mut names: Vec<&String> = refs.keys().collect();
    names.sort_unstable();
    let mut h = Sha256::new();
    for name in names {
        h.update(format!("{} {}\n", go_quote(name), refs[name]).as_bytes());
    }
    format!("r1:{}", BASE64.encode(h.finalize()))
}

/// Parses `git ls-remote` output the way `gitRepo.loadRefs` does: HEAD,
/// heads and tags, annotated tags replaced by the commit they point to.
pub fn parse_ls_remote(out: &str) -> HashMap<String, String> {
    let mut refs = HashMap::new();
    let mut peeled = Vec::new();
    for line in out.split('\n') {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 2 {
            continue;
        }
        let (hash, name) = (f[0], f[1]);
        if name == "HEAD" || name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
            if let Some(tag) = name.strip_suffix("^{}") {
                peeled.push((tag.to_owned(), hash.to_owned()));
            } else {
                refs.insert(name.to_owned(), hash.to_owned());
            }
        }
    }
    for (tag, hash) in peeled {
        refs.insert(tag, hash);
    }
    refs
}

/// `modfile.ModulePath`: the path in a go.mod's `module` line, `""` if
/// there is none (or it is malformed).
pub fn go_mod_module_path(go_mod: &[u8]) -> String {
    for raw in go_mod.split(|&b| b == b'\n') {
        let mut line = raw;
        if let Some(i) = find(line, b"//") {
            line = &line[..i];
        }
        let line = line.trim_ascii();
        let Some(rest) = line.strip_prefix(b"module") else {
            continue;
        };
        let trimmed = rest.trim_ascii();
        if trimmed.len() == rest.len() || trimmed.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(trimmed) else {
            return String::new();
        };
        if text.starts_with('"') || text.starts_with('`') {
            return unquote(text).unwrap_or_default();
        }
        return text.to_owned();
    }
    String::new()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A subset of `strconv.Unquote` sufficient for module paths: raw strings,
/// and interpreted strings with the simple escapes. Anything else is
/// `None` (Go would then also report no module path or accept a path that
/// `CheckPath` refuses anyway).
fn unquote(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        return (!inner.contains('`')).then(|| inner.replace('\r', ""));
    }
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\n' => return None,
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

/// `modfile.AutoQuote`: quotes a path that could not appear bare in go.mod.
fn auto_quote(s: &str) -> String {
    let must = s.is_empty()
        || s.contains("//")
        || s.contains("/*")
        || s.chars().any(|c| {
            matches!(c, ' ' | '"' | '\'' | '`')
                || (matches!(c, '(' | ')' | '[' | ']' | '{' | '}' | ',') && s.len() > 1)
                || c.is_control()
        });
    if must {
        go_quote(s)
    } else {
        s.to_owned()
    }
}

/// `isMajor(mpath, pathMajor)` in coderepo.go.
pub fn is_major(mpath: &str, path_major: &str) -> bool {
    if mpath.is_empty() {
        return false;
    }
    let Some((_, mpath_major)) = split_path_version(mpath) else {
        return false;
    };
    if path_major.is_empty() {
        return matches!(path_major_prefix(mpath_major).as_str(), "" | "v0" | "v1");
    }
    if mpath_major.is_empty() {
        return false;
    }
    path_major[1..] == mpath_major[1..]
}

/// The `@v/list` body for `versions`: one per line, in `semver.Sort`
/// order.
pub fn list_text(versions: &[String]) -> String {
    let mut out = String::new();
    for v in versions {
        out.push_str(v);
        out.push('\n');
    }
    out
}

/// Whether `s` is all lowercase hex digits (`codehost.AllHex` accepts both
/// cases).
pub fn all_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_follow_new_code_repo() {
        let root = ModuleLayout::new("h.example/g/r", "h.example/g/r").unwrap();
        assert_eq!((root.code_dir.as_str(), root.path_major.as_str()), ("", ""));
        let sub = ModuleLayout::new("h.example/g/r", "h.example/g/r/sub/v2").unwrap();
        assert_eq!(sub.code_dir, "sub");
        assert_eq!(sub.path_major, "/v2");
        assert_eq!(sub.pseudo_major, "v2");
        assert_eq!(sub.tag_prefix(), "sub/");
        let v2 = ModuleLayout::new("h.example/g/r", "h.example/g/r/v2").unwrap();
        assert_eq!(v2.code_dir, "");
        assert_eq!(v2.path_prefix, "h.example/g/r");
        assert!(ModuleLayout::new("h.example/g/r", "h.example/g/other").is_err());
        assert!(ModuleLayout::new("h.example/g/r", "h.example/g/r/v1").is_err());
    }

    #[test]
    fn selects_release_tags_like_versions() {
        let root = ModuleLayout::new("h.example/r", "h.example/r").unwrap();
        let tags = [
            "v1.0.0",
            "v1.10.0",
            "v1.2.0",
            "v1.2",
            "v2.0.0",
            "v0.0.0-20200101000000-0123456789ab",
            "sub/v1.0.0",
            "v1.3.0-rc.1",
            "v1.3.0+meta",
            "junk",
        ];
        let (list, inc) = root.versions_from_tags(tags.iter().copied());
        assert_eq!(list, ["v1.0.0", "v1.2.0", "v1.3.0-rc.1", "v1.10.0"]);
        assert_eq!(inc, ["v2.0.0"]);
        let sub = ModuleLayout::new("h.example/r", "h.example/r/sub").unwrap();
        assert_eq!(sub.versions_from_tags(tags.iter().copied()).0, ["v1.0.0"]);
        let v2 = ModuleLayout::new("h.example/r", "h.example/r/v2").unwrap();
        let (list, inc) = v2.versions_from_tags(tags.iter().copied());
        assert_eq!(list, ["v2.0.0"]);
        assert!(inc.is_empty());
    }

    #[test]
    fn tag_to_version_and_rev_to_rev() {
        let sub = ModuleLayout::new("h.example/r", "h.example/r/sub").unwrap();
        assert_eq!(sub.tag_to_version("sub/v1.2.3"), ("v1.2.3".into(), true));
        assert_eq!(sub.tag_to_version("sub/v1.2.3+x"), ("v1.2.3".into(), false));
        assert_eq!(sub.tag_to_version("sub/v1.2"), (String::new(), false));
        assert_eq!(sub.tag_to_version("v1.2.3"), (String::new(), false));
        assert_eq!(sub.rev_to_rev("v1.2.3"), "sub/v1.2.3");
        assert_eq!(sub.rev_to_rev("main"), "main");
        assert_eq!(
            sub.rev_to_rev("v0.0.0-20200101000000-0123456789ab"),
            "0123456789ab"
        );
        let root = ModuleLayout::new("h.example/r", "h.example/r").unwrap();
        assert_eq!(root.rev_to_rev("v3.0.0+incompatible"), "v3.0.0");
    }

    #[test]
    fn pseudo_versions_as_module_pseudo_version() {
        let t = 1_700_000_000;
        assert_eq!(
            pseudo_version("", "", t, "0123456789ab"),
            "v0.0.0-20231114221320-0123456789ab"
        );
        assert_eq!(
            pseudo_version("v2", "", t, "0123456789ab"),
            "v2.0.0-20231114221320-0123456789ab"
        );
        assert_eq!(
            pseudo_version("", "v1.2.9", t, "0123456789ab"),
            "v1.2.10-0.20231114221320-0123456789ab"
        );
        assert_eq!(
            pseudo_version("", "v1.3.0-rc.1", t, "0123456789ab"),
            "v1.3.0-rc.1.0.20231114221320-0123456789ab"
        );
        assert_eq!(inc_decimal("99"), "100");
        assert_eq!(dec_decimal("100").as_deref(), Some("99"));
        assert_eq!(dec_decimal("10").as_deref(), Some("9"));
        assert_eq!(dec_decimal("0"), None);
    }

    #[test]
    fn pseudo_version_parts() {
        let p = "v1.2.10-0.20231114221320-0123456789ab";
        assert_eq!(pseudo_version_rev(p), Some("0123456789ab"));
        assert_eq!(pseudo_version_timestamp(p), Some("20231114221320"));
        assert_eq!(pseudo_version_base(p).as_deref(), Some("v1.2.9"));
        let zero = "v0.0.0-20231114221320-0123456789ab";
        assert_eq!(pseudo_version_base(zero).as_deref(), Some(""));
        let pre = "v1.3.0-rc.1.0.20231114221320-0123456789ab";
        assert_eq!(pseudo_version_base(pre).as_deref(), Some("v1.3.0-rc.1"));
        let inc = "v3.0.1-0.20231114221320-0123456789ab+incompatible";
        assert_eq!(
            pseudo_version_base(inc).as_deref(),
            Some("v3.0.0+incompatible")
        );
        assert_eq!(pseudo_version_rev("v1.0.0"), None);
    }

    #[test]
    fn go_mod_module_lines() {
        assert_eq!(go_mod_module_path(b"module a.example/m\n"), "a.example/m");
        assert_eq!(
            go_mod_module_path(b"// c\nmodule   a.example/m // c\n\ngo 1.21\n"),
            "a.example/m"
        );
        assert_eq!(
            go_mod_module_path(b"module \"a.example/q\"\n"),
            "a.example/q"
        );
        assert_eq!(go_mod_module_path(b"modulex a\n"), "");
        assert_eq!(go_mod_module_path(b"go 1.21\n"), "");
        let layout = ModuleLayout::new("h.example/r", "h.example/r").unwrap();
        assert_eq!(layout.legacy_go_mod(), b"module h.example/r\n");
    }

    #[test]
    fn majors() {
        assert!(is_major("h.example/r", ""));
        assert!(!is_major("h.example/r/v2", ""));
        assert!(is_major("h.example/r/v2", "/v2"));
        assert!(!is_major("h.example/r", "/v2"));
        assert!(!is_major("", ""));
    }

    #[test]
    fn ls_remote_and_sums() {
        let out = "aaa\tHEAD\naaa\trefs/heads/main\nbbb\trefs/tags/v1.0.0\nccc\trefs/tags/v1.0.0^{}\nddd\trefs/pull/1/head\n";
        let refs = parse_ls_remote(out);
        assert_eq!(refs.len(), 3);
        assert_eq!(refs["refs/tags/v1.0.0"], "ccc");
        // Checked against Go: fmt.Fprintf(h, "%q %s\n", "v1.0.0", "ccc").
        let mut h = Sha256::new();
        h.update(b"\"v1.0.0\" ccc\n");
        assert_eq!(
            tag_sum(&refs, ""),
            format!("t1:{}", BASE64.encode(h.finalize()))
        );
        assert!(repo_sum(&refs).starts_with("r1:"));
        assert_eq!(
            list_text(&["v1.0.0".into(), "v1.1.0".into()]),
            "v1.0.0\nv1.1.0\n"
        );
    }
}
