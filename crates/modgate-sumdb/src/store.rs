//! The checksum database whatever holds it (issue 23): [`LogStore`], what the protocol answers,
//! the appender and the gateway need of a log, implemented by the embedded SQLite [`Log`] and by
//! `modgate-postgres`'s log shared by the replicas of a cluster; and the rules every store
//! shares, free of I/O:
//!
//! * [`plan_append`] — what appending a batch does: which entries are new (ids in order from the
//!   tree's size), which are logged already with the same text (their ids kept) or with other
//!   text (refused), the new stored hashes and the new tree. A store reads the tree and writes
//!   the plan in one transaction, under its one-writer lock.
//! * [`tile_bytes`] — a tile's contents from the records and stored hashes of a tree.
//!
//! [`Log`]: crate::Log

use std::collections::HashMap;

use bytes::Bytes;
use modgate_tlog::record::format_data_tile;
use modgate_tlog::{
    read_tile_data, stored_hash_count, stored_hashes, tree_hash, Hash, HashReader, Tile, TlogError,
    Tree, Verifier,
};

use crate::cache::TileCacheStats;
use crate::log::{Appended, Batch, Head, LookupRecord};
use crate::{Entry, Error};

/// A checksum database: append batches, read heads, records and tiles. `Send + Sync`.
pub trait LogStore: Send + Sync + std::fmt::Debug {
    /// What holds the log, for messages (`the checksum database /var/…/log.db`,
    /// `PostgreSQL 10.0.0.5:5432/modgate`).
    fn describe(&self) -> String;

    /// The verifier of the log's heads.
    fn verifier(&self) -> &Verifier;

    /// The log's name (the server name of its key).
    fn name(&self) -> &str {
        self.verifier().name()
    }

    /// The verifier key, `<name>+<key id>+<key>`: what `GOSUMDB` names.
    fn verifier_key(&self) -> String {
        self.verifier().key()
    }

    /// Appends `entries` as one batch: one transaction and, if any entry is new, one signed
    /// head. Entries already logged with the same text keep their id; with other text they are
    /// refused ([`Error::Conflict`]) and the rest is appended. An `Err` means nothing of the
    /// batch was written. Blocks: from async code use an [`Appender`](crate::Appender).
    fn append(&self, entries: &[Entry]) -> Result<Batch, Error>;

    /// The answer to `/lookup/<path>@<version>`: the record and the latest signed head, read
    /// together (the head covers the record). `None` if not logged.
    fn lookup_record(&self, path: &str, version: &str) -> Result<Option<LookupRecord>, Error>;

    /// The latest signed head.
    fn head(&self) -> Result<Head, Error>;

    /// Every signed head, by tree size (for verification: each must be a head of the one tree).
    fn heads(&self) -> Result<Vec<Head>, Error>;

    /// The texts of records `start..start+n`, all within the latest signed tree.
    fn records(&self, start: u64, n: u64) -> Result<Vec<Vec<u8>>, Error>;

    /// The contents of `tile`, full or partial; [`Error::NotInTree`] beyond the latest signed
    /// tree.
    fn tile(&self, tile: &Tile) -> Result<Bytes, Error>;

    /// What the full-tile cache has done.
    fn tile_cache_stats(&self) -> TileCacheStats;

    /// The record id of `path@version`, if logged.
    fn lookup(&self, path: &str, version: &str) -> Result<Option<u64>, Error> {
        Ok(self.lookup_record(path, version)?.map(|r| r.id))
    }

    /// The latest signed tree head's note (what `/latest` serves).
    fn signed_head(&self) -> Result<Vec<u8>, Error> {
        Ok(self.head()?.signed_note)
    }

    /// The number of records in the latest signed tree.
    fn tree_size(&self) -> Result<u64, Error> {
        Ok(self.head()?.tree.n)
    }
}

/// A record an append adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Its id (the tree's size before it, counting the batch's earlier new records).
    pub id: u64,
    /// The module path.
    pub path: String,
    /// The version.
    pub version: String,
    /// The record text (the two go.sum lines).
    pub text: String,
}

/// What appending a batch to a tree does ([`plan_append`]).
#[derive(Debug)]
pub struct Plan {
    /// One outcome per entry, in order.
    pub outcomes: Vec<Result<Appended, Error>>,
    /// The records to add, in id order.
    pub records: Vec<NewRecord>,
    /// The stored hashes to add, from index `stored_hash_count(size)` on.
    pub hashes: Vec<Hash>,
    /// The new tree, when anything is added (to be signed and stored with the batch).
    pub tree: Option<Tree>,
}

/// The stored hashes of a tree plus those a batch has computed (from index `base` on).
struct Pending<'r, R> {
    stored: &'r R,
    base: u64,
    pending: Vec<Hash>,
}

impl<R: HashReader> HashReader for Pending<'_, R> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        let mut out = vec![Hash::default(); indexes.len()];
        let mut from_store = Vec::new();
        for (slot, &i) in indexes.iter().enumerate() {
            match i.checked_sub(self.base) {
                Some(k) => {
                    out[slot] = *usize::try_from(k)
                        .ok()
                        .and_then(|k| self.pending.get(k))
                        .ok_or(TlogError::MissingHash(i))?;
                }
                None => from_store.push((slot, i)),
            }
        }
        if !from_store.is_empty() {
            let wanted: Vec<u64> = from_store.iter().map(|&(_, i)| i).collect();
            let hashes = self.stored.read_hashes(&wanted)?;
            for ((slot, _), h) in from_store.iter().zip(hashes) {
                out[*slot] = h;
            }
        }
        Ok(out)
    }
}

