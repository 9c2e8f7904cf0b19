//! The `system` toolset: read-only views of a host — status, processes, network interfaces,
//! sockets and disks — each declared as data next to its handler, on `local` and `ssh` targets.
//!
//! Tools here parse and validate arguments, call `exec::local` inside `spawn_blocking` (or
//! `exec::remote` over SSH), and render a compact text next to the structured result. They never
//! read `/proc` or `/sys` themselves, never check scopes (the `call` pipeline does), and never write
//! audit rows.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, TailnetInfo, Tool, ToolContext, ToolError, Truncated,
    blocking, bounded, tool, undeclared_kind,
};
use crate::exec::local::{self, Interface, ProcessList, ProcessSort, SystemStatus};
use crate::exec::procfs::{DisksReport, Protocol, SocketList, SocketQuery, StateFilter};
use crate::policy::{Area, Level, Scope};
use crate::text::human_bytes;

/// The allowed range of `system_processes.limit`.
pub const PROCESS_LIMIT_MIN: i64 = 1;
pub const PROCESS_LIMIT_MAX: i64 = 100;
pub const PROCESS_LIMIT_DEFAULT: i64 = 20;

/// The allowed range of `system_sockets.limit`.
pub const SOCKET_LIMIT_MAX: i64 = 1000;
pub const SOCKET_LIMIT_DEFAULT: i64 = 100;
/// The allowed range of `system_disks.limit` (per list).
pub const DISK_LIMIT_MAX: i64 = 500;
pub const DISK_LIMIT_DEFAULT: i64 = 100;

/// This host, or an SSH host through standard commands.
const KINDS: &[Kind] = &[Kind::Local, Kind::Ssh];
const SYSTEM_READ: Requirement = Requirement::Scope(Scope::new(Area::System, Level::Read));

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "system_status",
                title: "System status",
                description: "Snapshot of the host: hostname; OS name and version; kernel; architecture; uptime \
                    (seconds) and boot time; load average (1/5/15 min); CPU count, model and usage percent of all \
                    CPUs; memory and swap (bytes); mounted storage file systems with total/available bytes and used \
                    percent (pseudo file systems such as tmpfs and overlay omitted unless at `/`); virtualization \
                    (`kind` such as none/lxc/docker/kvm, `container`, `container_id` = Proxmox CT id or Docker id, \
                    underlying `hypervisor`); and this server's own tailnet name and addresses. Times are RFC 3339 \
                    UTC. CPU usage is averaged over `cpu.sample_ms`: since the previous call, or over a fresh \
                    200 ms sample when there was none in the last minute.",
                requires: SYSTEM_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            status,
        ),
        tool(
            Declaration {
                name: "system_processes",
                title: "Top processes",
                description: "Top processes on the host, sorted by `cpu` (default) or `memory`, at most `limit` \
                    rows (1-100, default 20). Each row: pid, ppid, uid and user, name, command line (at most 512 \
                    characters; `[name]` for kernel threads), state (running, sleeping, disk-sleep, zombie, ...), \
                    cpu_percent (percent of ONE CPU over the sample window, so up to 100 × cpu_count), \
                    memory_bytes (resident set size), memory_percent (of total memory), started_at (RFC 3339 UTC) \
                    and run_time_seconds. Also returns `total` (all processes; threads are not listed separately), \
                    `shown`, `sort`, `cpu_count` and `cpu_sample_ms` (the window CPU usage covers: since the \
                    previous call, or a fresh 200 ms sample when there was none in the last minute).",
                requires: SYSTEM_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            processes,
        ),
        tool(
            Declaration {
                name: "network_interfaces",
                title: "Network interfaces",
                description: "Network interfaces of the host, in kernel index order: name, index, MAC, MTU, \
                    operational state (up/down/unknown; `unknown` is normal for loopback and tun), admin_up, IP \
                    addresses with prefix length, and cumulative rx/tx bytes, packets, errors and drops since the \
                    interface appeared. Tailnet addresses (100.64.0.0/10, fd7a:115c:a1e0::/48) and the interfaces \
                    holding them are marked `tailnet: true`. Optional `name` returns only that interface (exact \
                    match; an unknown name is an error listing the existing ones).",
                requires: Requirement::Scope(Scope::new(Area::Network, Level::Read)),
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            interfaces,
        ),
        tool(
            Declaration {
                name: "system_sockets",
                title: "Sockets and connections",
                description: "TCP and UDP sockets of the host (IPv4 and IPv6) from the kernel's /proc/net tables: \
                    protocol, family, state (TCP states in snake case; UDP `unconnected` or `established`), local \
                    and remote address and port, owner uid and user, socket inode, and the pid and name of the \
                    process holding it when that process's /proc/PID/fd is readable (`processes_unreadable` \
                    counts the ones that were not). Filters: `state` (all, listening, established, time_wait, \
                    close_wait), `port` (local or remote), `protocol` (tcp, udp). Listeners first, then \
                    connections, ordered by protocol and port; at most `limit` rows (1-1000, default 100), \
                    `matched` counts all that matched.",
                requires: SYSTEM_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            sockets,
        ),
        tool(
            Declaration {
                name: "system_disks",
                title: "Disks and mounts",
                description: "Storage of the host. `devices`: block devices from /proc/partitions (empty loop \
                    devices and RAM disks left out) with major:minor, kind (disk/partition), size, read-only, \
                    removable, rotational, model, first mount point, and cumulative I/O counters since boot from \
                    /proc/diskstats (reads, read bytes, writes, write bytes, in-flight I/Os, milliseconds busy). \
                    `mounts`: mount point, source, file system type, options, read-only, major:minor, the block \
                    device behind it, and usage (total/used/available bytes, used percent as `df` computes it, \
                    inodes). Pseudo file systems (proc, sysfs, tmpfs, overlay, cgroup, ...) are omitted unless \
                    `all: true` (`/` is always listed). Each list holds at most `limit` rows (1-500, default \
                    100).",
                requires: SYSTEM_READ,
                risk: Risk::Low,
                annotations: Annotations::READ_ONLY,
                kinds: KINDS,
            },
            disks,
        ),
    ]
}

/// Arguments of `system_status`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemStatusArgs {}

/// Arguments of `system_processes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemProcessesArgs {
    /// Order: `cpu` (highest CPU usage first, the default) or `memory` (largest resident set first).
    #[serde(default)]
    pub sort: ProcessSort,
    /// Number of rows to return, 1 to 100 (default 20).
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: i64,
}

