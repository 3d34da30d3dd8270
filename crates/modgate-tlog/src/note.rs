//! Signed notes (`golang.org/x/mod/sumdb/note`) with Ed25519 keys, the format of a checksum
//! database's signed tree heads.
//!
//! - Keys: a verifier key is `<name>+<key id>+<base64(0x01 ‖ public key)>`, a signer key
//!   `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`; the key id (8 hex digits) is the first
//!   4 bytes, big-endian, of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`. A name is non-empty
//!   with no space and no `+`.
//! - A signed note is the text (ending in a newline), a blank line, then one line per
//!   signature: `— <name> <base64(key id ‖ signature of the text)>\n` (U+2014 em dash).
//!
//! [`open`] accepts and rejects exactly what Go's `note.Open` does; [`sign`] writes what
//! `note.Sign` writes (Ed25519 is deterministic: the same key signs the same text to the same
//! bytes as Go).

use std::collections::{HashMap, HashSet};
use std::fmt;

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

use crate::record::{format_tree, parse_tree, Tree};
use crate::{b64, NoteError};

/// The algorithm byte of Ed25519 keys, the only kind there is.
pub const ALG_ED25519: u8 = 1;

const SIG_PREFIX: &str = "— ";

/// The key id of `name` with encoded public key `key` (algorithm byte, then the key).
pub fn key_hash(name: &str, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(key);
    let sum = h.finalize();
    u32::from_be_bytes([sum[0], sum[1], sum[2], sum[3]])
}

/// Whether `name` can name a key: non-empty, no Unicode space, no `+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(char::is_whitespace) && !name.contains('+')
}

/// `strconv.ParseUint(s, 16, 32)` of exactly 8 hex digits.
fn parse_key_id(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

/// `s` split at the first `sep`; all of `s` and `""` if there is none (Go's `chop`).
fn chop(s: &str, sep: char) -> (&str, &str) {
    s.split_once(sep).unwrap_or((s, ""))
}

/// `note.NewEd25519VerifierKey`: the verifier key of `name` and an Ed25519 public key.
pub fn ed25519_verifier_key(name: &str, public_key: &[u8; 32]) -> String {
    let mut key = vec![ALG_ED25519];
    key.extend_from_slice(public_key);
    format!("{name}+{:08x}+{}", key_hash(name, &key), b64::encode(&key))
}

/// A key that verifies signatures of one named server (`note.NewVerifier`).
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    hash: u32,
    public_key: [u8; 32],
}

impl Verifier {
    /// Parses a verifier key `<name>+<key id>+<base64(0x01 ‖ public key)>`, checking the id.
    pub fn new(vkey: &str) -> Result<Verifier, NoteError> {
        let (name, rest) = chop(vkey, '+');
        let (hash16, key64) = chop(rest, '+');
        let (Some(hash), Some(key)) = (parse_key_id(hash16), b64::decode(key64)) else {
            return Err(NoteError::MalformedVerifierKey);
        };
        if !is_valid_name(name) || key.is_empty() {
            return Err(NoteError::MalformedVerifierKey);
        }
        if hash != key_hash(name, &key) {
            return Err(NoteError::KeyHashMismatch);
        }
        match key[0] {
            ALG_ED25519 => {}
            alg => return Err(NoteError::UnknownAlgorithm(alg)),
        }
        let public_key = key[1..]
            .try_into()
            .map_err(|_| NoteError::MalformedVerifierKey)?;
        Ok(Verifier {
            name: name.to_string(),
            hash,
            public_key,
        })
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_hash(&self) -> u32 {
        self.hash
    }

    /// The encoded verifier key (what `GOSUMDB` names).
    pub fn key(&self) -> String {
        ed25519_verifier_key(&self.name, &self.public_key)
    }

    /// Whether `sig` is this key's Ed25519 signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(msg, sig)
            .is_ok()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({})", self.key())
    }
}

/// A key that signs as one named server (`note.NewSigner`). Its `Debug` shows the public side
/// only.
pub struct Signer {
    name: String,
    hash: u32,
    key_pair: Ed25519KeyPair,
}

