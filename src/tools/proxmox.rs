//! The `proxmox` toolset: Proxmox VE nodes, guests (QEMU VMs and LXC containers), their status
//! and power actions, and snapshots, on `http` targets whose `base_url` is a Proxmox API
//! (`https://HOST:8006/api2/json`, token header `PVEAPIToken=`).
//!
//! Scope area: `system`. A Proxmox guest is a host, and its node is one: reading them is
//! `system:read`, powering them and snapshotting them is `system:control`. No new area: grants
//! and target ceilings already say *which* Proxmox (`targets = ["pve"]`, or `scopes` on the
//! target), and a separate area would only duplicate `system` for the same kind of act.
//!
//! Tools validate every argument that becomes part of an API path (node, vmid, snapshot name)
//! before anything is sent and reach the API only through `exec::proxmox` (over `exec::http`,
//! which enforces the target's allowed methods and paths). Changing tools return their `plan`
//! (the exact API calls); `dry_run` sends no `POST` (it may `GET` `/cluster/resources` to find
//! where a guest lives).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, Step, StepKind, Tool, ToolContext, ToolError, Truncated,
    bounded, tool, undeclared_kind,
};
use crate::exec::proxmox::{self, Guest, GuestAction, GuestStatus, GuestType, Node, Proxmox, Snapshot, TaskStatus};
use crate::policy::{Area, Level, Scope};
use crate::text::human_bytes;

/// The longest a changing tool waits for its task (`wait_seconds`).
pub const WAIT_MAX_SECONDS: i64 = 600;
/// Guests listed at most (`limit`).
pub const GUESTS_LIMIT_MAX: i64 = 1000;
pub const GUESTS_LIMIT_DEFAULT: i64 = 200;
/// Snapshots listed at most (`limit`).
pub const SNAPSHOTS_LIMIT_MAX: i64 = 500;
pub const SNAPSHOTS_LIMIT_DEFAULT: i64 = 100;
/// Characters of a snapshot description.
pub const DESCRIPTION_MAX: usize = 1024;

