//! A Debian 12 container booted with real systemd as PID 1, for testing `install.sh` end to end
//! (TEST-ENV.md, "A container with real systemd"), driven through the `docker` CLI.
//!
//! - [`ensure_dockerd`] uses a Docker engine that answers (`DOCKER_HOST`, else
//!   `/var/run/docker.sock`) or starts a private `dockerd` (own data root, exec root, socket, no
//!   bridge, no iptables) that the returned [`DockerHandle`] stops and deletes on drop.
//! - [`debian_systemd_image`] builds the image once: `debootstrap --variant=minbase` with systemd,
//!   tarred under `target/tmp/sysbox/` (cached by a hash of the recipe) and `docker import`-ed;
//!   [`debian_systemd_image_with`] adds packages (polkitd for the services tests).
//! - [`SystemdBox`] runs it (`--cap-add=SYS_ADMIN --cgroupns=host`, the cgroup tree mounted, no
//!   network), waits for systemd to come up, and removes the container on drop.
//!
//! Tests call these and, when a component is missing, `super::netns::skip_or_fail(why)`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The image recipe. Changing it changes the cache key (the tarball and the image tag).
const DEBOOTSTRAP_ARGS: &[&str] = &[
    "--variant=minbase",
    "--include=systemd,systemd-sysv,dbus,ca-certificates,iproute2",
    "bookworm",
];
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
const RECIPE_VERSION: &str = "sysbox-1";

/// Serializes image builds and daemon starts within this test process.
static LOCK: Mutex<()> = Mutex::new(());

fn sysbox_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sysbox")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Docker engine the tests may use. If this handle started the daemon, dropping it stops the
/// daemon and deletes its directories.
pub struct DockerHandle {
    /// The `DOCKER_HOST` value for the `docker` CLI.
    pub host: String,
    daemon: Option<Child>,
    dirs: Vec<PathBuf>,
}

impl DockerHandle {
    /// A `docker` command aimed at this engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host);
        c
    }

    /// Runs `docker ARGS`; Ok(stdout) on success, Err(everything) otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .docker()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("docker {}: {}", args.join(" "), describe(&out)))
        }
    }

    fn answers(&self) -> bool {
        self.docker()
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for DockerHandle {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
            for d in &self.dirs {
                let _ = if d.is_dir() {
                    std::fs::remove_dir_all(d)
                } else {
                    std::fs::remove_file(d)
                };
            }
        }
    }
}

/// A Docker engine to use: an existing one that answers, or a private `dockerd` started here.
pub fn ensure_dockerd() -> Result<DockerHandle, String> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("a systemd container needs root (run the tests as root)".into());
    }
    if !have("docker") {
        return Err("the docker CLI is not installed (apt-get install docker.io)".into());
    }
    let mut candidates = Vec::new();
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && !host.is_empty()
    {
        candidates.push(host);
    }
    candidates.push("unix:///var/run/docker.sock".to_string());
    for host in candidates {
        let h = DockerHandle {
            host,
            daemon: None,
            dirs: Vec::new(),
        };
        if h.answers() {
            return Ok(h);
        }
    }
    if !have("dockerd") {
        return Err("no Docker engine answers and dockerd is not installed (apt-get install docker.io)".into());
    }
    // A private daemon. Short paths: the socket path must fit in sun_path.
    // One private daemon per call: tests that each boot a container may run in parallel.
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("tops-sysbox-{}-{n}", std::process::id());
    let exec_root = PathBuf::from("/run").join(&tag);
    let data_root = sysbox_dir().join(format!("docker-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&exec_root).map_err(|e| format!("{}: {e}", exec_root.display()))?;
    std::fs::create_dir_all(&data_root).map_err(|e| format!("{}: {e}", data_root.display()))?;
    let socket = exec_root.join("docker.sock");
    let log_path = sysbox_dir().join(format!("dockerd-{}-{n}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new("dockerd")
        .arg("--iptables=false")
        .arg("--ip-masq=false")
        .arg("--bridge=none")
        .arg("--storage-driver=overlay2")
        .arg("--data-root")
        .arg(&data_root)
        .arg("--exec-root")
        .arg(&exec_root)
        .arg("--pidfile")
        .arg(exec_root.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start dockerd: {e}"))?;
    let mut handle = DockerHandle {
        host: format!("unix://{}", socket.display()),
        daemon: Some(child),
        dirs: vec![exec_root, data_root, log_path.clone()],
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if handle.answers() {
            return Ok(handle);
        }
        if let Some(child) = handle.daemon.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("dockerd exited ({status}): {}", tail(&log, 20)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    Err(format!("dockerd did not answer within 30 s: {}", tail(&log, 20)))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// FNV-1a: a hash that is stable across Rust versions (the cache key must not change by itself).
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The `local/tailopsmcp-sysbox:HASH` image (Debian 12 with systemd), built when missing.
pub fn debian_systemd_image(docker: &DockerHandle) -> Result<String, String> {
    debian_systemd_image_with(docker, &[])
}

/// [`debian_systemd_image`] with `extra` Debian packages installed too (e.g. `polkitd`): a
/// separate image, cached by its own recipe hash.
pub fn debian_systemd_image_with(docker: &DockerHandle, extra: &[&str]) -> Result<String, String> {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut args: Vec<String> = DEBOOTSTRAP_ARGS.iter().map(|a| a.to_string()).collect();
    if !extra.is_empty() {
        for a in args.iter_mut() {
            if let Some(list) = a.strip_prefix("--include=") {
                *a = format!("--include={list},{}", extra.join(","));
            }
        }
    }
    let recipe = format!("{RECIPE_VERSION} debootstrap {} {DEBIAN_MIRROR}", args.join(" "));
    let hash = format!("{:016x}", fnv1a(&recipe));
    let image = format!("local/tailopsmcp-sysbox:{hash}");
    if docker.run(&["image", "inspect", "--format", "{{.Id}}", &image]).is_ok() {
        return Ok(image);
    }
    let dir = sysbox_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tarball = dir.join(format!("debian12-systemd-{hash}.tar"));
    if !tarball.exists() {
        build_rootfs_tarball(&dir, &hash, &args, &tarball)?;
    }
    docker.run(&["import", &tarball.to_string_lossy(), &image])?;
    Ok(image)
}

fn build_rootfs_tarball(dir: &Path, hash: &str, args: &[String], tarball: &Path) -> Result<(), String> {
    if !have("debootstrap") {
        return Err("debootstrap is not installed (apt-get install debootstrap)".into());
    }
    let rootfs = dir.join(format!("rootfs-{hash}"));
    let _ = std::fs::remove_dir_all(&rootfs);
    let out = Command::new("debootstrap")
        .args(args)
        .arg(&rootfs)
        .arg(DEBIAN_MIRROR)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run debootstrap: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&rootfs);
        return Err(format!("debootstrap failed: {}", describe(&out)));
    }
    // Trim what a test never needs; keep the image small.
    for sub in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
    ] {
        let p = rootfs.join(sub);
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
            let _ = std::fs::create_dir_all(&p);
        }
    }
    let partial = tarball.with_extension("tar.partial");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&partial)
        .arg(".")
        .output()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    let _ = std::fs::remove_dir_all(&rootfs);
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("tar of the rootfs failed: {}", describe(&out)));
    }
    std::fs::rename(&partial, tarball).map_err(|e| format!("{}: {e}", tarball.display()))
}

