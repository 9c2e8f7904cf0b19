//! The system facts of a host reached only by running commands on it (an SSH target): the same
//! typed results as [`super::local`], gathered from standard commands run as argument vectors
//! (`grep -H '' FILES…`, `uname -m`, `df -PT -B1`, `ps`, `ip -j`) and parsed here.
//!
//! It works over any [`Runner`]; the local process runner gives the tests a real host to compare
//! against `exec::local`. Parsers are pure and table-tested; nothing here builds a shell string.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::Deserialize;

use super::local::{
    self, CpuStatus, Interface, InterfaceAddress, InterfaceCounters, LoadAverage, MemoryStatus, ProcessInfo,
    ProcessList, ProcessSort, RawDisk, SwapStatus, SystemStatus, VirtInputs,
};
use super::show::{cut, percent, round1};
use super::{CommandSpec, ExecError, Limits, Output, procfs};
use crate::tailnet::is_tailnet_ip;

/// Something that runs a command vector on a host.
pub trait Runner: Send + Sync {
    fn run<'a>(&'a self, cmd: &'a CommandSpec) -> BoxFuture<'a, Result<Output, ExecError>>;
}

/// Runs commands on this host (for tests and for comparing with `exec::local`).
pub struct LocalRunner(pub Limits);

impl Runner for LocalRunner {
    fn run<'a>(&'a self, cmd: &'a CommandSpec) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(super::process::run(cmd, self.0))
    }
}

/// Files read for the status, in one `grep -H '' …` (missing or unreadable ones are skipped).
const STATUS_FILES: &[&str] = &[
    "/proc/sys/kernel/hostname",
    "/proc/sys/kernel/osrelease",
    "/etc/os-release",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/stat",
    "/proc/self/cgroup",
    "/proc/self/mountinfo",
    "/run/systemd/container",
    "/sys/class/dmi/id/sys_vendor",
    "/sys/class/dmi/id/product_name",
    "/sys/devices/system/clocksource/clocksource0/available_clocksource",
    "/sys/hypervisor/type",
];

/// How far apart the two `/proc/stat` samples for CPU usage are.
const CPU_SAMPLE: Duration = Duration::from_millis(200);

