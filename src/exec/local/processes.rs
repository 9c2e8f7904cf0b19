//! The process table (sysinfo), with user names from `/etc/passwd`.

use std::collections::HashMap;
use std::fs;
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use sysinfo::{MemoryRefreshKind, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, ThreadKind, UpdateKind};

use super::host::{Sampled, millis, rfc3339};
use super::model::{ProcessInfo, ProcessList, ProcessSort};
use crate::exec::lock;
use crate::exec::show::{cut, percent, round1};

/// Longest command line returned per process, in characters (longer ones end with `…`).
pub const MAX_COMMAND_CHARS: usize = 512;

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
                cut(&crate::secrets::redact_argv(&args).join(" "), MAX_COMMAND_CHARS)
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

static PROCESSES: LazyLock<Mutex<Sampled>> = LazyLock::new(|| {
    // By default sysinfo keeps one `/proc/PID/stat` open per process (up to half the fd
    // limit); a long-running server needs those descriptors for its sockets.
    sysinfo::set_open_files_limit(0);
    Mutex::new(Sampled::new())
});

pub(super) static USERS: LazyLock<Mutex<UserNames>> = LazyLock::new(|| Mutex::new(UserNames::default()));

/// uid → name from `/etc/passwd`, reloaded when the file's mtime changes.
#[derive(Default)]
pub(super) struct UserNames {
    mtime: Option<SystemTime>,
    names: HashMap<u32, String>,
}

impl UserNames {
    pub(super) fn refreshed(&mut self) -> &HashMap<u32, String> {
        const PASSWD: &str = "/etc/passwd";
        let mtime = fs::metadata(PASSWD).and_then(|m| m.modified()).ok();
        if mtime.is_none() || mtime != self.mtime {
            self.names = fs::read_to_string(PASSWD).map(|s| parse_passwd(&s)).unwrap_or_default();
            self.mtime = mtime;
        }
        &self.names
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            cut(&"x".repeat(600), MAX_COMMAND_CHARS).chars().count(),
            MAX_COMMAND_CHARS
        );
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
}
