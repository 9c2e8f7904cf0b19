//! Test harness: a real OpenSSH `sshd` on loopback, one per test, with its own host key and one
//! authorized client key in a temporary directory (TEST-ENV.md, "sshd on loopback").
//!
//! Owns the daemon's whole lifetime: it starts `/usr/sbin/sshd -D -e` on a free 127.0.0.1 port,
//! waits for its banner, and kills it and every process under it (the per-connection sessions)
//! on drop, also when the test panicked. It can drop live connections ([`Sshd::kill_sessions`])
//! and list what runs under the daemon ([`Sshd::session_processes`]) so tests can prove a remote
//! process is gone. It only ever signals processes it started or that descend from them, by pid.
//!
//! sshd runs in a private mount namespace (`unshare --mount`) where the login user's home is an
//! empty directory, so the machine's dotfiles (bash sources `~/.bashrc` for every SSH command;
//! on a developer box that may start pyenv/nvm and cost 150 ms) neither slow nor change the
//! tests and benchmarks. Where that namespace cannot be made, sshd runs with the real home.
//! It must not touch `/etc/ssh`, a system sshd, or decide whether a test skips (tests call
//! `netns::skip_or_fail` with the returned error).
#![allow(dead_code)]

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The daemon (Debian package `openssh-server`); sshd insists on an absolute path.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd on `127.0.0.1:port()`; killed with its sessions on drop.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    user: String,
}

impl Sshd {
    /// Generate keys, write the config, start sshd on a free port and wait until it answers with
    /// an SSH banner. `Err` says why sshd cannot run here (missing package, not root, ...).
    pub fn start() -> Result<Sshd, String> {
        Sshd::start_with(None, "")
    }

    /// Like [`Sshd::start`], with `MaxSessions max` (sessions per connection; sshd's default is
    /// 10) so a test can fill every session slot of a connection.
    pub fn start_with_max_sessions(max: u32) -> Result<Sshd, String> {
        Sshd::start_with(None, &format!("MaxSessions {max}\n"))
    }

    /// Like [`Sshd::start`], but sshd runs inside network namespace `ns`, on that namespace's
    /// own loopback (where a server running in `ns` reaches it).
    pub fn start_in_netns(ns: &str) -> Result<Sshd, String> {
        Sshd::start_with(Some(ns), "")
    }

