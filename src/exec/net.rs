//! Network diagnostics from this host (and, for `ping`/`traceroute`, from any host a
//! [`Runner`] reaches): ping, TCP port checks, DNS lookups, TLS certificate checks, HTTP probes
//! and traceroute, each returning a typed result.
//!
//! Host names and addresses are validated here ([`parse_host`], [`parse_dns_name`]) before they
//! reach a command line or a resolver: a name is letters, digits, `-` and `.` (`_` too for DNS
//! queries), never starting with `-`. Programs run as argument vectors (`ping`, `traceroute`,
//! `tracepath` from iputils/traceroute) with pure, table-tested parsers for their output.
//!
//! The HTTP probe is the one operation that fetches content from a destination, so it carries
//! the destination rules ([`HttpPolicy`]): the URL's host must match the allow-list (names,
//! `*.suffix`, IPs, CIDRs); every address the name resolves to is checked (metadata addresses
//! always refused, link-local unless allowed, unspecified/multicast/broadcast never), and the
//! connection goes to the checked address itself — the name is resolved once, here, so a DNS
//! answer that changes between the check and the connect (rebinding) cannot redirect it. A name
//! rule vouches for public addresses only: an address that is loopback, private, tailnet/CGNAT,
//! link-local or otherwise special ([`not_public`]), or one of this node's own, is reached only
//! when an address rule contains it, so whoever controls a name's DNS cannot point the probe at
//! internal services. Redirects are reported, never followed.
//!
//! Knows nothing about callers or scopes; it enforces the configured destination rules and caps.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::remote::Runner;
use super::show::cut;
use super::{CommandSpec, ExecError, Output};

/// Names that reach cloud metadata services; refused by the HTTP probe whatever they resolve to.
pub const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata.goog"];

/// Addresses of cloud metadata services (AWS/GCP/Azure/OpenStack 169.254.169.254, AWS ECS
/// 169.254.170.2, Alibaba 100.100.100.200, AWS IPv6 fd00:ec2::254): always refused by the probe.
pub const METADATA_ADDRESSES: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// How many bytes of an HTTP response body are shown as text.
pub const BODY_PREVIEW_BYTES: usize = 512;
/// Response headers the probe reports (others are counted, not shown).
pub const REPORTED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "server",
    "location",
    "cache-control",
    "date",
    "last-modified",
    "etag",
    "strict-transport-security",
    "www-authenticate",
    "retry-after",
];
/// Longest header value reported (longer ones end with `…`).
const HEADER_VALUE_MAX: usize = 256;

// ---------------------------------------------------------------------------------------------
// Hosts and names

/// A validated destination: an IP address or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// Lower-case, without a trailing dot.
    Name(String),
}

impl Host {
    /// The host as it goes on a command line or into a resolver.
    pub fn as_arg(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_arg())
    }
}

/// An IP address (v6 with or without brackets) or a DNS host name (letters, digits, `-`, `.`;
/// labels of 1-63 characters not starting or ending with `-`; at most 253 characters).
pub fn parse_host(s: &str) -> Result<Host, String> {
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Host::Ip(crate::tailnet::unmap(ip)));
    }
    check_name(s, false).map(Host::Name)
}

/// A DNS name to query: like a host name, but `_` is allowed (`_http._tcp.example.com`).
pub fn parse_dns_name(s: &str) -> Result<String, String> {
    check_name(s, true)
}

