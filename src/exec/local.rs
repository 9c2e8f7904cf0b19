//! The local host, read directly: system status (OS, CPU, memory, disks, virtualization), the
//! process table and network interfaces, from `/proc`, `/sys`, `/etc` and `sysinfo`.
//!
//! Everything here only reads; nothing changes the host. Functions block (file reads,
//! `statvfs`, and a CPU sample may sleep up to `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`), so
//! async callers run them in `spawn_blocking`. This module knows nothing about callers, MCP,
//! policy or rendering. Parsers of file contents are pure functions, tested on samples below.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sysinfo::{
    DiskRefreshKind, Disks, MemoryRefreshKind, Networks, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System,
    ThreadKind, UpdateKind,
};

use super::show::{percent, round1};
use super::{lock, procfs};
// `local::truncate_chars` is what the inventory tools call it.
pub(crate) use super::show::cut as truncate_chars;
use crate::tailnet::is_tailnet_ip;

/// Longest command line returned per process, in characters (longer ones end with `…`).
pub const MAX_COMMAND_CHARS: usize = 512;

/// A snapshot of the host: identity, OS, load, CPU, memory, disks and virtualization.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SystemStatus {
    /// Host name (`uname -n`).
    pub hostname: Option<String>,
    pub os: OsInfo,
    /// Kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// CPU architecture (`uname -m`), e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// Seconds since boot.
    pub uptime_seconds: u64,
    /// Boot time, RFC 3339 UTC.
    pub boot_time: Option<String>,
    pub load_average: LoadAverage,
    pub cpu: CpuStatus,
    pub memory: MemoryStatus,
    pub swap: SwapStatus,
    /// Mounted storage file systems (pseudo file systems such as proc, sysfs, tmpfs and overlay
    /// are left out unless mounted at `/`; one row per device, at its shortest mount point).
    pub disks: Vec<DiskStatus>,
    pub virtualization: Virtualization,
}

/// The operating system, from `/etc/os-release` (or `/usr/lib/os-release`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct OsInfo {
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: Option<String>,
    /// `NAME`, e.g. `Debian GNU/Linux`.
    pub name: Option<String>,
    /// `VERSION_ID`, e.g. `12`.
    pub version: Option<String>,
    /// `ID`, e.g. `debian`.
    pub id: Option<String>,
}

/// Run-queue load averages over 1, 5 and 15 minutes.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CpuStatus {
    /// Logical CPUs visible to this host or container.
    pub count: usize,
    /// CPU model name, e.g. `AMD Ryzen 7 5700G with Radeon Graphics`.
    pub model: Option<String>,
    /// Busy share of all CPUs, 0–100, averaged over `sample_ms`.
    pub usage_percent: f64,
    /// Length of the window `usage_percent` covers, in milliseconds.
    pub sample_ms: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MemoryStatus {
    pub total_bytes: u64,
    /// `total_bytes - available_bytes`.
    pub used_bytes: u64,
    /// Memory available for new work without swapping (`MemAvailable`).
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SwapStatus {
    pub total_bytes: u64,
    pub used_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DiskStatus {
    pub mount_point: String,
    /// The mounted device or dataset, e.g. `/dev/sda1`, `rpool/data/subvol-101-disk-0`.
    pub device: String,
    /// File system type, e.g. `ext4`, `zfs`, `btrfs`.
    pub fs_type: String,
    pub total_bytes: u64,
    /// Space available to unprivileged users.
    pub available_bytes: u64,
    /// `(total - available) / total`, 0–100.
    pub used_percent: f64,
}

/// Whether this host is a container or a virtual machine, and which kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Virtualization {
    /// `none` (bare metal), a container kind (`lxc`, `docker`, `podman`, `systemd-nspawn`,
    /// `kubernetes`, ...) or a hypervisor (`kvm`, `qemu`, `vmware`, `hyperv`, `xen`,
    /// `virtualbox`, `vm` when the hypervisor is unknown, ...). A container wins over the VM it
    /// runs in.
    pub kind: String,
    /// Whether this is a container (sharing a kernel with its host).
    pub container: bool,
    /// The container's id when known: the 64-hex Docker/Podman id, or the Proxmox CT id
    /// (e.g. `101`).
    pub container_id: Option<String>,
    /// The hypervisor underneath, when detectable (also inside a container).
    pub hypervisor: Option<String>,
    /// The file that decided `kind`, e.g. `/run/systemd/container`.
    pub detected_from: Option<String>,
}

/// The order of the process list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProcessSort {
    /// Highest CPU usage first.
    #[default]
    Cpu,
    /// Largest resident memory first.
    Memory,
}

/// The top of the process table.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessList {
    /// Processes on the host (kernel threads included, userland threads not).
    pub total: usize,
    /// Rows returned.
    pub shown: usize,
    pub sort: ProcessSort,
    /// Logical CPUs: a process's `cpu_percent` can reach `100 × cpu_count`.
    pub cpu_count: usize,
    /// Length of the window `cpu_percent` covers, in milliseconds.
    pub cpu_sample_ms: u64,
    pub memory_total_bytes: u64,
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Real user id.
    pub uid: Option<u32>,
    /// User name from `/etc/passwd` (absent for users only known to NSS/LDAP).
    pub user: Option<String>,
    /// Process name (`comm`, at most 15 characters).
    pub name: String,
    /// Command line, arguments joined by spaces (at most 512 characters); `[name]` for kernel
    /// threads.
    pub command: String,
    /// `running`, `sleeping`, `disk-sleep`, `idle`, `stopped`, `zombie`, ...
    pub state: String,
    /// CPU used over `cpu_sample_ms`, in percent of one CPU (can exceed 100).
    pub cpu_percent: f64,
    /// Resident set size.
    pub memory_bytes: u64,
    /// `memory_bytes` as a share of total memory, 0–100.
    pub memory_percent: f64,
    /// Start time, RFC 3339 UTC.
    pub started_at: Option<String>,
    pub run_time_seconds: u64,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Interface {
    pub name: String,
    /// Kernel interface index (`ip link` order).
    pub index: Option<u32>,
    /// Hardware address, absent for interfaces without one (loopback, tun).
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// Operational state from `/sys/class/net/NAME/operstate`: `up`, `down`, `unknown`
    /// (normal for loopback and tun), `dormant`, `lowerlayerdown`, ...
    pub oper_state: Option<String>,
    /// Whether the interface is administratively up (`IFF_UP`).
    pub admin_up: Option<bool>,
    /// Whether any address is a tailnet address (100.64.0.0/10, fd7a:115c:a1e0::/48).
    pub tailnet: bool,
    pub addresses: Vec<InterfaceAddress>,
    /// Counters since the interface appeared, from `/proc/net/dev`.
    pub counters: Option<InterfaceCounters>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct InterfaceAddress {
    pub address: IpAddr,
    /// Prefix length (e.g. 8 for 127.0.0.1/8).
    pub prefix_len: u8,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Whether this is a tailnet address.
    pub tailnet: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct InterfaceCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A snapshot of the local host. The first call in a process sleeps about 200 ms to measure
/// CPU usage; later calls measure since the previous one (resampling when that is over a
/// minute old).
pub fn system_status() -> SystemStatus {
    let (cpu, memory, swap) = {
        let mut sampled = lock(&STATUS);
        let window = sampled.sample(System::refresh_cpu_usage);
        sampled.sys.refresh_memory();
        let sys = &sampled.sys;
        let cpu = CpuStatus {
            count: sys.cpus().len(),
            model: sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .filter(|b| !b.is_empty()),
            usage_percent: round1(f64::from(sys.global_cpu_usage())),
            sample_ms: millis(window),
        };
        let memory = MemoryStatus {
            total_bytes: sys.total_memory(),
            used_bytes: sys.total_memory().saturating_sub(sys.available_memory()),
            available_bytes: sys.available_memory(),
        };
        let swap = SwapStatus {
            total_bytes: sys.total_swap(),
            used_bytes: sys.used_swap(),
        };
        (cpu, memory, swap)
    };
    let os = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| parse_os_release(&s))
        .unwrap_or_default();
    let load = System::load_average();
    SystemStatus {
        hostname: System::host_name(),
        os,
        kernel: System::kernel_version(),
        arch: System::cpu_arch(),
        uptime_seconds: System::uptime(),
        boot_time: rfc3339(System::boot_time()),
        load_average: LoadAverage {
            one: load.one,
            five: load.five,
            fifteen: load.fifteen,
        },
        cpu,
        memory,
        swap,
        disks: disks(),
        virtualization: virtualization(),
    }
}

/// Who the host is, without the CPU sample of [`system_status`].
#[derive(Debug, Clone)]
pub struct Identity {
    pub hostname: Option<String>,
    pub os: OsInfo,
    pub kernel: Option<String>,
    pub arch: String,
    pub virtualization: Virtualization,
}

/// The local host's identity (blocking: reads a few files).
pub fn identity() -> Identity {
    Identity {
        hostname: System::host_name(),
        os: ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| fs::read_to_string(p).ok())
            .map(|s| parse_os_release(&s))
            .unwrap_or_default(),
        kernel: System::kernel_version(),
        arch: System::cpu_arch(),
        virtualization: virtualization(),
    }
}

