//! The suite-wide privacy canary: when `$MODGATE_CANARY_DIR` is set, every fixture upstream
//! ([`crate::FixtureProxy`], [`crate::SumDbServer`]) appends each request it receives to
//! `<dir>/<pid>-<port>.log` as `<role>\t<method>\t<raw path>`; after the whole end-to-end suite,
//! [`scan_dir`] reads every log and names each request that carried a private module path
//! ([`PRIVATE_HOST`]) to a fixture that is not marked private.
//!
//! The writer never fails a test: a directory or file that cannot be written is ignored (the
//! check at the end then fails on an empty directory instead of passing silently).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// The environment variable naming the canary directory.
pub const CANARY_DIR_ENV: &str = "MODGATE_CANARY_DIR";

/// Every module path under this host is private in the tests.
pub const PRIVATE_HOST: &str = "corp.example.com";

/// What a fixture stands for, written as the first field of each log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// A public module upstream: must never see a private path.
    Public = 0,
    /// An upstream serving a `private: true` route: private paths are expected.
    Private = 1,
    /// A checksum database: public by nature, must never see a private path.
    SumDb = 2,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Public => "public",
            Role::Private => "private",
            Role::SumDb => "sumdb",
        }
    }

    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Private,
            2 => Role::SumDb,
            _ => Role::Public,
        }
    }
}

/// One fixture's canary log writer; cheap to clone (all clones share the file and the role).
#[derive(Clone)]
pub struct CanaryLog {
    role: Arc<AtomicU8>,
    file: Option<Arc<Mutex<File>>>,
}

impl CanaryLog {
    /// A writer for the fixture listening on `addr`, or a no-op when `$MODGATE_CANARY_DIR` is
    /// unset or its log cannot be opened.
    pub fn for_fixture(addr: SocketAddr, role: Role) -> CanaryLog {
        let dir = std::env::var_os(CANARY_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        CanaryLog::in_dir(dir.as_deref(), addr, role)
    }

    /// A writer appending to `<dir>/<pid>-<port>.log` (`None`: a no-op writer).
    pub fn in_dir(dir: Option<&Path>, addr: SocketAddr, role: Role) -> CanaryLog {
        let file = dir
            .and_then(|dir| {
                std::fs::create_dir_all(dir).ok()?;
                let name = format!("{}-{}.log", std::process::id(), addr.port());
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(name))
                    .ok()
            })
            .map(|f| Arc::new(Mutex::new(f)));
        CanaryLog {
            role: Arc::new(AtomicU8::new(role as u8)),
            file,
        }
    }

    /// Changes the role written for requests from now on.
    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::SeqCst);
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::SeqCst))
    }

    /// Appends one request (errors are ignored). Tabs and line breaks in either field are
    /// replaced so that one request stays one line.
    pub fn record(&self, method: &str, path: &str) {
        let Some(file) = &self.file else { return };
        let clean = |s: &str| s.replace(['\t', '\r', '\n'], " ");
        let line = format!(
            "{}\t{}\t{}\n",
            self.role().as_str(),
            clean(method),
            clean(path)
        );
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(line.as_bytes());
        let _ = f.flush();
    }
}

/// One request that carried a private path to a fixture not marked private.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub file: PathBuf,
    pub line_no: usize,
    pub line: String,
    /// The path after percent- and `!`-decoding.
    pub decoded: String,
}

impl std::fmt::Display for Leak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}  (decoded: {})",
            self.file.display(),
            self.line_no,
            self.line,
            self.decoded
        )
    }
}

/// What [`scan_dir`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The `*.log` files read.
    pub files: Vec<PathBuf>,
    /// Requests recorded in them, by role.
    pub public: usize,
    pub private: usize,
    pub sumdb: usize,
    /// Lines that do not have three tab-separated fields (counted, and checked as a whole).
    pub malformed: usize,
    pub leaks: Vec<Leak>,
}

/// Reads every `*.log` in `dir` and checks every line whose role is not `private`.
pub fn scan_dir(dir: &Path) -> std::io::Result<Scan> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log") && p.is_file())
        .collect();
    files.sort();
    let mut scan = Scan::default();
    for file in &files {
        let bytes = std::fs::read(file)?;
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            let (role, path) = match fields.as_slice() {
                [role, _method, path] => (*role, *path),
                _ => {
                    scan.malformed += 1;
                    ("?", line)
                }
            };
            match role {
                "private" => {
                    scan.private += 1;
                    continue;
                }
                "sumdb" => scan.sumdb += 1,
                "public" => scan.public += 1,
                _ => {}
            }
            if let Some(decoded) = private_path_in(path) {
                scan.leaks.push(Leak {
                    file: file.clone(),
                    line_no: i + 1,
                    line: line.to_string(),
                    decoded,
                });
            }
        }
    }
    scan.files = files;
    Ok(scan)
}

