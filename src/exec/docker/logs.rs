//! Container logs: the last lines of stdout and stderr, filtered by text or a regular expression
//! and kept within a byte cap as the engine's frames stream in (memory stays within about the
//! cap plus one line per stream).

use std::collections::VecDeque;

use bollard::query_parameters::LogsOptionsBuilder;
use futures::StreamExt;

use super::containers::short_id;
use super::engine::Docker;
use super::model::{LogLine, LogQuery, LogStream, Logs};
use super::refs::validate_ref;
use crate::exec::ExecError;

/// Most log lines one `logs` call asks the engine for.
pub const MAX_TAIL: usize = 100_000;

/// Longest `grep` pattern accepted, in bytes.
pub const MAX_GREP_LEN: usize = 1024;

impl Docker {
    /// The last `q.tail` lines of stdout and stderr (since `q.since`), filtered by `q.grep`, the
    /// newest kept within `min(q.max_bytes, limits.max_output)` bytes.
    pub async fn logs(&self, id: &str, q: LogQuery) -> Result<Logs, ExecError> {
        validate_ref(id)?;
        let (since, matcher) = validate_log_query(&q)?;
        let cap = q.max_bytes.min(self.limits().max_output);
        self.bounded(async {
            let client = self.client().await?;
            let (_, full_id, name) = self.find(client, id).await?;
            let mut builder = LogsOptionsBuilder::new()
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .tail(&q.tail.to_string());
            if let Some(since) = since {
                builder = builder.since(since);
            }
            let mut stream = client.logs(&full_id, Some(builder.build()));
            let mut collector = LogCollector::new(matcher, cap);
            while let Some(frame) = stream.next().await {
                let frame = frame.map_err(|e| self.map_err(e, Some(id)))?;
                let (kind, bytes) = match frame {
                    bollard::container::LogOutput::StdOut { message } => (LogStream::Stdout, message),
                    bollard::container::LogOutput::StdErr { message } => (LogStream::Stderr, message),
                    bollard::container::LogOutput::Console { message } => (LogStream::Console, message),
                    bollard::container::LogOutput::StdIn { .. } => continue,
                };
                collector.push_frame(kind, &bytes);
            }
            Ok(collector.finish(short_id(&full_id), name))
        })
        .await
    }
}

/// Most compiled size of a `grep` regex (the `regex` crate's limit on its program).
const MAX_REGEX_SIZE: usize = 1 << 20;

/// How log lines are filtered.
#[derive(Debug, Clone)]
enum LineMatcher {
    All,
    Text(String),
    Regex(regex::Regex),
}

impl LineMatcher {
    fn matches(&self, line: &str) -> bool {
        match self {
            LineMatcher::All => true,
            LineMatcher::Text(t) => line.contains(t.as_str()),
            LineMatcher::Regex(r) => r.is_match(line),
        }
    }
}

/// Checks a [`LogQuery`]; returns `since` as the engine takes it and the line filter.
fn validate_log_query(q: &LogQuery) -> Result<(Option<i32>, LineMatcher), ExecError> {
    let since = validate_log_window(q)?;
    let matcher = match (&q.grep, q.regex) {
        (None, true) => return Err(ExecError::Refused("regex: true needs a grep pattern".to_string())),
        (None, false) => LineMatcher::All,
        (Some(g), false) => LineMatcher::Text(g.clone()),
        (Some(g), true) => regex::RegexBuilder::new(g)
            .size_limit(MAX_REGEX_SIZE)
            .build()
            .map(LineMatcher::Regex)
            .map_err(|e| ExecError::Refused(format!("grep is not a valid regular expression: {e}")))?,
    };
    Ok((since, matcher))
}

fn validate_log_window(q: &LogQuery) -> Result<Option<i32>, ExecError> {
    if q.tail == 0 || q.tail > MAX_TAIL {
        return Err(ExecError::Refused(format!("tail {}: must be 1..={MAX_TAIL}", q.tail)));
    }
    if q.max_bytes == 0 {
        return Err(ExecError::Refused("max_bytes must be at least 1".to_string()));
    }
    if let Some(grep) = &q.grep
        && (grep.is_empty() || grep.len() > MAX_GREP_LEN)
    {
        return Err(ExecError::Refused(format!("grep: must be 1..={MAX_GREP_LEN} bytes")));
    }
    match q.since {
        None => Ok(None),
        Some(s) => {
            i32::try_from(s).ok().filter(|s| *s >= 0).map(Some).ok_or_else(|| {
                ExecError::Refused(format!("since {s}: must be a Unix time in seconds, 0..={}", i32::MAX))
            })
        }
    }
}

