//! Checking an upstream checksum database (sum.golang.org, or any `sumdb.Server`) as Go's
//! `sumdb.Client.Lookup` does, in pure logic and in two phases so the caller does the I/O:
//!
//! 1. [`parse_lookup`]: the `/lookup/<path>@<version>` body (`<id>\n<record text>\n` followed by
//!    the signed tree note) — its record, and the tree head opened with the database's key.
//! 2. [`tiles_for_inclusion`]: the hash tiles (height [`TILE_HEIGHT`]) to fetch, exactly the
//!    ones Go's `tlog.TileHashReader` asks its `TileReader` for when the client checks the
//!    record (`Client.checkRecord` reads the record's leaf hash through it).
//! 3. [`verify_inclusion`]: with the fetched tiles, authenticate every tile against the signed
//!    tree hash (the tiles holding the tree's top hashes must hash to it, every other tile to
//!    its parent tile's entry), check that the authenticated leaf hash is the record text's
//!    hash, and check the RFC 6962 inclusion proof built from the tiles against the tree.
//! 4. [`record_hashes`]: the two `h1:` hashes the record states for the module version asked.
//!
//! [`verify_inclusion`] authenticates every tile other than the tree-hash tiles against its
//! parent tile, and also checks the inclusion proof built from the tiles against the signed
//! tree, so a record is accepted only if the signed tree hash commits to it.

use crate::proof::sub_tree_index;
use crate::record::{parse_record, parse_tree, Tree};
use crate::tile::{tile_for_index, tile_hash};
use crate::{check_record, hash_from_tile, node_hash, note, prove_record, record_hash};
use crate::{stored_hash_index, Hash, HashReader, RemoteError, Tile, TlogError, Verifier};
use crate::{HASH_SIZE, TILE_HEIGHT};

/// A checked `/lookup` answer: the record and the signed tree head it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupAnswer {
    /// The record's id (its position in the log).
    pub id: u64,
    /// The record text (the module version's go.sum lines, ending in a newline).
    pub text: Vec<u8>,
    /// The tree the signed note states, whose signature verified.
    pub tree: Tree,
    /// The signed tree note as served (to keep as the latest tree head seen).
    pub signed_note: Vec<u8>,
}

/// Parses a `/lookup` answer body as `sumdb.Client.Lookup` does: `tlog.ParseRecord` for the
/// id and record text, then the rest is the tree note, opened with `verifier` (a signature by
/// it must be there and verify) and parsed as a tree. The record id must be in that tree.
/// The record is not yet proven to be in the tree: that is [`verify_inclusion`]'s job.
pub fn parse_lookup(body: &[u8], verifier: &Verifier) -> Result<LookupAnswer, RemoteError> {
    let (id, text, signed_note) = parse_record(body).map_err(RemoteError::MalformedLookup)?;
    let opened =
        note::open(signed_note, std::slice::from_ref(verifier)).map_err(RemoteError::TreeNote)?;
    let tree = parse_tree(opened.text.as_bytes()).map_err(RemoteError::MalformedTree)?;
    if id >= tree.n {
        return Err(RemoteError::NotInTree { id, size: tree.n });
    }
    Ok(LookupAnswer {
        id,
        text: text.to_vec(),
        tree,
        signed_note: signed_note.to_vec(),
    })
}

/// The hash tiles (height [`TILE_HEIGHT`]) needed to check record `id` in the tree of
/// `tree_size` records, in the order Go's `TileHashReader` asks its `TileReader` for them: first
/// the tiles holding the tree's top hashes (which authenticate against the tree hash), then
/// the record's leaf tile's ancestors down to the leaf tile, parents before children (each
/// authenticated by its parent). Partial tiles have the width the tree gives them (what a
/// server of that tree serves). Empty when `id` is not in the tree.
pub fn tiles_for_inclusion(id: u64, tree_size: u64) -> Vec<Tile> {
    if id >= tree_size {
        return Vec::new();
    }
    plan(&[stored_hash_index(0, id)], tree_size)
        .map(|p| p.tiles)
        .unwrap_or_default()
}

