//! Who is calling: the [`Caller`] every request carries from the socket peer to the audit row,
//! how the server learned it, and the host identity the CLI acts under.

use std::net::SocketAddr;

use serde::Serialize;

/// How the server learned who the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// tailscaled `whois` of the TCP peer on a tailnet listener.
    Whois,
    /// `--dev-identity` on a loopback dev listener: no tailnet, marked as such in every audit row.
    Dev,
    /// A person at the server host's shell (the CLI): their Unix account, no tailnet.
    Host,
}

impl IdentitySource {
    pub const fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Whois => "whois",
            IdentitySource::Dev => "dev",
            IdentitySource::Host => "host",
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
}

/// Asks again who is behind a request's connection, bypassing any cache: the identity layer
/// puts one in each request's extensions (`Arc<dyn Reresolve>`), and a call that waited for a
/// person uses it to check, right before it runs, that its caller still is who it was and still
/// holds what it held.
pub trait Reresolve: Send + Sync {
    fn fresh(&self) -> futures::future::BoxFuture<'_, Result<Caller, String>>;
}

/// The identity of a person deciding on this host with the CLI: `host:<unix user>` of the real
/// uid (the one who ran `sudo -u tailopsmcp ...` is named too, from `SUDO_USER`, as a note).
pub fn host_identity() -> (String, String) {
    // SAFETY: getuid cannot fail; getpwuid returns a pointer into static storage or null.
    let uid = unsafe { libc::getuid() };
    let name = unsafe {
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_name.is_null() {
            format!("uid{uid}")
        } else {
            std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
        }
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let node = match std::env::var("SUDO_USER") {
        Ok(s) if !s.is_empty() && s != name => format!("{host} (cli, via sudo by {s})"),
        _ => format!("{host} (cli)"),
    };
    (format!("host:{name}"), node)
}
