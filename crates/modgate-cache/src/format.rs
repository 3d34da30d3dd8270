//! The on-disk format: file names under the fan-out directories and the binary meta file that
//! describes (and checksums) one object.
//!
//! An object whose combined cache-key hash is `h` (32 lowercase hex digits) lives in
//! `objects/h[0..2]/h[2..4]/` as two files:
//!
//! * `h.<gen>.body`: the raw response body; `<gen>` is 16 hex digits naming this write;
//! * `h.meta`: the header below, naming `<gen>` and carrying the body's length and CRC-32.
//!
//! The meta file is the commit point: it is renamed into place only after the body is fsynced and
//! renamed, so a crash leaves either the old object, the new one, or an orphan body that the
//! start-up scan deletes. Temp files end in `.tmp` and are deleted at start-up.
//!
//! Meta file layout (integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MGCACHE1` |
//! | 8 | 4 | CRC-32 of every byte after this field |
//! | 12 | 4 | flags, 0 |
//! | 16 | 8 | body generation `<gen>` |
//! | 24 | 8 | body length |
//! | 32 | 4 | body CRC-32 |
//! | 36 | 16 | primary hash (`CompactCacheKey::primary`) |
//! | 52 | 1 | 1 if a variance hash follows, else 0 |
//! | 53 | 16 | variance hash (zeros when absent) |
//! | 69 | 2+n | user tag (u16 length, UTF-8) |
//! | . | 4+n | primary key text as given to `CacheKey::new` (u32 length, raw bytes) |
//! | . | 4+n | `CacheMeta::serialize().0`, Pingora's internal meta (u32 length) |
//! | . | 4+n | `CacheMeta::serialize().1`, the response header (u32 length) |
//!
//! Nothing may follow the last field.

use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use std::path::{Path, PathBuf};

/// First bytes of every meta file (the trailing digit is the format version).
pub(crate) const META_MAGIC: &[u8; 8] = b"MGCACHE1";
/// Upper bound on a meta file; anything larger is treated as corrupt.
pub(crate) const MAX_META_FILE: u64 = 4 << 20;
/// Suffix of every temporary file.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Decoded meta file.
#[derive(Debug, Clone)]
pub(crate) struct ObjectHeader {
    /// Generation naming the body file.
    pub gen: u64,
    /// Body length in bytes.
    pub body_len: u64,
    /// CRC-32 of the body.
    pub body_crc: u32,
    /// The key Pingora's eviction manager knows the object by.
    pub key: CompactCacheKey,
    /// The primary key text (`CacheKey::primary_key`), for listing and purging by prefix.
    pub primary_key: Vec<u8>,
    /// Pingora's serialized internal meta.
    pub meta_internal: Vec<u8>,
    /// Pingora's serialized response header.
    pub meta_header: Vec<u8>,
}

impl ObjectHeader {
    /// Encode into the meta file format.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let tag = self.key.user_tag.as_bytes();
        let tag = &tag[..tag.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(
            96 + tag.len()
                + self.primary_key.len()
                + self.meta_internal.len()
                + self.meta_header.len(),
        );
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&[0; 4]); // checksum, filled below
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.gen.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&self.body_crc.to_le_bytes());
        out.extend_from_slice(&self.key.primary);
        match &self.key.variance {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(v.as_ref());
            }
            None => {
                out.push(0);
                out.extend_from_slice(&[0; 16]);
            }
        }
        out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        out.extend_from_slice(tag);
        for field in [&self.primary_key, &self.meta_internal, &self.meta_header] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field);
        }
        let crc = crc32fast::hash(&out[12..]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode a meta file, checking magic, checksum and every length.
    pub(crate) fn decode(buf: &[u8]) -> Result<ObjectHeader, String> {
        let mut r = Reader { buf, pos: 0 };
        if r.take(8)? != META_MAGIC {
            return Err(
                "bad magic (not a modgate cache meta file or another format version)".into(),
            );
        }
        let crc = r.u32()?;
        if crc32fast::hash(&buf[12..]) != crc {
            return Err("meta checksum mismatch".into());
        }
        let _flags = r.u32()?;
        let gen = r.u64()?;
        let body_len = r.u64()?;
        let body_crc = r.u32()?;
        let primary = r.hash()?;
        let has_variance = r.take(1)?[0];
        let variance = r.hash()?;
        let variance = match has_variance {
            0 => None,
            1 => Some(Box::new(variance)),
            other => return Err(format!("bad variance flag {other}")),
        };
        let tag_len = r.u16()? as usize;
        let user_tag = std::str::from_utf8(r.take(tag_len)?)
            .map_err(|_| "user tag is not UTF-8".to_string())?
            .into();
        let primary_key = r.field()?;
        let meta_internal = r.field()?;
        let meta_header = r.field()?;
        if r.pos != buf.len() {
            return Err(format!("{} trailing bytes", buf.len() - r.pos));
        }
        Ok(ObjectHeader {
            gen,
            body_len,
            body_crc,
            key: CompactCacheKey {
                primary,
                variance,
                user_tag,
            },
            primary_key,
            meta_internal,
            meta_header,
        })
    }

    /// The combined hash (file name stem) this header belongs under.
    pub(crate) fn hash_hex(&self) -> String {
        self.key.combined()
    }
}