    /// `extra` is appended to the generated sshd_config (whole lines).
    fn start_with(netns: Option<&str>, extra: &str) -> Result<Sshd, String> {
        if !Path::new(SSHD).exists() {
            return Err(format!("{SSHD} not found: install the `openssh-server` package"));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("sshd for tests needs root (privilege separation, logins as this user)".into());
        }
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("create /run/sshd: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("tops-sshd-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        keygen(&dir.path().join("hostkey"))?;
        keygen(&dir.path().join("clientkey"))?;
        std::fs::copy(dir.path().join("clientkey.pub"), dir.path().join("authorized_keys"))
            .map_err(|e| format!("authorized_keys: {e}"))?;
        let user = current_user()?;
        let home = home_of(&user);
        std::fs::create_dir(dir.path().join("home")).map_err(|e| format!("create home: {e}"))?;
        // A port picked here may be taken by someone else before sshd binds it: retry.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            match spawn(dir.path(), port, home.as_deref(), netns, extra)
                .or_else(|_| spawn(dir.path(), port, None, netns, extra))
            {
                Ok(child) => return Ok(Sshd { dir, port, child, user }),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user (the user running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The test's own directory (keys, config, sshd.log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The authorized client key (OpenSSH format, no passphrase).
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("clientkey")
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...` for the daemon's host key.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("hostkey.pub")).unwrap_or_default();
        let mut parts = public.split_whitespace();
        let (algo, key) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        format!("[127.0.0.1]:{} {algo} {key}", self.port)
    }

    /// Settings for the SSH executor that trust exactly this sshd's host key (a known_hosts
    /// file written in its directory) and log in with its authorized client key.
    pub fn settings(&self) -> tailopsmcp::exec::ssh::SshSettings {
        tailopsmcp::exec::ssh::SshSettings {
            host: "127.0.0.1".into(),
            port: self.port(),
            user: self.user().into(),
            key_file: Some(self.client_key_path()),
            agent: false,
            known_hosts: Some(self.write_known_hosts("known_hosts", &[self.known_hosts_line()])),
            host_key_fingerprint: None,
            trust_on_first_use: false,
            sudo: tailopsmcp::exec::ssh::SudoPolicy::None,
        }
    }

    /// `SHA256:...` of the host key, as `ssh-keygen -l` prints it.
    pub fn host_key_fingerprint(&self) -> String {
        fingerprint(&self.dir.path().join("hostkey.pub"))
    }

    /// Write a known_hosts file with `lines` into the test directory and return its path.
    pub fn write_known_hosts(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// A fresh ed25519 key pair in the test directory (not authorized); returns the private key.
    pub fn new_key(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        keygen(&path).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// The daemon's log (sshd `-e` writes to stderr, redirected here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Every process under the daemon (connection handlers and what they run): `(pid, cmdline)`.
    pub fn session_processes(&self) -> Vec<(u32, String)> {
        descendants(self.child.id())
            .into_iter()
            .map(|pid| (pid, cmdline(pid)))
            .collect()
    }

    /// CPU time used so far by the daemon and everything under it: what each live process has
    /// run, to the nanosecond (`/proc/PID/schedstat`), plus what finished session processes used
    /// (in their parents' `cutime`/`cstime`, in clock ticks). Differences over a span in which no
    /// session ends are exact; clock ticks alone would be off by up to a tick per process.
    pub fn cpu_time(&self) -> Duration {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let mut total = Duration::ZERO;
        for pid in std::iter::once(self.child.id()).chain(descendants(self.child.id())) {
            let Ok(schedstat) = std::fs::read_to_string(format!("/proc/{pid}/schedstat")) else {
                continue;
            };
            let ran_ns: u64 = schedstat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            total += Duration::from_nanos(ran_ns);
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            // After the command: state(0) ppid(1) ... cutime(13) cstime(14).
            let children: u64 = rest
                .split_whitespace()
                .skip(13)
                .take(2)
                .filter_map(|x| x.parse::<u64>().ok())
                .sum();
            total += Duration::from_millis(children * 1000 / hz);
        }
        total
    }

    /// Drop every live connection: SIGKILL every process under the daemon, which keeps listening.
    /// Returns once they are gone.
    pub fn kill_sessions(&self) {
        let pids = descendants(self.child.id());
        for &pid in &pids {
            // SAFETY: kill(2) on a pid that descends from the sshd this harness started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        wait_gone(&pids, Duration::from_secs(5));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let pids = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &pid in &pids {
            // SAFETY: as in kill_sessions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Start sshd; with `clean_home`, inside a mount namespace where that directory is covered by
/// the empty `DIR/home`.
fn spawn(dir: &Path, port: u16, clean_home: Option<&Path>, netns: Option<&str>, extra: &str) -> Result<Child, String> {
    let d = dir.display();
    let mut config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n\
         # Benchmarks connect 20 clients at once; the default 10:30:100 drops some of them.\n\
         MaxStartups 100\n"
    );
    config.push_str(extra);
    let path = dir.join("sshd_config");
    std::fs::write(&path, config).map_err(|e| format!("write sshd_config: {e}"))?;
    let log = std::fs::File::create(dir.join("sshd.log")).map_err(|e| format!("sshd.log: {e}"))?;
    let mut command = match clean_home {
        Some(home) => {
            let mut c = in_netns(netns, "unshare");
            // `exec` keeps the pid: the child is sshd itself.
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(r#"mount --bind "$1" "$2" && exec "$3" -D -e -f "$4""#)
                .arg("sh")
                .arg(dir.join("home"))
                .arg(home)
                .arg(SSHD)
                .arg(&path);
            c
        }
        None => {
            let mut c = in_netns(netns, SSHD);
            c.args(["-D", "-e", "-f"]).arg(&path);
            c
        }
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start {SSHD}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
            return Err(format!("sshd exited at start ({status}): {log}"));
        }
        let ready = match netns {
            None => banner(port),
            // Not reachable from here: sshd says when it listens.
            Some(_) => std::fs::read_to_string(dir.join("sshd.log")).is_ok_and(|l| l.contains("Server listening on")),
        };
        if ready {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("sshd did not answer on 127.0.0.1:{port} within 10 s"))
}

/// `program` as a command, run inside network namespace `ns` when given (`ip netns exec` execs
/// it, so the child's pid is the program's).
fn in_netns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// True when something on `port` sends an SSH identification line.
fn banner(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-")
}

fn keygen(path: &Path) -> Result<(), String> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tailopsmcp-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ssh-keygen (package openssh-client): {e}"))?;
    if !out.status.success() {
        return Err(format!("ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// `SHA256:...` of a public key file.
pub fn fingerprint(public_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen -lf: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).unwrap_or_default().to_string()
}

fn current_user() -> Result<String, String> {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .map_err(|e| format!("id -un: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The user's home directory from the passwd database, if it has one that exists.
fn home_of(user: &str) -> Option<PathBuf> {
    let out = Command::new("getent").args(["passwd", user]).output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let home = PathBuf::from(line.split(':').nth(5)?);
    home.is_dir().then_some(home)
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// All processes below `root` in the process tree (from `/proc/*/stat`).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the parenthesised command: state, ppid, ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
        .unwrap_or_default()
}

fn wait_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if pids
            .iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(*pid))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Pids of every live process on this machine whose command line (arguments joined by spaces) is
/// exactly `command` (orphans of a killed session are reparented away from sshd, so an "is it
/// gone" check must look everywhere; give the command a unique argument).
pub fn processes_running(command: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !is_zombie(pid) && cmdline(pid) == command {
                pids.push(pid);
            }
        }
    }
    pids
}
