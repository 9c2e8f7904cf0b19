//! The `logs` toolset: journal queries (`journalctl -o json` through `exec::journal`), tails of
//! log files beneath the `[logs]` roots (the same kernel-enforced resolution as the `files`
//! tools, `exec::fs`), and `logs_analyze`, which clusters errors and warnings by normalised
//! message and finds systemd restart loops — on the server's own host (`local` targets) only.
//!
//! The analysis is pure (records in, [`Analysis`] out) and table-tested. With `summarize: true`
//! and a client that declared sampling, the client's own model is asked (`sampling/createMessage`)
//! to summarise the computed analysis — counts, normalised patterns and restart loops, never the
//! raw example lines — and its text is returned marked as model-written. Tools never check scopes
//! and never write audit rows, with one exception: the journal holds the audit mirror
//! (`SYSLOG_IDENTIFIER=tailopsmcp-audit`, every principal's calls), so a caller without
//! `audit:read` on the target gets those events withheld (and counted), an explicit query for that
//! identifier refused, and journal files (`*.journal`) and syslog lines of that identifier kept
//! from `logs_tail`/`logs_analyze` ([`AuditAccess`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::files::{TAIL_LINES, TailOutput, compile_regex, fs_failed, render_tail, tail_output};
use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, Tool, ToolContext, ToolError, Truncated, blocking,
    bounded, tool,
};
use crate::exec::fs::{Deny, Roots};
use crate::exec::journal::{self, Filter};
use crate::exec::{ExecError, Limits};
use crate::policy::{Area, Level, Scope};

/// `logs_journal.lines`.
pub const JOURNAL_LINES: (i64, i64, i64) = (100, 1, 1000);
/// Entries scanned when `logs_journal` filters with `grep`.
pub const GREP_SCAN: usize = 20_000;
/// `logs_analyze.max_entries`.
pub const ANALYZE_ENTRIES: (i64, i64, i64) = (10_000, 1, 100_000);
/// `logs_analyze.top`.
pub const ANALYZE_TOP: (i64, i64, i64) = (10, 1, 50);
/// Bytes read from the end of a log file by `logs_tail`.
pub const TAIL_WINDOW: usize = 4 << 20;
/// Bytes read from the end of a log file by `logs_analyze`.
pub const ANALYZE_WINDOW: usize = 32 << 20;
/// Output kept from one `journalctl` run.
const JOURNAL_OUTPUT: usize = 64 << 20;
/// A unit with at least this many scheduled restarts (or starts with failures) is in a loop.
pub const RESTART_LOOP_THRESHOLD: u64 = 3;

/// The server's own journal and log files: `local` targets only.
const KINDS: &[Kind] = &[Kind::Local];
const LOGS_READ: Requirement = Requirement::Scope(Scope::new(Area::Logs, Level::Read));

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "logs_journal",
                title: "Query the journal",
                description: "The newest `lines` (1-1000, default 100) systemd journal entries of this host, \
                    oldest first, via `journalctl -o json`: filter by `unit`, `identifier` (syslog identifier), \
                    `priority` (this and more severe: emerg..debug or 0-7), `since`/`until` (journalctl time \
                    forms: `-1h`, `today`, `2025-01-31 12:00:00`) and `grep` (a regular expression over the \
                    message; the newest 20000 entries that pass the other filters are scanned). Each entry: time \
                    (RFC 3339 UTC), priority, unit, identifier, pid, message (at most 4000 characters). Audit \
                    events (identifier `tailopsmcp-audit`) and this server's own log lines (`tailopsmcp`) need \
                    `audit:read` on the target: without it they are left out and counted in `audit_withheld`, \
                    and asking for them is refused. Local \
                    target only; the server needs the `systemd-journal` group to see system entries.",
                requires: LOGS_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            query_journal,
        ),
        tool(
            Declaration {
                name: "logs_tail",
                title: "Tail a log file",
                description: "The last `lines` lines (1-2000, default 100) of a log file under a `[logs] roots` \
                    directory (default `/var/log`), optionally only those matching `grep` (a regular \
                    expression), read from the last 4 MiB of the file. Resolution is done by the kernel beneath \
                    the root: `..` or a symlink leading out of it is refused; names matching a deny pattern \
                    (`*.key`, `.ssh`, `shadow`, ... plus `[logs] deny`) are refused. Local target only.",
                requires: LOGS_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            tail_file,
        ),
        tool(
            Declaration {
                name: "logs_analyze",
                title: "Analyse logs",
                description: "Summarise the journal (filters `unit`, `identifier`, `since`, `until`) or a log file \
                    (`path`, under `[logs] roots`; its last 32 MiB): up to `max_entries` (default 10000, newest) entries or lines. \
                    Errors and warnings (journal priority err or worse / warning; otherwise keywords such as \
                    error, failed, fatal / warn) are clustered by normalised message (numbers, hex, UUIDs, IPs \
                    masked as <n> <hex> <uuid> <ip>) with count and first/last occurrence (time and line); `top` \
                    (1-50, default 10) clusters each for errors, warnings and the most repeated messages of any \
                    level. Restart loops: per systemd unit, counts of `Started`, `Stopped`, `Scheduled restart \
                    job` and `Failed with result` messages; `looping` when restarts were scheduled 3+ times or \
                    it started 3+ times with 2+ failures. `summarize: true` asks the client's model (MCP \
                    sampling, when the client supports it) for a short summary of these computed results (not \
                    the raw lines); it comes back in `summary`, marked as model-written. Otherwise `summary` is \
                    null and a note says why. Local target only.",
                requires: LOGS_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            analyze_logs,
        ),
    ]
}

