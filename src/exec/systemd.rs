//! systemd units on a host reached through a [`Runner`] (this host or an SSH host): listing,
//! status with recent journal lines, control verbs, and the request encoding of the root helper
//! template unit (`tailopsmcp-helper@.service`) that does what the unprivileged server may not.
//!
//! Everything that reaches a command line is validated here first: unit names against systemd's
//! grammar ([`validate_unit`]), glob patterns ([`Glob`]). Commands are argument vectors with
//! `--` before operands. Parsers are pure and table-tested. Knows nothing about callers or
//! scopes; whether a unit may be changed at all is the caller's decision (`[services] units`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::remote::Runner;
// `systemd::cut` and `systemd::shown` are what the services tools call them.
pub use super::show::{cut, shown};
use super::{CommandSpec, ExecError, Output};

/// Unit type suffixes systemd knows.
pub const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// The longest unit name systemd accepts (`UNIT_NAME_MAX`).
pub const UNIT_NAME_MAX: usize = 255;

/// The root helper's template unit (installed from `systemd/tailopsmcp-helper@.service`).
pub const HELPER_TEMPLATE: &str = "tailopsmcp-helper@";
/// Where the helper writes each request's result (`RuntimeDirectory=tailopsmcp-helper`).
pub const HELPER_RESULT_DIR: &str = "/run/tailopsmcp-helper";

/// A unit name as systemd's grammar allows it (`unit_name_is_valid`), with `.service` appended
/// when it has no known type suffix. Refused: empty, longer than 255 bytes, a leading `-` or
/// `.`, characters outside `A-Z a-z 0-9 : - _ . \ @`, more than one `@`, `@` in a name without
/// an instance-capable prefix, and `/`. Returns the normalized name.
pub fn validate_unit(raw: &str) -> Result<String, String> {
    let shown = shown(raw);
    if raw.is_empty() {
        return Err("unit name is empty".into());
    }
    if raw.starts_with('-') {
        return Err(format!("unit name `{shown}` starts with `-`"));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@')))
    {
        return Err(format!(
            "unit name `{shown}` contains {bad:?}; unit names use only letters, digits and `:-_.\\@`"
        ));
    }
    let has_suffix = raw.rsplit_once('.').is_some_and(|(_, s)| UNIT_SUFFIXES.contains(&s));
    let name = if has_suffix {
        raw.to_string()
    } else {
        format!("{raw}.service")
    };
    if name.len() > UNIT_NAME_MAX {
        return Err(format!("unit name `{shown}` is longer than {UNIT_NAME_MAX} bytes"));
    }
    let (prefix, _suffix) = name.rsplit_once('.').unwrap_or((&name, ""));
    if prefix.is_empty() || prefix.starts_with('.') {
        return Err(format!("unit name `{shown}` has an empty or hidden prefix"));
    }
    match prefix.matches('@').count() {
        0 => {}
        1 => {
            let (template, _instance) = prefix.split_once('@').unwrap_or((prefix, ""));
            if template.is_empty() {
                return Err(format!("unit name `{shown}` has nothing before `@`"));
            }
        }
        _ => return Err(format!("unit name `{shown}` has more than one `@`")),
    }
    if name.contains("..") {
        return Err(format!("unit name `{shown}` contains `..`"));
    }
    Ok(name)
}

/// A glob over unit names: `*` (any run) and `?` (one character); everything else literal.
/// Used for `services_list` patterns and `[services] units`; matched here, never passed to a
/// command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// A pattern of unit-name characters plus `*` and `?`, at most 255 bytes.
    pub fn new(raw: &str) -> Result<Glob, String> {
        if raw.is_empty() || raw.len() > UNIT_NAME_MAX {
            return Err(format!("pattern `{}` must be 1 to {UNIT_NAME_MAX} bytes", shown(raw)));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@' | '*' | '?')))
        {
            return Err(format!(
                "pattern `{}` contains {bad:?}; patterns use unit-name characters and `*` `?`",
                shown(raw)
            ));
        }
        Ok(Glob(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, name: &str) -> bool {
        crate::text::glob_match(self.0.as_bytes(), name.as_bytes())
    }

    /// The pattern as an anchored JavaScript regular expression (for the polkit rule).
    pub fn to_js_regex(&self) -> String {
        let mut re = String::from("^");
        for c in self.0.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                '.' | '\\' => {
                    re.push('\\');
                    re.push(c);
                }
                c => re.push(c),
            }
        }
        re.push('$');
        re
    }
}

/// Whether `unit` matches one of `allowed`.
pub fn unit_allowed(unit: &str, allowed: &[Glob]) -> bool {
    allowed.iter().any(|g| g.matches(unit))
}

/// One row of `services_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct UnitRow {
    pub unit: String,
    /// `loaded`, `not-found`, `masked`, ... (`null` for an installed unit file that is not loaded).
    pub load: Option<String>,
    /// `active`, `inactive`, `failed`, `activating`, ...
    pub active: Option<String>,
    /// The type-specific state: `running`, `exited`, `dead`, ...
    pub sub: Option<String>,
    /// The unit file's state: `enabled`, `disabled`, `static`, `masked`, ...
    pub enabled: Option<String>,
    pub description: Option<String>,
}

