//! The index snapshot, `<root>/eviction/index.snapshot`: every tracked object's hash and weight
//! in LRU order, so opening the cache restores the index from one sequential read.
//!
//! Layout (little-endian):
//!
//! ```text
//! magic "MGINDEX\n" | version u32 (1) | reserved u32 (0) | written at, unix nanoseconds u64
//! | entries u64 | entries × (hash [16] big-endian | weight u64) | CRC-32 of all before u32
//! ```
//!
//! Written atomically: a temp file beside it (`*.tmp`, removed at open if a save was
//! interrupted), fsync, rename, fsync of the directory. Anything that does not check out (length,
//! magic, version, CRC, a hash twice) is rejected as a whole and the cache falls back to
//! rebuilding the index from the directory.

use super::{Hash, Lru};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The snapshot's file name in the state directory.
pub(crate) const FILE: &str = "index.snapshot";
const MAGIC: &[u8; 8] = b"MGINDEX\n";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 8 + 8;
const ENTRY: usize = 16 + 8;
const TRAILER: usize = 4;

/// A snapshot read back.
pub(crate) struct Loaded {
    /// The index it describes.
    pub lru: Lru,
    /// When it was written.
    pub written: SystemTime,
}

/// Encode the index (taken under its lock: one pass over the list).
pub(crate) fn encode(lru: &Lru, now: SystemTime) -> Vec<u8> {
    let n = lru.len();
    let mut out = Vec::with_capacity(HEADER + n * ENTRY + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    out.extend_from_slice(&nanos.to_le_bytes());
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    lru.for_each_ordered(|hash, weight| {
        out.extend_from_slice(&hash.to_be_bytes());
        out.extend_from_slice(&weight.to_le_bytes());
        count += 1;
    });
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decode a snapshot; `Err` says what is wrong with it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Loaded, String> {
    if bytes.len() < HEADER + TRAILER {
        return Err(format!("{} bytes, shorter than a header", bytes.len()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let crc = u32::from_le_bytes(trailer.try_into().map_err(|_| "trailer")?);
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    if &body[..8] != MAGIC {
        return Err("not an index snapshot".into());
    }
    let u32_at = |at: usize| body[at..at + 4].try_into().map(u32::from_le_bytes);
    let u64_at = |at: usize| body[at..at + 8].try_into().map(u64::from_le_bytes);
    let version = u32_at(8).map_err(|_| "version")?;
    if version != VERSION {
        return Err(format!("version {version}, expected {VERSION}"));
    }
    let nanos = u64_at(16).map_err(|_| "time")?;
    let count = u64_at(24).map_err(|_| "count")?;
    let entries = &body[HEADER..];
    if u64::try_from(entries.len()).ok() != count.checked_mul(ENTRY as u64) {
        return Err(format!(
            "{} bytes of entries for {count} entries",
            entries.len()
        ));
    }
    let iter = entries.chunks_exact(ENTRY).map(|e| {
        let mut h = [0u8; 16];
        h.copy_from_slice(&e[..16]);
        let mut w = [0u8; 8];
        w.copy_from_slice(&e[16..]);
        (Hash::from_be_bytes(h), u64::from_le_bytes(w))
    });
    let lru = Lru::from_ordered(iter).ok_or("a hash appears twice")?;
    Ok(Loaded {
        lru,
        written: UNIX_EPOCH + Duration::from_nanos(nanos),
    })
}

/// Read and decode `path`: `Ok(None)` if there is none, `Err` if it is unusable.
pub(crate) fn read(path: &Path) -> Result<Option<Loaded>, String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    decode(&bytes).map(Some)
}

/// Write `bytes` as the snapshot in `dir`: temp file, fsync, rename, fsync of the directory
/// (the syncs only with `fsync`).
pub(crate) fn write(dir: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        "{FILE}.{:x}{nanos:08x}{}",
        std::process::id(),
        crate::format::TMP_SUFFIX
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        if fsync {
            f.sync_all()?;
        }
        fs::rename(&tmp, dir.join(FILE))?;
        if fsync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::Place;
    use super::*;

    fn sample() -> Lru {
        let mut lru = Lru::new();
        for i in 0u32..50 {
            let h = (Hash::from(i.wrapping_mul(2_654_435_761)) << 96) | Hash::from(i);
            lru.insert(h, 100 + u64::from(i), Place::Hot);
        }
        lru
    }

    fn order(lru: &Lru) -> Vec<(Hash, u64)> {
        let mut v = Vec::new();
        lru.for_each_ordered(|h, w| v.push((h, w)));
        v
    }

    #[test]
    fn snapshot_round_trip_keeps_order_weights_and_time() {
        let lru = sample();
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let loaded = decode(&encode(&lru, t)).expect("decodes");
        assert_eq!(order(&loaded.lru), order(&lru));
        assert_eq!(loaded.lru.used(), lru.used());
        assert_eq!(loaded.written, t);

        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &encode(&lru, t), true).expect("write");
        let back = read(&dir.path().join(FILE))
            .expect("reads")
            .expect("exists");
        assert_eq!(order(&back.lru), order(&lru));
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(FILE)],
            "no temp file left"
        );
        assert!(read(&dir.path().join("missing")).expect("fine").is_none());
    }

    #[test]
    fn every_truncation_and_many_bit_flips_are_rejected() {
        let bytes = encode(&sample(), SystemTime::now());
        for len in (0..bytes.len()).step_by(7) {
            assert!(decode(&bytes[..len]).is_err(), "len {len}");
        }
        for i in (0..bytes.len()).step_by(5) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b).is_err(), "flip at {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn a_repeated_hash_is_rejected_even_with_a_good_checksum() {
        let mut lru = Lru::new();
        lru.insert(1, 1, Place::Hot);
        lru.insert(2, 1, Place::Hot);
        let mut bytes = encode(&lru, SystemTime::now());
        // make the second entry's hash the first's, then fix the checksum
        let first = HEADER..HEADER + 16;
        let second = HEADER + ENTRY;
        let copy = bytes[first].to_vec();
        bytes[second..second + 16].copy_from_slice(&copy);
        let n = bytes.len() - TRAILER;
        let crc = crc32fast::hash(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&bytes).err().is_some_and(|e| e.contains("twice")));
    }
}
