//! Runs the real `tailopsmcp` binary inside a test tailnet's server namespace, pointed at a
//! LocalAPI stand-in and a fresh SQLite file, and reads back what it wrote.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tailopsmcp::audit::{self, Query, Record};

use super::localapi::StandIn;
use super::netns::Tailnet;

pub const PORT: u16 = 8471;
pub const CAP: &str = "example.com/cap/tailopsmcp";

/// A running server process; killed on drop.
pub struct Server {
    pub child: Option<tokio::process::Child>,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    log: PathBuf,
}

/// For tests of what a tool does rather than of the approval gate (`tests/approvals.rs` covers
/// that): no confirmation or second person, and buckets that bad-input sweeps cannot drain.
pub const TOOL_TESTS_POLICY: &str = "\n[approvals.risk]\nlow = \"none\"\nmoderate = \"none\"\nhigh = \"none\"\ncritical = \"none\"\n\
    [limits.rate.moderate]\nburst = 1000\nper_minute = 6000\n[limits.rate.high]\nburst = 1000\nper_minute = 6000\n\
    [limits.rate.critical]\nburst = 1000\nper_minute = 6000\n";

/// The config every test server gets, plus `extra` (TOML appended; may add `[[grant]]`s).
pub fn config_text(socket: &Path, db: &Path, server_section: &str, extra: &str) -> String {
    format!(
        "[server]\nport = {PORT}\n{server_section}\n\n[tailscale]\nsocket = {socket:?}\ncapability = \"{CAP}\"\nwhois_timeout_ms = 500\n\n[audit]\ndatabase = {db:?}\n\n{extra}\n"
    )
}

impl Server {
    /// Start the server in `net`'s server namespace and wait until it listens on the server's
    /// tailnet address.
    pub async fn start(net: &Tailnet, standin: &StandIn, server_section: &str, extra: &str) -> Server {
        let s = Server::spawn(net, standin, server_section, extra).await;
        s.wait_listening(net, SocketAddr::new(IpAddr::V4(net.server_ip()), PORT))
            .await;
        s
    }

    /// Start the server without waiting for it to listen.
    pub async fn spawn(net: &Tailnet, standin: &StandIn, server_section: &str, extra: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("audit.db");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_text(standin.socket_path(), &db, server_section, extra)).expect("write config");
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = net
            .command_in_server_ns(Path::new(env!("CARGO_BIN_EXE_tailopsmcp")))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            // The product's default log filter, as operators run it.
            .env_remove("TAILOPSMCP_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tailopsmcp");
        Server {
            child: Some(child),
            dir,
            db,
            config,
            addr: SocketAddr::new(IpAddr::V4(net.server_ip()), PORT),
            log,
        }
    }

    pub async fn wait_listening(&self, net: &Tailnet, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if net.listening_sockets().contains(&addr) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not listen on {addr} within 20 s; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Every audit record, oldest first.
    pub fn audit(&self) -> Vec<Record> {
        audit::query_path(
            &self.db,
            &Query {
                limit: 100_000,
                ..Query::default()
            },
        )
        .expect("query audit db")
    }

    /// How many rows the audit log holds: all of them ([`Server::audit`] reads at most 100,000).
    pub fn audit_rows(&self) -> usize {
        let conn = rusqlite::Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open audit db");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .expect("count audit rows");
        usize::try_from(n).unwrap_or(0)
    }

    /// Wait until the audit log holds at least `n` records matching `pred`, then return them.
    pub async fn audit_where(&self, n: usize, pred: impl Fn(&Record) -> bool) -> Vec<Record> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows: Vec<Record> = self.audit().into_iter().filter(|r| pred(r)).collect();
            if rows.len() >= n || Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop the process (SIGTERM, then kill).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// Run the binary with `args` (outside any namespace) and return (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tailopsmcp"))
        .args(args)
        .env_remove("TAILOPSMCP_CONFIG")
        .output()
        .expect("run tailopsmcp");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