/// Arguments of `logs_journal`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalArgs {
    /// Only this systemd unit (`nginx.service`; globs `*` `?` allowed).
    #[serde(default)]
    pub unit: Option<String>,
    /// Only this syslog identifier (`SYSLOG_IDENTIFIER`, `journalctl -t`).
    #[serde(default)]
    pub identifier: Option<String>,
    /// This priority and more severe: emerg, alert, crit, err, warning, notice, info, debug, or 0-7.
    #[serde(default)]
    pub priority: Option<String>,
    /// Start time as journalctl takes it: `2025-01-31 12:00:00`, `-1h`, `today`, `yesterday`.
    #[serde(default)]
    pub since: Option<String>,
    /// End time, same forms as `since`.
    #[serde(default)]
    pub until: Option<String>,
    /// Only entries whose message matches this regular expression (Rust regex syntax).
    #[serde(default)]
    pub grep: Option<String>,
    /// Most entries returned (the newest), 1 to 1000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub lines: Option<i64>,
}

/// Arguments of `logs_tail`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsTailArgs {
    /// A log file under a `[logs] roots` directory (default `/var/log`).
    pub path: String,
    /// Lines from the end, 1 to 2000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 2000))]
    pub lines: Option<i64>,
    /// Only lines matching this regular expression.
    #[serde(default)]
    pub grep: Option<String>,
}

/// Arguments of `logs_analyze`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeArgs {
    /// Analyse this log file (under `[logs] roots`) instead of the journal.
    #[serde(default)]
    pub path: Option<String>,
    /// Journal: only this unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// Journal: only this syslog identifier.
    #[serde(default)]
    pub identifier: Option<String>,
    /// Journal: start time (`-1h`, `today`, `2025-01-31 12:00:00`).
    #[serde(default)]
    pub since: Option<String>,
    /// Journal: end time.
    #[serde(default)]
    pub until: Option<String>,
    /// Most entries (journal) or lines (file, from the end) analysed, 1 to 100000 (default 10000).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100000))]
    pub max_entries: Option<i64>,
    /// Clusters listed per section, 1 to 50 (default 10).
    #[serde(default)]
    #[schemars(range(min = 1, max = 50))]
    pub top: Option<i64>,
    /// Ask the client's model for a short summary of the computed analysis (MCP sampling; the
    /// client shows the request to its user). Ignored, with a note, when the client cannot sample.
    #[serde(default)]
    pub summarize: bool,
}

/// `structuredContent` of `logs_journal`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JournalOutput {
    /// Entries returned, oldest first.
    pub count: usize,
    pub entries: Vec<journal::Entry>,
    /// Entries read from the journal before `grep` filtered them.
    pub scanned: usize,
    /// Audit events (`SYSLOG_IDENTIFIER=tailopsmcp-audit`) and the server's own log lines
    /// (`tailopsmcp`, unit `tailopsmcp.service`) among them that were left out because the
    /// caller does not hold `audit:read` on the target.
    pub audit_withheld: usize,
    pub truncated: Option<Truncated>,
}

/// `SYSLOG_IDENTIFIER` of the audit mirror's journald events (`crate::audit::JOURNAL_IDENTIFIER`).
const AUDIT_IDENTIFIER: &str = crate::audit::JOURNAL_IDENTIFIER;
/// The server's own log lines (its stderr under systemd): they name callers, peers and refusal
/// reasons too, so they are kept from callers without `audit:read` like the audit events.
const SERVER_IDENTIFIER: &str = "tailopsmcp";
/// The server's unit (`systemd/tailopsmcp.service`).
const SERVER_UNIT: &str = "tailopsmcp.service";

/// Whether a journal entry is the server's own: an audit event or one of its log lines.
fn server_record(e: &journal::Entry) -> bool {
    matches!(e.identifier.as_deref(), Some(AUDIT_IDENTIFIER | SERVER_IDENTIFIER))
        || e.unit.as_deref() == Some(SERVER_UNIT)
}

/// Whether the caller may read audit events in logs: `audit:read` on the call's target. The
/// journal holds every principal's audit events (the mirror of the audit log), so `logs:read`
/// alone must not show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditAccess(bool);

impl AuditAccess {
    pub fn of(ctx: &ToolContext) -> AuditAccess {
        let needed = Scope::new(Area::Audit, Level::Read);
        AuditAccess(
            crate::policy::scopes_on(&ctx.grants, &ctx.target.id)
                .iter()
                .any(|(s, _)| s.covers(needed)),
        )
    }

    /// Refuse an explicit query for the audit identifier, or the server's own identifier or
    /// unit, without `audit:read`.
    fn check_filter(self, filter: &Filter, target: &str) -> Result<(), ToolError> {
        if self.0 {
            return Ok(());
        }
        if filter.identifier.as_deref() == Some(AUDIT_IDENTIFIER) {
            return Err(ToolError::InvalidArgs(format!(
                "`identifier` {AUDIT_IDENTIFIER} is the audit log's journald mirror: reading it needs \
                 audit:read on target `{target}` (logs:read is not enough)"
            )));
        }
        let own_unit = filter
            .unit
            .as_deref()
            .is_some_and(|u| u == SERVER_UNIT || u == SERVER_IDENTIFIER);
        if own_unit || filter.identifier.as_deref() == Some(SERVER_IDENTIFIER) {
            return Err(ToolError::InvalidArgs(format!(
                "the server's own log names every caller and what they did: reading it needs audit:read on \
                 target `{target}` (logs:read is not enough)"
            )));
        }
        Ok(())
    }

