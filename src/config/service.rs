//! `[service]`: the Tailscale Service this server may sit behind, served on a loopback listener
//! (or a unix socket) that only tailscaled may connect to.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Invalid, invalid};
use crate::tailnet;

/// A Tailscale Service (`tailscale serve --service=svc:NAME --tls-terminated-tcp=443
/// --proxy-protocol=2 tcp://LISTEN`): a loopback listener (or a unix socket) where every
/// connection must come from tailscaled's uid and begin with a PROXY v2 header naming the real
/// caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `svc:NAME`.
    pub name: String,
    /// Loopback address `tailscale serve` forwards to (unused when `socket` is set).
    pub listen: std::net::SocketAddr,
    /// A unix socket to listen on instead of `listen`.
    pub socket: Option<PathBuf>,
    /// The only uid whose connections the Service listener serves (tailscaled's).
    pub tailscaled_uid: u32,
}

impl ServiceConfig {
    /// `NAME` without the `svc:` prefix.
    pub fn short_name(&self) -> &str {
        self.name.trim_start_matches("svc:")
    }
}

/// `[service]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServiceSection {
    name: String,
    listen: String,
    socket: Option<PathBuf>,
    tailscaled_uid: u32,
}

impl Default for ServiceSection {
    fn default() -> Self {
        ServiceSection {
            name: String::new(),
            listen: "127.0.0.1:8472".to_string(),
            socket: None,
            tailscaled_uid: 0,
        }
    }
}

/// Validate `[service]` (`None` when it names no Service); `name` and `listen` are flag or
/// environment values that override the file's.
pub(super) fn build(
    s: ServiceSection,
    name: Option<String>,
    listen: Option<String>,
) -> Result<Option<ServiceConfig>, Invalid> {
    let name = name.unwrap_or(s.name);
    let service_listen = listen.unwrap_or(s.listen);
    if name.is_empty() {
        return Ok(None);
    }
    let valid = name.strip_prefix("svc:").is_some_and(|n| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    if !valid {
        return Err(invalid(
            "service.name",
            format!("`{name}` is not a Service name like `svc:mcp`"),
        ));
    }
    let listen: std::net::SocketAddr = service_listen
        .parse()
        .map_err(|_| invalid("service.listen", format!("`{service_listen}` is not IP:PORT")))?;
    if !tailnet::is_loopback(listen.ip()) {
        return Err(invalid(
            "service.listen",
            format!("`{listen}` is not a loopback address; only `tailscale serve` on this host may connect to it"),
        ));
    }
    let socket = match s.socket {
        Some(p) if !p.is_absolute() || p.file_name().is_none() => {
            return Err(invalid(
                "service.socket",
                format!("`{}` is not an absolute path to a socket file", p.display()),
            ));
        }
        other => other,
    };
    Ok(Some(ServiceConfig {
        name,
        listen,
        socket,
        tailscaled_uid: s.tailscaled_uid,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testing::{check_err, load};

    #[test]
    fn refuses_bad_values_naming_the_key() {
        check_err("[service]\nname = \"mcp\"", "service.name");
        check_err("[service]\nname = \"svc:Bad_Name\"", "service.name");
        check_err(
            "[service]\nname = \"svc:mcp\"\nlisten = \"100.100.1.1:8472\"",
            "service.listen",
        );
        check_err("[service]\nname = \"svc:mcp\"\nlisten = \"8472\"", "service.listen");
        check_err(
            "[service]\nname = \"svc:mcp\"\nsocket = \"run/s.sock\"",
            "service.socket",
        );
        check_err("[service]\nname = \"svc:mcp\"\nsocket = \"/\"", "service.socket");
    }

    #[test]
    fn a_service_listens_on_loopback() {
        let c = load("[service]\nname = \"svc:mcp\"").unwrap();
        let s = c.service.unwrap();
        assert_eq!(s.listen, "127.0.0.1:8472".parse().unwrap());
        assert_eq!((s.socket.as_deref(), s.tailscaled_uid), (None, 0));
        assert_eq!(s.short_name(), "mcp");
        assert!(load("").unwrap().service.is_none());
        let c = load("[service]\nname = \"svc:mcp\"\nsocket = \"/run/tailopsmcp/service.sock\"\ntailscaled_uid = 998")
            .unwrap();
        let s = c.service.unwrap();
        assert_eq!(s.socket.as_deref(), Some(Path::new("/run/tailopsmcp/service.sock")));
        assert_eq!(s.tailscaled_uid, 998);
    }
}
