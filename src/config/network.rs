//! `[network]`: where `network_http_probe` may go (an allow-list, link-local addresses) and
//! which DNS servers the network tools ask.

use serde::Deserialize;

use super::{Invalid, invalid};

/// `[network]`: the HTTP probe's destination rules and the resolvers of the network tools.
#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    /// `http_allow` and `allow_link_local`; an empty allow-list turns `network_http_probe` off.
    pub http: crate::exec::net::HttpPolicy,
    /// DNS servers for name resolution and `network_dns_lookup`; empty = the system's.
    pub dns_servers: Vec<std::net::SocketAddr>,
}

/// `[network]` as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NetworkSection {
    http_allow: Vec<String>,
    allow_link_local: bool,
    dns_servers: Vec<String>,
}

/// Validate `[network]`: every allow rule and DNS server parses.
pub(super) fn build(s: NetworkSection) -> Result<NetworkConfig, Invalid> {
    let mut network = NetworkConfig::default();
    for (i, rule) in s.http_allow.iter().enumerate() {
        let rule =
            crate::exec::net::AllowRule::parse(rule).map_err(|e| invalid(format!("network.http_allow[{i}]"), e))?;
        network.http.allow.push(rule);
    }
    network.http.allow_link_local = s.allow_link_local;
    for (i, server) in s.dns_servers.iter().enumerate() {
        let sa =
            crate::exec::net::parse_dns_server(server).map_err(|e| invalid(format!("network.dns_servers[{i}]"), e))?;
        network.dns_servers.push(sa);
    }
    Ok(network)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_err, load};

    #[test]
    fn network_section() {
        let c = load("").unwrap();
        assert!(c.network.http.allow.is_empty() && !c.network.http.allow_link_local);
        assert!(c.network.dns_servers.is_empty());
        let c = load(
            "[network]\nhttp_allow = [\"nas.lan\", \"*.ts.net\", \"192.168.1.0/24\"]\nallow_link_local = true\ndns_servers = [\"100.100.100.100\", \"127.0.0.1:5353\"]",
        )
        .unwrap();
        assert_eq!(c.network.http.allow.len(), 3);
        assert!(c.network.http.allow_link_local);
        assert_eq!(c.network.dns_servers[0], "100.100.100.100:53".parse().unwrap());
        check_err("[network]\nhttp_allow = [\"http://nas\"]", "network.http_allow[0]");
        check_err(
            "[network]\nhttp_allow = [\"ok.lan\", \"10.0.0.0/40\"]",
            "network.http_allow[1]",
        );
        check_err("[network]\ndns_servers = [\"dns.google\"]", "network.dns_servers[0]");
        check_err("[network]\nhttp_alow = []", "unknown field `http_alow`");
    }
}
