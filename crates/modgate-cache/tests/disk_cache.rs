//! Integration tests of the disk cache through Pingora's `Storage` / `HandleHit` / `HandleMiss`
//! API, the way pingora-proxy drives it: round trips in both tiers, ranges, restart persistence,
//! crash and corruption recovery, eviction under a budget (across restarts), a 50 MiB object
//! streamed in and out in bounded chunks, purges, meta updates and concurrent misses.

use modgate_cache::{DiskCache, DiskCacheConfig};
use pingora::cache::eviction::CacheEntryKey;
use pingora::cache::key::CacheHashKey;
use pingora::cache::storage::{HitHandler, MissFinishType, PurgeOutcome, PurgeTarget};
use pingora::cache::trace::{Span, SpanHandle};
use pingora::cache::{CacheKey, CacheMeta, PurgeType, Storage};
use pingora::http::ResponseHeader;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn span() -> SpanHandle {
    Span::inactive().handle()
}

/// Bodies above 256 KiB stay out of the memory tier (the tests' "large" bodies are 300 KiB).
fn config(root: &Path) -> DiskCacheConfig {
    let mut c = DiskCacheConfig::new(root);
    c.max_disk_bytes = 512 * MIB;
    c.memory_object_max_bytes = 256 * KIB;
    c
}

/// No memory tier (every hit reads the disk); bodies up to 64 KiB verified before serving.
fn disk_only(root: &Path) -> DiskCacheConfig {
    let mut c = config(root);
    c.memory_budget_bytes = 0;
    c.memory_object_max_bytes = 0;
    c.verify_before_serve_max_bytes = 64 * KIB as u64;
    c
}

/// Opens the cache and waits for its background reconciliation (the clean-up of what a previous
/// run left, the index brought in line with the directory).
fn open(c: DiskCacheConfig) -> &'static DiskCache {
    let cache = DiskCache::open(c).expect("cache opens");
    assert!(
        cache.wait_reconciled(Duration::from_secs(60)),
        "reconciliation ends"
    );
    cache
}

fn key(path: &str) -> CacheKey {
    CacheKey::new(format!("goproxy|{path}"), "")
}

/// A cacheable 200 like the gateway's `response_cache_filter` builds, fresh for an hour.
fn meta(content_length: Option<usize>) -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).expect("header");
    h.append_header("content-type", "application/zip")
        .expect("header");
    if let Some(len) = content_length {
        h.insert_header("content-length", len.to_string())
            .expect("header");
    }
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 60, 120, h)
}

/// Deterministic body bytes.
fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Write `data` through a miss handler in `chunk`-sized pieces and finish; then admit it into
/// the eviction manager and purge what it evicts, as pingora's `finish_miss_handler` does.
async fn fill(cache: &'static DiskCache, k: &CacheKey, data: &[u8], chunk: usize) -> usize {
    let m = meta(Some(data.len()));
    let mut miss = cache
        .get_miss_handler(k, &m, &span())
        .await
        .expect("miss handler");
    let mut pieces = data.chunks(chunk).peekable();
    while let Some(piece) = pieces.next() {
        let eof = pieces.peek().is_none();
        miss.write_body(piece.to_vec().into(), eof)
            .await
            .expect("write");
    }
    let size = match miss.finish().await.expect("finish") {
        MissFinishType::Created(size) => size,
        MissFinishType::Appended(..) => panic!("unexpected append"),
    };
    admit(cache, k, size).await;
    size
}

async fn admit(cache: &'static DiskCache, k: &CacheKey, size: usize) {
    let evicted = cache.eviction_manager().admit(
        CacheEntryKey::key_only(k.to_compact()),
        size,
        SystemTime::now(),
    );
    for item in evicted {
        cache
            .purge(PurgeTarget::Exact(&item), PurgeType::Eviction, &span())
            .await
            .expect("evict");
    }
}

/// Read a whole hit; returns the body and the largest chunk seen.
async fn read_all(hit: &mut HitHandler) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut largest = 0;
    while let Some(b) = hit.read_body().await.expect("read") {
        largest = largest.max(b.len());
        out.extend_from_slice(&b);
    }
    (out, largest)
}

/// Look up as pingora does on a hit: count the access in the eviction manager.
async fn hit(cache: &'static DiskCache, k: &CacheKey) -> Option<(CacheMeta, HitHandler)> {
    let found = cache.lookup(k, &span()).await.expect("lookup");
    if let Some((m, h)) = &found {
        if h.should_count_access() {
            cache.eviction_manager().access(
                &CacheEntryKey::key_only(k.to_compact()),
                h.get_eviction_weight(),
                m.fresh_until(),
            );
        }
    }
    found
}

/// Flip bits of one byte of a file in place (same length).
fn flip(path: &Path, at: usize, bits: u8) {
    let mut bytes = fs::read(path).expect("read");
    bytes[at] ^= bits;
    fs::write(path, bytes).expect("write");
}

