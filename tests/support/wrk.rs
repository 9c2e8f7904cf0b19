//! Benchmark helpers: `wrk` as a load generator, run in the peer namespace of a [`Tailnet`] so the
//! server sees a tailnet caller, with what it measured.
#![allow(dead_code)]

use std::net::SocketAddr;

use serde_json::json;

use super::netns::Tailnet;

/// What `wrk` reported for one run.
pub struct Wrk {
    pub requests: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
}

/// Drive `clients` keep-alive connections from the peer namespace to `server` with `wrk` (the tool
/// behind the reference figures in the foundation issue), each sending a stateless (2026-07-28)
/// `whoami` call over and over. `None` when wrk is not installed (`apt-get install wrk`).
pub async fn whoami_stateless(net: &Tailnet, server: SocketAddr, clients: usize, secs: u64) -> Option<Wrk> {
    let params = json!({"name": "whoami", "arguments": {}, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }});
    let headers = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "whoami"),
    ];
    run(net, server, clients, secs, &params, &headers, &[]).await
}

/// Like [`whoami_stateless`], on sessions (2025-06-18) the caller initialized,
/// `sessions.len()` of them (a multiple of the 2 wrk threads). wrk cannot tie a header to a
/// connection, so each wrk thread hands its half of the sessions out in turn, and a session can
/// have more than one call in flight. MCP request ids must be unique within a session (the
/// server refuses a request reusing the id of a call in flight), so each session's requests
/// cycle through [`IDS_PER_SESSION`] ids: two of its calls share an id only when
/// `IDS_PER_SESSION` × the thread's sessions calls lie between them, far more than a thread
/// makes in the slowest call's time. Each thread formats its requests once (`init`), so a call
/// costs wrk no more Lua than a table lookup (formatting each request took wrk ~4 µs of CPU per
/// call, on the server's cores).
pub async fn whoami_sessions(net: &Tailnet, server: SocketAddr, sessions: &[String], secs: u64) -> Option<Wrk> {
    let params = json!({"name": "whoami", "arguments": {}});
    let headers = [("MCP-Protocol-Version", "2025-06-18")];
    run(net, server, sessions.len(), secs, &params, &headers, sessions).await
}

/// Distinct request ids each session's wrk requests cycle through (see [`whoami_sessions`]).
const IDS_PER_SESSION: usize = 64;

/// One wrk run of `tools/call` with `params` and `headers`, from the peer namespace; with
/// `sessions`, each request carries one of them as `Mcp-Session-Id` (see [`whoami_sessions`]).
async fn run(
    net: &Tailnet,
    server: SocketAddr,
    clients: usize,
    secs: u64,
    params: &serde_json::Value,
    headers: &[(&str, &str)],
    sessions: &[String],
) -> Option<Wrk> {
    if std::process::Command::new("wrk").arg("--version").output().is_err() {
        return None;
    }
    let threads = clients.clamp(1, 2);
    let dir = tempfile::tempdir().ok()?;
    let script = dir.path().join("whoami.lua");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string();
    let mut lua = format!("wrk.method = \"POST\"\nwrk.body = {body:?}\n");
    let host = server.to_string();
    let common = [
        ("Host", host.as_str()),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ];
    for (k, v) in common.iter().chain(headers) {
        lua.push_str(&format!("wrk.headers[{k:?}] = {v:?}\n"));
    }
    if !sessions.is_empty() {
        assert!(
            sessions.len().is_multiple_of(threads),
            "sessions must split evenly over {threads} wrk threads"
        );
        let ids = sessions.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        // The body around its request id, which each formatted request fills in.
        let marked = json!({"jsonrpc": "2.0", "id": "@ID@", "method": "tools/call", "params": params}).to_string();
        let (pre, post) = marked.split_once("\"@ID@\"").expect("the id marker");
        lua.push_str(&format!(
            "local ids = {{ {ids} }}\nlocal per = {}\nlocal window = {IDS_PER_SESSION}\nlocal next_base = 0\n\
             local pre, post = {pre:?}, {post:?}\n\
             function setup(thread) thread:set(\"base\", next_base); next_base = next_base + per end\n\
             local reqs = {{}}\n\
             function init(args)\n  for i = 1, per * window do\n    \
             wrk.headers[\"Mcp-Session-Id\"] = ids[base + ((i - 1) % per) + 1]\n    \
             reqs[i] = wrk.format(nil, nil, nil, pre .. string.format(\"%d\", math.floor((i - 1) / per) + 1) .. post)\n  \
             end\nend\n\
             local n = 0\n\
             function request()\n  n = n + 1\n  return reqs[(n % (per * window)) + 1]\nend\n",
            sessions.len() / threads
        ));
    }
    std::fs::write(&script, lua).ok()?;
    let out = net
        .command_in_peer_ns("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &clients.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{server}/mcp"))
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.trim_start()[prefix.len()..].trim().to_string())
    };
    let ms = |v: String| -> f64 {
        let v = v.trim();
        if let Some(x) = v.strip_suffix("us") {
            x.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
        } else if let Some(x) = v.strip_suffix("ms") {
            x.parse().unwrap_or(f64::NAN)
        } else if let Some(x) = v.strip_suffix('s') {
            x.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
        } else {
            f64::NAN
        }
    };
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(Wrk {
        requests,
        per_sec: field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        p50_ms: field("50%").map(ms).unwrap_or(f64::NAN),
        p99_ms: field("99%").map(ms).unwrap_or(f64::NAN),
        non_2xx: field("Non-2xx or 3xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}
