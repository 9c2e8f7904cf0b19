//! Listeners: on this node's tailnet addresses only (waiting for tailscaled to be `Running`,
//! rebinding when the addresses change), or on one loopback address in dev mode.
//!
//! **Invariant:** nothing here binds an address outside `100.64.0.0/10` / `fd7a:115c:a1e0::/48`,
//! except the explicitly requested loopback dev listener. Each accepted connection carries a
//! [`ConnInfo`] with its peer into every request it makes. Every connection has a time limit
//! for each request's headers (and for the wait for the next one), and every request body one
//! for the whole body ([`DeadlineBody`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
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
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{AppState, ConnInfo, IdentityMode};
use crate::config::ServiceConfig;
use crate::mcp;
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
}

/// Which listener a connection arrived on.
#[derive(Clone)]
enum Entry {
    /// A tailnet address: the TCP peer is the caller; a PROXY header here is refused.
    Tailnet,
    /// A loopback address: the caller is the TCP peer, by explicit dev-mode choice.
    Dev,
    /// The Tailscale Service listener: every connection must start with a PROXY v2 header.
    Service(Arc<str>),
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

/// Serve the Tailscale Service listener (loopback, PROXY v2 required) until `shutdown`.
pub async fn serve_service(
    state: Arc<AppState>,
    app: Router,
    service: ServiceConfig,
    shutdown: CancellationToken,
) -> Result<(), ListenError> {
    if !tailnet::is_loopback(service.listen.ip()) {
        return Err(ListenError::ServiceNotLoopback(service.listen));
    }
    let listener = bind(service.listen).map_err(|source| ListenError::Bind {
        addr: service.listen,
        source,
    })?;
    tracing::info!(addr = %service.listen, service = %service.name, "listening for the Tailscale Service (PROXY v2 required)");
    accept_loop(
        listener,
        app,
        state,
        shutdown,
        Entry::Service(service.name.as_str().into()),
    )
    .await;
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
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    /// The v2 signature; a v1 header starts with `PROXY `.
    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    const V1_SIGNATURE: &[u8] = b"PROXY ";
    /// Address blocks plus generous room for TLVs; `tailscale serve` sends far less.
    const MAX_V2_BODY: usize = 1024;

    /// Read exactly one PROXY v2 header (no HTTP bytes) and return the source it names.
    pub async fn read_v2(stream: &mut TcpStream) -> Result<SocketAddr, String> {
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

    /// Whether the first bytes on `stream` are a PROXY v1 or v2 header (peeked, not consumed).
    pub async fn starts_with_proxy_header(stream: &TcpStream) -> std::io::Result<bool> {
        let mut buf = [0u8; 12];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Ok(false);
            }
            let seen = &buf[..n];
            let could_be = |sig: &[u8]| sig.starts_with(&seen[..n.min(sig.len())]);
            let is_v1 = n >= V1_SIGNATURE.len() && seen.starts_with(V1_SIGNATURE);
            let is_v2 = n >= V2_SIGNATURE.len() && seen.starts_with(V2_SIGNATURE);
            if is_v1 || is_v2 {
                return Ok(true);
            }
            if !could_be(V1_SIGNATURE) && !could_be(V2_SIGNATURE) {
                return Ok(false);
            }
            // A prefix of a signature so far: wait for more bytes.
            stream.readable().await?;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
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

async fn accept_loop(listener: TcpListener, app: Router, state: Arc<AppState>, stop: CancellationToken, entry: Entry) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(admit(
                    stream,
                    peer,
                    app.clone(),
                    state.clone(),
                    stop.clone(),
                    entry.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and similar: do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Decide who a new connection speaks for, then serve it: on the Service listener from its PROXY
/// v2 header, elsewhere from the TCP peer (refusing a PROXY header there: only `tailscale serve`
/// on loopback may assert a caller's address).
async fn admit(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
    entry: Entry,
) {
    // Responses go out as several small writes (SSE events); without NODELAY, Nagle's
    // algorithm and delayed ACKs add ~40 ms to every call.
    let _ = stream.set_nodelay(true);
    let limit = state.config.header_timeout;
    let conn = match entry {
        Entry::Dev => ConnInfo::new(tailnet::unmap_socket(peer), None),
        Entry::Tailnet => match tokio::time::timeout(limit, proxy::starts_with_proxy_header(&stream)).await {
            Ok(Ok(false)) => ConnInfo::new(tailnet::unmap_socket(peer), None),
            Ok(Ok(true)) => {
                super::refuse_audit(
                    &state,
                    None,
                    peer,
                    None,
                    "PROXY protocol header on a tailnet listener".into(),
                )
                .await;
                return;
            }
            Ok(Err(_)) | Err(_) => return,
        },
        Entry::Service(name) => match tokio::time::timeout(limit, proxy::read_v2(&mut stream)).await {
            Ok(Ok(source)) => ConnInfo::new(tailnet::unmap_socket(source), Some(name)),
            Ok(Err(reason)) => {
                super::refuse_audit(&state, None, peer, None, format!("Service listener: {reason}")).await;
                return;
            }
            Err(_) => {
                super::refuse_audit(
                    &state,
                    None,
                    peer,
                    None,
                    "Service listener: no PROXY v2 header in time".into(),
                )
                .await;
                return;
            }
        },
    };
    serve_connection(stream, conn, app, state, stop).await;
}

async fn serve_connection(
    stream: TcpStream,
    conn: ConnInfo,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
) {
    let peer = conn.peer;
    let body_timeout = state.config.body_timeout;
    // Set when a body of this connection missed its deadline. One flag per connection is
    // enough: HTTP/1.1 serves one request at a time, and the connection ends with that one
    // (the rest of its body is still unread).
    let timed_out = Arc::new(AtomicBool::new(false));
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(conn.clone());
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