/// Read a hit that must fail before it ends: the bytes served before the error, and the error.
async fn read_until_error(hit: &mut HitHandler) -> (usize, Box<pingora::Error>) {
    let mut served = 0;
    loop {
        match hit.read_body().await {
            Ok(Some(b)) => served += b.len(),
            Ok(None) => panic!("a corrupt body must not end normally"),
            Err(e) => return (served, e),
        }
    }
}

async fn body_of(cache: &'static DiskCache, k: &CacheKey) -> Option<Vec<u8>> {
    let (_, mut h) = hit(cache, k).await?;
    Some(read_all(&mut h).await.0)
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn object_files(root: &Path, k: &CacheKey) -> Vec<PathBuf> {
    let hash = k.combined();
    files_under(&root.join("objects"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&hash))
        })
        .collect()
}

fn body_file(root: &Path, k: &CacheKey) -> PathBuf {
    object_files(root, k)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "body"))
        .expect("body file")
}

#[tokio::test]
async fn roundtrip_small_object_is_served_from_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let k = key("/golang.org/x/text/@v/v0.3.0.info");
    assert!(cache.lookup(&k, &span()).await.expect("lookup").is_none());

    let data = br#"{"Version":"v0.3.0","Time":"2017-12-14T13:08:43Z"}"#;
    let m = meta(Some(data.len()));
    let mut miss = cache.get_miss_handler(&k, &m, &span()).await.expect("miss");
    miss.write_body(data[..10].to_vec().into(), false)
        .await
        .expect("write");
    miss.write_body(data[10..].to_vec().into(), true)
        .await
        .expect("write");
    let MissFinishType::Created(size) = miss.finish().await.expect("finish") else {
        panic!("expected Created")
    };
    assert!(size > data.len(), "weight counts the meta file too");

    let (m2, mut h) = cache
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    assert_eq!(m2.fresh_until(), m.fresh_until());
    assert_eq!(m2.created(), m.created());
    assert_eq!(m2.response_header().status, 200);
    assert_eq!(
        m2.headers().get("content-type").expect("header"),
        "application/zip"
    );
    assert_eq!(h.get_eviction_weight(), size);
    assert_eq!(read_all(&mut h).await.0, data);

    let stats = cache.stats();
    assert_eq!(stats.objects, 1);
    assert_eq!(stats.bytes, size as u64);
    assert_eq!(stats.memory_objects, 1);
    assert!(stats.memory_bytes >= data.len() as u64);
    assert_eq!(stats.hits_memory, 1);
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.writes_committed, 1);
    // no temp files left behind
    assert!(files_under(dir.path())
        .iter()
        .all(|p| !p.to_string_lossy().ends_with(".tmp")));
}

#[tokio::test]
async fn roundtrip_large_object_streams_from_disk_and_seeks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let k = key("/example.com/m/@v/v1.0.0.zip");
    let data = body(3 * MIB + 123, 7); // above the memory tier and the verify-before-serve size
    fill(cache, &k, &data, 100 * KIB).await;

    let (_, mut h) = cache
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    let (got, largest) = read_all(&mut h).await;
    assert_eq!(got, data);
    assert!(largest <= 64 * KIB, "chunk of {largest} bytes");
    assert_eq!(cache.stats().hits_disk, 1);
    assert_eq!(cache.stats().memory_objects, 0);

    // ranges (end exclusive, clamped), several on one handler like multipart
    assert!(h.can_seek());
    h.seek(5, Some(70_000)).expect("seek");
    assert_eq!(read_all(&mut h).await.0, &data[5..70_000]);
    h.seek(data.len() - 10, None).expect("seek");
    assert_eq!(read_all(&mut h).await.0, &data[data.len() - 10..]);
    h.seek(100, Some(usize::MAX)).expect("seek");
    assert_eq!(read_all(&mut h).await.0, &data[100..]);
    assert!(h.seek(data.len(), None).is_err());

    // the memory tier seeks the same way
    let small = key("/example.com/m/@v/v1.0.0.mod");
    fill(cache, &small, b"module example.com/m\n", 4).await;
    let (_, mut h) = cache
        .lookup(&small, &span())
        .await
        .expect("lookup")
        .expect("hit");
    h.seek(7, Some(18)).expect("seek");
    assert_eq!(read_all(&mut h).await.0, b"example.com");
    assert!(h.seek(100, None).is_err());
}

#[tokio::test]
async fn objects_and_lru_state_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (key("/a/@v/list"), key("/b/@v/v1.0.0.zip"));
    let (da, db) = (b"v1.0.0\nv1.1.0\n".to_vec(), body(300 * KIB, 1));
    {
        let cache = open(config(dir.path()));
        fill(cache, &a, &da, 1000).await;
        fill(cache, &b, &db, 64 * KIB).await;
        cache.save_state().await.expect("save");
        // the first instance is leaked like in a real process; a new one takes over the root
    }
    assert!(dir.path().join("eviction/index.snapshot").exists());
    let cache = open(config(dir.path()));
    let stats = cache.stats();
    assert_eq!((stats.objects, stats.eviction_tracked_items), (2, 2));
    assert_eq!(stats.eviction_tracked_bytes, stats.bytes);
    for k in [&a, &b] {
        assert!(cache
            .eviction_manager()
            .peek(&CacheEntryKey::key_only(k.to_compact())));
    }
    assert_eq!(body_of(cache, &a).await.expect("hit a"), da);
    assert_eq!(body_of(cache, &b).await.expect("hit b"), db);
}

