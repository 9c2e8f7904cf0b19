//! The HTTP edge: `app(state) -> Router`, the identity middleware (whois → [`Caller`]), the Host
//! allow-list, session↔principal binding, and the one mapping from refusals to responses.
//! Listeners live in [`listen`].
//!
//! **Invariant:** no request reaches `/mcp` without a `Caller` resolved from the TCP peer by
//! tailscaled (or the explicit loopback dev identity). Client-sent identity headers are dropped,
//! never read. Every refusal here writes an audit row. This module runs no tools and touches no
//! SQL directly (it hands records to `audit`).

pub mod listen;
pub mod session;
pub mod sse;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::audit::{Auditor, Record};
use crate::config::Config;
use crate::mcp::{self, McpServer};
use crate::tailnet::{Caller, Reresolve, localapi::LocalApi};

/// Where identities come from.
pub enum IdentityMode {
    /// tailscaled `whois` of the TCP peer.
    Tailnet(LocalApi),
    /// A fixed identity for a loopback dev listener (`--dev-identity`).
    Dev { login: String },
}

/// State shared by every connection.
pub struct AppState {
    pub config: Arc<Config>,
    pub mode: IdentityMode,
    pub auditor: Auditor,
    /// Lowercase host names (no port, IPv6 without brackets) accepted in `Host`.
    hosts: RwLock<HashSet<String>>,
    /// This server's own node StableID (calls from it are refused unless `allow_self`).
    self_node: RwLock<Option<String>>,
    /// Live MCP sessions and who created each (shared with the rmcp service).
    sessions: Arc<session::Sessions>,
    /// Identity-layer refusals per peer address (`[limits.refusals]`).
    refusals: crate::limits::Refusals,
    /// One permit per open client connection, over every listener (`[server] max_connections`).
    connections: Arc<tokio::sync::Semaphore>,
    /// Open connections per caller address (`[server] max_connections_per_address`).
    per_address: crate::limits::PerAddress,
}

impl AppState {
    pub fn new(config: Arc<Config>, mode: IdentityMode, auditor: Auditor) -> AppState {
        let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
        AppState {
            mode,
            auditor: auditor.clone(),
            hosts: RwLock::new(HashSet::new()),
            self_node: RwLock::new(None),
            sessions: Arc::new(
                session::Sessions::new(session::Settings {
                    max_per_principal: config.limits.max_sessions_per_principal,
                    ..session::Settings::default()
                })
                .auditing(auditor),
            ),
            refusals: crate::limits::Refusals::new(config.limits.refusals),
            connections,
            per_address: crate::limits::PerAddress::new(config.max_connections_per_address),
            config,
        }
    }

    /// The session table, for [`mcp_service`].
    pub fn sessions(&self) -> Arc<session::Sessions> {
        self.sessions.clone()
    }

    /// Replace the Host allow-list with `names` plus the configured extra hosts.
    pub fn set_hosts(&self, names: impl IntoIterator<Item = String>) {
        let mut set: HashSet<String> = names
            .into_iter()
            .map(|n| normalize_host(&n))
            .filter(|n| !n.is_empty())
            .collect();
        set.extend(self.config.extra_hosts.iter().cloned());
        if let Ok(mut h) = self.hosts.write() {
            *h = set;
        }
    }

    pub fn set_self_node(&self, stable_id: Option<String>) {
        if let Ok(mut s) = self.self_node.write() {
            *s = stable_id;
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts
            .read()
            .map(|h| h.contains(&normalize_host(host)))
            .unwrap_or(false)
    }

    fn is_self(&self, caller: &Caller) -> bool {
        self.self_node
            .read()
            .ok()
            .and_then(|s| s.clone())
            .is_some_and(|id| id == caller.node_id)
    }
}

/// `Host` header value → bare lowercase host: port and IPv6 brackets removed, trailing dot dropped.
fn normalize_host(raw: &str) -> String {
    let raw = raw.trim().to_ascii_lowercase();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or("").to_string()
    } else if raw.matches(':').count() == 1 {
        raw.split(':').next().unwrap_or("").to_string()
    } else {
        raw
    };
    host.trim_end_matches('.').to_string()
}

/// A whois answer and when it was fetched.
type CachedCaller = Option<(Instant, Arc<Caller>)>;

