//! Tests of the start-up path: the index restored from its snapshot (and nothing else), stale
//! and corrupt snapshots, and the reconciliation converging on what a rebuild from the directory
//! alone finds, also while writes and purges run beside it.

use super::*;
use crate::index::snapshot;
use crate::DiskCacheConfig;
use pingora::cache::eviction::CacheEntryKey;
use pingora::cache::key::CacheHashKey;
use pingora::cache::storage::{MissFinishType, PurgeTarget};
use pingora::cache::trace::{Span, SpanHandle};
use pingora::cache::{CacheKey, CacheMeta, PurgeType, Storage};
use pingora::http::ResponseHeader;
use std::collections::BTreeMap;

fn span() -> SpanHandle {
    Span::inactive().handle()
}

fn config(root: &Path) -> DiskCacheConfig {
    let mut c = DiskCacheConfig::new(root);
    c.fsync = false;
    c.max_disk_bytes = 64 << 20;
    c
}

fn key(i: usize) -> CacheKey {
    CacheKey::new(format!("goproxy|/m{i}/@v/v1.0.0.info"), "")
}

fn meta(len: usize) -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).expect("header");
    h.insert_header("content-length", len.to_string())
        .expect("header");
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(3600), now, 60, 120, h)
}

/// Store `len` bytes under `key(i)` and admit it, as Pingora's `finish_miss_handler` does.
async fn fill(cache: &'static DiskCache, i: usize, len: usize) {
    let k = key(i);
    let mut miss = cache
        .get_miss_handler(&k, &meta(len), &span())
        .await
        .expect("miss handler");
    miss.write_body(vec![i as u8; len].into(), true)
        .await
        .expect("write");
    let MissFinishType::Created(size) = miss.finish().await.expect("finish") else {
        panic!("not created");
    };
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

async fn purge(cache: &'static DiskCache, i: usize) {
    let item = CacheEntryKey::key_only(key(i).to_compact());
    cache
        .purge(PurgeTarget::Exact(&item), PurgeType::Invalidation, &span())
        .await
        .expect("purge");
    // Pingora then forgets the entry
    cache
        .eviction_manager()
        .remove(pingora::cache::eviction::CacheEntryKeyRef::KeyOnly(
            item.key(),
        ));
}

async fn found(cache: &'static DiskCache, i: usize) -> bool {
    cache
        .lookup(&key(i), &span())
        .await
        .expect("lookup")
        .is_some()
}

/// A cache with a reconciler that ran to its end.
fn open_reconciled(c: DiskCacheConfig) -> &'static DiskCache {
    let cache = DiskCache::open(c).expect("open");
    assert!(cache.wait_reconciled(Duration::from_secs(60)));
    cache
}

/// Opened from whatever snapshot there is, the reconciliation not started (run it by hand).
fn open_held(c: DiskCacheConfig) -> &'static DiskCache {
    Box::leak(Box::new(DiskCache::open_owned(c, true).expect("open")))
}

/// Every object on disk by its files alone: hash → meta plus body bytes.
fn disk_truth(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let objects = root.join("objects");
    for a in fs::read_dir(&objects).expect("objects").flatten() {
        for b in fs::read_dir(a.path()).expect("dir").flatten() {
            let names: Vec<String> = fs::read_dir(b.path())
                .expect("dir")
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .collect();
            for name in &names {
                let Some(hash) = name.strip_suffix(".meta") else {
                    continue;
                };
                let bodies: Vec<&String> = names
                    .iter()
                    .filter(|n| n.starts_with(&format!("{hash}.")) && n.ends_with(".body"))
                    .collect();
                assert_eq!(bodies.len(), 1, "{hash}: {bodies:?}");
                let len = |n: &str| fs::metadata(b.path().join(n)).expect("stat").len();
                out.insert(hash.to_string(), len(name) + len(bodies[0]));
            }
        }
    }
    out
}

/// The index: hash → weight, and the hashes in LRU order.
fn index_of(cache: &DiskCache) -> (BTreeMap<String, u64>, Vec<String>) {
    cache.eviction.with(|lru| {
        let (mut map, mut order) = (BTreeMap::new(), Vec::new());
        lru.for_each_ordered(|h, w| {
            map.insert(hex_of(h), w);
            order.push(hex_of(h));
        });
        (map, order)
    })
}

