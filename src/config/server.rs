//! `[server]`: the port and tailnet addresses the server listens on, the `Host` and `Origin`
//! allow-lists, and the HTTP limits (body size, timeouts, connections).
//!
//! **Invariant:** a listen address outside the tailnet ranges is refused here, so it never gets
//! past `Config::load`.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, invalid};
use crate::tailnet;

pub const DEFAULT_PORT: u16 = 8471;
/// `[server] max_connections`: far more than a team's MCP clients hold (a few each), few enough
/// that the file descriptors fit the unit's `LimitNOFILE=4096` with room for the audit
/// database, journald, targets and child processes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// `[server]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServerSection {
    port: u16,
    listen: Vec<String>,
    extra_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    allow_self: bool,
    sessions: bool,
    max_body_bytes: usize,
    header_timeout_secs: u64,
    body_timeout_secs: u64,
    identity_cache_secs: u64,
    max_connections: usize,
    /// Default: 64, or `max_connections` when that is lower.
    max_connections_per_address: Option<usize>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            port: DEFAULT_PORT,
            listen: Vec::new(),
            extra_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            allow_self: false,
            sessions: true,
            max_body_bytes: 1024 * 1024,
            header_timeout_secs: 30,
            body_timeout_secs: 30,
            identity_cache_secs: 2,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: None,
        }
    }
}

/// The validated `[server]` (see the fields of the same names on `Config`).
pub(super) struct Server {
    pub port: u16,
    pub listen: Vec<IpAddr>,
    pub extra_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub allow_self: bool,
    pub sessions: bool,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub identity_cache: Duration,
}

/// Validate `[server]`; `port` is the flag or environment value that overrides the file's.
pub(super) fn build(s: ServerSection, port: Option<u16>) -> Result<Server, Invalid> {
    let port = port.unwrap_or(s.port);
    if port == 0 {
        return Err(invalid("server.port", "must be between 1 and 65535"));
    }
    let mut listen = Vec::new();
    for (i, raw) in s.listen.iter().enumerate() {
        let key = format!("server.listen[{i}]");
        let ip: IpAddr = raw
            .parse()
            .map_err(|_| invalid(&key, format!("`{raw}` is not an IP address")))?;
        if !tailnet::is_tailnet_ip(ip) {
            return Err(invalid(
                &key,
                format!(
                    "`{ip}` is not a tailnet address (100.64.0.0/10 or fd7a:115c:a1e0::/48); tailopsmcp never listens outside the tailnet (use --dev-listen for a loopback dev server)"
                ),
            ));
        }
        listen.push(tailnet::unmap(ip));
    }
    for (i, h) in s.extra_hosts.iter().enumerate() {
        if h.is_empty() || h.contains(['/', ' ', '@']) {
            return Err(invalid(
                format!("server.extra_hosts[{i}]"),
                format!("`{h}` is not a host name"),
            ));
        }
    }
    for (i, origin) in s.allowed_origins.iter().enumerate() {
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(invalid(
                format!("server.allowed_origins[{i}]"),
                format!("`{origin}` must start with http:// or https://"),
            ));
        }
    }
    if s.max_body_bytes < 1024 {
        return Err(invalid("server.max_body_bytes", "must be at least 1024"));
    }
    if !(1..=3600).contains(&s.header_timeout_secs) {
        return Err(invalid("server.header_timeout_secs", "must be between 1 and 3600"));
    }
    if !(1..=3600).contains(&s.body_timeout_secs) {
        return Err(invalid("server.body_timeout_secs", "must be between 1 and 3600"));
    }
    if !(1..=65_536).contains(&s.max_connections) {
        return Err(invalid("server.max_connections", "must be between 1 and 65536"));
    }
    let per_address = s.max_connections_per_address.unwrap_or(s.max_connections.min(64));
    if !(1..=s.max_connections).contains(&per_address) {
        return Err(invalid(
            "server.max_connections_per_address",
            format!("must be between 1 and max_connections ({})", s.max_connections),
        ));
    }
    if s.identity_cache_secs > 30 {
        return Err(invalid(
            "server.identity_cache_secs",
            "must be at most 30 (grants and tags change)",
        ));
    }
    Ok(Server {
        port,
        listen,
        extra_hosts: s.extra_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        allowed_origins: s.allowed_origins,
        allow_self: s.allow_self,
        sessions: s.sessions,
        max_body_bytes: s.max_body_bytes,
        header_timeout: Duration::from_secs(s.header_timeout_secs),
        body_timeout: Duration::from_secs(s.body_timeout_secs),
        max_connections: s.max_connections,
        max_connections_per_address: per_address,
        identity_cache: Duration::from_secs(s.identity_cache_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check_err, load};
    use super::*;

    #[test]
    fn refuses_listening_outside_the_tailnet() {
        check_err(
            "[server]\nlisten = [\"0.0.0.0\"]",
            "server.listen[0]: `0.0.0.0` is not a tailnet address",
        );
        check_err("[server]\nlisten = [\"127.0.0.1\"]", "not a tailnet address");
        check_err("[server]\nlisten = [\"192.168.1.5\"]", "not a tailnet address");
        check_err("[server]\nlisten = [\"::\"]", "not a tailnet address");
        check_err("[server]\nlisten = [\"nas\"]", "not an IP address");
        let c = load("[server]\nlisten = [\"100.100.1.1\", \"fd7a:115c:a1e0::1\"]").unwrap();
        assert_eq!(c.listen.len(), 2);
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        check_err("[server]\nport = 0", "server.port");
        check_err("[server]\nprot = 1", "unknown field `prot`");
        check_err(
            "[server]\nallowed_origins = [\"evil.example\"]",
            "server.allowed_origins[0]",
        );
        check_err("[server]\nmax_body_bytes = 10", "server.max_body_bytes");
        check_err("[server]\nheader_timeout_secs = 0", "server.header_timeout_secs");
        check_err("[server]\nbody_timeout_secs = 0", "server.body_timeout_secs");
        check_err("[server]\nbody_timeout_secs = 3601", "server.body_timeout_secs");
        check_err("[server]\nmax_connections = 0", "server.max_connections");
        check_err(
            "[server]\nmax_connections = 8\nmax_connections_per_address = 9",
            "server.max_connections_per_address",
        );
    }

    #[test]
    fn connection_defaults() {
        assert_eq!(load("").unwrap().max_connections, DEFAULT_MAX_CONNECTIONS);
    }
}