/// Arguments of `network_interfaces`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfacesArgs {
    /// Only the interface with exactly this name (e.g. `eth0`, `tailscale0`).
    #[serde(default)]
    pub name: Option<String>,
}

/// `structuredContent` of `system_status`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SystemStatusOutput {
    #[serde(flatten)]
    pub status: SystemStatus,
    /// This server's own node in the tailnet (empty when not known, e.g. in dev mode).
    pub tailnet: TailnetSummary,
}

/// The schema-bearing view of [`TailnetInfo`].
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TailnetSummary {
    /// Tailnet name.
    pub tailnet: Option<String>,
    /// MagicDNS suffix, e.g. `tail1234.ts.net`.
    pub magic_dns_suffix: Option<String>,
    /// This node's MagicDNS name, e.g. `host.tail1234.ts.net`.
    pub dns_name: Option<String>,
    /// This node's tailnet addresses.
    pub addresses: Vec<IpAddr>,
}

impl From<&TailnetInfo> for TailnetSummary {
    fn from(t: &TailnetInfo) -> TailnetSummary {
        TailnetSummary {
            tailnet: t.tailnet.clone(),
            magic_dns_suffix: t.magic_dns_suffix.clone(),
            dns_name: t.dns_name.clone(),
            addresses: t.addresses.clone(),
        }
    }
}

/// `structuredContent` of `network_interfaces`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NetworkInterfacesOutput {
    /// Number of interfaces returned.
    pub count: usize,
    pub interfaces: Vec<Interface>,
}

/// Arguments of `system_sockets`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemSocketsArgs {
    /// `all` (default), `listening` (TCP listen + unconnected UDP), `established`, `time_wait`
    /// or `close_wait`.
    #[serde(default)]
    pub state: StateFilter,
    /// Only sockets whose local or remote port is this.
    #[serde(default)]
    pub port: Option<u16>,
    /// Only `tcp` or only `udp` (both when omitted).
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Rows to return, 1 to 1000 (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
}

/// `structuredContent` of `system_sockets`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SystemSocketsOutput {
    #[serde(flatten)]
    pub list: SocketList,
    /// Set when `limit` cut the list.
    pub truncated: Option<Truncated>,
}

/// Arguments of `system_disks`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemDisksArgs {
    /// Also list pseudo file systems (proc, sysfs, tmpfs, overlay, cgroup, ...).
    #[serde(default)]
    pub all: bool,
    /// Most devices and most mounts to return, 1 to 500 each (default 100).
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// `structuredContent` of `system_disks`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SystemDisksOutput {
    #[serde(flatten)]
    pub report: DisksReport,
    /// Set when `limit` cut either list (`omitted` counts both).
    pub truncated: Option<Truncated>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `system_status`: a snapshot of the host.