/// Turns the engine's log frames into lines: strips the timestamp the engine put in front of each
/// frame, joins frames that continue a line, filters by `grep` and keeps the newest lines within
/// `cap` bytes of text. Memory stays within about `cap` bytes plus one line per stream.
struct LogCollector {
    grep: LineMatcher,
    cap: usize,
    /// A line being assembled per stream: its first frame's timestamp and its bytes so far.
    pending: [Option<(Option<String>, Vec<u8>)>; 3],
    /// Bytes cut from each pending line because it grew past `cap`.
    pending_cut: [u64; 3],
    kept: VecDeque<LogLine>,
    kept_bytes: usize,
    lines_read: usize,
    lines_matched: usize,
    truncated_lines: usize,
    truncated_bytes: u64,
}

impl LogCollector {
    fn new(grep: LineMatcher, cap: usize) -> LogCollector {
        LogCollector {
            grep,
            cap,
            pending: [None, None, None],
            pending_cut: [0; 3],
            kept: VecDeque::new(),
            kept_bytes: 0,
            lines_read: 0,
            lines_matched: 0,
            truncated_lines: 0,
            truncated_bytes: 0,
        }
    }

    fn push_frame(&mut self, stream: LogStream, frame: &[u8]) {
        let slot = stream as usize;
        let (timestamp, mut rest) = split_timestamp(frame);
        while !rest.is_empty() {
            let (chunk, complete, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], true, &rest[i + 1..]),
                None => (rest, false, &rest[rest.len()..]),
            };
            let entry = self.pending[slot].get_or_insert_with(|| (timestamp.clone(), Vec::new()));
            let room = self.cap.saturating_sub(entry.1.len());
            let take = chunk.len().min(room);
            entry.1.extend_from_slice(&chunk[..take]);
            self.pending_cut[slot] += (chunk.len() - take) as u64;
            if complete {
                self.flush(stream);
            }
            rest = next;
        }
    }

    fn flush(&mut self, stream: LogStream) {
        let slot = stream as usize;
        let Some((timestamp, bytes)) = self.pending[slot].take() else {
            return;
        };
        let cut = std::mem::take(&mut self.pending_cut[slot]);
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        self.lines_read += 1;
        if !self.grep.matches(&text) {
            return;
        }
        self.lines_matched += 1;
        self.truncated_bytes += cut;
        self.kept_bytes += text.len();
        self.kept.push_back(LogLine {
            stream,
            timestamp,
            text,
        });
        while self.kept_bytes > self.cap {
            let Some(old) = self.kept.pop_front() else { break };
            self.kept_bytes -= old.text.len();
            self.truncated_lines += 1;
            self.truncated_bytes += old.text.len() as u64;
        }
    }

    fn finish(mut self, id: String, name: String) -> Logs {
        // A last line without a newline is still a line.
        for stream in [LogStream::Stdout, LogStream::Stderr, LogStream::Console] {
            self.flush(stream);
        }
        let mut lines: Vec<LogLine> = self.kept.into_iter().collect();
        // Frames arrive in time order; the sort only orders lines of different streams that were
        // completed out of order. Stable, so lines without timestamps keep their order.
        lines.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        Logs {
            id,
            name,
            lines,
            lines_read: self.lines_read,
            lines_matched: self.lines_matched,
            truncated_lines: self.truncated_lines,
            truncated_bytes: self.truncated_bytes,
            max_bytes: self.cap,
        }
    }
}

