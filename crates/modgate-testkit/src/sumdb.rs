//! A fixture Go checksum database (sumdb): an in-memory transparency log of go.sum records,
//! signed with its own Ed25519 key and served over HTTP on 127.0.0.1, so tests can point the
//! real `go` command (`GOSUMDB="<verifier key> <url>"`) or the gateway's `/sumdb/<name>/`
//! passthrough at a database they control — one that grows while a test runs, or lies.
//!
//! Every format follows `golang.org/x/mod` (vendored in Go's source tree under
//! `src/cmd/vendor/golang.org/x/mod`) byte for byte:
//!
//! - **Records** (`sumdb/server.go`, `tlog/note.go`): the text of a record is the module
//!   version's go.sum lines, `"<path> <version> h1:…\n<path> <version>/go.mod h1:…\n"`; the
//!   `h1:` hashes are `dirhash.Hash1` over the zip's entries (names with their
//!   `<path>@<version>/` prefix) and over the `.mod` file named `go.mod`.
//! - **Log** (`tlog/tlog.go`): RFC 6962 hashing, record hash `SHA-256(0x00 ‖ text)`, interior
//!   node `SHA-256(0x01 ‖ left ‖ right)`; hashes kept in tlog's stored-hash order.
//! - **Tree note** (`tlog.FormatTree`, `note.Sign`): `"go.sum database tree\n<N>\n<base64
//!   root>\n"`, a blank line, then `"— <name> <base64(key hash ‖ Ed25519 signature)>\n"` (U+2014
//!   em dash); the key hash is the first 4 bytes (big-endian) of
//!   `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`, the verifier key
//!   `"<name>+<key hash, 8 hex>+<base64(0x01 ‖ public key)>"`.
//! - **HTTP** (`sumdb.Server.ServeHTTP`): `/latest`; `/lookup/<escaped path>@<escaped
//!   version>` answering `"<id>\n<record text>\n"` followed by the tree note (`400 invalid
//!   module@version syntax` for bad syntax, `500` for a broken `!`-escape, `404` for a module
//!   version not in the database — what `reportError` does for a not-found error; x/mod's
//!   server never answers 410); `/tile/<H>/<L>/<N>[.p/<W>]` (W×32 bytes of
//!   hashes, `tlog.ReadTileData`) and `/tile/<H>/data/<N>[.p/<W>]`; `404` for a tile the tree
//!   does not cover yet, `400 invalid tile syntax` for a non-canonical tile path.
//!
//! Data tiles are served as sum.golang.org serves them: the W record texts joined by a blank
//! line (`text₀ "\n" text₁ "\n" …`), which is what log auditors split on `"\n\n"`. (x/mod's
//! reference `Server` instead concatenates `tlog.FormatRecord(id, text)`, which prefixes each
//! record with its id; the `go` command itself never reads data tiles.)
//!
//! The server also answers under `/sumdb/<name>/…` (and `/sumdb/<name>/supported` with 200),
//! the shape a GOPROXY uses to proxy a checksum database, so the same fixture can stand behind
//! a gateway's passthrough.
//!
//! Under `$MODGATE_CANARY_DIR` every request the server receives is also appended to the
//! privacy canary ([`crate::canary`]) with the role `sumdb`: no private module name may ever
//! reach a checksum database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::canary::{CanaryLog, Role};
use crate::fixture::{read_request, Behaviour, RecordedRequest};
use crate::module::ModuleVersion;

/// A tlog hash (SHA-256).
pub type Hash = [u8; 32];

/// The tile height the `go` command uses.
pub const TILE_HEIGHT: u32 = 8;

/// Go's `note` algorithm byte for Ed25519 keys.
const ALG_ED25519: u8 = 1;

// ---------------------------------------------------------------------------------------------
// tlog (golang.org/x/mod/sumdb/tlog)
// ---------------------------------------------------------------------------------------------

/// `tlog.RecordHash`: SHA-256(0x00 ‖ data).
pub fn record_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `tlog.NodeHash`: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `tlog.StoredHashIndex`: the position of the hash at (`level`, `n`) in stored-hash order.
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    let mut n = n;
    for _ in 0..level {
        n = 2 * n + 1;
    }
    let mut i = 0u64;
    while n > 0 {
        i += n;
        n >>= 1;
    }
    i + u64::from(level)
}

/// `tlog.maxpow2`: the largest power of two k < n (for n ≥ 2), and log₂ k.
fn maxpow2(n: u64) -> (u64, u32) {
    let mut l = 0u32;
    while (1u64 << (l + 1)) < n {
        l += 1;
    }
    (1u64 << l, l)
}