async fn status(ctx: ToolContext, _: SystemStatusArgs) -> Result<Output<SystemStatusOutput>, ToolError> {
    let status = match host(&ctx)? {
        Host::Local => blocking(local::system_status).await?,
        Host::Remote(r) => crate::exec::remote::system_status(r).await?,
    };
    let output = SystemStatusOutput {
        status,
        tailnet: TailnetSummary::from(ctx.tailnet.as_ref()),
    };
    let text = render_status(&output);
    Ok(Output::new(output, text))
}

/// `system_processes`: the top of the process table.
async fn processes(ctx: ToolContext, args: SystemProcessesArgs) -> Result<Output<ProcessList>, ToolError> {
    let limit = validate_limit(args.limit)?;
    let sort = args.sort;
    let list = match host(&ctx)? {
        Host::Local => blocking(move || local::processes(sort, limit)).await?,
        Host::Remote(r) => crate::exec::remote::processes(r, sort, limit).await?,
    };
    let text = render_processes(&list);
    Ok(Output::new(list, text))
}

/// `network_interfaces`: interfaces, addresses and counters.
async fn interfaces(
    ctx: ToolContext,
    args: NetworkInterfacesArgs,
) -> Result<Output<NetworkInterfacesOutput>, ToolError> {
    let mut interfaces = match host(&ctx)? {
        Host::Local => blocking(local::network_interfaces).await?,
        Host::Remote(r) => crate::exec::remote::network_interfaces(r).await?,
    };
    if let Some(name) = args.name.as_deref() {
        if !interfaces.iter().any(|i| i.name == name) {
            let known: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
            return Err(ToolError::Failed(format!(
                "no interface named `{}` (interfaces: {})",
                truncate(name, 64),
                known.join(", ")
            )));
        }
        interfaces.retain(|i| i.name == name);
    }
    let output = NetworkInterfacesOutput {
        count: interfaces.len(),
        interfaces,
    };
    let text = render_interfaces(&output.interfaces);
    Ok(Output::new(output, text))
}

/// `system_sockets`: listening sockets and connections.
async fn sockets(ctx: ToolContext, args: SystemSocketsArgs) -> Result<Output<SystemSocketsOutput>, ToolError> {
    let limit = bounded("limit", args.limit, SOCKET_LIMIT_DEFAULT, 1, SOCKET_LIMIT_MAX)?;
    let q = SocketQuery {
        state: args.state,
        port: args.port,
        protocol: args.protocol,
        limit,
    };
    let list = match host(&ctx)? {
        Host::Local => blocking(move || local::sockets(&q)).await?,
        Host::Remote(r) => crate::exec::remote::sockets(r, &q).await?,
    };
    let truncated = (list.matched > list.shown).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some((list.matched - list.shown) as u64),
    });
    let text = render_sockets(&list);
    Ok(Output::new(SystemSocketsOutput { list, truncated }, text))
}

/// `system_disks`: block devices, mounts, usage and I/O counters.
async fn disks(ctx: ToolContext, args: SystemDisksArgs) -> Result<Output<SystemDisksOutput>, ToolError> {
    let limit = bounded("limit", args.limit, DISK_LIMIT_DEFAULT, 1, DISK_LIMIT_MAX)?;
    let all = args.all;
    let report = match host(&ctx)? {
        Host::Local => blocking(move || local::disks_report(all, limit)).await?,
        Host::Remote(r) => crate::exec::remote::disks_report(r, all, limit).await?,
    };
    let omitted = (report.devices_total - report.devices.len()) + (report.mounts_total - report.mounts.len());
    let truncated = (omitted > 0).then(|| Truncated {
        cap: format!("limit={limit} per list"),
        omitted: Some(omitted as u64),
    });
    let text = render_disks(&report);
    Ok(Output::new(SystemDisksOutput { report, truncated }, text))
}

fn default_limit() -> i64 {
    PROCESS_LIMIT_DEFAULT
}

fn validate_limit(limit: i64) -> Result<usize, ToolError> {
    if !(PROCESS_LIMIT_MIN..=PROCESS_LIMIT_MAX).contains(&limit) {
        return Err(ToolError::InvalidArgs(format!(
            "limit must be between {PROCESS_LIMIT_MIN} and {PROCESS_LIMIT_MAX}, got {limit}"
        )));
    }
    usize::try_from(limit).map_err(|_| ToolError::InvalidArgs(format!("limit {limit} is out of range")))
}

/// Where these tools read a host's `/proc` and `/sys`: this host directly, or an SSH host
/// through standard commands.
enum Host<'a> {
    Local,
    Remote(&'a dyn crate::exec::remote::Runner),
}

fn host(ctx: &ToolContext) -> Result<Host<'_>, ToolError> {
    match &ctx.target.executor {
        crate::targets::Executor::Local => Ok(Host::Local),
        crate::targets::Executor::Ssh(ssh) => Ok(Host::Remote(ssh)),
        _ => Err(undeclared_kind(ctx)),
    }
}

