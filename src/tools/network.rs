//! The `network` toolset: diagnostics that reach out from a host — ping, TCP port check, DNS
//! lookup, TLS certificate check, HTTP probe and traceroute — each declared as data next to its
//! handler.
//!
//! Tools here parse and bound arguments, validate every host/name before it reaches a command
//! line or a resolver, and call `exec::net`. `ping` and `traceroute` run as commands, so they work
//! on `local` and on `ssh` targets (the command runs there); the others open sockets from this
//! server's own host and run on `local` only. The HTTP probe's destination rules come from
//! `[network]` (`ctx.config.network`) and are enforced in `exec::net`. Nothing here checks
//! scopes or writes audit rows.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Annotations, Declaration, Kind, Output, Requirement, Risk, Tool, ToolContext, ToolError, Truncated, bounded, tool,
    undeclared_kind,
};
use crate::exec::net::{self, DnsResult, Host, PingResult, PortState, ProbeResult, TlsReport, TraceResult};
use crate::exec::remote::{LocalRunner, Runner};
use crate::exec::{ExecError, Limits};
use crate::policy::{Area, Level, Scope};
use crate::targets::Executor;

/// Largest `ca_pem` accepted, in bytes.
pub const CA_PEM_MAX: usize = 64 * 1024;
/// Most ports one `network_port_check` call may try.
pub const PORTS_MAX: usize = 32;

/// `ping` and `traceroute` run as commands: on this host, or on an SSH target's host.
const COMMAND_KINDS: &[Kind] = &[Kind::Local, Kind::Ssh];
/// The other tools open sockets from this server's own host.
const SOCKET_KINDS: &[Kind] = &[Kind::Local];
const NETWORK_READ: Requirement = Requirement::Scope(Scope::new(Area::Network, Level::Read));

