//! Test harness: real Docker engines for the docker executor's tests — one engine on a unix socket
//! shared by every test on the machine, a second one behind `tcp://` + mutual TLS with certificates
//! made here, a busybox image made with `docker import`, and containers that remove themselves.
//!
//! Owns starting the two `dockerd`s (each once per machine, under a file lock, reused while its
//! socket answers) and the files they need. The daemons outlive the test process on purpose: later
//! tests and runs reuse them; CI stops them by the pids in [`PID_FILE`] and [`TLS_PID_FILE`]. It
//! must not touch an engine it did not start (the system's `/var/run/docker.sock` is never used),
//! pass `--privileged` (fails on these machines), or decide whether a test skips or fails (tests do
//! that with `netns::skip_or_fail` and the returned error).
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The shared engine's API socket.
pub const SOCKET: &str = "/run/tops-docker.sock";
/// [`SOCKET`] as a `DOCKER_HOST` / executor endpoint.
pub const DOCKER_HOST: &str = "unix:///run/tops-docker.sock";
/// Pid of the shared engine (written by dockerd itself); CI stops that process.
pub const PID_FILE: &str = "/run/tops-docker.pid";
/// The shared engine's exec root (its containerd lives under it).
pub const EXEC_ROOT: &str = "/run/tops-docker";
/// Pid of the TLS engine; CI stops that process too.
pub const TLS_PID_FILE: &str = "/run/tops-docker-tls.pid";
/// The TLS engine's exec root.
pub const TLS_EXEC_ROOT: &str = "/run/tops-docker-tls";
/// The TLS engine's certificates and port: machine-wide like the engine itself, so a test run in
/// another checkout finds them.
pub const TLS_DIR: &str = "/run/tops-docker-tls.d";
/// The image every test container runs.
pub const IMAGE: &str = "local/busybox:tops";
/// Label on every container made by [`run_container`], so a sweep can find leftovers.
pub const TEST_LABEL: &str = "tailopsmcp.test=1";

const LOCK_FILE: &str = "/run/tops-docker.lock";
const TLS_LOCK_FILE: &str = "/run/tops-docker-tls.lock";
/// How long a starting dockerd gets to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Storage drivers tried in order (overlay2 needs a filesystem that supports it under the data root).
const DRIVERS: &[&str] = &["overlay2", "vfs"];

/// Where the engines keep their data and logs: `target/dockerd/` of the checkout that started them.
pub fn state_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("dockerd")
}

/// Make sure the shared engine answers on [`SOCKET`], starting it if needed (once per machine:
/// a file lock serializes test processes). Returns the `DOCKER_HOST` to use. `Err` says why no
/// engine can run here.
pub fn ensure_dockerd() -> Result<String, String> {
    static STARTED: OnceLock<Result<String, String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            preflight()?;
            let _lock = FileLock::acquire(LOCK_FILE)?;
            if ping_unix(Path::new(SOCKET)) {
                return Ok(DOCKER_HOST.to_string());
            }
            let dir = state_dir();
            let data_root = dir.join("data");
            let log = dir.join("dockerd.log");
            let mut errors = Vec::new();
            for driver in DRIVERS {
                let _ = fs::remove_file(SOCKET);
                let args = vec![
                    "--iptables=false".to_string(),
                    // No docker0: any dockerd started with --bridge=none (the TLS one here, other
                    // harnesses' engines) deletes docker0 at start, which would break every later
                    // container on the default bridge. Containers get `--network=none` or a
                    // user-defined network instead.
                    "--bridge=none".to_string(),
                    "--ip-masq=false".to_string(),
                    format!("--storage-driver={driver}"),
                    format!("--data-root={}", data_root.display()),
                    format!("--exec-root={EXEC_ROOT}"),
                    format!("--pidfile={PID_FILE}"),
                    format!("-H={DOCKER_HOST}"),
                ];
                match start_daemon(&args, &log, || ping_unix(Path::new(SOCKET))) {
                    Ok(()) => return Ok(DOCKER_HOST.to_string()),
                    Err(e) => errors.push(format!("with {driver}: {e}")),
                }
            }
            Err(format!("dockerd did not start ({})", errors.join("; ")))
        })
        .clone()
}

/// Files and address of the TLS engine: `endpoint` is `tcp://127.0.0.1:PORT`; `ca` signed the
/// server's certificate (SAN `127.0.0.1`) and the client certificate `cert` / `key`.
#[derive(Clone, Debug)]
pub struct TlsEngine {
    pub endpoint: String,
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where the certificates are; tests may write more files here (another CA, say).
    pub dir: PathBuf,
}

