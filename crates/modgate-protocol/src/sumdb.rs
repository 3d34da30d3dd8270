//! Checksum-database (sumdb) request syntax as proxied through a GOPROXY at
//! `/sumdb/<name>/...`: tile coordinate paths (a port of
//! `golang.org/x/mod/sumdb/tlog`'s `Tile.Path`/`ParseTilePath`), the
//! `module@version` syntax of `/lookup/` (the sumdb server's `modVerRE`),
//! checksum-database names, and the [`SumdbRequest`] type.

use crate::error::go_quote;
use crate::escape::{escape_path, escape_version};
use crate::request::{fallback_segment, percent_encode_path, RequestKind};

/// A transparency-log tile (Go's `tlog.Tile`).
///
/// A tile of height H at level L offset N lists W consecutive hashes at level
/// H*L of the tree starting at offset N*(2**H). Level −1 is the record-data
/// level, spelled `data` in tile paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    /// Height H, 1 ≤ H ≤ 30.
    pub height: u32,
    /// Level L ≥ 0, or −1 for record data.
    pub level: i64,
    /// Number N within the level, ≥ 0.
    pub index: i64,
    /// Width W, 1 ≤ W ≤ 2**H (2**H is a complete tile).
    pub width: u32,
}

/// Go's `pathBase`: N is encoded three decimal digits per path element.
const PATH_BASE: i64 = 1000;

impl Tile {
    /// The tile coordinate path `tile/H/L/NNN[.p/W]` (Go's `Tile.Path`), e.g.
    /// `tile/3/4/x001/x234/067.p/1`.
    pub fn path(&self) -> String {
        let mut n = self.index;
        let mut n_str = format!("{:03}", n % PATH_BASE);
        while n >= PATH_BASE {
            n /= PATH_BASE;
            n_str = format!("x{:03}/{n_str}", n % PATH_BASE);
        }
        let full = 1u64.checked_shl(self.height).unwrap_or(0);
        let p_str = if u64::from(self.width) != full {
            format!(".p/{}", self.width)
        } else {
            String::new()
        };
        let level = if self.level == -1 {
            "data".to_owned()
        } else {
            self.level.to_string()
        };
        format!("tile/{}/{level}/{n_str}{p_str}", self.height)
    }

    /// Whether this is a partial tile (W < 2**H), i.e. one that will later
    /// be superseded by a wider tile.
    pub fn is_partial(&self) -> bool {
        1u64.checked_shl(self.height)
            .is_some_and(|full| u64::from(self.width) < full)
    }

    /// Whether this tile holds record data (level `data`) rather than hashes.
    pub fn is_data(&self) -> bool {
        self.level == -1
    }
}

/// A malformed tile path (Go's `badPathError`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("malformed tile path {}", go_quote(path))]
pub struct TileError {
    /// The path that failed to parse.
    pub path: String,
}

/// Go's `strconv.Atoi` (base 10, optional sign, 64-bit).
fn atoi(s: &str) -> Option<i64> {
    s.parse::<i64>().ok()
}

/// Parses a tile coordinate path such as `tile/8/0/x123/456.p/10` or
/// `tile/8/data/000` (Go's `tlog.ParseTilePath`). Only the canonical
/// spelling is accepted: the parsed tile must format back to `path`.
pub fn parse_tile_path(path: &str) -> Result<Tile, TileError> {
    let bad = || TileError {
        path: path.to_owned(),
    };
    let mut f: Vec<&str> = path.split('/').collect();
    if f.len() < 4 || f[0] != "tile" {
        return Err(bad());
    }
    let h = atoi(f[1]);
    let is_data = f[2] == "data";
    let l = if is_data { Some(0) } else { atoi(f[2]) };
    let (Some(h), Some(l)) = (h, l) else {
        return Err(bad());
    };
    if !(1..=30).contains(&h) || l < 0 {
        return Err(bad());
    }
    let mut w: i64 = 1 << h;
    let last = f.len() - 1;
    if let Some(stripped) = f[last - 1].strip_suffix(".p") {
        match atoi(f[last]) {
            Some(ww) if ww > 0 && ww < w => w = ww,
            _ => return Err(bad()),
        }
        f[last - 1] = stripped;
        f.truncate(last);
    }
    let mut n: i64 = 0;
    for s in &f[3..] {
        let nn = atoi(s.strip_prefix('x').unwrap_or(s)).ok_or_else(bad)?;
        if !(0..PATH_BASE).contains(&nn) {
            return Err(bad());
        }
        n = n
            .checked_mul(PATH_BASE)
            .and_then(|n| n.checked_add(nn))
            .ok_or_else(bad)?;
    }
    let tile = Tile {
        // 1 ≤ h ≤ 30 and 1 ≤ w ≤ 2**30 were checked above.
        height: u32::try_from(h).map_err(|_| bad())?,
        level: if is_data { -1 } else { l },
        index: n,
        width: u32::try_from(w).map_err(|_| bad())?,
    };
    if tile.path() != path {
        return Err(bad());
    }
    Ok(tile)
}