fn check_name(s: &str, underscore: bool) -> Result<String, String> {
    let shown = cut(s, 80);
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() {
        return Err("host name is empty".to_string());
    }
    if name.len() > 253 {
        return Err(format!("host name `{shown}` is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "`{shown}` is not a valid host name (empty label or one longer than 63 characters)"
            ));
        }
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || (underscore && c == '_');
        if !label.chars().all(ok_char) {
            return Err(format!(
                "`{shown}` is not a valid host name or IP address (only letters, digits, `-` and `.` are allowed{})",
                if underscore { ", and `_`" } else { "" }
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "`{shown}` is not a valid host name (a label starts or ends with `-`)"
            ));
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// Resolve `host` to its addresses: an IP is itself; a name goes to `servers` when given
/// (IP:port, through hickory-resolver) or to the system resolver (`getaddrinfo`: `/etc/hosts`,
/// `/etc/resolv.conf`, nsswitch). Duplicates removed, order kept.
pub async fn resolve(host: &Host, servers: &[SocketAddr], timeout: Duration) -> Result<Vec<IpAddr>, ExecError> {
    let name = match host {
        Host::Ip(ip) => return Ok(vec![*ip]),
        Host::Name(n) => n,
    };
    let mut ips: Vec<IpAddr> = if servers.is_empty() {
        let lookup = tokio::net::lookup_host((name.as_str(), 0));
        match tokio::time::timeout(timeout, lookup).await {
            Err(_) => return Err(ExecError::Timeout(timeout)),
            Ok(Err(e)) => return Err(ExecError::Unreachable(format!("cannot resolve `{name}`: {e}"))),
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        }
    } else {
        let resolver = dns_resolver(servers, timeout)?;
        let fqdn = format!("{name}.");
        match tokio::time::timeout(timeout, resolver.lookup_ip(fqdn.as_str())).await {
            Err(_) => return Err(ExecError::Timeout(timeout)),
            Ok(Err(e)) => return Err(ExecError::Unreachable(format!("cannot resolve `{name}`: {e}"))),
            Ok(Ok(lookup)) => lookup.iter().collect(),
        }
    };
    let mut seen = Vec::new();
    ips.retain(|ip| {
        let ip = crate::tailnet::unmap(*ip);
        if seen.contains(&ip) {
            false
        } else {
            seen.push(ip);
            true
        }
    });
    if seen.is_empty() {
        return Err(ExecError::Unreachable(format!("`{name}` has no addresses")));
    }
    Ok(seen)
}

/// A DNS server given as `IP` (port 53) or `IP:PORT` (`[v6]:PORT`).
pub fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{}` is not a DNS server address (IP or IP:PORT)", cut(s, 80)))
}

fn dns_resolver(servers: &[SocketAddr], timeout: Duration) -> Result<hickory_resolver::TokioResolver, ExecError> {
    use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;

    let mut builder = if servers.is_empty() {
        hickory_resolver::Resolver::builder_tokio()
            .map_err(|e| ExecError::Config(format!("cannot read the system resolver configuration: {e}")))?
    } else {
        let name_servers = servers
            .iter()
            .map(|sa| {
                let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
                for c in &mut ns.connections {
                    c.port = sa.port();
                }
                ns
            })
            .collect();
        let mut b = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        );
        b.options_mut().use_hosts_file = ResolveHosts::Never;
        b
    };
    let opts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.cache_size = 0;
    builder
        .build()
        .map_err(|e| ExecError::Config(format!("cannot build a DNS resolver: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Ping

/// What `ping` measured.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PingResult {
    /// The host as asked.
    pub host: String,
    /// The address ping used (from its first line), when it resolved.
    pub address: Option<String>,
    pub transmitted: u32,
    pub received: u32,
    /// Packet loss in percent (0-100).
    pub loss_percent: f64,
    /// Round-trip times in milliseconds; absent when nothing came back.
    pub rtt_min_ms: Option<f64>,
    pub rtt_avg_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    pub rtt_mdev_ms: Option<f64>,
    /// Each reply's round-trip time in milliseconds, in order.
    pub replies_ms: Vec<f64>,
    /// ICMP errors reported (e.g. "Destination Host Unreachable"), at most 5.
    pub errors: Vec<String>,
}

/// The `ping` command: numeric output, `count` echo requests 200 ms apart, waiting at most
/// `deadline_secs` in all.
pub fn ping_command(host: &Host, count: u32, deadline_secs: u32) -> CommandSpec {
    CommandSpec::new(
        "ping",
        [
            "-n".to_string(),
            "-c".to_string(),
            count.to_string(),
            "-i".to_string(),
            "0.2".to_string(),
            "-W".to_string(),
            deadline_secs.min(10).to_string(),
            "-w".to_string(),
            deadline_secs.to_string(),
            host.as_arg(),
        ],
    )
}

/// Ping `host` through `runner` (locally or over SSH).
pub async fn ping(runner: &dyn Runner, host: &Host, count: u32, deadline_secs: u32) -> Result<PingResult, ExecError> {
    let cmd = ping_command(host, count, deadline_secs);
    let out = runner.run(&cmd).await?;
    if out.timed_out {
        return Err(ExecError::Timeout(Duration::from_secs(u64::from(deadline_secs))));
    }
    match parse_ping(&host.as_arg(), &out.stdout) {
        Some(result) => Ok(result),
        None if not_permitted(&out.stderr) => Err(ExecError::Failed(format!(
            "`ping` may not open an ICMP socket here ({}): it needs CAP_NET_RAW in the service's \
             capability bounding set (ping's file capability; a drop-in with \
             `CapabilityBoundingSet=CAP_NET_RAW`) or the service's group in \
             net.ipv4.ping_group_range",
            cut(out.stderr.trim(), 200)
        ))),
        None => Err(command_failed("ping", &out)),
    }
}

fn not_permitted(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("operation not permitted") || s.contains("permission denied")
}

/// Parse iputils `ping -n` output. `None` when there is no statistics line (ping failed before
/// sending: unknown host, no permission).
pub fn parse_ping(host: &str, stdout: &str) -> Option<PingResult> {
    let mut result = PingResult {
        host: host.to_string(),
        address: None,
        transmitted: 0,
        received: 0,
        loss_percent: 100.0,
        rtt_min_ms: None,
        rtt_avg_ms: None,
        rtt_max_ms: None,
        rtt_mdev_ms: None,
        replies_ms: Vec::new(),
        errors: Vec::new(),
    };
    let mut stats = false;
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("PING ") {
            // PING host (addr) 56(84) bytes of data.
            if let (Some(open), Some(close)) = (rest.find('('), rest.find(')')) {
                result.address = Some(rest[open + 1..close].to_string());
            }
        } else if line.contains("packets transmitted") {
            stats = true;
            for part in line.split(',') {
                let part = part.trim();
                let num = part.split_whitespace().next().unwrap_or("");
                if part.ends_with("packets transmitted") {
                    result.transmitted = num.parse().ok()?;
                } else if part.ends_with("received") {
                    result.received = num.parse().ok()?;
                } else if part.ends_with("packet loss") {
                    result.loss_percent = num.trim_end_matches('%').parse().ok()?;
                }
            }
        } else if let Some(rest) = line
            .strip_prefix("rtt min/avg/max/mdev = ")
            .or_else(|| line.strip_prefix("round-trip min/avg/max = "))
        {
            let nums: Vec<f64> = rest
                .trim_end_matches(" ms")
                .split('/')
                .filter_map(|v| v.trim().parse().ok())
                .collect();
            result.rtt_min_ms = nums.first().copied();
            result.rtt_avg_ms = nums.get(1).copied();
            result.rtt_max_ms = nums.get(2).copied();
            result.rtt_mdev_ms = nums.get(3).copied();
        } else if let Some(pos) = line.find("time=") {
            if line.contains("bytes from") {
                let v = line[pos + 5..].trim_end_matches(" ms").trim_end_matches("ms");
                if let Ok(ms) = v.trim().parse() {
                    result.replies_ms.push(ms);
                }
            }
        } else if line.starts_with("From ") && result.errors.len() < 5 {
            result.errors.push(cut(line, 200));
        }
    }
    stats.then_some(result)
}

// ---------------------------------------------------------------------------------------------
// Traceroute

/// One hop of a traceroute.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Hop {
    /// TTL of the probe (1 = first router).
    pub hop: u32,
    /// The address that answered; absent when no reply came (`*`).
    pub address: Option<String>,
    /// Round-trip time in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Annotations such as `!H` (host unreachable) or `reached`.
    pub note: Option<String>,
}

/// A traceroute's result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TraceResult {
    pub host: String,
    /// `traceroute` or `tracepath` (used when traceroute is not installed).
    pub program: String,
    pub max_hops: u32,
    /// Whether the last hop is the destination.
    pub reached: bool,
    pub hops: Vec<Hop>,
}

/// `traceroute -n -q 1 -w 1 -m MAX HOST`: one probe per hop, numeric, 1 s wait.
pub fn traceroute_command(host: &Host, max_hops: u32) -> CommandSpec {
    let mut args = vec!["-n".to_string()];
    if matches!(host, Host::Ip(IpAddr::V6(_))) {
        args.push("-6".to_string());
    }
    args.extend([
        "-q".to_string(),
        "1".to_string(),
        "-w".to_string(),
        "1".to_string(),
        "-m".to_string(),
        max_hops.to_string(),
        host.as_arg(),
    ]);
    CommandSpec::new("traceroute", args)
}

/// `tracepath -n -m MAX HOST` (iputils), the fallback.
pub fn tracepath_command(host: &Host, max_hops: u32) -> CommandSpec {
    CommandSpec::new(
        "tracepath",
        ["-n".to_string(), "-m".to_string(), max_hops.to_string(), host.as_arg()],
    )
}

/// Trace the route to `host` through `runner`: `traceroute`, or `tracepath` when it is missing.
pub async fn traceroute(runner: &dyn Runner, host: &Host, max_hops: u32) -> Result<TraceResult, ExecError> {
    let cmd = traceroute_command(host, max_hops);
    let (program, out) = match runner.run(&cmd).await {
        Ok(out) if !missing_program(&out) => ("traceroute", out),
        Ok(_) | Err(ExecError::Failed(_)) => {
            let fallback = tracepath_command(host, max_hops);
            let out = runner.run(&fallback).await.map_err(|e| match e {
                ExecError::Failed(m) if m.contains("not found") => ExecError::Failed(
                    "neither `traceroute` nor `tracepath` is installed on the target (Debian: apt install traceroute)"
                        .to_string(),
                ),
                other => other,
            })?;
            if missing_program(&out) {
                return Err(ExecError::Failed(
                    "neither `traceroute` nor `tracepath` is installed on the target (Debian: apt install traceroute)"
                        .to_string(),
                ));
            }
            ("tracepath", out)
        }
        Err(e) => return Err(e),
    };
    let hops = if program == "traceroute" {
        parse_traceroute(&out.stdout)
    } else {
        parse_tracepath(&out.stdout)
    };
    if hops.is_empty() {
        if out.timed_out {
            return Err(ExecError::Failed(format!("{program} timed out before the first hop")));
        }
        return Err(command_failed(program, &out));
    }
    let target_addr = first_paren(&out.stdout);
    let reached = hops.last().is_some_and(|h| {
        h.note.as_deref() == Some("reached")
            || (h.address.is_some() && (h.address == target_addr || h.address.as_deref() == Some(&host.as_arg())))
    });
    Ok(TraceResult {
        host: host.as_arg(),
        program: program.to_string(),
        max_hops,
        reached,
        hops,
    })
}

/// A program that is not installed: locally an `ExecError` (handled by the caller), over SSH
/// the shell's 127.
fn missing_program(out: &Output) -> bool {
    out.status == Some(127)
}

/// `traceroute to HOST (ADDR), ...` → ADDR.
fn first_paren(stdout: &str) -> Option<String> {
    let first = stdout.lines().next()?;
    let open = first.find('(')?;
    let close = first[open..].find(')')? + open;
    Some(first[open + 1..close].to_string())
}

/// Parse `traceroute -n -q 1` lines: ` 1  192.168.1.1  0.512 ms`, ` 2  *`, ` 3  10.0.0.1  1.2 ms !H`.
pub fn parse_traceroute(stdout: &str) -> Vec<Hop> {
    let mut hops = Vec::new();
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        let Some(hop) = words.next().and_then(|w| w.parse::<u32>().ok()) else {
            continue;
        };
        let rest: Vec<&str> = words.collect();
        let mut h = Hop {
            hop,
            address: None,
            rtt_ms: None,
            note: None,
        };
        let mut i = 0;
        while i < rest.len() {
            let w = rest[i];
            if w == "*" {
            } else if w.starts_with('!') {
                h.note = Some(w.to_string());
            } else if rest.get(i + 1) == Some(&"ms") {
                h.rtt_ms = h.rtt_ms.or(w.parse().ok());
                i += 1;
            } else if h.address.is_none() && w.parse::<IpAddr>().is_ok() {
                h.address = Some(w.to_string());
            }
            i += 1;
        }
        hops.push(h);
    }
    hops
}

/// Parse `tracepath -n` lines: ` 1:  192.168.1.1   0.512ms`, ` 2:  no reply`,
/// ` 3:  10.0.0.1   1.2ms reached`; `N?:` probe lines and the `Resume:` summary are skipped,
/// except ` N?: reply received 8)`: a UDP service on the destination answered the probe itself
/// (rather than an ICMP error coming back), so tracepath stops there and hop N reached it.
pub fn parse_tracepath(stdout: &str) -> Vec<Hop> {
    let mut hops: Vec<Hop> = Vec::new();
    for line in stdout.lines() {
        let trimmed = line.trim_start();
        let Some((num, rest)) = trimmed.split_once(':') else {
            continue;
        };
        let answered = num.ends_with('?') && rest.trim_start().starts_with("reply received");
        let Ok(hop) = num.strip_suffix('?').filter(|_| answered).unwrap_or(num).parse::<u32>() else {
            continue;
        };
        let rest: Vec<&str> = rest.split_whitespace().collect();
        let mut h = Hop {
            hop,
            address: None,
            rtt_ms: None,
            note: None,
        };
        if answered {
            h.note = Some("reached".to_string());
        } else if rest.first() == Some(&"no") {
            h.note = Some("no reply".to_string());
        } else {
            for w in &rest {
                if let Some(ms) = w.strip_suffix("ms").and_then(|v| v.parse().ok()) {
                    h.rtt_ms = Some(ms);
                } else if *w == "reached" {
                    h.note = Some("reached".to_string());
                } else if h.address.is_none() && w.parse::<IpAddr>().is_ok() {
                    h.address = Some(w.to_string());
                }
            }
        }
        // tracepath prints a hop again when the MTU changes: keep the first answer per hop.
        match hops.iter_mut().find(|x| x.hop == hop) {
            Some(existing) if existing.address.is_none() => *existing = h,
            Some(existing) => {
                if h.note.as_deref() == Some("reached") {
                    existing.note = h.note;
                }
            }
            None => hops.push(h),
        }
    }
    hops
}

// ---------------------------------------------------------------------------------------------
// TCP port check

/// One port's state.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PortState {
    pub port: u16,
    /// `open` (connected), `closed` (refused), `filtered` (no answer within the timeout) or
    /// `error` (another failure, in `error`).
    pub state: String,
    /// Time to connect or to be refused, in milliseconds.
    pub elapsed_ms: f64,
    pub error: Option<String>,
}

/// Connect to every port of `ip` at once, each attempt within `timeout`; the connection is
/// closed as soon as it opens (nothing is sent).
pub async fn port_check(ip: IpAddr, ports: &[u16], timeout: Duration) -> Vec<PortState> {
    let attempts = ports.iter().map(|&port| async move {
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, TcpStream::connect(SocketAddr::new(ip, port))).await;
        let elapsed_ms = ms(started.elapsed());
        let (state, error) = match result {
            Ok(Ok(_stream)) => ("open", None),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => ("closed", None),
            Ok(Err(e)) => ("error", Some(e.to_string())),
            Err(_) => ("filtered", None),
        };
        PortState {
            port,
            state: state.to_string(),
            elapsed_ms,
            error,
        }
    });
    futures::future::join_all(attempts).await
}

// ---------------------------------------------------------------------------------------------
// DNS lookup

/// The record types `dns_lookup` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum RecordType {
    A,
    AAAA,
    CNAME,
    MX,
    TXT,
    NS,
    SOA,
    PTR,
    SRV,
    CAA,
}

impl RecordType {
    pub const ALL: [RecordType; 10] = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::MX,
        RecordType::TXT,
        RecordType::NS,
        RecordType::SOA,
        RecordType::PTR,
        RecordType::SRV,
        RecordType::CAA,
    ];

    /// Case-insensitive; an unknown type is an error listing the supported ones.
    pub fn parse(s: &str) -> Result<RecordType, String> {
        RecordType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let all: Vec<&str> = RecordType::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown record type `{}` (supported: {})", cut(s, 20), all.join(", "))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
            RecordType::MX => "MX",
            RecordType::TXT => "TXT",
            RecordType::NS => "NS",
            RecordType::SOA => "SOA",
            RecordType::PTR => "PTR",
            RecordType::SRV => "SRV",
            RecordType::CAA => "CAA",
        }
    }

    fn hickory(self) -> hickory_resolver::proto::rr::RecordType {
        use hickory_resolver::proto::rr::RecordType as H;
        match self {
            RecordType::A => H::A,
            RecordType::AAAA => H::AAAA,
            RecordType::CNAME => H::CNAME,
            RecordType::MX => H::MX,
            RecordType::TXT => H::TXT,
            RecordType::NS => H::NS,
            RecordType::SOA => H::SOA,
            RecordType::PTR => H::PTR,
            RecordType::SRV => H::SRV,
            RecordType::CAA => H::CAA,
        }
    }
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DnsRecord {
    /// The owner name (fully qualified, trailing dot).
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub ttl: u32,
    /// The record data in presentation form (`10 mail.example.com.`, `"v=spf1 -all"`).
    pub value: String,
}

/// A lookup's result.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DnsResult {
    /// The name queried (for PTR of an IP address: its reverse name).
    pub query: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The servers asked, or `system` (`/etc/resolv.conf`).
    pub resolver: String,
    /// `NOERROR` or `NXDOMAIN` (the name does not exist).
    pub status: String,
    pub answers: Vec<DnsRecord>,
    pub elapsed_ms: f64,
}

/// The name a PTR query for `name` asks about: an IP address becomes its reverse name.
pub fn ptr_name(name: &str) -> Option<String> {
    match name.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]))
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for byte in v6.octets().iter().rev() {
                let _ = write!(s, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            s.push_str("ip6.arpa");
            Some(s)
        }
    }
}

/// Look up `name` (already validated with [`parse_dns_name`], or an IP for PTR) of type `rtype`
/// at `servers` (or the system's resolvers). At most `max_answers` records are returned; the
/// count of all is in the second value.
pub async fn dns_lookup(
    name: &str,
    rtype: RecordType,
    servers: &[SocketAddr],
    timeout: Duration,
    max_answers: usize,
) -> Result<(DnsResult, usize), ExecError> {
    use hickory_resolver::net::{DnsError, NetError};
    use hickory_resolver::proto::op::ResponseCode;

    let query = match rtype {
        RecordType::PTR => ptr_name(name).unwrap_or_else(|| name.to_string()),
        _ => name.to_string(),
    };
    let resolver = dns_resolver(servers, timeout)?;
    let resolver_label = if servers.is_empty() {
        "system".to_string()
    } else {
        servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
    };
    // Fully qualified: search domains apply only to the system resolver's short names.
    let asked = if servers.is_empty() && !query.contains('.') {
        query.clone()
    } else {
        format!("{query}.")
    };
    let started = Instant::now();
    let lookup = tokio::time::timeout(
        timeout + Duration::from_millis(200),
        resolver.lookup(asked.as_str(), rtype.hickory()),
    )
    .await;
    let elapsed_ms = ms(started.elapsed());
    let mut result = DnsResult {
        query: query.clone(),
        record_type: rtype,
        resolver: resolver_label.clone(),
        status: "NOERROR".to_string(),
        answers: Vec::new(),
        elapsed_ms,
    };
    let lookup = match lookup {
        Err(_) => return Err(ExecError::Timeout(timeout)),
        Ok(Ok(l)) => l,
        Ok(Err(NetError::Dns(DnsError::NoRecordsFound(no)))) => {
            if no.response_code == ResponseCode::NXDomain {
                result.status = "NXDOMAIN".to_string();
            }
            return Ok((result, 0));
        }
        Ok(Err(NetError::Timeout)) => return Err(ExecError::Timeout(timeout)),
        Ok(Err(NetError::Dns(DnsError::ResponseCode(code)))) => {
            return Err(ExecError::Failed(format!(
                "DNS server ({resolver_label}) answered {code} for {query} {}",
                rtype.as_str()
            )));
        }
        Ok(Err(e)) => {
            return Err(ExecError::Unreachable(format!(
                "DNS lookup of {query} {} at {resolver_label} failed: {e}",
                rtype.as_str()
            )));
        }
    };
    let wanted = rtype.hickory();
    let all: Vec<DnsRecord> = lookup
        .answers()
        .iter()
        .filter(|r| r.record_type() == wanted)
        .map(|r| DnsRecord {
            name: r.name.to_string(),
            record_type: r.record_type().to_string(),
            ttl: r.ttl,
            value: rdata_text(&r.data),
        })
        .collect();
    let total = all.len();
    result.answers = all.into_iter().take(max_answers).collect();
    Ok((result, total))
}

fn rdata_text(data: &hickory_resolver::proto::rr::RData) -> String {
    use hickory_resolver::proto::rr::RData;
    let text = match data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    cut(&text, 1024)
}

// ---------------------------------------------------------------------------------------------
// TLS

/// One certificate of a chain.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    pub not_after: String,
    /// Whole days until `not_after` (negative when expired).
    pub days_left: i64,
    pub is_ca: bool,
    /// DNS names and IP addresses from the subject alternative name extension.
    pub sans: Vec<String>,
}

/// What a TLS handshake showed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TlsReport {
    /// The address connected to.
    pub address: String,
    /// The name checked (and sent as SNI when it is a DNS name).
    pub server_name: String,
    /// e.g. `TLSv1_3`.
    pub protocol: Option<String>,
    pub cipher_suite: Option<String>,
    /// The certificates the server sent, leaf first.
    pub chain: Vec<CertInfo>,
    /// The leaf's `not_after` and days left (also in `chain[0]`).
    pub expires_at: Option<String>,
    pub days_left: Option<i64>,
    pub expired: bool,
    /// Whether `server_name` matches a SAN of the leaf (wildcards: one left-most label).
    pub name_matches: bool,
    /// Whether the chain verifies for `server_name` against `trust` now.
    pub verified: bool,
    /// Why verification failed.
    pub verify_error: Option<String>,
    /// `system` (the host's CA store) or `given CA` (the `ca_pem` argument).
    pub trust: String,
    pub elapsed_ms: f64,
}

/// Certificates from PEM text (at least one).
pub fn parse_pem_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_pem: {e}"))?;
    if certs.is_empty() {
        return Err("ca_pem holds no PEM certificate".to_string());
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn root_store(ca: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> Result<rustls::RootCertStore, ExecError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(certs) => {
            for c in certs {
                roots
                    .add(c.clone())
                    .map_err(|e| ExecError::Config(format!("ca_pem: {e}")))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    Ok(roots)
}

fn server_name(name: &str) -> Result<rustls::pki_types::ServerName<'static>, ExecError> {
    rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|_| ExecError::Config(format!("`{}` is not a valid TLS server name", cut(name, 80))))
}

/// Connect to `addr`, complete a TLS handshake naming `name`, and report the chain and whether
/// it verifies against `ca` (or the system store). The handshake itself accepts any chain (its
/// signatures are still checked) so that a bad certificate can be described, not just refused.
pub async fn tls_check(
    addr: SocketAddr,
    name: &str,
    ca: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    timeout: Duration,
) -> Result<TlsReport, ExecError> {
    let started = Instant::now();
    let sni = server_name(name)?;
    let roots = Arc::new(root_store(ca)?);
    let provider = provider();
    let capture = Arc::new(Capture {
        provider: provider.clone(),
        chain: std::sync::Mutex::new(Vec::new()),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ExecError::Config(format!("tls: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ExecError::Unreachable(format!("cannot connect to {addr}: {e}")))?;
        connector
            .connect(sni.clone(), tcp)
            .await
            .map_err(|e| ExecError::Failed(format!("TLS handshake with {addr} failed: {e}")))
    };
    let stream = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ExecError::Timeout(timeout))??;
    let (_, conn) = stream.get_ref();
    let protocol = conn.protocol_version().map(|v| format!("{v:?}"));
    let cipher_suite = conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite()));
    let chain_der: Vec<rustls::pki_types::CertificateDer<'static>> =
        capture.chain.lock().map(|c| c.clone()).unwrap_or_default();
    drop(stream);

    let now = chrono::Utc::now().timestamp();
    let chain: Vec<CertInfo> = chain_der.iter().filter_map(|c| cert_info(c, now)).collect();
    let leaf = chain.first();
    let verify_error = match chain_der.split_first() {
        None => Some("the server sent no certificate".to_string()),
        Some((end, rest)) => {
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| ExecError::Config(format!("no trust anchors: {e}")))?;
            use rustls::client::danger::ServerCertVerifier;
            verifier
                .verify_server_cert(end, rest, &sni, &[], rustls::pki_types::UnixTime::now())
                .err()
                .map(|e| e.to_string())
        }
    };
    Ok(TlsReport {
        address: addr.to_string(),
        server_name: name.to_string(),
        protocol,
        cipher_suite,
        expires_at: leaf.map(|l| l.not_after.clone()),
        days_left: leaf.map(|l| l.days_left),
        expired: chain_der
            .first()
            .and_then(|c| cert_times(c))
            .is_some_and(|(_, na)| na < now),
        name_matches: leaf.is_some_and(|l| name_matches(name, &l.sans)),
        verified: verify_error.is_none(),
        verify_error,
        trust: if ca.is_some() { "given CA" } else { "system" }.to_string(),
        chain,
        elapsed_ms: ms(started.elapsed()),
    })
}

/// Whether `name` (a DNS name or an IP address) matches one of `sans`. A wildcard SAN
/// (`*.example.com`) matches exactly one left-most label; IP addresses match exactly.
pub fn name_matches(name: &str, sans: &[String]) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = name.parse::<IpAddr>() {
        return sans.iter().any(|s| s.parse::<IpAddr>().ok() == Some(ip));
    }
    sans.iter().any(|san| {
        let san = san.trim_end_matches('.').to_ascii_lowercase();
        match san.strip_prefix("*.") {
            Some(suffix) => name
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => san == name,
        }
    })
}

fn cert_times(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

fn cert_info(der: &[u8], now: i64) -> Option<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => sans.push(Ipv4Addr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                    16 => sans.push(Ipv6Addr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    sans.truncate(100);
    Some(CertInfo {
        subject: cut(&cert.subject().to_string(), 512),
        issuer: cut(&cert.issuer().to_string(), 512),
        serial: cert.raw_serial_as_string(),
        not_before: rfc3339(not_before),
        not_after: rfc3339(not_after),
        days_left: (not_after - now).div_euclid(86_400),
        is_ca: cert.is_ca(),
        sans,
    })
}

/// [`crate::when::rfc3339`], or the number itself when it is out of range (a certificate may
/// say anything).
fn rfc3339(ts: i64) -> String {
    crate::when::rfc3339(ts).unwrap_or_else(|| ts.to_string())
}

/// A verifier that records the chain and accepts it; handshake signatures are still verified
/// with the provider's algorithms. Used only by [`tls_check`], which verifies the chain itself
/// afterwards and reports the outcome.
#[derive(Debug)]
struct Capture {
    provider: Arc<rustls::crypto::CryptoProvider>,
    chain: std::sync::Mutex<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            chain.clear();
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().take(9).map(|c| c.clone().into_owned()));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP probe

/// One entry of `[network] http_allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// Exactly this host name.
    Name(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself).
    Suffix(String),
    /// An address or a network (`192.168.1.10`, `192.168.1.0/24`, `100.64.0.0/10`).
    Net(ipnet::IpNet),
}