/// The top `limit` processes by `sort` (the caller validates `limit`).
pub fn processes(sort: ProcessSort, limit: usize) -> ProcessList {
    let refresh = ProcessRefreshKind::nothing()
        .with_cpu()
        .with_memory()
        .with_user(UpdateKind::Always)
        .with_cmd(UpdateKind::Always);
    let mut sampled = lock(&PROCESSES);
    let window = sampled.sample(|sys| {
        sys.refresh_processes_specifics(ProcessesToUpdate::All, true, refresh);
    });
    sampled
        .sys
        .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    let sys = &sampled.sys;
    let memory_total = sys.total_memory();
    let mut user_names = lock(&USERS);
    let users = user_names.refreshed();
    let mut rows: Vec<ProcessInfo> = sys
        .processes()
        .values()
        .filter(|p| p.thread_kind() != Some(ThreadKind::Userland))
        .map(|p| {
            let uid = p.user_id().map(|u| **u);
            let name = p.name().to_string_lossy().into_owned();
            let args: Vec<String> = p.cmd().iter().map(|a| a.to_string_lossy().into_owned()).collect();
            let command = if args.is_empty() {
                format!("[{name}]")
            } else {
                // Secrets on command lines (`--password=…`, `PGPASSWORD=…`) by the server-wide rules.
                truncate_chars(&crate::secrets::redact_argv(&args).join(" "), MAX_COMMAND_CHARS)
            };
            ProcessInfo {
                pid: p.pid().as_u32(),
                ppid: p.parent().map(|pp| pp.as_u32()),
                uid,
                user: uid.and_then(|u| users.get(&u).cloned()),
                name,
                command,
                state: state_name(p.status()),
                cpu_percent: round1(f64::from(p.cpu_usage())),
                memory_bytes: p.memory(),
                memory_percent: percent(p.memory(), memory_total),
                started_at: rfc3339(p.start_time()),
                run_time_seconds: p.run_time(),
            }
        })
        .collect();
    let total = rows.len();
    sort_and_limit(&mut rows, sort, limit);
    ProcessList {
        total,
        shown: rows.len(),
        sort,
        cpu_count: sys.cpus().len(),
        cpu_sample_ms: millis(window),
        memory_total_bytes: memory_total,
        processes: rows,
    }
}

/// Every network interface, in kernel index order, with addresses and counters.
pub fn network_interfaces() -> Vec<Interface> {
    let networks = Networks::new_with_refreshed_list();
    let counters = fs::read_to_string("/proc/net/dev")
        .map(|s| parse_proc_net_dev(&s))
        .unwrap_or_default();
    let mut names: BTreeSet<String> = fs::read_dir(SYS_CLASS_NET)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.extend(networks.keys().cloned());
    names.extend(counters.keys().cloned());

    let mut interfaces: Vec<Interface> = names
        .into_iter()
        .map(|name| {
            let dir = Path::new(SYS_CLASS_NET).join(&name);
            let read = |file: &str| read_trimmed(&dir.join(file));
            let mut addresses: Vec<InterfaceAddress> = networks
                .get(&name)
                .map(|n| {
                    n.ip_networks()
                        .iter()
                        .map(|net| InterfaceAddress {
                            address: net.addr,
                            prefix_len: net.prefix,
                            family: if net.addr.is_ipv4() { "ipv4" } else { "ipv6" }.to_string(),
                            tailnet: is_tailnet_ip(net.addr),
                        })
                        .collect()
                })
                .unwrap_or_default();
            addresses.sort_by_key(|a| (a.address.is_ipv6(), a.address));
            addresses.dedup();
            Interface {
                index: read("ifindex").and_then(|s| s.parse().ok()),
                mac: read("address").and_then(|s| mac_address(&s)),
                mtu: read("mtu").and_then(|s| s.parse().ok()),
                oper_state: read("operstate"),
                admin_up: read("flags").and_then(|s| parse_admin_up(&s)),
                tailnet: addresses.iter().any(|a| a.tailnet),
                addresses,
                counters: counters.get(&name).cloned(),
                name,
            }
        })
        .collect();
    interfaces.sort_by(|a, b| (a.index.unwrap_or(u32::MAX), &a.name).cmp(&(b.index.unwrap_or(u32::MAX), &b.name)));
    interfaces
}

/// Sockets from `/proc/net/{tcp,tcp6,udp,udp6}` with their owning processes (found by scanning
/// `/proc/PID/fd` for `socket:[INODE]` links; other users' processes are unreadable unless root).
pub fn sockets(q: &procfs::SocketQuery) -> procfs::SocketList {
    let mut raw = Vec::new();
    for (path, protocol, v6) in procfs::SOCKET_TABLES {
        if q.protocol.is_some_and(|p| p != *protocol) {
            continue;
        }
        if let Ok(text) = fs::read_to_string(path) {
            raw.extend(procfs::parse_proc_net(&text, *protocol, *v6));
        }
    }
    let mut owners = HashMap::new();
    let mut names = HashMap::new();
    let mut unreadable = 0;
    for pid in proc_pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            unreadable += 1;
            continue;
        };
        let mut holds = false;
        for fd in fds.filter_map(Result::ok) {
            if let Some(inode) = fs::read_link(fd.path())
                .ok()
                .and_then(|l| procfs::socket_inode(&l.to_string_lossy()))
            {
                procfs::add_owner(&mut owners, inode, pid);
                holds = true;
            }
        }
        if holds && let Some(comm) = read_trimmed(Path::new(&format!("/proc/{pid}/comm"))) {
            names.insert(pid, comm);
        }
    }
    let users = lock(&USERS).refreshed().clone();
    procfs::assemble_sockets(raw, &owners, &names, &users, unreadable, q)
}

