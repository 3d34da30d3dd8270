//! Offline verification of a log file: every record's text against its stored leaf hash, every
//! stored interior hash against its children, every signed head's signature and tree hash —
//! streaming through the file in one read transaction, holding only the tree's right edge
//! (log₂ n hashes) in memory.
//!
//! A difference is reported where it is: a record whose text does not hash to its stored leaf
//! ([`Problem::RecordEdited`]; the interior hashes are then checked against the *stored* leaf,
//! so one edited record is one problem, and an edited leaf hash shows as that plus a mismatch
//! at its parent; an interior hash is checked against its children as computed, so an edited
//! interior hash is one problem too), a missing or different stored hash, a head whose signature or tree hash does
//! not check.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use modgate_tlog::note::open_tree;
use modgate_tlog::record::is_valid_record_text;
use modgate_tlog::{
    record_hash, stored_hash_count, stored_hash_index, stored_hashes_for_record_hash, tree_hash,
    Hash, HashReader, TlogError, Tree, Verifier,
};
use rusqlite::{Connection, OpenFlags};

use crate::log::{bytes_at, to_hash, to_u64};
use crate::Error;

/// Problems listed in a report at most (the count goes on).
const MAX_LISTED: usize = 1000;

/// One thing wrong in a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file is another log's (its recorded key is not the verifier's).
    WrongLog {
        /// The verifier key recorded in the file.
        file_key: String,
        /// The key verified with.
        verifier_key: String,
    },
    /// Record ids are not dense: this id is missing (checking stops there).
    MissingRecord {
        /// The first missing id.
        id: u64,
    },
    /// The record's text is not the go.sum lines of its path and version.
    RecordText {
        /// The record id.
        id: u64,
        /// Its module path.
        path: String,
        /// Its version.
        version: String,
    },
    /// The record's text does not hash to its stored leaf hash: the text (or that hash) was
    /// changed after it was logged.
    RecordEdited {
        /// The record id.
        id: u64,
        /// Its module path.
        path: String,
        /// Its version.
        version: String,
        /// The stored leaf hash.
        stored: Hash,
        /// The hash of the text now.
        text_hash: Hash,
    },
    /// A stored hash the records need is not in the file.
    MissingHash {
        /// Its stored-hash index.
        index: u64,
    },
    /// A stored interior hash is not the hash of its stored children.
    HashMismatch {
        /// Its stored-hash index.
        index: u64,
        /// The stored value.
        stored: Hash,
        /// The hash of its children.
        computed: Hash,
    },
    /// Stored hashes beyond those the records make.
    ExtraHashes {
        /// The first extra index.
        from: u64,
        /// How many.
        count: u64,
    },
    /// A head's note does not verify with the key.
    HeadSignature {
        /// The head's tree size.
        size: u64,
        /// Why.
        error: String,
    },
    /// A head's note signs another tree than its row says.
    HeadRow {
        /// The row's tree size.
        size: u64,
        /// What the note signs.
        signed: Tree,
    },
    /// A head's tree hash is not the tree hash of the stored hashes.
    HeadHash {
        /// The head's tree size.
        size: u64,
        /// The hash it signs.
        signed: Hash,
        /// The hash the stored hashes make.
        computed: Hash,
    },
    /// A head of more records than the file has.
    HeadBeyondLog {
        /// The head's tree size.
        size: u64,
        /// Records in the file.
        records: u64,
    },
    /// A tile the store serves differs from the one its records make.
    TileServed {
        /// The tile's path (`tile/8/0/000`).
        tile: String,
    },
    /// Records that no signed head covers.
    Uncovered {
        /// Records in the file.
        records: u64,
        /// The latest head's size.
        latest: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::WrongLog {
                file_key,
                verifier_key,
            } => write!(f, "the file is the log {file_key}, not {verifier_key}"),
            Problem::MissingRecord { id } => write!(f, "record {id} is missing"),
            Problem::RecordText { id, path, version } => write!(
                f,
                "record {id} ({path}@{version}): the text is not its two go.sum lines"
            ),
            Problem::RecordEdited {
                id,
                path,
                version,
                stored,
                text_hash,
            } => write!(
                f,
                "record {id} ({path}@{version}) was edited: its text hashes to {text_hash}, the \
                 log's leaf hash is {stored}"
            ),
            Problem::MissingHash { index } => write!(f, "stored hash {index} is missing"),
            Problem::HashMismatch {
                index,
                stored,
                computed,
            } => write!(
                f,
                "stored hash {index} is {stored}, its children hash to {computed}"
            ),
            Problem::ExtraHashes { from, count } => {
                write!(
                    f,
                    "{count} stored hashes from index {from} belong to no record"
                )
            }
            Problem::HeadSignature { size, error } => {
                write!(f, "the head of {size} records does not verify: {error}")
            }
            Problem::HeadRow { size, signed } => write!(
                f,
                "the head stored for {size} records signs the tree of {} records, hash {}",
                signed.n, signed.hash
            ),
            Problem::HeadHash {
                size,
                signed,
                computed,
            } => write!(
                f,
                "the head of {size} records signs tree hash {signed}, the stored hashes make \
                 {computed}"
            ),
            Problem::HeadBeyondLog { size, records } => write!(
                f,
                "a head of {size} records, but the log has {records} records"
            ),
            Problem::TileServed { tile } => {
                write!(f, "the store serves {tile} other than its records make it")
            }
            Problem::Uncovered { records, latest } => write!(
                f,
                "{records} records, but the latest signed head covers {latest}"
            ),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The log's name recorded in the file.
    pub name: String,
    /// Records checked.
    pub records: u64,
    /// Stored hashes checked.
    pub hashes: u64,
    /// Signed heads checked.
    pub heads: u64,
    /// The latest signed head's tree, as stored.
    pub latest: Option<Tree>,
    /// The problems found (at most 1,000 listed).
    pub problems: Vec<Problem>,
    /// How many problems there were in all.
    pub problems_total: u64,
}