/// Checks that `answer`'s record is in its signed tree, from `tiles` (each tile with its data
/// as served; at least the [`tiles_for_inclusion`] of the answer; others are ignored). A tile
/// may be given wider than asked (a full tile for a partial one): its prefix is used.
///
/// Fails if a tile is missing or not `W` hashes long, if the tiles do not hash to the signed
/// tree hash or a tile not to its parent's entry (a forged or stale tile), if the record's
/// authenticated leaf hash is not the hash of the record text, or if the inclusion proof built
/// from the tiles does not check.
pub fn verify_inclusion(
    answer: &LookupAnswer,
    tiles: &[(Tile, Vec<u8>)],
) -> Result<(), RemoteError> {
    let (id, tree) = (answer.id, answer.tree);
    if id >= tree.n {
        return Err(RemoteError::NotInTree { id, size: tree.n });
    }
    let bad_math = || RemoteError::BadMath { id, size: tree.n };
    let leaf_index = stored_hash_index(0, id);
    let plan = plan(&[leaf_index], tree.n).ok_or_else(bad_math)?;
    let hashes = authenticate(&plan, &tree, tiles).map_err(|e| e.unwrap_or_else(bad_math))?;

    // As `Client.checkRecord`: the authenticated leaf hash is the record text's hash.
    let leaf = record_hash(&answer.text);
    match hashes.read_hashes(&[leaf_index]).as_deref() {
        Ok([h]) if *h == leaf => {}
        Ok([_]) => return Err(RemoteError::RecordMismatch { id }),
        _ => return Err(bad_math()),
    }
    // And the inclusion proof from the same tiles checks against the signed tree.
    let proof =
        prove_record(tree.n, id, &hashes).map_err(|source| RemoteError::Proof { id, source })?;
    check_record(&proof, tree.n, &tree.hash, id, &leaf)
        .map_err(|source| RemoteError::Proof { id, source })
}

/// The `h1:` hashes a record text states for `path`@`version`: that of the module zip (line
/// `<path> <version> h1:…`) and that of its go.mod (line `<path> <version>/go.mod h1:…`).
/// A line for another module path or version is refused (the database answered for something
/// else), and so is a malformed line, a missing hash or two of one kind; lines with another
/// hash algorithm than `h1:` are skipped, as the `go` command only compares `h1:` lines.
pub fn record_hashes(
    text: &[u8],
    path: &str,
    version: &str,
) -> Result<(String, String), RemoteError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| RemoteError::MalformedLine(String::from_utf8_lossy(text).into_owned()))?;
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| RemoteError::MalformedLine(text.to_string()))?;
    let mod_version = format!("{version}/go.mod");
    let (mut zip, mut go_mod) = (None, None);
    for line in body.split('\n') {
        let fields: Vec<&str> = line.split(' ').collect();
        let [p, v, hash] = fields[..] else {
            return Err(RemoteError::MalformedLine(line.to_string()));
        };
        if p.is_empty() || v.is_empty() || hash.is_empty() {
            return Err(RemoteError::MalformedLine(line.to_string()));
        }
        let (slot, what) = if p == path && v == version {
            (&mut zip, "zip")
        } else if p == path && v == mod_version {
            (&mut go_mod, "go.mod")
        } else {
            return Err(RemoteError::WrongModule {
                line: line.to_string(),
                path: path.to_string(),
                version: version.to_string(),
            });
        };
        if !hash.starts_with("h1:") {
            continue;
        }
        if slot.replace(hash.to_string()).is_some() {
            return Err(RemoteError::DuplicateHash { what });
        }
    }
    match (zip, go_mod) {
        (Some(zip), Some(go_mod)) => Ok((zip, go_mod)),
        (None, _) => Err(RemoteError::MissingHash { what: "zip" }),
        (_, None) => Err(RemoteError::MissingHash { what: "go.mod" }),
    }
}

/// The tiles `TileHashReader.ReadHashes(indexes)` fetches for a tree of `size`, and how the
/// tree hash is read from them.
#[derive(Debug)]
struct Plan {
    /// The tree size.
    size: u64,
    /// The tiles, in Go's order: the tree-hash tiles, then the others, parents first.
    tiles: Vec<Tile>,
    /// The tree hash's stored-hash indexes (`subTreeIndex(0, size)`), each with the position
    /// of its tile in `tiles`.
    top_hashes: Vec<(u64, usize)>,
    /// How many of `tiles` hold the tree hash's indexes (they come first).
    top_tiles: usize,
}

