//! Reading the systemd journal of this host with `journalctl -o json`, run as an argument vector
//! through [`super::process`], and parsing its entries into typed values.
//!
//! Every value that reaches the command line is validated here first (unit, identifier, times,
//! priority) and passed as `--option=value`, so none can become an option of its own. Entries
//! are requested newest first (`--reverse`) so the output cap drops the oldest, and returned
//! oldest first. Knows nothing about callers or MCP.

use schemars::JsonSchema;
use serde::Serialize;

use super::show::cut;
use super::{CommandSpec, ExecError, Limits};

/// The journal fields requested (`__REALTIME_TIMESTAMP` always comes).
const FIELDS: &str = "MESSAGE,PRIORITY,_SYSTEMD_UNIT,UNIT,SYSLOG_IDENTIFIER,_PID,_HOSTNAME";
/// Longest message kept per entry (characters).
pub const MAX_MESSAGE_CHARS: usize = 4000;

/// Priority names in journald order (0 = emerg).
pub const PRIORITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

/// What to select from the journal. Construct through [`Filter::new`]-style validation in the
/// tools: every field here has passed [`validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `--unit=` (a unit name or glob).
    pub unit: Option<String>,
    /// `--identifier=` (`SYSLOG_IDENTIFIER`).
    pub identifier: Option<String>,
    /// `--priority=` (0-7: this and more severe).
    pub priority: Option<u8>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Entry {
    /// RFC 3339 UTC with microseconds.
    pub time: Option<String>,
    /// 0 (emerg) to 7 (debug).
    pub priority: Option<u8>,
    /// The systemd unit that logged it (`_SYSTEMD_UNIT`), or the unit a systemd message is about
    /// (`UNIT`).
    pub unit: Option<String>,
    /// `SYSLOG_IDENTIFIER`.
    pub identifier: Option<String>,
    pub pid: Option<u32>,
    pub message: String,
    /// `UNIT` of a message systemd itself logged about a unit (restart detection uses it).
    #[serde(skip)]
    pub about_unit: Option<String>,
}

/// Why a filter value is refused.
pub fn validate(filter: &Filter) -> Result<(), String> {
    if let Some(u) = &filter.unit {
        let ok = !u.is_empty()
            && u.len() <= 256
            && !u.starts_with('-')
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\' | '*' | '?'));
        if !ok {
            return Err(format!(
                "`unit` {:?} is not a unit name (letters, digits, `:_.@-\\`, globs `*?`; at most 256)",
                cut(u, 80)
            ));
        }
    }
    if let Some(i) = &filter.identifier {
        let ok = !i.is_empty()
            && i.len() <= 128
            && !i.starts_with('-')
            && i.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '/' | '+'));
        if !ok {
            return Err(format!(
                "`identifier` {:?} is not a syslog identifier (letters, digits, `:_.@-/+`; at most 128)",
                cut(i, 80)
            ));
        }
    }
    for (name, v) in [("since", &filter.since), ("until", &filter.until)] {
        if let Some(v) = v {
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | ':' | '-' | '+' | '.' | '_'));
            if !ok {
                return Err(format!(
                    "`{name}` {:?} is not a journalctl time (e.g. `2025-01-31 12:00:00`, `-1h`, `yesterday`, \
                     `today`; letters, digits, space and `:-+._`, at most 64)",
                    cut(v, 80)
                ));
            }
        }
    }
    if filter.priority.is_some_and(|p| p > 7) {
        return Err("`priority` must be 0-7".into());
    }
    Ok(())
}

/// A priority given as a name (`err`, `warning`, `error`, `warn`) or a digit.
pub fn parse_priority(s: &str) -> Result<u8, String> {
    let lower = s.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "error" => "err",
        "warn" => "warning",
        "critical" => "crit",
        "emergency" | "panic" => "emerg",
        other => other,
    };
    if let Some(n) = PRIORITIES.iter().position(|p| *p == alias) {
        return Ok(n as u8);
    }
    match alias.parse::<u8>() {
        Ok(n) if n <= 7 => Ok(n),
        _ => Err(format!(
            "`priority` {:?} is not one of {} or 0-7",
            cut(s, 40),
            PRIORITIES.join(", ")
        )),
    }
}

/// The `journalctl` command for `filter`, newest first, at most `count` entries.
pub fn command(filter: &Filter, count: usize) -> CommandSpec {
    let mut args = vec![
        "--no-pager".to_string(),
        "--quiet".to_string(),
        "--output=json".to_string(),
        format!("--output-fields={FIELDS}"),
        "--reverse".to_string(),
        format!("--lines={count}"),
    ];
    if let Some(u) = &filter.unit {
        args.push(format!("--unit={u}"));
    }
    if let Some(i) = &filter.identifier {
        args.push(format!("--identifier={i}"));
    }
    if let Some(p) = filter.priority {
        args.push(format!("--priority={p}"));
    }
    if let Some(s) = &filter.since {
        args.push(format!("--since={s}"));
    }
    if let Some(u) = &filter.until {
        args.push(format!("--until={u}"));
    }
    CommandSpec::new("journalctl", args)
}

