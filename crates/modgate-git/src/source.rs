//! [`ModuleSource`]: one module of one Git repository, answering the
//! GOPROXY protocol the way `cmd/go/internal/modfetch`'s `codeRepo` over
//! `gitRepo` does with `GOPROXY=direct` — `Versions`, `Stat` (with
//! `convert`, `findDir`, `validatePseudoVersion`), `Latest`, `GoMod` and
//! `Zip` — reading the repository through a [`Mirror`].
//!
//! Deliberate differences from the go command, and why:
//! * The constructor takes the repository root's import path, not a
//!   subdirectory: the module's directory (and whether `/vN` is a
//!   directory or only a go.mod path) is derived from it exactly as
//!   `newCodeRepo` does, so a template cannot mis-map major versions.
//! * Revisions are resolved as a go command with an *empty* module cache
//!   resolves them (Go's answers for `@<hash>` differ slightly with a warm
//!   VCS cache: a commit at a branch tip then loses its `Origin.Ref`); the
//!   gateway's answers must not depend on its history.
//! * `.mod` and `.zip` first `Stat` the version, as `go mod download` does,
//!   so a branch named like a version is never served as that version.
//! * Retractions are not read (Go ignores retracted tags as pseudo-version
//!   bases and as a commit's canonical version): see the crate docs.
//! * `Zip` does not refuse a module whose go.mod asks for a newer Go than
//!   the local toolchain (that check is about the client's toolchain).
//! * The zip bytes are this crate's own (deflated, fixed timestamps); their
//!   content, hence the `h1:` hash, is Go's. The file list comes from the
//!   same `git archive` invocation Go runs, so `.gitattributes`
//!   (`eol`, `text`, `ident`) transforms are applied exactly as for Go.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modgate_protocol::{
    canonical_version, compare_semver, is_pseudo_version, is_valid_semver, semver_major,
    split_path_version,
};

use crate::error::GitError;
use crate::info::{format_pseudo_timestamp, Origin, RevInfo};
use crate::modzip::{check_files, Candidate, EntryKind, ZipBuilder, MAX_ZIP_FILE};
use crate::rules::{
    all_hex, go_mod_module_path, is_major, list_text, match_path_major, pseudo_version,
    pseudo_version_base, pseudo_version_rev, pseudo_version_timestamp, tag_sum, ModuleLayout,
};
use crate::transport::{GitCommand, Mirror, Refs};

/// `minHashDigits`: shorter hex strings are not taken for hashes.
const MIN_HASH_DIGITS: usize = 7;

/// One module in one repository.
#[derive(Debug, Clone)]
pub struct ModuleSource {
    mirror: Arc<Mirror>,
    layout: ModuleLayout,
    max_age: Duration,
}

/// A revision as `gitRepo.stat` reports it.
#[derive(Debug, Clone)]
struct HostRev {
    name: String,
    short: String,
    time: i64,
    version: String,
    tags: Vec<String>,
    origin: Origin,
}

impl ModuleSource {
    /// The module `module_path` of the repository `mirror`, whose root has
    /// the import path `code_root` (e.g. `git.corp.example/group/repo` for
    /// `git.corp.example/group/repo/sub/v2`). Refs are refreshed from the
    /// host when older than 30 seconds (see [`with_max_age`](Self::with_max_age)), and
    /// again (rate-limited) when a revision asked for is not in them.
    pub fn new(
        mirror: Arc<Mirror>,
        code_root: &str,
        module_path: &str,
    ) -> Result<ModuleSource, GitError> {
        Ok(ModuleSource {
            mirror,
            layout: ModuleLayout::new(code_root, module_path)?,
            max_age: Duration::from_secs(30),
        })
    }

    /// Refreshes refs from the host only when older than `max_age`.
    pub fn with_max_age(mut self, max_age: Duration) -> ModuleSource {
        self.max_age = max_age;
        self
    }

    /// Where the module lives in the repository.
    pub fn layout(&self) -> &ModuleLayout {
        &self.layout
    }

