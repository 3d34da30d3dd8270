//! Which module versions an OSV `affected` block covers: SEMVER range events turned into
//! intervals once, at load, and the test of a Go module version against them. Pure.
//!
//! The semantics follow golang.org/x/vuln, `internal/semver/affects.go` (`Affects`,
//! `ContainsSemver`), which govulncheck uses:
//! * no ranges at all, or no range of type `SEMVER`, or a `SEMVER` range without events: every
//!   version is affected;
//! * ranges of other types (`GIT`, `ECOSYSTEM`) are ignored;
//! * a range's events are sorted by version (stably, `introduced: "0"` first) and walked:
//!   `introduced` opens an interval when none is open, `fixed` closes the open one, so each
//!   interval is `[introduced, fixed)`; an `introduced` while one is open and a `fixed` while
//!   none is open change nothing; `introduced: "0"` means "from the first version";
//! * versions in OSV have no `v` prefix: `1.2.3` is compared as `v1.2.3` with Go's semver
//!   ordering ([`compare_semver`]), so build metadata (`+incompatible`) is ignored and a
//!   pseudo-version orders as the prerelease it is.
//!
//! Beyond x/vuln (which knows only `introduced` and `fixed`): `last_affected` closes an
//! interval inclusively (`[introduced, last_affected]`, OSV 1.x). `limit` is ignored, as x/vuln
//! does; the Go database uses neither, and ignoring `limit` can only widen what is affected.

use std::cmp::Ordering;

use modgate_protocol::{compare_semver, is_valid_semver};

/// A range event as read from an entry (versions as written, without `v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// `introduced` (`"0"` = from the first version).
    Introduced(String),
    /// `fixed`: the first version no longer affected.
    Fixed(String),
    /// `last_affected`: the last version still affected.
    LastAffected(String),
}

/// How an interval ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Affected up to, not including, this version (`fixed`).
    Fixed(String),
    /// Affected up to and including this version (`last_affected`).
    LastAffected(String),
}

/// One interval of affected versions, with Go versions (`v` prefix added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// The first affected version; `None` from the very first version (`introduced: "0"`, or no
    /// range at all).
    pub introduced: Option<String>,
    /// Where it ends; `None` if no fix is known.
    pub end: Option<End>,
}

impl Interval {
    /// Every version (an `affected` block without SEMVER ranges or events).
    pub fn all() -> Interval {
        Interval {
            introduced: None,
            end: None,
        }
    }

    /// Whether the Go version `v` (with `v`, valid semver) lies in this interval.
    pub fn contains(&self, v: &str) -> bool {
        if let Some(lo) = &self.introduced {
            if compare_semver(v, lo) == Ordering::Less {
                return false;
            }
        }
        match &self.end {
            None => true,
            Some(End::Fixed(hi)) => compare_semver(v, hi) == Ordering::Less,
            Some(End::LastAffected(hi)) => compare_semver(v, hi) != Ordering::Greater,
        }
    }
}

impl std::fmt::Display for Interval {
    /// `[v1.0.0, v1.2.3)`, `[v1.0.0, v1.2.3]`, `[first, v1.2.3)` or `[v1.0.0, no fix)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lo = self.introduced.as_deref().unwrap_or("first");
        match &self.end {
            None => write!(f, "[{lo}, no fix)"),
            Some(End::Fixed(hi)) => write!(f, "[{lo}, {hi})"),
            Some(End::LastAffected(hi)) => write!(f, "[{lo}, {hi}]"),
        }
    }
}

/// An OSV version (`1.2.3`) as a Go version (`v1.2.3`); one already carrying `v` is kept.
/// `None` unless the result is valid semver.
pub(crate) fn go_version(osv: &str) -> Option<String> {
    let v = if osv.starts_with('v') {
        osv.to_owned()
    } else {
        format!("v{osv}")
    };
    is_valid_semver(&v).then_some(v)
}

