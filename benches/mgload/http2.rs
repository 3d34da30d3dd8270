//! HTTP/2 for mgload (the `h2` crate, as Pingora uses it): the connection handshake with
//! h2load's large flow-control windows, and one GET on a stream, its body read and its
//! window given back, errors sorted into "this stream" and "the whole connection".

use std::future::poll_fn;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use http::Request;
use tokio::io::{AsyncRead, AsyncWrite};

/// Stream and connection receive windows (h2load's defaults: -w 30 -W 30).
const WINDOW: u32 = (1 << 30) - 1;

/// Why a request on a stream failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail {
    /// The server reset this stream (or refused it); the connection goes on.
    Stream(String),
    /// The connection is gone (I/O error, GOAWAY, protocol error).
    Connection(String),
}

/// Sorts an h2 error: a stream reset that is not a GOAWAY affects one stream only.
pub fn classify(e: h2::Error) -> Fail {
    if e.is_reset() && !e.is_go_away() && !e.is_io() {
        Fail::Stream(format!("h2 stream: {e}"))
    } else {
        Fail::Connection(format!("h2: {e}"))
    }
}

/// The client side of the HTTP/2 handshake.
pub async fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
) -> Result<(SendRequest<Bytes>, Connection<T, Bytes>), h2::Error> {
    h2::client::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .handshake(io)
        .await
}

/// One GET of `uri` (absolute: scheme, authority, path); returns the status and body bytes
/// once the whole body is read.
pub async fn get(send: &mut SendRequest<Bytes>, uri: &http::Uri) -> Result<(u16, u64), Fail> {
    poll_fn(|cx| send.poll_ready(cx)).await.map_err(classify)?;
    let req = Request::get(uri.clone())
        .header(http::header::USER_AGENT, "mgload")
        .body(())
        .map_err(|e| Fail::Stream(format!("request: {e}")))?;
    let (resp, _) = send.send_request(req, true).map_err(classify)?;
    let resp = resp.await.map_err(classify)?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut n = 0u64;
    // Ends with the stream: each pass takes one DATA frame's worth (the caller's timeout
    // bounds a server that never ends it).
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(classify)?;
        n += chunk.len() as u64;
        // Giving back window fails only when the stream is already gone: nothing to do.
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok((status, n))
}
