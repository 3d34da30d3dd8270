//! The checksum database's protocol answers, the same as Go's `sumdb.Server`
//! (`golang.org/x/mod/sumdb/server.go`) for the paths under `/sumdb/<name>/`: status, content
//! type and body, plus the `Cache-Control` this log chooses. A lookup of a version not in the
//! log is not answered here: it is [`Answer::NotLogged`], so the gateway can fetch, verify and
//! append the version and ask again (or answer [`Response::not_found`] itself).
//!
//! Where this differs from `server.go`, on purpose:
//! * `/supported` is answered `200` with an empty body (the GOPROXY protocol's "this proxy
//!   serves this checksum database"; `server.go` has no such path).
//! * Only tiles of height 8 (what the `go` command uses) are served; other heights, and tiles
//!   the latest signed tree does not have yet, are `404`. (`server.go` hands any height to its
//!   backend; a height-20 data tile would read a million records.)
//!
//! Errors are written as Go's `http.Error` writes them: `text/plain; charset=utf-8`, the
//! message and a newline (Go also sets `X-Content-Type-Options: nosniff`; the gateway should
//! too on non-200 answers).

use bytes::Bytes;
use modgate_tlog::{format_record, Tile, TILE_HEIGHT};

use crate::entry::split_lookup;
use crate::{Error, LogStore};

/// `Content-Type` of `/latest`, `/lookup/` and data tiles (as `server.go` sets it).
pub const TEXT: &str = "text/plain; charset=UTF-8";
/// `Content-Type` of hash tiles.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// `Content-Type` of error answers (Go's `http.Error`).
pub const ERROR_TEXT: &str = "text/plain; charset=utf-8";

/// `Cache-Control` of full tiles: their contents never change.
pub const CACHE_FULL_TILE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of partial tiles: their contents never change either (the first `W` hashes
/// or records are fixed), but a wider tile supersedes them soon; an hour keeps caches from
/// holding every width for long.
pub const CACHE_PARTIAL_TILE: &str = "public, max-age=3600";
/// `Cache-Control` of `/latest` and `/lookup/`: they carry the latest signed head, which
/// changes with every batch, so caches must revalidate (a stale head is not wrong — it is
/// consistent — but would hide newly logged versions).
pub const CACHE_LATEST: &str = "no-cache";
/// `Cache-Control` of `/supported`.
pub const CACHE_SUPPORTED: &str = "public, max-age=3600";
/// `Cache-Control` of errors (404 for a tile not there yet must not stick).
pub const CACHE_ERROR: &str = "no-store";

/// An HTTP answer: what to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status (200, 400, 404, 500).
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The `Cache-Control`.
    pub cache_control: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Response {
    fn ok(content_type: &'static str, cache_control: &'static str, body: Bytes) -> Response {
        Response {
            status: 200,
            content_type,
            cache_control,
            body,
        }
    }

    /// An error answer as Go's `http.Error(w, msg, status)`: the message and a newline.
    pub fn error(status: u16, msg: &str) -> Response {
        Response {
            status,
            content_type: ERROR_TEXT,
            cache_control: CACHE_ERROR,
            body: Bytes::from(format!("{msg}\n")),
        }
    }

    /// The `404` for a lookup the gateway will not log (`server.go` answers a `Lookup` that
    /// fails with a not-exist error with its message).
    pub fn not_found(msg: &str) -> Response {
        Response::error(404, msg)
    }
}

/// The answer to a checksum-database request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send this.
    Response(Response),
    /// `/lookup/<path>@<version>` of a version not in the log (path and version unescaped).
    /// The gateway fetches the module, checks it, appends it and calls [`answer`] again, or
    /// sends [`Response::not_found`].
    NotLogged {
        /// The module path.
        path: String,
        /// The version.
        version: String,
    },
}

impl From<Response> for Answer {
    fn from(r: Response) -> Answer {
        Answer::Response(r)
    }
}