// ---------------------------------------------------------------------------------------------
// Text renderings: compact, for a human reading the transcript.

fn render_status(out: &SystemStatusOutput) -> String {
    let s = &out.status;
    let mut t = String::new();
    let host = s.hostname.as_deref().unwrap_or("(unknown host)");
    let os = s.os.pretty_name.as_deref().unwrap_or("unknown OS");
    let kernel = s.kernel.as_deref().unwrap_or("?");
    let _ = writeln!(t, "{host}: {os}, kernel {kernel}, {}", s.arch);
    let v = &s.virtualization;
    let virt = match (v.container, v.kind.as_str()) {
        (false, "none") => "bare metal".to_string(),
        (false, kind) => format!("{kind} virtual machine"),
        (true, kind) => {
            let mut c = format!("{kind} container");
            if let Some(id) = &v.container_id {
                let _ = write!(c, " {}", truncate(id, 12));
            }
            if let Some(h) = &v.hypervisor {
                let _ = write!(c, " on {h}");
            }
            c
        }
    };
    let _ = writeln!(t, "virtualization: {virt}");
    let _ = writeln!(
        t,
        "up {} (since {}), load {:.2} {:.2} {:.2}",
        human_duration(s.uptime_seconds),
        s.boot_time.as_deref().unwrap_or("?"),
        s.load_average.one,
        s.load_average.five,
        s.load_average.fifteen
    );
    let _ = writeln!(
        t,
        "cpu: {} × {}, {:.1}% busy over {} ms",
        s.cpu.count,
        s.cpu.model.as_deref().unwrap_or("unknown model"),
        s.cpu.usage_percent,
        s.cpu.sample_ms
    );
    let _ = writeln!(
        t,
        "memory: {} used of {}, {} available; swap {} used of {}",
        human_bytes(s.memory.used_bytes),
        human_bytes(s.memory.total_bytes),
        human_bytes(s.memory.available_bytes),
        human_bytes(s.swap.used_bytes),
        human_bytes(s.swap.total_bytes)
    );
    if !s.disks.is_empty() {
        let mount_w = s.disks.iter().map(|d| d.mount_point.chars().count()).max().unwrap_or(0);
        let fs_w = s.disks.iter().map(|d| d.fs_type.chars().count()).max().unwrap_or(0);
        let _ = writeln!(t, "disks:");
        for d in &s.disks {
            let _ = writeln!(
                t,
                "  {:mount_w$}  {:fs_w$}  {:>5.1}% used  {:>9} free of {:>9}  {}",
                d.mount_point,
                d.fs_type,
                d.used_percent,
                human_bytes(d.available_bytes),
                human_bytes(d.total_bytes),
                d.device
            );
        }
    }
    let tn = &out.tailnet;
    let addrs: Vec<String> = tn.addresses.iter().map(IpAddr::to_string).collect();
    match (&tn.dns_name, addrs.is_empty()) {
        (None, true) => {
            let _ = write!(t, "tailnet: unknown");
        }
        (name, _) => {
            let _ = write!(t, "tailnet: {} {}", name.as_deref().unwrap_or("?"), addrs.join(" "));
        }
    }
    t
}

fn render_processes(list: &ProcessList) -> String {
    let mut t = String::new();
    let sort = match list.sort {
        ProcessSort::Cpu => "cpu",
        ProcessSort::Memory => "memory",
    };
    let _ = writeln!(
        t,
        "{} of {} processes by {sort} (cpu% of one CPU over {} ms, {} CPUs)",
        list.shown, list.total, list.cpu_sample_ms, list.cpu_count
    );
    let user_w = list
        .processes
        .iter()
        .map(|p| user_label(p).chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 16);
    let _ = write!(
        t,
        "{:>7} {:user_w$} {:>6} {:>5} {:>9} {:10} COMMAND",
        "PID", "USER", "CPU%", "MEM%", "RSS", "STATE"
    );
    for p in &list.processes {
        let _ = write!(
            t,
            "\n{:>7} {:user_w$} {:>6.1} {:>5.1} {:>9} {:10} {}",
            p.pid,
            truncate(&user_label(p), user_w),
            p.cpu_percent,
            p.memory_percent,
            human_bytes(p.memory_bytes),
            p.state,
            truncate(&p.command, 100)
        );
    }
    t
}

fn user_label(p: &local::ProcessInfo) -> String {
    match (&p.user, p.uid) {
        (Some(u), _) => u.clone(),
        (None, Some(uid)) => uid.to_string(),
        (None, None) => "?".to_string(),
    }
}