#[derive(Deserialize)]
struct ListUnitsJson {
    unit: String,
    load: Option<String>,
    active: Option<String>,
    sub: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct ListUnitFilesJson {
    unit_file: String,
    state: Option<String>,
}

/// `systemctl list-units --all --output=json` and `systemctl list-unit-files --output=json`,
/// joined by unit name: loaded units with their states, plus installed unit files that are not
/// loaded (inactive and disabled). Sorted by name.
pub async fn list_units(r: &dyn Runner) -> Result<Vec<UnitRow>, ExecError> {
    let units = CommandSpec::new(
        "systemctl",
        ["list-units", "--all", "--output=json", "--no-pager", "--plain"],
    );
    let files = CommandSpec::new("systemctl", ["list-unit-files", "--output=json", "--no-pager"]);
    let (units, files) = futures::join!(r.run(&units), r.run(&files));
    let units = stdout_ok(units?, "systemctl list-units")?;
    let files = stdout_ok(files?, "systemctl list-unit-files")?;
    parse_units(&units, &files).map_err(|e| ExecError::Failed(format!("cannot read systemctl's JSON: {e}")))
}

/// The join of list-units and list-unit-files output (pure).
pub fn parse_units(units: &str, files: &str) -> Result<Vec<UnitRow>, serde_json::Error> {
    let units: Vec<ListUnitsJson> = serde_json::from_str(units.trim())?;
    let files: Vec<ListUnitFilesJson> = if files.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(files.trim())?
    };
    let mut rows: BTreeMap<String, UnitRow> = BTreeMap::new();
    for u in units {
        rows.insert(
            u.unit.clone(),
            UnitRow {
                unit: u.unit,
                load: u.load,
                active: u.active,
                sub: u.sub,
                enabled: None,
                description: u.description,
            },
        );
    }
    for f in files {
        // list-unit-files names files by path in some versions; keep the unit name.
        let name = f.unit_file.rsplit('/').next().unwrap_or(&f.unit_file).to_string();
        let row = rows.entry(name.clone()).or_insert(UnitRow {
            unit: name,
            load: None,
            active: None,
            sub: None,
            enabled: None,
            description: None,
        });
        row.enabled = f.state;
    }
    Ok(rows.into_values().collect())
}

/// Properties read by `services_status`, in this order.
pub const STATUS_PROPERTIES: &[&str] = &[
    "Id",
    "Description",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "Result",
    "MainPID",
    "ExecMainStatus",
    "NRestarts",
    "ActiveEnterTimestamp",
    "InactiveEnterTimestamp",
    "MemoryCurrent",
    "CPUUsageNSec",
    "TasksCurrent",
    "FragmentPath",
    "User",
    "Restart",
];

/// A unit's state and its most recent journal lines.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct UnitStatus {
    pub unit: String,
    /// `systemctl show` properties (unset values omitted).
    pub properties: BTreeMap<String, String>,
    /// The newest journal entries of the unit, oldest first.
    pub journal: Vec<JournalLine>,
    /// Why there are no journal lines when journalctl could not read them (e.g. not in the
    /// `systemd-journal` group).
    pub journal_note: Option<String>,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct JournalLine {
    /// RFC 3339 UTC with microseconds.
    pub time: Option<String>,
    /// syslog priority 0 (emerg) .. 7 (debug).
    pub priority: Option<u8>,
    pub identifier: Option<String>,
    pub pid: Option<u32>,
    /// The message, cut to [`MESSAGE_MAX`] characters (then ending in `…`).
    pub message: String,
}

