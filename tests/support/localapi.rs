//! A stand-in for tailscaled's LocalAPI, for integration tests (tailscaled cannot run here).
//!
//! It listens on a real unix socket (mode 0666, in a fresh 0755 temp dir, so a server process in
//! another network namespace can connect) and speaks the wire format of tailscaled's
//! `ipn/localapi` handler: HTTP/1.1 with keep-alive; a request without `Host` gets net/http's
//! `400 Bad Request: missing required Host header`; any `Origin`/`Referer`, or a `Host` other than
//! empty or `local-tailscaled.sock`, gets 403 `invalid localapi request\n`; errors are
//! `text/plain; charset=utf-8` with a trailing newline; `whois` answers tab-indented JSON,
//! `status` a tab-indented JSON line. Like tailscaled before v1.102 it does not unmap
//! `::ffff:a.b.c.d`: a v4 identity only answers a v4 address.
//!
//! Knobs make it slow, hung, failing or absent. It serves from its own thread and runtime, so it
//! keeps answering while a test blocks (e.g. waiting on a child process) and is independent of the
//! test's runtime flavour. It must not know anything about the server under test.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc as std_mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Requests kept for [`StandIn::requests`]; older ones are dropped first.
const MAX_RECORDED: usize = 10_000;

/// An in-process LocalAPI stand-in. Dropping it stops serving and removes the socket.
pub struct StandIn {
    dir: tempfile::TempDir,
    socket: PathBuf,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as sent (still percent-encoded).
    pub path: String,
    /// Header names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }

    /// The first value of query parameter `name`, decoded like Go's `FormValue`.
    pub fn query(&self, name: &str) -> Option<String> {
        form_value(&self.path, name)
    }
}

/// A raw HTTP answer read by [`raw_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl StandIn {
    /// A running stand-in on `tailscaled.sock` in a fresh temp dir, serving the `status.json`
    /// fixture (BackendState `Running`) and no identities.
    pub async fn start() -> StandIn {
        let dir = tempfile::Builder::new()
            .prefix("localapi-")
            .tempdir()
            .expect("stand-in: create temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("stand-in: chmod temp dir");
        let socket = dir.path().join("tailscaled.sock");
        let mut status = fixture("status.json");
        status["BackendState"] = Value::from("Running");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                status,
                identities: HashMap::new(),
                delay: Duration::ZERO,
                hang: false,
                fail: None,
                absent: false,
                requests: VecDeque::new(),
            }),
            connections: AtomicUsize::new(0),
            whois: AtomicUsize::new(0),
        });
        let listener = bind(&socket);
        let (commands, rx) = mpsc::unbounded_channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("localapi-stand-in".into())
            .spawn(move || serve(listener, thread_shared, rx))
            .expect("stand-in: spawn thread");
        StandIn {
            dir,
            socket,
            shared,
            commands,
            thread: Some(thread),
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Serve this full status JSON from now on.
    pub fn set_status(&self, status: Value) {
        self.state().status = status;
    }

    /// Edit `BackendState` in the current status.
    pub fn set_backend_state(&self, state: &str) {
        self.state().status["BackendState"] = Value::from(state);
    }

    /// Edit `TailscaleIPs` and `Self.TailscaleIPs` in the current status.
    pub fn set_self_ips(&self, ips: &[IpAddr]) {
        let ips: Vec<Value> = ips.iter().map(|ip| Value::from(ip.to_string())).collect();
        let mut st = self.state();
        st.status["TailscaleIPs"] = Value::from(ips.clone());
        st.status["Self"]["TailscaleIPs"] = Value::from(ips);
    }

    /// Any port from `ip` (and the bare IP) whoises as `whois` from now on.
    pub fn add_identity(&self, ip: IpAddr, whois: Value) {
        self.state().identities.insert(ip, whois);
    }

    pub fn remove_identity(&self, ip: IpAddr) {
        self.state().identities.remove(&ip);
    }

    /// Slow: answer every request after `d` (zero: no delay).
    pub fn set_delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// Hung: read requests and never answer them.
    pub fn set_hang(&self, on: bool) {
        self.state().hang = on;
    }

    /// Failing: answer every request with `status` and a text body (`None`: normal service).
    pub fn set_fail(&self, status: Option<u16>) {
        if let Some(code) = status {
            StatusCode::from_u16(code).expect("stand-in: set_fail needs a valid status code");
        }
        self.state().fail = status;
    }

    /// Absent: remove the socket file and close every open connection (a stopped tailscaled);
    /// `false` listens on the same path again.
    pub fn set_absent(&self, on: bool) {
        let mut st = self.state();
        if st.absent == on {
            return;
        }
        st.absent = on;
        if on {
            let _ = std::fs::remove_file(&self.socket);
            let (ack, done) = std_mpsc::channel();
            if self.commands.send(Command::Absent(ack)).is_ok() {
                let _ = done.recv_timeout(Duration::from_secs(5));
            }
        } else {
            let listener = bind(&self.socket);
            let _ = self.commands.send(Command::Listen(listener));
        }
    }

    /// Every request received so far (the latest 10,000), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.iter().cloned().collect()
    }

    /// Requests to `/localapi/v0/whois` received so far, answered or not.
    pub fn whois_count(&self) -> usize {
        self.shared.whois.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (keep-alive reuse shows as few connections, many requests).
    pub fn connections_accepted(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A fixture from `{CARGO_MANIFEST_DIR}/../shared/fixtures/localapi/NAME`.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/localapi")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("localapi fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("localapi fixture {}: {e}", path.display()))
}