/// Block devices, mounts (with `statvfs` usage) and I/O counters. `all` keeps pseudo file
/// systems; `limit` caps each list.
pub fn disks_report(all: bool, limit: usize) -> procfs::DisksReport {
    let text = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let partitions = procfs::parse_partitions(&text("/proc/partitions"));
    let diskstats = procfs::parse_diskstats(&text("/proc/diskstats"));
    let mounts = procfs::parse_mountinfo(&text("/proc/self/mountinfo"));
    let files: HashMap<String, String> = procfs::block_attr_paths(&procfs::listed_devices(&partitions))
        .into_iter()
        .filter_map(|p| fs::read_to_string(&p).ok().map(|c| (p, c)))
        .collect();
    let usage: HashMap<String, procfs::MountUsage> = mounts
        .iter()
        .filter(|m| all || procfs::is_storage_mount(m))
        .filter_map(|m| statvfs_usage(&m.mount_point).map(|u| (m.mount_point.clone(), u)))
        .collect();
    procfs::assemble_disks(&partitions, &diskstats, &files, &mounts, &usage, all, limit)
}

/// Space and inodes of the file system at `path`; `None` when it cannot be queried or is empty.
fn statvfs_usage(path: &str) -> Option<procfs::MountUsage> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 || s.f_blocks == 0 {
        return None;
    }
    let frsize = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize } as u64;
    let (blocks, bfree, bavail) = (s.f_blocks as u64, s.f_bfree as u64, s.f_bavail as u64);
    let (files, ffree) = (s.f_files as u64, s.f_ffree as u64);
    Some(procfs::MountUsage::new(
        blocks * frsize,
        blocks.saturating_sub(bfree) * frsize,
        bavail * frsize,
        files,
        files.saturating_sub(ffree),
    ))
}

/// Every numeric entry of `/proc`.
pub(crate) fn proc_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Sampling state

/// A sample older than this is not a useful "current" CPU figure: take a fresh one instead.
const MAX_SAMPLE_AGE: Duration = Duration::from_secs(60);

const SYS_CLASS_NET: &str = "/sys/class/net";

/// A long-lived `System` plus when it was last refreshed, so CPU usage (a difference between
/// two refreshes) needs no sleep except on the first call or after a long pause.
struct Sampled {
    sys: System,
    last: Option<Instant>,
}

impl Sampled {
    fn new() -> Sampled {
        Sampled {
            sys: System::new(),
            last: None,
        }
    }

    /// Refresh with `refresh` so that the values cover at least
    /// `MINIMUM_CPU_UPDATE_INTERVAL`; returns the window they cover.
    fn sample(&mut self, refresh: impl Fn(&mut System)) -> Duration {
        let baseline = match self.last {
            Some(t) if t.elapsed() <= MAX_SAMPLE_AGE => t,
            _ => {
                refresh(&mut self.sys);
                Instant::now()
            }
        };
        let since = baseline.elapsed();
        if since < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL - since);
        }
        refresh(&mut self.sys);
        let now = Instant::now();
        self.last = Some(now);
        now.duration_since(baseline)
    }
}

// Two separate `System`s: sysinfo computes a process's CPU share against the global CPU
// times of the same `System`, so refreshing global CPU for `system_status` between two process
// refreshes would inflate every process's `cpu_percent`.
static STATUS: LazyLock<Mutex<Sampled>> = LazyLock::new(|| Mutex::new(Sampled::new()));
static PROCESSES: LazyLock<Mutex<Sampled>> = LazyLock::new(|| {
    // By default sysinfo keeps one `/proc/PID/stat` open per process (up to half the fd
    // limit); a long-running server needs those descriptors for its sockets.
    sysinfo::set_open_files_limit(0);
    Mutex::new(Sampled::new())
});
static USERS: LazyLock<Mutex<UserNames>> = LazyLock::new(|| Mutex::new(UserNames::default()));
static VIRTUALIZATION: OnceLock<Virtualization> = OnceLock::new();

/// uid → name from `/etc/passwd`, reloaded when the file's mtime changes.
#[derive(Default)]
struct UserNames {
    mtime: Option<SystemTime>,
    names: HashMap<u32, String>,
}

impl UserNames {
    fn refreshed(&mut self) -> &HashMap<u32, String> {
        const PASSWD: &str = "/etc/passwd";
        let mtime = fs::metadata(PASSWD).and_then(|m| m.modified()).ok();
        if mtime.is_none() || mtime != self.mtime {
            self.names = fs::read_to_string(PASSWD).map(|s| parse_passwd(&s)).unwrap_or_default();
            self.mtime = mtime;
        }
        &self.names
    }
}

// ---------------------------------------------------------------------------------------------
// Disks

/// One mount as listed, before filtering.
#[derive(Debug, Clone)]
pub(crate) struct RawDisk {
    pub(crate) device: String,
    pub(crate) mount_point: String,
    pub(crate) fs_type: String,
    pub(crate) total: u64,
    pub(crate) available: u64,
    /// Whether the mount point is a directory (Docker bind-mounts files such as `/etc/hosts`).
    pub(crate) is_dir: bool,
}

fn disks() -> Vec<DiskStatus> {
    let disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage());
    let raw = disks
        .list()
        .iter()
        .map(|d| RawDisk {
            device: d.name().to_string_lossy().into_owned(),
            mount_point: d.mount_point().to_string_lossy().into_owned(),
            fs_type: d.file_system().to_string_lossy().into_owned(),
            total: d.total_space(),
            available: d.available_space(),
            is_dir: d.mount_point().is_dir(),
        })
        .collect();
    select_disks(raw)
}

/// Drop pseudo file systems (except `/`), file bind mounts and empty mounts; keep one row per
/// device at its shortest mount point (as `df` does); sort by mount point.
pub(crate) fn select_disks(raw: Vec<RawDisk>) -> Vec<DiskStatus> {
    let mut by_device: HashMap<String, RawDisk> = HashMap::new();
    for d in raw {
        let root = d.mount_point == "/";
        if !root && (procfs::PSEUDO_FS.contains(&d.fs_type.as_str()) || !d.is_dir || d.total == 0) {
            continue;
        }
        let key = if root { String::new() } else { d.device.clone() };
        match by_device.get(&key) {
            Some(kept) if (kept.mount_point.len(), &kept.mount_point) <= (d.mount_point.len(), &d.mount_point) => {}
            _ => {
                by_device.insert(key, d);
            }
        }
    }
    // A device mounted at `/` is not listed again elsewhere.
    if let Some(root_device) = by_device.get("").map(|d| d.device.clone()) {
        by_device.remove(&root_device);
    }
    let mut out: Vec<DiskStatus> = by_device
        .into_values()
        .map(|d| DiskStatus {
            used_percent: percent(d.total.saturating_sub(d.available), d.total),
            mount_point: d.mount_point,
            device: d.device,
            fs_type: d.fs_type,
            total_bytes: d.total,
            available_bytes: d.available,
        })
        .collect();
    out.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    out
}

// ---------------------------------------------------------------------------------------------
// Virtualization

