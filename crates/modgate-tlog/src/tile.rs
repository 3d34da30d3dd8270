//! Tiles (`tlog.Tile`): the log served in fixed pieces. A tile of height `H` at level `L`,
//! number `N`, lists `W` consecutive hashes of tree level `H·L` starting at hash `N·2^H`
//! (`W = 2^H`: full, else partial); level `-1` (path element `data`) holds the records
//! themselves. Paths are `tile/H/L/NNN[.p/W]` with `N` in groups of three digits, all but the
//! last prefixed `x` (`tile/8/0/x001/234.p/5`). Go's `go` command uses `H = 8`.

use std::fmt;

use crate::stored::read_exact;
use crate::{node_hash, split_stored_hash_index, stored_hash_index};
use crate::{Hash, HashReader, TlogError, HASH_SIZE};

/// The tile height the `go` command and sum.golang.org use.
pub const TILE_HEIGHT: u32 = 8;

/// The level of data tiles (records, not hashes).
pub const DATA_LEVEL: i32 = -1;

/// A tile coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    /// Height, 1 ≤ H ≤ 30.
    pub h: u32,
    /// Level in the tiling, −1 ([`DATA_LEVEL`]) ≤ L ≤ 63.
    pub l: i32,
    /// Number within the level.
    pub n: u64,
    /// Width, 1 ≤ W ≤ 2^H (2^H: a full tile).
    pub w: u32,
}

const PATH_BASE: u64 = 1000;

impl Tile {
    /// Whether `h`, `l` and `w` are in range (what `HashFromTile` checks, plus data tiles).
    pub fn is_valid(&self) -> bool {
        (1..=30).contains(&self.h)
            && (-1..=63).contains(&self.l)
            && (1..=1 << self.h).contains(&self.w)
    }

    /// Whether this is a record-data tile (level −1).
    pub fn is_data(&self) -> bool {
        self.l == DATA_LEVEL
    }

    /// Whether the tile has its full width 2^H.
    pub fn is_full(&self) -> bool {
        self.h < 32 && self.w == 1 << self.h
    }

    /// Whether a tree of `tree_size` records has all of this tile: the entries it lists
    /// (hashes of level `H·L`, or records) exist. A server answers a tile only when this holds.
    pub fn within(&self, tree_size: u64) -> bool {
        if !self.is_valid() {
            return false;
        }
        let entries = if self.is_data() {
            tree_size
        } else {
            match u32::try_from(self.l)
                .ok()
                .and_then(|l| l.checked_mul(self.h))
            {
                Some(shift) if shift < 64 => tree_size >> shift,
                _ => 0,
            }
        };
        self.n
            .checked_mul(1 << self.h)
            .and_then(|start| start.checked_add(u64::from(self.w)))
            .is_some_and(|end| end <= entries)
    }

    /// `Tile.Path`: the tile coordinate path.
    pub fn path(&self) -> String {
        let mut n = self.n;
        let mut n_str = format!("{:03}", n % PATH_BASE);
        while n >= PATH_BASE {
            n /= PATH_BASE;
            n_str = format!("x{:03}/{n_str}", n % PATH_BASE);
        }
        let level = if self.is_data() {
            "data".to_string()
        } else {
            self.l.to_string()
        };
        let partial = if self.is_full() {
            String::new()
        } else {
            format!(".p/{}", self.w)
        };
        format!("tile/{}/{level}/{n_str}{partial}", self.h)
    }

    /// `tlog.ParseTilePath`: the tile of a canonical tile path (`tile/8/0/x001/234.p/5`,
    /// `tile/8/data/000`); anything else (leading zeros, `.p/256` for a full tile, `+1`, …) is
    /// an error.
    pub fn parse(path: &str) -> Result<Tile, TlogError> {
        let bad = || TlogError::MalformedTilePath(path.to_string());
        let mut f: Vec<&str> = path.split('/').collect();
        if f.len() < 4 || f[0] != "tile" {
            return Err(bad());
        }
        let h: u32 = parse_decimal(f[1]).ok_or_else(bad)?;
        let is_data = f[2] == "data";
        let l: i32 = if is_data {
            DATA_LEVEL
        } else {
            parse_decimal(f[2]).ok_or_else(bad)?
        };
        if !(1..=30).contains(&h) {
            return Err(bad());
        }
        let mut w = 1u32 << h;
        let last_two = f.len() - 2;
        if let Some(stem) = f[last_two].strip_suffix(".p") {
            let ww: u32 = parse_decimal(f[last_two + 1]).ok_or_else(bad)?;
            if ww == 0 || ww >= w {
                return Err(bad());
            }
            w = ww;
            f[last_two] = stem;
            f.pop();
        }
        let mut n = 0u64;
        for s in &f[3..] {
            let nn: u64 = parse_decimal(s.strip_prefix('x').unwrap_or(s)).ok_or_else(bad)?;
            if nn >= PATH_BASE {
                return Err(bad());
            }
            n = n
                .checked_mul(PATH_BASE)
                .and_then(|n| n.checked_add(nn))
                .ok_or_else(bad)?;
        }
        let t = Tile { h, l, n, w };
        // Only the canonical spelling names a tile.
        if t.path() != path {
            return Err(bad());
        }
        Ok(t)
    }
}

