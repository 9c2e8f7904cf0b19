//! The `services` toolset: systemd units on `local` and `ssh` targets — list, status with recent
//! journal lines, and the changing verbs (start/stop/restart/reload, enable/disable).
//!
//! Tools validate unit names (`exec::systemd::validate_unit`) and check the changing verbs
//! against `[services] units` before anything runs; they reach the host only through
//! `exec::systemd` over an `exec::remote::Runner`. start/stop/restart/reload run `systemctl`
//! as the server's user (allowed by the polkit rule, or root); enable/disable go through the
//! root helper unit (see ARCHITECTURE.md, "Privilege"). Never checks scopes or writes audit rows.

use std::fmt::Write as _;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, Step, StepKind, Tool, ToolContext, ToolError, Truncated,
    bounded, tool, undeclared_kind,
};
use crate::exec::remote::{LocalRunner, Runner};
use crate::exec::systemd::{self, Glob, HelperOp, HelperRequest, HelperResult, UnitRow, UnitStatus, Verb};
use crate::exec::{CommandSpec, Limits};
use crate::policy::{Area, Level, Scope};

pub const LIST_LIMIT_DEFAULT: i64 = 100;
pub const LIST_LIMIT_MAX: i64 = 1000;
pub const STATUS_LINES_DEFAULT: i64 = 20;
pub const STATUS_LINES_MAX: i64 = 200;

/// The shared part of every changing tool's description, after its own sentence.
macro_rules! control_note {
    () => {
        " `unit` gets `.service` when it has no type suffix and must be on the server's \
         `[services] units` list (others are refused before anything runs). `dry_run: true` returns the plan (the \
         exact commands) without running them; the plan is returned either way."
    };
}

