//! How `exec` shortens and rounds what it shows: text cut to a length with a visible `…`, a
//! caller's name fit for an error message, and percentages to one decimal. One of each for the
//! executors (which used to carry their own copies); pure functions that use nothing of `exec`.

/// At most `max` characters, the last one `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The first `max` characters, then `…` when there were more (so at most `max + 1` characters).
pub fn cut_after(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// A name as shown in an error: at most 64 characters, control characters escaped.
pub fn shown(raw: &str) -> String {
    cut(&raw.escape_debug().to_string(), 64)
}

/// `x` rounded to one decimal; 0 when it is not a finite number.
pub fn round1(x: f64) -> f64 {
    if x.is_finite() { (x * 10.0).round() / 10.0 } else { 0.0 }
}

/// `part` as a percentage of `whole`, to one decimal (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    round1(part as f64 * 100.0 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_mark_what_they_leave_out() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdé", 4), "abc…");
        assert_eq!(cut("abc", 0), "…");
        assert_eq!(cut_after("abc", 3), "abc");
        assert_eq!(cut_after("abcd", 3), "abc…");
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 64);
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(5, 0), 0.0);
        assert_eq!(round1(f64::NAN), 0.0);
        assert_eq!(round1(2.25), 2.3);
    }
}
