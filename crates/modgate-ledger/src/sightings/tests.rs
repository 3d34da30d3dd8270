//! Tests of the sightings store: first sightings win, feed pages and progress move together.

use super::*;

const M: &str = "example.com/m";

fn entry(module: &str, version: &str, at: i64) -> FeedEntry {
    FeedEntry {
        module: module.into(),
        version: version.into(),
        at,
    }
}

fn progress(start: i64, read_to: i64) -> FeedProgress {
    FeedProgress {
        window_start: start,
        cursor: format!("t{read_to}"),
        read_to,
    }
}

#[test]
fn the_first_sighting_wins_and_never_moves() {
    let s = Sightings::open_in_memory().expect("open");
    assert_eq!(s.record_seen(M, "v1.0.0", "list", 1000).expect("rec"), 1000);
    // Later and earlier sightings move nothing.
    assert_eq!(s.record_seen(M, "v1.0.0", "zip", 2000).expect("rec"), 1000);
    assert_eq!(s.record_seen(M, "v1.0.0", "info", 10).expect("rec"), 1000);
    let got = s.get(M, "v1.0.0").expect("get");
    assert_eq!(got.first_seen, Some(1000));
    assert_eq!(got.first_seen_how.as_deref(), Some("list"));
    assert_eq!(got.feed, None);
    assert_eq!(got.seeded, None);
    // Many at once: existing ones keep their time.
    let times = s
        .record_seen_many(M, &["v1.0.0", "v1.1.0"], "list", 3000)
        .expect("many");
    assert_eq!(times, vec![1000, 3000]);
}

#[test]
fn unknown_versions_read_as_empty() {
    let s = Sightings::open_in_memory().expect("open");
    let got = s.get(M, "v9.0.0").expect("get");
    assert_eq!(got.module, M);
    assert_eq!(got.version, "v9.0.0");
    assert_eq!((got.first_seen, got.feed, got.seeded), (None, None, None));
}

#[test]
fn seeding_is_kept_with_who_and_is_idempotent() {
    let s = Sightings::open_in_memory().expect("open");
    s.record_seen(M, "v1.0.0", "zip", 500).expect("rec");
    assert!(s.seed(M, "v1.0.0", "operator:alice", 600).expect("seed"));
    assert!(!s.seed(M, "v1.0.0", "operator:bob", 700).expect("seed"));
    assert_eq!(
        s.seed_many(&[(M, "v1.0.0"), (M, "v2.0.0")], "operator:bob", 800)
            .expect("many"),
        1
    );
    let got = s.get(M, "v1.0.0").expect("get");
    assert_eq!(got.seeded, Some(600));
    assert_eq!(got.seeded_by.as_deref(), Some("operator:alice"));
    assert_eq!(got.first_seen, Some(500), "seeding leaves the sighting");
    // Seeding then seeing keeps both.
    s.record_seen(M, "v2.0.0", "list", 900).expect("rec");
    let got = s.get(M, "v2.0.0").expect("get");
    assert_eq!((got.seeded, got.first_seen), (Some(800), Some(900)));
}

#[test]
fn a_feed_page_and_its_progress_are_stored_together() {
    let s = Sightings::open_in_memory().expect("open");
    let feed = "https://index.example";
    assert_eq!(s.feed_progress(feed).expect("p"), None);
    // A page before any reset is refused: progress has to start somewhere.
    let e = s
        .record_feed_page(feed, &[entry(M, "v1.0.0", 150)], &progress(100, 150), 1)
        .expect_err("no start");
    assert!(e.to_string().contains("reset_feed"), "{e}");
    assert_eq!(
        s.get(M, "v1.0.0").expect("get").feed,
        None,
        "nothing written"
    );

    s.reset_feed(feed, &progress(100, 100), 1).expect("reset");
    s.record_feed_page(
        feed,
        &[entry(M, "v1.0.0", 150), entry(M, "v1.1.0", 160)],
        &progress(100, 160),
        2,
    )
    .expect("page");
    assert_eq!(s.feed_progress(feed).expect("p"), Some(progress(100, 160)));
    assert_eq!(s.get(M, "v1.0.0").expect("get").feed, Some(150));
    // The boundary duplicate of the next page changes nothing; the earliest time is kept.
    s.record_feed_page(
        feed,
        &[entry(M, "v1.1.0", 160), entry(M, "v1.0.0", 170)],
        &progress(100, 170),
        3,
    )
    .expect("page");
    assert_eq!(s.get(M, "v1.0.0").expect("get").feed, Some(150));
    // Progress never moves back, and never to another window without a reset.
    assert!(s
        .record_feed_page(feed, &[], &progress(100, 120), 4)
        .is_err());
    assert!(s
        .record_feed_page(feed, &[entry(M, "v3.0.0", 1)], &progress(90, 200), 4)
        .is_err());
    assert_eq!(s.get(M, "v3.0.0").expect("get").feed, None);
    assert_eq!(s.feed_progress(feed).expect("p"), Some(progress(100, 170)));
}