/// Make sure a second engine answers on `tcp://127.0.0.1:PORT` with `--tlsverify` (client
/// certificates required), starting it with fresh certificates if needed. It has its own data and
/// exec roots, containerd namespaces and no bridge network; it runs no containers.
pub fn ensure_tls_dockerd() -> Result<TlsEngine, String> {
    static STARTED: OnceLock<Result<TlsEngine, String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            preflight()?;
            let _lock = FileLock::acquire(TLS_LOCK_FILE)?;
            let dir = PathBuf::from(TLS_DIR);
            let engine = |port: u16| TlsEngine {
                endpoint: format!("tcp://127.0.0.1:{port}"),
                port,
                ca: dir.join("ca.pem"),
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
                dir: dir.clone(),
            };
            // Reuse a running one whose files are still there.
            if let Some(port) = fs::read_to_string(dir.join("port"))
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                let e = engine(port);
                if pid_alive(TLS_PID_FILE) && tcp_open(port) && e.ca.exists() && e.cert.exists() && e.key.exists() {
                    return Ok(e);
                }
            }
            if pid_alive(TLS_PID_FILE) {
                return Err(format!(
                    "a TLS dockerd (pid in {TLS_PID_FILE}) is running but its files in {} are gone: stop it",
                    dir.display()
                ));
            }
            fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            write_certs(&dir)?;
            let data_root = state_dir().join("tls-data");
            let log = state_dir().join("dockerd-tls.log");
            let mut errors = Vec::new();
            for driver in DRIVERS {
                let port = free_port()?;
                let args = vec![
                    "--iptables=false".to_string(),
                    "--ip-masq=false".to_string(),
                    "--bridge=none".to_string(),
                    format!("--storage-driver={driver}"),
                    format!("--data-root={}", data_root.display()),
                    format!("--exec-root={TLS_EXEC_ROOT}"),
                    format!("--pidfile={TLS_PID_FILE}"),
                    "--containerd-namespace=tops-tls".to_string(),
                    "--containerd-plugins-namespace=tops-tls-plugins".to_string(),
                    "--tlsverify".to_string(),
                    format!("--tlscacert={}", dir.join("ca.pem").display()),
                    format!("--tlscert={}", dir.join("server-cert.pem").display()),
                    format!("--tlskey={}", dir.join("server-key.pem").display()),
                    format!("-H=tcp://127.0.0.1:{port}"),
                ];
                match start_daemon(&args, &log, || tcp_open(port)) {
                    Ok(()) => {
                        fs::write(dir.join("port"), format!("{port}\n")).map_err(|e| format!("write port: {e}"))?;
                        return Ok(engine(port));
                    }
                    Err(e) => errors.push(format!("with {driver}: {e}")),
                }
            }
            Err(format!("TLS dockerd did not start ({})", errors.join("; ")))
        })
        .clone()
}

/// Make a CA, a certificate (and key) signed by it and write them as `ca.pem`, `cert.pem`, `key.pem`
/// into `dir`: a client identity the TLS engine does not trust, or a CA it was not signed by.
pub fn write_other_ca(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let (ca_params, ca_key) = ca("tops other CA")?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (cert, key) = leaf(&issuer, false)?;
    write(dir, "ca.pem", &ca_cert.pem())?;
    write(dir, "cert.pem", &cert)?;
    write(dir, "key.pem", &key)
}

/// Import [`IMAGE`] into the engine at `host` from Debian's `busybox-static` (`/bin/busybox` and
/// a symlink per applet), unless it is there already. Returns the image name.
pub fn busybox_image(host: &str) -> Result<String, String> {
    // Engines this process has seen the image on (a failed import is tried again next time).
    static IMPORTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut imported = IMPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if !imported.iter().any(|h| h == host) {
        let _lock = FileLock::acquire(LOCK_FILE)?;
        if docker(host, &["image", "inspect", "--format", "{{.Id}}", IMAGE]).is_err() {
            import_busybox(host)?;
        }
        imported.push(host.to_string());
    }
    Ok(IMAGE.to_string())
}

fn import_busybox(host: &str) -> Result<(), String> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err("/bin/busybox not found: apt-get install -y busybox-static".to_string());
    }
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| format!("run /bin/busybox --list: {e}"))?;
    let root = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/log"] {
        fs::create_dir_all(root.path().join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    fs::copy(busybox, root.path().join("bin/busybox")).map_err(|e| format!("copy busybox: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let _ = symlink("busybox", root.path().join("bin").join(applet));
    }
    write(&root.path().join("etc"), "passwd", "root:x:0:0:root:/root:/bin/sh\n")?;
    write(&root.path().join("etc"), "group", "root:x:0:\n")?;
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("run tar: {e}"))?;
    let tar_out = tar.stdout.take().ok_or("tar stdout")?;
    let import = Command::new("docker")
        .args(["-H", host, "import", "-", IMAGE])
        .stdin(Stdio::from(tar_out))
        .output()
        .map_err(|e| format!("run docker import: {e}"))?;
    let tar_status = tar.wait().map_err(|e| format!("wait for tar: {e}"))?;
    if !tar_status.success() {
        return Err(format!("tar of the busybox root failed: {tar_status}"));
    }
    if !import.status.success() {
        return Err(format!(
            "docker import: {}",
            String::from_utf8_lossy(&import.stderr).trim()
        ));
    }
    Ok(())
}

