//! The foundation issue's reference points, measured here with the same load as our own budget
//! (`cargo bench --bench reference`): wrk from a tailnet peer namespace, 1 and 32 keep-alive
//! connections, a stateless `tools/call` of `whoami` on every request, against three servers in
//! turn on the same address:
//!
//! 1. a bare axum JSON-RPC echo (the issue measured 54,700 calls/s);
//! 2. a plain rmcp stateless server with one `whoami` tool and a LocalAPI `whois` of the TCP peer
//!    on every request (the issue measured 7,900 calls/s, p50 0.36 ms for one client);
//! 3. tailopsmcp itself: whois + policy + audit (SQLite, mirrored to journald) on every call.
//!
//! The first two run in this process (2 worker threads, like the server's runtime on 2 cores);
//! the whois goes to the same LocalAPI stand-in as the server's. It shows how this machine
//! compares with the one the issue's figures came from, and what tailopsmcp's own layers cost on
//! top of rmcp and whois. It checks no budget (`cargo bench --bench whoami` does); it fails only
//! when a server answers with anything but 2xx. Needs root (network namespaces) and wrk.
//! Environment: `BENCH_SECS` (per run, default 10).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use support::localapi::{StandIn, fixture};
use support::netns::Tailnet;
use support::server::{PORT, Server};
use tailopsmcp::tailnet::localapi::LocalApi;
use tokio_util::sync::CancellationToken;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(100, 100, 1, 1);
const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 2));
const CLIENTS: usize = 32;
/// The load makes far more calls than the default per-principal rate limits allow.
const BENCH_LIMITS: &str = "[limits.rate.low]\nburst = 100000\nper_minute = 1000000\n";

fn main() {
    if let Err(e) = support::netns::require_root_and_netns() {
        eprintln!("bench needs root and network namespaces: {e}");
        std::process::exit(1);
    }
    if std::process::Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("bench needs wrk (apt-get install wrk)");
        std::process::exit(1);
    }
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // The in-process servers get what the product's runtime gets on this machine: one worker
    // thread per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench(secs));
}

async fn bench(secs: u64) {
    println!("machine: {}", support::host::machine());
    println!("{}", support::host::probe_line("before"));
    match support::journald::ensure_journald() {
        Ok(()) => println!("journald: running (tailopsmcp mirrors its audit events to it)"),
        Err(e) => println!("journald: unavailable ({e}); tailopsmcp's audit events are not mirrored"),
    }
    let net = Tailnet::new(SERVER_IP, None).expect("tailnet");
    net.add_caller(ALICE).expect("caller");
    let standin = StandIn::start().await;
    standin.set_self_ips(&[IpAddr::V4(SERVER_IP)]);
    standin.add_identity(ALICE, fixture("whois-user.json"));
    let addr = SocketAddr::new(IpAddr::V4(SERVER_IP), PORT);
    println!("load: wrk from {ALICE}, stateless tools/call `whoami`, {secs} s per run");
    println!(
        "{:<40} {:>14} {:>12} {:>12} {:>20}",
        "server", "connections", "calls/s", "p50 ms", "issue (calls/s, p50)"
    );

    let served = in_process(&net, addr, echo_app()).await;
    run(&net, addr, secs, "axum JSON-RPC echo", "54,700").await;
    served.cancel();

    let whois_before = standin.whois_count();
    let served = in_process(
        &net,
        addr,
        rmcp_app(LocalApi::new(standin.socket_path(), Duration::from_secs(2))),
    )
    .await;
    run(&net, addr, secs, "rmcp stateless + whois per call", "7,900, 0.36 ms").await;
    served.cancel();
    println!(
        "  (whois requests the stand-in served for it: {})",
        standin.whois_count() - whois_before
    );

    let mut server = Server::start(&net, &standin, "identity_cache_secs = 0", BENCH_LIMITS).await;
    let rows_before = server.audit_rows();
    run(
        &net,
        addr,
        secs,
        "tailopsmcp: whois + policy + audit",
        "budget 8,000, 1 ms",
    )
    .await;
    println!(
        "  (audit rows it wrote: {})",
        server.audit_rows().saturating_sub(rows_before)
    );
    server.stop().await;
    println!("{}", support::host::probe_line("after"));
}

/// One row per connection count: 1 (latency) and [`CLIENTS`] (throughput). Every response must
/// have been a 2xx.
async fn run(net: &Tailnet, addr: SocketAddr, secs: u64, name: &str, issue: &str) {
    for (i, clients) in [1, CLIENTS].into_iter().enumerate() {
        let w = support::wrk::whoami_stateless(net, addr, clients, secs)
            .await
            .expect("wrk runs");
        assert!(w.requests > 0, "{name}: wrk made no requests");
        assert_eq!(
            w.non_2xx, 0,
            "{name}: {} of {} responses were not 2xx",
            w.non_2xx, w.requests
        );
        println!(
            "{:<40} {:>14} {:>12.0} {:>12.3} {:>20}",
            if i == 0 { name } else { "" },
            clients,
            w.per_sec,
            w.p50_ms,
            if i == 0 { issue } else { "" }
        );
    }
}

/// Serve `app` on `addr` in the server namespace until the returned token is cancelled.
async fn in_process(net: &Tailnet, addr: SocketAddr, app: Router) -> CancellationToken {
    let listener = net.bind_in_server_ns(addr).expect("bind in the server namespace");
    let stop = CancellationToken::new();
    let done = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { done.cancelled().await })
            .await
            .expect("serve");
    });
    stop
}

/// POST /mcp: parse the JSON-RPC request and answer with a result that echoes its params.
fn echo_app() -> Router {
    Router::new().route(
        "/mcp",
        post(|body: axum::Json<Value>| async move {
            axum::Json(json!({
                "jsonrpc": "2.0",
                "id": body.get("id").cloned().unwrap_or(Value::Null),
                "result": {"echo": body.get("params").cloned().unwrap_or(Value::Null)},
            }))
        }),
    )
}

/// The login of the peer, as tailscaled's whois told it.
#[derive(Clone)]
struct Login(String);

/// rmcp's Streamable HTTP service, stateless with JSON responses, behind a middleware that asks
/// the LocalAPI who the TCP peer is on every request (403 when it cannot say).
fn rmcp_app(api: LocalApi) -> Router {
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_legacy_session_mode(false)
        .with_json_response(true);
    let service = StreamableHttpService::new(|| Ok(Plain), Arc::new(LocalSessionManager::default()), config);
    Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn_with_state(api, whois))
}

async fn whois(
    State(api): State<LocalApi>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    match api.whois(peer, None).await {
        Ok(w) => {
            req.extensions_mut().insert(Login(w.user_profile.login_name));
            next.run(req).await
        }
        Err(_) => StatusCode::FORBIDDEN.into_response(),
    }
}

/// A plain rmcp server with one tool that says who called.
#[derive(Clone)]
struct Plain;

fn whoami_tool() -> Tool {
    let input = json!({"type": "object", "properties": {}});
    let Value::Object(input) = input else { unreachable!() };
    Tool::new("whoami", "Who is calling", Arc::new(input))
}

impl ServerHandler for Plain {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![whoami_tool()]))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        (name == "whoami").then(whoami_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != "whoami" {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {}", request.name),
                None,
            ));
        }
        let login = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Login>())
            .map(|l| l.0.clone())
            .ok_or_else(|| ErrorData::internal_error("no identity", None))?;
        let mut result = CallToolResult::success(vec![ContentBlock::text(login.clone())]);
        result.structured_content = Some(json!({"principal": login}));
        Ok(result.into())
    }
}