/// systemctl on this host or over SSH.
const KINDS: &[Kind] = &[Kind::Local, Kind::Ssh];

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "services_list",
                title: "List systemd units",
                description: "systemd units of the host, sorted by name: unit, load state, active state, sub-state, \
                    unit-file state (`enabled`, `disabled`, `static`, ...) and description. Loaded units and \
                    installed unit files that are not loaded are both listed. `pattern` is a glob over unit names \
                    (default `*.service`); `state` keeps units whose active, sub, load or unit-file state equals it \
                    (e.g. `failed`, `running`, `enabled`); `limit` caps the rows (1-1000, default 100) and \
                    `truncated` says how many matching units were left out.",
                requires: Requirement::Scope(Scope::new(Area::Services, Level::Read)),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            list,
        ),
        tool(
            Declaration {
                name: "services_status",
                title: "systemd unit status",
                description: "State of one unit (`systemctl show`: Description, LoadState, ActiveState, SubState, \
                    UnitFileState, Result, MainPID, ExecMainStatus, NRestarts, timestamps, MemoryCurrent, \
                    CPUUsageNSec, TasksCurrent, FragmentPath, User, Restart; unset ones omitted) and its newest \
                    journal lines (`lines`, 0-200, default 20; each message cut at 1000 characters), oldest first \
                    with time, priority (0 emerg .. 7 debug), identifier and pid. `unit` gets `.service` when it \
                    has no type suffix.",
                requires: Requirement::Scope(Scope::new(Area::Services, Level::Read)),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            status,
        ),
        tool(
            Declaration {
                name: "services_start",
                title: "Start a unit",
                description: concat!(
                    "Start a systemd unit (`systemctl start`) and report `is-active`/`is-enabled` afterwards.",
                    control_note!()
                ),
                requires: Requirement::Scope(Scope::new(Area::Services, Level::Control)),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, args| control(ctx, args, Verb::Start),
        ),
        tool(
            Declaration {
                name: "services_stop",
                title: "Stop a unit",
                description: concat!(
                    "Stop a systemd unit (`systemctl stop`) and report `is-active`/`is-enabled` afterwards.",
                    control_note!()
                ),
                requires: Requirement::Scope(Scope::new(Area::Services, Level::Control)),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, args| control(ctx, args, Verb::Stop),
        ),
        tool(
            Declaration {
                name: "services_restart",
                title: "Restart a unit",
                description: concat!(
                    "Restart a systemd unit (`systemctl restart`; starts it when stopped) and report \
                     `is-active`/`is-enabled` afterwards.",
                    control_note!()
                ),
                requires: Requirement::Scope(Scope::new(Area::Services, Level::Control)),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: false,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, args| control(ctx, args, Verb::Restart),
        ),
        tool(
            Declaration {
                name: "services_reload",
                title: "Reload a unit",
                description: concat!(
                    "Ask a running unit to reload its configuration (`systemctl reload`; fails for units \
                     without ExecReload) and report `is-active`/`is-enabled` afterwards.",
                    control_note!()
                ),
                requires: Requirement::Scope(Scope::new(Area::Services, Level::Control)),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: false,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, args| control(ctx, args, Verb::Reload),
        ),
        tool(
            Declaration {
                name: "services_enable",
                title: "Enable a unit",
                description: concat!(
                    "Enable a systemd unit at boot (`systemctl enable`, run by the root helper unit \
                     tailopsmcp-helper@.service; does not start it) and report `is-enabled` afterwards.",
                    control_note!()
                ),
                requires: Requirement::Scope(Scope::new(Area::Services, Level::Admin)),
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, args| control(ctx, args, Verb::Enable),
        ),
        tool(
            Declaration {
                name: "services_disable",
                title: "Disable a unit",
                description: concat!(
                    "Disable a systemd unit at boot (`systemctl disable`, run by the root helper unit \
                     tailopsmcp-helper@.service; does not stop it) and report `is-enabled` afterwards.",
                    control_note!()
                ),
                requires: Requirement::Scope(Scope::new(Area::Services, Level::Admin)),
                risk: Risk::High,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: true,
                    open_world: false,
                },
                kinds: KINDS,
            },
            |ctx, args| control(ctx, args, Verb::Disable),
        ),
    ]
}

/// Arguments of `services_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only units in this state: matched against the active state (`active`, `failed`, ...),
    /// the sub-state (`running`, `exited`, `dead`, ...), the load state (`not-found`, `masked`)
    /// and the unit-file state (`enabled`, `disabled`, `static`, ...).
    #[serde(default)]
    pub state: Option<String>,
    /// Glob over unit names (`*` and `?`), e.g. `nginx*` or `*.timer`. Default `*.service`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// Rows to return, 1 to 1000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

/// `structuredContent` of `services_list`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ListOutput {
    /// Units matching the filters.
    pub matched: usize,
    /// Units returned (at most `limit`).
    pub shown: usize,
    pub units: Vec<UnitRow>,
    pub truncated: Option<Truncated>,
}

/// Arguments of `services_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    /// Unit name; `.service` is added when there is no type suffix.
    pub unit: String,
    /// Newest journal lines to include, 0 to 200 (default 20).
    #[serde(default)]
    #[schemars(range(min = 0, max = 200))]
    pub lines: Option<i64>,
}

/// `structuredContent` of `services_status`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StatusOutput {
    #[serde(flatten)]
    pub status: UnitStatus,
    /// Set when the journal returned `lines` entries (older ones were not read).
    pub truncated: Option<Truncated>,
}

/// Arguments of the changing tools.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlArgs {
    /// Unit name; `.service` is added when there is no type suffix. It must be on the server's
    /// `[services] units` list.
    pub unit: String,
    /// Return the plan without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// `structuredContent` of the changing tools.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ControlOutput {
    pub unit: String,
    pub verb: Verb,
    pub dry_run: bool,
    /// What runs (or, with `dry_run`, would run), in order.
    pub plan: Vec<Step>,
    /// `systemctl is-active` after the change (`null` for a dry run).
    pub active: Option<String>,
    /// `systemctl is-enabled` after the change (`null` for a dry run).
    pub enabled: Option<String>,
    /// What the root helper reported (enable/disable only).
    pub helper: Option<HelperResult>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `services_list`.
