//! Where the database's files come from: a directory, or a zip holding the same layout at its
//! root or under one top-level folder (as operators mirror `vulndb.zip`). Only the files the
//! layout names are read (`index/*.json[.gz]`, `ID/<id>.json[.gz]` for IDs already checked by
//! [`valid_id`](crate::osv::valid_id)), so nothing outside the layout is ever opened (a file of
//! the layout that is a symbolic link is refused, not followed). Every read
//! is bounded: a file larger than the limit, compressed or after decompression, is an error.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::VulnDbError;

/// An opened database source.
pub(crate) enum Source {
    /// A directory with `index/` and `ID/`.
    Dir(PathBuf),
    /// A zip: the archive, its path (for messages) and its entries by name (prefix removed).
    Zip {
        archive: Box<zip::ZipArchive<File>>,
        path: String,
        entries: HashMap<String, usize>,
    },
}

/// One logical file of the layout in both served forms.
pub(crate) struct LayoutFile {
    /// The JSON (decompressed if only `.json.gz` was there).
    pub json: Vec<u8>,
    /// The gzip form (as found if it held the same JSON, else made from `json`).
    pub gz: Vec<u8>,
}

fn io_err(path: impl Into<String>) -> impl FnOnce(io::Error) -> VulnDbError {
    let path = path.into();
    move |source| VulnDbError::Io { path, source }
}

/// Reads at most `limit` bytes from `r`; more is [`VulnDbError::TooLarge`].
fn read_bounded(
    r: impl Read,
    limit: u64,
    what: &str,
    on_err: impl FnOnce(io::Error) -> VulnDbError,
) -> Result<Vec<u8>, VulnDbError> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(on_err)?;
    if out.len() as u64 > limit {
        return Err(VulnDbError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    Ok(out)
}

/// Gunzips `gz` into at most `limit` bytes.
pub(crate) fn gunzip(gz: &[u8], limit: u64, file: &str) -> Result<Vec<u8>, VulnDbError> {
    read_bounded(GzDecoder::new(gz), limit, file, |source| {
        VulnDbError::Gzip {
            file: file.to_owned(),
            source,
        }
    })
}

/// Gzips `data` (in memory; cannot fail short of allocation).
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        Compression::default(),
    );
    // Writing into a Vec does not fail.
    let _ = io::Write::write_all(&mut enc, data);
    enc.finish().unwrap_or_default()
}

