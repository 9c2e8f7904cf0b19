//! Listeners: on this node's tailnet addresses only (waiting for tailscaled to be `Running`,
//! rebinding when the addresses change), or on one loopback address in dev mode.
//!
//! **Invariant:** nothing here binds an address outside `100.64.0.0/10` / `fd7a:115c:a1e0::/48`,
//! except the explicitly requested loopback dev listener. Each accepted connection carries a
//! [`ConnInfo`] with its peer into every request it makes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{AppState, ConnInfo, IdentityMode};
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
    accept_loop(listener, app, state, shutdown).await;
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
                            tokio::spawn(accept_loop(listener, app.clone(), state.clone(), token.clone()));
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

async fn accept_loop(listener: TcpListener, app: Router, state: Arc<AppState>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(stream, peer, app.clone(), state.clone(), stop.clone()));
            }
            Err(e) => {
                // Out of file descriptors and similar: do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
) {
    // Responses go out as several small writes (SSE events); without NODELAY, Nagle's
    // algorithm and delayed ACKs add ~40 ms to every call.
    let _ = stream.set_nodelay(true);
    let conn = ConnInfo::new(tailnet::unmap_socket(peer));
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(conn.clone());
        app.clone().oneshot(req)
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