async fn list(ctx: ToolContext, args: ListArgs) -> Result<Output<ListOutput>, ToolError> {
    let limit = bounded("limit", args.limit, LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)?;
    let pattern = Glob::new(args.pattern.as_deref().unwrap_or("*.service")).map_err(ToolError::InvalidArgs)?;
    let state = match args.state.as_deref() {
        None => None,
        Some(s) if !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_lowercase() || c == '-') => {
            Some(s.to_string())
        }
        Some(s) => {
            return Err(ToolError::InvalidArgs(format!(
                "state `{}` is not a unit state (lowercase letters and `-`, e.g. `failed`, `running`, `enabled`)",
                systemd::shown(s)
            )));
        }
    };
    let host = Host::of(&ctx, None)?;
    let all = systemd::list_units(host.runner()).await?;
    let mut rows: Vec<UnitRow> = all
        .into_iter()
        .filter(|r| pattern.matches(&r.unit))
        .filter(|r| {
            state.as_deref().is_none_or(|s| {
                [&r.active, &r.sub, &r.load, &r.enabled]
                    .iter()
                    .any(|v| v.as_deref() == Some(s))
            })
        })
        .collect();
    let matched = rows.len();
    rows.truncate(limit);
    let truncated = (matched > rows.len()).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some((matched - rows.len()) as u64),
    });
    let out = ListOutput {
        matched,
        shown: rows.len(),
        units: rows,
        truncated,
    };
    let text = render_list(&out);
    Ok(Output::new(out, text))
}

/// `services_status`.
async fn status(ctx: ToolContext, args: StatusArgs) -> Result<Output<StatusOutput>, ToolError> {
    let lines = bounded("lines", args.lines, STATUS_LINES_DEFAULT, 0, STATUS_LINES_MAX)?;
    let unit = systemd::validate_unit(&args.unit).map_err(ToolError::InvalidArgs)?;
    let host = Host::of(&ctx, None)?;
    let status = systemd::unit_status(host.runner(), &unit, lines).await?;
    let truncated = (lines > 0 && status.journal.len() >= lines).then(|| Truncated {
        cap: format!("lines={lines}"),
        omitted: None,
    });
    let out = StatusOutput { status, truncated };
    let text = render_status(&out.status);
    Ok(Output::new(out, text))
}

/// The changing tools (`services_start` … `services_disable`): `verb` on one allowed unit.
async fn control(ctx: ToolContext, args: ControlArgs, verb: Verb) -> Result<Output<ControlOutput>, ToolError> {
    let unit = systemd::validate_unit(&args.unit).map_err(ToolError::InvalidArgs)?;
    let allowed = &ctx.config.services.units;
    if !systemd::unit_allowed(&unit, allowed) {
        let list: Vec<&str> = allowed.iter().map(Glob::as_str).collect();
        return Err(ToolError::Failed(format!(
            "{unit} is not on this server's `[services] units` list ({}); services_{} refused",
            if list.is_empty() {
                "the list is empty".to_string()
            } else {
                list.join(", ")
            },
            verb.as_str()
        )));
    }
    let helper_timeout = ctx.config.services.helper_timeout;
    let host = Host::of(&ctx, verb.via_helper().then_some(helper_timeout))?;
    let target = ctx.target.id.clone();
    let request = verb.via_helper().then(|| {
        HelperRequest::new(if verb == Verb::Enable {
            HelperOp::Enable(unit.clone())
        } else {
            HelperOp::Disable(unit.clone())
        })
    });
    let plan = match &request {
        None => vec![command_step(&target, &systemd::control_command(verb, &unit))],
        Some(req) => helper_plan(&target, req, &format!("systemctl {} -- {unit}", verb.as_str())),
    };
    let mut out = ControlOutput {
        unit: unit.clone(),
        verb,
        dry_run: args.dry_run,
        plan,
        active: None,
        enabled: None,
        helper: None,
    };
    if !args.dry_run {
        match &request {
            None => {
                systemd::control(host.runner(), verb, &unit).await?;
            }
            Some(req) => {
                let result = systemd::run_helper(host.runner(), req).await?;
                if !result.ok {
                    return Err(ToolError::Failed(format!(
                        "{} (helper output: {})",
                        result.summary,
                        systemd::cut(result.output_tail.trim(), 500)
                    )));
                }
                out.helper = Some(result);
            }
        }
        let (active, enabled) = systemd::states(host.runner(), &unit).await;
        out.active = active;
        out.enabled = enabled;
    }
    let text = render_control(&out);
    Ok(Output::new(out, text))
}

/// The steps of a root-helper request: start the instance (the helper runs `inner` as root),
/// then read its result.
pub fn helper_plan(target: &str, req: &HelperRequest, inner: &str) -> Vec<Step> {
    vec![
        command_step(target, &req.start_command()),
        Step {
            kind: StepKind::Command,
            target: target.to_string(),
            detail: format!("(as root, in {}) {inner}", req.unit()),
        },
        command_step(target, &CommandSpec::new("cat", ["--", &req.result_path()])),
    ]
}