/// The Proxmox API, through an `http` target.
const KINDS: &[Kind] = &[Kind::Http];
const SYSTEM_READ: Requirement = Requirement::Scope(Scope::new(Area::System, Level::Read));
const SYSTEM_CONTROL: Requirement = Requirement::Scope(Scope::new(Area::System, Level::Control));

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "proxmox_nodes",
                title: "Proxmox nodes",
                description: "The nodes of a Proxmox VE cluster (an `http` target whose base_url is the Proxmox API): \
                    name, status (online/offline), CPU usage percent and count, memory and root disk used/total \
                    (bytes), uptime (seconds).",
                requires: SYSTEM_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            nodes,
        ),
        tool(
            Declaration {
                name: "proxmox_guests",
                title: "Proxmox VMs and containers",
                description: "VMs (`qemu`) and LXC containers (`lxc`) of a Proxmox VE cluster, from \
                    /cluster/resources, by vmid: vmid, type, name, node, status, template, CPUs and CPU usage \
                    percent, memory used/total and disk size (bytes), uptime, tags, lock. Filters: `node`, `type`, \
                    `status`; at most `limit` rows (1-1000, default 200), `truncated` says how many were left out.",
                requires: SYSTEM_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            guests,
        ),
        tool(
            Declaration {
                name: "proxmox_guest_status",
                title: "Proxmox guest status",
                description: "Current status of one VM or container by `vmid` (node and type are looked up unless \
                    given): status, QMP status (VMs), CPUs and usage percent, memory used/total, disk size, uptime, \
                    pid, lock, whether HA manages it, tags.",
                requires: SYSTEM_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            guest_status,
        ),
        tool(
            Declaration {
                name: "proxmox_guest_action",
                title: "Start, stop, shut down or reboot a Proxmox guest",
                description: "Power action on one VM or container by `vmid`: `start`, `shutdown` (clean), `reboot` \
                    (clean) or `stop` (hard power-off: unsaved guest state is lost; prefer `shutdown`). Returns the \
                    exact API call as `plan` and the Proxmox task id (UPID); `wait_seconds` (0-600) waits for the \
                    task and reports its exit status (a failed task is an error). `dry_run: true` returns the plan \
                    and sends nothing but a lookup of where the guest lives.",
                requires: SYSTEM_CONTROL,
                risk: Risk::High,
                annotations: Annotations {
                    read_only: false,
                    destructive: true,
                    idempotent: false,
                    open_world: false,
                },
                kinds: KINDS,
            },
            guest_action,
        ),
        tool(
            Declaration {
                name: "proxmox_snapshots",
                title: "Proxmox snapshots",
                description: "Snapshots of one VM or container by `vmid`, oldest first: name, description, created_at \
                    (RFC 3339 UTC), parent, whether RAM is included; the last entry (`is_current: true`) is the \
                    guest's present state. At most `limit` rows (1-500, default 100).",
                requires: SYSTEM_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            snapshots,
        ),
        tool(
            Declaration {
                name: "proxmox_snapshot_create",
                title: "Create a Proxmox snapshot",
                description: "Snapshot one VM or container by `vmid` (e.g. before an upgrade): `name` (a letter, then \
                    letters, digits, `_` or `-`; 2-40 characters), optional `description`, `include_ram` (VMs only). \
                    Returns the exact API call as `plan` and the task id (UPID); `wait_seconds` (0-600) waits for the \
                    task. `dry_run: true` returns the plan without creating anything.",
                requires: SYSTEM_CONTROL,
                risk: Risk::Moderate,
                annotations: Annotations {
                    read_only: false,
                    destructive: false,
                    idempotent: false,
                    open_world: false,
                },
                kinds: KINDS,
            },
            snapshot_create,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// Arguments of `proxmox_nodes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodesArgs {}

/// Arguments of `proxmox_guests`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestsArgs {
    /// Only guests on this node (default: the whole cluster).
    #[serde(default)]
    pub node: Option<String>,
    /// Only VMs (`qemu`) or only containers (`lxc`).
    #[serde(default, rename = "type")]
    pub kind: Option<GuestType>,
    /// Only guests in this state, e.g. `running` or `stopped`.
    #[serde(default)]
    pub status: Option<String>,
    /// Rows to return, 1 to 1000 (default 200), by vmid.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

/// Arguments of `proxmox_guest_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestArgs {
    /// The guest's id (100 to 999999999).
    #[schemars(range(min = 100, max = 999_999_999))]
    pub vmid: i64,
    /// The guest's node; looked up when omitted.
    #[serde(default)]
    pub node: Option<String>,
    /// `qemu` or `lxc`; looked up when omitted.
    #[serde(default, rename = "type")]
    pub kind: Option<GuestType>,
}

/// Arguments of `proxmox_snapshots`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsArgs {
    /// The guest's id (100 to 999999999).
    #[schemars(range(min = 100, max = 999_999_999))]
    pub vmid: i64,
    /// The guest's node; looked up when omitted.
    #[serde(default)]
    pub node: Option<String>,
    /// `qemu` or `lxc`; looked up when omitted.
    #[serde(default, rename = "type")]
    pub kind: Option<GuestType>,
    /// Rows to return, 1 to 500 (default 100); the newest are kept.
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// Arguments of `proxmox_guest_action`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionArgs {
    /// The guest's id (100 to 999999999).
    #[schemars(range(min = 100, max = 999_999_999))]
    pub vmid: i64,
    /// `start`, `stop` (hard power-off), `shutdown` (clean) or `reboot`.
    pub action: GuestAction,
    /// The guest's node; looked up when omitted.
    #[serde(default)]
    pub node: Option<String>,
    /// `qemu` or `lxc`; looked up when omitted.
    #[serde(default, rename = "type")]
    pub kind: Option<GuestType>,
    /// Return the plan without sending the action.
    #[serde(default)]
    pub dry_run: bool,
    /// Wait up to this many seconds (0 to 600, default 0) for the Proxmox task to finish.
    #[serde(default)]
    #[schemars(range(min = 0, max = 600))]
    pub wait_seconds: Option<i64>,
}

/// Arguments of `proxmox_snapshot_create`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateArgs {
    /// The guest's id (100 to 999999999).
    #[schemars(range(min = 100, max = 999_999_999))]
    pub vmid: i64,
    /// Snapshot name: a letter, then letters, digits, `_` or `-` (2-40 characters).
    pub name: String,
    /// Free text stored with the snapshot (at most 1024 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// VMs only: include the RAM (`vmstate`), so the snapshot can resume a running VM.
    #[serde(default)]
    pub include_ram: bool,
    /// The guest's node; looked up when omitted.
    #[serde(default)]
    pub node: Option<String>,
    /// `qemu` or `lxc`; looked up when omitted.
    #[serde(default, rename = "type")]
    pub kind: Option<GuestType>,
    /// Return the plan without creating the snapshot.
    #[serde(default)]
    pub dry_run: bool,
    /// Wait up to this many seconds (0 to 600, default 0) for the Proxmox task to finish.
    #[serde(default)]
    #[schemars(range(min = 0, max = 600))]
    pub wait_seconds: Option<i64>,
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// `structuredContent` of `proxmox_nodes`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NodesOutput {
    pub count: usize,
    pub nodes: Vec<Node>,
}

/// `structuredContent` of `proxmox_guests`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GuestsOutput {
    /// Guests matching the filters.
    pub total: usize,
    /// Guests returned (at most `limit`).
    pub shown: usize,
    pub guests: Vec<Guest>,
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `proxmox_snapshots`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotsOutput {
    pub vmid: u64,
    #[serde(rename = "type")]
    pub kind: GuestType,
    pub node: String,
    /// Snapshots returned (the `current` entry included).
    pub count: usize,
    pub snapshots: Vec<Snapshot>,
    pub truncated: Option<Truncated>,
}

/// A Proxmox task started by a changing tool.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Task {
    /// The task id (UPID): follow it in the Proxmox UI or with `wait_seconds`.
    pub upid: String,
    /// `started` (not waited for), `running` (still running when the wait ended), `stopped`, or
    /// `unknown` (the task could not be followed; `exit_status` says why).
    pub status: String,
    /// When stopped: `OK` or the task's error text.
    pub exit_status: Option<String>,
}