impl AllowRule {
    pub fn parse(s: &str) -> Result<AllowRule, String> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(AllowRule::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowRule::Net(ipnet::IpNet::from(ip)));
        }
        if let Some(suffix) = s.strip_prefix("*.") {
            return check_name(suffix, false).map(AllowRule::Suffix);
        }
        check_name(s, false)
            .map(AllowRule::Name)
            .map_err(|_| format!("`{}` is not a host name, `*.domain`, IP address or CIDR", cut(s, 80)))
    }

    fn matches_name(&self, name: &str) -> bool {
        match self {
            AllowRule::Name(n) => n == name,
            AllowRule::Suffix(s) => {
                name.len() > s.len() + 1
                    && name.ends_with(s.as_str())
                    && name.as_bytes()[name.len() - s.len() - 1] == b'.'
            }
            AllowRule::Net(_) => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        matches!(self, AllowRule::Net(net) if net.contains(&ip))
    }
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowRule::Name(n) => f.write_str(n),
            AllowRule::Suffix(s) => write!(f, "*.{s}"),
            AllowRule::Net(n) => write!(f, "{n}"),
        }
    }
}

/// Where the HTTP probe may go (`[network]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Empty = the probe is off.
    pub allow: Vec<AllowRule>,
    /// Permit link-local destinations (169.254.0.0/16, fe80::/10); metadata addresses stay refused.
    pub allow_link_local: bool,
}