fn gauges(cache: &DiskCache) -> (u64, u64) {
    let s = cache.stats();
    (s.objects, s.bytes)
}

fn totals(truth: &BTreeMap<String, u64>) -> (u64, u64) {
    (truth.len() as u64, truth.values().sum())
}

#[tokio::test]
async fn open_restores_the_index_from_the_snapshot_without_the_object_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open_reconciled(config(dir.path()));
    for i in 0..20 {
        fill(cache, i, 100 + i).await;
    }
    // reorder: 3 and 7 most recently used
    for i in [3, 7] {
        assert!(cache
            .eviction
            .with(|lru| lru.touch(hash_of_hex(&key(i).combined()).expect("hash"))));
    }
    cache.save_state().await.expect("save");
    let saved = index_of(cache);

    // without its objects directory at all, open still has the whole index
    let objects = dir.path().join("objects");
    let away = dir.path().join("objects.away");
    fs::rename(&objects, &away).expect("move objects");
    let reopened = open_held(config(dir.path()));
    assert_eq!(index_of(reopened), saved, "same entries, weights and order");
    assert_eq!(gauges(reopened), totals(&saved.0));
    assert_eq!(reopened.stats().eviction_tracked_items, 20);
    assert_eq!(
        saved.1.last(),
        Some(&key(7).combined()),
        "the order survives"
    );
    assert!(!reopened.is_reconciled());
    fs::remove_dir_all(&objects).expect("rm the empty objects dir");
    fs::rename(&away, &objects).expect("move back");
    run(reopened);
    assert!(reopened.is_reconciled());
    assert_eq!(index_of(reopened), saved, "nothing to correct");
    assert_eq!(gauges(reopened), totals(&disk_truth(dir.path())));
}

#[tokio::test]
async fn a_stale_snapshot_is_corrected_objects_added_and_removed_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open_reconciled(config(dir.path()));
    for i in 0..10 {
        fill(cache, i, 50).await;
    }
    cache.save_state().await.expect("save");
    // after the snapshot: five new objects, two purged, one deleted by hand, one rewritten
    // with another size; then "kill -9" (no save)
    for i in 10..15 {
        fill(cache, i, 70).await;
    }
    purge(cache, 0).await;
    purge(cache, 1).await;
    let h2 = key(2).combined();
    let dir2 = dir.path().join("objects").join(&h2[..2]).join(&h2[2..4]);
    for e in fs::read_dir(&dir2).expect("dir").flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(&h2)) {
            fs::remove_file(e.path()).expect("rm");
        }
    }
    fill(cache, 3, 500).await;

    let reopened = open_held(config(dir.path()));
    assert_eq!(reopened.stats().eviction_tracked_items, 10, "the snapshot");
    // before any reconciliation: new objects are found, gone ones are clean misses
    for i in 10..15 {
        assert!(found(reopened, i).await, "m{i} written after the snapshot");
    }
    for i in 0..3 {
        assert!(!found(reopened, i).await, "m{i} is gone");
    }
    let stale = CacheEntryKey::key_only(key(2).to_compact());
    assert!(
        reopened.eviction_manager().peek(&stale),
        "still in the index"
    );
    // evicting a stale entry is harmless
    let out = reopened
        .purge(PurgeTarget::Exact(&stale), PurgeType::Eviction, &span())
        .await
        .expect("purge");
    assert!(matches!(
        out,
        pingora::cache::storage::PurgeOutcome::NotFound
    ));

    run(reopened);
    let truth = disk_truth(dir.path());
    assert_eq!(truth.len(), 12);
    let (index, order) = index_of(reopened);
    assert_eq!(index, truth, "index = directory, weights included");
    assert_eq!(gauges(reopened), totals(&truth));
    // written after the snapshot: most recently used
    let newest: Vec<String> = (10..15).map(|i| key(i).combined()).collect();
    let mut tail = order[order.len() - 5..].to_vec();
    tail.sort();
    let mut want = newest.clone();
    want.sort();
    assert_eq!(tail, want);
    // the reconciliation saved a fresh snapshot
    let loaded = snapshot::read(&dir.path().join("eviction").join(snapshot::FILE))
        .expect("readable")
        .expect("exists");
    assert_eq!(loaded.lru.len(), 12);
}