/// Reports whether `name` is acceptable as a checksum-database name in
/// `/sumdb/<name>/...`: a lowercase host-like name (dot-separated labels of
/// `a-z`, `0-9` and `-`, each 1–63 bytes, not starting or ending with `-`;
/// at most 253 bytes), such as `sum.golang.org`.
pub fn is_valid_sumdb_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The sumdb server's `modVerRE`, applied to the escaped text after
/// `/lookup/`:
/// `^[^@]+@v[0-9]+\.[0-9]+\.[0-9]+(-[^@]*)?(\+incompatible)?$`.
pub(crate) fn split_lookup(text: &str) -> Option<(&str, &str)> {
    let (module, version) = text.split_once('@')?;
    if module.is_empty() || version.contains('@') {
        return None;
    }
    let mut rest = version.strip_prefix('v')?;
    for sep in [Some(b'.'), Some(b'.'), None] {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &rest[digits..];
        if let Some(sep) = sep {
            if rest.as_bytes().first() != Some(&sep) {
                return None;
            }
            rest = &rest[1..];
        }
    }
    if rest.is_empty() || rest.starts_with('-') || rest == "+incompatible" {
        Some((module, version))
    } else {
        None
    }
}

/// Which checksum-database endpoint a [`SumdbRequest`] is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SumdbEndpoint {
    /// `/sumdb/<name>/supported`: the proxy's "I can proxy this sumdb" probe.
    Supported,
    /// `/sumdb/<name>/latest`: the latest signed tree head.
    Latest,
    /// `/sumdb/<name>/lookup/<module>@<version>`.
    Lookup {
        /// The decoded (unescaped) module path.
        module: String,
        /// The decoded (unescaped) version.
        version: String,
    },
    /// `/sumdb/<name>/tile/<H>/<L>/<K>[.p/<W>]`.
    Tile {
        /// The validated text after `tile/`, e.g. `8/0/x001/234.p/10`.
        path: String,
    },
}

/// A checksum-database request proxied through the GOPROXY.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SumdbRequest {
    /// The checksum database name, e.g. `sum.golang.org`.
    pub name: String,
    /// The endpoint requested.
    pub endpoint: SumdbEndpoint,
}

impl SumdbRequest {
    /// The [`RequestKind`] of this request.
    pub fn kind(&self) -> RequestKind {
        match self.endpoint {
            SumdbEndpoint::Supported => RequestKind::SumdbSupported,
            SumdbEndpoint::Latest => RequestKind::SumdbLatest,
            SumdbEndpoint::Lookup { .. } => RequestKind::SumdbLookup,
            SumdbEndpoint::Tile { .. } => RequestKind::SumdbTile,
        }
    }

    /// The path relative to the checksum database's own base URL:
    /// `/supported`, `/latest`, `/lookup/<escaped module>@<escaped version>`
    /// or `/tile/<path>`.
    ///
    /// For requests produced by [`crate::RequestParser`] this re-parses to
    /// the same request. Hand-built requests with invalid fields get those
    /// fields percent-encoded as a single opaque segment (never a `/`, `.`
    /// or `..` usable for traversal).
    pub fn upstream_path(&self) -> String {
        match &self.endpoint {
            SumdbEndpoint::Supported => "/supported".to_owned(),
            SumdbEndpoint::Latest => "/latest".to_owned(),
            SumdbEndpoint::Lookup { module, version } => {
                let m = escape_path(module)
                    .map(|e| percent_encode_path(&e, true))
                    .unwrap_or_else(|_| fallback_segment(module));
                let v = escape_version(version)
                    .map(|e| percent_encode_path(&e, false))
                    .unwrap_or_else(|_| fallback_segment(version));
                format!("/lookup/{m}@{v}")
            }
            SumdbEndpoint::Tile { path } => {
                if parse_tile_path(&format!("tile/{path}")).is_ok() {
                    format!("/tile/{path}")
                } else {
                    format!("/tile/{}", fallback_segment(path))
                }
            }
        }
    }