impl VerifyReport {
    /// Whether the log checked with no problem.
    pub fn is_ok(&self) -> bool {
        self.problems_total == 0
    }

    fn report(&mut self, p: Problem) {
        self.problems_total += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log {}: {} records, {} stored hashes, {} signed heads",
            self.name, self.records, self.hashes, self.heads
        )?;
        if self.is_ok() {
            return write!(f, ": ok");
        }
        write!(f, ": {} problems", self.problems_total)?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// The right edge of the tree being rebuilt: the roots of its complete subtrees, by index.
#[derive(Default)]
struct Frontier(HashMap<u64, Hash>);

impl HashReader for Frontier {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        indexes
            .iter()
            .map(|i| self.0.get(i).copied().ok_or(TlogError::MissingHash(*i)))
            .collect()
    }
}

/// The stored hashes in index order, read as the records ask for them.
struct HashCursor<'s> {
    rows: rusqlite::Rows<'s>,
    peeked: Option<(u64, Vec<u8>)>,
    read: u64,
}

impl HashCursor<'_> {
    /// Advances past the next row.
    fn fill(&mut self) -> Result<(), Error> {
        if self.peeked.is_none() {
            if let Some(row) = self
                .rows
                .next()
                .map_err(Error::sqlite("verify: reading hashes"))?
            {
                let idx: i64 = row
                    .get(0)
                    .map_err(Error::sqlite("verify: reading hashes"))?;
                let hash: Vec<u8> = row
                    .get(1)
                    .map_err(Error::sqlite("verify: reading hashes"))?;
                self.peeked = Some((to_u64(idx, "hash index")?, hash));
            }
        }
        Ok(())
    }

    /// The stored hash at `index` (asked in increasing order), `None` if missing.
    fn get(&mut self, index: u64) -> Result<Option<Hash>, Error> {
        self.fill()?;
        match &self.peeked {
            Some((idx, hash)) if *idx == index => {
                let hash = to_hash(hash, "a stored hash")?;
                self.peeked = None;
                self.read += 1;
                Ok(Some(hash))
            }
            _ => Ok(None),
        }
    }

    /// The index of the next stored hash not read, and how many remain.
    fn rest(&mut self) -> Result<Option<(u64, u64)>, Error> {
        self.fill()?;
        let Some((first, _)) = self.peeked.take() else {
            return Ok(None);
        };
        let mut count = 1;
        while self
            .rows
            .next()
            .map_err(Error::sqlite("verify: reading hashes"))?
            .is_some()
        {
            count += 1;
        }
        Ok(Some((first, count)))
    }
}

struct StoredHead {
    size: u64,
    hash: Hash,
    note: Vec<u8>,
}