/// A running container with systemd as PID 1; removed on drop.
pub struct SystemdBox {
    host: String,
    pub id: String,
}

impl SystemdBox {
    /// Runs `image` with systemd and waits (≤ 60 s) until it is `running` or `degraded`.
    pub fn boot(docker: &DockerHandle, image: &str) -> Result<SystemdBox, String> {
        SystemdBox::boot_with(docker, image, &[])
    }

    /// [`SystemdBox::boot`] with extra `docker run` options (e.g. `-v HOST:CONTAINER`).
    pub fn boot_with(docker: &DockerHandle, image: &str, extra: &[&str]) -> Result<SystemdBox, String> {
        let mut args = vec![
            "run",
            "-d",
            "--cap-add=SYS_ADMIN",
            "--cgroupns=host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--network",
            "none",
            "--stop-signal=SIGRTMIN+3",
            "--label",
            "tailopsmcp-test=sysbox",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image, "/lib/systemd/systemd"]);
        let id = docker.run(&args)?.trim().to_string();
        let b = SystemdBox {
            host: docker.host.clone(),
            id,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = b.exec(&["systemctl", "is-system-running"])?;
            last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if last == "running" || last == "degraded" {
                return Ok(b);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let logs = b
            .docker()
            .args(["logs", &b.id])
            .output()
            .map(|o| describe(&o))
            .unwrap_or_default();
        Err(format!(
            "systemd in the container did not come up (state {last:?}): {logs}"
        ))
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", &self.host);
        c
    }

    /// `docker exec` in the container; the Output whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Result<Output, String> {
        self.docker()
            .arg("exec")
            .arg(&self.id)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run docker exec: {e}"))
    }

    /// `sh -c SCRIPT` in the container: Ok(stdout) on success, Err(all of it) otherwise.
    pub fn sh(&self, script: &str) -> Result<String, String> {
        let out = self.exec(&["sh", "-c", script])?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("`{script}` in the container: {}", describe(&out)))
        }
    }

    /// The host pid of the container's PID 1 (its namespaces are `/proc/PID/ns/*`).
    pub fn pid(&self) -> Result<u32, String> {
        let out = self
            .docker()
            .args(["inspect", "--format", "{{.State.Pid}}", &self.id])
            .output()
            .map_err(|e| format!("cannot run docker inspect: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("docker inspect: no pid: {}", describe(&out)))
    }

    /// Runs `ip ARGS` in the container's network namespace (from the host: the container itself
    /// has no CAP_NET_ADMIN).
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let pid = self.pid()?.to_string();
        let out = Command::new("nsenter")
            .args(["-t", &pid, "-n", "ip"])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run nsenter: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("ip {} in the container: {}", args.join(" "), describe(&out)))
        }
    }

    /// A TCP connection from `from` (an address on the container's `lo`) to `to`, created in the
    /// container's network namespace.
    pub async fn connect(
        &self,
        from: std::net::SocketAddr,
        to: std::net::SocketAddr,
    ) -> std::io::Result<tokio::net::TcpStream> {
        use std::os::fd::AsRawFd;
        let ns = format!("/proc/{}/ns/net", self.pid().map_err(std::io::Error::other)?);
        let socket = std::thread::spawn(move || -> std::io::Result<tokio::net::TcpSocket> {
            let f = std::fs::File::open(&ns)?;
            // SAFETY: setns on this short-lived thread only; the fd is valid for the call.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let s = if to.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            s.bind(from)?;
            Ok(s)
        })
        .join()
        .map_err(|_| std::io::Error::other("setns thread panicked"))??;
        tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
            .await
            .map_err(|_| std::io::Error::other(format!("connect {to}: timed out")))?
    }

    /// Copies a host file into the container.
    pub fn copy_in(&self, src: &Path, dest: &str) -> Result<(), String> {
        let out = self
            .docker()
            .arg("cp")
            .arg(src)
            .arg(format!("{}:{dest}", self.id))
            .output()
            .map_err(|e| format!("cannot run docker cp: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("docker cp {} {dest}: {}", src.display(), describe(&out)))
        }
    }
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        let _ = self
            .docker()
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