/// Why an address may never be probed, whatever the allow-list says; `None` when it may.
pub fn forbidden(ip: IpAddr, allow_link_local: bool) -> Option<String> {
    let ip = crate::tailnet::unmap(ip);
    // NAT64 (64:ff9b::/96) carries an IPv4 address: judge that one.
    if let IpAddr::V6(v6) = ip {
        let s = v6.segments();
        if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
            let o = v6.octets();
            let v4 = IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            return forbidden(v4, allow_link_local).map(|why| format!("{why} (through NAT64 {ip})"));
        }
    }
    if METADATA_ADDRESSES.contains(&ip) {
        return Some(format!("{ip} is a cloud metadata address"));
    }
    if ip.is_unspecified() {
        return Some(format!("{ip} is the unspecified address"));
    }
    if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Some(format!("{ip} is a multicast or broadcast address"));
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if link_local && !allow_link_local {
        return Some(format!(
            "{ip} is a link-local address (169.254.0.0/16, fe80::/10; set [network] allow_link_local = true to permit)"
        ));
    }
    None
}

/// Why `ip` is not a public address, when it is not (`None`: a public address that is not this
/// node's). `own` holds this node's addresses (tailnet and interfaces). A name rule of the HTTP
/// probe admits only addresses for which this is `None`; the rest need an address rule.
pub fn not_public(ip: IpAddr, own: &[IpAddr]) -> Option<String> {
    let ip = crate::tailnet::unmap(ip);
    let special = match ip {
        IpAddr::V4(v4) => special_v4(v4).map(str::to_string),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address: judge that one.
            match s {
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
                    special_v4(embedded(hi, lo)).map(|why| format!("{why} through NAT64"))
                }
                [0x2002, hi, lo, ..] => special_v4(embedded(hi, lo)).map(|why| format!("{why} through 6to4")),
                _ => special_v6(v6).map(str::to_string),
            }
        }
    };
    // The kind of address says more than "own" (127.0.0.1 is both); a public address of this
    // node's interfaces is named as such.
    special.or_else(|| {
        own.iter()
            .any(|o| crate::tailnet::unmap(*o) == ip)
            .then(|| "this node's own address".to_string())
    })
}

