//! The integrity guard of one request for an exact version: its ledger key; before the fetch,
//! the refusal of what an operator has not yet accepted (quarantine); the refusal the
//! verifying origin (`verified.rs`) reported. And the judgement of an upstream's header (pure,
//! used by that origin): an encoded body, or a size that differs from the first-seen one, is
//! refused before any byte is read.

use modgate_ledger::{Artifact, Entry};

use crate::cache::{self, CacheRuntime, IntegrityCheck, IntegrityFailure};

/// Why the upstream's header was refused; its text is the whole message (the 502's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderRefusal {
    /// A `Content-Encoding` nobody asked for: hashing encoded bytes would pin the wrong thing.
    #[error("{0}")]
    Encoded(String),
    /// The announced size differs from the first-seen one: changed bytes.
    #[error("{0}")]
    Changed(String),
}

/// A header refusal as the reason of the Pingora error that answers 502.
impl From<HeaderRefusal> for pingora::ImmutStr {
    fn from(r: HeaderRefusal) -> Self {
        r.to_string().into()
    }
}

/// A refused body as the reason of the Pingora error that cuts the client off.
impl From<IntegrityFailure> for pingora::ImmutStr {
    fn from(f: IntegrityFailure) -> Self {
        f.to_string().into()
    }
}

/// Judges an upstream's 200 header for an exact version against what the ledger recorded
/// (pure): the check to hash the body with, or why the answer is refused.
pub fn judge_header(
    module: &str,
    version: &str,
    artifact: Artifact,
    upstream: &str,
    headers: &http::HeaderMap,
    recorded: Option<&Entry>,
) -> Result<IntegrityCheck, HeaderRefusal> {
    if let Some(enc) = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return Err(HeaderRefusal::Encoded(format!(
            "{module}@{version} (.{artifact}): upstream sent Content-Encoding {enc:?} although \
             none was asked for; refused (its bytes cannot be checked against the ledger)"
        )));
    }
    let length = content_length(headers);
    if let (Some(length), Some(e)) = (length, recorded) {
        if e.size != length {
            return Err(HeaderRefusal::Changed(cache::mismatch_message(
                module,
                version,
                artifact,
                upstream,
                &e.sha256,
                e.size,
                &format!("{length} bytes"),
            )));
        }
    }
    let check = IntegrityCheck::new(module, version, artifact, length);
    Ok(match cache::unshareable(headers) {
        // Not the one shared representation: compared with a record, never recorded.
        Some(_) => check.without_pinning(),
        None => check,
    })
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The guard's state for one request.
#[derive(Default)]
pub struct Guard {
    /// The module of the request (empty when there is no ledger key).
    module: String,
    /// The ledger entry the request answers to: (artifact, version).
    key: Option<(Artifact, String)>,
    /// Why upstream bytes were refused (now, or earlier and still quarantined).
    refusal: Option<String>,
}

impl Guard {
    pub fn new(module: &str, key: Option<(Artifact, String)>) -> Guard {
        Guard {
            module: module.to_string(),
            key,
            ..Guard::default()
        }
    }

    /// Whether the request is for an exact version (whose bytes the ledger checks).
    pub fn exact(&self) -> bool {
        self.key.is_some()
    }

    /// The module and ledger entry of an exact version.
    pub fn ledger_key(&self) -> Option<(&str, (Artifact, &str))> {
        let (a, v) = self.key.as_ref()?;
        Some((&self.module, (*a, v.as_str())))
    }

    /// Why upstream bytes were refused, if they were.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// The upstream's answer was refused (by the verifying origin): why.
    pub fn refuse(&mut self, why: String) {
        self.refusal = Some(why);
    }

    /// Before a fetch: the refusal of changed bytes an operator has not accepted yet.
    pub fn quarantined(&mut self, c: &CacheRuntime) -> Option<String> {
        let (a, v) = self.key.as_ref()?;
        let r = c.quarantine.get(&self.module, v, *a)?;
        self.refusal = Some(r.message.clone());
        Some(r.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn entry(size: u64) -> Entry {
        Entry {
            module: "m.org/x".into(),
            version: "v1.0.0".into(),
            artifact: Artifact::Zip,
            sha256: "ab".repeat(32),
            h1: None,
            size,
            first_seen_unix: 0,
            source: "up".into(),
            accepted_by: None,
        }
    }

    fn judge(
        h: &[(&str, &str)],
        recorded: Option<&Entry>,
    ) -> Result<IntegrityCheck, HeaderRefusal> {
        judge_header(
            "m.org/x",
            "v1.0.0",
            Artifact::Zip,
            "up",
            &headers(h),
            recorded,
        )
    }

    #[test]
    fn an_encoded_body_is_refused_identity_is_not() {
        let r = judge(&[("content-encoding", "gzip")], None).err();
        assert!(
            matches!(&r, Some(HeaderRefusal::Encoded(m)) if m.contains("\"gzip\"")),
            "{r:?}"
        );
        assert!(judge(&[("content-encoding", "Identity")], None).is_ok());
    }

    #[test]
    fn a_changed_size_is_refused_before_the_body() {
        let e = entry(100);
        let r = judge(&[("content-length", "101")], Some(&e)).err();
        match r {
            Some(HeaderRefusal::Changed(m)) => {
                assert!(m.contains("changed upstream"), "{m}");
                assert!(m.contains(&e.sha256), "{m}");
                assert!(m.contains("now serves 101 bytes"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(judge(&[("content-length", "100")], Some(&e)).is_ok());
        // No length announced: judged at the end of the body instead.
        assert!(judge(&[], Some(&e)).is_ok());
    }

    #[test]
    fn an_unshareable_answer_is_compared_never_pinned() {
        let c = judge(&[("set-cookie", "a=b")], None).expect("check");
        assert!(!c.pins());
        let c = judge(&[("content-length", "3")], None).expect("check");
        assert!(c.pins());
    }

    #[test]
    fn a_refusal_reads_as_its_message_also_as_a_pingora_reason() {
        let Err(r) = judge(&[("content-encoding", "br")], None) else {
            panic!("refused");
        };
        let message = match &r {
            HeaderRefusal::Encoded(m) => m.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(r.to_string(), message);
        assert_eq!(pingora::ImmutStr::from(r).to_string(), message);
        let f =
            IntegrityFailure::Ledger("m@v1: the integrity ledger could not be consulted".into());
        assert_eq!(f.to_string(), f.message());
        assert_eq!(pingora::ImmutStr::from(f.clone()).to_string(), f.message());
    }

    #[test]
    fn a_guard_without_a_key_does_nothing() {
        let g = Guard::new("m.org/x", None);
        assert!(!g.exact());
        assert_eq!(g.ledger_key(), None);
        assert_eq!(g.refusal(), None);
        let mut g = Guard::new("m.org/x", Some((Artifact::Zip, "v1.0.0".into())));
        assert_eq!(g.ledger_key(), Some(("m.org/x", (Artifact::Zip, "v1.0.0"))));
        g.refuse("changed".into());
        assert_eq!(g.refusal(), Some("changed"));
    }
}