pub fn command_step(target: &str, cmd: &CommandSpec) -> Step {
    Step {
        kind: StepKind::Command,
        target: target.to_string(),
        detail: shell_words(cmd),
    }
}

/// A command as a shell would need it typed: words with special characters single-quoted.
pub fn shell_words(cmd: &CommandSpec) -> String {
    std::iter::once(&cmd.program)
        .chain(cmd.args.iter())
        .map(|w| {
            if !w.is_empty()
                && w.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '@' | ',' | '+')
                })
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where these tools run commands: this host (as the server's user) or an SSH host.
pub enum Host<'a> {
    Local(LocalRunner),
    Remote(&'a dyn Runner),
}

impl<'a> Host<'a> {
    /// The runner for `ctx.target`; `long` replaces the local timeout (root-helper runs).
    pub fn of(ctx: &'a ToolContext, long: Option<std::time::Duration>) -> Result<Host<'a>, ToolError> {
        match &ctx.target.executor {
            crate::targets::Executor::Local => {
                let mut limits: Limits = ctx.target.limits;
                if let Some(t) = long {
                    limits.timeout = limits.timeout.max(t);
                }
                Ok(Host::Local(LocalRunner(limits)))
            }
            crate::targets::Executor::Ssh(ssh) => Ok(Host::Remote(ssh)),
            _ => Err(undeclared_kind(ctx)),
        }
    }

    pub fn runner(&self) -> &dyn Runner {
        match self {
            Host::Local(r) => r,
            Host::Remote(r) => *r,
        }
    }
}

fn render_list(out: &ListOutput) -> String {
    let mut t = String::new();
    let w = out
        .units
        .iter()
        .map(|u| u.unit.chars().count())
        .max()
        .unwrap_or(4)
        .min(60);
    let _ = writeln!(t, "{} of {} matching units", out.shown, out.matched);
    let _ = write!(
        t,
        "{:w$}  {:9} {:10} {:10} {:9} DESCRIPTION",
        "UNIT", "LOAD", "ACTIVE", "SUB", "ENABLED"
    );
    for u in &out.units {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = write!(
            t,
            "\n{:w$}  {:9} {:10} {:10} {:9} {}",
            u.unit,
            o(&u.load),
            o(&u.active),
            o(&u.sub),
            o(&u.enabled),
            systemd::cut(&o(&u.description), 80)
        );
    }
    t
}

fn render_status(s: &UnitStatus) -> String {
    let mut t = String::new();
    let p = |k: &str| s.properties.get(k).map(String::as_str).unwrap_or("-");
    let _ = writeln!(t, "{} - {}", s.unit, p("Description"));
    let _ = writeln!(
        t,
        "  {} / {} ({}), unit file {}, main pid {}, restarts {}",
        p("ActiveState"),
        p("SubState"),
        p("LoadState"),
        p("UnitFileState"),
        p("MainPID"),
        p("NRestarts")
    );
    if let Some(since) = s.properties.get("ActiveEnterTimestamp") {
        let _ = writeln!(t, "  active since {since}");
    }
    if let Some(note) = &s.journal_note {
        let _ = writeln!(t, "  journal: {note}");
    }
    for l in &s.journal {
        let _ = writeln!(
            t,
            "  {} {}[{}]: {}",
            l.time.as_deref().unwrap_or("?"),
            l.identifier.as_deref().unwrap_or("?"),
            l.pid.map(|p| p.to_string()).unwrap_or_default(),
            l.message
        );
    }
    t.trim_end().to_string()
}

fn render_control(out: &ControlOutput) -> String {
    let mut t = String::new();
    if out.dry_run {
        let _ = writeln!(t, "dry run: would {} {}", out.verb.as_str(), out.unit);
    } else {
        let _ = writeln!(
            t,
            "{} {}: active={} enabled={}",
            out.verb.as_str(),
            out.unit,
            out.active.as_deref().unwrap_or("?"),
            out.enabled.as_deref().unwrap_or("?")
        );
    }
    for s in &out.plan {
        let _ = writeln!(t, "  $ {}", s.detail);
    }
    t.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolOutput;
    use crate::tools::testing::{self, invalid};
    use serde_json::{Value, json};

    async fn call(name: &str, config: &str, args: Value) -> Result<ToolOutput, ToolError> {
        let config =
            crate::config::Config::from_toml(config, std::path::Path::new("t.toml"), &Default::default()).unwrap();
        testing::call_with(config, tools(), name, args).await
    }

    #[test]
    fn specs() {
        let names: Vec<&str> = tools().iter().map(|t| t.spec().name).collect();
        assert_eq!(
            names,
            [
                "services_list",
                "services_status",
                "services_start",
                "services_stop",
                "services_restart",
                "services_reload",
                "services_enable",
                "services_disable"
            ]
        );
        for t in tools() {
            let s = t.spec();
            let Requirement::Scope(scope) = s.requires else {
                panic!()
            };
            assert_eq!(scope.area, Area::Services);
            let want = match s.name {
                "services_list" | "services_status" => Level::Read,
                "services_enable" | "services_disable" => Level::Admin,
                _ => Level::Control,
            };
            assert_eq!(scope.level, want, "{}", s.name);
            if s.mutates() {
                assert!(s.input_schema["properties"].get("dry_run").is_some());
                assert!(s.output_schema["properties"].get("plan").is_some());
                assert!(s.description.contains("[services] units"));
            }
        }
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_anything_runs() {
        let cfg = "[services]\nunits = [\"sleepy.service\"]\n";
        for bad in ["../x", "-H host", "a;b", "$(id)", "a b", ""] {
            invalid(call("services_status", cfg, json!({"unit": bad})).await, "unit name");
            invalid(call("services_restart", cfg, json!({"unit": bad})).await, "unit name");
        }
        invalid(
            call("services_status", cfg, json!({"unit": "x", "lines": 201})).await,
            "between 0 and 200",
        );
        invalid(
            call("services_list", cfg, json!({"limit": 0})).await,
            "between 1 and 1000",
        );
        invalid(
            call("services_list", cfg, json!({"limit": 1_000_000})).await,
            "between 1 and 1000",
        );
        invalid(call("services_list", cfg, json!({"pattern": "a;b"})).await, "';'");
        invalid(
            call("services_list", cfg, json!({"state": "Failed;"})).await,
            "not a unit state",
        );
        invalid(
            call("services_start", cfg, json!({"unit": "x", "now": true})).await,
            "unknown field",
        );
        match call("services_stop", cfg, json!({"unit": "ssh", "dry_run": true})).await {
            Err(ToolError::Failed(m)) => assert!(m.contains("ssh.service is not on"), "{m}"),
            other => panic!("{:?}", other.map(|o| o.text)),
        }
        match call("services_start", "", json!({"unit": "sleepy"})).await {
            Err(ToolError::Failed(m)) => assert!(m.contains("the list is empty"), "{m}"),
            other => panic!("{:?}", other.map(|o| o.text)),
        }
    }

    #[tokio::test]
    async fn dry_run_returns_the_exact_plan() {
        let cfg = "[services]\nunits = [\"sleepy*\"]\n";
        let out = call("services_restart", cfg, json!({"unit": "sleepy", "dry_run": true}))
            .await
            .unwrap();
        let v = &out.structured;
        assert_eq!(v["dry_run"], true);
        assert_eq!(
            v["plan"][0]["detail"],
            "systemctl --no-ask-password restart -- sleepy.service"
        );
        assert_eq!(v["active"], Value::Null);
        let out = call("services_enable", cfg, json!({"unit": "sleepy-ng", "dry_run": true}))
            .await
            .unwrap();
        let plan = out.structured["plan"].as_array().unwrap().clone();
        assert_eq!(plan.len(), 3);
        let start = plan[0]["detail"].as_str().unwrap();
        assert!(
            start.starts_with("systemctl --no-ask-password start -- 'tailopsmcp-helper@")
                && start.contains(":enable:sleepy\\x2dng.service.service'"),
            "{start}"
        );
        assert!(
            plan[1]["detail"]
                .as_str()
                .unwrap()
                .ends_with("systemctl enable -- sleepy-ng.service")
        );
        assert!(
            plan[2]["detail"]
                .as_str()
                .unwrap()
                .starts_with("cat -- /run/tailopsmcp-helper/")
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(
            shell_words(&CommandSpec::new("a", ["b-c", "it's", "x\\y", ""])),
            "a b-c 'it'\\''s' 'x\\y' ''"
        );
    }
}
