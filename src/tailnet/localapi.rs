//! A small, exact client for tailscaled's LocalAPI (`status`, `whois`) over its unix socket.
//!
//! Wire types are parsed leniently: tailscaled omits zero-valued fields, so everything but the
//! fields we key on has a default. `CapMap` is kept (the `tailscale-localapi` crate loses it).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Deserialize;

/// `apitype.WhoIsResponse`.
#[derive(Debug, Clone, Deserialize)]
pub struct WhoIs {
    #[serde(rename = "Node")]
    pub node: WhoIsNode,
    #[serde(rename = "UserProfile")]
    pub user_profile: UserProfile,
    /// App capability grants for this peer; `null` (no grants) becomes empty. An entry whose
    /// value is `null` also becomes an empty list.
    #[serde(rename = "CapMap", default, deserialize_with = "cap_map")]
    pub cap_map: HashMap<String, Vec<serde_json::Value>>,
}

/// The parts of `tailcfg.Node` we use.
#[derive(Debug, Clone, Deserialize)]
pub struct WhoIsNode {
    #[serde(rename = "ID", default)]
    pub id: i64,
    #[serde(rename = "StableID")]
    pub stable_id: String,
    /// MagicDNS FQDN with a trailing dot.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// CIDR strings (`100.101.102.103/32`).
    #[serde(rename = "Addresses", default)]
    pub addresses: Vec<String>,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<String>,
    #[serde(rename = "Hostinfo", default)]
    pub hostinfo: Option<Hostinfo>,
    #[serde(rename = "ComputedName", default)]
    pub computed_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Hostinfo {
    #[serde(rename = "OS", default)]
    pub os: Option<String>,
    #[serde(rename = "Hostname", default)]
    pub hostname: Option<String>,
}

/// `tailcfg.UserProfile`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserProfile {
    /// Stable; key on this.
    #[serde(rename = "ID")]
    pub id: i64,
    /// Display only; `tagged-devices` for every tagged node.
    #[serde(rename = "LoginName", default)]
    pub login_name: String,
    #[serde(rename = "DisplayName", default)]
    pub display_name: String,
    #[serde(rename = "ProfilePicURL", default)]
    pub profile_pic_url: String,
    #[serde(rename = "Groups", default)]
    pub groups: Vec<String>,
}

/// The parts of `ipnstate.Status` we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    #[serde(rename = "Version", default)]
    pub version: String,
    /// `NeedsLogin`, `Starting`, `Running`, `Stopped`, `NoState`, ...
    #[serde(rename = "BackendState", default)]
    pub backend_state: String,
    /// False in userspace-networking mode: there is no interface to bind.
    #[serde(rename = "TUN", default)]
    pub tun: bool,
    #[serde(rename = "TailscaleIPs", default)]
    pub tailscale_ips: Vec<IpAddr>,
    #[serde(rename = "Self", default)]
    pub self_node: Option<SelfNode>,
    #[serde(rename = "MagicDNSSuffix", default)]
    pub magic_dns_suffix: String,
    #[serde(rename = "CurrentTailnet", default)]
    pub current_tailnet: Option<CurrentTailnet>,
}

impl Status {
    pub fn is_running(&self) -> bool {
        self.backend_state == "Running"
    }
}

/// `ipnstate.PeerStatus` of this node.
#[derive(Debug, Clone, Deserialize)]
pub struct SelfNode {
    /// The node's StableID (compare with `WhoIsNode::stable_id`).
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "HostName", default)]
    pub host_name: String,
    /// FQDN with a trailing dot.
    #[serde(rename = "DNSName", default)]
    pub dns_name: String,
    #[serde(rename = "TailscaleIPs", default)]
    pub tailscale_ips: Vec<IpAddr>,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<String>,
    #[serde(rename = "CapMap", default, deserialize_with = "cap_map")]
    pub cap_map: HashMap<String, Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CurrentTailnet {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "MagicDNSSuffix", default)]
    pub magic_dns_suffix: String,
    #[serde(rename = "MagicDNSEnabled", default)]
    pub magic_dns_enabled: bool,
}

fn cap_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, Vec<serde_json::Value>>, D::Error> {
    let raw: Option<HashMap<String, Option<Vec<serde_json::Value>>>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}