/// Bounds-checked little-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "truncated meta file (need {n} bytes at offset {})",
                    self.pos
                )
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn hash(&mut self) -> Result<HashBinary, String> {
        self.array()
    }
    fn field(&mut self) -> Result<Vec<u8>, String> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
}

/// True for a 32-digit lowercase hex string (a combined cache key hash).
pub(crate) fn is_hash_hex(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The fan-out directory of an object (`hash` should satisfy [`is_hash_hex`]; anything shorter
/// lands in `00/00`).
pub(crate) fn object_dir(objects: &Path, hash: &str) -> PathBuf {
    let first = hash.get(0..2).unwrap_or("00");
    let second = hash.get(2..4).unwrap_or("00");
    objects.join(first).join(second)
}

/// `h.meta`.
pub(crate) fn meta_name(hash: &str) -> String {
    format!("{hash}.meta")
}

/// `h.<gen>.body`.
pub(crate) fn body_name(hash: &str, gen: u64) -> String {
    format!("{hash}.{gen:016x}.body")
}

/// `h.<gen>.body.tmp`: the body while it is being written.
pub(crate) fn body_temp_name(hash: &str, gen: u64) -> String {
    format!("{hash}.{gen:016x}.body{TMP_SUFFIX}")
}

/// `h.meta.<gen>.tmp`: a meta file before its rename.
pub(crate) fn meta_temp_name(hash: &str, gen: u64) -> String {
    format!("{hash}.meta.{gen:016x}{TMP_SUFFIX}")
}

/// What a file name in a fan-out directory is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `h.meta`.
    Meta(String),
    /// `h.<gen>.body`.
    Body(String, u64),
    /// Anything ending in `.tmp`.
    Temp,
    /// Not ours.
    Other,
}

/// Classify a file name found in a fan-out directory.
pub(crate) fn classify(name: &str) -> FileKind {
    if name.ends_with(TMP_SUFFIX) {
        return FileKind::Temp;
    }
    if let Some(hash) = name.strip_suffix(".meta") {
        if is_hash_hex(hash) {
            return FileKind::Meta(hash.to_string());
        }
    }
    if let Some(stem) = name.strip_suffix(".body") {
        if let Some((hash, gen)) = stem.split_once('.') {
            if is_hash_hex(hash) && gen.len() == 16 {
                if let Ok(gen) = u64::from_str_radix(gen, 16) {
                    return FileKind::Body(hash.to_string(), gen);
                }
            }
        }
    }
    FileKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::CacheKey;

    fn header() -> ObjectHeader {
        let mut key = CacheKey::new("route|/mod/@v/v1.0.0.zip", "tag");
        key.set_variance_key([7; 16]);
        ObjectHeader {
            gen: 0x1234,
            body_len: 99,
            body_crc: 0xdead_beef,
            key: key.to_compact(),
            primary_key: key.primary_key().to_vec(),
            meta_internal: vec![1, 2, 3],
            meta_header: vec![4, 5],
        }
    }

    #[test]
    fn header_roundtrip() {
        let h = header();
        let bytes = h.encode();
        let d = ObjectHeader::decode(&bytes).expect("decodes");
        assert_eq!(d.gen, h.gen);
        assert_eq!(d.body_len, 99);
        assert_eq!(d.body_crc, 0xdead_beef);
        assert_eq!(d.key, h.key);
        assert_eq!(d.primary_key, h.primary_key);
        assert_eq!(d.meta_internal, vec![1, 2, 3]);
        assert_eq!(d.meta_header, vec![4, 5]);
        assert_eq!(d.hash_hex(), h.key.combined());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected() {
        let bytes = header().encode();
        for len in 0..bytes.len() {
            assert!(ObjectHeader::decode(&bytes[..len]).is_err(), "len {len}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(ObjectHeader::decode(&b).is_err(), "flip at {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ObjectHeader::decode(&longer).is_err());
    }

    #[test]
    fn file_names_classify() {
        let h = "0123456789abcdef0123456789abcdef";
        assert_eq!(classify(&meta_name(h)), FileKind::Meta(h.into()));
        assert_eq!(classify(&body_name(h, 42)), FileKind::Body(h.into(), 42));
        assert_eq!(classify(&body_temp_name(h, 42)), FileKind::Temp);
        assert_eq!(classify(&meta_temp_name(h, 42)), FileKind::Temp);
        assert_eq!(classify("README"), FileKind::Other);
        assert_eq!(classify("0123.meta"), FileKind::Other);
        assert_eq!(classify(&format!("{h}.zz.body")), FileKind::Other);
        assert!(!is_hash_hex("0123456789ABCDEF0123456789abcdef"));
    }
}