#[test]
fn the_store_survives_reopening_and_refuses_non_databases() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("sub/sightings.sqlite");
    {
        let s = Sightings::open(&path).expect("open");
        s.record_seen(M, "v1.0.0", "zip", 42).expect("rec");
        s.reset_feed("f", &progress(1, 1), 1).expect("reset");
    }
    let s = Sightings::open(&path).expect("reopen");
    assert_eq!(s.get(M, "v1.0.0").expect("get").first_seen, Some(42));
    assert_eq!(s.feed_progress("f").expect("p"), Some(progress(1, 1)));
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![b'x'; 4096]).expect("write");
    let e = Sightings::open(&junk).expect_err("not a database");
    assert!(e.to_string().contains("sightings store"), "{e}");
}

#[test]
fn bad_names_are_refused() {
    let s = Sightings::open_in_memory().expect("open");
    assert!(s.record_seen("", "v1.0.0", "zip", 1).is_err());
    assert!(s.record_seen(M, "v1\n", "zip", 1).is_err());
    assert!(s.seed(M, "v1.0.0", "", 1).is_err());
}

#[test]
fn only_rows_known_from_the_index_alone_are_pruned() {
    let s = Sightings::open_in_memory().expect("open");
    s.reset_feed("f", &progress(0, 0), 1).expect("reset");
    let entries: Vec<FeedEntry> = (0..5)
        .map(|i| entry(M, &format!("v1.{i}.0"), 100 + i))
        .collect();
    s.record_feed_page("f", &entries, &progress(0, 200), 2)
        .expect("page");
    s.record_seen(M, "v1.0.0", "zip", 300).expect("seen");
    s.seed(M, "v1.1.0", "operator:a", 300).expect("seed");
    // Before 104: v1.0.0 (seen), v1.1.0 (seeded) stay; v1.2.0 and v1.3.0 go, one per call.
    assert_eq!(s.prune_index_only(104, 1).expect("prune"), 1);
    assert_eq!(s.prune_index_only(104, 10).expect("prune"), 1);
    assert_eq!(s.prune_index_only(104, 10).expect("prune"), 0);
    let left: Vec<String> = s
        .list(M)
        .expect("list")
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(left, ["v1.0.0", "v1.1.0", "v1.4.0"]);
}

#[test]
fn see_records_only_the_unseen_and_returns_every_record() {
    let s = Sightings::open_in_memory().expect("open");
    s.seed(M, "v1.0.0", "operator:a", 5).expect("seed");
    s.record_seen(M, "v1.1.0", "zip", 10).expect("seen");
    let got = s
        .see(M, &["v1.0.0", "v1.1.0", "v1.2.0"], "list", 20)
        .expect("see");
    let firsts: Vec<_> = got
        .iter()
        .map(|g| (g.version.as_str(), g.first_seen))
        .collect();
    assert_eq!(
        firsts,
        [
            ("v1.0.0", Some(20)),
            ("v1.1.0", Some(10)),
            ("v1.2.0", Some(20))
        ]
    );
    assert_eq!(got[0].seeded, Some(5));
    assert_eq!(got[2].first_seen_how.as_deref(), Some("list"));
    // Again later: nothing moves.
    let again = s
        .see(M, &["v1.0.0", "v1.1.0", "v1.2.0"], "zip", 30)
        .expect("see");
    assert_eq!(again, got);
}