/// The intervals of one SEMVER range, from its events. `Err(version)` names an event version
/// that is not semver (`introduced: "0"` is the only non-semver value allowed).
pub(crate) fn intervals(events: &[Event]) -> Result<Vec<Interval>, String> {
    if events.is_empty() {
        return Ok(vec![Interval::all()]);
    }
    // (sort key, event with Go versions); the key is None for introduced "0".
    let mut keyed: Vec<(Option<String>, &Event)> = Vec::with_capacity(events.len());
    for e in events {
        let raw = match e {
            Event::Introduced(v) if v == "0" => {
                keyed.push((None, e));
                continue;
            }
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) => v,
        };
        keyed.push((Some(go_version(raw).ok_or_else(|| raw.clone())?), e));
    }
    // Stable: "0" first, then by semver; equal versions keep their order (as x/vuln).
    keyed.sort_by(|(a, _), (b, _)| match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => compare_semver(a, b),
    });
    let mut out = Vec::new();
    let mut open: Option<Option<String>> = None;
    for (v, e) in keyed {
        match (e, open.take()) {
            (Event::Introduced(_), None) => open = Some(v),
            (Event::Introduced(_), still) => open = still,
            (Event::Fixed(_), Some(lo)) => out.push(Interval {
                introduced: lo,
                end: v.map(End::Fixed),
            }),
            (Event::LastAffected(_), Some(lo)) => out.push(Interval {
                introduced: lo,
                end: v.map(End::LastAffected),
            }),
            (Event::Fixed(_) | Event::LastAffected(_), None) => {}
        }
    }
    if let Some(lo) = open {
        out.push(Interval {
            introduced: lo,
            end: None,
        });
    }
    Ok(out)
}

/// Sorts one block's intervals by their start (from the first version first) and reports
/// whether they are disjoint, in which case [`find`] can binary-search them.
pub(crate) fn sort_intervals(ivs: &mut [Interval]) -> bool {
    ivs.sort_by(|a, b| cmp_start(&a.introduced, &b.introduced));
    ivs.windows(2).all(|w| match (&w[0].end, &w[1].introduced) {
        (None, _) | (_, None) => false,
        (Some(End::Fixed(hi)), Some(lo)) => compare_semver(hi, lo) != Ordering::Greater,
        (Some(End::LastAffected(hi)), Some(lo)) => compare_semver(hi, lo) == Ordering::Less,
    })
}

fn cmp_start(a: &Option<String>, b: &Option<String>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => compare_semver(a, b),
    }
}