/// Budget of three ~10 KB objects; every meta file is well under 1 KB.
fn small_budget(root: &Path) -> DiskCacheConfig {
    let mut c = config(root);
    c.max_disk_bytes = 3 * 11_000;
    c
}

#[tokio::test]
async fn eviction_keeps_the_newest_and_its_order_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<CacheKey> = (0..5).map(|i| key(&format!("/m{i}/@v/v1.zip"))).collect();
    {
        let cache = open(small_budget(dir.path()));
        for (i, k) in keys.iter().take(3).enumerate() {
            fill(cache, k, &body(10_000, i as u8), 4096).await;
        }
        // touch m0 so that m1 is now the least recently used
        assert!(body_of(cache, &keys[0]).await.is_some());
        fill(cache, &keys[3], &body(10_000, 3), 4096).await;
        assert!(cache
            .lookup(&keys[1], &span())
            .await
            .expect("lookup")
            .is_none());
        for i in [0, 2, 3] {
            assert!(object_files(dir.path(), &keys[i]).len() == 2, "m{i} kept");
        }
        assert!(object_files(dir.path(), &keys[1]).is_empty(), "m1 evicted");
        assert_eq!(cache.stats().evicted, 1);
        cache.save_state().await.expect("save");
    }
    // after a restart the LRU order is the saved one: m2 is the oldest now
    let cache = open(small_budget(dir.path()));
    assert_eq!(cache.stats().objects, 3);
    fill(cache, &keys[4], &body(10_000, 4), 4096).await;
    assert!(cache
        .lookup(&keys[2], &span())
        .await
        .expect("lookup")
        .is_none());
    for i in [0, 3, 4] {
        assert!(body_of(cache, &keys[i]).await.is_some(), "m{i} kept");
    }
}

#[tokio::test]
async fn budget_is_enforced_at_open_after_a_crash_without_saved_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<CacheKey> = (0..4).map(|i| key(&format!("/c{i}/@v/v1.zip"))).collect();
    {
        let mut c = config(dir.path());
        c.max_disk_bytes = 100 * 11_000;
        let cache = open(c);
        for (i, k) in keys.iter().enumerate() {
            fill(cache, k, &body(10_000, i as u8), 4096).await;
            // distinct modification times, oldest first
            let meta_file = object_files(dir.path(), k)
                .into_iter()
                .find(|p| p.extension().is_some_and(|e| e == "meta"))
                .expect("meta");
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64);
            fs::File::options()
                .write(true)
                .open(meta_file)
                .and_then(|f| f.set_modified(t))
                .expect("set mtime");
        }
        // "crash": no save_state
    }
    let cache = open(small_budget(dir.path()));
    let stats = cache.stats();
    assert_eq!(stats.objects, 3, "{stats:?}");
    assert!(stats.bytes <= 3 * 11_000);
    assert_eq!(stats.eviction_tracked_items, 3);
    assert!(
        object_files(dir.path(), &keys[0]).is_empty(),
        "oldest evicted"
    );
    for k in &keys[1..] {
        assert!(body_of(cache, k).await.is_some());
    }
}

#[tokio::test]
async fn an_unfinished_write_is_never_visible_and_is_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let k = key("/x/@v/v1.zip");

    // dropped without finish (upstream failed mid-body)
    let mut miss = cache
        .get_miss_handler(&k, &meta(Some(1000)), &span())
        .await
        .expect("miss");
    miss.write_body(body(500, 0).into(), false)
        .await
        .expect("write");
    drop(miss);
    assert!(cache.lookup(&k, &span()).await.expect("lookup").is_none());
    assert!(object_files(dir.path(), &k).is_empty());
    assert_eq!(cache.stats().writes_abandoned, 1);

    // killed mid-write (kill -9): the temp file stays behind until the next open
    let mut miss = cache
        .get_miss_handler(&k, &meta(Some(1000)), &span())
        .await
        .expect("miss");
    miss.write_body(body(500, 0).into(), false)
        .await
        .expect("write");
    std::mem::forget(miss);
    assert_eq!(object_files(dir.path(), &k).len(), 1);

    // an old complete object of another key must survive; plant crash debris for a third key
    let good = key("/good/@v/v1.zip");
    fill(cache, &good, &body(2000, 9), 512).await;
    let debris = key("/debris/@v/v1.zip");
    fill(cache, &debris, &body(2000, 3), 512).await;
    let debris_meta = object_files(dir.path(), &debris)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "meta"))
        .expect("meta");
    fs::remove_file(&debris_meta).expect("rm meta"); // crashed after body rename, before meta

    let cache = open(config(dir.path()));
    assert!(object_files(dir.path(), &k).is_empty(), "temp file removed");
    assert!(
        object_files(dir.path(), &debris).is_empty(),
        "orphan body removed"
    );
    assert!(cache.lookup(&k, &span()).await.expect("lookup").is_none());
    assert_eq!(
        body_of(cache, &good).await.expect("good object"),
        body(2000, 9)
    );
}