/// The longest journal message kept, in characters.
pub const MESSAGE_MAX: usize = 1000;

/// `systemctl show UNIT -p …` and `journalctl -u UNIT -n LINES -o json`.
pub async fn unit_status(r: &dyn Runner, unit: &str, lines: usize) -> Result<UnitStatus, ExecError> {
    let show = show_command(unit);
    let journal = journal_command(unit, lines);
    let (show, journal) = futures::join!(r.run(&show), r.run(&journal));
    let properties = parse_show(&stdout_ok(show?, "systemctl show")?);
    let journal = journal?;
    let mut note = None;
    let entries = parse_journal(&journal.stdout);
    if entries.is_empty() {
        let err = journal.stderr.trim();
        if journal.status != Some(0) || err.contains("insufficient permissions") || err.contains("No journal files") {
            note = Some(format!(
                "journalctl: {}",
                err.lines().next().unwrap_or("failed without a message")
            ));
        }
    }
    Ok(UnitStatus {
        unit: unit.to_string(),
        properties,
        journal: entries,
        journal_note: note,
    })
}

/// `systemctl show --no-pager -p A,B,… -- UNIT`.
pub fn show_command(unit: &str) -> CommandSpec {
    CommandSpec::new(
        "systemctl",
        vec![
            "show".to_string(),
            "--no-pager".to_string(),
            format!("--property={}", STATUS_PROPERTIES.join(",")),
            "--".to_string(),
            unit.to_string(),
        ],
    )
}

/// `journalctl -u UNIT -n LINES -o json --no-pager -q`.
pub fn journal_command(unit: &str, lines: usize) -> CommandSpec {
    CommandSpec::new(
        "journalctl",
        vec![
            format!("--unit={unit}"),
            format!("--lines={lines}"),
            "--output=json".to_string(),
            "--no-pager".to_string(),
            "--quiet".to_string(),
        ],
    )
}

/// `KEY=VALUE` lines; empty values and `[not set]` dropped.
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(_, v)| !v.is_empty() && *v != "[not set]")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// journalctl `-o json` lines → entries. `MESSAGE` may be a byte array (non-UTF-8 text);
/// unparsable lines are skipped.
pub fn parse_journal(text: &str) -> Vec<JournalLine> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
            let message = match v.get("MESSAGE") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Array(bytes)) => {
                    let b: Vec<u8> = bytes.iter().filter_map(|x| x.as_u64()).map(|x| x as u8).collect();
                    String::from_utf8_lossy(&b).into_owned()
                }
                _ => String::new(),
            };
            let time = field("__REALTIME_TIMESTAMP").and_then(|t| super::journal::realtime(&t));
            JournalLine {
                time,
                priority: field("PRIORITY").and_then(|p| p.parse().ok()),
                identifier: field("SYSLOG_IDENTIFIER"),
                pid: field("_PID").and_then(|p| p.parse().ok()),
                message: cut(&message, MESSAGE_MAX),
            }
        })
        .collect()
}

/// What a control tool asks systemd to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Reload,
    Enable,
    Disable,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Reload => "reload",
            Verb::Enable => "enable",
            Verb::Disable => "disable",
        }
    }

    /// Enable/disable change unit files: they go through the root helper (polkit cannot scope
    /// `manage-unit-files` by unit, and granting it would let the service link any file as a
    /// unit).
    pub fn via_helper(self) -> bool {
        matches!(self, Verb::Enable | Verb::Disable)
    }
}

/// `systemctl --no-ask-password VERB -- UNIT` (start/stop/restart/reload: polkit or root).
pub fn control_command(verb: Verb, unit: &str) -> CommandSpec {
    CommandSpec::new("systemctl", ["--no-ask-password", verb.as_str(), "--", unit])
}

/// `systemctl is-active` / `is-enabled` of a unit, for the after-state of a change.
pub async fn states(r: &dyn Runner, unit: &str) -> (Option<String>, Option<String>) {
    let active = CommandSpec::new("systemctl", ["is-active", "--", unit]);
    let enabled = CommandSpec::new("systemctl", ["is-enabled", "--", unit]);
    let (a, e) = futures::join!(r.run(&active), r.run(&enabled));
    let word = |o: Result<Output, ExecError>| {
        o.ok()
            .map(|o| o.stdout.trim().to_string())
            .filter(|s| !s.is_empty() && !s.contains(' '))
    };
    (word(a), word(e))
}