/// `tileParent`: `t`'s `k`-th tile parent in the tiles of a tree of `n` records, as wide as
/// the tree makes it; `None` if the tree has no such tile.
fn tile_parent(t: Tile, k: u32, n: u64) -> Option<Tile> {
    let h = t.h;
    let l = u32::try_from(t.l).ok()?.checked_add(k)?;
    let tn = t.n.checked_shr(k.checked_mul(h)?).unwrap_or(0);
    let entries = n.checked_shr(l.checked_mul(h)?).unwrap_or(0);
    let full = 1u64 << h;
    let start = tn.checked_mul(full)?;
    let w = if start.checked_add(full)? >= entries {
        if start >= entries {
            return None;
        }
        entries - start
    } else {
        full
    };
    Some(Tile {
        h,
        l: i32::try_from(l).ok()?,
        n: tn,
        w: u32::try_from(w).ok()?,
    })
}

/// The plan of `TileHashReader.ReadHashes(indexes)` over a tree of `size` records: `None` if
/// an index is not in the tree (or the tree is empty).
fn plan(indexes: &[u64], size: u64) -> Option<Plan> {
    let h = TILE_HEIGHT;
    let mut tiles: Vec<Tile> = Vec::new();
    let position = |tiles: &[Tile], t: &Tile| tiles.iter().position(|x| x == t);

    // The tiles to recompute the tree hash from: authenticated if it matches.
    let mut stx = Vec::new();
    sub_tree_index(0, size, &mut stx);
    let mut top_hashes = Vec::with_capacity(stx.len());
    for x in stx {
        let t = tile_parent(tile_for_index(h, x), 0, size)?;
        let j = position(&tiles, &t).unwrap_or_else(|| {
            tiles.push(t);
            tiles.len() - 1
        });
        top_hashes.push((x, j));
    }
    let top_tiles = tiles.len();
    if top_tiles == 0 {
        return None;
    }

    // The tiles holding the indexes, with the parents up to an already planned tile.
    let max_levels = 64 / h + 1;
    for &x in indexes {
        if x >= stored_hash_index(0, size) {
            return None;
        }
        let t = tile_for_index(h, x);
        let known = (0..=max_levels)
            .find(|&k| tile_parent(t, k, size).is_some_and(|p| position(&tiles, &p).is_some()))?;
        // Walk back down, parents before children; a tile with a parent is full.
        for k in (0..known).rev() {
            let p = tile_parent(t, k, size)?;
            if !p.is_full() {
                return None;
            }
            tiles.push(p);
        }
    }
    Some(Plan {
        size,
        tiles,
        top_hashes,
        top_tiles,
    })
}

/// The data of tile `t` among `given`: the tile itself (exactly `W` hashes long), else the
/// prefix of a wider one of the same place.
fn tile_data<'a>(given: &'a [(Tile, Vec<u8>)], t: &Tile) -> Result<&'a [u8], RemoteError> {
    let length = |tile: &Tile, data: &'a [u8]| {
        let want = tile.w as usize * HASH_SIZE;
        if data.len() == want {
            Ok(data)
        } else {
            Err(RemoteError::TileLength {
                tile: *tile,
                len: data.len(),
                want,
            })
        }
    };
    if let Some((tile, data)) = given.iter().find(|(g, _)| g == t) {
        return length(tile, data);
    }
    let wider = given
        .iter()
        .find(|(g, _)| g.h == t.h && g.l == t.l && g.n == t.n && g.w > t.w);
    match wider {
        Some((tile, data)) => Ok(&length(tile, data)?[..t.w as usize * HASH_SIZE]),
        None => Err(RemoteError::MissingTile(*t)),
    }
}

/// Hash tiles whose contents were authenticated, read as stored hashes.
struct TileHashes<'a> {
    tiles: Vec<(Tile, &'a [u8])>,
}

impl HashReader for TileHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        indexes
            .iter()
            .map(|&x| {
                let need = tile_for_index(TILE_HEIGHT, x);
                let (tile, data) = self
                    .tiles
                    .iter()
                    .find(|(t, _)| t.l == need.l && t.n == need.n && t.w >= need.w)
                    .ok_or(TlogError::MissingHash(x))?;
                hash_from_tile(tile, data, x)
            })
            .collect()
    }
}

