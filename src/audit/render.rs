//! Rendering audit records for people (an aligned table) and for programs (JSON lines).
//!
//! Pure string building: no IO, no queries. Values come from callers and may be hostile, so the
//! table escapes control and bidi-override characters rather than printing them to a terminal.

use std::fmt::Write as _;

use super::Record;

const HEADERS: [&str; 8] = [
    "TIME",
    "PRINCIPAL",
    "NODE",
    "TOOL",
    "TARGET",
    "DECISION",
    "OUTCOME",
    "REASON",
];
/// Widest a column other than TIME gets, in characters.
const MAX_CELL: usize = 40;
/// Widest the REASON column gets.
const MAX_REASON: usize = 60;

/// See [`super::render_table`]. TOOL falls back to the method (`http` refusals); REASON falls
/// back to the error.
pub(crate) fn table(records: &[Record]) -> String {
    let rows: Vec<[String; 8]> = records
        .iter()
        .map(|r| {
            let node = r.node_name.as_deref().map(|n| n.split('.').next().unwrap_or(n));
            [
                cell(Some(&r.time), usize::MAX),
                cell(r.principal.as_deref(), MAX_CELL),
                cell(node, MAX_CELL),
                cell(r.tool.as_deref().or(Some(&r.method)), MAX_CELL),
                cell(r.target.as_deref(), MAX_CELL),
                r.decision.as_str().to_string(),
                r.outcome.as_str().to_string(),
                cell(r.reason.as_deref().or(r.error.as_deref()), MAX_REASON),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                let pad = w - c.chars().count();
                let _ = write!(out, "{c}{:pad$}  ", "");
            }
        }
        out.push('\n');
    };
    line(&HEADERS);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// See [`super::render_jsonl`].
pub(crate) fn jsonl(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        match serde_json::to_string(r) {
            Ok(line) => out.push_str(&line),
            Err(e) => {
                let err = serde_json::json!({"id": r.id, "error": format!("render record: {e}")});
                out.push_str(&err.to_string());
            }
        }
        out.push('\n');
    }
    out
}

/// A display-safe cell of at most `max` characters (cut with `…`); `-` for nothing.
fn cell(value: Option<&str>, max: usize) -> String {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return "-".to_string();
    };
    let pieces = value.chars().map(escape_char);
    let total: usize = pieces.clone().map(|p| p.chars().count()).sum();
    if total <= max {
        return pieces.collect();
    }
    let mut out = String::new();
    let mut width = 0;
    for piece in pieces {
        let w = piece.chars().count();
        if width + w >= max {
            break;
        }
        width += w;
        out.push_str(&piece);
    }
    out.push('…');
    out
}

/// `value` safe to show on one line of a terminal or a log: control characters (C0, DEL, C1:
/// `\n`, `\r`, `\t`, ESC, …), line and paragraph separators (U+2028, U+2029) and bidi controls
/// are written as Rust escapes (`\n`, `\u{1b}`), so a value can neither start a line nor drive
/// the display. Used for the table and for the journald `MESSAGE`.
pub(crate) fn escape(value: &str) -> String {
    value.chars().map(escape_char).collect()
}

fn escape_char(c: char) -> String {
    if c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}') {
        c.escape_default().collect()
    } else {
        c.to_string()
    }
}

/// Trojan-source characters: they reorder what a terminal shows.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Decision, Outcome};

    fn rec(principal: &str, tool: &str, target: &str, reason: Option<&str>) -> Record {
        Record {
            id: Some(1),
            time: "2025-01-02T03:04:05.678Z".into(),
            request_id: "r".into(),
            principal: Some(principal.into()),
            node_name: Some("laptop.tail1234.ts.net".into()),
            method: "tools/call".into(),
            tool: Some(tool.into()),
            target: Some(target.into()),
            decision: Decision::Allow,
            outcome: Outcome::Ok,
            reason: reason.map(String::from),
            ..Record::default()
        }
    }

    fn check(records: &[Record], expected: &str) {
        assert_eq!(table(records), expected, "\n{}", table(records));
    }

    #[test]
    fn table_aligns_columns() {
        let mut deny = rec("tag:ci,tag:prod", "services_restart", "web-1", Some("no scope"));
        deny.decision = Decision::Deny;
        deny.outcome = Outcome::Denied;
        deny.node_name = None;
        check(
            &[
                rec("alice@example.com", "whoami", "local", Some("granted: system:read")),
                deny,
            ],
            "TIME                      PRINCIPAL          NODE    TOOL              TARGET  DECISION  OUTCOME  REASON\n\
             2025-01-02T03:04:05.678Z  alice@example.com  laptop  whoami            local   allow     ok       granted: system:read\n\
             2025-01-02T03:04:05.678Z  tag:ci,tag:prod    -       services_restart  web-1   deny      denied   no scope\n",
        );
    }

    #[test]
    fn table_of_nothing_is_the_header() {
        check(&[], "TIME  PRINCIPAL  NODE  TOOL  TARGET  DECISION  OUTCOME  REASON\n");
    }

    #[test]
    fn table_falls_back_to_method_and_error() {
        let mut r = rec("-", "x", "", None);
        r.tool = None;
        r.method = "http".into();
        r.principal = None;
        r.outcome = Outcome::Error;
        r.error = Some("boom".into());
        let t = table(&[r]);
        let row = t.lines().nth(1).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "2025-01-02T03:04:05.678Z",
                "-",
                "laptop",
                "http",
                "-",
                "allow",
                "error",
                "boom"
            ]
        );
    }

    #[test]
    fn table_escapes_terminal_control_and_caps_width() {
        let r = rec(
            "eve\u{1b}[31m",
            "whoami",
            "a\nb",
            Some(&format!("x\u{202E}y{}", "z".repeat(100))),
        );
        let t = table(&[r]);
        assert!(!t.contains('\u{1b}') && !t.contains('\u{202E}'), "{t:?}");
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(t.contains(r"eve\u{1b}[31m") && t.contains(r"a\nb"), "{t}");
        let reason = t.lines().nth(1).unwrap().rsplit("  ").next().unwrap();
        assert_eq!(reason.chars().count(), MAX_REASON, "{reason}");
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn jsonl_is_one_object_per_line() {
        let mut a = rec("alice@example.com", "whoami", "local", None);
        a.arguments = Some(serde_json::json!({"x": "multi\nline"}));
        let b = rec("bob@example.com", "ping", "host", Some("ok"));
        let out = jsonl(&[a.clone(), b.clone()]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(out.ends_with('\n'));
        let back: Vec<Record> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(back, vec![a, b]);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["outcome"], "ok");
        assert_eq!(jsonl(&[]), "");
    }
}