/// The special-purpose IPv4 ranges (IANA registry; the ones not globally reachable), named.
fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    Some(match v4.octets() {
        [0, ..] => "an address of \"this network\" (0.0.0.0/8)",
        [10, ..] => "a private address (10.0.0.0/8)",
        [100, b, ..] if b & 0xc0 == 64 => "a tailnet / shared CGNAT address (100.64.0.0/10)",
        [127, ..] => "a loopback address (127.0.0.0/8)",
        [169, 254, ..] => "a link-local address (169.254.0.0/16)",
        [172, b, ..] if b & 0xf0 == 16 => "a private address (172.16.0.0/12)",
        [192, 0, 0, _] => "an IETF protocol address (192.0.0.0/24)",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "a documentation address",
        [192, 168, ..] => "a private address (192.168.0.0/16)",
        [198, b, ..] if b & 0xfe == 18 => "a benchmarking address (198.18.0.0/15)",
        [a, ..] if a >= 224 => "a multicast, reserved or broadcast address (224.0.0.0/3)",
        _ => return None,
    })
}

/// The special-purpose IPv6 ranges (IANA registry; the ones not globally reachable), named.
/// IPv4-mapped, NAT64 and 6to4 addresses are judged by their IPv4 address before this.
fn special_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let s = v6.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "the unspecified address",
        [0, 0, 0, 0, 0, 0, 0, 1] => "the loopback address (::1)",
        [0, 0, 0, 0, 0, 0, _, _] => "an IPv4-compatible address (::/96, deprecated)",
        [0x64, 0xff9b, 1, ..] => "a local-use NAT64 address (64:ff9b:1::/48)",
        [0x100, 0, 0, 0, ..] => "a discard-only address (100::/64)",
        [0x2001, 0xdb8, ..] => "a documentation address (2001:db8::/32)",
        [0x2001, b, ..] if b < 0x200 => "an IETF protocol address (2001::/23)",
        [a, ..] if a & 0xfff0 == 0x3ff0 => "a documentation address (3fff::/20)",
        [0xfd7a, 0x115c, 0xa1e0, ..] => "a tailnet address (fd7a:115c:a1e0::/48)",
        [a, ..] if a & 0xfe00 == 0xfc00 => "a unique local address (fc00::/7)",
        [a, ..] if a & 0xffc0 == 0xfe80 => "a link-local address (fe80::/10)",
        [a, ..] if a & 0xffc0 == 0xfec0 => "a site-local address (fec0::/10, deprecated)",
        [a, ..] if a & 0xff00 == 0xff00 => "a multicast address (ff00::/8)",
        _ => return None,
    })
}

/// This node's own addresses: its tailnet addresses (`tailnet`, from LocalAPI status) and every
/// address on its network interfaces. Blocking (reads the interface list).
pub fn own_addresses(tailnet: &[IpAddr]) -> Vec<IpAddr> {
    let mut own: Vec<IpAddr> = tailnet.to_vec();
    for interface in super::local::network_interfaces() {
        own.extend(interface.addresses.iter().map(|a| a.address));
    }
    own.sort();
    own.dedup();
    own
}

/// Decide where a probe of `host` may connect, given the addresses it resolved to: one checked
/// address, or the reason it is refused. Every resolved address must pass [`forbidden`]; then
/// each must lie in an address rule, or — when the name matches a name rule — be public and not
/// one of this node's (`own`; see [`not_public`]).
pub fn choose_destination(
    host: &Host,
    resolved: &[IpAddr],
    policy: &HttpPolicy,
    own: &[IpAddr],
) -> Result<IpAddr, String> {
    if policy.allow.is_empty() {
        return Err(
            "the HTTP probe is off: no destination is allowed; list hosts, `*.domain`s, IPs or CIDRs in [network] http_allow"
                .to_string(),
        );
    }
    if let Host::Name(n) = host
        && METADATA_NAMES.contains(&n.as_str())
    {
        return Err(format!("`{n}` is a cloud metadata service"));
    }
    if resolved.is_empty() {
        return Err(format!("`{host}` has no addresses"));
    }
    for ip in resolved {
        if let Some(why) = forbidden(*ip, policy.allow_link_local) {
            return Err(match host {
                Host::Name(n) => format!("`{n}` resolves to {why}"),
                Host::Ip(_) => why,
            });
        }
    }
    let name_rule = match host {
        Host::Name(n) => policy.allow.iter().find(|r| r.matches_name(n)),
        Host::Ip(_) => None,
    };
    for ip in resolved {
        let ip = crate::tailnet::unmap(*ip);
        if policy.allow.iter().any(|r| r.matches_ip(ip)) {
            continue;
        }
        let (Some(rule), Host::Name(n)) = (name_rule, host) else {
            let rules: Vec<String> = policy.allow.iter().map(|r| r.to_string()).collect();
            return Err(match host {
                Host::Name(n) => format!("`{n}` ({ip}) is not in [network] http_allow ({})", rules.join(", ")),
                Host::Ip(_) => format!("{ip} is not in [network] http_allow ({})", rules.join(", ")),
            });
        };
        if let Some(why) = not_public(ip, own) {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Err(format!(
                "`{n}` resolves to {ip}, {why}; the name rule `{rule}` admits public addresses only. To probe \
                 it, add `{ip}/{bits}` (or a network containing it) to [network] http_allow"
            ));
        }
    }
    Ok(crate::tailnet::unmap(resolved[0]))
}

/// A probe request, validated.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub url: http::Uri,
    pub https: bool,
    pub host: Host,
    pub port: u16,
    pub method: http::Method,
    pub max_body: usize,
    pub timeout: Duration,
    /// Extra trust anchors for https (otherwise the system store).
    pub ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

/// Parse and validate a probe URL: `http://` or `https://`, a host, no user info.
pub fn parse_url(url: &str) -> Result<(http::Uri, bool, Host, u16), String> {
    let shown = cut(url, 120);
    let uri: http::Uri = url.parse().map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => return Err(format!("scheme `{other}` is not allowed (http or https)")),
        None => return Err(format!("`{shown}` is not an absolute http(s) URL")),
    };
    let authority = uri.authority().ok_or_else(|| format!("`{shown}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err("URLs with user info (`user@host`) are not allowed".to_string());
    }
    let host = parse_host(authority.host())?;
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    if port == 0 {
        return Err("port 0 is not allowed".to_string());
    }
    Ok((uri, https, host, port))
}