fn render_interfaces(interfaces: &[Interface]) -> String {
    let name_w = interfaces.iter().map(|i| i.name.chars().count()).max().unwrap_or(0);
    let lines: Vec<String> = interfaces
        .iter()
        .map(|i| {
            let state = match (i.admin_up, i.oper_state.as_deref()) {
                (Some(false), _) => "admin-down".to_string(),
                (_, Some(s)) => s.to_string(),
                (_, None) => "?".to_string(),
            };
            let mtu = i.mtu.map(|m| m.to_string()).unwrap_or_else(|| "?".to_string());
            let addrs: Vec<String> = i
                .addresses
                .iter()
                .map(|a| format!("{}/{}", a.address, a.prefix_len))
                .collect();
            let mut line = format!("{:name_w$}  {state:10} mtu {mtu:>5}", i.name);
            if i.tailnet {
                line.push_str("  [tailnet]");
            }
            if let Some(mac) = &i.mac {
                let _ = write!(line, "  {mac}");
            }
            if !addrs.is_empty() {
                let _ = write!(line, "  {}", addrs.join(" "));
            }
            if let Some(c) = &i.counters {
                let _ = write!(line, "  rx {} tx {}", human_bytes(c.rx_bytes), human_bytes(c.tx_bytes));
                let errors = c.rx_errors + c.tx_errors;
                let drops = c.rx_dropped + c.tx_dropped;
                if errors + drops > 0 {
                    let _ = write!(line, " ({errors} errors, {drops} drops)");
                }
            }
            line
        })
        .collect();
    if lines.is_empty() {
        "no interfaces".to_string()
    } else {
        lines.join("\n")
    }
}

/// `90061` → `1d 1h 1m`.
fn render_sockets(list: &SocketList) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} of {} sockets{}",
        list.shown,
        list.matched,
        if list.processes_unreadable > 0 {
            format!(
                " ({} processes unreadable: their sockets show no pid)",
                list.processes_unreadable
            )
        } else {
            String::new()
        }
    );
    for s in &list.sockets {
        let endpoint = |a: &IpAddr, p: u16| match a {
            IpAddr::V6(v6) => format!("[{v6}]:{p}"),
            IpAddr::V4(v4) => format!("{v4}:{p}"),
        };
        let owner = match (&s.process, s.pid) {
            (Some(name), Some(pid)) => format!("{name}[{pid}]"),
            (None, Some(pid)) => format!("[{pid}]"),
            _ => "-".to_string(),
        };
        let proto = match s.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let _ = writeln!(
            t,
            "{proto:<3} {:<12} {:<28} {:<28} {owner}",
            s.state,
            endpoint(&s.local_address, s.local_port),
            endpoint(&s.remote_address, s.remote_port),
        );
    }
    t
}