/// The tools of this toolset, in catalog order.
pub fn tools() -> Vec<Arc<dyn Tool>> {
    vec![
        tool(
            Declaration {
                name: "network_ping",
                title: "Ping a host",
                description: "Send `count` ICMP echo requests (1-10, default 3, 200 ms apart) to `host` (IP address or DNS \
                    name) with iputils `ping`, waiting at most `timeout_secs` (1-30, default 5). Returns packets \
                    transmitted/received, loss percent, min/avg/max/mdev round-trip times (ms), each reply's time, \
                    the address used and ICMP errors. Runs on `local` and on `ssh` targets (from that host).",
                requires: NETWORK_READ,
                risk: Risk::Low,
                annotations: NETWORK_READ_ONLY,
                kinds: COMMAND_KINDS,
            },
            ping,
        ),
        tool(
            Declaration {
                name: "network_port_check",
                title: "Check TCP ports",
                description: "Try a TCP connection to each of `ports` (1-32 ports) on `host` at once, each within \
                    `timeout_ms` (100-10000, default 2000). Each port is `open` (connected; closed again at once, \
                    nothing sent), `closed` (refused), `filtered` (no answer in time) or `error`. A name resolves \
                    through `[network] dns_servers` when set (else the system resolver); the first address is \
                    used. Runs from this server's host (`local` target only).",
                requires: NETWORK_READ,
                risk: Risk::Low,
                annotations: NETWORK_READ_ONLY,
                kinds: SOCKET_KINDS,
            },
            port_check,
        ),
        tool(
            Declaration {
                name: "network_dns_lookup",
                title: "DNS lookup",
                description: "Look up `name` for `record_type` (A, AAAA, CNAME, MX, TXT, NS, SOA, PTR, SRV or CAA; default A; \
                    for PTR an IP address is turned into its reverse name) at `resolver` (IP or IP:PORT), else the \
                    configured `[network] dns_servers`, else the system's resolvers. Returns status (NOERROR or \
                    NXDOMAIN), the answer records (name, type, TTL, value; at most `limit`, 1-100, default 50) and \
                    the time taken. Server failures (SERVFAIL, REFUSED, timeouts) are errors. `local` target only.",
                requires: NETWORK_READ,
                risk: Risk::Low,
                annotations: NETWORK_READ_ONLY,
                kinds: SOCKET_KINDS,
            },
            dns_lookup,
        ),
        tool(
            Declaration {
                name: "network_tls_check",
                title: "Check a TLS certificate",
                description: "Connect to `host`:`port` (default 443), complete a TLS handshake for `server_name` (default \
                    `host`) and describe what the server presented: protocol and cipher suite; each certificate of \
                    the chain (subject, issuer, serial, validity, days left, CA flag, SANs); the leaf's expiry and \
                    days left; whether `server_name` matches a SAN; and whether the chain verifies now against the \
                    system's CA store or the given `ca_pem` (with the reason when not). A bad certificate is \
                    reported, not refused. Names resolve like `network_port_check`. `local` target only.",
                requires: NETWORK_READ,
                risk: Risk::Low,
                annotations: NETWORK_READ_ONLY,
                kinds: SOCKET_KINDS,
            },
            tls_check,
        ),
        tool(
            Declaration {
                name: "network_http_probe",
                title: "Probe an HTTP endpoint",
                description: "Send one `GET` or `HEAD` to `url` (http or https, TLS verified against the system's store or \
                    `ca_pem`) and report the status, HTTP version, a subset of response headers (content-type, \
                    content-length, server, location, cache-control, date, last-modified, etag, ...), the body \
                    size read (at most `max_body_bytes`) with a 512-byte text preview, and timings (DNS, connect, \
                    TLS, first byte, total). Redirects are reported, never followed. Only destinations allowed by \
                    `[network] http_allow` are probed; cloud metadata and (unless configured) link-local \
                    addresses are refused even when a name resolves there; a name allowed by a name rule must \
                    resolve to public addresses only (not loopback, private, tailnet or this node's own) unless \
                    an address rule contains them; the connection goes to the checked address. `local` target only.",
                requires: NETWORK_READ,
                risk: Risk::Low,
                annotations: NETWORK_READ_ONLY,
                kinds: SOCKET_KINDS,
            },
            http_probe,
        ),
        tool(
            Declaration {
                name: "network_traceroute",
                title: "Trace the route to a host",
                description: "Trace the route to `host` with `traceroute -n -q 1 -w 1` (or iputils `tracepath` when \
                    traceroute is not installed), up to `max_hops` (1-30, default 15). Returns each hop's number, \
                    the address that answered (absent for `*`), its round-trip time and notes (`!H`, `reached`), \
                    and whether the destination was reached. Runs on `local` and on `ssh` targets.",
                requires: NETWORK_READ,
                risk: Risk::Low,
                annotations: NETWORK_READ_ONLY,
                kinds: COMMAND_KINDS,
            },
            traceroute,
        ),
    ]
}

/// Arguments of `network_ping`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PingArgs {
    /// IP address or DNS name to ping.
    pub host: String,
    /// Echo requests to send, 1 to 10 (default 3), 200 ms apart.
    #[serde(default)]
    #[schemars(range(min = 1, max = 10))]
    pub count: Option<i64>,
    /// Seconds to wait in all, 1 to 30 (default 5).
    #[serde(default)]
    #[schemars(range(min = 1, max = 30))]
    pub timeout_secs: Option<i64>,
}

/// Arguments of `network_port_check`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortCheckArgs {
    /// IP address or DNS name to connect to.
    pub host: String,
    /// TCP ports to try (1-65535), 1 to 32 of them, all at once.
    pub ports: Vec<i64>,
    /// Milliseconds each connection attempt may take, 100 to 10000 (default 2000).
    #[serde(default)]
    #[schemars(range(min = 100, max = 10000))]
    pub timeout_ms: Option<i64>,
}