/// The contents of every file virtualization detection looks at (`None` when unreadable).
#[derive(Debug, Clone, Default)]
pub(crate) struct VirtInputs {
    /// `/run/systemd/container` (written by systemd inside a container).
    pub(crate) systemd_container: Option<String>,
    /// `/proc/1/environ`, NUL-separated (often unreadable without root).
    pub(crate) pid1_environ: Option<String>,
    /// `/.dockerenv` exists.
    pub(crate) dockerenv: bool,
    /// `/run/.containerenv` exists (Podman).
    pub(crate) containerenv: bool,
    /// `/proc/self/cgroup`.
    pub(crate) cgroup: Option<String>,
    /// `/proc/self/mountinfo`.
    pub(crate) mountinfo: Option<String>,
    /// `/sys/class/dmi/id/sys_vendor`.
    pub(crate) sys_vendor: Option<String>,
    /// `/sys/class/dmi/id/product_name`.
    pub(crate) product_name: Option<String>,
    /// `/proc/cpuinfo`.
    pub(crate) cpuinfo: Option<String>,
    /// `/sys/devices/system/clocksource/clocksource0/available_clocksource`.
    pub(crate) clocksource: Option<String>,
    /// `/sys/hypervisor/type` (Xen).
    pub(crate) hypervisor_type: Option<String>,
}

impl VirtInputs {
    fn read() -> VirtInputs {
        let text = |p: &str| fs::read(p).ok().map(|b| String::from_utf8_lossy(&b).into_owned());
        VirtInputs {
            systemd_container: text("/run/systemd/container"),
            pid1_environ: text("/proc/1/environ"),
            dockerenv: Path::new("/.dockerenv").exists(),
            containerenv: Path::new("/run/.containerenv").exists(),
            cgroup: text("/proc/self/cgroup"),
            mountinfo: text("/proc/self/mountinfo"),
            sys_vendor: text("/sys/class/dmi/id/sys_vendor"),
            product_name: text("/sys/class/dmi/id/product_name"),
            cpuinfo: text("/proc/cpuinfo"),
            clocksource: text("/sys/devices/system/clocksource/clocksource0/available_clocksource"),
            hypervisor_type: text("/sys/hypervisor/type"),
        }
    }
}

/// Detected once per process: it does not change while we run.
fn virtualization() -> Virtualization {
    VIRTUALIZATION
        .get_or_init(|| detect_virtualization(&VirtInputs::read()))
        .clone()
}

pub(crate) fn detect_virtualization(inputs: &VirtInputs) -> Virtualization {
    let vm = detect_vm(inputs);
    let hypervisor = vm.as_ref().map(|(kind, _)| kind.clone());
    if let Some((kind, from)) = detect_container(inputs) {
        let container_id = container_id(&kind, inputs);
        return Virtualization {
            kind,
            container: true,
            container_id,
            hypervisor,
            detected_from: Some(from.to_string()),
        };
    }
    match vm {
        Some((kind, from)) => Virtualization {
            kind,
            container: false,
            container_id: None,
            hypervisor,
            detected_from: Some(from.to_string()),
        },
        None => Virtualization {
            kind: "none".to_string(),
            container: false,
            container_id: None,
            hypervisor: None,
            detected_from: None,
        },
    }
}

/// The container kind and the file that told, strongest evidence first (the order
/// `systemd-detect-virt` uses, then cgroup and mount hints for hosts without systemd).
fn detect_container(i: &VirtInputs) -> Option<(String, &'static str)> {
    if let Some(v) = i.systemd_container.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        return Some((container_kind(v), "/run/systemd/container"));
    }
    if let Some(v) = i.pid1_environ.as_deref().and_then(environ_container) {
        return Some((container_kind(v), "/proc/1/environ"));
    }
    if i.containerenv {
        return Some(("podman".to_string(), "/run/.containerenv"));
    }
    if i.dockerenv {
        return Some(("docker".to_string(), "/.dockerenv"));
    }
    if let Some(kind) = i.cgroup.as_deref().and_then(cgroup_container_kind) {
        return Some((kind.to_string(), "/proc/self/cgroup"));
    }
    if let Some(m) = i.mountinfo.as_deref() {
        if runtime_id_from_mountinfo(m, "containers").is_some() {
            return Some(("docker".to_string(), "/proc/self/mountinfo"));
        }
        if runtime_id_from_mountinfo(m, "overlay-containers").is_some() {
            return Some(("podman".to_string(), "/proc/self/mountinfo"));
        }
        if proxmox_ct_id_from_mountinfo(m).is_some() {
            return Some(("lxc".to_string(), "/proc/self/mountinfo"));
        }
    }
    None
}

/// A `container=` value as a kind: lowercase, only `[a-z0-9._-]`, at most 32 characters.
fn container_kind(value: &str) -> String {
    let kind: String = value
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect();
    if kind.is_empty() { "container".to_string() } else { kind }
}

/// `container=VALUE` from a NUL-separated environment block.
fn environ_container(environ: &str) -> Option<&str> {
    environ
        .split('\0')
        .find_map(|kv| kv.strip_prefix("container="))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The cgroup paths of `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` per line).
fn cgroup_paths(cgroup: &str) -> impl Iterator<Item = &str> {
    cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2))
}

fn cgroup_container_kind(cgroup: &str) -> Option<&'static str> {
    for path in cgroup_paths(cgroup) {
        for seg in path.split('/') {
            if seg == "docker" || (seg.starts_with("docker-") && seg.ends_with(".scope")) {
                return Some("docker");
            }
            if seg.starts_with("libpod-") {
                return Some("podman");
            }
            if seg == "lxc" || seg.starts_with("lxc.payload") {
                return Some("lxc");
            }
            if seg.starts_with("kubepods") {
                return Some("kubernetes");
            }
        }
    }
    None
}