    /// Drop audit events from `entries` unless allowed; how many went.
    fn withhold(self, entries: &mut Vec<journal::Entry>) -> usize {
        if self.0 {
            return 0;
        }
        let before = entries.len();
        entries.retain(|e| !server_record(e));
        before - entries.len()
    }

    /// Refuse a journal file (binary journals hold the audit events too) unless allowed.
    fn check_path(self, path: &str, target: &str) -> Result<(), ToolError> {
        let journal_file =
            path.ends_with(".journal") || path.ends_with(".journal~") || path.split('/').any(|c| c == "journal");
        if !self.0 && journal_file {
            return Err(ToolError::InvalidArgs(format!(
                "`{path}` is (or is under) a systemd journal directory, which holds the audit log's \
                 events: reading it needs audit:read on target `{target}`; use logs_journal"
            )));
        }
        Ok(())
    }

    /// Drop syslog lines of the audit identifier (`… tailopsmcp-audit[PID]: …`, as rsyslog
    /// writes journal events to `/var/log/syslog`) unless allowed; how many went.
    fn withhold_lines(self, lines: &mut Vec<String>) -> usize {
        if self.0 {
            return 0;
        }
        let before = lines.len();
        let tagged = |l: &String| {
            [AUDIT_IDENTIFIER, SERVER_IDENTIFIER]
                .iter()
                .any(|id| l.contains(&format!(" {id}[")) || l.contains(&format!(" {id}:")))
        };
        lines.retain(|l| !tagged(l));
        before - lines.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `logs_journal`.
async fn query_journal(ctx: ToolContext, args: JournalArgs) -> Result<Output<JournalOutput>, ToolError> {
    let lines = bounded("lines", args.lines, JOURNAL_LINES.0, JOURNAL_LINES.1, JOURNAL_LINES.2)?;
    let priority = args
        .priority
        .as_deref()
        .map(journal::parse_priority)
        .transpose()
        .map_err(ToolError::InvalidArgs)?;
    let filter = Filter {
        unit: args.unit,
        identifier: args.identifier,
        priority,
        since: args.since,
        until: args.until,
    };
    journal::validate(&filter).map_err(ToolError::InvalidArgs)?;
    let grep = args.grep.as_deref().map(|g| compile_regex("grep", g)).transpose()?;
    let audit = AuditAccess::of(&ctx);
    audit.check_filter(&filter, &ctx.target.id)?;
    let scan = if grep.is_some() { GREP_SCAN } else { lines };
    let (mut entries, cut) = journal::query(&filter, scan, journal_limits(&ctx))
        .await
        .map_err(journal_failed)?;
    let scanned = entries.len();
    let audit_withheld = audit.withhold(&mut entries);
    if let Some(re) = &grep {
        entries.retain(|e| re.is_match(&e.message));
    }
    let omitted = entries.len().saturating_sub(lines);
    entries.drain(..omitted);
    let truncated = if omitted > 0 {
        Some(Truncated {
            cap: format!("lines={lines}"),
            omitted: Some(omitted as u64),
        })
    } else if cut {
        Some(Truncated {
            cap: format!("{JOURNAL_OUTPUT} bytes of journalctl output"),
            omitted: None,
        })
    } else if grep.is_some() && scanned >= GREP_SCAN {
        Some(Truncated {
            cap: format!("grep scanned the newest {GREP_SCAN} entries"),
            omitted: None,
        })
    } else {
        None
    };
    let out = JournalOutput {
        count: entries.len(),
        entries,
        scanned,
        audit_withheld,
        truncated,
    };
    let text = render_journal(&out);
    Ok(Output::new(out, text))
}

/// `logs_tail`.
async fn tail_file(ctx: ToolContext, args: LogsTailArgs) -> Result<Output<TailOutput>, ToolError> {
    let lines = bounded("lines", args.lines, TAIL_LINES.0, TAIL_LINES.1, TAIL_LINES.2)?;
    let grep = args.grep.as_deref().map(|g| compile_regex("grep", g)).transpose()?;
    let audit = AuditAccess::of(&ctx);
    audit.check_path(&args.path, &ctx.target.id)?;
    let roots = logs_roots(&ctx);
    let mut tail = blocking(move || roots.tail(&args.path, lines, TAIL_WINDOW, grep.as_ref()))
        .await?
        .map_err(fs_failed)?;
    audit.check_path(&tail.path, &ctx.target.id)?;
    let withheld = audit.withhold_lines(&mut tail.lines);
    tail.lines_available = tail.lines_available.saturating_sub(withheld as u64);
    let out = tail_output(tail, lines, TAIL_WINDOW);
    let text = render_tail(&out);
    Ok(Output::new(out, text))
}

/// `logs_analyze`.
async fn analyze_logs(ctx: ToolContext, args: AnalyzeArgs) -> Result<Output<Analysis>, ToolError> {
    let max = bounded(
        "max_entries",
        args.max_entries,
        ANALYZE_ENTRIES.0,
        ANALYZE_ENTRIES.1,
        ANALYZE_ENTRIES.2,
    )?;
    let top = bounded("top", args.top, ANALYZE_TOP.0, ANALYZE_TOP.1, ANALYZE_TOP.2)?;
    let filter = Filter {
        unit: args.unit,
        identifier: args.identifier,
        priority: None,
        since: args.since,
        until: args.until,
    };
    let withheld;
    let (records, source, cut) = match args.path {
        Some(path) => {
            if filter != Filter::default() {
                return Err(ToolError::InvalidArgs(
                    "`unit`, `identifier`, `since` and `until` filter the journal; they cannot be \
                     combined with `path`"
                        .into(),
                ));
            }
            let audit = AuditAccess::of(&ctx);
            audit.check_path(&path, &ctx.target.id)?;
            let roots = logs_roots(&ctx);
            let mut tail = blocking(move || roots.tail(&path, max, ANALYZE_WINDOW, None))
                .await?
                .map_err(fs_failed)?;
            audit.check_path(&tail.path, &ctx.target.id)?;
            withheld = audit.withhold_lines(&mut tail.lines);
            // Line numbers only when the window started at the top of the file.
            let first_line = tail.lines_available.saturating_sub(tail.lines.len() as u64) + 1;
            let records: Vec<Record> = tail
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let mut r = Record::from_line(l, first_line + i as u64);
                    if tail.window_cut {
                        r.line = None;
                    }
                    r
                })
                .collect();
            let cut = tail.window_cut || tail.lines_available > tail.lines.len() as u64;
            (records, format!("file {}", tail.path), cut)
        }
        None => {
            journal::validate(&filter).map_err(ToolError::InvalidArgs)?;
            let audit = AuditAccess::of(&ctx);
            audit.check_filter(&filter, &ctx.target.id)?;
            let (mut entries, cut) = journal::query(&filter, max, journal_limits(&ctx))
                .await
                .map_err(journal_failed)?;
            let full = entries.len() >= max;
            withheld = audit.withhold(&mut entries);
            let records = entries.into_iter().map(Record::from_entry).collect();
            (records, describe_filter(&filter), cut || full)
        }
    };
    let mut out = analyze(&records, top);
    out.source = source;
    if withheld > 0 {
        out.notes.push(format!(
            "{withheld} audit events (tailopsmcp-audit) withheld: reading them needs audit:read"
        ));
    }
    if cut {
        out.truncated = Some(Truncated {
            cap: format!("max_entries={max} (newest kept)"),
            omitted: None,
        });
    }
    if args.summarize {
        summarize(&ctx, &mut out).await;
    }
    let text = render_analysis(&out);
    Ok(Output::new(out, text))
}

