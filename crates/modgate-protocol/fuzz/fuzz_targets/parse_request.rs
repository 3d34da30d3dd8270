//! cargo-fuzz target: `RequestParser::parse` must never panic on arbitrary
//! input, every accepted request must re-parse from its own canonical path,
//! and module-path / version escaping must round-trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modgate_protocol::{
    check_path, escape_path, escape_version, unescape_path, unescape_version, GoProxyRequest,
    RequestParser,
};

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);

    for prefix in ["", "/goproxy"] {
        let Ok(parser) = RequestParser::new(prefix) else {
            panic!("valid prefix {prefix:?} rejected");
        };
        match parser.parse(&input) {
            Ok(GoProxyRequest::Module(m)) => {
                assert!(check_path(&m.module).is_ok(), "{m:?}");
                let again = parser.parse(&format!("{}{}", parser.prefix(), m.upstream_path()));
                assert_eq!(again, Ok(GoProxyRequest::Module(m)));
            }
            Ok(GoProxyRequest::Sumdb(s)) => {
                let again = parser.parse(&format!("{}{}", parser.prefix(), s.proxy_path()));
                assert_eq!(again, Ok(GoProxyRequest::Sumdb(s)));
            }
            Ok(GoProxyRequest::GoGet { .. }) => {}
            Err(e) => {
                assert!(matches!(e.status(), 400 | 404 | 414), "{e:?}");
                assert!(!e.to_string().contains('\n'));
            }
        }
    }

    // Escaping round trips, in both directions.
    if let Ok(esc) = escape_path(&input) {
        assert_eq!(unescape_path(&esc).as_deref(), Ok(&*input));
    }
    if let Ok(path) = unescape_path(&input) {
        assert_eq!(escape_path(&path).as_deref(), Ok(&*input));
    }
    if let Ok(esc) = escape_version(&input) {
        assert_eq!(unescape_version(&esc).as_deref(), Ok(&*input));
    }
    if let Ok(v) = unescape_version(&input) {
        assert_eq!(escape_version(&v).as_deref(), Ok(&*input));
    }
});
