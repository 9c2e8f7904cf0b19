//! Real tailnet addresses for integration tests: a server network namespace whose TUN `tailscale0`
//! carries the server's tailnet address(es), a peer namespace whose `lo` carries the callers' tailnet
//! addresses, a veth pair between them, and sockets created inside either namespace.
//!
//! This is the recipe of TEST-ENV.md ("Tailnet addresses: TUN + network namespaces"), one namespace
//! pair per `Tailnet` so parallel tests never share state. Sockets are created on a short-lived std
//! thread that has `setns`-ed into the namespace (a socket keeps the namespace it was created in), so
//! a test controls both the listener's address and the caller's source address without spawning
//! processes. It knows nothing about MCP or the LocalAPI, and it must never touch the host's own
//! network namespace beyond creating and deleting its `tops-*` namespaces.
//!
//! Every daemon-backed test follows one skip policy, [`skip_or_fail`]: missing components fail in CI
//! (`CI=true`) and skip with a reason elsewhere.
#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long `connect` and `connect_in_server_ns` wait for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where `ip netns add` puts the namespace handles that `setns` opens.
const NETNS_DIR: &str = "/var/run/netns";
/// The veth ends; they only ever exist inside the two namespaces, so the names are fixed.
const VETH_SERVER: &str = "vsrv";
const VETH_PEER: &str = "vpeer";
/// Prefix of every namespace this harness creates (`tops-s-PID-N`, `tops-p-PID-N`).
const NS_PREFIX: &str = "tops-";

static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(0);

/// The standard skip policy of daemon-backed tests: in CI (`CI=true`) a missing component is a
/// failure, so this panics with `why`; elsewhere it says why the test is skipped, and the test returns.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required test component missing in CI: {why}");
    }
    eprintln!("skipping: {why}");
}

/// Checks once per process that this process is root, `ip` (iproute2) runs, and a network namespace
/// with a TUN device can be created and deleted here.
pub fn require_root_and_netns() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err("network namespaces need root (run the tests as root)".into());
            }
            match Command::new("ip").arg("-V").output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => return Err(format!("`ip -V` failed: {}", out.status)),
                Err(e) => return Err(format!("`ip` (iproute2) is not runnable: {e}")),
            }
            sweep_stale_namespaces();
            let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
            let ns = format!("{NS_PREFIX}x-{}-{n}", std::process::id());
            let result = ip(&["netns", "add", &ns])
                .and_then(|()| ip(&["-n", &ns, "tuntap", "add", "dev", "tailscale0", "mode", "tun"]));
            let _ = ip(&["netns", "del", &ns]);
            result.map_err(|e| format!("cannot create a network namespace with a TUN device: {e}"))
        })
        .clone()
}

/// One isolated tailnet: a server namespace and a peer (callers') namespace joined by a veth pair.
///
/// **Invariant:** dropping it deletes both namespaces (and with them the TUN and the veth pair),
/// also when the test panicked. Sockets created in them keep working until they are closed.
pub struct Tailnet {
    server_ns: String,
    peer_ns: String,
    server_ip: Ipv4Addr,
    server_ip6: Option<Ipv6Addr>,
    /// The server's and the peer's veth addresses (v4 /30, v6 /64).
    veth_server: Ipv4Addr,
    veth_peer: Ipv4Addr,
    veth_server6: Ipv6Addr,
    veth_peer6: Ipv6Addr,
    /// Caller addresses added so far (the first of each family is the default source).
    callers: Mutex<Vec<IpAddr>>,
}