/// Answers `sub_path`, the request path after `/sumdb/<name>` (so it starts with `/`:
/// `/latest`, `/lookup/golang.org/x/text@v0.3.0`, `/tile/8/0/x001/234.p/5`), already
/// percent-decoded as Go's `r.URL.Path` is.
pub fn answer(log: &dyn LogStore, sub_path: &str) -> Answer {
    if sub_path == "/supported" {
        return Response::ok(TEXT, CACHE_SUPPORTED, Bytes::new()).into();
    }
    if sub_path == "/latest" {
        return match log.signed_head() {
            Ok(head) => Response::ok(TEXT, CACHE_LATEST, Bytes::from(head)).into(),
            Err(e) => failure(&e).into(),
        };
    }
    if let Some(module) = sub_path.strip_prefix("/lookup/") {
        return lookup(log, module);
    }
    if sub_path.starts_with("/tile/") {
        return tile(log, &sub_path[1..]).into();
    }
    Response::error(404, "404 page not found").into()
}

fn lookup(log: &dyn LogStore, module: &str) -> Answer {
    let Some((esc_path, esc_version)) = split_lookup(module) else {
        return Response::error(400, "invalid module@version syntax").into();
    };
    // server.go's reportError: these errors are not "not exist", so 500.
    let path = match modgate_protocol::unescape_path(esc_path) {
        Ok(p) => p,
        Err(e) => return Response::error(500, &e.to_string()).into(),
    };
    let version = match modgate_protocol::unescape_version(esc_version) {
        Ok(v) => v,
        Err(e) => return Response::error(500, &e.to_string()).into(),
    };
    match log.lookup_record(&path, &version) {
        Ok(Some(found)) => match format_record(found.id, &found.text) {
            Ok(mut body) => {
                body.extend_from_slice(&found.signed_head);
                Response::ok(TEXT, CACHE_LATEST, Bytes::from(body)).into()
            }
            Err(e) => Response::error(500, &e.to_string()).into(),
        },
        Ok(None) => Answer::NotLogged { path, version },
        Err(e) => failure(&e).into(),
    }
}

fn tile(log: &dyn LogStore, path: &str) -> Response {
    let Ok(tile) = Tile::parse(path) else {
        return Response::error(400, "invalid tile syntax");
    };
    if tile.h != TILE_HEIGHT {
        return Response::not_found(&format!("not found: {path}: only tiles of height 8"));
    }
    match log.tile(&tile) {
        Ok(body) => {
            let content_type = if tile.is_data() { TEXT } else { OCTET_STREAM };
            let cache = if tile.is_full() {
                CACHE_FULL_TILE
            } else {
                CACHE_PARTIAL_TILE
            };
            Response::ok(content_type, cache, body)
        }
        Err(e @ Error::NotInTree { .. }) => Response::not_found(&format!("not found: {e}")),
        Err(e) => failure(&e),
    }
}