/// Runs a control command; a non-zero exit becomes an error carrying systemctl's message.
pub async fn control(r: &dyn Runner, verb: Verb, unit: &str) -> Result<Output, ExecError> {
    let cmd = control_command(verb, unit);
    let out = r.run(&cmd).await?;
    if out.timed_out {
        return Err(ExecError::Failed(format!(
            "`systemctl {} {unit}` did not finish within the target's timeout (the job may still complete)",
            verb.as_str()
        )));
    }
    if out.status != Some(0) {
        return Err(ExecError::Failed(explain_systemctl(
            &out,
            &format!("systemctl {} {unit}", verb.as_str()),
        )));
    }
    Ok(out)
}

/// systemctl's own message, with a hint when polkit said no.
pub fn explain_systemctl(out: &Output, what: &str) -> String {
    let msg = out.stderr.trim();
    let first = msg.lines().next().unwrap_or("").trim();
    let status = out
        .status
        .map(|s| format!("exit {s}"))
        .unwrap_or_else(|| "killed".into());
    if msg.contains("Access denied") || msg.contains("Interactive authentication required") {
        format!(
            "`{what}` was refused by the host ({first}); the service user needs the polkit rule \
             (systemd/50-tailopsmcp.rules, generated by `tailopsmcp polkit-rules`) listing this unit, or root"
        )
    } else if first.is_empty() {
        format!("`{what}` failed ({status})")
    } else {
        format!("`{what}` failed ({status}): {first}")
    }
}

/// A request to the root helper: one operation with validated operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperRequest {
    /// 32 lowercase hex digits, unique per request: names the instance and the result file.
    pub id: String,
    pub op: HelperOp,
}

/// What the root helper may do. Nothing else can be expressed: operands are unit or Debian
/// package names, validated on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperOp {
    /// `systemctl enable UNIT` (unit on the host's `[services] units` list).
    Enable(String),
    /// `systemctl disable UNIT`.
    Disable(String),
    /// `apt-get update` then `apt-get upgrade`.
    AptUpgrade,
    /// `apt-get update` then `apt-get install PACKAGES`.
    AptInstall(Vec<String>),
}

/// The most packages one install request may name. Long names with many `-` (4 bytes each,
/// escaped) can still pass [`UNIT_NAME_MAX`] with fewer: the packages tool checks the unit.
pub const MAX_INSTALL_PACKAGES: usize = 8;

impl HelperRequest {
    pub fn new(op: HelperOp) -> HelperRequest {
        HelperRequest {
            id: uuid::Uuid::new_v4().simple().to_string(),
            op,
        }
    }

    /// The decoded instance string: `ID:OP[:OPERAND…]`.
    pub fn instance(&self) -> String {
        let mut words = vec![self.id.clone()];
        match &self.op {
            HelperOp::Enable(u) => words.extend(["enable".to_string(), u.clone()]),
            HelperOp::Disable(u) => words.extend(["disable".to_string(), u.clone()]),
            HelperOp::AptUpgrade => words.push("apt-upgrade".to_string()),
            HelperOp::AptInstall(p) => {
                words.push("apt-install".to_string());
                words.extend(p.iter().cloned());
            }
        }
        words.join(":")
    }

    /// The helper unit for this request: `tailopsmcp-helper@ESCAPED.service`, escaped the way
    /// `systemd-escape` does (so `%I` in the unit gives back [`HelperRequest::instance`]).
    pub fn unit(&self) -> String {
        format!("{HELPER_TEMPLATE}{}.service", systemd_escape(&self.instance()))
    }

    /// `systemctl --no-ask-password start -- UNIT`: runs the request and waits for it.
    pub fn start_command(&self) -> CommandSpec {
        CommandSpec::new("systemctl", ["--no-ask-password", "start", "--", &self.unit()])
    }

    /// Where the helper writes this request's result.
    pub fn result_path(&self) -> String {
        format!("{HELPER_RESULT_DIR}/{}.json", self.id)
    }