/// `tlog.subTreeIndex`: stored indexes of the complete subtrees covering records [lo, hi).
fn sub_tree_index(mut lo: u64, hi: u64, need: &mut Vec<u64>) {
    while lo < hi {
        let (k, level) = maxpow2(hi - lo + 1);
        debug_assert_eq!(lo & (k - 1), 0, "bad math in sub_tree_index");
        need.push(stored_hash_index(level, lo >> level));
        lo += k;
    }
}

/// `tlog.TreeHash` over stored hashes: the root of the tree of the first `n` records.
fn tree_hash(n: u64, hashes: &[Hash]) -> Hash {
    if n == 0 {
        return Sha256::digest([]).into();
    }
    let mut idx = Vec::new();
    sub_tree_index(0, n, &mut idx);
    let mut h = hashes[idx[idx.len() - 1] as usize];
    for &i in idx[..idx.len() - 1].iter().rev() {
        h = node_hash(&hashes[i as usize], &h);
    }
    h
}

/// `tlog.StoredHashesForRecordHash`: the hashes to append when record `n` is added.
fn stored_hashes_for_record(n: u64, h: Hash, hashes: &[Hash]) -> Vec<Hash> {
    let mut out = vec![h];
    let m = (n + 1).trailing_zeros();
    let mut h = h;
    for i in 0..m {
        let left = hashes[stored_hash_index(i, (n >> i) - 1) as usize];
        h = node_hash(&left, &h);
        out.push(h);
    }
    out
}

/// A tile coordinate (`tlog.Tile`); `level == -1` is the record-data level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tile {
    h: u32,
    l: i64,
    n: u64,
    w: u64,
}

impl Tile {
    /// `tlog.Tile.Path`.
    fn path(&self) -> String {
        let mut n = self.n;
        let mut s = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            s = format!("x{:03}/{s}", n % 1000);
        }
        let p = if self.w != 1u64 << self.h {
            format!(".p/{}", self.w)
        } else {
            String::new()
        };
        let l = if self.l == -1 {
            "data".to_string()
        } else {
            self.l.to_string()
        };
        format!("tile/{}/{l}/{s}{p}", self.h)
    }

    /// `tlog.ParseTilePath`, canonical spellings only.
    fn parse(path: &str) -> Option<Tile> {
        let mut f: Vec<&str> = path.split('/').collect();
        if f.len() < 4 || f[0] != "tile" {
            return None;
        }
        let h: i64 = f[1].parse().ok()?;
        let is_data = f[2] == "data";
        let l: i64 = if is_data { 0 } else { f[2].parse().ok()? };
        if !(1..=30).contains(&h) || l < 0 {
            return None;
        }
        let h = h as u32;
        let mut w = 1u64 << h;
        let last = f.len() - 1;
        if let Some(stripped) = f[last - 1].strip_suffix(".p") {
            let ww: i64 = f[last].parse().ok()?;
            if ww <= 0 || ww as u64 >= w {
                return None;
            }
            w = ww as u64;
            f[last - 1] = stripped;
            f.truncate(last);
        }
        let mut n: u64 = 0;
        for s in &f[3..] {
            let nn: i64 = s.strip_prefix('x').unwrap_or(s).parse().ok()?;
            if !(0..1000).contains(&nn) {
                return None;
            }
            n = n.checked_mul(1000)?.checked_add(nn as u64)?;
        }
        let t = Tile {
            h,
            l: if is_data { -1 } else { l },
            n,
            w,
        };
        (t.path() == path).then_some(t)
    }
}

// ---------------------------------------------------------------------------------------------
// go.sum hashes (golang.org/x/mod/sumdb/dirhash)
// ---------------------------------------------------------------------------------------------

/// `dirhash.Hash1` over (name, content) pairs.
fn hash1(files: &[(String, &[u8])]) -> String {
    let mut files: Vec<&(String, &[u8])> = files.iter().collect();
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut summary = Sha256::new();
    for (name, data) in files {
        assert!(
            !name.contains('\n'),
            "dirhash: filenames with newlines are not supported"
        );
        let digest = Sha256::digest(data);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        summary.update(format!("{hex}  {name}\n").as_bytes());
    }
    format!("h1:{}", B64.encode(summary.finalize()))
}