impl Source {
    /// Opens `path`: a directory, or else a zip file.
    pub(crate) fn open(path: &Path, max_entries: usize) -> Result<Source, VulnDbError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(io_err(shown.clone()))?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.to_owned()));
        }
        let file = File::open(path).map_err(io_err(shown.clone()))?;
        let archive = zip::ZipArchive::new(file).map_err(|e| VulnDbError::Zip {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        if archive.len() > max_entries {
            return Err(VulnDbError::TooMany {
                what: format!("{shown}: zip entries"),
                limit: max_entries,
            });
        }
        let names: Vec<String> = archive
            .file_names_raw()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        // The layout at the root, or under exactly one top-level folder.
        let is_db = |n: &str| n == "index/db.json" || n == "index/db.json.gz";
        let prefix = if names.iter().any(|n| is_db(n)) {
            String::new()
        } else {
            let mut tops: Vec<&str> = names
                .iter()
                .filter_map(|n| {
                    let (top, rest) = n.split_once('/')?;
                    (is_db(rest) && !top.is_empty()).then_some(top)
                })
                .collect();
            tops.dedup();
            match tops.as_slice() {
                [top] => format!("{top}/"),
                [] => {
                    return Err(VulnDbError::Missing {
                        file: "index/db".to_owned(),
                    })
                }
                _ => {
                    return Err(VulnDbError::Zip {
                        path: shown,
                        detail: format!(
                            "several top-level folders hold a database ({})",
                            tops.join(", ")
                        ),
                    })
                }
            }
        };
        let entries = names
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| Some((n.strip_prefix(&prefix)?.to_owned(), i)))
            .collect();
        Ok(Source::Zip {
            archive: Box::new(archive),
            path: shown,
            entries,
        })
    }

    /// The raw bytes of `rel` (e.g. `index/db.json.gz`), `None` if absent.
    fn read_raw(&mut self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, VulnDbError> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(rel);
                // A file of the layout must be the file itself: a symbolic link could make the
                // gateway read, and serve under /vulndb/, something outside the database.
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(io_err(rel)(io::Error::other(
                            "is a symbolic link (the database's files must be regular files)",
                        )))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io_err(rel)(e)),
                }
                let file = File::open(&path).map_err(io_err(rel))?;
                let meta = file.metadata().map_err(io_err(rel))?;
                if !meta.is_file() {
                    return Err(io_err(rel)(io::Error::other("not a regular file")));
                }
                if meta.len() > limit {
                    return Err(VulnDbError::TooLarge {
                        what: rel.to_owned(),
                        limit,
                    });
                }
                read_bounded(file, limit, rel, io_err(rel)).map(Some)
            }
            Source::Zip {
                archive,
                path,
                entries,
            } => {
                let Some(&index) = entries.get(rel) else {
                    return Ok(None);
                };
                let zip_err = |e: zip::result::ZipError| VulnDbError::Zip {
                    path: path.clone(),
                    detail: format!("{rel}: {e}"),
                };
                let entry = archive.by_index(index).map_err(zip_err)?;
                if entry.is_dir() {
                    return Ok(None);
                }
                if entry.size() > limit {
                    return Err(VulnDbError::TooLarge {
                        what: rel.to_owned(),
                        limit,
                    });
                }
                read_bounded(entry, limit, rel, io_err(rel)).map(Some)
            }
        }
    }

    /// The file `base` (e.g. `index/db`, `ID/GO-2022-0475`) from `base.json` or `base.json.gz`,
    /// each at most `limit` bytes (the JSON after decompression too). `None` if neither exists.
    pub(crate) fn read(
        &mut self,
        base: &str,
        limit: u64,
    ) -> Result<Option<LayoutFile>, VulnDbError> {
        let json_name = format!("{base}.json");
        let gz_name = format!("{base}.json.gz");
        let json = self.read_raw(&json_name, limit)?;
        let gz = self.read_raw(&gz_name, limit)?;
        Ok(match (json, gz) {
            (None, None) => None,
            (Some(json), None) => Some(LayoutFile {
                gz: gzip(&json),
                json,
            }),
            (None, Some(gz)) => Some(LayoutFile {
                json: gunzip(&gz, limit, &gz_name)?,
                gz,
            }),
            // Both: the JSON is what counts; the gzip is served as found only if it holds the
            // same bytes (a stale or torn .json.gz is replaced, never served).
            (Some(json), Some(gz)) => {
                let same = gunzip(&gz, limit, &gz_name).is_ok_and(|g| g == json);
                Some(LayoutFile {
                    gz: if same { gz } else { gzip(&json) },
                    json,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trip_and_bounds() {
        let data = b"{\"modified\":\"2023-04-03T15:57:51Z\"}".repeat(100);
        let gz = gzip(&data);
        assert!(gz.len() < data.len());
        assert_eq!(gunzip(&gz, data.len() as u64, "f").unwrap(), data);
        let e = gunzip(&gz, data.len() as u64 - 1, "ID/X.json.gz").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "ID/X.json.gz is larger than the limit of {} bytes",
                data.len() - 1
            )
        );
        let e = gunzip(b"not gzip at all", 1000, "index/db.json.gz").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("index/db.json.gz: not valid gzip"),
            "{e}"
        );
    }

    #[test]
    fn a_gzip_bomb_is_cut_at_the_limit() {
        // 64 MiB of zeros compress to ~64 KiB; the reader stops after limit + 1 bytes.
        let zeros = vec![0u8; 64 << 20];
        let gz = gzip(&zeros);
        assert!(gz.len() < 1 << 20);
        let e = gunzip(&gz, 1 << 20, "index/modules.json.gz").unwrap_err();
        assert!(
            matches!(e, VulnDbError::TooLarge { limit, .. } if limit == 1 << 20),
            "{e}"
        );
    }
}