/// Most tokens the client's model may write for a summary.
const SUMMARY_TOKENS: u32 = 400;
/// How long the client may take to answer a sampling request.
const SUMMARY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
/// What the summary is marked with.
pub const SUMMARY_NOTE: &str = "written by the client's model (sampling), not computed by tailopsmcp";

/// Ask the client's model for a summary of `out` (its computed parts only); on any failure
/// `summary` stays null and the note says why.
async fn summarize(ctx: &ToolContext, out: &mut Analysis) {
    if !ctx.can_sample() {
        out.notes[0] = "summary: not produced; the client did not declare the MCP sampling capability, so there \
                        is no model to ask (everything here is computed from the records)"
            .into();
        return;
    }
    let system = "You summarise log analyses for a homelab operator. Use only the data given. In at most 5 \
                  short sentences: the main problems, whether any unit is in a restart loop, and what to check \
                  first. Do not invent causes the data does not show.";
    let prompt = format!(
        "Summarise this analysis computed by tailopsmcp's logs_analyze (messages are normalised: numbers, hex, \
         UUIDs and IPs masked):\n{}",
        sampling_input(out)
    );
    match ctx.sample(system, &prompt, SUMMARY_TOKENS, SUMMARY_WAIT).await {
        Ok(s) => {
            out.summary = Some(ModelSummary {
                text: s.text,
                model: s.model,
                note: SUMMARY_NOTE.into(),
            });
            out.notes[0] = format!("summary: {SUMMARY_NOTE}; every other field is computed from the records");
        }
        Err(why) => {
            out.notes[0] = format!("summary: not produced; {why} (everything here is computed from the records)");
        }
    }
}

/// The computed analysis as sent to the client's model: counts, normalised patterns (at most
/// 200 characters each), times and restart counts. Example lines, which carry raw log text,
/// are left out.
pub fn sampling_input(a: &Analysis) -> String {
    let clusters = |v: &[Cluster]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|c| {
                serde_json::json!({
                    "severity": c.severity,
                    "pattern": c.pattern.chars().take(200).collect::<String>(),
                    "count": c.count,
                    "first": c.first.time,
                    "last": c.last.time,
                })
            })
            .collect()
    };
    let restarts: Vec<serde_json::Value> = a
        .restarts
        .iter()
        .map(|u| {
            serde_json::json!({
                "unit": u.unit,
                "started": u.started,
                "stopped": u.stopped,
                "scheduled_restarts": u.scheduled_restarts,
                "failures": u.failures,
                "looping": u.looping,
            })
        })
        .collect();
    serde_json::json!({
        "source": a.source,
        "entries": a.entries,
        "errors": a.errors,
        "warnings": a.warnings,
        "distinct_patterns": a.distinct_patterns,
        "first": a.first,
        "last": a.last,
        "error_clusters": clusters(&a.error_clusters),
        "warning_clusters": clusters(&a.warning_clusters),
        "top_messages": clusters(&a.top_messages),
        "restarts": restarts,
    })
    .to_string()
}

fn logs_roots(ctx: &ToolContext) -> Roots {
    let c = &ctx.config.logs;
    Roots::new("[logs]", c.roots.clone(), Deny::new(&c.deny)).with_protected(super::files::protected(&ctx.config))
}

fn journal_limits(ctx: &ToolContext) -> Limits {
    Limits {
        timeout: ctx.target.limits.timeout,
        max_output: JOURNAL_OUTPUT,
    }
}

