//! Test harness: a real `systemd-journald` to mirror audit events into, and `journalctl` to read
//! them back.
//!
//! Owns starting journald once per test process when its socket is absent (no systemd runs as
//! PID 1 on test machines). The daemon it starts outlives the test process (later runs reuse it);
//! its pid is in [`PID_FILE`] so CI can stop exactly that process. It must not configure
//! journald, touch a journald it did not start, or decide whether a test skips or fails (tests
//! do that from the returned error and `CI=true`).

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// journald's native protocol socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";
/// The daemon, from Debian's `systemd` package.
pub const DAEMON: &str = "/lib/systemd/systemd-journald";
/// Where the pid of a journald started by this harness is written.
pub const PID_FILE: &str = "/run/systemd/journal/tailopsmcp-test-journald.pid";

/// Make sure a journald is accepting native-protocol datagrams on [`SOCKET`], starting
/// [`DAEMON`] once per process if needed. `Err` says why journald cannot run here.
pub fn ensure_journald() -> Result<(), String> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED.get_or_init(start).clone()
}

/// `journalctl --no-pager -o json ARGS...`, one JSON value per entry. Retries for up to 5 s
/// while there are no entries yet (journald may need a moment to write what it received).
pub fn journal_entries(args: &[&str]) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Asks journald to write out what it has received; harmless when it cannot.
        let _ = Command::new("journalctl")
            .arg("--sync")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let entries = read_entries(args);
        if !entries.is_empty() || Instant::now() >= deadline {
            return entries;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The audit mirror's entries (`-t tailopsmcp-audit`) for the request `request_id`, once there
/// are `n` of them (waiting up to 10 s); asserts there are exactly `n`.
pub fn audit_entries_of_request(request_id: &str, n: usize) -> Vec<serde_json::Value> {
    let filter = format!("TAILOPS_REQUEST_ID={request_id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = journal_entries(&["-t", "tailopsmcp-audit", &filter]);
        if got.len() >= n || Instant::now() > deadline {
            assert_eq!(got.len(), n, "journal entries for {request_id}: {got:#?}");
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_entries(args: &[&str]) -> Vec<serde_json::Value> {
    let output = match Command::new("journalctl")
        .args(["--no-pager", "-o", "json"])
        .args(args)
        .stderr(Stdio::piped())
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("run journalctl: {e}"),
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journalctl line {l:?}: {e}")))
        .collect()
}

fn accepting() -> bool {
    UnixDatagram::unbound().and_then(|s| s.connect(SOCKET)).is_ok()
}

fn start() -> Result<(), String> {
    if accepting() {
        return Ok(());
    }
    if !Path::new(DAEMON).exists() {
        return Err(format!(
            "{DAEMON} not found: install the `systemd` package (apt-get install -y systemd)"
        ));
    }
    let journalctl = Command::new("journalctl")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !journalctl.is_ok_and(|s| s.success()) {
        return Err("journalctl not runnable: install the `systemd` package".to_string());
    }
    std::fs::create_dir_all("/run/systemd/journal").map_err(|e| format!("create /run/systemd/journal: {e}"))?;
    // A socket file left by a dead journald would only refuse connections.
    let _ = std::fs::remove_file(SOCKET);
    let mut child = Command::new(DAEMON)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {DAEMON}: {e}"))?;
    std::fs::write(PID_FILE, format!("{}\n", child.id())).map_err(|e| format!("write {PID_FILE}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if accepting() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(PID_FILE);
            return Err(format!("{DAEMON} exited at start: {status}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(PID_FILE);
    Err(format!("{DAEMON} did not open {SOCKET} within 5 s"))
}