/// The tile path.
impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// A non-negative decimal of ASCII digits only (the round trip through [`Tile::path`] then
/// rejects what Go's `strconv.Atoi` would accept but not print, like leading zeros).
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `tlog.TileForIndex`: the tile of height `h` and least width that stores the hash at
/// `index`.
///
/// # Panics
///
/// If `h` is not in 1..=30 (Go panics too): heights are the caller's constant, never input.
pub fn tile_for_index(h: u32, index: u64) -> Tile {
    assert!((1..=30).contains(&h), "tile_for_index: invalid height {h}");
    tile_for_index_range(h, index).0
}

/// `tileForIndex`: the tile, and the byte range of its data whose [`tile_hash`] is the hash at
/// `index`.
fn tile_for_index_range(h: u32, index: u64) -> (Tile, usize, usize) {
    let (level, n) = split_stored_hash_index(index);
    let l = level / h;
    let level = level - l * h; // level within the tile
    let tn = (n << level) >> h;
    let n = n - ((tn << h) >> level); // n within the tile at that level
    let w = ((n + 1) << level) as u32;
    let start = (n << level) as usize * HASH_SIZE;
    let end = ((n + 1) << level) as usize * HASH_SIZE;
    (
        Tile {
            h,
            l: l as i32,
            n: tn,
            w,
        },
        start,
        end,
    )
}

/// `tlog.HashFromTile`: the hash at `index` computed from `data`, the contents of tile `t`
/// (which must be the tile of `index`, or a wider one).
pub fn hash_from_tile(t: &Tile, data: &[u8], index: u64) -> Result<Hash, TlogError> {
    if !t.is_valid() || t.is_data() {
        return Err(TlogError::InvalidTile(format!("invalid tile {t}")));
    }
    if data.len() < t.w as usize * HASH_SIZE {
        return Err(TlogError::InvalidTile(format!(
            "data len {} too short for tile {t}",
            data.len()
        )));
    }
    let (t1, start, end) = tile_for_index_range(t.h, index);
    if t.l != t1.l || t.n != t1.n || t.w < t1.w {
        return Err(TlogError::InvalidTile(format!(
            "index {index} is in {t1} not {t}"
        )));
    }
    Ok(tile_hash(&data[start..end]))
}

/// `tileHash`: the hash of the subtree whose leaves are the 2^k hashes in `data`.
pub(crate) fn tile_hash(data: &[u8]) -> Hash {
    if data.len() <= HASH_SIZE {
        let mut h = Hash::default();
        h.0[..data.len()].copy_from_slice(data);
        return h;
    }
    let half = data.len() / 2;
    node_hash(&tile_hash(&data[..half]), &tile_hash(&data[half..]))
}

/// `tlog.NewTiles`: the hash tiles of height `h` to publish when the tree grows from
/// `old_size` to `new_size` records (full tiles completed, then the new partial one, per level).
///
/// # Panics
///
/// If `h` is not in 1..=30 (Go panics too): heights are the caller's constant, never input.
pub fn new_tiles(h: u32, old_size: u64, new_size: u64) -> Vec<Tile> {
    assert!((1..=30).contains(&h), "new_tiles: invalid height {h}");
    let mut tiles = Vec::new();
    let mut level = 0u32;
    while h * level < 64 && new_size >> (h * level) > 0 {
        let old_n = old_size >> (h * level);
        let new_n = new_size >> (h * level);
        if old_n != new_n {
            for n in (old_n >> h)..(new_n >> h) {
                tiles.push(Tile {
                    h,
                    l: level as i32,
                    n,
                    w: 1 << h,
                });
            }
            let n = new_n >> h;
            let w = new_n - (n << h);
            if w > 0 {
                tiles.push(Tile {
                    h,
                    l: level as i32,
                    n,
                    w: w as u32,
                });
            }
        }
        level += 1;
    }
    tiles
}