fn journal_failed(e: ExecError) -> ToolError {
    match e {
        ExecError::Failed(m) if m.contains("program `journalctl` not found") => {
            ToolError::Failed("journalctl not found: the journal tools need systemd's journalctl on this host".into())
        }
        ExecError::Refused(m) => ToolError::InvalidArgs(m),
        other => ToolError::Failed(other.to_string()),
    }
}

fn describe_filter(f: &Filter) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("unit", &f.unit),
        ("identifier", &f.identifier),
        ("since", &f.since),
        ("until", &f.until),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    if parts.is_empty() {
        "journal".into()
    } else {
        format!("journal ({})", parts.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Analysis (pure).

/// One log record, from the journal or a file line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub time: Option<String>,
    /// Line number in the file (file sources).
    pub line: Option<u64>,
    pub priority: Option<u8>,
    /// The unit a systemd message is about (journal `UNIT`), when known.
    pub unit: Option<String>,
    pub message: String,
}

static SYSLOG_3164: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) \S+ ([^:\[\s]+)(?:\[\d+\])?: ?(.*)$").expect("valid")
});
static SYSLOG_ISO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) \S+ ([^:\[\s]+)(?:\[\d+\])?: ?(.*)$")
        .expect("valid")
});
static LEADING_TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\[?(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)\]?\s+(.*)$").expect("valid")
});

impl Record {
    /// A file line: a syslog (RFC 3164 or ISO) prefix or a leading ISO time is split off.
    pub fn from_line(line: &str, number: u64) -> Record {
        let (time, message) = if let Some(c) = SYSLOG_3164.captures(line).or_else(|| SYSLOG_ISO.captures(line)) {
            (Some(c[1].to_string()), c[3].to_string())
        } else if let Some(c) = LEADING_TIME.captures(line) {
            (Some(c[1].to_string()), c[2].to_string())
        } else {
            (None, line.to_string())
        };
        Record {
            time,
            line: Some(number),
            priority: None,
            unit: None,
            message,
        }
    }

    fn from_entry(e: journal::Entry) -> Record {
        Record {
            time: e.time,
            line: None,
            priority: e.priority,
            unit: e.about_unit,
            message: e.message,
        }
    }
}

/// Error, warning or other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
    Other,
}

static ERROR_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(error|errors|err|fatal|critical|crit|panic|emerg|alert|failed|failure|exception|traceback|segfault)\b",
    )
    .expect("valid")
});
static WARNING_WORDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(warn|warning|warnings|deprecated)\b").expect("valid"));

fn severity(r: &Record) -> Severity {
    match r.priority {
        Some(p) if p <= 3 => Severity::Error,
        Some(4) => Severity::Warning,
        _ if ERROR_WORDS.is_match(&r.message) => Severity::Error,
        _ if WARNING_WORDS.is_match(&r.message) => Severity::Warning,
        _ => Severity::Other,
    }
}

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b").expect("valid")
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b").expect("valid"));
static HEX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b0x[0-9a-f]+\b|\b[0-9a-f]*\d[0-9a-f]*[a-f][0-9a-f]*\b|\b[0-9a-f]*[a-f][0-9a-f]*\d[0-9a-f]*\b")
        .expect("valid")
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+").expect("valid"));
static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("valid"));

/// The message with variable parts masked: UUIDs, IPv4 addresses (with port), hex numbers and
/// hex strings that mix digits and letters (ids, hashes), then digit runs; whitespace collapsed.
pub fn normalize(message: &str) -> String {
    let s = UUID.replace_all(message, "<uuid>");
    let s = IPV4.replace_all(&s, "<ip>");
    let s = HEX.replace_all(&s, |c: &regex::Captures| {
        // Short words such as `a1` or `b2b` are rarely ids; keep them unless they are long.
        if c[0].len() >= 6 || c[0].starts_with("0x") || c[0].starts_with("0X") {
            "<hex>".to_string()
        } else {
            c[0].to_string()
        }
    });
    let s = NUMBER.replace_all(&s, "<n>");
    let s = SPACES.replace_all(s.trim(), " ");
    let mut out: String = s.chars().take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// Where a cluster was seen.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Occurrence {
    pub time: Option<String>,
    /// Line number in the file (file sources, when the file was read from its first line; the
    /// newest 32 MiB are read).
    pub line: Option<u64>,
}

/// Messages that are the same once normalised.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Cluster {
    pub severity: Severity,
    /// The normalised message.
    pub pattern: String,
    pub count: u64,
    pub first: Occurrence,
    pub last: Occurrence,
    /// The first message as logged (at most 500 characters).
    pub example: String,
}

/// Start/stop/restart activity of one systemd unit.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UnitRestarts {
    pub unit: String,
    pub started: u64,
    pub stopped: u64,
    /// `Scheduled restart job` messages.
    pub scheduled_restarts: u64,
    /// `Failed with result` / `Main process exited` with a failure status.
    pub failures: u64,
    /// The highest `restart counter is at N`.
    pub max_restart_counter: Option<u64>,
    /// Scheduled restarts ≥ 3, or starts ≥ 3 with failures ≥ 2.
    pub looping: bool,
    pub first: Occurrence,
    pub last: Occurrence,
}

/// `structuredContent` of `logs_analyze`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Analysis {
    /// What was analysed: `journal (unit=…)` or `file /var/log/…`.
    pub source: String,
    pub entries: u64,
    pub errors: u64,
    pub warnings: u64,
    /// Distinct normalised messages of any severity.
    pub distinct_patterns: u64,
    /// First and last time seen (as the source writes times).
    pub first: Option<String>,
    pub last: Option<String>,
    /// The largest error clusters (at most `top`).
    pub error_clusters: Vec<Cluster>,
    pub warning_clusters: Vec<Cluster>,
    /// The most repeated messages of any severity (count ≥ 2; at most `top`).
    pub top_messages: Vec<Cluster>,
    /// Units with restarts or failures, most restarted first.
    pub restarts: Vec<UnitRestarts>,
    /// A summary written by the client's model (`summarize: true` and a client that supports
    /// sampling); null otherwise, with a note saying why. Not computed by this server.
    pub summary: Option<ModelSummary>,
    pub notes: Vec<String>,
    pub truncated: Option<Truncated>,
}

