//! A module version offered to the log: its path, version and the two `h1:` hashes, checked
//! once so that its record text (`gosum_record`) is always a valid record the `go` command can
//! look up (`/lookup/<path>@<version>` only accepts versions Go's `modVerRE` matches).

use modgate_tlog::{gosum_record, record::is_valid_record_text, Hash};

use crate::Error;

/// Longest module path or version accepted (Go's own limits are far lower).
const MAX_LEN: usize = 1024;

/// A module version to log, checked: a valid module path, a version the lookup endpoint can
/// name, and two `h1:` hashes (base64 of 32 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    path: String,
    version: String,
    zip_h1: String,
    mod_h1: String,
}

impl Entry {
    /// Checks and builds an entry: `zip_h1` is the module zip's `h1:` hash, `mod_h1` its
    /// go.mod's (the hashes of the two go.sum lines).
    pub fn new(path: &str, version: &str, zip_h1: &str, mod_h1: &str) -> Result<Entry, Error> {
        let invalid = |reason: String| Error::InvalidEntry {
            path: path.chars().take(200).collect(),
            version: version.chars().take(100).collect(),
            reason,
        };
        if path.len() > MAX_LEN || version.len() > MAX_LEN {
            return Err(invalid("longer than 1024 bytes".into()));
        }
        modgate_protocol::check_path(path).map_err(|e| invalid(e.to_string()))?;
        if !is_lookup_version(version) {
            return Err(invalid(
                "the version is not one /lookup/ can name (vX.Y.Z[-…][+incompatible])".into(),
            ));
        }
        if version.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "the version has a space or control character".into(),
            ));
        }
        modgate_protocol::escape_version(version).map_err(|e| invalid(e.to_string()))?;
        for (what, h1) in [("zip", zip_h1), ("go.mod", mod_h1)] {
            let ok = h1
                .strip_prefix("h1:")
                .is_some_and(|b64| Hash::parse(b64).is_ok());
            if !ok {
                return Err(invalid(format!(
                    "the {what} hash {:?} is not h1:<base64 of 32 bytes>",
                    h1.chars().take(100).collect::<String>()
                )));
            }
        }
        let entry = Entry {
            path: path.to_string(),
            version: version.to_string(),
            zip_h1: zip_h1.to_string(),
            mod_h1: mod_h1.to_string(),
        };
        if !is_valid_record_text(entry.text().as_bytes()) {
            return Err(invalid("the record text would not be valid".into()));
        }
        Ok(entry)
    }

    /// The module path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The record text: the two go.sum lines, `"<path> <version> <zip h1>\n<path>
    /// <version>/go.mod <mod h1>\n"`.
    pub fn text(&self) -> String {
        gosum_record(&self.path, &self.version, &self.zip_h1, &self.mod_h1)
    }
}

/// Whether `escaped` is `<module>@<version>` as the sumdb server's `modVerRE` requires:
/// `^[^@]+@v[0-9]+\.[0-9]+\.[0-9]+(-[^@]*)?(\+incompatible)?$`.
pub(crate) fn split_lookup(escaped: &str) -> Option<(&str, &str)> {
    let (module, version) = escaped.split_once('@')?;
    (!module.is_empty() && is_lookup_version(version)).then_some((module, version))
}

/// The version half of `modVerRE`: `v[0-9]+\.[0-9]+\.[0-9]+(-[^@]*)?(\+incompatible)?`.
pub(crate) fn is_lookup_version(version: &str) -> bool {
    if version.contains('@') {
        return false;
    }
    let Some(mut rest) = version.strip_prefix('v') else {
        return false;
    };
    for sep in [Some(b'.'), Some(b'.'), None] {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if let Some(sep) = sep {
            if rest.as_bytes().first() != Some(&sep) {
                return false;
            }
            rest = &rest[1..];
        }
    }
    rest.is_empty() || rest.starts_with('-') || rest == "+incompatible"
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn valid_entries_make_go_sum_lines() {
        let e = Entry::new("example.com/m", "v1.2.3", H1, H1).unwrap();
        assert_eq!(
            e.text(),
            format!("example.com/m v1.2.3 {H1}\nexample.com/m v1.2.3/go.mod {H1}\n")
        );
        for v in [
            "v0.0.0-20240101000000-abcdefabcdef",
            "v2.0.0+incompatible",
            "v1.0.0-rc.1",
            "v1.0.0-rc.1+incompatible",
        ] {
            assert!(Entry::new("example.com/m", v, H1, H1).is_ok(), "{v}");
        }
    }

    #[test]
    fn invalid_entries_are_refused() {
        for (path, version, zip, md) in [
            ("Example Com/m", "v1.0.0", H1, H1),
            ("example.com/m", "1.0.0", H1, H1),
            ("example.com/m", "v1.0", H1, H1),
            ("example.com/m", "v1.0.0+meta", H1, H1),
            ("example.com/m", "v1.0.0-a b", H1, H1),
            ("example.com/m", "v1.0.0-a@b", H1, H1),
            ("example.com/m", "v1.0.0-a\nb", H1, H1),
            ("example.com/m", "v1.0.0", "h1:abc", H1),
            (
                "example.com/m",
                "v1.0.0",
                H1,
                "h2:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            ),
        ] {
            assert!(
                matches!(
                    Entry::new(path, version, zip, md),
                    Err(Error::InvalidEntry { .. })
                ),
                "{path} {version} {zip} {md}"
            );
        }
    }

    #[test]
    fn lookup_syntax_is_mod_ver_re() {
        assert_eq!(
            split_lookup("example.com/!m@v1.0.0"),
            Some(("example.com/!m", "v1.0.0"))
        );
        for bad in [
            "@v1.0.0",
            "m@1.0.0",
            "m@v1.0.0@x",
            "m@v1.0.0.0",
            "m@v1.0.0x",
            "m",
        ] {
            assert_eq!(split_lookup(bad), None, "{bad}");
        }
    }
}
