//! How old a module version is, for cooldown: the pure decision over what the sightings store
//! knows (no clock, no I/O: the caller passes `now`).
//!
//! Age is measured from the earliest sighting its author cannot back-date:
//! - **public modules** (fetched through the proxy whose module index the gateway tails): the
//!   index's time for the version, or the gateway's own first sighting if earlier. A version
//!   the index never listed is older than the window only if the index was read **without
//!   gaps from the window's start to a point after the gateway's own first sighting** of it:
//!   had it been new, fetching it through that proxy would have put it in the index inside the
//!   window. Until the index has been read that far the version counts as new;
//! - **private modules** (no index vouches for them): the gateway's own first sighting (for Git
//!   upstreams, when a mirror refresh first saw the tag);
//! - the upstream `.info` `Time` and a pseudo-version's embedded time are the commit time,
//!   which the author chooses: they can make a version younger, never older;
//! - seeded versions (`modgate ledger seed`: what the organisation already uses) are old;
//! - with no trustworthy time at all the version is [`Age::Unknown`], which callers treat as
//!   new, with the reason saying so.

use modgate_ledger::{FeedProgress, VersionSightings};

/// Which sightings can vouch for a module's versions.
#[derive(Debug, Clone, Copy)]
pub enum Vouch<'a> {
    /// A public module, fetched through the proxy whose module index is tailed: the index and
    /// the gateway's own sightings; `None` before the index's first page was stored.
    Feed(Option<&'a FeedProgress>),
    /// A private module (or one fetched elsewhere than the index's proxy): the gateway's own
    /// first sighting only.
    GatewayOnly,
}

/// The age of one version against one cooldown window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Age {
    /// At least as old as the window.
    Old {
        /// Which time shows it (for `explain` and audit).
        why: String,
    },
    /// Younger than the window: withheld until `available_at` (Unix seconds).
    New {
        /// When it leaves cooldown, as far as is known now.
        available_at: i64,
        /// Which time decided, in words a `go` user reads.
        why: String,
    },
    /// No trustworthy time is known: treated as new, and `why` says so.
    Unknown {
        /// Why no time is known.
        why: String,
    },
}

impl Age {
    /// Whether the version may be used under this window (only [`Age::Old`]).
    pub fn is_old(&self) -> bool {
        matches!(self, Age::Old { .. })
    }
}

/// Unix seconds as RFC 3339 (UTC, whole seconds; jiff's range, years -9999 to 9999, else
/// `@<seconds>`).
pub fn show_time(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| format!("@{unix}"), |t| t.to_string())
}

/// Unix seconds of a UTC civil date-time, `None` when it is not one.
fn unix_of(year: i64, month: i64, day: i64, h: i64, m: i64, s: i64) -> Option<i64> {
    let small = |v: i64| i8::try_from(v).ok();
    let dt = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        small(month)?,
        small(day)?,
        small(h)?,
        small(m)?,
        small(s)?,
        0,
    )
    .ok()?;
    Some(
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_second(),
    )
}

/// The commit time embedded in a pseudo-version (`v0.0.0-20191109021931-daa7c04131f5`,
/// `v1.2.4-0.20191109021931-…`, `v1.2.3-pre.0.20191109021931-…`), `None` for other versions.
pub fn pseudo_version_time(version: &str) -> Option<i64> {
    if !modgate_protocol::is_pseudo_version(version) {
        return None;
    }
    let v = version.strip_suffix("+incompatible").unwrap_or(version);
    let (rest, _rev) = v.rsplit_once('-')?;
    let stamp = rest.get(rest.len().checked_sub(14)?..)?;
    let d: Vec<i64> = stamp
        .bytes()
        .map(|b| b.is_ascii_digit().then(|| i64::from(b - b'0')))
        .collect::<Option<_>>()?;
    let n = |from: usize, len: usize| d[from..from + len].iter().fold(0, |a, x| a * 10 + x);
    unix_of(n(0, 4), n(4, 2), n(6, 2), n(8, 2), n(10, 2), n(12, 2))
}