/// Per TCP connection: the peer, and a short-lived cache of its whois answer.
#[derive(Clone)]
pub struct ConnInfo {
    /// The caller's address: the TCP peer, or the source a PROXY v2 header named on the
    /// Service listener.
    pub peer: SocketAddr,
    /// `svc:NAME` when the connection came through a Tailscale Service (whois then describes
    /// grants to that Service).
    pub svc_name: Option<Arc<str>>,
    cache: Arc<Mutex<CachedCaller>>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, svc_name: Option<Arc<str>>) -> ConnInfo {
        ConnInfo {
            peer,
            svc_name,
            cache: Arc::new(Mutex::new(None)),
        }
    }
}

/// The rmcp Streamable HTTP service, configured for this server.
pub fn mcp_service(
    config: &Config,
    shared: Arc<mcp::Shared>,
    sessions: Arc<session::Sessions>,
    shutdown: CancellationToken,
) -> StreamableHttpService<McpServer, session::Sessions> {
    let rmcp_config = StreamableHttpServerConfig::default()
        // Host is checked by `identify` against a list that follows the tailnet addresses.
        .disable_allowed_hosts()
        // MCP clients send no Origin; a browser page must not act with its user's identity.
        .with_allowed_origins(config.allowed_origins.clone())
        .enforce_origin_validation()
        .with_legacy_session_mode(config.sessions)
        .with_json_response(true)
        .with_max_request_body_bytes(config.max_body_bytes)
        // Stateless calls (2026-07-28) have no session to resume a stream in, so they get no
        // priming `retry:` event: it would only cost one more socket write per call. Session
        // calls keep the session layer's own (`session::Settings::retry`): its event id lets a
        // client whose connection dropped mid-call resume the stream (`GET` with
        // `Last-Event-ID`) from the session's memory while the call runs.
        .with_sse_retry(None)
        .with_cancellation_token(shutdown);
    StreamableHttpService::new(move || Ok(McpServer::new(shared.clone())), sessions, rmcp_config)
}

/// The whole HTTP application. Layer order: `identify` runs first for every path.
pub fn app(state: Arc<AppState>, mcp: StreamableHttpService<McpServer, session::Sessions>) -> Router {
    Router::new()
        .nest_service("/mcp", mcp)
        .fallback(|| async { refusal(StatusCode::NOT_FOUND, "not found: the MCP endpoint is /mcp") })
        .layer(middleware::from_fn_with_state(state, identify))
}

/// Headers a client might send hoping to be believed about who it is. Dropped unread.
const CLIENT_IDENTITY_HEADERS: &[&str] = &[
    "tailscale-user-login",
    "tailscale-user-name",
    "tailscale-user-profile-pic",
    "tailscale-app-capabilities",
    "tailscale-headers-info",
];

/// Resolve the caller from the TCP peer, check Host and session ownership, and pass the
/// request on with `Arc<Caller>` in its extensions.
async fn identify(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    for h in CLIENT_IDENTITY_HEADERS {
        req.headers_mut().remove(*h);
    }
    let what = format!("{} {}", req.method(), req.uri().path());
    let Some(conn) = req.extensions().get::<ConnInfo>().cloned() else {
        tracing::error!("request without connection info; refusing");
        return refusal(StatusCode::FORBIDDEN, "forbidden");
    };
    // The session the client names: recorded in any refusal's audit row, trusted for nothing
    // until `may_use` says this caller's principal created it.
    let session = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let presented = session.as_deref();

    // An address that keeps being refused is answered without asking tailscaled, and its
    // refusals are one audit row with a count, not one each.
    if let Err(limited) = st.refusals.left(conn.peer.ip()) {
        audit_refusal(&st, None, conn.peer, presented, limited.reason.clone()).await;
        let mut response = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("{}; retry after {} s", limited.reason, limited.retry_after_secs),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after_secs));
        return response;
    }

    let caller = match resolve(&st, &conn).await {
        Ok(c) => c,
        Err(reason) => {
            refuse_audit(&st, None, conn.peer, presented, format!("{what}: {reason}")).await;
            return refusal(
                StatusCode::FORBIDDEN,
                "forbidden: no tailnet identity for this connection",
            );
        }
    };
    if !st.config.allow_self && st.is_self(&caller) {
        refuse_audit(
            &st,
            Some(&caller),
            conn.peer,
            presented,
            format!("{what}: call from this server's own node (allow_self is off)"),
        )
        .await;
        return refusal(
            StatusCode::FORBIDDEN,
            "forbidden: calls from the server's own node are refused",
        );
    }
    let host = match single_host(req.headers()) {
        Ok(h) => h,
        Err(why) => {
            refuse_audit(&st, Some(&caller), conn.peer, presented, format!("{what}: {why}")).await;
            return refusal(StatusCode::BAD_REQUEST, &format!("bad request: {why}"));
        }
    };
    if !st.host_allowed(&host) {
        refuse_audit(
            &st,
            Some(&caller),
            conn.peer,
            presented,
            format!("{what}: Host `{host}` is not allowed"),
        )
        .await;
        return refusal(StatusCode::FORBIDDEN, "forbidden: Host not allowed");
    }
    if let Some(id) = &session
        && !st.sessions.may_use(id, &caller.principal)
    {
        refuse_audit(
            &st,
            Some(&caller),
            conn.peer,
            presented,
            format!("{what}: session belongs to another principal"),
        )
        .await;
        return refusal(StatusCode::NOT_FOUND, "session not found");
    }

    let method = req.method().clone();
    let principal = caller.principal.clone();
    req.extensions_mut().insert(caller.clone());
    let response = sse::coalesce(&method, next.run(req).await).await;
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return unparsable_body(&st, &caller, conn.peer, presented, &what, response).await;
    }

    if session.is_none()
        && let Some(id) = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok())
        && let Err(full) = st.sessions.bind(id, &principal)
    {
        refuse_audit(&st, Some(&caller), conn.peer, None, format!("{what}: {full}")).await;
        let mut refused = refusal(StatusCode::TOO_MANY_REQUESTS, &full.to_string());
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return refused;
    }
    response
}

