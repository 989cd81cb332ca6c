//! Timestamps on the API and the CLI: Unix seconds, written and read as strict RFC 3339 (UTC).
//!
//! The calendar and the RFC 3339 grammar are the `time` crate's; this module only fixes the
//! output shape (`2026-01-02T03:04:05Z`), the accepted input forms and the range.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// 9999-12-31T23:59:59Z: keeps every later addition far from overflow.
const MAX_SECS: i64 = 253_402_300_799;

/// `2026-01-02T03:04:05Z` (UTC, whole seconds). A value outside the years 1..=9999 cannot be
/// written as RFC 3339; it is written as its Unix seconds, which [`parse`] reads back when
/// not negative. Stored values never are outside: [`parse`] refuses them.
pub fn format(secs: i64) -> String {
    let shape = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .filter(|t| t.year() >= 1)
        .and_then(|t| t.format(shape).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Reads Unix seconds (`1700000000`), a date (`2026-01-31`, midnight UTC) or an RFC 3339
/// date-time (`2026-01-31T12:00:00Z`, `2026-01-31T13:00:00.5+01:00`; fractions of a second
/// are dropped). Everything else is refused: impossible dates (`2026-02-30`), hours past 23,
/// offsets past ±23:59, a missing offset, and times before 1970 or after 9999. A space may
/// stand for the `T` (RFC 3339 §5.6).
pub fn parse(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let secs = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<i64>().map_err(|_| out_of_range())?
    } else if is_date_shape(s) {
        Date::parse(s, format_description!("[year]-[month]-[day]"))
            .map_err(|_| bad(s))?
            .midnight()
            .assume_utc()
            .unix_timestamp()
    } else {
        OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|_| bad(s))?
            .unix_timestamp()
    };
    if !(0..=MAX_SECS).contains(&secs) {
        return Err(out_of_range());
    }
    Ok(secs)
}

/// `DDDD-DD-DD`: the crate's `[year]` alone would also take a sign or fewer digits.
fn is_date_shape(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

fn bad(s: &str) -> String {
    format!("expected RFC 3339 (2026-01-31T12:00:00Z), a date or Unix seconds, got {s:?}")
}

fn out_of_range() -> String {
    "timestamp out of range (1970-01-01 to 9999-12-31)".into()
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One input and what `parse` must make of it: `Some(secs)` accepted, `None` refused.
    fn check(input: &str, expected: Option<i64>) {
        let got = parse(input);
        match expected {
            Some(v) => assert_eq!(got, Ok(v), "{input:?} must be accepted"),
            None => assert!(got.is_err(), "{input:?} must be refused, got {got:?}"),
        }
    }

    #[test]
    fn accepted_and_refused_inputs() {
        let midnight_2026 = 1_767_225_600; // 2026-01-01T00:00:00Z
        let cases: &[(&str, Option<i64>)] = &[
            // Accepted forms.
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2000-02-29T12:34:56Z", Some(951_827_696)),
            ("2026-12-31T23:59:59Z", Some(1_798_761_599)),
            ("9999-12-31T23:59:59Z", Some(MAX_SECS)),
            ("2026-01-01", Some(midnight_2026)),
            ("2026-01-01T00:00:00Z", Some(midnight_2026)),
            ("2026-01-01t00:00:00z", Some(midnight_2026)),
            // RFC 3339 §5.6 lets applications use a space for `T` (and the old parser did).
            ("2026-01-01 00:00:00Z", Some(midnight_2026)),
            ("2026-01-01T01:00:00+01:00", Some(midnight_2026)),
            ("2025-12-31T23:00:00-01:00", Some(midnight_2026)),
            ("2026-01-01T05:30:00+05:30", Some(midnight_2026)),
            ("2026-01-01T00:00:00-00:00", Some(midnight_2026)),
            ("2026-01-01T00:00:00.999Z", Some(midnight_2026)),
            ("2026-01-01T00:00:00.123456789+00:00", Some(midnight_2026)),
            ("  2026-01-01T00:00:00Z  ", Some(midnight_2026)),
            ("1700000000", Some(1_700_000_000)),
            ("0", Some(0)),
            // Leap second at the end of a month (read as the second before).
            ("2016-12-31T23:59:60Z", Some(1_483_228_799)),
            // Impossible dates and times.
            ("2026-02-30", None),
            ("2026-02-29T00:00:00Z", None),
            ("1900-02-29", None),
            ("2026-04-31T00:00:00Z", None),
            ("2026-13-01", None),
            ("2026-00-10", None),
            ("2026-01-00", None),
            ("9999-99-99", None),
            ("2026-01-01T24:00:00Z", None),
            ("2026-01-01T25:00:00Z", None),
            ("2026-01-01T23:60:00Z", None),
            ("2026-01-01T12:00:61Z", None),
            ("2026-01-01T12:00:60Z", None),
            // Offsets.
            ("2026-01-01T00:00:00+99:99", None),
            ("2026-01-01T00:00:00+24:00", None),
            ("2026-01-01T00:00:00+01:60", None),
            ("2026-01-01T00:00:00+0100", None),
            ("2026-01-01T00:00:00+01", None),
            ("2026-01-01T00:00:00", None),
            ("2026-01-01T00:00:00UTC", None),
            // Shapes.
            ("", None),
            ("   ", None),
            ("tomorrow", None),
            ("2026-1-1", None),
            ("26-01-01", None),
            ("+2026-01-01", None),
            ("-2026-01-01", None),
            ("2026/01/01", None),
            ("2026-01-01T00:00Z", None),
            ("2026-01-01T0:00:00Z", None),
            ("2026-01-01T00:00:00.Z", None),
            ("2026-01-01TZ", None),
            ("2026-01-01T00:00:00Z junk", None),
            ("-1", None),
            ("1e9", None),
            ("１７００", None),
            // Range.
            ("1969-12-31T23:59:59Z", None),
            ("1969-12-31", None),
            ("253402300800", None),
            ("99999999999999999999", None),
        ];
        for (input, expected) in cases {
            check(input, *expected);
        }
    }

    #[test]
    fn formats_whole_seconds_in_utc() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_827_696, "2000-02-29T12:34:56Z"),
            (1_798_761_599, "2026-12-31T23:59:59Z"),
            (MAX_SECS, "9999-12-31T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (MAX_SECS + 1, "253402300800"),
            (i64::MAX, "9223372036854775807"),
            (i64::MIN, "-9223372036854775808"),
        ] {
            assert_eq!(format(secs), text);
        }
    }

    #[test]
    fn every_formatted_value_parses_back() {
        let mut secs = 0;
        while secs <= MAX_SECS {
            assert_eq!(parse(&format(secs)), Ok(secs), "{secs}");
            secs += 86_399 * 997 + 7_919;
        }
    }

    #[test]
    fn now_is_the_system_clock_in_seconds() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let n = now();
        assert!(n >= before && n <= before + 5, "{n} vs {before}");
    }
}
