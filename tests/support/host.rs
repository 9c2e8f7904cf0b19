//! The machine a benchmark ran on, and how fast it was running at the time: the line every
//! bench report starts with, and a fixed probe to print next to figures that move with the
//! host's load (this project's VMs share their hosts; the same build's throughput swings by a
//! third between runs, and the probe with it).
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Cores, CPU model and kernel, e.g. `2 cores, AMD EPYC, kernel 6.18.44`.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{} cores, {cpu}, kernel {}", cores(), kernel.trim())
}

/// CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

/// Wall time of a fixed job: `head -c 1000000000 /dev/zero | sha256sum`, the probe behind the
/// host-speed figures in docs/performance.md. On this project's machine type it takes
/// 4.1-4.6 s on a quiet host and up to 11 s on a busy one, mostly in kernel time (pipe transfers
/// and wake-ups), which is where the servers under test spend theirs: a SHA-256 of the same size
/// computed in-process took the same 170 ms whichever the probe said. `None` when it could not run.
pub fn probe() -> Option<Duration> {
    let started = Instant::now();
    let status = std::process::Command::new("sh")
        .args(["-c", "head -c 1000000000 /dev/zero | sha256sum"])
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| started.elapsed())
}

/// Mean round trip of one byte between two threads over a Unix socket pair, [`ROUND_TRIPS`]
/// times: the cost of waking a thread on the other CPU. A few µs on bare metal; 35-92 µs on
/// this project's VMs, where waking an idle vCPU leaves the VM.
pub fn wake_round_trip() -> Option<Duration> {
    use std::io::{Read, Write};
    let (mut here, mut there) = std::os::unix::net::UnixStream::pair().ok()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut byte = [0u8; 1];
        for _ in 0..ROUND_TRIPS {
            there.read_exact(&mut byte)?;
            there.write_all(&byte)?;
        }
        Ok(())
    });
    let mut byte = [0u8; 1];
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        here.write_all(&byte).ok()?;
        here.read_exact(&mut byte).ok()?;
    }
    let elapsed = started.elapsed();
    echo.join().ok()?.ok()?;
    Some(elapsed / ROUND_TRIPS)
}

/// Round trips [`wake_round_trip`] averages over.
pub const ROUND_TRIPS: u32 = 5_000;

/// `host probe (before): 4.52 s for ... (quiet host 4.1-4.6 s); thread wake-up round trip 88 µs`,
/// for a report.
pub fn probe_line(when: &str) -> String {
    let probe = match probe() {
        Some(d) => format!(
            "{:.2} s for `head -c 1000000000 /dev/zero | sha256sum` (quiet host 4.1-4.6 s)",
            d.as_secs_f64()
        ),
        None => "could not run `head | sha256sum`".to_string(),
    };
    let wake = match wake_round_trip() {
        Some(d) => format!("{:.0} µs", d.as_secs_f64() * 1e6),
        None => "not measured".to_string(),
    };
    format!("host probe ({when}): {probe}; thread wake-up round trip {wake}")
}
