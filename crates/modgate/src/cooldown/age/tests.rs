//! The cases of the cooldown rules, one test each.

use super::*;

const DAY: i64 = 86_400;
const WINDOW: i64 = 7 * DAY;
/// 2026-06-01T00:00:00Z.
const NOW: i64 = 1_780_272_000;

fn seen(version: &str) -> VersionSightings {
    VersionSightings {
        module: "example.com/m".into(),
        version: version.into(),
        ..Default::default()
    }
}

/// The index read from before the window's start up to `read_to`.
fn caught_up(read_to: i64) -> FeedProgress {
    FeedProgress {
        window_start: NOW - WINDOW - 60,
        cursor: show_time(read_to),
        read_to,
    }
}

fn new_until(a: &Age) -> i64 {
    match a {
        Age::New { available_at, .. } => *available_at,
        other => panic!("expected new, got {other:?}"),
    }
}

fn why(a: &Age) -> &str {
    match a {
        Age::Old { why } | Age::New { why, .. } | Age::Unknown { why } => why,
    }
}

#[test]
fn times_are_shown_and_read_in_utc() {
    assert_eq!(show_time(NOW), "2026-06-01T00:00:00Z");
    assert_eq!(show_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(unix_of(2026, 6, 1, 0, 0, 0), Some(NOW));
    assert_eq!(unix_of(2026, 2, 30, 0, 0, 0), None);
    assert_eq!(
        pseudo_version_time("v0.0.0-20191109021931-daa7c04131f5"),
        unix_of(2019, 11, 9, 2, 19, 31)
    );
    assert_eq!(
        pseudo_version_time("v1.2.4-0.20260531120000-daa7c04131f5"),
        Some(NOW - 12 * 3600)
    );
    assert_eq!(
        pseudo_version_time("v2.0.1-pre.0.20260531120000-daa7c04131f5+incompatible"),
        Some(NOW - 12 * 3600)
    );
    assert_eq!(pseudo_version_time("v1.2.3"), None);
    assert_eq!(pseudo_version_time("v1.2.3-rc.1"), None);
    // A pseudo-version whose stamp is no date has no time (only its trusted times count).
    assert_eq!(
        pseudo_version_time("v0.0.0-20191399021931-daa7c04131f5"),
        None
    );
}

#[test]
fn a_version_the_index_listed_inside_the_window_is_new_until_the_window_passes() {
    let mut s = seen("v1.2.0");
    s.feed = Some(NOW - DAY);
    let p = caught_up(NOW);
    let a = age(&s, Vouch::Feed(Some(&p)), NOW, WINDOW, None);
    assert_eq!(new_until(&a), NOW - DAY + WINDOW);
    assert!(why(&a).contains("module index"), "{a:?}");
    // And old once the clock has passed the window: exactly at the boundary.
    let later = NOW - DAY + WINDOW;
    assert!(age(&s, Vouch::Feed(Some(&p)), later, WINDOW, None).is_old());
    assert_eq!(
        new_until(&age(&s, Vouch::Feed(Some(&p)), later - 1, WINDOW, None)),
        later
    );
}

#[test]
fn an_info_time_back_dated_by_years_is_still_new() {
    let mut s = seen("v1.2.0");
    s.feed = Some(NOW - 3600);
    s.first_seen = Some(NOW - 60);
    let p = caught_up(NOW);
    let three_years_ago = NOW - 3 * 365 * DAY;
    let a = age(
        &s,
        Vouch::Feed(Some(&p)),
        NOW,
        WINDOW,
        Some(three_years_ago),
    );
    assert_eq!(new_until(&a), NOW - 3600 + WINDOW);
    // Private: the gateway's own sighting, likewise.
    let a = age(&s, Vouch::GatewayOnly, NOW, WINDOW, Some(three_years_ago));
    assert_eq!(new_until(&a), NOW - 60 + WINDOW);
}

#[test]
fn a_back_dated_pseudo_version_is_still_new() {
    let mut s = seen("v0.0.0-20190101000000-daa7c04131f5");
    s.feed = Some(NOW - 3600);
    let p = caught_up(NOW);
    assert_eq!(
        new_until(&age(&s, Vouch::Feed(Some(&p)), NOW, WINDOW, None)),
        NOW - 3600 + WINDOW
    );
}

#[test]
fn an_author_time_can_make_a_version_younger() {
    let mut s = seen("v1.2.0");
    s.feed = Some(NOW - 30 * DAY);
    let p = caught_up(NOW);
    assert!(age(&s, Vouch::Feed(Some(&p)), NOW, WINDOW, None).is_old());
    let a = age(&s, Vouch::Feed(Some(&p)), NOW, WINDOW, Some(NOW - DAY));
    assert_eq!(new_until(&a), NOW - DAY + WINDOW);
    assert!(why(&a).contains(".info Time"), "{a:?}");
    // A pseudo-version's own time likewise.
    let mut s = seen("v0.0.0-20260531000000-daa7c04131f5");
    s.feed = Some(NOW - 30 * DAY);
    let a = age(&s, Vouch::Feed(Some(&p)), NOW, WINDOW, None);
    assert_eq!(new_until(&a), NOW - DAY + WINDOW);
    assert!(why(&a).contains("pseudo-version"), "{a:?}");
}

#[test]
fn an_old_version_never_seen_before_is_old_once_the_index_is_read_past_its_first_sighting() {
    let mut s = seen("v1.0.0");
    s.first_seen = Some(NOW - 5);
    s.first_seen_how = Some("info".into());
    let a = age(&s, Vouch::Feed(Some(&caught_up(NOW))), NOW, WINDOW, None);
    assert!(a.is_old(), "{a:?}");
    assert!(why(&a).contains("not listed by the module index"), "{a:?}");
    // An old .info Time cannot make it younger; a recent one can.
    assert!(age(&s, Vouch::Feed(Some(&caught_up(NOW))), NOW, WINDOW, Some(0)).is_old());
}

#[test]
fn until_the_index_has_caught_up_a_fresh_tag_counts_as_new() {
    let mut s = seen("v1.3.0");
    s.first_seen = Some(NOW - 5);
    // Read up to exactly the sighting: an entry with that time could be on the next page.
    for p in [caught_up(NOW - 60), caught_up(NOW - 5)] {
        let a = age(&s, Vouch::Feed(Some(&p)), NOW, WINDOW, None);
        assert_eq!(new_until(&a), NOW - 5 + WINDOW, "{p:?}");
        assert!(why(&a).contains("read only up to"), "{a:?}");
    }
    // Read from a later start than the window's (the window grew): no proof either.
    let late = FeedProgress {
        window_start: NOW - WINDOW + 60,
        cursor: String::new(),
        read_to: NOW,
    };
    let a = age(&s, Vouch::Feed(Some(&late)), NOW, WINDOW, None);
    assert_eq!(new_until(&a), NOW - 5 + WINDOW);
    assert!(why(&a).contains("not yet from the window's start"), "{a:?}");
    // Never read (the index unreachable since start).
    let a = age(&s, Vouch::Feed(None), NOW, WINDOW, None);
    assert!(why(&a).contains("has not been read yet"), "{a:?}");
    assert_eq!(new_until(&a), NOW - 5 + WINDOW);
}

#[test]
fn a_fresh_tag_the_index_lists_after_the_sighting_is_new_from_the_earlier_time() {
    let mut s = seen("v1.3.0");
    s.first_seen = Some(NOW - 50);
    s.feed = Some(NOW - 40);
    let a = age(&s, Vouch::Feed(Some(&caught_up(NOW))), NOW, WINDOW, None);
    assert_eq!(new_until(&a), NOW - 50 + WINDOW);
    assert!(why(&a).contains("first seen by this gateway"), "{a:?}");
}

#[test]
fn a_version_the_index_listed_before_the_window_is_old() {
    let mut s = seen("v1.0.0");
    s.feed = Some(NOW - WINDOW - DAY);
    s.first_seen = Some(NOW);
    assert!(age(&s, Vouch::Feed(None), NOW, WINDOW, None).is_old());
}

#[test]
fn the_gateways_own_sighting_long_ago_is_old_without_the_index() {
    let mut s = seen("v1.0.0");
    s.first_seen = Some(NOW - WINDOW);
    assert!(age(&s, Vouch::Feed(None), NOW, WINDOW, None).is_old());
    assert!(age(&s, Vouch::GatewayOnly, NOW, WINDOW, None).is_old());
}

#[test]
fn seeded_versions_are_old() {
    let mut s = seen("v1.4.0");
    s.seeded = Some(NOW - 10);
    s.seeded_by = Some("operator:alice".into());
    s.feed = Some(NOW - 10);
    for v in [Vouch::Feed(None), Vouch::GatewayOnly] {
        let a = age(&s, v, NOW, WINDOW, Some(NOW));
        assert!(a.is_old(), "{a:?}");
        assert!(why(&a).contains("operator:alice"), "{a:?}");
    }
}

#[test]
fn private_modules_use_the_gateways_first_sighting_and_ignore_the_index() {
    let mut s = seen("v2.0.0");
    s.first_seen = Some(NOW - DAY);
    s.first_seen_how = Some("git mirror".into());
    // An index entry (a public module of the same name?) is no proof for a private one.
    s.feed = Some(NOW - 30 * DAY);
    let a = age(&s, Vouch::GatewayOnly, NOW, WINDOW, None);
    assert_eq!(new_until(&a), NOW - DAY + WINDOW);
    assert!(why(&a).contains("git mirror"), "{a:?}");
}

#[test]
fn no_trustworthy_time_is_unknown_and_says_so() {
    let s = seen("v9.0.0");
    for (v, needle) in [
        (Vouch::Feed(None), "module index has not been read"),
        (Vouch::GatewayOnly, "has not seen it"),
    ] {
        let a = age(&s, v, NOW, WINDOW, Some(0));
        assert!(matches!(a, Age::Unknown { .. }), "{a:?}");
        assert!(why(&a).contains("no trustworthy time"), "{a:?}");
        assert!(why(&a).contains(needle), "{a:?}");
        assert!(!a.is_old());
    }
    // Unseen and unlisted though the index was read: still no time to go by.
    let p = caught_up(NOW);
    assert!(matches!(
        age(&s, Vouch::Feed(Some(&p)), NOW, WINDOW, None),
        Age::Unknown { .. }
    ));
}
