//! The disk cache when its filesystem cannot take an object, and opened for inspection:
//!
//! - an object that does not fit (its length plus the reserve kept free) is refused before any
//!   file is made, counted as a no-space write failure, and leaves nothing promised;
//! - a write in progress holds its length (less what it has written) against the free space
//!   until it ends, however it ends;
//! - [`DiskCache::inspect`] opens without the start-up scan: a torn object stays for
//!   `read_checked` to report, where [`DiskCache::open`] removes it.

use modgate_cache::{CacheError, DiskCache, DiskCacheConfig};
use pingora::cache::key::CacheHashKey;
use pingora::cache::storage::MissFinishType;
use pingora::cache::trace::{Span, SpanHandle};
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn span() -> SpanHandle {
    Span::inactive().handle()
}

fn key(path: &str) -> CacheKey {
    CacheKey::new(format!("goproxy|{path}"), "")
}

fn meta(content_length: Option<usize>) -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).expect("header");
    if let Some(len) = content_length {
        h.insert_header("content-length", len.to_string())
            .expect("header");
    }
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 60, 120, h)
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn objects(root: &Path) -> Vec<PathBuf> {
    let mut files = files_under(&root.join("objects"));
    files.sort();
    files
}

#[tokio::test]
async fn an_object_that_does_not_fit_is_refused_before_any_file_is_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = DiskCacheConfig::new(dir.path());
    c.fsync = false;
    // more than any filesystem has free
    c.min_free_bytes = u64::MAX / 4;
    let cache = DiskCache::open(c).expect("open");
    let err = cache
        .check_space("goproxy|/m/@v/v1.0.0.zip", Some(10))
        .expect_err("does not fit");
    assert!(err.is_no_space(), "{err}");
    assert!(
        matches!(err, CacheError::NoSpace { .. }) && err.to_string().contains("is full"),
        "{err}"
    );
    let k = key("/m/@v/v1.0.0.zip");
    let refused = cache.get_miss_handler(&k, &meta(Some(10)), &span()).await;
    assert!(refused.is_err(), "a write was started");
    let unknown = cache.get_miss_handler(&k, &meta(None), &span()).await;
    assert!(
        unknown.is_err(),
        "a body of unknown length must leave the reserve too"
    );
    assert!(objects(dir.path()).is_empty(), "{:?}", objects(dir.path()));
    let stats = cache.stats();
    assert_eq!(stats.write_failures_no_space, 3);
    assert_eq!(stats.write_failures_io, 0);
    assert_eq!(stats.reserved_bytes, 0);
    assert_eq!(cache.write_failures(), (3, 0));
    assert!(cache.lookup(&k, &span()).await.expect("lookup").is_none());
}

#[tokio::test]
async fn a_write_holds_its_length_against_the_free_space_until_it_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = DiskCacheConfig::new(dir.path());
    c.fsync = false;
    c.min_free_bytes = 0;
    let cache = DiskCache::open(c).expect("open");
    let (a, b) = (key("/a/@v/v1.0.0.zip"), key("/b/@v/v1.0.0.zip"));
    let mut first = cache
        .get_miss_handler(&a, &meta(Some(1000)), &span())
        .await
        .expect("miss");
    assert_eq!(cache.stats().reserved_bytes, 1000);
    first
        .write_body(vec![7u8; 400].into(), false)
        .await
        .expect("write");
    assert_eq!(cache.stats().reserved_bytes, 600);
    // a second write adds its own promise; one of unknown length promises nothing
    let second = cache
        .get_miss_handler(&b, &meta(Some(50)), &span())
        .await
        .expect("miss");
    let third = cache
        .get_miss_handler(&key("/c/@v/list"), &meta(None), &span())
        .await
        .expect("miss");
    assert_eq!(cache.stats().reserved_bytes, 650);
    // abandoned: its promise goes with it
    drop(second);
    drop(third);
    assert_eq!(cache.stats().reserved_bytes, 600);
    first
        .write_body(vec![7u8; 600].into(), true)
        .await
        .expect("write");
    assert_eq!(cache.stats().reserved_bytes, 0);
    match first.finish().await.expect("finish") {
        MissFinishType::Created(n) => assert!(n >= 1000),
        MissFinishType::Appended(..) => panic!("unexpected append"),
    }
    assert_eq!(cache.stats().reserved_bytes, 0);
    assert_eq!(cache.write_failures(), (0, 0));
    assert!(cache.lookup(&a, &span()).await.expect("lookup").is_some());
}

#[tokio::test]
async fn inspect_leaves_a_torn_object_for_verify_to_report_and_open_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = DiskCacheConfig::new(dir.path());
    c.fsync = false;
    let k = key("/m/@v/v1.0.0.zip");
    {
        let cache = DiskCache::open(c.clone()).expect("open");
        assert!(cache.wait_reconciled(std::time::Duration::from_secs(60)));
        let mut miss = cache
            .get_miss_handler(&k, &meta(Some(4096)), &span())
            .await
            .expect("miss");
        miss.write_body(vec![1u8; 4096].into(), true)
            .await
            .expect("write");
        miss.finish().await.expect("finish");
    }
    let hash = k.combined();
    let body = objects(dir.path())
        .into_iter()
        .find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&hash) && !name.ends_with(".meta")
        })
        .expect("body file");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&body)
        .expect("open body")
        .set_len(2048)
        .expect("truncate");
    let before = objects(dir.path());

    let inspected = DiskCache::inspect(c.clone()).expect("inspect");
    assert_eq!(objects(dir.path()), before, "inspect removed files");
    let listed = inspected.list_objects().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].primary_key, "goproxy|/m/@v/v1.0.0.zip");
    let err = inspected.read_checked(&hash).expect_err("torn");
    assert!(
        err.to_string()
            .contains("body has 2048 bytes, meta says 4096"),
        "{err}"
    );
    assert_eq!(objects(dir.path()), before, "read_checked removed files");

    // the reconciliation after a real open removes it
    let cache = DiskCache::open(c).expect("open");
    assert!(cache.wait_reconciled(std::time::Duration::from_secs(60)));
    assert!(objects(dir.path()).is_empty(), "{:?}", objects(dir.path()));
}
