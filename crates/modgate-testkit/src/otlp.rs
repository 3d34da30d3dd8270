//! An in-test OTLP trace receiver on 127.0.0.1: OTLP/HTTP (`POST /v1/traces`, protobuf,
//! HTTP/1.1 keep-alive) on one ephemeral port and OTLP/gRPC (h2c prior knowledge,
//! `TraceService/Export`) on another. Request bodies are really decoded with the
//! `opentelemetry-proto` message types, so tests see exactly what an exporter put on the wire.
//!
//! Like the other testkit servers it needs no ambient runtime: [`OtlpReceiver::start`] runs it
//! on its own thread with its own tokio runtime, and dropping the receiver stops it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The gRPC method path of the OTLP trace export call.
pub const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Largest request body accepted (bigger requests get 413 / RESOURCE_EXHAUSTED).
const MAX_BODY: usize = 16 << 20;

/// One span as decoded by the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    pub name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// OTLP `SpanKind` (2 = SERVER).
    pub kind: i32,
    /// OTLP `Status.code` (0 = UNSET, 1 = OK, 2 = ERROR).
    pub status_code: i32,
    pub status_message: String,
    /// Span attributes, every value rendered as a string.
    pub attributes: BTreeMap<String, String>,
    /// Resource attributes of the span's `ResourceSpans`.
    pub resource: BTreeMap<String, String>,
    /// `"http"` or `"grpc"`.
    pub transport: &'static str,
}

/// One export request as received (whether or not it decoded).
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// `"http"` or `"grpc"`.
    pub transport: &'static str,
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Spans decoded from it (0 if it did not decode).
    pub span_count: usize,
}

#[derive(Default)]
struct Store {
    spans: Vec<ReceivedSpan>,
    requests: Vec<ReceivedRequest>,
}

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, request: ReceivedRequest, spans: Vec<ReceivedSpan>) {
        let mut st = self.lock();
        st.requests.push(request);
        st.spans.extend(spans);
        drop(st);
        self.changed.notify_all();
    }
}

/// A running OTLP receiver; stops when dropped.
pub struct OtlpReceiver {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("http", &self.http_addr)
            .field("grpc", &self.grpc_addr)
            .finish()
    }
}

impl OtlpReceiver {
    /// Starts the receiver; panics (test support) if 127.0.0.1 cannot be bound.
    pub fn start() -> OtlpReceiver {
        Self::try_start().unwrap_or_else(|e| panic!("cannot start the OTLP receiver: {e}"))
    }

    /// Starts the receiver.
    pub fn try_start() -> io::Result<OtlpReceiver> {
        let http = std::net::TcpListener::bind("127.0.0.1:0")?;
        let grpc = std::net::TcpListener::bind("127.0.0.1:0")?;
        http.set_nonblocking(true)?;
        grpc.set_nonblocking(true)?;
        let http_addr = http.local_addr()?;
        let grpc_addr = grpc.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("otlp-receiver".into())
                .spawn(move || {
                    rt.block_on(async move {
                        let (Ok(http), Ok(grpc)) =
                            (TcpListener::from_std(http), TcpListener::from_std(grpc))
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = stop_rx => {}
                            _ = accept_loop(http, shared.clone(), Transport::Http) => {}
                            _ = accept_loop(grpc, shared, Transport::Grpc) => {}
                        }
                    });
                    // Dropping the runtime here closes every connection.
                })?
        };
        Ok(OtlpReceiver {
            http_addr,
            grpc_addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// OTLP/HTTP base endpoint, `http://127.0.0.1:<port>` (traces go to `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// OTLP/gRPC endpoint, `http://127.0.0.1:<port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.lock().spans.clone()
    }

    /// Every export request received so far.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Waits until at least `n` spans arrived or `timeout` passed; returns what arrived.
    pub fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while st.spans.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = match self.shared.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        st.spans.clone()
    }

    /// Forgets received spans and requests.
    pub fn clear(&self) {
        let mut st = self.shared.lock();
        st.spans.clear();
        st.requests.clear();
    }
}

#[derive(Clone, Copy)]
enum Transport {
    Http,
    Grpc,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, transport: Transport) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            match transport {
                Transport::Http => serve_http(stream, shared).await,
                Transport::Grpc => serve_grpc(stream, shared).await,
            }
        });
    }
}

