//! Responses modgate writes itself: one-line `text/plain` reasons that the `go` command prints
//! verbatim, and the small health endpoints.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Writes `status` with a one-line plain-text body (`modgate: <reason>`); HEAD gets no body.
pub async fn text(
    session: &mut Session,
    status: u16,
    message: &str,
    extra_headers: &[(&'static str, &str)],
) -> Result<()> {
    let body = format!("modgate: {}\n", one_line(message));
    let mut resp = ResponseHeader::build(status, Some(4 + extra_headers.len()))?;
    resp.insert_header("Content-Type", "text/plain; charset=utf-8")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    for (name, value) in extra_headers {
        resp.insert_header(*name, *value)?;
    }
    write(session, resp, Bytes::from(body)).await
}

/// Writes a 200 with the given content type and body (HEAD gets only the headers).
pub async fn ok(session: &mut Session, content_type: &str, body: Bytes) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    write(session, resp, body).await
}

async fn write(session: &mut Session, resp: ResponseHeader, body: Bytes) -> Result<()> {
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Keeps a reason on one line, whatever an upstream or an error put into it.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_stay_on_one_line() {
        assert_eq!(super::one_line("a\nb\r\tc"), "a b  c");
    }
}
