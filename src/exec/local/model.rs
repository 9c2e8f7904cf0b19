//! What reading the local host returns (SSH hosts answer with the same types, through
//! [`crate::exec::remote`]).

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// Who the host is, without the CPU sample of [`system_status`].
#[derive(Debug, Clone)]
pub struct Identity {
    pub hostname: Option<String>,
    pub os: OsInfo,
    pub kernel: Option<String>,
    pub arch: String,
    pub virtualization: Virtualization,
}
