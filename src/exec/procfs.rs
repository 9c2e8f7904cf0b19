//! Sockets and storage of a Linux host, from the kernel's own tables: `/proc/net/{tcp,tcp6,udp,
//! udp6}`, the socket inodes under `/proc/PID/fd`, `/proc/partitions`, `/proc/diskstats`,
//! `/sys/class/block/NAME/*` and `/proc/self/mountinfo`.
//!
//! This module owns the typed results and the pure parsers and assembly shared by
//! [`super::local`] (which reads the files directly) and [`super::remote`] (which reads the same
//! files through commands over SSH): one code path turns file contents into results, so a local
//! and an SSH host answer alike. Nothing here does IO; everything is table-tested below.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Sockets

/// The socket tables read, with their protocol and address family.
pub const SOCKET_TABLES: &[(&str, Protocol, bool)] = &[
    ("/proc/net/tcp", Protocol::Tcp, false),
    ("/proc/net/tcp6", Protocol::Tcp, true),
    ("/proc/net/udp", Protocol::Udp, false),
    ("/proc/net/udp6", Protocol::Udp, true),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Which sockets `system_sockets` returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    /// Every socket.
    #[default]
    All,
    /// TCP sockets in `listen` and bound UDP sockets without a peer (`unconnected`).
    Listening,
    /// Connections: TCP `established` and connected UDP sockets.
    Established,
    /// TCP `time_wait`.
    TimeWait,
    /// TCP `close_wait` (the peer closed; the local program has not).
    CloseWait,
}

/// What to return.
#[derive(Debug, Clone, Copy)]
pub struct SocketQuery {
    pub state: StateFilter,
    /// Only sockets whose local or remote port is this.
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub limit: usize,
}

/// One socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SocketInfo {
    pub protocol: Protocol,
    /// `ipv4` or `ipv6` (the table it came from: an IPv6 socket may carry `::ffff:a.b.c.d`).
    pub family: String,
    /// TCP: `listen`, `established`, `syn_sent`, `syn_recv`, `fin_wait1`, `fin_wait2`,
    /// `time_wait`, `close`, `close_wait`, `last_ack`, `closing`, `new_syn_recv`.
    /// UDP: `unconnected` (bound, no peer) or `established` (connected).
    pub state: String,
    pub local_address: IpAddr,
    pub local_port: u16,
    /// `0.0.0.0`/`::` with port 0 for listeners and unconnected UDP sockets.
    pub remote_address: IpAddr,
    pub remote_port: u16,
    /// The socket owner's uid.
    pub uid: u32,
    /// User name of `uid`, from `/etc/passwd`.
    pub user: Option<String>,
    /// Socket inode (what `/proc/PID/fd/N -> socket:[INODE]` points at).
    pub inode: u64,
    /// The process holding the socket, when its `/proc/PID/fd` was readable (absent for
    /// `time_wait` sockets, which no process holds, and for other users' processes when the
    /// server is not root).
    pub pid: Option<u32>,
    /// That process's name (`comm`).
    pub process: Option<String>,
}

/// Sockets after filtering and the cap.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SocketList {
    /// Sockets matching the filters (before `limit`).
    pub matched: usize,
    /// Rows returned.
    pub shown: usize,
    /// Processes whose open files could not be read (another user's, when not root): sockets
    /// they hold show no `pid`.
    pub processes_unreadable: usize,
    pub sockets: Vec<SocketInfo>,
}

/// A row of a `/proc/net` socket table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSocket {
    pub protocol: Protocol,
    pub v6: bool,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub state: u8,
    pub uid: u32,
    pub inode: u64,
}

