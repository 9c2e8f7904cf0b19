//! The local host, read directly: system status (OS, CPU, memory, disks, virtualization), the
//! process table, network interfaces and sockets, from `/proc`, `/sys`, `/etc` and `sysinfo`.
//!
//! Everything here only reads; nothing changes the host. Functions block (file reads,
//! `statvfs`, and a CPU sample may sleep up to `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`), so
//! async callers run them in `spawn_blocking`. This module knows nothing about callers, MCP,
//! policy or rendering. Parsers of file contents are pure functions, tested on samples beside
//! them; [`super::remote`] runs the same parsers on what an SSH host's files say.
//!
//! One concern per file, each using only those listed before it: `model` (what the reads
//! return), `virt` (virtualization and container detection), `host` (status, identity and
//! disks, with the CPU sampler), `processes` (the process table and user names), `network`
//! (interfaces and sockets).

mod host;
mod model;
mod network;
mod processes;
mod virt;

pub(crate) use host::{RawDisk, parse_os_release, rfc3339, select_disks};
pub use host::{disks_report, identity, system_status};
pub use model::{
    CpuStatus, DiskStatus, Identity, Interface, InterfaceAddress, InterfaceCounters, LoadAverage, MemoryStatus, OsInfo,
    ProcessInfo, ProcessList, ProcessSort, SwapStatus, SystemStatus, Virtualization,
};
pub use network::{network_interfaces, sockets};
pub use processes::{MAX_COMMAND_CHARS, processes};
pub(crate) use processes::{parse_passwd, proc_pids, sort_and_limit};
pub(crate) use virt::{VirtInputs, detect_virtualization};

// `local::truncate_chars` is what the inventory tools call it.
pub(crate) use super::show::cut as truncate_chars;