/// Arguments of `network_dns_lookup`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsLookupArgs {
    /// The name to look up (for PTR, an IP address or a reverse name).
    pub name: String,
    /// A, AAAA, CNAME, MX, TXT, NS, SOA, PTR, SRV or CAA (default A).
    #[serde(default)]
    pub record_type: Option<String>,
    /// DNS server to ask, `IP` or `IP:PORT` (default: `[network] dns_servers`, else the system's).
    #[serde(default)]
    pub resolver: Option<String>,
    /// Milliseconds to wait, 100 to 10000 (default 3000).
    #[serde(default)]
    #[schemars(range(min = 100, max = 10000))]
    pub timeout_ms: Option<i64>,
    /// Most answer records returned, 1 to 100 (default 50).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
}

/// Arguments of `network_tls_check`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsCheckArgs {
    /// IP address or DNS name to connect to.
    pub host: String,
    /// TCP port, 1 to 65535 (default 443).
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i64>,
    /// The name to check the certificate for and send as SNI (default: `host`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// A CA certificate (PEM, at most 64 KiB) to verify against instead of the system's store.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Milliseconds for connecting and the handshake, 100 to 10000 (default 5000).
    #[serde(default)]
    #[schemars(range(min = 100, max = 10000))]
    pub timeout_ms: Option<i64>,
}

/// Arguments of `network_http_probe`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeArgs {
    /// `http://` or `https://` URL; its host must be allowed by `[network] http_allow`.
    pub url: String,
    /// `GET` (default) or `HEAD`.
    #[serde(default)]
    pub method: Option<String>,
    /// Body bytes to read at most, 0 to 1048576 (default 65536); the rest is not read.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1048576))]
    pub max_body_bytes: Option<i64>,
    /// For https: a CA certificate (PEM, at most 64 KiB) to trust instead of the system's store.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Milliseconds for the whole exchange, 100 to 30000 (default 10000).
    #[serde(default)]
    #[schemars(range(min = 100, max = 30000))]
    pub timeout_ms: Option<i64>,
}

/// Arguments of `network_traceroute`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracerouteArgs {
    /// IP address or DNS name to trace the route to.
    pub host: String,
    /// Most hops to probe, 1 to 30 (default 15).
    #[serde(default)]
    #[schemars(range(min = 1, max = 30))]
    pub max_hops: Option<i64>,
}

/// `structuredContent` of `network_port_check`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PortCheckOutput {
    pub host: String,
    /// The address connected to (the first the host resolved to).
    pub address: String,
    /// How many ports are open.
    pub open: usize,
    pub ports: Vec<PortState>,
}

/// `structuredContent` of `network_dns_lookup`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DnsLookupOutput {
    #[serde(flatten)]
    pub result: DnsResult,
    /// Set when more records came back than `limit`.
    pub truncated: Option<Truncated>,
}

/// `structuredContent` of `network_http_probe`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HttpProbeOutput {
    #[serde(flatten)]
    pub result: ProbeResult,
    /// Set when the body went on past `max_body_bytes` (how much more is unknown: it was not read).
    pub truncated: Option<Truncated>,
}

const NETWORK_READ_ONLY: Annotations = Annotations {
    read_only: true,
    destructive: false,
    idempotent: true,
    open_world: true,
};

// ---------------------------------------------------------------------------------------------
// Handlers

async fn ping(ctx: ToolContext, args: PingArgs) -> Result<Output<PingResult>, ToolError> {
    let host = host_arg("host", &args.host)?;
    let count = bounded("count", args.count, 3, 1, 10)? as u32;
    let deadline = bounded("timeout_secs", args.timeout_secs, 5, 1, 30)? as u32;
    let local = LocalRunner(Limits {
        timeout: Duration::from_secs(u64::from(deadline) + 5),
        max_output: 64 * 1024,
    });
    let runner = command_runner(&ctx, &local)?;
    let result = net::ping(runner, &host, count, deadline).await.map_err(|e| match e {
        // Locally, a ping whose file capability the service's bounding set forbids cannot
        // even start.
        ExecError::Failed(m) if m.contains("cannot be run: permission denied") => ToolError::Failed(format!(
            "{m}: /usr/bin/ping needs CAP_NET_RAW in the service's capability bounding set \
                 (a drop-in with `CapabilityBoundingSet=CAP_NET_RAW`)"
        )),
        other => other.into(),
    })?;
    let mut text = format!(
        "{} ({}): {}/{} received, {}% loss",
        result.host,
        result.address.as_deref().unwrap_or("?"),
        result.received,
        result.transmitted,
        result.loss_percent
    );
    if let (Some(min), Some(avg), Some(max)) = (result.rtt_min_ms, result.rtt_avg_ms, result.rtt_max_ms) {
        let _ = write!(text, ", rtt min/avg/max {min:.3}/{avg:.3}/{max:.3} ms");
    }
    for e in &result.errors {
        let _ = write!(text, "\n{e}");
    }
    Ok(Output::new(result, text))
}

