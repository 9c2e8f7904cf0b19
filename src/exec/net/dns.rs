//! Names to addresses and DNS lookups: the system resolver or given servers (hickory-resolver),
//! typed answers.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use super::{Host, ms};
use crate::exec::ExecError;
use crate::exec::show::cut;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::net::tests::{host, ips};

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
