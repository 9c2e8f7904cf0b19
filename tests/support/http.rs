//! A minimal HTTP/1.1 client over an already-connected stream (TCP or unix), plus an MCP (Streamable HTTP)
//! client on top of it, for integration tests.
//!
//! The caller makes the TCP connection (usually `netns::Tailnet::connect`, so the source address is
//! a chosen tailnet address) and controls every request header: `Conn` adds none, not even `Host`.
//! Responses are read whole; a `text/event-stream` answer to a POST is read until its JSON-RPC
//! response event and the end of the stream. It must not grow a connection pool, retries or
//! redirects: tests assert on exactly what went over one connection.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use hyper::Method;

/// How long one `Conn::send` may take, end to end, before it fails.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// After an SSE body delivered its JSON-RPC response, how long to wait for the stream to end before
/// returning anyway (the connection is then not reusable).
const SSE_TAIL_GRACE: Duration = Duration::from_secs(2);
/// The MCP protocol version `Mcp` asks for unless a test sets another.
pub const DEFAULT_PROTOCOL: &str = "2025-06-18";

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

/// A request as sent: no header is added or changed.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// Path and query, e.g. `/mcp`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Conn {
    /// Performs the HTTP/1.1 client handshake over `stream` (no bytes are exchanged yet): a TCP
    /// connection, or any other byte stream (a unix socket).
    pub async fn new<S>(stream: S) -> Conn
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 client handshake over a connected stream");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Conn { sender, driver }
    }

    /// Sends `req` and reads the whole response (see the module doc for `text/event-stream`).
    pub async fn send(&mut self, req: Request) -> Result<Response, String> {
        let what = format!("{} {}", req.method, req.path);
        match tokio::time::timeout(SEND_TIMEOUT, self.send_inner(req)).await {
            Ok(result) => result.map_err(|e| format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: no complete response within {SEND_TIMEOUT:?}")),
        }
    }

    async fn send_inner(&mut self, req: Request) -> Result<Response, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection not usable: {e}"))?;
        let mut builder = hyper::Request::builder().method(req.method).uri(req.path);
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body)))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let sse = headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"));
        let body = read_body(response.into_body(), sse).await?;
        Ok(Response { status, headers, body })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Reads a body to its end; for SSE, stops waiting once a JSON-RPC response event arrived and the
