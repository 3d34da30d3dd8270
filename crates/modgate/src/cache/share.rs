//! Whether an upstream answer may be shared between requesters: through the cache, and as an
//! artifact's first-seen bytes in the ledger.

/// Why an upstream answer must not be shared through the cache between requesters (nor pinned
/// in the ledger as an artifact's first-seen bytes); `None`: it may be.
///
/// The GOPROXY protocol has one representation per URL, so an answer that varies on anything
/// but the encoding, sets a cookie, or asks not to be stored or reused without revalidation
/// was made for one requester: an upstream that authorises per identity says so this way.
pub fn unshareable(headers: &http::HeaderMap) -> Option<&'static str> {
    let values = |name: http::header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if headers.contains_key(http::header::SET_COOKIE) {
        return Some("it sets a cookie");
    }
    let vary = values(http::header::VARY);
    if vary
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|f| !f.is_empty() && f != "accept-encoding")
    {
        return Some("it varies on a request header");
    }
    for v in values(http::header::CACHE_CONTROL) {
        for d in v.split(',').map(str::trim) {
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (d, None),
            };
            match name {
                "private" | "no-store" | "no-cache" => {
                    return Some("its Cache-Control forbids sharing");
                }
                "max-age" | "s-maxage" if value.is_some_and(|v| v.parse() == Ok(0u64)) => {
                    return Some("its Cache-Control forbids sharing");
                }
                _ => {}
            }
        }
    }
    if values(http::header::PRAGMA)
        .iter()
        .any(|v| v.split(',').any(|d| d.trim() == "no-cache"))
    {
        return Some("its Pragma forbids sharing");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::unshareable;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn what_is_never_shared() {
        let never: &[&[(&str, &str)]] = &[
            &[("Set-Cookie", "a=b")],
            &[("Vary", "Accept")],
            &[("Vary", "Accept-Encoding, X-Modgate-Identity")],
            &[("vary", "*")],
            &[("Cache-Control", "no-cache")],
            &[("Cache-Control", "public, no-cache=\"Set-Cookie\"")],
            &[("Cache-Control", "max-age=0")],
            &[("Cache-Control", "public, s-maxage=0")],
            &[("Cache-Control", "PRIVATE")],
            &[("Cache-Control", "no-store")],
            &[
                ("Cache-Control", "max-age=60"),
                ("Cache-Control", "private"),
            ],
            &[("Pragma", "no-cache")],
        ];
        for h in never {
            assert!(unshareable(&headers(h)).is_some(), "{h:?} was shareable");
        }
        let shared: &[&[(&str, &str)]] = &[
            &[],
            &[("Vary", "Accept-Encoding")],
            &[("Vary", "accept-encoding,")],
            &[("Cache-Control", "public, max-age=3600")],
            &[("Cache-Control", "max-age=10")],
            &[("Content-Type", "application/json")],
        ];
        for h in shared {
            assert_eq!(unshareable(&headers(h)), None, "{h:?}");
        }
    }
}
