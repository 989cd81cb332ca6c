//! RFC 3339 (UTC) formatting and parsing of Unix seconds, without a date-time dependency.

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

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

/// `2026-01-02T03:04:05Z`.
pub fn format(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Accepts Unix seconds, `YYYY-MM-DD` (midnight UTC) or RFC 3339 with `Z` or a numeric
/// offset (fractions of a second are dropped).
pub fn parse(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .ok()
            .filter(|v| *v <= MAX_SECS)
            .ok_or_else(|| "timestamp out of range".to_string());
    }
    let bad =
        || format!("expected RFC 3339 (2026-01-31T12:00:00Z), a date or Unix seconds, got {s:?}");
    let num = |part: &str| -> Result<i64, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let dp: Vec<&str> = date.split('-').collect();
    if dp.len() != 3 || dp[0].len() != 4 || dp[1].len() != 2 || dp[2].len() != 2 {
        return Err(bad());
    }
    let (y, mo, d) = (num(dp[0])?, num(dp[1])?, num(dp[2])?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    if let Some(t) = time {
        let (clock, offset) = if let Some(c) = t.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let off = &t[i + 1..];
            let op: Vec<&str> = off.split(':').collect();
            if op.len() != 2 || op[0].len() != 2 || op[1].len() != 2 {
                return Err(bad());
            }
            let mins = num(op[0])? * 60 + num(op[1])?;
            (&t[..i], if t.as_bytes()[i] == b'+' { mins } else { -mins })
        } else {
            return Err(bad());
        };
        let clock = clock.split('.').next().unwrap_or(clock);
        let cp: Vec<&str> = clock.split(':').collect();
        if cp.len() != 3 || cp.iter().any(|p| p.len() != 2) {
            return Err(bad());
        }
        let (h, mi, se) = (num(cp[0])?, num(cp[1])?, num(cp[2])?);
        if h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + se - offset * 60;
    }
    if !(0..=MAX_SECS).contains(&secs) {
        return Err("timestamp out of range".into());
    }
    Ok(secs)
}

/// 9999-12-31T23:59:59Z: keeps every later addition far from overflow.
const MAX_SECS: i64 = 253_402_300_799;

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (s, v) in [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T12:34:56Z", 951_827_696),
            ("2026-12-31T23:59:59Z", 1_798_761_599),
        ] {
            assert_eq!(format(v), s);
            assert_eq!(parse(s), Ok(v));
        }
        assert_eq!(parse("2026-01-01"), parse("2026-01-01T00:00:00Z"));
        assert_eq!(parse("2026-01-01T01:00:00+01:00"), parse("2026-01-01"));
        assert_eq!(parse("1700000000"), Ok(1_700_000_000));
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "tomorrow",
            "2026-01-01T25:00:00Z",
            "99999999999999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