/// `base_fixture` with `UserProfile.LoginName` = `login`, `UserProfile.ID` derived from `login`
/// (stable, distinct per login), `Node.Addresses` = [`ip`/32 or /128], and `CapMap` =
/// `{cap_name: grants}` (`Value::Null` grants: `"CapMap": null`).
pub fn whois_for(base_fixture: &str, login: &str, ip: IpAddr, cap_name: &str, grants: Value) -> Value {
    let mut v = fixture(base_fixture);
    v["UserProfile"]["LoginName"] = Value::from(login);
    v["UserProfile"]["ID"] = Value::from(user_id(login));
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    v["Node"]["Addresses"] = serde_json::json!([format!("{ip}/{bits}")]);
    v["CapMap"] = if grants.is_null() {
        Value::Null
    } else {
        serde_json::json!({ cap_name: grants })
    };
    v
}

/// Send `request` (a complete HTTP/1.1 request; include `Connection: close`) over a fresh
/// connection to `socket` and read the answer to EOF. For requests the real client cannot make.
pub async fn raw_request(socket: &Path, request: &str) -> RawResponse {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("raw_request: connect {}: {e}", socket.display()));
    stream.write_all(request.as_bytes()).await.expect("raw_request: write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("raw_request: no answer within 10 s (send `Connection: close`)")
        .expect("raw_request: read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("raw_request: no header end in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("raw_request: bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

struct Shared {
    state: Mutex<State>,
    connections: AtomicUsize,
    whois: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    status: Value,
    identities: HashMap<IpAddr, Value>,
    delay: Duration,
    hang: bool,
    fail: Option<u16>,
    absent: bool,
    requests: VecDeque<RecordedRequest>,
}

enum Command {
    /// Stop listening and drop every connection; ack when done.
    Absent(std_mpsc::Sender<()>),
    /// Listen again (the socket file already exists).
    Listen(std::os::unix::net::UnixListener),
    Shutdown,
}

/// Bind `path` (replacing a stale file) with mode 0666, like tailscaled's socket.
fn bind(path: &Path) -> std::os::unix::net::UnixListener {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .unwrap_or_else(|e| panic!("stand-in: bind {}: {e}", path.display()));
    listener.set_nonblocking(true).expect("stand-in: set_nonblocking");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).expect("stand-in: chmod socket");
    listener
}

/// The stand-in thread: its own runtime, an accept loop, and the command channel.
fn serve(
    listener: std::os::unix::net::UnixListener,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("stand-in: runtime");
    runtime.block_on(async move {
        let mut listener = Some(tokio::net::UnixListener::from_std(listener).expect("stand-in: listener"));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(Command::Absent(ack)) => {
                        listener = None;
                        connections.abort_all();
                        let _ = ack.send(());
                    }
                    Some(Command::Listen(l)) => {
                        listener = Some(tokio::net::UnixListener::from_std(l).expect("stand-in: listener"));
                    }
                },
                accepted = accept(listener.as_ref()) => match accepted {
                    Ok(stream) => {
                        shared.connections.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(serve_connection(stream, shared.clone()));
                    }
                    Err(e) => {
                        eprintln!("localapi stand-in: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
    });
}

async fn accept(listener: Option<&tokio::net::UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match listener {
        Some(l) => l.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

async fn serve_connection(stream: tokio::net::UnixStream, shared: Arc<Shared>) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let recorded = RecordedRequest {
        method: req.method().to_string(),
        path: path.clone(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let is_whois = recorded.path_only() == "/localapi/v0/whois";
    let (delay, hang, fail) = {
        let mut st = shared.lock();
        if st.requests.len() >= MAX_RECORDED {
            st.requests.pop_front();
        }
        st.requests.push_back(recorded.clone());
        (st.delay, st.hang, st.fail)
    };
    if is_whois {
        shared.whois.fetch_add(1, Ordering::SeqCst);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if hang {
        std::future::pending::<()>().await;
    }

    // net/http itself refuses an HTTP/1.1 request without Host, before any handler runs.
    let host = req.headers().get_all(header::HOST).iter().collect::<Vec<_>>();
    if req.version() == Version::HTTP_11 && host.is_empty() {
        let mut resp = text(400, "400 Bad Request: missing required Host header");
        resp.headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return resp;
    }
    if let Some(code) = fail {
        let reason = StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_ascii_lowercase();
        return text(code, &format!("{reason} (stand-in fail knob)\n"));
    }
    // ipn/localapi Handler.ServeHTTP.
    let host_ok = host
        .first()
        .is_none_or(|h| h.as_bytes().is_empty() || h.as_bytes() == b"local-tailscaled.sock");
    if recorded.header("origin").is_some() || recorded.header("referer").is_some() || !host_ok {
        return text(403, "invalid localapi request\n");
    }
    let mut resp = match recorded.path_only() {
        "/localapi/v0/whois" => whois(shared, &path),
        "/localapi/v0/status" => status(shared, &path),
        "/" => text(200, "tailscaled\n"),
        _ => text(404, "404 page not found\n"),
    };
    let version = shared.lock().status["Version"].as_str().unwrap_or("").to_string();
    let h = resp.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&version) {
        h.insert("tailscale-version", v);
    }
    h.insert("x-frame-options", header::HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", header::HeaderValue::from_static("nosniff"));
    resp
}

/// `serveWhoIsWithBackend`: `addr` is `IP:PORT`, `[IPv6]:PORT` or a bare IP.
fn whois(shared: &Shared, path: &str) -> Response<Full<Bytes>> {
    let addr = match form_value(path, "addr").filter(|v| !v.is_empty()) {
        None => return text(400, "missing 'addr' parameter\n"),
        Some(v) => v,
    };
    let ip = if addr.starts_with("nodekey:") {
        None
    } else if let Ok(ip) = addr.parse::<IpAddr>() {
        Some(ip)
    } else if let Ok(sa) = addr.parse::<SocketAddr>() {
        Some(sa.ip())
    } else {
        return text(400, "invalid 'addr' parameter\n");
    };
    let found = ip.and_then(|ip| shared.lock().identities.get(&ip).cloned());
    match found {
        Some(who) => json(&GoOrder(&who, &["Node", "UserProfile", "CapMap"]), false),
        None => text(404, "no match for IP:port\n"),
    }
}

/// `serveStatus`: `peers` defaults to true; `peers=false` serves an empty `Peer` map.
fn status(shared: &Shared, path: &str) -> Response<Full<Bytes>> {
    let peers = form_value(path, "peers")
        .and_then(|v| parse_go_bool(&v))
        .unwrap_or(true);
    let mut st = shared.lock().status.clone();
    if !peers && let Some(obj) = st.as_object_mut() {
        obj.insert("Peer".into(), serde_json::json!({}));
    }
    json(&GoOrder(&st, &["Version", "TUN", "BackendState"]), true)
}

/// A JSON object with `first` keys leading, in that order, like Go's struct field order (serde_json
/// without `preserve_order` sorts keys); the rest follow sorted.
struct GoOrder<'a>(&'a Value, &'a [&'a str]);

impl Serialize for GoOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(obj) = self.0.as_object() else {
            return self.0.serialize(ser);
        };
        let mut map = ser.serialize_map(Some(obj.len()))?;
        for key in self.1 {
            if let Some(v) = obj.get(*key) {
                map.serialize_entry(key, v)?;
            }
        }
        for (k, v) in obj.iter().filter(|(k, _)| !self.1.contains(&k.as_str())) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `http.Error`: text/plain, nosniff; `body` already ends in `\n` where Go's would.
fn text(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("stand-in: text response")
}

/// Tab-indented JSON like Go's `MarshalIndent(v, "", "\t")`; `newline` like `json.Encoder`.
fn json(v: &impl Serialize, newline: bool) -> Response<Full<Bytes>> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"\t"));
    v.serialize(&mut ser).expect("stand-in: encode json");
    if newline {
        out.push(b'\n');
    }
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(out)))
        .expect("stand-in: json response")
}

/// The first value of `name` in the query of `path`, decoded like Go's `url.ParseQuery`.
fn form_value(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// A stable, positive, JSON-safe (< 2^53) user ID per login (FNV-1a).
fn user_id(login: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in login.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h & ((1 << 53) - 1)) as i64
}