#[tokio::test]
async fn a_corrupt_or_truncated_snapshot_falls_back_to_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open_reconciled(config(dir.path()));
    for i in 0..8 {
        fill(cache, i, 30 + i).await;
    }
    cache.save_state().await.expect("save");
    let path = dir.path().join("eviction").join(snapshot::FILE);
    let good = fs::read(&path).expect("read");
    let truth = disk_truth(dir.path());
    let mut flipped = good.clone();
    flipped[40] ^= 1;
    for bad in [
        flipped,
        good[..good.len() - 9].to_vec(),
        b"nonsense".to_vec(),
    ] {
        fs::write(&path, &bad).expect("write");
        let reopened = open_held(config(dir.path()));
        assert_eq!(reopened.stats().eviction_tracked_items, 0, "not trusted");
        assert_eq!(gauges(reopened), (0, 0));
        for i in 0..8 {
            assert!(found(reopened, i).await, "m{i} served from disk meanwhile");
        }
        run(reopened);
        assert_eq!(index_of(reopened).0, truth);
        assert_eq!(gauges(reopened), totals(&truth));
        assert!(
            snapshot::read(&path).expect("rewritten").is_some(),
            "a good snapshot again"
        );
    }
}

#[tokio::test]
async fn after_kill_9_the_reconciliation_converges_to_a_full_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(dir.path());
    c.max_disk_bytes = 60 * 400; // room for about 60 objects below
    let cache = open_reconciled(c.clone());
    for i in 0..50 {
        fill(cache, i, 300).await;
    }
    cache.save_state().await.expect("save");
    // writes after the snapshot: new objects (evicting old ones), replacements, purges
    for i in 50..80 {
        fill(cache, i, 300).await;
    }
    for i in [55, 60, 65] {
        purge(cache, i).await;
    }
    fill(cache, 70, 10).await;
    // debris of a crash: a temp file and an orphan body
    let h = key(999).combined();
    let d = dir.path().join("objects").join(&h[..2]).join(&h[2..4]);
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join(format!("{h}.0000000000000001.body.tmp")), b"x").expect("temp");
    fs::write(d.join(format!("{h}.0000000000000001.body")), b"y").expect("orphan");

    let from_snapshot = open_held(c.clone());
    run(from_snapshot);
    let (a, _) = index_of(from_snapshot);
    let ga = gauges(from_snapshot);
    assert!(!d.join(format!("{h}.0000000000000001.body")).exists());
    assert!(
        fs::read_dir(&d).expect("dir").next().is_none(),
        "debris gone"
    );

    fs::remove_file(dir.path().join("eviction").join(snapshot::FILE)).expect("rm");
    let from_scan = open_held(c);
    run(from_scan);
    let (b, _) = index_of(from_scan);
    assert_eq!(a, b, "same index");
    assert_eq!(ga, gauges(from_scan), "same gauges");
    let truth = disk_truth(dir.path());
    assert_eq!(a, truth);
    assert_eq!(ga, totals(&truth));
    assert!(ga.1 <= 60 * 400, "within the budget: {ga:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_stay_exact_when_writes_and_purges_run_beside_the_reconciliation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = open_reconciled(config(dir.path()));
    for i in 0..300 {
        fill(cache, i, 40).await;
    }
    cache.save_state().await.expect("save");
    for i in 300..400 {
        fill(cache, i, 40).await;
    }
    for i in 0..50 {
        purge(cache, i).await;
    }
    let reopened = open_held(config(dir.path()));
    start(reopened);
    // meanwhile: new objects, replacements with other sizes, purges, all over the hash space
    let mut round = 0;
    while !reopened.is_reconciled() && round < 2_000 {
        let i = 1_000 + round;
        fill(reopened, i, 20 + round % 50).await;
        fill(reopened, 100 + round % 200, 10 + round % 90).await;
        purge(reopened, 300 + round % 100).await;
        round += 1;
    }
    assert!(reopened.wait_reconciled(Duration::from_secs(60)));
    let truth = disk_truth(dir.path());
    assert_eq!(gauges(reopened), totals(&truth), "after {round} rounds");
    assert_eq!(index_of(reopened).0, truth);
}
