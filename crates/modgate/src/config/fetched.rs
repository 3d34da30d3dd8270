//! The `fetched:` section of `gateway.yaml`: the index of what each identity fetched (off
//! when absent; it needs `cache:`, whose integrity ledger gives the hashes it records).
//!
//! ```yaml
//! fetched:
//!   path: /var/lib/modgate/fetched.sqlite   # default: <cache.dir>/fetched.sqlite
//!   retention: 90d
//!   max_records: 10000000
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::de::Deserializer;
use serde::Deserialize;

use super::{from_str_with, PathValue};

/// The `fetched:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchedConfig {
    /// The index's SQLite file; `<cache.dir>/fetched.sqlite` when absent.
    pub path: Option<PathValue>,
    /// Records older than this are removed.
    #[serde(default = "default_retention")]
    pub retention: Span,
    /// At most this many records are kept (the oldest go first).
    #[serde(default = "default_max_records")]
    pub max_records: MaxRecords,
}

/// A span written `90d`, `12h`, `30m` or `45s` (at most 100 years).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a span such as \"90d\" or \"12h\"", |s| {
            let span = modgate_fetched::time::parse_span(s)?;
            if span.is_zero() {
                return Err(
                    "the retention must be longer than 0 (remove `fetched:` to keep \
                            no record)"
                        .into(),
                );
            }
            Ok(Span(span))
        })
    }
}

/// The most records kept: 1 to 1,000,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxRecords(pub u64);

impl<'de> Deserialize<'de> for MaxRecords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        if !(1..=1_000_000_000).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "max_records must be between 1 and 1000000000, not {n}"
            )));
        }
        Ok(MaxRecords(n))
    }
}

fn default_retention() -> Span {
    Span(Duration::from_secs(90 * 86_400))
}

fn default_max_records() -> MaxRecords {
    MaxRecords(10_000_000)
}

impl FetchedConfig {
    /// The index file in force: `path`, or `fetched.sqlite` in the cache directory.
    pub fn path(&self, cache_dir: &std::path::Path) -> PathBuf {
        self.path
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_else(|| cache_dir.join("fetched.sqlite"))
    }

    /// How the index is bounded.
    pub fn limits(&self) -> modgate_fetched::Limits {
        modgate_fetched::Limits {
            retention: Some(self.retention.0),
            max_records: self.max_records.0,
        }
    }
}