fn container_id(kind: &str, i: &VirtInputs) -> Option<String> {
    let mountinfo = i.mountinfo.as_deref().unwrap_or("");
    let cgroup = i.cgroup.as_deref().unwrap_or("");
    match kind {
        "docker" => runtime_id_from_mountinfo(mountinfo, "containers")
            .or_else(|| cgroup_runtime_id(cgroup, &["docker"], "docker-")),
        "podman" => runtime_id_from_mountinfo(mountinfo, "overlay-containers")
            .or_else(|| cgroup_runtime_id(cgroup, &[], "libpod-")),
        "lxc" | "lxc-libvirt" => proxmox_ct_id_from_mountinfo(mountinfo).or_else(|| lxc_id_from_cgroup(cgroup)),
        "kubernetes" => cgroup_runtime_id(cgroup, &[], "cri-containerd-").or_else(|| {
            cgroup_paths(cgroup)
                .flat_map(|p| p.split('/'))
                .find(|s| is_hex64(s))
                .map(str::to_string)
        }),
        _ => None,
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The 64-hex id in a cgroup path: a segment after one named in `parents`
/// (`/docker/<id>`), or `<prefix><id>.scope` (systemd cgroup driver).
fn cgroup_runtime_id(cgroup: &str, parents: &[&str], prefix: &str) -> Option<String> {
    for path in cgroup_paths(cgroup) {
        let segs: Vec<&str> = path.split('/').collect();
        for (n, seg) in segs.iter().enumerate() {
            if n > 0 && parents.contains(&segs[n - 1]) && is_hex64(seg) {
                return Some(seg.to_string());
            }
            if let Some(id) = seg.strip_prefix(prefix).map(|s| s.trim_end_matches(".scope"))
                && is_hex64(id)
            {
                return Some(id.to_string());
            }
        }
    }
    None
}

/// Container runtimes bind-mount these files from the container's own directory on the host.
const RUNTIME_FILE_MOUNTS: &[&str] = &["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

/// The 64-hex container id from the bind mount of `/etc/hostname` & co, whose root is
/// `.../<dir>/<id>/...` (Docker: `containers`, Podman: `overlay-containers`). Only those mount
/// points count: on a Docker *host*, `/var/lib/docker/containers/<id>/mounts/shm` is mounted too.
fn runtime_id_from_mountinfo(mountinfo: &str, dir: &str) -> Option<String> {
    procfs::parse_mountinfo(mountinfo)
        .into_iter()
        .filter(|m| RUNTIME_FILE_MOUNTS.contains(&m.mount_point.as_str()))
        .find_map(|m| {
            let segs: Vec<&str> = m.root.split('/').collect();
            segs.windows(2)
                .find(|w| w[0] == dir && is_hex64(w[1]))
                .map(|w| w[1].to_string())
        })
}

/// The Proxmox CT id from the root mount: LVM `/dev/mapper/pve-vm--101--disk--0`, ZFS
/// `rpool/data/subvol-101-disk-0`, or a btrfs root path `/images/101/subvol-101-disk-0.subvol`.
fn proxmox_ct_id_from_mountinfo(mountinfo: &str) -> Option<String> {
    // The last mount on `/` is the one in effect.
    let root = procfs::parse_mountinfo(mountinfo)
        .into_iter()
        .rfind(|m| m.mount_point == "/")?;
    proxmox_volume_ct_id(&root.source).or_else(|| proxmox_volume_ct_id(&root.root))
}

fn proxmox_volume_ct_id(volume: &str) -> Option<String> {
    let last = volume.rsplit('/').next()?;
    // device-mapper doubles the dashes inside VG and LV names.
    let name = last.replace("--", "-");
    for prefix in ["subvol-", "vm-", "basevol-", "base-"] {
        for (at, _) in name.match_indices(prefix) {
            if at > 0 && !name[..at].ends_with('-') {
                continue;
            }
            let rest = &name[at + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() && rest[digits.len()..].starts_with("-disk-") {
                return Some(digits);
            }
        }
    }
    None
}

/// `/lxc/<id>/...` or `/lxc.payload.<id>/...` in a cgroup path.
fn lxc_id_from_cgroup(cgroup: &str) -> Option<String> {
    for path in cgroup_paths(cgroup) {
        let segs: Vec<&str> = path.split('/').collect();
        for (n, seg) in segs.iter().enumerate() {
            let id = if *seg == "lxc" {
                segs.get(n + 1).copied()
            } else {
                seg.strip_prefix("lxc.payload.")
            };
            if let Some(id) =
                id.filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return Some(id.to_string());
            }
        }
    }
    None
}

/// The hypervisor and the file that told: DMI vendor/product first, then the `hypervisor`
/// CPU flag with the clock sources to name it.
fn detect_vm(i: &VirtInputs) -> Option<(String, &'static str)> {
    if i.hypervisor_type.as_deref().map(str::trim) == Some("xen") {
        return Some(("xen".to_string(), "/sys/hypervisor/type"));
    }
    let clocks: Vec<&str> = i.clocksource.as_deref().unwrap_or("").split_whitespace().collect();
    let kvm_clock = clocks.contains(&"kvm-clock");
    let flagged = i.cpuinfo.as_deref().is_some_and(cpuinfo_has_hypervisor_flag);
    let vendor = i.sys_vendor.as_deref().unwrap_or("").trim();
    let product = i.product_name.as_deref().unwrap_or("").trim();
    if let Some(kind) = dmi_vm_kind(vendor, product, kvm_clock, flagged) {
        return Some((kind.to_string(), "/sys/class/dmi/id"));
    }
    if flagged {
        let kind = if kvm_clock {
            "kvm"
        } else if clocks.iter().any(|c| c.starts_with("hyperv")) {
            "hyperv"
        } else if clocks.contains(&"xen") {
            "xen"
        } else {
            "vm"
        };
        return Some((kind.to_string(), "/proc/cpuinfo"));
    }
    None
}

fn dmi_vm_kind(vendor: &str, product: &str, kvm_clock: bool, flagged: bool) -> Option<&'static str> {
    let kind = match vendor {
        "QEMU" if kvm_clock => "kvm",
        "QEMU" => "qemu",
        "Xen" => "xen",
        "innotek GmbH" | "Oracle Corporation" if product == "VirtualBox" => "virtualbox",
        "Microsoft Corporation" if product == "Virtual Machine" => "hyperv",
        "Bochs" => "bochs",
        // EC2 bare-metal instances say Amazon too; only a flagged CPU is a VM.
        "Amazon EC2" if flagged => "amazon",
        "Google" if product == "Google Compute Engine" => "google",
        _ if vendor.starts_with("VMware") || product.starts_with("VMware") => "vmware",
        _ if vendor.starts_with("Parallels") => "parallels",
        _ if product == "KVM" || product.starts_with("KVM ") => "kvm",
        _ if product == "VirtualBox" => "virtualbox",
        _ => return None,
    };
    Some(kind)
}

/// Whether the first `flags` line of `/proc/cpuinfo` (x86) lists `hypervisor`.
fn cpuinfo_has_hypervisor_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "flags").then_some(value)
        })
        .is_some_and(|flags| flags.split_whitespace().any(|f| f == "hypervisor"))
}

// ---------------------------------------------------------------------------------------------
// Pure parsers and helpers

/// `/etc/os-release`: `KEY=value` lines, values optionally quoted with `"` or `'` and
/// backslash-escaped inside double quotes.
pub(crate) fn parse_os_release(text: &str) -> OsInfo {
    let mut vars: HashMap<&str, String> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        vars.insert(key.trim(), unquote_shell(raw.trim()));
    }
    let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
    let name = get("NAME");
    let version = get("VERSION_ID");
    let pretty_name = get("PRETTY_NAME").or_else(|| match (&name, get("VERSION").or(version.clone())) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (Some(n), None) => Some(n.clone()),
        _ => None,
    });
    OsInfo {
        pretty_name,
        name,
        version,
        id: get("ID"),
    }
}

fn unquote_shell(raw: &str) -> String {
    if let Some(inner) = raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return inner.to_string();
    }
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else {
                out.push(c);
            }
        }
        return out;
    }
    raw.to_string()
}

/// `/etc/passwd`: `name:x:uid:gid:gecos:home:shell`; the first entry for a uid wins.
pub(crate) fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let (false, Ok(uid)) = (name.is_empty(), uid.parse::<u32>()) {
            names.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    names
}

/// `/proc/net/dev`: two header lines, then `name: 8 rx fields 8 tx fields`.
fn parse_proc_net_dev(text: &str) -> HashMap<String, InterfaceCounters> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        let v: Vec<u64> = fields.split_whitespace().map_while(|f| f.parse().ok()).collect();
        if v.len() < 16 {
            continue;
        }
        out.insert(
            name.trim().to_string(),
            InterfaceCounters {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            },
        );
    }
    out
}

/// `/sys/class/net/NAME/flags` (`0x1003`) → whether `IFF_UP` is set.
fn parse_admin_up(flags: &str) -> Option<bool> {
    let hex = flags.trim().strip_prefix("0x")?;
    u32::from_str_radix(hex, 16).ok().map(|f| f & 0x1 != 0)
}

