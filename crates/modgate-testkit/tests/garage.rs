//! The throwaway Garage server ([`GarageServer`]) against the real `garage` binary, driven with
//! a real S3 client: `curl --aws-sigv4` (SigV4-signed path-style requests, with the payload's
//! `x-amz-content-sha256`). An object written is read back byte for byte, unsigned and wrongly
//! signed requests are refused, the port refuses connections while the server is stopped, and
//! the object is served again after `start_again` (after a clean stop and after a kill); a
//! bucket created later is usable; two servers run at once without seeing each other's objects
//! or keys; a taken port is replaced by new picks; nothing is left listening or on disk after a drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use modgate_testkit::{free_port, require_garage, GarageServer};
use sha2::{Digest, Sha256};

/// What one `curl` run against the S3 API gave.
struct S3Reply {
    /// curl's exit code (0: a response was received; 7: the connection was refused).
    exit: Option<i32>,
    /// The HTTP status (0 when there was no response).
    status: u16,
    body: Vec<u8>,
    stderr: String,
}

/// `curl -X method <endpoint>/<bucket>/<key>`, signed with `key:secret` for the server's region
/// unless `key` is empty, uploading `upload` if given.
fn s3_as(
    server: &GarageServer,
    (key, secret): (&str, &str),
    method: &str,
    bucket: &str,
    object: &str,
    upload: Option<&Path>,
) -> S3Reply {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let body_path = out_dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-X", method])
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code}"]);
    if !key.is_empty() {
        // Garage requires the payload's hash on signed requests and curl 7.88 does not send it
        // (it signs the header when given one).
        let payload = upload.map_or_else(Vec::new, |f| std::fs::read(f).expect("read upload"));
        let sha: String = Sha256::digest(&payload)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        cmd.args(["-H", &format!("x-amz-content-sha256: {sha}")])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", server.region()))
            .arg("--user")
            .arg(format!("{key}:{secret}"));
    }
    if let Some(file) = upload {
        cmd.arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .args(["-H", "Content-Type: application/octet-stream"]);
    }
    cmd.arg(format!("{}/{bucket}/{object}", server.endpoint()));
    let out = cmd.output().expect("run curl");
    S3Reply {
        exit: out.status.code(),
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        body: std::fs::read(&body_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`s3_as`] with the server's own key.
fn s3(
    server: &GarageServer,
    method: &str,
    bucket: &str,
    object: &str,
    upload: Option<&Path>,
) -> S3Reply {
    s3_as(
        server,
        (server.access_key_id(), server.secret_access_key()),
        method,
        bucket,
        object,
        upload,
    )
}

/// `n` bytes that are neither text nor repetitive (an xorshift stream seeded by `seed`).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Writes `data` to a file in `dir` and PUTs it as `bucket/object`, which must succeed.
fn put(server: &GarageServer, dir: &Path, bucket: &str, object: &str, data: &[u8]) {
    let file = dir.join("upload");
    std::fs::write(&file, data).expect("write upload");
    let r = s3(server, "PUT", bucket, object, Some(&file));
    assert_eq!(
        (r.exit, r.status),
        (Some(0), 200),
        "PUT {bucket}/{object}: {}{}\n--- server log:\n{}",
        String::from_utf8_lossy(&r.body),
        r.stderr,
        server.log_tail()
    );
}

/// GETs `bucket/object`, which must succeed; its bytes.
fn get(server: &GarageServer, bucket: &str, object: &str) -> Vec<u8> {
    let r = s3(server, "GET", bucket, object, None);
    assert_eq!(
        (r.exit, r.status),
        (Some(0), 200),
        "GET {bucket}/{object}: {}{}\n--- server log:\n{}",
        String::from_utf8_lossy(&r.body),
        r.stderr,
        server.log_tail()
    );
    r.body
}

/// Asserts that the S3 port refuses connections (curl's exit code 7).
fn assert_refused(server: &GarageServer, object: &str) {
    let r = s3(server, "GET", server.bucket(), object, None);
    assert_eq!(
        r.exit,
        Some(7),
        "GET against a server that is not running: status {} {}",
        r.status,
        r.stderr
    );
}

fn start() -> GarageServer {
    GarageServer::start().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn object_is_read_back_refused_when_stopped_and_served_after_start_again() {
    let Some(_) = require_garage() else { return };
    let server = start();
    let scratch = tempfile::tempdir().expect("tempdir");
    assert_eq!(server.region(), "garage");
    assert_eq!(server.bucket(), "modgate");
    assert!(
        server.endpoint().starts_with("http://127.0.0.1:"),
        "{}",
        server.endpoint()
    );
    // Larger than Garage's 1 MiB block: the object spans two blocks.
    let data = bytes(1_500_000, 1);
    put(&server, scratch.path(), "modgate", "some/key.zip", &data);
    assert!(get(&server, "modgate", "some/key.zip") == data);

    let unsigned = s3_as(&server, ("", ""), "GET", "modgate", "some/key.zip", None);
    assert_eq!(unsigned.status, 403, "an unsigned GET was not refused");
    let wrong = s3_as(
        &server,
        (server.access_key_id(), &"0".repeat(64)),
        "GET",
        "modgate",
        "some/key.zip",
        None,
    );
    assert_eq!(wrong.status, 403, "a GET signed with a wrong secret");
    let missing = s3(&server, "GET", "modgate", "no/such/key", None);
    assert_eq!(
        missing.status,
        404,
        "{}",
        String::from_utf8_lossy(&missing.body)
    );

    let endpoint = server.endpoint();
    server.stop().unwrap_or_else(|e| panic!("{e}"));
    assert!(!server.is_running());
    assert_refused(&server, "some/key.zip");

    server.start_again().unwrap_or_else(|e| panic!("{e}"));
    assert!(server.is_running());
    assert_eq!(server.endpoint(), endpoint);
    assert!(get(&server, "modgate", "some/key.zip") == data);
}

#[test]
fn objects_survive_a_kill_and_a_later_bucket_is_usable() {
    let Some(_) = require_garage() else { return };
    let server = start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = bytes(4096, 2);
    put(&server, scratch.path(), "modgate", "a", &data);

    server.kill().unwrap_or_else(|e| panic!("{e}"));
    assert!(!server.is_running());
    assert_refused(&server, "a");
    server.start_again().unwrap_or_else(|e| panic!("{e}"));
    assert!(get(&server, "modgate", "a") == data);

    let fresh = s3(&server, "GET", "fresh", "b", None);
    assert_eq!(fresh.status, 404, "a bucket that does not exist yet");
    server
        .create_bucket("fresh")
        .unwrap_or_else(|e| panic!("{e}"));
    let other = bytes(10, 3);
    put(&server, scratch.path(), "fresh", "b", &other);
    assert!(get(&server, "fresh", "b") == other);

    // The new bucket, its grant and its object persist across a kill too.
    server.kill().unwrap_or_else(|e| panic!("{e}"));
    server.start_again().unwrap_or_else(|e| panic!("{e}"));
    assert!(get(&server, "fresh", "b") == other);
    assert!(get(&server, "modgate", "a") == data);
}

#[test]
fn two_servers_run_at_once_apart() {
    let Some(_) = require_garage() else { return };
    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(start);
        let two = s.spawn(start);
        (
            one.join().expect("first start"),
            two.join().expect("second start"),
        )
    });
    assert_ne!(one.endpoint(), two.endpoint());
    assert_ne!(one.access_key_id(), two.access_key_id());
    assert_ne!(one.secret_access_key(), two.secret_access_key());

    let scratch = tempfile::tempdir().expect("tempdir");
    put(&one, scratch.path(), "modgate", "same/name", b"one");
    put(&two, scratch.path(), "modgate", "same/name", b"two");
    assert_eq!(get(&one, "modgate", "same/name"), b"one");
    assert_eq!(get(&two, "modgate", "same/name"), b"two");
    put(&one, scratch.path(), "modgate", "only/one", b"x");
    assert_eq!(s3(&two, "GET", "modgate", "only/one", None).status, 404);

    // Each server knows only its own key.
    let foreign = s3_as(
        &two,
        (one.access_key_id(), one.secret_access_key()),
        "GET",
        "modgate",
        "same/name",
        None,
    );
    assert_eq!(foreign.status, 403, "server two accepted server one's key");

    // Stopping one leaves the other serving.
    one.stop().unwrap_or_else(|e| panic!("{e}"));
    assert_refused(&one, "same/name");
    assert_eq!(get(&two, "modgate", "same/name"), b"two");
}