#[tokio::test]
async fn corrupt_objects_are_misses_and_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(disk_only(dir.path()));

    // truncated body
    let truncated = key("/t/@v/v1.zip");
    fill(cache, &truncated, &body(10_000, 1), 4096).await;
    let f = fs::File::options()
        .write(true)
        .open(body_file(dir.path(), &truncated))
        .expect("open");
    f.set_len(5000).expect("truncate");
    assert!(cache
        .lookup(&truncated, &span())
        .await
        .expect("lookup")
        .is_none());
    assert!(object_files(dir.path(), &truncated).is_empty());

    // flipped bytes, small body: caught before the first byte is served
    let flipped = key("/f/@v/v1.zip");
    fill(cache, &flipped, &body(10_000, 2), 4096).await;
    flip(&body_file(dir.path(), &flipped), 1234, 0xff);
    assert!(cache
        .lookup(&flipped, &span())
        .await
        .expect("lookup")
        .is_none());
    assert!(object_files(dir.path(), &flipped).is_empty());

    // flipped bytes, large body: the read that would complete the body fails instead
    let large = key("/l/@v/v1.zip");
    let data = body(300 * KIB, 3);
    fill(cache, &large, &data, 64 * KIB).await;
    flip(&body_file(dir.path(), &large), 100, 0x01);
    let (_, mut h) = cache
        .lookup(&large, &span())
        .await
        .expect("lookup")
        .expect("length still matches, so it is served");
    let (served, err) = read_until_error(&mut h).await;
    assert!(served < data.len());
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(object_files(dir.path(), &large).is_empty());

    let stats = cache.stats();
    assert_eq!((stats.objects, stats.bytes), (0, 0), "{stats:?}");

    // garbage meta
    let garbage = key("/g/@v/v1.zip");
    fill(cache, &garbage, &body(100, 4), 4096).await;
    let meta_file = object_files(dir.path(), &garbage)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "meta"))
        .expect("meta");
    fs::write(&meta_file, b"MGCACHE1 but then nonsense").expect("write");
    assert!(cache
        .lookup(&garbage, &span())
        .await
        .expect("lookup")
        .is_none());
    assert!(object_files(dir.path(), &garbage).is_empty());

    let stats = cache.stats();
    assert_eq!(stats.corrupt_removed, 4);
    assert_eq!(stats.objects, 0, "{stats:?}");
    assert_eq!(stats.eviction_tracked_items, 0, "{stats:?}");
}

