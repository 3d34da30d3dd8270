//! Bad input never reaches an upstream: traversal, encoded separators, bad `!` encodings,
//! uppercase in the raw path, over-long paths and headers, non-GET methods, malformed
//! versions — each answered with a clear 4xx by modgate itself, over HTTP/1.1 (raw bytes, no
//! client-side normalisation) and HTTP/2 (curl, `--path-as-is`). The fixture upstream records
//! every request and must have seen none of them. Client credentials and identity headers on a
//! good request are not forwarded.

use std::net::SocketAddr;

use modgate_testkit::{
    curl, free_addr, raw_request, request, FixtureProxy, Gateway, ModuleVersion,
};

async fn setup() -> (FixtureProxy, Gateway, SocketAddr) {
    let fixture = FixtureProxy::start(&[
        ModuleVersion::new("example.com/Upper/x", "v1.0.0").expect("module"),
        ModuleVersion::new("example.com/x", "v1.0.0").expect("module"),
    ])
    .await
    .expect("fixture");
    let plain = free_addr();
    let config = format!(
        r#"
listeners:
  - {{ name: plain, address: "{plain}" }}
upstreams:
  fixture: {{ url: "{}" }}
routes:
  - {{ name: all, match: {{ prefix: "" }}, chain: [fixture] }}
"#,
        fixture.url()
    );
    let gw = Gateway::start(&config, plain);
    (fixture, gw, plain)
}

/// Requests that must be refused, with the status and a fragment of the one-line reason.
const REFUSED: &[(&str, u16, &str)] = &[
    ("/example.com/../@v/list", 400, "invalid"),
    ("/example.com/x/../../etc/passwd/@v/list", 400, "invalid"),
    ("/example.com/%2e%2e/@v/list", 400, "invalid"),
    ("/example.com/%2E%2E/x/@v/list", 400, "invalid"),
    ("/example.com%2Fx/@v/list", 400, "%2F"),
    ("/example.com%2fx/@v/list", 400, "%2F"),
    ("/example.com%5cx/@v/list", 400, "%5C"),
    ("/Example.com/x/@v/list", 400, "invalid escaped module path"),
    (
        "/example.com/Upper/x/@v/list",
        400,
        "invalid escaped module path",
    ),
    (
        "/example.com/!!upper/x/@v/list",
        400,
        "invalid escaped module path",
    ),
    (
        "/example.com/%21/x/@v/list",
        400,
        "invalid escaped module path",
    ),
    (
        "/example.com/x!/@v/list",
        400,
        "invalid escaped module path",
    ),
    ("/example.com/x/@v/v1.0.0.zip%00", 400, ""),
    ("/example.com/x/@v/%zz.info", 400, "encoding"),
    ("/example.com/x/@v/master.zip", 400, "canonical"),
    ("/example.com/x/@v/v1.0.mod", 400, "canonical"),
    ("/example.com/x/v2/@v/v1.0.0.mod", 400, "v2"),
    (
        "/example.com/x/@v/V1.0.0.info",
        400,
        "invalid escaped version",
    ),
    ("/example.com//x/@v/list", 400, "invalid"),
    ("/.example.com/x/@v/list", 400, "invalid"),
    ("/example.com/x/", 404, ""),
    ("/example.com/x/@v/", 404, ""),
    ("/example.com/x/@v/v1.0.0.tar", 404, ""),
    ("/", 404, ""),
    (
        "/sumdb/sum.golang.org/lookup/example.com/x@v1.0.0",
        404,
        "checksum database",
    ),
    ("/sumdb/sum.golang.org/supported", 404, "checksum database"),
    ("/example.com/x?go-get=1", 404, "go-get"),
];

