//! System status and identity (sysinfo and `/etc/os-release`), the disks it lists, the block
//! device and mount report, and the CPU sampler the process table shares.

use std::collections::HashMap;
use std::fs;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use sysinfo::{DiskRefreshKind, Disks, System};

use super::model::{CpuStatus, DiskStatus, Identity, LoadAverage, MemoryStatus, OsInfo, SwapStatus, SystemStatus};
use super::virt::virtualization;
use crate::exec::show::{percent, round1};
use crate::exec::{lock, procfs};

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
    let os = os_info();
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

/// The local host's identity (blocking: reads a few files).
pub fn identity() -> Identity {
    Identity {
        hostname: System::host_name(),
        os: os_info(),
        kernel: System::kernel_version(),
        arch: System::cpu_arch(),
        virtualization: virtualization(),
    }
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

/// A sample older than this is not a useful "current" CPU figure: take a fresh one instead.
const MAX_SAMPLE_AGE: Duration = Duration::from_secs(60);

/// A long-lived `System` plus when it was last refreshed, so CPU usage (a difference between
/// two refreshes) needs no sleep except on the first call or after a long pause.
pub(super) struct Sampled {
    pub(super) sys: System,
    last: Option<Instant>,
}

impl Sampled {
    pub(super) fn new() -> Sampled {
        Sampled {
            sys: System::new(),
            last: None,
        }
    }

    /// Refresh with `refresh` so that the values cover at least
    /// `MINIMUM_CPU_UPDATE_INTERVAL`; returns the window they cover.
    pub(super) fn sample(&mut self, refresh: impl Fn(&mut System)) -> Duration {
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

/// This host's OS, from `/etc/os-release` (or `/usr/lib/os-release`).
fn os_info() -> OsInfo {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .map(|s| parse_os_release(&s))
        .unwrap_or_default()
}

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

/// [`crate::when::rfc3339`] for the kernel's unsigned times, where 0 means "unknown".
pub(crate) fn rfc3339(unix_seconds: u64) -> Option<String> {
    i64::try_from(unix_seconds)
        .ok()
        .filter(|s| *s > 0)
        .and_then(crate::when::rfc3339)
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_times() {
        assert_eq!(rfc3339(0), None);
        assert_eq!(rfc3339(1_700_000_000).as_deref(), Some("2023-11-14T22:13:20Z"));
    }

    #[test]
    fn os_release() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n";
        assert_eq!(
            parse_os_release(debian),
            OsInfo {
                pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
                name: Some("Debian GNU/Linux".into()),
                version: Some("12".into()),
                id: Some("debian".into()),
            }
        );
        let alpine = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n";
        assert_eq!(parse_os_release(alpine).pretty_name, Some("Alpine Linux v3.20".into()));
        assert_eq!(parse_os_release(alpine).version, Some("3.20.3".into()));
        let minimal = "# comment\n\nNAME='My OS'\nVERSION=\"1.0 \\\"beta\\\"\"\nnot a pair\nID=myos\n";
        let got = parse_os_release(minimal);
        assert_eq!(got.pretty_name, Some("My OS 1.0 \"beta\"".into()));
        assert_eq!(got.version, None);
        assert_eq!(parse_os_release(""), OsInfo::default());
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