#[tokio::test]
async fn corrupt_files_found_at_open_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("/s/@v/v1.zip");
    let ok = key("/ok/@v/v1.zip");
    {
        let cache = open(config(dir.path()));
        fill(cache, &k, &body(5000, 1), 4096).await;
        fill(cache, &ok, &body(5000, 2), 4096).await;
    }
    let f = fs::File::options()
        .write(true)
        .open(body_file(dir.path(), &k))
        .expect("open");
    f.set_len(10).expect("truncate");
    let cache = open(config(dir.path()));
    assert_eq!(cache.stats().objects, 1);
    assert!(object_files(dir.path(), &k).is_empty());
    assert!(body_of(cache, &ok).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_stream_in_and_out_in_bounded_chunks() {
    const LEN: usize = 50 * MIB;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let k = key("/big/@v/v1.0.0.zip");

    // write 64 KiB chunks produced on the fly
    let mut miss = cache
        .get_miss_handler(&k, &meta(Some(LEN)), &span())
        .await
        .expect("miss");
    let mut crc_in = crc32fast::Hasher::new();
    let chunk = 64 * KIB;
    let mut written = 0;
    while written < LEN {
        let n = chunk.min(LEN - written);
        let piece = body(n, (written / chunk) as u8);
        crc_in.update(&piece);
        written += n;
        miss.write_body(piece.into(), written == LEN)
            .await
            .expect("write");
    }
    miss.finish().await.expect("finish");

    // read back without holding the body
    let (_, mut h) = cache
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    let mut crc_out = crc32fast::Hasher::new();
    let (mut total, mut chunks) = (0usize, 0usize);
    while let Some(b) = h.read_body().await.expect("read") {
        assert!(b.len() <= 64 * KIB, "chunk of {} bytes", b.len());
        crc_out.update(&b);
        total += b.len();
        chunks += 1;
    }
    assert_eq!(total, LEN);
    assert_eq!(chunks, LEN / (64 * KIB));
    assert_eq!(crc_out.finalize(), crc_in.finalize());
    assert_eq!(cache.stats().memory_objects, 0);
}

#[tokio::test]
async fn purge_removes_both_tiers_and_purge_where_matches_primary_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let small = key("/golang.org/x/mod/@v/v0.1.0.mod");
    let large = key("/golang.org/x/mod/@v/v0.1.0.zip");
    let other_version = key("/golang.org/x/mod/@v/v0.2.0.zip");
    let other_module = key("/golang.org/x/modx/@v/v0.1.0.zip");
    fill(cache, &small, b"module golang.org/x/mod\n", 100).await;
    for k in [&large, &other_version, &other_module] {
        fill(cache, k, &body(300 * KIB, 5), 64 * KIB).await;
    }
    assert!(body_of(cache, &small).await.is_some()); // in memory now

    // pingora's purge (PurgeTarget::Active from session.cache.purge())
    let compact = small.to_compact();
    let outcome = cache
        .purge(
            PurgeTarget::Active(&compact),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::Purged(None));
    assert!(cache
        .lookup(&small, &span())
        .await
        .expect("lookup")
        .is_none());
    assert!(object_files(dir.path(), &small).is_empty());
    assert_eq!(cache.stats().memory_objects, 0);
    let again = cache
        .purge(
            PurgeTarget::Active(&compact),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .expect("purge");
    assert_eq!(again, PurgeOutcome::NotFound);

    // list and purge by primary key, as `modgate cache purge golang.org/x/mod@v0.1.0` would
    let listed = cache.list_objects().expect("list");
    assert_eq!(listed.len(), 3);
    let zip = listed
        .iter()
        .find(|o| o.hash == large.combined())
        .expect("listed");
    assert_eq!(zip.primary_key, "goproxy|/golang.org/x/mod/@v/v0.1.0.zip");
    assert_eq!(zip.body_bytes, 300 * KIB as u64);
    assert_eq!(zip.status, Some(200));
    let report = cache
        .purge_where(|o| {
            o.primary_key
                .starts_with("goproxy|/golang.org/x/mod/@v/v0.1.0.")
        })
        .expect("purge");
    assert_eq!(report.objects, 1);
    assert!(cache
        .lookup(&large, &span())
        .await
        .expect("lookup")
        .is_none());
    assert!(!cache
        .eviction_manager()
        .peek(&CacheEntryKey::key_only(large.to_compact())));
    // whole module: the prefix ends at the module path, so golang.org/x/modx stays
    let report = cache
        .purge_prefix("goproxy|/golang.org/x/mod/@v/")
        .expect("purge");
    assert_eq!(report.objects, 1);
    assert!(body_of(cache, &other_module).await.is_some());
    assert_eq!(cache.stats().objects, 1);
}

#[tokio::test]
async fn a_purge_from_another_process_is_seen_by_the_memory_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = open(config(dir.path()));
    let k = key("/p/@v/list");
    fill(gateway, &k, b"v1.0.0\n", 100).await;
    assert!(body_of(gateway, &k).await.is_some());
    assert_eq!(gateway.stats().memory_objects, 1);

    let cli = open(config(dir.path()));
    assert_eq!(cli.purge_prefix("goproxy|/p/").expect("purge").objects, 1);
    assert!(gateway.lookup(&k, &span()).await.expect("lookup").is_none());
}

#[tokio::test]
async fn update_meta_and_expire_rewrite_only_the_meta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let (small, large) = (key("/u/@v/v1.info"), key("/u/@v/v1.zip"));
    fill(cache, &small, b"{}", 10).await;
    let large_body = body(2 * MIB, 6);
    fill(cache, &large, &large_body, 64 * KIB).await;

    for k in [&small, &large] {
        let mut h = ResponseHeader::build(200, None).expect("header");
        h.append_header("etag", "\"v2\"").expect("header");
        let now = SystemTime::now();
        let fresh = CacheMeta::new(now + Duration::from_secs(86_400), now, 1, 2, h);
        assert!(cache.update_meta(k, &fresh, &span()).await.expect("update"));
        let (m, _) = cache
            .lookup(k, &span())
            .await
            .expect("lookup")
            .expect("hit");
        assert_eq!(m.fresh_until(), fresh.fresh_until());
        assert_eq!(m.headers().get("etag").expect("etag"), "\"v2\"");

        let compact = k.to_compact();
        let outcome = cache
            .expire(PurgeTarget::Active(&compact), &span())
            .await
            .expect("expire");
        assert_eq!(outcome, PurgeOutcome::Expired);
        let (m, _) = cache
            .lookup(k, &span())
            .await
            .expect("lookup")
            .expect("still stored");
        assert!(!m.is_fresh(SystemTime::now() + Duration::from_secs(1)));
    }
    assert!(!cache
        .update_meta(&key("/absent"), &meta(None), &span())
        .await
        .expect("update"));

    // survives a restart, body untouched
    let cache = open(config(dir.path()));
    let (m, mut h) = cache
        .lookup(&large, &span())
        .await
        .expect("lookup")
        .expect("hit");
    assert_eq!(m.headers().get("etag").expect("etag"), "\"v2\"");
    assert!(!m.is_fresh(SystemTime::now()));
    assert_eq!(read_all(&mut h).await.0, large_body);
    assert_eq!(cache.stats().objects, 2);
}

