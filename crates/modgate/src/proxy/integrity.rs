//! The integrity guard of one request for an exact version: before the fetch, refuses what an
//! operator has not yet accepted (quarantine); at the upstream's header, refuses an encoded
//! body or a size that differs from the first-seen one before anything reaches the client;
//! while the body streams, hashes it; at its end, checks it against (or records it in) the
//! ledger and cuts the client off before the last byte when the bytes changed.

use bytes::Bytes;
use modgate_ledger::{Artifact, Entry};
use pingora::http::ResponseHeader;

use super::metrics::ProxyMetrics;
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
    /// Hashing of the body coming from the upstream.
    check: Option<IntegrityCheck>,
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

    /// Why upstream bytes were refused, if they were.
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Before a fetch: the refusal of changed bytes an operator has not accepted yet.
    pub fn quarantined(&mut self, c: &CacheRuntime) -> Option<String> {
        let (a, v) = self.key.as_ref()?;
        let r = c.quarantine.get(&self.module, v, *a)?;
        self.refusal = Some(r.message.clone());
        Some(r.message)
    }

    /// At an upstream's 200 header for a GET: refuses an encoded body or a changed size before
    /// anything reaches the client (the message is the 502's), else starts hashing. A refusal
    /// of changed bytes is counted on `counted`.
    pub async fn start(
        &mut self,
        c: &CacheRuntime,
        resp: &ResponseHeader,
        upstream: &str,
        counted: &ProxyMetrics,
    ) -> Result<(), HeaderRefusal> {
        let Some((a, version)) = self.key.clone() else {
            return Ok(());
        };
        let recorded = if content_length(&resp.headers).is_some() {
            let ledger = c.ledger.clone();
            let (m, v) = (self.module.clone(), version.clone());
            tokio::task::spawn_blocking(move || ledger.get(&m, &v, a))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        } else {
            None
        };
        match judge_header(
            &self.module,
            &version,
            a,
            upstream,
            &resp.headers,
            recorded.as_ref(),
        ) {
            Ok(check) => {
                self.check = Some(check);
                Ok(())
            }
            Err(refusal) => {
                match &refusal {
                    HeaderRefusal::Encoded(message) => self.refusal = Some(message.clone()),
                    HeaderRefusal::Changed(message) => self.refuse(c, message.clone(), counted),
                }
                Err(refusal)
            }
        }
    }

    /// A piece of the upstream's body; at its end, the ledger's verdict (the message is why
    /// the client is cut off and the object never stored; a refusal of changed bytes is counted
    /// on `counted`).
    pub fn body(
        &mut self,
        body: Option<&Bytes>,
        end_of_stream: bool,
        c: Option<&CacheRuntime>,
        upstream: &str,
        counted: &ProxyMetrics,
    ) -> Result<(), IntegrityFailure> {
        let Some(check) = self.check.as_mut() else {
            return Ok(());
        };
        if let Some(b) = body {
            check.update(b);
        }
        if !end_of_stream {
            return Ok(());
        }
        let (Some(check), Some(c)) = (self.check.take(), c) else {
            return Ok(());
        };
        // One indexed SQLite statement; kept off the other tasks of this worker thread.
        let ledger = c.ledger.clone();
        let finish = move || check.finish(&ledger, upstream);
        let result = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(finish),
            _ => finish(),
        };
        match result {
            Ok(_) => Ok(()),
            Err(failure) => {
                // Changed bytes are remembered, so the next request gets a 502 with this
                // reason; an invalid zip or a ledger failure is tried again next time.
                let message = failure.message().to_string();
                match failure {
                    IntegrityFailure::Changed(_) => self.refuse(c, message, counted),
                    IntegrityFailure::Invalid(_) | IntegrityFailure::Ledger(_) => {
                        log::error!("integrity: {message}");
                        self.refusal = Some(message);
                    }
                }
                Err(failure)
            }
        }
    }

    /// Refuses changed upstream bytes: quarantined (so the next request is a 502 with the
    /// reason unless the original is in the cache), counted and logged.
    fn refuse(&mut self, c: &CacheRuntime, message: String, counted: &ProxyMetrics) {
        if let Some((a, v)) = &self.key {
            c.quarantine.insert(
                &self.module,
                v,
                *a,
                cache::Quarantined {
                    message: message.clone(),
                },
            );
            counted.integrity_refused(*a);
        }
        log::error!("integrity: {message}");
        self.refusal = Some(message);
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
        let mut g = Guard::new("m.org/x", None);
        assert!(!g.exact());
        let b = Bytes::from_static(b"abc");
        assert_eq!(
            g.body(Some(&b), true, None, "up", &ProxyMetrics::default()),
            Ok(())
        );
        assert_eq!(g.refusal(), None);
    }
}
