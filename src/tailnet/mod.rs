//! Who is calling, as tailscaled says: the LocalAPI client, tailnet address rules, and the
//! [`Caller`] identity that every request carries from the socket peer to the audit row.
//!
//! This module knows nothing of MCP, policy or SQL. Identity comes from the TCP peer address and
//! tailscaled's `whois`, never from request headers.

pub mod localapi;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// How the server learned who the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// tailscaled `whois` of the TCP peer on a tailnet listener.
    Whois,
    /// `--dev-identity` on a loopback dev listener: no tailnet, marked as such in every audit row.
    Dev,
}

impl IdentitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Whois => "whois",
            IdentitySource::Dev => "dev",
        }
    }
}

/// The caller of one request, resolved from the TCP peer.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    /// The identity policy and sessions key on: the user's login for a user-owned node, the
    /// sorted, comma-joined tag set (`tag:a,tag:b`) for a tagged node.
    pub principal: String,
    /// `UserProfile.ID` (stable). `None` in dev mode.
    pub user_id: Option<i64>,
    /// `UserProfile.LoginName` (display only; `tagged-devices` for tagged nodes).
    pub login: String,
    pub display_name: String,
    /// `Node.StableID`.
    pub node_id: String,
    /// `Node.Name` without its trailing dot (the MagicDNS FQDN).
    pub node_name: String,
    /// `Node.Tags`, sorted; empty for user-owned nodes.
    pub tags: Vec<String>,
    /// `Node.Hostinfo.OS`, when tailscaled knows it.
    pub os: Option<String>,
    /// The TCP peer this identity was resolved for.
    pub addr: SocketAddr,
    /// Raw grant objects for the configured app capability (`CapMap[cap_name]`), every
    /// matching grant's objects concatenated. Policy parses them; elements that do not parse
    /// grant nothing.
    pub cap_grants: Vec<serde_json::Value>,
    pub source: IdentitySource,
}

impl Caller {
    /// Whether this caller is a tagged node (its principal is its tag set).
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    /// The node's short name (first label of the MagicDNS name).
    pub fn node_short_name(&self) -> &str {
        self.node_name.split('.').next().unwrap_or(&self.node_name)
    }

    /// The identity `--dev-identity LOGIN` gives every request on a loopback dev listener.
    pub fn dev(login: &str, addr: SocketAddr) -> Caller {
        Caller {
            principal: login.to_string(),
            user_id: None,
            login: login.to_string(),
            display_name: format!("{login} (dev)"),
            node_id: "dev".to_string(),
            node_name: "dev".to_string(),
            tags: Vec::new(),
            os: None,
            addr,
            cap_grants: Vec::new(),
            source: IdentitySource::Dev,
        }
    }

    /// Build a caller from a whois answer: `cap_name` selects which app capability's grants it
    /// carries.
    pub fn from_whois(who: &localapi::WhoIs, addr: SocketAddr, cap_name: &str) -> Caller {
        let mut tags = who.node.tags.clone();
        tags.sort();
        tags.dedup();
        let principal = if tags.is_empty() {
            who.user_profile.login_name.clone()
        } else {
            tags.join(",")
        };
        Caller {
            principal,
            user_id: Some(who.user_profile.id),
            login: who.user_profile.login_name.clone(),
            display_name: who.user_profile.display_name.clone(),
            node_id: who.node.stable_id.clone(),
            node_name: who.node.name.trim_end_matches('.').to_string(),
            tags,
            os: who.node.hostinfo.as_ref().and_then(|h| h.os.clone()),
            addr,
            cap_grants: who.cap_map.get(cap_name).cloned().unwrap_or_default(),
            source: IdentitySource::Whois,
        }
    }
}

/// Asks again who is behind a request's connection, bypassing any cache: the identity layer
/// puts one in each request's extensions (`Arc<dyn Reresolve>`), and a call that waited for a
/// person uses it to check, right before it runs, that its caller still is who it was and still
/// holds what it held.
pub trait Reresolve: Send + Sync {
    fn fresh(&self) -> futures::future::BoxFuture<'_, Result<Caller, String>>;
}

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
