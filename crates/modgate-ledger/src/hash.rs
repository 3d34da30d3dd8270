//! Pure hashing of module artifacts, bit-for-bit compatible with the go
//! command.
//!
//! * [`sha256_hex`] and the streaming [`Sha256Hasher`]: lowercase hex
//!   SHA-256 of raw bytes.
//! * [`zip_h1`]: the `h1:` hash of a module zip, as `dirhash.HashZip` in
//!   `golang.org/x/mod/sumdb/dirhash` computes it and `go.sum` records it:
//!   for every file in the zip, sorted by name (bytewise), the line
//!   `"{sha256 hex of content}  {name}\n"`; the hash is `"h1:"` followed by
//!   the standard base64 of the SHA-256 of all those lines. The names are
//!   hashed as stored in the zip, so they keep the `module@version/` prefix.
//! * [`mod_h1`]: the `h1:` hash of a `go.mod` file, which is the same
//!   construction over a single file named `go.mod`
//!   (`dirhash.Hash1([]string{"go.mod"}, ...)` in `cmd/go`'s modfetch).
//!
//! [`zip_h1`] is stricter than `HashZip`: besides the newline in a name that
//! `dirhash` refuses, it rejects duplicate names (which `HashZip` would hash
//! with the content of the last one), empty names, absolute names, names
//! with a backslash or a `..` element, entries carrying an Info-ZIP Unicode
//! Path extra field that does not agree with the header name (Go ignores
//! that field while the `zip` crate may substitute it, so the hashed names
//! could differ; Go's own writer never emits it), and archives that expand to more than [`MAX_ZIP_UNCOMPRESSED`]
//! bytes (the go command's own limit for module zips). Like Go's
//! `archive/zip`, it verifies each entry's CRC-32 (skipped only where Go
//! skips it: a zero CRC and no data descriptor) and hashes a directory entry
//! (`name/`) as an empty file.

use std::io::{Cursor, Read};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zip::read::ZipReadOptions;
use zip::{ExtraField, ZipArchive};

use crate::error::{excerpt, LedgerError};

/// The most bytes a module zip may expand to: the go command's
/// `MaxZipFile` (500 MiB), which it applies to the uncompressed size of a
/// module zip's content. Also bounds the work a zip bomb can cause.
pub const MAX_ZIP_UNCOMPRESSED: u64 = 500 << 20;

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The `h1:` hash of a `go.mod` file's bytes, as recorded in `go.sum` on the
/// `module version/go.mod h1:...` line.
pub fn mod_h1(go_mod: &[u8]) -> String {
    h1_single_go_mod(&hex(&Sha256::digest(go_mod)))
}

/// The `h1:` hash of a `go.mod` file, given only the SHA-256 (64 hex
/// digits) of its bytes: lets a caller that hashed the file while streaming
/// it with [`Sha256Hasher`] get the `go.sum` hash without buffering.
///
/// Upper-case hex digits are accepted; anything else that is not exactly 64
/// hex digits is an [`LedgerError::InvalidInput`].
pub fn mod_h1_from_sha256(sha256_hex: &str) -> Result<String, LedgerError> {
    let normalized = normalize_sha256_hex(sha256_hex)?;
    Ok(h1_single_go_mod(&normalized))
}

/// Checks a SHA-256 hex digest and returns it in lowercase.
pub(crate) fn normalize_sha256_hex(value: &str) -> Result<String, LedgerError> {
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LedgerError::InvalidInput {
            what: "sha256",
            value: excerpt(value),
            detail: "expected exactly 64 hex digits",
        });
    }
    Ok(value.to_ascii_lowercase())
}

fn h1_single_go_mod(sha256_lower_hex: &str) -> String {
    let mut summary = Sha256::new();
    summary.update(sha256_lower_hex.as_bytes());
    summary.update(b"  go.mod\n");
    format!("h1:{}", BASE64.encode(summary.finalize()))
}