#[tokio::test(flavor = "multi_thread")]
async fn bad_paths_are_refused_over_http1_and_never_forwarded() {
    let (fixture, gw, addr) = setup().await;
    for (path, status, reason) in REFUSED {
        let r = request(addr, "GET", path, &[]).expect("response");
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        let text = r.text();
        assert!(text.starts_with("modgate: "), "{path}: body {text:?}");
        assert_eq!(text.matches('\n').count(), 1, "{path}: one line: {text:?}");
        assert!(
            text.contains(reason),
            "{path}: {text:?} should mention {reason:?}"
        );
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    }
    // Over-long path: 414.
    let long = format!("/example.com/{}/@v/list", "a/".repeat(3000));
    let r = request(addr, "GET", &long, &[]).expect("response");
    assert_eq!(r.status, 414, "{}", r.text());
    // Non-GET methods: 405 with Allow.
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = request(
            addr,
            m,
            "/example.com/x/@v/list",
            &[("Content-Length", "0")],
        )
        .expect("response");
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    // A GET with a body is not a GOPROXY request (and is never forwarded).
    let smuggle = "GET /example.com/x/@v/list HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\
                   Connection: close\r\n\r\nGET /example.com/y/@v/list HTTP/1.1\r\n\r\n";
    let r = raw_request(addr, smuggle.as_bytes()).expect("response");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no body"), "{}", r.text());
    // An oversized header block is refused by the HTTP layer.
    let huge = format!(
        "GET /example.com/x/@v/list HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(2 << 20)
    );
    // Either a 4xx or the connection closed without an answer: refused both ways.
    if let Ok(r) = raw_request(addr, huge.as_bytes()) {
        assert!(
            (400..500).contains(&r.status),
            "oversized header: {}",
            r.status
        );
    }
    assert_eq!(
        fixture.request_count(),
        0,
        "the upstream saw refused requests: {:?}",
        fixture.requests()
    );
    // A good request still works afterwards, and the gateway is still up.
    let r = request(addr, "GET", "/example.com/%21upper/x/@v/list", &[]).expect("response");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.log());
    assert_eq!(r.text(), "v1.0.0\n");
    let r = request(addr, "HEAD", "/example.com/x/@v/v1.0.0.info", &[]).expect("response");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_paths_are_refused_over_http2() {
    let (fixture, _gw, addr) = setup().await;
    for (path, status, reason) in REFUSED {
        let r = curl(&[
            "--http2-prior-knowledge",
            "--path-as-is",
            &format!("http://{addr}{path}"),
        ]);
        assert_eq!(r.http_version, "2", "{path}: {r:?}");
        assert_eq!(r.status, *status, "{path}: {r:?}");
        assert!(r.body.contains(reason), "{path}: {r:?}");
    }
    assert_eq!(fixture.request_count(), 0, "{:?}", fixture.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_and_identity_headers_stay_behind() {
    let (fixture, _gw, addr) = setup().await;
    let spoof: &[(&str, &str)] = &[
        ("Authorization", "Basic YWxpY2U6c2VjcmV0"),
        ("Cookie", "session=abc"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("X-SSL-Client-DN", "CN=admin"),
        ("X-SSL-Client-Verify", "SUCCESS"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Accept", "application/json"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    let r = request(addr, "GET", "/example.com/x/@v/v1.0.0.info", spoof).expect("response");
    assert_eq!(r.status, 200, "{}", r.text());
    let h2 = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "x-ssl-client-cert: forged",
        "-H",
        "authorization: Bearer t0ken",
        &format!("http://{addr}/example.com/x/@v/v1.0.0.mod"),
    ]);
    assert_eq!(h2.status, 200, "{h2:?}");
    let seen = fixture.requests();
    assert_eq!(seen.len(), 2);
    for req in &seen {
        for banned in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "x-ssl-client-dn",
            "x-ssl-client-verify",
            "x-ssl-client-cert",
            "x-forwarded-for",
        ] {
            assert!(
                req.header(banned).is_none(),
                "{banned} reached the upstream: {req:?}"
            );
        }
    }
    // Trace headers pass; content negotiation does not (one client's Accept must never choose
    // the bytes the shared cache serves everyone: issue 8, tests/security.rs).
    assert_eq!(seen[0].header("accept"), None);
    assert!(seen[0].header("traceparent").is_some());
}
