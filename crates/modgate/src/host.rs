//! The host a request names: one reader for every use (the admin endpoint's and the agent's
//! own-host check, the `.netrc` hint, a `?go-get=1` path without a host, the go-import page's
//! base URL), so they cannot disagree about which header counts.

/// The host (and port) a request names: the request target's authority (HTTP/2 `:authority`,
/// HTTP/1.1 absolute-form) if it has one, else the `Host` header; `None` when it names none
/// or names two different ones.
///
/// The authority comes first (RFC 9113 §8.3.1, RFC 9112 §3.2.2); a `Host` header that
/// disagrees with it makes the request ambiguous (RFC 9113 §8.3.1 calls it malformed), and an
/// ambiguous request names no host rather than the one a check would rather see. Pingora
/// already refuses such requests before modgate sees them (both protocol versions); this
/// keeps the reader safe without relying on that.
pub fn request_host(head: &http::request::Parts) -> Option<&str> {
    let header = head.headers.get(http::header::HOST);
    let header = match header {
        Some(h) => Some(h.to_str().ok()?),
        None => None,
    };
    match (head.uri.authority().map(|a| a.as_str()), header) {
        (Some(authority), Some(host)) if authority != host => None,
        (Some(authority), _) => Some(authority),
        (None, host) => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, host: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().uri(target);
        if let Some(h) = host {
            b = b.header("Host", h);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn the_authority_or_the_host_header_never_a_disagreement() {
        // HTTP/1.1 origin-form: the Host header.
        assert_eq!(request_host(&head("/x", Some("gw:8443"))), Some("gw:8443"));
        // HTTP/2: `:authority`, with or without a Host header that agrees.
        assert_eq!(
            request_host(&head("https://gw:8443/x", None)),
            Some("gw:8443")
        );
        assert_eq!(
            request_host(&head("https://gw:8443/x", Some("gw:8443"))),
            Some("gw:8443")
        );
        // Two different hosts: neither is believed.
        assert_eq!(
            request_host(&head("http://127.0.0.1:7070/x", Some("evil.example"))),
            None
        );
        assert_eq!(
            request_host(&head("http://evil.example/x", Some("127.0.0.1:7070"))),
            None
        );
        // None named, or a Host header that is not text.
        assert_eq!(request_host(&head("/x", None)), None);
        let mut h = head("/x", None);
        h.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_bytes(b"gw\xff").expect("value"),
        );
        assert_eq!(request_host(&h), None);
    }
}