impl Tailnet {
    /// Creates a unique pair of namespaces, a TUN `tailscale0` in the server namespace carrying
    /// `server_ip`/32 (and `server_ip6`/128), `lo` up in both, a veth pair with a private /30 (and a
    /// ULA /64) unique to this instance, and routes to the server's addresses from the peer.
    pub fn new(server_ip: Ipv4Addr, server_ip6: Option<Ipv6Addr>) -> Result<Tailnet, String> {
        require_root_and_netns()?;
        let pid = std::process::id();
        let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        // A /30 inside 10.250.0.0/16 and a /64 inside fd00:7e57::/32, distinct per process and instance.
        let slot = ((pid & 0xff) << 6 | (n & 0x3f)) as u16;
        let base = u32::from(Ipv4Addr::new(10, 250, 0, 0)) + (u32::from(slot) << 2);
        let net = Tailnet {
            server_ns: format!("{NS_PREFIX}s-{pid}-{n}"),
            peer_ns: format!("{NS_PREFIX}p-{pid}-{n}"),
            server_ip,
            server_ip6,
            veth_server: Ipv4Addr::from(base + 1),
            veth_peer: Ipv4Addr::from(base + 2),
            veth_server6: Ipv6Addr::new(0xfd00, 0x7e57, pid as u16, n as u16, 0, 0, 0, 1),
            veth_peer6: Ipv6Addr::new(0xfd00, 0x7e57, pid as u16, n as u16, 0, 0, 0, 2),
            callers: Mutex::new(Vec::new()),
        };
        // `net` already owns the names: an early return drops it and deletes what was created.
        net.setup()?;
        Ok(net)
    }