/// rmcp answers a body that is not a JSON-RPC message (not JSON, a lone surrogate escape, ...)
/// with 415 and a plain-text error. That is a client's malformed request, not a wrong media
/// type: answer 400 with a JSON-RPC parse error (-32700), and audit it like every other refused
/// request (repeats counted). Any other 415 (a wrong `Content-Type`) passes unchanged.
async fn unparsable_body(
    st: &AppState,
    caller: &Caller,
    peer: SocketAddr,
    session: Option<&str>,
    what: &str,
    response: Response,
) -> Response {
    use http_body_util::BodyExt;
    const PREFIX: &str = "fail to deserialize request body ";
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let Some(why) = text.strip_prefix(PREFIX) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    // serde ends with where it stopped: left out of the audit reason, so identical floods of
    // bad bodies stay identical.
    let why = why.split(" at line ").next().unwrap_or(why);
    let why = crate::text::cap(why, 256);
    audit_refusal(
        st,
        Some(caller),
        peer,
        session,
        format!("{what}: the body is not a JSON-RPC message ({why})"),
    )
    .await;
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -32700, "message": format!("parse error: the body is not a JSON-RPC message ({why})") },
    });
    let mut resp = (StatusCode::BAD_REQUEST, Body::from(body.to_string())).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The one `Host` of a request (RFC 9112 §3.2: a request with two `Host` lines, or one whose
/// value is not `host[:port]`, is answered 400). Stricter than the URI grammar on purpose: a
/// comma (two values folded into one line by a proxy), whitespace or a control character is
/// refused rather than guessed at; no name in the allow-list has one.
fn single_host(headers: &http::HeaderMap) -> Result<String, &'static str> {
    let mut values = headers.get_all(header::HOST).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(header::HOST) {
            "more than one Host header"
        } else {
            "no Host header"
        });
    };
    let host = value.to_str().map_err(|_| "Host header is not ASCII")?;
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']'));
    if ok {
        Ok(host.to_string())
    } else {
        Err("malformed Host header")
    }
}

/// The caller behind this connection: the cached answer if fresh, else a whois.
async fn resolve(st: &AppState, conn: &ConnInfo) -> Result<Arc<Caller>, String> {
    let ttl = st.config.identity_cache;
    if let Ok(cache) = conn.cache.lock()
        && let Some((at, caller)) = cache.as_ref()
        && at.elapsed() < ttl
    {
        return Ok(caller.clone());
    }
    let caller = Arc::new(ask(st, conn).await?);
    if !ttl.is_zero()
        && let Ok(mut cache) = conn.cache.lock()
    {
        *cache = Some((Instant::now(), caller.clone()));
    }
    Ok(caller)
}