/// The `h1:` hash of a module zip's content, as `go.sum` records it on the
/// `module version h1:...` line (`dirhash.HashZip` with `dirhash.Hash1`).
///
/// See the [module documentation](self) for the exact construction and for
/// the archives that are rejected; every rejection names the entry at fault.
pub fn zip_h1(zip: &[u8]) -> Result<String, LedgerError> {
    let archive_err = |e: zip::result::ZipError| LedgerError::ZipArchive {
        detail: e.to_string(),
    };
    let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(archive_err)?;
    if archive.has_duplicate_names() {
        return Err(LedgerError::ZipArchive {
            detail: "the central directory lists the same file name more than once".to_owned(),
        });
    }

    let mut names: Vec<(Vec<u8>, usize)> = archive
        .file_names_raw()
        .enumerate()
        .map(|(index, name)| (name.to_vec(), index))
        .collect();
    for (name, _) in &names {
        check_entry_name(name)?;
    }
    // dirhash sorts with sort.Strings: bytewise order of the raw names.
    names.sort_unstable();
    if names.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(LedgerError::ZipArchive {
            detail: "the central directory lists the same file name more than once".to_owned(),
        });
    }

    let mut summary = Sha256::new();
    let mut budget = MAX_ZIP_UNCOMPRESSED;
    let mut buf = vec![0u8; 64 * 1024];
    for (name, index) in &names {
        let entry_err = |detail: String| LedgerError::ZipEntry {
            name: String::from_utf8_lossy(name).into_owned(),
            detail,
        };
        // Read the metadata first to choose the read options Go would use.
        let (ignore_crc, is_dir, declared_size) = {
            let meta = archive
                .by_index_raw(*index)
                .map_err(|e| entry_err(e.to_string()))?;
            if meta.name_raw() != name.as_slice() {
                return Err(entry_err(
                    "central directory order changed while reading".to_owned(),
                ));
            }
            check_unicode_path(&meta, name).map_err(entry_err)?;
            let ignore_crc = meta.crc32() == 0 && !meta.flags().is_using_data_descriptor();
            (ignore_crc, name.ends_with(b"/"), meta.size())
        };

        let mut content = Sha256::new();
        if is_dir {
            // Go's archive/zip opens a directory entry as an empty file and
            // fails only when it claims uncompressed data.
            if declared_size != 0 {
                return Err(entry_err(format!(
                    "directory entry claims {declared_size} bytes of content"
                )));
            }
        } else {
            let options = ZipReadOptions::new().ignore_crc32(ignore_crc);
            let mut file = archive
                .by_index_with_options(*index, options)
                .map_err(|e| entry_err(e.to_string()))?;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(entry_err(format!("cannot read content: {e}"))),
                };
                budget = budget.checked_sub(n as u64).ok_or_else(|| {
                    entry_err(format!(
                        "the archive expands to more than {MAX_ZIP_UNCOMPRESSED} bytes"
                    ))
                })?;
                content.update(&buf[..n]);
            }
        }
        summary.update(hex(&content.finalize()).as_bytes());
        summary.update(b"  ");
        summary.update(name);
        summary.update(b"\n");
    }
    Ok(format!("h1:{}", BASE64.encode(summary.finalize())))
}

/// The name checks of [`zip_h1`]; the error names the entry.
fn check_entry_name(name: &[u8]) -> Result<(), LedgerError> {
    let reject = |detail: &str| {
        Err(LedgerError::ZipEntry {
            name: String::from_utf8_lossy(name).into_owned(),
            detail: detail.to_owned(),
        })
    };
    if name.is_empty() {
        return reject("empty file name");
    }
    if name.contains(&b'\n') {
        // The one name dirhash.Hash1 itself refuses: it would forge lines.
        return reject("file name contains a newline");
    }
    if name.contains(&b'\\') {
        return reject("file name contains a backslash");
    }
    if name[0] == b'/' {
        return reject("absolute file name");
    }
    if name.len() >= 2 && name[1] == b':' && name[0].is_ascii_alphabetic() {
        return reject("file name starts with a drive letter");
    }
    if name.split(|&b| b == b'/').any(|element| element == b"..") {
        return reject("file name has a \"..\" element");
    }
    Ok(())
}

/// Go's `archive/zip` ignores the Info-ZIP Unicode Path extra field (0x7075)
/// and hashes the header name; the `zip` crate substitutes the field's
/// content when its CRC matches. Accept the field only when it agrees with
/// the name we are about to hash, so both always hash the same name.
fn check_unicode_path<R: Read>(
    file: &zip::read::ZipFile<'_, R>,
    name: &[u8],
) -> Result<(), String> {
    for field in file.extra_data_fields() {
        if let ExtraField::UnicodePath(unicode) = field {
            if unicode.clone().unwrap_valid(name).is_err() {
                return Err(
                    "an Info-ZIP Unicode Path extra field gives a different name than the header \
                     (Go would hash the header name)"
                        .to_owned(),
                );
            }
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Incremental SHA-256 for bytes that arrive in pieces, such as a response
/// body the gateway streams to the client while recording it.
///
/// ```
/// use modgate_ledger::{sha256_hex, Sha256Hasher};
/// let mut hasher = Sha256Hasher::new();
/// hasher.update(b"module example.com/m\n");
/// hasher.update(b"\ngo 1.21\n");
/// assert_eq!(hasher.bytes_hashed(), 30);
/// assert_eq!(hasher.finish(), sha256_hex(b"module example.com/m\n\ngo 1.21\n"));
/// ```
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: Sha256,
    len: u64,
}

impl Sha256Hasher {
    /// A hasher that has seen no bytes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len = self.len.saturating_add(data.len() as u64);
    }

    /// How many bytes have been fed so far: the artifact's size once all of
    /// it went through.
    pub fn bytes_hashed(&self) -> u64 {
        self.len
    }

    /// The lowercase hex SHA-256 of everything fed, as [`sha256_hex`] gives.
    pub fn finish(self) -> String {
        hex(&self.inner.finalize())
    }
}

impl std::fmt::Debug for Sha256Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256Hasher")
            .field("bytes_hashed", &self.len)
            .finish_non_exhaustive()
    }
}

impl std::io::Write for Sha256Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