/// stream has not ended within `SSE_TAIL_GRACE`.
async fn read_body(mut body: Incoming, sse: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let next = if sse && sse_has_response(&out) {
            match tokio::time::timeout(SSE_TAIL_GRACE, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => return Ok(out),
            }
        } else {
            body.frame().await
        };
        match next {
            None => return Ok(out),
            Some(Err(e)) => return Err(format!("reading the body: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

impl Request {
    pub fn new(method: Method, path: &str) -> Request {
        Request {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON body; for a `text/event-stream` body, the data of the first event that is a JSON-RPC
    /// response (else the first event with non-empty data). Panics with the body if there is none.
    pub fn json(&self) -> Value {
        self.try_json().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Response::json`] without the panic.
    pub fn try_json(&self) -> Result<Value, String> {
        let is_sse = self
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return serde_json::from_slice(&self.body)
                .map_err(|e| format!("HTTP {} body is not JSON ({e}): {}", self.status, self.text()));
        }
        let events = sse_events(&self.body);
        let parsed: Vec<Value> = events.iter().filter_map(|d| serde_json::from_str(d).ok()).collect();
        parsed
            .iter()
            .find(|v| is_jsonrpc_response(v))
            .or_else(|| parsed.first())
            .cloned()
            .ok_or_else(|| format!("HTTP {} event stream has no JSON event: {}", self.status, self.text()))
    }

    /// The data of every event with non-empty data in a `text/event-stream` body.
    pub fn sse_data(&self) -> Vec<String> {
        sse_events(&self.body)
    }
}

/// Splits an SSE body into events (separated by a blank line) and returns each event's data (its
/// `data:` lines joined by `\n`), skipping events without data such as priming events.
fn sse_events(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n").replace('\r', "\n");
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let data: Vec<&str> = block
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let data = data.join("\n");
        if !data.trim().is_empty() {
            events.push(data);
        }
    }
    events
}

/// Whether the complete events (those followed by a blank line) of `body` hold a JSON-RPC response.
fn sse_has_response(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let Some(end) = text.rfind("\n\n") else {
        return false;
    };
    sse_events(&text.as_bytes()[..end])
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .any(|v| is_jsonrpc_response(&v))
}

fn is_jsonrpc_response(v: &Value) -> bool {
    v.get("id").is_some_and(|id| !id.is_null()) && (v.get("result").is_some() || v.get("error").is_some())
}

/// The body of an `initialize` request (id 1), for tests that send it raw.
pub fn init_body() -> Vec<u8> {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
    .to_string()
    .into_bytes()
}

/// An MCP client over one `Conn`: JSON-RPC over `POST /mcp` with the session and protocol headers.
pub struct Mcp {
    pub conn: Conn,
    /// The `Host` header value sent with every request.
    pub host: String,
    /// `Mcp-Session-Id` from `initialize`, sent with later requests.
    pub session: Option<String>,
    /// Asked for in `initialize`, then the negotiated version, sent as `MCP-Protocol-Version`.
    pub protocol: String,
    /// Sent with every request (e.g. headers a client might forge).
    pub extra_headers: Vec<(String, String)>,
    next_id: i64,
}

impl Mcp {
    pub fn new(conn: Conn, host: &str) -> Mcp {
        Mcp {
            conn,
            host: host.to_owned(),
            session: None,
            protocol: DEFAULT_PROTOCOL.to_owned(),
            extra_headers: Vec::new(),
            next_id: 1,
        }
    }

    /// `initialize`, storing `Mcp-Session-Id` and the negotiated protocol version, then
    /// `notifications/initialized`. Returns the `initialize` result.
    pub async fn initialize(&mut self) -> Result<Value, String> {
        let params = json!({
            "protocolVersion": self.protocol,
            "capabilities": {},
            "clientInfo": { "name": "tailopsmcp-tests", "version": "0" },
        });
        let id = self.take_id();
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": "initialize", "params": params });
        // No session or protocol header on initialize.
        let req = self.post(&body, false);
        let resp = self.conn.send(req).await?;
        let result = rpc_result(&resp, "initialize")?;
        if let Some(session) = resp.header("mcp-session-id") {
            self.session = Some(session.to_owned());
        }
        if let Some(version) = result.get("protocolVersion").and_then(Value::as_str) {
            self.protocol = version.to_owned();
        }
        let resp = self.notify("notifications/initialized", json!({})).await?;
        if !(200..300).contains(&resp.status) {
            return Err(format!(
                "notifications/initialized: HTTP {}: {}",
                resp.status,
                resp.text()
            ));
        }
        Ok(result)
    }

    /// A JSON-RPC request with the session and protocol headers; the raw response.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Response, String> {
        let id = self.take_id();
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let req = self.post(&body, true);
        self.conn.send(req).await
    }

    /// `body` sent as is (for JSON that `serde_json` cannot produce, such as a lone surrogate
    /// escape) with the session and protocol headers; the raw response.
    pub async fn request_text(&mut self, body: String) -> Result<Response, String> {
        let req = self.post_text(body, true);
        self.conn.send(req).await
    }

    /// A JSON-RPC notification with the session and protocol headers; the raw response (202).
    pub async fn notify(&mut self, method: &str, params: Value) -> Result<Response, String> {
        let body = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        let req = self.post(&body, true);
        self.conn.send(req).await
    }

    /// End the session (`DELETE /mcp` with its id), as a client does when it is done.
    pub async fn close(&mut self) -> Result<Response, String> {
        let Some(session) = self.session.take() else {
            return Err("close: no session".into());
        };
        let mut req = Request::new(Method::DELETE, "/mcp")
            .header("host", &self.host)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", &self.protocol);
        for (name, value) in &self.extra_headers {
            req = req.header(name, value);
        }
        self.conn.send(req).await
    }

    /// All tool names from `tools/list`, following `nextCursor`.
    pub async fn list_tools(&mut self) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let resp = self.request("tools/list", params).await?;
            let result = rpc_result(&resp, "tools/list")?;
            let tools = result
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("tools/list result without tools: {result}"))?;
            for tool in tools {
                match tool.get("name").and_then(Value::as_str) {
                    Some(name) => names.push(name.to_owned()),
                    None => return Err(format!("tool without a name: {tool}")),
                }
            }
            cursor = result.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
            if cursor.is_none() {
                return Ok(names);
            }
        }
    }

    /// `tools/call`: the JSON-RPC `result` (which may have `isError: true`), or `Err` with the HTTP
    /// status or the JSON-RPC error.
    pub async fn call_tool(&mut self, name: &str, args: Value) -> Result<Value, String> {
        let resp = self
            .request("tools/call", json!({ "name": name, "arguments": args }))
            .await?;
        rpc_result(&resp, &format!("tools/call {name}"))
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn post(&self, body: &Value, session_headers: bool) -> Request {
        self.post_text(body.to_string(), session_headers)
    }

    fn post_text(&self, body: String, session_headers: bool) -> Request {
        let mut req = Request::new(Method::POST, "/mcp")
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        for (name, value) in &self.extra_headers {
            req = req.header(name, value);
        }
        if session_headers {
            if let Some(session) = &self.session {
                req = req.header("mcp-session-id", session);
            }
            req = req.header("mcp-protocol-version", &self.protocol);
        }
        req
    }
}

/// The `result` of a JSON-RPC response carried by `resp`, or an error naming `what`, the HTTP status
/// or the JSON-RPC error.
pub fn rpc_result(resp: &Response, what: &str) -> Result<Value, String> {
    if resp.status != 200 {
        return Err(format!("{what}: HTTP {}: {}", resp.status, resp.text()));
    }
    let v = resp.try_json().map_err(|e| format!("{what}: {e}"))?;
    if let Some(error) = v.get("error") {
        return Err(format!("{what}: JSON-RPC error {error}"));
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| format!("{what}: response without result: {v}"))
}