// ------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render(v: &AnyValue) -> String {
    match &v.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(a)) => format!(
            "[{}]",
            a.values.iter().map(render).collect::<Vec<_>>().join(", ")
        ),
        Some(any_value::Value::KvlistValue(kv)) => format!(
            "{{{}}}",
            kv.values
                .iter()
                .map(|kv| format!(
                    "{}={}",
                    kv.key,
                    kv.value.as_ref().map(render).unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(any_value::Value::StringValueStrindex(i)) => format!("strindex:{i}"),
    }
}

fn attr_map(attrs: &[KeyValue]) -> BTreeMap<String, String> {
    attrs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(render).unwrap_or_default(),
            )
        })
        .collect()
}

/// Decodes an `ExportTraceServiceRequest` into flat spans.
fn decode_spans(
    body: &[u8],
    transport: &'static str,
) -> Result<Vec<ReceivedSpan>, prost::DecodeError> {
    let req = ExportTraceServiceRequest::decode(body)?;
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attr_map(&r.attributes))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    kind: s.kind,
                    status_code: s.status.as_ref().map_or(0, |st| st.code),
                    status_message: s
                        .status
                        .as_ref()
                        .map(|st| st.message.clone())
                        .unwrap_or_default(),
                    attributes: attr_map(&s.attributes),
                    resource: resource.clone(),
                    transport,
                    name: s.name,
                });
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// OTLP/HTTP (HTTP/1.1)
// ------------------------------------------------------------------------------------------

struct HttpReply {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    close: bool,
}

impl HttpReply {
    fn text(status: u16, reason: &'static str, msg: &str) -> HttpReply {
        HttpReply {
            status,
            reason,
            content_type: "text/plain",
            body: format!("{msg}\n").into_bytes(),
            close: false,
        }
    }
}

async fn serve_http(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let head_len = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            if buf.len() > 64 << 10 {
                return;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(
            req.parse(&buf[..head_len]),
            Ok(httparse::Status::Complete(_))
        ) {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        let method = req.method.unwrap_or("").to_string();
        let path = req.path.unwrap_or("").to_string();
        let hdrs: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).trim().to_string(),
                )
            })
            .collect();
        buf.drain(..head_len);
        let header = |name: &str| {
            hdrs.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let reply = if header("transfer-encoding").is_some() {
            HttpReply {
                close: true,
                ..HttpReply::text(501, "Not Implemented", "chunked bodies are not supported")
            }
        } else {
            let len = match header("content-length").map(str::parse::<usize>) {
                None => 0,
                Some(Ok(n)) if n <= MAX_BODY => n,
                Some(Ok(_)) => {
                    let r = HttpReply::text(413, "Payload Too Large", "body too large");
                    let _ = write_reply(&mut stream, HttpReply { close: true, ..r }).await;
                    return;
                }
                Some(Err(_)) => {
                    let r = HttpReply::text(400, "Bad Request", "bad content-length");
                    let _ = write_reply(&mut stream, HttpReply { close: true, ..r }).await;
                    return;
                }
            };
            while buf.len() < len {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Vec<u8> = buf.drain(..len).collect();
            handle_http(&method, &path, &hdrs, &body, &shared)
        };
        let close = close || reply.close;
        if write_reply(&mut stream, HttpReply { close, ..reply })
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

fn handle_http(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    shared: &Shared,
) -> HttpReply {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let route = path.split('?').next().unwrap_or("");
    if route != "/v1/traces" {
        return HttpReply::text(404, "Not Found", "only /v1/traces is served");
    }
    if method != "POST" {
        return HttpReply::text(405, "Method Not Allowed", "POST only");
    }
    let content_type = header("content-type")
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if content_type != "application/x-protobuf" {
        return HttpReply::text(
            415,
            "Unsupported Media Type",
            "expected application/x-protobuf",
        );
    }
    if header("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return HttpReply::text(
            415,
            "Unsupported Media Type",
            "compressed bodies unsupported",
        );
    }
    let decoded = decode_spans(body, "http");
    shared.record(
        ReceivedRequest {
            transport: "http",
            path: path.to_string(),
            headers: headers.to_vec(),
            span_count: decoded.as_ref().map_or(0, Vec::len),
        },
        decoded.as_ref().cloned().unwrap_or_default(),
    );
    match decoded {
        Ok(_) => HttpReply {
            status: 200,
            reason: "OK",
            content_type: "application/x-protobuf",
            body: ExportTraceServiceResponse::default().encode_to_vec(),
            close: false,
        },
        Err(e) => HttpReply::text(400, "Bad Request", &format!("undecodable request: {e}")),
    }
}

async fn write_reply(stream: &mut TcpStream, r: HttpReply) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n{}\r\n",
        r.status,
        r.reason,
        r.content_type,
        r.body.len(),
        if r.close { "connection: close\r\n" } else { "" }
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&r.body).await?;
    stream.flush().await
}

