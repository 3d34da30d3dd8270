//! RFC 3339 timestamps as the database writes them (`2023-04-03T15:57:51Z`, optionally with a
//! fraction and a `±hh:mm` offset), turned into Unix time for metrics and comparisons. Pure.

/// A point in time read from the database: Unix seconds and nanoseconds (UTC), plus the text it
/// was read from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbTime {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub unix_seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
    /// The timestamp as written in the database.
    pub text: String,
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`); `None` if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<DbTime> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && (sep(10, b'T') || sep(10, b't')) && sep(13, b':'))
        || !sep(16, b':')
    {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if sep(i, b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b':') => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if c == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    // A leap second (:60) counts as the next second's start, as Go's time package does not
    // represent it either.
    let unix_seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(DbTime {
        unix_seconds,
        nanos,
        text: s.to_owned(),
    })
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<(i64, u32)> {
        parse_rfc3339(s).map(|t| (t.unix_seconds, t.nanos))
    }

    #[test]
    fn utc_times() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(secs("2023-04-03T15:57:51Z"), Some((1_680_537_471, 0)));
        assert_eq!(secs("2000-02-29T00:00:00Z"), Some((951_782_400, 0)));
        assert_eq!(secs("1969-12-31T23:59:59Z"), Some((-1, 0)));
        let t = parse_rfc3339("2023-11-14T22:13:20Z").unwrap();
        assert_eq!(t.unix_seconds, 1_700_000_000);
        assert_eq!(t.text, "2023-11-14T22:13:20Z");
    }

    #[test]
    fn fractions_and_offsets() {
        assert_eq!(
            secs("2023-11-14T22:13:20.5Z"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(
            secs("2023-11-14T22:13:20.123456789123Z"),
            Some((1_700_000_000, 123_456_789))
        );
        assert_eq!(secs("2023-11-15T00:13:20+02:00"), Some((1_700_000_000, 0)));
        assert_eq!(secs("2023-11-14T21:13:20-01:00"), Some((1_700_000_000, 0)));
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "",
            "2023-04-03",
            "2023-04-03 15:57:51Z",
            "2023-04-03T15:57:51",
            "2023-13-03T15:57:51Z",
            "2023-02-29T15:57:51Z",
            "2023-04-31T15:57:51Z",
            "2023-04-03T24:00:00Z",
            "2023-04-03T15:57:51.Z",
            "2023-04-03T15:57:51Zjunk",
            "2023-04-03T15:57:51+0200",
            "2023-04-03T15:57:51+25:00",
            "+023-04-03T15:57:51Z",
            "2023-04-03T15:57:5１Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