/// Splits the engine's `2006-01-02T15:04:05.999999999Z ` prefix off a frame.
fn split_timestamp(frame: &[u8]) -> (Option<String>, &[u8]) {
    let Some(space) = frame.iter().take(64).position(|b| *b == b' ') else {
        return (None, frame);
    };
    let Ok(token) = std::str::from_utf8(&frame[..space]) else {
        return (None, frame);
    };
    if chrono::DateTime::parse_from_rfc3339(token).is_ok() {
        (Some(token.to_string()), &frame[space + 1..])
    } else {
        (None, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(grep: Option<&str>, cap: usize, frames: &[(LogStream, &str)]) -> Logs {
        let matcher = grep.map_or(LineMatcher::All, |g| LineMatcher::Text(g.to_string()));
        let mut c = LogCollector::new(matcher, cap);
        for (stream, frame) in frames {
            c.push_frame(*stream, frame.as_bytes());
        }
        c.finish("id".into(), "n".into())
    }

    fn texts(logs: &Logs) -> Vec<&str> {
        logs.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn log_lines() {
        use LogStream::{Stderr, Stdout};
        let t1 = "2026-11-21T06:00:01.000000001Z";
        let t2 = "2026-11-21T06:00:02.000000001Z";
        let a = format!("{t1} hello\n");
        let b = format!("{t2} oops\n");
        let logs = collect(None, 1000, &[(Stdout, &a), (Stderr, &b)]);
        assert_eq!(texts(&logs), ["hello", "oops"]);
        assert_eq!(logs.lines[0].timestamp.as_deref(), Some(t1));
        assert_eq!(logs.lines[1].stream, Stderr);
        assert_eq!((logs.lines_read, logs.lines_matched, logs.truncated_lines), (2, 2, 0));

        // A line split over frames, each with its own timestamp; a last line without newline.
        let p1 = format!("{t1} part one ");
        let p2 = format!("{t1} part two\n");
        let p3 = format!("{t2} tail");
        let logs = collect(None, 1000, &[(Stdout, &p1), (Stdout, &p2), (Stdout, &p3)]);
        assert_eq!(texts(&logs), ["part one part two", "tail"]);

        // No timestamps (e.g. an old engine), several lines in one frame, CRLF.
        let logs = collect(None, 1000, &[(Stdout, "x\r\ny\nz\n")]);
        assert_eq!(texts(&logs), ["x", "y", "z"]);

        // grep, then the byte cap keeps the newest.
        let frames: Vec<String> = (0..10)
            .map(|i| format!("{t1} line {i} {}\n", if i % 2 == 0 { "even" } else { "odd" }))
            .collect();
        let framed: Vec<(LogStream, &str)> = frames.iter().map(|f| (Stdout, f.as_str())).collect();
        let logs = collect(Some("even"), 1000, &framed);
        assert_eq!(
            texts(&logs),
            [
                "line 0 even",
                "line 2 even",
                "line 4 even",
                "line 6 even",
                "line 8 even"
            ]
        );
        assert_eq!((logs.lines_read, logs.lines_matched), (10, 5));
        let logs = collect(Some("even"), 25, &framed);
        assert_eq!(texts(&logs), ["line 6 even", "line 8 even"]);
        assert_eq!((logs.truncated_lines, logs.truncated_bytes), (3, 33));

        // One line longer than the cap is cut to the cap.
        let long = format!("{t1} {}\n", "x".repeat(100));
        let logs = collect(None, 10, &[(Stdout, &long)]);
        assert_eq!(texts(&logs), ["xxxxxxxxxx"]);
        assert_eq!(logs.truncated_bytes, 90);
    }

    #[test]
    fn log_queries() {
        let q = |tail, since, grep: Option<&str>, max_bytes| LogQuery {
            tail,
            since,
            grep: grep.map(str::to_string),
            regex: false,
            max_bytes,
        };
        assert_eq!(validate_log_query(&q(10, None, None, 100)).unwrap().0, None);
        assert_eq!(validate_log_query(&q(10, Some(5), Some("x"), 100)).unwrap().0, Some(5));
        let re = |g: &str| LogQuery {
            grep: Some(g.to_string()),
            regex: true,
            ..LogQuery::default()
        };
        let (_, m) = validate_log_query(&re("^err [0-9]+$")).unwrap();
        assert!(m.matches("err 42") && !m.matches("x err 42") && !m.matches("err x"));
        let (_, m) = validate_log_query(&q(10, None, Some("a.b"), 100)).unwrap();
        assert!(m.matches("xa.by") && !m.matches("axb"), "plain text is not a regex");
        for bad in [
            re("(unclosed"),
            re("a{1000}{1000}"),
            LogQuery {
                regex: true,
                ..LogQuery::default()
            },
        ] {
            let e = validate_log_query(&bad).unwrap_err();
            assert!(matches!(e, ExecError::Refused(_)), "{bad:?}: {e:?}");
        }
        for bad in [
            q(0, None, None, 100),
            q(MAX_TAIL + 1, None, None, 100),
            q(10, Some(-1), None, 100),
            q(10, Some(i64::from(i32::MAX) + 1), None, 100),
            q(10, None, Some(""), 100),
            q(10, None, None, 0),
        ] {
            assert!(
                matches!(validate_log_query(&bad), Err(ExecError::Refused(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn log_query_defaults() {
        let q: LogQuery = serde_json::from_value(serde_json::json!({"grep": "x"})).unwrap();
        assert_eq!(
            q,
            LogQuery {
                grep: Some("x".into()),
                ..LogQuery::default()
            }
        );
        assert!(serde_json::from_value::<LogQuery>(serde_json::json!({"follow": true})).is_err());
    }
}