#[tokio::test]
async fn replacing_an_object_keeps_one_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let k = key("/r/@v/v1.zip");
    fill(cache, &k, &body(400 * KIB, 1), 64 * KIB).await;
    let size = fill(cache, &k, &body(300 * KIB, 2), 64 * KIB).await;
    assert_eq!(body_of(cache, &k).await.expect("hit"), body(300 * KIB, 2));
    assert_eq!(object_files(dir.path(), &k).len(), 2, "one meta, one body");
    let stats = cache.stats();
    assert_eq!((stats.objects, stats.bytes), (1, size as u64));
}

#[tokio::test]
async fn readers_stream_a_write_in_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    assert!(cache.support_streaming_partial_write());
    let k = key("/s/@v/v1.zip");
    let m = meta(Some(10));
    let mut miss = cache.get_miss_handler(&k, &m, &span()).await.expect("miss");

    // the filling request's own reader (pingora: lookup_streaming_write with the tag)
    let tag = miss.streaming_write_tag().expect("tag").to_vec();
    let (_, mut own) = cache
        .lookup_streaming_write(&k, Some(&tag), &span())
        .await
        .expect("lookup")
        .expect("own write");
    // another request arriving meanwhile
    let (_, mut other) = cache
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("partial hit");
    assert!(!other.should_count_access());

    miss.write_body(b"hello"[..].into(), false)
        .await
        .expect("write");
    assert_eq!(own.read_body().await.expect("read").expect("data"), "hello");
    assert_eq!(
        other.read_body().await.expect("read").expect("data"),
        "hello"
    );
    let pending = tokio::time::timeout(Duration::from_millis(50), other.read_body()).await;
    assert!(pending.is_err(), "waits for more data");
    miss.write_body(b"world"[..].into(), true)
        .await
        .expect("write");
    assert_eq!(own.read_body().await.expect("read").expect("data"), "world");
    assert!(own.read_body().await.expect("read").is_none());
    miss.finish().await.expect("finish");
    assert_eq!(
        other.read_body().await.expect("read").expect("data"),
        "world"
    );
    assert!(other.read_body().await.expect("read").is_none());
    assert_eq!(body_of(cache, &k).await.expect("committed"), b"helloworld");

    // an abandoned write fails its readers instead of ending their body early
    let k2 = key("/s/@v/v2.zip");
    let mut miss = cache
        .get_miss_handler(&k2, &meta(None), &span())
        .await
        .expect("miss");
    miss.write_body(b"part"[..].into(), false)
        .await
        .expect("write");
    let (_, mut reader) = cache
        .lookup(&k2, &span())
        .await
        .expect("lookup")
        .expect("partial hit");
    assert_eq!(
        reader.read_body().await.expect("read").expect("data"),
        "part"
    );
    drop(miss);
    assert!(reader.read_body().await.is_err());
    assert!(cache.lookup(&k2, &span()).await.expect("lookup").is_none());
}

#[tokio::test]
async fn a_purge_during_a_write_prevents_its_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let k = key("/d/@v/v1.zip");
    let mut miss = cache
        .get_miss_handler(&k, &meta(None), &span())
        .await
        .expect("miss");
    miss.write_body(b"stale"[..].into(), true)
        .await
        .expect("write");
    let compact = k.to_compact();
    let outcome = cache
        .purge(
            PurgeTarget::Active(&compact),
            PurgeType::Invalidation,
            &span(),
        )
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::Purged(None));
    // reported as a weightless object (see DiskMissHandler::finish_failed)
    assert!(matches!(
        miss.finish().await.expect("finish"),
        MissFinishType::Created(0)
    ));
    assert!(cache.lookup(&k, &span()).await.expect("lookup").is_none());
    assert!(object_files(dir.path(), &k).is_empty());
}

#[tokio::test]
async fn bodies_that_break_their_promises_are_not_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path());
    c.max_object_bytes = 1000;
    c.streaming_partial_write = false; // finish reports failures as errors
    let cache = open(c);

    // shorter than Content-Length, finished without an eof write
    let k = key("/short/@v/v1.zip");
    let mut miss = cache
        .get_miss_handler(&k, &meta(Some(10)), &span())
        .await
        .expect("miss");
    miss.write_body(b"12345"[..].into(), false)
        .await
        .expect("write");
    assert!(miss.finish().await.is_err());
    assert!(cache.lookup(&k, &span()).await.expect("lookup").is_none());

    // shorter than Content-Length at eof
    let mut miss = cache
        .get_miss_handler(&k, &meta(Some(10)), &span())
        .await
        .expect("miss");
    assert!(miss.write_body(b"12345"[..].into(), true).await.is_err());
    drop(miss);

    // over the maximum object size: by Content-Length, and while streaming
    assert!(cache
        .get_miss_handler(&k, &meta(Some(1001)), &span())
        .await
        .is_err());
    let mut miss = cache
        .get_miss_handler(&k, &meta(None), &span())
        .await
        .expect("miss");
    miss.write_body(body(1000, 0).into(), false)
        .await
        .expect("write");
    assert!(miss.write_body(b"x"[..].into(), false).await.is_err());
    assert!(miss.finish().await.is_err());

    assert!(cache.lookup(&k, &span()).await.expect("lookup").is_none());
    assert_eq!(cache.stats().objects, 0);
    assert!(files_under(&dir.path().join("objects")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_for_different_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            tokio::spawn(async move {
                let k = key(&format!("/conc/m{i}/@v/v1.zip"));
                // mix memory-tier and disk-only sizes
                let data = body(if i % 2 == 0 { 2 * KIB } else { 400 * KIB }, i as u8);
                fill(cache, &k, &data, 16 * KIB).await;
                (k, data)
            })
        })
        .collect();
    let mut filled = Vec::new();
    for t in tasks {
        filled.push(t.await.expect("task"));
    }
    for (k, data) in &filled {
        assert_eq!(body_of(cache, k).await.expect("hit"), *data);
    }
    let stats = cache.stats();
    assert_eq!(stats.objects, 24);
    assert_eq!(stats.eviction_tracked_items, 24);
    assert_eq!(stats.eviction_tracked_bytes, stats.bytes);
}