/// `structuredContent` of `proxmox_guest_action`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ActionOutput {
    pub vmid: u64,
    #[serde(rename = "type")]
    pub kind: GuestType,
    pub node: String,
    pub action: GuestAction,
    pub dry_run: bool,
    /// The exact API call, sent unless `dry_run`.
    pub plan: Vec<Step>,
    /// The task the call started (absent on a dry run).
    pub task: Option<Task>,
}

/// `structuredContent` of `proxmox_snapshot_create`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotCreateOutput {
    pub vmid: u64,
    #[serde(rename = "type")]
    pub kind: GuestType,
    pub node: String,
    pub name: String,
    pub dry_run: bool,
    /// The exact API call, sent unless `dry_run`.
    pub plan: Vec<Step>,
    /// The task the call started (absent on a dry run).
    pub task: Option<Task>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn nodes(ctx: ToolContext, _args: NodesArgs) -> Result<Output<NodesOutput>, ToolError> {
    let px = api(&ctx)?;
    let nodes = px.nodes().await?;
    let mut text = format!("{} node(s):\n", nodes.len());
    for n in &nodes {
        let _ = writeln!(
            text,
            "  {:<12} {:<8} cpu {:>6} of {:>3}  mem {} / {}  up {}",
            n.node,
            n.status,
            pct(n.cpu_percent),
            n.cpus.map_or("?".into(), |c| c.to_string()),
            bytes(n.memory_used_bytes),
            bytes(n.memory_total_bytes),
            n.uptime_seconds.map_or("-".into(), duration)
        );
    }
    Ok(Output::new(
        NodesOutput {
            count: nodes.len(),
            nodes,
        },
        text,
    ))
}

