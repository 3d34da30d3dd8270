//! A TCP load balancer on loopback for cluster tests: each new connection goes to the next
//! backend in turn (round-robin), bytes copied both ways, and the connections each backend was
//! given counted, so a test can show that every replica served.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Starts the balancer over `backends` on an ephemeral loopback port: its address, and the
/// connections handed to each backend so far (in `backends`' order). It runs as long as the
/// Tokio runtime it was started on.
pub async fn round_robin(backends: Vec<SocketAddr>) -> (SocketAddr, Arc<Vec<AtomicUsize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the balancer");
    let addr = listener.local_addr().expect("the balancer's address");
    let counts = Arc::new(
        backends
            .iter()
            .map(|_| AtomicUsize::new(0))
            .collect::<Vec<_>>(),
    );
    let seen = Arc::clone(&counts);
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let i = next % backends.len();
            next += 1;
            seen[i].fetch_add(1, Ordering::Relaxed);
            let backend = backends[i];
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, counts)
}