    fn setup(&self) -> Result<(), String> {
        let (s, p) = (self.server_ns.as_str(), self.peer_ns.as_str());
        let v4 = |a: Ipv4Addr, len: u8| format!("{a}/{len}");
        let v6 = |a: Ipv6Addr, len: u8| format!("{a}/{len}");
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", p])?;
        ip(&["-n", s, "link", "set", "lo", "up"])?;
        ip(&["-n", p, "link", "set", "lo", "up"])?;
        ip(&["-n", s, "tuntap", "add", "dev", "tailscale0", "mode", "tun"])?;
        ip(&["-n", s, "link", "set", "tailscale0", "up"])?;
        ip(&["-n", s, "addr", "add", &v4(self.server_ip, 32), "dev", "tailscale0"])?;
        if let Some(ip6) = self.server_ip6 {
            // nodad: a TUN nobody reads never finishes duplicate address detection.
            ip(&["-n", s, "addr", "add", &v6(ip6, 128), "dev", "tailscale0", "nodad"])?;
        }
        // Created inside the namespaces, so the names never meet another instance's.
        ip(&[
            "-n",
            s,
            "link",
            "add",
            VETH_SERVER,
            "type",
            "veth",
            "peer",
            "name",
            VETH_PEER,
            "netns",
            p,
        ])?;
        ip(&["-n", s, "addr", "add", &v4(self.veth_server, 30), "dev", VETH_SERVER])?;
        ip(&["-n", p, "addr", "add", &v4(self.veth_peer, 30), "dev", VETH_PEER])?;
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &v6(self.veth_server6, 64),
            "dev",
            VETH_SERVER,
            "nodad",
        ])?;
        ip(&[
            "-n",
            p,
            "addr",
            "add",
            &v6(self.veth_peer6, 64),
            "dev",
            VETH_PEER,
            "nodad",
        ])?;
        ip(&["-n", s, "link", "set", VETH_SERVER, "up"])?;
        ip(&["-n", p, "link", "set", VETH_PEER, "up"])?;
        ip(&[
            "-n",
            p,
            "route",
            "add",
            &v4(self.server_ip, 32),
            "via",
            &self.veth_server.to_string(),
        ])?;
        if let Some(ip6) = self.server_ip6 {
            let via = self.veth_server6.to_string();
            ip(&["-n", p, "-6", "route", "add", &v6(ip6, 128), "via", &via])?;
        }
        Ok(())
    }

    /// Adds a caller's tailnet address (`/32` or `/128`) on the peer namespace's `lo` and the server's
    /// route back to it. The first caller address of each family becomes the peer's default source
    /// towards the server's address of that family (see [`Tailnet::set_default_source`]).
    pub fn add_caller(&self, addr: IpAddr) -> Result<(), String> {
        let (s, p) = (self.server_ns.as_str(), self.peer_ns.as_str());
        match addr {
            IpAddr::V4(a) => {
                ip(&["-n", p, "addr", "add", &format!("{a}/32"), "dev", "lo"])?;
                ip(&[
                    "-n",
                    s,
                    "route",
                    "add",
                    &format!("{a}/32"),
                    "via",
                    &self.veth_peer.to_string(),
                ])?;
            }
            IpAddr::V6(a) => {
                ip(&["-n", p, "addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"])?;
                let via = self.veth_peer6.to_string();
                ip(&["-n", s, "-6", "route", "add", &format!("{a}/128"), "via", &via])?;
            }
        }
        let first_of_family = {
            let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
            let first = !callers.iter().any(|c| c.is_ipv4() == addr.is_ipv4());
            callers.push(addr);
            first
        };
        // Only where the server has an address of that family to route to.
        if first_of_family && (addr.is_ipv4() || self.server_ip6.is_some()) {
            self.set_default_source(addr)?;
        }
        Ok(())
    }

    /// (Re)writes the peer's route to the server's address of `addr`'s family with `src addr`, so a
    /// process in the peer namespace that does not bind (a Python client, curl) connects from `addr`.
    /// `addr` must have been added with [`Tailnet::add_caller`].
    pub fn set_default_source(&self, addr: IpAddr) -> Result<(), String> {
        let p = self.peer_ns.as_str();
        match addr {
            IpAddr::V4(a) => {
                let dst = format!("{}/32", self.server_ip);
                let via = self.veth_server.to_string();
                ip(&["-n", p, "route", "replace", &dst, "via", &via, "src", &a.to_string()])
            }
            IpAddr::V6(a) => {
                let Some(ip6) = self.server_ip6 else {
                    return Err("this tailnet has no server IPv6 address".into());
                };
                let dst = format!("{ip6}/128");
                let via = self.veth_server6.to_string();
                ip(&[
                    "-n",
                    p,
                    "-6",
                    "route",
                    "replace",
                    &dst,
                    "via",
                    &via,
                    "src",
                    &a.to_string(),
                ])
            }
        }
    }

    pub fn server_ns(&self) -> &str {
        &self.server_ns
    }

    pub fn peer_ns(&self) -> &str {
        &self.peer_ns
    }

    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_ip
    }

    pub fn server_ip6(&self) -> Option<Ipv6Addr> {
        self.server_ip6
    }

    /// A TCP connection from `from` (an address added with [`Tailnet::add_caller`]), created in the
    /// peer namespace, to `to`.
    pub async fn connect(&self, from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = in_netns(&self.peer_ns, move || {
            let socket = new_tcp_socket(to)?;
            socket.bind(SocketAddr::new(from, 0))?;
            Ok(socket)
        })
        .await?;
        connect_with_timeout(socket, to).await
    }

    /// A TCP connection attempt made from inside the server namespace (e.g. to `127.0.0.1:port`, to
    /// prove that nothing listens there).
    pub async fn connect_in_server_ns(&self, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = in_netns(&self.server_ns, move || new_tcp_socket(to)).await?;
        connect_with_timeout(socket, to).await
    }

    /// A listener bound to `addr` inside the server namespace (port 0 picks a free port; read it back
    /// with `local_addr`). Must be called inside a tokio runtime.
    pub fn bind_in_server_ns(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let socket = in_netns_blocking(&self.server_ns, move || {
            let socket = new_tcp_socket(addr)?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            Ok(socket)
        })?;
        socket.listen(1024)
    }

    /// `ip netns exec <server ns> <program>` as a tokio `Command`; the caller adds arguments, env and
    /// stdio. The child is killed when the `Child` is dropped.
    pub fn command_in_server_ns(&self, program: &Path) -> tokio::process::Command {
        netns_exec(&self.server_ns, program.as_os_str())
    }

    /// `ip netns exec <peer ns> <program>` as a tokio `Command` (see [`Tailnet::command_in_server_ns`]).
    pub fn command_in_peer_ns(&self, program: &str) -> tokio::process::Command {
        netns_exec(&self.peer_ns, program.as_ref())
    }

    /// Local addresses of the TCP sockets in state LISTEN inside the server namespace, from
    /// `/proc/thread-self/net/tcp` and `tcp6` read by a thread that entered it. Panics if the
    /// namespace cannot be entered (a broken harness, not a property of the code under test).
    pub fn listening_sockets(&self) -> Vec<SocketAddr> {
        let tables = in_netns_blocking(&self.server_ns, || {
            let v4 = std::fs::read_to_string("/proc/thread-self/net/tcp")?;
            let v6 = std::fs::read_to_string("/proc/thread-self/net/tcp6").unwrap_or_default();
            Ok((v4, v6))
        })
        .unwrap_or_else(|e| panic!("reading /proc/net/tcp in {}: {e}", self.server_ns));
        let mut out = parse_proc_net_tcp(&tables.0, false);
        out.extend(parse_proc_net_tcp(&tables.1, true));
        out
    }
}