/// The answer to a failed read: `503` when the store holding the log is away (a cluster's
/// PostgreSQL: the client may retry), else `500` as `sumdb.Server` answers.
fn failure(e: &Error) -> Response {
    match e {
        Error::Store { .. } => Response::error(503, &e.to_string()),
        _ => Response::error(500, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{h1, signer};
    use crate::Log;

    /// A store whose database is away.
    #[derive(Debug)]
    struct Away(Log);

    impl LogStore for Away {
        fn describe(&self) -> String {
            "PostgreSQL 10.0.0.5:5432/modgate".into()
        }
        fn verifier(&self) -> &modgate_tlog::Verifier {
            self.0.verifier()
        }
        fn append(&self, _: &[crate::Entry]) -> Result<crate::Batch, Error> {
            Err(self.down())
        }
        fn lookup_record(&self, _: &str, _: &str) -> Result<Option<crate::LookupRecord>, Error> {
            Err(self.down())
        }
        fn head(&self) -> Result<crate::Head, Error> {
            Err(self.down())
        }
        fn heads(&self) -> Result<Vec<crate::Head>, Error> {
            Err(self.down())
        }
        fn records(&self, _: u64, _: u64) -> Result<Vec<Vec<u8>>, Error> {
            Err(self.down())
        }
        fn tile(&self, _: &Tile) -> Result<Bytes, Error> {
            Err(self.down())
        }
        fn tile_cache_stats(&self) -> crate::TileCacheStats {
            crate::TileCacheStats::default()
        }
    }

    impl Away {
        fn down(&self) -> Error {
            Error::Store {
                store: self.describe(),
                op: "reading".into(),
                detail: "connection refused".into(),
            }
        }
    }

    #[test]
    fn a_store_that_is_away_is_a_503_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            Away(Log::open(&dir.path().join("sumdb.db"), signer("sum.corp.example")).unwrap());
        for sub in [
            "/latest",
            "/lookup/example.com/m@v1.0.0",
            "/tile/8/0/000.p/1",
        ] {
            let Answer::Response(r) = answer(&log, sub) else {
                panic!("{sub}: not a response");
            };
            assert_eq!(r.status, 503, "{sub}");
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                body.contains("PostgreSQL 10.0.0.5:5432/modgate"),
                "{sub}: {body}"
            );
        }
    }

    fn response(a: Answer) -> Response {
        match a {
            Answer::Response(r) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    #[test]
    fn answers_every_endpoint_as_server_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&dir.path().join("sumdb.db"), signer("sum.corp.example")).unwrap();
        let text = log
            .append_one("example.com/Big", "v1.0.0", &h1("zip"), &h1("mod"))
            .map(|id| (id, log.records(id, 1).unwrap().remove(0)))
            .unwrap();

        let supported = response(answer(&log, "/supported"));
        assert_eq!((supported.status, supported.body.len()), (200, 0));

        let latest = response(answer(&log, "/latest"));
        assert_eq!(latest.status, 200);
        assert_eq!(latest.content_type, TEXT);
        assert_eq!(latest.cache_control, CACHE_LATEST);
        assert_eq!(latest.body, log.signed_head().unwrap());

        let found = response(answer(&log, "/lookup/example.com/!big@v1.0.0"));
        assert_eq!(found.status, 200);
        let mut want = format_record(text.0, &text.1).unwrap();
        want.extend(log.signed_head().unwrap());
        assert_eq!(found.body, want);

        assert_eq!(
            answer(&log, "/lookup/example.com/!big@v1.0.1"),
            Answer::NotLogged {
                path: "example.com/Big".into(),
                version: "v1.0.1".into()
            }
        );
        for (path, status, body) in [
            (
                "/lookup/example.com/big",
                400,
                "invalid module@version syntax\n",
            ),
            (
                "/lookup/example.com/big@1.0.0",
                400,
                "invalid module@version syntax\n",
            ),
            (
                "/lookup/example.com/Big@v1.0.0",
                500,
                "invalid escaped module path \"example.com/Big\"\n",
            ),
            ("/tile/8/0/00", 400, "invalid tile syntax\n"),
            ("/tile/", 400, "invalid tile syntax\n"),
            ("/latest/", 404, "404 page not found\n"),
            ("/", 404, "404 page not found\n"),
        ] {
            let r = response(answer(&log, path));
            assert_eq!((r.status, &r.body[..]), (status, body.as_bytes()), "{path}");
            assert_eq!(r.content_type, ERROR_TEXT);
            assert_eq!(r.cache_control, CACHE_ERROR);
        }

        let data = response(answer(&log, "/tile/8/data/000.p/1"));
        assert_eq!((data.status, data.content_type), (200, TEXT));
        assert_eq!(data.cache_control, CACHE_PARTIAL_TILE);
        assert_eq!(data.body, format_record(0, &text.1).unwrap());
        let hashes = response(answer(&log, "/tile/8/0/000.p/1"));
        assert_eq!((hashes.status, hashes.content_type), (200, OCTET_STREAM));
        assert_eq!(hashes.body.len(), 32);
        for beyond in [
            "/tile/8/0/000.p/2",
            "/tile/8/0/000",
            "/tile/8/1/000.p/1",
            "/tile/4/0/000.p/1",
        ] {
            assert_eq!(response(answer(&log, beyond)).status, 404, "{beyond}");
        }
    }

    #[test]
    fn full_tiles_are_immutable_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&dir.path().join("sumdb.db"), signer("sum.corp.example")).unwrap();
        let entries: Vec<_> = (0..256)
            .map(|i| {
                crate::Entry::new(&format!("example.com/m{i}"), "v1.0.0", &h1("z"), &h1("m"))
                    .unwrap()
            })
            .collect();
        log.append(&entries).unwrap();
        for _ in 0..2 {
            let r = response(answer(&log, "/tile/8/0/000"));
            assert_eq!((r.status, r.cache_control), (200, CACHE_FULL_TILE));
            assert_eq!(r.body.len(), 256 * 32);
        }
        let stats = log.tile_cache_stats();
        assert_eq!((stats.hits, stats.entries), (1, 1), "{stats:?}");
        let level1 = response(answer(&log, "/tile/8/1/000.p/1"));
        assert_eq!(level1.status, 200);
    }
}