/// `tlog.ReadTileData`: the contents of hash tile `t`, its `W` hashes read from `r`.
pub fn read_tile_data<R: HashReader + ?Sized>(t: &Tile, r: &R) -> Result<Vec<u8>, TlogError> {
    if !t.is_valid() || t.is_data() {
        return Err(TlogError::InvalidTile(format!("{t} is not a hash tile")));
    }
    let level = t.l as u32 * t.h;
    let start = t.n << t.h;
    let indexes: Vec<u64> = (0..u64::from(t.w))
        .map(|i| stored_hash_index(level, start.wrapping_add(i)))
        .collect();
    let hashes = read_exact(r, &indexes)?;
    Ok(hashes.iter().flat_map(|h| h.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_log::log_of;
    use crate::tree_hash;

    #[test]
    fn paths_format_as_go_documents() {
        let t = Tile {
            h: 3,
            l: 4,
            n: 1234067,
            w: 1,
        };
        assert_eq!(t.path(), "tile/3/4/x001/x234/067.p/1");
        let t = Tile {
            h: 3,
            l: 4,
            n: 1234067,
            w: 8,
        };
        assert_eq!(t.path(), "tile/3/4/x001/x234/067");
        let t = Tile {
            h: 8,
            l: DATA_LEVEL,
            n: 1234,
            w: 5,
        };
        assert_eq!(t.path(), "tile/8/data/x001/234.p/5");
        assert_eq!(
            Tile {
                h: 8,
                l: 0,
                n: 0,
                w: 256
            }
            .path(),
            "tile/8/0/000"
        );
    }

    #[test]
    fn parse_accepts_only_canonical_paths() {
        for path in [
            "tile/8/0/000",
            "tile/8/0/x001/234.p/5",
            "tile/8/data/000.p/1",
            "tile/8/2/x123/x456/789",
            "tile/3/4/x001/x234/067.p/1",
        ] {
            assert_eq!(Tile::parse(path).map(|t| t.path()).as_deref(), Ok(path));
        }
        assert_eq!(
            Tile::parse("tile/8/data/x001/234.p/5"),
            Ok(Tile {
                h: 8,
                l: -1,
                n: 1234,
                w: 5
            })
        );
        for bad in [
            "tile/8/0/0",
            "tile/8/0/001/234",
            "tile/8/0/000.p/256",
            "tile/8/0/000.p/0",
            "tile/8/0/000.p/+5",
            "tile/08/0/000",
            "tile/8/-1/000",
            "tile/31/0/000",
            "tile/0/0/000",
            "tile/8/0",
            "tiles/8/0/000",
            "tile/8/0/x000/001",
            "tile/8/0/x1000/000",
            "tile/8/0/000.p/",
            "tile/8/0/x999/x999/x999/x999/x999/x999/x999/999",
        ] {
            assert!(Tile::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn within_tells_which_tiles_a_tree_has() {
        let full0 = Tile {
            h: 8,
            l: 0,
            n: 0,
            w: 256,
        };
        assert!(!full0.within(255));
        assert!(full0.within(256));
        let l1 = Tile {
            h: 8,
            l: 1,
            n: 0,
            w: 1,
        };
        assert!(!l1.within(255));
        assert!(l1.within(256));
        let data = Tile {
            h: 8,
            l: DATA_LEVEL,
            n: 1,
            w: 3,
        };
        assert!(!data.within(258));
        assert!(data.within(259));
        assert!(!Tile {
            h: 8,
            l: 63,
            n: 0,
            w: 1
        }
        .within(u64::MAX));
    }

    #[test]
    fn tiles_reproduce_the_tree_hash() {
        // A tree of 300: level-0 tiles 0 (full) and 1 (44 wide), level-1 tile 0 (1 wide).
        let log = log_of(300);
        let tiles = new_tiles(8, 0, 300);
        assert_eq!(
            tiles.iter().map(Tile::path).collect::<Vec<_>>(),
            ["tile/8/0/000", "tile/8/0/001.p/44", "tile/8/1/000.p/1"]
        );
        let level1 = read_tile_data(&tiles[2], &log).unwrap();
        let full = read_tile_data(&tiles[0], &log).unwrap();
        assert_eq!(full.len(), 256 * HASH_SIZE);
        // The level-1 hash is the root of the full level-0 tile.
        assert_eq!(&level1[..], &tile_hash(&full).0[..]);
        assert_eq!(tree_hash(256, &log).unwrap(), tile_hash(&full));
        // Every stored hash of the first 300 records is found in its tile.
        for index in 0..crate::stored_hash_count(300) {
            let t = tile_for_index(8, index);
            let data = read_tile_data(&t, &log).unwrap();
            assert_eq!(
                hash_from_tile(&t, &data, index).unwrap(),
                log[index as usize]
            );
        }
        assert!(new_tiles(8, 300, 300).is_empty());
        assert_eq!(
            new_tiles(8, 300, 513)
                .iter()
                .map(Tile::path)
                .collect::<Vec<_>>(),
            ["tile/8/0/001", "tile/8/0/002.p/1", "tile/8/1/000.p/2"]
        );
    }
}