fn le16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// The entries of a zip archive with stored (uncompressed) entries, as `(name, content)` in
/// central-directory order. Panics on anything else: this reads fixture zips.
fn zip_entries(zip: &[u8]) -> Vec<(String, &[u8])> {
    let eocd = (0..=zip.len().saturating_sub(22))
        .rev()
        .find(|&i| zip[i..].starts_with(&[0x50, 0x4b, 0x05, 0x06]))
        .expect("zip_h1: no end-of-central-directory record");
    let count = le16(zip, eocd + 10);
    let mut at = le32(zip, eocd + 16);
    // Go's HashZip hashes by name; with duplicate names the last entry's content wins.
    let mut by_name: HashMap<String, &[u8]> = HashMap::new();
    let mut order = Vec::new();
    for _ in 0..count {
        assert!(
            zip[at..].starts_with(&[0x50, 0x4b, 0x01, 0x02]),
            "zip_h1: bad central directory"
        );
        let method = le16(zip, at + 10);
        let csize = le32(zip, at + 20);
        let name_len = le16(zip, at + 28);
        let extra_len = le16(zip, at + 30);
        let comment_len = le16(zip, at + 32);
        let local = le32(zip, at + 42);
        let name = String::from_utf8_lossy(&zip[at + 46..at + 46 + name_len]).to_string();
        assert_eq!(
            method, 0,
            "zip_h1: entry {name:?} is compressed (method {method}); only stored entries are supported"
        );
        assert!(
            zip[local..].starts_with(&[0x50, 0x4b, 0x03, 0x04]),
            "zip_h1: bad local header for {name:?}"
        );
        let data_at = local + 30 + le16(zip, local + 26) + le16(zip, local + 28);
        by_name.insert(name.clone(), &zip[data_at..data_at + csize]);
        order.push(name);
        at += 46 + name_len + extra_len + comment_len;
    }
    order
        .into_iter()
        .map(|n| {
            let data = by_name[&n];
            (n, data)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------------------------

struct Db {
    name: String,
    seed: [u8; 32],
    key: Ed25519KeyPair,
    /// Record texts by id.
    records: Vec<Vec<u8>>,
    /// `path@version` → record id (the newest record for it).
    index: HashMap<String, u64>,
    /// All stored hashes, in tlog's stored-hash order.
    hashes: Vec<Hash>,
}

/// A response of the database's HTTP interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumDbResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl SumDbResponse {
    fn ok(content_type: &'static str, body: Vec<u8>) -> SumDbResponse {
        SumDbResponse {
            status: 200,
            content_type,
            body,
        }
    }

    /// Go's `http.Error`.
    fn error(status: u16, msg: &str) -> SumDbResponse {
        SumDbResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{msg}\n").into_bytes(),
        }
    }
}

impl Db {
    fn key_hash(&self) -> u32 {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update([ALG_ED25519]);
        h.update(self.key.public_key().as_ref());
        let d = h.finalize();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    fn verifier_key(&self) -> String {
        let mut pk = vec![ALG_ED25519];
        pk.extend_from_slice(self.key.public_key().as_ref());
        format!("{}+{:08x}+{}", self.name, self.key_hash(), B64.encode(pk))
    }

    fn signer_key(&self) -> String {
        let mut sk = vec![ALG_ED25519];
        sk.extend_from_slice(&self.seed);
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_hash(),
            B64.encode(sk)
        )
    }

    fn size(&self) -> u64 {
        self.records.len() as u64
    }

    fn root(&self) -> Hash {
        tree_hash(self.size(), &self.hashes)
    }

    /// `note.Sign(&note.Note{Text: tlog.FormatTree(tree)}, signer)`.
    fn signed_tree(&self) -> Vec<u8> {
        let text = format!(
            "go.sum database tree\n{}\n{}\n",
            self.size(),
            B64.encode(self.root())
        );
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.key_hash().to_be_bytes().to_vec();
        raw.extend_from_slice(sig.as_ref());
        format!("{text}\n\u{2014} {} {}\n", self.name, B64.encode(raw)).into_bytes()
    }

    fn append(&mut self, key: String, text: Vec<u8>) -> u64 {
        if let Some(&id) = self.index.get(&key) {
            if self.records[id as usize] == text {
                return id;
            }
        }
        assert!(is_valid_record_text(&text), "invalid record text {text:?}");
        let id = self.size();
        let new = stored_hashes_for_record(id, record_hash(&text), &self.hashes);
        self.hashes.extend(new);
        self.records.push(text);
        self.index.insert(key, id);
        id
    }

    /// Hash tile data (`tlog.ReadTileData`), or `None` if the tree does not cover the tile.
    fn hash_tile(&self, t: Tile) -> Option<Vec<u8>> {
        let level = u32::try_from(t.l).ok()?.checked_mul(t.h)?;
        let start = t.n.checked_mul(1u64 << t.h)?;
        // The hash at (level, k) exists once records up to (k+1) << level are in the log.
        let end = u128::from(start) + u128::from(t.w);
        if level >= 64 || end << level > u128::from(self.size()) {
            return None;
        }
        let mut out = Vec::with_capacity(t.w as usize * 32);
        for i in 0..t.w {
            let idx = stored_hash_index(level, start + i) as usize;
            out.extend_from_slice(self.hashes.get(idx)?);
        }
        Some(out)
    }

    /// Data tile: the record texts joined by blank lines, as sum.golang.org serves them.
    fn data_tile(&self, t: Tile) -> Option<Vec<u8>> {
        let start = t.n.checked_mul(1u64 << t.h)?;
        let end = start.checked_add(t.w)?;
        if end > self.size() {
            return None;
        }
        let texts: Vec<&[u8]> = self.records[start as usize..end as usize]
            .iter()
            .map(|r| r.as_slice())
            .collect();
        Some(texts.join(&b"\n"[..]))
    }

    fn respond(&self, path: &str) -> SumDbResponse {
        const TEXT: &str = "text/plain; charset=UTF-8";
        if path == "/latest" {
            return SumDbResponse::ok(TEXT, self.signed_tree());
        }
        if let Some(mod_ver) = path.strip_prefix("/lookup/") {
            if !is_mod_ver(mod_ver) {
                return SumDbResponse::error(400, "invalid module@version syntax");
            }
            let (esc_path, esc_vers) = mod_ver.split_once('@').unwrap_or_default();
            let mod_path = match modgate_protocol::unescape_path(esc_path) {
                Ok(p) => p,
                Err(e) => return SumDbResponse::error(500, &e.to_string()),
            };
            let vers = match modgate_protocol::unescape_version(esc_vers) {
                Ok(v) => v,
                Err(e) => return SumDbResponse::error(500, &e.to_string()),
            };
            let Some(&id) = self.index.get(&format!("{mod_path}@{vers}")) else {
                return SumDbResponse::error(404, &format!("not found: {mod_path}@{vers}"));
            };
            let mut body = format!("{id}\n").into_bytes();
            body.extend_from_slice(&self.records[id as usize]);
            body.push(b'\n');
            body.extend_from_slice(&self.signed_tree());
            return SumDbResponse::ok(TEXT, body);
        }
        if path.starts_with("/tile/") {
            let Some(t) = Tile::parse(&path[1..]) else {
                return SumDbResponse::error(400, "invalid tile syntax");
            };
            let (data, ct) = if t.l == -1 {
                (self.data_tile(t), TEXT)
            } else {
                (self.hash_tile(t), "application/octet-stream")
            };
            return match data {
                Some(d) => SumDbResponse::ok(ct, d),
                None => SumDbResponse::error(404, &format!("not found: {}", t.path())),
            };
        }
        // Go's http.NotFound.
        SumDbResponse::error(404, "404 page not found")
    }
}

/// `tlog.isValidRecordText`: UTF-8, no control characters but newline, no blank lines, ends
/// in a newline.
fn is_valid_record_text(text: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(text) else {
        return false;
    };
    let mut last = '\0';
    for c in s.chars() {
        if (c < ' ' && c != '\n') || (last == '\n' && c == '\n') {
            return false;
        }
        last = c;
    }
    last == '\n'
}

/// The server's `modVerRE`: `^[^@]+@v[0-9]+\.[0-9]+\.[0-9]+(-[^@]*)?(\+incompatible)?$`.
fn is_mod_ver(s: &str) -> bool {
    let Some((path, vers)) = s.split_once('@') else {
        return false;
    };
    if path.is_empty() || vers.contains('@') {
        return false;
    }
    let Some(mut rest) = vers.strip_prefix('v') else {
        return false;
    };
    for i in 0..3 {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if i < 2 {
            let Some(r) = rest.strip_prefix('.') else {
                return false;
            };
            rest = r;
        }
    }
    rest.is_empty() || rest.starts_with('-') || rest == "+incompatible"
}

/// Decodes `%XX` escapes (as Go's `URL.Path` is decoded); `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A checksum database. Clones are handles to the same database.
#[derive(Clone)]
pub struct SumDb {
    db: Arc<Mutex<Db>>,
}

impl std::fmt::Debug for SumDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let db = self.lock();
        f.debug_struct("SumDb")
            .field("name", &db.name)
            .field("records", &db.records.len())
            .finish()
    }
}