/// A model-written summary of an [`Analysis`], from the client (MCP sampling).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModelSummary {
    pub text: String,
    /// The model the client says wrote it.
    pub model: String,
    /// Always: written by the client's model (sampling), not computed by tailopsmcp.
    pub note: String,
}

static SCHEDULED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:(\S+?): )?Scheduled restart job, restart counter is at (\d+)").expect("valid"));
static STARTED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(?:Started|Starting) (.+?)\.?$").expect("valid"));
static STOPPED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^Stopped (.+?)\.?$").expect("valid"));
static FAILED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(\S+?): )?(?:Failed with result '[^']+'|Main process exited, code=\w+, status=\d+/(?:[A-Z]+))")
        .expect("valid")
});
static UNIT_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([\w@.:\\-]+\.(?:service|socket|timer|mount|scope|target|path|slice|swap|automount|device))\b")
        .expect("valid")
});

/// What a message says about a unit's lifecycle.
enum Lifecycle {
    Started(String),
    Stopped(String),
    Scheduled(String, u64),
    Failed(String),
}

fn lifecycle(r: &Record) -> Option<Lifecycle> {
    let m = r.message.trim();
    // "Started foo.service - Foo." (systemd 250+) or "Started Foo." (description only).
    let name = |captured: &str| -> String {
        r.unit.clone().unwrap_or_else(|| {
            UNIT_NAME
                .captures(captured)
                .map(|c| c[1].to_string())
                .unwrap_or_else(|| captured.split(" - ").next().unwrap_or(captured).to_string())
        })
    };
    if let Some(c) = SCHEDULED.captures(m) {
        let unit = r
            .unit
            .clone()
            .or_else(|| c.get(1).map(|u| u.as_str().to_string()))
            .unwrap_or_else(|| "(unknown unit)".into());
        return Some(Lifecycle::Scheduled(unit, c[2].parse().unwrap_or(0)));
    }
    if let Some(c) = FAILED.captures(m) {
        if m.contains("status=0/SUCCESS") {
            return None;
        }
        let unit = r
            .unit
            .clone()
            .or_else(|| c.get(1).map(|u| u.as_str().to_string()))
            .unwrap_or_else(|| "(unknown unit)".into());
        return Some(Lifecycle::Failed(unit));
    }
    if m.starts_with("Starting ") {
        return None;
    }
    if let Some(c) = STARTED.captures(m) {
        return Some(Lifecycle::Started(name(&c[1])));
    }
    if let Some(c) = STOPPED.captures(m) {
        return Some(Lifecycle::Stopped(name(&c[1])));
    }
    None
}

/// Cluster `records` (oldest first) and find restart loops; `top` clusters per section.
pub fn analyze(records: &[Record], top: usize) -> Analysis {
    let mut clusters: HashMap<(Severity, String), Cluster> = HashMap::new();
    let mut order: Vec<(Severity, String)> = Vec::new();
    let mut units: HashMap<String, UnitRestarts> = HashMap::new();
    let mut unit_order: Vec<String> = Vec::new();
    let (mut errors, mut warnings) = (0u64, 0u64);
    for r in records {
        let sev = severity(r);
        match sev {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
            Severity::Other => {}
        }
        let at = Occurrence {
            time: r.time.clone(),
            line: r.line,
        };
        let key = (sev, normalize(&r.message));
        match clusters.get_mut(&key) {
            Some(c) => {
                c.count += 1;
                c.last = at.clone();
            }
            None => {
                order.push(key.clone());
                clusters.insert(
                    key.clone(),
                    Cluster {
                        severity: sev,
                        pattern: key.1.clone(),
                        count: 1,
                        first: at.clone(),
                        last: at.clone(),
                        example: r.message.chars().take(500).collect(),
                    },
                );
            }
        }
        if let Some(event) = lifecycle(r) {
            let unit = match &event {
                Lifecycle::Started(u) | Lifecycle::Stopped(u) | Lifecycle::Scheduled(u, _) | Lifecycle::Failed(u) => {
                    u.clone()
                }
            };
            let entry = units.entry(unit.clone()).or_insert_with(|| {
                unit_order.push(unit.clone());
                UnitRestarts {
                    unit: unit.clone(),
                    started: 0,
                    stopped: 0,
                    scheduled_restarts: 0,
                    failures: 0,
                    max_restart_counter: None,
                    looping: false,
                    first: at.clone(),
                    last: at.clone(),
                }
            });
            entry.last = at.clone();
            match event {
                Lifecycle::Started(_) => entry.started += 1,
                Lifecycle::Stopped(_) => entry.stopped += 1,
                Lifecycle::Scheduled(_, n) => {
                    entry.scheduled_restarts += 1;
                    entry.max_restart_counter = Some(entry.max_restart_counter.map_or(n, |m| m.max(n)));
                }
                Lifecycle::Failed(_) => entry.failures += 1,
            }
        }
    }
    // Largest first; ties keep first-seen order.
    let ranked = |pred: &dyn Fn(&Cluster) -> bool| -> Vec<Cluster> {
        let mut v: Vec<(usize, &Cluster)> = order
            .iter()
            .enumerate()
            .map(|(i, k)| (i, &clusters[k]))
            .filter(|(_, c)| pred(c))
            .collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        v.into_iter().take(top).map(|(_, c)| c.clone()).collect()
    };
    let error_clusters = ranked(&|c| c.severity == Severity::Error);
    let warning_clusters = ranked(&|c| c.severity == Severity::Warning);
    let top_messages = ranked(&|c| c.count >= 2);
    let mut restarts: Vec<UnitRestarts> = unit_order
        .into_iter()
        .filter_map(|u| units.remove(&u))
        .map(|mut u| {
            u.looping = u.scheduled_restarts >= RESTART_LOOP_THRESHOLD
                || (u.started >= RESTART_LOOP_THRESHOLD && u.failures >= 2);
            u
        })
        .filter(|u| u.scheduled_restarts > 0 || u.failures > 0 || u.started > 1)
        .collect();
    restarts.sort_by(|a, b| {
        b.looping
            .cmp(&a.looping)
            .then(b.scheduled_restarts.cmp(&a.scheduled_restarts))
            .then(b.started.cmp(&a.started))
    });
    Analysis {
        source: String::new(),
        entries: records.len() as u64,
        errors,
        warnings,
        distinct_patterns: order.len() as u64,
        first: records.iter().find_map(|r| r.time.clone()),
        last: records.iter().rev().find_map(|r| r.time.clone()),
        error_clusters,
        warning_clusters,
        top_messages,
        restarts,
        summary: None,
        notes: vec![
            "summary: not requested (`summarize: true` asks the client's model, when the client supports \
             sampling); everything here is computed from the records"
                .into(),
        ],
        truncated: None,
    }
}