// ------------------------------------------------------------------------------------------
// OTLP/gRPC (h2c)
// ------------------------------------------------------------------------------------------

/// gRPC status codes used here.
const GRPC_OK: u32 = 0;
const GRPC_INVALID_ARGUMENT: u32 = 3;
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;
const GRPC_UNIMPLEMENTED: u32 = 12;
const GRPC_INTERNAL: u32 = 13;

async fn serve_grpc(stream: TcpStream, shared: Arc<Shared>) {
    let Ok(mut conn) = h2::server::handshake(stream).await else {
        return;
    };
    while let Some(next) = conn.accept().await {
        let Ok((req, respond)) = next else { return };
        let shared = shared.clone();
        tokio::spawn(async move {
            handle_grpc(req, respond, shared).await;
        });
    }
}

/// Answers with headers only (`grpc-status` != 0), ending the stream.
fn grpc_error(respond: &mut h2::server::SendResponse<Bytes>, code: u32, msg: &str) {
    let resp = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", code.to_string())
        .header(
            "grpc-message",
            msg.replace(|c: char| !c.is_ascii_graphic() && c != ' ', "?"),
        )
        .body(());
    if let Ok(resp) = resp {
        let _ = respond.send_response(resp, true);
    }
}

async fn handle_grpc(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    shared: Arc<Shared>,
) {
    let (parts, mut body) = req.into_parts();
    if parts.method != http::Method::POST || parts.uri.path() != GRPC_EXPORT_PATH {
        grpc_error(&mut respond, GRPC_UNIMPLEMENTED, "unknown method");
        return;
    }
    let is_grpc = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        let resp = http::Response::builder().status(415).body(());
        if let Ok(resp) = resp {
            let _ = respond.send_response(resp, true);
        }
        return;
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();

    let mut data: Vec<u8> = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > MAX_BODY + 5 {
            grpc_error(&mut respond, GRPC_RESOURCE_EXHAUSTED, "message too large");
            return;
        }
    }

    // One length-prefixed message: 1-byte compressed flag, 4-byte big-endian length.
    if data.len() < 5 {
        grpc_error(&mut respond, GRPC_INTERNAL, "truncated gRPC frame");
        return;
    }
    if data[0] != 0 {
        grpc_error(
            &mut respond,
            GRPC_UNIMPLEMENTED,
            "compressed messages unsupported",
        );
        return;
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() - 5 != len {
        grpc_error(
            &mut respond,
            GRPC_INTERNAL,
            &format!("frame length {len} but {} bytes follow", data.len() - 5),
        );
        return;
    }
    let decoded = decode_spans(&data[5..], "grpc");
    shared.record(
        ReceivedRequest {
            transport: "grpc",
            path: parts.uri.path().to_string(),
            headers,
            span_count: decoded.as_ref().map_or(0, Vec::len),
        },
        decoded.as_ref().cloned().unwrap_or_default(),
    );
    if let Err(e) = decoded {
        grpc_error(
            &mut respond,
            GRPC_INVALID_ARGUMENT,
            &format!("undecodable request: {e}"),
        );
        return;
    }

    let Ok(resp) = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
    else {
        return;
    };
    let Ok(mut send) = respond.send_response(resp, false) else {
        return;
    };
    let msg = ExportTraceServiceResponse::default().encode_to_vec();
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(0);
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    if send.send_data(Bytes::from(frame), false).is_err() {
        return;
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(GRPC_OK));
    let _ = send.send_trailers(trailers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("svc".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        name: "s".into(),
                        kind: 2,
                        attributes: vec![
                            kv("i", any_value::Value::IntValue(7)),
                            kv("b", any_value::Value::BoolValue(true)),
                        ],
                        status: Some(Status {
                            message: "bad".into(),
                            code: status::StatusCode::Error as i32,
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn check(span: &ReceivedSpan, transport: &str) {
        assert_eq!(span.name, "s");
        assert_eq!(span.trace_id, "ab".repeat(16));
        assert_eq!(span.span_id, "01".repeat(8));
        assert_eq!(span.parent_span_id, "");
        assert_eq!(span.kind, 2);
        assert_eq!(span.status_code, 2);
        assert_eq!(span.status_message, "bad");
        assert_eq!(span.attributes["i"], "7");
        assert_eq!(span.attributes["b"], "true");
        assert_eq!(span.resource["service.name"], "svc");
        assert_eq!(span.transport, transport);
    }

    /// Reads one HTTP/1.1 response (head + Content-Length body).
    async fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
        let mut buf = Vec::new();
        let head_len = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        while buf.len() < head_len + len {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        (head, buf[head_len..head_len + len].to_vec())
    }

    #[tokio::test]
    async fn http_round_trip_with_keep_alive() {
        let rx = OtlpReceiver::start();
        let body = request().encode_to_vec();
        let mut s = TcpStream::connect(rx.http_addr).await.expect("connect");
        for _ in 0..2 {
            let head = format!(
                "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.expect("write");
            s.write_all(&body).await.expect("write");
            let (head, body) = read_response(&mut s).await;
            assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
            assert!(
                head.contains("content-type: application/x-protobuf"),
                "{head}"
            );
            ExportTraceServiceResponse::decode(body.as_slice()).expect("response decodes");
        }
        let spans = rx.wait_for_spans(2, Duration::from_secs(5));
        assert_eq!(spans.len(), 2);
        check(&spans[0], "http");
        assert_eq!(rx.requests().len(), 2);
        rx.clear();
        assert!(rx.spans().is_empty());
        // Wrong content type, wrong path, undecodable body: all on the same connection.
        let head = "POST /v1/traces HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        s.write_all(head.as_bytes()).await.expect("write");
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 415"), "{head}");
        let head = "POST /v1/logs HTTP/1.1\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        s.write_all(head.as_bytes()).await.expect("write");
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let req: &[u8] = b"POST /v1/traces HTTP/1.1\r\ncontent-type: application/x-protobuf\r\ncontent-length: 2\r\n\r\n\xff\xff";
        s.write_all(req).await.expect("write");
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        assert!(rx.spans().is_empty());
    }

    async fn grpc_call(
        addr: SocketAddr,
        path: &str,
        payload: Vec<u8>,
    ) -> (
        http::StatusCode,
        http::HeaderMap,
        Vec<u8>,
        Option<http::HeaderMap>,
    ) {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.expect("ready");
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (resp, mut send) = client.send_request(req, false).expect("send");
        send.send_data(Bytes::from(payload), true).expect("data");
        let resp = resp.await.expect("response");
        let (parts, mut body) = resp.into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("chunk");
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.expect("trailers");
        (parts.status, parts.headers, data, trailers)
    }

    fn framed(msg: &[u8], flag: u8) -> Vec<u8> {
        let mut f = vec![flag];
        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        f.extend_from_slice(msg);
        f
    }

    #[tokio::test]
    async fn grpc_round_trip() {
        let rx = OtlpReceiver::start();
        let (status, headers, data, trailers) = grpc_call(
            rx.grpc_addr,
            GRPC_EXPORT_PATH,
            framed(&request().encode_to_vec(), 0),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(data, vec![0, 0, 0, 0, 0]);
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        let spans = rx.wait_for_spans(1, Duration::from_secs(5));
        assert_eq!(spans.len(), 1);
        check(&spans[0], "grpc");

        let (_, headers, _, _) = grpc_call(rx.grpc_addr, GRPC_EXPORT_PATH, framed(b"", 1)).await;
        assert_eq!(headers["grpc-status"], "12");
        let (_, headers, _, _) = grpc_call(rx.grpc_addr, "/x.Y/Z", framed(b"", 0)).await;
        assert_eq!(headers["grpc-status"], "12");
        let (_, headers, _, _) =
            grpc_call(rx.grpc_addr, GRPC_EXPORT_PATH, framed(&[0xff, 0xff], 0)).await;
        assert_eq!(headers["grpc-status"], "3");
    }
}