async fn port_check(ctx: ToolContext, args: PortCheckArgs) -> Result<Output<PortCheckOutput>, ToolError> {
    let host = host_arg("host", &args.host)?;
    if args.ports.is_empty() || args.ports.len() > PORTS_MAX {
        return Err(ToolError::InvalidArgs(format!(
            "`ports` must list 1 to {PORTS_MAX} ports, got {}",
            args.ports.len()
        )));
    }
    let mut ports: Vec<u16> = Vec::new();
    for &p in &args.ports {
        let port = u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ToolError::InvalidArgs(format!("port {p} is not between 1 and 65535")))?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let timeout = Duration::from_millis(bounded("timeout_ms", args.timeout_ms, 2000, 100, 10_000)? as u64);
    let ips = net::resolve(&host, &ctx.config.network.dns_servers, timeout).await?;
    let ip = ips[0];
    let states = net::port_check(ip, &ports, timeout).await;
    let output = PortCheckOutput {
        host: host.to_string(),
        address: ip.to_string(),
        open: states.iter().filter(|s| s.state == "open").count(),
        ports: states,
    };
    let mut text = format!(
        "{} ({}): {} of {} open",
        output.host,
        output.address,
        output.open,
        output.ports.len()
    );
    for s in &output.ports {
        let _ = write!(text, "\n{:>5}/tcp {}", s.port, s.state);
        if let Some(e) = &s.error {
            let _ = write!(text, " ({e})");
        }
    }
    Ok(Output::new(output, text))
}

async fn dns_lookup(ctx: ToolContext, args: DnsLookupArgs) -> Result<Output<DnsLookupOutput>, ToolError> {
    let rtype = net::RecordType::parse(args.record_type.as_deref().unwrap_or("A")).map_err(ToolError::InvalidArgs)?;
    let name = match rtype {
        net::RecordType::PTR if args.name.parse::<std::net::IpAddr>().is_ok() => args.name.clone(),
        _ => net::parse_dns_name(&args.name).map_err(|e| ToolError::InvalidArgs(format!("`name`: {e}")))?,
    };
    let servers: Vec<SocketAddr> = match &args.resolver {
        Some(r) => vec![net::parse_dns_server(r).map_err(|e| ToolError::InvalidArgs(format!("`resolver`: {e}")))?],
        None => ctx.config.network.dns_servers.clone(),
    };
    let timeout = Duration::from_millis(bounded("timeout_ms", args.timeout_ms, 3000, 100, 10_000)? as u64);
    let limit = bounded("limit", args.limit, 50, 1, 100)?;
    let (result, total) = net::dns_lookup(&name, rtype, &servers, timeout, limit).await?;
    let truncated = (total > result.answers.len()).then(|| Truncated {
        cap: format!("limit={limit}"),
        omitted: Some((total - result.answers.len()) as u64),
    });
    let mut text = format!(
        "{} {} at {}: {} ({} answers, {:.1} ms)",
        result.query,
        rtype.as_str(),
        result.resolver,
        result.status,
        total,
        result.elapsed_ms
    );
    for a in &result.answers {
        let _ = write!(text, "\n{} {} {} {}", a.name, a.ttl, a.record_type, a.value);
    }
    if let Some(t) = &truncated {
        let _ = write!(text, "\n(… {} more, {})", t.omitted.unwrap_or(0), t.cap);
    }
    Ok(Output::new(DnsLookupOutput { result, truncated }, text))
}