/// `Some(decoded path)` if `raw` names anything under [`PRIVATE_HOST`] in any spelling the
/// module protocol allows: percent-encoded (repeatedly), `!`-case-encoded, or in any case.
pub fn private_path_in(raw: &str) -> Option<String> {
    let decoded = decode(raw);
    decoded
        .to_ascii_lowercase()
        .contains(PRIVATE_HOST)
        .then_some(decoded)
}

/// Percent-decodes until nothing changes (a few rounds at most), then undoes the `!`-encoding
/// of upper-case letters (`!c` → `C`). Invalid escapes are kept as they are.
pub fn decode(raw: &str) -> String {
    let mut s = raw.to_string();
    for _ in 0..4 {
        let next = percent_decode_lossy(&s);
        if next == s {
            break;
        }
        s = next;
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('!', Some(n)) if n.is_ascii_lowercase() => {
                out.push(n.to_ascii_uppercase());
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_sees_through_every_spelling() {
        for raw in [
            "/corp.example.com/secret/@v/list",
            "/CORP.EXAMPLE.COM/x",
            "/!c!o!r!p.example.com/x",
            "/%21corp.example.com/x",
            "/%63orp.example.com/x",
            "/%2563orp.example.com/x",
            "/%21c%21o%21r%21p.example.com/x",
            "/athens/corp.example.com/!secret/@v/v1.2.0.zip",
            "/lookup/corp.example.com/secret@v1.0.0",
            "/sumdb/sumdb.test/lookup/corp.example.com/%21secret@v1.0.0",
            "/x?go-get=1&m=corp.example.com",
        ] {
            assert!(private_path_in(raw).is_some(), "{raw}");
        }
        for raw in [
            "/example.com/!upper/lib/@v/list",
            "/corp.example.org/x",
            "/tile/8/0/000.p/3",
            "/latest",
            "/%zz/%",
            "/%6",
            "",
        ] {
            assert_eq!(private_path_in(raw), None, "{raw}");
        }
        assert_eq!(decode("/example.com/!upper/%21v"), "/example.com/Upper/V");
        assert_eq!(decode("/a%2"), "/a%2");
    }

    #[test]
    fn logs_round_trip_and_only_non_private_lines_count() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("canary");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let log = CanaryLog::in_dir(Some(&dir), addr, Role::Public);
        log.record("GET", "/example.com/a/@v/list");
        log.record("GET", "/%21corp.example.com/a/@v/list");
        let other = log.clone();
        other.set_role(Role::Private);
        log.record("GET", "/corp.example.com/a/@v/list");
        log.set_role(Role::SumDb);
        log.record("GET", "/lookup/corp.example.com/a@v1.0.0");
        log.record("GET\tX", "/tile/8/0/000\n");
        std::fs::write(dir.join("ignored.txt"), "public\tGET\t/corp.example.com\n").expect("write");
        let scan = scan_dir(&dir).expect("scan");
        assert_eq!(scan.files.len(), 1);
        assert_eq!((scan.public, scan.private, scan.sumdb), (2, 1, 2));
        assert_eq!(scan.malformed, 0);
        let leaks: Vec<&str> = scan.leaks.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(
            leaks,
            [
                "public\tGET\t/%21corp.example.com/a/@v/list",
                "sumdb\tGET\t/lookup/corp.example.com/a@v1.0.0"
            ]
        );
        assert_eq!(scan.leaks[0].line_no, 2);
        assert_eq!(scan.leaks[0].decoded, "/Corp.example.com/a/@v/list");
    }

    #[test]
    fn no_directory_means_no_writes() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let log = CanaryLog::in_dir(None, addr, Role::Public);
        log.record("GET", "/corp.example.com/x");
        assert_eq!(log.role(), Role::Public);
        // An unusable directory (a file in the way) is ignored too.
        let root = tempfile::tempdir().expect("tempdir");
        let blocked = root.path().join("file");
        std::fs::write(&blocked, "").expect("write");
        let log = CanaryLog::in_dir(Some(&blocked.join("sub")), addr, Role::Public);
        log.record("GET", "/corp.example.com/x");
    }
}