/// Timings of a probe, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProbeTiming {
    pub dns_ms: f64,
    pub connect_ms: f64,
    /// Absent for plain http.
    pub tls_ms: Option<f64>,
    /// From sending the request to the response headers.
    pub first_byte_ms: f64,
    pub total_ms: f64,
}

/// One response header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct HeaderField {
    /// Lower case.
    pub name: String,
    /// At most 256 characters (longer values end with `…`).
    pub value: String,
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProbeResult {
    pub url: String,
    pub method: String,
    /// The checked address the connection went to.
    pub address: String,
    pub status: u16,
    pub reason: Option<String>,
    pub http_version: String,
    /// The reported subset of response headers ([`REPORTED_HEADERS`]), in the order received.
    pub headers: Vec<HeaderField>,
    /// How many response headers there were in all.
    pub header_count: usize,
    /// Body bytes read (at most `max_body_bytes`).
    pub body_bytes: u64,
    /// Whether the body went on past `max_body_bytes` (the rest was not read).
    pub body_truncated: bool,
    /// The first bytes of the body as text (lossy UTF-8), at most 512 bytes.
    pub body_preview: String,
    pub timing: ProbeTiming,
}

/// Probe `req.url` under `policy`, resolving through `dns` (empty = system resolver); `own` is
/// this node's addresses ([`own_addresses`]), which a name rule never admits. The connection
/// goes to the checked address; the `Host` header and TLS name stay the URL's.
pub async fn http_probe(
    req: &ProbeRequest,
    policy: &HttpPolicy,
    dns: &[SocketAddr],
    own: &[IpAddr],
) -> Result<ProbeResult, ExecError> {
    let started = Instant::now();
    if policy.allow.is_empty() {
        return Err(ExecError::Refused(
            choose_destination(&req.host, &[], policy, own).unwrap_err(),
        ));
    }
    if let Host::Name(n) = &req.host
        && METADATA_NAMES.contains(&n.as_str())
    {
        return Err(ExecError::Refused(format!("`{n}` is a cloud metadata service")));
    }
    let resolved = resolve(&req.host, dns, req.timeout).await?;
    let dns_ms = ms(started.elapsed());
    let ip = choose_destination(&req.host, &resolved, policy, own).map_err(ExecError::Refused)?;
    let addr = SocketAddr::new(ip, req.port);

    let remaining = |t: Duration| req.timeout.checked_sub(started.elapsed()).unwrap_or(t);
    let connect_started = Instant::now();
    let tcp = tokio::time::timeout(remaining(Duration::ZERO), TcpStream::connect(addr))
        .await
        .map_err(|_| ExecError::Timeout(req.timeout))?
        .map_err(|e| ExecError::Unreachable(format!("cannot connect to {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let connect_ms = ms(connect_started.elapsed());

    let host_header = match (req.url.port_u16(), &req.host) {
        (Some(p), Host::Ip(IpAddr::V6(v6))) => format!("[{v6}]:{p}"),
        (Some(p), h) => format!("{h}:{p}"),
        (None, Host::Ip(IpAddr::V6(v6))) => format!("[{v6}]"),
        (None, h) => h.to_string(),
    };
    let path = req.url.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let request = http::Request::builder()
        .method(req.method.clone())
        .uri(path)
        .header(http::header::HOST, host_header)
        .header(
            http::header::USER_AGENT,
            concat!("tailopsmcp/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::ACCEPT, "*/*")
        .header(http::header::CONNECTION, "close")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ExecError::Failed(format!("cannot build the request: {e}")))?;

    let exchange = async {
        let (tls_ms, response) = if req.https {
            let tls_started = Instant::now();
            let roots = root_store(req.ca.as_deref())?;
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ExecError::Config(format!("tls: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tls = connector
                .connect(server_name(&req.host.as_arg())?, tcp)
                .await
                .map_err(|e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::InvalidCertificate(why)) => ExecError::HostVerification(format!(
                        "the certificate of {} does not verify: {why:?} (network_tls_check shows the chain)",
                        req.host
                    )),
                    _ => ExecError::Failed(format!("TLS handshake with {addr} failed: {e}")),
                })?;
            let tls_ms = ms(tls_started.elapsed());
            (Some(tls_ms), send(TokioIo::new(tls), request).await?)
        } else {
            (None, send(TokioIo::new(tcp), request).await?)
        };
        Ok::<_, ExecError>((tls_ms, response))
    };
    let (tls_ms, (first_byte_ms, response)) = tokio::time::timeout(remaining(Duration::ZERO), exchange)
        .await
        .map_err(|_| ExecError::Timeout(req.timeout))??;

    let (parts, mut body) = response.into_parts();
    let mut kept: Vec<u8> = Vec::new();
    let mut body_bytes = 0u64;
    let mut body_truncated = false;
    let read_body = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ExecError::Failed(format!("reading the response body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                let room = req.max_body.saturating_sub(body_bytes as usize);
                if data.len() > room {
                    body_truncated = true;
                }
                let take = room.min(data.len());
                body_bytes += take as u64;
                if kept.len() < BODY_PREVIEW_BYTES {
                    let n = (BODY_PREVIEW_BYTES - kept.len()).min(take);
                    kept.extend_from_slice(&data[..n]);
                }
                if body_truncated {
                    break;
                }
            }
        }
        Ok::<_, ExecError>(())
    };
    match tokio::time::timeout(remaining(Duration::ZERO), read_body).await {
        Ok(r) => r?,
        Err(_) => body_truncated = true,
    }
    let headers: Vec<HeaderField> = parts
        .headers
        .iter()
        .filter(|(name, _)| REPORTED_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| HeaderField {
            name: name.as_str().to_string(),
            value: cut(&String::from_utf8_lossy(value.as_bytes()), HEADER_VALUE_MAX),
        })
        .collect();
    Ok(ProbeResult {
        url: req.url.to_string(),
        method: req.method.to_string(),
        address: addr.to_string(),
        status: parts.status.as_u16(),
        reason: parts.status.canonical_reason().map(str::to_string),
        http_version: format!("{:?}", parts.version),
        header_count: parts.headers.len(),
        headers,
        body_bytes,
        body_truncated,
        body_preview: String::from_utf8_lossy(&kept).into_owned(),
        timing: ProbeTiming {
            dns_ms,
            connect_ms,
            tls_ms,
            first_byte_ms,
            total_ms: ms(started.elapsed()),
        },
    })
}

/// One HTTP/1.1 exchange over `io`; returns the time to the response headers and the response.
async fn send<I>(
    io: I,
    request: http::Request<http_body_util::Empty<Bytes>>,
) -> Result<(f64, http::Response<hyper::body::Incoming>), ExecError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ExecError::Failed(format!("HTTP handshake failed: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let sent = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ExecError::Failed(format!("HTTP request failed: {e}")))?;
    Ok((ms(sent.elapsed()), response))
}

// ---------------------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn command_failed(program: &str, out: &Output) -> ExecError {
    let stderr = out.stderr.trim();
    let detail = if stderr.is_empty() { out.stdout.trim() } else { stderr };
    ExecError::Failed(format!(
        "`{program}` failed (exit {}): {}",
        out.status.map(|s| s.to_string()).unwrap_or_else(|| "signal".into()),
        cut(detail, 300)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Host {
        parse_host(s).unwrap()
    }

    #[test]
    fn hosts_are_validated() {
        for (input, ok) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("[fe80::1]", true),
            ("nas", true),
            ("nas.tail1234.ts.net", true),
            ("NAS.Example.COM.", true),
            ("-oProxyCommand=x", false),
            ("a;rm -rf /", false),
            ("$(id)", false),
            ("a b", false),
            ("", false),
            ("a..b", false),
            ("-a.example.com", false),
            ("a-.example.com", false),
            ("_srv.example.com", false),
            ("x\ny", false),
        ] {
            assert_eq!(parse_host(input).is_ok(), ok, "{input:?}");
        }
        assert_eq!(host("NAS.Example.COM."), Host::Name("nas.example.com".into()));
        assert_eq!(host("::ffff:10.0.0.1"), Host::Ip("10.0.0.1".parse().unwrap()));
        assert!(parse_host(&"a".repeat(64)).is_err());
        assert!(parse_host(&format!("{}.com", "a.".repeat(130))).is_err());
        assert!(parse_dns_name("_http._tcp.example.com").is_ok());
        assert!(parse_dns_name("-x").is_err());
    }

    #[test]
    fn ping_output_is_parsed() {
        let ok = "PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.\n\
            64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.030 ms\n\
            64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.051 ms\n\
            \n--- 127.0.0.1 ping statistics ---\n\
            2 packets transmitted, 2 received, 0% packet loss, time 1001ms\n\
            rtt min/avg/max/mdev = 0.030/0.040/0.051/0.010 ms\n";
        let r = parse_ping("127.0.0.1", ok).unwrap();
        assert_eq!((r.transmitted, r.received, r.loss_percent), (2, 2, 0.0));
        assert_eq!(r.replies_ms, vec![0.030, 0.051]);
        assert_eq!(
            (r.rtt_min_ms, r.rtt_avg_ms, r.rtt_max_ms, r.rtt_mdev_ms),
            (Some(0.030), Some(0.040), Some(0.051), Some(0.010))
        );
        assert_eq!(r.address.as_deref(), Some("127.0.0.1"));

        let lost = "PING 10.9.9.9 (10.9.9.9) 56(84) bytes of data.\n\
            From 10.0.0.1 icmp_seq=1 Destination Host Unreachable\n\
            \n--- 10.9.9.9 ping statistics ---\n\
            3 packets transmitted, 0 received, +1 errors, 100% packet loss, time 2030ms\n";
        let r = parse_ping("10.9.9.9", lost).unwrap();
        assert_eq!((r.transmitted, r.received, r.loss_percent), (3, 0, 100.0));
        assert_eq!(r.rtt_avg_ms, None);
        assert_eq!(r.errors, vec!["From 10.0.0.1 icmp_seq=1 Destination Host Unreachable"]);
        assert!(parse_ping("x", "").is_none());
    }

    #[test]
    fn ping_command_is_an_argument_vector() {
        let cmd = ping_command(&host("nas.lan"), 3, 5);
        assert_eq!(cmd.program, "ping");
        assert_eq!(
            cmd.args,
            ["-n", "-c", "3", "-i", "0.2", "-W", "5", "-w", "5", "nas.lan"]
        );
        assert_eq!(
            traceroute_command(&host("::1"), 5).args,
            ["-n", "-6", "-q", "1", "-w", "1", "-m", "5", "::1"]
        );
        assert_eq!(
            tracepath_command(&host("10.0.0.1"), 9).args,
            ["-n", "-m", "9", "10.0.0.1"]
        );
    }

    #[test]
    fn traceroute_output_is_parsed() {
        let out = "traceroute to 10.0.0.9 (10.0.0.9), 5 hops max, 60 byte packets\n \
            1  192.168.1.1  0.512 ms\n \
            2  *\n \
            3  10.0.0.9  1.250 ms !H\n";
        let hops = parse_traceroute(out);
        assert_eq!(hops.len(), 3);
        assert_eq!(hops[0].address.as_deref(), Some("192.168.1.1"));
        assert_eq!(hops[0].rtt_ms, Some(0.512));
        assert_eq!((hops[1].hop, hops[1].address.as_ref(), hops[1].rtt_ms), (2, None, None));
        assert_eq!(hops[2].note.as_deref(), Some("!H"));
        assert_eq!(first_paren(out).as_deref(), Some("10.0.0.9"));

        let tp = " 1?: [LOCALHOST]                      pmtu 65535\n \
            1:  192.168.1.1                                           0.043ms \n \
            1:  192.168.1.1                                           0.040ms pmtu 1500\n \
            2:  no reply\n \
            3:  10.0.0.9                                              0.043ms reached\n     \
            Resume: pmtu 65535 hops 3 back 3 \n";
        let hops = parse_tracepath(tp);
        assert_eq!(hops.len(), 3, "{hops:?}");
        assert_eq!(hops[0].address.as_deref(), Some("192.168.1.1"));
        assert_eq!(hops[1].note.as_deref(), Some("no reply"));
        assert_eq!(hops[2].note.as_deref(), Some("reached"));
        assert_eq!(hops[2].rtt_ms, Some(0.043));

        // A UDP service on the destination answered the probe on hop 2: tracepath stops there.
        let answered = " 1?: [LOCALHOST]                      pmtu 65535\n \
            1:  192.168.1.1                                           0.043ms \n \
            2?: reply received 8)\n     \
            Resume: pmtu 65535 \n";
        let hops = parse_tracepath(answered);
        assert_eq!(hops.len(), 2, "{hops:?}");
        assert_eq!(
            (hops[1].hop, hops[1].address.as_ref(), hops[1].note.as_deref()),
            (2, None, Some("reached"))
        );
    }

    #[test]
    fn record_types() {
        assert_eq!(RecordType::parse("aaaa").unwrap(), RecordType::AAAA);
        assert_eq!(RecordType::parse("CAA").unwrap(), RecordType::CAA);
        let e = RecordType::parse("AXFR").unwrap_err();
        assert!(
            e.contains("unknown record type `AXFR`") && e.contains("A, AAAA, CNAME"),
            "{e}"
        );
        assert_eq!(ptr_name("192.0.2.5").as_deref(), Some("5.2.0.192.in-addr.arpa"));
        assert_eq!(
            ptr_name("2001:db8::1").as_deref(),
            Some("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")
        );
        assert_eq!(ptr_name("example.com"), None);
    }

    #[test]
    fn names_match_sans() {
        let sans = vec![
            "example.com".to_string(),
            "*.lan.example.com".to_string(),
            "10.0.0.1".to_string(),
        ];
        for (name, ok) in [
            ("example.com", true),
            ("EXAMPLE.com.", true),
            ("nas.lan.example.com", true),
            ("lan.example.com", false),
            ("a.b.lan.example.com", false),
            ("www.example.com", false),
            ("10.0.0.1", true),
            ("10.0.0.2", false),
        ] {
            assert_eq!(name_matches(name, &sans), ok, "{name}");
        }
    }

    fn policy(rules: &[&str], link_local: bool) -> HttpPolicy {
        HttpPolicy {
            allow: rules.iter().map(|r| AllowRule::parse(r).unwrap()).collect(),
            allow_link_local: link_local,
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn allow_rules_parse() {
        assert_eq!(AllowRule::parse("nas.lan").unwrap(), AllowRule::Name("nas.lan".into()));
        assert_eq!(
            AllowRule::parse("*.ts.net").unwrap(),
            AllowRule::Suffix("ts.net".into())
        );
        assert_eq!(AllowRule::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(AllowRule::parse("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert!(AllowRule::parse("http://x").is_err());
        assert!(AllowRule::parse("*.").is_err());
        assert!(AllowRule::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn destinations_are_checked() {
        let p = policy(&["nas.lan", "*.ts.net", "192.168.1.0/24", "127.0.0.1"], false);
        let ok = |h: &str, r: &[&str]| choose_destination(&host(h), &ips(r), &p, &[]);
        assert_eq!(
            ok("nas.lan", &["93.184.215.14"]).unwrap(),
            "93.184.215.14".parse::<IpAddr>().unwrap()
        );
        assert!(ok("web.tail1.ts.net", &["2606:4700::1111"]).is_ok());
        assert!(
            ok("ts.net", &["100.64.1.2"])
                .unwrap_err()
                .contains("not in [network] http_allow")
        );
        assert!(ok("evilts.net", &["100.64.1.2"]).is_err());
        assert!(ok("192.168.1.7", &["192.168.1.7"]).is_ok());
        assert!(
            ok("printer.lan", &["192.168.1.9"]).is_ok(),
            "every address inside a CIDR"
        );
        assert!(
            ok("printer.lan", &["192.168.1.9", "10.0.0.1"]).is_err(),
            "one address outside"
        );
        assert!(
            ok("10.0.0.1", &["10.0.0.1"])
                .unwrap_err()
                .contains("10.0.0.1 is not in")
        );
        // Refused even when the name is allowed.
        let e = ok("nas.lan", &["169.254.169.254"]).unwrap_err();
        assert!(
            e.contains("`nas.lan` resolves to 169.254.169.254 is a cloud metadata address"),
            "{e}"
        );
        assert!(
            ok("nas.lan", &["10.0.0.1", "169.254.3.4"])
                .unwrap_err()
                .contains("link-local")
        );
        assert!(ok("nas.lan", &["fe80::1"]).unwrap_err().contains("link-local"));
        assert!(ok("nas.lan", &["fd00:ec2::254"]).unwrap_err().contains("metadata"));
        assert!(
            ok("nas.lan", &["::ffff:169.254.169.254"])
                .unwrap_err()
                .contains("metadata")
        );
        assert!(ok("nas.lan", &["64:ff9b::a9fe:a9fe"]).unwrap_err().contains("NAT64"));
        assert!(ok("nas.lan", &["0.0.0.0"]).unwrap_err().contains("unspecified"));
        assert!(ok("nas.lan", &["224.0.0.1"]).unwrap_err().contains("multicast"));
        assert!(
            ok("metadata.google.internal", &["10.0.0.1"])
                .unwrap_err()
                .contains("metadata service")
        );

        let ll = policy(&["169.254.0.0/16", "fe80::/10"], true);
        assert!(choose_destination(&host("169.254.3.4"), &ips(&["169.254.3.4"]), &ll, &[]).is_ok());
        assert!(choose_destination(&host("169.254.169.254"), &ips(&["169.254.169.254"]), &ll, &[]).is_err());

        let off = HttpPolicy::default();
        assert!(
            choose_destination(&host("nas.lan"), &ips(&["10.0.0.1"]), &off, &[])
                .unwrap_err()
                .contains("http_allow")
        );
    }

    #[test]
    fn a_name_rule_admits_public_addresses_only() {
        let p = policy(&["nas.lan", "*.ts.net", "192.168.1.0/24", "127.0.0.1"], false);
        let own = ips(&["100.100.1.1", "203.0.114.9", "2001:4860::9"]);
        let check = |h: &str, r: &[&str]| choose_destination(&host(h), &ips(r), &p, &own);
        // Public and not this node's: admitted by the name rule.
        assert!(check("nas.lan", &["93.184.215.14", "2606:4700::1111"]).is_ok());
        // Anything else needs an address rule; the error names the address, why, and what to add.
        assert_eq!(
            check("nas.lan", &["10.9.9.9"]).unwrap_err(),
            "`nas.lan` resolves to 10.9.9.9, a private address (10.0.0.0/8); the name rule `nas.lan` admits \
             public addresses only. To probe it, add `10.9.9.9/32` (or a network containing it) to [network] http_allow"
        );
        for (name, addrs, why) in [
            (
                "web.tail1.ts.net",
                &["100.64.1.2"][..],
                "a tailnet / shared CGNAT address (100.64.0.0/10)",
            ),
            ("nas.lan", &["127.0.0.2"][..], "a loopback address"),
            (
                "nas.lan",
                &["93.184.215.14", "172.20.0.1"][..],
                "172.20.0.1, a private address (172.16.0.0/12)",
            ),
            ("nas.lan", &["192.168.2.1"][..], "a private address (192.168.0.0/16)"),
            ("nas.lan", &["::1"][..], "the loopback address"),
            ("nas.lan", &["fd7a:115c:a1e0::5"][..], "a tailnet address"),
            ("nas.lan", &["fd00::5"][..], "a unique local address"),
            ("nas.lan", &["::ffff:10.0.0.1"][..], "10.0.0.1, a private address"),
            (
                "nas.lan",
                &["64:ff9b::a00:1"][..],
                "a private address (10.0.0.0/8) through NAT64",
            ),
            (
                "nas.lan",
                &["2002:7f00:1::1"][..],
                "a loopback address (127.0.0.0/8) through 6to4",
            ),
            ("nas.lan", &["100.100.1.1"][..], "a tailnet / shared CGNAT address"),
            ("nas.lan", &["203.0.114.9"][..], "this node's own address"),
            ("nas.lan", &["2001:4860::9"][..], "this node's own address"),
            ("nas.lan", &["198.51.100.7"][..], "a documentation address"),
            ("nas.lan", &["240.1.2.3"][..], "reserved"),
        ] {
            let e = check(name, addrs).unwrap_err();
            assert!(e.contains(why), "{name} {addrs:?}: {e}");
            assert!(e.contains("admits public addresses only"), "{e}");
        }
        assert!(
            check("nas.lan", &["fd00::5"])
                .unwrap_err()
                .contains("add `fd00::5/128`"),
            "an IPv6 address gets a /128"
        );
        // An address rule that contains the address admits it, whatever the name rule says.
        assert!(check("nas.lan", &["127.0.0.1"]).is_ok());
        assert!(check("printer.lan", &["192.168.1.9"]).is_ok());
        assert!(check("nas.lan", &["192.168.1.9", "93.184.215.14"]).is_ok());
        let wide = policy(&["*.lan", "10.0.0.0/8", "100.64.0.0/10"], false);
        assert!(choose_destination(&host("nas.lan"), &ips(&["10.1.2.3"]), &wide, &own).is_ok());
        assert!(choose_destination(&host("me.lan"), &ips(&["100.100.1.1"]), &wide, &own).is_ok());
    }

    #[test]
    fn public_addresses() {
        for (ip, public) in [
            ("1.1.1.1", true),
            ("93.184.215.14", true),
            ("100.63.255.255", true),
            ("100.128.0.0", true),
            ("172.15.255.255", true),
            ("172.32.0.0", true),
            ("192.0.1.1", true),
            ("198.20.0.1", true),
            ("223.255.255.255", true),
            ("2606:4700::1111", true),
            ("2001:4860:4860::8888", true),
            ("0.1.2.3", false),
            ("10.0.0.1", false),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("192.168.0.1", false),
            ("198.18.0.1", false),
            ("198.19.255.255", false),
            ("203.0.113.1", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("::", false),
            ("::1", false),
            ("::10.0.0.1", false),
            ("::ffff:127.0.0.1", false),
            ("64:ff9b::8.8.8.8", true),
            ("64:ff9b::192.168.0.1", false),
            ("64:ff9b:1::1", false),
            ("100::1", false),
            ("2001::1", false),
            ("2001:db8::1", false),
            ("2002:808:808::1", true),
            ("2002:c0a8:1::1", false),
            ("3fff::1", false),
            ("fc00::1", false),
            ("fd7a:115c:a1e0::1", false),
            ("fe80::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(
                not_public(addr, &[]).is_none(),
                public,
                "{ip}: {:?}",
                not_public(addr, &[])
            );
        }
    }

    #[test]
    fn urls_are_validated() {
        let (uri, https, h, port) = parse_url("https://nas.lan:8443/health?x=1").unwrap();
        assert!(https);
        assert_eq!((h, port), (Host::Name("nas.lan".into()), 8443));
        assert_eq!(uri.path_and_query().unwrap().as_str(), "/health?x=1");
        assert_eq!(parse_url("http://[::1]/").unwrap().2, Host::Ip("::1".parse().unwrap()));
        assert_eq!(parse_url("http://10.0.0.1").unwrap().3, 80);
        for (bad, needle) in [
            ("ftp://x/", "scheme `ftp`"),
            ("/relative", "absolute"),
            ("http://user:pw@nas.lan/", "user info"),
            ("http://na$s/", "not a valid host name"),
            ("http://a_b.lan/", "not a valid host name"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn ports_open_and_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let states = port_check("127.0.0.1".parse().unwrap(), &[open, closed], Duration::from_secs(2)).await;
        assert_eq!(states[0].state, "open");
        assert_eq!(states[1].state, "closed");
    }

    #[tokio::test]
    async fn resolving_ips_and_localhost() {
        let t = Duration::from_secs(2);
        assert_eq!(resolve(&host("10.1.2.3"), &[], t).await.unwrap(), ips(&["10.1.2.3"]));
        let local = resolve(&host("localhost"), &[], t).await.unwrap();
        assert!(local.iter().all(|ip| ip.is_loopback()), "{local:?}");
        assert_eq!(parse_dns_server("127.0.0.1").unwrap(), "127.0.0.1:53".parse().unwrap());
        assert_eq!(parse_dns_server("[::1]:5353").unwrap(), "[::1]:5353".parse().unwrap());
        assert!(parse_dns_server("dns.google").is_err());
    }
}