/// Checks the log file at `path` with `verifier` (the log's public key): recomputes every
/// stored hash from the record texts and checks every signed head. `Err` only when the file
/// cannot be read; what is wrong with its contents is in the report.
pub fn verify(path: &Path, verifier: &Verifier) -> Result<VerifyReport, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| Error::Open {
        path: path.to_path_buf(),
        step: "opening the file to verify",
        source,
    })?;
    let tx = conn
        .unchecked_transaction()
        .map_err(Error::sqlite("verify"))?;
    let mut report = VerifyReport::default();
    let meta = |key: &str| -> Result<String, Error> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .map_err(Error::sqlite("verify: reading the log's name and key"))
    };
    report.name = meta("name")?;
    let file_key = meta("verifier_key")?;
    if file_key != verifier.key() {
        report.report(Problem::WrongLog {
            file_key,
            verifier_key: verifier.key(),
        });
    }

    let mut records_stmt = tx
        .prepare("SELECT id, path, version, text FROM records ORDER BY id")
        .map_err(Error::sqlite("verify"))?;
    let mut records = records_stmt.query([]).map_err(Error::sqlite("verify"))?;
    let mut hashes_stmt = tx
        .prepare("SELECT idx, hash FROM hashes ORDER BY idx")
        .map_err(Error::sqlite("verify"))?;
    let mut cursor = HashCursor {
        rows: hashes_stmt.query([]).map_err(Error::sqlite("verify"))?,
        peeked: None,
        read: 0,
    };
    let mut heads_stmt = tx
        .prepare("SELECT size, hash, signed_note FROM heads ORDER BY size")
        .map_err(Error::sqlite("verify"))?;
    let mut heads = heads_stmt.query([]).map_err(Error::sqlite("verify"))?;
    let mut next_head = || -> Result<Option<StoredHead>, Error> {
        let Some(row) = heads
            .next()
            .map_err(Error::sqlite("verify: reading heads"))?
        else {
            return Ok(None);
        };
        let size: i64 = row.get(0).map_err(Error::sqlite("verify: reading heads"))?;
        let hash: Vec<u8> = row.get(1).map_err(Error::sqlite("verify: reading heads"))?;
        Ok(Some(StoredHead {
            size: to_u64(size, "tree size")?,
            hash: to_hash(&hash, "a head's tree hash")?,
            note: row.get(2).map_err(Error::sqlite("verify: reading heads"))?,
        }))
    };

    let mut frontier = Frontier::default();
    let mut head = next_head()?;
    let mut n = 0u64;
    loop {
        // The heads of the tree as it is now (n records).
        while let Some(h) = head.as_ref().filter(|h| h.size == n) {
            check_head(h, &frontier, verifier, &mut report);
            report.heads += 1;
            report.latest = Some(Tree {
                n: h.size,
                hash: h.hash,
            });
            head = next_head()?;
        }
        let Some(row) = records
            .next()
            .map_err(Error::sqlite("verify: reading records"))?
        else {
            break;
        };
        let id: i64 = row
            .get(0)
            .map_err(Error::sqlite("verify: reading records"))?;
        if to_u64(id, "record id")? != n {
            report.report(Problem::MissingRecord { id: n });
            break;
        }
        let path: String = row
            .get(1)
            .map_err(Error::sqlite("verify: reading records"))?;
        let version: String = row
            .get(2)
            .map_err(Error::sqlite("verify: reading records"))?;
        let text = bytes_at(row, 3).map_err(Error::sqlite("verify: reading records"))?;
        check_record(
            n,
            &path,
            &version,
            &text,
            &mut cursor,
            &mut frontier,
            &mut report,
        )?;
        n += 1;
    }
    report.records = n;
    // Heads of more records than there are.
    while let Some(h) = head {
        report.report(Problem::HeadBeyondLog {
            size: h.size,
            records: n,
        });
        report.heads += 1;
        head = next_head()?;
    }
    if let Some((from, count)) = cursor.rest()? {
        if from >= stored_hash_count(n) {
            report.report(Problem::ExtraHashes { from, count });
        }
    }
    report.hashes = cursor.read;
    let latest = report.latest.map_or(0, |t| t.n);
    if latest < n {
        report.report(Problem::Uncovered { records: n, latest });
    }
    Ok(report)
}