impl SumDb {
    /// A checksum database named `name` (e.g. `sum.golang.org` or `sumdb.test`) with a fresh
    /// Ed25519 key.
    pub fn new(name: &str) -> SumDb {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .expect("sumdb: system random");
        SumDb::with_seed(name, seed)
    }

    /// A database whose key is derived from `seed` (Ed25519 private key seed): the same seed
    /// gives the same key, so two databases can sign conflicting histories under one name.
    pub fn with_seed(name: &str, seed: [u8; 32]) -> SumDb {
        assert!(
            !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace),
            "invalid sumdb name {name:?}"
        );
        let key = Ed25519KeyPair::from_seed_unchecked(&seed).expect("sumdb: ed25519 seed");
        SumDb {
            db: Arc::new(Mutex::new(Db {
                name: name.to_string(),
                seed,
                key,
                records: Vec::new(),
                index: HashMap::new(),
                hashes: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database name.
    pub fn name(&self) -> String {
        self.lock().name.clone()
    }

    /// The verifier key in Go's note format, `"<name>+<key hash, 8 hex>+<base64(0x01 ‖ public
    /// key)>"` — the first field of `GOSUMDB`.
    pub fn verifier_key(&self) -> String {
        self.lock().verifier_key()
    }

    /// The signer key in Go's note format (`note.NewSigner`), `"PRIVATE+KEY+<name>+<key
    /// hash>+<base64(0x01 ‖ seed)>"`.
    pub fn signer_key(&self) -> String {
        self.lock().signer_key()
    }

    /// Adds the go.sum lines of a module version (its zip's and its `.mod`'s `h1:` hashes) and
    /// returns the record id. Adding an identical record again is a no-op.
    pub fn add(&mut self, m: &ModuleVersion) -> u64 {
        let zip = m.zip().unwrap_or_else(|e| panic!("sumdb: module zip: {e}"));
        self.add_lines(
            &m.path,
            &m.version,
            &SumDb::zip_h1(&zip),
            &SumDb::mod_h1(&m.mod_file()),
        )
    }

    /// Adds a record with explicit hashes (e.g. a wrong one, for a lying database) and returns
    /// its id. The log is append-only: a different record for a module version already present
    /// is appended, and lookups answer with the newer one.
    pub fn add_lines(&mut self, path: &str, version: &str, zip_h1: &str, mod_h1: &str) -> u64 {
        let text = format!("{path} {version} {zip_h1}\n{path} {version}/go.mod {mod_h1}\n");
        self.lock()
            .append(format!("{path}@{version}"), text.into_bytes())
    }

    /// The `h1:` hash of a module zip as go.sum records it (`dirhash.HashZip` with `Hash1`: every
    /// entry, named with its `<path>@<version>/` prefix). Reads zips with stored entries, as
    /// [`ModuleVersion::zip`] writes them; panics on compressed entries.
    pub fn zip_h1(zip: &[u8]) -> String {
        hash1(&zip_entries(zip))
    }

    /// The `h1:` hash of a `.mod` file as go.sum records it (`dirhash.Hash1` over one file named
    /// `go.mod`).
    pub fn mod_h1(go_mod: &[u8]) -> String {
        hash1(&[("go.mod".to_string(), go_mod)])
    }

    /// The number of records (the tree size).
    pub fn tree_size(&self) -> u64 {
        self.lock().size()
    }

    /// The tree's root hash.
    pub fn root_hash(&self) -> Hash {
        self.lock().root()
    }

    /// The signed tree note served at `/latest`.
    pub fn signed_tree(&self) -> Vec<u8> {
        self.lock().signed_tree()
    }

    /// The id and text of the record a lookup of `path@version` answers with.
    pub fn record(&self, path: &str, version: &str) -> Option<(u64, String)> {
        let db = self.lock();
        let id = *db.index.get(&format!("{path}@{version}"))?;
        Some((
            id,
            String::from_utf8_lossy(&db.records[id as usize]).to_string(),
        ))
    }

    /// What the server answers for a request path (`/latest`, `/lookup/…`, `/tile/…`, or the same
    /// under `/sumdb/<name>/`): percent-decoding and the query are handled as the server does.
    pub fn response(&self, path: &str) -> SumDbResponse {
        let path = path.split('?').next().unwrap_or("");
        let Some(path) = percent_decode(path) else {
            return SumDbResponse::error(400, "invalid URL escape");
        };
        let db = self.lock();
        let prefix = format!("/sumdb/{}", db.name);
        let path = match path.strip_prefix(&prefix) {
            Some("/supported") => {
                return SumDbResponse::ok("text/plain; charset=UTF-8", Vec::new())
            }
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            _ => path,
        };
        db.respond(&path)
    }

    /// Starts serving the database over HTTP/1.1 on 127.0.0.1 on its own thread and runtime (so
    /// a test may block its own threads, e.g. running `go`, while the server answers). Records
    /// added later through any handle are served from then on.
    pub fn start(self) -> SumDbServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("sumdb: bind");
        listener
            .set_nonblocking(true)
            .expect("sumdb: nonblocking listener");
        let addr = listener.local_addr().expect("sumdb: local addr");
        let state = Arc::new(Mutex::new(ServerState::default()));
        // A checksum database is public by nature: the privacy canary checks all it receives.
        let canary = CanaryLog::for_fixture(addr, Role::SumDb);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let db = self.clone();
            let state = state.clone();
            std::thread::Builder::new()
                .name(format!("sumdb-{addr}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("sumdb: runtime");
                    rt.block_on(async move {
                        let listener =
                            tokio::net::TcpListener::from_std(listener).expect("sumdb: listener");
                        let accept = async {
                            loop {
                                let Ok((stream, _)) = listener.accept().await else {
                                    continue;
                                };
                                tokio::spawn(serve_connection(
                                    stream,
                                    db.clone(),
                                    state.clone(),
                                    canary.clone(),
                                ));
                            }
                        };
                        tokio::select! {
                            _ = stop_rx => {}
                            _ = accept => {}
                        }
                    });
                })
                .expect("sumdb: spawn server thread")
        };
        SumDbServer {
            addr,
            db: self,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// [`SumDb::start`] for async callers.
    pub async fn serve(self) -> SumDbServer {
        self.start()
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP server
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ServerState {
    requests: Vec<RecordedRequest>,
    behaviours: Vec<(String, Behaviour)>,
}

/// A running checksum-database server; stops when dropped.
pub struct SumDbServer {
    addr: SocketAddr,
    db: SumDb,
    state: Arc<Mutex<ServerState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SumDbServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SumDbServer {
    /// Base URL, `http://127.0.0.1:P`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `GOSUMDB`: `"<verifier key> <url>"`.
    pub fn gosumdb(&self) -> String {
        format!("{} {}", self.db.verifier_key(), self.url())
    }

    /// The verifier key (see [`SumDb::verifier_key`]).
    pub fn verifier_key(&self) -> String {
        self.db.verifier_key()
    }

    /// A handle to the served database.
    pub fn db(&self) -> SumDb {
        self.db.clone()
    }

    /// Adds a module version's record while serving (the tree grows); returns its id.
    pub fn add(&self, m: &ModuleVersion) -> u64 {
        self.db.clone().add(m)
    }

    /// Adds a record with explicit hashes while serving; returns its id.
    pub fn add_lines(&self, path: &str, version: &str, zip_h1: &str, mod_h1: &str) -> u64 {
        self.db.clone().add_lines(path, version, zip_h1, mod_h1)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state_lock().requests.clone()
    }

    /// The paths of every request received so far, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        self.state_lock()
            .requests
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state_lock().requests.clear();
    }

    /// Makes every request whose path starts with `path_prefix` behave as given (`""` matches
    /// all); later calls take precedence.
    pub fn set_behaviour(&self, path_prefix: &str, b: Behaviour) {
        self.state_lock()
            .behaviours
            .insert(0, (path_prefix.to_string(), b));
    }

    /// Removes all behaviours: serve normally again.
    pub fn clear_behaviours(&self) {
        self.state_lock().behaviours.clear();
    }

    fn state_lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves HTTP/1.1 requests on one connection until it closes.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    db: SumDb,
    state: Arc<Mutex<ServerState>>,
    canary: CanaryLog,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let Some(recorded) = read_request(&mut stream, &mut buf, &canary).await else {
            return;
        };
        let close = recorded
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let behaviour = {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            st.requests.push(recorded.clone());
            st.behaviours
                .iter()
                .find(|(p, _)| recorded.path.starts_with(p.as_str()))
                .map(|(_, b)| b.clone())
        };
        let resp = match behaviour {
            Some(Behaviour::Hang) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Some(Behaviour::Status(s)) => SumDbResponse::error(s, &format!("fixture: status {s}")),
            Some(Behaviour::Answer(status, body)) => SumDbResponse {
                status,
                content_type: "application/octet-stream",
                body,
            },
            Some(Behaviour::Delay(d)) => {
                tokio::time::sleep(d).await;
                db.response(&recorded.path)
            }
            None => db.response(&recorded.path),
        };
        let reason = match resp.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            410 => "Gone",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let head = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\n{}\r\n",
            resp.status,
            resp.content_type,
            resp.body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        if recorded.method != "HEAD" && stream.write_all(&resp.body).await.is_err() {
            return;
        }
        if stream.flush().await.is_err() || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(n: usize) -> SumDb {
        let mut db = SumDb::with_seed("sumdb.test", [9; 32]);
        for i in 0..n {
            db.add_lines(
                &format!("example.com/m{i}"),
                "v1.0.0",
                &format!("h1:zip{i}"),
                &format!("h1:mod{i}"),
            );
        }
        db
    }

    #[test]
    fn stored_hash_index_matches_tlog() {
        // tlog_test.go: the first few stored hashes, in order.
        let want = [
            (0, 0),
            (0, 1),
            (1, 0),
            (0, 2),
            (0, 3),
            (1, 1),
            (2, 0),
            (0, 4),
        ];
        for (i, (level, n)) in want.into_iter().enumerate() {
            assert_eq!(stored_hash_index(level, n), i as u64, "({level}, {n})");
        }
    }

    #[test]
    fn tree_hash_agrees_with_a_direct_merkle_computation() {
        fn mth(leaves: &[Hash]) -> Hash {
            if leaves.len() == 1 {
                return leaves[0];
            }
            let (k, _) = maxpow2(leaves.len() as u64);
            node_hash(&mth(&leaves[..k as usize]), &mth(&leaves[k as usize..]))
        }
        let db = db_with(300);
        let d = db.lock();
        let leaves: Vec<Hash> = d.records.iter().map(|r| record_hash(r)).collect();
        for n in [1usize, 2, 3, 5, 8, 255, 256, 257, 300] {
            assert_eq!(tree_hash(n as u64, &d.hashes), mth(&leaves[..n]), "n={n}");
        }
        assert_eq!(
            B64.encode(tree_hash(0, &d.hashes)),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn tile_paths_round_trip_like_tlog() {
        for (p, ok) in [
            ("tile/8/0/000", true),
            ("tile/8/0/000.p/1", true),
            ("tile/3/4/x001/x234/067.p/1", true),
            ("tile/8/data/x001/234.p/7", true),
            ("tile/8/0/000.p/256", false),
            ("tile/8/0/000.p/0", false),
            ("tile/8/0/0", false),
            ("tile/8/0/x000/001", false),
            ("tile/31/0/000", false),
            ("tile/8/-1/000", false),
            ("tile/8/0", false),
        ] {
            assert_eq!(Tile::parse(p).is_some(), ok, "{p}");
        }
        let t = Tile::parse("tile/3/4/x001/x234/067.p/1").expect("tile");
        assert_eq!((t.h, t.l, t.n, t.w), (3, 4, 1_234_067, 1));
    }

    #[test]
    fn signed_tree_is_a_go_note() {
        let db = db_with(3);
        let note = String::from_utf8(db.signed_tree()).expect("utf8");
        let (text, sig) = note.split_once("\n\n").expect("blank line");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "go.sum database tree");
        assert_eq!(lines[1], "3");
        assert_eq!(lines[2], B64.encode(db.root_hash()));
        let (name, b64) = sig
            .strip_prefix("\u{2014} ")
            .and_then(|s| s.strip_suffix('\n'))
            .and_then(|s| s.split_once(' '))
            .expect("signature line");
        assert_eq!(name, "sumdb.test");
        let raw = B64.decode(b64).expect("base64");
        assert_eq!(raw.len(), 4 + 64);
        let vkey = db.verifier_key();
        let parts: Vec<&str> = vkey.split('+').collect();
        assert_eq!(parts[0], "sumdb.test");
        assert_eq!(
            parts[1],
            format!("{:02x}{:02x}{:02x}{:02x}", raw[0], raw[1], raw[2], raw[3])
        );
        let pk = B64.decode(parts[2]).expect("key");
        assert_eq!((pk.len(), pk[0]), (33, 1));
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &pk[1..])
            .verify(format!("{text}\n").as_bytes(), &raw[4..])
            .expect("signature verifies over the note text");
        assert!(db
            .signer_key()
            .starts_with(&format!("PRIVATE+KEY+sumdb.test+{}+", parts[1])));
    }

    #[test]
    fn lookup_answers_record_then_note() {
        let mut db = SumDb::with_seed("sumdb.test", [1; 32]);
        let m = ModuleVersion::new("example.com/Upper/v2", "v2.0.0-RC.1").expect("module");
        db.add_lines("example.com/other", "v1.0.0", "h1:a", "h1:b");
        let id = db.add(&m);
        assert_eq!(id, 1);
        assert_eq!(db.add(&m), 1, "same record again is a no-op");
        let r = db.response("/lookup/example.com/%21upper/v2@v2.0.0-%21r%21c.1");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let body = String::from_utf8(r.body).expect("utf8");
        let zip = SumDb::zip_h1(&m.zip().expect("zip"));
        let md = SumDb::mod_h1(&m.mod_file());
        let want = format!(
            "1\nexample.com/Upper/v2 v2.0.0-RC.1 {zip}\nexample.com/Upper/v2 v2.0.0-RC.1/go.mod {md}\n\n"
        );
        assert!(body.starts_with(&want), "{body}");
        assert_eq!(&body.as_bytes()[want.len()..], db.signed_tree().as_slice());
        assert_eq!(
            db.record("example.com/Upper/v2", "v2.0.0-RC.1")
                .map(|r| r.0),
            Some(1)
        );
        // The same under a proxy's /sumdb/<name>/ prefix.
        let p = db.response("/sumdb/sumdb.test/lookup/example.com/!upper/v2@v2.0.0-!r!c.1");
        assert_eq!(p.status, 200);
        assert_eq!(db.response("/sumdb/sumdb.test/supported").status, 200);
    }

    #[test]
    fn errors_follow_the_go_server() {
        let db = db_with(3);
        for (path, status) in [
            ("/lookup/example.com/m0@v1.0.0", 200),
            ("/lookup/example.com/m0@v1.0.0?x=1", 200),
            ("/lookup/example.com/nope@v1.0.0", 404),
            ("/lookup/example.com/m0@latest", 400),
            ("/lookup/example.com/m0@v1.0.0/go.mod", 400),
            ("/lookup/example.com/m0", 400),
            ("/lookup/example.com/Upper@v1.0.0", 500),
            ("/tile/8/0/000.p/3", 200),
            ("/tile/8/0/000.p/2", 200),
            ("/tile/8/0/000.p/4", 404),
            ("/tile/8/0/000", 404),
            ("/tile/8/1/000.p/1", 404),
            ("/tile/8/data/000.p/3", 200),
            ("/tile/8/data/000.p/4", 404),
            ("/tile/8/0/000.p/256", 400),
            ("/tile/2/0/000.p/3", 200),
            ("/tile/2/0/000", 404),
            ("/tile/1/1/000.p/1", 200),
            ("/latest", 200),
            ("/", 404),
            ("/supported", 404),
            ("/sumdb/other.test/supported", 404),
            ("/lookup/%zz", 400),
        ] {
            let r = db.response(path);
            assert_eq!(
                r.status,
                status,
                "{path}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        let r = db.response("/tile/8/0/000.p/3");
        assert_eq!(r.content_type, "application/octet-stream");
        assert_eq!(r.body.len(), 3 * 32);
        assert_eq!(&r.body[..32], &record_hash(&db.lock().records[0]));
        let d = db.response("/tile/8/data/000.p/2");
        assert_eq!(
            String::from_utf8(d.body).expect("utf8"),
            "example.com/m0 v1.0.0 h1:zip0\nexample.com/m0 v1.0.0/go.mod h1:mod0\n\n\
             example.com/m1 v1.0.0 h1:zip1\nexample.com/m1 v1.0.0/go.mod h1:mod1\n"
        );
    }

    #[test]
    fn h1_hashes_match_go_sum_conventions() {
        // golang.org/x/mod/sumdb/dirhash.Hash1([]string{"go.mod"}, …) of these contents.
        assert_eq!(
            SumDb::mod_h1(b""),
            "h1:G7mAYYxgmS0lVkHyy2hEOLQCFB0DlQFTMLWggykrydY="
        );
        assert_eq!(
            SumDb::mod_h1(b"module example.com/a\n\ngo 1.21\n"),
            "h1:DhNAN5ESgofBjUyC9S2g6VCJUhcIDhtNzG+3JuOOhyg="
        );
        let m = ModuleVersion::new("example.com/a", "v1.0.0").expect("module");
        let zip = m.zip().expect("zip");
        let entries = zip_entries(&zip);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "example.com/a@v1.0.0/LICENSE",
                "example.com/a@v1.0.0/a.go",
                "example.com/a@v1.0.0/go.mod"
            ]
        );
        assert_eq!(entries[2].1, m.mod_file().as_slice());
        assert!(SumDb::zip_h1(&zip).starts_with("h1:"));
        assert_eq!(SumDb::zip_h1(&zip).len(), 3 + 44);
    }

    #[test]
    fn server_serves_and_records_requests() {
        let db = db_with(2);
        let srv = db.start();
        let r = crate::client::get(srv.addr(), "/latest").expect("GET /latest");
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with("go.sum database tree\n2\n"));
        srv.add_lines("example.com/late", "v1.0.0", "h1:x", "h1:y");
        let r = crate::client::get(srv.addr(), "/lookup/example.com/late@v1.0.0").expect("GET");
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with("2\nexample.com/late v1.0.0 h1:x\n"));
        assert!(r.text().contains("go.sum database tree\n3\n"));
        srv.set_behaviour("/tile/", Behaviour::Status(503));
        assert_eq!(
            crate::client::get(srv.addr(), "/tile/8/0/000.p/3")
                .expect("GET")
                .status,
            503
        );
        assert_eq!(
            srv.paths(),
            [
                "/latest",
                "/lookup/example.com/late@v1.0.0",
                "/tile/8/0/000.p/3"
            ]
        );
        assert!(srv.gosumdb().starts_with("sumdb.test+"));
        assert!(srv.gosumdb().ends_with(&format!(" http://{}", srv.addr())));
    }
}
