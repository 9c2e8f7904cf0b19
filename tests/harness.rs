//! Tests of the test harness itself (`support::netns`, `support::http`, `support::pyclient`): that
//! namespaces carry real tailnet addresses, that a server sees each caller's tailnet source address,
//! that nothing is reachable on loopback, that instances are isolated and cleaned up, and that both
//! MCP clients (the Rust `Mcp` and the Python SDK script) speak to a real rmcp Streamable HTTP
//! server. They exercise no product code: if these fail, every daemon-backed test is suspect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::http::{Conn, Mcp, Request};
use crate::support::netns::{Tailnet, require_root_and_netns, skip_or_fail};
use crate::support::pyclient;

const SERVER: Ipv4Addr = Ipv4Addr::new(100, 100, 1, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1);
const CALLER: Ipv4Addr = Ipv4Addr::new(100, 100, 2, 2);
const CALLER2: Ipv4Addr = Ipv4Addr::new(100, 100, 3, 3);
const CALLER6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 2);
const WAIT: Duration = Duration::from_secs(10);

/// A tailnet with `CALLER` (and `CALLER6` when `v6`), or `None` after `skip_or_fail`.
fn tailnet(v6: bool) -> Option<Tailnet> {
    if let Err(why) = require_root_and_netns() {
        skip_or_fail(&why);
        return None;
    }
    let net = Tailnet::new(SERVER, v6.then_some(SERVER6)).expect("create tailnet");
    net.add_caller(CALLER.into()).expect("add caller");
    if v6 {
        net.add_caller(CALLER6.into()).expect("add v6 caller");
    }
    Some(net)
}

/// Connects from `from` to `listener` and returns (the address the server saw, the client's local
/// address), after a byte round trip over the connection.
async fn round_trip(net: &Tailnet, listener: &tokio::net::TcpListener, from: IpAddr) -> (SocketAddr, SocketAddr) {
    let to = listener.local_addr().unwrap();
    let (accepted, connected) = tokio::join!(tokio::time::timeout(WAIT, listener.accept()), net.connect(from, to));
    let (mut server_side, seen) = accepted.expect("accept in time").expect("accept");
    let mut client = connected.expect("connect from caller");
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server_side.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    (seen, client.local_addr().unwrap())
}

#[tokio::test]
async fn server_sees_each_callers_tailnet_source_address() {
    let Some(net) = tailnet(false) else { return };
    net.add_caller(CALLER2.into()).unwrap();
    let listener = net.bind_in_server_ns(SocketAddr::new(SERVER.into(), 0)).unwrap();

    let (seen, local) = round_trip(&net, &listener, CALLER.into()).await;
    assert_eq!(seen.ip(), IpAddr::from(CALLER));
    assert_eq!(seen, local, "server's peer address is the client's own address");
    assert_ne!(seen.port(), 0);

    let (seen, _) = round_trip(&net, &listener, CALLER2.into()).await;
    assert_eq!(seen.ip(), IpAddr::from(CALLER2));
}

#[tokio::test]
async fn ipv6_caller_reaches_the_servers_ipv6_tailnet_address() {
    let Some(net) = tailnet(true) else { return };
    assert_eq!(net.server_ip6(), Some(SERVER6));
    let listener = net.bind_in_server_ns(SocketAddr::new(SERVER6.into(), 0)).unwrap();
    let (seen, _) = round_trip(&net, &listener, CALLER6.into()).await;
    assert_eq!(seen.ip(), IpAddr::from(CALLER6));
}

