//! Times as a fetched query takes and prints them (pure): a point in time is an RFC 3339
//! timestamp (`2026-12-01T08:00:00Z`, with a fraction or a `±hh:mm` offset), a date
//! (`2026-12-01`, midnight UTC), `now`, or a span ago (`7d`, `12h`, `30m`, `45s`); a span
//! (`90d`) is also how the retention is written.

use std::time::Duration;

/// Longest span accepted: 100 years.
const MAX_SPAN_SECS: u64 = 100 * 366 * 86_400;

/// Parses a span: a whole number followed by `d`, `h`, `m` or `s` (`90d`, `12h`).
pub fn parse_span(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let unit_at = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (write e.g. \"90d\", \"12h\", \"30m\")"))?;
    let (digits, unit) = s.split_at(unit_at);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a span (write e.g. \"90d\", \"12h\", \"30m\")"))?;
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use d, h, m or s)"
            ))
        }
    };
    let secs = n
        .checked_mul(scale)
        .filter(|s| *s <= MAX_SPAN_SECS)
        .ok_or_else(|| format!("{s:?} is longer than 100 years"))?;
    Ok(Duration::from_secs(secs))
}

/// Parses a point in time (Unix milliseconds), relative spans counted back from `now_ms`.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        return parse_rfc3339(&format!("{s}T00:00:00Z"))
            .ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD)"));
    }
    if s.bytes().next().is_some_and(|b| b.is_ascii_digit()) && s.len() < 10 {
        let span = parse_span(s)?;
        return Ok(now_ms.saturating_sub(i64::try_from(span.as_millis()).unwrap_or(i64::MAX)));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!(
            "{s:?} is not a time: use RFC 3339 (2026-12-01T08:00:00Z), a date (2026-12-01), \
             now, or a span ago (7d, 12h)"
        )
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if at(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && at(i + 3, b":") => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1000 + millis)
}

/// Formats Unix milliseconds as RFC 3339 UTC, `2026-12-07T06:00:00.123Z` (seconds only when
/// there are no milliseconds).
pub fn format_rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if millis == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{millis:03}Z")
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(parse_span("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_span("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_span("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_span("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_span("90").is_err());
        assert!(parse_span("d").is_err());
        assert!(parse_span("1w").is_err());
        assert!(parse_span("-1d").is_err());
        assert!(parse_span("99999999999999d").is_err());
    }

    #[test]
    fn times_round_trip_and_offsets_apply() {
        let t = parse_rfc3339("2026-12-07T06:00:00Z").expect("parse");
        assert_eq!(t, 1_796_623_200_000);
        assert_eq!(format_rfc3339(t), "2026-12-07T06:00:00Z");
        assert_eq!(format_rfc3339(t + 123), "2026-12-07T06:00:00.123Z");
        assert_eq!(parse_rfc3339("2026-12-07T06:00:00.1Z"), Some(t + 100));
        assert_eq!(parse_rfc3339("2026-12-07T08:00:00+02:00"), Some(t));
        assert_eq!(parse_rfc3339("2026-12-07T05:30:00-00:30"), Some(t));
        assert_eq!(
            parse_time("2026-12-07", 0),
            parse_time("2026-12-07T00:00:00Z", 0)
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z").map(format_rfc3339),
            Some("2024-02-29T00:00:00Z".into())
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-12-07T24:00:00Z",
            "2026-12-07T06:00:00",
            "2026-12-07T06:00:00Zjunk",
            "2026-12-07T06:00:00.Z",
            "yesterday",
        ] {
            assert!(parse_time(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = 10 * 86_400_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("7d", now), Ok(3 * 86_400_000));
        assert_eq!(parse_time("1h", now), Ok(now - 3_600_000));
    }
}