/// A container made for one test; dropping it removes it (`docker rm -f -v`), also after a panic.
#[derive(Debug)]
pub struct Container {
    pub host: String,
    pub name: String,
    /// Full id.
    pub id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&self.host, &["rm", "-f", "-v", &self.id]);
    }
}

/// `docker run -d --name NAME --network=none IMAGE CMD...` on the engine at `host` (busybox image
/// imported first).
pub fn run_container(host: &str, name: &str, cmd: &[&str]) -> Result<Container, String> {
    run_container_with(host, name, &[], cmd)
}

/// Like [`run_container`], with extra `docker run` options (`-e`, `--label`, `--restart`…; a
/// `--network` option replaces `--network=none`).
pub fn run_container_with(host: &str, name: &str, options: &[&str], cmd: &[&str]) -> Result<Container, String> {
    let image = busybox_image(host)?;
    // A container of the same name left by a crashed run.
    let _ = docker(host, &["rm", "-f", "-v", name]);
    let mut args = vec!["run", "-d", "--name", name, "--label", TEST_LABEL];
    // The engine has no default bridge (see `ensure_dockerd`).
    if !options
        .iter()
        .any(|o| o.starts_with("--network") || o.starts_with("--net=") || *o == "--net")
    {
        args.push("--network=none");
    }
    args.extend_from_slice(options);
    args.push(&image);
    args.extend_from_slice(cmd);
    let id = docker(host, &args)?;
    Ok(Container {
        host: host.to_string(),
        name: name.to_string(),
        id: id.trim().to_string(),
    })
}

/// `docker -H HOST ARGS...`; stdout on success, stderr in the error.
pub fn docker(host: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(["-H", host])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---------------------------------------------------------------------------------------------

fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("dockerd needs root (run the tests as root)".to_string());
    }
    for (bin, package) in [("dockerd", "docker.io"), ("docker", "docker.io")] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("`{bin}` not runnable: apt-get install -y {package}"));
        }
    }
    fs::create_dir_all(state_dir()).map_err(|e| format!("create {}: {e}", state_dir().display()))
}

/// Starts dockerd with `args`, detached (own process group: it outlives the test process), and
/// waits until `ready()`. On failure the daemon is killed and its log's tail is in the error.
fn start_daemon(args: &[String], log: &Path, ready: impl Fn() -> bool) -> Result<(), String> {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|e| format!("dup log: {e}"))?;
    let mut child: Child = Command::new("dockerd")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start dockerd: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("dockerd exited at start ({status}): {}", log_tail(log)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "dockerd did not answer within {START_TIMEOUT:?}: {}",
        log_tail(log)
    ))
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// `GET /_ping` over the socket answers 200.
fn ping_unix(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.take(4096).read_to_end(&mut buf);
    let head = String::from_utf8_lossy(&buf);
    head.starts_with("HTTP/1.") && head.lines().next().is_some_and(|l| l.contains(" 200"))
}

fn tcp_open(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_secs(1)).is_ok()
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("local_addr: {e}"))
}

fn pid_alive(pid_file: &str) -> bool {
    let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<(), String> {
    let path = dir.join(name);
    fs::write(&path, contents).map_err(|e| format!("write {}: {e}", path.display()))
}

fn ca(name: &str) -> Result<(rcgen::CertificateParams, rcgen::KeyPair), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    Ok((params, key))
}

/// A certificate signed by `issuer`: for the server (SAN 127.0.0.1 and localhost) or a client.
fn leaf(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, server: bool) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let names = if server {
        vec!["localhost".to_string()]
    } else {
        Vec::new()
    };
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| e.to_string())?;
    if server {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
    } else {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tailopsmcp-test-client");
    }
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, issuer).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The TLS engine's CA, server certificate and client certificate.
fn write_certs(dir: &Path) -> Result<(), String> {
    let (ca_params, ca_key) = ca("tailopsmcp test docker CA")?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (server_cert, server_key) = leaf(&issuer, true)?;
    let (client_cert, client_key) = leaf(&issuer, false)?;
    write(dir, "ca.pem", &ca_cert.pem())?;
    write(dir, "server-cert.pem", &server_cert)?;
    write(dir, "server-key.pem", &server_key)?;
    write(dir, "cert.pem", &client_cert)?;
    write(dir, "key.pem", &client_key)
}

/// An exclusive `flock` on a file, held until dropped.
struct FileLock(File);

impl FileLock {
    fn acquire(path: &str) -> Result<FileLock, String> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("open lock {path}: {e}"))?;
        // SAFETY: flock on a file descriptor we own; blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("flock {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
