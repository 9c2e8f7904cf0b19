//! Network diagnostics from this host (and, for `ping`/`traceroute`, from any host a
//! [`Runner`](super::remote::Runner) reaches): ping, TCP port checks, DNS lookups, TLS
//! certificate checks, HTTP probes and traceroute, each returning a typed result.
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
//!
//! Here: [`Host`] and the name rules every check shares. Then one file per concern, each using
//! only this file and those listed before it: `model` (what the reachability, TLS and HTTP
//! checks return), `reach` (ping, traceroute, TCP ports), `dns` (resolving and lookups), `tls`
//! (certificate checks), `probe` (the HTTP probe and its destination rules).

mod dns;
mod model;
mod probe;
mod reach;
mod tls;

use std::net::IpAddr;
use std::time::Duration;

pub use dns::{DnsRecord, DnsResult, RecordType, dns_lookup, parse_dns_server, ptr_name, resolve};
pub use model::{CertInfo, HeaderField, Hop, PingResult, PortState, ProbeResult, ProbeTiming, TlsReport, TraceResult};
pub use probe::{
    AllowRule, BODY_PREVIEW_BYTES, HttpPolicy, METADATA_ADDRESSES, METADATA_NAMES, ProbeRequest, REPORTED_HEADERS,
    choose_destination, forbidden, http_probe, not_public, own_addresses, parse_url,
};
pub use reach::{
    parse_ping, parse_tracepath, parse_traceroute, ping, ping_command, port_check, tracepath_command, traceroute,
    traceroute_command,
};
pub use tls::{name_matches, parse_pem_certs, tls_check};

use super::show::cut;
use super::{ExecError, Output};

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

    pub(super) fn host(s: &str) -> Host {
        parse_host(s).unwrap()
    }

    pub(super) fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
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
}
