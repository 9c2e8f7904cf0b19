//! The one way a caller-influenced string is shortened before it is stored, logged or sent
//! back: [`cap`] (the start, cut on a char boundary, and a visible marker) and [`cap_middle`]
//! (start and end, for messages whose useful part is at the end, such as serde's "expected
//! one of ..."). Pure functions; imports nothing of this crate.

/// `s` unchanged when it fits in `max` bytes, else cut on a char boundary and ended with a
/// visible marker (`…[truncated, N bytes]`, N the original length), the whole at most `max`
/// bytes (for `max` of at least 64; smaller limits keep the marker and may exceed them).
pub fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let marker = format!("…[truncated, {} bytes]", s.len());
    let mut end = max.saturating_sub(marker.len()).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &s[..end])
}

/// `s` if it has at most `max` characters, else its start and end around `…`.
pub fn cap_middle(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(1) / 2;
    let head: String = s.chars().take(keep).collect();
    let tail: String = s.chars().skip(n - keep).collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_short_strings_and_marks_cut_ones() {
        assert_eq!(cap("short", 64), "short");
        let long = "é".repeat(1000);
        let capped = cap(&long, 100);
        assert!(capped.len() <= 100, "{}", capped.len());
        assert!(capped.ends_with("…[truncated, 2000 bytes]"), "{capped}");
        assert!(capped.starts_with("éé"));
    }

    #[test]
    fn cap_middle_keeps_both_ends() {
        assert_eq!(cap_middle("abc", 10), "abc");
        let s = format!("start{}end", "x".repeat(100));
        let c = cap_middle(&s, 21);
        assert_eq!(c.chars().count(), 21);
        assert!(c.starts_with("start") && c.ends_with("end"), "{c}");
    }
}
