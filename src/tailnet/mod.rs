//! Who is calling, as tailscaled says: the LocalAPI client, tailnet address rules, and the
//! [`Caller`] identity that every request carries from the socket peer to the audit row.
//!
//! This module knows nothing of MCP, policy or SQL. Identity comes from the TCP peer address and
//! tailscaled's `whois`, never from request headers.

pub mod localapi;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

pub use crate::model::{Caller, IdentitySource, Reresolve};

/// Whether `ip` is in a tailnet range: `100.64.0.0/10` (CGNAT) or `fd7a:115c:a1e0::/48`.
pub fn is_tailnet_ip(ip: IpAddr) -> bool {
    match unmap(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 100 && (o[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0xfd7a && s[1] == 0x115c && s[2] == 0xa1e0
        }
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; anything else unchanged.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// `unmap` applied to a socket address.
pub fn unmap_socket(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap(addr.ip()), addr.port())
}

/// Loopback addresses are the only ones a dev listener may use.
pub fn is_loopback(ip: IpAddr) -> bool {
    match unmap(ip) {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ip: &str, expected: bool) {
        assert_eq!(is_tailnet_ip(ip.parse().unwrap()), expected, "{ip}");
    }

    #[test]
    fn tailnet_ranges() {
        check("100.64.0.0", true);
        check("100.127.255.255", true);
        check("100.101.102.103", true);
        check("100.63.255.255", false);
        check("100.128.0.0", false);
        check("10.0.0.1", false);
        check("127.0.0.1", false);
        check("0.0.0.0", false);
        check("fd7a:115c:a1e0::1", true);
        check("fd7a:115c:a1e0:ffff::1", true);
        check("fd7a:115c:a1e1::1", false);
        check("::1", false);
        check("::", false);
        check("::ffff:100.100.1.1", true);
    }

    #[test]
    fn unmaps_v4_mapped_v6() {
        assert_eq!(
            unmap("::ffff:100.1.2.3".parse().unwrap()),
            "100.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            unmap("fd7a:115c:a1e0::1".parse().unwrap()),
            "fd7a:115c:a1e0::1".parse::<IpAddr>().unwrap()
        );
    }
}
