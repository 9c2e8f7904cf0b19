//! Benchmark helpers: `wrk` as a load generator, run in the peer namespace of a [`Tailnet`] so the
//! server sees a tailnet caller, with what it measured; and the machine line every report starts with.
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
/// `whoami` call over and over: wrk sends one fixed request on every connection, so it cannot
/// give each its own session, and one shared session would serialize the calls. `None` when wrk
/// is not installed (`apt-get install wrk`).
pub async fn whoami_stateless(net: &Tailnet, server: SocketAddr, clients: usize, secs: u64) -> Option<Wrk> {
    if std::process::Command::new("wrk").arg("--version").output().is_err() {
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let script = dir.path().join("whoami.lua");
    let params = json!({"name": "whoami", "arguments": {}, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).to_string();
    let headers = [
        ("Host".to_string(), server.to_string()),
        ("Content-Type".into(), "application/json".into()),
        ("Accept".into(), "application/json, text/event-stream".into()),
        ("MCP-Protocol-Version".into(), "2026-07-28".into()),
        ("Mcp-Method".into(), "tools/call".into()),
        ("Mcp-Name".into(), "whoami".into()),
    ];
    let mut lua = format!("wrk.method = \"POST\"\nwrk.body = {body:?}\n");
    for (k, v) in &headers {
        lua.push_str(&format!("wrk.headers[{k:?}] = {v:?}\n"));
    }
    std::fs::write(&script, lua).ok()?;
    let out = net
        .command_in_peer_ns("wrk")
        .args([
            "-t",
            &clients.clamp(1, 2).to_string(),
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

/// The machine a benchmark ran on, for its report: cores, CPU model, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, kernel {}", kernel.trim())
}
