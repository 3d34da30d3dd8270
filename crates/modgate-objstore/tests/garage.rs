//! The object tier against a real S3-compatible server (Garage 2.5, a throwaway node on a
//! loopback port, from `modgate_testkit::garage`): large bodies go up as multipart uploads and
//! read back whole; an upload cut by an error, or whose body ends short of its length, is never
//! visible (nor does it replace the object already there); a read whose connection is cut
//! mid-body is resumed with a ranged `GET` (seen on the wire) and yields exactly the object's
//! bytes; an object over the caller's limit is refused before its body is read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use modgate_objstore::{ObjectTier, S3Settings, TierError};
use modgate_testkit::{require_garage, GarageServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

fn garage() -> Option<GarageServer> {
    require_garage()?;
    Some(GarageServer::start().expect("start Garage"))
}

/// The tier on `endpoint` (Garage itself, or a proxy in front of it): 5 MiB parts above 6 MiB.
fn tier(s3: &GarageServer, endpoint: String) -> ObjectTier {
    let mut s = S3Settings::new(
        endpoint,
        s3.region(),
        s3.bucket(),
        s3.access_key_id(),
        s3.secret_access_key(),
    );
    s.prefix = "t".into();
    s.part_size = 5 * MIB;
    s.multipart_threshold = 6 * MIB;
    s.timeout = Duration::from_secs(30);
    ObjectTier::new(&s).expect("tier")
}

/// `n` bytes that differ at every offset (a resumed read from the wrong place would show).
fn body(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `bytes` as a stream of `piece`-sized chunks, then `tail` (an error, or nothing).
fn chunks(
    bytes: &[u8],
    piece: usize,
    tail: Option<&str>,
) -> BoxStream<'static, Result<Bytes, String>> {
    let mut items: Vec<Result<Bytes, String>> = bytes
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    if let Some(e) = tail {
        items.push(Err(e.to_owned()));
    }
    stream::iter(items).boxed()
}

async fn read_all(tier: &ObjectTier, key: &str) -> Option<Vec<u8>> {
    let reading = tier.get(key, u64::MAX).await.expect("get")?;
    let mut out = Vec::with_capacity(usize::try_from(reading.size).expect("size"));
    let mut chunks = reading.chunks;
    while let Some(c) = chunks.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    assert_eq!(out.len() as u64, reading.size, "{key}: size and body agree");
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_go_up_in_parts_and_read_back_whole() {
    let Some(s3) = garage() else { return };
    let t = tier(&s3, s3.endpoint());
    let big = body(23 * MIB + 123, 1);
    let small = body(MIB, 2);
    t.put(
        "m/@v/v1.0.0.zip/r",
        big.len() as u64,
        chunks(&big, 64 << 10, None),
    )
    .await
    .expect("multipart put");
    t.put(
        "m/@v/v1.0.0.mod/r",
        small.len() as u64,
        chunks(&small, 64 << 10, None),
    )
    .await
    .expect("single put");
    assert_eq!(
        t.head("m/@v/v1.0.0.zip/r").await.expect("head"),
        Some(big.len() as u64)
    );
    assert!(read_all(&t, "m/@v/v1.0.0.zip/r").await.expect("object") == big);
    assert!(read_all(&t, "m/@v/v1.0.0.mod/r").await.expect("object") == small);
    let mut keys = t.list("m/", 10).await.expect("list");
    keys.sort();
    assert_eq!(keys, ["m/@v/v1.0.0.mod/r", "m/@v/v1.0.0.zip/r"]);

    // Over the caller's limit: refused before the body is read.
    match t.get("m/@v/v1.0.0.zip/r", MIB as u64).await {
        Err(TierError::TooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (big.len() as u64, MIB as u64));
        }
        Ok(_) => panic!("an object over the limit was handed out"),
        Err(e) => panic!("{e}"),
    }
    t.delete("m/@v/v1.0.0.zip/r").await.expect("delete");
    assert_eq!(
        t.get("m/@v/v1.0.0.zip/r", u64::MAX)
            .await
            .expect("get")
            .map(|r| r.size),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_upload_is_never_visible_and_never_replaces_an_object() {
    let Some(s3) = garage() else { return };
    let t = tier(&s3, s3.endpoint());
    let big = body(20 * MIB, 3);

    // A multipart upload whose body fails after 12 MiB (two parts sent).
    let err = t
        .put(
            "torn/a",
            big.len() as u64,
            chunks(&big[..12 * MIB], MIB, Some("upstream reset")),
        )
        .await
        .expect_err("a failed body");
    assert!(err.to_string().contains("upstream reset"), "{err}");
    // One whose body ends short without an error, multipart and single.
    let err = t
        .put(
            "torn/b",
            big.len() as u64,
            chunks(&big[..12 * MIB], MIB, None),
        )
        .await
        .expect_err("a short body");
    assert!(
        err.to_string().contains("not the 20971520 announced"),
        "{err}"
    );
    let err = t
        .put("torn/c", MIB as u64, chunks(&big[..MIB / 2], 4096, None))
        .await
        .expect_err("a short body");
    assert!(err.to_string().contains("nothing was stored"), "{err}");
    // And one that runs past its length.
    let err = t
        .put("torn/d", MIB as u64, chunks(&big[..2 * MIB], 4096, None))
        .await
        .expect_err("a long body");
    assert!(
        err.to_string().contains("not the 1048576 announced"),
        "{err}"
    );
    for key in ["torn/a", "torn/b", "torn/c", "torn/d"] {
        assert_eq!(t.head(key).await.expect("head"), None, "{key} is visible");
    }
    assert!(t.list("torn/", 10).await.expect("list").is_empty());

    // A torn upload over an object leaves the object as it was.
    let first = body(3 * MIB, 4);
    t.put("torn/e", first.len() as u64, chunks(&first, MIB, None))
        .await
        .expect("put");
    t.put(
        "torn/e",
        big.len() as u64,
        chunks(&big[..15 * MIB], MIB, Some("cut")),
    )
    .await
    .expect_err("a failed body");
    assert!(read_all(&t, "torn/e").await.expect("object") == first);
}

/// A TCP proxy in front of `backend` that cuts the first connection whose responses pass
/// `cut_after` bytes, and keeps what clients sent (request heads) per connection.
struct Cutter {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<String>>>,
    cut: Arc<AtomicBool>,
}

async fn cutter(backend: SocketAddr, cut_after: usize) -> Cutter {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let cut = Arc::new(AtomicBool::new(false));
    let (sent2, cut2) = (Arc::clone(&sent), Arc::clone(&cut));
    tokio::spawn(async move {
        // Bounded by the test's life: the runtime ends with it.
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = tokio::net::TcpStream::connect(backend).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (sent, cut) = (Arc::clone(&sent2), Arc::clone(&cut2));
            let slot = {
                let mut s = sent.lock().expect("lock");
                s.push(String::new());
                s.len() - 1
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent.lock().expect("lock")[slot].push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let mut passed = 0usize;
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    passed += n;
                    if passed > cut_after && !cut.swap(true, Ordering::SeqCst) {
                        // Cut mid-body: the client sees its connection end early.
                        let _ = cw.write_all(&buf[..n / 2]).await;
                        return;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    Cutter { addr, sent, cut }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cut_mid_body_resumes_with_a_ranged_read() {
    let Some(s3) = garage() else { return };
    let direct = tier(&s3, s3.endpoint());
    let big = body(12 * MIB + 7, 5);
    direct
        .put(
            "r/@v/v1.0.0.zip/x",
            big.len() as u64,
            chunks(&big, 64 << 10, None),
        )
        .await
        .expect("put");

    let backend: SocketAddr = format!("127.0.0.1:{}", s3.s3_port()).parse().expect("addr");
    let proxy = cutter(backend, 3 * MIB).await;
    let cut = tier(&s3, format!("http://{}", proxy.addr));
    let got = read_all(&cut, "r/@v/v1.0.0.zip/x").await.expect("object");
    assert!(proxy.cut.load(Ordering::SeqCst), "the proxy cut a response");
    assert_eq!(got.len(), big.len());
    assert!(
        got == big,
        "the resumed read yields exactly the object's bytes"
    );
    let sent = proxy
        .sent
        .lock()
        .expect("lock")
        .join("\n")
        .to_ascii_lowercase();
    let ranged = sent
        .lines()
        .filter(|l| l.starts_with("range: bytes="))
        .collect::<Vec<_>>();
    assert_eq!(ranged.len(), 1, "one ranged GET resumed the read: {sent}");
    let start: u64 = ranged[0]
        .trim_start_matches("range: bytes=")
        .split('-')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .expect("range start");
    assert!(
        start > 0 && start < big.len() as u64,
        "resumed from where it broke, not from the start: {}",
        ranged[0]
    );
}