/// Checks record `n`: its text, its leaf, the interior hashes it completes; moves the frontier.
fn check_record(
    n: u64,
    path: &str,
    version: &str,
    text: &[u8],
    cursor: &mut HashCursor<'_>,
    frontier: &mut Frontier,
    report: &mut VerifyReport,
) -> Result<(), Error> {
    let zip = format!("{path} {version} h1:");
    let md = format!("{path} {version}/go.mod h1:");
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let well_formed = is_valid_record_text(text)
        && lines.len() == 3
        && lines[0].starts_with(zip.as_bytes())
        && lines[1].starts_with(md.as_bytes());
    if !well_formed {
        report.report(Problem::RecordText {
            id: n,
            path: path.to_string(),
            version: version.to_string(),
        });
    }
    let leaf_index = stored_hash_index(0, n);
    let text_hash = record_hash(text);
    let leaf = match cursor.get(leaf_index)? {
        Some(stored) => {
            if stored != text_hash {
                report.report(Problem::RecordEdited {
                    id: n,
                    path: path.to_string(),
                    version: version.to_string(),
                    stored,
                    text_hash,
                });
            }
            stored
        }
        None => {
            report.report(Problem::MissingHash { index: leaf_index });
            text_hash
        }
    };
    // Interior hashes are checked against the hash of their children as computed (from the
    // stored leaves), so one edited stored hash is one problem, not one per ancestor.
    let computed = stored_hashes_for_record_hash(n, leaf, frontier)?;
    for (index, c) in (leaf_index..).zip(computed.iter().copied()).skip(1) {
        match cursor.get(index)? {
            Some(stored) if stored != c => report.report(Problem::HashMismatch {
                index,
                stored,
                computed: c,
            }),
            Some(_) => {}
            None => report.report(Problem::MissingHash { index }),
        }
    }
    let top = computed.last().copied().unwrap_or(leaf);
    // The subtrees record n completes replace their left halves on the right edge.
    let levels = (n + 1).trailing_zeros();
    for level in 0..levels {
        frontier
            .0
            .remove(&stored_hash_index(level, (n >> level) - 1));
    }
    frontier
        .0
        .insert(stored_hash_index(levels, n >> levels), top);
    Ok(())
}

/// Checks a head of the tree the frontier describes.
fn check_head(
    head: &StoredHead,
    frontier: &Frontier,
    verifier: &Verifier,
    report: &mut VerifyReport,
) {
    match open_tree(&head.note, verifier) {
        Err(e) => report.report(Problem::HeadSignature {
            size: head.size,
            error: e.to_string(),
        }),
        Ok(signed) if signed.n != head.size || signed.hash != head.hash => {
            report.report(Problem::HeadRow {
                size: head.size,
                signed,
            })
        }
        Ok(_) => {}
    }
    match tree_hash(head.size, frontier) {
        Ok(computed) if computed == head.hash => {}
        Ok(computed) => report.report(Problem::HeadHash {
            size: head.size,
            signed: head.hash,
            computed,
        }),
        // The frontier always holds the tree's subtree roots; a miss would be a bug here.
        Err(e) => report.report(Problem::HeadSignature {
            size: head.size,
            error: format!("cannot compute its tree hash: {e}"),
        }),
    }
}

/// Records read from a store at once by [`verify_store`] (a whole number of data tiles).
const CHUNK: u64 = 1024;