async fn tls_check(ctx: ToolContext, args: TlsCheckArgs) -> Result<Output<TlsReport>, ToolError> {
    let host = host_arg("host", &args.host)?;
    let port = bounded("port", args.port, 443, 1, 65_535)? as u16;
    let name = match &args.server_name {
        Some(n) => net::parse_host(n)
            .map_err(|e| ToolError::InvalidArgs(format!("`server_name`: {e}")))?
            .as_arg(),
        None => host.as_arg(),
    };
    let ca = ca_arg(args.ca_pem.as_deref())?;
    let timeout = Duration::from_millis(bounded("timeout_ms", args.timeout_ms, 5000, 100, 10_000)? as u64);
    let ips = net::resolve(&host, &ctx.config.network.dns_servers, timeout).await?;
    let report = net::tls_check(SocketAddr::new(ips[0], port), &name, ca.as_deref(), timeout).await?;
    let mut text = format!(
        "{} ({}) {} {}: {}",
        name,
        report.address,
        report.protocol.as_deref().unwrap_or("?"),
        report.cipher_suite.as_deref().unwrap_or("?"),
        match (&report.verify_error, report.verified) {
            (_, true) => format!("verified against {}", report.trust),
            (Some(e), false) => format!("NOT verified against {}: {e}", report.trust),
            (None, false) => "NOT verified".to_string(),
        }
    );
    if let (Some(at), Some(days)) = (&report.expires_at, report.days_left) {
        let _ = write!(
            text,
            "\nexpires {at} ({days} days{}), name {}",
            if report.expired { ", EXPIRED" } else { "" },
            if report.name_matches {
                "matches"
            } else {
                "does NOT match"
            }
        );
    }
    for (i, c) in report.chain.iter().enumerate() {
        let _ = write!(text, "\n[{i}] {} (issuer {})", c.subject, c.issuer);
        if !c.sans.is_empty() {
            let _ = write!(text, " SANs: {}", c.sans.join(", "));
        }
    }
    Ok(Output::new(report, text))
}

async fn http_probe(ctx: ToolContext, args: HttpProbeArgs) -> Result<Output<HttpProbeOutput>, ToolError> {
    let (url, https, host, port) =
        net::parse_url(&args.url).map_err(|e| ToolError::InvalidArgs(format!("`url`: {e}")))?;
    let method = match args.method.as_deref().unwrap_or("GET") {
        m if m.eq_ignore_ascii_case("GET") => http::Method::GET,
        m if m.eq_ignore_ascii_case("HEAD") => http::Method::HEAD,
        other => {
            return Err(ToolError::InvalidArgs(format!(
                "`method` must be GET or HEAD, got `{}`",
                other.chars().take(20).collect::<String>()
            )));
        }
    };
    let max_body = bounded("max_body_bytes", args.max_body_bytes, 65_536, 0, 1_048_576)?;
    let timeout = Duration::from_millis(bounded("timeout_ms", args.timeout_ms, 10_000, 100, 30_000)? as u64);
    let ca = ca_arg(args.ca_pem.as_deref())?;
    let req = net::ProbeRequest {
        url,
        https,
        host,
        port,
        method,
        max_body,
        timeout,
        ca,
    };
    // A name rule never admits this node's own addresses: its tailnet ones and its interfaces'.
    let tailnet = ctx.tailnet.addresses.clone();
    let own = tokio::task::spawn_blocking(move || net::own_addresses(&tailnet))
        .await
        .map_err(|e| ToolError::Internal(format!("listing this node's addresses: {e}")))?;
    let result = net::http_probe(&req, &ctx.config.network.http, &ctx.config.network.dns_servers, &own).await?;
    let truncated = result.body_truncated.then(|| Truncated {
        cap: format!("{max_body} bytes"),
        omitted: None,
    });
    let mut text = format!(
        "{} {} → {} {} via {} ({:.1} ms: dns {:.1}, connect {:.1}{}, first byte {:.1})",
        result.method,
        result.url,
        result.status,
        result.reason.as_deref().unwrap_or(""),
        result.address,
        result.timing.total_ms,
        result.timing.dns_ms,
        result.timing.connect_ms,
        result
            .timing
            .tls_ms
            .map(|t| format!(", tls {t:.1}"))
            .unwrap_or_default(),
        result.timing.first_byte_ms
    );
    for h in &result.headers {
        let _ = write!(text, "\n{}: {}", h.name, h.value);
    }
    let _ = write!(
        text,
        "\nbody: {} bytes{}",
        result.body_bytes,
        if result.body_truncated {
            " (cut at max_body_bytes)"
        } else {
            ""
        }
    );
    Ok(Output::new(HttpProbeOutput { result, truncated }, text))
}