/// `/proc/net/{tcp,udp}[6]`: a header line, then `sl local rem st tx:rx tr:when retrnsmt uid
/// timeout inode ...` with addresses as `HEX:PORT` (the address in the kernel's memory order).
pub fn parse_proc_net(text: &str, protocol: Protocol, v6: bool) -> Vec<RawSocket> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !f[0].ends_with(':') {
                return None;
            }
            Some(RawSocket {
                protocol,
                v6,
                local: parse_endpoint(f[1], v6)?,
                remote: parse_endpoint(f[2], v6)?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                uid: f[7].parse().ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` → 127.0.0.1:8080. Each 32-bit word is printed as the host reads it, so the
/// bytes come back with the host's own byte order (little-endian on x86 and ARM).
fn parse_endpoint(s: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&addr[i * 8..i * 8 + 8])?);
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        if addr.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(addr)?))
    };
    Some((ip, port))
}

/// `socket:[12345]` (the target of a `/proc/PID/fd/N` link) → 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// `find /proc -path '/proc/[0-9]*/fd/*' -lname 'socket:*' -printf '%p %l\n'` output →
/// socket inode → pid (the lowest pid when several share a socket).
pub fn parse_fd_links(text: &str) -> HashMap<u64, u32> {
    let mut owners = HashMap::new();
    for line in text.lines() {
        let Some((path, link)) = line.split_once(' ') else {
            continue;
        };
        let pid = path
            .strip_prefix("/proc/")
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let (Some(pid), Some(inode)) = (pid, socket_inode(link.trim())) {
            add_owner(&mut owners, inode, pid);
        }
    }
    owners
}

/// Record `pid` as holding `inode`, keeping the lowest pid (the parent of forked workers).
pub fn add_owner(owners: &mut HashMap<u64, u32>, inode: u64, pid: u32) {
    owners.entry(inode).and_modify(|p| *p = (*p).min(pid)).or_insert(pid);
}

fn state_name(protocol: Protocol, state: u8) -> &'static str {
    match (protocol, state) {
        (Protocol::Udp, 0x01) => "established",
        (Protocol::Udp, 0x07) => "unconnected",
        (Protocol::Udp, _) => "unknown",
        (Protocol::Tcp, s) => match s {
            0x01 => "established",
            0x02 => "syn_sent",
            0x03 => "syn_recv",
            0x04 => "fin_wait1",
            0x05 => "fin_wait2",
            0x06 => "time_wait",
            0x07 => "close",
            0x08 => "close_wait",
            0x09 => "last_ack",
            0x0A => "listen",
            0x0B => "closing",
            0x0C => "new_syn_recv",
            _ => "unknown",
        },
    }
}

fn matches_state(filter: StateFilter, state: &str) -> bool {
    match filter {
        StateFilter::All => true,
        StateFilter::Listening => state == "listen" || state == "unconnected",
        StateFilter::Established => state == "established",
        StateFilter::TimeWait => state == "time_wait",
        StateFilter::CloseWait => state == "close_wait",
    }
}

/// Filter, join owners and names, sort (listeners first, then by protocol, port and address) and
/// cap.
pub fn assemble_sockets(
    raw: Vec<RawSocket>,
    owners: &HashMap<u64, u32>,
    names: &HashMap<u32, String>,
    users: &HashMap<u32, String>,
    processes_unreadable: usize,
    q: &SocketQuery,
) -> SocketList {
    let mut rows: Vec<SocketInfo> = raw
        .into_iter()
        .filter(|s| q.protocol.is_none_or(|p| p == s.protocol))
        .filter(|s| q.port.is_none_or(|p| s.local.1 == p || s.remote.1 == p))
        .map(|s| {
            let pid = (s.inode != 0).then(|| owners.get(&s.inode).copied()).flatten();
            SocketInfo {
                protocol: s.protocol,
                family: if s.v6 { "ipv6" } else { "ipv4" }.to_string(),
                state: state_name(s.protocol, s.state).to_string(),
                local_address: s.local.0,
                local_port: s.local.1,
                remote_address: s.remote.0,
                remote_port: s.remote.1,
                uid: s.uid,
                user: users.get(&s.uid).cloned(),
                inode: s.inode,
                process: pid.and_then(|p| names.get(&p).cloned()),
                pid,
            }
        })
        .filter(|s| matches_state(q.state, &s.state))
        .collect();
    let rank = |s: &SocketInfo| match s.state.as_str() {
        "listen" | "unconnected" => 0,
        "established" => 1,
        _ => 2,
    };
    rows.sort_by(|a, b| {
        (
            rank(a),
            a.protocol,
            a.local_port,
            a.local_address,
            a.remote_address,
            a.remote_port,
        )
            .cmp(&(
                rank(b),
                b.protocol,
                b.local_port,
                b.local_address,
                b.remote_address,
                b.remote_port,
            ))
    });
    let matched = rows.len();
    rows.truncate(q.limit);
    SocketList {
        matched,
        shown: rows.len(),
        processes_unreadable,
        sockets: rows,
    }
}

// ---------------------------------------------------------------------------------------------
// Disks and mounts

/// The per-device files read under `/sys/class/block/NAME/`.
pub const BLOCK_ATTRS: &[&str] = &["partition", "ro", "removable", "queue/rotational", "device/model"];

/// Block devices, mounts with usage, and I/O counters.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DisksReport {
    /// Block devices with a size (empty loop devices and RAM disks are left out).
    pub devices_total: usize,
    pub devices: Vec<BlockDevice>,
    /// Mounts listed (pseudo file systems only with `all: true`).
    pub mounts_total: usize,
    pub mounts: Vec<MountInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BlockDevice {
    /// Kernel name, e.g. `sda`, `sda1`, `nvme0n1p2`, `dm-0`, `vda`.
    pub name: String,
    /// `major:minor`.
    pub dev: String,
    /// `disk` or `partition`.
    pub kind: String,
    pub size_bytes: u64,
    pub read_only: Option<bool>,
    pub removable: Option<bool>,
    /// Spinning disk (`queue/rotational`); absent for partitions.
    pub rotational: Option<bool>,
    /// `device/model`, when the driver reports one.
    pub model: Option<String>,
    /// Where it is mounted (first mount point, in mount order), if anywhere.
    pub mount_point: Option<String>,
    /// Cumulative counters since boot from `/proc/diskstats`.
    pub io: Option<DiskIo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DiskIo {
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    /// I/Os in flight now.
    pub in_progress: u64,
    /// Milliseconds spent doing I/O.
    pub io_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct MountInfo {
    pub mount_point: String,
    /// What is mounted: a device path, a dataset, a remote share, or the fs name for pseudo fs.
    pub source: String,
    pub fs_type: String,
    /// Per-mount options then file-system options, e.g. `rw,relatime,errors=remount-ro`.
    pub options: String,
    pub read_only: bool,
    /// `major:minor` of the mounted file system.
    pub dev: String,
    /// The block device (`/proc/partitions` name) behind it, when it is one.
    pub device: Option<String>,
    /// Space and inodes (absent when the file system could not be queried).
    pub usage: Option<MountUsage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct MountUsage {
    pub total_bytes: u64,
    /// `total - free` (as `df` counts it).
    pub used_bytes: u64,
    /// Space available to unprivileged users.
    pub available_bytes: u64,
    /// `used / (used + available)`, 0–100, as `df` reports it.
    pub used_percent: f64,
    pub inodes_total: u64,
    pub inodes_used: u64,
}

impl MountUsage {
    pub fn new(total: u64, used: u64, available: u64, inodes_total: u64, inodes_used: u64) -> MountUsage {
        MountUsage {
            total_bytes: total,
            used_bytes: used,
            available_bytes: available,
            used_percent: super::show::percent(used, used.saturating_add(available)),
            inodes_total,
            inodes_used,
        }
    }
}

/// `/proc/partitions` → (major, minor, size in bytes, name).
pub fn parse_partitions(text: &str) -> Vec<(u32, u32, u64, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 4 {
                return None;
            }
            Some((
                f[0].parse().ok()?,
                f[1].parse().ok()?,
                f[2].parse::<u64>().ok()? * 1024,
                f[3].to_string(),
            ))
        })
        .collect()
}

/// `/proc/diskstats` → counters by device name (sectors are 512 bytes, whatever the device).
pub fn parse_diskstats(text: &str) -> HashMap<String, DiskIo> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 14 {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            Some((
                f[2].to_string(),
                DiskIo {
                    reads: n(3)?,
                    read_bytes: n(5)? * 512,
                    writes: n(7)?,
                    write_bytes: n(9)? * 512,
                    in_progress: n(11)?,
                    io_ms: n(12)?,
                },
            ))
        })
        .collect()
}

/// One `/proc/self/mountinfo` line, escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub dev: String,
    /// The path inside the source file system that is mounted (field 4).
    pub root: String,
    pub mount_point: String,
    pub mount_options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// `/proc/self/mountinfo`: `id parent major:minor root mount_point options [optional...] - fstype
/// source super_options`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            Some(MountEntry {
                dev: left.get(2)?.to_string(),
                root: unescape_mount(left.get(3)?),
                mount_point: unescape_mount(left.get(4)?),
                mount_options: left.get(5)?.to_string(),
                fs_type: right.next()?.to_string(),
                source: unescape_mount(right.next()?),
                super_options: right.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Decode the `\NNN` octal escapes the kernel uses for space, tab, newline and backslash.
pub fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut n = 0;
    while n < bytes.len() {
        if bytes[n] == b'\\'
            && let Some(digits) = bytes.get(n + 1..n + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(v) = u8::try_from(value) {
                out.push(v);
                n += 4;
                continue;
            }
        }
        out.push(bytes[n]);
        n += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// File system types that do not hold user data (kept only when mounted at `/`).
pub const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Whether a mount is listed by default: storage, not kernel or runtime pseudo file systems.
pub fn is_storage_mount(m: &MountEntry) -> bool {
    m.mount_point == "/" || !PSEUDO_FS.contains(&m.fs_type.as_str())
}

/// `df -a -B1 --output=size,used,avail,itotal,iused,target` → usage by mount point (the
/// target is last: it may hold spaces). Rows of file systems `df` could not query are `-`.
pub fn parse_df_usage(text: &str) -> HashMap<String, MountUsage> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let mut n = || it.next()?.parse::<u64>().ok();
            let (size, used, avail, itotal, iused) = (n()?, n()?, n()?, n()?, n()?);
            // The fields are right-aligned: the target starts after the fifth number.
            let target = nth_field_rest(l, 5)?;
            (size > 0).then(|| (target.to_string(), MountUsage::new(size, used, avail, itotal, iused)))
        })
        .collect()
}

