//! Times as a fetched query takes and prints them (pure): a point in time is an RFC 3339
//! timestamp (`2026-12-01T08:00:00Z`, with a fraction or a `±hh:mm` offset), a date
//! (`2026-12-01`, midnight UTC), `now`, or a span ago (`7d`, `12h`, `30m`, `45s`); a span
//! (`90d`) is also how the retention is written. RFC 3339 is read and written by jiff.

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

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, jiff's parser) into
/// Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// Formats Unix milliseconds as RFC 3339 UTC, `2026-12-07T06:00:00.123Z` (the fraction only
/// when there is one); out of jiff's range (years -9999 to 9999), the nearest end of it.
pub fn format_rfc3339(ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    t.to_string()
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