/// Plans appending `entries` to the tree of `size` records whose stored hashes `stored` reads:
/// `find` tells how a module version is logged (its id and text), `explain` turns a failed hash
/// read into the store's error. Entries already logged (before or earlier in the batch) with the
/// same text keep their id; with other text they are refused and the rest go on.
pub fn plan_append<R: HashReader>(
    size: u64,
    entries: &[Entry],
    mut find: impl FnMut(&str, &str) -> Result<Option<(u64, String)>, Error>,
    stored: &R,
    explain: impl Fn(TlogError) -> Error,
) -> Result<Plan, Error> {
    let mut hashes = Pending {
        stored,
        base: stored_hash_count(size),
        pending: Vec::new(),
    };
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut records: Vec<NewRecord> = Vec::new();
    let mut in_batch: HashMap<(&str, &str), (u64, String)> = HashMap::new();
    let mut next = size;
    for entry in entries {
        let text = entry.text();
        let key = (entry.path(), entry.version());
        let logged = match in_batch.get(&key) {
            Some((id, t)) => Some((*id, t.clone())),
            None => find(key.0, key.1)?,
        };
        outcomes.push(match logged {
            Some((id, logged)) if logged == text => Ok(Appended { id, new: false }),
            Some((_, logged)) => Err(Error::Conflict {
                path: entry.path().to_string(),
                version: entry.version().to_string(),
                logged,
                offered: text,
            }),
            None => {
                let id = next;
                let new = stored_hashes(id, text.as_bytes(), &hashes).map_err(&explain)?;
                hashes.pending.extend(new);
                records.push(NewRecord {
                    id,
                    path: key.0.to_owned(),
                    version: key.1.to_owned(),
                    text: text.clone(),
                });
                in_batch.insert(key, (id, text));
                next += 1;
                Ok(Appended { id, new: true })
            }
        });
    }
    let tree = if next > size {
        Some(Tree {
            n: next,
            hash: tree_hash(next, &hashes).map_err(&explain)?,
        })
    } else {
        None
    };
    Ok(Plan {
        outcomes,
        records,
        hashes: hashes.pending,
        tree,
    })
}

/// The contents of `tile` in a tree of `size` records: a data tile from `records(start, n)`
/// (`<id>\n<text>\n` records as `sumdb.Server` serves them), a hash tile from `stored`.
/// [`Error::NotInTree`] for a tile the tree does not have.
pub fn tile_bytes<R: HashReader>(
    tile: &Tile,
    size: u64,
    records: impl FnOnce(u64, u64) -> Result<Vec<Vec<u8>>, Error>,
    stored: &R,
    explain: impl Fn(TlogError) -> Error,
) -> Result<Vec<u8>, Error> {
    if !tile.within(size) {
        return Err(Error::NotInTree {
            what: tile.path(),
            size,
        });
    }
    if tile.is_data() {
        let start = tile.n << tile.h;
        let texts = records(start, u64::from(tile.w))?;
        Ok(format_data_tile(start, &texts)?)
    } else {
        read_tile_data(tile, stored).map_err(explain)
    }
}

/// The range `start..start+n` of record ids, checked to lie within a tree of `size`.
pub fn record_range(start: u64, n: u64, size: u64) -> Result<std::ops::Range<u64>, Error> {
    match start.checked_add(n).filter(|&end| end <= size) {
        Some(end) => Ok(start..end),
        None => Err(Error::NotInTree {
            what: format!("records {start}..{}", start.saturating_add(n)),
            size,
        }),
    }
}

/// Checks that `texts` are the records `range` in order (`ids[i]` the id of `texts[i]`).
pub fn check_records(
    range: &std::ops::Range<u64>,
    ids: &[u64],
    texts: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, Error> {
    for (want, &id) in range.clone().zip(ids) {
        if id != want {
            return Err(Error::Corrupt(format!("record {want} is missing")));
        }
    }
    if texts.len() as u64 != range.end - range.start {
        return Err(Error::Corrupt(format!(
            "records {}..{}: only {} stored",
            range.start,
            range.end,
            texts.len()
        )));
    }
    Ok(texts)
}

/// Checks a stored latest head against its verifier, the record and hash counts, and the tree
/// hash its stored hashes make (`computed`).
pub fn check_head(
    head: &Head,
    verifier: &Verifier,
    (records, hashes): (u64, u64),
    computed: impl FnOnce(u64) -> Result<Hash, Error>,
) -> Result<(), Error> {
    let signed = modgate_tlog::note::open_tree(&head.signed_note, verifier)
        .map_err(|e| Error::Corrupt(format!("the latest head does not verify: {e}")))?;
    if signed != head.tree {
        return Err(Error::Corrupt(format!(
            "the latest head signs {signed:?}, stored as {:?}",
            head.tree
        )));
    }
    if records != head.tree.n || hashes != stored_hash_count(records) {
        return Err(Error::Corrupt(format!(
            "{records} records and {hashes} stored hashes, but the latest head is of {} \
             records ({} hashes)",
            head.tree.n,
            stored_hash_count(head.tree.n)
        )));
    }
    let computed = computed(head.tree.n)?;
    if computed != head.tree.hash {
        return Err(Error::Corrupt(format!(
            "the stored hashes make tree hash {computed} for {} records, the head signs {}",
            head.tree.n, head.tree.hash
        )));
    }
    Ok(())
}