async fn guests(ctx: ToolContext, args: GuestsArgs) -> Result<Output<GuestsOutput>, ToolError> {
    let limit = bounded("limit", args.limit, GUESTS_LIMIT_DEFAULT, 1, GUESTS_LIMIT_MAX)?;
    if let Some(node) = &args.node {
        proxmox::validate_node(node).map_err(ToolError::InvalidArgs)?;
    }
    if let Some(status) = &args.status
        && (status.is_empty() || status.len() > 32 || !status.bytes().all(|b| b.is_ascii_lowercase()))
    {
        return Err(ToolError::InvalidArgs(
            "`status` is a Proxmox state such as `running` or `stopped`".into(),
        ));
    }
    let px = api(&ctx)?;
    let mut all = px.guests().await?;
    all.retain(|g| {
        args.node.as_ref().is_none_or(|n| &g.node == n)
            && args.kind.is_none_or(|k| g.kind == k)
            && args.status.as_ref().is_none_or(|s| &g.status == s)
    });
    let total = all.len();
    let truncated = (total > limit).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some((total - limit) as u64),
    });
    all.truncate(limit);
    let mut text = format!("{} of {total} guest(s):\n", all.len());
    for g in &all {
        let _ = writeln!(
            text,
            "  {:>6} {:<4} {:<20} {:<10} {:<8} cpu {:>6}  mem {} / {}{}",
            g.vmid,
            g.kind.as_str(),
            g.name.as_deref().unwrap_or("-"),
            g.node,
            g.status,
            pct(g.cpu_percent),
            bytes(g.memory_used_bytes),
            bytes(g.memory_total_bytes),
            if g.template { "  (template)" } else { "" }
        );
    }
    if let Some(t) = &truncated {
        let _ = writeln!(text, "  … {} more (raise `limit` or filter)", t.omitted.unwrap_or(0));
    }
    Ok(Output::new(
        GuestsOutput {
            total,
            shown: all.len(),
            guests: all,
            truncated,
        },
        text,
    ))
}

async fn guest_status(ctx: ToolContext, args: GuestArgs) -> Result<Output<GuestStatus>, ToolError> {
    let wanted = Wanted::check(args.vmid, args.node.as_deref(), args.kind)?;
    let px = api(&ctx)?;
    let (node, kind, vmid) = wanted.resolve(&px).await?;
    let s = px.guest_status(&node, kind, vmid).await?;
    let text = format!(
        "{} {} ({}) on {}: {}{}; cpu {} of {}, mem {} / {}, up {}{}{}\n",
        s.kind.as_str(),
        s.vmid,
        s.name.as_deref().unwrap_or("-"),
        s.node,
        s.status,
        s.qmp_status
            .as_deref()
            .filter(|q| *q != s.status)
            .map(|q| format!(" (qmp {q})"))
            .unwrap_or_default(),
        pct(s.cpu_percent),
        s.cpus.map_or("?".into(), |c| c.to_string()),
        bytes(s.memory_used_bytes),
        bytes(s.memory_total_bytes),
        s.uptime_seconds.map_or("-".into(), duration),
        s.lock.as_deref().map(|l| format!(", locked ({l})")).unwrap_or_default(),
        if s.ha_managed { ", HA-managed" } else { "" },
    );
    Ok(Output::new(s, text))
}

async fn guest_action(ctx: ToolContext, args: ActionArgs) -> Result<Output<ActionOutput>, ToolError> {
    let wait = bounded("wait_seconds", args.wait_seconds, 0, 0, WAIT_MAX_SECONDS)?;
    let wanted = Wanted::check(args.vmid, args.node.as_deref(), args.kind)?;
    let px = api(&ctx)?;
    let (node, kind, vmid) = wanted.resolve(&px).await?;
    let path = proxmox::action_path(&node, kind, vmid, args.action)?;
    let plan = vec![Step {
        kind: StepKind::Api,
        target: ctx.target.id.clone(),
        detail: format!("POST {path}"),
    }];
    let task = if args.dry_run {
        None
    } else {
        let upid = px.action(&node, kind, vmid, args.action).await?;
        Some(
            follow(
                &px,
                &node,
                upid,
                wait,
                &format!("{} of {} {vmid}", args.action.as_str(), kind.as_str()),
            )
            .await?,
        )
    };
    let text = changed_text(args.dry_run, &plan, task.as_ref());
    Ok(Output::new(
        ActionOutput {
            vmid,
            kind,
            node,
            action: args.action,
            dry_run: args.dry_run,
            plan,
            task,
        },
        text,
    ))
}