impl Signer {
    /// Parses a signer key `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`, checking the id
    /// against the public key derived from the seed.
    pub fn new(skey: &str) -> Result<Signer, NoteError> {
        let (priv1, rest) = chop(skey, '+');
        let (priv2, rest) = chop(rest, '+');
        let (name, rest) = chop(rest, '+');
        let (hash16, key64) = chop(rest, '+');
        let (Some(hash), Some(key)) = (parse_key_id(hash16), b64::decode(key64)) else {
            return Err(NoteError::MalformedSignerKey);
        };
        if priv1 != "PRIVATE" || priv2 != "KEY" || !is_valid_name(name) || key.is_empty() {
            return Err(NoteError::MalformedSignerKey);
        }
        match key[0] {
            ALG_ED25519 => {}
            alg => return Err(NoteError::UnknownAlgorithm(alg)),
        }
        let seed: &[u8; 32] = key[1..]
            .try_into()
            .map_err(|_| NoteError::MalformedSignerKey)?;
        let signer = Signer::from_seed(name, seed)?;
        if signer.hash != hash {
            return Err(NoteError::KeyHashMismatch);
        }
        Ok(signer)
    }

    /// The signer of `name` whose Ed25519 private key has `seed`.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Signer, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        let key_pair =
            Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteError::MalformedSignerKey)?;
        let mut public = vec![ALG_ED25519];
        public.extend_from_slice(key_pair.public_key().as_ref());
        Ok(Signer {
            name: name.to_string(),
            hash: key_hash(name, &public),
            key_pair,
        })
    }

    /// The server name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_hash(&self) -> u32 {
        self.hash
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(self.key_pair.public_key().as_ref());
        Verifier {
            name: self.name.clone(),
            hash: self.hash,
            public_key,
        }
    }

    /// The Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key_pair.sign(msg).as_ref().to_vec()
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}, private key hidden)", self.verifier().key())
    }
}

/// The signer and verifier keys of a new Ed25519 key for `name` (`note.GenerateKey`): the
/// signer key is secret.
pub fn generate_key(name: &str) -> Result<(String, String), NoteError> {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| NoteError::Random)?;
    key_pair_from_seed(name, &seed)
}

/// The signer and verifier keys of `name` with Ed25519 seed `seed` (for fixed test keys).
pub fn key_pair_from_seed(name: &str, seed: &[u8; 32]) -> Result<(String, String), NoteError> {
    let signer = Signer::from_seed(name, seed)?;
    let mut private = vec![ALG_ED25519];
    private.extend_from_slice(seed);
    let skey = format!(
        "PRIVATE+KEY+{name}+{:08x}+{}",
        signer.hash,
        b64::encode(&private)
    );
    Ok((skey, signer.verifier().key()))
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signing key's name.
    pub name: String,
    /// The signing key's id.
    pub hash: u32,
    /// The base64 of key id ‖ signature, as written in the note.
    pub base64: String,
}

/// A note: its text and its signatures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Signatures verified by a known key.
    pub sigs: Vec<Signature>,
    /// Signatures by keys not known.
    pub unverified_sigs: Vec<Signature>,
}

/// `note.Open`: parses `msg` and verifies its signatures with the `known` verifiers. A
/// signature by a known key that does not verify is an error; signatures by unknown keys are
/// kept as unverified; a note no known key signed is [`NoteError::Unverified`].
pub fn open(msg: &[u8], known: &[Verifier]) -> Result<Note, NoteError> {
    // Valid UTF-8 without ASCII control characters other than newline.
    let msg = std::str::from_utf8(msg).map_err(|_| NoteError::MalformedNote)?;
    if msg.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::MalformedNote);
    }
    // The signature block follows the last blank line.
    let split = msg.rfind("\n\n").ok_or(NoteError::MalformedNote)?;
    let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
    if !sigs.ends_with('\n') {
        return Err(NoteError::MalformedNote);
    }

    let mut by_key: HashMap<(&str, u32), Vec<&Verifier>> = HashMap::new();
    for v in known {
        by_key.entry((v.name(), v.key_hash())).or_default().push(v);
    }

    let mut note = Note {
        text: text.to_string(),
        ..Note::default()
    };
    let mut seen = HashSet::new();
    let mut seen_unverified = HashSet::new();
    for (count, line) in sigs[..sigs.len() - 1].split('\n').enumerate() {
        let line = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(NoteError::MalformedNote)?;
        let (name, sig64) = chop(line, ' ');
        let sig = b64::decode(sig64).ok_or(NoteError::MalformedNote)?;
        if !is_valid_name(name) || sig64.is_empty() || sig.len() < 5 {
            return Err(NoteError::MalformedNote);
        }
        if count >= 100 {
            // Do not spend forever on a note with many signatures.
            return Err(NoteError::MalformedNote);
        }
        let hash = u32::from_be_bytes([sig[0], sig[1], sig[2], sig[3]]);
        let signature = Signature {
            name: name.to_string(),
            hash,
            base64: sig64.to_string(),
        };
        match by_key.get(&(name, hash)).map(Vec::as_slice) {
            None | Some([]) => {
                // Repeated identical unverified signatures are dropped.
                if seen_unverified.insert(line) {
                    note.unverified_sigs.push(signature);
                }
            }
            Some([v]) => {
                // Repeated signatures by one key are dropped.
                if !seen.insert((name, hash)) {
                    continue;
                }
                if !v.verify(text.as_bytes(), &sig[4..]) {
                    return Err(NoteError::InvalidSignature {
                        name: name.to_string(),
                        hash,
                    });
                }
                note.sigs.push(signature);
            }
            Some(_) => {
                return Err(NoteError::AmbiguousVerifier {
                    name: name.to_string(),
                    hash,
                })
            }
        }
    }
    if note.sigs.is_empty() {
        let signers: Vec<String> = note
            .unverified_sigs
            .iter()
            .map(|s| format!("{}+{:08x}", s.name, s.hash))
            .collect();
        return Err(NoteError::Unverified {
            signers: signers.join(", "),
        });
    }
    Ok(note)
}

