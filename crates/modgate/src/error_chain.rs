//! Reading a Pingora error's chain of causes for a one-line explanation (`modgate agent`'s
//! answers to `go`, `modgate warm`'s report): the innermost context and the deepest cause that
//! is not itself a Pingora error. Pingora's stand-in cause of a failed connect (its connect
//! details with a local address and no error of its own) is recognised by type, not by its
//! text.

use pingora::connectors::l4::ConnectErrorExt;
use pingora::Error;

/// What an error's chain says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The innermost context (the deepest Pingora error that has one).
    pub context: Option<String>,
    /// The deepest cause that is not a Pingora error, in its own words (empty ones and
    /// Pingora's connect stand-in left out).
    pub cause: Option<String>,
}

/// Walks `e`'s causes, through Pingora errors boxed or not.
pub fn walk(e: &Error) -> Chain {
    let mut chain = Chain::default();
    let mut cur = e;
    loop {
        if let Some(c) = &cur.context {
            chain.context = Some(c.as_str().to_owned());
        }
        let Some(c) = cur.cause.as_deref() else {
            break;
        };
        match c
            .downcast_ref::<Box<Error>>()
            .map(|b| &**b)
            .or_else(|| c.downcast_ref::<Error>())
        {
            Some(inner) => cur = inner,
            None => {
                if !is_connect_stand_in(cur, c) {
                    let text = c.to_string();
                    if !text.is_empty() {
                        chain.cause = Some(text);
                    }
                }
                break;
            }
        }
    }
    chain
}

/// Whether `cause`, the last link of `owner`'s chain, is Pingora's connect details standing in
/// for a missing cause: they are the root cause whenever `connect_local_addr` answers, and
/// without an error of their own they print only `local address <addr>`.
fn is_connect_stand_in(owner: &Error, cause: &(dyn std::error::Error + Send + Sync)) -> bool {
    owner.connect_local_addr().is_some() && cause.source().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::{ErrorType, OrErr};

    #[test]
    fn the_innermost_context_and_the_deepest_foreign_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let inner = Err::<(), _>(io)
            .or_err(ErrorType::ConnectRefused, "dialing 127.0.0.1:9")
            .unwrap_err();
        let outer = Error::because(ErrorType::HTTPStatus(502), "outer", inner);
        assert_eq!(
            walk(&outer),
            Chain {
                context: Some("dialing 127.0.0.1:9".into()),
                cause: Some("refused".into()),
            }
        );
        let bare = Error::explain(ErrorType::ConnectTimedout, "no answer");
        assert_eq!(
            walk(&bare),
            Chain {
                context: Some("no answer".into()),
                cause: None,
            }
        );
    }

    /// A TLS handshake cut by the server: Pingora attaches its connect details (with the
    /// local address) to the error; the walk reports the handshake's own words, never the
    /// details' `local address …` stand-in.
    #[tokio::test]
    async fn a_cut_handshake_is_explained_by_its_own_words() {
        use pingora::connectors::TransportConnector;
        use pingora::upstreams::peer::HttpPeer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            // Accept and close at once, before any TLS.
            let _ = listener.accept().await;
        });
        let peer = HttpPeer::new(addr, true, "localhost".to_string());
        let e = TransportConnector::new(None)
            .new_stream(&peer)
            .await
            .expect_err("no TLS server: the handshake fails");
        let _ = server.await;
        assert!(e.connect_local_addr().is_some(), "no connect details: {e}");
        let chain = walk(&e);
        assert!(
            !chain
                .cause
                .as_deref()
                .is_some_and(|c| c.starts_with("local address ")),
            "{chain:?}"
        );
        assert!(chain.context.is_some() || chain.cause.is_some(), "{e}");
    }
}