/// A hardware address, unless it is empty or all zeros.
fn mac_address(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    (!s.is_empty() && s.chars().any(|c| c.is_ascii_hexdigit() && c != '0')).then_some(s)
}

pub(crate) fn sort_and_limit(rows: &mut Vec<ProcessInfo>, sort: ProcessSort, limit: usize) {
    rows.sort_by(|a, b| {
        let by = match sort {
            ProcessSort::Cpu => b
                .cpu_percent
                .total_cmp(&a.cpu_percent)
                .then(b.memory_bytes.cmp(&a.memory_bytes)),
            ProcessSort::Memory => b
                .memory_bytes
                .cmp(&a.memory_bytes)
                .then(b.cpu_percent.total_cmp(&a.cpu_percent)),
        };
        by.then(a.pid.cmp(&b.pid))
    });
    rows.truncate(limit);
}

fn state_name(status: ProcessStatus) -> String {
    match status {
        ProcessStatus::Run => "running",
        ProcessStatus::Sleep => "sleeping",
        ProcessStatus::Idle => "idle",
        ProcessStatus::UninterruptibleDiskSleep => "disk-sleep",
        ProcessStatus::Zombie => "zombie",
        ProcessStatus::Stop => "stopped",
        ProcessStatus::Tracing => "tracing",
        ProcessStatus::Dead => "dead",
        ProcessStatus::Wakekill => "wakekill",
        ProcessStatus::Waking => "waking",
        ProcessStatus::Parked => "parked",
        _ => "unknown",
    }
    .to_string()
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// [`crate::when::rfc3339`] for the kernel's unsigned times, where 0 means "unknown".
pub(crate) fn rfc3339(unix_seconds: u64) -> Option<String> {
    i64::try_from(unix_seconds)
        .ok()
        .filter(|s| *s > 0)
        .and_then(crate::when::rfc3339)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_ID: &str = "3f1c8e0a9b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";
    const BARE_METAL_CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 7 5700G with Radeon Graphics\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr svm\n";
    const VM_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Common KVM processor\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc rep_good nopl xtopology cpuid tsc_known_freq pni cx16 x2apic hypervisor lahf_lm\n";

    fn check(
        name: &str,
        inputs: VirtInputs,
        kind: &str,
        container: bool,
        id: Option<&str>,
        hypervisor: Option<&str>,
        from: Option<&str>,
    ) {
        let got = detect_virtualization(&inputs);
        let want = Virtualization {
            kind: kind.to_string(),
            container,
            container_id: id.map(str::to_string),
            hypervisor: hypervisor.map(str::to_string),
            detected_from: from.map(str::to_string),
        };
        assert_eq!(got, want, "{name}");
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    fn bare_metal_host() -> VirtInputs {
        VirtInputs {
            cgroup: s("0::/system.slice/tailopsmcp.service\n"),
            mountinfo: s(
                "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro\n\
                          23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n\
                          24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw\n\
                          25 22 259:1 / /boot/efi rw,relatime shared:29 - vfat /dev/nvme0n1p1 rw,fmask=0077\n",
            ),
            sys_vendor: s("Micro-Star International Co., Ltd.\n"),
            product_name: s("MS-7C02\n"),
            cpuinfo: s(BARE_METAL_CPUINFO),
            clocksource: s("tsc hpet acpi_pm \n"),
            ..VirtInputs::default()
        }
    }

    fn proxmox_kvm_guest() -> VirtInputs {
        VirtInputs {
            cgroup: s("0::/system.slice/tailopsmcp.service\n"),
            mountinfo: s("25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"),
            sys_vendor: s("QEMU\n"),
            product_name: s("Standard PC (i440FX + PIIX, 1996)\n"),
            cpuinfo: s(VM_CPUINFO),
            clocksource: s("kvm-clock tsc hpet acpi_pm \n"),
            ..VirtInputs::default()
        }
    }

    #[test]
    fn lxc_on_proxmox_lvm_thin() {
        let inputs = VirtInputs {
            systemd_container: s("lxc\n"),
            pid1_environ: s("container=lxc\0PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin\0"),
            cgroup: s("0::/system.slice/tailopsmcp.service\n"),
            mountinfo: s(
                "1046 1045 253:7 / / rw,relatime master:1 - ext4 /dev/mapper/pve-vm--101--disk--0 rw,stripe=16\n\
                          1047 1046 0:81 / /dev rw,relatime - tmpfs none rw,size=492k,mode=755,uid=100000,gid=100000,inode64\n\
                          1048 1046 0:85 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n\
                          1067 1048 0:48 /proc/cpuinfo /proc/cpuinfo rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other\n\
                          1080 1046 0:86 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw\n",
            ),
            sys_vendor: s("Dell Inc.\n"),
            product_name: s("PowerEdge R730\n"),
            cpuinfo: s(BARE_METAL_CPUINFO),
            clocksource: s("tsc hpet acpi_pm \n"),
            ..VirtInputs::default()
        };
        check(
            "lxc lvm",
            inputs,
            "lxc",
            true,
            Some("101"),
            None,
            Some("/run/systemd/container"),
        );
    }

    #[test]
    fn lxc_on_proxmox_zfs_without_systemd() {
        // Alpine CT: no /run/systemd/container, /proc/1/environ unreadable as non-root.
        let inputs = VirtInputs {
            cgroup: s("0::/\n"),
            mountinfo: s(
                "870 869 0:60 / / rw,relatime - zfs rpool/data/subvol-105-disk-0 rw,xattr,posixacl,casesensitive\n\
                          871 870 0:65 / /dev rw,relatime - tmpfs none rw,size=492k,mode=755\n",
            ),
            cpuinfo: s(BARE_METAL_CPUINFO),
            ..VirtInputs::default()
        };
        check(
            "lxc zfs",
            inputs,
            "lxc",
            true,
            Some("105"),
            None,
            Some("/proc/self/mountinfo"),
        );
    }

    #[test]
    fn lxc_id_from_cgroup_when_root_mount_says_nothing() {
        let inputs = VirtInputs {
            systemd_container: s("lxc"),
            cgroup: s("12:pids:/lxc/203/system.slice\n0::/lxc/203/system.slice/tailopsmcp.service\n"),
            mountinfo: s("100 99 7:0 / / rw,relatime - ext4 /dev/loop0 rw\n"),
            ..VirtInputs::default()
        };
        check(
            "lxc cgroup",
            inputs,
            "lxc",
            true,
            Some("203"),
            None,
            Some("/run/systemd/container"),
        );
        assert_eq!(lxc_id_from_cgroup("0::/lxc.payload.118/init.scope\n"), s("118"));
    }

    #[test]
    fn proxmox_volume_names() {
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/pve-vm--101--disk--0"), s("101"));
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/my--vg-vm--2000--disk--1"), s("2000"));
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/myvm--store-vm--7--disk--0"), s("7"));
        assert_eq!(proxmox_volume_ct_id("rpool/data/subvol-105-disk-0"), s("105"));
        assert_eq!(proxmox_volume_ct_id("/images/110/subvol-110-disk-0.subvol"), s("110"));
        assert_eq!(proxmox_volume_ct_id("tank/base-9000-disk-0"), s("9000"));
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/pve-root"), None);
        assert_eq!(proxmox_volume_ct_id("rpool/ROOT/pve-1"), None);
        assert_eq!(proxmox_volume_ct_id("/dev/sda1"), None);
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/vg-myvm--data"), None);
    }

    #[test]
    fn docker_in_a_kvm_vm() {
        let mountinfo = format!(
            "714 657 0:167 / / rw,relatime master:312 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/9a8b/diff,workdir=/var/lib/docker/overlay2/9a8b/work\n\
             715 714 0:170 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n\
             716 714 0:171 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755,inode64\n\
             733 714 254:1 /var/lib/docker/containers/{DOCKER_ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw,discard,errors=remount-ro\n\
             734 714 254:1 /var/lib/docker/containers/{DOCKER_ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw,discard,errors=remount-ro\n\
             735 714 254:1 /var/lib/docker/containers/{DOCKER_ID}/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw,discard,errors=remount-ro\n"
        );
        let inputs = VirtInputs {
            dockerenv: true,
            cgroup: s("0::/\n"),
            mountinfo: Some(mountinfo),
            ..proxmox_kvm_guest()
        };
        check(
            "docker",
            inputs,
            "docker",
            true,
            Some(DOCKER_ID),
            Some("kvm"),
            Some("/.dockerenv"),
        );
    }

    #[test]
    fn docker_from_cgroup_v1_only() {
        let cgroup = format!("12:memory:/docker/{DOCKER_ID}\n11:cpu,cpuacct:/docker/{DOCKER_ID}\n0::/\n");
        let inputs = VirtInputs {
            cgroup: Some(cgroup),
            ..VirtInputs::default()
        };
        check(
            "docker cgroup v1",
            inputs,
            "docker",
            true,
            Some(DOCKER_ID),
            None,
            Some("/proc/self/cgroup"),
        );
        let systemd_driver = format!("0::/system.slice/docker-{DOCKER_ID}.scope\n");
        assert_eq!(cgroup_runtime_id(&systemd_driver, &["docker"], "docker-"), s(DOCKER_ID));
    }

    #[test]
    fn podman_rootless() {
        let mountinfo = format!(
            "600 550 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/home/u/.local/share/containers/storage/overlay/l/X\n\
             610 600 0:45 /home/u/.local/share/containers/storage/overlay-containers/{DOCKER_ID}/userdata/hostname /etc/hostname rw,nosuid,nodev,relatime - tmpfs tmpfs rw\n"
        );
        let inputs = VirtInputs {
            containerenv: true,
            mountinfo: Some(mountinfo),
            ..VirtInputs::default()
        };
        check(
            "podman",
            inputs,
            "podman",
            true,
            Some(DOCKER_ID),
            None,
            Some("/run/.containerenv"),
        );
    }

    #[test]
    fn container_kind_from_pid1_environ_and_nspawn() {
        let inputs = VirtInputs {
            pid1_environ: s("PATH=/usr/bin\0container=podman\0HOME=/root\0"),
            ..VirtInputs::default()
        };
        check("environ", inputs, "podman", true, None, None, Some("/proc/1/environ"));
        let inputs = VirtInputs {
            systemd_container: s("systemd-nspawn\n"),
            ..bare_metal_host()
        };
        check(
            "nspawn",
            inputs,
            "systemd-nspawn",
            true,
            None,
            None,
            Some("/run/systemd/container"),
        );
        assert_eq!(container_kind(" LXC-libvirt\n"), "lxc-libvirt");
        assert_eq!(container_kind("$(rm -rf)"), "rm-rf");
        assert_eq!(container_kind("!!"), "container");
    }

    #[test]
    fn kubernetes_pod() {
        let cgroup = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod4f1c.slice/cri-containerd-{DOCKER_ID}.scope\n"
        );
        let inputs = VirtInputs {
            cgroup: Some(cgroup),
            ..VirtInputs::default()
        };
        check(
            "k8s",
            inputs,
            "kubernetes",
            true,
            Some(DOCKER_ID),
            None,
            Some("/proc/self/cgroup"),
        );
    }

    #[test]
    fn kvm_guest_on_proxmox() {
        check(
            "kvm",
            proxmox_kvm_guest(),
            "kvm",
            false,
            None,
            Some("kvm"),
            Some("/sys/class/dmi/id"),
        );
        let tcg = VirtInputs {
            clocksource: s("tsc hpet acpi_pm\n"),
            ..proxmox_kvm_guest()
        };
        check(
            "qemu tcg",
            tcg,
            "qemu",
            false,
            None,
            Some("qemu"),
            Some("/sys/class/dmi/id"),
        );
    }

    #[test]
    fn other_hypervisors() {
        let vmware = VirtInputs {
            sys_vendor: s("VMware, Inc.\n"),
            product_name: s("VMware Virtual Platform\n"),
            clocksource: s("tsc hpet acpi_pm\n"),
            ..proxmox_kvm_guest()
        };
        check(
            "vmware",
            vmware,
            "vmware",
            false,
            None,
            Some("vmware"),
            Some("/sys/class/dmi/id"),
        );
        let hyperv = VirtInputs {
            sys_vendor: s("Microsoft Corporation\n"),
            product_name: s("Virtual Machine\n"),
            clocksource: s("hyperv_clocksource_tsc_page acpi_pm\n"),
            ..proxmox_kvm_guest()
        };
        check(
            "hyperv",
            hyperv,
            "hyperv",
            false,
            None,
            Some("hyperv"),
            Some("/sys/class/dmi/id"),
        );
        let xen = VirtInputs {
            hypervisor_type: s("xen\n"),
            sys_vendor: None,
            product_name: None,
            clocksource: s("xen tsc\n"),
            ..proxmox_kvm_guest()
        };
        check(
            "xen",
            xen,
            "xen",
            false,
            None,
            Some("xen"),
            Some("/sys/hypervisor/type"),
        );
        // Firecracker: no DMI at all, only the CPU flag and kvm-clock.
        let firecracker = VirtInputs {
            sys_vendor: None,
            product_name: None,
            ..proxmox_kvm_guest()
        };
        check(
            "firecracker",
            firecracker,
            "kvm",
            false,
            None,
            Some("kvm"),
            Some("/proc/cpuinfo"),
        );
        let unknown = VirtInputs {
            sys_vendor: None,
            product_name: None,
            clocksource: s("tsc\n"),
            ..proxmox_kvm_guest()
        };
        check("unknown", unknown, "vm", false, None, Some("vm"), Some("/proc/cpuinfo"));
        let ec2_metal = VirtInputs {
            sys_vendor: s("Amazon EC2\n"),
            product_name: s("m5.metal\n"),
            ..bare_metal_host()
        };
        check("ec2 metal", ec2_metal, "none", false, None, None, None);
    }

    #[test]
    fn bare_metal_and_docker_host() {
        check("bare metal", bare_metal_host(), "none", false, None, None, None);
        // A Docker host mounts each container's shm under /var/lib/docker/containers/<id>/.
        let mut host = bare_metal_host();
        if let Some(m) = host.mountinfo.as_mut() {
            m.push_str(&format!(
                "300 22 0:55 / /var/lib/docker/containers/{DOCKER_ID}/mounts/shm rw,nosuid,nodev,noexec,relatime shared:150 - tmpfs shm rw,size=65536k\n\
                 301 22 0:56 / /var/lib/docker/overlay2/9a8b/merged rw,relatime shared:151 - overlay overlay rw,lowerdir=/x\n"
            ));
        }
        host.cgroup = s("0::/system.slice/docker.service\n");
        check("docker host", host, "none", false, None, None, None);
        // A Proxmox host: its CTs' monitor cgroups are not a container kind for the host itself.
        let proxmox_host = VirtInputs {
            mountinfo: s("25 1 253:1 / / rw,relatime shared:1 - ext4 /dev/mapper/pve-root rw,errors=remount-ro\n"),
            cgroup: s("0::/lxc.monitor.101/\n"),
            ..bare_metal_host()
        };
        check("proxmox host", proxmox_host, "none", false, None, None, None);
    }

    #[test]
    fn cpuinfo_flag() {
        assert!(cpuinfo_has_hypervisor_flag(VM_CPUINFO));
        assert!(!cpuinfo_has_hypervisor_flag(BARE_METAL_CPUINFO));
        assert!(!cpuinfo_has_hypervisor_flag(
            "processor : 0\nFeatures : fp asimd evtstrm\n"
        ));
    }

    #[test]
    fn os_release() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n";
        assert_eq!(
            parse_os_release(debian),
            OsInfo {
                pretty_name: s("Debian GNU/Linux 12 (bookworm)"),
                name: s("Debian GNU/Linux"),
                version: s("12"),
                id: s("debian"),
            }
        );
        let alpine = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n";
        assert_eq!(parse_os_release(alpine).pretty_name, s("Alpine Linux v3.20"));
        assert_eq!(parse_os_release(alpine).version, s("3.20.3"));
        let minimal = "# comment\n\nNAME='My OS'\nVERSION=\"1.0 \\\"beta\\\"\"\nnot a pair\nID=myos\n";
        let got = parse_os_release(minimal);
        assert_eq!(got.pretty_name, s("My OS 1.0 \"beta\""));
        assert_eq!(got.version, None);
        assert_eq!(parse_os_release(""), OsInfo::default());
    }

    #[test]
    fn passwd() {
        let text = "root:x:0:0:root:/root:/bin/bash\n# comment\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                    broken\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\ntoor:x:0:0::/root:/bin/sh\n\
                    +nis::::::\nbad:x:notanumber:0::/:/bin/sh\n";
        let names = parse_passwd(text);
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&1).map(String::as_str), Some("daemon"));
        assert_eq!(names.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn proc_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0\n  \
                    eth0: 43562630    1753    2    5    0     0          0         0   112733    1013    1    3    0     0       0          0\n\
                    tailscale0:12345678901 10 0 0 0 0 0 0 42 1 0 0 0 0 0 0\n  \
                    bad: 1 2 3\n";
        let c = parse_proc_net_dev(text);
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.get("eth0"),
            Some(&InterfaceCounters {
                rx_bytes: 43562630,
                rx_packets: 1753,
                rx_errors: 2,
                rx_dropped: 5,
                tx_bytes: 112733,
                tx_packets: 1013,
                tx_errors: 1,
                tx_dropped: 3,
            })
        );
        assert_eq!(c.get("lo").map(|c| c.rx_bytes), Some(3193));
        assert_eq!(
            c.get("tailscale0").map(|c| (c.rx_bytes, c.tx_bytes)),
            Some((12345678901, 42))
        );
    }

    #[test]
    fn interface_files() {
        assert_eq!(parse_admin_up("0x1003\n"), Some(true));
        assert_eq!(parse_admin_up("0x1002"), Some(false));
        assert_eq!(parse_admin_up("garbage"), None);
        assert_eq!(mac_address("00:00:00:00:00:00\n"), None);
        assert_eq!(mac_address(""), None);
        assert_eq!(mac_address("BC:24:11:AA:00:01\n"), s("bc:24:11:aa:00:01"));
    }

    fn raw(device: &str, mount_point: &str, fs_type: &str, is_dir: bool) -> RawDisk {
        RawDisk {
            device: device.to_string(),
            mount_point: mount_point.to_string(),
            fs_type: fs_type.to_string(),
            total: 1000,
            available: 250,
            is_dir,
        }
    }

    #[test]
    fn disk_selection() {
        let got = select_disks(vec![
            raw("overlay", "/", "overlay", true),
            raw("/dev/vda1", "/etc/hosts", "ext4", false),
            raw("tmpfs", "/dev/shm", "tmpfs", true),
            raw("/dev/sdb1", "/srv/data/nested", "xfs", true),
            raw("/dev/sdb1", "/srv/data", "xfs", true),
            raw("rpool/data", "/rpool/data", "zfs", true),
            RawDisk {
                total: 0,
                ..raw("/dev/sdc", "/mnt/empty", "ext4", true)
            },
        ]);
        let mounts: Vec<(&str, &str)> = got
            .iter()
            .map(|d| (d.mount_point.as_str(), d.device.as_str()))
            .collect();
        assert_eq!(
            mounts,
            vec![
                ("/", "overlay"),
                ("/rpool/data", "rpool/data"),
                ("/srv/data", "/dev/sdb1")
            ]
        );
        assert_eq!(got[0].used_percent, 75.0);
        // btrfs subvolumes of the root device are not listed twice.
        let got = select_disks(vec![
            raw("/dev/sda2", "/home", "btrfs", true),
            raw("/dev/sda2", "/", "btrfs", true),
        ]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].mount_point, "/");
    }

    fn row(pid: u32, cpu: f64, mem: u64) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: None,
            uid: None,
            user: None,
            name: String::new(),
            command: String::new(),
            state: "sleeping".to_string(),
            cpu_percent: cpu,
            memory_bytes: mem,
            memory_percent: 0.0,
            started_at: None,
            run_time_seconds: 0,
        }
    }

    #[test]
    fn process_ordering() {
        let rows = vec![row(5, 1.0, 10), row(3, 50.0, 5), row(4, 1.0, 10), row(2, 0.0, 99)];
        let mut by_cpu = rows.clone();
        sort_and_limit(&mut by_cpu, ProcessSort::Cpu, 3);
        assert_eq!(by_cpu.iter().map(|r| r.pid).collect::<Vec<_>>(), vec![3, 4, 5]);
        let mut by_mem = rows;
        sort_and_limit(&mut by_mem, ProcessSort::Memory, 10);
        assert_eq!(by_mem.iter().map(|r| r.pid).collect::<Vec<_>>(), vec![2, 4, 5, 3]);
    }

    #[test]
    fn small_helpers() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcdé", 4), "abc…");
        assert_eq!(
            truncate_chars(&"x".repeat(600), MAX_COMMAND_CHARS).chars().count(),
            MAX_COMMAND_CHARS
        );
        assert_eq!(rfc3339(0), None);
        assert_eq!(rfc3339(1_700_000_000).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(round1(f64::NAN), 0.0);
        assert_eq!(state_name(ProcessStatus::UninterruptibleDiskSleep), "disk-sleep");
    }

    #[test]
    fn process_listing_keeps_no_proc_files_open() {
        processes(ProcessSort::Memory, 5);
        processes(ProcessSort::Cpu, 5);
        let held: Vec<String> = fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| p.starts_with("/proc/") && p.ends_with("/stat"))
            .collect();
        assert!(held.is_empty(), "{held:?}");
    }

    #[test]
    fn sampler_measures_a_window_of_at_least_the_minimum() {
        let mut sampled = Sampled::new();
        let first = sampled.sample(System::refresh_cpu_usage);
        assert!(first >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL, "{first:?}");
        let second = sampled.sample(System::refresh_cpu_usage);
        assert!(second >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL, "{second:?}");
        assert!(!sampled.sys.cpus().is_empty());
    }
}