    /// Parse the decoded instance (`%I`) back, validating every part. The helper's side.
    pub fn parse(instance: &str) -> Result<HelperRequest, String> {
        let mut words = instance.split(':');
        let id = words.next().unwrap_or("");
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err("request id is not 32 lowercase hex digits".into());
        }
        let op = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        // Unit names may contain `:`; the enable/disable operand is everything after the op.
        let joined = rest.join(":");
        let op = match op {
            "enable" | "disable" => {
                let unit = validate_unit(&joined)?;
                if unit != joined {
                    return Err(format!("unit `{}` must be given with its suffix", shown(&joined)));
                }
                if op == "enable" {
                    HelperOp::Enable(unit)
                } else {
                    HelperOp::Disable(unit)
                }
            }
            "apt-upgrade" if rest.is_empty() => HelperOp::AptUpgrade,
            "apt-install" => {
                if rest.is_empty() || rest.len() > MAX_INSTALL_PACKAGES {
                    return Err(format!("apt-install takes 1 to {MAX_INSTALL_PACKAGES} packages"));
                }
                for p in &rest {
                    super::packages::validate_package(p)?;
                }
                HelperOp::AptInstall(rest.iter().map(|s| s.to_string()).collect())
            }
            other => return Err(format!("unknown helper operation `{}`", shown(other))),
        };
        Ok(HelperRequest { id: id.to_string(), op })
    }
}

/// `systemd-escape STRING` (non-path mode): `/` → `-`; bytes other than ASCII letters, digits,
/// `:`, `_` and `.` (and a leading `.`) → `\xNN`.
pub fn systemd_escape(s: &str) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The polkit rule (`/etc/polkit-1/rules.d/50-tailopsmcp.rules`) for `[services] units`: the
/// user `tailopsmcp` may start/stop/restart/reload (and reload-or-restart, try-restart) exactly
/// the units matching those globs, and start instances of the root helper template. Nothing
/// else: no unit-file changes, no other verbs, no other users. Output of `tailopsmcp polkit-rules`.
pub fn polkit_rules(units: &[Glob]) -> String {
    let mut regexes: Vec<String> = units.iter().map(|g| format!("        /{}/", g.to_js_regex())).collect();
    if regexes.is_empty() {
        regexes.push("        // none: `[services] units` is empty".to_string());
    }
    POLKIT_TEMPLATE.replace("@UNITS@", &regexes.join(",\n"))
}

const POLKIT_TEMPLATE: &str = r#"// tailopsmcp: let the unprivileged service user manage the units its config allows.
// Generated by `tailopsmcp polkit-rules` from `[services] units`; regenerate after changing it:
//   tailopsmcp polkit-rules > /etc/polkit-1/rules.d/50-tailopsmcp.rules
polkit.addRule(function(action, subject) {
    if (action.id != "org.freedesktop.systemd1.manage-units" || subject.user != "tailopsmcp") {
        return polkit.Result.NOT_HANDLED;
    }
    var unit = action.lookup("unit");
    var verb = action.lookup("verb");
    // The root helper (enable/disable, apt) validates its request and checks the config itself.
    // (Backslash only as a systemd-escape `\xNN`; a class holding `\\` misbehaves in duktape.)
    if (verb == "start" && /^tailopsmcp-helper@([A-Za-z0-9:_.]|\\x[0-9a-f]{2})+\.service$/.test(unit)) {
        return polkit.Result.YES;
    }
    // Nothing else on a helper, whatever the globs below match: stopping one mid-apt breaks dpkg.
    if (/^tailopsmcp-helper@/.test(unit)) {
        return polkit.Result.NOT_HANDLED;
    }
    var verbs = ["start", "stop", "restart", "reload", "reload-or-restart", "try-restart"];
    var units = [
@UNITS@
    ];
    if (unit && verbs.indexOf(verb) >= 0) {
        for (var i = 0; i < units.length; i++) {
            if (units[i].test(unit)) {
                return polkit.Result.YES;
            }
        }
    }
    return polkit.Result.NOT_HANDLED;
});
"#;

/// What the helper wrote for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HelperResult {
    /// The decoded request (`ID:OP[:OPERAND…]`).
    pub request: String,
    pub ok: bool,
    /// One line saying what happened (or why it failed).
    pub summary: String,
    /// The commands the helper ran, in order.
    pub commands: Vec<String>,
    /// Packages whose installed version changed (apt operations).
    pub changed: Vec<PackageChange>,
    /// The end of the commands' combined output (at most 4 KiB).
    pub output_tail: String,
}

/// An installed package version before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PackageChange {
    pub package: String,
    /// `null` when it was not installed before.
    pub from: Option<String>,
    /// `null` when it was removed.
    pub to: Option<String>,
}

