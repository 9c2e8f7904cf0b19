//! The foundation's budgets, measured on the tailnet harness (`cargo bench --bench whoami`):
//! `whoami` over HTTP with whois + policy + audit on every call (identity cache off), one client
//! and 32 concurrent clients, on a session (2025-06-18) and stateless (2026-07-28); resident
//! memory idle and under load; time from tailscaled reporting `Running` to a connectable listener.
//! The 32-client load runs twice in each mode: this bench's own MCP client (which checks every
//! answer), then wrk, the load generator behind the reference figures, which leaves far
//! more of the same 2 cores to the server (on sessions, one initialized session per connection).
//!
//! Needs root (network namespaces). Environment: `BENCH_SECS` (load duration per phase, default 10),
//! `BENCH_CLIENTS` (default 32), `BENCH_CACHE_SECS` (identity cache, default 0 = whois every call),
//! `BENCH_MODES` (`session,stateless` by default: which modes, in which order).

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::http::{Conn, Mcp};
use support::localapi::{StandIn, fixture};
use support::netns::Tailnet;
use support::server::{PORT, Server};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(100, 100, 1, 1);
const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 2, 2));
/// The load phases make far more calls than the default per-principal rate limits allow (every
/// call would be refused before the audit write the bench measures): lift them.
const BENCH_LIMITS: &str = "[limits.rate.low]\nburst = 100000\nper_minute = 1000000\n";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Session,
    Stateless,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Session => "session 2025-06-18",
            Mode::Stateless => "stateless 2026-07-28",
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// What `journalctl --disk-usage` reports (bytes), if it runs.
fn journal_bytes() -> Option<u64> {
    let out = std::process::Command::new("journalctl")
        .arg("--disk-usage")
        .output()
        .ok()?;
    // "Archived and active journals take up 154.0M in the file system."
    let text = String::from_utf8_lossy(&out.stdout);
    let size = text
        .split_whitespace()
        .find(|w| w.ends_with(['B', 'K', 'M', 'G', 'T']) && w.starts_with(|c: char| c.is_ascii_digit()))?;
    let (num, unit) = size.split_at(size.len() - 1);
    let scale = match unit {
        "B" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        _ => 1024.0f64.powi(4),
    };
    num.parse::<f64>().ok().map(|n| (n * scale) as u64)
}

/// The modes to measure, in order: `BENCH_MODES` (`session`, `stateless`, comma-separated;
/// default both, session first). Running one mode alone, or the other first, shows whether a
/// figure depends on what ran before it in the same server; the verdicts then cover only the
/// modes that ran.
fn modes() -> Vec<Mode> {
    let list = std::env::var("BENCH_MODES").unwrap_or_else(|_| "session,stateless".into());
    list.split(',')
        .map(|m| match m.trim() {
            "session" => Mode::Session,
            "stateless" => Mode::Stateless,
            other => panic!("BENCH_MODES: unknown mode {other:?} (session, stateless)"),
        })
        .collect()
}

fn journald_pid() -> Option<String> {
    let out = std::process::Command::new("pgrep")
        .arg("-x")
        .arg("systemd-journal")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// A client ready to call `whoami` in `mode`.
async fn client(net: &Tailnet, addr: SocketAddr, mode: Mode) -> Mcp {
    let stream = net.connect(ALICE, addr).await.expect("connect");
    let mut m = Mcp::new(Conn::new(stream).await, &format!("{SERVER_IP}:{PORT}"));
    match mode {
        Mode::Session => {
            m.protocol = "2025-06-18".into();
            m.initialize().await.expect("initialize");
        }
        Mode::Stateless => {
            m.protocol = "2026-07-28".into();
            m.extra_headers = vec![
                ("mcp-method".into(), "tools/call".into()),
                ("mcp-name".into(), "whoami".into()),
            ];
        }
    }
    m
}

async fn call(m: &mut Mcp, mode: Mode) -> Value {
    let params = match mode {
        Mode::Session => json!({"name": "whoami", "arguments": {}}),
        Mode::Stateless => json!({"name": "whoami", "arguments": {}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
            "io.modelcontextprotocol/clientCapabilities": {}
        }}),
    };
    let resp = m.request("tools/call", params).await.expect("tools/call");
    let v = resp.json();
    assert_eq!(
        v["result"]["structuredContent"]["principal"], "alice@example.com",
        "unexpected answer: {v}"
    );
    v
}