fn render_journal(out: &JournalOutput) -> String {
    let mut t = format!("{} journal entries", out.count);
    if out.audit_withheld > 0 {
        let _ = write!(
            t,
            " ({} audit events withheld: reading them needs audit:read)",
            out.audit_withheld
        );
    }
    if let Some(tr) = &out.truncated {
        let _ = write!(t, " (cut: {})", tr.cap);
    }
    for e in &out.entries {
        let prio = e
            .priority
            .and_then(|p| journal::PRIORITIES.get(p as usize))
            .copied()
            .unwrap_or("?");
        let _ = write!(
            t,
            "\n{} {} {}[{}] {}: {}",
            e.time.as_deref().unwrap_or("?"),
            prio,
            e.identifier.as_deref().unwrap_or("-"),
            e.pid.map(|p| p.to_string()).unwrap_or_default(),
            e.unit.as_deref().unwrap_or("-"),
            e.message
        );
    }
    t
}

fn render_analysis(a: &Analysis) -> String {
    let mut t = format!(
        "{}: {} entries, {} errors, {} warnings, {} distinct messages ({} .. {})",
        a.source,
        a.entries,
        a.errors,
        a.warnings,
        a.distinct_patterns,
        a.first.as_deref().unwrap_or("?"),
        a.last.as_deref().unwrap_or("?")
    );
    for (title, list) in [
        ("errors", &a.error_clusters),
        ("warnings", &a.warning_clusters),
        ("most repeated", &a.top_messages),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = write!(t, "\n{title}:");
        for c in list {
            let _ = write!(
                t,
                "\n  {:>6}×  {}  (first {}, last {})",
                c.count,
                c.pattern,
                where_(&c.first),
                where_(&c.last)
            );
        }
    }
    if !a.restarts.is_empty() {
        let _ = write!(t, "\nrestarts:");
        for u in &a.restarts {
            let _ = write!(
                t,
                "\n  {}{}: started {}, stopped {}, scheduled restarts {}, failures {}",
                u.unit,
                if u.looping { " [LOOP]" } else { "" },
                u.started,
                u.stopped,
                u.scheduled_restarts,
                u.failures
            );
        }
    }
    match &a.summary {
        Some(m) => {
            let _ = write!(
                t,
                "\nsummary by the client's model {} ({}):\n{}",
                m.model, m.note, m.text
            );
        }
        None => {
            let _ = write!(t, "\n{}", a.notes[0]);
        }
    }
    for note in a.notes.iter().skip(1) {
        let _ = write!(t, "\n{note}");
    }
    t
}