/// `note.Sign`: the note's text, a blank line, its existing signatures not replaced by a new
/// one of the same key, then the new signatures by `signers`.
pub fn sign(note: &Note, signers: &[&Signer]) -> Result<Vec<u8>, NoteError> {
    if !note.text.ends_with('\n') {
        return Err(NoteError::MalformedNote);
    }
    let mut new_sigs = String::new();
    let mut have = HashSet::new();
    for s in signers {
        have.insert((s.name(), s.key_hash()));
        if !is_valid_name(s.name()) {
            return Err(NoteError::InvalidName(s.name().to_string()));
        }
        let mut sig = s.key_hash().to_be_bytes().to_vec();
        sig.extend(s.sign(note.text.as_bytes()));
        new_sigs.push_str(&format!("{SIG_PREFIX}{} {}\n", s.name(), b64::encode(&sig)));
    }
    let mut out = format!("{}\n", note.text);
    for sig in note.sigs.iter().chain(&note.unverified_sigs) {
        if !is_valid_name(&sig.name) {
            return Err(NoteError::MalformedNote);
        }
        if have.contains(&(sig.name.as_str(), sig.hash)) {
            continue;
        }
        // The key id must be the one inside the signature.
        match b64::decode(&sig.base64) {
            Some(raw) if raw.len() >= 4 && raw[..4] == sig.hash.to_be_bytes() => {}
            _ => return Err(NoteError::MalformedNote),
        }
        out.push_str(&format!("{SIG_PREFIX}{} {}\n", sig.name, sig.base64));
    }
    out.push_str(&new_sigs);
    Ok(out.into_bytes())
}

/// The signed tree head for `tree`: [`format_tree`] signed by `signer` (what `/latest` serves).
pub fn sign_tree(tree: &Tree, signer: &Signer) -> Vec<u8> {
    let note = Note {
        text: format_tree(tree),
        ..Note::default()
    };
    // The text ends in a newline and the signer's name is valid, so signing cannot fail.
    sign(&note, &[signer]).unwrap_or_default()
}