#[tokio::test]
async fn only_the_bound_tailnet_address_listens_and_loopback_refuses() {
    let Some(net) = tailnet(true) else { return };
    let listener = net.bind_in_server_ns(SocketAddr::new(SERVER.into(), 0)).unwrap();
    let bound = listener.local_addr().unwrap();
    assert_eq!(net.listening_sockets(), vec![bound]);

    for loopback in [IpAddr::from(Ipv4Addr::LOCALHOST), IpAddr::from(Ipv6Addr::LOCALHOST)] {
        let err = net
            .connect_in_server_ns(SocketAddr::new(loopback, bound.port()))
            .await
            .expect_err("nothing listens on loopback");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{loopback}: {err}");
    }
    // The same port on the server's v6 tailnet address is not bound either.
    let err = net
        .connect(CALLER6.into(), SocketAddr::new(SERVER6.into(), bound.port()))
        .await
        .expect_err("only the v4 address listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[tokio::test]
async fn two_tailnets_with_the_same_addresses_do_not_collide() {
    let (Some(a), Some(b)) = (tailnet(false), tailnet(false)) else {
        return;
    };
    assert_ne!(a.server_ns(), b.server_ns());
    assert_ne!(a.peer_ns(), b.peer_ns());
    let la = a.bind_in_server_ns(SocketAddr::new(SERVER.into(), 0)).unwrap();
    let port = la.local_addr().unwrap().port();
    // The same address and port in the other server namespace is free.
    let lb = b.bind_in_server_ns(SocketAddr::new(SERVER.into(), port)).unwrap();
    for (net, listener, tag) in [(&a, &la, b'a'), (&b, &lb, b'b')] {
        let to = SocketAddr::new(SERVER.into(), port);
        let (accepted, connected) = tokio::join!(listener.accept(), net.connect(CALLER.into(), to));
        let (mut server_side, _) = accepted.unwrap();
        server_side.write_all(&[tag]).await.unwrap();
        let mut got = [0u8; 1];
        connected.unwrap().read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], tag, "each peer namespace reaches its own server");
    }
    assert_eq!(a.listening_sockets(), b.listening_sockets());
}