/// Who is behind `conn`, asked now (no cache).
async fn ask(st: &AppState, conn: &ConnInfo) -> Result<Caller, String> {
    Ok(match &st.mode {
        IdentityMode::Dev { login } => Caller::dev(login, conn.peer),
        IdentityMode::Tailnet(api) => {
            let who = api
                .whois(conn.peer, conn.svc_name.as_deref())
                .await
                .map_err(|e| format!("whois failed ({}): {e}", e.reason()))?;
            who.caller(conn.peer, &st.config.capability)
        }
    })
}

/// A connection, to ask again who is behind it (see [`Reresolve`]): the listener makes one per
/// connection and puts it in each of its requests.
pub(crate) struct Again {
    state: Arc<AppState>,
    conn: ConnInfo,
}

impl Again {
    pub(crate) fn new(state: Arc<AppState>, conn: ConnInfo) -> Again {
        Again { state, conn }
    }
}

impl Reresolve for Again {
    fn fresh(&self) -> futures::future::BoxFuture<'_, Result<Caller, String>> {
        Box::pin(ask(&self.state, &self.conn))
    }
}

/// Record a refusal at the identity layer (committed before the response goes out), with the
/// session id the request presented, if any (as presented, whoever it belongs to; the audit
/// writer caps its length like every client-sent string it stores), and count it against the
/// peer address's refusals.
pub(crate) async fn refuse_audit(
    st: &AppState,
    caller: Option<&Caller>,
    peer: SocketAddr,
    session: Option<&str>,
    reason: String,
) {
    st.refusals.count(peer.ip());
    audit_refusal(st, caller, peer, session, reason).await;
}

/// Record a refusal at the identity layer (repeats of an identical one are counted by the
/// audit log, not written one by one).
async fn audit_refusal(
    st: &AppState,
    caller: Option<&Caller>,
    peer: SocketAddr,
    session: Option<&str>,
    reason: String,
) {
    let session = session.map(str::to_string);
    let rec = match caller {
        Some(c) => Record::request(c, session, "http"),
        None => {
            let mut r = Record::new();
            r.method = "http".into();
            r.remote_addr = Some(peer.to_string());
            r.session_id = session;
            r
        }
    };
    tracing::info!(peer = %peer, reason = %reason, "refused");
    if let Err(e) = st.auditor.refuse(rec.denied(reason)).await {
        tracing::error!(error = %e, "audit write failed for a refusal");
    }
}

/// The one shape of every refusal: an HTTP status with a JSON-RPC error body.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -32001, "message": message },
    });
    let mut resp = (status, Body::from(body.to_string())).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalization() {
        for (raw, want) in [
            ("100.100.1.1:8471", "100.100.1.1"),
            ("100.100.1.1", "100.100.1.1"),
            ("[fd7a:115c:a1e0::1]:8471", "fd7a:115c:a1e0::1"),
            ("fd7a:115c:a1e0::1", "fd7a:115c:a1e0::1"),
            ("MCP-Host.tail3f9c2.ts.net.:443", "mcp-host.tail3f9c2.ts.net"),
            ("mcp-host", "mcp-host"),
            ("", ""),
        ] {
            assert_eq!(normalize_host(raw), want, "{raw}");
        }
    }

    #[test]
    fn exactly_one_well_formed_host() {
        let check = |values: &[&[u8]], want: Result<&str, &str>| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(header::HOST, HeaderValue::from_bytes(v).unwrap());
            }
            assert_eq!(single_host(&headers).as_deref().map_err(|e| *e), want, "{values:?}");
        };
        check(&[b"100.100.1.1:8471"], Ok("100.100.1.1:8471"));
        check(&[b"[fd7a:115c:a1e0::1]:8471"], Ok("[fd7a:115c:a1e0::1]:8471"));
        check(&[b"mcp.tail3f9c2.ts.net"], Ok("mcp.tail3f9c2.ts.net"));
        check(&[], Err("no Host header"));
        check(&[b"a", b"a"], Err("more than one Host header"));
        check(&[b"100.100.1.1, evil.example"], Err("malformed Host header"));
        check(&[b"100.100.1.1 x"], Err("malformed Host header"));
        check(&[b"a\tb"], Err("malformed Host header"));
        check(&[b""], Err("malformed Host header"));
        check(&[b"h\xc3\xa9"], Err("Host header is not ASCII"));
    }
}