/// The rest of `line` after `n` whitespace-separated fields.
fn nth_field_rest(line: &str, n: usize) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    (!rest.is_empty()).then_some(rest)
}

/// Per-device attribute files: `/sys/class/block/NAME/ATTR` → content, for every name.
pub fn block_attr_paths(names: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| BLOCK_ATTRS.iter().map(move |a| format!("/sys/class/block/{n}/{a}")))
        .collect()
}

/// Whether `name` is a kernel block device name (safe to put in a path).
pub fn is_block_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'!'))
        && name != "."
        && name != ".."
}

/// The devices worth listing from `/proc/partitions`: a size, and not a RAM disk.
pub fn listed_devices(partitions: &[(u32, u32, u64, String)]) -> Vec<String> {
    partitions
        .iter()
        .filter(|(_, _, size, name)| *size > 0 && !name.starts_with("ram") && is_block_name(name))
        .map(|(_, _, _, name)| name.clone())
        .collect()
}

/// Everything read, turned into the report. `files` holds the block attribute files by path;
/// `usage` holds usage by mount point; `all` keeps pseudo file systems.
pub fn assemble_disks(
    partitions: &[(u32, u32, u64, String)],
    diskstats: &HashMap<String, DiskIo>,
    files: &HashMap<String, String>,
    mounts: &[MountEntry],
    usage: &HashMap<String, MountUsage>,
    all: bool,
    limit: usize,
) -> DisksReport {
    let by_dev: HashMap<String, &str> = partitions
        .iter()
        .map(|(ma, mi, _, name)| (format!("{ma}:{mi}"), name.as_str()))
        .collect();
    let mut first_mount: BTreeMap<&str, &str> = BTreeMap::new();
    for m in mounts {
        if let Some(name) = by_dev.get(&m.dev) {
            first_mount.entry(name).or_insert(m.mount_point.as_str());
        }
    }
    let listed = listed_devices(partitions);
    let attr = |name: &str, a: &str| {
        files
            .get(&format!("/sys/class/block/{name}/{a}"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let flag = |name: &str, a: &str| attr(name, a).map(|v| v == "1");
    let mut devices: Vec<BlockDevice> = partitions
        .iter()
        .filter(|(_, _, _, name)| listed.contains(name))
        .map(|(ma, mi, size, name)| {
            let partition = attr(name, "partition").is_some();
            BlockDevice {
                name: name.clone(),
                dev: format!("{ma}:{mi}"),
                kind: if partition { "partition" } else { "disk" }.to_string(),
                size_bytes: *size,
                read_only: flag(name, "ro"),
                removable: flag(name, "removable"),
                rotational: flag(name, "queue/rotational"),
                model: attr(name, "device/model"),
                mount_point: first_mount.get(name.as_str()).map(|s| s.to_string()),
                io: diskstats.get(name).cloned(),
            }
        })
        .collect();
    let devices_total = devices.len();
    devices.truncate(limit);

    let mut out_mounts: Vec<MountInfo> = mounts
        .iter()
        .filter(|m| all || is_storage_mount(m))
        .map(|m| {
            let mut options: Vec<&str> = m.mount_options.split(',').filter(|o| !o.is_empty()).collect();
            for o in m.super_options.split(',').filter(|o| !o.is_empty()) {
                if !options.contains(&o) {
                    options.push(o);
                }
            }
            MountInfo {
                mount_point: m.mount_point.clone(),
                source: m.source.clone(),
                fs_type: m.fs_type.clone(),
                read_only: m.mount_options.split(',').any(|o| o == "ro"),
                options: options.join(","),
                dev: m.dev.clone(),
                device: by_dev.get(&m.dev).map(|s| s.to_string()),
                usage: usage.get(&m.mount_point).copied(),
            }
        })
        .collect();
    let mounts_total = out_mounts.len();
    out_mounts.truncate(limit);
    DisksReport {
        devices_total,
        devices,
        mounts_total,
        mounts: out_mounts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C350 0100007F:1F90 06 00000000:00000000 03:00000A3A 00000000     0        0 0 3 0000000000000000
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0000000000000000 0
";

    #[test]
    #[cfg(target_endian = "little")]
    fn proc_net_tables_parse() {
        let t = parse_proc_net(TCP, Protocol::Tcp, false);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].local, ("127.0.0.1".parse().unwrap(), 8080));
        assert_eq!((t[0].state, t[0].inode, t[0].uid), (0x0A, 4242, 0));
        assert_eq!(t[1].remote, ("127.0.0.1".parse().unwrap(), 54321));
        assert_eq!(t[1].uid, 1000);
        let t6 = parse_proc_net(TCP6, Protocol::Tcp, true);
        assert_eq!(t6[0].local, ("::1".parse().unwrap(), 22));
        assert_eq!(t6[1].local, ("::ffff:127.0.0.1".parse().unwrap(), 9090));
        let u = parse_proc_net(UDP, Protocol::Udp, false);
        assert_eq!(u[0].local, ("0.0.0.0".parse().unwrap(), 68));
        assert!(parse_proc_net("garbage\n 0: zz:1 00:0 0A\n", Protocol::Tcp, false).is_empty());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn sockets_filter_join_sort_and_cap() {
        let mut raw = parse_proc_net(TCP, Protocol::Tcp, false);
        raw.extend(parse_proc_net(UDP, Protocol::Udp, false));
        let owners = parse_fd_links(
            "/proc/10/fd/3 socket:[4242]\n/proc/11/fd/7 socket:[4343]\n/proc/9/fd/3 socket:[4242]\n/proc/x/fd/1 socket:[5]\n",
        );
        assert_eq!(owners[&4242], 9, "the lowest pid wins");
        let names: HashMap<u32, String> = [(9, "redis-server".to_string())].into();
        let users: HashMap<u32, String> = [(0, "root".to_string())].into();
        let q = |state, port, protocol, limit| SocketQuery {
            state,
            port,
            protocol,
            limit,
        };
        let all = assemble_sockets(
            raw.clone(),
            &owners,
            &names,
            &users,
            2,
            &q(StateFilter::All, None, None, 100),
        );
        assert_eq!((all.matched, all.shown, all.processes_unreadable), (4, 4, 2));
        let states: Vec<&str> = all.sockets.iter().map(|s| s.state.as_str()).collect();
        assert_eq!(states, ["listen", "unconnected", "established", "time_wait"]);
        assert_eq!(all.sockets[0].pid, Some(9));
        assert_eq!(all.sockets[0].process.as_deref(), Some("redis-server"));
        assert_eq!(all.sockets[0].user.as_deref(), Some("root"));
        assert_eq!(all.sockets[3].pid, None, "time_wait has inode 0");

        let l = assemble_sockets(
            raw.clone(),
            &owners,
            &names,
            &users,
            0,
            &q(StateFilter::Listening, None, None, 100),
        );
        assert_eq!(l.matched, 2);
        let p = assemble_sockets(
            raw.clone(),
            &owners,
            &names,
            &users,
            0,
            &q(StateFilter::All, Some(8080), None, 100),
        );
        assert_eq!(p.matched, 3, "local or remote port");
        let u = assemble_sockets(
            raw.clone(),
            &owners,
            &names,
            &users,
            0,
            &q(StateFilter::All, None, Some(Protocol::Udp), 100),
        );
        assert_eq!(u.matched, 1);
        let capped = assemble_sockets(raw, &owners, &names, &users, 0, &q(StateFilter::All, None, None, 1));
        assert_eq!((capped.matched, capped.shown), (4, 1));
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[123]"), Some(123));
        assert_eq!(socket_inode("pipe:[123]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    const PARTITIONS: &str = "major minor  #blocks  name

 254        0  268435456 vda
 254        1     1024 vda1
   7        0          0 loop0
   1        0       4096 ram0
";
    const DISKSTATS: &str = " 254       0 vda 100 5 2000 50 200 10 4000 80 0 120 130 0 0 0 0 0 0
 254       1 vda1 1 0 8 0 0 0 0 0 0 1 1 0 0 0 0
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";
    const MOUNTINFO: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,errors=remount-ro
30 27 254:0 /srv/a /mnt/my\\040disk ro,relatime shared:1 - ext4 /dev/vda rw
";

    #[test]
    fn disks_assemble_devices_mounts_and_counters() {
        let parts = parse_partitions(PARTITIONS);
        assert_eq!(parts.len(), 4);
        assert_eq!(listed_devices(&parts), ["vda", "vda1"]);
        let stats = parse_diskstats(DISKSTATS);
        assert_eq!(stats["vda"].read_bytes, 2000 * 512);
        assert_eq!(stats["vda"].writes, 200);
        assert_eq!(stats["vda"].io_ms, 120);
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts[2].mount_point, "/mnt/my disk");
        assert_eq!(mounts[2].dev, "254:0");
        let files: HashMap<String, String> = [
            ("/sys/class/block/vda/queue/rotational".to_string(), "0\n".to_string()),
            ("/sys/class/block/vda/ro".to_string(), "0\n".to_string()),
            ("/sys/class/block/vda1/partition".to_string(), "1\n".to_string()),
        ]
        .into();
        let usage: HashMap<String, MountUsage> = [("/".to_string(), MountUsage::new(100, 40, 50, 10, 2))].into();
        let r = assemble_disks(&parts, &stats, &files, &mounts, &usage, false, 100);
        assert_eq!(r.devices_total, 2);
        assert_eq!(r.devices[0].kind, "disk");
        assert_eq!(r.devices[0].rotational, Some(false));
        assert_eq!(r.devices[0].mount_point.as_deref(), Some("/"));
        assert_eq!(r.devices[1].kind, "partition");
        assert_eq!(r.devices[1].read_only, None);
        assert_eq!(r.mounts_total, 2, "proc is left out");
        let root = &r.mounts[0];
        assert_eq!(root.options, "rw,relatime,errors=remount-ro");
        assert_eq!(root.device.as_deref(), Some("vda"));
        let u = root.usage.unwrap();
        assert_eq!(u.used_percent, 44.4);
        assert!(r.mounts[1].read_only);
        let all = assemble_disks(&parts, &stats, &files, &mounts, &usage, true, 1);
        assert_eq!((all.mounts_total, all.mounts.len(), all.devices.len()), (3, 1, 1));
    }

    #[test]
    fn mountinfo_escapes() {
        let m =
            parse_mountinfo("36 35 98:0 /my\\040dir /mnt/with\\040space\\134x rw - ext3 /dev/root rw\nbroken line\n");
        assert_eq!(
            m,
            vec![MountEntry {
                dev: "98:0".to_string(),
                root: "/my dir".to_string(),
                mount_point: "/mnt/with space\\x".to_string(),
                mount_options: "rw".to_string(),
                fs_type: "ext3".to_string(),
                source: "/dev/root".to_string(),
                super_options: "rw".to_string(),
            }]
        );
        assert_eq!(unescape_mount("a\\09b\\"), "a\\09b\\");
        assert_eq!(unescape_mount("é\\011"), "é\t");
    }

    #[test]
    fn df_usage_keeps_spaces_in_targets() {
        let u = parse_df_usage(
            "   1B-blocks        Used       Avail   Inodes  IUsed Mounted on\n           0 0 0 0 0 /proc\n  1000   400   500  10  3 /\n  2000 0 2000 5 1 /mnt/my disk\n",
        );
        assert_eq!(u.len(), 2);
        assert_eq!(u["/mnt/my disk"].total_bytes, 2000);
        assert_eq!(u["/"].inodes_used, 3);
        assert_eq!(u["/"].used_percent, 44.4);
    }

    #[test]
    fn block_names_are_checked_before_they_reach_a_path() {
        for ok in ["sda", "nvme0n1p2", "dm-0", "cciss!c0d0"] {
            assert!(is_block_name(ok), "{ok}");
        }
        for bad in ["", "..", "a/b", "a b", "x;y"] {
            assert!(!is_block_name(bad), "{bad}");
        }
    }
}
