//! Test clients: raw HTTP/1.1 over TCP (bytes sent exactly as written, so traversal and bad
//! encodings reach the server unnormalised) and `curl` for HTTP/2 and TLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// The first value of a header in a list of lower-cased `(name, value)` pairs.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sends `request` bytes as-is on a new connection and reads one response (the request
/// should carry `Connection: close`).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request)?;
    let mut data = Vec::new();
    s.read_to_end(&mut data)?;
    parse_response(&data)
}

/// `GET path` over HTTP/1.1 with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request(addr, "GET", path, &[])
}

/// A request with a method, a raw path and extra header lines.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes())
}

fn parse_response(data: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no response head"))?;
    let head = String::from_utf8_lossy(&data[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = data[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// The result of a curl run.
#[derive(Debug)]
pub struct CurlResult {
    pub status: u16,
    /// "1.1" or "2".
    pub http_version: String,
    pub body: String,
    pub stderr: String,
}

/// Runs `curl` with `args` plus options that print the status and HTTP version; the body
/// goes to a file so it can be returned separately.
pub fn curl(args: &[&str]) -> CurlResult {
    let body_file = tempfile::NamedTempFile::new().expect("tempfile");
    let body_path = body_file.path().to_string_lossy().to_string();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-o",
            &body_path,
            "-w",
            "%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl is installed");
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = w.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = parts.next().unwrap_or("").to_string();
    CurlResult {
        status,
        http_version,
        body: std::fs::read_to_string(&body_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// The value of one sample of a gateway's `/metrics` (`series` is the whole name with labels,
/// as exposed: `modgate_x_total{a="b"}`); 0 when the series is absent.
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    get(addr, "/metrics")
        .map(|r| {
            r.text()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(series)
                        .filter(|rest| rest.starts_with(' '))
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0.0)
        })
        .unwrap_or(0.0)
}
