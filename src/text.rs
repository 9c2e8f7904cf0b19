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

/// `*` matches any run of bytes, `?` any one byte, anything else itself: the one glob of this
/// crate (unit names, file deny patterns, OpenSSH-style host patterns, grant target patterns).
/// Iterative, backtracking only to the last `*`: linear in practice, no recursion.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// `1536` → `1.5 KiB`; below 1 KiB, whole bytes (`512 B`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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
