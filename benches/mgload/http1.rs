//! HTTP/1.1 for mgload: the request bytes, and reading one answer off a keep-alive
//! connection — head (httparse), then a body by Content-Length, chunked, or until the server
//! closes — discarding the body. Every loop is bounded by the bytes it may consume.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Read buffer size (also the largest head: [`MAX_HEAD`]).
const BUF: usize = MAX_HEAD;
/// Interim (1xx) answers skipped before the final one.
const MAX_INTERIM: usize = 8;
/// Headers per answer.
const MAX_HEADERS: usize = 96;
/// Chunks per chunked body, and trailer lines.
const MAX_CHUNKS: u64 = 1 << 32;

/// Why an exchange failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail {
    /// The connection broke or closed: the request is lost with it.
    Connection(String),
    /// The answer was not valid HTTP/1.1.
    Protocol(String),
}

/// One answer as far as the loader cares.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body bytes (after chunked decoding).
    pub body: u64,
    /// The connection cannot carry another request.
    pub close: bool,
}

/// `GET <path> HTTP/1.1` with Host and User-Agent.
pub fn request(authority: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: mgload\r\n\r\n").into_bytes()
}

/// A read buffer that keeps what follows an answer for the next one.
pub struct Reader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

enum Body {
    Length(u64),
    Chunked,
    UntilClose,
}

impl Reader {
    /// An empty reader.
    pub fn new() -> Reader {
        Reader {
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes after those held; Ok(0) at end of stream.
    async fn fill<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<usize, Fail> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(Fail::Protocol(format!(
                "answer head longer than {MAX_HEAD} bytes"
            )));
        }
        let n = io
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| Fail::Connection(format!("read: {e}")))?;
        self.end += n;
        Ok(n)
    }

    /// Discards up to `n` bytes held, returning how many.
    fn skip(&mut self, n: u64) -> u64 {
        let k = n.min((self.end - self.start) as u64);
        self.start += k as usize;
        k
    }

    /// Reads and discards exactly `n` bytes.
    async fn discard<R: AsyncRead + Unpin>(&mut self, io: &mut R, n: u64) -> Result<(), Fail> {
        let mut left = n - self.skip(n);
        // Each pass reads at least one byte or fails.
        while left > 0 {
            if self.fill(io).await? == 0 {
                return Err(Fail::Connection(format!(
                    "connection closed with {left} of {n} body bytes unread"
                )));
            }
            left -= self.skip(left);
        }
        Ok(())
    }

    /// Reads one CRLF-terminated line and returns it without the CRLF.
    async fn line<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Vec<u8>, Fail> {
        for _ in 0..=BUF {
            if let Some(i) = self.avail().windows(2).position(|w| w == b"\r\n") {
                let line = self.avail()[..i].to_vec();
                self.start += i + 2;
                return Ok(line);
            }
            if self.fill(io).await? == 0 {
                return Err(Fail::Connection(
                    "connection closed inside a chunked body".into(),
                ));
            }
        }
        Err(Fail::Protocol("chunked body line too long".into()))
    }

    /// Reads one final answer (skipping interim 1xx ones) and discards its body.
    pub async fn answer<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Answer, Fail> {
        for _ in 0..=MAX_INTERIM {
            let (status, body, close) = self.head(io).await?;
            if (100..200).contains(&status) {
                continue;
            }
            let n = match body {
                Body::Length(n) => {
                    self.discard(io, n).await?;
                    n
                }
                Body::Chunked => self.chunked(io).await?,
                Body::UntilClose => self.until_close(io).await?,
            };
            let close = close || matches!(body, Body::UntilClose);
            return Ok(Answer {
                status,
                body: n,
                close,
            });
        }
        Err(Fail::Protocol(format!(
            "more than {MAX_INTERIM} interim (1xx) answers"
        )))
    }

    /// Reads an answer head: status, body framing, whether the connection closes after it.
    async fn head<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<(u16, Body, bool), Fail> {
        // Each pass parses what is held or reads at least one more byte (at most BUF).
        for _ in 0..=BUF {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(self.avail()) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.unwrap_or(0);
                        let (body, close) = framing(&resp, status)?;
                        Some((status, body, close, n))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(e) => return Err(Fail::Protocol(format!("bad answer head: {e}"))),
                }
            };
            if let Some((status, body, close, n)) = parsed {
                self.start += n;
                return Ok((status, body, close));
            }
            let had = self.end - self.start;
            if self.fill(io).await? == 0 {
                return Err(Fail::Connection(if had == 0 {
                    "connection closed before the answer".into()
                } else {
                    "connection closed inside the answer head".into()
                }));
            }
        }
        Err(Fail::Protocol("answer head read in too many pieces".into()))
    }

    async fn chunked<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<u64, Fail> {
        let mut total = 0u64;
        for _ in 0..MAX_CHUNKS {
            let line = self.line(io).await?;
            let text = std::str::from_utf8(&line)
                .map_err(|_| Fail::Protocol("chunk size line is not text".into()))?;
            let hex = text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(hex, 16)
                .map_err(|_| Fail::Protocol(format!("bad chunk size {hex:?}")))?;
            if size == 0 {
                // Trailer lines up to an empty one.
                for _ in 0..MAX_HEADERS {
                    if self.line(io).await?.is_empty() {
                        return Ok(total);
                    }
                }
                return Err(Fail::Protocol("too many trailer lines".into()));
            }
            self.discard(io, size).await?;
            total += size;
            if !self.line(io).await?.is_empty() {
                return Err(Fail::Protocol("chunk data not followed by CRLF".into()));
            }
        }
        Err(Fail::Protocol("too many chunks".into()))
    }

    async fn until_close<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<u64, Fail> {
        let mut total = self.skip(u64::MAX);
        // Ends at end of stream (each pass reads at least one byte); bounded like a body.
        for _ in 0..MAX_CHUNKS {
            if self.fill(io).await? == 0 {
                return Ok(total);
            }
            total += self.skip(u64::MAX);
        }
        Err(Fail::Protocol("body without length never ended".into()))
    }
}