async fn traceroute(ctx: ToolContext, args: TracerouteArgs) -> Result<Output<TraceResult>, ToolError> {
    let host = host_arg("host", &args.host)?;
    let max_hops = bounded("max_hops", args.max_hops, 15, 1, 30)? as u32;
    let local = LocalRunner(Limits {
        timeout: Duration::from_secs(u64::from(max_hops) * 2 + 10),
        max_output: 64 * 1024,
    });
    let runner = command_runner(&ctx, &local)?;
    let result = net::traceroute(runner, &host, max_hops).await?;
    let mut text = format!(
        "{} to {} ({} hops max): {}",
        result.program,
        result.host,
        result.max_hops,
        if result.reached { "reached" } else { "not reached" }
    );
    for h in &result.hops {
        let _ = write!(text, "\n{:>2}  {}", h.hop, h.address.as_deref().unwrap_or("*"));
        if let Some(ms) = h.rtt_ms {
            let _ = write!(text, "  {ms:.3} ms");
        }
        if let Some(n) = &h.note {
            let _ = write!(text, " {n}");
        }
    }
    Ok(Output::new(result, text))
}

// ---------------------------------------------------------------------------------------------

fn host_arg(key: &str, value: &str) -> Result<Host, ToolError> {
    net::parse_host(value).map_err(|e| ToolError::InvalidArgs(format!("`{key}`: {e}")))
}

fn ca_arg(
    pem: Option<&str>,
) -> Result<Option<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>>, ToolError> {
    match pem {
        None => Ok(None),
        Some(p) if p.len() > CA_PEM_MAX => Err(ToolError::InvalidArgs(format!(
            "`ca_pem` is larger than {CA_PEM_MAX} bytes"
        ))),
        Some(p) => net::parse_pem_certs(p).map(Some).map_err(ToolError::InvalidArgs),
    }
}