/// `system_status` of a host reached through `r`.
pub async fn system_status(r: &dyn Runner) -> Result<SystemStatus, ExecError> {
    let grep = CommandSpec::new(
        "grep",
        std::iter::once("-H")
            .chain(std::iter::once(""))
            .chain(STATUS_FILES.iter().copied()),
    );
    let arch = CommandSpec::new("uname", ["-m"]);
    let df = CommandSpec::new("df", ["-PT", "-B1"]);
    let markers = CommandSpec::new("ls", ["-d", "/.dockerenv", "/run/.containerenv"]);
    let (files, arch, df, markers) = futures::join!(r.run(&grep), r.run(&arch), r.run(&df), r.run(&markers));
    let files = parse_grep_h(&stdout_of(files?, "grep")?);
    let second = {
        tokio::time::sleep(CPU_SAMPLE).await;
        let stat = CommandSpec::new("grep", ["-H", "", "/proc/stat"]);
        parse_grep_h(&stdout_of(r.run(&stat).await?, "grep")?)
    };
    let file = |p: &str| files.get(p).map(String::as_str);

    let uptime = file("/proc/uptime")
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let load: Vec<f64> = file("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    let meminfo = parse_meminfo(file("/proc/meminfo").unwrap_or(""));
    let kib = |k: &str| meminfo.get(k).copied().unwrap_or(0) * 1024;
    let cpuinfo = file("/proc/cpuinfo").unwrap_or("");
    let usage = match (
        file("/proc/stat").and_then(cpu_times),
        second.get("/proc/stat").and_then(|t| cpu_times(t)),
    ) {
        (Some(a), Some(b)) => cpu_usage(a, b),
        _ => 0.0,
    };
    let mut marker_files = markers.map(|o| o.stdout).unwrap_or_default();
    marker_files.push('\n');
    let virt = VirtInputs {
        systemd_container: file("/run/systemd/container").map(str::to_string),
        pid1_environ: None,
        dockerenv: marker_files.lines().any(|l| l.trim() == "/.dockerenv"),
        containerenv: marker_files.lines().any(|l| l.trim() == "/run/.containerenv"),
        cgroup: file("/proc/self/cgroup").map(str::to_string),
        mountinfo: file("/proc/self/mountinfo").map(str::to_string),
        sys_vendor: file("/sys/class/dmi/id/sys_vendor").map(str::to_string),
        product_name: file("/sys/class/dmi/id/product_name").map(str::to_string),
        cpuinfo: Some(cpuinfo.to_string()),
        clocksource: file("/sys/devices/system/clocksource/clocksource0/available_clocksource").map(str::to_string),
        hypervisor_type: file("/sys/hypervisor/type").map(str::to_string),
    };
    Ok(SystemStatus {
        hostname: file("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()),
        os: local::parse_os_release(file("/etc/os-release").unwrap_or("")),
        kernel: file("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()),
        arch: stdout_of(arch?, "uname")?.trim().to_string(),
        uptime_seconds: uptime as u64,
        boot_time: local::rfc3339(now.saturating_sub(uptime as u64)),
        load_average: LoadAverage {
            one: load.first().copied().unwrap_or(0.0),
            five: load.get(1).copied().unwrap_or(0.0),
            fifteen: load.get(2).copied().unwrap_or(0.0),
        },
        cpu: CpuStatus {
            count: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
            model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string()),
            usage_percent: round1(usage),
            sample_ms: CPU_SAMPLE.as_millis() as u64,
        },
        memory: MemoryStatus {
            total_bytes: kib("MemTotal"),
            used_bytes: kib("MemTotal").saturating_sub(kib("MemAvailable")),
            available_bytes: kib("MemAvailable"),
        },
        swap: SwapStatus {
            total_bytes: kib("SwapTotal"),
            used_bytes: kib("SwapTotal").saturating_sub(kib("SwapFree")),
        },
        disks: local::select_disks(parse_df(&stdout_of(df?, "df")?)),
        virtualization: local::detect_virtualization(&virt),
    })
}

/// `system_processes` of a host reached through `r`. CPU percent is `ps`'s (average over each
/// process's lifetime), not a fresh sample.
pub async fn processes(r: &dyn Runner, sort: ProcessSort, limit: usize) -> Result<ProcessList, ExecError> {
    let rows = CommandSpec::new("ps", ["-eo", "pid=,ppid=,uid=,stat=,pcpu=,rss=,etimes=,args="]);
    let names = CommandSpec::new("ps", ["-eo", "pid=,comm="]);
    let info = CommandSpec::new("grep", ["-H", "", "/etc/passwd", "/proc/meminfo", "/proc/cpuinfo"]);
    let (rows, names, info) = futures::join!(r.run(&rows), r.run(&names), r.run(&info));
    let files = parse_grep_h(&stdout_of(info?, "grep")?);
    let users = local::parse_passwd(files.get("/etc/passwd").map(String::as_str).unwrap_or(""));
    let mem_total = parse_meminfo(files.get("/proc/meminfo").map(String::as_str).unwrap_or(""))
        .get("MemTotal")
        .copied()
        .unwrap_or(0)
        * 1024;
    let cpu_count = files
        .get("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let names = parse_ps_names(&stdout_of(names?, "ps")?);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut all = parse_ps(&stdout_of(rows?, "ps")?, &names, &users, mem_total, now);
    let total = all.len();
    local::sort_and_limit(&mut all, sort, limit);
    Ok(ProcessList {
        total,
        shown: all.len(),
        sort,
        cpu_count,
        cpu_sample_ms: 0,
        memory_total_bytes: mem_total,
        processes: all,
    })
}

/// `network_interfaces` of a host reached through `r` (from `ip -j -s addr show`).
pub async fn network_interfaces(r: &dyn Runner) -> Result<Vec<Interface>, ExecError> {
    let ip = CommandSpec::new("ip", ["-j", "-s", "addr", "show"]);
    let out = stdout_of(r.run(&ip).await?, "ip")?;
    parse_ip_json(&out).map_err(|e| ExecError::Failed(format!("cannot read `ip -j -s addr show` output: {e}")))
}

/// `system_sockets` of a host reached through `r`: the same `/proc/net` tables and
/// `/proc/PID/fd` links as [`local::sockets`], read with `grep` and `find`, parsed by the same
/// code ([`procfs`]).
pub async fn sockets(r: &dyn Runner, q: &procfs::SocketQuery) -> Result<procfs::SocketList, ExecError> {
    let mut files: Vec<&str> = procfs::SOCKET_TABLES
        .iter()
        .filter(|(_, p, _)| q.protocol.is_none_or(|want| want == *p))
        .map(|(path, _, _)| *path)
        .collect();
    files.push("/etc/passwd");
    let grep = CommandSpec::new("grep", ["-H", ""].into_iter().chain(files.iter().copied()));
    let find = CommandSpec::new(
        "find",
        [
            "/proc",
            "-mindepth",
            "3",
            "-maxdepth",
            "3",
            "-path",
            "/proc/[0-9]*/fd/*",
            "-lname",
            "socket:*",
            "-printf",
            "%p %l\\n",
        ],
    );
    let names = CommandSpec::new("ps", ["-eo", "pid=,comm="]);
    let (tables, links, names) = futures::join!(r.run(&grep), r.run(&find), r.run(&names));
    let tables = parse_grep_h(&stdout_of(tables?, "grep")?);
    let links = links?;
    if links.timed_out {
        return Err(ExecError::Failed("`find` timed out on the target".into()));
    }
    // find exits 1 when some of /proc was unreadable; what it printed is still good.
    let unreadable = unreadable_fd_dirs(&links.stderr);
    let owners = procfs::parse_fd_links(&links.stdout);
    let names = parse_ps_names(&stdout_of(names?, "ps")?);
    let mut raw = Vec::new();
    for (path, protocol, v6) in procfs::SOCKET_TABLES {
        if let Some(text) = tables.get(*path) {
            raw.extend(procfs::parse_proc_net(text, *protocol, *v6));
        }
    }
    let users = local::parse_passwd(tables.get("/etc/passwd").map(String::as_str).unwrap_or(""));
    Ok(procfs::assemble_sockets(raw, &owners, &names, &users, unreadable, q))
}

/// Distinct pids whose `/proc/PID/fd` `find` could not read.
fn unreadable_fd_dirs(stderr: &str) -> usize {
    let pids: std::collections::HashSet<&str> = stderr
        .lines()
        .filter(|l| l.contains("Permission denied"))
        .filter_map(|l| {
            let rest = &l[l.find("/proc/")? + 6..];
            let (pid, tail) = rest.split_once('/')?;
            (tail.starts_with("fd") && pid.bytes().all(|b| b.is_ascii_digit())).then_some(pid)
        })
        .collect();
    pids.len()
}

/// `system_disks` of a host reached through `r`: `/proc/partitions`, `/proc/diskstats`,
/// mountinfo and `/sys/class/block/NAME/*` read with `grep`, usage from `df`, assembled by the
/// same code as [`local::disks_report`].
pub async fn disks_report(r: &dyn Runner, all: bool, limit: usize) -> Result<procfs::DisksReport, ExecError> {
    let grep = CommandSpec::new(
        "grep",
        ["-H", "", "/proc/partitions", "/proc/diskstats", "/proc/self/mountinfo"],
    );
    let df = CommandSpec::new("df", ["-a", "-B1", "--output=size,used,avail,itotal,iused,target"]);
    let (files, df) = futures::join!(r.run(&grep), r.run(&df));
    let files = parse_grep_h(&stdout_of(files?, "grep")?);
    let file = |p: &str| files.get(p).map(String::as_str).unwrap_or("");
    let partitions = procfs::parse_partitions(file("/proc/partitions"));
    let diskstats = procfs::parse_diskstats(file("/proc/diskstats"));
    let mounts = procfs::parse_mountinfo(file("/proc/self/mountinfo"));
    let paths = procfs::block_attr_paths(&procfs::listed_devices(&partitions));
    let attrs = if paths.is_empty() {
        HashMap::new()
    } else {
        let grep = CommandSpec::new("grep", ["-H".to_string(), String::new()].into_iter().chain(paths));
        let out = r.run(&grep).await?;
        // Exit 2: some attribute files do not exist (partitions have no queue/, loops no model).
        parse_grep_h(&out.stdout)
    };
    let df = df?;
    if df.timed_out {
        return Err(ExecError::Failed("`df` timed out on the target".into()));
    }
    // df exits 1 when some file system could not be queried; the others are still listed.
    let usage = match df.status {
        Some(0 | 1) => procfs::parse_df_usage(&df.stdout),
        _ => stdout_of(df, "df").map(|s| procfs::parse_df_usage(&s))?,
    };
    Ok(procfs::assemble_disks(
        &partitions,
        &diskstats,
        &attrs,
        &mounts,
        &usage,
        all,
        limit,
    ))
}

/// The stdout of a command that must have succeeded (or, for `grep -H` over optional files and
/// `ls` of optional markers, produced output).
fn stdout_of(out: Output, what: &str) -> Result<String, ExecError> {
    if out.timed_out {
        return Err(ExecError::Failed(format!("`{what}` timed out on the target")));
    }
    match out.status {
        Some(0) => Ok(out.stdout),
        // grep: 2 = some files were missing; what it read is still good.
        Some(2) if what == "grep" && !out.stdout.is_empty() => Ok(out.stdout),
        Some(127) => Err(ExecError::Failed(format!("`{what}` is not installed on the target"))),
        status => Err(ExecError::Failed(format!(
            "`{what}` failed on the target ({}): {}",
            status.map(|s| format!("exit {s}")).unwrap_or_else(|| "killed".into()),
            out.stderr.lines().next().unwrap_or("").trim()
        ))),
    }
}

/// `grep -H '' FILES…` output → file contents by path.
fn parse_grep_h(text: &str) -> HashMap<String, String> {
    let mut files: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        // Paths here never contain ':'; the content may.
        if let Some((path, rest)) = line.split_once(':') {
            let entry = files.entry(path.to_string()).or_default();
            entry.push_str(rest);
            entry.push('\n');
        }
    }
    files
}

/// `/proc/meminfo` → values in kB by key.
fn parse_meminfo(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The aggregate `cpu` line of `/proc/stat` → (busy, total) jiffies.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest counted in user already)
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

fn cpu_usage(a: (u64, u64), b: (u64, u64)) -> f64 {
    let busy = b.0.saturating_sub(a.0) as f64;
    let total = b.1.saturating_sub(a.1) as f64;
    if total <= 0.0 {
        0.0
    } else {
        (busy / total * 100.0).clamp(0.0, 100.0)
    }
}

/// Mount points Docker bind-mounts as files into containers; `df` lists them like file systems.
const FILE_MOUNTS: &[&str] = &["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// `df -PT -B1` → raw disks (the mount point is the rest of the line: it may hold spaces).
fn parse_df(text: &str) -> Vec<RawDisk> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 7 {
                return None;
            }
            let mount_point = f[6..].join(" ");
            Some(RawDisk {
                device: f[0].to_string(),
                fs_type: f[1].to_string(),
                total: f[2].parse().ok()?,
                available: f[4].parse().ok()?,
                is_dir: !FILE_MOUNTS.contains(&mount_point.as_str()),
                mount_point,
            })
        })
        .collect()
}