/// Checks a log as its store serves it (the log of a cluster, in PostgreSQL): reads every record
/// of the latest signed tree once, recomputes the stored hashes from the texts (held in memory:
/// 64 bytes a record) and checks every data tile the store serves against those texts; then
/// every signed head — its signature, and that its tree hash is the one the records make at its
/// size (a head of another tree would be a fork) — and every hash tile the store serves for the
/// latest tree. `Err` only when the store cannot be read; what is wrong with its contents is in
/// the report.
pub fn verify_store(store: &dyn crate::LogStore) -> Result<VerifyReport, Error> {
    let verifier = store.verifier();
    let mut report = VerifyReport {
        name: verifier.name().to_owned(),
        ..VerifyReport::default()
    };
    let heads = store.heads()?;
    let Some(latest) = heads.last() else {
        return Err(Error::Corrupt("no signed tree head at all".into()));
    };
    let size = latest.tree.n;
    report.latest = Some(latest.tree);
    let mut hashes: Vec<Hash> = Vec::new();
    let mut start = 0;
    while start < size {
        let n = CHUNK.min(size - start);
        let texts = store.records(start, n)?;
        for (id, text) in (start..).zip(&texts) {
            if !is_valid_record_text(text) {
                let first = String::from_utf8_lossy(text);
                let mut words = first.split(' ');
                report.report(Problem::RecordText {
                    id,
                    path: words.next().unwrap_or_default().to_owned(),
                    version: words.next().unwrap_or_default().to_owned(),
                });
            }
            let new = modgate_tlog::stored_hashes(id, text, &hashes)?;
            hashes.extend(new);
        }
        // The data tiles of this chunk (starts are multiples of 256), as served.
        for (k, group) in texts.chunks(256).enumerate() {
            let first = start + 256 * k as u64;
            let w = u32::try_from(group.len()).unwrap_or(256);
            let tile = modgate_tlog::Tile {
                h: 8,
                l: -1,
                n: first >> 8,
                w,
            };
            let want = modgate_tlog::record::format_data_tile(first, group)?;
            if store.tile(&tile)?[..] != want[..] {
                report.report(Problem::TileServed { tile: tile.path() });
            }
        }
        report.records += n;
        start += n;
    }
    report.hashes = hashes.len() as u64;
    for head in &heads {
        report.heads += 1;
        let n = head.tree.n;
        match open_tree(&head.signed_note, verifier) {
            Ok(signed) if signed != head.tree => {
                report.report(Problem::HeadRow { size: n, signed });
            }
            Ok(_) => {}
            Err(e) => report.report(Problem::HeadSignature {
                size: n,
                error: e.to_string(),
            }),
        }
        if n > size {
            report.report(Problem::HeadBeyondLog {
                size: n,
                records: size,
            });
            continue;
        }
        let computed = tree_hash(n, &hashes)?;
        if computed != head.tree.hash {
            report.report(Problem::HeadHash {
                size: n,
                signed: head.tree.hash,
                computed,
            });
        }
    }
    for tile in modgate_tlog::new_tiles(8, 0, size) {
        let want = modgate_tlog::read_tile_data(&tile, &hashes)?;
        if store.tile(&tile)?[..] != want[..] {
            report.report(Problem::TileServed { tile: tile.path() });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{h1, other_signer, signer};
    use crate::{Entry, Log};

    fn log_of(path: &Path, n: u64) -> Log {
        let log = Log::open(path, signer("sum.corp.example")).unwrap();
        let entries: Vec<Entry> = (0..n)
            .map(|i| {
                Entry::new(
                    &format!("example.com/m{i}"),
                    "v1.0.0",
                    &h1(&i.to_string()),
                    &h1("m"),
                )
                .unwrap()
            })
            .collect();
        for chunk in entries.chunks(97) {
            log.append(chunk).unwrap();
        }
        log
    }

    /// Runs `sql` on the file with the append-only triggers dropped (as someone with the file
    /// could).
    fn tamper(path: &Path, sql: &str) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS records_no_update; DROP TRIGGER IF EXISTS hashes_no_update; \
             DROP TRIGGER IF EXISTS hashes_no_delete; DROP TRIGGER IF EXISTS heads_no_update; {sql}"
        ))
        .unwrap();
    }

    #[test]
    fn a_good_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sumdb.db");
        let log = log_of(&path, 600);
        let report = verify(&path, log.verifier()).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 600);
        assert_eq!(report.hashes, stored_hash_count(600));
        assert_eq!(report.heads, 1 + 600_u64.div_ceil(97));
        assert_eq!(report.latest, Some(log.head().unwrap().tree));
    }

    /// A store that serves what its log holds, except one edited record (`.1`), and with `.2`
    /// one more signed head, of a tree of 300 records that is not the log's (a fork).
    #[derive(Debug)]
    struct Lying(Log, Option<u64>, bool);

    impl crate::LogStore for Lying {
        fn describe(&self) -> String {
            "a lying store".into()
        }
        fn verifier(&self) -> &Verifier {
            self.0.verifier()
        }
        fn append(&self, entries: &[Entry]) -> Result<crate::Batch, Error> {
            self.0.append(entries)
        }
        fn lookup_record(
            &self,
            path: &str,
            version: &str,
        ) -> Result<Option<crate::LookupRecord>, Error> {
            self.0.lookup_record(path, version)
        }
        fn head(&self) -> Result<crate::Head, Error> {
            self.0.head()
        }
        fn heads(&self) -> Result<Vec<crate::Head>, Error> {
            let mut heads = self.0.heads()?;
            if self.2 {
                let tree = Tree {
                    n: 300,
                    hash: modgate_tlog::record_hash(b"another tree"),
                };
                let signed_note = modgate_tlog::note::sign_tree(&tree, &signer("sum.corp.example"));
                heads.push(crate::Head { tree, signed_note });
                heads.sort_by_key(|h| h.tree.n);
            }
            Ok(heads)
        }
        fn records(&self, start: u64, n: u64) -> Result<Vec<Vec<u8>>, Error> {
            let mut texts = self.0.records(start, n)?;
            if let Some(t) = (start..)
                .zip(&mut texts)
                .find(|(id, _)| Some(*id) == self.1)
            {
                *t.1 =
                    t.1.iter()
                        .map(|&b| if b == b'1' { b'2' } else { b })
                        .collect();
            }
            Ok(texts)
        }
        fn tile(&self, tile: &modgate_tlog::Tile) -> Result<bytes::Bytes, Error> {
            self.0.tile(tile)
        }
        fn tile_cache_stats(&self) -> crate::TileCacheStats {
            self.0.tile_cache_stats()
        }
    }

    #[test]
    fn a_store_is_verified_as_it_serves_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_of(&dir.path().join("sumdb.db"), 600);
        let report = verify_store(&log).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.records, 600);
        assert_eq!(report.hashes, stored_hash_count(600));
        assert_eq!(report.heads, 1 + 600_u64.div_ceil(97));
        assert_eq!(report.latest, Some(log.head().unwrap().tree));

        // A signed head of another tree (a fork), though the latest head is right.
        let forked = Lying(log, None, true);
        let report = verify_store(&forked).unwrap();
        assert_eq!(report.problems_total, 1, "{report}");
        assert!(
            report
                .to_string()
                .contains("the head of 300 records signs tree hash"),
            "{report}"
        );

        // A record served other than logged: its data tile and every head after it differ.
        let lying = Lying(forked.0, Some(11), false);
        let report = verify_store(&lying).unwrap();
        assert!(!report.is_ok());
        let text = report.to_string();
        assert!(
            text.contains("the head of 600 records signs tree hash"),
            "{report}"
        );
        assert!(
            text.contains("the store serves tile/8/data/000 other"),
            "{report}"
        );
    }

    #[test]
    fn an_edited_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sumdb.db");
        let log = log_of(&path, 300);
        tamper(
            &path,
            "UPDATE records SET text = replace(text, 'h1:', 'h1:A') WHERE id = 257",
        );
        let report = verify(&path, log.verifier()).unwrap();
        // One edit, one problem: the interior hashes and heads check against the stored leaf.
        assert_eq!(report.problems_total, 1, "{report}");
        assert!(
            matches!(&report.problems[0], Problem::RecordEdited { id: 257, path, .. }
            if path == "example.com/m257"),
            "{report}"
        );
        assert!(report
            .to_string()
            .contains("record 257 (example.com/m257@v1.0.0) was edited"));
        // A text that is no longer the record's go.sum lines is named as such too.
        tamper(
            &path,
            "UPDATE records SET text = 'x' || char(10) WHERE id = 3",
        );
        let report = verify(&path, log.verifier()).unwrap();
        assert!(
            matches!(&report.problems[0], Problem::RecordText { id: 3, .. }),
            "{report}"
        );
        assert!(
            matches!(&report.problems[1], Problem::RecordEdited { id: 3, .. }),
            "{report}"
        );
    }

    #[test]
    fn edited_and_missing_hashes_and_foreign_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sumdb.db");
        let log = log_of(&path, 300);
        // Index 2 is the level-1 hash of records 0 and 1.
        tamper(&path, "UPDATE hashes SET hash = zeroblob(32) WHERE idx = 2");
        let report = verify(&path, log.verifier()).unwrap();
        assert!(
            matches!(
                report.problems[..],
                [Problem::HashMismatch { index: 2, .. }]
            ),
            "{report}"
        );
        let path2 = dir.path().join("sumdb2.db");
        let log2 = log_of(&path2, 300);
        tamper(&path2, "DELETE FROM hashes WHERE idx = 7");
        let report = verify(&path2, log2.verifier()).unwrap();
        assert!(
            report.problems.contains(&Problem::MissingHash { index: 7 }),
            "{report}"
        );
        let report = verify(&path2, &other_signer("sum.corp.example").verifier()).unwrap();
        assert!(
            matches!(report.problems[0], Problem::WrongLog { .. }),
            "{report}"
        );
        assert!(
            matches!(report.problems[1], Problem::HeadSignature { size: 0, .. }),
            "{report}"
        );
    }
}