/// How the body of an answer is delimited, and whether the connection closes after it.
fn framing(resp: &httparse::Response<'_, '_>, status: u16) -> Result<(Body, bool), Fail> {
    let mut close = resp.version == Some(0);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| Fail::Protocol(format!("bad Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(Fail::Protocol("two different Content-Lengths".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in value.split(',') {
                let t = t.trim();
                if t.eq_ignore_ascii_case("close") {
                    close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") && resp.version == Some(0) {
                    close = false;
                }
            }
        }
    }
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Body::Length(0)
    } else if chunked {
        Body::Chunked
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    Ok((body, close))
}

/// Sends one request and reads its answer.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    reader: &mut Reader,
    request: &[u8],
) -> Result<Answer, Fail> {
    io.write_all(request)
        .await
        .map_err(|e| Fail::Connection(format!("write: {e}")))?;
    io.flush()
        .await
        .map_err(|e| Fail::Connection(format!("write: {e}")))?;
    reader.answer(io).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads answers off `bytes` as the server's side of a connection.
    async fn answers(bytes: &[u8], n: usize) -> Vec<Result<Answer, Fail>> {
        let mut io = bytes;
        let mut r = Reader::new();
        let mut out = Vec::new();
        for _ in 0..n {
            let a = r.answer(&mut io).await;
            let stop = a.is_err();
            out.push(a);
            if stop {
                break;
            }
        }
        out
    }

    fn ok(status: u16, body: u64, close: bool) -> Result<Answer, Fail> {
        Ok(Answer {
            status,
            body,
            close,
        })
    }

    #[tokio::test]
    async fn keep_alive_answers_back_to_back() {
        let got = answers(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n\
              HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            5,
        )
        .await;
        assert_eq!(
            got,
            [
                ok(200, 5, false),
                ok(404, 0, false),
                ok(204, 0, false),
                ok(200, 2, true),
                Err(Fail::Connection(
                    "connection closed before the answer".into()
                ))
            ]
        );
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        let got = answers(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n\
              HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
            2,
        )
        .await;
        assert_eq!(got, [ok(200, 15, false), ok(200, 1, false)]);
    }

    #[tokio::test]
    async fn body_until_close_and_http10() {
        assert_eq!(
            answers(b"HTTP/1.1 200 OK\r\n\r\nabcdef", 1).await,
            [ok(200, 6, true)]
        );
        assert_eq!(
            answers(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 1).await,
            [ok(200, 1, true)]
        );
        assert_eq!(
            answers(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
                1
            )
            .await,
            [ok(200, 1, false)]
        );
    }

    #[tokio::test]
    async fn broken_answers_are_errors_not_panics() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "5 of 10",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Len", "inside the answer head"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "bad answer head"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "two different",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "bad chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
                "not followed by CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "3 of 5",
            ),
        ];
        for (bytes, want) in cases {
            let got = answers(bytes, 1).await;
            match &got[..] {
                [Err(Fail::Connection(m) | Fail::Protocol(m))] => {
                    assert!(
                        m.contains(want),
                        "{:?}: {m}",
                        String::from_utf8_lossy(bytes)
                    )
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
            }
        }
        let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'v', 70_000));
        huge.extend_from_slice(b"\r\n\r\n");
        match &answers(&huge, 1).await[..] {
            [Err(Fail::Protocol(m))] => assert!(m.contains("longer than"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn large_body_spans_many_reads() {
        let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'z', 1_000_000));
        bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            answers(&bytes, 2).await,
            [ok(200, 1_000_000, false), ok(200, 0, false)]
        );
    }

    #[test]
    fn request_bytes() {
        assert_eq!(
            request("127.0.0.1:8443", "/a/@v/list"),
            b"GET /a/@v/list HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nUser-Agent: mgload\r\n\r\n"
        );
    }
}