/// Run `clients` clients for `secs`; returns (calls, per-call latencies in µs).
async fn load(net: &Arc<Tailnet>, addr: SocketAddr, mode: Mode, clients: usize, secs: u64) -> (usize, Vec<u32>, f64) {
    let mut ready = Vec::new();
    for _ in 0..clients {
        let mut m = client(net, addr, mode).await;
        for _ in 0..20 {
            call(&mut m, mode).await;
        }
        ready.push(m);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|mut m| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    call(&mut m, mode).await;
                    lat.push(t.elapsed().as_micros() as u32);
                }
                (m, lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        let (mut m, lat) = t.await.expect("client task");
        all.extend(lat);
        // A client that is done ends its session, as MCP clients do on exit.
        if mode == Mode::Session {
            let resp = m.close().await.expect("DELETE session");
            assert!(
                (200..300).contains(&resp.status),
                "DELETE session: HTTP {}",
                resp.status
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    (all.len(), all, elapsed)
}

async fn time_to_listen(net: &Tailnet, trials: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..trials {
        let standin = StandIn::start().await;
        standin.set_self_ips(&[IpAddr::V4(SERVER_IP)]);
        standin.set_backend_state("Starting");
        let mut server = Server::spawn(net, &standin, "", "").await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let addr = SocketAddr::new(IpAddr::V4(SERVER_IP), PORT);
        assert!(net.connect(ALICE, addr).await.is_err(), "listening before Running");
        standin.set_backend_state("Running");
        let t0 = Instant::now();
        loop {
            if net.connect(ALICE, addr).await.is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "never listened: {}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push(t0.elapsed().as_secs_f64() * 1e3);
        server.stop().await;
    }
    out
}

/// Audit rows for successful `whoami` calls so far.
fn ok_whoami_rows(server: &Server) -> usize {
    let q = tailopsmcp::audit::Query {
        tool: Some("whoami".into()),
        limit: 0,
        ..Default::default()
    };
    tailopsmcp::audit::query_path(&server.db, &q)
        .map(|rows| {
            rows.iter()
                .filter(|r| r.outcome == tailopsmcp::audit::Outcome::Ok)
                .count()
        })
        .unwrap_or(0)
}

/// `VmRSS` with its parts: anonymous (heap, stacks) and file-backed (the binary's pages and
/// libraries, which the kernel maps up to 64 KiB around each page a fault touches).
fn resident(pid: u32) -> String {
    let mb = |field| rss_kib(pid, field) as f64 / 1024.0;
    format!(
        "{:.1} MB (anonymous {:.1} MB, file-backed {:.1} MB)",
        mb("VmRSS:"),
        mb("RssAnon:"),
        mb("RssFile:")
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Err(e) = support::netns::require_root_and_netns() {
        eprintln!("bench needs root and network namespaces: {e}");
        std::process::exit(1);
    }
    let secs = env_num("BENCH_SECS", 10);
    let clients = env_num("BENCH_CLIENTS", 32) as usize;
    let cache = env_num("BENCH_CACHE_SECS", 0);
    println!("machine: {}", support::host::machine());
    println!("{}", support::host::probe_line("before"));
    println!(
        "identity cache: {cache} s ({}), load: {clients} clients x {secs} s",
        if cache == 0 {
            "whois on every call"
        } else {
            "per connection"
        }
    );

    // Production servers mirror every audit record to journald; so does this one.
    match support::journald::ensure_journald() {
        Ok(()) => {
            println!("journald: running, audit events are mirrored to it");
            // Each call adds ~1 KB of journal (a 10-second run 250-400 MB), and journald's cost
            // per event grows with the journal it appends to: figures from a host with
            // gigabytes of journal are not comparable with a fresh one.
            if let Some(bytes) = journal_bytes() {
                let mb = bytes as f64 / 1e6;
                println!("journald: {mb:.0} MB of journal on this host");
                if mb > 1000.0 {
                    println!(
                        "journald: WARNING: a large journal makes every event cost journald more; \
                         `journalctl --vacuum-size=200M` for figures comparable with a fresh host"
                    );
                }
            }
        }
        Err(e) => println!("journald: unavailable ({e}); audit events are not mirrored in this run"),
    }
    let net = Arc::new(Tailnet::new(SERVER_IP, None).expect("tailnet"));
    net.add_caller(ALICE).expect("caller");

    let listen = time_to_listen(&net, 5).await;
    println!(
        "listening after Running: {} ms (each of 5 trials; poll interval included)",
        listen.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(", ")
    );

    let standin = StandIn::start().await;
    standin.set_self_ips(&[IpAddr::V4(SERVER_IP)]);
    standin.add_identity(ALICE, fixture("whois-user.json"));
    let server_section = format!("identity_cache_secs = {cache}");
    let mut server = Server::start(&net, &standin, &server_section, BENCH_LIMITS).await;
    let pid = server.child.as_ref().and_then(|c| c.id()).expect("server pid");
    let addr = server.addr;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("resident memory idle: {}", resident(pid));
    let mut budgets = Budgets::default();
    budgets.at_most(
        "listening after Running, slowest of 5",
        listen.iter().copied().fold(0.0, f64::max),
        100.0,
        "ms",
    );
    budgets.at_most(
        "resident memory idle",
        rss_kib(pid, "VmRSS:") as f64 / 1024.0,
        20.0,
        "MB",
    );

    for mode in modes() {
        let (n, lat, el) = load(&net, addr, mode, 1, secs.min(5)).await;
        println!(
            "{:<22} 1 client : {:>8.0} calls/s  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  ({n} calls)",
            mode.name(),
            n as f64 / el,
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            percentile(&lat, 0.99)
        );
        budgets.at_most(
            &format!("{} p50, 1 client", mode.name()),
            percentile(&lat, 0.5),
            1.0,
            "ms",
        );
        let jpid = journald_pid();
        let before = (
            cpu_secs(&pid.to_string()),
            cpu_secs("self"),
            jpid.as_deref().map(cpu_secs).unwrap_or(0.0),
        );
        let (n, lat, el) = load(&net, addr, mode, clients, secs).await;
        let after = (
            cpu_secs(&pid.to_string()),
            cpu_secs("self"),
            jpid.as_deref().map(cpu_secs).unwrap_or(0.0),
        );
        println!(
            "{:<22} CPU per 1000 calls: server {:.0} ms, bench client + LocalAPI stand-in {:.0} ms, journald {:.0} ms",
            mode.name(),
            (after.0 - before.0) * 1e6 / n as f64,
            (after.1 - before.1) * 1e6 / n as f64,
            (after.2 - before.2) * 1e6 / n as f64
        );
        println!(
            "{:<22} {clients} clients: {:>8.0} calls/s  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  ({n} calls)",
            mode.name(),
            n as f64 / el,
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            percentile(&lat, 0.99)
        );
        println!(
            "{:<22} resident memory after the {clients} clients: {}",
            mode.name(),
            resident(pid)
        );
        let wrk_per_sec = wrk_phase(&net, &server, pid, mode, clients, secs).await;
        budgets.at_least(
            &format!("{} calls/s, {clients} clients", mode.name()),
            wrk_per_sec.unwrap_or(0.0).max(n as f64 / el),
            8000.0,
            "/s",
        );
    }
    println!(
        "resident memory after load: {} now, {:.1} MB peak (VmHWM)",
        resident(pid),
        rss_kib(pid, "VmHWM:") as f64 / 1024.0
    );
    let rows = server.audit_rows();
    println!("audit rows written: {rows}");
    println!("whois requests served by the stand-in: {}", standin.whois_count());
    budgets.at_most(
        "resident memory peak under load",
        rss_kib(pid, "VmHWM:") as f64 / 1024.0,
        40.0,
        "MB",
    );
    server.stop().await;
    println!("{}", support::host::probe_line("after"));
    if !budgets.report() {
        std::process::exit(1);
    }
}

/// The wrk run, printed with the server's and journald's CPU per call and checked against the
/// audit log; its calls/s, or `None` when wrk is not installed. On sessions, `clients` sessions
/// are initialized first (one per wrk connection) and ended after.
async fn wrk_phase(net: &Tailnet, server: &Server, pid: u32, mode: Mode, clients: usize, secs: u64) -> Option<f64> {
    let mut sessions = Vec::new();
    if mode == Mode::Session {
        for _ in 0..clients {
            let mut m = client(net, server.addr, mode).await;
            sessions.push(m.session.take().expect("initialize gave a session"));
        }
    }
    let rows_before = ok_whoami_rows(server);
    let jpid = journald_pid();
    let before = (cpu_secs(&pid.to_string()), jpid.as_deref().map(cpu_secs).unwrap_or(0.0));
    let run = match mode {
        Mode::Session => support::wrk::whoami_sessions(net, server.addr, &sessions, secs).await,
        Mode::Stateless => support::wrk::whoami_stateless(net, server.addr, clients, secs).await,
    };
    let Some(w) = run else {
        println!(
            "{:<22} wrk not installed (apt-get install wrk): skipped the wrk run",
            mode.name()
        );
        return None;
    };
    let after = (cpu_secs(&pid.to_string()), jpid.as_deref().map(cpu_secs).unwrap_or(0.0));
    let audited = ok_whoami_rows(server) - rows_before;
    println!(
        "{:<22} wrk {clients} conns: {:>8.0} calls/s  p50 {:.3} ms  p99 {:.3} ms  ({} calls, {} non-2xx, {} audited ok; CPU/1000 calls: server {:.0} ms, journald {:.0} ms)",
        mode.name(),
        w.per_sec,
        w.p50_ms,
        w.p99_ms,
        w.requests,
        w.non_2xx,
        audited,
        (after.0 - before.0) * 1e6 / w.requests.max(1) as f64,
        (after.1 - before.1) * 1e6 / w.requests.max(1) as f64,
    );
    // Every call wrk counted was answered, so it must have been allowed and audited `ok` (a
    // refused call is answered too: with an error, and audited as a denial).
    assert!(
        audited as u64 >= w.requests,
        "{}: wrk counted {} calls but only {audited} were audited ok",
        mode.name(),
        w.requests
    );
    // A client that is done ends its session, as MCP clients do on exit.
    for id in sessions {
        let stream = net.connect(ALICE, server.addr).await.expect("connect");
        let mut m = Mcp::new(Conn::new(stream).await, &format!("{SERVER_IP}:{PORT}"));
        m.protocol = "2025-06-18".into();
        m.session = Some(id);
        let resp = m.close().await.expect("DELETE session");
        assert!(
            (200..300).contains(&resp.status),
            "DELETE session: HTTP {}",
            resp.status
        );
    }
    Some(w.per_sec)
}

/// The budgets, each with what this run measured.
#[derive(Default)]
struct Budgets(Vec<(String, bool)>);

impl Budgets {
    fn at_most(&mut self, what: &str, value: f64, limit: f64, unit: &str) {
        self.0.push((
            format!("{what}: {value:.2} {unit} (budget <= {limit} {unit})"),
            value <= limit,
        ));
    }

    fn at_least(&mut self, what: &str, value: f64, limit: f64, unit: &str) {
        self.0.push((
            format!("{what}: {value:.0} {unit} (budget >= {limit} {unit})"),
            value >= limit,
        ));
    }

    /// Prints every budget with its verdict; `false` when any was missed.
    fn report(&self) -> bool {
        println!("budgets:");
        for (line, ok) in &self.0 {
            println!("  {} {line}", if *ok { "met   " } else { "MISSED" });
        }
        self.0.iter().all(|(_, ok)| *ok)
    }
}
