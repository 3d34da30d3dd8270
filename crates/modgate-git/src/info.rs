//! `.info` documents exactly as the go command writes them: the `RevInfo`
//! and `codehost.Origin` structs of `cmd/go/internal/modfetch`, serialized
//! the way Go's `encoding/json` does (field order, `omitempty`, HTML-safe
//! string escaping, `time.Time` as RFC 3339 in UTC), plus the "cleaning"
//! `writeDiskStat` applies before it stores an `.info` in the module cache.

use modgate_protocol::is_pseudo_version;

/// Where a revision came from (Go's `codehost.Origin`); empty fields are
/// omitted from the JSON, in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Always `git` here.
    pub vcs: String,
    /// The repository URL as configured (never a rewritten or
    /// credential-bearing URL).
    pub url: String,
    /// The module's directory in the repository (`codeDir`).
    pub subdir: String,
    /// The full commit hash.
    pub hash: String,
    /// The tag prefix whose tags [`tag_sum`](Origin::tag_sum) covers.
    pub tag_prefix: String,
    /// `t1:` hash of the tags the answer depends on.
    pub tag_sum: String,
    /// The ref the answer was resolved through, e.g. `refs/heads/main`.
    pub r#ref: String,
    /// `r1:` hash of all refs (for negative answers).
    pub repo_sum: String,
}

/// A resolved revision (Go's `modfetch.RevInfo` as serialized).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevInfo {
    /// The module version, e.g. `v1.2.3` or a pseudo-version.
    pub version: String,
    /// The commit time in seconds since the Unix epoch (Go keeps only
    /// seconds: `git log --format=%ct`).
    pub time: i64,
    /// Provenance; `None` is omitted.
    pub origin: Option<Origin>,
}

impl RevInfo {
    /// The JSON bytes `json.Marshal` gives for this `RevInfo` (no trailing
    /// newline, as in the module cache).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str("{\"Version\":");
        push_json_string(&mut out, &self.version);
        out.push_str(",\"Time\":\"");
        out.push_str(&format_rfc3339_utc(self.time));
        out.push('"');
        if let Some(origin) = &self.origin {
            out.push_str(",\"Origin\":{");
            let fields = [
                ("VCS", &origin.vcs),
                ("URL", &origin.url),
                ("Subdir", &origin.subdir),
                ("Hash", &origin.hash),
                ("TagPrefix", &origin.tag_prefix),
                ("TagSum", &origin.tag_sum),
                ("Ref", &origin.r#ref),
                ("RepoSum", &origin.repo_sum),
            ];
            let mut first = true;
            for (name, value) in fields {
                if value.is_empty() {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push('"');
                out.push_str(name);
                out.push_str("\":");
                push_json_string(&mut out, value);
            }
            out.push('}');
        }
        out.push('}');
        out.into_bytes()
    }

    /// What `writeDiskStat` stores in the module cache for this answer: the
    /// tag fields dropped ("tags never matter if you are starting with a
    /// semver version"), and the ref too for a pseudo-version.
    pub fn cleaned(&self) -> RevInfo {
        let mut info = self.clone();
        if let Some(origin) = &mut info.origin {
            origin.tag_sum.clear();
            origin.tag_prefix.clear();
            if is_pseudo_version(&info.version) {
                origin.r#ref.clear();
            }
        }
        info
    }
}

/// Appends `s` as a JSON string the way Go's `encoding/json` encodes it
/// with HTML escaping on (the default for `json.Marshal`).
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Go 1.22 and later write these two short forms.
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `time.Unix(secs, 0).UTC()` formatted as RFC 3339 (`2006-01-02T15:04:05Z`),
/// which is what Go's `time.Time.MarshalJSON` writes for whole seconds.
pub fn format_rfc3339_utc(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `t.UTC().Format("20060102150405")`, the pseudo-version timestamp.
pub fn format_pseudo_timestamp(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

/// Splits Unix seconds into the UTC civil date and time (jiff's proleptic
/// Gregorian calendar). Seconds beyond jiff's years -9999..=9999 are clamped
/// to its bounds (Go's `MarshalJSON` refuses any year past 9999 anyway).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    use jiff::civil::DateTime;
    // `civil::DateTime` rather than `Timestamp`: the timestamp range stops a day
    // short of 9999-12-31 (it leaves room for any offset).
    const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
    let dt = EPOCH
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(if secs < 0 {
            DateTime::MIN
        } else {
            DateTime::MAX
        });
    let part = |v: i8| u32::try_from(v).unwrap_or(0);
    (
        i64::from(dt.year()),
        part(dt.month()),
        part(dt.day()),
        part(dt.hour()),
        part(dt.minute()),
        part(dt.second()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_like_go() {
        assert_eq!(format_rfc3339_utc(0), "1970-01-01T00:00:00Z");
        // date -u -d @1700000000
        assert_eq!(format_rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_pseudo_timestamp(1_700_000_000), "20231114221320");
        assert_eq!(
            format_rfc3339_utc(4_107_456_000 + 86_400),
            "2100-03-01T00:00:00Z"
        );
        assert_eq!(format_rfc3339_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn json_matches_encoding_json() {
        let info = RevInfo {
            version: "v1.0.0".into(),
            time: 1_700_000_000,
            origin: Some(Origin {
                vcs: "git".into(),
                url: "https://h.example/a?b&c<d>".into(),
                hash: "0123".into(),
                r#ref: "refs/tags/v1.0.0".into(),
                ..Origin::default()
            }),
        };
        assert_eq!(
            String::from_utf8(info.to_json()).unwrap(),
            "{\"Version\":\"v1.0.0\",\"Time\":\"2023-11-14T22:13:20Z\",\"Origin\":{\"VCS\":\"git\",\
             \"URL\":\"https://h.example/a?b\\u0026c\\u003cd\\u003e\",\"Hash\":\"0123\",\
             \"Ref\":\"refs/tags/v1.0.0\"}}"
        );
        let bare = RevInfo {
            version: "v0.1.0".into(),
            time: 0,
            origin: None,
        };
        assert_eq!(
            bare.to_json(),
            b"{\"Version\":\"v0.1.0\",\"Time\":\"1970-01-01T00:00:00Z\"}"
        );
    }

    #[test]
    fn cleaning_drops_tags_and_pseudo_refs() {
        let origin = Origin {
            vcs: "git".into(),
            tag_prefix: "v".into(),
            tag_sum: "t1:x".into(),
            r#ref: "refs/heads/main".into(),
            ..Origin::default()
        };
        let pseudo = RevInfo {
            version: "v0.0.0-20231114221320-0123456789ab".into(),
            time: 0,
            origin: Some(origin.clone()),
        };
        let cleaned = pseudo.cleaned().origin.unwrap();
        assert!(cleaned.tag_sum.is_empty() && cleaned.tag_prefix.is_empty());
        assert!(cleaned.r#ref.is_empty());
        let release = RevInfo {
            version: "v1.0.0".into(),
            time: 0,
            origin: Some(origin),
        };
        assert_eq!(release.cleaned().origin.unwrap().r#ref, "refs/heads/main");
    }
}