fn where_(o: &Occurrence) -> String {
    match (&o.time, o.line) {
        (Some(t), Some(l)) => format!("{t}, line {l}"),
        (Some(t), None) => t.clone(),
        (None, Some(l)) => format!("line {l}"),
        (None, None) => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_records_need_audit_read() {
        let entry = |identifier: &str, unit: &str| journal::Entry {
            time: None,
            priority: None,
            unit: Some(unit.to_string()).filter(|u| !u.is_empty()),
            identifier: Some(identifier.to_string()),
            pid: None,
            message: "x".into(),
            about_unit: None,
        };
        let mut entries = vec![
            entry("tailopsmcp-audit", ""),
            entry("tailopsmcp", "tailopsmcp.service"),
            entry("sshd", "tailopsmcp.service"),
            entry("nginx", "nginx.service"),
        ];
        assert_eq!(AuditAccess(true).withhold(&mut entries.clone()), 0);
        assert_eq!(AuditAccess(false).withhold(&mut entries), 3);
        assert_eq!(entries.len(), 1, "{entries:?}");
        let monitor = AuditAccess(false);
        for filter in [
            Filter {
                identifier: Some("tailopsmcp-audit".into()),
                ..Filter::default()
            },
            Filter {
                identifier: Some("tailopsmcp".into()),
                ..Filter::default()
            },
            Filter {
                unit: Some("tailopsmcp.service".into()),
                ..Filter::default()
            },
        ] {
            let e = monitor.check_filter(&filter, "local").unwrap_err().to_string();
            assert!(e.contains("needs audit:read on target `local`"), "{e}");
            assert!(AuditAccess(true).check_filter(&filter, "local").is_ok());
        }
        let mut lines = vec![
            "Dec  7 host tailopsmcp[42]: refused peer=100.1.2.3".to_string(),
            "Dec  7 host tailopsmcp-audit[42]: allow alice".to_string(),
            "Dec  7 host nginx[7]: GET /".to_string(),
        ];
        assert_eq!(monitor.withhold_lines(&mut lines), 2);
        assert_eq!(lines.len(), 1);
    }

    fn check_norm(input: &str, expected: &str) {
        assert_eq!(normalize(input), expected, "{input}");
    }

    #[test]
    fn normalisation_masks_variable_parts() {
        check_norm("connection 42 refused", "connection <n> refused");
        check_norm(
            "request 3f2a1b9c-0d4e-4f5a-8b6c-7d8e9f0a1b2c failed",
            "request <uuid> failed",
        );
        check_norm("peer 10.0.0.7:5432 closed", "peer <ip> closed");
        check_norm("at 0x7ffd1234 segfault", "at <hex> segfault");
        check_norm("commit deadbeef12 bad", "commit <hex> bad");
        check_norm("  many   spaces  ", "many spaces");
        check_norm("sha256 a1", "sha<n> a<n>");
    }

    fn line(n: u64, text: &str) -> Record {
        Record::from_line(text, n)
    }

    #[test]
    fn file_lines_lose_their_syslog_prefix() {
        let r = line(1, "Nov 21 08:40:20 host app[123]: db timeout after 30s");
        assert_eq!(r.time.as_deref(), Some("Nov 21 08:40:20"));
        assert_eq!(r.message, "db timeout after 30s");
        let r = line(
            2,
            "2025-01-31T12:00:00.123+00:00 host systemd[1]: Started foo.service - Foo.",
        );
        assert_eq!(r.time.as_deref(), Some("2025-01-31T12:00:00.123+00:00"));
        assert_eq!(r.message, "Started foo.service - Foo.");
        let r = line(3, "2025-01-31 12:00:00,5 ERROR x");
        assert_eq!(r.message, "ERROR x");
        let r = line(4, "plain");
        assert_eq!((r.time, r.message.as_str()), (None, "plain"));
    }

    #[test]
    fn clusters_and_restart_loops() {
        let mut records = Vec::new();
        for i in 0..5 {
            records.push(line(
                i * 3 + 1,
                &format!("Nov 21 08:00:{i:02} h app[{i}]: ERROR db timeout after {i}s"),
            ));
            records.push(line(
                i * 3 + 2,
                &format!(
                    "Nov 21 08:00:{i:02} h systemd[1]: web.service: Scheduled restart job, restart counter is at {}.",
                    i + 1
                ),
            ));
            records.push(line(
                i * 3 + 3,
                &format!("Nov 21 08:00:{i:02} h systemd[1]: Started web.service - Web."),
            ));
        }
        records.push(line(16, "Nov 21 08:01:00 h app[9]: warning: disk 91% full"));
        records.push(line(17, "Nov 21 08:01:01 h systemd[1]: Started cron.service - Cron."));
        let a = analyze(&records, 10);
        assert_eq!(a.entries, 17);
        assert_eq!(a.errors, 5);
        assert_eq!(a.warnings, 1);
        assert_eq!(a.error_clusters.len(), 1);
        let c = &a.error_clusters[0];
        assert_eq!(c.pattern, "ERROR db timeout after <n>s");
        assert_eq!(c.count, 5);
        assert_eq!((c.first.line, c.last.line), (Some(1), Some(13)));
        assert_eq!(c.first.time.as_deref(), Some("Nov 21 08:00:00"));
        assert_eq!(a.warning_clusters[0].pattern, "warning: disk <n>% full");
        assert_eq!(a.top_messages[0].count, 5);
        let web = a.restarts.iter().find(|u| u.unit == "web.service").unwrap();
        assert_eq!(
            (web.started, web.scheduled_restarts, web.max_restart_counter),
            (5, 5, Some(5))
        );
        assert!(web.looping);
        assert!(
            !a.restarts.iter().any(|u| u.unit == "cron.service"),
            "one start is no loop"
        );
        assert!(a.summary.is_none());
        assert!(a.notes[0].starts_with("summary: not requested"));
        // What a sampling request would carry: the computed clusters, never the raw examples.
        let sent = sampling_input(&a);
        assert!(sent.contains("warning: disk <n>% full"), "{sent}");
        assert!(!sent.contains("\"example\""), "{sent}");
    }

    #[test]
    fn journal_priorities_decide_severity() {
        let r = |p: u8, m: &str| Record {
            priority: Some(p),
            message: m.into(),
            ..Record::default()
        };
        assert_eq!(severity(&r(3, "all good")), Severity::Error);
        assert_eq!(severity(&r(4, "x")), Severity::Warning);
        assert_eq!(severity(&r(6, "request failed")), Severity::Error);
        assert_eq!(severity(&r(6, "fine")), Severity::Other);
        let unit_msg = Record {
            priority: Some(6),
            unit: Some("db.service".into()),
            message: "Started PostgreSQL.".into(),
            ..Record::default()
        };
        assert!(matches!(lifecycle(&unit_msg), Some(Lifecycle::Started(u)) if u == "db.service"));
    }
}