    /// The path as the go command sends it to a GOPROXY:
    /// `/sumdb/<name>` followed by [`SumdbRequest::upstream_path`].
    pub fn proxy_path(&self) -> String {
        let name = if is_valid_sumdb_name(&self.name) {
            self.name.clone()
        } else {
            fallback_segment(&self.name)
        };
        format!("/sumdb/{name}{}", self.upstream_path())
    }

    /// The parsed tile for a [`SumdbEndpoint::Tile`] request.
    pub fn tile(&self) -> Option<Tile> {
        match &self.endpoint {
            SumdbEndpoint::Tile { path } => parse_tile_path(&format!("tile/{path}")).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tile_paths_from_tlog_docs() {
        let t = Tile {
            height: 3,
            level: 4,
            index: 1_234_067,
            width: 1,
        };
        assert_eq!(t.path(), "tile/3/4/x001/x234/067.p/1");
        assert!(t.is_partial());
        let t8 = Tile { width: 8, ..t };
        assert_eq!(t8.path(), "tile/3/4/x001/x234/067");
        assert!(!t8.is_partial());
        assert_eq!(parse_tile_path("tile/3/4/x001/x234/067.p/1"), Ok(t));
        assert_eq!(parse_tile_path("tile/3/4/x001/x234/067"), Ok(t8));
        let d = parse_tile_path("tile/8/data/000").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            d,
            Tile {
                height: 8,
                level: -1,
                index: 0,
                width: 256
            }
        );
        assert!(d.is_data());
        assert_eq!(
            parse_tile_path("tile/8/data/x123/456.p/7").map(|t| t.index),
            Ok(123_456)
        );
        assert_eq!(
            parse_tile_path("tile/8/2/123").map(|t| (t.level, t.index)),
            Ok((2, 123))
        );
        assert_eq!(
            parse_tile_path("tile/30/0/000.p/1073741823").map(|t| t.width),
            Ok(1_073_741_823)
        );
    }

    #[test]
    fn malformed_tiles() {
        for bad in [
            "",
            "tile",
            "tile/8/0",
            "tile/8/0/",
            "tiles/8/0/000",
            "tile/0/0/000",
            "tile/31/0/000",
            "tile/08/0/000",
            "tile/+8/0/000",
            "tile/8/-1/000",
            "tile/8/-0/000",
            "tile/8/00/000",
            "tile/8/x/000",
            "tile/8/Data/000",
            "tile/8/0/00",
            "tile/8/0/0000",
            "tile/8/0/1",
            "tile/8/0/x000/001",
            "tile/8/0/x001",
            "tile/8/0/001/002",
            "tile/8/0/xx01/002",
            "tile/8/0/x001/x002",
            "tile/8/0/000.p/0",
            "tile/8/0/000.p/256",
            "tile/8/0/000.p/257",
            "tile/8/0/000.p/010",
            "tile/8/0/000.p/",
            "tile/8/0/000.p",
            "tile/8/0/000.p/1/2",
            "tile/8/0/000/",
            "tile/8/0/../000",
            "tile/8/0/x-01/000",
            "tile/8/0/x999/x999/x999/x999/x999/x999/x999/999",
            "tile/8/0/x009/x223/x372/x036/x854/x775/808",
            "tile/8/99999999999999999999/000",
            "/tile/8/0/000",
        ] {
            assert!(parse_tile_path(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_tile_path("tile/8/0/00").unwrap_err().to_string(),
            r#"malformed tile path "tile/8/0/00""#
        );
        // i64::MAX itself is representable.
        assert_eq!(
            parse_tile_path("tile/8/0/x009/x223/x372/x036/x854/x775/807").map(|t| t.index),
            Ok(i64::MAX)
        );
    }

    #[test]
    fn sumdb_names() {
        for good in [
            "sum.golang.org",
            "sum.golang.google.cn",
            "localhost",
            "a-b.c0",
        ] {
            assert!(is_valid_sumdb_name(good), "{good}");
        }
        for bad in [
            "",
            "Sum.golang.org",
            ".x",
            "x.",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "a/b",
            "a:1",
            "ä.b",
        ] {
            assert!(!is_valid_sumdb_name(bad), "{bad}");
        }
        assert!(!is_valid_sumdb_name(&"a".repeat(64)));
    }

    #[test]
    fn lookup_syntax() {
        let good = [
            ("golang.org/x/text@v0.3.0", ("golang.org/x/text", "v0.3.0")),
            ("m@v1.0.0+incompatible", ("m", "v1.0.0+incompatible")),
            (
                "m@v1.0.0-pre+incompatible",
                ("m", "v1.0.0-pre+incompatible"),
            ),
            ("m@v1.0.0-", ("m", "v1.0.0-")),
            ("m@v01.0.0", ("m", "v01.0.0")),
        ];
        for (text, want) in good {
            assert_eq!(split_lookup(text), Some(want), "{text}");
        }
        for bad in [
            "m",
            "@v1.0.0",
            "m@",
            "m@v1.0",
            "m@1.0.0",
            "m@v1.0.0+meta",
            "m@v1.0.0@x",
            "m@v1@v1.0.0",
            "m@v1.0.0/x",
            "m@v1.0.0.0",
            "m@va.0.0",
        ] {
            assert_eq!(split_lookup(bad), None, "{bad}");
        }
    }

    #[test]
    fn sumdb_upstream_paths() {
        let req = |endpoint| SumdbRequest {
            name: "sum.golang.org".into(),
            endpoint,
        };
        assert_eq!(req(SumdbEndpoint::Supported).upstream_path(), "/supported");
        assert_eq!(req(SumdbEndpoint::Latest).upstream_path(), "/latest");
        let lookup = req(SumdbEndpoint::Lookup {
            module: "github.com/Azure/x".into(),
            version: "v1.0.0-RC".into(),
        });
        assert_eq!(
            lookup.upstream_path(),
            "/lookup/github.com/!azure/x@v1.0.0-!r!c"
        );
        assert_eq!(
            lookup.proxy_path(),
            "/sumdb/sum.golang.org/lookup/github.com/!azure/x@v1.0.0-!r!c"
        );
        assert_eq!(lookup.kind(), RequestKind::SumdbLookup);
        let tile = req(SumdbEndpoint::Tile {
            path: "8/0/x001/234.p/5".into(),
        });
        assert_eq!(tile.upstream_path(), "/tile/8/0/x001/234.p/5");
        assert_eq!(tile.tile().map(|t| t.index), Some(1234));
        // Hand-built invalid fields never produce traversal.
        let evil = req(SumdbEndpoint::Tile {
            path: "../../etc/passwd".into(),
        });
        assert_eq!(evil.upstream_path(), "/tile/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd");
        let evil = SumdbRequest {
            name: "../x".into(),
            endpoint: SumdbEndpoint::Lookup {
                module: "../x".into(),
                version: "../y".into(),
            },
        };
        assert_eq!(
            evil.proxy_path(),
            "/sumdb/%2E%2E%2Fx/lookup/%2E%2E%2Fx@%2E%2E%2Fy"
        );
    }

    proptest! {
        #[test]
        fn tile_roundtrip(h in 1u32..=30, level in -1i64..64, index in 0i64..i64::MAX, wfrac in 0.0f64..1.0) {
            let full = 1u64 << h;
            let width = ((full as f64 * wfrac) as u64).clamp(1, full) as u32;
            let t = Tile { height: h, level, index, width };
            prop_assert_eq!(parse_tile_path(&t.path()), Ok(t));
        }

        #[test]
        fn tile_parse_never_panics(s in "tile/[0-9x./pdata+-]{0,30}") {
            if let Ok(t) = parse_tile_path(&s) {
                prop_assert_eq!(t.path(), s);
            }
        }
    }
}