/// Up to `count` entries matching `filter`, oldest first, and whether output was cut.
pub async fn query(filter: &Filter, count: usize, limits: Limits) -> Result<(Vec<Entry>, bool), ExecError> {
    validate(filter).map_err(ExecError::Refused)?;
    let cmd = command(filter, count);
    let out = super::process::run(&cmd, limits).await?;
    if out.timed_out {
        return Err(ExecError::Timeout(limits.timeout));
    }
    if out.status != Some(0) {
        let err = out.stderr.trim();
        return Err(ExecError::Failed(format!(
            "journalctl failed (status {}): {}",
            out.status.map(|s| s.to_string()).unwrap_or_else(|| "signal".into()),
            cut(if err.is_empty() { "no message" } else { err }, 500)
        )));
    }
    let mut entries: Vec<Entry> = out.stdout.lines().filter_map(parse_line).collect();
    entries.reverse();
    Ok((entries, out.truncated_bytes > 0))
}

/// One `journalctl -o json` line (unparsable lines, such as a cut last one, give `None`).
pub fn parse_line(line: &str) -> Option<Entry> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let obj = v.as_object()?;
    let text = |key: &str| field_text(obj.get(key)?);
    let time = text("__REALTIME_TIMESTAMP").and_then(|t| realtime(&t));
    let about_unit = text("UNIT");
    Some(Entry {
        time,
        priority: text("PRIORITY").and_then(|p| p.parse().ok()),
        unit: text("_SYSTEMD_UNIT").or_else(|| about_unit.clone()),
        identifier: text("SYSLOG_IDENTIFIER"),
        pid: text("_PID").and_then(|p| p.parse().ok()),
        message: cut(&text("MESSAGE").unwrap_or_default(), MAX_MESSAGE_CHARS),
        about_unit,
    })
}

/// A `__REALTIME_TIMESTAMP` (microseconds since the epoch, as text) as RFC 3339 UTC with
/// microseconds; `None` when it is not such a number.
pub fn realtime(micros: &str) -> Option<String> {
    micros
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// A journal JSON field: a string, an array of bytes (non-UTF-8 data) or, for a field that
/// occurs several times, an array of those (the first is taken).
fn field_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(items) if items.iter().all(|i| i.is_u64()) => {
            let bytes: Vec<u8> = items.iter().filter_map(|i| i.as_u64()).map(|b| b as u8).collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        serde_json::Value::Array(items) => items.first().and_then(field_text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(filter: Filter, expected: Result<(), &str>) {
        match (validate(&filter), expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(needle)) => assert!(e.contains(needle), "`{e}` lacks `{needle}`"),
            (got, want) => panic!("{filter:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn filters_are_validated() {
        let f = |unit: &str| Filter {
            unit: Some(unit.into()),
            ..Filter::default()
        };
        check(f("nginx.service"), Ok(()));
        check(f("getty@tty1.service"), Ok(()));
        check(f("nginx*"), Ok(()));
        check(f("--all"), Err("not a unit name"));
        check(f("a;rm -rf /"), Err("not a unit name"));
        check(f("$(id)"), Err("not a unit name"));
        check(f(""), Err("not a unit name"));
        check(
            Filter {
                identifier: Some("x y".into()),
                ..Filter::default()
            },
            Err("not a syslog identifier"),
        );
        check(
            Filter {
                since: Some("-1h".into()),
                until: Some("2025-01-31 12:00:00".into()),
                ..Filter::default()
            },
            Ok(()),
        );
        check(
            Filter {
                since: Some("`id`".into()),
                ..Filter::default()
            },
            Err("`since`"),
        );
        assert_eq!(parse_priority("err"), Ok(3));
        assert_eq!(parse_priority("WARNING"), Ok(4));
        assert_eq!(parse_priority("error"), Ok(3));
        assert_eq!(parse_priority("7"), Ok(7));
        assert!(parse_priority("8").is_err());
        assert!(parse_priority("loud").unwrap_err().contains("is not one of"));
    }

    #[test]
    fn the_command_is_an_argument_vector_of_options_with_values() {
        let cmd = command(
            &Filter {
                unit: Some("nginx.service".into()),
                priority: Some(3),
                since: Some("-1h".into()),
                ..Filter::default()
            },
            50,
        );
        assert_eq!(cmd.program, "journalctl");
        assert!(cmd.args.contains(&"--unit=nginx.service".to_string()));
        assert!(cmd.args.contains(&"--priority=3".to_string()));
        assert!(cmd.args.contains(&"--since=-1h".to_string()));
        assert!(cmd.args.contains(&"--lines=50".to_string()));
        assert!(cmd.args.contains(&"--reverse".to_string()));
    }

    #[test]
    fn parses_entries() {
        let e = parse_line(
            r#"{"__REALTIME_TIMESTAMP":"1700000000123456","PRIORITY":"3","SYSLOG_IDENTIFIER":"app","_PID":"42","MESSAGE":"boom","_SYSTEMD_UNIT":"app.service"}"#,
        )
        .unwrap();
        assert_eq!(e.time.as_deref(), Some("2023-11-14T22:13:20.123456Z"));
        assert_eq!(e.priority, Some(3));
        assert_eq!(e.unit.as_deref(), Some("app.service"));
        assert_eq!(e.pid, Some(42));
        assert_eq!(e.message, "boom");
        let bin = parse_line(r#"{"MESSAGE":[104,105,255],"UNIT":"x.service"}"#).unwrap();
        assert_eq!(bin.message, "hi\u{fffd}");
        assert_eq!(bin.about_unit.as_deref(), Some("x.service"));
        assert!(parse_line("{\"MESSAGE\": \"cut").is_none());
    }
}