async fn snapshots(ctx: ToolContext, args: SnapshotsArgs) -> Result<Output<SnapshotsOutput>, ToolError> {
    let limit = bounded("limit", args.limit, SNAPSHOTS_LIMIT_DEFAULT, 1, SNAPSHOTS_LIMIT_MAX)?;
    let wanted = Wanted::check(args.vmid, args.node.as_deref(), args.kind)?;
    let px = api(&ctx)?;
    let (node, kind, vmid) = wanted.resolve(&px).await?;
    let mut snaps = px.snapshots(&node, kind, vmid).await?;
    let total = snaps.len();
    // Keep the newest `limit` entries (`current` is last): old ones are what gets cut.
    let truncated = (total > limit).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some((total - limit) as u64),
    });
    if total > limit {
        snaps.drain(..total - limit);
    }
    let mut text = format!("{} {vmid} on {node}: {} snapshot entries\n", kind.as_str(), snaps.len());
    for s in &snaps {
        let _ = writeln!(
            text,
            "  {:<24} {:<20} {}{}",
            s.name,
            s.created_at
                .as_deref()
                .unwrap_or(if s.is_current { "(now)" } else { "-" }),
            s.description
                .as_deref()
                .map(|d| d.lines().next().unwrap_or(""))
                .unwrap_or(""),
            if s.includes_ram { " [ram]" } else { "" }
        );
    }
    Ok(Output::new(
        SnapshotsOutput {
            vmid,
            kind,
            node,
            count: snaps.len(),
            snapshots: snaps,
            truncated,
        },
        text,
    ))
}

async fn snapshot_create(
    ctx: ToolContext,
    args: SnapshotCreateArgs,
) -> Result<Output<SnapshotCreateOutput>, ToolError> {
    let wait = bounded("wait_seconds", args.wait_seconds, 0, 0, WAIT_MAX_SECONDS)?;
    proxmox::validate_snapshot_name(&args.name).map_err(ToolError::InvalidArgs)?;
    if let Some(d) = &args.description
        && (d.chars().count() > DESCRIPTION_MAX || d.chars().any(|c| c.is_control() && c != '\n' && c != '\t'))
    {
        return Err(ToolError::InvalidArgs(format!(
            "`description` must be at most {DESCRIPTION_MAX} characters without control characters"
        )));
    }
    let wanted = Wanted::check(args.vmid, args.node.as_deref(), args.kind)?;
    let px = api(&ctx)?;
    let (node, kind, vmid) = wanted.resolve(&px).await?;
    if args.include_ram && kind == GuestType::Lxc {
        return Err(ToolError::Failed(format!(
            "`include_ram` applies to VMs only; {vmid} is an LXC container"
        )));
    }
    let (path, body) = proxmox::snapshot_request(
        &node,
        kind,
        vmid,
        &args.name,
        args.description.as_deref(),
        args.include_ram,
    )?;
    let plan = vec![Step {
        kind: StepKind::Api,
        target: ctx.target.id.clone(),
        detail: format!("POST {path} {body}"),
    }];
    let task = if args.dry_run {
        None
    } else {
        let upid = px
            .snapshot_create(
                &node,
                kind,
                vmid,
                &args.name,
                args.description.as_deref(),
                args.include_ram,
            )
            .await?;
        Some(
            follow(
                &px,
                &node,
                upid,
                wait,
                &format!("snapshot `{}` of {} {vmid}", args.name, kind.as_str()),
            )
            .await?,
        )
    };
    let text = changed_text(args.dry_run, &plan, task.as_ref());
    Ok(Output::new(
        SnapshotCreateOutput {
            vmid,
            kind,
            node,
            name: args.name,
            dry_run: args.dry_run,
            plan,
            task,
        },
        text,
    ))
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A guest named by the caller, validated: vmid, and node/type when given.
struct Wanted<'a> {
    vmid: u64,
    node: Option<&'a str>,
    kind: Option<GuestType>,
}

