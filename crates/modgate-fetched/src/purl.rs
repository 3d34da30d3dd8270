//! The Package URL of a Go module version (pure), as the purl specification's `golang` type
//! defines it: `pkg:golang/<namespace>/<name>@<version>`, the namespace being the module path
//! up to its last `/` and the name its last element.
//!
//! The `golang` type definition says namespace and name are not case sensitive and must be
//! lowercased, so they are — although Go module paths *are* case sensitive
//! (`github.com/Azure/x` and `github.com/azure/x` are two modules to `go`): the exact path is
//! kept beside the purl (the CycloneDX component's `name`). Each segment and the version are
//! percent-encoded (everything but ASCII letters, digits and `.-_~`), so a
//! `v2.0.0+incompatible` version is written `v2.0.0%2Bincompatible`.

/// Percent-encodes `s` for a purl component: ASCII letters, digits and `.-_~` stay as they are.
fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// `pkg:golang/...@version` for a module path and an exact version.
pub fn golang(module: &str, version: &str) -> String {
    let lower = module.to_ascii_lowercase();
    let mut out = String::from("pkg:golang/");
    let mut first = true;
    for segment in lower.split('/').filter(|s| !s.is_empty()) {
        if !first {
            out.push('/');
        }
        first = false;
        encode(segment, &mut out);
    }
    if !version.is_empty() {
        out.push('@');
        encode(version, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_module_purls() {
        assert_eq!(
            golang("github.com/gorilla/context", "v1.1.1"),
            "pkg:golang/github.com/gorilla/context@v1.1.1"
        );
        assert_eq!(
            golang("golang.org/x/text", "v0.3.0"),
            "pkg:golang/golang.org/x/text@v0.3.0"
        );
        // The type definition lowercases namespace and name; the version keeps its case.
        assert_eq!(
            golang("github.com/Azure/go-autorest", "v14.2.0+incompatible"),
            "pkg:golang/github.com/azure/go-autorest@v14.2.0%2Bincompatible"
        );
        assert_eq!(
            golang("example.com/m", "v0.0.0-20191109021931-daa7c04131f5"),
            "pkg:golang/example.com/m@v0.0.0-20191109021931-daa7c04131f5"
        );
        // Characters Go allows in paths but a purl must encode.
        assert_eq!(
            golang("example.com/a~b/c!d", "v1.0.0"),
            "pkg:golang/example.com/a~b/c%21d@v1.0.0"
        );
        assert_eq!(golang("corp", "v1.0.0"), "pkg:golang/corp@v1.0.0");
    }
}