/// Start the helper for `req` and read its result. The result file is read even when the start
/// failed (the helper exits non-zero on failure but still writes it).
pub async fn run_helper(r: &dyn Runner, req: &HelperRequest) -> Result<HelperResult, ExecError> {
    let start = r.run(&req.start_command()).await?;
    if start.timed_out {
        return Err(ExecError::Failed(format!(
            "`systemctl start {}` did not finish within the timeout; the helper keeps running on the host \
             and will write {}",
            req.unit(),
            req.result_path()
        )));
    }
    let read = r.run(&CommandSpec::new("cat", ["--", &req.result_path()])).await?;
    if read.status == Some(0)
        && let Ok(result) = serde_json::from_str::<HelperResult>(read.stdout.trim())
    {
        return Ok(result);
    }
    if start.status == Some(0) {
        return Err(ExecError::Failed(format!(
            "the helper ran but its result {} is not readable: {}",
            req.result_path(),
            read.stderr.lines().next().unwrap_or("").trim()
        )));
    }
    let msg = start.stderr.trim();
    if msg.contains("not found") || msg.contains("not loaded") {
        return Err(ExecError::Failed(format!(
            "the privileged helper is not installed on this host ({}); install \
             systemd/tailopsmcp-helper@.service and the polkit rule (see ARCHITECTURE.md, \"Privilege\")",
            msg.lines().next().unwrap_or("").trim()
        )));
    }
    Err(ExecError::Failed(explain_systemctl(
        &start,
        &format!("systemctl start {}", req.unit()),
    )))
}

