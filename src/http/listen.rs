//! Listeners: on this node's tailnet addresses only (waiting for tailscaled to be `Running`,
//! rebinding when the addresses change), on one loopback address in dev mode, and the Tailscale
//! Service listener (a loopback address or a unix socket) behind `tailscale serve`.
//!
//! **Invariant:** nothing here binds an address outside `100.64.0.0/10` / `fd7a:115c:a1e0::/48`,
//! except the explicitly requested loopback dev listener and the Service listener. The Service
//! listener serves only connections whose other end belongs to tailscaled's uid (`SO_PEERCRED`
//! on the unix socket, the kernel's `sock_diag` on loopback TCP), checked before a byte is read:
//! loopback is not a trust boundary. Each accepted connection carries a [`ConnInfo`] with its
//! peer into every request it makes. Every connection has a time limit for each request's
//! headers (and for the wait for the next one), and every request body one for the whole body
//! ([`DeadlineBody`]). At most `[server] max_connections` connections are open at once; one more
//! is closed as soon as it is accepted. No connection is polled in a loop: waiting for bytes is
//! waiting for readiness.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{AppState, ConnInfo, IdentityMode};
use crate::config::ServiceConfig;
use crate::limits::AddressSlot;
use crate::mcp;
use crate::tailnet::Reresolve;
use crate::tailnet::{self, localapi::Status};
use crate::tools::TailnetInfo;

/// Why serving could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "tailscaled runs in userspace-networking mode (TUN: false): there is no tailnet interface to bind. \
         Run tailscaled with a TUN device, or put tailopsmcp behind a Tailscale Service"
    )]
    Userspace,
    #[error("--dev-listen {0} is not a loopback address; the dev listener only binds 127.0.0.0/8 or [::1]")]
    DevNotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("configured listen address {0} is not one of this node's tailnet addresses {1:?}")]
    NotOurs(IpAddr, Vec<IpAddr>),
    #[error("the Service listener {0} is not a loopback address")]
    ServiceNotLoopback(SocketAddr),
    #[error("cannot listen on the unix socket {path}: {source}")]
    BindUnix { path: PathBuf, source: std::io::Error },
    #[error("{0} exists and is not a socket; not replacing it")]
    NotASocket(PathBuf),
    #[error("{0} is in use: another server accepts connections on it")]
    SocketInUse(PathBuf),
}

/// Which listener a connection arrived on.
#[derive(Clone)]
enum Entry {
    /// A tailnet address: the TCP peer is the caller; a PROXY header here is refused.
    Tailnet,
    /// A loopback address: the caller is the TCP peer, by explicit dev-mode choice.
    Dev,
    /// The Tailscale Service listener on loopback TCP: the connecting socket must belong to
    /// `uid` (tailscaled), and every connection must start with a PROXY v2 header.
    Service { name: Arc<str>, uid: u32 },
}

