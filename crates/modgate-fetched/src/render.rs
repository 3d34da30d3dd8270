//! What a fetched query answers, as text, JSON or a CycloneDX 1.6 JSON document (pure: the
//! time and the serial number are given).
//!
//! In CycloneDX, each module version is one `library` component (zip and mod merged) named by
//! its exact module path, with its Go [`purl`](crate::purl). Its `hashes` hold only what
//! CycloneDX means by a hash — a digest of the component's bytes: the SHA-256 of the module
//! `.zip` the identity was served, as the integrity ledger recorded it. The `go.sum` `h1:`
//! hashes are *not* a SHA-256 of any file (they are the base64 SHA-256 of Go's `dirhash`
//! summary of the files), so converting them to hex as `SHA-256` would invite a wrong check;
//! they are kept verbatim as properties `modgate:h1` (the zip, the `go.sum` line
//! `MODULE VERSION h1:...`) and `modgate:h1:go.mod` (`MODULE VERSION/go.mod h1:...`), beside
//! `modgate:sha256:go.mod`, the fetch times and count.

use serde_json::{json, Value};

use crate::index::{Hashes, Query, VersionFetched};
use crate::purl;
use crate::time::format_rfc3339;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per module version.
    Text,
    /// The query and its versions as a JSON object.
    Json,
    /// A CycloneDX 1.6 JSON BOM.
    CycloneDx,
}

impl Format {
    /// `text`, `json` or `cyclonedx`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "cyclonedx" | "cyclonedx-json" => Ok(Format::CycloneDx),
            _ => Err(format!(
                "unknown format {s:?} (use text, json or cyclonedx)"
            )),
        }
    }

    /// The media type of the rendering.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::CycloneDx => "application/vnd.cyclonedx+json; version=1.6",
        }
    }
}

/// Who made the document, for CycloneDX's `metadata.tools`.
#[derive(Debug, Clone, Copy)]
pub struct Tool<'a> {
    /// `modgate`.
    pub name: &'a str,
    /// Its version.
    pub version: &'a str,
}