#[test]
fn drop_leaves_nothing_listening_or_on_disk() {
    let Some(_) = require_garage() else { return };
    let server = start();
    let dir = server.dir().to_path_buf();
    assert!(dir.join("garage.toml").is_file());
    assert!(dir.join("meta").is_dir() && dir.join("data").is_dir());
    let port = server.s3_port();
    drop(server);
    assert!(!dir.exists(), "{} is left", dir.display());
    let connect = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(connect.is_err(), "port {port} still accepts connections");
}

#[test]
fn a_taken_port_is_replaced_by_new_picks() {
    let Some(_) = require_garage() else { return };
    // The picks are the S3, RPC and admin ports, in that order: each one taken in turn.
    for taken_pick in 1..=3 {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_port = taken.local_addr().expect("addr").port();
        let mut picks = 0;
        let server = GarageServer::start_picking(|| {
            picks += 1;
            if picks == taken_pick {
                taken_port
            } else {
                free_port()
            }
        })
        .unwrap_or_else(|e| panic!("port {taken_pick} taken: {e}"));
        assert_eq!(picks, 6, "a second set of three ports was picked");
        assert_ne!(server.s3_port(), taken_port);
        let scratch = tempfile::tempdir().expect("tempdir");
        put(&server, scratch.path(), "modgate", "k", b"v");
        assert_eq!(get(&server, "modgate", "k"), b"v");
        drop(taken);
    }
}
