//! Oracle tests: modgate-tlog against Go's own `golang.org/x/mod/sumdb/{tlog,note}` (the copy
//! vendored in the Go toolchain's source tree, `$GOROOT/src/cmd/vendor/golang.org/x/mod`),
//! offline. `testdata/oracle` is built once per run by testkit's `gooracle` (a `replace
//! golang.org/x/mod` to a shim module linking to that copy); each test sends it
//! one JSON request and compares the answers byte for byte: stored hashes and tree hashes for
//! N = 0..300 (across the 256-record tile boundary), hash and data tiles (full and partial),
//! tile paths, inclusion and consistency proofs (equal to Go's and accepted by Go's
//! `CheckRecord`/`CheckTree`), signed notes both ways, key ids; and for checking an upstream
//! database ([`modgate_tlog::remote`]): the tiles Go's `TileHashReader` reads for a record, and
//! Go's own `sumdb.Client` looking up records from a database made here.
//!
//! They need `go` (testkit's `require_go`: a failure under `CI`, a loud skip elsewhere).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use modgate_testkit::build_against_vendored_xmod;
use modgate_testkit::tools::require_go;
use modgate_tlog::note::{self, key_pair_from_seed, open, sign_tree, Note, Signer, Verifier};
use modgate_tlog::record::format_data_tile;
use modgate_tlog::{
    check_record, check_tree, format_tree, gosum_record, new_tiles, parse_lookup, prove_record,
    prove_tree, read_tile_data, record_hash, record_hashes, stored_hash_count, stored_hashes,
    tiles_for_inclusion, tree_hash, verify_inclusion, Hash, LookupAnswer, NoteError, RemoteError,
    Tile, TlogError, Tree, TILE_HEIGHT,
};
use serde_json::{json, Value};

/// The record texts of a log of `n` module versions (two go.sum lines each).
fn records(n: u64) -> Vec<String> {
    (0..n)
        .map(|i| {
            let zip = record_hash(format!("zip {i}").as_bytes());
            let md = record_hash(format!("mod {i}").as_bytes());
            gosum_record(
                &format!("example.com/corp/mod{}", i % 37),
                &format!("v1.{}.0", i / 37),
                &format!("h1:{zip}"),
                &format!("h1:{md}"),
            )
        })
        .collect()
}

/// The stored hashes of a log of `records`, appended one by one.
fn log(records: &[String]) -> Vec<Hash> {
    let mut hashes = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let new = stored_hashes(i as u64, r.as_bytes(), &hashes).expect("append");
        hashes.extend(new);
    }
    assert_eq!(hashes.len() as u64, stored_hash_count(records.len() as u64));
    hashes
}

fn parse_hashes(b64: &[String]) -> Vec<Hash> {
    b64.iter().map(|h| Hash::parse(h).expect("hash")).collect()
}

fn b64_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(Hash::to_string).collect()
}

/// The built oracle (testkit's [`build_against_vendored_xmod`]), or `None` (after testkit's
/// loud skip) without `go`.
fn oracle() -> Option<&'static Path> {
    let go = require_go()?;
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    Some(BUILT.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/oracle");
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
        build_against_vendored_xmod(&go, &source, scratch, "tlog-oracle")
            .unwrap_or_else(|e| panic!("building the Go oracle: {e}"))
    }))
}