/// `ps -eo pid=,comm=` → name by pid (names may contain spaces).
fn parse_ps_names(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (pid, name) = l.split_once(char::is_whitespace)?;
            Some((pid.parse().ok()?, name.trim().to_string()))
        })
        .collect()
}

/// `ps -eo pid=,ppid=,uid=,stat=,pcpu=,rss=,etimes=,args=` → processes (args last: it may hold
/// spaces).
fn parse_ps(
    text: &str,
    names: &HashMap<u32, String>,
    users: &HashMap<u32, String>,
    mem_total: u64,
    now: u64,
) -> Vec<ProcessInfo> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let pid: u32 = it.next()?.parse().ok()?;
            let ppid: Option<u32> = it.next()?.parse().ok().filter(|p| *p != 0);
            let uid: Option<u32> = it.next()?.parse().ok();
            let stat = it.next()?.to_string();
            let pcpu: f64 = it.next()?.parse().ok()?;
            let rss_kib: u64 = it.next()?.parse().ok()?;
            let etimes: u64 = it.next()?.parse().ok()?;
            let args = it.collect::<Vec<_>>().join(" ");
            let name = names
                .get(&pid)
                .cloned()
                .unwrap_or_else(|| args.split(' ').next().unwrap_or("").to_string());
            let memory_bytes = rss_kib * 1024;
            Some(ProcessInfo {
                pid,
                ppid,
                uid,
                user: uid.and_then(|u| users.get(&u).cloned()),
                command: cut(&crate::secrets::redact_command_line(&args), local::MAX_COMMAND_CHARS),
                name,
                state: state_name(&stat),
                cpu_percent: round1(pcpu),
                memory_bytes,
                memory_percent: percent(memory_bytes, mem_total),
                started_at: local::rfc3339(now.saturating_sub(etimes)),
                run_time_seconds: etimes,
            })
        })
        .collect()
}