    fn session(&self) -> Result<Session<'_>, GitError> {
        Ok(self.session_with(self.mirror.refresh(self.max_age)?))
    }

    fn session_with(&self, refs: Arc<Refs>) -> Session<'_> {
        Session {
            src: self,
            refs,
            stats: RefCell::new(HashMap::new()),
            files: RefCell::new(HashMap::new()),
        }
    }

    /// A session whose refs have `version` ([`Session::require_version`]),
    /// refreshed once on a miss as [`fresh_on_miss`](Self::fresh_on_miss)
    /// does.
    fn session_for(&self, version: &str) -> Result<Session<'_>, GitError> {
        let asked = Instant::now();
        let s = self.session()?;
        match s.require_version(version) {
            Ok(()) => Ok(s),
            Err(GitError::UnknownRevision { .. }) => {
                let interval = self.mirror.runner.options.miss_refresh_interval;
                let s = self.session_with(self.mirror.refresh_after(asked, interval)?);
                s.require_version(version)?;
                Ok(s)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `op` on the refs; if it finds no such revision, asks the host
    /// again (a tag pushed a moment ago: `go` in direct mode would see it)
    /// and runs it once more. The refresh is shared and rate-limited per
    /// repository ([`Mirror::refresh_after`]).
    fn fresh_on_miss<T>(
        &self,
        op: impl Fn(&Session<'_>) -> Result<T, GitError>,
    ) -> Result<T, GitError> {
        let asked = Instant::now();
        match op(&self.session()?) {
            Err(GitError::UnknownRevision { .. }) => {
                let interval = self.mirror.runner.options.miss_refresh_interval;
                let refs = self.mirror.refresh_after(asked, interval)?;
                op(&self.session_with(refs))
            }
            other => other,
        }
    }

    /// The module's release versions (`codeRepo.Versions("")`), sorted.
    pub fn versions(&self) -> Result<Vec<String>, GitError> {
        self.session()?.versions()
    }

    /// Every version the repository's tags name for this module as the refs stand (refreshed
    /// when older than the source's max age): its release and prerelease versions, and those of
    /// a higher major without a `/vN` path as `+incompatible` — without reading any `go.mod`,
    /// so a superset of [`versions`](Self::versions). What a mirror refresh "saw" of the module,
    /// for the cooldown's sightings.
    pub fn tagged_versions(&self) -> Result<Vec<String>, GitError> {
        let s = self.session()?;
        let prefix = s.layout().tag_prefix();
        let names: Vec<&str> = s.tags(&prefix).into_iter().map(|(t, _)| t).collect();
        let (mut list, incompatible) = s.layout().versions_from_tags(names);
        list.extend(
            incompatible
                .into_iter()
                .map(|v| format!("{v}+incompatible")),
        );
        Ok(list)
    }

    /// The `@v/list` body.
    pub fn list(&self) -> Result<String, GitError> {
        Ok(list_text(&self.versions()?))
    }

    /// The `@latest` answer: the version of the repository's `HEAD`
    /// (`codeRepo.Latest`, which the go command asks a proxy for only when
    /// the list offers no release).
    pub fn latest(&self) -> Result<RevInfo, GitError> {
        let s = self.session()?;
        let Some(head) = s.refs.map.get("HEAD").cloned() else {
            return Err(GitError::UnknownRevision {
                module: self.layout.module_path.clone(),
                rev: "latest".into(),
            });
        };
        let mut info = s.host_stat(&head)?;
        info.origin.r#ref = "HEAD".into();
        info.origin.hash = head;
        s.convert(info, "")
    }

    /// `codeRepo.Stat(rev)`: the version a version, branch, tag or commit
    /// hash (prefix) resolves to, with the full `Origin` the go command
    /// reports for it (`TagPrefix`/`TagSum` for pseudo-versions, `Ref`).
    pub fn stat(&self, rev: &str) -> Result<RevInfo, GitError> {
        if rev == "latest" {
            return self.latest();
        }
        self.fresh_on_miss(|s| s.stat(rev))
    }

    /// The `.info` answer for `query`: for a canonical version, the bytes
    /// the go command stores in its module cache (`writeDiskStat`); for any
    /// other query, [`stat`](Self::stat)'s full answer.
    pub fn info(&self, query: &str) -> Result<RevInfo, GitError> {
        let info = self.stat(query)?;
        if canonical_version(query).as_deref() == Some(query) {
            Ok(info.cleaned())
        } else {
            Ok(info)
        }
    }

    /// The `.mod` answer for a canonical version (`codeRepo.GoMod`).
    pub fn go_mod(&self, version: &str) -> Result<Vec<u8>, GitError> {
        let s = self.session_for(version)?;
        let (rev, dir, gomod) = s.find_dir(version)?;
        if let Some(gomod) = gomod {
            return Ok(gomod);
        }
        let path = join(&dir, "go.mod");
        match s.read_file(&rev, &path)? {
            Some(data) => Ok(data),
            None => Ok(self.layout.legacy_go_mod()),
        }
    }

    /// The `.zip` for a canonical version, in memory.
    pub fn zip(&self, version: &str) -> Result<Vec<u8>, GitError> {
        let mut out = std::io::Cursor::new(Vec::new());
        self.zip_to(version, &mut out)?;
        Ok(out.into_inner())
    }

    /// Writes the `.zip` for a canonical version to `sink` (`codeRepo.Zip`).
    pub fn zip_to<W: Write + Seek>(&self, version: &str, sink: W) -> Result<W, GitError> {
        let s = self.session_for(version)?;
        let (rev, subdir, _) = s.find_dir(version)?;
        let hash = s.host_stat(&rev)?.name;
        let zip_err = |detail: String| GitError::Zip {
            module: self.layout.module_path.clone(),
            version: version.to_owned(),
            detail,
        };

        // git archive, exactly as Go runs it, spooled to a temporary file.
        let mut spool = tempfile::tempfile().map_err(|source| GitError::Io {
            what: "cannot create a temporary file for",
            path: self.mirror.dir().to_owned(),
            source,
        })?;
        let mut args = vec![
            "-c".to_owned(),
            "core.autocrlf=input".into(),
            "-c".into(),
            "core.eol=lf".into(),
            "archive".into(),
            "--format=zip".into(),
            "--prefix=prefix/".into(),
            hash.clone(),
        ];
        if !subdir.is_empty() {
            args.push("--".into());
            args.push(subdir.clone());
        }
        let mut cmd = GitCommand::local(&[], MAX_ZIP_FILE);
        cmd.args = args;
        self.mirror
            .local_to_file(&cmd, &mut spool)
            .map_err(|e| match e {
                GitError::OutputTooLarge { .. } => zip_err("downloaded zip file too large".into()),
                other => other,
            })?;
        spool.rewind().map_err(|source| GitError::Io {
            what: "cannot rewind the archive of",
            path: self.mirror.dir().to_owned(),
            source,
        })?;
        let mut archive = zip::ZipArchive::new(spool)
            .map_err(|e| zip_err(format!("reading git archive: {e}")))?;

        // Translate from the zip we have to the zip we want.
        let sub_prefix = if subdir.is_empty() {
            String::new()
        } else {
            format!("{}/", subdir.trim_matches('/'))
        };
        let mut candidates = Vec::new();
        let mut sources = Vec::new();
        let mut have_license = false;
        for index in 0..archive.len() {
            let entry = archive
                .by_index_raw(index)
                .map_err(|e| zip_err(format!("reading git archive: {e}")))?;
            let raw = String::from_utf8_lossy(entry.name_raw()).into_owned();
            let Some(name) = raw.strip_prefix("prefix/") else {
                return Err(zip_err(
                    "zip file contains more than one top-level directory".into(),
                ));
            };
            let Some(name) = name.strip_prefix(sub_prefix.as_str()) else {
                continue;
            };
            if name.is_empty() || name.ends_with('/') {
                continue;
            }
            let kind = match entry.unix_mode().map(|m| m & 0o170000) {
                Some(0o120000) => EntryKind::Symlink,
                Some(0) | Some(0o100000) | None => EntryKind::Regular,
                Some(_) => EntryKind::Other,
            };
            if name == "LICENSE" {
                have_license = true;
            }
            candidates.push(Candidate {
                path: name.to_owned(),
                kind,
                size: entry.size(),
            });
            sources.push(Some(index));
        }
        let mut license = None;
        if !have_license && !sub_prefix.is_empty() {
            if let Some(data) = s.read_file(&hash, "LICENSE")? {
                candidates.push(Candidate {
                    path: "LICENSE".into(),
                    kind: EntryKind::Regular,
                    size: data.len() as u64,
                });
                sources.push(None);
                license = Some(data);
            }
        }
        let plan = check_files(&candidates).map_err(|e| zip_err(e.0))?;
        let mut builder = ZipBuilder::new(sink, &self.layout.module_path, version);
        for i in plan.valid {
            let data = match sources[i] {
                Some(index) => {
                    let mut entry = archive
                        .by_index(index)
                        .map_err(|e| zip_err(format!("reading git archive: {e}")))?;
                    let mut data = Vec::new();
                    (&mut entry)
                        .take(candidates[i].size + 1)
                        .read_to_end(&mut data)
                        .map_err(|e| zip_err(format!("reading git archive: {e}")))?;
                    if data.len() as u64 > candidates[i].size {
                        return Err(zip_err(format!(
                            "file {} is larger than declared size",
                            modgate_protocol::go_quote(&candidates[i].path)
                        )));
                    }
                    data
                }
                None => license.clone().unwrap_or_default(),
            };
            builder
                .add(&candidates[i].path, &data)
                .map_err(|e| zip_err(format!("writing: {e}")))?;
        }
        builder
            .finish()
            .map_err(|e| zip_err(format!("writing: {e}")))
    }
}

/// A file read at a commit: its bytes, or `None` when it is absent.
type FileRead = Option<Vec<u8>>;

/// One request's view of the repository: the refs it was answered from
/// and memoized git lookups.
struct Session<'a> {
    src: &'a ModuleSource,
    refs: Arc<Refs>,
    stats: RefCell<HashMap<String, Option<HostRev>>>,
    files: RefCell<HashMap<(String, String), FileRead>>,
}

impl Session<'_> {
    fn layout(&self) -> &ModuleLayout {
        &self.src.layout
    }

    fn module(&self) -> &str {
        &self.src.layout.module_path
    }

    fn unknown(&self, rev: &str) -> GitError {
        GitError::UnknownRevision {
            module: self.module().to_owned(),
            rev: rev.to_owned(),
        }
    }

    fn tags(&self, prefix: &str) -> Vec<(&str, &str)> {
        let mut tags: Vec<(&str, &str)> = self
            .refs
            .map
            .iter()
            .filter_map(|(r, h)| {
                let tag = r.strip_prefix("refs/tags/")?;
                tag.starts_with(prefix).then_some((tag, h.as_str()))
            })
            .collect();
        tags.sort_unstable();
        tags
    }

    /// `codeRepo.Versions("")`.
    fn versions(&self) -> Result<Vec<String>, GitError> {
        let prefix = self.layout().tag_prefix();
        let names: Vec<&str> = self.tags(&prefix).into_iter().map(|(t, _)| t).collect();
        let (mut list, incompatible) = self.layout().versions_from_tags(names);
        if incompatible.is_empty() || !self.layout().path_major.is_empty() {
            return Ok(list);
        }
        if let Some(last) = list.last() {
            if self.version_has_go_mod(last)? {
                return Ok(list);
            }
        }
        let mut last_major = String::new();
        let mut last_major_has_go_mod = false;
        for (i, v) in incompatible.iter().enumerate() {
            let major = semver_major(v).unwrap_or_default();
            if major != last_major {
                let latest_at_major = incompatible[i..]
                    .iter()
                    .take_while(|w| semver_major(w).unwrap_or_default() == major)
                    .last()
                    .unwrap_or(v);
                last_major_has_go_mod = self.version_has_go_mod(latest_at_major)?;
                last_major = major;
            }
            if !last_major_has_go_mod {
                list.push(format!("{v}+incompatible"));
            }
        }
        Ok(list)
    }

    fn version_has_go_mod(&self, tag: &str) -> Result<bool, GitError> {
        Ok(self.read_file(tag, "go.mod")?.is_some())
    }

    /// `gitRepo.Stat` as a go command with an empty cache runs it.
    fn host_stat(&self, rev: &str) -> Result<HostRev, GitError> {
        if let Some(known) = self.stats.borrow().get(rev) {
            return known.clone().ok_or_else(|| self.unknown(rev));
        }
        let result = self.host_stat_uncached(rev)?;
        self.stats
            .borrow_mut()
            .insert(rev.to_owned(), result.clone());
        result.ok_or_else(|| self.unknown(rev))
    }

    fn host_stat_uncached(&self, rev: &str) -> Result<Option<HostRev>, GitError> {
        let refs = &self.refs.map;
        let hexish = rev.len() >= MIN_HASH_DIGITS && rev.len() <= 40 && all_hex(rev);
        let tag_ref = format!("refs/tags/{rev}");
        let head_ref = format!("refs/heads/{rev}");
        let (mut reference, version, log_rev);
        if refs.contains_key(&tag_ref) {
            reference = tag_ref.clone();
            version = rev.to_owned();
            log_rev = tag_ref;
        } else if let Some(hash) = refs.get(&head_ref) {
            reference = head_ref.clone();
            version = hash.clone();
            log_rev = head_ref;
        } else if rev == "HEAD" && refs.contains_key("HEAD") {
            let hash = refs["HEAD"].clone();
            reference = hash.clone();
            version = hash.clone();
            log_rev = hash;
        } else if hexish {
            let mut found_ref = String::new();
            let mut found_hash = String::new();
            for (k, h) in refs {
                if h.starts_with(rev) {
                    if !found_hash.is_empty() && &found_hash != h {
                        return Err(GitError::InvalidVersion {
                            module: self.module().to_owned(),
                            version: rev.to_owned(),
                            detail: format!("ambiguous revision {rev}"),
                        });
                    }
                    if found_ref.is_empty() || found_ref.as_str() > k.as_str() {
                        found_ref = k.clone();
                    }
                    found_hash = h.clone();
                }
            }
            if found_hash.is_empty() {
                reference = String::new();
                version = rev.to_owned();
                log_rev = rev.to_owned();
            } else {
                version = found_hash.clone();
                if found_ref == "HEAD" {
                    reference = found_hash.clone();
                    log_rev = found_hash;
                } else {
                    reference = found_ref.clone();
                    log_rev = found_ref;
                }
            }
        } else {
            return Ok(None);
        }
        let Some(mut info) = self.stat_local(&version, &log_rev)? else {
            return Ok(None);
        };
        info.origin.hash = info.name.clone();
        if reference != info.origin.hash {
            // Go's deferred assignment: Ref is the ref resolved through.
            info.origin.r#ref = std::mem::take(&mut reference);
        }
        Ok(Some(info))
    }

    /// `gitRepo.statLocal(version, rev)`: `git log -n1` of a ref name or
    /// a hex hash (never raw user input: see `host_stat_uncached`).
    fn stat_local(&self, version: &str, rev: &str) -> Result<Option<HostRev>, GitError> {
        if rev.starts_with('-') {
            return Ok(None);
        }
        let mut cmd = GitCommand::local(
            &[
                "-c",
                "log.showsignature=false",
                "log",
                "--no-decorate",
                "-n1",
                "--format=format:%H %ct %D",
                rev,
                "--",
            ],
            1 << 20,
        );
        cmd.ok_codes = &[0, 128];
        let out = self.src.mirror.local(&cmd)?;
        if out.code != Some(0) {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() < 2 {
            return Ok(None);
        }
        let hash = f[0].to_owned();
        let time: i64 = f[1].parse().map_err(|_| GitError::BadOutput {
            command: "log".into(),
            detail: format!("invalid time {:?}", f[1]),
        })?;
        let mut version = version.to_owned();
        if hash.starts_with(version.as_str()) {
            version = hash.clone();
        }
        let mut tags = Vec::new();
        let mut i = 2;
        while i < f.len() {
            if f[i] == "tag:" {
                i += 1;
                if let Some(t) = f.get(i) {
                    tags.push(t.trim_end_matches(',').to_owned());
                }
            }
            i += 1;
        }
        tags.sort();
        let mut origin = Origin {
            vcs: "git".into(),
            url: self.src.mirror.url().to_owned(),
            hash: hash.clone(),
            ..Origin::default()
        };
        if !hash.starts_with(rev) {
            origin.r#ref = rev.to_owned();
        }
        let final_version = if tags.iter().any(|t| t == &version) {
            version
        } else {
            hash.clone()
        };
        Ok(Some(HostRev {
            short: if hash.len() == 40 && all_hex(&hash) {
                hash[..12].to_owned()
            } else {
                hash.clone()
            },
            name: hash,
            time,
            version: final_version,
            tags,
            origin,
        }))
    }

    /// `gitRepo.ReadFile(rev, file)`: `None` when it does not exist (or
    /// is not a file).
    fn read_file(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let hash = match self.host_stat(rev) {
            Ok(info) => info.name,
            Err(GitError::UnknownRevision { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = (hash.clone(), path.to_owned());
        if let Some(known) = self.files.borrow().get(&key) {
            return Ok(known.clone());
        }
        let request = format!("{hash}:{path}\n");
        let mut cmd = GitCommand::local(&["cat-file", "--batch"], MAX_ZIP_FILE);
        cmd.stdin = Some(request.as_bytes());
        let out = self.src.mirror.local(&cmd)?;
        let data = parse_cat_file(&out.stdout)?;
        self.files.borrow_mut().insert(key, data.clone());
        Ok(data)
    }

    /// `codeRepo.Stat(rev)` for anything but `latest`.
    fn stat(&self, rev: &str) -> Result<RevInfo, GitError> {
        let code_rev = self.layout().rev_to_rev(rev);
        let info = match self.host_stat(&code_rev) {
            Ok(info) => info,
            Err(GitError::UnknownRevision { .. }) => return Err(self.unknown(rev)),
            Err(e) => return Err(e),
        };
        self.convert(info, rev)
    }

    /// Ensures `version` is canonical and names this module's version.
    fn require_version(&self, version: &str) -> Result<(), GitError> {
        if canonical_version(version).as_deref() != Some(version) {
            return Err(GitError::invalid(
                self.module(),
                version,
                format!("version {version} is not canonical"),
            ));
        }
        let info = self.stat(version)?;
        if info.version != version {
            return Err(GitError::invalid(
                self.module(),
                version,
                format!("resolves to version {}", info.version),
            ));
        }
        Ok(())
    }

    /// `codeRepo.convert(info, statVers)`.
    fn convert(&self, info: HostRev, stat_vers: &str) -> Result<RevInfo, GitError> {
        let mut result = self.convert_version(&info, stat_vers)?;
        let layout = self.layout();
        let mut origin = info.origin.clone();
        origin.subdir = layout.code_dir.clone();
        let v = &result.version;
        if is_pseudo_version(v) && (v != stat_vers || !v.starts_with("v0.0.0-")) {
            let mut prefix = layout.tag_prefix();
            if !layout.path_major.is_empty() {
                prefix.push_str(&layout.path_major[1..]);
                prefix.push('.');
            }
            origin.tag_sum = tag_sum(&self.refs.map, &prefix);
            origin.tag_prefix = prefix;
        }
        result.origin = Some(origin);
        Ok(result)
    }

    fn can_use_incompatible(
        &self,
        info: &HostRev,
        v: &str,
        stat_vers: &str,
    ) -> Result<bool, GitError> {
        let layout = self.layout();
        if !layout.code_dir.is_empty() || !layout.path_major.is_empty() {
            return Ok(false);
        }
        if self.read_file(&info.name, "go.mod")?.is_some() {
            return Ok(false);
        }
        if !v.is_empty() && !stat_vers.ends_with("+incompatible") {
            let major = semver_major(v).unwrap_or_default();
            if self
                .read_file(&info.name, &format!("{major}/go.mod"))?
                .is_some()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn check_canonical(
        &self,
        info: &HostRev,
        v: &str,
        stat_vers: &str,
    ) -> Result<RevInfo, GitError> {
        let layout = self.layout();
        if let Err(e) = self.find_dir(v) {
            return Err(GitError::invalid(self.module(), v, not_found_text(e)));
        }
        let mut v = v.to_owned();
        if v == stat_vers.strip_suffix("+incompatible").unwrap_or(stat_vers) {
            v = stat_vers.to_owned();
        }
        let base = v.strip_suffix("+incompatible").unwrap_or(&v).to_owned();
        let mut incompatible_err = None;
        if !match_path_major(&base, &layout.path_major) {
            if self.can_use_incompatible(info, &base, stat_vers)? {
                v = format!("{base}+incompatible");
            } else if !layout.path_major.is_empty() {
                incompatible_err = Some(
                    "module path includes a major version suffix, so major version must match"
                        .to_owned(),
                );
            } else {
                incompatible_err = Some(format!(
                    "module contains a go.mod file, so module path must match major version (\"{}/{}\")",
                    layout.path_prefix,
                    semver_major(&v).unwrap_or_default()
                ));
            }
        } else if v.ends_with("+incompatible") {
            incompatible_err = Some(format!(
                "+incompatible suffix not allowed: major version {} is compatible",
                semver_major(&v).unwrap_or_default()
            ));
        }
        if !stat_vers.is_empty() && canonical_version(stat_vers).as_deref() == Some(stat_vers) {
            let stat_base = stat_vers.strip_suffix("+incompatible").unwrap_or(stat_vers);
            if stat_base != base {
                return Err(GitError::invalid(
                    self.module(),
                    stat_vers,
                    format!("resolves to version {v} ({stat_base} is not a tag)"),
                ));
            }
        }
        if let Some(detail) = incompatible_err {
            return Err(GitError::invalid(self.module(), &v, detail));
        }
        Ok(RevInfo {
            version: v,
            time: info.time,
            origin: None,
        })
    }

    fn convert_version(&self, info: &HostRev, stat_vers: &str) -> Result<RevInfo, GitError> {
        let layout = self.layout();
        if is_pseudo_version(stat_vers) {
            let result = self.check_canonical(info, stat_vers, stat_vers)?;
            self.validate_pseudo_version(info, stat_vers)?;
            return Ok(result);
        }
        // Retractions are not read (see the module docs).
        let (v, exact) = layout.tag_to_version(&info.version);
        if exact {
            if let Ok(found) = self.check_canonical(info, &v, stat_vers) {
                return Ok(found);
            }
        }
        let mut highest = String::new();
        let mut pseudo_base = String::new();
        for tag in &info.tags {
            let (v, exact) = layout.tag_to_version(tag);
            if !stat_vers.is_empty() && compare_semver(&v, stat_vers).is_eq() {
                if exact {
                    return self.check_canonical(info, &v, stat_vers);
                }
                pseudo_base = v.clone();
            }
            if exact
                && compare_semver(&highest, &v).is_lt()
                && (match_path_major(&v, &layout.path_major)
                    || self.can_use_incompatible(info, &v, stat_vers)?)
            {
                highest = v;
            }
        }
        if !highest.is_empty() {
            return self.check_canonical(info, &highest, stat_vers);
        }
        if pseudo_base.is_empty() {
            let tag = self.recent_tag(info, stat_vers)?;
            if !tag.is_empty() {
                pseudo_base = layout.tag_to_version(&tag).0;
            }
        }
        let pseudo = pseudo_version(&layout.pseudo_major, &pseudo_base, info.time, &info.short);
        self.check_canonical(info, &pseudo, stat_vers)
    }

    /// `gitRepo.RecentTag(rev, tagPrefix, tagAllowed)` over the full
    /// mirror: the highest allowed tag merged into the revision.
    fn recent_tag(&self, info: &HostRev, stat_vers: &str) -> Result<String, GitError> {
        let layout = self.layout();
        let prefix = layout.tag_prefix();
        let out = self.src.mirror.local(&GitCommand::local(
            &[
                "for-each-ref",
                "--format",
                "%(refname)",
                "refs/tags",
                "--merged",
                &info.name,
            ],
            64 << 20,
        ))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut highest = String::new();
        for line in text.split('\n') {
            let line = line.trim();
            let Some(tag) = line.strip_prefix("refs/tags/") else {
                continue;
            };
            let Some(semtag) = tag.strip_prefix(prefix.as_str()) else {
                continue;
            };
            // tagAllowed
            let (v, _) = layout.tag_to_version(tag);
            if v.is_empty()
                || (!match_path_major(&v, &layout.path_major)
                    && !self.can_use_incompatible(info, &v, stat_vers)?)
            {
                continue;
            }
            if compare_semver(semtag, &highest).is_gt() {
                highest = semtag.to_owned();
            }
        }
        Ok(if highest.is_empty() {
            String::new()
        } else {
            format!("{prefix}{highest}")
        })
    }

    /// `codeRepo.validatePseudoVersion`.
    fn validate_pseudo_version(&self, info: &HostRev, version: &str) -> Result<(), GitError> {
        let bad = |detail: String| GitError::invalid(self.module(), version, detail);
        let rev = pseudo_version_rev(version).unwrap_or_default();
        if rev != info.short {
            return Err(bad(if rev.starts_with(info.short.as_str()) {
                format!(
                    "revision is longer than canonical (expected {})",
                    info.short
                )
            } else if info.short.starts_with(rev) {
                format!(
                    "revision is shorter than canonical (expected {})",
                    info.short
                )
            } else {
                format!(
                    "does not match short name of revision (expected {})",
                    info.short
                )
            }));
        }
        let stamp = format_pseudo_timestamp(info.time);
        if pseudo_version_timestamp(version) != Some(stamp.as_str()) {
            return Err(bad(format!(
                "does not match version-control timestamp (expected {stamp})"
            )));
        }
        let tag_prefix = self.layout().tag_prefix();
        let trimmed = version.strip_suffix("+incompatible").unwrap_or(version);
        let Some(base) = pseudo_version_base(trimmed) else {
            return Err(bad("invalid pseudo-version base".into()));
        };
        if base.is_empty() {
            if self.layout().pseudo_major.is_empty()
                && semver_major(version).as_deref() == Some("v1")
            {
                return Err(bad(
                    "major version without preceding tag must be v0, not v1".into(),
                ));
            }
            return Ok(());
        }
        for tag in &info.tags {
            if tag.strip_prefix(tag_prefix.as_str()).unwrap_or(tag) == base {
                return Err(bad(format!(
                    "tag ({tag}) found on revision {rev} is already canonical, so should not be replaced with a pseudo-version derived from that tag"
                )));
            }
        }
        let mut last_tag = String::new();
        for (tag, _) in self.tags(&format!("{tag_prefix}{base}")) {
            let only = tag.strip_prefix(tag_prefix.as_str()).unwrap_or(tag);
            if compare_semver(only, &base).is_eq() {
                last_tag = tag.to_owned();
                if self.descends_from(&info.name, tag)? {
                    return Ok(());
                }
            }
        }
        if last_tag.is_empty() {
            return Err(bad(format!("preceding tag ({base}) not found")));
        }
        Err(bad(format!(
            "revision {rev} is not a descendent of preceding tag ({last_tag})"
        )))
    }

    fn descends_from(&self, hash: &str, tag: &str) -> Result<bool, GitError> {
        let tag_ref = format!("refs/tags/{tag}");
        let mut cmd = GitCommand::local(
            &["merge-base", "--is-ancestor", "--", &tag_ref, hash],
            1 << 16,
        );
        cmd.ok_codes = &[0, 1];
        Ok(self.src.mirror.local(&cmd)?.code == Some(0))
    }

    /// `codeRepo.findDir(version)`: `(rev, dir, go.mod if found)`.
    fn find_dir(&self, version: &str) -> Result<(String, String, Option<Vec<u8>>), GitError> {
        let layout = self.layout();
        let bad = |detail: String| GitError::invalid(self.module(), version, detail);
        if !is_valid_semver(version) {
            return Err(bad("syntax error".into()));
        }
        let rev = layout.rev_to_rev(version);
        let file1 = join(&layout.code_dir, "go.mod");
        let gomod1 = self.read_file(&rev, &file1)?;
        let mpath1 = gomod1
            .as_deref()
            .map(go_mod_module_path)
            .unwrap_or_default();
        let found1 = gomod1.is_some()
            && (is_major(&mpath1, &layout.path_major)
                || (layout.path_major.is_empty() && mpath1.starts_with("gopkg.in/")));

        let mut file2 = String::new();
        if !layout.path_major.is_empty()
            && layout.code_root != layout.module_path
            && !layout.path_major.starts_with('.')
        {
            let dir2 = join(&layout.code_dir, &layout.path_major[1..]);
            file2 = join(&dir2, "go.mod");
            let gomod2 = self.read_file(&rev, &file2)?;
            let mpath2 = gomod2
                .as_deref()
                .map(go_mod_module_path)
                .unwrap_or_default();
            let found2 = gomod2.is_some() && is_major(&mpath2, &layout.path_major);
            if found1 && found2 {
                return Err(bad(format!(
                    "{}/{file1} and ...{}/go.mod both have ...{} module paths at revision {rev}",
                    layout.path_prefix, layout.path_major, layout.path_major
                )));
            }
            if found2 {
                return Ok((rev, dir2, gomod2));
            }
            if gomod2.is_some() {
                return Err(bad(if mpath2.is_empty() {
                    format!(
                        "{}/{file2} is missing module path at revision {rev}",
                        layout.code_root
                    )
                } else {
                    format!(
                        "{}/{file2} has non-...{} module path \"{mpath2}\" at revision {rev}",
                        layout.code_root, layout.path_major
                    )
                }));
            }
        }
        if found1 {
            return Ok((rev, layout.code_dir.clone(), gomod1));
        }
        if gomod1.is_some() {
            let suffix = if file2.is_empty() {
                String::new()
            } else {
                format!(" (and ...{}/go.mod does not exist)", layout.path_major)
            };
            return Err(bad(if mpath1.is_empty() {
                format!("{file1} is missing module path{suffix} at revision {rev}")
            } else if !layout.path_major.is_empty() {
                format!(
                    "{file1} has non-...{} module path \"{mpath1}\"{suffix} at revision {rev}",
                    layout.path_major
                )
            } else if split_path_version(&mpath1).is_none() {
                format!("{file1} has malformed module path \"{mpath1}\"{suffix} at revision {rev}")
            } else {
                format!(
                    "{file1} has post-{} module path \"{mpath1}\"{suffix} at revision {rev}",
                    semver_major(version).unwrap_or_default()
                )
            }));
        }
        if layout.code_dir.is_empty()
            && (layout.path_major.is_empty() || layout.path_major.starts_with('.'))
        {
            return Ok((rev, String::new(), None));
        }
        if !file2.is_empty() {
            return Err(bad(format!(
                "missing {}/go.mod and ...{}/go.mod at revision {rev}",
                layout.path_prefix, layout.path_major
            )));
        }
        Err(bad(format!(
            "missing {}/go.mod at revision {rev}",
            layout.path_prefix
        )))
    }
}

/// The text of a `findDir` failure as `checkCanonical` wraps it.
fn not_found_text(e: GitError) -> String {
    match e {
        GitError::InvalidVersion { detail, .. } => detail,
        other => other.to_string(),
    }
}

/// `path.Join(dir, file)` for a relative, clean `dir`.
fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    }
}

/// Parses one `git cat-file --batch` answer: `<oid> blob <size>\n<data>\n`,
/// `<name> missing\n`, or another type (not a file).
fn parse_cat_file(out: &[u8]) -> Result<Option<Vec<u8>>, GitError> {
    let bad = |detail: &str| GitError::BadOutput {
        command: "cat-file".into(),
        detail: detail.to_owned(),
    };
    let nl = out
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no header line"))?;
    let header = String::from_utf8_lossy(&out[..nl]);
    let fields: Vec<&str> = header.split(' ').collect();
    if fields.len() != 3 || fields[1] != "blob" {
        return Ok(None);
    }
    let size: usize = fields[2].parse().map_err(|_| bad("invalid size"))?;
    let data = out
        .get(nl + 1..nl + 1 + size)
        .ok_or_else(|| bad("short object"))?;
    Ok(Some(data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cat_file_answers() {
        assert_eq!(
            parse_cat_file(b"0123 blob 3\nabc\n").unwrap(),
            Some(b"abc".to_vec())
        );
        assert_eq!(parse_cat_file(b"x:go.mod missing\n").unwrap(), None);
        assert_eq!(parse_cat_file(b"0123 tree 30\n...").unwrap(), None);
        assert!(parse_cat_file(b"0123 blob 30\nabc\n").is_err());
    }

    #[test]
    fn joins() {
        assert_eq!(join("", "go.mod"), "go.mod");
        assert_eq!(join("sub", "go.mod"), "sub/go.mod");
    }
}
