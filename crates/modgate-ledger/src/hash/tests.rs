//! Tests of the hash functions against vectors computed once by the real Go
//! toolchain (go1.23.5, `golang.org/x/mod/sumdb/dirhash` and
//! `golang.org/x/mod/zip` as vendored in it); Go is not needed to run them.
//!
//! The zips under `testdata/` were written by Go: `go-modzip-*` by
//! `modzip.Create` (deflate, data descriptors — what a Go proxy serves),
//! `go-stored-*` by `archive/zip` with the Store method, `go-direntry-*`
//! by `archive/zip` with an explicit directory entry.

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::*;

/// `HashZip` of the set-A files below, in any zip encoding (Go).
const SET_A_H1: &str = "h1:ryNbSLKzjNtWGtlcUo5LJetQeISuaC7e9jLi+K2RrdE=";
/// `Hash1` of the two big-set files (Go).
const BIG_H1: &str = "h1:s2Kd7w+/VA/o0cNOUi1WOSVtp0xg/wTq5ccJCZTeK4A=";
/// `HashZip` of an empty archive (Go): the SHA-256 of the empty summary.
const EMPTY_H1: &str = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
/// `HashZip` of the directory-entry zip in testdata (Go).
const DIR_H1: &str = "h1:CDjMuuDeJrDNmvjOJ73BAKhEnFyRcUxsg4Q6Vt5SLRs=";
/// go.mod hashes (Go); the empty one is `emptyGoModHash` in cmd/go.
const MOD_EMPTY_H1: &str = "h1:G7mAYYxgmS0lVkHyy2hEOLQCFB0DlQFTMLWggykrydY=";
const MOD_SAMPLE_H1: &str = "h1:ONeDgCa5UF/jJRjGzpOKmUiezgFEk4IPFZ96frvroW0=";
const MOD_BIG_H1: &str = "h1:LrgrcKyo+FWr6+VZSIJOVexRApyMV/MCndMS7vXZe/0=";
/// `HashZip` of the hand-written zip with a zero CRC in `zero_crc_...` (Go).
const ZERO_CRC_H1: &str = "h1:P/QLlBl6F8XhDdogu9m9WVDCDXDGmz6+iJTfyxPbGLE=";
/// `HashZip` of the hand-written zip with the non-UTF-8 name `m@v1/\xfc.txt` (Go).
const RAW_NAME_H1: &str = "h1:duiW3o+oDV9lMjo6iE9KbxCyVLngwZpulLHUefa+7xY=";

const GO_MODZIP: &[u8] = include_bytes!("../../testdata/go-modzip-example.com-m-v1.0.0.zip");
const GO_STORED: &[u8] = include_bytes!("../../testdata/go-stored-example.com-m-v1.0.0.zip");
const GO_DIRENTRY: &[u8] = include_bytes!("../../testdata/go-direntry-example.com-d-v1.0.0.zip");

/// Set A, in the (unsorted) order Go wrote it; prefix `example.com/m@v1.0.0/`.
fn set_a() -> Vec<(String, Vec<u8>)> {
    [
        ("go.mod", &b"module example.com/m\n\ngo 1.21\n"[..]),
        (
            "m.go",
            b"package m\n\n// Hello greets.\nfunc Hello() string { return \"hello, world\" }\n",
        ),
        ("LICENSE", b"Copyright 2024 The Example Authors.\n"),
        ("README.md", b"# m\n"),
        ("internal/Z.go", b"package internal\n"),
        ("sub/data/empty.txt", b""),
        ("sub/\u{fc}n\u{ef}.txt", b"unicode\n"),
    ]
    .into_iter()
    .map(|(name, data)| (format!("example.com/m@v1.0.0/{name}"), data.to_vec()))
    .collect()
}

/// The big set: 100 000 deterministic bytes plus a go.mod.
fn big_set() -> Vec<(String, Vec<u8>)> {
    let blob = (0..100_000u64)
        .map(|i| ((i * i * 31 + i * 7) % 251) as u8)
        .collect();
    vec![
        (
            "example.com/big@v0.1.0/go.mod".to_owned(),
            b"module example.com/big\n".to_vec(),
        ),
        ("example.com/big@v0.1.0/blob.bin".to_owned(), blob),
    ]
}