/// The age of `s`'s version under a cooldown of `window` seconds at `now`.
///
/// `info_time` is the upstream `.info` `Time` if the caller has it (author-controlled: it may
/// only make the version younger); a pseudo-version's embedded time is taken into account
/// here. The caller records the gateway's own sighting *before* asking (so that
/// `s.first_seen` is set for any version the gateway has been asked about).
pub fn age(
    s: &VersionSightings,
    vouch: Vouch<'_>,
    now: i64,
    window: i64,
    info_time: Option<i64>,
) -> Age {
    let start = now.saturating_sub(window);
    if let Some(at) = s.seeded {
        return Age::Old {
            why: format!(
                "seeded as already in use by {} on {}",
                s.seeded_by.as_deref().unwrap_or("an operator"),
                show_time(at)
            ),
        };
    }
    // The earliest time nobody but the gateway and the index could set, and what it is.
    let own = s.first_seen.map(|t| {
        let how = s.first_seen_how.as_deref().unwrap_or("an answer");
        (
            t,
            format!("first seen by this gateway ({how}) at {}", show_time(t)),
        )
    });
    let trusted: Option<(i64, String)> = match vouch {
        Vouch::GatewayOnly => own,
        Vouch::Feed(progress) => {
            let listed = s.feed.map(|t| {
                (
                    t,
                    format!("first listed by the module index at {}", show_time(t)),
                )
            });
            match (listed, own) {
                (Some(l), Some(o)) => Some(if o.0 < l.0 { o } else { l }),
                (Some(l), None) => Some(l),
                (None, Some(o)) if o.0 <= start => Some(o),
                (None, Some((seen, seen_why))) => match progress {
                    Some(p) if p.window_start <= start && p.read_to > seen => Some((
                        p.window_start,
                        format!(
                            "not listed by the module index, read without gaps from {} to {}, \
                             past its first sighting at {}: published before the window",
                            show_time(p.window_start),
                            show_time(p.read_to),
                            show_time(seen)
                        ),
                    )),
                    _ => {
                        let read = match progress {
                            Some(p) if p.window_start <= start => {
                                format!("has been read only up to {}", show_time(p.read_to))
                            }
                            Some(p) => format!(
                                "is read from {} on, not yet from the window's start {}",
                                show_time(p.window_start),
                                show_time(start)
                            ),
                            None => "has not been read yet".to_string(),
                        };
                        return author_younger(
                            Age::New {
                                available_at: seen.saturating_add(window),
                                why: format!(
                                    "it is {seen_why}; the module index {read}, not yet past \
                                     that sighting, so it counts as new until then (at the \
                                     latest until {})",
                                    show_time(seen.saturating_add(window))
                                ),
                            },
                            s,
                            window,
                            start,
                            info_time,
                        );
                    }
                },
                (None, None) => None,
            }
        }
    };
    let Some((t, why)) = trusted else {
        return Age::Unknown {
            why: match vouch {
                Vouch::Feed(Some(_)) => "no trustworthy time is known: the gateway has not \
                                         seen it and the module index has not listed it"
                    .to_string(),
                Vouch::Feed(None) => "no trustworthy time is known: the module index has not \
                                      been read (unreachable?) and the gateway has not seen it"
                    .to_string(),
                Vouch::GatewayOnly => {
                    "no trustworthy time is known: the gateway has not seen it".to_string()
                }
            },
        };
    };
    let verdict = if t <= start {
        Age::Old { why }
    } else {
        Age::New {
            available_at: t.saturating_add(window),
            why,
        }
    };
    author_younger(verdict, s, window, start, info_time)
}

/// Applies the author's times (`.info` `Time`, pseudo-version time): later than the trusted
/// one, they make the version younger.
fn author_younger(
    verdict: Age,
    s: &VersionSightings,
    window: i64,
    start: i64,
    info_time: Option<i64>,
) -> Age {
    let authored = [
        info_time.map(|t| (t, "its .info Time")),
        pseudo_version_time(&s.version).map(|t| (t, "its pseudo-version's time")),
    ]
    .into_iter()
    .flatten()
    .max_by_key(|(t, _)| *t);
    let Some((t, what)) = authored else {
        return verdict;
    };
    if t <= start {
        return verdict;
    }
    let available_at = t.saturating_add(window);
    match verdict {
        Age::New {
            available_at: a,
            why,
        } if a >= available_at => Age::New {
            available_at: a,
            why,
        },
        other => {
            let before = match &other {
                Age::Old { why } | Age::New { why, .. } | Age::Unknown { why } => why.clone(),
            };
            Age::New {
                available_at,
                why: format!("{what} is {} (and it is {before})", show_time(t)),
            }
        }
    }
}

#[cfg(test)]
mod tests;
