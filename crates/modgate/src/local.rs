//! Requests only this host's own tools may make (the agent's forwarding, the admin endpoint):
//! a loopback peer is not enough, because a web page can reach a loopback port too (DNS
//! rebinding names it with a foreign `Host`; a cross-site `fetch` carries `Origin` or
//! `Sec-Fetch-*`). Pure functions over the request head, shared by the agent and the gateway.

use std::net::SocketAddr;

/// The `Host` values that name a server listening on `listen`.
pub fn allowed_hosts(listen: SocketAddr) -> Vec<String> {
    let port = listen.port();
    let mut hosts = vec![
        listen.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    if port == 80 {
        hosts.extend(["localhost".into(), "127.0.0.1".into(), "[::1]".into()]);
    }
    hosts
}

/// Why a request is not one of this host's own tools talking to `listen`; `None` when it is.
/// An empty `allowed` list accepts any `Host` (the agent's `--allow-remote`).
pub fn refusal(req: &http::request::Parts, allowed: &[String], what: &str) -> Option<String> {
    let host = crate::host::request_host(req).unwrap_or("");
    let browser = req.headers.contains_key(http::header::ORIGIN)
        || req.headers.contains_key("sec-fetch-site")
        || req.headers.contains_key("sec-fetch-mode");
    if !allowed.is_empty() && !allowed.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        let own = allowed.first().map(String::as_str).unwrap_or("");
        return Some(format!(
            "{what}: Host {host:?} is not this server's address (use http://{own})"
        ));
    }
    if browser {
        return Some(format!("{what}: requests from web pages are refused"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(host: &str, extra: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder()
            .uri("/admin/cache/purge")
            .header("Host", host);
        for (n, v) in extra {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn own_host_only_and_no_browsers() {
        let listen: SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        let ok = allowed_hosts(listen);
        for h in [
            "127.0.0.1:7070",
            "localhost:7070",
            "LOCALHOST:7070",
            "[::1]:7070",
        ] {
            assert_eq!(refusal(&parts(h, &[]), &ok, "admin"), None, "{h}");
        }
        for h in ["evil.example:7070", "127.0.0.1:80", ""] {
            let r = refusal(&parts(h, &[]), &ok, "admin").expect(h);
            assert!(r.contains("is not this server's address"), "{r}");
        }
        for header in ["Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode"] {
            let r = refusal(&parts("127.0.0.1:7070", &[(header, "x")]), &ok, "admin");
            assert!(r.is_some_and(|r| r.contains("web pages")), "{header}");
        }
        assert_eq!(refusal(&parts("anything", &[]), &[], "agent"), None);
    }
}