/// Serve on a loopback address with the dev identity. Runs until `shutdown`.
pub async fn serve_dev(
    state: Arc<AppState>,
    app: Router,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ListenError> {
    if !tailnet::is_loopback(addr.ip()) {
        return Err(ListenError::DevNotLoopback(addr));
    }
    let listener = bind(addr).map_err(|source| ListenError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    state.set_hosts([
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        bound.ip().to_string(),
    ]);
    tracing::info!(addr = %bound, "listening (dev mode, loopback only)");
    accept_loop(listener, app, state, shutdown, Entry::Dev).await;
    Ok(())
}

/// Serve the Tailscale Service listener (tailscaled's uid only, PROXY v2 required) on a unix
/// socket or a loopback address until `shutdown`.
pub async fn serve_service(
    state: Arc<AppState>,
    app: Router,
    service: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<(), ListenError> {
    let name: Arc<str> = service.name.as_str().into();
    let uid = service.tailscaled_uid;
    if let Some(path) = &service.socket {
        let listener = bind_unix(path)?;
        tracing::info!(socket = %path.display(), service = %service.name, tailscaled_uid = uid, "listening for the Tailscale Service on a unix socket (tailscaled's uid and PROXY v2 required)");
        unix_accept_loop(listener, app, state, shutdown, name, uid).await;
        // Best effort: the next start removes a stale socket anyway.
        let _ = std::fs::remove_file(path);
        return Ok(());
    }
    if !tailnet::is_loopback(service.listen.ip()) {
        return Err(ListenError::ServiceNotLoopback(service.listen));
    }
    let listener = bind(service.listen).map_err(|source| ListenError::Bind {
        addr: service.listen,
        source,
    })?;
    tracing::info!(addr = %service.listen, service = %service.name, tailscaled_uid = uid, "listening for the Tailscale Service (tailscaled's uid and PROXY v2 required)");
    accept_loop(listener, app, state, shutdown, Entry::Service { name, uid }).await;
    Ok(())
}

/// Serve on this node's tailnet addresses until `shutdown`: wait for `Running`, bind, follow
/// address changes.
pub async fn serve_tailnet(
    state: Arc<AppState>,
    app: Router,
    shared: Arc<mcp::Shared>,
    shutdown: CancellationToken,
) -> Result<(), ListenError> {
    let IdentityMode::Tailnet(api) = &state.mode else {
        unreachable!("serve_tailnet needs the tailnet identity mode");
    };
    let api = api.clone();
    let port = state.config.port;
    let mut bound: BTreeMap<IpAddr, CancellationToken> = BTreeMap::new();
    let mut last_wait_reason = String::new();
    let mut delay = Duration::from_millis(10);
    let mut running_since: Option<Instant> = None;

    loop {
        let status = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = api.status() => s,
        };
        let next_poll = match status {
            Err(e) => {
                let reason = format!("cannot read tailscaled status: {e}");
                if reason != last_wait_reason {
                    tracing::warn!("{reason}; retrying");
                    last_wait_reason = reason;
                }
                running_since = None;
                // Socket absent or broken: back off up to 2 s.
                delay = (delay * 2).min(Duration::from_secs(2));
                delay
            }
            Ok(status) if !status.is_running() => {
                let reason = format!("waiting for tailscaled: BackendState is {}", display_state(&status));
                if reason != last_wait_reason {
                    tracing::info!("{reason}");
                    last_wait_reason = reason;
                }
                running_since = None;
                // tailscaled answers: poll briskly (≤ 80 ms) so we listen soon after Running.
                delay = (delay * 2).min(Duration::from_millis(80));
                delay
            }
            Ok(status) => {
                if !status.tun {
                    return Err(ListenError::Userspace);
                }
                let first = running_since.is_none();
                let since = *running_since.get_or_insert_with(Instant::now);
                if first && !last_wait_reason.is_empty() {
                    tracing::info!("tailscaled is Running");
                }
                last_wait_reason.clear();
                let ours = own_ips(&status);
                let wanted: BTreeSet<IpAddr> = if state.config.listen.is_empty() {
                    ours.iter().copied().collect()
                } else {
                    for ip in &state.config.listen {
                        if !ours.contains(ip) {
                            tracing::warn!("{}", ListenError::NotOurs(*ip, ours.clone()));
                        }
                    }
                    state
                        .config
                        .listen
                        .iter()
                        .copied()
                        .filter(|ip| ours.contains(ip))
                        .collect()
                };
                refresh_identity(&state, &shared, &status);
                // Close listeners on addresses we no longer have.
                bound.retain(|ip, token| {
                    if wanted.contains(ip) {
                        true
                    } else {
                        tracing::info!(addr = %SocketAddr::new(*ip, port), "tailnet address gone; closing listener");
                        token.cancel();
                        false
                    }
                });
                let mut missing = false;
                for ip in &wanted {
                    if bound.contains_key(ip) {
                        continue;
                    }
                    let addr = SocketAddr::new(*ip, port);
                    match bind(addr) {
                        Ok(listener) => {
                            tracing::info!(addr = %addr, after_running_ms = since.elapsed().as_millis() as u64, "listening on tailnet address");
                            let token = shutdown.child_token();
                            tokio::spawn(accept_loop(
                                listener,
                                app.clone(),
                                state.clone(),
                                token.clone(),
                                Entry::Tailnet,
                            ));
                            bound.insert(*ip, token);
                        }
                        Err(source) => {
                            missing = true;
                            tracing::warn!("{}; retrying", ListenError::Bind { addr, source });
                        }
                    }
                }
                delay = Duration::from_millis(10);
                if missing {
                    Duration::from_millis(100)
                } else {
                    Duration::from_secs(2)
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(next_poll) => {}
        }
    }
    for token in bound.values() {
        token.cancel();
    }
    Ok(())
}

fn display_state(status: &Status) -> String {
    match status.backend_state.as_str() {
        "" => "unknown".to_string(),
        "NeedsLogin" => "NeedsLogin (run `tailscale up`)".to_string(),
        "Stopped" => "Stopped (run `tailscale up`)".to_string(),
        s => s.to_string(),
    }
}

/// This node's tailnet addresses (only tailnet ranges, whatever tailscaled says).
fn own_ips(status: &Status) -> Vec<IpAddr> {
    let ips = match &status.self_node {
        Some(s) if !s.tailscale_ips.is_empty() => &s.tailscale_ips,
        _ => &status.tailscale_ips,
    };
    ips.iter()
        .map(|ip| tailnet::unmap(*ip))
        .filter(|ip| tailnet::is_tailnet_ip(*ip))
        .collect()
}

/// Update the Host allow-list, the self-node id and the tailnet facts tools report.
fn refresh_identity(state: &AppState, shared: &mcp::Shared, status: &Status) {
    let ips = own_ips(status);
    let dns_name = status
        .self_node
        .as_ref()
        .map(|s| s.dns_name.trim_end_matches('.').to_string())
        .filter(|s| !s.is_empty());
    let mut names: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
    if let Some(fqdn) = &dns_name {
        names.push(fqdn.clone());
        if let Some(short) = fqdn.split('.').next() {
            names.push(short.to_string());
        }
    }
    if let Some(service) = &state.config.service {
        let suffix = status
            .current_tailnet
            .as_ref()
            .map(|t| t.magic_dns_suffix.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| status.magic_dns_suffix.clone());
        names.push(service.short_name().to_string());
        if !suffix.is_empty() {
            names.push(format!("{}.{suffix}", service.short_name()));
        }
    }
    state.set_hosts(names);
    state.set_self_node(
        status
            .self_node
            .as_ref()
            .map(|s| s.id.clone())
            .filter(|s| !s.is_empty()),
    );
    let tailnet = status.current_tailnet.as_ref();
    shared.set_tailnet(TailnetInfo {
        tailnet: tailnet.map(|t| t.name.clone()).filter(|s| !s.is_empty()),
        magic_dns_suffix: tailnet
            .map(|t| t.magic_dns_suffix.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| Some(status.magic_dns_suffix.clone()).filter(|s| !s.is_empty())),
        dns_name,
        addresses: ips,
    });
}

mod proxy {
    //! PROXY protocol v2 on the Service listener; detection of any PROXY header elsewhere.

    use std::net::SocketAddr;

    use ppp::v2;
    use tokio::io::{AsyncRead, AsyncReadExt};

    /// The v2 signature; a v1 header starts with `PROXY `.
    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    const V1_SIGNATURE: &[u8] = b"PROXY ";
    /// Address blocks plus generous room for TLVs; `tailscale serve` sends far less.
    const MAX_V2_BODY: usize = 1024;

    /// Read exactly one PROXY v2 header (no HTTP bytes) and return the source it names.
    pub async fn read_v2<S: AsyncRead + Unpin>(stream: &mut S) -> Result<SocketAddr, String> {
        let mut head = [0u8; 16];
        stream
            .read_exact(&mut head)
            .await
            .map_err(|_| "connection closed before a PROXY v2 header".to_string())?;
        if head.starts_with(V1_SIGNATURE) {
            return Err("PROXY v1 header; only v2 is accepted".into());
        }
        if &head[..12] != V2_SIGNATURE {
            return Err("no PROXY v2 header".into());
        }
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        if len > MAX_V2_BODY {
            return Err(format!("PROXY v2 header too long ({len} bytes)"));
        }
        let mut buf = head.to_vec();
        buf.resize(16 + len, 0);
        stream
            .read_exact(&mut buf[16..])
            .await
            .map_err(|_| "truncated PROXY v2 header".to_string())?;
        let header = v2::Header::try_from(buf.as_slice()).map_err(|e| format!("malformed PROXY v2 header: {e}"))?;
        if header.command != v2::Command::Proxy {
            return Err("PROXY v2 LOCAL command carries no caller".into());
        }
        match header.addresses {
            v2::Addresses::IPv4(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
            v2::Addresses::IPv6(a) => Ok(SocketAddr::from((a.source_address, a.source_port))),
            _ => Err("PROXY v2 header without an IP source address".into()),
        }
    }

    /// Read the first bytes of `stream` until they can no longer begin a PROXY v1 or v2
    /// signature (at most 12 bytes, consumed: hand them on with [`super::Prefixed`]), and say
    /// whether they are one. Each read waits for readiness, so a client that stalls inside a
    /// signature costs nothing until it sends more (or the caller's timeout ends it).
    pub async fn read_preamble<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<(Vec<u8>, bool)> {
        let mut buf = [0u8; V2_SIGNATURE.len()];
        let mut n = 0;
        loop {
            let seen = &buf[..n];
            let prefix_of = |sig: &[u8]| {
                let k = n.min(sig.len());
                seen[..k] == sig[..k]
            };
            let whole = |sig: &[u8]| n >= sig.len() && prefix_of(sig);
            if whole(V1_SIGNATURE) || whole(V2_SIGNATURE) {
                return Ok((seen.to_vec(), true));
            }
            if !prefix_of(V1_SIGNATURE) && !prefix_of(V2_SIGNATURE) {
                return Ok((seen.to_vec(), false));
            }
            let got = stream.read(&mut buf[n..]).await?;
            if got == 0 {
                // Closed inside a signature prefix: not a PROXY header; hyper sees the rest.
                return Ok((buf[..n].to_vec(), false));
            }
            n += got;
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Remove a stale socket file left by an earlier run (only a socket nobody accepts on), bind
/// `path`, and make it `0660` (the server's user and group; tailscaled as root passes anyway).
fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let bind_err = |source| ListenError::BindUnix {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ListenError::SocketInUse(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "removing a stale socket");
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            Err(e) => return Err(bind_err(e)),
        },
        Ok(_) => return Err(ListenError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    Ok(listener)
}

/// Counts connections closed for being over `[server] max_connections` and says so at most
/// every 10 s (no audit row: refusing must stay cheaper than connecting).
#[derive(Default)]
struct OverCap {
    dropped: u64,
    last_warned: Option<Instant>,
}

impl OverCap {
    fn note(&mut self, limit: usize) {
        self.dropped += 1;
        if self.last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(
                max_connections = limit,
                closed = self.dropped,
                "connection limit reached; closing new connections at once"
            );
            self.last_warned = Some(Instant::now());
            self.dropped = 0;
        }
    }
}

/// A place for one more connection from the caller address `ip`, or `None` when it has
/// `[server] max_connections_per_address` open (the connection is then closed unread, like one
/// over `max_connections`; a warning at most every 10 s).
fn address_slot(state: &AppState, ip: IpAddr) -> Option<AddressSlot> {
    static WARNED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let slot = state.per_address.take(tailnet::unmap(ip));
    if slot.is_none() {
        let mut warned = WARNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(
                addr = %ip,
                max_connections_per_address = state.config.max_connections_per_address,
                "connection limit per address reached; closing its new connections at once"
            );
            *warned = Some(Instant::now());
        }
    }
    slot
}

/// A slot for one more connection, or `None` when `[server] max_connections` are open.
fn connection_slot(state: &AppState, over: &mut OverCap) -> Option<OwnedSemaphorePermit> {
    let permit = state.connections.clone().try_acquire_owned().ok();
    if permit.is_none() {
        over.note(state.config.max_connections);
    }
    permit
}

async fn accept_loop(listener: TcpListener, app: Router, state: Arc<AppState>, stop: CancellationToken, entry: Entry) {
    accept_until(
        &stop,
        &state,
        || listener.accept(),
        |(stream, peer), permit| {
            tokio::spawn(admit(
                stream,
                peer,
                app.clone(),
                state.clone(),
                stop.clone(),
                entry.clone(),
                permit,
            ));
        },
    )
    .await;
}

async fn unix_accept_loop(
    listener: UnixListener,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
    name: Arc<str>,
    uid: u32,
) {
    accept_until(
        &stop,
        &state,
        || listener.accept(),
        |(stream, _), permit| {
            tokio::spawn(admit_unix(
                stream,
                app.clone(),
                state.clone(),
                stop.clone(),
                name.clone(),
                uid,
                permit,
            ));
        },
    )
    .await;
}

/// Accept connections until `stop`, handing each one within `[server] max_connections` to
/// `start` with its slot. One over the cap is dropped, which closes it before anything is read.
async fn accept_until<T, Fut>(
    stop: &CancellationToken,
    state: &AppState,
    mut accept: impl FnMut() -> Fut,
    mut start: impl FnMut(T, OwnedSemaphorePermit),
) where
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut over = OverCap::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = accept() => a,
        };
        match accepted {
            Ok(conn) => {
                if let Some(permit) = connection_slot(state, &mut over) {
                    start(conn, permit);
                }
            }
            Err(e) => {
                // Out of file descriptors and similar: do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a refusal on the unix Service socket is audited under: it has no IP peer.
const NO_IP_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Serve a connection on the unix Service socket if its peer runs as tailscaled's uid
/// (`SO_PEERCRED`, read before any byte) and it starts with a PROXY v2 header.
async fn admit_unix(
    mut stream: UnixStream,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
    name: Arc<str>,
    uid: u32,
    permit: OwnedSemaphorePermit,
) {
    let refused = match stream.peer_cred() {
        Ok(cred) if cred.uid() == uid => None,
        Ok(cred) => {
            let pid = cred.pid().map_or_else(|| "unknown".to_string(), |p| p.to_string());
            Some(format!(
                "connection from uid {} (pid {pid}), not tailscaled's uid {uid}",
                cred.uid()
            ))
        }
        Err(e) => Some(format!("peer credentials unavailable ({e}); refused")),
    };
    let result = match refused {
        Some(reason) => Err(reason),
        None => tokio::time::timeout(state.config.header_timeout, proxy::read_v2(&mut stream))
            .await
            .unwrap_or_else(|_| Err("no PROXY v2 header in time".into())),
    };
    match result {
        Ok(source) => serve_proxied(stream, source, name, app, state, stop, permit).await,
        Err(reason) => {
            super::refuse_audit(&state, None, NO_IP_PEER, None, format!("Service socket: {reason}")).await;
        }
    }
}

/// Serve a Service connection (TCP or unix) whose PROXY header named `source`, within that
/// caller address's connections.
async fn serve_proxied<S>(
    stream: S,
    source: SocketAddr,
    name: Arc<str>,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
    permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(slot) = address_slot(&state, source.ip()) else {
        return;
    };
    let conn = ConnInfo::new(tailnet::unmap_socket(source), Some(name));
    serve_connection(stream, conn, app, state.clone(), stop, (permit, slot)).await;
}

/// Decide who a new connection speaks for, then serve it: on the Service listener from its PROXY
/// v2 header once the connecting socket proved to be tailscaled's, elsewhere from the TCP peer
/// (refusing a PROXY header there: only `tailscale serve` may assert a caller's address).
async fn admit(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
    entry: Entry,
    permit: OwnedSemaphorePermit,
) {
    // Responses go out as several small writes (SSE events); without NODELAY, Nagle's
    // algorithm and delayed ACKs add ~40 ms to every call.
    let _ = stream.set_nodelay(true);
    let limit = state.config.header_timeout;
    // The caller's address is the TCP peer, except on the Service listener (below).
    let slot = || address_slot(&state, peer.ip());
    match entry {
        Entry::Dev => {
            let Some(slot) = slot() else { return };
            let conn = ConnInfo::new(tailnet::unmap_socket(peer), None);
            serve_connection(stream, conn, app, state.clone(), stop, (permit, slot)).await;
        }
        Entry::Tailnet => {
            let Some(slot) = slot() else { return };
            match tokio::time::timeout(limit, proxy::read_preamble(&mut stream)).await {
                Ok(Ok((prefix, false))) => {
                    let conn = ConnInfo::new(tailnet::unmap_socket(peer), None);
                    serve_connection(
                        Prefixed::new(prefix, stream),
                        conn,
                        app,
                        state.clone(),
                        stop,
                        (permit, slot),
                    )
                    .await;
                }
                Ok(Ok((_, true))) => {
                    super::refuse_audit(
                        &state,
                        None,
                        peer,
                        None,
                        "PROXY protocol header on a tailnet listener".into(),
                    )
                    .await;
                }
                Ok(Err(_)) | Err(_) => {}
            }
        }
        Entry::Service { name, uid } => {
            // Whose socket is this? Asked before a byte is read: loopback is open to every
            // local user, and only tailscaled may name a caller.
            let owner = stream
                .local_addr()
                .map_err(|e| format!("no local address ({e})"))
                .and_then(|local| owner::tcp_uid(peer, local));
            let result = match owner {
                Ok(owner) if owner == uid => tokio::time::timeout(limit, proxy::read_v2(&mut stream))
                    .await
                    .unwrap_or_else(|_| Err("no PROXY v2 header in time".into())),
                Ok(owner) => Err(format!("connection from uid {owner}, not tailscaled's uid {uid}")),
                Err(e) => Err(format!("owner of the connecting socket unknown ({e}); refused")),
            };
            match result {
                Ok(source) => serve_proxied(stream, source, name, app, state, stop, permit).await,
                Err(reason) => {
                    super::refuse_audit(&state, None, peer, None, format!("Service listener: {reason}")).await;
                }
            }
        }
    }
}

/// A stream whose first bytes were already read (to look for a PROXY signature): reads yield
/// `prefix` first, then the stream; writes go straight to the stream.
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed { prefix, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.prefix[this.pos..];
        if !rest.is_empty() {
            let k = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..k]);
            this.pos += k;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

mod owner {
    //! Which uid owns the other end of a loopback TCP connection: the kernel's `sock_diag`
    //! (`NETLINK_SOCK_DIAG`, `inet_diag`) looked up by the exact 4-tuple. Both ends are local,
    //! so the client's socket is in this network namespace with the uid that created it.

    use std::net::SocketAddr;

    use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_packet_sock_diag::constants::{
        AF_INET, AF_INET6, IPPROTO_TCP, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
    };
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

    /// The uid of the socket whose local address is `client` and remote address is `server`.
    ///
    /// Only a connected socket that a process still holds counts (established, or half-closed by
    /// its owner, and with an inode): a socket its owner already closed becomes a time-wait
    /// entry, which the kernel reports with uid 0 and inode 0, and a 4-tuple nobody holds any
    /// more can match a listener on the client's port instead; both are refused.
    pub fn tcp_uid(client: SocketAddr, server: SocketAddr) -> Result<u32, String> {
        if client.is_ipv4() != server.is_ipv4() {
            return Err("mixed address families".into());
        }
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| format!("sock_diag socket: {e}"))?;
        socket.bind_auto().map_err(|e| format!("sock_diag bind: {e}"))?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(|e| format!("sock_diag connect: {e}"))?;
        let mut header = NetlinkHeader::default();
        // No NLM_F_DUMP: the kernel looks up the one socket with this 4-tuple.
        header.flags = NLM_F_REQUEST;
        let request = SockDiagMessage::InetRequest(InetRequest {
            family: if client.is_ipv4() { AF_INET } else { AF_INET6 },
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: client.port(),
                destination_port: server.port(),
                source_address: client.ip(),
                destination_address: server.ip(),
                interface_id: 0,
                // INET_DIAG_NOCOOKIE: whichever socket has this 4-tuple.
                cookie: [0xff; 8],
            },
        });
        let mut packet = NetlinkMessage::new(header, request.into());
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        socket.send(&buf, 0).map_err(|e| format!("sock_diag send: {e}"))?;
        // The kernel answers inside send(); never wait here.
        let mut reply = Vec::with_capacity(8192);
        socket
            .recv(&mut reply, libc::MSG_DONTWAIT)
            .map_err(|e| format!("sock_diag recv: {e}"))?;
        let message =
            NetlinkMessage::<SockDiagMessage>::deserialize(&reply).map_err(|e| format!("sock_diag reply: {e}"))?;
        match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let id = &r.header.socket_id;
                let same = (
                    id.source_address,
                    id.source_port,
                    id.destination_address,
                    id.destination_port,
                ) == (client.ip(), client.port(), server.ip(), server.port());
                if !same {
                    Err("sock_diag answered about another socket".into())
                } else if ![TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2].contains(&r.header.state)
                    || r.header.inode == 0
                {
                    Err(format!(
                        "the connecting socket is no longer open (state {})",
                        r.header.state
                    ))
                } else {
                    Ok(r.header.uid)
                }
            }
            NetlinkPayload::Error(e) => Err(format!("no such socket ({})", e.to_io())),
            _ => Err("unexpected sock_diag reply".into()),
        }
    }
}

/// Serve HTTP/1.1 on an admitted connection; `_permit` holds its `max_connections` slot until
/// it ends.
async fn serve_connection<S>(
    stream: S,
    conn: ConnInfo,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
    _slots: (OwnedSemaphorePermit, AddressSlot),
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let body_timeout = state.config.body_timeout;
    // Set when a body of this connection missed its deadline. One flag per connection is
    // enough: HTTP/1.1 serves one request at a time, and the connection ends with that one
    // (the rest of its body is still unread).
    let timed_out = Arc::new(AtomicBool::new(false));
    // For a call a person said yes to: who is behind this connection now (one per connection).
    let again: Arc<dyn Reresolve> = Arc::new(super::Again::new(state.clone(), conn.clone()));
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(conn.clone());
        req.extensions_mut().insert(again.clone());
        let deadline = tokio::time::Instant::now() + body_timeout;
        let req = req.map(|inner| DeadlineBody::new(inner, deadline, timed_out.clone()));
        let app = app.clone();
        let timed_out = timed_out.clone();
        async move {
            let response = app.oneshot(req).await;
            if timed_out.load(Ordering::Relaxed) {
                // rmcp answered the body error with a 500; the client was too slow, not us.
                tracing::info!(peer = %peer, timeout_secs = body_timeout.as_secs(), "request body not received in time; closing the connection");
                return Ok(body_timeout_response(body_timeout));
            }
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}

/// A request body that must arrive whole by `deadline` (counted from when its headers were
/// read): after that, reading it fails and the request is answered with 408. Without it a
/// client could dribble a body for as long as it liked, holding a connection and a task.
///
/// The timer is armed only on the first read that has to wait for the client: a body that came
/// with its headers (nearly every MCP request) never touches it.
struct DeadlineBody {
    inner: Incoming,
    deadline: tokio::time::Instant,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] reads as once its deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
struct BodyTimedOut;

impl DeadlineBody {
    fn new(inner: Incoming, deadline: tokio::time::Instant, timed_out: Arc<AtomicBool>) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline,
            sleep: None,
            timed_out,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// 408 in the one refusal shape, closing the connection (the rest of the body is unread).
fn body_timeout_response(limit: Duration) -> axum::response::Response {
    let mut response = super::refusal(
        StatusCode::REQUEST_TIMEOUT,
        &format!("request body not received within {} s", limit.as_secs()),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The kernel names this process's uid as the owner of a loopback connection it opened (also
    /// half-closed), and nobody once that socket is closed (its time-wait entry reports uid 0).
    #[tokio::test]
    async fn sock_diag_names_the_owner_of_an_open_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).await.unwrap();
        let (_accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = unsafe { libc::geteuid() };
        assert_eq!(owner::tcp_uid(peer, server), Ok(me));
        // Another 4-tuple: nobody's.
        let other = SocketAddr::new(peer.ip(), peer.port().wrapping_add(1).max(1));
        assert!(owner::tcp_uid(other, server).is_err());
        // Half-closed by a process that still holds it: still that process's.
        let mut client = client;
        tokio::io::AsyncWriteExt::shutdown(&mut client).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(owner::tcp_uid(peer, server), Ok(me));
        drop(client);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let closed = owner::tcp_uid(peer, server);
        assert!(closed.is_err(), "a closed socket has no owner to trust: {closed:?}");
    }

    /// Bytes read while looking for a PROXY signature are handed on, in order, then the rest.
    #[tokio::test]
    async fn the_preamble_is_read_once_and_replayed() {
        for (sent, is_proxy) in [
            (&b"POST /mcp HTTP/1.1\r\n"[..], false),
            (&b"\r\n\r\nx"[..], false),
            (&b"PROXY TCP4 1.2.3.4"[..], true),
            (&b"\r\n\r\n\0\r\nQUIT\n!"[..], true),
            (&b"\r\n"[..], false),
        ] {
            let (mut a, mut b) = tokio::io::duplex(64);
            tokio::io::AsyncWriteExt::write_all(&mut a, sent).await.unwrap();
            drop(a);
            let (prefix, proxy) = proxy::read_preamble(&mut b).await.unwrap();
            assert_eq!(proxy, is_proxy, "{sent:?}");
            let mut all = Vec::new();
            Prefixed::new(prefix, b).read_to_end(&mut all).await.unwrap();
            assert_eq!(all, sent, "{sent:?}");
        }
    }
}