fn make_zip(files: &[(String, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, data) in files {
        writer
            .start_file(name.as_str(), options)
            .expect("start_file");
        writer.write_all(data).expect("write");
    }
    writer.finish().expect("finish").into_inner()
}

fn assert_entry_error(zip: &[u8], needle: &str) {
    match zip_h1(zip) {
        Err(LedgerError::ZipEntry { name, detail }) => {
            assert!(detail.contains(needle), "{name}: {detail}");
        }
        other => panic!("expected an entry error containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn sha256_hex_known_vectors() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn streaming_hasher_matches_one_shot() {
    let (_, blob) = big_set().remove(1);
    let mut hasher = Sha256Hasher::new();
    for chunk in blob.chunks(7919) {
        hasher.update(chunk);
    }
    assert_eq!(hasher.bytes_hashed(), 100_000);
    assert_eq!(hasher.finish(), sha256_hex(&blob));

    let mut via_write = Sha256Hasher::default();
    std::io::copy(&mut Cursor::new(&blob), &mut via_write).expect("copy");
    assert_eq!(via_write.finish(), sha256_hex(&blob));
    assert_eq!(Sha256Hasher::new().finish(), sha256_hex(b""));
}

#[test]
fn mod_h1_matches_go() {
    assert_eq!(mod_h1(b""), MOD_EMPTY_H1);
    assert_eq!(mod_h1(b"module example.com/m\n\ngo 1.21\n"), MOD_SAMPLE_H1);
    assert_eq!(mod_h1(b"module example.com/big\n"), MOD_BIG_H1);
}

#[test]
fn mod_h1_from_streamed_sha256() {
    let go_mod = b"module example.com/m\n\ngo 1.21\n";
    let mut hasher = Sha256Hasher::new();
    hasher.update(go_mod);
    let sha = hasher.finish();
    assert_eq!(mod_h1_from_sha256(&sha).expect("valid"), MOD_SAMPLE_H1);
    assert_eq!(
        mod_h1_from_sha256(&sha.to_ascii_uppercase()).expect("upper case"),
        MOD_SAMPLE_H1
    );
    for bad in [
        "",
        "abc",
        &sha[..63],
        &format!("{}g", &sha[..63]),
        &format!("{sha}0"),
    ] {
        assert!(
            matches!(
                mod_h1_from_sha256(bad),
                Err(LedgerError::InvalidInput { what: "sha256", .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn go_written_module_zip() {
    // What proxy.golang.org serves: modzip.Create output, deflate + data descriptors.
    assert_eq!(zip_h1(GO_MODZIP).expect("hash"), SET_A_H1);
}

#[test]
fn go_written_stored_zip() {
    assert_eq!(zip_h1(GO_STORED).expect("hash"), SET_A_H1);
}

#[test]
fn go_written_zip_with_directory_entry() {
    // HashZip lists "dir/" too, hashed as an empty file.
    assert_eq!(zip_h1(GO_DIRENTRY).expect("hash"), DIR_H1);
}

#[test]
fn deflate_zip_written_here() {
    let zip = make_zip(&set_a(), CompressionMethod::Deflated);
    assert_eq!(zip_h1(&zip).expect("hash"), SET_A_H1);
    let big = make_zip(&big_set(), CompressionMethod::Deflated);
    assert!(big.len() < 100_000, "deflate did compress");
    assert_eq!(zip_h1(&big).expect("hash"), BIG_H1);
}

#[test]
fn stored_zip_written_here() {
    let zip = make_zip(&set_a(), CompressionMethod::Stored);
    assert_eq!(zip_h1(&zip).expect("hash"), SET_A_H1);
    let big = make_zip(&big_set(), CompressionMethod::Stored);
    assert!(big.len() > 100_000, "stored did not compress");
    assert_eq!(zip_h1(&big).expect("hash"), BIG_H1);
}

#[test]
fn order_and_encoding_do_not_matter_but_content_does() {
    let mut files = set_a();
    files.reverse();
    assert_eq!(
        zip_h1(&make_zip(&files, CompressionMethod::Deflated)).expect("hash"),
        SET_A_H1
    );
    files[0].1.push(b'!');
    assert_ne!(
        zip_h1(&make_zip(&files, CompressionMethod::Deflated)).expect("hash"),
        SET_A_H1
    );
}

#[test]
fn empty_archive() {
    assert_eq!(
        zip_h1(&make_zip(&[], CompressionMethod::Stored)).expect("hash"),
        EMPTY_H1
    );
}

#[test]
fn directory_entry_written_here() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    writer
        .add_directory("example.com/d@v1.0.0/dir/", options)
        .expect("dir");
    writer
        .start_file("example.com/d@v1.0.0/dir/a.txt", options)
        .expect("file");
    writer.write_all(b"a\n").expect("write");
    let zip = writer.finish().expect("finish").into_inner();
    assert_eq!(zip_h1(&zip).expect("hash"), DIR_H1);
}

#[test]
fn not_a_zip() {
    for garbage in [
        &b""[..],
        b"PK\x03\x04 truncated",
        b"hello world, not a zip at all",
    ] {
        assert!(
            matches!(zip_h1(garbage), Err(LedgerError::ZipArchive { .. })),
            "{garbage:?}"
        );
    }
}

#[test]
fn truncated_zip_is_rejected() {
    let zip = make_zip(&set_a(), CompressionMethod::Deflated);
    for cut in [zip.len() / 3, zip.len() / 2, zip.len() - 10] {
        assert!(zip_h1(&zip[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn corrupted_content_fails_the_crc() {
    let files = vec![("m@v1/a.txt".to_owned(), b"some content to corrupt".to_vec())];
    let mut zip = make_zip(&files, CompressionMethod::Stored);
    let at = zip
        .windows(4)
        .position(|w| w == b"some")
        .expect("content is stored as is");
    zip[at] = b'S';
    assert_entry_error(&zip, "checksum");
}

#[test]
fn newline_in_name_is_rejected() {
    let files = vec![("m@v1/a\nb.txt".to_owned(), b"x".to_vec())];
    assert_entry_error(&make_zip(&files, CompressionMethod::Stored), "newline");
}

#[test]
fn unsafe_names_are_rejected() {
    for (name, needle) in [
        ("/etc/passwd", "absolute"),
        ("m@v1/../../etc/passwd", ".."),
        ("..", ".."),
        ("m@v1/a/..", ".."),
        ("m@v1\\a.txt", "backslash"),
        ("C:/x.txt", "drive letter"),
    ] {
        let files = vec![(name.to_owned(), b"x".to_vec())];
        assert_entry_error(&make_zip(&files, CompressionMethod::Stored), needle);
    }
    // ".." inside an element is an ordinary name.
    let files = vec![("m@v1/a..b/c...txt".to_owned(), b"x".to_vec())];
    assert!(zip_h1(&make_zip(&files, CompressionMethod::Stored)).is_ok());
}

/// One entry of a hand-written zip.
struct RawFile<'a> {
    name: &'a [u8],
    data: &'a [u8],
    /// The CRC-32 to write instead of the right one.
    crc: Option<u32>,
    /// Extra fields for the central directory record.
    central_extra: Vec<u8>,
}

impl<'a> RawFile<'a> {
    fn new(name: &'a [u8], data: &'a [u8]) -> Self {
        RawFile {
            name,
            data,
            crc: None,
            central_extra: Vec::new(),
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// Writes a stored zip by hand, so that what the `zip` writer refuses
/// (duplicate or empty names, wrong CRCs, odd extra fields) can be produced.
fn raw_zip(files: &[RawFile<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for file in files {
        let offset = out.len() as u32;
        let crc = file.crc.unwrap_or_else(|| crc32(file.data));
        let (size, name_len) = (file.data.len() as u32, file.name.len() as u16);
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(file.name);
        out.extend_from_slice(file.data);

        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&(file.central_extra.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(file.name);
        central.extend_from_slice(&file.central_extra);
    }
    let (cd_offset, cd_size) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn raw_stored_zip(files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let files: Vec<RawFile<'_>> = files
        .iter()
        .map(|(name, data)| RawFile::new(name, data))
        .collect();
    raw_zip(&files)
}

/// The expected h1 of a single file, built from the definition.
fn single_file_h1(name: &[u8], data: &[u8]) -> String {
    let mut summary = Sha256::new();
    summary.update(sha256_hex(data).as_bytes());
    summary.update(b"  ");
    summary.update(name);
    summary.update(b"\n");
    format!("h1:{}", BASE64.encode(summary.finalize()))
}

/// An Info-ZIP Unicode Path extra field (0x7075) claiming `unicode_name`
/// for a header name whose CRC-32 is `name_crc`.
fn unicode_path_field(name_crc: u32, unicode_name: &[u8]) -> Vec<u8> {
    let mut field = Vec::new();
    field.extend_from_slice(&0x7075u16.to_le_bytes());
    field.extend_from_slice(&(5 + unicode_name.len() as u16).to_le_bytes());
    field.push(1);
    field.extend_from_slice(&name_crc.to_le_bytes());
    field.extend_from_slice(unicode_name);
    field
}

#[test]
fn hand_written_zip_hashes_like_go() {
    // Sanity check of the hand-written format against a Go vector.
    let files = set_a();
    let refs: Vec<(&[u8], &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_bytes(), d.as_slice()))
        .collect();
    assert_eq!(zip_h1(&raw_stored_zip(&refs)).expect("hash"), SET_A_H1);
}

#[test]
fn duplicate_names_are_rejected() {
    let zip = raw_stored_zip(&[(b"m@v1/a.txt", b"one"), (b"m@v1/a.txt", b"two")]);
    match zip_h1(&zip) {
        Err(LedgerError::ZipArchive { detail }) => assert!(detail.contains("same file name")),
        other => panic!("expected a duplicate-name error, got {other:?}"),
    }
}

#[test]
fn empty_name_is_rejected() {
    let zip = raw_stored_zip(&[(b"", b"x")]);
    assert!(zip_h1(&zip).is_err());
}

#[test]
fn names_are_hashed_as_raw_bytes() {
    // Not UTF-8 and no UTF-8 flag: Go hashes the bytes as they are; a CP437
    // decoding would change them.
    let zip = raw_stored_zip(&[(b"m@v1/\xfc.txt", b"x")]);
    assert_eq!(zip_h1(&zip).expect("hash"), RAW_NAME_H1);
    assert_eq!(single_file_h1(b"m@v1/\xfc.txt", b"x"), RAW_NAME_H1);
}

#[test]
fn errors_name_the_entry() {
    let files = vec![("m@v1/../x".to_owned(), b"x".to_vec())];
    let err = zip_h1(&make_zip(&files, CompressionMethod::Stored)).expect_err("rejected");
    let message = err.to_string();
    assert!(message.contains("m@v1/../x"), "{message}");
}

#[test]
fn zero_crc_is_not_checked_like_go() {
    // Go's archive/zip skips the CRC check when the header's CRC is 0 and
    // there is no data descriptor; HashZip then succeeds, and so must we.
    let file = RawFile {
        crc: Some(0),
        ..RawFile::new(b"m@v1/a.txt", b"content")
    };
    let zip = raw_zip(&[file]);
    assert_eq!(zip_h1(&zip).expect("hash"), ZERO_CRC_H1);
    // Any other wrong CRC fails.
    let file = RawFile {
        crc: Some(1),
        ..RawFile::new(b"m@v1/a.txt", b"content")
    };
    assert_entry_error(&raw_zip(&[file]), "checksum");
}

#[test]
fn unicode_path_field_that_renames_is_rejected() {
    // The zip crate would hash "m@v1/b.txt", Go the header's "m@v1/a.txt"
    // (HashZip gives h1:znn7if71RMG+qL8aODT7ta0tQsjmvMTYivEK+Wf6fA0=).
    let name = b"m@v1/a.txt";
    let file = RawFile {
        central_extra: unicode_path_field(crc32(name), b"m@v1/b.txt"),
        ..RawFile::new(name, b"x")
    };
    assert_entry_error(&raw_zip(&[file]), "Unicode Path");
}

#[test]
fn unicode_path_field_that_agrees_is_accepted() {
    let name = "m@v1/\u{fc}.txt".as_bytes();
    let file = RawFile {
        central_extra: unicode_path_field(crc32(name), name),
        ..RawFile::new(name, b"x")
    };
    assert_eq!(
        zip_h1(&raw_zip(&[file])).expect("hash"),
        single_file_h1(name, b"x")
    );
}

#[test]
fn directory_entry_with_content_is_rejected() {
    // Go's archive/zip fails to open a "dir/" entry with data.
    let zip = raw_stored_zip(&[(b"m@v1/dir/", b"data")]);
    assert_entry_error(&zip, "directory entry");
}