#[test]
fn open_rejects_bad_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path());
    c.read_chunk_bytes = 0;
    assert!(DiskCache::open(c).is_err());
    let mut c = config(dir.path());
    c.memory_object_max_bytes = c.memory_budget_bytes + 1;
    assert!(DiskCache::open(c).is_err());
    // works outside any runtime (start-up, CLI), including saving the state
    let cache = DiskCache::open(config(dir.path())).expect("open");
    cache.save_state_blocking().expect("save");
}

#[tokio::test]
async fn persist_service_saves_periodically_and_at_shutdown() {
    use pingora::services::background::BackgroundService;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    fill(cache, &key("/ps/@v/list"), b"v1\n", 10).await;
    // leftovers of an interrupted save are cleaned at open
    fs::write(
        dir.path().join("eviction/simple_lru.data.deadbeef.tmp"),
        b"x",
    )
    .expect("write");
    // (the reconciliation at open saved one: start from none)
    let snapshot = dir.path().join("eviction/index.snapshot");
    fs::remove_file(&snapshot).expect("rm snapshot");
    let service = cache.persist_service(Duration::from_secs(3600));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { service.start(rx).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!snapshot.exists());
    tx.send(true).expect("shutdown");
    task.await.expect("service ends");
    assert!(snapshot.exists());

    let reopened = open(config(dir.path()));
    assert_eq!(reopened.stats().eviction_tracked_items, 1);
    assert!(!dir
        .path()
        .join("eviction/simple_lru.data.deadbeef.tmp")
        .exists());
}

#[tokio::test]
async fn by_default_a_one_mib_zip_is_a_hot_hit_and_zips_keep_to_half_the_memory_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = DiskCacheConfig::new(dir.path());
    c.memory_budget_bytes = 8 * MIB;
    let cache = open(c);
    let now = SystemTime::now();
    let info = key("/m/@v/v1.info");
    fill(cache, &info, b"{\"Version\":\"v1\"}", 100).await;
    for i in 0..8u8 {
        let zip = key(&format!("/m/@v/v1.{i}.zip"));
        let data = body(MIB, i);
        fill(cache, &zip, &data, 64 * KIB).await;
        assert_eq!(body_of(cache, &zip).await.expect("hit"), data);
        let hot = cache.hot_hit(&zip, now).expect("a 1 MiB zip is hot");
        assert_eq!(&hot.body[..], &data[..]);
    }
    // Eight 1 MiB zips in an 8 MiB tier: the last three fit in their half, and the .info
    // answer was never pushed out.
    let stats = cache.stats();
    assert_eq!(stats.memory_objects, 4, "{stats:?}");
    assert!(stats.memory_bytes <= 4 * MIB as u64 + 4096, "{stats:?}");
    assert!(cache.hot_hit(&info, now).is_some());
    assert!(cache.hot_hit(&key("/m/@v/v1.0.zip"), now).is_none());
    assert!(cache.hot_hit(&key("/m/@v/v1.7.zip"), now).is_some());
}