impl Drop for Tailnet {
    fn drop(&mut self) {
        for ns in [&self.peer_ns, &self.server_ns] {
            if Path::new(NETNS_DIR).join(ns).exists()
                && let Err(e) = ip(&["netns", "del", ns])
            {
                eprintln!("netns harness: cannot delete namespace {ns}: {e}");
            }
        }
    }
}

/// Runs `ip ARGS`, turning a non-zero exit into an error carrying the command and its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("ip {}: {}: {}", args.join(" "), out.status, stderr.trim()))
    }
}

fn netns_exec(ns: &str, program: &std::ffi::OsStr) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program).kill_on_drop(true);
    cmd
}

/// Deletes `tops-*-PID-N` namespaces left behind by test processes that died without unwinding
/// (SIGKILL, abort). Namespaces of live processes are left alone.
fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

fn new_tcp_socket(like: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    if like.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
}

async fn connect_with_timeout(socket: tokio::net::TcpSocket, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(to)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect to {to} timed out after {CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// Runs `f` on a fresh std thread that has entered network namespace `ns`; the thread then exits, so
/// no pooled thread ever changes namespace. Awaits the result without blocking the runtime.
async fn in_netns<T, F>(ns: &str, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let path = Path::new(NETNS_DIR).join(ns);
    std::thread::spawn(move || {
        let _ = tx.send(enter_netns(&path).and_then(|()| f()));
    });
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("netns helper thread panicked")))
}

/// Same as [`in_netns`], for synchronous callers (joins the helper thread).
fn in_netns_blocking<T, F>(ns: &str, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let path = Path::new(NETNS_DIR).join(ns);
    std::thread::spawn(move || enter_netns(&path).and_then(|()| f()))
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns helper thread panicked")))
}

/// Moves the calling thread (only it) into the network namespace at `path`.
fn enter_netns(path: &Path) -> std::io::Result<()> {
    let file = File::open(path).map_err(|e| std::io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    // SAFETY: `file` is an open namespace handle for the duration of the call; setns only changes
    // this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("setns {}: {e}", path.display())));
    }
    Ok(())
}

/// Local addresses of the sockets in state LISTEN (`0A`) of a `/proc/net/tcp{,6}` table. Addresses
/// there are hex words in host byte order (4 for v6), ports hex big-endian.
fn parse_proc_net_tcp(table: &str, v6: bool) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || fields[3] != "0A" {
            continue;
        }
        let Some((addr_hex, port_hex)) = fields[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        let words: Option<Vec<u32>> = (0..addr_hex.len() / 8)
            .map(|i| u32::from_str_radix(&addr_hex[i * 8..i * 8 + 8], 16).ok())
            .collect();
        let Some(words) = words else { continue };
        let ip = match (v6, words.as_slice()) {
            (false, [w]) => IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())),
            (true, [a, b, c, d]) => {
                let mut bytes = [0u8; 16];
                for (i, w) in [a, b, c, d].into_iter().enumerate() {
                    bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            }
            _ => continue,
        };
        out.push(SocketAddr::new(ip, port));
    }
    out
}