/// Authenticates the data of `plan`'s tiles (from `given`) against `tree`, as
/// `TileHashReader.ReadHashes` means to: the tree-hash tiles must hash to the tree hash, and
/// every other tile to its parent's entry. `Err(None)`: the plan is inconsistent (a bug).
fn authenticate<'a>(
    plan: &Plan,
    tree: &Tree,
    given: &'a [(Tile, Vec<u8>)],
) -> Result<TileHashes<'a>, Option<RemoteError>> {
    let data = plan
        .tiles
        .iter()
        .map(|t| tile_data(given, t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Some)?;
    let hash_at = |j: usize, x: u64| hash_from_tile(&plan.tiles[j], data[j], x).map_err(|_| None);

    // The tree hash from the top tiles.
    let ((x, j), rest) = plan.top_hashes.split_last().ok_or(None)?;
    let mut th = hash_at(*j, *x)?;
    for &(x, j) in rest.iter().rev() {
        th = node_hash(&hash_at(j, x)?, &th);
    }
    if th != tree.hash {
        return Err(Some(RemoteError::TreeHashMismatch));
    }

    // Every other tile against its parent, which was authenticated before it.
    for (i, (&t, tile)) in plan.tiles.iter().zip(&data).enumerate() {
        if i < plan.top_tiles {
            continue;
        }
        let p = tile_parent(t, 1, plan.size).ok_or(None)?;
        let j = plan.tiles[..i].iter().position(|x| *x == p).ok_or(None)?;
        let level = u32::try_from(p.l).map_err(|_| None)? * p.h;
        if hash_at(j, stored_hash_index(level, t.n))? != tile_hash(tile) {
            return Err(Some(RemoteError::TileMismatch(t)));
        }
    }
    Ok(TileHashes {
        tiles: plan.tiles.iter().copied().zip(data).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{key_pair_from_seed, sign_tree, Signer};
    use crate::record::{format_record, gosum_record};
    use crate::test_log::{log_of, record};
    use crate::{read_tile_data, tree_hash, NoteError};

    const SIZES: [u64; 6] = [1, 7, 255, 256, 257, 1000];

    /// Ids at the boundaries of a tree of `n`.
    fn ids(n: u64) -> Vec<u64> {
        let mut ids: Vec<u64> = [
            0,
            1,
            5,
            n / 2,
            254,
            255,
            256,
            257,
            511,
            512,
            n.saturating_sub(2),
            n - 1,
        ]
        .into_iter()
        .filter(|&id| id < n)
        .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn signer(seed: u8) -> Signer {
        let (skey, _) = key_pair_from_seed("sum.upstream.test", &[seed; 32]).expect("key");
        Signer::new(&skey).expect("signer")
    }

    /// A server of a log of `n` test records: its stored hashes and signed tree head.
    struct Server {
        log: Vec<Hash>,
        tree: Tree,
        head: Vec<u8>,
    }

    impl Server {
        fn new(n: u64) -> Server {
            let log = log_of(n);
            let tree = Tree {
                n,
                hash: tree_hash(n, &log).expect("tree hash"),
            };
            let head = sign_tree(&tree, &signer(1));
            Server { log, tree, head }
        }

        /// The `/lookup` body for record `id`, with `text` as its record text.
        fn lookup(&self, id: u64, text: &[u8]) -> Vec<u8> {
            let mut body = format_record(id, text).expect("record");
            body.extend_from_slice(&self.head);
            body
        }

        fn tiles(&self, tiles: &[Tile]) -> Vec<(Tile, Vec<u8>)> {
            tiles
                .iter()
                .map(|t| (*t, read_tile_data(t, &self.log).expect("tile")))
                .collect()
        }

        fn answer(&self, id: u64) -> LookupAnswer {
            parse_lookup(&self.lookup(id, &record(id)), &signer(1).verifier()).expect("lookup")
        }
    }

    fn paths(tiles: &[Tile]) -> Vec<String> {
        tiles.iter().map(Tile::path).collect()
    }

    #[test]
    fn tile_plans_are_go_s_for_known_cases() {
        assert_eq!(paths(&tiles_for_inclusion(0, 1)), ["tile/8/0/000.p/1"]);
        assert_eq!(paths(&tiles_for_inclusion(3, 7)), ["tile/8/0/000.p/7"]);
        assert_eq!(
            paths(&tiles_for_inclusion(0, 256)),
            ["tile/8/1/000.p/1", "tile/8/0/000"]
        );
        // The order Go's TileHashReader asks for (seen from a recording TileReader).
        assert_eq!(
            paths(&tiles_for_inclusion(5, 259)),
            ["tile/8/1/000.p/1", "tile/8/0/001.p/3", "tile/8/0/000"]
        );
        assert_eq!(
            paths(&tiles_for_inclusion(257, 259)),
            ["tile/8/1/000.p/1", "tile/8/0/001.p/3"]
        );
        assert_eq!(
            paths(&tiles_for_inclusion(70_000, 65_536 * 2 + 3)),
            [
                "tile/8/2/000.p/2",
                "tile/8/0/512.p/3",
                "tile/8/1/001",
                "tile/8/0/273"
            ]
        );
        assert!(tiles_for_inclusion(7, 7).is_empty());
        assert!(tiles_for_inclusion(0, 0).is_empty());
    }

    #[test]
    fn every_record_verifies_from_exactly_its_planned_tiles() {
        for n in SIZES {
            let server = Server::new(n);
            for id in ids(n) {
                let plan = tiles_for_inclusion(id, n);
                assert!(!plan.is_empty(), "n={n} id={id}");
                let mut seen = plan.clone();
                seen.sort();
                seen.dedup();
                assert_eq!(seen.len(), plan.len(), "duplicate tile n={n} id={id}");
                assert!(plan.iter().all(|t| t.within(n)), "n={n} id={id}: {plan:?}");
                let answer = server.answer(id);
                assert_eq!(answer.tree, server.tree);
                let tiles = server.tiles(&plan);
                assert_eq!(verify_inclusion(&answer, &tiles), Ok(()), "n={n} id={id}");
                // The proof read from the tiles is the one read from the whole log.
                let data = plan
                    .iter()
                    .zip(&tiles)
                    .map(|(t, (_, d))| (*t, d.as_slice()))
                    .collect();
                let from_tiles = prove_record(n, id, &TileHashes { tiles: data });
                assert_eq!(
                    from_tiles,
                    prove_record(n, id, &server.log),
                    "n={n} id={id}"
                );
            }
        }
    }

    /// Reads zero hashes at indexes the `tiles` hold, and fails at any other.
    struct Covered<'a>(&'a [Tile]);

    impl HashReader for Covered<'_> {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
            indexes
                .iter()
                .map(|&x| {
                    let need = tile_for_index(TILE_HEIGHT, x);
                    self.0
                        .iter()
                        .any(|t| t.l == need.l && t.n == need.n && t.w >= need.w)
                        .then(Hash::default)
                        .ok_or(TlogError::MissingHash(x))
                })
                .collect()
        }
    }

    #[test]
    fn every_record_of_trees_up_to_520_has_its_leaf_and_proof_in_the_plan() {
        for n in 1..=520u64 {
            for id in 0..n {
                let plan = tiles_for_inclusion(id, n);
                let covered = Covered(&plan);
                assert!(
                    covered.read_hashes(&[stored_hash_index(0, id)]).is_ok(),
                    "n={n} id={id}: leaf not planned"
                );
                assert!(
                    prove_record(n, id, &covered).is_ok(),
                    "n={n} id={id}: proof not in {plan:?}"
                );
            }
        }
        for (n, id) in [(65_536 * 3 + 258, 65_536 * 2 + 7), (1 << 40, (1 << 39) + 3)] {
            let plan = tiles_for_inclusion(id, n);
            assert!(
                prove_record(n, id, &Covered(&plan)).is_ok(),
                "n={n} id={id}"
            );
        }
    }

    #[test]
    fn a_forged_byte_in_any_tile_is_refused() {
        for n in SIZES {
            let server = Server::new(n);
            for id in ids(n) {
                let answer = server.answer(id);
                let tiles = server.tiles(&tiles_for_inclusion(id, n));
                for (i, (tile, data)) in tiles.iter().enumerate() {
                    let here = (id % 256) as usize * HASH_SIZE;
                    for at in [0, data.len() - 1, data.len() / 2, here.min(data.len() - 1)] {
                        let mut forged = tiles.clone();
                        forged[i].1[at] ^= 0x40;
                        let verdict = verify_inclusion(&answer, &forged);
                        assert!(
                            matches!(
                                verdict,
                                Err(RemoteError::TreeHashMismatch | RemoteError::TileMismatch(_))
                            ),
                            "n={n} id={id} {tile} byte {at}: {verdict:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_forged_record_with_its_leaf_forged_in_its_tile_is_refused() {
        // The leaf tile under a tree-hash tile that holds several tree-hash indexes.
        let server = Server::new(259);
        let forged_text = b"example.com/m5 v1.0.0 h1:forged\n";
        let body = server.lookup(5, forged_text);
        let answer = parse_lookup(&body, &signer(1).verifier()).expect("lookup");
        let plan = tiles_for_inclusion(5, 259);
        assert_eq!(plan[2].path(), "tile/8/0/000");
        let mut tiles = server.tiles(&plan);
        let at = 5 * HASH_SIZE;
        tiles[2].1[at..at + HASH_SIZE].copy_from_slice(&record_hash(forged_text).0);
        assert_eq!(
            verify_inclusion(&answer, &tiles),
            Err(RemoteError::TileMismatch(plan[2]))
        );
    }

    #[test]
    fn a_missing_or_short_tile_is_refused() {
        for n in SIZES {
            let server = Server::new(n);
            for id in ids(n) {
                let answer = server.answer(id);
                let tiles = server.tiles(&tiles_for_inclusion(id, n));
                for i in 0..tiles.len() {
                    let mut fewer = tiles.clone();
                    let (gone, _) = fewer.remove(i);
                    assert_eq!(
                        verify_inclusion(&answer, &fewer),
                        Err(RemoteError::MissingTile(gone)),
                        "n={n} id={id}"
                    );
                    let mut short = tiles.clone();
                    short[i].1.pop();
                    assert!(
                        matches!(
                            verify_inclusion(&answer, &short),
                            Err(RemoteError::TileLength { tile, .. }) if tile == gone
                        ),
                        "n={n} id={id}"
                    );
                }
            }
        }
    }

    #[test]
    fn full_tiles_of_a_grown_log_stand_in_for_partial_ones() {
        let grown = Server::new(1000);
        let server = Server::new(259);
        let answer = server.answer(258);
        let plan = tiles_for_inclusion(258, 259);
        assert_eq!(paths(&plan), ["tile/8/1/000.p/1", "tile/8/0/001.p/3"]);
        let wide: Vec<Tile> = plan.iter().map(|t| Tile { w: 256, ..*t }).collect();
        let mut tiles = grown.tiles(&[wide[1]]);
        tiles.extend(server.tiles(&plan[..1]));
        assert_eq!(verify_inclusion(&answer, &tiles), Ok(()));
        // A wider tile must still be whole.
        tiles[0].1.pop();
        assert!(matches!(
            verify_inclusion(&answer, &tiles),
            Err(RemoteError::TileLength { tile, .. }) if tile == wide[1]
        ));
    }

    #[test]
    fn a_changed_record_text_is_refused() {
        for n in SIZES {
            let server = Server::new(n);
            for id in ids(n) {
                let tiles = server.tiles(&tiles_for_inclusion(id, n));
                // Another record of the same log, or one it never had.
                let others = [
                    record((id + 1) % n),
                    b"example.com/evil v1.0.0 h1:x\n".to_vec(),
                ];
                for text in others.iter().filter(|t| **t != record(id)) {
                    let answer = parse_lookup(&server.lookup(id, text), &signer(1).verifier())
                        .expect("lookup");
                    assert_eq!(
                        verify_inclusion(&answer, &tiles),
                        Err(RemoteError::RecordMismatch { id }),
                        "n={n} id={id}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_tree_the_tiles_do_not_support_is_refused() {
        let server = Server::new(257);
        let mut answer = server.answer(3);
        let tiles = server.tiles(&tiles_for_inclusion(3, 257));
        answer.tree.hash = record_hash(b"another tree");
        assert_eq!(
            verify_inclusion(&answer, &tiles),
            Err(RemoteError::TreeHashMismatch)
        );
        // Tiles of an older tree of the same log do not prove a newer tree.
        let newer = Server::new(300);
        let answer = newer.answer(3);
        assert!(verify_inclusion(&answer, &tiles).is_err());
    }

    #[test]
    fn a_record_outside_the_tree_is_refused() {
        let server = Server::new(7);
        let mut answer = server.answer(6);
        answer.id = 7;
        assert_eq!(
            verify_inclusion(&answer, &[]),
            Err(RemoteError::NotInTree { id: 7, size: 7 })
        );
        assert_eq!(
            parse_lookup(&server.lookup(7, &record(7)), &signer(1).verifier()),
            Err(RemoteError::NotInTree { id: 7, size: 7 })
        );
    }

    #[test]
    fn a_lookup_signed_by_another_key_or_malformed_is_refused() {
        let server = Server::new(10);
        let body = server.lookup(4, &record(4));
        let answer = parse_lookup(&body, &signer(1).verifier()).expect("lookup");
        assert_eq!(answer.id, 4);
        assert_eq!(answer.text, record(4));
        assert_eq!(answer.signed_note, server.head);
        // Another key of the same name: no verifiable signature.
        assert!(matches!(
            parse_lookup(&body, &signer(2).verifier()),
            Err(RemoteError::TreeNote(NoteError::Unverified { .. }))
        ));
        // A tree head altered after signing.
        let altered = String::from_utf8(body.clone())
            .expect("utf-8")
            .replace("\n10\n", "\n11\n");
        assert!(matches!(
            parse_lookup(altered.as_bytes(), &signer(1).verifier()),
            Err(RemoteError::TreeNote(NoteError::InvalidSignature { .. }))
        ));
        // A signed note that is not a tree.
        let mut not_tree = format_record(4, &record(4)).expect("record");
        let note = note::Note {
            text: "not a tree\n".into(),
            ..note::Note::default()
        };
        not_tree.extend(note::sign(&note, &[&signer(1)]).expect("sign"));
        assert_eq!(
            parse_lookup(&not_tree, &signer(1).verifier()),
            Err(RemoteError::MalformedTree(TlogError::MalformedTree))
        );
        for bad in [&b"4\nno blank line\n"[..], b"x\na\n\n", b"", b"-1\na\n\n"] {
            assert_eq!(
                parse_lookup(bad, &signer(1).verifier()),
                Err(RemoteError::MalformedLookup(TlogError::MalformedRecord))
            );
        }
        assert!(matches!(
            parse_lookup(
                &format_record(4, &record(4)).expect("record"),
                &signer(1).verifier()
            ),
            Err(RemoteError::TreeNote(NoteError::MalformedNote))
        ));
    }

    #[test]
    fn record_hashes_are_those_of_the_version_asked() {
        let text = gosum_record("example.com/m", "v1.2.3", "h1:zip=", "h1:mod=");
        assert_eq!(
            record_hashes(text.as_bytes(), "example.com/m", "v1.2.3"),
            Ok(("h1:zip=".to_string(), "h1:mod=".to_string()))
        );
        let wrong = |path: &str, version: &str| {
            matches!(
                record_hashes(text.as_bytes(), path, version),
                Err(RemoteError::WrongModule { .. })
            )
        };
        assert!(wrong("example.com/other", "v1.2.3"));
        assert!(wrong("example.com/m", "v1.2.4"));
        assert!(wrong("example.com/M", "v1.2.3"));
        assert!(wrong("example.com/m", "v1.2.3/go.mod"));
        // Another algorithm's line is skipped; h1 lines must be there, once each.
        let with_h2 = format!("{text}example.com/m v1.2.3 h2:other\n");
        assert_eq!(
            record_hashes(with_h2.as_bytes(), "example.com/m", "v1.2.3"),
            Ok(("h1:zip=".to_string(), "h1:mod=".to_string()))
        );
        let twice = format!("{text}example.com/m v1.2.3 h1:again=\n");
        assert_eq!(
            record_hashes(twice.as_bytes(), "example.com/m", "v1.2.3"),
            Err(RemoteError::DuplicateHash { what: "zip" })
        );
        let zip_only = "example.com/m v1.2.3 h1:zip=\n";
        assert_eq!(
            record_hashes(zip_only.as_bytes(), "example.com/m", "v1.2.3"),
            Err(RemoteError::MissingHash { what: "go.mod" })
        );
        let mod_only = "example.com/m v1.2.3/go.mod h1:mod=\n";
        assert_eq!(
            record_hashes(mod_only.as_bytes(), "example.com/m", "v1.2.3"),
            Err(RemoteError::MissingHash { what: "zip" })
        );
        for bad in [
            "example.com/m v1.2.3  h1:zip=\n",
            "example.com/m v1.2.3 h1:zip= extra\n",
            "example.com/m v1.2.3\n",
            "example.com/m v1.2.3 h1:zip=",
            "example.com/m v1.2.3 h1:zip=\n\nexample.com/m v1.2.3/go.mod h1:mod=\n",
        ] {
            assert!(
                matches!(
                    record_hashes(bad.as_bytes(), "example.com/m", "v1.2.3"),
                    Err(RemoteError::MalformedLine(_))
                ),
                "{bad:?}"
            );
        }
    }
}
