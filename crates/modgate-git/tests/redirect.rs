//! The gateway's credential never follows a redirect: a Git host that answers with a `302` to
//! another host (an SSO front, a moved repository, a compromised host) gets an error, and the
//! other host never receives the `Authorization` header. Two tiny HTTP listeners on 127.0.0.1:
//! the first redirects everything to the second, which records what it receives.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modgate_git::{Credential, GitOptions, Mirrors, Secret};

/// Serves `n` connections on `listener` with `answer(request head) -> response`, recording
/// each request head.
fn serve(
    listener: TcpListener,
    seen: Arc<Mutex<Vec<String>>>,
    answer: impl Fn(&str) -> String + Send + 'static,
) {
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            seen.lock().expect("lock").push(head.clone());
            let _ = stream.write_all(answer(&head).as_bytes());
        }
    });
}

#[test]
fn the_credential_never_follows_a_redirect() {
    let elsewhere = TcpListener::bind("127.0.0.1:0").expect("bind");
    let elsewhere_addr = elsewhere.local_addr().expect("addr");
    let seen_elsewhere = Arc::new(Mutex::new(Vec::new()));
    // What a Git host answers with protocol v2: the capability advertisement, then (for the
    // `ls-refs` command git POSTs next, with its headers) an empty ref list.
    serve(elsewhere, seen_elsewhere.clone(), |head| {
        let (content_type, body) = if head.starts_with("POST") {
            ("application/x-git-upload-pack-result", "0000")
        } else {
            (
                "application/x-git-upload-pack-advertisement",
                "000eversion 2\n000cls-refs\n000afetch\n0000",
            )
        };
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    });
    let host = TcpListener::bind("127.0.0.1:0").expect("bind");
    let host_addr = host.local_addr().expect("addr");
    let seen_host = Arc::new(Mutex::new(Vec::new()));
    serve(host, seen_host.clone(), move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{elsewhere_addr}/moved{path}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let mirrors = Mirrors::new(dir.path(), GitOptions::default());
    let token = Credential::Authorization(Secret::new("Bearer s3cret-gateway-token"));
    let repo = mirrors
        .repo(&format!("http://{host_addr}/group/repo.git"), Some(token))
        .expect("repo");
    let refreshed = repo.refresh(Duration::ZERO);
    assert!(refreshed.is_err(), "a redirected host was followed");
    let leaked: Vec<String> = seen_elsewhere
        .lock()
        .expect("lock")
        .iter()
        .filter(|h| h.to_ascii_lowercase().contains("authorization"))
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "the token went elsewhere: {leaked:?}");
    assert!(
        !seen_host.lock().expect("lock").is_empty(),
        "the host itself was never asked"
    );
}