impl<'a> Wanted<'a> {
    fn check(vmid: i64, node: Option<&'a str>, kind: Option<GuestType>) -> Result<Wanted<'a>, ToolError> {
        let vmid = proxmox::validate_vmid(vmid).map_err(ToolError::InvalidArgs)?;
        if let Some(n) = node {
            proxmox::validate_node(n).map_err(ToolError::InvalidArgs)?;
        }
        Ok(Wanted { vmid, node, kind })
    }

    /// Node and type as given, or looked up in the cluster's resource list.
    async fn resolve(&self, px: &Proxmox<'_>) -> Result<(String, GuestType, u64), ToolError> {
        if let (Some(node), Some(kind)) = (self.node, self.kind) {
            return Ok((node.to_string(), kind, self.vmid));
        }
        let g = px.locate(self.vmid).await?;
        if let Some(node) = self.node
            && node != g.node
        {
            return Err(ToolError::Failed(format!(
                "{} {} is on node {}, not {node}",
                g.kind.as_str(),
                g.vmid,
                g.node
            )));
        }
        if let Some(kind) = self.kind
            && kind != g.kind
        {
            return Err(ToolError::Failed(format!(
                "{} is a {} guest, not {}",
                g.vmid,
                g.kind.as_str(),
                kind.as_str()
            )));
        }
        Ok((g.node, g.kind, g.vmid))
    }
}

/// The Proxmox API of the call's target.
fn api(ctx: &ToolContext) -> Result<Proxmox<'_>, ToolError> {
    match &ctx.target.executor {
        crate::targets::Executor::Http(http) => Ok(Proxmox::new(http)),
        _ => Err(undeclared_kind(ctx)),
    }
}

/// The task as started, or as it ended within `wait` seconds; a task that ended badly is an error.
async fn follow(px: &Proxmox<'_>, node: &str, upid: String, wait: usize, what: &str) -> Result<Task, ToolError> {
    if wait == 0 {
        return Ok(Task {
            upid,
            status: "started".into(),
            exit_status: None,
        });
    }
    // The action was sent: a failure to follow it must not hide the task id.
    let status: TaskStatus = match px.wait_task(node, &upid, Duration::from_secs(wait as u64)).await {
        Ok(s) => s,
        Err(e) => {
            return Ok(Task {
                upid,
                status: "unknown".into(),
                exit_status: Some(format!("could not follow the task: {e}")),
            });
        }
    };
    if status.status == "stopped" && !status.succeeded() {
        return Err(ToolError::Failed(format!(
            "{what}: task {upid} ended with `{}`",
            status.exit_status.as_deref().unwrap_or("no exit status")
        )));
    }
    Ok(Task {
        upid,
        status: status.status,
        exit_status: status.exit_status,
    })
}

fn changed_text(dry_run: bool, plan: &[Step], task: Option<&Task>) -> String {
    let mut text = String::new();
    let head = if dry_run { "dry run; would send:" } else { "sent:" };
    let _ = writeln!(text, "{head}");
    for s in plan {
        let _ = writeln!(text, "  {} on {}", s.detail, s.target);
    }
    if let Some(t) = task {
        let _ = match t.status.as_str() {
            "started" => writeln!(text, "task {} started (not waited for)", t.upid),
            "running" => writeln!(text, "task {} still running when the wait ended", t.upid),
            "unknown" => writeln!(
                text,
                "task {} sent; {}",
                t.upid,
                t.exit_status.as_deref().unwrap_or("its status is unknown")
            ),
            _ => writeln!(
                text,
                "task {} finished: {}",
                t.upid,
                t.exit_status.as_deref().unwrap_or("?")
            ),
        };
    }
    text
}

fn pct(p: Option<f64>) -> String {
    p.map_or("?".into(), |p| format!("{p:.1}%"))
}

/// [`human_bytes`], or `?` when unknown.
fn bytes(b: Option<u64>) -> String {
    b.map_or("?".into(), human_bytes)
}

