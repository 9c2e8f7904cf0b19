//! The one time grammar: RFC 3339 for instants shown to callers, and what a caller may write
//! for "since when" (an RFC 3339 time, a date, or an age such as `30s`, `15m`, `2h`, `7d`, `1w`).
//! Pure functions; imports nothing of this crate.

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};

/// Unix seconds as RFC 3339 in UTC with whole seconds (`2026-12-08T01:02:03Z`); `None` when out
/// of chrono's range.
pub fn rfc3339(unix_seconds: i64) -> Option<String> {
    DateTime::from_timestamp(unix_seconds, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds (`2026-12-08T01:02:03.456Z`).
pub fn rfc3339_ms(unix_ms: i64) -> String {
    DateTime::from_timestamp_millis(unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An age as callers write it: digits and one unit of `s`, `m`, `h`, `d` or `w` (`15m`). `None`
/// for anything else (a sign, a fraction, another unit, an overflow).
pub fn age(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().ok()?;
    match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
}

/// "Since when": an RFC 3339 time, a date (midnight UTC), or an [`age`] before `now`. The error
/// says what is accepted.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "invalid time {:?}: expected RFC 3339 (2025-01-02T03:04:05Z), a date (2025-01-02) \
             or a duration ago (30s, 15m, 2h, 7d, 1w)",
            s.chars().take(64).collect::<String>()
        )
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or_else(bad);
    }
    let ago = age(s).ok_or_else(bad)?;
    now.checked_sub_signed(ago).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_dates_and_instants() {
        let now = DateTime::parse_from_rfc3339("2026-12-08T12:00:00Z").unwrap().to_utc();
        assert_eq!(
            parse_time("15m", now).unwrap().to_rfc3339(),
            "2026-12-08T11:45:00+00:00"
        );
        assert_eq!(parse_time("1w", now).unwrap().to_rfc3339(), "2026-12-01T12:00:00+00:00");
        assert_eq!(
            parse_time("2026-12-01", now).unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-12-08T06:00:00+02:00", now).unwrap().to_rfc3339(),
            "2026-12-08T04:00:00+00:00"
        );
        for bad in [
            "",
            "15",
            "m",
            "-5m",
            "+5m",
            "1.5h",
            "5é",
            "99999999999999999999s",
            "soon",
        ] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.500Z");
    }
}