#[tokio::test]
async fn drop_deletes_the_namespaces_even_after_a_panic() {
    let Some(net) = tailnet(false) else { return };
    let names = [net.server_ns().to_owned(), net.peer_ns().to_owned()];
    assert!(names.iter().all(|n| netns_list().contains(n)));
    drop(net);
    let listed = netns_list();
    assert!(names.iter().all(|n| !listed.contains(n)), "left behind: {listed}");

    let names = std::thread::spawn(|| {
        let mut names = Vec::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let net = Tailnet::new(SERVER, Some(SERVER6)).unwrap();
            names = vec![net.server_ns().to_owned(), net.peer_ns().to_owned()];
            panic!("test body panics while the tailnet is alive");
        }));
        assert!(panicked.is_err());
        names
    })
    .join()
    .unwrap();
    let listed = netns_list();
    assert!(
        names.iter().all(|n| !listed.contains(n)),
        "left behind after panic: {listed}"
    );
}

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn processes_in_the_peer_namespace_use_the_default_source() {
    let Some(net) = tailnet(false) else { return };
    net.add_caller(CALLER2.into()).unwrap();
    let listener = net.bind_in_server_ns(SocketAddr::new(SERVER.into(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!("echo hi >/dev/tcp/{SERVER}/{port}");

    for expected in [CALLER, CALLER2] {
        if expected == CALLER2 {
            net.set_default_source(CALLER2.into()).unwrap();
        }
        let mut child = net.command_in_peer_ns("bash").args(["-c", &script]).spawn().unwrap();
        let (_, seen) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        assert!(child.wait().await.unwrap().success());
        assert_eq!(seen.ip(), IpAddr::from(expected));
    }
}

#[tokio::test]
async fn commands_run_inside_the_server_namespace() {
    let Some(net) = tailnet(true) else { return };
    let out = net
        .command_in_server_ns(std::path::Path::new("ip"))
        .args(["-brief", "address", "show", "dev", "tailscale0"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{SERVER}/32")), "{text}");
    assert!(text.contains(&format!("{SERVER6}/128")), "{text}");
}

/// A small HTTP/1.1 server for `Conn`: `/peer` answers the caller's address, `/echo` the request's
/// headers and body as JSON, `/sse` an event stream with a priming event and a JSON-RPC response.
fn spawn_http_server(listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                use http_body_util::BodyExt;
                let path = req.uri().path().to_owned();
                let headers: Vec<(String, String)> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                let body = req.into_body().collect().await?.to_bytes();
                let response = match path.as_str() {
                    "/peer" => hyper::Response::new(Full::new(Bytes::from(peer.to_string()))),
                    "/sse" => hyper::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Full::new(Bytes::from_static(
                            b"id: 0\nretry: 3000\ndata:\n\n: comment\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\ndata: \"result\":{\"ok\":true}}\n\n",
                        )))
                        .unwrap(),
                    _ => {
                        let v = json!({ "headers": headers, "body": String::from_utf8_lossy(&body) });
                        hyper::Response::builder()
                            .status(201)
                            .header("content-type", "application/json")
                            .header("x-test", "yes")
                            .body(Full::new(Bytes::from(v.to_string())))
                            .unwrap()
                    }
                };
                Ok::<_, hyper::Error>(response)
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
}

#[tokio::test]
async fn http_client_keeps_one_connection_and_sends_headers_verbatim() {
    let Some(net) = tailnet(false) else { return };
    let listener = net.bind_in_server_ns(SocketAddr::new(SERVER.into(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_http_server(listener);
    let stream = net.connect(CALLER.into(), addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut conn = Conn::new(stream).await;

    let resp = conn
        .send(Request::new(Method::GET, "/peer").header("host", "srv"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        local.to_string(),
        "same connection, caller's tailnet source"
    );

    let resp = conn
        .send(
            Request::new(Method::POST, "/echo")
                .header("Host", "evil.example:1")
                .header("X-Odd", "a b")
                .body("payload"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 201);
    assert_eq!(resp.header("X-TEST"), Some("yes"));
    let v = resp.json();
    assert_eq!(v["body"], "payload");
    let headers = v["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["host", "evil.example:1"])), "{v}");
    assert!(headers.contains(&json!(["x-odd", "a b"])), "{v}");

    // Still the same connection after two requests.
    let resp = conn
        .send(Request::new(Method::GET, "/peer").header("host", "srv"))
        .await
        .unwrap();
    assert_eq!(resp.text(), local.to_string());
}

#[tokio::test]
async fn http_client_reads_the_jsonrpc_response_out_of_an_event_stream() {
    let Some(net) = tailnet(false) else { return };
    let listener = net.bind_in_server_ns(SocketAddr::new(SERVER.into(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_http_server(listener);
    let mut conn = Conn::new(net.connect(CALLER.into(), addr).await.unwrap()).await;
    let resp = conn
        .send(Request::new(Method::GET, "/sse").header("host", "srv"))
        .await
        .unwrap();
    assert_eq!(resp.sse_data().len(), 2, "priming event and comment skipped");
    assert_eq!(
        resp.json(),
        json!({ "jsonrpc": "2.0", "id": 7, "result": { "ok": true } })
    );
}

/// A real rmcp 3.9 Streamable HTTP server with one tool, `whoami`, that answers the TCP peer address
/// axum saw, so both MCP clients are proven against the server library the product uses.
mod rmcp_server {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::extract::ConnectInfo;
    use rmcp::model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult, PaginatedRequestParams,
        ServerCapabilities, ServerConfig, Tool,
    };
    use rmcp::service::RequestContext;
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    use rmcp::{ErrorData, RoleServer, ServerHandler};
    use serde_json::json;

    #[derive(Clone)]
    struct PeerEcho;

    impl ServerHandler for PeerEcho {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }

        async fn list_tools(
            &self,
            _request: Option<PaginatedRequestParams>,
            _context: RequestContext<RoleServer>,
        ) -> Result<ListToolsResult, ErrorData> {
            let schema = json!({ "type": "object", "properties": {} });
            let schema = schema.as_object().cloned().unwrap_or_default();
            Ok(ListToolsResult::with_all_items(vec![Tool::new(
                "whoami",
                "the caller's TCP source address",
                Arc::new(schema),
            )]))
        }

        async fn call_tool(
            &self,
            request: CallToolRequestParams,
            context: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            if request.name != "whoami" {
                return Err(ErrorData::invalid_params(format!("no tool {}", request.name), None));
            }
            let peer = context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<ConnectInfo<SocketAddr>>())
                .map(|info| info.0.to_string());
            Ok(CallToolResult::structured(json!({ "peer": peer })).into())
        }
    }

    /// Serves `/mcp` on `listener`, accepting `Host` values in `allowed_hosts`.
    pub fn spawn(listener: tokio::net::TcpListener, allowed_hosts: Vec<String>) {
        let config = StreamableHttpServerConfig::default().with_allowed_hosts(allowed_hosts);
        let service = StreamableHttpService::new(|| Ok(PeerEcho), Arc::new(LocalSessionManager::default()), config);
        let app = axum::Router::new().nest_service("/mcp", service);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
    }
}

#[tokio::test]
async fn rust_mcp_client_talks_to_rmcp_from_a_tailnet_address() {
    let Some(net) = tailnet(false) else { return };
    let listener = net.bind_in_server_ns(SocketAddr::new(SERVER.into(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    rmcp_server::spawn(listener, vec![SERVER.to_string()]);

    let stream = net.connect(CALLER.into(), addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut mcp = Mcp::new(Conn::new(stream).await, &addr.to_string());
    let init = mcp.initialize().await.unwrap();
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert!(
        mcp.session.is_some(),
        "rmcp's legacy session mode returns Mcp-Session-Id"
    );
    assert_eq!(mcp.list_tools().await.unwrap(), vec!["whoami".to_owned()]);
    let result = mcp.call_tool("whoami", json!({})).await.unwrap();
    assert_eq!(result["structuredContent"]["peer"], local.to_string(), "{result}");
    let err = mcp.call_tool("nope", json!({})).await.unwrap_err();
    assert!(err.contains("JSON-RPC error"), "{err}");

    // A Host outside the allow-list is refused before MCP (DNS-rebinding guard).
    let mut other = Mcp::new(
        Conn::new(net.connect(CALLER.into(), addr).await.unwrap()).await,
        "evil.example",
    );
    let err = other.initialize().await.unwrap_err();
    assert!(err.contains("HTTP 403"), "{err}");
}

#[tokio::test]
async fn python_sdk_is_installed_with_its_streamable_http_client() {
    let python = match tokio::task::spawn_blocking(pyclient::python_mcp).await.unwrap() {
        Ok(python) => python,
        Err(why) => return skip_or_fail(&why),
    };
    let out = tokio::process::Command::new(&python)
        .args(["-c", "import mcp.client.streamable_http as m, importlib.metadata as md; print(md.version('mcp'), m.streamable_http_client.__name__)"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("{} streamable_http_client", pyclient::MCP_SDK_VERSION)
    );
}

/// Runs the Python client script in the peer namespace: (exit code, output lines, context for
/// assertion messages).
async fn run_python_client(
    net: &Tailnet,
    python: &Path,
    url: &str,
    actions: Value,
    extra: &[&str],
) -> (Option<i32>, Vec<Value>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        net.command_in_peer_ns(python.to_str().unwrap())
            .arg(pyclient::client_script())
            .arg(url)
            .arg(actions.to_string())
            .args(extra)
            .output(),
    )
    .await
    .expect("python client finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ctx = format!("stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {ctx}")))
        .collect();
    (out.status.code(), lines, ctx)
}

#[tokio::test]
async fn python_client_script_talks_to_rmcp_from_the_peer_namespace() {
    let Some(net) = tailnet(false) else { return };
    let python = match tokio::task::spawn_blocking(pyclient::python_mcp).await.unwrap() {
        Ok(python) => python,
        Err(why) => return skip_or_fail(&why),
    };
    let listener = net.bind_in_server_ns(SocketAddr::new(SERVER.into(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    rmcp_server::spawn(listener, vec![SERVER.to_string()]);
    let url = format!("http://{addr}/mcp");

    let actions = json!([
        { "list_tools": {} },
        { "call": "whoami", "args": {} },
        { "ping": {} },
        { "call": "nope" },
    ]);
    let (code, lines, ctx) = run_python_client(&net, &python, &url, actions, &[]).await;
    assert_eq!(code, Some(1), "the unknown tool is a protocol error\n{ctx}");
    assert_eq!(lines.len(), 5, "{ctx}");
    assert_eq!(lines[0]["action"], "initialize", "{ctx}");
    assert_eq!(
        lines[1],
        json!({ "action": "list_tools", "tools": ["whoami"] }),
        "{ctx}"
    );
    assert_eq!(lines[2]["isError"], false, "{ctx}");
    let peer: SocketAddr = lines[2]["structuredContent"]["peer"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        peer.ip(),
        IpAddr::from(CALLER),
        "the kernel picked the default source\n{ctx}"
    );
    assert_eq!(lines[3], json!({ "action": "ping", "ok": true }), "{ctx}");
    assert_eq!(lines[4]["action"], "call", "{ctx}");
    assert_eq!(lines[4]["code"], -32602, "{ctx}");

    // A refused connection (here: a Host outside the allow-list) is one error line and exit 1.
    let actions = json!([{ "list_tools": {} }]);
    let host = ["--header", "Host:evil.example"];
    let (code, lines, ctx) = run_python_client(&net, &python, &url, actions, &host).await;
    assert_eq!(code, Some(1), "{ctx}");
    assert_eq!(lines.len(), 1, "{ctx}");
    assert_eq!(lines[0]["action"], "initialize", "{ctx}");
    assert_eq!(lines[0]["httpStatus"], 403, "{ctx}");
}