fn duration(seconds: u64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds % 86_400 / 3_600, seconds % 3_600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::{self, invalid};
    use crate::tools::{ToolOutput, ToolSpec};
    use serde_json::{Value, json};

    async fn call(name: &str, args: Value) -> Result<ToolOutput, ToolError> {
        testing::call(tools(), name, args).await
    }

    #[test]
    fn specs_are_as_declared() {
        let specs: Vec<ToolSpec> = tools().iter().map(|t| t.spec().clone()).collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "proxmox_nodes",
                "proxmox_guests",
                "proxmox_guest_status",
                "proxmox_guest_action",
                "proxmox_snapshots",
                "proxmox_snapshot_create"
            ]
        );
        for s in &specs {
            let level = if s.mutates() { Level::Control } else { Level::Read };
            assert_eq!(
                s.requires,
                Requirement::Scope(Scope::new(Area::System, level)),
                "{}",
                s.name
            );
            assert_eq!(s.risk == Risk::Low, !s.mutates(), "{}", s.name);
            assert!(s.input_schema["properties"].get("target").is_some(), "{}", s.name);
            if s.mutates() {
                assert!(s.input_schema["properties"].get("dry_run").is_some(), "{}", s.name);
                assert!(s.output_schema["properties"].get("plan").is_some(), "{}", s.name);
            }
        }
    }

    #[test]
    fn offered_only_where_an_http_target_exists() {
        use crate::targets::Kind;
        for t in tools() {
            assert!(t.supports(Kind::Http) && !t.supports(Kind::Local) && !t.supports(Kind::Ssh));
        }
        let local_only = crate::targets::Registry::local_only();
        let offered = crate::tools::for_targets(crate::tools::catalog(), &local_only);
        assert!(!offered.iter().any(|t| t.spec().name.starts_with("proxmox_")));
        assert!(offered.iter().any(|t| t.spec().name == "system_status"));
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_before_the_target_is_asked() {
        // Each is refused before the target is looked at.
        for (tool, args, says) in [
            ("proxmox_guest_status", json!({"vmid": 99}), "between 100 and 999999999"),
            ("proxmox_guest_status", json!({"vmid": 1_000_000_000}), "between 100"),
            (
                "proxmox_guest_status",
                json!({"vmid": 100, "node": "../access"}),
                "invalid node name",
            ),
            (
                "proxmox_guest_status",
                json!({"vmid": 100, "type": "docker"}),
                "unknown variant",
            ),
            ("proxmox_guest_status", json!({"vmid": "100"}), "invalid type"),
            (
                "proxmox_guest_status",
                json!({"vmid": 100, "limit": 3}),
                "unknown field `limit`",
            ),
            (
                "proxmox_guest_action",
                json!({"vmid": 100, "action": "destroy"}),
                "unknown variant",
            ),
            (
                "proxmox_guest_action",
                json!({"vmid": 100, "action": "start", "wait_seconds": 601}),
                "between 0 and 600",
            ),
            ("proxmox_guests", json!({"limit": 0}), "between 1 and 1000"),
            ("proxmox_guests", json!({"node": "pve;rm"}), "invalid node name"),
            ("proxmox_guests", json!({"status": "RUNNING'"}), "`status`"),
            (
                "proxmox_snapshots",
                json!({"vmid": 100, "limit": 501}),
                "between 1 and 500",
            ),
            (
                "proxmox_snapshot_create",
                json!({"vmid": 100, "name": "../../x"}),
                "invalid snapshot name",
            ),
            (
                "proxmox_snapshot_create",
                json!({"vmid": 100, "name": "ok-name", "description": "x".repeat(1025)}),
                "at most 1024",
            ),
            ("proxmox_nodes", json!({"verbose": true}), "unknown field"),
        ] {
            invalid(call(tool, args.clone()).await, says);
        }
        // Valid arguments reach the executor, which on `local` is no Proxmox API (the call
        // pipeline never runs these tools there).
        match call("proxmox_nodes", json!({})).await {
            Err(ToolError::Internal(m)) => assert!(m.contains("is a local target"), "{m}"),
            other => panic!("{:?}", other.map(|o| o.text)),
        }
    }

    #[test]
    fn renderers() {
        assert_eq!(bytes(Some(2 * 1024 * 1024 * 1024)), "2.0 GiB");
        assert_eq!(bytes(None), "?");
        assert_eq!(duration(90_061), "1d 1h 1m");
        assert_eq!(pct(Some(12.34)), "12.3%");
        let plan = [Step {
            kind: StepKind::Api,
            target: "pve".into(),
            detail: "POST /nodes/pve/qemu/100/status/start".into(),
        }];
        assert!(changed_text(true, &plan, None).starts_with("dry run; would send:\n  POST /nodes/pve/qemu/100"));
    }
}
