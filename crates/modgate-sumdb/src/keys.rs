//! The log's signer key file (for `modgate sumdb keygen` and start-up): created with mode 0600
//! and never overwritten; read only when group and others cannot read or write it. The file
//! holds the signer key (`PRIVATE+KEY+<name>+<key id>+<key>`) and a newline; the verifier key
//! (`<name>+<key id>+<key>`) is public — it is what `GOSUMDB` names.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use modgate_tlog::{generate_key, Signer, Verifier};

use crate::Error;

/// Makes a new Ed25519 key for the log `name`, writes the signer key to `path` (created with
/// mode 0600; an existing file is an error, never overwritten) and returns the verifier key
/// line to publish (`GOSUMDB="<verifier key>"`).
pub fn keygen(name: &str, path: &Path) -> Result<String, Error> {
    let (skey, vkey) = generate_key(name)?;
    write_signer_key(path, &skey)?;
    Ok(vkey)
}

/// Writes `skey` (checked to be a signer key) to a new file `path` with mode 0600, synced.
pub fn write_signer_key(path: &Path, skey: &str) -> Result<(), Error> {
    Signer::new(skey)?;
    let err = |detail: &'static str| {
        move |source| Error::KeyFile {
            path: path.to_path_buf(),
            detail,
            source,
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err(
            "creating it (an existing key file is never overwritten)",
        ))?;
    // The umask can only clear bits; make sure nothing but the owner has any.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err("setting its mode to 0600"))?;
    file.write_all(format!("{skey}\n").as_bytes())
        .map_err(err("writing the key"))?;
    file.sync_all().map_err(err("syncing the key"))?;
    Ok(())
}

/// Reads the signer key in `path`. A file group or others may read or write is refused
/// ([`Error::KeyFileMode`]).
pub fn read_signer_key(path: &Path) -> Result<Signer, Error> {
    let err = |detail: &'static str| {
        move |source| Error::KeyFile {
            path: path.to_path_buf(),
            detail,
            source,
        }
    };
    let file = std::fs::File::open(path).map_err(err("opening it"))?;
    let mode = file
        .metadata()
        .map_err(err("reading its mode"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::KeyFileMode {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let text = std::io::read_to_string(file).map_err(err("reading it"))?;
    Ok(Signer::new(text.trim())?)
}

/// Parses a verifier key (`<name>+<key id>+<key>`, as `GOSUMDB` names it).
pub fn verifier(vkey: &str) -> Result<Verifier, Error> {
    Ok(Verifier::new(vkey.trim())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sumdb.key");
        let vkey = keygen("sum.corp.example", &path).unwrap();
        assert!(vkey.starts_with("sum.corp.example+"), "{vkey}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let signer = read_signer_key(&path).unwrap();
        assert_eq!(signer.verifier(), verifier(&vkey).unwrap());
        // Never overwritten.
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(
            keygen("sum.corp.example", &path),
            Err(Error::KeyFile { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn readable_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sumdb.key");
        keygen("sum.corp.example", &path).unwrap();
        for mode in [0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match read_signer_key(&path) {
                Err(Error::KeyFileMode { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_signer_key(&path).is_ok());
        std::fs::write(dir.path().join("bad.key"), "not a key\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("bad.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(matches!(
            read_signer_key(&dir.path().join("bad.key")),
            Err(Error::Key(_))
        ));
    }
}