fn stdout_ok(out: Output, what: &str) -> Result<String, ExecError> {
    if out.timed_out {
        return Err(ExecError::Failed(format!("`{what}` timed out on the target")));
    }
    match out.status {
        Some(0) => Ok(out.stdout),
        Some(127) => Err(ExecError::Failed(format!(
            "`{what}` is not available on the target (no systemd?)"
        ))),
        _ => Err(ExecError::Failed(explain_systemctl(&out, what))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<&str, &str>) {
        match (validate_unit(raw), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw}"),
            (Err(got), Err(needle)) => assert!(got.contains(needle), "{raw}: `{got}` lacks `{needle}`"),
            (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn unit_names() {
        check("nginx", Ok("nginx.service"));
        check("nginx.service", Ok("nginx.service"));
        check("getty@tty1.service", Ok("getty@tty1.service"));
        check("getty@tty1", Ok("getty@tty1.service"));
        check("dev-disk-by\\x2duuid-1.device", Ok("dev-disk-by\\x2duuid-1.device"));
        check("systemd-journald.socket", Ok("systemd-journald.socket"));
        check("a.b", Ok("a.b.service"));
        check("", Err("empty"));
        check("-H host", Err("starts with `-`"));
        check("--now", Err("starts with `-`"));
        check("../x", Err("contains '/'"));
        check("a/b.service", Err("contains '/'"));
        check("a;b", Err("contains ';'"));
        check("a b", Err("contains ' '"));
        check("$(id)", Err("contains '$'"));
        check("a\nb", Err("contains '\\n'"));
        check("..service", Err("hidden prefix"));
        check(".service", Err("hidden prefix"));
        check("@x.service", Err("nothing before `@`"));
        check("a@b@c.service", Err("more than one `@`"));
        check("a..b.service", Err("`..`"));
        check(&"a".repeat(250), Err("longer than 255"));
        check(&"a".repeat(247), Ok(&format!("{}.service", "a".repeat(247))));
    }

    #[test]
    fn globs() {
        let g = |p: &str| Glob::new(p).unwrap();
        assert!(g("*.service").matches("nginx.service"));
        assert!(!g("*.service").matches("nginx.socket"));
        assert!(g("app-*.service").matches("app-web.service"));
        assert!(!g("app-*.service").matches("xapp-web.service"));
        assert!(g("ngin?.service").matches("nginx.service"));
        assert!(g("*").matches(""));
        assert!(g("a*b*c").matches("aXXbYYc"));
        assert!(!g("a*b*c").matches("aXXbYY"));
        assert!(Glob::new("a;b").unwrap_err().contains("';'"));
        assert!(Glob::new("").is_err());
        assert_eq!(g("app-*.service").to_js_regex(), "^app-.*\\.service$");
        assert!(unit_allowed("sleepy.service", &[g("x.service"), g("sleep*")]));
        assert!(!unit_allowed("ssh.service", &[g("sleep*")]));
    }

    #[test]
    fn list_units_join() {
        let units = r#"[{"unit":"b.service","load":"loaded","active":"active","sub":"running","description":"B"},
                        {"unit":"a.socket","load":"loaded","active":"inactive","sub":"dead","description":"A"}]"#;
        let files = r#"[{"unit_file":"b.service","state":"enabled","vendor_preset":"enabled"},
                        {"unit_file":"/etc/systemd/system/c.service","state":"disabled","vendor_preset":"enabled"}]"#;
        let rows = parse_units(units, files).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.unit.as_str()).collect();
        assert_eq!(names, ["a.socket", "b.service", "c.service"]);
        assert_eq!(rows[1].enabled.as_deref(), Some("enabled"));
        assert_eq!(rows[1].sub.as_deref(), Some("running"));
        assert_eq!(rows[2].load, None);
        assert_eq!(rows[2].enabled.as_deref(), Some("disabled"));
        assert!(parse_units("not json", "").is_err());
    }

    #[test]
    fn show_and_journal() {
        let p = parse_show("Id=x.service\nMainPID=0\nMemoryCurrent=[not set]\nFragmentPath=\nA=b=c\n");
        assert_eq!(p.get("Id").map(String::as_str), Some("x.service"));
        assert_eq!(p.get("A").map(String::as_str), Some("b=c"));
        assert!(!p.contains_key("MemoryCurrent") && !p.contains_key("FragmentPath"));
        let j = parse_journal(
            "{\"__REALTIME_TIMESTAMP\":\"1700000000123456\",\"PRIORITY\":\"6\",\"SYSLOG_IDENTIFIER\":\"x\",\"_PID\":\"42\",\"MESSAGE\":\"hello\"}\n\
             garbage\n{\"MESSAGE\":[104,105,255]}\n",
        );
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].time.as_deref(), Some("2023-11-14T22:13:20.123456Z"));
        assert_eq!((j[0].priority, j[0].pid), (Some(6), Some(42)));
        assert_eq!(j[1].message, "hi\u{fffd}");
        let long = format!("{{\"MESSAGE\":\"{}\"}}", "x".repeat(5000));
        assert_eq!(parse_journal(&long)[0].message.chars().count(), MESSAGE_MAX);
    }

    #[test]
    fn the_shipped_polkit_rule_is_the_generated_default() {
        let shipped = include_str!("../../systemd/50-tailopsmcp.rules");
        assert_eq!(
            shipped,
            polkit_rules(&[]),
            "regenerate: tailopsmcp polkit-rules > systemd/50-tailopsmcp.rules"
        );
        let two = polkit_rules(&[Glob::new("nginx.service").unwrap(), Glob::new("app-*").unwrap()]);
        assert!(
            two.contains("        /^nginx\\.service$/,\n        /^app-.*$/\n    ];"),
            "{two}"
        );
    }

    #[test]
    fn helper_requests_round_trip_and_refuse_smuggling() {
        for op in [
            HelperOp::Enable("sleepy-ng.service".into()),
            HelperOp::Disable("getty@tty1.service".into()),
            HelperOp::AptUpgrade,
            HelperOp::AptInstall(vec!["libstdc++6".into(), "hello".into()]),
        ] {
            let req = HelperRequest::new(op);
            let unit = req.unit();
            assert!(
                unit.starts_with("tailopsmcp-helper@") && unit.ends_with(".service"),
                "{unit}"
            );
            assert!(validate_unit(&unit).is_ok(), "{unit}");
            let instance = unit.split_once('@').unwrap().1;
            assert!(!instance.contains('-'), "{instance}");
            assert_eq!(HelperRequest::parse(&req.instance()).unwrap(), req);
        }
        let id = "0123456789abcdef0123456789abcdef";
        for bad in [
            format!("{id}:apt-install:--allow-unauthenticated"),
            format!("{id}:apt-install:foo bar"),
            format!("{id}:apt-install"),
            format!("{id}:enable:../x.service"),
            format!("{id}:enable:-H"),
            format!("{id}:enable:x"),
            format!("{id}:apt-upgrade:extra"),
            format!("{id}:shell:id"),
            "short:apt-upgrade".to_string(),
        ] {
            assert!(HelperRequest::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(systemd_escape("a-b+c/d.e:f"), "a\\x2db\\x2bc-d.e:f");
        assert_eq!(systemd_escape(".x"), "\\x2ex");
    }
}