/// The interval of `ivs` (sorted by [`sort_intervals`]) that contains `v`: a binary search when
/// they are `disjoint`, else the first in order.
pub(crate) fn find<'a>(ivs: &'a [Interval], disjoint: bool, v: &str) -> Option<&'a Interval> {
    if !disjoint {
        return ivs.iter().find(|iv| iv.contains(v));
    }
    let after = ivs.partition_point(|iv| match &iv.introduced {
        None => true,
        Some(lo) => compare_semver(lo, v) != Ordering::Greater,
    });
    let candidate = ivs.get(after.checked_sub(1)?)?;
    candidate.contains(v).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intro(v: &str) -> Event {
        Event::Introduced(v.to_owned())
    }
    fn fixed(v: &str) -> Event {
        Event::Fixed(v.to_owned())
    }
    fn last(v: &str) -> Event {
        Event::LastAffected(v.to_owned())
    }
    fn affected(events: &[Event], v: &str) -> bool {
        intervals(events).unwrap().iter().any(|i| i.contains(v))
    }

    /// x/vuln's walk over sorted events, written out as the reference for the interval form.
    fn reference(events: &[Event], v: &str) -> bool {
        let mut sorted: Vec<&Event> = events.iter().collect();
        let key = |e: &Event| match e {
            Event::Introduced(x) if x == "0" => None,
            Event::Introduced(x) | Event::Fixed(x) | Event::LastAffected(x) => go_version(x),
        };
        sorted.sort_by(|a, b| match (key(a), key(b)) {
            (None, None) => Ordering::Equal,
            (None, _) => Ordering::Less,
            (_, None) => Ordering::Greater,
            (Some(a), Some(b)) => compare_semver(&a, &b),
        });
        let mut hit = false;
        for e in sorted {
            match e {
                Event::Introduced(x) if !hit => {
                    hit = x == "0" || compare_semver(v, &go_version(x).unwrap()).is_ge()
                }
                Event::Fixed(x) if hit => hit = compare_semver(v, &go_version(x).unwrap()).is_lt(),
                _ => {}
            }
        }
        hit
    }

    #[test]
    fn no_v_prefix_and_introduced_zero() {
        let ev = [intro("0"), fixed("1.2.3")];
        assert!(affected(&ev, "v0.0.1"));
        assert!(affected(&ev, "v1.2.2"));
        assert!(!affected(&ev, "v1.2.3"));
        assert!(!affected(&ev, "v1.10.0"), "semver order, not text order");
        let iv = intervals(&ev).unwrap();
        assert_eq!(
            iv,
            vec![Interval {
                introduced: None,
                end: Some(End::Fixed("v1.2.3".into()))
            }]
        );
        assert_eq!(iv[0].to_string(), "[first, v1.2.3)");
    }

    #[test]
    fn several_introduced_and_fixed_events() {
        // Two vulnerable windows: [first, 1.14.12) and [1.15.0, 1.15.5).
        let ev = [
            intro("0"),
            fixed("1.14.12"),
            intro("1.15.0"),
            fixed("1.15.5"),
        ];
        for (v, want) in [
            ("v1.14.11", true),
            ("v1.14.12", false),
            ("v1.14.99", false),
            ("v1.15.0", true),
            ("v1.15.4", true),
            ("v1.15.5", false),
            ("v2.0.0", false),
        ] {
            assert_eq!(affected(&ev, v), want, "{v}");
        }
    }

    #[test]
    fn unsorted_events_are_sorted_first() {
        let ev = [
            fixed("1.15.5"),
            intro("1.15.0"),
            fixed("1.14.12"),
            intro("0"),
        ];
        assert!(affected(&ev, "v1.0.0"));
        assert!(!affected(&ev, "v1.14.12"));
        assert!(affected(&ev, "v1.15.1"));
        assert!(!affected(&ev, "v1.16.0"));
    }

    #[test]
    fn open_ended_and_no_events() {
        let ev = [intro("1.2.0")];
        assert!(!affected(&ev, "v1.1.9"));
        assert!(affected(&ev, "v1.2.0"));
        assert!(affected(&ev, "v99.0.0"));
        assert_eq!(intervals(&ev).unwrap()[0].to_string(), "[v1.2.0, no fix)");
        assert_eq!(intervals(&[]).unwrap(), vec![Interval::all()]);
        assert!(affected(&[], "v0.0.0-20200101000000-abcdefabcdef"));
    }

    #[test]
    fn incompatible_versions_compare_without_build_metadata() {
        let ev = [intro("0"), fixed("20.10.11+incompatible")];
        assert!(affected(&ev, "v20.10.10+incompatible"));
        assert!(!affected(&ev, "v20.10.11+incompatible"));
        assert!(!affected(&ev, "v20.10.12+incompatible"));
        // A fixed version written without the suffix still bounds the +incompatible ones.
        let ev = [intro("17.0.0"), fixed("20.10.11")];
        assert!(affected(&ev, "v17.3.0+incompatible"));
        assert!(!affected(&ev, "v20.10.11+incompatible"));
    }

    #[test]
    fn pseudo_versions_order_as_prereleases() {
        // golang.org/x/crypto style: fixed at a pseudo-version.
        let ev = [intro("0"), fixed("0.0.0-20200124225646-8b5121be2f68")];
        assert!(affected(&ev, "v0.0.0-20190308221718-c2843e01d9a2"));
        assert!(!affected(&ev, "v0.0.0-20200124225646-8b5121be2f68"));
        assert!(!affected(&ev, "v0.0.0-20210711020723-a769d52b0f50"));
        assert!(!affected(&ev, "v0.1.0"));
        // A pseudo-version after v1.2.3 (v1.2.4-0.…) is before v1.2.4.
        let ev = [intro("1.0.0"), fixed("1.2.4")];
        assert!(affected(&ev, "v1.2.4-0.20210101000000-abcdefabcdef"));
        assert!(!affected(&ev, "v1.2.5-0.20210101000000-abcdefabcdef"));
        // Prereleases of the fix are still affected, prereleases of the introduction are not.
        assert!(affected(&ev, "v1.2.4-rc.1"));
        assert!(!affected(&ev, "v1.0.0-rc.1"));
    }

    #[test]
    fn last_affected_is_inclusive() {
        let ev = [intro("1.0.0"), last("1.2.3")];
        assert!(affected(&ev, "v1.2.3"));
        assert!(!affected(&ev, "v1.2.4"));
        assert_eq!(intervals(&ev).unwrap()[0].to_string(), "[v1.0.0, v1.2.3]");
    }

    #[test]
    fn stray_events_change_nothing() {
        // A fixed before any introduced, and an introduced inside an open interval.
        let ev = [
            fixed("0.5.0"),
            intro("1.0.0"),
            intro("1.1.0"),
            fixed("2.0.0"),
        ];
        assert_eq!(
            intervals(&ev).unwrap(),
            vec![Interval {
                introduced: Some("v1.0.0".into()),
                end: Some(End::Fixed("v2.0.0".into()))
            }]
        );
    }

    #[test]
    fn invalid_versions_are_reported() {
        assert_eq!(intervals(&[intro("1.x")]), Err("1.x".to_owned()));
        assert_eq!(intervals(&[intro("0"), fixed("")]), Err(String::new()));
        // "0" as a fixed version is Go's shorthand v0 (= v0.0.0), not "from the start".
        assert!(!affected(&[intro("0"), fixed("0")], "v0.0.0"));
        // A leading v is tolerated.
        assert!(affected(&[intro("v1.0.0")], "v1.0.0"));
    }

    #[test]
    fn binary_search_equals_a_scan() {
        let probes = [
            "v0.0.0", "v1.0.0", "v1.4.0", "v1.5.0", "v2.0.0", "v2.5.0", "v3.0.0", "v9.0.0",
        ];
        let cases: Vec<Vec<Interval>> = vec![
            // Two ranges of one block, given out of order: disjoint once sorted.
            [
                intervals(&[intro("2.0.0"), fixed("3.0.0")]).unwrap(),
                intervals(&[intro("0"), fixed("1.0.0"), intro("1.5.0"), fixed("2.0.0")]).unwrap(),
            ]
            .concat(),
            // Overlapping ranges: not disjoint, scanned.
            [
                intervals(&[intro("1.0.0"), fixed("3.0.0")]).unwrap(),
                intervals(&[intro("2.0.0")]).unwrap(),
            ]
            .concat(),
            // Touching at an inclusive end: overlapping.
            [
                intervals(&[intro("1.0.0"), last("2.0.0")]).unwrap(),
                intervals(&[intro("2.0.0"), fixed("2.5.0")]).unwrap(),
            ]
            .concat(),
            vec![Interval::all()],
        ];
        let mut disjoint = Vec::new();
        for mut ivs in cases {
            let scan: Vec<Option<Interval>> = probes
                .iter()
                .map(|p| ivs.iter().find(|iv| iv.contains(p)).cloned())
                .collect();
            let d = sort_intervals(&mut ivs);
            disjoint.push(d);
            for (p, want) in probes.iter().zip(&scan) {
                assert_eq!(find(&ivs, d, p).is_some(), want.is_some(), "{ivs:?} at {p}");
                if let Some(found) = find(&ivs, d, p) {
                    assert!(found.contains(p));
                }
            }
        }
        assert_eq!(disjoint, [true, false, false, true]);
    }

    #[test]
    fn interval_form_equals_the_reference_walk() {
        let versions = [
            "0.0.1",
            "0.5.0",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "1.2.0-rc.1",
            "1.2.0",
            "1.3.0",
            "2.0.0",
        ];
        let probes = [
            "v0.0.0",
            "v0.0.1",
            "v0.4.0",
            "v0.5.0",
            "v1.0.0",
            "v1.0.1",
            "v1.1.0",
            "v1.1.5",
            "v1.2.0-rc.1",
            "v1.2.0",
            "v1.2.1",
            "v1.3.0",
            "v2.0.0",
            "v3.0.0",
        ];
        // Every sequence of up to 4 events over a few versions (introduced "0" included).
        let mut all_events = vec![intro("0")];
        for v in versions {
            all_events.push(intro(v));
            all_events.push(fixed(v));
        }
        let n = all_events.len();
        let mut checked = 0;
        for a in 0..n {
            for b in 0..n {
                for c in 0..n {
                    for len in 1..=3 {
                        let ev: Vec<Event> = [a, b, c][..len]
                            .iter()
                            .map(|&i| all_events[i].clone())
                            .collect();
                        for p in probes {
                            assert_eq!(affected(&ev, p), reference(&ev, p), "{ev:?} at {p}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000);
    }
}