/// The tree of a signed tree head, verified with `verifier` (what a client of `/latest` does).
pub fn open_tree(msg: &[u8], verifier: &Verifier) -> Result<Tree, NoteError> {
    let note = open(msg, std::slice::from_ref(verifier))?;
    Ok(parse_tree(note.text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_hash;

    // The example of Go's note package documentation.
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\n\
                          then you don't know what your problem is.\n\
                          \n\
                          — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_documentation_example_signs_and_opens() {
        let signer = Signer::new(SKEY).unwrap();
        assert_eq!(signer.key_hash(), 0xc74f20a3);
        assert_eq!(signer.verifier().key(), VKEY);
        let note = Note {
            text: TEXT.to_string(),
            ..Note::default()
        };
        assert_eq!(sign(&note, &[&signer]).unwrap(), SIGNED.as_bytes());
        let verifier = Verifier::new(VKEY).unwrap();
        let opened = open(SIGNED.as_bytes(), &[verifier]).unwrap();
        assert_eq!(opened.text, TEXT);
        assert_eq!(opened.sigs.len(), 1);
        assert_eq!(opened.sigs[0].hash, 0xc74f20a3);
    }

    #[test]
    fn open_refuses_tampering_and_unknown_keys() {
        let verifier = Verifier::new(VKEY).unwrap();
        let tampered = SIGNED.replace("cryptography", "cryptographY");
        assert_eq!(
            open(tampered.as_bytes(), std::slice::from_ref(&verifier)),
            Err(NoteError::InvalidSignature {
                name: "PeterNeumann".into(),
                hash: 0xc74f20a3
            })
        );
        let (_, other) = key_pair_from_seed("PeterNeumann", &[7; 32]).unwrap();
        let other = Verifier::new(&other).unwrap();
        assert!(matches!(
            open(SIGNED.as_bytes(), &[other]),
            Err(NoteError::Unverified { signers }) if signers == "PeterNeumann+c74f20a3"
        ));
        assert_eq!(
            open(SIGNED.as_bytes(), &[verifier.clone(), verifier.clone()]),
            Err(NoteError::AmbiguousVerifier {
                name: "PeterNeumann".into(),
                hash: 0xc74f20a3
            })
        );
        for bad in [
            TEXT.to_string(),
            SIGNED.replace('—', "-"),
            SIGNED.trim_end().to_string(),
            SIGNED.replace("then", "\tthen"),
        ] {
            assert_eq!(
                open(bad.as_bytes(), std::slice::from_ref(&verifier)),
                Err(NoteError::MalformedNote),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(
            Verifier::new("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Err(NoteError::KeyHashMismatch)
        );
        assert_eq!(
            Verifier::new("PeterNeumann+c74f20a3"),
            Err(NoteError::MalformedVerifierKey)
        );
        assert_eq!(
            Verifier::new("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
            Err(NoteError::MalformedVerifierKey)
        );
        assert!(Signer::new(&SKEY.replace("PRIVATE", "PUBLIC")).is_err());
        assert_eq!(
            Signer::new(&SKEY.replace("c74f20a3", "c74f20a4")).err(),
            Some(NoteError::KeyHashMismatch)
        );
        assert!(Signer::new(&SKEY.replace("c74f20a3", "+74f20a3")).is_err());
        assert_eq!(
            Signer::from_seed("a+b", &[0; 32]).err(),
            Some(NoteError::InvalidName("a+b".into()))
        );
        let debug = format!("{:?}", Signer::new(SKEY).unwrap());
        assert!(!debug.contains("AYEKFALV"), "{debug}");
    }

    #[test]
    fn generated_keys_sign_tree_heads() {
        let (skey, vkey) = generate_key("sum.corp.example").unwrap();
        assert!(skey.starts_with("PRIVATE+KEY+sum.corp.example+"));
        let signer = Signer::new(&skey).unwrap();
        let verifier = Verifier::new(&vkey).unwrap();
        assert_eq!(signer.verifier(), verifier);
        let tree = Tree {
            n: 5,
            hash: record_hash(b"x"),
        };
        let head = sign_tree(&tree, &signer);
        assert_eq!(open_tree(&head, &verifier), Ok(tree));
        let (_, other) = generate_key("sum.corp.example").unwrap();
        assert!(open_tree(&head, &Verifier::new(&other).unwrap()).is_err());
    }

    #[test]
    fn resigning_keeps_other_signatures_and_replaces_own() {
        let peter = Signer::new(SKEY).unwrap();
        let (enoch_skey, enoch_vkey) = key_pair_from_seed("EnochRoot", &[9; 32]).unwrap();
        let enoch = Signer::new(&enoch_skey).unwrap();
        let opened = open(SIGNED.as_bytes(), &[Verifier::new(VKEY).unwrap()]).unwrap();
        let both = sign(&opened, &[&enoch]).unwrap();
        let both_text = String::from_utf8(both.clone()).unwrap();
        assert!(both_text.starts_with(SIGNED));
        assert!(both_text.contains("\n— EnochRoot "));
        let reopened = open(&both, &[Verifier::new(&enoch_vkey).unwrap()]).unwrap();
        assert_eq!(reopened.unverified_sigs.len(), 1);
        // Re-signing by Peter replaces Peter's line, now placed last.
        let again = sign(&opened, &[&peter]).unwrap();
        assert_eq!(again, SIGNED.as_bytes());
    }
}