fn render_disks(r: &DisksReport) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "devices ({} of {}):", r.devices.len(), r.devices_total);
    for d in &r.devices {
        let io =
            d.io.as_ref()
                .map(|io| {
                    format!(
                        "read {} written {}",
                        human_bytes(io.read_bytes),
                        human_bytes(io.write_bytes)
                    )
                })
                .unwrap_or_default();
        let _ = writeln!(
            t,
            "  {:<12} {:<9} {:>9}  {:<16} {io}",
            d.name,
            d.kind,
            human_bytes(d.size_bytes),
            d.mount_point.as_deref().unwrap_or("-"),
        );
    }
    let _ = writeln!(t, "mounts ({} of {}):", r.mounts.len(), r.mounts_total);
    for m in &r.mounts {
        let usage = m
            .usage
            .map(|u| {
                format!(
                    "{:>5.1}% used  {:>9} free of {:>9}",
                    u.used_percent,
                    human_bytes(u.available_bytes),
                    human_bytes(u.total_bytes)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            t,
            "  {:<24} {:<8} {}{}  {usage}  {}",
            truncate(&m.mount_point, 24),
            m.fs_type,
            if m.read_only { "ro " } else { "" },
            truncate(&m.source, 32),
            m.dev
        );
    }
    t
}

fn human_duration(seconds: u64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds % 86_400 / 3_600, seconds % 3_600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::invalid;
    use crate::tools::{ToolOutput, ToolSpec};
    use rmcp::model::JsonObject;
    use serde_json::{Value, json};

    fn ctx() -> ToolContext {
        ToolContext::local(ToolContext::test_caller(), Arc::new(crate::config::Config::defaults()))
    }

    fn tool(name: &str) -> Arc<dyn Tool> {
        tools().into_iter().find(|t| t.spec().name == name).unwrap()
    }

    async fn call(name: &str, args: Value) -> Result<ToolOutput, ToolError> {
        let Value::Object(args) = args else {
            panic!("args must be an object")
        };
        let t = tool(name);
        let out = t.call(ctx(), args).await?;
        let schema = t.spec().output_schema.clone();
        if let Err(e) = conforms(&out.structured, &Value::Object((*schema).clone()), &schema, "$") {
            panic!("{name}: output does not match its schema: {e}\n{:#}", out.structured);
        }
        Ok(out)
    }

    /// A small subset of JSON Schema (2020-12 as schemars writes it): `$ref` into `$defs`,
    /// `type`, `required`, `properties`, `additionalProperties: false`, `items`, `anyOf`/`oneOf`,
    /// `enum`, `const`, `minimum`/`maximum`.
    fn conforms(v: &Value, schema: &Value, root: &JsonObject, path: &str) -> Result<(), String> {
        let Value::Object(s) = schema else {
            return Ok(());
        };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r
                .strip_prefix("#/$defs/")
                .ok_or(format!("{path}: unsupported $ref {r}"))?;
            let def = root
                .get("$defs")
                .and_then(|d| d.get(name))
                .ok_or(format!("{path}: missing $def {name}"))?;
            conforms(v, def, root, path)?;
        }
        if let Some(ty) = s.get("type") {
            let types: Vec<&str> = match ty {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let ok = types.iter().any(|t| match *t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "null" => v.is_null(),
                _ => false,
            });
            if !ok {
                return Err(format!("{path}: {v} is not {types:?}"));
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = s.get(key)
                && !branches.iter().any(|b| conforms(v, b, root, path).is_ok())
            {
                return Err(format!("{path}: {v} matches no branch of {key}"));
            }
        }
        if let Some(Value::Array(values)) = s.get("enum")
            && !values.contains(v)
        {
            return Err(format!("{path}: {v} not in {values:?}"));
        }
        if let Some(c) = s.get("const")
            && c != v
        {
            return Err(format!("{path}: {v} is not {c}"));
        }
        if let (Some(n), Some(min)) = (v.as_f64(), s.get("minimum").and_then(Value::as_f64))
            && n < min
        {
            return Err(format!("{path}: {n} < {min}"));
        }
        if let (Some(n), Some(max)) = (v.as_f64(), s.get("maximum").and_then(Value::as_f64))
            && n > max
        {
            return Err(format!("{path}: {n} > {max}"));
        }
        if let Value::Object(obj) = v {
            if let Some(Value::Array(required)) = s.get("required") {
                for key in required.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(key) {
                        return Err(format!("{path}: required key `{key}` is missing"));
                    }
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (key, value) in obj {
                match props.and_then(|p| p.get(key)) {
                    Some(p) => conforms(value, p, root, &format!("{path}.{key}"))?,
                    None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{path}: unexpected key `{key}`"));
                    }
                    None => {}
                }
            }
        }
        if let (Value::Array(items), Some(item_schema)) = (v, s.get("items")) {
            for (n, item) in items.iter().enumerate() {
                conforms(item, item_schema, root, &format!("{path}[{n}]"))?;
            }
        }
        Ok(())
    }

    fn meminfo_total_bytes() -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    #[test]
    fn specs_are_as_declared() {
        let specs: Vec<ToolSpec> = tools().iter().map(|t| t.spec().clone()).collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            vec![
                "system_status",
                "system_processes",
                "network_interfaces",
                "system_sockets",
                "system_disks"
            ]
        );
        for spec in &specs {
            assert_eq!(spec.annotations, Annotations::READ_ONLY, "{}", spec.name);
            assert!(!spec.mutates(), "{}", spec.name);
            assert_eq!(spec.risk, Risk::Low, "{}", spec.name);
            let want = if spec.name == "network_interfaces" {
                Scope::new(Area::Network, Level::Read)
            } else {
                Scope::new(Area::System, Level::Read)
            };
            assert_eq!(spec.requires, Requirement::Scope(want), "{}", spec.name);
            assert_eq!(spec.input_schema.get("type"), Some(&json!("object")), "{}", spec.name);
            assert_eq!(
                spec.input_schema.get("additionalProperties"),
                Some(&json!(false)),
                "{}",
                spec.name
            );
            assert!(spec.input_schema["properties"].get("target").is_some(), "{}", spec.name);
            assert_eq!(spec.output_schema.get("type"), Some(&json!("object")), "{}", spec.name);
            assert!(!spec.description.is_empty() && !spec.title.is_empty());
        }
        let processes = tool("system_processes");
        let limit = &processes.spec().input_schema["properties"]["limit"];
        assert_eq!(
            (limit["minimum"].as_i64(), limit["maximum"].as_i64()),
            (Some(1), Some(100)),
            "{limit}"
        );
        assert_eq!(limit["default"], json!(20));
    }

    #[test]
    fn status_schema_flattens_the_status() {
        let schema = tool("system_status").spec().output_schema.clone();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for key in ["hostname", "os", "memory", "disks", "virtualization", "tailnet"] {
            assert!(required.contains(&key), "{key} not required in {required:?}");
        }
    }

    #[tokio::test]
    async fn system_status_reports_this_machine() {
        let out = call("system_status", json!({})).await.unwrap();
        let v = &out.structured;
        let total = v["memory"]["total_bytes"].as_u64().unwrap();
        assert!(total > 0);
        assert!(
            total.abs_diff(meminfo_total_bytes()) <= 4096,
            "{total} vs /proc/meminfo"
        );
        assert!(v["memory"]["available_bytes"].as_u64().unwrap() <= total);
        assert!(v["cpu"]["count"].as_u64().unwrap() >= 1);
        assert!(v["cpu"]["sample_ms"].as_u64().unwrap() >= 200);
        assert!(v["uptime_seconds"].as_u64().unwrap() > 0);
        assert!(chrono::DateTime::parse_from_rfc3339(v["boot_time"].as_str().unwrap()).is_ok());
        assert_eq!(v["arch"], json!(std::env::consts::ARCH));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(v["kernel"], json!(kernel.trim()));
        assert!(
            v["disks"].as_array().unwrap().iter().any(|d| d["mount_point"] == "/"),
            "{}",
            v["disks"]
        );
        let kind = v["virtualization"]["kind"].as_str().unwrap();
        assert!(!kind.is_empty());
        assert_eq!(v["tailnet"]["addresses"], json!([]));
        assert!(out.text.contains("memory:"), "{}", out.text);
        // `target` is the call layer's: it takes it out of the arguments and lists it.
        assert!(
            tool("system_status").spec().input_schema["properties"]
                .get("target")
                .is_some()
        );
    }

    #[tokio::test]
    async fn system_processes_lists_this_test() {
        let out = call("system_processes", json!({"sort": "memory", "limit": 100}))
            .await
            .unwrap();
        let v = &out.structured;
        let rows = v["processes"].as_array().unwrap();
        let total = v["total"].as_u64().unwrap() as usize;
        assert_eq!(v["shown"].as_u64().unwrap() as usize, rows.len());
        assert_eq!(rows.len(), total.min(100));
        assert_eq!(v["sort"], json!("memory"));
        let mem: Vec<u64> = rows.iter().map(|r| r["memory_bytes"].as_u64().unwrap()).collect();
        assert!(mem.windows(2).all(|w| w[0] >= w[1]), "not sorted by memory: {mem:?}");
        let me = std::process::id();
        let mine = rows.iter().find(|r| r["pid"] == json!(me));
        match mine {
            Some(row) => {
                assert_eq!(row["ppid"], json!(std::os::unix::process::parent_id()));
                assert_eq!(row["uid"], json!(unsafe { libc::getuid() }));
                assert!(row["memory_bytes"].as_u64().unwrap() > 0);
                assert!(row["command"].as_str().unwrap().contains("tailopsmcp"), "{row}");
            }
            // Only possible when more than 100 processes outrank this one.
            None => assert!(total > 100, "pid {me} missing from {total} processes"),
        }

        let out = call("system_processes", json!({})).await.unwrap();
        let v = &out.structured;
        assert_eq!(
            (v["sort"].as_str(), v["shown"].as_u64()),
            (Some("cpu"), Some(v["total"].as_u64().unwrap().min(20)))
        );
        let cpu: Vec<f64> = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["cpu_percent"].as_f64().unwrap())
            .collect();
        assert!(cpu.windows(2).all(|w| w[0] >= w[1]), "not sorted by cpu: {cpu:?}");
        assert!(out.text.lines().count() >= 2, "{}", out.text);
    }

    #[tokio::test]
    async fn system_processes_rejects_bad_arguments() {
        invalid(call("system_processes", json!({"limit": 0})).await, "between 1 and 100");
        invalid(
            call("system_processes", json!({"limit": 101})).await,
            "between 1 and 100",
        );
        invalid(
            call("system_processes", json!({"limit": -5})).await,
            "between 1 and 100",
        );
        invalid(call("system_processes", json!({"limit": "ten"})).await, "invalid type");
        invalid(
            call("system_processes", json!({"sort": "disk"})).await,
            "unknown variant",
        );
        invalid(
            call("system_processes", json!({"colour": "red"})).await,
            "unknown field",
        );
        invalid(call("system_status", json!({"verbose": true})).await, "unknown field");
        invalid(call("network_interfaces", json!({"name": 7})).await, "invalid type");
        call("system_processes", json!({"limit": 1})).await.unwrap();
        call("system_processes", json!({"limit": 100})).await.unwrap();
    }

    #[tokio::test]
    async fn network_interfaces_has_loopback() {
        let out = call("network_interfaces", json!({})).await.unwrap();
        let v = &out.structured;
        let all = v["interfaces"].as_array().unwrap();
        assert_eq!(v["count"].as_u64(), Some(all.len() as u64));
        let lo = all.iter().find(|i| i["name"] == "lo").expect("lo is listed");
        assert!(
            lo["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["address"] == "127.0.0.1" && a["prefix_len"] == 8),
            "{lo}"
        );
        assert!(lo["mtu"].as_u64().unwrap() > 0);
        assert_eq!(lo["admin_up"], json!(true));
        assert_eq!(lo["tailnet"], json!(false));
        assert!(lo["counters"].is_object(), "{lo}");
        assert!(out.text.contains("127.0.0.1/8"), "{}", out.text);

        let out = call("network_interfaces", json!({"name": "lo"})).await.unwrap();
        assert_eq!(out.structured["count"], json!(1));
        assert_eq!(out.structured["interfaces"][0]["name"], json!("lo"));

        match call("network_interfaces", json!({"name": "nope0"})).await {
            Err(ToolError::Failed(msg)) => assert!(
                msg.contains("no interface named `nope0`") && msg.contains("lo"),
                "{msg}"
            ),
            other => panic!("expected a failure, got {:?}", other.map(|o| o.text)),
        }
    }

    #[tokio::test]
    async fn system_sockets_finds_this_processs_listener_and_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        let client_port = client.local_addr().unwrap().port();
        let me = std::process::id();

        let out = call("system_sockets", json!({"port": port, "protocol": "tcp"}))
            .await
            .unwrap();
        let rows = out.structured["sockets"].as_array().unwrap().clone();
        let listen = rows
            .iter()
            .find(|r| r["state"] == "listen" && r["local_port"] == port)
            .unwrap_or_else(|| panic!("no listener on {port}: {rows:?}"));
        assert_eq!(listen["pid"], json!(me), "{listen}");
        assert_eq!(listen["local_address"], "127.0.0.1");
        assert_eq!(listen["uid"], json!(unsafe { libc::getuid() }));
        assert!(
            rows.iter().any(|r| r["state"] == "established"
                && r["local_port"] == client_port
                && r["remote_port"] == port
                && r["pid"] == json!(me)),
            "{rows:?}"
        );
        assert!(out.text.contains(&format!("127.0.0.1:{port}")), "{}", out.text);

        let out = call("system_sockets", json!({"state": "listening", "port": port}))
            .await
            .unwrap();
        assert_eq!(out.structured["matched"], 1, "{}", out.structured);
        let out = call("system_sockets", json!({"limit": 1})).await.unwrap();
        assert_eq!(out.structured["shown"], 1);
        if out.structured["matched"].as_u64().unwrap() > 1 {
            assert_eq!(out.structured["truncated"]["cap"], "limit=1");
        }
        invalid(
            call("system_sockets", json!({"limit": 1001})).await,
            "between 1 and 1000",
        );
        invalid(call("system_sockets", json!({"port": 70000})).await, "invalid value");
        invalid(
            call("system_sockets", json!({"state": "open"})).await,
            "unknown variant",
        );
    }

    #[tokio::test]
    async fn system_disks_lists_the_root_mount_with_sane_numbers() {
        let out = call("system_disks", json!({})).await.unwrap();
        let v = &out.structured;
        let root = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mount_point"] == "/")
            .unwrap_or_else(|| panic!("no / in {v}"));
        let u = &root["usage"];
        let total = u["total_bytes"].as_u64().unwrap();
        assert!(total > 0 && u["used_bytes"].as_u64().unwrap() <= total, "{u}");
        assert!(u["available_bytes"].as_u64().unwrap() <= total);
        assert!((0.0..=100.0).contains(&u["used_percent"].as_f64().unwrap()));
        assert!(!root["fs_type"].as_str().unwrap().is_empty());
        assert!(!v["mounts"].as_array().unwrap().iter().any(|m| m["fs_type"] == "proc"));
        let all = call("system_disks", json!({"all": true})).await.unwrap();
        assert!(
            all.structured["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["fs_type"] == "proc"),
            "all: true lists /proc"
        );
        invalid(call("system_disks", json!({"limit": 0})).await, "between 1 and 500");
    }

    #[test]
    fn renderers() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_duration(59), "0m");
        assert_eq!(human_duration(3_660), "1h 1m");
        assert_eq!(human_duration(90_061), "1d 1h 1m");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert!(validate_limit(20).is_ok());
    }
}