/// `ps` STAT's first letter → the state names `exec::local` uses.
fn state_name(stat: &str) -> String {
    match stat.chars().next() {
        Some('R') => "running",
        Some('S') => "sleeping",
        Some('D') => "disk sleep",
        Some('Z') => "zombie",
        Some('T') => "stopped",
        Some('t') => "tracing",
        Some('X') => "dead",
        Some('I') => "idle",
        _ => "unknown",
    }
    .to_string()
}

#[derive(Deserialize)]
struct IpLink {
    ifindex: Option<u32>,
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    mtu: Option<u32>,
    operstate: Option<String>,
    address: Option<String>,
    link_type: Option<String>,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
    stats64: Option<IpStats>,
}

#[derive(Deserialize)]
struct IpAddrInfo {
    local: Option<std::net::IpAddr>,
    prefixlen: Option<u8>,
}

#[derive(Deserialize)]
struct IpStats {
    rx: IpCounters,
    tx: IpCounters,
}

#[derive(Deserialize)]
struct IpCounters {
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    packets: u64,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    dropped: u64,
}

/// `ip -j -s addr show` → interfaces in kernel index order.
fn parse_ip_json(text: &str) -> Result<Vec<Interface>, serde_json::Error> {
    let links: Vec<IpLink> = serde_json::from_str(text)?;
    let mut out: Vec<Interface> = links
        .into_iter()
        .map(|l| {
            let mut addresses: Vec<InterfaceAddress> = l
                .addr_info
                .iter()
                .filter_map(|a| {
                    let address = a.local?;
                    Some(InterfaceAddress {
                        address,
                        prefix_len: a.prefixlen?,
                        family: if address.is_ipv4() { "ipv4" } else { "ipv6" }.to_string(),
                        tailnet: is_tailnet_ip(address),
                    })
                })
                .collect();
            addresses.sort_by_key(|a| (a.address.is_ipv6(), a.address));
            addresses.dedup();
            let mac = l
                .address
                .filter(|_| l.link_type.as_deref() != Some("none"))
                .filter(|m| m.len() == 17 && m.contains(':'));
            Interface {
                name: l.ifname,
                index: l.ifindex,
                mac,
                mtu: l.mtu,
                oper_state: l.operstate.map(|s| s.to_ascii_lowercase()),
                admin_up: Some(l.flags.iter().any(|f| f == "UP")),
                tailnet: addresses.iter().any(|a| a.tailnet),
                addresses,
                counters: l.stats64.map(|s| InterfaceCounters {
                    rx_bytes: s.rx.bytes,
                    rx_packets: s.rx.packets,
                    rx_errors: s.rx.errors,
                    rx_dropped: s.rx.dropped,
                    tx_bytes: s.tx.bytes,
                    tx_packets: s.tx.packets,
                    tx_errors: s.tx.errors,
                    tx_dropped: s.tx.dropped,
                }),
            }
        })
        .collect();
    out.sort_by(|a, b| (a.index.unwrap_or(u32::MAX), &a.name).cmp(&(b.index.unwrap_or(u32::MAX), &b.name)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> LocalRunner {
        LocalRunner(Limits {
            timeout: Duration::from_secs(10),
            max_output: 4 << 20,
        })
    }

    #[test]
    fn grep_h_output_splits_by_file_keeping_colons_in_content() {
        let files = parse_grep_h("/a:x: 1\n/a:y\n/b:k=v:w\n");
        assert_eq!(files["/a"], "x: 1\ny\n");
        assert_eq!(files["/b"], "k=v:w\n");
    }

    #[test]
    fn cpu_usage_from_two_samples() {
        let a = cpu_times("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = cpu_times("cpu  150 0 150 900 0 0 0 0 0 0\n").unwrap();
        assert_eq!(a, (200, 1000));
        assert_eq!(cpu_usage(a, b), 50.0);
        assert_eq!(cpu_usage(a, a), 0.0);
    }

    #[test]
    fn df_lines_with_spaces_in_mount_points() {
        let d = parse_df(
            "Filesystem Type 1-blocks Used Available Capacity Mounted on\n/dev/sda1 ext4 1000 400 600 40% /\n/dev/sdb1 xfs 2000 0 2000 0% /mnt/my disk\n/dev/vda ext4 10 1 9 10% /etc/hosts\n",
        );
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].mount_point, "/mnt/my disk");
        assert!(!d[2].is_dir, "file bind mounts are marked");
    }

    #[test]
    fn ps_rows_keep_args_with_spaces() {
        let names = parse_ps_names("  1 systemd\n 42 Web Content\n");
        assert_eq!(names[&42], "Web Content");
        let users: HashMap<u32, String> = [(0, "root".to_string())].into();
        let rows = parse_ps(
            "  42     1     0 Sl   12.5  2048   100 /usr/bin/x --flag 'a b'\n",
            &names,
            &users,
            8 << 20,
            1000,
        );
        assert_eq!(rows.len(), 1);
        let p = &rows[0];
        assert_eq!((p.pid, p.ppid, p.uid), (42, Some(1), Some(0)));
        assert_eq!(p.user.as_deref(), Some("root"));
        assert_eq!(p.name, "Web Content");
        assert_eq!(p.command, "/usr/bin/x --flag 'a b'");
        assert_eq!(p.state, "sleeping");
        assert_eq!(p.memory_bytes, 2048 * 1024);
        assert_eq!(p.run_time_seconds, 100);
    }

    #[test]
    fn ip_json_gives_addresses_counters_and_flags() {
        let j = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,"operstate":"UNKNOWN","link_type":"loopback","address":"00:00:00:00:00:00",
            "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},{"family":"inet6","local":"::1","prefixlen":128}],
            "stats64":{"rx":{"bytes":5,"packets":1,"errors":0,"dropped":0},"tx":{"bytes":6,"packets":2,"errors":0,"dropped":0}}},
            {"ifindex":3,"ifname":"tailscale0","flags":["POINTOPOINT","UP"],"mtu":1280,"operstate":"UNKNOWN","link_type":"none",
            "addr_info":[{"family":"inet","local":"100.100.1.1","prefixlen":32}]}]"#;
        let i = parse_ip_json(j).unwrap();
        assert_eq!(i[0].name, "lo");
        assert_eq!(i[0].counters.as_ref().unwrap().tx_packets, 2);
        assert_eq!(i[0].addresses.len(), 2);
        assert!(i[1].tailnet);
        assert_eq!(i[1].mac, None);
        assert_eq!(i[1].admin_up, Some(true));
    }

    /// Over a real command runner on this host, the results agree with `exec::local`.
    #[tokio::test]
    async fn agrees_with_the_local_executor_on_this_host() {
        let r = runner();
        let remote = system_status(&r).await.unwrap();
        let local = tokio::task::spawn_blocking(local::system_status).await.unwrap();
        assert_eq!(remote.memory.total_bytes, local.memory.total_bytes);
        assert_eq!(remote.kernel, local.kernel);
        assert_eq!(remote.arch, local.arch);
        assert_eq!(remote.os, local.os);
        assert_eq!(remote.cpu.count, local.cpu.count);
        assert_eq!(remote.virtualization.kind, local.virtualization.kind);
        assert!(remote.disks.iter().any(|d| d.mount_point == "/"), "{:?}", remote.disks);
        assert!(remote.uptime_seconds > 0 && remote.load_average.one >= 0.0);

        let procs = processes(&r, ProcessSort::Memory, 100).await.unwrap();
        assert!(procs.total >= procs.shown && procs.shown > 0);
        let me = std::process::id();
        let all = processes(&r, ProcessSort::Cpu, 100_000).await.unwrap();
        assert!(all.processes.iter().any(|p| p.pid == me), "the test process is listed");
        assert!(
            procs
                .processes
                .windows(2)
                .all(|w| w[0].memory_bytes >= w[1].memory_bytes)
        );

        let ifs = network_interfaces(&r).await.unwrap();
        let lo = ifs.iter().find(|i| i.name == "lo").expect("lo");
        assert!(
            lo.addresses
                .iter()
                .any(|a| a.address.to_string() == "127.0.0.1" && a.prefix_len == 8)
        );
        let local_ifs = tokio::task::spawn_blocking(local::network_interfaces).await.unwrap();
        let names = |v: &[Interface]| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&ifs), names(&local_ifs));
    }

    /// Sockets and disks over the command runner agree with `exec::local` on this host.
    #[tokio::test]
    async fn sockets_and_disks_agree_with_the_local_executor() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let q = procfs::SocketQuery {
            state: procfs::StateFilter::Listening,
            port: Some(port),
            protocol: None,
            limit: 10,
        };
        let r = runner();
        let remote = sockets(&r, &q).await.unwrap();
        let here = tokio::task::spawn_blocking(move || local::sockets(&q)).await.unwrap();
        assert_eq!(remote.matched, 1, "{remote:?}");
        assert_eq!(remote.sockets, here.sockets);
        assert_eq!(remote.sockets[0].pid, Some(std::process::id()));

        let remote = disks_report(&r, false, 100).await.unwrap();
        let here = tokio::task::spawn_blocking(|| local::disks_report(false, 100))
            .await
            .unwrap();
        let points = |d: &procfs::DisksReport| d.mounts.iter().map(|m| m.mount_point.clone()).collect::<Vec<_>>();
        assert_eq!(points(&remote), points(&here));
        let names = |d: &procfs::DisksReport| d.devices.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&remote), names(&here));
        let root = |d: &procfs::DisksReport| d.mounts.iter().find(|m| m.mount_point == "/").cloned().unwrap();
        let (a, b) = (root(&remote), root(&here));
        assert_eq!((a.fs_type, a.options, a.dev), (b.fs_type, b.options, b.dev));
        assert_eq!(
            a.usage.unwrap().total_bytes,
            b.usage.unwrap().total_bytes,
            "df and statvfs agree"
        );
    }

    #[tokio::test]
    async fn a_missing_command_is_a_clear_error() {
        struct Missing;
        impl Runner for Missing {
            fn run<'a>(&'a self, _cmd: &'a CommandSpec) -> BoxFuture<'a, Result<Output, ExecError>> {
                Box::pin(async {
                    Ok(Output {
                        stdout: String::new(),
                        stderr: "sh: 1: ip: not found".into(),
                        status: Some(127),
                        truncated_bytes: 0,
                        timed_out: false,
                        duration_ms: 1.0,
                    })
                })
            }
        }
        let e = network_interfaces(&Missing).await.unwrap_err().to_string();
        assert_eq!(e, "`ip` is not installed on the target");
    }
}