/// Renders `versions` (the answer to `q`) in `format`. `now_ms` and `serial` (16 random
/// bytes) are used by CycloneDX only.
pub fn render(
    format: Format,
    q: &Query,
    versions: &[VersionFetched],
    tool: Tool,
    now_ms: i64,
    serial: [u8; 16],
) -> String {
    match format {
        Format::Text => text(q, versions),
        Format::Json => pretty(&json_doc(q, versions)),
        Format::CycloneDx => pretty(&cyclonedx(q, versions, tool, now_ms, serial)),
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// `s` with every control character written `\u{..}`: an identity name comes from a
/// certificate or a credentials file, and must not start a forged line of the text output.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn h1s(set: &std::collections::BTreeSet<Hashes>) -> Vec<&str> {
    set.iter().filter_map(|h| h.h1.as_deref()).collect()
}

/// One line per version: `MODULE@VERSION zip h1:... mod h1:... N fetch(es), first .., last .., by ..`.
pub fn text(q: &Query, versions: &[VersionFetched]) -> String {
    let mut out = String::new();
    for v in versions {
        let mut line = format!("{}@{}", printable(&v.module), printable(&v.version));
        for (name, fetched, set) in [
            ("zip", v.zip_fetched, &v.zip),
            ("mod", v.mod_fetched, &v.module_file),
        ] {
            if !fetched {
                continue;
            }
            let hashes = h1s(set);
            if hashes.is_empty() {
                line.push_str(&format!(" {name} (no ledger hash)"));
            } else {
                line.push_str(&format!(" {name} {}", hashes.join(",")));
            }
        }
        line.push_str(&format!(
            "  {} fetch(es), first {}, last {}, by {}\n",
            v.count,
            format_rfc3339(v.first_ms),
            format_rfc3339(v.last_ms),
            printable(&v.identities.iter().cloned().collect::<Vec<_>>().join(","))
        ));
        out.push_str(&line);
    }
    out.push_str(&format!(
        "# {} module version(s) fetched by {} from {} to {}\n",
        versions.len(),
        printable(&q.identity.label()),
        format_rfc3339(q.since_ms),
        format_rfc3339(q.until_ms)
    ));
    out
}

fn hashes_json(fetched: bool, set: &std::collections::BTreeSet<Hashes>) -> Value {
    if !fetched {
        return Value::Null;
    }
    json!({
        "hashes": set
            .iter()
            .map(|h| json!({ "sha256": h.sha256, "h1": h.h1 }))
            .collect::<Vec<_>>(),
    })
}

/// The JSON rendering: the query and one object per version.
pub fn json_doc(q: &Query, versions: &[VersionFetched]) -> Value {
    json!({
        "identity": q.identity.label(),
        "since": format_rfc3339(q.since_ms),
        "until": format_rfc3339(q.until_ms),
        "versions": versions
            .iter()
            .map(|v| json!({
                "module": v.module,
                "version": v.version,
                "purl": purl::golang(&v.module, &v.version),
                "first": format_rfc3339(v.first_ms),
                "last": format_rfc3339(v.last_ms),
                "count": v.count,
                "identities": v.identities,
                "zip": hashes_json(v.zip_fetched, &v.zip),
                "mod": hashes_json(v.mod_fetched, &v.module_file),
            }))
            .collect::<Vec<_>>(),
    })
}

/// `urn:uuid:` of 16 random bytes, made a version 4 (random) UUID.
pub fn uuid_urn(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn property(name: &str, value: impl Into<String>) -> Value {
    json!({ "name": name, "value": value.into() })
}

/// The CycloneDX 1.6 document of the versions `q.identity` fetched.
pub fn cyclonedx(
    q: &Query,
    versions: &[VersionFetched],
    tool: Tool,
    now_ms: i64,
    serial: [u8; 16],
) -> Value {
    let who = q.identity.label();
    let components: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut c = json!({
                "type": "library",
                "bom-ref": format!("{}@{}", v.module, v.version),
                "name": v.module,
                "version": v.version,
                "purl": purl::golang(&v.module, &v.version),
            });
            let hashes: Vec<Value> = v
                .zip
                .iter()
                .filter(|h| is_sha256_hex(&h.sha256))
                .map(|h| json!({ "alg": "SHA-256", "content": h.sha256.to_ascii_lowercase() }))
                .collect();
            if !hashes.is_empty() {
                c["hashes"] = Value::Array(hashes);
            }
            let mut props = Vec::new();
            for h in h1s(&v.zip) {
                props.push(property("modgate:h1", h));
            }
            for h in h1s(&v.module_file) {
                props.push(property("modgate:h1:go.mod", h));
            }
            for h in &v.module_file {
                props.push(property("modgate:sha256:go.mod", h.sha256.clone()));
            }
            let artifacts: Vec<&str> = [("zip", v.zip_fetched), ("mod", v.mod_fetched)]
                .iter()
                .filter(|(_, f)| *f)
                .map(|(n, _)| *n)
                .collect();
            props.push(property("modgate:fetched:artifacts", artifacts.join(",")));
            props.push(property(
                "modgate:fetched:first",
                format_rfc3339(v.first_ms),
            ));
            props.push(property("modgate:fetched:last", format_rfc3339(v.last_ms)));
            props.push(property("modgate:fetched:count", v.count.to_string()));
            props.push(property(
                "modgate:fetched:by",
                v.identities.iter().cloned().collect::<Vec<_>>().join(","),
            ));
            c["properties"] = Value::Array(props);
            c
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": uuid_urn(serial),
        "version": 1,
        "metadata": {
            "timestamp": format_rfc3339(now_ms - now_ms.rem_euclid(1000)),
            "tools": {
                "components": [{
                    "type": "application",
                    "name": tool.name,
                    "version": tool.version,
                }],
            },
            "component": {
                "type": "application",
                "bom-ref": format!("modgate-identity:{who}"),
                "name": who,
                "description": format!(
                    "Go module versions fetched through modgate by {who} from {} to {}",
                    format_rfc3339(q.since_ms),
                    format_rfc3339(q.until_ms)
                ),
            },
            "properties": [
                property("modgate:identity", who.clone()),
                property("modgate:since", format_rfc3339(q.since_ms)),
                property("modgate:until", format_rfc3339(q.until_ms)),
            ],
        },
        "components": components,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::index::IdentityFilter;

    fn query() -> Query {
        Query {
            identity: IdentityFilter::parse("certificate:ci-7").expect("id"),
            since_ms: 0,
            until_ms: 1_796_623_200_000,
        }
    }

    fn version(module: &str, version: &str, zip: bool) -> VersionFetched {
        let hashes = |sha: &str, h1: &str| {
            BTreeSet::from([Hashes {
                sha256: sha.repeat(32),
                h1: Some(h1.into()),
            }])
        };
        VersionFetched {
            module: module.into(),
            version: version.into(),
            first_ms: 1_000,
            last_ms: 2_000,
            count: if zip { 2 } else { 1 },
            identities: BTreeSet::from(["certificate:ci-7".to_string()]),
            zip: if zip {
                hashes("ab", "h1:zipzip=")
            } else {
                BTreeSet::new()
            },
            zip_fetched: zip,
            module_file: hashes("cd", "h1:modmod="),
            mod_fetched: true,
        }
    }

    const TOOL: Tool = Tool {
        name: "modgate",
        version: "0.1.0",
    };

    #[test]
    fn a_cyclonedx_document_has_one_library_per_version() {
        let versions = [
            version("github.com/Azure/x", "v2.0.0+incompatible", true),
            version("example.com/only-mod", "v1.0.0", false),
        ];
        let d = cyclonedx(&query(), &versions, TOOL, 1_796_623_200_123, [7; 16]);
        assert_eq!(d["bomFormat"], "CycloneDX");
        assert_eq!(d["specVersion"], "1.6");
        assert_eq!(d["version"], 1);
        assert_eq!(
            d["serialNumber"],
            "urn:uuid:07070707-0707-4707-8707-070707070707"
        );
        assert_eq!(d["metadata"]["timestamp"], "2026-12-07T06:00:00Z");
        assert_eq!(d["metadata"]["tools"]["components"][0]["name"], "modgate");
        assert_eq!(d["metadata"]["component"]["name"], "certificate:ci-7");
        let c = &d["components"][0];
        assert_eq!(c["type"], "library");
        assert_eq!(c["name"], "github.com/Azure/x");
        assert_eq!(c["version"], "v2.0.0+incompatible");
        assert_eq!(
            c["purl"],
            "pkg:golang/github.com/azure/x@v2.0.0%2Bincompatible"
        );
        assert_eq!(c["hashes"][0]["alg"], "SHA-256");
        assert_eq!(c["hashes"][0]["content"], "ab".repeat(32));
        let props: Vec<(String, String)> = c["properties"]
            .as_array()
            .expect("properties")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or("").to_string(),
                    p["value"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert!(props.contains(&("modgate:h1".into(), "h1:zipzip=".into())));
        assert!(props.contains(&("modgate:h1:go.mod".into(), "h1:modmod=".into())));
        assert!(props.contains(&("modgate:fetched:artifacts".into(), "zip,mod".into())));
        // A version whose zip was not fetched has no component hash (a .mod's digest is not
        // the component's), only its go.mod properties.
        let only_mod = &d["components"][1];
        assert!(only_mod.get("hashes").is_none());
        assert_eq!(only_mod["purl"], "pkg:golang/example.com/only-mod@v1.0.0");
    }

    #[test]
    fn the_serial_number_is_a_version_4_uuid() {
        let u = uuid_urn([0xff; 16]);
        assert_eq!(u, "urn:uuid:ffffffff-ffff-4fff-bfff-ffffffffffff");
        let u = uuid_urn([0; 16]);
        assert_eq!(u, "urn:uuid:00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn text_and_json_name_every_version_and_hash() {
        let versions = [version("example.com/a", "v1.0.0", true)];
        let t = text(&query(), &versions);
        assert!(
            t.starts_with("example.com/a@v1.0.0 zip h1:zipzip= mod h1:modmod=  2 fetch(es)"),
            "{t}"
        );
        assert!(
            t.contains("# 1 module version(s) fetched by certificate:ci-7"),
            "{t}"
        );
        let j = json_doc(&query(), &versions);
        assert_eq!(j["versions"][0]["zip"]["hashes"][0]["h1"], "h1:zipzip=");
        assert_eq!(
            j["versions"][0]["mod"]["hashes"][0]["sha256"],
            "cd".repeat(32)
        );
        assert_eq!(j["identity"], "certificate:ci-7");
        assert!(Format::parse("xml").is_err());
        // A name with a line break cannot forge a line of the text output.
        let mut forged = version("example.com/a", "v1.0.0", true);
        forged.identities = BTreeSet::from(["certificate:x\nexample.com/evil@v6.6.6".to_string()]);
        let t = text(&query(), &[forged]);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains("certificate:x\\u{a}example.com/evil"), "{t}");
        assert_eq!(Format::parse("cyclonedx"), Ok(Format::CycloneDx));
    }
}