#[tokio::test]
async fn hot_hits_serve_fresh_memory_objects_and_step_aside_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(config(dir.path()));
    let now = SystemTime::now();
    let (small, large, absent) = (key("/h/@v/v1.info"), key("/h/@v/v1.zip"), key("/h/x"));
    fill(cache, &small, b"{\"Version\":\"v1\"}", 100).await;
    let large_body = body(2 * MIB, 3);
    fill(cache, &large, &large_body, 64 * KIB).await;

    // the same head and body as the normal lookup, plus the Age a hit carries
    let hot = cache
        .hot_hit(&small, now)
        .expect("a fresh memory object is hot");
    assert_eq!(&hot.body[..], b"{\"Version\":\"v1\"}");
    let head = hot.head(now + Duration::from_secs(5), false);
    // the HTTP/2 head: the same headers in the same order, only without their names' case
    let h2 = hot.head(now + Duration::from_secs(5), true);
    assert!(head.headers.iter().eq(h2.headers.iter()));
    assert_eq!((h2.status, h2.version), (head.status, head.version));
    let (m, _) = cache
        .lookup(&small, &span())
        .await
        .expect("lookup")
        .expect("hit");
    for (name, value) in m.headers() {
        assert_eq!(head.headers.get(name), Some(value), "{name}");
    }
    let age: u64 = head.headers["age"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!((4..=6).contains(&age), "age {age}");
    assert_eq!(head.version, http::Version::HTTP_11);
    assert_eq!(cache.stats().hits_hot, 1);

    // not in memory (too large), not stored, or stale: the normal path answers
    assert!(cache.hot_hit(&large, now).is_none());
    assert!(cache.hot_hit(&absent, now).is_none());
    assert!(cache
        .hot_hit(&small, now + Duration::from_secs(2 * 3600))
        .is_none());

    // a new meta is decoded again: expiring it ends hot hits at once
    let compact = small.to_compact();
    cache
        .expire(PurgeTarget::Active(&compact), &span())
        .await
        .expect("expire");
    assert!(cache
        .hot_hit(&small, SystemTime::now() + Duration::from_secs(1))
        .is_none());

    // a purge by another process (the CLI) is noticed
    let fresh = key("/h/@v/v2.info");
    fill(cache, &fresh, b"{}", 100).await;
    assert!(cache.hot_hit(&fresh, SystemTime::now()).is_some());
    let cli = open(config(dir.path()));
    assert_eq!(
        cli.purge_prefix("goproxy|/h/@v/v2").expect("purge").objects,
        1
    );
    assert!(cache.hot_hit(&fresh, SystemTime::now()).is_none());
    assert_eq!(cache.stats().hits_hot, 2);
}

#[tokio::test]
async fn a_small_body_verified_once_is_checked_while_it_streams_afterwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(disk_only(dir.path()));
    let k = key("/v/@v/v1.zip");
    let data = body(10_000, 4);
    fill(cache, &k, &data, 4096).await;
    // the first hit verifies the whole body before serving; the next ones stream it once
    for _ in 0..3 {
        assert_eq!(body_of(cache, &k).await.expect("hit"), data);
    }
    // changed on disk after that (same length): the hit is given out, but the read that would
    // complete the body fails and the object is removed
    flip(&body_file(dir.path(), &k), 4321, 0x10);
    let (_, mut h) = cache
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("verified before: served while checked");
    let (served, err) = read_until_error(&mut h).await;
    assert!(served < data.len(), "{served} bytes");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(object_files(dir.path(), &k).is_empty());
    assert!(cache.lookup(&k, &span()).await.expect("lookup").is_none());
}

#[tokio::test]
async fn a_range_of_a_small_body_verified_earlier_is_verified_again_before_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open(disk_only(dir.path()));
    let k = key("/r/@v/v1.zip");
    let data = body(10_000, 5);
    fill(cache, &k, &data, 4096).await;
    assert_eq!(body_of(cache, &k).await.expect("hit"), data); // verified whole

    // an intact range is served
    let (_, mut h) = cache
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    h.seek(100, Some(200)).expect("seek");
    assert_eq!(read_all(&mut h).await.0, data[100..200]);
    // changed on disk: the range is refused before its first byte and the object removed
    flip(&body_file(dir.path(), &k), 10, 0x01);
    let (_, mut h) = cache
        .lookup(&k, &span())
        .await
        .expect("lookup")
        .expect("hit");
    h.seek(0, Some(100)).expect("seek");
    let err = h.read_body().await.expect_err("a changed body's range");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(object_files(dir.path(), &k).is_empty());
}

#[tokio::test]
async fn another_process_changes_are_seen_without_a_check_per_hit() {
    let dir = tempfile::tempdir().expect("tempdir");
    // both open before anything is cached: opening is not what tells the gateway
    let gateway = open(config(dir.path()));
    let cli = open(config(dir.path()));
    let (purged, expired) = (key("/g/@v/v1.info"), key("/g/@v/v2.info"));
    fill(gateway, &purged, b"{\"v\":1}", 100).await;
    fill(gateway, &expired, b"{\"v\":2}", 100).await;
    for _ in 0..3 {
        // checked once, then trusted while nothing changes on disk
        assert!(gateway.hot_hit(&purged, SystemTime::now()).is_some());
        assert!(gateway.hot_hit(&expired, SystemTime::now()).is_some());
        assert!(body_of(gateway, &purged).await.is_some());
    }
    // a purge by the other process: the next hot hit and the next lookup see it
    assert_eq!(
        cli.purge_prefix("goproxy|/g/@v/v1").expect("purge").objects,
        1
    );
    assert!(gateway.hot_hit(&purged, SystemTime::now()).is_none());
    assert!(gateway
        .lookup(&purged, &span())
        .await
        .expect("lookup")
        .is_none());
    // an expiry by the other process rewrites the meta: no longer fresh here either
    let compact = expired.to_compact();
    cli.expire(PurgeTarget::Active(&compact), &span())
        .await
        .expect("expire");
    let later = SystemTime::now() + Duration::from_secs(1);
    assert!(gateway.hot_hit(&expired, later).is_none());
    let (m, _) = gateway
        .lookup(&expired, &span())
        .await
        .expect("lookup")
        .expect("still stored");
    assert!(!m.is_fresh(later));
}