/// Sends `request` to the oracle and returns its answer.
fn ask(oracle: &Path, request: &Value) -> Value {
    use std::io::Write;
    let mut child = Command::new(oracle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run oracle");
    let body = serde_json::to_vec(request).expect("json");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&body)
        .expect("write request");
    let out = child.wait_with_output().expect("oracle output");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oracle answer is JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// Asserts that two lists are equal, naming the first difference (not printing whole lists of
/// thousands of hashes).
fn assert_same<T: PartialEq + std::fmt::Debug>(what: &str, ours: &[T], go: &[T]) {
    if let Some(i) = (0..ours.len().min(go.len())).find(|&i| ours[i] != go[i]) {
        let show = |v: &T| {
            let s = format!("{v:?}");
            if s.len() > 300 {
                format!("{}… ({} chars)", &s[..300], s.len())
            } else {
                s
            }
        };
        panic!(
            "{what} #{i} differs from Go's:\n  ours: {}\n  Go's: {}",
            show(&ours[i]),
            show(&go[i])
        );
    }
    assert_eq!(ours.len(), go.len(), "{what}: how many");
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn stored_and_tree_hashes_equal_go_for_sizes_0_to_300() {
    let Some(oracle) = oracle() else { return };
    let recs = records(300);
    let hashes = log(&recs);
    let go = ask(oracle, &json!({ "records": recs }));
    assert_same(
        "stored hash",
        &b64_hashes(&hashes),
        &strings(&go["stored_hashes"]),
    );
    let ours: Vec<String> = (0..=300)
        .map(|n| tree_hash(n, &hashes).expect("tree hash").to_string())
        .collect();
    assert_same("tree hash of size", &ours, &strings(&go["tree_hashes"]));
}

#[test]
fn tiles_equal_go_full_and_partial() {
    let Some(oracle) = oracle() else { return };
    let recs = records(300);
    let hashes = log(&recs);
    let paths = [
        "tile/8/0/000",
        "tile/8/0/000.p/1",
        "tile/8/0/000.p/255",
        "tile/8/0/001.p/44",
        "tile/8/0/001.p/1",
        "tile/8/1/000.p/1",
        "tile/8/data/000",
        "tile/8/data/000.p/7",
        "tile/8/data/001.p/44",
    ];
    let go = ask(oracle, &json!({ "records": recs, "tiles": paths }));
    let ours: Vec<String> = paths
        .iter()
        .map(|p| {
            let t = Tile::parse(p).expect("tile path");
            assert!(t.within(300), "{p}");
            if t.is_data() {
                let start = t.n << t.h;
                let texts = &recs[start as usize..(start + u64::from(t.w)) as usize];
                b64(&format_data_tile(start, texts).expect("data tile"))
            } else {
                b64(&read_tile_data(&t, &hashes).expect("hash tile"))
            }
        })
        .collect();
    let theirs = strings(&go["tiles"]);
    for ((path, ours), theirs) in paths.iter().zip(&ours).zip(&theirs) {
        assert!(
            ours == theirs,
            "tile {path} differs from Go's:\n  ours: {ours:.200}\n  Go's: {theirs:.200}"
        );
    }
    assert_eq!(ours.len(), theirs.len());
}

#[test]
fn tile_paths_and_new_tiles_equal_go() {
    let Some(oracle) = oracle() else { return };
    let paths = [
        "tile/8/0/000",
        "tile/8/0/x001/234.p/5",
        "tile/8/data/x001/234.p/5",
        "tile/3/4/x001/x234/067.p/1",
        "tile/8/2/x123/x456/789",
        "tile/30/63/000.p/1",
        "tile/8/0/0",
        "tile/8/0/001/234",
        "tile/8/0/000.p/256",
        "tile/8/0/000.p/0",
        "tile/8/0/000.p/+5",
        "tile/8/0/000.p/05",
        "tile/08/0/000",
        "tile/8/+0/000",
        "tile/8/-1/000",
        "tile/31/0/000",
        "tile/0/0/000",
        "tile/8/0",
        "tile/8/0/x000/001",
        "tile/8/0/x1000/000",
        "tile/8/0/x001",
        "tile/8/0/000.p/",
        "tile/8/data/-01",
    ];
    let sizes = [
        (0u64, 1u64),
        (0, 255),
        (0, 256),
        (0, 300),
        (255, 257),
        (256, 300),
        (300, 300),
        (65535, 65537),
        (1, 65_537),
    ];
    let go = ask(
        oracle,
        &json!({ "parse_tiles": paths, "new_tiles": sizes.iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>() }),
    );
    for (path, answer) in paths
        .iter()
        .zip(go["parse_tiles"].as_array().expect("array"))
    {
        let ours = Tile::parse(path);
        if answer.get("err").is_some() {
            assert!(ours.is_err(), "Go refuses {path}, we parse {ours:?}");
        } else {
            let t = ours.unwrap_or_else(|e| panic!("Go parses {path}, we refuse: {e}"));
            let want = (
                answer["h"].as_i64(),
                answer["l"].as_i64(),
                answer["n"].as_i64(),
                answer["w"].as_i64(),
            );
            let got = (
                Some(i64::from(t.h)),
                Some(i64::from(t.l)),
                Some(t.n as i64),
                Some(i64::from(t.w)),
            );
            assert_eq!(got, want, "{path}");
        }
    }
    let ours: Vec<Vec<String>> = sizes
        .iter()
        .map(|&(old, new)| {
            new_tiles(TILE_HEIGHT, old, new)
                .iter()
                .map(Tile::path)
                .collect()
        })
        .collect();
    let theirs: Vec<Vec<String>> = go["new_tiles"]
        .as_array()
        .expect("array")
        .iter()
        .map(strings)
        .collect();
    for (((old, new), ours), theirs) in sizes.iter().zip(&ours).zip(&theirs) {
        assert_same(&format!("new tile {old}→{new}"), ours, theirs);
    }
    assert_eq!(ours.len(), theirs.len());
}

/// `(t, n)` pairs across the tile boundary.
fn pairs(lo: u64) -> Vec<[u64; 2]> {
    let mut out = Vec::new();
    for t in [1u64, 2, 3, 7, 8, 9, 255, 256, 257, 300] {
        for n in [
            0u64,
            1,
            2,
            t / 2,
            t.saturating_sub(2),
            t - 1,
            t,
            127,
            255,
            256,
        ] {
            if n >= lo && n <= t && !out.contains(&[t, n]) {
                out.push([t, n]);
            }
        }
    }
    out
}

#[test]
fn record_proofs_equal_go_and_go_accepts_them() {
    let Some(oracle) = oracle() else { return };
    let recs = records(300);
    let hashes = log(&recs);
    let pairs: Vec<[u64; 2]> = pairs(0).into_iter().filter(|[t, n]| n < t).collect();
    let proofs: Vec<Vec<Hash>> = pairs
        .iter()
        .map(|&[t, n]| prove_record(t, n, &hashes).expect("prove"))
        .collect();
    // One proof spoiled: Go must refuse it, and so must we.
    let mut spoiled = proofs[proofs.len() - 1].clone();
    spoiled[0].0[0] ^= 1;
    let [st, sn] = pairs[pairs.len() - 1];
    let mut checks: Vec<Value> = pairs
        .iter()
        .zip(&proofs)
        .map(|(&[t, n], p)| json!({ "t": t, "n": n, "proof": b64_hashes(p) }))
        .collect();
    checks.push(json!({ "t": st, "n": sn, "proof": b64_hashes(&spoiled) }));
    let go = ask(
        oracle,
        &json!({ "records": recs, "prove_record": pairs, "check_record": checks }),
    );
    let theirs: Vec<Vec<String>> = go["prove_record"]
        .as_array()
        .expect("array")
        .iter()
        .map(strings)
        .collect();
    let ours: Vec<Vec<String>> = proofs.iter().map(|p| b64_hashes(p)).collect();
    assert_same("record proof (t, n)", &ours, &theirs);
    // And we accept Go's proofs.
    for (&[t, n], proof) in pairs.iter().zip(&theirs) {
        let th = tree_hash(t, &hashes).expect("tree hash");
        let leaf = record_hash(recs[n as usize].as_bytes());
        let verdict = check_record(&parse_hashes(proof), t, &th, n, &leaf);
        assert_eq!(verdict, Ok(()), "Go's proof t={t} n={n}");
    }
    let verdicts = strings(&go["check_record"]);
    let (last, accepted) = verdicts.split_last().expect("verdicts");
    assert!(
        accepted.iter().all(String::is_empty),
        "Go refused a proof: {verdicts:?}"
    );
    assert_eq!(last, "invalid transparency proof");
    let th = tree_hash(st, &hashes).expect("tree hash");
    let leaf = record_hash(recs[sn as usize].as_bytes());
    assert_eq!(
        check_record(&spoiled, st, &th, sn, &leaf),
        Err(TlogError::ProofFailed)
    );
    assert_eq!(
        check_record(&proofs[proofs.len() - 1], st, &th, sn, &leaf),
        Ok(())
    );
}

#[test]
fn tree_proofs_equal_go_and_go_accepts_them() {
    let Some(oracle) = oracle() else { return };
    let recs = records(300);
    let hashes = log(&recs);
    let pairs = pairs(1);
    let proofs: Vec<Vec<Hash>> = pairs
        .iter()
        .map(|&[t, n]| prove_tree(t, n, &hashes).expect("prove"))
        .collect();
    let spoil_at = pairs
        .iter()
        .position(|&[t, n]| [t, n] == [300, 150])
        .expect("pair 300/150");
    let mut spoiled = proofs[spoil_at].clone();
    spoiled[0].0[31] ^= 0x80;
    let mut checks: Vec<Value> = pairs
        .iter()
        .zip(&proofs)
        .map(|(&[t, n], p)| json!({ "t": t, "n": n, "proof": b64_hashes(p) }))
        .collect();
    checks.push(json!({ "t": 300, "n": 150, "proof": b64_hashes(&spoiled) }));
    let go = ask(
        oracle,
        &json!({ "records": recs, "prove_tree": pairs, "check_tree": checks }),
    );
    let theirs: Vec<Vec<String>> = go["prove_tree"]
        .as_array()
        .expect("array")
        .iter()
        .map(strings)
        .collect();
    let ours: Vec<Vec<String>> = proofs.iter().map(|p| b64_hashes(p)).collect();
    assert_same("tree proof (t, n)", &ours, &theirs);
    // And we accept Go's proofs.
    for (&[t, n], proof) in pairs.iter().zip(&theirs) {
        let th = tree_hash(t, &hashes).expect("tree hash");
        let old = tree_hash(n, &hashes).expect("tree hash");
        let verdict = check_tree(&parse_hashes(proof), t, &th, n, &old);
        assert_eq!(verdict, Ok(()), "Go's proof t={t} n={n}");
    }
    let verdicts = strings(&go["check_tree"]);
    let (last, accepted) = verdicts.split_last().expect("verdicts");
    assert!(
        accepted.iter().all(String::is_empty),
        "Go refused a proof: {verdicts:?}"
    );
    assert_eq!(last, "invalid transparency proof");
    let th = tree_hash(300, &hashes).expect("tree hash");
    let old = tree_hash(150, &hashes).expect("tree hash");
    assert_eq!(
        check_tree(&spoiled, 300, &th, 150, &old),
        Err(TlogError::ProofFailed)
    );
}

#[test]
fn a_tree_head_signed_here_opens_in_go() {
    let Some(oracle) = oracle() else { return };
    let recs = records(300);
    let hashes = log(&recs);
    let (skey, vkey) = note::generate_key("sum.modgate.test").expect("key");
    let signer = Signer::new(&skey).expect("signer");
    let tree = Tree {
        n: 300,
        hash: tree_hash(300, &hashes).expect("tree hash"),
    };
    let head = String::from_utf8(sign_tree(&tree, &signer)).expect("utf-8");
    let tampered = head.replace("\n300\n", "\n299\n");
    let (_, other_vkey) = key_pair_from_seed("sum.modgate.test", &[3; 32]).expect("key");
    let go = ask(
        oracle,
        &json!({ "open": [
            { "vkey": vkey, "msg": head },
            { "vkey": vkey, "msg": tampered },
            { "vkey": other_vkey, "msg": head },
        ] }),
    );
    let answers = go["open"].as_array().expect("array");
    assert_eq!(
        answers[0].get("err"),
        None,
        "Go refused our tree head: {}",
        answers[0]
    );
    assert_eq!(answers[0]["text"], format_tree(&tree).as_str());
    let keyid = format!("sum.modgate.test+{:08x}", signer.key_hash());
    assert_eq!(strings(&answers[0]["sigs"]), std::slice::from_ref(&keyid));
    assert_eq!(
        answers[1]["err"],
        format!("invalid signature for key {keyid}").as_str()
    );
    assert_eq!(answers[2]["err"], "note has no verifiable signatures");
}

#[test]
fn a_note_signed_by_go_verifies_here_and_keys_agree() {
    let Some(oracle) = oracle() else { return };
    let go = ask(oracle, &json!({ "generate": ["sum.corp.example"] }));
    let skey = go["generate"][0]["skey"]
        .as_str()
        .expect("skey")
        .to_string();
    let vkey = go["generate"][0]["vkey"]
        .as_str()
        .expect("vkey")
        .to_string();
    // Our reading of Go's keys: the same verifier key and key id.
    let signer = Signer::new(&skey).expect("Go's signer key");
    let verifier = Verifier::new(&vkey).expect("Go's verifier key");
    assert_eq!(signer.verifier().key(), vkey);
    assert_eq!(signer.key_hash(), verifier.key_hash());
    assert_eq!(
        vkey.split('+').nth(1),
        Some(format!("{:08x}", verifier.key_hash()).as_str())
    );

    let text = format_tree(&Tree {
        n: 12,
        hash: record_hash(b"root"),
    });
    let go = ask(oracle, &json!({ "sign": [{ "skey": skey, "text": text }] }));
    let go_msg = go["sign"][0].as_str().expect("signed note").to_string();
    // Ed25519 is deterministic: the same key signs to the same bytes.
    let ours = note::sign(
        &Note {
            text: text.clone(),
            ..Note::default()
        },
        &[&signer],
    )
    .expect("sign");
    assert_eq!(String::from_utf8(ours).expect("utf-8"), go_msg);
    let opened =
        open(go_msg.as_bytes(), std::slice::from_ref(&verifier)).expect("Go's note verifies");
    assert_eq!(opened.text, text);
    assert_eq!(opened.sigs.len(), 1);
    assert_eq!(opened.sigs[0].hash, verifier.key_hash());
    let tampered = go_msg.replace("\n12\n", "\n13\n");
    assert!(open(tampered.as_bytes(), &[verifier]).is_err());
}

/// What Go's `note` package says for this error (the oracle reports Go's error texts).
fn go_text(e: &modgate_tlog::NoteError) -> String {
    use modgate_tlog::NoteError as E;
    match e {
        E::MalformedNote => "malformed note".into(),
        E::InvalidSignature { name, hash } => {
            format!("invalid signature for key {name}+{hash:08x}")
        }
        E::Unverified { .. } => "note has no verifiable signatures".into(),
        E::MalformedVerifierKey => "malformed verifier id".into(),
        E::UnknownAlgorithm(_) => "unknown verifier algorithm".into(),
        E::KeyHashMismatch => "invalid verifier hash".into(),
        other => format!("(no Go counterpart: {other})"),
    }
}

#[test]
fn open_verdicts_equal_go_on_odd_notes_and_keys() {
    let Some(oracle) = oracle() else { return };
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    let text = "If you think cryptography is the answer to your problem,\n\
                then you don't know what your problem is.\n";
    let signed = format!("{text}\n{SIG}");
    let (_, other_vkey) = key_pair_from_seed("Other", &[5; 32]).expect("key");
    let other_signer =
        Signer::new(&key_pair_from_seed("Other", &[5; 32]).expect("key").0).expect("signer");
    let other_sig = {
        let msg = note::sign(
            &Note {
                text: text.into(),
                ..Note::default()
            },
            &[&other_signer],
        )
        .expect("sign");
        String::from_utf8(msg).expect("utf-8")[text.len() + 1..].to_string()
    };
    let unknown_many: String = (0..101).map(|_| other_sig.clone()).collect();
    // A key of algorithm 2 and a key one byte short, each with the id Go would compute.
    let odd_key = |key: Vec<u8>| format!("Odd+{:08x}+{}", note::key_hash("Odd", &key), b64(&key));
    let cases: Vec<(String, String)> = vec![
        (VKEY.into(), signed.clone()),
        (VKEY.into(), signed.replace("problem,", "problem;")),
        (VKEY.into(), format!("{text}{SIG}")),
        (VKEY.into(), signed.replace('—', "-")),
        (VKEY.into(), signed.trim_end().to_string()),
        (VKEY.into(), signed.replace("then", "\tthen")),
        (VKEY.into(), signed.replace("AnM=\n", "AnM\n")),
        (VKEY.into(), format!("{text}\n— PeterNeumann x08go/Y=\n")),
        (VKEY.into(), format!("{text}\n— PeterNeumann x08go/ZJ\n")),
        (VKEY.into(), format!("{text}\n— Peter Neumann x08go/ZJ\n")),
        (VKEY.into(), format!("{signed}{SIG}")),
        (VKEY.into(), format!("{signed}{other_sig}")),
        (VKEY.into(), format!("{text}\n{other_sig}")),
        (VKEY.into(), format!("{text}\n{unknown_many}{SIG}")),
        (VKEY.into(), format!("{text}\n\n{SIG}")),
        (other_vkey.clone(), format!("{signed}{other_sig}")),
        (VKEY.replace("c74f20a3", "C74F20A3"), signed.clone()),
        (VKEY.replace("c74f20a3", "c74f20a4"), signed.clone()),
        (VKEY.replace("c74f20a3", "c74f20a"), signed.clone()),
        (VKEY.replace("TW", "TX"), signed.clone()),
        (VKEY.replace("10TW", "10T"), signed.clone()),
        (odd_key([&[2u8][..], &[7; 32]].concat()), signed.clone()),
        (odd_key([&[1u8][..], &[7; 31]].concat()), signed.clone()),
        ("PeterNeumann".into(), signed.clone()),
    ];
    let requests: Vec<Value> = cases
        .iter()
        .map(|(vkey, msg)| json!({ "vkey": vkey, "msg": msg }))
        .collect();
    let go = ask(oracle, &json!({ "open": requests }));
    let answers = go["open"].as_array().expect("array");
    assert_eq!(answers.len(), cases.len());
    for ((vkey, msg), answer) in cases.iter().zip(answers) {
        let ours = Verifier::new(vkey).and_then(|v| open(msg.as_bytes(), &[v]));
        let what = format!("vkey {vkey:?}, note {msg:.120?}");
        match (ours, answer.get("err").and_then(Value::as_str)) {
            (Ok(n), None) => {
                assert_eq!(answer["text"], n.text.as_str(), "{what}");
                let sigs: Vec<String> = n
                    .sigs
                    .iter()
                    .map(|s| format!("{}+{:08x}", s.name, s.hash))
                    .collect();
                assert_eq!(strings(&answer["sigs"]), sigs, "{what}");
            }
            (Err(e), Some(go_err)) => assert_eq!(go_text(&e), go_err, "{what}"),
            (ours, go_err) => panic!("{what}: we say {ours:?}, Go says {go_err:?}"),
        }
    }
}

/// The `(n, id)` cases of remote checks: boundaries of tiles (256 records) and of level-1 tiles
/// (65 536 records), within trees up to `n_max`.
fn inclusion_cases(n_max: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for n in [
        1u64, 2, 7, 255, 256, 257, 259, 300, 511, 512, 513, 1000, 65_535, 65_536, 65_537, n_max,
    ] {
        for id in [
            0u64,
            1,
            5,
            255,
            256,
            257,
            511,
            512,
            1000,
            65_535,
            65_536,
            n / 2,
            n.saturating_sub(2),
            n - 1,
        ] {
            if id < n && !out.contains(&(n, id)) {
                out.push((n, id));
            }
        }
    }
    out
}

/// What `verify_inclusion` is given for record `id` of the tree of the first `n` of `recs`.
fn answer_for(recs: &[String], hashes: &[Hash], n: u64, id: u64) -> LookupAnswer {
    LookupAnswer {
        id,
        text: recs[id as usize].clone().into_bytes(),
        tree: Tree {
            n,
            hash: tree_hash(n, hashes).expect("tree hash"),
        },
        signed_note: Vec::new(),
    }
}

fn tiles_of(hashes: &[Hash], tiles: &[Tile]) -> Vec<(Tile, Vec<u8>)> {
    tiles
        .iter()
        .map(|t| (*t, read_tile_data(t, hashes).expect("tile")))
        .collect()
}

#[test]
fn tiles_for_inclusion_are_the_tiles_go_s_tile_hash_reader_reads() {
    let Some(oracle) = oracle() else { return };
    let n_max = 65_536 + 2 * 256 + 5;
    let recs = records(n_max);
    let hashes = log(&recs);
    let cases = inclusion_cases(n_max);
    let mut reads: Vec<Value> = cases
        .iter()
        .map(|&(n, id)| json!({ "n": n, "id": id }))
        .collect();
    // A forged tree-hash tile.
    let (forged, at) = ("tile/8/0/001.p/3", 0);
    reads.push(json!({ "n": 259, "id": 5, "forge": forged, "at": at }));
    let go = ask(oracle, &json!({ "records": recs, "tile_reads": reads }));
    let answers = go["tile_reads"].as_array().expect("array");
    assert_eq!(answers.len(), cases.len() + 1);
    for (&(n, id), go) in cases.iter().zip(answers) {
        let ours = tiles_for_inclusion(id, n);
        let paths: Vec<String> = ours.iter().map(Tile::path).collect();
        assert_eq!(go["err"], "", "Go n={n} id={id}");
        assert_eq!(go["leaf_ok"], true, "Go n={n} id={id}");
        assert_eq!(
            paths,
            strings(&go["tiles"]),
            "tiles asked for n={n} id={id}"
        );
        // ProveRecord through Go's TileHashReader needs no tile beyond those.
        for t in strings(&go["proof_tiles"]) {
            assert!(paths.contains(&t), "n={n} id={id}: Go's proof reads {t}");
        }
        let proof = prove_record(n, id, &hashes).expect("prove");
        assert_eq!(b64_hashes(&proof), strings(&go["proof"]), "n={n} id={id}");
        let answer = answer_for(&recs, &hashes, n, id);
        assert_eq!(
            verify_inclusion(&answer, &tiles_of(&hashes, &ours)),
            Ok(()),
            "n={n} id={id}"
        );
    }
    let mut tiles = tiles_of(&hashes, &tiles_for_inclusion(5, 259));
    let i = tiles
        .iter()
        .position(|(t, _)| t.path() == forged)
        .expect("forged tile is planned");
    tiles[i].1[at] ^= 0x40;
    assert_eq!(answers[cases.len()]["err"], "downloaded inconsistent tile");
    assert_eq!(
        verify_inclusion(&answer_for(&recs, &hashes, 259, 5), &tiles),
        Err(RemoteError::TreeHashMismatch)
    );
}

/// The module path and version of a record text made by [`records`].
fn module_of(text: &str) -> (String, String) {
    let mut f = text.split(' ');
    let (Some(path), Some(version)) = (f.next(), f.next()) else {
        panic!("not a record: {text:?}")
    };
    (path.to_string(), version.to_string())
}

/// A checksum database's files for Go's `sumdb.Client`: `/lookup/<path>@<version>` bodies
/// (record `id` with text `text`, then `head`) and `/tile/…` hash tiles. The path and version
/// are those of `text`, or of `asked` if given (a database answering with another record).
fn server_files(
    lookups: &[(u64, &str)],
    asked: Option<&str>,
    head: &[u8],
    tiles: &[(Tile, Vec<u8>)],
) -> Value {
    let mut files = serde_json::Map::new();
    for &(id, text) in lookups {
        let (path, version) = module_of(asked.unwrap_or(text));
        let mut body = modgate_tlog::format_record(id, text.as_bytes()).expect("record");
        body.extend_from_slice(head);
        files.insert(format!("/lookup/{path}@{version}"), b64(&body).into());
    }
    for (t, data) in tiles {
        files.insert(format!("/{}", t.path()), b64(data).into());
    }
    Value::Object(files)
}

#[test]
fn go_s_sumdb_client_reads_the_tiles_we_plan_and_agrees_on_lookups() {
    let Some(oracle) = oracle() else { return };
    let n = 1000u64;
    let recs = records(n);
    let hashes = log(&recs);
    let (skey, vkey) = key_pair_from_seed("sum.upstream.test", &[11; 32]).expect("key");
    let (_, other_vkey) = key_pair_from_seed("sum.upstream.test", &[12; 32]).expect("key");
    let verifier = Verifier::new(&vkey).expect("verifier");
    let tree = Tree {
        n,
        hash: tree_hash(n, &hashes).expect("tree hash"),
    };
    let head = sign_tree(&tree, &Signer::new(&skey).expect("signer"));
    let tiles = tiles_of(&hashes, &new_tiles(TILE_HEIGHT, 0, n));
    let body = |id: u64, text: &str| {
        let mut body = modgate_tlog::format_record(id, text.as_bytes()).expect("record");
        body.extend_from_slice(&head);
        body
    };
    let lookup = |text: &str| {
        let (path, version) = module_of(text);
        json!([path, version])
    };

    // An honest database.
    let ids = [0u64, 5, 255, 256, 257, 511, 700, 767, 768, 999];
    let honest: Vec<(u64, &str)> = ids
        .iter()
        .map(|&i| (i, recs[i as usize].as_str()))
        .collect();
    // Forgeries: record 300 served with 301's text; the key of another database; a tree-hash
    // tile forged; (ours only) record 5 forged along with its leaf in tile/8/0/000.
    let swapped = [(300, recs[301].as_str())];
    let mut bad_top = tiles.clone();
    let top = bad_top
        .iter_mut()
        .find(|(t, _)| t.path() == "tile/8/0/003.p/232")
        .expect("tree-hash tile");
    top.1[0] ^= 0x40;
    let (path5, version5) = module_of(&recs[5]);
    let fake = gosum_record(&path5, &version5, "h1:forged=", "h1:forged=");
    let mut bad_leaf = tiles.clone();
    bad_leaf[0].1[5 * 32..6 * 32].copy_from_slice(&record_hash(fake.as_bytes()).0);
    assert_eq!(bad_leaf[0].0.path(), "tile/8/0/000");
    let clients = json!([
        { "vkey": vkey, "files": server_files(&honest, None, &head, &tiles),
          "lookups": honest.iter().map(|(_, t)| lookup(t)).collect::<Vec<_>>() },
        { "vkey": vkey, "files": server_files(&swapped, Some(&recs[300]), &head, &tiles),
          "lookups": [lookup(&recs[300])] },
        { "vkey": other_vkey, "files": server_files(&honest[..1], None, &head, &tiles),
          "lookups": [lookup(&recs[0])] },
        { "vkey": vkey, "files": server_files(&honest[1..2], None, &head, &bad_top),
          "lookups": [lookup(&recs[5])] },
    ]);
    let go = ask(oracle, &json!({ "clients": clients }));
    let go = go["clients"].as_array().expect("array");

    // The honest database: Go's lines are the record's, and Go read exactly our tiles.
    for ((id, text), go) in honest.iter().zip(go[0].as_array().expect("array")) {
        assert_eq!(go["err"], "", "Go's lookup of record {id}");
        let answer = parse_lookup(&body(*id, text), &verifier).expect("lookup");
        assert_eq!((answer.id, answer.tree), (*id, tree));
        assert_eq!(verify_inclusion(&answer, &tiles), Ok(()), "record {id}");
        let (path, version) = module_of(text);
        let (zip, go_mod) = record_hashes(&answer.text, &path, &version).expect("hashes");
        assert_eq!(
            strings(&go["lines"]),
            [format!("{path} {version} {zip}")],
            "record {id}"
        );
        assert_eq!(
            strings(&go["mod_lines"]),
            [format!("{path} {version}/go.mod {go_mod}")],
            "record {id}"
        );
        let mut ours: Vec<String> = tiles_for_inclusion(*id, n)
            .iter()
            .map(|t| format!("/{}", t.path()))
            .collect();
        ours.push(format!("/lookup/{path}@{version}"));
        ours.sort();
        assert_eq!(strings(&go["remote"]), ours, "what record {id} reads");
    }

    // Each forgery: Go's verdict, and ours.
    let go_err = |i: usize| go[i][0]["err"].as_str().expect("err").to_string();
    let check = |id: u64, text: &str, verifier: &Verifier, tiles: &[(Tile, Vec<u8>)]| {
        parse_lookup(&body(id, text), verifier).and_then(|a| verify_inclusion(&a, tiles))
    };
    assert!(
        go_err(1).contains("cannot authenticate record data in server response"),
        "{}",
        go_err(1)
    );
    assert_eq!(
        check(300, &recs[301], &verifier, &tiles),
        Err(RemoteError::RecordMismatch { id: 300 })
    );
    assert!(
        go_err(2).contains("note has no verifiable signatures"),
        "{}",
        go_err(2)
    );
    let other = Verifier::new(&other_vkey).expect("verifier");
    assert!(matches!(
        check(0, &recs[0], &other, &tiles),
        Err(RemoteError::TreeNote(NoteError::Unverified { .. }))
    ));
    assert!(
        go_err(3).contains("downloaded inconsistent tile"),
        "{}",
        go_err(3)
    );
    assert_eq!(
        check(5, &recs[5], &verifier, &bad_top),
        Err(RemoteError::TreeHashMismatch)
    );
    assert_eq!(
        check(5, &fake, &verifier, &bad_leaf),
        Err(RemoteError::TileMismatch(bad_leaf[0].0))
    );
}
