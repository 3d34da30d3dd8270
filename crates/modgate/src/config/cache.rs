//! The `cache:` section of `gateway.yaml` (the persistent response cache and the integrity
//! ledger beside it) and a route's `cache:` overrides.
//!
//! ```yaml
//! cache:
//!   dir: /var/cache/modgate
//!   max_size: 20GiB
//!   ttl: { mutable: 60s, not_found: 30s, stale_if_error: 24h }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::Deserializer;
use serde::Deserialize;

use super::{from_str_with, number_and_unit, resolve_path, DurationValue};

/// A size such as `20GiB`, `512MiB`, `64KiB`, `1GB` or a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Parses `20GiB`, `512MiB`, `64KiB`, `10GB`, `100MB`, `4kB` or a bare number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (value, unit) = number_and_unit(s)
        .ok_or_else(|| format!("{s:?} is not a size (use e.g. \"512MiB\", \"20GiB\")"))?;
    let scale: f64 = match unit {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ))
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || !(0.0..=1e18).contains(&bytes) {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(bytes as u64)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A file or directory path (relative to the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct PathValue(pub PathBuf);

impl<'de> Deserialize<'de> for PathValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a path", |s| {
            if s.is_empty() {
                Err("the path must not be empty".into())
            } else {
                Ok(PathValue(resolve_path(s)))
            }
        })
    }
}

/// How long answers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtlConfig {
    /// `list`, `@latest` and version-query `.info`: fresh this long, then asked again.
    pub mutable: DurationValue,
    /// 404 / 410 answers.
    pub not_found: DurationValue,
    /// A mutable answer past its TTL is still served this long when the upstream fails.
    pub stale_if_error: DurationValue,
    /// A mutable answer past its TTL is served at once for this long while one background
    /// refresh asks the upstream (`0s`: every request after the TTL waits for the upstream).
    pub stale_while_revalidate: DurationValue,
    /// A checksum database's signed `latest` tree.
    pub sumdb_latest: DurationValue,
}

impl Default for TtlConfig {
    fn default() -> Self {
        TtlConfig {
            mutable: DurationValue(Duration::from_secs(60)),
            not_found: DurationValue(Duration::from_secs(30)),
            stale_if_error: DurationValue(Duration::from_secs(24 * 3600)),
            stale_while_revalidate: DurationValue(Duration::from_secs(3600)),
            sumdb_latest: DurationValue(Duration::from_secs(30)),
        }
    }
}

impl TtlConfig {
    /// The run-time form.
    pub fn runtime(&self) -> crate::cache::Ttls {
        crate::cache::Ttls {
            mutable: self.mutable.0,
            not_found: self.not_found.0,
            stale_if_error: self.stale_if_error.0,
            stale_while_revalidate: self.stale_while_revalidate.0,
            sumdb_latest: self.sumdb_latest.0,
        }
    }
}

impl RouteCacheConfig {
    /// The run-time form.
    pub fn runtime(&self) -> crate::cache::RouteCache {
        crate::cache::RouteCache {
            enabled: self.enabled,
            mutable: self.mutable.map(|d| d.0),
            not_found: self.not_found.map(|d| d.0),
            stale_if_error: self.stale_if_error.map(|d| d.0),
            stale_while_revalidate: self.stale_while_revalidate.map(|d| d.0),
        }
    }
}

/// Per-route overrides of [`TtlConfig`] (`routes[].cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheConfig {
    /// `false` turns caching off for the route.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub mutable: Option<DurationValue>,
    pub not_found: Option<DurationValue>,
    pub stale_if_error: Option<DurationValue>,
    pub stale_while_revalidate: Option<DurationValue>,
}

fn yes() -> bool {
    true
}

/// The `cache:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub dir: PathValue,
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    #[serde(default = "default_max_object")]
    pub max_object_size: ByteSize,
    /// In-memory tier for small objects (`.info`, `.mod`, `list`).
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    #[serde(default = "default_memory_object")]
    pub memory_object_max: ByteSize,
    /// Memory all bodies together may be held in when the cache's filesystem cannot take them
    /// (an exact version being checked, an unknown-length answer being stored).
    #[serde(default = "default_max_spill")]
    pub max_spill: ByteSize,
    /// Concurrent misses for one object wait this long for the first one's fetch.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: DurationValue,
    #[serde(default)]
    pub ttl: TtlConfig,
    /// The integrity ledger (SQLite); `<dir>/ledger.sqlite` when absent.
    pub ledger: Option<PathValue>,
    /// fsync objects and directories on commit (only turn off for throwaway caches).
    #[serde(default = "yes")]
    pub fsync: bool,
}

fn default_max_size() -> ByteSize {
    ByteSize(10 << 30)
}
fn default_max_object() -> ByteSize {
    // Go refuses module zips over 500 MiB.
    ByteSize(600 << 20)
}
fn default_memory() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_memory_object() -> ByteSize {
    ByteSize(2 << 20)
}
fn default_max_spill() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_lock_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(60))
}

impl CacheConfig {
    pub fn ledger_path(&self) -> PathBuf {
        self.ledger
            .as_ref()
            .map(|l| l.0.clone())
            .unwrap_or_else(|| self.dir.0.join("ledger.sqlite"))
    }

    /// The sightings store (cooldown's clock): `sightings.sqlite` beside the ledger.
    pub fn sightings_path(&self) -> PathBuf {
        self.ledger_path().with_file_name("sightings.sqlite")
    }

    /// Settings for the disk storage.
    pub fn disk(&self) -> modgate_cache::DiskCacheConfig {
        let mut c = modgate_cache::DiskCacheConfig::new(self.dir.0.clone());
        c.max_disk_bytes = usize::try_from(self.max_size.0).unwrap_or(usize::MAX);
        c.max_object_bytes = self.max_object_size.0;
        c.memory_budget_bytes = usize::try_from(self.memory.0).unwrap_or(usize::MAX);
        c.memory_object_max_bytes = usize::try_from(self.memory_object_max.0)
            .unwrap_or(usize::MAX)
            .min(c.memory_budget_bytes);
        c.fsync = self.fsync;
        c.max_spill_bytes = self.max_spill.0;
        c
    }
}
