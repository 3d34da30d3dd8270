//! An upstream on a raw socket, for answers no well-behaved server gives (a body cut short, no
//! framing at all, a chunked body written by hand): one request per connection, each on its own
//! thread; the test's closure gets the request path and the socket and writes what it wants.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

/// Serves on 127.0.0.1 until the test process ends; `answer` is called with each request's path
/// (once its head is in, at most 64 KiB) and the connection, which closes when it returns.
pub fn raw_upstream<F>(answer: F) -> SocketAddr
where
    F: Fn(&str, &mut TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a raw upstream");
    let addr = listener.local_addr().expect("raw upstream address");
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
                    match s.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                answer(&path, &mut s);
            });
        }
    });
    addr
}
