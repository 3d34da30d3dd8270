//! The texts of the log (`tlog/note.go`, `sumdb/server.go`): a module version's record (its
//! go.sum lines), the framing of a record in a `lookup` answer or a data tile
//! (`<id>\n<text>\n`), and the tree head a note signs (`go.sum database tree\n<N>\n<hash>\n`).

use crate::{b64, Hash, TlogError, HASH_SIZE};

/// A tree description (`tlog.Tree`): its size and root hash, what a tree note signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tree {
    /// Number of records.
    pub n: u64,
    /// Root hash.
    pub hash: Hash,
}

const TREE_PREFIX: &str = "go.sum database tree\n";

/// `tlog.FormatTree`: `go.sum database tree\n<N>\n<base64 hash>\n`.
pub fn format_tree(tree: &Tree) -> String {
    format!("{TREE_PREFIX}{}\n{}\n", tree.n, tree.hash)
}

/// `tlog.ParseTree`: the tree of a tree note's text; lines after the third are ignored
/// (forward compatibility, as Go does).
pub fn parse_tree(text: &[u8]) -> Result<Tree, TlogError> {
    if !text.starts_with(TREE_PREFIX.as_bytes())
        || text.iter().filter(|&&b| b == b'\n').count() < 3
        || text.len() > 1_000_000
    {
        return Err(TlogError::MalformedTree);
    }
    let mut lines = text.splitn(4, |&b| b == b'\n').skip(1);
    let (Some(n_line), Some(hash_line)) = (lines.next(), lines.next()) else {
        return Err(TlogError::MalformedTree);
    };
    let (Ok(n_line), Ok(hash_line)) = (std::str::from_utf8(n_line), std::str::from_utf8(hash_line))
    else {
        return Err(TlogError::MalformedTree);
    };
    // Canonical decimal only: no sign, no leading zeros.
    let n: u64 = n_line.parse().map_err(|_| TlogError::MalformedTree)?;
    if n_line != n.to_string() || n > i64::MAX as u64 {
        return Err(TlogError::MalformedTree);
    }
    let hash = b64::decode(hash_line)
        .filter(|h| h.len() == HASH_SIZE)
        .and_then(|h| Hash::from_slice(&h))
        .ok_or(TlogError::MalformedTree)?;
    Ok(Tree { n, hash })
}

/// The record text of a module version, as the checksum database serves it: its two go.sum
/// lines, `"<path> <version> <zip h1>\n<path> <version>/go.mod <mod h1>\n"`.
pub fn gosum_record(path: &str, version: &str, zip_h1: &str, mod_h1: &str) -> String {
    format!("{path} {version} {zip_h1}\n{path} {version}/go.mod {mod_h1}\n")
}

/// `isValidRecordText`: UTF-8, no ASCII control character but newline, no blank line, ending
/// in a newline.
pub fn is_valid_record_text(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let mut last = '\0';
    for c in text.chars() {
        if (c < ' ' && c != '\n') || (last == '\n' && c == '\n') {
            return false;
        }
        last = c;
    }
    last == '\n'
}

/// `tlog.FormatRecord`: record `id` framed for a `lookup` answer or a data tile,
/// `"<id>\n<text>\n"` (the blank line ends the record).
pub fn format_record(id: u64, text: &[u8]) -> Result<Vec<u8>, TlogError> {
    if !is_valid_record_text(text) {
        return Err(TlogError::MalformedRecord);
    }
    let mut msg = format!("{id}\n").into_bytes();
    msg.extend_from_slice(text);
    msg.push(b'\n');
    Ok(msg)
}

/// `tlog.ParseRecord`: the id and text of the record at the start of `msg`, and the rest (in a
/// `lookup` answer, the signed tree note).
pub fn parse_record(msg: &[u8]) -> Result<(u64, &[u8], &[u8]), TlogError> {
    let nl = msg
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(TlogError::MalformedRecord)?;
    // strconv.ParseInt: an optional sign, then decimal digits.
    let id_text = std::str::from_utf8(&msg[..nl]).map_err(|_| TlogError::MalformedRecord)?;
    let id: i64 = id_text.parse().map_err(|_| TlogError::MalformedRecord)?;
    let id = u64::try_from(id).map_err(|_| TlogError::MalformedRecord)?;
    let msg = &msg[nl + 1..];
    let end = msg
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or(TlogError::MalformedRecord)?;
    let (text, rest) = (&msg[..end + 1], &msg[end + 2..]);
    if !is_valid_record_text(text) {
        return Err(TlogError::MalformedRecord);
    }
    Ok((id, text, rest))
}

/// A data tile as x/mod's `sumdb.Server` serves it: the records `start`, `start+1`, … each
/// framed by [`format_record`], concatenated. (sum.golang.org itself omits the ids and separates
/// the texts by a blank line; the `go` command never reads data tiles.)
pub fn format_data_tile<T: AsRef<[u8]>>(start: u64, texts: &[T]) -> Result<Vec<u8>, TlogError> {
    let mut data = Vec::new();
    for (id, text) in (start..).zip(texts) {
        data.extend(format_record(id, text.as_ref())?);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_hash;

    #[test]
    fn tree_text_round_trips() {
        let tree = Tree {
            n: 2,
            hash: record_hash(b"x"),
        };
        let text = format_tree(&tree);
        assert!(text.starts_with("go.sum database tree\n2\n"));
        assert_eq!(parse_tree(text.as_bytes()), Ok(tree));
        let extended = format!("{text}extra line\n");
        assert_eq!(parse_tree(extended.as_bytes()), Ok(tree));
    }

    #[test]
    fn malformed_trees_are_refused() {
        let h = record_hash(b"x");
        for bad in [
            format!("go.sum database tree\n02\n{h}\n"),
            format!("go.sum database tree\n+2\n{h}\n"),
            format!("go.sum database tree\n-2\n{h}\n"),
            format!("go.sum database tree v2\n2\n{h}\n"),
            format!("go.sum database tree\n2\n{h}"),
            "go.sum database tree\n2\nYWI=\n".to_string(),
        ] {
            assert_eq!(
                parse_tree(bad.as_bytes()),
                Err(TlogError::MalformedTree),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn records_frame_and_parse() {
        let text = gosum_record("example.com/m", "v1.0.0", "h1:zip=", "h1:mod=");
        assert_eq!(
            text,
            "example.com/m v1.0.0 h1:zip=\nexample.com/m v1.0.0/go.mod h1:mod=\n"
        );
        let mut msg = format_record(7, text.as_bytes()).unwrap();
        assert_eq!(msg, format!("7\n{text}\n").into_bytes());
        msg.extend_from_slice(b"rest");
        assert_eq!(parse_record(&msg), Ok((7, text.as_bytes(), &b"rest"[..])));
        for bad in [
            &b"no newline"[..],
            b"a\n\nb\n",
            b"tab\there\n",
            b"\xff\n",
            b"",
        ] {
            assert_eq!(format_record(0, bad), Err(TlogError::MalformedRecord));
        }
        assert_eq!(parse_record(b"x\na\n\n"), Err(TlogError::MalformedRecord));
        assert_eq!(parse_record(b"-1\na\n\n"), Err(TlogError::MalformedRecord));
    }

    #[test]
    fn data_tiles_concatenate_framed_records() {
        let tile = format_data_tile(256, &["a\n", "b\n"]).unwrap();
        assert_eq!(tile, b"256\na\n\n257\nb\n\n");
        assert_eq!(
            format_data_tile(0, &["ok\n", "bad"]),
            Err(TlogError::MalformedRecord)
        );
    }
}
