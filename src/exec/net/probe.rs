//! The HTTP probe and its destination rules: the allow-list, the addresses never probed, the
//! addresses a name rule may not vouch for, and one exchange with the checked address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::dns::resolve;
use super::model::{HeaderField, ProbeResult, ProbeTiming};
use super::tls::{provider, root_store, server_name};
use super::{Host, check_name, ms, parse_host};
use crate::exec::ExecError;
use crate::exec::show::cut;

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
    for interface in crate::exec::local::network_interfaces() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::net::tests::{host, ips};

    fn policy(rules: &[&str], link_local: bool) -> HttpPolicy {
        HttpPolicy {
            allow: rules.iter().map(|r| AllowRule::parse(r).unwrap()).collect(),
            allow_link_local: link_local,
        }
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
}