/// Where a command-based tool runs: this host, or an SSH target's host.
fn command_runner<'a>(ctx: &'a ToolContext, local: &'a LocalRunner) -> Result<&'a dyn Runner, ToolError> {
    match &ctx.target.executor {
        Executor::Local => Ok(local),
        Executor::Ssh(ssh) => Ok(ssh),
        _ => Err(undeclared_kind(ctx)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolOutput;
    use crate::tools::testing::{self, invalid};
    use serde_json::{Value, json};

    async fn call(name: &str, args: Value) -> Result<ToolOutput, ToolError> {
        testing::call(tools(), name, args).await
    }

    #[test]
    fn specs_are_as_declared() {
        let names: Vec<&str> = tools().iter().map(|t| t.spec().name).collect();
        assert_eq!(
            names,
            [
                "network_ping",
                "network_port_check",
                "network_dns_lookup",
                "network_tls_check",
                "network_http_probe",
                "network_traceroute"
            ]
        );
        for t in tools() {
            let s = t.spec();
            assert_eq!(s.annotations, NETWORK_READ_ONLY, "{}", s.name);
            assert!(s.annotations.open_world && !s.mutates());
            assert_eq!(s.risk, Risk::Low);
            assert_eq!(s.requires, Requirement::Scope(Scope::new(Area::Network, Level::Read)));
            assert_eq!(s.input_schema["additionalProperties"], json!(false), "{}", s.name);
            assert!(s.input_schema["properties"].get("target").is_some(), "{}", s.name);
            assert_eq!(s.output_schema["type"], json!("object"), "{}", s.name);
        }
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_before_anything_runs() {
        for host in ["-oProxyCommand=id", "a;id", "$(id)", "a b", "x`id`", ""] {
            invalid(call("network_ping", json!({"host": host})).await, "`host`");
            invalid(call("network_traceroute", json!({"host": host})).await, "`host`");
            invalid(
                call("network_port_check", json!({"host": host, "ports": [22]})).await,
                "`host`",
            );
            invalid(call("network_tls_check", json!({"host": host})).await, "`host`");
        }
        invalid(
            call("network_ping", json!({"host": "h", "count": 11})).await,
            "between 1 and 10",
        );
        invalid(
            call("network_ping", json!({"host": "h", "timeout_secs": 0})).await,
            "between 1 and 30",
        );
        invalid(
            call("network_traceroute", json!({"host": "h", "max_hops": 64})).await,
            "between 1 and 30",
        );
        invalid(
            call("network_port_check", json!({"host": "h", "ports": []})).await,
            "1 to 32 ports",
        );
        let many: Vec<i64> = (1..=33).collect();
        invalid(
            call("network_port_check", json!({"host": "h", "ports": many})).await,
            "1 to 32 ports",
        );
        invalid(
            call("network_port_check", json!({"host": "h", "ports": [70000]})).await,
            "port 70000",
        );
        invalid(
            call("network_port_check", json!({"host": "h", "ports": [0]})).await,
            "port 0",
        );
        invalid(
            call("network_dns_lookup", json!({"name": "x.lan", "record_type": "AXFR"})).await,
            "unknown record type `AXFR`",
        );
        invalid(call("network_dns_lookup", json!({"name": "x;id"})).await, "`name`");
        invalid(
            call("network_dns_lookup", json!({"name": "x.lan", "resolver": "dns.google"})).await,
            "`resolver`",
        );
        invalid(
            call("network_dns_lookup", json!({"name": "x.lan", "limit": 1000})).await,
            "between 1 and 100",
        );
        invalid(
            call("network_tls_check", json!({"host": "h", "port": 0})).await,
            "between 1 and 65535",
        );
        invalid(
            call("network_tls_check", json!({"host": "h", "ca_pem": "nope"})).await,
            "no PEM certificate",
        );
        invalid(
            call(
                "network_tls_check",
                json!({"host": "h", "ca_pem": "x".repeat(CA_PEM_MAX + 1)}),
            )
            .await,
            "larger than",
        );
        invalid(
            call("network_http_probe", json!({"url": "file:///etc/passwd"})).await,
            "not a URL",
        );
        invalid(
            call("network_http_probe", json!({"url": "gopher://x/"})).await,
            "scheme `gopher`",
        );
        invalid(
            call("network_http_probe", json!({"url": "http://x/", "method": "DELETE"})).await,
            "GET or HEAD",
        );
        invalid(
            call(
                "network_http_probe",
                json!({"url": "http://x/", "max_body_bytes": 2_000_000}),
            )
            .await,
            "between 0 and 1048576",
        );
        invalid(
            call("network_ping", json!({"host": "h", "colour": 1})).await,
            "unknown field",
        );
    }

    #[tokio::test]
    async fn the_http_probe_is_off_by_default() {
        match call("network_http_probe", json!({"url": "http://127.0.0.1:9/"})).await {
            Err(ToolError::Failed(m)) => assert!(m.contains("[network] http_allow"), "{m}"),
            other => panic!("{:?}", other.map(|o| o.text)),
        }
    }
}
